/* pool.h - internal structures of a pool and its connection slots: the pool
 * object (pool.c: callers' API and the state both sides share) and its
 * manager client (slot.c: the connection life cycle). */
#ifndef DBPOOL_POOL_H
#define DBPOOL_POOL_H

#include "namespace.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "backoff.h"
#include "clock.h"
#include "dbpool.h"
#include "idle.h"
#include "list.h"
#include "manager.h"
#include "queue.h"
#include "stats.h"

/*
 * Lock order, the one place it is written (every module follows it):
 *
 *   mgr.life            manager start/stop (manager_attach, manager_release)
 *     mgr.mu            client list, running flags (manager.c only; never
 *                       held while a client's service, watcher or release runs)
 *   pool->mu            the pool (pool.c, slot.c); driver calls never run
 *                       under it, except the non-blocking cancel_target
 *     registry->mu      budget_acquire/release, called under pool->mu
 *   sandbox->mu         a leaf of its own (ownership.c): never taken under
 *                       pool->mu, and nothing is called into under it
 *       W.mu            the worker queue (workers_submit under pool->mu)
 *     cq->mu            a completion queue (async.c): requests are posted
 *                       to it under pool->mu
 *       pokes.mu        the manager's poke list (manager.c): a leaf, taken by
 *                       manager_poke under pool->mu and by the loop under mgr.mu
 *
 * Waits: dbpool_close waits, without pool->mu, in manager_detach for the
 * pool's service to finish, then on pool->drained (pool->mu) for callers
 * leaving the queue. Nothing waits for a worker job: jobs hold references
 * (pool->jobs), and whoever drops the last one frees.
 */

/*
 * Slot states. A slot is always on exactly one list, the one of its state
 * (PgBouncer style), and moves only under the pool mutex:
 *
 *   PENDING --manager--> CONNECTING --ok--> (handoff to a waiter) BUSY
 *                            |         \--> IDLE <--checkin-- BUSY
 *                            |                |  \--tick--> PINGING --ok--> IDLE
 *                          fail               |                 |
 *                            v                v (lifetime)     fail
 *                         BACKOFF --timer--> PENDING <----------+
 *                            |
 *                   (backoff stop) STOPPED --dbpool_restart--> PENDING
 *
 * DORMANT --checkout finds nothing idle--> PENDING;  IDLE --idle_timeout or
 * eviction--> DORMANT (only above min_size, or when a registry's cap needs it).
 * dbpool_resize shrinking: DORMANT, STOPPED, BACKOFF, PENDING, IDLE --> RETIRED
 * at once; BUSY at its check-in and CONNECTING/PINGING once they settle
 * (p->to_retire counts those still owed). Growing: RETIRED --> DORMANT, and
 * new slots (another chunk) when no retired one is left.
 *
 * BUSY slots belong to the caller holding the lease; PENDING, CONNECTING,
 * PINGING, BACKOFF, STOPPED and DORMANT belong to the manager thread; IDLE
 * belongs to whoever holds the pool mutex.
 */

/*
 * A connection budget shared by several pools (the registry's process-wide
 * cap). acquire() is asked before each connect, under the pool mutex; when it
 * says no, the budget owner remembers the pool and later sets `kick` and wakes
 * the manager. release() is told whenever a connection stops counting.
 */
struct budget_ops {
    int (*acquire)(void *owner, struct dbpool *p);
    void (*release)(void *owner, struct dbpool *p);
    /* a connect was refused because the server is full (53300); may be NULL */
    void (*full)(void *owner, struct dbpool *p, int64_t now);
    /* a connect granted by acquire ended (connected or failed); may be NULL */
    void (*connected)(void *owner, struct dbpool *p);
};
enum slot_state {
    SLOT_PENDING = 0, /* needs a connect, as soon as the manager runs */
    SLOT_CONNECTING,  /* connect / after_connect in progress */
    SLOT_IDLE,
    SLOT_BUSY, /* checked out */
    SLOT_PINGING,
    SLOT_BACKOFF, /* waiting until timer_at to connect again */
    SLOT_STOPPED, /* backoff_type stop: waits for dbpool_restart */
    SLOT_DORMANT, /* not wanted now (above min_size): opened on demand */
    SLOT_RETIRED, /* beyond the size (dbpool_resize shrank it): not part of the pool */
    SLOT_NSTATES
};

struct dbpool_slot {
    struct list_node link; /* in the list of `state` (p->lists[state]) */
    struct dbpool *pool;
    enum slot_state state;
    void *conn;            /* driver handle; NULL when not connected */
    _Atomic uint64_t gen;  /* lease generation; bumped at each check-in */
    struct mwatch watch;   /* the connection's socket while CONNECTING/PINGING */
    _Atomic int expired;   /* hold_timeout fired on the current lease (read
                              lock-free by the holder at check-in) */
    int broken;            /* last disconnect was a failure (not a recycle) */
    int64_t timer_at;      /* CONNECTING/PINGING: timeout; BACKOFF: retry */
    int64_t last_checkin;  /* IDLE: when it went idle (ping order) */
    int64_t checkout_at;   /* BUSY: when it was checked out (ms) */
    int64_t checkout_us;   /* BUSY: same, us, for the hold-time histogram */
    int64_t queue_us;      /* BUSY: time the caller spent in dbpool_checkout */
    int64_t idle_ms;       /* BUSY: time it sat idle before this checkout */
    int64_t hold_deadline; /* BUSY: hold_timeout deadline, 0 = none */
    int64_t expires_at;    /* recycle at or after this time; 0 = never */
    uint64_t epoch;        /* pool epoch when connected (dbpool_reconnect) */
    void *cancel_token;    /* driver cancel token, prepared after connect */
    void *user;            /* the upper layer's per-connection state (the query
                              helpers' statement cache): set by the lease holder,
                              freed with user_free when the connection closes */
    void (*user_free)(void *user);
    struct backoff backoff;
    int leak_reported;        /* BUSY: leak_threshold already reported */
    unsigned long owner;      /* BUSY: thread that checked it out (for leak reports) */
    int async_lease;          /* BUSY: handed to an async request (same-loop service) */
    void *caller;             /* BUSY: return address of dbpool_checkout's caller */
    /* BUSY: the sandbox owner holding this connection (src/core/ownership.c);
     * its callers' leases are checked in to the owner, not to the pool */
    _Atomic(struct dbpool_owner *) sbx;
    struct dbpool_slot *todo; /* manager's work list, valid only while it runs */
    int todo_op;
    int uses;                   /* leases since it connected (max_uses) */
    int64_t connect_start;      /* CONNECTING: when the connect began (ms) */
    int hooking;                /* CONNECTING: after_connect_cb runs on a worker,
                                   which owns the connection until it is done */
    const char *_Atomic doomed; /* BUSY: discard at check-in, for this reason
                                   (pool_lease_doom); NULL = no */
};

struct dbpool {
    pthread_mutex_t mu; /* guards everything below except where noted */
    dbpool_config cfg;  /* private copy; strings owned (name, after_connect) */
    const dbpool_driver *drv;
    void *ctx;

    /* The slots, in chunks that are never moved or freed before the pool
     * (leases and watchers point into them): the first, of cfg.size slots,
     * is allocated at open when min_size > 0, else at the first checkout
     * that needs a connection, so an unused pool (a registry's idle tenant)
     * stays small; dbpool_resize adds a chunk when it grows past every slot
     * there is. nslots counts all of them, RETIRED included. */
    struct slot_chunk *slots;
    int nslots;
    int to_retire;        /* dbpool_resize shrank: close this many more slots'
                             connections as they settle (check-in, connect) */
    int idle_limit_auto;  /* cfg.idle_limit was 0: it follows the size */
    pthread_cond_t ready; /* dbpool_wait_ready waiters: broadcast when a
                             connection opens, the pool fails or closes */
    int ready_waiters;
    struct pool_hists *hists; /* allocated with the slots */
    struct list_head lists[SLOT_NSTATES];

    struct wqueue waiters;
    int64_t async_due; /* no async waiter's deadline is earlier (it may be
                          stale-early after one left: the manager then
                          rescans); INT64_MAX = none */
    struct codel codel;
    struct idle_tick idle;
    pthread_condattr_t condattr; /* CLOCK_MONOTONIC for waiters' condvars */

    int closing;            /* dbpool_close() called */
    int in_wait;            /* callers inside checkout's wait loop */
    pthread_cond_t drained; /* signalled when in_wait drops to 0 while closing */
    uint64_t epoch;         /* bumped by dbpool_reconnect() */
    uint64_t rng;

    /* health */
    dbpool_state state;
    int64_t state_since;
    int ever_up;
    int fail_streak;        /* connect failures since the last success */
    int starting_up;        /* the latest connect got 57P03 */
    int at_limit;           /* the latest connect got 53300 (server full) */
    int64_t down_logged_at; /* last "down"/"still down" log line */
    int64_t down_since;
    int down_attempts;
    char last_error[256];
    /* probe_interval: while no connection is usable and the latest connects
     * failed, one slot at a time (`probe`) tries every probe_interval; the
     * other slots wait in BACKOFF without timers of their own (slot.c) */
    int probing;
    int64_t probe_at;          /* the next probe may start then */
    struct dbpool_slot *probe; /* the probe, PENDING or CONNECTING; NULL between */

    int paused;   /* dbpool_pause(): hand out nothing, drop nothing */
    int min_size; /* resolved cfg.min_size */

    /* connection budget (registry); NULL for a standalone pool */
    const struct budget_ops *budget;
    void *budget_owner;
    int budget_denied;           /* PENDING slots wait for a grant */
    _Atomic int active;          /* leases out (kept only with a budget) */
    _Atomic int evict_requests;  /* close this many idle connections (oldest first) */
    _Atomic int64_t oldest_idle; /* last_checkin of the oldest idle conn, or INT64_MAX */
    _Atomic uint64_t heat;       /* decayed checkout count (pool_heat_*), with a budget */

    /* events waiting for delivery on the manager thread (only with event_cb) */
    struct pool_event *events; /* ring of EVENT_RING entries */
    int ev_head, ev_count;
    uint64_t ev_lost;

    /* counters (dbpool_stats) */
    uint64_t n_checkouts, n_drops, n_timeouts, n_connects, n_connect_failures, n_disconnects,
        n_pings, n_ping_failures, n_hold_timeouts, n_rollbacks;

    /* name lookup (drivers with resolve): one at a time per pool, on a
     * worker; PENDING slots wait for it */
    int resolving;      /* a lookup job runs */
    int resolve_failed; /* its result: failed, with resolve_err */
    void *resolved;     /* its result: for the slots PENDING when it arrives */
    char *resolve_err;  /* allocated only when a lookup fails: an idle tenant
                           pool pays nothing for it (NULL: out of memory) */

    /* lifetime: jobs on worker threads that reference the pool; after close
     * the last of close, the last check-in and the last job frees it */
    int jobs;
    int torn_down; /* dbpool_close finished its teardown */
    int released;  /* manager_release was called */

    unsigned fork_gen; /* manager_fork_gen() at open: differs in a child */
    long owner_pid;    /* the process that opened it (messages) */

    /* sandbox mode (dbpool_sandbox_enable): set once, freed with the pool */
    _Atomic(struct sandbox *) sandbox;

    /* the pool's manager client: serviced only when due or poked, so
     * thousands of idle tenant pools cost nothing per wakeup */
    struct mclient mc;
};

#define EVENT_RING 128

struct pool_event {
    dbpool_event_type type;
    int64_t ms, at;
    char detail[160];
};

struct pool_hists {
    struct hist queue, hold, connect;
};

struct slot_chunk {
    struct slot_chunk *next;
    int n;
    struct dbpool_slot s[];
};

/*
 * A pool's heat: its checkouts, halved every POOL_HEAT_HALF_LIFE ms, so in a
 * steady state about 1.44 x the half-life (s) x its checkouts per second. The registry
 * evicts from the coldest tenant (src/tenants/registry.c). One word: the
 * count x 16 in the low 20 bits (fractions survive a few halvings), the time
 * of the last halving (ms) above; written under the pool mutex, read by
 * anyone.
 */
enum { POOL_HEAT_HALF_LIFE = 2000, POOL_HEAT_ONE = 16, POOL_HEAT_MAX = (1 << 20) - 1 };

/* The heat at `now` (ms) of a word read from p->heat, x POOL_HEAT_ONE. */
static inline uint32_t pool_heat_at(uint64_t w, int64_t now)
{
    uint32_t h = (uint32_t)(w & POOL_HEAT_MAX);
    int64_t since = (int64_t)(w >> 20);
    int64_t halvings = now > since ? (now - since) / POOL_HEAT_HALF_LIFE : 0;
    return halvings >= 20 ? 0 : h >> halvings;
}

/* One checkout at `now` (ms). Pool mutex held (the only writer). */
static inline void pool_heat_bump(struct dbpool *p, int64_t now)
{
    uint64_t w = atomic_load_explicit(&p->heat, memory_order_relaxed);
    int64_t since = (int64_t)(w >> 20);
    uint32_t h = pool_heat_at(w, now);
    if (now > since)
        since += (now - since) / POOL_HEAT_HALF_LIFE * POOL_HEAT_HALF_LIFE;
    if (w == 0)
        since = now; /* first checkout */
    h = h + POOL_HEAT_ONE > POOL_HEAT_MAX ? POOL_HEAT_MAX : h + POOL_HEAT_ONE;
    atomic_store_explicit(&p->heat, ((uint64_t)since << 20) | h, memory_order_relaxed);
}

/* Slots that are part of the pool (not RETIRED). Locked. */
static inline int pool_live_slots(const struct dbpool *p)
{
    return p->nslots - p->lists[SLOT_RETIRED].n;
}

/* Report a trace event to trace_cb (the caller checked it is set); its
 * return value. No lock held. */
static inline void *pool_trace(const struct dbpool *p, dbpool_trace *t)
{
    t->pool_name = p->cfg.name;
    return p->cfg.trace_cb(p->cfg.trace_arg, t);
}

/* Wake dbpool_wait_ready callers to look again. Locked. */
void pool_ready_wake_locked(struct dbpool *p);

/* Allocate the slots (all DORMANT, or PENDING up to min_size). Locked or
 * before the pool is shared. 0 or DBPOOL_ENOMEM. */
int pool_birth_locked(struct dbpool *p);

/* Queue an event for delivery by the manager thread (pool mutex held). */
void pool_event_locked(struct dbpool *p, dbpool_event_type type, int64_t ms, int64_t now,
                       const char *detail);
/* Deliver queued events to event_cb. Manager thread, pool mutex NOT held. */
void pool_deliver_events(struct dbpool *p);

/* Connections open or opening (IDLE + BUSY + PINGING + CONNECTING). Locked. */
int pool_open_conns(const struct dbpool *p);
/* After close: does nothing hold the pool any more (no lease out, no job)?
 * Then it returns 1 once, and the caller calls manager_release(&p->mc)
 * after unlocking. Locked. */
int pool_last_out_locked(struct dbpool *p);

/* The first / last slot in state st, the one after s in its list (NULL at the
 * end). Pool mutex held. */
static inline struct dbpool_slot *slot_of(struct list_node *n)
{
    return n ? list_entry(n, struct dbpool_slot, link) : NULL;
}
#define slot_first(p, st) slot_of(list_first(&(p)->lists[st]))
#define slot_last(p, st) slot_of(list_last(&(p)->lists[st]))
#define slot_next(p, s)                                                                            \
    ((s)->link.next == &(p)->lists[(s)->state].node ? NULL : slot_of((s)->link.next))

/* Move s to the list of state `to` (pool mutex held). */
void slot_move(struct dbpool *p, struct dbpool_slot *s, enum slot_state to);

/* A connection became available (connected, pinged, checked in): hand it to a
 * waiter per the CoDel rule or put it on the idle list. Pool mutex held. */
void pool_release_locked(struct dbpool *p, struct dbpool_slot *s, int64_t now);
/* Recompute the pool state after a slot transition; logs changes. Locked. */
void pool_update_state_locked(struct dbpool *p, int64_t now);
/* Non-blocking checkout for an async request (async.c). w is a
 * WAITER_ASYNC with t0_us, owner and caller set. Applies the rules of
 * dbpool_checkout without waiting: on an error that ends the checkout at
 * once (closed, DOWN, queue=false, no memory) w->status is that code and the
 * message is in msg; otherwise w->status is 0 (handed an idle connection,
 * lease started) or 1 (queued; the manager expires it at its deadline).
 * Pool mutex held. */
void pool_submit_async_locked(struct dbpool *p, struct waiter *w, int64_t timeout_ms, char *msg,
                              size_t msglen);
/* Take w (async, still queued) out of the queue (cancel). Locked. */
void pool_withdraw_locked(struct dbpool *p, struct waiter *w);
/* The message of a checkout that ended with `code` after waiting `waited`
 * ms (the text dbpool_last_error() shows). Locked. */
void pool_wait_message(const struct dbpool *p, int code, int64_t waited, char *buf, size_t len);
/* Manager: expire async waiters past their deadline (none while a
 * connection idles: it is handed out instead), and make sure an async
 * waiter at the head is never left next to an idle connection. Locked.
 * Returns the earliest async deadline still pending (INT64_MAX: none). */
int64_t pool_async_service_locked(struct dbpool *p, int64_t now);
/* The lease check-in of dbpool_checkin (mode 0), dbpool_discard (1), or of a
 * connection found dead at checkout (2). */
int pool_checkin(dbpool_lease *l, int mode);

/* async.c: a WAITER_ASYNC left the queue with w->status set (0 with w->slot
 * leased, or an error): post its completion. Pool mutex held. */
void async_complete_locked(struct dbpool *p, struct waiter *w);

/* Wake and fail every waiter with `code` (close). Locked. */
void pool_fail_waiters_locked(struct dbpool *p, int code, const char *msg);
/* Signal waiters that the CoDel rule dropped. Locked. */
void pool_signal_dropped(struct dbpool *p, struct waiter *dropped);
/* dbpool_open() with an optional connection budget (registry). */
int pool_open(struct dbpool **out, const dbpool_driver *driver, void *ctx, const dbpool_config *cfg,
              const struct budget_ops *budget, void *owner);

/* In a child process after fork(), a pool opened by the parent: it must
 * not be used (its sockets are the parent's; its locks may have been held
 * by parent threads that do not exist here). Sets DBPOOL_EFORKED's message
 * and returns 1 if so. Lock-free. */
int pool_forked(const struct dbpool *p);
/* Free an inherited pool's memory without I/O on its sockets and without
 * its locks (close in a child). */
void pool_abandon(struct dbpool *p);
/* dbpool_close() without the check for the manager thread (the registry
 * closes idle tenant pools from its own service). */
int pool_close(struct dbpool *p);
/* Free a pool whose slots are all disconnected. */
void pool_free(struct dbpool *p);

/* The connection's user data slot for the holder of a live lease (the
 * PostgreSQL query layer keeps its statement cache there): free_fn(*slot)
 * runs when the connection closes, so the state never outlives the session.
 * NULL if the lease is not live. Lease holder only; no lock. */
void **pool_lease_user(const dbpool_lease *l, void (*free_fn)(void *));
/* Close the connection of a live lease at its check-in instead of keeping
 * it (the PostgreSQL layer: a server that became read-only, SQLSTATE
 * 25006). `reason` (static storage) goes into the disconnect event. With
 * `all`, every connection opened before now is recycled as by
 * dbpool_reconnect() (once per epoch: a connection opened after that
 * reconnect does not start another), with a warning. Lease holder only. */
void pool_lease_doom(const dbpool_lease *l, const char *reason, int all);

/* dbpool_checkout() without the sandbox's lookup: a real lease. */
int pool_checkout_direct(struct dbpool *p, int64_t timeout_ms, dbpool_lease *lease);
/* Replace a live lease's hold deadline: timeout_ms from now (0 = none). */
void pool_lease_hold(const dbpool_lease *l, int64_t timeout_ms);

/* slot.c: the pool's manager client. Manager thread, pool mutex NOT held.
 * Returns the pool's next due time. */
int64_t slot_service(struct mclient *c, int64_t now);
/* The watcher of a slot in CONNECTING or PINGING fired. */
void slot_io(struct mwatch *w, int64_t now);
/* Close the connection of a slot the caller owns (not IDLE/BUSY of others). */
void slot_disconnect(struct dbpool *p, struct dbpool_slot *s);

#endif
