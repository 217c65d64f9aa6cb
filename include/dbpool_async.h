/*
 * dbpool_async.h - a non-blocking checkout for event-loop programs.
 *
 * An event-driven server (one thread runs an epoll/libuv/libevent loop and
 * must never block) asks for a connection and is told later. The request
 * waits in the same queue as blocking dbpool_checkout() callers (same FIFO
 * order, CoDel drops, fail-fast while DOWN, timeouts); its outcome is posted
 * to a completion queue that the application owns. The completion queue has
 * one file descriptor: watch it for reading, and when it is readable call
 * dbpool_cq_run(), which runs the due callbacks on the calling thread. The
 * library never calls application code on its own threads.
 *
 *     dbpool_cq *cq;
 *     dbpool_cq_new(&cq);
 *     epoll_ctl(ep, EPOLL_CTL_ADD, dbpool_cq_fd(cq), &(struct epoll_event){.events = EPOLLIN});
 *     dbpool_request req;
 *     dbpool_checkout_async(pool, cq, 1000, on_conn, client, &req);
 *     ... epoll_wait() says the fd is readable:
 *     dbpool_cq_run(cq, 0);           // on_conn(client, 0, lease) runs here
 *
 *     static void on_conn(void *arg, int status, dbpool_lease lease)
 *     {
 *         if (status != 0) { reply_error(arg, dbpool_last_error()); return; }
 *         ... use dbpool_pg_conn(&lease), then dbpool_checkin(&lease) ...
 *     }
 *
 * Guarantees
 *   - Every request that dbpool_checkout_async() accepted (returned 0) gets
 *     its callback exactly once, from dbpool_cq_run(), unless
 *     dbpool_checkout_cancel() returned 0 for it: then it never does.
 *   - Every outcome of the checkout arrives through the callback, including
 *     ones known at once (pool DOWN, closed, queue=false): the call itself
 *     fails only for bad arguments, lack of memory, or a forked pool.
 *
 * Order (docs/async.md, "Same-loop service")
 *   - Between async requests and blocking dbpool_checkout() callers, the
 *     queue is FIFO under the rules of docs/pool.md ("Hand-over").
 *   - Between loops, FIFO holds within barge_window: a connection handed to
 *     a request of one thread (loop) and checked in on that thread goes to
 *     that thread's oldest queued request, passing over other threads' async
 *     requests, but only while the oldest waiter of the pool has waited less
 *     than the pool's barge_window (2 ms by default; 0: strict FIFO). A
 *     request that has waited barge_window is never passed over, and a
 *     blocking caller never is by this rule. dbpool_loop_batch() takes
 *     requests into a batch under the same bound.
 *
 * Thread rules
 *   - A completion queue and its requests belong to one thread at a time
 *     (normally the loop thread): dbpool_checkout_async(),
 *     dbpool_checkout_cancel(), dbpool_cq_run() and dbpool_cq_free() on one
 *     cq must not run concurrently. Library threads only post to it.
 *   - Callbacks may call anything in dbpool, including submitting and
 *     cancelling requests on the same cq, but not dbpool_cq_free() of it.
 *   - A lease delivered to a callback is the application's, exactly like a
 *     lease from dbpool_checkout(): use it from one thread at a time and
 *     check it in from any thread.
 *
 * See docs/async.md.
 */
#ifndef DBPOOL_ASYNC_H
#define DBPOOL_ASYNC_H

#include "dbpool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A completion queue: where finished requests wait for dbpool_cq_run(). */
typedef struct dbpool_cq dbpool_cq;

struct dbpool_async_req;

/*
 * A handle to a pending request, returned by value like a lease. It stays
 * meaningful until the request finishes (its callback starts, or a cancel
 * succeeds); after that every use returns DBPOOL_ESTALE and touches nothing.
 * Handles must not outlive their completion queue.
 */
typedef struct dbpool_request {
    struct dbpool_async_req *req;
    uint64_t gen;
} dbpool_request;

/*
 * The outcome of an asynchronous checkout, run by dbpool_cq_run() on its
 * caller's thread. status is 0 and `lease` is live (yours: check it in when
 * done, from any thread), or one of the errors of dbpool_checkout()
 * (DBPOOL_ETIMEDOUT, DBPOOL_EDROPPED, DBPOOL_EBUSY, DBPOOL_EUNAVAILABLE,
 * DBPOOL_ECLOSED, DBPOOL_ENOMEM) with `lease` empty and the detail in
 * dbpool_last_error(). `arg` is what was passed at submission.
 */
typedef void (*dbpool_checkout_cb)(void *arg, int status, dbpool_lease lease);

/*
 * Create a completion queue. Its fd (dbpool_cq_fd) is an eventfd, non-blocking
 * and close-on-exec. Returns 0 and sets *out, or DBPOOL_EINVAL (NULL out),
 * DBPOOL_ENOMEM, DBPOOL_ESYSTEM (no eventfd; detail names the errno).
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_cq_new(dbpool_cq **out);

/*
 * Free a completion queue. NULL is a no-op returning 0. Returns DBPOOL_EBUSY
 * and frees nothing while any request submitted on it has not finished
 * (pending in a pool, or completed with its callback not yet run): cancel
 * them, or close their pools and run the queue, first. From a callback of
 * this queue it returns DBPOOL_EBUSY too.
 */
DBPOOL_API int dbpool_cq_free(dbpool_cq *cq);

/*
 * The file descriptor to watch for reading (level-triggered): readable while
 * completions wait to be run (outside a dbpool_cq_defer_wakeup() span). Owned
 * by the queue: do not read, write or close it. Returns the fd, or
 * DBPOOL_EINVAL for NULL.
 */
DBPOOL_API int dbpool_cq_fd(const dbpool_cq *cq);

/*
 * Run the callbacks of completed requests, oldest first, on the calling
 * thread: at most `max` of them (max <= 0: all that were ready when the call
 * began; completions posted meanwhile, e.g. by callbacks that submit again,
 * wait for the next call, so one call never runs forever). Never blocks.
 * Returns the number of callbacks run (0 if none was ready), or
 * DBPOOL_EINVAL for NULL. With an edge-triggered watch, call it until it
 * returns fewer than `max`.
 */
DBPOOL_API int dbpool_cq_run(dbpool_cq *cq, int max);

/*
 * For a loop adapter that runs the queue itself right after it dispatched a
 * batch of events (dbpool/adapters/epoll.h does): between
 * dbpool_cq_defer_wakeup(cq, 1) and the matching dbpool_cq_defer_wakeup(cq, 0)
 * completions do not make the fd readable, so one that the queue's own
 * thread posts (a check-in handing the connection to this loop's next
 * request) and dbpool_cq_run() then runs within the span costs no eventfd
 * write and read. The closing call makes the fd readable if completions
 * still wait, whoever posted them. Calls nest (the outermost close counts).
 * Owner's thread only, and never wait on the fd, or block, inside a span:
 * what was posted in it is signalled only when it ends. Returns 0, or
 * DBPOOL_EINVAL for NULL.
 */
DBPOOL_API int dbpool_cq_defer_wakeup(dbpool_cq *cq, int on);

/*
 * Ask for a connection without blocking. Waits in the pool's queue at most
 * timeout_ms (DBPOOL_DEFAULT_TIMEOUT = the pool's checkout_timeout; 0 = do
 * not wait: DBPOOL_EBUSY when nothing is idle), then cb(arg, status, lease)
 * runs from dbpool_cq_run(cq). The callback is never called from inside this
 * function, even when a connection is idle.
 * `req` (may be NULL) receives a handle for dbpool_checkout_cancel().
 * Returns 0 (accepted: the callback will run exactly once unless cancelled),
 * or, with no callback ever: DBPOOL_EINVAL (NULL pool, cq or cb, negative
 * timeout other than -1), DBPOOL_ENOMEM, DBPOOL_EFORKED.
 */
DBPOOL_API DBPOOL_MUSTCHECK int dbpool_checkout_async(dbpool *pool, dbpool_cq *cq,
                                                      int64_t timeout_ms, dbpool_checkout_cb cb,
                                                      void *arg, dbpool_request *req);

/*
 * Withdraw a request whose callback has not started. Returns 0: the callback
 * will never run, and a connection the request had already been handed (its
 * completion waiting in the queue) went back to the pool. Returns
 * DBPOOL_ESTALE when it is too late (the callback started or ran, or the
 * request was already cancelled): nothing happens. DBPOOL_EINVAL for NULL or
 * an empty handle.
 */
DBPOOL_API int dbpool_checkout_cancel(dbpool_request *req);

#ifdef __cplusplus
}
#endif
#endif /* DBPOOL_ASYNC_H */
