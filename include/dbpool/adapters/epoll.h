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
 * Sockets are registered edge-triggered and left in the set when a statement
 * ends, so the next statement on the same connection on this loop (the
 * usual case: a connection checked in on a loop goes to that loop's next
 * request) waits without any epoll_ctl; see "Why edge-triggered" below.
 * dbpool sees level-triggered watches all the same: an io still waiting
 * after a report gets the socket polled again.
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
    int64_t due;                  /* timer, monotonic ms; -1 = off */
    int dead;                     /* released: freed after the current run */
    struct dbpool_epoll_w *tnext; /* the timer list (while due >= 0) */
    struct dbpool_epoll_w *tprev;
    struct dbpool_epoll_w *gnext; /* released, waiting to be freed */
};

/* What the set holds for one socket number (see "Why edge-triggered"). */
struct dbpool_epoll_fd {
    uint64_t conn;                 /* dbpool_io_conn_id() of the registration */
    uint32_t events;               /* registered EPOLLIN/EPOLLOUT; 0 = none */
    unsigned polls;                /* MODs and ADDs so far: each re-polls the socket */
    struct dbpool_epoll_w *waiter; /* the io waiting on it, or NULL */
};

struct dbpool_epoll {
    int ep, tfd;
    dbpool_cq *cq;
    dbpool_loop *loop;
    int64_t armed;                 /* the timerfd's expiry, ms; -1 = disarmed */
    struct dbpool_epoll_w *timers; /* running timers, unordered */
    struct dbpool_epoll_w *garbage;
    int running;
    int deferring;               /* inside a dbpool_cq_defer_wakeup() span */
    struct dbpool_epoll_fd *fds; /* by socket number */
    int nfds;
};

/* epoll_event.data of the two fds that are not sockets */
#define DBPOOL_EPOLL__CQ ((uint64_t)1 << 32)
#define DBPOOL_EPOLL__TFD (((uint64_t)1 << 32) + 1)

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
 * Why edge-triggered. A statement's socket stays registered after the
 * statement, so that the next statement on the same connection, on this
 * loop, waits without any epoll_ctl: the usual case, since a connection
 * checked in on a loop goes to that loop's next request (same-loop service).
 * The registration is edge-triggered (EPOLLET) and its data is the socket
 * number, never a pointer, so whatever happens to a socket left registered
 * (another loop uses the connection, the pool closes it, its number is
 * reused, a forked child keeps it open) costs at most a report per new
 * arrival, which goes to nobody or to a spurious wake-up, and never reads
 * freed memory nor spins:
 *   - a report is handed to the io waiting on that number, if any; an io
 *     that wakes with nothing to read waits again (as on any spurious wake);
 *   - a report with no io waiting deletes the registration (no more reports
 *     for a connection that went to another loop); the next wait adds it;
 *   - a wait re-uses the registration only for the same connection
 *     (dbpool_io_conn_id), never re-used, so a socket number taken over by
 *     a new connection is registered anew (MOD, ENOENT: ADD);
 *   - edge-triggered misses nothing: every MOD or ADD polls the socket
 *     once, and an io that still waits after a report without a MOD in
 *     between (a partial read: libpq does not read until EAGAIN) gets one.
 *     A statement's answer cannot come before the statement was sent, and
 *     the io waits right after sending, so its first edge finds it waiting.
 */
static inline struct dbpool_epoll_fd *dbpool_epoll__fd(dbpool_epoll *a, int fd)
{
    if (fd < 0)
        return NULL;
    if (fd >= a->nfds) {
        int n = a->nfds ? a->nfds : 64;
        while (n <= fd)
            n *= 2;
        struct dbpool_epoll_fd *f =
            (struct dbpool_epoll_fd *)realloc(a->fds, (size_t)n * sizeof(*f));
        if (!f)
            return NULL;
        for (int i = a->nfds; i < n; i++) {
            f[i].conn = 0;
            f[i].events = 0;
            f[i].polls = 0;
            f[i].waiter = NULL;
        }
        a->fds = f;
        a->nfds = n;
    }
    return &a->fds[fd];
}

/* (Re-)register socket fd for `want` (EPOLLIN/EPOLLOUT), edge-triggered;
 * this polls it once. 0, or -1 (f->events 0). */
static inline int dbpool_epoll__reg(dbpool_epoll *a, int fd, struct dbpool_epoll_fd *f,
                                    uint32_t want, uint64_t conn)
{
    struct epoll_event ev;
    int first = f->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

    ev.events = EPOLLET | want;
    ev.data.u64 = (uint64_t)fd;
    f->polls++;
    if (epoll_ctl(a->ep, first, fd, &ev) != 0) {
        int second = first == EPOLL_CTL_MOD ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
        if (errno != (first == EPOLL_CTL_MOD ? ENOENT : EEXIST) ||
            epoll_ctl(a->ep, second, fd, &ev) != 0) {
            f->events = 0;
            return -1;
        }
    }
    f->events = want;
    f->conn = conn;
    return 0;
}

static inline int dbpool_epoll__watch(void *loop, dbpool_io *io, void **state, int fd, int events)
{
    dbpool_epoll *a = (dbpool_epoll *)loop;
    struct dbpool_epoll_w *w = dbpool_epoll__state(state, io);
    struct dbpool_epoll_fd *f;

    if (!w)
        return -1;
    if (!events) {
        /* the registration stays for the next statement on the socket */
        if (w->fd >= 0 && w->fd < a->nfds && a->fds[w->fd].waiter == w)
            a->fds[w->fd].waiter = NULL;
        w->events = 0;
        return 0;
    }
    if (!(f = dbpool_epoll__fd(a, fd)))
        return -1;
    uint32_t want =
        ((events & DBPOOL_IO_READ) ? EPOLLIN : 0) | ((events & DBPOOL_IO_WRITE) ? EPOLLOUT : 0);
    uint64_t conn = dbpool_io_conn_id(io);
    w->fd = fd;
    w->events = events;
    if ((f->events != want || f->conn != conn || !conn) &&
        dbpool_epoll__reg(a, fd, f, want, conn) != 0) {
        w->events = 0;
        return -1;
    }
    f->waiter = w;
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

    /* no epoll_ctl: the registration stays (see "Why edge-triggered") */
    if (w->fd >= 0 && w->fd < a->nfds && a->fds[w->fd].waiter == w)
        a->fds[w->fd].waiter = NULL;
    w->events = 0;
    dbpool_epoll__tdel(a, w);
    w->dead = 1; /* the run that called us may still hold it */
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
    for (int i = 0; i < n; i++) {
        uint64_t d = evs[i].data.u64;
        if (d == DBPOOL_EPOLL__CQ) {
            dbpool_cq_run(a->cq, 0);
        } else if (d == DBPOOL_EPOLL__TFD) {
            dbpool_epoll__timers(a);
        } else {
            int fd = (int)d;
            struct dbpool_epoll_fd *f = fd < a->nfds ? &a->fds[fd] : NULL;
            struct dbpool_epoll_w *w = f ? f->waiter : NULL;
            int seen = 0;
            if (!w) {
                /* nobody waits here (the connection is idle, or on another
                 * loop, or the number is stale): stop its reports */
                struct epoll_event ev = {0, {0}};
                epoll_ctl(a->ep, EPOLL_CTL_DEL, fd, &ev);
                if (f)
                    f->events = 0;
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                seen |= DBPOOL_IO_READ;
            if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                seen |= DBPOOL_IO_WRITE;
            unsigned polls = f->polls;
            dbpool_io_ready(w->io, seen);
            /* level-triggered as dbpool sees it: still waiting here with no
             * re-poll since the report (libpq may have left bytes unread), so
             * poll again; if that fails, report the socket as failed, once.
             * (a->fds may have moved: dbpool_io_ready can register sockets) */
            f = &a->fds[fd];
            if (!w->dead && w->events && f->waiter == w && f->polls == polls &&
                dbpool_epoll__reg(a, fd, f, f->events, f->conn) != 0) {
                f->waiter = NULL;
                dbpool_io_ready(w->io, DBPOOL_IO_READ | DBPOOL_IO_WRITE);
            }
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
    ev.data.u64 = DBPOOL_EPOLL__CQ;
    if (epoll_ctl(a->ep, EPOLL_CTL_ADD, dbpool_cq_fd(cq), &ev) != 0)
        goto fail;
    ev.data.u64 = DBPOOL_EPOLL__TFD;
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
    free(a->fds);
    free(a);
    return 0;
}

#endif /* DBPOOL_ADAPTERS_EPOLL_H */
