/* cli.h - shared pieces of the dbpool command-line tool: exit codes, option
 * parsing helpers, the clock, and the entry point of each command. */
#ifndef DBPOOL_CLI_H
#define DBPOOL_CLI_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "dbpool_pg.h"

/* Exit codes shared by every command. */
enum {
    EXIT_OK = 0,   /* the command did what was asked */
    EXIT_FAIL = 1, /* it ran but failed (could not connect, nothing succeeded, ...) */
    EXIT_USAGE = 2 /* bad command line: unknown option, bad value, missing argument */
};

/* Entry points: argv[0] is the command name ("bench"). Return an exit code. */
int cmd_bench(int argc, char **argv);
int cmd_drill(int argc, char **argv);
int cmd_check(int argc, char **argv);

/* ---- errors ---------------------------------------------------------------- */

/* Print "dbpool <cmd>: <message>" to stderr plus a hint to --help; returns EXIT_USAGE. */
int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "dbpool <cmd>: <message>" to stderr. */
void fail_msg(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- option values ------------------------------------------------------------ */

/* A decimal integer in [lo, hi]. Returns 0 or -1. */
int parse_int_range(const char *s, long lo, long hi, long *out);
/* A duration: "250ms", "10s", "2m" (or "2min"), "1h", fractions allowed
 * ("1.5s"); a bare number is seconds, in every option of every command and in
 * --set (DURATION_HELP says so in each --help). Returns 0 or -1. */
int parse_duration_ms(const char *s, int64_t *out_ms);
/* Where the database comes from, for every --help. */
#define DATABASE_HELP                                                                              \
    "The database is the conninfo argument (a libpq conninfo string or URI),\n"                   \
    "else $DATABASE_URL, else libpq's defaults: PGHOST, PGPORT, PGUSER,\n"                        \
    "PGDATABASE, PGSERVICE (pg_service.conf) and the other PG* variables, as\n"                   \
    "psql and pgbench use them.\n"
#define DURATION_HELP                                                                              \
    "Durations: 500ms, 10s, 1.5s, 2m, 1h; a bare number is seconds, in every\n"                     \
    "option and in --set (connect_timeout=5 is 5 s).\n"

/*
 * Handle a getopt_long() failure for command `cmd` and return EXIT_USAGE.
 * `c` is what getopt_long returned ('?' or ':'), argv/optind as after the call.
 * Names the option, never its value ("--name=VALUE" shows as "--name").
 */
int getopt_error(const char *cmd, int c, char **argv);

/* ---- showing user input without its secrets ------------------------------------ */

/*
 * Every message that echoes something from the command line goes through
 * arg_shown(): a misplaced conninfo (`bench -c URL`, `check extra URL`,
 * `dbpool URL`) lands in an option value or an extra argument, and its
 * password must not reach the terminal or a CI log.
 */

/* Could this argument be a conninfo or part of one (so hold a password)?
 * True for anything with '=', '@' or "://": key=value pairs and URIs. */
int arg_may_hold_secret(const char *s);

/* Room for arg_shown() output; longer arguments are cut with "...". */
#define ARG_SHOWN_LEN 256

/*
 * `arg` quoted for a message ('value', control characters as '?'). If it could
 * hold a secret: its dbpool_pg_redact() form when it parses as a conninfo
 * (password=********), else a note that it is not shown. Writes into buf
 * (ARG_SHOWN_LEN is enough) and returns buf.
 */
const char *arg_shown(const char *arg, char *buf, size_t len);

/*
 * dbpool_pg_redact() into a buffer sized from the conninfo (so any valid
 * conninfo fits, whatever the length of its values). Returns 0 and a malloc'd
 * string in *out (free() it), or the library's error code (message in
 * dbpool_last_error(), never containing the password).
 */
int conninfo_redacted(const char *conninfo, char **out);

/*
 * The conninfo to use: the positional argument if given, else $DATABASE_URL,
 * else "" (libpq's defaults: PG* environment variables, a service file, as
 * psql and pgbench do). Checks that it parses (without printing it). On error
 * prints a message and returns NULL. *shown receives the password-free form
 * for display, malloc'd (free() it; NULL on error).
 */
const char *resolve_conninfo(const char *cmd, const char *arg, char **shown);

/*
 * The command line that reproduces a run, for reports: "dbpool drill -O 10s
 * 'host=db password=********'", each argument shell-quoted when needed. A
 * conninfo is shown in its dbpool_pg_redact() form; a --set value only if
 * neither its name nor its value could hold a secret; anything else that
 * could hold one as '(not shown)'. argv[0] is the command name. Cut with
 * "..." if it does not fit.
 */
void command_shown(int argc, char **argv, char *buf, size_t len);

/* ---- output files ---------------------------------------------------------------- */

/*
 * A file named on the command line (bench --metrics, drill --output), opened
 * before the run so that a path that cannot be written fails at once rather
 * than after the run. Not truncated until written; if the run ends without
 * writing it, a file that out_open() created is removed again.
 */
typedef struct out_file {
    const char *path;
    int fd;      /* -1 when not open */
    int created; /* out_open() created it */
} out_file;

/* Open (create if missing) for writing. On failure prints "cannot write
 * <what> to '<path>': <reason>" and returns -1. */
int out_open(out_file *o, const char *cmd, const char *what, const char *path);
/* Truncate and hand the file over as a stream; close it with out_close().
 * NULL on failure (errno set). The out_file is then done with. */
FILE *out_stream(out_file *o);
/* fclose() that also reports earlier write errors: 0 or -1 (errno set). */
int out_close(FILE *f);
/* Not written after all: close, and remove the file if out_open() created it.
 * No-op when not open. */
void out_abandon(out_file *o);

/*
 * Apply one "--set name=value" pool option. The string must outlive the
 * pool's open (argv strings do). Returns 0, or prints the library's message
 * and returns EXIT_USAGE.
 */
int apply_pool_option(const char *cmd, dbpool_config *cfg, char *name_eq_value);

/*
 * Wait until every connection of pool is open (bounded by connect_timeout_ms
 * + 5 s, or g_stop), so a run starts on a warm pool. Fails at once when the
 * pool goes DOWN/STOPPED. On failure prints "cannot connect<via>: <error>"
 * or how many opened, and returns -1.
 */
int wait_pool_ready(const char *cmd, dbpool *pool, int64_t connect_timeout_ms, const char *via);

/* ---- time -------------------------------------------------------------------- */

/* CLOCK_MONOTONIC in ns. */
int64_t now_ns(void);
/* Sleep until CLOCK_MONOTONIC reaches t (ns); returns at once if it passed. */
void sleep_until_ns(int64_t t);
/* Sleep for ms milliseconds (restarted on EINTR until the time passed or *stop). */
void sleep_ms(int64_t ms, volatile sig_atomic_t *stop);
/* Current local time as "2024-05-01 12:34:56 +0200". */
void local_timestamp(char *buf, size_t len);

/* ---- signals ------------------------------------------------------------------- */

/* Set by SIGINT/SIGTERM once install_stop_handler() ran. */
extern volatile sig_atomic_t g_stop;
void install_stop_handler(void);

/* Pool log sink for the commands: one line on stderr, "[pool NAME LEVEL] msg". */
void cli_log_cb(void *arg, dbpool_log_level level, const char *pool_name, const char *msg);

/* ---- JSON output ------------------------------------------------------------ */

/* Write s as a JSON string literal (with quotes). */
void json_str(FILE *f, const char *s);

#endif
