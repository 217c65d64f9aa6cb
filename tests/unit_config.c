/* unit_config.c - options (defaults, setting by name, parsing, validation), error
 * and state names, and the argument checks of dbpool_open()/dbpool_pg_open().
 * No database: dbpool_pg_open() is only given strings (or configs) it rejects
 * before any connect starts. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dbpool.h"
#include "stub_driver.h"
#include "dbpool_pg.h"

#define ONE_YEAR_MS (INT64_C(1000) * 3600 * 24 * 365)
#define SECRET "supersecret123"

/* A non-NULL value that no real pool has: checks that *out is reset on error. */
static dbpool *const SENTINEL = (dbpool *)(uintptr_t)0x1;

/* ---- helpers ------------------------------------------------------------- */

/* The last error mentions `what` (the option, usually). */
static void assert_error_mentions(const char *what)
{
    const char *e = dbpool_last_error();

    assert_non_null(e);
    if (strstr(e, what) == NULL)
        fail_msg("last error \"%s\" does not mention \"%s\"", e, what);
}

/* Set name=value, expect DBPOOL_EINVAL, a message naming `name` and the config
 * byte-for-byte unchanged. */
static void assert_rejected(dbpool_config *cfg, const char *name, const char *value)
{
    dbpool_config before;

    memcpy(&before, cfg, sizeof(before));
    int rc = dbpool_config_set(cfg, name, value);
    if (rc != DBPOOL_EINVAL)
        fail_msg("%s=\"%s\": want DBPOOL_EINVAL, got %d", name, value, rc);
    assert_error_mentions(name);
    if (memcmp(&before, cfg, sizeof(before)) != 0)
        fail_msg("%s=\"%s\" was rejected but changed the config", name, value);
}

static void assert_set_ok(dbpool_config *cfg, const char *name, const char *value)
{
    int rc = dbpool_config_set(cfg, name, value);
    if (rc != 0)
        fail_msg("%s=\"%s\": want 0, got %d (%s)", name, value, rc, dbpool_last_error());
}

/* Duration options, with a pointer to the field and the smallest value allowed. */
struct ms_opt {
    const char *name;
    size_t off;
    int64_t lo;
};

static const struct ms_opt ms_opts[] = {
    {"queue_target", offsetof(dbpool_config, queue_target), 1},
    {"queue_interval", offsetof(dbpool_config, queue_interval), 1},
    {"checkout_timeout", offsetof(dbpool_config, checkout_timeout), 0},
    {"idle_interval", offsetof(dbpool_config, idle_interval), 1},
    {"ping_timeout", offsetof(dbpool_config, ping_timeout), 1},
    {"connect_timeout", offsetof(dbpool_config, connect_timeout), 1},
    {"backoff_min", offsetof(dbpool_config, backoff_min), 0},
    {"backoff_max", offsetof(dbpool_config, backoff_max), 1},
    {"max_lifetime", offsetof(dbpool_config, max_lifetime), 0},
    {"hold_timeout", offsetof(dbpool_config, hold_timeout), 0},
    {"reset_timeout", offsetof(dbpool_config, reset_timeout), 1},
    {"leak_threshold", offsetof(dbpool_config, leak_threshold), 0},
    {"idle_timeout", offsetof(dbpool_config, idle_timeout), 0},
    {"probe_interval", offsetof(dbpool_config, probe_interval), 0},
};
#define N_MS_OPTS (sizeof(ms_opts) / sizeof(ms_opts[0]))

static int64_t ms_field(const dbpool_config *cfg, const struct ms_opt *o)
{
    int64_t v;
    memcpy(&v, (const char *)cfg + o->off, sizeof(v));
    return v;
}

/* A config where any duration may be set to anything in range: backoff_min
 * must stay <= backoff_max, so give backoff_max its largest value. */
static void init_wide(dbpool_config *cfg)
{
    dbpool_config_init(cfg);
    cfg->backoff_max = ONE_YEAR_MS;
}

/* ---- defaults -------------------------------------------------------------- */

static void test_defaults(void **state)
{
    dbpool_config cfg;

    (void)state;
    memset(&cfg, 0xA5, sizeof(cfg)); /* every field must be written */
    dbpool_config_init(&cfg);
    assert_string_equal(cfg.name, "default");
    assert_int_equal(cfg.size, 10);
    assert_int_equal(cfg.min_size, -1);
    assert_int_equal(cfg.idle_timeout, 0);
    assert_int_equal(cfg.queue, 1);
    assert_int_equal(cfg.lifo, 0);
    assert_int_equal(cfg.queue_target, 50);
    assert_int_equal(cfg.queue_interval, 2000);
    assert_int_equal(cfg.checkout_timeout, 15000);
    assert_int_equal(cfg.idle_interval, 1000);
    assert_int_equal(cfg.idle_limit, 0);
    assert_int_equal(cfg.ping_timeout, 5000);
    assert_int_equal(cfg.connect_timeout, 10000);
    assert_int_equal(cfg.backoff_type, DBPOOL_BACKOFF_RAND_EXP);
    assert_true(cfg.backoff_min == -1);
    assert_int_equal(cfg.backoff_max, 30000);
    assert_int_equal(cfg.probe_interval, 100);
    assert_int_equal(cfg.max_lifetime, 1800000);
    assert_int_equal(cfg.hold_timeout, 15000);
    assert_int_equal(cfg.reset_timeout, 5000);
    assert_null(cfg.after_connect);
    assert_null(cfg.log_cb);
    assert_null(cfg.log_arg);
    assert_int_equal(cfg.log_level, DBPOOL_LOG_WARNING);
    assert_null(cfg.event_cb);
    assert_null(cfg.event_arg);
    assert_int_equal(cfg.leak_threshold, 0);

    dbpool_config_init(NULL); /* harmless */
}

/* ---- dbpool_config_set: accepted values ------------------------------------ */

static void test_set_int(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    assert_set_ok(&cfg, "size", "1");
    assert_int_equal(cfg.size, 1);
    assert_set_ok(&cfg, "size", "10000");
    assert_int_equal(cfg.size, 10000);
    assert_set_ok(&cfg, "size", "8");
    assert_int_equal(cfg.size, 8);
    assert_set_ok(&cfg, "idle_limit", "0");
    assert_int_equal(cfg.idle_limit, 0);
    assert_set_ok(&cfg, "idle_limit", "3");
    assert_int_equal(cfg.idle_limit, 3);
    assert_set_ok(&cfg, "idle_limit", "10000");
    assert_int_equal(cfg.idle_limit, 10000);
}

/* min_size: -1 (= size) or 0..size; size cannot drop below it. */
static void test_set_min_size(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    assert_set_ok(&cfg, "min_size", "0");
    assert_int_equal(cfg.min_size, 0);
    assert_set_ok(&cfg, "min_size", "10");
    assert_int_equal(cfg.min_size, 10);
    assert_set_ok(&cfg, "min_size", "-1");
    assert_int_equal(cfg.min_size, -1);
    assert_rejected(&cfg, "min_size", "11");
    assert_rejected(&cfg, "min_size", "-2");
    assert_rejected(&cfg, "min_size", "x");
    assert_int_equal(cfg.min_size, -1);

    assert_set_ok(&cfg, "min_size", "5");
    dbpool_config before;
    memcpy(&before, &cfg, sizeof(cfg));
    assert_int_equal(dbpool_config_set(&cfg, "size", "4"), DBPOOL_EINVAL);
    assert_error_mentions("min_size");
    assert_memory_equal(&before, &cfg, sizeof(cfg));
    assert_set_ok(&cfg, "size", "5");
    assert_int_equal(cfg.size, 5);
}

static void test_set_durations(void **state)
{
    static const struct {
        const char *text;
        int64_t ms;
    } forms[] = {
        {"250", 250},    {"250ms", 250}, {"2s", 2000},           {"3m", 180000},
        {"1h", 3600000}, {"0s", 0},      {"8760h", ONE_YEAR_MS}, /* the largest value: one year */
    };

    (void)state;
    for (size_t i = 0; i < N_MS_OPTS; i++) {
        const struct ms_opt *o = &ms_opts[i];
        for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
            dbpool_config cfg;

            if (forms[f].ms < o->lo)
                continue;
            init_wide(&cfg);
            assert_set_ok(&cfg, o->name, forms[f].text);
            if (ms_field(&cfg, o) != forms[f].ms)
                fail_msg("%s=%s gave %lld ms, want %lld", o->name, forms[f].text,
                         (long long)ms_field(&cfg, o), (long long)forms[f].ms);
        }
    }
}

static void test_set_durations_only_touch_their_field(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_MS_OPTS; i++) {
        dbpool_config cfg, want;

        init_wide(&cfg);
        memcpy(&want, &cfg, sizeof(want));
        assert_set_ok(&cfg, ms_opts[i].name, "7s");
        int64_t v = 7000;
        memcpy((char *)&want + ms_opts[i].off, &v, sizeof(v));
        if (memcmp(&want, &cfg, sizeof(cfg)) != 0)
            fail_msg("setting %s changed another field", ms_opts[i].name);
    }
}

static void test_set_bool(void **state)
{
    static const char *const yes[] = {"1", "true", "on", "yes"};
    static const char *const no[] = {"0", "false", "off", "no"};
    static const char *const names[] = {"queue", "lifo"};

    (void)state;
    for (size_t n = 0; n < 2; n++) {
        for (size_t i = 0; i < 4; i++) {
            dbpool_config cfg;

            dbpool_config_init(&cfg);
            cfg.queue = cfg.lifo = 0;
            assert_set_ok(&cfg, names[n], yes[i]);
            assert_int_equal(n == 0 ? cfg.queue : cfg.lifo, 1);
            assert_set_ok(&cfg, names[n], no[i]);
            assert_int_equal(n == 0 ? cfg.queue : cfg.lifo, 0);
        }
    }
}

static void test_set_backoff_type(void **state)
{
    static const struct {
        const char *name;
        dbpool_backoff_type type;
    } types[] = {
        {"exp", DBPOOL_BACKOFF_EXP},
        {"rand", DBPOOL_BACKOFF_RAND},
        {"stop", DBPOOL_BACKOFF_STOP},
        {"rand_exp", DBPOOL_BACKOFF_RAND_EXP},
    };
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        assert_set_ok(&cfg, "backoff_type", types[i].name);
        assert_int_equal(cfg.backoff_type, types[i].type);
    }
}

static void test_set_log_level(void **state)
{
    static const struct {
        const char *name;
        dbpool_log_level level;
    } levels[] = {
        {"debug", DBPOOL_LOG_DEBUG}, {"info", DBPOOL_LOG_INFO},       {"error", DBPOOL_LOG_ERROR},
        {"none", DBPOOL_LOG_NONE},   {"warning", DBPOOL_LOG_WARNING},
    };
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        assert_set_ok(&cfg, "log_level", levels[i].name);
        assert_int_equal(cfg.log_level, levels[i].level);
    }
}

static void test_set_strings(void **state)
{
    static const char app[] = "app";
    static const char sql[] = "SET application_name = 'x'";
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    assert_set_ok(&cfg, "name", app);
    assert_ptr_equal(cfg.name, app); /* not copied: must live until dbpool_open */
    assert_set_ok(&cfg, "after_connect", sql);
    assert_ptr_equal(cfg.after_connect, sql);
}

static void test_set_backoff_bounds(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    /* only max given: min stays auto (-1) */
    assert_set_ok(&cfg, "backoff_max", "500ms");
    assert_int_equal(cfg.backoff_max, 500);
    assert_true(cfg.backoff_min == -1);
    assert_set_ok(&cfg, "backoff_min", "500ms"); /* min == max is fine */
    assert_int_equal(cfg.backoff_min, 500);
    /* min above max, either way round */
    assert_rejected(&cfg, "backoff_min", "501");
    assert_rejected(&cfg, "backoff_max", "499");
    assert_int_equal(cfg.backoff_min, 500);
    assert_int_equal(cfg.backoff_max, 500);
}

/* ---- dbpool_config_set: rejections ------------------------------------------ */

static void test_reject_unknown(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    assert_rejected(&cfg, "sizee", "8");
    assert_rejected(&cfg, "", "8");
    assert_rejected(&cfg, "log_cb", "x"); /* not settable by name */
    assert_rejected(&cfg, "SIZE", "8");   /* names are exact */
}

static void test_reject_int(void **state)
{
    static const char *const bad[] = {"0",  "-3",  "10001",       "abc",         "",
                                      "8x", "1.5", "99999999999", "-99999999999"};
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    cfg.size = 7; /* not the default: unchanged means unchanged */
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_rejected(&cfg, "size", bad[i]);
    assert_int_equal(cfg.size, 7);
    assert_rejected(&cfg, "idle_limit", "-1");
    assert_rejected(&cfg, "idle_limit", "10001");
    assert_rejected(&cfg, "idle_limit", "x");
}

static void test_reject_durations(void **state)
{
    static const char *const bad[] = {
        "-5",
        "-5ms",
        "-1",
        "1.5s",
        "5d",
        "5 s",
        " 5",
        "ms",
        "",
        "s5",
        "5sec",
        "0x10",
        "8761h",                /* over one year */
        "31536000001",          /* one year + 1 ms */
        "99999999999999999999", /* overflows */
    };

    (void)state;
    for (size_t i = 0; i < N_MS_OPTS; i++) {
        dbpool_config cfg;

        init_wide(&cfg);
        for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++)
            assert_rejected(&cfg, ms_opts[i].name, bad[b]);
        if (ms_opts[i].lo > 0)
            assert_rejected(&cfg, ms_opts[i].name, "0");
    }
}

/* Durations at and past the integer limits: a clear EINVAL that names the
 * range, never a wrapped value (issue 11). */
static void test_reject_huge_durations(void **state)
{
    static const char *const huge[] = {
        "9223372036854775807ms", /* INT64_MAX */
        "9223372036854775807",
        "9223372036854775808ms", /* INT64_MAX + 1: strtoll overflows */
        "9223372036854775807s",
        "9223372036854775807h",
        "2562047788015216h", /* * 3600000 wraps */
        "99999999999999999999999999999999m",
    };
    static const char *const malformed[] = {"1e30s", "1e3", "9.3e18ms", "inf", "nan"};

    (void)state;
    for (size_t i = 0; i < N_MS_OPTS; i++) {
        dbpool_config cfg;

        init_wide(&cfg);
        for (size_t h = 0; h < sizeof(huge) / sizeof(huge[0]); h++) {
            assert_rejected(&cfg, ms_opts[i].name, huge[h]);
            assert_error_mentions("out of range");
            assert_error_mentions("8760h");
        }
        for (size_t m = 0; m < sizeof(malformed) / sizeof(malformed[0]); m++) {
            assert_rejected(&cfg, ms_opts[i].name, malformed[m]);
            assert_error_mentions("invalid value");
        }
    }
    /* through dbpool_config_parse too */
    dbpool_config cfg;
    dbpool_config_init(&cfg);
    assert_int_equal(dbpool_config_parse(&cfg, "size=3 hold_timeout=9223372036854775807ms"),
                     DBPOOL_EINVAL);
    assert_error_mentions("out of range");
    assert_int_equal(cfg.hold_timeout, 15000);
}

static void test_reject_queue_target_zero(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    assert_rejected(&cfg, "queue_target", "0");
    assert_rejected(&cfg, "queue_target", "0ms");
    assert_int_equal(cfg.queue_target, 50);
}

static void test_reject_enums_and_bools(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    assert_rejected(&cfg, "queue", "2");
    assert_rejected(&cfg, "queue", "maybe");
    assert_rejected(&cfg, "queue", "");
    assert_rejected(&cfg, "lifo", "-1");
    assert_rejected(&cfg, "backoff_type", "linear");
    assert_rejected(&cfg, "backoff_type", "");
    assert_rejected(&cfg, "backoff_type", "0");
    assert_rejected(&cfg, "log_level", "verbose");
    assert_rejected(&cfg, "log_level", "");
    assert_rejected(&cfg, "log_level", "2");
}

static void test_set_null_args(void **state)
{
    dbpool_config cfg, before;

    (void)state;
    dbpool_config_init(&cfg);
    memcpy(&before, &cfg, sizeof(cfg));
    assert_int_equal(dbpool_config_set(NULL, "size", "8"), DBPOOL_EINVAL);
    assert_true(dbpool_last_error()[0] != '\0');
    assert_int_equal(dbpool_config_set(&cfg, NULL, "8"), DBPOOL_EINVAL);
    assert_true(dbpool_last_error()[0] != '\0');
    assert_int_equal(dbpool_config_set(&cfg, "size", NULL), DBPOOL_EINVAL);
    assert_true(dbpool_last_error()[0] != '\0');
    assert_int_equal(dbpool_config_set(&cfg, "name", NULL), DBPOOL_EINVAL);
    assert_memory_equal(&before, &cfg, sizeof(cfg));
}

/* ---- dbpool_config_parse ---------------------------------------------------- */

static void test_parse(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    assert_int_equal(dbpool_config_parse(&cfg, " size=4 queue_target=20ms,lifo=true ,, "
                                               "backoff_type=exp\tlog_level=debug\n"
                                               "max_lifetime=1h,queue=off idle_limit=2"),
                     0);
    assert_int_equal(cfg.size, 4);
    assert_int_equal(cfg.queue_target, 20);
    assert_int_equal(cfg.lifo, 1);
    assert_int_equal(cfg.backoff_type, DBPOOL_BACKOFF_EXP);
    assert_int_equal(cfg.log_level, DBPOOL_LOG_DEBUG);
    assert_int_equal(cfg.max_lifetime, 3600000);
    assert_int_equal(cfg.queue, 0);
    assert_int_equal(cfg.idle_limit, 2);
    /* untouched */
    assert_int_equal(cfg.queue_interval, 2000);
    assert_string_equal(cfg.name, "default");
}

static void test_parse_empty(void **state)
{
    dbpool_config cfg, before;

    (void)state;
    dbpool_config_init(&cfg);
    memcpy(&before, &cfg, sizeof(cfg));
    assert_int_equal(dbpool_config_parse(&cfg, ""), 0);
    assert_int_equal(dbpool_config_parse(&cfg, " , ,\t\n"), 0);
    assert_memory_equal(&before, &cfg, sizeof(cfg));
}

static void test_parse_malformed(void **state)
{
    static const char *const bad[] = {
        "size",
        "=4",
        "size=",
        "size =4",
        "size= 4",
        "name=x",
        "after_connect=SELECT",
        "size=4=5",
        "bogus=1",
        "size=0",
        "queue_target=0",
        "size=4 lifo",
        "lifo=true =1",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        dbpool_config cfg;

        dbpool_config_init(&cfg);
        cfg.lifo = 0;
        int rc = dbpool_config_parse(&cfg, bad[i]);
        if (rc != DBPOOL_EINVAL)
            fail_msg("\"%s\": want DBPOOL_EINVAL, got %d", bad[i], rc);
        assert_true(dbpool_last_error()[0] != '\0');
    }
}

static void test_parse_string_options_rejected(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    assert_int_equal(dbpool_config_parse(&cfg, "name=x"), DBPOOL_EINVAL);
    assert_error_mentions("name");
    assert_string_equal(cfg.name, "default");
    assert_int_equal(dbpool_config_parse(&cfg, "after_connect=x"), DBPOOL_EINVAL);
    assert_error_mentions("after_connect");
    assert_null(cfg.after_connect);
}

static void test_parse_stops_at_first_error(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    assert_int_equal(dbpool_config_parse(&cfg, "size=4 queue_target=0 lifo=true"), DBPOOL_EINVAL);
    assert_error_mentions("queue_target");
    assert_int_equal(cfg.size, 4); /* before the error: applied */
    assert_int_equal(cfg.queue_target, 50);
    assert_int_equal(cfg.lifo, 0); /* after the error: not reached */

    dbpool_config_init(&cfg);
    assert_int_equal(dbpool_config_parse(&cfg, "size=5 nosuch=1 size=6"), DBPOOL_EINVAL);
    assert_error_mentions("nosuch");
    assert_int_equal(cfg.size, 5);
}

static void test_parse_long_tokens(void **state)
{
    char buf[400];
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    /* a value too long for any option */
    snprintf(buf, sizeof(buf), "size=%0200d", 8);
    assert_int_equal(dbpool_config_parse(&cfg, buf), DBPOOL_EINVAL);
    /* a name too long for any option */
    memset(buf, 'x', 200);
    strcpy(buf + 200, "=1");
    assert_int_equal(dbpool_config_parse(&cfg, buf), DBPOOL_EINVAL);
    assert_int_equal(cfg.size, 10);
}

static void test_parse_null_args(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    assert_int_equal(dbpool_config_parse(NULL, "size=4"), DBPOOL_EINVAL);
    assert_int_equal(dbpool_config_parse(&cfg, NULL), DBPOOL_EINVAL);
    assert_int_equal(cfg.size, 10);
}

/* ---- error and state names ---------------------------------------------------- */

static void test_strerror(void **state)
{
    const char *names[1 - DBPOOL_ESKIPPED];

    (void)state;
    for (int code = 0; code >= DBPOOL_ESKIPPED; code--) {
        const char *s = dbpool_strerror(code);
        assert_non_null(s);
        assert_true(s[0] != '\0');
        if (strcmp(s, "unknown error") == 0)
            fail_msg("known code %d named \"unknown error\"", code);
        names[-code] = s;
        for (int other = 0; other > code; other--)
            if (strcmp(names[-other], s) == 0)
                fail_msg("codes %d and %d share the name \"%s\"", other, code, s);
    }
    assert_string_equal(dbpool_strerror(1), "unknown error");
    assert_string_equal(dbpool_strerror(DBPOOL_ESKIPPED - 1), "unknown error");
    assert_string_equal(dbpool_strerror(-1000), "unknown error");
    assert_string_equal(dbpool_strerror(INT_MIN), "unknown error");
    assert_string_equal(dbpool_strerror(INT_MAX), "unknown error");
}

/* One version: the header's numbers, the string derived from them, what the
 * library reports and what CMake read from the header all agree. */
static void test_version(void **state)
{
    (void)state;
    char want[32];
    snprintf(want, sizeof(want), "%d.%d.%d", DBPOOL_VERSION_MAJOR, DBPOOL_VERSION_MINOR,
             DBPOOL_VERSION_PATCH);
    assert_string_equal(DBPOOL_VERSION_STRING, want);
    assert_string_equal(dbpool_version(), want);
    assert_string_equal(DBPOOL_PROJECT_VERSION, want);
    assert_int_equal(DBPOOL_VERSION_NUM, DBPOOL_VERSION_MAJOR * 10000 + DBPOOL_VERSION_MINOR * 100 +
                                             DBPOOL_VERSION_PATCH);
}

static void test_state_name(void **state)
{
    (void)state;
    assert_string_equal(dbpool_state_name(DBPOOL_STATE_STARTING), "starting");
    assert_string_equal(dbpool_state_name(DBPOOL_STATE_UP), "up");
    assert_string_equal(dbpool_state_name(DBPOOL_STATE_DOWN), "down");
    assert_string_equal(dbpool_state_name(DBPOOL_STATE_PAUSED), "paused");
    assert_string_equal(dbpool_state_name(DBPOOL_STATE_STOPPED), "stopped");
    assert_string_equal(dbpool_state_name(DBPOOL_STATE_CLOSED), "closed");
    assert_non_null(dbpool_state_name((dbpool_state)99));
    assert_non_null(dbpool_state_name((dbpool_state)-1));
}

/* ---- dbpool_open: argument checks (no pool is ever created) ------------------ */

static void test_open_null_args(void **state)
{
    dbpool *p = SENTINEL;
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    assert_int_equal(dbpool_open(NULL, &stub_driver, NULL, &cfg), DBPOOL_EINVAL);
    assert_true(dbpool_last_error()[0] != '\0');
    assert_int_equal(dbpool_open(&p, NULL, NULL, &cfg), DBPOOL_EINVAL);
    assert_null(p);
    assert_true(dbpool_last_error()[0] != '\0');

    dbpool_driver incomplete = stub_driver;
    incomplete.connect_start = NULL;
    p = SENTINEL;
    assert_int_equal(dbpool_open(&p, &incomplete, NULL, &cfg), DBPOOL_EINVAL);
    assert_null(p);
    incomplete = stub_driver;
    incomplete.disconnect = NULL;
    p = SENTINEL;
    assert_int_equal(dbpool_open(&p, &incomplete, NULL, &cfg), DBPOOL_EINVAL);
    assert_null(p);
}

static void test_open_bad_config(void **state)
{
    dbpool *p;
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    cfg.size = 0;
    p = SENTINEL;
    assert_int_equal(dbpool_open(&p, &stub_driver, NULL, &cfg), DBPOOL_EINVAL);
    assert_null(p);
    assert_error_mentions("size");

    dbpool_config_init(&cfg);
    cfg.size = 10001;
    p = SENTINEL;
    assert_int_equal(dbpool_open(&p, &stub_driver, NULL, &cfg), DBPOOL_EINVAL);
    assert_null(p);
    assert_error_mentions("size");

    dbpool_config_init(&cfg);
    cfg.queue_target = 0;
    p = SENTINEL;
    assert_int_equal(dbpool_open(&p, &stub_driver, NULL, &cfg), DBPOOL_EINVAL);
    assert_null(p);
    assert_error_mentions("queue_target");

    dbpool_config_init(&cfg);
    cfg.hold_timeout = -1;
    p = SENTINEL;
    assert_int_equal(dbpool_open(&p, &stub_driver, NULL, &cfg), DBPOOL_EINVAL);
    assert_null(p);
    assert_error_mentions("hold_timeout");

    dbpool_config_init(&cfg);
    cfg.backoff_type = (dbpool_backoff_type)17;
    p = SENTINEL;
    assert_int_equal(dbpool_open(&p, &stub_driver, NULL, &cfg), DBPOOL_EINVAL);
    assert_null(p);
    assert_error_mentions("backoff_type");

    dbpool_config_init(&cfg);
    cfg.backoff_min = 5000;
    cfg.backoff_max = 4000;
    p = SENTINEL;
    assert_int_equal(dbpool_open(&p, &stub_driver, NULL, &cfg), DBPOOL_EINVAL);
    assert_null(p);
    assert_error_mentions("backoff_min");
}

/* With no pool open the allocator can be set; an incomplete one is refused. */
static void test_set_allocator(void **state)
{
    dbpool_allocator a = {malloc, calloc, NULL};

    (void)state;
    assert_int_equal(dbpool_set_allocator(&a), DBPOOL_EINVAL);
    a.free = free;
    assert_int_equal(dbpool_set_allocator(&a), 0);
    assert_int_equal(dbpool_set_allocator(NULL), 0);
}

/* Functions that take a pool or a lease reject NULL without crashing. */
static void test_null_handles(void **state)
{
    dbpool_lease lease = {(struct dbpool_slot *)SENTINEL, 42};
    dbpool_lease empty = {NULL, 0};
    dbpool_stats st;

    (void)state;
    assert_int_equal(dbpool_close(NULL), 0);
    assert_int_equal(dbpool_checkout(NULL, DBPOOL_DEFAULT_TIMEOUT, &lease), DBPOOL_EINVAL);
    assert_null(lease.slot); /* cleared even on error */
    assert_int_equal(dbpool_checkin(NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_discard(NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_checkin(&empty), DBPOOL_EINVAL);
    assert_int_equal(dbpool_discard(&empty), DBPOOL_EINVAL);
    assert_null(dbpool_lease_conn(NULL));
    assert_null(dbpool_lease_conn(&empty));
    assert_int_equal(dbpool_lease_check(NULL), DBPOOL_EINVAL);
    assert_true(dbpool_lease_check(&empty) != 0);
    assert_null(dbpool_pg_conn(NULL));
    assert_null(dbpool_pg_conn(&empty));
    assert_int_equal(dbpool_reconnect(NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_restart(NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_stats_get(NULL, &st), DBPOOL_EINVAL);
}

/* ---- dbpool_pg_open: rejected before any connect ------------------------------ */

static void assert_pg_open_rejected(const char *conninfo, const dbpool_config *cfg)
{
    dbpool *p = SENTINEL;
    int rc = dbpool_pg_open(&p, conninfo, cfg);

    if (rc != DBPOOL_EINVAL) {
        if (rc == 0)
            dbpool_close(p);
        fail_msg("dbpool_pg_open(\"%s\"): want DBPOOL_EINVAL, got %d", conninfo, rc);
    }
    assert_null(p);
    assert_true(dbpool_last_error()[0] != '\0');
}

static void test_pg_open_malformed(void **state)
{
    static const char *const bad[] = {
        "host=localhost port=notaport",
        "postgresql://[bad",
        "nosuchkey=1",
        "host='unterminated",
        "host=localhost port=0",
        "host=localhost port=65536",
        "host=a,b port=5432,x",
        "host=localhost port=-1",
        "host=localhost dbname",
        "postgresql://h:notaport/db",
        "postgresql://h/db?nosuchkey=1",
        "postgresql://h/db?sslmode",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_pg_open_rejected(bad[i], NULL);
        assert_error_mentions("invalid connection string");
    }
}

static void test_pg_open_null_args(void **state)
{
    dbpool *p = SENTINEL;

    (void)state;
    assert_int_equal(dbpool_pg_open(NULL, "host=localhost", NULL), DBPOOL_EINVAL);
    assert_int_equal(dbpool_pg_open(&p, NULL, NULL), DBPOOL_EINVAL);
    assert_null(p);
}

/* A valid conninfo with a bad config is rejected by dbpool_open() before the
 * manager starts any connect (so this is safe without a server). */
static void test_pg_open_bad_config(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    cfg.size = 0;
    assert_pg_open_rejected("host=127.0.0.1 port=1 password=" SECRET, &cfg);
    assert_error_mentions("size");
    dbpool_config_init(&cfg);
    cfg.after_connect = "SET application_name = 'x'";
    cfg.queue_target = 0;
    assert_pg_open_rejected("postgresql://u:" SECRET "@127.0.0.1:1/db", &cfg);
    assert_error_mentions("queue_target");
}

static void test_pg_open_never_shows_password(void **state)
{
    static const char *const bad[] = {
        "password=" SECRET " port=x",
        "postgresql://u:" SECRET "@h:notaport/db",
        "postgresql://u:" SECRET "@[bad",
        "password=" SECRET " nosuchkey=1",
        "password=" SECRET " host='unterminated",
        "password='" SECRET "' host=h port=99999",
        "password = " SECRET " dbname",
        "postgresql://u:" SECRET "@h/db?nosuchkey=1",
        "postgresql://u:" SECRET "@h:99999/db",
        "postgresql://u:" SECRET "%zz@h/db", /* bad percent-encoding in the password */
        "postgresql://u:" SECRET "@h/db%zz",
        "postgresql://u@h/db?password=" SECRET "&nosuchkey=1",
        "postgresql://u@[bad?password=" SECRET,
        "postgres://:" SECRET "@[::1",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char buf[256];

        assert_pg_open_rejected(bad[i], NULL);
        if (strstr(dbpool_last_error(), SECRET))
            fail_msg("dbpool_pg_open(\"%s\") leaked the password: %s", bad[i], dbpool_last_error());
        /* the same parser guards dbpool_pg_redact() */
        strcpy(buf, "junk");
        assert_int_equal(dbpool_pg_redact(bad[i], buf, sizeof(buf)), DBPOOL_EINVAL);
        assert_null(strstr(dbpool_last_error(), SECRET));
        assert_null(strstr(buf, SECRET));
    }
}

/* A long URI password that libpq echoes back in its parse error is scrubbed
 * whole (regression: it was skipped at 256 bytes and more). */
static void test_pg_open_long_password_not_shown(void **state)
{
    char uri[700], pw[400];

    (void)state;
    memset(pw, 'S', 300);
    pw[300] = '\0';
    snprintf(uri, sizeof(uri), "postgresql://u:%s@[bad", pw);
    assert_pg_open_rejected(uri, NULL);
    assert_null(strstr(dbpool_last_error(), "SSSSSSSS"));
}

/* ---- dbpool_pg_redact ----------------------------------------------------------- */

static void assert_redacted(const char *conninfo, const char *secret, const char *const *keep)
{
    char buf[512];
    char *errmsg = NULL;

    memset(buf, 'x', sizeof(buf));
    int rc = dbpool_pg_redact(conninfo, buf, sizeof(buf));
    if (rc != 0)
        fail_msg("redact(\"%s\"): %d %s", conninfo, rc, dbpool_last_error());
    if (strstr(buf, secret))
        fail_msg("redact(\"%s\") = \"%s\" shows the password", conninfo, buf);
    if (!strstr(buf, "password=********"))
        fail_msg("redact(\"%s\") = \"%s\" has no password=********", conninfo, buf);
    for (; keep && *keep; keep++)
        if (!strstr(buf, *keep))
            fail_msg("redact(\"%s\") = \"%s\" lost \"%s\"", conninfo, buf, *keep);
    /* the result is itself a conninfo libpq accepts */
    PQconninfoOption *o = PQconninfoParse(buf, &errmsg);
    if (!o) {
        char why[256];
        snprintf(why, sizeof(why), "%s", errmsg ? errmsg : "?");
        PQfreemem(errmsg);
        fail_msg("redact(\"%s\") = \"%s\" does not parse: %s", conninfo, buf, why);
    }
    PQconninfoFree(o);
}

static void test_redact(void **state)
{
    static const char *const kv_keep[] = {"host=h", "user=u", "dbname=d", NULL};
    static const char *const uri_keep[] = {"host=h",    "user=u",          "dbname=d",
                                           "port=5432", "sslmode=disable", NULL};
    static const char *const multi_keep[] = {"host=a,b", "port=5432,5433", NULL};

    (void)state;
    assert_redacted("host=h user=u password=" SECRET " dbname=d", SECRET, kv_keep);
    assert_redacted("host=h user=u password='" SECRET "' dbname=d", SECRET, kv_keep);
    assert_redacted("host=h password='super secret 123' user=u dbname=d", "secret", kv_keep);
    assert_redacted("postgresql://u:" SECRET "@h:5432/d?sslmode=disable", SECRET, uri_keep);
    assert_redacted("postgres://u@h:5432/d?password=" SECRET "&sslmode=disable", SECRET, uri_keep);
    assert_redacted("host=a,b port=5432,5433 password=" SECRET, SECRET, multi_keep);
}

static void test_redact_no_password(void **state)
{
    char buf[256];

    (void)state;
    assert_int_equal(dbpool_pg_redact("host=/tmp dbname=app", buf, sizeof(buf)), 0);
    assert_non_null(strstr(buf, "host=/tmp"));
    assert_non_null(strstr(buf, "dbname=app"));
    assert_null(strstr(buf, "password"));
    assert_int_equal(dbpool_pg_redact("", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
}

static void test_redact_small_buffer(void **state)
{
    const char *ci = "host=h user=u password=" SECRET " dbname=d";
    char buf[64];

    (void)state;
    for (size_t len = 1; len <= sizeof(buf); len++) {
        memset(buf, 'x', sizeof(buf));
        /* too small: DBPOOL_ENOMEM (documented), still terminated, never the secret */
        int rc = dbpool_pg_redact(ci, buf, len);
        assert_true(rc == 0 || rc == DBPOOL_ENOMEM);
        assert_true(strlen(buf) < len); /* always terminated within buflen */
        assert_null(strstr(buf, SECRET));
        assert_null(strstr(buf, "supersecret"));
    }
}

static void test_redact_rejects(void **state)
{
    char buf[128];

    (void)state;
    assert_int_equal(dbpool_pg_redact(NULL, buf, sizeof(buf)), DBPOOL_EINVAL);
    assert_int_equal(dbpool_pg_redact("host=h", NULL, 10), DBPOOL_EINVAL);
    assert_int_equal(dbpool_pg_redact("host=h", buf, 0), DBPOOL_EINVAL);
    strcpy(buf, "junk");
    assert_int_equal(dbpool_pg_redact("nosuchkey=1", buf, sizeof(buf)), DBPOOL_EINVAL);
    assert_string_equal(buf, "");
    assert_int_equal(dbpool_pg_redact("host=h port=x", buf, sizeof(buf)), DBPOOL_EINVAL);
    assert_int_equal(dbpool_pg_redact("postgresql://[bad", buf, sizeof(buf)), DBPOOL_EINVAL);
}

/* Quoted values are escaped so the redacted string parses back with libpq
 * (regression: ' and \\ were not escaped). */
static void test_redact_quotes_values(void **state)
{
    static const char *const keep[] = {"host=h", NULL};

    (void)state;
    assert_redacted("host=h application_name='O\\'Brien' password=" SECRET, SECRET, keep);
    assert_redacted("host=h application_name='back\\\\slash' password=" SECRET, SECRET, keep);
}

/* docs/configuration.md has a row for every option of the table in
 * src/core/config.c, and the row of a numeric option shows its default. */
static void test_docs_list_every_option(void **state)
{
    (void)state;
    FILE *f = fopen(DBPOOL_DOCS_DIR "/configuration.md", "r");
    assert_non_null(f);
    static char doc[1 << 16];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    fclose(f);
    doc[n] = '\0';
    int numeric, count = 0;
    int64_t def;
    const char *name;
    for (size_t i = 0; (name = config_option(i, &numeric, &def)) != NULL; i++, count++) {
        char key[96], want[48];
        snprintf(key, sizeof key, "\n| `%s` |", name);
        const char *row = strstr(doc, key);
        if (!row)
            fail_msg("docs/configuration.md has no row for option %s", name);
        if (!numeric)
            continue;
        const char *end = strchr(row + 1, '\n');
        snprintf(want, sizeof want, "`%lld`", (long long)def);
        const char *hit = strstr(row, want);
        if (!hit || (end && hit > end))
            fail_msg("docs/configuration.md: the row of %s does not show its default %s", name,
                     want);
    }
    assert_true(count > 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_docs_list_every_option),
        cmocka_unit_test(test_set_int),
        cmocka_unit_test(test_set_min_size),
        cmocka_unit_test(test_set_durations),
        cmocka_unit_test(test_set_durations_only_touch_their_field),
        cmocka_unit_test(test_set_bool),
        cmocka_unit_test(test_set_backoff_type),
        cmocka_unit_test(test_set_log_level),
        cmocka_unit_test(test_set_strings),
        cmocka_unit_test(test_set_backoff_bounds),
        cmocka_unit_test(test_reject_unknown),
        cmocka_unit_test(test_reject_int),
        cmocka_unit_test(test_reject_durations),
        cmocka_unit_test(test_reject_huge_durations),
        cmocka_unit_test(test_reject_queue_target_zero),
        cmocka_unit_test(test_reject_enums_and_bools),
        cmocka_unit_test(test_set_null_args),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_parse_empty),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_parse_string_options_rejected),
        cmocka_unit_test(test_parse_stops_at_first_error),
        cmocka_unit_test(test_parse_long_tokens),
        cmocka_unit_test(test_parse_null_args),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_state_name),
        cmocka_unit_test(test_open_null_args),
        cmocka_unit_test(test_open_bad_config),
        cmocka_unit_test(test_set_allocator),
        cmocka_unit_test(test_null_handles),
        cmocka_unit_test(test_pg_open_malformed),
        cmocka_unit_test(test_pg_open_null_args),
        cmocka_unit_test(test_pg_open_bad_config),
        cmocka_unit_test(test_pg_open_never_shows_password),
        cmocka_unit_test(test_pg_open_long_password_not_shown),
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_redact_no_password),
        cmocka_unit_test(test_redact_small_buffer),
        cmocka_unit_test(test_redact_rejects),
        cmocka_unit_test(test_redact_quotes_values),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
