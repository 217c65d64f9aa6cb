/*
 * async_bench.c - SELECT 1 throughput through the pool from event-loop
 * threads (dbpool_pg_async.h, epoll adapter), or from blocking threads
 * (dbpool_pg_query), for bench/async_bench.sh.
 *
 *   async_bench CONNINFO MODE CLIENTS THREADS POOL SECONDS
 *
 * MODE     async           one-call dbpool_pg_query_async (unnamed statement)
 *          async-prepared  dbpool_pg_query_prepared_async (statement cache)
 *          async-batch     dbpool_pg_query_async with dbpool_loop_batch(loop,
 *                          BATCH, default 64): queued statements of a loop
 *                          share a lease in one libpq pipeline
 *          blocking        dbpool_pg_query from THREADS threads (CLIENTS ignored)
 * CLIENTS  logical clients over all loop threads (each: one statement in
 *          flight, the next one started from its callback)
 * THREADS  loop threads (async) or client threads (blocking); one pool of
 *          POOL connections shared by all
 * Prints one line: "tps=N statements=N errors=N maxgap_ms=N" (maxgap: the
 * longest time a loop went without a completion, a stall detector; 0 for
 * blocking). A warm-up second is not counted.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dbpool/adapters/epoll.h"
#include "dbpool_pg_async.h"

static dbpool *pool;
static int prepared, batch;
static atomic_int stop, counting;
static atomic_long total, errors, maxgap;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct lthread {
    int clients;
    dbpool_loop *loop;
    int inflight;
    long done, errs;
    int64_t last_ms, maxgap_ms; /* longest time without a completion: a stall */
};

static void on_result(void *arg, int status, dbpool_pg_result *r);

static void start(struct lthread *t)
{
    int rc = prepared ? dbpool_pg_query_prepared_async(t->loop, pool, "SELECT 1", NULL, NULL,
                                                       on_result, t)
                      : dbpool_pg_query_async(t->loop, pool, "SELECT 1", NULL, NULL, on_result, t);
    if (rc != 0)
        t->errs++;
    else
        t->inflight++;
}

static void on_result(void *arg, int status, dbpool_pg_result *r)
{
    struct lthread *t = arg;

    (void)r;
    t->inflight--;
    if (atomic_load_explicit(&counting, memory_order_relaxed)) {
        int64_t now = now_ms();
        if (t->last_ms && now - t->last_ms > t->maxgap_ms)
            t->maxgap_ms = now - t->last_ms;
        t->last_ms = now;
        if (status != 0)
            t->errs++;
        else
            t->done++;
    }
    if (!atomic_load_explicit(&stop, memory_order_relaxed))
        start(t);
}

static void *loop_main(void *arg)
{
    struct lthread *t = arg;
    dbpool_cq *cq;
    dbpool_epoll *ep;

    if (dbpool_cq_new(&cq) != 0 || dbpool_epoll_attach(cq, &ep, &t->loop) != 0 ||
        (batch && dbpool_loop_batch(t->loop, batch) != 0)) {
        fprintf(stderr, "async_bench: loop setup failed\n");
        exit(1);
    }
    for (int i = 0; i < t->clients; i++)
        start(t);
    while (t->inflight > 0)
        dbpool_epoll_run(ep, 100);
    /* a cancel request's delivery may still be on its way */
    while (dbpool_epoll_detach(ep) != 0)
        dbpool_epoll_run(ep, 100);
    while (dbpool_cq_free(cq) != 0)
        ;
    atomic_fetch_add(&total, t->done);
    atomic_fetch_add(&errors, t->errs);
    long g = atomic_load(&maxgap);
    while (t->maxgap_ms > g && !atomic_compare_exchange_weak(&maxgap, &g, (long)t->maxgap_ms))
        ;
    return NULL;
}

static void *blocking_main(void *arg)
{
    long done = 0, errs = 0;

    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        dbpool_pg_result r;
        int rc = prepared ? dbpool_pg_query_prepared(pool, "SELECT 1", NULL, NULL, &r)
                          : dbpool_pg_query(pool, "SELECT 1", NULL, NULL, &r);
        dbpool_pg_result_clear(&r);
        if (atomic_load_explicit(&counting, memory_order_relaxed)) {
            if (rc != 0)
                errs++;
            else
                done++;
        }
    }
    atomic_fetch_add(&total, done);
    atomic_fetch_add(&errors, errs);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr,
                "usage: %s CONNINFO async|async-prepared|async-batch|blocking[-prepared] CLIENTS "
                "THREADS POOL SECONDS\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[2];
    int clients = atoi(argv[3]), threads = atoi(argv[4]), size = atoi(argv[5]);
    int secs = atoi(argv[6]);
    int blocking = strncmp(mode, "blocking", 8) == 0;
    prepared = strstr(mode, "prepared") != NULL;
    if (strstr(mode, "batch")) {
        const char *b = getenv("BATCH");
        batch = b ? atoi(b) : 64;
    }
    if (threads < 1 || size < 1 || secs < 1 || (!blocking && clients < threads))
        return 2;

    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.size = size;
    cfg.checkout_timeout = 30000;
    cfg.queue_target = 1000; /* 256 clients on 8 connections queue by design */
    cfg.queue_interval = 10000;
    if (getenv("BARGE_WINDOW")) /* to try other windows; the default is the library's */
        cfg.barge_window = atoi(getenv("BARGE_WINDOW"));
    if (dbpool_pg_open(&pool, argv[1], &cfg) != 0) {
        fprintf(stderr, "async_bench: %s\n", dbpool_last_error());
        return 1;
    }
    /* every connection up before the clock starts */
    dbpool_lease *ls = calloc((size_t)size, sizeof(*ls));
    for (int i = 0; i < size; i++)
        if (dbpool_checkout(pool, 30000, &ls[i]) != 0) {
            fprintf(stderr, "async_bench: %s\n", dbpool_last_error());
            return 1;
        }
    for (int i = 0; i < size; i++)
        dbpool_checkin(&ls[i]);
    free(ls);

    pthread_t *th = calloc((size_t)threads, sizeof(*th));
    struct lthread *lt = calloc((size_t)threads, sizeof(*lt));
    for (int i = 0; i < threads; i++) {
        lt[i].clients = clients / threads + (i < clients % threads);
        pthread_create(&th[i], NULL, blocking ? blocking_main : loop_main, &lt[i]);
    }
    struct timespec warm = {1, 0};
    nanosleep(&warm, NULL);
    atomic_store(&counting, 1);
    int64_t t0 = now_ms();
    struct timespec run = {secs, 0};
    nanosleep(&run, NULL);
    atomic_store(&counting, 0);
    int64_t t1 = now_ms();
    atomic_store(&stop, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    long n = atomic_load(&total);
    printf("tps=%.0f statements=%ld errors=%ld maxgap_ms=%ld\n",
           (double)n * 1000.0 / (double)(t1 - t0), n, (long)atomic_load(&errors),
           (long)atomic_load(&maxgap));
    dbpool_close(pool);
    free(th);
    free(lt);
    return 0;
}
