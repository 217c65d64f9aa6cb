/* unit_sandbox.c - the sandbox's owners (src/core/ownership.c) on the stub
 * driver, with SQL steps faked: callers of one owner are served in arrival
 * order, a queued caller times out by its deadline, an owner ending fails
 * its queue, and a transaction ended by the code under test is reported.
 * The PostgreSQL side is tests/it_sandbox.c. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "clock.h"
#include "dbpool.h"
#include "dbpool_sandbox.h"
#include "ownership.h"
#include "stub_driver.h"

static atomic_int begins, lease_starts, end_next;

static int fake_begin(dbpool_lease *l)
{
    (void)l;
    atomic_fetch_add(&begins, 1);
    return 0;
}

static int fake_lease_start(dbpool_lease *l)
{
    (void)l;
    atomic_fetch_add(&lease_starts, 1);
    return 1;
}

static int fake_lease_end(dbpool_lease *l, int had_sp, char *msg, size_t len)
{
    (void)l;
    (void)had_sp;
    int r = atomic_exchange(&end_next, SBX_OK);
    if (r == SBX_ENDED)
        snprintf(msg, len, "fake: the code under test committed");
    return r;
}

static const struct sandbox_ops fake_ops = {fake_begin, fake_lease_start, fake_lease_end};

static dbpool *open_stub(void)
{
    dbpool_config cfg;
    dbpool *p = NULL;

    dbpool_config_init(&cfg);
    cfg.size = 2;
    cfg.log_level = DBPOOL_LOG_NONE;
    assert_int_equal(dbpool_open(&p, &stub_driver, NULL, &cfg), 0);
    assert_int_equal(sandbox_enable(p, &fake_ops, NULL), 0);
    return p;
}

/* Bounded wait for n queued callers; 1 if reached. */
static int wait_queued(dbpool *p, int n)
{
    int64_t until = clock_ms() + 10000;
    struct timespec ms = {0, 1000000};

    while (sandbox_queued(p) != n) {
        if (clock_ms() > until)
            return 0;
        nanosleep(&ms, NULL);
    }
    return 1;
}

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
};

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static int gate_wait(struct gate *g)
{
    struct timespec ts;
    int e = 0;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&g->mu);
    while (!g->open && e == 0)
        e = pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    int ok = g->open;
    pthread_mutex_unlock(&g->mu);
    return ok;
}

struct caller {
    dbpool *pool;
    struct gate go;
    int64_t timeout;
    int rc, order, checkin_rc;
    atomic_int *seq;
};

static void *caller_thread(void *arg)
{
    struct caller *c = arg;
    dbpool_lease l;

    if (!gate_wait(&c->go)) {
        c->rc = -999;
        return NULL;
    }
    c->rc = dbpool_checkout(c->pool, c->timeout, &l);
    if (c->rc == 0) {
        c->order = atomic_fetch_add(c->seq, 1);
        c->checkin_rc = dbpool_checkin(&l);
    }
    return NULL;
}

static void start_caller(struct caller *c, dbpool *p, dbpool_owner *own, int64_t timeout,
                         atomic_int *seq, pthread_t *t)
{
    memset(c, 0, sizeof(*c));
    c->pool = p;
    c->timeout = timeout;
    c->seq = seq;
    c->rc = -998;
    c->order = -1;
    pthread_mutex_init(&c->go.mu, NULL);
    pthread_cond_init(&c->go.cv, NULL);
    assert_int_equal(pthread_create(t, NULL, caller_thread, c), 0);
    assert_int_equal(dbpool_sandbox_allow(own, *t), 0);
    gate_open(&c->go);
}

static void join(pthread_t t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    assert_int_equal(pthread_timedjoin_np(t, NULL, &ts), 0);
}

static void test_sandbox_fifo(void **state)
{
    (void)state;
    dbpool *p = open_stub();
    dbpool_owner *own;
    dbpool_lease l;
    struct caller c[3];
    pthread_t t[3];
    atomic_int seq;

    atomic_init(&seq, 0);
    assert_int_equal(dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    for (int i = 0; i < 3; i++) {
        start_caller(&c[i], p, own, DBPOOL_DEFAULT_TIMEOUT, &seq, &t[i]);
        assert_true(wait_queued(p, i + 1)); /* queued in this order */
    }
    assert_int_equal(dbpool_checkin(&l), 0);
    for (int i = 0; i < 3; i++)
        join(t[i]);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i].rc, 0);
        assert_int_equal(c[i].checkin_rc, 0);
        assert_int_equal(c[i].order, i); /* served in arrival order */
    }
    dbpool_stats st;
    assert_int_equal(dbpool_stats_get(p, &st), 0);
    assert_int_equal(st.busy, 1); /* one connection for the owner, all along */
    assert_int_equal(dbpool_sandbox_checkin(own), 0);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_sandbox_queue_timeout(void **state)
{
    (void)state;
    dbpool *p = open_stub();
    dbpool_owner *own;
    dbpool_lease l;
    struct caller c;
    pthread_t t;
    atomic_int seq;

    atomic_init(&seq, 0);
    assert_int_equal(dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    start_caller(&c, p, own, 20, &seq, &t);
    join(t); /* it gives up by its own deadline while we hold the connection */
    assert_int_equal(c.rc, DBPOOL_ETIMEDOUT);
    assert_int_equal(sandbox_queued(p), 0);
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(dbpool_sandbox_checkin(own), 0);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_sandbox_owner_end_fails_queue(void **state)
{
    (void)state;
    dbpool *p = open_stub();
    dbpool_owner *own;
    dbpool_lease l;
    struct caller c;
    pthread_t t;
    atomic_int seq;

    atomic_init(&seq, 0);
    assert_int_equal(dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    start_caller(&c, p, own, DBPOOL_DEFAULT_TIMEOUT, &seq, &t);
    assert_true(wait_queued(p, 1));
    /* we (the owner's own thread) still hold a lease: nothing is waited for */
    assert_int_equal(dbpool_sandbox_checkin(own), DBPOOL_EBUSY);
    join(t);
    assert_int_equal(c.rc, DBPOOL_ENOOWNER);
    /* our check-in releases the owner's connection to the pool */
    assert_int_equal(dbpool_checkin(&l), 0);
    dbpool_stats st;
    assert_int_equal(dbpool_stats_get(p, &st), 0);
    assert_int_equal(st.busy, 0);
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), DBPOOL_ENOOWNER);
    assert_int_equal(dbpool_close(p), 0);
}

static void test_sandbox_txended_reported(void **state)
{
    (void)state;
    dbpool *p = open_stub();
    dbpool_owner *own;
    dbpool_lease l;

    assert_int_equal(dbpool_sandbox_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &own), 0);
    assert_int_equal(atomic_load(&begins) > 0, 1);
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0);
    atomic_store(&end_next, SBX_ENDED);
    assert_int_equal(dbpool_checkin(&l), DBPOOL_ETXENDED);
    assert_non_null(strstr(dbpool_last_error(), "fake: the code under test committed"));
    assert_int_equal(dbpool_checkout(p, DBPOOL_DEFAULT_TIMEOUT, &l), 0); /* still usable */
    assert_int_equal(dbpool_checkin(&l), 0);
    assert_int_equal(dbpool_sandbox_checkin(own), DBPOOL_ETXENDED);
    assert_non_null(strstr(dbpool_last_error(), "1 time(s)"));
    assert_int_equal(dbpool_close(p), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sandbox_fifo),
        cmocka_unit_test(test_sandbox_queue_timeout),
        cmocka_unit_test(test_sandbox_owner_end_fails_queue),
        cmocka_unit_test(test_sandbox_txended_reported),
    };
    return cmocka_run_group_tests_name("unit_sandbox", tests, NULL, NULL);
}
