/* manager.c - the process-wide manager thread (epoll loop + timers for every pool)
 * and the helper thread that runs the few jobs that must block (cancel). */
#include "manager.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "pool.h"

struct job {
    struct job *next;
    void (*fn)(void *);
    void (*free_fn)(void *);
    void *arg;
};

/*
 * Lock order: M.life -> M.mu -> pool->mu -> M.hmu.
 * Pools are freed only by the manager thread at the top of its loop (after
 * every event of the previous epoll_wait was handled) or, when no manager
 * runs, directly: so an event never points into freed memory.
 */
static struct {
    pthread_mutex_t life; /* serialises starting and stopping the thread */
    pthread_mutex_t mu;   /* pools, held, zombies, stop */
    pthread_t thread;
    int running, stop;
    int epfd, evfd;
    struct dbpool *pools;    /* open */
    struct dbpool *held;     /* closed, leases still out */
    struct dbpool *zombies;  /* closed, to be freed by the manager */
    _Atomic int64_t wake_at; /* when the manager will wake by itself */

    struct ticker {
        void (*fn)(void *, int64_t);
        void *arg;
    } tickers[8];
    int ntickers;

    pthread_mutex_t hmu; /* helper thread's job queue */
    pthread_cond_t hcond;
    struct job *jobs, *jobs_tail;
    unsigned helper_gen; /* a helper whose gen differs exits */
    pthread_t helper;
    _Atomic int helpers_alive; /* include helpers still finishing a job */
} M = {
    .life = PTHREAD_MUTEX_INITIALIZER,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .hmu = PTHREAD_MUTEX_INITIALIZER,
    .hcond = PTHREAD_COND_INITIALIZER,
    .epfd = -1,
    .evfd = -1,
};

static _Thread_local int on_manager;

int manager_is_self(void)
{
    return on_manager;
}

/* ---- pool lists (M.mu held) ------------------------------------------- */

static void plist_push(struct dbpool **head, struct dbpool *p)
{
    p->mprev = NULL;
    p->mnext = *head;
    if (*head)
        (*head)->mprev = p;
    *head = p;
}

static void plist_remove(struct dbpool **head, struct dbpool *p)
{
    if (p->mprev)
        p->mprev->mnext = p->mnext;
    else
        *head = p->mnext;
    if (p->mnext)
        p->mnext->mprev = p->mprev;
    p->mnext = p->mprev = NULL;
}

static int plist_has(struct dbpool *head, const struct dbpool *p)
{
    for (; head; head = head->mnext)
        if (head == p)
            return 1;
    return 0;
}

static void free_zombies(void)
{
    struct dbpool *p;

    while ((p = M.zombies) != NULL) {
        plist_remove(&M.zombies, p);
        pool_free(p);
    }
}

/* ---- wakeups ------------------------------------------------------------- */

void manager_wake(void)
{
    uint64_t one = 1;
    int fd = M.evfd;

    if (fd >= 0) {
        ssize_t r = write(fd, &one, sizeof(one));
        (void)r; /* EAGAIN: a wakeup is already pending */
    }
}

void manager_poke(struct dbpool *p)
{
    atomic_store_explicit(&p->poke, 1, memory_order_release);
    manager_wake();
}

void manager_poke_before(struct dbpool *p, int64_t due)
{
    if (due < atomic_load_explicit(&p->next_due, memory_order_acquire))
        manager_poke(p);
}

/* ---- epoll --------------------------------------------------------------- */

void manager_watch(struct dbpool_slot *s, int fd, int want)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = (want == DBPOOL_IO_WRITE ? EPOLLOUT : EPOLLIN);
    ev.data.ptr = s;
    if (s->fd >= 0 && s->fd != fd)
        manager_unwatch(s);
    /* libpq may close and reopen its socket (next host): the number can be
     * reused while the old registration vanished with the old socket. */
    if (s->fd == fd && epoll_ctl(M.epfd, EPOLL_CTL_MOD, fd, &ev) == 0) {
        s->io_events = (int)ev.events;
        return;
    }
    if (epoll_ctl(M.epfd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST)
        epoll_ctl(M.epfd, EPOLL_CTL_MOD, fd, &ev);
    s->fd = fd;
    s->io_events = (int)ev.events;
}

void manager_unwatch(struct dbpool_slot *s)
{
    if (s->fd >= 0)
        epoll_ctl(M.epfd, EPOLL_CTL_DEL, s->fd, NULL);
    s->fd = -1;
}

/* ---- helper thread -------------------------------------------------------- */

static void *helper_main(void *arg)
{
    unsigned gen = (unsigned)(uintptr_t)arg;

    pthread_mutex_lock(&M.hmu);
    for (;;) {
        while (!M.jobs && M.helper_gen == gen)
            pthread_cond_wait(&M.hcond, &M.hmu);
        if (M.helper_gen != gen)
            break;
        struct job *j = M.jobs;
        M.jobs = j->next;
        if (!M.jobs)
            M.jobs_tail = NULL;
        pthread_mutex_unlock(&M.hmu);
        j->fn(j->arg);
        if (j->free_fn)
            j->free_fn(j->arg);
        dbpool_free(j);
        pthread_mutex_lock(&M.hmu);
    }
    pthread_mutex_unlock(&M.hmu);
    atomic_fetch_sub(&M.helpers_alive, 1);
    return NULL;
}

int manager_submit(void (*fn)(void *), void *arg, void (*free_fn)(void *))
{
    struct job *j = dbpool_malloc(sizeof(*j));

    if (!j) {
        if (free_fn)
            free_fn(arg);
        return DBPOOL_ENOMEM;
    }
    j->next = NULL;
    j->fn = fn;
    j->free_fn = free_fn;
    j->arg = arg;
    pthread_mutex_lock(&M.hmu);
    if (M.jobs_tail)
        M.jobs_tail->next = j;
    else
        M.jobs = j;
    M.jobs_tail = j;
    pthread_cond_signal(&M.hcond);
    pthread_mutex_unlock(&M.hmu);
    return 0;
}

static int helper_start(void)
{
    unsigned gen;

    pthread_mutex_lock(&M.hmu);
    gen = ++M.helper_gen;
    pthread_mutex_unlock(&M.hmu);
    atomic_fetch_add(&M.helpers_alive, 1);
    int rc = pthread_create(&M.helper, NULL, helper_main, (void *)(uintptr_t)gen);
    if (rc != 0)
        atomic_fetch_sub(&M.helpers_alive, 1);
    return rc;
}

/* Join the helper if it finishes within 2 s; a cancel may block much longer
 * (libpq < 17 has no timeout on PQcancel), and that must never hold up
 * dbpool_close(): then it is detached and exits when its job ends
 * (manager_in_use() stays true until it has). */
static void helper_join(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 2;
    if (pthread_timedjoin_np(M.helper, NULL, &ts) != 0)
        pthread_detach(M.helper);
}

static void helper_stop(void)
{
    struct job *j;

    pthread_mutex_lock(&M.hmu);
    M.helper_gen++;
    j = M.jobs;
    M.jobs = M.jobs_tail = NULL;
    pthread_cond_broadcast(&M.hcond);
    pthread_mutex_unlock(&M.hmu);
    while (j) {
        struct job *next = j->next;
        if (j->free_fn)
            j->free_fn(j->arg);
        dbpool_free(j);
        j = next;
    }
}

/* ---- the loop ------------------------------------------------------------ */

#define MAX_SLEEP_MS 1000

static void *manager_main(void *arg)
{
    struct epoll_event evs[64];

    (void)arg;
    on_manager = 1;
    pthread_mutex_lock(&M.mu);
    for (;;) {
        free_zombies();
        if (M.stop)
            break;

        int64_t now = clock_ms(), due = INT64_MAX;
        for (struct dbpool *p = M.pools; p; p = p->mnext) {
            int64_t d = atomic_load_explicit(&p->next_due, memory_order_relaxed);
            if (d < due)
                due = d;
        }
        int64_t sleep = due == INT64_MAX ? MAX_SLEEP_MS : due - now;
        if (sleep < 0)
            sleep = 0;
        if (sleep > MAX_SLEEP_MS)
            sleep = MAX_SLEEP_MS;
        atomic_store_explicit(&M.wake_at, now + sleep, memory_order_release);
        pthread_mutex_unlock(&M.mu);

        int n = epoll_wait(M.epfd, evs, 64, (int)sleep);

        pthread_mutex_lock(&M.mu);
        /* while we work, any new deadline must wake us (see manager_wake_before) */
        atomic_store_explicit(&M.wake_at, INT64_MAX, memory_order_release);
        now = clock_ms();
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                uint64_t v;
                ssize_t r = read(M.evfd, &v, sizeof(v));
                (void)r;
            } else {
                slot_io(evs[i].data.ptr, now);
            }
        }
        now = clock_ms();
        for (int i = 0; i < M.ntickers; i++)
            M.tickers[i].fn(M.tickers[i].arg, now);
        for (struct dbpool *p = M.pools; p; p = p->mnext) {
            if (!atomic_exchange_explicit(&p->poke, 0, memory_order_acq_rel) &&
                now < atomic_load_explicit(&p->next_due, memory_order_relaxed))
                continue;
            atomic_store_explicit(&p->next_due, slot_service(p, now), memory_order_release);
            pool_deliver_events(p);
        }
    }
    pthread_mutex_unlock(&M.mu);
    return NULL;
}

/* M.life held. */
static int manager_start(void)
{
    struct epoll_event ev;

    M.epfd = epoll_create1(EPOLL_CLOEXEC);
    M.evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (M.epfd < 0 || M.evfd < 0)
        goto fail;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    if (epoll_ctl(M.epfd, EPOLL_CTL_ADD, M.evfd, &ev) != 0)
        goto fail;
    M.stop = 0;
    atomic_store(&M.wake_at, INT64_MAX);
    if (helper_start() != 0)
        goto fail;
    if (pthread_create(&M.thread, NULL, manager_main, NULL) != 0) {
        helper_stop();
        helper_join();
        goto fail;
    }
    M.running = 1;
    return 0;
fail:
    if (M.epfd >= 0)
        close(M.epfd);
    if (M.evfd >= 0)
        close(M.evfd);
    M.epfd = M.evfd = -1;
    return set_error(DBPOOL_ESYSTEM, "cannot start the manager thread: %s", strerror(errno));
}

/* M.life held, M.mu not held. */
static void manager_stop(void)
{
    pthread_mutex_lock(&M.mu);
    M.stop = 1;
    pthread_mutex_unlock(&M.mu);
    manager_wake();
    pthread_join(M.thread, NULL);
    helper_stop();
    helper_join();
    pthread_mutex_lock(&M.mu);
    free_zombies();
    close(M.epfd);
    close(M.evfd);
    M.epfd = M.evfd = -1;
    M.running = 0;
    pthread_mutex_unlock(&M.mu);
}

int manager_ticker_add(void (*fn)(void *arg, int64_t now), void *arg)
{
    int rc = 0;

    pthread_mutex_lock(&M.mu);
    if (M.ntickers == (int)(sizeof(M.tickers) / sizeof(M.tickers[0])))
        rc = set_error(DBPOOL_ENOMEM, "too many registries (at most 8)");
    else
        M.tickers[M.ntickers++] = (struct ticker){fn, arg};
    pthread_mutex_unlock(&M.mu);
    return rc;
}

void manager_ticker_remove(void *arg)
{
    pthread_mutex_lock(&M.mu);
    for (int i = 0; i < M.ntickers; i++) {
        if (M.tickers[i].arg == arg) {
            M.tickers[i] = M.tickers[--M.ntickers];
            break;
        }
    }
    pthread_mutex_unlock(&M.mu);
}

int manager_in_use(void)
{
    pthread_mutex_lock(&M.life);
    int r = M.running || atomic_load(&M.helpers_alive) > 0;
    pthread_mutex_unlock(&M.life);
    return r;
}

int manager_attach(struct dbpool *p)
{
    int rc = 0;

    pthread_mutex_lock(&M.life);
    if (!M.running)
        rc = manager_start();
    if (rc == 0) {
        pthread_mutex_lock(&M.mu);
        atomic_store(&p->next_due, 0); /* connect at once */
        plist_push(&M.pools, p);
        pthread_mutex_unlock(&M.mu);
        manager_wake();
    }
    pthread_mutex_unlock(&M.life);
    return rc;
}

int manager_close(struct dbpool *p)
{
    int busy;

    pthread_mutex_lock(&M.life);
    pthread_mutex_lock(&M.mu);
    if (!plist_has(M.pools, p)) {
        int held = plist_has(M.held, p);
        pthread_mutex_unlock(&M.mu);
        pthread_mutex_unlock(&M.life);
        return set_error(held ? DBPOOL_ECLOSED : DBPOOL_EINVAL,
                         held ? "pool is already closed" : "not an open pool");
    }
    plist_remove(&M.pools, p);

    /* The manager is not running slot code now (we hold M.mu), so every
     * slot it owns can be torn down from here. */
    pthread_mutex_lock(&p->mu);
    p->closing = 1;
    pool_fail_waiters_locked(p, DBPOOL_ECLOSED, "pool closed");
    /* they still need the pool mutex to return: wait until they are out */
    while (p->in_wait > 0)
        pthread_cond_wait(&p->drained, &p->mu);
    pool_update_state_locked(p, clock_ms());
    for (int i = 0; p->slots && i < p->cfg.size; i++) {
        struct dbpool_slot *s = &p->slots[i];
        if (s->state == SLOT_BUSY)
            continue;
        slot_disconnect(p, s);
        slot_move(p, s, SLOT_STOPPED);
    }
    busy = p->lists[SLOT_BUSY].n;
    pthread_mutex_unlock(&p->mu);

    plist_push(busy ? &M.held : &M.zombies, p);
    int last = !M.pools && !M.held;
    pthread_mutex_unlock(&M.mu);
    if (last && M.running)
        manager_stop(); /* frees the zombies too */
    else
        manager_wake();
    pthread_mutex_unlock(&M.life);
    if (busy)
        return set_error(DBPOOL_EBUSY,
                         "pool closed with %d connection(s) still checked out; they are "
                         "closed at check-in",
                         busy);
    return 0;
}

void manager_release_closed(struct dbpool *p)
{
    pthread_mutex_lock(&M.life);
    pthread_mutex_lock(&M.mu);
    plist_remove(&M.held, p);
    int running = M.running;
    if (running)
        plist_push(&M.zombies, p);
    int last = !M.pools && !M.held;
    pthread_mutex_unlock(&M.mu);
    if (!running)
        pool_free(p);
    else if (last)
        manager_stop();
    else
        manager_wake();
    pthread_mutex_unlock(&M.life);
}
