/* it_pg_connect.c - how the libpq driver reports failed connects (issue 11),
 * against a real PostgreSQL:
 *
 *   - an after_connect the server rejects fails the connect with
 *     "after_connect failed: <server message>" everywhere it is reported.
 *
 * One throwaway server for the whole file. Every wait is bounded. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "pgserver.h"

static pgt_server srv;
static dbpool *g_pool;

/* ---------------------------------------------------------------------- */
/* helpers                                                                 */
/* ---------------------------------------------------------------------- */

/* The connect failures a pool reported through its event callback. */
static struct {
    pthread_mutex_t mu;
    int n;
    char first[256];
} g_ev = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void on_event(void *arg, const dbpool_event *ev)
{
    (void)arg;
    if (ev->type != DBPOOL_EV_CONNECT_FAILED)
        return;
    pthread_mutex_lock(&g_ev.mu);
    if (g_ev.n++ == 0)
        snprintf(g_ev.first, sizeof g_ev.first, "%s", ev->detail);
    pthread_mutex_unlock(&g_ev.mu);
}

static int events_seen(void)
{
    pthread_mutex_lock(&g_ev.mu);
    int n = g_ev.n;
    pthread_mutex_unlock(&g_ev.mu);
    return n;
}

static int events_seen_cond(void *arg)
{
    (void)arg;
    return events_seen() > 0;
}

static dbpool *open_pool(const char *app, const char *after_connect)
{
    char ci[700];
    dbpool_config cfg;

    pthread_mutex_lock(&g_ev.mu);
    g_ev.n = 0;
    g_ev.first[0] = '\0';
    pthread_mutex_unlock(&g_ev.mu);
    dbpool_config_init(&cfg);
    cfg.size = 1;
    cfg.idle_interval = 60000;
    cfg.backoff_min = 50;
    cfg.backoff_max = 200;
    cfg.connect_timeout = 5000;
    cfg.log_level = DBPOOL_LOG_NONE;
    cfg.after_connect = after_connect;
    cfg.event_cb = on_event;
    snprintf(ci, sizeof ci, "%s application_name=%s", srv.conninfo, app);
    int rc = dbpool_pg_open(&g_pool, ci, &cfg);
    if (rc != 0)
        fail_msg("dbpool_pg_open: %d %s", rc, dbpool_last_error());
    return g_pool;
}

static int test_teardown(void **state)
{
    (void)state;
    (void)dbpool_close(g_pool);
    g_pool = NULL;
    return 0;
}

struct failures {
    dbpool *pool;
    uint64_t n;
};

static int failures_at_least(void *arg)
{
    struct failures *f = arg;
    dbpool_stats st;
    return dbpool_stats_get(f->pool, &st) == 0 && st.connect_failures >= f->n;
}

static void stats(dbpool *p, dbpool_stats *st)
{
    assert_int_equal(dbpool_stats_get(p, st), 0);
}

/* ---------------------------------------------------------------------- */
/* after_connect                                                           */
/* ---------------------------------------------------------------------- */

/* The server rejects after_connect: the prefix is in the event, in
 * last_error and in the checkout's error (it used to be the bare "ERROR:
 * division by zero"). */
static void test_after_connect_server_error_prefixed(void **state)
{
    (void)state;
    dbpool *p = open_pool("it_pgc_after", "SET application_name = 'it_pgc_after2'; SELECT 1/0");
    struct failures f = {p, 1};
    assert_true(pgt_wait_for(failures_at_least, &f, 10000));
    assert_true(pgt_wait_for(events_seen_cond, NULL, 5000)); /* events come on their own */

    pthread_mutex_lock(&g_ev.mu);
    char first[256];
    snprintf(first, sizeof first, "%s", g_ev.first);
    pthread_mutex_unlock(&g_ev.mu);
    if (strncmp(first, "after_connect failed: ", 22) != 0 || !strstr(first, "division by zero"))
        fail_msg("event detail \"%s\"", first);

    dbpool_stats st;
    stats(p, &st);
    if (strncmp(st.last_error, "after_connect failed: ", 22) != 0 ||
        !strstr(st.last_error, "division by zero"))
        fail_msg("last_error \"%s\"", st.last_error);

    dbpool_lease l;
    int rc = dbpool_checkout(p, 300, &l);
    assert_int_equal(rc, DBPOOL_EUNAVAILABLE);
    if (!strstr(dbpool_last_error(), "after_connect failed: ") ||
        !strstr(dbpool_last_error(), "division by zero"))
        fail_msg("checkout error \"%s\"", dbpool_last_error());
}

/* ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (pgt_start(&srv) != 0) {
        fprintf(stderr, "it_pg_connect: could not start PostgreSQL\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    alarm(240); /* last resort against a hang */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_after_connect_server_error_prefixed, test_teardown),
    };
    return cmocka_run_group_tests_name("it_pg_connect", tests, group_setup, group_teardown);
}
