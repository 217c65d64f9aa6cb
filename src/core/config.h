/* config.h - option validation shared by config.c and dbpool_open(). */
#ifndef DBPOOL_CONFIG_H
#define DBPOOL_CONFIG_H

#include "namespace.h"

#include <stddef.h>

#include "dbpool.h"

/* 0 if every option is in range, else DBPOOL_EINVAL with the detail set. */
int config_validate(const dbpool_config *cfg);

/* The i-th option of the table (docs check): its name, whether it is a
 * number (int or ms), its default; NULL past the end. */
const char *config_option(size_t i, int *numeric, int64_t *def);

#endif
