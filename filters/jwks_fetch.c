/*
 * jwks_fetch: GET a JWKS document through the upstream layer (see
 * jwks_fetch.h). The fetcher plays the proxy's part for one request of its
 * own: it picks the source's target, opens a stream with the HTTP/1.1
 * codec, sends the head with an empty body, collects the response body,
 * and reports once from the loop.
 */
#include "filters/jwks_fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "base/arena.h"
#include "base/header.h"
#include "base/log.h"
#include "upstream/codec.h"
#include "upstream/http1_client.h"
#include "upstream/upstream.h"

/* While the source's name has not resolved yet, try again this often. */
#define JWKS_RETRY_MS 50

struct jwks_fetcher {
    const struct jwks_source *src;
    struct upstream_rt *rt;
    jwks_fetched_fn fn;
    void *owner;
    struct event *deadline; /* the whole fetch */
    struct event *retry;    /* no target yet (DNS), or report a failure from the loop */
    bool busy;
    bool failed; /* decided: report failure at the next retry tick */
    /* The fetch in flight. */
    struct arena *arena;
    struct upstream_stream *stream;
    struct upstream_request rq;
    struct upstream_response resp;
    struct header_list headers;
    struct evbuffer *body;
    bool too_big;
};

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

int jwks_source_init(struct jwks_source *src, const char *url, char *why, size_t why_len)
{
    memset(src, 0, sizeof(*src));
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(why, why_len, "must be an http:// URL, e.g. \"http://idp:8080/jwks.json\"");
        return -1;
    }
    const char *auth = url + 7;
    size_t auth_len = strcspn(auth, "/?#");
    const char *rest = auth + auth_len;
    if (auth_len == 0 || memchr(auth, '@', auth_len)) {
        snprintf(why, why_len, "needs a host and no user info, e.g. \"http://idp:8080/jwks.json\"");
        return -1;
    }
    if (strchr(rest, '#')) {
        snprintf(why, why_len, "must not have a fragment (#...)");
        return -1;
    }
    /* host, [v6] or name, then an optional :port */
    const char *host = auth, *host_end;
    const char *port_at = NULL;
    if (auth[0] == '[') {
        host = auth + 1;
        host_end = memchr(auth, ']', auth_len);
        if (!host_end) {
            snprintf(why, why_len, "has an unclosed IPv6 literal");
            return -1;
        }
        if (host_end + 1 < auth + auth_len) {
            if (host_end[1] != ':') {
                snprintf(why, why_len, "has text after the IPv6 literal");
                return -1;
            }
            port_at = host_end + 2;
        }
    } else {
        host_end = memchr(auth, ':', auth_len);
        if (host_end)
            port_at = host_end + 1;
        else
            host_end = auth + auth_len;
    }
    long port = 80;
    if (port_at) {
        char *end = NULL;
        port = strtol(port_at, &end, 10);
        if (end != auth + auth_len || port < 1 || port > 65535 || port_at == end) {
            snprintf(why, why_len, "has an invalid port");
            return -1;
        }
    }
    if (host_end == host) {
        snprintf(why, why_len, "needs a host");
        return -1;
    }
    src->url = strdup(url);
    src->host_header = dup_n(auth, auth_len);
    src->path = rest[0] == '/' ? strdup(rest) : NULL;
    if (!src->path && src->url) {
        size_t n = strlen(rest);
        src->path = malloc(n + 2);
        if (src->path) {
            src->path[0] = '/';
            memcpy(src->path + 1, rest, n + 1);
        }
    }
    src->target.host = dup_n(host, (size_t)(host_end - host));
    src->target.port = (uint16_t)port;
    src->target.weight = 1;
    size_t name_len = strlen(url) + 8;
    src->upstream.name = malloc(name_len);
    if (!src->url || !src->host_header || !src->path || !src->target.host || !src->upstream.name) {
        jwks_source_clear(src);
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    /* Its own name keeps its targets' health apart from any configured upstream's. */
    snprintf(src->upstream.name, name_len, "jwks %s", url);
    src->upstream.targets = &src->target;
    src->upstream.num_targets = 1;
    src->upstream.balance = BALANCE_ROUND_ROBIN;
    src->upstream.keepalive = 1;
    src->upstream.max_connections = 1;
    src->upstream.connect_timeout_ms = JWKS_FETCH_TIMEOUT_MS;
    src->upstream.timeout_ms = JWKS_FETCH_TIMEOUT_MS;
    src->upstream.dns_refresh_ms = 30000;
    src->upstream.protocol = UPSTREAM_HTTP1;
    return 0;
}

void jwks_source_clear(struct jwks_source *src)
{
    free(src->url);
    free(src->host_header);
    free(src->path);
    free(src->target.host);
    free(src->upstream.name);
    memset(src, 0, sizeof(*src));
}

/* Ends the fetch in flight (stream, arena, body); keeps the timers. */
static void end_fetch(struct jwks_fetcher *f)
{
    if (f->stream)
        f->stream->ops->cancel(f->stream);
    f->stream = NULL;
    arena_free(f->arena);
    f->arena = NULL;
    if (f->body)
        evbuffer_free(f->body);
    f->body = NULL;
    evtimer_del(f->deadline);
    evtimer_del(f->retry);
    f->busy = false;
    f->failed = false;
}

/* Reports and ends the fetch; `f` may be freed by the callback, so nothing follows it. */
static void report(struct jwks_fetcher *f, bool success)
{
    char *body = NULL;
    size_t len = 0;
    if (success && f->body) {
        len = evbuffer_get_length(f->body);
        body = malloc(len + 1);
        if (body)
            evbuffer_remove(f->body, body, len);
    }
    end_fetch(f);
    f->fn(f->owner, body, body ? len : 0);
    free(body);
}

static void fail_later(struct jwks_fetcher *f, const char *why)
{
    log_warn("jwt: fetching %s failed: %s", f->src->url, why);
    if (f->stream)
        f->stream->ops->cancel(f->stream);
    f->stream = NULL;
    f->failed = true;
    const struct timeval now = {0, 0};
    evtimer_add(f->retry, &now);
}

static void on_phase(void *owner, enum upstream_phase phase)
{
    struct jwks_fetcher *f = owner;
    if (phase != UPSTREAM_SENT)
        return;
    struct evbuffer *none = evbuffer_new();
    if (!none) {
        fail_later(f, "out of memory");
        return;
    }
    f->stream->ops->send_body(f->stream, none, true);
    evbuffer_free(none);
}

static void on_head(void *owner)
{
    (void)owner;
}

static void on_body(void *owner, struct evbuffer *data, bool last)
{
    (void)last;
    struct jwks_fetcher *f = owner;
    if (f->too_big || evbuffer_get_length(f->body) + evbuffer_get_length(data) > JWKS_MAX_BODY) {
        f->too_big = true;
        evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    evbuffer_add_buffer(f->body, data);
}

static void on_end(void *owner)
{
    struct jwks_fetcher *f = owner;
    /* Final, but the stream is still cancelled (end_fetch): that releases its buffers. */
    if (f->resp.status != 200) {
        char why[64];
        snprintf(why, sizeof(why), "status %d", f->resp.status);
        fail_later(f, why);
        return;
    }
    if (f->too_big) {
        fail_later(f, "the document is larger than 1 MiB");
        return;
    }
    report(f, true);
}

static void on_fail(void *owner, enum upstream_failure why, int status, const char *message)
{
    (void)why;
    (void)status;
    struct jwks_fetcher *f = owner;
    fail_later(f, message ? message : "the connection failed"); /* cancels: releases buffers */
}

static void on_body_drained(void *owner)
{
    (void)owner;
}

static const struct upstream_events events = {
    .on_phase = on_phase,
    .on_head = on_head,
    .on_body = on_body,
    .on_end = on_end,
    .on_fail = on_fail,
    .on_body_drained = on_body_drained,
};

/* Opens the stream once the target is known; retries shortly while DNS has not answered. */
static void try_open(struct jwks_fetcher *f)
{
    struct target *t = upstream_pick(f->rt, NULL, NULL, 0);
    if (!t) {
        const struct timeval tv = {0, JWKS_RETRY_MS * 1000};
        evtimer_add(f->retry, &tv);
        return;
    }
    enum upstream_phase phase = UPSTREAM_QUEUED;
    f->stream = http1_client_codec.open(t, &f->src->upstream, &f->rq, &f->resp, &events, f, &phase);
    if (!f->stream) {
        fail_later(f, "cannot create a socket");
        return;
    }
    on_phase(f, phase);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct jwks_fetcher *f = arg;
    if (f->failed)
        report(f, false);
    else
        try_open(f);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct jwks_fetcher *f = arg;
    log_warn("jwt: fetching %s timed out after %d ms", f->src->url, JWKS_FETCH_TIMEOUT_MS);
    report(f, false);
}

struct jwks_fetcher *jwks_fetcher_new(const struct jwks_source *src, struct event_base *base,
                                      struct evdns_base *dns, jwks_fetched_fn fn, void *owner)
{
    struct jwks_fetcher *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->src = src;
    f->fn = fn;
    f->owner = owner;
    f->rt = upstream_rt_new(&src->upstream, base, dns, false);
    f->deadline = evtimer_new(base, on_deadline, f);
    f->retry = evtimer_new(base, on_retry, f);
    if (!f->rt || !f->deadline || !f->retry) {
        jwks_fetcher_free(f);
        return NULL;
    }
    return f;
}

bool jwks_fetcher_start(struct jwks_fetcher *f)
{
    if (f->busy)
        return true;
    f->arena = arena_new(4096);
    f->body = evbuffer_new();
    if (!f->arena || !f->body) {
        end_fetch(f);
        return false;
    }
    f->busy = true;
    f->too_big = false;
    header_list_init(&f->headers, f->arena, 4);
    header_add(&f->headers, SLICE_LIT("accept"), SLICE_LIT("application/json"));
    header_add(&f->headers, SLICE_LIT("user-agent"), SLICE_LIT("sluice-jwks"));
    const char *q = strchr(f->src->path, '?');
    size_t path_len = q ? (size_t)(q - f->src->path) : strlen(f->src->path);
    f->rq = (struct upstream_request){
        .arena = f->arena,
        .method = SLICE_LIT("GET"),
        .path = slice_make(f->src->path, path_len),
        .query = q ? slice_cstr(q + 1) : slice_make("", 0),
        .has_query = q != NULL,
        .host = slice_cstr(f->src->host_header),
        .headers = &f->headers,
        .has_body = false,
        .length = 0,
    };
    memset(&f->resp, 0, sizeof(f->resp));
    header_list_init(&f->resp.headers, f->arena, 8);
    header_list_init(&f->resp.trailers, f->arena, 0);
    f->resp.length = -1;
    const struct timeval tv = {JWKS_FETCH_TIMEOUT_MS / 1000, (JWKS_FETCH_TIMEOUT_MS % 1000) * 1000};
    evtimer_add(f->deadline, &tv);
    /* Opened from the loop, so that no event can run inside this call. */
    const struct timeval now = {0, 0};
    evtimer_add(f->retry, &now);
    return true;
}

bool jwks_fetcher_busy(const struct jwks_fetcher *f)
{
    return f && f->busy;
}

void jwks_fetcher_free(struct jwks_fetcher *f)
{
    if (!f)
        return;
    if (f->busy || f->arena)
        end_fetch(f);
    if (f->deadline)
        event_free(f->deadline);
    if (f->retry)
        event_free(f->retry);
    upstream_rt_free(f->rt);
    free(f);
}
