/*
 * http2_client: upstream HTTP/2 sessions and streams (see the header).
 *
 * Re-entrancy: the session's bytes move only from its own loop callbacks
 * (read, writable, the `kick` event, the connect timer), each bracketed by
 * enter()/leave(). Anything a stream's user asks for from elsewhere (a new
 * request, body, a reset, window credit) is queued in nghttp2 and `kick`
 * is activated, so no stream event ever runs inside the user's own call. A
 * session is freed only in leave() once nothing of it is on the stack.
 *
 * nghttp2 never holds a pointer to a stream: the callbacks find the stream
 * by id in the session's list, and a detached stream is not in it. So an
 * exchange freed in the middle of a callback (its response ended) leaves
 * nothing dangling, whatever frames are still queued for its stream id.
 */
#include "upstream/http2_client.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "base/arena.h"
#include "base/blockpool.h"
#include "conf/config.h"
#include "net/conn.h"
#include "base/header.h"
#include "base/log.h"
#include "upstream/pool.h"
#include "net/tls.h"
#include "upstream/codec.h"
#include "upstream/upstream.h"
#include "proto/fields.h"

/* Our stream window: what one stream may have in flight toward a slow client. */
#define H2C_STREAM_WINDOW (256 * 1024)
/* Our connection window; given back as DATA arrives, so it only bounds a burst. */
#define H2C_CONN_WINDOW (4 * 1024 * 1024)
/* Streams assumed allowed before any SETTINGS from the target arrived (RFC 9113 6.5.2). */
#define H2C_INITIAL_STREAMS 100
/* A response head (or trailer block) larger than this is refused: 502. */
#define H2C_MAX_HEAD (64 * 1024)

struct h2_session {
    struct conn conn;
    struct pool *pool;                 /* NULL once dead (the pool may be gone) */
    const struct upstream_config *cfg; /* NULL once dead */
    struct target *target;
    struct h2_session *next; /* pool->h2 links */
    struct h2_session *prev;
    nghttp2_session *ng;
    struct event *kick;                 /* flushes queued frames from the loop */
    struct event *timer;                /* connect timeout */
    struct h2_upstream_stream *streams; /* attached streams */
    unsigned num_streams;
    unsigned long frames_in; /* frames received so far */
    unsigned long ended;     /* streams that completed on it */
    int busy;                /* callbacks of this session on the stack */
    bool connected;          /* the TCP connect completed */
    bool settled;            /* the upstream's first SETTINGS arrived */
    bool goaway;             /* no new streams: GOAWAY seen, or ids exhausted */
    bool dead;               /* failed or retired: freed once busy is 0 */
};

struct h2_upstream_stream {
    struct upstream_stream base; /* first: the codec's ops */
    struct h2_session *session;  /* NULL once detached */
    struct h2_upstream_stream *next;
    struct h2_upstream_stream *prev;
    const struct upstream_request *rq;
    struct upstream_response *resp;
    const struct upstream_events *events;
    void *owner;
    int32_t id;                /* 0 until submitted */
    struct evbuffer *body;     /* request body not framed yet */
    struct evbuffer *data;     /* response body on its way to the owner */
    struct header_list fields; /* the header block being received */
    size_t field_bytes;
    size_t unconsumed;   /* stream window credit held back while paused */
    unsigned long heard; /* session->frames_in when the request HEADERS went out */
    int status;
    bool has_body;  /* submitted with a data provider */
    bool body_end;  /* the request body is complete */
    bool deferred;  /* the data provider waits for body */
    bool drained;   /* the body buffer emptied: tell the owner after sending */
    bool refused;   /* the request could not be submitted */
    bool sent;      /* the request HEADERS went out */
    bool queued;    /* over the upstream's stream limit at the cap: UPSTREAM_QUEUED told */
    bool head_done; /* the final response head arrived */
    bool paused;
    bool closed; /* nghttp2 closed or never opened it: no RST_STREAM */
};

static void session_fail(struct h2_session *s, enum upstream_failure why, int status,
                         const char *message);
static void close_sessions(struct pool *p);

/* ---- sessions: bookkeeping -------------------------------------------------- */

static void enter(struct h2_session *s)
{
    s->busy++;
}

static void session_free(struct h2_session *s)
{
    nghttp2_session_del(s->ng);
    conn_close(&s->conn);
    if (s->kick)
        event_free(s->kick);
    if (s->timer)
        event_free(s->timer);
    free(s);
}

static void schedule(struct h2_session *s)
{
    if (!s->dead)
        event_active(s->kick, EV_TIMEOUT, 0);
}

static struct h2_upstream_stream *find(const struct h2_session *s, int32_t id)
{
    for (struct h2_upstream_stream *st = s->streams; st; st = st->next)
        if (st->id == id)
            return st;
    return NULL;
}

static void attach(struct h2_session *s, struct h2_upstream_stream *st)
{
    st->session = s;
    st->prev = NULL;
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
    s->num_streams++;
}

static void detach(struct h2_upstream_stream *st)
{
    struct h2_session *s = st->session;
    if (!s)
        return;
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->next = st->prev = NULL;
    st->session = NULL;
    s->num_streams--;
}

/* Takes a session out of its pool: no new stream will choose it. */
static void unlink_from_pool(struct h2_session *s)
{
    struct pool *p = s->pool;
    if (!p)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        p->h2 = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    pool_count_open(p, -1);
    s->pool = NULL;
    s->cfg = NULL;
}

/* An idle session goes when it can take no stream, or when enough others are idle. */
static bool retire_idle(const struct h2_session *s)
{
    if (s->goaway || !s->connected)
        return s->goaway;
    if (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng))
        return true;
    int idle = 0;
    for (const struct h2_session *o = s->pool->h2; o; o = o->next)
        if (o != s && o->num_streams == 0)
            idle++;
    return idle >= s->cfg->keepalive;
}

static void leave(struct h2_session *s)
{
    if (--s->busy > 0)
        return;
    if (!s->dead && s->num_streams == 0 && retire_idle(s)) {
        /* Say goodbye (best effort), then close. */
        nghttp2_session_terminate_session(s->ng, NGHTTP2_NO_ERROR);
        const uint8_t *data;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(s->ng, &data)) > 0)
            evbuffer_add(s->conn.out, data, (size_t)n);
        conn_flush(&s->conn);
        session_fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream connection closed");
    }
    if (s->dead)
        session_free(s);
}

/* ---- sending ------------------------------------------------------------------ */

static ssize_t on_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *user)
{
    struct h2_upstream_stream *st = find(user, id);
    if (!st)
        return NGHTTP2_ERR_DEFERRED; /* detached: a reset is on its way */
    size_t have = evbuffer_get_length(st->body);
    if (have == 0 && !st->body_end) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = have < length ? have : length;
    if (n)
        evbuffer_remove(st->body, buf, n);
    if (evbuffer_get_length(st->body) == 0) {
        if (st->body_end)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        else
            st->drained = true;
    }
    return (ssize_t)n;
}

/* RFC 9113 8.2.2: connection-specific fields never go on HTTP/2; TE only as "trailers". */
static bool forbidden_field(const struct header *f)
{
    /* RFC 9113 8.2.2 through the one field table, plus what this codec writes itself. */
    if (fields_h2_connection_specific(f->name, f->value, true))
        return true;
    return slice_ieq(f->name, SLICE_LIT("host")) ||
           slice_ieq(f->name, SLICE_LIT("content-length")) ||
           slice_ieq(f->name, SLICE_LIT("http2-settings"));
}

static nghttp2_nv make_nv(struct slice name, struct slice value)
{
    nghttp2_nv nv = {(uint8_t *)name.base, (uint8_t *)value.base, name.len, value.len,
                     NGHTTP2_NV_FLAG_NONE};
    return nv;
}

/* Submits the request HEADERS (nghttp2 copies the fields). */
static void submit(struct h2_session *s, struct h2_upstream_stream *st)
{
    const struct upstream_request *rq = st->rq;
    const struct header_list *h = rq->headers;
    nghttp2_nv *nva = arena_alloc(rq->arena, (h->count + 6) * sizeof *nva);
    size_t n = 0;
    struct slice path = rq->path;
    if (rq->has_query) {
        struct slice parts[3] = {rq->path, SLICE_LIT("?"), rq->query};
        path = arena_concat(rq->arena, parts, 3);
    }
    const struct slice *host = header_get(h, SLICE_LIT("Host"));
    struct slice authority = host ? *host : rq->host;
    if (!authority.len)
        authority = slice_cstr(st->session->target->name);
    nva[n++] = make_nv(SLICE_LIT(":method"), rq->method);
    nva[n++] = make_nv(SLICE_LIT(":scheme"), s->conn.ssl ? SLICE_LIT("https") : SLICE_LIT("http"));
    nva[n++] = make_nv(SLICE_LIT(":authority"), authority);
    nva[n++] = make_nv(SLICE_LIT(":path"), path);
    for (size_t i = 0; i < h->count; i++) {
        if (forbidden_field(&h->items[i]))
            continue;
        /* nghttp2 lower-cases the names as it copies them (RFC 9113 8.2.1). */
        nva[n] = make_nv(h->items[i].name, h->items[i].value);
        /* A value new on every request would only churn the HPACK table. */
        if (slice_ieq(h->items[i].name, SLICE_LIT("X-Request-Id")))
            nva[n].flags = NGHTTP2_NV_FLAG_NO_INDEX;
        n++;
    }
    /* RFC 9113 8.2.2: HTTP/2 carries TE only as "trailers", which gRPC requires. */
    if (rq->te_trailers)
        nva[n++] = make_nv(SLICE_LIT("te"), SLICE_LIT("trailers"));
    char length[24];
    if (st->has_body && rq->length >= 0) {
        int len = snprintf(length, sizeof length, "%lld", (long long)rq->length);
        nva[n++] = make_nv(SLICE_LIT("content-length"), slice_make(length, (size_t)len));
    }
    nghttp2_data_provider provider = {.source.ptr = NULL, .read_callback = on_read_body};
    int32_t id = nghttp2_submit_request(s->ng, NULL, nva, n, st->has_body ? &provider : NULL, NULL);
    if (id < 0) {
        /* Stream ids exhausted or out of memory: this connection takes no more. */
        st->refused = true;
        s->goaway = true;
        return;
    }
    st->id = id;
}

/* Frames what nghttp2 has queued into the connection and writes it. */
static void flush(struct h2_session *s)
{
    if (s->dead || !s->connected)
        return;
    /* Requests that could not be submitted fail from here, where it is safe. */
    for (struct h2_upstream_stream *st = s->streams, *next; st; st = next) {
        next = st->next;
        if (st->refused) {
            detach(st);
            st->closed = true;
            st->events->on_fail(st->owner, UPSTREAM_FAIL_STALE, 502,
                                "the upstream connection takes no more streams");
            next = s->streams; /* the owner may have closed others */
        }
    }
    while (evbuffer_get_length(s->conn.out) < UPSTREAM_HIGH_WATER) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(s->ng, &data);
        if (n < 0) {
            session_fail(s, UPSTREAM_FAIL_AFTER_SEND, 502,
                         "the HTTP/2 session to the upstream failed");
            return;
        }
        if (n == 0)
            break;
        evbuffer_add(s->conn.out, data, (size_t)n);
    }
    if (s->dead)
        return;
    /* Queued requests whose HEADERS just went out (on_frame_send) now wait for the head. */
    for (struct h2_upstream_stream *st = s->streams, *next; st; st = next) {
        next = st->next;
        if (st->queued && st->sent) {
            st->queued = false;
            st->events->on_phase(st->owner, UPSTREAM_SENT);
            if (s->dead)
                return;
            next = s->streams; /* the owner may have closed others */
        }
    }
    if (conn_flush(&s->conn) < 0) {
        session_fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream reset the connection");
        return;
    }
    /* Owners whose body was all framed may let their client send more. */
    for (struct h2_upstream_stream *st = s->streams, *next; st; st = next) {
        next = st->next;
        if (st->drained) {
            st->drained = false;
            st->events->on_body_drained(st->owner);
            next = s->streams;
        }
    }
}

/* ---- receiving ---------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct h2_upstream_stream *st = find(user, frame->hd.stream_id);
    if (!st || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    header_list_init(&st->fields, st->rq->arena, 16);
    st->field_bytes = 0;
    st->status = 0;
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, nghttp2_rcbuf *name_buf,
                     nghttp2_rcbuf *value_buf, uint8_t flags, void *user)
{
    struct h2_upstream_stream *st = find(user, frame->hd.stream_id);
    if (!st || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    nghttp2_vec nv = nghttp2_rcbuf_get_buf(name_buf), vv = nghttp2_rcbuf_get_buf(value_buf);
    const uint8_t *name = nv.base, *value = vv.base;
    size_t namelen = nv.len, valuelen = vv.len;
    st->field_bytes += namelen + valuelen + 32;
    if (st->field_bytes > H2C_MAX_HEAD)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (namelen && name[0] == ':') {
        /* nghttp2 checked the pseudo-fields (RFC 9113 8.3.2): :status is 3 digits. */
        if (namelen == 7 && memcmp(name, ":status", 7) == 0 && valuelen == 3)
            st->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
        return 0;
    }
    struct arena *a = st->rq->arena;
    /* The decoder's buffers go away after this call: the fields are copied, except a
     * name from HPACK's static table, which is static memory. */
    struct slice n = slice_make((const char *)name, namelen);
    header_add(&st->fields, nghttp2_rcbuf_is_static(name_buf) ? n : arena_slice_dup(a, n),
               arena_slice_dup(a, slice_make((const char *)value, valuelen)));
    return 0;
}

static int64_t content_length(const struct header_list *h)
{
    const struct slice *v = header_get(h, SLICE_LIT("content-length"));
    if (!v || v->len == 0 || v->len > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < v->len; i++) {
        if (v->base[i] < '0' || v->base[i] > '9')
            return -1;
        n = n * 10 + (v->base[i] - '0');
    }
    return n;
}

/*
 * A gRPC "Trailers-Only" response is one HEADERS frame ending the stream. Its
 * grpc-* status fields are trailers: moved there, so that an HTTP/1.1 client
 * gets them in the last chunk and an HTTP/2 client in a trailing HEADERS.
 */
static void split_trailers_only(struct upstream_response *resp)
{
    static const struct slice names[] = {SLICE_LIT("grpc-status"), SLICE_LIT("grpc-message"),
                                         SLICE_LIT("grpc-status-details-bin")};
    if (!header_get(&resp->headers, names[0]))
        return;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        long k = -1;
        while ((k = header_find(&resp->headers, names[i], (size_t)(k + 1))) >= 0)
            header_add(&resp->trailers, resp->headers.items[k].name, resp->headers.items[k].value);
        header_remove(&resp->headers, names[i]);
    }
}

/* The response ended (END_STREAM): detach, then tell the owner (who frees the exchange). */
static void finish(struct h2_session *s, struct h2_upstream_stream *st)
{
    detach(st);
    s->ended++;
    /* A response complete before our request body (RFC 9113 8.1): stop sending it. */
    if (!nghttp2_session_get_stream_local_close(s->ng, st->id))
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    st->closed = true;
    st->events->on_end(st->owner);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct h2_session *s = user;
    int32_t id = frame->hd.stream_id;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    struct h2_upstream_stream *st;
    s->frames_in++;
    switch (frame->hd.type) {
    case NGHTTP2_GOAWAY:
        s->goaway = true;
        return 0;
    case NGHTTP2_SETTINGS:
        s->settled = true;
        return 0;
    case NGHTTP2_DATA:
        st = find(s, id);
        if (st && end && st->head_done)
            finish(s, st);
        return 0;
    case NGHTTP2_HEADERS:
        break;
    default:
        return 0;
    }
    st = find(s, id);
    if (!st)
        return 0;
    struct upstream_response *resp = st->resp;
    if (st->head_done) {
        /* Trailer fields (RFC 9113 8.1); nghttp2 made sure END_STREAM is set. */
        resp->trailers = st->fields;
    } else {
        /* Interim responses are not forwarded (as for HTTP/1 upstreams). */
        if (st->status < 200)
            return 0;
        st->head_done = true;
        resp->status = st->status;
        resp->headers = st->fields;
        resp->length = content_length(&resp->headers);
        if (end)
            split_trailers_only(resp);
        st->events->on_head(st->owner);
        /* The owner may have given up on the stream: look again. */
        st = find(s, id);
        if (!st)
            return 0;
    }
    if (end)
        finish(s, st);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    struct h2_session *s = user;
    /* The connection window is given back at once: one slow stream must not stall the rest. */
    nghttp2_session_consume_connection(ng, len);
    struct h2_upstream_stream *st = find(s, id);
    if (!st || !st->head_done) {
        nghttp2_session_consume_stream(ng, id, len);
        return 0;
    }
    evbuffer_add(st->data, data, len);
    st->events->on_body(st->owner, st->data, false);
    st = find(s, id);
    if (st && st->paused)
        st->unconsumed += len;
    else
        nghttp2_session_consume_stream(ng, id, len);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *user)
{
    struct h2_upstream_stream *st = find(user, id);
    if (!st)
        return 0;
    detach(st);
    st->closed = true;
    if (error_code == NGHTTP2_REFUSED_STREAM)
        st->events->on_fail(st->owner, UPSTREAM_FAIL_STALE, 502, "the upstream refused the stream");
    else
        st->events->on_fail(st->owner, UPSTREAM_FAIL_AFTER_SEND, 502,
                            "the upstream reset the stream");
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_session *s = user;
    struct h2_upstream_stream *st = find(s, frame->hd.stream_id);
    if (st) {
        st->sent = true;
        st->heard = s->frames_in;
    }
    return 0;
}

static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *frame, int lib_error,
                             void *user)
{
    struct h2_session *s = user;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_upstream_stream *st = find(s, frame->hd.stream_id);
    if (!st || st->sent)
        return 0;
    /* Never sent (the connection is going away): any method may go elsewhere. */
    s->goaway = true;
    detach(st);
    st->closed = true;
    st->events->on_fail(st->owner, UPSTREAM_FAIL_STALE, 502, "the upstream connection is closing");
    return 0;
}

/* ---- connection events -------------------------------------------------------- */

static bool alpn_is_h2(const struct conn *c)
{
    const unsigned char *proto = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(c->ssl, &proto, &len);
    return len == 2 && memcmp(proto, "h2", 2) == 0;
}

static void on_conn_read(struct conn *c)
{
    struct h2_session *s = c->owner;
    enter(s);
    while (!s->dead && evbuffer_get_length(c->in) > 0) {
        struct evbuffer_iovec seg;
        if (evbuffer_peek(c->in, -1, NULL, &seg, 1) < 1)
            break;
        ssize_t rv = nghttp2_session_mem_recv(s->ng, seg.iov_base, seg.iov_len);
        if (rv < 0) {
            session_fail(s, UPSTREAM_FAIL_AFTER_SEND, 502,
                         "the upstream broke the HTTP/2 protocol");
            break;
        }
        evbuffer_drain(c->in, seg.iov_len);
    }
    if (!s->dead && c->eof)
        session_fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream closed the connection");
    flush(s);
    leave(s);
}

static void on_conn_writable(struct conn *c)
{
    struct h2_session *s = c->owner;
    enter(s);
    if (!s->connected) {
        s->connected = true;
        event_del(s->timer);
        /* Over TLS, HTTP/2 is only what ALPN agreed on (RFC 9113 3.2). */
        if (c->ssl && !alpn_is_h2(c)) {
            log_warn("upstream %s: %s did not select \"h2\" by ALPN", s->cfg->name,
                     s->target->name);
            session_fail(s, UPSTREAM_FAIL_CONNECT, 502,
                         "the upstream does not offer HTTP/2 (ALPN)");
            leave(s);
            return;
        }
        for (struct h2_upstream_stream *st = s->streams, *next; st; st = next) {
            next = st->next;
            if (st->id == 0 && !st->refused) {
                submit(s, st);
                st->events->on_phase(st->owner, UPSTREAM_SENT);
            }
        }
    }
    flush(s);
    leave(s);
}

static void on_conn_error(struct conn *c, int err)
{
    struct h2_session *s = c->owner;
    enter(s);
    if (s->connected) {
        session_fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream reset the connection");
    } else if (c->tls_failed) {
        char why[256];
        tls_describe_failure(c, why, sizeof why);
        log_warn("upstream %s: TLS handshake with %s failed: %s", s->cfg->name, s->target->name,
                 why);
        session_fail(s, UPSTREAM_FAIL_CONNECT, 502, "the TLS handshake with the upstream failed");
    } else {
        session_fail(s, UPSTREAM_FAIL_CONNECT, 502, "the upstream refused the connection");
    }
    leave(s);
}

static const struct conn_events session_events = {
    .on_read = on_conn_read,
    .on_writable = on_conn_writable,
    .on_error = on_conn_error,
};

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct h2_session *s = arg;
    enter(s);
    flush(s);
    leave(s);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct h2_session *s = arg;
    enter(s);
    session_fail(s, UPSTREAM_FAIL_CONNECT, 504, "connecting to the upstream timed out");
    leave(s);
}

/*
 * Marks the session dead, takes it out of its pool and fails every stream on
 * it. The session itself is freed by leave() (or by the caller when nothing
 * of it is on the stack).
 */
static void session_fail(struct h2_session *s, enum upstream_failure why, int status,
                         const char *message)
{
    if (s->dead)
        return;
    s->dead = true;
    event_del(s->timer);
    unlink_from_pool(s);
    struct h2_upstream_stream *st;
    while ((st = s->streams) != NULL) {
        detach(st);
        st->closed = true;
        enum upstream_failure w = why;
        /* The request never left, or a reused connection went silent after it (like a
         * stale keep-alive connection, SPEC 2.3): safe to send elsewhere. */
        if (w == UPSTREAM_FAIL_AFTER_SEND && (!st->sent || (s->ended && st->heard == s->frames_in)))
            w = UPSTREAM_FAIL_STALE;
        st->events->on_fail(st->owner, w, status, message);
    }
}

/* ---- sessions: creation and choice ------------------------------------------ */

static unsigned capacity(const struct h2_session *s)
{
    return nghttp2_session_get_remote_settings(s->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

/*
 * Streams a new connection may open before the upstream's SETTINGS arrive:
 * what another connection to the same target learnt, else 100 (RFC 9113
 * 6.5.2 recommends at least that). Opening more would race the upstream's
 * limit and get streams refused.
 */
static uint32_t known_capacity(const struct pool *p)
{
    uint32_t n = 0;
    for (const struct h2_session *s = p->h2; s; s = s->next)
        if (s->settled && capacity(s) > n)
            n = capacity(s);
    return n ? n : H2C_INITIAL_STREAMS;
}

/* nghttp2's per-stream allocations come from the worker's free lists (base/blockpool.h). */
static nghttp2_mem h2c_mem = {NULL, blockpool_mem_malloc, blockpool_mem_free, blockpool_mem_calloc,
                              blockpool_mem_realloc};

static struct h2_session *session_new(struct event_base *base, struct target *t,
                                      const struct upstream_config *cfg)
{
    struct h2_session *s = calloc(1, sizeof *s);
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    if (!s)
        goto fail;
    s->conn.fd = -1;
    s->target = t;
    s->cfg = cfg;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback2(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, known_capacity(&t->pool));
    if (nghttp2_session_client_new3(&s->ng, cbs, s, opt, &h2c_mem) != 0) {
        s->ng = NULL;
        goto fail;
    }
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2C_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2C_MAX_HEAD},
    };
    if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, settings,
                                sizeof settings / sizeof *settings) != 0 ||
        nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, H2C_CONN_WINDOW) != 0)
        goto fail;
    s->kick = event_new(base, -1, 0, on_kick, s);
    s->timer = event_new(base, -1, 0, on_connect_timeout, s);
    if (!s->kick || !s->timer) {
        errno = ENOMEM;
        goto fail;
    }
    if (conn_connect(&s->conn, base, (const struct sockaddr *)&t->addr, t->addrlen, &session_events,
                     s) < 0)
        goto fail;
    /* With "tls": the handshake runs after the connect, offering only "h2". */
    if (cfg->tls) {
        static const unsigned char alpn[] = {2, 'h', '2'};
        if (target_tls_start(&s->conn, cfg->tls, t) < 0 ||
            SSL_set_alpn_protos(s->conn.ssl, alpn, sizeof alpn) != 0) {
            errno = EPROTO;
            goto fail;
        }
    }
    struct timeval tv = {cfg->connect_timeout_ms / 1000, (cfg->connect_timeout_ms % 1000) * 1000};
    event_add(s->timer, &tv);
    struct pool *p = &t->pool;
    s->pool = p;
    s->prev = NULL;
    s->next = p->h2;
    if (p->h2)
        p->h2->prev = s;
    p->h2 = s;
    p->close_sessions = close_sessions;
    pool_count_open(p, 1);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    return s;
fail:
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (s)
        session_free(s);
    return NULL;
}

/* The first session with a free stream slot; NULL when a new connection should open. */
static struct h2_session *pick(struct pool *p, const struct upstream_config *cfg)
{
    struct h2_session *least = NULL;
    for (struct h2_session *s = p->h2; s; s = s->next) {
        if (s->dead || s->goaway)
            continue;
        if (s->num_streams < capacity(s))
            return s;
        if (!least || s->num_streams < least->num_streams)
            least = s;
    }
    /* All full: another connection if allowed, else wait in nghttp2's queue of the least loaded. */
    if (least && !pool_may_open(p, cfg->max_connections))
        return least;
    return NULL;
}

/* ---- the codec's operations ------------------------------------------------------- */

static struct h2_upstream_stream *from_base(struct upstream_stream *b)
{
    return (struct h2_upstream_stream *)(void *)b; /* base is the first member */
}

static struct upstream_stream *h2_open(struct target *t, const struct upstream_config *cfg,
                                       const struct upstream_request *rq,
                                       struct upstream_response *resp,
                                       const struct upstream_events *events, void *owner,
                                       enum upstream_phase *phase)
{
    struct h2_session *s = pick(&t->pool, cfg);
    if (!s)
        s = session_new(t->upstream->base, t, cfg);
    if (!s)
        return NULL;
    struct h2_upstream_stream *st = arena_calloc(rq->arena, sizeof *st);
    st->base.ops = &http2_client_codec;
    st->rq = rq;
    st->resp = resp;
    st->events = events;
    st->owner = owner;
    st->has_body = rq->has_body;
    st->body = evbuffer_new();
    st->data = evbuffer_new();
    if (!st->body || !st->data) {
        log_error("out of memory");
        abort();
    }
    /*
     * A full session at max_connections: nghttp2 holds the HEADERS until a
     * stream closes, and the request waits in that queue for at most
     * connect_timeout_ms (SPEC 2.3), like an HTTP/1.1 request waiting for a
     * connection. flush() tells the owner when the HEADERS go out.
     */
    bool full = s->connected && s->num_streams >= capacity(s);
    attach(s, st);
    *phase = !s->connected ? UPSTREAM_CONNECTING : full ? UPSTREAM_QUEUED : UPSTREAM_SENT;
    st->queued = full;
    if (s->connected)
        submit(s, st);
    schedule(s);
    return &st->base;
}

static void h2_send_body(struct upstream_stream *b, struct evbuffer *data, bool end)
{
    struct h2_upstream_stream *st = from_base(b);
    if (data && evbuffer_get_length(data)) {
        if (st->has_body && st->body)
            evbuffer_add_buffer(st->body, data);
        else
            evbuffer_drain(data, evbuffer_get_length(data));
    }
    if (end)
        st->body_end = true;
    struct h2_session *s = st->session;
    if (!s || st->id <= 0 || !st->deferred)
        return;
    if (evbuffer_get_length(st->body) || st->body_end) {
        st->deferred = false;
        nghttp2_session_resume_data(s->ng, st->id);
        schedule(s);
    }
}

static size_t h2_body_pending(const struct upstream_stream *b)
{
    const struct h2_upstream_stream *st = (const struct h2_upstream_stream *)(const void *)b;
    return st->body ? evbuffer_get_length(st->body) : 0;
}

static void h2_pause(struct upstream_stream *b, bool pause)
{
    struct h2_upstream_stream *st = from_base(b);
    st->paused = pause;
    struct h2_session *s = st->session;
    if (pause || !s || !st->unconsumed)
        return;
    nghttp2_session_consume_stream(s->ng, st->id, st->unconsumed);
    st->unconsumed = 0;
    schedule(s);
}

static void h2_cancel(struct upstream_stream *b)
{
    struct h2_upstream_stream *st = from_base(b);
    struct h2_session *s = st->session;
    if (s) {
        detach(st);
        if (st->id > 0 && !st->closed)
            nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
        st->closed = true;
        /* From the loop: send the reset, and retire the session if it is now idle. */
        schedule(s);
    }
    if (st->body)
        evbuffer_free(st->body);
    if (st->data)
        evbuffer_free(st->data);
    st->body = st->data = NULL;
}

/* Closes every HTTP/2 connection of a pool (its target is going away): pool_close_all. */
static void close_sessions(struct pool *p)
{
    while (p->h2) {
        struct h2_session *s = p->h2;
        session_fail(s, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream is going away");
        /* Freed here unless one of its callbacks is on the stack (leave() frees it then). */
        if (s->busy == 0)
            session_free(s);
    }
}

const struct upstream_codec_ops http2_client_codec = {
    .name = "h2",
    .te_trailers = true,
    .head_then_body = false,
    .open = h2_open,
    .send_body = h2_send_body,
    .body_pending = h2_body_pending,
    .pause = h2_pause,
    .cancel = h2_cancel,
};
