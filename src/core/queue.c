/* queue.c - the checkout wait queue and the CoDel rule that sheds load.
 * Follows DBConnection.ConnectionPool (docs/pool.md, "The checkout queue"); pure, clock injected.
 */
#include "queue.h"

#include <stddef.h>

#include "dbpool.h"

void wq_init(struct wqueue *q)
{
    list_init(&q->list);
    q->n = 0;
}

void wq_push(struct wqueue *q, struct waiter *w)
{
    list_push_tail(&q->list, &w->link);
    q->n++;
}

void wq_remove(struct wqueue *q, struct waiter *w)
{
    list_del(&q->list, &w->link);
    q->n--;
}

void codel_init(struct codel *c, int64_t target, int64_t interval, int64_t now)
{
    c->target = target;
    c->interval = interval;
    c->delay = 0;
    c->next = now;
    c->slow = 0;
    c->busy = 0;
    c->poll_at = now + interval;
    c->last_sent = now;
}

void codel_mark_busy(struct codel *c)
{
    c->busy = 1;
}

static void drop(struct wqueue *q, struct waiter *w, int64_t now, struct waiter **dropped)
{
    wq_remove(q, w);
    w->status = DBPOOL_EDROPPED;
    w->waited = now - w->sent;
    w->dropped_next = *dropped;
    *dropped = w;
}

/* Hand-over bookkeeping of DBConnection's go/5: the interval's delay is the
 * minimum wait seen. */
static struct waiter *go(struct codel *c, struct wqueue *q, struct waiter *w, int64_t now)
{
    wq_remove(q, w);
    if (now - w->sent < c->delay)
        c->delay = now - w->sent;
    return w;
}

struct waiter *codel_take(struct codel *c, struct wqueue *q, struct waiter *w, int64_t now)
{
    return go(c, q, w, now);
}

/*
 * A connection is free. Outside overload (`busy` clear) it just goes idle.
 * At an interval boundary the interval's verdict is taken (slow = the
 * smallest wait seen exceeded target) and the oldest waiter is served. In a
 * slow interval every waiter that already waited over 2*target is dropped:
 * serving it late helps nobody, and shedding it is what lets the queue drain.
 */
struct waiter *codel_checkin(struct codel *c, struct wqueue *q, int64_t now,
                             struct waiter **dropped)
{
    struct waiter *w;

    if (!c->busy)
        return NULL;

    if (now >= c->next) { /* dequeue_first */
        c->slow = c->delay > c->target;
        c->next = now + c->interval;
        w = wq_first(q);
        if (!w) {
            c->delay = 0;
            c->busy = 0;
            return NULL;
        }
        c->delay = now - w->sent;
        return go(c, q, w, now);
    }

    if (!c->slow) { /* dequeue_fast */
        w = wq_first(q);
        if (w)
            return go(c, q, w, now);
    } else { /* dequeue_slow */
        while ((w = wq_first(q)) != NULL) {
            if (now - w->sent > 2 * c->target)
                drop(q, w, now, dropped);
            else
                return go(c, q, w, now);
        }
    }
    c->delay = 0;
    c->busy = 0;
    return NULL;
}

/*
 * Every interval: if the oldest waiter is still the one seen at the previous
 * poll (nobody was served for a whole interval), the boundary is taken here
 * too, since no check-in arrived to take it, and in a slow interval all
 * waiters older than 2*target are dropped at once.
 */
void codel_poll(struct codel *c, struct wqueue *q, int64_t now, struct waiter **dropped)
{
    struct waiter *w = wq_first(q);
    int64_t last_sent = c->last_sent;

    c->poll_at = now + c->interval;
    c->last_sent = w ? w->sent : now;

    if (!w || w->sent > last_sent || !c->busy)
        return;

    int64_t d = now - w->sent;
    if (now >= c->next && c->delay > c->target) {
        c->slow = 1;
        c->delay = d;
        c->next = now + c->interval;
        int64_t min_sent = now - 2 * c->target;
        while ((w = wq_first(q)) != NULL && w->sent < min_sent)
            drop(q, w, now, dropped);
    } else if (now >= c->next) {
        c->slow = 0;
        c->delay = d;
        c->next = now + c->interval;
    }
}
