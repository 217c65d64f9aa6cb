/* it_metrics.c - the Prometheus page to standard (issue 15 item 4), from a
 * pool that did real work against a real server: latencies as histograms
 * (cumulative _bucket{le} in seconds, +Inf = _count), the gauges for size,
 * min_size, dormant slots and the oldest waiter's age, rollbacks_total,
 * build_info; and Prometheus' own parser (promtool check metrics, Debian
 * package prometheus) accepts the page. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;

static char *render(dbpool **pools, size_t n)
{
    size_t need = 0;
    char probe;
    (void)dbpool_stats_prometheus(pools, n, &probe, 0, &need);
    assert_true(need > 1);
    char *buf = malloc(need + 4096); /* the stats may grow between the calls */
    assert_non_null(buf);
    assert_int_equal(dbpool_stats_prometheus(pools, n, buf, need + 4096, NULL), 0);
    return buf;
}

/* The value of the series that starts with `prefix` (name{labels}). */
static double series(const char *page, const char *prefix)
{
    const char *p = page;
    size_t n = strlen(prefix);
    while ((p = strstr(p, prefix)) != NULL) {
        if ((p == page || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p += n;
    }
    fail_msg("no series %s in:\n%s", prefix, page);
    return -1;
}

/* Buckets of one histogram never decrease, and +Inf equals _count. */
static void check_histogram(const char *page, const char *metric, const char *pool)
{
    char pre[160];
    snprintf(pre, sizeof pre, "%s_bucket{pool=\"%s\",le=\"", metric, pool);
    double last = 0;
    int buckets = 0;
    for (const char *p = page; (p = strstr(p, pre)) != NULL; p++) {
        const char *v = strstr(p, "} "); /* the pool name has a space */
        assert_non_null(v);
        double x = strtod(v + 2, NULL);
        assert_true(x >= last);
        last = x;
        buckets++;
    }
    assert_true(buckets >= 10);
    snprintf(pre, sizeof pre, "%s_bucket{pool=\"%s\",le=\"+Inf\"}", metric, pool);
    double inf = series(page, pre);
    snprintf(pre, sizeof pre, "%s_count{pool=\"%s\"}", metric, pool);
    assert_true(inf == series(page, pre));
    assert_true(last == inf);
}

static int promtool_accepts(const char *page, char *out, size_t outlen)
{
    char path[] = "/tmp/dbpool_metrics_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(page);
    assert_int_equal(write(fd, page, len), (ssize_t)len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s 2>&1", path);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, outlen - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    unlink(path);
    return st == 0;
}

struct waiter {
    dbpool *p;
    int rc;
};

static void *wait_main(void *arg)
{
    struct waiter *w = arg;
    dbpool_lease l;
    w->rc = dbpool_checkout(w->p, 30000, &l);
    if (w->rc == 0)
        (void)dbpool_checkin(&l);
    return NULL;
}

static int waiting_is(const dbpool_stats *st, int64_t n)
{
    return st->waiting == n;
}

static void test_prometheus_page(void **state)
{
    (void)state;
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.name = "metrics \"test\"";
    cfg.size = 3;
    cfg.min_size = 1;
    cfg.queue_target = 5000;
    cfg.queue_interval = 10000;
    dbpool *p = itp_open(&srv, "mt_page", &cfg);
    assert_int_equal(dbpool_wait_ready(p, 1, 10000), 0);

    /* some work: checkouts, a rollback, a caller waiting */
    dbpool_lease l[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_checkout(p, 10000, &l[i]), 0);
    PGresult *r = PQexec(dbpool_pg_conn(&l[0]), "BEGIN");
    PQclear(r);
    struct waiter w = {p, 1};
    pthread_t t = itp_thr_start(wait_main, &w);
    assert_true(itp_wait_stats(p, waiting_is, 1, 10000));
    itp_sleep_ms(20); /* so that the oldest wait is measurably above 0 */

    dbpool *pools[] = {p};
    char *page = render(pools, 1);
    const char *lbl = "metrics \\\"test\\\"";
    char pre[200];
    snprintf(pre, sizeof pre, "dbpool_oldest_wait_seconds{pool=\"%s\"}", lbl);
    assert_true(series(page, pre) > 0);
    free(page);

    for (int i = 0; i < 3; i++)
        assert_int_equal(dbpool_checkin(&l[i]), 0);
    assert_int_equal(itp_thr_join(t, 30000), 0);
    assert_int_equal(w.rc, 0);

    page = render(pools, 1);
    snprintf(pre, sizeof pre, "dbpool_size{pool=\"%s\"}", lbl);
    assert_true(series(page, pre) == 3);
    snprintf(pre, sizeof pre, "dbpool_min_size{pool=\"%s\"}", lbl);
    assert_true(series(page, pre) == 1);
    snprintf(pre, sizeof pre, "dbpool_rollbacks_total{pool=\"%s\"}", lbl);
    assert_true(series(page, pre) == 1);
    snprintf(pre, sizeof pre, "dbpool_oldest_wait_seconds{pool=\"%s\"}", lbl);
    assert_true(series(page, pre) == 0);
    snprintf(pre, sizeof pre, "dbpool_connections{pool=\"%s\",state=\"dormant\"}", lbl);
    assert_true(series(page, pre) == 0);
    snprintf(pre, sizeof pre, "dbpool_build_info{version=\"%s\"}", DBPOOL_VERSION_STRING);
    assert_true(series(page, pre) == 1);
    snprintf(pre, sizeof pre, "dbpool_queue_seconds_count{pool=\"%s\"}", lbl);
    assert_true(series(page, pre) == 4);
    snprintf(pre, sizeof pre, "dbpool_connect_seconds_count{pool=\"%s\"}", lbl);
    assert_true(series(page, pre) == 3);
    assert_null(strstr(page, "quantile="));
    check_histogram(page, "dbpool_queue_seconds", lbl);
    check_histogram(page, "dbpool_hold_seconds", lbl);
    check_histogram(page, "dbpool_connect_seconds", lbl);

    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        free(page);
        assert_int_equal(itp_close(p), 0);
        fprintf(stderr, "# promtool not installed (Debian: prometheus): parser check skipped\n");
        skip();
    }
    char out[4096];
    if (!promtool_accepts(page, out, sizeof out))
        fail_msg("promtool check metrics rejects the page:\n%s\n--- page:\n%s", out, page);
    free(page);

    /* two pools on one page: still one family each */
    dbpool_config c2;
    dbpool_config_init(&c2);
    c2.name = "second";
    c2.size = 1;
    dbpool *q = itp_open(&srv, "mt_second", &c2);
    assert_int_equal(dbpool_wait_ready(q, 1, 10000), 0);
    dbpool *both[] = {p, q};
    page = render(both, 2);
    if (!promtool_accepts(page, out, sizeof out))
        fail_msg("promtool check metrics rejects the page of two pools:\n%s", out);
    free(page);
    assert_int_equal(itp_close(q), 0);
    assert_int_equal(itp_close(p), 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prometheus_page),
    };
    return cmocka_run_group_tests_name("it_metrics", tests, group_setup, group_teardown);
}
