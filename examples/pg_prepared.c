/*
 * pg_prepared.c - the per-connection prepared-statement cache, and the
 * `unnamed` mode to use behind PgBouncer in transaction pooling mode.
 *
 *   pg_prepared "host=127.0.0.1 port=5432 dbname=postgres"
 *   pg_prepared "host=127.0.0.1 port=6432 dbname=postgres" unnamed
 */
#include <stdio.h>
#include <string.h>

#include "dbpool_pg.h"

int main(int argc, char **argv)
{
    dbpool *pool;
    dbpool_config cfg;
    dbpool_pg_opts opts;
    dbpool_pg_result r;

    if (argc < 2) {
        fprintf(stderr, "usage: %s CONNINFO [unnamed]\n", argv[0]);
        return 2;
    }
    dbpool_config_init(&cfg);
    cfg.size = 2;
    dbpool_pg_opts_init(&opts);
    opts.cache_size = 16;                                   /* per connection, LRU */
    opts.unnamed = argc > 2 && !strcmp(argv[2], "unnamed"); /* PgBouncer transaction mode */
    if (opts.unnamed)
        cfg.lifo = 1; /* fewer client connections busy: friendlier to PgBouncer */
    if (dbpool_pg_open(&pool, argv[1], &cfg) != 0) {
        fprintf(stderr, "open: %s\n", dbpool_last_error());
        return 1;
    }

    /* The first call on each connection prepares "dbpool_s<N>"; the others
     * only bind and execute it. Keyed by the SQL text (and parameter types). */
    for (int i = 0; i < 5; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *values[] = {v};
        dbpool_pg_params params = {.n = 1, .values = values};
        int rc = dbpool_pg_query_prepared(pool, "SELECT $1::int * 2", &params, &opts, &r);
        if (rc == 0)
            printf("%d * 2 = %s  (db=%.2fms)\n", i, PQgetvalue(r.res, 0, 0),
                   (double)r.db_us / 1000.0);
        else
            fprintf(stderr, "query: %s\n", dbpool_last_error());
        dbpool_pg_result_clear(&r);
    }

    /* What the server holds for this session (0 in unnamed mode). */
    if (dbpool_pg_query(pool, "SELECT count(*) FROM pg_prepared_statements", NULL, &opts, &r) == 0)
        printf("prepared statements on this connection: %s\n", PQgetvalue(r.res, 0, 0));
    dbpool_pg_result_clear(&r);

    dbpool_close(pool);
    return 0;
}
