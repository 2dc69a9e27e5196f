#include "server/http1_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "base/container_of.h"
#include "conf/config.h"
#include "net/addr.h"
#include "net/conn.h"
#include "base/deadline.h"
#include "core/exchange.h"
#include "proto/http1_parse.h"
#include "proto/status.h"
#include "net/listener.h"
#include "base/log.h"
#include "ops/metrics.h"
#include "net/tls.h"
#include "core/worker.h"
#include "net/loop.h"
#include "upstream/codec.h"

/* How long a closing connection keeps draining the client's input. */
#define LINGER_MS 1000

enum h1_state {
    H1_IDLE = 0, /* between requests (or before the first byte) */
    H1_HEAD,     /* some bytes of a head arrived */
    H1_ACTIVE,   /* an exchange is running */
    H1_CLOSING,  /* flushing the last response, then lingering, then close */
};

/*
 * Every field stays for the connection's whole life, so an idle keep-alive
 * connection carries all of it: pointers first, then the smaller members,
 * the flags as one-bit fields (docs/internals/memory.md).
 */
struct h1_conn {
    struct client_conn link;
    struct conn *conn; /* adopted: this codec owns and frees it */
    struct exchange_side side;
    struct worker *w;
    struct exchange *x;
    char *client_subject;    /* mTLS: the verified client certificate's subject, or NULL */
    struct deadline timeout; /* header, idle, body or linger timeout */
    struct deadline kick;    /* deferred work: pipelined input, a failed write, an abort */
    size_t closing_left;     /* closing: output not yet taken when the timer was armed */
    /* request body */
    uint64_t req_left;
    uint64_t req_total;
    struct http1_chunked chunked;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer; /* 28 bytes, not a 128-byte sockaddr_storage */
    enum h1_state state;
    enum http1_framing req_framing;
    unsigned requests;
    int busy;              /* nested callbacks into the exchange; free only at 0 */
    unsigned flags;        /* enum listen_flags */
    bool client_keepalive; /* the current request allows another one after it */
    bool dead : 1;         /* socket closed; free when not busy */
    bool fresh : 1;        /* no request yet: header_timeout runs from accept */
    bool keepalive : 1;    /* the current exchange allows another request after it */
    bool close_after : 1;  /* close after the current response */
    bool want_process : 1; /* pipelined input waits to be parsed */
    bool out_full : 1;     /* parsing waits for the client to read our output */
    bool shut : 1;         /* write side shut down (lingering) */
    bool tls : 1;          /* the connection came over TLS */
    bool client_10 : 1;    /* the current request is HTTP/1.0 */
    bool write_failed : 1; /* a write to the client failed; close from the loop */
    bool handed_off : 1;   /* the socket went to the HTTP/2 codec (h2c preface) */
    bool tunnel : 1;       /* a WebSocket after its 101: raw bytes both ways (core/tunnel) */
    bool tunnel_shut : 1;  /* the tunnel passed the upstream's FIN on: shut down once flushed */
    bool body_done : 1;
    bool body_paused : 1;
    bool body_spliced : 1; /* the proxy reads the rest of the body from the socket */
    /* response */
    bool resp_chunked : 1;
    bool resp_close_delimited : 1;
    bool resp_done : 1;
};

static const struct exchange_side_ops h1_ops;
static void process(struct h1_conn *h);
static void start_closing(struct h1_conn *h);

static struct h1_conn *from_side(struct exchange *x)
{
    return container_of(x->client, struct h1_conn, side);
}

static const struct limits_config *limits(struct h1_conn *h)
{
    return &h->w->current->snapshot->limits;
}

static void arm_timer(struct h1_conn *h, int ms)
{
    deadline_arm(h->w->deadlines, &h->timeout, ms);
}

/* Runs on_timer's logic from the loop (the exchange may be on the stack now). */
static void kick(struct h1_conn *h)
{
    deadline_defer(h->w->deadlines, &h->kick);
}

static void stop_timer(struct h1_conn *h)
{
    deadline_cancel(&h->timeout);
}

/* ---- lifetime ------------------------------------------------------------ */

static void destroy(struct h1_conn *h)
{
    conn_free(h->conn);
    deadline_cancel(&h->timeout);
    deadline_cancel(&h->kick);
    if (h->handed_off)
        net_loop_conn_detach(&h->w->net, &h->link); /* the connection lives on in http2_server */
    else
        net_loop_conn_removed(&h->w->net, &h->link);
    metrics_connection_closed(h->tunnel ? "websocket" : "http1");
    free(h->client_subject);
    free(h);
}

/*
 * Closes the socket now. The struct itself is freed by leave() once no
 * callback is on the stack: every caller runs inside a busy section.
 */
static void close_now(struct h1_conn *h)
{
    if (h->x) {
        struct exchange *x = h->x;
        h->x = NULL;
        exchange_on_client_abort(x);
    }
    h->dead = true;
    conn_close(h->conn);
    stop_timer(h);
}

/* Ends a callback section: frees the connection if it died inside. Returns false then. */
static bool leave(struct h1_conn *h)
{
    if (--h->busy == 0 && h->dead) {
        destroy(h);
        return false;
    }
    if (h->busy == 0 && !h->dead && h->state == H1_IDLE && !deadline_pending(&h->kick))
        conn_release_buffers(h->conn); /* see h1_send_end */
    return !h->dead;
}

/* ---- responses ------------------------------------------------------------- */

/*
 * One pass over the request's fields for what the connection needs from
 * them, read before the proxy strips Connection (RFC 9112 9.3): whether the
 * client keeps the connection alive (HTTP/1.1 unless "close"; HTTP/1.0 only
 * with "keep-alive"), and whether it asks for a WebSocket upgrade (RFC 6455
 * 4.1: "Upgrade: websocket" with "Connection: upgrade", HTTP/1.1 only).
 */
static void scan_connection_fields(const struct exchange *x, bool *keepalive, bool *upgrade)
{
    bool close = false, keep = false, conn_upgrade = false, ws = false;
    const struct header_list *l = &x->req_headers;
    for (size_t i = 0; i < l->count; i++) {
        struct slice name = l->items[i].name, v = l->items[i].value, e;
        if (name.len == 10 && slice_ieq(name, SLICE_LIT("Connection"))) {
            while (header_next_element(&v, &e)) {
                if (slice_ieq(e, SLICE_LIT("close")))
                    close = true;
                else if (slice_ieq(e, SLICE_LIT("keep-alive")))
                    keep = true;
                else if (slice_ieq(e, SLICE_LIT("upgrade")))
                    conn_upgrade = true;
            }
        } else if (name.len == 7 && slice_ieq(name, SLICE_LIT("Upgrade"))) {
            while (header_next_element(&v, &e))
                if (slice_ieq(e, SLICE_LIT("websocket")))
                    ws = true;
        }
    }
    bool http10 = x->protocol == XPROTO_HTTP10;
    *keepalive = http10 ? keep : !close;
    *upgrade = !http10 && ws && conn_upgrade;
}

static void h1_send_head(struct exchange *x)
{
    struct h1_conn *h = from_side(x);
    struct evbuffer *out = h->conn->out;
    /* A response that leaves request bytes unread cannot be followed by another request. */
    if (!h->body_done)
        h->close_after = true;
    /* SPEC 7 "framing": after any 400 or 501 the connection is closed. */
    if (x->status == 400 || x->status == 501)
        h->close_after = true;
    h->keepalive = !h->close_after && !h->w->net.draining && h->client_keepalive;
    h->resp_chunked = false;
    h->resp_close_delimited = false;
    if (x->status == 101) {
        /* A WebSocket's 101 keeps the upstream's Upgrade and "Connection: upgrade". */
        h->keepalive = true; /* no "Connection: close": the connection becomes the tunnel */
        h->close_after = true;
    } else {
        header_remove(&x->resp_headers, SLICE_LIT("Connection"));
    }
    if (!x->resp_no_body && x->resp_length < 0) {
        header_remove(&x->resp_headers, SLICE_LIT("Transfer-Encoding"));
        if (h->client_10) {
            h->resp_close_delimited = true;
            h->keepalive = false;
        } else {
            h->resp_chunked = true;
        }
    }

    /* The whole head is written into one reserved extent: one copy, one later write. */
    const char *why = status_reason(x->status);
    size_t why_len = strlen(why);
    const char *tail = !h->keepalive  ? "Connection: close\r\n\r\n"
                       : h->client_10 ? "Connection: keep-alive\r\n\r\n"
                                      : "\r\n";
    size_t tail_len = strlen(tail);
    size_t size = 13 + why_len + 2 + (h->resp_chunked ? 28 : 0) + tail_len;
    for (size_t i = 0; i < x->resp_headers.count; i++)
        size += x->resp_headers.items[i].name.len + x->resp_headers.items[i].value.len + 4;
    struct evbuffer_iovec vec;
    if (evbuffer_reserve_space(out, (ev_ssize_t)size, &vec, 1) != 1) {
        log_error("out of memory");
        abort();
    }
    char *p = vec.iov_base;
    int status = x->status >= 100 && x->status <= 999 ? x->status : 500;
    memcpy(p, "HTTP/1.1 ", 9);
    p[9] = (char)('0' + status / 100);
    p[10] = (char)('0' + status / 10 % 10);
    p[11] = (char)('0' + status % 10);
    p[12] = ' ';
    p += 13;
    memcpy(p, why, why_len);
    p += why_len;
    *p++ = '\r';
    *p++ = '\n';
    for (size_t i = 0; i < x->resp_headers.count; i++) {
        const struct header *f = &x->resp_headers.items[i];
        memcpy(p, f->name.base, f->name.len);
        p += f->name.len;
        *p++ = ':';
        *p++ = ' ';
        memcpy(p, f->value.base, f->value.len);
        p += f->value.len;
        *p++ = '\r';
        *p++ = '\n';
    }
    if (h->resp_chunked) {
        memcpy(p, "Transfer-Encoding: chunked\r\n", 28);
        p += 28;
    }
    memcpy(p, tail, tail_len);
    p += tail_len;
    vec.iov_len = (size_t)(p - (char *)vec.iov_base);
    evbuffer_commit_space(out, &vec, 1);
}

static void flush_or_fail(struct h1_conn *h)
{
    if (conn_flush(h->conn) < 0) {
        /* Report from the loop: the exchange is on the stack right now. */
        h->write_failed = true;
        h->close_after = true;
        h->keepalive = false;
        kick(h);
    }
}

static void h1_send_body(struct exchange *x, struct evbuffer *data)
{
    struct h1_conn *h = from_side(x);
    size_t len = evbuffer_get_length(data);
    if (h->tunnel) {
        evbuffer_add_buffer(h->conn->out, data);
        flush_or_fail(h);
        return;
    }
    if (len == 0 || x->resp_no_body) {
        evbuffer_drain(data, len);
        flush_or_fail(h);
        return;
    }
    if (h->resp_chunked) {
        char size[20];
        int n = snprintf(size, sizeof size, "%zx\r\n", len);
        evbuffer_add(h->conn->out, size, (size_t)n);
        evbuffer_add_buffer(h->conn->out, data);
        evbuffer_add(h->conn->out, "\r\n", 2);
    } else {
        evbuffer_add_buffer(h->conn->out, data);
    }
    flush_or_fail(h);
}

static void h1_send_end(struct exchange *x)
{
    struct h1_conn *h = from_side(x);
    if (h->resp_chunked && !x->resp_no_body) {
        /* Trailer fields (e.g. gRPC's) go in the last chunk (RFC 9112 7.1.2); with a
         * Content-Length there is no place for them and they are dropped. */
        evbuffer_add(h->conn->out, "0\r\n", 3);
        for (size_t i = 0; i < x->resp_trailers.count; i++) {
            const struct header *f = &x->resp_trailers.items[i];
            evbuffer_add(h->conn->out, f->name.base, f->name.len);
            evbuffer_add(h->conn->out, ": ", 2);
            evbuffer_add(h->conn->out, f->value.base, f->value.len);
            evbuffer_add(h->conn->out, "\r\n", 2);
        }
        evbuffer_add(h->conn->out, "\r\n", 2);
    }
    h->x = NULL;
    h->resp_done = true;
    flush_or_fail(h);
    if (h->tunnel) {
        h->keepalive = false;
        h->body_done = true;
        h->body_spliced = false;
    }
    if (!h->keepalive) {
        start_closing(h);
        return;
    }
    h->state = H1_IDLE;
    h->fresh = false;
    conn_read_enable(h->conn, true);
    if (evbuffer_get_length(h->conn->in) > 0 || h->conn->eof) {
        /* Pipelined input: parse it from the loop, not from inside the exchange. */
        h->want_process = true;
        kick(h);
    } else {
        arm_timer(h, limits(h)->idle_timeout_ms);
        /*
         * Idle keep-alive connections hold no buffers (borrowed back on the
         * next read). Only when none of our callbacks is on the stack: one
         * may still look at the input; leave() releases them then.
         */
        if (h->busy == 0)
            conn_release_buffers(h->conn);
    }
}

static void h1_pause_body(struct exchange *x, bool pause)
{
    struct h1_conn *h = from_side(x);
    if (h->body_spliced)
        return; /* the proxy reads the socket itself */
    h->body_paused = pause;
    conn_read_enable(h->conn, !pause);
    if (!pause && (evbuffer_get_length(h->conn->in) > 0 || (h->tunnel && h->conn->eof))) {
        h->want_process = true;
        kick(h);
    }
}

static size_t h1_pending(struct exchange *x)
{
    return evbuffer_get_length(from_side(x)->conn->out);
}

static void h1_abort(struct exchange *x)
{
    struct h1_conn *h = from_side(x);
    h->x = NULL;
    h->close_after = true;
    /* The exchange is on the stack: close from the loop. */
    h->dead = false;
    h->keepalive = false;
    evbuffer_drain(h->conn->out, evbuffer_get_length(h->conn->out));
    h->state = H1_CLOSING;
    h->shut = true;
    kick(h);
}

static void h1_send_continue(struct exchange *x)
{
    struct h1_conn *h = from_side(x);
    if (h->client_10)
        return;
    evbuffer_add(h->conn->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    flush_or_fail(h);
}

static int h1_splice_fd(struct exchange *x)
{
    struct h1_conn *h = from_side(x);
    if (h->tls || h->resp_chunked || x->resp_no_body || h->write_failed || h->conn->ssl ||
        evbuffer_get_length(h->conn->out) > 0)
        return -1;
    return h->conn->fd;
}

/* Large Content-Length request bodies are below this read through the buffers. */
#define H1_SPLICE_BODY_MIN (64 * 1024)

static int h1_body_splice_fd(struct exchange *x, uint64_t *left)
{
    struct h1_conn *h = from_side(x);
    if (h->tls || h->conn->ssl || h->body_done || h->body_paused ||
        h->req_framing != HTTP1_BODY_LENGTH || h->req_left < H1_SPLICE_BODY_MIN ||
        evbuffer_get_length(h->conn->in) > 0 || h->conn->eof)
        return -1;
    *left = h->req_left;
    h->body_spliced = true;
    conn_read_enable(h->conn, false);
    stop_timer(h); /* the proxy's timer watches the transfer now */
    return h->conn->fd;
}

static void h1_body_spliced(struct exchange *x, uint64_t n)
{
    struct h1_conn *h = from_side(x);
    h->req_left -= n;
    h->req_total += n;
    x->bytes_in += n;
    if (h->req_left > 0)
        return;
    h->body_done = true;
    h->body_spliced = false;
    x->req_body_done = true;
    conn_read_enable(h->conn, true);
}

/* The 101 went out: from now on the connection carries the tunnel's raw bytes. */
static void h1_tunnel(struct exchange *x)
{
    struct h1_conn *h = from_side(x);
    h->x = x; /* the tunnel's shell: the request's exchange is about to go */
    h->tunnel = true;
    metrics_connection_closed("http1");
    metrics_connection_opened("websocket");
    h->body_done = false;
    h->body_paused = false;
    stop_timer(h);    /* the tunnel's idle timeout rules now */
    flush_or_fail(h); /* the 101 */
    conn_read_enable(h->conn, true);
    if (evbuffer_get_length(h->conn->in) > 0 || h->conn->eof) {
        h->want_process = true;
        kick(h);
    }
}

/* The upstream sent its FIN: pass it on once everything before it is written. */
static void h1_tunnel_shutdown(struct exchange *x)
{
    struct h1_conn *h = from_side(x);
    h->tunnel_shut = true;
    if (evbuffer_get_length(h->conn->out) == 0)
        conn_shutdown_write(h->conn);
}

static int h1_tunnel_fd(struct exchange *x)
{
    struct h1_conn *h = from_side(x);
    if (h->tls || h->conn->ssl || h->write_failed || h->tunnel_shut ||
        evbuffer_get_length(h->conn->out) > 0)
        return -1;
    return h->conn->fd;
}

static bool h1_tunnel_reads(struct exchange *x, bool codec_reads)
{
    struct h1_conn *h = from_side(x);
    if (codec_reads) {
        h->body_spliced = false;
        conn_read_enable(h->conn, !h->body_paused);
        return true;
    }
    if (h->tls || h->conn->ssl || h->conn->eof || h->want_process || h->body_paused ||
        evbuffer_get_length(h->conn->in) > 0)
        return false;
    h->body_spliced = true; /* read_body and pause_body leave the socket alone */
    conn_read_enable(h->conn, false);
    return true;
}

static const struct exchange_side_ops h1_ops = {
    .send_head = h1_send_head,
    .send_body = h1_send_body,
    .send_end = h1_send_end,
    .pause_body = h1_pause_body,
    .pending = h1_pending,
    .abort = h1_abort,
    .send_continue = h1_send_continue,
    .splice_fd = h1_splice_fd,
    .body_splice_fd = h1_body_splice_fd,
    .body_spliced = h1_body_spliced,
    .tunnel = h1_tunnel,
    .tunnel_shutdown = h1_tunnel_shutdown,
    .tunnel_fd = h1_tunnel_fd,
    .tunnel_reads = h1_tunnel_reads,
};

/* ---- closing ------------------------------------------------------------- */

static void start_closing(struct h1_conn *h)
{
    h->state = H1_CLOSING;
    h->closing_left = evbuffer_get_length(h->conn->out);
    if (h->closing_left == 0) {
        conn_shutdown_write(h->conn);
        h->shut = true;
    }
    /* Keep reading (and discarding) so unread input does not turn into a reset. */
    conn_read_enable(h->conn, true);
    /* SPEC 7 "slow readers": unsent output waits body_timeout_ms for each byte taken. */
    arm_timer(h, h->shut ? LINGER_MS : limits(h)->body_timeout_ms);
}

/* ---- requests -------------------------------------------------------------- */

/* Answers an error before or instead of the exchange's own work, then closes. */
static void respond_and_close(struct h1_conn *h, struct exchange *x, int status,
                              const char *message)
{
    h->close_after = true;
    h->body_done = true;
    exchange_respond_error(x, status, message);
    exchange_reply(x);
}

static struct exchange *new_exchange(struct h1_conn *h)
{
    struct exchange *x = exchange_new(h->w, &h->side);
    memcpy(&x->peer, &h->peer, sizeof h->peer);
    addr_ip_text(&h->peer.sa, x->remote_addr);
    x->protocol = XPROTO_HTTP11;
    x->tls = h->tls;
    if (h->client_subject) {
        size_t len = strlen(h->client_subject);
        x->client_subject = slice_make(arena_strndup(x->arena, h->client_subject, len), len);
    }
    h->x = x;
    h->state = H1_ACTIVE;
    h->requests++;
    h->close_after = false;
    h->body_done = true;
    h->resp_done = false;
    h->client_10 = false;
    h->client_keepalive = false;
    return x;
}

/* Reads decoded request body bytes into the exchange. Returns false if the connection died. */
static bool read_body(struct h1_conn *h)
{
    struct exchange *x = h->x;
    if (h->body_spliced)
        return true; /* the proxy reads the rest from the socket */
    struct evbuffer *in = h->conn->in;
    if (h->tunnel) {
        /* Raw bytes until the client's FIN; no framing, no body limit, no timer. */
        size_t len = evbuffer_get_length(in);
        evbuffer_add_buffer(x->req_body, in);
        x->bytes_in += len;
        if (h->conn->eof) {
            h->body_done = true;
            x->req_body_done = true;
        }
        if (len || h->body_done)
            exchange_on_request_body(x);
        return !h->dead;
    }
    bool moved = false;
    while (!h->body_done && evbuffer_get_length(in) > 0) {
        if (h->req_framing == HTTP1_BODY_LENGTH) {
            size_t take = evbuffer_get_length(in);
            if (take > h->req_left)
                take = (size_t)h->req_left;
            evbuffer_remove_buffer(in, x->req_body, take);
            x->bytes_in += take;
            h->req_left -= take;
            h->req_total += take;
            moved = true;
            if (h->req_left == 0)
                h->body_done = true;
            continue;
        }
        /* Chunked: decode from the first contiguous segment. */
        struct evbuffer_iovec seg;
        if (evbuffer_peek(in, -1, NULL, &seg, 1) < 1)
            break;
        struct slice data = {0};
        ssize_t used = http1_chunked_decode(&h->chunked, seg.iov_base, seg.iov_len, &data);
        if (used < 0) {
            if (x->head_sent) {
                exchange_abort(x);
                return false;
            }
            respond_and_close(h, x, 400, "invalid chunked request body");
            return !h->dead;
        }
        if (data.len) {
            size_t framing = (size_t)(data.base - (const char *)seg.iov_base);
            evbuffer_drain(in, framing);
            evbuffer_remove_buffer(in, x->req_body, data.len);
            x->bytes_in += (size_t)used;
            h->req_total += data.len;
            moved = true;
        } else {
            evbuffer_drain(in, (size_t)used);
            x->bytes_in += (size_t)used;
        }
        if (http1_chunked_done(&h->chunked))
            h->body_done = true;
        else if (used == 0 && data.len == 0)
            break;
    }
    uint64_t max = limits(h)->max_body_bytes;
    if (max && h->req_total > max) {
        if (x->head_sent) {
            exchange_abort(x);
            return false;
        }
        respond_and_close(h, x, 413, "the request body is larger than limits.max_body_bytes");
        return !h->dead;
    }
    if (h->body_done) {
        x->req_body_done = true;
        stop_timer(h);
    } else if (!h->body_paused) {
        arm_timer(h, limits(h)->body_timeout_ms);
    }
    if (moved || h->body_done)
        exchange_on_request_body(x);
    return !h->dead;
}

/* Turns a complete parsed head into an exchange and starts it. */
static void start_request(struct h1_conn *h, const char *buf, int head_len,
                          const struct http1_request_head *rq)
{
    struct exchange *x = new_exchange(h);
    /* The head is copied into the arena: the input buffer moves on to the body. */
    char *copy = arena_alloc(x->arena, (size_t)head_len);
    memcpy(copy, buf, (size_t)head_len);
    ptrdiff_t shift = copy - buf;
    struct header *fields = arena_alloc(x->arena, (rq->num_headers + 8) * sizeof *fields);
    for (size_t i = 0; i < rq->num_headers; i++) {
        fields[i].name = slice_make(rq->headers[i].name.base + shift, rq->headers[i].name.len);
        fields[i].value = slice_make(rq->headers[i].value.base + shift, rq->headers[i].value.len);
    }
    header_list_wrap(&x->req_headers, x->arena, fields, rq->num_headers);
    x->req_headers.cap = rq->num_headers + 8;
    x->method = slice_make(rq->method.base + shift, rq->method.len);
    x->target = slice_make(rq->target.base + shift, rq->target.len);
    x->protocol = rq->minor_version == 0 ? XPROTO_HTTP10 : XPROTO_HTTP11;
    h->client_10 = rq->minor_version == 0;
    /* SPEC 3.4: a WebSocket upgrade (RFC 6455 4.1); the proxy decides whether it goes through. */
    scan_connection_fields(x, &h->client_keepalive, &x->upgrade);
    x->bytes_in = (uint64_t)head_len;
    evbuffer_drain(h->conn->in, (size_t)head_len);

    static const struct slice host_name = SLICE_LIT("Host");
    size_t hosts = header_count(&x->req_headers, host_name);
    if (hosts > 1 || (hosts == 0 && rq->minor_version == 1)) {
        respond_and_close(h, x, 400,
                          hosts ? "more than one Host header"
                                : "an HTTP/1.1 request needs a Host header");
        return;
    }
    enum http1_framing framing;
    uint64_t length = 0;
    int bad = http1_request_framing(rq->minor_version, x->req_headers.items, x->req_headers.count,
                                    &framing, &length);
    if (bad) {
        respond_and_close(h, x, bad,
                          bad == 501 ? "only the chunked transfer coding is supported"
                                     : "ambiguous or invalid message framing");
        return;
    }
    h->req_framing = framing;
    h->req_left = length;
    h->req_total = 0;
    http1_chunked_init(&h->chunked);
    h->body_done = framing == HTTP1_BODY_NONE || (framing == HTTP1_BODY_LENGTH && length == 0);
    x->req_has_body = !h->body_done;
    x->req_length = framing == HTTP1_BODY_LENGTH ? (int64_t)length : -1;
    x->req_body_done = h->body_done;
    uint64_t max = limits(h)->max_body_bytes;
    if (max && framing == HTTP1_BODY_LENGTH && length > max) {
        respond_and_close(h, x, 413, "the request body is larger than limits.max_body_bytes");
        return;
    }
    const struct slice *expect = header_get(&x->req_headers, SLICE_LIT("Expect"));
    if (expect) {
        x->expect_continue = slice_ieq(*expect, SLICE_LIT("100-continue"));
        header_remove(&x->req_headers, SLICE_LIT("Expect"));
    }
    /* Framing fields describe the client's message, not what goes upstream. */
    header_remove(&x->req_headers, SLICE_LIT("Transfer-Encoding"));
    header_remove(&x->req_headers, SLICE_LIT("Content-Length"));
    if (!h->body_done) {
        arm_timer(h, limits(h)->body_timeout_ms);
        /*
         * Decode the body bytes that came with the head before anything goes
         * upstream, so a bad chunk in them is refused before a pooled
         * connection could carry the head away.
         */
        if (evbuffer_get_length(h->conn->in) > 0 && !read_body(h))
            return;
        if (h->x != x)
            return;
    } else {
        stop_timer(h);
    }
    exchange_start(x);
    /* The exchange may have ended (h->x NULL) or be waiting; body bytes may already be here. */
    if (h->x == x && !h->dead && !h->body_done && !h->body_paused)
        read_body(h);
}

/* Tries to parse a head from the input. Returns true if a request started. */
static bool parse_head(struct h1_conn *h)
{
    const struct limits_config *lim = limits(h);
    struct evbuffer *in = h->conn->in;
    size_t have = evbuffer_get_length(in);
    size_t look = have < (size_t)lim->max_header_bytes ? have : (size_t)lim->max_header_bytes;
    const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)look);
    struct http1_request_head rq;
    size_t cap =
        h->w->parse_cap < (size_t)lim->max_headers ? h->w->parse_cap : (size_t)lim->max_headers;
    int r = http1_parse_request(buf, look, &rq, h->w->parse_headers, cap);
    if (r > 0) {
        start_request(h, buf, r, &rq);
        return true;
    }
    if (r == HTTP1_PARTIAL && look < (size_t)lim->max_header_bytes) {
        if (h->conn->eof)
            close_now(h); /* the client gave up mid-head */
        return false;
    }
    struct exchange *x = new_exchange(h);
    x->protocol = XPROTO_HTTP11;
    evbuffer_drain(in, have);
    if (r == HTTP1_INVALID)
        respond_and_close(h, x, 400, "malformed request head");
    else if (r == HTTP1_TOO_MANY_HEADERS)
        respond_and_close(h, x, 431, "more header fields than limits.max_headers");
    else
        respond_and_close(h, x, 431, "the request head is larger than limits.max_header_bytes");
    return true;
}

/*
 * h2c with prior knowledge (RFC 9113 3.3): a fresh cleartext connection on an
 * h2c listener that starts with the HTTP/2 preface goes to http2_server.
 * Returns 1 when it was handed over (h is dead), 0 to wait for more of a
 * partial preface, -1 when this is HTTP/1.
 */
static int try_h2c(struct h1_conn *h)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const size_t plen = sizeof preface - 1;
    if (!(h->flags & LISTEN_H2C) || h->tls || h->requests > 0)
        return -1;
    size_t have = evbuffer_get_length(h->conn->in);
    size_t look = have < plen ? have : plen;
    const char *buf = (const char *)evbuffer_pullup(h->conn->in, (ssize_t)look);
    if (memcmp(buf, preface, look) != 0)
        return -1;
    if (look < plen)
        return h->conn->eof ? -1 : 0;
    struct sockaddr_storage peer = {0};
    memcpy(&peer, &h->peer, sizeof h->peer);
    const struct listener_codecs *codecs = listener_codecs();
    if (!codecs || codecs->adopt_http2(h->w, h->conn, &peer, h->flags) < 0)
        return -1;
    /* The conn is http2_server's now: free only this struct, via leave(). */
    h->conn = NULL;
    h->handed_off = true;
    h->dead = true;
    stop_timer(h);
    return 1;
}

static void process(struct h1_conn *h)
{
    h->busy++;
    for (int round = 0; round < 64 && !h->dead; round++) {
        if (h->state == H1_CLOSING) {
            evbuffer_drain(h->conn->in, evbuffer_get_length(h->conn->in));
            if (h->conn->eof)
                close_now(h);
            break;
        }
        if (h->state == H1_ACTIVE) {
            if (h->x && !h->body_done && !h->body_paused)
                read_body(h);
            else if (h->x && h->body_done &&
                     evbuffer_get_length(h->conn->in) > (size_t)limits(h)->max_header_bytes)
                conn_read_enable(h->conn, false); /* pipelined bytes wait their turn */
            if (h->conn->eof && h->x && !h->body_done && !h->tunnel) {
                close_now(h); /* the client went away mid-body */
            }
            break;
        }
        /* Idle or mid-head: look for a request. */
        if (evbuffer_get_length(h->conn->in) == 0) {
            if (h->conn->eof)
                close_now(h);
            break;
        }
        if (h->fresh && h->state != H1_ACTIVE && try_h2c(h) >= 0)
            break;
        /*
         * A client that pipelines without reading: the next request waits
         * until our output drains (on_writable), whoever made the responses
         * (SPEC 7 "slow readers"); the proxy applies the same mark.
         */
        if (evbuffer_get_length(h->conn->out) > UPSTREAM_HIGH_WATER) {
            h->out_full = true;
            conn_read_enable(h->conn, false);
            break;
        }
        if (h->state == H1_IDLE) {
            h->state = H1_HEAD;
            if (!h->fresh)
                arm_timer(h, limits(h)->header_timeout_ms);
        }
        if (!parse_head(h))
            break;
        /* A request ran: go on with its body, or with the next pipelined request. */
    }
    leave(h);
}

/* ---- events ---------------------------------------------------------------- */

static void on_read(struct conn *c)
{
    process(c->owner);
}

static void on_writable(struct conn *c)
{
    struct h1_conn *h = c->owner;
    if (h->state == H1_CLOSING) {
        if (!h->shut) {
            conn_shutdown_write(h->conn);
            h->shut = true;
            arm_timer(h, LINGER_MS);
        }
        return;
    }
    if (h->tunnel_shut && evbuffer_get_length(h->conn->out) == 0)
        conn_shutdown_write(h->conn);
    if (h->out_full && !h->x) {
        h->out_full = false;
        conn_read_enable(h->conn, true);
        h->want_process = true;
        kick(h);
        return;
    }
    if (h->x) {
        h->busy++;
        exchange_on_client_drain(h->x);
        leave(h);
    }
}

static void on_error(struct conn *c, int err)
{
    struct h1_conn *h = c->owner;
    h->busy++;
    close_now(h);
    leave(h);
}

static void on_timer(struct h1_conn *h)
{
    if (h->want_process) {
        h->want_process = false;
        process(h);
        return;
    }
    h->busy++;
    if (h->write_failed && h->state != H1_CLOSING) {
        close_now(h);
        leave(h);
        return;
    }
    switch (h->state) {
    case H1_IDLE:
        if (h->fresh) {
            /* Nothing at all since accept: header_timeout_ms applies (SPEC 7 "timeouts"). */
            struct exchange *x = new_exchange(h);
            respond_and_close(h, x, 408, "the request head was not received in time");
        } else {
            close_now(h); /* idle keep-alive: silently */
        }
        break;
    case H1_HEAD: {
        struct exchange *x = new_exchange(h);
        respond_and_close(h, x, 408, "the request head was not received in time");
        break;
    }
    case H1_ACTIVE:
        if (h->x && !h->body_done) {
            if (!h->x->head_sent) {
                struct exchange *x = h->x;
                respond_and_close(h, x, 408, "the request body stalled");
            } else {
                close_now(h);
            }
        }
        break;
    case H1_CLOSING:
        if (!h->shut && evbuffer_get_length(h->conn->out) < h->closing_left) {
            /* A slow reader, not a stopped one: it took bytes since. */
            h->closing_left = evbuffer_get_length(h->conn->out);
            arm_timer(h, limits(h)->body_timeout_ms);
            break;
        }
        if (h->shut && evbuffer_get_length(h->conn->out) > 0)
            evbuffer_drain(h->conn->out, evbuffer_get_length(h->conn->out));
        close_now(h);
        break;
    }
    leave(h);
}

static void on_timeout(struct deadline *d)
{
    on_timer(container_of(d, struct h1_conn, timeout));
}

static void on_kick(struct deadline *d)
{
    on_timer(container_of(d, struct h1_conn, kick));
}

/* ---- worker hooks ------------------------------------------------------------ */

static void on_drain(struct client_conn *link)
{
    struct h1_conn *h = (struct h1_conn *)link;
    if (h->state == H1_IDLE) {
        h->busy++;
        close_now(h);
        leave(h);
    }
    /* Busy connections send "Connection: close" on their last response (h1_send_head). */
}

static void on_stop(struct client_conn *link)
{
    struct h1_conn *h = (struct h1_conn *)link;
    if (h->tunnel && h->x)
        h->x->close_reason = "drain"; /* drain_timeout_ms passed with the tunnel open */
    h->busy++;
    close_now(h);
    leave(h);
}

static const struct conn_events h1_conn_events = {
    .on_read = on_read,
    .on_writable = on_writable,
    .on_error = on_error,
};

int http1_server_adopt(struct worker *w, struct conn *c, const struct sockaddr_storage *peer,
                       unsigned flags)
{
    struct h1_conn *h = calloc(1, sizeof *h);
    if (!h)
        return -1;
    h->w = w;
    h->side.ops = &h1_ops;
    memcpy(&h->peer, peer, peer->ss_family == AF_INET6 ? sizeof h->peer.in6 : sizeof h->peer.in);
    h->tls = flags & LISTEN_TLS;
    h->flags = flags;
    h->fresh = true;
    h->body_done = true;
    h->link.on_drain = on_drain;
    h->link.on_stop = on_stop;
    deadline_init(&h->timeout, on_timeout);
    deadline_init(&h->kick, on_kick);
    if (c->ssl)
        h->client_subject = tls_peer_subject(c->ssl);
    h->conn = c;
    conn_set_owner(c, &h1_conn_events, h);
    conn_read_enable(c, true);
    net_loop_conn_added(&w->net, &h->link);
    metrics_connection_opened("http1");
    arm_timer(h, limits(h)->header_timeout_ms);
    /* Bytes may already be buffered (a TLS handshake or a codec read them). */
    if (evbuffer_get_length(c->in) > 0) {
        h->want_process = true;
        kick(h);
    }
    return 0;
}

int http1_server_accept(struct worker *w, int fd, const struct sockaddr_storage *peer,
                        socklen_t peerlen, unsigned flags)
{
    struct conn *c = conn_new();
    if (!c)
        return -1;
    if (conn_open(c, w->base, fd, &h1_conn_events, NULL) < 0) {
        free(c);
        return -1;
    }
    if (http1_server_adopt(w, c, peer, flags) < 0) {
        c->fd = -1; /* the caller closes the socket */
        conn_free(c);
        return -1;
    }
    return 0;
}
