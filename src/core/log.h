/* log.h - the pool's log sink (user callback or stderr). */
#ifndef DBPOOL_LOG_H
#define DBPOOL_LOG_H

#include "namespace.h"

#include "dbpool.h"
#include "error.h"

struct dbpool;

/* Log through the pool's log_cb (default: stderr) if level >= cfg.log_level.
 * Callers must never pass a password: messages come from redacted sources. */
void plog(const struct dbpool *p, dbpool_log_level level, const char *fmt, ...) DBPOOL_PRINTF(3, 4);

/* The same sink without a pool: `name` is the pool's name, cb/arg/min its
 * log_cb, log_arg and log_level (the PostgreSQL layer's notice processor). */
void log_msg(const char *name, dbpool_log_cb cb, void *arg, dbpool_log_level min,
             dbpool_log_level level, const char *msg);

#endif
