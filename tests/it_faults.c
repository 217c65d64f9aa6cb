/* it_faults.c - the fault matrix: what callers see, and what ends up in the
 * database, when the connection or the server fails at a chosen moment.
 *
 * Faults: server stop+start, pg_terminate_backend, relay reset, relay
 * black-hole, relay refuse (+ reset of open connections), auth failure, too
 * many connections, starting up (57P03). Timings: the pool's connections are
 * idle; a query is running; a transaction is open (BEGIN + INSERT done);
 * COMMIT is in flight (slowed by a deferred constraint trigger).
 *
 * In every cell a few worker threads insert rows into `audit` in explicit
 * transactions through the pool. Every libpq call is non-blocking with a
 * client-side deadline (PQsendQuery + poll); on a deadline the connection is
 * discarded, so a black-holed relay can never hang a worker. Each transaction
 * is classified:
 *   committed  COMMIT returned OK ("COMMIT")
 *   failed     an error before COMMIT was sent, or COMMIT returned a plain
 *              SQL error (or "ROLLBACK") on a connection that is still fine
 *   unknown    the connection was lost (or the deadline hit) while COMMIT was
 *              in flight: either outcome is allowed, they are only counted
 * and checked against the table on the real server (not through the relay):
 * every committed row is there, no failed row is. After the fault is cleared
 * the pool must be back to full size and serve commits again.
 *
 * The matrix is printed as a table at the end. One server and one relay for
 * the whole file; each cell is its own cmocka test (filter with
 * IT_FAULTS_FILTER="relay*"). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "pgserver.h"
#include "relay.h"

#define PASSWORD "app_secret_pw"

#define NWORKERS 3
#define POOL_SIZE 4
#define OP_DEADLINE_MS 800 /* per libpq round trip (pg_sleep(0.5) fits) */
#define CHECKOUT_TIMEOUT_MS 1000
#define RESET_TIMEOUT_MS 1000 /* check-in's ROLLBACK */
#define MARGIN_MS 600         /* allowed overrun of any deadline (loaded CI machines) */
#define PACE_MS 20            /* between a worker's transactions */
#define HOLD_MS 700           /* how long a lasting fault is held */
/* Longer than OP_DEADLINE_MS + MARGIN_MS by far: a call that blocked in the
 * black hole instead of honouring its deadline would end only when the
 * partition heals, and must show up as an overrun. */
#define HOLD_BLACKHOLE_MS 2500
#define MAX_TXN 8192

enum fault {
    F_STOP,
    F_TERMINATE,
    F_RESET,
    F_BLACKHOLE,
    F_REFUSE,
    F_AUTH,
    F_TOOMANY,
    F_STARTUP,
    NFAULTS
};
enum timing { T_IDLE, T_QUERY, T_TXN, T_COMMIT, NTIMINGS };

static const char *const fault_names[NFAULTS] = {
    "server stop+start",  "terminate backends", "relay reset",    "relay black-hole",
    "relay refuse+reset", "auth failure",       "too many conns", "starting up 57P03"};
static const char *const fault_tags[NFAULTS] = {
    "stop", "terminate", "relay_reset", "relay_bh", "relay_refuse", "auth", "toomany", "startup"};
static const char *const timing_names[NTIMINGS] = {"idle", "mid-query", "mid-transaction",
                                                   "during COMMIT"};

static pgt_server srv;
static relay *g_relay;
static atomic_int g_next_id = 1;
static int g_hung;

static int uses_relay(int f)
{
    return f == F_RESET || f == F_BLACKHOLE || f == F_REFUSE;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------------- */
/* non-blocking libpq with a deadline                                      */
/* ---------------------------------------------------------------------- */

enum { OPR_OK, OPR_SQLERR, OPR_LOST, OPR_DEADLINE, OPR_NOTSENT };
static const char *const r_names[] = {"ok", "sql error", "connection lost", "deadline", "not sent"};

struct opres {
    int kind;
    char cmd[32];     /* command tag of the last OK result ("COMMIT", "ROLLBACK", ...) */
    char sqlstate[6]; /* of the first error */
    char err[200];
    int64_t ms;
};

/*
 * Send `sql` and wait for all its results until timeout_ms. Never blocks
 * longer: libpq is in non-blocking mode and we poll its socket. on_sent runs
 * once the query is queued (for aligning a fault with it). A FATAL error or a
 * broken connection is OPR_LOST even if a result arrived.
 */
static void op_run(PGconn *c, const char *sql, int64_t timeout_ms, void (*on_sent)(void *),
                   void *arg, struct opres *o)
{
    int64_t t0 = pgt_now_ms(), deadline = t0 + timeout_ms;
    int failed = 0, fatal = 0, done = 0;

    memset(o, 0, sizeof *o);
    if (!c || PQstatus(c) != CONNECTION_OK || PQsetnonblocking(c, 1) != 0 || !PQsendQuery(c, sql)) {
        o->kind = OPR_NOTSENT;
        snprintf(o->err, sizeof o->err, "%s", c ? PQerrorMessage(c) : "no connection");
        goto out;
    }
    if (on_sent)
        on_sent(arg);
    for (;;) {
        int f = PQflush(c);
        int consumed = f >= 0 && PQconsumeInput(c);
        while (!PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            if (!r) {
                done = 1;
                break;
            }
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
                snprintf(o->cmd, sizeof o->cmd, "%s", PQcmdStatus(r));
            } else if (!failed) {
                const char *ss = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
                snprintf(o->sqlstate, sizeof o->sqlstate, "%s", ss ? ss : "");
                snprintf(o->err, sizeof o->err, "%s", PQresultErrorMessage(r));
                fatal = sev && (!strcmp(sev, "FATAL") || !strcmp(sev, "PANIC"));
                failed = 1;
            }
            PQclear(r);
        }
        if (done)
            break;
        if (f < 0 || !consumed || PQstatus(c) == CONNECTION_BAD) {
            o->kind = OPR_LOST;
            if (!o->err[0])
                snprintf(o->err, sizeof o->err, "%s", PQerrorMessage(c));
            goto out;
        }
        int64_t left = deadline - pgt_now_ms();
        if (left <= 0) {
            o->kind = OPR_DEADLINE;
            goto out;
        }
        struct pollfd p = {PQsocket(c), (short)(POLLIN | (f == 1 ? POLLOUT : 0)), 0};
        if (p.fd < 0) {
            o->kind = OPR_LOST;
            goto out;
        }
        (void)poll(&p, 1, (int)left);
    }
    if (fatal || PQstatus(c) == CONNECTION_BAD)
        o->kind = OPR_LOST;
    else
        o->kind = failed ? OPR_SQLERR : OPR_OK;
out:
    for (char *q = o->err; *q; q++)
        if (*q == '\n')
            *q = ' ';
    o->ms = pgt_now_ms() - t0;
}

/* ---------------------------------------------------------------------- */
/* a cell                                                                  */
/* ---------------------------------------------------------------------- */

enum outcome { O_COMMITTED, O_FAILED, O_UNKNOWN };

struct txn {
    int id;
    int outcome;
    int aligned; /* the worker's first transaction, in flight when the fault hit */
    int64_t end; /* pgt_now_ms() when classified */
};

struct row { /* one line of the matrix */
    int ran, passed;
    int txns, committed, failed, unknown, unknown_present, checkout_errors;
    int64_t worst_overrun, recovery_ms;
    char note[120];
};

struct cell {
    int fault, timing;
    char app[48];
    dbpool *pool;
    pthread_t thr[NWORKERS];
    int nthr;
    int fault_active;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;     /* workers at the alignment point */
    int arrived;   /* workers at the barrier before the aligned statement */
    int gate_open; /* the fault is in: aligned workers go on */
    atomic_int stop;
    _Atomic int64_t clear_at; /* when the fault was cleared (INT64_MAX before) */

    /* results, under mu */
    struct txn tx[MAX_TXN];
    int ntx, dropped_tx;
    int co_ok, co_err, co_codes[16], co_unexpected;
    int commits_after_clear;
    int64_t worst_overrun;
    char worst_what[160];
    char first_fail[200];

    struct row *row;
};

static struct cell g_cells[NFAULTS][NTIMINGS];
static struct row g_rows[NFAULTS][NTIMINGS];

struct wctx {
    struct cell *c;
    int idx;
    int signalled, arrived;
};

static void overrun(struct cell *c, const char *what, int64_t took, int64_t limit)
{
    pthread_mutex_lock(&c->mu);
    if (took - limit > c->worst_overrun) {
        c->worst_overrun = took - limit;
        snprintf(c->worst_what, sizeof c->worst_what, "%s took %lld ms (limit %lld)", what,
                 (long long)took, (long long)limit);
    }
    pthread_mutex_unlock(&c->mu);
}

static void signal_ready(void *arg)
{
    struct wctx *w = arg;
    if (w->signalled)
        return;
    w->signalled = 1;
    pthread_mutex_lock(&w->c->mu);
    w->c->ready++;
    pthread_cond_broadcast(&w->c->cv);
    pthread_mutex_unlock(&w->c->mu);
}

/* All workers send their aligned statement together, so the 0.5 s during
 * which all of them are in flight is shared (bounded wait). */
static void arrive(struct wctx *w)
{
    if (w->arrived)
        return;
    w->arrived = 1;
    pthread_mutex_lock(&w->c->mu);
    w->c->arrived++;
    pthread_cond_broadcast(&w->c->cv);
    pthread_mutex_unlock(&w->c->mu);
}

static void barrier(struct wctx *w)
{
    struct cell *c = w->c;
    struct timespec ts;
    arrive(w);
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    pthread_mutex_lock(&c->mu);
    while (c->arrived < c->nthr && !atomic_load(&c->stop))
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&c->mu);
}

/* Wait (bounded) until the main thread has injected the fault. */
static void wait_gate(struct cell *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 15;
    pthread_mutex_lock(&c->mu);
    while (!c->gate_open && !atomic_load(&c->stop))
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&c->mu);
}

static void record(struct cell *c, int id, int aligned, int outcome, const char *why)
{
    pthread_mutex_lock(&c->mu);
    if (c->ntx < MAX_TXN) {
        struct txn *t = &c->tx[c->ntx++];
        t->id = id;
        t->aligned = aligned;
        t->outcome = outcome;
        t->end = pgt_now_ms();
    } else {
        c->dropped_tx++;
    }
    if (outcome == O_COMMITTED && pgt_now_ms() >= atomic_load(&c->clear_at))
        c->commits_after_clear++;
    /* the first failure, cut to size on purpose (a hint in the report): the
     * precision tells gcc so (-Wformat-truncation in Release builds) */
    if (outcome != O_COMMITTED && !c->first_fail[0] && why)
        snprintf(c->first_fail, sizeof c->first_fail, "%.*s", (int)sizeof c->first_fail - 1, why);
    pthread_mutex_unlock(&c->mu);
}

/* Give the connection back: keep it after success or a plain SQL error
 * (check-in rolls back), close it after anything else. Bounded too. */
static void give_back(struct cell *c, dbpool_lease *l, int keep)
{
    int64_t t0 = pgt_now_ms();
    (void)(keep ? dbpool_checkin(l) : dbpool_discard(l));
    overrun(c, keep ? "check-in" : "discard", pgt_now_ms() - t0, RESET_TIMEOUT_MS + MARGIN_MS);
}

static int step(struct cell *c, PGconn *conn, const char *sql, void (*on_sent)(void *), void *arg,
                struct opres *o)
{
    op_run(conn, sql, OP_DEADLINE_MS, on_sent, arg, o);
    char what[96];
    snprintf(what, sizeof what, "\"%.40s\"", sql);
    overrun(c, what, o->ms, OP_DEADLINE_MS + MARGIN_MS);
    return o->kind;
}

/*
 * One transaction: BEGIN; INSERT; [pg_sleep]; COMMIT. `align` is the timing
 * of the cell for the worker's first transaction (the fault lands at that
 * point), -1 for the others.
 */
static void run_txn(struct wctx *w, int align)
{
    struct cell *c = w->c;
    dbpool_lease l;
    struct opres o;
    char sql[160], why[260];

    int64_t t0 = pgt_now_ms();
    int rc = dbpool_checkout(c->pool, CHECKOUT_TIMEOUT_MS, &l);
    overrun(c, "checkout", pgt_now_ms() - t0, CHECKOUT_TIMEOUT_MS + MARGIN_MS);
    if (rc != 0) {
        pthread_mutex_lock(&c->mu);
        c->co_err++;
        if (-rc > 0 && -rc < 16)
            c->co_codes[-rc]++;
        if (rc != DBPOOL_ETIMEDOUT && rc != DBPOOL_EUNAVAILABLE && rc != DBPOOL_EDROPPED)
            c->co_unexpected++;
        pthread_mutex_unlock(&c->mu);
        if (align >= 0) {
            arrive(w); /* do not hold up the others at the barrier */
            signal_ready(w);
        }
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->co_ok++;
    pthread_mutex_unlock(&c->mu);

    PGconn *conn = dbpool_pg_conn(&l);
    int id = atomic_fetch_add(&g_next_id, 1);
    const char *failed_at = NULL;

    if (step(c, conn, align == T_COMMIT ? "BEGIN; SET LOCAL faults.slow_commit = 'on'" : "BEGIN",
             NULL, NULL, &o) != OPR_OK) {
        failed_at = "BEGIN";
        goto failed;
    }
    snprintf(sql, sizeof sql, "INSERT INTO audit (id, worker) VALUES (%d, %d)", id, w->idx);
    if (step(c, conn, sql, NULL, NULL, &o) != OPR_OK) {
        failed_at = "INSERT";
        goto failed;
    }
    if (align == T_QUERY || align == T_COMMIT)
        barrier(w);
    if (align == T_QUERY && step(c, conn, "SELECT pg_sleep(0.5)", signal_ready, w, &o) != OPR_OK) {
        failed_at = "pg_sleep";
        goto failed;
    }
    if (align == T_TXN) {
        signal_ready(w);
        wait_gate(c);
    }

    /* COMMIT: from here on, a lost connection means "unknown" */
    step(c, conn, "COMMIT", align == T_COMMIT ? signal_ready : NULL, w, &o);
    if (align >= 0)
        signal_ready(w);
    snprintf(why, sizeof why, "COMMIT: %s %s", r_names[o.kind], o.err);
    switch (o.kind) {
    case OPR_OK:
        if (!strcmp(o.cmd, "COMMIT")) {
            record(c, id, align >= 0, O_COMMITTED, NULL);
        } else {
            snprintf(why, sizeof why, "COMMIT answered %s", o.cmd);
            record(c, id, align >= 0, O_FAILED, why); /* the transaction had failed: rolled back */
        }
        give_back(c, &l, 1);
        return;
    case OPR_NOTSENT:
        record(c, id, align >= 0, O_FAILED, why);
        give_back(c, &l, 0);
        return;
    case OPR_SQLERR:
        record(c, id, align >= 0, O_FAILED, why);
        give_back(c, &l, 1);
        return;
    default: /* lost or deadline while COMMIT was in flight */
        record(c, id, align >= 0, O_UNKNOWN, why);
        give_back(c, &l, 0);
        return;
    }

failed:
    if (align >= 0) {
        arrive(w);
        signal_ready(w);
    }
    snprintf(why, sizeof why, "%s: %s %s", failed_at, r_names[o.kind], o.err);
    record(c, id, align >= 0, O_FAILED, why);
    give_back(c, &l, o.kind == OPR_SQLERR);
}

static void *worker(void *arg)
{
    struct wctx *w = arg;
    struct cell *c = w->c;
    int first = 1;

    while (!atomic_load(&c->stop)) {
        if (first && c->timing == T_IDLE)
            wait_gate(c); /* the connections sit idle in the pool when the fault hits */
        if (atomic_load(&c->stop))
            break;
        run_txn(w, first && c->timing != T_IDLE ? c->timing : -1);
        first = 0;
        sleep_ms(PACE_MS);
    }
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* faults                                                                  */
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

/* Write (or append to) a file in the data dir, owned like the rest of it. */
static int write_data_file(const char *name, const char *text, int append)
{
    char path[512];
    snprintf(path, sizeof path, "%s/data/%s", srv.dir, name);
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

static int pg_ctl(const char *args)
{
    char bindir[256], cmd[1200];
    if (find_bindir(bindir, sizeof bindir) != 0)
        return -1;
    snprintf(cmd, sizeof cmd,
             "cd /tmp && timeout 60 %s '%s/pg_ctl' -D '%s/data' %s >>'%s/harness.log' 2>&1",
             geteuid() == 0 ? "runuser -u postgres --" : "", bindir, srv.dir, args, srv.dir);
    return system(cmd);
}

/* Still a standby? (promotion removes standby.signal) */
static int in_recovery(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/data/standby.signal", srv.dir);
    return access(path, F_OK) == 0;
}

/* Kill the pool's backends abruptly: pg_terminate_backend without waiting
 * for them to exit (pgt_terminate waits, which gives the pool's idle pings
 * time to notice before anyone uses a dead connection). */
static int terminate_app(const char *app)
{
    char sql[300];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
             "WHERE application_name = '%s'",
             app);
    return pgt_query_int(&srv, sql) >= 0 ? 0 : -1;
}

/* A superuser session opened before the fault's moment (F_AUTH, F_TOOMANY),
 * so the injection is one round trip: a fresh connection per statement took
 * 600 ms on a loaded machine, and the in-flight pg_sleep(0.5) committed
 * before the fault landed. */
static PGconn *g_admin;

static void admin_close(void);

static int admin_open(void)
{
    admin_close(); /* a cell that failed may have left one */
    g_admin = PQconnectdb(srv.conninfo);
    return PQstatus(g_admin) == CONNECTION_OK ? 0 : -1;
}

static void admin_close(void)
{
    PQfinish(g_admin);
    g_admin = NULL;
}

/* ALTER ROLE and end the pool's sessions, in one round trip */
static int role_fault(struct cell *c, const char *alter)
{
    char sql[500];
    snprintf(sql, sizeof sql,
             "%s; SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
             "WHERE application_name = '%s'",
             alter, c->app);
    PGresult *r = g_admin ? PQexec(g_admin, sql) : NULL;
    int ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok ? 0 : -1;
}

static int inject(struct cell *c)
{
    switch (c->fault) {
    case F_STOP:
        return pgt_stop(&srv, "fast");
    case F_TERMINATE:
        return terminate_app(c->app);
    case F_RESET:
        return relay_reset_all(g_relay);
    case F_BLACKHOLE:
        return relay_set_mode(g_relay, RELAY_BLACKHOLE);
    case F_REFUSE:
        if (relay_set_mode(g_relay, RELAY_REFUSE) != 0)
            return -1;
        return relay_reset_all(g_relay);
    case F_AUTH: /* the sessions end so reconnects meet the new password */
        return role_fault(c, "ALTER ROLE app PASSWORD 'not_the_password'");
    case F_TOOMANY: /* reconnects get 53300 */
        return role_fault(c, "ALTER ROLE app CONNECTION LIMIT 0");
    case F_STARTUP:
        /* restart as a standby without hot standby (hot_standby = off was
         * appended at setup): connections get 57P03 until promotion */
        if (pgt_stop(&srv, "fast") != 0 || write_data_file("standby.signal", "", 0) != 0)
            return -1;
        return pgt_resume(&srv);
    }
    return -1;
}

static int clear(struct cell *c)
{
    switch (c->fault) {
    case F_STOP:
        return srv.running ? 0 : pgt_resume(&srv);
    case F_TERMINATE:
    case F_RESET:
        return 0;
    case F_BLACKHOLE:
    case F_REFUSE:
        return relay_set_mode(g_relay, RELAY_PASS);
    case F_AUTH:
        return pgt_exec(&srv, "ALTER ROLE app PASSWORD '" PASSWORD "'");
    case F_TOOMANY:
        return pgt_exec(&srv, "ALTER ROLE app CONNECTION LIMIT -1");
    case F_STARTUP:
        if (!srv.running && pgt_resume(&srv) != 0)
            return -1;
        return in_recovery() ? (pg_ctl("promote -w -t 30 -s") == 0 ? 0 : -1) : 0;
    }
    return -1;
}

static int64_t hold_ms(int f)
{
    switch (f) {
    case F_TERMINATE:
    case F_RESET:
        return 0; /* instantaneous */
    case F_BLACKHOLE:
        return HOLD_BLACKHOLE_MS;
    default:
        return HOLD_MS;
    }
}

/* ---------------------------------------------------------------------- */
/* waits                                                                   */
/* ---------------------------------------------------------------------- */

static int pool_full(void *arg)
{
    dbpool_stats st;
    return dbpool_stats_get(arg, &st) == 0 && st.state == DBPOOL_STATE_UP &&
           st.idle + st.busy == st.size;
}

static int pool_full_idle(void *arg)
{
    dbpool_stats st;
    return dbpool_stats_get(arg, &st) == 0 && st.state == DBPOOL_STATE_UP && st.idle == st.size;
}

static int workers_ready(void *arg)
{
    struct cell *c = arg;
    pthread_mutex_lock(&c->mu);
    int n = c->ready;
    pthread_mutex_unlock(&c->mu);
    return n >= c->nthr;
}

static int recovered(void *arg)
{
    struct cell *c = arg;
    pthread_mutex_lock(&c->mu);
    int n = c->commits_after_clear;
    pthread_mutex_unlock(&c->mu);
    return n >= NWORKERS && pool_full(c->pool);
}

/* One integer from a superuser connection kept open between polls (polling
 * with a fresh connection each time is too slow to catch a 0.5 s window on a
 * loaded machine); reconnects after a server restart. -1 on failure. */
static PGconn *g_mon;

static int64_t mon_query_int(const char *sql)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!g_mon || PQstatus(g_mon) != CONNECTION_OK) {
            char ci[600];
            PQfinish(g_mon);
            snprintf(ci, sizeof ci, "%s application_name=faults_monitor connect_timeout=5",
                     srv.conninfo);
            g_mon = PQconnectdb(ci);
            if (PQstatus(g_mon) != CONNECTION_OK)
                continue;
        }
        PGresult *r = PQexec(g_mon, sql);
        int64_t v = -1;
        int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        if (ok)
            v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        if (ok)
            return v;
    }
    return -1;
}

struct activity_wait {
    const struct cell *c;
    const char *where; /* SQL condition on pg_stat_activity */
    int n;
};

static int activity_cond(void *arg)
{
    struct activity_wait *a = arg;
    char sql[400];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s' AND %s",
             a->c->app, a->where);
    return mon_query_int(sql) >= a->n;
}

static int backends_gone(void *arg)
{
    struct activity_wait *a = arg;
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'",
             a->c->app);
    return mon_query_int(sql) == 0;
}

/* ---------------------------------------------------------------------- */
/* one cell                                                                */
/* ---------------------------------------------------------------------- */

static void stop_workers(struct cell *c)
{
    atomic_store(&c->stop, 1);
    pthread_mutex_lock(&c->mu);
    c->gate_open = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < c->nthr; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 15;
        if (pthread_timedjoin_np(c->thr[i], NULL, &ts) != 0)
            g_hung = 1;
    }
    c->nthr = 0;
}

static void cell_fail(struct cell *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cell_fail(struct cell *c, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->row->note, sizeof c->row->note, "%.100s", msg);
    fail_msg("[%s / %s] %s", fault_names[c->fault], timing_names[c->timing], msg);
}

static void describe_pool(struct cell *c, const char *what)
{
    dbpool_stats st;
    memset(&st, 0, sizeof st);
    (void)dbpool_stats_get(c->pool, &st);
    cell_fail(c, "%s (state=%s idle=%d busy=%d connecting=%d backoff=%d last_error=\"%s\")", what,
              dbpool_state_name(st.state), st.idle, st.busy, st.connecting, st.backoff,
              st.last_error);
}

static void test_cell(void **state)
{
    struct cell *c = *state;
    struct row *row = c->row;
    static struct wctx wc[NWORKERS];
    dbpool_config cfg;
    char ci[512];

    row->ran = 1;
    dbpool_config_init(&cfg);
    cfg.size = POOL_SIZE;
    cfg.backoff_min = 50;
    cfg.backoff_max = 300;
    cfg.idle_interval = 100;
    cfg.connect_timeout = 1000;
    cfg.ping_timeout = 500;
    cfg.reset_timeout = RESET_TIMEOUT_MS;
    cfg.checkout_timeout = CHECKOUT_TIMEOUT_MS;
    cfg.hold_timeout = 0;
    cfg.log_level = DBPOOL_LOG_ERROR; /* keep the matrix output readable */
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d user=app password=" PASSWORD
             " dbname=postgres application_name=%s",
             uses_relay(c->fault) ? relay_port(g_relay) : srv.port, c->app);
    int rc = dbpool_pg_open(&c->pool, ci, &cfg);
    if (rc != 0)
        cell_fail(c, "dbpool_pg_open: %d %s", rc, dbpool_last_error());
    if (!pgt_wait_for(pool_full_idle, c->pool, 5000))
        describe_pool(c, "pool not full before the fault");
    dbpool_stats st0;
    assert_int_equal(dbpool_stats_get(c->pool, &st0), 0);

    pthread_mutex_lock(&c->mu); /* workers read nthr at the barrier */
    for (int i = 0; i < NWORKERS; i++) {
        wc[i].c = c;
        wc[i].idx = i;
        wc[i].signalled = wc[i].arrived = 0;
        if (pthread_create(&c->thr[i], NULL, worker, &wc[i]) != 0)
            break;
        c->nthr++;
    }
    pthread_mutex_unlock(&c->mu);
    if (c->nthr != NWORKERS)
        cell_fail(c, "pthread_create failed");

    if ((c->fault == F_AUTH || c->fault == F_TOOMANY) && admin_open() != 0)
        cell_fail(c, "no admin session: %s", PQerrorMessage(g_admin));
    /* line the fault up with the chosen moment */
    if (c->timing != T_IDLE) {
        if (!pgt_wait_for(workers_ready, c, 5000))
            cell_fail(c, "workers did not reach the fault point");
        char ff[sizeof c->first_fail];
        pthread_mutex_lock(&c->mu); /* workers write it */
        memcpy(ff, c->first_fail, sizeof ff);
        pthread_mutex_unlock(&c->mu);
        if (ff[0])
            cell_fail(c, "a transaction failed before the fault: %s", ff);
        struct activity_wait aw = {c, "", NWORKERS};
        aw.where = c->timing == T_QUERY ? "state = 'active' AND query = 'SELECT pg_sleep(0.5)'"
                   : c->timing == T_TXN ? "state = 'idle in transaction'"
                                        : "state = 'active' AND query = 'COMMIT'";
        if (!pgt_wait_for(activity_cond, &aw, 2000))
            cell_fail(c, "the server never showed %d backends with %s", NWORKERS, aw.where);
    }

    int64_t t_inject = pgt_now_ms();
    c->fault_active = 1;
    int irc = inject(c);
    admin_close();
    if (irc != 0)
        cell_fail(c, "could not inject the fault");
    int64_t inject_ms = pgt_now_ms() - t_inject;
    pthread_mutex_lock(&c->mu);
    c->gate_open = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);

    int64_t hold = hold_ms(c->fault);
    if (hold > 0)
        sleep_ms(hold); /* the fault lasts this long: the point, not a wait */
    if (clear(c) != 0)
        cell_fail(c, "could not clear the fault");
    c->fault_active = 0;
    int64_t t_clear = pgt_now_ms();
    atomic_store(&c->clear_at, t_clear);

    /* recovered: full pool and every worker's worth of commits after the clear */
    if (!pgt_wait_for(recovered, c, 10000))
        describe_pool(c, "no recovery within 10 s of clearing the fault");
    row->recovery_ms = pgt_now_ms() - t_clear;
    stop_workers(c);
    if (g_hung)
        cell_fail(c, "a worker did not finish within 15 s");
    if (!pgt_wait_for(pool_full_idle, c->pool, 5000))
        describe_pool(c, "pool not back to full size after the workers stopped");
    dbpool_stats st;
    assert_int_equal(dbpool_stats_get(c->pool, &st), 0);
    if (strstr(st.last_error, PASSWORD))
        cell_fail(c, "last_error contains the password");
    assert_int_equal(dbpool_close(c->pool), 0);
    c->pool = NULL;
    /* Server-side sessions end too (no leaked connection), and so do the
     * transactions still running there: a COMMIT whose client gave up may
     * still be sleeping in the trigger; after this the table is final. */
    struct activity_wait gone = {c, "true", 0};
    if (!pgt_wait_for(backends_gone, &gone, 5000))
        cell_fail(c, "%d backend(s) of the closed pool still exist 5 s later",
                  pgt_count_backends(&srv, c->app));

    /* the truth is in the table (queried on the server, not through the relay) */
    int lo = INT32_MAX, hi = 0;
    for (int i = 0; i < c->ntx; i++) {
        if (c->tx[i].id < lo)
            lo = c->tx[i].id;
        if (c->tx[i].id > hi)
            hi = c->tx[i].id;
    }
    unsigned char *present = NULL;
    if (c->ntx > 0) {
        present = calloc((size_t)(hi - lo + 1), 1);
        assert_non_null(present);
        char vci[600];
        snprintf(vci, sizeof vci, "%s connect_timeout=10", srv.conninfo);
        PGconn *pc = PQconnectdb(vci);
        assert_int_equal(PQstatus(pc), CONNECTION_OK);
        char sql[160];
        snprintf(sql, sizeof sql, "SELECT id FROM audit WHERE id BETWEEN %d AND %d", lo, hi);
        PGresult *r = PQexec(pc, sql);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        for (int i = 0; i < PQntuples(r); i++)
            present[atoi(PQgetvalue(r, i, 0)) - lo] = 1;
        PQclear(r);
        PQfinish(pc);
    }
    int lost = 0, phantom = 0, lost_id = 0, phantom_id = 0, aligned = 0, aligned_ok = 0;
    for (int i = 0; i < c->ntx; i++) {
        struct txn *t = &c->tx[i];
        int here = present[t->id - lo];
        row->txns++;
        aligned += t->aligned;
        aligned_ok += t->aligned && t->outcome == O_COMMITTED;
        if (t->outcome == O_COMMITTED) {
            row->committed++;
            if (!here) {
                lost++;
                lost_id = t->id;
            }
        } else if (t->outcome == O_FAILED) {
            row->failed++;
            if (here) {
                phantom++;
                phantom_id = t->id;
            }
        } else {
            row->unknown++;
            row->unknown_present += here;
        }
    }
    free(present);
    row->checkout_errors = c->co_err;
    row->worst_overrun = c->worst_overrun;
    printf("# %-20s %-16s txns %3d committed %3d failed %3d unknown %d (%d in table) "
           "checkout errors %3d (unavailable %d, timeout %d) inject %lld ms recovery %lld ms; "
           "pool: %" PRIu64 " disconnects, %" PRIu64 " ping failures, %" PRIu64
           " connect failures\n",
           fault_names[c->fault], timing_names[c->timing], row->txns, row->committed, row->failed,
           row->unknown, row->unknown_present, c->co_err, c->co_codes[-DBPOOL_EUNAVAILABLE],
           c->co_codes[-DBPOOL_ETIMEDOUT], (long long)inject_ms, (long long)row->recovery_ms,
           st.disconnects - st0.disconnects, st.ping_failures - st0.ping_failures,
           st.connect_failures - st0.connect_failures);
    if (c->first_fail[0])
        printf("#   first failure: %.160s\n", c->first_fail);

    if (lost)
        cell_fail(c, "%d committed transaction(s) missing from the table (e.g. id %d)", lost,
                  lost_id);
    if (phantom)
        cell_fail(c, "%d failed transaction(s) are in the table (e.g. id %d)", phantom, phantom_id);
    if (c->worst_overrun > 0)
        cell_fail(c, "a call overran its deadline + %d ms margin: %s", MARGIN_MS, c->worst_what);
    if (c->co_unexpected)
        cell_fail(c, "%d checkout(s) failed with an unexpected code", c->co_unexpected);
    if (c->dropped_tx)
        cell_fail(c, "%d transactions not recorded (MAX_TXN)", c->dropped_tx);
    /* the fault really landed: the pool lost connections, and no transaction
     * that was in flight at the chosen moment got through unharmed */
    if (st.disconnects == st0.disconnects)
        cell_fail(c, "the pool never lost a connection: the fault did not land");
    if (c->timing != T_IDLE && aligned != NWORKERS)
        cell_fail(c, "%d transactions in flight at the fault, want %d", aligned, NWORKERS);
    if (c->timing != T_IDLE && aligned_ok)
        cell_fail(c,
                  "%d transaction(s) in flight at the fault committed normally: the fault "
                  "missed its moment",
                  aligned_ok);
    if (row->committed < NWORKERS)
        cell_fail(c, "only %d commits", row->committed);
    row->passed = 1;
}

static int cell_setup(void **state)
{
    struct cell *c = *state;
    int f = c->fault, t = c->timing;
    memset(c, 0, sizeof *c);
    c->fault = f;
    c->timing = t;
    c->row = &g_rows[f][t];
    memset(c->row, 0, sizeof *c->row);
    snprintf(c->app, sizeof c->app, "f_%s_%d", fault_tags[f], t);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    atomic_store(&c->clear_at, INT64_MAX);
    return 0;
}

static int cell_teardown(void **state)
{
    struct cell *c = *state;
    stop_workers(c);
    if (c->fault_active && clear(c) != 0)
        fprintf(stderr, "it_faults: could not clear fault %s\n", fault_names[c->fault]);
    /* whatever happened, leave a healthy primary behind for the next cell */
    if (!srv.running)
        (void)pgt_resume(&srv);
    if (in_recovery())
        (void)pg_ctl("promote -w -t 30 -s");
    (void)relay_set_mode(g_relay, RELAY_PASS);
    if (c->pool && !g_hung)
        (void)dbpool_close(c->pool);
    c->pool = NULL;
    return 0;
}

/* ---------------------------------------------------------------------- */

static int64_t g_t_start;

static int group_setup(void **state)
{
    (void)state;
    g_t_start = pgt_now_ms();
    if (pgt_start(&srv) != 0)
        return -1;
    if (relay_start(&g_relay, "127.0.0.1", srv.port) != 0) {
        pgt_destroy(&srv);
        return -1;
    }
    /* app must not be a superuser: superusers ignore CONNECTION LIMIT */
    static const char *const sql[] = {
        "ALTER ROLE app NOSUPERUSER",
        "CREATE TABLE audit (id int PRIMARY KEY, worker int)",
        "GRANT SELECT, INSERT ON audit TO app",
        /* a slow COMMIT on demand: a deferred trigger that sleeps when the
         * transaction set faults.slow_commit */
        "CREATE FUNCTION audit_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF coalesce(current_setting('faults.slow_commit', true), '') = 'on' THEN "
        "PERFORM pg_sleep(0.5); END IF; RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER audit_slow AFTER INSERT ON audit DEFERRABLE INITIALLY "
        "DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_slow_commit()",
    };
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++)
        if (pgt_exec(&srv, sql[i]) != 0)
            goto fail;
    /* for the 57P03 fault (takes effect when restarted as a standby) */
    if (write_data_file("postgresql.conf", "\nhot_standby = off\n", 1) != 0)
        goto fail;
    return 0;
fail:
    relay_stop(g_relay);
    pgt_destroy(&srv);
    return -1;
}

static void print_matrix(void)
{
    printf("\nFault matrix (%d workers, pool size %d, op deadline %d ms, checkout timeout %d "
           "ms, hold %d ms (black-hole %d ms), total %.1f s)\n\n",
           NWORKERS, POOL_SIZE, OP_DEADLINE_MS, CHECKOUT_TIMEOUT_MS, HOLD_MS, HOLD_BLACKHOLE_MS,
           (double)(pgt_now_ms() - g_t_start) / 1000.0);
    printf("| fault                | timing          | txns | committed | failed | unknown "
           "(in table) | checkout errors | worst overrun ms | recovery ms | result |\n");
    printf("|----------------------|-----------------|-----:|----------:|-------:|---------"
           "-----------:|----------------:|-----------------:|------------:|--------|\n");
    for (int f = 0; f < NFAULTS; f++)
        for (int t = 0; t < NTIMINGS; t++) {
            struct row *r = &g_rows[f][t];
            if (!r->ran)
                continue;
            char unk[32];
            snprintf(unk, sizeof unk, "%d (%d)", r->unknown, r->unknown_present);
            printf("| %-20s | %-15s | %4d | %9d | %6d | %18s | %15d | %16lld | %11lld | %s%s%s "
                   "|\n",
                   fault_names[f], timing_names[t], r->txns, r->committed, r->failed, unk,
                   r->checkout_errors, (long long)(r->worst_overrun > 0 ? r->worst_overrun : 0),
                   (long long)r->recovery_ms, r->passed ? "ok" : "FAIL", r->passed ? "" : ": ",
                   r->passed ? "" : r->note);
        }
    printf("\n");
}

static int group_teardown(void **state)
{
    (void)state;
    print_matrix();
    PQfinish(g_mon);
    g_mon = NULL;
    const char *keep = getenv("IT_FAULTS_KEEP_LOG"); /* debugging: keep the server log */
    if (keep && *keep) {
        char cmd[800];
        snprintf(cmd, sizeof cmd, "cp '%s/server.log' '%s'", srv.dir, keep);
        if (system(cmd) != 0)
            fprintf(stderr, "it_faults: could not copy the server log\n");
    }
    if (!g_hung)
        relay_stop(g_relay);
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    static struct CMUnitTest tests[NFAULTS * NTIMINGS];
    static char names[NFAULTS * NTIMINGS][64];
    int n = 0;

    for (int f = 0; f < NFAULTS; f++)
        for (int t = 0; t < NTIMINGS; t++) {
            struct cell *c = &g_cells[f][t];
            c->fault = f;
            c->timing = t;
            snprintf(names[n], sizeof names[n], "%s/%s", fault_tags[f], timing_names[t]);
            tests[n].name = names[n];
            tests[n].test_func = test_cell;
            tests[n].setup_func = cell_setup;
            tests[n].teardown_func = cell_teardown;
            tests[n].initial_state = c;
            n++;
        }
    const char *filter = getenv("IT_FAULTS_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    setvbuf(stdout, NULL, _IOLBF, 0);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
