/* unit_misuse.c - the API used wrongly (issue #6): NULL for every pointer
 * argument, double and stale check-ins, use after close, close twice, options
 * out of range, bad timeouts, absurd sizes, close from a callback. Each gets
 * the error the header documents; nothing crashes or hangs.
 *
 * No database: a stub driver that connects at once. dbpool_pg_* and registry
 * functions are only called where they fail before any connect. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include "dbpool.h"
#include "stub_driver.h"
#include "dbpool_pg.h"
#include "dbpool_registry.h"

#define VALID_CONNINFO "host=127.0.0.1 port=1 dbname=misuse user=u password=misuse_pw"

/* A non-NULL value no real pool has: checks that *out is reset on error. */
#define SENTINEL ((dbpool *)(uintptr_t)0x1)

static void quiet_log(void *arg, dbpool_log_level level, const char *pool, const char *msg)
{
    (void)arg;
    (void)level;
    (void)pool;
    (void)msg;
}

/* ---- helpers ------------------------------------------------------------------ */

#define EXPECT(call, want)                                                                         \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != (want))                                                                         \
            fail_msg("%s: want %d (%s), got %d (%s): %s", #call, (int)(want),                      \
                     dbpool_strerror(want), rc_, dbpool_strerror(rc_), dbpool_last_error());       \
    } while (0)

static void assert_error_mentions(const char *what, const char *context)
{
    if (!strstr(dbpool_last_error(), what))
        fail_msg("%s: message \"%s\" does not name \"%s\"", context, dbpool_last_error(), what);
}

static void stub_config(dbpool_config *cfg, int size)
{
    dbpool_config_init(cfg);
    cfg->name = "misuse";
    cfg->size = size;
    cfg->backoff_min = 10;
    cfg->backoff_max = 50;
    cfg->log_cb = quiet_log;
}

static dbpool *open_stub(int size)
{
    dbpool_config cfg;
    dbpool *p = NULL;

    stub_config(&cfg, size);
    EXPECT(dbpool_open(&p, &stub_driver, NULL, &cfg), 0);
    assert_non_null(p);
    return p;
}

static void checkout_ok(dbpool *p, dbpool_lease *l)
{
    int rc = dbpool_checkout(p, 3000, l);
    if (rc != 0)
        fail_msg("checkout: %d (%s)", rc, dbpool_last_error());
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- NULL everywhere ---------------------------------------------------------- */

static void test_null_errors_and_config(void **state)
{
    (void)state;
    static const int codes[] = {
        DBPOOL_OK,
        DBPOOL_EINVAL,
        DBPOOL_ENOMEM,
        DBPOOL_ETIMEDOUT,
        DBPOOL_EDROPPED,
        DBPOOL_EBUSY,
        DBPOOL_ESTALE,
        DBPOOL_ECLOSED,
        DBPOOL_EUNAVAILABLE,
        DBPOOL_ECONNECT,
        DBPOOL_EEXPIRED,
        DBPOOL_ESYSTEM,
        DBPOOL_EQUERY,
        DBPOOL_ECONNLOST,
        DBPOOL_ECOMMIT_UNKNOWN,
        DBPOOL_EUNKNOWN,
        DBPOOL_EFORKED,
        DBPOOL_ENOOWNER,
        DBPOOL_ETXENDED,
        1,
        -99,
        INT_MIN,
        INT_MAX,
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *s = dbpool_strerror(codes[i]);
        assert_non_null(s);
        assert_true(*s != '\0');
    }
    assert_non_null(dbpool_last_error());
    assert_non_null(dbpool_state_name((dbpool_state)99));
    assert_non_null(dbpool_state_name((dbpool_state)-1));

    /* allocator: a partial one is refused, NULL restores libc */
    dbpool_allocator partial = {malloc, NULL, free};
    EXPECT(dbpool_set_allocator(&partial), DBPOOL_EINVAL);
    EXPECT(dbpool_set_allocator(NULL), 0);

    dbpool_config cfg;
    dbpool_config_init(NULL); /* no-op, no crash */
    dbpool_config_init(&cfg);
    EXPECT(dbpool_config_set(NULL, "size", "5"), DBPOOL_EINVAL);
    EXPECT(dbpool_config_set(&cfg, NULL, "5"), DBPOOL_EINVAL);
    EXPECT(dbpool_config_set(&cfg, "size", NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_config_parse(NULL, "size=5"), DBPOOL_EINVAL);
    EXPECT(dbpool_config_parse(&cfg, NULL), DBPOOL_EINVAL);
    assert_int_equal(cfg.size, 10); /* untouched */
}

static void test_null_pool_api(void **state)
{
    (void)state;
    dbpool *p = SENTINEL;
    dbpool_lease lease, zero;
    dbpool_stats st;
    dbpool_lease_info info;
    char buf[4096];
    size_t needed = 0;

    /* open */
    EXPECT(dbpool_open(NULL, &stub_driver, NULL, NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_open(&p, NULL, NULL, NULL), DBPOOL_EINVAL);
    assert_null(p);
    dbpool_driver d = stub_driver;
    d.connect_start = NULL;
    p = SENTINEL;
    EXPECT(dbpool_open(&p, &d, NULL, NULL), DBPOOL_EINVAL);
    assert_null(p);
    d = stub_driver;
    d.connect_poll = NULL;
    EXPECT(dbpool_open(&p, &d, NULL, NULL), DBPOOL_EINVAL);
    d = stub_driver;
    d.disconnect = NULL;
    EXPECT(dbpool_open(&p, &d, NULL, NULL), DBPOOL_EINVAL);

    /* leases */
    memset(&zero, 0, sizeof(zero));
    EXPECT(dbpool_checkout(NULL, 0, &lease), DBPOOL_EINVAL);
    EXPECT(dbpool_checkout(NULL, DBPOOL_DEFAULT_TIMEOUT, NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_checkin(NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_discard(NULL), DBPOOL_EINVAL);
    lease = zero;
    EXPECT(dbpool_checkin(&lease), DBPOOL_EINVAL); /* a zeroed lease */
    EXPECT(dbpool_discard(&lease), DBPOOL_EINVAL);
    assert_null(dbpool_lease_conn(NULL));
    assert_null(dbpool_lease_conn(&zero));
    assert_null(dbpool_pg_conn(NULL));
    assert_null(dbpool_pg_conn(&zero));
    EXPECT(dbpool_lease_check(NULL), DBPOOL_EINVAL);
    /* a zeroed lease is "not checked out": the header does not say which of
     * the two codes; check-in says EINVAL, the accessors say ESTALE */
    int rc = dbpool_lease_check(&zero);
    assert_true(rc == DBPOOL_ESTALE || rc == DBPOOL_EINVAL);
    EXPECT(dbpool_lease_info_get(NULL, &info), DBPOOL_EINVAL);
    EXPECT(dbpool_lease_info_get(&zero, NULL), DBPOOL_EINVAL);
    rc = dbpool_lease_info_get(&zero, &info);
    assert_true(rc == DBPOOL_ESTALE || rc == DBPOOL_EINVAL);

    /* pool control */
    EXPECT(dbpool_close(NULL), 0); /* documented no-op */
    EXPECT(dbpool_reconnect(NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_restart(NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_pause(NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_resume(NULL), DBPOOL_EINVAL);

    /* stats */
    EXPECT(dbpool_stats_get(NULL, &st), DBPOOL_EINVAL);
    assert_null(dbpool_pool_name(NULL));
    EXPECT(dbpool_stats_prometheus(NULL, 1, buf, sizeof(buf), NULL), DBPOOL_EINVAL);
    dbpool *none[1] = {NULL};
    EXPECT(dbpool_stats_prometheus(none, 1, NULL, 10, NULL), DBPOOL_EINVAL);
    /* a NULL entry is skipped; NULL buffer of size 0 is a size query */
    EXPECT(dbpool_stats_prometheus(none, 1, NULL, 0, &needed), DBPOOL_ENOMEM);
    assert_true(needed > 1);
    EXPECT(dbpool_stats_prometheus(NULL, 0, buf, sizeof(buf), NULL), 0 /* headers only */);

    /* a live pool with NULL out-parameters */
    p = open_stub(1);
    EXPECT(dbpool_checkout(p, 0, NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_stats_get(p, NULL), DBPOOL_EINVAL);
    checkout_ok(p, &lease);
    EXPECT(dbpool_lease_info_get(&lease, NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_lease_info_get(&lease, &info), 0);
    /* a stub lease is not a PostgreSQL lease */
    assert_null(dbpool_pg_conn(&lease));
    assert_non_null(dbpool_lease_conn(&lease));
    EXPECT(dbpool_checkin(&lease), 0);
    EXPECT(dbpool_close(p), 0);
}

static void test_null_pg_api(void **state)
{
    (void)state;
    dbpool *p = SENTINEL;
    char buf[256];

    EXPECT(dbpool_pg_open(NULL, VALID_CONNINFO, NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_pg_open(&p, NULL, NULL), DBPOOL_EINVAL);
    assert_null(p);
    EXPECT(dbpool_pg_redact(NULL, buf, sizeof(buf)), DBPOOL_EINVAL);
    EXPECT(dbpool_pg_redact(VALID_CONNINFO, NULL, sizeof(buf)), DBPOOL_EINVAL);
    EXPECT(dbpool_pg_redact(VALID_CONNINFO, buf, 0), DBPOOL_EINVAL);
    /* a tiny buffer: whatever is returned, it is terminated and password-free */
    for (size_t n = 1; n < 80; n++) {
        memset(buf, 'X', sizeof(buf));
        int rc = dbpool_pg_redact(VALID_CONNINFO, buf, n);
        assert_true(rc == 0 || rc == DBPOOL_ENOMEM);
        assert_non_null(memchr(buf, '\0', n));
        assert_null(strstr(buf, "misuse_pw"));
        assert_true(buf[n] == 'X'); /* nothing written past buflen */
    }
    /* malformed conninfo */
    EXPECT(dbpool_pg_redact("this is not = a conninfo '", buf, sizeof(buf)), DBPOOL_EINVAL);
    EXPECT(dbpool_pg_open(&p, "nonsense_key=1", NULL), DBPOOL_EINVAL);
    assert_null(p);
    EXPECT(dbpool_pg_open(&p, "postgresql://u:pw@host:99999/db", NULL), DBPOOL_EINVAL);
    assert_null(p);

#ifdef DBPOOL_TEST_PG_QUERY
    dbpool_pg_result r;
    dbpool_pg_opts o;
    dbpool_pg_tx_opts to;
    dbpool_lease zero;
    memset(&zero, 0, sizeof(zero));
    memset(&r, 0, sizeof(r));
    dbpool_pg_opts_init(&o);
    dbpool_pg_tx_opts_init(&to);
    dbpool_pg_result_clear(NULL); /* documented no-op */
    dbpool_pg_result_clear(&r);
    EXPECT(dbpool_pg_query(NULL, "SELECT 1", NULL, NULL, &r), DBPOOL_EINVAL);
    EXPECT(dbpool_pg_query_prepared(NULL, "SELECT 1", NULL, NULL, &r), DBPOOL_EINVAL);
    EXPECT(dbpool_pg_exec(NULL, "SELECT 1", NULL, NULL, &r), DBPOOL_EINVAL);
    EXPECT(dbpool_pg_exec_prepared(NULL, "SELECT 1", NULL, NULL, &r), DBPOOL_EINVAL);
    EXPECT(dbpool_pg_transaction(NULL, NULL, NULL, NULL, NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_pg_transaction_lease(NULL, NULL, NULL, NULL), DBPOOL_EINVAL);
    int rc = dbpool_pg_exec(&zero, "SELECT 1", NULL, NULL, &r);
    assert_true(rc == DBPOOL_EINVAL || rc == DBPOOL_ESTALE);
    dbpool_pg_result_clear(&r);

    /* NULL sql / fn on a pool; and the helpers on a pool that is not
     * PostgreSQL must refuse, not treat the stub's handle as a PGconn */
    p = open_stub(1);
    EXPECT(dbpool_pg_query(p, NULL, NULL, NULL, &r), DBPOOL_EINVAL);
    dbpool_pg_result_clear(&r);
    EXPECT(dbpool_pg_query_prepared(p, NULL, NULL, NULL, &r), DBPOOL_EINVAL);
    dbpool_pg_result_clear(&r);
    EXPECT(dbpool_pg_transaction(p, NULL, NULL, NULL, NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_pg_query(p, "SELECT 1", NULL, &o, &r), DBPOOL_EINVAL);
    dbpool_pg_result_clear(&r);
    dbpool_lease lease;
    checkout_ok(p, &lease);
    EXPECT(dbpool_pg_exec(&lease, NULL, NULL, NULL, &r), DBPOOL_EINVAL);
    dbpool_pg_result_clear(&r);
    EXPECT(dbpool_pg_exec(&lease, "SELECT 1", NULL, NULL, &r), DBPOOL_EINVAL);
    dbpool_pg_result_clear(&r);
    EXPECT(dbpool_pg_transaction_lease(&lease, NULL, NULL, &to), DBPOOL_EINVAL);
    EXPECT(dbpool_checkin(&lease), 0);
    EXPECT(dbpool_close(p), 0);
#endif
}

static int refuse(void *arg, const char *tenant, char *conninfo, size_t len, dbpool_config *cfg)
{
    (void)arg;
    (void)cfg;
    if (!strcmp(tenant, "bad-conninfo")) {
        snprintf(conninfo, len, "this is not a conninfo");
        return 0;
    }
    return 1;
}

static void test_null_registry_api(void **state)
{
    (void)state;
    dbpool_registry_config rc_cfg;
    dbpool_registry *reg = (dbpool_registry *)(uintptr_t)0x1;
    dbpool_registry_stats rs;
    dbpool_lease lease;
    dbpool *p;
    char buf[64];

    dbpool_registry_config_init(NULL);
    dbpool_registry_config_init(&rc_cfg);
    EXPECT(dbpool_registry_open(NULL, &rc_cfg), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_open(&reg, NULL), DBPOOL_EINVAL);
    assert_null(reg);
    EXPECT(dbpool_registry_open(&reg, &rc_cfg), DBPOOL_EINVAL); /* no resolver */
    assert_null(reg);
    rc_cfg.resolve = refuse;
    rc_cfg.max_connections = 0;
    EXPECT(dbpool_registry_open(&reg, &rc_cfg), DBPOOL_EINVAL);
    rc_cfg.max_connections = -1;
    EXPECT(dbpool_registry_open(&reg, &rc_cfg), DBPOOL_EINVAL);

    EXPECT(dbpool_registry_get(NULL, "t", &p), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_checkout(NULL, "t", 0, &lease), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_stats_get(NULL, &rs), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_prometheus(NULL, buf, sizeof(buf), NULL), DBPOOL_EINVAL);
    dbpool_registry_put(NULL, NULL); /* no crash */
    EXPECT(dbpool_registry_close(NULL), 0);

    dbpool_registry_config_init(&rc_cfg);
    rc_cfg.resolve = refuse;
    EXPECT(dbpool_registry_open(&reg, &rc_cfg), 0);
    EXPECT(dbpool_registry_get(reg, NULL, &p), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_get(reg, "", &p), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_get(reg, "t", NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_get(reg, "refused", &p), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_get(reg, "bad-conninfo", &p), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_checkout(reg, "t", 0, NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_checkout(reg, NULL, 0, &lease), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_checkout(reg, "refused", 0, &lease), DBPOOL_EINVAL);
    EXPECT(dbpool_checkin(&lease), DBPOOL_EINVAL); /* zeroed by the failed checkout */
    EXPECT(dbpool_registry_stats_get(reg, NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_prometheus(reg, NULL, 10, NULL), DBPOOL_EINVAL);
    EXPECT(dbpool_registry_stats_get(reg, &rs), 0);
    assert_int_equal(rs.tenants, 0);
    dbpool_registry_put(reg, NULL); /* no crash */
    EXPECT(dbpool_registry_close(reg), 0);
}

/* ---- leases used wrongly ------------------------------------------------------- */

static void test_double_and_stale_checkin(void **state)
{
    (void)state;
    dbpool *p = open_stub(1);
    dbpool_lease l, copy, l2;
    dbpool_lease_info info;

    checkout_ok(p, &l);
    copy = l;
    EXPECT(dbpool_checkin(&l), 0);
    EXPECT(dbpool_checkin(&l), DBPOOL_ESTALE); /* double check-in */
    EXPECT(dbpool_checkin(&l), DBPOOL_ESTALE); /* ... and stays so */
    EXPECT(dbpool_checkin(&copy), DBPOOL_ESTALE);
    EXPECT(dbpool_discard(&l), DBPOOL_ESTALE);
    assert_null(dbpool_lease_conn(&l));
    assert_null(dbpool_pg_conn(&l));
    EXPECT(dbpool_lease_check(&l), DBPOOL_ESTALE);
    EXPECT(dbpool_lease_info_get(&l, &info), DBPOOL_ESTALE);

    /* size 1: the same connection goes to the next caller; the old copies
     * must not touch it */
    checkout_ok(p, &l2);
    assert_ptr_equal(l2.slot, copy.slot);
    EXPECT(dbpool_checkin(&copy), DBPOOL_ESTALE);
    EXPECT(dbpool_discard(&copy), DBPOOL_ESTALE);
    assert_null(dbpool_lease_conn(&copy));
    EXPECT(dbpool_lease_check(&l2), 0);
    assert_ptr_equal(dbpool_lease_conn(&l2), &stub_conn);
    dbpool_stats st;
    EXPECT(dbpool_stats_get(p, &st), 0);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.disconnects, 0);

    /* discard, then every use is stale too */
    EXPECT(dbpool_discard(&l2), 0);
    EXPECT(dbpool_discard(&l2), DBPOOL_ESTALE);
    EXPECT(dbpool_checkin(&l2), DBPOOL_ESTALE);

    /* a lease with a forged generation is stale, not live */
    checkout_ok(p, &l);
    copy = l;
    copy.gen += 7;
    EXPECT(dbpool_checkin(&copy), DBPOOL_ESTALE);
    EXPECT(dbpool_lease_check(&l), 0);
    EXPECT(dbpool_checkin(&l), 0);
    EXPECT(dbpool_close(p), 0);
}

/* ---- checkout arguments ----------------------------------------------------------- */

static void test_checkout_timeouts(void **state)
{
    (void)state;
    dbpool *p = open_stub(1);
    dbpool_lease l, l2;

    EXPECT(dbpool_checkout(p, -2, &l), DBPOOL_EINVAL);
    assert_error_mentions("timeout", "negative timeout");
    EXPECT(dbpool_checkout(p, INT64_MIN, &l), DBPOOL_EINVAL);
    EXPECT(dbpool_checkout(p, -1000, &l), DBPOOL_EINVAL);
    /* a failed checkout leaves the lease empty: checking it in is EINVAL */
    EXPECT(dbpool_checkin(&l), DBPOOL_EINVAL);

    EXPECT(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    /* timeout 0 and nothing idle: EBUSY at once */
    EXPECT(dbpool_checkout(p, 0, &l2), DBPOOL_EBUSY);
    EXPECT(dbpool_checkin(&l2), DBPOOL_EINVAL);
    /* a short wait: ETIMEDOUT */
    EXPECT(dbpool_checkout(p, 30, &l2), DBPOOL_ETIMEDOUT);
    dbpool_stats st;
    EXPECT(dbpool_stats_get(p, &st), 0);
    assert_int_equal(st.timeouts, 1);
    EXPECT(dbpool_checkin(&l), 0);
    EXPECT(dbpool_close(p), 0);

    /* queue=false: EBUSY at once whatever the timeout */
    dbpool_config cfg;
    stub_config(&cfg, 1);
    cfg.queue = 0;
    p = NULL;
    EXPECT(dbpool_open(&p, &stub_driver, NULL, &cfg), 0);
    /* nothing is idle until the manager connected: EBUSY meanwhile */
    for (int i = 0; i < 300; i++) {
        int rc = dbpool_checkout(p, 5000, &l);
        if (rc == 0)
            break;
        assert_int_equal(rc, DBPOOL_EBUSY);
        sleep_ms(10);
    }
    EXPECT(dbpool_lease_check(&l), 0);
    EXPECT(dbpool_checkout(p, 5000, &l2), DBPOOL_EBUSY);
    EXPECT(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l2), DBPOOL_EBUSY);
    EXPECT(dbpool_checkin(&l), 0);
    EXPECT(dbpool_close(p), 0);
}

/* A checkout that waits "forever" (INT64_MAX ms, no limit) sleeps, does not
 * spin (the deadline once overflowed and the wait loop burned a CPU), and is
 * served by the next check-in. */
struct forever {
    dbpool *pool;
    dbpool_lease lease;
    atomic_int rc;
    int64_t cpu_ns;
};

static void *forever_main(void *arg)
{
    struct forever *f = arg;
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    atomic_store(&f->rc, dbpool_checkout(f->pool, INT64_MAX, &f->lease));
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    f->cpu_ns = (int64_t)(b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
    return NULL;
}

static void test_checkout_no_limit(void **state)
{
    (void)state;
    dbpool *p = open_stub(1);
    dbpool_lease l;
    EXPECT(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    struct forever f = {.pool = p};
    atomic_init(&f.rc, 1);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, forever_main, &f), 0);
    sleep_ms(300); /* it waits all this time */
    assert_int_equal(atomic_load(&f.rc), 1);
    EXPECT(dbpool_checkin(&l), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(atomic_load(&f.rc), 0);
    /* 300 ms of waiting cost next to no CPU: it slept */
    if (f.cpu_ns > 50 * 1000000)
        fail_msg("the no-limit checkout used %lld ms of CPU while it waited",
                 (long long)(f.cpu_ns / 1000000));
    EXPECT(dbpool_checkin(&f.lease), 0);
    EXPECT(dbpool_close(p), 0);
}

/* A cancel request that writes to a connection the server has reset must not
 * raise SIGPIPE in the application (its default action kills the process):
 * cancels run on worker threads with every signal blocked. Here the cancel
 * writes to a socket whose peer is closed, as PQcancel's send() would. */
static atomic_int sigpipe_cancels;

static void sigpipe_cancel_run(void *token)
{
    int sv[2];
    (void)token;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0) {
        close(sv[1]);
        ssize_t w = write(sv[0], "x", 1); /* EPIPE, and SIGPIPE for this thread */
        (void)w;
        close(sv[0]);
    }
    atomic_fetch_add(&sigpipe_cancels, 1);
}

static void test_cancel_raises_no_sigpipe(void **state)
{
    (void)state;
    dbpool_driver d = stub_driver;
    d.cancel_run = sigpipe_cancel_run;
    dbpool_config cfg;
    stub_config(&cfg, 1);
    cfg.hold_timeout = 10; /* the manager sends a cancel for the lease */
    dbpool *p = NULL;
    EXPECT(dbpool_open(&p, &d, NULL, &cfg), 0);
    dbpool_lease l;
    checkout_ok(p, &l);
    for (int i = 0; i < 500 && atomic_load(&sigpipe_cancels) == 0; i++)
        sleep_ms(10);
    assert_int_equal(atomic_load(&sigpipe_cancels), 1); /* and we are still alive */
    EXPECT(dbpool_checkin(&l), DBPOOL_EEXPIRED);
    EXPECT(dbpool_close(p), 0);
}

/* ---- close twice, use after close --------------------------------------------- */

/*
 * Only the "held" case is tested: a pool closed with a lease out stays in
 * memory until the last check-in, so a second close is defined (ECLOSED). A
 * second close of a fully closed pool passes a freed pointer: undefined, like
 * free() twice, and not tested.
 */
static void test_close_twice_with_lease_out(void **state)
{
    (void)state;
    dbpool *p = open_stub(2);
    dbpool_lease l, l2, l3;
    dbpool_lease_info info;
    dbpool_stats st;

    checkout_ok(p, &l);
    checkout_ok(p, &l2);
    EXPECT(dbpool_close(p), DBPOOL_EBUSY); /* closed, memory released later */
    EXPECT(dbpool_close(p), DBPOOL_ECLOSED);
    EXPECT(dbpool_close(p), DBPOOL_ECLOSED);

    /* the closed pool refuses everything but stats */
    EXPECT(dbpool_checkout(p, 0, &l3), DBPOOL_ECLOSED);
    EXPECT(dbpool_checkout(p, 100, &l3), DBPOOL_ECLOSED);
    EXPECT(dbpool_checkin(&l3), DBPOOL_EINVAL);
    EXPECT(dbpool_reconnect(p), DBPOOL_ECLOSED);
    EXPECT(dbpool_restart(p), DBPOOL_ECLOSED);
    EXPECT(dbpool_pause(p), DBPOOL_ECLOSED);
    EXPECT(dbpool_resume(p), DBPOOL_ECLOSED);
    EXPECT(dbpool_stats_get(p, &st), 0);
    assert_int_equal(st.state, DBPOOL_STATE_CLOSED);
    assert_int_equal(st.busy, 2);
    assert_string_equal(dbpool_pool_name(p), "misuse");

    /* leases still out stay usable */
    EXPECT(dbpool_lease_check(&l), 0);
    assert_ptr_equal(dbpool_lease_conn(&l), &stub_conn);
    EXPECT(dbpool_lease_info_get(&l, &info), 0);

    dbpool_lease copy = l;
    EXPECT(dbpool_checkin(&l), 0);
    EXPECT(dbpool_checkin(&copy), DBPOOL_ESTALE); /* pool still held by l2 */
    EXPECT(dbpool_close(p), DBPOOL_ECLOSED);
    EXPECT(dbpool_discard(&l2), 0); /* the last one: the pool is freed now */
    /* p, l, l2 are dangling from here on */
}

/* Closing a pool from its own event callback would deadlock the manager:
 * it is refused with EINVAL. */
struct cb_state {
    _Atomic(dbpool *) pool;
    atomic_int tried;
    atomic_int rc;
};

static void close_from_event(void *arg, const dbpool_event *ev)
{
    struct cb_state *cs = arg;
    dbpool *p = atomic_load(&cs->pool);

    if (!p || ev->type != DBPOOL_EV_DISCONNECTED || atomic_load(&cs->tried))
        return;
    atomic_store(&cs->rc, dbpool_close(p));
    atomic_store(&cs->tried, 1);
}

static void test_close_from_callback(void **state)
{
    (void)state;
    struct cb_state cs;
    dbpool_config cfg;
    dbpool *p = NULL;
    dbpool_lease l;

    atomic_init(&cs.pool, NULL);
    atomic_init(&cs.tried, 0);
    atomic_init(&cs.rc, 1);
    stub_config(&cfg, 1);
    cfg.event_cb = close_from_event;
    cfg.event_arg = &cs;
    EXPECT(dbpool_open(&p, &stub_driver, NULL, &cfg), 0);
    atomic_store(&cs.pool, p);
    checkout_ok(p, &l);
    EXPECT(dbpool_discard(&l), 0); /* -> a DISCONNECTED event */
    for (int i = 0; i < 300 && !atomic_load(&cs.tried); i++)
        sleep_ms(10);
    assert_int_equal(atomic_load(&cs.tried), 1);
    assert_int_equal(atomic_load(&cs.rc), DBPOOL_EINVAL);
    /* the pool is unharmed */
    checkout_ok(p, &l);
    EXPECT(dbpool_checkin(&l), 0);
    EXPECT(dbpool_close(p), 0);
}

/* The allocator cannot change under an open pool. */
static void test_allocator_while_open(void **state)
{
    (void)state;
    dbpool_allocator a = {malloc, calloc, free};
    dbpool *p = open_stub(1);

    EXPECT(dbpool_set_allocator(&a), DBPOOL_EBUSY);
    EXPECT(dbpool_set_allocator(NULL), DBPOOL_EBUSY);
    EXPECT(dbpool_close(p), 0);
    EXPECT(dbpool_set_allocator(&a), 0);
    EXPECT(dbpool_set_allocator(NULL), 0);
}

/* ---- options out of range ------------------------------------------------------ */

struct bad_opt {
    const char *name; /* the option the message must name */
    void (*set)(dbpool_config *cfg);
};

#define BAD(n, field, value)                                                                       \
    static void bad_##n(dbpool_config *cfg)                                                        \
    {                                                                                              \
        cfg->field = value;                                                                        \
    }
BAD(size0, size, 0)
BAD(size_neg, size, -1)
BAD(size_big, size, 10001)
BAD(size_max, size, INT_MAX)
BAD(size_min, size, INT_MIN)
BAD(min_size_neg, min_size, -2)
BAD(min_size_big, min_size, 11)
BAD(idle_timeout_neg, idle_timeout, -1)
BAD(queue2, queue, 2)
BAD(queue_neg, queue, -1)
BAD(lifo2, lifo, 2)
BAD(queue_target0, queue_target, 0)
BAD(queue_target_neg, queue_target, -50)
BAD(queue_interval0, queue_interval, 0)
BAD(queue_interval_neg, queue_interval, -1)
BAD(checkout_timeout_neg, checkout_timeout, -1)
BAD(checkout_timeout_min, checkout_timeout, INT64_MIN)
BAD(idle_interval0, idle_interval, 0)
BAD(idle_limit_neg, idle_limit, -1)
BAD(idle_limit_big, idle_limit, 10001)
BAD(ping_timeout0, ping_timeout, 0)
BAD(connect_timeout_neg, connect_timeout, -1)
BAD(backoff_type_big, backoff_type, (dbpool_backoff_type)4)
BAD(backoff_type_neg, backoff_type, (dbpool_backoff_type)-1)
BAD(backoff_min_neg, backoff_min, -2)
BAD(backoff_max0, backoff_max, 0)
BAD(backoff_max_neg, backoff_max, -30000)
BAD(max_lifetime_neg, max_lifetime, -1)
BAD(max_lifetime_huge, max_lifetime, INT64_MAX)
BAD(hold_timeout_neg, hold_timeout, -1)
BAD(reset_timeout0, reset_timeout, 0)
BAD(log_level_big, log_level, (dbpool_log_level)5)
BAD(log_level_neg, log_level, (dbpool_log_level)-1)
BAD(leak_threshold_neg, leak_threshold, -1)
static void bad_backoff_order(dbpool_config *cfg)
{
    cfg->backoff_min = 5000;
    cfg->backoff_max = 1000;
}

static const struct bad_opt bad_opts[] = {
    {"size", bad_size0},
    {"size", bad_size_neg},
    {"size", bad_size_big},
    {"size", bad_size_max},
    {"size", bad_size_min},
    {"min_size", bad_min_size_neg},
    {"min_size", bad_min_size_big},
    {"idle_timeout", bad_idle_timeout_neg},
    {"queue", bad_queue2},
    {"queue", bad_queue_neg},
    {"lifo", bad_lifo2},
    {"queue_target", bad_queue_target0},
    {"queue_target", bad_queue_target_neg},
    {"queue_interval", bad_queue_interval0},
    {"queue_interval", bad_queue_interval_neg},
    {"checkout_timeout", bad_checkout_timeout_neg},
    {"checkout_timeout", bad_checkout_timeout_min},
    {"idle_interval", bad_idle_interval0},
    {"idle_limit", bad_idle_limit_neg},
    {"idle_limit", bad_idle_limit_big},
    {"ping_timeout", bad_ping_timeout0},
    {"connect_timeout", bad_connect_timeout_neg},
    {"backoff_type", bad_backoff_type_big},
    {"backoff_type", bad_backoff_type_neg},
    {"backoff_min", bad_backoff_min_neg},
    {"backoff_max", bad_backoff_max0},
    {"backoff_max", bad_backoff_max_neg},
    {"max_lifetime", bad_max_lifetime_neg},
    {"max_lifetime", bad_max_lifetime_huge},
    {"hold_timeout", bad_hold_timeout_neg},
    {"reset_timeout", bad_reset_timeout0},
    {"log_level", bad_log_level_big},
    {"log_level", bad_log_level_neg},
    {"leak_threshold", bad_leak_threshold_neg},
    {"backoff_min", bad_backoff_order},
};

static void test_options_out_of_range(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_opts) / sizeof(bad_opts[0]); i++) {
        dbpool_config cfg;
        char ctx[96];
        dbpool *p;

        snprintf(ctx, sizeof(ctx), "bad_opts[%zu] (%s)", i, bad_opts[i].name);
        stub_config(&cfg, 10);
        bad_opts[i].set(&cfg);

        p = SENTINEL;
        int rc = dbpool_open(&p, &stub_driver, NULL, &cfg);
        if (rc != DBPOOL_EINVAL)
            fail_msg("%s: dbpool_open = %d, want DBPOOL_EINVAL", ctx, rc);
        assert_null(p);
        assert_error_mentions(bad_opts[i].name, ctx);

        /* the PostgreSQL layer rejects it before any connect, with the same
         * message, and frees what it built for the conninfo */
        p = SENTINEL;
        rc = dbpool_pg_open(&p, VALID_CONNINFO, &cfg);
        if (rc != DBPOOL_EINVAL)
            fail_msg("%s: dbpool_pg_open = %d, want DBPOOL_EINVAL", ctx, rc);
        assert_null(p);
        assert_error_mentions(bad_opts[i].name, ctx);
        assert_null(strstr(dbpool_last_error(), "misuse_pw"));
    }
}

/* Field by field: struct padding is not part of the value. */
static int same_config(const dbpool_config *a, const dbpool_config *b)
{
#define F(f) (a->f == b->f)
    return F(name) && F(size) && F(min_size) && F(idle_timeout) && F(queue) && F(lifo) &&
           F(queue_target) && F(queue_interval) && F(checkout_timeout) && F(idle_interval) &&
           F(idle_limit) && F(ping_timeout) && F(connect_timeout) && F(backoff_type) &&
           F(backoff_min) && F(backoff_max) && F(max_lifetime) && F(hold_timeout) &&
           F(reset_timeout) && F(after_connect) && F(log_cb) && F(log_arg) && F(log_level) &&
           F(event_cb) && F(event_arg) && F(leak_threshold);
#undef F
}

/* the same through dbpool_config_set / dbpool_config_parse */
static void test_options_by_name_out_of_range(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value;
    } bad[] = {
        {"size", "0"},
        {"size", "-1"},
        {"size", "10001"},
        {"size", "99999999999999999999"},
        {"size", ""},
        {"size", "8x"},
        {"min_size", "-2"},
        {"min_size", "11"},
        {"queue_target", "-5"},
        {"queue_target", "0"},
        {"queue_target", "-5ms"},
        {"checkout_timeout", "-1"},
        {"checkout_timeout", "1y"},
        {"checkout_timeout", "9999999999h"},
        {"checkout_timeout", "99999999999999999999999"},
        {"connect_timeout", " 5"},
        {"hold_timeout", "-0"},
        {"idle_limit", "-1"},
        {"backoff_min", "-2"},
        {"backoff_max", "0"},
        {"backoff_min", "99999"}, /* above backoff_max 30000 */
        {"backoff_type", "sometimes"},
        {"log_level", "loud"},
        {"queue", "maybe"},
        {"lifo", "2"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        dbpool_config cfg, before;
        dbpool_config_init(&cfg);
        cfg.size = 10;
        before = cfg;
        int rc = dbpool_config_set(&cfg, bad[i].name, bad[i].value);
        if (rc != DBPOOL_EINVAL)
            fail_msg("config_set %s=\"%s\": %d, want DBPOOL_EINVAL", bad[i].name, bad[i].value, rc);
        if (!same_config(&cfg, &before))
            fail_msg("config_set %s=\"%s\" was rejected but changed the config", bad[i].name,
                     bad[i].value);
        /* the backoff order message names both; the rest name the option */
        assert_error_mentions(bad[i].name, bad[i].name);

        char opts[192];
        snprintf(opts, sizeof(opts), "lifo=true %s=%s", bad[i].name, bad[i].value);
        if (!*bad[i].value || strchr(bad[i].value, ' '))
            continue; /* not expressible as one name=value item */
        rc = dbpool_config_parse(&cfg, opts);
        if (rc != DBPOOL_EINVAL)
            fail_msg("config_parse \"%s\": %d, want DBPOOL_EINVAL", opts, rc);
        assert_error_mentions(bad[i].name, opts);
    }
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    EXPECT(dbpool_config_set(&cfg, "no_such_option", "1"), DBPOOL_EINVAL);
    assert_error_mentions("no_such_option", "unknown option");
    EXPECT(dbpool_config_parse(&cfg, "name=evil"), DBPOOL_EINVAL);
    assert_error_mentions("name", "string option by parse");
    EXPECT(dbpool_config_parse(&cfg, "after_connect=DROP"), DBPOOL_EINVAL);
    EXPECT(dbpool_config_parse(&cfg, "size"), DBPOOL_EINVAL);
    EXPECT(dbpool_config_parse(&cfg, "=5"), DBPOOL_EINVAL);
    EXPECT(dbpool_config_parse(&cfg, "size="), DBPOOL_EINVAL);
    EXPECT(dbpool_config_parse(&cfg, "size==5"), DBPOOL_EINVAL);
    EXPECT(dbpool_config_parse(&cfg, ""), 0);
    EXPECT(dbpool_config_parse(&cfg, " , ,\t\n"), 0);
}

/* Absurd but legal sizes work: 10000 connections (stub), and a pool of 10000
 * opened on demand. */
static void test_absurd_sizes(void **state)
{
    (void)state;
    dbpool_config cfg;
    dbpool *p = NULL;
    dbpool_lease l;
    dbpool_stats st;

    stub_config(&cfg, 10000);
    cfg.min_size = 0;
    EXPECT(dbpool_open(&p, &stub_driver, NULL, &cfg), 0);
    EXPECT(dbpool_stats_get(p, &st), 0);
    assert_int_equal(st.size, 10000);
    assert_int_equal(st.dormant, 10000);
    checkout_ok(p, &l);
    EXPECT(dbpool_checkin(&l), 0);
    EXPECT(dbpool_close(p), 0);

    stub_config(&cfg, 10000);
    EXPECT(dbpool_open(&p, &stub_driver, NULL, &cfg), 0);
    checkout_ok(p, &l);
    EXPECT(dbpool_checkin(&l), 0);
    for (int i = 0; i < 500; i++) {
        EXPECT(dbpool_stats_get(p, &st), 0);
        if (st.idle == 10000)
            break;
        sleep_ms(10);
    }
    assert_int_equal(st.idle, 10000);
    EXPECT(dbpool_close(p), 0);

    /* size 1, min_size 1, idle_limit 10000: fine */
    stub_config(&cfg, 1);
    cfg.min_size = 1;
    cfg.idle_limit = 10000;
    EXPECT(dbpool_open(&p, &stub_driver, NULL, &cfg), 0);
    EXPECT(dbpool_close(p), 0);
}

/* Every test closes what it opened: the manager must be stopped after each,
 * which dbpool_set_allocator() tells (EBUSY while it runs). A worker may
 * still be returning from a closed pool's cancel request (the test saw the
 * request, not the worker's return): that is bounded, so wait for it. */
static int manager_stopped(void **state)
{
    (void)state;
    int rc = dbpool_set_allocator(NULL);
    for (int i = 0; rc == DBPOOL_EBUSY && i < 500; i++) {
        sleep_ms(10);
        rc = dbpool_set_allocator(NULL);
    }
    if (rc != 0)
        fail_msg("after the test every pool is closed, yet dbpool_set_allocator(NULL) = %d (%s)",
                 rc, dbpool_last_error());
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_null_errors_and_config, manager_stopped),
        cmocka_unit_test_teardown(test_null_pool_api, manager_stopped),
        cmocka_unit_test_teardown(test_null_pg_api, manager_stopped),
        cmocka_unit_test_teardown(test_null_registry_api, manager_stopped),
        cmocka_unit_test_teardown(test_double_and_stale_checkin, manager_stopped),
        cmocka_unit_test_teardown(test_checkout_timeouts, manager_stopped),
        cmocka_unit_test_teardown(test_checkout_no_limit, manager_stopped),
        cmocka_unit_test_teardown(test_cancel_raises_no_sigpipe, manager_stopped),
        cmocka_unit_test_teardown(test_close_twice_with_lease_out, manager_stopped),
        cmocka_unit_test_teardown(test_close_from_callback, manager_stopped),
        cmocka_unit_test_teardown(test_allocator_while_open, manager_stopped),
        cmocka_unit_test_teardown(test_options_out_of_range, manager_stopped),
        cmocka_unit_test_teardown(test_options_by_name_out_of_range, manager_stopped),
        cmocka_unit_test_teardown(test_absurd_sizes, manager_stopped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
