/* queue.h - the checkout wait queue and its CoDel drop rule (docs/pool.md, "The checkout queue";
 * exact). Pure logic on an injected clock: the pool calls it under its mutex. */
#ifndef DBPOOL_QUEUE_H
#define DBPOOL_QUEUE_H

#include "namespace.h"

#include <pthread.h>
#include <stdint.h>

#include "list.h"

struct dbpool_slot;

/* Who is waiting: a thread blocked in dbpool_checkout (woken through its
 * condvar; it times out by itself), or an asynchronous request (async.c:
 * completed by posting to its completion queue; the manager expires its
 * deadline, since no thread is there to time out). */
enum waiter_kind { WAITER_THREAD = 0, WAITER_ASYNC };

/* A caller waiting for a connection. Lives on the caller's stack (a thread)
 * or in its request (async). */
struct waiter {
    struct list_node link;       /* in the queue */
    struct waiter *dropped_next; /* chain of waiters a call dropped */
    int64_t sent;                /* monotonic ms when it started waiting */
    int64_t sent_us;             /* the same in us, for the barge window */
    int status;                  /* 1 waiting; 0 handed a slot; <0 DBPOOL_E* */
    int64_t waited;              /* ms waited when dropped (for the message) */
    struct dbpool_slot *slot;    /* set when handed a connection */
    pthread_cond_t cond;         /* WAITER_THREAD: the caller sleeps on it */
    enum waiter_kind kind;
    /* WAITER_ASYNC only: */
    int64_t deadline;    /* ms; INT64_MAX = none */
    int64_t t0_us;       /* when the checkout began (queue-time stats) */
    unsigned long owner; /* submitting thread and code address, */
    void *caller;        /*   for leak reports */
};

/* Waiters, oldest first (n: how many). */
struct wqueue {
    struct list_head list;
    int n;
};

static inline struct waiter *wq_of(struct list_node *n)
{
    return n ? list_entry(n, struct waiter, link) : NULL;
}

void wq_init(struct wqueue *q);
void wq_push(struct wqueue *q, struct waiter *w);
void wq_remove(struct wqueue *q, struct waiter *w);
/* Oldest / newest waiter, the one after w; NULL if none. */
static inline struct waiter *wq_first(const struct wqueue *q)
{
    return wq_of(list_first(&q->list));
}
static inline struct waiter *wq_last(const struct wqueue *q)
{
    return wq_of(list_last(&q->list));
}
static inline struct waiter *wq_next(const struct wqueue *q, const struct waiter *w)
{
    return w->link.next == &q->list.node ? NULL : wq_of(w->link.next);
}

/* CoDel state, as in DBConnection.ConnectionPool. `busy` mirrors its
 * :busy/:ready state: set when a checkout has to wait, cleared when a
 * check-in finds the queue empty. */
struct codel {
    int64_t target, interval; /* ms */
    int64_t delay;            /* minimum wait observed this interval */
    int64_t next;             /* next interval boundary */
    int slow;
    int busy;
    int64_t poll_at;   /* when codel_poll is due */
    int64_t last_sent; /* oldest waiter's sent at the previous poll */
};

void codel_init(struct codel *c, int64_t target, int64_t interval, int64_t now);

/*
 * A connection became available at `now`. Returns the waiter that gets it
 * (already removed from q, status not yet set) or NULL: put the connection on
 * the idle list. Waiters dropped on the way are removed from q, get
 * status DBPOOL_EDROPPED and `waited`, and are chained through ->next onto
 * *dropped; the caller signals them.
 */
struct waiter *codel_checkin(struct codel *c, struct wqueue *q, int64_t now,
                             struct waiter **dropped);

/* Serve w (queued, not necessarily the oldest) now: it leaves q and its wait
 * counts towards the interval's minimum delay, as every hand-over's does.
 * For the pool's same-loop service (src/core/pool.c). Returns w. */
struct waiter *codel_take(struct codel *c, struct wqueue *q, struct waiter *w, int64_t now);

/* Mark the pool busy (a checkout found nothing idle and queued). */
void codel_mark_busy(struct codel *c);

/*
 * The periodic queue poll; the pool's timer calls it when now >= poll_at and
 * it sets the next poll_at. Drops (as above) when no waiter made progress for
 * a whole interval and the minimum delay exceeded the target.
 */
void codel_poll(struct codel *c, struct wqueue *q, int64_t now, struct waiter **dropped);

#endif
