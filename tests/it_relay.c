/* it_relay.c - integration tests of the TCP fault relay (tools/relay/relay.c)
 * against an in-process echo server: pass-through, half-close, refuse,
 * reset, blackhole, latency, a delayed EOF, counters, concurrent control calls.
 *
 * Every wait is bounded (poll with a timeout); the only polling loop is
 * wait_stats(), because the relay's counters have no notification. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "relay.h"

#define WAIT_MS 5000 /* generous bound for things that should be immediate */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- echo server: one thread, poll loop, non-blocking ---------------------- */

#define ECHO_MAX_CONNS 32

typedef struct echo_conn {
    int fd;
    size_t len, off;
    char buf[64 * 1024];
} echo_conn;

typedef struct echo {
    int lfd, port;
    int stop[2]; /* pipe: write a byte to stop the thread */
    pthread_t thread;
    atomic_int accepted;
    echo_conn conns[ECHO_MAX_CONNS];
} echo;

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof a;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void *echo_run(void *arg)
{
    echo *e = arg;
    for (;;) {
        struct pollfd pf[2 + ECHO_MAX_CONNS];
        int map[2 + ECHO_MAX_CONNS];
        int n = 0;
        pf[n++] = (struct pollfd){.fd = e->stop[0], .events = POLLIN};
        pf[n++] = (struct pollfd){.fd = e->lfd, .events = POLLIN};
        for (int i = 0; i < ECHO_MAX_CONNS; i++) {
            echo_conn *c = &e->conns[i];
            if (c->fd < 0)
                continue;
            map[n] = i;
            pf[n++] = (struct pollfd){.fd = c->fd, .events = c->off < c->len ? POLLOUT : POLLIN};
        }
        if (poll(pf, (nfds_t)n, 1000) < 0 && errno != EINTR)
            break;
        if (pf[0].revents)
            break;
        if (pf[1].revents & POLLIN) {
            int fd = accept4(e->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                atomic_fetch_add(&e->accepted, 1);
                int slot = -1;
                for (int i = 0; i < ECHO_MAX_CONNS && slot < 0; i++)
                    if (e->conns[i].fd < 0)
                        slot = i;
                if (slot < 0) {
                    close(fd);
                } else {
                    e->conns[slot].fd = fd;
                    e->conns[slot].len = e->conns[slot].off = 0;
                }
            }
        }
        for (int k = 2; k < n; k++) {
            echo_conn *c = &e->conns[map[k]];
            if (!pf[k].revents)
                continue;
            ssize_t r;
            if (c->off < c->len) {
                r = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
                if (r > 0)
                    c->off += (size_t)r;
            } else {
                r = recv(c->fd, c->buf, sizeof c->buf, 0);
                if (r > 0) {
                    c->len = (size_t)r;
                    c->off = 0;
                } else if (r == 0) { /* EOF: everything was echoed, close */
                    r = -1;
                    errno = ECONNRESET;
                }
            }
            if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                close(c->fd);
                c->fd = -1;
            }
        }
    }
    for (int i = 0; i < ECHO_MAX_CONNS; i++)
        if (e->conns[i].fd >= 0)
            close(e->conns[i].fd);
    return NULL;
}

static echo *echo_start(void)
{
    echo *e = calloc(1, sizeof *e);
    assert_non_null(e);
    for (int i = 0; i < ECHO_MAX_CONNS; i++)
        e->conns[i].fd = -1;
    e->lfd = listen_any(&e->port);
    assert_true(e->lfd >= 0);
    assert_int_equal(pipe2(e->stop, O_CLOEXEC), 0);
    assert_int_equal(pthread_create(&e->thread, NULL, echo_run, e), 0);
    return e;
}

static void echo_stop(echo *e)
{
    if (!e)
        return;
    assert_int_equal(write(e->stop[1], "x", 1), 1);
    pthread_join(e->thread, NULL);
    close(e->stop[0]);
    close(e->stop[1]);
    close(e->lfd);
    free(e);
}

/* ---- client helpers ------------------------------------------------------ */

/* Non-blocking connect to 127.0.0.1:port, bounded. Returns the (non-blocking)
 * fd, or -1 with *err set to the connect error. */
static int connect_to(int port, int *err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    *err = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (errno != EINPROGRESS) {
            *err = errno;
        } else {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            socklen_t len = sizeof *err;
            if (poll(&pf, 1, WAIT_MS) != 1)
                *err = ETIMEDOUT;
            else
                getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &len);
        }
    }
    if (*err) {
        close(fd);
        return -1;
    }
    return fd;
}

static int must_connect(int port)
{
    int err;
    int fd = connect_to(port, &err);
    if (fd < 0)
        fail_msg("connect to %d: %s", port, strerror(err));
    return fd;
}

/* Send out[0..n) and receive n bytes into in, concurrently (so neither side's
 * buffers can deadlock us); shut our write side once everything is sent if
 * half_close. Returns 0, or -1 on error / timeout. */
static int exchange(int fd, const char *out, char *in, size_t n, bool half_close, int timeout_ms)
{
    size_t sent = 0, got = 0;
    int64_t deadline = now_ms() + timeout_ms;
    if (n == 0 && half_close)
        shutdown(fd, SHUT_WR);
    while (got < n) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pf = {.fd = fd, .events = POLLIN | (sent < n ? POLLOUT : 0)};
        if (poll(&pf, 1, (int)left) < 0)
            return -1;
        if ((pf.revents & POLLOUT) && sent < n) {
            ssize_t w = send(fd, out + sent, n - sent > 65536 ? 65536 : n - sent, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN)
                return -1;
            if (w > 0 && (sent += (size_t)w) == n && half_close)
                shutdown(fd, SHUT_WR);
        }
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(fd, in + got, n - got, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN))
                return -1;
            if (r > 0)
                got += (size_t)r;
        }
    }
    return 0;
}

/* Receive exactly n bytes within timeout_ms. Returns 0 or -1. */
static int recv_exact(int fd, char *in, size_t n, int timeout_ms)
{
    size_t got = 0;
    int64_t deadline = now_ms() + timeout_ms;
    while (got < n) {
        int64_t left = deadline - now_ms();
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, (int)left) != 1)
            return -1;
        ssize_t r = recv(fd, in + got, n - got, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN))
            return -1;
        if (r > 0)
            got += (size_t)r;
    }
    return 0;
}

/* Round trip of a short message; returns elapsed ms or -1. */
static int64_t round_trip(int fd, int timeout_ms)
{
    char out[32] = "ping-pong round trip", in[32];
    int64_t t0 = now_ms();
    if (exchange(fd, out, in, sizeof out, false, timeout_ms) != 0)
        return -1;
    assert_memory_equal(in, out, sizeof out);
    return now_ms() - t0;
}

/* Wait until the peer closes: returns 0 for EOF, the errno for a reset, or
 * -1 on timeout. Discards any data before the close. */
static int wait_closed(int fd, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - now_ms();
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, (int)left) != 1)
            return -1;
        char buf[4096];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0)
            return 0;
        if (r < 0 && errno != EAGAIN)
            return errno;
    }
}

/* Poll the counters (they have no notification) until they match; -1 = any. */
static void wait_stats(relay *r, int accepted, int open_pairs)
{
    int a = -2, o = -2;
    int64_t deadline = now_ms() + WAIT_MS;
    while (now_ms() < deadline) {
        assert_int_equal(relay_stats(r, &a, &o), 0);
        if ((accepted < 0 || a == accepted) && (open_pairs < 0 || o == open_pairs))
            return;
        poll(NULL, 0, 5);
    }
    fail_msg("stats: accepted %d (want %d), open %d (want %d)", a, accepted, o, open_pairs);
}

static char *pattern(size_t n, unsigned seed)
{
    char *p = malloc(n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (char)(seed >> 16);
    }
    return p;
}

/* Echo n pattern bytes through fd, half-close, check content and clean EOF. */
static void echo_check(int fd, size_t n, unsigned seed, int timeout_ms)
{
    char *out = pattern(n, seed), *in = malloc(n);
    assert_non_null(in);
    assert_int_equal(exchange(fd, out, in, n, true, timeout_ms), 0);
    assert_memory_equal(in, out, n);
    assert_int_equal(wait_closed(fd, WAIT_MS), 0); /* EOF came back around */
    free(out);
    free(in);
}

/* ---- fixture ------------------------------------------------------------- */

typedef struct fixture {
    echo *echo;
    relay *relay;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->echo = echo_start();
    assert_int_equal(relay_start(&f->relay, "127.0.0.1", f->echo->port), 0);
    assert_true(relay_port(f->relay) > 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    relay_stop(f->relay);
    echo_stop(f->echo);
    free(f);
    return 0;
}

/* ---- tests --------------------------------------------------------------- */

static void test_pass_echo_1mb(void **state)
{
    fixture *f = *state;
    int fd = must_connect(relay_port(f->relay));
    echo_check(fd, 1 << 20, 1, 10000);
    close(fd);
    wait_stats(f->relay, 1, 0); /* pair closed after EOF went both ways */
    assert_int_equal(atomic_load(&f->echo->accepted), 1);
}

static unsigned char byte_at(size_t i)
{
    return (unsigned char)((i * 2654435761u) >> 13);
}

/* A client that writes without reading: the relay must stop reading when its
 * buffers are full (memory stays bounded), then drain everything in order
 * once the client reads. */
static void test_backpressure(void **state)
{
    fixture *f = *state;
    int fd = must_connect(relay_port(f->relay));
    const size_t limit = (size_t)64 << 20;
    size_t sent = 0;
    unsigned char buf[65536];
    for (;;) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        if (poll(&pf, 1, 300) == 0)
            break; /* the whole chain is full */
        for (size_t k = 0; k < sizeof buf; k++)
            buf[k] = byte_at(sent + k);
        ssize_t w = send(fd, buf, sizeof buf, MSG_NOSIGNAL);
        assert_true(w > 0 || errno == EAGAIN);
        if (w > 0)
            sent += (size_t)w;
        assert_true(sent < limit); /* kernel buffers + bounded relay buffers */
    }
    print_message("backpressure: %zu bytes in flight when the chain was full\n", sent);
    shutdown(fd, SHUT_WR);
    size_t got = 0;
    while (got < sent) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&pf, 1, WAIT_MS), 1);
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        assert_true(r > 0);
        for (ssize_t k = 0; k < r; k++)
            if (buf[k] != byte_at(got + (size_t)k))
                fail_msg("byte %zu differs", got + (size_t)k);
        got += (size_t)r;
    }
    assert_int_equal(wait_closed(fd, WAIT_MS), 0);
    close(fd);
    wait_stats(f->relay, 1, 0);
}

static void test_refuse(void **state)
{
    fixture *f = *state;
    int port = relay_port(f->relay);
    int old = must_connect(port);
    assert_true(round_trip(old, WAIT_MS) >= 0);

    assert_int_equal(relay_set_mode(f->relay, RELAY_REFUSE), 0);
    int err;
    assert_int_equal(connect_to(port, &err), -1);
    assert_int_equal(err, ECONNREFUSED);
    assert_int_equal(relay_port(f->relay), port);
    /* REFUSE is about new connections: the open one keeps working. */
    assert_true(round_trip(old, WAIT_MS) >= 0);

    assert_int_equal(relay_set_mode(f->relay, RELAY_PASS), 0);
    int fd = must_connect(port); /* same port again */
    assert_true(round_trip(fd, WAIT_MS) >= 0);
    close(fd);
    close(old);
    wait_stats(f->relay, 2, 0);
}

static void test_reset_all(void **state)
{
    fixture *f = *state;
    int a = must_connect(relay_port(f->relay));
    int b = must_connect(relay_port(f->relay));
    assert_true(round_trip(a, WAIT_MS) >= 0);
    assert_true(round_trip(b, WAIT_MS) >= 0);
    wait_stats(f->relay, 2, 2);

    int64_t t0 = now_ms();
    assert_int_equal(relay_reset_all(f->relay), 0);
    int open = -1;
    relay_stats(f->relay, NULL, &open);
    assert_int_equal(open, 0); /* synchronous */
    assert_int_equal(wait_closed(a, 1000), ECONNRESET);
    assert_int_equal(wait_closed(b, 1000), ECONNRESET);
    assert_true(now_ms() - t0 < 1000);
    close(a);
    close(b);

    /* Still accepting afterwards. */
    int c = must_connect(relay_port(f->relay));
    assert_true(round_trip(c, WAIT_MS) >= 0);
    close(c);
}

static void test_blackhole(void **state)
{
    fixture *f = *state;
    int old = must_connect(relay_port(f->relay));
    assert_true(round_trip(old, WAIT_MS) >= 0);

    assert_int_equal(relay_set_mode(f->relay, RELAY_BLACKHOLE), 0);
    int fresh = must_connect(relay_port(f->relay)); /* accepted, but held */
    wait_stats(f->relay, 2, 2);
    char msg[5] = "ping", in[5] = {0};
    for (int i = 0; i < 2; i++) {
        int fd = i ? fresh : old;
        assert_int_equal(send(fd, msg, sizeof msg, MSG_NOSIGNAL), (ssize_t)sizeof msg);
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&pf, 1, 300), 0); /* nothing, and no HUP/ERR */
        assert_int_equal(recv(fd, in, sizeof in, MSG_DONTWAIT), -1);
        assert_int_equal(errno, EAGAIN);
    }
    assert_int_equal(atomic_load(&f->echo->accepted), 1); /* fresh not connected on */

    /* Healing delivers what was held, in order, on both connections. */
    assert_int_equal(relay_set_mode(f->relay, RELAY_PASS), 0);
    for (int i = 0; i < 2; i++) {
        int fd = i ? fresh : old;
        assert_int_equal(recv_exact(fd, in, sizeof in, WAIT_MS), 0);
        assert_memory_equal(in, msg, sizeof msg);
    }
    close(old);
    close(fresh);
    wait_stats(f->relay, 2, 0);
}

static void test_blackhole_reset(void **state)
{
    fixture *f = *state;
    int fd = must_connect(relay_port(f->relay));
    assert_true(round_trip(fd, WAIT_MS) >= 0);
    assert_int_equal(relay_set_mode(f->relay, RELAY_BLACKHOLE), 0);
    int held = must_connect(relay_port(f->relay));
    wait_stats(f->relay, 2, 2);
    /* A partitioned connection can still be reset (e.g. "server crashed"). */
    assert_int_equal(relay_reset_all(f->relay), 0);
    assert_int_equal(wait_closed(fd, 1000), ECONNRESET);
    assert_int_equal(wait_closed(held, 1000), ECONNRESET);
    close(fd);
    close(held);
    assert_int_equal(relay_set_mode(f->relay, RELAY_PASS), 0);
    wait_stats(f->relay, 2, 0);
}

static void test_latency(void **state)
{
    fixture *f = *state;
    int fd = must_connect(relay_port(f->relay));
    assert_true(round_trip(fd, WAIT_MS) >= 0);

    assert_int_equal(relay_set_latency(f->relay, 100), 0);
    int64_t rtt = round_trip(fd, WAIT_MS);
    assert_true(rtt >= 100); /* 100 ms each way: >= 200 in fact */
    assert_true(rtt < 1000);

    /* Ordering and integrity with delayed chunks. */
    assert_int_equal(relay_set_latency(f->relay, 20), 0);
    int big = must_connect(relay_port(f->relay));
    echo_check(big, (size_t)256 * 1024, 7, 10000);
    close(big);

    assert_int_equal(relay_set_latency(f->relay, 0), 0);
    rtt = round_trip(fd, WAIT_MS);
    assert_true(rtt >= 0 && rtt < 100);
    assert_int_equal(relay_set_latency(f->relay, -1), -EINVAL);
    close(fd);
}

/* The target's last words arrive at once, its close only after the eof
 * delay; relay_held_eofs() shows the state in between. */
static void test_eof_delay(void **state)
{
    fixture *f = *state;
    int fd = must_connect(relay_port(f->relay));
    assert_true(round_trip(fd, WAIT_MS) >= 0);
    assert_int_equal(relay_set_eof_delay(f->relay, 400), 0);
    assert_int_equal(relay_held_eofs(f->relay), 0);

    /* the echo server answers, then closes when it sees our EOF */
    char out[5] = "last", in[5] = {0};
    int64_t t0 = now_ms();
    assert_int_equal(exchange(fd, out, in, sizeof out, true, WAIT_MS), 0);
    assert_memory_equal(in, out, sizeof out);
    int64_t deadline = now_ms() + WAIT_MS;
    while (relay_held_eofs(f->relay) != 1 && now_ms() < deadline)
        poll(NULL, 0, 5);
    assert_int_equal(relay_held_eofs(f->relay), 1);
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (now_ms() - t0 < 300) /* the close is held back */
        assert_int_equal(poll(&pf, 1, 0), 0);
    assert_int_equal(wait_closed(fd, WAIT_MS), 0);
    assert_true(now_ms() - t0 >= 400);
    close(fd);
    wait_stats(f->relay, 1, 0);
    assert_int_equal(relay_held_eofs(f->relay), 0);

    assert_int_equal(relay_set_eof_delay(f->relay, 0), 0);
    assert_int_equal(relay_set_eof_delay(f->relay, -1), -EINVAL);
    assert_int_equal(relay_set_eof_delay(f->relay, RELAY_MAX_LATENCY_MS + 1), -EINVAL);
}

static void test_stats(void **state)
{
    fixture *f = *state;
    int fds[3];
    for (int i = 0; i < 3; i++)
        fds[i] = must_connect(relay_port(f->relay));
    wait_stats(f->relay, 3, 3);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    wait_stats(f->relay, 3, 0);
    int a = -1, o = -1;
    assert_int_equal(relay_stats(f->relay, &a, &o), 0);
    assert_int_equal(a, 3);
    assert_int_equal(o, 0);
}

/* Fixture whose relay points at a port where nothing listens. */
static int setup_down(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    int port = 0;
    int tmp = listen_any(&port);
    assert_true(tmp >= 0);
    close(tmp);
    assert_int_equal(relay_start(&f->relay, "127.0.0.1", port), 0);
    *state = f;
    return 0;
}

static void test_target_down(void **state)
{
    fixture *f = *state;
    /* The client is reset at once: right after connect, or while our
     * connect_to() is still looking at the result. */
    int err;
    int fd = connect_to(relay_port(f->relay), &err);
    if (fd < 0) {
        assert_int_equal(err, ECONNRESET);
    } else {
        assert_int_equal(wait_closed(fd, 1000), ECONNRESET);
        close(fd);
    }
    wait_stats(f->relay, 1, 0);
}

static void test_stop_closes(void **state)
{
    fixture *f = *state;
    int fd = must_connect(relay_port(f->relay));
    assert_true(round_trip(fd, WAIT_MS) >= 0);
    relay_stop(f->relay);
    f->relay = NULL;
    assert_int_equal(wait_closed(fd, 1000), 0);
    close(fd);
    relay_stop(NULL);
}

static void test_bad_args(void **state)
{
    (void)state;
    relay *r = NULL;
    assert_int_equal(relay_start(&r, "127.0.0.1", 0), -EINVAL);
    assert_int_equal(relay_start(&r, NULL, 5432), -EINVAL);
    assert_int_equal(relay_start(&r, "no such host.invalid", 5432), -EINVAL);
    assert_null(r);
}

/* Control calls from other threads while data flows (run under TSan). */
typedef struct knob {
    relay *r;
    atomic_bool stop;
} knob;

static void *twiddle(void *arg)
{
    knob *k = arg;
    for (int i = 0; !atomic_load(&k->stop); i++) {
        int a, o;
        relay_set_latency(k->r, i % 3);
        relay_stats(k->r, &a, &o);
        relay_set_mode(k->r, i % 2 ? RELAY_REFUSE : RELAY_PASS);
        poll(NULL, 0, 1);
    }
    return NULL;
}

static void test_concurrent_control(void **state)
{
    fixture *f = *state;
    int fd = must_connect(relay_port(f->relay));
    knob k = {.r = f->relay};
    atomic_init(&k.stop, false);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, twiddle, &k), 0);
    echo_check(fd, 1 << 20, 3, 20000);
    atomic_store(&k.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    close(fd);
    assert_int_equal(relay_set_mode(f->relay, RELAY_PASS), 0);
    wait_stats(f->relay, 1, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pass_echo_1mb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blackhole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blackhole_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_latency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eof_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_target_down, setup_down, teardown),
        cmocka_unit_test_setup_teardown(test_stop_closes, setup, teardown),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test_setup_teardown(test_concurrent_control, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
