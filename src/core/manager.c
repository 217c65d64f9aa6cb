/* manager.c - the process-wide manager thread: one epoll loop that services
 * clients when due and dispatches socket events to their watchers. */
#include "manager.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "dbpool.h"
#include "error.h"
#include "workers.h"

/*
 * mgr.mu guards the client list, each client's attached/running flags, the
 * release list and stop. It is never held while a client's code runs: the
 * loop marks a client running, drops the lock, calls it, and takes the lock
 * again; manager_detach() waits for `running` to clear. Clients are released
 * only at the top of the loop (after every event of the previous epoll_wait
 * was dispatched) or, when no manager runs, at once: so an event never
 * points into freed memory.
 */
static struct {
    pthread_mutex_t life; /* serialises starting and stopping the thread */
    pthread_mutex_t mu;
    pthread_cond_t idle; /* a client stopped running */
    pthread_t thread;
    int running, stop;
    int epfd, evfd;
    struct list_head clients;  /* attached */
    struct list_head detached; /* detached, not released yet (a closed pool with
                                  leases out): the library still owns them */
    struct mclient *releases;  /* released, to be freed by the loop */
    int outstanding;           /* attached or detached, not yet released */
    int nattached;
    struct mclient **heap; /* attached clients, a binary min-heap on next_due */
    int heap_n, heap_cap;  /* heap_cap >= nattached: a client taken out to run
                              always finds its place again */
} mgr = {
    .life = PTHREAD_MUTEX_INITIALIZER,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .idle = PTHREAD_COND_INITIALIZER,
    .epfd = -1,
    .evfd = -1,
    .clients = LIST_HEAD_INIT(mgr.clients),
    .detached = LIST_HEAD_INIT(mgr.detached),
};

/*
 * A wake-up costs what is due, not what is attached (a registry may hold
 * 10,000 idle tenant pools): the loop finds due clients at the top of the
 * heap, and poked ones on the poke list, where manager_poke() puts a client
 * once until the loop takes it. The poke lock is a leaf: pokes come with a
 * pool's mutex held, so they must not take mgr.mu.
 */
static struct {
    pthread_mutex_t mu;
    struct mclient *head; /* linked by pnext; each has poke = 1 */
} pokes = {.mu = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local int on_manager;
static unsigned fork_gen; /* bumped in every child after fork() */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

int manager_is_self(void)
{
    return on_manager;
}

/* ---- the due-time heap (mgr.mu) ------------------------------------------ */

static int64_t due_of(const struct mclient *c)
{
    return atomic_load_explicit(&c->next_due, memory_order_relaxed);
}

static void heap_set(int i, struct mclient *c)
{
    mgr.heap[i] = c;
    c->heap_idx = i;
}

static void heap_up(int i)
{
    struct mclient *c = mgr.heap[i];

    while (i > 0 && due_of(mgr.heap[(i - 1) / 2]) > due_of(c)) {
        heap_set(i, mgr.heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(i, c);
}

static void heap_down(int i)
{
    struct mclient *c = mgr.heap[i];

    for (;;) {
        int m = 2 * i + 1;
        if (m >= mgr.heap_n)
            break;
        if (m + 1 < mgr.heap_n && due_of(mgr.heap[m + 1]) < due_of(mgr.heap[m]))
            m++;
        if (due_of(mgr.heap[m]) >= due_of(c))
            break;
        heap_set(i, mgr.heap[m]);
        i = m;
    }
    heap_set(i, c);
}

/* Room for n clients: 0 or DBPOOL_ENOMEM. */
static int heap_reserve(int n)
{
    if (n <= mgr.heap_cap)
        return 0;
    int cap = mgr.heap_cap ? mgr.heap_cap * 2 : 64;
    while (cap < n)
        cap *= 2;
    struct mclient **h = mem_malloc((size_t)cap * sizeof(*h));
    if (!h)
        return set_error(DBPOOL_ENOMEM, "manager: out of memory");
    if (mgr.heap_n)
        memcpy(h, mgr.heap, (size_t)mgr.heap_n * sizeof(*h));
    mem_free(mgr.heap);
    mgr.heap = h;
    mgr.heap_cap = cap;
    return 0;
}

static void heap_push(struct mclient *c)
{
    heap_set(mgr.heap_n++, c);
    heap_up(c->heap_idx);
}

static void heap_remove(struct mclient *c)
{
    int i = c->heap_idx;

    if (i < 0)
        return;
    c->heap_idx = -1;
    struct mclient *last = mgr.heap[--mgr.heap_n];
    if (i == mgr.heap_n)
        return;
    heap_set(i, last);
    heap_up(i);
    heap_down(last->heap_idx);
}

/* ---- wakeups ------------------------------------------------------------- */

static void wake(void)
{
    uint64_t one = 1;
    int fd = mgr.evfd;

    if (fd >= 0) {
        ssize_t r = write(fd, &one, sizeof(one));
        (void)r; /* EAGAIN: a wakeup is already pending */
    }
}

/* Put c on the poke list unless it is there already. */
static void poke_push(struct mclient *c)
{
    if (atomic_exchange_explicit(&c->poke, 1, memory_order_acq_rel))
        return;
    pthread_mutex_lock(&pokes.mu);
    c->pnext = pokes.head;
    pokes.head = c;
    pthread_mutex_unlock(&pokes.mu);
}

/* Take c off the poke list before it is freed (it is only ever there, with
 * nobody left to poke it, when it was poked between detach and release). */
static void poke_forget(struct mclient *c)
{
    pthread_mutex_lock(&pokes.mu);
    for (struct mclient **pp = &pokes.head; *pp; pp = &(*pp)->pnext)
        if (*pp == c) {
            *pp = c->pnext;
            break;
        }
    pthread_mutex_unlock(&pokes.mu);
}

void manager_poke(struct mclient *c)
{
    poke_push(c);
    if (!on_manager)
        wake(); /* the loop looks at the poke list before it sleeps */
}

void manager_poke_before(struct mclient *c, int64_t due)
{
    if (due < atomic_load_explicit(&c->next_due, memory_order_acquire))
        manager_poke(c);
}

/* ---- epoll --------------------------------------------------------------- */

void manager_watch(struct mwatch *w, int fd, int want)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = (want == DBPOOL_IO_WRITE ? EPOLLOUT : EPOLLIN);
    ev.data.ptr = w;
    if (w->fd >= 0 && w->fd != fd)
        manager_unwatch(w);
    /* libpq may close and reopen its socket (next host): the number can be
     * reused while the old registration vanished with the old socket. */
    if (w->fd == fd && epoll_ctl(mgr.epfd, EPOLL_CTL_MOD, fd, &ev) == 0) {
        w->events = (int)ev.events;
        return;
    }
    if (epoll_ctl(mgr.epfd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST)
        epoll_ctl(mgr.epfd, EPOLL_CTL_MOD, fd, &ev);
    w->fd = fd;
    w->events = (int)ev.events;
}

void manager_unwatch(struct mwatch *w)
{
    if (w->fd >= 0 && mgr.epfd >= 0)
        epoll_ctl(mgr.epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->fd = -1;
}

/* Run a client callback without the lock; mgr.mu held on entry and exit. */
#define RUN_UNLOCKED(c, call)                                                                      \
    do {                                                                                           \
        (c)->running = 1;                                                                          \
        pthread_mutex_unlock(&mgr.mu);                                                             \
        call;                                                                                      \
        pthread_mutex_lock(&mgr.mu);                                                               \
        (c)->running = 0;                                                                          \
        pthread_cond_broadcast(&mgr.idle);                                                         \
    } while (0)

/* The release list is freed without the lock (release() is client code). */
static void run_releases(void)
{
    struct mclient *c;

    while ((c = mgr.releases) != NULL) {
        mgr.releases = NULL;
        pthread_mutex_unlock(&mgr.mu);
        while (c) {
            struct mclient *next = c->rnext;
            c->release(c);
            c = next;
        }
        pthread_mutex_lock(&mgr.mu);
    }
}

/* ---- the loop ------------------------------------------------------------ */

#define MAX_SLEEP_MS 1000

/* Phase: how long may the loop sleep? (mgr.mu held) */
static int64_t next_timeout(int64_t now)
{
    pthread_mutex_lock(&pokes.mu);
    int poked = pokes.head != NULL;
    pthread_mutex_unlock(&pokes.mu);
    if (poked)
        return 0;
    int64_t due = mgr.heap_n ? due_of(mgr.heap[0]) : INT64_MAX;
    if (due == INT64_MAX || due - now > MAX_SLEEP_MS)
        return MAX_SLEEP_MS;
    return due > now ? due - now : 0;
}

/* Phase: socket events, each followed by a service of its client. */
static void dispatch_io(struct epoll_event *evs, int n, int64_t now)
{
    for (int i = 0; i < n; i++) {
        struct mwatch *w = evs[i].data.ptr;
        if (w == NULL) {
            uint64_t v;
            ssize_t r = read(mgr.evfd, &v, sizeof(v));
            (void)r;
            continue;
        }
        struct mclient *c = w->client;
        if (!c->attached || w->fd < 0)
            continue; /* a stale event: the watcher or its client went away */
        RUN_UNLOCKED(c, w->cb(w, now));
        poke_push(c);
    }
}

/* Phase: service every client that is poked or due, each once. */
static void run_due(int64_t now)
{
    struct mclient *run = NULL, **tail = &run, *c, *next;

#define QUEUE(c)                                                                                   \
    do {                                                                                           \
        if (!(c)->queued) {                                                                        \
            (c)->queued = 1;                                                                       \
            (c)->qnext = NULL;                                                                     \
            *tail = (c);                                                                           \
            tail = &(c)->qnext;                                                                    \
        }                                                                                          \
    } while (0)
    pthread_mutex_lock(&pokes.mu);
    c = pokes.head;
    pokes.head = NULL;
    pthread_mutex_unlock(&pokes.mu);
    for (; c; c = next) {
        next = c->pnext;
        /* cleared before the service runs: a poke from now on is seen */
        atomic_store_explicit(&c->poke, 0, memory_order_release);
        if (c->attached)
            QUEUE(c);
    }
    while (mgr.heap_n > 0 && due_of(mgr.heap[0]) <= now) {
        c = mgr.heap[0];
        heap_remove(c);
        QUEUE(c);
    }
#undef QUEUE
    /* detached clients stay valid until the top of the loop: skip them. The
     * run list has its own link: a client released meanwhile reuses rnext. */
    for (c = run; c; c = next) {
        next = c->qnext;
        c->queued = 0;
        if (!c->attached)
            continue;
        int64_t due = 0;
        /* While service() runs its due time is unknown: a deadline set
         * meanwhile, after service() looked, must poke (manager_poke_before
         * compares with next_due), or it would wait for the due time
         * service() returns without it. Out of the heap while the key is
         * not a real one. */
        heap_remove(c);
        atomic_store_explicit(&c->next_due, INT64_MAX, memory_order_release);
        RUN_UNLOCKED(c, due = c->service(c, now));
        if (!c->attached)
            continue; /* detached meanwhile: out of the heap for good */
        atomic_store_explicit(&c->next_due, due, memory_order_release);
        heap_push(c);
    }
}

static void *manager_main(void *arg)
{
    struct epoll_event evs[64];

    (void)arg;
    on_manager = 1;
    pthread_mutex_lock(&mgr.mu);
    for (;;) {
        run_releases();
        if (mgr.stop)
            break;
        int64_t sleep = next_timeout(clock_ms());
        pthread_mutex_unlock(&mgr.mu);
        int n = epoll_wait(mgr.epfd, evs, 64, (int)sleep);
        pthread_mutex_lock(&mgr.mu);
        dispatch_io(evs, n, clock_ms());
        run_due(clock_ms());
    }
    pthread_mutex_unlock(&mgr.mu);
    return NULL;
}

/* mgr.life held. */
static int manager_start(void)
{
    struct epoll_event ev;

    mgr.epfd = epoll_create1(EPOLL_CLOEXEC);
    mgr.evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (mgr.epfd < 0 || mgr.evfd < 0)
        goto fail;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    if (epoll_ctl(mgr.epfd, EPOLL_CTL_ADD, mgr.evfd, &ev) != 0)
        goto fail;
    mgr.stop = 0;
    if (pthread_create(&mgr.thread, NULL, manager_main, NULL) != 0)
        goto fail;
    mgr.running = 1;
    return 0;
fail:
    if (mgr.epfd >= 0)
        close(mgr.epfd);
    if (mgr.evfd >= 0)
        close(mgr.evfd);
    mgr.epfd = mgr.evfd = -1;
    return set_error(DBPOOL_ESYSTEM, "cannot start the manager thread: %s", strerror(errno));
}

/* mgr.life held, mgr.mu not held; not on the manager thread. */
static void manager_stop(void)
{
    pthread_mutex_lock(&mgr.mu);
    mgr.stop = 1;
    pthread_mutex_unlock(&mgr.mu);
    wake();
    pthread_join(mgr.thread, NULL);
    pthread_mutex_lock(&mgr.mu);
    run_releases();
    close(mgr.epfd);
    close(mgr.evfd);
    mgr.epfd = mgr.evfd = -1;
    mgr.running = 0;
    mem_free(mgr.heap); /* nothing is attached; the allocator may change next */
    mgr.heap = NULL;
    mgr.heap_n = mgr.heap_cap = 0;
    pthread_mutex_unlock(&mgr.mu);
    workers_trim(); /* no thread stays behind, unless a job is stuck */
}

/* ---- fork ---------------------------------------------------------------- */

/* Hold every library lock across fork() so the child's copy of the state is
 * consistent; the child then forgets the threads (they do not exist there)
 * and everything attached to them: inherited pools are never serviced in the
 * child, their sockets belong to the parent (see pool.c, pool_forked). */
static void atfork_prepare(void)
{
    pthread_mutex_lock(&mgr.life);
    pthread_mutex_lock(&mgr.mu);
    pthread_mutex_lock(&pokes.mu);
    workers_atfork_prepare();
}

static void atfork_parent(void)
{
    workers_atfork_parent();
    pthread_mutex_unlock(&pokes.mu);
    pthread_mutex_unlock(&mgr.mu);
    pthread_mutex_unlock(&mgr.life);
}

static void atfork_child(void)
{
    workers_atfork_child();
    fork_gen++;
    if (mgr.epfd >= 0)
        close(mgr.epfd); /* the child's reference only: the parent keeps its own */
    if (mgr.evfd >= 0)
        close(mgr.evfd);
    mgr.epfd = mgr.evfd = -1;
    mgr.running = mgr.stop = 0;
    list_init(&mgr.clients);
    list_init(&mgr.detached);
    mgr.releases = NULL;
    mgr.outstanding = mgr.nattached = 0;
    /* the parent's heap is left to the parent: freeing it here could use an
     * allocator set in the child since */
    mgr.heap = NULL;
    mgr.heap_n = mgr.heap_cap = 0;
    pokes.head = NULL;
    pthread_mutex_unlock(&pokes.mu);
    /* this thread took them in atfork_prepare: it still holds them here.
     * Unlock rather than re-init: a re-initialised mutex that a sanitizer
     * still sees locked is "double locked" by the child's new manager */
    pthread_mutex_unlock(&mgr.mu);
    pthread_mutex_unlock(&mgr.life);
    pthread_cond_init(&mgr.idle, NULL);
}

static void atfork_register(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

unsigned manager_fork_gen(void)
{
    return fork_gen;
}

int manager_attach(struct mclient *c)
{
    int rc;

    pthread_once(&atfork_once, atfork_register);
    pthread_mutex_lock(&mgr.life);
    pthread_mutex_lock(&mgr.mu);
    rc = heap_reserve(mgr.nattached + 1); /* first: a failure leaves no thread behind */
    pthread_mutex_unlock(&mgr.mu);
    if (rc == 0 && !mgr.running)
        rc = manager_start();
    pthread_mutex_lock(&mgr.mu);
    if (rc == 0) {
        atomic_store(&c->next_due, 0); /* service at once */
        atomic_store(&c->poke, 0);
        c->attached = 1;
        c->running = 0;
        c->queued = 0;
        c->heap_idx = -1;
        heap_push(c);
        list_push_tail(&mgr.clients, &c->node);
        mgr.outstanding++;
        mgr.nattached++;
    } else if (!mgr.running) {
        mem_free(mgr.heap); /* no thread, nothing attached: as if never used */
        mgr.heap = NULL;
        mgr.heap_n = mgr.heap_cap = 0;
    }
    pthread_mutex_unlock(&mgr.mu);
    if (rc == 0)
        wake();
    pthread_mutex_unlock(&mgr.life);
    return rc;
}

void manager_detach(struct mclient *c)
{
    pthread_mutex_lock(&mgr.mu);
    if (c->attached) {
        c->attached = 0;
        heap_remove(c);
        mgr.nattached--;
        list_del(&mgr.clients, &c->node);
        list_push_tail(&mgr.detached, &c->node);
    }
    /* on the manager thread c cannot be running (one client at a time, and
     * not from its own callbacks) */
    while (c->running && !on_manager)
        pthread_cond_wait(&mgr.idle, &mgr.mu);
    pthread_mutex_unlock(&mgr.mu);
}

void manager_release(struct mclient *c)
{
    int stop = 0;

    pthread_mutex_lock(&mgr.mu);
    list_del(&mgr.detached, &c->node);
    poke_forget(c);
    int last = --mgr.outstanding == 0;
    if (mgr.running) {
        c->rnext = mgr.releases;
        mgr.releases = c;
        stop = last && !on_manager;
        c = NULL;
    }
    pthread_mutex_unlock(&mgr.mu);
    if (c) {
        c->release(c); /* no manager: no event can refer to it */
        return;
    }
    if (!stop) {
        wake();
        return;
    }
    pthread_mutex_lock(&mgr.life);
    pthread_mutex_lock(&mgr.mu);
    stop = mgr.running && mgr.outstanding == 0; /* nobody attached meanwhile */
    pthread_mutex_unlock(&mgr.mu);
    if (stop)
        manager_stop(); /* runs the releases too */
    else
        wake();
    pthread_mutex_unlock(&mgr.life);
}

int manager_in_use(void)
{
    pthread_mutex_lock(&mgr.life);
    pthread_mutex_lock(&mgr.mu);
    int r = mgr.running || mgr.outstanding > 0;
    pthread_mutex_unlock(&mgr.mu);
    pthread_mutex_unlock(&mgr.life);
    return r || workers_busy() > 0;
}

/* Here, not in alloc.c, so the allocator stays a leaf: only the manager
 * knows whether anything of the library is alive. */
int dbpool_set_allocator(const dbpool_allocator *a)
{
    if (a && (!a->malloc || !a->calloc || !a->free))
        return set_error(DBPOOL_EINVAL, "dbpool_set_allocator: every function must be set");
    if (manager_in_use())
        return set_error(DBPOOL_EBUSY, "dbpool_set_allocator: pools are open");
    alloc_set(a);
    return 0;
}
