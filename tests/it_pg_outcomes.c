/* it_pg_outcomes.c - the query helpers never call a statement "not executed"
 * unless that is certain (issue 11), against a real PostgreSQL.
 *
 *   - a statement that commits while its answer is delayed past the statement
 *     timeout and cancel_grace is DBPOOL_EUNKNOWN, never DBPOOL_ETIMEDOUT;
 *     a statement the server confirms cancelled (57014) is DBPOOL_ETIMEDOUT;
 *   - a pooled session the server has already ended (its FATAL is on the
 *     socket, its close not yet) is dead before sending: retried safely;
 *   - DBPOOL_NO_LIMIT (INT64_MAX) as statement_timeout / cancel_grace means
 *     no limit, not an overflowed deadline;
 *
 * One throwaway server for the whole file; faults come from the TCP fault
 * relay (tools/relay/relay.h). Every wait is bounded. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "itpool.h"
#include "pgserver.h"
#include "relay.h"

static pgt_server srv;

/* ---------------------------------------------------------------------- */
/* helpers                                                                 */
/* ---------------------------------------------------------------------- */

static relay *g_relay;
static int64_t g_hold_timeout; /* 0: the default */

static void fast_config(dbpool_config *cfg, int size)
{
    dbpool_config_init(cfg);
    cfg->size = size;
    cfg->idle_interval = 60000; /* no pings: tests decide when a connection is looked at */
    cfg->backoff_min = 50;
    cfg->backoff_max = 300;
    cfg->connect_timeout = 5000;
    cfg->checkout_timeout = 5000;
    cfg->log_level = DBPOOL_LOG_NONE;
    if (g_hold_timeout)
        cfg->hold_timeout = g_hold_timeout;
}

static dbpool *open_pool(const char *app, int size)
{
    dbpool_config cfg;
    fast_config(&cfg, size);
    return itp_open(&srv, app, &cfg);
}

/* A pool whose connections go through a fresh fault relay. */
static dbpool *open_relayed_pool(const char *app, int size)
{
    char ci[700];
    dbpool_config cfg;
    dbpool *p = NULL;

    assert_int_equal(relay_start(&g_relay, "127.0.0.1", srv.port), 0);
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres application_name=%s",
             relay_port(g_relay), app);
    fast_config(&cfg, size);
    if (dbpool_pg_open(&p, ci, &cfg) != 0)
        fail_msg("dbpool_pg_open: %s", dbpool_last_error());
    itp_track(p);
    return p;
}

static int test_teardown(void **state)
{
    (void)state;
    itp_close_all();
    relay_stop(g_relay);
    g_relay = NULL;
    g_hold_timeout = 0;
    return 0;
}

static int64_t ms_since(int64_t t0)
{
    return pgt_now_ms() - t0;
}

static void server_exec(const char *sql)
{
    if (pgt_exec(&srv, sql) != 0)
        fail_msg("setup SQL failed: %s", sql);
}

static int64_t server_int(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int64_t server_int(const char *fmt, ...)
{
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return pgt_query_int(&srv, sql);
}

static int idle_is(const dbpool_stats *st, int64_t n)
{
    return st->idle == n;
}

static void await_idle(dbpool *p, int n)
{
    if (!itp_wait_stats(p, idle_is, n, 10000)) {
        dbpool_stats st = itp_stats(p);
        fail_msg("pool never reached idle=%d (idle=%d busy=%d state=%s %s)", n, st.idle, st.busy,
                 dbpool_state_name(st.state), st.last_error);
    }
}

/* A query returning one integer, through the helper; fails the test on error. */
static int64_t q_int(dbpool *p, const char *sql)
{
    dbpool_pg_result r;
    int rc = dbpool_pg_query(p, sql, NULL, NULL, &r);
    if (rc != 0)
        fail_msg("%s: %d %s", sql, rc, dbpool_last_error());
    int64_t v = strtoll(PQgetvalue(r.res, 0, 0), NULL, 10);
    dbpool_pg_result_clear(&r);
    return v;
}

static void opts_timeout(dbpool_pg_opts *o, int64_t timeout, int64_t grace)
{
    dbpool_pg_opts_init(o);
    o->statement_timeout = timeout;
    o->cancel_grace = grace;
}

struct rows {
    const char *table;
    int64_t want;
};

static int rows_are(void *arg)
{
    const struct rows *w = arg;
    return server_int("SELECT count(*) FROM %s", w->table) == w->want;
}

static int pid_gone(void *arg)
{
    return server_int("SELECT count(*) FROM pg_stat_activity WHERE pid = %lld",
                      (long long)*(int64_t *)arg) == 0;
}

/* ---------------------------------------------------------------------- */
/* unknown outcomes are not "cancelled"                                    */
/* ---------------------------------------------------------------------- */

/*
 * The INSERT reaches the server only after the statement timeout and the
 * grace period have passed (800 ms each way through the relay; timeout
 * 300 ms, grace 200 ms), so the cancel request (sent at 300 ms, arriving at
 * 1100 ms) finds the backend idle and is ignored; the INSERT commits. The
 * call must not say it was cancelled: it returns DBPOOL_EUNKNOWN, and the row
 * is there.
 */
static void test_timeout_without_answer_is_unknown(void **state)
{
    (void)state;
    const char *app = "it_pgo_unknown";
    dbpool *p = open_relayed_pool(app, 1);
    server_exec("DROP TABLE IF EXISTS pgo_unknown; CREATE TABLE pgo_unknown (id int)");
    await_idle(p, 1);
    dbpool_pg_opts o;
    dbpool_pg_result r;
    const char *ins = "INSERT INTO pgo_unknown VALUES ($1::int)";
    const char *v1[] = {"1"}, *v2[] = {"2"}, *v3[] = {"3"};
    dbpool_pg_params one = {.n = 1, .values = v1}, two = {.n = 1, .values = v2},
                     three = {.n = 1, .values = v3};
    struct rows want = {"pgo_unknown", 0};

    for (int i = 0; i < 2; i++) { /* the plain path, then the prepared one */
        if (i == 1) {             /* prepare it first, so that only Bind/Execute is delayed */
            assert_int_equal(dbpool_pg_query_prepared(p, ins, &three, NULL, NULL), 0);
            want.want++;
        }
        assert_int_equal(relay_set_latency(g_relay, 800), 0);
        opts_timeout(&o, 300, 200);
        int64_t t0 = pgt_now_ms();
        int rc = i == 0 ? dbpool_pg_query(p, ins, &one, &o, &r)
                        : dbpool_pg_query_prepared(p, ins, &two, &o, &r);
        int64_t took = ms_since(t0);
        if (rc != DBPOOL_EUNKNOWN)
            fail_msg("path %d: got %d (%s) sent=%d: %s; want DBPOOL_EUNKNOWN", i, rc,
                     dbpool_strerror(rc), r.sent, dbpool_last_error());
        assert_int_equal(r.sent, 1);
        assert_string_equal(r.sqlstate, "");
        assert_null(r.res);
        assert_non_null(strstr(dbpool_last_error(), "may or may not have run"));
        assert_true(took >= 450 && took < 3000);
        dbpool_pg_result_clear(&r);

        /* ... and it did run: the row arrives once the relay delivers it */
        want.want++;
        if (!pgt_wait_for(rows_are, &want, 5000))
            fail_msg("path %d: the INSERT never committed (rows: %lld, want %lld)", i,
                     (long long)server_int("SELECT count(*) FROM pgo_unknown"),
                     (long long)want.want);
        assert_int_equal(relay_set_latency(g_relay, 0), 0);
        /* the connection was discarded; a fresh one serves the next call */
        assert_int_equal(q_int(p, "SELECT 1"), 1);
    }

    /* A cold cache: the deadline passes during the Parse, before the
     * statement itself was sent. That one provably did not run. */
    int64_t pid = q_int(p, "SELECT pg_backend_pid()");
    assert_int_equal(relay_set_latency(g_relay, 800), 0);
    opts_timeout(&o, 300, 200);
    int rc =
        dbpool_pg_query_prepared(p, "INSERT INTO pgo_unknown VALUES ($1::int + 0)", &one, &o, &r);
    if (rc != DBPOOL_ETIMEDOUT)
        fail_msg("cold cache: got %d (%s): %s; want DBPOOL_ETIMEDOUT", rc, dbpool_strerror(rc),
                 dbpool_last_error());
    assert_int_equal(r.sent, 0);
    dbpool_pg_result_clear(&r);
    if (!pgt_wait_for(pid_gone, &pid, 10000)) /* its session ends */
        fail_msg("the discarded connection's backend never went away");
    assert_int_equal(relay_set_latency(g_relay, 0), 0);
    assert_int_equal(server_int("SELECT count(*) FROM pgo_unknown"), want.want);
}

/* The same fault, but the cancel is answered within the grace period: the
 * server confirms it (57014), so the statement provably did not run. */
static void test_timeout_confirmed_is_etimedout(void **state)
{
    (void)state;
    const char *app = "it_pgo_confirmed";
    dbpool *p = open_relayed_pool(app, 1);
    server_exec("DROP TABLE IF EXISTS pgo_confirmed; CREATE TABLE pgo_confirmed (id int)");
    await_idle(p, 1);
    int64_t pid = q_int(p, "SELECT pg_backend_pid()");
    assert_int_equal(relay_set_latency(g_relay, 100), 0);
    dbpool_pg_opts o;
    dbpool_pg_result r;

    opts_timeout(&o, 400, 8000); /* the answer takes ~300 ms; a loaded machine, longer */
    int64_t t0 = pgt_now_ms();
    int rc =
        dbpool_pg_query(p, "INSERT INTO pgo_confirmed SELECT 1 FROM pg_sleep(5)", NULL, &o, &r);
    if (rc != DBPOOL_ETIMEDOUT)
        fail_msg("got %d (%s): %s; want DBPOOL_ETIMEDOUT", rc, dbpool_strerror(rc),
                 dbpool_last_error());
    assert_true(ms_since(t0) < 8400);
    assert_string_equal(r.sqlstate, "57014");
    assert_non_null(strstr(dbpool_last_error(), "cancelled on the server"));
    dbpool_pg_result_clear(&r);
    assert_int_equal(relay_set_latency(g_relay, 0), 0);
    /* not run, and the connection was clean enough to keep */
    assert_int_equal(server_int("SELECT count(*) FROM pgo_confirmed"), 0);
    assert_int_equal(q_int(p, "SELECT pg_backend_pid()"), pid);
}

/* Inside a transaction a statement with an unknown outcome says so, and the
 * transaction that returns it was rolled back: COMMIT was never sent. */
struct tx_arg {
    int rc;
};

static int tx_insert_cb(dbpool_lease *tx, void *arg)
{
    struct tx_arg *a = arg;
    dbpool_pg_opts o;
    opts_timeout(&o, 300, 200);
    a->rc = dbpool_pg_exec(tx, "INSERT INTO pgo_tx VALUES (1)", NULL, &o, NULL);
    return a->rc;
}

/* hold_timeout fires while such a statement runs: the pool's own cancel
 * request proves nothing either, so the outcome stays unknown (it used to
 * become DBPOOL_EEXPIRED, "the query was cancelled"). */
static void test_hold_timeout_keeps_unknown(void **state)
{
    (void)state;
    g_hold_timeout = 300;
    dbpool *p = open_relayed_pool("it_pgo_hold", 1);
    server_exec("DROP TABLE IF EXISTS pgo_hold; CREATE TABLE pgo_hold (id int)");
    await_idle(p, 1);
    assert_int_equal(relay_set_latency(g_relay, 800), 0);
    dbpool_pg_opts o;
    dbpool_pg_result r;

    opts_timeout(&o, 400, 300);
    int rc = dbpool_pg_query(p, "INSERT INTO pgo_hold VALUES (1)", NULL, &o, &r);
    if (rc != DBPOOL_EUNKNOWN)
        fail_msg("got %d (%s) sent=%d: %s; want DBPOOL_EUNKNOWN", rc, dbpool_strerror(rc), r.sent,
                 dbpool_last_error());
    assert_int_equal(r.sent, 1);
    assert_non_null(strstr(dbpool_last_error(), "hold_timeout"));
    assert_non_null(strstr(dbpool_last_error(), "may or may not have run"));
    dbpool_pg_result_clear(&r);
    struct rows want = {"pgo_hold", 1};
    if (!pgt_wait_for(rows_are, &want, 5000))
        fail_msg("the INSERT never committed");
    assert_true(itp_stats(p).hold_timeouts >= 1);
    assert_int_equal(relay_set_latency(g_relay, 0), 0);
}

static int sleep_cb(dbpool_lease *tx, void *arg)
{
    (void)arg;
    dbpool_pg_opts o;
    opts_timeout(&o, DBPOOL_NO_LIMIT, DBPOOL_NO_LIMIT);
    return dbpool_pg_exec(tx, "SELECT pg_sleep(0.2)", NULL, &o, NULL);
}

static void test_tx_statement_unknown_rolls_back(void **state)
{
    (void)state;
    const char *app = "it_pgo_tx";
    dbpool *p = open_relayed_pool(app, 1);
    server_exec("DROP TABLE IF EXISTS pgo_tx; CREATE TABLE pgo_tx (id int)");
    await_idle(p, 1);
    int64_t pid = q_int(p, "SELECT pg_backend_pid()");
    assert_int_equal(relay_set_latency(g_relay, 800), 0);
    dbpool_pg_tx_opts to;
    dbpool_pg_tx_opts_init(&to);
    to.query.statement_timeout = 10000; /* BEGIN takes 1.6 s through the relay */
    struct tx_arg a = {0};

    int rc = dbpool_pg_transaction(p, tx_insert_cb, &a, &to, NULL);
    assert_int_equal(a.rc, DBPOOL_EUNKNOWN);
    assert_int_equal(rc, DBPOOL_EUNKNOWN);
    /* the session ends once the relay delivers the close: nothing committed */
    if (!pgt_wait_for(pid_gone, &pid, 10000))
        fail_msg("the transaction's backend never went away");
    assert_int_equal(relay_set_latency(g_relay, 0), 0);
    assert_int_equal(server_int("SELECT count(*) FROM pgo_tx"), 0);
}

/* ---------------------------------------------------------------------- */
/* a session the server has already ended                                  */
/* ---------------------------------------------------------------------- */

static int select_cb(dbpool_lease *tx, void *arg)
{
    (void)arg;
    return dbpool_pg_exec(tx, "SELECT 1", NULL, NULL, NULL);
}

static int held_eofs_cond(void *arg)
{
    return relay_held_eofs(g_relay) == *(int *)arg;
}

static int held_eofs_is(int want)
{
    return pgt_wait_for(held_eofs_cond, &want, 5000);
}

/* Terminate the backend of the pool's only connection while it is idle and
 * wait until its FATAL (57P01) has reached our socket while its close is
 * still held back by the relay (for 2 s). */
static void terminate_idle(dbpool *p)
{
    int64_t pid = q_int(p, "SELECT pg_backend_pid()");
    assert_true(held_eofs_is(0));
    assert_int_equal(server_int("SELECT pg_terminate_backend(%lld, 5000)::int", (long long)pid), 1);
    if (!held_eofs_is(1))
        fail_msg("the relay never held the terminated backend's close");
}

/*
 * pg_terminate_backend of an idle pooled connection: the server's FATAL is
 * already on the socket but its close has not arrived. The session provably
 * ended before anything was sent, so the helpers treat the connection as
 * dead before sending: the pool-level call is retried on a fresh connection
 * and succeeds (it used to send, then fail with ECONNLOST, sent = 1, "may or
 * may not have run"); a lease-level call says sent = 0; a transaction is
 * re-run elsewhere.
 */
static void test_terminated_idle_session_is_dead_before_send(void **state)
{
    (void)state;
    dbpool *p = open_relayed_pool("it_pgo_terminated", 1);
    await_idle(p, 1);
    assert_int_equal(relay_set_eof_delay(g_relay, 2000), 0);
    dbpool_pg_result r;

    /* the pool-level helper: safe retry */
    terminate_idle(p);
    int64_t t0 = pgt_now_ms();
    int rc = dbpool_pg_query(p, "SELECT 42", NULL, NULL, &r);
    if (rc != 0)
        fail_msg("got %d (%s) sent=%d sqlstate=%s: %s; want success after a retry", rc,
                 dbpool_strerror(rc), r.sent, r.sqlstate, dbpool_last_error());
    assert_int_equal(r.retries, 1);
    assert_string_equal(PQgetvalue(r.res, 0, 0), "42");
    assert_true(ms_since(t0) < 1900); /* did not wait for the held close (2 s) */
    dbpool_pg_result_clear(&r);

    /* the prepared path */
    assert_true(held_eofs_is(0));
    terminate_idle(p);
    assert_int_equal(dbpool_pg_query_prepared(p, "SELECT 43", NULL, NULL, &r), 0);
    assert_int_equal(r.retries, 1);
    dbpool_pg_result_clear(&r);

    /* on a lease: no retry, but the caller learns that nothing was sent */
    assert_true(held_eofs_is(0));
    terminate_idle(p);
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 5000, &l), 0);
    rc = dbpool_pg_exec(&l, "SELECT 44", NULL, NULL, &r);
    if (rc != DBPOOL_ECONNLOST || r.sent != 0)
        fail_msg("lease: got %d (%s) sent=%d: %s; want DBPOOL_ECONNLOST with sent=0", rc,
                 dbpool_strerror(rc), r.sent, dbpool_last_error());
    assert_non_null(strstr(dbpool_last_error(), "before sending"));
    assert_non_null(strstr(dbpool_last_error(), "57P01"));
    dbpool_pg_result_clear(&r);
    assert_int_equal(dbpool_checkin(&l), 0);

    /* a transaction: BEGIN was never sent, so it is re-run elsewhere */
    assert_true(held_eofs_is(0));
    terminate_idle(p);
    dbpool_pg_timings tm;
    assert_int_equal(dbpool_pg_transaction(p, select_cb, NULL, NULL, &tm), 0);
    assert_int_equal(tm.attempts, 2);
}

/* ---------------------------------------------------------------------- */
/* integer limits                                                          */
/* ---------------------------------------------------------------------- */

/* statement_timeout = DBPOOL_NO_LIMIT (INT64_MAX) is no limit: a short
 * pg_sleep runs to completion (it used to overflow into a deadline in the
 * past and be cancelled at once). 0 is no limit too. */
static void test_no_limit_statement_timeout(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pgo_nolimit", 1);
    dbpool_pg_opts o;
    dbpool_pg_result r;

    const int64_t limits[] = {DBPOOL_NO_LIMIT, INT64_MAX / 1000 + 1, 0};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        opts_timeout(&o, limits[i], 1000);
        int64_t t0 = pgt_now_ms();
        int rc = dbpool_pg_query(p, "SELECT 7 FROM pg_sleep(0.3)", NULL, &o, &r);
        int64_t took = ms_since(t0);
        if (rc != 0)
            fail_msg("statement_timeout=%lld: got %d (%s) after %lld ms: %s", (long long)limits[i],
                     rc, dbpool_strerror(rc), (long long)took, dbpool_last_error());
        assert_string_equal(PQgetvalue(r.res, 0, 0), "7");
        assert_true(took >= 290);
        dbpool_pg_result_clear(&r);
    }
}

/* cancel_grace = DBPOOL_NO_LIMIT waits for the server's answer to the cancel
 * (it used to overflow into no grace at all, discarding the connection and
 * reporting no answer). */
static void test_no_limit_cancel_grace(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pgo_nograce", 1);
    int64_t pid = q_int(p, "SELECT pg_backend_pid()");
    dbpool_pg_opts o;
    dbpool_pg_result r;

    opts_timeout(&o, 200, DBPOOL_NO_LIMIT);
    int64_t t0 = pgt_now_ms();
    int rc = dbpool_pg_query(p, "SELECT pg_sleep(5)", NULL, &o, &r);
    int64_t took = ms_since(t0);
    if (rc != DBPOOL_ETIMEDOUT)
        fail_msg("got %d (%s): %s; want DBPOOL_ETIMEDOUT", rc, dbpool_strerror(rc),
                 dbpool_last_error());
    assert_string_equal(r.sqlstate, "57014");
    assert_true(took >= 190 && took < 3000);
    dbpool_pg_result_clear(&r);
    /* answered and delivered: the connection is kept */
    assert_int_equal(q_int(p, "SELECT pg_backend_pid()"), pid);

    /* the transaction API arms its commands with the same arithmetic */
    dbpool_pg_tx_opts to;
    dbpool_pg_tx_opts_init(&to);
    to.query.statement_timeout = DBPOOL_NO_LIMIT;
    to.query.cancel_grace = DBPOOL_NO_LIMIT;
    assert_int_equal(dbpool_pg_transaction(p, sleep_cb, NULL, &to, NULL), 0);
}

/* ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (pgt_start(&srv) != 0) {
        fprintf(stderr, "it_pg_outcomes: could not start PostgreSQL\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    alarm(240); /* last resort against a hang */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_timeout_without_answer_is_unknown, test_teardown),
        cmocka_unit_test_teardown(test_timeout_confirmed_is_etimedout, test_teardown),
        cmocka_unit_test_teardown(test_tx_statement_unknown_rolls_back, test_teardown),
        cmocka_unit_test_teardown(test_hold_timeout_keeps_unknown, test_teardown),
        cmocka_unit_test_teardown(test_terminated_idle_session_is_dead_before_send, test_teardown),
        cmocka_unit_test_teardown(test_no_limit_statement_timeout, test_teardown),
        cmocka_unit_test_teardown(test_no_limit_cancel_grace, test_teardown),
    };
    return cmocka_run_group_tests_name("it_pg_outcomes", tests, group_setup, group_teardown);
}
