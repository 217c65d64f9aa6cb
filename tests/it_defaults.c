/* it_defaults.c - the defaults that change behaviour most (issue 15 item 6,
 * docs/configuration.md "Where the defaults come from"): DBConnection's
 * current queue_interval (2000 ms since 2.8.0) and queue_target, and the
 * 15 s hold_timeout that cancels a long query on a pool opened with the
 * defaults, against a real server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;

static void test_defaults_follow_dbconnection(void **state)
{
    (void)state;
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    assert_int_equal(cfg.queue_target, 50);
    assert_int_equal(cfg.queue_interval, 2000);
    assert_int_equal(cfg.idle_interval, 1000);
    assert_int_equal(cfg.checkout_timeout, 15000);
    assert_int_equal(cfg.hold_timeout, 15000);
    assert_int_equal(cfg.backoff_max, 30000);
    assert_int_equal(cfg.max_waiting, 0);
    assert_int_equal(cfg.max_uses, 0);
    assert_null(cfg.reset_query);
}

/* A pool opened with NULL (every default) cancels a statement still running
 * when the lease is 15 s old, and closes that connection at check-in. */
static void test_default_hold_timeout_cancels(void **state)
{
    (void)state;
    dbpool *p = itp_open(&srv, "df_hold", NULL);
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 10000, &l), 0);
    int64_t t0 = pgt_now_ms();
    PGresult *r = PQexec(dbpool_pg_conn(&l), "SELECT pg_sleep(120)");
    int64_t took = pgt_now_ms() - t0;
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!st || strcmp(st, "57014") != 0)
        fail_msg("expected a cancel (57014), got %s: %s", st ? st : "-", PQresultErrorMessage(r));
    PQclear(r);
    assert_true(took >= 14000); /* not before the hold timeout (from the checkout) */
    assert_int_equal(dbpool_lease_check(&l), DBPOOL_EEXPIRED);
    assert_int_equal(dbpool_checkin(&l), DBPOOL_EEXPIRED);
    dbpool_stats st2 = itp_stats(p);
    assert_int_equal(st2.hold_timeouts, 1);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_follow_dbconnection),
        cmocka_unit_test(test_default_hold_timeout_cancels),
    };
    return cmocka_run_group_tests_name("it_defaults", tests, group_setup, group_teardown);
}
