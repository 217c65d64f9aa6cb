/* idle.c - the idle-ping tick: which idle connections a tick pings.
 * See idle.h for the rule; the pool walks its idle list (oldest first) with it. */
#include "idle.h"

void idle_init(struct idle_tick *t, int64_t interval, int64_t now)
{
    t->interval = interval;
    t->cutoff = now;
    t->next = now + interval;
}

int64_t idle_advance(struct idle_tick *t, int64_t now)
{
    int64_t cutoff = t->cutoff;

    /* PR #216: the next tick's cutoff is this tick's time, not now - interval. */
    t->cutoff = now;
    t->next = now + t->interval;
    return cutoff;
}
