/* it_async.c - the non-blocking checkout (dbpool_async.h) against a real
 * server: 1,000 requests in flight from one loop thread on a pool of 8; FIFO
 * order between async and blocking callers in one pool; strict hand-over to
 * an async request at the head of the queue (barge_window); timeouts,
 * cancellation, CoDel drops, fail-fast while DOWN (through the fault relay),
 * close with requests pending; callbacks only on the thread that runs the
 * completion queue; callbacks that submit and cancel; pause; misuse. */
#include <errno.h>
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

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_async.h"
#include "dbpool_pg.h"
#include "itpool.h"
#include "pgserver.h"
#include "relay.h"
#include "schedlag.h"

static pgt_server srv;
static relay *g_relay;
static int64_t SLACK_MS = 50;
static int64_t slack(void)
{
    return SLACK_MS + pgt_sched_late();
}

/* ---- a request's record, and the loop -------------------------------------- */

struct rec {
    int calls; /* callbacks seen: must end at exactly 1 */
    int status;
    int keep;         /* keep the lease (the test checks it in) */
    int query_ok;     /* SELECT 1 on the lease worked */
    int wrong_thread; /* the callback ran on another thread than the loop's */
    int seq;          /* order among all holders (fifo test) */
    int64_t at;       /* pgt_now_ms() of the callback */
    char err[600];
    dbpool_lease lease;
};

static pthread_t loop_thread;
static atomic_int seq_counter;

static void on_checkout(void *arg, int status, dbpool_lease lease)
{
    struct rec *r = arg;

    r->calls++;
    r->status = status;
    r->at = pgt_now_ms();
    if (!pthread_equal(pthread_self(), loop_thread))
        r->wrong_thread = 1;
    if (status != 0) {
        snprintf(r->err, sizeof r->err, "%s", dbpool_last_error());
        return;
    }
    r->seq = atomic_fetch_add(&seq_counter, 1);
    r->query_ok = itp_select1(&lease);
    if (r->keep)
        r->lease = lease;
    else
        assert_int_equal(dbpool_checkin(&lease), 0);
}

struct recs {
    struct rec *r;
    int n;
};

static int all_called(void *arg)
{
    struct recs *rs = arg;
    for (int i = 0; i < rs->n; i++)
        if (rs->r[i].calls == 0)
            return 0;
    return 1;
}

/* Run the queue whenever its fd is readable until done(arg) or timeout_ms:
 * an event loop in miniature. 1 if done. */
static int loop_until(dbpool_cq *cq, int (*done)(void *), void *arg, int64_t timeout_ms)
{
    int64_t end = pgt_now_ms() + timeout_ms;
    struct pollfd pfd = {dbpool_cq_fd(cq), POLLIN, 0};

    while (!done(arg)) {
        int64_t left = end - pgt_now_ms();
        if (left <= 0)
            return 0;
        int n = poll(&pfd, 1, left > 100 ? 100 : (int)left);
        if (n > 0)
            assert_true(dbpool_cq_run(cq, 0) >= 0);
    }
    return 1;
}

static int run_all(dbpool_cq *cq, struct rec *r, int n, int64_t timeout_ms)
{
    struct recs rs = {r, n};
    return loop_until(cq, all_called, &rs, timeout_ms);
}

/* Is the queue's fd readable right now? */
static int cq_readable(dbpool_cq *cq)
{
    struct pollfd pfd = {dbpool_cq_fd(cq), POLLIN, 0};
    return poll(&pfd, 1, 0) == 1;
}

static dbpool_cq *new_cq(void)
{
    dbpool_cq *cq = NULL;
    assert_int_equal(dbpool_cq_new(&cq), 0);
    assert_non_null(cq);
    assert_true(dbpool_cq_fd(cq) >= 0);
    return cq;
}

static void submit(dbpool *p, dbpool_cq *cq, int64_t timeout, struct rec *r, dbpool_request *h)
{
    assert_int_equal(dbpool_checkout_async(p, cq, timeout, on_checkout, r, h), 0);
}

static dbpool_config quiet_config(int size)
{
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.size = size;
    cfg.queue_target = 10000; /* no CoDel drop unless a test wants it */
    cfg.queue_interval = 20000;
    cfg.checkout_timeout = 30000;
    cfg.idle_interval = 600000; /* no idle ping takes a connection the test counts */
    cfg.log_level = DBPOOL_LOG_NONE;
    return cfg;
}

static dbpool *open_connected(const char *app, const dbpool_config *cfg)
{
    dbpool *p = itp_open(&srv, app, cfg);
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 10000, &l), 0); /* connected */
    assert_int_equal(dbpool_checkin(&l), 0);
    return p;
}

static int waiting_is(const dbpool_stats *st, int64_t n)
{
    return st->waiting == n;
}

static int state_is(const dbpool_stats *st, int64_t s)
{
    return st->state == (dbpool_state)s;
}

static int idle_is(const dbpool_stats *st, int64_t n)
{
    return st->idle == n;
}

/* ---- tests ------------------------------------------------------------------ */

/* 1,000 requests in flight at once from one loop thread on a pool of 8:
 * every one completes exactly once, on the loop thread, and a real query runs
 * on each lease. */
static void test_async_thousand_in_flight(void **state)
{
    (void)state;
    enum { N = 1000 };
    dbpool_config cfg = quiet_config(8);
    dbpool *p = open_connected("as_thousand", &cfg);
    assert_true(itp_wait_stats(p, idle_is, 8, 10000));
    dbpool_cq *cq = new_cq();
    struct rec *r = calloc(N, sizeof *r);
    assert_non_null(r);
    uint64_t before = itp_stats(p).checkouts;

    for (int i = 0; i < N; i++)
        submit(p, cq, 60000, &r[i], NULL);
    /* nothing ran yet: the 8 idle connections went to the first 8, the rest
     * wait in the pool's queue */
    assert_int_equal(itp_stats(p).waiting, N - 8);
    for (int i = 0; i < N; i++)
        assert_int_equal(r[i].calls, 0);
    assert_true(cq_readable(cq));

    assert_true(run_all(cq, r, N, 120000));
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        assert_true(r[i].query_ok);
        assert_false(r[i].wrong_thread);
    }
    assert_int_equal(dbpool_cq_run(cq, 0), 0); /* nothing more, ever */
    assert_false(cq_readable(cq));
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.checkouts - before, N);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.busy, 0);
    assert_int_equal(dbpool_cq_free(cq), 0);
    free(r);
    assert_int_equal(itp_close(p), 0);
}

/* Blocking callers and async requests in one queue are served in arrival
 * order. With a barge window the blocking head takes the connection at the
 * end of its window; the async request behind it is handed the connection
 * at the next check-in (strict hand-over with an async head). */
struct blocker {
    dbpool *p;
    int rc;
    int seq;
    int ok;
};

static void *blocker_main(void *arg)
{
    struct blocker *b = arg;
    dbpool_lease l;
    b->rc = dbpool_checkout(b->p, 30000, &l);
    if (b->rc != 0)
        return NULL;
    b->seq = atomic_fetch_add(&seq_counter, 1);
    b->ok = itp_select1(&l);
    if (dbpool_checkin(&l) != 0)
        b->ok = 0;
    return NULL;
}

/* The held connection comes from dbpool_checkout(), or (async_hold) from an
 * async request of this thread: then its check-in here is one that same-loop
 * service could use, and it must still not pass a blocking caller over. */
static void fifo_mixed(const char *app, int64_t barge_window, int async_hold)
{
    enum { PAIRS = 3 };
    dbpool_config cfg = quiet_config(1);
    cfg.barge_window = barge_window;
    dbpool *p = open_connected(app, &cfg);
    dbpool_cq *cq = new_cq();
    struct blocker b[PAIRS];
    struct rec r[PAIRS];
    pthread_t t[PAIRS];
    dbpool_lease hold;

    memset(b, 0, sizeof b);
    memset(r, 0, sizeof r);
    atomic_store(&seq_counter, 0);
    if (async_hold) {
        struct rec h;
        memset(&h, 0, sizeof h);
        h.keep = 1;
        submit(p, cq, 1000, &h, NULL);
        assert_int_equal(dbpool_cq_run(cq, 0), 1);
        assert_int_equal(h.status, 0);
        hold = h.lease;
    } else {
        assert_int_equal(dbpool_checkout(p, 1000, &hold), 0);
    }
    int queued = 0;
    for (int i = 0; i < PAIRS; i++) { /* thread, async, thread, async, ... */
        b[i].p = p;
        t[i] = itp_thr_start(blocker_main, &b[i]);
        assert_true(itp_wait_stats(p, waiting_is, ++queued, 5000));
        submit(p, cq, 30000, &r[i], NULL);
        assert_int_equal(itp_stats(p).waiting, ++queued);
    }
    atomic_store(&seq_counter, 0);
    assert_int_equal(dbpool_checkin(&hold), 0);
    assert_true(run_all(cq, r, PAIRS, 20000));
    for (int i = 0; i < PAIRS; i++) {
        assert_int_equal(itp_thr_join(t[i], 5000), 0);
        assert_int_equal(b[i].rc, 0);
        assert_true(b[i].ok);
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        assert_true(r[i].query_ok);
        assert_int_equal(b[i].seq, 2 * i);
        assert_int_equal(r[i].seq, 2 * i + 1);
    }
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(itp_close(p), 0);
}

static void test_async_fifo_mixed_strict(void **state)
{
    (void)state;
    fifo_mixed("as_fifo0", 0, 0);
}

static void test_async_fifo_mixed_barging(void **state)
{
    (void)state;
    fifo_mixed("as_fifo200", 200, 0);
}

/* The same with the connection held by an async request of the loop that
 * has requests queued: same-loop service never passes a blocking caller. */
static void test_async_fifo_mixed_loop_lease(void **state)
{
    (void)state;
    fifo_mixed("as_fifo200l", 200, 1);
}

/* ---- same-loop service (own_loop_waiter in src/core/pool.c) ----------------- */

/* Another loop's request: submitted from a thread of its own (the request's
 * owner), then that thread ends; its cq is run here afterwards (the join
 * hands the cq over). */
struct other_loop {
    dbpool *p;
    dbpool_cq *cq;
    struct rec *r;
    int rc;
};

static void *other_loop_submit(void *arg)
{
    struct other_loop *o = arg;
    o->rc = dbpool_checkout_async(o->p, o->cq, 30000, on_checkout, o->r, NULL);
    return NULL;
}

static int oldest_wait_over(const dbpool_stats *st, int64_t ms)
{
    return st->oldest_wait_ms > ms;
}

/*
 * One connection; loop A (this thread) holds it through an async request.
 * Queued: B's request, then A's. A checks the connection in:
 *   - inside the window (`expire` 0): it goes to A's own request, B's waits
 *     (same-loop service), and the next check-in with no request of A's
 *     queued goes to B (FIFO again);
 *   - once B's request has waited past barge_window (`expire` 1): it goes to
 *     B, in FIFO order, and A's request waits (the bound).
 */
static void same_loop(const char *app, int64_t barge_window, int expire)
{
    dbpool_config cfg = quiet_config(1);
    cfg.barge_window = barge_window;
    dbpool *p = open_connected(app, &cfg);
    dbpool_cq *cqa = new_cq(), *cqb = new_cq();
    struct rec a0, a1, b;

    memset(&a0, 0, sizeof a0);
    memset(&a1, 0, sizeof a1);
    memset(&b, 0, sizeof b);
    a0.keep = a1.keep = b.keep = 1;
    submit(p, cqa, 1000, &a0, NULL); /* the idle connection, at once */
    assert_int_equal(dbpool_cq_run(cqa, 0), 1);
    assert_int_equal(a0.status, 0);

    struct other_loop o = {p, cqb, &b, 1};
    int64_t t0 = pgt_now_ms();
    assert_int_equal(itp_thr_join(itp_thr_start(other_loop_submit, &o), 5000), 0);
    assert_int_equal(o.rc, 0);
    submit(p, cqa, 30000, &a1, NULL);
    int64_t spread = pgt_now_ms() - t0; /* b waited at most this much longer than a1 */
    assert_int_equal(itp_stats(p).waiting, 2);
    if (expire) /* b, the oldest, is past its window (a bounded wait on the clock) */
        assert_true(itp_wait_stats(p, oldest_wait_over, barge_window + spread, 10000));
    else /* the test is meaningless unless it ran inside the window */
        assert_true(spread < barge_window / 2);

    assert_int_equal(dbpool_checkin(&a0.lease), 0);
    struct rec *first = expire ? &b : &a1, *second = expire ? &a1 : &b;
    dbpool_cq *cq1 = expire ? cqb : cqa, *cq2 = expire ? cqa : cqb;
    assert_true(cq_readable(cq1)); /* handed over by the check-in itself */
    assert_false(cq_readable(cq2));
    assert_int_equal(itp_stats(p).waiting, 1);
    assert_int_equal(dbpool_cq_run(cq1, 0), 1);
    assert_int_equal(first->calls, 1);
    assert_int_equal(first->status, 0);
    assert_true(first->query_ok);
    assert_int_equal(second->calls, 0);

    /* checked in here: nothing of A's is queued any more, or the lease was
     * B's (delivered to a request of another thread): plain FIFO */
    assert_int_equal(dbpool_checkin(&first->lease), 0);
    assert_true(cq_readable(cq2));
    assert_int_equal(dbpool_cq_run(cq2, 0), 1);
    assert_int_equal(second->calls, 1);
    assert_int_equal(second->status, 0);
    assert_true(second->query_ok);
    assert_int_equal(dbpool_checkin(&second->lease), 0);
    assert_int_equal(itp_stats(p).waiting, 0);
    assert_int_equal(dbpool_cq_free(cqa), 0);
    assert_int_equal(dbpool_cq_free(cqb), 0);
    assert_int_equal(itp_close(p), 0);
}

static void test_async_same_loop_served_in_window(void **state)
{
    (void)state;
    same_loop("as_loop_in", 600000, 0);
}

static void test_async_other_loop_not_bypassed_past_window(void **state)
{
    (void)state;
    same_loop("as_loop_out", 100, 1);
}

/* barge_window 0 is strict FIFO between loops too. */
static void test_async_same_loop_off_with_zero_window(void **state)
{
    (void)state;
    same_loop("as_loop_zero", 0, 1);
}

/* An async request at the head never wakes by itself, so it must never be
 * passed over: even with a huge barge window a check-in hands it the
 * connection, and the thread that returned it cannot take it back. */
static void test_async_head_gets_strict_handover(void **state)
{
    (void)state;
    dbpool_config cfg = quiet_config(1);
    cfg.barge_window = 600000;
    dbpool *p = open_connected("as_head", &cfg);
    dbpool_cq *cq = new_cq();
    struct rec r;
    dbpool_lease hold, again;

    memset(&r, 0, sizeof r);
    assert_int_equal(dbpool_checkout(p, 1000, &hold), 0);
    submit(p, cq, 30000, &r, NULL);
    assert_int_equal(itp_stats(p).waiting, 1);
    assert_false(cq_readable(cq));
    assert_int_equal(dbpool_checkin(&hold), 0);
    /* handed over by the check-in itself, not left idle */
    assert_true(cq_readable(cq));
    assert_int_equal(dbpool_checkout(p, 0, &again), DBPOOL_EBUSY);
    assert_int_equal(itp_stats(p).busy, 1);
    assert_int_equal(dbpool_cq_run(cq, 0), 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_true(r.query_ok);
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(itp_close(p), 0);
}

/* A pending request times out at its deadline (the manager expires it);
 * timeout 0 with nothing idle is EBUSY, through the callback too. */
static void test_async_timeout(void **state)
{
    (void)state;
    pgt_sched_reset();
    dbpool_config cfg = quiet_config(1);
    dbpool *p = open_connected("as_timeout", &cfg);
    dbpool_cq *cq = new_cq();
    struct rec r[2];
    dbpool_lease hold;

    memset(r, 0, sizeof r);
    assert_int_equal(dbpool_checkout(p, 1000, &hold), 0);
    uint64_t timeouts = itp_stats(p).timeouts;
    int64_t t0 = pgt_now_ms();
    submit(p, cq, 300, &r[0], NULL);
    submit(p, cq, 0, &r[1], NULL);
    assert_true(run_all(cq, r, 2, 10000));
    assert_int_equal(r[1].calls, 1);
    assert_int_equal(r[1].status, DBPOOL_EBUSY);
    assert_int_equal(r[0].calls, 1);
    assert_int_equal(r[0].status, DBPOOL_ETIMEDOUT);
    assert_non_null(strstr(r[0].err, "deadline reached while in queue"));
    int64_t waited = r[0].at - t0;
    print_message("timed out after %lld ms (timeout 300)\n", (long long)waited);
    assert_true(waited >= 300);
    assert_true(waited <= 300 + slack());
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.timeouts - timeouts, 1);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(dbpool_checkin(&hold), 0);
    assert_int_equal(dbpool_cq_run(cq, 0), 0);
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(itp_close(p), 0);
}

/* Cancelling a pending request takes it out of the queue: its callback never
 * runs, the next one is served. A request already handed a connection (its
 * completion not run yet) gives it back. Late or repeated cancels are
 * DBPOOL_ESTALE and do nothing. */
static void test_async_cancel(void **state)
{
    (void)state;
    dbpool_config cfg = quiet_config(1);
    dbpool *p = open_connected("as_cancel", &cfg);
    dbpool_cq *cq = new_cq();
    struct rec r[3];
    dbpool_request h[3], empty = {NULL, 0};
    dbpool_lease hold;

    memset(r, 0, sizeof r);
    assert_int_equal(dbpool_checkout(p, 1000, &hold), 0);
    submit(p, cq, 30000, &r[0], &h[0]);
    submit(p, cq, 30000, &r[1], &h[1]);
    assert_int_equal(itp_stats(p).waiting, 2);

    assert_int_equal(dbpool_checkout_cancel(&h[0]), 0);
    assert_int_equal(itp_stats(p).waiting, 1);
    assert_int_equal(dbpool_checkout_cancel(&h[0]), DBPOOL_ESTALE);
    assert_int_equal(dbpool_checkout_cancel(NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_checkout_cancel(&empty), DBPOOL_EINVAL);

    r[1].keep = 1;
    assert_int_equal(dbpool_checkin(&hold), 0);
    assert_true(run_all(cq, &r[1], 1, 10000));
    assert_int_equal(r[0].calls, 0);
    assert_int_equal(r[1].calls, 1);
    assert_int_equal(r[1].status, 0);
    assert_int_equal(dbpool_checkout_cancel(&h[1]), DBPOOL_ESTALE); /* ran already */
    assert_int_equal(dbpool_checkin(&r[1].lease), 0);

    /* handed a connection at once, completion not run yet: cancel returns it */
    assert_true(itp_wait_stats(p, idle_is, 1, 5000));
    submit(p, cq, 30000, &r[2], &h[2]);
    assert_true(cq_readable(cq));
    assert_int_equal(itp_stats(p).busy, 1);
    assert_int_equal(dbpool_checkout_cancel(&h[2]), 0);
    assert_false(cq_readable(cq));
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.idle, 1);
    assert_int_equal(dbpool_cq_run(cq, 0), 0);
    assert_int_equal(r[2].calls, 0);
    assert_int_equal(r[0].calls, 0);

    /* the handles of finished requests stay stale when their memory is reused */
    struct rec again;
    memset(&again, 0, sizeof again);
    submit(p, cq, 30000, &again, NULL);
    assert_int_equal(dbpool_checkout_cancel(&h[0]), DBPOOL_ESTALE);
    assert_int_equal(dbpool_checkout_cancel(&h[2]), DBPOOL_ESTALE);
    assert_true(run_all(cq, &again, 1, 10000));
    assert_int_equal(again.status, 0);
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(itp_close(p), 0);
}

/* Under overload (nothing comes back for several intervals) CoDel drops
 * async requests like blocking ones: each gets DBPOOL_EDROPPED once. */
static void test_async_codel_drops(void **state)
{
    (void)state;
    enum { N = 20 };
    dbpool_config cfg = quiet_config(1);
    cfg.queue_target = 20;
    cfg.queue_interval = 100;
    dbpool *p = open_connected("as_drops", &cfg);
    dbpool_cq *cq = new_cq();
    struct rec r[N];
    dbpool_lease hold;

    memset(r, 0, sizeof r);
    assert_int_equal(dbpool_checkout(p, 1000, &hold), 0);
    uint64_t drops = itp_stats(p).drops;
    for (int i = 0; i < N; i++)
        submit(p, cq, 60000, &r[i], NULL);
    assert_true(run_all(cq, r, N, 20000));
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, DBPOOL_EDROPPED);
        assert_false(r[i].wrong_thread);
        assert_non_null(strstr(r[i].err, "request was dropped from queue after"));
    }
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.drops - drops, N);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(dbpool_checkin(&hold), 0);
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(itp_close(p), 0);
}

/* While the database is down: pending requests fail when the pool goes
 * DOWN, and a new request fails at once (its completion is posted before
 * dbpool_checkout_async returns) with the cached reason. Back up: served. */
static dbpool *open_via_relay(const char *app, const dbpool_config *cfg)
{
    char ci[512];
    dbpool *p = NULL;

    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres "
             "application_name=%s",
             relay_port(g_relay), app);
    int rc = dbpool_pg_open(&p, ci, cfg);
    if (rc != 0)
        fail_msg("dbpool_pg_open(%s): %d %s", app, rc, dbpool_last_error());
    itp_track(p);
    return p;
}

static void test_async_fail_fast_while_down(void **state)
{
    (void)state;
    dbpool_config cfg = quiet_config(1);
    cfg.backoff_min = 50;
    cfg.backoff_max = 200;
    cfg.probe_interval = 50;
    assert_int_equal(relay_set_mode(g_relay, RELAY_PASS), 0);
    dbpool *p = open_via_relay("as_down", &cfg);
    dbpool_cq *cq = new_cq();
    struct rec r[3];
    dbpool_lease hold;

    memset(r, 0, sizeof r);
    assert_int_equal(dbpool_checkout(p, 10000, &hold), 0);
    submit(p, cq, 30000, &r[0], NULL); /* pending when the database goes */
    assert_int_equal(relay_set_mode(g_relay, RELAY_REFUSE), 0);
    assert_int_equal(relay_reset_all(g_relay), 0);
    assert_int_equal(dbpool_discard(&hold), 0); /* the pool has nothing left */
    assert_true(run_all(cq, r, 1, 10000));
    assert_int_equal(r[0].status, DBPOOL_EUNAVAILABLE);
    assert_non_null(strstr(r[0].err, "is down"));
    assert_true(itp_wait_stats(p, state_is, DBPOOL_STATE_DOWN, 10000));

    submit(p, cq, 30000, &r[1], NULL);
    assert_true(cq_readable(cq)); /* decided within the call */
    assert_int_equal(itp_stats(p).waiting, 0);
    assert_int_equal(dbpool_cq_run(cq, 0), 1);
    assert_int_equal(r[1].calls, 1);
    assert_int_equal(r[1].status, DBPOOL_EUNAVAILABLE);
    assert_non_null(strstr(r[1].err, "is down"));

    assert_int_equal(relay_set_mode(g_relay, RELAY_PASS), 0);
    assert_true(itp_wait_stats(p, state_is, DBPOOL_STATE_UP, 10000));
    submit(p, cq, 30000, &r[2], NULL);
    assert_true(run_all(cq, &r[2], 1, 10000));
    assert_int_equal(r[2].status, 0);
    assert_true(r[2].query_ok);
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(itp_close(p), 0);
}

/* Closing a pool with requests pending completes each of them exactly once
 * with DBPOOL_ECLOSED, from the queue (never inside dbpool_close). The pool's
 * memory stays until the last of them ran (ASan checks that). */
static void test_async_close_with_pending(void **state)
{
    (void)state;
    enum { N = 10 };
    dbpool_config cfg = quiet_config(1);
    dbpool *p = open_connected("as_close", &cfg);
    dbpool_cq *cq = new_cq();
    struct rec r[N];
    dbpool_lease hold;

    memset(r, 0, sizeof r);
    assert_int_equal(dbpool_checkout(p, 1000, &hold), 0);
    for (int i = 0; i < N; i++)
        submit(p, cq, 30000, &r[i], NULL);
    itp_untrack(p);
    assert_int_equal(dbpool_close(p), DBPOOL_EBUSY); /* the lease is out */
    for (int i = 0; i < N; i++)
        assert_int_equal(r[i].calls, 0);
    assert_int_equal(dbpool_cq_free(cq), DBPOOL_EBUSY); /* not run yet */
    assert_true(cq_readable(cq));
    assert_int_equal(dbpool_cq_run(cq, 0), N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, DBPOOL_ECLOSED);
        assert_non_null(strstr(r[i].err, "closed"));
    }
    assert_int_equal(dbpool_cq_run(cq, 0), 0);
    assert_int_equal(dbpool_checkin(&hold), 0); /* the last holder: pool freed */

    /* no lease out, nothing ever connected (black hole): the completions are
     * all that keeps the closed pool's memory */
    assert_int_equal(relay_set_mode(g_relay, RELAY_BLACKHOLE), 0);
    dbpool_config cfg2 = quiet_config(2);
    cfg2.connect_timeout = 60000;
    dbpool *q = open_via_relay("as_close_bh", &cfg2);
    for (int i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof r[i]);
        submit(q, cq, 30000, &r[i], NULL);
    }
    assert_int_equal(itp_stats(q).waiting, N);
    itp_untrack(q);
    assert_int_equal(dbpool_close(q), 0);
    assert_int_equal(dbpool_cq_run(cq, 3), 3);
    assert_int_equal(dbpool_cq_run(cq, 0), N - 3);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, DBPOOL_ECLOSED);
    }
    assert_int_equal(relay_set_mode(g_relay, RELAY_PASS), 0);
    assert_int_equal(dbpool_cq_free(cq), 0);
}

/* Connections reach async requests from other threads (a thread checking in,
 * the manager bringing a new connection); callbacks still run only on the
 * thread that calls dbpool_cq_run. */
struct churner {
    dbpool *p;
    int n, fails;
};

static void *churner_main(void *arg)
{
    struct churner *c = arg;
    for (int i = 0; i < c->n; i++) {
        dbpool_lease l;
        if (dbpool_checkout(c->p, 30000, &l) != 0 || !itp_select1(&l) || dbpool_checkin(&l) != 0)
            c->fails++;
    }
    return NULL;
}

static void test_async_callbacks_on_loop_thread(void **state)
{
    (void)state;
    enum { N = 200 };
    dbpool_config cfg = quiet_config(2);
    cfg.min_size = 0; /* the manager hands over new connections too */
    dbpool *p = itp_open(&srv, "as_thread", &cfg);
    dbpool_cq *cq = new_cq();
    struct rec *r = calloc(N, sizeof *r);
    struct churner c = {p, N, 0};

    assert_non_null(r);
    for (int i = 0; i < N / 2; i++)
        submit(p, cq, 60000, &r[i], NULL);
    pthread_t t = itp_thr_start(churner_main, &c);
    for (int i = N / 2; i < N; i++)
        submit(p, cq, 60000, &r[i], NULL);
    assert_true(run_all(cq, r, N, 60000));
    assert_int_equal(itp_thr_join(t, 60000), 0);
    assert_int_equal(c.fails, 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        assert_false(r[i].wrong_thread);
        assert_true(r[i].query_ok);
    }
    free(r);
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(itp_close(p), 0);
}

/* A connection the server closed while it idled is found dead on the loop
 * thread before the callback (alive_check), replaced, and the request waits
 * for the replacement: the callback only ever sees a working connection. */
static void test_async_dead_idle_connection_replaced(void **state)
{
    (void)state;
    dbpool_config cfg = quiet_config(1);
    cfg.alive_check = 1;
    dbpool *p = open_connected("as_dead", &cfg);
    dbpool_cq *cq = new_cq();
    struct rec r;

    memset(&r, 0, sizeof r);
    assert_true(itp_wait_backends(&srv, "as_dead", 1, 5000));
    uint64_t disconnects = itp_stats(p).disconnects;
    assert_int_equal(pgt_terminate(&srv, "as_dead"), 1);
    assert_true(itp_wait_backends(&srv, "as_dead", 0, 5000));
    submit(p, cq, 30000, &r, NULL);
    assert_true(run_all(cq, &r, 1, 20000));
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_true(r.query_ok);
    assert_true(itp_stats(p).disconnects > disconnects);
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(itp_close(p), 0);
}

/* Callbacks may submit and cancel on their own queue; one dbpool_cq_run()
 * runs at most `max`, and never what became ready during the call, so the
 * fd stays readable for the rest. */
struct chain {
    dbpool *p;
    dbpool_cq *cq;
    int hops;              /* callbacks seen */
    int target;            /* resubmit until this many */
    int cancel_rc;         /* what cancelling `victim` from a callback returned */
    int self_cancel_rc;    /* what cancelling its own handle returned */
    dbpool_request victim; /* a pending request to cancel from a callback */
    dbpool_request self;
};

static void on_chain(void *arg, int status, dbpool_lease lease)
{
    struct chain *c = arg;
    assert_int_equal(status, 0);
    c->hops++;
    c->self_cancel_rc = dbpool_checkout_cancel(&c->self); /* too late: it runs */
    if (c->victim.req) {
        c->cancel_rc = dbpool_checkout_cancel(&c->victim);
        c->victim.req = NULL;
    }
    assert_int_equal(dbpool_checkin(&lease), 0);
    if (c->hops < c->target)
        assert_int_equal(dbpool_checkout_async(c->p, c->cq, 30000, on_chain, c, &c->self), 0);
}

static void test_async_reentrant_callbacks(void **state)
{
    (void)state;
    dbpool_config cfg = quiet_config(2);
    dbpool *p = open_connected("as_reenter", &cfg);
    assert_true(itp_wait_stats(p, idle_is, 2, 10000));
    dbpool_cq *cq = new_cq();
    struct chain c;
    struct rec victim, r[3];
    dbpool_lease hold[2];

    /* a chain that resubmits from its callback: one run, one hop */
    memset(&c, 0, sizeof c);
    c.p = p;
    c.cq = cq;
    c.target = 5;
    assert_int_equal(dbpool_checkout_async(p, cq, 30000, on_chain, &c, &c.self), 0);
    for (int i = 1; i <= c.target; i++) {
        assert_true(cq_readable(cq));
        assert_int_equal(dbpool_cq_run(cq, 0), 1);
        assert_int_equal(c.hops, i);
        assert_int_equal(c.self_cancel_rc, DBPOOL_ESTALE);
    }
    assert_false(cq_readable(cq));

    /* a callback cancels a request still pending behind it */
    memset(&victim, 0, sizeof victim);
    assert_int_equal(dbpool_checkout(p, 1000, &hold[0]), 0);
    assert_int_equal(dbpool_checkout(p, 1000, &hold[1]), 0);
    c.target = c.hops + 1;
    assert_int_equal(dbpool_checkout_async(p, cq, 30000, on_chain, &c, &c.self), 0);
    submit(p, cq, 30000, &victim, &c.victim);
    assert_int_equal(itp_stats(p).waiting, 2);
    assert_int_equal(dbpool_checkin(&hold[0]), 0); /* to the chain */
    struct pollfd pfd = {dbpool_cq_fd(cq), POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    assert_int_equal(dbpool_cq_run(cq, 0), 1);
    assert_int_equal(c.cancel_rc, 0);
    assert_int_equal(itp_stats(p).waiting, 0);
    assert_int_equal(dbpool_checkin(&hold[1]), 0);
    assert_int_equal(dbpool_cq_run(cq, 0), 0);
    assert_int_equal(victim.calls, 0);

    /* max: three ready, run one at a time; the fd stays readable between */
    memset(r, 0, sizeof r);
    assert_true(itp_wait_stats(p, idle_is, 2, 5000));
    for (int i = 0; i < 3; i++)
        submit(p, cq, 0, &r[i], NULL); /* two get a connection, one EBUSY */
    assert_int_equal(dbpool_cq_run(cq, 1), 1);
    assert_true(cq_readable(cq));
    assert_int_equal(dbpool_cq_run(cq, 1), 1);
    assert_true(cq_readable(cq));
    assert_int_equal(dbpool_cq_run(cq, 5), 1);
    assert_false(cq_readable(cq));
    int ok = 0, busy = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        ok += r[i].status == 0;
        busy += r[i].status == DBPOOL_EBUSY;
    }
    assert_int_equal(ok, 2);
    assert_int_equal(busy, 1);
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(itp_close(p), 0);
}

/* A paused pool hands nothing to async requests either (even with a
 * connection idle); resume serves them. DBPOOL_DEFAULT_TIMEOUT is the
 * pool's checkout_timeout. */
static void test_async_pause_and_default_timeout(void **state)
{
    (void)state;
    pgt_sched_reset();
    dbpool_config cfg = quiet_config(1);
    cfg.checkout_timeout = 250;
    dbpool *p = open_connected("as_pause", &cfg);
    dbpool_cq *cq = new_cq();
    struct rec r[2];

    memset(r, 0, sizeof r);
    assert_int_equal(dbpool_pause(p), 0);
    submit(p, cq, 30000, &r[0], NULL);
    assert_false(cq_readable(cq));
    assert_int_equal(itp_stats(p).waiting, 1);
    assert_int_equal(dbpool_resume(p), 0);
    assert_true(run_all(cq, &r[0], 1, 10000));
    assert_int_equal(r[0].status, 0);
    assert_true(r[0].query_ok);

    dbpool_lease hold;
    assert_int_equal(dbpool_checkout(p, 1000, &hold), 0);
    int64_t t0 = pgt_now_ms();
    submit(p, cq, DBPOOL_DEFAULT_TIMEOUT, &r[1], NULL);
    assert_true(run_all(cq, &r[1], 1, 10000));
    assert_int_equal(r[1].status, DBPOOL_ETIMEDOUT);
    assert_true(r[1].at - t0 >= 250);
    assert_true(r[1].at - t0 <= 250 + slack());
    assert_int_equal(dbpool_checkin(&hold), 0);
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(itp_close(p), 0);
}

static dbpool_cq *self_free_cq;
static int self_free_rc;

static void on_free_own_queue(void *arg, int status, dbpool_lease lease)
{
    (void)arg;
    self_free_rc = dbpool_cq_free(self_free_cq);
    if (status == 0)
        assert_int_equal(dbpool_checkin(&lease), 0);
}

/* Bad input gets an error code and a message, never a crash. */
static void test_async_misuse(void **state)
{
    (void)state;
    dbpool_config cfg = quiet_config(1);
    dbpool *p = open_connected("as_misuse", &cfg);
    dbpool_cq *cq = new_cq();
    struct rec r;
    dbpool_request h = {NULL, 7};

    memset(&r, 0, sizeof r);
    assert_int_equal(dbpool_cq_new(NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_cq_fd(NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_cq_run(NULL, 0), DBPOOL_EINVAL);
    assert_int_equal(dbpool_cq_free(NULL), 0);
    assert_int_equal(dbpool_checkout_async(NULL, cq, 10, on_checkout, &r, &h), DBPOOL_EINVAL);
    assert_null(h.req); /* the handle is emptied on failure */
    assert_int_equal(dbpool_checkout_async(p, NULL, 10, on_checkout, &r, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_checkout_async(p, cq, 10, NULL, &r, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_checkout_async(p, cq, -5, on_checkout, &r, NULL), DBPOOL_EINVAL);
    assert_non_null(strstr(dbpool_last_error(), "negative timeout"));
    assert_int_equal(dbpool_cq_run(cq, 0), 0);
    assert_int_equal(r.calls, 0);
    /* freeing the queue from one of its own callbacks is refused */
    self_free_cq = cq;
    self_free_rc = 1;
    assert_int_equal(dbpool_checkout_async(p, cq, 1000, on_free_own_queue, NULL, NULL), 0);
    struct pollfd pfd = {dbpool_cq_fd(cq), POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    assert_int_equal(dbpool_cq_run(cq, 0), 1);
    assert_int_equal(self_free_rc, DBPOOL_EBUSY);
    assert_int_equal(dbpool_cq_free(cq), 0);
    assert_int_equal(itp_close(p), 0);
}

static int group_setup(void **state)
{
    (void)state;
    loop_thread = pthread_self();
    if (getenv("TSAN_OPTIONS") || getenv("ASAN_OPTIONS"))
        SLACK_MS = 150;
    if (pgt_sched_start() != 0)
        return -1;
    if (pgt_start(&srv) != 0)
        return -1;
    return relay_start(&g_relay, "127.0.0.1", srv.port) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    itp_close_all();
    if (g_relay && !itp_hung())
        relay_stop(g_relay);
    g_relay = NULL;
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_async_misuse),
        cmocka_unit_test(test_async_thousand_in_flight),
        cmocka_unit_test(test_async_fifo_mixed_strict),
        cmocka_unit_test(test_async_fifo_mixed_barging),
        cmocka_unit_test(test_async_fifo_mixed_loop_lease),
        cmocka_unit_test(test_async_head_gets_strict_handover),
        cmocka_unit_test(test_async_same_loop_served_in_window),
        cmocka_unit_test(test_async_other_loop_not_bypassed_past_window),
        cmocka_unit_test(test_async_same_loop_off_with_zero_window),
        cmocka_unit_test(test_async_timeout),
        cmocka_unit_test(test_async_cancel),
        cmocka_unit_test(test_async_codel_drops),
        cmocka_unit_test(test_async_callbacks_on_loop_thread),
        cmocka_unit_test(test_async_dead_idle_connection_replaced),
        cmocka_unit_test(test_async_reentrant_callbacks),
        cmocka_unit_test(test_async_pause_and_default_timeout),
        cmocka_unit_test(test_async_close_with_pending),
        cmocka_unit_test(test_async_fail_fast_while_down),
    };
    return cmocka_run_group_tests_name("it_async", tests, group_setup, group_teardown);
}
