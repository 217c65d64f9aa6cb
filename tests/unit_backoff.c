/* unit_backoff.c - reconnect backoff (docs/pool.md, "Reconnect backoff") and its RNG. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "backoff.h"

#define DRAWS 10000

static void test_exp_sequence(void **state)
{
    static const int64_t want[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000};
    struct backoff b;
    size_t i;

    (void)state;
    backoff_init(&b, DBPOOL_BACKOFF_EXP, -1, 30000, 1);
    assert_int_equal(b.min, 1000);
    assert_int_equal(b.max, 30000);
    for (i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(backoff_next(&b), want[i]);
}

static void test_exp_reset(void **state)
{
    struct backoff b;

    (void)state;
    backoff_init(&b, DBPOOL_BACKOFF_EXP, 100, 1000, 1);
    assert_int_equal(backoff_next(&b), 100);
    assert_int_equal(backoff_next(&b), 200);
    assert_int_equal(backoff_next(&b), 400);
    backoff_reset(&b);
    assert_int_equal(backoff_next(&b), 100);
    assert_int_equal(backoff_next(&b), 200);
    /* Non-power-of-two cap. */
    assert_int_equal(backoff_next(&b), 400);
    assert_int_equal(backoff_next(&b), 800);
    assert_int_equal(backoff_next(&b), 1000);
    assert_int_equal(backoff_next(&b), 1000);
}

static void test_exp_min_equals_max(void **state)
{
    struct backoff b;
    int i;

    (void)state;
    backoff_init(&b, DBPOOL_BACKOFF_EXP, 700, 700, 1);
    for (i = 0; i < 5; i++)
        assert_int_equal(backoff_next(&b), 700);
}

static void test_exp_huge_max_no_overflow(void **state)
{
    struct backoff b;
    int64_t prev = 0, d;
    int i;

    (void)state;
    backoff_init(&b, DBPOOL_BACKOFF_EXP, 1, INT64_MAX, 1);
    for (i = 0; i < 80; i++) {
        d = backoff_next(&b);
        assert_true(d >= prev);
        prev = d;
    }
    assert_true(prev == INT64_MAX);
}

static void test_rand_bounds(void **state)
{
    struct backoff b;
    int64_t lo = INT64_MAX, hi = INT64_MIN, d;
    int i;

    (void)state;
    backoff_init(&b, DBPOOL_BACKOFF_RAND, 1000, 30000, 42);
    for (i = 0; i < DRAWS; i++) {
        d = backoff_next(&b);
        assert_in_range(d, 1000, 30000);
        if (d < lo)
            lo = d;
        if (d > hi)
            hi = d;
    }
    /* Not constant, and spread over (nearly) the whole range. */
    assert_true(lo < hi);
    assert_true(lo < 1000 + 290);
    assert_true(hi > 30000 - 290);
}

static void test_rand_reset(void **state)
{
    struct backoff b;
    int i;

    (void)state;
    backoff_init(&b, DBPOOL_BACKOFF_RAND, 10, 20, 3);
    for (i = 0; i < 100; i++) {
        if (i % 10 == 0)
            backoff_reset(&b);
        assert_in_range(backoff_next(&b), 10, 20);
    }
}

static void test_rand_seeds_differ(void **state)
{
    struct backoff a, b;
    int i, same = 0;

    (void)state;
    backoff_init(&a, DBPOOL_BACKOFF_RAND, 1000, 30000, 1);
    backoff_init(&b, DBPOOL_BACKOFF_RAND, 1000, 30000, 2);
    for (i = 0; i < 100; i++)
        same += backoff_next(&a) == backoff_next(&b);
    assert_true(same < 10);
}

/* Each rand_exp step lies in [min(prev, lower), min(3*prev, max)], prev
 * starting at min; the whole run stays within [min, max]. */
static void check_rand_exp_run(struct backoff *b, int steps, int64_t *last)
{
    int64_t lower = b->max / 3 > b->min ? b->max / 3 : b->min;
    int64_t prev = b->min, d, lo, hi;
    int i;

    for (i = 0; i < steps; i++) {
        d = backoff_next(b);
        lo = prev < lower ? prev : lower;
        hi = 3 * prev < b->max ? 3 * prev : b->max;
        assert_in_range(d, b->min, b->max);
        assert_in_range(d, lo, hi);
        prev = d;
    }
    *last = prev;
}

static void test_rand_exp_steps(void **state)
{
    uint64_t seed;
    int64_t last;

    (void)state;
    for (seed = 1; seed <= 200; seed++) {
        struct backoff b;

        backoff_init(&b, DBPOOL_BACKOFF_RAND_EXP, -1, 30000, seed);
        check_rand_exp_run(&b, 50, &last);
        backoff_reset(&b);
        check_rand_exp_run(&b, 50, &last);
    }
}

static void test_rand_exp_grows(void **state)
{
    struct backoff b;
    double first = 0, late = 0;
    uint64_t seed;
    int i;

    (void)state;
    for (seed = 1; seed <= 500; seed++) {
        backoff_init(&b, DBPOOL_BACKOFF_RAND_EXP, 1000, 30000, seed);
        first += (double)backoff_next(&b);
        for (i = 1; i < 20; i++)
            late += (double)backoff_next(&b) / 19.0;
    }
    first /= 500;
    late /= 500;
    /* First draw is uniform in [1000, 3000]; once it has grown, draws live in
     * [<= 10000, 30000]. */
    assert_true(first >= 1000 && first <= 3000);
    assert_true(late > 10000);
    assert_true(late > 4 * first);

    /* After enough failures the floor is lower = max/3: never below it. */
    backoff_init(&b, DBPOOL_BACKOFF_RAND_EXP, 1000, 30000, 7);
    for (i = 0; i < 20; i++)
        (void)backoff_next(&b);
    {
        int64_t lo = INT64_MAX, d;

        for (i = 0; i < 200; i++) {
            d = backoff_next(&b);
            assert_in_range(d, 10000, 30000);
            if (d < lo)
                lo = d;
        }
        /* ... and the floor stays at lower: delays do not stick at max. */
        assert_true(lo < 15000);
    }
}

static void test_rand_exp_reset(void **state)
{
    struct backoff b;
    int i;

    (void)state;
    backoff_init(&b, DBPOOL_BACKOFF_RAND_EXP, 1000, 30000, 11);
    for (i = 0; i < 30; i++)
        (void)backoff_next(&b);
    backoff_reset(&b);
    /* Back at prev = min: first draw in [min, 3*min]. */
    assert_in_range(backoff_next(&b), 1000, 3000);
}

static void test_stop(void **state)
{
    struct backoff b;

    (void)state;
    backoff_init(&b, DBPOOL_BACKOFF_STOP, -1, 30000, 1);
    assert_int_equal(backoff_next(&b), -1);
    assert_int_equal(backoff_next(&b), -1);
    backoff_reset(&b);
    assert_int_equal(backoff_next(&b), -1);
}

static void test_auto_min(void **state)
{
    struct backoff b;

    (void)state;
    backoff_init(&b, DBPOOL_BACKOFF_EXP, -1, 500, 1);
    assert_int_equal(b.min, 500);
    assert_int_equal(b.max, 500);
    assert_int_equal(backoff_next(&b), 500);
    assert_int_equal(backoff_next(&b), 500);

    backoff_init(&b, DBPOOL_BACKOFF_EXP, -1, 5000, 1);
    assert_int_equal(b.min, 1000);
    assert_int_equal(backoff_next(&b), 1000);
    assert_int_equal(backoff_next(&b), 2000);
    assert_int_equal(backoff_next(&b), 4000);
    assert_int_equal(backoff_next(&b), 5000);

    backoff_init(&b, DBPOOL_BACKOFF_RAND_EXP, -1, 1000, 1);
    assert_int_equal(b.min, 1000);
    assert_int_equal(backoff_next(&b), 1000);

    /* Both defaulted. */
    backoff_init(&b, DBPOOL_BACKOFF_RAND_EXP, -1, 0, 1);
    assert_int_equal(b.min, 1000);
    assert_int_equal(b.max, 30000);
}

static void test_clamp_min_above_max(void **state)
{
    struct backoff b;
    int i;

    (void)state;
    backoff_init(&b, DBPOOL_BACKOFF_RAND_EXP, 5000, 2000, 1);
    assert_int_equal(b.min, 2000);
    assert_int_equal(b.max, 2000);
    for (i = 0; i < 10; i++)
        assert_int_equal(backoff_next(&b), 2000);

    backoff_init(&b, DBPOOL_BACKOFF_RAND, 5000, 2000, 1);
    for (i = 0; i < 10; i++)
        assert_int_equal(backoff_next(&b), 2000);

    /* Only min given (max defaulted): as DBConnection, max = max(min, 30000). */
    backoff_init(&b, DBPOOL_BACKOFF_EXP, 60000, 0, 1);
    assert_int_equal(b.min, 60000);
    assert_int_equal(b.max, 60000);
}

static void test_rng_range_edges(void **state)
{
    uint64_t s = 12345;
    int seen[4] = {0, 0, 0, 0};
    int i;

    (void)state;
    assert_int_equal(rng_range(&s, 5, 5), 5);
    assert_int_equal(rng_range(&s, -3, -3), -3);
    assert_int_equal(rng_range(&s, 9, 2), 9);   /* lo > hi: lo */
    assert_int_equal(rng_range(&s, 0, -1), 0);
    for (i = 0; i < DRAWS; i++) {
        int64_t v = rng_range(&s, 0, 3);

        assert_in_range(v, 0, 3);
        seen[v]++;
    }
    /* Roughly uniform: each value about 2500 times. */
    for (i = 0; i < 4; i++)
        assert_in_range(seen[i], 2200, 2800);

    for (i = 0; i < 1000; i++) {
        int64_t v = rng_range(&s, -10, 10);

        assert_true(v >= -10 && v <= 10);
        v = rng_range(&s, INT64_MIN, INT64_MIN + 1);
        assert_true(v == INT64_MIN || v == INT64_MIN + 1);
        v = rng_range(&s, INT64_MAX - 1, INT64_MAX);
        assert_true(v == INT64_MAX - 1 || v == INT64_MAX);
        (void)rng_range(&s, INT64_MIN, INT64_MAX); /* full range: no UB */
    }
}

static void test_rng_zero_state(void **state)
{
    uint64_t s = 0;
    int64_t a, b;

    (void)state;
    /* A zero state must not get stuck at zero. */
    a = rng_range(&s, 0, 1000000);
    b = rng_range(&s, 0, 1000000);
    assert_true(s != 0);
    assert_true(a != b || rng_range(&s, 0, 1000000) != a);
}

static void test_seed_zero(void **state)
{
    struct backoff b;
    int64_t lo = INT64_MAX, hi = INT64_MIN, d;
    int i;

    (void)state;
    backoff_init(&b, DBPOOL_BACKOFF_RAND, 0, 1000, 0);
    assert_true(b.rng != 0);
    for (i = 0; i < 1000; i++) {
        d = backoff_next(&b);
        if (d < lo)
            lo = d;
        if (d > hi)
            hi = d;
    }
    assert_true(lo < hi);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp_sequence),
        cmocka_unit_test(test_exp_reset),
        cmocka_unit_test(test_exp_min_equals_max),
        cmocka_unit_test(test_exp_huge_max_no_overflow),
        cmocka_unit_test(test_rand_bounds),
        cmocka_unit_test(test_rand_reset),
        cmocka_unit_test(test_rand_seeds_differ),
        cmocka_unit_test(test_rand_exp_steps),
        cmocka_unit_test(test_rand_exp_grows),
        cmocka_unit_test(test_rand_exp_reset),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_auto_min),
        cmocka_unit_test(test_clamp_min_above_max),
        cmocka_unit_test(test_rng_range_edges),
        cmocka_unit_test(test_rng_zero_state),
        cmocka_unit_test(test_seed_zero),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
