/* relay.c - TCP fault relay (the tests and `dbpool drill`): forwards 127.0.0.1:<port> to a target
 * and injects refusals, partitions, resets and latency on command.
 *
 * One thread runs an epoll loop (level-triggered) and owns every socket and
 * buffer. API calls post a request in a mailbox guarded by `mu`, wake the
 * thread through an eventfd and wait on `cv` until the thread has applied
 * it: the thread itself only ever blocks in epoll_wait.
 *
 * A connection is a *pair*: s[0] the client, s[1] the target. Direction d[i]
 * carries bytes read from s[i] to s[!i] as a FIFO of chunks, each with the
 * time it may be sent (read time + latency); a zero-length chunk is the EOF
 * marker, turned into shutdown(SHUT_WR) when it reaches the head (an EOF from
 * the target may be due later than its data: relay_set_eof_delay). A side is
 * registered in epoll only for what it is waiting for (EPOLLIN while its
 * outgoing direction has room, EPOLLOUT after a short write or while
 * connecting); a side that waits for nothing is removed from epoll, so
 * EPOLLHUP/EPOLLERR can never make the loop spin.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "relay.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_ADDRS 4 /* target addresses tried per connection */
#define BACKLOG 128
#define MAX_EVENTS 64
#define ACCEPT_BATCH 64 /* accepts per wake-up, so data keeps flowing */
#define READ_MAX ((size_t)64 * 1024)

typedef struct chunk {
    struct chunk *next;
    int64_t due;     /* CLOCK_MONOTONIC ns at which it may be sent */
    size_t len, off; /* len == 0: EOF marker */
    char data[];
} chunk;

struct pair;

typedef struct side {
    int fd;          /* -1: not open (target side of a pair held in BLACKHOLE) */
    uint32_t mask;   /* events registered in epoll; 0 = not registered */
    bool rd_eof;     /* read returned EOF: nothing more will come */
    bool wr_shut;    /* EOF forwarded: we did shutdown(SHUT_WR) */
    bool wr_blocked; /* last send hit EAGAIN: waiting for EPOLLOUT */
    int idx;         /* 0 client, 1 target */
    struct pair *pair;
} side;

typedef struct dir { /* d[i]: read from s[i], written to s[!i] */
    chunk *head, *tail;
    size_t bytes; /* unsent payload + chunk headers: what the cap bounds */
    bool timed;   /* head is waiting for its due time (counted in ntimed) */
} dir;

typedef struct pair {
    struct pair *prev, *next;
    side s[2];
    dir d[2];
    bool connecting; /* s[1] non-blocking connect in progress */
    bool dead;       /* closed; freed after the current batch of events */
    bool eof_held;   /* the target's EOF waits for its eof delay (counted) */
    int addr;        /* index of the target address being tried */
} pair;

struct relay {
    /* Set by relay_start, read-only afterwards. */
    int port;
    int naddrs;
    struct sockaddr_storage addrs[MAX_ADDRS];
    socklen_t addrlens[MAX_ADDRS];
    int epfd, evfd;
    pthread_t thread;

    /* Mailbox: written by callers, read by the relay thread, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    relay_mode want_mode;
    int want_latency_ms;
    int want_eof_delay_ms;
    unsigned want_resets; /* bumped by relay_reset_all */
    bool want_stop;
    uint64_t seq;      /* last request posted */
    uint64_t done_seq; /* last request applied by the thread */
    int last_err;      /* result of the last mode change */
    bool thread_dead;  /* epoll failed: callers must not wait */

    atomic_int accepted, open_pairs, held_eofs;

    /* Relay thread only. */
    int lfd;
    relay_mode mode;
    int64_t latency_ns;
    int64_t eof_delay_ns; /* extra delay of an EOF read from the target */
    unsigned resets_done;
    bool listening; /* lfd is in LISTEN state (false during REFUSE) */
    bool lwatched;  /* lfd is registered in epoll */
    bool lstarved;  /* accept ran out of fds/memory: wait for a pair to close */
    pair *pairs, *graveyard;
    int npairs, ntimed;
    char buf[READ_MAX];
};

/* Distinct addresses used as epoll tags for the two non-pair fds. */
static char tag_listen, tag_wake;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_nodelay(int fd)
{
    /* The relay must not add Nagle delays of its own to small messages. */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void close_rst(int fd)
{
    /* SO_LINGER {1, 0} turns close() into an abort: the peer gets RST. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static bool frozen(const relay *r)
{
    return r->mode == RELAY_BLACKHOLE;
}

static bool dir_full(const dir *q)
{
    /* Room for at least one byte plus its chunk header? */
    return q->bytes + sizeof(chunk) >= RELAY_BUFFER_BYTES;
}

/* ---- listener ------------------------------------------------------------ */

/* Bind 127.0.0.1:port and listen; port 0 picks a free port. We probe for a
 * free port and then bind it *explicitly*, because Linux releases an
 * auto-assigned port when a listener is paused (see pause_listener) but
 * keeps an explicitly bound one. SO_REUSEADDR is needed to listen again
 * while accepted connections (which inherit it) still use the port. */
static int open_listener(int port, int *fd_out, int *port_out)
{
    int err = EADDRINUSE;
    for (int attempt = 0; attempt < 32 && err == EADDRINUSE; attempt++) {
        struct sockaddr_in a = {.sin_family = AF_INET};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons((uint16_t)port);
        if (port == 0) {
            int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            socklen_t len = sizeof a;
            if (probe < 0)
                return -errno;
            if (bind(probe, (struct sockaddr *)&a, sizeof a) != 0 ||
                getsockname(probe, (struct sockaddr *)&a, &len) != 0) {
                err = errno;
                close(probe);
                return -err;
            }
            close(probe);
        }
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, BACKLOG) == 0) {
            *fd_out = fd;
            *port_out = ntohs(a.sin_port);
            return 0;
        }
        err = errno;
        close(fd);
        if (port != 0) /* a fixed port: retrying will not help */
            break;
    }
    return -err;
}

/* Keep lfd registered in epoll exactly when we want to accept. */
static void update_listener(relay *r)
{
    bool want = r->listening && !r->lstarved && r->npairs < RELAY_MAX_PAIRS;
    if (want == r->lwatched)
        return;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_listen};
    if (epoll_ctl(r->epfd, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, r->lfd, &ev) == 0)
        r->lwatched = want;
}

/* REFUSE: shutdown(SHUT_RD) on a listening socket takes it out of LISTEN
 * (Linux; HAProxy pauses listeners the same way) while it stays bound, so
 * connect() gets ECONNREFUSED and queued, unaccepted connections get RST. */
static void pause_listener(relay *r)
{
    r->listening = false;
    update_listener(r); /* before shutdown: a closed socket reports EPOLLHUP */
    if (r->lfd >= 0)
        (void)shutdown(r->lfd, SHUT_RD);
}

static int resume_listener(relay *r)
{
    if (r->lfd >= 0 && listen(r->lfd, BACKLOG) != 0) {
        close(r->lfd); /* not watched while paused: nothing to unregister */
        r->lfd = -1;
    }
    if (r->lfd < 0) { /* fallback: a fresh socket on the same port */
        int port;
        int rc = open_listener(r->port, &r->lfd, &port);
        if (rc != 0) {
            r->lfd = -1; /* retried at the next relay_set_mode() */
            return rc;
        }
    }
    r->listening = true;
    update_listener(r);
    return 0;
}

/* ---- pairs --------------------------------------------------------------- */

static void dir_set_timed(relay *r, dir *q, bool timed)
{
    if (q->timed != timed) {
        q->timed = timed;
        r->ntimed += timed ? 1 : -1;
    }
}

static void pair_set_held(relay *r, pair *p, bool held)
{
    if (p->eof_held != held) {
        p->eof_held = held;
        atomic_fetch_add(&r->held_eofs, held ? 1 : -1);
    }
}

/* Close both sides (RST if rst) and retire the pair. It stays allocated until
 * the end of the event batch, since later events in the batch may point to
 * it; they see `dead` and are skipped. */
static void pair_close(relay *r, pair *p, bool rst)
{
    for (int i = 0; i < 2; i++) {
        if (p->s[i].fd >= 0) {
            if (rst)
                close_rst(p->s[i].fd);
            else
                close(p->s[i].fd); /* also leaves epoll */
            p->s[i].fd = -1;
            p->s[i].mask = 0;
        }
        dir_set_timed(r, &p->d[i], false);
        pair_set_held(r, p, false);
        for (chunk *c = p->d[i].head, *n; c; c = n) {
            n = c->next;
            free(c);
        }
        p->d[i].head = p->d[i].tail = NULL;
        p->d[i].bytes = 0;
    }
    if (p->prev)
        p->prev->next = p->next;
    else
        r->pairs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->dead = true;
    p->next = r->graveyard;
    r->graveyard = p;
    r->npairs--;
    atomic_fetch_sub(&r->open_pairs, 1);
    r->lstarved = false; /* an fd was freed: accept may succeed again */
    update_listener(r);
}

static uint32_t side_want(const relay *r, const pair *p, int i)
{
    const side *s = &p->s[i];
    if (s->fd < 0 || frozen(r))
        return 0;
    if (i == 1 && p->connecting)
        return EPOLLOUT;
    uint32_t m = 0;
    if (!s->rd_eof && !dir_full(&p->d[i]))
        m |= EPOLLIN;
    if (s->wr_blocked)
        m |= EPOLLOUT;
    return m;
}

/* Bring both sides' epoll registrations in line with what they wait for.
 * Returns -1 (pair reset) if epoll refuses. */
static int pair_sync(relay *r, pair *p)
{
    for (int i = 0; i < 2; i++) {
        side *s = &p->s[i];
        uint32_t want = side_want(r, p, i);
        if (want == s->mask)
            continue;
        struct epoll_event ev = {.events = want, .data.ptr = s};
        int op = s->mask == 0 ? EPOLL_CTL_ADD : want == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
        if (epoll_ctl(r->epfd, op, s->fd, &ev) != 0) {
            pair_close(r, p, true);
            return -1;
        }
        s->mask = want;
    }
    return 0;
}

/* Start a non-blocking connect to the target, trying addresses from p->addr
 * on. Returns -1 when none is left. */
static int start_connect(relay *r, pair *p)
{
    for (; p->addr < r->naddrs; p->addr++) {
        const struct sockaddr_storage *a = &r->addrs[p->addr];
        int fd = socket(a->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        set_nodelay(fd);
        if (connect(fd, (const struct sockaddr *)a, r->addrlens[p->addr]) == 0 ||
            errno == EINPROGRESS) {
            p->s[1].fd = fd;
            p->s[1].mask = 0;
            p->connecting = true; /* confirmed by EPOLLOUT + SO_ERROR */
            return 0;
        }
        close(fd);
    }
    return -1;
}

/* Send what is due in direction i. Returns -1 if the pair is gone (reset on
 * a write error, or closed because both directions finished). */
static int flush(relay *r, pair *p, int i)
{
    dir *q = &p->d[i];
    side *dst = &p->s[!i];
    dir_set_timed(r, q, false);
    bool ready = !frozen(r) && dst->fd >= 0 && !(i == 0 && p->connecting) && !dst->wr_blocked;
    int64_t now = ready && q->head ? now_ns() : 0;
    while (ready && q->head) {
        chunk *c = q->head;
        if (c->due > now) {
            dir_set_timed(r, q, true); /* the epoll timeout releases it */
            break;
        }
        if (c->len == 0) {
            (void)shutdown(dst->fd, SHUT_WR);
            dst->wr_shut = true;
        } else {
            ssize_t n = send(dst->fd, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    dst->wr_blocked = true;
                    break;
                }
                pair_close(r, p, true); /* EPIPE, ECONNRESET, ... */
                return -1;
            }
            c->off += (size_t)n;
            q->bytes -= (size_t)n;
            if (c->off < c->len)
                continue; /* partial write: try the rest (EAGAIN next) */
        }
        q->head = c->next;
        if (!q->head)
            q->tail = NULL;
        q->bytes -= sizeof(chunk);
        free(c);
    }
    if (i == 1) /* everything before the target's EOF is out; the EOF waits */
        pair_set_held(r, p, q->timed && q->head->len == 0);
    if (p->s[0].wr_shut && p->s[1].wr_shut) { /* EOF went both ways */
        pair_close(r, p, false);
        return -1;
    }
    return pair_sync(r, p);
}

/* Read once from side i into direction i. Returns -1 if the pair is gone. */
static int pump_read(relay *r, pair *p, int i)
{
    dir *q = &p->d[i];
    if (dir_full(q)) /* stale event: IN is only registered while there is room */
        return 0;
    size_t room = RELAY_BUFFER_BYTES - q->bytes - sizeof(chunk);
    ssize_t n = recv(p->s[i].fd, r->buf, room < READ_MAX ? room : READ_MAX, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        pair_close(r, p, true); /* ECONNRESET etc.: pass the reset on */
        return -1;
    }
    chunk *c = malloc(sizeof(chunk) + (size_t)n);
    if (!c) {
        pair_close(r, p, true);
        return -1;
    }
    c->next = NULL;
    c->due = now_ns() + r->latency_ns + (n == 0 && i == 1 ? r->eof_delay_ns : 0);
    c->len = (size_t)n;
    c->off = 0;
    memcpy(c->data, r->buf, (size_t)n);
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    q->bytes += sizeof(chunk) + (size_t)n;
    if (n == 0)
        p->s[i].rd_eof = true;
    return flush(r, p, i);
}

/* Side j became writable (or failed). Returns -1 if the pair is gone. */
static int on_writable(relay *r, pair *p, int j)
{
    if (j == 1 && p->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(p->s[1].fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            close(p->s[1].fd);
            p->s[1].fd = -1;
            p->s[1].mask = 0;
            p->connecting = false;
            p->addr++;
            if (start_connect(r, p) != 0) {
                pair_close(r, p, true); /* target unreachable: reset the client */
                return -1;
            }
            return pair_sync(r, p);
        }
        p->connecting = false;
        return flush(r, p, 0);
    }
    p->s[j].wr_blocked = false;
    return flush(r, p, !j);
}

static void on_pair_event(relay *r, side *s, uint32_t ev)
{
    pair *p = s->pair;
    if (p->dead)
        return;
    /* Errors and hang-ups are picked up by the send/recv/SO_ERROR they make
     * fail; a side is only registered while it waits for IN or OUT. */
    if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && (s->mask & EPOLLOUT))
        if (on_writable(r, p, s->idx) != 0)
            return;
    if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) && (s->mask & EPOLLIN))
        (void)pump_read(r, p, s->idx);
}

static void on_accept(relay *r)
{
    for (int k = 0; k < ACCEPT_BATCH && r->npairs < RELAY_MAX_PAIRS; k++) {
        int fd = accept4(r->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                r->lstarved = true; /* level-triggered: would spin otherwise */
            break;
        }
        atomic_fetch_add(&r->accepted, 1);
        pair *p = calloc(1, sizeof *p);
        if (!p) {
            close_rst(fd);
            continue;
        }
        for (int i = 0; i < 2; i++) {
            p->s[i].idx = i;
            p->s[i].pair = p;
        }
        p->s[0].fd = fd;
        p->s[1].fd = -1;
        set_nodelay(fd);
        p->next = r->pairs;
        if (r->pairs)
            r->pairs->prev = p;
        r->pairs = p;
        r->npairs++;
        atomic_fetch_add(&r->open_pairs, 1);
        /* In BLACKHOLE the target connect waits for the partition to heal. */
        if (!frozen(r) && start_connect(r, p) != 0) {
            pair_close(r, p, true);
            continue;
        }
        (void)pair_sync(r, p);
    }
    update_listener(r);
}

/* ---- commands ------------------------------------------------------------ */

static void freeze_all(relay *r)
{
    for (pair *p = r->pairs, *n; p; p = n) {
        n = p->next;
        dir_set_timed(r, &p->d[0], false);
        dir_set_timed(r, &p->d[1], false);
        pair_set_held(r, p, false);
        (void)pair_sync(r, p); /* every mask becomes 0: out of epoll */
    }
}

static void thaw_all(relay *r)
{
    for (pair *p = r->pairs, *n; p; p = n) {
        n = p->next;
        if (p->s[1].fd < 0 && start_connect(r, p) != 0) {
            pair_close(r, p, true);
            continue;
        }
        if (flush(r, p, 0) == 0)
            (void)flush(r, p, 1);
    }
}

/* Idempotent, so a listener that failed to restart is retried by the next
 * relay_set_mode() even if the mode did not change. */
static int apply_mode(relay *r, relay_mode mode)
{
    relay_mode old = r->mode;
    int err = 0;
    r->mode = mode;
    if (mode == RELAY_REFUSE && r->listening)
        pause_listener(r);
    else if (mode != RELAY_REFUSE && !r->listening)
        err = resume_listener(r);
    if (mode == RELAY_BLACKHOLE && old != RELAY_BLACKHOLE)
        freeze_all(r);
    else if (mode != RELAY_BLACKHOLE && old == RELAY_BLACKHOLE)
        thaw_all(r);
    return err;
}

/* Apply everything in the mailbox. Returns true when asked to stop. */
static bool on_wake(relay *r)
{
    uint64_t v;
    (void)!read(r->evfd, &v, sizeof v); /* reset the eventfd counter */

    pthread_mutex_lock(&r->mu);
    relay_mode mode = r->want_mode;
    int latency_ms = r->want_latency_ms;
    int eof_delay_ms = r->want_eof_delay_ms;
    unsigned resets = r->want_resets;
    bool stop = r->want_stop;
    uint64_t seq = r->seq;
    pthread_mutex_unlock(&r->mu);
    if (stop)
        return true;

    r->latency_ns = (int64_t)latency_ms * 1000000;
    r->eof_delay_ns = (int64_t)eof_delay_ms * 1000000;
    if (resets != r->resets_done) {
        r->resets_done = resets;
        while (r->pairs)
            pair_close(r, r->pairs, true);
    }
    int err = apply_mode(r, mode);
    r->lstarved = false; /* retry accepting now and then */
    update_listener(r);

    pthread_mutex_lock(&r->mu);
    r->done_seq = seq;
    r->last_err = err;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return false;
}

/* ---- the loop ------------------------------------------------------------ */

/* Milliseconds until the earliest delayed chunk is due, -1 if none. */
static int next_timeout(relay *r)
{
    if (r->ntimed == 0)
        return -1;
    int64_t first = INT64_MAX;
    for (pair *p = r->pairs; p; p = p->next)
        for (int i = 0; i < 2; i++)
            if (p->d[i].timed && p->d[i].head->due < first)
                first = p->d[i].head->due;
    int64_t wait = first - now_ns();
    if (wait <= 0)
        return 0;
    int64_t ms = (wait + 999999) / 1000000; /* round up: never wake early */
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static void run_timers(relay *r)
{
    if (r->ntimed == 0)
        return;
    int64_t now = now_ns();
    for (pair *p = r->pairs, *n; p; p = n) {
        n = p->next; /* flush may retire p, never another pair */
        for (int i = 0; i < 2 && !p->dead; i++)
            if (p->d[i].timed && p->d[i].head->due <= now)
                if (flush(r, p, i) != 0)
                    break;
    }
}

static void bury(relay *r)
{
    while (r->graveyard) {
        pair *p = r->graveyard;
        r->graveyard = p->next;
        free(p);
    }
}

static void *run(void *arg)
{
    relay *r = arg;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(r->epfd, evs, MAX_EVENTS, next_timeout(r));
        if (n < 0 && errno != EINTR) {
            /* Only possible on a programming error; do not leave callers
             * waiting for an answer that will never come. */
            pthread_mutex_lock(&r->mu);
            r->thread_dead = true;
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
            break;
        }
        bool stop = false;
        for (int k = 0; k < n; k++) {
            if (evs[k].data.ptr == &tag_wake)
                stop = on_wake(r) || stop;
            else if (evs[k].data.ptr == &tag_listen)
                on_accept(r);
            else
                on_pair_event(r, evs[k].data.ptr, evs[k].events);
        }
        if (stop)
            break;
        run_timers(r);
        bury(r);
    }
    while (r->pairs)
        pair_close(r, r->pairs, false);
    bury(r);
    return NULL;
}

/* ---- API ----------------------------------------------------------------- */

/* Post the request already written into the mailbox (caller holds mu) and
 * wait until the relay thread has applied it. Unlocks mu. */
static int post_and_wait(relay *r)
{
    uint64_t my = ++r->seq;
    uint64_t one = 1;
    (void)!write(r->evfd, &one, sizeof one); /* EAGAIN only if already pending */
    while (r->done_seq < my && !r->thread_dead)
        pthread_cond_wait(&r->cv, &r->mu);
    int err = r->thread_dead ? -EIO : 0;
    pthread_mutex_unlock(&r->mu);
    return err;
}

int relay_start(relay **out, const char *target_host, int target_port)
{
    if (!out || !target_host || target_port <= 0 || target_port > 65535)
        return -EINVAL;
    *out = NULL;
    relay *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->lfd = r->epfd = r->evfd = -1;

    char port[16];
    snprintf(port, sizeof port, "%d", target_port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(target_host, port, &hints, &res) != 0) {
        free(r);
        return -EINVAL;
    }
    for (struct addrinfo *ai = res; ai && r->naddrs < MAX_ADDRS; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof r->addrs[0])
            continue;
        memcpy(&r->addrs[r->naddrs], ai->ai_addr, ai->ai_addrlen);
        r->addrlens[r->naddrs++] = ai->ai_addrlen;
    }
    freeaddrinfo(res);
    if (r->naddrs == 0) {
        free(r);
        return -EINVAL;
    }

    int rc = open_listener(0, &r->lfd, &r->port);
    if (rc == 0 && (r->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        rc = -errno;
    if (rc == 0 && (r->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        rc = -errno;
    if (rc == 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_wake};
        if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->evfd, &ev) != 0)
            rc = -errno;
    }
    if (rc == 0) {
        r->mode = r->want_mode = RELAY_PASS;
        r->listening = true;
        update_listener(r);
        if (!r->lwatched)
            rc = -errno;
    }
    bool sync_init = false;
    if (rc == 0) {
        atomic_init(&r->accepted, 0);
        atomic_init(&r->open_pairs, 0);
        atomic_init(&r->held_eofs, 0);
        pthread_mutex_init(&r->mu, NULL);
        pthread_cond_init(&r->cv, NULL);
        sync_init = true;
        rc = -pthread_create(&r->thread, NULL, run, r);
    }
    if (rc != 0) {
        if (sync_init) {
            pthread_cond_destroy(&r->cv);
            pthread_mutex_destroy(&r->mu);
        }
        if (r->lfd >= 0)
            close(r->lfd);
        if (r->evfd >= 0)
            close(r->evfd);
        if (r->epfd >= 0)
            close(r->epfd);
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int relay_port(const relay *r)
{
    return r->port;
}

int relay_set_mode(relay *r, relay_mode mode)
{
    if (mode != RELAY_PASS && mode != RELAY_REFUSE && mode != RELAY_BLACKHOLE)
        return -EINVAL;
    pthread_mutex_lock(&r->mu);
    r->want_mode = mode;
    int rc = post_and_wait(r);
    if (rc == 0) {
        pthread_mutex_lock(&r->mu);
        rc = r->last_err;
        pthread_mutex_unlock(&r->mu);
    }
    return rc;
}

int relay_reset_all(relay *r)
{
    pthread_mutex_lock(&r->mu);
    r->want_resets++;
    return post_and_wait(r);
}

int relay_set_latency(relay *r, int ms)
{
    if (ms < 0 || ms > RELAY_MAX_LATENCY_MS)
        return -EINVAL;
    pthread_mutex_lock(&r->mu);
    r->want_latency_ms = ms;
    return post_and_wait(r);
}

int relay_set_eof_delay(relay *r, int ms)
{
    if (ms < 0 || ms > RELAY_MAX_LATENCY_MS)
        return -EINVAL;
    pthread_mutex_lock(&r->mu);
    r->want_eof_delay_ms = ms;
    return post_and_wait(r);
}

int relay_held_eofs(relay *r)
{
    return atomic_load(&r->held_eofs);
}

int relay_stats(relay *r, int *accepted, int *open_pairs)
{
    if (accepted)
        *accepted = atomic_load(&r->accepted);
    if (open_pairs)
        *open_pairs = atomic_load(&r->open_pairs);
    return 0;
}

void relay_stop(relay *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->want_stop = true;
    r->seq++;
    pthread_mutex_unlock(&r->mu);
    uint64_t one = 1;
    (void)!write(r->evfd, &one, sizeof one);
    pthread_join(r->thread, NULL);
    if (r->lfd >= 0)
        close(r->lfd);
    close(r->evfd);
    close(r->epfd);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
