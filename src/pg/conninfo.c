/* conninfo.c - connection strings for the PostgreSQL layer: parsing with
 * libpq's own parser, password redaction, and messages scrubbed of secrets. */
#include "conninfo.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "dbpool_pg.h"
#include "error.h"

/* ---- messages ----------------------------------------------------------- */

/* Write src into out[cap] with every occurrence of secret replaced. Output is
 * cut only after replacing, so a cut can never leave part of the secret. */
static void scrub_into(char *out, size_t cap, const char *src, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0, j = 0;

    if (n < 3)
        n = 0; /* a 1-2 char "secret" would mangle every message */
    for (const char *p = src; *p && j + 1 < cap;) {
        if (n && strncmp(p, secret, n) == 0) {
            if (j + 9 > cap)
                break;
            memcpy(out + j, "********", 8);
            j += 8;
            p += n;
        } else {
            out[j++] = *p++;
        }
    }
    if (cap)
        out[j] = '\0';
}

/* Replace every occurrence of secret in msg (a buffer of cap bytes). */
static void scrub(char *msg, size_t cap, const char *secret)
{
    char *copy = mem_strdup(msg);

    if (!copy) {
        snprintf(msg, cap, "(message withheld: out of memory)");
        return;
    }
    scrub_into(msg, cap, copy, secret);
    mem_free(copy);
}

/* msg as one line: newlines and tabs become single spaces, no trailing space.
 * Returns a buffer of `room` x its length (for scrubbing growth), or NULL. */
void pg_one_line(char *buf, size_t len, const char *msg)
{
    size_t j = 0;

    if (!msg)
        msg = "";
    for (size_t i = 0; msg[i] && j + 1 < len; i++) {
        char c = msg[i];
        if (c == '\n' || c == '\t' || c == '\r') {
            if (j > 0 && buf[j - 1] != ' ')
                buf[j++] = ' ';
            continue;
        }
        buf[j++] = c;
    }
    while (j > 0 && buf[j - 1] == ' ')
        j--;
    buf[j] = '\0';
}

/* msg on one line in a new buffer with room to grow `room` times (a secret
 * may be replaced by a longer mask); *cap is its size. */
static char *flatten(const char *msg, size_t room, size_t *cap)
{
    char *buf;

    *cap = room * strlen(msg) + 64;
    if (!(buf = mem_malloc(*cap)))
        return NULL;
    pg_one_line(buf, *cap, msg);
    return buf;
}

/* Copy a libpq message into err: one line, no trailing newline, no password. */
void pg_set_msg(char *err, size_t errlen, const char *msg, const char *password)
{
    size_t cap;
    char *flat = flatten(msg ? msg : "", 1, &cap);

    if (!flat) {
        snprintf(err, errlen, "(message withheld: out of memory)");
        return;
    }
    scrub_into(err, errlen, flat, password);
    mem_free(flat);
}

/* The value written after the "password" at p (which may end another key, as
 * in "sslpassword"): *len bytes from the returned pointer, without quotes, or
 * NULL when no '=' follows. A quoted value runs to its closing quote (escaped
 * quotes skipped), a URI query value to '&', any other to white space. */
static const char *password_value(const char *conninfo, const char *p, size_t *len)
{
    const char *v = p + 8;
    size_t n = 0;

    while (*v == ' ')
        v++;
    if (*v != '=')
        return NULL;
    v++;
    while (*v == ' ')
        v++;
    if (*v == '\'') {
        v++;
        while (v[n] && v[n] != '\'')
            n += v[n] == '\\' && v[n + 1] ? 2 : 1;
    } else if (strstr(conninfo, "://")) { /* URI query: the value runs to '&' */
        while (v[n] && v[n] != '&')
            n++;
    } else {
        while (v[n] && v[n] != ' ' && v[n] != '\t' && v[n] != '\n')
            n++;
    }
    *len = n;
    return v;
}

/*
 * When a conninfo does not parse we do not know its password, and libpq may
 * echo the string: remove anything that looks like one (URI userinfo
 * "user:secret@", "password=secret" in either form) from `msg`.
 */
static void scrub_guesses(char *msg, size_t cap, const char *conninfo)
{
    size_t candlen = strlen(conninfo) + 1;
    char *cand = mem_malloc(candlen);
    const char *p;

    if (!cand) { /* cannot tell what to hide: hide everything */
        snprintf(msg, cap, "(details withheld: out of memory)");
        return;
    }

    p = strstr(conninfo, "://");
    if (p) {
        const char *start = p + 3, *at = strchr(start, '@');
        const char *colon = strchr(start, ':');
        if (at && colon && colon < at) {
            memcpy(cand, colon + 1, (size_t)(at - colon - 1));
            cand[at - colon - 1] = '\0';
            scrub(msg, cap, cand);
        }
    }
    for (p = conninfo; (p = strstr(p, "password")) != NULL; p += 8) {
        size_t n;
        const char *v = password_value(conninfo, p, &n);
        if (!v)
            continue;
        memcpy(cand, v, n);
        cand[n] = '\0';
        scrub(msg, cap, cand);
    }
    mem_free(cand);
}

static int bad_port(const char *v)
{
    /* "5432" or a comma-separated list for multiple hosts; empty items allowed */
    for (const char *p = v; *p;) {
        long n = 0;
        int digits = 0;
        while (isdigit((unsigned char)*p) && digits < 6) {
            n = n * 10 + (*p++ - '0');
            digits++;
        }
        if ((*p && *p != ',') || (digits && (n < 1 || n > 65535)) || digits == 6)
            return 1;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* Could this conninfo carry a password (key=value, URI query or userinfo)?
 * libpq percent-decodes a URI query's keys too, so there "%70assword" is one. */
static int may_hold_secret(const char *conninfo)
{
    const char *p = strstr(conninfo, "://");

    if (strstr(conninfo, "password"))
        return 1;
    if (p && strchr(p, '%'))
        return 1;
    if (p) {
        const char *at = strchr(p + 3, '@'), *colon = strchr(p + 3, ':');
        if (at && colon && colon < at)
            return 1;
    }
    return 0;
}

/* Is `at` inside a value written as a password ("password=...")? */
static int in_password_value(const char *conninfo, const char *at)
{
    for (const char *p = conninfo; (p = strstr(p, "password")) != NULL; p += 8) {
        size_t n;
        const char *v = password_value(conninfo, p, &n);
        if (v && at >= v && at < v + n)
            return 1;
    }
    return 0;
}

/* Does `frag` (n bytes) stand in the conninfo as a key, i.e. followed by
 * optional spaces and '='? Such a fragment is a (mistyped) option name --
 * unless it is inside a value written as a password: libpq reads the words
 * of password='a b=c' as options when an empty value before it swallows the
 * opening quote ("host= password='..."), and names them in its message. */
static int is_key_in(const char *conninfo, const char *frag, size_t n)
{
    for (const char *p = conninfo; *p; p++) {
        if (strncmp(p, frag, n) != 0)
            continue;
        const char *q = p + n;
        while (*q == ' ')
            q++;
        if (*q == '=' && (p == conninfo || strchr(" ?&", p[-1])) && !in_password_value(conninfo, p))
            return 1;
    }
    return 0;
}

/*
 * libpq quotes the fragment of an unparsable conninfo that it complains
 * about, and we cannot know which part of such a string is the password
 * (an unquoted passphrase, a value cut at a stray character...). So when the
 * string may hold one, the message is cut at the first quoted fragment that
 * is neither short nor an option name, and ends in "...". (Cut, not just the
 * fragment replaced: an echoed string may itself contain quotes, so where a
 * fragment ends cannot be trusted.)
 */
static void withhold_quoted(char *msg, const char *conninfo)
{
    char *r = msg, *w = msg;
    /* A '"' of the conninfo (or a %22 decoded) in an echo pairs with the
     * wrong quote: a short "fragment" may then open an echo that the next
     * pair leaves outside quotes. Then no fragment is trusted: the first one
     * is cut. */
    int paired = !strchr(conninfo, '"') && !strstr(conninfo, "%22");

    while (*r) {
        char *close;
        if (*r == '"') {
            close = strchr(r + 1, '"');
            size_t n = close ? (size_t)(close - r - 1) : strlen(r + 1);
            if (!close || !paired || (n > 2 && !is_key_in(conninfo, r + 1, n))) {
                memcpy(w, "\"...\"", 5);
                w += 5;
                break;
            } else {
                memmove(w, r, n + 2);
                w += n + 2;
            }
            r = close + 1;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

int pg_parse_conninfo(const char *conninfo, PQconninfoOption **out)
{
    char *errmsg = NULL;
    char msg[512];

    *out = PQconninfoParse(conninfo, &errmsg);
    if (!*out) {
        if (!errmsg)
            return set_error(DBPOOL_ENOMEM, "out of memory parsing the connection string");
        /* scrub the whole message before cutting it to size */
        size_t cap;
        char *flat = flatten(errmsg, 3, &cap);
        PQfreemem(errmsg);
        if (!flat)
            return set_error(DBPOOL_EINVAL, "invalid connection string");
        if (may_hold_secret(conninfo)) {
            scrub_guesses(flat, cap, conninfo);
            withhold_quoted(flat, conninfo);
        }
        snprintf(msg, sizeof(msg), "%s", flat);
        mem_free(flat);
        return set_error(DBPOOL_EINVAL, "invalid connection string: %s", msg);
    }
    for (PQconninfoOption *o = *out; o->keyword; o++) {
        if (o->val && !strcmp(o->keyword, "port") && bad_port(o->val)) {
            PQconninfoFree(*out);
            *out = NULL;
            return set_error(DBPOOL_EINVAL, "invalid connection string: invalid port number");
        }
    }
    return 0;
}

int dbpool_pg_redact(const char *conninfo, char *buf, size_t buflen)
{
    PQconninfoOption *opts;
    size_t used = 0;
    int rc;

    if (!conninfo || !buf || buflen == 0)
        return set_error(DBPOOL_EINVAL, "dbpool_pg_redact: NULL argument");
    buf[0] = '\0';
    if ((rc = pg_parse_conninfo(conninfo, &opts)) != 0)
        return rc;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        int secret = !strcmp(o->keyword, "password") || !strcmp(o->keyword, "sslpassword");
        const char *v = secret ? "********" : o->val;
        int quote = strpbrk(v, " \t\n\r\f\v'\\") != NULL || !*v;
        /* key='value' with ' and \ escaped, as libpq parses it back */
        size_t need = strlen(o->keyword) + 2 * strlen(v) + 5;
        if (need >= buflen - used) {
            buf[used] = '\0';
            PQconninfoFree(opts);
            return set_error(DBPOOL_ENOMEM, "dbpool_pg_redact: buffer too small");
        }
        char *d = buf + used;
        d += snprintf(d, buflen - used, "%s%s=%s", used ? " " : "", o->keyword, quote ? "'" : "");
        for (const char *c = v; *c; c++) {
            if (*c == '\'' || *c == '\\')
                *d++ = '\\';
            *d++ = *c;
        }
        if (quote)
            *d++ = '\'';
        *d = '\0';
        used = (size_t)(d - buf);
    }
    PQconninfoFree(opts);
    return 0;
}
