/* driver_pg.h - internal entry to the libpq driver (used by the registry). */
#ifndef DBPOOL_DRIVER_PG_H
#define DBPOOL_DRIVER_PG_H

#include "namespace.h"

#include "dbpool_pg.h"

struct budget_ops;
struct dbpool;

/* dbpool_pg_open() with a connection budget. */
int pg_open(dbpool **out, const char *conninfo, const dbpool_config *cfg,
            const struct budget_ops *budget, void *owner);

/* Was the pool opened by dbpool_pg_open() (or the registry)? */
int pg_pool_is_pg(const struct dbpool *p);

/* How many times reset_query ran on this driver connection (a lease's
 * slot->conn): when it moves, the session's prepared statements are gone.
 * Lease holder only. */
uint64_t pg_conn_resets(const void *conn);

/* A number for this driver connection (one libpq session, one socket),
 * never 0 and never given to another connection in the process. */
uint64_t pg_conn_id(const void *conn);

/* "host:port" of a connection: the worker lane for its cancel requests. */
void pg_cancel_target(PGconn *pg, char *buf, size_t len);

#endif
