/* it_secrets.c - the password from the conninfo never shows up in anything the
 * library produces (issue #6): log lines (log_level debug, and the default
 * stderr logger), events, dbpool_last_error() after every call,
 * dbpool_stats.last_error, Prometheus text, dbpool_pg_redact() output.
 *
 * Against a real PostgreSQL (tests/support/pgserver.h: role `app`, password
 * `app_secret_pw`, scram on 127.0.0.1): key=value and URI forms with the
 * right password (connect, check out, discard, reconnect, hold timeout, leak
 * report, a backend killed under an idle connection), the wrong password
 * (auth failure: the pool goes DOWN), an after_connect whose server error
 * echoes the password, malformed conninfo strings that contain it, and a
 * registry tenant. Everything is collected in one text and searched for the
 * secrets (and fragments of them, against truncated echoes). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dbpool.h"
#include "dbpool_pg.h"
#include "dbpool_registry.h"
#include "pgserver.h"

#define RIGHT_PW "app_secret_pw"
#define WRONG_PW "wrong_pw_XYZ123"

/* What must never appear: the passwords, fragments that a cut-off echo would
 * leave, and the percent-encoded spellings used in URIs below. */
static const char *const secrets[] = {
    RIGHT_PW,   "app_secret", "secret_pw", "app%5Fsecret%5Fpw", "app%5fsecret", WRONG_PW,
    "wrong_pw", "pw_XYZ",     "XYZ123",
};

static pgt_server srv;

/* ---- everything the library says, in one text ------------------------------ */

static pthread_mutex_t cap_mu = PTHREAD_MUTEX_INITIALIZER;
static char *cap;
static size_t cap_len, cap_size;
static atomic_int n_logs, n_events;
static atomic_int seen_event[DBPOOL_EV_LEAK_SUSPECTED + 1];

static void capture(const char *what, const char *text)
{
    if (!text)
        text = "(null)";
    pthread_mutex_lock(&cap_mu);
    size_t need = cap_len + strlen(what) + strlen(text) + 8;
    if (need > cap_size) {
        size_t ns = cap_size ? cap_size : 65536;
        while (ns < need)
            ns *= 2;
        char *n = realloc(cap, ns);
        if (!n)
            abort();
        cap = n;
        cap_size = ns;
    }
    cap_len += (size_t)sprintf(cap + cap_len, "[%s] %s\n", what, text);
    pthread_mutex_unlock(&cap_mu);
}

static void on_log(void *arg, dbpool_log_level level, const char *pool, const char *msg)
{
    (void)arg;
    (void)level;
    capture("log pool", pool);
    capture("log", msg);
    atomic_fetch_add(&n_logs, 1);
}

static void on_event(void *arg, const dbpool_event *ev)
{
    (void)arg;
    capture("event pool", ev->pool_name);
    capture("event", ev->detail);
    if ((int)ev->type >= 0 && ev->type <= DBPOOL_EV_LEAK_SUSPECTED)
        atomic_fetch_add(&seen_event[ev->type], 1);
    atomic_fetch_add(&n_events, 1);
}

/* Record dbpool_last_error() after a call; pass its result through. */
static int note(int rc)
{
    capture("last_error", dbpool_last_error());
    return rc;
}

static void *note_ptr(void *p)
{
    capture("last_error", dbpool_last_error());
    return p;
}

/* stats.last_error, the Prometheus text of the pool, its name */
static dbpool_stats snapshot(dbpool *p)
{
    dbpool_stats st;
    char *buf;
    size_t needed = 0;

    memset(&st, 0, sizeof(st));
    assert_int_equal(note(dbpool_stats_get(p, &st)), 0);
    capture("stats.last_error", st.last_error);
    capture("pool_name", dbpool_pool_name(p));
    (void)note(dbpool_stats_prometheus(&p, 1, NULL, 0, &needed));
    assert_true(needed > 0);
    buf = malloc(needed + 1);
    assert_non_null(buf);
    assert_int_equal(note(dbpool_stats_prometheus(&p, 1, buf, needed, NULL)), 0);
    capture("prometheus", buf);
    /* and a truncated rendering */
    if (needed > 40) {
        assert_int_equal(note(dbpool_stats_prometheus(&p, 1, buf, needed / 3, NULL)),
                         DBPOOL_ENOMEM);
        capture("prometheus (truncated)", buf);
    }
    free(buf);
    return st;
}

static void redact(const char *conninfo)
{
    char buf[1024];

    memset(buf, 0, sizeof(buf));
    int rc = note(dbpool_pg_redact(conninfo, buf, sizeof(buf)));
    capture("redact", buf);
    if (rc == 0 && (strstr(conninfo, "password=") || strstr(conninfo, ":" RIGHT_PW "@") ||
                    strstr(conninfo, ":" WRONG_PW "@")))
        assert_non_null(strstr(buf, "password=********"));
    /* small buffers must not cut "********" into something else either */
    for (size_t n = 1; n < 64; n += 3) {
        memset(buf, 0, sizeof(buf));
        (void)note(dbpool_pg_redact(conninfo, buf, n));
        capture("redact (small)", buf);
    }
}

static void reset_capture(void)
{
    pthread_mutex_lock(&cap_mu);
    cap_len = 0;
    if (cap)
        cap[0] = '\0';
    pthread_mutex_unlock(&cap_mu);
    atomic_store(&n_logs, 0);
    atomic_store(&n_events, 0);
    for (int i = 0; i <= DBPOOL_EV_LEAK_SUSPECTED; i++)
        atomic_store(&seen_event[i], 0);
}

/* Print every distinct line of `text` holding a secret; return how many. */
static int secret_lines(const char *where, const char *text)
{
    const char *shown[20];
    size_t shown_len[20];
    int hits = 0, nshown = 0;

    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
            const char *hit = strstr(line, secrets[i]);
            if (!hit || hit >= line + len)
                continue;
            hits++;
            int seen = 0; /* each distinct line once */
            for (int k = 0; k < nshown; k++)
                seen |= shown_len[k] == len && !memcmp(shown[k], line, len);
            if (!seen && nshown < 20) {
                shown[nshown] = line;
                shown_len[nshown++] = len;
                print_error("%s contains \"%s\": %.*s\n", where, secrets[i], (int)len, line);
            }
            break;
        }
        line += len + (end ? 1 : 0);
    }
    return hits;
}

static void assert_no_secret_in(const char *where, const char *text)
{
    int hits = secret_lines(where, text);
    if (hits)
        fail_msg("%s: %d line(s) with a password in them", where, hits);
}

static void assert_no_secrets(void)
{
    pthread_mutex_lock(&cap_mu);
    char *copy = strdup(cap ? cap : "");
    pthread_mutex_unlock(&cap_mu);
    assert_non_null(copy);
    /* IT_SECRETS_DUMP=file: append what was searched, to see it is not empty */
    const char *dump = getenv("IT_SECRETS_DUMP");
    FILE *f = dump ? fopen(dump, "a") : NULL;
    if (f) {
        fputs(copy, f);
        fclose(f);
    }
    int hits = secret_lines("library output", copy);
    free(copy); /* before failing: fail_msg does not return */
    if (hits)
        fail_msg("library output: %d line(s) with a password in them", hits);
}

/* The captured text mentions `what`: proves the error text did flow to us
 * (a test that captures nothing proves nothing). */
static void assert_captured(const char *what)
{
    pthread_mutex_lock(&cap_mu);
    int found = cap && strstr(cap, what) != NULL;
    pthread_mutex_unlock(&cap_mu);
    if (!found)
        fail_msg("expected \"%s\" somewhere in the library output", what);
}

/* ---- helpers ------------------------------------------------------------------ */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void kv_conninfo(char *buf, size_t len, const char *pw, const char *app)
{
    snprintf(buf, len,
             "host=127.0.0.1 port=%d user=app password=%s dbname=postgres "
             "application_name=%s connect_timeout=5",
             srv.port, pw, app);
}

static void uri_conninfo(char *buf, size_t len, const char *pw, const char *app)
{
    snprintf(buf, len,
             "postgresql://app:%s@127.0.0.1:%d/postgres?application_name=%s&connect_timeout=5", pw,
             srv.port, app);
}

static void secret_config(dbpool_config *cfg, const char *name, int size)
{
    dbpool_config_init(cfg);
    cfg->name = name;
    cfg->size = size;
    cfg->log_cb = on_log;
    cfg->log_level = DBPOOL_LOG_DEBUG;
    cfg->event_cb = on_event;
    cfg->backoff_min = 50;
    cfg->backoff_max = 200;
    cfg->idle_interval = 100;
    cfg->connect_timeout = 5000;
    cfg->checkout_timeout = 5000;
}

static int64_t now_ms(void)
{
    return pgt_now_ms();
}

static dbpool_stats wait_state(dbpool *p, dbpool_state want, int64_t timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    dbpool_stats st;
    for (;;) {
        st = snapshot(p);
        if (st.state == want || now_ms() >= deadline)
            break;
        sleep_ms(20);
    }
    if (st.state != want)
        fail_msg("pool state %s, want %s (last error: %s)", dbpool_state_name(st.state),
                 dbpool_state_name(want), st.last_error);
    return st;
}

/* ---- the right password: a full life cycle ------------------------------------ */

static void exercise_working_pool(const char *conninfo, const char *name, const char *app)
{
    dbpool_config cfg;
    dbpool *p = NULL;
    dbpool_lease l, l2;

    reset_capture();
    secret_config(&cfg, name, 2);
    cfg.after_connect = "SET search_path = public";
    cfg.leak_threshold = 100;
    redact(conninfo);
    int rc = note(dbpool_pg_open(&p, conninfo, &cfg));
    if (rc != 0)
        fail_msg("dbpool_pg_open: %d", rc);
    rc = note(dbpool_checkout(p, 5000, &l));
    if (rc != 0)
        fail_msg("checkout: %d (%s)", rc, dbpool_last_error());
    PGconn *pg = note_ptr(dbpool_pg_conn(&l));
    assert_non_null(pg);
    PGresult *r = PQexec(pg, "SELECT current_user");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "app");
    PQclear(r);
    dbpool_lease_info info;
    (void)note(dbpool_lease_info_get(&l, &info));
    (void)note(dbpool_lease_check(&l));

    /* an open transaction rolled back at check-in */
    r = PQexec(pg, "BEGIN");
    PQclear(r);
    assert_int_equal(note(dbpool_checkin(&l)), 0);
    (void)note(dbpool_checkin(&l)); /* ESTALE */
    (void)note(dbpool_discard(&l));
    assert_null(note_ptr(dbpool_lease_conn(&l)));

    /* held past leak_threshold: a leak report with where it came from */
    assert_int_equal(note(dbpool_checkout(p, 5000, &l)), 0);
    sleep_ms(300);
    /* a checked-in-broken connection: the discard reason */
    r = PQexec(dbpool_pg_conn(&l), "SELECT pg_terminate_backend(pg_backend_pid())");
    PQclear(r);
    (void)note(dbpool_checkin(&l));

    /* recycle everything, pause/resume, a checkout that times out */
    assert_int_equal(note(dbpool_reconnect(p)), 0);
    assert_int_equal(note(dbpool_pause(p)), 0);
    (void)note(dbpool_checkout(p, 50, &l));
    assert_int_equal(note(dbpool_resume(p)), 0);
    assert_int_equal(note(dbpool_checkout(p, 5000, &l)), 0);
    assert_int_equal(note(dbpool_checkout(p, 5000, &l2)), 0);
    (void)note(dbpool_checkout(p, 0, &l));
    assert_int_equal(note(dbpool_discard(&l2)), 0);

    /* kill the idle connections under the pool: failed pings, reconnects */
    sleep_ms(200);
    (void)pgt_terminate(&srv, app);
    sleep_ms(500);
    (void)note(dbpool_checkin(&l));
    snapshot(p);

    /* close with a lease out, then the late check-in */
    assert_int_equal(note(dbpool_checkout(p, 5000, &l)), 0);
    (void)note(dbpool_close(p));
    (void)note(dbpool_close(p));
    (void)note(dbpool_checkin(&l));

    assert_true(atomic_load(&n_logs) > 0);
    assert_true(atomic_load(&seen_event[DBPOOL_EV_CONNECTED]) > 0);
    assert_true(atomic_load(&seen_event[DBPOOL_EV_DISCONNECTED]) > 0);
    assert_true(atomic_load(&seen_event[DBPOOL_EV_LEAK_SUSPECTED]) > 0);
    assert_no_secrets();
}

static void test_kv_right_password(void **state)
{
    (void)state;
    char ci[512];
    kv_conninfo(ci, sizeof(ci), RIGHT_PW, "sec_kv");
    exercise_working_pool(ci, "sec_kv", "sec_kv");
}

static void test_uri_right_password(void **state)
{
    (void)state;
    char ci[512];
    uri_conninfo(ci, sizeof(ci), RIGHT_PW, "sec_uri");
    exercise_working_pool(ci, "sec_uri", "sec_uri");
    /* percent-encoded in the URI */
    snprintf(ci, sizeof(ci),
             "postgresql://app:app%%5Fsecret%%5Fpw@127.0.0.1:%d/postgres?application_name=sec_pct",
             srv.port);
    exercise_working_pool(ci, "sec_pct", "sec_pct");
    /* in the query string, and quoted in key=value form */
    snprintf(ci, sizeof(ci),
             "postgresql://app@127.0.0.1:%d/postgres?password=%s&application_name=sec_q", srv.port,
             RIGHT_PW);
    exercise_working_pool(ci, "sec_q", "sec_q");
    snprintf(ci, sizeof(ci),
             "host=127.0.0.1 port=%d user=app password = '%s' dbname=postgres "
             "application_name=sec_quoted",
             srv.port, RIGHT_PW);
    exercise_working_pool(ci, "sec_quoted", "sec_quoted");
}

/* hold_timeout: the query is cancelled and the lease expires */
static void test_hold_timeout(void **state)
{
    (void)state;
    char ci[512];
    dbpool_config cfg;
    dbpool *p = NULL;
    dbpool_lease l;

    reset_capture();
    uri_conninfo(ci, sizeof(ci), RIGHT_PW, "sec_hold");
    secret_config(&cfg, "sec_hold", 1);
    cfg.hold_timeout = 200;
    assert_int_equal(note(dbpool_pg_open(&p, ci, &cfg)), 0);
    assert_int_equal(note(dbpool_checkout(p, 5000, &l)), 0);
    PGresult *r = PQexec(dbpool_pg_conn(&l), "SELECT pg_sleep(3)"); /* cancelled */
    capture("query error (user's own)", ""); /* the user's PGresult is not ours */
    PQclear(r);
    assert_int_equal(note(dbpool_checkin(&l)), DBPOOL_EEXPIRED);
    snapshot(p);
    assert_int_equal(note(dbpool_close(p)), 0);
    assert_true(atomic_load(&seen_event[DBPOOL_EV_HOLD_TIMEOUT]) > 0);
    assert_no_secrets();
}

/* ---- the wrong password: the pool goes DOWN with the server's error ------------- */

static void exercise_failing_pool(const char *conninfo, const char *name, const char *expect)
{
    dbpool_config cfg;
    dbpool *p = NULL;
    dbpool_lease l;

    reset_capture();
    secret_config(&cfg, name, 2);
    redact(conninfo);
    assert_int_equal(note(dbpool_pg_open(&p, conninfo, &cfg)), 0);
    wait_state(p, DBPOOL_STATE_DOWN, 10000);
    int rc = note(dbpool_checkout(p, 1000, &l));
    assert_int_equal(rc, DBPOOL_EUNAVAILABLE);
    /* let it retry a few times (backoff 50..200 ms) */
    sleep_ms(600);
    (void)note(dbpool_checkout(p, 0, &l));
    (void)note(dbpool_restart(p));
    (void)note(dbpool_reconnect(p));
    dbpool_stats st = snapshot(p);
    assert_true(st.connect_failures >= 2);
    assert_int_equal(note(dbpool_close(p)), 0);
    assert_true(atomic_load(&seen_event[DBPOOL_EV_CONNECT_FAILED]) > 0);
    assert_true(atomic_load(&seen_event[DBPOOL_EV_DOWN]) > 0);
    assert_captured(expect);
    assert_no_secrets();
}

static void test_kv_wrong_password(void **state)
{
    (void)state;
    char ci[512];
    kv_conninfo(ci, sizeof(ci), WRONG_PW, "sec_wrong_kv");
    exercise_failing_pool(ci, "sec_wrong_kv", "password authentication failed");
}

static void test_uri_wrong_password(void **state)
{
    (void)state;
    char ci[512];
    uri_conninfo(ci, sizeof(ci), WRONG_PW, "sec_wrong_uri");
    exercise_failing_pool(ci, "sec_wrong_uri", "password authentication failed");
}

/* A password the server sees in an error: after_connect echoes it. The pool
 * scrubs the password out of every driver message. */
static void test_after_connect_echoes_password(void **state)
{
    (void)state;
    char ci[512];
    dbpool_config cfg;
    dbpool *p = NULL;

    reset_capture();
    kv_conninfo(ci, sizeof(ci), RIGHT_PW, "sec_echo");
    secret_config(&cfg, "sec_echo", 1);
    cfg.after_connect = "SELECT '" RIGHT_PW "'::int";
    assert_int_equal(note(dbpool_pg_open(&p, ci, &cfg)), 0);
    wait_state(p, DBPOOL_STATE_DOWN, 10000);
    assert_int_equal(note(dbpool_close(p)), 0);
    assert_captured("invalid input syntax");
    assert_no_secrets();
}

/* ---- malformed strings that contain the password ------------------------------- */

static void test_malformed_conninfo(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "postgresql://app:app_secret_pw@[127.0.0.1:5432/postgres",
        "postgresql://app:app_secret_pw@127.0.0.1:5432/postgres?bogus=1",
        "postgresql://app:app_secret_pw@127.0.0.1:5432/postgres?password",
        "postgresql://app:app_secret_pw%zz@127.0.0.1/postgres",
        "postgresql://app:app_secret_pw@127.0.0.1:99999/postgres",
        "postgresql://app:app_secret_pw@127.0.0.1:5432/postgres?connect_timeout=%zz",
        "postgresql://app:app%5Fsecret%5Fpw@[127.0.0.1/postgres",
        "postgresql://app@[::1/postgres?password=app_secret_pw",
        "postgresql://app@[::1/postgres?sslmode=disable&password=app_secret_pw&x=1",
        "postgresql://app@127.0.0.1/postgres?password=app_secret_pw%",
        "postgresql://app@127.0.0.1/postgres?password=app_secret_pw%2",
        "postgres://app:wrong_pw_XYZ123@[h/db",
        "host=127.0.0.1 password='app_secret_pw",
        "host=127.0.0.1 password=app_secret_pw bogus=1",
        "host=127.0.0.1 password = app_secret_pw port=abc",
        "host=127.0.0.1 password=app_secret_pw port=0",
        "host=127.0.0.1 password=wrong_pw_XYZ123 dbname",
        "password=app_secret_pw host",
        /* a passphrase with a space, not quoted: libpq reads "password=my"
         * and complains about the next word, which is part of the secret */
        "host=127.0.0.1 user=app password=my app_secret_pw dbname=postgres",
        /* two candidates, one inside the other: the short one must not
         * break up the long one */
        "postgresql://app:XYZ@[127.0.0.1/postgres?password=wrong_pw_XYZ123",
        /* a tab in the password (messages are flattened to one line) */
        "postgresql://app:app_secret_pw\tx@[127.0.0.1/postgres",
    };
    reset_capture();
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        dbpool_config cfg;
        dbpool *p = (dbpool *)(uintptr_t)0x1;
        secret_config(&cfg, "sec_bad", 1);
        int rc = note(dbpool_pg_open(&p, bad[i], &cfg));
        if (rc == 0)
            (void)dbpool_close(p);
        if (rc != DBPOOL_EINVAL)
            fail_msg("dbpool_pg_open(bad[%zu]) = %d, want DBPOOL_EINVAL", i, rc);
        assert_null(p);
        redact(bad[i]);
    }
    assert_captured("invalid connection string");
    assert_no_secrets();
}

/* ---- the default logger (stderr) ----------------------------------------------------- */

static void test_default_stderr_logger(void **state)
{
    (void)state;
    char ci[512], path[] = "/tmp/dbpool-it-secrets-XXXXXX";
    dbpool_config cfg;
    dbpool *p = NULL;

    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fd, 2) == 2);

    kv_conninfo(ci, sizeof(ci), WRONG_PW, "sec_stderr");
    secret_config(&cfg, "sec_stderr", 1);
    cfg.log_cb = NULL; /* stderr */
    cfg.event_cb = NULL;
    int rc = dbpool_pg_open(&p, ci, &cfg);
    if (rc == 0) {
        int64_t deadline = now_ms() + 10000;
        dbpool_stats st;
        do {
            sleep_ms(20);
            (void)dbpool_stats_get(p, &st);
        } while (st.state != DBPOOL_STATE_DOWN && now_ms() < deadline);
        sleep_ms(300);
        (void)dbpool_close(p);
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    assert_int_equal(rc, 0);

    char text[65536];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    text[n] = '\0';
    if (!strstr(text, "password authentication failed"))
        fail_msg("stderr log lacks the auth failure: %s", text);
    assert_no_secret_in("stderr log", text);
}

/* ---- a registry tenant with the wrong password ----------------------------------------- */

static int resolve(void *arg, const char *tenant, char *conninfo, size_t len, dbpool_config *cfg)
{
    (void)arg;
    cfg->log_cb = on_log;
    cfg->log_level = DBPOOL_LOG_DEBUG;
    cfg->event_cb = on_event;
    cfg->backoff_min = 50;
    cfg->backoff_max = 200;
    cfg->min_size = 1;
    if (!strcmp(tenant, "wrong"))
        uri_conninfo(conninfo, len, WRONG_PW, "sec_reg");
    else if (!strcmp(tenant, "right"))
        kv_conninfo(conninfo, len, RIGHT_PW, "sec_reg");
    else
        snprintf(conninfo, len, "postgresql://app:%s@[127.0.0.1/postgres", RIGHT_PW);
    return 0;
}

static void test_registry(void **state)
{
    (void)state;
    dbpool_registry_config rcfg;
    dbpool_registry *reg = NULL;
    dbpool_lease l;
    char buf[32768];

    reset_capture();
    dbpool_registry_config_init(&rcfg);
    rcfg.resolve = resolve;
    assert_int_equal(note(dbpool_registry_open(&reg, &rcfg)), 0);
    assert_int_equal(note(dbpool_registry_checkout(reg, "right", 5000, &l)), 0);
    assert_int_equal(note(dbpool_checkin(&l)), 0);
    assert_int_equal(note(dbpool_registry_checkout(reg, "malformed", 5000, &l)), DBPOOL_EINVAL);
    int64_t deadline = now_ms() + 10000;
    int rc;
    do {
        rc = note(dbpool_registry_checkout(reg, "wrong", 1000, &l));
        if (rc == 0)
            fail_msg("checkout with the wrong password succeeded");
        if (rc == DBPOOL_EUNAVAILABLE)
            break;
        sleep_ms(50);
    } while (now_ms() < deadline);
    assert_int_equal(rc, DBPOOL_EUNAVAILABLE);
    size_t needed = 0;
    rc = note(dbpool_registry_prometheus(reg, buf, sizeof(buf), &needed));
    assert_int_equal(rc, 0);
    capture("registry prometheus", buf);
    dbpool *p = NULL;
    assert_int_equal(note(dbpool_registry_get(reg, "wrong", &p)), 0);
    snapshot(p);
    dbpool_registry_put(reg, p);
    assert_int_equal(note(dbpool_registry_close(reg)), 0);
    assert_captured("password authentication failed");
    assert_no_secrets();
}

/* ---- query helpers: a server error echoing the password ---------------------------- */

#ifdef DBPOOL_TEST_PG_QUERY
static void test_query_helpers(void **state)
{
    (void)state;
    char ci[512];
    dbpool_config cfg;
    dbpool *p = NULL;
    dbpool_pg_result r;

    reset_capture();
    kv_conninfo(ci, sizeof(ci), RIGHT_PW, "sec_query");
    secret_config(&cfg, "sec_query", 1);
    assert_int_equal(note(dbpool_pg_open(&p, ci, &cfg)), 0);
    /* an SQL error: the message is the server's and names nothing secret */
    assert_int_equal(note(dbpool_pg_query(p, "SELECT 1/0", NULL, NULL, &r)), DBPOOL_EQUERY);
    dbpool_pg_result_clear(&r);
    /* the connection killed under the helper */
    (void)note(dbpool_pg_query(p, "SELECT pg_terminate_backend(pg_backend_pid())", NULL, NULL, &r));
    dbpool_pg_result_clear(&r);
    (void)note(dbpool_pg_query(p, "SELECT 1", NULL, NULL, &r));
    dbpool_pg_result_clear(&r);
    snapshot(p);
    assert_int_equal(note(dbpool_close(p)), 0);
    assert_captured("division by zero");
    assert_no_secrets();
}
#endif

/* ------------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    if (pgt_start(&srv) != 0) {
        fprintf(stderr, "it_secrets: could not start PostgreSQL\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pgt_destroy(&srv);
    free(cap);
    cap = NULL;
    return 0;
}

int main(void)
{
    alarm(240); /* last resort against a hang */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_right_password),
        cmocka_unit_test(test_uri_right_password),
        cmocka_unit_test(test_hold_timeout),
        cmocka_unit_test(test_kv_wrong_password),
        cmocka_unit_test(test_uri_wrong_password),
        cmocka_unit_test(test_after_connect_echoes_password),
        cmocka_unit_test(test_malformed_conninfo),
        cmocka_unit_test(test_default_stderr_logger),
        cmocka_unit_test(test_registry),
#ifdef DBPOOL_TEST_PG_QUERY
        cmocka_unit_test(test_query_helpers),
#endif
    };
    return cmocka_run_group_tests_name("it_secrets", tests, group_setup, group_teardown);
}
