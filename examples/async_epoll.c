/*
 * async_epoll.c - the non-blocking checkout in a plain epoll loop, no other
 * dependency: one thread, `clients` logical clients, each running
 * `rounds` transactions of "check out, run a query, check in" through one
 * pool, and never blocking on the pool.
 *
 *   async_epoll CONNINFO [clients [rounds]]      (default 64 clients, 50 rounds)
 *
 * The loop watches two kinds of fd: the completion queue's (readable when
 * checkouts finished: dbpool_cq_run() runs their callbacks here), and the
 * socket of each leased connection while its query runs. Queries use
 * libpq's own asynchronous calls on the lease (PQsendQueryParams,
 * PQconsumeInput, PQisBusy), driven by this loop; dbpool does not do async
 * queries yet (docs/async.md). Sending a short query is assumed not to block
 * (a few bytes into an empty socket buffer). A checkout dropped by the pool's
 * overload rule (CoDel, docs/pool.md) is retried. A timerfd bounds the whole
 * run.
 *
 * Exit status 0 when every transaction returned the right answer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "dbpool_async.h"
#include "dbpool_pg.h"

#define RUN_LIMIT_S 60

struct client {
    int id;
    int left; /* transactions still to run */
    dbpool_lease lease;
    int fd; /* the lease's socket while its query runs, else -1 */
};

static dbpool *pool;
static dbpool_cq *cq;
static int ep;
static int done_clients, failures, retries;
static int stopping; /* timed out: give back what still arrives */
static long transactions;

static void start(struct client *c);

static void client_fail(struct client *c, const char *what, const char *why)
{
    fprintf(stderr, "client %d: %s: %s\n", c->id, what, why);
    failures++;
    done_clients++;
}

/* The query's answer arrived (or the connection failed): check in, go on. */
static void query_done(struct client *c)
{
    PGconn *conn = dbpool_pg_conn(&c->lease);
    PGresult *res;
    int ok = 1;
    char want[16];

    snprintf(want, sizeof want, "%d", c->id * 2);
    while ((res = PQgetResult(conn)) != NULL) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
            strcmp(PQgetvalue(res, 0, 0), want) != 0)
            ok = 0;
        PQclear(res);
    }
    /* the socket belongs to the connection: stop watching it before the
     * lease goes back (the next holder may get the same fd number) */
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    c->fd = -1;
    if (dbpool_checkin(&c->lease) != 0 || !ok) {
        client_fail(c, "query", ok ? dbpool_last_error() : "wrong answer");
        return;
    }
    transactions++;
    if (--c->left == 0)
        done_clients++;
    else
        start(c);
}

/* The lease's socket is readable. */
static void on_socket(struct client *c)
{
    PGconn *conn = dbpool_pg_conn(&c->lease);

    if (!PQconsumeInput(conn)) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        c->fd = -1;
        client_fail(c, "read", PQerrorMessage(conn));
        (void)dbpool_discard(&c->lease);
        return;
    }
    if (!PQisBusy(conn))
        query_done(c);
}

/* dbpool_cq_run() calls this on our thread. The lease is ours now. */
static void on_checkout(void *arg, int status, dbpool_lease lease)
{
    struct client *c = arg;
    char id[16];
    const char *values[1] = {id};

    if (status == DBPOOL_EDROPPED && !stopping) {
        /* overload: the pool shed this request to keep waits short. A
         * server would answer "busy"; this load loop just asks again. */
        retries++;
        start(c);
        return;
    }
    if (status != 0) {
        client_fail(c, "checkout", dbpool_last_error());
        return;
    }
    if (stopping) {
        (void)dbpool_checkin(&lease);
        return;
    }
    c->lease = lease;
    PGconn *conn = dbpool_pg_conn(&c->lease);
    snprintf(id, sizeof id, "%d", c->id);
    if (!PQsendQueryParams(conn, "SELECT $1::int * 2", 1, NULL, values, NULL, NULL, 0)) {
        client_fail(c, "send", PQerrorMessage(conn));
        (void)dbpool_discard(&c->lease);
        return;
    }
    c->fd = PQsocket(conn);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        client_fail(c, "epoll_ctl", "cannot watch the socket");
        (void)dbpool_discard(&c->lease);
    }
}

static void start(struct client *c)
{
    if (dbpool_checkout_async(pool, cq, 10000, on_checkout, c, NULL) != 0)
        client_fail(c, "submit", dbpool_last_error());
}

int main(int argc, char **argv)
{
    int nclients = argc > 2 ? atoi(argv[2]) : 64;
    int rounds = argc > 3 ? atoi(argv[3]) : 50;
    static char tag; /* data.ptr of the queue's fd (clients point at themselves) */
    static char timer_tag;

    if (argc < 2 || nclients < 1 || rounds < 1) {
        fprintf(stderr, "usage: %s CONNINFO [clients [rounds]]\n", argv[0]);
        return 2;
    }
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.size = 8;
    if (dbpool_pg_open(&pool, argv[1], &cfg) != 0 || dbpool_cq_new(&cq) != 0) {
        fprintf(stderr, "open: %s\n", dbpool_last_error());
        return 1;
    }
    struct client *clients = calloc((size_t)nclients, sizeof *clients);
    ep = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec limit = {.it_value = {RUN_LIMIT_S, 0}};
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag};
    if (!clients || ep < 0 || tfd < 0 || timerfd_settime(tfd, 0, &limit, NULL) != 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, dbpool_cq_fd(cq), &ev) != 0) {
        perror("setup");
        return 1;
    }
    ev.data.ptr = &timer_tag;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);

    for (int i = 0; i < nclients; i++) {
        clients[i] = (struct client){.id = i + 1, .left = rounds, .fd = -1};
        start(&clients[i]);
    }
    int timed_out = 0;
    while (done_clients < nclients && !timed_out) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &tag)
                dbpool_cq_run(cq, 0);
            else if (evs[i].data.ptr == &timer_tag)
                timed_out = 1;
            else
                on_socket(evs[i].data.ptr);
        }
    }

    dbpool_stats st;
    dbpool_stats_get(pool, &st);
    printf("%d clients, %ld transactions, %d failures%s; %d checkouts dropped under "
           "overload and retried; pool: %" PRIu64 " checkouts, queue p99 %" PRId64 " us\n",
           nclients, transactions, failures, timed_out ? ", TIMED OUT" : "", retries, st.checkouts,
           st.queue_time.p99_us);
    /* leases of clients still in a query (only after a time-out) go back
     * before the pool closes; then the queue is drained and freed */
    stopping = 1;
    for (int i = 0; i < nclients; i++)
        if (clients[i].fd >= 0)
            (void)dbpool_discard(&clients[i].lease);
    dbpool_close(pool);
    while (dbpool_cq_run(cq, 0) > 0)
        ;
    dbpool_cq_free(cq);
    close(tfd);
    close(ep);
    free(clients);
    return failures == 0 && !timed_out && transactions == (long)nclients * rounds ? 0 : 1;
}
