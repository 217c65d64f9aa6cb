/*
 * dbpool.h - a database connection pool for C servers (driver-agnostic core).
 *
 * A pool owns `size` connections to one database. A caller thread checks a
 * connection out, uses it exclusively, and checks it back in. Everything else
 * (connecting, pinging idle connections, reconnect backoff, recycling, hold
 * timeouts) happens on one process-wide manager thread that never blocks on
 * the network.
 *
 *     dbpool_config cfg;
 *     dbpool_config_init(&cfg);
 *     cfg.size = 8;
 *     dbpool *pool;
 *     if (dbpool_pg_open(&pool, "host=/tmp dbname=app", &cfg) != 0)
 *         fprintf(stderr, "%s\n", dbpool_last_error());
 *     dbpool_lease lease;
 *     if (dbpool_checkout(pool, DBPOOL_DEFAULT_TIMEOUT, &lease) == 0) {
 *         PGresult *r = PQexec(dbpool_pg_conn(&lease), "SELECT 1");
 *         PQclear(r);
 *         dbpool_checkin(&lease);
 *     }
 *     dbpool_close(pool);
 *
 * Conventions
 *   - Every function returns 0 on success or a negative DBPOOL_E* code.
 *     dbpool_strerror(code) names the code; dbpool_last_error() gives the
 *     detailed message of the calling thread's last failure.
 *   - Durations are milliseconds (int64_t), measured on CLOCK_MONOTONIC.
 *   - All functions are thread-safe unless said otherwise.
 *   - Passwords never appear in any message the library produces.
 *   - The library never calls exit()/abort() and never writes to stdout.
 */
#ifndef DBPOOL_H
#define DBPOOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The version, in one place: these three numbers. CMake reads them from here
 * (project version, library file name, pkg-config and CMake package files,
 * `make dist`), and everything else is derived from them. docs/versioning.md
 * says what a change of each number (and of the SONAME) means.
 */
#define DBPOOL_VERSION_MAJOR 0
#define DBPOOL_VERSION_MINOR 1
#define DBPOOL_VERSION_PATCH 0

#define DBPOOL_STRINGIFY_(x) #x
#define DBPOOL_XSTRINGIFY_(x) DBPOOL_STRINGIFY_(x)
/* "MAJOR.MINOR.PATCH" of the headers the application is compiled with. */
#define DBPOOL_VERSION_STRING                                                                      \
    DBPOOL_XSTRINGIFY_(DBPOOL_VERSION_MAJOR)                                                       \
    "." DBPOOL_XSTRINGIFY_(DBPOOL_VERSION_MINOR) "." DBPOOL_XSTRINGIFY_(DBPOOL_VERSION_PATCH)
/* One number for #if comparisons: 0.1.0 is 100, 1.2.3 is 10203. */
#define DBPOOL_VERSION_NUM                                                                         \
    (DBPOOL_VERSION_MAJOR * 10000 + DBPOOL_VERSION_MINOR * 100 + DBPOOL_VERSION_PATCH)

#if defined(DBPOOL_BUILDING) && defined(__GNUC__)
#define DBPOOL_API __attribute__((visibility("default")))
#else
#define DBPOOL_API
#endif

#if defined(__GNUC__)
#define DBPOOL_MUSTCHECK __attribute__((warn_unused_result))
#else
#define DBPOOL_MUSTCHECK
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

enum {
    DBPOOL_OK = 0,
    DBPOOL_EINVAL = -1,           /* bad argument or option value */
    DBPOOL_ENOMEM = -2,           /* allocation failed */
    DBPOOL_ETIMEDOUT = -3,        /* checkout deadline reached while in queue, or a
                                     statement timeout that provably stopped the
                                     statement (PostgreSQL layer) */
    DBPOOL_EDROPPED = -4,         /* dropped from the queue by the CoDel rule */
    DBPOOL_EBUSY = -5,            /* queue=false (or timeout 0) and nothing idle */
    DBPOOL_ESTALE = -6,           /* lease used after check-in (or double check-in) */
    DBPOOL_ECLOSED = -7,          /* the pool is closed / closing */
    DBPOOL_EUNAVAILABLE = -8,     /* pool is STOPPED or DOWN: fails fast */
    DBPOOL_ECONNECT = -9,         /* reserved: connect errors surface as EUNAVAILABLE */
    DBPOOL_EEXPIRED = -10,        /* lease outlived hold_timeout; connection discarded */
    DBPOOL_ESYSTEM = -11,         /* an OS call failed (errno text in detail) */
    DBPOOL_EQUERY = -12,          /* SQL error; connection kept (PostgreSQL layer) */
    DBPOOL_ECONNLOST = -13,       /* connection lost during an operation */
    DBPOOL_ECOMMIT_UNKNOWN = -14, /* connection lost during COMMIT: outcome unknown */
    DBPOOL_EUNKNOWN = -15,        /* a statement was sent but whether it ran is unknown
                                     (statement timeout without the server's
                                     answer; PostgreSQL layer) */
    DBPOOL_EFORKED = -16,         /* the pool was opened in the parent before fork():
                                     unusable in the child (see docs/fork.md) */
    DBPOOL_ENOOWNER = -17,        /* sandbox mode: no owner for the calling thread
                                     (dbpool_sandbox.h) */
    DBPOOL_ETXENDED = -18,        /* sandbox mode: the code under test ended the
                                     sandbox's transaction (raw COMMIT/ROLLBACK) */
    DBPOOL_EQUEUEFULL = -19,      /* max_waiting callers already wait: not queued */
    DBPOOL_ESKIPPED = -20         /* pipeline: not executed; the server skipped it after an
                                     earlier statement of the same sync failed */
};

/*
 * The version of the library that is running, "MAJOR.MINOR.PATCH": with a
 * shared library it can differ from DBPOOL_VERSION_STRING, which is the
 * version of the headers the caller was compiled with. A static string.
 * Thread-safe.
 */
DBPOOL_API const char *dbpool_version(void);

/* A sentence describing an error code ("database unavailable"). Never NULL;
 * "unknown error" for a value that is not a code. Static storage. */
DBPOOL_API const char *dbpool_strerror(int code);

/* The constant's name of an error code ("DBPOOL_EUNAVAILABLE", "DBPOOL_OK"),
 * for logs and metrics labels. Never NULL; "unknown" for a value that is not
 * a code. Static storage. */
DBPOOL_API const char *dbpool_errname(int code);

/* Detailed message of the calling thread's last failed dbpool call ("" if none).
 * Valid until the next dbpool call on this thread. Thread-local. */
DBPOOL_API const char *dbpool_last_error(void);

/*
 * Allocator used for everything the library allocates itself (libpq's own
 * allocations are not covered). Set it once, before the first pool is opened:
 * returns DBPOOL_EBUSY while any pool is open (and, after the last close,
 * while a worker thread is still running a closed pool's cancel request),
 * DBPOOL_EINVAL if a function is missing. NULL restores malloc/calloc/free.
 * Not thread-safe against concurrent dbpool_open().
 */
typedef struct dbpool_allocator {
    void *(*malloc)(size_t size);
    void *(*calloc)(size_t n, size_t size);
    void (*free)(void *ptr);
} dbpool_allocator;

DBPOOL_API int dbpool_set_allocator(const dbpool_allocator *allocator);

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */
/* ------------------------------------------------------------------------ */

typedef enum {
    DBPOOL_BACKOFF_RAND_EXP = 0, /* default: decorrelated exponential with jitter */
    DBPOOL_BACKOFF_EXP,          /* min, 2*min, 4*min, ... capped at max */
    DBPOOL_BACKOFF_RAND,         /* uniform in [min, max] */
    DBPOOL_BACKOFF_STOP          /* no retry: slot stops; see dbpool_restart() */
} dbpool_backoff_type;

typedef enum {
    DBPOOL_LOG_DEBUG = 0,
    DBPOOL_LOG_INFO,
    DBPOOL_LOG_WARNING,
    DBPOOL_LOG_ERROR,
    DBPOOL_LOG_NONE
} dbpool_log_level;

/* Log sink. Called from any thread (mostly the manager thread), possibly with
 * pool locks held: it must be quick and must not call back into the pool.
 * `msg` has no trailing newline and never contains a password. */
typedef void (*dbpool_log_cb)(void *arg, dbpool_log_level level, const char *pool_name,
                              const char *msg);

typedef enum {
    DBPOOL_EV_CONNECTED = 0,  /* a connection joined the pool */
    DBPOOL_EV_DISCONNECTED,   /* a connection was closed; detail = reason */
    DBPOOL_EV_CONNECT_FAILED, /* detail = error (password-free) */
    DBPOOL_EV_UP,             /* pool state became UP */
    DBPOOL_EV_DOWN,           /* pool state became DOWN (or STOPPED); detail = last error */
    DBPOOL_EV_DROPPED,        /* a waiter was dropped by the queue; ms = its wait */
    DBPOOL_EV_HOLD_TIMEOUT,   /* a lease outlived hold_timeout; ms = held so far */
    DBPOOL_EV_LEAK_SUSPECTED  /* a lease outlived leak_threshold; detail = where */
} dbpool_event_type;

typedef struct dbpool_event {
    dbpool_event_type type;
    const char *pool_name;
    const char *detail; /* "" if none; valid during the callback only */
    int64_t ms;         /* a duration, where the type says so */
    int64_t at_ms;      /* monotonic time it happened */
} dbpool_event;

/*
 * Event sink. Always called on the manager thread, never with a pool lock
 * held, in the order events happened (a burst of more than 256 pending events
 * per pool is cut short: at most 128 wait). It must not block and must not check out, close or
 * wait on the pool; reading dbpool_stats_get() is fine.
 */
typedef void (*dbpool_event_cb)(void *arg, const dbpool_event *ev);

/*
 * Hooks: user code run around a connection's life, for what SQL alone cannot
 * do (credentials that expire, client-side setup of a PGconn). They may
 * block: the first two run on worker threads (jobs of the pool's own, so a
 * slow hook delays neither the manager thread nor another pool), checkin_cb
 * on the thread checking in. They must not call back into the same pool
 * (no checkout, close, resize; dbpool_stats_get is fine).
 */

/* Credentials for the next connects, filled by a before_connect_cb. An empty
 * field keeps what the connection string says. */
typedef struct dbpool_credentials {
    char user[128];
    char password[4096]; /* e.g. a cloud IAM token or a Vault lease's password */
    char err[256];       /* why, when the callback fails */
} dbpool_credentials;

/* Before a round of connects (PostgreSQL pools; one call serves the connects
 * that start together, the next round calls it again): fill cred (zeroed on
 * entry) and return 0, or return nonzero to fail these connects (with
 * cred->err; they back off as failed connects do). Worker thread. The
 * password never appears in the library's messages. */
typedef int (*dbpool_before_connect_cb)(void *arg, dbpool_credentials *cred);

/* After a connection is established (and after_connect SQL ran), before it
 * joins the pool: conn is the driver's handle (PGconn * for PostgreSQL),
 * blocking mode, yours until you return. Return 0, or nonzero (message in
 * err) to fail the connect. Worker thread; connect_timeout does not cover
 * it (a C function cannot be interrupted): bound your own waits. */
typedef int (*dbpool_after_connect_cb)(void *arg, void *conn, char *err, size_t errlen);

/* At check-in of a connection the pool keeps, after its reset (ROLLBACK,
 * reset_query): conn is clean and still the caller's. Return 0 to keep it,
 * nonzero to discard it. Runs on the checking-in thread, like the reset. */
typedef int (*dbpool_checkin_cb)(void *arg, void *conn);

/*
 * Tracing: one callback for the moments a tracer (OpenTelemetry) wants,
 * called on the caller's thread without any pool lock, only when set (an
 * unset callback costs one NULL test). A *_START call returns a pointer of
 * yours (a span), handed back in the matching *_END as `span`.
 * OpenTelemetry's database conventions: pool_name is
 * db.client.connection.pool.name; CHECKOUT_END's duration is
 * db.client.connection.wait_time (rc DBPOOL_ETIMEDOUT counts as
 * db.client.connection.timeouts), CHECKIN's is db.client.connection.use_time;
 * QUERY_END's is db.client.operation.duration, statement is db.query.text,
 * sqlstate db.response.status_code, dbpool_errname(rc) error.type.
 */
typedef enum {
    DBPOOL_TRACE_CHECKOUT_START = 0, /* dbpool_checkout() called */
    DBPOOL_TRACE_CHECKOUT_END,       /* it returns: rc, duration = the wait */
    DBPOOL_TRACE_CHECKIN,            /* a lease came back: rc as dbpool_checkin's,
                                        duration = how long it was held */
    DBPOOL_TRACE_QUERY_START,        /* a query helper sends a statement */
    DBPOOL_TRACE_QUERY_END           /* ... and has its outcome: rc, sqlstate */
} dbpool_trace_type;

typedef struct dbpool_trace {
    dbpool_trace_type type;
    const char *pool_name;
    int rc;                /* *_END, CHECKIN: 0 or a DBPOOL_E* code */
    int64_t at_us;         /* monotonic time of the event (CLOCK_MONOTONIC, us,
                              within a few us: docs/pool.md "Tracing") */
    int64_t duration_us;   /* *_END, CHECKIN; else 0 */
    const char *statement; /* QUERY_*: the SQL as given (it may hold literals); else NULL */
    const char *sqlstate;  /* QUERY_END: the server's SQLSTATE, "" if none; else NULL */
    void *span;            /* *_END: what the *_START call returned; else NULL */
} dbpool_trace;

/* All pointers are valid during the call only. Must not block for long nor
 * call into the same pool. The return value matters for *_START only. */
typedef void *(*dbpool_trace_cb)(void *arg, const dbpool_trace *t);

/*
 * Pool options. Fill with dbpool_config_init(), then set fields directly or by
 * name with dbpool_config_set()/dbpool_config_parse(). Strings are copied by
 * dbpool_open(); the config may be reused or freed afterwards.
 */
typedef struct dbpool_config {
    const char *name;                 /* "default"    pool name used in logs                 */
    int size;                         /* 10           connections (1..10000)                 */
    int min_size;                     /* -1 (= size)  connections kept open even when unused;
                                                         the rest open on demand             */
    int64_t idle_timeout;             /* 0 (never)    close a connection idle this long while
                                                         more than min_size are open         */
    int queue;                        /* 1            0: checkout fails with EBUSY at once
                                                         when no connection is idle          */
    int lifo;                         /* 0            1: hand out the most recently checked-in
                                                         connection first (PgBouncer friendly) */
    int64_t barge_window;             /* 2 ms         while the oldest waiter has waited less
                                                         than this, a returned connection may
                                                         go to a caller that comes for it
                                                         (often the one that returned it)
                                                         instead of waking the waiter; after
                                                         it, hand-over is strict FIFO. The
                                                         same bound lets a connection checked
                                                         in on an event loop's thread go to
                                                         that loop's own async request before
                                                         another loop's (dbpool_async.h). 0 =
                                                         always strict FIFO                  */
    int64_t queue_target;             /* 50 ms        CoDel target wait                      */
    int64_t queue_interval;           /* 2000 ms      CoDel interval (DBConnection's since 2.8) */
    int64_t checkout_timeout;         /* 15000 ms     default deadline of a checkout         */
    int64_t idle_interval;            /* 1000 ms      idle ping tick                         */
    int idle_limit;                   /* 0 (= size)   max pings per tick                     */
    int64_t ping_timeout;             /* 5000 ms      a ping not answered by then fails      */
    int64_t connect_timeout;          /* 10000 ms     a connect not done by then fails       */
    dbpool_backoff_type backoff_type; /* rand_exp                                     */
    int64_t backoff_min;              /* -1 (auto)    1000 ms, or min(1000, backoff_max) when
                                                         only backoff_max is set             */
    int64_t backoff_max;              /* 30000 ms                                            */
    int64_t probe_interval;           /* 100 ms       while the pool is down, ONE probe connect
                                                         this often instead of every slot's
                                                         backoff; 0 = off (per-slot backoff) */
    int64_t max_lifetime;             /* 1800000 ms   recycle a connection after this long
                                                         (minus up to 10% per-connection
                                                         jitter); 0 = never                  */
    int64_t hold_timeout;             /* 15000 ms     cancel + discard a lease held longer;
                                                         0 = off                             */
    int64_t reset_timeout;            /* 5000 ms      time allowed for check-in's ROLLBACK
                                                         and reset_query                     */
    const char *after_connect;        /* NULL         SQL run on every new connection before
                                                         it joins the pool                   */
    dbpool_log_cb log_cb;             /* NULL         NULL = stderr                           */
    void *log_arg;                    /* NULL                                                */
    dbpool_log_level log_level;       /* WARNING      least severe level passed to log_cb    */
    dbpool_event_cb event_cb;         /* NULL         see dbpool_event_cb                    */
    void *event_arg;                  /* NULL                                                */
    int64_t leak_threshold;           /* 0 (off)      report a lease held longer, once       */
    int64_t alive_check;              /* 500          before handing out a connection idle
                                                         this long, check it without a round
                                                         trip (the server may have closed it:
                                                         idle_session_timeout, a restart) and
                                                         replace a dead one; 0 = never      */
    int max_waiting;                  /* 0 (unlimited) callers allowed to wait in the queue; a
                                                         checkout that would be one more
                                                         fails at once with
                                                         DBPOOL_EQUEUEFULL                   */
    const char *reset_query;          /* NULL         PostgreSQL: SQL run at every check-in
                                                         (after any ROLLBACK) within
                                                         reset_timeout, e.g. "DISCARD ALL";
                                                         a failure discards the connection.
                                                         after_connect runs again after it  */
    int max_uses;                     /* 0 (unlimited) close a connection after this many
                                                         leases (at its check-in)            */
    dbpool_before_connect_cb before_connect_cb; /* NULL  see the hooks above           */
    dbpool_after_connect_cb after_connect_cb;   /* NULL                                */
    dbpool_checkin_cb checkin_cb;               /* NULL                                */
    void *hook_arg;                             /* NULL  passed to the three hooks     */
    dbpool_trace_cb trace_cb;                   /* NULL  see dbpool_trace_cb           */
    void *trace_arg;                            /* NULL                                */
} dbpool_config;

/* Fill `cfg` with the defaults above. */
DBPOOL_API void dbpool_config_init(dbpool_config *cfg);

/*
 * Set one option by name from a string: "size"="8", "queue_target"="50ms",
 * "lifo"="true", "backoff_type"="exp". Durations take ms, s, m or h (bare
 * numbers are ms). Returns 0 or DBPOOL_EINVAL (unknown name, bad value, out
 * of range; detail in dbpool_last_error()). String values are not copied:
 * they must live until dbpool_open().
 */
DBPOOL_API int dbpool_config_set(dbpool_config *cfg, const char *name, const char *value);

/*
 * Set several options from "name=value name=value ..." (separated by spaces
 * or commas). Stops at the first error and returns DBPOOL_EINVAL. String
 * values (name, after_connect) cannot be set this way.
 */
DBPOOL_API int dbpool_config_parse(dbpool_config *cfg, const char *options);

/* ------------------------------------------------------------------------ */
/* Drivers                                                                   */
/* ------------------------------------------------------------------------ */

/* Result of a non-blocking driver step. */
enum {
    DBPOOL_IO_DONE = 0,    /* finished successfully */
    DBPOOL_IO_READ = 1,    /* call again when the fd is readable */
    DBPOOL_IO_WRITE = 2,   /* call again when the fd is writable */
    DBPOOL_IO_FAIL = -1,   /* failed; message in err */
    DBPOOL_IO_NOT_YET = -2, /* connect refused for now, server coming back (57P03):
                               retried with backoff but the pool is not DOWN */
    DBPOOL_IO_FULL = -3     /* connect refused, the server is at its connection
                               limit (53300): retried with backoff, the pool is
                               not DOWN, and a registry lowers its cap */
};

/*
 * A driver adapts a client library to the pool. The pool core knows nothing
 * about any database. dbpool_pg_open() uses the built-in libpq driver; you
 * only need this to plug in another client. All step functions are called on
 * the manager thread and must not block; `reset` is called on the thread that
 * checks the connection in and may block up to its timeout; `cancel` runs on a
 * worker thread and may block; `resolve` runs on a worker thread. Error text goes into err[errlen]
 * and must not contain passwords.
 */
typedef struct dbpool_driver {
    const char *name;
    /* Start connecting. Sets *conn (driver handle) and *fd. */
    int (*connect_start)(void *ctx, void **conn, int *fd, char *err, size_t errlen);
    /* Continue connecting (including any after-connect step). Updates *fd. */
    int (*connect_poll)(void *ctx, void *conn, int *fd, char *err, size_t errlen);
    /* Start / continue a liveness check on an idle connection. */
    int (*ping_start)(void *ctx, void *conn, int *fd, char *err, size_t errlen);
    int (*ping_poll)(void *ctx, void *conn, int *fd, char *err, size_t errlen);
    /* At check-in: make the connection reusable (e.g. roll back an open
     * transaction, run a reset query) within timeout_ms. 0 = keep, 1 = kept
     * after a rollback (counted in rollbacks), negative = discard. */
    int (*reset)(void *ctx, void *conn, int64_t timeout_ms, char *err, size_t errlen);
    /* Prepare a cancel token while the connection is owned by the pool
     * (after connect). May return NULL if cancel is not supported. */
    void *(*cancel_prepare)(void *ctx, void *conn);
    /* Cancel whatever the connection is running. May block; runs on a worker
     * thread with every signal blocked. */
    void (*cancel_run)(void *token);
    void (*cancel_free)(void *token);
    /* Close and free the connection. Must not block for long. */
    void (*disconnect)(void *ctx, void *conn);
    /* Free ctx at pool close (may be NULL). */
    void (*ctx_free)(void *ctx);
    /* The handle callers use (dbpool_lease_conn); NULL = the conn itself. */
    void *(*native)(void *conn);

    /* Optional: the work a connect needs that may block, such as looking up
     * host names. Called on a worker thread, never on the manager thread;
     * returns an object for connect_resolved, or NULL with a message in err.
     * The pool runs one lookup at a time and shares its result among the
     * connects waiting for it; the next connect after that looks up again.
     * When set, connect_resolved replaces connect_start. */
    void *(*resolve)(void *ctx, char *err, size_t errlen);
    int (*connect_resolved)(void *ctx, void *resolved, void **conn, int *fd, char *err,
                            size_t errlen);
    void (*resolved_free)(void *resolved);
    /* Optional: a short name of the server a cancel token talks to (e.g.
     * "host:port"); cancels to one server run one at a time, and a stuck one
     * never delays cancels to another server. Must not block. */
    const char *(*cancel_target)(void *token);
    /* Optional: is this idle connection still usable, judged without a round
     * trip (e.g. a non-blocking read finds EOF or a pending FATAL)? 1 or 0.
     * Called on the checking-out thread, which owns the connection; must not
     * block. */
    int (*alive)(void *ctx, void *conn);
    /* Optional: free a connection inherited across fork() without any I/O on
     * it (its socket belongs to the parent). Without it such connections are
     * leaked rather than closed. */
    void (*abandon)(void *ctx, void *conn);
} dbpool_driver;

/* ------------------------------------------------------------------------ */
/* Pool                                                                      */
/* ------------------------------------------------------------------------ */

typedef struct dbpool dbpool;
struct dbpool_slot;

/*
 * A lease: proof that the caller holds one connection. Returned by
 * dbpool_checkout() by value; the caller keeps it until dbpool_checkin().
 * After check-in (or a copy of a checked-in lease) every use returns
 * DBPOOL_ESTALE and never touches a connection another caller now holds.
 */
typedef struct dbpool_lease {
    struct dbpool_slot *slot;
    uint64_t gen;
} dbpool_lease;

/*
 * Open a pool on `driver` (ctx is passed to every driver call and freed with
 * driver->ctx_free at close). Connections are opened in the background by the
 * manager thread; dbpool_open() does not wait for them. `cfg` may be NULL for
 * the defaults. On success *out is the pool; on error *out is NULL.
 * Returns 0, DBPOOL_EINVAL, DBPOOL_ENOMEM or DBPOOL_ESYSTEM.
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_open(dbpool **out, const dbpool_driver *driver, void *ctx,
                                            const dbpool_config *cfg);

/* Pass as timeout_ms to use the pool's checkout_timeout. */
#define DBPOOL_DEFAULT_TIMEOUT (-1)

/* A timeout that never expires, for the options that say they take it (the
 * query helpers' statement_timeout and cancel_grace, dbpool_pg.h). Deadlines
 * computed from it saturate instead of overflowing. */
#define DBPOOL_NO_LIMIT INT64_MAX

/*
 * Check a connection out. Waits at most timeout_ms (DBPOOL_DEFAULT_TIMEOUT =
 * the pool's checkout_timeout; 0 = do not wait). On a pool in sandbox mode
 * the lease is on the caller's owner's connection (dbpool_sandbox.h). Waiters are served strictly
 * in arrival order, each handed a connection directly by the thread that
 * checks one in.
 * Returns 0 and fills *lease, or:
 *   DBPOOL_ETIMEDOUT    deadline reached while in queue
 *   DBPOOL_EDROPPED     dropped by the queue's overload rule (see docs)
 *   DBPOOL_EBUSY        queue=false (or timeout 0) and no connection idle
 *   DBPOOL_EQUEUEFULL   max_waiting callers already wait: fails at once
 *   DBPOOL_EUNAVAILABLE the pool is DOWN (the database is unreachable: fails at
 *                       once with the cached reason) or STOPPED (backoff stop)
 *   DBPOOL_ECLOSED      the pool is closing
 *   DBPOOL_EINVAL       NULL argument or negative timeout other than -1
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_checkout(dbpool *pool, int64_t timeout_ms,
                                                dbpool_lease *lease);

/*
 * Give the connection back. If the connection is inside a transaction it is
 * rolled back (driver reset, bounded by reset_timeout); if that fails, or the
 * connection is broken, expired (hold_timeout) or due for recycling, it is
 * closed and the manager opens a replacement. The lease is stale afterwards.
 * Returns 0; DBPOOL_EEXPIRED if hold_timeout had expired the lease (the
 * connection is discarded, the check-in still completes); DBPOOL_ESTALE for a
 * lease already checked in (nothing happens); DBPOOL_EINVAL for NULL.
 */
DBPOOL_API int dbpool_checkin(dbpool_lease *lease);

/*
 * Check the connection in and close it (use when you know it is unusable, or
 * you changed session state you do not want the next caller to see).
 * The manager opens a replacement. Returns as dbpool_checkin().
 */
DBPOOL_API int dbpool_discard(dbpool_lease *lease);

/* The driver's connection handle for a live lease (for PostgreSQL a PGconn *;
 * see dbpool_pg_conn()), or NULL if the lease is stale. */
DBPOOL_API void *dbpool_lease_conn(const dbpool_lease *lease);

/* 0 if the lease is live; DBPOOL_ESTALE after check-in; DBPOOL_EEXPIRED after
 * hold_timeout fired (the connection is being cancelled: check it in);
 * DBPOOL_EINVAL for NULL or a lease that was never checked out. */
DBPOOL_API int dbpool_lease_check(const dbpool_lease *lease);

/*
 * Close the pool. Never blocks on the network and never frees a connection a
 * caller holds:
 *   - callers waiting in dbpool_checkout get DBPOOL_ECLOSED (close waits
 *     until they have left); pending async requests (dbpool_async.h) are
 *     completed with DBPOOL_ECLOSED, their callbacks run from the
 *     application's dbpool_cq_run(), and the memory stays until they have;
 *   - idle and connecting connections are closed now;
 *   - leases still out stay usable; each connection is closed at its check-in,
 *     and the last check-in releases the pool's memory.
 * Returns 0, or DBPOOL_EBUSY when leases were still out (the pool is closed
 * all the same; this only tells you memory is released later). NULL is a
 * no-op returning 0. Must not be called from a log/event callback.
 *
 * The handle dies with this call, like a mutex with pthread_mutex_destroy:
 * the application must not call anything on the pool after, or concurrently
 * with, dbpool_close(), except checking in (or using) the leases still out,
 * which is always safe. A checkout that is already waiting when the close
 * begins is safe (it returns DBPOOL_ECLOSED); one that starts while or after
 * the pool is closed is undefined (the memory may be gone). While leases are
 * out the memory stays, so such a late call happens to get DBPOOL_ECLOSED,
 * but do not rely on it.
 */
DBPOOL_API int dbpool_close(dbpool *pool);

/*
 * Recycle every connection: each is closed and replaced at its next check-in
 * or within about one idle_interval if idle (spread with jitter so they do not
 * reconnect all at once). Returns 0, DBPOOL_EINVAL or DBPOOL_ECLOSED.
 */
DBPOOL_API int dbpool_reconnect(dbpool *pool);

/* Leave the STOPPED state (backoff_type stop): every stopped slot connects
 * again. Returns 0 or DBPOOL_EINVAL / DBPOOL_ECLOSED. */
DBPOOL_API int dbpool_restart(dbpool *pool);

/*
 * Maintenance mode. dbpool_pause(): stop handing out connections; callers
 * queue and keep waiting until their own deadline (no CoDel drops, no fail
 * fast while paused); connections stay open (idle ones are pinged only while
 * nobody waits); state PAUSED.
 * dbpool_resume(): serve the queue again. Both return 0, DBPOOL_EINVAL or
 * DBPOOL_ECLOSED; pausing twice is harmless.
 */
DBPOOL_API int dbpool_pause(dbpool *pool);
DBPOOL_API int dbpool_resume(dbpool *pool);

/*
 * Wait until at least n connections are open (connected: idle, checked out
 * or being pinged), opening dormant ones if n is above min_size. n = 0 means
 * min_size (with min_size 0 that returns at once). Like psycopg_pool's
 * wait(); fails at once, as a checkout does, when connecting fails (HikariCP's
 * default initializationFailTimeout): call it after dbpool_open() to refuse to
 * start against a database that is not there.
 * Waits at most timeout_ms (0 = check only; DBPOOL_NO_LIMIT = no limit).
 * Returns 0, or:
 *   DBPOOL_EUNAVAILABLE the pool is DOWN (the latest connects failed) or
 *                       STOPPED; dbpool_last_error() has the connect error
 *   DBPOOL_ETIMEDOUT    fewer than n open at the deadline (the message says
 *                       how many, and the last connect error if any)
 *   DBPOOL_ECLOSED      the pool is closing (also when closed while waiting)
 *   DBPOOL_EINVAL       NULL pool, n < 0 or above size, negative timeout
 * Thread-safe; any number of threads may wait.
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_wait_ready(dbpool *pool, int n, int64_t timeout_ms);

/*
 * Change size and min_size of an open pool (the same ranges as the options;
 * min_size -1 = size). Growing adds dormant slots and opens connections up
 * to min_size at once; shrinking closes idle connections (and forgets slots
 * that are not connected) now, and closes connections still checked out at
 * their check-in (they are never taken from their holder). A min_size
 * lowered without shrinking closes nothing by itself: idle_timeout does.
 * An idle_limit left at 0 follows the new size. Returns 0, DBPOOL_EINVAL
 * (out of range; the pool is unchanged), DBPOOL_ENOMEM, DBPOOL_ECLOSED.
 * Thread-safe.
 */
DBPOOL_API int dbpool_resize(dbpool *pool, int size, int min_size);

/* ------------------------------------------------------------------------ */
/* State and counters                                                        */
/* ------------------------------------------------------------------------ */

typedef enum {
    DBPOOL_STATE_STARTING = 0, /* no connection has succeeded yet */
    DBPOOL_STATE_UP,           /* at least one connection is usable */
    DBPOOL_STATE_DOWN,         /* nothing connected and the latest connects failed */
    DBPOOL_STATE_PAUSED,
    DBPOOL_STATE_STOPPED, /* backoff_type stop and no slot usable */
    DBPOOL_STATE_CLOSED
} dbpool_state;

/* Name of a state ("up", "down", ...). */
DBPOOL_API const char *dbpool_state_name(dbpool_state state);

/* Latency summary in microseconds. Quantiles come from log-scale buckets
 * (edges ~1.41x apart): read them as "at most", within ~41%. */
typedef struct dbpool_histogram {
    uint64_t count;
    int64_t sum_us, p50_us, p90_us, p99_us, max_us;
} dbpool_histogram;

typedef struct dbpool_stats {
    dbpool_state state;
    int size;       /* configured size */
    int idle;       /* connected, in the pool */
    int busy;       /* checked out */
    int connecting; /* connecting or running after_connect */
    int dormant;    /* not opened (above min_size and not needed) */
    int pinging;
    int backoff; /* waiting to reconnect */
    int stopped; /* stopped (backoff_type stop) */
    int waiting; /* callers in the queue */
    uint64_t checkouts, drops, timeouts, connects, connect_failures, disconnects, pings,
        ping_failures, hold_timeouts, rollbacks;
    dbpool_histogram queue_time;   /* checkout: time from the call to the lease */
    dbpool_histogram hold_time;    /* checkout to check-in */
    int64_t state_since_ms;        /* monotonic ms of the last state change */
    char last_error[256];          /* last connect error, password-free ("" if none) */
    int min_size;                  /* configured min_size (resolved: -1 gives size) */
    int64_t oldest_wait_ms;        /* how long the oldest caller in the queue has
                                      waited so far (PgBouncer's maxwait); 0 if none */
    dbpool_histogram connect_time; /* successful connects: start to ready */
} dbpool_stats;

/* Snapshot of the pool's state and counters. Returns 0 or DBPOOL_EINVAL. */
DBPOOL_API int dbpool_stats_get(dbpool *pool, dbpool_stats *out);

/* The pool's name (cfg.name), owned by the pool. Never NULL for a valid pool. */
DBPOOL_API const char *dbpool_pool_name(const dbpool *pool);

/*
 * Render the stats of npools pools in the Prometheus text exposition format
 * (one label pool="name" per series; latencies as histograms with the same
 * buckets in every process, so they aggregate; docs/metrics.md) into buf.
 * *needed (if not NULL) gets the size required including the NUL. Returns 0;
 * DBPOOL_ENOMEM if buflen is too small (buf holds a truncated, NUL-terminated
 * prefix); DBPOOL_EINVAL.
 */
DBPOOL_API int dbpool_stats_prometheus(dbpool *const *pools, size_t npools, char *buf,
                                       size_t buflen, size_t *needed);

/* Timings of one checkout, like Ecto's "queue=.. idle=..". */
typedef struct dbpool_lease_info {
    int64_t queue_us;       /* time spent in dbpool_checkout() */
    int64_t idle_ms;        /* how long the connection sat idle before this checkout */
    int64_t checkout_at_ms; /* monotonic ms of the checkout */
} dbpool_lease_info;

/* Timings of a live lease. Returns 0, DBPOOL_ESTALE (checked in) or
 * DBPOOL_EINVAL (NULL, or a lease that was never checked out). */
DBPOOL_API int dbpool_lease_info_get(const dbpool_lease *lease, dbpool_lease_info *out);

#ifdef __cplusplus
}
#endif
#endif /* DBPOOL_H */
