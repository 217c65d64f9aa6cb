/* itpool.c - the integration-test fixtures of itpool.h. */
#include "itpool.h"

#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "dbpool_pg.h"

static atomic_int hung;

#define MAX_TRACKED 16
static dbpool *tracked[MAX_TRACKED];

void itp_track(dbpool *p)
{
    for (int i = 0; i < MAX_TRACKED; i++)
        if (!tracked[i]) {
            tracked[i] = p;
            return;
        }
    fail_msg("too many pools in one test");
}

void itp_untrack(dbpool *p)
{
    for (int i = 0; i < MAX_TRACKED; i++)
        if (tracked[i] == p)
            tracked[i] = NULL;
}

dbpool *itp_open(const pgt_server *srv, const char *app, const dbpool_config *cfg)
{
    char ci[700];
    dbpool *p = NULL;

    snprintf(ci, sizeof ci, "%s application_name=%s", srv->conninfo, app);
    int rc = dbpool_pg_open(&p, ci, cfg);
    if (rc != 0)
        fail_msg("dbpool_pg_open(%s): %d %s", app, rc, dbpool_last_error());
    assert_non_null(p);
    itp_track(p);
    return p;
}

int itp_close(dbpool *p)
{
    itp_untrack(p);
    return dbpool_close(p);
}

void itp_close_all(void)
{
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (tracked[i] && !itp_hung())
            (void)dbpool_close(tracked[i]);
        tracked[i] = NULL;
    }
}

void itp_sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

dbpool_stats itp_stats(dbpool *p)
{
    dbpool_stats st;
    memset(&st, 0, sizeof st);
    assert_int_equal(dbpool_stats_get(p, &st), 0);
    return st;
}

struct stats_wait {
    dbpool *pool;
    itp_stats_pred pred;
    int64_t arg;
};

static int stats_cond(void *a)
{
    struct stats_wait *w = a;
    dbpool_stats st;
    if (dbpool_stats_get(w->pool, &st) != 0)
        return 0;
    return w->pred(&st, w->arg);
}

int itp_wait_stats(dbpool *p, itp_stats_pred pred, int64_t arg, int64_t timeout_ms)
{
    struct stats_wait w = {p, pred, arg};
    return pgt_wait_for(stats_cond, &w, timeout_ms);
}

struct backends_wait {
    const pgt_server *srv;
    const char *app;
    int n;
};

static int backends_cond(void *a)
{
    struct backends_wait *w = a;
    return pgt_count_backends(w->srv, w->app) == w->n;
}

int itp_wait_backends(const pgt_server *srv, const char *app, int n, int64_t timeout_ms)
{
    struct backends_wait w = {srv, app, n};
    return pgt_wait_for(backends_cond, &w, timeout_ms);
}

pthread_t itp_thr_start(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

int itp_thr_join(pthread_t t, int64_t timeout_ms)
{
    int rc = pgt_join(t, timeout_ms);
    if (rc != 0)
        atomic_store(&hung, 1);
    return rc;
}

void itp_set_hung(void)
{
    atomic_store(&hung, 1);
}

int itp_hung(void)
{
    return atomic_load(&hung);
}

int itp_terminate_held(const pgt_server *srv, const char *app, const dbpool_lease *l,
                       int64_t timeout_ms)
{
    PGconn *c = dbpool_pg_conn(l);
    if (!c || pgt_terminate(srv, app) < 1)
        return 0;
    struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
    return poll(&pfd, 1, (int)timeout_ms) == 1;
}

int itp_select1(const dbpool_lease *l)
{
    PGconn *c = dbpool_pg_conn(l);
    if (!c)
        return 0;
    PGresult *r = PQexec(c, "SELECT 1");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
             strcmp(PQgetvalue(r, 0, 0), "1") == 0;
    PQclear(r);
    return ok;
}
