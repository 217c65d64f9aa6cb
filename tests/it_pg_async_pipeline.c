/* it_pg_async_pipeline.c - libpq pipeline mode from an event loop
 * (dbpool_pg_pipeline_async, dbpool_loop_batch) against a real server:
 * answers in order; an error in the middle (the rest of its sync skipped,
 * DBPOOL_ESKIPPED, and rolled back; with a sync per statement only the
 * failing one fails); a connection terminated mid-pipeline (unanswered or
 * unsynced statements ECONNLOST with sent 1, never success); the statement
 * timeout (57014 -> ETIMEDOUT, the rest skipped; no answer -> EUNKNOWN);
 * batches of one-call statements that never overtake an earlier waiter,
 * traced like single statements. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool/adapters/epoll.h"
#include "dbpool_pg_async.h"
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;
static pthread_t loop_thread;
static int seq; /* order in which callbacks ran (loop thread only) */

struct rec {
    int calls, status, value, sent, order, wrong_thread;
    char sqlstate[6];
    char err[400];
    /* the last statement of a pipeline: check the lease in from its callback */
    dbpool_lease *checkin;
    int checkin_rc;
};

static void on_result(void *arg, int status, dbpool_pg_result *r)
{
    struct rec *x = arg;

    x->calls++;
    x->status = status;
    x->sent = r->sent;
    x->order = ++seq;
    if (!pthread_equal(pthread_self(), loop_thread))
        x->wrong_thread = 1;
    snprintf(x->sqlstate, sizeof x->sqlstate, "%s", r->sqlstate);
    snprintf(x->err, sizeof x->err, "%s", status ? dbpool_last_error() : "");
    if (status == 0 && r->res && PQntuples(r->res) > 0)
        x->value = atoi(PQgetvalue(r->res, 0, 0));
    if (x->checkin)
        x->checkin_rc = dbpool_checkin(x->checkin); /* the lease is ours again */
}

struct recs {
    struct rec *r;
    int n;
};

static int all_called(void *arg)
{
    struct recs *rs = arg;
    for (int i = 0; i < rs->n; i++)
        if (rs->r[i].calls == 0)
            return 0;
    return 1;
}

static int run_all(dbpool_epoll *ep, struct rec *r, int n, int64_t timeout_ms)
{
    struct recs rs = {r, n};
    int64_t end = pgt_now_ms() + timeout_ms;

    while (!all_called(&rs)) {
        int64_t left = end - pgt_now_ms();
        if (left <= 0)
            return 0;
        dbpool_epoll_run(ep, left > 100 ? 100 : (int)left);
    }
    return 1;
}

struct fixture {
    dbpool_cq *cq;
    dbpool_epoll *ep;
    dbpool_loop *loop;
};

static void fx_open(struct fixture *f)
{
    assert_int_equal(dbpool_cq_new(&f->cq), 0);
    assert_int_equal(dbpool_epoll_attach(f->cq, &f->ep, &f->loop), 0);
    loop_thread = pthread_self();
    seq = 0;
}

/* Close, letting a cancel request's delivery come back first. */
static void fx_close(struct fixture *f)
{
    assert_int_equal(dbpool_loop_pending(f->loop), 0);
    int64_t end = pgt_now_ms() + 10000;
    while (pgt_now_ms() < end && dbpool_cq_free(f->cq) == DBPOOL_EBUSY)
        dbpool_epoll_run(f->ep, 50);
    assert_int_equal(dbpool_epoll_detach(f->ep), 0);
}

static int idle_is(const dbpool_stats *st, int64_t n)
{
    return st->idle == n;
}

/* trace_cb: START/END per statement, as for single statements */
static int trace_starts, trace_ends, trace_bad;
static void *on_trace(void *arg, const dbpool_trace *t)
{
    (void)arg;
    if (t->type == DBPOOL_TRACE_QUERY_START) {
        trace_starts++;
        return (void *)t->statement; /* the span: checked at the END */
    }
    if (t->type == DBPOOL_TRACE_QUERY_END) {
        trace_ends++;
        if (t->span == NULL || !t->sqlstate)
            trace_bad++;
    }
    return NULL;
}

/* barge_window < 0: the default */
static dbpool *open_connected_window(const char *app, int size, int traced, int64_t barge_window)
{
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.size = size;
    if (barge_window >= 0)
        cfg.barge_window = barge_window;
    cfg.queue_target = 10000;
    cfg.queue_interval = 20000;
    cfg.checkout_timeout = 60000;
    cfg.idle_interval = 600000;
    cfg.log_level = DBPOOL_LOG_NONE;
    if (traced)
        cfg.trace_cb = on_trace; /* runs on the loop thread: the statements' ends */
    dbpool *p = itp_open(&srv, app, &cfg);
    assert_true(itp_wait_stats(p, idle_is, size, 20000));
    return p;
}

static dbpool *open_connected_cfg(const char *app, int size, int traced)
{
    return open_connected_window(app, size, traced, -1);
}

static dbpool *open_connected(const char *app, int size)
{
    return open_connected_cfg(app, size, 0);
}

static void lease_of(dbpool *p, dbpool_lease *l)
{
    assert_int_equal(dbpool_checkout(p, 10000, l), 0);
}

/* n statements sql[i] into r[i]; the last one's callback checks the lease in. */
static void pipeline(struct fixture *f, dbpool_lease *l, const char *const *sql, struct rec *r,
                     int n, int flags, const dbpool_pg_opts *o)
{
    dbpool_pg_stmt st[16];

    assert_true(n <= 16);
    for (int i = 0; i < n; i++)
        st[i] = (dbpool_pg_stmt){.sql = sql[i], .cb = on_result, .arg = &r[i]};
    r[n - 1].checkin = l;
    assert_int_equal(dbpool_pg_pipeline_async(f->loop, l, st, n, flags, o), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(r[i].calls, 0); /* never from inside the call */
}

/* ---- tests ---------------------------------------------------------------- */

/* 200 statements with parameters in one pipeline: each answered once, in
 * order, on the loop thread; the lease is usable again from the last
 * callback (checked in there) and the connection is kept. */
static void test_async_pipeline_in_order(void **state)
{
    (void)state;
    enum { N = 200 };
    struct fixture f;
    fx_open(&f);
    dbpool *p = open_connected("pp_order", 1);
    struct rec *r = calloc(N, sizeof *r);
    dbpool_pg_stmt *st = calloc(N, sizeof *st);
    char(*bufs)[16] = calloc(N, sizeof *bufs);
    const char **vals = calloc(N, sizeof *vals);
    dbpool_pg_params *prm = calloc(N, sizeof *prm);
    assert_true(r && st && bufs && vals && prm);
    dbpool_lease l;
    lease_of(p, &l);

    for (int i = 0; i < N; i++) {
        snprintf(bufs[i], sizeof bufs[i], "%d", i);
        vals[i] = bufs[i];
        prm[i] = (dbpool_pg_params){.n = 1, .values = &vals[i]};
        st[i] = (dbpool_pg_stmt){
            .sql = "SELECT $1::int * 3", .params = &prm[i], .cb = on_result, .arg = &r[i]};
    }
    r[N - 1].checkin = &l;
    assert_int_equal(dbpool_pg_pipeline_async(f.loop, &l, st, N, 0, NULL), 0);
    memset(bufs, 0, N * sizeof *bufs); /* copied at the call */
    assert_int_equal(dbpool_loop_pending(f.loop), N + 1);
    assert_true(run_all(f.ep, r, N, 60000));
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        assert_int_equal(r[i].value, 3 * i);
        assert_int_equal(r[i].order, i + 1);
        assert_int_equal(r[i].sent, 1);
        assert_int_equal(r[i].wrong_thread, 0);
    }
    assert_int_equal(r[N - 1].checkin_rc, 0);
    dbpool_stats s = itp_stats(p);
    assert_int_equal(s.busy, 0);
    assert_int_equal(s.connects, 1);
    /* the connection left pipeline mode: plain use works */
    dbpool_pg_result res;
    assert_int_equal(dbpool_pg_query(p, "SELECT 7", NULL, NULL, &res), 0);
    dbpool_pg_result_clear(&res);
    free(r);
    free(st);
    free(bufs);
    free(vals);
    free(prm);
    assert_int_equal(itp_close(p), 0);
    fx_close(&f);
}

/* A pipeline far larger than the socket buffers both ways (2,000 statements
 * of 4 KB parameters, each answered with 4 KB): the send must be read
 * through while it is flushed, or client and server would block each other. */
static void test_async_pipeline_large(void **state)
{
    (void)state;
    enum { N = 2000, LEN = 4096 };
    struct fixture f;
    fx_open(&f);
    dbpool *p = open_connected("pp_large", 1);
    struct rec *r = calloc(N, sizeof *r);
    dbpool_pg_stmt *st = calloc(N, sizeof *st);
    char *big = malloc(LEN + 1);
    assert_true(r && st && big);
    memset(big, 'x', LEN);
    big[LEN] = '\0';
    const char *v[] = {big};
    dbpool_pg_params prm = {.n = 1, .values = v};
    dbpool_lease l;
    lease_of(p, &l);

    for (int i = 0; i < N; i++)
        st[i] = (dbpool_pg_stmt){
            .sql = "SELECT length($1), $1", .params = &prm, .cb = on_result, .arg = &r[i]};
    r[N - 1].checkin = &l;
    assert_int_equal(dbpool_pg_pipeline_async(f.loop, &l, st, N, DBPOOL_PIPE_SYNC_EACH, NULL), 0);
    assert_true(run_all(f.ep, r, N, 60000));
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].status, 0);
        assert_int_equal(r[i].value, LEN);
        assert_int_equal(r[i].order, i + 1);
    }
    assert_int_equal(r[N - 1].checkin_rc, 0);
    assert_int_equal(itp_stats(p).connects, 1);
    free(r);
    free(st);
    free(big);
    assert_int_equal(itp_close(p), 0);
    fx_close(&f);
}

/* An error in the middle. One sync: the server skips the rest (ESKIPPED,
 * sent 0) and the implicit transaction is rolled back, the first INSERT
 * included. A sync per statement: only the failing one fails. */
static void test_async_pipeline_error_middle(void **state)
{
    (void)state;
    struct fixture f;
    fx_open(&f);
    dbpool *p = open_connected("pp_error", 1);
    assert_int_equal(pgt_exec(&srv, "DROP TABLE IF EXISTS pp_t; CREATE TABLE pp_t (v int)"), 0);
    static const char *const sql[] = {"INSERT INTO pp_t VALUES (1)", "SELECT 1/0",
                                      "INSERT INTO pp_t VALUES (2)", "SELECT 3"};
    struct rec r[4];
    dbpool_lease l;

    memset(r, 0, sizeof r);
    lease_of(p, &l);
    pipeline(&f, &l, sql, r, 4, 0, NULL);
    assert_true(run_all(f.ep, r, 4, 30000));
    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[1].status, DBPOOL_EQUERY);
    assert_string_equal(r[1].sqlstate, "22012");
    for (int i = 2; i < 4; i++) {
        assert_int_equal(r[i].status, DBPOOL_ESKIPPED);
        assert_int_equal(r[i].sent, 0);
        assert_non_null(strstr(r[i].err, "not executed"));
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(r[i].order, i + 1);
    assert_int_equal(r[3].checkin_rc, 0);
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM pp_t"), 0);

    memset(r, 0, sizeof r);
    lease_of(p, &l);
    pipeline(&f, &l, sql, r, 4, DBPOOL_PIPE_SYNC_EACH, NULL);
    assert_true(run_all(f.ep, r, 4, 30000));
    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[1].status, DBPOOL_EQUERY);
    assert_int_equal(r[2].status, 0);
    assert_int_equal(r[3].status, 0);
    assert_int_equal(r[3].value, 3);
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM pp_t"), 2);
    assert_int_equal(itp_stats(p).connects, 1); /* SQL errors keep the connection */
    assert_int_equal(itp_close(p), 0);
    fx_close(&f);
}

struct killer {
    const char *app;
    int killed;
};

static void *kill_when_sleeping(void *arg)
{
    struct killer *k = arg;
    k->killed = pgt_terminate_when_sleeping(&srv, k->app, 20000);
    return NULL;
}

/* pg_terminate_backend while the second statement runs. A sync per
 * statement: the first is final (0), the rest ECONNLOST with sent 1. One
 * sync: the first answered, but the end of its transaction was never
 * confirmed: ECONNLOST with sent 1 as well, never success; the third is
 * behind the server's error (57P01) in the same sync: skipped. */
static void test_async_pipeline_connection_lost(void **state)
{
    (void)state;
    struct fixture f;
    fx_open(&f);
    dbpool *p = open_connected("pp_lost", 1);
    static const char *const sql[] = {"SELECT 1", "SELECT pg_sleep(20)", "SELECT 3"};

    for (int flags = DBPOOL_PIPE_SYNC_EACH; flags >= 0; flags--) {
        struct rec r[3];
        struct killer k = {"pp_lost", 0};
        dbpool_lease l;
        memset(r, 0, sizeof r);
        seq = 0;
        assert_true(itp_wait_stats(p, idle_is, 1, 20000));
        lease_of(p, &l);
        pthread_t t = itp_thr_start(kill_when_sleeping, &k);
        pipeline(&f, &l, sql, r, 3, flags, NULL);
        assert_true(run_all(f.ep, r, 3, 30000));
        assert_int_equal(itp_thr_join(t, 30000), 0);
        assert_true(k.killed >= 1);
        if (flags) {
            assert_int_equal(r[0].status, 0);
            assert_int_equal(r[0].value, 1);
        } else {
            assert_int_equal(r[0].status, DBPOOL_ECONNLOST);
            assert_int_equal(r[0].sent, 1);
        }
        /* the sleeping one: the server's 57P01 came, its sync never did */
        assert_int_equal(r[1].status, DBPOOL_ECONNLOST);
        assert_int_equal(r[1].sent, 1);
        assert_string_equal(r[1].sqlstate, "57P01");
        assert_non_null(strstr(r[1].err, "may or may not"));
        if (flags) { /* its own sync: nothing proves it did not run */
            assert_int_equal(r[2].status, DBPOOL_ECONNLOST);
            assert_int_equal(r[2].sent, 1);
            assert_non_null(strstr(r[2].err, "may or may not"));
        } else { /* behind an error of its sync: the server skips it */
            assert_int_equal(r[2].status, DBPOOL_ESKIPPED);
            assert_int_equal(r[2].sent, 0);
        }
        for (int i = 0; i < 3; i++)
            assert_int_equal(r[i].order, i + 1);
        assert_int_equal(r[2].checkin_rc, 0); /* checked in, discarded by the pool */
    }
    /* the pool replaced the connection */
    assert_true(itp_wait_stats(p, idle_is, 1, 20000));
    assert_true(itp_stats(p).connects >= 3);
    assert_int_equal(itp_close(p), 0);
    fx_close(&f);
}

/* A connection terminated while idle, then a pipeline on it: found dead
 * before sending: ECONNLOST with sent 0 for every statement, through the
 * queue (never inside the call). */
static void test_async_pipeline_dead_before_send(void **state)
{
    (void)state;
    struct fixture f;
    fx_open(&f);
    dbpool *p = open_connected("pp_dead", 1);
    static const char *const sql[] = {"SELECT 1", "SELECT 2"};
    struct rec r[2];
    dbpool_lease l;

    memset(r, 0, sizeof r);
    lease_of(p, &l);
    assert_true(itp_terminate_held(&srv, "pp_dead", &l, 10000));
    pipeline(&f, &l, sql, r, 2, 0, NULL);
    assert_true(run_all(f.ep, r, 2, 30000));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].status, DBPOOL_ECONNLOST);
        assert_int_equal(r[i].sent, 0);
    }
    assert_int_equal(r[1].checkin_rc, 0);
    assert_int_equal(itp_close(p), 0);
    fx_close(&f);
}

/* The same after the connection answered a pipeline: the dead-before-send
 * check is skipped only within 1 ms of a full answer (pg_query.c,
 * PGQ_FRESH_US), so 50 ms later the terminated session is still found dead
 * before sending, sent 0 for every statement. */
static void test_async_pipeline_dead_before_send_after_use(void **state)
{
    (void)state;
    struct fixture f;
    fx_open(&f);
    dbpool *p = open_connected("pp_dead2", 1);
    static const char *const sql[] = {"SELECT 1", "SELECT 2"};
    struct rec ok[2], r[2];
    dbpool_lease l;

    memset(ok, 0, sizeof ok);
    memset(r, 0, sizeof r);
    lease_of(p, &l);
    pipeline(&f, &l, sql, ok, 2, DBPOOL_PIPE_SYNC_EACH, NULL); /* checked in by the last */
    assert_true(run_all(f.ep, ok, 2, 30000));
    for (int i = 0; i < 2; i++)
        assert_int_equal(ok[i].status, 0);
    lease_of(p, &l);
    itp_sleep_ms(50); /* past the 1 ms freshness: pacing, not synchronisation */
    assert_true(itp_terminate_held(&srv, "pp_dead2", &l, 10000));
    pipeline(&f, &l, sql, r, 2, 0, NULL);
    assert_true(run_all(f.ep, r, 2, 30000));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].status, DBPOOL_ECONNLOST);
        assert_int_equal(r[i].sent, 0);
    }
    assert_int_equal(itp_close(p), 0);
    fx_close(&f);
}

/* The statement timeout on a pipeline: the cancel hits the sleeping
 * statement (57014: ETIMEDOUT) and, with one sync, the server skips the
 * rest; with a sync per statement the next one runs. The connection is
 * kept, and the loop serves another connection meanwhile. cancel_grace 0:
 * nothing unanswered is claimed not to have run (EUNKNOWN). */
static void test_async_pipeline_timeout(void **state)
{
    (void)state;
    struct fixture f;
    fx_open(&f);
    dbpool *p = open_connected("pp_timeout", 2);
    dbpool_pg_opts o;
    dbpool_pg_opts_init(&o);
    o.statement_timeout = 300;
    o.cancel_grace = 5000;
    static const char *const sql[] = {"SELECT 1", "SELECT pg_sleep(30)", "SELECT 3"};
    struct rec r[3], other = {0};
    dbpool_lease l;

    memset(r, 0, sizeof r);
    lease_of(p, &l);
    int64_t t0 = pgt_now_ms();
    pipeline(&f, &l, sql, r, 3, 0, &o);
    assert_int_equal(dbpool_pg_query_async(f.loop, p, "SELECT 5", NULL, NULL, on_result, &other),
                     0);
    assert_true(run_all(f.ep, &other, 1, 30000));
    assert_int_equal(other.status, 0);
    assert_int_equal(r[2].calls, 0); /* the loop was not blocked by the pipeline */
    assert_true(run_all(f.ep, r, 3, 30000));
    int64_t took = pgt_now_ms() - t0;
    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[1].status, DBPOOL_ETIMEDOUT);
    assert_string_equal(r[1].sqlstate, "57014");
    assert_int_equal(r[2].status, DBPOOL_ESKIPPED);
    assert_true(took >= 300 && took < 10000);
    assert_int_equal(itp_stats(p).connects, 2); /* clean: kept */

    memset(r, 0, sizeof r);
    static const char *const sql2[] = {"SELECT pg_sleep(30)", "SELECT 3"};
    lease_of(p, &l);
    pipeline(&f, &l, sql2, r, 2, DBPOOL_PIPE_SYNC_EACH, &o);
    assert_true(run_all(f.ep, r, 2, 30000));
    assert_int_equal(r[0].status, DBPOOL_ETIMEDOUT);
    assert_int_equal(r[1].status, 0);
    assert_int_equal(r[1].value, 3);
    assert_int_equal(itp_stats(p).connects, 2);

    o.cancel_grace = 0;
    memset(r, 0, sizeof r);
    lease_of(p, &l);
    pipeline(&f, &l, sql, r, 3, DBPOOL_PIPE_SYNC_EACH, &o);
    assert_true(run_all(f.ep, r, 3, 30000));
    assert_int_equal(r[0].status, 0);
    for (int i = 1; i < 3; i++) {
        assert_int_equal(r[i].status, DBPOOL_EUNKNOWN);
        assert_int_equal(r[i].sent, 1);
    }
    assert_int_equal(r[2].checkin_rc, 0);
    assert_int_equal(itp_close(p), 0);
    fx_close(&f);
}

/* Misuse: EINVAL and no callback. */
static void test_async_pipeline_misuse(void **state)
{
    (void)state;
    struct fixture f;
    fx_open(&f);
    dbpool *p = open_connected("pp_misuse", 1);
    dbpool_lease l, stale = {NULL, 0};
    struct rec r = {0};
    dbpool_pg_stmt ok = {.sql = "SELECT 1", .cb = on_result, .arg = &r};
    dbpool_pg_stmt nocb = {.sql = "SELECT 1"};

    lease_of(p, &l);
    assert_int_equal(dbpool_pg_pipeline_async(NULL, &l, &ok, 1, 0, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_pg_pipeline_async(f.loop, &l, &ok, 0, 0, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_pg_pipeline_async(f.loop, &l, &nocb, 1, 0, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_pg_pipeline_async(f.loop, &l, &ok, 1, 8, NULL), DBPOOL_EINVAL);
    assert_int_not_equal(dbpool_pg_pipeline_async(f.loop, &stale, &ok, 1, 0, NULL), 0);
    assert_int_equal(dbpool_loop_batch(f.loop, DBPOOL_BATCH_MAX + 1), DBPOOL_EINVAL);
    assert_int_equal(r.calls, 0);
    assert_int_equal(dbpool_loop_pending(f.loop), 0);
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(itp_close(p), 0);
    fx_close(&f);
}

/* ---- batches of one-call statements ---------------------------------------------- */

struct blocker {
    dbpool *p;
    int rc;
};

static void *blocking_insert(void *arg)
{
    struct blocker *b = arg;
    dbpool_pg_result r;
    b->rc = dbpool_pg_query(b->p, "INSERT INTO pp_order (who) VALUES ('thread')", NULL, NULL, &r);
    dbpool_pg_result_clear(&r);
    return NULL;
}

static int waiting_is(const dbpool_stats *st, int64_t n)
{
    return st->waiting == n;
}

/* One connection, held. Queue: a1 a2 (this loop), a blocking thread, a3 a4.
 * At the check-in a1 takes a2 along (one checkout, one pipeline) but not a3
 * and a4: they are behind the thread, which must not be overtaken. */
static void test_async_batch_fifo(void **state)
{
    (void)state;
    struct fixture f;
    fx_open(&f);
    dbpool *p = open_connected("pp_batch", 1);
    assert_int_equal(dbpool_loop_batch(f.loop, 16), 0);
    assert_int_equal(pgt_exec(&srv, "DROP TABLE IF EXISTS pp_order; "
                                    "CREATE TABLE pp_order (id serial, who text)"),
                     0);
    struct rec r[4];
    memset(r, 0, sizeof r);
    static const char *const sql[] = {
        "INSERT INTO pp_order (who) VALUES ('a1')", "INSERT INTO pp_order (who) VALUES ('a2')",
        "INSERT INTO pp_order (who) VALUES ('a3')", "INSERT INTO pp_order (who) VALUES ('a4')"};
    dbpool_lease held;
    lease_of(p, &held);
    uint64_t checkouts0 = itp_stats(p).checkouts;

    for (int i = 0; i < 2; i++)
        assert_int_equal(dbpool_pg_query_async(f.loop, p, sql[i], NULL, NULL, on_result, &r[i]), 0);
    struct blocker b = {p, 1};
    pthread_t t = itp_thr_start(blocking_insert, &b);
    assert_true(itp_wait_stats(p, waiting_is, 3, 20000));
    for (int i = 2; i < 4; i++)
        assert_int_equal(dbpool_pg_query_async(f.loop, p, sql[i], NULL, NULL, on_result, &r[i]), 0);
    assert_int_equal(dbpool_checkin(&held), 0);
    assert_true(run_all(f.ep, r, 4, 30000));
    assert_int_equal(itp_thr_join(t, 30000), 0);
    assert_int_equal(b.rc, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(r[i].status, 0);
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM (SELECT who, row_number() OVER "
                                         "(ORDER BY id) AS n FROM pp_order) x WHERE "
                                         "(n, who) IN ((1,'a1'),(2,'a2'),(3,'thread'),"
                                         "(4,'a3'),(5,'a4'))"),
                     5);
    /* a1+a2 one checkout, the thread one, a3+a4 one */
    assert_int_equal(itp_stats(p).checkouts - checkouts0, 3);
    assert_int_equal(itp_close(p), 0);
    fx_close(&f);
}

/* Another loop's statement: submitted from a thread of its own (the owner of
 * the request), which then ends; its loop is run here afterwards. */
struct other_loop {
    dbpool_loop *loop;
    dbpool *p;
    struct rec *r;
    int rc;
};

static void *other_loop_insert(void *arg)
{
    struct other_loop *o = arg;
    o->rc = dbpool_pg_query_async(o->loop, o->p, "INSERT INTO pp_order2 (who) VALUES ('b1')", NULL,
                                  NULL, on_result, o->r);
    return NULL;
}

static int oldest_wait_over(const dbpool_stats *st, int64_t ms)
{
    return st->oldest_wait_ms > ms;
}

/*
 * One connection, held. Queue: a1 (loop A, batching), b1 (loop B), a2 (A).
 * At the check-in a1 is handed the connection. Inside barge_window its batch
 * passes b1 over and takes a2 along (same-loop service: one checkout for a1
 * and a2, then b1); once b1 waited past the window (`expire`), the batch
 * stops at b1 and the order is a1, b1, a2 (three checkouts).
 */
static void batch_other_loop(const char *app, int64_t barge_window, int expire)
{
    struct fixture fa, fb;
    fx_open(&fa);
    fx_open(&fb);
    dbpool *p = open_connected_window(app, 1, 0, barge_window);
    assert_int_equal(dbpool_loop_batch(fa.loop, 16), 0);
    assert_int_equal(pgt_exec(&srv, "DROP TABLE IF EXISTS pp_order2; "
                                    "CREATE TABLE pp_order2 (id serial, who text)"),
                     0);
    struct rec r[3]; /* a1, a2, b1 */
    memset(r, 0, sizeof r);
    dbpool_lease held;
    lease_of(p, &held);
    uint64_t checkouts0 = itp_stats(p).checkouts;

    int64_t t0 = pgt_now_ms();
    assert_int_equal(dbpool_pg_query_async(fa.loop, p, "INSERT INTO pp_order2 (who) VALUES ('a1')",
                                           NULL, NULL, on_result, &r[0]),
                     0);
    struct other_loop o = {fb.loop, p, &r[2], 1};
    assert_int_equal(itp_thr_join(itp_thr_start(other_loop_insert, &o), 5000), 0);
    assert_int_equal(o.rc, 0);
    assert_int_equal(dbpool_pg_query_async(fa.loop, p, "INSERT INTO pp_order2 (who) VALUES ('a2')",
                                           NULL, NULL, on_result, &r[1]),
                     0);
    int64_t spread = pgt_now_ms() - t0;
    assert_int_equal(itp_stats(p).waiting, 3);
    if (expire) /* b1 past its window: a bounded wait on the clock */
        assert_true(itp_wait_stats(p, oldest_wait_over, barge_window + spread, 10000));
    else
        assert_true(spread < barge_window / 2);
    assert_int_equal(dbpool_checkin(&held), 0);

    int64_t end = pgt_now_ms() + 30000;
    while ((!r[0].calls || !r[1].calls || !r[2].calls) && pgt_now_ms() < end) {
        dbpool_epoll_run(fa.ep, 10);
        dbpool_epoll_run(fb.ep, 10);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
    }
    const char *want = expire ? "(1,'a1'),(2,'b1'),(3,'a2')" : "(1,'a1'),(2,'a2'),(3,'b1')";
    char q[400];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM (SELECT who, row_number() OVER (ORDER BY id) AS n FROM "
             "pp_order2) x WHERE (n, who) IN (%s)",
             want);
    assert_int_equal(pgt_query_int(&srv, q), 3);
    assert_int_equal(itp_stats(p).checkouts - checkouts0, expire ? 3 : 2);
    assert_int_equal(itp_close(p), 0);
    fx_close(&fa);
    fx_close(&fb);
}

static void test_async_batch_passes_other_loop_in_window(void **state)
{
    (void)state;
    batch_other_loop("pp_loop_in", 600000, 0);
}

static void test_async_batch_stops_at_other_loop_past_window(void **state)
{
    (void)state;
    batch_other_loop("pp_loop_out", 100, 1);
}

/* Many one-call statements batched on a pool of 2: each answered once with
 * its own value; a failing one fails alone (a sync per statement). */
static void test_async_batch_many(void **state)
{
    (void)state;
    enum { N = 500 };
    struct fixture f;
    fx_open(&f);
    dbpool *p = open_connected_cfg("pp_many", 2, 1);
    assert_int_equal(dbpool_loop_batch(f.loop, DBPOOL_BATCH_MAX), 0);
    trace_starts = trace_ends = trace_bad = 0;
    struct rec *r = calloc(N, sizeof *r);
    assert_non_null(r);
    uint64_t checkouts0 = itp_stats(p).checkouts;

    for (int i = 0; i < N; i++) {
        char buf[16];
        const char *v[] = {buf};
        dbpool_pg_params prm = {.n = 1, .values = v};
        snprintf(buf, sizeof buf, "%d", i);
        assert_int_equal(
            dbpool_pg_query_async(f.loop, p,
                                  i == 100 ? "SELECT 1/($1::int - 100)" : "SELECT $1::int + 1",
                                  &prm, NULL, on_result, &r[i]),
            0);
    }
    assert_true(run_all(f.ep, r, N, 60000));
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        if (i == 100) {
            assert_int_equal(r[i].status, DBPOOL_EQUERY);
            continue;
        }
        assert_int_equal(r[i].status, 0);
        assert_int_equal(r[i].value, i + 1);
    }
    /* a one-call BEGIN is never batched: it would swallow the statements
     * behind it into its transaction, rolled back at its check-in */
    assert_int_equal(pgt_exec(&srv, "DROP TABLE IF EXISTS pp_tx; CREATE TABLE pp_tx (v int)"), 0);
    struct rec tx[8];
    memset(tx, 0, sizeof tx);
    assert_int_equal(dbpool_pg_query_async(f.loop, p, " begin", NULL, NULL, on_result, &tx[0]), 0);
    for (int i = 1; i < 8; i++)
        assert_int_equal(dbpool_pg_query_async(f.loop, p, "INSERT INTO pp_tx VALUES (1)", NULL,
                                               NULL, on_result, &tx[i]),
                         0);
    assert_true(run_all(f.ep, tx, 8, 30000));
    for (int i = 0; i < 8; i++)
        assert_int_equal(tx[i].status, 0);
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM pp_tx"), 7);
    trace_starts -= 8;
    trace_ends -= 8;

    /* traced like single statements: one START and one END each */
    assert_int_equal(trace_starts, N);
    assert_int_equal(trace_ends, N);
    assert_int_equal(trace_bad, 0);
    /* batched: far fewer checkouts than statements */
    assert_true(itp_stats(p).checkouts - checkouts0 <= N / 4);
    assert_int_equal(itp_stats(p).connects, 2);
    free(r);
    assert_int_equal(itp_close(p), 0);
    fx_close(&f);
}

static int group_setup(void **state)
{
    (void)state;
    return pgt_start(&srv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    itp_close_all();
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_async_pipeline_in_order),
        cmocka_unit_test(test_async_pipeline_large),
        cmocka_unit_test(test_async_pipeline_error_middle),
        cmocka_unit_test(test_async_pipeline_connection_lost),
        cmocka_unit_test(test_async_pipeline_dead_before_send),
        cmocka_unit_test(test_async_pipeline_dead_before_send_after_use),
        cmocka_unit_test(test_async_pipeline_timeout),
        cmocka_unit_test(test_async_pipeline_misuse),
        cmocka_unit_test(test_async_batch_fifo),
        cmocka_unit_test(test_async_batch_many),
        cmocka_unit_test(test_async_batch_passes_other_loop_in_window),
        cmocka_unit_test(test_async_batch_stops_at_other_loop_past_window),
    };
    return cmocka_run_group_tests_name("it_pg_async_pipeline", tests, group_setup, group_teardown);
}
