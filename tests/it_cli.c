/* it_cli.c - the dbpool CLI ($DBPOOL_CLI, set by CTest) against a real
 * PostgreSQL (issue 11): a conninfo with values of hundreds to thousands of
 * bytes works in check, bench and drill (the drill rebuilds the conninfo to go
 * through its relay, and must keep every option: the password, and host/port
 * of the relay, come after a long value); the password never appears in what
 * the CLI prints or writes; bench --metrics writes the file, replacing what
 * was there; every --json output is valid JSON; with no conninfo the PG*
 * variables and a service file are used (as psql does). The malformed
 * command lines are in cli_secrets.sh / cli_args.sh. */
#include <errno.h>
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "pgserver.h"

#define APP_PW "app_secret_pw"

extern char **environ;

static pgt_server srv;
static const char *cli;
static char dir[64];   /* outputs of this test */
static char *long_ci;  /* key=value, app/password, long values */
static char *long_uri; /* the same as a URI */

/* Fragments of the password: a cut-off echo must not leave one either. */
static const char *const secrets[] = {APP_PW, "app_secret", "secret_pw"};

struct result {
    int rc; /* exit status, or -1 (killed, timeout) */
    char *out, *err;
};

/* The whole file as a string; "" (and a test failure) if it cannot be read. */
static char *slurp(const char *path)
{
    size_t n = 0, cap = 65536;
    char *buf = malloc(cap);
    FILE *f = fopen(path, "rb");

    assert_non_null(buf);
    buf[0] = '\0';
    if (!f) {
        fail_msg("cannot read %s: %s", path, strerror(errno));
        return buf;
    }
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            assert_non_null(nb);
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

struct child {
    pid_t pid;
    int status;
};

static int child_exited(void *arg)
{
    struct child *c = arg;
    return waitpid(c->pid, &c->status, WNOHANG) == c->pid;
}

/* Run the CLI with argv (argv[0] is replaced by the CLI), bounded by timeout_ms. */
static struct result run_cli(int64_t timeout_ms, const char **argv)
{
    char out[128], err[128];
    posix_spawn_file_actions_t fa;
    struct child c = {0, 0};
    struct result r = {-1, NULL, NULL};

    snprintf(out, sizeof(out), "%s/stdout", dir);
    snprintf(err, sizeof(err), "%s/stderr", dir);
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0), 0);
    assert_int_equal(
        posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
    assert_int_equal(
        posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
    argv[0] = cli;
    assert_int_equal(posix_spawn(&c.pid, cli, &fa, NULL, (char *const *)argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    if (!pgt_wait_for(child_exited, &c, timeout_ms)) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &c.status, 0);
        fail_msg("dbpool %s did not finish within %lld ms", argv[1], (long long)timeout_ms);
    }
    if (WIFEXITED(c.status))
        r.rc = WEXITSTATUS(c.status);
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

static void result_free(struct result *r)
{
    free(r->out);
    free(r->err);
}

static void assert_no_secret(const char *what, const char *text)
{
    if (!text) {
        fail_msg("%s: nothing to look at", what);
        return;
    }
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        if (strstr(text, secrets[i]))
            fail_msg("%s contains \"%s\"", what, secrets[i]);
}

static void assert_ok_run(const char *what, struct result *r, int want_rc)
{
    if (r->rc != want_rc)
        fail_msg("%s: exit %d, want %d\nstdout: %.2000s\nstderr: %.2000s", what, r->rc, want_rc,
                 r->out, r->err);
    assert_no_secret("stdout", r->out);
    assert_no_secret("stderr", r->err);
}

/* ---- the tests --------------------------------------------------------------- */

/* check connects with the long conninfo (both forms), shows it whole, password masked. */
static void test_check_long_conninfo(void **state)
{
    (void)state;
    const char *cis[] = {long_ci, long_uri};

    for (size_t i = 0; i < 2; i++) {
        const char *argv[] = {NULL, "check", "-t", "20s", "-n", "3", cis[i], NULL};
        struct result r = run_cli(60000, argv);
        assert_ok_run("check", &r, 0);
        assert_non_null(strstr(r.out, "connected "));
        assert_non_null(strstr(r.out, "pool         open + first checkout"));
        assert_non_null(strstr(r.out, "password=********"));
        /* the 1000-character value is shown whole, not cut off */
        char *a = strstr(r.out, "application_name=");
        assert_non_null(a);
        assert_true(strspn(a + strlen("application_name="), "abcdefghij") >= 1000);
        result_free(&r);
    }
}

/* bench runs with it, and --metrics replaces the file's contents with the metrics. */
static void test_bench_metrics(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "%s/bench.prom", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 20000; i++)
        fputs("OLD CONTENTS\n", f); /* longer than the metrics: must not survive */
    assert_int_equal(fclose(f), 0);

    const char *argv[] = {NULL, "bench",     "-T", "300ms",  "-c",    "2", "-P",
                          "0",  "--metrics", path, "--json", long_ci, NULL};
    struct result r = run_cli(60000, argv);
    assert_ok_run("bench --metrics", &r, 0);
    assert_non_null(strstr(r.out, "\"transactions\""));
    char *m = slurp(path);
    assert_null(strstr(m, "OLD CONTENTS"));
    assert_non_null(strstr(m, "pool=\"bench\""));
    assert_no_secret("metrics file", m);
    free(m);
    result_free(&r);
}

/* The drill's pool reaches the database through the relay with every option of
 * the long conninfo (the password after a long value; host/port of the relay
 * last), runs, and writes its report. */
static void test_drill_long_conninfo(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "%s/drill.html", dir);

    const char *argv[] = {NULL,    "drill",
                          "-B",    "300ms",
                          "-O",    "200ms",
                          "-A",    "1s",
                          "-i",    "50ms",
                          "-c",    "2",
                          "-r",    "200",
                          "--set", "connect_timeout=10s",
                          "--set", "backoff_max=200ms",
                          "-o",    path,
                          long_ci, NULL};
    struct result r = run_cli(90000, argv);
    /* 0 recovered, 1 not yet within -A: either way the drill ran */
    if (r.rc != 0 && r.rc != 1)
        fail_msg("drill: exit %d\nstderr: %.2000s", r.rc, r.err);
    assert_no_secret("stdout", r.out);
    assert_no_secret("stderr", r.err);
    assert_null(strstr(r.err, "cannot connect"));
    assert_non_null(strstr(r.out, "report       "));
    char *html = slurp(path);
    assert_non_null(strstr(html, "<html"));
    assert_non_null(strstr(html, "password=********"));
    assert_no_secret("report", html);
    free(html);
    result_free(&r);
}

/* stdout of the last run_cli() (dir/stdout) is one valid JSON value: checked
 * by jq (scripts/deps.sh installs it), else python3's json module. */
static void assert_json(const char *what)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "if command -v jq >/dev/null 2>&1; then jq empty '%s/stdout'; "
             "else python3 -m json.tool '%s/stdout' >/dev/null; fi",
             dir, dir);
    if (system(cmd) != 0)
        fail_msg("%s: --json output is not valid JSON (see %s/stdout)", what, dir);
}

/* Every --json output parses: check, bench (pool and --direct), drill. The
 * drill also shows that a bare --set duration is seconds (connect_timeout=4). */
static void test_json_outputs(void **state)
{
    (void)state;
    const char *check[] = {NULL, "check", "-n", "2", "--json", long_ci, NULL};
    const char *bench[] = {NULL, "bench", "-T", "0.3", "-c", "2", "-P", "0", "--json", long_ci, NULL};
    const char *direct[] = {NULL, "bench", "--direct", "-T", "0.3", "-c", "2",
                            "-P", "0",     "--json",   long_ci, NULL};
    char path[128];
    snprintf(path, sizeof(path), "%s/drill-json.html", dir);
    /* 2 clients offered 400/s of 20 ms queries: most sends cannot go on time */
    const char *drill[] = {NULL, "drill", "-B", "0.3", "-O", "0.2", "-A", "1", "-i", "0.05",
                           "-c", "2", "-r", "400", "-w", "sleep:20", "--set", "connect_timeout=4",
                           "--set", "backoff_max=0.2s", "-o", path, "--json", long_ci, NULL};
    const char **runs[] = {check, bench, direct, drill};
    const char *names[] = {"check --json", "bench --json", "bench --direct --json", "drill --json"};

    for (size_t i = 0; i < 4; i++) {
        struct result r = run_cli(90000, runs[i]);
        if (i == 3 && r.rc == 1)
            r.rc = 0; /* the drill ran; recovery within -A is not the point */
        assert_ok_run(names[i], &r, 0);
        assert_json(names[i]);
        if (i == 3) {
            assert_non_null(strstr(r.out, "connect_timeout=4000ms"));
            assert_non_null(strstr(r.out, "\"versions\": \"dbpool "));
            assert_non_null(strstr(r.out, "\"command\": \"dbpool drill "));
            char cmd[256];
            snprintf(cmd, sizeof(cmd), "jq -e '.not_sent > 0 and .started != \"\" and "
                                       ".ended != \"\"' '%s/stdout' >/dev/null", dir);
            if (system(cmd) != 0)
                fail_msg("drill --json: no not_sent count, or no wall-clock times:\n%.3000s", r.out);
            char *html = slurp(path);
            assert_non_null(strstr(html, "Run again with <code>dbpool drill -B 0.3"));
            assert_non_null(strstr(html, "not sent on time"));
            assert_no_secret("report", html);
            free(html);
        }
        result_free(&r);
    }
    /* a check that cannot connect still prints one JSON object */
    const char *down[] = {NULL, "check", "-t", "2", "--no-pool", "--json",
                          "host=127.0.0.1 port=1", NULL};
    struct result r = run_cli(30000, down);
    assert_ok_run("check --json, nothing listening", &r, 1);
    assert_json("check --json, nothing listening");
    result_free(&r);
}

/* No conninfo and no $DATABASE_URL: libpq's defaults, as psql does - the PG*
 * variables, and a service from a service file (PGSERVICEFILE + PGSERVICE),
 * for check and for the drill (whose relay needs the service's host). */
static void test_pg_environment(void **state)
{
    (void)state;
    char port[16], svc[128], path[128];
    snprintf(port, sizeof(port), "%d", srv.port);
    snprintf(svc, sizeof(svc), "%s/pg_service.conf", dir);
    snprintf(path, sizeof(path), "%s/drill-svc.html", dir);
    FILE *f = fopen(svc, "w");
    assert_non_null(f);
    fprintf(f, "[dbpool_it]\nhost=127.0.0.1\nport=%d\nuser=app\ndbname=postgres\n", srv.port);
    assert_int_equal(fclose(f), 0);

    unsetenv("DATABASE_URL");
    setenv("PGPASSWORD", APP_PW, 1);
    setenv("PGHOST", "127.0.0.1", 1);
    setenv("PGPORT", port, 1);
    setenv("PGUSER", "app", 1);
    setenv("PGDATABASE", "postgres", 1);
    const char *check[] = {NULL, "check", "-n", "2", NULL};
    struct result r = run_cli(60000, check);
    assert_ok_run("check with PG* variables", &r, 0);
    assert_non_null(strstr(r.out, "(libpq defaults and PG* environment)"));
    assert_non_null(strstr(r.out, "as app, database postgres"));
    result_free(&r);

    unsetenv("PGHOST");
    unsetenv("PGPORT");
    unsetenv("PGUSER");
    unsetenv("PGDATABASE");
    setenv("PGSERVICEFILE", svc, 1);
    setenv("PGSERVICE", "dbpool_it", 1);
    r = run_cli(60000, check);
    assert_ok_run("check with PGSERVICE", &r, 0);
    assert_non_null(strstr(r.out, "service=dbpool_it"));
    assert_non_null(strstr(r.out, "as app, database postgres"));
    result_free(&r);

    const char *drill[] = {NULL, "drill", "-B", "0.3", "-O", "0.2", "-A", "1", "-i", "0.05",
                           "-c", "2", "-r", "200", "--set", "backoff_max=0.2s", "-o", path, NULL};
    r = run_cli(90000, drill);
    if (r.rc != 0 && r.rc != 1)
        fail_msg("drill with PGSERVICE: exit %d\nstderr: %.2000s", r.rc, r.err);
    assert_non_null(strstr(r.err, "-> 127.0.0.1:"));
    assert_null(strstr(r.err, "cannot connect"));
    result_free(&r);
    unsetenv("PGSERVICEFILE");
    unsetenv("PGSERVICE");
    unsetenv("PGPASSWORD");
}

/* ---- set-up ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    cli = getenv("DBPOOL_CLI");
    if (!cli || access(cli, X_OK) != 0) {
        fprintf(stderr, "it_cli: DBPOOL_CLI (the dbpool binary) not set or not executable\n");
        return -1;
    }
    snprintf(dir, sizeof(dir), "/tmp/dbpool-it-cli-XXXXXX");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "it_cli: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    if (pgt_start(&srv) != 0) {
        fprintf(stderr, "it_cli: could not start PostgreSQL\n");
        return -1;
    }
    /* A 1000-character application_name (the server keeps 63) and a 1500-byte
     * options value, before the password in libpq's order; escaping doubles
     * none of these, so 700 quote characters in a second value do. Well
     * under the server's 10000-byte startup packet. */
    char app[1001], sp[1501], quotes[1401];
    for (int i = 0; i < 1000; i++)
        app[i] = (char)('a' + i % 10);
    app[1000] = '\0';
    size_t n = (size_t)snprintf(sp, sizeof(sp), "-c search_path=public");
    while (n + 3 < sizeof(sp))
        n += (size_t)snprintf(sp + n, sizeof(sp) - n, ",s");
    for (int i = 0; i < 1400; i += 2)
        memcpy(quotes + i, "\\'", 2);
    quotes[1400] = '\0';
    size_t cap = 8192;
    long_ci = malloc(cap);
    long_uri = malloc(cap);
    if (!long_ci || !long_uri)
        return -1;
    snprintf(long_ci, cap,
             "host=127.0.0.1 port=%d user=app dbname=postgres application_name=%s "
             "options='%s' fallback_application_name='%s' password=%s",
             srv.port, app, sp, quotes, APP_PW);
    snprintf(long_uri, cap,
             "postgresql://app:%s@127.0.0.1:%d/postgres?application_name=%s"
             "&options=-c%%20search_path%%3Dpublic",
             APP_PW, srv.port, app);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pgt_destroy(&srv);
    free(long_ci);
    free(long_uri);
    if (dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "it_cli: could not remove %s\n", dir);
    }
    return 0;
}

int main(void)
{
    alarm(280); /* last resort against a hang */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_long_conninfo),
        cmocka_unit_test(test_bench_metrics),
        cmocka_unit_test(test_drill_long_conninfo),
        cmocka_unit_test(test_json_outputs),
        cmocka_unit_test(test_pg_environment),
    };
    return cmocka_run_group_tests_name("it_cli", tests, group_setup, group_teardown);
}
