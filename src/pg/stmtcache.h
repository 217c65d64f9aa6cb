/* stmtcache.h - the per-connection cache of named prepared statements: an
 * LRU keyed by (sql, parameter count, parameter types), with the names of
 * forgotten statements kept until they can be DEALLOCATEd. Pure memory: it
 * sends nothing (pg_query.c does). */
#ifndef DBPOOL_PG_STMTCACHE_H
#define DBPOOL_PG_STMTCACHE_H

#include "namespace.h"

#include <libpq-fe.h>
#include <stdint.h>

#include "list.h"

#define STMTCACHE_PENDING_MAX 32 /* forgotten statements waiting for DEALLOCATE */
#define STMTCACHE_NAME_LEN 32

/* One prepared statement. */
struct stmt {
    struct list_node lru; /* most recently used first */
    uint64_t hash;
    int n;
    Oid *types; /* n entries, or NULL: the server inferred them */
    char *sql;
    char name[STMTCACHE_NAME_LEN];
};

struct stmtcache {
    struct list_head lru; /* lru.n statements */
    unsigned long long next_id;
    /* Statements forgotten while a transaction was open (eviction, 0A000):
     * DEALLOCATEd at the next cached call outside a transaction, so that no
     * DEALLOCATE can ever abort a caller's transaction. */
    char pending[STMTCACHE_PENDING_MAX][STMTCACHE_NAME_LEN];
    int npending;
};

void stmtcache_init(struct stmtcache *c);
/* Forget every statement without DEALLOCATE (the server lost them already). */
void stmtcache_clear(struct stmtcache *c);
uint64_t stmtcache_hash(const char *sql, int n, const Oid *types);
/* The cached statement for this key, made the most recently used; NULL if
 * none. */
struct stmt *stmtcache_get(struct stmtcache *c, uint64_t h, const char *sql, int n,
                           const Oid *types);
/* A new statement with a fresh name, not in the cache yet; NULL if out of
 * memory. Add it with stmtcache_add() once prepared, or stmt_free() it. */
struct stmt *stmtcache_new(struct stmtcache *c, uint64_t h, const char *sql, int n,
                           const Oid *types);
void stmtcache_add(struct stmtcache *c, struct stmt *s);
void stmt_free(struct stmt *s);
/* The least recently used statement, or NULL. */
struct stmt *stmtcache_oldest(struct stmtcache *c);
/* Drop s; its name waits in `pending` for DEALLOCATE. 0, or -1 if the pending
 * list is full (the statement then lives on the server until the session
 * ends: bounded by the connection's lifetime). */
int stmtcache_forget(struct stmtcache *c, struct stmt *s);

#endif
