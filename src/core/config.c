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
#define MAX_WAITING 1000000
#define MAX_USES 1000000000
#define MAX_MS (INT64_C(1000) * 3600 * 24 * 365) /* one year */

/* dbpool_config_init is below the table. */

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

/*
 * Every option once: name, type, field, default, range. dbpool_config_init,
 * dbpool_config_set/_parse, config_validate and the docs check
 * (tests/unit_config.c against docs/configuration.md) all read this table,
 * as libpq's PQconninfoOptions[] serves its parsers. The callbacks (log_cb,
 * event_cb and their args) are not options by name: they default to NULL.
 */
enum opt_type { O_INT, O_MS, O_BOOL, O_STR, O_BACKOFF, O_LEVEL };

struct opt {
    const char *name;
    enum opt_type type;
    size_t off;
    int64_t def;    /* numeric types; O_STR fields default to NULL but `name` */
    int64_t lo, hi; /* valid range of numeric types */
};

/* clang-format off */
#define OPT(n, t, d, lo, hi) {#n, t, offsetof(dbpool_config, n), d, lo, hi}
static const struct opt opts[] = {
    OPT(name,             O_STR,     0,     0, 0),
    OPT(size,             O_INT,     10,    1, MAX_SIZE),
    OPT(min_size,         O_INT,     -1,    -1, MAX_SIZE),  /* and <= size */
    OPT(idle_timeout,     O_MS,      0,     0, MAX_MS),
    OPT(queue,            O_BOOL,    1,     0, 1),
    OPT(lifo,             O_BOOL,    0,     0, 1),
    OPT(barge_window,     O_MS,      2,     0, MAX_MS),
    OPT(queue_target,     O_MS,      50,    1, MAX_MS),
    OPT(queue_interval,   O_MS,      2000,  1, MAX_MS),     /* DBConnection >= 2.8.0 */
    OPT(checkout_timeout, O_MS,      15000, 0, MAX_MS),
    OPT(idle_interval,    O_MS,      1000,  1, MAX_MS),
    OPT(idle_limit,       O_INT,     0,     0, MAX_SIZE),
    OPT(ping_timeout,     O_MS,      5000,  1, MAX_MS),
    OPT(connect_timeout,  O_MS,      10000, 1, MAX_MS),
    OPT(backoff_type,     O_BACKOFF, DBPOOL_BACKOFF_RAND_EXP, DBPOOL_BACKOFF_RAND_EXP, DBPOOL_BACKOFF_STOP),
    OPT(backoff_min,      O_MS,      -1,    -1, MAX_MS),    /* and <= backoff_max */
    OPT(backoff_max,      O_MS,      30000, 1, MAX_MS),
    OPT(probe_interval,   O_MS,      100,   0, MAX_MS),
    OPT(max_lifetime,     O_MS,      1800000, 0, MAX_MS),
    OPT(hold_timeout,     O_MS,      15000, 0, MAX_MS),
    OPT(reset_timeout,    O_MS,      5000,  1, MAX_MS),
    OPT(after_connect,    O_STR,     0,     0, 0),
    OPT(log_level,        O_LEVEL,   DBPOOL_LOG_WARNING, DBPOOL_LOG_DEBUG, DBPOOL_LOG_NONE),
    OPT(leak_threshold,   O_MS,      0,     0, MAX_MS),
    OPT(alive_check,      O_MS,      500,   0, MAX_MS),     /* HikariCP's aliveBypassWindowMs */
    OPT(max_waiting,      O_INT,     0,     0, MAX_WAITING), /* psycopg_pool's max_waiting */
    OPT(reset_query,      O_STR,     0,     0, 0),          /* PgBouncer's server_reset_query */
    OPT(max_uses,         O_INT,     0,     0, MAX_USES),   /* node-postgres' maxUses */
};
/* clang-format on */
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

/* Numeric fields are int (O_INT, O_BOOL, the enums) or int64_t (O_MS). */
static int64_t get_num(const dbpool_config *cfg, const struct opt *o)
{
    const char *f = (const char *)cfg + o->off;
    int i;
    int64_t v;

    if (o->type == O_MS) {
        memcpy(&v, f, sizeof(v));
        return v;
    }
    memcpy(&i, f, sizeof(i));
    return i;
}

static void set_num(dbpool_config *cfg, const struct opt *o, int64_t v)
{
    char *f = (char *)cfg + o->off;
    int i = (int)v;

    if (o->type == O_MS)
        memcpy(f, &v, sizeof(v));
    else
        memcpy(f, &i, sizeof(i));
}

void dbpool_config_init(dbpool_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof(*cfg)); /* strings and callbacks NULL */
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].type != O_STR)
            set_num(cfg, &opts[i], opts[i].def);
    cfg->name = "default";
}

const char *config_option(size_t i, int *numeric, int64_t *def)
{
    if (i >= NOPTS)
        return NULL;
    *numeric = opts[i].type == O_INT || opts[i].type == O_MS;
    *def = opts[i].def;
    return opts[i].name;
}

int dbpool_config_set(dbpool_config *out, const char *name, const char *value)
{
    if (!out || !name || !value)
        return set_error(DBPOOL_EINVAL, "dbpool_config_set: NULL argument");
    /* work on a copy so a rejected value leaves the config unchanged */
    dbpool_config tmp = *out, *cfg = &tmp;
    for (size_t i = 0; i < NOPTS; i++) {
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
        for (size_t i = 0; i < NOPTS; i++)
            if (!strcmp(opts[i].name, name) && opts[i].type == O_STR)
                return set_error(DBPOOL_EINVAL,
                                 "option \"%s\" cannot be set by dbpool_config_parse", name);
        int rc = dbpool_config_set(cfg, name, value);
        if (rc)
            return rc;
    }
}

int config_validate(const dbpool_config *cfg)
{
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt *o = &opts[i];
        if (o->type == O_STR)
            continue;
        int64_t v = get_num(cfg, o);
        if (v < o->lo || v > o->hi)
            return set_error(DBPOOL_EINVAL, "option \"%s\" out of range (%lld..%lld)", o->name,
                             (long long)o->lo, (long long)o->hi);
    }
    if (cfg->min_size > cfg->size)
        return set_error(DBPOOL_EINVAL, "option \"min_size\" out of range (-1..%d)", cfg->size);
    if (cfg->backoff_min > cfg->backoff_max)
        return set_error(DBPOOL_EINVAL, "backoff_min (%lld) is above backoff_max (%lld)",
                         (long long)cfg->backoff_min, (long long)cfg->backoff_max);
    return 0;
}
