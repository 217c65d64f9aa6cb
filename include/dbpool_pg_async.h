/*
 * dbpool_pg_async.h - PostgreSQL statements from an event loop, without ever
 * blocking it.
 *
 * dbpool_async.h gives an event-driven server a connection without blocking;
 * this header runs statements on it the same way: libpq's non-blocking API
 * (PQsendQueryParams, PQflush, PQconsumeInput, PQisBusy) driven by the
 * application's own loop through a small adapter, like hiredis'
 * redisAsyncContext with its adapters/ *.h. The loop tells dbpool when a
 * socket is ready and when a timer fired; dbpool tells the loop what to
 * watch. Adapters ship as headers for libuv (<dbpool/adapters/libuv.h>),
 * libevent (<dbpool/adapters/libevent.h>) and plain epoll
 * (<dbpool/adapters/epoll.h>); writing one for another loop takes three
 * functions (dbpool_loop_hooks below).
 *
 *     dbpool_cq *cq;            // the completion queue of dbpool_async.h
 *     dbpool_loop *loop;
 *     dbpool_cq_new(&cq);
 *     dbpool_libuv_attach(uv_default_loop(), cq, &loop);   // the libuv adapter
 *
 *     const char *v[] = {"42"};
 *     dbpool_pg_params p = {.n = 1, .values = v};
 *     dbpool_pg_query_async(loop, pool, "SELECT name FROM users WHERE id = $1", &p,
 *                           NULL, on_row, client);
 *     uv_run(uv_default_loop(), UV_RUN_DEFAULT);
 *
 *     static void on_row(void *arg, int status, dbpool_pg_result *r)
 *     {
 *         if (status == 0)
 *             reply(arg, PQgetvalue(r->res, 0, 0));
 *         else
 *             reply_error(arg, status, r->sqlstate, dbpool_last_error());
 *     }                         // r and r->res are freed when on_row returns
 *
 * Outcomes are exactly those of the blocking helpers in dbpool_pg.h (same
 * return codes, same rules for r->sent, the same code classifies them):
 * 0, DBPOOL_EQUERY (SQL error, connection kept), DBPOOL_ETIMEDOUT (statement
 * timeout and the server confirmed the cancel, 57014; or nothing was sent),
 * DBPOOL_EUNKNOWN (statement timeout, no answer to the cancel within
 * cancel_grace: it may or may not have run), DBPOOL_ECONNLOST (r->sent says
 * whether it may have run), DBPOOL_EEXPIRED (hold_timeout), DBPOOL_EINVAL,
 * and for the pool-level calls every dbpool_checkout() error.
 *
 * The statement timeout cancels server-side without blocking the loop: the
 * cancel request (PQcancel blocks) goes to one of the library's worker
 * threads, and its delivery comes back through the completion queue, whose
 * fd the loop watches. So while a cancel request is on its way,
 * dbpool_cq_free() and dbpool_loop_free() return DBPOOL_EBUSY.
 *
 * Guarantees
 *   - A call that returned 0 runs its callback exactly once, on the loop's
 *     thread: from inside dbpool_io_ready()/dbpool_io_timeout() (called by
 *     the adapter) or dbpool_cq_run(); never from inside the call itself.
 *   - The callback's `r` and `r->res` belong to the library and are freed
 *     when the callback returns. To keep the result, take it:
 *     `PGresult *mine = r->res; r->res = NULL;` and PQclear(mine) later.
 *   - dbpool_last_error() in the callback holds the detail of a failure.
 *   - sql and params are copied: they need not outlive the call.
 *
 * Not supported (use the blocking helpers or libpq): transactions as one
 * call (run BEGIN ... COMMIT yourself with dbpool_pg_exec_async on one lease
 * and mind that a lost COMMIT is DBPOOL_ECONNLOST with r->sent 1 here, not
 * DBPOOL_ECOMMIT_UNKNOWN), COPY, withdrawing a statement once sent (set a
 * statement_timeout instead), pipeline mode.
 *
 * Thread rules: a dbpool_loop, its completion queue and every call on it
 * belong to one thread, the loop's. Run one dbpool_loop per loop thread.
 */
#ifndef DBPOOL_PG_ASYNC_H
#define DBPOOL_PG_ASYNC_H

#include "dbpool_async.h"
#include "dbpool_pg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================== */
/* The adapter: what an event loop provides                                  */
/* ======================================================================== */

/* Events to watch, and seen. */
#define DBPOOL_IO_READ 1
#define DBPOOL_IO_WRITE 2

/* One connection being driven by one statement call. Opaque. */
typedef struct dbpool_io dbpool_io;

/*
 * Three functions a loop provides. `loop` is the pointer given to
 * dbpool_loop_new(). `*state` is the adapter's own storage for this io, NULL
 * at the first call: allocate what you need (a uv_poll_t and a uv_timer_t,
 * two struct event...) and store it there.
 *
 * watch   watch `fd` for `events` (DBPOOL_IO_READ | DBPOOL_IO_WRITE,
 *         level-triggered), replacing the set watched before; events 0 stops
 *         watching. When the fd is ready call dbpool_io_ready(io, seen)
 *         (report errors and hang-ups as READ | WRITE). The fd stays the same
 *         for one io. Return 0, or -1 if the loop cannot watch it.
 * timer   start the io's one-shot timer to call dbpool_io_timeout(io) after
 *         `ms` milliseconds (0: on the next turn of the loop), replacing a
 *         running one; ms < 0 stops it. Return 0 or -1.
 * release the io is finished: stop watching and the timer, and free
 *         `state` (now or later, e.g. after uv_close). May be called from
 *         inside dbpool_io_ready() or dbpool_io_timeout() (of this io or of
 *         another): after it, the adapter must not touch `state` or call
 *         dbpool_io_* for this io again. Not called if state is still NULL.
 */
typedef struct dbpool_loop_hooks {
    int (*watch)(void *loop, dbpool_io *io, void **state, int fd, int events);
    int (*timer)(void *loop, dbpool_io *io, void **state, int64_t ms);
    void (*release)(void *loop, void *state);
} dbpool_loop_hooks;

/* The adapter reports: the io's fd showed `events`. Runs the statement's
 * state machine, and its callback if it finished. Loop thread only. */
DBPOOL_API void dbpool_io_ready(dbpool_io *io, int events);
/* The adapter reports: the io's timer fired. Loop thread only. */
DBPOOL_API void dbpool_io_timeout(dbpool_io *io);

/*
 * For adapters that keep a socket registered between statements (the epoll
 * adapter does): the connection the io drives, as a number that is the same
 * for every io on that connection and is never given to another connection
 * in the process, so a socket number reused by a new connection is told
 * apart from the old one. Never 0 inside a hook; 0 for NULL. Loop thread,
 * from inside the watch hook.
 */
DBPOOL_API uint64_t dbpool_io_conn_id(const dbpool_io *io);

/* A loop as dbpool sees it: the adapter's hooks plus a completion queue
 * (dbpool_async.h) that the loop also watches (dbpool_cq_fd readable ->
 * dbpool_cq_run). */
typedef struct dbpool_loop dbpool_loop;

/*
 * Bind hooks (copied) and a completion queue (not owned: free it after the
 * loop) into a dbpool_loop. `loop` is passed to every hook. Returns 0 and
 * sets *out, or DBPOOL_EINVAL (NULL out, cq or hooks, a hook missing),
 * DBPOOL_ENOMEM. The adapters' attach functions call this for you.
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_loop_new(dbpool_loop **out, dbpool_cq *cq,
                                                const dbpool_loop_hooks *hooks, void *loop);

/* Free a dbpool_loop. NULL is a no-op returning 0. Returns DBPOOL_EBUSY and
 * frees nothing while calls on it have not run their callback yet. */
DBPOOL_API int dbpool_loop_free(dbpool_loop *loop);

/* The completion queue of a dbpool_loop (NULL for NULL). */
DBPOOL_API dbpool_cq *dbpool_loop_cq(const dbpool_loop *loop);

/* Calls on the loop whose callback has not run yet (0 for NULL). */
DBPOOL_API int dbpool_loop_pending(const dbpool_loop *loop);

/* The most one-call statements dbpool_loop_batch() puts on one lease. */
#define DBPOOL_BATCH_MAX 64

/*
 * Batch this loop's one-call statements (dbpool_pg_query_async; not the
 * _prepared form) when they queue for connections: a statement handed a
 * connection takes the requests right behind it in the pool's queue, as long
 * as they are this loop's (other loops' requests may be passed over while
 * the pool's oldest waiter has waited less than barge_window, as for
 * same-loop service in dbpool_async.h), for the same pool and with the same
 * statement_timeout and cancel_grace, up to `max` statements in all (a
 * statement starting with BEGIN or START, or with anything but a word, e.g.
 * a comment, always runs alone: a transaction block would swallow the
 * others' statements), and runs
 * them in one libpq pipeline with a sync after each. No blocking caller is
 * overtaken, nor another loop's request that waited barge_window. Each statement is still its own
 * implicit transaction with its own outcome, but they share one connection
 * and one deadline (statement_timeout from the send, for the whole batch):
 * a slow statement delays the ones behind it in its batch, a statement that
 * gets no answer in time is DBPOOL_EUNKNOWN, and a lost connection makes
 * every unanswered one DBPOOL_ECONNLOST with r->sent 1. A connection found
 * dead before sending retries each of them on another connection, as for a
 * single statement. Batched statements count as one checkout in the pool's
 * statistics (their r->queue_us is their own).
 * max 0 or 1: off (the default). Returns 0, or DBPOOL_EINVAL (NULL loop, max
 * not in 0..DBPOOL_BATCH_MAX, libpq < 14). Loop thread only; applies to
 * requests handed a connection from now on.
 */
DBPOOL_API int dbpool_loop_batch(dbpool_loop *loop, int max);

/* ======================================================================== */
/* Statements                                                               */
/* ======================================================================== */

/*
 * The outcome of an asynchronous statement, on the loop's thread. status is
 * one of the codes above; `r` is filled as by the blocking helpers
 * (r->res: the result or the SQL error's result, r->sqlstate, r->sent,
 * r->retries, r->queue_us, r->db_us). r and r->res are freed when the
 * callback returns, unless you take r->res (set it to NULL).
 */
typedef void (*dbpool_pg_query_cb)(void *arg, int status, dbpool_pg_result *r);

/*
 * The one-call form: check a connection out (dbpool_checkout_async, in the
 * pool's FIFO queue), run `sql` with `params` under opts->statement_timeout,
 * check the connection in (or discard it), then cb(arg, status, r).
 * Like dbpool_pg_query(): retried on another connection only while the
 * statement provably was not sent (a dead connection found before sending),
 * at most `size` times. `params` and `opts` may be NULL (defaults).
 * Returns 0 (cb will run exactly once), or, with no callback ever:
 * DBPOOL_EINVAL (NULL loop, pool, sql or cb; bad params or opts),
 * DBPOOL_ENOMEM, DBPOOL_EFORKED.
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_pg_query_async(dbpool_loop *loop, dbpool *pool,
                                                      const char *sql,
                                                      const dbpool_pg_params *params,
                                                      const dbpool_pg_opts *opts,
                                                      dbpool_pg_query_cb cb, void *arg);

/* Like dbpool_pg_query_async(), through the connection's prepared-statement
 * cache exactly as dbpool_pg_query_prepared() (opts->unnamed / cache_size 0:
 * no named statements). */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_pg_query_prepared_async(dbpool_loop *loop, dbpool *pool,
                                                               const char *sql,
                                                               const dbpool_pg_params *params,
                                                               const dbpool_pg_opts *opts,
                                                               dbpool_pg_query_cb cb, void *arg);

/*
 * Run a statement on a lease you hold (from dbpool_checkout_async's
 * callback, say). Same outcomes, never retried, never checks in: that is
 * yours to do, in the callback or later. Until the callback runs the lease
 * is in use: do not touch it or its PGconn. opts->checkout_timeout is not
 * used. Returns 0 (cb will run exactly once), or DBPOOL_EINVAL (NULL
 * argument, bad params, a lease not from a PostgreSQL pool), DBPOOL_ESTALE,
 * DBPOOL_EEXPIRED, DBPOOL_ENOMEM, with no callback.
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_pg_exec_async(dbpool_loop *loop, dbpool_lease *lease,
                                                     const char *sql,
                                                     const dbpool_pg_params *params,
                                                     const dbpool_pg_opts *opts,
                                                     dbpool_pg_query_cb cb, void *arg);
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_pg_exec_prepared_async(dbpool_loop *loop,
                                                              dbpool_lease *lease, const char *sql,
                                                              const dbpool_pg_params *params,
                                                              const dbpool_pg_opts *opts,
                                                              dbpool_pg_query_cb cb, void *arg);

/* ======================================================================== */
/* Pipelines: several statements on one lease, one round trip               */
/* ======================================================================== */

/* One statement of a pipeline and where its outcome goes. */
typedef struct dbpool_pg_stmt {
    const char *sql;
    const dbpool_pg_params *params; /* NULL: none */
    dbpool_pg_query_cb cb;          /* its outcome: cb(arg, status, r), exactly once */
    void *arg;
} dbpool_pg_stmt;

/* dbpool_pg_pipeline_async flags */
#define DBPOOL_PIPE_SYNC_EACH 1 /* a sync after every statement: independent ones */
/* The most statements in one pipeline. */
#define DBPOOL_PIPELINE_MAX 4096

/*
 * Run n statements on a lease you hold in libpq's pipeline mode: all are
 * sent at once and answered in order, in one round trip instead of n. Each
 * statement gets its own callback with its own outcome, in statement order,
 * on the loop's thread (never from inside this call).
 *
 * flags 0: one sync at the end. The statements run as one implicit
 * transaction (unless they BEGIN/COMMIT themselves); when one fails, the
 * server skips the rest: they end with DBPOOL_ESKIPPED (r->sent 0: they did
 * not run), and the implicit transaction is rolled back -- the statements
 * before the error that reported 0 are undone too, exactly as with a
 * multi-statement simple query. DBPOOL_PIPE_SYNC_EACH: a sync after every
 * statement; each is its own transaction and an error affects only itself.
 *
 * Outcomes of each statement: those of dbpool_pg_exec_async(), plus
 * DBPOOL_ESKIPPED. opts->statement_timeout is one deadline for the whole
 * pipeline, from the send: a cancel request goes out (without blocking the
 * loop), the statement it hits ends with DBPOOL_ETIMEDOUT (57014: cancelled
 * on the server), the ones behind it in its sync with DBPOOL_ESKIPPED, and
 * whatever has no answer after cancel_grace with DBPOOL_EUNKNOWN (the
 * connection is then discarded at check-in). A connection lost mid-pipeline:
 * the statements answered keep their outcome; each unanswered one is
 * DBPOOL_ECONNLOST with r->sent 1 (may have run), except those behind an
 * error of their sync (DBPOOL_ESKIPPED: the server discards the rest of a
 * sync after an error). A connection found dead before sending:
 * DBPOOL_ECONNLOST with r->sent 0 for all (none ran); never retried.
 *
 * The lease is in use until the LAST statement's callback runs (it runs once
 * the connection has left pipeline mode and no cancel request can still hit
 * it): do not touch the lease or its PGconn before, not even from the
 * earlier callbacks; from the last one on it is yours again (check it in
 * there, or run more). sql and params are copied. COPY is not supported.
 * Returns 0 (every cb will run exactly once), or, with no callback:
 * DBPOOL_EINVAL (NULL loop, lease or stmts, n not in 1..DBPOOL_PIPELINE_MAX,
 * a NULL sql or cb, bad params, unknown flags, a lease not from a PostgreSQL
 * pool, libpq < 14), DBPOOL_ESTALE, DBPOOL_EEXPIRED, DBPOOL_ENOMEM.
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_pg_pipeline_async(dbpool_loop *loop, dbpool_lease *lease,
                                                         const dbpool_pg_stmt *stmts, int n,
                                                         int flags, const dbpool_pg_opts *opts);

#ifdef __cplusplus
}
#endif
#endif /* DBPOOL_PG_ASYNC_H */
