/* adaptive_run.c - the real run the simulator (sim.c) is validated against:
 * tests/it_adaptive.c's scenario with its knobs exposed and the numbers the
 * simulator reports (throughput, p99 wait, Jain's index, refusals).
 *
 *   adaptive_run [options] "<conninfo template with %s for the database>"
 *
 * Forks --procs app server processes; each opens a registry (cap --cap,
 * adaptive unless --fixed) over --tenants tenant databases named ta000..
 * (they must exist: bench/sim/run.sh creates them) and runs --threads caller
 * threads for --seconds: each call checks out a connection of a tenant picked
 * as in it_adaptive (19 in 20 calls to the --hot first tenants, the rest to
 * any), runs SELECT 1 and checks in. Counted after --warmup seconds. Prints
 * one "key=value" line per process and a summary line. */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "dbpool_registry.h"

#define MAX_PROCS 64
#define MAX_WAITS 400000
/* waits pooled over the processes: log buckets 2% wide from 1 us */
#define NBUCKETS 1000
static int bucket(double ms)
{
    double us = ms * 1000.0;
    int b = us <= 1.0 ? 0 : (int)(log(us) / log(1.02));
    return b < NBUCKETS ? b : NBUCKETS - 1;
}
static double bucket_ms(int b)
{
    return pow(1.02, b + 0.5) / 1000.0;
}

static struct {
    const char *tmpl;
    int procs, threads, cap, tenants, hot, size, fixed;
    double seconds, warmup;
    int64_t interval;
    int series;
} opt = {NULL, 8, 4, 20, 100, 8, 3, 0, 16.0, 8.0, 1000, 0};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int resolve(void *arg, const char *tenant, char *conninfo, size_t len, dbpool_config *cfg)
{
    (void)arg;
    (void)cfg;
    char buf[1024];
    snprintf(buf, sizeof buf, opt.tmpl, tenant);
    snprintf(conninfo, len, "%s application_name=adaptive_run connect_timeout=10", buf);
    return 0;
}

#define MAX_SECS 64
struct result {
    long ok, fail, fail_full, refusals, decreases, evictions;
    int cap_end;
    /* at the end of each second: cap, connections held, refusals, evictions
     * and calls completed so far (--series) */
    int sec_cap[MAX_SECS], sec_open[MAX_SECS];
    long sec_refusals[MAX_SECS], sec_evictions[MAX_SECS], sec_calls[MAX_SECS];
    double wait_p50, wait_p99, wait_max; /* ms, calls after warmup */
    uint32_t hist[NBUCKETS];
};

struct client {
    dbpool_registry *reg;
    int64_t t0;
    unsigned seed;
    long ok, fail, fail_full;
    long calls; /* completed, warmup included (the series) */
    float *waits;
    long nwaits, cap;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    char key[16];
    int64_t end = c->t0 + (int64_t)(opt.seconds * 1e6), warm = c->t0 + (int64_t)(opt.warmup * 1e6);
    for (;;) {
        int64_t t = now_us();
        if (t >= end)
            break;
        unsigned r = (unsigned)rand_r(&c->seed);
        snprintf(key, sizeof key, "ta%03d",
                 (int)(r % 20 ? r / 20 % (unsigned)opt.hot : r / 20 % (unsigned)opt.tenants));
        dbpool_lease l;
        int rc = dbpool_registry_checkout(c->reg, key, 15000, &l);
        int64_t waited = now_us() - t;
        if (rc == 0) {
            PGresult *res = PQexec(dbpool_pg_conn(&l), "SELECT 1");
            rc = PQresultStatus(res) == PGRES_TUPLES_OK ? 0 : -1;
            PQclear(res);
            (void)dbpool_checkin(&l);
            __atomic_add_fetch(&c->calls, 1, __ATOMIC_RELAXED);
        }
        if (t < warm)
            continue;
        if (rc == 0) {
            c->ok++;
        } else {
            const char *e = dbpool_last_error();
            c->fail++;
            if (strstr(e, "too many") || strstr(e, "53300"))
                c->fail_full++;
        }
        if (c->nwaits < c->cap)
            c->waits[c->nwaits++] = (float)waited / 1000.0f;
    }
    return NULL;
}

static int cmpf(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void child(int fd, int id)
{
    struct result res;
    memset(&res, 0, sizeof res);
    dbpool_registry_config rc;
    dbpool_registry_config_init(&rc);
    rc.resolve = resolve;
    rc.max_connections = opt.cap;
    rc.adaptive = !opt.fixed;
    rc.adaptive_interval = opt.interval;
    rc.tenant.size = opt.size;
    rc.tenant.backoff_min = 50; /* as it_adaptive */
    rc.tenant.backoff_max = 500;
    rc.tenant.queue_target = 5000;
    rc.tenant.queue_interval = 10000;
    dbpool_registry *reg = NULL;
    if (dbpool_registry_open(&reg, &rc) != 0) {
        fprintf(stderr, "open: %s\n", dbpool_last_error());
        _exit(1);
    }
    struct client cl[64];
    pthread_t th[64];
    int n = opt.threads < 64 ? opt.threads : 64;
    float *waits = malloc(sizeof(float) * MAX_WAITS);
    int64_t t0 = now_us();
    for (int i = 0; i < n; i++) {
        memset(&cl[i], 0, sizeof cl[i]);
        cl[i].reg = reg;
        cl[i].t0 = t0;
        cl[i].seed = (unsigned)(id * 7919 + i * 104729 + 1);
        cl[i].cap = MAX_WAITS / n;
        cl[i].waits = waits + i * cl[i].cap;
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    /* one sample per second for the series */
    for (int sec = 0; sec < MAX_SECS && sec < (int)opt.seconds; sec++) {
        int64_t at = t0 + (int64_t)(sec + 1) * 1000000, d = at - now_us();
        if (d > 0)
            usleep((useconds_t)d);
        dbpool_registry_stats st;
        if (dbpool_registry_stats_get(reg, &st) == 0) {
            res.sec_cap[sec] = st.cap;
            res.sec_open[sec] = st.open_connections;
            res.sec_refusals[sec] = (long)st.server_full;
            res.sec_evictions[sec] = (long)st.evictions;
        }
        for (int i = 0; i < n; i++)
            res.sec_calls[sec] += __atomic_load_n(&cl[i].calls, __ATOMIC_RELAXED);
    }
    long nw = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        res.ok += cl[i].ok;
        res.fail += cl[i].fail;
        res.fail_full += cl[i].fail_full;
        memmove(waits + nw, cl[i].waits, sizeof(float) * (size_t)cl[i].nwaits);
        nw += cl[i].nwaits;
    }
    if (nw > 0) {
        qsort(waits, (size_t)nw, sizeof(float), cmpf);
        res.wait_p50 = waits[nw / 2];
        res.wait_p99 = waits[(long)(nw * 0.99)];
        res.wait_max = waits[nw - 1];
    }
    for (long i = 0; i < nw; i++)
        res.hist[bucket(waits[i])]++;
    dbpool_registry_stats st;
    if (dbpool_registry_stats_get(reg, &st) == 0) {
        res.refusals = (long)st.server_full;
        res.decreases = (long)st.cap_decreases;
        res.cap_end = st.cap;
        res.evictions = (long)st.evictions;
    }
    (void)dbpool_registry_close(reg);
    free(waits);
    ssize_t w = write(fd, &res, sizeof res);
    _exit(w == (ssize_t)sizeof res ? 0 : 1);
}

/* Backends of this run, from pg_stat_activity (-1 on error). */
static int backends(PGconn *pg)
{
    PGresult *r = PQexec(pg, "SELECT count(*) FROM pg_stat_activity "
                             "WHERE application_name = 'adaptive_run'");
    int n = PQresultStatus(r) == PGRES_TUPLES_OK ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

/* Sessions the server has started so far (pg_stat_database, PostgreSQL 14+; -1 on error). */
static long sessions(PGconn *pg)
{
    PGresult *r = PQexec(pg, "SELECT sum(sessions) FROM pg_stat_database");
    long n = PQresultStatus(r) == PGRES_TUPLES_OK ? atol(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

static void usage(void)
{
    fprintf(stderr, "usage: adaptive_run [--procs N] [--threads N] [--cap N] [--fixed] "
                    "[--interval MS] [--tenants N] [--hot N] [--size N] [--seconds S] "
                    "[--warmup S] [--series] TEMPLATE\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--fixed")) {
            opt.fixed = 1;
            continue;
        }
        if (!strcmp(a, "--series")) {
            opt.series = 1;
            continue;
        }
        if (a[0] != '-') {
            opt.tmpl = a;
            continue;
        }
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--procs"))
            opt.procs = atoi(v);
        else if (!strcmp(a, "--threads"))
            opt.threads = atoi(v);
        else if (!strcmp(a, "--cap"))
            opt.cap = atoi(v);
        else if (!strcmp(a, "--interval"))
            opt.interval = atoll(v);
        else if (!strcmp(a, "--tenants"))
            opt.tenants = atoi(v);
        else if (!strcmp(a, "--hot"))
            opt.hot = atoi(v);
        else if (!strcmp(a, "--size"))
            opt.size = atoi(v);
        else if (!strcmp(a, "--seconds"))
            opt.seconds = atof(v);
        else if (!strcmp(a, "--warmup"))
            opt.warmup = atof(v);
        else
            usage();
    }
    if (!opt.tmpl || !strstr(opt.tmpl, "%s") || opt.procs < 1 || opt.procs > MAX_PROCS ||
        opt.hot < 1 || opt.tenants < opt.hot || opt.seconds <= opt.warmup)
        usage();

    char admin[1024];
    snprintf(admin, sizeof admin, opt.tmpl, "postgres");
    PGconn *pg = PQconnectdb(admin);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(pg));
        return 1;
    }
    int fds[MAX_PROCS];
    pid_t pids[MAX_PROCS];
    for (int i = 0; i < opt.procs; i++) {
        int pfd[2];
        if (pipe(pfd) != 0)
            return 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(pfd[0]);
            child(pfd[1], i);
        }
        close(pfd[1]);
        fds[i] = pfd[0];
        pids[i] = pid;
    }
    int max_b = 0;
    int64_t t0 = now_us();
    long sess0 = -1, sess1 = -1;
    /* per second: the most backends seen, sessions started so far */
    int sec_b[MAX_SECS] = {0};
    long sec_sess[MAX_SECS];
    long sess_start = opt.series ? sessions(pg) : -1;
    for (int k = 0; k < MAX_SECS; k++)
        sec_sess[k] = -1;
    while (now_us() - t0 < (int64_t)(opt.seconds * 1e6)) {
        int b = backends(pg);
        int sec = (int)((now_us() - t0) / 1000000);
        if (b > max_b)
            max_b = b;
        if (sec < MAX_SECS && b > sec_b[sec])
            sec_b[sec] = b;
        if (opt.series && sec < MAX_SECS)
            sec_sess[sec] = sessions(pg);
        if (sess0 < 0 && now_us() - t0 >= (int64_t)(opt.warmup * 1e6))
            sess0 = sessions(pg);
        usleep(250000);
    }
    sess1 = sessions(pg);
    struct result res[MAX_PROCS];
    static uint32_t hist[NBUCKETS];
    double sum = 0, sq = 0, p99 = 0, p50 = 0, wmax = 0;
    uint64_t nall = 0;
    long fail = 0, fail_full = 0, refusals = 0;
    double span = opt.seconds - opt.warmup;
    for (int i = 0; i < opt.procs; i++) {
        int status;
        waitpid(pids[i], &status, 0);
        if (read(fds[i], &res[i], sizeof res[i]) != (ssize_t)sizeof res[i]) {
            fprintf(stderr, "process %d gave no result\n", i);
            return 1;
        }
        double tput = res[i].ok / span;
        printf("proc=%d ops_per_s=%.1f fail=%ld refusals=%ld decreases=%ld evictions=%ld "
               "cap_end=%d wait_p50_ms=%.2f wait_p99_ms=%.1f\n",
               i, tput, res[i].fail, res[i].refusals, res[i].decreases, res[i].evictions,
               res[i].cap_end, res[i].wait_p50, res[i].wait_p99);
        sum += tput;
        sq += tput * tput;
        fail += res[i].fail;
        fail_full += res[i].fail_full;
        refusals += res[i].refusals;
        for (int b = 0; b < NBUCKETS; b++) {
            hist[b] += res[i].hist[b];
            nall += res[i].hist[b];
        }
        if (res[i].wait_max > wmax)
            wmax = res[i].wait_max;
    }
    for (uint64_t b = 0, acc = 0; b < NBUCKETS && nall; b++) {
        if (acc < nall / 2 && acc + hist[b] >= nall / 2)
            p50 = bucket_ms((int)b);
        if (acc < nall * 99 / 100 && acc + hist[b] >= nall * 99 / 100)
            p99 = bucket_ms((int)b);
        acc += hist[b];
    }
    uint64_t fast = 0;
    for (int b = 0; b < NBUCKETS && bucket_ms(b) < 1.0; b++)
        fast += hist[b];
    if (opt.series) { /* per second: backends, sessions, caps, held, refusals, evictions, calls */
        printf("series t,backends,sessions,caps,cap_min,cap_max,held,refusals,evictions,calls\n");
        for (int sec = 0; sec < (int)opt.seconds && sec < MAX_SECS; sec++) {
            long caps = 0, held = 0, ref = 0, ev = 0, calls = 0;
            int mn = 1 << 30, mx = 0;
            for (int i = 0; i < opt.procs; i++) {
                caps += res[i].sec_cap[sec];
                held += res[i].sec_open[sec];
                ref += res[i].sec_refusals[sec] - (sec ? res[i].sec_refusals[sec - 1] : 0);
                ev += res[i].sec_evictions[sec] - (sec ? res[i].sec_evictions[sec - 1] : 0);
                calls += res[i].sec_calls[sec] - (sec ? res[i].sec_calls[sec - 1] : 0);
                mn = res[i].sec_cap[sec] < mn ? res[i].sec_cap[sec] : mn;
                mx = res[i].sec_cap[sec] > mx ? res[i].sec_cap[sec] : mx;
            }
            long sp = sec ? sec_sess[sec - 1] : sess_start;
            printf("series %d,%d,%ld,%ld,%d,%d,%ld,%ld,%ld,%ld\n", sec + 1, sec_b[sec],
                   sec_sess[sec] >= 0 && sp >= 0 ? sec_sess[sec] - sp : -1, caps, mn, mx, held, ref,
                   ev, calls);
        }
    }
    printf("summary ops_per_s=%.1f jain=%.3f wait_p50_ms=%.2f wait_p99_ms=%.1f wait_max_ms=%.0f "
           "waits_below_1ms=%.3f refusals=%ld refusals_per_s=%.2f connects_per_s=%.2f fail=%ld "
           "fail_full=%ld max_backends=%d\n",
           sum, sq > 0 ? sum * sum / (opt.procs * sq) : 0, p50, p99, wmax,
           nall ? (double)fast / (double)nall : 0.0, refusals, refusals / opt.seconds,
           sess0 >= 0 && sess1 >= sess0
               ? (sess1 - sess0) / (double)(now_us() - t0 - opt.warmup * 1e6) * 1e6
               : -1.0,
           fail, fail_full, max_b);
    PQfinish(pg);
    return 0;
}
