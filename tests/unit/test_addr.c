/*
 * test_addr: host:port parsing and formatting (net/addr.h), with the exact
 * reasons the configuration errors quote.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/addr.h"
#include "test.h"

static void bind_fails(const char *s, const char *why_want)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char why[200] = "";
    ok(!addr_parse_bind(s, &ss, &len, why, sizeof why), "\"%s\" must fail", s);
    is_str(why, why_want);
}

static void target_fails(const char *s, const char *why_want)
{
    char *host = (char *)"untouched";
    uint16_t port = 0;
    char why[200] = "";
    ok(!addr_parse_target(s, &host, &port, why, sizeof why), "\"%s\" must fail", s);
    ok(host == NULL, "no host after a failure");
    is_str(why, why_want);
}

int main(void)
{
    struct sockaddr_storage ss, ss2;
    socklen_t len = 0, len2 = 0;
    char why[200], text[64];

    ok(addr_parse_bind("127.0.0.1:8080", &ss, &len, why, sizeof why), "IPv4");
    is_int(len, sizeof(struct sockaddr_in));
    ok(addr_format((const struct sockaddr *)&ss, text, sizeof text), "format IPv4");
    is_str(text, "127.0.0.1:8080");
    ok(addr_parse_bind("localhost:8080", &ss2, &len2, why, sizeof why), "localhost");
    ok(addr_same(&ss, len, &ss2, len2), "localhost is 127.0.0.1");
    ok(!addr_same(&ss, 0, &ss2, 0), "unset addresses are never the same");
    ok(addr_parse_bind("[::1]:443", &ss, &len, why, sizeof why), "IPv6");
    is_int(len, sizeof(struct sockaddr_in6));
    ok(addr_format((const struct sockaddr *)&ss, text, sizeof text), "format IPv6");
    is_str(text, "[::1]:443");
    ok(!addr_same(&ss, len, &ss2, len2), "different families");

    /* The peer IP text the codecs log: every IPv4 digit count, IPv6, others empty. */
    static const char *const ips[] = {"0.0.0.0", "9.10.99.100", "255.255.255.255", "10.0.0.3"};
    for (size_t i = 0; i < sizeof ips / sizeof *ips; i++) {
        char bind[32];
        snprintf(bind, sizeof bind, "%s:1", ips[i]);
        ok(addr_parse_bind(bind, &ss, &len, why, sizeof why), "parse %s", bind);
        addr_ip_text((const struct sockaddr *)&ss, text);
        is_str(text, ips[i]);
    }
    ok(addr_parse_bind("[2001:db8::1]:1", &ss, &len, why, sizeof why), "parse IPv6");
    addr_ip_text((const struct sockaddr *)&ss, text);
    is_str(text, "2001:db8::1");
    ss.ss_family = AF_UNIX;
    addr_ip_text((const struct sockaddr *)&ss, text);
    is_str(text, "");

    bind_fails("127.0.0.1", "the port is missing");
    bind_fails(":80", "the host is missing");
    bind_fails("::1:80", "an IPv6 address needs brackets, e.g. [::1]:8080");
    bind_fails("[::1]80", "an IPv6 address is written [ADDRESS]:PORT");
    bind_fails("1.2.3.4:0", "the port must be a number from 1 to 65535");
    bind_fails("1.2.3.4:65536", "the port must be a number from 1 to 65535");
    bind_fails("1.2.3.4:+80", "the port must be a number from 1 to 65535");
    bind_fails("[1.2.3.4]:80", "\"1.2.3.4\" is not an IPv6 address");
    bind_fails("example.com:80", "\"example.com\" is not an IP address (use a numeric address, "
                                 "\"localhost\", or [IPv6])");

    char *host = NULL;
    uint16_t port = 0;
    ok(addr_parse_target("users-1.svc_x:8080", &host, &port, why, sizeof why), "a name");
    is_str(host, "users-1.svc_x");
    is_int(port, 8080);
    free(host);
    ok(addr_parse_target("[fe80::1]:1", &host, &port, why, sizeof why), "IPv6 target");
    is_str(host, "fe80::1");
    free(host);
    target_fails("bad host:80", "\"bad host\" is not a valid host name");
    target_fails("[nope]:80", "\"nope\" is not an IPv6 address");
    target_fails("x", "the port is missing");

    ok(addr_is_hostname("a.b-c_d"), "hostname");
    ok(!addr_is_hostname(""), "empty hostname");
    return test_done();
}
