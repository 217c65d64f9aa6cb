/* fuzz_config.c - libFuzzer target for the option parsers: dbpool_config_parse()
 * on the input as one option string, and dbpool_config_set() on the input
 * split at its first NUL into name and value.
 *
 * Checked, as dbpool.h promises: the result is 0 or DBPOOL_EINVAL; a failure
 * has a message; a rejected dbpool_config_set() leaves the config unchanged;
 * an accepted config is within the documented ranges; and "name=value"
 * through dbpool_config_parse() does exactly what dbpool_config_set(name,
 * value) does. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dbpool.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_config: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The ranges documented in dbpool.h (and docs/configuration.md) for a config
 * dbpool_open() accepts. */
static void check_valid(const dbpool_config *c)
{
    CHECK(c->size >= 1 && c->size <= 10000);
    CHECK(c->min_size >= -1 && c->min_size <= c->size);
    CHECK(c->idle_timeout >= 0);
    CHECK(c->queue == 0 || c->queue == 1);
    CHECK(c->lifo == 0 || c->lifo == 1);
    CHECK(c->queue_target > 0);
    CHECK(c->queue_interval > 0);
    CHECK(c->checkout_timeout >= 0);
    CHECK(c->idle_interval > 0);
    CHECK(c->idle_limit >= 0);
    CHECK(c->ping_timeout > 0);
    CHECK(c->connect_timeout > 0);
    CHECK(c->backoff_type >= DBPOOL_BACKOFF_RAND_EXP && c->backoff_type <= DBPOOL_BACKOFF_STOP);
    CHECK(c->backoff_min >= -1);
    CHECK(c->backoff_max > 0);
    CHECK(c->backoff_min <= c->backoff_max);
    CHECK(c->max_lifetime >= 0);
    CHECK(c->hold_timeout >= 0);
    CHECK(c->reset_timeout > 0);
    CHECK(c->log_level >= DBPOOL_LOG_DEBUG && c->log_level <= DBPOOL_LOG_NONE);
    CHECK(c->leak_threshold >= 0);
    CHECK(c->barge_window >= 0);
    CHECK(c->probe_interval >= 0);
    CHECK(c->alive_check >= 0);
    CHECK(c->max_waiting >= 0 && c->max_waiting <= 1000000);
    CHECK(c->max_uses >= 0 && c->max_uses <= 1000000000);
}

static void check_rc(int rc)
{
    CHECK(rc == 0 || rc == DBPOOL_EINVAL);
    const char *e = dbpool_last_error();
    CHECK(e != NULL);
    CHECK(strlen(e) < 4096);
    if (rc != 0)
        CHECK(e[0] != '\0');
}

/* Field by field: struct padding is not part of the value. */
static int same_config(const dbpool_config *a, const dbpool_config *b)
{
#define F(f) (a->f == b->f)
    return F(name) && F(size) && F(min_size) && F(idle_timeout) && F(queue) && F(lifo) &&
           F(barge_window) && F(max_waiting) && F(max_uses) && F(reset_query) &&
           F(queue_target) && F(queue_interval) && F(checkout_timeout) && F(idle_interval) &&
           F(idle_limit) && F(ping_timeout) && F(connect_timeout) && F(backoff_type) &&
           F(backoff_min) && F(backoff_max) && F(max_lifetime) && F(hold_timeout) &&
           F(reset_timeout) && F(after_connect) && F(log_cb) && F(log_arg) && F(log_level) &&
           F(event_cb) && F(event_arg) && F(leak_threshold) && F(probe_interval) &&
           F(alive_check);
#undef F
}

static int is_string_option(const char *name)
{
    return !strcmp(name, "name") || !strcmp(name, "after_connect") ||
           !strcmp(name, "reset_query");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dbpool_config cfg, before;
    char *s;

    if (size > 4096)
        return 0;
    s = malloc(size + 2);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    s[size + 1] = '\0';

    /* 1. the whole input as an option string (up to its first NUL) */
    dbpool_config_init(&cfg);
    int rc = dbpool_config_parse(&cfg, s);
    check_rc(rc);
    if (rc == 0)
        check_valid(&cfg);
    /* string options are refused by parse: name and after_connect stay */
    CHECK(cfg.after_connect == NULL && cfg.reset_query == NULL);
    CHECK(cfg.name != NULL && !strcmp(cfg.name, "default"));

    /* 2. name NUL value */
    const char *name = s, *value = s + strlen(s) + 1;
    if (value > s + size)
        value = "";
    dbpool_config_init(&cfg);
    cfg.size = 50; /* so min_size/idle_limit have room */
    before = cfg;
    rc = dbpool_config_set(&cfg, name, value);
    check_rc(rc);
    if (rc != 0) {
        CHECK(same_config(&cfg, &before));
    } else {
        check_valid(&cfg);
        if (!strcmp(name, "name"))
            CHECK(cfg.name == value); /* not copied, as documented */
        if (!strcmp(name, "after_connect"))
            CHECK(cfg.after_connect == value);
        if (!strcmp(name, "reset_query"))
            CHECK(cfg.reset_query == value);
    }

    /* 3. parse("name=value") == set(name, value), when the pair can be
     * written as one item of an option string */
    size_t nl = strlen(name), vl = strlen(value);
    if (nl > 0 && nl < 64 && vl > 0 && vl < 128 && strcspn(name, "= ,\t\n") == nl &&
        strcspn(value, " ,\t\n") == vl && !is_string_option(name)) {
        dbpool_config by_set = before, by_parse = before;
        char item[200];
        snprintf(item, sizeof(item), "%s=%s", name, value);
        int rs = dbpool_config_set(&by_set, name, value);
        int rp = dbpool_config_parse(&by_parse, item);
        CHECK(rs == rp);
        CHECK(same_config(&by_set, &by_parse));
    }
    free(s);
    return 0;
}
