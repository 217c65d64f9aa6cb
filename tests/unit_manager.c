/* unit_manager.c - the manager thread's scheduling (src/core/manager.c) with
 * a bare client: a deadline set while the client's service() runs is not
 * lost. The service cannot see a deadline set after it looked; the due time
 * it returns must not hide it (manager_poke_before compares with next_due). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "clock.h"
#include "manager.h"

struct probe {
    struct mclient mc; /* first: service() gets &mc */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;       /* service() calls so far */
    int in_service;  /* the second call is inside service(), held */
    int go;          /* the test lets it return */
    int released;
};

static int64_t probe_service(struct mclient *c, int64_t now)
{
    struct probe *p = (struct probe *)c;

    pthread_mutex_lock(&p->mu);
    int n = ++p->calls;
    if (n == 2) {
        /* held inside service() until the test has set its deadline */
        p->in_service = 1;
        pthread_cond_broadcast(&p->cv);
        while (!p->go)
            pthread_cond_wait(&p->cv, &p->mu);
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    /* first call: due again at once; later calls: nothing due for a minute,
     * as a service that did not see the new deadline would say */
    return n == 1 ? now : now + 60000;
}

static void probe_release(struct mclient *c)
{
    struct probe *p = (struct probe *)c;

    pthread_mutex_lock(&p->mu);
    p->released = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Wait (bounded) until *flag >= want; returns the value seen. */
static int wait_for(struct probe *p, int *flag, int want, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    while (*flag < want && pthread_cond_timedwait(&p->cv, &p->mu, &ts) == 0)
        ;
    int v = *flag;
    pthread_mutex_unlock(&p->mu);
    return v;
}

static void test_deadline_set_during_service_is_kept(void **state)
{
    struct probe p;

    (void)state;
    memset(&p, 0, sizeof p);
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    p.mc.service = probe_service;
    p.mc.release = probe_release;
    assert_int_equal(manager_attach(&p.mc), 0);

    assert_int_equal(wait_for(&p, &p.in_service, 1, 5000), 1);
    /* a deadline 50 ms out, set while service() runs and after it looked */
    manager_poke_before(&p.mc, clock_ms() + 50);
    pthread_mutex_lock(&p.mu);
    p.go = 1;
    pthread_cond_broadcast(&p.cv);
    pthread_mutex_unlock(&p.mu);
    /* served again for it, not a minute later (5 s: bounded, not a speed test) */
    assert_true(wait_for(&p, &p.calls, 3, 5000) >= 3);

    manager_detach(&p.mc);
    manager_release(&p.mc);
    assert_int_equal(wait_for(&p, &p.released, 1, 5000), 1);
    pthread_cond_destroy(&p.cv);
    pthread_mutex_destroy(&p.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadline_set_during_service_is_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
