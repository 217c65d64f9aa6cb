/*
 * dbpool_pg.h - the PostgreSQL (libpq) layer of dbpool.
 *
 * Open a pool on a libpq connection string or URI, exactly as libpq takes
 * them ("host=/tmp dbname=app" or "postgresql://user@host:5432/app"). The
 * string is validated with PQconninfoParse() at open; a malformed one is an
 * error at once, not at the first connect.
 */
#ifndef DBPOOL_PG_H
#define DBPOOL_PG_H

#include <libpq-fe.h>

#include "dbpool.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Open a pool of PostgreSQL connections. `cfg` may be NULL for the defaults;
 * cfg->after_connect, if set, is run on every new connection before it joins
 * the pool (a failure counts as a failed connect).
 * Returns 0, DBPOOL_EINVAL (NULL argument, malformed conninfo, bad option:
 * message in dbpool_last_error(), never containing the password),
 * DBPOOL_ENOMEM or DBPOOL_ESYSTEM.
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_pg_open(dbpool **out, const char *conninfo,
                                               const dbpool_config *cfg);

/* The PGconn of a live lease, or NULL if the lease is stale or not from a
 * PostgreSQL pool. Use it with plain libpq calls until dbpool_checkin(). */
DBPOOL_API PGconn *dbpool_pg_conn(const dbpool_lease *lease);

/*
 * Copy `conninfo` into buf with any password replaced by "********"
 * (key=value and URI forms). Returns 0, DBPOOL_EINVAL if it does not parse,
 * DBPOOL_ENOMEM. Useful for logging what you connect to.
 */
DBPOOL_API int dbpool_pg_redact(const char *conninfo, char *buf, size_t buflen);

#ifdef __cplusplus
}
#endif
#endif /* DBPOOL_PG_H */
