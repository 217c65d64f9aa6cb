/*
 * dbpool_registry.h - many tenant databases in one process.
 *
 * A registry holds one PostgreSQL pool per tenant, created on first use from
 * a resolver callback, under one process-wide cap on open connections. Tenant
 * pools open connections only when used (min_size 0 by default), close idle
 * connections after idle_timeout, and a tenant pool unused for
 * pool_idle_timeout is closed and freed. When the cap is reached and a tenant
 * needs a connection, the idle connection of another tenant worth the fewest
 * checkouts per second (by each tenant's recent rate, not by recency: a
 * tenant used once does not push out a hot one) is closed to make room;
 * tenants waiting for room are served in turn
 * (one connection each per round), so a hot tenant cannot starve a cold one.
 *
 *     int resolve(void *arg, const char *tenant, char *conninfo, size_t len,
 *                 dbpool_config *cfg)
 *     {
 *         snprintf(conninfo, len, "host=/run/postgresql dbname=t_%s", tenant);
 *         return 0;
 *     }
 *     dbpool_registry_config rc;
 *     dbpool_registry_config_init(&rc);
 *     rc.resolve = resolve;
 *     rc.max_connections = 50;
 *     dbpool_registry *reg;
 *     dbpool_registry_open(&reg, &rc);
 *     dbpool_lease lease;
 *     if (dbpool_registry_checkout(reg, "acme", DBPOOL_DEFAULT_TIMEOUT, &lease) == 0) {
 *         ... PQexec(dbpool_pg_conn(&lease), ...) ...
 *         dbpool_checkin(&lease);
 *     }
 *     dbpool_registry_close(reg);
 */
#ifndef DBPOOL_REGISTRY_H
#define DBPOOL_REGISTRY_H

#include "dbpool_pg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dbpool_registry dbpool_registry;

/*
 * Resolve a tenant key to its connection string (written into conninfo, a
 * buffer of len bytes) and, optionally, per-tenant options (cfg arrives filled
 * from the registry's tenant template; change size, min_size, ...). Return 0,
 * or nonzero to refuse the key (dbpool_registry_get then fails with
 * DBPOOL_EINVAL). Called on the thread that first asks for the tenant, with no
 * registry lock held; other threads asking for the same tenant meanwhile wait
 * for it. String options set in cfg must stay valid until it returns.
 */
typedef int (*dbpool_resolve_cb)(void *arg, const char *tenant, char *conninfo, size_t len,
                                 dbpool_config *cfg);

typedef struct dbpool_registry_config {
    dbpool_resolve_cb resolve; /* required */
    void *resolve_arg;
    int max_connections;       /* 100      open connections across all tenants       */
    int64_t pool_idle_timeout; /* 300000 ms a tenant pool unused this long is freed   */
    dbpool_config tenant;      /* template: dbpool_config_init() defaults but size 5,
                                  min_size 0, idle_timeout 60000 ms, lifo 1 (a spare
                                  connection stays idle and is evicted first)        */
    /*
     * Sharing a server with other processes (docs/multi-tenant.md, "Many
     * processes on one server"). A connect refused because the server is full
     * (53300 too_many_connections, PgBouncer's "no more connections allowed")
     * never makes a tenant pool DOWN: its callers wait in the queue. With
     * adaptive on, the registry also looks at its own cap once every
     * adaptive_interval: it lowers it in proportion to the share of its
     * connects the server refused (to at most what it holds after a
     * refusal, not below adaptive_min) and raises it by one while tenants
     * wait, so processes that do not know each other converge to sharing
     * the server.
     */
    int adaptive;              /* 0        1 = on                                     */
    int adaptive_min;          /* 1        the cap never goes lower                   */
    int64_t adaptive_interval; /* 1000 ms  one look (a step down or up) per interval */
    /*
     * Connects in flight at once across all tenants (0: no limit). A connect
     * holds its place under the cap while the server starts a backend, so
     * when the registry runs at the server's connect rate (more tenants in
     * use than max_connections), many connects at once leave less of the cap
     * for the tenants it keeps, without connecting faster. About the
     * server's CPU count serves then (docs/multi-tenant.md, "Connects in
     * flight"); on a remote server, more (each connect waits for round
     * trips, not the server's CPU).
     */
    int max_connecting; /* 0        connects in flight at once, 0 = no limit  */
} dbpool_registry_config;

DBPOOL_API void dbpool_registry_config_init(dbpool_registry_config *cfg);

/* Create a registry. Returns 0, DBPOOL_EINVAL or DBPOOL_ENOMEM. */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_registry_open(dbpool_registry **out,
                                                     const dbpool_registry_config *cfg);

/*
 * The tenant's pool, created on first use. The pool is pinned (never
 * reclaimed) until dbpool_registry_put(); use it with the ordinary pool API
 * but never dbpool_close() it. Returns 0, DBPOOL_EINVAL (NULL, empty or
 * refused key, bad conninfo from the resolver), DBPOOL_ENOMEM, DBPOOL_ECLOSED.
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_registry_get(dbpool_registry *reg, const char *tenant,
                                                    dbpool **pool);
/* Unpin a pool from dbpool_registry_get(). */
DBPOOL_API void dbpool_registry_put(dbpool_registry *reg, dbpool *pool);

/* get + dbpool_checkout + put in one call. Check the lease in with
 * dbpool_checkin() as usual; a tenant with a lease out is never reclaimed. */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_registry_checkout(dbpool_registry *reg, const char *tenant,
                                                         int64_t timeout_ms, dbpool_lease *lease);

typedef struct dbpool_registry_stats {
    int tenants;          /* tenant pools alive */
    int open_connections; /* counted against max_connections */
    int max_connections;
    int tenants_waiting; /* tenant pools waiting for room under the cap */
    uint64_t pools_created, pools_reclaimed, evictions;
    int cap;                /* the cap now: max_connections, or lower (adaptive) */
    uint64_t server_full;   /* connects refused because the server was full */
    uint64_t cap_decreases; /* times the adaptive cap went down */
    int connecting;         /* of open_connections, connects in flight */
} dbpool_registry_stats;

DBPOOL_API int dbpool_registry_stats_get(dbpool_registry *reg, dbpool_registry_stats *out);

/* Prometheus text for every tenant pool (label pool="<tenant key>") plus
 * dbpool_registry_* series. Same buffer contract as dbpool_stats_prometheus(). */
DBPOOL_API int dbpool_registry_prometheus(dbpool_registry *reg, char *buf, size_t buflen,
                                          size_t *needed);

/* Close every tenant pool (as dbpool_close: leases still out stay usable and
 * are closed at check-in) and free the registry. NULL is a no-op. Returns 0
 * or DBPOOL_EBUSY if some leases were still out. */
DBPOOL_API int dbpool_registry_close(dbpool_registry *reg);

#ifdef __cplusplus
}
#endif
#endif /* DBPOOL_REGISTRY_H */
