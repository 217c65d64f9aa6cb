/* stub_driver.h - the one stub driver (no database) for unit tests and the
 * benchmarks of the pool's own overhead: connects at once, pings and resets
 * succeed, cancels are counted. Its behaviour and counters live in a
 * struct stub_ctl passed as the pool's ctx (NULL: defaults, no counting). */
#ifndef DBPOOL_STUB_DRIVER_H
#define DBPOOL_STUB_DRIVER_H

#include <stdatomic.h>

#include "dbpool.h"

struct stub_ctl {
    atomic_int fail_connects;   /* nonzero: every connect fails ("stub") */
    atomic_int cancel_sleep_ms; /* a slow cancel, like PQcancel on a dead host */
    atomic_int connects, disconnects, cancel_runs, cancel_frees;
};

/* The driver. Never calls a cmocka assertion (it runs on the library's
 * threads); a broken invariant aborts. */
extern const dbpool_driver stub_driver;
/* Every stub connection is this object (dbpool_lease_conn returns &stub_conn). */
extern int stub_conn;

#endif
