/* alloc.c - allocator hook: every allocation the library itself makes goes
 * through here, so tests can fail each one in turn (libpq's own do not). */
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

#include "dbpool.h"

static dbpool_allocator current = {malloc, calloc, free};

void alloc_set(const dbpool_allocator *a)
{
    if (a) {
        current = *a;
    } else {
        current.malloc = malloc;
        current.calloc = calloc;
        current.free = free;
    }
}

void *mem_malloc(size_t n)
{
    return current.malloc(n);
}

void *mem_calloc(size_t n, size_t size)
{
    return current.calloc(n, size);
}

void mem_free(void *p)
{
    if (p)
        current.free(p);
}

char *mem_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = mem_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
