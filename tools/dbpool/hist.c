/* hist.c - log-linear latency histograms (see hist.h): bucket i covers a
 * range 1/32 of its power of two wide, like HdrHistogram with 5 bits. */
#include "hist.h"

#include <string.h>

static int bucket_of(uint64_t v)
{
    if (v < LH_SUB)
        return (int)v;
    int lg = 63 - __builtin_clzll(v);
    if (lg > LH_MAX_LOG) {
        lg = LH_MAX_LOG;
        v = (UINT64_C(1) << (LH_MAX_LOG + 1)) - 1;
    }
    int m = (int)(v >> (lg - LH_SUB_BITS)); /* in [LH_SUB, 2*LH_SUB) */
    return (lg - LH_SUB_BITS + 1) * LH_SUB + (m - LH_SUB);
}

static uint64_t bucket_low(int i, uint64_t *width)
{
    if (i < LH_SUB) {
        *width = 1;
        return (uint64_t)i;
    }
    int lg = i / LH_SUB + LH_SUB_BITS - 1;
    uint64_t m = (uint64_t)(LH_SUB + i % LH_SUB);
    *width = UINT64_C(1) << (lg - LH_SUB_BITS);
    return m << (lg - LH_SUB_BITS);
}

/* single writer: plain load + store, no locked instruction */
static inline void bump(_Atomic uint64_t *a, uint64_t by)
{
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

void lh_record(lat_hist *h, int64_t ns)
{
    uint64_t v = ns < 0 ? 0 : (uint64_t)ns;

    bump(&h->b[bucket_of(v)], 1);
    bump(&h->sum_ns, v);
    if (v > atomic_load_explicit(&h->max_ns, memory_order_relaxed))
        atomic_store_explicit(&h->max_ns, v, memory_order_relaxed);
    /* count last: a reader that sees it sees the bucket too (mostly; the
     * summary tolerates being one sample behind) */
    atomic_store_explicit(&h->count, atomic_load_explicit(&h->count, memory_order_relaxed) + 1,
                          memory_order_release);
}

void lh_add_to(lat_snap *dst, const lat_hist *src)
{
    uint64_t n = atomic_load_explicit(&src->count, memory_order_acquire);
    uint64_t total = 0;

    for (int i = 0; i < LH_BUCKETS; i++) {
        uint64_t c = atomic_load_explicit(&src->b[i], memory_order_relaxed);
        dst->b[i] += c;
        total += c;
    }
    (void)n;
    dst->count += total; /* the buckets are the truth for quantiles */
    dst->sum_ns += atomic_load_explicit(&src->sum_ns, memory_order_relaxed);
    uint64_t mx = atomic_load_explicit(&src->max_ns, memory_order_relaxed);
    if (mx > dst->max_ns)
        dst->max_ns = mx;
}

void lh_diff(lat_snap *d, const lat_snap *a, const lat_snap *b)
{
    int top = -1;

    d->count = 0;
    for (int i = 0; i < LH_BUCKETS; i++) {
        d->b[i] = a->b[i] >= b->b[i] ? a->b[i] - b->b[i] : 0;
        d->count += d->b[i];
        if (d->b[i])
            top = i;
    }
    d->sum_ns = a->sum_ns >= b->sum_ns ? a->sum_ns - b->sum_ns : 0;
    d->max_ns = 0;
    if (top >= 0) {
        uint64_t w, lo = bucket_low(top, &w);
        d->max_ns = lo + w - 1;
        if (d->max_ns > a->max_ns)
            d->max_ns = a->max_ns;
    }
}

int64_t lh_quantile(const lat_snap *s, double q)
{
    if (!s->count)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)s->count);
    if (rank >= s->count)
        rank = s->count - 1;
    uint64_t seen = 0;
    for (int i = 0; i < LH_BUCKETS; i++) {
        seen += s->b[i];
        if (seen > rank) {
            uint64_t w, lo = bucket_low(i, &w);
            uint64_t mid = lo + w / 2;
            return (int64_t)(mid > s->max_ns ? s->max_ns : mid);
        }
    }
    return (int64_t)s->max_ns;
}

double lh_mean(const lat_snap *s)
{
    return s->count ? (double)s->sum_ns / (double)s->count : 0.0;
}
