/*
 * The hop-by-hop / connection-specific field table (proto/fields): the fixed
 * names of SPEC 3.1 in any case, Upgrade kept only for a WebSocket upgrade,
 * Trailer end-to-end on HTTP/2, and TE allowed on HTTP/2 only as
 * "TE: trailers" in a request; fields_remove_hop_by_hop over header lists,
 * Connection-named fields included.
 */
#include <stdio.h>
#include <string.h>

#include "base/arena.h"
#include "proto/fields.h"
#include "harness.h"

struct hop_case {
    const char *fields[8][2];
    size_t n;
    bool keep_upgrade;
    const char *want;
};

static const struct hop_case hop_cases[] = {
    {{{"Host", "a"}, {"Connection", "close"}, {"Keep-Alive", "5"}, {"X", "1"}},
     4,
     false,
     "Host: a|X: 1"},
    {{{"Host", "a"},
      {"TE", "trailers"},
      {"Trailer", "X"},
      {"Transfer-Encoding", "chunked"},
      {"Upgrade", "h2c"},
      {"Proxy-Connection", "keep-alive"},
      {"Content-Length", "0"}},
     7,
     false,
     "Host: a|Content-Length: 0"},
    {{{"Connection", "X-Foo, x-bar"}, {"X-Foo", "1"}, {"X-Bar", "2"}, {"X-Baz", "3"}},
     4,
     false,
     "X-Baz: 3"},
    {{{"X-A", "1"}, {"Connection", "x-a"}, {"connection", "X-B"}, {"X-B", "2"}, {"X-C", "3"}},
     5,
     false,
     "X-C: 3"},
    {{{"Connection", "Upgrade"}, {"Upgrade", "websocket"}, {"Sec-WebSocket-Key", "k"}},
     3,
     false,
     "Sec-WebSocket-Key: k"},
    {{{"Connection", "keep-alive, Upgrade, X-Drop"},
      {"Upgrade", "websocket"},
      {"Sec-WebSocket-Key", "k"},
      {"X-Drop", "d"},
      {"Keep-Alive", "timeout=5"}},
     5,
     true,
     "Upgrade: websocket|Sec-WebSocket-Key: k|Connection: upgrade"},
    {{{"Host", "a"}}, 1, false, "Host: a"},
    /* SPEC 7 "Host": Host and the framing fields are never removed by being named. */
    {{{"Connection", ", ,connection, Host"}, {"Host", "a"}, {"Y", "y"}}, 3, false, "Host: a|Y: y"},
    {{{"Connection", "host, content-length, Transfer-Encoding, Y"},
      {"Host", "a"},
      {"Content-Length", "3"},
      {"Y", "y"}},
     4,
     false,
     "Host: a|Content-Length: 3"},
};

static void test_hop_by_hop(void)
{
    for (size_t i = 0; i < sizeof(hop_cases) / sizeof(hop_cases[0]); i++) {
        const struct hop_case *c = &hop_cases[i];
        struct arena *a = arena_new(1024);
        struct header_list l;
        header_list_init(&l, a, 2);
        for (size_t j = 0; j < c->n; j++)
            header_add(&l, slice_cstr(c->fields[j][0]), slice_cstr(c->fields[j][1]));
        fields_remove_hop_by_hop(&l, c->keep_upgrade);
        is_str(render(&l), c->want);
        arena_free(a);
    }
}

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
    test_hop_by_hop();
    return test_done();
}
