/* it_hooks.c - hooks (issue 15 item 2) against a real server: a
 * before_connect_cb supplies fresh credentials for each round of connects
 * (an expiring token), an after_connect_cb sets the PGconn up, a checkin_cb
 * may discard; the first two never run on the manager thread (the thread
 * that delivers events) and a stuck hook delays neither another pool nor
 * dbpool_close. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;

#define APP_PW "app_secret_pw" /* tests/support/pgserver.h */

/* ---- which thread ran what -------------------------------------------------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t manager_thread;
static int manager_known;

static void on_event(void *arg, const dbpool_event *ev)
{
    (void)arg;
    (void)ev;
    pthread_mutex_lock(&mu);
    manager_thread = pthread_self(); /* events come on the manager thread */
    manager_known = 1;
    pthread_mutex_unlock(&mu);
}

static int on_manager(pthread_t t)
{
    pthread_mutex_lock(&mu);
    int yes = manager_known && pthread_equal(t, manager_thread);
    pthread_mutex_unlock(&mu);
    return yes;
}

static int manager_seen(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&mu);
    int k = manager_known;
    pthread_mutex_unlock(&mu);
    return k;
}

/* ---- hook state ------------------------------------------------------------ */

struct hooks {
    atomic_int before_calls, after_calls, checkin_calls;
    int wrong_first;  /* before: the first call gives a wrong password */
    int fail_before;  /* before: fail with a message */
    const char *user; /* before: also set this user */
    int fail_after;   /* after: fail with a message */
    int discard_at;   /* checkin: discard at this call (1-based) */
    pthread_t before_thr, after_thr, checkin_thr;
    /* after: block until released */
    int block;
    int released;
    pthread_cond_t cv;
};

static struct hooks H;

static void hooks_reset(void)
{
    memset(&H, 0, sizeof H);
    pthread_cond_init(&H.cv, NULL);
}

static int before_cb(void *arg, dbpool_credentials *cred)
{
    struct hooks *h = arg;
    int n = atomic_fetch_add(&h->before_calls, 1);
    pthread_mutex_lock(&mu);
    h->before_thr = pthread_self();
    pthread_mutex_unlock(&mu);
    if (h->fail_before) {
        snprintf(cred->err, sizeof cred->err, "vault is sealed");
        return 1;
    }
    if (h->user)
        snprintf(cred->user, sizeof cred->user, "%s", h->user);
    snprintf(cred->password, sizeof cred->password, "%s",
             h->wrong_first && n == 0 ? "wrong_token_8c1f" : APP_PW);
    return 0;
}

static int after_cb(void *arg, void *conn, char *err, size_t errlen)
{
    struct hooks *h = arg;
    atomic_fetch_add(&h->after_calls, 1);
    pthread_mutex_lock(&mu);
    h->after_thr = pthread_self();
    if (h->block) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 30; /* bounded: the test releases it long before */
        while (!h->released)
            if (pthread_cond_timedwait(&h->cv, &mu, &ts) != 0)
                break;
    }
    pthread_mutex_unlock(&mu);
    if (h->fail_after) {
        snprintf(err, errlen, "no such role to SET");
        return 1;
    }
    PGresult *r = PQexec((PGconn *)conn, "SET work_mem = '9MB'");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? 0 : 1;
}

static int checkin_cb(void *arg, void *conn)
{
    struct hooks *h = arg;
    int n = atomic_fetch_add(&h->checkin_calls, 1) + 1;
    h->checkin_thr = pthread_self();
    PGresult *r = PQexec((PGconn *)conn, "SELECT 1"); /* the connection is usable here */
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return !ok || n == h->discard_at;
}

static void hook_config(dbpool_config *cfg, int size)
{
    dbpool_config_init(cfg);
    cfg->size = size;
    cfg->hook_arg = &H;
    cfg->event_cb = on_event;
    cfg->log_level = DBPOOL_LOG_NONE;
    cfg->backoff_min = 20;
    cfg->backoff_max = 50;
    cfg->probe_interval = 20;
}

static dbpool *open_as_app(const char *app, const dbpool_config *cfg)
{
    char ci[512];
    dbpool *p = NULL;
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=app dbname=postgres application_name=%s",
             srv.port, app);
    int rc = dbpool_pg_open(&p, ci, cfg);
    if (rc != 0)
        fail_msg("open %s: %s", app, dbpool_last_error());
    itp_track(p);
    return p;
}

static const char *value(dbpool_lease *l, const char *sql, char *buf, size_t len)
{
    PGresult *r = PQexec(dbpool_pg_conn(l), sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    snprintf(buf, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return buf;
}

/* Keep asking until ready: the pool fails fast while DOWN, then retries. */
static int ready_within(dbpool *p, int n, int64_t ms)
{
    int64_t until = pgt_now_ms() + ms;
    int rc;
    do {
        rc = dbpool_wait_ready(p, n, 1000);
        if (rc == 0)
            return 0;
        itp_sleep_ms(10); /* pacing only: the pool backs off 20..50 ms */
    } while (pgt_now_ms() < until);
    return rc;
}

/* ---- before_connect_cb ------------------------------------------------------ */

/* The password comes from the hook, fresh for each round: a wrong (expired)
 * token fails that round, the next round's call fixes it. */
static void test_before_connect_fresh_password(void **state)
{
    (void)state;
    hooks_reset();
    H.wrong_first = 1;
    dbpool_config cfg;
    hook_config(&cfg, 2);
    cfg.before_connect_cb = before_cb;
    dbpool *p = open_as_app("hk_cred", &cfg);
    int rc = dbpool_wait_ready(p, 1, 10000);
    if (rc != 0) { /* the first round used the wrong token */
        assert_int_equal(rc, DBPOOL_EUNAVAILABLE);
        assert_non_null(strstr(dbpool_last_error(), "password authentication failed"));
        assert_null(strstr(dbpool_last_error(), "wrong_token_8c1f"));
    }
    assert_int_equal(ready_within(p, 2, 10000), 0);
    assert_true(atomic_load(&H.before_calls) >= 2);
    dbpool_stats st = itp_stats(p);
    assert_null(strstr(st.last_error, "wrong_token_8c1f"));
    dbpool_lease l;
    char buf[64];
    assert_int_equal(dbpool_checkout(p, 10000, &l), 0);
    assert_string_equal(value(&l, "SELECT current_user", buf, sizeof buf), "app");
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_true(pgt_wait_for(manager_seen, NULL, 10000));
    pthread_mutex_lock(&mu);
    pthread_t t = H.before_thr;
    pthread_mutex_unlock(&mu);
    assert_false(on_manager(t));
    assert_false(pthread_equal(t, pthread_self()));
    assert_int_equal(itp_close(p), 0);
}

/* Vault-style: user and password both from the hook. */
static void test_before_connect_user_and_password(void **state)
{
    (void)state;
    hooks_reset();
    H.user = "app";
    dbpool_config cfg;
    hook_config(&cfg, 1);
    cfg.before_connect_cb = before_cb;
    char ci[512];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=nobody_here dbname=postgres", srv.port);
    dbpool *p = NULL;
    assert_int_equal(dbpool_pg_open(&p, ci, &cfg), 0);
    itp_track(p);
    assert_int_equal(dbpool_wait_ready(p, 1, 10000), 0);
    dbpool_lease l;
    char buf[64];
    assert_int_equal(dbpool_checkout(p, 10000, &l), 0);
    assert_string_equal(value(&l, "SELECT current_user", buf, sizeof buf), "app");
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(itp_close(p), 0);
}

static void test_before_connect_failure(void **state)
{
    (void)state;
    hooks_reset();
    H.fail_before = 1;
    dbpool_config cfg;
    hook_config(&cfg, 1);
    cfg.before_connect_cb = before_cb;
    dbpool *p = open_as_app("hk_sealed", &cfg);
    assert_int_equal(dbpool_wait_ready(p, 1, 10000), DBPOOL_EUNAVAILABLE);
    assert_non_null(strstr(dbpool_last_error(), "before_connect_cb failed: vault is sealed"));
    assert_int_equal(itp_close(p), 0);
}

/* ---- after_connect_cb -------------------------------------------------------- */

static void test_after_connect_sets_up_conn(void **state)
{
    (void)state;
    hooks_reset();
    dbpool_config cfg;
    hook_config(&cfg, 2);
    cfg.after_connect_cb = after_cb;
    dbpool *p = itp_open(&srv, "hk_after", &cfg);
    assert_int_equal(dbpool_wait_ready(p, 2, 10000), 0);
    assert_int_equal(atomic_load(&H.after_calls), 2);
    dbpool_lease l;
    char buf[64];
    assert_int_equal(dbpool_checkout(p, 10000, &l), 0);
    assert_string_equal(value(&l, "SHOW work_mem", buf, sizeof buf), "9MB");
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_true(pgt_wait_for(manager_seen, NULL, 10000));
    pthread_mutex_lock(&mu);
    pthread_t t = H.after_thr;
    pthread_mutex_unlock(&mu);
    assert_false(on_manager(t));
    assert_false(pthread_equal(t, pthread_self()));
    assert_int_equal(itp_close(p), 0);
}

static void test_after_connect_failure(void **state)
{
    (void)state;
    hooks_reset();
    H.fail_after = 1;
    dbpool_config cfg;
    hook_config(&cfg, 1);
    cfg.after_connect_cb = after_cb;
    dbpool *p = itp_open(&srv, "hk_after_fail", &cfg);
    assert_int_equal(dbpool_wait_ready(p, 1, 10000), DBPOOL_EUNAVAILABLE);
    assert_non_null(strstr(dbpool_last_error(), "after_connect_cb failed: no such role to SET"));
    assert_int_equal(itp_close(p), 0);
    assert_true(itp_wait_backends(&srv, "hk_after_fail", 0, 10000));
}

/* A hook that hangs delays neither another pool nor dbpool_close; the
 * connection it held is closed when it returns. */
static void test_stuck_hook_isolated(void **state)
{
    (void)state;
    hooks_reset();
    H.block = 1;
    dbpool_config cfg;
    hook_config(&cfg, 1);
    cfg.after_connect_cb = after_cb;
    dbpool *stuck = itp_open(&srv, "hk_stuck", &cfg);
    assert_true(itp_wait_backends(&srv, "hk_stuck", 1, 10000)); /* connected, in the hook */
    assert_int_equal(dbpool_wait_ready(stuck, 1, 0), DBPOOL_ETIMEDOUT);

    dbpool_config other;
    dbpool_config_init(&other);
    other.size = 2;
    dbpool *free_pool = itp_open(&srv, "hk_free", &other);
    assert_int_equal(dbpool_wait_ready(free_pool, 2, 10000), 0);
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(free_pool, 10000, &l), 0);
    assert_true(itp_select1(&l));
    assert_int_equal(dbpool_checkin(&l), 0);

    assert_int_equal(itp_close(stuck), 0); /* does not wait for the hook */
    pthread_mutex_lock(&mu);
    H.released = 1;
    pthread_cond_broadcast(&H.cv);
    pthread_mutex_unlock(&mu);
    assert_true(itp_wait_backends(&srv, "hk_stuck", 0, 10000));
    assert_int_equal(itp_close(free_pool), 0);
}

/* ---- checkin_cb ---------------------------------------------------------------- */

static void test_checkin_hook(void **state)
{
    (void)state;
    hooks_reset();
    H.discard_at = 2;
    dbpool_config cfg;
    hook_config(&cfg, 1);
    cfg.checkin_cb = checkin_cb;
    dbpool *p = itp_open(&srv, "hk_checkin", &cfg);
    dbpool_lease l;
    int pid[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dbpool_checkout(p, 10000, &l), 0);
        pid[i] = PQbackendPID(dbpool_pg_conn(&l));
        assert_int_equal(dbpool_checkin(&l), 0);
        assert_true(pthread_equal(H.checkin_thr, pthread_self()));
    }
    assert_int_equal(atomic_load(&H.checkin_calls), 3);
    assert_int_equal(pid[0], pid[1]);
    assert_int_not_equal(pid[1], pid[2]); /* discarded at the second check-in */
    /* not called for a connection that is discarded anyway */
    assert_int_equal(dbpool_checkout(p, 10000, &l), 0);
    assert_int_equal(dbpool_discard(&l), 0);
    assert_int_equal(atomic_load(&H.checkin_calls), 3);
    assert_int_equal(itp_close(p), 0);
}

static int group_setup(void **state)
{
    (void)state;
    return pgt_start(&srv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    itp_close_all();
    pgt_destroy(&srv);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    itp_close_all();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_before_connect_fresh_password, test_teardown),
        cmocka_unit_test_teardown(test_before_connect_user_and_password, test_teardown),
        cmocka_unit_test_teardown(test_before_connect_failure, test_teardown),
        cmocka_unit_test_teardown(test_after_connect_sets_up_conn, test_teardown),
        cmocka_unit_test_teardown(test_after_connect_failure, test_teardown),
        cmocka_unit_test_teardown(test_stuck_hook_isolated, test_teardown),
        cmocka_unit_test_teardown(test_checkin_hook, test_teardown),
    };
    return cmocka_run_group_tests_name("it_hooks", tests, group_setup, group_teardown);
}
