/*
 * ip_filter: the `ip_filter` filter (SPEC 4, SPEC 7). Admits or refuses a
 * request by the TCP peer's address (never X-Forwarded-For, which the
 * client writes): `deny` wins over `allow`, and a non-empty `allow` admits
 * only its ranges. A refused request gets 403 forbidden.
 *
 * Ranges are CIDRs of either family; a bare address is a /32 or /128. The
 * two families are kept apart: IPv4 rules match IPv4 peers and IPv4-mapped
 * IPv6 peers (::ffff:a.b.c.d, what a dual-stack listener reports for an
 * IPv4 client), IPv6 rules match the other IPv6 peers. A rule written in
 * the mapped form (::ffff:10.0.0.0/104) is turned into its IPv4 rule, so
 * `::/0` never admits IPv4 clients by accident.
 *
 * Everything is parsed in create() into network/mask pairs; the request
 * path is a few integer comparisons per rule and allocates nothing.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"

struct v4_rule {
    uint32_t net; /* host byte order, host bits clear */
    uint32_t mask;
};

struct v6_rule {
    uint64_t net[2]; /* big-endian halves as integers, host bits clear */
    uint64_t mask[2];
};

struct rule_set {
    struct v4_rule *v4;
    size_t num_v4;
    struct v6_rule *v6;
    size_t num_v6;
    size_t count; /* rules written (num_v4 + num_v6) */
};

struct ip_filter {
    struct rule_set allow;
    struct rule_set deny;
};

static void rules_free(struct rule_set *r)
{
    free(r->v4);
    free(r->v6);
}

static void ip_filter_destroy(const void *instance)
{
    struct ip_filter *f = (struct ip_filter *)instance;
    if (!f)
        return;
    rules_free(&f->allow);
    rules_free(&f->deny);
    free(f);
}

static uint32_t v4_mask(unsigned bits)
{
    return bits == 0 ? 0 : 0xffffffffu << (32 - bits);
}

static uint64_t v6_half_mask(int bits)
{
    if (bits <= 0)
        return 0;
    if (bits >= 64)
        return UINT64_MAX;
    return UINT64_MAX << (64 - bits);
}

static uint64_t load_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static bool is_mapped(const uint8_t *a)
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a, prefix, sizeof(prefix)) == 0;
}

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Parses "ADDR" or "ADDR/BITS" into `r`. Returns NULL, or what is wrong
 * (then the caller reports it with the JSON path and the text).
 */
static const char *parse_cidr(const char *text, struct rule_set *r)
{
    char addr[INET6_ADDRSTRLEN + 8];
    const char *slash = strchr(text, '/');
    size_t alen = slash ? (size_t)(slash - text) : strlen(text);
    if (alen == 0 || alen >= sizeof(addr))
        return "expected an address such as 10.0.0.0/8, 192.168.1.7 or 2001:db8::/32";
    memcpy(addr, text, alen);
    addr[alen] = '\0';

    uint8_t bytes[16];
    bool v4;
    if (inet_pton(AF_INET, addr, bytes) == 1)
        v4 = true;
    else if (inet_pton(AF_INET6, addr, bytes) == 1)
        v4 = false;
    else
        return "not an IPv4 or IPv6 address (e.g. 10.0.0.0/8 or 2001:db8::/32)";

    unsigned max = v4 ? 32 : 128;
    unsigned bits = max;
    if (slash) {
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3)
            return v4 ? "the prefix length must be a number from 0 to 32"
                      : "the prefix length must be a number from 0 to 128";
        bits = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return v4 ? "the prefix length must be a number from 0 to 32"
                          : "the prefix length must be a number from 0 to 128";
            bits = bits * 10 + (unsigned)(*p - '0');
        }
        if (bits > max)
            return v4 ? "the prefix length must be a number from 0 to 32"
                      : "the prefix length must be a number from 0 to 128";
    }

    /* ::ffff:a.b.c.d/n with n >= 96 is the IPv4 rule a.b.c.d/(n-96). */
    if (!v4 && is_mapped(bytes) && bits >= 96) {
        memmove(bytes, bytes + 12, 4);
        bits -= 96;
        v4 = true;
    }
    if (v4) {
        uint32_t a = load_be32(bytes), m = v4_mask(bits);
        if (a & ~m)
            return "has bits set after the prefix length (write the network address, e.g. "
                   "10.0.0.0/8 rather than 10.1.2.3/8)";
        r->v4[r->num_v4++] = (struct v4_rule){a, m};
    } else {
        struct v6_rule v = {{load_be64(bytes), load_be64(bytes + 8)},
                            {v6_half_mask((int)bits), v6_half_mask((int)bits - 64)}};
        if ((v.net[0] & ~v.mask[0]) || (v.net[1] & ~v.mask[1]))
            return "has bits set after the prefix length (write the network address, e.g. "
                   "2001:db8::/32 rather than 2001:db8::1/32)";
        r->v6[r->num_v6++] = v;
    }
    r->count++;
    return NULL;
}

static int parse_list(struct rule_set *r, const json_t *list, const char *key,
                      struct config_error *err)
{
    char sub[64];
    snprintf(sub, sizeof(sub), ".%s", key);
    if (!json_is_array(list)) {
        config_error_add(err, sub,
                         "must be an array of CIDR ranges, e.g. [\"10.0.0.0/8\", "
                         "\"2001:db8::/32\"]");
        return -1;
    }
    size_t n = json_array_size(list);
    r->v4 = calloc(n + 1, sizeof(*r->v4));
    r->v6 = calloc(n + 1, sizeof(*r->v6));
    if (!r->v4 || !r->v6) {
        config_error_add(err, sub, "out of memory");
        return -1;
    }
    int rc = 0;
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        snprintf(sub, sizeof(sub), ".%s[%zu]", key, i);
        if (!json_is_string(item)) {
            config_error_add(err, sub, "must be a CIDR string, e.g. \"10.0.0.0/8\", not %s",
                             config_json_kind(item));
            rc = -1;
            continue;
        }
        const char *text = json_string_value(item);
        const char *why = parse_cidr(text, r);
        if (why) {
            config_error_add(err, sub, "invalid CIDR \"%s\": %s", text, why);
            rc = -1;
        }
    }
    return rc;
}

static const void *ip_filter_create(const json_t *options, struct config_error *err)
{
    static const char *const allowed[] = {"allow", "deny", NULL};
    struct ip_filter *f = calloc(1, sizeof(*f));
    if (!f) {
        config_error_add(err, "", "out of memory");
        return NULL;
    }
    int rc = config_check_keys(err, options, allowed) ? -1 : 0;
    const json_t *allow = json_object_get(options, "allow");
    const json_t *deny = json_object_get(options, "deny");
    if (allow && parse_list(&f->allow, allow, "allow", err) < 0)
        rc = -1;
    if (deny && parse_list(&f->deny, deny, "deny", err) < 0)
        rc = -1;
    if (rc == 0 && f->allow.count == 0 && f->deny.count == 0) {
        config_error_add(err, "",
                         "needs a non-empty \"allow\" or \"deny\" list, e.g. \"allow\": "
                         "[\"10.0.0.0/8\"]");
        rc = -1;
    }
    if (rc < 0) {
        ip_filter_destroy(f);
        return NULL;
    }
    return f;
}

static bool match_v4(const struct rule_set *r, uint32_t a)
{
    for (size_t i = 0; i < r->num_v4; i++)
        if ((a & r->v4[i].mask) == r->v4[i].net)
            return true;
    return false;
}

static bool match_v6(const struct rule_set *r, uint64_t hi, uint64_t lo)
{
    for (size_t i = 0; i < r->num_v6; i++) {
        const struct v6_rule *v = &r->v6[i];
        if ((hi & v->mask[0]) == v->net[0] && (lo & v->mask[1]) == v->net[1])
            return true;
    }
    return false;
}

/*
 * The verdict for a peer address: deny wins, then a non-empty allow list
 * must match. A peer of another family (none is expected: listeners are
 * TCP) is admitted only when there is no allow list.
 */
static bool admitted(const struct ip_filter *f, const struct sockaddr_storage *peer)
{
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
        uint32_t a = ntohl(in->sin_addr.s_addr);
        if (match_v4(&f->deny, a))
            return false;
        return f->allow.count == 0 || match_v4(&f->allow, a);
    }
    if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        const uint8_t *b = in6->sin6_addr.s6_addr;
        if (is_mapped(b)) {
            uint32_t a = load_be32(b + 12);
            if (match_v4(&f->deny, a))
                return false;
            return f->allow.count == 0 || match_v4(&f->allow, a);
        }
        uint64_t hi = load_be64(b), lo = load_be64(b + 8);
        if (match_v6(&f->deny, hi, lo))
            return false;
        return f->allow.count == 0 || match_v6(&f->allow, hi, lo);
    }
    return f->allow.count == 0;
}

static enum filter_verdict ip_filter_on_request(const void *instance, void *context,
                                                struct exchange *x, void *state)
{
    (void)context;
    (void)state;
    if (admitted(instance, &x->peer))
        return FILTER_CONTINUE;
    exchange_respond_error(x, 403, "this address is not allowed");
    return FILTER_RESPOND;
}

const struct filter_type filter_ip_filter = {
    .name = "ip_filter",
    .state_size = 0,
    .create = ip_filter_create,
    .destroy = ip_filter_destroy,
    .on_request = ip_filter_on_request,
};
