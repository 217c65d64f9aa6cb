/* relay.h - a TCP fault relay for integration tests and the outage drill.
 *
 * A relay listens on 127.0.0.1:<free port> and forwards every connection to
 * one target (usually a test PostgreSQL). Tests point clients at the relay
 * and inject faults while connections are live: refuse new connections,
 * freeze traffic (network partition), reset every connection (server crash),
 * add latency.
 *
 *     relay *r;
 *     if (relay_start(&r, "127.0.0.1", pg.port) != 0) fail();
 *     snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d ...", relay_port(r));
 *     ...
 *     relay_reset_all(r);                 (every open connection gets RST)
 *     relay_set_mode(r, RELAY_REFUSE);    ("database is down")
 *     relay_set_mode(r, RELAY_PASS);      ("database is back")
 *     relay_stop(r);
 *
 * Conventions
 *   - Functions return 0 on success or a negative errno value.
 *   - Every call is thread-safe. Calls that change behaviour are synchronous:
 *     they return after the relay thread has applied the change, so a test
 *     can act on the new behaviour right away without sleeping.
 *   - The relay runs one thread that blocks only in epoll_wait. Sockets are
 *     non-blocking; each direction of a connection buffers at most
 *     RELAY_BUFFER_BYTES (reading stops while the buffer is full), and at most
 *     RELAY_MAX_PAIRS connections are open at once (further clients wait in
 *     the kernel's listen backlog). Memory is therefore bounded.
 *   - Half-close is forwarded: EOF from one side becomes shutdown(SHUT_WR) on
 *     the other once the data before it has been delivered. A reset or error
 *     on either side resets both sides.
 *   - If the target cannot be reached (connect fails for every resolved
 *     address), the client connection is reset: the client sees ECONNRESET
 *     right after its connect succeeded, much like a server that dies
 *     during start-up.
 *   - Linux only (epoll, eventfd, and the listener pause described at
 *     RELAY_REFUSE).
 */
#ifndef DBPOOL_TEST_RELAY_H
#define DBPOOL_TEST_RELAY_H

#include <stddef.h>

#define RELAY_BUFFER_BYTES ((size_t)256 * 1024) /* per direction, incl. chunk headers */
#define RELAY_MAX_PAIRS 1024                    /* open client/target pairs at once */
#define RELAY_MAX_LATENCY_MS 60000

typedef struct relay relay;

typedef enum {
    /* Forward data both ways (after the configured latency). */
    RELAY_PASS,
    /* New connections are refused: the listener stops listening (its port
     * stays reserved), so connect() fails at once with ECONNREFUSED -- the
     * same thing a client sees when the database is down. Connections
     * waiting in the backlog when REFUSE starts are reset. We chose this
     * over accept-then-RST because that lets connect() succeed and only
     * fails the first read/write with ECONNRESET, which libpq reports as
     * "server closed the connection unexpectedly", not "Connection refused".
     * Connections that are already open keep forwarding: combine with
     * relay_reset_all() to simulate a crashed server. */
    RELAY_REFUSE,
    /* A network partition: nothing is forwarded in either direction and
     * nothing is closed. Data is left unread in the kernel, so senders are
     * throttled by TCP flow control as they would be by a dead link. New
     * connections are accepted (their connect() succeeds, as it would
     * against a full backlog) but the relay does not connect them to the
     * target yet. Switching back to PASS (or to REFUSE) heals the partition:
     * held data is delivered in order and held clients are connected to the
     * target, like TCP retransmission after a link comes back. While frozen
     * the relay does not watch its sockets at all, so a client that gives up
     * is only noticed after the partition heals (or at relay_reset_all()). */
    RELAY_BLACKHOLE
} relay_mode;

/* Start a relay on 127.0.0.1:<free port> forwarding to target_host:
 * target_port, in mode RELAY_PASS with no latency, on its own thread.
 * target_host is resolved once, here (getaddrinfo: name or numeric address;
 * the addresses are tried in order for each connection).
 * Returns 0 and sets *out, -EINVAL for bad arguments or a target that does
 * not resolve, or another negative errno. Free with relay_stop(). */
int relay_start(relay **out, const char *target_host, int target_port);

/* The port the relay listens on (fixed for the relay's lifetime, also across
 * REFUSE). */
int relay_port(const relay *r);

/* Switch mode (see relay_mode). Affects existing connections as described
 * there. Returns 0, -EINVAL for an unknown mode, or a negative errno if the
 * listener could not be restarted. */
int relay_set_mode(relay *r, relay_mode mode);

/* Reset every open connection: both sides get RST (SO_LINGER {1, 0} +
 * close), buffered data is dropped. On return the relay holds no connection
 * (open_pairs == 0). New connections are still handled per the mode. */
int relay_reset_all(relay *r);

/* Delay every chunk of data by ms milliseconds (0 = none), in both
 * directions, so a request/response round trip takes at least 2 * ms.
 * Order is kept. Applies to data read after the call; EOF is delayed like
 * data. Returns 0 or -EINVAL if ms is outside [0, RELAY_MAX_LATENCY_MS]. */
int relay_set_latency(relay *r, int ms);

/* Delay an EOF read from the target (the server closed its side) by ms more
 * than the data before it (0 = none): the client then sees the server's
 * last words (e.g. PostgreSQL's FATAL before it exits) well before the
 * close. Applies to EOFs read after the call. Returns 0 or -EINVAL if ms is
 * outside [0, RELAY_MAX_LATENCY_MS]. */
int relay_set_eof_delay(relay *r, int ms);

/* Connections whose target EOF is held back by the eof delay, with every
 * byte before it delivered to the client. Lets a test await "the client has
 * the server's last words but not the close yet". */
int relay_held_eofs(relay *r);

/* Counters: connections accepted since start, and client/target pairs open
 * now. Either pointer may be NULL. Returns 0. */
int relay_stats(relay *r, int *accepted, int *open_pairs);

/* Close every connection (plain close, no RST), stop and join the thread,
 * free the relay. NULL is a no-op. Must not race with other calls on r. */
void relay_stop(relay *r);

#endif
