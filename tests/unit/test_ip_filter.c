/*
 * test_ip_filter: the `ip_filter` filter (SPEC 4, SPEC 7): option errors by
 * JSON path, and CIDR matching at the edges (v4, v6, IPv4-mapped peers,
 * /0, /32, /128, deny over allow).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/arena.h"
#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"
#include "filter_test.h"
#include "test.h"

extern const struct filter_type filter_ip_filter;

static struct config_error err;

static const void *create(const char *json)
{
    return filter_create_json(&filter_ip_filter, json, "filters[0]", NULL, &err);
}

static void has_error(const char *text)
{
    if (!config_error_has(&err, text))
        ok(0, "no error \"%s\" among %zu", text, err.count);
}

/* Runs the filter for a peer; returns the status (0 when it let the request through). */
static int verdict(const void *f, const char *peer)
{
    struct exchange x;
    memset(&x, 0, sizeof(x));
    x.arena = arena_new(4096);
    header_list_init(&x.req_headers, x.arena, 4);
    header_list_init(&x.resp_headers, x.arena, 4);
    x.request_id = SLICE_LIT("req-1");
    if (strchr(peer, ':')) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&x.peer;
        in6->sin6_family = AF_INET6;
        ok(inet_pton(AF_INET6, peer, &in6->sin6_addr) == 1, "test address %s", peer);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&x.peer;
        in->sin_family = AF_INET;
        ok(inet_pton(AF_INET, peer, &in->sin_addr) == 1, "test address %s", peer);
    }
    enum filter_verdict v = filter_ip_filter.on_request(f, NULL, &x, NULL);
    int status = v == FILTER_CONTINUE ? 0 : x.status;
    if (v == FILTER_RESPOND)
        ok(x.error && strcmp(x.error, "forbidden") == 0, "error code forbidden");
    arena_free(x.arena);
    return status;
}

static void test_errors(void)
{
    ok(create("{\"type\": \"ip_filter\", \"allow\": [\"10.0.0.0/8\", \"::1\", \"10.0.0.0/33\", "
              "\"1.2.3\", 7, \"2001:db8::/129\", \"10.1.0.0/8\", \"2001:db8::1/32\", "
              "\"10.0.0.0/\", \"10.0.0.0/1x\", \"\"], \"deny\": \"1.2.3.4\", \"alow\": []}") ==
           NULL,
       "bad options refused");
    has_error("sluice.json: filters[0].allow[2]: invalid CIDR \"10.0.0.0/33\": the prefix "
              "length must be a number from 0 to 32");
    has_error("filters[0].allow[3]: invalid CIDR \"1.2.3\": not an IPv4 or IPv6 address");
    has_error("filters[0].allow[4]: must be a CIDR string, e.g. \"10.0.0.0/8\", not an integer");
    has_error("filters[0].allow[5]: invalid CIDR \"2001:db8::/129\": the prefix length must be a "
              "number from 0 to 128");
    has_error("filters[0].allow[6]: invalid CIDR \"10.1.0.0/8\": has bits set after the prefix "
              "length");
    has_error("filters[0].allow[7]: invalid CIDR \"2001:db8::1/32\": has bits set after");
    has_error("filters[0].allow[8]: invalid CIDR \"10.0.0.0/\"");
    has_error("filters[0].allow[9]: invalid CIDR \"10.0.0.0/1x\"");
    has_error("filters[0].allow[10]: invalid CIDR \"\"");
    has_error("filters[0].deny: must be an array of CIDR ranges");
    has_error("filters[0].alow: unknown");
    is_int(err.count, 11);

    ok(create("{\"type\": \"ip_filter\"}") == NULL, "no list refused");
    has_error("filters[0]: needs a non-empty \"allow\" or \"deny\" list");
    ok(create("{\"type\": \"ip_filter\", \"allow\": [], \"deny\": []}") == NULL,
       "empty lists refused");
    is_int(err.count, 1);
}

static void test_v4(void)
{
    const void *f = create("{\"type\": \"ip_filter\", \"allow\": [\"10.0.0.0/8\", "
                           "\"192.168.1.7\", \"172.16.0.0/12\"], \"deny\": [\"10.9.0.0/16\", "
                           "\"172.16.0.1/32\"]}");
    ok(f != NULL, "created");
    if (!f)
        return;
    is_int(verdict(f, "10.0.0.0"), 0);
    is_int(verdict(f, "10.255.255.255"), 0);
    is_int(verdict(f, "11.0.0.0"), 403);
    is_int(verdict(f, "9.255.255.255"), 403);
    is_int(verdict(f, "192.168.1.7"), 0); /* a bare address is a /32 */
    is_int(verdict(f, "192.168.1.6"), 403);
    is_int(verdict(f, "192.168.1.8"), 403);
    is_int(verdict(f, "172.31.255.255"), 0);
    is_int(verdict(f, "172.32.0.0"), 403);
    /* deny wins over allow */
    is_int(verdict(f, "10.9.1.2"), 403);
    is_int(verdict(f, "10.10.1.2"), 0);
    is_int(verdict(f, "172.16.0.1"), 403);
    is_int(verdict(f, "172.16.0.2"), 0);
    /* IPv4-mapped peers (a dual-stack listener) follow the IPv4 rules */
    is_int(verdict(f, "::ffff:10.1.2.3"), 0);
    is_int(verdict(f, "::ffff:10.9.2.3"), 403);
    is_int(verdict(f, "::ffff:11.1.2.3"), 403);
    /* an IPv6 peer matches no IPv4 rule, and allow is non-empty */
    is_int(verdict(f, "::1"), 403);
    filter_ip_filter.destroy(f);
}

static void test_v6(void)
{
    const void *f = create("{\"type\": \"ip_filter\", \"allow\": [\"2001:db8::/32\", \"::1\", "
                           "\"fe80::/10\"], \"deny\": [\"2001:db8:dead::/48\", "
                           "\"fe80::1/128\"]}");
    ok(f != NULL, "created");
    if (!f)
        return;
    is_int(verdict(f, "2001:db8::"), 0);
    is_int(verdict(f, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), 0);
    is_int(verdict(f, "2001:db9::"), 403);
    is_int(verdict(f, "2001:db7:ffff::"), 403);
    is_int(verdict(f, "::1"), 0); /* a bare address is a /128 */
    is_int(verdict(f, "::2"), 403);
    is_int(verdict(f, "::"), 403);
    is_int(verdict(f, "2001:db8:dead:1::5"), 403);
    is_int(verdict(f, "2001:db8:deae::5"), 0);
    is_int(verdict(f, "febf:ffff::1"), 0);
    is_int(verdict(f, "fec0::1"), 403);
    is_int(verdict(f, "fe80::1"), 403);
    is_int(verdict(f, "fe80::2"), 0);
    is_int(verdict(f, "10.0.0.1"), 403); /* no IPv4 rule: an allow list admits only its ranges */
    filter_ip_filter.destroy(f);
}

static void test_zero_and_mapped_rules(void)
{
    /* /0 of each family: 0.0.0.0/0 is every IPv4 peer, ::/0 every IPv6 one but not IPv4. */
    const void *f = create("{\"type\": \"ip_filter\", \"deny\": [\"0.0.0.0/0\"]}");
    ok(f != NULL, "created");
    if (f) {
        is_int(verdict(f, "1.2.3.4"), 403);
        is_int(verdict(f, "::ffff:1.2.3.4"), 403);
        is_int(verdict(f, "255.255.255.255"), 403);
        is_int(verdict(f, "::1"), 0); /* deny only: everything else passes */
        filter_ip_filter.destroy(f);
    }
    f = create("{\"type\": \"ip_filter\", \"allow\": [\"::/0\"]}");
    ok(f != NULL, "created");
    if (f) {
        is_int(verdict(f, "::1"), 0);
        is_int(verdict(f, "2001:db8::1"), 0);
        is_int(verdict(f, "127.0.0.1"), 403);
        is_int(verdict(f, "::ffff:127.0.0.1"), 403);
        filter_ip_filter.destroy(f);
    }
    /* A rule in the mapped form is the IPv4 rule. */
    f = create("{\"type\": \"ip_filter\", \"allow\": [\"::ffff:10.0.0.0/104\", "
               "\"::ffff:127.0.0.1\"]}");
    ok(f != NULL, "created");
    if (f) {
        is_int(verdict(f, "10.200.0.1"), 0);
        is_int(verdict(f, "::ffff:10.200.0.1"), 0);
        is_int(verdict(f, "127.0.0.1"), 0);
        is_int(verdict(f, "127.0.0.2"), 403);
        is_int(verdict(f, "11.0.0.1"), 403);
        filter_ip_filter.destroy(f);
    }
    /* /32 and /128 written out; /31 edges. */
    f = create("{\"type\": \"ip_filter\", \"allow\": [\"192.0.2.1/32\", \"2001:db8::7/128\", "
               "\"198.51.100.0/31\"]}");
    ok(f != NULL, "created");
    if (f) {
        is_int(verdict(f, "192.0.2.1"), 0);
        is_int(verdict(f, "192.0.2.0"), 403);
        is_int(verdict(f, "2001:db8::7"), 0);
        is_int(verdict(f, "2001:db8::6"), 403);
        is_int(verdict(f, "198.51.100.0"), 0);
        is_int(verdict(f, "198.51.100.1"), 0);
        is_int(verdict(f, "198.51.100.2"), 403);
        filter_ip_filter.destroy(f);
    }
}

int main(void)
{
    test_errors();
    test_v4();
    test_v6();
    test_zero_and_mapped_rules();
    config_error_clear(&err);
    return test_done();
}
