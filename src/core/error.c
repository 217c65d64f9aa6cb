/* error.c - dbpool_strerror() and the thread-local detail of the last failure.
 * Thread-local storage is the only per-thread state the library keeps. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

#include "dbpool.h"

static _Thread_local char last_error[512];

const char *dbpool_strerror(int code)
{
    switch (code) {
    case DBPOOL_OK:
        return "success";
    case DBPOOL_EINVAL:
        return "invalid argument";
    case DBPOOL_ENOMEM:
        return "out of memory";
    case DBPOOL_ETIMEDOUT:
        return "timed out (checkout deadline or statement timeout)";
    case DBPOOL_EDROPPED:
        return "connection not available and request was dropped from queue";
    case DBPOOL_EBUSY:
        return "no connection available";
    case DBPOOL_ESTALE:
        return "lease already checked in";
    case DBPOOL_ECLOSED:
        return "pool is closed";
    case DBPOOL_EUNAVAILABLE:
        return "database unavailable";
    case DBPOOL_ECONNECT:
        return "could not connect";
    case DBPOOL_EEXPIRED:
        return "lease expired (hold_timeout)";
    case DBPOOL_ESYSTEM:
        return "system error";
    case DBPOOL_EQUERY:
        return "query failed";
    case DBPOOL_ECONNLOST:
        return "connection lost";
    case DBPOOL_ECOMMIT_UNKNOWN:
        return "connection lost during COMMIT: outcome unknown";
    case DBPOOL_EUNKNOWN:
        return "outcome unknown: the statement may or may not have run";
    case DBPOOL_EFORKED:
        return "pool inherited across fork(): open a new one in this process";
    case DBPOOL_ENOOWNER:
        return "sandbox: no owner for this thread";
    case DBPOOL_ETXENDED:
        return "sandbox: the code under test ended the sandbox's transaction";
    case DBPOOL_EQUEUEFULL:
        return "too many callers waiting (max_waiting): not queued";
    case DBPOOL_ESKIPPED:
        return "not executed: an earlier statement of the pipeline failed";
    default:
        return "unknown error";
    }
}

const char *dbpool_errname(int code)
{
#define NAME(c)                                                                                    \
    case c:                                                                                        \
        return #c
    switch (code) {
        NAME(DBPOOL_OK);
        NAME(DBPOOL_EINVAL);
        NAME(DBPOOL_ENOMEM);
        NAME(DBPOOL_ETIMEDOUT);
        NAME(DBPOOL_EDROPPED);
        NAME(DBPOOL_EBUSY);
        NAME(DBPOOL_ESTALE);
        NAME(DBPOOL_ECLOSED);
        NAME(DBPOOL_EUNAVAILABLE);
        NAME(DBPOOL_ECONNECT);
        NAME(DBPOOL_EEXPIRED);
        NAME(DBPOOL_ESYSTEM);
        NAME(DBPOOL_EQUERY);
        NAME(DBPOOL_ECONNLOST);
        NAME(DBPOOL_ECOMMIT_UNKNOWN);
        NAME(DBPOOL_EUNKNOWN);
        NAME(DBPOOL_EFORKED);
        NAME(DBPOOL_ENOOWNER);
        NAME(DBPOOL_ETXENDED);
        NAME(DBPOOL_EQUEUEFULL);
        NAME(DBPOOL_ESKIPPED);
    default:
        return "unknown";
    }
#undef NAME
}

const char *dbpool_last_error(void)
{
    return last_error;
}

void set_error_msg(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
}

void clear_error(void)
{
    last_error[0] = '\0';
}
