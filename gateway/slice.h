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

/* ASCII case-insensitive equality (header names, host names, tokens). */
static inline bool slice_ieq(struct slice a, struct slice b)
{
    return a.len == b.len && (a.len == 0 || strncasecmp(a.base, b.base, a.len) == 0);
}

static inline bool slice_ieq_cstr(struct slice a, const char *s)
{
    return slice_ieq(a, slice_cstr(s));
}

#endif
