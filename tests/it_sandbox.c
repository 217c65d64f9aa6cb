/* it_sandbox.c - the test sandbox (include/dbpool_sandbox.h) against a real
 * PostgreSQL: concurrent owners that never see each other's writes, allowed
 * worker threads, shared mode, the no-owner error, ownership_timeout, an
 * owner ending while an allowed thread holds its connection, transactions as
 * savepoints, and a raw COMMIT caught at check-in. Worker threads only
 * record what they saw; the assertions run on the test's own thread. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "dbpool_registry.h"
#include "dbpool_sandbox.h"
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;

#define JOIN_MS 60000

static void fast_config(dbpool_config *cfg, int size)
{
    dbpool_config_init(cfg);
    cfg->size = size;
    cfg->idle_interval = 200;
    cfg->backoff_min = 100;
    cfg->backoff_max = 400;
    cfg->connect_timeout = 5000;
    cfg->checkout_timeout = 30000;
}

/* A pool in sandbox mode (manual). */
static dbpool *open_sandbox(const char *app, int size, int64_t ownership_timeout)
{
    dbpool_config cfg;
    dbpool_sandbox_config sc;

    fast_config(&cfg, size);
    dbpool *p = itp_open(&srv, app, &cfg);
    dbpool_sandbox_config_init(&sc);
    if (ownership_timeout >= 0)
        sc.ownership_timeout = ownership_timeout;
    int rc = dbpool_sandbox_enable(p, &sc);
    if (rc != 0)
        fail_msg("dbpool_sandbox_enable: %d %s", rc, dbpool_last_error());
    return p;
}

/* One integer through the ordinary query helper (so: through the sandbox
 * lookup); -1 with *rc set on failure. */
static int64_t q_int(dbpool *p, const char *sql, int *rc)
{
    dbpool_pg_result r;
    int64_t v = -1;

    *rc = dbpool_pg_query(p, sql, NULL, NULL, &r);
    if (*rc == 0 && r.res && PQntuples(r.res) == 1)
        v = strtoll(PQgetvalue(r.res, 0, 0), NULL, 10);
    dbpool_pg_result_clear(&r);
    return v;
}

static int insert_key(dbpool *p, int k)
{
    char v[16];
    const char *vals[] = {v};
    dbpool_pg_params prm = {.n = 1, .values = vals};

    snprintf(v, sizeof(v), "%d", k);
    return dbpool_pg_query(p, "INSERT INTO sbx_items(k) VALUES ($1::int)", &prm, NULL, NULL);
}

/* Rows in the table as the rest of the world sees them (a fresh connection). */
static int64_t committed_rows(void)
{
    return pgt_query_int(&srv, "SELECT count(*) FROM sbx_items");
}

/* ---- 16 concurrent tests, the same unique keys ----------------------------- */

#define NTESTS 16
#define NKEYS 20

struct conc {
    dbpool *pool;
    atomic_int failures;
    char why[NTESTS][256];
    int idx;
};

struct conc_arg {
    struct conc *c;
    int i;
};

static void *conc_test(void *arg)
{
    struct conc_arg *a = arg;
    struct conc *c = a->c;
    dbpool_owner *own;
    int rc;

    /* like one test of a suite: its own sandbox, then the code under test */
    if ((rc = dbpool_sandbox_checkout(c->pool, DBPOOL_DEFAULT_TIMEOUT, &own)) != 0) {
        snprintf(c->why[a->i], 256, "checkout: %d %s", rc, dbpool_last_error());
        atomic_fetch_add(&c->failures, 1);
        return NULL;
    }
    for (int k = 1; k <= NKEYS; k++)
        if ((rc = insert_key(c->pool, k)) != 0) {
            snprintf(c->why[a->i], 256, "insert %d: %d %s", k, rc, dbpool_last_error());
            atomic_fetch_add(&c->failures, 1);
            break;
        }
    int64_t n = q_int(c->pool, "SELECT count(*) FROM sbx_items", &rc);
    if (rc == 0 && n != NKEYS) {
        snprintf(c->why[a->i], 256, "saw %lld rows, expected only its own %d", (long long)n, NKEYS);
        atomic_fetch_add(&c->failures, 1);
    }
    if ((rc = dbpool_sandbox_checkin(own)) != 0) {
        snprintf(c->why[a->i], 256, "owner checkin: %d %s", rc, dbpool_last_error());
        atomic_fetch_add(&c->failures, 1);
    }
    return NULL;
}

static void test_sandbox_concurrent_unique_keys(void **state)
{
    (void)state;
    /* fewer connections than tests: owners also queue in the real pool */
    struct conc c = {.pool = open_sandbox("sbx_conc", 8, -1)};
    struct conc_arg args[NTESTS];
    pthread_t t[NTESTS];

    atomic_init(&c.failures, 0);
    for (int i = 0; i < NTESTS; i++) {
        args[i] = (struct conc_arg){&c, i};
        t[i] = itp_thr_start(conc_test, &args[i]);
    }
    for (int i = 0; i < NTESTS; i++)
        assert_int_equal(itp_thr_join(t[i], JOIN_MS), 0);
    for (int i = 0; i < NTESTS; i++)
        if (c.why[i][0])
            print_message("test %d: %s\n", i, c.why[i]);
    assert_int_equal(atomic_load(&c.failures), 0);
    assert_int_equal(committed_rows(), 0);
    dbpool_stats st = itp_stats(c.pool);
    assert_int_equal(st.busy, 0);
    assert_int_equal(itp_close(c.pool), 0);
}

/* ---- a test that starts worker threads and allows them --------------------- */

#define NWORKERS 4
#define PER_WORKER 10

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
};

static void gate_init(struct gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = 0;
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Bounded: a test that forgets to open the gate fails instead of hanging. */
static int gate_wait(struct gate *g)
{
    struct timespec ts;
    int e = 0;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    pthread_mutex_lock(&g->mu);
    while (!g->open && e == 0)
        e = pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    int ok = g->open;
    pthread_mutex_unlock(&g->mu);
    return ok;
}

static void gate_destroy(struct gate *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

struct workers {
    dbpool *pool;
    struct gate go;
    int base[NWORKERS];
    int rc[NWORKERS];
    char why[NWORKERS][256];
};

struct warg {
    struct workers *w;
    int i;
};

static void *worker(void *arg)
{
    struct warg *a = arg;
    struct workers *w = a->w;

    if (!gate_wait(&w->go)) {
        w->rc[a->i] = -999;
        return NULL;
    }
    for (int k = 0; k < PER_WORKER; k++) {
        int rc = insert_key(w->pool, w->base[a->i] + k);
        if (rc != 0) {
            w->rc[a->i] = rc;
            snprintf(w->why[a->i], 256, "%s", dbpool_last_error());
            break;
        }
    }
    return NULL;
}

static void test_sandbox_allowed_workers(void **state)
{
    (void)state;
    struct workers w = {.pool = open_sandbox("sbx_allow", 2, -1)};
    struct warg args[NWORKERS];
    pthread_t t[NWORKERS];
    dbpool_owner *own;
    int rc;

    gate_init(&w.go);
    assert_int_equal(dbpool_sandbox_checkout(w.pool, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    for (int i = 0; i < NWORKERS; i++) {
        w.base[i] = 1000 + 100 * i;
        args[i] = (struct warg){&w, i};
        t[i] = itp_thr_start(worker, &args[i]);
        assert_int_equal(dbpool_sandbox_allow(own, t[i]), 0);
    }
    gate_open(&w.go); /* every worker is allowed before it asks */
    for (int i = 0; i < NWORKERS; i++)
        assert_int_equal(itp_thr_join(t[i], JOIN_MS), 0);
    for (int i = 0; i < NWORKERS; i++)
        if (w.rc[i] != 0)
            fail_msg("worker %d: %d %s", i, w.rc[i], w.why[i]);
    /* the owner sees its workers' writes; nobody else does */
    assert_int_equal(q_int(w.pool, "SELECT count(*) FROM sbx_items", &rc), NWORKERS * PER_WORKER);
    assert_int_equal(rc, 0);
    assert_int_equal(committed_rows(), 0);
    assert_int_equal(dbpool_sandbox_checkin(own), 0);
    assert_int_equal(committed_rows(), 0);
    gate_destroy(&w.go);
    assert_int_equal(itp_close(w.pool), 0);
}

/* ---- the no-owner error, and passing the owner explicitly -------------------- */

struct stranger {
    dbpool *pool;
    dbpool_owner *own;
    int rc, explicit_rc, select_ok;
    char msg[600];
};

static void *stranger_thread(void *arg)
{
    struct stranger *s = arg;
    dbpool_lease l;

    s->rc = dbpool_checkout(s->pool, DBPOOL_DEFAULT_TIMEOUT, &l);
    snprintf(s->msg, sizeof(s->msg), "%s", dbpool_last_error());
    if (s->rc == 0)
        (void)dbpool_checkin(&l);
    if (s->own) {
        s->explicit_rc = dbpool_sandbox_lease(s->own, DBPOOL_DEFAULT_TIMEOUT, &l);
        if (s->explicit_rc == 0) {
            s->select_ok = itp_select1(&l);
            (void)dbpool_checkin(&l);
        }
    }
    return NULL;
}

static void test_sandbox_unallowed_thread(void **state)
{
    (void)state;
    struct stranger s = {.pool = open_sandbox("sbx_noowner", 2, -1)};

    /* no owner anywhere */
    assert_int_equal(itp_thr_join(itp_thr_start(stranger_thread, &s), JOIN_MS), 0);
    assert_int_equal(s.rc, DBPOOL_ENOOWNER);
    assert_non_null(strstr(s.msg, "dbpool_sandbox_checkout"));
    assert_non_null(strstr(s.msg, "dbpool_sandbox_allow"));
    assert_non_null(strstr(s.msg, "DBPOOL_SANDBOX_SHARED"));
    assert_non_null(strstr(s.msg, "dbpool_sandbox_lease"));

    /* an owner exists but did not allow the thread; the explicit owner works */
    assert_int_equal(dbpool_sandbox_checkout(s.pool, DBPOOL_DEFAULT_TIMEOUT, &s.own), 0);
    assert_int_equal(itp_thr_join(itp_thr_start(stranger_thread, &s), JOIN_MS), 0);
    assert_int_equal(s.rc, DBPOOL_ENOOWNER);
    assert_int_equal(s.explicit_rc, 0);
    assert_int_equal(s.select_ok, 1);
    assert_int_equal(dbpool_sandbox_checkin(s.own), 0);
    assert_int_equal(itp_close(s.pool), 0);
}

/* ---- shared mode ----------------------------------------------------------- */

struct shared_arg {
    dbpool *pool;
    int key, rc;
};

static void *shared_insert(void *arg)
{
    struct shared_arg *a = arg;

    a->rc = insert_key(a->pool, a->key);
    return NULL;
}

static void test_sandbox_shared_mode(void **state)
{
    (void)state;
    dbpool *p = open_sandbox("sbx_shared", 2, -1);
    dbpool_owner *own, *found;
    struct shared_arg a = {p, 7, 0};
    int rc;

    assert_int_equal(dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    assert_int_equal(dbpool_sandbox_mode_set(p, DBPOOL_SANDBOX_SHARED, NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_sandbox_mode_set(p, DBPOOL_SANDBOX_SHARED, own), 0);
    /* a thread nobody allowed uses the shared owner */
    assert_int_equal(itp_thr_join(itp_thr_start(shared_insert, &a), JOIN_MS), 0);
    assert_int_equal(a.rc, 0);
    assert_int_equal(q_int(p, "SELECT count(*) FROM sbx_items WHERE k = 7", &rc), 1);
    assert_int_equal(committed_rows(), 0);
    assert_int_equal(dbpool_sandbox_owner(p, &found), 0);
    assert_ptr_equal(found, own);
    /* the shared owner ends: back to manual mode, strangers get the error */
    assert_int_equal(dbpool_sandbox_checkin(own), 0);
    a.key = 8;
    assert_int_equal(itp_thr_join(itp_thr_start(shared_insert, &a), JOIN_MS), 0);
    assert_int_equal(a.rc, DBPOOL_ENOOWNER);
    assert_int_equal(committed_rows(), 0);
    assert_int_equal(itp_close(p), 0);
}

/* ---- auto mode -------------------------------------------------------------- */

static void test_sandbox_auto_mode(void **state)
{
    (void)state;
    dbpool *p = open_sandbox("sbx_auto", 2, -1);
    dbpool_owner *own;
    int rc;

    assert_int_equal(dbpool_sandbox_mode_set(p, DBPOOL_SANDBOX_AUTO, NULL), 0);
    assert_int_equal(dbpool_sandbox_owner(p, &own), 0);
    assert_null(own);
    assert_int_equal(insert_key(p, 11), 0); /* creates this thread's owner */
    assert_int_equal(dbpool_sandbox_owner(p, &own), 0);
    assert_non_null(own);
    assert_int_equal(q_int(p, "SELECT count(*) FROM sbx_items", &rc), 1);
    assert_int_equal(committed_rows(), 0);
    assert_int_equal(dbpool_sandbox_checkin(own), 0);
    assert_int_equal(committed_rows(), 0);
    assert_int_equal(itp_close(p), 0);
}

/* ---- ownership_timeout ------------------------------------------------------ */

static int pred_hold_timeouts(const dbpool_stats *st, int64_t n)
{
    return (int64_t)st->hold_timeouts >= n;
}

static int pred_idle(const dbpool_stats *st, int64_t n)
{
    return st->idle >= n && st->busy == 0;
}

static void test_sandbox_ownership_timeout(void **state)
{
    (void)state;
    dbpool *p = open_sandbox("sbx_timeout", 1, 200);
    dbpool_owner *own;
    dbpool_lease l;

    assert_int_equal(dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    assert_int_equal(insert_key(p, 21), 0);
    /* the manager fires the owner's timeout (bounded wait on the condition) */
    assert_true(itp_wait_stats(p, pred_hold_timeouts, 1, 10000));
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), DBPOOL_EEXPIRED);
    assert_non_null(strstr(dbpool_last_error(), "ownership_timeout"));
    assert_int_equal(dbpool_sandbox_checkin(own), DBPOOL_EEXPIRED);
    assert_non_null(strstr(dbpool_last_error(), "ownership_timeout"));
    /* the connection was discarded (its transaction with it) and replaced */
    assert_true(itp_wait_stats(p, pred_idle, 1, 10000));
    assert_int_equal(committed_rows(), 0);
    assert_int_equal(itp_close(p), 0);
}

/* An owner abandoned past its ownership_timeout (a thread that never checks
 * its owner in) does not keep the pool's only connection: the next thread
 * that asks the sandbox for one gets it back. */
struct newcomer {
    dbpool *pool;
    int rc, end_rc;
};

static void *newcomer_thread(void *arg)
{
    struct newcomer *n = arg;
    dbpool_owner *own;

    n->rc = dbpool_sandbox_checkout(n->pool, 10000, &own);
    if (n->rc == 0)
        n->end_rc = dbpool_sandbox_checkin(own);
    return NULL;
}

static void test_sandbox_ownership_timeout_abandoned(void **state)
{
    (void)state;
    dbpool *p = open_sandbox("sbx_abandon", 1, 200);
    dbpool_owner *own;
    dbpool_lease l;
    struct newcomer n = {p, -999, -999};

    assert_int_equal(dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    assert_int_equal(insert_key(p, 22), 0);
    assert_true(itp_wait_stats(p, pred_hold_timeouts, 1, 10000));
    /* size 1: the newcomer gets a connection only if the expired owner's
     * comes back */
    assert_int_equal(itp_thr_join(itp_thr_start(newcomer_thread, &n), JOIN_MS), 0);
    assert_int_equal(n.rc, 0);
    assert_int_equal(n.end_rc, 0);
    /* the slow owner learns what happened; its handle is still safe */
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), DBPOOL_EEXPIRED);
    assert_int_equal(dbpool_sandbox_checkin(own), DBPOOL_EEXPIRED);
    assert_non_null(strstr(dbpool_last_error(), "ownership_timeout"));
    assert_int_equal(committed_rows(), 0);
    assert_int_equal(itp_close(p), 0);
}

/* ---- the owner ends while an allowed thread holds its connection ------------- */

struct holder {
    dbpool *pool;
    struct gate allowed, holding, go;
    int checkout_rc, insert_rc, select_ok, checkin_rc, again_rc;
};

static void *holder_thread(void *arg)
{
    struct holder *h = arg;
    dbpool_lease l;

    h->checkout_rc =
        gate_wait(&h->allowed) ? dbpool_checkout(h->pool, DBPOOL_DEFAULT_TIMEOUT, &l) : -999;
    gate_open(&h->holding);
    if (h->checkout_rc != 0)
        return NULL;
    if (!gate_wait(&h->go)) {
        (void)dbpool_checkin(&l);
        return NULL;
    }
    /* the owner has ended: the lease still works until we check it in */
    h->insert_rc = dbpool_pg_exec(&l, "INSERT INTO sbx_items(k) VALUES (31)", NULL, NULL, NULL);
    h->select_ok = itp_select1(&l);
    h->checkin_rc = dbpool_checkin(&l);
    /* and the allowance died with the owner */
    h->again_rc = dbpool_checkout(h->pool, DBPOOL_DEFAULT_TIMEOUT, &l);
    if (h->again_rc == 0)
        (void)dbpool_checkin(&l);
    return NULL;
}

static void test_sandbox_owner_ends_while_held(void **state)
{
    (void)state;
    struct holder h = {.pool = open_sandbox("sbx_held", 1, -1)};
    dbpool_owner *own;

    gate_init(&h.allowed);
    gate_init(&h.holding);
    gate_init(&h.go);
    assert_int_equal(dbpool_sandbox_checkout(h.pool, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    pthread_t t = itp_thr_start(holder_thread, &h);
    assert_int_equal(dbpool_sandbox_allow(own, t), 0);
    gate_open(&h.allowed);
    assert_true(gate_wait(&h.holding));
    assert_int_equal(h.checkout_rc, 0);
    assert_int_equal(dbpool_sandbox_checkin(own), DBPOOL_EBUSY);
    assert_non_null(strstr(dbpool_last_error(), "check-in rolls"));
    gate_open(&h.go);
    assert_int_equal(itp_thr_join(t, JOIN_MS), 0);
    assert_int_equal(h.checkout_rc, 0);
    assert_int_equal(h.insert_rc, 0);
    assert_int_equal(h.select_ok, 1);
    assert_int_equal(h.checkin_rc, 0);
    assert_int_equal(h.again_rc, DBPOOL_ENOOWNER);
    /* the holder's check-in rolled back and gave the connection back */
    assert_true(itp_wait_stats(h.pool, pred_idle, 1, 10000));
    assert_int_equal(committed_rows(), 0);
    gate_destroy(&h.allowed);
    gate_destroy(&h.holding);
    gate_destroy(&h.go);
    assert_int_equal(itp_close(h.pool), 0);
}

/* ---- transactions become savepoints ------------------------------------------ */

static int tx_insert(dbpool_lease *tx, void *arg)
{
    char sql[96];

    snprintf(sql, sizeof(sql), "INSERT INTO sbx_items(k) VALUES (%d)", *(int *)arg);
    return dbpool_pg_exec(tx, sql, NULL, NULL, NULL);
}

static int tx_fail_after_insert(dbpool_lease *tx, void *arg)
{
    int rc = tx_insert(tx, arg);
    return rc != 0 ? rc : -42;
}

struct outer_arg {
    int inner_rc;
};

static int tx_outer(dbpool_lease *tx, void *arg)
{
    struct outer_arg *o = arg;
    int k1 = 41, k2 = 42;
    int rc = tx_insert(tx, &k1);

    if (rc != 0)
        return rc;
    /* a nested level that fails: rolled back to its savepoint only */
    o->inner_rc = dbpool_pg_transaction_lease(tx, tx_fail_after_insert, &k2, NULL);
    return 0;
}

static void test_sandbox_nested_transactions(void **state)
{
    (void)state;
    dbpool *p = open_sandbox("sbx_tx", 2, -1);
    dbpool_owner *own;
    struct outer_arg oa = {0};
    int k = 43, rc;

    assert_int_equal(dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    assert_int_equal(dbpool_pg_transaction(p, tx_outer, &oa, NULL, NULL), 0);
    assert_int_equal(oa.inner_rc, -42);
    assert_int_equal(q_int(p, "SELECT count(*) FROM sbx_items WHERE k = 41", &rc), 1);
    assert_int_equal(q_int(p, "SELECT count(*) FROM sbx_items WHERE k = 42", &rc), 0);
    /* a transaction that fails is undone, what came before stays */
    assert_int_equal(dbpool_pg_transaction(p, tx_fail_after_insert, &k, NULL, NULL), -42);
    assert_int_equal(q_int(p, "SELECT count(*) FROM sbx_items WHERE k = 43", &rc), 0);
    assert_int_equal(q_int(p, "SELECT count(*) FROM sbx_items", &rc), 1);
    /* a failed statement does not poison the owner's transaction (each
     * lease runs in a savepoint) */
    assert_int_equal(insert_key(p, 41), DBPOOL_EQUERY); /* unique violation */
    assert_int_equal(q_int(p, "SELECT count(*) FROM sbx_items", &rc), 1);
    assert_int_equal(rc, 0);
    /* "committed" transactions were savepoints: nothing is visible outside */
    assert_int_equal(committed_rows(), 0);
    assert_int_equal(dbpool_sandbox_checkin(own), 0);
    assert_int_equal(committed_rows(), 0);
    assert_int_equal(itp_close(p), 0);
}

/* ---- a raw COMMIT is caught ---------------------------------------------------- */

static void test_sandbox_raw_commit_caught(void **state)
{
    (void)state;
    dbpool *p = open_sandbox("sbx_commit", 2, -1);
    dbpool_owner *own;
    dbpool_lease l;
    int rc;

    assert_int_equal(dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    assert_int_equal(insert_key(p, 51), 0);
    /* through the helper: the statement's own call reports it */
    assert_int_equal(dbpool_pg_query(p, "COMMIT", NULL, NULL, NULL), DBPOOL_ETXENDED);
    assert_non_null(strstr(dbpool_last_error(), "COMMIT"));
    /* that is exactly the danger: the write before it really committed */
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM sbx_items WHERE k = 51"), 1);
    /* the sandbox began a new transaction: later writes stay isolated */
    assert_int_equal(insert_key(p, 52), 0);
    assert_int_equal(q_int(p, "SELECT count(*) FROM sbx_items WHERE k = 52", &rc), 1);
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM sbx_items WHERE k = 52"), 0);
    /* plain libpq on a lease: caught at dbpool_checkin */
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    PQclear(PQexec(dbpool_pg_conn(&l), "ROLLBACK"));
    assert_int_equal(dbpool_checkin(&l), DBPOOL_ETXENDED);
    assert_int_equal(q_int(p, "SELECT count(*) FROM sbx_items WHERE k = 52", &rc), 0);
    /* and the owner's end says so too */
    assert_int_equal(dbpool_sandbox_checkin(own), DBPOOL_ETXENDED);
    assert_non_null(strstr(dbpool_last_error(), "2 time(s)"));
    assert_int_equal(pgt_exec(&srv, "DELETE FROM sbx_items"), 0);
    assert_int_equal(itp_close(p), 0);
}

/* ---- misuse ----------------------------------------------------------------------- */

static void test_sandbox_misuse(void **state)
{
    (void)state;
    dbpool_config cfg;
    dbpool_owner *own, *two;
    dbpool_lease l, l2;

    fast_config(&cfg, 2);
    dbpool *plain = itp_open(&srv, "sbx_plain", &cfg);
    assert_int_equal(dbpool_sandbox_checkout(plain, DBPOOL_DEFAULT_TIMEOUT, &own), DBPOOL_EINVAL);
    assert_int_equal(dbpool_sandbox_enable(NULL, NULL), DBPOOL_EINVAL);
    dbpool *p = open_sandbox("sbx_misuse", 2, -1);
    assert_int_equal(dbpool_sandbox_enable(p, NULL), DBPOOL_EINVAL); /* twice */
    assert_int_equal(dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    assert_int_equal(dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &two), DBPOOL_EINVAL);
    /* one connection per owner: a second lease from the same thread fails
     * at once instead of waiting for itself */
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l2), DBPOOL_EBUSY);
    dbpool_lease copy = l;
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(dbpool_checkin(&copy), DBPOOL_ESTALE);
    assert_null(dbpool_pg_conn(&copy));
    /* a discarded lease: the owner's connection is unusable from then on */
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    assert_int_equal(dbpool_discard(&l), 0);
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), DBPOOL_ECONNLOST);
    assert_int_equal(dbpool_sandbox_checkin(own), 0);
    assert_true(itp_wait_stats(p, pred_idle, 2, 10000)); /* closed and replaced */
    assert_int_equal(dbpool_sandbox_allow(NULL, pthread_self()), DBPOOL_EINVAL);
    assert_int_equal(dbpool_sandbox_checkin(NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_sandbox_lease(NULL, 0, &l), DBPOOL_EINVAL);
    assert_int_equal(dbpool_sandbox_mode_set(p, (dbpool_sandbox_mode)7, NULL), DBPOOL_EINVAL);
    assert_int_equal(itp_close(p), 0);
    assert_int_equal(itp_close(plain), 0);
}

/* ---- a registry's tenant pool ------------------------------------------------ */

static int resolve_tenant(void *arg, const char *tenant, char *conninfo, size_t len,
                          dbpool_config *cfg)
{
    (void)arg;
    (void)cfg;
    snprintf(conninfo, len, "%s application_name=sbx_tenant_%s", srv.conninfo, tenant);
    return 0;
}

struct tenant_arg {
    dbpool_registry *reg;
    int rc;
    int64_t seen;
};

/* A test of its own on the tenant's pool, checking out through the registry. */
static void *tenant_test(void *arg)
{
    struct tenant_arg *a = arg;
    dbpool *p;
    dbpool_owner *own;
    dbpool_lease l;

    if ((a->rc = dbpool_registry_get(a->reg, "acme", &p)) != 0)
        return NULL;
    if ((a->rc = dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &own)) == 0) {
        a->rc = insert_key(p, 61);
        if (a->rc == 0 &&
            (a->rc = dbpool_registry_checkout(a->reg, "acme", DBPOOL_DEFAULT_TIMEOUT, &l)) == 0) {
            PGresult *r = PQexec(dbpool_pg_conn(&l), "SELECT count(*) FROM sbx_items");
            a->seen = PQresultStatus(r) == PGRES_TUPLES_OK ? atoll(PQgetvalue(r, 0, 0)) : -1;
            PQclear(r);
            a->rc = dbpool_checkin(&l);
        }
        int crc = dbpool_sandbox_checkin(own);
        if (a->rc == 0)
            a->rc = crc;
    }
    dbpool_registry_put(a->reg, p);
    return NULL;
}

static void test_sandbox_registry_tenant(void **state)
{
    (void)state;
    dbpool_registry_config rc;
    dbpool_registry *reg;
    dbpool *p;
    struct tenant_arg a[4];
    pthread_t t[4];

    dbpool_registry_config_init(&rc);
    rc.resolve = resolve_tenant;
    rc.tenant.checkout_timeout = 30000;
    assert_int_equal(dbpool_registry_open(&reg, &rc), 0);
    /* pinned for the whole suite: a reclaimed tenant pool would take its
     * sandbox with it */
    assert_int_equal(dbpool_registry_get(reg, "acme", &p), 0);
    assert_int_equal(dbpool_sandbox_enable(p, NULL), 0);
    for (int i = 0; i < 4; i++) {
        a[i] = (struct tenant_arg){reg, -999, -1};
        t[i] = itp_thr_start(tenant_test, &a[i]);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(itp_thr_join(t[i], JOIN_MS), 0);
    for (int i = 0; i < 4; i++) {
        if (a[i].rc != 0)
            fail_msg("tenant test %d: %d", i, a[i].rc);
        assert_int_equal(a[i].seen, 1); /* its own row only */
    }
    assert_int_equal(committed_rows(), 0);
    dbpool_registry_put(reg, p);
    assert_int_equal(dbpool_registry_close(reg), 0);
}

static int group_setup(void **state)
{
    (void)state;
    if (pgt_start(&srv) != 0)
        return -1;
    return pgt_exec(&srv, "CREATE TABLE sbx_items (k int PRIMARY KEY)") == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    itp_close_all();
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sandbox_concurrent_unique_keys),
        cmocka_unit_test(test_sandbox_allowed_workers),
        cmocka_unit_test(test_sandbox_unallowed_thread),
        cmocka_unit_test(test_sandbox_shared_mode),
        cmocka_unit_test(test_sandbox_auto_mode),
        cmocka_unit_test(test_sandbox_ownership_timeout),
        cmocka_unit_test(test_sandbox_ownership_timeout_abandoned),
        cmocka_unit_test(test_sandbox_owner_ends_while_held),
        cmocka_unit_test(test_sandbox_nested_transactions),
        cmocka_unit_test(test_sandbox_raw_commit_caught),
        cmocka_unit_test(test_sandbox_misuse),
        cmocka_unit_test(test_sandbox_registry_tenant),
    };
    return cmocka_run_group_tests_name("it_sandbox", tests, group_setup, group_teardown);
}
