/*
 * demo.c - what `make demo` runs: a pool of 4 PostgreSQL connections shared by
 * 16 threads, then a look at what the pool did.
 *
 *   demo "host=127.0.0.1 port=5432 dbname=postgres"
 *
 * It shows the three things a pool is for: many callers share few
 * connections (checkouts >> connects), a caller that leaves a transaction
 * open does not poison the next one (check-in rolls back), and a connection
 * killed behind the pool's back is replaced without anyone noticing.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dbpool_pg.h"

#define THREADS 16
#define QUERIES 200

static dbpool *pool;

static void *worker(void *arg)
{
    int *failed = arg;

    for (int i = 0; i < QUERIES; i++) {
        dbpool_lease lease;
        if (dbpool_checkout(pool, DBPOOL_DEFAULT_TIMEOUT, &lease) != 0) {
            fprintf(stderr, "checkout: %s\n", dbpool_last_error());
            (*failed)++;
            continue;
        }
        PGresult *r = PQexec(dbpool_pg_conn(&lease), "SELECT count(*) FROM pg_class");
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            (*failed)++;
        PQclear(r);
        dbpool_checkin(&lease);
    }
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int wait_idle(int want, double seconds)
{
    double until = now_s() + seconds;
    dbpool_stats st;

    while (now_s() < until) {
        dbpool_stats_get(pool, &st);
        if (st.idle >= want)
            return 1;
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *conninfo = argc > 1 ? argv[1] : getenv("DATABASE_URL");
    char shown[512];
    dbpool_config cfg;
    dbpool_stats st;
    pthread_t t[THREADS];
    int failed[THREADS] = {0}, total_failed = 0;

    if (!conninfo) {
        fprintf(stderr, "usage: demo <conninfo or URI>   (or set DATABASE_URL)\n");
        return 2;
    }
    dbpool_config_init(&cfg);
    cfg.name = "demo";
    cfg.size = 4;
    cfg.idle_interval = 200; /* ping idle connections often, for the demo */
    cfg.after_connect = "SET application_name = 'dbpool-demo'";
    if (dbpool_pg_open(&pool, conninfo, &cfg) != 0) {
        fprintf(stderr, "dbpool_pg_open: %s\n", dbpool_last_error());
        return 1;
    }
    if (dbpool_pg_redact(conninfo, shown, sizeof(shown)) == 0)
        printf("pool \"demo\" of %d connections to: %s\n", cfg.size, shown);
    if (!wait_idle(cfg.size, 10)) {
        dbpool_stats_get(pool, &st);
        fprintf(stderr, "pool did not come up: %s\n", st.last_error);
        dbpool_close(pool);
        return 1;
    }

    /* 1. many callers, few connections */
    double t0 = now_s();
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, &failed[i]);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total_failed += failed[i];
    }
    double dt = now_s() - t0;
    dbpool_stats_get(pool, &st);
    printf("1. %d threads ran %d queries through %d connections in %.2f s (%.0f/s), "
           "%d failed; %llu checkouts, %llu connects\n",
           THREADS, THREADS * QUERIES, cfg.size, dt, THREADS * QUERIES / dt, total_failed,
           (unsigned long long)st.checkouts, (unsigned long long)st.connects);

    /* 2. a transaction left open is rolled back at check-in */
    dbpool_lease lease;
    if (dbpool_checkout(pool, DBPOOL_DEFAULT_TIMEOUT, &lease) == 0) {
        PQclear(PQexec(dbpool_pg_conn(&lease), "BEGIN"));
        PQclear(PQexec(dbpool_pg_conn(&lease), "SET LOCAL statement_timeout = 1"));
        dbpool_checkin(&lease);
        dbpool_stats_get(pool, &st);
        printf("2. a caller checked in inside a transaction: rolled back (%llu rollback)\n",
               (unsigned long long)st.rollbacks);
    }

    /* 3. a connection killed behind the pool's back is replaced */
    if (dbpool_checkout(pool, DBPOOL_DEFAULT_TIMEOUT, &lease) == 0) {
        PGconn *c = dbpool_pg_conn(&lease);
        char sql[128];
        snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE application_name = 'dbpool-demo' AND pid <> %d",
                 PQbackendPID(c));
        PGresult *r = PQexec(c, sql);
        int killed = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : 0;
        PQclear(r);
        dbpool_checkin(&lease);
        double until = now_s() + 10;
        do { /* the idle ping finds them within 2 idle intervals */
            struct timespec ts = {0, 20 * 1000000};
            nanosleep(&ts, NULL);
            dbpool_stats_get(pool, &st);
        } while ((st.ping_failures < (uint64_t)killed || st.idle < cfg.size) && now_s() < until);
        printf("3. killed %d idle backend(s) with pg_terminate_backend: %llu ping "
               "failure(s) seen, pool has %d idle connections again\n",
               killed, (unsigned long long)st.ping_failures, st.idle);
    }

    dbpool_stats_get(pool, &st);
    printf("pool state: %s; connects %llu, disconnects %llu, pings %llu\n",
           dbpool_state_name(st.state), (unsigned long long)st.connects,
           (unsigned long long)st.disconnects, (unsigned long long)st.pings);
    dbpool_close(pool);
    return total_failed ? 1 : 0;
}
