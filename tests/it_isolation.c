/* it_isolation.c - one database's trouble must not reach another pool:
 * a slow host-name lookup and a stuck cancel request (black-holed server)
 * against a real PostgreSQL, with a second pool whose timers, checkouts and
 * open/close stay on time. The lookup is made slow through the driver's
 * lookup function (src/pg/pg_resolve.h); the black hole is the fault relay. */
#include <netdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "dbpool_registry.h"
#include "pg_resolve.h"
#include "itpool.h"
#include "pgserver.h"
#include "relay.h"
#include "schedlag.h"

#define SLOW_HOST "slow.dbpool.test"
#define LOOKUP_MS 1500
/* The healthy pool's deadlines are kept within 50 ms, plus what the OS
 * scheduler imposed on every thread meanwhile (tests/support/schedlag.h). */
#define ON_TIME_MS (50 + pgt_sched_late())

static pgt_server srv;
static atomic_int lookups;

/* SLOW_HOST takes LOOKUP_MS to resolve, to 127.0.0.1; anything else as usual. */
static int slow_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                            struct addrinfo **res)
{
    if (node && strcmp(node, SLOW_HOST) == 0) {
        atomic_fetch_add(&lookups, 1);
        itp_sleep_ms(LOOKUP_MS);
        node = "127.0.0.1";
    }
    return getaddrinfo(node, service, hints, res);
}

static void fast_config(dbpool_config *cfg, int size)
{
    dbpool_config_init(cfg);
    cfg->size = size;
    cfg->idle_interval = 200;
    cfg->backoff_min = 100;
    cfg->backoff_max = 400;
    cfg->connect_timeout = 2000;
    cfg->checkout_timeout = 3000;
}

static dbpool *open_pg(const char *host, int port, const char *app, const dbpool_config *cfg)
{
    char ci[512];
    dbpool *p = NULL;

    snprintf(ci, sizeof ci, "host=%s port=%d user=postgres dbname=postgres application_name=%s",
             host, port, app);
    int rc = dbpool_pg_open(&p, ci, cfg);
    if (rc != 0)
        fail_msg("dbpool_pg_open(%s): %d %s", app, rc, dbpool_last_error());
    return p;
}

static int pred_pings_gt(const dbpool_stats *st, int64_t n)
{
    return (int64_t)st->pings > n;
}

struct idle_wait {
    dbpool *p;
    int n;
};

static int has_idle(void *arg)
{
    struct idle_wait *w = arg;
    dbpool_stats st;
    return dbpool_stats_get(w->p, &st) == 0 && st.idle >= w->n;
}

/* ---------------------------------------------------------------------- */

/* A pool whose host name resolves slowly comes up within lookup + connect
 * time, with one lookup shared by its connects; meanwhile another pool's
 * checkouts, hold timeout and pings, and the open/close of a third pool,
 * stay on time. */
static void test_isolation_slow_lookup(void **state)
{
    (void)state;
    dbpool_config cfg;
    atomic_store(&lookups, 0);
    dbpool__pg_getaddrinfo = slow_getaddrinfo;
    pgt_sched_reset();

    /* the healthy pool first, up and idle */
    fast_config(&cfg, 2);
    cfg.min_size = -1;
    cfg.hold_timeout = 300;
    dbpool *good = open_pg("127.0.0.1", srv.port, "iso_good", &cfg);
    struct idle_wait gw = {good, 2};
    assert_true(pgt_wait_for(has_idle, &gw, 5000));

    int64_t t0 = pgt_now_ms();
    fast_config(&cfg, 4);
    cfg.min_size = -1;
    dbpool *slow = open_pg(SLOW_HOST, srv.port, "iso_slow", &cfg);
    int64_t open_ms = pgt_now_ms() - t0;
    assert_true(open_ms < ON_TIME_MS);

    /* while the lookup runs: open and close another pool, check out from
     * the healthy one, and hold a lease past its hold_timeout */
    itp_sleep_ms(100);
    int64_t t1 = pgt_now_ms();
    fast_config(&cfg, 1);
    dbpool *third = open_pg("127.0.0.1", srv.port, "iso_third", &cfg);
    assert_int_equal(dbpool_close(third), 0);
    int64_t openclose_ms = pgt_now_ms() - t1;

    dbpool_lease lease;
    int64_t t2 = pgt_now_ms();
    assert_int_equal(dbpool_checkout(good, 1000, &lease), 0);
    int64_t checkout_ms = pgt_now_ms() - t2;
    int64_t expired_at = 0;
    while (pgt_now_ms() - t2 < 2000) {
        if (dbpool_lease_check(&lease) == DBPOOL_EEXPIRED) {
            expired_at = pgt_now_ms() - t2;
            break;
        }
        itp_sleep_ms(2);
    }
    assert_int_equal(dbpool_checkin(&lease), DBPOOL_EEXPIRED);
    int64_t pings_before = (int64_t)itp_stats(good).pings;
    /* the healthy pool's idle tick runs during the lookup: a ping completes
     * before the lookup ends */
    int pinged = itp_wait_stats(good, pred_pings_gt, pings_before, LOOKUP_MS + 2000);
    int64_t ping_at = pgt_now_ms() - t0;

    /* the slow pool: every slot up within lookup + connect time */
    struct idle_wait sw = {slow, 4};
    int up = pgt_wait_for(has_idle, &sw, LOOKUP_MS + 2000);
    int64_t up_ms = pgt_now_ms() - t0;
    int64_t pings_after = (int64_t)itp_stats(good).pings;
    fprintf(stderr,
            "# slow lookup %d ms: pool up (4/4 idle) after %lld ms with %d lookup(s); "
            "meanwhile: open %lld ms, open+close %lld ms, checkout %lld ms, hold_timeout 300 "
            "ms fired at %lld ms, healthy pool pinged again at %lld ms (%lld -> %lld); scheduler "
            "lateness %lld ms\n",
            LOOKUP_MS, (long long)up_ms, atomic_load(&lookups), (long long)open_ms,
            (long long)openclose_ms, (long long)checkout_ms, (long long)expired_at,
            (long long)ping_at, (long long)pings_before, (long long)pings_after,
            (long long)pgt_sched_late());
    assert_true(up);
    assert_true(up_ms >= LOOKUP_MS);         /* the lookup really was slow */
    assert_true(atomic_load(&lookups) <= 2); /* shared, not one per slot in a row */
    assert_true(openclose_ms < ON_TIME_MS);
    assert_true(checkout_ms < ON_TIME_MS);
    assert_true(expired_at >= 300 && expired_at < 300 + ON_TIME_MS);
    assert_true(pinged);
    assert_true(ping_at < LOOKUP_MS + ON_TIME_MS); /* the idle tick kept running */
    assert_int_equal(itp_stats(slow).state, DBPOOL_STATE_UP);

    assert_int_equal(dbpool_close(slow), 0);
    assert_int_equal(dbpool_close(good), 0);
    dbpool__pg_getaddrinfo = getaddrinfo;
}

/* Closing a pool while its lookup is still running returns at once; the
 * lookup finishes later without touching freed memory (ASan). */
static void test_isolation_close_during_lookup(void **state)
{
    (void)state;
    dbpool_config cfg;
    atomic_store(&lookups, 0);
    dbpool__pg_getaddrinfo = slow_getaddrinfo;
    pgt_sched_reset();
    fast_config(&cfg, 2);
    cfg.min_size = -1;
    dbpool *slow = open_pg(SLOW_HOST, srv.port, "iso_slow_close", &cfg);
    for (int i = 0; i < 100 && atomic_load(&lookups) == 0; i++)
        itp_sleep_ms(10);
    assert_int_equal(atomic_load(&lookups), 1);
    int64_t t0 = pgt_now_ms();
    assert_int_equal(dbpool_close(slow), 0);
    assert_true(pgt_now_ms() - t0 < ON_TIME_MS);
    itp_sleep_ms(LOOKUP_MS + 200); /* let the lookup end: it must find the pool alive */
    assert_int_equal(pgt_count_backends(&srv, "iso_slow_close"), 0);
    dbpool__pg_getaddrinfo = getaddrinfo;
}

/* ---------------------------------------------------------------------- */

struct sleeper {
    dbpool *pool;
    int rc;
};

/* A cancel request stuck on a black-holed server (hold_timeout on a pool
 * behind the relay) does not delay another pool's statement timeout: its
 * cancel reaches the server, which confirms it (57014), and the statement no
 * longer runs there (pg_stat_activity). */
static void test_isolation_stuck_cancel(void **state)
{
    (void)state;
    relay *r = NULL;
    dbpool_config cfg;
    assert_int_equal(relay_start(&r, "127.0.0.1", srv.port), 0);

    fast_config(&cfg, 1);
    cfg.min_size = -1;
    cfg.hold_timeout = 200;
    cfg.idle_interval = 60000;
    dbpool *bad = open_pg("127.0.0.1", relay_port(r), "iso_holed", &cfg);
    dbpool_lease lease;
    assert_int_equal(dbpool_checkout(bad, 5000, &lease), 0);
    PGconn *pg = dbpool_pg_conn(&lease);
    assert_non_null(pg);
    assert_int_equal(PQsendQuery(pg, "SELECT pg_sleep(30)"), 1);
    relay_set_mode(r, RELAY_BLACKHOLE); /* the cancel for it will hang */
    for (int i = 0; i < 200 && dbpool_lease_check(&lease) != DBPOOL_EEXPIRED; i++)
        itp_sleep_ms(5);
    assert_int_equal(dbpool_lease_check(&lease), DBPOOL_EEXPIRED);
    itp_sleep_ms(50); /* the cancel to the black hole is under way */

    fast_config(&cfg, 1);
    cfg.min_size = -1;
    dbpool *good = open_pg("127.0.0.1", srv.port, "iso_cancel_ok", &cfg);
    dbpool_pg_opts o;
    dbpool_pg_opts_init(&o);
    o.statement_timeout = 300;
    o.cancel_grace = 2000;
    dbpool_pg_result res;
    int64_t t0 = pgt_now_ms();
    int rc = dbpool_pg_query(good, "SELECT pg_sleep(5)", NULL, &o, &res);
    int64_t took = pgt_now_ms() - t0;
    fprintf(stderr,
            "# stuck cancel elsewhere: statement timeout 300 ms -> rc %d (%s) after %lld ms\n", rc,
            res.sqlstate, (long long)took);
    assert_int_equal(rc, DBPOOL_ETIMEDOUT);
    assert_string_equal(res.sqlstate, "57014");
    assert_true(took < 300 + 1000);
    dbpool_pg_result_clear(&res);
    /* nothing of it runs on the server any more */
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM pg_stat_activity WHERE "
                                         "application_name = 'iso_cancel_ok' AND state = 'active'"),
                     0);
    assert_int_equal(dbpool_close(good), 0);

    /* the stuck pool closes at once, too */
    t0 = pgt_now_ms();
    assert_int_equal(dbpool_checkin(&lease), DBPOOL_EEXPIRED);
    assert_int_equal(dbpool_close(bad), 0);
    assert_true(pgt_now_ms() - t0 < 500);
    relay_set_mode(r, RELAY_PASS); /* heal: the stuck cancel completes */
    relay_stop(r);
    pgt_terminate(&srv, "iso_holed");
}

/* ---------------------------------------------------------------------- */

static int resolve_via(void *arg, const char *tenant, char *conninfo, size_t len,
                       dbpool_config *cfg)
{
    int port = *(int *)arg;
    (void)cfg;
    snprintf(conninfo, len,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres application_name=iso_reg_%s",
             port, tenant);
    return 0;
}

/* A registry closes in bounded time while a tenant's cancel is stuck, and
 * nothing touches its memory later (ASan). */
static void test_isolation_registry_close_stuck_cancel(void **state)
{
    (void)state;
    relay *r = NULL;
    assert_int_equal(relay_start(&r, "127.0.0.1", srv.port), 0);
    int port = relay_port(r);
    dbpool_registry_config rc;
    dbpool_registry_config_init(&rc);
    rc.resolve = resolve_via;
    rc.resolve_arg = &port;
    rc.max_connections = 4;
    rc.pool_idle_timeout = 100;
    rc.tenant.size = 1;
    rc.tenant.hold_timeout = 200;
    dbpool_registry *reg = NULL;
    assert_int_equal(dbpool_registry_open(&reg, &rc), 0);

    dbpool_lease lease;
    assert_int_equal(dbpool_registry_checkout(reg, "a", 5000, &lease), 0);
    assert_int_equal(PQsendQuery(dbpool_pg_conn(&lease), "SELECT pg_sleep(30)"), 1);
    relay_set_mode(r, RELAY_BLACKHOLE);
    for (int i = 0; i < 200 && dbpool_lease_check(&lease) != DBPOOL_EEXPIRED; i++)
        itp_sleep_ms(5);
    assert_int_equal(dbpool_lease_check(&lease), DBPOOL_EEXPIRED);
    assert_int_equal(dbpool_checkin(&lease), DBPOOL_EEXPIRED);
    itp_sleep_ms(300); /* tenant "a" is idle past pool_idle_timeout: the tick reclaims it */

    int64_t t0 = pgt_now_ms();
    assert_int_equal(dbpool_registry_close(reg), 0);
    int64_t took = pgt_now_ms() - t0;
    fprintf(stderr, "# registry close with a stuck cancel: %lld ms\n", (long long)took);
    assert_true(took < 500);
    relay_set_mode(r, RELAY_PASS);
    relay_stop(r);
    pgt_terminate(&srv, "iso_reg_a");
}

static int group_setup(void **state)
{
    (void)state;
    if (pgt_sched_start() != 0)
        return -1;
    return pgt_start(&srv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isolation_slow_lookup),
        cmocka_unit_test(test_isolation_close_during_lookup),
        cmocka_unit_test(test_isolation_stuck_cancel),
        cmocka_unit_test(test_isolation_registry_close_stuck_cancel),
    };
    return cmocka_run_group_tests_name("it_isolation", tests, group_setup, group_teardown);
}
