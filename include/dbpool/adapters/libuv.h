/*
 * dbpool/adapters/libuv.h - drive dbpool_pg_async.h from a libuv loop.
 * Header-only; link with libuv (pkg-config libuv).
 *
 *     dbpool_cq *cq;
 *     dbpool_libuv *uvd;
 *     dbpool_loop *loop;
 *     dbpool_cq_new(&cq);
 *     dbpool_libuv_attach(uv_default_loop(), cq, &uvd, &loop);
 *     dbpool_pg_query_async(loop, pool, "SELECT 1", NULL, NULL, on_result, arg);
 *     uv_run(uv_default_loop(), UV_RUN_DEFAULT);
 *     ...
 *     dbpool_libuv_detach(uvd);   // once dbpool_loop_pending(loop) == 0; the
 *                                 // handles close on the loop's next turn
 *     dbpool_cq_free(cq);         // after that turn (uv_run once more)
 *
 * The adapter watches the completion queue's fd (do not run the queue
 * yourself) and, per statement in flight, one uv_poll_t and one uv_timer_t.
 * While it is attached, the queue's uv_poll_t keeps uv_run() from returning:
 * detach when you are done. One adapter per uv_loop_t; libuv is single-threaded,
 * and so is this.
 */
#ifndef DBPOOL_ADAPTERS_LIBUV_H
#define DBPOOL_ADAPTERS_LIBUV_H

#include <stdlib.h>
#include <uv.h>

#include "dbpool_pg_async.h"

typedef struct dbpool_libuv {
    uv_loop_t *uv;
    uv_poll_t cq_poll;
    dbpool_cq *cq;
    dbpool_loop *loop;
} dbpool_libuv;

/* One io's handles (the adapter's `state`); freed when both have closed. */
struct dbpool_libuv_w {
    uv_poll_t poll;
    uv_timer_t timer;
    dbpool_io *io;
    int polling; /* poll initialised on an fd */
    int closing; /* handles still to close */
};

static inline void dbpool_libuv__on_poll(uv_poll_t *h, int status, int events)
{
    struct dbpool_libuv_w *w = (struct dbpool_libuv_w *)h->data;
    int seen = 0;

    if (status < 0 || (events & UV_READABLE))
        seen |= DBPOOL_IO_READ;
    if (status < 0 || (events & UV_WRITABLE))
        seen |= DBPOOL_IO_WRITE;
    dbpool_io_ready(w->io, seen);
}

static inline void dbpool_libuv__on_timer(uv_timer_t *h)
{
    struct dbpool_libuv_w *w = (struct dbpool_libuv_w *)h->data;
    dbpool_io_timeout(w->io);
}

static inline struct dbpool_libuv_w *dbpool_libuv__state(dbpool_libuv *a, void **state,
                                                         dbpool_io *io)
{
    struct dbpool_libuv_w *w = (struct dbpool_libuv_w *)*state;

    if (!w && (w = (struct dbpool_libuv_w *)calloc(1, sizeof(*w))) != NULL) {
        w->io = io;
        uv_timer_init(a->uv, &w->timer);
        w->timer.data = w;
        *state = w;
    }
    return w;
}

static inline int dbpool_libuv__watch(void *loop, dbpool_io *io, void **state, int fd, int events)
{
    dbpool_libuv *a = (dbpool_libuv *)loop;
    struct dbpool_libuv_w *w = dbpool_libuv__state(a, state, io);

    if (!w)
        return -1;
    if (!events)
        return w->polling ? uv_poll_stop(&w->poll) == 0 ? 0 : -1 : 0;
    if (!w->polling) {
        if (uv_poll_init(a->uv, &w->poll, fd) != 0)
            return -1;
        w->poll.data = w;
        w->polling = 1;
    }
    return uv_poll_start(&w->poll,
                         ((events & DBPOOL_IO_READ) ? UV_READABLE : 0) |
                             ((events & DBPOOL_IO_WRITE) ? UV_WRITABLE : 0),
                         dbpool_libuv__on_poll) == 0
               ? 0
               : -1;
}

static inline int dbpool_libuv__timer(void *loop, dbpool_io *io, void **state, int64_t ms)
{
    dbpool_libuv *a = (dbpool_libuv *)loop;
    struct dbpool_libuv_w *w = dbpool_libuv__state(a, state, io);

    if (!w)
        return -1;
    if (ms < 0)
        return uv_timer_stop(&w->timer) == 0 ? 0 : -1;
    return uv_timer_start(&w->timer, dbpool_libuv__on_timer, (uint64_t)ms, 0) == 0 ? 0 : -1;
}

static inline void dbpool_libuv__closed(uv_handle_t *h)
{
    struct dbpool_libuv_w *w = (struct dbpool_libuv_w *)h->data;

    if (--w->closing == 0)
        free(w);
}

static inline void dbpool_libuv__release(void *loop, void *state)
{
    struct dbpool_libuv_w *w = (struct dbpool_libuv_w *)state;

    (void)loop;
    w->closing = 1 + w->polling;
    uv_close((uv_handle_t *)&w->timer, dbpool_libuv__closed);
    if (w->polling)
        uv_close((uv_handle_t *)&w->poll, dbpool_libuv__closed);
}

static inline void dbpool_libuv__on_cq(uv_poll_t *h, int status, int events)
{
    dbpool_libuv *a = (dbpool_libuv *)h->data;

    (void)status;
    (void)events;
    dbpool_cq_run(a->cq, 0);
}

/*
 * Attach to uv, watching completion queue cq; *loop is the dbpool_loop for
 * the dbpool_pg_*_async calls. Returns 0, DBPOOL_ENOMEM, or DBPOOL_ESYSTEM
 * (libuv refused the queue's fd).
 */
static inline int dbpool_libuv_attach(uv_loop_t *uv, dbpool_cq *cq, dbpool_libuv **out,
                                      dbpool_loop **loop)
{
    static const dbpool_loop_hooks hooks = {dbpool_libuv__watch, dbpool_libuv__timer,
                                            dbpool_libuv__release};
    dbpool_libuv *a = (dbpool_libuv *)calloc(1, sizeof(*a));
    int rc;

    *out = NULL;
    *loop = NULL;
    if (!a)
        return DBPOOL_ENOMEM;
    a->uv = uv;
    a->cq = cq;
    if ((rc = dbpool_loop_new(&a->loop, cq, &hooks, a)) != 0) {
        free(a);
        return rc;
    }
    if (uv_poll_init(uv, &a->cq_poll, dbpool_cq_fd(cq)) != 0) {
        dbpool_loop_free(a->loop);
        free(a);
        return DBPOOL_ESYSTEM;
    }
    a->cq_poll.data = a;
    uv_poll_start(&a->cq_poll, UV_READABLE, dbpool_libuv__on_cq);
    *out = a;
    *loop = a->loop;
    return 0;
}

static inline void dbpool_libuv__free(uv_handle_t *h)
{
    free(h->data);
}

/* Detach: DBPOOL_EBUSY (nothing changes) while calls are pending; else the
 * queue's handle closes and the adapter is freed on the loop's next turn.
 * NULL is a no-op. */
static inline int dbpool_libuv_detach(dbpool_libuv *a)
{
    int rc;

    if (!a)
        return 0;
    if ((rc = dbpool_loop_free(a->loop)) != 0)
        return rc;
    uv_close((uv_handle_t *)&a->cq_poll, dbpool_libuv__free);
    return 0;
}

#endif /* DBPOOL_ADAPTERS_LIBUV_H */
