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

#endif
