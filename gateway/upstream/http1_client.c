/*
 * http1_client: the upstream HTTP/1.1 codec (see the header).
 *
 * Re-entrancy: events run from the connection's callbacks and from one
 * deferred event (a granted pool slot, a failed write, input left waiting
 * by a pause or a splice), never from inside an operation. An event may
 * cancel the stream and free the arena it lives in: every event after
 * which the codec goes on working is called through emit_*(), which
 * watches a flag on the C stack that cancel() clears.
 */
#include "upstream/http1_client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "base/arena.h"
#include "base/header.h"
#include "base/log.h"
#include "conf/config.h"
#include "net/conn.h"
#include "net/tls.h"
#include "proto/fields.h"
#include "proto/http1_parse.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"
#include "base/container_of.h"

/* A response head larger than this is refused (502). */
#define H1C_MAX_HEAD (64 * 1024)
/* Header fields parsed per response head. */
#define H1C_MAX_FIELDS 128

enum h1c_state {
    H1C_QUEUED = 0, /* waiting in the pool for a connection slot */
    H1C_CONNECTING, /* non-blocking connect (and TLS handshake) in progress */
    H1C_WAIT_HEAD,  /* request sent or being sent, waiting for the response head */
    H1C_BODY,       /* reading the response body */
    H1C_TUNNEL,     /* a 101 to an upgrade: the connection is the owner's tunnel's */
    H1C_DONE,       /* ended, failed or cancelled: the connection is gone */
};

struct h1_upstream_stream {
    struct upstream_stream base;
    const struct upstream_request *rq;
    struct upstream_response *resp;
    const struct upstream_events *events;
    void *owner;
    struct target *target;
    const struct upstream_config *cfg;
    struct upconn *uc; /* NULL while queued and once done */
    struct pool_waiter waiter;
    struct event *defer; /* deferred work; arena memory, made on first need */
    bool *alive;         /* while an event runs: a flag on the stack that cancel() clears */
    struct slice head;   /* the serialised request head */
    enum h1c_state state;
    bool chunked;      /* the request body goes chunked */
    bool req_end;      /* the whole request is in the connection's output */
    bool got_byte;     /* a response byte arrived on this connection */
    bool keepalive_ok; /* the response allows reusing the connection */
    bool paused;       /* the owner stopped reading the response */
    bool want_slot;    /* a pool slot answer waits for the loop */
    bool slot_ok;
    bool want_read;        /* buffered input waits for the loop */
    int write_err;         /* a write failed (errno): reported from the loop */
    const char *setup_err; /* the TLS setup failed: reported from the loop */
    enum http1_framing framing;
    uint64_t left; /* Content-Length bytes still to come */
    struct http1_chunked dec;
    struct evbuffer *out; /* response body on its way to the owner */
};

static void on_conn_read(struct conn *c);
static void on_conn_writable(struct conn *c);
static void on_conn_error(struct conn *c, int err);

static const struct conn_events stream_events = {
    .on_read = on_conn_read,
    .on_writable = on_conn_writable,
    .on_error = on_conn_error,
};

static struct h1_upstream_stream *from_base(struct upstream_stream *b)
{
    return (struct h1_upstream_stream *)(void *)b; /* base is the first member */
}

/* ---- events ------------------------------------------------------------------- */

static void on_defer(evutil_socket_t fd, short what, void *arg);

/* Runs on_defer from the loop; the event is made in the arena the first time. */
static void defer(struct h1_upstream_stream *s)
{
    if (!s->defer) {
        s->defer = arena_alloc(s->rq->arena, event_get_struct_event_size());
        event_assign(s->defer, s->target->upstream->base, -1, 0, on_defer, s);
    }
    event_active(s->defer, EV_TIMEOUT, 0);
}

/* Calls on_head; false when the owner cancelled the stream meanwhile. */
static bool emit_head(struct h1_upstream_stream *s)
{
    bool alive = true;
    s->alive = &alive;
    s->events->on_head(s->owner);
    if (!alive)
        return false;
    s->alive = NULL;
    return true;
}

/* Calls on_body with what s->out holds; false when the owner cancelled the stream. */
static bool emit_body(struct h1_upstream_stream *s, bool last)
{
    bool alive = true;
    s->alive = &alive;
    s->events->on_body(s->owner, s->out, last);
    if (!alive)
        return false;
    s->alive = NULL;
    return true;
}

/* Lets the connection go and reports the failure (final). */
static void fail(struct h1_upstream_stream *s, enum upstream_failure why, int status,
                 const char *message)
{
    /* A reused connection that says nothing before failing was stale: safe to send again. */
    if (why == UPSTREAM_FAIL_AFTER_SEND && s->uc && s->uc->requests > 1 && !s->got_byte)
        why = UPSTREAM_FAIL_STALE;
    struct upconn *uc = s->uc;
    s->uc = NULL;
    s->state = H1C_DONE;
    if (uc)
        pool_close_conn(uc);
    s->events->on_fail(s->owner, why, status, message);
}

/* A complete response: the connection back to the pool when it can serve another one. */
static void finish(struct h1_upstream_stream *s)
{
    struct upconn *uc = s->uc;
    bool reuse = s->keepalive_ok && s->req_end && evbuffer_get_length(uc->conn.out) == 0 &&
                 evbuffer_get_length(uc->conn.in) == 0 && !uc->conn.eof;
    s->uc = NULL;
    s->state = H1C_DONE;
    if (reuse)
        pool_release(uc, s->cfg->keepalive);
    else
        pool_close_conn(uc);
    s->events->on_end(s->owner);
}

/* ---- the request --------------------------------------------------------------- */

/*
 * Serialises the request head (request line in origin-form with the
 * normalised path and the query, the fields, and the framing) into the
 * arena. Sets *chunked when the body goes chunked.
 */
static struct slice serialise(const struct upstream_request *rq, bool *chunked)
{
    const struct header_list *h = rq->headers;
    char framing[48];
    int flen = 0;
    *chunked = false;
    if (rq->has_body) {
        if (rq->length >= 0) {
            flen = snprintf(framing, sizeof framing, "Content-Length: %lld\r\n",
                            (long long)rq->length);
        } else {
            flen = snprintf(framing, sizeof framing, "Transfer-Encoding: chunked\r\n");
            *chunked = true;
        }
    } else if (slice_eq(rq->method, SLICE_LIT("POST")) || slice_eq(rq->method, SLICE_LIT("PUT")) ||
               slice_eq(rq->method, SLICE_LIT("PATCH"))) {
        /* RFC 9110 8.6: a body-carrying method without a body says so. */
        flen = snprintf(framing, sizeof framing, "Content-Length: 0\r\n");
    }
    size_t size = rq->method.len + 1 + rq->path.len + 1 + rq->query.len + 11 + (size_t)flen + 2;
    for (size_t i = 0; i < h->count; i++)
        size += h->items[i].name.len + 2 + h->items[i].value.len + 2;
    char *buf = arena_alloc(rq->arena, size);
    char *p = buf;
#define PUT(b, l)                                                                                  \
    do {                                                                                           \
        memcpy(p, (b), (l));                                                                       \
        p += (l);                                                                                  \
    } while (0)
    PUT(rq->method.base, rq->method.len);
    *p++ = ' ';
    PUT(rq->path.base, rq->path.len);
    if (rq->has_query) {
        *p++ = '?';
        PUT(rq->query.base, rq->query.len);
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

/* Makes `uc` the stream's connection, its events ours. */
static void attach(struct h1_upstream_stream *s, struct upconn *uc)
{
    s->uc = uc;
    uc->user = s;
    uc->conn.events = &stream_events;
    uc->conn.owner = uc;
}

/* Queues the request head; the owner's first send_body writes it out. */
static void send_request(struct h1_upstream_stream *s)
{
    struct upconn *uc = s->uc;
    uc->requests++;
    s->state = H1C_WAIT_HEAD;
    s->got_byte = false;
    s->req_end = false;
    evbuffer_add(uc->conn.out, s->head.base, s->head.len);
}

/* Opens a new connection to the target. Returns 0, or -1 when no socket could be made. */
static int start_connect(struct h1_upstream_stream *s)
{
    struct target *t = s->target;
    struct upconn *uc = pool_new_conn(&t->pool, t);
    attach(s, uc);
    s->state = H1C_CONNECTING;
    if (conn_connect(&uc->conn, t->upstream->base, (const struct sockaddr *)&t->addr, t->addrlen,
                     &stream_events, uc) < 0) {
        s->uc = NULL;
        pool_close_conn(uc);
        return -1;
    }
    /* With "tls" the handshake runs after the connect; on_writable comes after both. */
    if (s->cfg->tls && target_tls_start(&uc->conn, s->cfg->tls, t) < 0) {
        s->setup_err = "cannot set up TLS to the upstream";
        defer(s);
    }
    return 0;
}

/*
 * Puts the stream on an idle connection, a new one, or in the pool's queue.
 * Returns the phase reached, or -1 when no socket could be made.
 */
static int place(struct h1_upstream_stream *s)
{
    struct pool *pool = &s->target->pool;
    struct upconn *uc = pool_take_idle(pool);
    if (uc) {
        attach(s, uc);
        send_request(s);
        return UPSTREAM_SENT;
    }
    if (!pool_may_open(pool, s->cfg->max_connections)) {
        s->state = H1C_QUEUED;
        pool_wait(pool, &s->waiter);
        return UPSTREAM_QUEUED;
    }
    if (start_connect(s) < 0)
        return -1;
    return UPSTREAM_CONNECTING;
}

/* The pool answered a queued stream, from inside another stream's release: act from the loop. */
static void on_slot(struct pool_waiter *w, bool ok)
{
    struct h1_upstream_stream *s = container_of(w, struct h1_upstream_stream, waiter);
    s->want_slot = true;
    s->slot_ok = ok;
    defer(s);
}

static struct upstream_stream *h1_open(struct target *t, const struct upstream_config *cfg,
                                       const struct upstream_request *rq,
                                       struct upstream_response *resp,
                                       const struct upstream_events *events, void *owner,
                                       enum upstream_phase *phase)
{
    struct h1_upstream_stream *s = arena_calloc(rq->arena, sizeof *s);
    s->base.ops = &http1_client_codec;
    s->rq = rq;
    s->resp = resp;
    s->events = events;
    s->owner = owner;
    s->target = t;
    s->cfg = cfg;
    s->waiter.on_slot = on_slot;
    s->head = serialise(rq, &s->chunked);
    s->out = conn_buffer_get(); /* pooled: no allocation per request */
    int reached = place(s);
    if (reached < 0) {
        conn_buffer_put(s->out);
        s->out = NULL;
        s->state = H1C_DONE;
        return NULL;
    }
    *phase = (enum upstream_phase)reached;
    return &s->base;
}

static void h1_send_body(struct upstream_stream *b, struct evbuffer *data, bool end)
{
    struct h1_upstream_stream *s = from_base(b);
    if (!s->uc || s->state < H1C_WAIT_HEAD || s->req_end || s->write_err)
        return;
    struct evbuffer *out = s->uc->conn.out;
    size_t len = evbuffer_get_length(data);
    if (len && s->chunked) {
        char size[20];
        int n = snprintf(size, sizeof size, "%zx\r\n", len);
        evbuffer_add(out, size, (size_t)n);
        evbuffer_add_buffer(out, data);
        evbuffer_add(out, "\r\n", 2);
    } else if (len) {
        evbuffer_add_buffer(out, data);
    }
    if (end) {
        if (s->chunked)
            evbuffer_add(out, "0\r\n\r\n", 5);
        s->req_end = true;
    }
    if (conn_flush(&s->uc->conn) < 0) {
        /* Reported from the loop: the owner is on the stack. */
        s->write_err = errno ? errno : EPIPE;
        defer(s);
    }
}

static size_t h1_body_pending(const struct upstream_stream *b)
{
    const struct h1_upstream_stream *s = (const struct h1_upstream_stream *)(const void *)b;
    return s->uc ? evbuffer_get_length(s->uc->conn.out) : 0;
}

/* ---- the response -------------------------------------------------------------- */

/* Moves body bytes from the connection to s->out. Returns 1 when complete, 0, or -1 invalid. */
static int move_body(struct h1_upstream_stream *s)
{
    struct evbuffer *in = s->uc->conn.in;
    switch (s->framing) {
    case HTTP1_BODY_NONE:
        return 1;
    case HTTP1_BODY_LENGTH: {
        size_t take = evbuffer_get_length(in);
        if (take > s->left)
            take = (size_t)s->left;
        evbuffer_remove_buffer(in, s->out, take);
        s->left -= take;
        return s->left == 0;
    }
    case HTTP1_BODY_CHUNKED:
        while (evbuffer_get_length(in) > 0 && !http1_chunked_done(&s->dec)) {
            struct evbuffer_iovec seg;
            if (evbuffer_peek(in, -1, NULL, &seg, 1) < 1)
                break;
            struct slice data = {0};
            ssize_t used = http1_chunked_decode(&s->dec, seg.iov_base, seg.iov_len, &data);
            if (used < 0)
                return -1;
            if (data.len) {
                evbuffer_drain(in, (size_t)(data.base - (const char *)seg.iov_base));
                evbuffer_remove_buffer(in, s->out, data.len);
            } else {
                evbuffer_drain(in, (size_t)used);
                if (used == 0)
                    break;
            }
        }
        return http1_chunked_done(&s->dec);
    case HTTP1_BODY_CLOSE:
        evbuffer_add_buffer(s->out, in);
        return s->uc->conn.eof;
    }
    return 0;
}

/* Hands over what move_body() gathered (`done`: its result), then ends or waits. */
static void deliver(struct h1_upstream_stream *s, int done)
{
    if (done < 0) {
        fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream sent an invalid chunked body");
        return;
    }
    /* An empty body event still lets the owner flush the head and arm its timer. */
    if ((evbuffer_get_length(s->out) || !done) && !emit_body(s, done))
        return;
    if (done) {
        finish(s);
        return;
    }
    if (s->uc->conn.eof)
        fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream closed the connection mid-body");
}

/*
 * The upstream accepted a WebSocket upgrade: the head (Upgrade and
 * Connection: upgrade kept) goes to the owner, and from now on the
 * connection carries raw bytes for the owner's tunnel (tunnel_conn); bytes
 * after the head stay in its input.
 */
static void upgraded(struct h1_upstream_stream *s, const char *buf, int r,
                     const struct http1_response_head *rs)
{
    struct upstream_response *resp = s->resp;
    struct arena *a = s->rq->arena;
    char *copy = arena_alloc(a, (size_t)r);
    memcpy(copy, buf, (size_t)r);
    ptrdiff_t shift = copy - buf;
    struct header *fields = arena_alloc(a, (rs->num_headers + 8) * sizeof *fields);
    for (size_t i = 0; i < rs->num_headers; i++) {
        fields[i].name = slice_make(rs->headers[i].name.base + shift, rs->headers[i].name.len);
        fields[i].value = slice_make(rs->headers[i].value.base + shift, rs->headers[i].value.len);
    }
    header_list_wrap(&resp->headers, a, fields, rs->num_headers);
    resp->headers.cap = rs->num_headers + 8;
    fields_remove_hop_by_hop(&resp->headers, true);
    header_remove(&resp->headers, SLICE_LIT("Content-Length"));
    evbuffer_drain(s->uc->conn.in, (size_t)r);
    resp->status = 101;
    resp->length = -1;
    s->state = H1C_TUNNEL;
    s->keepalive_ok = false;
    if (s->defer)
        event_del(s->defer);
    emit_head(s);
}

/* Parses the response head and goes on with the body that came with it. */
static void read_head(struct h1_upstream_stream *s)
{
    struct evbuffer *in = s->uc->conn.in;
    struct upstream_response *resp = s->resp;
    struct arena *a = s->rq->arena;
    for (;;) {
        size_t have = evbuffer_get_length(in);
        if (have == 0)
            break;
        s->got_byte = true;
        size_t look = have < H1C_MAX_HEAD ? have : H1C_MAX_HEAD;
        const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)look);
        struct http1_response_head rs;
        struct header scratch[H1C_MAX_FIELDS];
        int r = http1_parse_response(buf, look, &rs, scratch, H1C_MAX_FIELDS);
        if (r == HTTP1_PARTIAL && look < H1C_MAX_HEAD)
            break;
        if (r < 0) {
            fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream sent an invalid response");
            return;
        }
        if (rs.status == 101 && s->rq->upgrade) {
            upgraded(s, buf, r, &rs);
            return;
        }
        if (rs.status >= 100 && rs.status < 200) {
            /* Interim responses are not forwarded (Expect is answered by the gateway). */
            if (rs.status == 101) {
                fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream switched protocols unasked");
                return;
            }
            evbuffer_drain(in, (size_t)r);
            continue;
        }
        enum http1_framing framing;
        uint64_t length = 0;
        bool head_req = slice_eq(s->rq->method, SLICE_LIT("HEAD"));
        if (http1_response_framing(rs.status, head_req, rs.headers, rs.num_headers, &framing,
                                   &length) < 0) {
            fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream's response framing is invalid");
            return;
        }
        /* The head is copied into the arena: the buffer moves on to the body. */
        char *copy = arena_alloc(a, (size_t)r);
        memcpy(copy, buf, (size_t)r);
        ptrdiff_t shift = copy - buf;
        struct header *fields = arena_alloc(a, (rs.num_headers + 8) * sizeof *fields);
        for (size_t i = 0; i < rs.num_headers; i++) {
            fields[i].name = slice_make(rs.headers[i].name.base + shift, rs.headers[i].name.len);
            fields[i].value = slice_make(rs.headers[i].value.base + shift, rs.headers[i].value.len);
        }
        header_list_wrap(&resp->headers, a, fields, rs.num_headers);
        resp->headers.cap = rs.num_headers + 8;
        s->keepalive_ok =
            framing != HTTP1_BODY_CLOSE &&
            (rs.minor_version == 1
                 ? !header_has_token(&resp->headers, SLICE_LIT("Connection"), SLICE_LIT("close"))
                 : header_has_token(&resp->headers, SLICE_LIT("Connection"),
                                    SLICE_LIT("keep-alive")));
        fields_remove_hop_by_hop(&resp->headers, false);
        evbuffer_drain(in, (size_t)r);
        resp->status = rs.status;
        s->framing = framing;
        s->left = length;
        http1_chunked_init(&s->dec);
        if (framing == HTTP1_BODY_LENGTH) {
            resp->length = (int64_t)length;
        } else if (framing != HTTP1_BODY_NONE) {
            header_remove(&resp->headers, SLICE_LIT("Content-Length"));
            resp->length = -1;
        } else {
            const struct slice *cl = header_get(&resp->headers, SLICE_LIT("Content-Length"));
            resp->length = cl ? 0 : -1;
        }
        s->state = H1C_BODY;
        /*
         * The body bytes that came with the head are decoded before the head
         * is announced: when they are already invalid, the whole response
         * fails and the client gets a 502 rather than a head and a cut body.
         */
        int done = move_body(s);
        if (done < 0) {
            fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream sent an invalid chunked body");
            return;
        }
        if (!emit_head(s))
            return;
        deliver(s, done);
        return;
    }
    if (s->uc->conn.eof)
        fail(s, UPSTREAM_FAIL_AFTER_SEND, 502,
             s->got_byte ? "the upstream closed mid-head" : "the upstream closed the connection");
}

static void on_input(struct h1_upstream_stream *s)
{
    if (s->state == H1C_TUNNEL)
        return; /* the tunnel reads the connection now */
    if (s->state == H1C_WAIT_HEAD)
        read_head(s);
    else if (s->state == H1C_BODY && !s->paused)
        deliver(s, move_body(s));
}

static void h1_pause(struct upstream_stream *b, bool pause)
{
    struct h1_upstream_stream *s = from_base(b);
    s->paused = pause;
    if (!s->uc)
        return;
    conn_read_enable(&s->uc->conn, !pause);
    /* Input that arrived before (or a body a splice completed) is handled from the loop. */
    if (!pause && s->state == H1C_BODY &&
        (evbuffer_get_length(s->uc->conn.in) > 0 || s->uc->conn.eof ||
         (s->framing == HTTP1_BODY_LENGTH && s->left == 0))) {
        s->want_read = true;
        defer(s);
    }
}

static void h1_cancel(struct upstream_stream *b)
{
    struct h1_upstream_stream *s = from_base(b);
    if (s->alive) {
        *s->alive = false;
        s->alive = NULL;
    }
    pool_unwait(&s->target->pool, &s->waiter);
    if (s->defer)
        event_del(s->defer);
    struct upconn *uc = s->uc;
    s->uc = NULL;
    s->state = H1C_DONE;
    if (uc)
        pool_close_conn(uc);
    if (s->out)
        conn_buffer_put(s->out);
    s->out = NULL;
}

/* ---- connection events ------------------------------------------------------------ */

static void conn_failed(struct h1_upstream_stream *s, int err)
{
    if (s->state == H1C_CONNECTING && s->uc->conn.tls_failed) {
        char why[256];
        tls_describe_failure(&s->uc->conn, why, sizeof why);
        log_warn("upstream %s: TLS handshake with %s failed: %s", s->cfg->name, s->target->name,
                 why);
        fail(s, UPSTREAM_FAIL_CONNECT, 502, "the TLS handshake with the upstream failed");
        return;
    }
    if (s->state == H1C_CONNECTING) {
        fail(s, UPSTREAM_FAIL_CONNECT, 502, "the upstream refused the connection");
        return;
    }
    fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream reset the connection");
}

static void on_conn_read(struct conn *c)
{
    struct upconn *uc = c->owner;
    on_input(uc->user);
}

static void on_conn_writable(struct conn *c)
{
    struct upconn *uc = c->owner;
    struct h1_upstream_stream *s = uc->user;
    if (s->state == H1C_CONNECTING) {
        send_request(s);
        s->events->on_phase(s->owner, UPSTREAM_SENT);
        return;
    }
    /* The upstream took what we sent: the owner may hand over more body. */
    s->events->on_body_drained(s->owner);
}

static void on_conn_error(struct conn *c, int err)
{
    struct upconn *uc = c->owner;
    conn_failed(uc->user, err);
}

static void on_defer(evutil_socket_t fd, short what, void *arg)
{
    struct h1_upstream_stream *s = arg;
    if (s->state == H1C_DONE || s->state == H1C_TUNNEL)
        return;
    if (s->want_slot) {
        s->want_slot = false;
        if (!s->slot_ok) {
            s->state = H1C_DONE;
            s->events->on_fail(s->owner, UPSTREAM_FAIL_GONE, 503, "the upstream went away");
            return;
        }
        int reached = place(s);
        if (reached < 0)
            fail(s, UPSTREAM_FAIL_CONNECT, 502, "cannot create a socket to the upstream");
        else if (reached != UPSTREAM_QUEUED)
            s->events->on_phase(s->owner, (enum upstream_phase)reached);
        return;
    }
    if (s->setup_err) {
        fail(s, UPSTREAM_FAIL_CONNECT, 502, s->setup_err);
        return;
    }
    if (s->write_err) {
        conn_failed(s, s->write_err);
        return;
    }
    if (s->want_read) {
        s->want_read = false;
        on_input(s);
    }
}

/* ---- splice access ------------------------------------------------------------------ */

static int h1_request_splice_fd(struct upstream_stream *b)
{
    struct h1_upstream_stream *s = from_base(b);
    if (!s->uc || s->uc->conn.ssl || s->chunked || s->req_end || s->state < H1C_WAIT_HEAD ||
        s->write_err || evbuffer_get_length(s->uc->conn.out) > 0)
        return -1;
    return s->uc->conn.fd;
}

static void h1_request_spliced(struct upstream_stream *b)
{
    from_base(b)->req_end = true;
}

static int h1_response_splice_fd(struct upstream_stream *b, uint64_t *left)
{
    struct h1_upstream_stream *s = from_base(b);
    if (!s->uc || s->uc->conn.ssl || s->state != H1C_BODY || s->framing != HTTP1_BODY_LENGTH ||
        evbuffer_get_length(s->uc->conn.in) > 0 || s->uc->conn.eof)
        return -1;
    *left = s->left;
    return s->uc->conn.fd;
}

static void h1_response_spliced(struct upstream_stream *b, uint64_t n)
{
    struct h1_upstream_stream *s = from_base(b);
    s->left -= n <= s->left ? n : s->left;
}

static struct conn *h1_tunnel_conn(struct upstream_stream *b)
{
    struct h1_upstream_stream *s = from_base(b);
    if (s->state != H1C_TUNNEL || !s->uc)
        return NULL;
    struct upconn *uc = s->uc;
    s->uc = NULL; /* the caller's now: cancel() leaves it alone */
    return &uc->conn;
}

const struct upstream_codec_ops http1_client_codec = {
    .name = "http/1.1",
    .te_trailers = false,
    .head_then_body = true,
    .open = h1_open,
    .send_body = h1_send_body,
    .body_pending = h1_body_pending,
    .pause = h1_pause,
    .cancel = h1_cancel,
    .request_splice_fd = h1_request_splice_fd,
    .request_spliced = h1_request_spliced,
    .response_splice_fd = h1_response_splice_fd,
    .response_spliced = h1_response_spliced,
    .tunnel_conn = h1_tunnel_conn,
};
