/* schedlag.c - the scheduler-lateness sampler of schedlag.h. */
#include "schedlag.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "pgserver.h"

static atomic_llong worst;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int started = -1;

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

int pgt_sched_start(void)
{
    pthread_once(&once, start);
    return started;
}

void pgt_sched_reset(void)
{
    atomic_store(&worst, 0);
}

int64_t pgt_sched_late(void)
{
    return (int64_t)atomic_load(&worst);
}
