/* async.h - internal side of the completion queue (src/core/async.c):
 * library threads post work to run on the application's loop thread. */
#ifndef DBPOOL_ASYNC_INT_H
#define DBPOOL_ASYNC_INT_H

#include "namespace.h"

#include "dbpool_async.h"

/*
 * Reserve a completion on cq for a job that a library thread will post
 * later (cq owner's thread). Until it is posted and run, or unheld,
 * dbpool_cq_free() refuses to free the queue, so the poster never writes
 * into freed memory. NULL when out of memory.
 */
struct dbpool_async_req *async_hold(dbpool_cq *cq);
/* Give a reservation back unused (cq owner's thread). */
void async_unhold(struct dbpool_async_req *r);
/* Post the reserved completion from any thread: fn(arg) then runs from
 * dbpool_cq_run() on the owner's thread, in completion order. */
void async_post(struct dbpool_async_req *r, void (*fn)(void *), void *arg);

/*
 * Take up to `max` requests from the head of p's queue, while the head is a
 * request of this cq submitted with callback cb and ok(arg, ctx) agrees:
 * they were next in line anyway, so nobody is overtaken. While the oldest
 * waiter has waited less than barge_window, requests of other cqs (other
 * loops) are passed over to take this cq's behind them, as same-loop service
 * does at check-in (pool.c); a blocking caller, or one of ours that ok()
 * refuses, always ends the run. Their args go to args[]; they finish without
 * their callback ever running (the caller serves them, e.g. on a connection
 * it holds). Returns how many. cq owner's thread.
 */
int async_take_head(struct dbpool *p, dbpool_cq *cq, dbpool_checkout_cb cb,
                    int (*ok)(void *arg, void *ctx), void *ctx, void **args, int max);

#endif
