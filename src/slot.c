/* slot.c - connection life cycle, run by the manager thread: connects, pings,
 * backoff, recycling, hold timeouts, the idle tick and the queue poll. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "manager.h"
#include "pool.h"

enum { OP_CONNECT = 1, OP_RECYCLE, OP_PING, OP_FAIL, OP_CLOSE };

#define STILL_DOWN_EVERY_MS 30000

/* Close a slot's connection; the caller owns the slot. Any thread. */
void slot_disconnect(struct dbpool *p, struct dbpool_slot *s)
{
    manager_unwatch(s);
    if (s->cancel_token && p->drv->cancel_free)
        p->drv->cancel_free(s->cancel_token);
    s->cancel_token = NULL;
    if (s->conn)
        p->drv->disconnect(p->ctx, s->conn);
    s->conn = NULL;
}

struct cancel_job {
    const dbpool_driver *drv;
    void *token;
};

static void cancel_run(void *arg)
{
    struct cancel_job *j = arg;
    j->drv->cancel_run(j->token);
}

static void cancel_free(void *arg)
{
    struct cancel_job *j = arg;
    if (j->drv->cancel_free)
        j->drv->cancel_free(j->token);
    dbpool_free(j);
}

/* ---- outcomes (pool mutex held) ------------------------------------------ */

static void connected_locked(struct dbpool *p, struct dbpool_slot *s, int64_t now)
{
    backoff_reset(&s->backoff);
    p->n_connects++;
    p->fail_streak = 0;
    p->starting_up = 0;
    s->broken = 0;
    s->epoch = p->epoch;
    s->expires_at = 0;
    if (p->cfg.max_lifetime) {
        /* up to 10% jitter so connections opened together do not all
         * reconnect together */
        s->expires_at = now + p->cfg.max_lifetime - rng_range(&p->rng, 0, p->cfg.max_lifetime / 10);
    }
    pool_event_locked(p, DBPOOL_EV_CONNECTED, 0, now, "");
    pool_release_locked(p, s, now);
    pool_update_state_locked(p, now);
}

/* `not_yet`: the server is starting up (57P03): retry, but callers wait
 * rather than fail fast, so it does not count towards DOWN. */
static void connect_failed_locked(struct dbpool *p, struct dbpool_slot *s, const char *err,
                                  int not_yet, int64_t now)
{
    int64_t delay = backoff_next(&s->backoff);

    p->n_connect_failures++;
    /* the server answered "starting up": it is coming back, not down */
    p->fail_streak = not_yet ? 0 : p->fail_streak + 1;
    p->starting_up = not_yet;
    p->down_attempts++;
    snprintf(p->last_error, sizeof(p->last_error), "%s", err);
    pool_event_locked(p, DBPOOL_EV_CONNECT_FAILED, 0, now, err);
    if (delay < 0 && not_yet)
        delay = p->cfg.backoff_max; /* even backoff_type stop waits out a startup */
    if (delay < 0) {
        slot_move(p, s, SLOT_STOPPED);
    } else {
        slot_move(p, s, SLOT_BACKOFF);
        s->timer_at = now + delay;
    }
    /* One line per failure would be a wall of text during an outage: debug
     * only; the state change logs once, then a summary every 30 s. */
    plog(p, DBPOOL_LOG_DEBUG, "connect failed (retry in %lld ms): %s", (long long)delay, err);
    dbpool_state before = p->state;
    pool_update_state_locked(p, now);
    if (p->state != before) {
        p->down_attempts = 0;
    } else if (p->state == DBPOOL_STATE_DOWN && now - p->down_logged_at >= STILL_DOWN_EVERY_MS) {
        plog(p, DBPOOL_LOG_WARNING, "still down after %lld s, %d attempts: %s",
             (long long)((now - p->state_since) / 1000), p->down_attempts, err);
        p->down_logged_at = now;
        p->down_attempts = 0;
    }
}

static void ping_failed_locked(struct dbpool *p, struct dbpool_slot *s, const char *err,
                               int64_t now)
{
    p->n_ping_failures++;
    p->n_disconnects++;
    s->broken = 1;
    plog(p, DBPOOL_LOG_INFO, "idle connection failed its ping, reconnecting: %s", err);
    pool_event_locked(p, DBPOOL_EV_DISCONNECTED, 0, now, err);
    /* a working connection that breaks reconnects at once (no backoff) */
    slot_move(p, s, p->cfg.backoff_type == DBPOOL_BACKOFF_STOP ? SLOT_STOPPED : SLOT_PENDING);
    pool_update_state_locked(p, now);
}

/*
 * Apply the result `r` of a driver step on a CONNECTING or PINGING slot.
 * Called without the pool mutex; the manager owns the slot.
 */
static void progress(struct dbpool *p, struct dbpool_slot *s, int r, int fd, const char *err,
                     int64_t now)
{
    enum slot_state st = s->state; /* stable: only the manager moves these */

    if (r == DBPOOL_IO_READ || r == DBPOOL_IO_WRITE) {
        if (fd >= 0) {
            manager_watch(s, fd, r);
            return;
        }
        r = DBPOOL_IO_FAIL;
        err = "driver gave no socket";
    }
    manager_unwatch(s);
    int not_yet = r == DBPOOL_IO_NOT_YET;
    if (not_yet)
        r = DBPOOL_IO_FAIL;
    if (r == DBPOOL_IO_DONE && st == SLOT_CONNECTING && p->drv->cancel_prepare)
        s->cancel_token = p->drv->cancel_prepare(p->ctx, s->conn);
    if (r != DBPOOL_IO_DONE)
        slot_disconnect(p, s);

    pthread_mutex_lock(&p->mu);
    if (st == SLOT_CONNECTING) {
        if (r == DBPOOL_IO_DONE)
            connected_locked(p, s, now);
        else
            connect_failed_locked(p, s, err && *err ? err : "connect failed", not_yet, now);
    } else {
        if (r == DBPOOL_IO_DONE) {
            p->n_pings++;
            pool_release_locked(p, s, now); /* a fresh check-in: back to the tail */
        } else {
            ping_failed_locked(p, s, err && *err ? err : "ping failed", now);
        }
    }
    pthread_mutex_unlock(&p->mu);
}

static void run_op(struct dbpool *p, struct dbpool_slot *s, int op, int64_t now)
{
    char err[256] = "";
    int fd = -1, r;

    switch (op) {
    case OP_RECYCLE:
        slot_disconnect(p, s);
        pthread_mutex_lock(&p->mu);
        p->n_disconnects++;
        pool_event_locked(p, DBPOOL_EV_DISCONNECTED, 0, now,
                          "recycled (max_lifetime or dbpool_reconnect)");
        pthread_mutex_unlock(&p->mu);
        /* fall through */
    case OP_CONNECT:
        s->conn = NULL;
        r = p->drv->connect_start(p->ctx, &s->conn, &fd, err, sizeof(err));
        progress(p, s, r, fd, err, now);
        break;
    case OP_PING:
        r = p->drv->ping_start ? p->drv->ping_start(p->ctx, s->conn, &fd, err, sizeof(err))
                               : DBPOOL_IO_DONE;
        progress(p, s, r, fd, err, now);
        break;
    case OP_CLOSE: /* the slot is DORMANT already; the manager still owns conn */
        slot_disconnect(p, s);
        break;
    case OP_FAIL:
        progress(p, s, DBPOOL_IO_FAIL, -1,
                 s->state == SLOT_CONNECTING ? "timeout while connecting"
                                             : "timeout waiting for ping reply",
                 now);
        break;
    }
}

void slot_io(struct dbpool_slot *s, int64_t now)
{
    struct dbpool *p = s->pool;
    char err[256] = "";
    int fd = s->fd, r;

    pthread_mutex_lock(&p->mu);
    enum slot_state st = s->state;
    int closing = p->closing;
    pthread_mutex_unlock(&p->mu);
    if (closing || s->fd < 0 || (st != SLOT_CONNECTING && st != SLOT_PINGING))
        return; /* a stale event */
    if (st == SLOT_CONNECTING)
        r = p->drv->connect_poll(p->ctx, s->conn, &fd, err, sizeof(err));
    else
        r = p->drv->ping_poll(p->ctx, s->conn, &fd, err, sizeof(err));
    progress(p, s, r, fd, err, now);
}

static void todo_push(struct dbpool_slot **todo, struct dbpool_slot *s, int op)
{
    s->todo_op = op;
    s->todo = *todo;
    *todo = s;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/*
 * Decide under the pool mutex, act without it: driver calls never run with
 * the mutex held, so callers' checkouts never wait on the network.
 */
int64_t slot_service(struct dbpool *p, int64_t now)
{
    struct dbpool_slot *todo = NULL, *s, *next;
    struct waiter *dropped = NULL;
    int64_t due = INT64_MAX;

    pthread_mutex_lock(&p->mu);
    if (p->closing) {
        pthread_mutex_unlock(&p->mu);
        return INT64_MAX;
    }
    for (s = p->lists[SLOT_BACKOFF].head; s; s = next) {
        next = s->next;
        if (s->timer_at <= now)
            slot_move(p, s, SLOT_PENDING);
    }
    for (s = p->lists[SLOT_CONNECTING].head; s; s = s->next)
        if (s->timer_at <= now)
            todo_push(&todo, s, OP_FAIL);
    for (s = p->lists[SLOT_PINGING].head; s; s = s->next)
        if (s->timer_at <= now)
            todo_push(&todo, s, OP_FAIL);
    p->budget_denied = 0;
    while ((s = p->lists[SLOT_PENDING].head) != NULL) {
        if (p->budget && !p->budget->acquire(p->budget_owner, p)) {
            p->budget_denied = 1; /* the budget's owner wakes us when it can */
            break;
        }
        slot_move(p, s, SLOT_CONNECTING);
        s->timer_at = now + p->cfg.connect_timeout;
        todo_push(&todo, s, OP_CONNECT);
    }

    /* hold_timeout: cancel the running query now; the lease is marked so the
     * connection is discarded at check-in. The pool never frees it. */
    for (s = p->lists[SLOT_BUSY].head; s; s = s->next) {
        if (!s->hold_deadline || atomic_load(&s->expired) || s->hold_deadline > now)
            continue;
        atomic_store(&s->expired, 1);
        p->n_hold_timeouts++;
        plog(p, DBPOOL_LOG_WARNING,
             "connection held for %lld ms (hold_timeout %lld ms): "
             "cancelling its query; it is discarded at check-in",
             (long long)(now - s->checkout_at), (long long)p->cfg.hold_timeout);
        pool_event_locked(p, DBPOOL_EV_HOLD_TIMEOUT, now - s->checkout_at, now, "");
        if (s->cancel_token && p->drv->cancel_run) {
            struct cancel_job *j = dbpool_malloc(sizeof(*j));
            if (j) {
                j->drv = p->drv;
                j->token = s->cancel_token;
                s->cancel_token = NULL; /* the job owns it now */
                manager_submit(cancel_run, j, cancel_free);
            }
        }
    }

    /* leak_threshold: report once, with who checked it out */
    if (p->cfg.leak_threshold) {
        for (s = p->lists[SLOT_BUSY].head; s; s = s->next) {
            if (s->leak_reported || now - s->checkout_at < p->cfg.leak_threshold)
                continue;
            char where[96];
            s->leak_reported = 1;
            snprintf(where, sizeof(where), "thread %#lx, checked out from %p", s->owner, s->caller);
            plog(p, DBPOOL_LOG_WARNING, "connection held for %lld ms, leak suspected (%s)",
                 (long long)(now - s->checkout_at), where);
            pool_event_locked(p, DBPOOL_EV_LEAK_SUSPECTED, now - s->checkout_at, now, where);
        }
    }

    /* Close idle connections nobody needs: those idle past idle_timeout while
     * more than min_size are open, and those a registry's cap asked for
     * (oldest first: the least recently used). */
    int open = p->lists[SLOT_IDLE].n + p->lists[SLOT_BUSY].n + p->lists[SLOT_PINGING].n +
               p->lists[SLOT_CONNECTING].n;
    int evict = atomic_load(&p->evict_requests); /* leftovers are served at check-in */
    while ((s = p->lists[SLOT_IDLE].head) != NULL) {
        int stale = p->cfg.idle_timeout && open > p->min_size &&
                    now - s->last_checkin >= p->cfg.idle_timeout;
        if (!stale && evict <= 0)
            break;
        if (!stale) {
            evict--;
            atomic_fetch_sub(&p->evict_requests, 1);
        }
        s->broken = 0;
        p->n_disconnects++;
        pool_event_locked(p, DBPOOL_EV_DISCONNECTED, 0, now,
                          stale ? "idle_timeout" : "evicted for another pool (cap)");
        slot_move(p, s, SLOT_DORMANT);
        todo_push(&todo, s, OP_CLOSE);
        open--;
    }

    /* max_lifetime and dbpool_reconnect(): recycle idle connections due */
    for (s = p->lists[SLOT_IDLE].head; s; s = next) {
        next = s->next;
        if (s->expires_at && now >= s->expires_at) {
            slot_move(p, s, SLOT_CONNECTING);
            s->timer_at = now + p->cfg.connect_timeout;
            todo_push(&todo, s, OP_RECYCLE);
        }
    }

    /* idle ping: oldest first, up to idle_limit, none while callers wait */
    if (now >= p->idle.next) {
        int64_t cutoff = idle_advance(&p->idle, now);
        int pinged = 0;
        for (s = p->lists[SLOT_IDLE].head; s && p->waiters.n == 0; s = next) {
            next = s->next;
            if (!idle_due(s->last_checkin, cutoff, pinged, p->cfg.idle_limit))
                break; /* the list is in check-in order */
            slot_move(p, s, SLOT_PINGING);
            s->timer_at = now + p->cfg.ping_timeout;
            todo_push(&todo, s, OP_PING);
            pinged++;
        }
    }

    if (now >= p->codel.poll_at && !p->paused) {
        codel_poll(&p->codel, &p->waiters, now, &dropped);
        pool_signal_dropped(p, dropped);
    }
    pthread_mutex_unlock(&p->mu);

    while ((s = todo) != NULL) {
        todo = s->todo;
        s->todo = NULL;
        run_op(p, s, s->todo_op, now);
    }

    /* when to come back */
    pthread_mutex_lock(&p->mu);
    /* the idle tick matters only while the pool has connections (a check-in
     * can make one idle at any time without telling us) */
    int conns = p->lists[SLOT_IDLE].n + p->lists[SLOT_BUSY].n + p->lists[SLOT_PINGING].n +
                p->lists[SLOT_CONNECTING].n;
    due = conns ? p->idle.next : INT64_MAX;
    if (p->waiters.n)
        due = min64(due, p->codel.poll_at);
    if (p->lists[SLOT_PENDING].n && !p->budget_denied)
        due = now;
    if (p->cfg.idle_timeout && p->lists[SLOT_IDLE].head)
        due = min64(due, p->lists[SLOT_IDLE].head->last_checkin + p->cfg.idle_timeout);
    for (s = p->lists[SLOT_BACKOFF].head; s; s = s->next)
        due = min64(due, s->timer_at);
    for (s = p->lists[SLOT_CONNECTING].head; s; s = s->next)
        due = min64(due, s->timer_at);
    for (s = p->lists[SLOT_PINGING].head; s; s = s->next)
        due = min64(due, s->timer_at);
    for (s = p->lists[SLOT_BUSY].head; s; s = s->next) {
        if (s->hold_deadline && !atomic_load(&s->expired))
            due = min64(due, s->hold_deadline);
        if (p->cfg.leak_threshold && !s->leak_reported)
            due = min64(due, s->checkout_at + p->cfg.leak_threshold);
    }
    for (s = p->lists[SLOT_IDLE].head; s; s = s->next)
        if (s->expires_at)
            due = min64(due, s->expires_at);
    pthread_mutex_unlock(&p->mu);
    return due;
}
