/* trace_json.c - write the pool's trace events as JSON lines, one span per
 * checkout and per query, with OpenTelemetry's database attribute names.
 * A real exporter would hand the same fields to an OpenTelemetry SDK.
 *
 *   ./trace_json "host=/tmp dbname=app"   (or set PGHOST etc. and pass "")
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dbpool_pg.h"

struct span {
    int64_t start_us;
};

/* JSON string body: quotes, backslashes and control characters escaped. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void *on_trace(void *arg, const dbpool_trace *t)
{
    FILE *f = arg;

    switch (t->type) {
    case DBPOOL_TRACE_CHECKOUT_START:
    case DBPOOL_TRACE_QUERY_START: {
        struct span *s = malloc(sizeof(*s));
        if (s)
            s->start_us = t->at_us;
        return s; /* comes back in the matching *_END */
    }
    case DBPOOL_TRACE_CHECKOUT_END:
    case DBPOOL_TRACE_QUERY_END: {
        struct span *s = t->span;
        int query = t->type == DBPOOL_TRACE_QUERY_END;
        fprintf(f, "{\"name\":\"%s\",\"start_us\":%lld,\"duration_us\":%lld,",
                query ? "db.query" : "db.client.connection.checkout",
                (long long)(s ? s->start_us : t->at_us - t->duration_us),
                (long long)t->duration_us);
        fprintf(f, "\"attributes\":{\"db.system.name\":\"postgresql\","
                   "\"db.client.connection.pool.name\":");
        json_str(f, t->pool_name);
        if (query) {
            fprintf(f, ",\"db.query.text\":");
            json_str(f, t->statement);
            if (t->sqlstate && *t->sqlstate)
                fprintf(f, ",\"db.response.status_code\":\"%s\"", t->sqlstate);
        }
        if (t->rc)
            fprintf(f, ",\"error.type\":\"%s\"", dbpool_errname(t->rc));
        fprintf(f, "}}\n");
        free(s);
        return NULL;
    }
    case DBPOOL_TRACE_CHECKIN:
        /* a point in time: the connection's use time (db.client.connection.use_time) */
        fprintf(f,
                "{\"name\":\"db.client.connection.use_time\",\"at_us\":%lld,\"value_us\":%lld,"
                "\"attributes\":{\"db.client.connection.pool.name\":",
                (long long)t->at_us, (long long)t->duration_us);
        json_str(f, t->pool_name);
        fprintf(f, "}}\n");
        return NULL;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    dbpool_config cfg;
    dbpool *pool;
    dbpool_pg_result r;

    dbpool_config_init(&cfg);
    cfg.name = "traced";
    cfg.size = 2;
    cfg.trace_cb = on_trace;
    cfg.trace_arg = stdout;
    if (dbpool_pg_open(&pool, argc > 1 ? argv[1] : "", &cfg) != 0) {
        fprintf(stderr, "open: %s\n", dbpool_last_error());
        return 1;
    }
    if (dbpool_wait_ready(pool, 1, 5000) != 0) {
        fprintf(stderr, "not ready: %s\n", dbpool_last_error());
        dbpool_close(pool);
        return 1;
    }
    if (dbpool_pg_query(pool, "SELECT 1", NULL, NULL, &r) != 0)
        fprintf(stderr, "query: %s\n", dbpool_last_error());
    dbpool_pg_result_clear(&r);
    if (dbpool_pg_query(pool, "SELECT 1/0", NULL, NULL, &r) != 0) /* a traced error */
        fprintf(stderr, "query (expected to fail): %s\n", dbpool_last_error());
    dbpool_pg_result_clear(&r);
    dbpool_close(pool);
    return 0;
}
