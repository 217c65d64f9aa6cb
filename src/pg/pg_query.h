/* pg_query.h - the query helpers' per-connection state (prepared-statement
 * cache, savepoint depth), shared with the libpq driver that owns it. */
#ifndef DBPOOL_PG_QUERY_H
#define DBPOOL_PG_QUERY_H

struct pg_qstate;

#include "dbpool.h"

/* driver_pg.c: where the connection of a live lease keeps its query-helper
 * state (*slot is NULL until the first helper call on it). NULL if the lease
 * is stale or not from a PostgreSQL pool. */
struct pg_qstate **pg_lease_qstate(const dbpool_lease *lease);

/* Free the state; called by the driver when the connection is closed.
 * Sends nothing (the server forgets prepared statements with the session).
 * NULL is a no-op. */
void pg_qstate_free(struct pg_qstate *qs);

#endif
