/* clock.h - the library's one clock: CLOCK_MONOTONIC in ms and us (the us
 * from the CPU's counter where that is safe: src/core/clock.c). */
#ifndef DBPOOL_CLOCK_H
#define DBPOOL_CLOCK_H

#include "namespace.h"

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
#endif

static inline int64_t clock_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * CLOCK_MONOTONIC in us. Every checkout and every check-in reads it (the
 * queue- and hold-time histograms have 1 us buckets), and the vDSO's read
 * costs ~30 ns on a VM (an ordered rdtsc plus the conversion): two reads
 * were most of a ~100 ns stub checkout + check-in (bench/RESULTS.md (a)).
 * Where the kernel itself keeps time with the CPU's time-stamp counter
 * (x86-64, clocksource "tsc"), this reads the counter (~10 ns) and converts
 * it from an anchor pair (counter, CLOCK_MONOTONIC) that src/core/clock.c
 * renews every 50 ms, at a rate measured over >= 1 s: within a few us of
 * CLOCK_MONOTONIC (tens of us in the first second of the process). An
 * anchor older than 50 ms, a counter behind the anchor (another CPU) or no
 * anchor yet: clock_us_slow(), which reads CLOCK_MONOTONIC itself.
 */
struct clock_anchor {
    _Atomic uint64_t seq;  /* odd while clock.c writes the anchor */
    _Atomic uint64_t tsc;  /* counter at the anchor */
    _Atomic int64_t us;    /* CLOCK_MONOTONIC us at the anchor */
    _Atomic uint64_t mult; /* us per tick, 32.32 fixed point; 0: no anchor */
    _Atomic uint64_t span; /* ticks in 50 ms: the anchor's age limit */
};
extern struct clock_anchor clock_anchor;
int64_t clock_us_slow(void);

static inline int64_t clock_us(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    /* a seqlock without fences (TSan has none): the fields are read with
     * acquire, so the second read of seq comes after them, and a field
     * stored (with release) after seq went odd shows an odd or newer seq.
     * On x86-64 these are plain loads. */
    uint64_t seq = atomic_load_explicit(&clock_anchor.seq, memory_order_acquire);
    uint64_t mult = atomic_load_explicit(&clock_anchor.mult, memory_order_acquire);
    if (mult && !(seq & 1)) {
        uint64_t base = atomic_load_explicit(&clock_anchor.tsc, memory_order_acquire);
        int64_t us = atomic_load_explicit(&clock_anchor.us, memory_order_acquire);
        uint64_t span = atomic_load_explicit(&clock_anchor.span, memory_order_acquire);
        uint64_t d = __rdtsc() - base; /* huge if behind the anchor: slow path */
        if (d < span && atomic_load_explicit(&clock_anchor.seq, memory_order_relaxed) == seq)
            return us + (int64_t)((d * mult) >> 32); /* d * mult < 50000 << 32 */
    }
#endif
    return clock_us_slow();
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
