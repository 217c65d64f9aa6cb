/* util.c - helpers shared by the commands: option values, errors, conninfo,
 * clock, signals, JSON strings. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

volatile sig_atomic_t g_stop;

int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "dbpool %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see dbpool %s --help)\n", cmd);
    return EXIT_USAGE;
}

void fail_msg(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "dbpool %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int parse_int_range(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    if (!s || !*s)
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int parse_duration_ms(const char *s, int64_t *out_ms)
{
    char *end;
    double v, mul;

    if (!s || !*s || !(*s >= '0' && *s <= '9'))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno || !isfinite(v) || v < 0)
        return -1;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mul = 1000; /* a bare number is seconds, in every option */
    else if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return -1;
    v *= mul;
    if (v > 1e12)
        return -1;
    *out_ms = (int64_t)(v + 0.5);
    return 0;
}

int getopt_error(const char *cmd, int c, char **argv)
{
    extern int optind, optopt;
    const char *arg = argv[optind - 1];
    char shown[ARG_SHOWN_LEN];

    if (strncmp(arg, "--", 2) != 0) {
        /* a short option: name the letter only, the rest of the word may be a value */
        if (c == ':')
            return usage_error(cmd, "option '-%c' needs a value", optopt);
        return usage_error(cmd, "unknown option '-%c'", optopt);
    }
    /* a long option: "--name" or "--name=value"; the value is never shown */
    size_t n = strcspn(arg, "=");
    char *name = strndup(arg, n);
    if (!name)
        return usage_error(cmd, "bad option");
    arg_shown(name, shown, sizeof(shown));
    free(name);
    if (c == ':')
        return usage_error(cmd, "option %s needs a value", shown);
    if (arg[n] == '=' && optopt)
        return usage_error(cmd, "option %s takes no value", shown);
    return usage_error(cmd, "unknown option %s", shown);
}

int arg_may_hold_secret(const char *s)
{
    return strchr(s, '=') || strchr(s, '@') || strstr(s, "://");
}

/* 'src' into buf, control characters as '?', cut with "..." when too long. */
static void quote_into(char *buf, size_t len, const char *src)
{
    size_t n = strlen(src), keep = n, j = 0;

    if (len < 8) {
        if (len)
            buf[0] = '\0';
        return;
    }
    if (n + 3 > len)    /* two quotes and the NUL */
        keep = len - 6; /* and "..." */
    buf[j++] = '\'';
    for (size_t i = 0; i < keep; i++) {
        char ch = src[i];
        if ((unsigned char)ch < 0x20 || ch == 0x7f)
            ch = '?';
        buf[j++] = ch;
    }
    if (keep < n) {
        memcpy(buf + j, "...", 3);
        j += 3;
    }
    buf[j++] = '\'';
    buf[j] = '\0';
}

const char *arg_shown(const char *arg, char *buf, size_t len)
{
    char *red = NULL;

    if (!arg_may_hold_secret(arg)) {
        quote_into(buf, len, arg);
        return buf;
    }
    if (conninfo_redacted(arg, &red) == 0 && *red)
        quote_into(buf, len, red);
    else
        snprintf(buf, len, "a value that looks like a connection string (not shown)");
    free(red);
    return buf;
}

int conninfo_redacted(const char *conninfo, char **out)
{
    /* Each value comes out at most twice its length (escapes) plus quotes and
     * its keyword; keywords come from the input except for URIs' host, port,
     * user, password, dbname. Grow in case libpq ever expands more. */
    size_t cap = 2 * strlen(conninfo) + 1024;

    *out = NULL;
    for (int tries = 0; tries < 6; tries++, cap *= 2) {
        char *buf = malloc(cap);
        if (!buf)
            return DBPOOL_ENOMEM;
        int rc = dbpool_pg_redact(conninfo, buf, cap);
        if (rc == 0) {
            *out = buf;
            return 0;
        }
        free(buf);
        if (rc != DBPOOL_ENOMEM)
            return rc;
    }
    return DBPOOL_ENOMEM;
}

/* What libpq will use when the conninfo is empty: its defaults with the PG*
 * environment variables and a PGSERVICE entry of the service file applied
 * (PQconndefaults). Malloc'd "service=... host=... port=... (libpq defaults
 * and PG* environment)"; never a password. */
static char *env_shown(void)
{
    static const char *const keys[] = {"service", "host", "hostaddr", "port", "dbname", "user"};
    PQconninfoOption *defs = PQconndefaults();
    size_t cap = 64;
    char *buf;

    for (PQconninfoOption *o = defs; o && o->keyword; o++)
        if (o->val)
            cap += strlen(o->keyword) + 2 * strlen(o->val) + 4;
    if (!(buf = malloc(cap))) {
        PQconninfoFree(defs);
        return NULL;
    }
    size_t n = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
        for (PQconninfoOption *o = defs; o && o->keyword; o++) {
            if (strcmp(o->keyword, keys[k]) != 0 || !o->val || !*o->val)
                continue;
            n += (size_t)snprintf(buf + n, cap - n, "%s%s=", n ? " " : "", o->keyword);
            for (const char *c = o->val; *c && n + 3 < cap; c++) {
                char ch = *c;
                if (ch == ' ' || (unsigned char)ch < 0x20)
                    ch = '_'; /* one word per value in the display */
                buf[n++] = ch;
            }
            buf[n] = '\0';
        }
    snprintf(buf + n, cap - n, "%s(libpq defaults and PG* environment)", n ? " " : "");
    PQconninfoFree(defs);
    return buf;
}

const char *resolve_conninfo(const char *cmd, const char *arg, char **shown)
{
    const char *ci = arg ? arg : getenv("DATABASE_URL");

    *shown = NULL;
    if (!ci || !*ci) {
        /* as psql and pgbench: libpq's defaults, PG* variables, service file */
        if (!(*shown = env_shown())) {
            fail_msg(cmd, "out of memory");
            return NULL;
        }
        return "";
    }
    int rc = conninfo_redacted(ci, shown);
    if (rc == DBPOOL_ENOMEM) {
        fail_msg(cmd, "out of memory");
        return NULL;
    }
    if (rc != 0) {
        /* the library's message never contains the password */
        usage_error(cmd, "cannot parse the conninfo: %s", dbpool_last_error());
        return NULL;
    }
    return ci;
}

/* Is `name` a duration option of dbpool_config? Asked of the library itself
 * (the option table lives there): a duration takes "1ms" and refuses "1x";
 * integers, booleans and enums refuse "1ms", strings take "1x". */
static int is_duration_option(const char *name)
{
    dbpool_config scratch;

    dbpool_config_init(&scratch);
    return dbpool_config_set(&scratch, name, "1ms") == 0 &&
           dbpool_config_set(&scratch, name, "1x") != 0;
}

int apply_pool_option(const char *cmd, dbpool_config *cfg, char *nv)
{
    char *eq = strchr(nv, '=');
    char shown[ARG_SHOWN_LEN];

    if (!eq || eq == nv)
        return usage_error(cmd, "--set wants name=value, got %s",
                           arg_shown(nv, shown, sizeof(shown)));
    *eq = '\0';
    const char *name = nv, *value = eq + 1;
    /* The library's message quotes the name or the value: not when either
     * could be (part of) a conninfo put here by mistake, as in
     * `--set 'lifo=true host=db password=...'`. */
    int secret = arg_may_hold_secret(name) || arg_may_hold_secret(value);
    int64_t ms;
    int rc;
    if (strcmp(name, "name") == 0 && (secret || strpbrk(value, " \t\n"))) {
        /* the pool name goes into every log line and metrics label */
        rc = usage_error(cmd, "--set name: not used: a pool name cannot contain spaces, '=', "
                              "'@' or '://' (it goes into log lines and metrics labels)");
    } else if (!secret && is_duration_option(name) && parse_duration_ms(value, &ms) == 0) {
        /* one duration syntax in every option: what -T takes (fractions; a
         * bare number is seconds, where dbpool_config_set() reads ms) */
        char msv[32];
        snprintf(msv, sizeof(msv), "%lldms", (long long)ms);
        rc = dbpool_config_set(cfg, name, msv) == 0
                 ? 0
                 : usage_error(cmd, "--set %s: %s", arg_shown(name, shown, sizeof(shown)),
                               dbpool_last_error());
    } else if (dbpool_config_set(cfg, name, value) == 0) {
        rc = 0; /* it keeps pointers to string values: `nv` lives in argv */
    } else if (arg_may_hold_secret(name)) {
        rc = usage_error(cmd, "--set: unknown option (not shown: it looks like a connection "
                              "string)");
    } else if (secret) {
        rc = usage_error(cmd,
                         "--set %s: rejected (the value is not shown: it looks like a "
                         "connection string)",
                         arg_shown(name, shown, sizeof(shown)));
    } else {
        rc = usage_error(cmd, "--set %s: %s", arg_shown(name, shown, sizeof(shown)),
                         dbpool_last_error());
    }
    *eq = '=';
    return rc;
}

/* Append s to buf (at *n), single-quoted for a shell when it needs it. */
static void append_shell(char *buf, size_t len, size_t *n, const char *s)
{
    int plain = *s != '\0';
    for (const char *c = s; *c; c++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:=@,+-%", *c))
            plain = 0;
    if (*n + 1 < len && *n)
        buf[(*n)++] = ' ';
    if (!plain && *n + 1 < len)
        buf[(*n)++] = '\'';
    for (const char *c = s; *c && *n + 5 < len; c++) {
        if (*c == '\'' && !plain) {
            memcpy(buf + *n, "'\\''", 4);
            *n += 4;
        } else {
            buf[(*n)++] = *c;
        }
    }
    if (!plain && *n + 1 < len)
        buf[(*n)++] = '\'';
    buf[*n] = '\0';
}

void command_shown(int argc, char **argv, char *buf, size_t len)
{
    size_t n = 0;

    if (len == 0)
        return;
    buf[0] = '\0';
    append_shell(buf, len, &n, "dbpool");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        char *red = NULL;
        int set_value = i > 0 && strcmp(argv[i - 1], "--set") == 0;
        if (strncmp(a, "--set=", 6) == 0) {
            set_value = 1;
            append_shell(buf, len, &n, "--set");
            a += 6;
        }
        if (set_value) {
            const char *eq = strchr(a, '=');
            char *name = eq ? strndup(a, (size_t)(eq - a)) : NULL;
            int ok = name && !arg_may_hold_secret(name) && !arg_may_hold_secret(eq + 1);
            free(name);
            append_shell(buf, len, &n, ok ? a : "(not shown)");
        } else if (!arg_may_hold_secret(a)) {
            append_shell(buf, len, &n, a);
        } else if (conninfo_redacted(a, &red) == 0 && *red) {
            append_shell(buf, len, &n, red);
        } else {
            append_shell(buf, len, &n, "(not shown)");
        }
        free(red);
    }
    if (n + 6 >= len && len > 4)
        memcpy(buf + len - 4, "...", 4);
}

int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void sleep_until_ns(int64_t t)
{
    struct timespec ts = {(time_t)(t / 1000000000), (long)(t % 1000000000)};

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !g_stop)
        ;
}

void sleep_ms(int64_t ms, volatile sig_atomic_t *stop)
{
    int64_t until = now_ns() + ms * 1000000;

    for (;;) {
        int64_t left = until - now_ns();
        if (left <= 0 || (stop && *stop))
            return;
        struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
        nanosleep(&ts, NULL); /* EINTR: loop and look at *stop */
    }
}

void local_timestamp(char *buf, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;

    localtime_r(&t, &tm);
    if (!strftime(buf, len, "%Y-%m-%d %H:%M:%S %z", &tm) && len)
        buf[0] = '\0';
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

void install_stop_handler(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

void cli_log_cb(void *arg, dbpool_log_level level, const char *pool_name, const char *msg)
{
    (void)arg;
    /* on a terminal, clear the progress line first so the message stands alone */
    fprintf(stderr, "%s  [pool %s %s] %s\n", isatty(STDERR_FILENO) ? "\r\033[K" : "", pool_name,
            level >= DBPOOL_LOG_ERROR     ? "error"
            : level == DBPOOL_LOG_WARNING ? "warning"
            : level == DBPOOL_LOG_INFO    ? "info"
                                          : "debug",
            msg);
}

int wait_pool_ready(const char *cmd, dbpool *pool, int64_t connect_timeout_ms, const char *via)
{
    dbpool_stats st;
    int64_t until = now_ns() + (connect_timeout_ms + 5000) * 1000000;
    int rc = DBPOOL_ETIMEDOUT;

    if (dbpool_stats_get(pool, &st) != 0)
        return -1;
    /* in slices, so that Ctrl-C is seen while waiting */
    while (rc == DBPOOL_ETIMEDOUT && !g_stop) {
        int64_t left_ms = (until - now_ns()) / 1000000;
        if (left_ms <= 0)
            break;
        rc = dbpool_wait_ready(pool, st.size, left_ms < 100 ? left_ms : 100);
    }
    if (rc == 0)
        return 0;
    if (rc == DBPOOL_EUNAVAILABLE && dbpool_stats_get(pool, &st) == 0) {
        fail_msg(cmd, "cannot connect%s: %s", via, st.last_error);
        return -1;
    }
    if (dbpool_stats_get(pool, &st) == 0)
        fail_msg(cmd, "only %d of %d pool connections opened%s%s", st.idle, st.size,
                 st.last_error[0] ? ": " : "", st.last_error);
    return -1;
}

int out_open(out_file *o, const char *cmd, const char *what, const char *path)
{
    char shown[ARG_SHOWN_LEN];

    o->path = path;
    o->created = 1;
    o->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (o->fd < 0 && errno == EEXIST) {
        o->created = 0;
        o->fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    }
    if (o->fd < 0) {
        fail_msg(cmd, "cannot write %s to %s: %s", what, arg_shown(path, shown, sizeof(shown)),
                 strerror(errno));
        return -1;
    }
    return 0;
}

FILE *out_stream(out_file *o)
{
    struct stat st;
    int fd = o->fd;

    o->fd = -1;
    if (fd < 0) {
        errno = EBADF;
        return NULL;
    }
    /* a regular file loses its old contents now; /dev/stdout, a pipe... cannot */
    if (fstat(fd, &st) != 0 || (S_ISREG(st.st_mode) && ftruncate(fd, 0) != 0)) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return f;
}

int out_close(FILE *f)
{
    int bad = ferror(f);

    if (fclose(f) != 0)
        return -1;
    if (bad) {
        errno = EIO;
        return -1;
    }
    return 0;
}

void out_abandon(out_file *o)
{
    if (o->fd < 0)
        return;
    close(o->fd);
    o->fd = -1;
    if (o->created)
        unlink(o->path);
}
