/* pg_resolve.h - host names to addresses for libpq, off the manager thread. */
#ifndef DBPOOL_PG_RESOLVE_H
#define DBPOOL_PG_RESOLVE_H

#include "namespace.h"

#include <stddef.h>

struct addrinfo;

/* A connect's parameters with host names looked up: the keys/vals of the
 * pool (borrowed) with host, hostaddr and port replaced (owned), one entry per
 * address, `host` kept for TLS verification and messages. */
struct pg_resolved {
    const char **keys, **vals;
    char *host, *hostaddr, *port;
    char *user, *password; /* from a before_connect_cb; NULL = the pool's */
};

/* Does this host list need a lookup (some entry is a name, and no hostaddr)? */
int pg_needs_lookup(const char *host, const char *hostaddr);
/* Look up every name in the host list (blocks: worker thread only). NULL with
 * a message in err when no address was found. keys/vals must outlive the
 * result. */
struct pg_resolved *pg_resolve(const char *const *keys, const char *const *vals, char *err,
                               size_t errlen);
void pg_resolved_free(struct pg_resolved *r);
/* The pool's keys/vals as they are (no lookup), to carry credentials. NULL
 * if out of memory. */
struct pg_resolved *pg_resolved_plain(const char *const *keys, const char *const *vals);
/* Use this user and password (each if not empty) instead of the pool's.
 * 0, or -1 if out of memory. */
int pg_resolved_credentials(struct pg_resolved *r, const char *user, const char *password);

/* The lookup function (getaddrinfo); tests replace it to make lookups slow. */
extern int (*dbpool__pg_getaddrinfo)(const char *node, const char *service,
                                     const struct addrinfo *hints, struct addrinfo **res);

#endif
