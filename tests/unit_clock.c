/* unit_clock.c - deadline arithmetic (src/core/clock.h): a timeout of INT64_MAX
 * (DBPOOL_NO_LIMIT) must give a deadline of "never", not one that overflowed
 * into the past; and clock_us() (the CPU's counter where src/core/clock.c
 * allows it) must read CLOCK_MONOTONIC, from several threads at once. */
#include <pthread.h>
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

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Each reading lies between CLOCK_MONOTONIC read before and after it, give
 * or take the extrapolation error clock.c allows (it gives up on the counter
 * beyond 1 ms); 300 ms spans several 50 ms anchors and the first rate. */
static void *agree(void *arg)
{
    int64_t *worst = arg, end = mono_us() + 300000, last = 0;
    while (mono_us() < end) {
        int64_t a = mono_us(), c = clock_us(), b = mono_us();
        int64_t off = c < a ? a - c : c > b ? c - b : 0;
        if (off > *worst)
            *worst = off;
        if (last - c > *worst)
            *worst = last - c; /* backwards */
        last = c;
    }
    return NULL;
}

static void test_clock_us(void **state)
{
    (void)state;
    pthread_t th[3];
    int64_t worst[4] = {0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, agree, &worst[i]), 0);
    agree(&worst[3]);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        assert_true(worst[i] <= 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadline_add),
        cmocka_unit_test(test_deadline_ms_to_us),
        cmocka_unit_test(test_clock_us),
    };
    return cmocka_run_group_tests_name("unit_clock", tests, NULL, NULL);
}
