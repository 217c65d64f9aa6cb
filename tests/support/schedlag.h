/* schedlag.h - how late the OS scheduler runs threads right now, so timing
 * tests can assert the library's own delay and not the machine's load. Two
 * measures, added: a background thread sleeps 5 ms in a loop and records its
 * worst oversleep (what any thread may suffer, steal time included), and the
 * time the threads a test names (e.g. the one running its event callback)
 * spent runnable but waiting for a CPU (Linux schedstat run delay). */
#ifndef DBPOOL_TEST_SCHEDLAG_H
#define DBPOOL_TEST_SCHEDLAG_H

#include <stdint.h>

/* Start the sampler (once per process; later calls do nothing). 0 or -1. */
int pgt_sched_start(void);
/* Forget the worst lateness and the tracked threads (call at the start of a
 * test). */
void pgt_sched_reset(void);
/* Track the calling thread's run delay from now on (until the next reset);
 * a thread already tracked is left as it is. Cheap enough for a callback. */
void pgt_sched_track_self(void);
/* The worst oversleep plus the tracked threads' run delay (ms) since the
 * last reset. */
int64_t pgt_sched_late(void);

#endif
