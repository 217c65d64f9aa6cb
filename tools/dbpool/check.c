/* check.c - `dbpool check`: connect once (bounded by a timeout) and report
 * where we are connected, the server version, round-trip latency and TLS,
 * then open a one-connection pool to show the library gets there too. */
#include <getopt.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "workload.h"

static const char *CMD = "check";

static void usage(FILE *f)
{
    fprintf(f, "usage: dbpool check [options] [conninfo]\n"
               "\n"
               "Connect to the database once and report: where we are connected, the\n"
               "server version, whether it is a standby, round-trip latency of SELECT 1,\n"
               "and TLS status; then open a one-connection dbpool pool and check a\n"
               "connection out, to show the pool gets there too.\n"
               "\n"
               "options:\n"
               "  -n, --count N      round trips to time (default 10)\n"
               "  -t, --timeout D    give up connecting / waiting after D (default 10s)\n"
               "      --no-pool      skip the pool step\n"
               "      --json         report as JSON on stdout\n"
               "  -h, --help         this text\n"
               "\n"
               DATABASE_HELP DURATION_HELP
               "Exit status: 0 everything worked, 1 something failed, 2 bad command line.\n");
}

struct check {
    const char *conninfo;
    char *shown; /* conninfo without the password, for display */
    long count;
    int64_t timeout_ms;
    int json, no_pool;

    /* results */
    int connected;
    char error[512];
    double connect_ms;
    char host[256], port[32], user[128], dbname[128];
    int pid, server_num;
    char server_version[128], version_full[512];
    int in_recovery; /* -1 unknown */
    long max_conn, client_backends;
    int ssl;
    char ssl_protocol[64], ssl_cipher[128], ssl_bits[16];
    int gss;
    double rt_min, rt_avg, rt_p50, rt_max;
    long rt_ok;
    int pool_ok;
    double pool_ms;
    char pool_error[512];
};

static int wait_fd(int fd, short ev, int64_t deadline_ns)
{
    struct pollfd p = {fd, ev, 0};

    for (;;) {
        int64_t left = deadline_ns - now_ns();
        if (left <= 0)
            return 0;
        int n = poll(&p, 1, (int)((left + 999999) / 1000000));
        if (n > 0)
            return 1;
        if (n < 0)
            return -1;
    }
}

static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
}

/* PQconnectStart + PQconnectPoll with a deadline: never hangs. */
static PGconn *connect_bounded(struct check *k)
{
    int64_t t0 = now_ns(), deadline = t0 + k->timeout_ms * 1000000;
    PGconn *c = PQconnectStart(k->conninfo);

    if (!c) {
        snprintf(k->error, sizeof(k->error), "out of memory");
        return NULL;
    }
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    if (PQstatus(c) == CONNECTION_BAD)
        st = PGRES_POLLING_FAILED;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int w = wait_fd(PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
        if (w == 0) {
            snprintf(k->error, sizeof(k->error), "timeout after %lld ms while connecting",
                     (long long)k->timeout_ms);
            PQfinish(c);
            return NULL;
        }
        st = PQconnectPoll(c);
    }
    if (st == PGRES_POLLING_FAILED) {
        /* libpq's connect errors do not contain the password */
        snprintf(k->error, sizeof(k->error), "%s", PQerrorMessage(c));
        chomp(k->error);
        PQfinish(c);
        return NULL;
    }
    k->connect_ms = (double)(now_ns() - t0) / 1e6;
    return c;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void server_info(struct check *k, PGconn *c)
{
    const char *sv = PQparameterStatus(c, "server_version");
    snprintf(k->server_version, sizeof(k->server_version), "%s", sv ? sv : "?");
    k->server_num = PQserverVersion(c);
    k->in_recovery = -1;
    k->max_conn = k->client_backends = -1;

    /* bounded like everything else; read-only and harmless */
    if (PQsetnonblocking(c, 1) != 0 || !PQsendQuery(c, "SELECT version(), pg_is_in_recovery(), "
                                                       "current_setting('max_connections')::int, "
                                                       "(SELECT count(*) FROM pg_stat_activity "
                                                       " WHERE backend_type = 'client backend')"))
        return;
    int64_t deadline = now_ns() + k->timeout_ms * 1000000;
    PGresult *r, *keep = NULL;
    for (;;) {
        while (PQisBusy(c)) {
            if (wait_fd(PQsocket(c), POLLIN, deadline) != 1 || !PQconsumeInput(c)) {
                PQclear(keep);
                return;
            }
        }
        if (!(r = PQgetResult(c)))
            break;
        if (!keep && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            keep = r;
        else
            PQclear(r);
    }
    if (keep) {
        snprintf(k->version_full, sizeof(k->version_full), "%s", PQgetvalue(keep, 0, 0));
        k->in_recovery = PQgetvalue(keep, 0, 1)[0] == 't';
        k->max_conn = atol(PQgetvalue(keep, 0, 2));
        k->client_backends = atol(PQgetvalue(keep, 0, 3));
        PQclear(keep);
    }
}

static void round_trips(struct check *k, PGconn *c)
{
    double *t = calloc((size_t)k->count, sizeof(double));
    double sum = 0;

    if (!t)
        return;
    for (long i = 0; i < k->count; i++) {
        int64_t t0 = now_ns();
        query_result q = run_async(c, "SELECT 1", t0 + k->timeout_ms * 1000000);
        if (q != Q_OK) {
            snprintf(k->error, sizeof(k->error), "SELECT 1 failed: %s",
                     q == Q_DEADLINE ? "no answer before the timeout" : PQerrorMessage(c));
            chomp(k->error);
            break;
        }
        t[k->rt_ok++] = (double)(now_ns() - t0) / 1e6;
        sum += t[k->rt_ok - 1];
    }
    if (k->rt_ok) {
        qsort(t, (size_t)k->rt_ok, sizeof(double), cmp_double);
        k->rt_min = t[0];
        k->rt_max = t[k->rt_ok - 1];
        k->rt_p50 = t[k->rt_ok / 2];
        k->rt_avg = sum / (double)k->rt_ok;
    }
    free(t);
}

static void pool_step(struct check *k)
{
    dbpool_config cfg;
    dbpool *pool = NULL;
    dbpool_lease lease;
    int64_t t0 = now_ns();

    dbpool_config_init(&cfg);
    cfg.name = "check";
    cfg.size = 1;
    cfg.connect_timeout = k->timeout_ms;
    cfg.log_level = DBPOOL_LOG_NONE; /* we report the error ourselves */
    if (dbpool_pg_open(&pool, k->conninfo, &cfg) != 0) {
        snprintf(k->pool_error, sizeof(k->pool_error), "%s", dbpool_last_error());
        return;
    }
    /* wait for its connection: a refused connect makes the pool DOWN, and
     * dbpool_wait_ready says so at once with the connect error */
    int rc = dbpool_wait_ready(pool, 1, k->timeout_ms);
    if (rc == 0) {
        int64_t left_ms = (t0 + k->timeout_ms * 1000000 - now_ns()) / 1000000;
        rc = dbpool_checkout(pool, left_ms > 0 ? left_ms : 0, &lease);
    }
    if (rc == 0) {
        k->pool_ms = (double)(now_ns() - t0) / 1e6;
        PGresult *r = PQexec(dbpool_pg_conn(&lease), "SELECT 1");
        k->pool_ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        if (!k->pool_ok)
            snprintf(k->pool_error, sizeof(k->pool_error), "SELECT 1 through the pool: %s",
                     PQresultErrorMessage(r));
        PQclear(r);
        (void)dbpool_checkin(&lease);
    } else {
        dbpool_stats st;
        if (rc == DBPOOL_EUNAVAILABLE && dbpool_stats_get(pool, &st) == 0 && st.last_error[0])
            snprintf(k->pool_error, sizeof(k->pool_error), "pool is down: %s", st.last_error);
        else
            snprintf(k->pool_error, sizeof(k->pool_error), "%s", dbpool_last_error());
    }
    chomp(k->pool_error);
    (void)dbpool_close(pool);
}

static void print_text(const struct check *k)
{
    printf("database     %s\n", k->shown);
    if (!k->connected) {
        printf("connect      FAILED: %s\n", k->error);
        return;
    }
    printf("connected    in %.1f ms to %s:%s as %s, database %s (backend pid %d)\n", k->connect_ms,
           k->host, k->port, k->user, k->dbname, k->pid);
    printf("server       PostgreSQL %s (%d)%s\n", k->server_version, k->server_num,
           k->in_recovery == 1   ? ", standby (in recovery, read-only)"
           : k->in_recovery == 0 ? ", primary"
                                 : "");
    if (k->version_full[0])
        printf("             %s\n", k->version_full);
    if (k->max_conn >= 0)
        printf("connections  %ld client backends of max_connections %ld\n", k->client_backends,
               k->max_conn);
    if (k->ssl)
        printf("tls          yes: %s, %s, %s-bit\n", k->ssl_protocol, k->ssl_cipher, k->ssl_bits);
    else
        printf("tls          no%s\n", k->gss ? " (GSSAPI encryption in use)" : " (plaintext)");
    if (k->rt_ok)
        printf("round trip   SELECT 1 x %ld: min %.3f  avg %.3f  p50 %.3f  max %.3f ms\n", k->rt_ok,
               k->rt_min, k->rt_avg, k->rt_p50, k->rt_max);
    if (k->error[0])
        printf("error        %s\n", k->error);
    if (!k->no_pool) {
        if (k->pool_ok)
            printf("pool         open + first checkout in %.1f ms, SELECT 1 ok\n", k->pool_ms);
        else
            printf("pool         FAILED: %s\n", k->pool_error);
    }
}

static void print_json(const struct check *k)
{
    printf("{\n  \"command\": \"check\",\n  \"database\": ");
    json_str(stdout, k->shown);
    printf(",\n  \"connected\": %s", k->connected ? "true" : "false");
    if (k->connected) {
        printf(",\n  \"connect_ms\": %.3f,\n  \"host\": ", k->connect_ms);
        json_str(stdout, k->host);
        printf(",\n  \"port\": ");
        json_str(stdout, k->port);
        printf(",\n  \"user\": ");
        json_str(stdout, k->user);
        printf(",\n  \"dbname\": ");
        json_str(stdout, k->dbname);
        printf(",\n  \"backend_pid\": %d,\n  \"server_version\": ", k->pid);
        json_str(stdout, k->server_version);
        printf(",\n  \"server_version_num\": %d,\n  \"version\": ", k->server_num);
        json_str(stdout, k->version_full);
        printf(",\n  \"in_recovery\": %s", k->in_recovery < 0 ? "null"
                                           : k->in_recovery   ? "true"
                                                              : "false");
        printf(",\n  \"max_connections\": %ld,\n  \"client_backends\": %ld", k->max_conn,
               k->client_backends);
        printf(",\n  \"tls\": {\"in_use\": %s", k->ssl ? "true" : "false");
        if (k->ssl) {
            printf(", \"protocol\": ");
            json_str(stdout, k->ssl_protocol);
            printf(", \"cipher\": ");
            json_str(stdout, k->ssl_cipher);
            printf(", \"key_bits\": %s", k->ssl_bits[0] ? k->ssl_bits : "null");
        }
        printf("},\n  \"gssenc\": %s", k->gss ? "true" : "false");
        printf(",\n  \"round_trip_ms\": {\"count\": %ld, \"min\": %.4f, \"avg\": %.4f, "
               "\"p50\": %.4f, \"max\": %.4f}",
               k->rt_ok, k->rt_min, k->rt_avg, k->rt_p50, k->rt_max);
    }
    if (k->error[0]) {
        printf(",\n  \"error\": ");
        json_str(stdout, k->error);
    }
    if (!k->no_pool) {
        printf(",\n  \"pool\": {\"ok\": %s", k->pool_ok ? "true" : "false");
        if (k->pool_ok)
            printf(", \"first_checkout_ms\": %.3f", k->pool_ms);
        else {
            printf(", \"error\": ");
            json_str(stdout, k->pool_error);
        }
        printf("}");
    }
    printf("\n}\n");
}

int cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"count", required_argument, NULL, 'n'}, {"timeout", required_argument, NULL, 't'},
        {"no-pool", no_argument, NULL, 'N'},     {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    struct check k;
    char sa[ARG_SHOWN_LEN];
    int c;

    memset(&k, 0, sizeof(k));
    k.count = 10;
    k.timeout_ms = 10000;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+:n:t:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (parse_int_range(optarg, 1, 1000000, &k.count) != 0)
                return usage_error(CMD, "--count wants 1..1000000, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            break;
        case 't':
            if (parse_duration_ms(optarg, &k.timeout_ms) != 0 || k.timeout_ms < 1)
                return usage_error(CMD, "--timeout wants a duration like 5s, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            break;
        case 'N':
            k.no_pool = 1;
            break;
        case 'j':
            k.json = 1;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            return getopt_error(CMD, c, argv);
        }
    }
    if (argc - optind > 1)
        return usage_error(CMD, "unexpected argument %s (only one conninfo)",
                           arg_shown(argv[optind + 1], sa, sizeof(sa)));
    k.conninfo = resolve_conninfo(CMD, optind < argc ? argv[optind] : NULL, &k.shown);
    if (!k.conninfo)
        return EXIT_USAGE;

    PGconn *conn = connect_bounded(&k);
    if (conn) {
        k.connected = 1;
        snprintf(k.host, sizeof(k.host), "%s", PQhost(conn) ? PQhost(conn) : "?");
        snprintf(k.port, sizeof(k.port), "%s", PQport(conn) ? PQport(conn) : "?");
        snprintf(k.user, sizeof(k.user), "%s", PQuser(conn) ? PQuser(conn) : "?");
        snprintf(k.dbname, sizeof(k.dbname), "%s", PQdb(conn) ? PQdb(conn) : "?");
        k.pid = PQbackendPID(conn);
        k.ssl = PQsslInUse(conn);
        if (k.ssl) {
            const char *a;
            snprintf(k.ssl_protocol, sizeof(k.ssl_protocol), "%s",
                     (a = PQsslAttribute(conn, "protocol")) ? a : "?");
            snprintf(k.ssl_cipher, sizeof(k.ssl_cipher), "%s",
                     (a = PQsslAttribute(conn, "cipher")) ? a : "?");
            snprintf(k.ssl_bits, sizeof(k.ssl_bits), "%s",
                     (a = PQsslAttribute(conn, "key_bits")) ? a : "");
        }
        k.gss = PQgssEncInUse(conn);
        server_info(&k, conn);
        round_trips(&k, conn);
        PQfinish(conn);
    }
    if (!k.no_pool && k.connected)
        pool_step(&k);
    else if (!k.no_pool)
        snprintf(k.pool_error, sizeof(k.pool_error), "skipped: the direct connect failed");
    if (k.json)
        print_json(&k);
    else
        print_text(&k);
    int ok = k.connected && !k.error[0] && (k.no_pool || k.pool_ok);
    free(k.shown);
    return ok ? EXIT_OK : EXIT_FAIL;
}
