/*
 * isolation_stall.c - how long one slow host-name lookup stalls the manager
 * thread that serves every pool's timers, when 1,000 other pools are open.
 * Public API only (dbpool.h, dbpool_pg.h), so the same source builds against
 * any commit; see bench/isolation_stall.sh, which runs it before and after
 * the change that moved lookups off the manager thread.
 *
 *   LD_PRELOAD=slowdns_shim.so isolation_stall --conninfo "host=127.0.0.1 port=5432 ..."
 *       [--pools 1000] [--pool-min 0] [--seconds 10] [--hold 100]
 *       [--slow-host slow.dbpool.test] [--label NAME] [--no-shim] [--verbose]
 *
 * Set up, in this order:
 *   - --pools pools (size 1, min_size --pool-min) on the conninfo's server;
 *   - a probe pool (size 1, min_size 1, hold_timeout --hold ms, event_cb);
 *   - a slow pool: host=--slow-host, port = a local port that refuses
 *     connections (a bound socket that does not listen). The shim
 *     (bench/shim/slowdns_shim.c) makes every lookup of that name sleep
 *     (SLOWDNS_MS, default 2000 ms) and then resolve to 127.0.0.1; the connect
 *     is refused, the pool backs off 100..500 ms and looks the name up again,
 *     for the whole run.
 * Then, for --seconds, three measurements run at once:
 *   expiry   the probe thread checks a lease out, polls dbpool_lease_check()
 *            every 0.25 ms until DBPOOL_EEXPIRED and records
 *            observed - (checkout_at_ms + hold): how late the manager served
 *            the hold_timeout timer. Check-in discards the connection; the
 *            next checkout waits for the manager to reconnect ("reconnect").
 *   event    every event of the probe pool (connected, disconnected,
 *            hold_timeout): time of the callback - ev->at_ms.
 *   open     another thread opens a pool (min_size 0) and closes it again
 *            every 200 ms, timing dbpool_pg_open + dbpool_close.
 * Samples more than 20 ms late are also matched against the shim's log of
 * lookup start and end times (the moments a lookup off the manager thread
 * still touches the manager). After the window, dbpool_close of the slow pool
 * is timed 100 ms into one of its lookups.
 * It prints a summary and one "RESULT key=value ..." line (times in ms) that
 * the script reads. Exit status 0 unless the set-up failed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dbpool.h"
#include "dbpool_pg.h"

#define MAX_SAMPLES 100000

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_us(long us)
{
    struct timespec ts = {(time_t)(us / 1000000), (us % 1000000) * 1000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---- samples ---------------------------------------------------------------- */

typedef struct {
    double v[MAX_SAMPLES];  /* how late (ms) */
    double at[MAX_SAMPLES]; /* when it was observed (monotonic ms) */
    atomic_int n;
} series;

static void add(series *s, double v, double at)
{
    int i = atomic_fetch_add(&s->n, 1);
    if (i < MAX_SAMPLES) {
        s->v[i] = v;
        s->at[i] = at;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int n;
    double p50, p99, max;
} summary;

/* nearest-rank quantiles */
static summary summarize(series *s)
{
    summary r = {0, 0, 0, 0};
    int n = atomic_load(&s->n);
    if (n > MAX_SAMPLES)
        n = MAX_SAMPLES;
    if (n == 0)
        return r;
    qsort(s->v, (size_t)n, sizeof(double), cmp_double);
    int i50 = (int)((n * 50 + 99) / 100) - 1, i99 = (int)((n * 99 + 99) / 100) - 1;
    r.n = n;
    r.p50 = s->v[i50 < 0 ? 0 : i50];
    r.p99 = s->v[i99 < 0 ? 0 : i99];
    r.max = s->v[n - 1];
    return r;
}

static series expiry, events, openclose, reconnect;

/* The shim's log of slow lookups (start and end, monotonic ms), if loaded. */
static double *shim_start, *shim_end;
static atomic_long *shim_logged;

#define LATE_MS 20.0 /* a sample this late counts as an outlier */
#define EDGE_MS 50.0 /* "at a lookup's start or end": this close to it */

/* Of the samples later than LATE_MS (their span [at - v, at]), how many came
 * within EDGE_MS of a slow lookup starting or ending. With lookups off the
 * manager thread the only moments the slow pool touches the manager are
 * those edges, so a stall left over from the lookups would show up here. */
static void outliers(series *s, int *late, int *at_edge)
{
    int n = atomic_load(&s->n);
    long m = shim_logged ? atomic_load(shim_logged) : 0;
    if (n > MAX_SAMPLES)
        n = MAX_SAMPLES;
    if (m > 4096)
        m = 4096;
    *late = *at_edge = 0;
    for (int i = 0; i < n; i++) {
        if (s->v[i] <= LATE_MS)
            continue;
        double lo = s->at[i] - s->v[i] - EDGE_MS, hi = s->at[i] + EDGE_MS;
        int near = 0;
        for (long j = 0; j < m && !near; j++) {
            double a = shim_start[j], b = shim_end[j];
            near = b > 0 && ((a >= lo && a <= hi) || (b >= lo && b <= hi));
        }
        (*late)++;
        *at_edge += near;
    }
}

/* ---- options and state ----------------------------------------------------- */

static const char *conninfo;
static const char *label = "run";
static const char *slow_host = "slow.dbpool.test";
static int npools = 1000, pool_min = 0, hold_ms = 100, verbose = 0, need_shim = 1;
static double seconds = 10.0;

static atomic_int window_on; /* samples count only inside the window */
static atomic_int stop_threads;
static double window_start, window_end;
static atomic_long log_lines;
static atomic_int probe_failures, extra_failures;
static char probe_error[256]; /* the first probe failure, for the summary */

static void probe_failed(const char *what, int rc)
{
    if (atomic_fetch_add(&probe_failures, 1) == 0)
        snprintf(probe_error, sizeof probe_error, "%s: %s: %s", what, dbpool_strerror(rc),
                 dbpool_last_error());
}

static atomic_long *shim_lookups, *shim_finished;

static void log_sink(void *arg, dbpool_log_level level, const char *pool_name, const char *msg)
{
    (void)arg;
    if (atomic_fetch_add(&log_lines, 1) < 5 && verbose)
        fprintf(stderr, "[log %d] %s: %s\n", (int)level, pool_name ? pool_name : "-", msg);
}

static void event_sink(void *arg, const dbpool_event *ev)
{
    (void)arg;
    double t = now_ms();
    if (atomic_load(&window_on))
        add(&events, t - (double)ev->at_ms, t);
}

static void base_config(dbpool_config *cfg, const char *name)
{
    dbpool_config_init(cfg);
    cfg->name = name;
    cfg->size = 1;
    cfg->min_size = 1;
    cfg->log_cb = log_sink;
    cfg->log_level = DBPOOL_LOG_WARNING;
    cfg->connect_timeout = 5000;
    cfg->backoff_min = 100;
    cfg->backoff_max = 500;
}

static dbpool *open_or_die(const char *ci, const dbpool_config *cfg)
{
    dbpool *p = NULL;
    int rc = dbpool_pg_open(&p, ci, cfg);
    if (rc != 0) {
        fprintf(stderr, "isolation_stall: dbpool_pg_open(%s): %s: %s\n", cfg->name,
                dbpool_strerror(rc), dbpool_last_error());
        exit(1);
    }
    return p;
}

static int wait_idle(dbpool *p, int n, double timeout_ms)
{
    double end = now_ms() + timeout_ms;
    dbpool_stats st;
    while (now_ms() < end) {
        if (dbpool_stats_get(p, &st) == 0 && st.idle >= n)
            return 1;
        sleep_us(5000);
    }
    return 0;
}

/* ---- the probe: how late does hold_timeout fire? ---------------------------- */

static void *probe_main(void *arg)
{
    dbpool *p = arg;
    while (!atomic_load(&stop_threads)) {
        dbpool_lease l;
        double t0 = now_ms();
        int rc = dbpool_checkout(p, 10000, &l);
        double t1 = now_ms();
        if (rc != 0) {
            probe_failed("checkout", rc);
            sleep_us(10000);
            continue;
        }
        if (atomic_load(&window_on))
            add(&reconnect, t1 - t0, t1);
        dbpool_lease_info info;
        if ((rc = dbpool_lease_info_get(&l, &info)) != 0) {
            probe_failed("lease_info", rc);
            (void)dbpool_checkin(&l);
            continue;
        }
        double due = (double)info.checkout_at_ms + hold_ms;
        double seen = 0;
        for (;;) {
            rc = dbpool_lease_check(&l);
            if (rc == DBPOOL_EEXPIRED) {
                seen = now_ms();
                break;
            }
            if (rc != 0 || now_ms() > due + 30000) { /* cannot happen; bounded anyway */
                probe_failed("lease_check", rc);
                break;
            }
            sleep_us(250);
        }
        /* count an expiry whose deadline fell inside the window */
        if (seen > 0 && due >= window_start && due < window_end)
            add(&expiry, seen - due, seen);
        (void)dbpool_checkin(&l);
    }
    return NULL;
}

/* ---- open + close of another pool meanwhile -------------------------------- */

static char extra_ci[2048];

static void *openclose_main(void *arg)
{
    (void)arg;
    dbpool_config cfg;
    base_config(&cfg, "iso_extra");
    cfg.min_size = 0;
    while (!atomic_load(&stop_threads)) {
        double t0 = now_ms();
        dbpool *p = NULL;
        int rc = dbpool_pg_open(&p, extra_ci, &cfg);
        if (rc == 0)
            rc = dbpool_close(p);
        double t1 = now_ms();
        if (rc != 0)
            atomic_fetch_add(&extra_failures, 1);
        else if (atomic_load(&window_on))
            add(&openclose, t1 - t0, t1);
        double left = 200 - (now_ms() - t0);
        if (left > 0)
            sleep_us((long)(left * 1000));
    }
    return NULL;
}

/* ---- main -------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: isolation_stall --conninfo CI [--pools N] [--pool-min 0|1] [--seconds S]\n"
            "                       [--hold MS] [--slow-host NAME] [--label NAME] [--no-shim]\n"
            "                       [--verbose]\n"
            "  run with LD_PRELOAD=slowdns_shim.so (bench/shim/slowdns_shim.c); conninfo may\n"
            "  also come from DATABASE_URL (key=value form; host must be numeric or a socket)\n");
}

static void print_summary(const char *what, summary s)
{
    printf("  %-34s n=%-5d p50=%9.1f  p99=%9.1f  max=%9.1f ms\n", what, s.n, s.p50, s.p99, s.max);
}

int main(int argc, char **argv)
{
    conninfo = getenv("DATABASE_URL");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--conninfo") && v)
            conninfo = argv[++i];
        else if (!strcmp(a, "--pools") && v)
            npools = atoi(argv[++i]);
        else if (!strcmp(a, "--pool-min") && v)
            pool_min = atoi(argv[++i]);
        else if (!strcmp(a, "--seconds") && v)
            seconds = atof(argv[++i]);
        else if (!strcmp(a, "--hold") && v)
            hold_ms = atoi(argv[++i]);
        else if (!strcmp(a, "--slow-host") && v)
            slow_host = argv[++i];
        else if (!strcmp(a, "--label") && v)
            label = argv[++i];
        else if (!strcmp(a, "--no-shim"))
            need_shim = 0;
        else if (!strcmp(a, "--verbose"))
            verbose = 1;
        else {
            usage();
            return 2;
        }
    }
    if (!conninfo || npools < 0 || pool_min < 0 || pool_min > 1 || seconds <= 0 || hold_ms <= 0) {
        usage();
        return 2;
    }
    shim_lookups = (atomic_long *)dlsym(RTLD_DEFAULT, "slowdns_lookups");
    shim_finished = (atomic_long *)dlsym(RTLD_DEFAULT, "slowdns_finished");
    shim_start = (double *)dlsym(RTLD_DEFAULT, "slowdns_start_ms");
    shim_end = (double *)dlsym(RTLD_DEFAULT, "slowdns_end_ms");
    shim_logged = (atomic_long *)dlsym(RTLD_DEFAULT, "slowdns_logged");
    if (!shim_start || !shim_end)
        shim_logged = NULL;
    if (need_shim && (!shim_lookups || !shim_finished)) {
        fprintf(stderr, "isolation_stall: the slow-lookup shim is not loaded; run with "
                        "LD_PRELOAD=.../slowdns_shim.so (or --no-shim)\n");
        return 2;
    }

    /* a local port that refuses connections: bound, never listening */
    int refuse_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    socklen_t salen = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (refuse_fd < 0 || bind(refuse_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(refuse_fd, (struct sockaddr *)&sa, &salen) != 0) {
        perror("isolation_stall: refusing port");
        return 1;
    }
    int refuse_port = ntohs(sa.sin_port);

    char ci[2048], slow_ci[2048];
    snprintf(extra_ci, sizeof extra_ci, "%s application_name=iso_extra", conninfo);
    snprintf(slow_ci, sizeof slow_ci, "%s host=%s port=%d application_name=iso_slow", conninfo,
             slow_host, refuse_port);

    printf("isolation_stall [%s]: %d pools (min_size %d), hold_timeout %d ms, window %.1f s\n",
           label, npools, pool_min, hold_ms, seconds);
    fflush(stdout);

    /* 1. the many pools */
    dbpool **pools = calloc((size_t)(npools ? npools : 1), sizeof(dbpool *));
    char(*names)[32] = calloc((size_t)(npools ? npools : 1), 32);
    if (!pools || !names)
        return 1;
    /* With connections (--pool-min 1) the pools are opened in batches of 25,
     * each waited for: a storm of 1,000 connects at once makes the server's
     * backend start-ups time out on a small machine. */
    double t0 = now_ms(), open_all_ms = 0;
    for (int i = 0; i < npools; i++) {
        dbpool_config cfg;
        snprintf(names[i], 32, "bulk%04d", i);
        base_config(&cfg, names[i]);
        cfg.min_size = pool_min;
        cfg.connect_timeout = 60000;
        snprintf(ci, sizeof ci, "%s application_name=iso_bulk", conninfo);
        double t = now_ms();
        pools[i] = open_or_die(ci, &cfg);
        open_all_ms += now_ms() - t;
        if (pool_min > 0 && (i % 25 == 24 || i == npools - 1)) {
            for (int j = i - i % 25; j <= i; j++)
                if (!wait_idle(pools[j], pool_min, 120000)) {
                    dbpool_stats st;
                    (void)dbpool_stats_get(pools[j], &st);
                    fprintf(stderr,
                            "isolation_stall: pool %s did not connect in 120 s (state %s: %s)\n",
                            names[j], dbpool_state_name(st.state), st.last_error);
                    return 1;
                }
        }
    }
    double ready_all_ms = now_ms() - t0;
    printf("  opened %d pools: dbpool_pg_open calls %.0f ms in all, all ready after %.0f ms\n",
           npools, open_all_ms, ready_all_ms);

    /* 2. the probe */
    dbpool_config pcfg;
    base_config(&pcfg, "iso_probe");
    pcfg.hold_timeout = hold_ms;
    /* its checkouts wait for a reconnect (the expired connection is discarded):
     * keep CoDel from dropping them as an overload */
    pcfg.queue_target = 10000;
    pcfg.queue_interval = 60000;
    pcfg.event_cb = event_sink;
    snprintf(ci, sizeof ci, "%s application_name=iso_probe", conninfo);
    dbpool *probe = open_or_die(ci, &pcfg);
    if (!wait_idle(probe, 1, 30000)) {
        fprintf(stderr, "isolation_stall: the probe pool did not connect\n");
        return 1;
    }

    /* 3. the slow pool; wait for its first lookup to start */
    dbpool_config scfg;
    base_config(&scfg, "iso_slow");
    dbpool *slow = open_or_die(slow_ci, &scfg);
    long lookups0 = 0;
    if (shim_lookups) {
        double end = now_ms() + 10000;
        while (atomic_load(shim_lookups) == 0 && now_ms() < end)
            sleep_us(1000);
        if (atomic_load(shim_lookups) == 0) {
            fprintf(stderr, "isolation_stall: no lookup of %s started\n", slow_host);
            return 1;
        }
        lookups0 = atomic_load(shim_finished);
    }

    /* 4. the window */
    pthread_t th_probe, th_oc;
    window_start = now_ms();
    window_end = window_start + seconds * 1000;
    atomic_store(&window_on, 1);
    if (pthread_create(&th_probe, NULL, probe_main, probe) != 0 ||
        pthread_create(&th_oc, NULL, openclose_main, NULL) != 0) {
        perror("pthread_create");
        return 1;
    }
    while (now_ms() < window_end)
        sleep_us(10000);
    atomic_store(&window_on, 0);
    long lookups = shim_finished ? atomic_load(shim_finished) - lookups0 : 0;
    atomic_store(&stop_threads, 1);
    pthread_join(th_probe, NULL);
    pthread_join(th_oc, NULL);

    dbpool_stats sst;
    memset(&sst, 0, sizeof sst);
    (void)dbpool_stats_get(slow, &sst);

    /* 5. tear down; the slow pool's close is timed while a lookup of its host
     * name is in progress (before: the lookup ran on the manager thread) */
    int in_lookup = 0;
    if (shim_lookups) {
        double end = now_ms() + 3000; /* a retry starts within backoff_max */
        while (!(in_lookup = atomic_load(shim_lookups) > atomic_load(shim_finished)) &&
               now_ms() < end)
            sleep_us(1000);
        if (in_lookup)
            sleep_us(100000); /* 100 ms into it */
    }
    t0 = now_ms();
    (void)dbpool_close(slow);
    double close_slow_ms = now_ms() - t0;
    (void)dbpool_close(probe);
    t0 = now_ms();
    for (int i = 0; i < npools; i++)
        (void)dbpool_close(pools[i]);
    double close_all_ms = now_ms() - t0;
    close(refuse_fd);

    int late_e, edge_e, late_v, edge_v;
    outliers(&expiry, &late_e, &edge_e); /* before summarize() sorts the values */
    outliers(&events, &late_v, &edge_v);
    summary se = summarize(&expiry), sv = summarize(&events), so = summarize(&openclose),
            sr = summarize(&reconnect);
    printf("  slow lookups finished in window: %ld (slow pool: state %s, %llu connect failures)\n",
           lookups, dbpool_state_name(sst.state), (unsigned long long)sst.connect_failures);
    print_summary("hold_timeout lateness", se);
    print_summary("event delivery latency", sv);
    print_summary("open+close of another pool", so);
    print_summary("probe checkout wait (reconnect)", sr);
    printf("  samples later than %.0f ms: %d expiries, %d events; of these within %.0f ms of a "
           "slow lookup's start or end: %d, %d\n",
           LATE_MS, late_e, late_v, EDGE_MS, edge_e, edge_v);
    if (probe_error[0])
        printf("  first probe error: %s\n", probe_error);
    printf("  close of the slow pool %.1f ms (%s), close of %d pools %.0f ms; probe errors "
           "%d, open/close errors %d, log lines %ld\n",
           close_slow_ms, in_lookup ? "during a lookup" : "no lookup running", npools, close_all_ms,
           atomic_load(&probe_failures), atomic_load(&extra_failures), atomic_load(&log_lines));
    printf("RESULT label=%s pools=%d pool_min=%d window_s=%.2f lookups=%ld "
           "expiry_n=%d expiry_p50=%.2f expiry_p99=%.2f expiry_max=%.2f "
           "event_n=%d event_p50=%.2f event_p99=%.2f event_max=%.2f "
           "oc_n=%d oc_p50=%.2f oc_p99=%.2f oc_max=%.2f "
           "reconnect_n=%d reconnect_p50=%.2f reconnect_p99=%.2f reconnect_max=%.2f "
           "open_all_ms=%.0f close_slow_in_lookup=%d close_slow_ms=%.2f close_all_ms=%.0f "
           "probe_errors=%d oc_errors=%d late_expiry=%d late_expiry_edge=%d late_event=%d "
           "late_event_edge=%d\n",
           label, npools, pool_min, seconds, lookups, se.n, se.p50, se.p99, se.max, sv.n, sv.p50,
           sv.p99, sv.max, so.n, so.p50, so.p99, so.max, sr.n, sr.p50, sr.p99, sr.max, open_all_ms,
           in_lookup, close_slow_ms, close_all_ms, atomic_load(&probe_failures),
           atomic_load(&extra_failures), late_e, edge_e, late_v, edge_v);
    free(pools);
    free(names);
    return 0;
}
