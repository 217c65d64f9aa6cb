/* workers.h - threads for the work that may block (name lookups, libpq < 17
 * cancel requests), so that it never runs on the manager thread and one
 * stuck server never delays work for another. */
#ifndef DBPOOL_WORKERS_H
#define DBPOOL_WORKERS_H

#include "namespace.h"

/* At most this many worker threads exist at once. */
#define WORKERS_MAX 64
/* A worker idle this long exits. */
#define WORKERS_IDLE_MS 2000

/*
 * Run fn(arg) on a worker thread, then free_fn(arg) (if not NULL).
 * Jobs with the same `lane` string run one at a time, in submission order, so
 * a stuck job delays only its own lane (use one lane per target server).
 * Jobs in different lanes run in parallel up to WORKERS_MAX threads; beyond
 * that they wait for a thread. Threads start on demand, block every signal
 * (a cancel request's send() can never raise SIGPIPE in the application) and
 * exit when idle. Returns 0, or DBPOOL_ENOMEM / DBPOOL_ESYSTEM (then neither
 * fn nor free_fn ran: the caller still owns arg). Any thread.
 */
int workers_submit(const char *lane, void (*fn)(void *), void *arg, void (*free_fn)(void *));

/* Number of worker threads running a job (idle ones hold no memory of the
 * library's allocator). */
int workers_busy(void);

/* Make idle workers exit now (the last pool closed: no thread stays behind
 * unless a job is stuck). */
void workers_trim(void);

/* Around fork() (pthread_atfork, from the manager): hold the queue lock. */
void workers_atfork_prepare(void);
void workers_atfork_parent(void);
/* In a child after fork(): forget the parent's threads and queued jobs (they
 * do not exist here); their memory is leaked, never touched. */
void workers_atfork_child(void);

#endif
