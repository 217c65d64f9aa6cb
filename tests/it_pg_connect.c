/* it_pg_connect.c - how the libpq driver reports failed connects (issue 11),
 * against a real PostgreSQL:
 *
 *   - an after_connect the server rejects fails the connect with
 *     "after_connect failed: <server message>" everywhere it is reported;
 *   - 57P03 refusals are decided per message: "in recovery mode" (crash
 *     recovery) means wait, like "starting up"; "shutting down" means DOWN.
 *
 * One throwaway server for the whole file; the tests crash and stop it, so
 * they run in this order. Crash recovery is held open deterministically: one
 * backend is stopped (SIGSTOP) before another is killed, so the postmaster
 * waits for it (answering "in recovery mode") until the test lets it go
 * (SIGCONT), or until the postmaster's own 5 s SIGKILL. Every wait is
 * bounded. */
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
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;
static pid_t g_stopped; /* a backend we SIGSTOPped: always SIGCONT it */

/* ---------------------------------------------------------------------- */
/* helpers                                                                 */
/* ---------------------------------------------------------------------- */

/* The connect failures a pool reported through its event callback. */
static struct {
    pthread_mutex_t mu;
    int n;
    char first[256];
    int downs; /* DBPOOL_EV_DOWN events */
} g_ev = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void on_event(void *arg, const dbpool_event *ev)
{
    (void)arg;
    pthread_mutex_lock(&g_ev.mu);
    if (ev->type == DBPOOL_EV_DOWN)
        g_ev.downs++;
    if (ev->type == DBPOOL_EV_CONNECT_FAILED && g_ev.n++ == 0)
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
    dbpool_config cfg;

    pthread_mutex_lock(&g_ev.mu);
    g_ev.n = g_ev.downs = 0;
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
    return itp_open(&srv, app, &cfg);
}

static int test_teardown(void **state)
{
    (void)state;
    if (g_stopped > 0)
        kill(g_stopped, SIGCONT);
    g_stopped = 0;
    itp_close_all();
    return 0;
}

static int failures_at_least(const dbpool_stats *st, int64_t n)
{
    return st->connect_failures >= (uint64_t)n;
}

/* A fresh direct connection's error ("" if it connected). */
static void try_connect(char *err, size_t len)
{
    char ci[700];
    snprintf(ci, sizeof ci, "%s connect_timeout=2", srv.conninfo);
    PGconn *c = PQconnectdb(ci);
    snprintf(err, len, "%s", PQstatus(c) == CONNECTION_OK ? "" : PQerrorMessage(c));
    PQfinish(c);
}

/* Wait until a direct connect fails with `want` in its message. */
static void await_refusal(const char *want)
{
    char err[512] = "";
    int64_t t0 = pgt_now_ms();
    do {
        try_connect(err, sizeof err);
        if (strstr(err, want))
            return;
        usleep(20000);
    } while (pgt_now_ms() - t0 < 5000);
    fail_msg("the server never refused with \"%s\" (last: \"%s\")", want, err);
}

static int server_accepts(void *arg)
{
    char err[512];
    (void)arg;
    try_connect(err, sizeof err);
    return err[0] == '\0';
}

static PGconn *direct(int64_t *pid)
{
    PGconn *c = PQconnectdb(srv.conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    *pid = PQbackendPID(c);
    return c;
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
    assert_true(itp_wait_stats(p, failures_at_least, 1, 10000));
    assert_true(pgt_wait_for(events_seen_cond, NULL, 5000)); /* events come on their own */

    pthread_mutex_lock(&g_ev.mu);
    char first[256];
    snprintf(first, sizeof first, "%s", g_ev.first);
    pthread_mutex_unlock(&g_ev.mu);
    if (strncmp(first, "after_connect failed: ", 22) != 0 || !strstr(first, "division by zero"))
        fail_msg("event detail \"%s\"", first);

    dbpool_stats st = itp_stats(p);
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
/* 57P03                                                                   */
/* ---------------------------------------------------------------------- */

/*
 * Crash recovery: a backend dies of SIGKILL, the postmaster ends every
 * session and refuses new ones with "the database system is in recovery
 * mode" until it has recovered. That is the server coming back: the pool
 * waits (STARTING, checkouts queue) instead of going DOWN and failing every
 * caller with DBPOOL_EUNAVAILABLE, then serves as soon as the server is back.
 */
static void test_crash_recovery_waits(void **state)
{
    (void)state;
    int64_t stop_pid, kill_pid;
    PGconn *held = direct(&stop_pid), *victim = direct(&kill_pid);

    /* hold the recovery open: the postmaster waits for every child */
    assert_int_equal(kill((pid_t)stop_pid, SIGSTOP), 0);
    g_stopped = (pid_t)stop_pid;
    assert_int_equal(kill((pid_t)kill_pid, SIGKILL), 0);
    await_refusal("the database system is in recovery mode");

    dbpool *p = open_pool("it_pgc_recovery", NULL);
    dbpool_stats st;
    if (!itp_wait_stats(p, failures_at_least, 2, 4000)) {
        st = itp_stats(p);
        fail_msg("the pool saw fewer than 2 refusals: state %s, %llu failures, %llu connects, "
                 "last_error \"%s\"",
                 dbpool_state_name(st.state), (unsigned long long)st.connect_failures,
                 (unsigned long long)st.connects, st.last_error);
    }
    /* The postmaster itself SIGKILLs the stopped backend after 5 s: on a
     * very slow machine the server may be back by now, so check what must
     * hold either way -- the refusal was seen, the pool never went DOWN, a
     * checkout waits (or is served), never fails fast. */
    dbpool_lease l;
    int rc = dbpool_checkout(p, 300, &l);
    if (rc == 0)
        assert_int_equal(dbpool_checkin(&l), 0);
    else if (rc != DBPOOL_ETIMEDOUT)
        fail_msg("checkout during crash recovery: %d (%s): %s; want DBPOOL_ETIMEDOUT (waited)", rc,
                 dbpool_strerror(rc), dbpool_last_error());
    st = itp_stats(p);
    assert_true(pgt_wait_for(events_seen_cond, NULL, 5000)); /* events come on their own */
    pthread_mutex_lock(&g_ev.mu);
    char first[256];
    snprintf(first, sizeof first, "%s", g_ev.first);
    int downs = g_ev.downs;
    pthread_mutex_unlock(&g_ev.mu);
    if (!strstr(first, "in recovery mode"))
        fail_msg("first connect failure \"%s\"", first);
    if (downs != 0 || (st.state != DBPOOL_STATE_STARTING && st.state != DBPOOL_STATE_UP))
        fail_msg("state %s, %d DOWN events during crash recovery; want STARTING (last_error "
                 "\"%s\")",
                 dbpool_state_name(st.state), downs, st.last_error);

    /* let the recovery finish: a caller waiting now is served */
    (void)kill(g_stopped, SIGCONT); /* ESRCH if the postmaster killed it already */
    g_stopped = 0;
    int64_t t0 = pgt_now_ms();
    rc = dbpool_checkout(p, 20000, &l);
    if (rc != 0)
        fail_msg("checkout after recovery: %d (%s): %s", rc, dbpool_strerror(rc),
                 dbpool_last_error());
    print_message("crash recovery: served %lld ms after SIGCONT\n", (long long)(pgt_now_ms() - t0));
    assert_int_equal(dbpool_checkin(&l), 0);
    st = itp_stats(p);
    assert_int_equal(st.state, DBPOOL_STATE_UP);
    PQfinish(held);
    PQfinish(victim);
}

/*
 * Shutdown: a smart shutdown waits for the open sessions and refuses new ones
 * with "the database system is shutting down". The server is going away,
 * maybe for good: the pool is DOWN and callers fail fast.
 */
static void test_shutting_down_is_down(void **state)
{
    (void)state;
    if (!pgt_wait_for(server_accepts, NULL, 20000))
        fail_msg("the server is not back");
    int64_t pid;
    PGconn *held = direct(&pid); /* keeps the smart shutdown waiting */
    char path[400];
    snprintf(path, sizeof path, "%s/data/postmaster.pid", srv.dir);
    FILE *fp = fopen(path, "r");
    long pm = 0;
    assert_non_null(fp);
    assert_int_equal(fscanf(fp, "%ld", &pm), 1);
    fclose(fp);
    assert_int_equal(kill((pid_t)pm, SIGTERM), 0); /* smart shutdown */
    await_refusal("the database system is shutting down");

    dbpool *p = open_pool("it_pgc_shutdown", NULL);
    assert_true(itp_wait_stats(p, failures_at_least, 1, 5000));
    dbpool_stats st = itp_stats(p);
    if (st.state != DBPOOL_STATE_DOWN || !strstr(st.last_error, "shutting down"))
        fail_msg("state %s, last_error \"%s\"; want DOWN (shutting down)",
                 dbpool_state_name(st.state), st.last_error);
    dbpool_lease l;
    int64_t t0 = pgt_now_ms();
    assert_int_equal(dbpool_checkout(p, 2000, &l), DBPOOL_EUNAVAILABLE);
    assert_true(pgt_now_ms() - t0 < 1000); /* fails fast */
    assert_non_null(strstr(dbpool_last_error(), "shutting down"));

    PQfinish(held); /* the shutdown completes; teardown removes the rest */
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
        cmocka_unit_test_teardown(test_crash_recovery_waits, test_teardown),
        cmocka_unit_test_teardown(test_shutting_down_is_down, test_teardown),
    };
    return cmocka_run_group_tests_name("it_pg_connect", tests, group_setup, group_teardown);
}
