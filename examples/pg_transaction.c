/*
 * pg_transaction.c - transactions with a callback: BEGIN, your statements,
 * COMMIT (or ROLLBACK on any error), a nested level as a SAVEPOINT, retries
 * of serialization failures, and the one outcome nobody can know.
 *
 *   pg_transaction "host=127.0.0.1 port=5432 dbname=postgres"
 */
#include <stdio.h>

#include "dbpool_pg.h"

struct transfer {
    int from, to, amount;
};

/* A nested level: if it fails, only its own work is undone. */
static int audit(dbpool_lease *tx, void *arg)
{
    (void)arg;
    return dbpool_pg_exec(tx, "INSERT INTO audit_log (at) VALUES (now())", NULL, NULL, NULL);
}

static int transfer_cb(dbpool_lease *tx, void *arg)
{
    struct transfer *t = arg;
    char from[16], to[16], amount[16];
    snprintf(from, sizeof from, "%d", t->from);
    snprintf(to, sizeof to, "%d", t->to);
    snprintf(amount, sizeof amount, "%d", t->amount);
    const char *debit[] = {amount, from}, *credit[] = {amount, to};
    dbpool_pg_params pd = {.n = 2, .values = debit}, pc = {.n = 2, .values = credit};
    int rc;

    rc = dbpool_pg_exec_prepared(tx,
                                 "UPDATE accounts SET balance = balance - $1::int "
                                 "WHERE id = $2::int",
                                 &pd, NULL, NULL);
    if (rc != 0)
        return rc; /* anything nonzero rolls back and is returned */
    rc = dbpool_pg_exec_prepared(tx,
                                 "UPDATE accounts SET balance = balance + $1::int "
                                 "WHERE id = $2::int",
                                 &pc, NULL, NULL);
    if (rc != 0)
        return rc;
    /* SAVEPOINT / RELEASE (or ROLLBACK TO): an audit failure does not undo
     * the transfer */
    if (dbpool_pg_transaction_lease(tx, audit, NULL, NULL) != 0)
        fprintf(stderr, "audit skipped: %s\n", dbpool_last_error());
    return 0;
}

int main(int argc, char **argv)
{
    dbpool *pool;
    dbpool_pg_tx_opts opts;
    dbpool_pg_timings tm;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CONNINFO\n", argv[0]);
        return 2;
    }
    if (dbpool_pg_open(&pool, argv[1], NULL) != 0) {
        fprintf(stderr, "open: %s\n", dbpool_last_error());
        return 1;
    }
    /* setup (a real program has its schema already) */
    if (dbpool_pg_query(pool,
                        "CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, "
                        "balance int NOT NULL CHECK (balance >= 0))",
                        NULL, NULL, NULL) != 0)
        fprintf(stderr, "setup: %s\n", dbpool_last_error());
    (void)dbpool_pg_query(pool, "CREATE TABLE IF NOT EXISTS audit_log (at timestamptz)", NULL, NULL,
                          NULL);
    (void)dbpool_pg_query(pool,
                          "INSERT INTO accounts VALUES (1, 100), (2, 0) "
                          "ON CONFLICT (id) DO NOTHING",
                          NULL, NULL, NULL);

    dbpool_pg_tx_opts_init(&opts);
    opts.isolation = DBPOOL_PG_SERIALIZABLE;
    opts.max_retries = 3; /* re-run on 40001 / 40P01: transfer_cb must be safe to re-run */

    struct transfer t = {.from = 1, .to = 2, .amount = 30};
    int rc = dbpool_pg_transaction(pool, transfer_cb, &t, &opts, &tm);
    switch (rc) {
    case 0:
        printf("committed (attempts=%d db=%.1fms queue=%.1fms idle=%lldms)\n", tm.attempts,
               (double)tm.db_us / 1000.0, (double)tm.queue_us / 1000.0, (long long)tm.idle_ms);
        break;
    case DBPOOL_ECOMMIT_UNKNOWN:
        /* the connection died after COMMIT was sent: check before retrying */
        fprintf(stderr, "outcome unknown: %s\n", dbpool_last_error());
        break;
    default:
        /* definitely not committed: rolled back (or never started) */
        fprintf(stderr, "rolled back: %s: %s\n", dbpool_strerror(rc), dbpool_last_error());
        break;
    }

    /* The CHECK constraint makes this one fail: rolled back as a whole. */
    struct transfer too_much = {.from = 1, .to = 2, .amount = 1000};
    rc = dbpool_pg_transaction(pool, transfer_cb, &too_much, &opts, NULL);
    if (rc == DBPOOL_EQUERY)
        printf("refused, nothing changed: %s\n", dbpool_last_error());

    dbpool_close(pool);
    return 0;
}
