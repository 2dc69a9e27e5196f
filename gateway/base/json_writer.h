/*
 * json_writer: the one writer for everything the gateway emits as JSON (the
 * SPEC 3.2 error bodies, the access log, the admin /config), into an
 * evbuffer or into a bounded char buffer.
 *
 * Promises: the output is always valid UTF-8 JSON, whatever bytes a string
 * holds. Strings are escaped per RFC 8259: '"' and '\\' with a backslash,
 * \b \f \n \r \t by their short forms, the other control bytes and DEL as
 * \u00XX; valid UTF-8 (shortest form, no surrogates, at most U+10FFFF) is
 * copied as is. Each byte that is not part of valid UTF-8 is written as
 * \u00XX of the byte's value (0xFF becomes \u00ff). Valid non-ASCII text is
 * never escaped, so \u0080..\u00ff in the output always marks a byte that
 * was not UTF-8, and the byte value stays visible in the log.
 *
 * A bounded buffer never overflows: once a string's content would eat into
 * the last JSON_WRITER_RESERVE bytes, the rest of that string (and of every
 * later string) is left out, cut at a character boundary, so the closing
 * quotes and braces still fit and the line stays valid JSON;
 * json_writer_truncated() then reports it. Syntax written with json_writer_raw()
 * is the caller's and is kept whole while it fits.
 *
 * Owns: nothing (the caller's buffer or evbuffer). Thread: the caller's;
 * no shared state.
 */
#ifndef SLUICE_JSON_WRITER_H
#define SLUICE_JSON_WRITER_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "base/slice.h"

struct evbuffer;

/* Bytes of a bounded buffer kept for the syntax that follows a cut string. */
#define JSON_WRITER_RESERVE 512

struct json_writer {
    struct evbuffer *out; /* the evbuffer sink, or NULL for the bounded buffer */
    char *p;              /* bounded buffer: next byte */
    char *end;            /* bounded buffer: one past the last usable byte */
    bool truncated;       /* a string was cut (bounded buffer only) */
};

/* Starts writing at the end of `out` (grows without bound). */
void json_writer_init_evbuffer(struct json_writer *w, struct evbuffer *out);

/* Starts writing into buf[0..cap) (cap > JSON_WRITER_RESERVE); nothing is NUL-terminated. */
void json_writer_init_buffer(struct json_writer *w, char *buf, size_t cap);

/* Bytes written so far into the bounded buffer that starts at `buf`. */
static inline size_t json_writer_length(const struct json_writer *w, const char *buf)
{
    return (size_t)(w->p - buf);
}

/* True when some string content was left out for lack of room. */
static inline bool json_writer_truncated(const struct json_writer *w)
{
    return w->truncated;
}

/* Appends JSON syntax or a value the caller knows is valid (e.g. "{\"a\":"). */
void json_writer_raw(struct json_writer *w, const char *s, size_t len);

/* json_raw of a NUL-terminated string. */
void json_writer_raw_cstr(struct json_writer *w, const char *s);

/* Appends `s` as a quoted JSON string. */
void json_writer_string(struct json_writer *w, struct slice s);

/* Appends the escaped content of `s` without quotes (for a caller building one string of parts). */
void json_writer_string_content(struct json_writer *w, struct slice s);

/* Appends a decimal integer. */
void json_writer_int(struct json_writer *w, long long v);

/*
 * Appends a jansson value, recursively, with `indent` spaces per level (0:
 * compact, no spaces) and object members in insertion order; the layout is
 * that of json_dumps(JSON_INDENT(indent) | JSON_PRESERVE_ORDER). Strings go
 * through the same escaping as json_writer_string.
 */
void json_writer_value(struct json_writer *w, const json_t *v, int indent);

#endif
