/*
 * proxy: target choice, retries and gateway errors around an upstream
 * codec (see the header).
 *
 * Re-entrancy: codec events come from the loop only; splice events come
 * from the loop and from splice_run(). Any of them may end the exchange
 * (and free the arena holding struct proxy), so every function that can
 * reach one calls it last.
 */
#include "core/proxy.h"

#include <time.h>

#include <event2/buffer.h>

#include "base/clock.h"
#include "base/container_of.h"
#include "base/deadline.h"
#include "base/log.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "core/tunnel.h"
#include "core/worker.h"
#include "net/splice.h"
#include "ops/metrics.h"
#include "proto/fields.h"
#include "proto/status.h"
#include "upstream/codec.h"
#include "upstream/http1_client.h"
#include "upstream/http2_client.h"
#include "upstream/upstream.h"

/* Request body kept for a retry after a stale keep-alive connection closed. */
#define PROXY_REPLAY_MAX (64 * 1024)
/* At most this many targets are tried, whatever `retries` says. */
#define PROXY_MAX_TRIES 8
/* Stale keep-alive connections retried without spending a retry. */
#define PROXY_MAX_STALE 2

/* The codec of each configured protocol (upstreams[].protocol). */
static const struct upstream_codec_ops *const codecs[] = {
    [UPSTREAM_HTTP1] = &http1_client_codec,
    [UPSTREAM_H2] = &http2_client_codec,
};

enum proxy_state {
    P_START = 0,
    P_QUEUED,     /* waiting for a connection slot (max_connections) */
    P_CONNECTING, /* a new connection is being made */
    P_WAIT_HEAD,  /* request sent or being sent, waiting for the response head */
    P_BODY,       /* streaming the response body */
};

struct proxy {
    struct exchange *x;
    struct upstream_rt *up;
    const struct upstream_config *cfg;
    const struct upstream_codec_ops *codec;
    struct target *target;
    struct upstream_stream *stream; /* the current attempt's; NULL between attempts */
    struct upstream_request rq;     /* built once from the exchange: slices, no copies */
    struct upstream_response resp;  /* filled by the codec, copied into the exchange */
    struct deadline timer; /* the phase timeout: a list node, not a libevent timer (deadline.h) */
    enum proxy_state state;
    struct target *tried[PROXY_MAX_TRIES];
    size_t num_tried;
    int retries_left;
    int stale_left;
    int timeout_ms;
    bool req_sent_end;  /* the whole request body went to the stream */
    bool body_streamed; /* request body bytes went to an upstream and were not kept */
    struct evbuffer *replay;
    bool client_paused;   /* we paused the client's body (upstream side full) */
    bool upstream_paused; /* we stopped reading the upstream (client output full) */
    bool client_wait;     /* the timer is the client's send timeout (body_timeout_ms) */
    size_t pending_seen;  /* exchange_pending() when that timer was armed */
    int last_status;      /* the failure to report when no target is left */
    const char *last_message;
    struct splice *splice; /* a large body moving socket to socket; NULL otherwise */
    bool splice_request;   /* the splice carries the request body (else the response's) */
    bool finished;
};

static void attempt(struct proxy *p);
static void pump(struct proxy *p);

static bool idempotent(struct slice m)
{
    static const char *const names[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (slice_eq(m, slice_cstr(names[i])))
            return true;
    return false;
}

static void arm(struct proxy *p, int ms)
{
    p->client_wait = false;
    deadline_arm(p->x->worker->deadlines, &p->timer, ms);
}

/*
 * SPEC 7 "slow readers": while the gateway waits for the client to take
 * response bytes (not for the upstream), the upstream's timeout_ms does not
 * run; the client gets limits.body_timeout_ms to accept a byte instead.
 */
static void arm_client_wait(struct proxy *p)
{
    arm(p, p->x->snapshot->limits.body_timeout_ms);
    p->client_wait = true;
    p->pending_seen = p->splice ? 0 : exchange_pending(p->x);
}

/* Ends the current stream (closing its connection, or resetting it) if there is one. */
static void drop_stream(struct proxy *p)
{
    struct upstream_stream *s = p->stream;
    if (!s)
        return;
    p->stream = NULL;
    s->ops->cancel(s);
}

static void drop_target(struct proxy *p)
{
    if (p->target) {
        p->target->in_flight--;
        p->target = NULL;
    }
}

static void splice_end(struct proxy *p)
{
    if (!p->splice)
        return;
    splice_stop(p->splice);
    p->splice = NULL;
}

/* Releases everything (the arena cleanup; also before the exchange ends). */
static void proxy_cancel(struct exchange *x)
{
    struct proxy *p = x->proxy;
    if (!p || p->finished)
        return;
    p->finished = true;
    splice_end(p);
    drop_stream(p);
    drop_target(p);
    deadline_cancel(&p->timer);
    if (p->replay)
        evbuffer_free(p->replay);
    p->replay = NULL;
}

static void on_cleanup(void *arg)
{
    proxy_cancel(arg);
}

/* Ends the exchange with a gateway error. */
static void respond(struct proxy *p, int status, const char *message)
{
    struct exchange *x = p->x;
    proxy_cancel(x);
    exchange_respond_error(x, status, message);
    exchange_reply(x);
}

/* The client went away mid-transfer: end everything, nothing more is sent. */
static void client_gone(struct proxy *p)
{
    struct exchange *x = p->x;
    proxy_cancel(x);
    exchange_abort(x);
}

/* ---- failures and retries (SPEC 2.3) ------------------------------------------------ */

static void fail(struct proxy *p, enum upstream_failure why, int status, const char *message)
{
    struct exchange *x = p->x;
    splice_end(p); /* its events watch sockets that are about to close */
    if (why == UPSTREAM_FAIL_CONNECT && p->target) {
        upstream_mark_failed(p->target);
        metrics_connect_error(p->cfg->name, p->target->name);
    } else if (p->target && why != UPSTREAM_FAIL_GONE) {
        metrics_upstream_response(p->cfg->name, p->target->name, status);
    }
    drop_stream(p);
    deadline_cancel(&p->timer);
    if (x->head_sent) {
        /*
         * Part of the response is already with the client: all we can do is
         * cut it off (no last chunk, or RST_STREAM), and log why.
         */
        x->error = status_error_code(status);
        proxy_cancel(x);
        exchange_abort(x);
        return;
    }
    bool replayable = !p->body_streamed;
    if (why == UPSTREAM_FAIL_STALE && replayable && p->stale_left > 0) {
        /* A stale keep-alive connection says nothing about the target: try it again. */
        p->stale_left--;
        if (p->num_tried)
            p->num_tried--;
        drop_target(p);
        attempt(p);
        return;
    }
    bool retry = false;
    if (why == UPSTREAM_FAIL_CONNECT || why == UPSTREAM_FAIL_STALE)
        retry = replayable;
    else if (why == UPSTREAM_FAIL_AFTER_SEND)
        retry = idempotent(x->method) && replayable;
    drop_target(p);
    if (retry && p->retries_left > 0 && p->num_tried < PROXY_MAX_TRIES) {
        p->retries_left--;
        p->last_status = status;
        p->last_message = message;
        attempt(p);
        return;
    }
    respond(p, status, message);
}

static void on_timer(struct deadline *d)
{
    struct proxy *p = container_of(d, struct proxy, timer);
    if (p->client_wait) {
        struct exchange *x = p->x;
        size_t pending = p->splice ? 0 : exchange_pending(x);
        if (pending < p->pending_seen) {
            arm_client_wait(
                p); /* the client took bytes meanwhile: a slow reader, not a stopped one */
            return;
        }
        /* No byte accepted for body_timeout_ms: cut the client off, logged with an error. */
        x->error = "request_timeout";
        proxy_cancel(x);
        exchange_abort(x);
        return;
    }
    switch (p->state) {
    case P_START:
    case P_QUEUED:
        respond(p, 503, "every connection to the upstream is busy (max_connections)");
        return;
    case P_CONNECTING:
        fail(p, UPSTREAM_FAIL_CONNECT, 504, "connecting to the upstream timed out");
        return;
    case P_WAIT_HEAD:
        fail(p, UPSTREAM_FAIL_TIMEOUT, 504, "the upstream did not answer in time");
        return;
    case P_BODY:
        fail(p, UPSTREAM_FAIL_TIMEOUT, 504, "the upstream stalled while sending the body");
        return;
    }
}

/* ---- backpressure: the one place -------------------------------------------------- */

/*
 * Applies the high-water mark both ways: request body held on the upstream
 * side (or, before a stream takes it, in the exchange) past the mark pauses
 * the client's body until it drains; response bytes the client has not
 * taken past the mark stop reading the upstream until the client drains
 * (proxy_on_client_drain resumes it).
 */
static void backpressure(struct proxy *p)
{
    struct exchange *x = p->x;
    if (!x->req_body_done) {
        size_t held = p->stream && p->state >= P_WAIT_HEAD ? p->stream->ops->body_pending(p->stream)
                                                           : evbuffer_get_length(x->req_body);
        bool full = held > UPSTREAM_HIGH_WATER;
        if (full != p->client_paused) {
            p->client_paused = full;
            exchange_pause_request_body(x, full);
        }
    }
    if (p->state == P_BODY && p->stream && !p->upstream_paused && !p->splice &&
        exchange_pending(x) > UPSTREAM_HIGH_WATER) {
        p->upstream_paused = true;
        p->stream->ops->pause(p->stream, true);
        arm_client_wait(p);
    }
}

/* ---- splicing large bodies (net/splice) ------------------------------------------- */

static void on_req_splice_read(void *owner, size_t n)
{
    struct proxy *p = owner;
    exchange_body_spliced(p->x, n);
}

static void on_req_splice_written(void *owner, size_t n)
{
}

static void on_req_splice_wait(void *owner, enum splice_end end)
{
    struct proxy *p = owner;
    /* Waiting for the client's body counts against its body timeout, not the upstream's. */
    arm(p, end == SPLICE_SRC ? p->x->snapshot->limits.body_timeout_ms : p->timeout_ms);
}

static void on_req_splice_done(void *owner)
{
    struct proxy *p = owner;
    /* All of the body went upstream: back to waiting for the response. */
    splice_end(p);
    p->stream->ops->request_spliced(p->stream);
    p->req_sent_end = true;
    arm(p, p->timeout_ms);
}

static void on_req_splice_error(void *owner, enum splice_end end, int err)
{
    struct proxy *p = owner;
    if (end == SPLICE_SRC)
        client_gone(p); /* closed or reset mid-body: nobody is left to answer */
    else
        fail(p, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream reset the connection");
}

static const struct splice_events request_splice_events = {
    .on_read = on_req_splice_read,
    .on_written = on_req_splice_written,
    .on_wait = on_req_splice_wait,
    .on_done = on_req_splice_done,
    .on_error = on_req_splice_error,
};

static void on_resp_splice_read(void *owner, size_t n)
{
    struct proxy *p = owner;
    p->stream->ops->response_spliced(p->stream, n);
}

static void on_resp_splice_written(void *owner, size_t n)
{
    struct proxy *p = owner;
    p->x->bytes_out += n;
}

static void on_resp_splice_wait(void *owner, enum splice_end end)
{
    struct proxy *p = owner;
    if (end == SPLICE_DST)
        arm_client_wait(p); /* the client is slow: its timeout, not the upstream's */
    else
        arm(p, p->timeout_ms);
}

static void on_resp_splice_done(void *owner)
{
    struct proxy *p = owner;
    /* The stream reads again and ends the response from the loop. */
    splice_end(p);
    p->stream->ops->pause(p->stream, false);
}

static void on_resp_splice_error(void *owner, enum splice_end end, int err)
{
    struct proxy *p = owner;
    if (end == SPLICE_DST)
        client_gone(p); /* nothing more can reach it */
    else
        fail(p, UPSTREAM_FAIL_AFTER_SEND, 502,
             err == 0 ? "the upstream closed the connection mid-body"
                      : "the upstream reset the connection");
}

static const struct splice_events response_splice_events = {
    .on_read = on_resp_splice_read,
    .on_written = on_resp_splice_written,
    .on_wait = on_resp_splice_wait,
    .on_done = on_resp_splice_done,
    .on_error = on_resp_splice_error,
};

/*
 * Starts moving the rest of a large request body from the client socket to
 * the upstream's, once everything buffered so far went out, when the codec
 * and the client side both allow it. The body is then not kept for a retry.
 */
static bool request_splice_try(struct proxy *p)
{
    struct exchange *x = p->x;
    struct upstream_stream *s = p->stream;
    if (p->splice || !s->ops->request_splice_fd || x->req_body_done ||
        evbuffer_get_length(x->req_body) > 0)
        return false;
    int up_fd = s->ops->request_splice_fd(s);
    if (up_fd < 0)
        return false;
    int fds[2];
    if (splice_pipe_get(fds) < 0)
        return false;
    uint64_t left = 0;
    int client_fd = exchange_body_splice_fd(x, &left);
    if (client_fd < 0) {
        splice_pipe_put(fds, true);
        return false;
    }
    p->splice =
        splice_start(x->arena, p->up->base, fds, client_fd, up_fd, left, &request_splice_events, p);
    p->splice_request = true;
    p->body_streamed = true;
    if (p->replay) {
        evbuffer_free(p->replay);
        p->replay = NULL;
    }
    splice_run(p->splice);
    return true;
}

/*
 * Starts moving the rest of a large response body from the upstream socket
 * to the client's, when the codec and the client side both allow it.
 */
static bool response_splice_try(struct proxy *p)
{
    struct exchange *x = p->x;
    struct upstream_stream *s = p->stream;
    if (p->splice || !s->ops->response_splice_fd)
        return false;
    uint64_t left = 0;
    int up_fd = s->ops->response_splice_fd(s, &left);
    if (up_fd < 0 || left < SPLICE_MIN)
        return false;
    int client_fd = exchange_splice_fd(x);
    if (client_fd < 0)
        return false;
    int fds[2];
    if (splice_pipe_get(fds) < 0)
        return false;
    p->splice = splice_start(x->arena, p->up->base, fds, up_fd, client_fd, left,
                             &response_splice_events, p);
    p->splice_request = false;
    s->ops->pause(s, true); /* the splice reads the socket now */
    splice_run(p->splice);
    return true;
}

/* ---- the request -------------------------------------------------------------------- */

/*
 * Prepares the header fields for the upstream (SPEC 3.1 and 7): hop-by-hop
 * fields removed, X-Forwarded-For appended with the peer IP,
 * X-Forwarded-Proto and X-Forwarded-Host replaced.
 */
static void prepare_headers(struct exchange *x)
{
    struct header_list *h = &x->req_headers;
    fields_remove_hop_by_hop(h, x->upgrade);

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

/* Moves request body from the exchange to the stream, keeping a replay copy while small. */
static void pump(struct proxy *p)
{
    struct exchange *x = p->x;
    if (p->splice)
        return; /* the client socket is read by the splice */
    if (p->stream && p->state >= P_WAIT_HEAD && !p->req_sent_end) {
        if (!exchange_body_check(x))
            return; /* a body hook answered: the exchange (and p) may be gone */
        size_t len = evbuffer_get_length(x->req_body);
        if (len) {
            if (p->replay && evbuffer_get_length(p->replay) + len <= PROXY_REPLAY_MAX) {
                struct evbuffer_iovec v[16];
                int n = evbuffer_peek(x->req_body, -1, NULL, v, 16);
                for (int i = 0; i < n && i < 16; i++)
                    evbuffer_add(p->replay, v[i].iov_base, v[i].iov_len);
                if (n > 16) {
                    evbuffer_free(p->replay);
                    p->replay = NULL;
                }
            } else if (p->replay) {
                evbuffer_free(p->replay);
                p->replay = NULL;
            }
            if (!p->replay)
                p->body_streamed = true;
        }
        p->stream->ops->send_body(p->stream, x->req_body, x->req_body_done);
        if (x->req_body_done)
            p->req_sent_end = true;
        /* A large rest of the body can go socket to socket. */
        if (request_splice_try(p))
            return;
    }
    backpressure(p);
}

/* The body sent so far, again, on a new attempt (a copy: the replay stays for the next). */
static void send_replay(struct proxy *p)
{
    if (!p->replay || evbuffer_get_length(p->replay) == 0)
        return;
    struct evbuffer *copy = evbuffer_new();
    struct evbuffer_iovec v[32];
    int n = evbuffer_peek(p->replay, -1, NULL, v, 32);
    for (int i = 0; i < n && i < 32; i++)
        evbuffer_add(copy, v[i].iov_base, v[i].iov_len);
    p->stream->ops->send_body(p->stream, copy, false);
    evbuffer_free(copy);
}

/* ---- stream events -------------------------------------------------------------------- */

static void on_phase(void *owner, enum upstream_phase phase)
{
    struct proxy *p = owner;
    switch (phase) {
    case UPSTREAM_QUEUED:
        p->state = P_QUEUED;
        arm(p, p->cfg->connect_timeout_ms);
        return;
    case UPSTREAM_CONNECTING:
        p->state = P_CONNECTING;
        arm(p, p->cfg->connect_timeout_ms);
        return;
    case UPSTREAM_SENT:
        p->state = P_WAIT_HEAD;
        p->req_sent_end = false;
        p->x->upstream_start_us = clock_mono_us();
        arm(p, p->timeout_ms);
        send_replay(p);
        pump(p);
        return;
    }
}

static void on_head(void *owner)
{
    struct proxy *p = owner;
    struct exchange *x = p->x;
    x->status = p->resp.status;
    x->resp_headers = p->resp.headers;
    x->resp_length = p->resp.length;
    if (p->resp.trailers.count)
        x->resp_trailers = p->resp.trailers;
    x->upstream_head_us = clock_mono_us();
    metrics_upstream_response(p->cfg->name, p->target->name, x->status);
    p->state = P_BODY;
    if (x->status == 101) {
        /* A WebSocket (only an upgrade gets here): the 101, then the tunnel relays. */
        if (x->ws_accept.len) {
            /* The gateway made the key (RFC 8441 bridge): the upstream must prove it read it. */
            const struct slice *a = header_get(&x->resp_headers, SLICE_LIT("Sec-WebSocket-Accept"));
            if (!a || !slice_eq(*a, x->ws_accept)) {
                fail(p, UPSTREAM_FAIL_AFTER_SEND, 502,
                     "the upstream's Sec-WebSocket-Accept does not match");
                return;
            }
        }
        /* Checked last: from here on the connection is the tunnel's, not the stream's. */
        struct conn *c = p->codec->tunnel_conn ? p->codec->tunnel_conn(p->stream) : NULL;
        if (!c) {
            fail(p, UPSTREAM_FAIL_AFTER_SEND, 502, "the upstream switched protocols unasked");
            return;
        }
        deadline_cancel(&p->timer);
        exchange_send_head(x);
        /* The tunnel takes the connection, the target's count and the client codec... */
        struct target *target = p->target;
        p->target = NULL;
        tunnel_start(x, c, target);
        /* ...and the request's exchange goes: its arena, this proxy, the stream (not the conn). */
        exchange_free(x);
        return;
    }
    /* The upstream's timeout counts again from each byte (SPEC 7 "slow readers"). */
    if (!p->codec->head_then_body)
        arm(p, p->timeout_ms);
    exchange_send_head(x);
}

static void on_body(void *owner, struct evbuffer *data, bool last)
{
    struct proxy *p = owner;
    exchange_send_body(p->x, data);
    if (last)
        return;
    arm(p, p->timeout_ms);
    if (response_splice_try(p))
        return;
    backpressure(p);
}

static void on_end(void *owner)
{
    struct proxy *p = owner;
    struct exchange *x = p->x;
    deadline_cancel(&p->timer);
    if (p->resp.trailers.count)
        x->resp_trailers = p->resp.trailers;
    if (!x->req_body_done)
        exchange_pause_request_body(x, false); /* the codec closes after this response */
    proxy_cancel(x);
    exchange_end(x);
}

static void on_fail(void *owner, enum upstream_failure why, int status, const char *message)
{
    fail(owner, why, status, message);
}

static void on_body_drained(void *owner)
{
    /* The upstream took the body: let the client's flow again, and hand over more. */
    pump(owner);
}

static const struct upstream_events stream_events = {
    .on_phase = on_phase,
    .on_head = on_head,
    .on_body = on_body,
    .on_end = on_end,
    .on_fail = on_fail,
    .on_body_drained = on_body_drained,
};

/* ---- attempts ------------------------------------------------------------------------ */

/* Opens a stream to p->target through the upstream's codec. */
static void open_stream(struct proxy *p)
{
    enum upstream_phase phase = UPSTREAM_QUEUED;
    p->resp.status = 0;
    p->resp.trailers.count = 0;
    p->stream = p->codec->open(p->target, p->cfg, &p->rq, &p->resp, &stream_events, p, &phase);
    if (!p->stream) {
        fail(p, UPSTREAM_FAIL_CONNECT, 502, "cannot create a socket to the upstream");
        return;
    }
    on_phase(p, phase);
}

static void attempt(struct proxy *p)
{
    struct exchange *x = p->x;
    struct balance_key key = {.client_ip = slice_cstr(x->remote_addr)};
    if (p->cfg->balance == BALANCE_HEADER) {
        const struct slice *v = header_get(&x->req_headers, slice_cstr(p->cfg->balance_header));
        if (v)
            key.header_value = *v;
    }
    struct target *t = upstream_pick(p->up, &key, p->tried, p->num_tried);
    if (!t) {
        if (p->num_tried == 0)
            respond(p, 503, "no healthy target in upstream");
        else
            respond(p, p->last_status ? p->last_status : 502, p->last_message);
        return;
    }
    p->target = t;
    t->in_flight++;
    p->tried[p->num_tried++] = t;
    x->upstream_target = t->name;
    p->state = P_START;
    open_stream(p);
}

/* ---- the exchange's upstream side ---------------------------------------------------- */

static void proxy_start(struct exchange *x)
{
    const struct route_config *r = x->route;
    if (x->upgrade) {
        /*
         * SPEC 3.4: an upgrade goes through only where the route allows it
         * and both sides can tunnel (an HTTP/1.1 upstream); elsewhere the
         * upgrade fields are dropped and the request goes as a plain one.
         */
        x->upgrade =
            r->websocket && x->client->ops->tunnel && codecs[r->upstream->protocol]->tunnel_conn;
        if (!x->upgrade && x->protocol == XPROTO_HTTP2) {
            /* An extended CONNECT has no plain form to fall back to (RFC 8441). */
            exchange_respond_error(x, 501, "this route does not tunnel WebSockets");
            exchange_reply(x);
            return;
        }
        if (x->upgrade && x->worker->net.draining) {
            exchange_respond_error(x, 503, "the gateway is shutting down");
            exchange_reply(x);
            return;
        }
    }
    struct proxy *p = arena_calloc(x->arena, sizeof *p);
    p->x = x;
    x->proxy = p;
    p->cfg = r->upstream;
    p->codec = codecs[p->cfg->protocol];
    p->up = x->view->upstreams[r->upstream->index];
    p->retries_left = p->cfg->retries;
    p->stale_left = PROXY_MAX_STALE;
    p->timeout_ms = r->timeout_ms > 0 ? r->timeout_ms : p->cfg->timeout_ms;
    /* The timer lives in the arena: no malloc per request. */
    deadline_init(&p->timer, on_timer);
    if (x->req_has_body)
        p->replay = evbuffer_new();
    arena_cleanup_add(x->arena, on_cleanup, x);
    x->upstream_name = p->cfg->name;
    /* A body the exchange paused while filters ran is resumed as the upstream drains. */
    p->client_paused = x->body_held;
    x->body_held = false;
    /* RFC 9113 8.2.2: a protocol that carries TE only as "trailers" (gRPC needs it). */
    bool te_trailers = p->codec->te_trailers &&
                       header_has_token(&x->req_headers, SLICE_LIT("TE"), SLICE_LIT("trailers"));
    prepare_headers(x);
    p->rq = (struct upstream_request){
        .arena = x->arena,
        .method = x->method,
        .path = x->path,
        .query = x->query,
        .has_query = x->has_query,
        .host = x->host,
        .headers = &x->req_headers,
        .has_body = x->req_has_body,
        .length = x->req_length,
        .te_trailers = te_trailers,
        .upgrade = x->upgrade,
    };
    header_list_init(&p->resp.trailers, x->arena, 0);
    p->resp.length = -1;
    attempt(p);
}

static void proxy_on_request_body(struct exchange *x)
{
    pump(x->proxy);
}

static void proxy_on_client_drain(struct exchange *x)
{
    struct proxy *p = x->proxy;
    if (p->splice && !p->splice_request)
        return; /* a response splice watches the client socket itself */
    if (!p->upstream_paused || !p->stream)
        return;
    p->upstream_paused = false;
    /* Waiting for the upstream again; armed first: resuming may deliver and pause at once. */
    arm(p, p->timeout_ms);
    p->stream->ops->pause(p->stream, false);
}

static const struct exchange_upstream_ops proxy_ops = {
    .start = proxy_start,
    .on_request_body = proxy_on_request_body,
    .on_client_drain = proxy_on_client_drain,
};

void proxy_register(void)
{
    exchange_set_upstream(&proxy_ops);
}
