#include "proto/fields.h"

/* At most this many field names listed in Connection are honoured; more is abuse. */
#define MAX_CONNECTION_TOKENS 32

void fields_remove_hop_by_hop(struct header_list *l, bool keep_upgrade)
{
    const struct slice connection = SLICE_LIT("Connection");
    const struct slice upgrade = SLICE_LIT("Upgrade");

    /*
     * RFC 9110 7.6.1: every field named in Connection is hop-by-hop too.
     * The tokens point into the values' bytes, which the compaction below
     * moves as slices but never touches, so they stay valid.
     */
    struct slice named[MAX_CONNECTION_TOKENS];
    size_t num_named = 0;
    for (size_t i = 0; i < l->count; i++) {
        if (!slice_ieq(l->items[i].name, connection))
            continue;
        struct slice v = l->items[i].value, e;
        while (header_next_element(&v, &e) && num_named < MAX_CONNECTION_TOKENS) {
            if (e.len == 0 || slice_ieq(e, connection))
                continue;
            if (keep_upgrade && slice_ieq(e, upgrade))
                continue;
            /*
             * SPEC 7 "Host": Host and the framing fields are never
             * hop-by-hop by being named (RFC 9110 7.6.1 lists fields a
             * proxy must not drop that way); removing them would forward a
             * request without Host or without the length the gateway used.
             */
            if (slice_ieq(e, SLICE_LIT("Host")) || slice_ieq(e, SLICE_LIT("Content-Length")) ||
                slice_ieq(e, SLICE_LIT("Transfer-Encoding")))
                continue;
            named[num_named++] = e;
        }
    }
    /* One pass: keep what is end-to-end. */
    size_t out = 0;
    for (size_t i = 0; i < l->count; i++) {
        struct slice n = l->items[i].name;
        bool drop = fields_hop_by_hop(n, keep_upgrade);
        for (size_t k = 0; !drop && k < num_named; k++)
            drop = slice_ieq(n, named[k]);
        if (!drop)
            l->items[out++] = l->items[i];
    }
    l->count = out;
    if (keep_upgrade)
        header_add(l, connection, SLICE_LIT("upgrade"));
}
