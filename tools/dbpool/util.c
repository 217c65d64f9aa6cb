/* util.c - helpers shared by the commands: option values, errors, conninfo,
 * clock, signals, JSON strings. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
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

int parse_duration_ms(const char *s, int64_t bare_unit_ms, int64_t *out_ms)
{
    char *end;
    double v, mul;

    if (!s || !*s || !(*s >= '0' && *s <= '9'))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno || !isfinite(v) || v < 0)
        return -1;
    if (*end == '\0')
        mul = (double)bare_unit_ms;
    else if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0)
        mul = 1000;
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

    if (c == ':')
        return usage_error(cmd, "option '%s' needs a value", arg);
    if (optopt && strncmp(arg, "--", 2) != 0)
        return usage_error(cmd, "unknown option '-%c'", optopt);
    return usage_error(cmd, "unknown option '%s'", arg);
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

const char *resolve_conninfo(const char *cmd, const char *arg, char **shown)
{
    const char *ci = arg ? arg : getenv("DATABASE_URL");

    *shown = NULL;
    if (!ci || !*ci) {
        usage_error(cmd, "no database given: pass a conninfo string or URI, or set DATABASE_URL");
        return NULL;
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

int apply_pool_option(const char *cmd, dbpool_config *cfg, char *nv)
{
    char *eq = strchr(nv, '=');

    if (!eq || eq == nv)
        return usage_error(cmd, "--set wants name=value, got '%s'", nv);
    *eq = '\0';
    int rc = dbpool_config_set(cfg, nv, eq + 1);
    *eq = '=';
    if (rc != 0)
        return usage_error(cmd, "--set %s: %s", nv, dbpool_last_error());
    /* dbpool_config_set keeps pointers to string values: `nv` lives in argv */
    return 0;
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

    while (now_ns() < until && !g_stop) {
        if (dbpool_stats_get(pool, &st) != 0)
            return -1;
        if (st.idle >= st.size)
            return 0;
        if (st.state == DBPOOL_STATE_DOWN || st.state == DBPOOL_STATE_STOPPED) {
            fail_msg(cmd, "cannot connect%s: %s", via, st.last_error);
            return -1;
        }
        sleep_ms(10, &g_stop);
    }
    if (dbpool_stats_get(pool, &st) == 0)
        fail_msg(cmd, "only %d of %d pool connections opened%s%s", st.idle, st.size,
                 st.last_error[0] ? ": " : "", st.last_error);
    return -1;
}
