/* clock.h - the library's one clock: CLOCK_MONOTONIC in ms and us. */
#ifndef DBPOOL_CLOCK_H
#define DBPOOL_CLOCK_H

#include "namespace.h"

#include <stdint.h>
#include <time.h>

static inline int64_t clock_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t clock_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* a + b for deadlines, saturating at INT64_MAX ("never") instead of
 * overflowing (b >= 0). */
static inline int64_t deadline_add(int64_t a, int64_t b)
{
    return b > INT64_MAX - a ? INT64_MAX : a + b;
}

/* A timeout in ms as us, saturating at INT64_MAX (ms >= 0): for deadlines
 * kept in us, so that DBPOOL_NO_LIMIT stays "never". */
static inline int64_t deadline_ms_to_us(int64_t ms)
{
    return ms > INT64_MAX / 1000 ? INT64_MAX : ms * 1000;
}

#endif
