/* workload.c - the statements `bench` and `drill` send, and how they are run:
 * blocking (PQexec, as an application would) or bounded by a deadline
 * (PQsendQuery + poll, so a black-holed server cannot hang a client). */
#include "workload.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_SCRIPT_BYTES (1024 * 1024)

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf, shown[ARG_SHOWN_LEN];
    size_t n;

    /* `-w URL` takes a misplaced conninfo for a file name: never echo its password */
    arg_shown(path, shown, sizeof(shown));
    if (!f) {
        snprintf(err, errlen, "cannot open script %s: %s", shown, strerror(errno));
        return NULL;
    }
    buf = malloc(MAX_SCRIPT_BYTES + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    n = fread(buf, 1, MAX_SCRIPT_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > MAX_SCRIPT_BYTES) {
        free(buf);
        snprintf(err, errlen, "script %s: %s", shown, bad ? "read error" : "larger than 1 MiB");
        return NULL;
    }
    buf[n] = '\0';
    if (strlen(buf) != n) {
        free(buf);
        snprintf(err, errlen, "script %s contains a NUL byte", shown);
        return NULL;
    }
    /* nothing but whitespace and comments is almost certainly a mistake */
    const char *p = buf;
    int content = 0;
    while (*p) {
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
        } else if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ';') {
            p++;
        } else {
            content = 1;
            break;
        }
    }
    if (!content) {
        free(buf);
        snprintf(err, errlen, "script %s has no SQL in it", shown);
        return NULL;
    }
    return buf;
}

int workload_parse(workload *w, const char *spec, long rows, char *err, size_t errlen)
{
    char shown[ARG_SHOWN_LEN];
    long v;

    memset(w, 0, sizeof(*w));
    w->rows = rows;
    snprintf(w->name, sizeof(w->name), "%s", spec);
    if (strcmp(spec, "select1") == 0) {
        w->kind = WL_SELECT1;
        snprintf(w->sql, sizeof(w->sql), "SELECT 1");
        return 0;
    }
    if (strncmp(spec, "sleep:", 6) == 0) {
        if (parse_int_range(spec + 6, 0, 3600000, &v) != 0) {
            snprintf(err, errlen, "bad workload %s: sleep:<ms> wants 0..3600000",
                     arg_shown(spec, shown, sizeof(shown)));
            return -1;
        }
        w->kind = WL_SLEEP;
        w->sleep_ms = (int)v;
        snprintf(w->sql, sizeof(w->sql), "SELECT pg_sleep(%d.%03d)", w->sleep_ms / 1000,
                 w->sleep_ms % 1000);
        return 0;
    }
    if (strcmp(spec, "rw") == 0 || strncmp(spec, "rw:", 3) == 0) {
        v = 80;
        if (spec[2] == ':' && parse_int_range(spec + 3, 0, 100, &v) != 0) {
            snprintf(err, errlen, "bad workload %s: rw:<read percent> wants 0..100",
                     arg_shown(spec, shown, sizeof(shown)));
            return -1;
        }
        w->kind = WL_RW;
        w->read_pct = (int)v;
        snprintf(w->name, sizeof(w->name), "rw:%d", w->read_pct);
        return 0;
    }
    const char *path = spec[0] == '@' ? spec + 1 : spec;
    if (spec[0] == '@' || strchr(spec, '/') || strchr(spec, '.')) {
        w->kind = WL_SCRIPT;
        w->script = read_file(path, err, errlen);
        if (!w->script)
            return -1;
        /* the name goes into reports: the same rule as for messages */
        snprintf(w->name, sizeof(w->name), "file:%.58s",
                 arg_may_hold_secret(path) ? "(name not shown)" : path);
        return 0;
    }
    snprintf(err, errlen,
             "unknown workload %s (built-ins: select1, sleep:<ms>, rw[:<read %%>]; "
             "or a SQL file: @file.sql)",
             arg_shown(spec, shown, sizeof(shown)));
    return -1;
}

void workload_free(workload *w)
{
    free(w->script);
    w->script = NULL;
}

static int exec_ok(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(err, errlen, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    if (!ok) {
        size_t n = strlen(err);
        while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
            err[--n] = '\0';
    }
    return ok ? 0 : -1;
}

int workload_setup(const workload *w, PGconn *c, char *err, size_t errlen)
{
    char sql[512];

    if (w->kind != WL_RW)
        return 0;
    /* Idempotent: an existing table with enough rows is reused as is. */
    if (exec_ok(c,
                "CREATE TABLE IF NOT EXISTS " WL_BENCH_TABLE
                " (id integer PRIMARY KEY, v bigint NOT NULL DEFAULT 0,"
                " filler text NOT NULL DEFAULT repeat('x', 80))",
                err, errlen) != 0)
        return -1;
    snprintf(sql, sizeof(sql),
             "INSERT INTO " WL_BENCH_TABLE " (id) SELECT g FROM generate_series(1, %ld) g"
             " ON CONFLICT (id) DO NOTHING",
             w->rows);
    if (exec_ok(c, sql, err, errlen) != 0)
        return -1;
    return exec_ok(c, "ANALYZE " WL_BENCH_TABLE, err, errlen);
}

const char *workload_next(const workload *w, uint64_t *rng, char *buf, size_t buflen)
{
    switch (w->kind) {
    case WL_SELECT1:
    case WL_SLEEP:
        return w->sql;
    case WL_SCRIPT:
        return w->script;
    case WL_RW: {
        uint64_t r = rng_next(rng);
        long id = (long)((r >> 8) % (uint64_t)w->rows) + 1;
        if ((int)(r % 100) < w->read_pct)
            snprintf(buf, buflen, "SELECT v FROM " WL_BENCH_TABLE " WHERE id = %ld", id);
        else
            snprintf(buf, buflen, "UPDATE " WL_BENCH_TABLE " SET v = v + 1 WHERE id = %ld", id);
        return buf;
    }
    }
    return "SELECT 1";
}

/* Classify one result. A NULL result or a broken connection is a lost
 * connection; anything else that is not a success is the server saying no. */
static query_result classify(PGconn *c, PGresult *r)
{
    if (!r)
        return PQstatus(c) == CONNECTION_OK ? Q_SQL_ERROR : Q_CONN_LOST;
    switch (PQresultStatus(r)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
        return Q_OK;
    default:
        return PQstatus(c) == CONNECTION_OK ? Q_SQL_ERROR : Q_CONN_LOST;
    }
}

query_result run_blocking(PGconn *c, const char *sql)
{
    /* PQexec keeps the last result; a multi-statement script stops at the
     * first error, which is then the last result. */
    PGresult *r = PQexec(c, sql);
    query_result q = classify(c, r);
    PQclear(r);
    return q;
}

/* Wait for the socket until deadline. 1 ready, 0 deadline, -1 error. */
static int wait_sock(PGconn *c, short events, int64_t deadline_ns)
{
    struct pollfd pfd = {PQsocket(c), events, 0};

    if (pfd.fd < 0)
        return -1;
    for (;;) {
        int64_t left = deadline_ns - now_ns();
        if (left <= 0)
            return 0;
        int ms = (int)((left + 999999) / 1000000);
        int n = poll(&pfd, 1, ms);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

query_result run_async(PGconn *c, const char *sql, int64_t deadline_ns)
{
    query_result worst = Q_OK;

    /* Non-blocking mode so that not even the send can stall on a full
     * socket buffer; check-in switches the connection back. */
    if (PQsetnonblocking(c, 1) != 0 || !PQsendQuery(c, sql))
        return PQstatus(c) == CONNECTION_OK ? Q_SQL_ERROR : Q_CONN_LOST;
    for (;;) {
        int f = PQflush(c);
        if (f == 0)
            break;
        if (f < 0)
            return Q_CONN_LOST;
        int w = wait_sock(c, POLLOUT | POLLIN, deadline_ns);
        if (w == 0)
            return Q_DEADLINE;
        if (w < 0 || !PQconsumeInput(c))
            return Q_CONN_LOST;
    }
    for (;;) {
        while (PQisBusy(c)) {
            int w = wait_sock(c, POLLIN, deadline_ns);
            if (w == 0)
                return Q_DEADLINE;
            if (w < 0 || !PQconsumeInput(c))
                return Q_CONN_LOST;
        }
        PGresult *r = PQgetResult(c);
        if (!r)
            break;
        query_result q = classify(c, r);
        PQclear(r);
        if (q > worst)
            worst = q;
    }
    if (worst == Q_OK && PQstatus(c) != CONNECTION_OK)
        worst = Q_CONN_LOST;
    return worst;
}
