/* clock.c - clock_us()'s anchor: when the CPU's time-stamp counter may stand
 * in for CLOCK_MONOTONIC, and the (counter, time) pair it is converted from. */
#include "clock.h"

#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define CLOCK_TSC 1
#endif

struct clock_anchor clock_anchor;

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#ifdef CLOCK_TSC

enum {
    ANCHOR_US = 50000,   /* an anchor is extrapolated for at most 50 ms */
    RATE_MIN_US = 20000, /* the first rate: over >= 20 ms */
    RATE_US = 1000000,   /* then a new rate every ~1 s, over >= 1 s */
    PAIR_TICKS = 20000,  /* a pair's two counter reads this close: not preempted */
    MAX_ERROR_US = 1000  /* extrapolation this far off: the counter is not a clock */
};

static pthread_once_t detect_once = PTHREAD_ONCE_INIT;
static _Atomic int usable; /* 1: the counter may be used; 0: never (or no longer) */
/* The rate's base pair; written only by the anchor's writer (seq odd). */
static uint64_t rate_tsc;
static int64_t rate_us;

/* The counter is a clock only if it is invariant (constant rate, runs in
 * deep sleep states) and the kernel keeps CLOCK_MONOTONIC with it: then the
 * kernel has checked that the CPUs' counters agree (else it would have
 * switched to another clocksource), and a VM does not trap rdtsc. */
static void detect(void)
{
    unsigned a, b, c, d;
    char buf[16] = {0};

    if (!__get_cpuid(0x80000007, &a, &b, &c, &d) || !(d & (1u << 8)))
        return;
    int fd = open("/sys/devices/system/clocksource/clocksource0/current_clocksource",
                  O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n >= 3 && strncmp(buf, "tsc", 3) == 0 && (n == 3 || buf[3] == '\n'))
        atomic_store_explicit(&usable, 1, memory_order_relaxed);
}

/* Renew the anchor with the pair (tsc, us), if no other thread is at it. */
static void reanchor(uint64_t tsc, int64_t us)
{
    uint64_t seq = atomic_load_explicit(&clock_anchor.seq, memory_order_relaxed);
    if ((seq & 1) ||
        !atomic_compare_exchange_strong_explicit(&clock_anchor.seq, &seq, seq + 1,
                                                 memory_order_acquire, memory_order_relaxed))
        return;
    uint64_t mult = atomic_load_explicit(&clock_anchor.mult, memory_order_relaxed);
    if (mult) { /* a recent anchor, carried forward, must agree with the clock */
        uint64_t base = atomic_load_explicit(&clock_anchor.tsc, memory_order_relaxed);
        int64_t then = atomic_load_explicit(&clock_anchor.us, memory_order_relaxed);
        uint64_t span = atomic_load_explicit(&clock_anchor.span, memory_order_relaxed);
        if (tsc >= base && tsc - base <= 4 * span) {
            int64_t guess = then + (int64_t)((double)(tsc - base) * (double)mult / 4294967296.0);
            if (guess - us > MAX_ERROR_US || us - guess > MAX_ERROR_US) {
                atomic_store_explicit(&usable, 0, memory_order_relaxed); /* for good */
                mult = 0;
                goto out;
            }
        }
    }
    if (!rate_us) {
        rate_tsc = tsc;
        rate_us = us;
    } else if (tsc > rate_tsc &&
               ((!mult && us - rate_us >= RATE_MIN_US) || us - rate_us >= RATE_US)) {
        uint64_t m = (uint64_t)((double)(us - rate_us) * 4294967296.0 / (double)(tsc - rate_tsc));
        /* a counter between 100 MHz and 20 GHz, or it is not what we think */
        if (m > ((uint64_t)1 << 32) / 100 || m < ((uint64_t)1 << 32) / 20000) {
            atomic_store_explicit(&usable, 0, memory_order_relaxed);
            mult = 0;
            goto out;
        }
        mult = m;
        rate_tsc = tsc;
        rate_us = us;
    }
    if (mult) {
        atomic_store_explicit(&clock_anchor.tsc, tsc, memory_order_release);
        atomic_store_explicit(&clock_anchor.us, us, memory_order_release);
        atomic_store_explicit(&clock_anchor.span, ((uint64_t)ANCHOR_US << 32) / mult,
                              memory_order_release);
    }
out:
    atomic_store_explicit(&clock_anchor.mult, mult, memory_order_release);
    atomic_store_explicit(&clock_anchor.seq, seq + 2, memory_order_release);
}

int64_t clock_us_slow(void)
{
    pthread_once(&detect_once, detect);
    if (!atomic_load_explicit(&usable, memory_order_relaxed))
        return mono_us();
    uint64_t t1 = __rdtsc();
    int64_t us = mono_us();
    uint64_t t2 = __rdtsc();
    if (t2 > t1 && t2 - t1 < PAIR_TICKS)
        reanchor(t1 + (t2 - t1) / 2, us);
    return us;
}

#else

int64_t clock_us_slow(void)
{
    return mono_us();
}

#endif
