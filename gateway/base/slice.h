/*
 * slice: a borrowed string, {base, len}, never NUL-terminated by contract.
 *
 * Slices point into someone else's memory (a connection buffer, an arena,
 * the snapshot). Whoever hands one out says how long it stays valid. All
 * helpers here are pure and inline; there is no slice.c.
 */
#ifndef SLUICE_SLICE_H
#define SLUICE_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

struct slice {
    const char *base;
    size_t len;
};

/* A slice of a string literal, without its NUL. */
#define SLICE_LIT(s) ((struct slice){(s), sizeof(s) - 1})

static inline struct slice slice_make(const char *base, size_t len)
{
    return (struct slice){base, len};
}

/* A slice of a NUL-terminated string; NULL gives the empty slice. */
static inline struct slice slice_cstr(const char *s)
{
    return (struct slice){s, s ? strlen(s) : 0};
}

static inline bool slice_eq(struct slice a, struct slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

/* The value of one hexadecimal digit (either case), or -1 when `c` is none. */
static inline int slice_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* ASCII lower-casing of one byte. */
static inline unsigned char slice_lower(unsigned char c)
{
    return (unsigned char)((unsigned)(c - 'A') < 26u ? c | 0x20 : c);
}

/*
 * ASCII case-insensitive equality (header names, host names, tokens).
 * Inline rather than strncasecmp: the names compared are short and the
 * lengths usually differ, so the call itself would cost more than the work.
 */
static inline bool slice_ieq(struct slice a, struct slice b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++) {
        unsigned char x = (unsigned char)a.base[i], y = (unsigned char)b.base[i];
        if (x != y && slice_lower(x) != slice_lower(y))
            return false;
    }
    return true;
}

static inline bool slice_ieq_cstr(struct slice a, const char *s)
{
    return slice_ieq(a, slice_cstr(s));
}

#endif
