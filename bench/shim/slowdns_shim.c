/*
 * slowdns_shim.c - an LD_PRELOAD getaddrinfo() wrapper that makes one host
 * name slow to resolve, for bench/isolation_stall.c. It sits in bench/shim/
 * so that the glob of bench C files in CMakeLists.txt does not build it as a program.
 *
 *   cc -O2 -fPIC -shared -o slowdns_shim.so bench/shim/slowdns_shim.c -ldl
 *   LD_PRELOAD=./slowdns_shim.so prog ...
 *
 * Environment (read at the first call):
 *   SLOWDNS_HOST  the slow name      (default "slow.dbpool.test")
 *   SLOWDNS_MS    how long it takes  (default 2000)
 *   SLOWDNS_ADDR  what it resolves to (default "127.0.0.1")
 * Every other name goes straight to the real getaddrinfo (dlsym RTLD_NEXT),
 * so it works for libpq (before: on the pool's manager thread) and for the
 * library's own lookup (after: on a worker thread) alike.
 *
 * The bench finds these counters with dlsym(RTLD_DEFAULT, ...): that also
 * tells it the shim is loaded.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

__attribute__((visibility("default"))) atomic_long slowdns_lookups;  /* slow lookups started */
__attribute__((visibility("default"))) atomic_long slowdns_finished; /* ... and finished */
__attribute__((visibility("default"))) atomic_long slowdns_busy_ms;  /* time spent sleeping */
/* When each slow lookup started and ended (CLOCK_MONOTONIC ms; the first
 * SLOWDNS_LOG): entry i is complete once slowdns_logged > i. */
#define SLOWDNS_LOG 4096
__attribute__((visibility("default"))) double slowdns_start_ms[SLOWDNS_LOG];
__attribute__((visibility("default"))) double slowdns_end_ms[SLOWDNS_LOG];
__attribute__((visibility("default"))) atomic_long slowdns_logged;
static atomic_long next_slot;

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

static gai_fn real_gai;
static const char *slow_host = "slow.dbpool.test";
static const char *slow_addr = "127.0.0.1";
static long slow_ms = 2000;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void init(void)
{
    const char *s;

    real_gai = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    if ((s = getenv("SLOWDNS_HOST")) != NULL && *s)
        slow_host = s;
    if ((s = getenv("SLOWDNS_ADDR")) != NULL && *s)
        slow_addr = s;
    if ((s = getenv("SLOWDNS_MS")) != NULL && *s)
        slow_ms = strtol(s, NULL, 10);
}

__attribute__((visibility("default"))) int getaddrinfo(const char *node, const char *service,
                                                       const struct addrinfo *hints,
                                                       struct addrinfo **res)
{
    pthread_once(&once, init);
    if (!real_gai)
        return EAI_SYSTEM;
    if (node && strcmp(node, slow_host) == 0) {
        atomic_fetch_add(&slowdns_lookups, 1);
        double t0 = mono_ms();
        struct timespec ts = {(time_t)(slow_ms / 1000), (slow_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0)
            ;
        long i = atomic_fetch_add(&next_slot, 1);
        if (i < SLOWDNS_LOG) {
            slowdns_start_ms[i] = t0;
            slowdns_end_ms[i] = mono_ms();
            atomic_fetch_add(&slowdns_logged, 1); /* entries may complete out of order */
        }
        atomic_fetch_add(&slowdns_busy_ms, slow_ms);
        atomic_fetch_add(&slowdns_finished, 1);
        node = slow_addr;
    }
    return real_gai(node, service, hints, res);
}
