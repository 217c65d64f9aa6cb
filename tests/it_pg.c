/* it_pg.c - integration tests of the PostgreSQL query helpers, transactions
 * and prepared-statement cache (src/pg/pg_query.c) against a real PostgreSQL.
 *
 * One throwaway server for the whole file. Every test uses its own
 * application_name and its own tables. Faults come from the server itself
 * (pg_terminate_backend, pg_sleep) or from the TCP fault relay
 * (tools/relay/relay.h) for the cases a server cannot produce: a partition
 * while a cancel or a COMMIT is in flight. Every wait is bounded. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "pgserver.h"
#include "relay.h"

static pgt_server srv;

/* ---------------------------------------------------------------------- */
/* helpers                                                                 */
/* ---------------------------------------------------------------------- */

#define MAX_POOLS 4
static dbpool *g_pools[MAX_POOLS];
static relay *g_relay;
static int g_hung;

static void fast_config(dbpool_config *cfg, int size)
{
    dbpool_config_init(cfg);
    cfg->size = size;
    cfg->idle_interval = 60000; /* no pings: tests decide when a connection is looked at */
    cfg->alive_check = 0;       /* nor the check before hand-out: a slow run would let it
                                   replace a killed connection before the helpers meet it */
    cfg->backoff_min = 50;
    cfg->backoff_max = 300;
    cfg->connect_timeout = 2000;
    cfg->checkout_timeout = 5000;
    cfg->log_level = DBPOOL_LOG_NONE;
}

static dbpool *open_pool_ci(const char *conninfo, const dbpool_config *cfg)
{
    dbpool *p = NULL;
    int rc = dbpool_pg_open(&p, conninfo, cfg);
    if (rc != 0)
        fail_msg("dbpool_pg_open: %d %s", rc, dbpool_last_error());
    for (int i = 0; i < MAX_POOLS; i++)
        if (!g_pools[i]) {
            g_pools[i] = p;
            return p;
        }
    fail_msg("too many pools in one test");
    return NULL;
}

static dbpool *open_pool(const char *app, int size)
{
    char ci[700];
    dbpool_config cfg;
    fast_config(&cfg, size);
    snprintf(ci, sizeof ci, "%s application_name=%s", srv.conninfo, app);
    return open_pool_ci(ci, &cfg);
}

/* A pool whose connections go through a fresh fault relay. */
static dbpool *open_relayed_pool(const char *app, int size)
{
    char ci[700];
    dbpool_config cfg;
    assert_int_equal(relay_start(&g_relay, "127.0.0.1", srv.port), 0);
    fast_config(&cfg, size);
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres application_name=%s",
             relay_port(g_relay), app);
    return open_pool_ci(ci, &cfg);
}

static int test_teardown(void **state)
{
    (void)state;
    if (g_relay)
        relay_set_mode(g_relay, RELAY_PASS);
    for (int i = 0; i < MAX_POOLS; i++) {
        if (g_pools[i] && !g_hung)
            (void)dbpool_close(g_pools[i]);
        g_pools[i] = NULL;
    }
    if (g_relay && !g_hung) {
        relay_stop(g_relay);
        g_relay = NULL;
    }
    return 0;
}

static int64_t ms_since(int64_t t0)
{
    return pgt_now_ms() - t0;
}

/* A query returning one integer, through the helper; fails the test on error. */
static int64_t q_int(dbpool *p, const char *sql)
{
    dbpool_pg_result r;
    int rc = dbpool_pg_query(p, sql, NULL, NULL, &r);
    if (rc != 0)
        fail_msg("%s: %d %s", sql, rc, dbpool_last_error());
    assert_int_equal(PQntuples(r.res), 1);
    int64_t v = strtoll(PQgetvalue(r.res, 0, 0), NULL, 10);
    dbpool_pg_result_clear(&r);
    return v;
}

static int64_t backend_pid(dbpool *p)
{
    return q_int(p, "SELECT pg_backend_pid()");
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

static void server_exec(const char *sql)
{
    if (pgt_exec(&srv, sql) != 0)
        fail_msg("setup SQL failed: %s", sql);
}

static void await_idle(dbpool *p, int n)
{
    int64_t t0 = pgt_now_ms();
    for (;;) {
        dbpool_stats st;
        assert_int_equal(dbpool_stats_get(p, &st), 0);
        if (st.idle == n)
            return;
        if (ms_since(t0) > 10000)
            fail_msg("pool never reached idle=%d (idle=%d busy=%d connecting=%d state=%s %s)", n,
                     st.idle, st.busy, st.connecting, dbpool_state_name(st.state), st.last_error);
        usleep(10000);
    }
}

static int active_queries(const char *app, const char *like)
{
    return (int)server_int("SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s' "
                           "AND state = 'active' AND query LIKE '%s'",
                           app, like);
}

static pthread_t thr_start(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

static int thr_join(pthread_t t, int64_t timeout_ms)
{
    int rc = pgt_join(t, timeout_ms);
    if (rc != 0)
        g_hung = 1;
    return rc;
}

static void opts_timeout(dbpool_pg_opts *o, int64_t timeout, int64_t grace)
{
    dbpool_pg_opts_init(o);
    o->statement_timeout = timeout;
    o->cancel_grace = grace;
}

/* ---------------------------------------------------------------------- */
/* query helpers                                                           */
/* ---------------------------------------------------------------------- */

static void test_query_text_params(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_text", 2);
    const char *v[] = {"20", "22", NULL};
    dbpool_pg_params prm = {.n = 3, .values = v};
    dbpool_pg_result r;

    assert_int_equal(
        dbpool_pg_query(p, "SELECT $1::int + $2::int, $3::text IS NULL", &prm, NULL, &r), 0);
    assert_int_equal(PQresultStatus(r.res), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r.res, 0, 0), "42");
    assert_string_equal(PQgetvalue(r.res, 0, 1), "t");
    assert_string_equal(r.sqlstate, "");
    assert_int_equal(r.sent, 1);
    assert_int_equal(r.retries, 0);
    assert_true(r.db_us > 0);
    assert_true(r.queue_us >= 0);
    dbpool_pg_result_clear(&r);
    assert_null(r.res);
    dbpool_pg_result_clear(NULL);

    /* out may be NULL; a command without rows */
    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, NULL, NULL), 0);
    /* bad arguments */
    assert_int_equal(dbpool_pg_query(NULL, "SELECT 1", NULL, NULL, &r), DBPOOL_EINVAL);
    assert_int_equal(dbpool_pg_query(p, NULL, NULL, NULL, &r), DBPOOL_EINVAL);
    dbpool_pg_opts o;
    dbpool_pg_opts_init(&o);
    o.statement_timeout = -1;
    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, &o, &r), DBPOOL_EINVAL);
    dbpool_pg_params bad = {.n = 1, .values = NULL};
    assert_int_equal(dbpool_pg_query(p, "SELECT $1", &bad, NULL, &r), DBPOOL_EINVAL);
    /* more than one statement is an SQL error of the extended protocol */
    assert_int_equal(dbpool_pg_query(p, "SELECT 1; SELECT 2", NULL, NULL, &r), DBPOOL_EQUERY);
    assert_string_equal(r.sqlstate, "42601");
    dbpool_pg_result_clear(&r);
}

static void test_query_binary_params(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_binary", 1);
    uint32_t be = htonl(41);
    const char *v[] = {(const char *)&be};
    const int len[] = {4}, fmt[] = {1};
    const Oid types[] = {23}; /* int4 */
    dbpool_pg_params prm = {
        .n = 1, .types = types, .values = v, .lengths = len, .formats = fmt, .result_format = 1};
    dbpool_pg_result r;

    for (int cached = 0; cached < 2; cached++) {
        int rc = cached ? dbpool_pg_query_prepared(p, "SELECT $1 + 1", &prm, NULL, &r)
                        : dbpool_pg_query(p, "SELECT $1 + 1", &prm, NULL, &r);
        assert_int_equal(rc, 0);
        assert_int_equal(PQfformat(r.res, 0), 1);
        assert_int_equal(PQgetlength(r.res, 0, 0), 4);
        uint32_t out;
        memcpy(&out, PQgetvalue(r.res, 0, 0), 4);
        assert_int_equal(ntohl(out), 42);
        dbpool_pg_result_clear(&r);
    }
}

static void test_sql_error_keeps_connection(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_sqlerr", 1);
    server_exec("DROP TABLE IF EXISTS e1; CREATE TABLE e1 (id int PRIMARY KEY)");
    int64_t pid = backend_pid(p);
    dbpool_pg_result r;

    assert_int_equal(dbpool_pg_query(p, "SELECT * FROM no_such_table", NULL, NULL, &r),
                     DBPOOL_EQUERY);
    assert_string_equal(r.sqlstate, "42P01");
    assert_non_null(r.res);
    assert_string_equal(PQresultErrorField(r.res, PG_DIAG_SQLSTATE), "42P01");
    assert_non_null(strstr(dbpool_last_error(), "no_such_table"));
    assert_non_null(strstr(dbpool_last_error(), "42P01"));
    assert_int_equal(r.sent, 1);
    dbpool_pg_result_clear(&r);

    assert_int_equal(dbpool_pg_query(p, "INSERT INTO e1 VALUES (1)", NULL, NULL, NULL), 0);
    assert_int_equal(dbpool_pg_query(p, "INSERT INTO e1 VALUES (1)", NULL, NULL, &r),
                     DBPOOL_EQUERY);
    assert_string_equal(r.sqlstate, "23505");
    assert_non_null(strstr(dbpool_last_error(), "DETAIL"));
    dbpool_pg_result_clear(&r);

    /* the same backend served everything: SQL errors keep the connection */
    assert_int_equal(backend_pid(p), pid);
    dbpool_stats st;
    assert_int_equal(dbpool_stats_get(p, &st), 0);
    assert_int_equal((int)st.disconnects, 0);
}

static void test_statement_timeout_cancels(void **state)
{
    (void)state;
    const char *app = "it_pg_timeout";
    dbpool *p = open_pool(app, 1);
    int64_t pid = backend_pid(p);
    dbpool_pg_opts o;
    dbpool_pg_result r;

    opts_timeout(&o, 300, 2000);
    int64_t t0 = pgt_now_ms();
    assert_int_equal(dbpool_pg_query(p, "SELECT pg_sleep(10)", NULL, &o, &r), DBPOOL_ETIMEDOUT);
    int64_t took = ms_since(t0);
    assert_true(took >= 280);
    assert_true(took < 2000);
    assert_string_equal(r.sqlstate, "57014");
    assert_null(r.res);
    assert_non_null(strstr(dbpool_last_error(), "cancelled on the server"));
    dbpool_pg_result_clear(&r);

    /* cancelled server-side, connection kept */
    assert_int_equal(active_queries(app, "%pg_sleep%"), 0);
    assert_int_equal(backend_pid(p), pid);

    /* the prepared path and a lease-level call time out the same way */
    assert_int_equal(dbpool_pg_query_prepared(p, "SELECT pg_sleep(10)", NULL, &o, NULL),
                     DBPOOL_ETIMEDOUT);
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 2000, &l), 0);
    assert_int_equal(dbpool_pg_exec(&l, "SELECT pg_sleep(10)", NULL, &o, NULL), DBPOOL_ETIMEDOUT);
    assert_int_equal(dbpool_pg_exec(&l, "SELECT 1", NULL, &o, NULL), 0);
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(backend_pid(p), pid);

    /* statement_timeout 0: no limit */
    opts_timeout(&o, 0, 1000);
    assert_int_equal(dbpool_pg_query(p, "SELECT pg_sleep(0.2)", NULL, &o, NULL), 0);
}

/* The server cannot be reached while the query runs: the cancel request
 * cannot be delivered, so the call gives up after cancel_grace and the
 * connection is discarded rather than reused with a cancel still in flight.
 * Nothing proves the statement did not run: the outcome is unknown. */
static void test_timeout_unanswered_discards(void **state)
{
    (void)state;
    dbpool *p = open_relayed_pool("it_pg_partition", 1);
    await_idle(p, 1);
    dbpool_pg_opts o;
    dbpool_pg_result r;

    opts_timeout(&o, 300, 300);
    assert_int_equal(relay_set_mode(g_relay, RELAY_BLACKHOLE), 0);
    int64_t t0 = pgt_now_ms();
    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, &o, &r), DBPOOL_EUNKNOWN);
    int64_t took = ms_since(t0);
    assert_true(took >= 550);
    assert_true(took < 1500);
    assert_non_null(strstr(dbpool_last_error(), "connection discarded"));
    assert_non_null(strstr(dbpool_last_error(), "may or may not have run"));
    assert_int_equal(r.sent, 1);
    dbpool_pg_result_clear(&r);
    assert_int_equal(relay_set_mode(g_relay, RELAY_PASS), 0);

    dbpool_stats st;
    assert_int_equal(dbpool_stats_get(p, &st), 0);
    assert_true(st.disconnects >= 1);
    /* a fresh connection serves the next call */
    dbpool_pg_opts_init(&o);
    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, &o, NULL), 0);
}

struct sleeper {
    dbpool *pool;
    int rc;
    dbpool_pg_result r;
};

static void *sleeper_fn(void *arg)
{
    struct sleeper *s = arg;
    s->rc = dbpool_pg_query(s->pool, "SELECT pg_sleep(5)", NULL, NULL, &s->r);
    return NULL;
}

/* Lost while the query ran: it may have executed, so no retry. */
static void test_connection_lost_not_retried(void **state)
{
    (void)state;
    const char *app = "it_pg_lost";
    dbpool *p = open_pool(app, 1);
    await_idle(p, 1);
    struct sleeper s = {.pool = p};
    int64_t t0 = pgt_now_ms();
    pthread_t t = thr_start(sleeper_fn, &s);
    while (active_queries(app, "%pg_sleep%") == 0 && ms_since(t0) < 3000)
        usleep(10000);
    assert_int_equal(pgt_terminate(&srv, app), 1);
    assert_int_equal(thr_join(t, 5000), 0);
    assert_int_equal(s.rc, DBPOOL_ECONNLOST);
    assert_int_equal(s.r.sent, 1);
    assert_int_equal(s.r.retries, 0);
    assert_null(s.r.res);
    /* the server said why before closing */
    assert_string_equal(s.r.sqlstate, "57P01");
    assert_true(ms_since(t0) < 4000);
    dbpool_pg_result_clear(&s.r);

    /* discarded and replaced */
    assert_int_equal(q_int(p, "SELECT 7"), 7);
}

/* Connections that died while idle are found dead before anything is sent:
 * the call is retried on another connection and succeeds. */
static void test_dead_connection_retried(void **state)
{
    (void)state;
    const char *app = "it_pg_dead";
    dbpool *p = open_pool(app, 2);
    await_idle(p, 2);
    assert_int_equal(pgt_terminate(&srv, app), 2);
    usleep(50000);

    dbpool_pg_result r;
    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, NULL, &r), 0);
    assert_true(r.retries >= 1);
    assert_int_equal(r.sent, 1);
    dbpool_pg_result_clear(&r);

    /* the cached path too (Prepare is effect-free, so its loss is retryable) */
    await_idle(p, 2);
    assert_int_equal(pgt_terminate(&srv, app), 2);
    usleep(50000);
    assert_int_equal(dbpool_pg_query_prepared(p, "SELECT 2", NULL, NULL, &r), 0);
    assert_true(r.retries >= 1);
    assert_string_equal(PQgetvalue(r.res, 0, 0), "2");
    dbpool_pg_result_clear(&r);

    /* on a lease we hold there is no retry: the caller learns nothing ran */
    await_idle(p, 2);
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 2000, &l), 0);
    assert_int_equal(pgt_terminate(&srv, app), 2);
    usleep(50000);
    assert_int_equal(dbpool_pg_exec(&l, "SELECT 1", NULL, NULL, &r), DBPOOL_ECONNLOST);
    assert_int_equal(r.sent, 0);
    assert_non_null(strstr(dbpool_last_error(), "before sending"));
    dbpool_pg_result_clear(&r);
    assert_int_equal(dbpool_checkin(&l), 0);
}

static void *hold_fn(void *arg)
{
    dbpool *p = arg;
    dbpool_lease l;
    if (dbpool_checkout(p, 2000, &l) == 0) {
        usleep(250000);
        (void)dbpool_checkin(&l);
    }
    return NULL;
}

static void test_timings(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_timings", 1);
    dbpool_pg_result r;

    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, NULL, NULL), 0);
    usleep(300000);
    assert_int_equal(dbpool_pg_query(p, "SELECT pg_sleep(0.05)", NULL, NULL, &r), 0);
    assert_true(r.idle_ms >= 250);
    assert_true(r.db_us >= 45000);
    assert_true(r.queue_us < 200000);
    dbpool_pg_result_clear(&r);

    /* another caller holds the only connection for 250 ms */
    pthread_t t = thr_start(hold_fn, p);
    usleep(50000);
    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, NULL, &r), 0);
    assert_true(r.queue_us >= 150000);
    dbpool_pg_result_clear(&r);
    assert_int_equal(thr_join(t, 3000), 0);
}

static int64_t prepared_count(dbpool *p)
{
    return q_int(p, "SELECT count(*) FROM pg_prepared_statements");
}

static void test_prepared_cache(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_cache", 1);
    dbpool_pg_opts o;
    dbpool_pg_opts_init(&o);
    o.cache_size = 3;
    dbpool_pg_result r;
    char sql[64], want[16];

    for (int i = 0; i < 5; i++) {
        snprintf(want, sizeof want, "%d", i);
        const char *v[] = {want};
        dbpool_pg_params prm = {.n = 1, .values = v};
        assert_int_equal(dbpool_pg_query_prepared(p, "SELECT $1::int", &prm, &o, &r), 0);
        assert_string_equal(PQgetvalue(r.res, 0, 0), want);
        dbpool_pg_result_clear(&r);
    }
    assert_int_equal(prepared_count(p), 1);
    assert_int_equal(dbpool_pg_query(p, "SELECT name FROM pg_prepared_statements", NULL, NULL, &r),
                     0);
    assert_memory_equal(PQgetvalue(r.res, 0, 0), "dbpool_s", 8);
    dbpool_pg_result_clear(&r);

    /* 5 more distinct statements: the LRU keeps 3 */
    for (int i = 0; i < 5; i++) {
        snprintf(sql, sizeof sql, "SELECT %d + $1::int", i);
        const char *v[] = {"100"};
        dbpool_pg_params prm = {.n = 1, .values = v};
        assert_int_equal(dbpool_pg_query_prepared(p, sql, &prm, &o, &r), 0);
        snprintf(want, sizeof want, "%d", 100 + i);
        assert_string_equal(PQgetvalue(r.res, 0, 0), want);
        dbpool_pg_result_clear(&r);
    }
    assert_int_equal(prepared_count(p), 3);

    /* a hit does not prepare again: the most recent three are all hits */
    for (int i = 2; i < 5; i++) {
        snprintf(sql, sizeof sql, "SELECT %d + $1::int", i);
        const char *v[] = {"1"};
        dbpool_pg_params prm = {.n = 1, .values = v};
        assert_int_equal(dbpool_pg_query_prepared(p, sql, &prm, &o, NULL), 0);
    }
    assert_int_equal(q_int(p, "SELECT count(*) FROM pg_prepared_statements WHERE "
                              "statement LIKE 'SELECT _ + $1::int'"),
                     3);

    /* the same SQL with other parameter types is another statement */
    const Oid t8[] = {20};
    const char *v[] = {"5"};
    dbpool_pg_params prm8 = {.n = 1, .types = t8, .values = v};
    assert_int_equal(dbpool_pg_query_prepared(p, "SELECT 4 + $1::int", &prm8, &o, &r), 0);
    assert_string_equal(PQgetvalue(r.res, 0, 0), "9");
    dbpool_pg_result_clear(&r);
    assert_int_equal(prepared_count(p), 3);

    /* a syntax error at Prepare: EQUERY, nothing cached */
    assert_int_equal(dbpool_pg_query_prepared(p, "SELEC 1", NULL, &o, &r), DBPOOL_EQUERY);
    assert_string_equal(r.sqlstate, "42601");
    dbpool_pg_result_clear(&r);
    assert_int_equal(prepared_count(p), 3);
}

/* ALTER TABLE changes the result type of a cached statement (0A000):
 * re-prepared and re-run transparently outside a transaction; reported inside. */
static void test_prepared_reprepare_after_alter(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_reprepare", 1);
    dbpool_pg_result r;
    server_exec("DROP TABLE IF EXISTS rp; CREATE TABLE rp (a int); INSERT INTO rp VALUES (1)");

    assert_int_equal(dbpool_pg_query_prepared(p, "SELECT * FROM rp", NULL, NULL, &r), 0);
    assert_int_equal(PQnfields(r.res), 1);
    dbpool_pg_result_clear(&r);
    server_exec("ALTER TABLE rp ADD COLUMN b int DEFAULT 7");
    assert_int_equal(dbpool_pg_query_prepared(p, "SELECT * FROM rp", NULL, NULL, &r), 0);
    assert_int_equal(PQnfields(r.res), 2);
    assert_string_equal(PQgetvalue(r.res, 0, 1), "7");
    dbpool_pg_result_clear(&r);
    assert_int_equal(prepared_count(p), 1);
}

static int select_rp_cb(dbpool_lease *tx, void *arg)
{
    dbpool_pg_result *r = arg;
    return dbpool_pg_exec_prepared(tx, "SELECT * FROM rp", NULL, NULL, r);
}

static void test_prepared_stale_in_transaction(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_stale_tx", 1);
    dbpool_pg_result r;
    server_exec("DROP TABLE IF EXISTS rp; CREATE TABLE rp (a int); INSERT INTO rp VALUES (1)");

    assert_int_equal(dbpool_pg_query_prepared(p, "SELECT * FROM rp", NULL, NULL, NULL), 0);
    server_exec("ALTER TABLE rp ADD COLUMN c int");
    memset(&r, 0, sizeof r);
    assert_int_equal(dbpool_pg_transaction(p, select_rp_cb, &r, NULL, NULL), DBPOOL_EQUERY);
    assert_string_equal(r.sqlstate, "0A000");
    dbpool_pg_result_clear(&r);
    /* outside the transaction the next use prepares afresh */
    assert_int_equal(dbpool_pg_query_prepared(p, "SELECT * FROM rp", NULL, NULL, &r), 0);
    assert_int_equal(PQnfields(r.res), 2);
    dbpool_pg_result_clear(&r);
    /* and the forgotten statement was deallocated */
    assert_int_equal(prepared_count(p), 1);
    /* inside a transaction, a cached statement works normally */
    assert_int_equal(dbpool_pg_transaction(p, select_rp_cb, &r, NULL, NULL), 0);
    assert_int_equal(PQnfields(r.res), 2);
    dbpool_pg_result_clear(&r);
}

static void test_prepared_after_deallocate_all(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_dealloc", 1);
    dbpool_lease l;
    dbpool_pg_result r;
    assert_int_equal(dbpool_checkout(p, 2000, &l), 0);
    assert_int_equal(dbpool_pg_exec_prepared(&l, "SELECT 11", NULL, NULL, NULL), 0);
    PGresult *raw = PQexec(dbpool_pg_conn(&l), "DEALLOCATE ALL");
    assert_int_equal(PQresultStatus(raw), PGRES_COMMAND_OK);
    PQclear(raw);
    assert_int_equal(dbpool_pg_exec_prepared(&l, "SELECT 11", NULL, NULL, &r), 0);
    assert_string_equal(PQgetvalue(r.res, 0, 0), "11");
    dbpool_pg_result_clear(&r);
    assert_int_equal(dbpool_checkin(&l), 0);
}

static void test_unnamed_mode(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_unnamed", 1);
    dbpool_pg_opts o;
    dbpool_pg_opts_init(&o);
    o.unnamed = 1;
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_pg_query_prepared(p, "SELECT 1", NULL, &o, NULL), 0);
    assert_int_equal(prepared_count(p), 0);
    dbpool_pg_opts_init(&o);
    o.cache_size = 0;
    assert_int_equal(dbpool_pg_query_prepared(p, "SELECT 1", NULL, &o, NULL), 0);
    assert_int_equal(prepared_count(p), 0);
}

/* After a reconnect the cache starts empty (it lives with the connection). */
static void test_prepared_after_reconnect(void **state)
{
    (void)state;
    const char *app = "it_pg_reconnect";
    dbpool *p = open_pool(app, 1);
    assert_int_equal(dbpool_pg_query_prepared(p, "SELECT 3", NULL, NULL, NULL), 0);
    assert_int_equal(prepared_count(p), 1);
    await_idle(p, 1);
    assert_int_equal(pgt_terminate(&srv, app), 1);
    usleep(50000);
    dbpool_pg_result r;
    assert_int_equal(dbpool_pg_query_prepared(p, "SELECT 3", NULL, NULL, &r), 0);
    assert_string_equal(PQgetvalue(r.res, 0, 0), "3");
    dbpool_pg_result_clear(&r);
    assert_int_equal(prepared_count(p), 1);
}

static void test_copy_rejected(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_copy", 1);
    assert_int_equal(dbpool_pg_query(p, "COPY (SELECT 1) TO STDOUT", NULL, NULL, NULL),
                     DBPOOL_EINVAL);
    assert_non_null(strstr(dbpool_last_error(), "COPY"));
    assert_int_equal(q_int(p, "SELECT 5"), 5);
}

/* ---------------------------------------------------------------------- */
/* transactions                                                            */
/* ---------------------------------------------------------------------- */

struct ins {
    int id;  /* row to insert */
    int ret; /* what the callback returns after inserting */
    int dup; /* insert it twice (the second fails) */
};

static int insert_cb(dbpool_lease *tx, void *arg)
{
    struct ins *a = arg;
    char v[16];
    snprintf(v, sizeof v, "%d", a->id);
    const char *vals[] = {v};
    dbpool_pg_params prm = {.n = 1, .values = vals};
    int rc = dbpool_pg_exec(tx, "INSERT INTO tx1 VALUES ($1::int)", &prm, NULL, NULL);
    if (rc != 0)
        return rc;
    if (a->dup)
        (void)dbpool_pg_exec(tx, "INSERT INTO tx1 VALUES ($1::int)", &prm, NULL, NULL);
    return a->ret;
}

static int64_t rows_with(const char *table, int id)
{
    return server_int("SELECT count(*) FROM %s WHERE id = %d", table, id);
}

static void test_tx_commit_and_rollback(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_tx", 2);
    server_exec("DROP TABLE IF EXISTS tx1; CREATE TABLE tx1 (id int PRIMARY KEY)");
    dbpool_pg_timings tm;

    struct ins a = {.id = 1};
    assert_int_equal(dbpool_pg_transaction(p, insert_cb, &a, NULL, &tm), 0);
    assert_int_equal(rows_with("tx1", 1), 1);
    assert_int_equal(tm.attempts, 1);
    assert_true(tm.db_us > 0);

    /* a nonzero return rolls back and is returned as is */
    struct ins b = {.id = 2, .ret = 42};
    assert_int_equal(dbpool_pg_transaction(p, insert_cb, &b, NULL, NULL), 42);
    assert_int_equal(rows_with("tx1", 2), 0);

    /* a failed statement the callback ignored: rolled back, EQUERY */
    struct ins c = {.id = 3, .dup = 1};
    assert_int_equal(dbpool_pg_transaction(p, insert_cb, &c, NULL, NULL), DBPOOL_EQUERY);
    assert_non_null(strstr(dbpool_last_error(), "23505"));
    assert_int_equal(rows_with("tx1", 3), 0);

    /* the error of a statement passed through */
    struct ins d = {.id = 1};
    assert_int_equal(dbpool_pg_transaction(p, insert_cb, &d, NULL, NULL), DBPOOL_EQUERY);
    assert_int_equal(server_int("SELECT count(*) FROM tx1"), 1);

    /* no connection was lost along the way */
    dbpool_stats st;
    assert_int_equal(dbpool_stats_get(p, &st), 0);
    assert_int_equal((int)st.disconnects, 0);
    assert_int_equal(dbpool_pg_transaction(NULL, insert_cb, &a, NULL, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_pg_transaction(p, NULL, &a, NULL, NULL), DBPOOL_EINVAL);
}

struct nest {
    int id;
    int ret;
    int dup_of; /* nonzero: also insert this id (which exists) */
    struct nest *inner;
    int inner_rc; /* what the nested call returned */
};

static int nest_cb(dbpool_lease *tx, void *arg)
{
    struct nest *n = arg;
    char v[16];
    snprintf(v, sizeof v, "%d", n->id);
    const char *vals[] = {v};
    dbpool_pg_params prm = {.n = 1, .values = vals};
    if (dbpool_pg_exec(tx, "INSERT INTO tx2 VALUES ($1::int)", &prm, NULL, NULL) != 0)
        return -100;
    if (n->dup_of) {
        snprintf(v, sizeof v, "%d", n->dup_of);
        (void)dbpool_pg_exec(tx, "INSERT INTO tx2 VALUES ($1::int)", &prm, NULL, NULL);
    }
    if (n->inner)
        n->inner_rc = dbpool_pg_transaction_lease(tx, nest_cb, n->inner, NULL);
    return n->ret;
}

struct seq {
    struct nest *levels[4];
    int n;
    int rcs[4];
};

static int seq_cb(dbpool_lease *tx, void *arg)
{
    struct seq *s = arg;
    for (int i = 0; i < s->n; i++)
        s->rcs[i] = dbpool_pg_transaction_lease(tx, nest_cb, s->levels[i], NULL);
    if (dbpool_pg_exec(tx, "INSERT INTO tx2 VALUES (100)", NULL, NULL, NULL) != 0)
        return -1;
    return 0;
}

static void test_tx_nested_savepoints(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_nested", 1);
    server_exec("DROP TABLE IF EXISTS tx2; CREATE TABLE tx2 (id int PRIMARY KEY)");

    struct nest deep = {.id = 4, .ret = -7};        /* rolled back */
    struct nest mid = {.id = 3, .inner = &deep};    /* kept, its inner not */
    struct nest fails = {.id = 5, .ret = -5};       /* rolled back */
    struct nest swallowed = {.id = 6, .dup_of = 3}; /* failed stmt, returns 0 */
    struct nest ok = {.id = 7};
    struct seq s = {.levels = {&mid, &fails, &swallowed, &ok}, .n = 4};
    assert_int_equal(dbpool_pg_transaction(p, seq_cb, &s, NULL, NULL), 0);
    assert_int_equal(mid.inner_rc, -7);
    assert_int_equal(s.rcs[0], 0);
    assert_int_equal(s.rcs[1], -5);
    assert_int_equal(s.rcs[2], DBPOOL_EQUERY);
    assert_int_equal(s.rcs[3], 0);
    assert_int_equal(server_int("SELECT count(*) FROM tx2"), 3);
    assert_int_equal(rows_with("tx2", 3), 1);
    assert_int_equal(rows_with("tx2", 7), 1);
    assert_int_equal(rows_with("tx2", 100), 1);
}

struct show {
    char iso[32];
    char ro[8];
    char def[8];
    int insert_rc;
};

static void show_one(dbpool_lease *tx, const char *sql, char *buf, size_t len)
{
    dbpool_pg_result r;
    if (dbpool_pg_exec(tx, sql, NULL, NULL, &r) == 0)
        snprintf(buf, len, "%s", PQgetvalue(r.res, 0, 0));
    dbpool_pg_result_clear(&r);
}

static int show_cb(dbpool_lease *tx, void *arg)
{
    struct show *s = arg;
    show_one(tx, "SHOW transaction_isolation", s->iso, sizeof s->iso);
    show_one(tx, "SHOW transaction_read_only", s->ro, sizeof s->ro);
    show_one(tx, "SHOW transaction_deferrable", s->def, sizeof s->def);
    s->insert_rc = dbpool_pg_exec(tx, "INSERT INTO tx3 VALUES (1)", NULL, NULL, NULL);
    return s->insert_rc;
}

static void test_tx_options(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_txopts", 1);
    server_exec("DROP TABLE IF EXISTS tx3; CREATE TABLE tx3 (id int)");
    dbpool_pg_tx_opts o;
    struct show s;

    dbpool_pg_tx_opts_init(&o);
    o.isolation = DBPOOL_PG_SERIALIZABLE;
    o.read_only = 1;
    o.deferrable = 1;
    memset(&s, 0, sizeof s);
    assert_int_equal(dbpool_pg_transaction(p, show_cb, &s, &o, NULL), DBPOOL_EQUERY);
    assert_string_equal(s.iso, "serializable");
    assert_string_equal(s.ro, "on");
    assert_string_equal(s.def, "on");
    assert_non_null(strstr(dbpool_last_error(), "25006")); /* read-only transaction */

    dbpool_pg_tx_opts_init(&o);
    o.isolation = DBPOOL_PG_REPEATABLE_READ;
    memset(&s, 0, sizeof s);
    assert_int_equal(dbpool_pg_transaction(p, show_cb, &s, &o, NULL), 0);
    assert_string_equal(s.iso, "repeatable read");
    assert_string_equal(s.ro, "off");
    assert_int_equal(server_int("SELECT count(*) FROM tx3"), 1);

    o.isolation = (dbpool_pg_isolation)9;
    assert_int_equal(dbpool_pg_transaction(p, show_cb, &s, &o, NULL), DBPOOL_EINVAL);
}

struct flaky {
    int attempts;
    int fail_first;    /* fail this many attempts */
    const char *state; /* with this SQLSTATE */
};

static int flaky_cb(dbpool_lease *tx, void *arg)
{
    struct flaky *f = arg;
    char sql[160];
    f->attempts++;
    if (f->attempts <= f->fail_first) {
        snprintf(sql, sizeof sql,
                 "DO $$BEGIN RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '%s'; END$$",
                 f->state);
        return dbpool_pg_exec(tx, sql, NULL, NULL, NULL);
    }
    return dbpool_pg_exec(tx, "INSERT INTO tx4 VALUES (1)", NULL, NULL, NULL);
}

static void test_tx_retry_bounded(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_retry", 1);
    server_exec("DROP TABLE IF EXISTS tx4; CREATE TABLE tx4 (id int)");
    dbpool_pg_tx_opts o;
    dbpool_pg_timings tm;
    dbpool_pg_tx_opts_init(&o);

    /* no retry by default */
    struct flaky f0 = {.fail_first = 1, .state = "40001"};
    assert_int_equal(dbpool_pg_transaction(p, flaky_cb, &f0, &o, &tm), DBPOOL_EQUERY);
    assert_int_equal(f0.attempts, 1);

    o.max_retries = 2;
    struct flaky f1 = {.fail_first = 2, .state = "40001"};
    assert_int_equal(dbpool_pg_transaction(p, flaky_cb, &f1, &o, &tm), 0);
    assert_int_equal(f1.attempts, 3);
    assert_int_equal(tm.attempts, 3);
    assert_int_equal(server_int("SELECT count(*) FROM tx4"), 1);

    struct flaky f2 = {.fail_first = 5, .state = "40P01"};
    assert_int_equal(dbpool_pg_transaction(p, flaky_cb, &f2, &o, &tm), DBPOOL_EQUERY);
    assert_int_equal(f2.attempts, 3);
    assert_non_null(strstr(dbpool_last_error(), "40P01"));

    /* other errors are never retried */
    struct flaky f3 = {.fail_first = 1, .state = "23505"};
    assert_int_equal(dbpool_pg_transaction(p, flaky_cb, &f3, &o, &tm), DBPOOL_EQUERY);
    assert_int_equal(f3.attempts, 1);

    /* on a held lease, retries happen on the same connection */
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 2000, &l), 0);
    struct flaky f4 = {.fail_first = 1, .state = "40001"};
    assert_int_equal(dbpool_pg_transaction_lease(&l, flaky_cb, &f4, &o), 0);
    assert_int_equal(f4.attempts, 2);
    assert_int_equal(dbpool_checkin(&l), 0);
}

struct dl {
    dbpool *pool;
    pthread_barrier_t *barrier;
    int first, second;
    int attempts;
    int rc;
};

static int dl_update(dbpool_lease *tx, int id)
{
    char sql[80];
    snprintf(sql, sizeof sql, "UPDATE dl SET v = v + 1 WHERE id = %d", id);
    return dbpool_pg_exec(tx, sql, NULL, NULL, NULL);
}

static int dl_cb(dbpool_lease *tx, void *arg)
{
    struct dl *d = arg;
    int rc;
    d->attempts++;
    if ((rc = dl_update(tx, d->first)) != 0)
        return rc;
    if (d->attempts == 1)
        pthread_barrier_wait(d->barrier);
    return dl_update(tx, d->second);
}

static void *dl_fn(void *arg)
{
    struct dl *d = arg;
    dbpool_pg_tx_opts o;
    dbpool_pg_tx_opts_init(&o);
    o.max_retries = 3;
    d->rc = dbpool_pg_transaction(d->pool, dl_cb, d, &o, NULL);
    return NULL;
}

/* A real deadlock: one side gets 40P01 and is re-run; both commit. */
static void test_tx_real_deadlock_retried(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_deadlock", 2);
    server_exec("DROP TABLE IF EXISTS dl; CREATE TABLE dl (id int PRIMARY KEY, v int);"
                "INSERT INTO dl VALUES (1, 0), (2, 0)");
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, 2);
    struct dl a = {.pool = p, .barrier = &b, .first = 1, .second = 2};
    struct dl c = {.pool = p, .barrier = &b, .first = 2, .second = 1};
    pthread_t ta = thr_start(dl_fn, &a), tc = thr_start(dl_fn, &c);
    assert_int_equal(thr_join(ta, 20000), 0);
    assert_int_equal(thr_join(tc, 20000), 0);
    pthread_barrier_destroy(&b);
    assert_int_equal(a.rc, 0);
    assert_int_equal(c.rc, 0);
    /* at least one was re-run (under load the server may abort both sides) */
    assert_true(a.attempts + c.attempts >= 3);
    assert_int_equal(server_int("SELECT sum(v) FROM dl"), 4);
}

static int deferred_cb(dbpool_lease *tx, void *arg)
{
    (void)arg;
    int rc = dbpool_pg_exec(tx, "INSERT INTO dc VALUES (1)", NULL, NULL, NULL);
    if (rc == 0)
        rc = dbpool_pg_exec(tx, "INSERT INTO dc VALUES (1)", NULL, NULL, NULL);
    return rc;
}

static void test_tx_error_at_commit(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_deferred", 1);
    server_exec("DROP TABLE IF EXISTS dc; "
                "CREATE TABLE dc (a int UNIQUE DEFERRABLE INITIALLY DEFERRED)");
    assert_int_equal(dbpool_pg_transaction(p, deferred_cb, NULL, NULL, NULL), DBPOOL_EQUERY);
    assert_non_null(strstr(dbpool_last_error(), "COMMIT"));
    assert_non_null(strstr(dbpool_last_error(), "23505"));
    assert_int_equal(server_int("SELECT count(*) FROM dc"), 0);
    assert_int_equal(q_int(p, "SELECT 1"), 1);
}

struct cut {
    int id;
    int mode; /* 0: reset the relay 300 ms after COMMIT was queued; 1: only blackhole */
    pthread_t resetter;
    int started;
};

static void *reset_later(void *arg)
{
    (void)arg;
    usleep(300000);
    relay_reset_all(g_relay);
    return NULL;
}

static int cut_cb(dbpool_lease *tx, void *arg)
{
    struct cut *c = arg;
    char sql[64];
    snprintf(sql, sizeof sql, "INSERT INTO tx5 VALUES (%d)", c->id);
    int rc = dbpool_pg_exec(tx, sql, NULL, NULL, NULL);
    if (rc != 0)
        return rc;
    /* the COMMIT that follows goes into a partition */
    relay_set_mode(g_relay, RELAY_BLACKHOLE);
    if (c->mode == 0 && pthread_create(&c->resetter, NULL, reset_later, NULL) == 0)
        c->started = 1;
    return 0;
}

static void test_tx_commit_unknown(void **state)
{
    (void)state;
    dbpool *p = open_relayed_pool("it_pg_commit_unknown", 1);
    server_exec("DROP TABLE IF EXISTS tx5; CREATE TABLE tx5 (id int)");
    await_idle(p, 1);
    dbpool_pg_tx_opts o;
    dbpool_pg_tx_opts_init(&o);
    o.query.statement_timeout = 5000;

    /* the connection is reset while COMMIT is in flight */
    struct cut c = {.id = 1, .mode = 0};
    int64_t t0 = pgt_now_ms();
    assert_int_equal(dbpool_pg_transaction(p, cut_cb, &c, &o, NULL), DBPOOL_ECOMMIT_UNKNOWN);
    assert_true(ms_since(t0) < 3000);
    assert_non_null(strstr(dbpool_last_error(), "may or may not have committed"));
    if (c.started)
        assert_int_equal(thr_join(c.resetter, 3000), 0);
    assert_int_equal(relay_set_mode(g_relay, RELAY_PASS), 0);

    /* COMMIT times out and the cancel cannot get through either */
    o.query.statement_timeout = 300;
    o.query.cancel_grace = 300;
    struct cut d = {.id = 2, .mode = 1};
    t0 = pgt_now_ms();
    assert_int_equal(dbpool_pg_transaction(p, cut_cb, &d, &o, NULL), DBPOOL_ECOMMIT_UNKNOWN);
    assert_true(ms_since(t0) < 2000);
    assert_int_equal(relay_set_mode(g_relay, RELAY_PASS), 0);

    /* the pool recovers */
    dbpool_pg_opts_init(&o.query);
    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, &o.query, NULL), 0);
}

static int suicide_cb(dbpool_lease *tx, void *arg)
{
    int *rc = arg;
    (void)dbpool_pg_exec(tx, "INSERT INTO tx6 VALUES (1)", NULL, NULL, NULL);
    *rc = dbpool_pg_exec(tx, "SELECT pg_terminate_backend(pg_backend_pid())", NULL, NULL, NULL);
    return 0; /* pretend all is well */
}

static void test_tx_lost_before_commit(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_lost_tx", 1);
    server_exec("DROP TABLE IF EXISTS tx6; CREATE TABLE tx6 (id int)");
    int inner = 0;
    assert_int_equal(dbpool_pg_transaction(p, suicide_cb, &inner, NULL, NULL), DBPOOL_ECONNLOST);
    assert_int_equal(inner, DBPOOL_ECONNLOST);
    assert_non_null(strstr(dbpool_last_error(), "rolled it back"));
    assert_int_equal(server_int("SELECT count(*) FROM tx6"), 0);
    assert_int_equal(q_int(p, "SELECT 1"), 1);
}

static int count_cb(dbpool_lease *tx, void *arg)
{
    int *n = arg;
    (*n)++;
    return dbpool_pg_exec(tx, "SELECT 1", NULL, NULL, NULL);
}

static void test_tx_dead_before_begin_retried(void **state)
{
    (void)state;
    const char *app = "it_pg_tx_dead";
    dbpool *p = open_pool(app, 2);
    await_idle(p, 2);
    assert_int_equal(pgt_terminate(&srv, app), 2);
    usleep(50000);
    int calls = 0;
    dbpool_pg_timings tm;
    assert_int_equal(dbpool_pg_transaction(p, count_cb, &calls, NULL, &tm), 0);
    assert_int_equal(calls, 1); /* the callback never ran on a dead connection */
    assert_true(tm.attempts >= 2);
}

static int checkin_cb(dbpool_lease *tx, void *arg)
{
    (void)arg;
    return dbpool_checkin(tx);
}

static int raw_commit_cb(dbpool_lease *tx, void *arg)
{
    (void)arg;
    PQclear(PQexec(dbpool_pg_conn(tx), "COMMIT"));
    return 0;
}

static int insert7_cb(dbpool_lease *tx, void *arg)
{
    (void)arg;
    return dbpool_pg_exec(tx, "INSERT INTO tx7 VALUES (1)", NULL, NULL, NULL);
}

static void test_tx_lease_and_misuse(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pg_tx_lease", 1);
    server_exec("DROP TABLE IF EXISTS tx7; CREATE TABLE tx7 (id int)");
    dbpool_lease l;

    assert_int_equal(dbpool_checkout(p, 2000, &l), 0);
    assert_int_equal(dbpool_pg_transaction_lease(&l, insert7_cb, NULL, NULL), 0);
    assert_int_equal(server_int("SELECT count(*) FROM tx7"), 1);
    /* inside the caller's own BEGIN it is a savepoint: the caller's ROLLBACK wins */
    PQclear(PQexec(dbpool_pg_conn(&l), "BEGIN"));
    assert_int_equal(dbpool_pg_transaction_lease(&l, insert7_cb, NULL, NULL), 0);
    assert_int_equal(PQtransactionStatus(dbpool_pg_conn(&l)), PQTRANS_INTRANS);
    PQclear(PQexec(dbpool_pg_conn(&l), "ROLLBACK"));
    assert_int_equal(server_int("SELECT count(*) FROM tx7"), 1);
    /* in a failed transaction: 25P02 at once */
    PQclear(PQexec(dbpool_pg_conn(&l), "BEGIN"));
    PQclear(PQexec(dbpool_pg_conn(&l), "SELECT 1/0"));
    assert_int_equal(dbpool_pg_transaction_lease(&l, insert7_cb, NULL, NULL), DBPOOL_EQUERY);
    PQclear(PQexec(dbpool_pg_conn(&l), "ROLLBACK"));
    /* a callback that commits by itself */
    assert_int_equal(dbpool_pg_transaction_lease(&l, raw_commit_cb, NULL, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_checkin(&l), 0);

    /* a callback that checks its lease in */
    assert_int_equal(dbpool_pg_transaction(p, checkin_cb, NULL, NULL, NULL), DBPOOL_EINVAL);
    assert_int_equal(q_int(p, "SELECT 1"), 1);
    /* stale lease */
    assert_int_equal(dbpool_pg_exec(&l, "SELECT 1", NULL, NULL, NULL), DBPOOL_ESTALE);
    assert_int_equal(dbpool_pg_transaction_lease(&l, insert7_cb, NULL, NULL), DBPOOL_ESTALE);
}

/* ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (pgt_start(&srv) != 0) {
        fprintf(stderr, "it_pg: could not start PostgreSQL\n");
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
        cmocka_unit_test_teardown(test_query_text_params, test_teardown),
        cmocka_unit_test_teardown(test_query_binary_params, test_teardown),
        cmocka_unit_test_teardown(test_sql_error_keeps_connection, test_teardown),
        cmocka_unit_test_teardown(test_statement_timeout_cancels, test_teardown),
        cmocka_unit_test_teardown(test_timeout_unanswered_discards, test_teardown),
        cmocka_unit_test_teardown(test_connection_lost_not_retried, test_teardown),
        cmocka_unit_test_teardown(test_dead_connection_retried, test_teardown),
        cmocka_unit_test_teardown(test_timings, test_teardown),
        cmocka_unit_test_teardown(test_prepared_cache, test_teardown),
        cmocka_unit_test_teardown(test_prepared_reprepare_after_alter, test_teardown),
        cmocka_unit_test_teardown(test_prepared_stale_in_transaction, test_teardown),
        cmocka_unit_test_teardown(test_prepared_after_deallocate_all, test_teardown),
        cmocka_unit_test_teardown(test_unnamed_mode, test_teardown),
        cmocka_unit_test_teardown(test_prepared_after_reconnect, test_teardown),
        cmocka_unit_test_teardown(test_copy_rejected, test_teardown),
        cmocka_unit_test_teardown(test_tx_commit_and_rollback, test_teardown),
        cmocka_unit_test_teardown(test_tx_nested_savepoints, test_teardown),
        cmocka_unit_test_teardown(test_tx_options, test_teardown),
        cmocka_unit_test_teardown(test_tx_retry_bounded, test_teardown),
        cmocka_unit_test_teardown(test_tx_real_deadlock_retried, test_teardown),
        cmocka_unit_test_teardown(test_tx_error_at_commit, test_teardown),
        cmocka_unit_test_teardown(test_tx_commit_unknown, test_teardown),
        cmocka_unit_test_teardown(test_tx_lost_before_commit, test_teardown),
        cmocka_unit_test_teardown(test_tx_dead_before_begin_retried, test_teardown),
        cmocka_unit_test_teardown(test_tx_lease_and_misuse, test_teardown),
    };
    return cmocka_run_group_tests_name("it_pg", tests, group_setup, group_teardown);
}
