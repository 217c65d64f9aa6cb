/* sim.c - a discrete-event simulation of many app servers, each a registry of
 * tenant pools, sharing one PostgreSQL that refuses connects past max_connections.
 *
 *   sim [options]            (bench/sim/run.sh runs the scenarios of bench/RESULTS.md)
 *
 * Virtual clock, one thread, no I/O but the report. What is the library's own
 * code, called as the library calls it:
 *   src/tenants/aimd.c   the adaptive cap (refusal -> decrease, tick -> increase)
 *   src/core/queue.c     each tenant pool's wait queue and CoDel (codel_checkin,
 *                        codel_poll) with real struct waiter nodes
 *   src/core/backoff.c   each slot's reconnect backoff (rand_exp) and the RNG
 * What is modelled after the library's code (it is tied to the pool mutex,
 * the manager thread and libpq, so it is re-stated here in a few lines each):
 *   the registry's grants (FIFO of tenants, one connection per turn), its
 *   frequency-aware eviction (a tenant's last connection by its decayed
 *   checkout count, spare ones by idle time; one eviction asked per queued
 *   tenant, at most one per victim), the pool's slot states, the probe while a pool has no
 *   connection and the server is full, idle_timeout.
 * Not modelled: barging (barge_window), pings, connect timeouts, reclaiming
 * idle tenant pools, DOWN (a full server never makes a pool DOWN anyway).
 * The server: max_connections, a connect channel (--connect-par parallel
 * connects of --connect-ms on average, long-tailed; a refused one costs
 * --refuse-ms; or, with --cores K, every connect in flight at once sharing
 * K CPUs, the slot taken or refused after --refuse-ms of work), a time per
 * query, a backend that exits --disc-ms after its client closes.
 * Load: closed-loop callers (--threads per process, it_adaptive's tenant mix)
 * or open-loop arrivals (--rate per process, Zipf tenant popularity, diurnal
 * sine). */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aimd.h"
#include "backoff.h"
#include "list.h"
#include "queue.h"

/* ---- options ------------------------------------------------------------ */

static struct {
    int procs, tenants, threads, cap, fixed, min, size, max_conn, connect_par, hot, cores;
    double connect_ms, refuse_ms, disc_ms, query_ms, client_ms, rate, zipf, diurnal, day_s;
    double seconds, warmup, timeout_ms, idle_timeout_ms, probe_ms, skew;
    int64_t interval, backoff_min, backoff_max, queue_target, queue_interval;
    uint64_t seed;
    const char *series; /* per-second CSV */
    const char *label;
} opt = {
    .procs = 8,
    .tenants = 100,
    .threads = 4,
    .cap = 20,
    .min = 1,
    .size = 3,
    .max_conn = 60,
    .connect_par = 1,
    .hot = 8,
    .connect_ms = 22,
    .refuse_ms = 11,
    .disc_ms = 1,
    .query_ms = 0.5,
    .client_ms = 0,
    .rate = 0,
    .zipf = 1.1,
    .diurnal = 0,
    .day_s = 600,
    .seconds = 16,
    .warmup = 8,
    .timeout_ms = 15000,
    .idle_timeout_ms = 60000,
    .probe_ms = 100,
    .interval = 1000,
    .backoff_min = 50,
    .backoff_max = 500,
    .queue_target = 5000,
    .queue_interval = 10000,
    .seed = 1,
    .label = "sim",
};

/* ---- virtual clock and events -------------------------------------------- */

enum ev_type {
    EV_CALL,      /* a caller starts a call (closed loop) / an arrival (open loop) */
    EV_TIMEOUT,   /* a waiter's checkout deadline */
    EV_CONNECTED, /* the server finished a connect (success or refusal) */
    EV_DONE,      /* a query finished: check in */
    EV_SERVICE,   /* the manager services a pool (poke or timer) */
    EV_TICK,      /* the registry's tick (aimd, shedding, idle_timeout) */
    EV_POLL,      /* a pool's CoDel poll */
    EV_EXIT,      /* a backend exits */
    EV_SAMPLE,    /* one second of the series */
    EV_PS,        /* --cores: the next connect in processor sharing reaches a milestone */
};

struct ev {
    int64_t t;    /* us */
    uint64_t seq; /* FIFO among equal times: deterministic */
    int type;
    int a;        /* process, pool, slot or call index */
    unsigned gen; /* stale-event guard */
};

static struct ev *heap;
static size_t heap_n, heap_cap;
static uint64_t seq_n;
static int64_t now_us;

static int ev_less(const struct ev *x, const struct ev *y)
{
    return x->t < y->t || (x->t == y->t && x->seq < y->seq);
}

static void push(int64_t t, int type, int a, unsigned gen)
{
    if (heap_n == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = realloc(heap, heap_cap * sizeof(*heap));
        if (!heap) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
    size_t i = heap_n++;
    struct ev e = {t, seq_n++, type, a, gen};
    while (i > 0 && ev_less(&e, &heap[(i - 1) / 2])) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = e;
}

static struct ev pop(void)
{
    struct ev top = heap[0], last = heap[--heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= heap_n)
            break;
        if (c + 1 < heap_n && ev_less(&heap[c + 1], &heap[c]))
            c++;
        if (!ev_less(&heap[c], &last))
            break;
        heap[i] = heap[c];
        i = c;
    }
    heap[i] = last;
    return top;
}

static int64_t ms(void)
{
    return now_us / 1000;
}

static int64_t us(double ms_)
{
    return (int64_t)llround(ms_ * 1000.0);
}

static uint64_t rng = 88172645463325252ULL;

static double urand(void) /* [0, 1) */
{
    return (double)rng_range(&rng, 0, (INT64_C(1) << 53) - 1) / 9007199254740992.0;
}

/* ---- the model ------------------------------------------------------------ */

enum st { S_DORMANT, S_PENDING, S_CONNECTING, S_IDLE, S_BUSY, S_BACKOFF, S_N };

struct slot {
    struct list_node link;
    int state, pool;
    struct backoff bo;
    int64_t timer_at, last_checkin; /* ms */
    int call;                       /* holder */
    unsigned gen;
};

struct pool {
    int proc, tenant;
    struct list_node qlink; /* in the registry's FIFO of tenants denied room */
    int queued;
    struct list_head lists[S_N];
    int open; /* counted against the cap: connecting, idle, busy */
    struct wqueue waiters;
    struct codel codel;
    int evict_requests, at_limit, probing, probe, budget_denied;
    double heat; /* decayed checkout count (src/core/pool.h) */
    int64_t heat_since;
    int64_t probe_at;
    int64_t svc_at; /* a service event is scheduled then (INT64_MAX: none) */
    int poll_scheduled;
    uint64_t rng;
};

struct proc {
    struct aimd aimd;
    int open, evictions_asked;
    struct list_head queue;
    int64_t next_idle_scan;
    /* counted after warmup */
    long ok, fail, connects, evictions_n;
    long ok_sec; /* this second */
    long peak_open;
};

struct call {
    struct waiter w; /* the library's own waiter node */
    int proc, pool, slot, caller;
    int64_t t0_us;
    unsigned gen;
    int next_free;
    int id;
};

static struct proc *procs;
static struct pool *pools;
static struct slot *slots;
/* calls live in chunks that never move: queued waiters are linked through them */
#define CHUNK 4096
static struct call *chunks[65536];
static int ncalls, free_call = -1;
#define CALL(c) (&chunks[(c) / CHUNK][(c) % CHUNK])

/* server */
static int backends, max_backends, connect_busy;
static int *cq; /* FIFO of slots waiting for a connect channel */
static size_t cq_head, cq_tail, cq_cap;

/* totals */
static long refusals_total, connects_total, refusals_sec, connects_sec, ok_sec_total;
static long fail_timeout, fail_dropped, hits, misses;
static double st_sum[S_N];
static long st_n;

/* pooled waits after warmup: log buckets 2% wide from 1 us (as adaptive_run.c) */
#define NBUCKETS 1000
static uint64_t hist[NBUCKETS], nhist;

static void hist_add_ms(double w)
{
    double u = w * 1000.0;
    int b = u <= 1.0 ? 0 : (int)(log(u) / log(1.02));
    hist[b < NBUCKETS ? b : NBUCKETS - 1]++;
    nhist++;
}

static double hist_q(double q)
{
    uint64_t want = (uint64_t)(nhist * q), acc = 0;
    for (int b = 0; b < NBUCKETS; b++) {
        acc += hist[b];
        if (acc > want)
            return pow(1.02, b + 0.5) / 1000.0;
    }
    return 0;
}

static uint64_t hist_below(double ms_)
{
    uint64_t n = 0;
    for (int b = 0; b < NBUCKETS && pow(1.02, b + 0.5) / 1000.0 < ms_; b++)
        n += hist[b];
    return n;
}

static int counted(int st)
{
    return st == S_CONNECTING || st == S_IDLE || st == S_BUSY;
}

static struct slot *first(struct pool *p, int st)
{
    struct list_node *n = list_first(&p->lists[st]);
    return n ? list_entry(n, struct slot, link) : NULL;
}

static void poke(struct pool *p, int64_t delay_us);
static void budget_release(struct pool *p);
static int counting(void);

/* slot_move with the budget's release, as src/core/pool.c */
static void move(struct slot *s, int to)
{
    struct pool *p = &pools[s->pool];
    int from = s->state;
    list_del(&p->lists[from], &s->link);
    s->state = to;
    list_push_tail(&p->lists[to], &s->link);
    if (counted(from) && !counted(to)) {
        p->open--;
        budget_release(p);
    } else if (!counted(from) && counted(to)) {
        p->open++;
    }
}

/* ---- registry (src/tenants/registry.c, re-stated) ------------------------ */

static struct pool *queue_head(struct proc *r)
{
    struct list_node *n = list_first(&r->queue);
    return n ? list_entry(n, struct pool, qlink) : NULL;
}

static void queue_remove(struct proc *r, struct pool *t)
{
    if (t->queued) {
        list_del(&r->queue, &t->qlink);
        t->queued = 0;
    }
}

static int64_t oldest_idle(struct pool *p)
{
    struct slot *s = first(p, S_IDLE);
    return s ? s->last_checkin : INT64_MAX;
}

/* A pool's heat (src/core/pool.h): its checkouts, halved every
 * HEAT_HALF_LIFE ms; kept as a double here, halved in the same whole steps. */
#define HEAT_HALF_LIFE 2000
static double heat_at(const struct pool *p, int64_t now)
{
    int64_t halvings = now > p->heat_since ? (now - p->heat_since) / HEAT_HALF_LIFE : 0;
    return halvings >= 20 ? 0 : p->heat / (double)(1 << halvings);
}

static void heat_bump(struct pool *p, int64_t now)
{
    double h = heat_at(p, now);
    if (p->heat == 0 && p->heat_since == 0)
        p->heat_since = now; /* first checkout */
    else if (now > p->heat_since)
        p->heat_since += (now - p->heat_since) / HEAT_HALF_LIFE * HEAT_HALF_LIFE;
    p->heat = h + 1;
}

/* registry.c, keep_value: a tenant's last connection is worth its checkout
 * rate, a further one at most about once per its idle time so far */
static double keep_value(const struct pool *v, int64_t oldest, int64_t now)
{
    double rate = heat_at(v, now) * 1000.0 / (1.44 * HEAT_HALF_LIFE);
    if (v->open > 1) {
        double spare = 1000.0 / (double)(now > oldest ? now - oldest + 1 : 1);
        if (spare < rate)
            rate = spare;
    }
    return rate;
}

/* registry.c, coldest_idle + ask_eviction: the idle connection worth least
 * of a tenant other than t that has not been asked already; with none idle,
 * the tenant holding the most (more than t + 1, not all of it asked) gives
 * one back at its next check-in. The library samples 32 holders when there
 * are more than 32; here every holder is looked at (caps of 20 and below in
 * the scenarios: the same). */
static void ask_eviction(struct proc *r, struct pool *t)
{
    int pi = (int)(r - procs);
    int64_t now = ms();
    struct pool *victim = NULL;
    double best = 0;
    int64_t best_oldest = 0;
    for (int k = 0; k < opt.tenants; k++) {
        struct pool *v = &pools[pi * opt.tenants + k];
        if (v == t || v->open == 0 || v->evict_requests > 0)
            continue;
        int64_t o = oldest_idle(v);
        if (o == INT64_MAX)
            continue;
        double val = keep_value(v, o, now);
        if (!victim || val < best || (val == best && o < best_oldest)) {
            victim = v;
            best = val;
            best_oldest = o;
        }
    }
    if (!victim) {
        int most = t ? t->open + 1 : 0;
        for (int k = 0; k < opt.tenants; k++) {
            struct pool *v = &pools[pi * opt.tenants + k];
            if (v != t && v->open > most && v->evict_requests < v->open) {
                most = v->open;
                victim = v;
            }
        }
    }
    if (victim) {
        victim->evict_requests++;
        r->evictions_asked++;
        r->evictions_n += counting();
        poke(victim, 0);
    }
}

/* registry.c, ask_evictions_for_queue: one eviction per queued tenant not
 * covered by one already asked or by room free */
static void ask_evictions_for_queue(struct proc *r, struct pool *except)
{
    int room = r->aimd.cap - r->open;
    int want = (int)r->queue.n - r->evictions_asked - (room > 0 ? room : 0);
    while (want-- > 0) {
        int asked = r->evictions_asked;
        ask_eviction(r, except);
        if (r->evictions_asked == asked)
            break;
    }
}

static int budget_acquire(struct pool *t)
{
    struct proc *r = &procs[t->proc];
    if (r->open < r->aimd.cap && (!queue_head(r) || queue_head(r) == t)) {
        r->open++;
        aimd_connecting(&r->aimd);
        queue_remove(r, t);
        if (r->open > r->peak_open)
            r->peak_open = r->open;
        struct pool *h = r->open < r->aimd.cap ? queue_head(r) : NULL;
        if (h) /* poke_head_if_room */
            poke(h, 0);
        return 1;
    }
    if (!t->queued) {
        list_push_tail(&r->queue, &t->qlink);
        t->queued = 1;
    }
    ask_evictions_for_queue(r, t);
    return 0;
}

static void budget_release(struct pool *p)
{
    struct proc *r = &procs[p->proc];
    r->open--;
    /* requests p has no connection left for are dropped */
    if (p->evict_requests > p->open) {
        r->evictions_asked -= p->evict_requests - p->open;
        p->evict_requests = p->open;
        if (r->evictions_asked < 0)
            r->evictions_asked = 0;
    }
    if (r->evictions_asked > 0)
        r->evictions_asked--;
    struct pool *h = queue_head(r);
    if (h) {
        poke(h, 0);
        ask_evictions_for_queue(r, p);
    }
}

static void budget_full(struct pool *p)
{
    struct proc *r = &procs[p->proc];
    aimd_refused(&r->aimd, ms());
}

/* ---- server --------------------------------------------------------------- */

/* --cores K: processor sharing. Every connect starts at once (the postmaster
 * forks at accept) and the connects in flight share K CPUs, each progressing
 * at min(1, K / in flight). A connect is work --connect-ms (long-tailed); at
 * --refuse-ms of it the backend asks for its slot (InitProcess): refused, it
 * ends there; granted, it holds the slot for the rest. */
struct psjob {
    int slot, checked; /* checked: past the slot check */
    double rem, tail;  /* work left to the next milestone; tail factor */
};
static struct psjob *ps;
static int ps_n, ps_cap;
static int64_t ps_at;   /* time of the last update */
static unsigned ps_gen; /* the valid EV_PS */

static double ps_rate(void)
{
    return ps_n > opt.cores ? (double)opt.cores / ps_n : 1.0;
}

static void ps_advance(void) /* the work done since ps_at */
{
    double done = (double)(now_us - ps_at) / 1000.0 * ps_rate();
    for (int i = 0; i < ps_n; i++)
        ps[i].rem -= done;
    ps_at = now_us;
}

static void ps_schedule(void)
{
    if (ps_n == 0)
        return;
    double m = ps[0].rem;
    for (int i = 1; i < ps_n; i++)
        if (ps[i].rem < m)
            m = ps[i].rem;
    if (m < 0)
        m = 0;
    push(now_us + (int64_t)ceil(m / ps_rate() * 1000.0), EV_PS, 0, ++ps_gen);
}

static void ps_start(int si)
{
    ps_advance();
    if (ps_n == ps_cap) {
        ps_cap = ps_cap ? ps_cap * 2 : 256;
        ps = realloc(ps, (size_t)ps_cap * sizeof(*ps));
        if (!ps) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
    double tail = 0.3 + 0.7 * -log(1.0 - urand());
    ps[ps_n++] = (struct psjob){si, 0, opt.refuse_ms * tail, tail};
    ps_schedule();
}

static void connected(struct slot *s);
static void refused(struct slot *s);

static void ps_event(void)
{
    ps_advance();
    for (int i = 0; i < ps_n;) {
        struct psjob *j = &ps[i];
        if (j->rem > 1e-6) {
            i++;
            continue;
        }
        if (!j->checked && backends < opt.max_conn) { /* the slot: the rest of the connect */
            backends++;
            if (backends > max_backends)
                max_backends = backends;
            j->checked = 1;
            j->rem = (opt.connect_ms - opt.refuse_ms) * j->tail;
            if (j->rem > 1e-6) {
                i++;
                continue;
            }
        }
        int si = j->slot, ok = j->checked;
        *j = ps[--ps_n]; /* i now holds another job: look at it again */
        if (ok)
            connected(&slots[si]);
        else
            refused(&slots[si]);
    }
    ps_schedule();
}

static void server_connect(int si)
{
    if (opt.cores > 0) {
        ps_start(si);
        return;
    }
    if (connect_busy < opt.connect_par) {
        connect_busy++;
        /* the outcome is decided when the backend starts: refused ones are cheaper */
        int ok = backends < opt.max_conn;
        if (ok)
            backends++; /* the backend takes its slot (PGPROC) at once */
        double cost = ok ? opt.connect_ms : opt.refuse_ms;
        /* mean `cost`, with a long tail: a fork and authentication on a
         * busy machine sometimes wait for a CPU */
        cost *= 0.3 + 0.7 * -log(1.0 - urand());
        push(now_us + us(cost), EV_CONNECTED, si, (unsigned)ok);
        if (backends > max_backends)
            max_backends = backends;
        return;
    }
    if (cq_tail - cq_head == cq_cap) {
        size_t n = cq_cap ? cq_cap * 2 : 1024;
        int *q = malloc(n * sizeof(int));
        for (size_t i = 0; i < cq_tail - cq_head; i++)
            q[i] = cq[(cq_head + i) % cq_cap];
        cq_tail -= cq_head;
        cq_head = 0;
        free(cq);
        cq = q;
        cq_cap = n;
    }
    cq[cq_tail++ % cq_cap] = si;
}

static void channel_free(void)
{
    connect_busy--;
    if (cq_tail > cq_head) {
        int si = cq[cq_head++ % cq_cap];
        server_connect(si);
    }
}

static void server_close(void)
{
    push(now_us + us(opt.disc_ms), EV_EXIT, 0, 0);
}

/* ---- callers ---------------------------------------------------------------- */

static int call_new(void)
{
    int c;
    if (free_call >= 0) {
        c = free_call;
        free_call = (*CALL(c)).next_free;
    } else {
        if (ncalls % CHUNK == 0) {
            if (ncalls / CHUNK >= 65536 ||
                !(chunks[ncalls / CHUNK] = calloc(CHUNK, sizeof(struct call)))) {
                fprintf(stderr, "too many calls in flight\n");
                exit(1);
            }
        }
        c = ncalls++;
        CALL(c)->gen = 0;
        CALL(c)->id = c;
    }
    (*CALL(c)).gen++;
    (*CALL(c)).slot = -1;
    return c;
}

static void call_free(int c)
{
    (*CALL(c)).gen++; /* its timeout event is stale from now on */
    (*CALL(c)).next_free = free_call;
    free_call = c;
}

static int counting(void)
{
    return now_us >= us(opt.warmup * 1000);
}

static void next_call(int c_old, int proc, int caller)
{
    if (opt.rate <= 0) /* closed loop: the caller comes back */
        push(now_us + us(opt.client_ms), EV_CALL, proc, (unsigned)caller);
    if (c_old >= 0)
        call_free(c_old);
}

static void call_end(int c, int ok)
{
    struct call *cl = CALL((c));
    struct proc *r = &procs[cl->proc];
    if (ok) {
        r->ok_sec++;
        ok_sec_total++;
    }
    if (counting()) {
        if (ok)
            r->ok++;
        else
            r->fail++;
    }
    next_call(c, cl->proc, cl->caller);
}

/* A waiter was handed slot s (or took an idle one): run the query. */
static void serve(int c, struct slot *s)
{
    struct call *cl = CALL(c);
    cl->w.status = 0; /* handed a slot: its timeout is void */
    if (counting())
        hist_add_ms((double)(now_us - cl->t0_us) / 1000.0);
    move(s, S_BUSY);
    heat_bump(&pools[s->pool], ms());
    s->call = c;
    cl->slot = (int)(s - slots);
    double q = opt.query_ms * (0.5 + urand());
    push(now_us + us(q), EV_DONE, (int)(s - slots), s->gen);
}

static void signal_dropped(struct waiter *d)
{
    while (d) {
        struct call *cl = (struct call *)(void *)d;
        d = d->dropped_next;
        fail_dropped += counting();
        call_end(cl->id, 0);
    }
}

/* pool_release_locked: a connection is free (connected, or checked in) */
static void release(struct pool *p, struct slot *s)
{
    struct waiter *dropped = NULL;
    struct waiter *w = codel_checkin(&p->codel, &p->waiters, ms(), &dropped);
    signal_dropped(dropped);
    s->last_checkin = ms();
    if (w) {
        struct call *cl = (struct call *)(void *)w;
        serve(cl->id, s);
    } else {
        move(s, S_IDLE);
    }
}

static void poll_schedule(struct pool *p)
{
    if (!p->poll_scheduled) {
        p->poll_scheduled = 1;
        push(p->codel.poll_at * 1000, EV_POLL, (int)(p - pools), 0);
    }
}

static int zipf_pick(void);

static void start_call(int proc, int caller)
{
    int tenant;
    if (opt.rate > 0) {
        tenant = zipf_pick();
    } else { /* it_adaptive's mix: 19 in 20 calls to the hot tenants */
        unsigned r = (unsigned)rng_range(&rng, 0, 0x7fffffff);
        tenant = (int)(r % 20 ? r / 20 % (unsigned)opt.hot : r / 20 % (unsigned)opt.tenants);
    }
    struct pool *p = &pools[proc * opt.tenants + tenant];
    int c = call_new();
    struct call *cl = CALL((c));
    cl->proc = proc;
    cl->pool = (int)(p - pools);
    cl->caller = caller;
    cl->t0_us = now_us;
    /* tenant pools serve lifo (dbpool_registry_config_init): a spare
     * connection nobody needs stays idle, and is the one evicted */
    struct list_node *ln = list_last(&p->lists[S_IDLE]);
    struct slot *s = ln ? list_entry(ln, struct slot, link) : NULL;
    if (s && p->waiters.n == 0) {
        hits++;
        serve(c, s);
        return;
    }
    misses++;
    /* enqueue_locked */
    memset(&cl->w, 0, sizeof cl->w);
    cl->w.sent = ms();
    cl->w.status = 1;
    wq_push(&p->waiters, &cl->w);
    codel_mark_busy(&p->codel);
    int opening =
        (int)p->lists[S_PENDING].n + (int)p->lists[S_CONNECTING].n + (int)p->lists[S_BACKOFF].n;
    if (p->lists[S_DORMANT].n > 0 && opening < p->waiters.n) {
        move(first(p, S_DORMANT), S_PENDING);
        poke(p, 0);
    }
    if (p->waiters.n == 1)
        poll_schedule(p);
    push(now_us + us(opt.timeout_ms), EV_TIMEOUT, c, cl->gen);
}

/* ---- the pool's manager side (src/core/slot.c, re-stated) ------------------ */

static void poke(struct pool *p, int64_t delay_us)
{
    int64_t at = now_us + 20 + delay_us; /* a manager wake-up */
    if (at < p->svc_at) {
        p->svc_at = at;
        push(at, EV_SERVICE, (int)(p - pools), 0);
    }
}

static int usable(struct pool *p)
{
    return (int)(p->lists[S_IDLE].n + p->lists[S_BUSY].n);
}

static void probe_update(struct pool *p)
{
    int want = opt.probe_ms > 0 && usable(p) == 0 && p->at_limit;
    if (want && !p->probing) {
        p->probing = 1;
        p->probe = -1;
        p->probe_at = ms() + (int64_t)opt.probe_ms;
    } else if (!want && p->probing) {
        int n = (int)p->lists[S_BACKOFF].n, k = 0;
        int64_t step = n ? 50 / n : 1;
        if (step < 1)
            step = 1;
        p->probing = 0;
        p->probe = -1;
        list_for_each(x, &p->lists[S_BACKOFF])
        {
            struct slot *s = list_entry(x, struct slot, link);
            backoff_reset(&s->bo);
            s->timer_at = ms() + k * step + rng_range(&p->rng, 0, step - 1);
            k++;
        }
    }
}

static void service(struct pool *p)
{
    int64_t now = ms();
    struct slot *s;
    /* expire_timers: while probing, BACKOFF slots wait for the probe */
    if (!p->probing) {
        list_for_each(x, &p->lists[S_BACKOFF])
        {
            s = list_entry(x, struct slot, link);
            if (s->timer_at <= now)
                move(s, S_PENDING);
        }
    }
    /* close_idle: evictions asked by the registry, idle_timeout */
    while ((s = first(p, S_IDLE)) != NULL) {
        int stale = opt.idle_timeout_ms > 0 && now - s->last_checkin >= opt.idle_timeout_ms;
        if (!stale && p->evict_requests <= 0)
            break;
        if (!stale)
            p->evict_requests--;
        move(s, S_DORMANT);
        server_close();
    }
    /* start_connects */
    p->budget_denied = 0;
    if (p->probing) { /* probe_pick_locked: at most one PENDING, the probe */
        list_for_each(x, &p->lists[S_PENDING])
        {
            s = list_entry(x, struct slot, link);
            if ((int)(s - slots) != p->probe)
                move(s, S_BACKOFF);
        }
        if (p->probe < 0 && !p->lists[S_CONNECTING].n && now >= p->probe_at &&
            (s = first(p, S_BACKOFF)) != NULL) {
            move(s, S_PENDING);
            p->probe = (int)(s - slots);
            p->probe_at = now + (int64_t)opt.probe_ms;
        }
    }
    while ((s = first(p, S_PENDING)) != NULL) {
        if (!budget_acquire(p)) {
            p->budget_denied = 1;
            break;
        }
        move(s, S_CONNECTING); /* the registry counted it in budget_acquire */
        server_connect((int)(s - slots));
    }
    /* the next timer */
    int64_t due = INT64_MAX;
    if (!p->probing) {
        list_for_each(x, &p->lists[S_BACKOFF])
        {
            s = list_entry(x, struct slot, link);
            if (s->timer_at < due)
                due = s->timer_at;
        }
    } else if (p->probe < 0 && !p->lists[S_CONNECTING].n && p->lists[S_BACKOFF].n) {
        due = p->probe_at;
    }
    if (due != INT64_MAX)
        poke(p, (due > now ? due - now : 0) * 1000);
}

static void connected(struct slot *s)
{
    struct pool *p = &pools[s->pool];
    backoff_reset(&s->bo);
    p->at_limit = 0;
    if ((int)(s - slots) == p->probe)
        p->probe = -1;
    connects_total++;
    connects_sec++;
    if (counting())
        procs[p->proc].connects++;
    release(p, s);
    probe_update(p);
    poke(p, 0);
}

static void refused(struct slot *s)
{
    struct pool *p = &pools[s->pool];
    int64_t delay = backoff_next(&s->bo);
    if ((int)(s - slots) == p->probe)
        p->probe = -1;
    refusals_total++;
    refusals_sec++;
    p->at_limit = 1;
    budget_full(p); /* before the slot stops counting, as connect_failed_locked */
    move(s, S_BACKOFF);
    s->timer_at = ms() + (delay < 0 ? opt.backoff_max : delay);
    probe_update(p);
    poke(p, 0);
}

static void checkin(struct slot *s)
{
    struct pool *p = &pools[s->pool];
    int c = s->call;
    s->gen++;
    s->call = -1;
    call_end(c, 1);
    if (p->evict_requests > 0) {
        p->evict_requests--;
        move(s, S_DORMANT);
        server_close();
        return;
    }
    release(p, s);
}

/* ---- the registry's tick ---------------------------------------------------- */

static void tick(int pi)
{
    struct proc *r = &procs[pi];
    int64_t now = ms();
    /* demand as the registry sees it (registry.c, adapt_locked) */
    if (aimd_tick(&r->aimd, r->queue.n > 0 || r->open >= r->aimd.cap, r->open, now)) {
        struct pool *h = queue_head(r);
        if (h)
            poke(h, 0);
    }
    for (int over = aimd_over(&r->aimd, r->open - r->evictions_asked); over > 0; over--) {
        int asked = r->evictions_asked;
        ask_eviction(r, NULL);
        if (r->evictions_asked == asked)
            break;
    }
    ask_evictions_for_queue(r, NULL);
    if (now >= r->next_idle_scan) { /* each pool's idle tick, once a second */
        r->next_idle_scan = now + 1000;
        for (int k = 0; k < opt.tenants; k++) {
            struct pool *p = &pools[pi * opt.tenants + k];
            struct slot *s = first(p, S_IDLE);
            if (s && now - s->last_checkin >= opt.idle_timeout_ms)
                poke(p, 0);
        }
    }
    int64_t due = aimd_due(&r->aimd, r->next_idle_scan, now);
    push(due * 1000, EV_TICK, pi, 0);
}

/* ---- load ------------------------------------------------------------------- */

static double *zcdf;

static void zipf_init(void)
{
    zcdf = malloc(sizeof(double) * (size_t)opt.tenants);
    double sum = 0;
    for (int k = 0; k < opt.tenants; k++)
        sum += 1.0 / pow(k + 1, opt.zipf);
    double acc = 0;
    for (int k = 0; k < opt.tenants; k++) {
        acc += 1.0 / pow(k + 1, opt.zipf) / sum;
        zcdf[k] = acc;
    }
}

static int zipf_pick(void)
{
    double u = urand();
    int lo = 0, hi = opt.tenants - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (zcdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Open loop: Poisson arrivals at rate * (1 + diurnal * sin(2 pi t / day)). */
static void next_arrival(int proc)
{
    double t = (double)now_us / 1e6;
    /* --skew: process i's share of the load, from 1 - skew to 1 + skew */
    double share = opt.procs > 1 ? 1.0 + opt.skew * (2.0 * proc / (opt.procs - 1) - 1.0) : 1.0;
    double lam = share * opt.rate * (1.0 + opt.diurnal * sin(2 * M_PI * t / opt.day_s));
    if (lam < opt.rate * 0.05)
        lam = opt.rate * 0.05;
    double gap = -log(1.0 - urand()) / lam;
    push(now_us + (int64_t)(gap * 1e6), EV_CALL, proc, 0);
}

/* ---- the run ------------------------------------------------------------------ */

static FILE *series;
static int converged_at = -1; /* first second from which the caps' sum stays near the limit */
static double *capsum_by_sec;

static double jain_of(const double *x, int n)
{
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) {
        s += x[i];
        q += x[i] * x[i];
    }
    return q > 0 ? s * s / (n * q) : 1.0;
}

static void sample(int sec)
{
    double caps = 0;
    double *held = malloc(sizeof(double) * (size_t)opt.procs);
    double *ops = malloc(sizeof(double) * (size_t)opt.procs);
    int mn = INT32_MAX, mx = 0;
    for (int i = 0; i < opt.procs; i++) {
        caps += procs[i].aimd.cap;
        held[i] = procs[i].open;
        ops[i] = (double)procs[i].ok_sec;
        procs[i].ok_sec = 0;
        if (procs[i].aimd.cap < mn)
            mn = procs[i].aimd.cap;
        if (procs[i].aimd.cap > mx)
            mx = procs[i].aimd.cap;
    }
    capsum_by_sec[sec] = caps;
    for (int k = 0; k < opt.procs * opt.tenants; k++)
        for (int st = 0; st < S_N; st++)
            st_sum[st] += pools[k].lists[st].n;
    st_n++;
    if (series)
        fprintf(series, "%d,%d,%.0f,%d,%d,%ld,%ld,%ld,%.3f,%.3f\n", sec, backends, caps, mn, mx,
                refusals_sec, connects_sec, ok_sec_total, jain_of(held, opt.procs),
                jain_of(ops, opt.procs));
    refusals_sec = connects_sec = ok_sec_total = 0;
    free(held);
    free(ops);
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: sim [--procs N] [--tenants N] [--threads N | --rate PER_S] [--cap N] [--fixed]\n"
        "           [--min N] [--interval MS] [--size N] [--max-conn N] [--connect-ms MS]\n"
        "           [--connect-par N | --cores K] [--refuse-ms MS] [--disc-ms MS] [--query-ms MS]\n"
        "           [--client-ms MS] [--hot N] [--zipf S] [--diurnal A] [--day S]\n"
        "           [--seconds S] [--warmup S] [--timeout MS] [--idle-timeout MS]\n"
        "           [--seed N] [--series FILE.csv] [--label NAME]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--fixed")) {
            opt.fixed = 1;
            continue;
        }
        if (!v)
            usage();
        i++;
#define I(name, field)                                                                             \
    if (!strcmp(a, name)) {                                                                        \
        opt.field = atoi(v);                                                                       \
        continue;                                                                                  \
    }
#define D(name, field)                                                                             \
    if (!strcmp(a, name)) {                                                                        \
        opt.field = atof(v);                                                                       \
        continue;                                                                                  \
    }
        I("--procs", procs) I("--tenants", tenants) I("--threads", threads) I("--cap", cap);
        I("--min", min) I("--size", size) I("--max-conn", max_conn) I("--hot", hot);
        I("--connect-par", connect_par) I("--cores", cores);
        D("--connect-ms", connect_ms) D("--refuse-ms", refuse_ms) D("--disc-ms", disc_ms);
        D("--query-ms", query_ms) D("--client-ms", client_ms) D("--rate", rate);
        D("--zipf", zipf) D("--diurnal", diurnal) D("--day", day_s) D("--seconds", seconds);
        D("--warmup", warmup) D("--timeout", timeout_ms) D("--idle-timeout", idle_timeout_ms);
        D("--probe-ms", probe_ms) D("--skew", skew);
        if (!strcmp(a, "--interval")) {
            opt.interval = atoll(v);
            continue;
        }
        if (!strcmp(a, "--backoff-min")) {
            opt.backoff_min = atoll(v);
            continue;
        }
        if (!strcmp(a, "--backoff-max")) {
            opt.backoff_max = atoll(v);
            continue;
        }
        if (!strcmp(a, "--seed")) {
            opt.seed = strtoull(v, NULL, 10);
            continue;
        }
        if (!strcmp(a, "--series")) {
            opt.series = v;
            continue;
        }
        if (!strcmp(a, "--label")) {
            opt.label = v;
            continue;
        }
        usage();
    }
    if (opt.procs < 1 || opt.tenants < 1 || opt.cap < 1 || opt.size < 1 || opt.hot < 1 ||
        opt.hot > opt.tenants || opt.seconds <= opt.warmup || opt.connect_par < 1 || opt.min < 1 ||
        opt.min > opt.cap)
        usage();
    rng = opt.seed * 0x9E3779B97F4A7C15ULL + 1;

    int npools = opt.procs * opt.tenants;
    procs = calloc((size_t)opt.procs, sizeof(*procs));
    pools = calloc((size_t)npools, sizeof(*pools));
    slots = calloc((size_t)npools * (size_t)opt.size, sizeof(*slots));
    int nsec = (int)opt.seconds + 2;
    capsum_by_sec = calloc((size_t)nsec, sizeof(double));
    for (int i = 0; i < opt.procs; i++) {
        aimd_init(&procs[i].aimd, !opt.fixed, opt.cap, opt.min, opt.interval);
        list_init(&procs[i].queue);
    }
    for (int k = 0; k < npools; k++) {
        struct pool *p = &pools[k];
        p->proc = k / opt.tenants;
        p->tenant = k % opt.tenants;
        for (int st = 0; st < S_N; st++)
            list_init(&p->lists[st]);
        wq_init(&p->waiters);
        codel_init(&p->codel, opt.queue_target, opt.queue_interval, 0);
        p->svc_at = INT64_MAX;
        p->probe = -1;
        p->rng = opt.seed + (uint64_t)k * 7919;
        for (int j = 0; j < opt.size; j++) {
            struct slot *s = &slots[k * opt.size + j];
            s->pool = k;
            s->state = S_DORMANT;
            s->call = -1;
            list_push_tail(&p->lists[S_DORMANT], &s->link);
            backoff_init(&s->bo, DBPOOL_BACKOFF_RAND_EXP, opt.backoff_min, opt.backoff_max,
                         opt.seed * 1000003 + (uint64_t)(k * opt.size + j) + 1);
        }
    }
    if (opt.rate > 0)
        zipf_init();
    if (opt.series) {
        series = fopen(opt.series, "w");
        if (!series) {
            perror(opt.series);
            return 1;
        }
        fprintf(series, "t,backends,caps,cap_min,cap_max,refusals,connects,ops,jain_held,"
                        "jain_ops\n");
    }
    for (int i = 0; i < opt.procs; i++) {
        push(0, EV_TICK, i, 0);
        if (opt.rate > 0)
            next_arrival(i);
        else
            for (int t = 0; t < opt.threads; t++) /* started a little apart */
                push(rng_range(&rng, 0, 1000), EV_CALL, i, (unsigned)t);
    }
    for (int s = 1; s <= (int)opt.seconds; s++)
        push((int64_t)s * 1000000, EV_SAMPLE, s, 0);

    int64_t end = us(opt.seconds * 1000);
    while (heap_n > 0) {
        struct ev e = pop();
        if (e.t >= end && e.type != EV_SAMPLE)
            break;
        now_us = e.t;
        switch (e.type) {
        case EV_CALL:
            start_call(e.a, (int)e.gen);
            if (opt.rate > 0)
                next_arrival(e.a);
            break;
        case EV_TIMEOUT: {
            struct call *cl = CALL((e.a));
            if (cl->gen != e.gen || cl->w.status != 1)
                break; /* served meanwhile (or recycled) */
            struct pool *p = &pools[cl->pool];
            wq_remove(&p->waiters, &cl->w);
            fail_timeout += counting();
            call_end(e.a, 0);
            break;
        }
        case EV_CONNECTED: {
            struct slot *s = &slots[e.a];
            channel_free();
            if (e.gen)
                connected(s);
            else
                refused(s);
            break;
        }
        case EV_DONE:
            if (slots[e.a].gen == e.gen)
                checkin(&slots[e.a]);
            break;
        case EV_SERVICE: {
            struct pool *p = &pools[e.a];
            if (p->svc_at != e.t)
                break; /* superseded by an earlier one */
            p->svc_at = INT64_MAX;
            service(p);
            break;
        }
        case EV_TICK:
            tick(e.a);
            break;
        case EV_POLL: {
            struct pool *p = &pools[e.a];
            struct waiter *dropped = NULL;
            p->poll_scheduled = 0;
            codel_poll(&p->codel, &p->waiters, ms(), &dropped);
            signal_dropped(dropped);
            if (p->waiters.n > 0)
                poll_schedule(p);
            break;
        }
        case EV_EXIT:
            backends--;
            break;
        case EV_PS:
            if (e.gen == ps_gen)
                ps_event();
            break;
        case EV_SAMPLE:
            sample(e.a);
            if (e.a >= (int)opt.seconds)
                heap_n = 0;
            break;
        }
    }

    /* convergence: the first second from which the caps' sum stays within
     * [0.5, 1.5] x max_connections to the end */
    for (int s = (int)opt.seconds; s >= 1; s--) {
        double c = capsum_by_sec[s];
        if (c < 0.5 * opt.max_conn || c > 1.5 * opt.max_conn)
            break;
        converged_at = s;
    }

    double span = opt.seconds - opt.warmup;
    double *tput = malloc(sizeof(double) * (size_t)opt.procs);
    double total = 0;
    long fail = 0, conns = 0;
    for (int i = 0; i < opt.procs; i++) {
        tput[i] = procs[i].ok / span;
        total += tput[i];
        fail += procs[i].fail;
        conns += procs[i].connects;
        if (opt.procs <= 16)
            printf("proc=%d ops_per_s=%.1f fail=%ld cap_end=%d connects=%ld evictions=%ld "
                   "refusals=%" PRIu64 " decreases=%" PRIu64 "\n",
                   i, tput[i], procs[i].fail, procs[i].aimd.cap, procs[i].connects,
                   procs[i].evictions_n, procs[i].aimd.refusals, procs[i].aimd.decreases);
    }
    uint64_t decreases = 0;
    for (int i = 0; i < opt.procs; i++) {
        decreases += procs[i].aimd.decreases;
    }
    printf("summary label=%s mode=%s ops_per_s=%.1f jain=%.3f wait_p50_ms=%.2f "
           "wait_p99_ms=%.1f waits_below_1ms=%.3f refusals_per_s=%.2f connects_per_s=%.2f "
           "fail=%ld timeouts=%ld dropped=%ld max_backends=%d converged_s=%d decreases=%" PRIu64
           "\n",
           opt.label, opt.fixed ? "fixed" : "adaptive", total, jain_of(tput, opt.procs),
           hist_q(0.5), hist_q(0.99), nhist ? (double)hist_below(1.0) / (double)nhist : 0.0,
           (double)refusals_total / opt.seconds, (double)conns / span, fail, fail_timeout,
           fail_dropped, max_backends, converged_at, decreases);
    if (getenv("SIM_DEBUG")) /* where the time goes */
        printf("debug waits_below_1ms=%.3f hits=%ld misses=%ld per-proc slots: pending %.1f "
               "connecting %.1f idle %.1f "
               "busy %.1f backoff %.1f\n",
               nhist ? (double)(hist_below(1.0)) / (double)nhist : 0.0, hits, misses,
               st_sum[S_PENDING] / st_n / opt.procs, st_sum[S_CONNECTING] / st_n / opt.procs,
               st_sum[S_IDLE] / st_n / opt.procs, st_sum[S_BUSY] / st_n / opt.procs,
               st_sum[S_BACKOFF] / st_n / opt.procs);
    if (series)
        fclose(series);
    free(tput);
    return 0;
}
