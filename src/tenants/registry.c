/* registry.c - one pool per tenant database, created on first use, under a
 * process-wide connection cap with frequency-aware eviction (the coldest
 * tenant gives up a connection) and fair (round-robin) grants. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aimd.h"
#include "alloc.h"
#include "dbpool_registry.h"
#include "driver_pg.h"
#include "error.h"
#include "list.h"
#include "manager.h"
#include "pool.h"

struct tenant {
    struct tenant *hnext;   /* hash chain */
    struct list_node qlink; /* in r->queue while queued */
    int queued;
    char *key;
    struct dbpool *pool; /* NULL while being created */
    int pins;            /* dbpool_registry_get() without put, checkouts in flight */
    int open;            /* connections counted against the cap */
    int connecting;      /* of them, connects granted and not yet ended */
    int held;            /* 1 + its index in r->held while open > 0, else 0 */
    int64_t last_used;
    struct dbpool_registry *reg;
};

/*
 * Lock order: pool mutex -> registry mutex (the budget is asked under the
 * pool mutex). The registry never takes a pool mutex while holding its own.
 */
struct dbpool_registry {
    pthread_mutex_t mu;
    pthread_cond_t created; /* a tenant finished being created */
    dbpool_registry_config cfg;
    struct tenant **buckets;
    size_t nbuckets, ntenants;
    struct list_head queue; /* FIFO of tenants denied room */
    int open;               /* connections counted against the cap */
    int connecting;         /* of them, connects in flight (cfg.max_connecting) */
    /* the cap (aimd.c): cfg.max_connections, lower while cfg.adaptive backs off */
    struct aimd aimd;
    int evictions_asked; /* asked and not yet seen as a release */
    /* tenants with open > 0 (at most max_connections): eviction candidates */
    struct tenant **held;
    int nheld, held_cap;
    uint64_t rng; /* sampling candidates when there are many */
    int closing;
    int64_t next_tick;
    uint64_t created_n, reclaimed_n, evictions_n;
    struct mclient mc; /* reclaims idle tenants (tick) */
    unsigned fork_gen; /* manager_fork_gen() at open: differs in a child */
};

/* A registry inherited across fork(): unusable here (see pool_forked). */
static int forked(const struct dbpool_registry *r)
{
    if (r->fork_gen == manager_fork_gen())
        return 0;
    set_error_msg("registry was opened before fork(): in this process it cannot be used (its "
                  "connections belong to the parent); open a new one here and close the "
                  "inherited one to free its memory");
    return 1;
}

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static struct tenant **find(struct dbpool_registry *r, const char *key)
{
    struct tenant **t = &r->buckets[hash(key) % r->nbuckets];
    while (*t && strcmp((*t)->key, key) != 0)
        t = &(*t)->hnext;
    return t;
}

static void grow(struct dbpool_registry *r)
{
    size_t n = r->nbuckets * 2;
    struct tenant **b = mem_calloc(n, sizeof(*b));

    if (!b)
        return; /* keep the longer chains */
    for (size_t i = 0; i < r->nbuckets; i++) {
        struct tenant *t = r->buckets[i], *next;
        for (; t; t = next) {
            next = t->hnext;
            t->hnext = b[hash(t->key) % n];
            b[hash(t->key) % n] = t;
        }
    }
    mem_free(r->buckets);
    r->buckets = b;
    r->nbuckets = n;
}

static struct tenant *queue_head(const struct dbpool_registry *r)
{
    struct list_node *n = list_first(&r->queue);
    return n ? list_entry(n, struct tenant, qlink) : NULL;
}

static void queue_remove(struct dbpool_registry *r, struct tenant *t)
{
    if (!t->queued)
        return;
    list_del(&r->queue, &t->qlink);
    t->queued = 0;
}

static void queue_push(struct dbpool_registry *r, struct tenant *t)
{
    if (t->queued)
        return;
    list_push_tail(&r->queue, &t->qlink);
    t->queued = 1;
}

/* The array grows by doubling up to max_connections (every entry holds at
 * least one connection). Out of memory, t is just not a candidate. */
static void held_add(struct dbpool_registry *r, struct tenant *t)
{
    if (t->held)
        return;
    if (r->nheld == r->held_cap) {
        int n = r->held_cap ? 2 * r->held_cap : 16;
        if (n > r->cfg.max_connections || n < r->held_cap)
            n = r->cfg.max_connections;
        struct tenant **h = n > r->held_cap ? mem_malloc((size_t)n * sizeof(*h)) : NULL;
        if (!h)
            return;
        if (r->nheld)
            memcpy(h, r->held, (size_t)r->nheld * sizeof(*h));
        mem_free(r->held);
        r->held = h;
        r->held_cap = n;
    }
    r->held[r->nheld++] = t;
    t->held = r->nheld;
}

static void held_del(struct dbpool_registry *r, struct tenant *t)
{
    if (!t->held)
        return;
    struct tenant *last = r->held[--r->nheld];
    r->held[t->held - 1] = last;
    last->held = t->held;
    t->held = 0;
}

/* ---- the budget (called under the tenant pool's mutex) ----------------- */

enum { EVICT_SAMPLE = 32 };

/*
 * What keeping v's least recently used idle connection is worth, in
 * checkouts per second; the lowest is evicted. A tenant's last connection
 * serves the tenant's request rate: its heat (decayed checkout count,
 * pool.h). A further one serves only what its concurrency needs, about once
 * per its idle time so far (tenant pools serve lifo: a connection nobody
 * needed stays idle). By rate rather than recency (LRU), a one-off cold
 * tenant does not push out a hot one: its connection is the next to go.
 */
static double keep_value(const struct tenant *v, int64_t oldest, int64_t now)
{
    uint32_t h = pool_heat_at(atomic_load_explicit(&v->pool->heat, memory_order_relaxed), now);
    double rate = (double)h * 1000.0 / (1.44 * POOL_HEAT_ONE * POOL_HEAT_HALF_LIFE);
    if (v->open > 1) {
        double spare = 1000.0 / (double)(now > oldest ? now - oldest + 1 : 1);
        if (spare < rate)
            rate = spare;
    }
    return rate;
}

/* The tenant other than t whose idle connection is worth least (ties: the
 * longest idle). Looks at every holder of connections when they are few
 * (<= EVICT_SAMPLE), else at a random sample of EVICT_SAMPLE of them, as
 * Redis approximates LFU; all of them only when the sample has none idle.
 * Never at the tenants without connections: O(cap) at worst, whatever the
 * number of tenants. Registry mutex held. */
static struct tenant *coldest_idle(struct dbpool_registry *r, struct tenant *t)
{
    struct tenant *victim = NULL;
    double best = 0;
    int64_t best_oldest = 0, now = clock_ms();
    int sample = r->nheld > EVICT_SAMPLE;

    for (int pass = sample ? 0 : 1; pass < 2 && !victim; pass++) {
        int n = pass == 0 ? EVICT_SAMPLE : r->nheld;
        for (int k = 0; k < n; k++) {
            struct tenant *v;
            if (pass == 0) {
                r->rng ^= r->rng << 13; /* xorshift64 */
                r->rng ^= r->rng >> 7;
                r->rng ^= r->rng << 17;
                v = r->held[r->rng % (uint64_t)r->nheld];
            } else {
                v = r->held[k];
            }
            /* one already asked: its oldest_idle is stale until its pass runs */
            if (v == t || !v->pool ||
                atomic_load_explicit(&v->pool->evict_requests, memory_order_relaxed) > 0)
                continue;
            int64_t o = atomic_load_explicit(&v->pool->oldest_idle, memory_order_relaxed);
            if (o == INT64_MAX)
                continue;
            double val = keep_value(v, o, now);
            if (!victim || val < best || (val == best && o < best_oldest)) {
                victim = v;
                best = val;
                best_oldest = o;
            }
        }
    }
    return victim;
}

/* Ask the idle connection worth least (coldest_idle) of a tenant other
 * than `t` (NULL: any) to close; with none idle, the tenant holding the most
 * (more than t + 1) gives one back at its next check-in. Registry mutex held.
 * A tenant already asked, or holding nothing, is skipped: its oldest_idle
 * only moves when its manager pass runs, so adapt_locked's loop once piled
 * every request on one tenant; those it had no idle connection for waited
 * for a check-in that a cold tenant never makes, evictions_asked never
 * drained, and the process's callers waited out their timeouts at its cap
 * (it_adaptive, docs/scaling.md). */
static void ask_eviction(struct dbpool_registry *r, struct tenant *t)
{
    struct tenant *victim = coldest_idle(r, t);

    if (!victim) {
        int most = t ? t->open + 1 : 0;
        for (int i = 0; i < r->nheld; i++) {
            struct tenant *v = r->held[i];
            if (v != t && v->pool && v->open > most &&
                atomic_load(&v->pool->evict_requests) < v->open) {
                most = v->open;
                victim = v;
            }
        }
    }
    if (victim) {
        atomic_fetch_add(&victim->pool->evict_requests, 1);
        r->evictions_asked++;
        r->evictions_n++;
        manager_poke(&victim->pool->mc); /* serve the victim now */
    }
}

/*
 * At the cap, every tenant waiting in the queue needs a connection closed
 * elsewhere: ask one eviction per queued tenant not yet covered by one asked
 * or by room already free. Asking only one at a time (and only when a pool
 * asks for room) stalled the queue once its callers all waited there: no
 * check-in, no new request, so nothing asked the next eviction and the
 * queue moved one tenant per cap step, or not at all at max (it_adaptive,
 * docs/scaling.md). Registry mutex held.
 */
static void ask_evictions_for_queue(struct dbpool_registry *r, struct tenant *except)
{
    int room = r->aimd.cap - r->open;
    int want = (int)r->queue.n;
    /* only as many as may start connecting now: a connection closed early
     * for a tenant that must still wait for a connect is a cache miss for
     * nothing */
    if (r->cfg.max_connecting && want > r->cfg.max_connecting - r->connecting)
        want = r->cfg.max_connecting - r->connecting;
    want -= r->evictions_asked + (room > 0 ? room : 0);

    while (want-- > 0) {
        int asked = r->evictions_asked;
        ask_eviction(r, except);
        if (r->evictions_asked == asked)
            break; /* nothing left to evict */
    }
}

/* Room under max_connecting for one more connect. Registry mutex held. */
static int may_connect(const struct dbpool_registry *r)
{
    return !r->cfg.max_connecting || r->connecting < r->cfg.max_connecting;
}

/* After a grant: room left and tenants waiting, so the new head may connect. */
static void poke_head_if_room(struct dbpool_registry *r)
{
    struct tenant *qh = r->open < r->aimd.cap && may_connect(r) ? queue_head(r) : NULL;
    if (qh && qh->pool)
        manager_poke(&qh->pool->mc);
}

/*
 * Room under the cap goes to the tenant at the head of the queue; a tenant
 * granted one connection goes to the back if it wants more (it asks again),
 * so a hot tenant gets one per round like everyone else. When the cap is
 * full, the idle connection of another tenant worth least (coldest_idle) is
 * asked to close; its release wakes the manager, which retries the queue.
 */
static int budget_acquire(void *owner, struct dbpool *p)
{
    struct tenant *t = owner;
    struct dbpool_registry *r = t->reg;
    int granted = 0;

    (void)p;
    pthread_mutex_lock(&r->mu);
    if (r->closing) { /* dbpool_registry_close() is freeing tenants: do not walk them */
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    if (r->open < r->aimd.cap && may_connect(r) && (!queue_head(r) || queue_head(r) == t)) {
        r->open++;
        t->open++;
        r->connecting++;
        t->connecting++;
        aimd_connecting(&r->aimd); /* the refused share is of these */
        held_add(r, t);
        queue_remove(r, t);
        poke_head_if_room(r);
        granted = 1;
    } else {
        queue_push(r, t);
        ask_evictions_for_queue(r, t);
    }
    pthread_mutex_unlock(&r->mu);
    return granted;
}

static void budget_release(void *owner, struct dbpool *p)
{
    struct tenant *t = owner;
    struct dbpool_registry *r = t->reg;

    pthread_mutex_lock(&r->mu);
    r->open--;
    t->open--;
    /* requests this tenant has no connection left for (its connect failed,
     * say) can never be served: drop them, or evictions_asked never drains
     * and ask_evictions_for_queue asks no more */
    int er = atomic_load(&p->evict_requests);
    if (er > t->open) {
        atomic_fetch_sub(&p->evict_requests, er - t->open);
        r->evictions_asked -= er - t->open;
        if (r->evictions_asked < 0)
            r->evictions_asked = 0;
    }
    if (t->open == 0)
        held_del(r, t);
    if (r->evictions_asked > 0)
        r->evictions_asked--;
    struct tenant *qh = r->closing ? NULL : queue_head(r);
    struct dbpool *head = qh ? qh->pool : NULL;
    if (head) {
        manager_poke(&head->mc);       /* the queue's head may connect now */
        ask_evictions_for_queue(r, t); /* t's oldest_idle is stale until the move ends */
    }
    pthread_mutex_unlock(&r->mu);
}

/*
 * A granted connect ended, connected or not (its cap slot stays counted
 * until release). Under max_connecting the queue's head may start one now;
 * connects in flight hold cap slots while the server forks and
 * authenticates, so limiting them leaves more of the cap caching tenants
 * (docs/multi-tenant.md).
 */
static void budget_connected(void *owner, struct dbpool *p)
{
    struct tenant *t = owner;
    struct dbpool_registry *r = t->reg;

    (void)p;
    pthread_mutex_lock(&r->mu);
    r->connecting--;
    t->connecting--;
    if (!r->closing && r->cfg.max_connecting) {
        poke_head_if_room(r);
        if (queue_head(r))
            ask_evictions_for_queue(r, NULL);
    }
    pthread_mutex_unlock(&r->mu);
}

/*
 * The server refused a connect for want of room (53300): several processes
 * share it and together want more than max_connections. With cfg.adaptive
 * tick() lowers the cap by the share of connects refused and raises it
 * again while tenants wait (aimd.c), so processes that know nothing of each
 * other converge to sharing the server.
 */
static void budget_full(void *owner, struct dbpool *p, int64_t now)
{
    struct tenant *t = owner;
    struct dbpool_registry *r = t->reg;

    (void)p;
    pthread_mutex_lock(&r->mu);
    if (!r->closing)
        aimd_refused(&r->aimd, now);
    pthread_mutex_unlock(&r->mu);
}

/* The additive increase and the shedding of connections above a lowered
 * cap; from tick(), registry mutex held. */
static void adapt_locked(struct dbpool_registry *r, int64_t now)
{
    /* demand: tenants wait for room, or the cap is all in use */
    if (aimd_tick(&r->aimd, r->queue.n > 0 || r->open >= r->aimd.cap, r->open, now)) {
        struct tenant *qh = queue_head(r);
        if (qh && qh->pool)
            manager_poke(&qh->pool->mc); /* room for the queue's head */
    }
    /* give back what is over the cap: idle connections first */
    for (int over = aimd_over(&r->aimd, r->open - r->evictions_asked); over > 0; over--) {
        int asked = r->evictions_asked;
        ask_eviction(r, NULL);
        if (r->evictions_asked == asked)
            break;
    }
    ask_evictions_for_queue(r, NULL);
}

static const struct budget_ops registry_budget = {budget_acquire, budget_release, budget_full,
                                                  budget_connected};

/* ---- reclaiming idle tenants -------------------------------------------- */

/* Close one unhooked tenant's pool (no budget calls after pool_close
 * returns) and free the tenant. Registry mutex NOT held. */
static void reclaim(struct dbpool_registry *r, struct tenant *t)
{
    pool_close(t->pool);
    pthread_mutex_lock(&r->mu);
    r->open -= t->open;
    r->connecting -= t->connecting;
    held_del(r, t);
    pthread_mutex_unlock(&r->mu);
    mem_free(t->key);
    mem_free(t);
}

/*
 * The registry's manager client: unhook tenants unused for pool_idle_timeout
 * and close their pools, here on the manager thread with no lock held (a
 * close does not block: no network wait). Closing here, not on another
 * thread, means dbpool_registry_close() only has to detach this client to
 * know nothing refers to the registry any more.
 */
static int64_t tick(struct mclient *c, int64_t now)
{
    struct dbpool_registry *r =
        (struct dbpool_registry *)(void *)((char *)c - offsetof(struct dbpool_registry, mc));
    struct tenant *idle = NULL;

    pthread_mutex_lock(&r->mu);
    if (r->closing) {
        pthread_mutex_unlock(&r->mu);
        return INT64_MAX;
    }
    adapt_locked(r, now);
    if (now >= r->next_tick) {
        int64_t every = r->cfg.pool_idle_timeout / 4;
        r->next_tick = now + (every < 1000 ? every : 1000);
        for (size_t i = 0; i < r->nbuckets; i++) {
            struct tenant **pt = &r->buckets[i];
            while (*pt) {
                struct tenant *t = *pt;
                /* pins cover every way to reach the pool, so with none and no
                 * lease out nobody can start using it once it is unhooked */
                if (t->pool && t->pins == 0 &&
                    atomic_load_explicit(&t->pool->active, memory_order_relaxed) == 0 &&
                    now - t->last_used >= r->cfg.pool_idle_timeout) {
                    *pt = t->hnext;
                    r->ntenants--;
                    r->reclaimed_n++;
                    r->evictions_asked -= atomic_load(&t->pool->evict_requests);
                    if (r->evictions_asked < 0)
                        r->evictions_asked = 0;
                    queue_remove(r, t);
                    held_del(r, t); /* no eviction may poke a pool being closed */
                    t->hnext = idle;
                    idle = t;
                    continue;
                }
                pt = &t->hnext;
            }
        }
    }
    int64_t due = aimd_due(&r->aimd, r->next_tick, now);
    pthread_mutex_unlock(&r->mu);
    while (idle) {
        struct tenant *next = idle->hnext;
        reclaim(r, idle);
        idle = next;
    }
    return due;
}

static void registry_free(struct dbpool_registry *r)
{
    pthread_cond_destroy(&r->created);
    pthread_mutex_destroy(&r->mu);
    mem_free((char *)r->cfg.tenant.after_connect);
    mem_free(r->buckets);
    mem_free(r->held);
    mem_free(r);
}

static void release_cb(struct mclient *c)
{
    registry_free(
        (struct dbpool_registry *)(void *)((char *)c - offsetof(struct dbpool_registry, mc)));
}

/* ---- public ------------------------------------------------------------- */

void dbpool_registry_config_init(dbpool_registry_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_connections = 100;
    cfg->pool_idle_timeout = 300000;
    dbpool_config_init(&cfg->tenant);
    cfg->tenant.size = 5;
    cfg->tenant.min_size = 0;
    cfg->tenant.idle_timeout = 60000;
    cfg->tenant.lifo = 1; /* spare connections idle, and are evicted first */
    cfg->adaptive = 0;
    cfg->adaptive_min = 1;
    cfg->adaptive_interval = 1000;
}

int dbpool_registry_open(dbpool_registry **out, const dbpool_registry_config *cfg)
{
    struct dbpool_registry *r;

    if (out)
        *out = NULL;
    if (!out || !cfg || !cfg->resolve)
        return set_error(DBPOOL_EINVAL, "dbpool_registry_open: NULL argument or no resolver");
    if (cfg->max_connections < 1 || cfg->pool_idle_timeout < 1 || cfg->max_connecting < 0)
        return set_error(DBPOOL_EINVAL,
                         "dbpool_registry_open: max_connections and pool_idle_timeout must be "
                         "positive, max_connecting not negative");
    if (cfg->adaptive && (cfg->adaptive_min < 1 || cfg->adaptive_min > cfg->max_connections ||
                          cfg->adaptive_interval < 1 || cfg->adaptive_interval > 86400000))
        return set_error(DBPOOL_EINVAL, "dbpool_registry_open: adaptive needs 1 <= adaptive_min <= "
                                        "max_connections and adaptive_interval in 1..86400000 ms");
    r = mem_calloc(1, sizeof(*r));
    if (!r)
        return set_error(DBPOOL_ENOMEM, "out of memory");
    r->cfg = *cfg;
    aimd_init(&r->aimd, cfg->adaptive, cfg->max_connections, cfg->adaptive_min,
              cfg->adaptive_interval);
    r->cfg.tenant.name = NULL; /* each pool is named after its tenant */
    r->cfg.tenant.after_connect = NULL;
    list_init(&r->queue);
    r->nbuckets = 64;
    r->buckets = mem_calloc(r->nbuckets, sizeof(*r->buckets));
    r->rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)r;
    if (!r->buckets || (cfg->tenant.after_connect &&
                        !(r->cfg.tenant.after_connect = mem_strdup(cfg->tenant.after_connect)))) {
        mem_free(r->buckets);
        mem_free(r);
        return set_error(DBPOOL_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->created, NULL);
    r->mc.service = tick;
    r->mc.release = release_cb;
    r->fork_gen = manager_fork_gen();
    int rc = manager_attach(&r->mc);
    if (rc) {
        registry_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* Create the tenant's pool without the registry lock (the resolver may be slow). */
static int create(struct dbpool_registry *r, struct tenant *t)
{
    char conninfo[1024] = "";
    dbpool_config cfg = r->cfg.tenant;
    dbpool *p = NULL;
    int rc;

    cfg.name = t->key;
    if (r->cfg.resolve(r->cfg.resolve_arg, t->key, conninfo, sizeof(conninfo), &cfg) != 0)
        return set_error(DBPOOL_EINVAL, "tenant \"%.64s\" refused by the resolver", t->key);
    cfg.name = t->key;
    if ((rc = pg_open(&p, conninfo, &cfg, &registry_budget, t)) != 0)
        return rc;
    pthread_mutex_lock(&r->mu);
    t->pool = p;
    r->created_n++;
    pthread_cond_broadcast(&r->created);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int dbpool_registry_get(dbpool_registry *r, const char *key, dbpool **out)
{
    struct tenant *t, **pt;

    if (out)
        *out = NULL;
    if (!r || !key || !out || !*key)
        return set_error(DBPOOL_EINVAL, "dbpool_registry_get: NULL argument or empty key");
    if (forked(r))
        return DBPOOL_EFORKED;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (r->closing) {
            pthread_mutex_unlock(&r->mu);
            return set_error(DBPOOL_ECLOSED, "registry is closed");
        }
        pt = find(r, key);
        t = *pt;
        if (!t || t->pool)
            break;
        pthread_cond_wait(&r->created, &r->mu); /* someone else is creating it */
    }
    if (t) {
        t->pins++;
        t->last_used = clock_ms();
        *out = t->pool;
        pthread_mutex_unlock(&r->mu);
        return 0;
    }

    /* first use: publish a placeholder so others wait for us */
    t = mem_calloc(1, sizeof(*t));
    if (t && !(t->key = mem_strdup(key))) {
        mem_free(t);
        t = NULL;
    }
    if (!t) {
        pthread_mutex_unlock(&r->mu);
        return set_error(DBPOOL_ENOMEM, "out of memory");
    }
    t->reg = r;
    t->pins = 1;
    t->last_used = clock_ms();
    *pt = t;
    r->ntenants++;
    if (r->ntenants > 2 * r->nbuckets)
        grow(r);
    pthread_mutex_unlock(&r->mu);

    int rc = create(r, t);
    if (rc != 0) {
        pthread_mutex_lock(&r->mu);
        pt = find(r, key);
        *pt = t->hnext;
        r->ntenants--;
        pthread_cond_broadcast(&r->created);
        pthread_mutex_unlock(&r->mu);
        mem_free(t->key);
        mem_free(t);
        return rc;
    }
    *out = t->pool;
    return 0;
}

void dbpool_registry_put(dbpool_registry *r, dbpool *pool)
{
    if (!r || !pool || forked(r))
        return;
    pthread_mutex_lock(&r->mu);
    struct tenant *t = *find(r, pool->cfg.name);
    if (t && t->pool == pool && t->pins > 0) {
        t->pins--;
        t->last_used = clock_ms();
    }
    pthread_mutex_unlock(&r->mu);
}

int dbpool_registry_checkout(dbpool_registry *r, const char *key, int64_t timeout_ms,
                             dbpool_lease *lease)
{
    dbpool *p;
    int rc;

    if (lease) {
        lease->slot = NULL;
        lease->gen = 0;
    }
    if (!lease)
        return set_error(DBPOOL_EINVAL, "dbpool_registry_checkout: NULL lease");
    if ((rc = dbpool_registry_get(r, key, &p)) != 0)
        return rc;
    rc = dbpool_checkout(p, timeout_ms, lease);
    dbpool_registry_put(r, p);
    return rc;
}

int dbpool_registry_stats_get(dbpool_registry *r, dbpool_registry_stats *st)
{
    if (!r || !st)
        return set_error(DBPOOL_EINVAL, "dbpool_registry_stats_get: NULL argument");
    memset(st, 0, sizeof(*st));
    if (forked(r))
        return DBPOOL_EFORKED;
    pthread_mutex_lock(&r->mu);
    st->tenants = (int)r->ntenants;
    st->open_connections = r->open;
    st->connecting = r->connecting;
    st->max_connections = r->cfg.max_connections;
    st->cap = r->aimd.cap;
    st->server_full = r->aimd.refusals;
    st->cap_decreases = r->aimd.decreases;
    st->tenants_waiting = r->queue.n;
    st->pools_created = r->created_n;
    st->pools_reclaimed = r->reclaimed_n;
    st->evictions = r->evictions_n;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int dbpool_registry_prometheus(dbpool_registry *r, char *buf, size_t buflen, size_t *needed)
{
    dbpool_registry_stats st;
    dbpool **pools;
    size_t n = 0, used, sub = 0;
    int rc;

    if (!r || (!buf && buflen))
        return set_error(DBPOOL_EINVAL, "dbpool_registry_prometheus: NULL argument");
    if (forked(r))
        return DBPOOL_EFORKED;
    /* pin every pool so none is reclaimed while we read it */
    pthread_mutex_lock(&r->mu);
    pools = mem_calloc(r->ntenants + 1, sizeof(*pools));
    if (!pools) {
        pthread_mutex_unlock(&r->mu);
        return set_error(DBPOOL_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < r->nbuckets; i++)
        for (struct tenant *t = r->buckets[i]; t; t = t->hnext)
            if (t->pool) {
                t->pins++;
                pools[n++] = t->pool;
            }
    pthread_mutex_unlock(&r->mu);

    dbpool_registry_stats_get(r, &st);
    int w = snprintf(buf, buflen,
                     "# HELP dbpool_registry_tenants Tenant pools alive.\n"
                     "# TYPE dbpool_registry_tenants gauge\n"
                     "dbpool_registry_tenants %d\n"
                     "# HELP dbpool_registry_open_connections Connections under the cap.\n"
                     "# TYPE dbpool_registry_open_connections gauge\n"
                     "dbpool_registry_open_connections %d\n"
                     "# HELP dbpool_registry_connecting Of those, connects in flight.\n"
                     "# TYPE dbpool_registry_connecting gauge\n"
                     "dbpool_registry_connecting %d\n"
                     "# HELP dbpool_registry_max_connections The cap.\n"
                     "# TYPE dbpool_registry_max_connections gauge\n"
                     "dbpool_registry_max_connections %d\n"
                     "# HELP dbpool_registry_evictions_total Idle connections closed for "
                     "another tenant.\n"
                     "# TYPE dbpool_registry_evictions_total counter\n"
                     "dbpool_registry_evictions_total %llu\n"
                     "# HELP dbpool_registry_reclaimed_total Tenant pools closed as idle.\n"
                     "# TYPE dbpool_registry_reclaimed_total counter\n"
                     "dbpool_registry_reclaimed_total %llu\n"
                     "# HELP dbpool_registry_cap The cap now (lower than max_connections while "
                     "the adaptive cap backs off).\n"
                     "# TYPE dbpool_registry_cap gauge\n"
                     "dbpool_registry_cap %d\n"
                     "# HELP dbpool_registry_server_full_total Connects refused because the "
                     "server was full (53300).\n"
                     "# TYPE dbpool_registry_server_full_total counter\n"
                     "dbpool_registry_server_full_total %llu\n",
                     st.tenants, st.open_connections, st.connecting, st.max_connections,
                     (unsigned long long)st.evictions, (unsigned long long)st.pools_reclaimed,
                     st.cap, (unsigned long long)st.server_full);
    used = w > 0 ? (size_t)w : 0;
    rc = dbpool_stats_prometheus(pools, n, buf && used < buflen ? buf + used : NULL,
                                 buf && used < buflen ? buflen - used : 0, &sub);
    if (needed)
        *needed = used + sub;
    for (size_t i = 0; i < n; i++)
        dbpool_registry_put(r, pools[i]);
    mem_free(pools);
    if (used >= buflen || rc != 0)
        return set_error(DBPOOL_ENOMEM, "buffer too small: %zu bytes needed", used + sub);
    return 0;
}

int dbpool_registry_close(dbpool_registry *r)
{
    int busy = 0;

    if (!r)
        return 0;
    if (manager_is_self())
        return set_error(DBPOOL_EINVAL, "dbpool_registry_close called from a pool callback");
    if (forked(r)) { /* free the memory; no lock, no socket of the parent's */
        for (size_t i = 0; i < r->nbuckets; i++) {
            for (struct tenant *t = r->buckets[i], *next; t; t = next) {
                next = t->hnext;
                if (t->pool)
                    pool_abandon(t->pool);
                mem_free(t->key);
                mem_free(t);
            }
        }
        mem_free((char *)r->cfg.tenant.after_connect);
        mem_free(r->buckets);
        mem_free(r->held);
        mem_free(r);
        return 0;
    }
    pthread_mutex_lock(&r->mu);
    r->closing = 1;
    pthread_cond_broadcast(&r->created);
    pthread_mutex_unlock(&r->mu);
    manager_detach(&r->mc); /* no tick runs (or reclaims) after this returns */
    /* close every pool first (a pool still open may release budget, which
     * touches its tenant), then free the tenants */
    for (size_t i = 0; i < r->nbuckets; i++)
        for (struct tenant *t = r->buckets[i]; t; t = t->hnext)
            if (t->pool && pool_close(t->pool) == DBPOOL_EBUSY)
                busy++;
    for (size_t i = 0; i < r->nbuckets; i++) {
        struct tenant *t = r->buckets[i], *next;
        for (; t; t = next) {
            next = t->hnext;
            mem_free(t->key);
            mem_free(t);
        }
    }
    r->nbuckets = 0;
    manager_release(&r->mc); /* frees r */
    return busy ? set_error(DBPOOL_EBUSY, "%d tenant pool(s) closed with leases out", busy) : 0;
}
