/* stats.c - latency histograms and the Prometheus text rendering of pool stats.
 * Recording is a few integer ops under the pool mutex the caller already holds. */
#include "stats.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

static int bucket_of(uint64_t us)
{
    if (us < 2)
        return 0;
    int lg = 63 - __builtin_clzll(us); /* 2^lg <= us < 2^(lg+1) */
    /* second half of the octave: us >= 1.5 * 2^lg, close enough to sqrt(2) */
    int half = (us - (UINT64_C(1) << lg)) >= (UINT64_C(1) << lg) / 2;
    int b = 2 * lg + half;
    return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

/* exclusive upper edge of bucket b */
static uint64_t edge_of(int b)
{
    int lg = b / 2;
    if (b == 0)
        return 2;
    if (b >= HIST_BUCKETS - 1)
        return UINT64_MAX;
    return (b % 2) ? UINT64_C(1) << (lg + 1) : (UINT64_C(1) << lg) + (UINT64_C(1) << lg) / 2;
}

void hist_add(struct hist *h, int64_t us)
{
    uint64_t v = us < 0 ? 0 : (uint64_t)us;

    h->n++;
    h->sum_us += v;
    if (v > h->max_us)
        h->max_us = v;
    h->b[bucket_of(v)]++;
}

int64_t hist_quantile(const struct hist *h, double q)
{
    if (!h->n)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n);
    if (rank >= h->n)
        rank = h->n - 1;
    uint64_t seen = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) {
        seen += h->b[b];
        if (seen > rank) {
            uint64_t e = edge_of(b);
            return (int64_t)(e > h->max_us ? h->max_us : e);
        }
    }
    return (int64_t)h->max_us;
}

void hist_summary(const struct hist *h, dbpool_histogram *out)
{
    out->count = h->n;
    out->sum_us = (int64_t)h->sum_us;
    out->max_us = (int64_t)h->max_us;
    out->p50_us = hist_quantile(h, 0.50);
    out->p90_us = hist_quantile(h, 0.90);
    out->p99_us = hist_quantile(h, 0.99);
}

/* ---- Prometheus text format --------------------------------------------- */

struct out {
    char *buf;
    size_t len, cap;
};

static void emit(struct out *o, const char *fmt, ...) DBPOOL_PRINTF(2, 3);
static void emit(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf ? o->buf + (o->len < o->cap ? o->len : o->cap) : NULL,
                      o->buf && o->len < o->cap ? o->cap - o->len : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s)
{
    size_t n;
    unsigned cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        n = 2, cp = s[0] & 0x1F;
    else if (s[0] >= 0xE0 && s[0] <= 0xEF)
        n = 3, cp = s[0] & 0x0F;
    else if (s[0] >= 0xF0 && s[0] <= 0xF4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && cp < 0x10000) ||
        cp > 0x10FFFF)
        return 0; /* overlong, surrogate or out of range */
    return n;
}

/*
 * A label value for the pool name (a tenant key is any bytes): backslash,
 * quote and newline escaped, invalid UTF-8 replaced by U+FFFD. When the
 * value is not the name byte for byte (cut to fit, or bytes replaced), it
 * ends with "~" and a hash of the whole name, so two names never share a
 * series (Prometheus rejects a scrape with duplicates).
 */
static void label(char *dst, size_t cap, const char *v)
{
    static const char fffd[] = "\xEF\xBF\xBD"; /* U+FFFD */
    const unsigned char *s = (const unsigned char *)v;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a of the raw name */
    size_t j = 0;
    int exact = 1;

    for (const unsigned char *q = s; *q; q++)
        h = (h ^ *q) * 1099511628211ULL;
    while (*s) {
        size_t n = utf8_len(s), olen = n;
        const char *out = (const char *)s;
        char esc[2];
        if (n == 0) {
            out = fffd;
            olen = 3;
            n = 1;
            exact = 0;
        } else if (*s == '\\' || *s == '"' || *s == '\n') {
            esc[0] = '\\';
            esc[1] = *s == '\n' ? 'n' : (char)*s;
            out = esc;
            olen = 2;
        }
        if (j + olen + 18 >= cap) { /* keep room for "~" + 16 hex digits + NUL */
            exact = 0;
            break;
        }
        memcpy(dst + j, out, olen);
        j += olen;
        s += n;
    }
    if (!exact)
        j += (size_t)snprintf(dst + j, cap - j, "~%016llx", (unsigned long long)h);
    dst[j] = '\0';
}

int dbpool_stats_prometheus(dbpool *const *pools, size_t npools, char *buf, size_t buflen,
                            size_t *needed)
{
    struct out o = {buf, 0, buflen};
    dbpool_stats st;
    char name[160];

    if ((!pools && npools) || (!buf && buflen))
        return set_error(DBPOOL_EINVAL, "dbpool_stats_prometheus: NULL argument");
    static const struct {
        const char *metric, *type, *help;
    } fams[] = {
        {"dbpool_connections", "gauge", "Connections by state."},
        {"dbpool_waiting", "gauge", "Callers waiting in the checkout queue."},
        {"dbpool_up", "gauge", "1 if the pool state is up."},
        {"dbpool_checkouts_total", "counter", "Successful checkouts."},
        {"dbpool_drops_total", "counter", "Checkouts dropped by the queue (CoDel)."},
        {"dbpool_timeouts_total", "counter", "Checkouts that reached their deadline."},
        {"dbpool_connects_total", "counter", "Successful connects."},
        {"dbpool_connect_failures_total", "counter", "Failed connects."},
        {"dbpool_disconnects_total", "counter", "Connections closed."},
        {"dbpool_pings_total", "counter", "Idle pings that succeeded."},
        {"dbpool_ping_failures_total", "counter", "Idle pings that failed."},
        {"dbpool_hold_timeouts_total", "counter", "Leases that outlived hold_timeout."},
        {"dbpool_queue_seconds", "summary", "Time spent waiting for a connection."},
        {"dbpool_hold_seconds", "summary", "Time a connection was held by a caller."},
    };
    for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
        emit(&o, "# HELP %s %s\n# TYPE %s %s\n", fams[f].metric, fams[f].help, fams[f].metric,
             fams[f].type);
        for (size_t i = 0; i < npools; i++) {
            if (!pools[i] || dbpool_stats_get(pools[i], &st) != 0)
                continue;
            label(name, sizeof(name), dbpool_pool_name(pools[i]));
            const char *m = fams[f].metric;
            switch (f) {
            case 0:
                emit(&o, "%s{pool=\"%s\",state=\"idle\"} %d\n", m, name, st.idle);
                emit(&o, "%s{pool=\"%s\",state=\"busy\"} %d\n", m, name, st.busy);
                emit(&o, "%s{pool=\"%s\",state=\"connecting\"} %d\n", m, name, st.connecting);
                emit(&o, "%s{pool=\"%s\",state=\"pinging\"} %d\n", m, name, st.pinging);
                emit(&o, "%s{pool=\"%s\",state=\"backoff\"} %d\n", m, name, st.backoff);
                emit(&o, "%s{pool=\"%s\",state=\"stopped\"} %d\n", m, name, st.stopped);
                break;
            case 1:
                emit(&o, "%s{pool=\"%s\"} %d\n", m, name, st.waiting);
                break;
            case 2:
                emit(&o, "%s{pool=\"%s\"} %d\n", m, name, st.state == DBPOOL_STATE_UP);
                break;
#define C(i, field)                                                                                \
    case i:                                                                                        \
        emit(&o, "%s{pool=\"%s\"} %llu\n", m, name, (unsigned long long)st.field);                 \
        break;
                C(3, checkouts)
                C(4, drops)
                C(5, timeouts)
                C(6, connects)
                C(7, connect_failures)
                C(8, disconnects)
                C(9, pings)
                C(10, ping_failures)
                C(11, hold_timeouts)
#undef C
            case 12:
            case 13: {
                const dbpool_histogram *h = f == 12 ? &st.queue_time : &st.hold_time;
                emit(&o, "%s{pool=\"%s\",quantile=\"0.5\"} %.6f\n", m, name, h->p50_us / 1e6);
                emit(&o, "%s{pool=\"%s\",quantile=\"0.9\"} %.6f\n", m, name, h->p90_us / 1e6);
                emit(&o, "%s{pool=\"%s\",quantile=\"0.99\"} %.6f\n", m, name, h->p99_us / 1e6);
                emit(&o, "%s_sum{pool=\"%s\"} %.6f\n", m, name, h->sum_us / 1e6);
                emit(&o, "%s_count{pool=\"%s\"} %llu\n", m, name, (unsigned long long)h->count);
                break;
            }
            }
        }
    }
    if (needed)
        *needed = o.len + 1;
    if (o.len >= buflen)
        return set_error(DBPOOL_ENOMEM, "buffer too small: %zu bytes needed", o.len + 1);
    return 0;
}
