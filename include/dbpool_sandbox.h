/*
 * dbpool_sandbox.h - a test sandbox: database tests that run concurrently
 * and never see each other's writes (docs/testing-with-a-sandbox.md).
 *
 * Modelled on Elixir's DBConnection.Ownership and the Ecto SQL Sandbox. A
 * pool in sandbox mode hands each *owner* (usually one test) a connection it
 * keeps, inside a transaction (BEGIN after the checkout, ROLLBACK at the
 * owner's check-in). The code under test keeps calling the ordinary API --
 * dbpool_checkout()/dbpool_checkin(), dbpool_pg_query(),
 * dbpool_pg_transaction() -- and transparently gets its owner's connection:
 *
 *   1. the calling thread's own owner;
 *   2. else an owner that allowed the thread (dbpool_sandbox_allow);
 *   3. else, in shared mode, the shared owner;
 *   4. else, in auto mode, a new owner for the thread (created implicitly);
 *   5. else DBPOOL_ENOOWNER, with a message listing the four ways to fix it.
 *
 *     dbpool_sandbox_enable(pool, NULL);            // once, after dbpool_pg_open
 *     // in each test (each in its own thread):
 *     dbpool_owner *own;
 *     dbpool_sandbox_checkout(pool, DBPOOL_DEFAULT_TIMEOUT, &own);
 *     dbpool_sandbox_allow(own, worker_thread);      // threads the test starts
 *     ... code under test: dbpool_pg_query(pool, "INSERT ...") ...
 *     dbpool_sandbox_checkin(own);                   // everything rolled back
 *
 * One owner's connection serves one lease at a time: callers of the same
 * owner queue in arrival order (FIFO) with the usual checkout timeout
 * (DBPOOL_ETIMEDOUT). Each lease of the owner's connection runs inside a
 * savepoint, so a failed statement does not poison the owner's transaction.
 * Inside a sandbox dbpool_pg_transaction() is a SAVEPOINT / RELEASE /
 * ROLLBACK TO; a raw COMMIT or ROLLBACK by the code under test is detected at
 * check-in (DBPOOL_ETXENDED) and the sandbox begins a new transaction.
 *
 * Thread-safety: every function here is thread-safe. An owner handle is
 * valid from dbpool_sandbox_checkout() until dbpool_sandbox_checkin().
 */
#ifndef DBPOOL_SANDBOX_H
#define DBPOOL_SANDBOX_H

#include <pthread.h>

#include "dbpool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An owner: one connection checked out of the pool for the duration of a
 * test, inside a transaction that is rolled back at its end. */
typedef struct dbpool_owner dbpool_owner;

typedef enum {
    DBPOOL_SANDBOX_MANUAL = 0, /* callers need an owner: their own, or one that
                                  allowed them (the default) */
    DBPOOL_SANDBOX_AUTO,       /* a caller without an owner gets a new one,
                                  ended with dbpool_sandbox_checkin() */
    DBPOOL_SANDBOX_SHARED      /* every caller without an owner of its own uses
                                  the shared owner (tests run one at a time) */
} dbpool_sandbox_mode;

typedef struct dbpool_sandbox_config {
    dbpool_sandbox_mode mode;  /* MANUAL                                        */
    int64_t ownership_timeout; /* 120000 ms  an owner holding its connection longer
                                  has its running query cancelled; its later
                                  checkouts fail with DBPOOL_EEXPIRED and its
                                  connection is discarded at the owner's check-in,
                                  or earlier, when nobody holds it, at another
                                  thread's sandbox checkout (an abandoned owner).
                                  Replaces hold_timeout for owners. 0 = never */
} dbpool_sandbox_config;

/* Fill `cfg` with the defaults above. */
DBPOOL_API void dbpool_sandbox_config_init(dbpool_sandbox_config *cfg);

/*
 * Put a PostgreSQL pool (dbpool_pg_open, or a registry's tenant pool) in
 * sandbox mode, for the rest of its life. Leases checked out before stay
 * ordinary leases. `cfg` may be NULL for the defaults.
 * Returns 0; DBPOOL_EINVAL (NULL pool, not a PostgreSQL pool, bad option, or
 * already in sandbox mode), DBPOOL_ENOMEM, DBPOOL_ESYSTEM.
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_sandbox_enable(dbpool *pool,
                                                      const dbpool_sandbox_config *cfg);

/*
 * Make the calling thread an owner: check a connection out of the pool
 * (waiting up to timeout_ms as dbpool_checkout()) and BEGIN. On success
 * *owner is the handle. Returns 0; any dbpool_checkout() error; DBPOOL_EINVAL
 * (not in sandbox mode, NULL argument, or the thread already owns a
 * connection of this pool); an error of BEGIN (DBPOOL_EQUERY,
 * DBPOOL_ECONNLOST...; the connection is then discarded).
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_sandbox_checkout(dbpool *pool, int64_t timeout_ms,
                                                        dbpool_owner **owner);

/*
 * End an owner: its allowances are revoked, callers queued for its
 * connection fail with DBPOOL_ENOOWNER, the transaction is rolled back and
 * the connection goes back to the pool. The handle is invalid afterwards.
 * Returns 0, or:
 *   DBPOOL_EBUSY      a caller (an allowed thread, or the owner's own thread)
 *                     still holds the owner's connection. It may go on using
 *                     it; its dbpool_checkin() rolls back and returns the
 *                     connection to the pool. Nothing else is waited for.
 *   DBPOOL_ETXENDED   the code under test ended the sandbox's transaction
 *                     (raw COMMIT/ROLLBACK) during the owner's life: what it
 *                     wrote before may have been committed for real.
 *   DBPOOL_EEXPIRED   ownership_timeout fired; the connection was discarded
 *                     (now, or already by another thread's checkout if nobody
 *                     held it: the handle is freed all the same).
 *   DBPOOL_ESTALE     called again after DBPOOL_EBUSY, while that caller still
 *                     holds the connection (once it checks in, the handle is
 *                     freed: never call this twice).
 *   DBPOOL_EINVAL     NULL.
 */
DBPOOL_API int dbpool_sandbox_checkin(dbpool_owner *owner);

/* Let `thread` use the owner's connection (threads the test starts). The
 * allowance ends with the owner. Returns 0, DBPOOL_EINVAL (NULL),
 * DBPOOL_ENOMEM, DBPOOL_ENOOWNER (the owner is ending). */
DBPOOL_API int dbpool_sandbox_allow(dbpool_owner *owner, pthread_t thread);

/*
 * Switch the lookup mode. DBPOOL_SANDBOX_SHARED needs `shared`, a live owner
 * (every caller without an owner of its own then uses it; when it ends the
 * mode goes back to MANUAL); the other modes take NULL. Returns 0 or
 * DBPOOL_EINVAL (not in sandbox mode, bad mode, missing or ending owner).
 */
DBPOOL_API int dbpool_sandbox_mode_set(dbpool *pool, dbpool_sandbox_mode mode,
                                       dbpool_owner *shared);

/*
 * Pass the owner explicitly: a lease on `owner`'s connection for any thread,
 * without an allowance (use it with the lease-level helpers dbpool_pg_exec*,
 * dbpool_pg_transaction_lease, or plain libpq; check it in with
 * dbpool_checkin()). Waits like dbpool_checkout(). Returns 0 or as
 * dbpool_checkout() in a sandbox (see below).
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_sandbox_lease(dbpool_owner *owner, int64_t timeout_ms,
                                                     dbpool_lease *lease);

/* The owner the calling thread would use (own, allowed, shared), or NULL in
 * *owner. Returns 0 or DBPOOL_EINVAL (not in sandbox mode, NULL). */
DBPOOL_API int dbpool_sandbox_owner(dbpool *pool, dbpool_owner **owner);

/*
 * dbpool_checkout() on a pool in sandbox mode returns a lease on the
 * caller's owner's connection (see the lookup above), or:
 *   DBPOOL_ENOOWNER   manual mode and no owner for this thread
 *   DBPOOL_ETIMEDOUT  another caller of the same owner held the connection
 *                     until the deadline
 *   DBPOOL_EBUSY      the calling thread already holds the owner's connection
 *                     (a sandbox has one connection per owner: code that
 *                     holds two leases at once cannot run in it), or timeout 0
 *   DBPOOL_EEXPIRED   the owner outlived ownership_timeout
 *   DBPOOL_ECONNLOST  the owner's connection was lost or discarded
 *   DBPOOL_ENOOWNER   the owner ended while the caller waited
 * dbpool_checkin() of such a lease returns the connection to the owner (the
 * next queued caller gets it) and returns 0, or DBPOOL_ETXENDED when the
 * code under test ended the sandbox's transaction (a new one was begun).
 * dbpool_discard() marks the owner's connection unusable: the owner's later
 * checkouts fail with DBPOOL_ECONNLOST and it is closed at the owner's end.
 * hold_timeout does not apply to these leases (ownership_timeout does).
 */

#ifdef __cplusplus
}
#endif
#endif /* DBPOOL_SANDBOX_H */
