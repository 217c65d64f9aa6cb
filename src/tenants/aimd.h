/* aimd.h - the adaptive cap of a registry sharing a server with other processes
 * (docs/scaling.md): pure decision logic on an injected clock, no lock, no I/O. */
#ifndef DBPOOL_AIMD_H
#define DBPOOL_AIMD_H

#include "namespace.h"

#include <stdint.h>

/* Refusals of connects that were already in flight when the cap went down
 * are the same event: they do not count for this many ms after a decrease
 * (200 ms before bench/sim showed 500 ms fairer between processes). */
#define AIMD_DECREASE_GUARD_MS 500

/*
 * The cap of one process. Events in, decisions out: a refused connect
 * (aimd_refused) may lower the cap, the periodic look (aimd_tick) may raise
 * it; the caller sheds what is over the cap (aimd_over) and wakes a waiting
 * tenant when the cap rose. The owner serialises calls (the registry's mutex).
 */
struct aimd {
    int on;           /* 0: the cap stays at max; refusals are only counted */
    int max, min;     /* bounds of the cap */
    int64_t interval; /* ms between two steps up */
    int cap;          /* the cap now */
    int64_t last_full, last_decrease, next_increase;
    uint64_t refusals, decreases;
    int64_t debt; /* refusals counted towards the next decrease, in 1/max */
};

/* Start at the cap max. interval >= 1, 1 <= min <= max when on. */
void aimd_init(struct aimd *a, int on, int max, int min, int64_t interval);

/*
 * A connect was refused at `now` because the server is full, while `open`
 * connections counted against the cap (held: at most the cap). Each refusal
 * counts (held / max)^2, at least 1/8; when the count reaches one the cap
 * goes to 3/4 of what is held, not below min (multiplicative decrease), and
 * the next step up is one interval away. Refusals within
 * AIMD_DECREASE_GUARD_MS of a decrease do not count. Returns 1 if the cap
 * went down.
 */
int aimd_refused(struct aimd *a, int open, int64_t now);

/*
 * The periodic look at `now`. Additive increase: once per interval since the
 * latest decrease or step, the cap goes up by one if there is demand (tenants
 * wait for room, or the cap is all in use); without demand it stays where it
 * is (no creep back to the storm). Returns 1 if the cap went up: room for a
 * waiting tenant.
 */
int aimd_tick(struct aimd *a, int demand, int64_t now);

/* When aimd_tick has something to do next, given the owner's own next
 * deadline `due` (returned unchanged when the cap is at max or off); never
 * earlier than now + 1 so a late tick does not spin. */
int64_t aimd_due(const struct aimd *a, int64_t due, int64_t now);

/* Connections to shed: counted (open, minus evictions already asked for)
 * over the cap; <= 0: none. */
static inline int aimd_over(const struct aimd *a, int counted)
{
    return a->on ? counted - a->cap : 0;
}

#endif
