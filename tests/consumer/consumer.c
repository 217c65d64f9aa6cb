/* consumer.c - uses the public headers and a few calls that need no server:
 * the version, options by name, conninfo redaction, an open that fails
 * cleanly, the epoll adapter of the event-loop API. Exit 0 when everything
 * is as documented. */
/* the epoll adapter needs POSIX clocks; consumer-check builds with -std=c11 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include <dbpool.h>
#include <dbpool_pg.h>
#include <dbpool_pg_async.h>
#include <dbpool_registry.h>
#include <dbpool/adapters/epoll.h> /* installed with the headers (header-only) */

#ifndef CONSUMER_HOW
#define CONSUMER_HOW "pkg-config"
#endif

int main(void)
{
    dbpool_config cfg;
    char red[256];
    dbpool *pool = NULL;

    if (strcmp(dbpool_version(), DBPOOL_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer: library %s, headers %s\n", dbpool_version(),
                DBPOOL_VERSION_STRING);
        return 1;
    }
    dbpool_config_init(&cfg);
    if (dbpool_config_parse(&cfg, "size=4 queue_target=20ms") != 0 || cfg.size != 4) {
        fprintf(stderr, "consumer: dbpool_config_parse: %s\n", dbpool_last_error());
        return 1;
    }
    if (dbpool_pg_redact("host=db user=app password=secret", red, sizeof(red)) != 0 ||
        strstr(red, "secret") != NULL) {
        fprintf(stderr, "consumer: dbpool_pg_redact: %s\n", dbpool_last_error());
        return 1;
    }
    if (dbpool_pg_open(&pool, "host='unterminated", &cfg) != DBPOOL_EINVAL) {
        fprintf(stderr, "consumer: a malformed conninfo was not refused\n");
        dbpool_close(pool);
        return 1;
    }
    /* the event-loop API links and the epoll adapter attaches and detaches */
    dbpool_cq *cq = NULL;
    dbpool_epoll *ep = NULL;
    dbpool_loop *loop = NULL;
    if (dbpool_cq_new(&cq) != 0 || dbpool_epoll_attach(cq, &ep, &loop) != 0 ||
        dbpool_loop_pending(loop) != 0 || dbpool_epoll_detach(ep) != 0 || dbpool_cq_free(cq) != 0) {
        fprintf(stderr, "consumer: the epoll adapter: %s\n", dbpool_last_error());
        return 1;
    }
    printf("consumer (%s): dbpool %s, libpq %d, %s\n", CONSUMER_HOW, dbpool_version(),
           PQlibVersion(), red);
    return 0;
}
