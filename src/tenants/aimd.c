/* aimd.c - additive increase, multiplicative decrease of a registry's cap, so
 * processes that know nothing of each other share a server (as TCP shares a link). */
#include "aimd.h"

#include "clock.h"

void aimd_init(struct aimd *a, int on, int max, int min, int64_t interval)
{
    a->on = on;
    a->max = max;
    a->min = min;
    a->interval = interval;
    a->cap = max;
    a->last_full = 0;
    a->last_decrease = 0;
    a->next_increase = 0;
    a->refusals = 0;
    a->decreases = 0;
    a->debt = 0;
}

/* Within the guard after the latest decrease? A clock that reads earlier than
 * that decrease (a caller's stale `now`) is within it too. */
static int guarded(const struct aimd *a, int64_t now)
{
    return a->decreases > 0 &&
           (now < a->last_decrease || now - a->last_decrease < AIMD_DECREASE_GUARD_MS);
}

/*
 * A refused connect says the server is full, not who holds too much, and it
 * mostly reaches the processes trying to grow: one that sits at its cap and
 * replaces its own connections is rarely refused. If every refusal cut the
 * cap, the small holders would shrink further and the big ones keep their
 * share (0.43-0.95 Jain between 8 processes, bench/sim). So a refusal counts
 * in proportion to the square of the share held, (held / max)^2, but at
 * least 1/8: the cap goes down when the count reaches one, at once for a
 * process at its max, after about four refusals at half of it. Big holders
 * thus give back more often and more (3/4 of what they hold), as TCP flows
 * with bigger windows see more losses. Only a decrease starts a new interval
 * before the next step up: a refusal that did not count does not stop a
 * small holder from probing upward.
 */
int aimd_refused(struct aimd *a, int open, int64_t now)
{
    a->refusals++;
    a->last_full = now;
    if (!a->on || guarded(a, now))
        return 0;
    int held = open < a->cap ? open : a->cap;
    int64_t w = (int64_t)held * held / a->max;
    if (w < a->max / 8)
        w = a->max / 8;
    if (w < 1)
        w = 1;
    a->debt += w;
    if (a->debt < a->max)
        return 0;
    a->debt = 0;
    int to = held * 3 / 4;
    if (to < a->min)
        to = a->min;
    if (to >= a->cap)
        return 0;
    a->cap = to;
    a->decreases++;
    a->last_decrease = now;
    a->next_increase = deadline_add(now, a->interval);
    return 1;
}

int aimd_tick(struct aimd *a, int demand, int64_t now)
{
    if (!a->on || a->cap >= a->max || now < a->next_increase)
        return 0;
    /* the next look is one interval away whether or not the cap moves */
    a->next_increase = deadline_add(now, a->interval);
    if (!demand)
        return 0;
    a->cap++;
    return 1;
}

int64_t aimd_due(const struct aimd *a, int64_t due, int64_t now)
{
    if (!a->on || a->cap >= a->max || a->next_increase >= due)
        return due;
    return a->next_increase > now ? a->next_increase : now + 1;
}
