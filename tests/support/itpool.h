/* itpool.h - fixtures shared by the integration tests: bounded waits on a
 * pool's stats and on the server's backends, threads with a join deadline,
 * and small queries on a lease. Each test file keeps its own timer settings
 * (fast_config) and its own teardown. */
#ifndef DBPOOL_TEST_ITPOOL_H
#define DBPOOL_TEST_ITPOOL_H

#include <pthread.h>
#include <stdint.h>

#include "dbpool.h"
#include "pgserver.h"

/* Open a PostgreSQL pool on srv with application_name=app (fails the test
 * if it cannot) and track it; itp_close() closes one, itp_close_all() (in a
 * teardown) every pool still tracked, unless the run is hung. */
dbpool *itp_open(const pgt_server *srv, const char *app, const dbpool_config *cfg);
int itp_close(dbpool *p);
void itp_close_all(void);
/* Track a pool opened otherwise / forget one. */
void itp_track(dbpool *p);
void itp_untrack(dbpool *p);

/* Sleep ms (resumed after signals). Never as synchronisation: for pacing. */
void itp_sleep_ms(int64_t ms);

/* The pool's stats; fails the test if dbpool_stats_get fails. */
dbpool_stats itp_stats(dbpool *p);

/* Wait until pred(stats, arg) holds, polling, at most timeout_ms. 1 if it
 * did, 0 on timeout. */
typedef int (*itp_stats_pred)(const dbpool_stats *st, int64_t arg);
int itp_wait_stats(dbpool *p, itp_stats_pred pred, int64_t arg, int64_t timeout_ms);

/* Wait until the server has exactly n backends with application_name app.
 * 1 if so, 0 on timeout. */
int itp_wait_backends(const pgt_server *srv, const char *app, int n, int64_t timeout_ms);

/* Threads: start (fails the test if it cannot), join within a deadline (0
 * when joined; otherwise the run is marked hung: itp_hung() is then 1, and
 * teardowns must leak pools a stuck thread may still use instead of
 * freeing them). */
pthread_t itp_thr_start(void *(*fn)(void *), void *arg);
int itp_thr_join(pthread_t t, int64_t timeout_ms);
int itp_hung(void);
/* Mark the run hung by hand (a thread is stuck somewhere else). */
void itp_set_hung(void);

/* "SELECT 1" on a PostgreSQL lease: 1 if it returned 1. */
int itp_select1(const dbpool_lease *l);

/* Terminate the backends of application_name app (pg_terminate_backend) and
 * wait until the server's goodbye reaches the socket of the held lease l, so
 * that libpq can see it: 1 if it did within timeout_ms, 0 otherwise. */
int itp_terminate_held(const pgt_server *srv, const char *app, const dbpool_lease *l,
                       int64_t timeout_ms);

#endif
