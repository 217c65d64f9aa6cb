/* pgserver.h - test harness: a throwaway PostgreSQL server in a temp dir.
 *
 * Runs initdb/pg_ctl from /usr/lib/postgresql/<ver>/bin (or PG_BINDIR) as an
 * unprivileged user (the `postgres` user when we are root), on 127.0.0.1 and a
 * free port, with a unix socket in the temp dir. Trust auth for the superuser
 * `postgres`; password (scram) auth for role `app` / password `app_secret_pw`.
 * Every call is bounded in time; failures print a reason to stderr and return -1.
 */
#ifndef DBPOOL_TEST_PGSERVER_H
#define DBPOOL_TEST_PGSERVER_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdint.h>

typedef struct pgt_server {
    char dir[256];       /* temp dir: data/ , socket, log */
    int port;
    int running;
    char conninfo[512];  /* "host=127.0.0.1 port=N user=postgres dbname=postgres" */
} pgt_server;

/* initdb (from a cached template when possible) + start. max_connections=100. */
int pgt_start(pgt_server *s);
/* Like pgt_start but with extra postgresql.conf lines (e.g. "max_connections = 20"). */
int pgt_start_conf(pgt_server *s, const char *extra_conf);
/* Stop: mode "fast" or "immediate". Waits until stopped. */
int pgt_stop(pgt_server *s, const char *mode);
/* Start again after pgt_stop (same dir, same port). Waits until it accepts connections. */
int pgt_resume(pgt_server *s);
/* Stop (immediate) and remove the temp dir. Safe to call twice. */
void pgt_destroy(pgt_server *s);

/* Run SQL on a fresh superuser connection; returns 0 if the command succeeded. */
int pgt_exec(const pgt_server *s, const char *sql);
/* Run a query returning one integer in row 0 col 0; -1 on any failure. */
int64_t pgt_query_int(const pgt_server *s, const char *sql);
/* Terminate every backend whose application_name = appname (NULL: all client
 * backends but the harness's own sessions); returns how many were terminated,
 * -1 on failure. */
int pgt_terminate(const pgt_server *s, const char *appname);
/* Wait (up to timeout_ms) until a session of appname is running a query
 * that starts with "SELECT pg_sleep", then pgt_terminate(s, appname): a
 * connection lost mid-statement. */
int pgt_terminate_when_sleeping(const pgt_server *s, const char *appname, int64_t timeout_ms);
/* Number of client backends with this application_name (NULL: all but the
 * harness's own sessions). */
int pgt_count_backends(const pgt_server *s, const char *appname);

/* monotonic clock in ms, for bounded waits in tests */
int64_t pgt_now_ms(void);
/* Join thread t within timeout_ms (pthread_timedjoin_np). 0 when joined,
 * else the error (ETIMEDOUT): the test should then fail rather than hang. */
int pgt_join(pthread_t t, int64_t timeout_ms);

/* Poll cond(arg) every 10 ms until it returns nonzero or timeout_ms passes.
 * Returns 1 if the condition became true, 0 on timeout. */
int pgt_wait_for(int (*cond)(void *arg), void *arg, int64_t timeout_ms);

#endif
