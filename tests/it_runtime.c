/* it_runtime.c - runtime control (issue 15 item 3) against a real server:
 * dbpool_wait_ready (n connections open, or the pool's failure reason at
 * once), dbpool_resize (grow opens, shrink closes idle connections now and
 * leased ones at check-in, grow again past every slot there was),
 * max_waiting (a full queue refuses at once with DBPOOL_EQUEUEFULL) and
 * dbpool_errname. Every wait is bounded; nothing is timed. */
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;

static dbpool *open_pool(const char *app, int size, int min_size)
{
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.size = size;
    cfg.min_size = min_size;
    cfg.queue_target = 5000; /* no CoDel drop in these tests */
    cfg.queue_interval = 10000;
    return itp_open(&srv, app, &cfg);
}

static void expect_backends(const char *app, int n)
{
    if (!itp_wait_backends(&srv, app, n, 10000))
        fail_msg("%s: expected %d backends, have %d", app, n, pgt_count_backends(&srv, app));
}

/* ---- dbpool_wait_ready ------------------------------------------------------ */

/* An on-demand pool (min_size 0) opens what wait_ready asks for, no more. */
static void test_wait_ready_opens_n(void **state)
{
    (void)state;
    dbpool *p = open_pool("rt_ready", 4, 0);
    assert_int_equal(dbpool_wait_ready(p, 0, 0), 0); /* n = min_size = 0 */
    assert_int_equal(dbpool_wait_ready(p, 3, 10000), 0);
    dbpool_stats st = itp_stats(p);
    assert_true(st.idle + st.busy + st.pinging >= 3);
    expect_backends("rt_ready", 3);
    assert_int_equal(dbpool_wait_ready(p, 3, 0), 0); /* already there */
    assert_int_equal(itp_close(p), 0);
}

/* Default min_size (= size): n = 0 waits for all of them. */
static void test_wait_ready_min_size(void **state)
{
    (void)state;
    dbpool *p = open_pool("rt_ready_min", 3, -1);
    assert_int_equal(dbpool_wait_ready(p, 0, 10000), 0);
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.idle + st.busy + st.pinging, 3);
    assert_int_equal(itp_close(p), 0);
}

/* Timeout 0 only looks: nothing can have connected yet on a fresh on-demand
 * pool, and the message says how many are open. */
static void test_wait_ready_check_only(void **state)
{
    (void)state;
    dbpool *p = open_pool("rt_ready_now", 2, 0);
    assert_int_equal(dbpool_wait_ready(p, 2, 0), DBPOOL_ETIMEDOUT);
    assert_non_null(strstr(dbpool_last_error(), "0 of 2 connections open"));
    /* the connects it started go on */
    assert_int_equal(dbpool_wait_ready(p, 2, 10000), 0);
    assert_int_equal(itp_close(p), 0);
}

/* Nothing listens: the first failed connect makes the pool DOWN and
 * wait_ready returns that reason at once (not after its long timeout), with
 * no password in it. */
static void test_wait_ready_fails_with_reason(void **state)
{
    (void)state;
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.size = 2;
    cfg.log_level = DBPOOL_LOG_NONE;
    dbpool *p = NULL;
    /* port 1: refused on any test machine */
    assert_int_equal(dbpool_pg_open(&p,
                                    "host=127.0.0.1 port=1 user=postgres dbname=postgres "
                                    "password=rt_secret_pw connect_timeout=5",
                                    &cfg),
                     0);
    itp_track(p);
    int rc = dbpool_wait_ready(p, 1, 120000);
    assert_int_equal(rc, DBPOOL_EUNAVAILABLE);
    const char *msg = dbpool_last_error();
    if (!strstr(msg, "port 1 failed"))
        fail_msg("no connect error in \"%s\"", msg);
    assert_null(strstr(msg, "rt_secret_pw"));
    assert_string_equal(dbpool_errname(rc), "DBPOOL_EUNAVAILABLE");
    assert_int_equal(itp_close(p), 0);
}

static void test_wait_ready_bad_args(void **state)
{
    (void)state;
    dbpool *p = open_pool("rt_ready_args", 2, 0);
    assert_int_equal(dbpool_wait_ready(NULL, 1, 0), DBPOOL_EINVAL);
    assert_int_equal(dbpool_wait_ready(p, 3, 0), DBPOOL_EINVAL);
    assert_int_equal(dbpool_wait_ready(p, -1, 0), DBPOOL_EINVAL);
    assert_int_equal(dbpool_wait_ready(p, 1, -5), DBPOOL_EINVAL);
    assert_int_equal(itp_close(p), 0);
}

/* A caller waiting in dbpool_wait_ready when the pool is closed gets
 * DBPOOL_ECLOSED, and the close waits for it to leave. The "server" is a
 * socket that listens and never answers, so the pool stays connecting. */
struct ready_thr {
    dbpool *p;
    int rc;
};

static void *ready_main(void *arg)
{
    struct ready_thr *t = arg;
    t->rc = dbpool_wait_ready(t->p, 1, 60000);
    return NULL;
}

static int connecting_is(const dbpool_stats *st, int64_t n)
{
    return st->connecting == n;
}

static void test_wait_ready_closed_while_waiting(void **state)
{
    (void)state;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(ls >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(ls, 8), 0);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &alen), 0);

    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.size = 1;
    cfg.min_size = 0; /* wait_ready starts the connect: seeing it, we know it waits */
    cfg.connect_timeout = 60000;
    char ci[200];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=postgres",
             ntohs(a.sin_port));
    dbpool *p = NULL;
    assert_int_equal(dbpool_pg_open(&p, ci, &cfg), 0);
    struct ready_thr t = {p, 1};
    pthread_t th = itp_thr_start(ready_main, &t);
    /* the connect appears in the same locked step that registers the waiter */
    assert_true(itp_wait_stats(p, connecting_is, 1, 10000));
    assert_int_equal(dbpool_close(p), 0);
    assert_int_equal(itp_thr_join(th, 10000), 0);
    assert_int_equal(t.rc, DBPOOL_ECLOSED);
    close(ls);
}

/* ---- dbpool_resize ---------------------------------------------------------- */

static void test_resize_grow_shrink_grow(void **state)
{
    (void)state;
    const char *app = "rt_resize";
    dbpool *p = open_pool(app, 2, -1);
    assert_int_equal(dbpool_wait_ready(p, 2, 10000), 0);

    /* grow: opens up to the new min_size at once */
    assert_int_equal(dbpool_resize(p, 4, -1), 0);
    assert_int_equal(dbpool_wait_ready(p, 4, 10000), 0);
    expect_backends(app, 4);
    assert_int_equal(itp_stats(p).size, 4);

    /* shrink to 1 with three out: the idle one closes now, two of the
     * leased ones at their check-in, the third stays */
    dbpool_lease l[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_checkout(p, 10000, &l[i]), 0);
    assert_int_equal(dbpool_resize(p, 1, -1), 0);
    expect_backends(app, 3);
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.size, 1);
    assert_int_equal(st.busy, 3);
    assert_int_equal(st.idle, 0);
    for (int i = 0; i < 3; i++) {
        assert_true(itp_select1(&l[i])); /* never taken from its holder */
        assert_int_equal(dbpool_checkin(&l[i]), 0);
    }
    expect_backends(app, 1);
    st = itp_stats(p);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.busy + st.connecting + st.dormant + st.backoff, 0);

    /* the one left works; a second caller now has to wait */
    dbpool_lease a, b;
    assert_int_equal(dbpool_checkout(p, 10000, &a), 0);
    assert_true(itp_select1(&a));
    assert_int_equal(dbpool_checkout(p, 0, &b), DBPOOL_EBUSY);
    assert_int_equal(dbpool_checkin(&a), 0);

    /* grow again: the retired slots come back, then new ones beyond them */
    assert_int_equal(dbpool_resize(p, 3, -1), 0);
    assert_int_equal(dbpool_wait_ready(p, 3, 10000), 0);
    expect_backends(app, 3);
    assert_int_equal(dbpool_resize(p, 7, 2), 0);
    assert_int_equal(itp_stats(p).dormant, 4);
    assert_int_equal(dbpool_wait_ready(p, 7, 10000), 0);
    expect_backends(app, 7);
    dbpool_lease ls[7];
    for (int i = 0; i < 7; i++) {
        assert_int_equal(dbpool_checkout(p, 10000, &ls[i]), 0);
        assert_true(itp_select1(&ls[i]));
    }
    for (int i = 0; i < 7; i++)
        assert_int_equal(dbpool_checkin(&ls[i]), 0);
    assert_int_equal(itp_close(p), 0);
    expect_backends(app, 0);
}

/* Shrink and grow again while leases are out: the grow cancels the
 * retirements still owed, so no connection is closed at check-in. */
static void test_resize_grow_cancels_pending_shrink(void **state)
{
    (void)state;
    const char *app = "rt_resize_back";
    dbpool *p = open_pool(app, 3, -1);
    assert_int_equal(dbpool_wait_ready(p, 3, 10000), 0);
    dbpool_lease l[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_checkout(p, 10000, &l[i]), 0);
    assert_int_equal(dbpool_resize(p, 1, -1), 0);
    assert_int_equal(dbpool_resize(p, 3, -1), 0);
    uint64_t disc = itp_stats(p).disconnects;
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_checkin(&l[i]), 0);
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.disconnects, disc);
    assert_int_equal(st.idle, 3);
    expect_backends(app, 3);
    assert_int_equal(itp_close(p), 0);
}

static void test_resize_invalid(void **state)
{
    (void)state;
    dbpool *p = open_pool("rt_resize_bad", 2, -1);
    assert_int_equal(dbpool_resize(NULL, 2, 2), DBPOOL_EINVAL);
    assert_int_equal(dbpool_resize(p, 0, 0), DBPOOL_EINVAL);
    assert_non_null(strstr(dbpool_last_error(), "size"));
    assert_int_equal(dbpool_resize(p, 2, 3), DBPOOL_EINVAL);
    assert_non_null(strstr(dbpool_last_error(), "min_size"));
    assert_int_equal(dbpool_resize(p, 10001, 0), DBPOOL_EINVAL);
    assert_int_equal(dbpool_resize(p, 2, -2), DBPOOL_EINVAL);
    assert_int_equal(itp_stats(p).size, 2);
    assert_int_equal(dbpool_wait_ready(p, 2, 10000), 0);
    assert_int_equal(itp_close(p), 0);
}

/* Before the first checkout an on-demand pool has no slots yet: resize only
 * records the size. */
static void test_resize_before_first_use(void **state)
{
    (void)state;
    dbpool *p = open_pool("rt_resize_early", 2, 0);
    assert_int_equal(dbpool_resize(p, 5, 1), 0);
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.size, 5);
    assert_int_equal(dbpool_wait_ready(p, 5, 10000), 0);
    expect_backends("rt_resize_early", 5);
    assert_int_equal(itp_close(p), 0);
}

/* ---- max_waiting ------------------------------------------------------------ */

struct co_thr {
    dbpool *p;
    int rc;
    dbpool_lease lease;
};

static void *co_main(void *arg)
{
    struct co_thr *t = arg;
    t->rc = dbpool_checkout(t->p, 30000, &t->lease);
    if (t->rc == 0)
        (void)dbpool_checkin(&t->lease);
    return NULL;
}

static int waiting_is(const dbpool_stats *st, int64_t n)
{
    return st->waiting == n;
}

static void test_max_waiting(void **state)
{
    (void)state;
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    assert_int_equal(dbpool_config_set(&cfg, "max_waiting", "1"), 0);
    assert_int_equal(cfg.max_waiting, 1);
    assert_int_equal(dbpool_config_set(&cfg, "max_waiting", "-1"), DBPOOL_EINVAL);
    cfg.size = 1;
    cfg.queue_target = 5000;
    cfg.queue_interval = 10000;
    dbpool *p = itp_open(&srv, "rt_maxwait", &cfg);
    dbpool_lease held;
    assert_int_equal(dbpool_checkout(p, 10000, &held), 0);

    struct co_thr t = {p, 1, {0}};
    pthread_t th = itp_thr_start(co_main, &t);
    assert_true(itp_wait_stats(p, waiting_is, 1, 10000));

    /* the queue is full: refused at once, not after its 60 s */
    dbpool_lease l;
    int rc = dbpool_checkout(p, 60000, &l);
    assert_int_equal(rc, DBPOOL_EQUEUEFULL);
    assert_string_equal(dbpool_errname(rc), "DBPOOL_EQUEUEFULL");
    assert_non_null(strstr(dbpool_last_error(), "max_waiting"));
    assert_int_equal(itp_stats(p).waiting, 1);

    assert_int_equal(dbpool_checkin(&held), 0);
    assert_int_equal(itp_thr_join(th, 30000), 0);
    assert_int_equal(t.rc, 0);
    /* room again */
    assert_int_equal(dbpool_checkout(p, 10000, &l), 0);
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(itp_close(p), 0);
}

/* ---- dbpool_errname --------------------------------------------------------- */

static void test_errname(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *name;
    } known[] = {
        {DBPOOL_OK, "DBPOOL_OK"},
        {DBPOOL_EINVAL, "DBPOOL_EINVAL"},
        {DBPOOL_ENOMEM, "DBPOOL_ENOMEM"},
        {DBPOOL_ETIMEDOUT, "DBPOOL_ETIMEDOUT"},
        {DBPOOL_EDROPPED, "DBPOOL_EDROPPED"},
        {DBPOOL_EBUSY, "DBPOOL_EBUSY"},
        {DBPOOL_ESTALE, "DBPOOL_ESTALE"},
        {DBPOOL_ECLOSED, "DBPOOL_ECLOSED"},
        {DBPOOL_EUNAVAILABLE, "DBPOOL_EUNAVAILABLE"},
        {DBPOOL_ECONNECT, "DBPOOL_ECONNECT"},
        {DBPOOL_EEXPIRED, "DBPOOL_EEXPIRED"},
        {DBPOOL_ESYSTEM, "DBPOOL_ESYSTEM"},
        {DBPOOL_EQUERY, "DBPOOL_EQUERY"},
        {DBPOOL_ECONNLOST, "DBPOOL_ECONNLOST"},
        {DBPOOL_ECOMMIT_UNKNOWN, "DBPOOL_ECOMMIT_UNKNOWN"},
        {DBPOOL_EUNKNOWN, "DBPOOL_EUNKNOWN"},
        {DBPOOL_EFORKED, "DBPOOL_EFORKED"},
        {DBPOOL_EQUEUEFULL, "DBPOOL_EQUEUEFULL"},
        {DBPOOL_ESKIPPED, "DBPOOL_ESKIPPED"},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        assert_string_equal(dbpool_errname(known[i].code), known[i].name);
        assert_string_not_equal(dbpool_strerror(known[i].code), "unknown error");
    }
    /* every code from 0 down to the last one is named */
    for (int c = 0; c >= DBPOOL_ESKIPPED; c--)
        assert_int_equal(strncmp(dbpool_errname(c), "DBPOOL_", 7), 0);
    assert_string_equal(dbpool_errname(1), "unknown");
    assert_string_equal(dbpool_errname(DBPOOL_ESKIPPED - 1), "unknown");
    assert_string_equal(dbpool_errname(INT_MIN), "unknown");
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
        cmocka_unit_test_teardown(test_wait_ready_opens_n, test_teardown),
        cmocka_unit_test_teardown(test_wait_ready_min_size, test_teardown),
        cmocka_unit_test_teardown(test_wait_ready_check_only, test_teardown),
        cmocka_unit_test_teardown(test_wait_ready_fails_with_reason, test_teardown),
        cmocka_unit_test_teardown(test_wait_ready_bad_args, test_teardown),
        cmocka_unit_test_teardown(test_wait_ready_closed_while_waiting, test_teardown),
        cmocka_unit_test_teardown(test_resize_grow_shrink_grow, test_teardown),
        cmocka_unit_test_teardown(test_resize_grow_cancels_pending_shrink, test_teardown),
        cmocka_unit_test_teardown(test_resize_invalid, test_teardown),
        cmocka_unit_test_teardown(test_resize_before_first_use, test_teardown),
        cmocka_unit_test_teardown(test_max_waiting, test_teardown),
        cmocka_unit_test(test_errname),
    };
    return cmocka_run_group_tests_name("it_runtime", tests, group_setup, group_teardown);
}
