/* workers.c - on-demand worker threads for blocking work, one lane per target
 * so that a stuck job (a cancel to a black-holed server) delays only its lane. */
#include "workers.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "dbpool.h"
#include "error.h"
#include "list.h"

struct wjob {
    struct list_node node; /* in lane->jobs */
    void (*fn)(void *);
    void (*free_fn)(void *);
    void *arg;
};

/* A lane exists while it has jobs queued or running. */
struct lane {
    struct list_node node;  /* in W.lanes (named lanes only) */
    struct list_node ready; /* in W.ready while it waits for a thread */
    struct list_head jobs;
    char *name; /* NULL: an anonymous lane of one job */
    int running;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* idle workers wait here for a ready lane */
    pthread_cond_t trimmed;
    struct list_head lanes; /* named lanes, to find them by name */
    struct list_head ready; /* lanes with jobs and no thread, FIFO */
    int threads, idle;
    unsigned trim_gen;
} W = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .trimmed = PTHREAD_COND_INITIALIZER,
    .lanes = LIST_HEAD_INIT(W.lanes),
    .ready = LIST_HEAD_INIT(W.ready),
};

static void deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Workers are detached: nobody waits for a stuck one. */
static void *worker_main(void *arg)
{
    struct timespec ts;

    (void)arg;
    pthread_mutex_lock(&W.mu);
    for (;;) {
        unsigned gen = W.trim_gen;
        int timed_out = 0;
        while (list_empty(&W.ready) && !timed_out && gen == W.trim_gen) {
            W.idle++;
            deadline_in(&ts, WORKERS_IDLE_MS);
            timed_out = pthread_cond_timedwait(&W.cond, &W.mu, &ts) != 0;
            W.idle--;
        }
        if (list_empty(&W.ready))
            break; /* idle too long, or trimmed */
        struct lane *l = list_entry(list_pop(&W.ready), struct lane, ready);
        l->running = 1;
        struct list_node *n;
        while ((n = list_pop(&l->jobs)) != NULL) {
            struct wjob *j = list_entry(n, struct wjob, node);
            pthread_mutex_unlock(&W.mu);
            j->fn(j->arg);
            if (j->free_fn)
                j->free_fn(j->arg);
            mem_free(j);
            pthread_mutex_lock(&W.mu);
        }
        if (l->name)
            list_del(&W.lanes, &l->node);
        mem_free(l->name);
        mem_free(l);
    }
    W.threads--;
    pthread_cond_broadcast(&W.trimmed);
    pthread_mutex_unlock(&W.mu);
    return NULL;
}

/* W.mu held. Start one more worker with every signal blocked. */
static int spawn_locked(void)
{
    sigset_t all, old;
    pthread_attr_t attr;
    pthread_t tid;

    if (pthread_attr_init(&attr) != 0)
        return DBPOOL_ESYSTEM;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&tid, &attr, worker_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        return DBPOOL_ESYSTEM;
    W.threads++;
    return 0;
}

int workers_submit(const char *lane, void (*fn)(void *), void *arg, void (*free_fn)(void *))
{
    struct wjob *j = mem_calloc(1, sizeof(*j));
    struct lane *l = NULL;
    int rc = 0;

    if (!j)
        return set_error(DBPOOL_ENOMEM, "out of memory");
    j->fn = fn;
    j->free_fn = free_fn;
    j->arg = arg;
    pthread_mutex_lock(&W.mu);
    if (lane) {
        list_for_each(n, &W.lanes)
        {
            struct lane *c = list_entry(n, struct lane, node);
            if (strcmp(c->name, lane) == 0) {
                l = c;
                break;
            }
        }
    }
    int fresh = l == NULL;
    if (fresh) {
        l = mem_calloc(1, sizeof(*l));
        if (!l || (lane && !(l->name = mem_strdup(lane)))) {
            mem_free(l);
            rc = set_error(DBPOOL_ENOMEM, "out of memory");
            goto out;
        }
        list_init(&l->jobs);
    }
    if (fresh && W.idle == 0 && W.threads < WORKERS_MAX && (rc = spawn_locked()) != 0) {
        if (W.threads == 0) { /* nobody could ever run it */
            mem_free(l->name);
            mem_free(l);
            set_error(rc, "cannot start a worker thread");
            goto out;
        }
        rc = 0; /* a running worker takes it later */
    }
    list_push_tail(&l->jobs, &j->node);
    j = NULL;
    if (fresh) {
        if (l->name)
            list_push_tail(&W.lanes, &l->node);
        list_push_tail(&W.ready, &l->ready);
        pthread_cond_signal(&W.cond);
    }
out:
    pthread_mutex_unlock(&W.mu);
    mem_free(j);
    return rc;
}

int workers_busy(void)
{
    pthread_mutex_lock(&W.mu);
    int n = W.threads - W.idle;
    pthread_mutex_unlock(&W.mu);
    return n;
}

void workers_trim(void)
{
    pthread_mutex_lock(&W.mu);
    W.trim_gen++;
    pthread_cond_broadcast(&W.cond);
    while (W.idle > 0)
        pthread_cond_wait(&W.trimmed, &W.mu);
    pthread_mutex_unlock(&W.mu);
}

void workers_atfork_prepare(void)
{
    pthread_mutex_lock(&W.mu);
}

void workers_atfork_parent(void)
{
    pthread_mutex_unlock(&W.mu);
}

void workers_atfork_child(void)
{
    /* the threads do not exist in the child; their jobs are not run and their
     * memory is not touched (it may be in any state) */
    pthread_mutex_unlock(&W.mu); /* taken by this thread in workers_atfork_prepare */
    pthread_cond_init(&W.cond, NULL);
    pthread_cond_init(&W.trimmed, NULL);
    list_init(&W.lanes);
    list_init(&W.ready);
    W.threads = W.idle = 0;
}
