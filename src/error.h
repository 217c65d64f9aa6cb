/* error.h - error codes to text, and the per-thread detail message. */
#ifndef DBPOOL_ERROR_H
#define DBPOOL_ERROR_H

#if defined(__GNUC__)
#define DBPOOL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DBPOOL_PRINTF(a, b)
#endif

/* Record the calling thread's detail message; returns `code` for tail calls. */
int set_error(int code, const char *fmt, ...) DBPOOL_PRINTF(2, 3);
/* Clear the calling thread's detail message. */
void clear_error(void);

#endif
