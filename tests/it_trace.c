/* it_trace.c - tracing callbacks (issue 15 item 5) against a real server:
 * checkout start/end (with the wait and the outcome), check-in (with the hold
 * time), query start/end in the helpers (statement, SQLSTATE, outcome); a
 * *_START's return value comes back as the *_END's span; every call is on
 * the caller's thread; a pool without trace_cb calls nothing. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;

#define MAX_REC 64

struct rec {
    dbpool_trace_type type;
    int rc;
    int64_t duration_us;
    char statement[64];
    char sqlstate[6];
    char pool[32];
    void *span;
    int same_thread;
};

static struct {
    int n;
    struct rec r[MAX_REC];
    int spans; /* spans handed out */
    pthread_t caller;
} T;

static void *on_trace(void *arg, const dbpool_trace *t)
{
    (void)arg;
    if (T.n >= MAX_REC)
        return NULL;
    struct rec *r = &T.r[T.n++];
    r->type = t->type;
    r->rc = t->rc;
    r->duration_us = t->duration_us;
    snprintf(r->statement, sizeof r->statement, "%s", t->statement ? t->statement : "");
    snprintf(r->sqlstate, sizeof r->sqlstate, "%s", t->sqlstate ? t->sqlstate : "");
    snprintf(r->pool, sizeof r->pool, "%s", t->pool_name);
    r->span = t->span;
    r->same_thread = pthread_equal(pthread_self(), T.caller);
    if (t->type == DBPOOL_TRACE_CHECKOUT_START || t->type == DBPOOL_TRACE_QUERY_START)
        return (void *)(intptr_t)(++T.spans); /* a span handle of ours */
    return NULL;
}

static void trace_reset(void)
{
    memset(&T, 0, sizeof T);
    T.caller = pthread_self();
}

static dbpool *open_traced(const char *app, int size)
{
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.name = "traced";
    cfg.size = size;
    cfg.trace_cb = on_trace;
    dbpool *p = itp_open(&srv, app, &cfg);
    assert_int_equal(dbpool_wait_ready(p, size, 10000), 0);
    trace_reset();
    return p;
}

static void expect(int i, dbpool_trace_type type, int rc)
{
    if (i >= T.n)
        fail_msg("only %d trace events, wanted #%d", T.n, i);
    if (T.r[i].type != type || T.r[i].rc != rc)
        fail_msg("event #%d: type %d rc %d, wanted type %d rc %d", i, T.r[i].type, T.r[i].rc, type,
                 rc);
    assert_true(T.r[i].same_thread);
    assert_string_equal(T.r[i].pool, "traced");
}

static void test_trace_checkout_checkin(void **state)
{
    (void)state;
    dbpool *p = open_traced("tr_lease", 1);
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 10000, &l), 0);
    assert_true(itp_select1(&l));
    assert_int_equal(dbpool_checkin(&l), 0);
    /* a checkout that times out: its END says so */
    dbpool_lease a, b;
    assert_int_equal(dbpool_checkout(p, 10000, &a), 0);
    assert_int_equal(dbpool_checkout(p, 50, &b), DBPOOL_ETIMEDOUT);
    assert_int_equal(dbpool_discard(&a), 0);

    assert_int_equal(T.n, 8);
    expect(0, DBPOOL_TRACE_CHECKOUT_START, 0);
    expect(1, DBPOOL_TRACE_CHECKOUT_END, 0);
    assert_ptr_equal(T.r[1].span, (void *)(intptr_t)1);
    expect(2, DBPOOL_TRACE_CHECKIN, 0);
    assert_true(T.r[2].duration_us > 0); /* the hold time */
    expect(3, DBPOOL_TRACE_CHECKOUT_START, 0);
    expect(4, DBPOOL_TRACE_CHECKOUT_END, 0);
    expect(5, DBPOOL_TRACE_CHECKOUT_START, 0);
    expect(6, DBPOOL_TRACE_CHECKOUT_END, DBPOOL_ETIMEDOUT);
    assert_ptr_equal(T.r[6].span, (void *)(intptr_t)3);
    assert_true(T.r[6].duration_us >= 40 * 1000); /* it waited (about) its timeout */
    expect(7, DBPOOL_TRACE_CHECKIN, 0);
    assert_int_equal(itp_close(p), 0);
}

static void test_trace_queries(void **state)
{
    (void)state;
    dbpool *p = open_traced("tr_query", 1);
    dbpool_pg_result r;
    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, NULL, &r), 0);
    dbpool_pg_result_clear(&r);
    assert_int_equal(dbpool_pg_query(p, "SELECT 1/0", NULL, NULL, &r), DBPOOL_EQUERY);
    /* the trace callback leaves the call's own message alone */
    assert_non_null(strstr(dbpool_last_error(), "division by zero"));
    dbpool_pg_result_clear(&r);
    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, NULL, NULL), 0);

    /* each query: checkout start/end, query start/end, check-in */
    assert_int_equal(T.n, 15);
    expect(0, DBPOOL_TRACE_CHECKOUT_START, 0);
    expect(1, DBPOOL_TRACE_CHECKOUT_END, 0);
    expect(2, DBPOOL_TRACE_QUERY_START, 0);
    assert_string_equal(T.r[2].statement, "SELECT 1");
    expect(3, DBPOOL_TRACE_QUERY_END, 0);
    assert_ptr_equal(T.r[3].span, (void *)(intptr_t)2);
    assert_string_equal(T.r[3].sqlstate, "");
    expect(4, DBPOOL_TRACE_CHECKIN, 0);
    expect(7, DBPOOL_TRACE_QUERY_START, 0);
    assert_string_equal(T.r[7].statement, "SELECT 1/0");
    expect(8, DBPOOL_TRACE_QUERY_END, DBPOOL_EQUERY);
    assert_string_equal(T.r[8].sqlstate, "22012");
    assert_string_equal(dbpool_errname(T.r[8].rc), "DBPOOL_EQUERY");
    expect(13, DBPOOL_TRACE_QUERY_END, 0);
    assert_int_equal(itp_close(p), 0);
}

/* Without trace_cb nothing is called (and nothing breaks). */
static void test_trace_off(void **state)
{
    (void)state;
    trace_reset();
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.size = 1;
    dbpool *p = itp_open(&srv, "tr_off", &cfg);
    dbpool_pg_result r;
    assert_int_equal(dbpool_pg_query(p, "SELECT 1", NULL, NULL, &r), 0);
    dbpool_pg_result_clear(&r);
    assert_int_equal(T.n, 0);
    assert_int_equal(itp_close(p), 0);
}

/* The last check-in after dbpool_close: the trace still has the pool's name
 * (copied: the pool may be freed right after). */
static void test_trace_checkin_after_close(void **state)
{
    (void)state;
    dbpool *p = open_traced("tr_close", 1);
    dbpool_lease l;
    assert_int_equal(dbpool_checkout(p, 10000, &l), 0);
    assert_int_equal(itp_close(p), DBPOOL_EBUSY);
    assert_int_equal(dbpool_checkin(&l), 0);
    expect(T.n - 1, DBPOOL_TRACE_CHECKIN, 0);
}

static int group_setup(void **state)
{
    (void)state;
    return pgt_start(&srv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    itp_close_all();
    pgt_destroy(&srv);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    itp_close_all();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_trace_checkout_checkin, test_teardown),
        cmocka_unit_test_teardown(test_trace_queries, test_teardown),
        cmocka_unit_test_teardown(test_trace_off, test_teardown),
        cmocka_unit_test_teardown(test_trace_checkin_after_close, test_teardown),
    };
    return cmocka_run_group_tests_name("it_trace", tests, group_setup, group_teardown);
}
