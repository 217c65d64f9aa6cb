/* async.c - the non-blocking checkout: requests that wait in a pool's queue
 * as WAITER_ASYNC, and the completion queue whose eventfd tells the
 * application's loop to run their callbacks on its own thread. */
#include "dbpool_async.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "alloc.h"
#include "async.h"
#include "error.h"
#include "manager.h"
#include "pool.h"

/*
 * A request is FREE (on the cq's spare list, reusable), PENDING (its waiter
 * is in a pool's queue), or DONE (its outcome is on the cq's ready list,
 * waiting for dbpool_cq_run). PENDING -> DONE happens under the pool mutex on
 * whichever thread decides the outcome (a check-in, the manager, a close);
 * every other transition happens on the thread that owns the cq. From
 * submission until it finishes (callback started, or cancelled) a request
 * holds a reference on its pool (p->jobs), so that a closed pool's memory
 * stays while a completion still points into it.
 */
enum req_state { REQ_FREE = 0, REQ_PENDING, REQ_DONE };

struct dbpool_async_req {
    struct waiter w;       /* in the pool's queue while PENDING */
    struct list_node link; /* cq->ready while DONE, cq->spare while FREE */
    struct dbpool_cq *cq;
    struct dbpool *pool;
    uint64_t gen;         /* handle generation: bumped when it finishes */
    enum req_state state; /* cq->mu */
    int check;            /* the connection idled past alive_check */
    int64_t timeout_ms;   /* as submitted (a retry after a dead connection) */
    dbpool_checkout_cb cb;
    void *arg;
    void (*job)(void *arg); /* a posted job (async_post), not a checkout */
    char msg[512];          /* an error's detail, for dbpool_last_error() */
};

struct dbpool_cq {
    pthread_mutex_t mu;     /* ready, states, outstanding, signalled, defer */
    int fd;                 /* eventfd: readable while ready is not empty */
    int signalled;          /* fd made readable and not drained yet */
    int defer;              /* dbpool_cq_defer_wakeup() depth (owner sets) */
    struct list_head ready; /* DONE requests, in completion order */
    struct list_head spare; /* FREE requests, for reuse */
    int outstanding;        /* submitted and not finished */
    int running;            /* dbpool_cq_run() depth (the owner's thread only) */
};

static struct dbpool_async_req *req_of_waiter(struct waiter *w)
{
    return (struct dbpool_async_req *)(void *)((char *)w - offsetof(struct dbpool_async_req, w));
}

/* ---- the completion queue ------------------------------------------------ */

int dbpool_cq_new(dbpool_cq **out)
{
    dbpool_cq *cq;

    if (!out)
        return set_error(DBPOOL_EINVAL, "dbpool_cq_new: NULL argument");
    *out = NULL;
    if (!(cq = mem_calloc(1, sizeof(*cq))))
        return set_error(DBPOOL_ENOMEM, "dbpool_cq_new: out of memory");
    cq->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (cq->fd < 0) {
        int e = errno;
        mem_free(cq);
        return set_error(DBPOOL_ESYSTEM, "dbpool_cq_new: eventfd: %s", strerror(e));
    }
    if (pthread_mutex_init(&cq->mu, NULL) != 0) {
        close(cq->fd);
        mem_free(cq);
        return set_error(DBPOOL_ESYSTEM, "dbpool_cq_new: pthread init failed");
    }
    list_init(&cq->ready);
    list_init(&cq->spare);
    *out = cq;
    return 0;
}

int dbpool_cq_free(dbpool_cq *cq)
{
    struct list_node *n;

    if (!cq)
        return 0;
    if (cq->running) /* we would free the queue under dbpool_cq_run's feet */
        return set_error(DBPOOL_EBUSY, "dbpool_cq_free called from a callback of its queue");
    pthread_mutex_lock(&cq->mu);
    int busy = cq->outstanding;
    pthread_mutex_unlock(&cq->mu);
    if (busy)
        return set_error(DBPOOL_EBUSY,
                         "dbpool_cq_free: %d request(s) not finished (cancel them, or close "
                         "their pools and run the queue)",
                         busy);
    while ((n = list_pop(&cq->spare)) != NULL)
        mem_free(list_entry(n, struct dbpool_async_req, link));
    close(cq->fd);
    pthread_mutex_destroy(&cq->mu);
    mem_free(cq);
    return 0;
}

int dbpool_cq_fd(const dbpool_cq *cq)
{
    if (!cq)
        return set_error(DBPOOL_EINVAL, "dbpool_cq_fd: NULL queue");
    return cq->fd;
}

/*
 * The fd is readable exactly while the ready list is not empty -- outside a
 * dbpool_cq_defer_wakeup() span: written on the first completion, drained
 * when the last is taken. Inside the span no completion writes it: the owner
 * thread is running (not waiting on the fd) and runs the queue before the
 * span ends, and the end of the span writes it if completions still wait. So
 * once the owner may wait again, "not empty => readable" holds again, and a
 * completion posted by any thread is never left unsignalled. cq->mu held.
 */
static void fd_raise(dbpool_cq *cq)
{
    uint64_t one = 1;

    if (cq->signalled || cq->defer)
        return;
    ssize_t r = write(cq->fd, &one, sizeof(one));
    (void)r; /* EAGAIN only at a counter of 2^64-2: already readable */
    cq->signalled = 1;
}

static void fd_drain(dbpool_cq *cq)
{
    uint64_t v;

    if (!cq->signalled)
        return;
    ssize_t r = read(cq->fd, &v, sizeof(v));
    (void)r; /* EAGAIN: nothing to drain */
    cq->signalled = 0;
}

int dbpool_cq_defer_wakeup(dbpool_cq *cq, int on)
{
    if (!cq)
        return set_error(DBPOOL_EINVAL, "dbpool_cq_defer_wakeup: NULL queue");
    pthread_mutex_lock(&cq->mu);
    if (on) {
        cq->defer++;
    } else if (cq->defer > 0 && --cq->defer == 0 && !list_empty(&cq->ready)) {
        fd_raise(cq);
    }
    pthread_mutex_unlock(&cq->mu);
    return 0;
}

/* Post r's outcome (w.status set). Pool mutex held (any thread). */
void async_complete_locked(struct dbpool *p, struct waiter *w)
{
    struct dbpool_async_req *r = req_of_waiter(w);
    dbpool_cq *cq = r->cq;

    if (w->status == 0) {
        struct dbpool_slot *s = w->slot;
        r->check = p->cfg.alive_check && p->drv->alive && s->idle_ms >= p->cfg.alive_check;
    } else if (!r->msg[0]) {
        pool_wait_message(p, w->status, w->waited, r->msg, sizeof(r->msg));
    }
    pthread_mutex_lock(&cq->mu);
    r->state = REQ_DONE;
    list_push_tail(&cq->ready, &r->link);
    fd_raise(cq);
    pthread_mutex_unlock(&cq->mu);
}

/* ---- requests ------------------------------------------------------------ */

static struct dbpool_async_req *req_get(dbpool_cq *cq)
{
    struct dbpool_async_req *r;

    pthread_mutex_lock(&cq->mu);
    struct list_node *n = list_pop(&cq->spare);
    pthread_mutex_unlock(&cq->mu);
    if (n)
        return list_entry(n, struct dbpool_async_req, link);
    if (!(r = mem_calloc(1, sizeof(*r))))
        return NULL;
    r->cq = cq;
    r->gen = 1; /* an empty handle (gen 0) never matches */
    r->link.prev = r->link.next = &r->link;
    return r;
}

/* Put r in its pool's queue (or complete it at once). Its reference on the
 * pool is taken by the caller. Pool mutex held. */
static void submit_locked(struct dbpool *p, struct dbpool_async_req *r, int64_t timeout_ms)
{
    struct waiter *w = &r->w;

    w->status = 1;
    w->slot = NULL;
    w->waited = 0;
    r->msg[0] = '\0';
    r->check = 0;
    r->state = REQ_PENDING;
    pool_submit_async_locked(p, w, timeout_ms, r->msg, sizeof(r->msg));
    if (w->status != 1)
        async_complete_locked(p, w); /* the callback still runs from the queue */
}

int dbpool_checkout_async(dbpool *p, dbpool_cq *cq, int64_t timeout_ms, dbpool_checkout_cb cb,
                          void *arg, dbpool_request *handle)
{
    void *caller = __builtin_return_address(0);
    int64_t t0_us = clock_us();
    struct dbpool_async_req *r;

    if (handle) {
        handle->req = NULL;
        handle->gen = 0;
    }
    if (!p || !cq || !cb)
        return set_error(DBPOOL_EINVAL, "dbpool_checkout_async: NULL argument");
    if (pool_forked(p))
        return DBPOOL_EFORKED;
    if (timeout_ms < 0 && timeout_ms != DBPOOL_DEFAULT_TIMEOUT)
        return set_error(DBPOOL_EINVAL, "dbpool_checkout_async: negative timeout %lld",
                         (long long)timeout_ms);
    if (!(r = req_get(cq)))
        return set_error(DBPOOL_ENOMEM, "dbpool_checkout_async: out of memory");
    memset(&r->w, 0, sizeof(r->w));
    r->w.kind = WAITER_ASYNC;
    r->w.t0_us = t0_us;
    r->w.owner = (unsigned long)pthread_self();
    r->w.caller = caller;
    r->pool = p;
    r->cb = cb;
    r->arg = arg;
    r->timeout_ms = timeout_ms;

    pthread_mutex_lock(&cq->mu);
    cq->outstanding++;
    pthread_mutex_unlock(&cq->mu);
    pthread_mutex_lock(&p->mu);
    p->jobs++; /* the request's reference, dropped when it finishes */
    submit_locked(p, r, timeout_ms);
    pthread_mutex_unlock(&p->mu);
    if (handle) {
        handle->req = r;
        handle->gen = r->gen;
    }
    clear_error(); /* an outcome known at once is the callback's, not ours */
    return 0;
}

/* r is done with (its callback is about to run, or it was cancelled): the
 * handle goes stale, r becomes reusable, the pool loses r's reference (and
 * is released if that was the last thing holding a closed pool). */
static void finish(dbpool_cq *cq, struct dbpool_async_req *r)
{
    struct dbpool *p = r->pool;

    pthread_mutex_lock(&cq->mu);
    r->gen++;
    r->state = REQ_FREE;
    r->pool = NULL;
    list_push_tail(&cq->spare, &r->link);
    cq->outstanding--;
    pthread_mutex_unlock(&cq->mu);
    if (!p)
        return; /* a posted job holds no pool */
    pthread_mutex_lock(&p->mu);
    p->jobs--;
    int last = pool_last_out_locked(p);
    pthread_mutex_unlock(&p->mu);
    if (last)
        manager_release(&p->mc);
}

/* A connection handed over after idling past alive_check is checked first,
 * as dbpool_checkout does: a dead one is closed and replaced, and the
 * request waits again (at the tail) with what is left of its timeout.
 * Returns 1 when r went back to the pool. */
static int retry_if_dead(struct dbpool_async_req *r, dbpool_lease *lease)
{
    struct dbpool *p = r->pool;

    if (!r->check || p->drv->alive(p->ctx, lease->slot->conn))
        return 0;
    pool_checkin(lease, 2);
    int64_t timeout =
        r->timeout_ms == DBPOOL_DEFAULT_TIMEOUT ? p->cfg.checkout_timeout : r->timeout_ms;
    int64_t spent = (clock_us() - r->w.t0_us) / 1000;
    pthread_mutex_lock(&p->mu);
    submit_locked(p, r, timeout > spent ? timeout - spent : 0);
    pthread_mutex_unlock(&p->mu);
    return 1;
}

/* Run r's callback (r was taken off the ready list). 1 if it ran. */
static int deliver(dbpool_cq *cq, struct dbpool_async_req *r)
{
    dbpool_lease lease = {NULL, 0};
    int status = r->w.status;

    if (r->job) {
        void (*job)(void *) = r->job;
        void *arg = r->arg;
        r->job = NULL;
        finish(cq, r);
        job(arg);
        return 1;
    }
    if (status == 0) {
        lease.slot = r->w.slot;
        lease.gen = atomic_load_explicit(&lease.slot->gen, memory_order_acquire);
        if (retry_if_dead(r, &lease))
            return 0;
        clear_error();
    } else {
        set_error_msg("%s", r->msg);
    }
    dbpool_checkout_cb cb = r->cb;
    void *arg = r->arg;
    finish(cq, r); /* before the callback: it may submit again and reuse r */
    cb(arg, status, lease);
    return 1;
}

int dbpool_cq_run(dbpool_cq *cq, int max)
{
    int ran = 0;

    if (!cq)
        return set_error(DBPOOL_EINVAL, "dbpool_cq_run: NULL queue");
    /* only what is ready now: callbacks that submit again cannot keep one
     * call running forever */
    pthread_mutex_lock(&cq->mu);
    int budget = cq->ready.n;
    pthread_mutex_unlock(&cq->mu);
    if (max > 0 && max < budget)
        budget = max;
    cq->running++;
    while (budget-- > 0) {
        pthread_mutex_lock(&cq->mu);
        struct list_node *n = list_pop(&cq->ready);
        if (n && list_empty(&cq->ready))
            fd_drain(cq);
        pthread_mutex_unlock(&cq->mu);
        if (!n)
            break; /* a callback cancelled what was ready */
        ran += deliver(cq, list_entry(n, struct dbpool_async_req, link));
    }
    cq->running--;
    return ran;
}

int dbpool_checkout_cancel(dbpool_request *handle)
{
    dbpool_lease lease = {NULL, 0};

    if (!handle || !handle->req)
        return set_error(DBPOOL_EINVAL, "dbpool_checkout_cancel: NULL or empty request");
    struct dbpool_async_req *r = handle->req;
    dbpool_cq *cq = r->cq;

    pthread_mutex_lock(&cq->mu);
    int live = r->gen == handle->gen && r->state != REQ_FREE;
    struct dbpool *p = r->pool; /* alive: r holds a reference */
    pthread_mutex_unlock(&cq->mu);
    if (!live)
        return set_error(DBPOOL_ESTALE, "dbpool_checkout_cancel: the request already finished "
                                        "(its callback ran or it was cancelled)");

    /* PENDING -> DONE happens under the pool mutex: hold it while deciding */
    pthread_mutex_lock(&p->mu);
    pthread_mutex_lock(&cq->mu);
    enum req_state st = r->state;
    if (st == REQ_DONE) {
        list_del(&cq->ready, &r->link);
        if (list_empty(&cq->ready))
            fd_drain(cq);
    }
    pthread_mutex_unlock(&cq->mu);
    if (st == REQ_PENDING)
        pool_withdraw_locked(p, &r->w); /* may post others' completions */
    else if (r->w.status == 0)
        lease.slot = r->w.slot; /* handed a connection: give it back */
    pthread_mutex_unlock(&p->mu);

    if (lease.slot) {
        lease.gen = atomic_load_explicit(&lease.slot->gen, memory_order_acquire);
        (void)pool_checkin(&lease, 0);
    }
    finish(cq, r);
    clear_error();
    return 0;
}

enum { ASYNC_SCAN = 256 };

int async_take_head(struct dbpool *p, dbpool_cq *cq, dbpool_checkout_cb cb,
                    int (*ok)(void *arg, void *ctx), void *ctx, void **args, int max)
{
    struct dbpool_async_req *taken[64];
    int n = 0;

    if (max > (int)(sizeof(taken) / sizeof(taken[0])))
        max = (int)(sizeof(taken) / sizeof(taken[0]));
    int64_t now_us = clock_us();
    pthread_mutex_lock(&p->mu);
    /* Same-loop service (own_loop_waiter in pool.c) for a batch: while the
     * oldest waiter has waited less than barge_window, other loops' requests
     * may be passed over to take ours behind them (at most ASYNC_SCAN looked
     * at); past it, only the requests right at the head (strict FIFO). A
     * blocking caller always ends the batch. */
    const struct waiter *h0 = wq_first(&p->waiters);
    int skip = h0 && now_us - h0->sent_us < deadline_ms_to_us(p->cfg.barge_window);
    int seen = 0;
    for (struct waiter *h = wq_first(&p->waiters); h && n < max && seen < ASYNC_SCAN;
         h = wq_next(&p->waiters, h), seen++) {
        if (h->kind != WAITER_ASYNC)
            break;
        struct dbpool_async_req *r = req_of_waiter(h);
        /* r->cq never changes (set when r was made, before it was queued);
         * our requests' cb and arg were set by this thread at submission */
        if (r->cq != cq) {
            if (skip)
                continue;
            break;
        }
        if (r->cb != cb || r->job || !ok(r->arg, ctx))
            break;
        args[n] = r->arg;
        taken[n++] = r;
    }
    for (int i = 0; i < n - 1; i++)
        wq_remove(&p->waiters, &taken[i]->w);
    if (n > 0) /* serves the next head if it is async and a connection idles */
        pool_withdraw_locked(p, &taken[n - 1]->w);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < n; i++)
        finish(cq, taken[i]);
    return n;
}

/* ---- jobs posted by library threads ---------------------------------------- */

struct dbpool_async_req *async_hold(dbpool_cq *cq)
{
    struct dbpool_async_req *r = req_get(cq);

    if (!r)
        return NULL;
    r->pool = NULL;
    r->job = NULL;
    pthread_mutex_lock(&cq->mu);
    r->state = REQ_PENDING;
    cq->outstanding++;
    pthread_mutex_unlock(&cq->mu);
    return r;
}

void async_unhold(struct dbpool_async_req *r)
{
    if (r)
        finish(r->cq, r);
}

void async_post(struct dbpool_async_req *r, void (*fn)(void *), void *arg)
{
    dbpool_cq *cq = r->cq;

    pthread_mutex_lock(&cq->mu);
    r->job = fn;
    r->arg = arg;
    r->state = REQ_DONE;
    list_push_tail(&cq->ready, &r->link);
    fd_raise(cq);
    pthread_mutex_unlock(&cq->mu);
}
