/*
 * sandbox_cmocka.c - a cmocka test suite whose database tests run in
 * parallel threads, each in its own sandbox, against one database
 * (docs/testing-with-a-sandbox.md).
 *
 *     sandbox_cmocka "host=/run/postgresql dbname=app_test"
 *
 * The code under test (a tiny accounts module) uses only the ordinary pool
 * API; it never learns it runs in a sandbox. Every test case checks out an
 * owner, runs, and checks the owner in: its writes are rolled back, so the
 * cases may use the same account names at the same time and each starts
 * from an empty table.
 *
 * cmocka's assertions are not thread-safe (they longjmp out of the running
 * test), so the cases report with CHECK() into their own context, and one
 * cmocka test runs them all in parallel and fails with every case's message.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <dbpool_pg.h>
#include <dbpool_sandbox.h>

static const char *conninfo;
static dbpool *db;

/* ---- the code under test ---------------------------------------------------- */

static int account_create(dbpool *pool, const char *name, int balance)
{
    char b[16];
    const char *v[] = {name, b};
    dbpool_pg_params p = {.n = 2, .values = v};

    snprintf(b, sizeof(b), "%d", balance);
    return dbpool_pg_query(pool, "INSERT INTO sbx_example_accounts VALUES ($1, $2::int)", &p, NULL,
                           NULL);
}

/* -1 if there is no such account or the query failed. */
static int account_balance(dbpool *pool, const char *name)
{
    const char *v[] = {name};
    dbpool_pg_params p = {.n = 1, .values = v};
    dbpool_pg_result r;
    int bal = -1;

    if (dbpool_pg_query(pool, "SELECT balance FROM sbx_example_accounts WHERE name = $1", &p, NULL,
                        &r) == 0 &&
        PQntuples(r.res) == 1)
        bal = atoi(PQgetvalue(r.res, 0, 0));
    dbpool_pg_result_clear(&r);
    return bal;
}

static int account_count(dbpool *pool)
{
    dbpool_pg_result r;
    int n = -1;

    if (dbpool_pg_query(pool, "SELECT count(*) FROM sbx_example_accounts", NULL, NULL, &r) == 0)
        n = atoi(PQgetvalue(r.res, 0, 0));
    dbpool_pg_result_clear(&r);
    return n;
}

struct transfer {
    const char *from, *to;
    int amount;
};

static int move(dbpool_lease *tx, const char *name, int delta)
{
    char d[16];
    const char *v[] = {d, name};
    dbpool_pg_params p = {.n = 2, .values = v};

    snprintf(d, sizeof(d), "%d", delta);
    return dbpool_pg_exec(tx,
                          "UPDATE sbx_example_accounts SET balance = balance + $1::int "
                          "WHERE name = $2",
                          &p, NULL, NULL);
}

static int transfer_body(dbpool_lease *tx, void *arg)
{
    struct transfer *t = arg;
    int rc = move(tx, t->to, t->amount);

    /* the CHECK (balance >= 0) constraint refuses an overdraft */
    return rc != 0 ? rc : move(tx, t->from, -t->amount);
}

/* A transaction; in a sandbox it is a savepoint of the test's transaction. */
static int account_transfer(dbpool *pool, const char *from, const char *to, int amount)
{
    struct transfer t = {from, to, amount};

    return dbpool_pg_transaction(pool, transfer_body, &t, NULL, NULL);
}

/* ---- a small parallel runner ------------------------------------------------ */

struct tctx {
    const char *name;
    void (*fn)(struct tctx *);
    dbpool_owner *owner;
    char failure[512];
};

#define CHECK(ctx, cond)                                                                           \
    do {                                                                                           \
        if (!(cond) && !(ctx)->failure[0])                                                         \
            snprintf((ctx)->failure, sizeof((ctx)->failure), "%s:%d: %s (%s)", __FILE__, __LINE__, \
                     #cond, dbpool_last_error());                                                  \
    } while (0)

static void *run_case(void *arg)
{
    struct tctx *c = arg;
    int rc = dbpool_sandbox_checkout(db, DBPOOL_DEFAULT_TIMEOUT, &c->owner);

    if (rc != 0) {
        snprintf(c->failure, sizeof(c->failure), "sandbox checkout: %s", dbpool_last_error());
        return NULL;
    }
    c->fn(c);
    rc = dbpool_sandbox_checkin(c->owner); /* everything the case wrote is rolled back */
    if (rc != 0 && !c->failure[0])
        snprintf(c->failure, sizeof(c->failure), "sandbox checkin: %s", dbpool_last_error());
    return NULL;
}

/* ---- the test cases ------------------------------------------------------------ */

static void case_starts_empty(struct tctx *c)
{
    CHECK(c, account_count(db) == 0);
}

static void case_create(struct tctx *c)
{
    CHECK(c, account_create(db, "alice", 100) == 0);
    CHECK(c, account_balance(db, "alice") == 100);
    CHECK(c, account_count(db) == 1);
}

static void case_transfer(struct tctx *c)
{
    CHECK(c, account_create(db, "alice", 100) == 0);
    CHECK(c, account_create(db, "bob", 0) == 0);
    CHECK(c, account_transfer(db, "alice", "bob", 30) == 0);
    CHECK(c, account_balance(db, "alice") == 70);
    CHECK(c, account_balance(db, "bob") == 30);
}

static void case_overdraft_rolls_back(struct tctx *c)
{
    CHECK(c, account_create(db, "alice", 10) == 0);
    CHECK(c, account_create(db, "bob", 0) == 0);
    CHECK(c, account_transfer(db, "alice", "bob", 30) == DBPOOL_EQUERY);
    CHECK(c, account_balance(db, "alice") == 10);
    CHECK(c, account_balance(db, "bob") == 0);
}

struct deposit {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int allowed;
    int failed;
};

/* A thread the test starts: it may use the test's connection once allowed. */
static void *depositor(void *arg)
{
    struct deposit *d = arg;
    struct transfer t = {"bank", "alice", 10};

    struct timespec until;
    int e = 0;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30; /* bounded: a test that forgets to allow us fails */
    pthread_mutex_lock(&d->mu);
    while (!d->allowed && e == 0)
        e = pthread_cond_timedwait(&d->cv, &d->mu, &until);
    int allowed = d->allowed;
    pthread_mutex_unlock(&d->mu);
    if (!allowed || account_transfer(db, t.from, t.to, t.amount) != 0)
        d->failed = 1;
    return NULL;
}

static void case_workers(struct tctx *c)
{
    struct deposit d = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    pthread_t t[4];

    CHECK(c, account_create(db, "alice", 0) == 0);
    CHECK(c, account_create(db, "bank", 1000) == 0);
    for (int i = 0; i < 4; i++) {
        if (pthread_create(&t[i], NULL, depositor, &d) != 0) {
            CHECK(c, !"pthread_create");
            return;
        }
        CHECK(c, dbpool_sandbox_allow(c->owner, t[i]) == 0);
    }
    pthread_mutex_lock(&d.mu);
    d.allowed = 1;
    pthread_cond_broadcast(&d.cv);
    pthread_mutex_unlock(&d.mu);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(c, !d.failed);
    CHECK(c, account_balance(db, "alice") == 40);
}

static const struct {
    const char *name;
    void (*fn)(struct tctx *);
} cases[] = {
    {"starts_empty", case_starts_empty}, {"create", case_create},
    {"transfer", case_transfer},         {"overdraft_rolls_back", case_overdraft_rolls_back},
    {"workers", case_workers},
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))
#define ROUNDS 3 /* every case three times at once: 15 tests in parallel */

static void test_sandbox_suite_in_parallel(void **state)
{
    struct tctx ctx[NCASES * ROUNDS];
    pthread_t t[NCASES * ROUNDS];
    int failed = 0;

    (void)state;
    memset(ctx, 0, sizeof(ctx));
    for (size_t i = 0; i < NCASES * ROUNDS; i++) {
        ctx[i].name = cases[i % NCASES].name;
        ctx[i].fn = cases[i % NCASES].fn;
        assert_int_equal(pthread_create(&t[i], NULL, run_case, &ctx[i]), 0);
    }
    for (size_t i = 0; i < NCASES * ROUNDS; i++)
        pthread_join(t[i], NULL);
    for (size_t i = 0; i < NCASES * ROUNDS; i++)
        if (ctx[i].failure[0]) {
            print_error("%s: %s\n", ctx[i].name, ctx[i].failure);
            failed++;
        }
    assert_int_equal(failed, 0);
}

/* After the suite the table is as empty as before: checked on a plain
 * connection, outside every sandbox. */
static void test_sandbox_left_nothing(void **state)
{
    (void)state;
    PGconn *pg = PQconnectdb(conninfo);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    PGresult *r = PQexec(pg, "SELECT count(*) FROM sbx_example_accounts");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "0");
    PQclear(r);
    PQfinish(pg);
}

static int suite_setup(void **state)
{
    dbpool_config cfg;

    (void)state;
    dbpool_config_init(&cfg);
    cfg.size = 8; /* fewer connections than tests: owners queue for them */
    cfg.checkout_timeout = 60000;
    if (dbpool_pg_open(&db, conninfo, &cfg) != 0) {
        fprintf(stderr, "open: %s\n", dbpool_last_error());
        return -1;
    }
    /* the schema, before the sandbox: DDL meant to stay */
    if (dbpool_pg_query(db,
                        "CREATE TABLE IF NOT EXISTS sbx_example_accounts (name text PRIMARY KEY, "
                        "balance int NOT NULL CHECK (balance >= 0))",
                        NULL, NULL, NULL) != 0 ||
        dbpool_sandbox_enable(db, NULL) != 0) {
        fprintf(stderr, "setup: %s\n", dbpool_last_error());
        return -1;
    }
    return 0;
}

static int suite_teardown(void **state)
{
    (void)state;
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) == CONNECTION_OK)
        PQclear(PQexec(pg, "DROP TABLE IF EXISTS sbx_example_accounts"));
    PQfinish(pg);
    return dbpool_close(db) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sandbox_suite_in_parallel),
        cmocka_unit_test(test_sandbox_left_nothing),
    };

    if (argc != 2) {
        fprintf(stderr, "usage: %s CONNINFO\n", argv[0]);
        return 2;
    }
    conninfo = argv[1];
    return cmocka_run_group_tests_name("sandbox_cmocka", tests, suite_setup, suite_teardown);
}
