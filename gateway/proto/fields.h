/*
 * fields: the one table of hop-by-hop and connection-specific header fields
 * (SPEC 3.1, RFC 9110 7.6.1, RFC 9113 8.2.2), and the operations both codecs
 * and the proxy apply with it.
 *
 *   hop-by-hop (HTTP/1, never forwarded): Connection and every field it
 *     names, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
 *     and Upgrade outside a WebSocket upgrade being forwarded;
 *   connection-specific (HTTP/2, never sent, malformed when received):
 *     Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade,
 *     and TE except "TE: trailers" in a request.
 *
 * Owns: nothing (constant tables). Thread: any; the list operations work on
 * the caller's header_list and never copy names or values.
 */
#ifndef SLUICE_FIELDS_H
#define SLUICE_FIELDS_H

#include <stdbool.h>

#include "base/header.h"
#include "base/slice.h"

/*
 * The table: the fixed names, by length first (almost every field fails on
 * the length without a compare). Sets *h2 for the connection-specific ones
 * of RFC 9113 8.2.2 (Trailer is end-to-end on HTTP/2; TE is decided by its
 * value). Inline, like the two questions below, because both codecs ask it
 * for every field of every message.
 */
static inline bool fields_fixed_name(struct slice n, bool keep_upgrade, bool *h2)
{
    *h2 = true;
    switch (n.len) {
    case 2:
        return slice_ieq(n, SLICE_LIT("TE"));
    case 7:
        if (slice_ieq(n, SLICE_LIT("Upgrade")))
            return !keep_upgrade;
        *h2 = false;
        return slice_ieq(n, SLICE_LIT("Trailer"));
    case 10:
        return slice_ieq(n, SLICE_LIT("Connection")) || slice_ieq(n, SLICE_LIT("Keep-Alive"));
    case 16:
        return slice_ieq(n, SLICE_LIT("Proxy-Connection"));
    case 17:
        return slice_ieq(n, SLICE_LIT("Transfer-Encoding"));
    default:
        return false;
    }
}

/*
 * True when `name` is one of the fixed hop-by-hop names (ASCII
 * case-insensitive): Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 * Transfer-Encoding, and Upgrade unless `keep_upgrade`. Fields named by a
 * Connection field are hop-by-hop too; fields_remove_hop_by_hop handles them.
 */
static inline bool fields_hop_by_hop(struct slice name, bool keep_upgrade)
{
    bool h2;
    return fields_fixed_name(name, keep_upgrade, &h2);
}

/*
 * True when a field may not appear in an HTTP/2 message (RFC 9113 8.2.2):
 * Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade, and
 * TE, which a request may carry only with the value "trailers"
 * (`request`: the field belongs to a request).
 */
static inline bool fields_h2_connection_specific(struct slice name, struct slice value,
                                                 bool request)
{
    bool h2;
    if (!fields_fixed_name(name, false, &h2) || !h2)
        return false;
    if (request && name.len == 2) /* TE */
        return !slice_ieq(value, SLICE_LIT("trailers"));
    return true;
}

/*
 * Removes the hop-by-hop fields from `l`: the fixed names above and every
 * field a Connection field names (at most 32 names are honoured). With
 * `keep_upgrade` (a WebSocket upgrade being forwarded), Upgrade is kept and
 * Connection is reduced to "upgrade". Compacts `l` in place.
 */
void fields_remove_hop_by_hop(struct header_list *l, bool keep_upgrade);

#endif
