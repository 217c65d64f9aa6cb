/* unit_queue.c - the checkout wait queue and its CoDel rule (docs/pool.md, "The checkout queue",
 * mirroring DBConnection.ConnectionPool), on an injected clock. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dbpool.h"
#include "queue.h"

#define TARGET 50
#define INTERVAL 1000

/* ---- helpers ----------------------------------------------------------- */

/* A checkout that found nothing idle: queue the waiter and mark busy, as the
 * pool does. The waiter's condvar is never touched by the queue code. */
static void enqueue(struct codel *c, struct wqueue *q, struct waiter *w, int64_t sent)
{
    memset(w, 0, sizeof *w);
    w->sent = sent;
    w->status = 1;
    wq_push(q, w);
    codel_mark_busy(c);
}

static struct waiter *checkin(struct codel *c, struct wqueue *q, int64_t now,
                              struct waiter **dropped)
{
    *dropped = NULL;
    return codel_checkin(c, q, now, dropped);
}

static void poll_at(struct codel *c, struct wqueue *q, int64_t now, struct waiter **dropped)
{
    *dropped = NULL;
    codel_poll(c, q, now, dropped);
}

static int chain_len(const struct waiter *d)
{
    int n = 0;

    for (; d; d = d->dropped_next)
        n++;
    return n;
}

static int in_chain(const struct waiter *d, const struct waiter *w)
{
    for (; d; d = d->dropped_next)
        if (d == w)
            return 1;
    return 0;
}

static int in_queue(const struct wqueue *q, const struct waiter *w)
{
    const struct waiter *x;

    for (x = wq_first(q); x; x = wq_next(q, x))
        if (x == w)
            return 1;
    return 0;
}

/* Walk the list both ways and check the count. */
static void check_queue(const struct wqueue *q)
{
    const struct waiter *x, *prev = NULL;
    int n = 0;

    for (x = wq_first(q); x; x = wq_next(q, x)) {
        assert_ptr_equal(x->link.prev, prev ? &prev->link : &q->list.node);
        prev = x;
        n++;
    }
    assert_ptr_equal(wq_last(q), prev);
    assert_int_equal(q->n, n);
}

static void assert_dropped(const struct waiter *d, const struct waiter *w, int64_t waited)
{
    assert_true(in_chain(d, w));
    assert_int_equal(w->status, DBPOOL_EDROPPED);
    assert_int_equal(w->waited, waited);
}

/* ---- the list ---------------------------------------------------------- */

static void test_wq_push_remove(void **state)
{
    struct wqueue q;
    struct waiter w[4];
    int i;

    (void)state;
    wq_init(&q);
    memset(w, 0, sizeof w);
    for (i = 0; i < 4; i++)
        wq_push(&q, &w[i]);
    check_queue(&q);
    assert_ptr_equal(wq_first(&q), &w[0]);
    assert_ptr_equal(wq_last(&q), &w[3]);

    wq_remove(&q, &w[1]); /* middle */
    check_queue(&q);
    assert_ptr_equal(wq_next(&q, wq_first(&q)), &w[2]);
    wq_remove(&q, &w[0]); /* head */
    check_queue(&q);
    assert_ptr_equal(wq_first(&q), &w[2]);
    wq_remove(&q, &w[3]); /* tail */
    check_queue(&q);
    assert_ptr_equal(wq_last(&q), &w[2]);
    wq_remove(&q, &w[2]); /* last */
    check_queue(&q);
    assert_null(wq_first(&q));
    assert_null(wq_last(&q));
    assert_int_equal(q.n, 0);

    wq_push(&q, &w[1]); /* reusable after emptying */
    check_queue(&q);
    assert_ptr_equal(wq_first(&q), &w[1]);
}

/* ---- codel_init / not busy --------------------------------------------- */

static void test_init(void **state)
{
    struct codel c;

    (void)state;
    codel_init(&c, TARGET, INTERVAL, 5000);
    assert_int_equal(c.target, TARGET);
    assert_int_equal(c.interval, INTERVAL);
    assert_int_equal(c.delay, 0);
    assert_int_equal(c.next, 5000);
    assert_false(c.slow);
    assert_false(c.busy);
    assert_int_equal(c.poll_at, 5000 + INTERVAL);
}

static void test_checkin_not_busy(void **state)
{
    struct codel c, before;
    struct wqueue q;
    struct waiter *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    c.delay = 70; /* arbitrary state that must survive */
    c.slow = 1;
    before = c;
    assert_null(checkin(&c, &q, 5000, &d)); /* well past next: still untouched */
    assert_null(d);
    assert_memory_equal(&c, &before, sizeof c);
    assert_int_equal(q.n, 0);
}

/* ---- hand-over --------------------------------------------------------- */

static void test_fifo_handover(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter w[5], *d;
    int i;

    (void)state;
    wq_init(&q);
    codel_init(&c, 1000000, INTERVAL, 0); /* huge target: never slow */
    for (i = 0; i < 5; i++)
        enqueue(&c, &q, &w[i], i);
    assert_true(c.busy);
    for (i = 0; i < 5; i++) {
        struct waiter *got = checkin(&c, &q, 10 + 700 * i, &d);

        assert_ptr_equal(got, &w[i]);
        assert_null(d);
        assert_false(in_queue(&q, got));
        assert_int_equal(q.n, 4 - i);
        check_queue(&q);
    }
    /* Still busy until a check-in finds the queue empty. */
    assert_true(c.busy);
    assert_null(checkin(&c, &q, 3000, &d));
    assert_null(d);
    assert_false(c.busy);
    assert_int_equal(c.delay, 0);
}

/* A busy check-in that finds nobody waiting goes idle (fast path). */
static void test_empty_queue_fast(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter w, *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    enqueue(&c, &q, &w, 0);
    assert_ptr_equal(checkin(&c, &q, 30, &d), &w); /* boundary: next = 1030 */
    assert_int_equal(c.delay, 30);
    assert_null(checkin(&c, &q, 40, &d));
    assert_false(c.busy);
    assert_int_equal(c.delay, 0);
    assert_false(c.slow);
    assert_int_equal(c.next, 1030);
}

/* A busy check-in at an interval boundary with nobody waiting goes idle with
 * delay 0. As DBConnection's dequeue_first, it still closes the interval:
 * slow = (delay > target) and next = now + interval. */
static void test_empty_queue_boundary(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter w, *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    enqueue(&c, &q, &w, 0);
    assert_ptr_equal(checkin(&c, &q, 30, &d), &w);
    assert_null(checkin(&c, &q, 2000, &d));
    assert_null(d);
    assert_false(c.busy);
    assert_int_equal(c.delay, 0);
    assert_false(c.slow);
    assert_int_equal(c.next, 3000);

    /* Same with an interval whose min delay was above target. */
    enqueue(&c, &q, &w, 2900);
    assert_ptr_equal(checkin(&c, &q, 3200, &d), &w); /* boundary, delay 300 */
    assert_false(c.slow);
    assert_null(checkin(&c, &q, 4300, &d));
    assert_false(c.busy);
    assert_int_equal(c.delay, 0);
    assert_true(c.slow);
    assert_int_equal(c.next, 5300);
    /* The next busy period's first boundary clears it (delay 0 <= target). */
    enqueue(&c, &q, &w, 5400);
    assert_ptr_equal(checkin(&c, &q, 5600, &d), &w);
    assert_false(c.slow);
}

/* ---- interval boundary ------------------------------------------------- */

/*
 * At now >= next: slow = (min delay of the ending interval > target), next =
 * now + interval, and the oldest waiter gets the connection whatever its age,
 * its wait becoming the new delay.
 */
static void test_boundary_sets_slow(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter w[4], *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    enqueue(&c, &q, &w[0], 0);
    enqueue(&c, &q, &w[1], 100);

    assert_ptr_equal(checkin(&c, &q, 200, &d), &w[0]); /* boundary (next = 0) */
    assert_null(d);
    assert_false(c.slow); /* delay was 0 */
    assert_int_equal(c.next, 1200);
    assert_int_equal(c.delay, 200);

    assert_ptr_equal(checkin(&c, &q, 300, &d), &w[1]); /* fast: not slow */
    assert_null(d);
    assert_int_equal(c.delay, 200); /* min(200, 200) */
    assert_int_equal(c.next, 1200);

    enqueue(&c, &q, &w[2], 400);
    enqueue(&c, &q, &w[3], 500);
    /* Boundary: the interval's min delay 200 > 50 -> slow. w[2] waited 800,
     * far above 2*target, but the first waiter at a boundary is never dropped. */
    assert_ptr_equal(checkin(&c, &q, 1200, &d), &w[2]);
    assert_null(d);
    assert_true(c.slow);
    assert_int_equal(c.next, 2200);
    assert_int_equal(c.delay, 800);

    /* Slow now: w[3] waited 750 > 100 -> dropped; queue empty -> idle. */
    assert_null(checkin(&c, &q, 1250, &d));
    assert_int_equal(chain_len(d), 1);
    assert_dropped(d, &w[3], 750);
    assert_int_equal(q.n, 0);
    assert_false(c.busy);
    assert_int_equal(c.delay, 0);
}

/* delay == target is not "above target": slow stays false. Then a boundary
 * with delay just above target turns slow on, and one with a small delay turns
 * it off again. */
static void test_boundary_threshold(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter w[6], *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    enqueue(&c, &q, &w[0], 0);
    assert_ptr_equal(checkin(&c, &q, TARGET, &d), &w[0]); /* delay = 50 */
    enqueue(&c, &q, &w[1], 1000);
    assert_ptr_equal(checkin(&c, &q, 1100, &d), &w[1]); /* boundary at 1050 passed */
    assert_false(c.slow);
    assert_int_equal(c.delay, 100);
    assert_int_equal(c.next, 2100);

    enqueue(&c, &q, &w[2], 2050);
    assert_ptr_equal(checkin(&c, &q, 2100, &d), &w[2]); /* boundary: 100 > 50 */
    assert_true(c.slow);
    assert_int_equal(c.delay, 50);
    assert_int_equal(c.next, 3100);

    enqueue(&c, &q, &w[3], 3000);
    assert_ptr_equal(checkin(&c, &q, 3100, &d), &w[3]); /* boundary: 50 !> 50 */
    assert_false(c.slow);
    assert_int_equal(c.delay, 100);
}

/* ---- slow mode --------------------------------------------------------- */

/* Slow: waiters that waited more than 2*target are dropped, oldest first, and
 * the first young one gets the connection. Exactly 2*target is not dropped. */
static void test_slow_drops_old(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter w[5], *d, *got;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    enqueue(&c, &q, &w[0], 0);
    enqueue(&c, &q, &w[1], 10);
    enqueue(&c, &q, &w[2], 899);
    enqueue(&c, &q, &w[3], 900); /* waits exactly 2*target at 1000 */
    enqueue(&c, &q, &w[4], 950);
    c.slow = 1;
    c.next = 5000;
    c.delay = 80;

    got = checkin(&c, &q, 1000, &d);
    assert_ptr_equal(got, &w[3]);
    assert_int_equal(chain_len(d), 3);
    assert_dropped(d, &w[0], 1000);
    assert_dropped(d, &w[1], 990);
    assert_dropped(d, &w[2], 101);
    assert_false(in_queue(&q, &w[0]));
    assert_false(in_queue(&q, &w[1]));
    assert_false(in_queue(&q, &w[2]));
    assert_false(in_queue(&q, &w[3]));
    assert_int_equal(q.n, 1);
    assert_ptr_equal(wq_first(&q), &w[4]);
    check_queue(&q);
    assert_true(c.busy);
    assert_true(c.slow);
    assert_int_equal(c.next, 5000);
    assert_int_equal(c.delay, 80); /* min(80, 100) */

    got = checkin(&c, &q, 1010, &d);
    assert_ptr_equal(got, &w[4]);
    assert_null(d);
    assert_int_equal(c.delay, 60);
}

static void test_slow_all_dropped(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter w[3], *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    enqueue(&c, &q, &w[0], 0);
    enqueue(&c, &q, &w[1], 100);
    enqueue(&c, &q, &w[2], 200);
    c.slow = 1;
    c.next = 5000;
    c.delay = 80;

    assert_null(checkin(&c, &q, 1000, &d));
    assert_int_equal(chain_len(d), 3);
    assert_dropped(d, &w[0], 1000);
    assert_dropped(d, &w[1], 900);
    assert_dropped(d, &w[2], 800);
    assert_int_equal(q.n, 0);
    assert_null(wq_first(&q));
    assert_null(wq_last(&q));
    assert_false(c.busy);
    assert_int_equal(c.delay, 0);
}

/* Not slow: nobody is dropped at a check-in however long they waited. */
static void test_not_slow_never_drops(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter w[3], *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    enqueue(&c, &q, &w[0], 0);
    enqueue(&c, &q, &w[1], 0);
    enqueue(&c, &q, &w[2], 0);
    c.next = 100000;
    assert_ptr_equal(checkin(&c, &q, 50000, &d), &w[0]);
    assert_null(d);
    assert_ptr_equal(checkin(&c, &q, 60000, &d), &w[1]);
    assert_null(d);
    assert_ptr_equal(checkin(&c, &q, 70000, &d), &w[2]);
    assert_null(d);
}

/* delay is the minimum wait observed since the interval boundary. */
static void test_delay_tracks_min(void **state)
{
    static const int64_t waits[] = {300, 400, 100, 200, 150, 90, 500};
    struct codel c;
    struct wqueue q;
    struct waiter w[8], *d;
    int64_t now = 0, min = 500;
    size_t i;

    (void)state;
    wq_init(&q);
    codel_init(&c, 1000000, 100000, 0); /* never slow, long interval */
    enqueue(&c, &q, &w[7], 0);
    assert_ptr_equal(checkin(&c, &q, 500, &d), &w[7]); /* boundary: delay = 500 */
    assert_int_equal(c.delay, 500);
    for (i = 0; i < sizeof waits / sizeof waits[0]; i++) {
        now += 1000;
        enqueue(&c, &q, &w[i], now - waits[i]);
        assert_ptr_equal(checkin(&c, &q, now, &d), &w[i]);
        if (waits[i] < min)
            min = waits[i];
        assert_int_equal(c.delay, min);
    }
    /* A new interval starts from the boundary hand-over's wait, even if larger. */
    enqueue(&c, &q, &w[0], 100500);
    assert_ptr_equal(checkin(&c, &q, 101000, &d), &w[0]);
    assert_int_equal(c.delay, 500);
    assert_int_equal(c.next, 201000);
}

/* ---- codel_poll -------------------------------------------------------- */

static void test_poll_empty(void **state)
{
    struct codel c, before;
    struct wqueue q;
    struct waiter *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    before = c;
    poll_at(&c, &q, 1000, &d);
    assert_null(d);
    assert_int_equal(c.poll_at, 2000);
    assert_int_equal(c.slow, before.slow);
    assert_int_equal(c.delay, before.delay);
    assert_int_equal(c.next, before.next);
    assert_int_equal(c.busy, before.busy);
}

/* Progress since the last poll (the oldest waiter is newer than the oldest at
 * the previous poll): no drop, no change besides the schedule. */
static void test_poll_progress_no_drop(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter w[3], *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    enqueue(&c, &q, &w[0], 100);
    enqueue(&c, &q, &w[1], 200);
    c.delay = 500;             /* above target, boundary passed: would drop if no progress */
    poll_at(&c, &q, 1000, &d); /* previous "oldest" is the init time 0 */
    assert_null(d);
    assert_int_equal(q.n, 2);
    assert_false(c.slow);
    assert_int_equal(c.delay, 500);
    assert_int_equal(c.next, 0);
    assert_int_equal(c.poll_at, 2000);

    /* w[0] served between polls: the oldest is now w[1] (sent 200 > 100). */
    assert_ptr_equal(checkin(&c, &q, 1500, &d), &w[0]);
    enqueue(&c, &q, &w[2], 1600);
    c.delay = 500;
    c.next = 0;
    poll_at(&c, &q, 2000, &d);
    assert_null(d);
    assert_int_equal(q.n, 2);
    assert_int_equal(c.poll_at, 3000);
}

/* No progress for a whole interval and min delay > target at/after the
 * boundary: slow, delay = oldest's wait, new interval, and every waiter with
 * sent < now - 2*target is dropped. */
static void test_poll_no_progress_drops(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter a, w[4], *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    enqueue(&c, &q, &a, 0);
    assert_ptr_equal(checkin(&c, &q, 200, &d), &a); /* delay 200, next 1200 */
    enqueue(&c, &q, &w[0], 300);
    enqueue(&c, &q, &w[1], 500);
    enqueue(&c, &q, &w[2], 1900); /* exactly now - 2*target at 2000: kept */
    enqueue(&c, &q, &w[3], 1950);

    poll_at(&c, &q, 1000, &d); /* 300 > 0: progress */
    assert_null(d);
    assert_int_equal(q.n, 4);

    poll_at(&c, &q, 2000, &d); /* oldest still 300: no progress */
    assert_int_equal(chain_len(d), 2);
    assert_dropped(d, &w[0], 1700);
    assert_dropped(d, &w[1], 1500);
    assert_int_equal(q.n, 2);
    assert_ptr_equal(wq_first(&q), &w[2]);
    check_queue(&q);
    assert_int_equal(w[2].status, 1);
    assert_int_equal(w[3].status, 1);
    assert_true(c.slow);
    assert_int_equal(c.delay, 1700);
    assert_int_equal(c.next, 3000);
    assert_int_equal(c.poll_at, 3000);
    assert_true(c.busy);
}

/* No progress, boundary passed, but min delay <= target: slow is cleared and a
 * new interval starts with delay = oldest's wait; nobody is dropped. */
static void test_poll_no_progress_not_slow(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter a, w[2], *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    enqueue(&c, &q, &a, 0);
    assert_ptr_equal(checkin(&c, &q, 20, &d), &a); /* delay 20, next 1020 */
    enqueue(&c, &q, &w[0], 300);
    enqueue(&c, &q, &w[1], 400);
    c.slow = 1; /* to see it cleared */
    poll_at(&c, &q, 1000, &d);
    assert_null(d);
    poll_at(&c, &q, 2000, &d);
    assert_null(d);
    assert_int_equal(q.n, 2);
    assert_false(c.slow);
    assert_int_equal(c.delay, 1700);
    assert_int_equal(c.next, 3000);
    assert_int_equal(c.poll_at, 3000);
}

/* No progress but the interval has not ended (now < next): nothing changes
 * besides the poll schedule. */
static void test_poll_no_progress_before_next(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter w, *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    enqueue(&c, &q, &w, 300);
    c.delay = 500;
    poll_at(&c, &q, 1000, &d); /* progress: remembers 300 */
    assert_null(d);
    c.next = 2500;
    poll_at(&c, &q, 2000, &d);
    assert_null(d);
    assert_int_equal(q.n, 1);
    assert_false(c.slow);
    assert_int_equal(c.delay, 500);
    assert_int_equal(c.next, 2500);
    assert_int_equal(c.poll_at, 3000);
    /* The next poll, past the boundary, drops. */
    poll_at(&c, &q, 3000, &d);
    assert_int_equal(chain_len(d), 1);
    assert_dropped(d, &w, 2700);
    assert_true(c.slow);
    assert_int_equal(q.n, 0);
}

/* A waiter that arrived after an empty poll counts as progress at the next
 * poll; one more poll without progress drops it. */
static void test_poll_after_empty_poll(void **state)
{
    struct codel c;
    struct wqueue q;
    struct waiter w, *d;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    c.delay = 500;
    poll_at(&c, &q, 1000, &d);
    enqueue(&c, &q, &w, 1500);
    poll_at(&c, &q, 2000, &d);
    assert_null(d);
    assert_int_equal(q.n, 1);
    poll_at(&c, &q, 3000, &d);
    assert_int_equal(chain_len(d), 1);
    assert_dropped(d, &w, 1500);
}

/* ---- scenario ---------------------------------------------------------- */

#define NW 2000

/*
 * One connection, service time 30 ms, a request every 10 ms for 5 s (3x
 * overload), then nothing. Invariants: the connection is never idle while
 * someone waits; every dropped waiter waited more than 2*target; the queue
 * stays short (CoDel sheds load instead of letting waits grow); the queue
 * drains after the load stops. Then a lone waiter after the idle period is
 * served (the stale slow flag does not drop it) and slow returns to false.
 */
static void test_scenario_overload(void **state)
{
    static struct waiter w[NW];
    struct codel c;
    struct wqueue q;
    struct waiter *holder = NULL, *d, *x;
    int busy_conn = 0, nw = 0, served = 0, dropped = 0, max_q = 0, i;
    int64_t now, free_at = 0, load_end = 5000;
    int64_t last_drop = -1;

    (void)state;
    wq_init(&q);
    codel_init(&c, TARGET, INTERVAL, 0);
    for (now = 0; now < 20000; now++) {
        /* Check-in of the running request. */
        if (busy_conn && now == free_at) {
            holder = checkin(&c, &q, now, &d);
            for (x = d; x; x = x->dropped_next) {
                assert_int_equal(x->status, DBPOOL_EDROPPED);
                assert_true(x->waited > 2 * TARGET);
                assert_int_equal(x->waited, now - x->sent);
                dropped++;
                last_drop = now;
            }
            if (holder) {
                holder->status = 0;
                served++;
                free_at = now + 30;
            } else {
                busy_conn = 0;
                assert_int_equal(q.n, 0); /* never idle while someone waits */
            }
        }
        /* A new request. */
        if (now < load_end && now % 10 == 0) {
            assert_true(nw < NW);
            if (!busy_conn) {
                assert_int_equal(q.n, 0);
                busy_conn = 1; /* takes the idle connection */
                free_at = now + 30;
                served++;
                nw++;
            } else {
                enqueue(&c, &q, &w[nw++], now);
            }
        }
        if (now >= c.poll_at) {
            poll_at(&c, &q, now, &d);
            for (x = d; x; x = x->dropped_next) {
                assert_int_equal(x->status, DBPOOL_EDROPPED);
                assert_true(x->waited > 2 * TARGET);
                dropped++;
                last_drop = now;
            }
            assert_true(c.poll_at > now);
        }
        check_queue(&q);
        if (q.n > max_q)
            max_q = q.n;
        if (q.n > 0)
            assert_true(busy_conn);
    }
    assert_true(dropped > 0);
    assert_true(last_drop < load_end + 2000);
    assert_int_equal(served + dropped, nw);
    /* Without drops the queue would reach ~330 and waits ~10 s. */
    assert_true(max_q < 150);
    assert_true(served > 5000 / 30 - 10); /* the connection stayed busy */
    assert_int_equal(q.n, 0);
    assert_false(busy_conn);
    assert_false(c.busy);
    assert_int_equal(c.delay, 0);
    for (i = 0; i < nw; i++)
        assert_true(w[i].status == 0 || w[i].status == DBPOOL_EDROPPED || w[i].sent == 0);

    /* Later, a short burst: one request holds the connection 150 ms, one waits
     * 150 ms (> 2*target) - the first hand-over after idle is a boundary, so it
     * is served, and slow is recomputed from delay 0 -> false. */
    enqueue(&c, &q, &w[0], 30000);
    assert_ptr_equal(checkin(&c, &q, 30150, &d), &w[0]);
    assert_null(d);
    assert_false(c.slow);
    assert_null(checkin(&c, &q, 30200, &d));
    assert_false(c.busy);
    assert_false(c.slow);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wq_push_remove),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_checkin_not_busy),
        cmocka_unit_test(test_fifo_handover),
        cmocka_unit_test(test_empty_queue_fast),
        cmocka_unit_test(test_empty_queue_boundary),
        cmocka_unit_test(test_boundary_sets_slow),
        cmocka_unit_test(test_boundary_threshold),
        cmocka_unit_test(test_slow_drops_old),
        cmocka_unit_test(test_slow_all_dropped),
        cmocka_unit_test(test_not_slow_never_drops),
        cmocka_unit_test(test_delay_tracks_min),
        cmocka_unit_test(test_poll_empty),
        cmocka_unit_test(test_poll_progress_no_drop),
        cmocka_unit_test(test_poll_no_progress_drops),
        cmocka_unit_test(test_poll_no_progress_not_slow),
        cmocka_unit_test(test_poll_no_progress_before_next),
        cmocka_unit_test(test_poll_after_empty_poll),
        cmocka_unit_test(test_scenario_overload),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
