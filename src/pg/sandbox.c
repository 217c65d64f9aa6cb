/* sandbox.c - the SQL half of the test sandbox (Ecto's SQL Sandbox): the
 * owner's transaction, a savepoint around each lease of it, and catching
 * code under test that ends the transaction. Owners: src/core/ownership.c. */
#include <stdio.h>
#include <string.h>

#include "dbpool_pg.h"
#include "dbpool_sandbox.h"
#include "driver_pg.h"
#include "error.h"
#include "ownership.h"
#include "pool.h"

/* Savepoint of one lease; the transaction helpers nest theirs (dbpool_sp_N)
 * inside it, so the names never meet. */
#define LEASE_SP "dbpool_sandbox_lease"

/* One command on the held connection, with the helpers' statement timeout
 * (a cancel at the deadline), so no step of the sandbox waits unbounded. */
static int cmd(dbpool_lease *l, const char *sql)
{
    return dbpool_pg_exec(l, sql, NULL, NULL, NULL);
}

static int sbx_begin(dbpool_lease *l)
{
    return cmd(l, "BEGIN");
}

/* A failed statement then aborts only what this lease did, as it would
 * outside the sandbox (where each lease's work is its own), instead of
 * the whole test's transaction. */
static int sbx_lease_start(dbpool_lease *l)
{
    PGconn *pg = dbpool_pg_conn(l);

    if (!pg || PQtransactionStatus(pg) != PQTRANS_INTRANS)
        return 0;
    return cmd(l, "SAVEPOINT " LEASE_SP) == 0;
}

/* The owner's transaction is gone: roll back whatever is left and begin a
 * new one, so the tests after this one stay isolated. */
static int restart(dbpool_lease *l, PGconn *pg)
{
    if (PQtransactionStatus(pg) != PQTRANS_IDLE)
        (void)cmd(l, "ROLLBACK");
    if (PQstatus(pg) != CONNECTION_OK || cmd(l, "BEGIN") != 0)
        return SBX_BROKEN;
    return SBX_ENDED;
}

static int sbx_lease_end(dbpool_lease *l, int had_sp, char *msg, size_t len)
{
    PGconn *pg = dbpool_pg_conn(l);

    if (!pg || PQstatus(pg) != CONNECTION_OK)
        return SBX_BROKEN;
    switch (PQtransactionStatus(pg)) {
    case PQTRANS_INTRANS:
        if (!had_sp || cmd(l, "RELEASE SAVEPOINT " LEASE_SP) == 0)
            return SBX_OK;
        /* the savepoint is gone: the code under test ended the transaction
         * (COMMIT, then BEGIN again) */
        snprintf(msg, len,
                 "the code under test ended the sandbox's transaction (a raw COMMIT or "
                 "ROLLBACK, then a new BEGIN): what the test wrote before it, and what this "
                 "lease wrote after it, may have been committed for real; the sandbox began "
                 "a new transaction");
        return restart(l, pg);
    case PQTRANS_INERROR:
        if (had_sp && cmd(l, "ROLLBACK TO SAVEPOINT " LEASE_SP) == 0 &&
            cmd(l, "RELEASE SAVEPOINT " LEASE_SP) == 0)
            return SBX_OK; /* only this lease's work is undone */
        snprintf(msg, len,
                 "a failed statement aborted the sandbox's transaction and it could not be "
                 "rolled back to this lease's savepoint: the owner's earlier writes were "
                 "rolled back; the sandbox began a new transaction");
        return restart(l, pg);
    case PQTRANS_IDLE:
        snprintf(msg, len,
                 "the code under test ended the sandbox's transaction (a raw COMMIT or "
                 "ROLLBACK): what the test wrote before it, and what this lease wrote after "
                 "it, may have been committed for real; the sandbox began a new transaction");
        return restart(l, pg);
    default: /* a query left running: the connection is not usable */
        return SBX_BROKEN;
    }
}

static const struct sandbox_ops pg_sandbox_ops = {
    .begin = sbx_begin,
    .lease_start = sbx_lease_start,
    .lease_end = sbx_lease_end,
};

int dbpool_sandbox_enable(dbpool *pool, const dbpool_sandbox_config *cfg)
{
    clear_error();
    if (!pool)
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_enable: NULL pool");
    if (pool_forked(pool))
        return DBPOOL_EFORKED;
    if (!pg_pool_is_pg(pool))
        return set_error(DBPOOL_EINVAL, "dbpool_sandbox_enable: not a PostgreSQL pool");
    return sandbox_enable(pool, &pg_sandbox_ops, cfg);
}
