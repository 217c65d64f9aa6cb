/* it_hygiene.c - connection hygiene (issue 15 item 1) against a real server:
 * reset_query at check-in (session state does not leak to the next caller,
 * the statement cache is forgotten with the server's prepared statements,
 * after_connect holds again, a failing or slow reset discards the
 * connection), max_uses, and a connection answering 25006 from a read-only
 * server is replaced (all of them, once per reconnect) while the
 * application's own READ ONLY transaction keeps its connection. */
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
#include "dbpool_pg.h"
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;

/* ---- events and log lines ----------------------------------------------- */

static pthread_mutex_t sink_mu = PTHREAD_MUTEX_INITIALIZER;
static char reasons[2048]; /* DISCONNECTED details, ';'-separated */
static char warnings[2048];

static void on_event(void *arg, const dbpool_event *ev)
{
    (void)arg;
    if (ev->type != DBPOOL_EV_DISCONNECTED)
        return;
    pthread_mutex_lock(&sink_mu);
    size_t n = strlen(reasons);
    snprintf(reasons + n, sizeof reasons - n, "%s;", ev->detail);
    pthread_mutex_unlock(&sink_mu);
}

static void on_log(void *arg, dbpool_log_level level, const char *pool, const char *msg)
{
    (void)arg;
    (void)pool;
    if (level < DBPOOL_LOG_WARNING)
        return;
    pthread_mutex_lock(&sink_mu);
    size_t n = strlen(warnings);
    snprintf(warnings + n, sizeof warnings - n, "%s;", msg);
    pthread_mutex_unlock(&sink_mu);
}

static int reason_seen(void *needle)
{
    pthread_mutex_lock(&sink_mu);
    int hit = strstr(reasons, needle) != NULL;
    pthread_mutex_unlock(&sink_mu);
    return hit;
}

static int await_reason(const char *needle)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", needle);
    return pgt_wait_for(reason_seen, buf, 10000);
}

static void sinks_clear(void)
{
    pthread_mutex_lock(&sink_mu);
    reasons[0] = warnings[0] = '\0';
    pthread_mutex_unlock(&sink_mu);
}

static void base_config(dbpool_config *cfg, int size)
{
    dbpool_config_init(cfg);
    cfg->size = size;
    cfg->queue_target = 5000;
    cfg->queue_interval = 10000;
    cfg->event_cb = on_event;
    cfg->log_cb = on_log;
}

/* ---- small queries on a lease ---------------------------------------------- */

static PGconn *pg(dbpool_lease *l)
{
    PGconn *c = dbpool_pg_conn(l);
    assert_non_null(c);
    return c;
}

static void exec_ok(dbpool_lease *l, const char *sql)
{
    PGresult *r = PQexec(pg(l), sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

/* First column of the first row, copied into buf. */
static const char *value(dbpool_lease *l, const char *sql, char *buf, size_t len)
{
    PGresult *r = PQexec(pg(l), sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    snprintf(buf, len, "%s", PQgetisnull(r, 0, 0) ? "(null)" : PQgetvalue(r, 0, 0));
    PQclear(r);
    return buf;
}

static int checkout_pid(dbpool *p, dbpool_lease *l)
{
    assert_int_equal(dbpool_checkout(p, 10000, l), 0);
    return PQbackendPID(pg(l));
}

/* ---- reset_query -------------------------------------------------------- */

/* SET, a temporary table, a prepared statement and LISTEN do not survive
 * into the next lease of the same connection. */
static void test_reset_query_clears_session(void **state)
{
    (void)state;
    dbpool_config cfg;
    base_config(&cfg, 1);
    assert_int_equal(dbpool_config_set(&cfg, "reset_query", "DISCARD ALL"), 0);
    dbpool *p = itp_open(&srv, "hy_reset", &cfg);
    dbpool_lease l;
    char buf[64];

    int pid = checkout_pid(p, &l);
    exec_ok(&l, "SET work_mem = '7MB'");
    exec_ok(&l, "CREATE TEMP TABLE hy_tmp (x int)");
    exec_ok(&l, "PREPARE hy_stmt AS SELECT 1");
    exec_ok(&l, "LISTEN hy_channel");
    assert_string_equal(value(&l, "SHOW work_mem", buf, sizeof buf), "7MB");
    assert_int_equal(dbpool_checkin(&l), 0);

    assert_int_equal(checkout_pid(p, &l), pid); /* the same session */
    assert_string_not_equal(value(&l, "SHOW work_mem", buf, sizeof buf), "7MB");
    assert_string_equal(value(&l, "SELECT to_regclass('pg_temp.hy_tmp')::text", buf, sizeof buf),
                        "(null)");
    assert_string_equal(value(&l, "SELECT count(*) FROM pg_prepared_statements", buf, sizeof buf),
                        "0");
    assert_string_equal(value(&l, "SELECT count(*) FROM pg_listening_channels()", buf, sizeof buf),
                        "0");
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(itp_stats(p).disconnects, 0);
    assert_int_equal(itp_close(p), 0);
}

/* Without the option nothing is reset (the documented default). */
static void test_no_reset_query_by_default(void **state)
{
    (void)state;
    dbpool_config cfg;
    base_config(&cfg, 1);
    assert_null(cfg.reset_query);
    dbpool *p = itp_open(&srv, "hy_noreset", &cfg);
    dbpool_lease l;
    char buf[64];
    int pid = checkout_pid(p, &l);
    exec_ok(&l, "SET work_mem = '7MB'");
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(checkout_pid(p, &l), pid);
    assert_string_equal(value(&l, "SHOW work_mem", buf, sizeof buf), "7MB");
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(itp_close(p), 0);
}

/* DISCARD ALL drops the session's prepared statements: the helpers' cache
 * must forget them, or the next use inside a transaction fails (26000
 * aborts the transaction; outside one it would be retried silently). */
static int tx_prepared(dbpool_lease *tx, void *arg)
{
    (void)arg;
    const char *v[] = {"41"};
    dbpool_pg_params pp = {.n = 1, .values = v};
    dbpool_pg_result r;
    int rc = dbpool_pg_exec_prepared(tx, "SELECT $1::int + 1", &pp, NULL, &r);
    if (rc == 0 && strcmp(PQgetvalue(r.res, 0, 0), "42") != 0)
        rc = -100;
    if (rc != 0)
        fprintf(stderr, "# in the transaction: %d %s (%s)\n", rc, dbpool_last_error(), r.sqlstate);
    dbpool_pg_result_clear(&r);
    return rc;
}

static void test_reset_query_forgets_statement_cache(void **state)
{
    (void)state;
    dbpool_config cfg;
    base_config(&cfg, 1);
    cfg.reset_query = "DISCARD ALL";
    dbpool *p = itp_open(&srv, "hy_cache", &cfg);
    const char *v[] = {"1"};
    dbpool_pg_params pp = {.n = 1, .values = v};
    for (int i = 0; i < 3; i++) {
        dbpool_pg_result r;
        assert_int_equal(dbpool_pg_query_prepared(p, "SELECT $1::int + 1", &pp, NULL, &r), 0);
        dbpool_pg_result_clear(&r);
    }
    assert_int_equal(dbpool_pg_transaction(p, tx_prepared, NULL, NULL, NULL), 0);
    /* and once more with the statement prepared inside that transaction */
    assert_int_equal(dbpool_pg_transaction(p, tx_prepared, NULL, NULL, NULL), 0);
    assert_int_equal(itp_stats(p).disconnects, 0);
    assert_int_equal(itp_close(p), 0);
}

/* DISCARD ALL undoes after_connect's SETs: after_connect runs again. */
static void test_reset_query_keeps_after_connect(void **state)
{
    (void)state;
    dbpool_config cfg;
    base_config(&cfg, 1);
    cfg.reset_query = "DISCARD ALL";
    cfg.after_connect = "SET statement_timeout = '12345ms'";
    dbpool *p = itp_open(&srv, "hy_after", &cfg);
    dbpool_lease l;
    char buf[64];
    int pid = checkout_pid(p, &l);
    exec_ok(&l, "SET statement_timeout = '1s'");
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(checkout_pid(p, &l), pid);
    assert_string_equal(value(&l, "SHOW statement_timeout", buf, sizeof buf), "12345ms");
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(itp_close(p), 0);
}

/* A reset that fails, or outlasts reset_timeout, discards the connection;
 * the check-in itself succeeds and a replacement serves the next caller. */
static void test_reset_query_failure_discards(void **state)
{
    (void)state;
    dbpool_config cfg;
    base_config(&cfg, 1);
    cfg.reset_query = "SELECT 1/0";
    sinks_clear();
    dbpool *p = itp_open(&srv, "hy_fail", &cfg);
    dbpool_lease l;
    int pid = checkout_pid(p, &l);
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_not_equal(checkout_pid(p, &l), pid);
    assert_true(itp_select1(&l));
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_true(itp_stats(p).disconnects >= 1);
    assert_true(await_reason("reset_query at check-in failed"));
    assert_int_equal(itp_close(p), 0);

    base_config(&cfg, 1);
    cfg.reset_query = "SELECT pg_sleep(30)";
    cfg.reset_timeout = 200;
    sinks_clear();
    p = itp_open(&srv, "hy_slow", &cfg);
    pid = checkout_pid(p, &l);
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_not_equal(checkout_pid(p, &l), pid);
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_true(await_reason("reset_query at check-in timed out"));
    assert_int_equal(itp_close(p), 0);
}

/* ---- max_uses -------------------------------------------------------------- */

static void test_max_uses(void **state)
{
    (void)state;
    dbpool_config cfg;
    base_config(&cfg, 1);
    assert_int_equal(dbpool_config_parse(&cfg, "max_uses=3"), 0);
    assert_int_equal(cfg.max_uses, 3);
    assert_int_equal(dbpool_config_set(&cfg, "max_uses", "-1"), DBPOOL_EINVAL);
    sinks_clear();
    dbpool *p = itp_open(&srv, "hy_uses", &cfg);
    int pid[7];
    for (int i = 0; i < 7; i++) {
        dbpool_lease l;
        pid[i] = checkout_pid(p, &l);
        assert_true(itp_select1(&l));
        assert_int_equal(dbpool_checkin(&l), 0);
    }
    assert_int_equal(pid[0], pid[1]);
    assert_int_equal(pid[1], pid[2]);
    assert_int_not_equal(pid[2], pid[3]);
    assert_int_equal(pid[3], pid[4]);
    assert_int_equal(pid[4], pid[5]);
    assert_int_not_equal(pid[5], pid[6]);
    assert_int_equal(itp_stats(p).disconnects, 2);
    assert_true(await_reason("max_uses reached"));
    assert_int_equal(itp_close(p), 0);
}

/* ---- 25006 ---------------------------------------------------------------- */

static int tx_write(dbpool_lease *tx, void *arg)
{
    (void)arg;
    dbpool_pg_result r;
    int rc = dbpool_pg_exec(tx, "INSERT INTO hy_ro VALUES (1)", NULL, NULL, &r);
    if (rc != DBPOOL_EQUERY || strcmp(r.sqlstate, "25006") != 0)
        fprintf(stderr, "# write in READ ONLY: %d %s\n", rc, r.sqlstate);
    dbpool_pg_result_clear(&r);
    return rc;
}

/* The application's own READ ONLY transaction on a read-write server: the
 * 25006 is its business, the connection stays. */
static void test_own_read_only_tx_keeps_connection(void **state)
{
    (void)state;
    assert_int_equal(pgt_exec(&srv, "CREATE TABLE IF NOT EXISTS hy_ro (x int)"), 0);
    dbpool_config cfg;
    base_config(&cfg, 1);
    dbpool *p = itp_open(&srv, "hy_own_ro", &cfg);
    dbpool_lease l;
    int pid = checkout_pid(p, &l);
    assert_int_equal(dbpool_checkin(&l), 0);

    dbpool_pg_tx_opts to;
    dbpool_pg_tx_opts_init(&to);
    to.read_only = 1;
    assert_int_equal(dbpool_pg_transaction(p, tx_write, NULL, &to, NULL), DBPOOL_EQUERY);
    dbpool_pg_result r;
    int rc;
    /* and a READ ONLY transaction of the application's own, on a lease */
    assert_int_equal(dbpool_checkout(p, 10000, &l), 0);
    assert_int_equal(PQbackendPID(pg(&l)), pid);
    exec_ok(&l, "BEGIN READ ONLY");
    rc = dbpool_pg_exec(&l, "INSERT INTO hy_ro VALUES (1)", NULL, NULL, &r);
    assert_int_equal(rc, DBPOOL_EQUERY);
    assert_string_equal(r.sqlstate, "25006");
    dbpool_pg_result_clear(&r);
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(checkout_pid(p, &l), pid);
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(itp_stats(p).disconnects, 0);
    assert_int_equal(itp_close(p), 0);
}

/* The server turns read-only (a demoted primary: default_transaction_read_only,
 * reported to clients since PostgreSQL 14): the first 25006 through the
 * helpers recycles every connection, with one warning. */
static void test_read_only_server_evicts(void **state)
{
    (void)state;
    assert_int_equal(pgt_exec(&srv, "CREATE TABLE IF NOT EXISTS hy_ro (x int)"), 0);
    dbpool_config cfg;
    base_config(&cfg, 3);
    cfg.idle_interval = 100; /* idle connections recycle within this */
    sinks_clear();
    dbpool *p = itp_open(&srv, "hy_failover", &cfg);
    assert_int_equal(dbpool_wait_ready(p, 3, 10000), 0);

    assert_int_equal(pgt_exec(&srv, "ALTER SYSTEM SET default_transaction_read_only = on"), 0);
    assert_int_equal(pgt_exec(&srv, "SELECT pg_reload_conf()"), 0);
    /* a backend applies the reload between commands: a write may still
     * pass right after it */
    int seen = 0;
    int64_t until = pgt_now_ms() + 10000;
    while (!seen && pgt_now_ms() < until) {
        dbpool_pg_result r;
        int rc = dbpool_pg_query(p, "INSERT INTO hy_ro VALUES (2)", NULL, NULL, &r);
        seen = rc == DBPOOL_EQUERY && strcmp(r.sqlstate, "25006") == 0;
        if (rc != 0 && !seen)
            fprintf(stderr, "# write: %d %s\n", rc, dbpool_last_error());
        dbpool_pg_result_clear(&r);
    }
    assert_int_equal(pgt_exec(&srv, "ALTER SYSTEM RESET default_transaction_read_only"), 0);
    assert_int_equal(pgt_exec(&srv, "SELECT pg_reload_conf()"), 0);
    assert_true(seen);
    assert_true(await_reason("SQLSTATE 25006"));
    pthread_mutex_lock(&sink_mu);
    int warned = strstr(warnings, "recycling every connection") != NULL;
    pthread_mutex_unlock(&sink_mu);
    assert_true(warned);
    /* the pool recovers by itself: the idle ones are recycled too */
    assert_true(await_reason("recycled"));
    int ok = 0;
    until = pgt_now_ms() + 10000;
    while (!ok && pgt_now_ms() < until) {
        dbpool_pg_result r;
        ok = dbpool_pg_query(p, "INSERT INTO hy_ro VALUES (3)", NULL, NULL, &r) == 0;
        dbpool_pg_result_clear(&r);
    }
    assert_true(ok);
    assert_int_equal(itp_close(p), 0);
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

static int test_teardown(void **state)
{
    (void)state;
    itp_close_all();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_reset_query_clears_session, test_teardown),
        cmocka_unit_test_teardown(test_no_reset_query_by_default, test_teardown),
        cmocka_unit_test_teardown(test_reset_query_forgets_statement_cache, test_teardown),
        cmocka_unit_test_teardown(test_reset_query_keeps_after_connect, test_teardown),
        cmocka_unit_test_teardown(test_reset_query_failure_discards, test_teardown),
        cmocka_unit_test_teardown(test_max_uses, test_teardown),
        cmocka_unit_test_teardown(test_own_read_only_tx_keeps_connection, test_teardown),
        cmocka_unit_test_teardown(test_read_only_server_evicts, test_teardown),
    };
    return cmocka_run_group_tests_name("it_hygiene", tests, group_setup, group_teardown);
}
