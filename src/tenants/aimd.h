/* aimd.h - the adaptive cap of a registry sharing a server with other processes
 * (docs/scaling.md): pure decision logic on an injected clock, no lock, no I/O. */
#ifndef DBPOOL_AIMD_H
#define DBPOOL_AIMD_H

#include "namespace.h"

#include <stdint.h>

/* How hard the refused share of connects pushes the cap down: each interval
 * the level loses AIMD_GAIN x share x level (at most half of it). 16 from
 * bench/sim (bench/RESULTS.md, section (l)): lower gains leave the processes
 * more refusals and no fairer, higher ones overshoot. */
#define AIMD_GAIN 16.0

/*
 * The cap of one process. Events in, decisions out: connects started
 * (aimd_connecting) and refused (aimd_refused) are counted; the periodic look
 * (aimd_tick) moves the cap, down by the share of connects refused, up by one
 * step while there is demand; the caller sheds what is over the cap
 * (aimd_over) and wakes a waiting tenant when the cap rose. The owner
 * serialises calls (the registry's mutex).
 */
struct aimd {
    int on;           /* 0: the cap stays at max; refusals are only counted */
    int max, min;     /* bounds of the cap */
    int64_t interval; /* ms between two looks */
    int cap;          /* the cap now: level, rounded */
    double level;     /* the cap before rounding */
    double share;     /* refused share of connects, averaged over the looks */
    int64_t last_full, last_decrease, next_look;
    uint64_t refusals, decreases, connects;
    uint64_t seen_refusals, seen_connects; /* at the latest look */
};

/* Start at the cap max. interval >= 1, 1 <= min <= max when on. */
void aimd_init(struct aimd *a, int on, int max, int min, int64_t interval);

/* A connect was started under the cap. */
static inline void aimd_connecting(struct aimd *a)
{
    a->connects++;
}

/* A connect was refused at `now` because the server is full (53300). It is
 * counted; the cap moves at the next look. */
void aimd_refused(struct aimd *a, int64_t now);

/*
 * The periodic look at `now`, once per interval. s = the share of the
 * connects started since the last look that the server refused, averaged
 * with the previous looks' (half each). The level goes down by
 * AIMD_GAIN x s x level (at most half), and not above `open` (what is held)
 * if a refusal came in the interval; then up by one if there is demand
 * (tenants wait for room, or the cap is all in use; without demand no creep
 * back to the storm); within [min, max]; the cap is the level rounded.
 * Returns 1 if the cap went up: room for a waiting tenant.
 */
int aimd_tick(struct aimd *a, int demand, int open, int64_t now);

/* When aimd_tick has something to do next, given the owner's own next
 * deadline `due` (returned unchanged when off); never earlier than now + 1
 * so a late tick does not spin. */
int64_t aimd_due(const struct aimd *a, int64_t due, int64_t now);

/* Connections to shed: counted (open, minus evictions already asked for)
 * over the cap; <= 0: none. */
static inline int aimd_over(const struct aimd *a, int counted)
{
    return a->on ? counted - a->cap : 0;
}

#endif
