/* pgserver.c - test harness: a throwaway PostgreSQL server in a temp dir.
 * See pgserver.h. initdb runs once into a cached template; each server is a copy of it. */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* posix_spawn_file_actions_addchdir_np */
#endif

#include "pgserver.h"

#include <dirent.h>
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

extern char **environ;

#define PGT_USER "postgres"
#define PGT_APP_ROLE "app"
#define PGT_APP_PASSWORD "app_secret_pw"
#define PGT_START_TRIES 5
/* Bump when the template's contents change (initdb options, base_conf, roles). */
#define PGT_TEMPLATE_REV "r1"

/* Timeouts of subprocesses, ms. pg_ctl has its own -t 30; these are the outer bound. */
#define T_INITDB 120000
#define T_COPY 60000
#define T_SINGLE 60000
#define T_PGCTL 45000
#define T_QUICK 10000

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pgserver: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* snprintf that complains on truncation (paths are bounded; this should not happen). */
static int fmt(char *buf, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));

static int fmt(char *buf, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(buf, cap, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        fail("string too long: %s", buf);
        return -1;
    }
    return 0;
}

int64_t pgt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int pgt_wait_for(int (*cond)(void *arg), void *arg, int64_t timeout_ms)
{
    int64_t deadline = pgt_now_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return 1;
        if (pgt_now_ms() >= deadline)
            return 0;
        sleep_ms(10);
    }
}

static int is_root(void)
{
    return geteuid() == 0;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int is_executable(const char *path)
{
    return access(path, X_OK) == 0;
}

/* Write (or append to) a file; when root, give it to the postgres user. */
static int write_file(const char *path, const char *text, int append)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0644);
    if (fd < 0) {
        fail("open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fail("write %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    if (is_root()) {
        struct passwd *pw = getpwnam(PGT_USER);
        if (pw != NULL && fchown(fd, pw->pw_uid, pw->pw_gid) != 0) {
            fail("chown %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    return close(fd);
}

/* Print the last few lines of a log file to stderr, to explain a failure. */
static void dump_tail(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char lines[20][512];
    int n = 0;
    while (fgets(lines[n % 20], sizeof lines[0], f) != NULL)
        n++;
    fclose(f);
    fprintf(stderr, "pgserver: --- last lines of %s ---\n", path);
    for (int i = n > 20 ? n - 20 : 0; i < n; i++)
        fprintf(stderr, "  %s", lines[i % 20]);
    fprintf(stderr, "pgserver: ---\n");
}

static int file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int found = 0;
    if (f == NULL)
        return 0;
    while (!found && fgets(line, sizeof line, f) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path) != 0 && errno != ENOENT ? -1 : 0;
    return unlink(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* rm -rf, refusing anything that is not one of our dirs under /tmp. */
static int rm_rf(const char *dir)
{
    if (strncmp(dir, "/tmp/dbpool-pg", 14) != 0 || strstr(dir, "..") != NULL) {
        fail("refusing to remove %s", dir);
        return -1;
    }
    if (!exists(dir))
        return 0;
    if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        fail("could not remove %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Subprocesses                                                              */
/* ------------------------------------------------------------------------ */

static const char *runuser_path(void)
{
    static const char *const paths[] = {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (is_executable(paths[i]))
            return paths[i];
    return NULL;
}

/* Append `arg` to buf as a single-quoted shell word. */
static int shell_quote(char *buf, size_t cap, const char *arg)
{
    size_t len = strlen(buf);
    if (len + 2 >= cap)
        return -1;
    buf[len++] = '\'';
    for (const char *p = arg; *p; p++) {
        const char *piece = *p == '\'' ? "'\\''" : NULL;
        size_t plen = piece ? strlen(piece) : 1;
        if (len + plen + 2 >= cap)
            return -1;
        if (piece)
            memcpy(buf + len, piece, plen);
        else
            buf[len] = *p;
        len += plen;
    }
    buf[len++] = '\'';
    buf[len] = '\0';
    return 0;
}

/*
 * Run argv (argv[0] is a full path) and wait at most timeout_ms; on timeout the
 * process group is killed. When root and as_pg, the command runs as the
 * postgres user via runuser (or su). stdin from stdin_path (or /dev/null),
 * stdout+stderr appended to log_path (or /dev/null). cwd is `cwd` (or /tmp):
 * the postgres user may not be able to enter the test's working directory.
 * Uses posix_spawn, which is safe in a multi-threaded (and sanitized) process.
 * Returns the exit status, or -1 if it could not run / timed out / was killed.
 */
static int run(const char *const *argv, int as_pg, const char *stdin_path, const char *log_path,
               const char *cwd, int64_t timeout_ms)
{
    const char *full[64];
    char sucmd[4096] = "";
    size_t n = 0;

    if (as_pg && is_root()) {
        const char *ru = runuser_path();
        if (ru != NULL) {
            full[n++] = ru;
            full[n++] = "-u";
            full[n++] = PGT_USER;
            full[n++] = "--";
        } else {
            for (size_t i = 0; argv[i] != NULL; i++) {
                if (i > 0 && strlen(sucmd) + 1 < sizeof sucmd)
                    strcat(sucmd, " ");
                if (shell_quote(sucmd, sizeof sucmd, argv[i]) != 0) {
                    fail("command too long");
                    return -1;
                }
            }
            full[n++] = "/bin/su";
            full[n++] = PGT_USER;
            full[n++] = "-s";
            full[n++] = "/bin/sh";
            full[n++] = "-c";
            full[n++] = sucmd;
        }
    }
    if (sucmd[0] == '\0') {
        for (size_t i = 0; argv[i] != NULL; i++) {
            if (n + 1 >= sizeof full / sizeof full[0]) {
                fail("too many arguments");
                return -1;
            }
            full[n++] = argv[i];
        }
    }
    full[n] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, stdin_path ? stdin_path : "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log_path ? log_path : "/dev/null",
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addchdir_np(&fa, cwd ? cwd : "/tmp");
    /* Own process group, so a timeout can kill the whole tree; no signal that
     * the test blocks or ignores stays blocked or ignored in the child. */
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    static const int sigs[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGPIPE, SIGALRM,
                               SIGTERM, SIGUSR1, SIGUSR2, SIGCHLD};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&dfl, sigs[i]);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);

    pid_t pid;
    int rc = posix_spawn(&pid, full[0], &fa, &attr, (char *const *)full, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        fail("cannot run %s: %s", full[0], strerror(rc));
        return -1;
    }

    int64_t deadline = pgt_now_ms() + timeout_ms;
    int status;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            fail("waitpid %s: %s", argv[0], strerror(errno));
            return -1;
        }
        if (pgt_now_ms() >= deadline) {
            fail("%s did not finish in %lld ms; killed", argv[0], (long long)timeout_ms);
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            return -1;
        }
        sleep_ms(2);
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    fail("%s killed by signal %d", argv[0], WTERMSIG(status));
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Finding PostgreSQL                                                        */
/* ------------------------------------------------------------------------ */

/* PG_BINDIR, else the highest /usr/lib/postgresql/<N>/bin with initdb. */
static int find_bindir(char *out, size_t cap)
{
    const char *env = getenv("PG_BINDIR");
    if (env != NULL && env[0] != '\0') {
        if (fmt(out, cap, "%s", env) != 0)
            return -1;
    } else {
        DIR *d = opendir("/usr/lib/postgresql");
        long best = -1;
        if (d != NULL) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                char *end;
                long v = strtol(e->d_name, &end, 10);
                char probe[512];
                if (end == e->d_name || *end != '\0' || v <= best)
                    continue;
                fmt(probe, sizeof probe, "/usr/lib/postgresql/%s/bin/initdb", e->d_name);
                if (is_executable(probe))
                    best = v;
            }
            closedir(d);
        }
        if (best < 0) {
            fail("no PostgreSQL server found in /usr/lib/postgresql/*/bin (install the "
                 "'postgresql' package, or set PG_BINDIR)");
            return -1;
        }
        fmt(out, cap, "/usr/lib/postgresql/%ld/bin", best);
    }
    char probe[512];
    fmt(probe, sizeof probe, "%s/pg_ctl", out);
    if (!is_executable(probe)) {
        fail("%s is not executable", probe);
        return -1;
    }
    return 0;
}

/* "15.18" from `pg_ctl --version` ("pg_ctl (PostgreSQL) 15.18 (Debian ...)"). */
static int pg_version(const char *bindir, char *out, size_t cap)
{
    char cmd[600], line[256] = "";
    fmt(cmd, sizeof cmd, "'%s/pg_ctl' --version 2>/dev/null", bindir);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        fail("popen: %s", strerror(errno));
        return -1;
    }
    if (fgets(line, sizeof line, p) == NULL)
        line[0] = '\0';
    pclose(p);
    const char *v = strstr(line, "(PostgreSQL) ");
    if (v == NULL) {
        fail("cannot read the PostgreSQL version from %s/pg_ctl --version", bindir);
        return -1;
    }
    v += strlen("(PostgreSQL) ");
    size_t i = 0;
    for (; v[i] != '\0' && i + 1 < cap; i++) {
        char c = v[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '.'))
            break;
        out[i] = c;
    }
    out[i] = '\0';
    return i > 0 ? 0 : -1;
}

/* mkdtemp, then (as root) hand the dir to the postgres user. */
static int make_dir(char *templ)
{
    if (mkdtemp(templ) == NULL) {
        fail("mkdtemp %s: %s", templ, strerror(errno));
        return -1;
    }
    if (is_root()) {
        struct passwd *pw = getpwnam(PGT_USER);
        if (pw == NULL) {
            fail("running as root but there is no '%s' user (install the 'postgresql' "
                 "package)",
                 PGT_USER);
            rmdir(templ);
            return -1;
        }
        if (chown(templ, pw->pw_uid, pw->pw_gid) != 0) {
            fail("chown %s: %s", templ, strerror(errno));
            rmdir(templ);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Template: initdb once, then copy                                          */
/* ------------------------------------------------------------------------ */

static const char hba_conf[] = "# written by the dbpool test harness\n"
                               "local all all                 trust\n"
                               "host  all postgres 127.0.0.1/32 trust\n"
                               "host  all all      127.0.0.1/32 scram-sha-256\n";

/* Settings shared by every test server. harness.conf (per server) comes last. */
static const char base_conf[] = "\n# dbpool test harness\n"
                                "fsync = off\n"
                                "synchronous_commit = off\n"
                                "full_page_writes = off\n"
                                "password_encryption = 'scram-sha-256'\n"
                                "shared_buffers = 32MB\n"
                                "max_wal_size = 256MB\n"
                                "log_line_prefix = '%m [%p] %q%u@%d/%a '\n"
                                "include_if_exists = 'harness.conf'\n";

/*
 * Make sure the template for this PostgreSQL version and uid exists; return its
 * path. Built under a temporary name and rename()d into place, so a test binary
 * running in parallel either sees no template or a complete one; the loser of a
 * race throws its copy away.
 */
static int ensure_template(const char *bindir, char *out, size_t cap)
{
    char ver[64], probe[600];
    if (pg_version(bindir, ver, sizeof ver) != 0)
        return -1;
    unsigned uid = (unsigned)getuid();
    if (fmt(out, cap, "/tmp/dbpool-pgtemplate-%s-%u-%s", ver, uid, PGT_TEMPLATE_REV) != 0 ||
        fmt(probe, sizeof probe, "%s/data/global/pg_control", out) != 0)
        return -1;
    if (exists(probe))
        return 0;

    char tmp[400], data[500], log[500], sql[500], initdb[600], postgres[600];
    fmt(tmp, sizeof tmp, "%s.tmp-XXXXXX", out);
    if (make_dir(tmp) != 0)
        return -1;
    fmt(data, sizeof data, "%s/data", tmp);
    fmt(log, sizeof log, "%s/initdb.log", tmp);
    fmt(initdb, sizeof initdb, "%s/initdb", bindir);
    fmt(postgres, sizeof postgres, "%s/postgres", bindir);

    const char *init_argv[] = {initdb,  "-D", data,   "-U",         PGT_USER,    "-A",
                               "trust", "-E", "UTF8", "--locale=C", "--no-sync", NULL};
    int rc = run(init_argv, 1, NULL, log, tmp, T_INITDB);
    if (rc != 0) {
        fail("initdb failed (exit %d)", rc);
        dump_tail(log);
        goto fail;
    }

    char path[600];
    fmt(path, sizeof path, "%s/pg_hba.conf", data);
    if (write_file(path, hba_conf, 0) != 0)
        goto fail;
    fmt(path, sizeof path, "%s/postgresql.conf", data);
    if (write_file(path, base_conf, 1) != 0)
        goto fail;

    /* Create the password role in single-user mode: no port needed. */
    fmt(sql, sizeof sql, "%s/init.sql", tmp);
    if (write_file(
            sql, "CREATE ROLE " PGT_APP_ROLE " LOGIN SUPERUSER PASSWORD '" PGT_APP_PASSWORD "';\n",
            0) != 0)
        goto fail;
    const char *single_argv[] = {postgres, "--single", "-D", data, "postgres", NULL};
    rc = run(single_argv, 1, sql, log, tmp, T_SINGLE);
    if (rc != 0 || file_contains(log, "ERROR:")) {
        fail("creating role %s failed (exit %d)", PGT_APP_ROLE, rc);
        dump_tail(log);
        goto fail;
    }

    if (rename(tmp, out) != 0) {
        if (errno != EEXIST && errno != ENOTEMPTY) {
            fail("rename %s -> %s: %s", tmp, out, strerror(errno));
            goto fail;
        }
        rm_rf(tmp); /* another process won the race: use its template */
    }
    fmt(probe, sizeof probe, "%s/data/global/pg_control", out);
    if (!exists(probe)) {
        fail("template %s is incomplete; remove it", out);
        return -1;
    }
    return 0;

fail:
    rm_rf(tmp);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Server control                                                            */
/* ------------------------------------------------------------------------ */

/* A port nobody listens on right now (bind 0, read it, close). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int pg_ctl(const pgt_server *s, const char *const *args, int64_t timeout_ms)
{
    char bindir[400], exe[500], data[400], log[400];
    if (find_bindir(bindir, sizeof bindir) != 0)
        return -1;
    fmt(exe, sizeof exe, "%s/pg_ctl", bindir);
    fmt(data, sizeof data, "%s/data", s->dir);
    fmt(log, sizeof log, "%s/harness.log", s->dir);
    const char *argv[16] = {exe, "-D", data};
    size_t n = 3;
    for (size_t i = 0; args[i] != NULL && n + 1 < sizeof argv / sizeof argv[0]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return run(argv, 1, NULL, log, s->dir, timeout_ms);
}

static int ctl_start(pgt_server *s)
{
    char serverlog[400];
    fmt(serverlog, sizeof serverlog, "%s/server.log", s->dir);
    const char *args[] = {"start", "-w", "-t", "30", "-s", "-l", serverlog, NULL};
    int rc = pg_ctl(s, args, T_PGCTL);
    if (rc == 0)
        s->running = 1;
    return rc;
}

/*
 * A watchdog for when the test process dies without pgt_destroy (crash, ctest
 * timeout): a detached shell polls the test's pid once a second and, once it is
 * gone, stops the server (SIGQUIT = immediate shutdown) and removes the dir. It
 * exits by itself as soon as the dir is gone (pgt_destroy). Detached (setsid,
 * reparented to init) so that killing the test's process tree does not kill it.
 * Started as soon as the dir exists, so a kill during the copy leaves nothing.
 */
static void start_watchdog(const pgt_server *s)
{
    static const char script[] =
        "( while kill -0 \"$1\" 2>/dev/null && [ -d \"$2\" ]; do sleep 1; done;"
        "  [ -d \"$2\" ] || exit 0;"
        "  sleep 1;" /* let a cp or pg_ctl that was running finish */
        "  for try in 1 2 3; do"
        "    pid=$(head -n 1 \"$2/data/postmaster.pid\" 2>/dev/null);"
        "    if [ -n \"$pid\" ]; then kill -QUIT \"$pid\" 2>/dev/null;"
        "      i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; do"
        "        sleep 0.1; i=$((i+1)); done;"
        "      kill -KILL \"$pid\" 2>/dev/null; fi;"
        "    case \"$2\" in /tmp/dbpool-pg-*) rm -rf \"$2\";; esac;"
        "    [ -d \"$2\" ] || break; sleep 1;"
        "  done"
        ") </dev/null >/dev/null 2>&1 &";
    char pid[32];
    fmt(pid, sizeof pid, "%ld", (long)getpid());
    const char *argv[] = {"/bin/sh", "-c", script, "pgt-watchdog", pid, s->dir, NULL};

    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t child;
    int rc = posix_spawn(&child, argv[0], &fa, &attr, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        fail("watchdog not started: %s", strerror(rc)); /* not fatal */
        return;
    }
    /* The shell backgrounds the loop and exits at once. */
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
    }
}

static int write_harness_conf(const pgt_server *s, const char *extra_conf)
{
    char path[400], conf[4096];
    fmt(path, sizeof path, "%s/data/harness.conf", s->dir);
    if (fmt(conf, sizeof conf,
            "# per-server settings, written by the dbpool test harness\n"
            "listen_addresses = '127.0.0.1'\n"
            "port = %d\n"
            "unix_socket_directories = '%s'\n"
            "max_connections = 100\n"
            "%s\n",
            s->port, s->dir, extra_conf ? extra_conf : "") != 0)
        return -1;
    return write_file(path, conf, 0);
}

int pgt_start_conf(pgt_server *s, const char *extra_conf)
{
    char bindir[400], tmpl[400];
    memset(s, 0, sizeof *s);
    if (find_bindir(bindir, sizeof bindir) != 0 || ensure_template(bindir, tmpl, sizeof tmpl) != 0)
        return -1;

    fmt(s->dir, sizeof s->dir, "/tmp/dbpool-pg-XXXXXX");
    if (make_dir(s->dir) != 0) {
        s->dir[0] = '\0';
        return -1;
    }
    start_watchdog(s);
    char src[500], dst[500];
    fmt(src, sizeof src, "%s/data", tmpl);
    fmt(dst, sizeof dst, "%s/data", s->dir);
    /* As root cp -a keeps the postgres ownership; as a user it is ours anyway. */
    const char *cp_argv[] = {"/bin/cp", "-a", src, dst, NULL};
    int rc = run(cp_argv, 0, NULL, NULL, s->dir, T_COPY);
    if (rc != 0) {
        fail("copying the template %s failed (exit %d)", src, rc);
        pgt_destroy(s);
        return -1;
    }

    for (int attempt = 1; attempt <= PGT_START_TRIES; attempt++) {
        s->port = free_port();
        if (s->port <= 0) {
            fail("no free port: %s", strerror(errno));
            break;
        }
        if (write_harness_conf(s, extra_conf) != 0)
            break;
        rc = ctl_start(s);
        if (rc == 0) {
            fmt(s->conninfo, sizeof s->conninfo,
                "host=127.0.0.1 port=%d user=postgres dbname=postgres", s->port);
            return 0;
        }
        fail("start on port %d failed (exit %d), attempt %d of %d", s->port, rc, attempt,
             PGT_START_TRIES);
        /* Make sure a half-started postmaster is gone before the next attempt. */
        const char *stop_args[] = {"stop", "-m", "immediate", "-w", "-t", "30", NULL};
        pg_ctl(s, stop_args, T_PGCTL);
    }
    char log[400];
    fmt(log, sizeof log, "%s/server.log", s->dir);
    dump_tail(log);
    fmt(log, sizeof log, "%s/harness.log", s->dir);
    dump_tail(log);
    pgt_destroy(s);
    return -1;
}

int pgt_start(pgt_server *s)
{
    return pgt_start_conf(s, NULL);
}

static int signal_postmaster(const pgt_server *s, int sig);

int pgt_stop(pgt_server *s, const char *mode)
{
    if (s == NULL || s->dir[0] == '\0')
        return -1;
    if (mode == NULL || (strcmp(mode, "fast") != 0 && strcmp(mode, "immediate") != 0 &&
                         strcmp(mode, "smart") != 0)) {
        fail("pgt_stop: bad mode %s", mode ? mode : "(null)");
        return -1;
    }
    /* The shutdown starts now, with the signal pg_ctl would send: starting
     * pg_ctl (as the server's user) took more than 500 ms on a loaded
     * machine, so a fault meant for "mid-query" landed after the query.
     * pg_ctl then waits for the shutdown to end. */
    int sig = strcmp(mode, "fast") == 0        ? SIGINT
              : strcmp(mode, "immediate") == 0 ? SIGQUIT
                                               : SIGTERM;
    (void)signal_postmaster(s, sig);
    const char *args[] = {"stop", "-m", mode, "-w", "-t", "30", "-s", NULL};
    int rc = pg_ctl(s, args, T_PGCTL);
    char pidfile[400];
    fmt(pidfile, sizeof pidfile, "%s/data/postmaster.pid", s->dir);
    if (rc != 0 && !exists(pidfile))
        rc = 0; /* it had finished before pg_ctl looked ("is server running?") */
    if (rc != 0) {
        fail("pg_ctl stop -m %s failed (exit %d)", mode, rc);
        char log[400];
        fmt(log, sizeof log, "%s/harness.log", s->dir);
        dump_tail(log);
        return -1;
    }
    s->running = 0;
    return 0;
}

int pgt_resume(pgt_server *s)
{
    if (s == NULL || s->dir[0] == '\0')
        return -1;
    int rc = ctl_start(s);
    if (rc != 0) {
        fail("restart on port %d failed (exit %d)", s->port, rc);
        char log[400];
        fmt(log, sizeof log, "%s/server.log", s->dir);
        dump_tail(log);
        return -1;
    }
    return 0;
}

/* Send sig to the postmaster (its pid from postmaster.pid); 0 if sent. */
static int signal_postmaster(const pgt_server *s, int sig)
{
    char path[400];
    fmt(path, sizeof path, "%s/data/postmaster.pid", s->dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long pid = 0;
    int rc = fscanf(f, "%ld", &pid) == 1 && pid > 1 ? kill((pid_t)pid, sig) : -1;
    fclose(f);
    return rc;
}

/* Last resort when pg_ctl cannot stop it: SIGKILL the postmaster. */
static void kill_postmaster(const pgt_server *s)
{
    (void)signal_postmaster(s, SIGKILL);
}

void pgt_destroy(pgt_server *s)
{
    if (s == NULL || s->dir[0] == '\0')
        return;
    char pidfile[400];
    fmt(pidfile, sizeof pidfile, "%s/data/postmaster.pid", s->dir);
    if (s->running || exists(pidfile)) {
        const char *args[] = {"stop", "-m", "immediate", "-w", "-t", "30", "-s", NULL};
        if (pg_ctl(s, args, T_PGCTL) != 0)
            kill_postmaster(s);
    }
    /* A postmaster that was still exiting may write a file while we remove. */
    for (int i = 0; i < 3 && rm_rf(s->dir) != 0; i++)
        sleep_ms(200);
    s->dir[0] = '\0';
    s->running = 0;
}

/* ------------------------------------------------------------------------ */
/* SQL helpers                                                               */
/* ------------------------------------------------------------------------ */

static PGconn *connect_su(const pgt_server *s)
{
    char ci[700];
    fmt(ci, sizeof ci, "%s connect_timeout=5 application_name=pgt_harness", s->conninfo);
    PGconn *c = PQconnectdb(ci);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        fail("connect to %s: %s", s->conninfo, c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return NULL;
    }
    return c;
}

int pgt_exec(const pgt_server *s, const char *sql)
{
    PGconn *c = connect_su(s);
    if (c == NULL)
        return -1;
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? 0 : -1;
    if (rc != 0)
        fail("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return rc;
}

/* One integer from row 0 col 0 of a query with up to one text parameter. */
static int64_t query_int1(const pgt_server *s, const char *sql, const char *param)
{
    PGconn *c = connect_su(s);
    if (c == NULL)
        return -1;
    const char *params[1] = {param};
    PGresult *r = PQexecParams(c, sql, param ? 1 : 0, NULL, params, NULL, NULL, 0);
    int64_t v = -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fail("%s: %s", sql, PQerrorMessage(c));
    } else if (PQntuples(r) < 1 || PQnfields(r) < 1 || PQgetisnull(r, 0, 0)) {
        fail("%s: no value", sql);
    } else {
        char *end;
        const char *txt = PQgetvalue(r, 0, 0);
        errno = 0;
        long long x = strtoll(txt, &end, 10);
        if (errno != 0 || end == txt || *end != '\0')
            fail("%s: not an integer: %s", sql, txt);
        else
            v = (int64_t)x;
    }
    PQclear(r);
    PQfinish(c);
    return v;
}

int64_t pgt_query_int(const pgt_server *s, const char *sql)
{
    return query_int1(s, sql, NULL);
}

/* Without an application name, every client but the harness's own sessions
 * (application_name pgt_harness): one the harness closed a moment ago may
 * still be listed while its backend exits. */
int pgt_terminate(const pgt_server *s, const char *appname)
{
    /* pg_terminate_backend(pid, timeout) (PostgreSQL 14+) waits until each backend
     * is gone, so a test can count backends right after. */
    static const char sql_all[] =
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND application_name <> 'pgt_harness'";
    static const char sql_app[] =
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
        "AND application_name = $1";
    return (int)query_int1(s, appname ? sql_app : sql_all, appname);
}

int pgt_terminate_when_sleeping(const pgt_server *s, const char *appname, int64_t timeout_ms)
{
    static const char sql[] = "SELECT count(*) FROM pg_stat_activity "
                              "WHERE application_name = $1 AND state = 'active' "
                              "AND query LIKE 'SELECT pg_sleep%'";
    int64_t end = pgt_now_ms() + timeout_ms;
    while (pgt_now_ms() < end && query_int1(s, sql, appname) < 1)
        sleep_ms(10); /* pacing a poll of the server, not synchronisation */
    return pgt_terminate(s, appname);
}

int pgt_count_backends(const pgt_server *s, const char *appname)
{
    static const char sql_all[] = "SELECT count(*) FROM pg_stat_activity "
                                  "WHERE backend_type = 'client backend' "
                                  "AND application_name <> 'pgt_harness'";
    static const char sql_app[] = "SELECT count(*) FROM pg_stat_activity "
                                  "WHERE backend_type = 'client backend' "
                                  "AND pid <> pg_backend_pid() AND application_name = $1";
    return (int)query_int1(s, appname ? sql_app : sql_all, appname);
}

int pgt_join(pthread_t t, int64_t timeout_ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(t, NULL, &ts);
}
