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
} mgr = {
    .life = PTHREAD_MUTEX_INITIALIZER,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .idle = PTHREAD_COND_INITIALIZER,
    .epfd = -1,
    .evfd = -1,
    .clients = LIST_HEAD_INIT(mgr.clients),
    .detached = LIST_HEAD_INIT(mgr.detached),
};

static _Thread_local int on_manager;
static unsigned fork_gen; /* bumped in every child after fork() */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

int manager_is_self(void)
{
    return on_manager;
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

void manager_poke(struct mclient *c)
{
    atomic_store_explicit(&c->poke, 1, memory_order_release);
    if (!on_manager)
        wake(); /* the loop looks at every client's poke before it sleeps */
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
    int64_t due = INT64_MAX;

    list_for_each(n, &mgr.clients)
    {
        struct mclient *c = list_entry(n, struct mclient, node);
        int64_t d = atomic_load_explicit(&c->next_due, memory_order_acquire);
        if (atomic_load_explicit(&c->poke, memory_order_acquire))
            d = now;
        if (d < due)
            due = d;
    }
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
        atomic_store_explicit(&c->poke, 1, memory_order_release);
    }
}

/* Phase: service every client that is due or poked. */
static void run_due(int64_t now)
{
    struct mclient *run = NULL, **tail = &run;

    list_for_each(n, &mgr.clients)
    {
        struct mclient *c = list_entry(n, struct mclient, node);
        if (!atomic_exchange_explicit(&c->poke, 0, memory_order_acq_rel) &&
            now < atomic_load_explicit(&c->next_due, memory_order_acquire))
            continue;
        c->qnext = NULL;
        *tail = c;
        tail = &c->qnext;
    }
    /* detached clients stay valid until the top of the loop: skip them. The
     * run list has its own link: a client released meanwhile reuses rnext. */
    for (struct mclient *c = run, *next; c; c = next) {
        next = c->qnext;
        if (!c->attached)
            continue;
        int64_t due = 0;
        RUN_UNLOCKED(c, due = c->service(c, now));
        atomic_store_explicit(&c->next_due, due, memory_order_release);
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
    workers_atfork_prepare();
}

static void atfork_parent(void)
{
    workers_atfork_parent();
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
    mgr.outstanding = 0;
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
    int rc = 0;

    pthread_once(&atfork_once, atfork_register);
    pthread_mutex_lock(&mgr.life);
    if (!mgr.running)
        rc = manager_start();
    if (rc == 0) {
        pthread_mutex_lock(&mgr.mu);
        atomic_store(&c->next_due, 0); /* service at once */
        atomic_store(&c->poke, 0);
        c->attached = 1;
        c->running = 0;
        list_push_tail(&mgr.clients, &c->node);
        mgr.outstanding++;
        pthread_mutex_unlock(&mgr.mu);
        wake();
    }
    pthread_mutex_unlock(&mgr.life);
    return rc;
}

void manager_detach(struct mclient *c)
{
    pthread_mutex_lock(&mgr.mu);
    if (c->attached) {
        c->attached = 0;
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
