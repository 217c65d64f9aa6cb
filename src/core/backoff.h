/* backoff.h - reconnect delays after failed connects (docs/pool.md, "Reconnect backoff"; exact). */
#ifndef DBPOOL_BACKOFF_H
#define DBPOOL_BACKOFF_H

#include "namespace.h"

#include <stdint.h>

#include "dbpool.h"

/* Small per-slot state; no locking (the owner - the manager - serialises use). */
struct backoff {
    dbpool_backoff_type type;
    int64_t min, max; /* resolved bounds, ms */
    int64_t prev;     /* previous delay; 0 = none since the last reset */
    uint64_t rng;     /* xorshift state, never 0 */
};

/* min < 0 means "auto": 1000 ms, or min(1000, max). Seed 0 is replaced. */
void backoff_init(struct backoff *b, dbpool_backoff_type type, int64_t min, int64_t max,
                  uint64_t seed);
/* Delay before the next connect attempt, in ms; -1 for DBPOOL_BACKOFF_STOP. */
int64_t backoff_next(struct backoff *b);
/* After a successful connect: the next failure starts again from min. */
void backoff_reset(struct backoff *b);

/* Uniform integer in [lo, hi] (inclusive) from an xorshift64* state. */
int64_t rng_range(uint64_t *state, int64_t lo, int64_t hi);

#endif
