/* unit_aimd.c - the registry's adaptive cap (src/tenants/aimd.c) on an injected
 * clock: decrease by the refused share of connects at each look, down to what
 * is held after a refusal, additive increase with demand only, shedding, the
 * next due time, clock edge cases, and two processes drawing together. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "aimd.h"

/* n connects started, r of them refused, in the interval before `now` */
static int look(struct aimd *a, int n, int r, int demand, int open, int64_t now)
{
    for (int i = 0; i < n; i++)
        aimd_connecting(a);
    for (int i = 0; i < r; i++)
        aimd_refused(a, now - 1);
    return aimd_tick(a, demand, open, now);
}

static void test_off_never_moves(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 0, 20, 1, 1000);
    aimd_refused(&a, 5000);
    assert_int_equal(a.cap, 20);
    assert_int_equal(a.refusals, 1); /* counted all the same (stats) */
    assert_int_equal(look(&a, 10, 10, 1, 20, 100000), 0);
    assert_int_equal(a.cap, 20);
    assert_int_equal(aimd_over(&a, 50), 0);
    assert_int_equal(aimd_due(&a, 777, 0), 777);
}

/* The cut is AIMD_GAIN x the averaged share x the level, at most half; the
 * average remembers the previous looks (half each). */
static void test_decrease_by_refused_share(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 1, 20, 1, 1000);
    assert_int_equal(look(&a, 0, 0, 0, 20, 0), 0); /* the first look: nothing seen */
    assert_int_equal(a.cap, 20);
    /* 1 in 100 refused: share 0.005, cut 16 x 0.005 x 20 = 1.6 */
    assert_int_equal(look(&a, 100, 1, 0, 20, 1000), 0);
    assert_int_equal(a.cap, 18);
    assert_int_equal(a.decreases, 1);
    assert_int_equal(a.last_decrease, 1000);
    /* not before the interval is over */
    assert_int_equal(look(&a, 10, 10, 0, 20, 1999), 0);
    assert_int_equal(a.cap, 18);
    /* every connect refused (the 10 above count here): at most half */
    assert_int_equal(look(&a, 0, 0, 0, 20, 2000), 0);
    assert_int_equal(a.cap, 9);
    /* nothing refused since: the average still cuts, less each look */
    double share = a.share;
    assert_int_equal(look(&a, 50, 0, 0, 20, 3000), 0);
    assert_true(a.share < share);
    assert_true(a.cap < 9);
}

/* Refused while holding less than the cap: the cap comes down to what is
 * held; holding nothing, to min (then one step with demand). */
static void test_refused_down_to_held(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 1, 20, 2, 1000);
    assert_int_equal(look(&a, 100, 1, 0, 5, 0), 0);
    assert_int_equal(a.cap, 5);
    assert_int_equal(look(&a, 1, 1, 0, 0, 1000), 0);
    assert_int_equal(a.cap, 2); /* min */
    aimd_init(&a, 1, 20, 1, 1000);
    assert_int_equal(look(&a, 1, 1, 1, 0, 0), 0);
    assert_int_equal(a.cap, 1); /* nothing held: 0, then one step */
}

static void test_increase_needs_interval_and_demand(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 1, 10, 1, 1000);
    assert_int_equal(look(&a, 4, 4, 0, 4, 5000), 0);
    assert_int_equal(a.cap, 4);
    /* forget the refusal: steps only from here */
    a.share = 0;
    assert_int_equal(aimd_tick(&a, 1, 4, 5999), 0); /* one interval after the last look */
    assert_int_equal(aimd_tick(&a, 1, 4, 6000), 1);
    assert_int_equal(a.cap, 5);
    assert_int_equal(aimd_tick(&a, 1, 5, 6500), 0);
    assert_int_equal(aimd_tick(&a, 0, 5, 7000), 0); /* no demand: no step */
    assert_int_equal(a.cap, 5);
    assert_int_equal(aimd_tick(&a, 1, 5, 7999), 0);
    assert_int_equal(aimd_tick(&a, 1, 5, 8000), 1);
    assert_int_equal(a.cap, 6);
    for (int64_t t = 9000; t <= 20000; t += 1000)
        (void)aimd_tick(&a, 1, a.cap, t);
    assert_int_equal(a.cap, 10); /* not above max */
    assert_int_equal(aimd_tick(&a, 1, 10, 21000), 0);
}

static void test_over_and_due(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 1, 10, 1, 1000);
    assert_int_equal(aimd_due(&a, 4000, 0), 1); /* the first look is due */
    assert_int_equal(look(&a, 2, 1, 0, 10, 1000), 0);
    assert_int_equal(a.cap, 5);
    assert_int_equal(aimd_over(&a, 10), 5);
    assert_int_equal(aimd_over(&a, 5), 0);
    assert_true(aimd_over(&a, 2) < 0);
    assert_int_equal(aimd_due(&a, 4000, 1000), 2000); /* the next look comes first */
    assert_int_equal(aimd_due(&a, 1500, 1000), 1500); /* the owner's own is earlier */
    assert_int_equal(aimd_due(&a, 4000, 2500), 2501); /* overdue: soon, not in the past */
}

/* Saturating arithmetic: a huge interval or a clock near INT64_MAX does not
 * wrap the next look into the past. */
static void test_clock_extremes(void **state)
{
    struct aimd a;
    int64_t big = INT64_MAX - 10;

    (void)state;
    aimd_init(&a, 1, 10, 1, 86400000);
    assert_int_equal(look(&a, 1, 1, 0, 10, big), 0);
    assert_int_equal(a.cap, 5);
    assert_true(a.next_look == INT64_MAX);
    assert_int_equal(look(&a, 1, 1, 0, 10, big + 5), 0);
    assert_int_equal(a.cap, 5);
    assert_int_equal(aimd_due(&a, INT64_MAX, big), INT64_MAX);
}

/* Two processes on a server of 30, one starting at 60 and one at 4, both
 * with demand and both seeing the same share of connects refused while they
 * hold more than 30 together: the same signal cuts each in proportion to its
 * level, and the gap closes instead of staying as it started. */
static void test_shares_converge(void **state)
{
    struct aimd a, b;
    int64_t now = 0;

    (void)state;
    aimd_init(&a, 1, 60, 1, 1000);
    aimd_init(&b, 1, 60, 1, 1000);
    b.cap = 4;
    b.level = 4;
    for (int round = 0; round < 120; round++) {
        int over = a.cap + b.cap - 30;
        int r = over > 0 ? over : 0;
        (void)look(&a, 40, r, 1, a.cap, now);
        (void)look(&b, 40, r, 1, b.cap, now);
        now += 1000;
    }
    assert_true(a.cap - b.cap <= 1 && b.cap - a.cap <= 1);
    assert_true(a.cap + b.cap <= 34);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_never_moves),
        cmocka_unit_test(test_decrease_by_refused_share),
        cmocka_unit_test(test_refused_down_to_held),
        cmocka_unit_test(test_increase_needs_interval_and_demand),
        cmocka_unit_test(test_over_and_due),
        cmocka_unit_test(test_clock_extremes),
        cmocka_unit_test(test_shares_converge),
    };
    return cmocka_run_group_tests_name("unit_aimd", tests, NULL, NULL);
}
