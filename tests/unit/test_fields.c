/*
 * The hop-by-hop / connection-specific field table (proto/fields): the fixed
 * names of SPEC 3.1 in any case, Upgrade kept only for a WebSocket upgrade,
 * Trailer end-to-end on HTTP/2, and TE allowed on HTTP/2 only as
 * "TE: trailers" in a request. fields_remove_hop_by_hop's list cases are in
 * test_header.c, next to the list they edit.
 */
#include "proto/fields.h"
#include "test.h"

static bool hop(const char *name, bool keep_upgrade)
{
    return fields_hop_by_hop(slice_cstr(name), keep_upgrade);
}

static bool h2(const char *name, const char *value, bool request)
{
    return fields_h2_connection_specific(slice_cstr(name), slice_cstr(value), request);
}

int main(void)
{
    static const char *const fixed[] = {"Connection", "keep-alive", "PROXY-CONNECTION",
                                        "te",         "Trailer",    "transfer-encoding"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        ok(hop(fixed[i], false), "%s is hop-by-hop", fixed[i]);
        ok(hop(fixed[i], true), "%s is hop-by-hop in an upgrade too", fixed[i]);
    }
    ok(hop("Upgrade", false), "Upgrade is hop-by-hop outside a WebSocket upgrade");
    ok(!hop("upgrade", true), "Upgrade is kept for a WebSocket upgrade");
    ok(!hop("Host", false), "Host is end-to-end");
    ok(!hop("Content-Length", false), "Content-Length is end-to-end");
    ok(!hop("Trailers", false), "a longer name is not a prefix match");
    ok(!hop("", false), "the empty name is not hop-by-hop");

    ok(h2("connection", "close", false), "Connection is connection-specific");
    ok(h2("Keep-Alive", "5", true), "Keep-Alive is connection-specific");
    ok(h2("proxy-connection", "x", false), "Proxy-Connection is connection-specific");
    ok(h2("transfer-encoding", "chunked", false), "Transfer-Encoding is connection-specific");
    ok(h2("upgrade", "websocket", true), "Upgrade is connection-specific");
    ok(!h2("trailer", "grpc-status", false), "Trailer is end-to-end on HTTP/2");
    ok(!h2("te", "trailers", true), "TE: trailers may be in a request");
    ok(h2("te", "gzip", true), "any other TE may not");
    ok(h2("te", "trailers", false), "TE has no place in a response");
    ok(!h2("content-type", "text/plain", false), "ordinary fields pass");
    return test_done();
}
