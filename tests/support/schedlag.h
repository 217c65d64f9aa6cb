/* schedlag.h - how late the OS scheduler wakes threads right now, so timing
 * tests can assert the library's own delay and not the machine's load: a
 * background thread sleeps 5 ms in a loop and records its worst oversleep. */
#ifndef DBPOOL_TEST_SCHEDLAG_H
#define DBPOOL_TEST_SCHEDLAG_H

#include <stdint.h>

/* Start the sampler (once per process; later calls do nothing). 0 or -1. */
int pgt_sched_start(void);
/* Forget the worst lateness seen so far (call at the start of a test). */
void pgt_sched_reset(void);
/* The worst lateness (ms) since the last reset. */
int64_t pgt_sched_late(void);

#endif
