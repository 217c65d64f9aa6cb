/* fuzz_conninfo.c - libFuzzer target for the connection-string path shared by
 * dbpool_pg_open() and dbpool_pg_redact() (libpq parsing, port check, the
 * password scrubbing of error messages, the redacted rendering).
 *
 * Two passes per input:
 *  1. the input as a conninfo: the result is 0, DBPOOL_EINVAL or
 *     DBPOOL_ENOMEM; the output is NUL-terminated inside buflen and nothing
 *     is written past it; on success the output parses back (libpq) to the
 *     same options with the password, if any, as "********", and a
 *     truncated rendering is a prefix of the full one.
 *  2. a password P (from the input's first bytes: 8+ characters, letters,
 *     digits and specials, whitespace included) written where a password
 *     goes (URI user info and ?password= or ?%70assword= percent-encoded or raw,
 *     password='...' escaped) around the rest
 *     of the input: the output parses back to libpq's options with P
 *     masked, and neither P nor its written form, nor a long prefix of
 *     either (a cut-off echo), appears in dbpool_last_error(), whether the
 *     string parses or not -- unless libpq reads it as something other than
 *     the password (then it is not the password, and may be echoed). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "dbpool.h"
#include "dbpool_pg.h"

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_conninfo: check failed: %s (line %d): ", #cond, __LINE__);       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define CANARY 0x5A

/* dbpool_pg_redact into a buffer of exactly buflen bytes followed by canaries. */
static int redact(const char *ci, char *out, size_t buflen)
{
    memset(out, CANARY, buflen + 16);
    int rc = dbpool_pg_redact(ci, out, buflen);
    CHECK(rc == 0 || rc == DBPOOL_EINVAL || rc == DBPOOL_ENOMEM, "rc %d", rc);
    CHECK(memchr(out, '\0', buflen) != NULL, "output not terminated (buflen %zu)", buflen);
    for (size_t i = buflen; i < buflen + 16; i++)
        CHECK((unsigned char)out[i] == CANARY, "written past buflen %zu", buflen);
    if (rc != 0)
        CHECK(dbpool_last_error()[0] != '\0', "error without a message");
    return rc;
}

static const char *opt(const PQconninfoOption *o, const char *key)
{
    for (; o->keyword; o++)
        if (!strcmp(o->keyword, key))
            return o->val && *o->val ? o->val : NULL;
    return NULL;
}

/* the options dbpool_pg_redact() masks (libpq's secrets) */
static int is_secret(const char *key)
{
    return !strcmp(key, "password") || !strcmp(key, "sslpassword");
}

/* ---- pass 1 ------------------------------------------------------------------ */

static void raw(const char *ci, size_t len)
{
    size_t cap = 2 * len + 1024;
    char *out = malloc(cap + 16), *small = malloc(cap + 16);
    if (!out || !small)
        goto done;

    int rc = redact(ci, out, cap);
    if (rc != 0)
        goto done;

    /* the output is a conninfo with the same options, password masked */
    char *err = NULL;
    PQconninfoOption *in = PQconninfoParse(ci, &err);
    PQconninfoOption *back = PQconninfoParse(out, &err);
    CHECK(in != NULL, "redact accepted what libpq rejects: %s", ci);
    CHECK(back != NULL, "redacted output does not parse: [%s] from [%s]: %s", out, ci,
          err ? err : "");
    for (PQconninfoOption *o = in; o->keyword; o++) {
        const char *a = o->val && *o->val ? o->val : NULL;
        const char *b = opt(back, o->keyword);
        if (is_secret(o->keyword)) {
            CHECK(a ? b && !strcmp(b, "********") : b == NULL, "%s not masked: [%s]", o->keyword,
                  out);
        } else {
            CHECK((!a && !b) || (a && b && !strcmp(a, b)),
                  "option %s changed by redaction: [%s] -> [%s] (output [%s])", o->keyword,
                  a ? a : "(none)", b ? b : "(none)", out);
        }
    }
    PQconninfoFree(in);
    PQconninfoFree(back);

    /* a smaller buffer: still 0, and a prefix of the full rendering that
     * ends between two options (never half a "********") */
    size_t full = strlen(out);
    if (full > 2) {
        size_t n = full / 2 + 1;
        rc = redact(ci, small, n);
        CHECK(rc == 0 || rc == DBPOOL_ENOMEM, "rc %d on a short buffer", rc);
        size_t sl = strlen(small);
        CHECK(sl < n && strncmp(small, out, sl) == 0,
              "short rendering [%s] is not a prefix "
              "of [%s]",
              small, out);
        CHECK(sl == 0 || out[sl] == ' ' || out[sl] == '\0', "short rendering [%s] cuts an option",
              small);
    }
done:
    free(out);
    free(small);
}

/* ---- pass 2 ------------------------------------------------------------------ */

/* Password characters: letters and digits, and (second half of the byte
 * range) the specials that need escaping in key=value or percent-encoding in
 * URIs. */
static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
static const char special[] = "!$*+-._~@:/ ?&=%'\\\",;#[]\t\n";

/* Percent-decode src into dst (same size or more); bad escapes are copied. */
static void pct_decode(char *dst, const char *src)
{
    static const char hex[] = "0123456789abcdef0123456789ABCDEF";
    for (; *src; src++) {
        const char *h1, *h2;
        if (src[0] == '%' && src[1] && src[2] && (h1 = strchr(hex, src[1])) != NULL &&
            (h2 = strchr(hex, src[2])) != NULL) {
            *dst++ = (char)((((h1 - hex) % 16) << 4) | ((h2 - hex) % 16));
            src += 2;
        } else {
            *dst++ = *src;
        }
    }
    *dst = '\0';
}

/*
 * The secret (`forms`: as decoded and as written) must not be in `text`, nor
 * a prefix of 10+ characters of a form, which a cut-off echo would leave --
 * unless that string (whole form or prefix) is also in `allowed` (what the rest of the input says,
 * raw and decoded, and libpq's other options): then the library may be
 * echoing that, not the password.
 */
static void no_secret(const char *text, const char *what, const char *ci, const char *allowed,
                      const char *const forms[], int nforms)
{
    for (int f = 0; f < nforms; f++) {
        const char *s = forms[f];
        size_t l = strlen(s);
        CHECK(strstr(allowed, s) || !strstr(text, s), "password form [%s] in %s [%s] for [%s]", s,
              what, text, ci);
        char pre[256];
        for (size_t k = 10; k < l && k < sizeof(pre); k++) {
            memcpy(pre, s, k);
            pre[k] = '\0';
            /* a prefix ending in a flattened space is the shorter one and a
             * separator; the shorter one is checked on its own */
            if (pre[k - 1] == ' ' || strstr(allowed, pre))
                continue;
            CHECK(!strstr(text, pre), "password prefix [%s] in %s [%s] for [%s]", pre, what, text,
                  ci);
        }
    }
}

/* `out` (a rendering of `ci`) parses back to libpq's options `o` of ci, with
 * the password masked. */
static void same_but_password(const PQconninfoOption *o, const char *out, const char *ci)
{
    char *err = NULL;
    PQconninfoOption *back = PQconninfoParse(out, &err);
    CHECK(back != NULL, "redacted output does not parse: [%s] from [%s]: %s", out, ci,
          err ? err : "");
    for (; o->keyword; o++) {
        const char *a = o->val && *o->val ? o->val : NULL;
        const char *b = opt(back, o->keyword);
        if (!strcmp(o->keyword, "password"))
            CHECK(b && !strcmp(b, "********"), "password not masked: [%s] for [%s]", out, ci);
        else if (is_secret(o->keyword))
            CHECK(a ? b && !strcmp(b, "********") : b == NULL, "%s not masked: [%s] for [%s]",
                  o->keyword, out, ci);
        else
            CHECK((!a && !b) || (a && b && !strcmp(a, b)),
                  "option %s changed by redaction: [%s] -> [%s] (output [%s])", o->keyword,
                  a ? a : "(none)", b ? b : "(none)", out);
    }
    PQconninfoFree(back);
}

static void placed(const uint8_t *data, size_t size)
{
    char pw[128], enc[384], esc[256], *ci = NULL, *out = NULL, *rest = NULL, *allowed = NULL;

    if (size < 3)
        return;
    int shape = data[0] % 9;
    int uri = shape <= 2 || shape == 5 || shape == 6 || shape == 7;
    size_t n = 6 + data[1] % 64;
    if (size < 2 + n)
        return;
    /* "Q9" + n characters: with a digit and 8+ characters it is no word of a
     * libpq message by chance */
    size_t j = 0;
    pw[j++] = 'Q';
    pw[j++] = '9';
    for (size_t i = 0; i < n; i++) {
        uint8_t b = data[2 + i];
        const char *set = b < 224 ? alnum : special;
        size_t m = b < 224 ? sizeof(alnum) - 1 : sizeof(special) - 1;
        pw[j++] = set[b % m];
    }
    pw[j] = '\0';
    /* URI: percent-encode all but letters and digits (or, with the top bit
     * of the first byte, write it raw when it has nothing that would end
     * the URI part: whitespace then goes through as is); key=value: quote,
     * escaping ' and \ */
    int raw = data[0] >= 128 && !strpbrk(pw, "@/?&#[]:%=,'\\");
    size_t e = 0, q = 0;
    for (const char *c = pw; *c; c++) {
        if (raw || strchr(alnum, *c)) {
            enc[e++] = *c;
        } else {
            snprintf(enc + e, 4, "%%%02X", (unsigned char)*c);
            e += 3;
        }
        if (*c == '\'' || *c == '\\')
            esc[q++] = '\\';
        esc[q++] = *c;
    }
    enc[e] = '\0';
    esc[q] = '\0';

    size_t rest_len = size - 2 - n;
    rest = malloc(rest_len + 1);
    if (!rest)
        return;
    memcpy(rest, data + 2 + n, rest_len);
    rest[rest_len] = '\0';
    const char *written = uri ? enc : esc;
    /* with bit 6 of the length byte, a URI query names it "%70assword":
     * libpq percent-decodes keys too */
    const char *pwkey = data[1] & 0x40 ? "%70assword" : "password";
    if (strstr(rest, pw) || strstr(rest, written))
        goto done; /* the password must only be where we put it */
    if (!uri && strpbrk(rest, "'\\"))
        goto done; /* an open quote or escape in the rest would make libpq read
                      password='...' as part of another value: not a password */
    size_t cap = strlen(rest) + strlen(written) + 64;
    ci = malloc(cap);
    out = malloc(2 * cap + 1024 + 16);
    if (!ci || !out)
        goto done;
    switch (shape) {
    case 0:
        snprintf(ci, cap, "postgresql://u:%s@%s", enc, rest);
        break;
    case 1:
        snprintf(ci, cap, "postgresql://%s?%s=%s", rest, pwkey, enc);
        break;
    case 2:
        snprintf(ci, cap, "postgresql://u@h/db?%s=%s&%s", pwkey, enc, rest);
        break;
    case 3:
        snprintf(ci, cap, "host=h password='%s' %s", esc, rest);
        break;
    case 4:
        snprintf(ci, cap, "%s password='%s'", rest, esc);
        break;
    case 5:
        snprintf(ci, cap, "postgres://u:%s@%s", enc, rest);
        break;
    case 6:
        snprintf(ci, cap, "postgresql://u@[%s?%s=%s", rest, pwkey, enc);
        break;
    case 7:
        snprintf(ci, cap, "postgresql://u:%s@[%s", enc, rest);
        break;
    default:
        snprintf(ci, cap, "%s password = '%s'", rest, esc);
        break;
    }
    /* messages are flattened to one line (tabs, newlines -> one space):
     * the password may show up that way too */
    char flat[128];
    size_t fl = 0;
    for (const char *c = pw; *c; c++) {
        int ws = *c == '\t' || *c == '\n' || *c == '\r';
        if (!ws)
            flat[fl++] = *c;
        else if (fl > 0 && flat[fl - 1] != ' ')
            flat[fl++] = ' ';
    }
    /* a space the flattening left at the end is the separator after any
     * value, not part of the secret */
    while (fl > 0 && flat[fl - 1] == ' ')
        fl--;
    flat[fl] = '\0';
    const char *forms[3] = {pw, written, flat};
    int nforms = 3;
    /* what the rest of the input may legitimately make the library echo */
    size_t acap = 3 * strlen(ci) + 64;
    allowed = malloc(acap);
    if (!allowed)
        goto done;
    size_t al = (size_t)snprintf(allowed, acap, "%s\n", rest);
    pct_decode(allowed + al, rest);

    int rc = redact(ci, out, 2 * cap + 1024);
    char *err = NULL;
    PQconninfoOption *o = PQconninfoParse(ci, &err);
    if (o) {
        /* libpq read it: the secret is what libpq takes as the password */
        const char *libpq_pw = opt(o, "password");
        int is_pw = libpq_pw && !strcmp(libpq_pw, pw);
        int elsewhere = 0;
        for (PQconninfoOption *x = o; x->keyword; x++)
            if (x->val && strcmp(x->keyword, "password") != 0) {
                if (strstr(x->val, pw) || strstr(x->val, written))
                    elsewhere = 1;
                /* other values may hold parts of it: those may be echoed */
                size_t need = strlen(allowed) + strlen(x->val) + 2;
                if (need > acap) {
                    char *n2 = realloc(allowed, need * 2);
                    if (!n2)
                        break;
                    allowed = n2;
                    acap = need * 2;
                }
                size_t used = strlen(allowed);
                snprintf(allowed + used, acap - used, "\n%s", x->val);
            }
        if (is_pw && !elsewhere) {
            if (rc == 0)
                /* a rendering is checked by what it says, not by its letters:
                 * other values may hold parts of the secret, and a value next
                 * to its separator may look like a flattened one */
                same_but_password(o, out, ci);
            else
                no_secret(dbpool_last_error(), "error", ci, allowed, forms, nforms);
        }
        PQconninfoFree(o);
    } else {
        /* malformed: nobody knows the password for sure, so the message
         * must hold nothing that was written as one */
        PQfreemem(err);
        CHECK(rc != 0, "redact accepted what libpq rejects: %s", ci);
        no_secret(dbpool_last_error(), "error", ci, allowed, forms, nforms);
    }
done:
    free(rest);
    free(ci);
    free(out);
    free(allowed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    raw(s, strlen(s));
    free(s);
    placed(data, size);
    return 0;
}
