#include "upstream/http1_client.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "core/exchange.h"

void http1_client_prepare(struct exchange *x)
{
    struct header_list *h = &x->req_headers;
    header_remove_hop_by_hop(h, false);

    /* X-Forwarded-For: every value the client sent, then the peer (SPEC 7). */
    static const struct slice xff = SLICE_LIT("X-Forwarded-For");
    struct slice parts[2 * 8 + 1];
    size_t n = 0;
    long i = -1;
    while ((i = header_find(h, xff, (size_t)(i + 1))) >= 0 && n < 2 * 8) {
        if (n)
            parts[n++] = SLICE_LIT(", ");
        parts[n++] = h->items[i].value;
    }
    if (n) {
        parts[n++] = SLICE_LIT(", ");
        parts[n++] = slice_cstr(x->remote_addr);
        header_set(h, xff, arena_concat(x->arena, parts, n));
    } else {
        header_set(h, xff, slice_cstr(x->remote_addr));
    }
    header_set(h, SLICE_LIT("X-Forwarded-Proto"), x->tls ? SLICE_LIT("https") : SLICE_LIT("http"));
    if (x->host.len)
        header_set(h, SLICE_LIT("X-Forwarded-Host"), x->host);
    else
        header_remove(h, SLICE_LIT("X-Forwarded-Host"));
}

struct slice http1_client_head(struct exchange *x, bool *chunked)
{
    const struct header_list *h = &x->req_headers;
    char framing[48];
    int flen = 0;
    *chunked = false;
    if (x->req_has_body) {
        if (x->req_length >= 0) {
            flen = snprintf(framing, sizeof framing, "Content-Length: %lld\r\n",
                            (long long)x->req_length);
        } else {
            flen = snprintf(framing, sizeof framing, "Transfer-Encoding: chunked\r\n");
            *chunked = true;
        }
    } else if (slice_eq(x->method, SLICE_LIT("POST")) || slice_eq(x->method, SLICE_LIT("PUT")) ||
               slice_eq(x->method, SLICE_LIT("PATCH"))) {
        /* RFC 9110 8.6: a body-carrying method without a body says so. */
        flen = snprintf(framing, sizeof framing, "Content-Length: 0\r\n");
    }
    size_t size = x->method.len + 1 + x->path.len + 1 + x->query.len + 11 + (size_t)flen + 2;
    for (size_t i = 0; i < h->count; i++)
        size += h->items[i].name.len + 2 + h->items[i].value.len + 2;
    char *buf = arena_alloc(x->arena, size);
    char *p = buf;
#define PUT(b, l)                                                                                  \
    do {                                                                                           \
        memcpy(p, (b), (l));                                                                       \
        p += (l);                                                                                  \
    } while (0)
    PUT(x->method.base, x->method.len);
    *p++ = ' ';
    PUT(x->path.base, x->path.len);
    if (x->has_query) {
        *p++ = '?';
        PUT(x->query.base, x->query.len);
    }
    PUT(" HTTP/1.1\r\n", 11);
    for (size_t i = 0; i < h->count; i++) {
        PUT(h->items[i].name.base, h->items[i].name.len);
        PUT(": ", 2);
        PUT(h->items[i].value.base, h->items[i].value.len);
        PUT("\r\n", 2);
    }
    PUT(framing, (size_t)flen);
    PUT("\r\n", 2);
#undef PUT
    return slice_make(buf, (size_t)(p - buf));
}

void http1_client_body(struct evbuffer *out, struct evbuffer *body, bool chunked)
{
    size_t len = evbuffer_get_length(body);
    if (len == 0)
        return;
    if (chunked) {
        char size[20];
        int n = snprintf(size, sizeof size, "%zx\r\n", len);
        evbuffer_add(out, size, (size_t)n);
        evbuffer_add_buffer(out, body);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_add_buffer(out, body);
    }
}

void http1_client_body_end(struct evbuffer *out)
{
    evbuffer_add(out, "0\r\n\r\n", 5);
}
