/* it_pgbouncer.c - the query helpers through a real PgBouncer in transaction
 * pooling mode (unnamed statements only), including a PgBouncer restart in
 * the middle of a 32-thread run.
 *
 * What the restart test asserts:
 *   - before the restart every call succeeds;
 *   - during it every call returns, within its own deadline, either success or
 *     a definite error code;
 *   - every transaction that returned 0 is in the table, every one that
 *     returned an error other than DBPOOL_ECOMMIT_UNKNOWN is not;
 *   - once the pool has reconnected, every call succeeds again. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
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
#include "pgbouncer.h"
#include "pgserver.h"

static pgt_server srv;
static pgb_server bouncer;

#define THREADS 32
#define POOL_SIZE 4
#define CHECKOUT_TIMEOUT 3000
#define STATEMENT_TIMEOUT 2000
#define CANCEL_GRACE 1000
#define MAX_TX_PER_THREAD 20000

static void config(dbpool_config *cfg)
{
    dbpool_config_init(cfg);
    cfg->size = POOL_SIZE;
    cfg->lifo = 1; /* PgBouncer friendly */
    cfg->idle_interval = 200;
    cfg->backoff_min = 50;
    cfg->backoff_max = 300;
    cfg->connect_timeout = 2000;
    cfg->checkout_timeout = CHECKOUT_TIMEOUT;
    cfg->queue_target = 1000;   /* 32 threads on 4 connections queue by design: */
    cfg->queue_interval = 5000; /* this test is not about CoDel drops */
    cfg->log_level = DBPOOL_LOG_NONE;
}

static dbpool *open_bounced_pool(const char *app)
{
    char ci[700];
    dbpool_config cfg;
    dbpool *p = NULL;
    config(&cfg);
    snprintf(ci, sizeof ci, "%s application_name=%s", bouncer.conninfo, app);
    int rc = dbpool_pg_open(&p, ci, &cfg);
    if (rc != 0)
        fail_msg("dbpool_pg_open: %d %s", rc, dbpool_last_error());
    return p;
}

static void unnamed_opts(dbpool_pg_opts *o)
{
    dbpool_pg_opts_init(o);
    o->unnamed = 1; /* PgBouncer transaction mode: no named statements */
    o->statement_timeout = STATEMENT_TIMEOUT;
    o->cancel_grace = CANCEL_GRACE;
}

static int64_t now_ms(void)
{
    return pgt_now_ms();
}

/* ---------------------------------------------------------------------- */

struct txarg {
    long long id;
    const dbpool_pg_opts *o;
};

static int nested_cb(dbpool_lease *tx, void *arg)
{
    struct txarg *a = arg;
    return dbpool_pg_exec_prepared(tx, "SELECT count(*) FROM pgb_t", NULL, a->o, NULL);
}

static int tx_cb(dbpool_lease *tx, void *arg)
{
    struct txarg *a = arg;
    char id[32];
    snprintf(id, sizeof id, "%lld", a->id);
    const char *v[] = {id};
    dbpool_pg_params prm = {.n = 1, .values = v};
    int rc =
        dbpool_pg_exec_prepared(tx, "INSERT INTO pgb_t (id) VALUES ($1::bigint)", &prm, a->o, NULL);
    if (rc != 0)
        return rc;
    dbpool_pg_tx_opts no;
    dbpool_pg_tx_opts_init(&no);
    no.query = *a->o;
    return dbpool_pg_transaction_lease(tx, nested_cb, a, &no);
}

static void test_helpers_through_pgbouncer(void **state)
{
    (void)state;
    dbpool *p = open_bounced_pool("pgb_basic");
    dbpool_pg_opts o;
    dbpool_pg_result r;
    unnamed_opts(&o);

    for (int i = 0; i < 20; i++) {
        char v[16], want[16];
        snprintf(v, sizeof v, "%d", i);
        snprintf(want, sizeof want, "%d", i + 1);
        const char *vals[] = {v};
        dbpool_pg_params prm = {.n = 1, .values = vals};
        assert_int_equal(dbpool_pg_query_prepared(p, "SELECT $1::int + 1", &prm, &o, &r), 0);
        assert_string_equal(PQgetvalue(r.res, 0, 0), want);
        dbpool_pg_result_clear(&r);
    }
    dbpool_pg_tx_opts to;
    dbpool_pg_tx_opts_init(&to);
    to.query = o;
    struct txarg a = {.id = -1, .o = &o};
    assert_int_equal(dbpool_pg_transaction(p, tx_cb, &a, &to, NULL), 0);
    assert_int_equal(pgt_query_int(&srv, "SELECT count(*) FROM pgb_t WHERE id = -1"), 1);

    /* the statement timeout cancels through PgBouncer */
    o.statement_timeout = 300;
    int64_t t0 = now_ms();
    assert_int_equal(dbpool_pg_query(p, "SELECT pg_sleep(5)", NULL, &o, NULL), DBPOOL_ETIMEDOUT);
    assert_true(now_ms() - t0 < 2000);
    o.statement_timeout = STATEMENT_TIMEOUT;
    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, &o, NULL), 0);

    /* nothing was ever prepared by name on the servers */
    assert_int_equal(
        dbpool_pg_query(p, "SELECT count(*) FROM pg_prepared_statements", NULL, &o, &r), 0);
    assert_string_equal(PQgetvalue(r.res, 0, 0), "0");
    dbpool_pg_result_clear(&r);
    assert_int_equal(dbpool_close(p), 0);
}

/* ---------------------------------------------------------------------- */

enum { PH_BEFORE = 0, PH_RESTART = 1, PH_AFTER = 2, PH_STOP = 3, NPHASES = 3 };

static atomic_int phase;

struct tx_record {
    long long id;
    int rc;
};

struct worker {
    int index;
    dbpool *pool;
    /* per phase (of the call's start): successes, failures */
    int ok[NPHASES], failed[NPHASES];
    int bad_code; /* a code that is not a definite outcome */
    int late;     /* a call that overran its deadline */
    int wrong;    /* a wrong result */
    char first_failure[NPHASES][256];
    int64_t worst_ms;
    int codes[16]; /* during the restart: failures by -code */
    int retried;   /* calls that skipped a dead connection */
    struct tx_record *tx;
    int ntx;
};

/* Error codes a helper may end with when the database goes away: each says
 * for certain what happened (or, for ECOMMIT_UNKNOWN and EUNKNOWN, that
 * nobody can know). */
static int definite(int rc)
{
    switch (rc) {
    case 0:
    case DBPOOL_EQUERY:
    case DBPOOL_ECONNLOST:
    case DBPOOL_ECOMMIT_UNKNOWN:
    case DBPOOL_EUNKNOWN:
    case DBPOOL_ETIMEDOUT:
    case DBPOOL_EUNAVAILABLE:
    case DBPOOL_EDROPPED:
        return 1;
    default:
        return 0;
    }
}

static void note(struct worker *w, int ph, int rc, int64_t took, int64_t bound)
{
    if (rc == 0) {
        w->ok[ph]++;
    } else {
        if (w->failed[ph]++ == 0)
            snprintf(w->first_failure[ph], sizeof w->first_failure[ph], "%d %s: %s", rc,
                     dbpool_strerror(rc), dbpool_last_error());
    }
    if (!definite(rc))
        w->bad_code = rc;
    if (ph == PH_RESTART && rc < 0 && rc > -16)
        w->codes[-rc]++;
    if (took > bound)
        w->late++;
    if (took > w->worst_ms)
        w->worst_ms = took;
}

static void *worker_fn(void *arg)
{
    struct worker *w = arg;
    dbpool_pg_opts o;
    dbpool_pg_tx_opts to;
    unnamed_opts(&o);
    dbpool_pg_tx_opts_init(&to);
    to.query = o;
    /* a call's own deadline: each checkout (one more per dead connection
     * skipped), plus statement timeout and cancel grace, plus slack */
    const int64_t per_stmt = STATEMENT_TIMEOUT + CANCEL_GRACE;

    for (long long i = 0;; i++) {
        int ph = atomic_load(&phase);
        if (ph == PH_STOP)
            break;
        int64_t t0 = now_ms(), bound;
        int rc;
        if (i % 3 != 2) {
            char v[24], want[24];
            snprintf(v, sizeof v, "%lld", i);
            snprintf(want, sizeof want, "%lld", i + 1);
            const char *vals[] = {v};
            dbpool_pg_params prm = {.n = 1, .values = vals};
            dbpool_pg_result r;
            rc = i % 3 == 0
                     ? dbpool_pg_query_prepared(w->pool, "SELECT $1::bigint + 1", &prm, &o, &r)
                     : dbpool_pg_query(w->pool, "SELECT $1::bigint + 1 FROM pg_sleep(0.002)", &prm,
                                       &o, &r);
            if (rc == 0 && strcmp(PQgetvalue(r.res, 0, 0), want) != 0)
                w->wrong++;
            bound = (int64_t)(1 + r.retries) * CHECKOUT_TIMEOUT + per_stmt + 1000;
            w->retried += r.retries > 0;
            dbpool_pg_result_clear(&r);
        } else {
            struct txarg a = {.id = (long long)w->index * 1000000 + i, .o = &o};
            dbpool_pg_timings tm;
            rc = dbpool_pg_transaction(w->pool, tx_cb, &a, &to, &tm);
            if (w->ntx < MAX_TX_PER_THREAD)
                w->tx[w->ntx++] = (struct tx_record){a.id, rc};
            /* BEGIN, INSERT, SAVEPOINT, SELECT, RELEASE, COMMIT per attempt */
            bound = (int64_t)tm.attempts * (CHECKOUT_TIMEOUT + 6 * per_stmt) + 1000;
            w->retried += tm.attempts > 1;
        }
        /* a call that overlapped the restart belongs to it */
        if (ph == PH_BEFORE && atomic_load(&phase) != PH_BEFORE)
            ph = PH_RESTART;
        note(w, ph, rc, now_ms() - t0, bound);
        if (rc != 0)
            usleep(1000); /* a real client would not spin on a down database either */
    }
    return NULL;
}

static int pool_whole(dbpool *p)
{
    dbpool_stats st;
    if (dbpool_stats_get(p, &st) != 0)
        return 0;
    return st.state == DBPOOL_STATE_UP && st.idle + st.busy == st.size;
}

static void run_for(int64_t ms)
{
    int64_t end = now_ms() + ms;
    while (now_ms() < end)
        usleep(20000);
}

static void test_restart_mid_run(void **state)
{
    (void)state;
    dbpool *p = open_bounced_pool("pgb_restart");
    static struct worker w[THREADS];
    pthread_t t[THREADS];

    atomic_store(&phase, PH_BEFORE);
    memset(w, 0, sizeof w);
    for (int i = 0; i < THREADS; i++) {
        w[i].index = i + 1;
        w[i].pool = p;
        w[i].tx = calloc(MAX_TX_PER_THREAD, sizeof *w[i].tx);
        assert_non_null(w[i].tx);
        assert_int_equal(pthread_create(&t[i], NULL, worker_fn, &w[i]), 0);
    }

    run_for(1500);
    atomic_store(&phase, PH_RESTART);
    int64_t t0 = now_ms();
    assert_int_equal(pgb_stop(&bouncer, SIGTERM), 0);
    usleep(300000); /* down for a moment: connects are refused */
    assert_int_equal(pgb_resume(&bouncer), 0);
    int64_t down_ms = now_ms() - t0;
    /* wait until every slot has reconnected, then the calls must all succeed */
    int64_t t1 = now_ms();
    int whole = 0;
    while (!(whole = pool_whole(p)) && now_ms() - t1 < 10000)
        usleep(20000);
    int64_t recover_ms = now_ms() - t1;
    run_for(200);
    atomic_store(&phase, PH_AFTER);
    run_for(2000);
    atomic_store(&phase, PH_STOP);

    int hung = 0;
    for (int i = 0; i < THREADS; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 30;
        if (pthread_timedjoin_np(t[i], NULL, &ts) != 0)
            hung = 1;
    }
    assert_false(hung);
    assert_true(whole);

    int ok[NPHASES] = {0}, failed[NPHASES] = {0}, late = 0, wrong = 0, bad = 0;
    int64_t worst = 0;
    for (int i = 0; i < THREADS; i++) {
        for (int ph = 0; ph < NPHASES; ph++) {
            ok[ph] += w[i].ok[ph];
            failed[ph] += w[i].failed[ph];
        }
        late += w[i].late;
        wrong += w[i].wrong;
        if (w[i].bad_code)
            bad = w[i].bad_code;
        if (w[i].worst_ms > worst)
            worst = w[i].worst_ms;
    }
    print_message("pgbouncer restart: down %lld ms, pool whole again after %lld ms; "
                  "before %d ok / %d failed, during %d ok / %d failed, after %d ok / %d "
                  "failed; slowest call %lld ms\n",
                  (long long)down_ms, (long long)recover_ms, ok[0], failed[0], ok[1], failed[1],
                  ok[2], failed[2], (long long)worst);
    int codes[16] = {0}, retried = 0;
    for (int i = 0; i < THREADS; i++) {
        retried += w[i].retried;
        for (int k = 0; k < 16; k++)
            codes[k] += w[i].codes[k];
    }
    for (int k = 1; k < 16; k++)
        if (codes[k])
            print_message("  during: %6d x %s\n", codes[k], dbpool_strerror(-k));
    print_message("  calls that skipped a dead connection and succeeded or failed "
                  "definitely: %d\n",
                  retried);

    for (int i = 0; i < THREADS; i++) {
        if (w[i].failed[PH_BEFORE])
            fail_msg("a call failed before the restart: %s", w[i].first_failure[PH_BEFORE]);
        if (w[i].failed[PH_AFTER])
            fail_msg("a call failed after the pool recovered: %s", w[i].first_failure[PH_AFTER]);
    }
    assert_int_equal(bad, 0);
    assert_int_equal(late, 0);
    assert_int_equal(wrong, 0);
    assert_true(ok[PH_BEFORE] > 100);
    assert_true(ok[PH_AFTER] > 100);

    /* transactions: every answer was true */
    int committed = 0, unknown = 0, lies = 0;
    char msg[256] = "";
    PGconn *c = PQconnectdb(srv.conninfo);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    for (int i = 0; i < THREADS; i++) {
        for (int k = 0; k < w[i].ntx; k++) {
            char id[32];
            snprintf(id, sizeof id, "%lld", w[i].tx[k].id);
            const char *v[] = {id};
            PGresult *r = PQexecParams(c, "SELECT count(*) FROM pgb_t WHERE id = $1::bigint", 1,
                                       NULL, v, NULL, NULL, 0);
            assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
            int present = atoi(PQgetvalue(r, 0, 0));
            PQclear(r);
            int rc = w[i].tx[k].rc;
            if (rc == 0)
                committed++;
            if (rc == DBPOOL_ECOMMIT_UNKNOWN) {
                unknown++;
                continue;
            }
            if ((rc == 0) != (present == 1)) {
                if (!lies++)
                    snprintf(msg, sizeof msg, "transaction %s returned %d but row present=%d", id,
                             rc, present);
            }
        }
        free(w[i].tx);
    }
    PQfinish(c);
    print_message("transactions: %d committed, %d with unknown outcome\n", committed, unknown);
    if (lies)
        fail_msg("%d transactions were reported wrongly, e.g. %s", lies, msg);
    assert_int_equal(dbpool_close(p), 0);
}

/* ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (pgt_start(&srv) != 0)
        return -1;
    if (pgt_exec(&srv, "CREATE TABLE pgb_t (id bigint PRIMARY KEY)") != 0 ||
        pgb_start(&bouncer, &srv, "transaction", POOL_SIZE) != 0) {
        pgt_destroy(&srv);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pgb_destroy(&bouncer);
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    alarm(240); /* last resort against a hang */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_helpers_through_pgbouncer),
        cmocka_unit_test(test_restart_mid_run),
    };
    return cmocka_run_group_tests_name("it_pgbouncer", tests, group_setup, group_teardown);
}
