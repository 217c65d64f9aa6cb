/* stmtcache.c - the per-connection LRU of named prepared statements
 * (stmtcache.h); pure memory, unit-testable without a server. */
#include "stmtcache.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"

void stmtcache_init(struct stmtcache *c)
{
    memset(c, 0, sizeof(*c));
    list_init(&c->lru);
}

void stmt_free(struct stmt *s)
{
    if (!s)
        return;
    mem_free(s->types);
    mem_free(s->sql);
    mem_free(s);
}

void stmtcache_clear(struct stmtcache *c)
{
    struct list_node *n;

    while ((n = list_pop(&c->lru)) != NULL)
        stmt_free(list_entry(n, struct stmt, lru));
}

uint64_t stmtcache_hash(const char *sql, int n, const Oid *types)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (const unsigned char *p = (const unsigned char *)sql; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    h = (h ^ (uint64_t)(unsigned)n) * 1099511628211ULL;
    for (int i = 0; types && i < n; i++)
        h = (h ^ types[i]) * 1099511628211ULL;
    return h;
}

struct stmt *stmtcache_get(struct stmtcache *c, uint64_t h, const char *sql, int n,
                           const Oid *types)
{
    list_for_each(it, &c->lru)
    {
        struct stmt *s = list_entry(it, struct stmt, lru);
        if (s->hash != h || s->n != n || !s->types != !types || strcmp(s->sql, sql) != 0)
            continue;
        if (types && n > 0 && memcmp(s->types, types, sizeof(Oid) * (size_t)n) != 0)
            continue;
        list_del(&c->lru, &s->lru); /* to the front: most recently used */
        stmtcache_add(c, s);
        return s;
    }
    return NULL;
}

struct stmt *stmtcache_new(struct stmtcache *c, uint64_t h, const char *sql, int n,
                           const Oid *types)
{
    struct stmt *s = mem_calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->hash = h;
    s->n = n;
    s->sql = mem_strdup(sql);
    if (types && n > 0) {
        s->types = mem_malloc(sizeof(Oid) * (size_t)n);
        if (s->types)
            memcpy(s->types, types, sizeof(Oid) * (size_t)n);
    }
    if (!s->sql || (types && n > 0 && !s->types)) {
        stmt_free(s);
        return NULL;
    }
    snprintf(s->name, sizeof(s->name), "dbpool_s%llu", ++c->next_id);
    return s;
}

/* list.h appends at the tail; the cache keeps the most recent first, so it
 * inserts right after the head node. */
void stmtcache_add(struct stmtcache *c, struct stmt *s)
{
    struct list_node *head = &c->lru.node;

    s->lru.prev = head;
    s->lru.next = head->next;
    head->next->prev = &s->lru;
    head->next = &s->lru;
    c->lru.n++;
}

struct stmt *stmtcache_oldest(struct stmtcache *c)
{
    struct list_node *n = list_last(&c->lru);
    return n ? list_entry(n, struct stmt, lru) : NULL;
}

int stmtcache_forget(struct stmtcache *c, struct stmt *s)
{
    int rc = -1;

    list_del(&c->lru, &s->lru);
    if (c->npending < STMTCACHE_PENDING_MAX) {
        memcpy(c->pending[c->npending++], s->name, STMTCACHE_NAME_LEN);
        rc = 0;
    }
    stmt_free(s);
    return rc;
}
