/* hist.h - latency histograms for the CLI: log-linear buckets in nanoseconds,
 * 32 per power of two, so a reported quantile is within ~1.6% of the truth.
 *
 * One thread writes a histogram (no lock, no atomic read-modify-write: a
 * relaxed load + store per bucket), any thread may read it at any time. A
 * reader gets per-interval numbers by subtracting an earlier snapshot. */
#ifndef DBPOOL_CLI_HIST_H
#define DBPOOL_CLI_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#define LH_SUB_BITS 5
#define LH_SUB (1 << LH_SUB_BITS)
#define LH_MAX_LOG 40 /* values are capped at 2^40 ns (~18 minutes) */
#define LH_BUCKETS ((LH_MAX_LOG - LH_SUB_BITS + 2) * LH_SUB)

/* Written by one thread, read by any. */
typedef struct lat_hist {
    _Atomic uint64_t count, sum_ns, max_ns;
    _Atomic uint64_t b[LH_BUCKETS];
} lat_hist;

/* A plain copy for summing and subtracting. */
typedef struct lat_snap {
    uint64_t count, sum_ns, max_ns;
    uint64_t b[LH_BUCKETS];
} lat_snap;

void lh_record(lat_hist *h, int64_t ns);
/* dst += src (max: larger of the two). */
void lh_add_to(lat_snap *dst, const lat_hist *src);
/* d = a - b, for a taken after b. d->max_ns is the max among the new values
 * (approximated from the highest non-empty bucket, capped by a's max). */
void lh_diff(lat_snap *d, const lat_snap *a, const lat_snap *b);
/* Quantile q in [0,1], in ns (bucket midpoint, capped by max); 0 if empty. */
int64_t lh_quantile(const lat_snap *s, double q);
double lh_mean(const lat_snap *s);

#endif
