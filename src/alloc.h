/* alloc.h - the library's allocator (libc unless dbpool_set_allocator() was called). */
#ifndef DBPOOL_ALLOC_H
#define DBPOOL_ALLOC_H

#include <stddef.h>

void *dbpool_malloc(size_t n);
void *dbpool_calloc(size_t n, size_t size);
void dbpool_free(void *p);
char *dbpool_strdup(const char *s); /* NULL in, NULL out */

#endif
