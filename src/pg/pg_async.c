/* pg_async.c - statements driven by the application's event loop: the same
 * sends, classification and outcomes as the blocking helpers (pg_exec.h),
 * but every wait is a watch or a timer the loop runs, and the cancel request
 * goes to a worker thread whose delivery comes back through the loop's
 * completion queue. Everything here runs on the loop's thread. */
#include "dbpool_pg_async.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

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
    int batch;   /* dbpool_loop_batch(): one-call statements per lease, 1 = off */
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
    /* a pipeline (see "pipelines" below): the container io drives the
     * connection, each statement is an entry io with its own callback */
    dbpool_io **ents;
    int nent, nsent;  /* entries; how many were queued to libpq */
    int cur;          /* the entry whose answer is being read */
    int done;         /* entries whose outcome is decided (a prefix) */
    int syncs, want;  /* sync points seen / expected */
    int sync_each;    /* a sync after every statement (independent ones) */
    int group_failed; /* 1 + the sync group (k, or 0 for one sync) that failed */
    int synced;       /* entries whose sync the server answered: final */
    int decided;      /* entry: post_rc and msg hold its outcome */
    int64_t t_sub;    /* entry of a batch: when it was submitted, us */
};

static void drive(dbpool_io *io, int events);
static void exchange_end(dbpool_io *io, int x);
static void pipe_drive(dbpool_io *io, int events);
static void pipe_timeout(dbpool_io *io);
static void pipe_finish(dbpool_io *io);

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
    l->batch = 1;
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

int dbpool_loop_batch(dbpool_loop *l, int max)
{
    if (!l || max < 0 || max > DBPOOL_BATCH_MAX)
        return set_error(DBPOOL_EINVAL, "dbpool_loop_batch: NULL loop, or max not in 0..%d",
                         DBPOOL_BATCH_MAX);
#ifndef LIBPQ_HAS_PIPELINING
    if (max > 1)
        return set_error(DBPOOL_EINVAL, "dbpool_loop_batch: libpq has no pipeline mode (< 14)");
#endif
    l->batch = max > 1 ? max : 1;
    return 0;
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
    mem_free(io->ents);
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
    /* the adapter's release must not clobber the message (a success has
     * none: no copy then, this runs for every statement) */
    if (rc != 0)
        snprintf(keep, sizeof(keep), "%s", dbpool_last_error());
    if (io->state) {
        io->loop->hooks.release(io->loop->data, io->state);
        io->state = NULL;
    }
    if (rc != 0)
        set_error_msg("%s", keep);
    else
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
    if (io->ents) {
        if (io->stage == ST_WAIT_CANCEL)
            pipe_finish(io);
        return;
    }
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
    if (io && io->ents)
        pipe_drive(io, events);
    else if (io)
        drive(io, events);
}

uint64_t dbpool_io_conn_id(const dbpool_io *io)
{
    /* watched only during an exchange, which has its per-connection state */
    return io && io->e.c.qs ? io->e.c.qs->conn_id : 0;
}

void dbpool_io_timeout(dbpool_io *io)
{
    if (!io)
        return;
    io->timer_on = 0;
    if (io->ents) {
        pipe_timeout(io);
        return;
    }
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

static int batch_run(dbpool_io *io);

static void on_checkout(void *arg, int status, dbpool_lease lease)
{
    dbpool_io *io = arg;

    if (status != 0) {
        deliver(io, status);
        return;
    }
    io->lease = lease;
    if (io->loop->batch > 1 && !io->cached && batch_run(io))
        return;
    run(io);
}

static int checkout(dbpool_io *io)
{
    io->t_sub = clock_us();
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

/* ---- pipelines ------------------------------------------------------------------------
 *
 * Several statements on one connection in libpq's pipeline mode: all are sent
 * at once, the answers come back in order. A container io owns the lease, the
 * adapter's watch and the timer; each statement is an entry io with its own
 * callback and result. Outcomes, in the rules of the single statement:
 *   - an answer is that statement's result or SQL error;
 *   - PGRES_PIPELINE_ABORTED: the server skipped it after an earlier error of
 *     the same sync (DBPOOL_ESKIPPED, did not run);
 *   - the connection lost: every statement not yet answered may have run
 *     (DBPOOL_ECONNLOST, sent 1), except those behind an error of their sync,
 *     which the server skips (its ErrorResponse says it discards the rest
 *     until Sync: DBPOOL_ESKIPPED);
 *   - one deadline for the whole pipeline (statement_timeout from the send):
 *     a cancel request, then what answers within cancel_grace is classified
 *     as usual (57014 = DBPOOL_ETIMEDOUT, cancelled on the server); what does
 *     not answer is DBPOOL_EUNKNOWN and the connection is discarded.
 * Callbacks run in statement order once the answer and its sync are in (the
 * commit of an implicit transaction happens at the sync); the last one only
 * once the connection is out of pipeline mode and no cancel request can still
 * hit it (for a batch: after the check-in), so "the last callback ran" means
 * "the lease is yours again".
 */

#ifdef LIBPQ_HAS_PIPELINING

/* Entry k's outcome is rc (message in dbpool_last_error). */
static void ent_decide(dbpool_io *en, int rc)
{
    snprintf(en->msg, sizeof(en->msg), "%s", dbpool_last_error());
    en->post_rc = rc;
    en->decided = 1;
}

/* Tracing (dbpool_config.trace_cb) as for a single statement: a START per
 * statement sent, its END with the final outcome, while the lease is held
 * (the pool lives at least as long). en->e.span/t0 are the entry's. */
static void trace_start(dbpool_io *io, dbpool_io *en)
{
    const struct dbpool *pool = io->lease.slot->pool;

    if (!pool->cfg.trace_cb)
        return;
    en->e.t0 = clock_us();
    dbpool_trace t = {.type = DBPOOL_TRACE_QUERY_START, .at_us = en->e.t0, .statement = en->sql};
    en->e.span = pool_trace(pool, &t);
    en->begun = 1; /* an END is owed */
}

static void trace_end(dbpool_io *io, dbpool_io *en)
{
    if (!en->begun)
        return;
    en->begun = 0;
    const struct dbpool *pool = io->lease.slot->pool;
    int64_t now = clock_us();
    dbpool_trace t = {.type = DBPOOL_TRACE_QUERY_END,
                      .rc = en->post_rc,
                      .at_us = now,
                      .duration_us = now - en->e.t0,
                      .statement = en->sql,
                      .sqlstate = en->out.sqlstate,
                      .span = en->e.span};
    pool_trace(pool, &t);
}

/* Run the callbacks of decided entries, in order; the last one only if all. */
static void pipe_deliver(dbpool_io *io, int all)
{
    if (io->sync) /* never from inside the call that started it */
        return;
    while (io->done < io->nent && io->ents[io->done]->decided &&
           (all || (io->done < io->nent - 1 && io->done < io->synced))) {
        dbpool_io *en = io->ents[io->done];
        io->ents[io->done++] = NULL;
        trace_end(io, en);
        set_error_msg("%s", en->msg);
        deliver(en, en->post_rc);
    }
}

/* hold_timeout fired during the pipeline: as pgq_exec_end() maps it. */
static int pipe_expired(dbpool_io *io, int rc)
{
    char why[320];

    if (rc == 0)
        return 0;
    snprintf(why, sizeof(why), "%s", dbpool_last_error());
    if (dbpool_lease_check(&io->lease) != DBPOOL_EEXPIRED)
        return set_error(rc, "%s", why);
    if (rc == DBPOOL_EUNKNOWN || (rc == DBPOOL_ECONNLOST && io->e.c.sent) || rc == DBPOOL_ESKIPPED)
        return set_error(rc,
                         "%s (the lease had outlived hold_timeout; the connection is "
                         "discarded at check-in)",
                         why);
    return set_error(DBPOOL_EEXPIRED,
                     "query: the lease outlived hold_timeout; the statement did not complete "
                     "(%s); the connection is discarded at check-in",
                     why);
}

static int skipped(int k)
{
    return set_error(DBPOOL_ESKIPPED,
                     "pipeline: statement %d not executed: an earlier statement of the same "
                     "sync failed, and the server skips the rest of that sync",
                     k + 1);
}

/* The answer of entry io->cur is complete. */
static void pipe_answer(dbpool_io *io)
{
    struct call *c = &io->e.c;
    int k = io->cur++;
    int group = io->sync_each ? k : 0; /* statements up to a sync */
    dbpool_io *en = io->ents[k];
    PGresult *res = en->res;
    int rc;

    en->res = NULL;
    if (PQresultStatus(res) == PGRES_PIPELINE_ABORTED && io->group_failed == group + 1) {
        PQclear(res);
        en->out.sent = 0;
        rc = skipped(k);
    } else if (PQresultStatus(res) == PGRES_PIPELINE_ABORTED) {
        /* libpq's own verdict after an error of an earlier sync whose end
         * never came (e.g. the server's FATAL): the server skips only to the
         * next sync, so nothing proves this one did not run */
        PQclear(res);
        c->sent = 1;
        c->discard = 1;
        snprintf(c->msg, sizeof(c->msg),
                 "libpq aborted the rest of the pipeline after an error of an earlier sync");
        rc = pgq_outcome(c, XS_LOST, NULL, &en->out, "query");
    } else {
        c->sent = 1;
        int x = pgq_classify(c, C_DONE, res);
        if (x == XS_SQLERR) {
            io->group_failed = group + 1;
            if (io->cancelling && !strcmp(pgq_res_field(res, PG_DIAG_SQLSTATE), "57014")) {
                snprintf(c->msg, sizeof(c->msg),
                         "statement timeout: the pipeline had no complete answer within %lld "
                         "ms; this statement was cancelled on the server",
                         (long long)c->o.statement_timeout);
                x = XS_TIMEOUT;
            }
        }
        x = pgq_received(c, x, res, io->t0);
        io->t0 = clock_us(); /* the next answer's time counts from here */
        rc = pgq_outcome(c, x, res, &en->out, "query");
        en->out.db_us = io->t0 - io->t_sub;
    }
    ent_decide(en, pipe_expired(io, rc));
    pipe_deliver(io, 0);
}

/* The rest of the pipeline gets no answer: x is XS_LOST or XS_TIMEOUT_LOST
 * (c->msg says why). */
static void pipe_unanswered(dbpool_io *io, int x)
{
    struct call *c = &io->e.c;

    c->discard = 1;
    /* answered, but their sync was not: as for a single statement whose
     * ReadyForQuery never came, whether it ran (committed) is unknown. An
     * error answer (e.g. 57P01, the server's last words) names the reason. */
    for (int k = io->synced; k < io->cur; k++) {
        dbpool_io *en = io->ents[k];
        if (!en->decided || en->post_rc == DBPOOL_ESKIPPED)
            continue;
        PGresult *er = en->out.res;
        en->out.res = NULL;
        dbpool_pg_result_clear(&en->out);
        if (er && PQresultStatus(er) != PGRES_FATAL_ERROR) {
            PQclear(er);
            er = NULL;
        }
        if (er && x == XS_LOST)
            (void)pgq_classify(c, C_LOST, er); /* the message */
        c->sent = 1;
        ent_decide(en, pipe_expired(io, pgq_outcome(c, x, er, &en->out, "query")));
    }
    for (; io->cur < io->nsent; io->cur++) {
        dbpool_io *en = io->ents[io->cur];
        PQclear(en->res);
        en->res = NULL;
        int rc;
        if (!io->sync_each && io->group_failed == 1) { /* the server skips the rest */
            en->out.sent = 0;
            rc = skipped(io->cur);
        } else {
            c->sent = 1;
            rc = pgq_outcome(c, x, NULL, &en->out, "query");
        }
        ent_decide(en, pipe_expired(io, rc));
    }
}

static void pipe_lost(dbpool_io *io)
{
    struct call *c = &io->e.c;
    PGresult *last = NULL;

    /* the server's last words (e.g. 57P01), if libpq has them */
    for (int i = 0; i < 8 && PQstatus(c->pg) == CONNECTION_BAD; i++) {
        PGresult *r = PQgetResult(c->pg);
        if (!r)
            break;
        pgq_keep(&last, r);
    }
    (void)pgq_classify(c, C_LOST, last); /* the message */
    PQclear(last);
    pipe_unanswered(io, XS_LOST);
    pipe_finish(io);
}

static void pipe_posted(void *arg)
{
    dbpool_io *io = arg;

    io->post = NULL;
    pipe_finish(io);
}

/* Every entry is decided: leave pipeline mode, give the lease back (a
 * batch), run the remaining callbacks, free the container. */
static void pipe_finish(dbpool_io *io)
{
    struct call *c = &io->e.c;

    if (io->sync) { /* inside the call that started it: from the queue */
        io->sync = 0;
        async_post(io->post, pipe_posted, io);
        return;
    }
    watch(io, 0);
    timer(io, -1);
    io->stage = ST_IDLE;
    if (io->cancel) {
        io->cancel->io = NULL;
        io->cancel = NULL;
    }
    if (io->begun) {
        /* a cancel request not known to be delivered may still hit whatever
         * runs next on this connection */
        if (io->cancelling && !io->delivered)
            c->discard = 1;
        if (PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF &&
            (PQstatus(c->pg) != CONNECTION_OK || !PQexitPipelineMode(c->pg)))
            c->discard = 1;
        else if (io->nsent == io->nent && io->syncs == io->want && !c->discard)
            pgq_answered(c); /* every sync answered: alive now */
        pgq_call_end(c);
        io->begun = 0;
    }
    for (int k = io->done; k < io->nent; k++) /* while the lease is held */
        if (io->ents[k])
            trace_end(io, io->ents[k]);
    if (io->owned) {
        int crc = pgq_give_back(&io->lease);
        dbpool_io *last = io->ents[io->nent - 1];
        if (crc == DBPOOL_ETXENDED && last && last->decided && last->post_rc == 0) {
            last->post_rc = crc;
            snprintf(last->msg, sizeof(last->msg), "%s", dbpool_last_error());
        }
    }
    pipe_deliver(io, 1);
    io_free(io);
}

/* Everything is answered: wait for the cancel request's delivery if one is
 * on its way (or cancel_grace), then finish. */
static void pipe_read_done(dbpool_io *io)
{
    if (io->cancelling && io->cancel && !io->delivered) {
        io->stage = ST_WAIT_CANCEL;
        watch(io, 0);
        return;
    }
    pipe_finish(io);
}

static void pipe_drive(dbpool_io *io, int events)
{
    struct call *c = &io->e.c;
    PGconn *pg = c->pg;

    if (io->stage == ST_FLUSH) {
        if ((events & DBPOOL_IO_READ) && !PQconsumeInput(pg)) {
            pipe_lost(io);
            return;
        }
        int f = PQflush(pg);
        if (f < 0) {
            pipe_lost(io);
            return;
        }
        if (f > 0) {
            if (watch(io, DBPOOL_IO_READ | DBPOOL_IO_WRITE) != 0)
                pipe_lost(io);
            return;
        }
        io->stage = ST_READ;
        events = 0;
    }
    if (io->stage != ST_READ)
        return;
    if ((events & DBPOOL_IO_READ) && !PQconsumeInput(pg)) {
        pipe_lost(io);
        return;
    }
    while (!PQisBusy(pg)) {
        PGresult *r = PQgetResult(pg);
        if (!r) {
            /* the end of one statement's results; none pending: wait */
            if (io->cur < io->nsent && io->ents[io->cur]->res) {
                pipe_answer(io);
                continue;
            }
            break;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            io->syncs++;
            io->group_failed = 0;
            io->synced = io->sync_each ? io->syncs : io->nsent;
            pipe_deliver(io, 0);
            continue;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(r);
            c->fail_rc = DBPOOL_EINVAL;
            snprintf(c->msg, sizeof(c->msg),
                     "COPY is not supported by the query helpers (use libpq on a lease); "
                     "connection discarded");
            pipe_unanswered(io, XS_FAIL);
            pipe_finish(io);
            return;
        }
        if (io->cur < io->nsent)
            pgq_keep(&io->ents[io->cur]->res, r);
        else
            PQclear(r);
    }
    if (io->cur == io->nsent && io->syncs >= io->want) {
        pipe_read_done(io);
        return;
    }
    if (PQstatus(pg) != CONNECTION_OK || watch(io, DBPOOL_IO_READ) != 0)
        pipe_lost(io);
}

static void pipe_timeout(dbpool_io *io)
{
    struct call *c = &io->e.c;

    switch (io->stage) {
    case ST_FLUSH:
    case ST_READ:
        if (!io->cancelling) {
            cancel_start(io);
            if (c->o.cancel_grace != 0)
                return;
        }
        snprintf(c->msg, sizeof(c->msg),
                 "statement timeout (%lld ms): a cancel request was sent, but the server did "
                 "not answer within cancel_grace (%lld ms); connection discarded",
                 (long long)c->o.statement_timeout, (long long)c->o.cancel_grace);
        pipe_unanswered(io, XS_TIMEOUT_LOST);
        pipe_finish(io);
        return;
    case ST_WAIT_CANCEL: /* answered, but the cancel request may still arrive */
        c->discard = 1;
        pipe_finish(io);
        return;
    default:
        return;
    }
}

/* Decide every entry from `from` on with rc and the current message. */
static void pipe_decide_rest(dbpool_io *io, int from, int rc, int sent)
{
    char keep[512];

    snprintf(keep, sizeof(keep), "%s", dbpool_last_error());
    for (int k = from; k < io->nent; k++) {
        io->ents[k]->out.sent = sent;
        set_error_msg("%s", keep);
        ent_decide(io->ents[k], rc);
    }
}

/* A batch found its connection dead before sending anything: each of its
 * statements provably did not run, and retries on another connection like a
 * single one would (call_end), or ends with the error. */
static void batch_dead(dbpool_io *io)
{
    char keep[512];

    snprintf(keep, sizeof(keep), "%s", dbpool_last_error());
    io->e.c.discard = 1;
    pgq_call_end(&io->e.c);
    io->begun = 0;
    (void)pgq_give_back(&io->lease);
    for (int k = 0; k < io->nent; k++) {
        dbpool_io *en = io->ents[k];
        io->ents[k] = NULL;
        if (en->limit < 0)
            en->limit = pgq_dead_retry_limit(en->pool);
        if (en->retries < en->limit) {
            en->retries++;
            dbpool_pg_result_clear(&en->out);
            if (checkout(en) == 0)
                continue;
        } else {
            set_error_msg("%s", keep);
        }
        deliver(en, DBPOOL_ECONNLOST);
    }
    io->nent = 0;
    io_free(io);
}

/* Send every statement; c is bound to the lease (io->begun). */
static void pipe_start(dbpool_io *io)
{
    struct call *c = &io->e.c;
    PGconn *pg = c->pg;
    int k;

    pgq_arm(c, c->o.statement_timeout);
    c->msg[0] = '\0';
    if (pgq_found_dead(c)) {
        if (!c->msg[0])
            pgq_conn_msg(c->msg, sizeof(c->msg), pg, "connection is closed");
        if (io->owned) {
            set_error(DBPOOL_ECONNLOST, "query: connection was already closed before sending: %s",
                      c->msg);
            batch_dead(io);
            return;
        }
        c->discard = 1;
        pipe_decide_rest(io, 0,
                         set_error(DBPOOL_ECONNLOST,
                                   "pipeline: connection was already closed before sending: %s",
                                   c->msg),
                         0);
        pipe_finish(io);
        return;
    }
    if (PQtransactionStatus(pg) == PQTRANS_ACTIVE ||
        (!PQisnonblocking(pg) && PQsetnonblocking(pg, 1) != 0) ||
        PQpipelineStatus(pg) != PQ_PIPELINE_OFF || !PQenterPipelineMode(pg)) {
        pipe_decide_rest(io, 0,
                         set_error(DBPOOL_EINVAL,
                                   "pipeline: the connection is busy (a query is running or "
                                   "its results were not read) or cannot enter pipeline mode"),
                         0);
        pipe_finish(io);
        return;
    }
    io->t0 = io->t_sub = clock_us();
    /* libpq < 17 flushes at every PQpipelineSync: with a sync per statement
     * that is one send, one packet and one wake-up of the server per
     * statement. Corked, the kernel sends them as one (TCP only; on a unix
     * socket setsockopt fails and nothing changes). */
    int cork = io->sync_each && io->nent > 1 &&
               setsockopt(PQsocket(pg), IPPROTO_TCP, TCP_CORK, &(int){1}, sizeof(int)) == 0;
    for (k = 0; k < io->nent; k++) {
        const dbpool_io *en = io->ents[k];
        const dbpool_pg_params *p = &en->p;
        if (!PQsendQueryParams(pg, en->sql, p->n, p->types, p->values, p->lengths, p->formats,
                               p->result_format))
            break;
        if ((io->sync_each || k == io->nent - 1) && !PQpipelineSync(pg)) {
            k++; /* queued; its sync failed: the connection is broken */
            break;
        }
    }
    if (cork)
        (void)setsockopt(PQsocket(pg), IPPROTO_TCP, TCP_CORK, &(int){0}, sizeof(int));
    io->nsent = k;
    for (int i = 0; i < k; i++)
        trace_start(io, io->ents[i]);
    if (k < io->nent) {
        char why[256];
        pgq_conn_msg(why, sizeof(why), pg, "libpq could not queue the statement");
        int ok = PQstatus(pg) == CONNECTION_OK;
        pipe_decide_rest(io, k,
                         ok ? set_error(DBPOOL_EINVAL,
                                        "pipeline: libpq refused statement %d (%s); it and "
                                        "the ones after it were not sent",
                                        k + 1, why)
                            : set_error(DBPOOL_ECONNLOST,
                                        "pipeline: connection lost while queueing statement "
                                        "%d (%s); it and the ones after it were not sent",
                                        k + 1, why),
                         0);
        /* the statements before it were queued: close their sync */
        if (ok && k > 0 && !io->sync_each && !PQpipelineSync(pg))
            ok = 0;
        if (!ok && k > 0) {
            snprintf(c->msg, sizeof(c->msg), "%s", why);
            pipe_unanswered(io, XS_LOST);
        }
        if (!ok || k == 0) {
            pipe_finish(io);
            return;
        }
    }
    io->want = io->sync_each ? io->nsent : 1;
    io->stage = ST_FLUSH;
    if (c->deadline)
        timer(io, ms_until(c->deadline));
    pipe_drive(io, 0);
}

/* A container for n entries, options checked. */
static dbpool_io *pipe_new(dbpool_loop *loop, const dbpool_io *like, int n)
{
    dbpool_io *io = mem_calloc(1, sizeof(*io));

    if (!io)
        return NULL;
    if (!(io->ents = mem_calloc((size_t)n, sizeof(*io->ents)))) {
        mem_free(io);
        return NULL;
    }
    io->loop = loop;
    io->o = like->o;
    io->stage = ST_IDLE;
    loop->pending++;
    return io;
}

/* ---- batches: queued one-call statements of this loop on one lease ---------------- */

/* A statement that may share a batch: not one that opens a transaction
 * block (BEGIN, START TRANSACTION), which would swallow the statements of
 * other clients behind it until the check-in rolls them back. The extended
 * protocol takes one command per statement, so its first word decides;
 * anything not starting with a plain word (a comment, a parenthesis) is
 * conservatively kept alone. */
static int batchable(const char *sql)
{
    while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r')
        sql++;
    if (!((*sql >= 'a' && *sql <= 'z') || (*sql >= 'A' && *sql <= 'Z')))
        return 0;
    return strncasecmp(sql, "begin", 5) != 0 && strncasecmp(sql, "start", 5) != 0;
}

/* Only requests that would have come next anyway (async_take_head), of this
 * loop and pool, plain (the statement cache runs Prepare exchanges), and with
 * the same deadline rules, since a pipeline has one. */
static int batch_ok(void *arg, void *ctx)
{
    const dbpool_io *en = arg, *io = ctx;

    return en->loop == io->loop && en->pool == io->pool && !en->cached && !en->ents &&
           en->o.statement_timeout == io->o.statement_timeout &&
           en->o.cancel_grace == io->o.cancel_grace && batchable(en->sql);
}

/* io was handed a lease: take the requests right behind it in the pool's
 * queue that are ours and run them all in one pipeline. 0: nothing to take
 * (run io alone). */
static int batch_run(dbpool_io *io)
{
    void *more[DBPOOL_BATCH_MAX];

    if (!batchable(io->sql))
        return 0;
    dbpool_io *b = pipe_new(io->loop, io, io->loop->batch);
    if (!b)
        return 0;
    int n = async_take_head(io->pool, io->loop->cq, on_checkout, batch_ok, io, more,
                            io->loop->batch - 1);
    if (n == 0) {
        io_free(b);
        return 0;
    }
    int64_t now = clock_us();
    b->owned = 1;
    b->pool = io->pool;
    b->lease = io->lease;
    b->sync_each = 1; /* independent statements: each its own implicit transaction */
    b->ents[0] = io;
    for (int i = 0; i < n; i++)
        b->ents[i + 1] = more[i];
    b->nent = n + 1;
    for (int i = 0; i < b->nent; i++) {
        dbpool_io *en = b->ents[i];
        en->queue_us += now - en->t_sub; /* deliver() reports it */
    }
    int rc = pgq_call_init(&b->e.c, &b->lease, &b->o);
    if (rc != 0) { /* e.g. no memory for the connection's state */
        pipe_decide_rest(b, 0, rc, 0);
        pipe_finish(b);
        return 1;
    }
    b->begun = 1;
    pipe_start(b);
    return 1;
}

#else /* libpq < 14: no pipeline mode, no batches (dbpool_loop_batch refuses) */

static void pipe_drive(dbpool_io *io, int events)
{
    (void)io;
    (void)events;
}
static void pipe_timeout(dbpool_io *io)
{
    (void)io;
}
static void pipe_finish(dbpool_io *io)
{
    (void)io;
}
static int batch_run(dbpool_io *io)
{
    (void)io;
    return 0;
}
#endif

/* ---- the public pipeline ------------------------------------------------------------- */

int dbpool_pg_pipeline_async(dbpool_loop *loop, dbpool_lease *lease, const dbpool_pg_stmt *stmts,
                             int n, int flags, const dbpool_pg_opts *opts)
{
    dbpool_io like;
    int rc;

    clear_error();
    if (!loop || !lease || !stmts)
        return set_error(DBPOOL_EINVAL, "dbpool_pg_pipeline_async: NULL loop, lease or stmts");
    if (n < 1 || n > DBPOOL_PIPELINE_MAX)
        return set_error(DBPOOL_EINVAL, "dbpool_pg_pipeline_async: n = %d, not in 1..%d", n,
                         DBPOOL_PIPELINE_MAX);
    if (flags & ~DBPOOL_PIPE_SYNC_EACH)
        return set_error(DBPOOL_EINVAL, "dbpool_pg_pipeline_async: unknown flags 0x%x", flags);
    for (int k = 0; k < n; k++) {
        if (!stmts[k].cb)
            return set_error(DBPOOL_EINVAL, "dbpool_pg_pipeline_async: statement %d: NULL cb",
                             k + 1);
        if ((rc = pgq_bad_params(stmts[k].sql, stmts[k].params)) != 0)
            return rc;
        if (stmts[k].params && stmts[k].params->n > 65535)
            return set_error(DBPOOL_EINVAL,
                             "dbpool_pg_pipeline_async: statement %d: more than 65535 "
                             "parameters",
                             k + 1);
    }
#ifndef LIBPQ_HAS_PIPELINING
    (void)opts;
    (void)like;
    return set_error(DBPOOL_EINVAL, "dbpool_pg_pipeline_async: libpq has no pipeline mode (< 14)");
#else
    if ((rc = dbpool_lease_check(lease)) != 0)
        return rc;
    if (!dbpool_pg_conn(lease))
        return set_error(DBPOOL_EINVAL, "lease is not from a PostgreSQL pool");
    memset(&like, 0, sizeof(like));
    if ((rc = pgq_opts_get(opts, &like.o)) != 0)
        return rc;
    dbpool_io *io = pipe_new(loop, &like, n);
    if (!io)
        return set_error(DBPOOL_ENOMEM, "out of memory");
    io->lease = *lease;
    io->sync_each = (flags & DBPOOL_PIPE_SYNC_EACH) != 0;
    for (int k = 0; k < n && rc == 0; k++)
        if ((rc = io_new(&io->ents[k], loop, stmts[k].sql, stmts[k].params, opts, stmts[k].cb,
                         stmts[k].arg, 0)) == 0)
            io->nent++;
    if (rc == 0 && !(io->post = async_hold(loop->cq)))
        rc = set_error(DBPOOL_ENOMEM, "out of memory");
    if (rc == 0 && (rc = pgq_call_init(&io->e.c, &io->lease, &io->o)) != 0)
        async_unhold(io->post);
    if (rc != 0) {
        char keep[512];
        snprintf(keep, sizeof(keep), "%s", dbpool_last_error());
        for (int k = 0; k < io->nent; k++)
            io_free(io->ents[k]);
        io_free(io);
        set_error_msg("%s", keep);
        return rc;
    }
    io->begun = 1;
    io->sync = 1; /* an outcome known at once goes through the queue */
    pipe_start(io);
    if (io->sync) { /* on its way: the reservation is not needed */
        io->sync = 0;
        async_unhold(io->post);
        io->post = NULL;
    }
    clear_error();
    return 0;
#endif
}
