/* alloc.h - the library's allocator (libc unless dbpool_set_allocator() was called). */
#ifndef DBPOOL_ALLOC_H
#define DBPOOL_ALLOC_H

#include <stddef.h>

#include "dbpool.h"

void *dbpool_malloc(size_t n);
void *dbpool_calloc(size_t n, size_t size);
void dbpool_free(void *p);
char *dbpool_strdup(const char *s); /* NULL in, NULL out */

/* Switch to `a` (NULL: libc). Only while nothing allocated by the library
 * is alive: dbpool_set_allocator() (src/core/manager.c) checks that. */
void alloc_set(const dbpool_allocator *a);

#endif
