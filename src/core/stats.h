/* stats.h - log-scale latency histograms for dbpool_stats (queue and hold time). */
#ifndef DBPOOL_STATS_H
#define DBPOOL_STATS_H

#include "namespace.h"

#include <stdint.h>

#include "dbpool.h"

/* Two buckets per power of two of microseconds (bucket edges grow by ~1.41x),
 * from 1 us to 2^24 us (16.8 s); the last bucket holds everything above.
 * Quantiles are the upper edge of their bucket (at most ~41% high), capped at max. */
#define HIST_BUCKETS 49

struct hist {
    uint64_t n, sum_us, max_us;
    uint64_t b[HIST_BUCKETS];
};

void hist_add(struct hist *h, int64_t us);
/* Upper edge (us) of the bucket holding quantile q in [0,1]; 0 if empty. */
int64_t hist_quantile(const struct hist *h, double q);
/* Fill the public summary. */
void hist_summary(const struct hist *h, dbpool_histogram *out);
/* Values below 2^k us (k < HIST_BUCKETS / 2): exact, a bucket edge. */
uint64_t hist_count_below_pow2(const struct hist *h, int k);

/* pool.c: copy a pool's histograms (queue, hold, connect) under its mutex.
 * 0, or -1 before the pool had any (nothing recorded yet). */
int pool_hists_copy(dbpool *p, struct hist *queue, struct hist *hold, struct hist *connect);

#endif
