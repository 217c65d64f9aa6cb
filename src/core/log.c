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

/* For the default (stderr) logger: control characters as \n, \r, \t or
 * \xNN, so a pool name or a message (a tenant key is any bytes) can never
 * forge a log line of its own. */
static void one_line(char *dst, size_t cap, const char *src)
{
    size_t j = 0;

    for (const unsigned char *s = (const unsigned char *)src; *s && j + 5 < cap; s++) {
        if (*s >= 0x20 && *s != 0x7F) {
            dst[j++] = (char)*s;
        } else if (*s == '\n' || *s == '\r' || *s == '\t') {
            dst[j++] = '\\';
            dst[j++] = *s == '\n' ? 'n' : *s == '\r' ? 'r' : 't';
        } else {
            j += (size_t)snprintf(dst + j, cap - j, "\\x%02X", *s);
        }
    }
    dst[j] = '\0';
}

void log_msg(const char *name, dbpool_log_cb cb, void *arg, dbpool_log_level min,
             dbpool_log_level level, const char *msg)
{
    if (level < min || level >= DBPOOL_LOG_NONE)
        return;
    if (cb) {
        cb(arg, level, name, msg);
    } else {
        char n[200], line[1024];
        one_line(n, sizeof(n), name);
        one_line(line, sizeof(line), msg);
        fprintf(stderr, "dbpool[%s] %s: %s\n", n, level_name(level), line);
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
    log_msg(p->cfg.name, p->cfg.log_cb, p->cfg.log_arg, p->cfg.log_level, level, msg);
}
