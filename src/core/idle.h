/* idle.h - when to ping idle connections (docs/pool.md, "Idle pings"; exact, with the
 * fix of DBConnection PR #216). Pure logic on an injected clock. */
#ifndef DBPOOL_IDLE_H
#define DBPOOL_IDLE_H

#include "namespace.h"

#include <stdint.h>

struct idle_tick {
    int64_t interval; /* idle_interval, ms */
    int64_t cutoff;   /* ping connections checked in at or before this time */
    int64_t next;     /* when the next tick is due */
};

/* First tick at now + interval; its cutoff is `now`. */
void idle_init(struct idle_tick *t, int64_t interval, int64_t now);

/*
 * Run a tick at `now` (>= t->next). Returns the cutoff for *this* tick (the
 * previous tick's time) and makes `now` the cutoff of the next one, so every
 * connection idle for one interval is pinged within [interval, 2*interval).
 */
int64_t idle_advance(struct idle_tick *t, int64_t now);

/* Should a connection last checked in at `last_checkin` be pinged at a tick
 * with this cutoff, given `pinged` pings already chosen and `limit`? */
static inline int idle_due(int64_t last_checkin, int64_t cutoff, int pinged, int limit)
{
    return pinged < limit && last_checkin <= cutoff;
}

#endif
