/* pg_resolve.c - host-name lookup for the PostgreSQL driver, done on a worker
 * thread and handed to libpq as `hostaddr` (libpq would block in getaddrinfo
 * inside PQconnectStartParams, on the manager thread). */
#include "pg_resolve.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "alloc.h"

#define MAX_ENTRIES 64 /* host list entries after expansion */
/* room in keys/vals beyond the pool's: host, hostaddr, port, user, password
 * and the terminating NULL */
#define EXTRA_KEYS 6

int (*dbpool__pg_getaddrinfo)(const char *node, const char *service, const struct addrinfo *hints,
                              struct addrinfo **res) = getaddrinfo;

/* A host entry libpq would look up: not empty, not a socket directory, not a
 * numeric address. */
static int is_name(const char *h, size_t n)
{
    char buf[INET6_ADDRSTRLEN + 1];
    unsigned char addr[sizeof(struct in6_addr)];

    if (n == 0 || h[0] == '/' || h[0] == '@')
        return 0;
    if (n >= sizeof(buf))
        return 1;
    memcpy(buf, h, n);
    buf[n] = '\0';
    return inet_pton(AF_INET, buf, addr) != 1 && inet_pton(AF_INET6, buf, addr) != 1;
}

int pg_needs_lookup(const char *host, const char *hostaddr)
{
    if (!host || (hostaddr && *hostaddr))
        return 0; /* libpq connects to hostaddr: no lookup */
    for (const char *p = host;;) {
        size_t n = strcspn(p, ",");
        if (is_name(p, n))
            return 1;
        if (!p[n])
            return 0;
        p += n + 1;
    }
}

/* The n-th entry of a comma-separated list (the only one if it has one). */
static void list_item(const char *list, int i, char *out, size_t cap)
{
    const char *p = list ? list : "";
    int count = 1;

    for (const char *q = p; *q; q++)
        count += *q == ',';
    if (count == 1)
        i = 0;
    for (; i > 0 && *p; p++)
        if (*p == ',')
            i--;
    size_t n = strcspn(p, ",");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

struct buf {
    char *s;
    size_t len, cap;
    int oom;
};

static void put(struct buf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->oom)
        return;
    if (b->len + n + 2 > b->cap) {
        size_t cap = (b->len + n + 2) * 2;
        char *t = mem_malloc(cap);
        if (!t) {
            b->oom = 1;
            return;
        }
        if (b->s)
            memcpy(t, b->s, b->len + 1);
        mem_free(b->s);
        b->s = t;
        b->cap = cap;
    }
    if (b->len)
        b->s[b->len++] = ',';
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

struct pg_resolved *pg_resolve(const char *const *keys, const char *const *vals, char *err,
                               size_t errlen)
{
    const char *host = NULL, *port = NULL;
    int nkeys = 0;

    for (; keys[nkeys]; nkeys++) {
        if (!strcmp(keys[nkeys], "host"))
            host = vals[nkeys];
        else if (!strcmp(keys[nkeys], "port"))
            port = vals[nkeys];
    }
    if (!host)
        host = getenv("PGHOST"); /* libpq would read it: look it up here too */
    struct buf hosts = {0}, addrs = {0}, ports = {0};
    int entries = 0, hosts_in = 1;
    for (const char *q = host ? host : ""; *q; q++)
        hosts_in += *q == ',';
    err[0] = '\0';
    for (int i = 0; i < hosts_in && entries < MAX_ENTRIES; i++) {
        char h[256], pt[32];
        list_item(host, i, h, sizeof(h));
        list_item(port, i, pt, sizeof(pt));
        if (!is_name(h, strlen(h))) { /* libpq handles it without a lookup */
            put(&hosts, h);
            put(&addrs, "");
            put(&ports, pt);
            entries++;
            continue;
        }
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int rc = dbpool__pg_getaddrinfo(h, NULL, &hints, &res);
        if (rc != 0 || !res) {
            /* libpq's wording; the next host may still work */
            snprintf(err, errlen, "could not translate host name \"%.200s\" to address: %s", h,
                     rc ? gai_strerror(rc) : "no address");
            continue;
        }
        for (struct addrinfo *ai = res; ai && entries < MAX_ENTRIES; ai = ai->ai_next) {
            char a[INET6_ADDRSTRLEN];
            const void *src =
                ai->ai_family == AF_INET
                    ? (const void *)&((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr
                    : (const void *)&((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr;
            if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                !inet_ntop(ai->ai_family, src, a, sizeof(a)))
                continue;
            put(&hosts, h); /* kept for TLS verification and messages */
            put(&addrs, a);
            put(&ports, pt);
            entries++;
        }
        freeaddrinfo(res);
    }
    struct pg_resolved *r = NULL;
    if (entries == 0 || hosts.oom || addrs.oom || ports.oom) {
        if (!err[0])
            snprintf(err, errlen, "%s", entries ? "out of memory" : "no host to connect to");
        goto out;
    }
    r = mem_calloc(1, sizeof(*r));
    if (!r || !(r->keys = mem_calloc((size_t)nkeys + EXTRA_KEYS, sizeof(char *))) ||
        !(r->vals = mem_calloc((size_t)nkeys + EXTRA_KEYS, sizeof(char *)))) {
        pg_resolved_free(r);
        r = NULL;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    int n = 0;
    for (int i = 0; i < nkeys; i++) {
        if (!strcmp(keys[i], "host") || !strcmp(keys[i], "hostaddr") || !strcmp(keys[i], "port"))
            continue;
        r->keys[n] = keys[i];
        r->vals[n++] = vals[i];
    }
    r->keys[n] = "host";
    r->vals[n++] = r->host = hosts.s;
    r->keys[n] = "hostaddr";
    r->vals[n++] = r->hostaddr = addrs.s;
    hosts.s = addrs.s = NULL;
    if (port) {
        r->keys[n] = "port";
        r->vals[n++] = r->port = ports.s;
        ports.s = NULL;
    }
    r->keys[n] = r->vals[n] = NULL;
    err[0] = '\0';
out:
    mem_free(hosts.s);
    mem_free(addrs.s);
    mem_free(ports.s);
    return r;
}

struct pg_resolved *pg_resolved_plain(const char *const *keys, const char *const *vals)
{
    struct pg_resolved *r = mem_calloc(1, sizeof(*r));
    int n = 0;

    while (keys[n])
        n++;
    if (!r || !(r->keys = mem_calloc((size_t)n + EXTRA_KEYS, sizeof(char *))) ||
        !(r->vals = mem_calloc((size_t)n + EXTRA_KEYS, sizeof(char *)))) {
        pg_resolved_free(r);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        r->keys[i] = keys[i];
        r->vals[i] = vals[i];
    }
    return r;
}

/* Set key to an owned value: replace its entry or append one. */
static void set_key(struct pg_resolved *r, const char *key, const char *val)
{
    int i = 0;

    while (r->keys[i] && strcmp(r->keys[i], key) != 0)
        i++;
    if (!r->keys[i]) {
        r->keys[i] = key;
        r->keys[i + 1] = r->vals[i + 1] = NULL;
    }
    r->vals[i] = val;
}

int pg_resolved_credentials(struct pg_resolved *r, const char *user, const char *password)
{
    if (user && *user) {
        if (!(r->user = mem_strdup(user)))
            return -1;
        set_key(r, "user", r->user);
    }
    if (password && *password) {
        if (!(r->password = mem_strdup(password)))
            return -1;
        set_key(r, "password", r->password);
    }
    return 0;
}

void pg_resolved_free(struct pg_resolved *r)
{
    if (!r)
        return;
    if (r->password)
        memset(r->password, 0, strlen(r->password));
    mem_free(r->user);
    mem_free(r->password);
    mem_free(r->host);
    mem_free(r->hostaddr);
    mem_free(r->port);
    mem_free(r->keys);
    mem_free(r->vals);
    mem_free(r);
}
