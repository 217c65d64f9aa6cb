/* conninfo.h - connection strings: parsing, redaction, scrubbed messages. */
#ifndef DBPOOL_PG_CONNINFO_H
#define DBPOOL_PG_CONNINFO_H

#include "namespace.h"

#include <libpq-fe.h>
#include <stddef.h>

/* Parse a conninfo or URI with libpq's parser (PQconninfoParse) and check
 * the ports. 0 and *out (PQconninfoFree it), or DBPOOL_EINVAL with a message
 * that never holds a secret (quoted fragments that may be one are withheld). */
int pg_parse_conninfo(const char *conninfo, PQconninfoOption **out);

/* buf[len] = msg on one line: newlines and tabs become one space, trailing
 * spaces go. NULL msg gives "". */
void pg_one_line(char *buf, size_t len, const char *msg);

/* err[errlen] = msg on one line, with every occurrence of password replaced
 * (cut only after replacing, so a cut never leaves part of it). */
void pg_set_msg(char *err, size_t errlen, const char *msg, const char *password);

#endif
