/* bench.c - `dbpool bench`: pgbench-style load through a dbpool pool, or
 * with --direct through one dedicated libpq connection per client thread
 * (the baseline), with live progress and a final report (text or JSON). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "hist.h"
#include "workload.h"

static const char *CMD = "bench";

/* What can go wrong with one transaction. */
enum err_kind {
    E_TIMEOUT = 0, /* checkout: deadline reached in the queue */
    E_DROPPED,     /* checkout: dropped by the CoDel rule */
    E_UNAVAILABLE, /* checkout: pool DOWN/STOPPED, failed fast */
    E_BUSY,        /* checkout: nothing idle and no queueing */
    E_CHECKOUT,    /* checkout: anything else */
    E_SQL,         /* the server returned an error */
    E_CONNLOST,    /* the connection broke during the query */
    E_NKINDS
};

static const char *const err_names[E_NKINDS] = {"timeout",  "dropped", "unavailable",    "busy",
                                                "checkout", "sql",     "connection_lost"};

struct bench;

struct client {
    lat_hist lat;   /* successful transactions: start of checkout to end of check-in */
    lat_hist queue; /* time in dbpool_checkout (pool mode) */
    _Atomic uint64_t ok;
    _Atomic uint64_t err[E_NKINDS];
    struct bench *b;
    PGconn *direct; /* --direct: this client's own connection */
    uint64_t rng;
    pthread_t th;
    int id;
};

struct bench {
    /* options */
    const char *conninfo;
    char *shown; /* conninfo without the password, for display */
    int clients, pool_size, direct, json;
    int64_t duration_ms, progress_ms, timeout_ms;
    long rows;
    const char *metrics_path;
    out_file metrics; /* opened before the run: an unwritable path fails at once */
    workload wl;
    dbpool_config cfg;

    /* run */
    dbpool *pool;
    struct client **cl;
    pthread_mutex_t go_mu; /* start gate: clients wait until `go` */
    pthread_cond_t go_cv;
    int go;
    _Atomic int64_t end_ns; /* transactions finishing later are not counted */
    int64_t start_ns;
    pthread_mutex_t msg_mu;
    char first_msg[E_NKINDS][200]; /* first message seen per error kind */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: dbpool bench [options] [conninfo]\n"
               "\n"
               "Run a load through a dbpool pool like pgbench: N client threads, each\n"
               "checking a connection out, running one transaction, checking it in, for a\n"
               "fixed time. --direct runs the same load with one dedicated libpq connection\n"
               "per client (no pool) as the baseline.\n"
               "\n"
               "options:\n"
               "  -c, --clients N       client threads (default 8)\n"
               "  -p, --pool-size N     connections in the pool (default: --clients)\n"
               "  -T, --duration D      how long to run: 10, 10s, 500ms, 2m (default 10s)\n"
               "  -w, --workload W      what each transaction runs (default select1):\n"
               "                          select1        SELECT 1\n"
               "                          sleep:<ms>     SELECT pg_sleep(<ms>/1000)\n"
               "                          rw[:<read %%>]  80%% (or <read %%>) primary-key reads\n"
               "                                         and the rest updates on table\n"
               "                                         " WL_BENCH_TABLE " (created if missing)\n"
               "                          @FILE          the SQL in FILE, sent as one query\n"
               "  -f, --file FILE       same as --workload @FILE\n"
               "      --rows N          rows in " WL_BENCH_TABLE " for rw (default 100000)\n"
               "      --direct          no pool: one libpq connection per client thread\n"
               "  -P, --progress D      progress line every D (default 1s; 0 = none). On a\n"
               "                        terminal it updates in place, otherwise one line each\n"
               "      --timeout D       checkout timeout (default: the pool's, 15s)\n"
               "      --set NAME=VALUE  set any pool option (see dbpool.h), repeatable,\n"
               "                        e.g. --set lifo=true --set queue_target=20ms\n"
               "      --json            final report as JSON on stdout\n"
               "      --metrics FILE    write the pool's Prometheus metrics to FILE at the end\n"
               "  -h, --help            this text\n"
               "\n"
               DATABASE_HELP DURATION_HELP
               "Latency is measured from the start of the checkout to the end of the\n"
               "check-in; queue time is the time spent in dbpool_checkout(). Transactions\n"
               "still running when the time is up are not counted.\n"
               "Exit status: 0 the run completed, 1 could not connect / set up or no\n"
               "transaction succeeded, 2 bad command line.\n");
}

/* ---- the client threads --------------------------------------------------- */

static enum err_kind checkout_kind(int rc)
{
    switch (rc) {
    case DBPOOL_ETIMEDOUT:
        return E_TIMEOUT;
    case DBPOOL_EDROPPED:
        return E_DROPPED;
    case DBPOOL_EUNAVAILABLE:
        return E_UNAVAILABLE;
    case DBPOOL_EBUSY:
        return E_BUSY;
    default:
        return E_CHECKOUT;
    }
}

static void note_error(struct bench *b, enum err_kind k, const char *msg)
{
    pthread_mutex_lock(&b->msg_mu);
    if (!b->first_msg[k][0]) {
        snprintf(b->first_msg[k], sizeof(b->first_msg[k]), "%s", msg);
        size_t n = strlen(b->first_msg[k]);
        while (n && (b->first_msg[k][n - 1] == '\n' || b->first_msg[k][n - 1] == ' '))
            b->first_msg[k][--n] = '\0';
    }
    pthread_mutex_unlock(&b->msg_mu);
}

static void bump(_Atomic uint64_t *a)
{
    /* one writer per counter */
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    struct bench *b = c->b;
    char sqlbuf[160];

    pthread_mutex_lock(&b->go_mu);
    while (!b->go)
        pthread_cond_wait(&b->go_cv, &b->go_mu);
    pthread_mutex_unlock(&b->go_mu);
    for (;;) {
        int64_t end = atomic_load_explicit(&b->end_ns, memory_order_relaxed);
        int64_t t0 = now_ns(), t1;
        if (t0 >= end)
            break;
        PGconn *conn;
        dbpool_lease lease;
        if (b->pool) {
            int rc = dbpool_checkout(b->pool, b->timeout_ms, &lease);
            t1 = now_ns();
            if (rc != 0) {
                enum err_kind k = checkout_kind(rc);
                if (t1 < atomic_load_explicit(&b->end_ns, memory_order_relaxed)) {
                    bump(&c->err[k]);
                    note_error(b, k, dbpool_last_error());
                }
                if (rc == DBPOOL_EUNAVAILABLE || rc == DBPOOL_ECLOSED || rc == DBPOOL_EBUSY)
                    sleep_ms(rc == DBPOOL_EBUSY ? 1 : 10, NULL); /* do not spin */
                continue;
            }
            conn = dbpool_pg_conn(&lease);
        } else {
            t1 = t0;
            conn = c->direct;
        }
        const char *sql = workload_next(&b->wl, &c->rng, sqlbuf, sizeof(sqlbuf));
        query_result q = run_blocking(conn, sql);
        if (q != Q_OK)
            note_error(b, q == Q_SQL_ERROR ? E_SQL : E_CONNLOST, PQerrorMessage(conn));
        if (b->pool) {
            if (q == Q_CONN_LOST)
                (void)dbpool_discard(&lease);
            else
                (void)dbpool_checkin(&lease);
        } else if (q == Q_CONN_LOST) {
            PQreset(conn); /* blocking reconnect: the baseline has nothing better */
        }
        int64_t t2 = now_ns();
        if (t2 > atomic_load_explicit(&b->end_ns, memory_order_relaxed))
            break; /* finished after the end: not counted */
        if (q == Q_OK) {
            lh_record(&c->lat, t2 - t0);
            if (b->pool)
                lh_record(&c->queue, t1 - t0);
            bump(&c->ok);
        } else {
            bump(&c->err[q == Q_SQL_ERROR ? E_SQL : E_CONNLOST]);
        }
    }
    return NULL;
}

/* ---- totals ------------------------------------------------------------------- */

struct totals {
    uint64_t ok, err[E_NKINDS], errors;
    lat_snap *lat, *queue;
    /* fairness between the clients: a pool that lets some callers barge can
     * starve others while the total looks fine */
    uint64_t min_ok; /* fewest successful transactions of one client */
    int starved;     /* clients with none */
    double jain;     /* Jain's index over per-client counts: 1 = all equal */
};

static void totals_take(struct bench *b, struct totals *t)
{
    t->ok = 0;
    t->errors = 0;
    memset(t->err, 0, sizeof(t->err));
    memset(t->lat, 0, sizeof(*t->lat));
    memset(t->queue, 0, sizeof(*t->queue));
    t->min_ok = UINT64_MAX;
    t->starved = 0;
    double sum = 0, sum_sq = 0;
    for (int i = 0; i < b->clients; i++) {
        struct client *c = b->cl[i];
        uint64_t ok = atomic_load_explicit(&c->ok, memory_order_relaxed);
        t->ok += ok;
        if (ok < t->min_ok)
            t->min_ok = ok;
        t->starved += ok == 0;
        sum += (double)ok;
        sum_sq += (double)ok * (double)ok;
        for (int k = 0; k < E_NKINDS; k++)
            t->err[k] += atomic_load_explicit(&c->err[k], memory_order_relaxed);
        lh_add_to(t->lat, &c->lat);
        lh_add_to(t->queue, &c->queue);
    }
    if (b->clients == 0)
        t->min_ok = 0;
    t->jain = sum_sq > 0 ? sum * sum / ((double)b->clients * sum_sq) : 0;
    for (int k = 0; k < E_NKINDS; k++)
        t->errors += t->err[k];
}

static int totals_alloc(struct totals *t)
{
    t->lat = calloc(1, sizeof(*t->lat));
    t->queue = calloc(1, sizeof(*t->queue));
    return t->lat && t->queue ? 0 : -1;
}

static void totals_free(struct totals *t)
{
    free(t->lat);
    free(t->queue);
}

static double ms(int64_t ns)
{
    return (double)ns / 1e6;
}

/* ---- progress --------------------------------------------------------------- */

static void progress_line(struct bench *b, struct totals *cur, struct totals *prev, lat_snap *dl,
                          lat_snap *dq, double t_s, double dt_s, int tty)
{
    char line[320];
    int n;

    lh_diff(dl, cur->lat, prev->lat);
    lh_diff(dq, cur->queue, prev->queue);
    double tps = dt_s > 0 ? (double)(cur->ok - prev->ok) / dt_s : 0;
    n = snprintf(line, sizeof(line), "%6.1f s  %9.1f tps  lat p50 %.3f p99 %.3f ms", t_s, tps,
                 ms(lh_quantile(dl, 0.5)), ms(lh_quantile(dl, 0.99)));
    if (b->pool && n > 0 && (size_t)n < sizeof(line))
        n += snprintf(line + n, sizeof(line) - (size_t)n, "  queue p99 %.3f ms",
                      ms(lh_quantile(dq, 0.99)));
    if (n > 0 && (size_t)n < sizeof(line))
        n += snprintf(line + n, sizeof(line) - (size_t)n, "  errors %llu",
                      (unsigned long long)cur->errors);
    if (b->pool && n > 0 && (size_t)n < sizeof(line)) {
        dbpool_stats st;
        if (dbpool_stats_get(b->pool, &st) == 0)
            snprintf(line + n, sizeof(line) - (size_t)n, "  pool %s busy %d/%d waiting %d",
                     dbpool_state_name(st.state), st.busy, st.size, st.waiting);
    }
    if (tty)
        fprintf(stderr, "\r\033[K%s", line);
    else
        fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

/* ---- report ------------------------------------------------------------------ */

static void text_hist(const char *label, const lat_snap *s)
{
    printf("%-15s avg %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", label, lh_mean(s) / 1e6,
           ms(lh_quantile(s, 0.5)), ms(lh_quantile(s, 0.9)), ms(lh_quantile(s, 0.99)),
           ms((int64_t)s->max_ns));
}

static void json_hist(const char *key, const lat_snap *s)
{
    printf("  \"%s\": {\"count\": %llu, \"avg\": %.4f, \"p50\": %.4f, \"p90\": %.4f, "
           "\"p99\": %.4f, \"max\": %.4f}",
           key, (unsigned long long)s->count, lh_mean(s) / 1e6, ms(lh_quantile(s, 0.5)),
           ms(lh_quantile(s, 0.9)), ms(lh_quantile(s, 0.99)), ms((int64_t)s->max_ns));
}

static void report_text(struct bench *b, struct totals *t, double secs, const dbpool_stats *st)
{
    int conns = b->direct ? b->clients : b->pool_size;

    printf("dbpool bench: %s, %d clients, %s, %d server connections, %.1f s\n", b->wl.name,
           b->clients, b->direct ? "direct (no pool)" : "through the pool", conns, secs);
    printf("database        %s\n", b->shown);
    printf("transactions    %llu ok, %llu failed\n", (unsigned long long)t->ok,
           (unsigned long long)t->errors);
    printf("throughput      %.1f tps\n", secs > 0 ? (double)t->ok / secs : 0.0);
    text_hist("latency (ms)", t->lat);
    if (!b->direct)
        text_hist("queue (ms)", t->queue);
    printf("fairness        Jain %.3f, fewest per client %llu, clients with none %d\n", t->jain,
           (unsigned long long)t->min_ok, t->starved);
    printf("errors         ");
    for (int k = 0; k < E_NKINDS; k++)
        if (!b->direct || k >= E_SQL)
            printf(" %s %llu", err_names[k], (unsigned long long)t->err[k]);
    printf("\n");
    for (int k = 0; k < E_NKINDS; k++)
        if (t->err[k] && b->first_msg[k][0])
            printf("  first %s: %s\n", err_names[k], b->first_msg[k]);
    if (st) {
        printf("pool            checkouts %llu, connects %llu, disconnects %llu, "
               "drops %llu, timeouts %llu\n",
               (unsigned long long)st->checkouts, (unsigned long long)st->connects,
               (unsigned long long)st->disconnects, (unsigned long long)st->drops,
               (unsigned long long)st->timeouts);
        printf("pool histograms queue p50 %.3f p99 %.3f max %.3f ms, hold p50 %.3f p99 %.3f "
               "max %.3f ms (upper bucket edges)\n",
               st->queue_time.p50_us / 1e3, st->queue_time.p99_us / 1e3,
               st->queue_time.max_us / 1e3, st->hold_time.p50_us / 1e3, st->hold_time.p99_us / 1e3,
               st->hold_time.max_us / 1e3);
    }
}

static void report_json(struct bench *b, struct totals *t, double secs, const dbpool_stats *st)
{
    char when[64];

    local_timestamp(when, sizeof(when));
    printf("{\n  \"command\": \"bench\",\n  \"date\": ");
    json_str(stdout, when);
    printf(",\n  \"database\": ");
    json_str(stdout, b->shown);
    printf(",\n  \"workload\": ");
    json_str(stdout, b->wl.name);
    printf(",\n  \"mode\": \"%s\",\n  \"clients\": %d,\n  \"pool_size\": %d,\n"
           "  \"server_connections\": %d,\n  \"duration_s\": %.3f,\n"
           "  \"transactions\": %llu,\n  \"failed\": %llu,\n  \"tps\": %.1f,\n",
           b->direct ? "direct" : "pool", b->clients, b->direct ? 0 : b->pool_size,
           b->direct ? b->clients : b->pool_size, secs, (unsigned long long)t->ok,
           (unsigned long long)t->errors, secs > 0 ? (double)t->ok / secs : 0.0);
    json_hist("latency_ms", t->lat);
    printf(",\n");
    if (!b->direct) {
        json_hist("queue_ms", t->queue);
        printf(",\n");
    }
    printf("  \"fairness\": {\"jain\": %.4f, \"min_client_transactions\": %llu, "
           "\"starved_clients\": %d},\n",
           t->jain, (unsigned long long)t->min_ok, t->starved);
    printf("  \"errors\": {");
    for (int k = 0; k < E_NKINDS; k++)
        printf("%s\"%s\": %llu", k ? ", " : "", err_names[k], (unsigned long long)t->err[k]);
    printf("}");
    if (st) {
        printf(",\n  \"pool\": {\"state\": \"%s\", \"checkouts\": %llu, \"connects\": %llu, "
               "\"connect_failures\": %llu, \"disconnects\": %llu, \"drops\": %llu, "
               "\"timeouts\": %llu,\n"
               "    \"queue_time_us\": {\"p50\": %lld, \"p90\": %lld, \"p99\": %lld, "
               "\"max\": %lld},\n"
               "    \"hold_time_us\": {\"p50\": %lld, \"p90\": %lld, \"p99\": %lld, "
               "\"max\": %lld}}",
               dbpool_state_name(st->state), (unsigned long long)st->checkouts,
               (unsigned long long)st->connects, (unsigned long long)st->connect_failures,
               (unsigned long long)st->disconnects, (unsigned long long)st->drops,
               (unsigned long long)st->timeouts, (long long)st->queue_time.p50_us,
               (long long)st->queue_time.p90_us, (long long)st->queue_time.p99_us,
               (long long)st->queue_time.max_us, (long long)st->hold_time.p50_us,
               (long long)st->hold_time.p90_us, (long long)st->hold_time.p99_us,
               (long long)st->hold_time.max_us);
    }
    printf("\n}\n");
}

/* Write the metrics into the file opened before the run. Prints why not. */
static int write_metrics(struct bench *b)
{
    size_t need = 0;
    char probe[1], shown[ARG_SHOWN_LEN];

    (void)dbpool_stats_prometheus(&b->pool, 1, probe, 0, &need);
    char *buf = malloc(need + 256);
    if (!buf || dbpool_stats_prometheus(&b->pool, 1, buf, need + 256, NULL) != 0) {
        fail_msg(CMD, "cannot format the metrics: %s", buf ? dbpool_last_error() : "out of memory");
        free(buf);
        return -1;
    }
    FILE *f = out_stream(&b->metrics);
    int rc = f && fputs(buf, f) >= 0 ? 0 : -1;
    if (f && out_close(f) != 0)
        rc = -1;
    if (rc != 0)
        fail_msg(CMD, "cannot write metrics to %s: %s",
                 arg_shown(b->metrics_path, shown, sizeof(shown)), strerror(errno));
    free(buf);
    return rc;
}

/* ---- setup ---------------------------------------------------------------------- */

static int parse_args(struct bench *b, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"clients", required_argument, NULL, 'c'},  {"pool-size", required_argument, NULL, 'p'},
        {"duration", required_argument, NULL, 'T'}, {"workload", required_argument, NULL, 'w'},
        {"file", required_argument, NULL, 'f'},     {"rows", required_argument, NULL, 'r'},
        {"direct", no_argument, NULL, 'D'},         {"progress", required_argument, NULL, 'P'},
        {"timeout", required_argument, NULL, 't'},  {"set", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},           {"metrics", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    const char *wspec = "select1";
    char filespec[1024], sa[ARG_SHOWN_LEN];
    long v;
    int c, rc;

    b->clients = 8;
    b->pool_size = 0;
    b->duration_ms = 10000;
    b->progress_ms = 1000;
    b->timeout_ms = DBPOOL_DEFAULT_TIMEOUT;
    b->rows = 100000;
    b->metrics.fd = -1;
    dbpool_config_init(&b->cfg);
    b->cfg.name = "bench";
    b->cfg.log_cb = cli_log_cb;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+:c:p:T:w:f:P:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (parse_int_range(optarg, 1, 4096, &v) != 0)
                return usage_error(CMD, "--clients wants 1..4096, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            b->clients = (int)v;
            break;
        case 'p':
            if (parse_int_range(optarg, 1, 10000, &v) != 0)
                return usage_error(CMD, "--pool-size wants 1..10000, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            b->pool_size = (int)v;
            break;
        case 'T':
            if (parse_duration_ms(optarg, &b->duration_ms) != 0 || b->duration_ms < 1)
                return usage_error(CMD, "--duration wants a duration like 10s, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            break;
        case 'w':
            wspec = optarg;
            break;
        case 'f':
            snprintf(filespec, sizeof(filespec), "@%s", optarg);
            wspec = filespec;
            break;
        case 'r':
            if (parse_int_range(optarg, 1, 100000000, &v) != 0)
                return usage_error(CMD, "--rows wants 1..100000000, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            b->rows = v;
            break;
        case 'D':
            b->direct = 1;
            break;
        case 'P':
            if (parse_duration_ms(optarg, &b->progress_ms) != 0)
                return usage_error(CMD, "--progress wants a duration like 1s, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            break;
        case 't':
            if (parse_duration_ms(optarg, &b->timeout_ms) != 0)
                return usage_error(CMD, "--timeout wants a duration like 500ms, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            break;
        case 's':
            if ((rc = apply_pool_option(CMD, &b->cfg, optarg)) != 0)
                return rc;
            break;
        case 'j':
            b->json = 1;
            break;
        case 'm':
            b->metrics_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return -1;
        default:
            return getopt_error(CMD, c, argv);
        }
    }
    if (argc - optind > 1)
        return usage_error(CMD, "unexpected argument %s (only one conninfo)",
                           arg_shown(argv[optind + 1], sa, sizeof(sa)));
    if (b->direct && b->pool_size)
        return usage_error(CMD, "--pool-size makes no sense with --direct "
                                "(one connection per client)");
    if (b->direct && b->metrics_path)
        return usage_error(CMD, "--metrics needs the pool (not --direct)");
    if (!b->pool_size)
        b->pool_size = b->clients;
    char err[300];
    if (workload_parse(&b->wl, wspec, b->rows, err, sizeof(err)) != 0)
        return usage_error(CMD, "%s", err);
    b->conninfo = resolve_conninfo(CMD, optind < argc ? argv[optind] : NULL, &b->shown);
    if (!b->conninfo)
        return EXIT_USAGE;
    b->cfg.size = b->pool_size;
    return 0;
}

static void open_gate(struct bench *b)
{
    pthread_mutex_lock(&b->go_mu);
    b->go = 1;
    pthread_cond_broadcast(&b->go_cv);
    pthread_mutex_unlock(&b->go_mu);
}

static PGconn *connect_direct(const char *conninfo, char *err, size_t errlen)
{
    PGconn *c = PQconnectdb(conninfo);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        /* libpq's connect errors do not contain the password */
        snprintf(err, errlen, "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

int cmd_bench(int argc, char **argv)
{
    struct bench *b = calloc(1, sizeof(*b));
    struct totals cur = {0}, prev = {0};
    lat_snap *dl = NULL, *dq = NULL;
    char err[600];
    int rc = EXIT_FAIL, tty = isatty(STDERR_FILENO);

    if (!b) {
        fail_msg(CMD, "out of memory");
        return EXIT_FAIL;
    }
    int prc = parse_args(b, argc, argv);
    if (prc != 0) {
        workload_free(&b->wl);
        free(b->shown);
        free(b);
        return prc < 0 ? EXIT_OK : prc;
    }
    if (b->metrics_path && out_open(&b->metrics, CMD, "metrics", b->metrics_path) != 0) {
        workload_free(&b->wl);
        free(b->shown);
        free(b);
        return EXIT_FAIL;
    }
    install_stop_handler();
    pthread_mutex_init(&b->msg_mu, NULL);
    pthread_mutex_init(&b->go_mu, NULL);
    pthread_cond_init(&b->go_cv, NULL);

    /* set-up (rw table) on a connection of its own */
    if (b->wl.kind == WL_RW) {
        PGconn *sc = connect_direct(b->conninfo, err, sizeof(err));
        if (!sc || workload_setup(&b->wl, sc, err, sizeof(err)) != 0) {
            fail_msg(CMD, "setting up %s: %s", WL_BENCH_TABLE, err);
            PQfinish(sc);
            goto out;
        }
        PQfinish(sc);
    }

    b->cl = calloc((size_t)b->clients, sizeof(*b->cl));
    if (!b->cl || totals_alloc(&cur) || totals_alloc(&prev) || !(dl = malloc(sizeof(*dl))) ||
        !(dq = malloc(sizeof(*dq)))) {
        fail_msg(CMD, "out of memory");
        goto out;
    }
    for (int i = 0; i < b->clients; i++) {
        /* one allocation per client: no false sharing between their counters */
        b->cl[i] = aligned_alloc(64, (sizeof(struct client) + 63) / 64 * 64);
        if (!b->cl[i]) {
            fail_msg(CMD, "out of memory");
            goto out;
        }
        memset(b->cl[i], 0, sizeof(struct client));
        b->cl[i]->b = b;
        b->cl[i]->id = i;
        b->cl[i]->rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1) ^ (uint64_t)now_ns();
        if (!b->cl[i]->rng)
            b->cl[i]->rng = 1;
    }

    if (b->direct) {
        for (int i = 0; i < b->clients && !g_stop; i++) {
            b->cl[i]->direct = connect_direct(b->conninfo, err, sizeof(err));
            if (!b->cl[i]->direct) {
                fail_msg(CMD, "connection %d of %d failed: %s", i + 1, b->clients, err);
                goto out;
            }
        }
    } else {
        if (dbpool_pg_open(&b->pool, b->conninfo, &b->cfg) != 0) {
            fail_msg(CMD, "cannot open the pool: %s", dbpool_last_error());
            goto out;
        }
        if (wait_pool_ready(CMD, b->pool, b->cfg.connect_timeout, "") != 0)
            goto out;
    }
    if (g_stop)
        goto out;

    atomic_store(&b->end_ns, INT64_MAX);
    for (int i = 0; i < b->clients; i++) {
        if (pthread_create(&b->cl[i]->th, NULL, client_main, b->cl[i]) != 0) {
            fail_msg(CMD, "cannot start client thread %d", i + 1);
            atomic_store(&b->end_ns, 0); /* the ones started stop at once */
            open_gate(b);
            for (int j = 0; j < i; j++)
                pthread_join(b->cl[j]->th, NULL);
            goto out;
        }
    }
    b->start_ns = now_ns();
    atomic_store(&b->end_ns, b->start_ns + b->duration_ms * 1000000);
    open_gate(b);

    if (!b->json || b->progress_ms)
        fprintf(stderr, "dbpool bench: %s, %d clients, %s %d connections, %.1f s on %s\n",
                b->wl.name, b->clients, b->direct ? "direct," : "pool of",
                b->direct ? b->clients : b->pool_size, (double)b->duration_ms / 1000, b->shown);
    int64_t last = b->start_ns, next = b->start_ns + b->progress_ms * 1000000;
    for (;;) {
        int64_t end = atomic_load(&b->end_ns), now = now_ns();
        if (g_stop) {
            atomic_store(&b->end_ns, now); /* Ctrl-C: end the run here, still report */
            break;
        }
        if (now >= end)
            break;
        int64_t wake = end;
        if (b->progress_ms && next < wake)
            wake = next;
        sleep_ms((wake - now + 999999) / 1000000, &g_stop);
        now = now_ns();
        if (b->progress_ms && now >= next && now < end) {
            totals_take(b, &cur);
            progress_line(b, &cur, &prev, dl, dq, (double)(now - b->start_ns) / 1e9,
                          (double)(now - last) / 1e9, tty);
            struct totals tmp = prev;
            prev = cur;
            cur = tmp;
            last = now;
            next += b->progress_ms * 1000000;
        }
    }
    for (int i = 0; i < b->clients; i++)
        pthread_join(b->cl[i]->th, NULL);
    if (b->progress_ms && tty)
        fputc('\n', stderr);

    int64_t end = atomic_load(&b->end_ns);
    double secs = (double)(end - b->start_ns) / 1e9;
    totals_take(b, &cur);
    dbpool_stats st;
    int have_st = b->pool && dbpool_stats_get(b->pool, &st) == 0;
    if (b->json)
        report_json(b, &cur, secs, have_st ? &st : NULL);
    else
        report_text(b, &cur, secs, have_st ? &st : NULL);
    fflush(stdout);
    rc = cur.ok > 0 ? EXIT_OK : EXIT_FAIL;
    if (b->metrics_path && write_metrics(b) != 0)
        rc = EXIT_FAIL;

out:
    out_abandon(&b->metrics); /* not written: the run did not get that far */
    if (b->pool)
        (void)dbpool_close(b->pool);
    if (b->cl) {
        for (int i = 0; i < b->clients; i++) {
            if (b->cl[i])
                PQfinish(b->cl[i]->direct);
            free(b->cl[i]);
        }
        free(b->cl);
    }
    totals_free(&cur);
    totals_free(&prev);
    free(dl);
    free(dq);
    workload_free(&b->wl);
    pthread_mutex_destroy(&b->msg_mu);
    pthread_mutex_destroy(&b->go_mu);
    pthread_cond_destroy(&b->go_cv);
    free(b->shown);
    free(b);
    return rc;
}
