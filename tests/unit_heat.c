/* unit_heat.c - a pool's heat (src/core/pool.h), the decayed checkout count
 * the registry's eviction compares tenants by, on an injected clock: counting,
 * halving per half-life, saturation, and a clock that does not move. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "pool.h"

static struct dbpool *new_pool(void)
{
    static struct dbpool p;
    memset(&p, 0, sizeof p);
    atomic_init(&p.heat, 0);
    return &p;
}

static uint32_t heat(struct dbpool *p, int64_t now)
{
    return pool_heat_at(atomic_load(&p->heat), now);
}

static void test_counts_and_halves(void **state)
{
    (void)state;
    struct dbpool *p = new_pool();
    const int64_t t0 = 1000000;

    assert_int_equal(heat(p, t0), 0);
    for (int i = 0; i < 10; i++)
        pool_heat_bump(p, t0);
    assert_int_equal(heat(p, t0), 10 * POOL_HEAT_ONE);
    assert_int_equal(heat(p, t0 + POOL_HEAT_HALF_LIFE - 1), 10 * POOL_HEAT_ONE);
    assert_int_equal(heat(p, t0 + POOL_HEAT_HALF_LIFE), 5 * POOL_HEAT_ONE);
    assert_int_equal(heat(p, t0 + 2 * POOL_HEAT_HALF_LIFE), 5 * POOL_HEAT_ONE / 2);
    assert_int_equal(heat(p, t0 + 40 * POOL_HEAT_HALF_LIFE), 0);
    /* a bump after two half-lives adds to what is left, from then on */
    pool_heat_bump(p, t0 + 2 * POOL_HEAT_HALF_LIFE + 10);
    assert_int_equal(heat(p, t0 + 2 * POOL_HEAT_HALF_LIFE + 10),
                     5 * POOL_HEAT_ONE / 2 + POOL_HEAT_ONE);
    assert_int_equal(heat(p, t0 + 3 * POOL_HEAT_HALF_LIFE),
                     (5 * POOL_HEAT_ONE / 2 + POOL_HEAT_ONE) / 2);
}

/* One used 10 times beats one used once, until about log2(10) half-lives
 * have passed without use: what keeps a hot tenant's connection. */
static void test_hot_beats_one_off(void **state)
{
    (void)state;
    static struct dbpool hot, once;
    const int64_t t0 = 5000;
    memset(&hot, 0, sizeof hot);
    memset(&once, 0, sizeof once);
    for (int i = 0; i < 10; i++)
        pool_heat_bump(&hot, t0);
    pool_heat_bump(&once, t0 + 3 * POOL_HEAT_HALF_LIFE - 1);
    int64_t now = t0 + 3 * POOL_HEAT_HALF_LIFE - 1;
    assert_true(heat(&hot, now) > heat(&once, now));
}

static void test_saturates(void **state)
{
    (void)state;
    struct dbpool *p = new_pool();
    for (int i = 0; i < (POOL_HEAT_MAX / POOL_HEAT_ONE) + 100; i++)
        pool_heat_bump(p, 77);
    assert_int_equal(heat(p, 77), POOL_HEAT_MAX);
    assert_int_equal(heat(p, 77 + POOL_HEAT_HALF_LIFE), POOL_HEAT_MAX / 2);
}

/* a reader whose clock is behind the last bump sees no decay, not a wrap */
static void test_clock_behind(void **state)
{
    (void)state;
    struct dbpool *p = new_pool();
    pool_heat_bump(p, 10000);
    assert_int_equal(heat(p, 9000), POOL_HEAT_ONE);
    pool_heat_bump(p, 9000); /* a bump with an older clock read */
    assert_int_equal(heat(p, 10000), 2 * POOL_HEAT_ONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_halves),
        cmocka_unit_test(test_hot_beats_one_off),
        cmocka_unit_test(test_saturates),
        cmocka_unit_test(test_clock_behind),
    };
    return cmocka_run_group_tests_name("unit_heat", tests, NULL, NULL);
}
