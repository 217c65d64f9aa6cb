/* pg_async.c - statements driven by the application's event loop: the same
 * sends, classification and outcomes as the blocking helpers (pg_exec.h),
 * but every wait is a watch or a timer the loop runs, and the cancel request
 * goes to a worker thread whose delivery comes back through the loop's
 * completion queue. Everything here runs on the loop's thread. */
#include "dbpool_pg_async.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "async.h"
#include "clock.h"
#include "driver_pg.h"
#include "error.h"
#include "pg_exec.h"
#include "pool.h"
#include "stmtcache.h"
#include "workers.h"

struct dbpool_loop {
    dbpool_cq *cq;
    dbpool_loop_hooks hooks;
    void *data;
    int pending; /* calls whose callback has not run */
};

/*
 * Where a call is. A pool-level call starts in CHECKOUT; every call then runs
 * one or more exchanges (the cached path: DEALLOCATE, Prepare, Execute), each
 * FLUSH -> READ, with the statement deadline on the io's timer. At the
 * deadline a cancel request goes out and the timer becomes cancel_grace;
 * the exchange ends when the answer and the cancel's delivery are both in,
 * or the grace ran out (then as XS_TIMEOUT_LOST, like the blocking path).
 */
enum stage { ST_CHECKOUT, ST_FLUSH, ST_READ, ST_WAIT_CANCEL, ST_IDLE };

/* Steps of the statement cache (run_cached in pg_query.c, as a machine). */
enum step { SP_PLAIN, SP_DRAIN1, SP_PREPARE, SP_DRAIN2, SP_EXEC };

struct cancel_ctx;

struct dbpool_io {
    dbpool_loop *loop;
    void *state;  /* the adapter's */
    int events;   /* watched now */
    int timer_on; /* the adapter's timer runs */
    enum stage stage;
    enum step step;
    int cached;
    int owned; /* pool-level call: the lease is ours to check in */
    dbpool *pool;
    dbpool_lease lease;
    struct pgq_exec e;
    int begun; /* e is initialised (pgq_exec_begin succeeded) */
    PGresult *res;
    int64_t t0;                /* start of the exchange, us */
    struct cancel_ctx *cancel; /* in flight for this exchange */
    int cancelling, delivered, read_cr;
    /* the statement cache */
    struct stmt *s;
    uint64_t h;
    int in_tx, retried;
    /* retries after a dead connection (pool-level) */
    int retries, limit;
    int64_t queue_us;
    dbpool_pg_query_cb cb;
    void *arg;
    dbpool_pg_result out;
    struct dbpool_async_req *post; /* an outcome known at once, posted */
    int post_rc;
    int sync; /* inside the call that started it: no callback now */
    char msg[512];
    /* the copied statement */
    char *sql;
    dbpool_pg_params p;
    dbpool_pg_opts o;
};

static void drive(dbpool_io *io, int events);
static void exchange_end(dbpool_io *io, int x);

/* ---- the loop ------------------------------------------------------------------ */

int dbpool_loop_new(dbpool_loop **out, dbpool_cq *cq, const dbpool_loop_hooks *hooks, void *data)
{
    dbpool_loop *l;

    if (!out)
        return set_error(DBPOOL_EINVAL, "dbpool_loop_new: NULL out");
    *out = NULL;
    if (!cq || !hooks || !hooks->watch || !hooks->timer || !hooks->release)
        return set_error(DBPOOL_EINVAL, "dbpool_loop_new: NULL queue or hooks, or a hook missing");
    if (!(l = mem_calloc(1, sizeof(*l))))
        return set_error(DBPOOL_ENOMEM, "dbpool_loop_new: out of memory");
    l->cq = cq;
    l->hooks = *hooks;
    l->data = data;
    *out = l;
    return 0;
}

int dbpool_loop_free(dbpool_loop *l)
{
    if (!l)
        return 0;
    if (l->pending)
        return set_error(DBPOOL_EBUSY, "dbpool_loop_free: %d call(s) have not run their callback",
                         l->pending);
    mem_free(l);
    return 0;
}

dbpool_cq *dbpool_loop_cq(const dbpool_loop *l)
{
    return l ? l->cq : NULL;
}

int dbpool_loop_pending(const dbpool_loop *l)
{
    return l ? l->pending : 0;
}

/* ---- the adapter ---------------------------------------------------------------- */

/* 0, or -1 when the loop refused (then the exchange cannot go on: lost). */
static int watch(dbpool_io *io, int events)
{
    if (io->events == events)
        return 0;
    if (io->loop->hooks.watch(io->loop->data, io, &io->state, PQsocket(io->e.c.pg), events) != 0) {
        io->events = -1;
        return events ? -1 : 0;
    }
    io->events = events;
    return 0;
}

static void timer(dbpool_io *io, int64_t ms)
{
    if (ms < 0 && !io->timer_on)
        return;
    io->loop->hooks.timer(io->loop->data, io, &io->state, ms);
    io->timer_on = ms >= 0;
}

/* ms until an absolute deadline in us, at least 0 (rounded up). */
static int64_t ms_until(int64_t deadline_us)
{
    int64_t left = deadline_us - clock_us();
    return left <= 0 ? 0 : left / 1000 + 1;
}

/* ---- copies of what the caller passed -------------------------------------------- */

static size_t value_len(const dbpool_pg_params *p, int i)
{
    if (p->formats && p->formats[i] == 1 && p->lengths)
        return (size_t)(p->lengths[i] > 0 ? p->lengths[i] : 0);
    return strlen(p->values[i]) + 1;
}

/* One allocation for sql and params; io->sql owns it. */
static int copy_statement(dbpool_io *io, const char *sql, const dbpool_pg_params *p)
{
    int n = p ? p->n : 0;
    size_t len = strlen(sql) + 1, a = sizeof(void *);

    len = (len + a - 1) / a * a;
    size_t off_vals = len;
    len += (size_t)n * (sizeof(char *) + sizeof(Oid) + 2 * sizeof(int));
    size_t off_data = len;
    for (int i = 0; i < n; i++)
        if (p->values[i])
            len += value_len(p, i);
    char *m = mem_malloc(len);
    if (!m)
        return set_error(DBPOOL_ENOMEM, "out of memory");
    memcpy(m, sql, strlen(sql) + 1);
    io->sql = m;
    memset(&io->p, 0, sizeof(io->p));
    if (!n) {
        if (p)
            io->p.result_format = p->result_format;
        return 0;
    }
    const char **vals = (const char **)(void *)(m + off_vals);
    Oid *types = (Oid *)(void *)(vals + n);
    int *lengths = (int *)(void *)(types + n);
    int *formats = lengths + n;
    char *d = m + off_data;
    for (int i = 0; i < n; i++) {
        types[i] = p->types ? p->types[i] : 0;
        lengths[i] = p->lengths ? p->lengths[i] : 0;
        formats[i] = p->formats ? p->formats[i] : 0;
        if (!p->values[i]) {
            vals[i] = NULL;
            continue;
        }
        size_t vl = value_len(p, i);
        memcpy(d, p->values[i], vl);
        vals[i] = d;
        d += vl;
    }
    io->p.n = n;
    io->p.types = p->types ? types : NULL;
    io->p.values = vals;
    io->p.lengths = p->lengths ? lengths : NULL;
    io->p.formats = p->formats ? formats : NULL;
    io->p.result_format = p->result_format;
    return 0;
}

/* ---- the end of a call -------------------------------------------------------------- */

static void io_free(dbpool_io *io)
{
    if (io->state)
        io->loop->hooks.release(io->loop->data, io->state);
    io->loop->pending--;
    mem_free(io->sql);
    mem_free(io);
}

/* Run the callback with rc (message already set), then free the call. */
static void deliver_later(dbpool_io *io, int rc);

static void deliver(dbpool_io *io, int rc)
{
    char keep[512];

    if (io->sync) {
        deliver_later(io, rc);
        return;
    }
    io->out.retries = io->retries;
    if (io->owned)
        io->out.queue_us = io->queue_us;
    /* the adapter's release must not clobber the message */
    snprintf(keep, sizeof(keep), "%s", dbpool_last_error());
    if (io->state) {
        io->loop->hooks.release(io->loop->data, io->state);
        io->state = NULL;
    }
    set_error_msg("%s", keep);
    if (rc == 0)
        clear_error();
    io->cb(io->arg, rc, &io->out);
    dbpool_pg_result_clear(&io->out);
    io_free(io);
}

/* An outcome known before anything was sent, delivered from dbpool_cq_run
 * (never from inside the call that started it). */
static void posted(void *arg)
{
    dbpool_io *io = arg;

    io->post = NULL;
    set_error_msg("%s", io->msg);
    deliver(io, io->post_rc);
}

static void deliver_later(dbpool_io *io, int rc)
{
    snprintf(io->msg, sizeof(io->msg), "%s", dbpool_last_error());
    io->post_rc = rc;
    io->sync = 0;
    async_post(io->post, posted, io);
}

static int checkout(dbpool_io *io);

/* The statement is over: outcome, check-in, retry or callback. */
static void call_end(dbpool_io *io, int x)
{
    PGresult *res = io->res;

    io->res = NULL;
    watch(io, 0);
    timer(io, -1);
    io->stage = ST_IDLE;
    int rc = pgq_exec_end(&io->e, x, res);
    io->begun = 0;
    if (!io->owned) {
        deliver(io, rc);
        return;
    }
    int sent = io->e.c.sent;
    int crc = pgq_give_back(&io->lease);
    if (rc == 0 && crc == DBPOOL_EEXPIRED)
        clear_error(); /* the answer is complete; only the connection is lost */
    if (rc == 0 && crc == DBPOOL_ETXENDED)
        rc = crc;
    io->queue_us += io->out.queue_us;
    if (rc == DBPOOL_ECONNLOST && !sent) {
        if (io->limit < 0)
            io->limit = pgq_dead_retry_limit(io->pool);
        if (io->retries < io->limit) {
            io->retries++;
            dbpool_pg_result_clear(&io->out);
            /* the adapter's state belongs to the dead connection's fd */
            if (io->state) {
                io->loop->hooks.release(io->loop->data, io->state);
                io->state = NULL;
                io->events = 0;
                io->timer_on = 0;
            }
            if ((rc = checkout(io)) == 0)
                return;
        }
    }
    deliver(io, rc);
}

/* ---- one exchange -------------------------------------------------------------------- */

/* The worker thread's side of a cancel request. */
struct cancel_ctx {
    PGcancel *token;
    struct dbpool_async_req *post;
    dbpool_io *io; /* NULL once the exchange ended (loop thread only) */
};

static void cancel_job(void *arg)
{
    struct cancel_ctx *cx = arg;
    char err[256];

    PQcancel(cx->token, err, sizeof(err)); /* failure: the grace decides */
}

/* Back on the loop thread: the request was delivered (or failed). */
static void cancel_delivered(void *arg)
{
    struct cancel_ctx *cx = arg;
    dbpool_io *io = cx->io;

    PQfreeCancel(cx->token);
    mem_free(cx);
    if (!io)
        return;
    io->cancel = NULL;
    io->delivered = 1;
    if (io->stage == ST_WAIT_CANCEL)
        exchange_end(io, pgq_timed_out(&io->e.c, io->read_cr, io->res, 1));
}

static void cancel_job_free(void *arg)
{
    struct cancel_ctx *cx = arg;
    async_post(cx->post, cancel_delivered, cx);
}

/* The statement deadline passed: cancel, and wait cancel_grace for both
 * the answer and the delivery of the request. */
static void cancel_start(dbpool_io *io)
{
    struct cancel_ctx *cx = mem_calloc(1, sizeof(*cx));
    char lane[128];

    io->cancelling = 1;
    io->delivered = 0;
    if (cx && (cx->token = PQgetCancel(io->e.c.pg)) && (cx->post = async_hold(io->loop->cq))) {
        cx->io = io;
        pg_cancel_target(io->e.c.pg, lane, sizeof(lane));
        if (workers_submit(lane, cancel_job, cx, cancel_job_free) == 0)
            io->cancel = cx;
        else
            async_unhold(cx->post);
    }
    if (cx && !io->cancel) { /* not sent: the grace decides, the connection goes */
        PQfreeCancel(cx->token);
        mem_free(cx);
    }
    int64_t grace = io->e.c.o.cancel_grace;
    if (grace > 0 && grace < INT64_MAX / 2)
        timer(io, grace);
}

static void exchange_start(dbpool_io *io, int kind, const char *name, const char *sql,
                           const dbpool_pg_params *p, int user)
{
    struct call *c = &io->e.c;

    io->res = NULL;
    io->cancelling = io->delivered = 0;
    io->t0 = clock_us();
    int x = pgq_send(c, kind, name, sql, p, user);
    if (x != XS_SENT) {
        exchange_end(io, -x - 1); /* not sent: no accounting */
        return;
    }
    io->stage = ST_FLUSH;
    if (c->deadline)
        timer(io, ms_until(c->deadline));
    drive(io, 0);
}

/* How the read of an exchange ended (C_*). */
static void read_end(dbpool_io *io, int cr)
{
    struct call *c = &io->e.c;

    if (cr == C_LOST) /* the server's last words (e.g. 57P01), if libpq has them */
        for (int i = 0; i < 8 && PQstatus(c->pg) == CONNECTION_BAD; i++) {
            PGresult *r = PQgetResult(c->pg);
            if (!r)
                break;
            pgq_keep(&io->res, r);
        }
    if (!io->cancelling) {
        exchange_end(io, pgq_classify(c, cr, io->res));
        return;
    }
    if (io->delivered || !io->cancel) {
        exchange_end(io, pgq_timed_out(c, cr, io->res, io->delivered));
        return;
    }
    io->read_cr = cr; /* the answer is in; wait for the delivery (or the grace) */
    io->stage = ST_WAIT_CANCEL;
    watch(io, 0);
}

/* Flush, then read every result; returns when it must wait for the loop. */
static void drive(dbpool_io *io, int events)
{
    PGconn *pg = io->e.c.pg;

    if (io->stage == ST_FLUSH) {
        if ((events & DBPOOL_IO_READ) && !PQconsumeInput(pg)) {
            read_end(io, C_LOST);
            return;
        }
        int f = PQflush(pg);
        if (f < 0) {
            read_end(io, C_LOST);
            return;
        }
        if (f > 0) {
            if (watch(io, DBPOOL_IO_READ | DBPOOL_IO_WRITE) != 0)
                read_end(io, C_LOST); /* the loop could not watch the socket */
            return;
        }
        io->stage = ST_READ;
        events = 0;
    }
    if (io->stage != ST_READ)
        return;
    if ((events & DBPOOL_IO_READ) && !PQconsumeInput(pg)) {
        read_end(io, C_LOST);
        return;
    }
    while (!PQisBusy(pg)) {
        PGresult *r = PQgetResult(pg);
        if (!r) {
            read_end(io, C_DONE);
            return;
        }
        ExecStatusType st = PQresultStatus(r);
        pgq_keep(&io->res, r);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            read_end(io, C_COPY);
            return;
        }
    }
    if (watch(io, DBPOOL_IO_READ) != 0)
        read_end(io, C_LOST); /* the loop could not watch the socket */
}

void dbpool_io_ready(dbpool_io *io, int events)
{
    if (io)
        drive(io, events);
}

void dbpool_io_timeout(dbpool_io *io)
{
    if (!io)
        return;
    io->timer_on = 0;
    switch (io->stage) {
    case ST_FLUSH:
    case ST_READ:
        if (!io->cancelling) {
            cancel_start(io);
            if (io->e.c.o.cancel_grace != 0)
                return;
            /* cancel_grace 0: "do not wait at all" */
        }
        exchange_end(io, pgq_timed_out(&io->e.c, C_TIMEOUT, io->res, io->delivered));
        return;
    case ST_WAIT_CANCEL:
        exchange_end(io, pgq_timed_out(&io->e.c, io->read_cr, io->res, 0));
        return;
    default:
        return;
    }
}

/* ---- the statement cache: run_cached (pg_query.c) step by step --------------------- */

static void cached_lookup(dbpool_io *io);

static void drain(dbpool_io *io, enum step step)
{
    char sql[STMTCACHE_PENDING_MAX * (STMTCACHE_NAME_LEN + 12)];

    pgq_drain_sql(&io->e.c, sql, sizeof(sql));
    io->step = step;
    exchange_start(io, K_SIMPLE, NULL, sql, NULL, 0);
}

static void plain(dbpool_io *io)
{
    io->step = SP_PLAIN;
    exchange_start(io, K_PARAMS, NULL, io->sql, &io->p, 1);
}

static void cached_again(dbpool_io *io)
{
    if (!io->in_tx && io->e.c.qs->cache.npending > 0) {
        drain(io, SP_DRAIN1);
        return;
    }
    cached_lookup(io);
}

static void cached_start(dbpool_io *io)
{
    struct call *c = &io->e.c;
    PGTransactionStatusType ts = PQtransactionStatus(c->pg);
    int n = io->p.n;

    io->in_tx = ts == PQTRANS_INTRANS;
    if (!io->cached || c->o.unnamed || c->o.cache_size == 0 || (ts != PQTRANS_IDLE && !io->in_tx)) {
        plain(io);
        return;
    }
    io->h = stmtcache_hash(io->sql, n, n > 0 ? io->p.types : NULL);
    cached_again(io);
}

static void cached_exec(dbpool_io *io)
{
    io->step = SP_EXEC;
    exchange_start(io, K_PREPARED, io->s->name, NULL, &io->p, 1);
}

static void cached_lookup(dbpool_io *io)
{
    struct call *c = &io->e.c;
    struct pg_qstate *qs = c->qs;
    int n = io->p.n;
    const Oid *types = n > 0 ? io->p.types : NULL;
    struct stmt *s = stmtcache_get(&qs->cache, io->h, io->sql, n, types);

    if (s) {
        io->s = s;
        cached_exec(io);
        return;
    }
    /* full inside a transaction with no room to remember what to DEALLOCATE,
     * or no memory: uncached */
    if ((io->in_tx && qs->cache.lru.n >= c->o.cache_size &&
         qs->cache.npending >= STMTCACHE_PENDING_MAX) ||
        !(s = stmtcache_new(&qs->cache, io->h, io->sql, n, types))) {
        plain(io);
        return;
    }
    io->s = s;
    io->step = SP_PREPARE;
    exchange_start(io, K_PREPARE, s->name, io->sql, &io->p, 0);
}

/* An exchange ended as x (a negative x - 1: ended before sending). */
static void exchange_end(dbpool_io *io, int x)
{
    struct call *c = &io->e.c;
    struct pg_qstate *qs = c->qs;

    if (x < 0)
        x = -x - 1;
    else
        x = pgq_received(c, x, io->res, io->t0);
    io->stage = ST_IDLE;
    if (io->cancel) {
        io->cancel->io = NULL; /* its delivery comes later; nothing waits for it */
        io->cancel = NULL;
    }
    io->cancelling = 0;
    timer(io, -1);
    switch (io->step) {
    case SP_PLAIN:
        break;
    case SP_DRAIN1:
    case SP_DRAIN2:
        PQclear(io->res);
        io->res = NULL;
        if (x != XS_OK && x != XS_SQLERR) /* an error: already gone; nothing to undo */
            break;
        qs->cache.npending = 0;
        if (io->step == SP_DRAIN1)
            cached_lookup(io);
        else
            cached_exec(io);
        return;
    case SP_PREPARE:
        if (x != XS_OK) { /* e.g. a syntax error: nothing cached, nothing evicted */
            stmt_free(io->s);
            io->s = NULL;
            break;
        }
        PQclear(io->res);
        io->res = NULL;
        while (qs->cache.lru.n >= c->o.cache_size && qs->cache.lru.n > 0 &&
               qs->cache.npending < STMTCACHE_PENDING_MAX)
            stmtcache_forget(&qs->cache, stmtcache_oldest(&qs->cache));
        stmtcache_add(&qs->cache, io->s);
        if (!io->in_tx && qs->cache.npending > 0)
            drain(io, SP_DRAIN2);
        else
            cached_exec(io);
        return;
    case SP_EXEC: {
        int gone;
        if (x == XS_SQLERR && pgq_stale_statement(io->res, &gone)) {
            if (gone)
                stmtcache_clear(&qs->cache);
            else
                stmtcache_forget(&qs->cache, io->s);
            io->s = NULL;
            if (!io->in_tx && !io->retried) {
                io->retried = 1;
                PQclear(io->res);
                io->res = NULL;
                c->sent = 0; /* it failed before executing */
                cached_again(io);
                return;
            }
        }
        break;
    }
    }
    call_end(io, x);
}

/* ---- calls ------------------------------------------------------------------------------- */

/* Start the statement on io->lease. */
static void run(dbpool_io *io)
{
    int rc = pgq_exec_begin(&io->e, &io->lease, io->sql, &io->p, &io->o, &io->out);

    if (rc != 0) { /* e.g. a lease that expired while it waited */
        if (io->owned)
            (void)pgq_give_back(&io->lease);
        deliver(io, rc);
        return;
    }
    io->begun = 1;
    io->retried = 0;
    io->s = NULL;
    cached_start(io);
}

static void on_checkout(void *arg, int status, dbpool_lease lease)
{
    dbpool_io *io = arg;

    if (status != 0) {
        deliver(io, status);
        return;
    }
    io->lease = lease;
    run(io);
}

static int checkout(dbpool_io *io)
{
    return dbpool_checkout_async(io->pool, io->loop->cq, io->o.checkout_timeout, on_checkout, io,
                                 NULL);
}

static int io_new(dbpool_io **out, dbpool_loop *loop, const char *sql, const dbpool_pg_params *p,
                  const dbpool_pg_opts *o, dbpool_pg_query_cb cb, void *arg, int cached)
{
    dbpool_io *io;
    int rc;

    if (!loop || !cb)
        return set_error(DBPOOL_EINVAL, "NULL loop or callback");
    if ((rc = pgq_bad_params(sql, p)) != 0)
        return rc;
    if (!(io = mem_calloc(1, sizeof(*io))))
        return set_error(DBPOOL_ENOMEM, "out of memory");
    if ((rc = pgq_opts_get(o, &io->o)) != 0 || (rc = copy_statement(io, sql, p)) != 0) {
        mem_free(io);
        return rc;
    }
    io->loop = loop;
    io->cb = cb;
    io->arg = arg;
    io->cached = cached;
    io->limit = -1;
    loop->pending++;
    *out = io;
    return 0;
}

static int pool_call(dbpool_loop *loop, dbpool *pool, int cached, const char *sql,
                     const dbpool_pg_params *p, const dbpool_pg_opts *o, dbpool_pg_query_cb cb,
                     void *arg)
{
    clear_error();
    if (!pool)
        return set_error(DBPOOL_EINVAL, "NULL pool");
    if (!pg_pool_is_pg(pool))
        return set_error(DBPOOL_EINVAL, "not a PostgreSQL pool");
    dbpool_io *io;
    int rc = io_new(&io, loop, sql, p, o, cb, arg, cached);
    if (rc != 0)
        return rc;
    io->pool = pool;
    io->owned = 1;
    rc = checkout(io);
    if (rc != 0) {
        char keep[512];
        snprintf(keep, sizeof(keep), "%s", dbpool_last_error());
        io_free(io);
        set_error_msg("%s", keep);
        return rc;
    }
    return 0;
}

static int lease_call(dbpool_loop *loop, dbpool_lease *lease, int cached, const char *sql,
                      const dbpool_pg_params *p, const dbpool_pg_opts *o, dbpool_pg_query_cb cb,
                      void *arg)
{
    int rc;

    clear_error();
    if (!lease)
        return set_error(DBPOOL_EINVAL, "NULL lease");
    if ((rc = dbpool_lease_check(lease)) != 0)
        return rc;
    if (!dbpool_pg_conn(lease))
        return set_error(DBPOOL_EINVAL, "lease is not from a PostgreSQL pool");
    dbpool_io *io;
    if ((rc = io_new(&io, loop, sql, p, o, cb, arg, cached)) != 0)
        return rc;
    io->lease = *lease;
    /* an end known before anything is sent is delivered from the queue */
    if (!(io->post = async_hold(loop->cq))) {
        io_free(io);
        return set_error(DBPOOL_ENOMEM, "out of memory");
    }
    rc = pgq_exec_begin(&io->e, &io->lease, io->sql, &io->p, &io->o, &io->out);
    if (rc != 0) {
        async_unhold(io->post);
        char keep[512];
        snprintf(keep, sizeof(keep), "%s", dbpool_last_error());
        io_free(io);
        set_error_msg("%s", keep);
        return rc;
    }
    io->begun = 1;
    io->sync = 1;
    cached_start(io);
    if (io->sync) { /* on its way: the reservation is not needed */
        io->sync = 0;
        async_unhold(io->post);
        io->post = NULL;
    }
    clear_error();
    return 0;
}

int dbpool_pg_query_async(dbpool_loop *loop, dbpool *pool, const char *sql,
                          const dbpool_pg_params *params, const dbpool_pg_opts *opts,
                          dbpool_pg_query_cb cb, void *arg)
{
    return pool_call(loop, pool, 0, sql, params, opts, cb, arg);
}

int dbpool_pg_query_prepared_async(dbpool_loop *loop, dbpool *pool, const char *sql,
                                   const dbpool_pg_params *params, const dbpool_pg_opts *opts,
                                   dbpool_pg_query_cb cb, void *arg)
{
    return pool_call(loop, pool, 1, sql, params, opts, cb, arg);
}

int dbpool_pg_exec_async(dbpool_loop *loop, dbpool_lease *lease, const char *sql,
                         const dbpool_pg_params *params, const dbpool_pg_opts *opts,
                         dbpool_pg_query_cb cb, void *arg)
{
    return lease_call(loop, lease, 0, sql, params, opts, cb, arg);
}

int dbpool_pg_exec_prepared_async(dbpool_loop *loop, dbpool_lease *lease, const char *sql,
                                  const dbpool_pg_params *params, const dbpool_pg_opts *opts,
                                  dbpool_pg_query_cb cb, void *arg)
{
    return lease_call(loop, lease, 1, sql, params, opts, cb, arg);
}
