/* it_sandbox_example.c - runs examples/sandbox_cmocka (a cmocka suite whose
 * tests run in parallel threads, each in its own sandbox) against a
 * throwaway PostgreSQL, so the example is built and run in CI. The program's
 * path comes from CTest (DBPOOL_SANDBOX_EXAMPLE). */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "pgserver.h"

extern char **environ;

static pgt_server srv;

struct child {
    pid_t pid;
    int status;
};

static int child_exited(void *arg)
{
    struct child *c = arg;
    return waitpid(c->pid, &c->status, WNOHANG) == c->pid;
}

static void test_sandbox_cmocka_example(void **state)
{
    const char *prog = getenv("DBPOOL_SANDBOX_EXAMPLE");
    struct child c = {0, 0};

    (void)state;
    if (!prog || !*prog)
        fail_msg("DBPOOL_SANDBOX_EXAMPLE is not set (run through CTest)");
    char *argv[] = {(char *)prog, srv.conninfo, NULL};
    assert_int_equal(posix_spawn(&c.pid, prog, NULL, NULL, argv, environ), 0);
    if (!pgt_wait_for(child_exited, &c, 120000)) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &c.status, 0);
        fail_msg("%s did not finish within 120 s", prog);
    }
    assert_true(WIFEXITED(c.status));
    assert_int_equal(WEXITSTATUS(c.status), 0);
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
        cmocka_unit_test(test_sandbox_cmocka_example),
    };
    return cmocka_run_group_tests_name("it_sandbox_example", tests, group_setup, group_teardown);
}
