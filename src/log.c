/* log.c - formats log lines and sends them to the user's callback or stderr.
 * The library never writes to stdout. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

#include "pool.h"

static const char *level_name(dbpool_log_level level)
{
    switch (level) {
    case DBPOOL_LOG_DEBUG:
        return "DEBUG";
    case DBPOOL_LOG_INFO:
        return "INFO";
    case DBPOOL_LOG_WARNING:
        return "WARNING";
    case DBPOOL_LOG_ERROR:
        return "ERROR";
    default:
        return "LOG";
    }
}

void plog(const struct dbpool *p, dbpool_log_level level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (level < p->cfg.log_level || level >= DBPOOL_LOG_NONE)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (p->cfg.log_cb)
        p->cfg.log_cb(p->cfg.log_arg, level, p->cfg.name, msg);
    else
        fprintf(stderr, "dbpool[%s] %s: %s\n", p->cfg.name, level_name(level), msg);
}
