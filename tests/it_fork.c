/* it_fork.c - the preforking server pattern: a process with an open pool (and
 * a lease out, and a registry) forks. In the child the inherited pool fails
 * with DBPOOL_EFORKED and never touches the parent's sockets, closing it frees
 * memory only, and a new pool works (the manager starts again). The parent
 * keeps working on the same connections afterwards. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "dbpool_registry.h"
#include "itpool.h"
#include "pgserver.h"

static pgt_server srv;

static int idle_n(void *arg)
{
    dbpool_stats st;
    return dbpool_stats_get(arg, &st) == 0 && st.idle >= 1;
}

static int resolve_cb(void *arg, const char *tenant, char *conninfo, size_t len, dbpool_config *cfg)
{
    (void)arg;
    (void)cfg;
    snprintf(conninfo, len, "%s application_name=fork_reg_%s", srv.conninfo, tenant);
    return 0;
}

/* The child's checks; returns a bit per failed check (exit status). */
static int child(dbpool *inherited, dbpool_lease *held, dbpool_registry *reg)
{
    int bad = 0;
    dbpool_lease l;
    dbpool_stats st;

    alarm(20); /* a hang fails the test instead of blocking it */
    if (dbpool_checkout(inherited, 1000, &l) != DBPOOL_EFORKED ||
        !strstr(dbpool_last_error(), "fork"))
        bad |= 1;
    int rc = dbpool_checkin(held);
    if (rc != DBPOOL_EFORKED) { /* no ROLLBACK on the parent's socket */
        fprintf(stderr, "child: check-in of the inherited lease: %d %s\n", rc, dbpool_last_error());
        bad |= 2;
    }
    if (dbpool_lease_conn(held) != NULL || dbpool_stats_get(inherited, &st) != DBPOOL_EFORKED)
        bad |= 4;
    if (dbpool_registry_checkout(reg, "t1", 1000, &l) != DBPOOL_EFORKED)
        bad |= 8;

        /* a new pool works: the manager runs again in this process. Not under
         * TSan: it tracks the parent's threads in the child and fails a new one
         * that reuses a thread id ("dup thread with used id"), a TSan limit. */
#if !defined(__SANITIZE_THREAD__)
    char ci[700];
    snprintf(ci, sizeof ci, "%s application_name=fork_child", srv.conninfo);
    dbpool *mine = NULL;
    if (dbpool_pg_open(&mine, ci, NULL) != 0 || dbpool_checkout(mine, 5000, &l) != 0) {
        bad |= 16;
    } else {
        if (!itp_select1(&l))
            bad |= 16;
        dbpool_checkin(&l);
    }
    if (mine && dbpool_close(mine) != 0)
        bad |= 32;
#endif
    /* closing the inherited objects frees memory, sends nothing */
    if ((rc = dbpool_close(inherited)) != 0 || (rc = dbpool_registry_close(reg)) != 0) {
        fprintf(stderr, "child: close of the inherited pool/registry: %d %s\n", rc,
                dbpool_last_error());
        bad |= 64;
    }
    return bad;
}

static void test_fork_child_safe(void **state)
{
    (void)state;
    char ci[700];
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    cfg.size = 3;
    cfg.min_size = -1;
    cfg.idle_interval = 100; /* pings keep running in the parent meanwhile */
    snprintf(ci, sizeof ci, "%s application_name=fork_parent", srv.conninfo);
    dbpool *p = NULL;
    assert_int_equal(dbpool_pg_open(&p, ci, &cfg), 0);
    /* all three sessions open before the fork (min_size = size) */
    assert_true(pgt_wait_for(idle_n, p, 5000));
    assert_true(itp_wait_backends(&srv, "fork_parent", 3, 10000));
    dbpool_lease held;
    assert_int_equal(dbpool_checkout(p, 5000, &held), 0);
    PGresult *r = PQexec(dbpool_pg_conn(&held), "BEGIN");
    PQclear(r);

    dbpool_registry_config rc;
    dbpool_registry_config_init(&rc);
    rc.resolve = resolve_cb;
    dbpool_registry *reg = NULL;
    assert_int_equal(dbpool_registry_open(&reg, &rc), 0);
    dbpool_lease tl;
    assert_int_equal(dbpool_registry_checkout(reg, "t1", 5000, &tl), 0);
    assert_int_equal(dbpool_checkin(&tl), 0);
    assert_int_equal(pgt_count_backends(&srv, "fork_parent"), 3);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child(p, &held, reg));

    int status = 0;
    pid_t w = 0;
    for (int i = 0; i < 3000 && (w = waitpid(pid, &status, WNOHANG)) == 0; i++)
        itp_sleep_ms(10);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("the child hung");
    }
    if (!WIFEXITED(status))
        fail_msg("the child died (signal %d)", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    if (WEXITSTATUS(status) != 0)
        fail_msg("child checks failed: bits %#x", WEXITSTATUS(status));

    /* the parent's sessions are intact: same backends, the held lease still
     * in its transaction, the idle ones still answer */
    assert_int_equal(pgt_count_backends(&srv, "fork_parent"), 3);
    assert_int_equal(PQtransactionStatus(dbpool_pg_conn(&held)), PQTRANS_INTRANS);
    assert_true(itp_select1(&held));
    assert_int_equal(dbpool_checkin(&held), 0);
    dbpool_lease a, b;
    assert_int_equal(dbpool_checkout(p, 5000, &a), 0);
    assert_int_equal(dbpool_checkout(p, 5000, &b), 0);
    assert_true(itp_select1(&a));
    assert_true(itp_select1(&b));
    assert_int_equal(dbpool_checkin(&a), 0);
    assert_int_equal(dbpool_checkin(&b), 0);
    dbpool_stats st;
    assert_int_equal(dbpool_stats_get(p, &st), 0);
    assert_int_equal((int)st.ping_failures, 0);
    /* the child's own pool closed its session (a backend leaves
     * pg_stat_activity shortly after its client has gone) */
    assert_true(itp_wait_backends(&srv, "fork_child", 0, 10000));
    assert_int_equal(dbpool_registry_checkout(reg, "t1", 5000, &tl), 0);
    assert_true(itp_select1(&tl));
    assert_int_equal(dbpool_checkin(&tl), 0);
    assert_int_equal(dbpool_registry_close(reg), 0);
    assert_int_equal(dbpool_close(p), 0);
}

static int group_setup(void **state)
{
    (void)state;
    return pgt_start(&srv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    pgt_destroy(&srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_child_safe),
    };
    return cmocka_run_group_tests_name("it_fork", tests, group_setup, group_teardown);
}
