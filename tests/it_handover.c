/* it_handover.c - how a returned connection reaches a waiter (barge_window):
 * strict FIFO hand-over with barge_window=0; with a window, the thread that
 * returned the connection may take it again while the oldest waiter is
 * young, but never past the window; a waiter is never left next to an idle
 * connection longer than the window, nor does it time out next to one. On a
 * pool of one connection over a real server, so every step is observable. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dbpool.h"
#include "itpool.h"
#include "pgserver.h"
#include "schedlag.h"

static pgt_server srv;
static int64_t SLACK_MS = 30;
static int64_t slack(void)
{
    return SLACK_MS + pgt_sched_late();
}

static dbpool *open1(const char *app, int64_t barge_window)
{
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.size = 1;
    cfg.barge_window = barge_window;
    cfg.queue_target = 5000; /* no CoDel drop in these tests */
    cfg.queue_interval = 10000;
    dbpool *p = itp_open(&srv, app, &cfg);
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 10000, &l), 0); /* connected */
    assert_int_equal(dbpool_checkin(&l), 0);
    return p;
}

static int waiting_is(const dbpool_stats *st, int64_t n)
{
    return st->waiting == n;
}

/* A thread that checks out with a timeout and records when and how. */
struct waiter_thr {
    dbpool *p;
    int64_t timeout;
    int rc;
    int64_t start, got; /* pgt_now_ms() */
    dbpool_lease lease;
};

static void *waiter_main(void *arg)
{
    struct waiter_thr *w = arg;
    w->start = pgt_now_ms();
    w->rc = dbpool_checkout(w->p, w->timeout, &w->lease);
    w->got = pgt_now_ms();
    return NULL;
}

static pthread_t start_waiter(struct waiter_thr *w, dbpool *p, int64_t timeout)
{
    memset(w, 0, sizeof(*w));
    w->p = p;
    w->timeout = timeout;
    pthread_t t = itp_thr_start(waiter_main, w);
    assert_true(itp_wait_stats(p, waiting_is, 1, 5000));
    return t;
}

/* barge_window=0: a check-in hands the connection to the waiter; the thread
 * that returned it cannot take it back. */
static void test_handover_strict_fifo(void **state)
{
    (void)state;
    pgt_sched_reset();
    dbpool *p = open1("ho_strict", 0);
    dbpool_lease a, again;
    struct waiter_thr b;

    assert_int_equal(dbpool_checkout(p, 1000, &a), 0);
    pthread_t t = start_waiter(&b, p, 10000);
    assert_int_equal(dbpool_checkin(&a), 0);
    assert_int_equal(dbpool_checkout(p, 0, &again), DBPOOL_EBUSY);
    assert_int_equal(itp_thr_join(t, 5000), 0);
    assert_int_equal(b.rc, 0);
    assert_true(itp_select1(&b.lease));
    assert_int_equal(dbpool_checkin(&b.lease), 0);
    assert_int_equal(itp_close(p), 0);
}

/* With a window, the returning thread takes the connection back while the
 * waiter is inside its window, and from the end of the window on the
 * waiter gets the next check-in: waited at most window + slack. */
static void test_handover_barging_is_bounded(void **state)
{
    (void)state;
    const int64_t window = 600;
    pgt_sched_reset();
    dbpool *p = open1("ho_bounded", window);
    dbpool_lease a;
    struct waiter_thr b;

    assert_int_equal(dbpool_checkout(p, 1000, &a), 0);
    int64_t queued = pgt_now_ms(); /* B starts waiting after this */
    pthread_t t = start_waiter(&b, p, 10000);
    int barged = 0, refused = 0;
    int64_t end = pgt_now_ms() + 4 * window;
    while (pgt_now_ms() < end) {
        int64_t t_in = pgt_now_ms();
        assert_int_equal(dbpool_checkin(&a), 0);
        int rc = dbpool_checkout(p, 0, &a);
        if (rc != 0) {
            assert_int_equal(rc, DBPOOL_EBUSY);
            assert_true(t_in - queued >= window - slack()); /* not inside the window */
            refused = 1;
            break;
        }
        /* inside the window (with margin), taking it back must work */
        if (t_in - queued < window - slack())
            barged++;
        itp_sleep_ms(2); /* pacing: "work" on the lease */
    }
    assert_true(refused); /* never past the window: B got it */
    assert_true(barged > 0);
    assert_int_equal(itp_thr_join(t, 5000), 0);
    assert_int_equal(b.rc, 0);
    int64_t waited = b.got - b.start;
    print_message("barged %d times; waiter waited %lld ms (window %lld)\n", barged,
                  (long long)waited, (long long)window);
    assert_true(waited <= window + slack());
    assert_int_equal(dbpool_checkin(&b.lease), 0);
    assert_int_equal(itp_close(p), 0);
}

/* The returning thread does not come back: the waiter takes the idle
 * connection when its window ends, not at its timeout. */
static void test_handover_idle_connection_reaches_waiter(void **state)
{
    (void)state;
    const int64_t window = 300;
    pgt_sched_reset();
    dbpool *p = open1("ho_idle", window);
    dbpool_lease a;
    struct waiter_thr b;

    assert_int_equal(dbpool_checkout(p, 1000, &a), 0);
    pthread_t t = start_waiter(&b, p, 10000);
    assert_int_equal(dbpool_checkin(&a), 0);
    assert_int_equal(itp_thr_join(t, 5000), 0);
    assert_int_equal(b.rc, 0);
    assert_true(b.got - b.start <= window + slack());
    assert_true(itp_select1(&b.lease));
    assert_int_equal(dbpool_checkin(&b.lease), 0);
    assert_int_equal(itp_close(p), 0);
}

/* A window longer than the waiter's timeout: at its deadline the waiter
 * takes the connection that idles, instead of failing with ETIMEDOUT. */
static void test_handover_no_timeout_next_to_idle(void **state)
{
    (void)state;
    pgt_sched_reset();
    dbpool *p = open1("ho_timeout", 60000);
    dbpool_lease a;
    struct waiter_thr b;

    assert_int_equal(dbpool_checkout(p, 1000, &a), 0);
    pthread_t t = start_waiter(&b, p, 300);
    assert_int_equal(dbpool_checkin(&a), 0);
    assert_int_equal(itp_thr_join(t, 5000), 0);
    assert_int_equal(b.rc, 0);
    assert_true(b.got - b.start <= 300 + slack());
    assert_int_equal(dbpool_checkin(&b.lease), 0);

    /* and a plain timeout is still a timeout when nothing idles */
    assert_int_equal(dbpool_checkout(p, 1000, &a), 0);
    t = start_waiter(&b, p, 200);
    assert_int_equal(itp_thr_join(t, 5000), 0);
    assert_int_equal(b.rc, DBPOOL_ETIMEDOUT);
    assert_int_equal(dbpool_checkin(&a), 0);
    assert_int_equal(itp_close(p), 0);
}

/* Past their windows, waiters are served in the order they came. */
static void test_handover_fifo_after_window(void **state)
{
    (void)state;
    const int64_t window = 100;
    pgt_sched_reset();
    dbpool *p = open1("ho_order", window);
    dbpool_lease a;
    struct waiter_thr w[3];
    pthread_t t[3];

    assert_int_equal(dbpool_checkout(p, 1000, &a), 0);
    for (int i = 0; i < 3; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].p = p;
        w[i].timeout = 10000;
        t[i] = itp_thr_start(waiter_main, &w[i]);
        assert_true(itp_wait_stats(p, waiting_is, i + 1, 5000));
    }
    itp_sleep_ms(window + 50); /* pacing: every waiter is past its window */
    assert_int_equal(dbpool_checkin(&a), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(itp_thr_join(t[i], 5000), 0);
        assert_int_equal(w[i].rc, 0);
        assert_int_equal(dbpool_checkin(&w[i].lease), 0);
    }
    /* each got it after the one before it (a join of t[i] that waited for
     * a later waiter would have failed above) */
    assert_true(w[0].got <= w[1].got);
    assert_true(w[1].got <= w[2].got);
    assert_int_equal(itp_close(p), 0);
}

static int group_setup(void **state)
{
    (void)state;
    if (getenv("TSAN_OPTIONS") || getenv("ASAN_OPTIONS"))
        SLACK_MS = 90;
    if (pgt_sched_start() != 0)
        return -1;
    return pgt_start(&srv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    itp_close_all();
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handover_strict_fifo),
        cmocka_unit_test(test_handover_barging_is_bounded),
        cmocka_unit_test(test_handover_idle_connection_reaches_waiter),
        cmocka_unit_test(test_handover_no_timeout_next_to_idle),
        cmocka_unit_test(test_handover_fifo_after_window),
    };
    return cmocka_run_group_tests_name("it_handover", tests, group_setup, group_teardown);
}
