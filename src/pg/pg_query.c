/* pg_query.c - the PostgreSQL query helpers: run a statement on a pooled
 * connection under a deadline that cancels it server-side, say honestly what
 * happened, cache prepared statements per connection, run (nested)
 * transactions. Everything here runs on the caller's thread, on a connection
 * the caller holds; only the cancel request goes to a worker thread. Its
 * per-connection state lives in the connection's user data slot (see
 * pool_lease_user in src/core/pool.h) and dies with the connection. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "conninfo.h"
#include "dbpool_pg.h"
#include "error.h"
#include "pool.h"
#include "driver_pg.h"
#include "pg_exec.h"
#include "stmtcache.h"
#include "workers.h"

#define DEF_STATEMENT_TIMEOUT 15000
#define DEF_CANCEL_GRACE 1000
#define DEF_CACHE_SIZE 64

/* ---- per-connection state ------------------------------------------------- */

/* The connection closed (src/core/slot.c, slot_disconnect): sends nothing,
 * the server forgets prepared statements with the session. */
static void qstate_free(void *arg)
{
    struct pg_qstate *qs = arg;

    stmtcache_clear(&qs->cache);
    mem_free(qs);
}

/* ---- clock and waiting ------------------------------------------------------ */

/* The library's one clock (src/core/clock.h), in us. */
#define now_us clock_us

/* Wait until fd shows `events` or the deadline (us, 0 = none) passes.
 * Returns the revents seen, 0 on timeout. A failing poll() is reported as
 * ready so that libpq meets the error itself. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int ms = 3600 * 1000;
        if (deadline) {
            int64_t left = deadline - now_us();
            if (left <= 0)
                return 0;
            if (left / 1000 + 1 < ms)
                ms = (int)(left / 1000 + 1);
        }
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, ms);
        if (r > 0)
            return p.revents ? p.revents : events;
        if (r < 0 && errno != EINTR)
            return events;
    }
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- messages ------------------------------------------------------------------- */

/* Copy a libpq message into buf as one line without trailing blanks. */
void pgq_conn_msg(char *buf, size_t len, PGconn *pg, const char *fallback)
{
    pg_one_line(buf, len, PQerrorMessage(pg));
    if (!*buf)
        snprintf(buf, len, "%s", fallback);
}

/* ---- cancel ------------------------------------------------------------------- */

/*
 * A cancel request runs on a worker thread (PQcancel blocks, with
 * no timeout before libpq 17) so the caller's wait stays bounded by
 * cancel_grace. The caller and the job share this; the last one frees it.
 * `efd` becomes readable when the request was delivered.
 */
struct cancel_req {
    atomic_int refs;
    PGcancel *token;
    int efd;
};

static void cancel_unref(struct cancel_req *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    PQfreeCancel(r->token);
    close(r->efd);
    mem_free(r);
}

static void cancel_job(void *arg)
{
    struct cancel_req *r = arg;
    char err[256];
    uint64_t one = 1;

    PQcancel(r->token, err, sizeof(err)); /* failure: the grace period decides */
    ssize_t w = write(r->efd, &one, sizeof(one));
    (void)w;
}

static void cancel_job_free(void *arg)
{
    cancel_unref(arg);
}

static struct cancel_req *cancel_start(PGconn *pg)
{
    struct cancel_req *r = mem_calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->token = PQgetCancel(pg);
    if (r->efd < 0 || !r->token) {
        if (r->efd >= 0)
            close(r->efd);
        PQfreeCancel(r->token);
        mem_free(r);
        return NULL;
    }
    atomic_init(&r->refs, 2);
    char lane[128];
    pg_cancel_target(pg, lane, sizeof(lane));
    if (workers_submit(lane, cancel_job, r, cancel_job_free) != 0)
        cancel_unref(r); /* not sent: never block the caller; the grace decides */
    return r;
}

/* 1 if the cancel request was delivered before the deadline. */
static int cancel_wait(struct cancel_req *r, int64_t deadline)
{
    return r && (wait_fd(r->efd, POLLIN, deadline) & POLLIN) != 0;
}

/* Make a connection unusable so that whoever checks it in discards it: its
 * socket is shut down, libpq sees the EOF and reports CONNECTION_BAD. Used
 * when we cannot prove it is clean (a cancel that may still arrive, a query
 * still running) and the lease is not ours to discard. */
void pgq_poison(PGconn *pg)
{
    int fd = PQsocket(pg);

    if (fd < 0 || PQstatus(pg) != CONNECTION_OK)
        return;
    shutdown(fd, SHUT_RDWR);
    for (int i = 0; i < 4 && PQstatus(pg) == CONNECTION_OK; i++)
        if (!PQconsumeInput(pg))
            break;
}

/*
 * A 25006 (read_only_sql_transaction) came back. From a session the server
 * made read-only -- a standby after a failover (in_hot_standby), a primary
 * being demoted (default_transaction_read_only) -- it means the pool talks
 * to the wrong server: 2, reconnect every connection. From a server that
 * reports neither parameter (before PostgreSQL 14) we cannot tell it from
 * the application's own READ ONLY transaction: 1, this connection only. From
 * a read-write session (the application's BEGIN READ ONLY): 0, keep it.
 */
static int read_only_session(PGconn *pg)
{
    const char *hs = PQparameterStatus(pg, "in_hot_standby");
    const char *ro = PQparameterStatus(pg, "default_transaction_read_only");

    if ((hs && !strcmp(hs, "on")) || (ro && !strcmp(ro, "on")))
        return 2;
    return hs || ro ? 0 : 1;
}

/* ---- one exchange ---------------------------------------------------------------- */

/* ---- the server's last words on an idle connection ----------------------------- */

/*
 * libpq's own notice receiver. It ignores its argument (it passes each notice
 * to the notice processor recorded in the result), so it can be put back
 * with any. Learnt once, from a PGconn that never connects: an unknown
 * option fails the parse before anything else happens.
 */
static PQnoticeReceiver libpq_receiver;
static pthread_once_t libpq_receiver_once = PTHREAD_ONCE_INIT;

static void learn_libpq_receiver(void)
{
    const char *const keys[] = {"dbpool_no_such_option", NULL};
    const char *const vals[] = {"", NULL};
    PGconn *pg = PQconnectStartParams(keys, vals, 0);

    if (pg)
        libpq_receiver = PQsetNoticeReceiver(pg, NULL, NULL); /* NULL: only reads it */
    PQfinish(pg);
}

struct last_words {
    int ended;     /* an error arrived: the server is ending the session */
    char msg[256]; /* the first one */
};

/* Notices go on to libpq's receiver as usual; an error is kept. */
static void last_words_receiver(void *arg, const PGresult *res)
{
    struct last_words *lw = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    if (!sev) /* a server before 9.6: the severity may be translated */
        sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
    if (sev && strcmp(sev, "ERROR") != 0 && strcmp(sev, "FATAL") != 0 &&
        strcmp(sev, "PANIC") != 0) {
        libpq_receiver(NULL, res);
        return;
    }
    if (!lw->ended)
        snprintf(lw->msg, sizeof(lw->msg), "%s: %s (SQLSTATE %s)", sev ? sev : "ERROR", m ? m : "",
                 st ? st : "none");
    lw->ended = 1;
}

/*
 * Parse what an idle connection has received. A message that arrives while
 * no query runs goes to libpq's notice receiver -- an error too, and that is
 * how the server's last words come (57P01 after pg_terminate_backend, an
 * idle-session timeout, a shutdown) when its close has not arrived yet: the
 * session is over, although libpq still says CONNECTION_OK. So parse under a
 * receiver of ours that recognises them (and passes notices on). A receiver
 * the application installed could not be put back (libpq does not tell its
 * argument): such a connection is left to the next exchange, as before.
 * Returns 1 if the session is over (reason in msg).
 */
static int read_last_words(PGconn *pg, char *msg, size_t len)
{
    struct last_words lw = {0};

    pthread_once(&libpq_receiver_once, learn_libpq_receiver);
    if (!libpq_receiver || PQsetNoticeReceiver(pg, NULL, NULL) != libpq_receiver)
        return 0;
    PQsetNoticeReceiver(pg, last_words_receiver, &lw);
    (void)PQisBusy(pg); /* parses whatever is buffered */
    PQsetNoticeReceiver(pg, libpq_receiver, NULL);
    if (lw.ended)
        snprintf(msg, len, "the server ended the session: %s", lw.msg);
    return lw.ended;
}

/*
 * Does the idle connection already show that the server went away? Reading
 * what is pending (an EOF, an error sent before closing) costs one poll()
 * when nothing is; it is what makes "dead before sending" provable.
 */
int pgq_probe_dead(PGconn *pg, char *msg, size_t len)
{
    int fd = PQsocket(pg);

    if (fd < 0)
        return 1;
    for (int i = 0; i < 4; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 0) <= 0)
            break;
        if (!PQconsumeInput(pg))
            return 1;
    }
    if (PQstatus(pg) != CONNECTION_OK)
        return 1;
    /* (also what an earlier read buffered; with a query running the input
     * is its answer, which the exchange reads) */
    return PQtransactionStatus(pg) != PQTRANS_ACTIVE && read_last_words(pg, msg, len);
}

/* Keep the first error result, else the last result. */
void pgq_keep(PGresult **res, PGresult *r)
{
    if (*res && PQresultStatus(*res) == PGRES_FATAL_ERROR) {
        PQclear(r);
        return;
    }
    PQclear(*res);
    *res = r;
}

/* Flush the request and read every result until the deadline. */
static int collect(PGconn *pg, int64_t deadline, PGresult **res)
{
    int fd = PQsocket(pg), w;

    for (;;) {
        int f = PQflush(pg);
        if (f < 0)
            goto lost;
        if (f == 0)
            break;
        if ((w = wait_fd(fd, POLLIN | POLLOUT, deadline)) == 0)
            return C_TIMEOUT;
        if ((w & (POLLIN | POLLHUP | POLLERR)) && !PQconsumeInput(pg))
            goto lost;
    }
    for (;;) {
        while (!PQisBusy(pg)) {
            PGresult *r = PQgetResult(pg);
            if (!r)
                return C_DONE;
            ExecStatusType st = PQresultStatus(r);
            pgq_keep(res, r);
            if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
                return C_COPY;
        }
        if (wait_fd(fd, POLLIN, deadline) == 0)
            return C_TIMEOUT;
        if (!PQconsumeInput(pg))
            goto lost;
    }
lost:
    /* Once the connection is bad PQgetResult no longer blocks: collect the
     * server's last words (e.g. 57P01) if libpq has them. */
    for (int i = 0; i < 8 && PQstatus(pg) == CONNECTION_BAD; i++) {
        PGresult *r = PQgetResult(pg);
        if (!r)
            break;
        pgq_keep(res, r);
    }
    return C_LOST;
}

const char *pgq_res_field(const PGresult *r, int field)
{
    const char *v = r ? PQresultErrorField(r, field) : NULL;
    return v ? v : "";
}

/* Classify a finished collect(). */
int pgq_classify(struct call *c, int cr, PGresult *res)
{
    if (cr == C_LOST || PQstatus(c->pg) != CONNECTION_OK) {
        if (res && *pgq_res_field(res, PG_DIAG_MESSAGE_PRIMARY))
            snprintf(c->msg, sizeof(c->msg), "%s: %s (SQLSTATE %s)",
                     pgq_res_field(res, PG_DIAG_SEVERITY),
                     pgq_res_field(res, PG_DIAG_MESSAGE_PRIMARY),
                     *pgq_res_field(res, PG_DIAG_SQLSTATE) ? pgq_res_field(res, PG_DIAG_SQLSTATE)
                                                           : "none");
        else
            pgq_conn_msg(c->msg, sizeof(c->msg), c->pg, "connection lost");
        return XS_LOST;
    }
    if (cr == C_COPY) {
        c->fail_rc = DBPOOL_EINVAL;
        snprintf(c->msg, sizeof(c->msg),
                 "COPY is not supported by the query helpers (use libpq on a lease); "
                 "connection discarded");
        return XS_FAIL;
    }
    if (!res) {
        snprintf(c->msg, sizeof(c->msg), "no result from the server");
        return XS_FAIL;
    }
    switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
        return XS_OK;
    case PGRES_FATAL_ERROR:
        if (*pgq_res_field(res, PG_DIAG_SQLSTATE))
            return XS_SQLERR;
        /* an error libpq made up itself: we cannot vouch for the connection */
        pg_one_line(c->msg, sizeof(c->msg), PQresultErrorMessage(res));
        return XS_FAIL;
    default:
        snprintf(c->msg, sizeof(c->msg), "unexpected result status %s",
                 PQresStatus(PQresultStatus(res)));
        return XS_FAIL;
    }
}

/*
 * The deadline passed with the query still running: cancel it, then wait up
 * to cancel_grace both for the server's answer and for the cancel request to
 * have been delivered. Only when both happened is the connection clean (no
 * cancel can hit the next holder's query); otherwise it is discarded.
 *
 * Only the server's answer tells what happened: 57014 for this statement
 * means it was cancelled (it did not run, or was rolled back). No answer
 * proves nothing -- the request may not have reached the server yet, or the
 * statement committed and its answer is on the way (a cancel that arrives
 * when nothing runs is ignored) -- so that is XS_TIMEOUT_LOST, never
 * reported as "not executed" (see pgq_outcome()).
 */
static int timed_out(struct call *c, PGresult **res)
{
    int64_t grace = deadline_add(now_us(), deadline_ms_to_us(c->o.cancel_grace));
    struct cancel_req *r = cancel_start(c->pg);
    int cr = collect(c->pg, grace, res);
    int delivered = cancel_wait(r, grace);

    cancel_unref(r);
    return pgq_timed_out(c, cr, *res, delivered);
}

int pgq_timed_out(struct call *c, int cr, PGresult *res, int delivered)
{
    if (cr == C_TIMEOUT || cr == C_LOST || PQstatus(c->pg) != CONNECTION_OK) {
        c->discard = 1;
        snprintf(c->msg, sizeof(c->msg),
                 "statement timeout (%lld ms): a cancel request was sent, but %s within "
                 "cancel_grace (%lld ms); connection discarded",
                 (long long)c->o.statement_timeout,
                 cr == C_TIMEOUT ? "the server did not answer" : "the connection was lost",
                 (long long)c->o.cancel_grace);
        return XS_TIMEOUT_LOST;
    }
    if (!delivered)
        c->discard = 1;
    int x = pgq_classify(c, cr, res);
    if (x == XS_SQLERR && strcmp(pgq_res_field(res, PG_DIAG_SQLSTATE), "57014") == 0) {
        snprintf(c->msg, sizeof(c->msg),
                 "statement timeout: no answer within %lld ms; the statement was cancelled "
                 "on the server",
                 (long long)c->o.statement_timeout);
        return XS_TIMEOUT;
    }
    return x; /* it finished on its own just in time (or failed otherwise) */
}

/*
 * The dead-before-send check (pgq_probe_dead: a poll()) is skipped on a
 * connection whose server answered an exchange in full less than
 * PGQ_FRESH_US ago -- the usual case under load, a connection going from
 * one statement straight to the next. Why that stays honest: the probe is
 * what lets a statement be reported "not sent" (provably not run, retried);
 * skipping it never produces that verdict, it only lets a session that ended
 * within the window be found after the send instead, as a lost connection
 * that may have run (DBPOOL_ECONNLOST, sent 1) -- exactly what happens today
 * when the session ends between the probe and the send. So the window only
 * widens an existing race from microseconds to PGQ_FRESH_US: "not executed"
 * is still reported only when proved, and a statement of the window is at
 * worst an unknown outcome, never the reverse. Sessions do not end on their
 * own that soon after an answer (idle_session_timeout counts in ms of
 * idleness, seconds in practice): only pg_terminate_backend, a shutdown or a
 * network failure in that millisecond loses the retry.
 */
enum { PGQ_FRESH_US = 1000 };

static int answered_lately(const struct call *c)
{
    int64_t at = c->qs->answered_us;
    return at > 0 && now_us() - at < PGQ_FRESH_US;
}

int pgq_found_dead(struct call *c)
{
    return PQstatus(c->pg) != CONNECTION_OK ||
           (!answered_lately(c) && pgq_probe_dead(c->pg, c->msg, sizeof(c->msg)));
}

void pgq_answered(struct call *c)
{
    c->qs->answered_us = now_us();
}

/*
 * Send one request. `user` marks the caller's own statement (as opposed to
 * BEGIN, Prepare, DEALLOCATE...): it decides c->sent.
 */
int pgq_send(struct call *c, int kind, const char *name, const char *sql, const dbpool_pg_params *p,
             int user)
{
    PGconn *pg = c->pg;
    int n = p ? p->n : 0, ok = 0;

    c->msg[0] = '\0';
    if (pgq_found_dead(c)) {
        if (!c->msg[0])
            pgq_conn_msg(c->msg, sizeof(c->msg), pg, "connection is closed");
        c->discard = 1;
        return XS_DEAD;
    }
    if (PQtransactionStatus(pg) == PQTRANS_ACTIVE) {
        snprintf(c->msg, sizeof(c->msg),
                 "a query is still running on this connection (results not read)");
        return XS_BUSY;
    }
    if (!PQisnonblocking(pg) && PQsetnonblocking(pg, 1) != 0) {
        pgq_conn_msg(c->msg, sizeof(c->msg), pg, "cannot switch to non-blocking mode");
        return XS_REFUSED;
    }

    switch (kind) {
    case K_PARAMS:
        ok = PQsendQueryParams(pg, sql, n, p ? p->types : NULL, p ? p->values : NULL,
                               p ? p->lengths : NULL, p ? p->formats : NULL,
                               p ? p->result_format : 0);
        break;
    case K_PREPARED:
        ok = PQsendQueryPrepared(pg, name, n, p ? p->values : NULL, p ? p->lengths : NULL,
                                 p ? p->formats : NULL, p ? p->result_format : 0);
        break;
    case K_PREPARE:
        ok = PQsendPrepare(pg, name, sql, n, p ? p->types : NULL);
        break;
    default:
        ok = PQsendQuery(pg, sql);
        break;
    }
    if (!ok) {
        pgq_conn_msg(c->msg, sizeof(c->msg), pg, "libpq could not send the query");
        if (PQstatus(pg) == CONNECTION_OK && PQtransactionStatus(pg) != PQTRANS_ACTIVE)
            return XS_REFUSED; /* nothing was sent: bad arguments */
        c->sent |= user;
        c->discard = 1;
        return XS_LOST;
    }
    c->sent |= user;
    return XS_SENT;
}

int pgq_received(struct call *c, int x, PGresult *res, int64_t t0)
{
    int64_t now = now_us(), dt = now - t0;

    c->db_us += dt;
    c->qs->db_us += dt;
    if (x == XS_OK || x == XS_SQLERR) /* up to ReadyForQuery: the session was alive */
        c->qs->answered_us = now;
    if (x == XS_LOST || x == XS_FAIL || x == XS_TIMEOUT_LOST)
        c->discard = 1;
    if (x == XS_SQLERR || x == XS_TIMEOUT || x == XS_LOST) {
        const char *st = pgq_res_field(res, PG_DIAG_SQLSTATE);
        if (*st) {
            snprintf(c->qs->last_sqlstate, sizeof(c->qs->last_sqlstate), "%s", st);
            if (!strcmp(st, "40001") || !strcmp(st, "40P01"))
                c->qs->retryable++;
            if (!strcmp(st, "25006") && !c->read_only)
                c->read_only = read_only_session(c->pg);
        }
    }
    return x;
}

/* Send one request and read its results under c->deadline. */
static int exchange(struct call *c, int kind, const char *name, const char *sql,
                    const dbpool_pg_params *p, int user, PGresult **res)
{
    *res = NULL;
    int64_t t0 = now_us();
    int x = pgq_send(c, kind, name, sql, p, user);
    if (x != XS_SENT)
        return x;
    int cr = collect(c->pg, c->deadline, res);
    if (cr == C_TIMEOUT)
        x = timed_out(c, res);
    else
        x = pgq_classify(c, cr, *res);
    return pgq_received(c, x, *res, t0);
}

/* Turn an outcome into a return code, out->res/sqlstate and the message. */
int pgq_outcome(struct call *c, int x, PGresult *res, dbpool_pg_result *out, const char *what)
{
    const char *st = pgq_res_field(res, PG_DIAG_SQLSTATE);
    int rc;

    if (out) {
        size_t i = 0; /* (a copy, not snprintf: this runs for every statement) */
        for (; i + 1 < sizeof(out->sqlstate) && st[i]; i++)
            out->sqlstate[i] = st[i];
        out->sqlstate[i] = '\0';
        out->sent = c->sent;
    }
    if (x == XS_OK || x == XS_SQLERR) {
        rc = 0;
        if (x == XS_SQLERR) {
            const char *detail = pgq_res_field(res, PG_DIAG_MESSAGE_DETAIL);
            const char *sev = pgq_res_field(res, PG_DIAG_SEVERITY);
            rc = set_error(DBPOOL_EQUERY, "%s: %s: %s (SQLSTATE %s)%s%s", what,
                           *sev ? sev : "ERROR", pgq_res_field(res, PG_DIAG_MESSAGE_PRIMARY), st,
                           *detail ? " DETAIL: " : "", detail);
        }
        if (out)
            out->res = res;
        else
            PQclear(res);
        return rc;
    }
    PQclear(res);
    switch (x) {
    case XS_TIMEOUT:
        rc = set_error(DBPOOL_ETIMEDOUT, "%s: %s", what, c->msg);
        break;
    case XS_TIMEOUT_LOST:
        /* "Not executed" only when the server said so (XS_TIMEOUT) or the
         * caller's statement was never sent (only BEGIN, a Parse...). */
        if (c->sent)
            rc = set_error(DBPOOL_EUNKNOWN, "%s: %s; the statement may or may not have run", what,
                           c->msg);
        else /* e.g. BEGIN, or the Parse before the statement: nothing ran */
            rc = set_error(DBPOOL_ETIMEDOUT, "%s: %s", what, c->msg);
        break;
    case XS_DEAD:
        rc = set_error(DBPOOL_ECONNLOST, "%s: connection was already closed before sending: %s",
                       what, c->msg);
        break;
    case XS_LOST:
        rc = set_error(DBPOOL_ECONNLOST, "%s: connection lost%s: %s", what,
                       c->sent ? " (the statement may or may not have run)" : "", c->msg);
        break;
    case XS_FAIL:
        rc = set_error(c->fail_rc ? c->fail_rc : DBPOOL_ECONNLOST, "%s: %s", what, c->msg);
        break;
    default: /* XS_REFUSED, XS_BUSY */
        rc = set_error(DBPOOL_EINVAL, "%s: %s", what, c->msg);
        break;
    }
    return rc;
}

/* ---- statements ----------------------------------------------------------------- */

int pgq_stale_statement(const PGresult *res, int *gone)
{
    const char *st = pgq_res_field(res, PG_DIAG_SQLSTATE);

    *gone = 0;
    if (!strcmp(st, "26000")) { /* invalid_sql_statement_name: it vanished */
        *gone = 1;
        return 1;
    }
    if (strcmp(st, "0A000") != 0)
        return 0;
    /* 0A000 is feature_not_supported in general: only the plan-cache check
     * (raised before the statement executes) counts. The message may be
     * translated; the source function is not. */
    return !strcmp(pgq_res_field(res, PG_DIAG_SOURCE_FUNCTION), "RevalidateCachedQuery") ||
           strstr(pgq_res_field(res, PG_DIAG_MESSAGE_PRIMARY),
                  "cached plan must not change result type") != NULL;
}

void pgq_drain_sql(const struct call *c, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (int i = 0; i < c->qs->cache.npending && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "DEALLOCATE %s;", c->qs->cache.pending[i]);
}

/* DEALLOCATE forgotten statements (outside a transaction only). */
static int drain_pending(struct call *c)
{
    char sql[STMTCACHE_PENDING_MAX * (STMTCACHE_NAME_LEN + 12)];
    PGresult *res;

    pgq_drain_sql(c, sql, sizeof(sql));
    int x = exchange(c, K_SIMPLE, NULL, sql, NULL, 0, &res);
    PQclear(res);
    if (x == XS_OK || x == XS_SQLERR) { /* an error: already gone; nothing to undo */
        c->qs->cache.npending = 0;
        return XS_OK;
    }
    return x;
}

/*
 * The statement cache: look (sql, n, types) up in the connection's LRU;
 * prepare it on a miss (evicting the least recently used), then Bind/Execute
 * it. A statement the server no longer accepts (0A000 after a schema change,
 * 26000 after DEALLOCATE ALL) is prepared afresh and, outside a transaction,
 * run again once: it failed before executing, so this is safe. Inside a
 * transaction its error has aborted the transaction, which we must report.
 */
static int run_cached(struct call *c, const char *sql, const dbpool_pg_params *p, PGresult **res)
{
    struct pg_qstate *qs = c->qs;
    int n = p ? p->n : 0, retried = 0, x;
    const Oid *types = p && n > 0 ? p->types : NULL;
    PGTransactionStatusType ts = PQtransactionStatus(c->pg);
    int in_tx = ts == PQTRANS_INTRANS;

    if (c->o.unnamed || c->o.cache_size == 0 || (ts != PQTRANS_IDLE && !in_tx))
        return exchange(c, K_PARAMS, NULL, sql, p, 1, res);
    uint64_t h = stmtcache_hash(sql, n, types);
again:
    *res = NULL;
    if (!in_tx && qs->cache.npending > 0 && (x = drain_pending(c)) != XS_OK)
        return x;
    struct stmt *s = stmtcache_get(&qs->cache, h, sql, n, types);
    if (!s) {
        /* Full and inside a transaction with no room to remember what to
         * DEALLOCATE: run it uncached rather than DEALLOCATE in the caller's
         * transaction. */
        if (in_tx && qs->cache.lru.n >= c->o.cache_size &&
            qs->cache.npending >= STMTCACHE_PENDING_MAX)
            return exchange(c, K_PARAMS, NULL, sql, p, 1, res);
        if (!(s = stmtcache_new(&qs->cache, h, sql, n, types)))
            return exchange(c, K_PARAMS, NULL, sql, p, 1, res); /* no memory: uncached */
        x = exchange(c, K_PREPARE, s->name, sql, p, 0, res);
        if (x != XS_OK) { /* e.g. a syntax error: nothing cached, nothing evicted */
            stmt_free(s);
            return x;
        }
        PQclear(*res);
        *res = NULL;
        while (qs->cache.lru.n >= c->o.cache_size && qs->cache.lru.n > 0 &&
               qs->cache.npending < STMTCACHE_PENDING_MAX)
            stmtcache_forget(&qs->cache, stmtcache_oldest(&qs->cache));
        stmtcache_add(&qs->cache, s);
        /* evicted statements: DEALLOCATE now, unless a transaction is open */
        if (!in_tx && qs->cache.npending > 0 && (x = drain_pending(c)) != XS_OK)
            return x;
    }
    x = exchange(c, K_PREPARED, s->name, NULL, p, 1, res);
    int gone;
    if (x == XS_SQLERR && pgq_stale_statement(*res, &gone)) {
        if (gone)
            stmtcache_clear(&qs->cache);
        else
            stmtcache_forget(&qs->cache, s);
        if (!in_tx && !retried) {
            retried = 1;
            PQclear(*res);
            c->sent = 0; /* it failed before executing */
            goto again;
        }
    }
    return x;
}

/* ---- calls -------------------------------------------------------------------------- */

int pgq_opts_get(const dbpool_pg_opts *in, dbpool_pg_opts *o)
{
    if (!in) {
        dbpool_pg_opts_init(o);
        return 0;
    }
    *o = *in;
    if (o->checkout_timeout < 0 && o->checkout_timeout != DBPOOL_DEFAULT_TIMEOUT)
        return set_error(DBPOOL_EINVAL, "dbpool_pg_opts: negative checkout_timeout");
    if (o->statement_timeout < 0 || o->cancel_grace < 0 || o->cache_size < 0)
        return set_error(DBPOOL_EINVAL,
                         "dbpool_pg_opts: statement_timeout, cancel_grace and cache_size "
                         "must not be negative");
    return 0;
}

/* Deadlines saturate: DBPOOL_NO_LIMIT (INT64_MAX) ms is "never", not an
 * overflow into the past. */
void pgq_arm(struct call *c, int64_t timeout_ms)
{
    c->deadline = timeout_ms > 0 ? deadline_add(now_us(), deadline_ms_to_us(timeout_ms)) : 0;
}

/* Bind a call to a live lease of a PostgreSQL pool. */
int pgq_call_init(struct call *c, dbpool_lease *l, const dbpool_pg_opts *o)
{
    memset(c, 0, sizeof(*c));
    if (!l)
        return set_error(DBPOOL_EINVAL, "NULL lease");
    int rc = pgq_opts_get(o, &c->o);
    if (rc != 0)
        return rc;
    if ((rc = dbpool_lease_check(l)) != 0)
        return rc;
    if (!(c->pg = dbpool_pg_conn(l)))
        return set_error(DBPOOL_EINVAL, "lease is not from a PostgreSQL pool");
    void **user = pool_lease_user(l, qstate_free);
    if (!user)
        return set_error(DBPOOL_ESTALE, "lease already checked in");
    if (!*user) {
        struct pg_qstate *qs = mem_calloc(1, sizeof(*qs));
        if (!qs)
            return set_error(DBPOOL_ENOMEM, "out of memory");
        stmtcache_init(&qs->cache);
        qs->conn_id = pg_conn_id(l->slot->conn);
        *user = qs;
    }
    c->qs = *user;
    c->lease = l;
    /* a reset_query ran at a check-in since (DISCARD ALL): the server
     * forgot every prepared statement, and nothing needs DEALLOCATE */
    uint64_t resets = pg_conn_resets(l->slot->conn);
    if (c->qs->resets != resets) {
        stmtcache_clear(&c->qs->cache);
        c->qs->cache.npending = 0;
        c->qs->resets = resets;
    }
    c->was_blocking = !PQisnonblocking(c->pg);
    return 0;
}

/* Give the connection back to plain libpq use: blocking again if it was. */
static void pgq_restore_mode(struct call *c)
{
    if (c->was_blocking && PQisnonblocking(c->pg) && PQstatus(c->pg) == CONNECTION_OK &&
        PQtransactionStatus(c->pg) != PQTRANS_ACTIVE)
        PQsetnonblocking(c->pg, 0);
}

void pgq_call_end(struct call *c)
{
    if (c->read_only)
        pool_lease_doom(c->lease,
                        "read-only server (SQLSTATE 25006: a standby, or a primary being "
                        "demoted); reconnecting",
                        c->read_only == 2);
    if (c->discard)
        pgq_poison(c->pg); /* check-in will close it, whoever does it */
    pgq_restore_mode(c);
}

static void pgq_fill_lease_times(const dbpool_lease *l, dbpool_pg_result *out)
{
    dbpool_lease_info li;

    if (out && dbpool_lease_info_get(l, &li) == 0) {
        out->queue_us = li.queue_us;
        out->idle_ms = li.idle_ms;
    }
}

int pgq_bad_params(const char *sql, const dbpool_pg_params *p)
{
    if (!sql)
        return set_error(DBPOOL_EINVAL, "NULL sql");
    if (p && (p->n < 0 || (p->n > 0 && !p->values)))
        return set_error(DBPOOL_EINVAL, "dbpool_pg_params: n < 0, or values missing");
    return 0;
}

int pgq_exec_begin(struct pgq_exec *e, dbpool_lease *l, const char *sql, const dbpool_pg_params *p,
                   const dbpool_pg_opts *o, dbpool_pg_result *out)
{
    int rc;

    memset(e, 0, sizeof(*e));
    if ((rc = pgq_bad_params(sql, p)) != 0)
        return rc;
    if ((rc = pgq_call_init(&e->c, l, o)) != 0)
        return rc;
    e->sql = sql;
    e->out = out;
    pgq_fill_lease_times(l, out);
    /* tracing: the pool lives while its lease does */
    const struct dbpool *pool = l->slot->pool;
    if (pool->cfg.trace_cb) {
        e->t0 = now_us();
        dbpool_trace t = {.type = DBPOOL_TRACE_QUERY_START, .at_us = e->t0, .statement = sql};
        e->span = pool_trace(pool, &t);
    }
    pgq_arm(&e->c, e->c.o.statement_timeout);
    return 0;
}

int pgq_exec_end(struct pgq_exec *e, int x, PGresult *res)
{
    struct call *c = &e->c;
    const dbpool_lease *l = c->lease;
    const struct dbpool *pool = l->slot->pool;
    dbpool_pg_result *out = e->out;
    char sqlstate[6] = "";
    int rc;

    if (pool->cfg.trace_cb)
        snprintf(sqlstate, sizeof(sqlstate), "%s", pgq_res_field(res, PG_DIAG_SQLSTATE));
    rc = pgq_outcome(c, x, res, out, "query");
    if (out)
        out->db_us = c->db_us;
    pgq_call_end(c);
    /* hold_timeout fired: the pool sent a cancel request and discards the
     * connection at check-in. A failure becomes EEXPIRED -- except an unknown
     * outcome, which stays one: that cancel proves nothing either. */
    char why[320];
    if (rc != 0) { /* (only a failure can become EEXPIRED: no copies per success) */
        snprintf(why, sizeof(why), "%s", dbpool_last_error()); /* lease_check sets its own */
        if (dbpool_lease_check(l) == DBPOOL_EEXPIRED) {
            if (rc == DBPOOL_EUNKNOWN || (rc == DBPOOL_ECONNLOST && c->sent))
                rc = set_error(rc,
                               "%s (the lease had outlived hold_timeout; the connection is "
                               "discarded at check-in)",
                               why);
            else
                rc = set_error(DBPOOL_EEXPIRED,
                               "query: the lease outlived hold_timeout; the statement did not "
                               "complete (%s); the connection is discarded at check-in",
                               why);
        }
    }
    if (pool->cfg.trace_cb) {
        char keep[512]; /* the trace callback may call libpq, not dbpool; keep ours */
        snprintf(keep, sizeof(keep), "%s", dbpool_last_error());
        int64_t now = now_us();
        dbpool_trace t = {.type = DBPOOL_TRACE_QUERY_END,
                          .rc = rc,
                          .at_us = now,
                          .duration_us = now - e->t0,
                          .statement = e->sql,
                          .sqlstate = sqlstate,
                          .span = e->span};
        pool_trace(pool, &t);
        set_error_msg("%s", keep);
    }
    return rc;
}

/* One statement on a held lease. */
static int lease_exec(dbpool_lease *l, int cached, const char *sql, const dbpool_pg_params *p,
                      const dbpool_pg_opts *o, dbpool_pg_result *out, int *sent)
{
    struct pgq_exec e;
    PGresult *res = NULL;
    int rc;

    *sent = 0;
    if ((rc = pgq_exec_begin(&e, l, sql, p, o, out)) != 0)
        return rc;
    int x =
        cached ? run_cached(&e.c, sql, p, &res) : exchange(&e.c, K_PARAMS, NULL, sql, p, 1, &res);
    *sent = e.c.sent;
    return pgq_exec_end(&e, x, res);
}

/* Check the lease in, or discard it when it is unusable. The call's own
 * message stays: the check-in's ("lease held longer than hold_timeout") must
 * not replace what happened to the statement. */
int pgq_give_back(dbpool_lease *l)
{
    PGconn *pg = dbpool_pg_conn(l);
    char keep[512];
    int said = dbpool_last_error()[0] != '\0'; /* (no copy of nothing, per statement) */

    if (said)
        snprintf(keep, sizeof(keep), "%s", dbpool_last_error());
    int rc = pg && PQstatus(pg) != CONNECTION_OK ? dbpool_discard(l) : dbpool_checkin(l);
    if (rc != DBPOOL_ETXENDED) { /* the sandbox's news is the caller's business */
        if (said)
            set_error_msg("%s", keep);
        else
            clear_error();
    }
    return rc;
}

/* How many dead connections one call may skip: the pool's size. */
int pgq_dead_retry_limit(dbpool *pool)
{
    dbpool_stats st;

    if (dbpool_stats_get(pool, &st) != 0)
        return 1;
    return st.size > 0 ? st.size : 1;
}

/*
 * Pool-level call: check out, run, check in. Retried on another connection
 * only while the statement provably was not sent (the connection was found
 * dead first), each retry discarding that dead connection.
 */
static int pool_exec(dbpool *pool, int cached, const char *sql, const dbpool_pg_params *p,
                     const dbpool_pg_opts *o, dbpool_pg_result *out)
{
    dbpool_pg_opts opts;
    int rc, limit = -1, retries = 0;
    int64_t queue_us = 0;

    clear_error();
    if (out)
        memset(out, 0, sizeof(*out));
    if (!pool || !sql)
        return set_error(DBPOOL_EINVAL, "NULL pool or sql");
    if ((rc = pgq_opts_get(o, &opts)) != 0)
        return rc;
    for (;;) {
        dbpool_lease l;
        int sent = 0;
        if ((rc = dbpool_checkout(pool, opts.checkout_timeout, &l)) != 0)
            break;
        rc = lease_exec(&l, cached, sql, p, &opts, out, &sent);
        int crc = pgq_give_back(&l);
        if (rc == 0 && crc == DBPOOL_EEXPIRED)
            clear_error(); /* the answer is complete; only the connection is lost */
        if (rc == 0 && crc == DBPOOL_ETXENDED)
            rc = crc; /* sandbox: the statement ended the test's transaction */
        if (out)
            queue_us += out->queue_us;
        if (rc != DBPOOL_ECONNLOST || sent)
            break;
        if (limit < 0)
            limit = pgq_dead_retry_limit(pool);
        if (retries >= limit)
            break;
        retries++;
        dbpool_pg_result_clear(out);
    }
    if (out) {
        out->retries = retries;
        out->queue_us = queue_us;
    }
    return rc;
}

/* ---- public: statements ------------------------------------------------------------ */

void dbpool_pg_opts_init(dbpool_pg_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof(*o));
    o->checkout_timeout = DBPOOL_DEFAULT_TIMEOUT;
    o->statement_timeout = DEF_STATEMENT_TIMEOUT;
    o->cancel_grace = DEF_CANCEL_GRACE;
    o->cache_size = DEF_CACHE_SIZE;
}

void dbpool_pg_result_clear(dbpool_pg_result *r)
{
    if (!r)
        return;
    PQclear(r->res);
    memset(r, 0, sizeof(*r));
}

int dbpool_pg_query(dbpool *pool, const char *sql, const dbpool_pg_params *params,
                    const dbpool_pg_opts *opts, dbpool_pg_result *out)
{
    return pool_exec(pool, 0, sql, params, opts, out);
}

int dbpool_pg_query_prepared(dbpool *pool, const char *sql, const dbpool_pg_params *params,
                             const dbpool_pg_opts *opts, dbpool_pg_result *out)
{
    return pool_exec(pool, 1, sql, params, opts, out);
}

static int lease_api(dbpool_lease *l, int cached, const char *sql, const dbpool_pg_params *p,
                     const dbpool_pg_opts *o, dbpool_pg_result *out)
{
    int sent;

    clear_error();
    if (out)
        memset(out, 0, sizeof(*out));
    return lease_exec(l, cached, sql, p, o, out, &sent);
}

int dbpool_pg_exec(dbpool_lease *lease, const char *sql, const dbpool_pg_params *params,
                   const dbpool_pg_opts *opts, dbpool_pg_result *out)
{
    return lease_api(lease, 0, sql, params, opts, out);
}

int dbpool_pg_exec_prepared(dbpool_lease *lease, const char *sql, const dbpool_pg_params *params,
                            const dbpool_pg_opts *opts, dbpool_pg_result *out)
{
    return lease_api(lease, 1, sql, params, opts, out);
}

/* ---- transactions -------------------------------------------------------------------- */

void dbpool_pg_tx_opts_init(dbpool_pg_tx_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof(*o));
    dbpool_pg_opts_init(&o->query);
}

/* What happened to one attempt, for the retry decision. */
struct txinfo {
    int notsent;   /* nothing executed (dead before/at BEGIN): retry elsewhere */
    int retryable; /* a 40001/40P01 was seen */
    int gone;      /* the callback checked the lease in */
    int64_t db_us;
};

/* One command of the transaction machinery (BEGIN, COMMIT, SAVEPOINT ...). */
static int tx_cmd(struct call *c, const char *sql, PGresult **res)
{
    pgq_arm(c, c->o.statement_timeout);
    return exchange(c, K_SIMPLE, NULL, sql, NULL, 0, res);
}

/* Roll back after a failure; a connection we cannot roll back is discarded. */
static void tx_abort(struct call *c, const char *sql)
{
    PGresult *res;

    if (PQstatus(c->pg) != CONNECTION_OK)
        return;
    int x = tx_cmd(c, sql, &res);
    PQclear(res);
    if (x != XS_OK)
        c->discard = 1;
}

/* After the callback: is the lease still ours? */
static int lease_gone(dbpool_lease *l, PGconn *pg)
{
    return dbpool_lease_check(l) == DBPOOL_ESTALE || dbpool_pg_conn(l) != pg;
}

static int callback_gone(void)
{
    return set_error(DBPOOL_EINVAL, "the transaction callback checked its lease in");
}

static int commit(struct call *c)
{
    PGresult *res;
    int x = tx_cmd(c, "COMMIT", &res), rc;

    switch (x) {
    case XS_OK:
        rc = strcmp(PQcmdStatus(res), "ROLLBACK") == 0
                 ? set_error(DBPOOL_EQUERY, "COMMIT: the transaction had failed and was "
                                            "rolled back")
                 : 0;
        PQclear(res);
        return rc;
    case XS_SQLERR: /* e.g. 40001 or a deferred constraint: rolled back */
        return pgq_outcome(c, x, res, NULL, "COMMIT");
    case XS_DEAD:
        PQclear(res);
        return set_error(DBPOOL_ECONNLOST,
                         "connection lost before COMMIT was sent; the server rolled the "
                         "transaction back: %s",
                         c->msg);
    case XS_TIMEOUT: /* the server answered the cancel with an error: not committed */
        PQclear(res);
        return set_error(DBPOOL_ETIMEDOUT, "COMMIT: %s; the transaction was rolled back", c->msg);
    case XS_REFUSED:
    case XS_BUSY: /* not sent; check-in rolls back */
        PQclear(res);
        return pgq_outcome(c, x, NULL, NULL, "COMMIT");
    default:
        PQclear(res);
        c->discard = 1;
        return set_error(DBPOOL_ECOMMIT_UNKNOWN,
                         "connection lost after COMMIT was sent: the transaction may or may "
                         "not have committed (%s)",
                         c->msg);
    }
}

static void begin_sql(char *buf, size_t len, const dbpool_pg_tx_opts *o)
{
    static const char *const iso[] = {"", " ISOLATION LEVEL READ COMMITTED",
                                      " ISOLATION LEVEL REPEATABLE READ",
                                      " ISOLATION LEVEL SERIALIZABLE"};
    snprintf(buf, len, "BEGIN%s%s%s", iso[o->isolation], o->read_only ? " READ ONLY" : "",
             o->deferrable ? " DEFERRABLE" : "");
}

/* BEGIN, fn, COMMIT / ROLLBACK on a lease that is not in a transaction. */
static int tx_top(dbpool_lease *l, dbpool_pg_tx_cb fn, void *arg, const dbpool_pg_tx_opts *o,
                  struct txinfo *ti)
{
    struct call c;
    PGresult *res;
    char begin[96];
    int rc, x;

    memset(ti, 0, sizeof(*ti));
    if ((rc = pgq_call_init(&c, l, &o->query)) != 0)
        return rc;
    begin_sql(begin, sizeof(begin), o);
    int64_t db0 = c.qs->db_us;
    uint64_t seen = c.qs->retryable;
    if ((x = tx_cmd(&c, begin, &res)) != XS_OK) {
        /* A lost BEGIN executed nothing that survives the connection. */
        ti->notsent = x == XS_DEAD || x == XS_LOST;
        rc = pgq_outcome(&c, x, res, NULL, "BEGIN");
        pgq_call_end(&c);
        return rc;
    }
    PQclear(res);
    c.qs->depth = 0;
    pgq_restore_mode(&c);
    int frc = fn(l, arg);
    if (lease_gone(l, c.pg)) {
        ti->gone = 1;
        return callback_gone();
    }
    ti->retryable = c.qs->retryable != seen;
    PGTransactionStatusType ts = PQtransactionStatus(c.pg);
    if (PQstatus(c.pg) != CONNECTION_OK) {
        rc = frc ? frc
                 : set_error(DBPOOL_ECONNLOST, "connection lost inside the transaction; the "
                                               "server rolled it back");
    } else if (frc != 0) {
        if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
            tx_abort(&c, "ROLLBACK");
        else if (ts != PQTRANS_IDLE)
            c.discard = 1; /* a query left running */
        rc = frc;
    } else if (ts == PQTRANS_INTRANS) {
        rc = commit(&c);
        ti->retryable = c.qs->retryable != seen;
    } else if (ts == PQTRANS_INERROR) {
        tx_abort(&c, "ROLLBACK");
        rc = set_error(DBPOOL_EQUERY,
                       "the transaction callback returned 0 but a statement in it had failed "
                       "(SQLSTATE %s); rolled back",
                       c.qs->last_sqlstate[0] ? c.qs->last_sqlstate : "unknown");
    } else if (ts == PQTRANS_IDLE) {
        rc = set_error(DBPOOL_EINVAL, "the transaction callback ended the transaction "
                                      "itself (COMMIT or ROLLBACK inside the callback)");
    } else {
        c.discard = 1;
        rc = set_error(DBPOOL_EINVAL, "the transaction callback left a query running");
    }
    ti->db_us = c.qs->db_us - db0;
    pgq_call_end(&c);
    /* hold_timeout: COMMIT was not sent (or failed), so it was rolled back;
     * an unknown COMMIT stays unknown, with its own message */
    char why[320];
    if (rc != 0) {
        snprintf(why, sizeof(why), "%s", dbpool_last_error()); /* lease_check sets its own */
        if (dbpool_lease_check(l) == DBPOOL_EEXPIRED) {
            if (rc == DBPOOL_ECOMMIT_UNKNOWN)
                set_error_msg("%s", why);
            else
                rc = set_error(DBPOOL_EEXPIRED, "transaction: the lease outlived hold_timeout; "
                                                "the pool cancelled its query and it was rolled "
                                                "back");
        }
    }
    return rc;
}

/* A nested level: SAVEPOINT, fn, RELEASE or ROLLBACK TO. */
static int tx_nested(dbpool_lease *l, dbpool_pg_tx_cb fn, void *arg, const dbpool_pg_tx_opts *o)
{
    struct call c;
    PGresult *res;
    char sql[128], what[64];
    int rc, x;

    if ((rc = pgq_call_init(&c, l, &o->query)) != 0)
        return rc;
    int depth = ++c.qs->depth;
    snprintf(what, sizeof(what), "SAVEPOINT dbpool_sp_%d", depth);
    if ((x = tx_cmd(&c, what, &res)) != XS_OK) {
        c.qs->depth = depth - 1;
        rc = pgq_outcome(&c, x, res, NULL, "SAVEPOINT");
        pgq_call_end(&c);
        return rc;
    }
    PQclear(res);
    pgq_restore_mode(&c);
    int frc = fn(l, arg);
    if (lease_gone(l, c.pg))
        return callback_gone();
    c.qs->depth = depth - 1;
    PGTransactionStatusType ts = PQtransactionStatus(c.pg);
    if (PQstatus(c.pg) != CONNECTION_OK) {
        rc = frc ? frc : set_error(DBPOOL_ECONNLOST, "connection lost inside a nested transaction");
    } else if (frc == 0 && ts == PQTRANS_INTRANS) {
        snprintf(sql, sizeof(sql), "RELEASE SAVEPOINT dbpool_sp_%d", depth);
        x = tx_cmd(&c, sql, &res);
        rc = pgq_outcome(&c, x, res, NULL, "RELEASE SAVEPOINT");
    } else if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        snprintf(sql, sizeof(sql),
                 "ROLLBACK TO SAVEPOINT dbpool_sp_%d; RELEASE SAVEPOINT dbpool_sp_%d", depth,
                 depth);
        x = tx_cmd(&c, sql, &res);
        if (x != XS_OK)
            rc = pgq_outcome(&c, x, res, NULL, "ROLLBACK TO SAVEPOINT");
        else {
            PQclear(res);
            rc = frc ? frc
                     : set_error(DBPOOL_EQUERY,
                                 "the nested transaction callback returned 0 but a statement "
                                 "in it had failed (SQLSTATE %s); rolled back to its savepoint",
                                 c.qs->last_sqlstate[0] ? c.qs->last_sqlstate : "unknown");
        }
    } else {
        rc = set_error(DBPOOL_EINVAL, "the nested transaction callback ended the outer "
                                      "transaction (COMMIT or ROLLBACK inside the callback)");
    }
    pgq_call_end(&c);
    return rc;
}

static int tx_opts_get(const dbpool_pg_tx_opts *in, dbpool_pg_tx_opts *o)
{
    if (!in) {
        dbpool_pg_tx_opts_init(o);
        return 0;
    }
    *o = *in;
    if ((unsigned)o->isolation > DBPOOL_PG_SERIALIZABLE || o->max_retries < 0)
        return set_error(DBPOOL_EINVAL, "dbpool_pg_tx_opts: bad isolation or max_retries");
    dbpool_pg_opts q;
    return pgq_opts_get(&o->query, &q);
}

/* A short random pause before re-running a transaction that lost a
 * serialization conflict, so the conflicting transactions do not collide
 * again in lockstep: uniform in [1, min(100, 5 * 2^attempt)] ms. */
static void retry_pause(int attempt, uint64_t *rng)
{
    int64_t cap = attempt < 5 ? (int64_t)5 << attempt : 100;

    if (cap > 100)
        cap = 100;
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    sleep_ms(1 + (int64_t)(*rng % (uint64_t)cap));
}

int dbpool_pg_transaction(dbpool *pool, dbpool_pg_tx_cb fn, void *arg,
                          const dbpool_pg_tx_opts *opts, dbpool_pg_timings *timings)
{
    dbpool_pg_tx_opts o;
    int rc, limit = -1, dead = 0, serial = 0;
    uint64_t rng = (uint64_t)now_us() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)&o;

    clear_error();
    if (timings)
        memset(timings, 0, sizeof(*timings));
    if (!pool || !fn)
        return set_error(DBPOOL_EINVAL, "dbpool_pg_transaction: NULL pool or callback");
    if ((rc = tx_opts_get(opts, &o)) != 0)
        return rc;
    for (;;) {
        dbpool_lease l;
        dbpool_lease_info li;
        struct txinfo ti;

        if ((rc = dbpool_checkout(pool, o.query.checkout_timeout, &l)) != 0)
            return rc;
        if (timings && dbpool_lease_info_get(&l, &li) == 0) {
            timings->queue_us = li.queue_us;
            timings->idle_ms = li.idle_ms;
        }
        PGconn *pg = dbpool_pg_conn(&l);
        if (pg && PQtransactionStatus(pg) == PQTRANS_INTRANS) {
            /* A sandbox's lease (a pool's own connections come back idle):
             * the transaction is a savepoint in the test's transaction. */
            rc = tx_nested(&l, fn, arg, &o);
            if (lease_gone(&l, pg))
                return rc;
            int crc = pgq_give_back(&l);
            if (timings)
                timings->attempts = 1;
            return rc == 0 && crc == DBPOOL_ETXENDED ? crc : rc;
        }
        rc = tx_top(&l, fn, arg, &o, &ti);
        if (!ti.gone)
            (void)pgq_give_back(&l);
        if (timings) {
            timings->db_us = ti.db_us;
            timings->attempts++;
        }
        if (rc == 0)
            return 0;
        if (ti.notsent) {
            if (limit < 0)
                limit = pgq_dead_retry_limit(pool);
            if (dead++ < limit)
                continue;
        } else if (ti.retryable && serial < o.max_retries && rc != DBPOOL_ECOMMIT_UNKNOWN) {
            retry_pause(serial++, &rng);
            continue;
        }
        return rc;
    }
}

int dbpool_pg_transaction_lease(dbpool_lease *lease, dbpool_pg_tx_cb fn, void *arg,
                                const dbpool_pg_tx_opts *opts)
{
    dbpool_pg_tx_opts o;
    PGconn *pg;
    int rc;
    uint64_t rng = (uint64_t)now_us() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)&o;

    clear_error();
    if (!lease || !fn)
        return set_error(DBPOOL_EINVAL, "dbpool_pg_transaction_lease: NULL lease or callback");
    if ((rc = tx_opts_get(opts, &o)) != 0)
        return rc;
    if ((rc = dbpool_lease_check(lease)) != 0)
        return rc;
    if (!(pg = dbpool_pg_conn(lease)))
        return set_error(DBPOOL_EINVAL, "lease is not from a PostgreSQL pool");
    if (PQstatus(pg) != CONNECTION_OK)
        return set_error(DBPOOL_ECONNLOST, "the connection is closed");
    switch (PQtransactionStatus(pg)) {
    case PQTRANS_INTRANS:
        return tx_nested(lease, fn, arg, &o);
    case PQTRANS_INERROR:
        return set_error(DBPOOL_EQUERY, "current transaction is aborted, commands ignored "
                                        "until end of transaction block (SQLSTATE 25P02)");
    case PQTRANS_IDLE:
        break;
    default:
        return set_error(DBPOOL_EINVAL, "a query is still running on this connection");
    }
    for (int serial = 0;;) {
        struct txinfo ti;
        rc = tx_top(lease, fn, arg, &o, &ti);
        if (rc == 0 || ti.gone || !ti.retryable || serial >= o.max_retries ||
            rc == DBPOOL_ECOMMIT_UNKNOWN || PQstatus(pg) != CONNECTION_OK)
            return rc;
        retry_pause(serial++, &rng);
    }
}
