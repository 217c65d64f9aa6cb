/* pgbouncer.c - test harness: a throwaway PgBouncer in a temp dir (see pgbouncer.h).
 * Started with posix_spawn (safe in a multi-threaded, sanitized process). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "pgbouncer.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

extern char **environ;

#define PGB_USER "postgres"
#define T_READY 15000
#define T_STOP 10000

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pgbouncer harness: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static const char *bouncer_path(void)
{
    const char *env = getenv("PGBOUNCER");
    return env && *env ? env : "/usr/sbin/pgbouncer";
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Write a file; when root, give it (and so the dir's contents) to postgres. */
static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fail("open %s: %s", path, strerror(errno));
        return -1;
    }
    int ok = fputs(text, f) >= 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok) {
        fail("write %s failed", path);
        return -1;
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam(PGB_USER);
        if (!pw || chown(path, pw->pw_uid, pw->pw_gid) != 0) {
            fail("chown %s to %s failed", path, PGB_USER);
            return -1;
        }
    }
    return 0;
}

/* Can a client run SELECT 1 through it? Refusing a client because
 * max_client_conn is reached (busy clients of a test) is serving too. */
static int serves(const pgb_server *b)
{
    char ci[600];
    snprintf(ci, sizeof ci, "%s connect_timeout=2 application_name=pgb_harness", b->conninfo);
    PGconn *c = PQconnectdb(ci);
    int ok = 0;
    if (c && PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, "SELECT 1");
        ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    } else if (c && strstr(PQerrorMessage(c), "no more connections allowed")) {
        ok = 1;
    }
    PQfinish(c);
    return ok;
}

static void dump_log(const pgb_server *b)
{
    char path[300], line[512];
    snprintf(path, sizeof path, "%s/stderr.log", b->dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    fprintf(stderr, "pgbouncer harness: --- %s ---\n", path);
    int n = 0;
    while (fgets(line, sizeof line, f) && n++ < 40)
        fprintf(stderr, "  %s", line);
    fclose(f);
}

static int spawn(pgb_server *b)
{
    char ini[300], log[300];
    const char *argv[12];
    int n = 0;

    snprintf(ini, sizeof ini, "%s/pgbouncer.ini", b->dir);
    snprintf(log, sizeof log, "%s/stderr.log", b->dir);
    if (geteuid() == 0) {
        argv[n++] = "/usr/bin/setpriv";
        argv[n++] = "--reuid=" PGB_USER;
        argv[n++] = "--regid=" PGB_USER;
        argv[n++] = "--init-groups";
        argv[n++] = "--";
    }
    argv[n++] = bouncer_path();
    argv[n++] = ini;
    argv[n] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addchdir_np(&fa, "/tmp");
    sigset_t none, dfl;
    sigemptyset(&none);
    sigfillset(&dfl);
    sigdelset(&dfl, SIGKILL);
    sigdelset(&dfl, SIGSTOP);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawn(&b->pid, argv[0], &fa, &attr, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        fail("cannot run %s: %s", argv[0], strerror(rc));
        b->pid = 0;
        return -1;
    }
    /* wait until it serves, or died */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st;
        if (waitpid(b->pid, &st, WNOHANG) == b->pid) {
            fail("pgbouncer exited at start (status %d)", st);
            dump_log(b);
            b->pid = 0;
            return -1;
        }
        if (serves(b))
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > T_READY) {
            fail("pgbouncer did not serve within %d ms", T_READY);
            dump_log(b);
            pgb_stop(b, SIGKILL);
            return -1;
        }
        sleep_ms(20);
    }
}

int pgb_start(pgb_server *b, const pgt_server *target, const char *pool_mode, int pool_size)
{
    return pgb_start_conf(b, target, pool_mode, pool_size, NULL);
}

int pgb_start_conf(pgb_server *b, const pgt_server *target, const char *pool_mode, int pool_size,
                   const char *extra)
{
    char path[300], conf[16384], wild[128] = "";

    memset(b, 0, sizeof *b);
    if (access(bouncer_path(), X_OK) != 0) {
        fail("%s not found (install the 'pgbouncer' package, or set PGBOUNCER)", bouncer_path());
        return -1;
    }
    snprintf(b->dir, sizeof b->dir, "/tmp/dbpool-pgb-XXXXXX");
    if (!mkdtemp(b->dir)) {
        fail("mkdtemp: %s", strerror(errno));
        b->dir[0] = '\0';
        return -1;
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam(PGB_USER);
        if (!pw || chown(b->dir, pw->pw_uid, pw->pw_gid) != 0) {
            fail("running as root but cannot give %s to user %s", b->dir, PGB_USER);
            return -1;
        }
    }
    if ((b->port = free_port()) < 0) {
        fail("no free port");
        return -1;
    }
    /* every other database of the target, as the connecting user: a user
     * forced here (user=) escapes max_user_connections in PgBouncer 1.18 */
    if (extra)
        snprintf(wild, sizeof wild, "* = host=127.0.0.1 port=%d\n", target->port);
    snprintf(b->conninfo, sizeof b->conninfo,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres", b->port);
    snprintf(path, sizeof path, "%s/userlist.txt", b->dir);
    if (write_file(path, "\"postgres\" \"\"\n\"app\" \"\"\n") != 0)
        return -1;
    int len = snprintf(conf, sizeof conf,
                       "[databases]\n"
                       "postgres = host=127.0.0.1 port=%d dbname=postgres user=postgres\n"
                       "%s"
                       "[pgbouncer]\n"
                       "listen_addr = 127.0.0.1\n"
                       "listen_port = %d\n"
                       "unix_socket_dir =\n"
                       "auth_type = trust\n"
                       "auth_file = %s/userlist.txt\n"
                       "pool_mode = %s\n"
                       "default_pool_size = %d\n"
                       "max_client_conn = 200\n"
                       "server_login_retry = 1\n"
                       "logfile = %s/pgbouncer.log\n"
                       "pidfile = %s/pgbouncer.pid\n"
                       "admin_users = postgres\n"
                       "ignore_startup_parameters = extra_float_digits\n"
                       "%s",
                       target->port, wild, b->port, b->dir, pool_mode, pool_size, b->dir, b->dir,
                       extra ? extra : "");
    if (len < 0 || (size_t)len >= sizeof conf) {
        fail("pgbouncer.ini longer than %zu bytes", sizeof conf);
        return -1;
    }
    snprintf(path, sizeof path, "%s/pgbouncer.ini", b->dir);
    if (write_file(path, conf) != 0)
        return -1;
    return spawn(b);
}

int pgb_stop(pgb_server *b, int sig)
{
    if (b->pid <= 0)
        return 0;
    kill(b->pid, sig);
    for (int waited = 0;; waited += 10) {
        int st;
        pid_t w = waitpid(b->pid, &st, WNOHANG);
        if (w == b->pid || (w < 0 && errno == ECHILD)) {
            b->pid = 0;
            return 0;
        }
        if (waited >= T_STOP) {
            if (sig == SIGKILL) {
                fail("pgbouncer %d does not die", (int)b->pid);
                return -1;
            }
            fail("pgbouncer did not stop on signal %d within %d ms; killing it", sig, T_STOP);
            return pgb_stop(b, SIGKILL);
        }
        sleep_ms(10);
    }
}

int pgb_resume(pgb_server *b)
{
    if (b->pid > 0)
        return 0;
    /* the port may take a moment to be free again */
    for (int i = 0; i < 5; i++) {
        if (spawn(b) == 0)
            return 0;
        sleep_ms(200);
    }
    return -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

void pgb_destroy(pgb_server *b)
{
    pgb_stop(b, SIGKILL);
    if (b->dir[0] && strncmp(b->dir, "/tmp/dbpool-pgb-", 16) == 0 && !strstr(b->dir, ".."))
        nftw(b->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    b->dir[0] = '\0';
}
