/* unit_idle.c - the idle-ping tick (docs/pool.md, "Idle pings", with the fix of
 * DBConnection PR #216: the next tick's cutoff is this tick's time). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "idle.h"

#define INTERVAL 1000

/* ---- small model of a pool's idle list -------------------------------- */

struct mconn {
    int64_t last_checkin; /* check-in or last ping */
    int pings;
    int64_t last_ping;    /* tick time of the last ping, -1 none */
    int out;              /* checked out: not on the idle list */
};

/* Index order of the idle list, oldest check-in first (ties: lower index). */
static int order_idle(const struct mconn *c, int n, int *idx)
{
    int k = 0, i, j;

    for (i = 0; i < n; i++)
        if (!c[i].out)
            idx[k++] = i;
    for (i = 1; i < k; i++) { /* insertion sort: stable */
        int v = idx[i];

        for (j = i; j > 0 && c[idx[j - 1]].last_checkin > c[v].last_checkin; j--)
            idx[j] = idx[j - 1];
        idx[j] = v;
    }
    return k;
}

/*
 * One tick at `now` as the pool does it: take the cutoff from idle_advance and
 * walk the idle list oldest first, pinging while idle_due says so. A pinged
 * connection's last_checkin becomes the tick time (the ping succeeds at once).
 * Returns the number of pings; the pinged indexes go to `pinged` if not NULL.
 */
static int tick(struct idle_tick *t, struct mconn *c, int n, int64_t now, int limit, int *pinged)
{
    int idx[64], k, i, np = 0;
    int64_t cutoff;

    assert_true(n <= 64);
    assert_true(now >= t->next);
    cutoff = idle_advance(t, now);
    k = order_idle(c, n, idx);
    for (i = 0; i < k; i++) {
        struct mconn *m = &c[idx[i]];

        if (!idle_due(m->last_checkin, cutoff, np, limit))
            continue;
        if (pinged)
            pinged[np] = idx[i];
        np++;
        m->pings++;
        m->last_ping = now;
        m->last_checkin = now;
    }
    return np;
}

/* ---- idle_init / idle_advance ----------------------------------------- */

static void test_init(void **state)
{
    struct idle_tick t;

    (void)state;
    idle_init(&t, INTERVAL, 5000);
    assert_int_equal(t.interval, INTERVAL);
    assert_int_equal(t.cutoff, 5000);
    assert_int_equal(t.next, 6000);
}

static void test_advance_sequence(void **state)
{
    struct idle_tick t;
    int64_t now;

    (void)state;
    idle_init(&t, INTERVAL, 0);
    /* Each tick's cutoff is the previous tick's time (the first: init time). */
    for (now = 1000; now <= 10000; now += 1000) {
        assert_int_equal(t.next, now);
        assert_int_equal(idle_advance(&t, now), now - 1000);
        assert_int_equal(t.cutoff, now);
        assert_int_equal(t.next, now + 1000);
    }
}

static void test_advance_late_tick(void **state)
{
    struct idle_tick t;

    (void)state;
    idle_init(&t, INTERVAL, 0);
    assert_int_equal(idle_advance(&t, 1000), 0);
    /* The manager was 350 ms late: the cutoff is still the previous tick's
     * actual time, and the schedule restarts from the late tick. */
    assert_int_equal(idle_advance(&t, 2350), 1000);
    assert_int_equal(t.cutoff, 2350);
    assert_int_equal(t.next, 3350);
    assert_int_equal(idle_advance(&t, 3350), 2350);
}

static void test_due(void **state)
{
    (void)state;
    assert_true(idle_due(999, 1000, 0, 10));
    assert_true(idle_due(1000, 1000, 0, 10)); /* at the cutoff: due */
    assert_false(idle_due(1001, 1000, 0, 10));
    assert_true(idle_due(0, 1000, 9, 10));
    assert_false(idle_due(0, 1000, 10, 10)); /* limit reached */
    assert_false(idle_due(0, 1000, 0, 0));
}

/*
 * The PR #216 rule, checked for every check-in time t within a few intervals:
 * the connection is due at the first tick whose cutoff >= t, and that tick is
 * in [t + interval, t + 2*interval).
 */
static void test_cutoff_rule_every_time(void **state)
{
    const int64_t start = 137;
    int64_t t;

    (void)state;
    for (t = start; t < start + 3 * INTERVAL; t++) {
        struct idle_tick tk;
        int64_t now = start, cutoff, due_at = -1;

        idle_init(&tk, INTERVAL, start);
        while (due_at < 0) {
            now = tk.next;
            cutoff = idle_advance(&tk, now);
            if (now < t) /* not checked in yet: this tick cannot see it */
                continue;
            if (idle_due(t, cutoff, 0, 1))
                due_at = now;
            else
                /* Not yet due means the cutoff is before the check-in. */
                assert_true(cutoff < t);
        }
        assert_true(due_at - t >= INTERVAL);
        assert_true(due_at - t < 2 * INTERVAL);
        /* It is the first tick whose cutoff >= t: the previous tick's time. */
        assert_true(due_at - INTERVAL >= t);
        assert_true(due_at - 2 * INTERVAL < t);
    }
}

/* Boundaries: a check-in at a tick's own time (after the tick ran) is pinged
 * exactly one interval later; one just after a tick, 2*interval - 1 later. */
static void test_checkin_at_tick_time(void **state)
{
    struct idle_tick t;
    struct mconn c[1] = {{0, 0, -1, 0}};

    (void)state;
    idle_init(&t, INTERVAL, 0);
    assert_int_equal(tick(&t, c, 1, 1000, 10, NULL), 1); /* checked in at 0 = cutoff */
    c[0].last_checkin = 2000;                              /* used, back at 2000 ... */
    assert_int_equal(tick(&t, c, 1, 2000, 10, NULL), 0);  /* ... after the tick at 2000 */
    assert_int_equal(tick(&t, c, 1, 3000, 10, NULL), 1);  /* pinged one interval later */
    c[0].last_checkin = 3001;
    assert_int_equal(tick(&t, c, 1, 4000, 10, NULL), 0);
    assert_int_equal(tick(&t, c, 1, 5000, 10, NULL), 1);  /* 1999 ms later */
    assert_int_equal(c[0].pings, 3);
}

/* limit 1 staggers: of two connections due at the same tick, one is pinged
 * now and the other at the next tick; then they alternate. */
static void test_limit_staggers(void **state)
{
    struct idle_tick t;
    struct mconn c[2] = {{0, 0, -1, 0}, {0, 0, -1, 0}};
    int p[2];

    (void)state;
    idle_init(&t, INTERVAL, 0);
    assert_int_equal(tick(&t, c, 2, 1000, 1, p), 1);
    assert_int_equal(p[0], 0);
    assert_int_equal(c[1].pings, 0);
    assert_int_equal(tick(&t, c, 2, 2000, 1, p), 1);
    assert_int_equal(p[0], 1); /* the older one (still at 0) goes first */
    assert_int_equal(tick(&t, c, 2, 3000, 1, p), 1);
    assert_int_equal(p[0], 0);
    assert_int_equal(tick(&t, c, 2, 4000, 1, p), 1);
    assert_int_equal(p[0], 1);

    /* With limit 2 both go at once. */
    idle_init(&t, INTERVAL, 0);
    c[0].last_checkin = c[1].last_checkin = 0;
    assert_int_equal(tick(&t, c, 2, 1000, 2, p), 2);
    assert_int_equal(tick(&t, c, 2, 2000, 2, p), 2);
}

/* Oldest first: with limit 2 of 4 due, the two oldest are chosen. */
static void test_limit_oldest_first(void **state)
{
    struct idle_tick t;
    struct mconn c[4] = {{300, 0, -1, 0}, {100, 0, -1, 0}, {400, 0, -1, 0}, {200, 0, -1, 0}};
    int p[4];

    (void)state;
    idle_init(&t, INTERVAL, 0);
    assert_int_equal(tick(&t, c, 4, 1000, 2, p), 0); /* cutoff 0: none */
    assert_int_equal(tick(&t, c, 4, 2000, 2, p), 2); /* cutoff 1000 */
    assert_int_equal(p[0], 1);
    assert_int_equal(p[1], 3);
    assert_int_equal(tick(&t, c, 4, 3000, 2, p), 2);
    assert_int_equal(p[0], 0);
    assert_int_equal(p[1], 2);
}

/* Checked-out connections are not on the idle list and are never pinged. */
static void test_checked_out_not_pinged(void **state)
{
    struct idle_tick t;
    struct mconn c[2] = {{0, 0, -1, 1}, {0, 0, -1, 0}};
    int64_t now;

    (void)state;
    idle_init(&t, INTERVAL, 0);
    for (now = 1000; now <= 5000; now += 1000)
        (void)tick(&t, c, 2, now, 10, NULL);
    assert_int_equal(c[0].pings, 0);
    assert_int_equal(c[1].pings, 5);
}

/*
 * Model run: connections are checked out and back in at random times; ticks
 * run every interval. With limit >= pool size, every idle connection is pinged
 * within [interval, 2*interval) of its last check-in (or last ping), and no
 * idle connection ever goes 2 intervals without one.
 */
static void run_model(unsigned seed, int n, int64_t start)
{
    struct idle_tick t;
    struct mconn c[16];
    int64_t back[16]; /* when a checked-out connection comes back */
    int64_t now, end = start + 200 * INTERVAL;
    int i, total = 0;

    srand(seed);
    memset(c, 0, sizeof c);
    for (i = 0; i < n; i++) {
        c[i].last_checkin = start;
        c[i].last_ping = -1;
        back[i] = -1;
    }
    idle_init(&t, INTERVAL, start);
    for (now = start; now <= end; now++) {
        /* Callers: check-ins due now, and occasional new checkouts. */
        for (i = 0; i < n; i++) {
            if (c[i].out && back[i] == now) {
                c[i].out = 0;
                c[i].last_checkin = now;
            } else if (!c[i].out && rand() % 2500 == 0) {
                c[i].out = 1;
                back[i] = now + 1 + rand() % 300;
            }
        }
        if (now == t.next) {
            int p[16], k, j;
            int64_t before[16];

            for (i = 0; i < n; i++)
                before[i] = c[i].last_checkin;
            k = tick(&t, c, n, now, n, p);
            total += k;
            for (j = 0; j < k; j++) {
                int64_t idle = now - before[p[j]];

                assert_true(idle >= INTERVAL);
                assert_true(idle < 2 * INTERVAL);
                assert_int_equal(c[p[j]].last_checkin, now);
            }
        }
        /* Nobody idle may have waited 2 intervals without a ping. */
        for (i = 0; i < n; i++)
            if (!c[i].out)
                assert_true(now - c[i].last_checkin < 2 * INTERVAL);
    }
    assert_true(total > 0);
}

static void test_model_random(void **state)
{
    unsigned seed;

    (void)state;
    for (seed = 1; seed <= 10; seed++)
        run_model(seed, 8, (int64_t)seed * 37);
}

/* With limit 1 and 3 connections idle from the same time, pings spread one
 * per tick and every connection is still pinged regularly. */
static void test_model_limit_spread(void **state)
{
    struct idle_tick t;
    struct mconn c[3] = {{0, 0, -1, 0}, {0, 0, -1, 0}, {0, 0, -1, 0}};
    int64_t now;
    int i;

    (void)state;
    idle_init(&t, INTERVAL, 0);
    for (now = 1000; now <= 30000; now += 1000)
        assert_int_equal(tick(&t, c, 3, now, 1, NULL), 1);
    for (i = 0; i < 3; i++)
        assert_int_equal(c[i].pings, 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_advance_sequence),
        cmocka_unit_test(test_advance_late_tick),
        cmocka_unit_test(test_due),
        cmocka_unit_test(test_cutoff_rule_every_time),
        cmocka_unit_test(test_checkin_at_tick_time),
        cmocka_unit_test(test_limit_staggers),
        cmocka_unit_test(test_limit_oldest_first),
        cmocka_unit_test(test_checked_out_not_pinged),
        cmocka_unit_test(test_model_random),
        cmocka_unit_test(test_model_limit_spread),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
