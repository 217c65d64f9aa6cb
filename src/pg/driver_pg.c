/* driver_pg.c - the PostgreSQL driver on libpq: non-blocking connect,
 * after_connect, ping, check-in reset (ROLLBACK, reset_query), cancel, fork
 * abandon. */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "conninfo.h"
#include "dbpool_pg.h"
#include "error.h"
#include "log.h"
#include "driver_pg.h"
#include "pg_resolve.h"
#include "pool.h"

struct pg_ctx {
    /* keys, vals and their strings in one block: only the options set, so a
     * registry's idle tenant costs a few hundred bytes, not libpq's ~2 KiB */
    const char **keys, **vals;
    char *after_connect;
    char *reset_query; /* run at check-in; NULL = none */
    int lookup;        /* some host entry is a name: look it up first */
    dbpool_before_connect_cb before_connect;
    void *hook_arg;
    const char *password; /* points into the block; scrubbed from messages */
    /* the pool's log settings, for server notices (see pg_notice) */
    char *name;
    dbpool_log_cb log_cb;
    void *log_arg;
    dbpool_log_level log_level;
};

enum { PH_CONNECT, PH_AFTER, PH_READY, PH_PING };

struct pg_conn {
    PGconn *pg; /* first member: dbpool_pg_conn() relies on it */
    int phase;
    int failed;        /* a result of the running command was an error */
    char failure[256]; /* its message: the result and the end of the command
                          may arrive in different reads */
    uint64_t resets;   /* reset_query runs so far: the query layer forgets its
                          statement cache when this moves (pg_conn_resets) */
    uint64_t id;       /* never reused in the process (pg_conn_id) */
};

uint64_t pg_conn_resets(const void *conn)
{
    return ((const struct pg_conn *)conn)->resets;
}

static atomic_uint_fast64_t last_conn_id;

uint64_t pg_conn_id(const void *conn)
{
    return ((const struct pg_conn *)conn)->id;
}

/* ---- async command step (after_connect, ping) --------------------------- */

static int conn_error(struct pg_conn *c, char *err, size_t errlen, const char *password)
{
    pg_set_msg(err, errlen, PQerrorMessage(c->pg), password);
    if (!*err)
        snprintf(err, errlen, "connection lost");
    return DBPOOL_IO_FAIL;
}

/* Flush, read, consume results; READ/WRITE until the command completes. */
static int command_step(struct pg_conn *c, int *fd, char *err, size_t errlen, const char *password)
{
    int f = PQflush(c->pg);

    *fd = PQsocket(c->pg);
    if (f < 0)
        return conn_error(c, err, errlen, password);
    if (f == 1)
        return DBPOOL_IO_WRITE;
    if (!PQconsumeInput(c->pg))
        return conn_error(c, err, errlen, password);
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            if (c->failed) {
                snprintf(err, errlen, "%s", c->failure);
                return DBPOOL_IO_FAIL;
            }
            if (PQstatus(c->pg) != CONNECTION_OK)
                return conn_error(c, err, errlen, password);
            PQsetnonblocking(c->pg, 0);
            c->phase = PH_READY;
            return DBPOOL_IO_DONE;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
            if (!c->failed)
                pg_set_msg(c->failure, sizeof(c->failure), PQresultErrorMessage(res), password);
            c->failed = 1;
        }
        PQclear(res);
    }
    return DBPOOL_IO_READ;
}

static int command_start(struct pg_conn *c, const char *sql, int *fd, char *err, size_t errlen,
                         const char *password)
{
    c->failed = 0;
    c->failure[0] = '\0';
    if (PQsetnonblocking(c->pg, 1) != 0 || !PQsendQuery(c->pg, sql))
        return conn_error(c, err, errlen, password);
    return command_step(c, fd, err, errlen, password);
}

/* ---- connect outcomes --------------------------------------------------- */

/* after_connect failed, on the server or locally: say so in front of the
 * message, whichever step found it. */
static int after_connect_failed(char *err, size_t errlen)
{
    char tmp[256];

    snprintf(tmp, sizeof(tmp), "after_connect failed: %s", err);
    snprintf(err, errlen, "%s", tmp);
    return DBPOOL_IO_FAIL;
}

/* The server's primary message, right after libpq's "<severity>:  ", anywhere
 * in the text. */
static int says(const char *msg, const char *text)
{
    for (const char *p = msg; (p = strstr(p, text)) != NULL; p++)
        if (p - msg >= 3 && strncmp(p - 3, ":  ", 3) == 0)
            return 1;
    return 0;
}

/*
 * Is this failed connect a refusal for want of room (53300
 * too_many_connections): max_connections, the superuser-reserved slots, a
 * role's or database's CONNECTION LIMIT, or PgBouncer's max_client_conn /
 * max_db_connections? The server is there and working, only full; same
 * matching rule and limit as coming_back() below.
 */
static int server_full(const char *msg)
{
    static const char *const texts[] = {
        "sorry, too many clients already",
        "remaining connection slots are reserved for",
        "too many connections for role",
        "too many connections for database",
        "no more connections allowed", /* PgBouncer */
    };

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if (says(msg, texts[i]))
            return 1;
    return 0;
}

/*
 * Is this failed connect a 57P03 (cannot_connect_now) from a server that is
 * coming back? libpq gives a failed connect only as text, e.g. 'connection to
 * server at "db" (10.0.0.5), port 5432 failed: FATAL:  the database system is
 * starting up', so we look for the server's primary messages right after
 * libpq's "<severity>:  " separator, anywhere in the text (with several hosts
 * libpq lists every one it tried). Decided per message:
 *   starting up, not yet accepting connections (a standby before it is
 *   consistent), not accepting connections (hot_standby = off), in recovery
 *   mode (crash recovery): coming back -> wait (DBPOOL_IO_NOT_YET);
 *   shutting down: going away, maybe for good -> an ordinary failure (DOWN).
 * Limit: the server writes these in its lc_messages; a server that
 * translates them is not recognised, and its refusals count as failures.
 */
static int coming_back(const char *msg)
{
    static const char *const texts[] = {
        "the database system is starting up",
        "the database system is not yet accepting connections",
        "the database system is not accepting connections",
        "the database system is in recovery mode",
    };

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if (says(msg, texts[i]))
            return 1;
    return 0;
}

/* ---- driver ------------------------------------------------------------- */

/* Server NOTICE/WARNING messages and libpq's own go to the pool's logger
 * (log_cb or the default stderr sink, at the pool's log_level) instead of
 * libpq's default processor, which writes them raw to stderr. A notice
 * processor, not a receiver: pg_query.c relies on libpq's own receiver. */
static void pg_notice(void *arg, const char *message)
{
    struct pg_ctx *ctx = arg;
    char msg[512];
    dbpool_log_level level = DBPOOL_LOG_INFO;

    if (!strncmp(message, "WARNING", 7) || !strncmp(message, "ERROR", 5) ||
        !strncmp(message, "FATAL", 5) || !strncmp(message, "PANIC", 5))
        level = DBPOOL_LOG_WARNING;
    else if (!strncmp(message, "DEBUG", 5))
        level = DBPOOL_LOG_DEBUG;
    pg_set_msg(msg, sizeof(msg), message, ctx->password);
    log_msg(ctx->name, ctx->log_cb, ctx->log_arg, ctx->log_level, level, msg);
}

/* Start a connect with these parameters (no name lookup left to do). */
static int start_with(struct pg_ctx *ctx, const char *const *keys, const char *const *vals,
                      void **conn, int *fd, char *err, size_t errlen)
{
    struct pg_conn *c = mem_calloc(1, sizeof(*c));

    *conn = NULL;
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return DBPOOL_IO_FAIL;
    }
    c->id = atomic_fetch_add_explicit(&last_conn_id, 1, memory_order_relaxed) + 1;
    c->pg = PQconnectStartParams(keys, vals, 0);
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        if (c->pg)
            pg_set_msg(err, errlen, PQerrorMessage(c->pg), ctx->password);
        else
            snprintf(err, errlen, "out of memory");
        PQfinish(c->pg);
        mem_free(c);
        return DBPOOL_IO_FAIL;
    }
    PQsetNoticeProcessor(c->pg, pg_notice, ctx);
    c->phase = PH_CONNECT;
    *conn = c;
    *fd = PQsocket(c->pg);
    return DBPOOL_IO_WRITE; /* libpq: start as if PQconnectPoll said WRITING */
}

static int pg_connect_start(void *vctx, void **conn, int *fd, char *err, size_t errlen)
{
    struct pg_ctx *ctx = vctx;
    return start_with(ctx, ctx->keys, ctx->vals, conn, fd, err, errlen);
}

/* Worker thread, before a round of connects: fetch credentials from the
 * before_connect_cb (it may block: an IAM or Vault call), and look the host
 * names up. The pool's driver has this step only when it needs one of
 * them. */
static void *pg_resolve_cb(void *vctx, char *err, size_t errlen)
{
    struct pg_ctx *ctx = vctx;
    dbpool_credentials *cred = NULL;
    struct pg_resolved *r;

    if (ctx->before_connect) {
        if (!(cred = mem_calloc(1, sizeof(*cred)))) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        if (ctx->before_connect(ctx->hook_arg, cred) != 0) {
            cred->err[sizeof(cred->err) - 1] = '\0';
            snprintf(err, errlen, "before_connect_cb failed: %s",
                     cred->err[0] ? cred->err : "(no message)");
            memset(cred, 0, sizeof(*cred));
            mem_free(cred);
            return NULL;
        }
        cred->user[sizeof(cred->user) - 1] = cred->password[sizeof(cred->password) - 1] = '\0';
    }
    r = ctx->lookup ? pg_resolve(ctx->keys, ctx->vals, err, errlen)
                    : pg_resolved_plain(ctx->keys, ctx->vals);
    if (!r && !ctx->lookup)
        snprintf(err, errlen, "out of memory");
    if (r && cred && pg_resolved_credentials(r, cred->user, cred->password) != 0) {
        pg_resolved_free(r);
        r = NULL;
        snprintf(err, errlen, "out of memory");
    }
    if (cred) {
        memset(cred, 0, sizeof(*cred)); /* the password lives on only in r */
        mem_free(cred);
    }
    return r;
}

static int pg_connect_resolved(void *vctx, void *resolved, void **conn, int *fd, char *err,
                               size_t errlen)
{
    struct pg_resolved *r = resolved;
    return start_with(vctx, r->keys, r->vals, conn, fd, err, errlen);
}

static void pg_resolved_free_cb(void *resolved)
{
    pg_resolved_free(resolved);
}

static int pg_connect_poll(void *vctx, void *conn, int *fd, char *err, size_t errlen)
{
    struct pg_ctx *ctx = vctx;
    struct pg_conn *c = conn;

    if (c->phase == PH_AFTER) {
        int r = command_step(c, fd, err, errlen, ctx->password);
        return r == DBPOOL_IO_FAIL ? after_connect_failed(err, errlen) : r;
    }
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        *fd = PQsocket(c->pg);
        return DBPOOL_IO_READ;
    case PGRES_POLLING_WRITING:
        *fd = PQsocket(c->pg);
        return DBPOOL_IO_WRITE;
    case PGRES_POLLING_OK:
        if (!ctx->after_connect) {
            c->phase = PH_READY;
            return DBPOOL_IO_DONE;
        }
        c->phase = PH_AFTER;
        {
            int r = command_start(c, ctx->after_connect, fd, err, errlen, ctx->password);
            return r == DBPOOL_IO_FAIL ? after_connect_failed(err, errlen) : r;
        }
    default:
        conn_error(c, err, errlen, ctx->password);
        /* the unscrubbed text: a password could hide part of the message */
        if (coming_back(PQerrorMessage(c->pg)))
            return DBPOOL_IO_NOT_YET;
        return server_full(PQerrorMessage(c->pg)) ? DBPOOL_IO_FULL : DBPOOL_IO_FAIL;
    }
}

static int pg_ping_start(void *vctx, void *conn, int *fd, char *err, size_t errlen)
{
    struct pg_ctx *ctx = vctx;
    struct pg_conn *c = conn;

    c->phase = PH_PING;
    return command_start(c, "", fd, err, errlen, ctx->password);
}

static int pg_ping_poll(void *vctx, void *conn, int *fd, char *err, size_t errlen)
{
    struct pg_ctx *ctx = vctx;
    return command_step(conn, fd, err, errlen, ctx->password);
}

/* Run one command at check-in, blocking up to the deadline (the caller's
 * thread owns the connection). 0, or -1 with a message naming `what`. */
static int reset_cmd(struct pg_ctx *ctx, struct pg_conn *c, const char *sql, const char *what,
                     int64_t deadline, char *err, size_t errlen)
{
    int fd = -1;
    int r = command_start(c, sql, &fd, err, errlen, ctx->password);
    while (r == DBPOOL_IO_READ || r == DBPOOL_IO_WRITE) {
        int64_t left = deadline - clock_ms();
        if (left <= 0) {
            snprintf(err, errlen, "%s at check-in timed out (reset_timeout)", what);
            return -1;
        }
        struct pollfd pfd = {.fd = fd, .events = r == DBPOOL_IO_READ ? POLLIN : POLLOUT};
        if (poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left) < 0)
            continue;
        r = command_step(c, &fd, err, errlen, ctx->password);
    }
    if (r != DBPOOL_IO_DONE || PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        char tmp[256];
        snprintf(tmp, sizeof(tmp), "%s", *err ? err : "failed");
        snprintf(err, errlen, "%s at check-in failed: %s", what, tmp);
        return -1;
    }
    return 0;
}

/*
 * Check-in: idle -> keep; in a (failed) transaction -> ROLLBACK within the
 * timeout (1 = rolled back); a running query, unread results or a broken
 * connection -> discard (-1). Then reset_query, if set, and after_connect
 * again (a DISCARD ALL undoes its SETs), within the same timeout; a failure
 * discards. All on the checking-in thread, like the ROLLBACK.
 */
static int pg_reset(void *vctx, void *conn, int64_t timeout_ms, char *err, size_t errlen)
{
    struct pg_ctx *ctx = vctx;
    struct pg_conn *c = conn;
    PGnotify *n;
    int rolled_back = 0;

    if (PQstatus(c->pg) != CONNECTION_OK) {
        snprintf(err, errlen, "connection is broken");
        return -1;
    }
    while ((n = PQnotifies(c->pg)) != NULL)
        PQfreemem(n);
    switch (PQtransactionStatus(c->pg)) {
    case PQTRANS_IDLE:
        if (PQisnonblocking(c->pg))
            PQsetnonblocking(c->pg, 0);
        if (!ctx->reset_query)
            return 0;
        break;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
        rolled_back = 1;
        break;
    case PQTRANS_ACTIVE:
        snprintf(err, errlen, "checked in with a query running or results unread");
        return -1;
    default:
        snprintf(err, errlen, "transaction status unknown");
        return -1;
    }

    int64_t deadline = deadline_add(clock_ms(), timeout_ms);
    if (rolled_back && reset_cmd(ctx, c, "ROLLBACK", "ROLLBACK", deadline, err, errlen) != 0)
        return -1;
    if (ctx->reset_query) {
        if (reset_cmd(ctx, c, ctx->reset_query, "reset_query", deadline, err, errlen) != 0)
            return -1;
        c->resets++; /* before after_connect: the statements are gone either way */
        if (ctx->after_connect &&
            reset_cmd(ctx, c, ctx->after_connect, "after_connect (after reset_query)", deadline,
                      err, errlen) != 0)
            return -1;
        /* notifications that arrived meanwhile belong to the old session */
        while ((n = PQnotifies(c->pg)) != NULL)
            PQfreemem(n);
    }
    return rolled_back;
}

/* A cancel token remembers its server, so that cancels to one server share
 * one worker lane (see src/core/workers.h). */
struct pg_cancel_token {
    PGcancel *cancel;
    char target[128];
};

void pg_cancel_target(PGconn *pg, char *buf, size_t len)
{
    const char *h = PQhost(pg), *p = PQport(pg);
    snprintf(buf, len, "%s:%s", h ? h : "", p ? p : "");
}

/* Checkout of a connection that sat idle: read what the server sent
 * meanwhile without waiting (libpq's socket is non-blocking). EOF, or a
 * FATAL ahead of it (idle_session_timeout, pg_terminate_backend, a
 * shutdown), leaves the connection bad. */
static int pg_alive(void *vctx, void *conn)
{
    struct pg_conn *c = conn;
    char b;

    (void)vctx;
    /* libpq takes a FATAL on an idle connection as a notice and stays OK
     * until it reads the EOF behind it: consume, then peek for that EOF */
    for (int i = 0; i < 2; i++) {
        if (PQstatus(c->pg) != CONNECTION_OK || !PQconsumeInput(c->pg))
            return 0;
        ssize_t r = recv(PQsocket(c->pg), &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r == 0)
            return 0; /* the server closed it */
        if (r < 0)
            return PQstatus(c->pg) == CONNECTION_OK; /* nothing more to read */
    }
    return PQstatus(c->pg) == CONNECTION_OK;
}

static void *pg_cancel_prepare(void *vctx, void *conn)
{
    struct pg_cancel_token *t = mem_calloc(1, sizeof(*t));
    PGconn *pg = ((struct pg_conn *)conn)->pg;

    (void)vctx;
    if (!t)
        return NULL;
    if (!(t->cancel = PQgetCancel(pg))) {
        mem_free(t);
        return NULL;
    }
    pg_cancel_target(pg, t->target, sizeof(t->target));
    return t;
}

static void pg_cancel_run(void *token)
{
    char buf[256];
    struct pg_cancel_token *t = token;
    PQcancel(t->cancel, buf, sizeof(buf)); /* best effort; the lease is discarded anyway */
}

static void pg_cancel_free(void *token)
{
    struct pg_cancel_token *t = token;
    PQfreeCancel(t->cancel);
    mem_free(t);
}

static const char *pg_cancel_target_cb(void *token)
{
    return ((struct pg_cancel_token *)token)->target;
}

static void pg_disconnect(void *vctx, void *conn)
{
    struct pg_conn *c = conn;

    (void)vctx;
    if (!c)
        return;
    PQfinish(c->pg);
    mem_free(c);
}

/* In a child after fork(): the socket is the parent's. Point the child's fd
 * number at /dev/null first, so that PQfinish's Terminate message (and TLS
 * close) go nowhere and its close() closes only that; the parent's session
 * is untouched. */
static void pg_abandon(void *vctx, void *conn)
{
    struct pg_conn *c = conn;

    (void)vctx;
    if (!c)
        return;
    int fd = PQsocket(c->pg);
    int null = fd >= 0 ? open("/dev/null", O_RDWR | O_CLOEXEC) : -1;
    if (null >= 0 && dup2(null, fd) >= 0) {
        close(null);
        PQfinish(c->pg);
    } else if (null >= 0) {
        close(null); /* cannot neutralise it: leak rather than touch it */
    }
    mem_free(c);
}

static void pg_ctx_free(void *vctx)
{
    struct pg_ctx *ctx = vctx;

    if (!ctx)
        return;
    mem_free(ctx->keys); /* the block */
    mem_free(ctx->after_connect);
    mem_free(ctx->reset_query);
    mem_free(ctx->name);
    mem_free(ctx);
}

static void *pg_native(void *conn)
{
    return ((struct pg_conn *)conn)->pg;
}

/* The vtable, for pools whose hosts are addresses or socket directories. */
#define PG_DRIVER_STEPS                                                                            \
    .name = "postgresql", .connect_start = pg_connect_start, .connect_poll = pg_connect_poll,      \
    .ping_start = pg_ping_start, .ping_poll = pg_ping_poll, .reset = pg_reset,                     \
    .cancel_prepare = pg_cancel_prepare, .cancel_run = pg_cancel_run,                              \
    .cancel_free = pg_cancel_free, .disconnect = pg_disconnect, .ctx_free = pg_ctx_free,           \
    .native = pg_native, .cancel_target = pg_cancel_target_cb, .abandon = pg_abandon,              \
    .alive = pg_alive

static const dbpool_driver pg_driver = {PG_DRIVER_STEPS};

/* The same, for pools whose host list holds names: they are looked up on a
 * worker thread before each connect, then passed to libpq as hostaddr. */
static const dbpool_driver pg_driver_lookup = {
    PG_DRIVER_STEPS,
    .resolve = pg_resolve_cb,
    .connect_resolved = pg_connect_resolved,
    .resolved_free = pg_resolved_free_cb,
};

static int is_pg_driver(const dbpool_driver *d)
{
    return d == &pg_driver || d == &pg_driver_lookup;
}

/* ---- public ------------------------------------------------------------- */

int dbpool_pg_open(dbpool **out, const char *conninfo, const dbpool_config *cfg)
{
    return pg_open(out, conninfo, cfg, NULL, NULL);
}

int pg_open(dbpool **out, const char *conninfo, const dbpool_config *cfg,
            const struct budget_ops *budget, void *owner)
{
    PQconninfoOption *opts;
    struct pg_ctx *ctx;
    int rc, n = 0;

    clear_error();
    if (out)
        *out = NULL;
    if (!out || !conninfo)
        return set_error(DBPOOL_EINVAL, "dbpool_pg_open: NULL argument");
    if ((rc = pg_parse_conninfo(conninfo, &opts)) != 0)
        return rc;
    size_t bytes = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val && *o->val) {
            n++;
            bytes += strlen(o->keyword) + strlen(o->val) + 2;
        }
    }
    ctx = mem_calloc(1, sizeof(*ctx));
    char *block = mem_malloc(2 * ((size_t)n + 1) * sizeof(char *) + bytes);
    if (!ctx || !block) {
        mem_free(ctx);
        mem_free(block);
        PQconninfoFree(opts);
        return set_error(DBPOOL_ENOMEM, "out of memory");
    }
    ctx->keys = (const char **)(void *)block;
    ctx->vals = ctx->keys + n + 1;
    char *str = (char *)(ctx->vals + n + 1);
    n = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        size_t kl = strlen(o->keyword) + 1, vl = strlen(o->val) + 1;
        ctx->keys[n] = memcpy(str, o->keyword, kl);
        ctx->vals[n] = memcpy(str + kl, o->val, vl);
        str += kl + vl;
        if (!strcmp(o->keyword, "password"))
            ctx->password = ctx->vals[n];
        n++;
    }
    ctx->keys[n] = ctx->vals[n] = NULL;
    PQconninfoFree(opts);
    dbpool_config defaults;
    if (!cfg) {
        dbpool_config_init(&defaults);
        cfg = &defaults;
    }
    ctx->log_cb = cfg->log_cb;
    ctx->log_arg = cfg->log_arg;
    ctx->log_level = cfg->log_level;
    if (!(ctx->name = mem_strdup(cfg->name ? cfg->name : "default")))
        goto nomem;
    if (cfg->after_connect && !(ctx->after_connect = mem_strdup(cfg->after_connect)))
        goto nomem;
    if (cfg->reset_query && *cfg->reset_query && !(ctx->reset_query = mem_strdup(cfg->reset_query)))
        goto nomem;
    /* PGHOST applies when the conninfo names no host (libpq reads it too) */
    const char *host = getenv("PGHOST"), *hostaddr = getenv("PGHOSTADDR");
    for (int i = 0; ctx->keys[i]; i++) {
        if (!strcmp(ctx->keys[i], "host"))
            host = ctx->vals[i];
        else if (!strcmp(ctx->keys[i], "hostaddr"))
            hostaddr = ctx->vals[i];
    }
    ctx->lookup = pg_needs_lookup(host, hostaddr);
    ctx->before_connect = cfg->before_connect_cb;
    ctx->hook_arg = cfg->hook_arg;
    const dbpool_driver *drv = ctx->lookup || ctx->before_connect ? &pg_driver_lookup : &pg_driver;
    if ((rc = pool_open(out, drv, ctx, cfg, budget, owner)) != 0)
        pg_ctx_free(ctx);
    return rc;
nomem:
    pg_ctx_free(ctx);
    return set_error(DBPOOL_ENOMEM, "out of memory");
}

int pg_pool_is_pg(const struct dbpool *p)
{
    return is_pg_driver(p->drv);
}

PGconn *dbpool_pg_conn(const dbpool_lease *lease)
{
    PGconn *pg = dbpool_lease_conn(lease);

    if (pg && !is_pg_driver(lease->slot->pool->drv)) {
        set_error(DBPOOL_EINVAL, "lease is not from a PostgreSQL pool");
        return NULL;
    }
    return pg;
}
