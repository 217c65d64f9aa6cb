/* schedlag.c - the scheduler-lateness measures of schedlag.h. */
#define _GNU_SOURCE
#include "schedlag.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pgserver.h"

#define MAX_TRACKED 16

static atomic_llong worst;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int started = -1;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    long tid;
    int64_t base_ns; /* run delay when tracking began */
} tracked[MAX_TRACKED];
static int ntracked;

static void *sampler(void *arg)
{
    (void)arg;
    for (;;) {
        int64_t t0 = pgt_now_ms();
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
        long long late = (long long)(pgt_now_ms() - t0 - 5);
        if (late > atomic_load(&worst))
            atomic_store(&worst, late);
    }
    return NULL;
}

static void start(void)
{
    pthread_t th;
    if (pthread_create(&th, NULL, sampler, NULL) == 0) {
        pthread_detach(th);
        started = 0;
    }
}

/* Thread tid's time spent waiting on a run queue (ns), or -1 (no schedstat,
 * or the thread has exited). */
static int64_t run_delay_ns(long tid)
{
    char path[64];
    unsigned long long on_cpu, waiting;
    snprintf(path, sizeof path, "/proc/self/task/%ld/schedstat", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = fscanf(f, "%llu %llu", &on_cpu, &waiting);
    fclose(f);
    return n == 2 ? (int64_t)waiting : -1;
}

int pgt_sched_start(void)
{
    pthread_once(&once, start);
    return started;
}

void pgt_sched_reset(void)
{
    atomic_store(&worst, 0);
    pthread_mutex_lock(&mu);
    ntracked = 0;
    pthread_mutex_unlock(&mu);
}

void pgt_sched_track_self(void)
{
    long tid = (long)syscall(SYS_gettid);
    pthread_mutex_lock(&mu);
    int known = 0;
    for (int i = 0; i < ntracked; i++)
        known |= tracked[i].tid == tid;
    if (!known && ntracked < MAX_TRACKED) {
        int64_t d = run_delay_ns(tid);
        if (d >= 0) {
            tracked[ntracked].tid = tid;
            tracked[ntracked].base_ns = d;
            ntracked++;
        }
    }
    pthread_mutex_unlock(&mu);
}

int64_t pgt_sched_late(void)
{
    int64_t delay_ns = 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < ntracked; i++) {
        int64_t d = run_delay_ns(tracked[i].tid);
        if (d > tracked[i].base_ns)
            delay_ns += d - tracked[i].base_ns;
    }
    pthread_mutex_unlock(&mu);
    return (int64_t)atomic_load(&worst) + delay_ns / 1000000;
}
