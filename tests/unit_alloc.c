/* unit_alloc.c - allocation failure injection (issue #6): every allocation the
 * library makes goes through dbpool_set_allocator(); fail each one in turn
 * during open, checkout, check-in and close, and check for a clean error, no
 * crash and no leak (live allocations back to 0 once the manager stopped).
 *
 * No database: a stub driver that connects at once, plus dbpool_pg_open() and
 * a registry on a conninfo pointing at a closed port (127.0.0.1:1), which
 * never connects but runs the libpq driver's allocations on the manager
 * thread. The non-blocking checkout is cycled the same way. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dbpool.h"
#include "dbpool_async.h"
#include "stub_driver.h"
#include "dbpool_pg.h"
#include "dbpool_registry.h"

/* Give up if a cycle still reaches the failure point after this many
 * allocations: the library would be allocating without bound. */
#define MAX_ALLOCS 2000
#define WAIT_MS 3000

/* ---- counting allocator --------------------------------------------------- */

static atomic_long n_calls;   /* allocation calls so far in this cycle */
static atomic_long n_live;    /* allocations not yet freed */
static atomic_long n_failed;  /* allocations we made fail in this cycle */
static atomic_long fail_at;   /* 1-based call number to fail; 0 = never */
static atomic_int persistent; /* fail fail_at and every call after it */

static int should_fail(void)
{
    long n = atomic_fetch_add(&n_calls, 1) + 1;
    long f = atomic_load(&fail_at);

    if (f && (n == f || (atomic_load(&persistent) && n > f))) {
        atomic_fetch_add(&n_failed, 1);
        return 1;
    }
    return 0;
}

static void *t_malloc(size_t size)
{
    if (should_fail())
        return NULL;
    void *p = malloc(size);
    if (p)
        atomic_fetch_add(&n_live, 1);
    return p;
}

static void *t_calloc(size_t n, size_t size)
{
    if (should_fail())
        return NULL;
    void *p = calloc(n, size);
    if (p)
        atomic_fetch_add(&n_live, 1);
    return p;
}

static void t_free(void *p)
{
    if (p) {
        atomic_fetch_sub(&n_live, 1);
        free(p);
    }
}

static const dbpool_allocator counting = {t_malloc, t_calloc, t_free};

static void install(long n, int persist)
{
    atomic_store(&n_calls, 0);
    atomic_store(&n_failed, 0);
    atomic_store(&fail_at, n);
    atomic_store(&persistent, persist);
    atomic_store(&n_live, 0); /* a leak in an earlier cycle was reported there */
    int rc = dbpool_set_allocator(&counting);
    if (rc != 0)
        fail_msg("dbpool_set_allocator: %d (%s): a pool from an earlier cycle is still open?", rc,
                 dbpool_last_error());
}

/* After the last close the manager has stopped: the allocator can be reset
 * and every allocation must have been freed. */
static void uninstall(const char *what, long n)
{
    atomic_store(&fail_at, 0);
    int rc = dbpool_set_allocator(NULL);
    if (rc != 0)
        fail_msg("%s, fail at %ld: dbpool_set_allocator(NULL) = %d (%s): manager still runs "
                 "after the last close",
                 what, n, rc, dbpool_last_error());
    long live = atomic_load(&n_live);
    if (live != 0)
        fail_msg("%s, fail at %ld: %ld allocation(s) leaked", what, n, live);
}

/* ---- the stub driver (tests/stub), with a slow cancel when asked ---------- */

static struct stub_ctl ctl;
static int dummy_conn; /* a non-NULL address no pool has */

/* ---- callbacks: quiet, and they must never see a NULL -------------------- */

static atomic_int n_events;

static void on_event(void *arg, const dbpool_event *ev)
{
    (void)arg;
    if (!ev || !ev->detail || !ev->pool_name)
        abort(); /* cmocka's assertions are not for the manager thread */
    atomic_fetch_add(&n_events, 1);
}

static void on_log(void *arg, dbpool_log_level level, const char *pool, const char *msg)
{
    (void)arg;
    (void)level;
    if (!pool || !msg)
        abort();
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An error from an allocation failure: the documented code and a message. */
static void assert_enomem(const char *what, long n, int rc)
{
    if (rc != DBPOOL_ENOMEM)
        fail_msg("%s, fail at %ld: want DBPOOL_ENOMEM, got %d (%s)", what, n, rc,
                 dbpool_last_error());
    if (!strstr(dbpool_last_error(), "memory"))
        fail_msg("%s, fail at %ld: message \"%s\" does not say out of memory", what, n,
                 dbpool_last_error());
}

/* ---- stub pool cycle --------------------------------------------------------- */

struct stub_case {
    const char *what;
    int min_size; /* 0: slots are allocated by the first checkout */
    int events;   /* event_cb set: the event ring is allocated too */
    int persist;  /* every allocation from the Nth on fails */
    int hold;     /* hold the lease past hold_timeout: the manager allocates a
                     cancel job for the helper thread */
};

/*
 * open, checkout, check-in, close with allocation n failing. Returns 1 if the
 * failure was injected (so the next n must be tried), 0 if the cycle made
 * fewer than n allocations.
 */
static int stub_cycle(const struct stub_case *c, long n)
{
    dbpool_config cfg;
    dbpool *p = (dbpool *)&dummy_conn; /* must be reset to NULL on error */
    dbpool_lease lease;
    int rc;

    dbpool_config_init(&cfg);
    cfg.name = "alloc";
    cfg.size = 2;
    cfg.min_size = c->min_size;
    cfg.after_connect = "SELECT 1"; /* the stub ignores it; the pool copies it */
    cfg.backoff_min = 10;
    cfg.backoff_max = 50;
    cfg.log_cb = on_log;
    cfg.log_level = DBPOOL_LOG_DEBUG;
    if (c->events)
        cfg.event_cb = on_event;
    if (c->hold)
        cfg.hold_timeout = 20;

    install(n, c->persist);
    rc = dbpool_open(&p, &stub_driver, &ctl, &cfg);
    if (rc != 0) {
        assert_enomem(c->what, n, rc);
        assert_null(p);
    } else {
        assert_non_null(p);
        /* Bounded wait for a usable pool. A single failed allocation must not
         * break the pool for good: with one failure the checkout succeeds
         * eventually; with persistent failures ENOMEM is all we can ask. */
        int64_t deadline = now_ms() + WAIT_MS;
        for (;;) {
            rc = dbpool_checkout(p, 500, &lease);
            if (rc == 0 || now_ms() >= deadline)
                break;
            if (rc != DBPOOL_ENOMEM && rc != DBPOOL_ETIMEDOUT && rc != DBPOOL_EUNAVAILABLE)
                break;
            if (rc == DBPOOL_ENOMEM && c->persist)
                break;
            sleep_ms(10);
        }
        if (rc == 0 && c->hold) {
            /* wait for hold_timeout to fire and for the cancel to be done
             * with (run + freed, or freed at once if the job could not be
             * allocated; or neither if even the job's own allocation failed:
             * then the token is freed at check-in) */
            int before = atomic_load(&ctl.cancel_frees);
            deadline = now_ms() + WAIT_MS;
            while (dbpool_lease_check(&lease) != DBPOOL_EEXPIRED && now_ms() < deadline)
                sleep_ms(2);
            assert_int_equal(dbpool_lease_check(&lease), DBPOOL_EEXPIRED);
            deadline = now_ms() + 200;
            while (atomic_load(&ctl.cancel_frees) == before && now_ms() < deadline)
                sleep_ms(2);
            sleep_ms(5); /* the helper frees its job right after cancel_free */
            rc = dbpool_checkin(&lease);
            if (rc != DBPOOL_EEXPIRED)
                fail_msg("%s, fail at %ld: checkin of an expired lease = %d (%s)", c->what, n, rc,
                         dbpool_last_error());
        } else if (rc == 0) {
            assert_non_null(dbpool_lease_conn(&lease));
            rc = dbpool_checkin(&lease);
            if (rc != 0)
                fail_msg("%s, fail at %ld: checkin = %d (%s)", c->what, n, rc, dbpool_last_error());
        } else if (c->persist) {
            assert_enomem(c->what, n, rc);
        } else {
            fail_msg("%s, fail at %ld: checkout after one failed allocation = %d (%s)", c->what, n,
                     rc, dbpool_last_error());
        }
        rc = dbpool_close(p);
        if (rc != 0)
            fail_msg("%s, fail at %ld: close = %d (%s)", c->what, n, rc, dbpool_last_error());
    }
    uninstall(c->what, n);
    return atomic_load(&n_failed) > 0;
}

static void run_stub(const struct stub_case *c)
{
    long n;

    for (n = 1; n <= MAX_ALLOCS; n++)
        if (!stub_cycle(c, n))
            break;
    if (n > MAX_ALLOCS)
        fail_msg("%s: still allocating after %d allocations", c->what, MAX_ALLOCS);
    /* the library does allocate in this cycle: the loop ran at least twice */
    assert_true(n > 1);
    print_message("%s: %ld allocation(s) failed in turn, all clean\n", c->what, n - 1);
}

static void test_stub_each_once(void **state)
{
    (void)state;
    const struct stub_case c = {"stub, one failure", -1, 0, 0, 0};
    run_stub(&c);
}

static void test_stub_each_persistent(void **state)
{
    (void)state;
    const struct stub_case c = {"stub, failures from N on", -1, 0, 1, 0};
    run_stub(&c);
}

static void test_stub_on_demand(void **state)
{
    (void)state;
    const struct stub_case c = {"stub min_size=0 (slots at checkout)", 0, 0, 0, 0};
    run_stub(&c);
    const struct stub_case c2 = {"stub min_size=0, failures from N on", 0, 0, 1, 0};
    run_stub(&c2);
}

static void test_stub_events(void **state)
{
    (void)state;
    const struct stub_case c = {"stub with event_cb", -1, 1, 0, 0};
    run_stub(&c);
    const struct stub_case c2 = {"stub with event_cb, failures from N on", -1, 1, 1, 0};
    run_stub(&c2);
}

/* ---- PostgreSQL driver on a closed port ------------------------------------ */

#define CLOSED_CONNINFO                                                                            \
    "host=127.0.0.1 port=1 user=app password=app_secret_pw dbname=postgres connect_timeout=2"

/* open, wait for the first connect attempt to fail (refused, or out of memory
 * when the driver's own allocation was the one failed), close. */
static int pg_cycle(long n, int persist, const char *conninfo)
{
    dbpool_config cfg;
    dbpool *p = (dbpool *)&dummy_conn;
    dbpool_stats st;
    int rc;

    dbpool_config_init(&cfg);
    cfg.name = "alloc-pg";
    cfg.size = 2;
    cfg.after_connect = "SET application_name = 'alloc'";
    cfg.backoff_min = 60000; /* one attempt per slot per cycle: deterministic */
    cfg.backoff_max = 60000;
    cfg.log_cb = on_log;
    cfg.log_level = DBPOOL_LOG_DEBUG;
    cfg.event_cb = on_event;

    install(n, persist);
    rc = dbpool_pg_open(&p, conninfo, &cfg);
    if (rc != 0) {
        assert_enomem("pg", n, rc);
        assert_null(p);
        if (strstr(dbpool_last_error(), "app_secret_pw"))
            fail_msg("pg, fail at %ld: password in \"%s\"", n, dbpool_last_error());
    } else {
        int64_t deadline = now_ms() + WAIT_MS;
        do {
            assert_int_equal(dbpool_stats_get(p, &st), 0);
            if (st.connect_failures >= (uint64_t)cfg.size)
                break;
            sleep_ms(5);
        } while (now_ms() < deadline);
        if (st.connect_failures < (uint64_t)cfg.size)
            fail_msg("pg, fail at %ld: %llu connect failure(s) after %d ms, want %d", n,
                     (unsigned long long)st.connect_failures, WAIT_MS, cfg.size);
        if (strstr(st.last_error, "app_secret_pw"))
            fail_msg("pg, fail at %ld: password in last_error \"%s\"", n, st.last_error);
        dbpool_lease lease;
        rc = dbpool_checkout(p, 0, &lease);
        if (rc != DBPOOL_EUNAVAILABLE && rc != DBPOOL_EBUSY)
            fail_msg("pg, fail at %ld: checkout on a pool that cannot connect = %d (%s)", n, rc,
                     dbpool_last_error());
        rc = dbpool_close(p);
        if (rc != 0)
            fail_msg("pg, fail at %ld: close = %d (%s)", n, rc, dbpool_last_error());
    }
    uninstall("pg", n);
    return atomic_load(&n_failed) > 0;
}

static void test_pg_closed_port(void **state)
{
    (void)state;
    static const char *const conninfos[] = {
        CLOSED_CONNINFO,
        "postgresql://app:app_secret_pw@127.0.0.1:1/postgres?connect_timeout=2",
    };
    for (size_t i = 0; i < sizeof(conninfos) / sizeof(conninfos[0]); i++) {
        for (int persist = 0; persist <= 1; persist++) {
            long n;
            for (n = 1; n <= MAX_ALLOCS; n++)
                if (!pg_cycle(n, persist, conninfos[i]))
                    break;
            if (n > MAX_ALLOCS)
                fail_msg("pg: still allocating after %d allocations", MAX_ALLOCS);
            assert_true(n > 1);
            print_message("pg %s%s: %ld allocation(s) failed in turn, all clean\n",
                          i ? "URI" : "key=value", persist ? ", persistent" : "", n - 1);
        }
    }
}

/* ---- registry: a tenant pool created and reclaimed under failures -------- */

static int resolve(void *arg, const char *tenant, char *conninfo, size_t len, dbpool_config *cfg)
{
    (void)arg;
    (void)tenant;
    cfg->log_cb = on_log;
    cfg->backoff_min = 60000;
    cfg->backoff_max = 60000;
    snprintf(conninfo, len, "%s", CLOSED_CONNINFO);
    return 0;
}

static int registry_cycle(long n, int persist)
{
    dbpool_registry_config rc_cfg;
    dbpool_registry *reg = NULL;
    dbpool *p = NULL;
    int rc;

    dbpool_registry_config_init(&rc_cfg);
    rc_cfg.resolve = resolve;
    rc_cfg.max_connections = 4;

    install(n, persist);
    rc = dbpool_registry_open(&reg, &rc_cfg);
    if (rc != 0) {
        assert_enomem("registry open", n, rc);
    } else {
        rc = dbpool_registry_get(reg, "acme", &p);
        if (rc != 0) {
            assert_enomem("registry get", n, rc);
        } else {
            assert_non_null(p);
            dbpool_registry_stats st;
            assert_int_equal(dbpool_registry_stats_get(reg, &st), 0);
            assert_int_equal(st.tenants, 1);
            dbpool_registry_put(reg, p);
        }
        rc = dbpool_registry_close(reg);
        if (rc != 0)
            fail_msg("registry, fail at %ld: close = %d (%s)", n, rc, dbpool_last_error());
    }
    uninstall("registry", n);
    return atomic_load(&n_failed) > 0;
}

static void test_registry(void **state)
{
    (void)state;
    for (int persist = 0; persist <= 1; persist++) {
        long n;
        for (n = 1; n <= MAX_ALLOCS; n++)
            if (!registry_cycle(n, persist))
                break;
        if (n > MAX_ALLOCS)
            fail_msg("registry: still allocating after %d allocations", MAX_ALLOCS);
        assert_true(n > 1);
        print_message("registry%s: %ld allocation(s) failed in turn, all clean\n",
                      persist ? ", persistent" : "", n - 1);
    }
}

/* ---- the hook itself ------------------------------------------------------ */

static void test_set_allocator_rules(void **state)
{
    (void)state;
    dbpool_allocator partial = {t_malloc, NULL, t_free};
    dbpool *p = NULL;

    assert_int_equal(dbpool_set_allocator(&partial), DBPOOL_EINVAL);
    partial = (dbpool_allocator){NULL, t_calloc, t_free};
    assert_int_equal(dbpool_set_allocator(&partial), DBPOOL_EINVAL);
    partial = (dbpool_allocator){t_malloc, t_calloc, NULL};
    assert_int_equal(dbpool_set_allocator(&partial), DBPOOL_EINVAL);

    install(0, 0);
    assert_int_equal(dbpool_open(&p, &stub_driver, &ctl, NULL), 0);
    /* while a pool is open the manager runs: the allocator cannot change */
    assert_int_equal(dbpool_set_allocator(NULL), DBPOOL_EBUSY);
    assert_int_equal(dbpool_set_allocator(&counting), DBPOOL_EBUSY);
    assert_true(atomic_load(&n_live) > 0);
    assert_int_equal(dbpool_close(p), 0);
    uninstall("set_allocator rules", 0);
}

static void test_stub_hold_timeout(void **state)
{
    (void)state;
    const struct stub_case c = {"stub, hold_timeout cancel", -1, 1, 0, 1};
    run_stub(&c);
    const struct stub_case c2 = {"stub, hold_timeout cancel, failures from N on", -1, 1, 1, 1};
    run_stub(&c2);
}

/* ---- the non-blocking checkout (dbpool_async.h) -------------------------- */

struct async_rec {
    int calls, status;
};

static void on_async(void *arg, int status, dbpool_lease lease)
{
    struct async_rec *r = arg;
    r->calls++;
    r->status = status;
    if (status == 0 && dbpool_checkin(&lease) != 0)
        r->status = 99;
}

/* Run the queue until r's callback ran, at most WAIT_MS. */
static void async_await(dbpool_cq *cq, const struct async_rec *r)
{
    struct pollfd pfd = {dbpool_cq_fd(cq), POLLIN, 0};
    int64_t deadline = now_ms() + WAIT_MS;

    while (r->calls == 0 && now_ms() < deadline)
        if (poll(&pfd, 1, 50) > 0)
            assert_true(dbpool_cq_run(cq, 0) >= 0);
}

/*
 * cq_new, open, one async checkout held past the pool's close, with
 * allocation n failing: a clean ENOMEM where one is due, the callback exactly
 * once otherwise, and nothing leaked.
 */
static int async_cycle(long n, int persist)
{
    const char *what = persist ? "async, failures from N on" : "async, one failure";
    dbpool_config cfg;
    dbpool_cq *cq = NULL;
    dbpool *p = NULL;
    struct async_rec r[2];

    memset(r, 0, sizeof r);
    dbpool_config_init(&cfg);
    cfg.size = 1;
    cfg.log_cb = on_log;
    install(n, persist);
    int rc = dbpool_cq_new(&cq);
    if (rc != 0) {
        assert_enomem(what, n, rc);
        assert_null(cq);
        uninstall(what, n);
        return 1;
    }
    rc = dbpool_open(&p, &stub_driver, &ctl, &cfg);
    if (rc != 0) {
        assert_enomem(what, n, rc);
    } else {
        /* the first is served (or fails), the second waits behind it and
         * is completed by the close */
        for (int i = 0; i < 2; i++) {
            rc = dbpool_checkout_async(p, cq, 2000, on_async, &r[i], NULL);
            if (rc != 0) {
                assert_enomem(what, n, rc);
                r[i].calls = -1; /* never called */
            }
        }
        if (r[0].calls == 0)
            async_await(cq, &r[0]);
        /* EBUSY: r[0]'s check-in handed the connection to r[1], whose
         * callback has not run yet (it checks the lease in below) */
        rc = dbpool_close(p);
        if (rc != 0 && rc != DBPOOL_EBUSY)
            fail_msg("%s, fail at %ld: close = %d (%s)", what, n, rc, dbpool_last_error());
        while (dbpool_cq_run(cq, 0) > 0)
            ;
        for (int i = 0; i < 2; i++) {
            if (r[i].calls == -1)
                continue;
            if (r[i].calls != 1)
                fail_msg("%s, fail at %ld: request %d called %d times", what, n, i, r[i].calls);
            int st = r[i].status;
            if (st != 0 && st != DBPOOL_ENOMEM && st != DBPOOL_ETIMEDOUT &&
                st != DBPOOL_EUNAVAILABLE && st != DBPOOL_ECLOSED)
                fail_msg("%s, fail at %ld: request %d ended with %d", what, n, i, st);
        }
    }
    assert_int_equal(dbpool_cq_free(cq), 0);
    uninstall(what, n);
    return atomic_load(&n_failed) > 0;
}

static void test_async(void **state)
{
    (void)state;
    for (int persist = 0; persist <= 1; persist++) {
        long n;
        for (n = 1; n <= MAX_ALLOCS; n++)
            if (!async_cycle(n, persist))
                break;
        if (n > MAX_ALLOCS)
            fail_msg("async: still allocating after %d allocations", MAX_ALLOCS);
        assert_true(n > 1);
        print_message("async%s: %ld allocation(s) failed in turn, all clean\n",
                      persist ? ", persistent" : "", n - 1);
    }
}

/*
 * The helper thread is detached and may still be running a cancel job when
 * the last dbpool_close() returns; it then frees the job with the library's
 * allocator. A caller that resets the allocator right after the last close
 * (as the header allows: no pool is open) must not see a late free through
 * the old allocator.
 */
static void test_allocator_quiet_after_close(void **state)
{
    (void)state;
    dbpool_config cfg;
    dbpool *p = NULL;
    dbpool_lease lease;

    dbpool_config_init(&cfg);
    cfg.size = 1;
    cfg.hold_timeout = 10;
    cfg.log_cb = on_log;
    atomic_store(&ctl.cancel_sleep_ms, 200); /* a slow cancel, like PQcancel on a dead host */
    int runs_before = atomic_load(&ctl.cancel_runs);
    int frees_before = atomic_load(&ctl.cancel_frees);
    install(0, 0);
    assert_int_equal(dbpool_open(&p, &stub_driver, &ctl, &cfg), 0);
    assert_int_equal(dbpool_checkout(p, 2000, &lease), 0);
    int64_t deadline = now_ms() + WAIT_MS;
    while (dbpool_lease_check(&lease) != DBPOOL_EEXPIRED && now_ms() < deadline)
        sleep_ms(2);
    assert_int_equal(dbpool_lease_check(&lease), DBPOOL_EEXPIRED);
    sleep_ms(20); /* the helper is inside cancel_run now */
    assert_int_equal(dbpool_checkin(&lease), DBPOOL_EEXPIRED);
    assert_int_equal(dbpool_close(p), 0);
    int rc = dbpool_set_allocator(NULL);
    long live = atomic_load(&n_live);
    /* let the helper finish whatever the outcome, so that its late frees do
     * not land in the next test's counts */
    deadline = now_ms() + 10000;
    while (atomic_load(&ctl.cancel_frees) == frees_before && now_ms() < deadline)
        sleep_ms(10);
    sleep_ms(200);
    atomic_store(&ctl.cancel_sleep_ms, 0);
    assert_int_equal(atomic_load(&ctl.cancel_runs), runs_before + 1);
    if (rc == 0 && live != 0)
        fail_msg("dbpool_set_allocator(NULL) succeeded after the last close while the helper "
                 "thread still held %ld allocation(s) of the old allocator (it freed them "
                 "later through the new one)",
                 live);
    if (rc != 0) /* the library chose to refuse until the helper is done */
        assert_int_equal(dbpool_set_allocator(NULL), 0);
    assert_int_equal(atomic_load(&n_live), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_allocator_rules),
        cmocka_unit_test(test_stub_each_once),
        cmocka_unit_test(test_stub_each_persistent),
        cmocka_unit_test(test_stub_on_demand),
        cmocka_unit_test(test_stub_events),
        cmocka_unit_test(test_stub_hold_timeout),
        cmocka_unit_test(test_async),
        cmocka_unit_test(test_allocator_quiet_after_close),
        cmocka_unit_test(test_pg_closed_port),
        cmocka_unit_test(test_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
