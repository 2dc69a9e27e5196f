/*
 * header: the ordered field list. Lists are short (tens of fields), so every
 * lookup is a linear scan; the array grows by doubling in the arena, and an
 * array outgrown is simply left there until the arena goes.
 */
#include "base/header.h"

#include <string.h>

#include "base/arena.h"

void header_list_init(struct header_list *l, struct arena *a, size_t cap_hint)
{
    l->items = cap_hint ? arena_alloc(a, cap_hint * sizeof(struct header)) : NULL;
    l->count = 0;
    l->cap = cap_hint;
    l->arena = a;
}

void header_list_wrap(struct header_list *l, struct arena *a, struct header *items, size_t count)
{
    l->items = items;
    l->count = count;
    l->cap = count;
    l->arena = a;
}

/* Makes room for one more item, moving the array into the arena if full. */
static void reserve_one(struct header_list *l)
{
    if (l->count < l->cap)
        return;
    size_t cap = l->cap ? l->cap * 2 : 8;
    struct header *items = arena_alloc(l->arena, cap * sizeof(struct header));
    if (l->count)
        memcpy(items, l->items, l->count * sizeof(struct header));
    l->items = items;
    l->cap = cap;
}

long header_find(const struct header_list *l, struct slice name, size_t from)
{
    for (size_t i = from; i < l->count; i++) {
        if (slice_ieq(l->items[i].name, name))
            return (long)i;
    }
    return -1;
}

const struct slice *header_get(const struct header_list *l, struct slice name)
{
    long i = header_find(l, name, 0);
    return i < 0 ? NULL : &l->items[i].value;
}

size_t header_count(const struct header_list *l, struct slice name)
{
    size_t n = 0;
    for (size_t i = 0; i < l->count; i++) {
        if (slice_ieq(l->items[i].name, name))
            n++;
    }
    return n;
}

void header_add(struct header_list *l, struct slice name, struct slice value)
{
    reserve_one(l);
    l->items[l->count].name = name;
    l->items[l->count].value = value;
    l->count++;
}

void header_set(struct header_list *l, struct slice name, struct slice value)
{
    long i = header_find(l, name, 0);
    if (i < 0) {
        header_add(l, name, value);
        return;
    }
    /* Keep the first occurrence in place (and the sender's spelling of the
     * name), drop the others. */
    l->items[i].value = value;
    size_t out = (size_t)i + 1;
    for (size_t j = (size_t)i + 1; j < l->count; j++) {
        if (!slice_ieq(l->items[j].name, name))
            l->items[out++] = l->items[j];
    }
    l->count = out;
}

size_t header_remove(struct header_list *l, struct slice name)
{
    size_t out = 0;
    for (size_t i = 0; i < l->count; i++) {
        if (!slice_ieq(l->items[i].name, name))
            l->items[out++] = l->items[i];
    }
    size_t removed = l->count - out;
    l->count = out;
    return removed;
}

bool header_has_token(const struct header_list *l, struct slice name, struct slice token)
{
    for (size_t i = 0; i < l->count; i++) {
        if (!slice_ieq(l->items[i].name, name))
            continue;
        struct slice v = l->items[i].value, e;
        while (header_next_element(&v, &e)) {
            if (slice_ieq(e, token))
                return true;
        }
    }
    return false;
}
