/* pg_query.h - the query helpers' per-connection state (prepared-statement
 * cache, savepoint depth), shared with the libpq driver that owns it. */
#ifndef DBPOOL_PG_QUERY_H
#define DBPOOL_PG_QUERY_H

struct pg_qstate;

/* driver_pg.c: where a connection keeps its query-helper state (NULL until
 * the first helper call on it). `conn` is the driver handle of a lease. */
struct pg_qstate **pg_conn_qstate(void *conn);

/* Free the state; called by the driver when the connection is closed.
 * Sends nothing (the server forgets prepared statements with the session).
 * NULL is a no-op. */
void pg_qstate_free(struct pg_qstate *qs);

#endif
