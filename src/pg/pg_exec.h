/* pg_exec.h - the statement engine shared by the blocking helpers
 * (pg_query.c) and the asynchronous ones (pg_async.c): one send, one
 * classification of what came back, one mapping to return codes. The two
 * differ only in how they wait (poll() on the caller's thread vs the
 * application's event loop). */
#ifndef DBPOOL_PG_EXEC_H
#define DBPOOL_PG_EXEC_H

#include "namespace.h"

#include <stdint.h>

#include "dbpool_pg.h"
#include "stmtcache.h"

/*
 * Lives with the connection (struct pg_conn) and dies with it, so a
 * reconnected slot starts with an empty cache: no statement name can outlive
 * the session that prepared it. Only the lease holder touches it.
 */
struct pg_qstate {
    struct stmtcache cache; /* src/pg/stmtcache.c */
    int depth;              /* savepoint nesting of dbpool_pg_transaction_lease */
    uint64_t retryable;     /* 40001/40P01 errors seen (transaction retries) */
    char last_sqlstate[6];
    int64_t db_us;       /* time spent in exchanges, ever (transaction timings) */
    uint64_t resets;     /* pg_conn_resets() when the cache was last valid */
    int64_t answered_us; /* end of the last exchange the server answered in full, 0: none */
    uint64_t conn_id;    /* pg_conn_id() of its connection (dbpool_io_conn_id) */
};

/* What one exchange sends. */
enum { K_PARAMS, K_PREPARED, K_PREPARE, K_SIMPLE };

/* Outcomes of one exchange with the server. */
enum {
    XS_OK,           /* result in *res */
    XS_SQLERR,       /* server error; error result in *res; connection fine */
    XS_DEAD,         /* connection dead before anything was sent */
    XS_LOST,         /* connection lost after sending */
    XS_TIMEOUT,      /* deadline; cancelled, the server confirmed (57014) */
    XS_TIMEOUT_LOST, /* deadline; no answer to the cancel: connection unusable,
                        and whatever was sent may or may not have run */
    XS_FAIL,         /* unusable state (COPY, protocol confusion): discard */
    XS_REFUSED,      /* libpq refused to send (bad arguments); connection fine */
    XS_BUSY,         /* the caller left a query running on the connection */
    XS_SENT          /* pgq_send(): on the wire, now read the results */
};

/* How reading the results ended. */
enum { C_DONE, C_TIMEOUT, C_LOST, C_COPY };

/* One helper call on one lease. */
struct call {
    PGconn *pg;
    struct pg_qstate *qs;
    dbpool_pg_opts o;
    int64_t deadline; /* us; 0 = none */
    int was_blocking; /* restore blocking mode at the end */
    int sent;         /* the caller's statement may have been executed */
    int discard;      /* the connection must not be reused */
    int read_only;    /* a 25006 came back: read_only_session() */
    const dbpool_lease *lease;
    int64_t db_us;
    int fail_rc;   /* XS_FAIL: the code to return (ECONNLOST unless misuse) */
    char msg[320]; /* detail of the last non-OK exchange */
};

/* Options with defaults filled in and checked (NULL = defaults). */
int pgq_opts_get(const dbpool_pg_opts *in, dbpool_pg_opts *o);
/* Bind a call to a live lease of a PostgreSQL pool (its per-connection
 * state created on first use); arm the deadline with pgq_arm(). */
int pgq_call_init(struct call *c, dbpool_lease *l, const dbpool_pg_opts *o);
void pgq_arm(struct call *c, int64_t timeout_ms);
/* After the call: doom a read-only server's connections, poison a connection
 * to be discarded, put the blocking mode back. */
void pgq_call_end(struct call *c);

/* Check the connection, switch it to non-blocking mode and send one request
 * (not flushed completely, perhaps). XS_SENT, or the outcome when nothing
 * (more) can happen: XS_DEAD, XS_BUSY, XS_REFUSED, XS_LOST. */
int pgq_send(struct call *c, int kind, const char *name, const char *sql, const dbpool_pg_params *p,
             int user);
/* Keep the first error result, else the last result. */
void pgq_keep(PGresult **res, PGresult *r);
/* Classify a finished read (C_DONE, C_LOST, C_COPY). */
int pgq_classify(struct call *c, int cr, PGresult *res);
/* Classify the end of a read after the statement deadline and the cancel
 * request: cr is how the read under cancel_grace ended (C_TIMEOUT: no answer
 * within the grace), `delivered` whether the cancel request was delivered. */
int pgq_timed_out(struct call *c, int cr, PGresult *res, int delivered);
/* Account an exchange that was sent at t0 (us) and ended as x. Returns x. */
int pgq_received(struct call *c, int x, PGresult *res, int64_t t0);
/* Turn an outcome into a return code, out->res/sqlstate and the message
 * (dbpool_last_error). Takes res: it ends in out->res or is cleared. */
int pgq_outcome(struct call *c, int x, PGresult *res, dbpool_pg_result *out, const char *what);

/* The statement cache: 1 if res says a cached statement is no longer valid
 * (*gone: every statement is). */
int pgq_stale_statement(const PGresult *res, int *gone);
/* "DEALLOCATE a;DEALLOCATE b;" for the evicted statements. */
void pgq_drain_sql(const struct call *c, char *buf, size_t len);

/* A lease-level statement from start to end: tracing, the hold_timeout
 * mapping to DBPOOL_EEXPIRED, timings in out. */
struct pgq_exec {
    struct call c;
    const char *sql;
    dbpool_pg_result *out;
    void *span;
    int64_t t0;
};
int pgq_exec_begin(struct pgq_exec *e, dbpool_lease *l, const char *sql, const dbpool_pg_params *p,
                   const dbpool_pg_opts *o, dbpool_pg_result *out);
int pgq_exec_end(struct pgq_exec *e, int x, PGresult *res);

/* Check a lease in, or discard it when its connection is unusable, keeping
 * the call's message. */
int pgq_give_back(dbpool_lease *l);
/* How many dead connections one pool-level call may skip: the pool's size. */
int pgq_dead_retry_limit(dbpool *pool);
/* 1 if what the caller passed makes no sense (message set). */
int pgq_bad_params(const char *sql, const dbpool_pg_params *p);
/* An error field of a result, "" if none (or no result). */
const char *pgq_res_field(const PGresult *r, int field);
/* libpq's message as one line, or the fallback. */
void pgq_conn_msg(char *buf, size_t len, PGconn *pg, const char *fallback);
/* Does an idle connection already show that the server went away? */
int pgq_probe_dead(PGconn *pg, char *msg, size_t len);
/* Is c's connection dead before sending? pgq_probe_dead's poll() unless the
 * server answered in full less than 1 ms ago (pg_query.c says why that
 * stays honest). Reason in c->msg if the probe found one. */
int pgq_found_dead(struct call *c);
/* The server just answered everything sent on c's connection (up to
 * ReadyForQuery): the session was alive now. */
void pgq_answered(struct call *c);
/* Shut a connection's socket so whoever checks it in discards it. */
void pgq_poison(PGconn *pg);

#endif
