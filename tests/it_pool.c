/* it_pool.c - integration tests of the checkout queue, leases, check-in
 * reset, option/conninfo validation and close, against a real PostgreSQL.
 *
 * One throwaway server for the whole file (group setup/teardown). Every test
 * uses its own application_name so backend counts only see its own pool.
 * Every wait is bounded; threads are joined with a deadline so a hang fails
 * the test instead of hanging the run. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
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
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;

/* ---------------------------------------------------------------------- */
/* helpers                                                                 */
/* ---------------------------------------------------------------------- */

/* Pools opened by the current test; the teardown closes what a failing test
 * left open. If a thread could not be joined, nothing is closed (the thread
 * may still be inside the pool) and the pools are leaked. */

/* Fast timers; tests override what they exercise. */
static void fast_config(dbpool_config *cfg, int size)
{
    dbpool_config_init(cfg);
    cfg->size = size;
    cfg->idle_interval = 200;
    cfg->backoff_min = 100;
    cfg->backoff_max = 400;
    cfg->queue_target = 20;
    cfg->queue_interval = 100;
    cfg->connect_timeout = 2000;
    cfg->checkout_timeout = 5000;
}

static int test_teardown(void **state)
{
    (void)state;
    if (!srv.running)
        (void)pgt_resume(&srv);
    itp_close_all();
    return 0;
}

static int pred_idle_eq(const dbpool_stats *st, int64_t n)
{
    return st->idle == n;
}
static int pred_waiting_eq(const dbpool_stats *st, int64_t n)
{
    return st->waiting == n;
}
static int pred_connect_failures_ge(const dbpool_stats *st, int64_t n)
{
    return (int64_t)st->connect_failures >= n;
}

static void await_idle(dbpool *p, int n)
{
    if (!itp_wait_stats(p, pred_idle_eq, n, 10000)) {
        dbpool_stats st = itp_stats(p);
        fail_msg("pool never reached idle=%d (idle=%d busy=%d connecting=%d backoff=%d "
                 "state=%s last_error=%s)",
                 n, st.idle, st.busy, st.connecting, st.backoff, dbpool_state_name(st.state),
                 st.last_error);
    }
}

static int exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    PQclear(r);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* ---------------------------------------------------------------------- */
/* many threads on one connection                                          */
/* ---------------------------------------------------------------------- */

struct shared_run {
    dbpool *pool;
    int cycles;
    pthread_mutex_t mu;
    int holders, max_holders;
    int ok, failed;
    int first_err;
};

static void *shared_worker(void *arg)
{
    struct shared_run *r = arg;
    for (int i = 0; i < r->cycles; i++) {
        dbpool_lease l;
        int rc = dbpool_checkout(r->pool, DBPOOL_DEFAULT_TIMEOUT, &l);
        if (rc != 0) {
            pthread_mutex_lock(&r->mu);
            r->failed++;
            if (!r->first_err)
                r->first_err = rc;
            pthread_mutex_unlock(&r->mu);
            continue;
        }
        pthread_mutex_lock(&r->mu);
        r->holders++;
        if (r->holders > r->max_holders)
            r->max_holders = r->holders;
        pthread_mutex_unlock(&r->mu);

        int ok = itp_select1(&l);

        pthread_mutex_lock(&r->mu);
        r->holders--;
        pthread_mutex_unlock(&r->mu);
        int crc = dbpool_checkin(&l);

        pthread_mutex_lock(&r->mu);
        if (ok && crc == 0)
            r->ok++;
        else {
            r->failed++;
            if (!r->first_err)
                r->first_err = crc ? crc : -1000;
        }
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

static void test_threads_share_one_connection(void **state)
{
    (void)state;
    const char *app = "it_pool_shared";
    dbpool_config cfg;
    fast_config(&cfg, 1);
    /* This test is about correctness under contention, not CoDel: a generous
     * target so no request is dropped on a slow machine. */
    cfg.queue_target = 2000;
    cfg.queue_interval = 2000;
    cfg.checkout_timeout = 20000;
    dbpool *p = itp_open(&srv, app, &cfg);
    await_idle(p, 1);

    struct shared_run r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    r.pool = p;
    r.cycles = 20;
    pthread_t t[10];
    for (int i = 0; i < 10; i++)
        t[i] = itp_thr_start(shared_worker, &r);
    for (int i = 0; i < 10; i++)
        assert_int_equal(itp_thr_join(t[i], 60000), 0);

    if (r.failed)
        fail_msg("%d of 200 cycles failed (first error %d)", r.failed, r.first_err);
    assert_int_equal(r.ok, 200);
    assert_int_equal(r.max_holders, 1); /* one connection, one holder at a time */

    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.checkouts, 200);
    assert_int_equal(st.drops, 0);
    assert_int_equal(st.timeouts, 0);
    assert_int_equal(st.disconnects, 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.size, 1);
    assert_int_equal(pgt_count_backends(&srv, app), 1);
    pthread_mutex_destroy(&r.mu);
    assert_int_equal(itp_close(p), 0);
}

/* ---------------------------------------------------------------------- */
/* queue=false and timeout 0                                               */
/* ---------------------------------------------------------------------- */

static void test_no_queue_fails_at_once(void **state)
{
    (void)state;
    dbpool_config cfg;
    fast_config(&cfg, 1);
    cfg.queue = 0;
    dbpool *p = itp_open(&srv, "it_pool_noqueue", &cfg);
    await_idle(p, 1);

    dbpool_lease held;
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &held), 0);

    dbpool_lease l;
    int64_t t0 = pgt_now_ms();
    int rc = dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l);
    int64_t el = pgt_now_ms() - t0;
    assert_int_equal(rc, DBPOOL_EBUSY);
    assert_true(el < 50);
    assert_true(strlen(dbpool_last_error()) > 0);

    t0 = pgt_now_ms();
    rc = dbpool_checkout(p, 1000, &l); /* an explicit timeout does not make it queue */
    el = pgt_now_ms() - t0;
    assert_int_equal(rc, DBPOOL_EBUSY);
    assert_true(el < 50);
    assert_int_equal(itp_stats(p).waiting, 0);

    /* the holder is unaffected; once it is back, queue=false checkouts work */
    assert_true(itp_select1(&held));
    assert_int_equal(dbpool_checkin(&held), 0);
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    assert_true(itp_select1(&l));
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(itp_close(p), 0);

    /* queue=true but timeout 0: do not wait either */
    fast_config(&cfg, 1);
    p = itp_open(&srv, "it_pool_timeout0", &cfg);
    await_idle(p, 1);
    assert_int_equal(dbpool_checkout(p, 0, &held), 0); /* idle: timeout 0 succeeds */
    t0 = pgt_now_ms();
    rc = dbpool_checkout(p, 0, &l);
    el = pgt_now_ms() - t0;
    assert_int_equal(rc, DBPOOL_EBUSY);
    assert_true(el < 50);
    assert_int_equal(itp_stats(p).waiting, 0);
    assert_int_equal(dbpool_checkin(&held), 0);
    assert_int_equal(itp_close(p), 0);
}

/* ---------------------------------------------------------------------- */
/* checkout timeout                                                        */
/* ---------------------------------------------------------------------- */

static void test_checkout_timeout(void **state)
{
    (void)state;
    dbpool_config cfg;
    fast_config(&cfg, 1);
    /* keep CoDel out of the way: only the deadline may end the wait */
    cfg.queue_target = 5000;
    cfg.queue_interval = 10000;
    cfg.checkout_timeout = 300;
    dbpool *p = itp_open(&srv, "it_pool_timeout", &cfg);
    await_idle(p, 1);

    dbpool_lease held, l;
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &held), 0);

    int64_t t0 = pgt_now_ms();
    int rc = dbpool_checkout(p, 200, &l);
    int64_t el = pgt_now_ms() - t0;
    assert_int_equal(rc, DBPOOL_ETIMEDOUT);
    assert_true(el >= 200);
    assert_true(el < 1000);
    const char *msg = dbpool_last_error();
    if (!strstr(msg, "queue") && !strstr(msg, "deadline"))
        fail_msg("timeout message does not mention queue/deadline: \"%s\"", msg);

    /* DBPOOL_DEFAULT_TIMEOUT uses cfg.checkout_timeout (300 ms) */
    t0 = pgt_now_ms();
    rc = dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l);
    el = pgt_now_ms() - t0;
    assert_int_equal(rc, DBPOOL_ETIMEDOUT);
    assert_true(el >= 300);
    assert_true(el < 1100);

    /* a negative timeout other than -1 is invalid */
    assert_int_equal(dbpool_checkout(p, -5, &l), DBPOOL_EINVAL);
    assert_int_equal(dbpool_checkout(p, 10, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_checkout(NULL, 10, &l), DBPOOL_EINVAL);

    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.timeouts, 2);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.drops, 0);
    assert_int_equal(st.busy, 1);

    /* the holder still works, and the connection is usable afterwards */
    assert_true(itp_select1(&held));
    assert_int_equal(dbpool_checkin(&held), 0);
    assert_int_equal(dbpool_checkout(p, 200, &l), 0);
    assert_true(itp_select1(&l));
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(itp_close(p), 0);
}

/* ---------------------------------------------------------------------- */
/* CoDel drops under sustained overload                                    */
/* ---------------------------------------------------------------------- */

struct overload {
    dbpool *pool;
    int64_t until;
    pthread_mutex_t mu;
    int ok, dropped, other, bad_msg, query_failed;
    int other_code;
    char bad_text[512];
};

static void *overload_worker(void *arg)
{
    struct overload *o = arg;
    while (pgt_now_ms() < o->until) {
        dbpool_lease l;
        int rc = dbpool_checkout(o->pool, DBPOOL_DEFAULT_TIMEOUT, &l);
        if (rc == 0) {
            PGresult *r = PQexec(dbpool_pg_conn(&l), "SELECT pg_sleep(0.02)");
            int qok = PQresultStatus(r) == PGRES_TUPLES_OK;
            PQclear(r);
            int crc = dbpool_checkin(&l);
            pthread_mutex_lock(&o->mu);
            if (qok && crc == 0)
                o->ok++;
            else
                o->query_failed++;
            pthread_mutex_unlock(&o->mu);
        } else if (rc == DBPOOL_EDROPPED) {
            const char *msg = dbpool_last_error();
            int good = strstr(msg, "dropped from queue") != NULL;
            pthread_mutex_lock(&o->mu);
            o->dropped++;
            if (!good) {
                o->bad_msg++;
                snprintf(o->bad_text, sizeof o->bad_text, "%s", msg);
            }
            pthread_mutex_unlock(&o->mu);
        } else {
            pthread_mutex_lock(&o->mu);
            o->other++;
            o->other_code = rc;
            pthread_mutex_unlock(&o->mu);
        }
    }
    return NULL;
}

static void test_codel_drops_under_overload(void **state)
{
    (void)state;
    dbpool_config cfg;
    fast_config(&cfg, 1);
    cfg.queue_target = 20;
    cfg.queue_interval = 100;
    cfg.checkout_timeout = 5000;
    dbpool *p = itp_open(&srv, "it_pool_codel", &cfg);
    await_idle(p, 1);

    struct overload o;
    memset(&o, 0, sizeof o);
    pthread_mutex_init(&o.mu, NULL);
    o.pool = p;
    o.until = pgt_now_ms() + 2000;
    pthread_t t[16];
    for (int i = 0; i < 16; i++)
        t[i] = itp_thr_start(overload_worker, &o);
    for (int i = 0; i < 16; i++)
        assert_int_equal(itp_thr_join(t[i], 20000), 0);

    if (o.other)
        fail_msg("%d checkouts failed with something other than EDROPPED (last %d: %s)", o.other,
                 o.other_code, dbpool_strerror(o.other_code));
    assert_int_equal(o.query_failed, 0);
    assert_true(o.ok > 0);
    assert_true(o.dropped > 0);
    if (o.bad_msg)
        fail_msg("drop message lacks \"dropped from queue\": \"%s\"", o.bad_text);

    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.drops, (uint64_t)o.dropped);
    assert_int_equal(st.checkouts, (uint64_t)o.ok);
    assert_int_equal(st.timeouts, 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.idle, 1);

    /* the pool recovers: a plain checkout succeeds at once, repeatedly */
    for (int i = 0; i < 5; i++) {
        dbpool_lease l;
        int64_t t0 = pgt_now_ms();
        int rc = dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l);
        int64_t el = pgt_now_ms() - t0;
        assert_int_equal(rc, 0);
        assert_true(el < 50);
        assert_true(itp_select1(&l));
        assert_int_equal(dbpool_checkin(&l), 0);
    }
    assert_int_equal(itp_stats(p).drops, (uint64_t)o.dropped);
    pthread_mutex_destroy(&o.mu);
    assert_int_equal(itp_close(p), 0);
}

/* ---------------------------------------------------------------------- */
/* using a lease after check-in                                            */
/* ---------------------------------------------------------------------- */

static void test_stale_lease(void **state)
{
    (void)state;
    dbpool_config cfg;
    fast_config(&cfg, 1);
    dbpool *p = itp_open(&srv, "it_pool_stale", &cfg);
    await_idle(p, 1);

    dbpool_lease a;
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &a), 0);
    assert_int_equal(dbpool_lease_check(&a), 0);
    assert_non_null(dbpool_lease_conn(&a));
    int pid = PQbackendPID(dbpool_pg_conn(&a));
    assert_true(pid > 0);
    dbpool_lease copy = a;
    assert_int_equal(dbpool_checkin(&a), 0);

    /* the lease itself after check-in */
    assert_null(dbpool_lease_conn(&a));
    assert_null(dbpool_pg_conn(&a));
    assert_int_equal(dbpool_lease_check(&a), DBPOOL_ESTALE);
    /* double check-in / discard of the same lease: checked at the end, so a
     * wrong code does not hide the checks below */
    int double_checkin = dbpool_checkin(&a);
    int double_discard = dbpool_discard(&a);
    assert_int_equal(dbpool_checkin(NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_lease_check(NULL), DBPOOL_EINVAL);

    /* another caller now holds the same (only) connection */
    dbpool_lease b;
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &b), 0);
    assert_int_equal(PQbackendPID(dbpool_pg_conn(&b)), pid);

    /* a copy of the old lease cannot touch it */
    assert_null(dbpool_lease_conn(&copy));
    assert_null(dbpool_pg_conn(&copy));
    assert_int_equal(dbpool_lease_check(&copy), DBPOOL_ESTALE);
    assert_int_equal(dbpool_checkin(&copy), DBPOOL_ESTALE);
    assert_int_equal(dbpool_discard(&copy), DBPOOL_ESTALE);

    /* ...and the holder is unaffected: still held, same backend, query works */
    assert_int_equal(dbpool_lease_check(&b), 0);
    assert_true(itp_select1(&b));
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.checkouts, 2);
    assert_int_equal(st.disconnects, 0);
    assert_int_equal(PQbackendPID(dbpool_pg_conn(&b)), pid);
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM pg_stat_activity "
                                         "WHERE application_name = 'it_pool_stale'"),
                     1);

    /* a third caller must still wait for it: it was not put back */
    dbpool_lease c;
    assert_int_equal(dbpool_checkout(p, 0, &c), DBPOOL_EBUSY);

    assert_int_equal(dbpool_checkin(&b), 0);
    int double_checkin_b = dbpool_checkin(&b);
    assert_int_equal(dbpool_checkout(p, 0, &c), 0);
    assert_int_equal(PQbackendPID(dbpool_pg_conn(&c)), pid);
    assert_int_equal(dbpool_checkin(&c), 0);
    assert_int_equal(itp_stats(p).disconnects, 0);
    assert_int_equal(itp_close(p), 0);

    /* dbpool.h: "DBPOOL_ESTALE for a lease already checked in" */
    assert_int_equal(double_checkin, DBPOOL_ESTALE);
    assert_int_equal(double_discard, DBPOOL_ESTALE);
    assert_int_equal(double_checkin_b, DBPOOL_ESTALE);
}

/* dbpool.h: dbpool_lease_conn() is "for PostgreSQL a PGconn *". */
static void test_lease_conn_is_pgconn(void **state)
{
    (void)state;
    dbpool_config cfg;
    fast_config(&cfg, 1);
    dbpool *p = itp_open(&srv, "it_pool_leaseconn", &cfg);
    await_idle(p, 1);
    dbpool_lease a;
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &a), 0);
    void *h = dbpool_lease_conn(&a);
    PGconn *c = dbpool_pg_conn(&a);
    assert_non_null(h);
    assert_non_null(c);
    assert_int_equal(dbpool_checkin(&a), 0);
    assert_int_equal(itp_close(p), 0);
    assert_ptr_equal(h, c);
}

/* ---------------------------------------------------------------------- */
/* check-in inside a transaction rolls back                                */
/* ---------------------------------------------------------------------- */

static void test_checkin_rolls_back(void **state)
{
    (void)state;
    assert_int_equal(pgt_exec(&srv, "DROP TABLE IF EXISTS it_pool_rb"), 0);
    assert_int_equal(pgt_exec(&srv, "CREATE TABLE it_pool_rb (x int)"), 0);

    dbpool_config cfg;
    fast_config(&cfg, 1);
    dbpool *p = itp_open(&srv, "it_pool_rollback", &cfg);
    await_idle(p, 1);
    dbpool_stats st0 = itp_stats(p);

    /* open transaction with a write */
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    PGconn *c = dbpool_pg_conn(&l);
    int pid = PQbackendPID(c);
    assert_true(exec_ok(c, "BEGIN"));
    assert_true(exec_ok(c, "INSERT INTO it_pool_rb VALUES (1)"));
    assert_int_equal(PQtransactionStatus(c), PQTRANS_INTRANS);
    assert_int_equal(dbpool_checkin(&l), 0);

    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM it_pool_rb"), 0);
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.rollbacks, st0.rollbacks + 1);
    assert_int_equal(st.disconnects, st0.disconnects);

    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    c = dbpool_pg_conn(&l);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    assert_int_equal(PQbackendPID(c), pid); /* rolled back, not replaced */

    /* failed transaction (INERROR) is rolled back too */
    assert_true(exec_ok(c, "BEGIN"));
    assert_true(exec_ok(c, "INSERT INTO it_pool_rb VALUES (2)"));
    assert_false(exec_ok(c, "SELECT 1/0"));
    assert_int_equal(PQtransactionStatus(c), PQTRANS_INERROR);
    assert_int_equal(dbpool_checkin(&l), 0);
    st = itp_stats(p);
    assert_int_equal(st.rollbacks, st0.rollbacks + 2);

    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    c = dbpool_pg_conn(&l);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    assert_int_equal(PQbackendPID(c), pid);
    /* autocommit work on a clean connection is kept and needs no rollback */
    assert_true(exec_ok(c, "INSERT INTO it_pool_rb VALUES (3)"));
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM it_pool_rb"), 1);
    assert_int_equal(pgt_query_int(&srv, "SELECT coalesce(sum(x), 0) FROM it_pool_rb"), 3);
    st = itp_stats(p);
    assert_int_equal(st.rollbacks, st0.rollbacks + 2);
    assert_int_equal(st.disconnects, st0.disconnects);

    assert_int_equal(itp_close(p), 0);
    (void)pgt_exec(&srv, "DROP TABLE IF EXISTS it_pool_rb");
}

/* ---------------------------------------------------------------------- */
/* invalid conninfo, passwords in messages                                 */
/* ---------------------------------------------------------------------- */

#define SECRET "supersecret123"

static void expect_bad_conninfo(const char *ci, const char *must_mention)
{
    dbpool_config cfg;
    fast_config(&cfg, 1);
    dbpool *p = (dbpool *)&cfg; /* any non-NULL value: open must set it to NULL */
    int rc = dbpool_pg_open(&p, ci, &cfg);
    if (rc == 0) {
        itp_track(p);
        fail_msg("dbpool_pg_open accepted bad conninfo \"%s\"", ci);
    }
    assert_int_equal(rc, DBPOOL_EINVAL);
    assert_null(p);
    const char *msg = dbpool_last_error();
    if (strlen(msg) < 10)
        fail_msg("no clear message for \"%s\": \"%s\"", ci, msg);
    if (strstr(msg, SECRET))
        fail_msg("password leaked in message for \"%s\": \"%s\"", ci, msg);
    if (must_mention && !strstr(msg, must_mention))
        fail_msg("message for \"%s\" does not mention \"%s\": \"%s\"", ci, must_mention, msg);
}

static void test_invalid_conninfo(void **state)
{
    (void)state;
    expect_bad_conninfo("host=localhost port=notaport", "port");
    expect_bad_conninfo("postgresql://[bad", NULL);
    expect_bad_conninfo("nosuchkey=1", "nosuchkey");
    expect_bad_conninfo("host=localhost port=notaport password=" SECRET, "port");
    expect_bad_conninfo("password=" SECRET " nosuchkey=1", "nosuchkey");
    expect_bad_conninfo("postgresql://u:" SECRET "@host:notaport/db", NULL);
    /* libpq's own parse error for this one quotes the whole URI */
    expect_bad_conninfo("postgresql://u:" SECRET "@[bad", NULL);

    /* NULL arguments */
    dbpool_config cfg;
    fast_config(&cfg, 1);
    dbpool *p = (dbpool *)&cfg;
    assert_int_equal(dbpool_pg_open(&p, NULL, &cfg), DBPOOL_EINVAL);
    assert_null(p);
    assert_int_equal(dbpool_pg_open(NULL, srv.conninfo, &cfg), DBPOOL_EINVAL);
}

static void test_redact(void **state)
{
    (void)state;
    char buf[512];
    assert_int_equal(
        dbpool_pg_redact("host=h user=u password=" SECRET " dbname=d", buf, sizeof buf), 0);
    assert_null(strstr(buf, SECRET));
    assert_non_null(strstr(buf, "********"));
    assert_non_null(strstr(buf, "dbname"));
    assert_int_equal(dbpool_pg_redact("postgresql://u:" SECRET "@h:5432/d", buf, sizeof buf), 0);
    assert_null(strstr(buf, SECRET));
    assert_non_null(strstr(buf, "********"));
    assert_int_equal(dbpool_pg_redact("nosuchkey=1", buf, sizeof buf), DBPOOL_EINVAL);
}

/* Log capture: counts messages and whether any carried the password. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static int log_count, log_leaks;
static char log_leak_text[512];

static void capture_log(void *arg, dbpool_log_level level, const char *pool_name, const char *msg)
{
    (void)arg;
    (void)level;
    (void)pool_name;
    pthread_mutex_lock(&log_mu);
    log_count++;
    if (msg && strstr(msg, SECRET)) {
        log_leaks++;
        snprintf(log_leak_text, sizeof log_leak_text, "%s", msg);
    }
    pthread_mutex_unlock(&log_mu);
}

/* A well-formed conninfo with a wrong password: the connect error must not
 * carry the password anywhere (stats, checkout error, log). */
static void test_wrong_password_not_leaked(void **state)
{
    (void)state;
    char ci[700];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d user=app password=" SECRET
             " dbname=postgres application_name=it_pool_pw",
             srv.port);
    dbpool_config cfg;
    fast_config(&cfg, 1);
    cfg.log_cb = capture_log;
    cfg.log_level = DBPOOL_LOG_DEBUG;
    pthread_mutex_lock(&log_mu);
    log_count = 0;
    log_leaks = 0;
    pthread_mutex_unlock(&log_mu);

    dbpool *p = NULL;
    assert_int_equal(dbpool_pg_open(&p, ci, &cfg), 0);
    itp_track(p);
    if (!itp_wait_stats(p, pred_connect_failures_ge, 2, 5000))
        fail_msg("no connect failure recorded with a wrong password");
    dbpool_stats st = itp_stats(p);
    assert_int_equal(st.idle, 0);
    assert_true(strlen(st.last_error) > 0);
    if (strstr(st.last_error, SECRET))
        fail_msg("password in stats.last_error: %s", st.last_error);

    dbpool_lease l;
    int rc = dbpool_checkout(p, 300, &l);
    if (rc == 0) {
        (void)dbpool_checkin(&l);
        fail_msg("checkout succeeded with a wrong password");
    }
    assert_true(rc == DBPOOL_EUNAVAILABLE || rc == DBPOOL_ETIMEDOUT);
    assert_null(strstr(dbpool_last_error(), SECRET));

    assert_int_equal(itp_close(p), 0);
    pthread_mutex_lock(&log_mu);
    int leaks = log_leaks;
    pthread_mutex_unlock(&log_mu);
    if (leaks)
        fail_msg("password in %d log message(s), e.g. \"%s\"", leaks, log_leak_text);
    pthread_mutex_lock(&log_mu);
    int logged = log_count;
    pthread_mutex_unlock(&log_mu);
    assert_true(logged > 0); /* the failure was logged, through our callback */
}

/* ---------------------------------------------------------------------- */
/* options                                                                 */
/* ---------------------------------------------------------------------- */

static void test_config_defaults(void **state)
{
    (void)state;
    dbpool_config cfg;
    memset(&cfg, 0x5a, sizeof cfg);
    dbpool_config_init(&cfg);
    assert_true(cfg.name == NULL || strcmp(cfg.name, "default") == 0);
    assert_int_equal(cfg.size, 10);
    assert_int_equal(cfg.min_size, -1);
    assert_int_equal(cfg.idle_timeout, 0);
    assert_int_equal(cfg.leak_threshold, 0);
    assert_null(cfg.event_cb);
    assert_int_equal(cfg.queue, 1);
    assert_int_equal(cfg.lifo, 0);
    assert_int_equal(cfg.queue_target, 50);
    assert_int_equal(cfg.queue_interval, 2000);
    assert_int_equal(cfg.checkout_timeout, 15000);
    assert_int_equal(cfg.idle_interval, 1000);
    assert_int_equal(cfg.idle_limit, 0);
    assert_int_equal(cfg.ping_timeout, 5000);
    assert_int_equal(cfg.connect_timeout, 10000);
    assert_int_equal(cfg.backoff_type, DBPOOL_BACKOFF_RAND_EXP);
    assert_int_equal(cfg.backoff_min, -1);
    assert_int_equal(cfg.backoff_max, 30000);
    assert_int_equal(cfg.max_lifetime, 1800000);
    assert_int_equal(cfg.hold_timeout, 15000);
    assert_int_equal(cfg.reset_timeout, 5000);
    assert_null(cfg.after_connect);
    assert_null(cfg.log_cb);
    assert_int_equal(cfg.log_level, DBPOOL_LOG_WARNING);
}

static void expect_set_fails(const char *name, const char *value)
{
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    int rc = dbpool_config_set(&cfg, name, value);
    if (rc != DBPOOL_EINVAL)
        fail_msg("dbpool_config_set(\"%s\", \"%s\") = %d, want DBPOOL_EINVAL", name, value, rc);
    if (strlen(dbpool_last_error()) == 0)
        fail_msg("no message for dbpool_config_set(\"%s\", \"%s\")", name, value);
}

static void test_invalid_options(void **state)
{
    (void)state;
    expect_set_fails("no_such_option", "1");
    expect_set_fails("size", "0");
    expect_set_fails("size", "-3");
    expect_set_fails("size", "");
    expect_set_fails("size", "4x");
    expect_set_fails("queue_target", "abc");
    expect_set_fails("queue_target", "20parsecs");
    expect_set_fails("backoff_type", "nope");

    dbpool_config cfg;
    dbpool_config_init(&cfg);
    assert_int_equal(dbpool_config_set(&cfg, NULL, "1"), DBPOOL_EINVAL);
    assert_int_equal(dbpool_config_set(&cfg, "size", NULL), DBPOOL_EINVAL);

    /* valid values by name */
    assert_int_equal(dbpool_config_set(&cfg, "size", "8"), 0);
    assert_int_equal(cfg.size, 8);
    assert_int_equal(dbpool_config_set(&cfg, "queue_target", "50ms"), 0);
    assert_int_equal(cfg.queue_target, 50);
    assert_int_equal(dbpool_config_set(&cfg, "queue_interval", "2s"), 0);
    assert_int_equal(cfg.queue_interval, 2000);
    assert_int_equal(dbpool_config_set(&cfg, "idle_interval", "1m"), 0);
    assert_int_equal(cfg.idle_interval, 60000);
    assert_int_equal(dbpool_config_set(&cfg, "checkout_timeout", "750"), 0);
    assert_int_equal(cfg.checkout_timeout, 750);
    assert_int_equal(dbpool_config_set(&cfg, "lifo", "true"), 0);
    assert_int_equal(cfg.lifo, 1);
    assert_int_equal(dbpool_config_set(&cfg, "backoff_type", "exp"), 0);
    assert_int_equal(cfg.backoff_type, DBPOOL_BACKOFF_EXP);
    assert_int_equal(dbpool_config_set(&cfg, "backoff_type", "stop"), 0);
    assert_int_equal(cfg.backoff_type, DBPOOL_BACKOFF_STOP);

    /* several at once */
    dbpool_config_init(&cfg);
    assert_int_equal(dbpool_config_parse(&cfg, "size=4 queue_target=20ms idle_interval=1s"), 0);
    assert_int_equal(cfg.size, 4);
    assert_int_equal(cfg.queue_target, 20);
    assert_int_equal(cfg.idle_interval, 1000);
    assert_int_equal(cfg.queue_interval, 2000); /* untouched */
    assert_int_equal(dbpool_config_parse(&cfg, "size=3,hold_timeout=0"), 0);
    assert_int_equal(cfg.size, 3);
    assert_int_equal(cfg.hold_timeout, 0);
    assert_int_equal(dbpool_config_parse(&cfg, "size=5 bogus_option=1"), DBPOOL_EINVAL);
    assert_true(strlen(dbpool_last_error()) > 0);
    assert_int_equal(dbpool_config_parse(&cfg, "size=0"), DBPOOL_EINVAL);

    /* bad values set directly are caught at open */
    char ci[700];
    snprintf(ci, sizeof ci, "%s application_name=it_pool_badcfg", srv.conninfo);
    int bad_sizes[] = {0, -1};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        fast_config(&cfg, bad_sizes[i]);
        dbpool *p = (dbpool *)&cfg;
        int rc = dbpool_pg_open(&p, ci, &cfg);
        if (rc == 0) {
            itp_track(p);
            fail_msg("open accepted size=%d", bad_sizes[i]);
        }
        assert_int_equal(rc, DBPOOL_EINVAL);
        assert_null(p);
        assert_true(strlen(dbpool_last_error()) > 0);
    }
    assert_int_equal(pgt_count_backends(&srv, "it_pool_badcfg"), 0);
}

/* ---------------------------------------------------------------------- */
/* close                                                                   */
/* ---------------------------------------------------------------------- */

static void test_close_idle_pool(void **state)
{
    (void)state;
    const char *app = "it_pool_close_idle";
    dbpool_config cfg;
    fast_config(&cfg, 2);
    dbpool *p = itp_open(&srv, app, &cfg);
    await_idle(p, 2);
    assert_int_equal(pgt_count_backends(&srv, app), 2);
    assert_int_equal(itp_close(p), 0);
    assert_true(itp_wait_backends(&srv, app, 0, 3000));
    assert_int_equal(dbpool_close(NULL), 0);
}

static void test_close_with_lease_out(void **state)
{
    (void)state;
    const char *app = "it_pool_close_held";
    dbpool_config cfg;
    fast_config(&cfg, 2);
    dbpool *p = itp_open(&srv, app, &cfg);
    await_idle(p, 2);

    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    int pid = PQbackendPID(dbpool_pg_conn(&l));

    assert_int_equal(itp_close(p), DBPOOL_EBUSY);
    /* p must not be used any more; only the lease */

    /* the idle connection goes now, the held one stays */
    assert_true(itp_wait_backends(&srv, app, 1, 3000));
    assert_int_equal(dbpool_lease_check(&l), 0);
    assert_true(itp_select1(&l));
    assert_int_equal(PQbackendPID(dbpool_pg_conn(&l)), pid);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    assert_int_equal(pgt_query_int(&srv, sql), 1);

    assert_int_equal(dbpool_checkin(&l), 0);
    assert_true(itp_wait_backends(&srv, app, 0, 3000));
}

struct close_waiter {
    dbpool *pool;
    int rc;
    int64_t done_at;
};

static void *close_waiter_fn(void *arg)
{
    struct close_waiter *w = arg;
    dbpool_lease l;
    w->rc = dbpool_checkout(w->pool, 10000, &l);
    w->done_at = pgt_now_ms();
    if (w->rc == 0)
        (void)dbpool_checkin(&l);
    return NULL;
}

static void test_close_wakes_waiter(void **state)
{
    (void)state;
    const char *app = "it_pool_close_waiter";
    dbpool_config cfg;
    fast_config(&cfg, 1);
    cfg.queue_target = 5000; /* the waiter must be ended by close, not by CoDel */
    cfg.queue_interval = 10000;
    cfg.checkout_timeout = 10000;
    dbpool *p = itp_open(&srv, app, &cfg);
    await_idle(p, 1);

    dbpool_lease held;
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &held), 0);

    struct close_waiter w = {p, 1, 0};
    pthread_t t = itp_thr_start(close_waiter_fn, &w);
    if (!itp_wait_stats(p, pred_waiting_eq, 1, 3000)) {
        itp_set_hung(); /* the thread may still be in checkout; do not close under it */
        fail_msg("the waiter never showed up in stats.waiting");
    }

    int64_t t0 = pgt_now_ms();
    assert_int_equal(itp_close(p), DBPOOL_EBUSY);
    assert_int_equal(itp_thr_join(t, 3000), 0);
    assert_int_equal(w.rc, DBPOOL_ECLOSED);
    assert_true(w.done_at - t0 < 500);

    /* the holder is unaffected; its check-in closes the last connection */
    assert_true(itp_select1(&held));
    assert_int_equal(dbpool_checkin(&held), 0);
    assert_true(itp_wait_backends(&srv, app, 0, 3000));
}

/* ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (pgt_start(&srv) != 0) {
        fprintf(stderr, "it_pool: could not start PostgreSQL\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    alarm(240); /* last resort against a hang */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_config_defaults, test_teardown),
        cmocka_unit_test_teardown(test_invalid_options, test_teardown),
        cmocka_unit_test_teardown(test_invalid_conninfo, test_teardown),
        cmocka_unit_test_teardown(test_redact, test_teardown),
        cmocka_unit_test_teardown(test_threads_share_one_connection, test_teardown),
        cmocka_unit_test_teardown(test_no_queue_fails_at_once, test_teardown),
        cmocka_unit_test_teardown(test_checkout_timeout, test_teardown),
        cmocka_unit_test_teardown(test_codel_drops_under_overload, test_teardown),
        cmocka_unit_test_teardown(test_stale_lease, test_teardown),
        cmocka_unit_test_teardown(test_lease_conn_is_pgconn, test_teardown),
        cmocka_unit_test_teardown(test_checkin_rolls_back, test_teardown),
        cmocka_unit_test_teardown(test_wrong_password_not_leaked, test_teardown),
        cmocka_unit_test_teardown(test_close_idle_pool, test_teardown),
        cmocka_unit_test_teardown(test_close_with_lease_out, test_teardown),
        cmocka_unit_test_teardown(test_close_wakes_waiter, test_teardown),
    };
    return cmocka_run_group_tests_name("it_pool", tests, group_setup, group_teardown);
}
