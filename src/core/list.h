/* list.h - one intrusive doubly linked list for the whole library (circular,
 * with a head node; libuv's queue.h and PgBouncer's StatList are the models).
 * Embed a struct list_node in the element; list_entry() gets the element back. */
#ifndef DBPOOL_LIST_H
#define DBPOOL_LIST_H

#include "namespace.h"

#include <stddef.h>

struct list_node {
    struct list_node *prev, *next;
};

/* A head is a node that is not an element; n counts the elements. */
struct list_head {
    struct list_node node;
    int n;
};

#define LIST_HEAD_INIT(h)                                                                          \
    {                                                                                              \
        {&(h).node, &(h).node}, 0                                                                  \
    }
#define list_entry(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
/* Safe against removal of the current node. */
#define list_for_each(it, h)                                                                       \
    for (struct list_node *it = (h)->node.next, *it##_next = it->next; it != &(h)->node;           \
         it = it##_next, it##_next = it->next)

static inline void list_init(struct list_head *h)
{
    h->node.prev = h->node.next = &h->node;
    h->n = 0;
}

static inline int list_empty(const struct list_head *h)
{
    return h->node.next == &h->node;
}

static inline struct list_node *list_first(const struct list_head *h)
{
    return list_empty(h) ? NULL : h->node.next;
}

static inline struct list_node *list_last(const struct list_head *h)
{
    return list_empty(h) ? NULL : h->node.prev;
}

static inline void list_push_tail(struct list_head *h, struct list_node *n)
{
    n->next = &h->node;
    n->prev = h->node.prev;
    h->node.prev->next = n;
    h->node.prev = n;
    h->n++;
}

/* Remove n from the list h it is on. */
static inline void list_del(struct list_head *h, struct list_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
    h->n--;
}

static inline struct list_node *list_pop(struct list_head *h)
{
    struct list_node *n = list_first(h);
    if (n)
        list_del(h, n);
    return n;
}

#endif
