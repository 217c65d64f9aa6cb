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
    a->level = max;
    a->share = 0;
    a->last_full = 0;
    a->last_decrease = 0;
    a->next_look = 0;
    a->refusals = 0;
    a->decreases = 0;
    a->connects = 0;
    a->seen_refusals = 0;
    a->seen_connects = 0;
}

void aimd_refused(struct aimd *a, int64_t now)
{
    a->refusals++;
    a->last_full = now;
}

/*
 * Why the refused share, and why at a look rather than at each refusal.
 * Refusals land on the processes that connect when the server is full, and
 * how often a process connects depends on its cap: one below the number of
 * its hot tenants evicts and reconnects all the time, one above keeps its
 * connections. A cut per refusal (even weighted by the share held, the rule
 * before) thus fed back: the process that happened to be high connected
 * less, was refused less, and stayed high with 2-3x the others' calls (Jain
 * 0.70-0.95 between 8 processes, bench/RESULTS.md (l)). The share of one's
 * own connects refused is closer to the server's state, about the same for
 * every process that connects, so every process answers the same signal
 * with a cut in proportion to its level; with the same step up, the levels
 * draw together (Chiu and Jain's argument for synchronised AIMD): >= 0.95
 * in 37 of 40 runs. Not always: a process above its working set mostly
 * reconnects into the backend slot it has just freed, is rarely refused,
 * and may keep a high cap (the other 3; docs/scaling.md). Averaging
 * the share over two looks keeps one unlucky burst from cutting one process
 * alone. With a refusal in the interval the cap also comes down to what is
 * held: a process that holds nothing and is refused goes to min.
 */
int aimd_tick(struct aimd *a, int demand, int open, int64_t now)
{
    if (!a->on || now < a->next_look)
        return 0;
    a->next_look = deadline_add(now, a->interval);
    uint64_t refused = a->refusals - a->seen_refusals;
    uint64_t tried = a->connects - a->seen_connects;
    a->seen_refusals = a->refusals;
    a->seen_connects = a->connects;
    double s = tried ? (double)refused / (double)tried : (refused ? 1.0 : 0.0);
    if (s > 1)
        s = 1;
    a->share = (a->share + s) / 2;

    double down = AIMD_GAIN * a->share * a->level;
    double level = a->level - (down < a->level / 2 ? down : a->level / 2);
    if (refused && level > open)
        level = open;
    if (demand)
        level += 1;
    if (level < a->min)
        level = a->min;
    if (level > a->max)
        level = a->max;
    a->level = level;

    int cap = (int)(level + 0.5), was = a->cap;
    a->cap = cap;
    if (cap < was) {
        a->decreases++;
        a->last_decrease = now;
    }
    return cap > was;
}

int64_t aimd_due(const struct aimd *a, int64_t due, int64_t now)
{
    if (!a->on || a->next_look >= due)
        return due;
    return a->next_look > now ? a->next_look : now + 1;
}
