/* ownership.h - the driver-neutral half of the test sandbox (DBConnection's
 * Ownership): owners, allowances, modes, per-owner FIFO. The SQL half
 * (BEGIN, savepoints, detecting a raw COMMIT) is src/pg/sandbox.c. */
#ifndef DBPOOL_OWNERSHIP_H
#define DBPOOL_OWNERSHIP_H

#include "namespace.h"

#include <stdint.h>

#include "dbpool.h"
#include "dbpool_sandbox.h"

struct dbpool;
struct sandbox;
struct dbpool_slot;

/* What a lease of the owner's connection left behind (lease_end). */
enum { SBX_OK = 0, SBX_ENDED, SBX_BROKEN };

/* The driver's side, called on the thread that holds the owner's connection
 * (a live lease), never under a lock. */
struct sandbox_ops {
    /* The owner just checked the connection out: open its transaction.
     * 0 or a DBPOOL_E* code with the message set. */
    int (*begin)(dbpool_lease *l);
    /* A caller gets the connection: 1 if a savepoint was taken. */
    int (*lease_start)(dbpool_lease *l);
    /* The caller gives it back: close the savepoint (had_sp), check the
     * owner's transaction is still open, restart it if not (SBX_ENDED,
     * reason in msg), SBX_BROKEN if the connection is unusable. */
    int (*lease_end)(dbpool_lease *l, int had_sp, char *msg, size_t len);
};

/* Put the pool in sandbox mode (ops static). 0, EINVAL, ENOMEM, ESYSTEM. */
int sandbox_enable(struct dbpool *p, const struct sandbox_ops *ops,
                   const dbpool_sandbox_config *cfg);
/* dbpool_checkout() on a pool in sandbox mode. */
int sandbox_checkout(struct sandbox *sb, int64_t timeout_ms, dbpool_lease *l);
/* dbpool_checkin()/dbpool_discard() of a lease whose slot an owner holds. */
int sandbox_checkin(dbpool_lease *l, struct dbpool_owner *o, int discard);
/* Callers queued for owners' connections, all owners together (tests). */
int sandbox_queued(struct dbpool *p);
/* Freed with the pool (no owner is left then: each holds a lease). */
void sandbox_free(struct sandbox *sb);

#endif
