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

uint64_t hist_count_below_pow2(const struct hist *h, int k)
{
    uint64_t n = 0;

    /* below 2^k: buckets 0 .. 2k-1 (bucket 2k starts at 2^k) */
    for (int b = 0; b < 2 * k && b < HIST_BUCKETS; b++)
        n += h->b[b];
    return n;
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

/*
 * One histogram of a pool: which = 0 queue, 1 hold, 2 connect. The buckets
 * are powers of two of microseconds, 64 us to 2^24 us (16.8 s): edges of the
 * pool's own log-scale buckets, so every count is exact (a bucket counts the
 * values below its edge, at microsecond resolution), and the same in every
 * process, so they add up across instances.
 */
#define PROM_K_MIN 6
#define PROM_K_MAX 24
static void emit_hist(struct out *o, const char *m, const char *name, dbpool *p, int which)
{
    struct hist h[3];

    if (pool_hists_copy(p, &h[0], &h[1], &h[2]) != 0)
        memset(h, 0, sizeof(h));
    const struct hist *x = &h[which];
    for (int k = PROM_K_MIN; k <= PROM_K_MAX; k++)
        emit(o, "%s_bucket{pool=\"%s\",le=\"%.6f\"} %llu\n", m, name, (double)(1u << k) / 1e6,
             (unsigned long long)hist_count_below_pow2(x, k));
    emit(o, "%s_bucket{pool=\"%s\",le=\"+Inf\"} %llu\n", m, name, (unsigned long long)x->n);
    emit(o, "%s_sum{pool=\"%s\"} %.6f\n", m, name, (double)x->sum_us / 1e6);
    emit(o, "%s_count{pool=\"%s\"} %llu\n", m, name, (unsigned long long)x->n);
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
        {"dbpool_connections", "gauge", "Connections (slots) by state."},
        {"dbpool_size", "gauge", "Configured size (most connections)."},
        {"dbpool_min_size", "gauge", "Configured min_size (connections kept open)."},
        {"dbpool_waiting", "gauge", "Callers waiting in the checkout queue."},
        {"dbpool_oldest_wait_seconds", "gauge",
         "How long the oldest caller in the queue has waited so far (0 if none)."},
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
        {"dbpool_rollbacks_total", "counter", "Check-ins that rolled back an open transaction."},
        {"dbpool_queue_seconds", "histogram", "Time spent waiting for a connection."},
        {"dbpool_hold_seconds", "histogram", "Time a connection was held by a caller."},
        {"dbpool_connect_seconds", "histogram", "Time a successful connect took."},
    };
    enum { F_HIST = 16 }; /* the histograms come last */
    static const char *const states[] = {"idle",    "busy",    "connecting", "pinging",
                                         "backoff", "stopped", "dormant"};
    emit(&o,
         "# HELP dbpool_build_info The dbpool library in use.\n"
         "# TYPE dbpool_build_info gauge\n"
         "dbpool_build_info{version=\"%s\"} 1\n",
         DBPOOL_VERSION_STRING);
    for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
        emit(&o, "# HELP %s %s\n# TYPE %s %s\n", fams[f].metric, fams[f].help, fams[f].metric,
             fams[f].type);
        for (size_t i = 0; i < npools; i++) {
            if (!pools[i] || dbpool_stats_get(pools[i], &st) != 0)
                continue;
            label(name, sizeof(name), dbpool_pool_name(pools[i]));
            const char *m = fams[f].metric;
            if (f == 0) {
                const int v[] = {st.idle,    st.busy,    st.connecting, st.pinging,
                                 st.backoff, st.stopped, st.dormant};
                for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++)
                    emit(&o, "%s{pool=\"%s\",state=\"%s\"} %d\n", m, name, states[k], v[k]);
                continue;
            }
            if (f >= F_HIST) {
                emit_hist(&o, m, name, pools[i], (int)(f - F_HIST));
                continue;
            }
            unsigned long long v = 0;
            switch (f) {
            case 1:
                v = (unsigned long long)st.size;
                break;
            case 2:
                v = (unsigned long long)st.min_size;
                break;
            case 3:
                v = (unsigned long long)st.waiting;
                break;
            case 4:
                emit(&o, "%s{pool=\"%s\"} %.3f\n", m, name, (double)st.oldest_wait_ms / 1e3);
                continue;
            case 5:
                v = st.state == DBPOOL_STATE_UP;
                break;
            case 6:
                v = st.checkouts;
                break;
            case 7:
                v = st.drops;
                break;
            case 8:
                v = st.timeouts;
                break;
            case 9:
                v = st.connects;
                break;
            case 10:
                v = st.connect_failures;
                break;
            case 11:
                v = st.disconnects;
                break;
            case 12:
                v = st.pings;
                break;
            case 13:
                v = st.ping_failures;
                break;
            case 14:
                v = st.hold_timeouts;
                break;
            case 15:
                v = st.rollbacks;
                break;
            }
            emit(&o, "%s{pool=\"%s\"} %llu\n", m, name, v);
        }
    }
    if (needed)
        *needed = o.len + 1;
    if (o.len >= buflen)
        return set_error(DBPOOL_ENOMEM, "buffer too small: %zu bytes needed", o.len + 1);
    return 0;
}
