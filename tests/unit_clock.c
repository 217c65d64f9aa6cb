/* unit_clock.c - deadline arithmetic (src/core/clock.h): a timeout of INT64_MAX
 * (DBPOOL_NO_LIMIT) must give a deadline of "never", not one that overflowed
 * into the past. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "clock.h"
#include "dbpool.h"

static void test_deadline_add(void **state)
{
    (void)state;
    assert_true(deadline_add(1, 2) == 3);
    assert_true(deadline_add(123456789, 0) == 123456789);
    assert_true(deadline_add(123456789, DBPOOL_NO_LIMIT) == INT64_MAX);
    assert_true(deadline_add(INT64_MAX, 1) == INT64_MAX);
    assert_true(deadline_add(INT64_MAX - 10, 10) == INT64_MAX);
    assert_true(deadline_add(INT64_MAX - 10, 11) == INT64_MAX);
    assert_true(deadline_add(INT64_MAX - 10, 9) == INT64_MAX - 1);
    int64_t now = clock_ms();
    assert_true(now > 0);
    assert_true(deadline_add(now, DBPOOL_NO_LIMIT) == INT64_MAX);
}

static void test_deadline_ms_to_us(void **state)
{
    (void)state;
    assert_true(deadline_ms_to_us(0) == 0);
    assert_true(deadline_ms_to_us(15000) == 15000000);
    assert_true(deadline_ms_to_us(INT64_MAX / 1000) == INT64_MAX / 1000 * 1000);
    assert_true(deadline_ms_to_us(INT64_MAX / 1000 + 1) == INT64_MAX);
    assert_true(deadline_ms_to_us(DBPOOL_NO_LIMIT) == INT64_MAX);
    /* the query helpers' deadline: now + timeout, in us */
    assert_true(deadline_add(clock_us(), deadline_ms_to_us(DBPOOL_NO_LIMIT)) == INT64_MAX);
    assert_true(deadline_add(clock_us(), deadline_ms_to_us(INT64_MAX / 1000)) == INT64_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadline_add),
        cmocka_unit_test(test_deadline_ms_to_us),
    };
    return cmocka_run_group_tests_name("unit_clock", tests, NULL, NULL);
}
