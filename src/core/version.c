/* version.c - dbpool_version(): the version the library was built as, for
 * callers that link it dynamically and want to know what they got. */
#include "dbpool.h"

const char *dbpool_version(void)
{
    return DBPOOL_VERSION_STRING;
}
