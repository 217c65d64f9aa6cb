/* it_registry.c - integration tests of the multi-tenant registry (issue #7)
 * against a real PostgreSQL holding 200 tenant databases t000..t199.
 *
 * One throwaway server for the whole file (group setup creates the
 * databases). Each test opens its own registry whose resolver tags every
 * connection with the test's application_name, so pg_stat_activity counts
 * only see that test's connections. Every wait is bounded; threads are
 * joined with a deadline, so a hang fails the test instead of hanging the run. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "dbpool_registry.h"
#include "itpool.h"
#include "pgserver.h"

#define NTENANTS 200

static pgt_server srv;
static dbpool_registry *g_reg; /* closed by the teardown if a test left it open */

/* ---------------------------------------------------------------------- */
/* helpers                                                                 */
/* ---------------------------------------------------------------------- */

/*
 * Resolver: "t" followed by [0-9a-z_] (at most 31 chars) maps to the database
 * of that name; anything else is refused. "tbadconn" resolves to a malformed
 * connection string.
 */
struct resolver {
    const char *app;  /* application_name of every connection */
    int tenant_size;  /* > 0: override the template's size */
    atomic_int calls; /* resolver invocations */
};

static int resolve(void *arg, const char *tenant, char *conninfo, size_t len, dbpool_config *cfg)
{
    struct resolver *r = arg;
    size_t n = strlen(tenant);

    atomic_fetch_add(&r->calls, 1);
    if (n < 2 || n > 31 || tenant[0] != 't')
        return 1;
    for (size_t i = 1; i < n; i++)
        if (!islower((unsigned char)tenant[i]) && !isdigit((unsigned char)tenant[i]) &&
            tenant[i] != '_')
            return 1;
    if (strcmp(tenant, "tbadconn") == 0) {
        snprintf(conninfo, len, "host=127.0.0.1 port=notaport dbname=x");
        return 0;
    }
    snprintf(conninfo, len, "host=127.0.0.1 port=%d user=postgres dbname=%s application_name=%s",
             srv.port, tenant, r->app);
    if (r->tenant_size > 0)
        cfg->size = r->tenant_size;
    return 0;
}

/* Open a registry with fast timers; tests override what they exercise. */
static dbpool_registry *open_reg(struct resolver *res, int cap, int64_t pool_idle_timeout)
{
    dbpool_registry_config rc;
    dbpool_registry_config_init(&rc);
    rc.resolve = resolve;
    rc.resolve_arg = res;
    rc.max_connections = cap;
    rc.pool_idle_timeout = pool_idle_timeout;
    rc.tenant.idle_interval = 200;
    rc.tenant.backoff_min = 100;
    rc.tenant.backoff_max = 400;
    rc.tenant.connect_timeout = 3000;
    rc.tenant.checkout_timeout = 5000;
    dbpool_registry *reg = NULL;
    int rc2 = dbpool_registry_open(&reg, &rc);
    if (rc2 != 0)
        fail_msg("dbpool_registry_open: %d %s", rc2, dbpool_last_error());
    assert_non_null(reg);
    g_reg = reg;
    return reg;
}

static int close_reg(dbpool_registry *reg)
{
    if (g_reg == reg)
        g_reg = NULL;
    return dbpool_registry_close(reg);
}

static dbpool_registry_stats rstats(dbpool_registry *reg)
{
    dbpool_registry_stats st;
    memset(&st, 0, sizeof st);
    assert_int_equal(dbpool_registry_stats_get(reg, &st), 0);
    return st;
}

static int test_teardown(void **state)
{
    (void)state;
    if (g_reg && !itp_hung())
        (void)dbpool_registry_close(g_reg);
    g_reg = NULL;
    return 0;
}

/* Run a one-value query on a lease; copies the value into out. 1 on success. */
static int lease_value(const dbpool_lease *l, const char *sql, char *out, size_t len)
{
    PGconn *c = dbpool_pg_conn(l);
    if (!c)
        return 0;
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok)
        snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return ok;
}

/* 1 if the lease's connection is to database `db`. */
static int lease_on_db(const dbpool_lease *l, const char *db)
{
    char v[64] = "";
    return lease_value(l, "SELECT current_database()", v, sizeof v) && strcmp(v, db) == 0;
}

/* Bounded wait until the registry has no tenant pool and no connection. */
static int reg_empty_cond(void *a)
{
    dbpool_registry_stats st;
    return dbpool_registry_stats_get(a, &st) == 0 && st.tenants == 0 && st.open_connections == 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank quantile of n sorted values. */
static int64_t quantile(const int64_t *v, int n, double q)
{
    int k = (int)((double)n * q + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

/* Classified outcomes of checkouts made by worker threads. */
struct tally {
    atomic_long ok, timeouts, drops, other, wrong_db;
    pthread_mutex_t mu;
    char other_msg[256];
};

static void tally_init(struct tally *t)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
}

static void tally_rc(struct tally *t, int rc)
{
    if (rc == DBPOOL_ETIMEDOUT) {
        atomic_fetch_add(&t->timeouts, 1);
    } else if (rc == DBPOOL_EDROPPED) {
        atomic_fetch_add(&t->drops, 1);
    } else {
        if (atomic_fetch_add(&t->other, 1) == 0) {
            pthread_mutex_lock(&t->mu);
            snprintf(t->other_msg, sizeof t->other_msg, "%d (%s): %s", rc, dbpool_strerror(rc),
                     dbpool_last_error());
            pthread_mutex_unlock(&t->mu);
        }
    }
}

/* ---------------------------------------------------------------------- */
/* (a) the cap is never exceeded                                           */
/* ---------------------------------------------------------------------- */

struct cap_run {
    dbpool_registry *reg;
    int64_t until;
    struct tally tally;
    unsigned seed;
};

struct cap_worker {
    struct cap_run *run;
    unsigned seed;
};

static void *cap_worker_main(void *arg)
{
    struct cap_worker *w = arg;
    struct cap_run *run = w->run;
    char key[16];

    while (pgt_now_ms() < run->until) {
        snprintf(key, sizeof key, "t%03d", (int)(rand_r(&w->seed) % NTENANTS));
        dbpool_lease l;
        int rc = dbpool_registry_checkout(run->reg, key, 2000, &l);
        if (rc != 0) {
            tally_rc(&run->tally, rc);
            continue;
        }
        char v[64] = "";
        if (!lease_value(&l, "SELECT 1", v, sizeof v) || strcmp(v, "1") != 0) {
            tally_rc(&run->tally, DBPOOL_EQUERY);
        } else if (!lease_on_db(&l, key)) {
            atomic_fetch_add(&run->tally.wrong_db, 1);
        } else {
            atomic_fetch_add(&run->tally.ok, 1);
        }
        (void)dbpool_checkin(&l);
    }
    return NULL;
}

struct sampler {
    dbpool_registry *reg;
    const char *app;
    int cap;
    int64_t until;
    int samples, pg_samples;
    int max_open, max_pg, over_open, over_pg, over_pg_transient;
    int waiting_seen;
    /* progress: while tenants wait for room under a full cap, evictions must
     * keep happening; the longest time they did not */
    int64_t max_stall_ms;
    char err[256];
};

static int count_backends_on(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    int n =
        PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

/*
 * Every 20 ms: the registry's own count and PostgreSQL's. A backend whose
 * client has just closed takes a moment to leave pg_stat_activity, while the
 * registry may already have opened the replacement; so a PostgreSQL count
 * above the cap is a violation only if it is still there 30 ms later (a
 * connection the registry failed to count would stay). The registry's count
 * is checked strictly.
 */
static void *sampler_main(void *arg)
{
    struct sampler *s = arg;
    char sql[256];
    PGconn *c = PQconnectdb(srv.conninfo);

    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(s->err, sizeof s->err, "sampler connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'",
             s->app);
    uint64_t last_evictions = 0;
    int64_t last_progress = pgt_now_ms();
    while (pgt_now_ms() < s->until) {
        dbpool_registry_stats st;
        if (dbpool_registry_stats_get(s->reg, &st) == 0) {
            int64_t now = pgt_now_ms();
            if (st.tenants_waiting == 0 || st.open_connections < s->cap ||
                st.evictions != last_evictions)
                last_progress = now;
            else if (now - last_progress > s->max_stall_ms)
                s->max_stall_ms = now - last_progress;
            last_evictions = st.evictions;
            s->samples++;
            if (st.open_connections > s->max_open)
                s->max_open = st.open_connections;
            if (st.open_connections > s->cap)
                s->over_open++;
            if (st.tenants_waiting > s->waiting_seen)
                s->waiting_seen = st.tenants_waiting;
        }
        int n = count_backends_on(c, sql);
        if (n >= 0) {
            s->pg_samples++;
            if (n > s->max_pg)
                s->max_pg = n;
            if (n > s->cap) {
                itp_sleep_ms(30);
                if (count_backends_on(c, sql) > s->cap)
                    s->over_pg++;
                else
                    s->over_pg_transient++;
            }
        } else if (!s->err[0]) {
            snprintf(s->err, sizeof s->err, "sampler query: %s", PQerrorMessage(c));
        }
        itp_sleep_ms(20);
    }
    PQfinish(c);
    return NULL;
}

static void test_cap_never_exceeded(void **state)
{
    (void)state;
    enum { CAP = 20, NWORKERS = 32, RUN_MS = 5000 };
    struct resolver res = {.app = "reg_test"};
    dbpool_registry *reg = open_reg(&res, CAP, 60000);
    struct cap_run run = {.reg = reg, .until = pgt_now_ms() + RUN_MS};
    struct cap_worker w[NWORKERS];
    pthread_t th[NWORKERS];
    struct sampler smp = {.reg = reg, .app = "reg_test", .cap = CAP, .until = run.until};

    tally_init(&run.tally);
    pthread_t st = itp_thr_start(sampler_main, &smp);
    for (int i = 0; i < NWORKERS; i++) {
        w[i].run = &run;
        w[i].seed = 0x5eed0000u + (unsigned)i;
        th[i] = itp_thr_start(cap_worker_main, &w[i]);
    }
    int joined = 0;
    for (int i = 0; i < NWORKERS; i++)
        joined += itp_thr_join(th[i], RUN_MS + 10000) == 0;
    assert_int_equal(itp_thr_join(st, RUN_MS + 5000), 0);
    assert_int_equal(joined, NWORKERS);

    dbpool_registry_stats rs = rstats(reg);
    fprintf(stderr,
            "# cap: ok=%ld timeouts=%ld drops=%ld other=%ld wrong_db=%ld | tenants=%d "
            "created=%" PRIu64 " evictions=%" PRIu64 " | samples=%d max_open=%d | "
            "pg_samples=%d max_pg_backends=%d (transiently over: %d) | max tenants_waiting=%d "
            "| longest stall %lld ms\n",
            atomic_load(&run.tally.ok), atomic_load(&run.tally.timeouts),
            atomic_load(&run.tally.drops), atomic_load(&run.tally.other),
            atomic_load(&run.tally.wrong_db), rs.tenants, rs.pools_created, rs.evictions,
            smp.samples, smp.max_open, smp.pg_samples, smp.max_pg, smp.over_pg_transient,
            smp.waiting_seen, (long long)smp.max_stall_ms);
    if (smp.err[0])
        fail_msg("%s", smp.err);
    if (atomic_load(&run.tally.other))
        fail_msg("checkouts failed with an error other than a timeout: %s", run.tally.other_msg);
    assert_int_equal(atomic_load(&run.tally.wrong_db), 0);
    assert_true(smp.samples >= 50);
    assert_true(smp.pg_samples >= 50);
    assert_int_equal(smp.over_open, 0);
    assert_true(smp.max_open <= CAP);
    if (smp.over_pg)
        fail_msg("pg_stat_activity showed more than %d reg_test backends in %d of %d samples "
                 "(max %d)",
                 CAP, smp.over_pg, smp.pg_samples, smp.max_pg);
    /* the run did real work through the cap, with evictions, and never sat
     * with the cap full and tenants waiting for longer than a checkout's
     * timeout without evicting anything */
    if (smp.max_stall_ms >= 2000)
        fail_msg("registry stalled: %lld ms with the cap full, tenants waiting and no "
                 "eviction",
                 (long long)smp.max_stall_ms);
    /* progress, not speed: every worker could have been served (a floor in
     * queries per second failed on a loaded machine: 196 of 200) */
    assert_true(atomic_load(&run.tally.ok) >= NWORKERS);
    assert_true(rs.evictions > 0);
    assert_true(rs.open_connections <= CAP);

    assert_int_equal(close_reg(reg), 0);
    if (!itp_wait_backends(&srv, "reg_test", 0, 5000))
        fail_msg("backends left after close: %d", pgt_count_backends(&srv, "reg_test"));
}

/* ---------------------------------------------------------------------- */
/* (b) a new tenant works on the first call                                */
/* ---------------------------------------------------------------------- */

struct first_call {
    dbpool_registry *reg;
    const char *key;
    pthread_barrier_t *go;
    int rc, on_db;
    char err[200];
};

static void *first_call_main(void *arg)
{
    struct first_call *f = arg;
    dbpool_lease l;

    pthread_barrier_wait(f->go);
    f->rc = dbpool_registry_checkout(f->reg, f->key, 5000, &l);
    if (f->rc == 0) {
        f->on_db = lease_on_db(&l, f->key);
        (void)dbpool_checkin(&l);
    } else {
        snprintf(f->err, sizeof f->err, "%s", dbpool_last_error());
    }
    return NULL;
}

static void test_new_tenant_first_call(void **state)
{
    (void)state;
    struct resolver res = {.app = "reg_b"};
    dbpool_registry *reg = open_reg(&res, 10, 60000);
    dbpool_lease l;

    /* a tenant database created just now is usable on the very first call */
    assert_int_equal(pgt_exec(&srv, "DROP DATABASE IF EXISTS tnew_b"), 0);
    assert_int_equal(pgt_exec(&srv, "CREATE DATABASE tnew_b TEMPLATE template0 "
                                    "STRATEGY FILE_COPY"),
                     0);
    int64_t t0 = pgt_now_ms();
    int rc = dbpool_registry_checkout(reg, "tnew_b", 5000, &l);
    int64_t took = pgt_now_ms() - t0;
    if (rc != 0)
        fail_msg("first checkout of a new tenant: %d %s", rc, dbpool_last_error());
    assert_true(lease_on_db(&l, "tnew_b"));
    assert_int_equal(dbpool_checkin(&l), 0);
    fprintf(stderr, "# new tenant: first checkout took %lld ms\n", (long long)took);
    dbpool_registry_stats st = rstats(reg);
    assert_int_equal(st.tenants, 1);
    assert_int_equal(st.pools_created, 1);
    assert_int_equal(st.open_connections, 1);
    assert_int_equal(atomic_load(&res.calls), 1);

    /* the second call reuses the pool and its connection */
    assert_int_equal(dbpool_registry_checkout(reg, "tnew_b", 5000, &l), 0);
    assert_true(lease_on_db(&l, "tnew_b"));
    assert_int_equal(dbpool_checkin(&l), 0);
    st = rstats(reg);
    assert_int_equal(st.pools_created, 1);
    assert_int_equal(st.open_connections, 1);

    /* 8 threads ask for a never-used tenant at the same moment: one pool is
     * created (one resolver call) and every first call succeeds */
    enum { N = 8 };
    pthread_barrier_t go;
    struct first_call f[N];
    pthread_t th[N];
    pthread_barrier_init(&go, NULL, N);
    for (int i = 0; i < N; i++) {
        f[i] = (struct first_call){.reg = reg, .key = "t150", .go = &go};
        th[i] = itp_thr_start(first_call_main, &f[i]);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(itp_thr_join(th[i], 15000), 0);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < N; i++) {
        if (f[i].rc != 0)
            fail_msg("concurrent first call %d: %d %s", i, f[i].rc, f[i].err);
        assert_true(f[i].on_db);
    }
    st = rstats(reg);
    assert_int_equal(st.tenants, 2);
    assert_int_equal(st.pools_created, 2);
    assert_int_equal(atomic_load(&res.calls), 2);
    assert_true(st.open_connections >= 2 && st.open_connections <= 1 + 5);

    assert_int_equal(close_reg(reg), 0);
    assert_true(itp_wait_backends(&srv, "reg_b", 0, 5000));
    assert_int_equal(pgt_exec(&srv, "DROP DATABASE tnew_b"), 0);
}

/* ---------------------------------------------------------------------- */
/* (b2) max_connecting: connects in flight never exceed it                 */
/* ---------------------------------------------------------------------- */

struct mc_sampler {
    dbpool_registry *reg;
    atomic_int stop;
    int samples, max_connecting, max_open;
};

static void *mc_sampler_main(void *arg)
{
    struct mc_sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        dbpool_registry_stats st;
        if (dbpool_registry_stats_get(s->reg, &st) == 0) {
            s->samples++;
            if (st.connecting > s->max_connecting)
                s->max_connecting = st.connecting;
            if (st.open_connections > s->max_open)
                s->max_open = st.open_connections;
        }
        itp_sleep_ms(1);
    }
    return NULL;
}

static void test_max_connecting(void **state)
{
    (void)state;
    enum { N = 10, MC = 2, CONNECT_MS = 200 };
    static const char *keys[N] = {"t010", "t011", "t012", "t013", "t014",
                                  "t015", "t016", "t017", "t018", "t019"};
    struct resolver res = {.app = "reg_mc"};
    dbpool_registry_config rc;
    dbpool_registry *reg = NULL;

    dbpool_registry_config_init(&rc);
    assert_int_equal(rc.max_connecting, 0); /* the default: no limit */
    rc.resolve = resolve;
    rc.resolve_arg = &res;
    rc.max_connections = 20;
    rc.max_connecting = -1;
    assert_int_equal(dbpool_registry_open(&reg, &rc), DBPOOL_EINVAL);
    assert_null(reg);
    assert_non_null(strstr(dbpool_last_error(), "max_connecting"));

    /* every connect takes at least CONNECT_MS (after_connect runs while the
     * slot connects), so N at once would overlap */
    rc.max_connecting = MC;
    rc.tenant.after_connect = "SELECT pg_sleep(0.2)";
    rc.tenant.connect_timeout = 5000;
    if (dbpool_registry_open(&reg, &rc) != 0)
        fail_msg("dbpool_registry_open: %s", dbpool_last_error());
    g_reg = reg;

    struct mc_sampler smp = {.reg = reg};
    pthread_t sth = itp_thr_start(mc_sampler_main, &smp);
    pthread_barrier_t go;
    struct first_call f[N];
    pthread_t th[N];
    pthread_barrier_init(&go, NULL, N);
    int64_t t0 = pgt_now_ms();
    for (int i = 0; i < N; i++) {
        f[i] = (struct first_call){.reg = reg, .key = keys[i], .go = &go};
        th[i] = itp_thr_start(first_call_main, &f[i]);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(itp_thr_join(th[i], 30000), 0);
    int64_t took = pgt_now_ms() - t0;
    atomic_store(&smp.stop, 1);
    assert_int_equal(itp_thr_join(sth, 5000), 0);
    pthread_barrier_destroy(&go);

    dbpool_registry_stats st = rstats(reg);
    fprintf(stderr,
            "# max_connecting %d: %d first calls took %lld ms; sampled %d times, at most %d "
            "connecting, %d open\n",
            MC, N, (long long)took, smp.samples, smp.max_connecting, smp.max_open);
    for (int i = 0; i < N; i++) {
        if (f[i].rc != 0)
            fail_msg("first call on %s: %d %s", keys[i], f[i].rc, f[i].err);
        assert_true(f[i].on_db);
    }
    assert_true(smp.samples > 0);
    assert_true(smp.max_connecting >= 1);
    if (smp.max_connecting > MC)
        fail_msg("%d connects in flight at once (max_connecting %d)", smp.max_connecting, MC);
    /* a bound the limit guarantees, not a speed: N connects of at least
     * CONNECT_MS each, MC at a time (without the limit: about CONNECT_MS) */
    if (took < (int64_t)(N / MC) * CONNECT_MS)
        fail_msg("%d connects of >= %d ms took only %lld ms: more than %d ran at once", N,
                 CONNECT_MS, (long long)took, MC);
    assert_int_equal(st.connecting, 0);
    assert_int_equal(st.open_connections, N);

    assert_int_equal(close_reg(reg), 0);
    assert_true(itp_wait_backends(&srv, "reg_mc", 0, 5000));
}

/* ---------------------------------------------------------------------- */
/* (c) idle tenants are reclaimed                                          */
/* ---------------------------------------------------------------------- */

static void test_idle_tenants_reclaimed(void **state)
{
    (void)state;
    struct resolver res = {.app = "reg_c"};
    dbpool_registry *reg = open_reg(&res, 20, 500);
    dbpool_lease l;
    char key[16];

    for (int i = 20; i < 30; i++) {
        snprintf(key, sizeof key, "t%03d", i);
        int rc = dbpool_registry_checkout(reg, key, 5000, &l);
        if (rc != 0)
            fail_msg("checkout %s: %d %s", key, rc, dbpool_last_error());
        assert_true(lease_on_db(&l, key));
        assert_int_equal(dbpool_checkin(&l), 0);
    }
    dbpool_registry_stats st = rstats(reg);
    assert_int_equal(st.pools_created, 10);
    assert_true(st.tenants >= 1); /* the first may already be reclaimed on a slow run */
    assert_true(st.open_connections <= 10);

    /* unused for 500 ms: every tenant pool is closed and freed, and its
     * connections are gone from the server */
    int64_t t0 = pgt_now_ms();
    if (!pgt_wait_for(reg_empty_cond, reg, 5000)) {
        st = rstats(reg);
        fail_msg("tenants not reclaimed: tenants=%d open=%d reclaimed=%" PRIu64, st.tenants,
                 st.open_connections, st.pools_reclaimed);
    }
    int64_t reclaim_ms = pgt_now_ms() - t0;
    if (!itp_wait_backends(&srv, "reg_c", 0, 5000))
        fail_msg("backends left after reclaim: %d", pgt_count_backends(&srv, "reg_c"));
    st = rstats(reg);
    fprintf(stderr, "# reclaim: all 10 tenants reclaimed %lld ms after last use\n",
            (long long)reclaim_ms);
    assert_int_equal(st.pools_reclaimed, 10);

    /* a reclaimed tenant works again on its next use (a new pool) */
    assert_int_equal(dbpool_registry_checkout(reg, "t020", 5000, &l), 0);
    assert_true(lease_on_db(&l, "t020"));
    assert_int_equal(dbpool_checkin(&l), 0);
    st = rstats(reg);
    assert_int_equal(st.pools_created, 11);

    /* a pinned tenant and a tenant with a lease out are never reclaimed */
    dbpool *pinned = NULL, *again = NULL;
    assert_int_equal(dbpool_registry_get(reg, "t021", &pinned), 0);
    assert_non_null(pinned);
    assert_string_equal(dbpool_pool_name(pinned), "t021");
    dbpool_lease held;
    assert_int_equal(dbpool_registry_checkout(reg, "t022", 5000, &held), 0);
    itp_sleep_ms(1500); /* three pool_idle_timeouts */
    assert_int_equal(dbpool_registry_get(reg, "t021", &again), 0);
    assert_ptr_equal(again, pinned); /* the same pool: not reclaimed */
    dbpool_registry_put(reg, again);
    assert_true(lease_on_db(&held, "t022"));
    st = rstats(reg);
    assert_true(st.tenants >= 2);
    assert_int_equal(st.pools_created, 13);
    /* the pinned pool is usable with the ordinary pool API */
    assert_int_equal(dbpool_checkout(pinned, 5000, &l), 0);
    assert_true(lease_on_db(&l, "t021"));
    assert_int_equal(dbpool_checkin(&l), 0);

    dbpool_registry_put(reg, pinned);
    assert_int_equal(dbpool_checkin(&held), 0);
    if (!pgt_wait_for(reg_empty_cond, reg, 5000)) {
        st = rstats(reg);
        fail_msg("tenants not reclaimed after unpin: tenants=%d open=%d", st.tenants,
                 st.open_connections);
    }
    assert_true(itp_wait_backends(&srv, "reg_c", 0, 5000));
    st = rstats(reg);
    assert_int_equal(st.pools_reclaimed, 13);

    assert_int_equal(close_reg(reg), 0);
}

/* ---------------------------------------------------------------------- */
/* (d) a hot tenant cannot starve a cold one                               */
/* ---------------------------------------------------------------------- */

struct hot_run {
    dbpool_registry *reg;
    atomic_int stop;
    struct tally tally;
};

static void *hot_main(void *arg)
{
    struct hot_run *h = arg;

    while (!atomic_load(&h->stop)) {
        dbpool_lease l;
        int rc = dbpool_registry_checkout(h->reg, "t000", 2000, &l);
        if (rc != 0) {
            tally_rc(&h->tally, rc);
            continue;
        }
        char v[16];
        if (lease_value(&l, "SELECT pg_sleep(0.01)::text", v, sizeof v))
            atomic_fetch_add(&h->tally.ok, 1);
        else
            tally_rc(&h->tally, DBPOOL_EQUERY);
        (void)dbpool_checkin(&l);
    }
    return NULL;
}

static void test_hot_tenant_cannot_starve_cold(void **state)
{
    (void)state;
    enum { CAP = 4, NHOT = 16, NCOLD = 20 };
    struct resolver res = {.app = "reg_d", .tenant_size = 4};
    dbpool_registry *reg = open_reg(&res, CAP, 60000);
    struct hot_run hot = {.reg = reg};
    pthread_t th[NHOT];
    int64_t lat[NCOLD];
    int ok = 0;
    char errs[512] = "";

    tally_init(&hot.tally);
    for (int i = 0; i < NHOT; i++)
        th[i] = itp_thr_start(hot_main, &hot);
    /* let the hot tenant take the whole cap */
    int64_t t_end = pgt_now_ms() + 3000;
    while (pgt_now_ms() < t_end && rstats(reg).open_connections < CAP)
        itp_sleep_ms(10);
    itp_sleep_ms(200);
    dbpool_registry_stats before = rstats(reg);

    for (int i = 0; i < NCOLD; i++) {
        dbpool_lease l;
        int64_t t0 = pgt_now_ms();
        int rc = dbpool_registry_checkout(reg, "t001", 2000, &l);
        lat[i] = pgt_now_ms() - t0;
        if (rc == 0) {
            ok += lease_on_db(&l, "t001");
            (void)dbpool_checkin(&l);
        } else if (strlen(errs) < 300) {
            size_t n = strlen(errs);
            snprintf(errs + n, sizeof errs - n, "[#%d %d %.80s] ", i, rc, dbpool_last_error());
        }
        itp_sleep_ms(50); /* a cold tenant: sporadic calls */
    }
    atomic_store(&hot.stop, 1);
    for (int i = 0; i < NHOT; i++)
        assert_int_equal(itp_thr_join(th[i], 10000), 0);

    dbpool_registry_stats after = rstats(reg);
    qsort(lat, NCOLD, sizeof lat[0], cmp_i64);
    fprintf(stderr,
            "# hot/cold: cold ok=%d/%d checkout ms p50=%lld p99=%lld max=%lld | hot ok=%ld "
            "timeouts=%ld drops=%ld other=%ld | open before=%d evictions %" PRIu64 "->%" PRIu64
            "\n",
            ok, NCOLD, (long long)quantile(lat, NCOLD, 0.5), (long long)quantile(lat, NCOLD, 0.99),
            (long long)lat[NCOLD - 1], atomic_load(&hot.tally.ok), atomic_load(&hot.tally.timeouts),
            atomic_load(&hot.tally.drops), atomic_load(&hot.tally.other), before.open_connections,
            before.evictions, after.evictions);
    if (ok != NCOLD)
        fail_msg("cold tenant: %d of %d checkouts failed: %s", NCOLD - ok, NCOLD, errs);
    assert_true(quantile(lat, NCOLD, 0.99) < 1000);
    if (atomic_load(&hot.tally.other))
        fail_msg("hot tenant: unexpected error %s", hot.tally.other_msg);
    assert_true(atomic_load(&hot.tally.ok) > 0);
    assert_true(after.open_connections <= CAP);

    assert_int_equal(close_reg(reg), 0);
    assert_true(itp_wait_backends(&srv, "reg_d", 0, 5000));
}

/* ---------------------------------------------------------------------- */
/* (e) refused and invalid keys                                            */
/* ---------------------------------------------------------------------- */

static void test_invalid_keys(void **state)
{
    (void)state;
    struct resolver res = {.app = "reg_e"};
    dbpool_registry_config rc;
    dbpool_registry *bad = (dbpool_registry *)&rc;
    dbpool *pool = (dbpool *)&rc;
    dbpool_lease l = {(struct dbpool_slot *)&rc, 99};

    /* registry options */
    dbpool_registry_config_init(&rc);
    assert_int_equal(rc.max_connections, 100);
    assert_int_equal(rc.pool_idle_timeout, 300000);
    assert_int_equal(rc.tenant.size, 5);
    assert_int_equal(rc.tenant.min_size, 0);
    assert_int_equal(rc.tenant.idle_timeout, 60000);
    assert_int_equal(dbpool_registry_open(&bad, &rc), DBPOOL_EINVAL); /* no resolver */
    assert_null(bad);
    rc.resolve = resolve;
    rc.resolve_arg = &res;
    assert_int_equal(dbpool_registry_open(NULL, &rc), DBPOOL_EINVAL);
    assert_int_equal(dbpool_registry_open(&bad, NULL), DBPOOL_EINVAL);
    rc.max_connections = 0;
    assert_int_equal(dbpool_registry_open(&bad, &rc), DBPOOL_EINVAL);
    rc.max_connections = 5;
    rc.pool_idle_timeout = 0;
    assert_int_equal(dbpool_registry_open(&bad, &rc), DBPOOL_EINVAL);
    assert_int_equal(dbpool_registry_close(NULL), 0);

    dbpool_registry *reg = open_reg(&res, 5, 60000);

    /* the resolver refuses the key */
    assert_int_equal(dbpool_registry_get(reg, "unknown", &pool), DBPOOL_EINVAL);
    assert_null(pool);
    assert_non_null(strstr(dbpool_last_error(), "refused"));
    assert_int_equal(dbpool_registry_checkout(reg, "unknown", 1000, &l), DBPOOL_EINVAL);
    assert_null(l.slot);
    assert_int_equal(dbpool_registry_checkout(reg, "T000", 1000, &l), DBPOOL_EINVAL);
    /* NULL / empty keys and other NULL arguments */
    assert_int_equal(dbpool_registry_get(reg, NULL, &pool), DBPOOL_EINVAL);
    assert_int_equal(dbpool_registry_get(reg, "", &pool), DBPOOL_EINVAL);
    assert_int_equal(dbpool_registry_get(reg, "t000", NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_registry_get(NULL, "t000", &pool), DBPOOL_EINVAL);
    assert_int_equal(dbpool_registry_checkout(reg, NULL, 1000, &l), DBPOOL_EINVAL);
    assert_int_equal(dbpool_registry_checkout(reg, "", 1000, &l), DBPOOL_EINVAL);
    assert_int_equal(dbpool_registry_checkout(reg, "t000", 1000, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_registry_checkout(NULL, "t000", 1000, &l), DBPOOL_EINVAL);
    assert_int_equal(dbpool_registry_stats_get(reg, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_registry_stats_get(NULL, &(dbpool_registry_stats){0}), DBPOOL_EINVAL);
    dbpool_registry_put(reg, NULL); /* no-op */
    dbpool_registry_put(NULL, NULL);
    /* a connection string the resolver got wrong */
    assert_int_equal(dbpool_registry_get(reg, "tbadconn", &pool), DBPOOL_EINVAL);
    assert_null(pool);
    /* nothing was left behind by the failures */
    dbpool_registry_stats st = rstats(reg);
    assert_int_equal(st.tenants, 0);
    assert_int_equal(st.pools_created, 0);
    assert_int_equal(st.open_connections, 0);

    /* a tenant whose database does not exist fails within its timeout, and
     * its failed connects do not keep budget from the others */
    int64_t t0 = pgt_now_ms();
    int r = dbpool_registry_checkout(reg, "t999", 3000, &l);
    int64_t took = pgt_now_ms() - t0;
    fprintf(stderr, "# missing database: rc=%d (%s) after %lld ms: %s\n", r, dbpool_strerror(r),
            (long long)took, dbpool_last_error());
    assert_true(r == DBPOOL_EUNAVAILABLE || r == DBPOOL_ETIMEDOUT);
    assert_true(took < 4000);
    for (int i = 0; i < 5; i++) {
        char key[16];
        snprintf(key, sizeof key, "t%03d", 40 + i);
        int rc2 = dbpool_registry_checkout(reg, key, 5000, &l);
        if (rc2 != 0)
            fail_msg("checkout %s next to a failing tenant: %d %s", key, rc2, dbpool_last_error());
        assert_true(lease_on_db(&l, key));
        assert_int_equal(dbpool_checkin(&l), 0);
    }
    st = rstats(reg);
    assert_true(st.open_connections <= 5);

    assert_int_equal(close_reg(reg), 0);
    assert_true(itp_wait_backends(&srv, "reg_e", 0, 5000));
}

/* ---------------------------------------------------------------------- */
/* (f) Prometheus text                                                     */
/* ---------------------------------------------------------------------- */

static int count_substr(const char *s, const char *sub)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)) != NULL; p += strlen(sub))
        n++;
    return n;
}

static void test_prometheus(void **state)
{
    (void)state;
    struct resolver res = {.app = "reg_f"};
    dbpool_registry *reg = open_reg(&res, 20, 60000);
    dbpool_lease l, held;
    const char *keys[] = {"t010", "t011", "t012"};
    char want[200];

    for (int i = 0; i < 3; i++) {
        assert_int_equal(dbpool_registry_checkout(reg, keys[i], 5000, &l), 0);
        assert_int_equal(dbpool_checkin(&l), 0);
    }
    assert_int_equal(dbpool_registry_checkout(reg, "t012", 5000, &held), 0);

    size_t needed = 0;
    assert_int_equal(dbpool_registry_prometheus(reg, NULL, 0, &needed), DBPOOL_ENOMEM);
    assert_true(needed > 100);
    char *buf = malloc(needed + 64);
    assert_non_null(buf);
    /* one byte short: ENOMEM, a NUL-terminated prefix */
    memset(buf, 'x', needed + 64);
    assert_int_equal(dbpool_registry_prometheus(reg, buf, needed - 1, NULL), DBPOOL_ENOMEM);
    assert_true(memchr(buf, '\0', needed - 1) != NULL);
    size_t needed2 = 0;
    assert_int_equal(dbpool_registry_prometheus(reg, buf, needed + 64, &needed2), 0);
    assert_int_equal(strlen(buf) + 1, needed2);

    assert_non_null(strstr(buf, "# TYPE dbpool_registry_tenants gauge\n"));
    assert_non_null(strstr(buf, "\ndbpool_registry_tenants 3\n"));
    assert_non_null(strstr(buf, "\ndbpool_registry_open_connections 3\n"));
    assert_non_null(strstr(buf, "# TYPE dbpool_registry_connecting gauge\n"));
    assert_non_null(strstr(buf, "\ndbpool_registry_connecting 0\n"));
    assert_non_null(strstr(buf, "\ndbpool_registry_max_connections 20\n"));
    assert_non_null(strstr(buf, "# TYPE dbpool_registry_evictions_total counter\n"));
    assert_non_null(strstr(buf, "\ndbpool_registry_evictions_total 0\n"));
    assert_non_null(strstr(buf, "# TYPE dbpool_registry_reclaimed_total counter\n"));
    assert_non_null(strstr(buf, "\ndbpool_registry_reclaimed_total 0\n"));
    for (int i = 0; i < 3; i++) {
        snprintf(want, sizeof want, "\ndbpool_up{pool=\"%s\"} 1\n", keys[i]);
        if (!strstr(buf, want))
            fail_msg("missing %s in:\n%s", want + 1, buf);
        snprintf(want, sizeof want, "\ndbpool_checkouts_total{pool=\"%s\"} %d\n", keys[i],
                 i == 2 ? 2 : 1);
        if (!strstr(buf, want))
            fail_msg("missing %s in:\n%s", want + 1, buf);
    }
    assert_non_null(strstr(buf, "\ndbpool_connections{pool=\"t012\",state=\"busy\"} 1\n"));
    /* idle, or being pinged at this moment (idle_interval on a slow run) */
    assert_true(strstr(buf, "\ndbpool_connections{pool=\"t010\",state=\"idle\"} 1\n") ||
                strstr(buf, "\ndbpool_connections{pool=\"t010\",state=\"pinging\"} 1\n"));
    /* one HELP/TYPE per family, whatever the number of tenants */
    assert_int_equal(count_substr(buf, "# TYPE dbpool_connections gauge\n"), 1);
    assert_int_equal(count_substr(buf, "# TYPE dbpool_registry_tenants gauge\n"), 1);
    /* no series for a tenant that was never used */
    assert_null(strstr(buf, "pool=\"t013\""));
    free(buf);

    assert_int_equal(dbpool_checkin(&held), 0);
    assert_int_equal(close_reg(reg), 0);
    assert_true(itp_wait_backends(&srv, "reg_f", 0, 5000));
}

/* ---------------------------------------------------------------------- */
/* (g) closing the registry while tenants wait for room                    */
/* ---------------------------------------------------------------------- */

static int tenants_waiting_cond(void *a)
{
    dbpool_registry_stats st;
    return dbpool_registry_stats_get(a, &st) == 0 && st.tenants_waiting >= 12;
}

/*
 * Tenants queued for room under a full cap while the registry closes. Only
 * this thread calls into the registry (no call runs concurrently with the
 * close): the queued tenants are left by checkouts with timeout 0, which start
 * opening a connection and return DBPOOL_EBUSY at once.
 */
static void test_close_while_tenants_wait(void **state)
{
    (void)state;
    enum { N = 12 };
    struct resolver res = {.app = "reg_g"};
    dbpool_registry *reg = open_reg(&res, 1, 60000);
    dbpool_lease held, l;
    char key[16];

    /* the only connection under the cap is checked out: every other tenant
     * queues for room, and there is nothing idle to evict */
    assert_int_equal(dbpool_registry_checkout(reg, "t060", 5000, &held), 0);
    for (int i = 0; i < N; i++) {
        dbpool *p = NULL;
        snprintf(key, sizeof key, "t%03d", 61 + i);
        assert_int_equal(dbpool_registry_get(reg, key, &p), 0);
        assert_int_equal(dbpool_checkout(p, 0, &l), DBPOOL_EBUSY);
        dbpool_registry_put(reg, p);
    }
    if (!pgt_wait_for(tenants_waiting_cond, reg, 5000))
        fail_msg("tenants never queued for room: %d waiting", rstats(reg).tenants_waiting);
    dbpool_registry_stats st = rstats(reg);
    assert_int_equal(st.open_connections, 1);
    assert_int_equal(st.tenants, N + 1);
    itp_sleep_ms(100);

    /* close with tenants queued and a lease out: EBUSY; the lease stays
     * usable and its connection is closed at check-in */
    g_reg = NULL;
    assert_int_equal(dbpool_registry_close(reg), DBPOOL_EBUSY);
    itp_sleep_ms(100);
    assert_true(lease_on_db(&held, "t060"));
    assert_int_equal(dbpool_checkin(&held), 0);
    assert_true(itp_wait_backends(&srv, "reg_g", 0, 5000));
}

struct queue_drained {
    dbpool_registry *reg;
    int n;
};

static int queue_drained_cond(void *a)
{
    struct queue_drained *q = a;
    dbpool_registry_stats st;
    return dbpool_registry_stats_get(q->reg, &st) == 0 && st.tenants_waiting == 0 &&
           st.evictions >= (uint64_t)q->n;
}

/*
 * The cap is full of idle connections and several tenants queue for room at
 * once, with no other call into the registry: each queued tenant needs its
 * own eviction. The registry used to ask one at a time, and only when a pool
 * asked for room; the first queued tenant got room and the others waited out
 * their callers' timeouts (the starving app server of docs/scaling.md).
 */
static void test_queued_tenants_each_get_room(void **state)
{
    (void)state;
    enum { N = 4 };
    struct resolver res = {.app = "reg_q"};
    dbpool_registry *reg = open_reg(&res, N, 60000);
    dbpool_lease l;
    char key[16];

    for (int i = 0; i < N; i++) { /* N tenants, one idle connection each: the cap is full */
        snprintf(key, sizeof key, "t%03d", 80 + i);
        assert_int_equal(dbpool_registry_checkout(reg, key, 5000, &l), 0);
        assert_int_equal(dbpool_checkin(&l), 0);
    }
    assert_int_equal(rstats(reg).open_connections, N);
    for (int i = 0; i < N; i++) { /* N others queue at once: timeout 0 starts a connect */
        dbpool *p = NULL;
        snprintf(key, sizeof key, "t%03d", 90 + i);
        assert_int_equal(dbpool_registry_get(reg, key, &p), 0);
        assert_int_equal(dbpool_checkout(p, 0, &l), DBPOOL_EBUSY);
        dbpool_registry_put(reg, p);
    }
    struct queue_drained q = {.reg = reg, .n = N};
    if (!pgt_wait_for(queue_drained_cond, &q, 10000)) {
        dbpool_registry_stats st = rstats(reg);
        fail_msg("queue not drained: %d tenants waiting, %llu evictions asked, %d open",
                 st.tenants_waiting, (unsigned long long)st.evictions, st.open_connections);
    }
    for (int i = 0; i < N; i++) { /* each queued tenant got its connection */
        snprintf(key, sizeof key, "t%03d", 90 + i);
        assert_int_equal(dbpool_registry_checkout(reg, key, 5000, &l), 0);
        assert_true(lease_on_db(&l, key));
        assert_int_equal(dbpool_checkin(&l), 0);
    }
    assert_true(rstats(reg).open_connections <= N);
    assert_int_equal(close_reg(reg), 0);
}

/* ---------------------------------------------------------------------- */
/* setup: one server, 200 tenant databases                                 */
/* ---------------------------------------------------------------------- */

struct creator {
    int first, step;
    char err[256];
};

/* CREATE DATABASE ... STRATEGY FILE_COPY from 4 sessions at once: FILE_COPY
 * copies files instead of WAL-logging every page (WAL_LOG took ~0.38 s per
 * database here), and concurrent creates share their checkpoints (200 in
 * ~8 s here vs ~34 s one at a time). */
static void *creator_main(void *arg)
{
    struct creator *c = arg;
    PGconn *pg = PQconnectdb(srv.conninfo);
    char sql[128];

    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(c->err, sizeof c->err, "connect: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    for (int i = c->first; i < NTENANTS && !c->err[0]; i += c->step) {
        snprintf(sql, sizeof sql, "CREATE DATABASE t%03d TEMPLATE template0 STRATEGY FILE_COPY", i);
        PGresult *r = PQexec(pg, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            snprintf(c->err, sizeof c->err, "%s: %s", sql, PQerrorMessage(pg));
        PQclear(r);
    }
    PQfinish(pg);
    return NULL;
}

static int group_setup(void **state)
{
    (void)state;
    enum { NCREATORS = 4 };
    struct creator c[NCREATORS];
    pthread_t th[NCREATORS];

    if (pgt_start_conf(&srv, "max_connections = 300") != 0) {
        fprintf(stderr, "it_registry: could not start PostgreSQL\n");
        return -1;
    }
    int64_t t0 = pgt_now_ms();
    for (int i = 0; i < NCREATORS; i++) {
        c[i] = (struct creator){.first = i, .step = NCREATORS};
        if (pthread_create(&th[i], NULL, creator_main, &c[i]) != 0)
            return -1;
    }
    for (int i = 0; i < NCREATORS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NCREATORS; i++) {
        if (c[i].err[0]) {
            fprintf(stderr, "it_registry: creating tenant databases: %s\n", c[i].err);
            return -1;
        }
    }
    int64_t n = pgt_query_int(&srv, "SELECT count(*) FROM pg_database WHERE datname ~ "
                                    "'^t[0-9]{3}$'");
    fprintf(stderr, "# setup: %lld tenant databases created in %lld ms\n", (long long)n,
            (long long)(pgt_now_ms() - t0));
    return n == NTENANTS ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    pgt_destroy(&srv);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* odd tenant keys: labels and log lines stay valid and unique             */
/* ---------------------------------------------------------------------- */

static int resolve_any(void *arg, const char *tenant, char *conninfo, size_t len,
                       dbpool_config *cfg)
{
    (void)arg;
    (void)cfg;
    if (strstr(tenant, "down")) /* a closed port: the pool logs that it is down */
        snprintf(conninfo, len, "host=127.0.0.1 port=1 connect_timeout=1");
    else
        snprintf(conninfo, len,
                 "host=127.0.0.1 port=%d user=postgres dbname=postgres "
                 "application_name=reg_odd",
                 srv.port);
    return 0;
}

/* Is s valid UTF-8 (no overlongs, surrogates or values past U+10FFFF)? */
static int valid_utf8(const unsigned char *s)
{
    while (*s) {
        int n = *s < 0x80 ? 1 : (*s >> 5) == 6 ? 2 : (*s >> 4) == 14 ? 3 : (*s >> 3) == 30 ? 4 : 0;
        if (!n || (n == 2 && *s < 0xC2))
            return 0;
        for (int i = 1; i < n; i++)
            if ((s[i] & 0xC0) != 0x80)
                return 0;
        s += n;
    }
    return 1;
}

static void test_odd_keys(void **state)
{
    (void)state;
    char long_a[301], long_b[301];
    memset(long_a, 'k', 300);
    memset(long_b, 'k', 300);
    long_a[300] = long_b[300] = '\0';
    long_b[200] = 'X'; /* differs only after the first 150 bytes */
    const char *keys[] = {
        "nl\nFAKE dbpool[x] ERROR: forged", "q\"uote\\back", "bad\xff\xfe utf8", long_a, long_b,
        "down\nFAKE forged down line"};
    enum { NKEYS = sizeof keys / sizeof keys[0] };

    /* the default logger writes to stderr: catch it in a file */
    char path[] = "/tmp/dbpool_odd_keys_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);

    dbpool_registry_config rc;
    dbpool_registry_config_init(&rc);
    rc.resolve = resolve_any;
    rc.tenant.backoff_min = 100;
    rc.tenant.backoff_max = 200;
    dbpool_registry *reg = NULL;
    assert_int_equal(dbpool_registry_open(&reg, &rc), 0);
    g_reg = reg;
    for (int i = 0; i < NKEYS; i++) {
        dbpool_lease l;
        int rc2 = dbpool_registry_checkout(reg, keys[i], 3000, &l);
        if (strstr(keys[i], "down")) {
            assert_int_not_equal(rc2, 0);
        } else {
            assert_int_equal(rc2, 0);
            assert_int_equal(dbpool_checkin(&l), 0);
        }
    }
    size_t needed = 0;
    assert_int_equal(dbpool_registry_prometheus(reg, NULL, 0, &needed), DBPOOL_ENOMEM);
    char *buf = malloc(needed);
    assert_non_null(buf);
    assert_int_equal(dbpool_registry_prometheus(reg, buf, needed, NULL), 0);
    assert_int_equal(close_reg(reg), 0);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);

    /* the scrape: valid UTF-8, one dbpool_up series per tenant, none twice */
    assert_true(valid_utf8((const unsigned char *)buf));
    int ups = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "dbpool_up{", 10) != 0)
            continue;
        ups++;
        for (char *other = line + strlen(line) + 1; other < buf + needed - 1 && *other;
             other += strlen(other) + 1)
            if (strcmp(line, other) == 0)
                fail_msg("duplicate series: %s", line);
    }
    assert_int_equal(ups, NKEYS);
    free(buf);

    /* the log: no line was forged by a key */
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        if (strncmp(line, "FAKE", 4) == 0)
            fail_msg("a tenant key forged a log line: %s", line);
        assert_true(strncmp(line, "dbpool[", 7) == 0);
    }
    fclose(f);
    unlink(path);
    assert_true(lines > 0); /* the down tenant logged */
}

int main(void)
{
    alarm(280); /* last resort against a hang (CTest allows 300 s) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_invalid_keys, test_teardown),
        cmocka_unit_test_teardown(test_new_tenant_first_call, test_teardown),
        cmocka_unit_test_teardown(test_max_connecting, test_teardown),
        cmocka_unit_test_teardown(test_prometheus, test_teardown),
        cmocka_unit_test_teardown(test_odd_keys, test_teardown),
        cmocka_unit_test_teardown(test_idle_tenants_reclaimed, test_teardown),
        cmocka_unit_test_teardown(test_cap_never_exceeded, test_teardown),
        cmocka_unit_test_teardown(test_hot_tenant_cannot_starve_cold, test_teardown),
        cmocka_unit_test_teardown(test_close_while_tenants_wait, test_teardown),
        cmocka_unit_test_teardown(test_queued_tenants_each_get_room, test_teardown),
    };
    /* IT_REGISTRY_FILTER=test_prometheus (a glob) runs only matching tests */
    if (getenv("IT_REGISTRY_FILTER"))
        cmocka_set_test_filter(getenv("IT_REGISTRY_FILTER"));
    return cmocka_run_group_tests_name("it_registry", tests, group_setup, group_teardown);
}
