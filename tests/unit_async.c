/* unit_async.c - the non-blocking checkout under churn, on the stub driver
 * (no database, so hand-overs are as fast and as racy as they get; run it
 * under TSan): blocking threads and one loop thread share a small pool while
 * the loop submits thousands of requests and cancels some at random points of
 * their life. Every request must end exactly once: its callback ran, or its
 * cancel returned 0, never both, never neither. Then a close with requests
 * pending completes each of them once with DBPOOL_ECLOSED. Three loop threads
 * on one pool, each always with requests queued, all get served (same-loop
 * service stays bounded by barge_window). */
#include <poll.h>
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
#include "dbpool_async.h"
#include "stub_driver.h"

enum { THREADS = 3, PER_THREAD = 10000, REQUESTS = 20000, IN_FLIGHT = 64, CLOSING = 50 };

struct rec {
    int calls, cancelled, status;
    dbpool_request h;
};

static pthread_t loop_thread;
static struct rec recs[REQUESTS + CLOSING];
static int finished; /* requests whose callback ran or whose cancel succeeded */
static int wrong_thread;
static int too_late; /* cancels that found the callback already run */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_checkout(void *arg, int status, dbpool_lease lease)
{
    struct rec *r = arg;

    if (!pthread_equal(pthread_self(), loop_thread))
        wrong_thread++;
    r->calls++;
    r->status = status;
    finished++;
    if (status == 0)
        assert_int_equal(dbpool_checkin(&lease), 0);
}

struct worker {
    dbpool *p;
    int fails;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        dbpool_lease l;
        int rc = dbpool_checkout(w->p, 10000, &l);
        if (rc != 0 || dbpool_checkin(&l) != 0)
            w->fails++;
    }
    return NULL;
}

/* Cancel request i; the outcome must match what we know of it. */
static void try_cancel(int i)
{
    struct rec *r = &recs[i];
    if (r->cancelled)
        return;
    int rc = dbpool_checkout_cancel(&r->h);
    if (rc == 0) {
        assert_int_equal(r->calls, 0);
        r->cancelled = 1;
        finished++;
    } else {
        assert_int_equal(rc, DBPOOL_ESTALE);
        assert_int_equal(r->calls, 1); /* too late only once it ran */
        too_late++;
    }
}

static void run_ready(dbpool_cq *cq, int wait_ms)
{
    struct pollfd pfd = {dbpool_cq_fd(cq), POLLIN, 0};
    if (poll(&pfd, 1, wait_ms) == 1)
        assert_true(dbpool_cq_run(cq, 0) >= 0);
}

static void test_async_churn(void **state)
{
    (void)state;
    dbpool_config cfg;
    dbpool *p = NULL;
    dbpool_cq *cq = NULL;
    struct worker w[THREADS];
    pthread_t t[THREADS];
    unsigned seed = 12345;

    loop_thread = pthread_self();
    dbpool_config_init(&cfg);
    cfg.size = 4;
    cfg.queue_target = 10000; /* churn, not overload: no CoDel drops */
    cfg.queue_interval = 20000;
    cfg.idle_interval = 600000;
    cfg.log_level = DBPOOL_LOG_NONE;
    assert_int_equal(dbpool_open(&p, &stub_driver, NULL, &cfg), 0);
    assert_int_equal(dbpool_cq_new(&cq), 0);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){p, 0};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }

    int64_t deadline = now_ms() + 50000;
    int submitted = 0;
    while ((submitted < REQUESTS || finished < REQUESTS) && now_ms() < deadline) {
        while (submitted < REQUESTS && submitted - finished < IN_FLIGHT) {
            struct rec *r = &recs[submitted];
            assert_int_equal(dbpool_checkout_async(p, cq, 10000, on_checkout, r, &r->h), 0);
            submitted++;
            /* cancel one in five, at a random age: pending, completed but
             * not run, or already run */
            if (rand_r(&seed) % 5 == 0)
                try_cancel(submitted - 1 - (int)(rand_r(&seed) % (submitted < 8 ? submitted : 8)));
        }
        run_ready(cq, 10);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(finished, REQUESTS);
    int ran = 0, cancelled = 0;
    for (int i = 0; i < REQUESTS; i++) {
        assert_int_equal(recs[i].calls + recs[i].cancelled, 1);
        if (recs[i].calls)
            assert_int_equal(recs[i].status, 0);
        ran += recs[i].calls;
        cancelled += recs[i].cancelled;
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(w[i].fails, 0);
    assert_int_equal(wrong_thread, 0);
    print_message("%d callbacks, %d cancelled, %d cancels too late\n", ran, cancelled, too_late);
    assert_true(cancelled > 0);
    /* too_late (a cancel after the completion was posted) depends on the
     * scheduling of the run: reported, not asserted (it was 0 in one run
     * out of a few on a loaded machine) */

    /* close with requests pending (every connection held) */
    dbpool_lease held[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(dbpool_checkout(p, 5000, &held[i]), 0);
    for (int i = REQUESTS; i < REQUESTS + CLOSING; i++)
        assert_int_equal(dbpool_checkout_async(p, cq, 10000, on_checkout, &recs[i], &recs[i].h), 0);
    assert_int_equal(dbpool_close(p), DBPOOL_EBUSY);
    assert_int_equal(dbpool_cq_run(cq, 0), CLOSING);
    for (int i = REQUESTS; i < REQUESTS + CLOSING; i++) {
        assert_int_equal(recs[i].calls, 1);
        assert_int_equal(recs[i].status, DBPOOL_ECLOSED);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(dbpool_checkin(&held[i]), 0);
    assert_int_equal(dbpool_cq_free(cq), 0);
}

/* ---- several loops on one pool: same-loop service under churn ------------- */

enum { LOOPS = 3, PER_LOOP = 5000, LOOP_IN_FLIGHT = 16 };

struct loop_ctx {
    dbpool *p;
    dbpool_cq *cq;
    int submitted, done, bad, failed, reached;
    int defer;  /* run the queue inside dbpool_cq_defer_wakeup spans */
    int stalls; /* (defer) a 5 s wait on the fd with requests in flight */
};

static atomic_int loops_reached; /* loops that completed PER_LOOP requests */
static atomic_int loops_bad;     /* a request failed (timed out): stop early */

/* Checked in right here, on the loop's thread: the path where a check-in
 * may serve this loop's next request before the other loops' (pool.c). */
static void on_loop_checkout(void *arg, int status, dbpool_lease lease)
{
    struct loop_ctx *l = arg;
    l->done++;
    if (status != 0 || dbpool_checkin(&lease) != 0) {
        l->bad++;
        atomic_store(&loops_bad, 1);
    }
}

/* Submit and run until every loop has completed PER_LOOP requests (so a
 * loop that is served keeps competing while another one waits), then drain. */
static void *loop_main(void *arg)
{
    struct loop_ctx *l = arg;
    int64_t deadline = now_ms() + 60000;

    while (now_ms() < deadline) {
        int more = atomic_load(&loops_reached) < LOOPS && !atomic_load(&loops_bad);
        if (!more && l->done == l->submitted)
            break;
        while (more && l->submitted - l->done < LOOP_IN_FLIGHT) {
            if (dbpool_checkout_async(l->p, l->cq, 10000, on_loop_checkout, l, NULL) != 0) {
                l->failed++;
                return NULL;
            }
            l->submitted++;
        }
        struct pollfd pfd = {dbpool_cq_fd(l->cq), POLLIN, 0};
        /* with spans, the wait is long: a completion left unsignalled shows
         * as a stall (requests in flight, and the other loops keep checking
         * connections in, so one arrives within milliseconds) */
        int ready = poll(&pfd, 1, l->defer ? 5000 : 10) == 1;
        if (!ready && l->defer && l->submitted > l->done)
            l->stalls++;
        if (l->defer)
            dbpool_cq_defer_wakeup(l->cq, 1);
        if (ready && dbpool_cq_run(l->cq, 0) < 0) {
            l->failed++;
            return NULL;
        }
        if (l->defer) /* submitted from inside the span, like an adapter's batch */
            while (more && l->submitted - l->done < LOOP_IN_FLIGHT) {
                if (dbpool_checkout_async(l->p, l->cq, 10000, on_loop_checkout, l, NULL) != 0) {
                    l->failed++;
                    return NULL;
                }
                l->submitted++;
            }
        if (l->defer)
            dbpool_cq_defer_wakeup(l->cq, 0);
        if (!l->reached && l->done >= PER_LOOP) {
            l->reached = 1;
            atomic_fetch_add(&loops_reached, 1);
        }
    }
    return NULL;
}

/* Three loops share a pool of 2 with the default barge_window, each loop
 * always with requests queued: every loop gets its share. Without the
 * barge_window bound on same-loop service, the loop that holds the
 * connections would keep them while it has requests queued, and the others'
 * requests would time out (10 s). No blocking caller here: a blocking head
 * stops same-loop service (test_async_churn mixes them). TSan checks the
 * locking. */
static void loops_churn(int defer)
{
    dbpool_config cfg;
    dbpool *p = NULL;
    struct loop_ctx l[LOOPS];
    pthread_t t[LOOPS];

    atomic_store(&loops_reached, 0);
    atomic_store(&loops_bad, 0);
    dbpool_config_init(&cfg);
    cfg.size = 2;
    cfg.queue_target = 10000;
    cfg.queue_interval = 20000;
    cfg.idle_interval = 600000;
    cfg.log_level = DBPOOL_LOG_NONE;
    assert_int_equal(dbpool_open(&p, &stub_driver, NULL, &cfg), 0);
    for (int i = 0; i < LOOPS; i++) {
        memset(&l[i], 0, sizeof l[i]);
        l[i].p = p;
        l[i].defer = defer;
        assert_int_equal(dbpool_cq_new(&l[i].cq), 0);
        assert_int_equal(pthread_create(&t[i], NULL, loop_main, &l[i]), 0);
    }
    for (int i = 0; i < LOOPS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < LOOPS; i++) {
        print_message("loop %d: %d requests\n", i, l[i].done);
        assert_int_equal(l[i].failed, 0);
        assert_int_equal(l[i].bad, 0);
        assert_int_equal(l[i].stalls, 0);
        assert_true(l[i].reached);
        assert_int_equal(l[i].done, l[i].submitted);
        assert_int_equal(dbpool_cq_free(l[i].cq), 0);
    }
    dbpool_stats st;
    assert_int_equal(dbpool_stats_get(p, &st), 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.timeouts, 0);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_async_loops_churn(void **state)
{
    (void)state;
    loops_churn(0);
}

/* The same with every loop running its queue (and submitting) inside
 * dbpool_cq_defer_wakeup spans, as the epoll adapter does: its own
 * check-ins post without a wake-up, the other loops' posts land in its
 * spans; no completion is ever left unsignalled once a span ends (a loop
 * waits 5 s on the fd before it counts a stall). */
static void test_async_loops_churn_deferred_wakeups(void **state)
{
    (void)state;
    loops_churn(1);
}

static int readable(dbpool_cq *cq)
{
    struct pollfd pfd = {dbpool_cq_fd(cq), POLLIN, 0};
    return poll(&pfd, 1, 0) == 1;
}

static void *checkin_main(void *arg)
{
    assert_int_equal(dbpool_checkin(arg), 0);
    return NULL;
}

/* dbpool_cq_defer_wakeup: inside a span no completion makes the fd readable
 * (neither the owner's own check-in nor another thread's); a run inside the
 * span takes it without the fd ever showing it; the end of the (outermost)
 * span makes the fd readable exactly when completions still wait. */
static void test_async_defer_wakeup(void **state)
{
    (void)state;
    dbpool_config cfg;
    dbpool *p = NULL;
    dbpool_cq *cq = NULL;
    dbpool_lease held;
    struct rec r[4];
    pthread_t t;

    memset(r, 0, sizeof r);
    loop_thread = pthread_self();
    dbpool_config_init(&cfg);
    cfg.size = 1;
    cfg.log_level = DBPOOL_LOG_NONE;
    assert_int_equal(dbpool_open(&p, &stub_driver, NULL, &cfg), 0);
    assert_int_equal(dbpool_cq_new(&cq), 0);
    assert_int_equal(dbpool_cq_defer_wakeup(NULL, 1), DBPOOL_EINVAL);

    /* the owner's check-in, run inside the span: never readable */
    assert_int_equal(dbpool_checkout(p, 5000, &held), 0);
    assert_int_equal(dbpool_checkout_async(p, cq, 5000, on_checkout, &r[0], NULL), 0);
    assert_int_equal(dbpool_cq_defer_wakeup(cq, 1), 0);
    assert_int_equal(dbpool_checkin(&held), 0);
    assert_false(readable(cq));
    assert_int_equal(dbpool_cq_run(cq, 0), 1);
    assert_int_equal(r[0].calls, 1);
    assert_int_equal(dbpool_cq_defer_wakeup(cq, 0), 0);
    assert_false(readable(cq));

    /* not run inside the span: readable when it ends */
    assert_int_equal(dbpool_checkout(p, 5000, &held), 0);
    assert_int_equal(dbpool_checkout_async(p, cq, 5000, on_checkout, &r[1], NULL), 0);
    assert_int_equal(dbpool_cq_defer_wakeup(cq, 1), 0);
    assert_int_equal(dbpool_checkin(&held), 0);
    assert_false(readable(cq));
    assert_int_equal(dbpool_cq_defer_wakeup(cq, 0), 0);
    assert_true(readable(cq));
    assert_int_equal(dbpool_cq_run(cq, 0), 1);
    assert_false(readable(cq));

    /* another thread's check-in inside nested spans: the outermost end */
    assert_int_equal(dbpool_checkout(p, 5000, &held), 0);
    assert_int_equal(dbpool_checkout_async(p, cq, 5000, on_checkout, &r[2], NULL), 0);
    assert_int_equal(dbpool_cq_defer_wakeup(cq, 1), 0);
    assert_int_equal(dbpool_cq_defer_wakeup(cq, 1), 0);
    assert_int_equal(pthread_create(&t, NULL, checkin_main, &held), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_false(readable(cq));
    assert_int_equal(dbpool_cq_defer_wakeup(cq, 0), 0);
    assert_false(readable(cq));
    assert_int_equal(dbpool_cq_defer_wakeup(cq, 0), 0);
    assert_true(readable(cq));

    /* outside spans, as always: readable at once, drained by the run */
    assert_int_equal(dbpool_checkout_async(p, cq, 5000, on_checkout, &r[3], NULL), 0);
    assert_int_equal(dbpool_cq_run(cq, 0), 1); /* r[2] (ready before r[3] was) */
    assert_true(readable(cq));
    assert_int_equal(dbpool_cq_run(cq, 0), 1);
    assert_false(readable(cq));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
    }
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(dbpool_close(p), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_async_churn),
        cmocka_unit_test(test_async_loops_churn),
        cmocka_unit_test(test_async_loops_churn_deferred_wakeups),
        cmocka_unit_test(test_async_defer_wakeup),
    };
    return cmocka_run_group_tests_name("unit_async", tests, NULL, NULL);
}
