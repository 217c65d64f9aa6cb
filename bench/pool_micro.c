/*
 * pool_micro.c - what one checkout + check-in costs in dbpool itself, with
 * no I/O: a stub driver whose connect_start finishes at once, measured for
 * several thread counts and pool sizes next to a naive mutex + condition
 * variable pool run in the same process, as the baseline.
 *
 *   pool_micro [--time MS] [--reps N] [--threads 1,2,8,64] [--sizes 1,4,8]
 *              [--only dbpool|naive]
 *
 * "wall ns" is wall time divided by the cycles all threads completed together
 * (aggregate throughput; with 1 thread it is the latency of one cycle);
 * "cpu ns" is the CPU time the threads used divided by the same cycles, which
 * other load on the machine does not inflate. Each
 * cell is the median of --reps runs, dbpool and naive alternating. "fair" is
 * the busiest thread's share relative to the least busy one's (1.00 = every
 * thread got the same number of cycles): dbpool serves waiters strictly FIFO
 * with direct hand-over, the naive pool lets the releasing thread barge.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dbpool.h"
#include "stub_driver.h"

#define MAX_LIST 16
#define MAX_REPS 15

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The pool runs on the stub driver (tests/stub/stub_driver.c): connects at
 * once, nothing to reset or ping. The naive pool hands out this token. */
static int stub_token;

/* ---- the naive baseline: one mutex, one condvar, a stack of connections --- */

struct naive {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void *free[64];
    int nfree;
};

static void *naive_checkout(struct naive *n)
{
    pthread_mutex_lock(&n->mu);
    while (n->nfree == 0)
        pthread_cond_wait(&n->cv, &n->mu);
    void *c = n->free[--n->nfree];
    pthread_mutex_unlock(&n->mu);
    return c;
}

static void naive_checkin(struct naive *n, void *c)
{
    pthread_mutex_lock(&n->mu);
    n->free[n->nfree++] = c;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

/* ---- a run ---------------------------------------------------------------------- */

struct run {
    int use_dbpool;
    dbpool *pool;
    struct naive naive;
    pthread_barrier_t go;
    _Atomic int stop;
    _Atomic uint64_t failures;
};

struct worker {
    struct run *run;
    uint64_t cycles;
    int64_t cpu_ns; /* this thread's CPU time during the run */
    pthread_t th;
    char pad[64];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->run;
    uint64_t n = 0;

    pthread_barrier_wait(&r->go);
    int64_t c0 = cpu_now();
    if (r->use_dbpool) {
        dbpool_lease lease;
        while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
            if (dbpool_checkout(r->pool, DBPOOL_DEFAULT_TIMEOUT, &lease) != 0) {
                atomic_fetch_add(&r->failures, 1);
                continue;
            }
            (void)dbpool_checkin(&lease);
            n++;
        }
    } else {
        while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
            void *c = naive_checkout(&r->naive);
            naive_checkin(&r->naive, c);
            n++;
        }
    }
    w->cycles = n;
    w->cpu_ns = cpu_now() - c0;
    return NULL;
}

struct result {
    double ns_per_cycle, cpu_per_cycle, fair;
    uint64_t failures;
};

static int wait_full(dbpool *pool, int size)
{
    dbpool_stats st;
    for (int i = 0; i < 5000; i++) {
        if (dbpool_stats_get(pool, &st) == 0 && st.idle >= size)
            return 0;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static int run_once(int use_dbpool, int threads, int size, int ms, struct result *res)
{
    struct run r;
    struct worker *w = calloc((size_t)threads, sizeof(*w));

    memset(&r, 0, sizeof(r));
    if (!w)
        return -1;
    r.use_dbpool = use_dbpool;
    if (use_dbpool) {
        dbpool_config cfg;
        dbpool_config_init(&cfg);
        cfg.name = "micro";
        cfg.size = size;
        if (dbpool_open(&r.pool, &stub_driver, NULL, &cfg) != 0) {
            fprintf(stderr, "dbpool_open: %s\n", dbpool_last_error());
            free(w);
            return -1;
        }
        if (wait_full(r.pool, size) != 0) {
            fprintf(stderr, "pool did not fill up\n");
            (void)dbpool_close(r.pool);
            free(w);
            return -1;
        }
    } else {
        pthread_mutex_init(&r.naive.mu, NULL);
        pthread_cond_init(&r.naive.cv, NULL);
        for (int i = 0; i < size; i++)
            r.naive.free[r.naive.nfree++] = &stub_token;
    }
    pthread_barrier_init(&r.go, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        w[i].run = &r;
        if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(1);
        }
    }
    pthread_barrier_wait(&r.go);
    int64_t t0 = now_ns();
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    atomic_store(&r.stop, 1);
    uint64_t total = 0, lo = UINT64_MAX, hi = 0;
    int64_t cpu = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].th, NULL);
        total += w[i].cycles;
        cpu += w[i].cpu_ns;
        if (w[i].cycles < lo)
            lo = w[i].cycles;
        if (w[i].cycles > hi)
            hi = w[i].cycles;
    }
    int64_t t1 = now_ns();
    pthread_barrier_destroy(&r.go);
    if (use_dbpool) {
        (void)dbpool_close(r.pool);
    } else {
        pthread_mutex_destroy(&r.naive.mu);
        pthread_cond_destroy(&r.naive.cv);
    }
    free(w);
    res->ns_per_cycle = total ? (double)(t1 - t0) / (double)total : 0;
    res->cpu_per_cycle = total ? (double)cpu / (double)total : 0;
    res->fair = hi ? (double)hi / (double)(lo ? lo : 1) : 0;
    res->failures = atomic_load(&r.failures);
    return 0;
}

static int cmp_res(const void *a, const void *b)
{
    double x = ((const struct result *)a)->ns_per_cycle,
           y = ((const struct result *)b)->ns_per_cycle;
    return x < y ? -1 : x > y;
}

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    char *end;
    while (*s && n < max) {
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 1 || v > 4096)
            return -1;
        out[n++] = (int)v;
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pool_micro [--time MS] [--reps N] [--threads LIST] [--sizes LIST]\n"
            "                  [--only dbpool|naive]\n"
            "  --time MS        length of one run (default 400)\n"
            "  --reps N         runs per cell, median reported (default 5, max %d)\n"
            "  --threads LIST   thread counts (default 1,2,8,64)\n"
            "  --sizes LIST     pool sizes (default 1,4,8; max 64)\n"
            "  --only WHICH     run only dbpool or only the naive pool (for perf)\n",
            MAX_REPS);
}

int main(int argc, char **argv)
{
    int threads[MAX_LIST] = {1, 2, 8, 64}, nthreads = 4;
    int sizes[MAX_LIST] = {1, 4, 8}, nsizes = 3;
    int ms = 400, reps = 5, only = 0; /* 1 dbpool, 2 naive */

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--time") == 0 && v) {
            ms = atoi(v);
            i++;
        } else if (strcmp(a, "--reps") == 0 && v) {
            reps = atoi(v);
            i++;
        } else if (strcmp(a, "--threads") == 0 && v) {
            nthreads = parse_list(v, threads, MAX_LIST);
            i++;
        } else if (strcmp(a, "--sizes") == 0 && v) {
            nsizes = parse_list(v, sizes, MAX_LIST);
            i++;
        } else if (strcmp(a, "--only") == 0 && v) {
            only = strcmp(v, "dbpool") == 0 ? 1 : strcmp(v, "naive") == 0 ? 2 : -1;
            i++;
        } else {
            fprintf(stderr, "pool_micro: bad argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (ms < 10 || ms > 600000 || reps < 1 || reps > MAX_REPS || nthreads < 1 || nsizes < 1 ||
        only < 0) {
        fprintf(stderr, "pool_micro: bad value\n");
        usage(stderr);
        return 2;
    }
    for (int i = 0; i < nsizes; i++)
        if (sizes[i] > 64) {
            fprintf(stderr, "pool_micro: pool size at most 64\n");
            return 2;
        }

    printf("checkout + check-in, stub driver (no I/O); median of %d runs of %d ms\n", reps, ms);
    printf("%7s %5s | %8s %8s %6s | %8s %8s %6s | %6s %6s\n", "", "", "dbpool", "", "", "naive", "",
           "", "ratio", "");
    printf("%7s %5s | %8s %8s %6s | %8s %8s %6s | %6s %6s\n", "threads", "size", "wall ns",
           "cpu ns", "fair", "wall ns", "cpu ns", "fair", "wall", "cpu");
    for (int si = 0; si < nsizes; si++) {
        for (int ti = 0; ti < nthreads; ti++) {
            struct result d[MAX_REPS], n[MAX_REPS];
            uint64_t fails = 0;
            memset(d, 0, sizeof(d));
            memset(n, 0, sizeof(n));
            for (int k = 0; k < reps; k++) {
                if (only != 2 && run_once(1, threads[ti], sizes[si], ms, &d[k]) != 0)
                    return 1;
                if (only != 1 && run_once(0, threads[ti], sizes[si], ms, &n[k]) != 0)
                    return 1;
                fails += d[k].failures;
            }
            qsort(d, (size_t)reps, sizeof(d[0]), cmp_res);
            qsort(n, (size_t)reps, sizeof(n[0]), cmp_res);
            struct result dm = d[reps / 2], nm = n[reps / 2];
            printf("%7d %5d | %8.1f %8.1f %6.2f | %8.1f %8.1f %6.2f |", threads[ti], sizes[si],
                   dm.ns_per_cycle, dm.cpu_per_cycle, dm.fair, nm.ns_per_cycle, nm.cpu_per_cycle,
                   nm.fair);
            if (dm.ns_per_cycle > 0 && nm.ns_per_cycle > 0)
                printf(" %5.2fx %5.2fx", dm.ns_per_cycle / nm.ns_per_cycle,
                       dm.cpu_per_cycle / nm.cpu_per_cycle);
            if (fails)
                printf("  (%llu failed checkouts)", (unsigned long long)fails);
            printf("\n");
            fflush(stdout);
        }
    }
    printf("wall ns = wall time / cycles of all threads; cpu ns = CPU time of all threads /\n"
           "cycles (not inflated by other load on the machine); ratio = dbpool / naive\n");
    return 0;
}
