/* unit_aimd.c - the registry's adaptive cap (src/tenants/aimd.c) on an injected
 * clock: decrease on refusal weighted by the share held, its guard, additive
 * increase with demand only,
 * shedding, the next due time, and clock edge cases. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "aimd.h"

static void test_off_never_moves(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 0, 20, 1, 1000);
    assert_int_equal(aimd_refused(&a, 20, 5000), 0);
    assert_int_equal(a.cap, 20);
    assert_int_equal(a.refusals, 1); /* counted all the same (stats) */
    assert_int_equal(aimd_tick(&a, 1, 100000), 0);
    assert_int_equal(aimd_over(&a, 50), 0);
    assert_int_equal(aimd_due(&a, 777, 0), 777);
}

static void test_decrease_to_three_quarters_of_held(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 1, 20, 2, 1000);
    /* at its max a process counts each refusal fully: down at once */
    assert_int_equal(aimd_refused(&a, 20, 10000), 1);
    assert_int_equal(a.cap, 15);
    assert_int_equal(a.decreases, 1);
    assert_int_equal(a.last_decrease, 10000);
    assert_int_equal(a.next_increase, 11000);
    /* more open than the cap (over it, not yet shed): 3/4 of the cap; 15
     * held count 15^2/20 = 11 of 20: the second refusal takes it down */
    assert_int_equal(aimd_refused(&a, 30, 10000 + AIMD_DECREASE_GUARD_MS), 0);
    assert_int_equal(aimd_refused(&a, 30, 10000 + AIMD_DECREASE_GUARD_MS + 1), 1);
    assert_int_equal(a.cap, 11);
    assert_int_equal(a.decreases, 2);
    assert_int_equal(a.refusals, 3);
}

/* A refusal counts (held / max)^2, at least 1/8: a small holder needs more
 * refusals for one decrease than a big one, and a refusal that did not
 * count to a decrease does not hold its next step up back. */
static void test_refusals_weighted_by_share(void **state)
{
    struct aimd big, small;
    int n;

    (void)state;
    aimd_init(&big, 1, 40, 1, 1000);
    aimd_init(&small, 1, 40, 1, 1000);
    big.cap = 30;
    small.cap = 5;
    /* 30 held of 40: 22/40 per refusal -> the 2nd decreases */
    for (n = 1; aimd_refused(&big, 30, n * 1000) == 0; n++)
        assert_true(n < 100);
    assert_int_equal(n, 2);
    assert_int_equal(big.cap, 22);
    /* 5 held of 40: the floor, 5/40 per refusal -> the 8th */
    for (n = 1; aimd_refused(&small, 5, n * 1000) == 0; n++) {
        assert_true(n < 100);
        assert_int_equal(small.next_increase, 0); /* free to step up */
    }
    assert_int_equal(n, 8);
    assert_int_equal(small.cap, 3);
    /* holding nothing and at the floor: down to min after 8 */
    aimd_init(&small, 1, 40, 2, 1000);
    small.cap = 10;
    for (n = 1; aimd_refused(&small, 0, n * 1000) == 0; n++)
        assert_true(n < 100);
    assert_int_equal(n, 8);
    assert_int_equal(small.cap, 2);
    /* at min: counted, never lower */
    for (n = 0; n < 20; n++)
        assert_int_equal(aimd_refused(&small, 2, 100000 + n * 1000), 0);
    assert_int_equal(small.cap, 2);
    assert_int_equal(small.refusals, 28);
}

/* A max below 8 still counts every refusal (the floor is at least 1). */
static void test_small_max(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 1, 4, 1, 1000);
    assert_int_equal(aimd_refused(&a, 4, 0), 1);
    assert_int_equal(a.cap, 3);
    int n;
    for (n = 1; aimd_refused(&a, 3, n * 1000) == 0; n++)
        assert_true(n < 10);
    assert_int_equal(n, 2); /* 3*3/4 = 2 of 4 per refusal */
    assert_int_equal(a.cap, 2);
}

/* Refusals of connects already in flight when the cap went down are one
 * event: the guard is [last, last + GUARD) and a clock reading earlier than
 * the last decrease counts as inside it. */
static void test_decrease_guard_edges(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 1, 100, 1, 1000);
    /* the very first refusal decreases even at time 0 */
    assert_int_equal(aimd_refused(&a, 100, 0), 1);
    assert_int_equal(a.cap, 75);
    a.debt = 99; /* the next refusal outside the guard decreases */
    assert_int_equal(aimd_refused(&a, 75, AIMD_DECREASE_GUARD_MS - 1), 0);
    assert_int_equal(a.debt, 99); /* inside the guard: not counted */
    assert_int_equal(a.cap, 75);
    assert_int_equal(aimd_refused(&a, 75, -5), 0); /* stale clock */
    assert_int_equal(a.cap, 75);
    assert_int_equal(aimd_refused(&a, 75, AIMD_DECREASE_GUARD_MS), 1);
    assert_int_equal(a.cap, 56);
    assert_int_equal(a.next_increase, AIMD_DECREASE_GUARD_MS + 1000);
    assert_int_equal(a.refusals, 4);
}

static void test_increase_needs_interval_and_demand(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 1, 10, 1, 1000);
    assert_int_equal(aimd_refused(&a, 10, 5000), 1);
    assert_int_equal(a.cap, 7);
    assert_int_equal(aimd_tick(&a, 1, 5999), 0); /* one interval after the decrease */
    assert_int_equal(a.cap, 7);
    assert_int_equal(aimd_tick(&a, 1, 6000), 1);
    assert_int_equal(a.cap, 8);
    assert_int_equal(aimd_tick(&a, 1, 6500), 0);
    /* no demand: no step, but the next look is still an interval away */
    assert_int_equal(aimd_tick(&a, 0, 7000), 0);
    assert_int_equal(a.cap, 8);
    assert_int_equal(a.next_increase, 8000);
    assert_int_equal(aimd_tick(&a, 1, 7999), 0);
    assert_int_equal(aimd_tick(&a, 1, 8000), 1);
    assert_int_equal(a.cap, 9);
    /* a late tick steps once, not once per missed interval */
    assert_int_equal(aimd_tick(&a, 1, 20000), 1);
    assert_int_equal(a.cap, 10);
    assert_int_equal(a.next_increase, 21000);
    /* at max: never above */
    assert_int_equal(aimd_tick(&a, 1, 21000), 0);
    assert_int_equal(aimd_tick(&a, 1, 50000), 0);
    assert_int_equal(a.cap, 10);
}

static void test_over_and_due(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 1, 10, 1, 1000);
    assert_int_equal(aimd_due(&a, 4000, 0), 4000); /* at max: nothing to step */
    assert_int_equal(aimd_refused(&a, 10, 1000), 1);
    assert_int_equal(a.cap, 7);
    assert_int_equal(aimd_over(&a, 10), 3);
    assert_int_equal(aimd_over(&a, 7), 0);
    assert_true(aimd_over(&a, 2) < 0);
    assert_int_equal(aimd_due(&a, 4000, 1000), 2000); /* the next step comes first */
    assert_int_equal(aimd_due(&a, 1500, 1000), 1500); /* the owner's own is earlier */
    assert_int_equal(aimd_due(&a, 4000, 2500), 2501); /* overdue: soon, not in the past */
}

/* Saturating arithmetic: a huge interval or a clock near INT64_MAX does not
 * wrap the next step into the past. */
static void test_clock_extremes(void **state)
{
    struct aimd a;
    int64_t big = INT64_MAX - 10;

    (void)state;
    aimd_init(&a, 1, 10, 1, 86400000);
    assert_int_equal(aimd_refused(&a, 10, big), 1);
    assert_true(a.next_increase == INT64_MAX);
    assert_int_equal(aimd_tick(&a, 1, big + 5), 0);
    assert_int_equal(a.cap, 7);
    assert_int_equal(aimd_due(&a, INT64_MAX, big), INT64_MAX);
}

/* Two processes, each refused whenever they hold more than the server's 30
 * together: the big one gives back more often and more, and the gap closes
 * (to a few units: 3/4 is rounded down) instead of staying as it started. */
static void test_shares_converge(void **state)
{
    struct aimd a, b;
    int64_t now = 0;

    (void)state;
    aimd_init(&a, 1, 60, 1, 1000);
    aimd_init(&b, 1, 60, 1, 1000);
    b.cap = 4; /* b starts small, a at 60 */
    for (int round = 0; round < 400; round++) {
        now += 250;
        (void)aimd_tick(&a, 1, now);
        (void)aimd_tick(&b, 1, now);
        if (a.cap + b.cap > 30) {
            (void)aimd_refused(&a, a.cap, now);
            (void)aimd_refused(&b, b.cap, now);
        }
    }
    assert_true(a.cap - b.cap <= 4 && b.cap - a.cap <= 4);
    assert_true(a.cap + b.cap <= 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_never_moves),
        cmocka_unit_test(test_decrease_to_three_quarters_of_held),
        cmocka_unit_test(test_refusals_weighted_by_share),
        cmocka_unit_test(test_small_max),
        cmocka_unit_test(test_decrease_guard_edges),
        cmocka_unit_test(test_increase_needs_interval_and_demand),
        cmocka_unit_test(test_over_and_due),
        cmocka_unit_test(test_clock_extremes),
        cmocka_unit_test(test_shares_converge),
    };
    return cmocka_run_group_tests_name("unit_aimd", tests, NULL, NULL);
}
