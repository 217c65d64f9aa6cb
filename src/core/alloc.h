/* alloc.h - the library's allocator (libc unless dbpool_set_allocator() was called). */
#ifndef DBPOOL_ALLOC_H
#define DBPOOL_ALLOC_H

#include "namespace.h" /* internal names get the dbpool__ prefix */

#include <stddef.h>

#include "dbpool.h"

void *mem_malloc(size_t n);
void *mem_calloc(size_t n, size_t size);
void mem_free(void *p);
char *mem_strdup(const char *s); /* NULL in, NULL out */

/* Switch to `a` (NULL: libc). Only while nothing allocated by the library
 * is alive: dbpool_set_allocator() (src/core/manager.c) checks that. */
void alloc_set(const dbpool_allocator *a);

#endif
