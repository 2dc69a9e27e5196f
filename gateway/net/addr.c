/*
 * addr: host:port parsing and formatting.
 */
#include "net/addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool dup_host(const char *s, size_t n, char **host, char *why, size_t whylen)
{
    *host = strndup(s, n);
    if (!*host) {
        snprintf(why, whylen, "out of memory");
        return false;
    }
    return true;
}

static bool parse_port(const char *s, uint16_t *port)
{
    if (!*s || strlen(s) > 5)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    long n = strtol(s, NULL, 10);
    if (n < 1 || n > 65535)
        return false;
    *port = (uint16_t)n;
    return true;
}

/*
 * Splits "host:port" or "[v6]:port". *host is malloc'd without brackets;
 * *bracketed says the host was written in brackets. On error returns false
 * with a reason in `why`.
 */
static bool split_host_port(const char *s, char **host, uint16_t *port, bool *bracketed, char *why,
                            size_t whylen)
{
    const char *colon;
    *bracketed = false;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') {
            snprintf(why, whylen, "an IPv6 address is written [ADDRESS]:PORT");
            return false;
        }
        *bracketed = true;
        colon = close + 1;
        if (!parse_port(colon + 1, port)) {
            snprintf(why, whylen, "the port must be a number from 1 to 65535");
            return false;
        }
        return dup_host(s + 1, (size_t)(close - s - 1), host, why, whylen);
    }
    colon = strrchr(s, ':');
    if (!colon) {
        snprintf(why, whylen, "the port is missing");
        return false;
    }
    if (memchr(s, ':', (size_t)(colon - s))) {
        snprintf(why, whylen, "an IPv6 address needs brackets, e.g. [::1]:8080");
        return false;
    }
    if (colon == s) {
        snprintf(why, whylen, "the host is missing");
        return false;
    }
    if (!parse_port(colon + 1, port)) {
        snprintf(why, whylen, "the port must be a number from 1 to 65535");
        return false;
    }
    return dup_host(s, (size_t)(colon - s), host, why, whylen);
}

bool addr_is_hostname(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253)
        return false;
    for (const char *p = h; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_'))
            return false;
    return true;
}

bool addr_parse_bind(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *why,
                     size_t whylen)
{
    char *host = NULL;
    uint16_t port;
    bool bracketed;
    bool ok = false;
    if (!split_host_port(s, &host, &port, &bracketed, why, whylen))
        goto out;
    memset(ss, 0, sizeof *ss);
    if (bracketed) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            snprintf(why, whylen, "\"%s\" is not an IPv6 address", host);
            goto out;
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *len = sizeof *sin6;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        const char *ip = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
        if (inet_pton(AF_INET, ip, &sin->sin_addr) != 1) {
            snprintf(why, whylen,
                     "\"%s\" is not an IP address (use a numeric address, \"localhost\", or "
                     "[IPv6])",
                     host);
            goto out;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *len = sizeof *sin;
    }
    ok = true;
out:
    free(host);
    return ok;
}

bool addr_parse_target(const char *s, char **host, uint16_t *port, char *why, size_t whylen)
{
    bool bracketed;
    *host = NULL;
    if (!split_host_port(s, host, port, &bracketed, why, whylen))
        return false;
    if (bracketed) {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, *host, &a6) != 1) {
            snprintf(why, whylen, "\"%s\" is not an IPv6 address", *host);
            goto fail;
        }
    } else if (!addr_is_hostname(*host)) {
        snprintf(why, whylen, "\"%s\" is not a valid host name", *host);
        goto fail;
    }
    return true;
fail:
    free(*host);
    *host = NULL;
    return false;
}

bool addr_same(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b,
               socklen_t blen)
{
    return alen && alen == blen && memcmp(a, b, alen) == 0;
}

bool addr_format(const struct sockaddr *sa, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        if (!inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip)))
            return false;
        snprintf(out, size, "%s:%u", ip, ntohs(sin->sin_port));
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        if (!inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip)))
            return false;
        snprintf(out, size, "[%s]:%u", ip, ntohs(sin6->sin6_port));
        return true;
    }
    return false;
}

void addr_ip_text(const struct sockaddr *sa, char *out)
{
    out[0] = '\0';
    if (sa->sa_family == AF_INET6) {
        if (!inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                       INET6_ADDRSTRLEN))
            out[0] = '\0';
        return;
    }
    if (sa->sa_family != AF_INET)
        return;
    const unsigned char *b =
        (const unsigned char *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    char *p = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
}
