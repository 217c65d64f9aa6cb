/* config.c - pool options: defaults, setting by name from strings, validation.
 * Every option and its default is documented in dbpool.h. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define MAX_SIZE 10000
#define MAX_MS (INT64_C(1000) * 3600 * 24 * 365) /* one year */

void dbpool_config_init(dbpool_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->name = "default";
    cfg->size = 10;
    cfg->min_size = -1;
    cfg->idle_timeout = 0;
    cfg->queue = 1;
    cfg->lifo = 0;
    cfg->queue_target = 50;
    cfg->queue_interval = 1000;
    cfg->checkout_timeout = 15000;
    cfg->idle_interval = 1000;
    cfg->idle_limit = 0;
    cfg->ping_timeout = 5000;
    cfg->connect_timeout = 10000;
    cfg->backoff_type = DBPOOL_BACKOFF_RAND_EXP;
    cfg->backoff_min = -1;
    cfg->backoff_max = 30000;
    cfg->probe_interval = 100; /* <= 10 connects/s while down, first success <= 150 ms */
    cfg->max_lifetime = 1800000;
    cfg->hold_timeout = 15000;
    cfg->reset_timeout = 5000;
    cfg->after_connect = NULL;
    cfg->log_cb = NULL;
    cfg->log_arg = NULL;
    cfg->log_level = DBPOOL_LOG_WARNING;
    cfg->event_cb = NULL;
    cfg->event_arg = NULL;
    cfg->leak_threshold = 0;
    cfg->alive_check = 500; /* HikariCP's aliveBypassWindowMs */
}

/* "1500", "1500ms", "2s", "1m", "1h" -> ms. Returns 0; -1 if malformed
 * ("1e30s", "1.5s"); -2 if above MAX_MS, including numbers strtoll cannot
 * hold (checked before multiplying, so nothing overflows). */
static int parse_ms(const char *v, int64_t *out)
{
    char *end;
    long long n;

    if (!v || !isdigit((unsigned char)*v))
        return -1;
    errno = 0;
    n = strtoll(v, &end, 10);
    if (errno == ERANGE)
        n = LLONG_MAX; /* too large whatever the unit, if the unit is valid */
    else if (errno || n < 0)
        return -1;
    int64_t mul = 1;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return -1;
    if (n > MAX_MS / mul)
        return -2;
    *out = (int64_t)n * mul;
    return 0;
}

static int parse_int(const char *v, int *out)
{
    char *end;
    long n;

    if (!v || !*v)
        return -1;
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno || *end || n < INT32_MIN || n > INT32_MAX)
        return -1;
    *out = (int)n;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    if (!v)
        return -1;
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "yes"))
        *out = 1;
    else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "no"))
        *out = 0;
    else
        return -1;
    return 0;
}

struct opt {
    const char *name;
    enum { O_INT, O_MS, O_BOOL, O_STR, O_BACKOFF, O_LEVEL } type;
    size_t off;
};

/* clang-format off */
#define OPT(n, t) {#n, t, offsetof(dbpool_config, n)}
/* clang-format on */
static const struct opt opts[] = {
    OPT(name, O_STR),
    OPT(size, O_INT),
    OPT(min_size, O_INT),
    OPT(idle_timeout, O_MS),
    OPT(queue, O_BOOL),
    OPT(lifo, O_BOOL),
    OPT(queue_target, O_MS),
    OPT(queue_interval, O_MS),
    OPT(checkout_timeout, O_MS),
    OPT(idle_interval, O_MS),
    OPT(idle_limit, O_INT),
    OPT(ping_timeout, O_MS),
    OPT(connect_timeout, O_MS),
    OPT(backoff_type, O_BACKOFF),
    OPT(backoff_min, O_MS),
    OPT(backoff_max, O_MS),
    OPT(probe_interval, O_MS),
    OPT(max_lifetime, O_MS),
    OPT(hold_timeout, O_MS),
    OPT(reset_timeout, O_MS),
    OPT(after_connect, O_STR),
    OPT(log_level, O_LEVEL),
    OPT(leak_threshold, O_MS),
    OPT(alive_check, O_MS),
};

int dbpool_config_set(dbpool_config *out, const char *name, const char *value)
{
    if (!out || !name || !value)
        return set_error(DBPOOL_EINVAL, "dbpool_config_set: NULL argument");
    /* work on a copy so a rejected value leaves the config unchanged */
    dbpool_config tmp = *out, *cfg = &tmp;
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        const struct opt *o = &opts[i];
        char *field = (char *)cfg + o->off;
        int ok = 0;

        if (strcmp(o->name, name) != 0)
            continue;
        switch (o->type) {
        case O_INT: {
            int v;
            ok = parse_int(value, &v) == 0;
            if (ok)
                memcpy(field, &v, sizeof(v));
            break;
        }
        case O_MS: {
            int64_t v;
            int r = parse_ms(value, &v);
            if (r == -2)
                return set_error(DBPOOL_EINVAL,
                                 "value \"%.64s\" for option \"%s\" is out of range (at most "
                                 "one year: 8760h = %lld ms)",
                                 value, name, (long long)MAX_MS);
            ok = r == 0;
            if (ok)
                memcpy(field, &v, sizeof(v));
            break;
        }
        case O_BOOL: {
            int v;
            ok = parse_bool(value, &v) == 0;
            if (ok)
                memcpy(field, &v, sizeof(v));
            break;
        }
        case O_STR:
            memcpy(field, &value, sizeof(value));
            ok = 1;
            break;
        case O_BACKOFF: {
            dbpool_backoff_type t;
            ok = 1;
            if (!strcmp(value, "rand_exp"))
                t = DBPOOL_BACKOFF_RAND_EXP;
            else if (!strcmp(value, "exp"))
                t = DBPOOL_BACKOFF_EXP;
            else if (!strcmp(value, "rand"))
                t = DBPOOL_BACKOFF_RAND;
            else if (!strcmp(value, "stop"))
                t = DBPOOL_BACKOFF_STOP;
            else
                ok = 0;
            if (ok)
                memcpy(field, &t, sizeof(t));
            break;
        }
        case O_LEVEL: {
            static const char *names[] = {"debug", "info", "warning", "error", "none"};
            ok = 0;
            for (int l = 0; l < 5; l++) {
                if (!strcmp(value, names[l])) {
                    dbpool_log_level lv = (dbpool_log_level)l;
                    memcpy(field, &lv, sizeof(lv));
                    ok = 1;
                }
            }
            break;
        }
        }
        if (!ok)
            return set_error(DBPOOL_EINVAL, "invalid value \"%.64s\" for option \"%s\"", value,
                             name);
        /* range check the same way dbpool_open() will */
        int rc = config_validate(cfg);
        if (rc == 0)
            *out = tmp;
        return rc;
    }
    return set_error(DBPOOL_EINVAL, "unknown option \"%.64s\"", name);
}

int dbpool_config_parse(dbpool_config *cfg, const char *options)
{
    char name[64], value[128];

    if (!cfg || !options)
        return set_error(DBPOOL_EINVAL, "dbpool_config_parse: NULL argument");
    const char *s = options;
    for (;;) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n')
            s++;
        if (!*s)
            return 0;
        size_t n = strcspn(s, "= ,\t\n");
        if (s[n] != '=' || n == 0 || n >= sizeof(name))
            return set_error(DBPOOL_EINVAL, "malformed option near \"%.32s\" (want name=value)", s);
        memcpy(name, s, n);
        name[n] = '\0';
        s += n + 1;
        n = strcspn(s, " ,\t\n");
        if (n == 0 || n >= sizeof(value))
            return set_error(DBPOOL_EINVAL, "missing or too long value for option \"%s\"", name);
        memcpy(value, s, n);
        value[n] = '\0';
        s += n;
        for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
            if (!strcmp(opts[i].name, name) && opts[i].type == O_STR)
                return set_error(DBPOOL_EINVAL,
                                 "option \"%s\" cannot be set by dbpool_config_parse", name);
        int rc = dbpool_config_set(cfg, name, value);
        if (rc)
            return rc;
    }
}

#define RANGE(field, lo, hi)                                                                       \
    do {                                                                                           \
        if (cfg->field < (lo) || cfg->field > (hi))                                                \
            return set_error(DBPOOL_EINVAL, "option \"" #field "\" out of range (%lld..%lld)",     \
                             (long long)(lo), (long long)(hi));                                    \
    } while (0)

int config_validate(const dbpool_config *cfg)
{
    RANGE(size, 1, MAX_SIZE);
    RANGE(min_size, -1, cfg->size);
    RANGE(idle_timeout, 0, MAX_MS);
    RANGE(queue, 0, 1);
    RANGE(lifo, 0, 1);
    RANGE(queue_target, 1, MAX_MS);
    RANGE(queue_interval, 1, MAX_MS);
    RANGE(checkout_timeout, 0, MAX_MS);
    RANGE(idle_interval, 1, MAX_MS);
    RANGE(idle_limit, 0, MAX_SIZE);
    RANGE(ping_timeout, 1, MAX_MS);
    RANGE(connect_timeout, 1, MAX_MS);
    RANGE(backoff_type, DBPOOL_BACKOFF_RAND_EXP, DBPOOL_BACKOFF_STOP);
    RANGE(backoff_min, -1, MAX_MS);
    RANGE(backoff_max, 1, MAX_MS);
    RANGE(probe_interval, 0, MAX_MS);
    RANGE(max_lifetime, 0, MAX_MS);
    RANGE(hold_timeout, 0, MAX_MS);
    RANGE(reset_timeout, 1, MAX_MS);
    RANGE(log_level, DBPOOL_LOG_DEBUG, DBPOOL_LOG_NONE);
    RANGE(leak_threshold, 0, MAX_MS);
    RANGE(alive_check, 0, MAX_MS);
    if (cfg->backoff_min > cfg->backoff_max)
        return set_error(DBPOOL_EINVAL, "backoff_min (%lld) is above backoff_max (%lld)",
                         (long long)cfg->backoff_min, (long long)cfg->backoff_max);
    return 0;
}
