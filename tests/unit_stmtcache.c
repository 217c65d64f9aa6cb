/* unit_stmtcache.c - the prepared-statement LRU (src/pg/stmtcache.c) without a
 * server: keys, most-recently-used order, eviction of the oldest, the names
 * kept for DEALLOCATE and their bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "stmtcache.h"

static struct stmt *add(struct stmtcache *c, const char *sql, int n, const Oid *types)
{
    uint64_t h = stmtcache_hash(sql, n, types);
    struct stmt *s = stmtcache_new(c, h, sql, n, types);
    assert_non_null(s);
    stmtcache_add(c, s);
    return s;
}

static void test_keys_and_order(void **state)
{
    (void)state;
    struct stmtcache c;
    const Oid int4[] = {23}, text[] = {25};
    stmtcache_init(&c);

    struct stmt *a = add(&c, "SELECT $1", 1, int4);
    struct stmt *b = add(&c, "SELECT $1", 1, text); /* same SQL, other types: other key */
    struct stmt *d = add(&c, "SELECT $1", 1, NULL); /* types inferred: other key */
    assert_int_equal(c.lru.n, 3);
    assert_string_not_equal(a->name, b->name);
    assert_ptr_equal(stmtcache_oldest(&c), a);

    /* a hit becomes the most recently used */
    assert_ptr_equal(stmtcache_get(&c, stmtcache_hash("SELECT $1", 1, int4), "SELECT $1", 1, int4),
                     a);
    assert_ptr_equal(stmtcache_oldest(&c), b);
    assert_null(stmtcache_get(&c, stmtcache_hash("SELECT 2", 0, NULL), "SELECT 2", 0, NULL));
    assert_ptr_equal(stmtcache_get(&c, stmtcache_hash("SELECT $1", 1, NULL), "SELECT $1", 1, NULL),
                     d);

    /* forgetting keeps the name for DEALLOCATE */
    char name[STMTCACHE_NAME_LEN];
    memcpy(name, b->name, sizeof(name));
    assert_int_equal(stmtcache_forget(&c, stmtcache_oldest(&c)), 0);
    assert_int_equal(c.lru.n, 2);
    assert_int_equal(c.npending, 1);
    assert_string_equal(c.pending[0], name);
    stmtcache_clear(&c);
    assert_int_equal(c.lru.n, 0);
    assert_null(stmtcache_oldest(&c));
}

static void test_pending_bound(void **state)
{
    (void)state;
    struct stmtcache c;
    char sql[32];
    stmtcache_init(&c);
    for (int i = 0; i < STMTCACHE_PENDING_MAX + 1; i++) {
        snprintf(sql, sizeof sql, "SELECT %d", i);
        add(&c, sql, 0, NULL);
    }
    for (int i = 0; i < STMTCACHE_PENDING_MAX; i++)
        assert_int_equal(stmtcache_forget(&c, stmtcache_oldest(&c)), 0);
    /* full: the statement is dropped, its name is not kept (-1) */
    assert_int_equal(stmtcache_forget(&c, stmtcache_oldest(&c)), -1);
    assert_int_equal(c.npending, STMTCACHE_PENDING_MAX);
    assert_int_equal(c.lru.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_and_order),
        cmocka_unit_test(test_pending_bound),
    };
    return cmocka_run_group_tests_name("unit_stmtcache", tests, NULL, NULL);
}
