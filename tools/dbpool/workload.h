/* workload.h - what `dbpool bench` and `dbpool drill` run per transaction:
 * a built-in (select1, sleep:<ms>, rw[:<read %>]) or a SQL script file, and
 * the two ways of running it (blocking, or asynchronous with a deadline). */
#ifndef DBPOOL_CLI_WORKLOAD_H
#define DBPOOL_CLI_WORKLOAD_H

#include <libpq-fe.h>
#include <stdint.h>

typedef enum { WL_SELECT1, WL_SLEEP, WL_RW, WL_SCRIPT } workload_kind;

typedef struct workload {
    workload_kind kind;
    char name[64]; /* as given: "select1", "sleep:5", "rw:80", "file:x.sql" */
    int sleep_ms;  /* WL_SLEEP */
    int read_pct;  /* WL_RW: share of reads (the rest are updates) */
    long rows;     /* WL_RW: rows in the bench table */
    char *script;  /* WL_SCRIPT: the file's text, sent as one simple query */
    char sql[96];  /* SELECT1/SLEEP: the fixed statement */
} workload;

/* Outcome of one statement. */
typedef enum {
    Q_OK = 0,
    Q_SQL_ERROR, /* the server said no; the connection is fine */
    Q_CONN_LOST, /* the connection broke: discard it */
    Q_DEADLINE   /* no answer before the deadline (async only): discard it */
} query_result;

#define WL_BENCH_TABLE "dbpool_bench"

/* Parse a built-in name or "@file.sql" / a path to a script (see --help).
 * Returns 0, or -1 with a message in err. */
int workload_parse(workload *w, const char *spec, long rows, char *err, size_t errlen);
void workload_free(workload *w);

/* Create and fill the bench table for WL_RW on conn (no-op for others).
 * Returns 0 or -1 with a message in err. */
int workload_setup(const workload *w, PGconn *conn, char *err, size_t errlen);

/* The SQL of the next transaction. `rng` is the caller's xorshift state. */
const char *workload_next(const workload *w, uint64_t *rng, char *buf, size_t buflen);

/* Run sql and read every result, blocking (PQexec). */
query_result run_blocking(PGconn *conn, const char *sql);

/* Run sql without ever blocking past deadline_ns (CLOCK_MONOTONIC ns):
 * PQsendQuery + poll. On Q_DEADLINE the connection is mid-query: discard it. */
query_result run_async(PGconn *conn, const char *sql, int64_t deadline_ns);

/* xorshift64* */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(0x2545F4914F6CDD1D);
}

#endif
