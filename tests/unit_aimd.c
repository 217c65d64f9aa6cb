/* unit_aimd.c - the registry's adaptive cap (src/tenants/aimd.c) on an injected
 * clock: decrease on refusal, its guard, additive increase with demand only,
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
    assert_int_equal(aimd_refused(&a, 16, 10000), 1);
    assert_int_equal(a.cap, 12); /* 3/4 of the 16 held, not of the cap */
    assert_int_equal(a.decreases, 1);
    assert_int_equal(a.last_decrease, 10000);
    assert_int_equal(a.next_increase, 11000);
    /* more open than the cap (over it, not yet shed): 3/4 of the cap */
    assert_int_equal(aimd_refused(&a, 30, 10000 + AIMD_DECREASE_GUARD_MS), 1);
    assert_int_equal(a.cap, 9);
    /* holding nothing: down to min */
    assert_int_equal(aimd_refused(&a, 0, 20000), 1);
    assert_int_equal(a.cap, 2);
    /* at min: a refusal is counted, no decrease */
    assert_int_equal(aimd_refused(&a, 2, 30000), 0);
    assert_int_equal(a.cap, 2);
    assert_int_equal(a.decreases, 3);
    assert_int_equal(a.refusals, 4);
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
    assert_int_equal(aimd_refused(&a, 75, AIMD_DECREASE_GUARD_MS - 1), 0);
    assert_int_equal(a.cap, 75);
    assert_int_equal(aimd_refused(&a, 75, -5), 0); /* stale clock */
    assert_int_equal(a.cap, 75);
    assert_int_equal(aimd_refused(&a, 75, AIMD_DECREASE_GUARD_MS), 1);
    assert_int_equal(a.cap, 56);
    /* a refusal inside the guard still pushes the next increase away */
    assert_int_equal(aimd_refused(&a, 56, AIMD_DECREASE_GUARD_MS + 50), 0);
    assert_int_equal(a.next_increase, AIMD_DECREASE_GUARD_MS + 50 + 1000);
}

static void test_increase_needs_interval_and_demand(void **state)
{
    struct aimd a;

    (void)state;
    aimd_init(&a, 1, 10, 1, 1000);
    assert_int_equal(aimd_refused(&a, 8, 5000), 1);
    assert_int_equal(a.cap, 6);
    assert_int_equal(aimd_tick(&a, 1, 5999), 0); /* one interval after the refusal */
    assert_int_equal(a.cap, 6);
    assert_int_equal(aimd_tick(&a, 1, 6000), 1);
    assert_int_equal(a.cap, 7);
    assert_int_equal(aimd_tick(&a, 1, 6500), 0);
    /* no demand: no step, but the next look is still an interval away */
    assert_int_equal(aimd_tick(&a, 0, 7000), 0);
    assert_int_equal(a.cap, 7);
    assert_int_equal(a.next_increase, 8000);
    assert_int_equal(aimd_tick(&a, 1, 7999), 0);
    assert_int_equal(aimd_tick(&a, 1, 8000), 1);
    assert_int_equal(a.cap, 8);
    /* a late tick steps once, not once per missed interval */
    assert_int_equal(aimd_tick(&a, 1, 20000), 1);
    assert_int_equal(a.cap, 9);
    assert_int_equal(a.next_increase, 21000);
    assert_int_equal(aimd_tick(&a, 1, 21000), 1);
    assert_int_equal(a.cap, 10);
    /* at max: never above */
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

/* Two processes with the same refusals converge: the difference between
 * their caps shrinks by a quarter at each common decrease (down to a few
 * units: 3/4 is rounded down, 20 -> 15 but 17 -> 12). */
static void test_equal_signals_converge(void **state)
{
    struct aimd a, b;
    int64_t now = 0;

    (void)state;
    aimd_init(&a, 1, 60, 1, 1000);
    aimd_init(&b, 1, 60, 1, 1000);
    (void)aimd_refused(&b, 8, now); /* b starts small */
    for (int round = 0; round < 40; round++) {
        for (int k = 0; k < 5; k++) {
            now += 1000;
            (void)aimd_tick(&a, 1, now);
            (void)aimd_tick(&b, 1, now);
        }
        if (a.cap + b.cap > 30) {
            now += 1;
            (void)aimd_refused(&a, a.cap, now);
            (void)aimd_refused(&b, b.cap, now);
        }
    }
    assert_true(a.cap - b.cap <= 3 && b.cap - a.cap <= 3);
    assert_true(a.cap < 30 && b.cap > 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_never_moves),
        cmocka_unit_test(test_decrease_to_three_quarters_of_held),
        cmocka_unit_test(test_decrease_guard_edges),
        cmocka_unit_test(test_increase_needs_interval_and_demand),
        cmocka_unit_test(test_over_and_due),
        cmocka_unit_test(test_clock_extremes),
        cmocka_unit_test(test_equal_signals_converge),
    };
    return cmocka_run_group_tests_name("unit_aimd", tests, NULL, NULL);
}
