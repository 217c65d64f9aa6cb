/*
 * pg_query.c - the query helpers in one program: one call per statement,
 * parameters, honest outcomes, a statement timeout, timings, and a statement
 * on a connection you hold.
 *
 *   pg_query "host=127.0.0.1 port=5432 dbname=postgres"
 */
#include <stdio.h>

#include "dbpool_pg.h"

/* Ecto-style timing line: db=.. queue=.. idle=.. */
static void timings(const char *what, const dbpool_pg_result *r)
{
    printf("%-28s db=%.1fms queue=%.1fms idle=%lldms\n", what, (double)r->db_us / 1000.0,
           (double)r->queue_us / 1000.0, (long long)r->idle_ms);
}

int main(int argc, char **argv)
{
    dbpool *pool;
    dbpool_config cfg;
    dbpool_pg_result r;
    int rc;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CONNINFO\n", argv[0]);
        return 2;
    }
    dbpool_config_init(&cfg);
    cfg.size = 4;
    if (dbpool_pg_open(&pool, argv[1], &cfg) != 0) {
        fprintf(stderr, "open: %s\n", dbpool_last_error());
        return 1;
    }

    /* 1. One call: check out, run with text parameters, check in. */
    const char *values[] = {"20", "22"};
    dbpool_pg_params params = {.n = 2, .values = values};
    rc = dbpool_pg_query(pool, "SELECT $1::int + $2::int AS answer", &params, NULL, &r);
    if (rc == 0) {
        printf("answer: %s\n", PQgetvalue(r.res, 0, 0));
        timings("SELECT $1 + $2", &r);
    } else {
        fprintf(stderr, "query: %s\n", dbpool_last_error());
    }
    dbpool_pg_result_clear(&r);

    /* 2. An SQL error: the connection is kept; SQLSTATE and message are there. */
    rc = dbpool_pg_query(pool, "SELECT * FROM no_such_table", NULL, NULL, &r);
    if (rc == DBPOOL_EQUERY)
        printf("SQL error %s: %s\n  (hint from the server: %s)\n", r.sqlstate, dbpool_last_error(),
               PQresultErrorField(r.res, PG_DIAG_MESSAGE_HINT)
                   ? PQresultErrorField(r.res, PG_DIAG_MESSAGE_HINT)
                   : "none");
    dbpool_pg_result_clear(&r);

    /* 3. A statement timeout: cancelled on the server after 200 ms. */
    dbpool_pg_opts opts;
    dbpool_pg_opts_init(&opts);
    opts.statement_timeout = 200;
    rc = dbpool_pg_query(pool, "SELECT pg_sleep(5)", NULL, &opts, &r);
    if (rc == DBPOOL_ETIMEDOUT)
        printf("timed out as asked: %s\n", dbpool_last_error());
    dbpool_pg_result_clear(&r);

    /* 4. Binary parameters and a binary result. */
    unsigned char be[4] = {0, 0, 0, 41}; /* int4 41, network byte order */
    const char *bvalues[] = {(const char *)be};
    const int lengths[] = {4}, formats[] = {1};
    const Oid types[] = {23}; /* int4 */
    dbpool_pg_params bin = {.n = 1,
                            .types = types,
                            .values = bvalues,
                            .lengths = lengths,
                            .formats = formats,
                            .result_format = 1};
    if (dbpool_pg_query(pool, "SELECT $1 + 1", &bin, NULL, &r) == 0) {
        const unsigned char *v = (const unsigned char *)PQgetvalue(r.res, 0, 0);
        printf("binary result: %d\n", (v[0] << 24) | (v[1] << 16) | (v[2] << 8) | v[3]);
    }
    dbpool_pg_result_clear(&r);

    /* 5. Several statements on a connection you hold: one session. */
    dbpool_lease lease;
    if (dbpool_checkout(pool, DBPOOL_DEFAULT_TIMEOUT, &lease) == 0) {
        for (int i = 0; i < 2; i++) {
            if (dbpool_pg_exec(&lease, "SELECT pg_backend_pid()", NULL, NULL, &r) == 0)
                printf("statement %d ran on backend %s\n", i + 1, PQgetvalue(r.res, 0, 0));
            else
                fprintf(stderr, "exec: %s\n", dbpool_last_error());
            dbpool_pg_result_clear(&r);
        }
        dbpool_checkin(&lease);
    }

    /* 6. What can go wrong, and what each outcome means. */
    rc = dbpool_pg_query(pool, "SELECT now()", NULL, NULL, &r);
    switch (rc) {
    case 0:
        printf("now: %s\n", PQgetvalue(r.res, 0, 0));
        break;
    case DBPOOL_ECONNLOST:
        /* r.sent == 0: it never ran, safe to retry; 1: it may have run */
        fprintf(stderr, "connection lost (sent=%d): %s\n", r.sent, dbpool_last_error());
        break;
    case DBPOOL_EUNKNOWN:
        /* timed out and the server never answered the cancel: it may have run */
        fprintf(stderr, "outcome unknown: %s\n", dbpool_last_error());
        break;
    default:
        fprintf(stderr, "%s: %s\n", dbpool_strerror(rc), dbpool_last_error());
        break;
    }
    dbpool_pg_result_clear(&r);

    dbpool_close(pool);
    return 0;
}
