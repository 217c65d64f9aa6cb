/* it_health.c - integration tests of pool health (docs/failure-handling.md, docs/pool.md):
 * the state machine, events, log levels and redaction, pause/resume, 57P03
 * ("starting up" is not DOWN), hold_timeout, leak reports and the log budget
 * of an outage, against real PostgreSQL servers.
 *
 * Two throwaway servers (group setup): `srv` for most tests, `srv2` for the
 * 57P03 test, which turns it into a standby and promotes it. Pools log in as
 * the password role `app` so there is a password that must never leak.
 * Every wait is bounded; worker threads are joined with a deadline. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "itpool.h"
#include "pgserver.h"
#include "relay.h"

#define PASSWORD "app_secret_pw"

static pgt_server srv;  /* most tests */
static pgt_server srv2; /* the 57P03 test (standby, then promoted) */

/* ---------------------------------------------------------------------- */
/* helpers                                                                 */
/* ---------------------------------------------------------------------- */

#define MAX_POOLS 4
static dbpool *g_pools[MAX_POOLS];
static relay *g_relay;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void app_conninfo(char *buf, size_t len, int port, const char *app)
{
    snprintf(buf, len,
             "host=127.0.0.1 port=%d user=app password=" PASSWORD
             " dbname=postgres application_name=%s",
             port, app);
}

/* Short timers (DESIGN 5/6 exercised in seconds, not minutes). */
static void fast_config(dbpool_config *cfg, int size)
{
    dbpool_config_init(cfg);
    cfg->size = size;
    cfg->backoff_min = 50;
    cfg->backoff_max = 300;
    cfg->idle_interval = 100;
    cfg->connect_timeout = 1000;
    cfg->ping_timeout = 500;
    cfg->checkout_timeout = 2000;
    cfg->reset_timeout = 1000;
}

static dbpool *open_pool_port(int port, const char *app, const dbpool_config *cfg)
{
    char ci[512];
    dbpool *p = NULL;

    app_conninfo(ci, sizeof ci, port, app);
    int rc = dbpool_pg_open(&p, ci, cfg);
    if (rc != 0)
        fail_msg("dbpool_pg_open(%s): %d %s", app, rc, dbpool_last_error());
    for (int i = 0; i < MAX_POOLS; i++)
        if (!g_pools[i]) {
            g_pools[i] = p;
            return p;
        }
    fail_msg("too many pools in one test");
    return NULL;
}

static int close_pool(dbpool *p)
{
    for (int i = 0; i < MAX_POOLS; i++)
        if (g_pools[i] == p)
            g_pools[i] = NULL;
    return dbpool_close(p);
}

/* Bounded wait on a predicate over a pool's stats. */

static int pred_state(const dbpool_stats *st, int64_t s)
{
    return st->state == (dbpool_state)s;
}
static int pred_not_state(const dbpool_stats *st, int64_t s)
{
    return st->state != (dbpool_state)s;
}
/* UP with `n` connections idle: the pool is fully connected and quiet. */
static int pred_up_idle(const dbpool_stats *st, int64_t n)
{
    return st->state == DBPOOL_STATE_UP && st->idle == n;
}
static int pred_waiting(const dbpool_stats *st, int64_t n)
{
    return st->waiting == n;
}
static int pred_cf_ge(const dbpool_stats *st, int64_t n)
{
    return (int64_t)st->connect_failures >= n;
}
static int pred_err_not_accepting(const dbpool_stats *st, int64_t unused)
{
    (void)unused;
    return strstr(st->last_error, "not accepting connections") ||
           strstr(st->last_error, "starting up");
}

static void describe(const char *what, dbpool *p)
{
    dbpool_stats st = itp_stats(p);
    fail_msg("%s (state=%s idle=%d busy=%d connecting=%d backoff=%d waiting=%d "
             "connect_failures=%" PRIu64 " last_error=\"%s\")",
             what, dbpool_state_name(st.state), st.idle, st.busy, st.connecting, st.backoff,
             st.waiting, st.connect_failures, st.last_error);
}

static void await_up(dbpool *p, int idle, int64_t timeout_ms)
{
    if (!itp_wait_stats(p, pred_up_idle, idle, timeout_ms))
        describe("pool did not become UP with all connections idle", p);
}

static void await_state(dbpool *p, dbpool_state s, int64_t timeout_ms)
{
    if (!itp_wait_stats(p, pred_state, s, timeout_ms)) {
        char what[80];
        snprintf(what, sizeof what, "pool did not reach state %s in %lld ms", dbpool_state_name(s),
                 (long long)timeout_ms);
        describe(what, p);
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    PQclear(r);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* 0 when joined; on timeout marks the run hung and returns nonzero. */

/* ---- log collector ------------------------------------------------------ */

#define LOG_KEEP 512
struct logrec {
    dbpool_log_level level;
    int64_t at; /* pgt_now_ms() */
    char msg[320];
};

struct logbuf {
    pthread_mutex_t mu;
    int n;     /* stored (at most LOG_KEEP) */
    int total; /* delivered */
    int by_level[DBPOOL_LOG_NONE + 1];
    int password_seen;
    char leaked[320];
    struct logrec rec[LOG_KEEP];
};

static void logbuf_init(struct logbuf *b)
{
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
}

static void log_collect(void *arg, dbpool_log_level level, const char *pool_name, const char *msg)
{
    struct logbuf *b = arg;
    (void)pool_name;
    pthread_mutex_lock(&b->mu);
    b->total++;
    if ((int)level >= 0 && level <= DBPOOL_LOG_NONE)
        b->by_level[level]++;
    if (strstr(msg, PASSWORD) && !b->password_seen) {
        b->password_seen = 1;
        snprintf(b->leaked, sizeof b->leaked, "%s", msg);
    }
    if (b->n < LOG_KEEP) {
        struct logrec *r = &b->rec[b->n++];
        r->level = level;
        r->at = pgt_now_ms();
        snprintf(r->msg, sizeof r->msg, "%s", msg);
    }
    pthread_mutex_unlock(&b->mu);
}

/* Lines at `min_level` or above delivered in [from, to) (pgt_now_ms). */
static int log_count_between(struct logbuf *b, dbpool_log_level min_level, int64_t from, int64_t to)
{
    int n = 0;
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < b->n; i++)
        if (b->rec[i].level >= min_level && b->rec[i].at >= from && b->rec[i].at < to)
            n++;
    pthread_mutex_unlock(&b->mu);
    return n;
}

static void log_dump(struct logbuf *b, const char *title)
{
    pthread_mutex_lock(&b->mu);
    fprintf(stderr, "--- %s: %d log line(s) ---\n", title, b->total);
    for (int i = 0; i < b->n; i++)
        fprintf(stderr, "  [%d] %s\n", (int)b->rec[i].level, b->rec[i].msg);
    pthread_mutex_unlock(&b->mu);
}

static void assert_no_password_logged(struct logbuf *b)
{
    if (b->password_seen)
        fail_msg("a log line contains the password: \"%s\"", b->leaked);
}

/* ---- event collector ---------------------------------------------------- */

#define EV_KEEP 1024
struct evrec {
    dbpool_event_type type;
    int64_t ms, at;
    char detail[200];
};

struct evbuf {
    pthread_mutex_t mu;
    int n, total;
    struct evrec rec[EV_KEEP];
    pthread_t thread; /* the thread of the first callback */
    int have_thread;
    int other_thread; /* a callback ran on a different thread */
    int password_seen;
};

static void evbuf_init(struct evbuf *b)
{
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
}

static void ev_collect(void *arg, const dbpool_event *ev)
{
    struct evbuf *b = arg;
    pthread_mutex_lock(&b->mu);
    if (!b->have_thread) {
        b->thread = pthread_self();
        b->have_thread = 1;
    } else if (!pthread_equal(b->thread, pthread_self())) {
        b->other_thread = 1;
    }
    if (ev->detail && strstr(ev->detail, PASSWORD))
        b->password_seen = 1;
    b->total++;
    if (b->n < EV_KEEP) {
        struct evrec *r = &b->rec[b->n++];
        r->type = ev->type;
        r->ms = ev->ms;
        r->at = ev->at_ms;
        snprintf(r->detail, sizeof r->detail, "%s", ev->detail ? ev->detail : "(null)");
    }
    pthread_mutex_unlock(&b->mu);
}

static int ev_count(struct evbuf *b, dbpool_event_type t)
{
    int n = 0;
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < b->n; i++)
        n += b->rec[i].type == t;
    pthread_mutex_unlock(&b->mu);
    return n;
}

/* Index of the k-th (0-based) event of type t, -1 if none. */
static int ev_index(struct evbuf *b, dbpool_event_type t, int k)
{
    int idx = -1;
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < b->n; i++)
        if (b->rec[i].type == t && k-- == 0) {
            idx = i;
            break;
        }
    pthread_mutex_unlock(&b->mu);
    return idx;
}

/* Copy of the k-th event of type t (0-based); 0 if there is none. */
static int ev_get(struct evbuf *b, dbpool_event_type t, int k, struct evrec *out)
{
    int i = ev_index(b, t, k);
    if (i < 0)
        return 0;
    pthread_mutex_lock(&b->mu);
    *out = b->rec[i];
    pthread_mutex_unlock(&b->mu);
    return 1;
}

struct ev_wait {
    struct evbuf *b;
    dbpool_event_type t;
    int n;
};

static int ev_cond(void *a)
{
    struct ev_wait *w = a;
    return ev_count(w->b, w->t) >= w->n;
}

static const char *ev_name(dbpool_event_type t)
{
    static const char *const names[] = {"connected", "disconnected", "connect_failed", "up", "down",
                                        "dropped",   "hold_timeout", "leak_suspected"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

static void ev_dump(struct evbuf *b)
{
    pthread_mutex_lock(&b->mu);
    fprintf(stderr, "--- %d event(s) ---\n", b->total);
    for (int i = 0; i < b->n; i++)
        fprintf(stderr, "  %-15s ms=%lld %s\n", ev_name(b->rec[i].type), (long long)b->rec[i].ms,
                b->rec[i].detail);
    pthread_mutex_unlock(&b->mu);
}

static void ev_await(struct evbuf *b, dbpool_event_type t, int n, int64_t timeout_ms)
{
    struct ev_wait w = {b, t, n};
    if (!pgt_wait_for(ev_cond, &w, timeout_ms)) {
        ev_dump(b);
        fail_msg("expected %d \"%s\" event(s) within %lld ms, got %d", n, ev_name(t),
                 (long long)timeout_ms, ev_count(b, t));
    }
}

/* Every callback ran on one thread, and not on the test's thread (DESIGN 6:
 * events are delivered on the manager thread). */
static void assert_event_thread(struct evbuf *b)
{
    pthread_mutex_lock(&b->mu);
    int have = b->have_thread, other = b->other_thread;
    pthread_t t = b->thread;
    int pw = b->password_seen;
    pthread_mutex_unlock(&b->mu);
    assert_true(have);
    if (other)
        fail_msg("event callbacks ran on more than one thread");
    if (pthread_equal(t, pthread_self()))
        fail_msg("an event callback ran on the test's (caller's) thread");
    if (pw)
        fail_msg("an event detail contains the password");
}

/* ---- fixtures ----------------------------------------------------------- */

static int test_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_POOLS; i++) {
        if (g_pools[i] && !itp_hung())
            (void)dbpool_close(g_pools[i]);
        g_pools[i] = NULL;
    }
    if (g_relay && !itp_hung()) {
        relay_stop(g_relay);
        g_relay = NULL;
    }
    if (!srv.running)
        (void)pgt_resume(&srv);
    return 0;
}

static relay *start_relay(void)
{
    relay *r = NULL;
    assert_int_equal(relay_start(&r, "127.0.0.1", srv.port), 0);
    g_relay = r;
    return r;
}

/* ---------------------------------------------------------------------- */
/* state machine: STARTING -> UP -> DOWN (fail fast) -> UP                  */
/* ---------------------------------------------------------------------- */

static void test_state_machine(void **state)
{
    (void)state;
    static struct logbuf logs;
    logbuf_init(&logs);
    dbpool_config cfg;

    /* STARTING lasts until the first connect succeeds: hold the connects in
     * a black-holed relay (their TCP connect succeeds, the startup packet
     * goes nowhere), shorter than connect_timeout so none fails. */
    relay *r = start_relay();
    assert_int_equal(relay_set_mode(r, RELAY_BLACKHOLE), 0);
    fast_config(&cfg, 2);
    cfg.log_cb = log_collect;
    cfg.log_arg = &logs;
    dbpool *p = open_pool_port(relay_port(r), "h_state_start", &cfg);
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.state, DBPOOL_STATE_STARTING);
    assert_int_equal(st.idle + st.busy, 0);
    assert_string_equal(st.last_error, "");
    /* still STARTING (neither UP nor DOWN) while the connects hang */
    assert_false(itp_wait_stats(p, pred_not_state, DBPOOL_STATE_STARTING, 300));
    assert_int_equal(itp_stats(p).connect_failures, 0);
    assert_int_equal(relay_set_mode(r, RELAY_PASS), 0);
    await_up(p, 2, 3000);
    assert_int_equal(itp_stats(p).connects, 2);
    assert_int_equal(close_pool(p), 0);
    relay_stop(r);
    g_relay = NULL;

    /* UP -> DOWN on a stopped server, directly (no relay): "connection refused" */
    fast_config(&cfg, 2);
    cfg.log_cb = log_collect;
    cfg.log_arg = &logs;
    p = open_pool_port(srv.port, "h_state", &cfg);
    await_up(p, 2, 5000);
    dbpool_stats up = itp_stats(p);
    assert_string_equal(up.last_error, "");

    assert_int_equal(pgt_stop(&srv, "fast"), 0);
    int64_t t_stopped = pgt_now_ms();
    await_state(p, DBPOOL_STATE_DOWN, 5000);
    int64_t down_ms = pgt_now_ms() - t_stopped;
    dbpool_stats down = itp_stats(p);
    assert_int_equal(down.idle + down.busy, 0);
    assert_true(down.connect_failures >= 1);
    assert_true(strlen(down.last_error) > 0);
    if (strstr(down.last_error, PASSWORD))
        fail_msg("last_error contains the password: %s", down.last_error);
    assert_true(down.state_since_ms > up.state_since_ms);

    /* while DOWN a checkout fails at once with the cached reason */
    int64_t took_us[20];
    for (int i = 0; i < 20; i++) {
        dbpool_stats before = itp_stats(p);
        dbpool_lease l;
        int64_t t0 = now_us();
        int rc = dbpool_checkout(p, 1000, &l);
        int64_t el = now_us() - t0;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", dbpool_last_error());
        dbpool_stats after = itp_stats(p);
        if (rc != DBPOOL_EUNAVAILABLE)
            fail_msg("checkout while DOWN returned %d (%s), want DBPOOL_EUNAVAILABLE", rc, msg);
        took_us[i] = el;
        if (!strstr(msg, before.last_error) && !strstr(msg, after.last_error))
            fail_msg("checkout error \"%s\" does not carry the cached reason \"%s\"", msg,
                     after.last_error);
        if (strstr(msg, PASSWORD))
            fail_msg("checkout error contains the password: %s", msg);
        assert_null(l.slot);
    }
    /* "at once": 18 of 20 under 5 ms (a loaded machine may preempt one or
     * two), none anywhere near the 1000 ms the caller was willing to wait */
    qsort(took_us, 20, sizeof took_us[0], cmp_i64);
    int64_t worst_us = took_us[19];
    if (took_us[17] >= 5000 || worst_us >= 100000)
        fail_msg("checkouts while DOWN took up to %lld us (90th pct %lld us; want < 5 ms)",
                 (long long)worst_us, (long long)took_us[17]);
    assert_int_equal(itp_stats(p).state, DBPOOL_STATE_DOWN);

    /* back UP within one backoff step (backoff_max) of the server accepting */
    assert_int_equal(pgt_resume(&srv), 0);
    int64_t t_resumed = pgt_now_ms();
    await_state(p, DBPOOL_STATE_UP, cfg.backoff_max + 1000);
    int64_t up_ms = pgt_now_ms() - t_resumed;
    dbpool_stats up2 = itp_stats(p);
    assert_true(up2.state_since_ms > down.state_since_ms);
    await_up(p, 2, 3000);
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 1000, &l), 0);
    assert_true(itp_select1(&l));
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(close_pool(p), 0);

    /* default log level: warnings; nothing below it may have been delivered */
    assert_int_equal(logs.by_level[DBPOOL_LOG_DEBUG] + logs.by_level[DBPOOL_LOG_INFO], 0);
    assert_true(logs.by_level[DBPOOL_LOG_WARNING] >= 1); /* "pool is down" */
    assert_no_password_logged(&logs);
    printf("# state: DOWN %lld ms after stop, worst fail-fast checkout %lld us, UP %lld ms "
           "after resume (backoff_max %lld)\n",
           (long long)down_ms, (long long)worst_us, (long long)up_ms, (long long)cfg.backoff_max);
}

/* ---------------------------------------------------------------------- */
/* events: connected, disconnected, connect_failed, down, up               */
/* ---------------------------------------------------------------------- */

static void test_events_lifecycle(void **state)
{
    (void)state;
    static struct evbuf evs;
    static struct logbuf logs;
    evbuf_init(&evs);
    logbuf_init(&logs);
    const char *app = "h_events";
    relay *r = start_relay();
    dbpool_config cfg;
    fast_config(&cfg, 2);
    cfg.event_cb = ev_collect;
    cfg.event_arg = &evs;
    cfg.log_cb = log_collect;
    cfg.log_arg = &logs;
    dbpool *p = open_pool_port(relay_port(r), app, &cfg);
    await_up(p, 2, 5000);
    ev_await(&evs, DBPOOL_EV_CONNECTED, 2, 2000);
    ev_await(&evs, DBPOOL_EV_UP, 1, 2000);
    assert_int_equal(ev_count(&evs, DBPOOL_EV_CONNECTED), 2); /* one per connection */
    assert_int_equal(ev_count(&evs, DBPOOL_EV_UP), 1);
    assert_int_equal(ev_count(&evs, DBPOOL_EV_DOWN), 0);
    assert_true(ev_index(&evs, DBPOOL_EV_CONNECTED, 0) < ev_index(&evs, DBPOOL_EV_UP, 0));

    /* a server-side kill: each idle connection fails its next ping */
    assert_int_equal(pgt_terminate(&srv, app), 2);
    ev_await(&evs, DBPOOL_EV_DISCONNECTED, 2, 3000);
    struct evrec e = {0}; /* assert_true() is not noreturn: gcc -O3 sees e used unset */
    assert_true(ev_get(&evs, DBPOOL_EV_DISCONNECTED, 0, &e));
    if (strlen(e.detail) == 0)
        fail_msg("disconnected event without a reason");
    ev_await(&evs, DBPOOL_EV_CONNECTED, 4, 3000); /* replaced at once */
    await_up(p, 2, 3000);
    assert_int_equal(ev_count(&evs, DBPOOL_EV_DOWN), 0); /* reconnects worked: never down */

    /* outage: every connect refused -> connect_failed, down; back -> up */
    assert_int_equal(relay_set_mode(r, RELAY_REFUSE), 0);
    assert_int_equal(relay_reset_all(r), 0);
    ev_await(&evs, DBPOOL_EV_DOWN, 1, 5000);
    ev_await(&evs, DBPOOL_EV_CONNECT_FAILED, 1, 2000);
    assert_true(ev_get(&evs, DBPOOL_EV_CONNECT_FAILED, 0, &e));
    if (strlen(e.detail) == 0)
        fail_msg("connect_failed event without the error");
    assert_true(ev_get(&evs, DBPOOL_EV_DOWN, 0, &e));
    if (strlen(e.detail) == 0)
        fail_msg("down event without the last error");
    assert_int_equal(relay_set_mode(r, RELAY_PASS), 0);
    ev_await(&evs, DBPOOL_EV_UP, 2, 3000);
    await_up(p, 2, 3000);
    assert_true(ev_index(&evs, DBPOOL_EV_DOWN, 0) > ev_index(&evs, DBPOOL_EV_CONNECTED, 3));
    assert_true(ev_index(&evs, DBPOOL_EV_UP, 1) > ev_index(&evs, DBPOOL_EV_DOWN, 0));
    assert_int_equal(ev_count(&evs, DBPOOL_EV_DOWN), 1); /* one outage, one down event */
    assert_int_equal(close_pool(p), 0);
    assert_event_thread(&evs);
    assert_no_password_logged(&logs);
}

/* ---------------------------------------------------------------------- */
/* events: dropped under overload                                          */
/* ---------------------------------------------------------------------- */

struct hammer {
    dbpool *pool;
    atomic_int stop;
    pthread_mutex_t mu;
    int ok, dropped, timedout, other, bad_msg, first_other;
};

static void *hammer_worker(void *arg)
{
    struct hammer *h = arg;
    while (!atomic_load(&h->stop)) {
        dbpool_lease l;
        int rc = dbpool_checkout(h->pool, 1000, &l);
        if (rc == 0) {
            int ok = exec_ok(dbpool_pg_conn(&l), "SELECT pg_sleep(0.02)");
            int crc = dbpool_checkin(&l);
            pthread_mutex_lock(&h->mu);
            if (ok && crc == 0)
                h->ok++;
            else if (!h->first_other)
                h->first_other = crc ? crc : -1000;
            pthread_mutex_unlock(&h->mu);
            continue;
        }
        int msg_ok = strstr(dbpool_last_error(), "dropped from queue") != NULL;
        pthread_mutex_lock(&h->mu);
        if (rc == DBPOOL_EDROPPED) {
            h->dropped++;
            h->bad_msg += !msg_ok;
        } else if (rc == DBPOOL_ETIMEDOUT) {
            h->timedout++;
        } else {
            h->other++;
            if (!h->first_other)
                h->first_other = rc;
        }
        pthread_mutex_unlock(&h->mu);
    }
    return NULL;
}

static void test_event_dropped(void **state)
{
    (void)state;
    static struct evbuf evs;
    static struct logbuf logs;
    evbuf_init(&evs);
    logbuf_init(&logs);
    dbpool_config cfg;
    fast_config(&cfg, 1);
    cfg.queue_target = 10;
    cfg.queue_interval = 50;
    cfg.event_cb = ev_collect;
    cfg.event_arg = &evs;
    cfg.log_cb = log_collect;
    cfg.log_arg = &logs;
    dbpool *p = open_pool_port(srv.port, "h_dropped", &cfg);
    await_up(p, 1, 5000);

    static struct hammer h;
    memset(&h, 0, sizeof h);
    pthread_mutex_init(&h.mu, NULL);
    h.pool = p;
    pthread_t t[12];
    for (int i = 0; i < 12; i++)
        t[i] = itp_thr_start(hammer_worker, &h);
    itp_sleep_ms(1500); /* the load lasts this long: that is the test, not a wait */
    atomic_store(&h.stop, 1);
    for (int i = 0; i < 12; i++)
        assert_int_equal(itp_thr_join(t[i], 10000), 0);

    dbpool_stats st = itp_stats(p);
    printf("# overload: %d ok, %d dropped, %d timed out; stats.drops=%" PRIu64 "\n", h.ok,
           h.dropped, h.timedout, st.drops);
    if (h.other)
        fail_msg("%d unexpected checkout/query failures (first %d)", h.other, h.first_other);
    assert_true(h.ok > 0);
    assert_true(h.dropped > 0);
    assert_int_equal(h.bad_msg, 0);
    assert_int_equal(st.drops, (uint64_t)h.dropped);
    /* one event per drop (well below the event ring's capacity per burst) */
    ev_await(&evs, DBPOOL_EV_DROPPED, h.dropped, 2000);
    assert_int_equal(ev_count(&evs, DBPOOL_EV_DROPPED), h.dropped);
    struct evrec e;
    assert_true(ev_get(&evs, DBPOOL_EV_DROPPED, 0, &e));
    if (e.ms <= 2 * cfg.queue_target)
        fail_msg("dropped event says it waited %lld ms; CoDel drops only after 2*target",
                 (long long)e.ms);
    assert_int_equal(close_pool(p), 0);
    assert_event_thread(&evs);
}

/* ---------------------------------------------------------------------- */
/* events: hold_timeout                                                    */
/* ---------------------------------------------------------------------- */

static void test_event_hold_timeout(void **state)
{
    (void)state;
    static struct evbuf evs;
    static struct logbuf logs;
    evbuf_init(&evs);
    logbuf_init(&logs);
    dbpool_config cfg;
    fast_config(&cfg, 1);
    cfg.hold_timeout = 300;
    cfg.event_cb = ev_collect;
    cfg.event_arg = &evs;
    cfg.log_cb = log_collect;
    cfg.log_arg = &logs;
    dbpool *p = open_pool_port(srv.port, "h_hold", &cfg);
    await_up(p, 1, 5000);
    ev_await(&evs, DBPOOL_EV_CONNECTED, 1, 2000);

    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 1000, &l), 0);
    assert_int_equal(dbpool_lease_check(&l), 0);
    int64_t t0 = pgt_now_ms();
    PGresult *res = PQexec(dbpool_pg_conn(&l), "SELECT pg_sleep(5)");
    int64_t el = pgt_now_ms() - t0;
    ExecStatusType rs = PQresultStatus(res);
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    char sqlstate[8];
    snprintf(sqlstate, sizeof sqlstate, "%s", code ? code : "");
    PQclear(res);
    /* the manager cancelled the query at ~300 ms, long before its 5 s */
    if (el < 250 || el > 2000)
        fail_msg("pg_sleep(5) under hold_timeout 300 ms returned after %lld ms", (long long)el);
    assert_int_equal(rs, PGRES_FATAL_ERROR);
    assert_string_equal(sqlstate, "57014"); /* query_canceled */
    ev_await(&evs, DBPOOL_EV_HOLD_TIMEOUT, 1, 2000);
    struct evrec e;
    assert_true(ev_get(&evs, DBPOOL_EV_HOLD_TIMEOUT, 0, &e));
    assert_true(e.ms >= 300);
    assert_int_equal(dbpool_lease_check(&l), DBPOOL_EEXPIRED);
    assert_int_equal(itp_stats(p).hold_timeouts, 1);
    assert_int_equal(dbpool_checkin(&l), DBPOOL_EEXPIRED);
    /* the expired connection was discarded and replaced */
    ev_await(&evs, DBPOOL_EV_DISCONNECTED, 1, 2000);
    assert_true(ev_get(&evs, DBPOOL_EV_DISCONNECTED, 0, &e));
    assert_non_null(strstr(e.detail, "hold_timeout"));
    ev_await(&evs, DBPOOL_EV_CONNECTED, 2, 3000);
    await_up(p, 1, 3000);
    assert_int_equal(ev_count(&evs, DBPOOL_EV_HOLD_TIMEOUT), 1);
    assert_int_equal(close_pool(p), 0);
    assert_event_thread(&evs);
}

/* ---------------------------------------------------------------------- */
/* events: leak_suspected                                                  */
/* ---------------------------------------------------------------------- */

static void test_event_leak(void **state)
{
    (void)state;
    static struct evbuf evs;
    static struct logbuf logs;
    evbuf_init(&evs);
    logbuf_init(&logs);
    dbpool_config cfg;
    fast_config(&cfg, 1);
    cfg.leak_threshold = 200;
    cfg.hold_timeout = 0;
    cfg.event_cb = ev_collect;
    cfg.event_arg = &evs;
    cfg.log_cb = log_collect;
    cfg.log_arg = &logs;
    dbpool *p = open_pool_port(srv.port, "h_leak", &cfg);
    await_up(p, 1, 5000);

    dbpool_lease l;
    int64_t t0 = pgt_now_ms();
    assert_int_equal(dbpool_checkout(p, 1000, &l), 0);
    ev_await(&evs, DBPOOL_EV_LEAK_SUSPECTED, 1, 2000);
    int64_t seen = pgt_now_ms() - t0;
    struct evrec e;
    assert_true(ev_get(&evs, DBPOOL_EV_LEAK_SUSPECTED, 0, &e));
    if (e.ms < 200 || seen < 190)
        fail_msg("leak reported after %lld ms (event ms %lld), threshold 200 ms", (long long)seen,
                 (long long)e.ms);
    if (!strstr(e.detail, "thread"))
        fail_msg("leak report does not say where: \"%s\"", e.detail);
    if (seen < 400)
        itp_sleep_ms(400 - seen); /* hold the lease 400 ms in all: reported once */
    assert_true(itp_select1(&l));
    assert_int_equal(dbpool_checkin(&l), 0); /* a leak report does not expire the lease */
    assert_int_equal(ev_count(&evs, DBPOOL_EV_LEAK_SUSPECTED), 1);

    /* a lease returned before the threshold is not reported */
    assert_int_equal(dbpool_checkout(p, 1000, &l), 0);
    itp_sleep_ms(100);
    assert_int_equal(dbpool_checkin(&l), 0);
    struct ev_wait w = {&evs, DBPOOL_EV_LEAK_SUSPECTED, 2};
    assert_false(pgt_wait_for(ev_cond, &w, 300));
    assert_true(logs.by_level[DBPOOL_LOG_WARNING] >= 1); /* logged at warning as well */
    assert_int_equal(close_pool(p), 0);
    assert_event_thread(&evs);
}

/* ---------------------------------------------------------------------- */
/* log callback: levels and redaction                                      */
/* ---------------------------------------------------------------------- */

static void test_log_levels(void **state)
{
    (void)state;
    static struct logbuf warn_logs, debug_logs;
    logbuf_init(&warn_logs);
    logbuf_init(&debug_logs);
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    assert_int_equal(cfg.log_level, DBPOOL_LOG_WARNING); /* documented default */

    relay *r = start_relay();
    fast_config(&cfg, 2);
    cfg.log_cb = log_collect;
    cfg.log_arg = &warn_logs;
    cfg.log_level = DBPOOL_LOG_WARNING;
    dbpool *pw = open_pool_port(relay_port(r), "h_log_warn", &cfg);
    fast_config(&cfg, 2);
    cfg.log_cb = log_collect;
    cfg.log_arg = &debug_logs;
    cfg.log_level = DBPOOL_LOG_DEBUG;
    dbpool *pd = open_pool_port(relay_port(r), "h_log_debug", &cfg);
    await_up(pw, 2, 5000);
    await_up(pd, 2, 5000);

    /* an outage produces lines at every level: ping failures (info),
     * connect failures (debug), down / up again (warning) */
    assert_int_equal(relay_set_mode(r, RELAY_REFUSE), 0);
    assert_int_equal(relay_reset_all(r), 0);
    await_state(pw, DBPOOL_STATE_DOWN, 5000);
    await_state(pd, DBPOOL_STATE_DOWN, 5000);
    uint64_t cf = itp_stats(pd).connect_failures;
    if (!itp_wait_stats(pd, pred_cf_ge, (int64_t)cf + 2, 3000))
        describe("connect failures did not continue while down", pd);
    assert_int_equal(relay_set_mode(r, RELAY_PASS), 0);
    await_up(pw, 2, 3000);
    await_up(pd, 2, 3000);
    assert_int_equal(close_pool(pw), 0);
    assert_int_equal(close_pool(pd), 0);

    if (warn_logs.by_level[DBPOOL_LOG_DEBUG] || warn_logs.by_level[DBPOOL_LOG_INFO]) {
        log_dump(&warn_logs, "log_level=warning");
        fail_msg("log_level=warning delivered debug/info lines");
    }
    if (warn_logs.by_level[DBPOOL_LOG_WARNING] < 2) { /* down, up again */
        log_dump(&warn_logs, "log_level=warning");
        fail_msg("expected the down and up-again warnings");
    }
    if (debug_logs.by_level[DBPOOL_LOG_DEBUG] < 1) { /* the filter test above means something */
        log_dump(&debug_logs, "log_level=debug");
        fail_msg("log_level=debug delivered no debug line");
    }
    assert_no_password_logged(&warn_logs);
    assert_no_password_logged(&debug_logs);
}

/* ---------------------------------------------------------------------- */
/* pause / resume                                                          */
/* ---------------------------------------------------------------------- */

struct blocked {
    dbpool *pool;
    int64_t timeout;
    atomic_int done;
    int rc;
    int64_t returned_at;
    dbpool_lease lease;
};

static void *blocked_checkout(void *arg)
{
    struct blocked *b = arg;
    b->rc = dbpool_checkout(b->pool, b->timeout, &b->lease);
    b->returned_at = pgt_now_ms();
    atomic_store(&b->done, 1);
    return NULL;
}

static int blocked_done(void *arg)
{
    return atomic_load(&((struct blocked *)arg)->done);
}

static void test_pause_resume(void **state)
{
    (void)state;
    static struct logbuf logs;
    logbuf_init(&logs);
    dbpool_config cfg;
    fast_config(&cfg, 2);
    /* an aggressive CoDel: waiting through a pause must not be a drop */
    cfg.queue_target = 10;
    cfg.queue_interval = 50;
    cfg.log_cb = log_collect;
    cfg.log_arg = &logs;
    dbpool *p = open_pool_port(srv.port, "h_pause", &cfg);
    await_up(p, 2, 5000);

    assert_int_equal(dbpool_pause(p), 0);
    assert_int_equal(itp_stats(p).state, DBPOOL_STATE_PAUSED);
    assert_int_equal(dbpool_pause(p), 0); /* twice is harmless */

    dbpool_lease l;
    int64_t t0 = pgt_now_ms();
    int rc = dbpool_checkout(p, 300, &l);
    int64_t el = pgt_now_ms() - t0;
    if (rc != DBPOOL_ETIMEDOUT)
        fail_msg("checkout while paused returned %d (%s), want DBPOOL_ETIMEDOUT", rc,
                 dbpool_last_error());
    if (el < 290 || el > 1000)
        fail_msg("checkout(300) while paused returned after %lld ms", (long long)el);
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.state, DBPOOL_STATE_PAUSED);
    assert_int_equal(st.drops, 0);
    assert_int_equal(st.idle, 2); /* connections stay open */

    /* a caller blocked by the pause is served as soon as the pool resumes */
    static struct blocked b;
    memset(&b, 0, sizeof b);
    b.pool = p;
    b.timeout = 5000;
    pthread_t t = itp_thr_start(blocked_checkout, &b);
    if (!itp_wait_stats(p, pred_waiting, 1, 2000))
        describe("the blocked checkout never queued", p);
    assert_false(pgt_wait_for(blocked_done, &b, 400)); /* still waiting, not dropped */
    int64_t t_resume = pgt_now_ms();
    assert_int_equal(dbpool_resume(p), 0);
    assert_true(pgt_wait_for(blocked_done, &b, 2000));
    assert_int_equal(itp_thr_join(t, 2000), 0);
    if (b.rc != 0)
        fail_msg("blocked checkout returned %d after resume", b.rc);
    int64_t served = b.returned_at - t_resume;
    if (served > 500) /* not served by resume, it would wait for its 5 s timeout */
        fail_msg("blocked checkout served %lld ms after resume", (long long)served);
    assert_int_equal(itp_stats(p).state, DBPOOL_STATE_UP);
    assert_true(itp_select1(&b.lease));
    assert_int_equal(dbpool_checkin(&b.lease), 0);
    assert_int_equal(itp_stats(p).drops, 0);
    assert_int_equal(close_pool(p), 0);
}

/* ---------------------------------------------------------------------- */
/* 57P03: a server that is starting up is not DOWN                          */
/* ---------------------------------------------------------------------- */

static int find_bindir(char *out, size_t cap)
{
    const char *env = getenv("PG_BINDIR");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return 0;
    }
    for (int v = 40; v >= 9; v--) {
        char probe[256];
        snprintf(probe, sizeof probe, "/usr/lib/postgresql/%d/bin/pg_ctl", v);
        if (access(probe, X_OK) == 0) {
            snprintf(out, cap, "/usr/lib/postgresql/%d/bin", v);
            return 0;
        }
    }
    return -1;
}

/* Write (or append to) a file of the server's data dir, owned like the rest
 * of it (the harness runs the server as `postgres` when we are root). */
static int write_data_file(const pgt_server *s, const char *name, const char *text, int append)
{
    char path[512];
    snprintf(path, sizeof path, "%s/data/%s", s->dir, name);
    FILE *f = fopen(path, append ? "a" : "w");
    if (!f)
        return -1;
    fputs(text, f);
    if (fclose(f) != 0)
        return -1;
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (pw && chown(path, pw->pw_uid, pw->pw_gid) != 0)
            return -1;
    }
    return 0;
}

/* pg_ctl <args> -D <data>, as the server's user, bounded by `timeout`. */
static int pg_ctl(const pgt_server *s, const char *args)
{
    char bindir[256], cmd[1200];
    if (find_bindir(bindir, sizeof bindir) != 0)
        return -1;
    snprintf(cmd, sizeof cmd,
             "cd /tmp && timeout 60 %s '%s/pg_ctl' -D '%s/data' %s >>'%s/harness.log' 2>&1",
             geteuid() == 0 ? "runuser -u postgres --" : "", bindir, s->dir, args, s->dir);
    return system(cmd);
}

/* The server's own answer to a new connection (to check the fault is real). */
static void probe_connect(const pgt_server *s, char *msg, size_t cap)
{
    char ci[600];
    snprintf(ci, sizeof ci, "%s connect_timeout=5", s->conninfo);
    PGconn *c = PQconnectdb(ci);
    snprintf(msg, cap, "%s", PQstatus(c) == CONNECTION_OK ? "OK" : PQerrorMessage(c));
    PQfinish(c);
}

static void test_starting_up_is_not_down(void **state)
{
    (void)state;
    static struct evbuf evs_fresh;
    static struct logbuf logs;
    evbuf_init(&evs_fresh);
    logbuf_init(&logs);
    char bindir[256];
    if (find_bindir(bindir, sizeof bindir) != 0) {
        printf("# SKIP 57P03: no pg_ctl found for promote\n");
        skip();
    }
    dbpool_config cfg;

    /* a pool that was UP before the restart */
    fast_config(&cfg, 2);
    cfg.log_cb = log_collect;
    cfg.log_arg = &logs;
    dbpool *old = open_pool_port(srv2.port, "h_57p03_old", &cfg);
    await_up(old, 2, 5000);

    /* restart as a standby without hot standby: every connection attempt is
     * refused with 57P03 "the database system is not accepting connections"
     * until promotion. pg_ctl start -w returns once the postmaster reports
     * "standby", so pgt_resume works. */
    assert_int_equal(pgt_stop(&srv2, "fast"), 0);
    /* the stop is a real outage (connection refused): the old pool goes DOWN
     * before the server comes back as "starting up" (made deterministic here;
     * in production this is the usual order of a restart) */
    await_state(old, DBPOOL_STATE_DOWN, 5000);
    assert_int_equal(write_data_file(&srv2, "standby.signal", "", 0), 0);
    assert_int_equal(write_data_file(&srv2, "postgresql.conf", "\nhot_standby = off\n", 1), 0);
    assert_int_equal(pgt_resume(&srv2), 0);
    char probe[512];
    probe_connect(&srv2, probe, sizeof probe);
    if (!strstr(probe, "not accepting connections") && !strstr(probe, "starting up"))
        fail_msg("the standby does not refuse with 57P03: %s", probe);

    /* a pool opened now must wait (STARTING), not fail fast (DOWN) */
    fast_config(&cfg, 2);
    cfg.log_cb = log_collect;
    cfg.log_arg = &logs;
    cfg.event_cb = ev_collect;
    cfg.event_arg = &evs_fresh;
    dbpool *fresh = open_pool_port(srv2.port, "h_57p03_new", &cfg);
    if (!itp_wait_stats(fresh, pred_cf_ge, 2, 3000))
        describe("no connect failures against the standby", fresh);
    dbpool_stats st = itp_stats(fresh);
    if (st.state == DBPOOL_STATE_DOWN)
        describe("57P03 made a fresh pool DOWN", fresh);
    assert_int_equal(st.state, DBPOOL_STATE_STARTING);
    if (!pred_err_not_accepting(&st, 0))
        fail_msg("last_error does not say the server is not accepting connections: \"%s\"",
                 st.last_error);
    assert_null(strstr(st.last_error, PASSWORD));
    dbpool_lease l;
    int64_t t0 = pgt_now_ms();
    int rc = dbpool_checkout(fresh, 300, &l);
    int64_t el = pgt_now_ms() - t0;
    if (rc != DBPOOL_ETIMEDOUT)
        fail_msg("checkout against a starting-up server returned %d after %lld ms (%s); want "
                 "DBPOOL_ETIMEDOUT after waiting",
                 rc, (long long)el, dbpool_last_error());
    assert_true(el >= 290);
    if (!itp_wait_stats(fresh, pred_cf_ge, (int64_t)itp_stats(fresh).connect_failures + 2, 3000))
        describe("connect attempts stopped against the starting-up server", fresh);
    assert_int_equal(ev_count(&evs_fresh, DBPOOL_EV_DOWN), 0);
    assert_true(ev_count(&evs_fresh, DBPOOL_EV_CONNECT_FAILED) >= 2);

    /* The pool that was UP went DOWN while the server was really stopped
     * (connection refused). Once the server answers "starting up" it must
     * stop failing fast too. Checked here, asserted after the promotion so a
     * failure still leaves the server promoted. */
    int old_err_seen = itp_wait_stats(old, pred_err_not_accepting, 0, 3000);
    int old_left_down = itp_wait_stats(old, pred_not_state, DBPOOL_STATE_DOWN, 2000);
    dbpool_stats old_st = itp_stats(old);
    int old_rc = dbpool_checkout(old, 300, &l);
    if (old_rc == 0)
        (void)dbpool_checkin(&l);

    /* promote: both pools come UP within one backoff step */
    assert_int_equal(pg_ctl(&srv2, "promote -w -t 30 -s"), 0);
    int64_t t_promoted = pgt_now_ms();
    await_state(fresh, DBPOOL_STATE_UP, cfg.backoff_max + 1000);
    int64_t up_ms = pgt_now_ms() - t_promoted;
    assert_int_equal(dbpool_checkout(fresh, 1000, &l), 0);
    assert_true(itp_select1(&l));
    assert_int_equal(dbpool_checkin(&l), 0);
    await_up(fresh, 2, 3000);
    await_up(old, 2, 3000);
    ev_await(&evs_fresh, DBPOOL_EV_UP, 1, 1000);
    assert_int_equal(ev_count(&evs_fresh, DBPOOL_EV_DOWN), 0);
    printf("# 57P03: fresh pool UP %lld ms after promote\n", (long long)up_ms);
    assert_int_equal(close_pool(fresh), 0);
    assert_int_equal(close_pool(old), 0);
    assert_no_password_logged(&logs);

    if (!old_err_seen)
        fail_msg("the pool that was UP never saw the 57P03 refusal (last_error \"%s\")",
                 old_st.last_error);
    if (!old_left_down || old_rc == DBPOOL_EUNAVAILABLE)
        fail_msg("a pool that went DOWN during the restart stays DOWN while the server is "
                 "starting up (state %s, checkout(300) = %d, last_error \"%s\"): callers "
                 "fail fast instead of waiting (DESIGN 6: 57P03 does not count as DOWN)",
                 dbpool_state_name(old_st.state), old_rc, old_st.last_error);
    assert_int_equal(old_rc, DBPOOL_ETIMEDOUT);
}

/* ---------------------------------------------------------------------- */
/* outage: log budget and fail-fast latency                                */
/* ---------------------------------------------------------------------- */

#define OUT_THREADS 16
#define OUT_SAMPLES 20000

struct outage;
struct out_worker {
    struct outage *o;
    int32_t *lat_us; /* failed checkouts inside the measured window */
    int n_lat;
    int n_ok, n_fail, n_slow_codes; /* slow_codes: window failures other than EUNAVAILABLE */
    int first_bad_code;
    _Atomic int64_t last_ok_at;
};

struct outage {
    dbpool *pool;
    atomic_int stop;
    _Atomic int64_t win_from, win_to; /* pgt_now_ms; failures starting inside are measured */
    struct out_worker w[OUT_THREADS];
};

static void *outage_worker(void *arg)
{
    struct out_worker *w = arg;
    struct outage *o = w->o;
    while (!atomic_load(&o->stop)) {
        dbpool_lease l;
        int64_t start_ms = pgt_now_ms();
        int64_t t0 = now_us();
        int rc = dbpool_checkout(o->pool, 1000, &l);
        int64_t el = now_us() - t0;
        if (rc == 0) {
            int ok = itp_select1(&l);
            (void)dbpool_checkin(&l);
            if (ok) {
                w->n_ok++;
                atomic_store(&w->last_ok_at, pgt_now_ms());
            }
        } else {
            w->n_fail++;
            if (start_ms >= atomic_load(&o->win_from) && start_ms < atomic_load(&o->win_to)) {
                if (w->n_lat < OUT_SAMPLES)
                    w->lat_us[w->n_lat++] = (int32_t)(el > INT32_MAX ? INT32_MAX : el);
                if (rc != DBPOOL_EUNAVAILABLE) {
                    w->n_slow_codes++;
                    if (!w->first_bad_code)
                        w->first_bad_code = rc;
                }
            }
        }
        /* a client's retry pace; also keeps 16 threads from starving 2 cores */
        itp_sleep_ms(1);
    }
    return NULL;
}

struct all_ok_since {
    struct outage *o;
    int64_t since;
};

static int all_ok_since(void *arg)
{
    struct all_ok_since *a = arg;
    for (int i = 0; i < OUT_THREADS; i++)
        if (atomic_load(&a->o->w[i].last_ok_at) < a->since)
            return 0;
    return 1;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static void test_outage_log_budget(void **state)
{
    (void)state;
    static struct logbuf logs;
    logbuf_init(&logs);
    dbpool_config cfg;
    fast_config(&cfg, 4);
    cfg.log_cb = log_collect;
    cfg.log_arg = &logs;
    cfg.log_level = DBPOOL_LOG_WARNING;
    dbpool *p = open_pool_port(srv.port, "h_outage", &cfg);
    await_up(p, 4, 5000);

    static struct outage o;
    memset(&o, 0, sizeof o);
    o.pool = p;
    atomic_store(&o.win_from, INT64_MAX);
    atomic_store(&o.win_to, INT64_MAX);
    pthread_t t[OUT_THREADS];
    for (int i = 0; i < OUT_THREADS; i++) {
        o.w[i].o = &o;
        o.w[i].lat_us = calloc(OUT_SAMPLES, sizeof(int32_t));
        assert_non_null(o.w[i].lat_us);
        t[i] = itp_thr_start(outage_worker, &o.w[i]);
    }
    struct all_ok_since ok0 = {&o, 1};
    assert_true(pgt_wait_for(all_ok_since, &ok0, 5000));

    int64_t t_out = pgt_now_ms();
    assert_int_equal(pgt_stop(&srv, "fast"), 0);
    /* The first second is the transition: connections in use fail as the
     * server goes away, checked-in ones are found broken by pings, and
     * callers already queued wait until the pool decides it is DOWN. Only
     * checkouts that start after it are measured. */
    atomic_store(&o.win_to, t_out + 10000);
    atomic_store(&o.win_from, pgt_now_ms() + 1000);
    int64_t left = t_out + 10000 - pgt_now_ms();
    if (left > 0)
        itp_sleep_ms(left); /* the outage lasts 10 s: that is the point of the test */
    int64_t t_back = pgt_now_ms();
    int warnings = log_count_between(&logs, DBPOOL_LOG_WARNING, t_out, t_back);
    dbpool_stats during = itp_stats(p);
    assert_int_equal(pgt_resume(&srv), 0);
    struct all_ok_since ok1 = {&o, pgt_now_ms()};
    int recovered = pgt_wait_for(all_ok_since, &ok1, 5000);
    atomic_store(&o.stop, 1);
    for (int i = 0; i < OUT_THREADS; i++)
        assert_int_equal(itp_thr_join(t[i], 5000), 0);

    int total = 0, bad = 0, first_bad = 0, fails = 0;
    for (int i = 0; i < OUT_THREADS; i++) {
        total += o.w[i].n_lat;
        bad += o.w[i].n_slow_codes;
        fails += o.w[i].n_fail;
        if (!first_bad)
            first_bad = o.w[i].first_bad_code;
    }
    int32_t *all = calloc((size_t)total + 1, sizeof(int32_t));
    assert_non_null(all);
    int k = 0;
    for (int i = 0; i < OUT_THREADS; i++) {
        memcpy(all + k, o.w[i].lat_us, (size_t)o.w[i].n_lat * sizeof(int32_t));
        k += o.w[i].n_lat;
        free(o.w[i].lat_us);
    }
    qsort(all, (size_t)total, sizeof(int32_t), cmp_i32);
    int32_t p50 = total ? all[total / 2] : 0;
    int32_t p99 = total ? all[(int)((int64_t)total * 99 / 100)] : 0;
    int32_t mx = total ? all[total - 1] : 0;
    free(all);
    printf("# outage 10 s, %d threads: %d failed checkouts (%d measured after the 1 s "
           "transition: p50 %d us, p99 %d us, max %d us); %d warning line(s) during the "
           "outage; state during: %s\n",
           OUT_THREADS, fails, total, p50, p99, mx, warnings, dbpool_state_name(during.state));

    if (!recovered)
        describe("not every caller got a connection within 5 s of the server's return", p);
    assert_int_equal(during.state, DBPOOL_STATE_DOWN);
    if (warnings > 5 || warnings < 1) {
        log_dump(&logs, "outage");
        fail_msg("%d log lines at warning or above during a 10 s outage (want 1..5)", warnings);
    }
    if (bad)
        fail_msg("%d checkouts during the outage failed with something other than "
                 "DBPOOL_EUNAVAILABLE (first: %d)",
                 bad, first_bad);
    assert_true(total >= 1000); /* the measurement saw the outage */
    if (p99 >= 5000)
        fail_msg("fail-fast checkouts during the outage: p99 %d us (want < 5 ms)", p99);
    assert_no_password_logged(&logs);
    await_up(p, 4, 3000);
    assert_int_equal(close_pool(p), 0);
}

/* ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (pgt_start(&srv) != 0)
        return -1;
    if (pgt_start(&srv2) != 0) {
        pgt_destroy(&srv);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pgt_destroy(&srv2);
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_state_machine, test_teardown),
        cmocka_unit_test_teardown(test_events_lifecycle, test_teardown),
        cmocka_unit_test_teardown(test_event_dropped, test_teardown),
        cmocka_unit_test_teardown(test_event_hold_timeout, test_teardown),
        cmocka_unit_test_teardown(test_event_leak, test_teardown),
        cmocka_unit_test_teardown(test_log_levels, test_teardown),
        cmocka_unit_test_teardown(test_pause_resume, test_teardown),
        cmocka_unit_test_teardown(test_starting_up_is_not_down, test_teardown),
        cmocka_unit_test_teardown(test_outage_log_budget, test_teardown),
    };
    setvbuf(stdout, NULL, _IOLBF, 0);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
