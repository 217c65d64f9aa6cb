/* registry_bench.c - benchmark of the multi-tenant registry (issue #7).
 *
 *   registry_bench [options] "<conninfo template>"
 *
 * The template is a libpq connection string. If it contains "%s", that is
 * replaced by the tenant's database name and the benchmark creates the tenant
 * databases rb_t000.. (CREATE DATABASE, needs a superuser; existing ones are
 * reused). Without "%s" every tenant connects to that one database.
 *
 * Parts:
 *   (a) memory per idle tenant pool: register --tenants tenant pools
 *       (dbpool_registry_get + put, min_size 0: no connection is opened) and
 *       measure the heap growth (mallinfo2), the bytes dbpool itself allocated
 *       (a counting allocator through dbpool_set_allocator) and RSS; plus the
 *       CPU the process burns while those pools sit idle.
 *   (b) time to first query of a never-used tenant (dbpool_registry_checkout +
 *       SELECT 1) vs a plain PQconnectdb + SELECT 1 to the same database:
 *       medians over --cold samples, alternating the order. Run twice: with
 *       an otherwise empty registry and with the --tenants idle pools of (a).
 *   (c) throughput under a Zipf(--zipf) tenant mix over --dbs tenants with the
 *       cap at --cap connections, --threads client threads, --seconds seconds
 *       (after a 1 s warm-up): queries/s, evictions, checkout latency.
 *       Baseline: the same mix with a new connection per query.
 *
 * Build (from the repository root, with the library built in BUILD):
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude $(pkg-config --cflags libpq) \
 *       bench/registry_bench.c -o registry_bench BUILD/libdbpool.a \
 *       $(pkg-config --libs libpq) -lpthread
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "dbpool_registry.h"

/* ---- options ------------------------------------------------------------- */

static struct {
    const char *tmpl;
    int has_db; /* template has %s */
    int tenants, dbs, cap, threads, cold;
    double seconds, zipf_s;
    int skip_baseline;
    const char *parts;  /* which of a, b, c to run */
    int series_ms;      /* (c): sample open connections vs backends this often */
    int tenant_size;    /* > 0: every tenant pool's size (default: the registry's template) */
    int max_connecting; /* >= 0: the registry's max_connecting (default: its default) */
} opt = {NULL, 0, 10000, 200, 50, 16, 50, 10.0, 1.1, 0, "abc", 0, 0, -1};

static void usage(void)
{
    fprintf(stderr, "usage: registry_bench [--tenants N] [--dbs N] [--cap N] [--threads N] "
                    "[--seconds S]\n"
                    "                      [--cold N] [--zipf S] [--no-baseline] [--parts abc]\n"
                    "                      [--series MS] [--tenant-size N]\n"
                    "                      [--max-connecting N]\n"
                    "                      \"<conninfo template>\"\n"
                    "  the template may contain %%s for the tenant's database name\n");
    exit(2);
}

/* ---- small helpers ------------------------------------------------------- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void conninfo_for(char *buf, size_t len, const char *db)
{
    if (opt.has_db)
        snprintf(buf, len, opt.tmpl, db);
    else
        snprintf(buf, len, "%s", opt.tmpl);
}

static void dbname(char *buf, size_t len, int i)
{
    snprintf(buf, len, "rb_t%03d", i % opt.dbs);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* nearest-rank quantile of n sorted values */
static int64_t q_of(const int64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    double x = q * (double)n;
    size_t k = (size_t)x;
    if ((double)k < x)
        k++;
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

static int select1(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT 1");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
             strcmp(PQgetvalue(r, 0, 0), "1") == 0;
    PQclear(r);
    return ok;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long rss_kib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void loadavg(char *buf, size_t len)
{
    FILE *f = fopen("/proc/loadavg", "r");
    buf[0] = '\0';
    if (f) {
        if (!fgets(buf, (int)len, f))
            buf[0] = '\0';
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = '\0';
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* ---- counting allocator (what dbpool itself allocates) -------------------- */

static atomic_size_t dbp_live;     /* usable bytes live */
static atomic_long dbp_nallocs;    /* allocations live */
static _Thread_local int trace_on; /* this thread records the sizes it allocates */
static size_t trace_sizes[64];
static int trace_n;

static void account(void *p, size_t asked)
{
    if (!p)
        return;
    atomic_fetch_add(&dbp_live, malloc_usable_size(p));
    atomic_fetch_add(&dbp_nallocs, 1);
    if (trace_on && trace_n < 64)
        trace_sizes[trace_n++] = asked;
}

static void *c_malloc(size_t n)
{
    void *p = malloc(n);
    account(p, n);
    return p;
}

static void *c_calloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);
    account(p, n * sz);
    return p;
}

static void c_free(void *p)
{
    if (!p)
        return;
    atomic_fetch_sub(&dbp_live, malloc_usable_size(p));
    atomic_fetch_sub(&dbp_nallocs, 1);
    free(p);
}

static const dbpool_allocator counting = {c_malloc, c_calloc, c_free};

/* ---- resolver ------------------------------------------------------------ */

/* Keys are a letter and a number; the number picks the tenant database. */
static int resolve(void *arg, const char *tenant, char *conninfo, size_t len, dbpool_config *cfg)
{
    char db[32];
    (void)arg;
    if (!tenant[0] || !tenant[1])
        return 1;
    if (opt.tenant_size > 0)
        cfg->size = opt.tenant_size;
    dbname(db, sizeof db, atoi(tenant + 1));
    conninfo_for(conninfo, len, db);
    return 0;
}

static dbpool_registry *open_registry(int cap)
{
    dbpool_registry_config rc;
    dbpool_registry *reg = NULL;

    dbpool_registry_config_init(&rc);
    rc.resolve = resolve;
    rc.max_connections = cap;
    if (opt.max_connecting >= 0)
        rc.max_connecting = opt.max_connecting;
    rc.pool_idle_timeout = 3600000; /* nothing is reclaimed during the run */
    rc.tenant.log_level = DBPOOL_LOG_ERROR;
    if (dbpool_registry_open(&reg, &rc) != 0) {
        fprintf(stderr, "dbpool_registry_open: %s\n", dbpool_last_error());
        exit(1);
    }
    return reg;
}

/* ---- setup: tenant databases --------------------------------------------- */

struct creator {
    int first, step;
    char err[300];
};

static void *creator_main(void *arg)
{
    struct creator *c = arg;
    char ci[1024], sql[160], db[32];

    conninfo_for(ci, sizeof ci, "postgres");
    PGconn *pg = PQconnectdb(ci);
    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(c->err, sizeof c->err, "%s", PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    for (int i = c->first; i < opt.dbs && !c->err[0]; i += c->step) {
        dbname(db, sizeof db, i);
        snprintf(sql, sizeof sql, "SELECT 1 FROM pg_database WHERE datname = '%s'", db);
        PGresult *r = PQexec(pg, sql);
        int exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        PQclear(r);
        if (exists)
            continue;
        snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE template0 STRATEGY FILE_COPY", db);
        r = PQexec(pg, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            snprintf(c->err, sizeof c->err, "%s: %s", sql, PQerrorMessage(pg));
        PQclear(r);
    }
    PQfinish(pg);
    return NULL;
}

static void create_databases(void)
{
    enum { N = 4 };
    struct creator c[N];
    pthread_t th[N];
    int64_t t0 = now_us();

    for (int i = 0; i < N; i++) {
        c[i] = (struct creator){.first = i, .step = N};
        pthread_create(&th[i], NULL, creator_main, &c[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        if (c[i].err[0]) {
            fprintf(stderr, "creating tenant databases: %s\n", c[i].err);
            exit(1);
        }
    }
    printf("setup: %d tenant databases ready in %.1f s\n", opt.dbs, (double)(now_us() - t0) / 1e6);
}

/* One connection to each database used, untimed: the first connection to a
 * new database builds its relcache init file, which is not what we measure. */
static void prewarm(int n)
{
    char ci[1024], db[32];
    for (int i = 0; i < n; i++) {
        dbname(db, sizeof db, i);
        conninfo_for(ci, sizeof ci, db);
        PGconn *c = PQconnectdb(ci);
        if (PQstatus(c) != CONNECTION_OK || !select1(c)) {
            fprintf(stderr, "cannot connect to %s: %s\n", db, PQerrorMessage(c));
            exit(1);
        }
        PQfinish(c);
        if (!opt.has_db)
            break;
    }
}

/* ---- (a) memory per idle tenant pool ------------------------------------- */

struct mem_result {
    double heap_per, dbpool_per, libpq_per, rss_per, allocs_per, reg_us_per;
    double idle_cpu_pct;
};

static struct mem_result part_a(dbpool_registry *reg)
{
    struct mem_result m;
    char key[32];
    dbpool *p;
    int n = opt.tenants;

    /* warm up allocator and manager with one tenant we keep */
    if (dbpool_registry_get(reg, "w0", &p) != 0) {
        fprintf(stderr, "get: %s\n", dbpool_last_error());
        exit(1);
    }
    dbpool_registry_put(reg, p);

    trace_n = 0;
    size_t heap0 = heap_in_use(), dbp0 = atomic_load(&dbp_live);
    long na0 = atomic_load(&dbp_nallocs), rss0 = rss_kib();
    int64_t t0 = now_us();
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "i%05d", i);
        trace_on = i == 0;
        if (dbpool_registry_get(reg, key, &p) != 0) {
            fprintf(stderr, "get %s: %s\n", key, dbpool_last_error());
            exit(1);
        }
        trace_on = 0;
        dbpool_registry_put(reg, p);
    }
    int64_t t1 = now_us();
    size_t heap1 = heap_in_use(), dbp1 = atomic_load(&dbp_live);
    long na1 = atomic_load(&dbp_nallocs), rss1 = rss_kib();

    dbpool_registry_stats st;
    dbpool_registry_stats_get(reg, &st);
    m.heap_per = (double)(heap1 - heap0) / n;
    m.dbpool_per = (double)(dbp1 - dbp0) / n;
    m.libpq_per = m.heap_per - m.dbpool_per;
    m.rss_per = (double)(rss1 - rss0) * 1024.0 / n;
    m.allocs_per = (double)(na1 - na0) / n;
    m.reg_us_per = (double)(t1 - t0) / n;

    /* what do 10,000 idle pools cost in CPU? (the manager thread) */
    sleep_ms(500);
    double c0 = cpu_seconds();
    int64_t w0 = now_us();
    sleep_ms(3000);
    m.idle_cpu_pct = 100.0 * (cpu_seconds() - c0) / ((double)(now_us() - w0) / 1e6);

    printf("\n(a) memory per idle tenant pool: %d tenants registered (min_size 0, no "
           "connection)\n",
           n);
    printf("    registry: tenants=%d open_connections=%d pools_created=%" PRIu64 "\n", st.tenants,
           st.open_connections, st.pools_created);
    printf("    heap (mallinfo2)            %8.0f bytes/tenant   <- target <= 2048\n", m.heap_per);
    printf("      of which dbpool's own     %8.0f bytes/tenant (%.1f allocations)\n", m.dbpool_per,
           m.allocs_per);
    printf("      of which libpq (+malloc)  %8.0f bytes/tenant (PQconninfoParse array "
           "kept by the driver)\n",
           m.libpq_per);
    printf("    RSS (/proc/self/statm)      %8.0f bytes/tenant\n", m.rss_per);
    printf("    registration (get+put)      %8.1f us/tenant\n", m.reg_us_per);
    printf("    dbpool allocations of one tenant (bytes asked, in order):");
    for (int i = 0; i < trace_n; i++)
        printf(" %zu", trace_sizes[i]);
    printf("\n");
    PQconninfoOption *o = PQconndefaults();
    int nopt = 0;
    while (o && o[nopt].keyword)
        nopt++;
    PQconninfoFree(o);
    printf("    libpq: %d conninfo options x sizeof(PQconninfoOption)=%zu -> %zu bytes per "
           "parsed array\n",
           nopt, sizeof(PQconninfoOption), (size_t)(nopt + 1) * sizeof(PQconninfoOption));
    printf("    CPU while the %d pools sit idle: %.1f%% of one core\n", n, m.idle_cpu_pct);
    return m;
}

/* ---- (b) cold tenant first query vs connect ------------------------------ */

struct cold_result {
    double reg_p50, reg_p90, conn_p50, conn_p90;
    int n;
};

static struct cold_result part_b(dbpool_registry *reg, const char *label, int key_base)
{
    struct cold_result res;
    int n = opt.cold;
    int64_t *reg_us = calloc((size_t)n, sizeof(int64_t));
    int64_t *conn_us = calloc((size_t)n, sizeof(int64_t));
    char key[32], ci[1024], db[32];

    for (int i = 0; i < n; i++) {
        int d = key_base + i;
        dbname(db, sizeof db, d);
        conninfo_for(ci, sizeof ci, db);
        for (int k = 0; k < 2; k++) {
            if ((k + i) % 2 == 0) { /* registry: a never-used tenant */
                snprintf(key, sizeof key, "c%05d", d);
                dbpool_lease l;
                int trace = i == 0 && key_base == 0;
                if (trace) {
                    trace_n = 0;
                    trace_on = 1;
                }
                int64_t t0 = now_us();
                int rc = dbpool_registry_checkout(reg, key, 10000, &l);
                trace_on = 0;
                if (trace) {
                    printf("    dbpool allocations of a first checkout (bytes asked):");
                    for (int j = 0; j < trace_n; j++)
                        printf(" %zu", trace_sizes[j]);
                    printf("\n");
                }
                if (rc != 0) {
                    fprintf(stderr, "cold checkout %s: %s\n", key, dbpool_last_error());
                    exit(1);
                }
                if (!select1(dbpool_pg_conn(&l))) {
                    fprintf(stderr, "cold SELECT 1 failed\n");
                    exit(1);
                }
                reg_us[i] = now_us() - t0;
                (void)dbpool_checkin(&l);
            } else { /* plain libpq */
                int64_t t0 = now_us();
                PGconn *c = PQconnectdb(ci);
                if (PQstatus(c) != CONNECTION_OK || !select1(c)) {
                    fprintf(stderr, "connect: %s\n", PQerrorMessage(c));
                    exit(1);
                }
                conn_us[i] = now_us() - t0;
                PQfinish(c);
            }
        }
        sleep_ms(5);
    }
    qsort(reg_us, (size_t)n, sizeof(int64_t), cmp_i64);
    qsort(conn_us, (size_t)n, sizeof(int64_t), cmp_i64);
    res.n = n;
    res.reg_p50 = (double)q_of(reg_us, (size_t)n, 0.5) / 1000.0;
    res.reg_p90 = (double)q_of(reg_us, (size_t)n, 0.9) / 1000.0;
    res.conn_p50 = (double)q_of(conn_us, (size_t)n, 0.5) / 1000.0;
    res.conn_p90 = (double)q_of(conn_us, (size_t)n, 0.9) / 1000.0;
    printf("\n(b) cold tenant first query vs connect, %s (%d samples each)\n", label, n);
    printf("    registry checkout + SELECT 1 (new tenant)  p50 %7.2f ms  p90 %7.2f ms  max "
           "%7.2f ms\n",
           res.reg_p50, res.reg_p90, (double)reg_us[n - 1] / 1000.0);
    printf("    PQconnectdb + SELECT 1                      p50 %7.2f ms  p90 %7.2f ms  max "
           "%7.2f ms\n",
           res.conn_p50, res.conn_p90, (double)conn_us[n - 1] / 1000.0);
    printf("    difference of medians %+.2f ms (target <= +5 ms), ratio %.2fx\n",
           res.reg_p50 - res.conn_p50, res.reg_p50 / res.conn_p50);
    free(reg_us);
    free(conn_us);
    return res;
}

/* ---- (c) Zipf mix --------------------------------------------------------- */

static double *zipf_cdf;

/* k^-s without libm (the CMake bench targets do not link it): exp(-s ln k). */
static double ln_pos(double x)
{
    int e = 0;
    while (x >= 2.0) {
        x /= 2.0;
        e++;
    }
    while (x < 1.0) {
        x *= 2.0;
        e--;
    }
    double t = (x - 1) / (x + 1), t2 = t * t, term = t, sum = 0;
    for (int i = 1; i < 60; i += 2) { /* ln x = 2 atanh t */
        sum += term / i;
        term *= t2;
    }
    return 2 * sum + e * 0.69314718055994530942;
}

static double exp_of(double y)
{
    int n = 0;
    while (y > 0.5) {
        y -= 0.69314718055994530942;
        n++;
    }
    while (y < -0.5) {
        y += 0.69314718055994530942;
        n--;
    }
    double sum = 1, term = 1;
    for (int i = 1; i < 30; i++) {
        term *= y / i;
        sum += term;
    }
    for (; n > 0; n--)
        sum *= 2;
    for (; n < 0; n++)
        sum /= 2;
    return sum;
}

static double inv_pow(int k, double s)
{
    return exp_of(-s * ln_pos((double)k));
}

static void zipf_init(int n, double s)
{
    zipf_cdf = malloc(sizeof(double) * (size_t)n);
    double sum = 0;
    for (int k = 1; k <= n; k++)
        sum += inv_pow(k, s);
    double acc = 0;
    for (int k = 1; k <= n; k++) {
        acc += inv_pow(k, s) / sum;
        zipf_cdf[k - 1] = acc;
    }
    zipf_cdf[n - 1] = 1.0;
}

static uint64_t xs(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* rank 0..n-1 */
static int zipf_draw(uint64_t *rng, int n)
{
    double u = (double)(xs(rng) >> 11) / 9007199254740992.0;
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (zipf_cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

struct zrun {
    dbpool_registry *reg; /* NULL: baseline, a new connection per query */
    atomic_int measuring, stop;
    atomic_char *seen; /* [dbs]: a worker asked for this rank (its pool exists or is made) */
};

struct zworker {
    struct zrun *run;
    uint64_t rng;
    int64_t *lat; /* checkout latency (us), measured phase only */
    size_t nlat, cap;
    long ok, timeouts, drops, other;
    char other_msg[200];
};

static void *zworker_main(void *arg)
{
    struct zworker *w = arg;
    struct zrun *run = w->run;
    char key[32], ci[1024], db[32];

    while (!atomic_load(&run->stop)) {
        int rank = zipf_draw(&w->rng, opt.dbs);
        int measuring = atomic_load(&run->measuring);
        int64_t t0 = now_us();
        int rc = 0;
        if (run->reg) {
            dbpool_lease l;
            snprintf(key, sizeof key, "z%03d", rank);
            atomic_store_explicit(&run->seen[rank], 1, memory_order_relaxed);
            rc = dbpool_registry_checkout(run->reg, key, 5000, &l);
            int64_t t1 = now_us();
            if (rc == 0) {
                if (!select1(dbpool_pg_conn(&l)))
                    rc = DBPOOL_EQUERY;
                (void)dbpool_checkin(&l);
            }
            if (measuring && rc == 0) {
                if (w->nlat == w->cap) {
                    w->cap = w->cap ? 2 * w->cap : 4096;
                    w->lat = realloc(w->lat, w->cap * sizeof(int64_t));
                }
                w->lat[w->nlat++] = t1 - t0;
            }
        } else {
            dbname(db, sizeof db, rank);
            conninfo_for(ci, sizeof ci, db);
            PGconn *c = PQconnectdb(ci);
            if (PQstatus(c) != CONNECTION_OK || !select1(c))
                rc = DBPOOL_ECONNECT;
            PQfinish(c);
        }
        if (!measuring)
            continue;
        if (rc == 0)
            w->ok++;
        else if (rc == DBPOOL_ETIMEDOUT)
            w->timeouts++;
        else if (rc == DBPOOL_EDROPPED)
            w->drops++;
        else if (w->other++ == 0)
            snprintf(w->other_msg, sizeof w->other_msg, "%d %s", rc, dbpool_last_error());
    }
    return NULL;
}

/* --series: the registry's own open count (connections counted against the
 * cap, connecting ones included) next to the server's live client backends,
 * every series_ms. open - backends is what the cap holds in transit: connects
 * the server does not list yet (before authentication ends) less sessions
 * closed whose backends have not exited yet. A slot idle in transit would
 * show as a gap that persists; connects in flight as a small gap that moves. */
struct series {
    PGconn *conn;
    long n, gap_pos, idle_waiting;
    double gap_sum;
    int gap_max, gap_min;
};

static void series_start(struct series *se, int ms)
{
    char ci[1024];
    memset(se, 0, sizeof *se);
    se->gap_min = INT32_MAX;
    se->gap_max = INT32_MIN;
    if (ms <= 0)
        return;
    conninfo_for(ci, sizeof ci, "postgres");
    se->conn = PQconnectdb(ci);
    if (PQstatus(se->conn) != CONNECTION_OK) {
        fprintf(stderr, "--series: %s", PQerrorMessage(se->conn));
        PQfinish(se->conn);
        se->conn = NULL;
        return;
    }
    printf("    series (every %d ms): t_ms open backends gap waiting cap\n", ms);
}

static void series_sample(struct series *se, const dbpool_registry_stats *st, int64_t t_us)
{
    if (!se->conn)
        return;
    PGresult *r = PQexec(se->conn, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                                   "'client backend' AND pid <> pg_backend_pid()");
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        int b = atoi(PQgetvalue(r, 0, 0));
        int gap = st->open_connections - b;
        se->n++;
        se->gap_sum += gap;
        se->gap_pos += gap > 0;
        if (gap > se->gap_max)
            se->gap_max = gap;
        if (gap < se->gap_min)
            se->gap_min = gap;
        /* a tenant waits for room while the cap has some: a slot idles */
        se->idle_waiting += st->tenants_waiting > 0 && st->open_connections < st->cap;
        printf("    series %6" PRId64 " %3d %3d %+3d %3d %3d\n", t_us / 1000, st->open_connections,
               b, gap, st->tenants_waiting, st->cap);
    }
    PQclear(r);
}

static void series_report(struct series *se)
{
    if (!se->conn)
        return;
    if (se->n)
        printf("    open - backends over %ld samples: max %+d, min %+d, mean %+.2f, above 0 in "
               "%ld; samples with a tenant waiting while open < cap: %ld\n",
               se->n, se->gap_max, se->gap_min, se->gap_sum / (double)se->n, se->gap_pos,
               se->idle_waiting);
    PQfinish(se->conn);
    se->conn = NULL;
}

/* Misses: per tenant, the pool's connects and checkouts (its own
 * counters), read at the start and at the end of the measured phase; by rank
 * bucket, so that a hot tenant losing its connections shows. Only ranks a
 * worker asked for are read (reading creates a pool). */
struct tcount {
    uint64_t checkouts, connects;
    int open; /* connected or connecting now */
};

static void tenant_counts(struct zrun *run, struct tcount *c)
{
    char key[32];
    for (int i = 0; i < opt.dbs; i++) {
        dbpool *p;
        dbpool_stats st;
        c[i].checkouts = c[i].connects = 0;
        c[i].open = 0;
        if (!atomic_load(&run->seen[i]))
            continue;
        snprintf(key, sizeof key, "z%03d", i);
        if (dbpool_registry_get(run->reg, key, &p) != 0)
            continue;
        if (dbpool_stats_get(p, &st) == 0) {
            c[i].checkouts = st.checkouts;
            c[i].connects = st.connects;
            c[i].open = st.idle + st.busy + st.connecting + st.pinging;
        }
        dbpool_registry_put(run->reg, p);
    }
}

static double miss_report(const struct tcount *c0, const struct tcount *c1)
{
    static const int edge[] = {0, 10, 50, 1 << 30};
    uint64_t tco = 0, tcn = 0;
    printf("    misses (connects / checkouts, the pools' own counters, measured phase):");
    for (int b = 0; b < 3; b++) {
        uint64_t co = 0, cn = 0;
        int open = 0;
        for (int i = edge[b]; i < opt.dbs && i < edge[b + 1]; i++) {
            co += c1[i].checkouts - c0[i].checkouts;
            cn += c1[i].connects - c0[i].connects;
            open += c1[i].open;
        }
        tco += co;
        tcn += cn;
        if (edge[b] < opt.dbs)
            printf(" ranks %d-%d %" PRIu64 "/%" PRIu64 " (%.1f%%, %d open at the end);",
                   edge[b] + 1, edge[b + 1] < opt.dbs ? edge[b + 1] : opt.dbs, cn, co,
                   co ? 100.0 * (double)cn / (double)co : 0.0, open);
    }
    double m = tco ? 100.0 * (double)tcn / (double)tco : 0.0;
    printf(" all %" PRIu64 "/%" PRIu64 " (%.1f%%)\n", tcn, tco, m);
    return m;
}

/* The tenant pools' own connect times (slot CONNECTING to ready: what the
 * cap holds while a connect is in flight), and what Little's law predicts
 * in transit from them: connects/s x mean connect time. */
static void connect_time_report(dbpool_registry *reg, double connects_per_s)
{
    uint64_t n = 0;
    int64_t sum = 0, p99 = 0;
    char key[32];
    for (int i = 0; i < opt.dbs; i++) {
        dbpool *p;
        dbpool_stats st;
        snprintf(key, sizeof key, "z%03d", i);
        if (dbpool_registry_get(reg, key, &p) != 0)
            continue;
        if (dbpool_stats_get(p, &st) == 0) {
            n += st.connect_time.count;
            sum += st.connect_time.sum_us;
            if (st.connect_time.p99_us > p99)
                p99 = st.connect_time.p99_us;
        }
        dbpool_registry_put(reg, p);
    }
    if (!n)
        return;
    double mean_ms = (double)sum / (double)n / 1000.0;
    printf("    connects (start to ready, the tenant pools' own): %" PRIu64 ", mean %.2f ms, "
           "worst pool's p99 %.2f ms; in transit by Little's law: %.0f/s x %.2f ms = %.1f "
           "slots\n",
           n, mean_ms, (double)p99 / 1000.0, connects_per_s, mean_ms,
           connects_per_s * mean_ms / 1000.0);
}

struct zipf_result {
    double qps, p50_ms, p99_ms, max_ms, miss_pct;
    long ok, timeouts, drops, other;
    uint64_t evictions, created;
    int max_open;
};

static struct zipf_result part_c(int baseline)
{
    struct zipf_result z;
    struct zrun run;
    int nt = opt.threads;
    struct zworker *w = calloc((size_t)nt, sizeof *w);
    pthread_t *th = calloc((size_t)nt, sizeof *th);
    dbpool_registry_stats s0, s1;
    double secs = baseline ? (opt.seconds < 5 ? opt.seconds : 5) : opt.seconds;

    memset(&z, 0, sizeof z);
    memset(&run, 0, sizeof run);
    run.reg = baseline ? NULL : open_registry(opt.cap);
    run.seen = calloc((size_t)opt.dbs, sizeof *run.seen);
    struct tcount *cnt0 = calloc((size_t)opt.dbs, sizeof *cnt0);
    struct tcount *cnt1 = calloc((size_t)opt.dbs, sizeof *cnt1);
    for (int i = 0; i < nt; i++) {
        w[i].run = &run;
        w[i].rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
        pthread_create(&th[i], NULL, zworker_main, &w[i]);
    }
    sleep_ms(1000); /* warm-up: tenants created, connections opened */
    if (run.reg) {
        dbpool_registry_stats_get(run.reg, &s0);
        tenant_counts(&run, cnt0);
    }
    int64_t t0 = now_us();
    atomic_store(&run.measuring, 1);
    int64_t end = t0 + (int64_t)(secs * 1e6);
    struct series se;
    series_start(&se, run.reg ? opt.series_ms : 0);
    while (now_us() < end) {
        sleep_ms(se.conn ? opt.series_ms : 20);
        if (run.reg) {
            dbpool_registry_stats st;
            dbpool_registry_stats_get(run.reg, &st);
            if (st.open_connections > z.max_open)
                z.max_open = st.open_connections;
            series_sample(&se, &st, now_us() - t0);
        }
    }
    atomic_store(&run.measuring, 0);
    int64_t t1 = now_us();
    if (run.reg)
        tenant_counts(&run, cnt1);
    atomic_store(&run.stop, 1);
    for (int i = 0; i < nt; i++)
        pthread_join(th[i], NULL);

    size_t nl = 0;
    for (int i = 0; i < nt; i++)
        nl += w[i].nlat;
    int64_t *all = malloc((nl ? nl : 1) * sizeof(int64_t));
    nl = 0;
    for (int i = 0; i < nt; i++) {
        memcpy(all + nl, w[i].lat, w[i].nlat * sizeof(int64_t));
        nl += w[i].nlat;
        z.ok += w[i].ok;
        z.timeouts += w[i].timeouts;
        z.drops += w[i].drops;
        z.other += w[i].other;
        if (w[i].other && z.other == w[i].other)
            fprintf(stderr, "    error: %s\n", w[i].other_msg);
        free(w[i].lat);
    }
    qsort(all, nl, sizeof(int64_t), cmp_i64);
    z.qps = (double)z.ok / ((double)(t1 - t0) / 1e6);
    z.p50_ms = (double)q_of(all, nl, 0.5) / 1000.0;
    z.p99_ms = (double)q_of(all, nl, 0.99) / 1000.0;
    z.max_ms = nl ? (double)all[nl - 1] / 1000.0 : 0;
    free(all);

    if (run.reg) {
        dbpool_registry_stats_get(run.reg, &s1);
        z.evictions = s1.evictions - s0.evictions;
        z.created = s1.pools_created;
        printf("\n(c) Zipf(s=%.2f) over %d tenants, cap %d, %d threads, %.0f s (after 1 s "
               "warm-up)\n",
               opt.zipf_s, opt.dbs, opt.cap, nt, secs);
        printf("    %.0f queries/s (checkout + SELECT 1 + checkin); ok=%ld timeouts=%ld "
               "drops=%ld other=%ld\n",
               z.qps, z.ok, z.timeouts, z.drops, z.other);
        printf("    checkout latency p50 %.3f ms  p99 %.3f ms  max %.3f ms\n", z.p50_ms, z.p99_ms,
               z.max_ms);
        printf("    evictions %" PRIu64 " (%.0f/s); tenant pools %d; open connections max "
               "%d (cap %d)\n",
               z.evictions, (double)z.evictions / secs, s1.tenants, z.max_open, opt.cap);
        z.miss_pct = miss_report(cnt0, cnt1);
        series_report(&se);
        if (opt.series_ms > 0)
            connect_time_report(run.reg, (double)z.evictions / secs);
        if (dbpool_registry_close(run.reg) != 0)
            fprintf(stderr, "registry close: %s\n", dbpool_last_error());
    } else {
        printf("\n(c') baseline: same mix, a new connection per query (PQconnectdb + SELECT "
               "1 + PQfinish), %d threads, %.0f s\n",
               nt, secs);
        printf("    %.0f queries/s; failures %ld\n", z.qps, z.other);
    }
    free(w);
    free(th);
    free(run.seen);
    free(cnt0);
    free(cnt1);
    return z;
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!a)
            break;
        if (!strcmp(a, "--tenants") && v)
            opt.tenants = atoi(argv[++i]);
        else if (!strcmp(a, "--dbs") && v)
            opt.dbs = atoi(argv[++i]);
        else if (!strcmp(a, "--cap") && v)
            opt.cap = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && v)
            opt.threads = atoi(argv[++i]);
        else if (!strcmp(a, "--seconds") && v)
            opt.seconds = atof(argv[++i]);
        else if (!strcmp(a, "--cold") && v)
            opt.cold = atoi(argv[++i]);
        else if (!strcmp(a, "--zipf") && v)
            opt.zipf_s = atof(argv[++i]);
        else if (!strcmp(a, "--parts") && v)
            opt.parts = argv[++i];
        else if (!strcmp(a, "--series") && v)
            opt.series_ms = atoi(argv[++i]);
        else if (!strcmp(a, "--tenant-size") && v)
            opt.tenant_size = atoi(argv[++i]);
        else if (!strcmp(a, "--max-connecting") && v)
            opt.max_connecting = atoi(argv[++i]);
        else if (!strcmp(a, "--no-baseline"))
            opt.skip_baseline = 1;
        else if (a[0] == '-')
            usage();
        else
            opt.tmpl = a;
    }
    if (!opt.tmpl || opt.tenants < 1 || opt.dbs < 1 || opt.cap < 1 || opt.threads < 1 ||
        opt.cold < 1)
        usage();
    const char *pct = strstr(opt.tmpl, "%s");
    opt.has_db = pct != NULL;
    if (pct && (strchr(pct + 2, '%') || strchr(opt.tmpl, '%') != pct)) {
        fprintf(stderr, "the template may contain one %%s and no other %%\n");
        return 2;
    }
    if (dbpool_set_allocator(&counting) != 0) {
        fprintf(stderr, "dbpool_set_allocator: %s\n", dbpool_last_error());
        return 1;
    }
    char la[128];
    loadavg(la, sizeof la);
    printf("registry_bench: dbpool %s, libpq %d, %s; loadavg at start: %s\n", DBPOOL_VERSION_STRING,
           PQlibVersion(), opt.has_db ? "one database per tenant" : "one shared database", la);
    if (opt.has_db)
        create_databases();
    prewarm(opt.has_db ? opt.dbs : 1);

    int do_a = strchr(opt.parts, 'a') != NULL, do_b = strchr(opt.parts, 'b') != NULL,
        do_c = strchr(opt.parts, 'c') != NULL;
    struct cold_result b1 = {0}, b2 = {0};
    struct mem_result a = {0};
    struct zipf_result c = {0}, base = {0};
    dbpool_registry *reg;

    /* (b1) cold tenants with an empty registry */
    if (do_b) {
        reg = open_registry(opt.cap);
        b1 = part_b(reg, "empty registry", 0);
        if (dbpool_registry_close(reg) != 0)
            fprintf(stderr, "registry close: %s\n", dbpool_last_error());
    }

    /* (a) then (b2) with the idle tenants registered */
    if (do_a) {
        reg = open_registry(opt.cap);
        a = part_a(reg);
        if (do_b) {
            char label[64];
            snprintf(label, sizeof label, "%d idle tenant pools registered", opt.tenants);
            b2 = part_b(reg, label, opt.cold);
        }
        if (dbpool_registry_close(reg) != 0)
            fprintf(stderr, "registry close: %s\n", dbpool_last_error());
    }

    /* (c) Zipf mix under the cap, and the connect-per-query baseline */
    if (do_c) {
        zipf_init(opt.dbs, opt.zipf_s);
        c = part_c(0);
        if (!opt.skip_baseline)
            base = part_c(1);
    }

    loadavg(la, sizeof la);
    printf("\nloadavg at end: %s\nsummary\n", la);
    if (do_a)
        printf("  memory per idle tenant pool      %.0f B heap (%.0f B dbpool + %.0f B libpq)  "
               "target <= 2048 B: %s\n",
               a.heap_per, a.dbpool_per, a.libpq_per, a.heap_per <= 2048 ? "met" : "NOT met");
    if (do_b)
        printf("  cold first query, empty registry  %.2f ms vs connect %.2f ms (%+.2f ms)  "
               "target <= +5 ms: %s\n",
               b1.reg_p50, b1.conn_p50, b1.reg_p50 - b1.conn_p50,
               b1.reg_p50 <= b1.conn_p50 + 5 ? "met" : "NOT met");
    if (do_a && do_b)
        printf("  cold first query, %d idle pools  %.2f ms vs connect %.2f ms (%+.2f ms)  "
               "target <= +5 ms: %s\n",
               opt.tenants, b2.reg_p50, b2.conn_p50, b2.reg_p50 - b2.conn_p50,
               b2.reg_p50 <= b2.conn_p50 + 5 ? "met" : "NOT met");
    if (do_c) {
        printf("  Zipf mix, cap %d                  %.0f q/s, p99 checkout %.3f ms, %" PRIu64
               " evictions",
               opt.cap, c.qps, c.p99_ms, c.evictions);
        printf(", misses %.1f%%", c.miss_pct);
        if (!opt.skip_baseline)
            printf("; connect-per-query baseline %.0f q/s (%.1fx)", base.qps, c.qps / base.qps);
        printf("\n");
    }
    return 0;
}
