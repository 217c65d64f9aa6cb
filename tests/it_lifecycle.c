/* it_lifecycle.c - integration tests of the connection life cycle run by the
 * manager thread: idle pings, replacing killed connections, reconnect backoff
 * across a server outage, backoff_type stop, hold_timeout, max_lifetime,
 * dbpool_reconnect and after_connect, against a real PostgreSQL.
 *
 * One throwaway server for the whole file (group setup/teardown); tests that
 * stop it start it again, and the per-test teardown does so if they failed.
 * Every test uses its own application_name. Every wait is bounded. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;

/* ---------------------------------------------------------------------- */
/* helpers                                                                 */
/* ---------------------------------------------------------------------- */

/* Fast timers; tests override what they exercise. */
static void fast_config(dbpool_config *cfg, int size)
{
    dbpool_config_init(cfg);
    cfg->size = size;
    cfg->idle_interval = 200;
    cfg->backoff_min = 100;
    cfg->backoff_max = 400;
    cfg->queue_target = 20;
    cfg->queue_interval = 100;
    cfg->connect_timeout = 2000;
    cfg->checkout_timeout = 3000;
}

static int test_teardown(void **state)
{
    (void)state;
    itp_close_all();
    if (!srv.running && pgt_resume(&srv) != 0)
        fprintf(stderr, "it_lifecycle: could not restart the server after a test\n");
    return 0;
}

static int pred_idle_eq(const dbpool_stats *st, int64_t n)
{
    return st->idle == n;
}
static int pred_state_eq(const dbpool_stats *st, int64_t s)
{
    return (int64_t)st->state == s;
}
static int pred_disconnects_ge(const dbpool_stats *st, int64_t n)
{
    return (int64_t)st->disconnects >= n;
}
static int pred_connect_failures_ge(const dbpool_stats *st, int64_t n)
{
    return (int64_t)st->connect_failures >= n;
}
static int pred_hold_timeouts_ge(const dbpool_stats *st, int64_t n)
{
    return (int64_t)st->hold_timeouts >= n;
}

static void describe(dbpool *p, char *buf, size_t len)
{
    dbpool_stats st = itp_stats(p);
    snprintf(buf, len,
             "state=%s idle=%d busy=%d connecting=%d pinging=%d backoff=%d stopped=%d "
             "connects=%llu connect_failures=%llu disconnects=%llu pings=%llu "
             "ping_failures=%llu last_error=\"%s\"",
             dbpool_state_name(st.state), st.idle, st.busy, st.connecting, st.pinging, st.backoff,
             st.stopped, (unsigned long long)st.connects, (unsigned long long)st.connect_failures,
             (unsigned long long)st.disconnects, (unsigned long long)st.pings,
             (unsigned long long)st.ping_failures, st.last_error);
}

static void await_stats(dbpool *p, itp_stats_pred pred, int64_t arg, int64_t timeout_ms,
                        const char *what)
{
    if (!itp_wait_stats(p, pred, arg, timeout_ms)) {
        char d[800];
        describe(p, d, sizeof d);
        fail_msg("timed out after %lld ms waiting for %s (%s)", (long long)timeout_ms, what, d);
    }
}

static void await_idle(dbpool *p, int n, int64_t timeout_ms)
{
    await_stats(p, pred_idle_eq, n, timeout_ms, "idle connections");
}

/* Wait until SQL returning one integer yields `want`. */
struct sql_wait {
    const char *sql;
    int64_t want;
};

static int sql_cond(void *a)
{
    struct sql_wait *w = a;
    return pgt_query_int(&srv, w->sql) == w->want;
}

static int wait_sql(const char *sql, int64_t want, int64_t timeout_ms)
{
    struct sql_wait w = {sql, want};
    return pgt_wait_for(sql_cond, &w, timeout_ms);
}

/* Backend PIDs of an application_name, ascending; returns how many (<= max), -1 on error. */
static int app_pids(const char *app, int *out, int max)
{
    PGconn *c = PQconnectdb(srv.conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return -1;
    }
    const char *params[1] = {app};
    PGresult *r = PQexecParams(c,
                               "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
                               "ORDER BY pid",
                               1, NULL, params, NULL, NULL, 0);
    int n = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        n = 0;
        for (int i = 0; i < PQntuples(r) && n < max; i++)
            out[n++] = atoi(PQgetvalue(r, i, 0));
    }
    PQclear(r);
    PQfinish(c);
    return n;
}

/* "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'app' AND <extra>"
 * where extra is "pid IN (...)" / "pid NOT IN (...)" built from pids. */
static void pid_sql(char *buf, size_t len, const char *app, const char *op, const int *pids, int n)
{
    int off = snprintf(buf, len,
                       "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s' "
                       "AND pid %s (",
                       app, op);
    for (int i = 0; i < n && (size_t)off < len; i++)
        off += snprintf(buf + off, len - (size_t)off, "%s%d", i ? "," : "", pids[i]);
    if ((size_t)off < len)
        snprintf(buf + off, len - (size_t)off, ")");
}

/* Wait until `size` backends of app exist and none of `old` is among them. */
static int wait_all_replaced(const char *app, const int *old, int nold, int size,
                             int64_t timeout_ms)
{
    char sql[1024];
    pid_sql(sql, sizeof sql, app, "NOT IN", old, nold);
    struct sql_wait w = {sql, size};
    int64_t deadline = pgt_now_ms() + timeout_ms;
    /* new ones present, then old ones gone and nothing extra */
    if (!pgt_wait_for(sql_cond, &w, timeout_ms))
        return 0;
    int64_t left = deadline - pgt_now_ms();
    return itp_wait_backends(&srv, app, size, left > 0 ? left : 1);
}

/* Check out every connection of the pool at once and run SELECT 1 on each. */
static void all_usable(dbpool *p, int size)
{
    dbpool_lease l[8];
    assert_true(size <= 8);
    for (int i = 0; i < size; i++) {
        int rc = dbpool_checkout(p, 2000, &l[i]);
        if (rc != 0)
            fail_msg("checkout %d of %d: %s: %s", i + 1, size, dbpool_strerror(rc),
                     dbpool_last_error());
        if (!itp_select1(&l[i]))
            fail_msg("SELECT 1 failed on connection %d: %s", i + 1,
                     PQerrorMessage(dbpool_pg_conn(&l[i])));
    }
    for (int i = 0; i < size; i++)
        assert_int_equal(dbpool_checkin(&l[i]), 0);
}

/* ---------------------------------------------------------------------- */
/* idle pings                                                              */
/* ---------------------------------------------------------------------- */

/* Rule (DESIGN 4): every connection idle for one interval is pinged within
 * [interval, 2*interval) of its check-in. */
static void test_idle_ping_window(void **state)
{
    (void)state;
    const int64_t interval = 200;
    dbpool_config cfg;
    fast_config(&cfg, 2);
    cfg.idle_interval = interval;
    dbpool *p = itp_open(&srv, "it_lc_ping", &cfg);
    await_idle(p, 2, 10000);

    /* check both in at a known time */
    dbpool_lease a, b;
    assert_int_equal(dbpool_checkout(p, 1000, &a), 0);
    assert_int_equal(dbpool_checkout(p, 1000, &b), 0);
    dbpool_stats st0 = itp_stats(p);
    int64_t tc = pgt_now_ms();
    assert_int_equal(dbpool_checkin(&a), 0);
    assert_int_equal(dbpool_checkin(&b), 0);
    int64_t tc_end = pgt_now_ms();

    int64_t t_first = -1, t_both = -1;
    while (pgt_now_ms() - tc_end < 2000) {
        dbpool_stats st = itp_stats(p);
        int64_t now = pgt_now_ms();
        if (t_first < 0 && st.pings > st0.pings)
            t_first = now;
        if (st.pings >= st0.pings + 2) {
            t_both = now;
            break;
        }
        itp_sleep_ms(5);
    }
    if (t_both < 0) {
        char d[800];
        describe(p, d, sizeof d);
        fail_msg("both connections were not pinged within 2 s of check-in (%s)", d);
    }
    /* not before one interval of idleness (observation lags, so this is safe) */
    if (t_first - tc < interval - 5)
        fail_msg("first ping %lld ms after check-in, before one idle interval (%lld ms)",
                 (long long)(t_first - tc), (long long)interval);
    /* both within 2*interval (+150 ms margin for scheduling and the ping itself) */
    if (t_both - tc_end > 2 * interval + 150)
        fail_msg("second ping %lld ms after check-in, want < %lld", (long long)(t_both - tc_end),
                 (long long)(2 * interval + 150));

    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.ping_failures, st0.ping_failures);
    assert_int_equal(st.disconnects, st0.disconnects);
    assert_int_equal(st.idle, 2);
    /* the pings went to the server, to both backends */
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM pg_stat_activity WHERE "
                                         "application_name = 'it_lc_ping' AND query_start IS "
                                         "NOT NULL AND query_start > now() - interval '2 s'"),
                     2);
    assert_int_equal(itp_close(p), 0);
}

/* idle_limit 1: one ping per tick, never two, and the connections take turns. */
static void test_idle_limit_staggers(void **state)
{
    (void)state;
    const int64_t interval = 200;
    dbpool_config cfg;
    fast_config(&cfg, 2);
    cfg.idle_interval = interval;
    cfg.idle_limit = 1;
    dbpool *p = itp_open(&srv, "it_lc_pinglimit", &cfg);
    await_idle(p, 2, 10000);

    enum { MAXS = 200 };
    int64_t ts[MAXS];
    uint64_t pings[MAXS];
    int n = 0;
    int64_t start = pgt_now_ms();
    while (n < MAXS && pgt_now_ms() - start < 1500) {
        dbpool_stats st = itp_stats(p);
        ts[n] = pgt_now_ms();
        pings[n] = st.pings;
        n++;
        itp_sleep_ms(20);
    }
    assert_true(n > 20);

    uint64_t max_inc = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n && ts[j] - ts[i] < 100; j++)
            if (pings[j] - pings[i] > max_inc)
                max_inc = pings[j] - pings[i];
    uint64_t total = pings[n - 1] - pings[0];
    int64_t span = ts[n - 1] - ts[0];
    if (max_inc > 1)
        fail_msg("pings grew by %llu within 100 ms with idle_limit=1", (unsigned long long)max_inc);
    /* ~one per 200 ms tick: about 7 in 1.5 s; 2 per tick would give ~15 */
    if (total < 3 || (int64_t)total > span / interval + 2)
        fail_msg("%llu pings in %lld ms with idle_interval %lld and idle_limit 1",
                 (unsigned long long)total, (long long)span, (long long)interval);

    /* oldest first: both connections are pinged in turn (each every ~2 ticks) */
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM pg_stat_activity WHERE "
                                         "application_name = 'it_lc_pinglimit' AND query_start "
                                         "> now() - interval '900 ms'"),
                     2);
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.ping_failures, 0);
    assert_int_equal(st.idle, 2);
    assert_int_equal(itp_close(p), 0);
}

/* ---------------------------------------------------------------------- */
/* killed connections                                                      */
/* ---------------------------------------------------------------------- */

static void test_killed_idle_replaced(void **state)
{
    (void)state;
    const char *app = "it_lc_kill_idle";
    dbpool_config cfg;
    fast_config(&cfg, 2);
    dbpool *p = itp_open(&srv, app, &cfg);
    await_idle(p, 2, 10000);
    assert_true(itp_wait_backends(&srv, app, 2, 3000));
    int old[2];
    assert_int_equal(app_pids(app, old, 2), 2);
    dbpool_stats st0 = itp_stats(p);

    assert_int_equal(pgt_terminate(&srv, app), 2);

    /* detected (ping or socket) and replaced by new backends */
    await_stats(p, pred_disconnects_ge, (int64_t)st0.disconnects + 2, 3000,
                "both killed connections to be detected");
    if (!wait_all_replaced(app, old, 2, 2, 5000))
        fail_msg("killed backends were not replaced by 2 new ones");
    await_idle(p, 2, 3000);
    dbpool_stats st = itp_stats(p);
    assert_true(st.connects >= st0.connects + 2);
    assert_int_equal(st.state, DBPOOL_STATE_UP);
    all_usable(p, 2);
    assert_int_equal(itp_close(p), 0);
}

static void test_killed_while_checked_out(void **state)
{
    (void)state;
    const char *app = "it_lc_kill_held";
    dbpool_config cfg;
    fast_config(&cfg, 2);
    dbpool *p = itp_open(&srv, app, &cfg);
    await_idle(p, 2, 10000);
    int both[2];
    assert_true(itp_wait_backends(&srv, app, 2, 3000));
    assert_int_equal(app_pids(app, both, 2), 2);

    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 1000, &l), 0);
    PGconn *c = dbpool_pg_conn(&l);
    int pid = PQbackendPID(c);
    int other = both[0] == pid ? both[1] : both[0];
    assert_true(pid == both[0] || pid == both[1]);

    char sql[256];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)::int", pid);
    assert_int_equal(pgt_query_int(&srv, sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    assert_true(wait_sql(sql, 0, 3000));

    /* the holder's query fails: the connection is gone */
    PGresult *r = PQexec(c, "SELECT 1");
    assert_int_not_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    assert_int_equal(PQstatus(c), CONNECTION_BAD);

    dbpool_stats st0 = itp_stats(p);
    assert_int_equal(dbpool_checkin(&l), 0);
    await_stats(p, pred_disconnects_ge, (int64_t)st0.disconnects + 1, 2000,
                "the broken connection to be discarded");
    int old[1] = {pid};
    if (!wait_all_replaced(app, old, 1, 2, 5000))
        fail_msg("the killed connection was not replaced");
    await_idle(p, 2, 3000);
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.disconnects, st0.disconnects + 1);
    /* the other connection was left alone */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", other);
    assert_int_equal(pgt_query_int(&srv, sql), 1);
    all_usable(p, 2);
    assert_int_equal(itp_close(p), 0);
}

/* ---------------------------------------------------------------------- */
/* server outage: backoff and recovery                                     */
/* ---------------------------------------------------------------------- */

static void test_outage_backoff_and_recovery(void **state)
{
    (void)state;
    const char *app = "it_lc_outage";
    dbpool_config cfg;
    fast_config(&cfg, 2);
    cfg.backoff_min = 100;
    cfg.backoff_max = 400;
    cfg.log_level = DBPOOL_LOG_NONE; /* the outage is expected */
    dbpool *p = itp_open(&srv, app, &cfg);
    await_idle(p, 2, 10000);
    dbpool_stats st0 = itp_stats(p);
    assert_int_equal(st0.state, DBPOOL_STATE_UP);

    assert_int_equal(pgt_stop(&srv, "fast"), 0);

    await_stats(p, pred_connect_failures_ge, (int64_t)st0.connect_failures + 2, 3000,
                "connect failures after the server stopped");
    await_stats(p, pred_state_eq, DBPOOL_STATE_DOWN, 3000, "state DOWN");
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.busy, 0);
    assert_true(strlen(st.last_error) > 0);

    /* backoff: retries keep going, but paced by 100..400 ms per slot */
    uint64_t f0 = st.connect_failures;
    int64_t t0 = pgt_now_ms();
    itp_sleep_ms(1000); /* measuring a rate over a fixed window, not synchronising */
    st = itp_stats(p);
    int64_t span = pgt_now_ms() - t0;
    uint64_t df = st.connect_failures - f0;
    if (df < 2 || (int64_t)df > 2 * (span / 100 + 1) + 2)
        fail_msg("%llu connect failures in %lld ms on 2 slots with backoff 100..400 ms",
                 (unsigned long long)df, (long long)span);
    assert_int_equal(st.idle, 0);

    /* checkouts fail within their deadline */
    dbpool_lease l;
    t0 = pgt_now_ms();
    int rc = dbpool_checkout(p, 300, &l);
    int64_t el = pgt_now_ms() - t0;
    if (rc == 0) {
        (void)dbpool_checkin(&l);
        fail_msg("checkout succeeded while the server is down");
    }
    if (rc != DBPOOL_EUNAVAILABLE && rc != DBPOOL_ETIMEDOUT)
        fail_msg("checkout while down: %d (%s), want EUNAVAILABLE or ETIMEDOUT", rc,
                 dbpool_strerror(rc));
    assert_true(el < 300 + 200);
    assert_true(strlen(dbpool_last_error()) > 0);

    /* recovery */
    assert_int_equal(pgt_resume(&srv), 0);
    int64_t tr = pgt_now_ms();
    await_idle(p, 2, 5000);
    st = itp_stats(p);
    assert_int_equal(st.state, DBPOOL_STATE_UP);
    /* bounded by backoff_max plus connect time, loosely */
    assert_true(pgt_now_ms() - tr < 3000);
    all_usable(p, 2);
    assert_int_equal(itp_close(p), 0);
}

static void test_backoff_stop_and_restart(void **state)
{
    (void)state;
    const char *app = "it_lc_stop";
    dbpool_config cfg;
    fast_config(&cfg, 2);
    cfg.backoff_type = DBPOOL_BACKOFF_STOP;
    cfg.log_level = DBPOOL_LOG_NONE;
    dbpool *p = itp_open(&srv, app, &cfg);
    await_idle(p, 2, 10000);

    assert_int_equal(pgt_stop(&srv, "fast"), 0);
    await_stats(p, pred_state_eq, DBPOOL_STATE_STOPPED, 3000, "state STOPPED");
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.stopped, 2);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.connecting, 0);
    assert_int_equal(st.backoff, 0);

    dbpool_lease l;
    int64_t t0 = pgt_now_ms();
    int rc = dbpool_checkout(p, 1000, &l);
    int64_t el = pgt_now_ms() - t0;
    assert_int_equal(rc, DBPOOL_EUNAVAILABLE);
    assert_true(el < 50);

    /* no retry on its own, even with the server back */
    assert_int_equal(pgt_resume(&srv), 0);
    dbpool_stats before = itp_stats(p);
    itp_sleep_ms(700); /* asserting that nothing happens: > backoff_max and 3 idle ticks */
    st = itp_stats(p);
    assert_int_equal(st.state, DBPOOL_STATE_STOPPED);
    assert_int_equal(st.connects, before.connects);
    assert_int_equal(st.connect_failures, before.connect_failures);
    assert_int_equal(st.idle, 0);
    assert_int_equal(pgt_count_backends(&srv, app), 0);
    t0 = pgt_now_ms();
    assert_int_equal(dbpool_checkout(p, 1000, &l), DBPOOL_EUNAVAILABLE);
    assert_true(pgt_now_ms() - t0 < 50);

    assert_int_equal(dbpool_restart(p), 0);
    await_stats(p, pred_state_eq, DBPOOL_STATE_UP, 3000, "state UP after restart");
    await_idle(p, 2, 3000);
    assert_int_equal(itp_stats(p).stopped, 0);
    assert_true(itp_wait_backends(&srv, app, 2, 3000));
    all_usable(p, 2);
    assert_int_equal(dbpool_restart(NULL), DBPOOL_EINVAL);
    assert_int_equal(itp_close(p), 0);
}

/* ---------------------------------------------------------------------- */
/* hold_timeout                                                            */
/* ---------------------------------------------------------------------- */

static void test_hold_timeout_cancels(void **state)
{
    (void)state;
    const char *app = "it_lc_hold";
    dbpool_config cfg;
    fast_config(&cfg, 1);
    cfg.hold_timeout = 500;
    cfg.log_level = DBPOOL_LOG_ERROR;
    dbpool *p = itp_open(&srv, app, &cfg);
    await_idle(p, 1, 10000);

    dbpool_lease l;
    int64_t t0 = pgt_now_ms();
    assert_int_equal(dbpool_checkout(p, 1000, &l), 0);
    PGconn *c = dbpool_pg_conn(&l);
    int pid = PQbackendPID(c);
    PGresult *r = PQexec(c, "SELECT pg_sleep(10)");
    int64_t el = pgt_now_ms() - t0;
    ExecStatusType rs = PQresultStatus(r);
    const char *sqlstate = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    char code[8] = "";
    if (sqlstate)
        snprintf(code, sizeof code, "%s", sqlstate);
    PQclear(r);
    assert_int_equal(rs, PGRES_FATAL_ERROR);
    assert_string_equal(code, "57014"); /* query_canceled */
    if (el < 450 || el >= 500 + 1000)
        fail_msg("query cancelled after %lld ms with hold_timeout 500", (long long)el);

    assert_int_equal(dbpool_lease_check(&l), DBPOOL_EEXPIRED);
    await_stats(p, pred_hold_timeouts_ge, 1, 1000, "hold_timeouts counter");
    assert_int_equal(dbpool_checkin(&l), DBPOOL_EEXPIRED);
    assert_int_equal(dbpool_lease_check(&l), DBPOOL_ESTALE);
    int double_checkin = dbpool_checkin(&l); /* checked at the end */

    /* the connection is replaced */
    int old[1] = {pid};
    if (!wait_all_replaced(app, old, 1, 1, 5000))
        fail_msg("the expired connection was not replaced");
    await_idle(p, 1, 3000);
    assert_int_equal(dbpool_checkout(p, 1000, &l), 0);
    assert_int_not_equal(PQbackendPID(dbpool_pg_conn(&l)), pid);
    assert_true(itp_select1(&l));
    assert_int_equal(dbpool_lease_check(&l), 0);
    assert_int_equal(dbpool_checkin(&l), 0);
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.hold_timeouts, 1);
    assert_int_equal(itp_close(p), 0);
    /* dbpool.h: "DBPOOL_ESTALE for a lease already checked in" */
    assert_int_equal(double_checkin, DBPOOL_ESTALE);
}

/* ---------------------------------------------------------------------- */
/* recycling                                                               */
/* ---------------------------------------------------------------------- */

static void test_max_lifetime_recycles(void **state)
{
    (void)state;
    const char *app = "it_lc_lifetime";
    dbpool_config cfg;
    fast_config(&cfg, 2);
    cfg.max_lifetime = 500;
    cfg.idle_interval = 100;
    dbpool *p = itp_open(&srv, app, &cfg);
    await_idle(p, 2, 10000);
    assert_true(itp_wait_backends(&srv, app, 2, 3000));
    int old[2];
    assert_int_equal(app_pids(app, old, 2), 2);
    dbpool_stats st0 = itp_stats(p);
    int64_t t0 = pgt_now_ms();

    char sql[1024];
    pid_sql(sql, sizeof sql, app, "IN", old, 2);
    int replaced = 0, cycles = 0;
    while (pgt_now_ms() - t0 < 3000) {
        dbpool_lease l;
        int rc = dbpool_checkout(p, 1000, &l);
        if (rc != 0)
            fail_msg("checkout failed during recycling: %s: %s", dbpool_strerror(rc),
                     dbpool_last_error());
        if (!itp_select1(&l))
            fail_msg("SELECT 1 failed during recycling");
        assert_int_equal(dbpool_checkin(&l), 0);
        cycles++;
        if (pgt_query_int(&srv, sql) == 0 && pgt_count_backends(&srv, app) == 2) {
            replaced = 1;
            break;
        }
        itp_sleep_ms(20);
    }
    if (!replaced) {
        char d[800];
        describe(p, d, sizeof d);
        fail_msg("original backends still there after 3 s with max_lifetime 500 (%s)", d);
    }
    int64_t span = pgt_now_ms() - t0;
    dbpool_stats st = itp_stats(p);
    assert_true(st.disconnects >= st0.disconnects + 2);
    /* not churning: each connection lives at least ~450 ms (500 - 10% jitter) */
    uint64_t dc = st.connects - st0.connects;
    if ((int64_t)dc > 2 * (span / 450 + 1) + 1)
        fail_msg("%llu connects in %lld ms with max_lifetime 500 on 2 slots",
                 (unsigned long long)dc, (long long)span);
    assert_true(cycles > 0);
    all_usable(p, 2);
    assert_int_equal(itp_close(p), 0);
}

static void test_reconnect(void **state)
{
    (void)state;
    const char *app = "it_lc_reconnect";
    dbpool_config cfg;
    fast_config(&cfg, 2);
    cfg.idle_interval = 200;
    dbpool *p = itp_open(&srv, app, &cfg);
    await_idle(p, 2, 10000);
    assert_true(itp_wait_backends(&srv, app, 2, 3000));
    int old[2];
    assert_int_equal(app_pids(app, old, 2), 2);

    /* hold one connection across the reconnect: it must not be touched */
    dbpool_lease held;
    assert_int_equal(dbpool_checkout(p, 1000, &held), 0);
    int held_pid = PQbackendPID(dbpool_pg_conn(&held));
    int idle_pid = old[0] == held_pid ? old[1] : old[0];

    assert_int_equal(dbpool_reconnect(p), 0);
    int gone[1] = {idle_pid};
    if (!wait_all_replaced(app, gone, 1, 2, 5 * 200 + 1000))
        fail_msg("idle connection not recycled after dbpool_reconnect");
    /* the held one still works and is the same backend */
    assert_int_equal(dbpool_lease_check(&held), 0);
    assert_true(itp_select1(&held));
    assert_int_equal(PQbackendPID(dbpool_pg_conn(&held)), held_pid);

    /* recycled at its check-in */
    assert_int_equal(dbpool_checkin(&held), 0);
    if (!wait_all_replaced(app, old, 2, 2, 5 * 200 + 1000))
        fail_msg("held connection not recycled at check-in after dbpool_reconnect");
    await_idle(p, 2, 3000);
    all_usable(p, 2);

    /* a second reconnect of an all-idle pool changes every PID */
    int cur[2];
    assert_int_equal(app_pids(app, cur, 2), 2);
    assert_int_equal(dbpool_reconnect(p), 0);
    if (!wait_all_replaced(app, cur, 2, 2, 5 * 200 + 1000))
        fail_msg("idle connections not recycled after dbpool_reconnect");
    await_idle(p, 2, 3000);
    all_usable(p, 2);
    assert_int_equal(dbpool_reconnect(NULL), DBPOOL_EINVAL);
    assert_int_equal(itp_close(p), 0);
}

/* ---------------------------------------------------------------------- */
/* after_connect                                                           */
/* ---------------------------------------------------------------------- */

/* A connection the server closed while it sat idle (idle_session_timeout) is
 * never handed out: the checkout checks it (alive_check) and replaces it. */
/* The backend process `pid` has exited (its socket is closed with it). */
static int backend_gone(void *arg)
{
    pid_t pid = (pid_t)(intptr_t)arg;
    return kill(pid, 0) != 0 && errno == ESRCH;
}

static void test_alive_check_replaces_dead_idle(void **state)
{
    (void)state;
    dbpool_config cfg;
    fast_config(&cfg, 2);
    cfg.min_size = -1;
    cfg.idle_interval = 60000; /* no pings: only the checkout can find out */
    cfg.alive_check = 100;
    cfg.after_connect = "SET idle_session_timeout = 300";
    dbpool *p = itp_open(&srv, "lc_alive", &cfg);
    await_idle(p, 2, 5000);
    dbpool_lease a, b;
    pid_t pids[2];
    /* the backends' pids, taken while the sessions are fresh */
    assert_int_equal(dbpool_checkout(p, 5000, &a), 0);
    assert_int_equal(dbpool_checkout(p, 5000, &b), 0);
    pids[0] = PQbackendPID(dbpool_pg_conn(&a));
    pids[1] = PQbackendPID(dbpool_pg_conn(&b));
    assert_int_equal(dbpool_checkin(&a), 0);
    assert_int_equal(dbpool_checkin(&b), 0);
    for (int round = 0; round < 5; round++) {
        /* the server ends both sessions (idle_session_timeout): wait until
         * their backend processes have exited, which closes their sockets,
         * so the test depends neither on how late a loaded server enforces
         * the timeout nor on when the close reaches us (a backend leaves
         * pg_stat_activity before its process exits) */
        assert_true(itp_wait_backends(&srv, "lc_alive", 0, 10000));
        for (int i = 0; i < 2; i++)
            assert_true(pgt_wait_for(backend_gone, (void *)(intptr_t)pids[i], 10000));
        assert_int_equal(dbpool_checkout(p, 5000, &a), 0);
        assert_int_equal(dbpool_checkout(p, 5000, &b), 0);
        assert_true(itp_select1(&a));
        assert_true(itp_select1(&b));
        pids[0] = PQbackendPID(dbpool_pg_conn(&a));
        pids[1] = PQbackendPID(dbpool_pg_conn(&b));
        assert_int_equal(dbpool_checkin(&a), 0);
        assert_int_equal(dbpool_checkin(&b), 0);
    }
    dbpool_stats st = itp_stats(p);
    assert_true(st.disconnects >= 2); /* the dead ones were replaced */
    assert_int_equal(itp_close(p), 0);
}

/* Server notices (and libpq's own) reach the pool's log_cb with the pool's
 * name and a level from their severity, not libpq's raw stderr. */
static atomic_int notice_warnings;
static char notice_pool[64];

static void notice_log(void *arg, dbpool_log_level level, const char *pool, const char *msg)
{
    (void)arg;
    if (strstr(msg, "dbpool-notice-test") && level == DBPOOL_LOG_WARNING) {
        snprintf(notice_pool, sizeof notice_pool, "%s", pool);
        atomic_fetch_add(&notice_warnings, 1);
    }
}

static int notice_seen(void *arg)
{
    (void)arg;
    return atomic_load(&notice_warnings) > 0;
}

static void test_notices_go_to_log_cb(void **state)
{
    (void)state;
    dbpool_config cfg;
    fast_config(&cfg, 1);
    cfg.min_size = -1;
    cfg.name = "notice_pool";
    cfg.log_cb = notice_log;
    cfg.log_level = DBPOOL_LOG_INFO;
    cfg.after_connect = "DO $$BEGIN RAISE WARNING 'dbpool-notice-test'; END$$";
    atomic_store(&notice_warnings, 0);
    dbpool *p = itp_open(&srv, "lc_notice", &cfg);
    assert_true(pgt_wait_for(notice_seen, NULL, 5000));
    assert_string_equal(notice_pool, "notice_pool");
    assert_int_equal(itp_close(p), 0);
}

static void test_after_connect(void **state)
{
    (void)state;
    dbpool_config cfg;
    fast_config(&cfg, 2);
    cfg.after_connect = "SET application_name = 'ac_test'";
    dbpool *p = itp_open(&srv, "it_lc_ac_base", &cfg);
    await_idle(p, 2, 10000);
    assert_true(itp_wait_backends(&srv, "ac_test", 2, 3000));
    assert_int_equal(pgt_count_backends(&srv, "it_lc_ac_base"), 0);

    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 1000, &l), 0);
    PGresult *r = PQexec(dbpool_pg_conn(&l), "SHOW application_name");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "ac_test");
    PQclear(r);
    assert_int_equal(PQtransactionStatus(dbpool_pg_conn(&l)), PQTRANS_IDLE);
    assert_int_equal(dbpool_checkin(&l), 0);
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.connect_failures, 0);
    assert_int_equal(itp_close(p), 0);
    assert_true(itp_wait_backends(&srv, "ac_test", 0, 3000));
}

static void test_after_connect_failure(void **state)
{
    (void)state;
    const char *app = "it_lc_ac_fail";
    dbpool_config cfg;
    fast_config(&cfg, 2);
    cfg.after_connect = "SELECT * FROM no_such_table";
    cfg.log_level = DBPOOL_LOG_NONE;
    dbpool *p = itp_open(&srv, app, &cfg);

    await_stats(p, pred_connect_failures_ge, 2, 3000, "after_connect failures");
    uint64_t f0 = itp_stats(p).connect_failures;
    await_stats(p, pred_connect_failures_ge, (int64_t)f0 + 2, 3000,
                "after_connect failures to keep growing (backoff retries)");
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.busy, 0);
    assert_int_not_equal(st.state, DBPOOL_STATE_UP);
    char last_error[sizeof st.last_error];
    snprintf(last_error, sizeof last_error, "%s", st.last_error);

    dbpool_lease l;
    int64_t t0 = pgt_now_ms();
    int rc = dbpool_checkout(p, 300, &l);
    int64_t el = pgt_now_ms() - t0;
    if (rc == 0) {
        (void)dbpool_checkin(&l);
        fail_msg("checkout succeeded although after_connect always fails");
    }
    assert_true(rc == DBPOOL_EUNAVAILABLE || rc == DBPOOL_ETIMEDOUT);
    assert_true(el < 300 + 200);
    assert_int_equal(itp_close(p), 0);
    assert_true(itp_wait_backends(&srv, app, 0, 3000));
    /* checked last so the checks above run even if it fails */
    if (!strstr(last_error, "no_such_table"))
        fail_msg("last_error does not name the failing after_connect: \"%s\"", last_error);
}

/* ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (pgt_start(&srv) != 0) {
        fprintf(stderr, "it_lifecycle: could not start PostgreSQL\n");
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
        cmocka_unit_test_teardown(test_idle_ping_window, test_teardown),
        cmocka_unit_test_teardown(test_idle_limit_staggers, test_teardown),
        cmocka_unit_test_teardown(test_killed_idle_replaced, test_teardown),
        cmocka_unit_test_teardown(test_killed_while_checked_out, test_teardown),
        cmocka_unit_test_teardown(test_hold_timeout_cancels, test_teardown),
        cmocka_unit_test_teardown(test_max_lifetime_recycles, test_teardown),
        cmocka_unit_test_teardown(test_reconnect, test_teardown),
        cmocka_unit_test_teardown(test_after_connect, test_teardown),
        cmocka_unit_test_teardown(test_notices_go_to_log_cb, test_teardown),
        cmocka_unit_test_teardown(test_alive_check_replaces_dead_idle, test_teardown),
        cmocka_unit_test_teardown(test_after_connect_failure, test_teardown),
        cmocka_unit_test_teardown(test_outage_backoff_and_recovery, test_teardown),
        cmocka_unit_test_teardown(test_backoff_stop_and_restart, test_teardown),
    };
    return cmocka_run_group_tests_name("it_lifecycle", tests, group_setup, group_teardown);
}
