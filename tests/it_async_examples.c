/* it_async_examples.c - runs examples/async_epoll ($DBPOOL_EXAMPLE_ASYNC_EPOLL,
 * set by CTest) against a real server, so CI exercises the example and not
 * only its compilation: every logical client must finish every transaction
 * with the right answer. */
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
static const char *example;

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
static int run_example(const char *clients, const char *rounds, char *out, size_t outlen)
{
    char path[300];
    struct child c = {0, 0};
    posix_spawn_file_actions_t fa;
    const char *argv[] = {example, srv.conninfo, clients, rounds, NULL};

    snprintf(path, sizeof path, "%s/async_epoll.out", srv.dir);
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
        fail_msg("async_epoll did not finish within 120 s");
    }
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(out, 1, outlen - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    print_message("(%lld ms) %s", (long long)(pgt_now_ms() - t0), out);
    return WIFEXITED(c.status) ? WEXITSTATUS(c.status) : -1;
}

static void test_async_example_epoll(void **state)
{
    char out[4096];
    (void)state;
    assert_int_equal(run_example("64", "50", out, sizeof out), 0);
    assert_non_null(strstr(out, "64 clients, 3200 transactions, 0 failures;"));
    /* more clients than connections by far: the pool's queue does the work */
    assert_int_equal(run_example("500", "4", out, sizeof out), 0);
    assert_non_null(strstr(out, "500 clients, 2000 transactions, 0 failures;"));
}

static int group_setup(void **state)
{
    (void)state;
    example = getenv("DBPOOL_EXAMPLE_ASYNC_EPOLL");
    if (!example || access(example, X_OK) != 0) {
        fprintf(stderr, "it_async_examples: DBPOOL_EXAMPLE_ASYNC_EPOLL not set or not "
                        "executable\n");
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
        cmocka_unit_test(test_async_example_epoll),
    };
    return cmocka_run_group_tests_name("it_async_examples", tests, group_setup, group_teardown);
}
