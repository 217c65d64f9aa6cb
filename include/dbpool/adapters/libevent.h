/*
 * dbpool/adapters/libevent.h - drive dbpool_pg_async.h from a libevent 2
 * event_base. Header-only; link with libevent (pkg-config libevent).
 *
 *     dbpool_cq *cq;
 *     dbpool_libevent *evd;
 *     dbpool_loop *loop;
 *     dbpool_cq_new(&cq);
 *     dbpool_libevent_attach(base, cq, &evd, &loop);
 *     dbpool_pg_query_async(loop, pool, "SELECT 1", NULL, NULL, on_result, arg);
 *     event_base_dispatch(base);
 *     ...
 *     dbpool_libevent_detach(evd);   // once dbpool_loop_pending(loop) == 0
 *     dbpool_cq_free(cq);
 *
 * The adapter watches the completion queue's fd (do not run the queue
 * yourself; its persistent event keeps event_base_dispatch() running until
 * you detach) and, per statement in flight, one fd event and one timer
 * event. One adapter per event_base, used from the base's thread only.
 */
#ifndef DBPOOL_ADAPTERS_LIBEVENT_H
#define DBPOOL_ADAPTERS_LIBEVENT_H

#include <event2/event.h>
#include <stdlib.h>

#include "dbpool_pg_async.h"

typedef struct dbpool_libevent {
    struct event_base *base;
    struct event *cq_ev;
    dbpool_cq *cq;
    dbpool_loop *loop;
} dbpool_libevent;

/* One io's events (the adapter's `state`). */
struct dbpool_libevent_w {
    struct event *fd_ev; /* NULL until the first watch */
    struct event *timer;
    dbpool_io *io;
    int fd, events;
};

static inline void dbpool_libevent__on_fd(evutil_socket_t fd, short what, void *arg)
{
    struct dbpool_libevent_w *w = (struct dbpool_libevent_w *)arg;
    int seen = 0;

    (void)fd;
    if (what & EV_READ)
        seen |= DBPOOL_IO_READ;
    if (what & EV_WRITE)
        seen |= DBPOOL_IO_WRITE;
    dbpool_io_ready(w->io, seen);
}

static inline void dbpool_libevent__on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct dbpool_libevent_w *w = (struct dbpool_libevent_w *)arg;

    (void)fd;
    (void)what;
    dbpool_io_timeout(w->io);
}

static inline struct dbpool_libevent_w *dbpool_libevent__state(dbpool_libevent *a, void **state,
                                                               dbpool_io *io)
{
    struct dbpool_libevent_w *w = (struct dbpool_libevent_w *)*state;

    if (w)
        return w;
    if (!(w = (struct dbpool_libevent_w *)calloc(1, sizeof(*w))))
        return NULL;
    w->io = io;
    w->fd = -1;
    if (!(w->timer = evtimer_new(a->base, dbpool_libevent__on_timer, w))) {
        free(w);
        return NULL;
    }
    *state = w;
    return w;
}

static inline int dbpool_libevent__watch(void *loop, dbpool_io *io, void **state, int fd,
                                         int events)
{
    dbpool_libevent *a = (dbpool_libevent *)loop;
    struct dbpool_libevent_w *w = dbpool_libevent__state(a, state, io);
    short what = (short)(EV_PERSIST | ((events & DBPOOL_IO_READ) ? EV_READ : 0) |
                         ((events & DBPOOL_IO_WRITE) ? EV_WRITE : 0));

    if (!w)
        return -1;
    if (w->fd_ev)
        event_del(w->fd_ev);
    if (!events)
        return 0;
    if (!w->fd_ev)
        w->fd_ev = event_new(a->base, fd, what, dbpool_libevent__on_fd, w);
    else
        event_assign(w->fd_ev, a->base, fd, what, dbpool_libevent__on_fd, w);
    if (!w->fd_ev || event_add(w->fd_ev, NULL) != 0)
        return -1;
    return 0;
}

static inline int dbpool_libevent__timer(void *loop, dbpool_io *io, void **state, int64_t ms)
{
    dbpool_libevent *a = (dbpool_libevent *)loop;
    struct dbpool_libevent_w *w = dbpool_libevent__state(a, state, io);
    struct timeval tv;

    if (!w)
        return -1;
    if (ms < 0)
        return evtimer_del(w->timer) == 0 ? 0 : -1;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    return evtimer_add(w->timer, &tv) == 0 ? 0 : -1;
}

static inline void dbpool_libevent__release(void *loop, void *state)
{
    struct dbpool_libevent_w *w = (struct dbpool_libevent_w *)state;

    (void)loop;
    /* event_free of a pending or even running event is safe in libevent 2
     * (it is removed first; the running callback's own stack is not ours) */
    if (w->fd_ev)
        event_free(w->fd_ev);
    event_free(w->timer);
    free(w);
}

static inline void dbpool_libevent__on_cq(evutil_socket_t fd, short what, void *arg)
{
    dbpool_libevent *a = (dbpool_libevent *)arg;

    (void)fd;
    (void)what;
    dbpool_cq_run(a->cq, 0);
}

/* Attach to base, watching completion queue cq; *loop is the dbpool_loop for
 * the dbpool_pg_*_async calls. Returns 0, DBPOOL_ENOMEM or DBPOOL_ESYSTEM. */
static inline int dbpool_libevent_attach(struct event_base *base, dbpool_cq *cq,
                                         dbpool_libevent **out, dbpool_loop **loop)
{
    static const dbpool_loop_hooks hooks = {dbpool_libevent__watch, dbpool_libevent__timer,
                                            dbpool_libevent__release};
    dbpool_libevent *a = (dbpool_libevent *)calloc(1, sizeof(*a));
    int rc;

    *out = NULL;
    *loop = NULL;
    if (!a)
        return DBPOOL_ENOMEM;
    a->base = base;
    a->cq = cq;
    if ((rc = dbpool_loop_new(&a->loop, cq, &hooks, a)) != 0) {
        free(a);
        return rc;
    }
    a->cq_ev = event_new(base, dbpool_cq_fd(cq), EV_READ | EV_PERSIST, dbpool_libevent__on_cq, a);
    if (!a->cq_ev || event_add(a->cq_ev, NULL) != 0) {
        if (a->cq_ev)
            event_free(a->cq_ev);
        dbpool_loop_free(a->loop);
        free(a);
        return DBPOOL_ESYSTEM;
    }
    *out = a;
    *loop = a->loop;
    return 0;
}

/* Detach and free: DBPOOL_EBUSY (nothing changes) while calls are pending.
 * NULL is a no-op. */
static inline int dbpool_libevent_detach(dbpool_libevent *a)
{
    int rc;

    if (!a)
        return 0;
    if ((rc = dbpool_loop_free(a->loop)) != 0)
        return rc;
    event_free(a->cq_ev);
    free(a);
    return 0;
}

#endif /* DBPOOL_ADAPTERS_LIBEVENT_H */
