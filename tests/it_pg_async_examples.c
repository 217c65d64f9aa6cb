/* it_pg_async_examples.c - runs examples/pg_async_load with each event-loop
 * adapter (epoll, libuv, libevent: $DBPOOL_EXAMPLE_PG_ASYNC[_libuv|_libevent],
 * set by CTest) against a real server, so CI exercises the adapters and not
 * only their compilation: every logical client must finish every statement
 * with the right answer. An adapter whose library was not found at build
 * time is skipped. */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Run the example with its output in dir/out; its exit status, or fail. */
static int run_example(const char *example, const char *clients, const char *rounds, char *out,
                       size_t outlen)
{
    char path[300];
    struct child c = {0, 0};
    posix_spawn_file_actions_t fa;
    const char *argv[] = {example, srv.conninfo, clients, rounds, NULL};

    snprintf(path, sizeof path, "%s/pg_async_load.out", srv.dir);
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0), 0);
    assert_int_equal(
        posix_spawn_file_actions_addopen(&fa, 1, path, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, 1, 2), 0);
    int64_t t0 = pgt_now_ms();
    assert_int_equal(posix_spawn(&c.pid, example, &fa, NULL, (char *const *)argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    if (!pgt_wait_for(child_exited, &c, 120000)) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &c.status, 0);
        fail_msg("%s did not finish within 120 s", example);
    }
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(out, 1, outlen - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    print_message("(%lld ms) %s", (long long)(pgt_now_ms() - t0), out);
    return WIFEXITED(c.status) ? WEXITSTATUS(c.status) : -1;
}

static void run_adapter(const char *env, const char *name)
{
    char out[4096], want[128];
    const char *example = getenv(env);

    if (!example) {
        print_message("%s not built (library not found): skipped\n", name);
        skip();
    }
    assert_int_equal(access(example, X_OK), 0);
    assert_int_equal(run_example(example, "64", "50", out, sizeof out), 0);
    snprintf(want, sizeof want, "%s: 64 clients, 3200 statements, 0 failures;", name);
    assert_non_null(strstr(out, want));
    /* far more clients than connections: the pool's queue does the work */
    assert_int_equal(run_example(example, "500", "4", out, sizeof out), 0);
    snprintf(want, sizeof want, "%s: 500 clients, 2000 statements, 0 failures;", name);
    assert_non_null(strstr(out, want));
    /* the adapter's timers and the cancel's way back through the queue */
    assert_non_null(strstr(out, "statement timeout: DBPOOL_ETIMEDOUT 57014"));
}

static void test_async_example_pg_epoll(void **state)
{
    (void)state;
    run_adapter("DBPOOL_EXAMPLE_PG_ASYNC", "epoll");
}

static void test_async_example_pg_libuv(void **state)
{
    (void)state;
    run_adapter("DBPOOL_EXAMPLE_PG_ASYNC_libuv", "libuv");
}

static void test_async_example_pg_libevent(void **state)
{
    (void)state;
    run_adapter("DBPOOL_EXAMPLE_PG_ASYNC_libevent", "libevent");
}

static int group_setup(void **state)
{
    (void)state;
    if (!getenv("DBPOOL_EXAMPLE_PG_ASYNC")) {
        fprintf(stderr, "it_pg_async_examples: DBPOOL_EXAMPLE_PG_ASYNC not set\n");
        return -1;
    }
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
        cmocka_unit_test(test_async_example_pg_epoll),
        cmocka_unit_test(test_async_example_pg_libuv),
        cmocka_unit_test(test_async_example_pg_libevent),
    };
    return cmocka_run_group_tests_name("it_pg_async_examples", tests, group_setup, group_teardown);
}
