/* error.h - error codes to text, and the per-thread detail message. */
#ifndef DBPOOL_ERROR_H
#define DBPOOL_ERROR_H

#include "namespace.h"

#if defined(__GNUC__)
#define DBPOOL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DBPOOL_PRINTF(a, b)
#endif

/* Record the calling thread's detail message. */
void set_error_msg(const char *fmt, ...) DBPOOL_PRINTF(1, 2);
static inline int error_code(int code)
{
    return code;
}
/* set_error(code, fmt, ...): record the message and evaluate to `code`, for
 * `return set_error(...)`. A macro so analyzers see the code is returned. */
#define set_error(code, ...) (set_error_msg(__VA_ARGS__), error_code(code))
/* Clear the calling thread's detail message. */
void clear_error(void);

#endif
