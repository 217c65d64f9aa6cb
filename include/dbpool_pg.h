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
 * Copy `conninfo` into buf as key=value pairs (quoted and escaped so libpq
 * parses it back) with any password (and sslpassword) replaced by "********" (key=value and URI
 * forms). Returns 0, DBPOOL_EINVAL if it does not parse, DBPOOL_ENOMEM if buf
 * is too small (buf then holds the complete pairs that fit). Useful for
 * logging what you connect to.
 */
DBPOOL_API int dbpool_pg_redact(const char *conninfo, char *buf, size_t buflen);

/* ======================================================================== */
/* Query helpers and transactions (src/pg/pg_query.c)                          */
/* ======================================================================== */
/*
 * The common case in one call: check a connection out, run one statement
 * with a deadline that cancels it server-side, check the connection in, and
 * say honestly what happened:
 *
 *     dbpool_pg_result r;
 *     const char *v[] = {"42"};
 *     dbpool_pg_params p = {.n = 1, .values = v};
 *     int rc = dbpool_pg_query(pool, "SELECT name FROM users WHERE id = $1", &p, NULL, &r);
 *     if (rc == 0)
 *         printf("%s (db=%lldus queue=%lldus)\n", PQgetvalue(r.res, 0, 0),
 *                (long long)r.db_us, (long long)r.queue_us);
 *     else if (rc == DBPOOL_EQUERY)
 *         printf("SQL error %s: %s\n", r.sqlstate, dbpool_last_error());
 *     dbpool_pg_result_clear(&r);
 *
 * Outcomes (every helper). The rule: a failure says "did not run" only when
 * that is certain -- nothing was sent, or the server said so; otherwise it
 * says the outcome is unknown.
 *   0                       success; r.res holds the result
 *   DBPOOL_EQUERY           the server reported an SQL error (the statement
 *                           failed: no effect); the connection is kept.
 *                           r.sqlstate, r.res (the error result, for
 *                           PQresultErrorField) and dbpool_last_error().
 *   DBPOOL_ETIMEDOUT        the statement timeout passed and the statement did
 *                           not run: the server confirmed the cancel (r.sqlstate
 *                           57014), or the deadline passed
 *                           before the statement itself was sent (e.g. during
 *                           the Prepare of a cache miss; r.sent 0, connection
 *                           discarded). Also: the checkout deadline.
 *   DBPOOL_EUNKNOWN         the statement timeout passed and the server did not
 *                           answer the cancel within cancel_grace: the
 *                           statement may or may not have run (it may have
 *                           committed, its answer still in flight). r.sent is
 *                           1; the connection is discarded. Check before
 *                           running it again.
 *   DBPOOL_ECONNLOST        the connection was lost; it is discarded. r.sent 0:
 *                           the statement did not run (safe to retry); 1: it
 *                           may or may not have run.
 *   DBPOOL_ECOMMIT_UNKNOWN  (transactions) the connection was lost, or COMMIT
 *                           timed out without an answer, after COMMIT was sent:
 *                           the transaction may or may not have committed.
 *   DBPOOL_EEXPIRED         hold_timeout fired while the lease was in use (the
 *                           pool sent a cancel request) and the statement did
 *                           not complete. If its outcome is unknown the call
 *                           returns DBPOOL_EUNKNOWN or DBPOOL_ECONNLOST with
 *                           r.sent 1 instead.
 *   DBPOOL_EINVAL           bad argument, a non-PostgreSQL lease, or COPY
 *                           (not supported: use libpq; connection discarded).
 *   any dbpool_checkout() error (DBPOOL_EUNAVAILABLE, DBPOOL_EDROPPED, ...):
 *   nothing was sent. DBPOOL_ENOMEM.
 *
 * Retries. The pool-level helpers retry on another connection only when the
 * statement provably did not reach the server: the connection was found dead
 * before anything was sent (libpq reports it bad, or the socket already shows
 * the server's EOF or the error it sends before closing, e.g. FATAL 57P01
 * after pg_terminate_backend, even if the close has not arrived yet -- unless
 * you replaced the connection's notice receiver, see postgresql-queries.md),
 * or only effect-free steps before the statement were lost
 * (DEALLOCATE of evicted statements and the Parse of a statement being
 * prepared; the BEGIN of a transaction). Never once the statement itself may
 * have been sent. At most `size` retries per call, each
 * discarding one dead connection (r.retries counts them).
 *
 * The statement timeout does not use SET statement_timeout (no extra round
 * trip, and it works behind PgBouncer in transaction mode): the helper waits
 * with poll() and, at the deadline, sends a libpq cancel request from the
 * worker thread (one lane per server), then waits up to cancel_grace for the server's
 * answer. A call therefore returns within statement_timeout + cancel_grace
 * of sending (plus the checkout wait). Only an answer tells what happened:
 * a cancel request that arrives when the statement has already finished (or
 * before it has arrived) is ignored by the server, so without an answer the
 * result is DBPOOL_EUNKNOWN, never DBPOOL_ETIMEDOUT.
 *
 * Thread-safety: the pool-level helpers are thread-safe. The lease-level ones
 * (dbpool_pg_exec*, dbpool_pg_transaction_lease) use the caller's lease,
 * which only one thread may use at a time.
 */

/* Options of one helper call. Fill with dbpool_pg_opts_init(). NULL anywhere
 * an opts pointer is taken means these defaults. */
typedef struct dbpool_pg_opts {
    int64_t checkout_timeout;  /* DBPOOL_DEFAULT_TIMEOUT  as dbpool_checkout()        */
    int64_t statement_timeout; /* 15000 ms  cancel the statement after this long;
                                              0 or DBPOOL_NO_LIMIT = no limit       */
    int64_t cancel_grace;      /* 1000 ms   after the cancel, wait this long for the
                                              server's answer, then discard the
                                              connection (DBPOOL_EUNKNOWN).
                                              DBPOOL_NO_LIMIT = wait as long as it
                                              takes; 0 = do not wait at all      */
    int unnamed;               /* 0         1: never create named prepared statements:
                                              the *_prepared helpers then behave like
                                              the plain ones (PgBouncer transaction
                                              or statement pooling)                  */
    int cache_size;            /* 64        prepared statements kept per connection
                                              (LRU); 0 = like unnamed               */
} dbpool_pg_opts;

/* Fill `opts` with the defaults above. */
DBPOOL_API void dbpool_pg_opts_init(dbpool_pg_opts *opts);

/* Parameters of a statement, as PQexecParams() takes them. NULL = none. */
typedef struct dbpool_pg_params {
    int n;                     /* number of parameters ($1..$n)                   */
    const Oid *types;          /* NULL: let the server infer every type           */
    const char *const *values; /* NULL entry = SQL NULL                            */
    const int *lengths;        /* binary parameters only; NULL if all are text    */
    const int *formats;        /* 0 text, 1 binary per parameter; NULL = all text */
    int result_format;         /* 0 text (default), 1 binary                      */
} dbpool_pg_params;

/* What one helper call produced. The helper fills it whatever it returns;
 * release it with dbpool_pg_result_clear(). */
typedef struct dbpool_pg_result {
    PGresult *res;    /* success: the result; DBPOOL_EQUERY: the error result;
                         else NULL. Owned by the caller (cleared by
                         dbpool_pg_result_clear(), or PQclear() it yourself) */
    char sqlstate[6]; /* SQLSTATE of a server error, "" if none               */
    int sent;         /* 0: the statement certainly did not run (nothing, or
                         only an effect-free Parse, reached the server):
                         safe to retry; 1: it was sent: the return code says
                         whether it ran (ECONNLOST/EUNKNOWN: maybe)          */
    int retries;      /* dead connections replaced before sending (see above) */
    int64_t queue_us; /* time spent waiting for the checkout                  */
    int64_t idle_ms;  /* how long the connection sat idle before the checkout */
    int64_t db_us;    /* time from sending to the last byte of the answer
                         (including a Prepare on a cache miss)               */
} dbpool_pg_result;

/* PQclear the result and zero the struct. NULL is a no-op. */
DBPOOL_API void dbpool_pg_result_clear(dbpool_pg_result *r);

/*
 * Check out, run `sql` (one statement, extended protocol with an unnamed
 * statement), check in. `params` and `opts` may be NULL; `out` may be NULL if
 * you only need the return code. Returns as described above.
 */
DBPOOL_API int dbpool_pg_query(dbpool *pool, const char *sql, const dbpool_pg_params *params,
                               const dbpool_pg_opts *opts, dbpool_pg_result *out);

/*
 * Like dbpool_pg_query(), through the connection's prepared-statement cache:
 * the first use of (sql, n, types) on a connection prepares it as
 * "dbpool_s<N>"; later uses only Bind/Execute. The cache is an LRU of
 * opts->cache_size statements per connection (the evicted one is
 * DEALLOCATEd) and dies with the connection, so a reconnect starts empty.
 * If the server says "cached plan must not change result type" (0A000, after
 * ALTER TABLE) or the statement vanished (26000, e.g. after DEALLOCATE ALL),
 * the statement is prepared again and, outside a transaction, run again once
 * (safe: it failed before executing). Inside a transaction that error has
 * aborted the transaction, so it is returned as DBPOOL_EQUERY instead; the
 * next use prepares afresh. With opts->unnamed (or cache_size 0) this is
 * exactly dbpool_pg_query().
 */
DBPOOL_API int dbpool_pg_query_prepared(dbpool *pool, const char *sql,
                                        const dbpool_pg_params *params, const dbpool_pg_opts *opts,
                                        dbpool_pg_result *out);

/*
 * Run a statement on a connection you hold (inside a transaction callback, or
 * after dbpool_checkout()). Same outcomes, but never retried and never checks
 * in: after DBPOOL_ECONNLOST, DBPOOL_EUNKNOWN, or DBPOOL_ETIMEDOUT with a
 * discarded connection, the connection is unusable; dbpool_checkin() notices
 * and replaces it. opts->checkout_timeout is not used. queue_us/idle_ms are the
 * lease's.
 */
DBPOOL_API int dbpool_pg_exec(dbpool_lease *lease, const char *sql, const dbpool_pg_params *params,
                              const dbpool_pg_opts *opts, dbpool_pg_result *out);
DBPOOL_API int dbpool_pg_exec_prepared(dbpool_lease *lease, const char *sql,
                                       const dbpool_pg_params *params, const dbpool_pg_opts *opts,
                                       dbpool_pg_result *out);

typedef enum {
    DBPOOL_PG_ISOLATION_DEFAULT = 0, /* the server's default_transaction_isolation */
    DBPOOL_PG_READ_COMMITTED,
    DBPOOL_PG_REPEATABLE_READ,
    DBPOOL_PG_SERIALIZABLE
} dbpool_pg_isolation;

/* Transaction options. Fill with dbpool_pg_tx_opts_init(). */
typedef struct dbpool_pg_tx_opts {
    dbpool_pg_isolation isolation; /* DEFAULT                                        */
    int read_only;                 /* 0      1: BEGIN ... READ ONLY                  */
    int deferrable;                /* 0      1: DEFERRABLE (with SERIALIZABLE READ ONLY) */
    int max_retries;               /* 0      re-run the whole transaction up to this
                                             many times after a serialization failure
                                             (40001) or deadlock (40P01)             */
    dbpool_pg_opts query;          /* checkout_timeout, and the statement timeout of
                                      BEGIN / SAVEPOINT / COMMIT / ROLLBACK        */
} dbpool_pg_tx_opts;

/* Fill `opts` with the defaults above (query: dbpool_pg_opts_init()). */
DBPOOL_API void dbpool_pg_tx_opts_init(dbpool_pg_tx_opts *opts);

/* A transaction body: run statements on `tx` (dbpool_pg_exec*, nested
 * dbpool_pg_transaction_lease, or plain libpq on dbpool_pg_conn(tx)).
 * Return 0 to commit; anything else rolls back and is returned as is. Do not
 * check `tx` in, and do not COMMIT/ROLLBACK it yourself. */
typedef int (*dbpool_pg_tx_cb)(dbpool_lease *tx, void *arg);

/* Timings of a whole transaction (last attempt). */
typedef struct dbpool_pg_timings {
    int64_t queue_us; /* checkout wait                                            */
    int64_t idle_ms;  /* idle time of the connection before the checkout          */
    int64_t db_us;    /* BEGIN + statements run through the helpers + COMMIT       */
    int attempts;     /* 1 + retries (dead connection or 40001/40P01)             */
} dbpool_pg_timings;

/*
 * Check out, BEGIN [ISOLATION LEVEL ...] [READ ONLY] [DEFERRABLE], call
 * fn(tx, arg), then COMMIT if it returned 0 and the transaction is healthy,
 * else ROLLBACK; check in. `opts` and `timings` may be NULL.
 * Returns:
 *   0                       committed
 *   fn's nonzero return     rolled back (or the connection was lost, which
 *                           rolls back on the server too). Returned as is,
 *                           even DBPOOL_EUNKNOWN or DBPOOL_ECONNLOST from a
 *                           statement in fn: COMMIT was never sent, so
 *                           nothing of the transaction committed.
 *   DBPOOL_EQUERY           BEGIN or COMMIT failed with an SQL error (e.g.
 *                           40001 at COMMIT): rolled back; or fn returned 0
 *                           but a statement in it had failed: rolled back
 *   DBPOOL_ECONNLOST        the connection died before COMMIT was sent:
 *                           rolled back by the server
 *   DBPOOL_ETIMEDOUT        BEGIN or COMMIT hit the statement timeout and
 *                           did not run (COMMIT: the server confirmed the
 *                           cancel, rolled back; BEGIN: fn was not called)
 *   DBPOOL_ECOMMIT_UNKNOWN  the connection was lost (or COMMIT timed out
 *                           without an answer) after COMMIT was sent: the
 *                           transaction may or may not have committed
 *   DBPOOL_EINVAL           NULL pool/fn; fn checked `tx` in or ended the
 *                           transaction itself
 *   any dbpool_checkout() error.
 * Retries: the whole transaction (fn included, so fn must be safe to run
 * again) is re-run on a fresh checkout when the connection was dead before
 * BEGIN or BEGIN itself was lost (nothing executed; at most `size` times), and
 * up to max_retries times when 40001/40P01 was reported by a helper call in
 * fn (or by COMMIT), with a short random sleep in between.
 * On a pool in sandbox mode (dbpool_sandbox.h) the lease is inside the test's
 * transaction: fn runs in a SAVEPOINT, released if it returns 0, rolled back
 * to otherwise (isolation, read_only and retries do not apply).
 */
DBPOOL_API int dbpool_pg_transaction(dbpool *pool, dbpool_pg_tx_cb fn, void *arg,
                                     const dbpool_pg_tx_opts *opts, dbpool_pg_timings *timings);

/*
 * Run fn in a transaction on a lease you hold. Outside a transaction this is
 * BEGIN/COMMIT as above (40001/40P01 retries on the same connection, no
 * dead-connection retry). Inside one (e.g. called from a transaction
 * callback) it is a nested level: SAVEPOINT, fn, then RELEASE SAVEPOINT, or
 * ROLLBACK TO SAVEPOINT if fn failed -- the outer transaction goes on.
 * Isolation, read_only and max_retries apply only at the top level. In a
 * failed (aborted) transaction it returns DBPOOL_EQUERY (25P02) at once.
 */
DBPOOL_API int dbpool_pg_transaction_lease(dbpool_lease *lease, dbpool_pg_tx_cb fn, void *arg,
                                           const dbpool_pg_tx_opts *opts);

#ifdef __cplusplus
}
#endif
#endif /* DBPOOL_PG_H */
