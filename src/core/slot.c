/* slot.c - connection life cycle, run as the pool's manager client: connects
 * (after a name lookup on a worker thread), pings, backoff, recycling, hold
 * timeouts, the idle tick, the queue poll and async requests' deadlines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "pool.h"
#include "workers.h"

enum { OP_CONNECT = 1, OP_RECYCLE, OP_PING, OP_FAIL, OP_CLOSE };

#define STILL_DOWN_EVERY_MS 30000

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Close a slot's connection (and free what the upper layer kept with it);
 * the caller owns the slot. Any thread. */
void slot_disconnect(struct dbpool *p, struct dbpool_slot *s)
{
    manager_unwatch(&s->watch);
    if (s->cancel_token && p->drv->cancel_free)
        p->drv->cancel_free(s->cancel_token);
    s->cancel_token = NULL;
    if (s->user && s->user_free)
        s->user_free(s->user);
    s->user = NULL;
    if (s->conn)
        p->drv->disconnect(p->ctx, s->conn);
    s->conn = NULL;
}

/* ---- cancel (hold_timeout), on a worker: one lane per server ---------------- */

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
    mem_free(j);
}

/* Pool mutex held: the token moves to the job (the connection is discarded at
 * check-in anyway). A cancel that cannot be queued is dropped, never run here:
 * it may block. */
static void submit_cancel(struct dbpool *p, struct dbpool_slot *s)
{
    struct cancel_job *j;

    if (!s->cancel_token || !p->drv->cancel_run || !(j = mem_malloc(sizeof(*j))))
        return;
    j->drv = p->drv;
    j->token = s->cancel_token;
    s->cancel_token = NULL;
    const char *lane = p->drv->cancel_target ? p->drv->cancel_target(j->token) : p->cfg.name;
    if (workers_submit(lane, cancel_run, j, cancel_free) != 0) {
        plog(p, DBPOOL_LOG_WARNING, "cannot queue a cancel request: %s", dbpool_last_error());
        cancel_free(j);
    }
}

/* ---- name lookup (driver resolve), on a worker ------------------------------ */

/*
 * One lookup per pool at a time, shared by every slot waiting to connect when
 * it completes; the next connect after that looks up again, so a DNS change
 * (failover) is seen. The job holds a reference (p->jobs): the pool is not
 * freed while it runs, however long the lookup takes.
 */
struct resolve_job {
    struct dbpool *p;
    void *resolved;
    char err[256];
};

static void resolve_run(void *arg)
{
    struct resolve_job *j = arg;
    j->resolved = j->p->drv->resolve(j->p->ctx, j->err, sizeof(j->err));
}

static void resolve_done(void *arg)
{
    struct resolve_job *j = arg;
    struct dbpool *p = j->p;

    pthread_mutex_lock(&p->mu);
    p->jobs--;
    p->resolving = 0;
    if (!p->closing) {
        p->resolved = j->resolved;
        p->resolve_failed = !j->resolved;
        mem_free(p->resolve_err);
        p->resolve_err = j->resolved ? NULL : mem_strdup(j->err[0] ? j->err : "name lookup failed");
        j->resolved = NULL;
        manager_poke(&p->mc); /* under the mutex: p is alive */
    }
    int last = pool_last_out_locked(p);
    pthread_mutex_unlock(&p->mu);
    if (j->resolved && p->drv->resolved_free)
        p->drv->resolved_free(j->resolved);
    mem_free(j);
    if (last)
        manager_release(&p->mc);
}

/* Pool mutex held. */
static void start_resolve(struct dbpool *p)
{
    struct resolve_job *j = mem_calloc(1, sizeof(*j));

    if (!j)
        return; /* retried at the next service */
    j->p = p;
    if (workers_submit(NULL, resolve_run, j, resolve_done) != 0) {
        mem_free(j);
        return;
    }
    p->resolving = 1;
    p->jobs++;
}

/* ---- recovery probe (probe_interval; pool mutex held) --------------------- */

/* Connects started after the probe succeeded are spread over this long, so a
 * fleet of pools does not hit a fresh server in the same millisecond. */
#define RECOVERY_SPREAD_MS 50

/* Should the pool probe? No usable connection, and the latest connect failed
 * (DOWN), met a server starting up (57P03, STARTING) or a full one (53300). */
static int want_probe(const struct dbpool *p)
{
    int usable = p->lists[SLOT_IDLE].n + p->lists[SLOT_BUSY].n + p->lists[SLOT_PINGING].n;

    return p->cfg.probe_interval > 0 && !p->closing && usable == 0 &&
           (p->fail_streak > 0 || p->starting_up || p->at_limit);
}

/*
 * Enter or leave probing. Entering: the slots already in BACKOFF and those
 * failing from now on wait (their own timers are ignored); the first probe
 * goes out probe_interval after the failure that started it. Leaving (the
 * probe or a connect in flight succeeded, or dbpool_restart): the waiting
 * slots connect at once but spread: the k-th of n at now + k*step + a random
 * [0, step) with step = max(1, RECOVERY_SPREAD_MS / n) ms, so no two start in
 * the same millisecond and all start within max(RECOVERY_SPREAD_MS, n) ms.
 */
static void probe_update_locked(struct dbpool *p, int64_t now)
{
    int want = want_probe(p);

    if (want && !p->probing) {
        p->probing = 1;
        p->probe = NULL;
        p->probe_at = deadline_add(now, p->cfg.probe_interval);
    } else if (!want && p->probing) {
        int n = p->lists[SLOT_BACKOFF].n, k = 0;
        int64_t step = n ? RECOVERY_SPREAD_MS / n : 1;
        if (step < 1)
            step = 1;
        p->probing = 0;
        p->probe = NULL;
        for (struct dbpool_slot *s = slot_first(p, SLOT_BACKOFF); s; s = slot_next(p, s), k++) {
            backoff_reset(&s->backoff);
            s->timer_at = now + k * step + rng_range(&p->rng, 0, step - 1);
        }
    }
}

/* While probing: park every PENDING slot but the probe in BACKOFF, and pick
 * the next probe when it is due and nothing is connecting. */
static void probe_pick_locked(struct dbpool *p, int64_t now)
{
    struct dbpool_slot *s, *next;

    for (s = slot_first(p, SLOT_PENDING); s; s = next) {
        next = slot_next(p, s);
        if (s != p->probe)
            slot_move(p, s, SLOT_BACKOFF);
    }
    if (!p->probe && !p->lists[SLOT_CONNECTING].n && now >= p->probe_at &&
        (s = slot_first(p, SLOT_BACKOFF)) != NULL) {
        slot_move(p, s, SLOT_PENDING);
        p->probe = s;
        p->probe_at = deadline_add(now, p->cfg.probe_interval);
    }
}

/* ---- outcomes (pool mutex held) ------------------------------------------ */

static void connected_locked(struct dbpool *p, struct dbpool_slot *s, int64_t now)
{
    backoff_reset(&s->backoff);
    p->n_connects++;
    if (p->hists && s->connect_start)
        hist_add(&p->hists->connect, (now - s->connect_start) * 1000);
    p->fail_streak = 0;
    p->starting_up = 0;
    p->at_limit = 0;
    s->broken = 0;
    s->uses = 0;
    s->epoch = p->epoch;
    s->expires_at = 0;
    if (p->cfg.max_lifetime) {
        /* up to 10% jitter so connections opened together do not all
         * reconnect together */
        s->expires_at = deadline_add(now, p->cfg.max_lifetime -
                                              rng_range(&p->rng, 0, p->cfg.max_lifetime / 10));
    }
    if (s == p->probe)
        p->probe = NULL;
    pool_event_locked(p, DBPOOL_EV_CONNECTED, 0, now, "");
    pool_ready_wake_locked(p);
    pool_release_locked(p, s, now);
    pool_update_state_locked(p, now);
    probe_update_locked(p, now); /* the others connect now, spread */
}

/* `why`: DBPOOL_IO_FAIL, or DBPOOL_IO_NOT_YET (the server is starting up,
 * 57P03) or DBPOOL_IO_FULL (it is at its connection limit, 53300): retry,
 * but callers wait rather than fail fast, so those do not count towards
 * DOWN: the server is there. */
static void connect_failed_locked(struct dbpool *p, struct dbpool_slot *s, const char *err,
                                  int why, int64_t now)
{
    int64_t delay = backoff_next(&s->backoff);
    int not_yet = why == DBPOOL_IO_NOT_YET, full = why == DBPOOL_IO_FULL;

    if (s == p->probe)
        p->probe = NULL;
    p->n_connect_failures++;
    p->fail_streak = not_yet || full ? 0 : p->fail_streak + 1;
    p->starting_up = not_yet;
    if (full && !p->at_limit) /* once per episode: the next connect clears it */
        plog(p, DBPOOL_LOG_INFO, "the server is at its connection limit; callers wait: %s", err);
    p->at_limit = full;
    if (full && p->budget && p->budget->full)
        p->budget->full(p->budget_owner, p, now); /* the registry lowers its cap */
    p->down_attempts++;
    snprintf(p->last_error, sizeof(p->last_error), "%s", err);
    pool_event_locked(p, DBPOOL_EV_CONNECT_FAILED, 0, now, err);
    if (delay < 0 && (not_yet || full))
        delay = p->cfg.backoff_max; /* even backoff_type stop waits out a startup
                                       or for room on a full server */
    if (delay < 0) {
        slot_move(p, s, SLOT_STOPPED);
    } else {
        slot_move(p, s, SLOT_BACKOFF);
        s->timer_at = deadline_add(now, delay);
    }
    /* One line per failure would be a wall of text during an outage: debug
     * only; the state change logs once, then a summary every 30 s. */
    dbpool_state before = p->state;
    pool_update_state_locked(p, now);
    probe_update_locked(p, now);
    if (p->probing && s->state == SLOT_BACKOFF)
        plog(p, DBPOOL_LOG_DEBUG, "connect failed (retry in %lld ms, by the pool's probe): %s",
             (long long)(p->probe_at > now ? p->probe_at - now : 0), err);
    else
        plog(p, DBPOOL_LOG_DEBUG, "connect failed (retry in %lld ms): %s", (long long)delay, err);
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

/* ---- after_connect_cb, on a worker ---------------------------------------- */

/*
 * The user's after-connect hook may block, so it runs on a worker (an
 * anonymous lane: hooks of one pool run in parallel and never queue behind
 * another pool's). Meanwhile the slot stays CONNECTING with `hooking` set:
 * the job owns its connection, so the manager's connect timer and
 * dbpool_close leave it alone; the job holds a pool reference (p->jobs) and,
 * when the hook returns, finishes the connect (or fails it, or closes it if
 * the pool was closed meanwhile).
 */
struct hook_job {
    struct dbpool *p;
    struct dbpool_slot *s;
    int rc;
    char err[256];
};

static void hook_run(void *arg)
{
    struct hook_job *j = arg;
    struct dbpool *p = j->p;
    void *conn = p->drv->native ? p->drv->native(j->s->conn) : j->s->conn;

    j->rc = p->cfg.after_connect_cb(p->cfg.hook_arg, conn, j->err, sizeof(j->err));
}

static void hook_done(void *arg)
{
    struct hook_job *j = arg;
    struct dbpool *p = j->p;
    struct dbpool_slot *s = j->s;
    int64_t now = clock_ms();

    pthread_mutex_lock(&p->mu);
    p->jobs--;
    s->hooking = 0;
    if (p->closing || j->rc != 0)
        slot_disconnect(p, s); /* ours: under the mutex, as dbpool_close does */
    if (p->closing) {
        slot_move(p, s, SLOT_STOPPED);
    } else if (j->rc == 0) {
        connected_locked(p, s, now);
    } else {
        char err[300];
        snprintf(err, sizeof(err), "after_connect_cb failed: %s",
                 j->err[0] ? j->err : "(no message)");
        connect_failed_locked(p, s, err, 0, now);
    }
    if (!p->closing)
        manager_poke(&p->mc); /* under the mutex: p is alive */
    int last = pool_last_out_locked(p);
    pthread_mutex_unlock(&p->mu);
    mem_free(j);
    if (last)
        manager_release(&p->mc);
}

/* Pool mutex held. 0 if the hook was started; else the connect fails. */
static int start_hook(struct dbpool *p, struct dbpool_slot *s)
{
    struct hook_job *j = mem_calloc(1, sizeof(*j));

    if (!j)
        return -1;
    j->p = p;
    j->s = s;
    s->hooking = 1;
    p->jobs++;
    if (workers_submit(NULL, hook_run, j, hook_done) != 0) {
        s->hooking = 0;
        p->jobs--;
        mem_free(j);
        return -1;
    }
    return 0;
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
            manager_watch(&s->watch, fd, r);
            return;
        }
        r = DBPOOL_IO_FAIL;
        err = "driver gave no socket";
    }
    manager_unwatch(&s->watch);
    int why = r; /* DBPOOL_IO_FAIL, _NOT_YET or _FULL when it failed */
    if (r == DBPOOL_IO_NOT_YET || r == DBPOOL_IO_FULL)
        r = DBPOOL_IO_FAIL;
    if (r == DBPOOL_IO_DONE && st == SLOT_CONNECTING && p->drv->cancel_prepare)
        s->cancel_token = p->drv->cancel_prepare(p->ctx, s->conn);
    if (r != DBPOOL_IO_DONE)
        slot_disconnect(p, s);

    pthread_mutex_lock(&p->mu);
    if (st == SLOT_CONNECTING) {
        if (r == DBPOOL_IO_DONE && p->cfg.after_connect_cb) {
            if (start_hook(p, s) != 0) {
                pthread_mutex_unlock(&p->mu);
                slot_disconnect(p, s);
                pthread_mutex_lock(&p->mu);
                connect_failed_locked(p, s, "after_connect_cb: cannot start a worker", 0, now);
            }
        } else if (r == DBPOOL_IO_DONE)
            connected_locked(p, s, now);
        else
            connect_failed_locked(p, s, err && *err ? err : "connect failed", why, now);
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

static void run_op(struct dbpool *p, struct dbpool_slot *s, int op, void *resolved, int64_t now)
{
    char err[256] = "";
    int fd = -1, r;

    switch (op) {
    case OP_RECYCLE: /* the slot is PENDING already: it reconnects next */
        slot_disconnect(p, s);
        pthread_mutex_lock(&p->mu);
        p->n_disconnects++;
        pool_event_locked(p, DBPOOL_EV_DISCONNECTED, 0, now,
                          "recycled (max_lifetime or dbpool_reconnect)");
        pthread_mutex_unlock(&p->mu);
        break;
    case OP_CONNECT:
        s->conn = NULL;
        if (resolved)
            r = p->drv->connect_resolved(p->ctx, resolved, &s->conn, &fd, err, sizeof(err));
        else
            r = p->drv->connect_start(p->ctx, &s->conn, &fd, err, sizeof(err));
        progress(p, s, r, fd, err, now);
        break;
    case OP_PING:
        r = p->drv->ping_start ? p->drv->ping_start(p->ctx, s->conn, &fd, err, sizeof(err))
                               : DBPOOL_IO_DONE;
        progress(p, s, r, fd, err, now);
        break;
    case OP_CLOSE: /* the slot is DORMANT or RETIRED already; the manager still owns conn */
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

/* The watcher of a CONNECTING or PINGING slot fired (manager thread). */
void slot_io(struct mwatch *w, int64_t now)
{
    struct dbpool_slot *s =
        (struct dbpool_slot *)(void *)((char *)w - offsetof(struct dbpool_slot, watch));
    struct dbpool *p = s->pool;
    char err[256] = "";
    int fd = w->fd, r;

    pthread_mutex_lock(&p->mu);
    enum slot_state st = s->state;
    pthread_mutex_unlock(&p->mu);
    if (st != SLOT_CONNECTING && st != SLOT_PINGING)
        return; /* a stale event */
    if (st == SLOT_CONNECTING)
        r = p->drv->connect_poll(p->ctx, s->conn, &fd, err, sizeof(err));
    else
        r = p->drv->ping_poll(p->ctx, s->conn, &fd, err, sizeof(err));
    progress(p, s, r, fd, err, now);
}

/* ---- the service pass: named rules, each deciding under the pool mutex ---- */

static void todo_push(struct dbpool_slot **todo, struct dbpool_slot *s, int op)
{
    s->todo_op = op;
    s->todo = *todo;
    *todo = s;
}

/* Backoff timers that ran out, connects and pings past their timeout. */
static void expire_timers(struct dbpool *p, struct dbpool_slot **todo, int64_t now)
{
    struct dbpool_slot *s, *next;

    /* while probing, BACKOFF slots wait for the probe, not for their timers */
    for (s = p->probing ? NULL : slot_first(p, SLOT_BACKOFF); s; s = next) {
        next = slot_next(p, s);
        if (s->timer_at <= now)
            slot_move(p, s, SLOT_PENDING);
    }
    for (s = slot_first(p, SLOT_CONNECTING); s; s = slot_next(p, s))
        if (s->timer_at <= now && !s->hooking)
            todo_push(todo, s, OP_FAIL);
    for (s = slot_first(p, SLOT_PINGING); s; s = slot_next(p, s))
        if (s->timer_at <= now)
            todo_push(todo, s, OP_FAIL);
}

/*
 * PENDING slots connect, within the budget (registry cap). With a driver that
 * resolves names, they first wait for a lookup on a worker thread; the
 * connect timeout starts when the connect does.
 */
static void start_connects(struct dbpool *p, struct dbpool_slot **todo, int64_t now,
                           void **resolved)
{
    struct dbpool_slot *s;

    p->budget_denied = 0;
    if (p->probing)
        probe_pick_locked(p, now); /* at most one PENDING: the probe */
    if (!slot_first(p, SLOT_PENDING)) {
        /* nobody waited for this lookup: the next connect looks up again */
        *resolved = p->resolved;
        p->resolved = NULL;
        p->resolve_failed = 0;
        return;
    }
    if (p->drv->resolve) {
        if (p->resolving)
            return;
        if (!p->resolved && !p->resolve_failed) {
            start_resolve(p);
            return;
        }
        if (p->resolve_failed) { /* every waiting slot fails this attempt */
            p->resolve_failed = 0;
            while ((s = slot_first(p, SLOT_PENDING)) != NULL)
                connect_failed_locked(p, s, p->resolve_err ? p->resolve_err : "name lookup failed",
                                      DBPOOL_IO_FAIL, now);
            mem_free(p->resolve_err);
            p->resolve_err = NULL;
            return;
        }
        *resolved = p->resolved; /* for this pass's connects, freed after */
        p->resolved = NULL;
    }
    while ((s = slot_first(p, SLOT_PENDING)) != NULL) {
        if (p->budget && !p->budget->acquire(p->budget_owner, p)) {
            p->budget_denied = 1; /* the budget's owner wakes us when it can */
            break;
        }
        slot_move(p, s, SLOT_CONNECTING);
        s->connect_start = now;
        s->timer_at = deadline_add(now, p->cfg.connect_timeout);
        todo_push(todo, s, OP_CONNECT);
    }
}

/* hold_timeout: cancel the running query now; the lease is marked so the
 * connection is discarded at check-in (the pool never frees it). And
 * leak_threshold: report once, with who checked it out. */
static void check_holds(struct dbpool *p, int64_t now)
{
    for (struct dbpool_slot *s = slot_first(p, SLOT_BUSY); s; s = slot_next(p, s)) {
        if (s->hold_deadline && !atomic_load(&s->expired) && s->hold_deadline <= now) {
            atomic_store(&s->expired, 1);
            p->n_hold_timeouts++;
            if (atomic_load(&s->sbx)) /* a sandbox owner's (src/core/ownership.c) */
                plog(p, DBPOOL_LOG_WARNING,
                     "sandbox owner held its connection for %lld ms, past ownership_timeout: "
                     "cancelling its query; it is discarded at the owner's check-in",
                     (long long)(now - s->checkout_at));
            else
                plog(p, DBPOOL_LOG_WARNING,
                     "connection held for %lld ms (hold_timeout %lld ms): "
                     "cancelling its query; it is discarded at check-in",
                     (long long)(now - s->checkout_at), (long long)p->cfg.hold_timeout);
            pool_event_locked(p, DBPOOL_EV_HOLD_TIMEOUT, now - s->checkout_at, now, "");
            submit_cancel(p, s);
        }
        if (p->cfg.leak_threshold && !s->leak_reported &&
            now - s->checkout_at >= p->cfg.leak_threshold) {
            char where[96];
            s->leak_reported = 1;
            snprintf(where, sizeof(where), "thread %#lx, checked out from %p", s->owner, s->caller);
            plog(p, DBPOOL_LOG_WARNING, "connection held for %lld ms, leak suspected (%s)",
                 (long long)(now - s->checkout_at), where);
            pool_event_locked(p, DBPOOL_EV_LEAK_SUSPECTED, now - s->checkout_at, now, where);
        }
    }
}

/* Close idle connections nobody needs: those idle past idle_timeout while
 * more than min_size are open, and those a registry's cap asked for (oldest
 * first: the least recently used). */
static void close_idle(struct dbpool *p, struct dbpool_slot **todo, int64_t now)
{
    struct dbpool_slot *s;
    int open = pool_open_conns(p);
    int evict = atomic_load(&p->evict_requests); /* leftovers are served at check-in */

    while ((s = slot_first(p, SLOT_IDLE)) != NULL) {
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
        todo_push(todo, s, OP_CLOSE);
        open--;
    }
}

/* dbpool_resize shrank the pool and some slots were busy connecting or
 * pinging then: retire them now that they settled (idle ones are closed in
 * this pass; checked-out ones are retired at their check-in instead). */
static void retire_settled(struct dbpool *p, struct dbpool_slot **todo, int64_t now)
{
    static const enum slot_state order[] = {SLOT_DORMANT, SLOT_STOPPED, SLOT_BACKOFF, SLOT_PENDING,
                                            SLOT_IDLE};
    struct dbpool_slot *s;

    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]) && p->to_retire > 0; i++) {
        while (p->to_retire > 0 && (s = slot_first(p, order[i])) != NULL) {
            if (s == p->probe)
                p->probe = NULL;
            slot_move(p, s, SLOT_RETIRED);
            p->to_retire--;
            if (order[i] == SLOT_IDLE) {
                p->n_disconnects++;
                pool_event_locked(p, DBPOOL_EV_DISCONNECTED, 0, now,
                                  "pool resized (dbpool_resize)");
                todo_push(todo, s, OP_CLOSE);
            }
        }
    }
}

/* max_lifetime and dbpool_reconnect(): recycle idle connections due. */
static void recycle_expired(struct dbpool *p, struct dbpool_slot **todo, int64_t now)
{
    struct dbpool_slot *s, *next;

    for (s = slot_first(p, SLOT_IDLE); s; s = next) {
        next = slot_next(p, s);
        if (s->expires_at && now >= s->expires_at) {
            /* closed in this pass, connected (after a fresh lookup) in the
             * next one, at once */
            slot_move(p, s, SLOT_PENDING);
            todo_push(todo, s, OP_RECYCLE);
        }
    }
}

/* Idle ping: oldest first, up to idle_limit, none while callers wait. The
 * next tick's cutoff is this tick's time, so every connection idle for one
 * interval is pinged within [interval, 2*interval) (docs/pool.md, "Idle
 * pings"). */
static void ping_idle(struct dbpool *p, struct dbpool_slot **todo, int64_t now)
{
    struct dbpool_slot *s, *next;

    if (now < p->idle.next)
        return;
    int64_t cutoff = idle_advance(&p->idle, now);
    int pinged = 0;
    for (s = slot_first(p, SLOT_IDLE); s && p->waiters.n == 0; s = next) {
        next = slot_next(p, s);
        if (!idle_due(s->last_checkin, cutoff, pinged, p->cfg.idle_limit))
            break; /* the list is in check-in order */
        slot_move(p, s, SLOT_PINGING);
        s->timer_at = deadline_add(now, p->cfg.ping_timeout);
        todo_push(todo, s, OP_PING);
        pinged++;
    }
}

/* The CoDel queue poll (docs/pool.md, "The CoDel drop rule"). */
static void poll_queue(struct dbpool *p, int64_t now)
{
    struct waiter *dropped = NULL;

    if (now >= p->codel.poll_at && !p->paused) {
        codel_poll(&p->codel, &p->waiters, now, &dropped);
        pool_signal_dropped(p, dropped);
    }
}

/* When must the manager come back? One place that mirrors every rule above.
 * Pool mutex held. */
static int64_t next_due_locked(struct dbpool *p, int64_t now)
{
    struct dbpool_slot *s;
    int64_t due = INT64_MAX;

    /* the idle tick matters only while the pool has connections (a check-in
     * can make one idle at any time without telling us) */
    if (pool_open_conns(p))
        due = p->idle.next;
    if (p->waiters.n) {
        due = min64(due, p->codel.poll_at);
        due = min64(due, p->async_due); /* async requests' deadlines */
    }
    if (p->lists[SLOT_PENDING].n && !p->budget_denied && !p->resolving)
        due = now;
    if (p->cfg.idle_timeout && slot_first(p, SLOT_IDLE))
        due = min64(due, deadline_add(slot_first(p, SLOT_IDLE)->last_checkin, p->cfg.idle_timeout));
    if (p->probing) {
        if (!p->probe && !p->lists[SLOT_CONNECTING].n && p->lists[SLOT_BACKOFF].n)
            due = min64(due, p->probe_at);
    } else {
        for (s = slot_first(p, SLOT_BACKOFF); s; s = slot_next(p, s))
            due = min64(due, s->timer_at);
    }
    for (s = slot_first(p, SLOT_CONNECTING); s; s = slot_next(p, s))
        if (!s->hooking)
            due = min64(due, s->timer_at);
    for (s = slot_first(p, SLOT_PINGING); s; s = slot_next(p, s))
        due = min64(due, s->timer_at);
    for (s = slot_first(p, SLOT_BUSY); s; s = slot_next(p, s)) {
        if (s->hold_deadline && !atomic_load(&s->expired))
            due = min64(due, s->hold_deadline);
        if (p->cfg.leak_threshold && !s->leak_reported)
            due = min64(due, deadline_add(s->checkout_at, p->cfg.leak_threshold));
    }
    for (s = slot_first(p, SLOT_IDLE); s; s = slot_next(p, s))
        if (s->expires_at)
            due = min64(due, s->expires_at);
    return due;
}

/*
 * The pool's service (its manager client). Decide under the pool mutex, act
 * without it: driver calls never run with the mutex held, so callers'
 * checkouts never wait on the network.
 */
int64_t slot_service(struct mclient *c, int64_t now)
{
    struct dbpool *p = (struct dbpool *)(void *)((char *)c - offsetof(struct dbpool, mc));
    struct dbpool_slot *todo = NULL, *s;
    void *resolved = NULL;

    pthread_mutex_lock(&p->mu);
    if (p->closing) {
        pthread_mutex_unlock(&p->mu);
        return INT64_MAX;
    }
    probe_update_locked(p, now); /* dbpool_restart may have ended an outage */
    expire_timers(p, &todo, now);
    start_connects(p, &todo, now, &resolved);
    check_holds(p, now);
    retire_settled(p, &todo, now);
    close_idle(p, &todo, now);
    recycle_expired(p, &todo, now);
    ping_idle(p, &todo, now);
    poll_queue(p, now);
    pool_async_service_locked(p, now); /* async deadlines (pool.c) */
    pthread_mutex_unlock(&p->mu);

    while ((s = todo) != NULL) {
        todo = s->todo;
        s->todo = NULL;
        run_op(p, s, s->todo_op, resolved, now);
    }
    if (resolved && p->drv->resolved_free)
        p->drv->resolved_free(resolved);
    pool_deliver_events(p);

    pthread_mutex_lock(&p->mu);
    int64_t due = next_due_locked(p, clock_ms());
    pthread_mutex_unlock(&p->mu);
    return due;
}
