/* ownership.c - the test sandbox's owners (DBConnection.Ownership): who may
 * use which owner's connection, one caller at a time, in arrival order.
 * Driver-neutral; the SQL it needs comes through struct sandbox_ops. */
#include "ownership.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "pool.h"

/* A caller queued for an owner's connection; lives on its stack. */
struct owait {
    struct owait *next;
    pthread_t thread;
    pthread_cond_t cond;
    int status; /* 1 waiting, 0 handed the connection, <0 failed */
};

/*
 * An owner holds one real lease of the pool for its whole life. The slot's
 * generation moves on at every check-in of a caller's lease (so each copy of
 * it goes stale), and `gen` follows it: {slot, gen} is the lease of whoever
 * is handed the connection next, and the owner's own at its end.
 */
struct dbpool_owner {
    struct sandbox *sb;
    struct dbpool_owner *next; /* sb->owners */
    pthread_t thread;          /* the thread that checked it out */
    dbpool_lease lease;        /* the real lease; lease.gen is the first one */
    uint64_t gen;              /* the connection's current generation */
    pthread_t *allowed;
    int nallowed, capallowed;
    int held;         /* a caller holds the connection (holder) */
    pthread_t holder; /* valid while held */
    int had_sp;       /* the holder's lease runs in a savepoint (holder only) */
    struct owait *head, *tail;
    int ended;    /* dbpool_sandbox_checkin called (while held: the holder
                     releases the connection at its check-in) */
    int reaped;   /* past ownership_timeout and abandoned: the connection
                     went back to the pool; the handle waits for its
                     dbpool_sandbox_checkin (or the pool's end) */
    int broken;   /* discarded or lost: closed at the end */
    int tx_ended; /* raw COMMIT/ROLLBACK seen */
};

struct sandbox {
    pthread_mutex_t mu; /* a leaf: never held while calling into the pool or
                           the driver; the pool mutex is never held when it
                           is taken */
    pthread_condattr_t condattr;
    struct dbpool *pool;
    const struct sandbox_ops *ops;
    dbpool_sandbox_mode mode;
    int64_t ownership_timeout;
    struct dbpool_owner *shared;
    struct dbpool_owner *owners;
};

/* ---- lookup ------------------------------------------------------------------ */

static int is_allowed(const struct dbpool_owner *o, pthread_t t)
{
    for (int i = 0; i < o->nallowed; i++)
        if (pthread_equal(o->allowed[i], t))
            return 1;
    return 0;
}

static struct dbpool_owner *own_owner(struct sandbox *sb, pthread_t t)
{
    for (struct dbpool_owner *o = sb->owners; o; o = o->next)
        if (!o->ended && pthread_equal(o->thread, t))
            return o;
    return NULL;
}

/* The caller's own owner, else one that allowed it, else the shared one.
 * Locked. */
static struct dbpool_owner *lookup(struct sandbox *sb, pthread_t t)
{
    struct dbpool_owner *o = own_owner(sb, t);

    if (o)
        return o;
    for (o = sb->owners; o; o = o->next)
        if (!o->ended && is_allowed(o, t))
            return o;
    if (sb->mode == DBPOOL_SANDBOX_SHARED && sb->shared && !sb->shared->ended)
        return sb->shared;
    return NULL;
}

static int no_owner(struct sandbox *sb)
{
    return set_error(DBPOOL_ENOOWNER,
                     "pool \"%s\" is in sandbox mode and thread %#lx has no owner. Use the "
                     "sandbox in one of four ways: 1. check an owner out in this thread "
                     "(dbpool_sandbox_checkout); 2. have an owner allow this thread "
                     "(dbpool_sandbox_allow); 3. run the sandbox in shared mode "
                     "(dbpool_sandbox_mode_set with DBPOOL_SANDBOX_SHARED); 4. pass the "
                     "owner explicitly (dbpool_sandbox_lease)",
                     sb->pool->cfg.name, (unsigned long)pthread_self());
}

/* ---- owners ------------------------------------------------------------------- */

static void unlink_owner(struct sandbox *sb, struct dbpool_owner *o)
{
    for (struct dbpool_owner **pp = &sb->owners; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            return;
        }
}

/*
 * ownership_timeout's second half. An owner past its timeout whose
 * connection nobody holds may have been abandoned (a thread that exited
 * without checking it in: C has no process monitors): give the connection
 * back (discarded: its lease expired) instead of losing it for good. The
 * handle stays valid, so a slow test's later dbpool_sandbox_checkin() is
 * still safe. Owners of the calling thread are left to it (it gets
 * DBPOOL_EEXPIRED). Runs on a thread that asks the sandbox for a connection;
 * unlocked.
 */
static void reap_expired(struct sandbox *sb)
{
    struct dbpool_owner *o;

    for (;;) {
        pthread_mutex_lock(&sb->mu);
        for (o = sb->owners; o; o = o->next)
            if (!o->ended && !o->held && !pthread_equal(o->thread, pthread_self()) &&
                atomic_load_explicit(&o->lease.slot->expired, memory_order_acquire))
                break;
        if (o) {
            o->ended = 1;
            o->reaped = 1;
            o->nallowed = 0;
            if (sb->shared == o) {
                sb->shared = NULL;
                sb->mode = DBPOOL_SANDBOX_MANUAL;
            }
        }
        pthread_mutex_unlock(&sb->mu);
        if (!o)
            return;
        dbpool_lease real = {o->lease.slot, o->gen};
        atomic_store_explicit(&o->lease.slot->sbx, NULL, memory_order_release);
        (void)dbpool_discard(&real); /* EEXPIRED: that is the point */
        clear_error();
    }
}

/* Did the calling thread own an owner that was reaped? Locked. */
static int reaped_own(struct sandbox *sb)
{
    for (struct dbpool_owner *o = sb->owners; o; o = o->next)
        if (o->reaped && pthread_equal(o->thread, pthread_self()))
            return 1;
    return 0;
}

/* Check a connection out of the real pool and open the owner's
 * transaction. Unlocked. */
static int owner_new(struct sandbox *sb, int64_t timeout_ms, struct dbpool_owner **out)
{
    struct dbpool_owner *o = mem_calloc(1, sizeof(*o));
    int rc;

    *out = NULL;
    if (!o)
        return set_error(DBPOOL_ENOMEM, "dbpool_sandbox_checkout: out of memory");
    reap_expired(sb);
    if ((rc = pool_checkout_direct(sb->pool, timeout_ms, &o->lease)) != 0) {
        mem_free(o);
        return rc;
    }
    if ((rc = sb->ops->begin(&o->lease)) != 0) {
        char keep[512];
        snprintf(keep, sizeof(keep), "%s", dbpool_last_error());
        (void)dbpool_discard(&o->lease); /* state unknown: never reuse it */
        mem_free(o);
        return set_error(rc, "sandbox: BEGIN of the owner's transaction failed: %s", keep);
    }
    o->sb = sb;
    o->thread = pthread_self();
    o->gen = o->lease.gen;
    /* ownership_timeout replaces hold_timeout on the owner's lease */
    pool_lease_hold(&o->lease, sb->ownership_timeout);
    atomic_store_explicit(&o->lease.slot->sbx, o, memory_order_release);
    pthread_mutex_lock(&sb->mu);
    o->next = sb->owners;
    sb->owners = o;
    pthread_mutex_unlock(&sb->mu);
    *out = o;
    return 0;
}

/* Give the owner's connection back to the pool (the driver's check-in reset
 * rolls the transaction back) and free the owner. The caller owns the
 * connection and has unlinked the owner. */
static int owner_release(struct dbpool_owner *o)
{
    dbpool_lease real = {o->lease.slot, o->gen};
    int tx_ended = o->tx_ended, broken = o->broken;
    int64_t limit = o->sb->ownership_timeout;

    atomic_store_explicit(&o->lease.slot->sbx, NULL, memory_order_release);
    mem_free(o->allowed);
    mem_free(o);
    int rc = broken ? dbpool_discard(&real) : dbpool_checkin(&real);
    if (rc == DBPOOL_EEXPIRED)
        return set_error(rc,
                         "sandbox: the owner held its connection longer than "
                         "ownership_timeout (%lld ms); its query was cancelled and the "
                         "connection discarded",
                         (long long)limit);
    if (tx_ended)
        return set_error(DBPOOL_ETXENDED,
                         "sandbox: during this owner's life the code under test ended the "
                         "sandbox's transaction %d time(s) (raw COMMIT or ROLLBACK): what it "
                         "wrote before each may have been committed for real",
                         tx_ended);
    return rc;
}

/* ---- leases of an owner's connection ------------------------------------------ */

static void abs_time(int64_t ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ms / 1000);
    ts->tv_nsec = (long)(ms % 1000) * 1000000L;
}

/* Hand the owner's connection to the calling thread: at once if free, else
 * after the callers queued before it (FIFO), until the deadline. Called
 * locked; returns unlocked. */
static int owner_lease(struct sandbox *sb, struct dbpool_owner *o, int64_t timeout_ms,
                       dbpool_lease *l)
{
    pthread_t self = pthread_self();
    int rc;

    if (o->ended) {
        pthread_mutex_unlock(&sb->mu);
        return set_error(DBPOOL_ENOOWNER, "sandbox: the owner has ended");
    }
    if (o->broken) {
        pthread_mutex_unlock(&sb->mu);
        return set_error(DBPOOL_ECONNLOST,
                         "sandbox: the owner's connection was lost or discarded; end the "
                         "owner (dbpool_sandbox_checkin) and check a new one out");
    }
    if (atomic_load_explicit(&o->lease.slot->expired, memory_order_acquire)) {
        pthread_mutex_unlock(&sb->mu);
        return set_error(DBPOOL_EEXPIRED,
                         "sandbox: the owner held its connection longer than "
                         "ownership_timeout (%lld ms); end the owner",
                         (long long)sb->ownership_timeout);
    }
    if (o->held) {
        if (pthread_equal(o->holder, self)) {
            pthread_mutex_unlock(&sb->mu);
            return set_error(DBPOOL_EBUSY,
                             "sandbox: this thread already holds its owner's connection; "
                             "check that lease in first (a sandbox has one connection per "
                             "owner, so code that holds two leases at once cannot run in it)");
        }
        if (timeout_ms == DBPOOL_DEFAULT_TIMEOUT)
            timeout_ms = sb->pool->cfg.checkout_timeout; /* fixed at open */
        if (timeout_ms == 0) {
            pthread_mutex_unlock(&sb->mu);
            return set_error(DBPOOL_EBUSY, "sandbox: the owner's connection is in use and "
                                           "timeout is 0");
        }
        struct owait w = {.thread = self, .status = 1};
        int64_t t0 = clock_ms(), deadline = deadline_add(t0, timeout_ms);
        struct timespec ts;
        abs_time(deadline, &ts);
        pthread_cond_init(&w.cond, &sb->condattr);
        if (o->tail)
            o->tail->next = &w;
        else
            o->head = &w;
        o->tail = &w;
        while (w.status == 1) {
            int e = deadline == INT64_MAX ? pthread_cond_wait(&w.cond, &sb->mu)
                                          : pthread_cond_timedwait(&w.cond, &sb->mu, &ts);
            if (e == ETIMEDOUT && w.status == 1) {
                struct owait *prev = NULL;
                for (struct owait *q = o->head; q; prev = q, q = q->next)
                    if (q == &w) {
                        if (prev)
                            prev->next = w.next;
                        else
                            o->head = w.next;
                        if (o->tail == &w)
                            o->tail = prev;
                        break;
                    }
                w.status = DBPOOL_ETIMEDOUT;
            }
        }
        pthread_cond_destroy(&w.cond);
        if (w.status != 0) {
            /* o may be gone (ended): only w is touched from here */
            int64_t waited = clock_ms() - t0;
            pthread_mutex_unlock(&sb->mu);
            if (w.status == DBPOOL_ETIMEDOUT)
                return set_error(DBPOOL_ETIMEDOUT,
                                 "sandbox: deadline reached while in queue for the owner's "
                                 "connection (waited %lld ms; another caller of the same "
                                 "owner held it)",
                                 (long long)waited);
            return set_error(w.status, "sandbox: the owner ended while this thread waited "
                                       "for its connection");
        }
        /* handed over: held and holder were set for us */
    } else {
        o->held = 1;
        o->holder = self;
    }
    l->slot = o->lease.slot;
    l->gen = o->gen;
    pthread_mutex_unlock(&sb->mu);
    /* we hold the connection now: nobody else touches it or had_sp */
    rc = sb->ops->lease_start(l);
    o->had_sp = rc > 0;
    return 0;
}

int sandbox_checkout(struct sandbox *sb, int64_t timeout_ms, dbpool_lease *l)
{
    struct dbpool_owner *o;
    int rc;

    if (timeout_ms < 0 && timeout_ms != DBPOOL_DEFAULT_TIMEOUT)
        return set_error(DBPOOL_EINVAL, "dbpool_checkout: negative timeout %lld",
                         (long long)timeout_ms);
    reap_expired(sb);
    pthread_mutex_lock(&sb->mu);
    o = lookup(sb, pthread_self());
    if (!o && sb->mode == DBPOOL_SANDBOX_AUTO) {
        pthread_mutex_unlock(&sb->mu);
        if ((rc = owner_new(sb, timeout_ms, &o)) != 0)
            return rc;
        pthread_mutex_lock(&sb->mu);
    }
    if (!o) {
        int reaped = reaped_own(sb);
        pthread_mutex_unlock(&sb->mu);
        if (reaped)
            return set_error(DBPOOL_EEXPIRED,
                             "sandbox: the owner held its connection longer than "
                             "ownership_timeout (%lld ms) and it went back to the pool; end "
                             "the owner",
                             (long long)sb->ownership_timeout);
        return no_owner(sb);
    }
    return owner_lease(sb, o, timeout_ms, l);
}

int sandbox_checkin(dbpool_lease *l, struct dbpool_owner *o, int discard)
{
    struct dbpool_slot *s = l->slot;
    char msg[320] = "";
    int res = SBX_OK;

    /* as a real check-in: moving gen on makes every copy of the lease stale,
     * and only the holder can win. Until then `o` may be another owner's, or
     * freed (a stale copy): it is not touched before. */
    uint64_t gen = l->gen;
    if (!atomic_compare_exchange_strong_explicit(&s->gen, &gen, l->gen + 1, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return set_error(DBPOOL_ESTALE, "lease already checked in (double check-in?)");
    /* our lease was live, so the slot's owner is the one we hold it from,
     * and it cannot be freed while we hold it */
    struct sandbox *sb = o->sb;
    dbpool_lease cur = {s, l->gen + 1}; /* still ours until we let go below */
    if (discard)
        res = SBX_BROKEN;
    else if (!atomic_load_explicit(&s->expired, memory_order_acquire))
        res = sb->ops->lease_end(&cur, o->had_sp, msg, sizeof(msg));

    pthread_mutex_lock(&sb->mu);
    o->gen = cur.gen;
    if (res == SBX_BROKEN)
        o->broken = 1;
    else if (res == SBX_ENDED)
        o->tx_ended++;
    if (o->ended) {
        /* the owner ended while we held its connection: we release it */
        unlink_owner(sb, o);
        pthread_mutex_unlock(&sb->mu);
        int rc = owner_release(o);
        if (res == SBX_ENDED)
            return set_error(DBPOOL_ETXENDED, "sandbox: %s", msg);
        return rc == DBPOOL_ETXENDED ? 0 : rc; /* the owner's news, told to the owner */
    }
    struct owait *w = o->head;
    if (w) {
        o->head = w->next;
        if (!o->head)
            o->tail = NULL;
        o->holder = w->thread;
        w->status = 0;
        pthread_cond_signal(&w->cond); /* under the mutex: w is on its stack */
    } else {
        o->held = 0;
    }
    pthread_mutex_unlock(&sb->mu);
    if (res == SBX_ENDED)
        return set_error(DBPOOL_ETXENDED, "sandbox: %s", msg);
    return 0;
}

/* ---- public ------------------------------------------------------------------- */

void dbpool_sandbox_config_init(dbpool_sandbox_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->mode = DBPOOL_SANDBOX_MANUAL;
    cfg->ownership_timeout = 120000; /* DBConnection's default */
}

int sandbox_enable(struct dbpool *p, const struct sandbox_ops *ops,
                   const dbpool_sandbox_config *cfg)
{
    dbpool_sandbox_config defaults;
    struct sandbox *sb;

    if (!cfg) {
        dbpool_sandbox_config_init(&defaults);
        cfg = &defaults;
    }
    if ((unsigned)cfg->mode > DBPOOL_SANDBOX_AUTO)
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_enable: mode must be MANUAL or AUTO "
                                        "(shared mode needs an owner: dbpool_sandbox_mode_set)");
    if (cfg->ownership_timeout < 0)
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_enable: negative ownership_timeout");
    if (!(sb = mem_calloc(1, sizeof(*sb))))
        return set_error(DBPOOL_ENOMEM, "dbpool_sandbox_enable: out of memory");
    if (pthread_mutex_init(&sb->mu, NULL) != 0) {
        mem_free(sb);
        return set_error(DBPOOL_ESYSTEM, "dbpool_sandbox_enable: pthread init failed");
    }
    if (pthread_condattr_init(&sb->condattr) != 0 ||
        pthread_condattr_setclock(&sb->condattr, CLOCK_MONOTONIC) != 0) {
        pthread_mutex_destroy(&sb->mu);
        mem_free(sb);
        return set_error(DBPOOL_ESYSTEM, "dbpool_sandbox_enable: pthread init failed");
    }
    sb->pool = p;
    sb->ops = ops;
    sb->mode = cfg->mode;
    sb->ownership_timeout = cfg->ownership_timeout;
    struct sandbox *none = NULL;
    if (!atomic_compare_exchange_strong(&p->sandbox, &none, sb)) {
        sandbox_free(sb);
        return set_error(DBPOOL_EINVAL,
                         "dbpool_sandbox_enable: pool \"%s\" is already in "
                         "sandbox mode",
                         p->cfg.name);
    }
    return 0;
}

int sandbox_queued(struct dbpool *p)
{
    struct sandbox *sb = atomic_load_explicit(&p->sandbox, memory_order_acquire);
    int n = 0;

    if (!sb)
        return 0;
    pthread_mutex_lock(&sb->mu);
    for (struct dbpool_owner *o = sb->owners; o; o = o->next)
        for (struct owait *w = o->head; w; w = w->next)
            n++;
    pthread_mutex_unlock(&sb->mu);
    return n;
}

void sandbox_free(struct sandbox *sb)
{
    if (!sb)
        return;
    /* only reaped owners can be left (each other one holds a lease, and the
     * pool is freed after its last lease): handles never checked in */
    while (sb->owners) {
        struct dbpool_owner *o = sb->owners;
        sb->owners = o->next;
        mem_free(o->allowed);
        mem_free(o);
    }
    pthread_condattr_destroy(&sb->condattr);
    pthread_mutex_destroy(&sb->mu);
    mem_free(sb);
}

static struct sandbox *sandbox_of(dbpool *p, const char *fn)
{
    struct sandbox *sb;

    if (!p) {
        set_error(DBPOOL_EINVAL, "%s: NULL pool", fn);
        return NULL;
    }
    if (pool_forked(p))
        return NULL;
    if (!(sb = atomic_load_explicit(&p->sandbox, memory_order_acquire)))
        set_error(DBPOOL_EINVAL, "%s: pool \"%s\" is not in sandbox mode (dbpool_sandbox_enable)",
                  fn, p->cfg.name);
    return sb;
}

int dbpool_sandbox_checkout(dbpool *p, int64_t timeout_ms, dbpool_owner **owner)
{
    struct sandbox *sb;

    clear_error();
    if (owner)
        *owner = NULL;
    if (!(sb = sandbox_of(p, "dbpool_sandbox_checkout")))
        return p && pool_forked(p) ? DBPOOL_EFORKED : DBPOOL_EINVAL;
    if (!owner)
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_checkout: NULL owner");
    pthread_mutex_lock(&sb->mu);
    int mine = own_owner(sb, pthread_self()) != NULL;
    pthread_mutex_unlock(&sb->mu);
    if (mine)
        return set_error(DBPOOL_EINVAL,
                         "dbpool_sandbox_checkout: this thread already owns a "
                         "connection of pool \"%s\"",
                         p->cfg.name);
    return owner_new(sb, timeout_ms, owner);
}

int dbpool_sandbox_checkin(dbpool_owner *o)
{
    struct sandbox *sb;

    if (!o)
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_checkin: NULL owner");
    if (pool_forked(o->sb->pool)) /* no ROLLBACK on the parent's socket */
        return DBPOOL_EFORKED;
    sb = o->sb;
    pthread_mutex_lock(&sb->mu);
    if (o->reaped) {
        unlink_owner(sb, o);
        pthread_mutex_unlock(&sb->mu);
        int64_t limit = sb->ownership_timeout;
        mem_free(o->allowed);
        mem_free(o);
        return set_error(DBPOOL_EEXPIRED,
                         "sandbox: the owner held its connection longer than "
                         "ownership_timeout (%lld ms); the connection was discarded and "
                         "returned to the pool meanwhile",
                         (long long)limit);
    }
    if (o->ended) {
        pthread_mutex_unlock(&sb->mu);
        return set_error(DBPOOL_ESTALE, "dbpool_sandbox_checkin: the owner has already ended");
    }
    o->ended = 1;
    o->nallowed = 0; /* allowances end with the owner */
    if (sb->shared == o) {
        sb->shared = NULL;
        sb->mode = DBPOOL_SANDBOX_MANUAL;
    }
    for (struct owait *w = o->head, *next; w; w = next) {
        next = w->next;
        w->status = DBPOOL_ENOOWNER;
        pthread_cond_signal(&w->cond);
    }
    o->head = o->tail = NULL;
    if (o->held) {
        unsigned long holder = (unsigned long)o->holder;
        pthread_mutex_unlock(&sb->mu);
        return set_error(DBPOOL_EBUSY,
                         "sandbox: the owner ended while thread %#lx holds its connection; "
                         "that thread may go on using it, and its check-in rolls the "
                         "transaction back and returns the connection to the pool",
                         holder);
    }
    unlink_owner(sb, o);
    pthread_mutex_unlock(&sb->mu);
    return owner_release(o);
}

int dbpool_sandbox_allow(dbpool_owner *o, pthread_t thread)
{
    struct sandbox *sb;

    if (!o)
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_allow: NULL owner");
    if (pool_forked(o->sb->pool))
        return DBPOOL_EFORKED;
    sb = o->sb;
    pthread_mutex_lock(&sb->mu);
    if (o->ended) {
        pthread_mutex_unlock(&sb->mu);
        return set_error(DBPOOL_ENOOWNER, "dbpool_sandbox_allow: the owner has ended");
    }
    if (is_allowed(o, thread)) {
        pthread_mutex_unlock(&sb->mu);
        return 0;
    }
    if (o->nallowed == o->capallowed) {
        int cap = o->capallowed ? 2 * o->capallowed : 4;
        pthread_t *a = mem_calloc((size_t)cap, sizeof(*a));
        if (!a) {
            pthread_mutex_unlock(&sb->mu);
            return set_error(DBPOOL_ENOMEM, "dbpool_sandbox_allow: out of memory");
        }
        if (o->nallowed)
            memcpy(a, o->allowed, (size_t)o->nallowed * sizeof(*a));
        mem_free(o->allowed);
        o->allowed = a;
        o->capallowed = cap;
    }
    o->allowed[o->nallowed++] = thread;
    pthread_mutex_unlock(&sb->mu);
    return 0;
}

int dbpool_sandbox_mode_set(dbpool *p, dbpool_sandbox_mode mode, dbpool_owner *shared)
{
    struct sandbox *sb;

    if (!(sb = sandbox_of(p, "dbpool_sandbox_mode_set")))
        return p && pool_forked(p) ? DBPOOL_EFORKED : DBPOOL_EINVAL;
    if ((unsigned)mode > DBPOOL_SANDBOX_SHARED)
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_mode_set: unknown mode %d", (int)mode);
    if ((mode == DBPOOL_SANDBOX_SHARED) != (shared != NULL))
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_mode_set: shared mode takes an owner, "
                                        "the other modes NULL");
    if (shared && shared->sb != sb)
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_mode_set: the owner is another pool's");
    pthread_mutex_lock(&sb->mu);
    if (shared && shared->ended) {
        pthread_mutex_unlock(&sb->mu);
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_mode_set: the owner has ended");
    }
    sb->mode = mode;
    sb->shared = shared;
    pthread_mutex_unlock(&sb->mu);
    return 0;
}

int dbpool_sandbox_lease(dbpool_owner *o, int64_t timeout_ms, dbpool_lease *lease)
{
    if (lease) {
        lease->slot = NULL;
        lease->gen = 0;
    }
    clear_error();
    if (!o || !lease)
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_lease: NULL argument");
    if (pool_forked(o->sb->pool))
        return DBPOOL_EFORKED;
    if (timeout_ms < 0 && timeout_ms != DBPOOL_DEFAULT_TIMEOUT)
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_lease: negative timeout %lld",
                         (long long)timeout_ms);
    pthread_mutex_lock(&o->sb->mu);
    return owner_lease(o->sb, o, timeout_ms, lease);
}

int dbpool_sandbox_owner(dbpool *p, dbpool_owner **owner)
{
    struct sandbox *sb;

    if (owner)
        *owner = NULL;
    if (!(sb = sandbox_of(p, "dbpool_sandbox_owner")))
        return p && pool_forked(p) ? DBPOOL_EFORKED : DBPOOL_EINVAL;
    if (!owner)
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_owner: NULL owner");
    pthread_mutex_lock(&sb->mu);
    *owner = lookup(sb, pthread_self());
    pthread_mutex_unlock(&sb->mu);
    return 0;
}
