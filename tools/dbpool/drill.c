/* drill.c - `dbpool drill`: run a paced load through a pool whose database
 * sits behind the built-in TCP fault relay, take the database away for a
 * while (refuse + reset, or a network black-hole), bring it back, and record
 * a timeline: successes/s, errors/s by kind, latency, pool state. The report
 * (chart.c) shows at a glance whether requests failed fast, whether the pool
 * recovered, and how quickly.
 *
 * Every request is bounded: the checkout waits at most the request deadline
 * and the query runs asynchronously (PQsendQuery + poll) against what is
 * left of it; on the deadline the connection is discarded. A plain PQexec
 * would hang for as long as a black-hole lasts. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "drill.h"
#include "hist.h"
#include "relay.h"
#include "workload.h"

static const char *CMD = "drill";

const char *const drill_err_names[DE_NKINDS] = {
    "unavailable", "timeout", "dropped", "connection_lost", "deadline", "sql", "other"};
const char *const drill_err_labels[DE_NKINDS] = {"pool down: failed fast",
                                                 "checkout timeout",
                                                 "dropped from queue",
                                                 "connection lost",
                                                 "query deadline",
                                                 "SQL error",
                                                 "other"};
const char *const drill_err_colors[DE_NKINDS] = {"#e8a33d", "#9467bd", "#8c564b", "#d62728",
                                                 "#7f0000", "#e377c2", "#7f7f7f"};

#define MAX_EVENTS 4096

struct drill;

struct dclient {
    lat_hist ok_lat;  /* successful requests */
    lat_hist err_lat; /* failed requests: how long it took to fail */
    _Atomic uint64_t ok;
    _Atomic uint64_t err[DE_NKINDS];
    _Atomic uint64_t missed; /* paced sends skipped: the client was still busy */
    struct drill *d;
    uint64_t rng;
    pthread_t th;
    int id;
};

struct drill {
    /* options */
    const char *conninfo;
    char *shown;    /* conninfo without the password, for display */
    char *relay_ci; /* the conninfo through the relay (malloc'd, sized from the conninfo) */
    size_t relay_cap;
    char target_host[256];
    int target_port;
    int blackhole;
    int clients, json;
    double rate;
    int64_t before_ms, outage_ms, after_ms, interval_ms, deadline_ms;
    const char *output;
    out_file out; /* opened before the run: an unwritable path fails at once */
    workload wl;
    dbpool_config cfg;

    /* run */
    relay *relay;
    dbpool *pool;
    struct dclient **cl;
    int64_t start_ns;
    _Atomic int stop;
    _Atomic int64_t outage_start_ns, outage_end_ns; /* INT64_MAX until it happens */
    _Atomic int64_t first_err_ns, first_ok_after_ns, longest_ns;

    pthread_mutex_t ev_mu;
    drill_event *events;
    int nevents, events_lost;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: dbpool drill [options] [conninfo]\n"
               "\n"
               "An outage drill. Runs a paced load through a dbpool pool whose database is\n"
               "reached through a built-in TCP fault relay, takes the database away for a\n"
               "while, brings it back, and writes a self-contained report with a timeline:\n"
               "successes/s, errors/s by kind, request latency, pool state. It shows whether\n"
               "requests failed fast during the outage and how quickly the pool recovered.\n"
               "\n"
               "options:\n"
               "  -m, --mode MODE       how the database goes away (default refuse):\n"
               "                          refuse     open connections are reset and new ones\n"
               "                                     refused, like a crashed/stopped server\n"
               "                          blackhole  nothing gets through and nothing is\n"
               "                                     closed, like a network partition\n"
               "  -c, --clients N       client threads (default 8)\n"
               "  -p, --pool-size N     pool connections (default 4)\n"
               "  -r, --rate R          offered load in requests/s over all clients\n"
               "                        (default 1000; 0 = as fast as possible)\n"
               "  -w, --workload W      select1 (default), sleep:<ms>, rw[:<read %%>], @FILE\n"
               "                        (as for dbpool bench)\n"
               "  -d, --deadline D      budget per request, checkout + query (default 2s).\n"
               "                        Also the checkout timeout.\n"
               "  -B, --before D        healthy load before the outage (default 5s)\n"
               "  -O, --outage D        how long the database is away (default 10s)\n"
               "  -A, --after D         load after it is back (default 15s)\n"
               "  -i, --interval D      timeline resolution (default 250ms)\n"
               "  -o, --output FILE     report file (default dbpool-drill.html); a name\n"
               "                        ending in .svg writes one SVG image instead of HTML\n"
               "      --set NAME=VALUE  set a pool option (see dbpool.h), repeatable. The\n"
               "                        drill defaults differ from the library's so that a\n"
               "                        short drill shows recovery: connect_timeout=3s\n"
               "                        backoff_max=5s (library: 10s, 30s)\n"
               "      --json            summary and timeline as JSON on stdout\n"
               "  -h, --help            this text\n"
               "\n"
               DATABASE_HELP
               "It must be a TCP address (host name or IP), since the relay forwards TCP.\n"
               DURATION_HELP
               "Exit status: 0 the pool recovered, 1 it did not (or the drill could not\n"
               "start), 2 bad command line.\n");
}

/* ---- the target behind the relay -------------------------------------------- */

static void append_kv(char *buf, size_t cap, const char *k, const char *v)
{
    size_t n = strlen(buf);
    if (n + 1 >= cap)
        return;
    int w = snprintf(buf + n, cap - n, "%s%s='", n ? " " : "", k);
    if (w < 0)
        return;
    n += (size_t)w;
    for (; *v && n + 3 < cap; v++) {
        if (*v == '\'' || *v == '\\')
            buf[n++] = '\\';
        buf[n++] = *v;
    }
    if (n + 2 < cap) {
        buf[n++] = '\'';
        buf[n] = '\0';
    }
}

/* Find the TCP address of the database and build the conninfo that goes
 * through the relay instead (every other option kept). */
static int resolve_target(struct drill *d)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(d->conninfo, &errmsg);
    const char *host = NULL, *hostaddr = NULL, *port = NULL;

    if (!opts) {
        PQfreemem(errmsg);
        return usage_error(CMD, "cannot parse the conninfo");
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
    }
    /* Not in the conninfo: where libpq would go. A service (service=, or
     * PGSERVICE) is resolved by libpq only when connecting, so start a
     * connect just to read its effective options (PQconninfo), then drop it. */
    PGconn *probe = NULL;
    PQconninfoOption *eff = NULL;
    const char *service = getenv("PGSERVICE");
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "service") == 0 && o->val && *o->val)
            service = o->val;
    if (!host && !hostaddr && service && *service) {
        probe = PQconnectStart(d->conninfo);
        eff = probe ? PQconninfo(probe) : NULL;
        for (PQconninfoOption *o = eff; o && o->keyword; o++) {
            if (!o->val || !*o->val)
                continue;
            if (strcmp(o->keyword, "host") == 0)
                host = o->val;
            else if (strcmp(o->keyword, "hostaddr") == 0)
                hostaddr = o->val;
            else if (strcmp(o->keyword, "port") == 0 && !port)
                port = o->val;
        }
    }
    if (!host && !hostaddr)
        host = getenv("PGHOST");
    if (!port)
        port = getenv("PGPORT");
    const char *h = hostaddr ? hostaddr : host;
    if (!h || !*h || h[0] == '/' || h[0] == '@') {
        PQconninfoFree(opts);
        PQconninfoFree(eff);
        PQfinish(probe);
        return usage_error(CMD, "the drill needs a TCP address (host=name or IP); "
                                "a unix socket cannot go through the relay");
    }
    /* several hosts: the drill uses the first */
    size_t hl = strcspn(h, ",");
    if (hl >= sizeof(d->target_host))
        hl = sizeof(d->target_host) - 1;
    memcpy(d->target_host, h, hl);
    d->target_host[hl] = '\0';
    long pv = 5432;
    if (port && *port) {
        char first[16];
        size_t pl = strcspn(port, ",");
        snprintf(first, sizeof(first), "%.*s", (int)(pl < 15 ? pl : 15), port);
        if (pl && parse_int_range(first, 1, 65535, &pv) != 0) {
            int rc = usage_error(CMD, "bad port '%s'", first);
            PQconninfoFree(opts);
            PQconninfoFree(eff);
            PQfinish(probe);
            return rc;
        }
    }
    d->target_port = (int)pv;
    PQconninfoFree(eff); /* host and port are copied */
    PQfinish(probe);

    /* every pair as key='value' with escapes (at most twice the value), plus
     * host and port of the relay: a long option must not be cut off */
    d->relay_cap = 128;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && *o->val)
            d->relay_cap += strlen(o->keyword) + 2 * strlen(o->val) + 5;
    if (!(d->relay_ci = malloc(d->relay_cap))) {
        PQconninfoFree(opts);
        fail_msg(CMD, "out of memory");
        return EXIT_FAIL;
    }
    d->relay_ci[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val || strcmp(o->keyword, "host") == 0 ||
            strcmp(o->keyword, "hostaddr") == 0 || strcmp(o->keyword, "port") == 0)
            continue;
        append_kv(d->relay_ci, d->relay_cap, o->keyword, o->val);
    }
    PQconninfoFree(opts);
    return 0;
}

/* ---- events from the pool (manager thread) ----------------------------------- */

static void on_event(void *arg, const dbpool_event *ev)
{
    struct drill *d = arg;

    pthread_mutex_lock(&d->ev_mu);
    if (d->nevents < MAX_EVENTS) {
        drill_event *e = &d->events[d->nevents++];
        e->t = ((double)ev->at_ms - (double)d->start_ns / 1e6) / 1000.0;
        e->type = ev->type;
        snprintf(e->detail, sizeof(e->detail), "%s", ev->detail ? ev->detail : "");
        /* libpq messages end in newlines and may have a second line */
        for (char *p = e->detail; *p; p++)
            if (*p == '\n' || *p == '\t')
                *p = ' ';
        size_t n = strlen(e->detail);
        while (n && e->detail[n - 1] == ' ')
            e->detail[--n] = '\0';
    } else {
        d->events_lost++;
    }
    pthread_mutex_unlock(&d->ev_mu);
}

/* ---- clients ------------------------------------------------------------------ */

static void bump(_Atomic uint64_t *a)
{
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void atomic_min(_Atomic int64_t *a, int64_t v)
{
    int64_t cur = atomic_load(a);
    while (v < cur && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}

static void atomic_max(_Atomic int64_t *a, int64_t v)
{
    int64_t cur = atomic_load(a);
    while (v > cur && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}

static enum drill_err checkout_kind(int rc)
{
    switch (rc) {
    case DBPOOL_EUNAVAILABLE:
        return DE_UNAVAILABLE;
    case DBPOOL_ETIMEDOUT:
        return DE_TIMEOUT;
    case DBPOOL_EDROPPED:
        return DE_DROPPED;
    default:
        return DE_OTHER;
    }
}

static void *dclient_main(void *arg)
{
    struct dclient *c = arg;
    struct drill *d = c->d;
    char sqlbuf[160];
    int64_t period = d->rate > 0 ? (int64_t)(1e9 * d->clients / d->rate) : 0;
    /* spread the clients' start over one period */
    int64_t next = d->start_ns + (period ? period * c->id / d->clients : 0);

    while (!atomic_load_explicit(&d->stop, memory_order_relaxed)) {
        int64_t now = now_ns();
        if (period) {
            if (now < next) {
                sleep_until_ns(next);
                now = now_ns();
                if (atomic_load_explicit(&d->stop, memory_order_relaxed))
                    break;
            }
            /* A slow request does not cause a burst afterwards: the sends that
             * fell due meanwhile are skipped, and counted, so the report shows
             * the load that was offered but could not be sent. */
            if (now - next > period) {
                uint64_t skipped = (uint64_t)((now - next) / period);
                atomic_store_explicit(
                    &c->missed,
                    atomic_load_explicit(&c->missed, memory_order_relaxed) + skipped,
                    memory_order_relaxed);
                next = now + period;
            } else {
                next += period;
            }
        }
        int64_t t0 = now_ns();
        dbpool_lease lease;
        int rc = dbpool_checkout(d->pool, d->deadline_ms, &lease);
        int kind = -1;
        if (rc != 0) {
            kind = checkout_kind(rc);
        } else {
            PGconn *conn = dbpool_pg_conn(&lease);
            const char *sql = workload_next(&d->wl, &c->rng, sqlbuf, sizeof(sqlbuf));
            query_result q = run_async(conn, sql, t0 + d->deadline_ms * 1000000);
            if (q == Q_CONN_LOST || q == Q_DEADLINE)
                (void)dbpool_discard(&lease); /* mid-query or dead: never reuse */
            else
                (void)dbpool_checkin(&lease);
            if (q == Q_CONN_LOST)
                kind = DE_CONNLOST;
            else if (q == Q_DEADLINE)
                kind = DE_DEADLINE;
            else if (q == Q_SQL_ERROR)
                kind = DE_SQL;
        }
        int64_t t2 = now_ns(), took = t2 - t0;
        atomic_max(&d->longest_ns, took);
        if (kind < 0) {
            lh_record(&c->ok_lat, took);
            bump(&c->ok);
            if (t2 >= atomic_load(&d->outage_end_ns))
                atomic_min(&d->first_ok_after_ns, t2);
        } else {
            lh_record(&c->err_lat, took);
            bump(&c->err[kind]);
            if (t2 >= atomic_load(&d->outage_start_ns))
                atomic_min(&d->first_err_ns, t2);
            if (!period && kind == DE_UNAVAILABLE)
                sleep_ms(1, NULL); /* unpaced: do not spin on a pool that is down */
        }
    }
    return NULL;
}

/* ---- sampling ---------------------------------------------------------------- */

struct dtotals {
    uint64_t ok, missed, err[DE_NKINDS];
    lat_snap ok_lat, err_lat;
};

static void dtotals_take(struct drill *d, struct dtotals *t)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < d->clients; i++) {
        struct dclient *c = d->cl[i];
        t->ok += atomic_load_explicit(&c->ok, memory_order_relaxed);
        t->missed += atomic_load_explicit(&c->missed, memory_order_relaxed);
        for (int k = 0; k < DE_NKINDS; k++)
            t->err[k] += atomic_load_explicit(&c->err[k], memory_order_relaxed);
        lh_add_to(&t->ok_lat, &c->ok_lat);
        lh_add_to(&t->err_lat, &c->err_lat);
    }
}

static double ms(int64_t ns)
{
    return (double)ns / 1e6;
}

/* ---- options ------------------------------------------------------------------ */

static int parse_args(struct drill *d, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"clients", required_argument, NULL, 'c'},
        {"pool-size", required_argument, NULL, 'p'},
        {"rate", required_argument, NULL, 'r'},
        {"workload", required_argument, NULL, 'w'},
        {"deadline", required_argument, NULL, 'd'},
        {"before", required_argument, NULL, 'B'},
        {"outage", required_argument, NULL, 'O'},
        {"after", required_argument, NULL, 'A'},
        {"interval", required_argument, NULL, 'i'},
        {"output", required_argument, NULL, 'o'},
        {"set", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *wspec = "select1";
    char sa[ARG_SHOWN_LEN];
    long v;
    int c, rc;

    d->clients = 8;
    d->rate = 1000;
    d->before_ms = 5000;
    d->outage_ms = 10000;
    d->after_ms = 15000;
    d->interval_ms = 250;
    d->deadline_ms = 2000;
    d->output = "dbpool-drill.html";
    dbpool_config_init(&d->cfg);
    d->cfg.name = "drill";
    d->cfg.size = 4;
    d->cfg.connect_timeout = 3000;
    d->cfg.backoff_max = 5000;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+:m:c:p:r:w:d:B:O:A:i:o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (strcmp(optarg, "refuse") == 0)
                d->blackhole = 0;
            else if (strcmp(optarg, "blackhole") == 0)
                d->blackhole = 1;
            else
                return usage_error(CMD, "--mode wants refuse or blackhole, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            break;
        case 'c':
            if (parse_int_range(optarg, 1, 1024, &v) != 0)
                return usage_error(CMD, "--clients wants 1..1024, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            d->clients = (int)v;
            break;
        case 'p':
            if (parse_int_range(optarg, 1, 1000, &v) != 0)
                return usage_error(CMD, "--pool-size wants 1..1000, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            d->cfg.size = (int)v;
            break;
        case 'r': {
            char *end;
            d->rate = strtod(optarg, &end);
            if (end == optarg || *end || !(d->rate >= 0 && d->rate <= 1e7))
                return usage_error(CMD, "--rate wants requests/s in 0..10000000, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            break;
        }
        case 'w':
            wspec = optarg;
            break;
        case 'd':
            if (parse_duration_ms(optarg, &d->deadline_ms) != 0 || d->deadline_ms < 1)
                return usage_error(CMD, "--deadline wants a duration like 2s, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            break;
        case 'B':
        case 'O':
        case 'A': {
            int64_t *dst = c == 'B' ? &d->before_ms : c == 'O' ? &d->outage_ms : &d->after_ms;
            if (parse_duration_ms(optarg, dst) != 0 || *dst > 3600000)
                return usage_error(CMD, "--%s wants a duration up to 1h, got %s",
                                   c == 'B'   ? "before"
                                   : c == 'O' ? "outage"
                                              : "after",
                                   arg_shown(optarg, sa, sizeof(sa)));
            break;
        }
        case 'i':
            if (parse_duration_ms(optarg, &d->interval_ms) != 0 || d->interval_ms < 10 ||
                d->interval_ms > 60000)
                return usage_error(CMD, "--interval wants 10ms..60s, got %s",
                                   arg_shown(optarg, sa, sizeof(sa)));
            break;
        case 'o':
            d->output = optarg;
            break;
        case 's':
            if ((rc = apply_pool_option(CMD, &d->cfg, optarg)) != 0)
                return rc;
            break;
        case 'j':
            d->json = 1;
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
    if (d->outage_ms < d->interval_ms || d->before_ms < d->interval_ms ||
        d->after_ms < d->interval_ms)
        return usage_error(CMD, "--before, --outage and --after must each be at least one "
                                "--interval long");
    if ((d->before_ms + d->outage_ms + d->after_ms) / d->interval_ms > 100000)
        return usage_error(CMD, "too many samples: make --interval longer");
    if (!*d->output)
        return usage_error(CMD, "--output wants a file name");
    char err[300];
    if (workload_parse(&d->wl, wspec, 10000, err, sizeof(err)) != 0)
        return usage_error(CMD, "%s", err);
    d->conninfo = resolve_conninfo(CMD, optind < argc ? argv[optind] : NULL, &d->shown);
    if (!d->conninfo)
        return EXIT_USAGE;
    return resolve_target(d);
}

/* ---- findings ------------------------------------------------------------------ */

/* "dbpool 0.1.0, libpq 15.18, PostgreSQL 15.18 (...)" for the report: the
 * server's version from a connection of the (ready) pool. */
static void server_version(dbpool *pool, char *buf, size_t len)
{
    dbpool_lease lease;
    const char *sv = NULL;
    int pq = PQlibVersion();
    int got = dbpool_checkout(pool, 2000, &lease) == 0;

    if (got)
        sv = PQparameterStatus(dbpool_pg_conn(&lease), "server_version");
    snprintf(buf, len, "dbpool %s, libpq %d.%d, PostgreSQL %s", dbpool_version(), pq / 10000,
             pq % 10000, sv ? sv : "(unknown)");
    if (got)
        (void)dbpool_checkin(&lease);
}

static void describe_options(const struct drill *d, char *buf, size_t len)
{
    static const char *const bt[] = {"rand_exp", "exp", "rand", "stop"};
    const dbpool_config *c = &d->cfg;
    int64_t bmin = c->backoff_min >= 0     ? c->backoff_min
                   : c->backoff_max < 1000 ? c->backoff_max
                                           : 1000;

    snprintf(buf, len,
             "size=%d connect_timeout=%lldms backoff_type=%s backoff_min=%lldms "
             "backoff_max=%lldms probe_interval=%lldms checkout timeout=%lldms (the request deadline) "
             "idle_interval=%lldms ping_timeout=%lldms queue_target=%lldms "
             "queue_interval=%lldms",
             c->size, (long long)c->connect_timeout,
             (unsigned)c->backoff_type < 4 ? bt[c->backoff_type] : "?", (long long)bmin,
             (long long)c->backoff_max, (long long)c->probe_interval, (long long)d->deadline_ms, (long long)c->idle_interval,
             (long long)c->ping_timeout, (long long)c->queue_target, (long long)c->queue_interval);
}

static double rel_s(const struct drill *d, int64_t ns)
{
    return (double)(ns - d->start_ns) / 1e9;
}

static void find(struct drill *d, drill_report *r, const lat_snap *fail_outage)
{
    int nb = 0, na = 0;
    double sb = 0, sa = 0;
    int after_n = 0;

    for (int i = 0; i < r->nsamples; i++)
        after_n += r->samples[i].phase == PH_AFTER;
    for (int i = 0, ai = 0; i < r->nsamples; i++) {
        const drill_sample *s = &r->samples[i];
        if (s->phase == PH_BEFORE) {
            sb += s->ok_per_s;
            nb++;
        } else if (s->phase == PH_AFTER) {
            /* "after" throughput: the last third, once things settled */
            if (ai++ >= after_n - (after_n + 2) / 3) {
                sa += s->ok_per_s;
                na++;
            }
        }
    }
    r->tps_before = nb ? sb / nb : 0;
    r->tps_after = na ? sa / na : 0;
    r->full_tps_at = -1;
    for (int i = 0; i < r->nsamples; i++) {
        const drill_sample *s = &r->samples[i];
        if (s->phase == PH_AFTER && r->tps_before > 0 && s->ok_per_s >= 0.9 * r->tps_before) {
            r->full_tps_at = s->t;
            break;
        }
    }
    int64_t fe = atomic_load(&d->first_err_ns), fo = atomic_load(&d->first_ok_after_ns);
    r->first_error = fe == INT64_MAX ? -1 : rel_s(d, fe);
    r->first_ok_after = fo == INT64_MAX ? -1 : rel_s(d, fo);
    r->pool_down_at = r->pool_up_at = -1;
    for (int i = 0; i < r->nevents; i++) {
        const drill_event *e = &r->events[i];
        if (e->type == DBPOOL_EV_DOWN && r->pool_down_at < 0 && e->t >= r->outage_start)
            r->pool_down_at = e->t;
        if (e->type == DBPOOL_EV_UP && r->pool_up_at < 0 && e->t >= r->outage_end)
            r->pool_up_at = e->t;
    }
    r->fail_p50_ms = ms(lh_quantile(fail_outage, 0.5));
    r->fail_p99_ms = ms(lh_quantile(fail_outage, 0.99));
    r->fail_max_ms = ms((int64_t)fail_outage->max_ns);
    r->failed_outage = fail_outage->count;
    r->longest_ms = ms(atomic_load(&d->longest_ns));
    r->fail_max_before_down_ms = 0;
    for (int i = 0; i < r->nsamples; i++) {
        const drill_sample *s = &r->samples[i];
        if (s->phase != PH_BEFORE &&
            (r->pool_down_at < 0 || s->t - r->interval_s <= r->pool_down_at) &&
            s->err_max_ms > r->fail_max_before_down_ms)
            r->fail_max_before_down_ms = s->err_max_ms;
    }
    r->recovered = r->first_ok_after >= 0 && r->full_tps_at >= 0;
}

static void print_summary(const drill_report *r, const char *output)
{
    printf("dbpool drill: %s for %.1f s (%s)\n", r->mode, r->outage_s,
           strcmp(r->mode, "refuse") == 0
               ? "open connections reset, new ones refused"
               : "network black-hole: nothing gets through, nothing is closed");
    printf("  load         %d clients, %s, %s, deadline %.0f ms, pool of %d\n", r->clients,
           r->rate > 0 ? "paced" : "unpaced", r->workload, r->deadline_ms, r->pool_size);
    if (r->rate > 0)
        printf("               offered %.0f requests/s\n", r->rate);
    printf("  before       %.1f tps\n", r->tps_before);
    if (r->missed_total)
        printf("  not sent     %llu requests were due but not sent on time (%llu from the outage "
               "on): the clients were still busy with earlier ones\n",
               (unsigned long long)r->missed_total, (unsigned long long)r->missed_outage);
    printf("  outage       %.1f s .. %.1f s: %llu requests failed:", r->outage_start, r->outage_end,
           (unsigned long long)r->failed_outage);
    for (int k = 0; k < DE_NKINDS; k++)
        if (r->failed_by_kind[k])
            printf(" %s %llu", drill_err_names[k], (unsigned long long)r->failed_by_kind[k]);
    printf("\n");
    if (r->first_error >= 0)
        printf("  detection    first error %.3f s after the outage began",
               r->first_error - r->outage_start);
    else
        printf("  detection    no request failed");
    if (r->pool_down_at >= 0)
        printf("; pool DOWN after %.3f s", r->pool_down_at - r->outage_start);
    printf("\n");
    if (r->failed_outage)
        printf("  failing      failed requests took p50 %.3f ms, p99 %.3f ms, max %.1f ms\n",
               r->fail_p50_ms, r->fail_p99_ms, r->fail_max_ms);
    if (r->pool_down_at >= 0 && r->fail_max_before_down_ms > r->deadline_ms / 2)
        printf("               until the pool went DOWN, failing requests waited up to %.1f ms\n",
               r->fail_max_before_down_ms);
    if (r->first_ok_after >= 0) {
        printf("  recovery     first success %.3f s after the database came back",
               r->first_ok_after - r->outage_end);
        if (r->pool_up_at >= 0)
            printf("; pool UP after %.3f s", r->pool_up_at - r->outage_end);
        printf("\n");
    } else {
        printf("  recovery     NO request succeeded after the database came back\n");
    }
    if (r->full_tps_at >= 0)
        printf("               90%% of the old throughput within %.2f s\n",
               r->full_tps_at - r->outage_end);
    printf("  after        %.1f tps%s\n", r->tps_after,
           r->recovered ? "" : "  -- NOT RECOVERED to 90% of the old throughput");
    printf("  longest      request took %.1f ms (deadline %.0f ms)\n", r->longest_ms,
           r->deadline_ms);
    printf("  report       %s\n", output);
}

static void print_json(const drill_report *r, const char *output)
{
    printf("{\n  \"command\": \"drill\",\n  \"date\": ");
    json_str(stdout, r->date);
    printf(",\n  \"database\": ");
    json_str(stdout, r->database);
    printf(",\n  \"mode\": \"%s\",\n  \"workload\": ", r->mode);
    json_str(stdout, r->workload);
    printf(",\n  \"clients\": %d,\n  \"pool_size\": %d,\n  \"rate\": %.1f,\n"
           "  \"deadline_ms\": %.0f,\n  \"pool_options\": ",
           r->clients, r->pool_size, r->rate, r->deadline_ms);
    json_str(stdout, r->pool_options);
    printf(",\n  \"report\": ");
    json_str(stdout, output);
    printf(",\n  \"command\": ");
    json_str(stdout, r->command);
    printf(",\n  \"started\": ");
    json_str(stdout, r->date);
    printf(",\n  \"ended\": ");
    json_str(stdout, r->end_date);
    printf(",\n  \"versions\": ");
    json_str(stdout, r->versions);
    printf(",\n  \"not_sent\": %llu,\n  \"not_sent_outage\": %llu",
           (unsigned long long)r->missed_total, (unsigned long long)r->missed_outage);
#define T(x) ((x) < 0 ? -1.0 : (x))
    printf(
        ",\n  \"outage_start_s\": %.3f,\n  \"outage_end_s\": %.3f,\n"
        "  \"first_error_s\": %.3f,\n  \"pool_down_s\": %.3f,\n  \"pool_up_s\": %.3f,\n"
        "  \"first_ok_after_s\": %.3f,\n  \"full_tps_s\": %.3f,\n"
        "  \"tps_before\": %.1f,\n  \"tps_after\": %.1f,\n  \"recovered\": %s,\n"
        "  \"ok\": %llu,\n  \"failed\": %llu,\n  \"failed_outage\": %llu,\n"
        "  \"fail_ms\": {\"p50\": %.4f, \"p99\": %.4f, \"max\": %.3f, \"max_before_down\": %.3f},\n"
        "  \"longest_ms\": %.3f,\n  \"failed_by_kind\": {",
        r->outage_start, r->outage_end, T(r->first_error), T(r->pool_down_at), T(r->pool_up_at),
        T(r->first_ok_after), T(r->full_tps_at), r->tps_before, r->tps_after,
        r->recovered ? "true" : "false", (unsigned long long)r->ok_total,
        (unsigned long long)r->failed_total, (unsigned long long)r->failed_outage, r->fail_p50_ms,
        r->fail_p99_ms, r->fail_max_ms, r->fail_max_before_down_ms, r->longest_ms);
#undef T
    for (int k = 0; k < DE_NKINDS; k++)
        printf("%s\"%s\": %llu", k ? ", " : "", drill_err_names[k],
               (unsigned long long)r->failed_by_kind[k]);
    printf("},\n  \"timeline\": [\n");
    for (int i = 0; i < r->nsamples; i++) {
        const drill_sample *s = &r->samples[i];
        printf("    {\"t\": %.3f, \"phase\": \"%s\", \"ok_per_s\": %.1f, \"errors_per_s\": {", s->t,
               s->phase == PH_BEFORE   ? "before"
               : s->phase == PH_OUTAGE ? "outage"
                                       : "after",
               s->ok_per_s);
        for (int k = 0; k < DE_NKINDS; k++)
            printf("%s\"%s\": %.1f", k ? ", " : "", drill_err_names[k], s->err_per_s[k]);
        printf("}, \"not_sent_per_s\": %.1f", s->missed_per_s);
        printf(", \"ok_p50_ms\": %.4f, \"ok_p99_ms\": %.4f, \"fail_max_ms\": %.3f, "
               "\"state\": \"%s\", \"idle\": %d, \"busy\": %d, \"connecting\": %d, "
               "\"backoff\": %d, \"waiting\": %d}%s\n",
               s->ok_p50_ms, s->ok_p99_ms, s->err_max_ms, dbpool_state_name(s->state), s->idle,
               s->busy, s->connecting, s->backoff, s->waiting, i + 1 < r->nsamples ? "," : "");
    }
    printf("  ],\n  \"events\": [\n");
    for (int i = 0; i < r->nevents; i++) {
        static const char *const en[] = {"connected",    "disconnected",  "connect_failed",
                                         "up",           "down",          "dropped",
                                         "hold_timeout", "leak_suspected"};
        const drill_event *e = &r->events[i];
        printf("    {\"t\": %.3f, \"type\": \"%s\", \"detail\": ", e->t,
               (unsigned)e->type < 8 ? en[e->type] : "?");
        json_str(stdout, e->detail);
        printf("}%s\n", i + 1 < r->nevents ? "," : "");
    }
    printf("  ]\n}\n");
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

/* ---- the drill ---------------------------------------------------------------- */

int cmd_drill(int argc, char **argv)
{
    struct drill *d = calloc(1, sizeof(*d));
    drill_report rep;
    struct dtotals *cur = NULL, *prev = NULL;
    lat_snap *dok = NULL, *derr = NULL, *fail_outage = NULL;
    int rc = EXIT_FAIL, nthreads = 0, tty = isatty(STDERR_FILENO);

    memset(&rep, 0, sizeof(rep));
    if (!d) {
        fail_msg(CMD, "out of memory");
        return EXIT_FAIL;
    }
    pthread_mutex_init(&d->ev_mu, NULL);
    d->out.fd = -1;
    int prc = parse_args(d, argc, argv);
    if (prc != 0) {
        rc = prc < 0 ? EXIT_OK : prc;
        goto out;
    }
    if (out_open(&d->out, CMD, "the report", d->output) != 0)
        goto out;
    install_stop_handler();
    atomic_store(&d->outage_start_ns, INT64_MAX);
    atomic_store(&d->outage_end_ns, INT64_MAX);
    atomic_store(&d->first_err_ns, INT64_MAX);
    atomic_store(&d->first_ok_after_ns, INT64_MAX);

    int64_t total_ms = d->before_ms + d->outage_ms + d->after_ms;
    int max_samples = (int)(total_ms / d->interval_ms) + 4;
    d->events = calloc(MAX_EVENTS, sizeof(*d->events));
    rep.samples = calloc((size_t)max_samples, sizeof(*rep.samples));
    d->cl = calloc((size_t)d->clients, sizeof(*d->cl));
    cur = malloc(sizeof(*cur));
    prev = malloc(sizeof(*prev));
    dok = malloc(sizeof(*dok));
    derr = malloc(sizeof(*derr));
    fail_outage = calloc(1, sizeof(*fail_outage));
    if (!d->events || !rep.samples || !d->cl || !cur || !prev || !dok || !derr || !fail_outage) {
        fail_msg(CMD, "out of memory");
        goto out;
    }
    for (int i = 0; i < d->clients; i++) {
        d->cl[i] = aligned_alloc(64, (sizeof(struct dclient) + 63) / 64 * 64);
        if (!d->cl[i]) {
            fail_msg(CMD, "out of memory");
            goto out;
        }
        memset(d->cl[i], 0, sizeof(struct dclient));
        d->cl[i]->d = d;
        d->cl[i]->id = i;
        d->cl[i]->rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1) | 1;
    }

    int e = relay_start(&d->relay, d->target_host, d->target_port);
    if (e != 0) {
        fail_msg(CMD, "cannot start the fault relay to %s:%d: %s", d->target_host, d->target_port,
                 strerror(-e));
        goto out;
    }
    char portbuf[16];
    snprintf(portbuf, sizeof(portbuf), "%d", relay_port(d->relay));
    append_kv(d->relay_ci, d->relay_cap, "host", "127.0.0.1");
    append_kv(d->relay_ci, d->relay_cap, "port", portbuf);

    if (d->wl.kind == WL_RW) {
        char err[600];
        PGconn *sc = PQconnectdb(d->conninfo);
        if (PQstatus(sc) != CONNECTION_OK || workload_setup(&d->wl, sc, err, sizeof(err)) != 0) {
            fail_msg(CMD, "setting up %s: %s", WL_BENCH_TABLE,
                     PQstatus(sc) != CONNECTION_OK ? PQerrorMessage(sc) : err);
            PQfinish(sc);
            goto out;
        }
        PQfinish(sc);
    }

    d->cfg.event_cb = on_event;
    if (!d->cfg.log_cb)
        d->cfg.log_cb = cli_log_cb;
    d->cfg.event_arg = d;
    d->cfg.checkout_timeout = d->deadline_ms;
    d->start_ns = now_ns(); /* provisional, for events during the fill-up */
    if (dbpool_pg_open(&d->pool, d->relay_ci, &d->cfg) != 0) {
        fail_msg(CMD, "cannot open the pool: %s", dbpool_last_error());
        goto out;
    }
    if (wait_pool_ready(CMD, d->pool, d->cfg.connect_timeout, " through the relay") != 0)
        goto out;

    /* fill in the report's set-up */
    command_shown(argc, argv, rep.command, sizeof(rep.command));
    server_version(d->pool, rep.versions, sizeof(rep.versions));
    local_timestamp(rep.date, sizeof(rep.date));
    rep.database = d->shown;
    snprintf(rep.target, sizeof(rep.target), "%s:%d", d->target_host, d->target_port);
    rep.mode = d->blackhole ? "blackhole" : "refuse";
    snprintf(rep.workload, sizeof(rep.workload), "%s", d->wl.name);
    rep.clients = d->clients;
    rep.pool_size = d->cfg.size;
    rep.rate = d->rate;
    rep.deadline_ms = (double)d->deadline_ms;
    rep.interval_s = (double)d->interval_ms / 1000;
    describe_options(d, rep.pool_options, sizeof(rep.pool_options));

    /* Go. Phase changes happen on sample boundaries so that no interval
     * straddles two phases. */
    int64_t iv = d->interval_ms * 1000000;
    int n_before = (int)((d->before_ms + d->interval_ms / 2) / d->interval_ms);
    int n_outage = (int)((d->outage_ms + d->interval_ms / 2) / d->interval_ms);
    int n_after = (int)((d->after_ms + d->interval_ms / 2) / d->interval_ms);
    rep.before_s = n_before * (double)d->interval_ms / 1000;
    rep.outage_s = n_outage * (double)d->interval_ms / 1000;
    rep.after_s = n_after * (double)d->interval_ms / 1000;
    rep.outage_start = rep.before_s;
    rep.outage_end = rep.before_s + rep.outage_s;

    pthread_mutex_lock(&d->ev_mu);
    int64_t shift = now_ns() - d->start_ns;
    d->start_ns += shift;
    for (int i = 0; i < d->nevents; i++)
        d->events[i].t -= (double)shift / 1e9;
    pthread_mutex_unlock(&d->ev_mu);
    for (; nthreads < d->clients; nthreads++) {
        if (pthread_create(&d->cl[nthreads]->th, NULL, dclient_main, d->cl[nthreads]) != 0) {
            fail_msg(CMD, "cannot start client thread %d", nthreads + 1);
            goto stop;
        }
    }
    fprintf(stderr, "dbpool drill: %s, %d clients, pool of %d, via relay 127.0.0.1:%d -> %s\n",
            rep.mode, d->clients, d->cfg.size, relay_port(d->relay), rep.target);
    fprintf(stderr, "  before %.1f s, outage %.1f s, after %.1f s\n", rep.before_s, rep.outage_s,
            rep.after_s);

    memset(prev, 0, sizeof(*prev));
    int total = n_before + n_outage + n_after;
    int64_t last_print = 0;
    for (int i = 0; i < total && !g_stop; i++) {
        int phase = i < n_before ? PH_BEFORE : i < n_before + n_outage ? PH_OUTAGE : PH_AFTER;
        if (i == n_before) {
            /* take the database away */
            atomic_store(&d->outage_start_ns, now_ns());
            if (d->blackhole) {
                relay_set_mode(d->relay, RELAY_BLACKHOLE);
            } else {
                relay_set_mode(d->relay, RELAY_REFUSE);
                relay_reset_all(d->relay);
            }
            if (!tty)
                fprintf(stderr, "  %.1f s: database away (%s)\n",
                        rel_s(d, atomic_load(&d->outage_start_ns)), rep.mode);
        } else if (i == n_before + n_outage) {
            relay_set_mode(d->relay, RELAY_PASS);
            atomic_store(&d->outage_end_ns, now_ns());
            if (!tty)
                fprintf(stderr, "  %.1f s: database back\n",
                        rel_s(d, atomic_load(&d->outage_end_ns)));
        }
        int64_t tick = d->start_ns + (int64_t)(i + 1) * iv;
        sleep_until_ns(tick);

        dtotals_take(d, cur);
        dbpool_stats st;
        (void)dbpool_stats_get(d->pool, &st);
        drill_sample *s = &rep.samples[rep.nsamples++];
        double dt = (double)d->interval_ms / 1000;
        s->t = (double)(i + 1) * dt;
        s->phase = phase;
        s->ok_per_s = (double)(cur->ok - prev->ok) / dt;
        s->missed_per_s = (double)(cur->missed - prev->missed) / dt;
        if (phase != PH_BEFORE)
            rep.missed_outage += cur->missed - prev->missed;
        uint64_t nerr = 0;
        for (int k = 0; k < DE_NKINDS; k++) {
            s->err_per_s[k] = (double)(cur->err[k] - prev->err[k]) / dt;
            nerr += cur->err[k] - prev->err[k];
            if (phase != PH_BEFORE)
                rep.failed_by_kind[k] += cur->err[k] - prev->err[k];
        }
        lh_diff(dok, &cur->ok_lat, &prev->ok_lat);
        lh_diff(derr, &cur->err_lat, &prev->err_lat);
        s->ok_p50_ms = ms(lh_quantile(dok, 0.5));
        s->ok_p99_ms = ms(lh_quantile(dok, 0.99));
        s->ok_max_ms = ms((int64_t)dok->max_ns);
        s->err_p50_ms = ms(lh_quantile(derr, 0.5));
        s->err_max_ms = derr->count ? ms((int64_t)derr->max_ns) : 0;
        if (phase != PH_BEFORE) {
            for (int b = 0; b < LH_BUCKETS; b++)
                fail_outage->b[b] += derr->b[b];
            fail_outage->count += derr->count;
            fail_outage->sum_ns += derr->sum_ns;
            if (derr->max_ns > fail_outage->max_ns)
                fail_outage->max_ns = derr->max_ns;
        }
        s->state = st.state;
        s->idle = st.idle;
        s->busy = st.busy;
        s->connecting = st.connecting;
        s->pinging = st.pinging;
        s->backoff = st.backoff;
        s->waiting = st.waiting;
        s->size = st.size;

        int64_t tnow = now_ns();
        if (tty || tnow - last_print >= 1000000000 || i + 1 == total) {
            char line[256];
            snprintf(line, sizeof(line),
                     "%6.2f s %-7s ok %7.0f/s  errors %7.0f/s  p99 %8.3f ms  pool %-8s "
                     "idle %d busy %d connecting %d backoff %d",
                     s->t,
                     phase == PH_BEFORE   ? "before"
                     : phase == PH_OUTAGE ? "OUTAGE"
                                          : "after",
                     s->ok_per_s, (double)nerr / dt, s->ok_p99_ms, dbpool_state_name(st.state),
                     st.idle, st.busy, st.connecting, st.backoff);
            if (tty)
                fprintf(stderr, "\r\033[K%s", line);
            else
                fprintf(stderr, "%s\n", line);
            last_print = tnow;
        }
        struct dtotals *tmp = prev;
        prev = cur;
        cur = tmp;
    }
    if (tty)
        fputc('\n', stderr);

stop:
    atomic_store(&d->stop, 1);
    for (int i = 0; i < nthreads; i++)
        pthread_join(d->cl[i]->th, NULL);
    if (nthreads < d->clients || rep.nsamples == 0)
        goto out;
    if (g_stop)
        fprintf(stderr, "dbpool drill: interrupted; reporting what was recorded\n");
    /* the relay back to normal before the pool closes, so nothing waits */
    relay_set_mode(d->relay, RELAY_PASS);

    dtotals_take(d, cur);
    rep.ok_total = cur->ok;
    rep.missed_total = cur->missed;
    local_timestamp(rep.end_date, sizeof(rep.end_date));
    for (int k = 0; k < DE_NKINDS; k++)
        rep.failed_total += cur->err[k];
    pthread_mutex_lock(&d->ev_mu);
    rep.events = d->events;
    rep.nevents = d->nevents;
    rep.events_lost = d->events_lost;
    find(d, &rep, fail_outage);
    pthread_mutex_unlock(&d->ev_mu);

    char shown[ARG_SHOWN_LEN];
    FILE *f = out_stream(&d->out);
    if (!f) {
        fail_msg(CMD, "cannot write the report to %s: %s",
                 arg_shown(d->output, shown, sizeof(shown)), strerror(errno));
        goto out;
    }
    if (ends_with(d->output, ".svg"))
        drill_write_svg(f, &rep);
    else
        drill_write_html(f, &rep);
    if (out_close(f) != 0) {
        fail_msg(CMD, "cannot write the report to %s: %s",
                 arg_shown(d->output, shown, sizeof(shown)), strerror(errno));
        goto out;
    }
    if (d->json)
        print_json(&rep, d->output);
    else
        print_summary(&rep, d->output);
    rc = rep.recovered ? EXIT_OK : EXIT_FAIL;

out:
    out_abandon(&d->out); /* not written: the drill did not get that far */
    if (d->pool)
        (void)dbpool_close(d->pool); /* before the event log goes away */
    relay_stop(d->relay);
    if (d->cl) {
        for (int i = 0; i < d->clients; i++)
            free(d->cl[i]);
        free(d->cl);
    }
    free(cur);
    free(prev);
    free(dok);
    free(derr);
    free(fail_outage);
    free(rep.samples);
    free(d->events);
    workload_free(&d->wl);
    pthread_mutex_destroy(&d->ev_mu);
    free(d->shown);
    free(d->relay_ci);
    free(d);
    return rc;
}
