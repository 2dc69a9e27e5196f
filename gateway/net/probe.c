/*
 * probe: a blocking HTTP/1.1 GET on a non-blocking socket polled against
 * one deadline.
 */
#include "net/probe.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/header.h"
#include "net/addr.h"
#include "proto/http1_parse.h"

enum {
    PROBE_MAX_HEAD = 16384,
    PROBE_MAX_HEADERS = 100,
};

int probe_parse_url(const char *url, char **host, unsigned short *port, char **path, char *why,
                    size_t whylen)
{
    *host = NULL;
    *path = NULL;
    static const char scheme[] = "http://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(why, whylen, "the URL must start with http:// (plain HTTP only)");
        return -1;
    }
    const char *auth = url + sizeof scheme - 1;
    size_t alen = strcspn(auth, "/?#");
    const char *rest = auth + alen;
    if (alen == 0) {
        snprintf(why, whylen, "the URL has no host");
        return -1;
    }
    if (memchr(auth, '@', alen)) {
        snprintf(why, whylen, "the URL must not carry a user name or password");
        return -1;
    }
    /* "host" or "[v6]" without a port gets :80, so addr_parse_target decides the rest. */
    bool has_port = auth[alen - 1] != ']' && memchr(auth, ':', alen) != NULL;
    if (auth[0] == '[')
        has_port = memchr(auth, ']', alen) && auth[alen - 1] != ']';
    char hostport[300];
    if (alen > 260) {
        snprintf(why, whylen, "the URL's host is too long");
        return -1;
    }
    snprintf(hostport, sizeof hostport, "%.*s%s", (int)alen, auth, has_port ? "" : ":80");
    uint16_t p = 0;
    char reason[160];
    if (!addr_parse_target(hostport, host, &p, reason, sizeof reason)) {
        snprintf(why, whylen, "bad URL: %s", reason);
        return -1;
    }
    size_t plen = strcspn(rest, "#");
    for (size_t i = 0; i < plen; i++) {
        unsigned char c = (unsigned char)rest[i];
        if (c <= ' ' || c >= 0x7f) {
            snprintf(why, whylen, "the URL's path must not contain spaces or control characters");
            free(*host);
            *host = NULL;
            return -1;
        }
    }
    /* An empty path is "/"; a bare query gets "/" in front of it. */
    bool slash = rest[0] != '/';
    *path = malloc(plen + 2);
    if (*path) {
        (*path)[0] = '/';
        memcpy(*path + slash, rest, plen);
        (*path)[plen + slash] = '\0';
    }
    if (!*path) {
        snprintf(why, whylen, "out of memory");
        free(*host);
        *host = NULL;
        return -1;
    }
    *port = p;
    return 0;
}

/* Waits for `events` on fd until the deadline; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - clock_mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, (int)left);
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static int connect_one(const struct addrinfo *ai, int64_t deadline_ms, char *why, size_t whylen)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, whylen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        snprintf(why, whylen, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    int r = wait_fd(fd, POLLOUT, deadline_ms);
    int err = 0;
    socklen_t elen = sizeof err;
    if (r == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0)
        return fd;
    if (r == 0)
        snprintf(why, whylen, "connect: timed out");
    else
        snprintf(why, whylen, "connect: %s", strerror(err ? err : errno));
    close(fd);
    return -1;
}

/* Sends the request and reads the response head; returns the status or -1. */
static int exchange(int fd, const char *req, size_t reqlen, int64_t deadline_ms, char *why,
                    size_t whylen)
{
    size_t sent = 0;
    while (sent < reqlen) {
        ssize_t n = send(fd, req + sent, reqlen - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            int r = wait_fd(fd, POLLOUT, deadline_ms);
            if (r == 1)
                continue;
            snprintf(why, whylen, "send: %s", r == 0 ? "timed out" : strerror(errno));
            return -1;
        }
        snprintf(why, whylen, "send: %s", strerror(errno));
        return -1;
    }
    char *buf = malloc(PROBE_MAX_HEAD);
    struct header *headers = calloc(PROBE_MAX_HEADERS, sizeof *headers);
    int status = -1;
    size_t have = 0;
    if (!buf || !headers) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n = recv(fd, buf + have, PROBE_MAX_HEAD - have, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            int r = wait_fd(fd, POLLIN, deadline_ms);
            if (r == 1)
                continue;
            snprintf(why, whylen, "no response: %s", r == 0 ? "timed out" : strerror(errno));
            goto out;
        }
        if (n < 0) {
            snprintf(why, whylen, "receive: %s", strerror(errno));
            goto out;
        }
        have += (size_t)n;
        struct http1_response_head head;
        int r = http1_parse_response(buf, have, &head, headers, PROBE_MAX_HEADERS);
        if (r > 0 && head.status >= 200) {
            status = head.status;
            goto out;
        }
        if (r > 0) { /* an interim 1xx: drop it, the final response follows */
            memmove(buf, buf + r, have - (size_t)r);
            have -= (size_t)r;
            continue;
        }
        if (r != HTTP1_PARTIAL) {
            snprintf(why, whylen, "invalid HTTP response");
            goto out;
        }
        if (n == 0) {
            snprintf(why, whylen, "connection closed before a complete response head");
            goto out;
        }
        if (have == PROBE_MAX_HEAD) {
            snprintf(why, whylen, "response head larger than %d bytes", PROBE_MAX_HEAD);
            goto out;
        }
    }
out:
    free(buf);
    free(headers);
    return status;
}

int probe_get(const char *url, int timeout_ms, char *why, size_t whylen)
{
    char *host = NULL, *path = NULL;
    unsigned short port = 0;
    if (probe_parse_url(url, &host, &port, &path, why, whylen) < 0)
        return -1;
    int64_t deadline_ms = clock_mono_ms() + timeout_ms;
    int status = -1;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(why, whylen, "cannot resolve %s: %s", host, gai_strerror(rc));
        goto out;
    }
    int fd = -1;
    for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
        fd = connect_one(ai, deadline_ms, why, whylen);
    if (fd < 0)
        goto out;
    /* The Host field carries brackets for an IPv6 literal. */
    bool v6 = strchr(host, ':') != NULL;
    char *req = NULL;
    int len = asprintf(&req,
                       "GET %s HTTP/1.1\r\nHost: %s%s%s:%u\r\nUser-Agent: sluice-probe/%s\r\n"
                       "Accept: */*\r\nConnection: close\r\n\r\n",
                       path, v6 ? "[" : "", host, v6 ? "]" : "", port, SLUICE_VERSION);
    if (len < 0)
        snprintf(why, whylen, "out of memory");
    else
        status = exchange(fd, req, (size_t)len, deadline_ms, why, whylen);
    free(req);
    close(fd);
out:
    if (res)
        freeaddrinfo(res);
    free(host);
    free(path);
    return status;
}
