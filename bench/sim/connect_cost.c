/* connect_cost.c - what a connect and a refused connect cost this machine's
 * server, for the simulator's server model (bench/sim/sim.c, bench/RESULTS.md (j)).
 *
 *   connect_cost [--threads N] [--seconds S] [--fill] "<conninfo>"
 *
 * N threads open and close connections (PQconnectdb + SELECT 1 + PQfinish)
 * for S seconds; prints connects/s and their mean time. With --fill, first
 * holds connections until the server refuses (53300), so every connect of
 * the threads is refused: refusals/s and their mean time. Run with 1, 2, 4,
 * 16, 32 threads: a channel of K parallel connects stops gaining at K
 * threads, processor sharing at the number of CPUs.
 *
 *   connect_cost --churn [--seconds S] "<conninfo>"
 *
 * How long a closed connection's backend keeps its slot: fills the server,
 * then closes one connection and at once connects again, retrying without
 * a pause while the server refuses; prints how many attempts were refused
 * per close and the time from the close to the accepted connect. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

static const char *conninfo;
static double seconds = 5;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct worker {
    pthread_t th;
    long ok, refused, other;
    int64_t ok_us, refused_us;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    int64_t end = now_us() + (int64_t)(seconds * 1e6);
    while (now_us() < end) {
        int64_t t = now_us();
        PGconn *c = PQconnectdb(conninfo);
        int64_t d = now_us() - t;
        if (PQstatus(c) == CONNECTION_OK) {
            PQclear(PQexec(c, "SELECT 1"));
            w->ok++;
            w->ok_us += d;
        } else if (strstr(PQerrorMessage(c), "too many")) {
            w->refused++;
            w->refused_us += d;
        } else {
            w->other++;
        }
        PQfinish(c);
    }
    return NULL;
}

/* close one of the held connections, reconnect at once until accepted */
static void churn(PGconn **held, int nheld)
{
    long closes = 0, refused = 0, zero = 0;
    double total_ms = 0, max_ms = 0;
    int64_t end = now_us() + (int64_t)(seconds * 1e6);
    for (int i = 0; now_us() < end; i = (i + 1) % nheld, closes++) {
        PQfinish(held[i]);
        int64_t t = now_us();
        long r = 0;
        for (;;) {
            held[i] = PQconnectdb(conninfo);
            if (PQstatus(held[i]) == CONNECTION_OK)
                break;
            PQfinish(held[i]);
            r++;
        }
        double d = (double)(now_us() - t) / 1000.0;
        total_ms += d;
        max_ms = d > max_ms ? d : max_ms;
        refused += r;
        zero += r == 0;
    }
    printf("churn closes=%ld refused_per_close=%.2f closes_not_refused=%.2f "
           "close_to_connected_ms=%.2f max_ms=%.1f\n",
           closes, (double)refused / (double)closes, (double)zero / (double)closes,
           total_ms / (double)closes, max_ms);
}

int main(int argc, char **argv)
{
    int threads = 1, fill = 0, churning = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--fill"))
            fill = 1;
        else if (!strcmp(argv[i], "--churn"))
            fill = churning = 1;
        else
            conninfo = argv[i];
    }
    if (!conninfo || threads < 1 || threads > 256) {
        fprintf(stderr,
                "usage: connect_cost [--threads N] [--seconds S] [--fill | --churn] CONNINFO\n");
        return 2;
    }
    static PGconn *held[10000];
    int nheld = 0;
    while (fill && nheld < 10000) {
        PGconn *c = PQconnectdb(conninfo);
        if (PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            break;
        }
        held[nheld++] = c;
    }
    if (churning) {
        if (nheld > 0)
            churn(held, nheld);
        for (int i = 0; i < nheld; i++)
            PQfinish(held[i]);
        return 0;
    }
    struct worker *w = calloc((size_t)threads, sizeof(*w));
    for (int i = 0; i < threads; i++)
        pthread_create(&w[i].th, NULL, work, &w[i]);
    long ok = 0, refused = 0, other = 0;
    int64_t ok_us = 0, refused_us = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].th, NULL);
        ok += w[i].ok;
        refused += w[i].refused;
        other += w[i].other;
        ok_us += w[i].ok_us;
        refused_us += w[i].refused_us;
    }
    printf("threads=%d held=%d connects_per_s=%.1f connect_ms=%.2f refusals_per_s=%.1f "
           "refuse_ms=%.2f other=%ld\n",
           threads, nheld, ok / seconds, ok ? ok_us / 1000.0 / (double)ok : 0.0, refused / seconds,
           refused ? refused_us / 1000.0 / (double)refused : 0.0, other);
    for (int i = 0; i < nheld; i++)
        PQfinish(held[i]);
    free(w);
    return 0;
}
