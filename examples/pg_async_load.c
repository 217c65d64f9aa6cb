/*
 * pg_async_load.c - many logical clients on one event-loop thread, each
 * running statements through the pool without ever blocking the loop
 * (dbpool_pg_async.h). Built three times: with the plain epoll adapter
 * (pg_async_load), with libuv (pg_async_libuv) and with libevent
 * (pg_async_libevent); only the loop differs.
 *
 *   pg_async_load CONNINFO [CLIENTS [ROUNDS]]
 *
 * Each client runs ROUNDS statements one after the other (each one starts
 * from the previous one's callback), alternating the statement cache and
 * plain statements, and checks every answer. Then one statement outlives
 * its statement timeout and must come back DBPOOL_ETIMEDOUT (cancelled on the
 * server, 57014). Exit status 0 when all went as it should.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "dbpool_pg_async.h"
#if defined(DBPOOL_EXAMPLE_LIBUV)
#include "dbpool/adapters/libuv.h"
#define LOOP_NAME "libuv"
#elif defined(DBPOOL_EXAMPLE_LIBEVENT)
#include "dbpool/adapters/libevent.h"
#define LOOP_NAME "libevent"
#else
#include "dbpool/adapters/epoll.h"
#define LOOP_NAME "epoll"
#endif

struct client {
    int id, round;
    char arg[16];
};

static dbpool *pool;
static dbpool_loop *loop;
static int rounds, running, failures, done_total;

static void on_result(void *arg, int status, dbpool_pg_result *r);

static void next(struct client *c)
{
    const char *v[] = {c->arg};
    dbpool_pg_params p = {.n = 1, .values = v};
    int rc;

    snprintf(c->arg, sizeof c->arg, "%d", c->id * 1000 + c->round);
    if (c->round % 2)
        rc = dbpool_pg_query_prepared_async(loop, pool, "SELECT $1::int + 1", &p, NULL, on_result,
                                            c);
    else
        rc = dbpool_pg_query_async(loop, pool, "SELECT $1::int + 1", &p, NULL, on_result, c);
    if (rc != 0) {
        fprintf(stderr, "client %d: %s\n", c->id, dbpool_last_error());
        failures++;
        running--;
    }
}

/* On the loop thread. r and r->res are the library's: freed after we return. */
static void on_result(void *arg, int status, dbpool_pg_result *r)
{
    struct client *c = arg;
    int want = c->id * 1000 + c->round + 1;

    if (status != 0) {
        fprintf(stderr, "client %d: %s (%s)\n", c->id, dbpool_strerror(status),
                dbpool_last_error());
        failures++;
    } else if (atoi(PQgetvalue(r->res, 0, 0)) != want) {
        fprintf(stderr, "client %d: wrong answer %s, want %d\n", c->id, PQgetvalue(r->res, 0, 0),
                want);
        failures++;
    }
    done_total++;
    if (++c->round < rounds)
        next(c);
    else
        running--;
}

/* The statement timeout, on the same loop: the server cancels the statement
 * (the cancel request went out from a library thread) and says so. */
static int timeout_done;

static void on_timeout(void *arg, int status, dbpool_pg_result *r)
{
    (void)arg;
    printf("statement timeout: %s %s\n", dbpool_errname(status), r->sqlstate);
    if (status != DBPOOL_ETIMEDOUT)
        failures++;
    timeout_done = 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONNINFO [CLIENTS [ROUNDS]]\n", argv[0]);
        return 2;
    }
    int nclients = argc > 2 ? atoi(argv[2]) : 64;
    rounds = argc > 3 ? atoi(argv[3]) : 100;
    if (nclients < 1 || rounds < 1)
        return 2;

    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.size = 8;
    cfg.checkout_timeout = 30000;
    /* far more clients than connections wait in the queue by design: CoDel
     * should not take that for overload (on a loaded machine the waits reach
     * the default 50 ms target) */
    cfg.queue_target = 2000;
    cfg.queue_interval = 10000;
    if (dbpool_pg_open(&pool, argv[1], &cfg) != 0) {
        fprintf(stderr, "open: %s\n", dbpool_last_error());
        return 1;
    }
    dbpool_cq *cq;
    if (dbpool_cq_new(&cq) != 0) {
        fprintf(stderr, "cq: %s\n", dbpool_last_error());
        return 1;
    }
#if defined(DBPOOL_EXAMPLE_LIBUV)
    uv_loop_t *uv = uv_default_loop();
    dbpool_libuv *ad;
    int arc = dbpool_libuv_attach(uv, cq, &ad, &loop);
#elif defined(DBPOOL_EXAMPLE_LIBEVENT)
    struct event_base *base = event_base_new();
    dbpool_libevent *ad;
    int arc = base ? dbpool_libevent_attach(base, cq, &ad, &loop) : DBPOOL_ENOMEM;
#else
    dbpool_epoll *ad;
    int arc = dbpool_epoll_attach(cq, &ad, &loop);
#endif
    if (arc != 0) {
        fprintf(stderr, "attach: %s\n", dbpool_strerror(arc));
        return 1;
    }

    struct client *clients = calloc((size_t)nclients, sizeof *clients);
    if (!clients)
        return 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    running = nclients;
    for (int i = 0; i < nclients; i++) {
        clients[i].id = i;
        next(&clients[i]);
    }
    /* the loop: until every client is done */
#if defined(DBPOOL_EXAMPLE_LIBUV)
    while (running > 0)
        uv_run(uv, UV_RUN_ONCE);
#elif defined(DBPOOL_EXAMPLE_LIBEVENT)
    while (running > 0)
        event_base_loop(base, EVLOOP_ONCE);
#else
    while (running > 0)
        dbpool_epoll_run(ad, 1000);
#endif
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* one statement that outlives its timeout */
    dbpool_pg_opts o;
    dbpool_pg_opts_init(&o);
    o.statement_timeout = 200;
    if (dbpool_pg_query_async(loop, pool, "SELECT pg_sleep(30)", NULL, &o, on_timeout, NULL) != 0)
        return 1;
#if defined(DBPOOL_EXAMPLE_LIBUV)
    while (!timeout_done || dbpool_loop_pending(loop))
        uv_run(uv, UV_RUN_ONCE);
#elif defined(DBPOOL_EXAMPLE_LIBEVENT)
    while (!timeout_done || dbpool_loop_pending(loop))
        event_base_loop(base, EVLOOP_ONCE);
#else
    while (!timeout_done || dbpool_loop_pending(loop))
        dbpool_epoll_run(ad, 1000);
#endif
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%s: %d clients, %d statements, %d failures; %.0f statements/s\n", LOOP_NAME, nclients,
           done_total, failures, s > 0 ? done_total / s : 0.0);

#if defined(DBPOOL_EXAMPLE_LIBUV)
    dbpool_libuv_detach(ad);
    uv_run(uv, UV_RUN_NOWAIT); /* the handles close */
    uv_loop_close(uv);
#elif defined(DBPOOL_EXAMPLE_LIBEVENT)
    dbpool_libevent_detach(ad);
    event_base_free(base);
#else
    dbpool_epoll_detach(ad);
#endif
    dbpool_cq_free(cq);
    dbpool_close(pool);
    free(clients);
    return failures ? 1 : 0;
}
