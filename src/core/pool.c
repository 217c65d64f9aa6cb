/* pool.c - the callers' side of a pool: open, checkout, check-in, close, stats.
 * Hand-over to waiters is direct (FIFO, one condvar per waiter, no herd). */
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "config.h"
#include "error.h"
#include "log.h"
#include "manager.h"
#include "ownership.h"
#include "workers.h"

/* ---- per-state lists ---------------------------------------------------- */

/* Does a slot in this state hold (or build) a server connection? */
static int counts(enum slot_state st)
{
    return st == SLOT_CONNECTING || st == SLOT_IDLE || st == SLOT_BUSY || st == SLOT_PINGING;
}

int pool_open_conns(const struct dbpool *p)
{
    return p->lists[SLOT_IDLE].n + p->lists[SLOT_BUSY].n + p->lists[SLOT_PINGING].n +
           p->lists[SLOT_CONNECTING].n;
}

int pool_last_out_locked(struct dbpool *p)
{
    if (!p->torn_down || p->released || p->lists[SLOT_BUSY].n > 0 || p->jobs > 0)
        return 0;
    p->released = 1;
    return 1;
}

void slot_move(struct dbpool *p, struct dbpool_slot *s, enum slot_state to)
{
    enum slot_state from = s->state;

    list_del(&p->lists[from], &s->link);
    s->state = to;
    list_push_tail(&p->lists[to], &s->link);
    if (p->budget) {
        if (from == SLOT_CONNECTING && to != SLOT_CONNECTING && p->budget->connected && !p->closing)
            p->budget->connected(p->budget_owner, p);
        if (counts(from) && !counts(to) && !p->closing)
            p->budget->release(p->budget_owner, p);
        if (from == SLOT_IDLE || to == SLOT_IDLE) {
            struct dbpool_slot *h = slot_first(p, SLOT_IDLE);
            atomic_store_explicit(&p->oldest_idle, h ? h->last_checkin : INT64_MAX,
                                  memory_order_relaxed);
        }
    }
}

/* ---- open --------------------------------------------------------------- */

static void free_chunks(struct dbpool *p);

void pool_free(struct dbpool *p)
{
    if (!p)
        return;
    if (p->resolved && p->drv->resolved_free)
        p->drv->resolved_free(p->resolved);
    if (p->drv && p->drv->ctx_free && p->ctx)
        p->drv->ctx_free(p->ctx);
    pthread_condattr_destroy(&p->condattr);
    pthread_cond_destroy(&p->drained);
    pthread_cond_destroy(&p->ready);
    pthread_mutex_destroy(&p->mu);
    mem_free((char *)p->cfg.name);
    mem_free((char *)p->cfg.after_connect);
    free_chunks(p);
    mem_free(p->hists);
    mem_free(p->events);
    mem_free(p->resolve_err);
    sandbox_free(atomic_load(&p->sandbox));
    mem_free(p);
}

/* Add a chunk of n slots, all in state st, after the ones there are.
 * Locked (or before the pool is shared). 0 or -1 (out of memory). */
static int add_chunk(struct dbpool *p, int n, enum slot_state st)
{
    struct slot_chunk *c = mem_calloc(1, sizeof(*c) + (size_t)n * sizeof(c->s[0]));

    if (!c)
        return -1;
    c->n = n;
    for (int i = 0; i < n; i++) {
        struct dbpool_slot *s = &c->s[i];
        uint64_t k = (uint64_t)p->nslots + (uint64_t)i;
        s->pool = p;
        s->watch.fd = -1;
        s->watch.client = &p->mc;
        s->watch.cb = slot_io;
        s->state = st;
        atomic_init(&s->gen, 1);
        atomic_init(&s->expired, 0);
        atomic_init(&s->sbx, NULL);
        atomic_init(&s->doomed, NULL);
        backoff_init(&s->backoff, p->cfg.backoff_type, p->cfg.backoff_min, p->cfg.backoff_max,
                     p->rng + k * 0x2545F4914F6CDD1DULL);
        list_push_tail(&p->lists[s->state], &s->link);
    }
    /* appended, so slot order (and pool_close's walk) is creation order */
    struct slot_chunk **tail = &p->slots;
    while (*tail)
        tail = &(*tail)->next;
    *tail = c;
    p->nslots += n;
    return 0;
}

static void free_chunks(struct dbpool *p)
{
    struct slot_chunk *c, *next;

    for (c = p->slots; c; c = next) {
        next = c->next;
        mem_free(c);
    }
    p->slots = NULL;
}

int pool_birth_locked(struct dbpool *p)
{
    p->hists = mem_calloc(1, sizeof(*p->hists));
    if (!p->hists || add_chunk(p, p->cfg.size, SLOT_DORMANT) != 0) {
        mem_free(p->hists);
        p->hists = NULL;
        return set_error(DBPOOL_ENOMEM, "pool \"%s\": out of memory", p->cfg.name);
    }
    /* the first min_size connect now */
    for (int i = 0; i < p->min_size; i++)
        slot_move(p, slot_first(p, SLOT_DORMANT), SLOT_PENDING);
    return 0;
}

/* The manager calls this once nothing can refer to the closed pool. */
static void release_cb(struct mclient *c)
{
    pool_free((struct dbpool *)(void *)((char *)c - offsetof(struct dbpool, mc)));
}

int dbpool_open(dbpool **out, const dbpool_driver *driver, void *ctx, const dbpool_config *cfg)
{
    return pool_open(out, driver, ctx, cfg, NULL, NULL);
}

int pool_open(struct dbpool **out, const dbpool_driver *driver, void *ctx, const dbpool_config *cfg,
              const struct budget_ops *budget, void *owner)
{
    dbpool_config defaults;
    struct dbpool *p;
    int rc;

    clear_error();
    if (out)
        *out = NULL;
    if (!out || !driver)
        return set_error(DBPOOL_EINVAL, "dbpool_open: NULL argument");
    if (!driver->connect_start || !driver->connect_poll || !driver->disconnect)
        return set_error(DBPOOL_EINVAL, "dbpool_open: driver lacks connect/disconnect");
    if (!cfg) {
        dbpool_config_init(&defaults);
        cfg = &defaults;
    }
    if ((rc = config_validate(cfg)) != 0)
        return rc;

    p = mem_calloc(1, sizeof(*p));
    if (!p)
        return set_error(DBPOOL_ENOMEM, "dbpool_open: out of memory");
    for (int i = 0; i < SLOT_NSTATES; i++)
        list_init(&p->lists[i]);
    wq_init(&p->waiters);
    p->async_due = INT64_MAX;
    p->cfg = *cfg;
    p->cfg.name = mem_strdup(cfg->name ? cfg->name : "default");
    p->cfg.after_connect = mem_strdup(cfg->after_connect);
    p->cfg.reset_query = NULL; /* the driver keeps its own copy */
    if (!p->cfg.name || (cfg->after_connect && !p->cfg.after_connect)) {
        mem_free((char *)p->cfg.name);
        mem_free((char *)p->cfg.after_connect);
        mem_free(p);
        return set_error(DBPOOL_ENOMEM, "dbpool_open: out of memory");
    }
    p->idle_limit_auto = p->cfg.idle_limit == 0;
    if (p->cfg.idle_limit == 0)
        p->cfg.idle_limit = p->cfg.size;
    p->min_size = p->cfg.min_size < 0 ? p->cfg.size : p->cfg.min_size;
    atomic_init(&p->evict_requests, 0);
    atomic_init(&p->oldest_idle, INT64_MAX);
    atomic_init(&p->heat, 0);
    if (pthread_mutex_init(&p->mu, NULL) != 0 || pthread_condattr_init(&p->condattr) != 0 ||
        pthread_condattr_setclock(&p->condattr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&p->drained, NULL) != 0 ||
        pthread_cond_init(&p->ready, &p->condattr) != 0) {
        mem_free((char *)p->cfg.name);
        mem_free((char *)p->cfg.after_connect);
        mem_free(p);
        return set_error(DBPOOL_ESYSTEM, "dbpool_open: pthread init failed");
    }
    p->drv = driver;
    p->budget = budget;
    p->budget_owner = owner;
    atomic_init(&p->active, 0);
    atomic_init(&p->sandbox, NULL);
    if (cfg->event_cb && !(p->events = mem_calloc(EVENT_RING, sizeof(*p->events)))) {
        pool_free(p);
        return set_error(DBPOOL_ENOMEM, "dbpool_open: out of memory");
    }

    int64_t now = clock_ms();
    p->rng = (uint64_t)now * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)p ^ (uint64_t)getpid();
    if (!p->rng)
        p->rng = 1;
    codel_init(&p->codel, p->cfg.queue_target, p->cfg.queue_interval, now);
    idle_init(&p->idle, p->cfg.idle_interval, now);
    p->state = DBPOOL_STATE_STARTING;
    p->state_since = now;
    if (p->min_size > 0 && (rc = pool_birth_locked(p)) != 0) {
        pool_free(p);
        return rc;
    }
    p->ctx = ctx;
    p->fork_gen = manager_fork_gen();
    p->owner_pid = (long)getpid();
    p->mc.service = slot_service;
    p->mc.release = release_cb;
    if ((rc = manager_attach(&p->mc)) != 0) {
        p->ctx = NULL; /* ctx belongs to the pool only once open succeeds */
        pool_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* ---- fork ------------------------------------------------------------------ */

int pool_forked(const struct dbpool *p)
{
    if (p->fork_gen == manager_fork_gen())
        return 0;
    set_error_msg("pool \"%s\" was opened by process %ld before fork(): in this process it "
                  "cannot be used (its connections belong to the parent); open a new pool here "
                  "and close the inherited one to free its memory",
                  p->cfg.name, p->owner_pid);
    return 1;
}

void pool_abandon(struct dbpool *p)
{
    for (struct slot_chunk *c = p->slots; c; c = c->next) {
        for (int i = 0; i < c->n; i++) {
            struct dbpool_slot *s = &c->s[i];
            if (s->cancel_token && p->drv->cancel_free)
                p->drv->cancel_free(s->cancel_token); /* memory only */
            if (s->user && s->user_free)
                s->user_free(s->user); /* memory only */
            if (s->conn && p->drv->abandon)
                p->drv->abandon(p->ctx, s->conn);
        }
    }
    /* the mutexes may be "held" by parent threads: never touched, and the
     * memory goes without destroying them */
    if (p->resolved && p->drv->resolved_free)
        p->drv->resolved_free(p->resolved);
    if (p->drv->ctx_free && p->ctx)
        p->drv->ctx_free(p->ctx);
    mem_free((char *)p->cfg.name);
    mem_free((char *)p->cfg.after_connect);
    free_chunks(p);
    mem_free(p->hists);
    mem_free(p->events);
    mem_free(p->resolve_err);
    mem_free(p);
}

/* ---- hand-over ---------------------------------------------------------- */

static void lease_start(struct dbpool *p, struct dbpool_slot *s, int64_t now)
{
    slot_move(p, s, SLOT_BUSY);
    s->checkout_at = now;
    s->idle_ms = now - s->last_checkin;
    atomic_store_explicit(&s->expired, 0, memory_order_relaxed);
    atomic_store_explicit(&s->doomed, NULL, memory_order_relaxed);
    s->uses++;
    s->leak_reported = 0;
    if (p->budget) {
        atomic_fetch_add_explicit(&p->active, 1, memory_order_relaxed);
        pool_heat_bump(p, now);
    }
    s->hold_deadline = p->cfg.hold_timeout ? deadline_add(now, p->cfg.hold_timeout) : 0;
    p->n_checkouts++;
}

/* The caller got slot s: record who, and the checkout's queue time. Locked.
 * now_us is t0_us on the fast path: one clock read per checkout. */
static void lease_owner(struct dbpool *p, struct dbpool_slot *s, unsigned long owner, void *caller,
                        int64_t t0_us, int64_t now_us, int async)
{
    s->owner = owner;
    s->async_lease = async;
    s->caller = caller;
    s->checkout_us = now_us;
    s->queue_us = now_us - t0_us;
    hist_add(&p->hists->queue, s->queue_us);
}

/* w left the queue with its status set: a thread wakes up on its condvar
 * (under the mutex: w lives on its stack); an async request is completed
 * here, since nobody else will look at it. Locked. */
static void wake_waiter(struct dbpool *p, struct waiter *w)
{
    if (w->kind == WAITER_THREAD) {
        pthread_cond_signal(&w->cond);
        return;
    }
    if (w->status == 0) {
        lease_owner(p, w->slot, w->owner, w->caller, w->t0_us, clock_us(), 1);
        if (w->slot->hold_deadline)
            manager_poke_before(&p->mc, w->slot->hold_deadline);
    }
    async_complete_locked(p, w);
}

void pool_signal_dropped(struct dbpool *p, struct waiter *dropped)
{
    while (dropped) {
        struct waiter *next = dropped->dropped_next;
        p->n_drops++;
        pool_event_locked(p, DBPOOL_EV_DROPPED, dropped->waited, clock_ms(), "");
        wake_waiter(p, dropped); /* status and waited were set by the queue */
        dropped = next;
    }
}

void pool_release_locked(struct dbpool *p, struct dbpool_slot *s, int64_t now)
{
    struct waiter *dropped = NULL;
    struct waiter *w;

    if (p->paused) { /* maintenance mode: nobody is served */
        s->last_checkin = now;
        slot_move(p, s, SLOT_IDLE);
        return;
    }
    w = codel_checkin(&p->codel, &p->waiters, now, &dropped);
    pool_signal_dropped(p, dropped);
    s->last_checkin = now; /* a hand-over has idled 0 ms */
    if (w) {
        lease_start(p, s, now);
        w->slot = s;
        w->status = 0;
        wake_waiter(p, w);
    } else {
        s->last_checkin = now; /* before the move: it keeps oldest_idle right */
        slot_move(p, s, SLOT_IDLE);
    }
}

/*
 * Bounded barging. While the oldest waiter has waited less than barge_window,
 * a connection that comes back goes to the idle list instead of to that
 * waiter: the thread that returned it usually comes straight back for it,
 * and taking it saves a wake-up and a sleep (two context switches) per
 * transaction. Once the window is over, hand-over is strict FIFO again (as
 * Go's sync.Mutex switches to starvation mode), so nobody waits more than
 * the window longer than under strict hand-over.
 * An async waiter never wakes by itself to take a connection left idle at
 * the end of its window, so with an async request at the head hand-over is
 * strict (docs/pool.md, "Hand-over"). Locked.
 */
static int barge_allowed(const struct dbpool *p, int64_t now_us)
{
    const struct waiter *h = wq_first(&p->waiters);

    return h && h->kind == WAITER_THREAD &&
           now_us - h->sent_us < deadline_ms_to_us(p->cfg.barge_window);
}

/*
 * Same-loop service, the async counterpart of bounded barging. Several loop
 * threads share one queue, so under strict FIFO a connection checked in on
 * loop L mostly goes to a request of another loop M: an eventfd write, M's
 * wake-up and a context switch per statement, while L's own requests wait.
 * So a connection that was handed to an async request of L and is checked
 * in on L's thread goes to L's oldest queued request instead: L is running
 * and takes it on its next turn, nobody is woken. Bounded like barging:
 *   - only while the oldest waiter has waited less than barge_window; after
 *     that every hand-over is strict FIFO again, so a request is never
 *     passed over once it waited barge_window (no starvation);
 *   - only past other loops' requests: a blocking caller ahead of L's
 *     request stops the search (the rules for threads stay as they were);
 *   - only among the first LOOP_SCAN waiters (a bounded scan under the mutex).
 * Returns L's waiter to serve, or NULL: the usual rules apply. Locked.
 */
enum { LOOP_SCAN = 64 };

static struct waiter *own_loop_waiter(const struct dbpool *p, const struct dbpool_slot *s,
                                      int64_t now_us)
{
    struct waiter *h = wq_first(&p->waiters);

    /* the usual check-in (a thread's lease, or nobody waiting) leaves here */
    if (!h || !s->async_lease || h->kind != WAITER_ASYNC)
        return NULL;
    unsigned long self = (unsigned long)pthread_self();
    /* an own request at the head: plain FIFO serves it */
    if (s->owner != self || h->owner == self ||
        now_us - h->sent_us >= deadline_ms_to_us(p->cfg.barge_window))
        return NULL;
    int seen = 1;
    for (struct waiter *w = wq_next(&p->waiters, h); w && seen < LOOP_SCAN;
         w = wq_next(&p->waiters, w), seen++) {
        if (w->kind != WAITER_ASYNC)
            return NULL;
        if (w->owner == self)
            return w;
    }
    return NULL;
}

/* Hand idle connections to waiters, oldest first (CoDel may drop some on the
 * way). Locked. */
static void serve_waiters_locked(struct dbpool *p, int64_t now)
{
    struct dbpool_slot *s;

    while (!p->paused && p->waiters.n > 0 && (s = slot_first(p, SLOT_IDLE)) != NULL) {
        codel_mark_busy(&p->codel);
        pool_release_locked(p, s, now);
        if (s->state == SLOT_IDLE)
            break; /* nobody took it (all dropped) */
    }
}

void pool_fail_waiters_locked(struct dbpool *p, int code, const char *msg)
{
    struct waiter *w;

    (void)msg;
    while ((w = wq_first(&p->waiters)) != NULL) {
        wq_remove(&p->waiters, w);
        w->status = code;
        w->waited = clock_ms() - w->sent;
        wake_waiter(p, w);
    }
    pool_ready_wake_locked(p); /* dbpool_wait_ready fails the same way */
}

void pool_ready_wake_locked(struct dbpool *p)
{
    if (p->ready_waiters)
        pthread_cond_broadcast(&p->ready);
}

/* ---- health ------------------------------------------------------------- */

const char *dbpool_state_name(dbpool_state state)
{
    switch (state) {
    case DBPOOL_STATE_STARTING:
        return "starting";
    case DBPOOL_STATE_UP:
        return "up";
    case DBPOOL_STATE_DOWN:
        return "down";
    case DBPOOL_STATE_PAUSED:
        return "paused";
    case DBPOOL_STATE_STOPPED:
        return "stopped";
    case DBPOOL_STATE_CLOSED:
        return "closed";
    default:
        return "unknown";
    }
}

/*
 * UP while any connection works; DOWN when none does and the latest connect
 * attempts failed; STOPPED when every slot stopped (backoff_type stop).
 * Logged once per change, so an outage is one line, not one per attempt.
 */
void pool_update_state_locked(struct dbpool *p, int64_t now)
{
    dbpool_state st;
    int usable = p->lists[SLOT_IDLE].n + p->lists[SLOT_BUSY].n + p->lists[SLOT_PINGING].n;

    if (p->closing)
        st = DBPOOL_STATE_CLOSED;
    else if (p->paused)
        st = DBPOOL_STATE_PAUSED;
    else if (usable > 0)
        st = DBPOOL_STATE_UP;
    else if (p->lists[SLOT_STOPPED].n > 0 &&
             p->lists[SLOT_STOPPED].n + p->lists[SLOT_DORMANT].n == pool_live_slots(p))
        st = DBPOOL_STATE_STOPPED;
    else if (p->fail_streak > 0)
        st = DBPOOL_STATE_DOWN;
    else if (p->starting_up)
        st = DBPOOL_STATE_STARTING; /* callers wait for it */
    else
        st = p->ever_up ? DBPOOL_STATE_UP : DBPOOL_STATE_STARTING;

    if (st == p->state)
        return;
    dbpool_state old = p->state;
    p->state = st;
    p->state_since = now;
    if (st == DBPOOL_STATE_UP)
        p->ever_up = 1;
    if (st == DBPOOL_STATE_DOWN || st == DBPOOL_STATE_STOPPED) {
        plog(p, DBPOOL_LOG_WARNING, "pool is %s: %s", dbpool_state_name(st),
             p->last_error[0] ? p->last_error : "no connection");
        pool_event_locked(p, DBPOOL_EV_DOWN, 0, now, p->last_error);
        /* fail fast: nobody waits for a database that is not there */
        pool_fail_waiters_locked(p, DBPOOL_EUNAVAILABLE, p->last_error);
    } else if (st == DBPOOL_STATE_UP) {
        if (old == DBPOOL_STATE_DOWN || old == DBPOOL_STATE_STOPPED)
            plog(p, DBPOOL_LOG_WARNING, "pool is up again after %lld ms down",
                 (long long)(now - p->down_since));
        pool_event_locked(p, DBPOOL_EV_UP, 0, now, "");
    }
    if (st == DBPOOL_STATE_DOWN || st == DBPOOL_STATE_STOPPED) {
        p->down_logged_at = now;
        p->down_since = now;
        p->down_attempts = 0;
    }
}

/* ---- checkout ----------------------------------------------------------- */

static int unavailable(struct dbpool *p)
{
    return set_error(DBPOOL_EUNAVAILABLE, "pool \"%s\" is %s: %s", p->cfg.name,
                     dbpool_state_name(p->state),
                     p->last_error[0] ? p->last_error : "no usable connection");
}

static void abs_deadline(int64_t deadline_ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(deadline_ms / 1000);
    ts->tv_nsec = (long)(deadline_ms % 1000) * 1000000L;
}

static void abs_deadline_us(int64_t deadline_us, struct timespec *ts)
{
    ts->tv_sec = (time_t)(deadline_us / 1000000);
    ts->tv_nsec = (long)(deadline_us % 1000000) * 1000L;
}

/* ---- the steps every checkout takes, blocking or not (pool mutex held) ---- */

/* Fail at once when closed, DOWN or STOPPED; else take an idle connection
 * if the barge rule lets this caller have one. 0 with *out the slot (lease
 * started) or NULL (nothing for us: wait or give up), or the error. */
static int admit_locked(struct dbpool *p, int64_t t0_us, struct dbpool_slot **out)
{
    struct dbpool_slot *s = NULL;
    int64_t now = t0_us / 1000;

    *out = NULL;
    if (p->closing)
        return set_error(DBPOOL_ECLOSED, "pool \"%s\" is closed", p->cfg.name);
    if (p->state == DBPOOL_STATE_DOWN || p->state == DBPOOL_STATE_STOPPED)
        return unavailable(p);
    if (!p->paused) {
        /* a connection idles while callers wait only inside the barge window;
         * past it (or with an async waiter at the head), the waiters come first */
        if (p->waiters.n > 0 && !barge_allowed(p, t0_us))
            serve_waiters_locked(p, now);
        s = p->cfg.lifo ? slot_last(p, SLOT_IDLE) : slot_first(p, SLOT_IDLE);
    }
    if (s)
        lease_start(p, s, now);
    *out = s;
    return 0;
}

/* Nothing idle: may the caller wait? 0, or DBPOOL_EBUSY (queue=false or
 * timeout 0; an on-demand pool starts opening one connection so that a
 * retry may succeed), DBPOOL_EQUEUEFULL (max_waiting callers, blocking and
 * async, wait already), or DBPOOL_ENOMEM. */
static int may_wait_locked(struct dbpool *p, int64_t timeout_ms)
{
    int rc;

    if (!p->slots && (rc = pool_birth_locked(p)) != 0)
        return rc;
    if (p->cfg.queue && timeout_ms != 0) {
        if (p->cfg.max_waiting && p->waiters.n >= p->cfg.max_waiting)
            /* shed load at the door: the caller can answer "busy" now
             * instead of after its timeout (psycopg_pool's max_waiting) */
            return set_error(DBPOOL_EQUEUEFULL,
                             "pool \"%s\": %d callers already wait for a connection "
                             "(max_waiting): not queued",
                             p->cfg.name, p->cfg.max_waiting);
        return 0;
    }
    if (p->lists[SLOT_DORMANT].n > 0 && p->lists[SLOT_PENDING].n == 0 &&
        p->lists[SLOT_CONNECTING].n == 0) {
        slot_move(p, slot_first(p, SLOT_DORMANT), SLOT_PENDING);
        manager_poke(&p->mc); /* under the mutex: a closed pool may be freed */
    }
    return set_error(DBPOOL_EBUSY, "pool \"%s\": no connection idle and %s", p->cfg.name,
                     p->cfg.queue ? "timeout is 0" : "queue=false");
}

enum { POKE_NONE = 0, POKE_POLL, POKE_NOW };

/* Queue w (sent, sent_us, kind set). Returns POKE_NOW when a dormant slot
 * must be opened for it, POKE_POLL when it is the only waiter (the queue
 * poll must run on time from now on), else POKE_NONE. */
static int enqueue_locked(struct dbpool *p, struct waiter *w)
{
    w->status = 1;
    wq_push(&p->waiters, w);
    codel_mark_busy(&p->codel);
    /* open a dormant connection for each waiter not already covered by one
     * being opened */
    int opening = p->lists[SLOT_PENDING].n + p->lists[SLOT_CONNECTING].n + p->lists[SLOT_BACKOFF].n;
    if (p->lists[SLOT_DORMANT].n > 0 && opening < p->waiters.n) {
        slot_move(p, slot_first(p, SLOT_DORMANT), SLOT_PENDING);
        return POKE_NOW;
    }
    return p->waiters.n == 1 ? POKE_POLL : POKE_NONE;
}

void pool_wait_message(const struct dbpool *p, int code, int64_t waited, char *buf, size_t len)
{
    switch (code) {
    case DBPOOL_ETIMEDOUT:
        snprintf(buf, len, "pool \"%s\": deadline reached while in queue (waited %lld ms)",
                 p->cfg.name, (long long)waited);
        break;
    case DBPOOL_EDROPPED:
        snprintf(buf, len,
                 "connection not available and request was dropped from queue after %lld ms. "
                 "This means requests are coming in and your connection pool cannot serve "
                 "them fast enough. You can address this by: 1. ensuring your database is "
                 "available and that you can connect to it; 2. tracking down slow queries; "
                 "3. increasing the pool size; 4. allowing requests to wait longer by "
                 "increasing queue_target and queue_interval",
                 (long long)waited);
        break;
    case DBPOOL_EUNAVAILABLE:
        snprintf(buf, len, "pool \"%s\" is %s: %s", p->cfg.name, dbpool_state_name(p->state),
                 p->last_error[0] ? p->last_error : "no usable connection");
        break;
    case DBPOOL_ECLOSED:
        snprintf(buf, len, "pool \"%s\" was closed while waiting", p->cfg.name);
        break;
    default:
        snprintf(buf, len, "checkout failed: %s", dbpool_strerror(code));
        break;
    }
}

/* One checkout attempt (dbpool_checkout below). *check: the connection sat
 * idle past alive_check and must be checked before it is handed out. */
static int checkout(struct dbpool *p, int64_t timeout_ms, dbpool_lease *lease, void *caller,
                    int64_t t0_us, int *check)
{
    struct dbpool_slot *s;
    struct waiter w;
    int64_t now;
    int rc;

    if (lease) {
        lease->slot = NULL;
        lease->gen = 0;
    }
    if (!p || !lease)
        return set_error(DBPOOL_EINVAL, "dbpool_checkout: NULL argument");
    if (pool_forked(p))
        return DBPOOL_EFORKED;
    if (timeout_ms < 0 && timeout_ms != DBPOOL_DEFAULT_TIMEOUT)
        return set_error(DBPOOL_EINVAL, "dbpool_checkout: negative timeout %lld",
                         (long long)timeout_ms);
    now = t0_us / 1000;

    pthread_mutex_lock(&p->mu);
    if (timeout_ms == DBPOOL_DEFAULT_TIMEOUT)
        timeout_ms = p->cfg.checkout_timeout;
    if ((rc = admit_locked(p, t0_us, &s)) != 0) {
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    if (s) {
        lease_owner(p, s, (unsigned long)pthread_self(), caller, t0_us, t0_us, 0);
        lease->slot = s;
        lease->gen = atomic_load_explicit(&s->gen, memory_order_relaxed);
        int64_t hold = s->hold_deadline;
        *check = p->cfg.alive_check && p->drv->alive && s->idle_ms >= p->cfg.alive_check;
        pthread_mutex_unlock(&p->mu);
        if (hold)
            manager_poke_before(&p->mc, hold);
        return 0;
    }
    if ((rc = may_wait_locked(p, timeout_ms)) != 0) {
        pthread_mutex_unlock(&p->mu);
        return rc;
    }

    memset(&w, 0, sizeof(w));
    w.kind = WAITER_THREAD;
    w.sent = now;
    w.sent_us = t0_us;
    pthread_cond_init(&w.cond, &p->condattr);
    int poke = enqueue_locked(p, &w);
    int64_t poll_at = p->codel.poll_at;
    int64_t deadline = deadline_add(now, timeout_ms); /* INT64_MAX: no limit */
    struct timespec ts;
    abs_deadline(deadline, &ts);
    p->in_wait++;
    if (poke != POKE_NONE) {
        /* the queue poll must run on time from now on */
        pthread_mutex_unlock(&p->mu);
        if (poke == POKE_NOW)
            manager_poke(&p->mc);
        else
            manager_poke_before(&p->mc, poll_at);
        pthread_mutex_lock(&p->mu);
    }
    /* inside its barge window a waiter may be passed over while a connection
     * idles (see barge_allowed): it wakes when the window ends and takes one */
    int64_t barge_end_us = deadline_add(t0_us, deadline_ms_to_us(p->cfg.barge_window));
    if (!p->cfg.barge_window || barge_end_us / 1000 >= deadline)
        barge_end_us = 0;
    while (w.status == 1) {
        if (barge_end_us) {
            struct timespec tb;
            abs_deadline_us(barge_end_us, &tb);
            int e = pthread_cond_timedwait(&w.cond, &p->mu, &tb);
            if (e == ETIMEDOUT && w.status == 1) {
                barge_end_us = 0; /* strict hand-over from now on */
                serve_waiters_locked(p, clock_ms());
            }
            continue;
        }
        int e = deadline == INT64_MAX ? pthread_cond_wait(&w.cond, &p->mu)
                                      : pthread_cond_timedwait(&w.cond, &p->mu, &ts);
        if (e == ETIMEDOUT && w.status == 1)
            serve_waiters_locked(p, clock_ms()); /* a barge window longer than
                                                    the timeout: never time out
                                                    next to an idle connection */
        if (e == ETIMEDOUT && w.status == 1) {
            wq_remove(&p->waiters, &w);
            w.status = DBPOOL_ETIMEDOUT;
            w.waited = clock_ms() - now;
            p->n_timeouts++;
        }
    }
    pthread_cond_destroy(&w.cond);
    if (--p->in_wait == 0 && p->closing)
        pthread_cond_signal(&p->drained); /* dbpool_close() may free the pool now */
    if (w.status == 0) {
        s = w.slot;
        lease_owner(p, s, (unsigned long)pthread_self(), caller, t0_us, clock_us(), 0);
        lease->slot = s;
        lease->gen = atomic_load_explicit(&s->gen, memory_order_relaxed);
        int64_t hold = s->hold_deadline;
        pthread_mutex_unlock(&p->mu);
        if (hold)
            manager_poke_before(&p->mc, hold);
        return 0;
    }
    rc = w.status;
    {
        char msg[512];
        pool_wait_message(p, rc, rc == DBPOOL_EDROPPED ? w.waited : clock_ms() - now, msg,
                          sizeof(msg));
        set_error_msg("%s", msg);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ---- async requests' side of the queue (async.c holds the requests) ------ */

void pool_submit_async_locked(struct dbpool *p, struct waiter *w, int64_t timeout_ms, char *msg,
                              size_t msglen)
{
    struct dbpool_slot *s;
    int rc;

    if (timeout_ms == DBPOOL_DEFAULT_TIMEOUT)
        timeout_ms = p->cfg.checkout_timeout;
    w->kind = WAITER_ASYNC;
    w->sent_us = clock_us();
    w->sent = w->sent_us / 1000;
    /* the same rule as the blocking fast path: serve waiters first when the
     * head is past its window (or async), take an idle connection otherwise */
    if ((rc = admit_locked(p, w->sent_us, &s)) == 0 && s) {
        w->slot = s;
        w->status = 0;
        lease_owner(p, s, w->owner, w->caller, w->t0_us, w->sent_us, 1);
        if (s->hold_deadline)
            manager_poke_before(&p->mc, s->hold_deadline);
        return;
    }
    if (rc == 0)
        rc = may_wait_locked(p, timeout_ms);
    if (rc != 0) {
        w->status = rc;
        snprintf(msg, msglen, "%s", dbpool_last_error());
        return;
    }
    int poke = enqueue_locked(p, w);
    w->deadline = deadline_add(w->sent, timeout_ms);
    if (w->deadline < p->async_due)
        p->async_due = w->deadline;
    /* no thread waits for this deadline: the manager expires it */
    if (poke == POKE_NOW)
        manager_poke(&p->mc);
    else
        manager_poke_before(&p->mc, poke == POKE_POLL && p->codel.poll_at < p->async_due
                                        ? p->codel.poll_at
                                        : p->async_due);
}

void pool_withdraw_locked(struct dbpool *p, struct waiter *w)
{
    wq_remove(&p->waiters, w);
    /* the waiter behind may be async and never wakes by itself */
    struct waiter *h = wq_first(&p->waiters);
    if (h && h->kind == WAITER_ASYNC)
        serve_waiters_locked(p, clock_ms());
}

/*
 * Async waiters have no thread to time them out: the manager does, at the
 * earliest deadline (p->async_due). As for a blocking waiter, a request
 * never times out next to an idle connection (one idling in a barge window
 * is handed out first). An async head is also served here if a connection
 * idles next to it, so that no path can leave it waiting for a wake-up that
 * never comes.
 */
int64_t pool_async_service_locked(struct dbpool *p, int64_t now)
{
    struct waiter *w, *next, *h = wq_first(&p->waiters);

    if (!h) {
        p->async_due = INT64_MAX;
        return INT64_MAX;
    }
    if ((h->kind == WAITER_ASYNC && slot_first(p, SLOT_IDLE)) || now >= p->async_due)
        serve_waiters_locked(p, now);
    if (now < p->async_due)
        return p->async_due;
    int64_t due = INT64_MAX;
    for (w = wq_first(&p->waiters); w; w = next) {
        next = wq_next(&p->waiters, w);
        if (w->kind != WAITER_ASYNC)
            continue;
        if (w->deadline > now) {
            if (w->deadline < due)
                due = w->deadline;
            continue;
        }
        wq_remove(&p->waiters, w);
        w->status = DBPOOL_ETIMEDOUT;
        w->waited = now - w->sent;
        p->n_timeouts++;
        wake_waiter(p, w);
    }
    p->async_due = due;
    return due;
}

/*
 * A connection that sat idle past alive_check is checked before it is handed
 * out (without a round trip: the driver reads what the server sent). A dead
 * one (the server closed it: idle_session_timeout, a restart) is replaced
 * behind the caller's back and the checkout goes on with what is left of its
 * timeout: a raw lease is never handed out already dead when we could know.
 */
static int checkout_traced(dbpool *p, int64_t timeout_ms, dbpool_lease *lease, void *caller,
                           int64_t t0_us);

/* What a trace event after the call needs: the pool may be gone by then (a
 * checkout that failed with ECLOSED, the last check-in after close). */
struct tracer {
    dbpool_trace_cb cb;
    void *arg;
    char name[128];
};

static void tracer_init(struct tracer *tr, const struct dbpool *p)
{
    tr->cb = p->cfg.trace_cb;
    tr->arg = p->cfg.trace_arg;
    snprintf(tr->name, sizeof(tr->name), "%s", p->cfg.name);
}

static void *tracer_emit(const struct tracer *tr, dbpool_trace *t)
{
    t->pool_name = tr->name;
    return tr->cb(tr->arg, t);
}

int dbpool_checkout(dbpool *p, int64_t timeout_ms, dbpool_lease *lease)
{
    struct sandbox *sb = p ? atomic_load_explicit(&p->sandbox, memory_order_acquire) : NULL;

    if (sb && lease && !pool_forked(p)) {
        lease->slot = NULL;
        lease->gen = 0;
        return sandbox_checkout(sb, timeout_ms, lease); /* the caller's owner's connection */
    }
    return pool_checkout_direct(p, timeout_ms, lease);
}

void pool_lease_hold(const dbpool_lease *l, int64_t timeout_ms)
{
    struct dbpool *p = l->slot->pool;

    pthread_mutex_lock(&p->mu);
    int64_t hold = timeout_ms ? deadline_add(clock_ms(), timeout_ms) : 0;
    l->slot->hold_deadline = hold;
    pthread_mutex_unlock(&p->mu);
    if (hold)
        manager_poke_before(&p->mc, hold);
}

int pool_checkout_direct(dbpool *p, int64_t timeout_ms, dbpool_lease *lease)
{
    void *caller = __builtin_return_address(0);
    int64_t t0_us = clock_us();
    struct tracer tr;

    if (!p || !p->cfg.trace_cb) /* tracing off: one test */
        return checkout_traced(p, timeout_ms, lease, caller, t0_us);
    tracer_init(&tr, p);
    dbpool_trace t = {.type = DBPOOL_TRACE_CHECKOUT_START, .at_us = t0_us};
    void *span = tracer_emit(&tr, &t);
    int rc = checkout_traced(p, timeout_ms, lease, caller, t0_us);
    int64_t now = clock_us();
    t = (dbpool_trace){.type = DBPOOL_TRACE_CHECKOUT_END,
                       .rc = rc,
                       .at_us = now,
                       .duration_us = now - t0_us,
                       .span = span};
    tracer_emit(&tr, &t);
    return rc;
}

static int checkout_traced(dbpool *p, int64_t timeout_ms, dbpool_lease *lease, void *caller,
                           int64_t t0_us)
{
    int64_t left = timeout_ms;

    for (;;) {
        int check = 0;
        int rc = checkout(p, left, lease, caller, t0_us, &check);
        if (rc != 0 || !check || p->drv->alive(p->ctx, lease->slot->conn))
            return rc;
        pool_checkin(lease, 2); /* dead: closed and replaced, not an error */
        if (timeout_ms == DBPOOL_DEFAULT_TIMEOUT)
            timeout_ms = p->cfg.checkout_timeout; /* fixed at open: no lock needed */
        int64_t spent = (clock_us() - t0_us) / 1000;
        left = timeout_ms > spent ? timeout_ms - spent : 0;
    }
}

/* ---- lease -------------------------------------------------------------- */

static int lease_live(const dbpool_lease *l)
{
    return l && l->slot && atomic_load_explicit(&l->slot->gen, memory_order_acquire) == l->gen;
}

void *dbpool_lease_conn(const dbpool_lease *l)
{
    if (l && l->slot && pool_forked(l->slot->pool))
        return NULL;
    if (!lease_live(l)) {
        set_error(l ? DBPOOL_ESTALE : DBPOOL_EINVAL, "lease is not checked out");
        return NULL;
    }
    void *conn = l->slot->conn;
    const dbpool_driver *drv = l->slot->pool->drv;
    return drv->native ? drv->native(conn) : conn;
}

int dbpool_lease_check(const dbpool_lease *l)
{
    if (!l || !l->slot)
        return set_error(DBPOOL_EINVAL, "dbpool_lease_check: NULL or empty lease");
    if (pool_forked(l->slot->pool))
        return DBPOOL_EFORKED;
    if (!lease_live(l))
        return set_error(DBPOOL_ESTALE, "lease already checked in");
    struct dbpool *p = l->slot->pool;
    if (atomic_load_explicit(&l->slot->expired, memory_order_acquire)) {
        if (atomic_load_explicit(&l->slot->sbx, memory_order_acquire))
            return set_error(DBPOOL_EEXPIRED, "sandbox: the owner held its connection longer "
                                              "than ownership_timeout");
        return set_error(DBPOOL_EEXPIRED, "lease held longer than hold_timeout (%lld ms)",
                         (long long)p->cfg.hold_timeout);
    }
    return 0;
}

static void reconnect_locked(struct dbpool *p);

void pool_lease_doom(const dbpool_lease *l, const char *reason, int all)
{
    if (!lease_live(l))
        return;
    struct dbpool_slot *s = l->slot;
    struct dbpool *p = s->pool;
    atomic_store_explicit(&s->doomed, reason, memory_order_relaxed);
    if (!all)
        return;
    pthread_mutex_lock(&p->mu);
    if (!p->closing && s->epoch == p->epoch) {
        plog(p, DBPOOL_LOG_WARNING, "%s: recycling every connection", reason);
        reconnect_locked(p);
        manager_poke(&p->mc);
    }
    pthread_mutex_unlock(&p->mu);
}

void **pool_lease_user(const dbpool_lease *l, void (*free_fn)(void *))
{
    if (!lease_live(l))
        return NULL;
    l->slot->user_free = free_fn;
    return &l->slot->user;
}

const char *dbpool_pool_name(const dbpool *p)
{
    return p ? p->cfg.name : NULL;
}

int dbpool_lease_info_get(const dbpool_lease *l, dbpool_lease_info *out)
{
    if (!l || !l->slot || !out)
        return set_error(DBPOOL_EINVAL, "dbpool_lease_info_get: NULL argument or empty lease");
    if (!lease_live(l))
        return set_error(DBPOOL_ESTALE, "lease already checked in");
    /* written under the pool mutex before the lease was handed over */
    out->queue_us = l->slot->queue_us;
    out->idle_ms = l->slot->idle_ms;
    out->checkout_at_ms = l->slot->checkout_at;
    return 0;
}

/* ---- check-in ----------------------------------------------------------- */

int pool_checkin(dbpool_lease *l, int discard)
{
    struct dbpool_slot *s;
    struct dbpool *p;
    char err[256]; /* set only where a discard says why */

    err[0] = '\0';

    if (!l || !l->slot)
        return set_error(DBPOOL_EINVAL, "check-in of a NULL or empty lease");
    s = l->slot;
    p = s->pool;
    if (pool_forked(p)) /* no ROLLBACK on the parent's socket */
        return DBPOOL_EFORKED;
    struct dbpool_owner *o = atomic_load_explicit(&s->sbx, memory_order_acquire);
    if (o)
        return sandbox_checkin(l, o, discard); /* back to the owner, not the pool */

    /* Claim the slot: moving gen on makes every copy of this lease stale at
     * once, so a second check-in can never touch the next holder's conn. Only
     * the holder can win this, and it does not need the pool mutex. */
    uint64_t gen = l->gen;
    if (!atomic_compare_exchange_strong_explicit(&s->gen, &gen, l->gen + 1, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return set_error(DBPOOL_ESTALE, "lease already checked in (double check-in?)");
    if (p->budget)
        atomic_fetch_sub_explicit(&p->active, 1, memory_order_relaxed);

    /* The caller still owns the connection: reset it without the lock,
     * unless it is closed anyway. */
    int expired = atomic_load_explicit(&s->expired, memory_order_acquire);
    const char *doomed = atomic_load_explicit(&s->doomed, memory_order_relaxed);
    int worn = p->cfg.max_uses && s->uses >= p->cfg.max_uses; /* fixed at open; s->uses
                                                                 is the holder's */
    int rolled_back = 0, broken = 0;
    if (!discard && !expired && !doomed && !worn && p->drv->reset) {
        int r = p->drv->reset(p->ctx, s->conn, p->cfg.reset_timeout, err, sizeof(err));
        if (r < 0)
            broken = 1;
        else if (r > 0)
            rolled_back = 1;
    }
    if (!discard && !expired && !doomed && !worn && !broken && p->cfg.checkin_cb &&
        p->cfg.checkin_cb(p->cfg.hook_arg, p->drv->native ? p->drv->native(s->conn) : s->conn)) {
        broken = 1;
        snprintf(err, sizeof(err), "checkin_cb asked to discard it");
    }

    int64_t now_us = clock_us(), now = now_us / 1000; /* read outside the lock: shorter hold */
    pthread_mutex_lock(&p->mu);
    hist_add(&p->hists->hold, now_us - s->checkout_us);
    if (rolled_back)
        p->n_rollbacks++;
    expired = atomic_load_explicit(&s->expired, memory_order_relaxed);
    int closing = p->closing;
    int recycle = (s->expires_at && now >= s->expires_at) || s->epoch != p->epoch;
    int evicted = 0; /* the cap wants this connection for another tenant */
    if (p->budget && !closing && atomic_load(&p->evict_requests) > 0) {
        atomic_fetch_sub(&p->evict_requests, 1);
        evicted = 1;
    }
    int retire = 0; /* dbpool_resize shrank the pool while this was out */
    if (!closing && !evicted && p->to_retire > 0) {
        p->to_retire--;
        retire = 1;
    }
    if (!discard && !broken && !expired && !closing && !recycle && !evicted && !retire && !doomed &&
        !worn) {
        struct waiter *w = p->paused ? NULL : own_loop_waiter(p, s, now_us);
        if (w) { /* same-loop service (see own_loop_waiter) */
            codel_take(&p->codel, &p->waiters, w, now);
            s->last_checkin = now; /* a hand-over has idled 0 ms */
            lease_start(p, s, now);
            w->slot = s;
            w->status = 0;
            wake_waiter(p, w);
        } else if (!p->paused && barge_allowed(p, now_us)) {
            s->last_checkin = now; /* before the move: it keeps oldest_idle right */
            slot_move(p, s, SLOT_IDLE);
        } else {
            pool_release_locked(p, s, now);
        }
        pthread_mutex_unlock(&p->mu);
        return 0;
    }

    /* Discard: the slot stays BUSY (nobody else can take it) while we close
     * the connection without the lock, then goes back to the manager. */
    p->n_disconnects++;
    s->broken = broken;
    if (broken)
        plog(p, DBPOOL_LOG_INFO, "connection discarded at check-in: %s", err);
    pool_event_locked(p, DBPOOL_EV_DISCONNECTED, 0, now,
                      broken         ? err
                      : expired      ? "held past hold_timeout"
                      : discard == 2 ? "closed by the server while idle (found at checkout)"
                      : discard      ? "discarded by the caller"
                      : doomed       ? doomed
                      : closing      ? "pool closed"
                      : evicted      ? "evicted for another pool (cap)"
                      : retire       ? "pool resized (dbpool_resize)"
                      : worn         ? "max_uses reached"
                                     : "recycled (max_lifetime or dbpool_reconnect)");
    pthread_mutex_unlock(&p->mu);

    slot_disconnect(p, s); /* BUSY: no watcher; we own it until the move below */

    int last_of_closed = 0;
    pthread_mutex_lock(&p->mu);
    if (p->closing) {
        slot_move(p, s, SLOT_STOPPED);
        last_of_closed = pool_last_out_locked(p);
    } else if (retire) {
        slot_move(p, s, SLOT_RETIRED);
    } else if (broken && p->cfg.backoff_type == DBPOOL_BACKOFF_STOP) {
        slot_move(p, s, SLOT_STOPPED);
    } else if (evicted) {
        slot_move(p, s, SLOT_DORMANT);
    } else {
        slot_move(p, s, SLOT_PENDING); /* reconnect at once: no backoff */
    }
    pool_update_state_locked(p, clock_ms());
    if (!p->closing)
        manager_poke(&p->mc); /* under the mutex: a closed pool may be freed */
    pthread_mutex_unlock(&p->mu);

    if (last_of_closed)
        manager_release(&p->mc);
    if (expired)
        return set_error(DBPOOL_EEXPIRED,
                         "lease held longer than hold_timeout; connection discarded");
    return 0;
}

/* Check-in, told to trace_cb with the hold time. The internal check-in of a
 * dead connection found at checkout is not a check-in of the caller's. */
static int checkin_traced(dbpool_lease *l, int discard)
{
    struct dbpool_slot *s = l ? l->slot : NULL;
    struct dbpool *p = s ? s->pool : NULL;
    struct tracer tr;
    if (!p || !p->cfg.trace_cb || !lease_live(l))
        return pool_checkin(l, discard);
    /* written under the pool mutex before the lease was handed over; read
     * before the check-in lets the slot (and perhaps the pool) go */
    int64_t from = s->checkout_us;
    tracer_init(&tr, p);
    int rc = pool_checkin(l, discard);
    int64_t now = clock_us();
    dbpool_trace t = {
        .type = DBPOOL_TRACE_CHECKIN, .rc = rc, .at_us = now, .duration_us = now - from};
    tracer_emit(&tr, &t);
    return rc;
}

int dbpool_checkin(dbpool_lease *lease)
{
    return checkin_traced(lease, 0);
}

int dbpool_discard(dbpool_lease *lease)
{
    return checkin_traced(lease, 1);
}

/* ---- control ------------------------------------------------------------ */

int dbpool_close(dbpool *p)
{
    if (!p)
        return 0;
    if (manager_is_self())
        return set_error(DBPOOL_EINVAL, "dbpool_close called from a pool callback");
    if (pool_forked(p)) {
        pool_abandon(p);
        return 0;
    }
    return pool_close(p);
}

/*
 * Close: no new checkouts, waiters fail with ECLOSED, every connection not
 * checked out is closed now, leases out are closed at their check-in. The
 * pool is freed by whoever lets go of it last: this call, the last check-in,
 * or the last worker job (a name lookup) still referring to it.
 */
int pool_close(struct dbpool *p)
{
    pthread_mutex_lock(&p->mu);
    if (p->closing) {
        pthread_mutex_unlock(&p->mu);
        return set_error(DBPOOL_ECLOSED, "pool is already closed");
    }
    p->closing = 1; /* the service pass does nothing from here on */
    pthread_mutex_unlock(&p->mu);
    manager_detach(&p->mc); /* and after this it does not run at all */

    pthread_mutex_lock(&p->mu);
    pool_fail_waiters_locked(p, DBPOOL_ECLOSED, "pool closed");
    /* they still need the pool mutex to return: wait until they are out */
    while (p->in_wait > 0)
        pthread_cond_wait(&p->drained, &p->mu);
    pool_update_state_locked(p, clock_ms());
    /* Every slot not checked out belongs to us now (the manager is
     * detached). Closing a connection does not block (libpq: one Terminate
     * message on an idle socket). */
    for (struct slot_chunk *c = p->slots; c; c = c->next) {
        for (int i = 0; i < c->n; i++) {
            struct dbpool_slot *s = &c->s[i];
            if (s->state == SLOT_BUSY || s->hooking)
                continue; /* closed at check-in / when its hook returns */
            slot_disconnect(p, s);
            slot_move(p, s, SLOT_STOPPED);
        }
    }
    int busy = p->lists[SLOT_BUSY].n;
    p->torn_down = 1;
    int last = pool_last_out_locked(p);
    pthread_mutex_unlock(&p->mu);
    if (last)
        manager_release(&p->mc);
    if (busy)
        return set_error(DBPOOL_EBUSY,
                         "pool closed with %d connection(s) still checked out; they are "
                         "closed at check-in",
                         busy);
    return 0;
}

/* The control functions' prologue: a usable pool, locked. 0 with p->mu held,
 * or the error (unlocked). */
static int lock_open(struct dbpool *p, const char *fn)
{
    if (!p)
        return set_error(DBPOOL_EINVAL, "%s: NULL pool", fn);
    if (pool_forked(p))
        return DBPOOL_EFORKED;
    pthread_mutex_lock(&p->mu);
    if (p->closing) {
        pthread_mutex_unlock(&p->mu);
        return set_error(DBPOOL_ECLOSED, "%s: pool \"%s\" is closed", fn, p->cfg.name);
    }
    return 0;
}

int dbpool_reconnect(dbpool *p)
{
    int rc = lock_open(p, "dbpool_reconnect");
    if (rc != 0)
        return rc;
    reconnect_locked(p);
    pthread_mutex_unlock(&p->mu);
    manager_poke(&p->mc);
    return 0;
}

static void reconnect_locked(struct dbpool *p)
{
    /* Busy connections see the new epoch at check-in; idle ones expire at a
     * random point within one idle interval so they do not all reconnect at
     * once. */
    p->epoch++;
    int64_t now = clock_ms();
    static const enum slot_state open_states[] = {SLOT_IDLE, SLOT_PINGING};
    for (size_t i = 0; i < sizeof(open_states) / sizeof(open_states[0]); i++)
        for (struct dbpool_slot *s = slot_first(p, open_states[i]); s; s = slot_next(p, s))
            s->expires_at = now + rng_range(&p->rng, 0, p->cfg.idle_interval);
}

int dbpool_restart(dbpool *p)
{
    struct dbpool_slot *s;

    int rc = lock_open(p, "dbpool_restart");
    if (rc != 0)
        return rc;
    while ((s = slot_first(p, SLOT_STOPPED)) != NULL) {
        backoff_reset(&s->backoff);
        slot_move(p, s, SLOT_PENDING);
    }
    p->fail_streak = 0;
    pool_update_state_locked(p, clock_ms());
    pthread_mutex_unlock(&p->mu);
    manager_poke(&p->mc);
    return 0;
}

int dbpool_pause(dbpool *p)
{
    int rc = lock_open(p, "dbpool_pause");
    if (rc != 0)
        return rc;
    p->paused = 1;
    pool_update_state_locked(p, clock_ms());
    pthread_mutex_unlock(&p->mu);
    return 0;
}

int dbpool_resume(dbpool *p)
{
    int rc = lock_open(p, "dbpool_resume");
    if (rc != 0)
        return rc;
    p->paused = 0;
    int64_t now = clock_ms();
    /* the pause is not the queue's fault: start a fresh CoDel interval */
    codel_init(&p->codel, p->cfg.queue_target, p->cfg.queue_interval, now);
    if (p->waiters.n)
        codel_mark_busy(&p->codel);
    serve_waiters_locked(p, now);
    pool_update_state_locked(p, now);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* Connected slots: what dbpool_wait_ready counts. Locked. */
static int connected(const struct dbpool *p)
{
    return p->lists[SLOT_IDLE].n + p->lists[SLOT_BUSY].n + p->lists[SLOT_PINGING].n;
}

/* Open dormant slots until at least n are connected or on their way
 * (connecting, or waiting for their backoff timer). Locked; 1 if the manager
 * must be poked. */
static int open_up_to_locked(struct dbpool *p, int n)
{
    int opening = connected(p) + p->lists[SLOT_CONNECTING].n + p->lists[SLOT_PENDING].n +
                  p->lists[SLOT_BACKOFF].n;
    int woke = 0;

    for (; opening < n && p->lists[SLOT_DORMANT].n > 0; opening++, woke = 1)
        slot_move(p, slot_first(p, SLOT_DORMANT), SLOT_PENDING);
    return woke;
}

/*
 * Wait for n connected slots. It shares the checkout's fail-fast rule: a
 * DOWN pool (the latest connects failed, nothing usable) fails at once with
 * its cached error rather than running out the timeout, so a service that
 * checks readiness at start-up learns why now. A server answering "starting
 * up" (57P03) is not DOWN: that is waited for.
 */
int dbpool_wait_ready(dbpool *p, int n, int64_t timeout_ms)
{
    int rc = lock_open(p, "dbpool_wait_ready");
    if (rc != 0)
        return rc;
    if (n < 0 || n > p->cfg.size || timeout_ms < 0) {
        int size = p->cfg.size;
        pthread_mutex_unlock(&p->mu);
        if (timeout_ms < 0)
            return set_error(DBPOOL_EINVAL, "dbpool_wait_ready: negative timeout %lld",
                             (long long)timeout_ms);
        return set_error(DBPOOL_EINVAL, "dbpool_wait_ready: n = %d is outside 0..size (%d)", n,
                         size);
    }
    if (n == 0)
        n = p->min_size;
    if (n > 0 && !p->slots && (rc = pool_birth_locked(p)) != 0) {
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    int64_t t0 = clock_ms(), deadline = deadline_add(t0, timeout_ms);
    struct timespec ts;
    abs_deadline(deadline, &ts);
    if (open_up_to_locked(p, n))
        manager_poke(&p->mc); /* under the mutex: p is open */
    p->in_wait++;             /* dbpool_close waits for us to leave */
    for (;;) {
        int have = connected(p);
        if (have >= n) {
            rc = 0;
            break;
        }
        if (p->closing) {
            rc = set_error(DBPOOL_ECLOSED, "pool \"%s\" was closed while waiting", p->cfg.name);
            break;
        }
        if (p->state == DBPOOL_STATE_DOWN || p->state == DBPOOL_STATE_STOPPED) {
            rc = set_error(DBPOOL_EUNAVAILABLE, "pool \"%s\" is %s (%d of %d connections open): %s",
                           p->cfg.name, dbpool_state_name(p->state), have, n,
                           p->last_error[0] ? p->last_error : "no usable connection");
            break;
        }
        int64_t now = clock_ms();
        if (now >= deadline) {
            rc = set_error(DBPOOL_ETIMEDOUT,
                           "pool \"%s\": %d of %d connections open after %lld ms%s%s", p->cfg.name,
                           have, n, (long long)(now - t0),
                           p->last_error[0] ? "; last connect error: " : "", p->last_error);
            break;
        }
        p->ready_waiters++;
        if (deadline == INT64_MAX)
            pthread_cond_wait(&p->ready, &p->mu);
        else
            pthread_cond_timedwait(&p->ready, &p->mu, &ts);
        p->ready_waiters--;
    }
    if (--p->in_wait == 0 && p->closing)
        pthread_cond_signal(&p->drained);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* Shrink: retire `excess` slots, those without a connection first, then
 * idle ones (closed here, under the mutex, as dbpool_close does: closing an
 * idle connection does not block); what is left (checked out, connecting,
 * pinging) is retired as it settles (to_retire). Locked. */
static void shrink_locked(struct dbpool *p, int excess)
{
    static const enum slot_state order[] = {SLOT_DORMANT, SLOT_STOPPED, SLOT_BACKOFF, SLOT_PENDING,
                                            SLOT_IDLE};
    struct dbpool_slot *s;

    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        /* newest idle first: the oldest have earned their pings */
        while (excess > 0 && (s = order[i] == SLOT_IDLE ? slot_last(p, SLOT_IDLE)
                                                        : slot_first(p, order[i])) != NULL) {
            if (s == p->probe)
                p->probe = NULL;
            if (order[i] == SLOT_IDLE) {
                slot_disconnect(p, s);
                p->n_disconnects++;
                pool_event_locked(p, DBPOOL_EV_DISCONNECTED, 0, clock_ms(),
                                  "pool resized (dbpool_resize)");
            }
            slot_move(p, s, SLOT_RETIRED);
            excess--;
        }
    }
    p->to_retire += excess;
}

/* Grow by n slots: first cancel retirements still owed, then bring retired
 * slots back, then add a chunk. Locked. 0 or DBPOOL_ENOMEM (nothing changed). */
static int grow_locked(struct dbpool *p, int n)
{
    int cancel = n < p->to_retire ? n : p->to_retire;
    int revive = n - cancel;
    int fresh = revive - p->lists[SLOT_RETIRED].n;

    if (fresh > 0 && add_chunk(p, fresh, SLOT_DORMANT) != 0)
        return set_error(DBPOOL_ENOMEM, "dbpool_resize: out of memory");
    p->to_retire -= cancel;
    for (revive -= fresh > 0 ? fresh : 0; revive > 0; revive--) {
        struct dbpool_slot *s = slot_first(p, SLOT_RETIRED);
        backoff_reset(&s->backoff);
        slot_move(p, s, SLOT_DORMANT);
    }
    return 0;
}

int dbpool_resize(dbpool *p, int size, int min_size)
{
    int rc = lock_open(p, "dbpool_resize");
    if (rc != 0)
        return rc;
    /* the same rules as the options, checked by the same code */
    dbpool_config c = p->cfg;
    c.size = size;
    c.min_size = min_size;
    if (p->idle_limit_auto)
        c.idle_limit = size;
    if ((rc = config_validate(&c)) != 0) {
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    if (p->slots) {
        int now_size = pool_live_slots(p) - p->to_retire;
        if (size > now_size && (rc = grow_locked(p, size - now_size)) != 0) {
            pthread_mutex_unlock(&p->mu);
            return rc;
        }
        if (size < now_size)
            shrink_locked(p, now_size - size);
    }
    p->cfg.size = size;
    p->cfg.min_size = min_size;
    if (p->idle_limit_auto)
        p->cfg.idle_limit = size;
    p->min_size = min_size < 0 ? size : min_size;
    if (p->slots)
        open_up_to_locked(p, p->min_size);
    plog(p, DBPOOL_LOG_INFO, "resized to size %d, min_size %d%s", size, p->min_size,
         p->to_retire ? " (connections still in use close at check-in)" : "");
    pool_update_state_locked(p, clock_ms());
    manager_poke(&p->mc);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* ---- events ------------------------------------------------------------- */

void pool_event_locked(struct dbpool *p, dbpool_event_type type, int64_t ms, int64_t now,
                       const char *detail)
{
    if (!p->events)
        return;
    if (p->ev_count == EVENT_RING) {
        p->ev_lost++;
        return;
    }
    struct pool_event *e = &p->events[(p->ev_head + p->ev_count) % EVENT_RING];
    e->type = type;
    e->ms = ms;
    e->at = now;
    size_t n = detail ? strnlen(detail, sizeof(e->detail) - 1) : 0;
    memcpy(e->detail, detail ? detail : "", n);
    e->detail[n] = '\0';
    p->ev_count++;
    if (p->ev_count == 1 && !manager_is_self() && !p->closing)
        manager_poke(&p->mc);
}

void pool_deliver_events(struct dbpool *p)
{
    struct pool_event batch[16];
    int n;

    if (!p->events)
        return;
    do {
        pthread_mutex_lock(&p->mu);
        n = p->ev_count < 16 ? p->ev_count : 16;
        for (int i = 0; i < n; i++)
            batch[i] = p->events[(p->ev_head + i) % EVENT_RING];
        p->ev_head = (p->ev_head + n) % EVENT_RING;
        p->ev_count -= n;
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < n; i++) {
            dbpool_event ev = {batch[i].type, p->cfg.name, batch[i].detail, batch[i].ms,
                               batch[i].at};
            p->cfg.event_cb(p->cfg.event_arg, &ev);
        }
    } while (n == 16);
}

int pool_hists_copy(dbpool *p, struct hist *queue, struct hist *hold, struct hist *connect)
{
    pthread_mutex_lock(&p->mu);
    int rc = p->hists ? 0 : -1;
    if (p->hists) {
        *queue = p->hists->queue;
        *hold = p->hists->hold;
        *connect = p->hists->connect;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int dbpool_stats_get(dbpool *p, dbpool_stats *st)
{
    if (!p || !st)
        return set_error(DBPOOL_EINVAL, "dbpool_stats_get: NULL argument");
    memset(st, 0, sizeof(*st));
    if (pool_forked(p))
        return DBPOOL_EFORKED;
    pthread_mutex_lock(&p->mu);
    st->state = p->state;
    st->size = p->cfg.size;
    st->idle = p->lists[SLOT_IDLE].n;
    st->busy = p->lists[SLOT_BUSY].n;
    st->connecting = p->lists[SLOT_CONNECTING].n + p->lists[SLOT_PENDING].n;
    st->pinging = p->lists[SLOT_PINGING].n;
    st->backoff = p->lists[SLOT_BACKOFF].n;
    st->stopped = p->closing ? 0 : p->lists[SLOT_STOPPED].n;
    st->dormant = p->slots ? p->lists[SLOT_DORMANT].n : p->cfg.size;
    st->waiting = p->waiters.n;
    st->checkouts = p->n_checkouts;
    st->drops = p->n_drops;
    st->timeouts = p->n_timeouts;
    st->connects = p->n_connects;
    st->connect_failures = p->n_connect_failures;
    st->disconnects = p->n_disconnects;
    st->pings = p->n_pings;
    st->ping_failures = p->n_ping_failures;
    st->hold_timeouts = p->n_hold_timeouts;
    st->rollbacks = p->n_rollbacks;
    if (p->hists) {
        hist_summary(&p->hists->queue, &st->queue_time);
        hist_summary(&p->hists->hold, &st->hold_time);
    }
    st->state_since_ms = p->state_since;
    memcpy(st->last_error, p->last_error, sizeof(st->last_error));
    st->min_size = p->min_size;
    const struct waiter *w = wq_first(&p->waiters);
    st->oldest_wait_ms = w ? clock_ms() - w->sent : 0;
    if (p->hists)
        hist_summary(&p->hists->connect, &st->connect_time);
    pthread_mutex_unlock(&p->mu);
    return 0;
}
