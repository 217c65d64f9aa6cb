/* pgbouncer.h - test harness: a throwaway PgBouncer in front of a pgt_server.
 *
 * Runs /usr/sbin/pgbouncer (or $PGBOUNCER) in the foreground as our child, as
 * the `postgres` user when we are root (PgBouncer refuses to run as root; we
 * use setpriv, which execs in place, so the child's pid is PgBouncer's own).
 * It listens on 127.0.0.1 and a free port (no unix socket), trust auth for
 * every user listed in its auth_file ("postgres" and "app"), and serves the
 * database "postgres" of the target server. Files live in a temp dir
 * /tmp/dbpool-pgb-XXXXXX. Every call is bounded in time; failures print a
 * reason to stderr and return -1.
 */
#ifndef DBPOOL_TEST_PGBOUNCER_H
#define DBPOOL_TEST_PGBOUNCER_H

#include <sys/types.h>

#include "pgserver.h"

typedef struct pgb_server {
    char dir[256];      /* temp dir: pgbouncer.ini, userlist.txt, logs */
    int port;           /* fixed for the lifetime of the struct (restarts reuse it) */
    pid_t pid;          /* running PgBouncer, 0 if stopped */
    char conninfo[512]; /* "host=127.0.0.1 port=N user=postgres dbname=postgres" */
} pgb_server;

/* Write the config and start. pool_mode e.g. "transaction"; pool_size is
 * default_pool_size (server connections per user/database pair). Waits
 * until a client can run SELECT 1 through it. */
int pgb_start(pgb_server *b, const pgt_server *target, const char *pool_mode, int pool_size);
/* pgb_start, plus every other database of the target (the "*" entry, as the
 * client's user) and `extra` appended to the [pgbouncer] section (later
 * settings win: "max_client_conn = 100\nmax_db_connections = 3\n"; it may
 * open a "[databases]" section of its own, PgBouncer reads both). */
int pgb_start_conf(pgb_server *b, const pgt_server *target, const char *pool_mode, int pool_size,
                   const char *extra);
/* Stop with `sig` (SIGTERM: immediate shutdown, every client connection is
 * closed; SIGINT: safe shutdown) and wait until the process is gone. */
int pgb_stop(pgb_server *b, int sig);
/* Start again after pgb_stop, same config and port; waits until it serves. */
int pgb_resume(pgb_server *b);
/* Stop (SIGKILL if needed) and remove the temp dir. Safe to call twice. */
void pgb_destroy(pgb_server *b);

#endif
