/* backoff.c - delays between reconnect attempts after a failed connect, mirroring
 * DBConnection.Backoff (docs/pool.md, "Reconnect backoff"): exp, rand, rand_exp and stop. */
#include "backoff.h"

#define DEFAULT_MIN 1000
#define DEFAULT_MAX 30000
/* Any non-zero constant works; this one is the splitmix64 increment. */
#define SEED_FALLBACK UINT64_C(0x9E3779B97F4A7C15)

/* splitmix64 finaliser: spreads small or similar seeds over the whole state so
 * that slots seeded 1, 2, 3... do not start with correlated sequences. */
static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* xorshift64* (Vigna). The state must never be 0, or it stays 0 forever. */
static uint64_t next64(uint64_t *state)
{
    uint64_t x = *state;

    if (x == 0)
        x = SEED_FALLBACK;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(0x2545F4914F6CDD1D);
}

/*
 * Unbiased: draws below 2^64 mod span are rejected, so every value of the
 * range is equally likely (at most one retry in 2 for huge spans, practically
 * never for the millisecond spans used here). Arithmetic is unsigned so that
 * lo = INT64_MIN, hi = INT64_MAX does not overflow.
 */
int64_t rng_range(uint64_t *state, int64_t lo, int64_t hi)
{
    uint64_t span, threshold, r;

    if (lo >= hi)
        return lo;
    span = (uint64_t)hi - (uint64_t)lo + 1; /* 0 means all 2^64 values */
    if (span == 0)
        return (int64_t)next64(state);
    threshold = (0 - span) % span;
    do
        r = next64(state);
    while (r < threshold);
    return (int64_t)((uint64_t)lo + r % span);
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/*
 * Bounds as DBConnection resolves them: max <= 0 means the default 30000 ms
 * (raised to min when an explicit min is larger, as DBConnection does when
 * only backoff_min is given); min < 0 means min(1000, max). An explicit
 * min > max is clamped to max rather than rejected.
 */
void backoff_init(struct backoff *b, dbpool_backoff_type type, int64_t min, int64_t max,
                  uint64_t seed)
{
    if (max <= 0)
        max = max64(min, DEFAULT_MAX);
    if (min < 0)
        min = min64(DEFAULT_MIN, max);
    if (min > max)
        min = max;
    b->type = type;
    b->min = min;
    b->max = max;
    b->prev = 0;
    b->rng = mix(seed != 0 ? seed : SEED_FALLBACK);
    if (b->rng == 0)
        b->rng = SEED_FALLBACK;
}

/*
 * rand_exp is "decorrelated jitter": each delay is drawn between the previous
 * one (but no higher than lower = max(min, max/3), so the floor cannot climb
 * to max and pin every slot to the same delay) and three times the previous
 * one, capped at max (the caps are written so that a huge max cannot
 * overflow). prev == 0 stands for DBConnection's initial state, in
 * which prev is min.
 */
int64_t backoff_next(struct backoff *b)
{
    int64_t prev = b->prev != 0 ? b->prev : b->min;
    int64_t next;

    switch (b->type) {
    case DBPOOL_BACKOFF_EXP:
        next = b->prev == 0 ? b->min : prev > b->max / 2 ? b->max : 2 * prev;
        break;
    case DBPOOL_BACKOFF_RAND:
        next = rng_range(&b->rng, b->min, b->max);
        break;
    case DBPOOL_BACKOFF_RAND_EXP: {
        int64_t lower = max64(b->min, b->max / 3);
        next = rng_range(&b->rng, min64(prev, lower), prev > b->max / 3 ? b->max : 3 * prev);
        break;
    }
    case DBPOOL_BACKOFF_STOP:
    default:
        return -1;
    }
    b->prev = next;
    return next;
}

void backoff_reset(struct backoff *b)
{
    b->prev = 0;
}
