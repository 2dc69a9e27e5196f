/*
 * header: an ordered list of header fields held as slices.
 *
 * Owns: the item array (allocated from the exchange's arena and grown there).
 * The names and values are slices; they point into the connection buffer
 * the head was parsed from, into the snapshot, or into the arena, and the
 * list never copies them. Name comparisons are ASCII case-insensitive; the
 * case the peer sent is kept for forwarding.
 *
 * Thread: the exchange's thread.
 */
#ifndef SLUICE_HEADER_H
#define SLUICE_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "base/slice.h"

struct arena;

struct header {
    struct slice name;
    struct slice value;
};

struct header_list {
    struct header *items;
    size_t count;
    size_t cap;
    struct arena *arena; /* where items grows */
};

/* Prepares an empty list that grows in `a`, with room for `cap_hint` items. */
void header_list_init(struct header_list *l, struct arena *a, size_t cap_hint);

/* Makes `l` a list over the parsed array `items` (not copied until it grows). */
void header_list_wrap(struct header_list *l, struct arena *a, struct header *items, size_t count);

/* Index of the first field named `name` at or after `from`, or -1. */
long header_find(const struct header_list *l, struct slice name, size_t from);

/* The value of the first field named `name`, or NULL when absent. */
const struct slice *header_get(const struct header_list *l, struct slice name);

/* Number of fields named `name`. */
size_t header_count(const struct header_list *l, struct slice name);

/* Appends a field (slices are stored as given, not copied). */
void header_add(struct header_list *l, struct slice name, struct slice value);

/* Replaces every field named `name` by one field with `value` (appended if absent). */
void header_set(struct header_list *l, struct slice name, struct slice value);

/* Removes every field named `name`; returns how many were removed. Keeps order. */
size_t header_remove(struct header_list *l, struct slice name);

/*
 * True when some field named `name` holds `token` in its comma-separated list
 * (ASCII case-insensitive, optional whitespace around elements), e.g.
 * Connection: keep-alive, Upgrade.
 */
bool header_has_token(const struct header_list *l, struct slice name, struct slice token);

/* RFC 9110 5.6.3 optional whitespace: space or horizontal tab. */
static inline bool header_is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * Takes the next element of a comma-separated list value (RFC 9110 5.6.1)
 * from the front of `v` into `elem`, without the optional whitespace around
 * it, and advances `v` past it; empty elements are returned as empty slices.
 * Returns false at the end. `elem` points into `v`'s bytes. Inline: it runs
 * for every Connection field of every request.
 */
static inline bool header_next_element(struct slice *v, struct slice *elem)
{
    if (v->len == 0 || !v->base)
        return false;
    const char *p = v->base;
    const char *end = v->base + v->len;
    const char *comma = memchr(p, ',', v->len);
    const char *stop = comma ? comma : end;
    const char *s = p, *e = stop;
    while (s < e && header_is_ows(*s))
        s++;
    while (e > s && header_is_ows(e[-1]))
        e--;
    *elem = slice_make(s, (size_t)(e - s));
    if (comma) {
        v->base = comma + 1;
        v->len = (size_t)(end - comma - 1);
        /* A trailing comma leaves one empty element, which is fine. */
        if (v->len == 0)
            v->base = end;
    } else {
        v->base = end;
        v->len = 0;
    }
    return true;
}

#endif
