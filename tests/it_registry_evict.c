/* it_registry_evict.c - which connection the registry evicts under a full cap
 * (frequency-aware eviction, src/tenants/registry.c), against a real
 * PostgreSQL. Every tenant connects to the database postgres with its key as
 * application_name; a connection is recognised by its backend pid. Behaviour
 * only: nothing here depends on how fast the machine is, beyond a hot tenant
 * staying hotter than a tenant used once for a few seconds (its checkout
 * count halves every 2 s). */
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
#include "dbpool_registry.h"
#include "pgserver.h"

static pgt_server srv;
static dbpool_registry *g_reg; /* closed by the teardown if a test left it open */

static int resolve(void *arg, const char *tenant, char *conninfo, size_t len, dbpool_config *cfg)
{
    (void)arg;
    (void)cfg;
    int w = snprintf(conninfo, len,
                     "host=127.0.0.1 port=%d user=postgres dbname=postgres application_name=%s",
                     srv.port, tenant);
    return w < 0 || (size_t)w >= len;
}

static dbpool_registry *open_reg(int cap)
{
    dbpool_registry_config rc;
    dbpool_registry_config_init(&rc);
    rc.resolve = resolve;
    rc.max_connections = cap;
    rc.pool_idle_timeout = 600000; /* nothing reclaimed during a test */
    rc.tenant.connect_timeout = 10000;
    rc.tenant.checkout_timeout = 20000;
    dbpool_registry *reg = NULL;
    int rc2 = dbpool_registry_open(&reg, &rc);
    if (rc2 != 0)
        fail_msg("dbpool_registry_open: %d %s", rc2, dbpool_last_error());
    g_reg = reg;
    return reg;
}

static int test_teardown(void **state)
{
    (void)state;
    if (g_reg)
        (void)dbpool_registry_close(g_reg);
    g_reg = NULL;
    return 0;
}

/* Check out `key`, return its backend pid (fails the test on any error). */
static int use(dbpool_registry *reg, const char *key)
{
    dbpool_lease l;
    int rc = dbpool_registry_checkout(reg, key, 20000, &l);
    if (rc != 0)
        fail_msg("checkout %s: %d %s", key, rc, dbpool_last_error());
    PGresult *r = PQexec(dbpool_pg_conn(&l), "SELECT pg_backend_pid()");
    int pid =
        PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    assert_int_equal(dbpool_checkin(&l), 0);
    if (pid <= 0)
        fail_msg("SELECT pg_backend_pid() on %s failed", key);
    return pid;
}

static uint64_t connects_of(dbpool_registry *reg, const char *key)
{
    dbpool *p;
    dbpool_stats st;
    assert_int_equal(dbpool_registry_get(reg, key, &p), 0);
    assert_int_equal(dbpool_stats_get(p, &st), 0);
    dbpool_registry_put(reg, p);
    return st.connects;
}

/*
 * Cap 3: a hot tenant used often, then three tenants used once each, five
 * rounds. Each one-off tenant needs room, so the registry evicts an idle
 * connection for it. By recency (LRU) the third one-off of a round would
 * take the hot tenant's connection (it was last used before the round's
 * one-offs); by frequency the one-offs evict each other and the hot
 * tenant's connection (same backend pid) lives through all 15 evictions.
 */
static void test_hot_survives_one_offs(void **state)
{
    (void)state;
    enum { CAP = 3, ROUNDS = 5, ONE_OFFS = 3, HOT_USES = 20 };
    dbpool_registry *reg = open_reg(CAP);
    char key[32];

    int hot_pid = use(reg, "hot");
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < HOT_USES; i++)
            assert_int_equal(use(reg, "hot"), hot_pid);
        for (int i = 0; i < ONE_OFFS; i++) {
            snprintf(key, sizeof key, "cold_%d_%d", round, i);
            int pid = use(reg, key);
            assert_int_not_equal(pid, hot_pid);
        }
        dbpool_registry_stats st;
        assert_int_equal(dbpool_registry_stats_get(reg, &st), 0);
        assert_true(st.open_connections <= CAP);
        /* the hot tenant's connection is still the one it started with */
        assert_int_equal(use(reg, "hot"), hot_pid);
    }

    dbpool_registry_stats st;
    assert_int_equal(dbpool_registry_stats_get(reg, &st), 0);
    /* the cap was full: every one-off after the first two needed an eviction */
    assert_true(st.evictions >= (uint64_t)(ROUNDS * ONE_OFFS - (CAP - 1)));
    assert_int_equal(connects_of(reg, "hot"), 1);
    assert_int_equal(pgt_count_backends(&srv, "hot"), 1);
    assert_int_equal(dbpool_registry_close(reg), 0);
    g_reg = NULL;
}

static int no_backend_cond(void *app)
{
    return pgt_count_backends(&srv, app) == 0;
}

/*
 * A tenant used once is evicted before tenants used more, whatever the
 * order of last use: cap 4, three warm tenants used 10 times each, then a
 * one-off tenant, then two of the warm ones again, so the third warm tenant
 * is the least recently used; then a second one-off needs room: the first
 * one-off's connection goes, and no warm tenant reconnects.
 */
static void test_one_off_goes_first(void **state)
{
    (void)state;
    enum { CAP = 4 };
    static const char *const warm[] = {"warm_a", "warm_b", "warm_c"};
    dbpool_registry *reg = open_reg(CAP);
    int pid[3];

    for (int k = 0; k < 10; k++)
        for (int i = 0; i < 3; i++) {
            int p = use(reg, warm[i]);
            if (k == 0)
                pid[i] = p;
            assert_int_equal(p, pid[i]);
        }
    (void)use(reg, "once_1"); /* fills the cap */
    for (int i = 0; i < 2; i++)
        assert_int_equal(use(reg, warm[i]), pid[i]);
    /* needs room: warm_c is the least recently used, once_1 the least used */
    (void)use(reg, "once_2");
    for (int i = 0; i < 3; i++)
        assert_int_equal(use(reg, warm[i]), pid[i]);
    /* its backend exits a moment after the close */
    assert_true(pgt_wait_for(no_backend_cond, (void *)"once_1", 10000));
    dbpool_registry_stats st;
    assert_int_equal(dbpool_registry_stats_get(reg, &st), 0);
    assert_int_equal(st.evictions, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(connects_of(reg, warm[i]), 1);
    assert_int_equal(dbpool_registry_close(reg), 0);
    g_reg = NULL;
}

/*
 * More tenants hold connections than the registry looks at per eviction
 * (32: above that it samples them): cap 40 filled by a hot tenant and 39
 * one-off tenants, then 20 more one-offs, each needing room. The hot
 * tenant's connection is the least recently used from the first of those on
 * (LRU would evict it), but never the least worth in a sample that holds
 * another idle one, so it survives every eviction.
 */
static void test_hot_survives_sampling(void **state)
{
    (void)state;
    enum { CAP = 40, MORE = 20 };
    dbpool_registry *reg = open_reg(CAP);
    char key[32];

    int hot_pid = use(reg, "hot");
    for (int i = 0; i < 20; i++)
        assert_int_equal(use(reg, "hot"), hot_pid);
    for (int i = 0; i < CAP - 1 + MORE; i++) {
        snprintf(key, sizeof key, "one_%d", i);
        (void)use(reg, key);
    }
    assert_int_equal(use(reg, "hot"), hot_pid);
    dbpool_registry_stats st;
    assert_int_equal(dbpool_registry_stats_get(reg, &st), 0);
    assert_true(st.open_connections <= CAP);
    assert_true(st.evictions >= MORE);
    assert_int_equal(connects_of(reg, "hot"), 1);
    assert_int_equal(dbpool_registry_close(reg), 0);
    g_reg = NULL;
}

static int group_setup(void **state)
{
    (void)state;
    if (pgt_start(&srv) != 0) {
        fprintf(stderr, "it_registry_evict: could not start PostgreSQL\n");
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
    alarm(280); /* last resort against a hang (CTest allows 300 s) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_hot_survives_one_offs, test_teardown),
        cmocka_unit_test_teardown(test_one_off_goes_first, test_teardown),
        cmocka_unit_test_teardown(test_hot_survives_sampling, test_teardown),
    };
    return cmocka_run_group_tests_name("it_registry_evict", tests, group_setup, group_teardown);
}
