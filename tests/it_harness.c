/* it_harness.c - self-test of the throwaway PostgreSQL harness (tests/support/pgserver.c):
 * start, query, password auth, stop/resume, backend counting, extra config, destroy. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "support/pgserver.h"

static pgt_server srv;

static int setup(void **state)
{
    (void)state;
    return pgt_start(&srv) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    pgt_destroy(&srv);
    return 0;
}

static PGconn *connect_as(const char *user_part, const char *appname)
{
    char ci[700];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d dbname=postgres connect_timeout=5 %s "
             "application_name=%s",
             srv.port, user_part, appname);
    return PQconnectdb(ci);
}

static void test_select_1(void **state)
{
    (void)state;
    assert_true(srv.running);
    assert_true(srv.port > 0);
    assert_int_equal(pgt_query_int(&srv, "SELECT 1"), 1);
    assert_int_equal(pgt_exec(&srv, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)"), 0);
    assert_int_equal(pgt_query_int(&srv, "SELECT x FROM t"), 42);
    /* failures are reported, not fatal */
    assert_int_equal(pgt_exec(&srv, "SELECT * FROM no_such_table"), -1);
    assert_int_equal(pgt_query_int(&srv, "SELECT 'x'"), -1);
    assert_int_equal(pgt_query_int(&srv, "SELECT (current_setting('fsync') = 'off')::int"), 1);
    assert_int_equal(pgt_query_int(&srv, "SELECT current_setting('max_connections')::int"), 100);
}

static void test_password_auth(void **state)
{
    (void)state;
    PGconn *c = connect_as("user=app password=app_secret_pw", "harness_auth");
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQfinish(c);
    c = connect_as("user=app password=wrong", "harness_auth");
    assert_int_not_equal(PQstatus(c), CONNECTION_OK);
    assert_non_null(strstr(PQerrorMessage(c), "password authentication failed"));
    PQfinish(c);
}

static void test_unix_socket(void **state)
{
    (void)state;
    char ci[700];
    snprintf(ci, sizeof ci, "host=%s port=%d user=postgres dbname=postgres connect_timeout=5",
             srv.dir, srv.port);
    PGconn *c = PQconnectdb(ci);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQfinish(c);
}

static int no_backends(void *arg)
{
    return pgt_count_backends(&srv, (const char *)arg) == 0;
}

static void test_count_and_terminate(void **state)
{
    (void)state;
    PGconn *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = connect_as("user=postgres", "harness_count");
        assert_int_equal(PQstatus(c[i]), CONNECTION_OK);
    }
    PGconn *other = connect_as("user=postgres", "harness_other");
    assert_int_equal(PQstatus(other), CONNECTION_OK);

    assert_int_equal(pgt_count_backends(&srv, "harness_count"), 3);
    assert_int_equal(pgt_count_backends(&srv, NULL), 4); /* the harness's own is excluded */
    assert_int_equal(pgt_terminate(&srv, "harness_count"), 3);
    assert_true(pgt_wait_for(no_backends, (void *)"harness_count", 5000));
    assert_int_equal(pgt_count_backends(&srv, "harness_other"), 1);

    /* the terminated connections see the loss */
    PGresult *r = PQexec(c[0], "SELECT 1");
    assert_int_not_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);

    assert_int_equal(pgt_terminate(&srv, NULL), 1);
    assert_true(pgt_wait_for(no_backends, NULL, 5000));
    for (int i = 0; i < 3; i++)
        PQfinish(c[i]);
    PQfinish(other);
}

static void test_stop_resume(void **state)
{
    (void)state;
    int port = srv.port;
    PGconn *c = connect_as("user=postgres", "harness_stop");
    assert_int_equal(PQstatus(c), CONNECTION_OK);

    int64_t t0 = pgt_now_ms();
    assert_int_equal(pgt_stop(&srv, "fast"), 0);
    assert_false(srv.running);
    assert_int_equal(pgt_query_int(&srv, "SELECT 1"), -1);
    PGresult *r = PQexec(c, "SELECT 1");
    assert_int_not_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    PQfinish(c);

    assert_int_equal(pgt_resume(&srv), 0);
    assert_true(srv.running);
    assert_int_equal(srv.port, port);
    assert_int_equal(pgt_query_int(&srv, "SELECT 1"), 1);
    assert_int_equal(pgt_query_int(&srv, "SELECT x FROM t"), 42); /* data survived */

    assert_int_equal(pgt_stop(&srv, "immediate"), 0);
    assert_int_equal(pgt_resume(&srv), 0);
    assert_int_equal(pgt_query_int(&srv, "SELECT 1"), 1);
    assert_int_equal(pgt_stop(&srv, "bogus"), -1);
    print_message("stop/resume x2 took %lld ms\n", (long long)(pgt_now_ms() - t0));
}

static int after(void *arg)
{
    return pgt_now_ms() >= *(int64_t *)arg;
}

static int never(void *arg)
{
    (void)arg;
    return 0;
}

static void test_wait_for(void **state)
{
    (void)state;
    int64_t t0 = pgt_now_ms(), until = t0 + 50;
    assert_int_equal(pgt_wait_for(after, &until, 2000), 1);
    assert_true(pgt_now_ms() - t0 < 1000);
    t0 = pgt_now_ms();
    assert_int_equal(pgt_wait_for(never, NULL, 100), 0);
    assert_true(pgt_now_ms() - t0 >= 100);
}

static void test_second_server(void **state)
{
    (void)state;
    pgt_server s2;
    int64_t t0 = pgt_now_ms();
    assert_int_equal(pgt_start_conf(&s2, "max_connections = 20\nlog_connections = on"), 0);
    print_message("second server started in %lld ms\n", (long long)(pgt_now_ms() - t0));
    assert_int_not_equal(s2.port, srv.port);
    assert_string_not_equal(s2.dir, srv.dir);
    assert_int_equal(pgt_query_int(&s2, "SELECT current_setting('max_connections')::int"), 20);
    /* a copy of the template, not of the first server */
    assert_int_equal(pgt_query_int(&s2, "SELECT count(*) FROM pg_class WHERE relname = 't'"), 0);

    char dir[sizeof s2.dir];
    snprintf(dir, sizeof dir, "%s", s2.dir);
    pgt_destroy(&s2);
    struct stat st;
    assert_int_not_equal(stat(dir, &st), 0);
    pgt_destroy(&s2); /* safe twice */
    assert_int_equal(pgt_query_int(&srv, "SELECT 1"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select_1),      cmocka_unit_test(test_password_auth),
        cmocka_unit_test(test_unix_socket),   cmocka_unit_test(test_count_and_terminate),
        cmocka_unit_test(test_stop_resume),   cmocka_unit_test(test_wait_for),
        cmocka_unit_test(test_second_server),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
