/*
 * dbpool/adapters/epoll.h - drive dbpool_pg_async.h from a plain epoll loop
 * (Linux, no dependency). Header-only: include it in one or more .c files.
 *
 * The adapter keeps its own epoll set (the connections' sockets, a timerfd
 * for the statement timers, and the completion queue's fd) behind ONE file
 * descriptor, so joining it to your loop is one fd and one call:
 *
 *     dbpool_epoll *ep;
 *     dbpool_loop *loop;
 *     dbpool_epoll_attach(cq, &ep, &loop);
 *     epoll_ctl(my_ep, EPOLL_CTL_ADD, dbpool_epoll_fd(ep), &(struct epoll_event){
 *         .events = EPOLLIN, .data.ptr = ep});
 *     ... epoll_wait(my_ep, ...) says dbpool_epoll_fd(ep) is readable:
 *     dbpool_epoll_run(ep, 0);        // callbacks run here, on this thread
 *     ...
 *     dbpool_epoll_detach(ep);        // after dbpool_loop_pending(loop) == 0
 *
 * Or, with nothing else to watch, dbpool_epoll_run(ep, -1) is the loop.
 * One dbpool_epoll per loop thread; nothing here is thread-safe. Needs
 * POSIX clocks: with a strict -std=c11 define _POSIX_C_SOURCE=200809L.
 *
 * Sockets are registered one-shot (EPOLLONESHOT) and left in the set when a
 * statement ends, so a statement on a connection this loop used before
 * costs one epoll_ctl (MOD: arm) instead of an ADD and a DEL; see "Why
 * one-shot" below. dbpool sees level-triggered watches all the same: after
 * an event the adapter re-arms while the io still asks for it.
 */
#ifndef DBPOOL_ADAPTERS_EPOLL_H
#define DBPOOL_ADAPTERS_EPOLL_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "dbpool_pg_async.h"

/* clock_gettime(CLOCK_MONOTONIC): POSIX, which a strict -std=c11 leaves out */
#if !defined(CLOCK_MONOTONIC)
#error "dbpool/adapters/epoll.h needs POSIX clocks: -D_POSIX_C_SOURCE=200809L or -std=gnu11"
#endif

typedef struct dbpool_epoll dbpool_epoll;

/* One io's watch and timer (the adapter's `state`). */
struct dbpool_epoll_w {
    dbpool_io *io;
    int fd;                       /* the io's socket, -1 before its first watch */
    int events;                   /* what the io asks for (DBPOOL_IO_*) */
    int armed;                    /* the one-shot registration can still report */
    int64_t due;                  /* timer, monotonic ms; -1 = off */
    int dead;                     /* released: freed after the current run */
    struct dbpool_epoll_w *tnext; /* the timer list (while due >= 0) */
    struct dbpool_epoll_w *tprev;
    struct dbpool_epoll_w *gnext; /* released, waiting to be freed */
};

struct dbpool_epoll {
    int ep, tfd;
    dbpool_cq *cq;
    dbpool_loop *loop;
    int64_t armed;                 /* the timerfd's expiry, ms; -1 = disarmed */
    struct dbpool_epoll_w *timers; /* running timers, unordered */
    struct dbpool_epoll_w *garbage;
    int running;
    int deferring;       /* inside a dbpool_cq_defer_wakeup() span */
    unsigned char *hint; /* per fd number: registered in ep, probably */
    int nhint;
};

static inline int64_t dbpool_epoll__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void dbpool_epoll__arm(dbpool_epoll *a, int64_t at)
{
    struct itimerspec its = {{0, 0}, {0, 0}};

    if (at >= 0) {
        if (at <= 0)
            at = 1;
        its.it_value.tv_sec = (time_t)(at / 1000);
        its.it_value.tv_nsec = (long)(at % 1000) * 1000000L;
        if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
            its.it_value.tv_nsec = 1;
    }
    timerfd_settime(a->tfd, TFD_TIMER_ABSTIME, &its, NULL);
    a->armed = at;
}

static inline void dbpool_epoll__tdel(dbpool_epoll *a, struct dbpool_epoll_w *w)
{
    if (w->due < 0)
        return;
    if (w->tprev)
        w->tprev->tnext = w->tnext;
    else
        a->timers = w->tnext;
    if (w->tnext)
        w->tnext->tprev = w->tprev;
    w->tnext = w->tprev = NULL;
    w->due = -1;
}

static inline struct dbpool_epoll_w *dbpool_epoll__state(void **state, dbpool_io *io)
{
    struct dbpool_epoll_w *w = (struct dbpool_epoll_w *)*state;

    if (!w && (w = (struct dbpool_epoll_w *)calloc(1, sizeof(*w))) != NULL) {
        w->io = io;
        w->fd = -1;
        w->due = -1;
        *state = w;
    }
    return w;
}

/*
 * Why one-shot. The socket of a finished statement stays in the set,
 * disarmed, so that the next statement on the connection arms it with one
 * MOD. A registration left behind must never report to anyone, and the
 * connection may meanwhile go to another loop, be closed by another thread,
 * and its number be reused by a new socket. One-shot makes that safe:
 *   - a disarmed registration reports nothing (not even EPOLLHUP), whatever
 *     happens to its socket, so the freed `state` it points to is never
 *     looked at; only our own MOD, which sets the new `state`, arms it;
 *   - a registration is armed only while its io waits on the socket, i.e.
 *     while the io holds the lease and the socket cannot be closed; an io
 *     that stops waiting (events 0, release) while armed deletes it at once,
 *     before the lease can go back to the pool (as before);
 *   - the kernel keys a registration by (file, number): a closed socket's
 *     registration goes with it (or, if a forked child keeps the socket open,
 *     stays disarmed forever), and MOD on a reused number fails with ENOENT
 *     for the new socket, which is then ADDed.
 * `hint` (per fd number) only picks which of MOD and ADD to try first; a
 * wrong guess costs one failed call, never a lost or a stale event.
 */
static inline int dbpool_epoll__hinted(const dbpool_epoll *a, int fd)
{
    return fd < a->nhint && a->hint[fd];
}

static inline void dbpool_epoll__hint(dbpool_epoll *a, int fd, int on)
{
    if (fd >= a->nhint) {
        int n = a->nhint ? a->nhint : 64;
        while (n <= fd)
            n *= 2;
        unsigned char *h = (unsigned char *)realloc(a->hint, (size_t)n);
        if (!h)
            return; /* no hint: ADD first */
        for (int i = a->nhint; i < n; i++)
            h[i] = 0;
        a->hint = h;
        a->nhint = n;
    }
    a->hint[fd] = (unsigned char)on;
}

/* Arm w's registration for w->events (one report, then disarmed). */
static inline int dbpool_epoll__arm_fd(dbpool_epoll *a, struct dbpool_epoll_w *w)
{
    struct epoll_event ev;
    int first = dbpool_epoll__hinted(a, w->fd) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

    ev.events = EPOLLONESHOT | ((w->events & DBPOOL_IO_READ) ? EPOLLIN : 0) |
                ((w->events & DBPOOL_IO_WRITE) ? EPOLLOUT : 0);
    ev.data.ptr = w;
    if (epoll_ctl(a->ep, first, w->fd, &ev) != 0) {
        int second = first == EPOLL_CTL_MOD ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
        if (errno != (first == EPOLL_CTL_MOD ? ENOENT : EEXIST) ||
            epoll_ctl(a->ep, second, w->fd, &ev) != 0) {
            dbpool_epoll__hint(a, w->fd, 0);
            return -1;
        }
    }
    dbpool_epoll__hint(a, w->fd, 1);
    w->armed = 1;
    return 0;
}

/* Take w's registration out of the set (it was armed: the io stops
 * waiting). The socket is still the io's: the lease is still held. */
static inline void dbpool_epoll__disarm(dbpool_epoll *a, struct dbpool_epoll_w *w)
{
    struct epoll_event ev = {0, {0}};

    epoll_ctl(a->ep, EPOLL_CTL_DEL, w->fd, &ev);
    dbpool_epoll__hint(a, w->fd, 0);
    w->armed = 0;
}

static inline int dbpool_epoll__watch(void *loop, dbpool_io *io, void **state, int fd, int events)
{
    dbpool_epoll *a = (dbpool_epoll *)loop;
    struct dbpool_epoll_w *w = dbpool_epoll__state(state, io);

    if (!w)
        return -1;
    w->fd = fd;
    if (!events) {
        /* Disarmed already (its event came): nothing to do, the
         * registration stays for the next statement on the socket. */
        if (w->armed)
            dbpool_epoll__disarm(a, w);
        w->events = 0;
        return 0;
    }
    if (w->armed && events == w->events)
        return 0;
    w->events = events;
    if (dbpool_epoll__arm_fd(a, w) != 0) {
        w->events = 0;
        return -1;
    }
    return 0;
}

static inline int dbpool_epoll__timer(void *loop, dbpool_io *io, void **state, int64_t ms)
{
    dbpool_epoll *a = (dbpool_epoll *)loop;
    struct dbpool_epoll_w *w = dbpool_epoll__state(state, io);

    if (!w)
        return -1;
    dbpool_epoll__tdel(a, w);
    if (ms < 0)
        return 0; /* the timerfd may fire for nothing: cheaper than re-arming */
    w->due = dbpool_epoll__now() + ms;
    w->tnext = a->timers;
    w->tprev = NULL;
    if (a->timers)
        a->timers->tprev = w;
    a->timers = w;
    if (a->armed < 0 || w->due < a->armed)
        dbpool_epoll__arm(a, w->due);
    return 0;
}

static inline void dbpool_epoll__release(void *loop, void *state)
{
    dbpool_epoll *a = (dbpool_epoll *)loop;
    struct dbpool_epoll_w *w = (struct dbpool_epoll_w *)state;

    if (w->armed) /* still waiting: the lease is still held, the fd its own */
        dbpool_epoll__disarm(a, w);
    w->events = 0;
    dbpool_epoll__tdel(a, w);
    w->dead = 1; /* an event for it may still be in this run's batch */
    w->gnext = a->garbage;
    a->garbage = w;
}

/* Fire the due timers; re-arm the timerfd for the next one. */
static inline void dbpool_epoll__timers(dbpool_epoll *a)
{
    int64_t now = dbpool_epoll__now();
    uint64_t n;

    if (read(a->tfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        return;
    a->armed = -1;
    for (;;) {
        struct dbpool_epoll_w *w, *due = NULL;
        for (w = a->timers; w; w = w->tnext)
            if (w->due <= now) {
                due = w;
                break;
            }
        if (!due)
            break;
        dbpool_epoll__tdel(a, due);
        dbpool_io_timeout(due->io); /* may start, stop or release timers */
    }
    int64_t next = -1;
    for (struct dbpool_epoll_w *w = a->timers; w; w = w->tnext)
        if (next < 0 || w->due < next)
            next = w->due;
    dbpool_epoll__arm(a, next);
}

/* The fd to watch for reading in your own loop (level-triggered). */
static inline int dbpool_epoll_fd(const dbpool_epoll *a)
{
    return a->ep;
}

/*
 * Wait up to timeout_ms (0: do not wait, -1: until something happens) and
 * run everything that is ready: socket events, due timers, the completion
 * queue. Returns the number of events handled, or -1 (errno) if epoll_wait
 * failed (EINTR: call again).
 */
static inline int dbpool_epoll_run(dbpool_epoll *a, int timeout_ms)
{
    struct epoll_event evs[64];

    /* (a run from inside a callback) never wait with completions unsignalled */
    if (a->deferring) {
        a->deferring = 0;
        dbpool_cq_defer_wakeup(a->cq, 0);
    }
    int n = epoll_wait(a->ep, evs, 64, timeout_ms);

    if (n < 0)
        return -1;
    a->running++;
    /* what this batch posts to the queue runs below without an eventfd
     * write and read (the end of the batch signals what is left) */
    int deferred = n > 0;
    if (deferred) {
        a->deferring = 1;
        dbpool_cq_defer_wakeup(a->cq, 1);
    }
    /* every socket reported here was disarmed by its report (one-shot) */
    for (int i = 0; i < n; i++) {
        void *p = evs[i].data.ptr;
        if (p != (void *)&a->cq && p != (void *)&a->tfd)
            ((struct dbpool_epoll_w *)p)->armed = 0;
    }
    for (int i = 0; i < n; i++) {
        void *p = evs[i].data.ptr;
        if (p == (void *)&a->cq) {
            dbpool_cq_run(a->cq, 0);
        } else if (p == (void *)&a->tfd) {
            dbpool_epoll__timers(a);
        } else {
            struct dbpool_epoll_w *w = (struct dbpool_epoll_w *)p;
            int seen = 0;
            if (w->dead)
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                seen |= DBPOOL_IO_READ;
            if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                seen |= DBPOOL_IO_WRITE;
            dbpool_io_ready(w->io, seen);
            /* level-triggered as dbpool sees it: still asking (dbpool does
             * not repeat an unchanged watch), so arm again; if that fails,
             * report the socket as failed, once (libpq then finds out) */
            if (!w->dead && w->events && !w->armed && dbpool_epoll__arm_fd(a, w) != 0)
                dbpool_io_ready(w->io, DBPOOL_IO_READ | DBPOOL_IO_WRITE);
        }
    }
    /* completions posted by this batch (a check-in handing its connection
     * to the next request) run now, not after one more epoll_wait */
    if (n > 0)
        dbpool_cq_run(a->cq, 0);
    if (deferred && a->deferring) { /* (not closed by a nested run) */
        a->deferring = 0;
        dbpool_cq_defer_wakeup(a->cq, 0);
    }
    if (--a->running == 0)
        while (a->garbage) {
            struct dbpool_epoll_w *w = a->garbage;
            a->garbage = w->gnext;
            free(w);
        }
    return n;
}

/*
 * Create the adapter for completion queue cq (which it watches: do not run
 * cq yourself) and the dbpool_loop to pass to the dbpool_pg_*_async calls.
 * Returns 0, or a DBPOOL_E* code (DBPOOL_ESYSTEM: epoll/timerfd failed).
 */
static inline int dbpool_epoll_attach(dbpool_cq *cq, dbpool_epoll **out, dbpool_loop **loop)
{
    static const dbpool_loop_hooks hooks = {dbpool_epoll__watch, dbpool_epoll__timer,
                                            dbpool_epoll__release};
    dbpool_epoll *a = (dbpool_epoll *)calloc(1, sizeof(*a));
    struct epoll_event ev;
    int rc;

    *out = NULL;
    *loop = NULL;
    if (!a)
        return DBPOOL_ENOMEM;
    a->cq = cq;
    a->armed = -1;
    a->ep = epoll_create1(EPOLL_CLOEXEC);
    a->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (a->ep < 0 || a->tfd < 0)
        goto fail;
    ev.events = EPOLLIN;
    ev.data.ptr = &a->cq;
    if (epoll_ctl(a->ep, EPOLL_CTL_ADD, dbpool_cq_fd(cq), &ev) != 0)
        goto fail;
    ev.data.ptr = &a->tfd;
    if (epoll_ctl(a->ep, EPOLL_CTL_ADD, a->tfd, &ev) != 0)
        goto fail;
    if ((rc = dbpool_loop_new(&a->loop, cq, &hooks, a)) != 0) {
        close(a->ep);
        close(a->tfd);
        free(a);
        return rc;
    }
    *out = a;
    *loop = a->loop;
    return 0;
fail:
    if (a->ep >= 0)
        close(a->ep);
    if (a->tfd >= 0)
        close(a->tfd);
    free(a);
    return DBPOOL_ESYSTEM;
}

/* Free the adapter and its dbpool_loop. DBPOOL_EBUSY (nothing freed) while
 * calls are pending. NULL is a no-op. */
static inline int dbpool_epoll_detach(dbpool_epoll *a)
{
    int rc;

    if (!a)
        return 0;
    if ((rc = dbpool_loop_free(a->loop)) != 0)
        return rc;
    while (a->garbage) {
        struct dbpool_epoll_w *w = a->garbage;
        a->garbage = w->gnext;
        free(w);
    }
    close(a->ep); /* and with it the registrations left behind */
    close(a->tfd);
    free(a->hint);
    free(a);
    return 0;
}

#endif /* DBPOOL_ADAPTERS_EPOLL_H */
