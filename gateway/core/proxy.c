#include "core/proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/config.h"
#include "core/exchange.h"
#include "upstream/http1_client.h"
#include "proto/http1_parse.h"
#include "upstream/http2_client.h"
#include "base/log.h"
#include "ops/metrics.h"
#include "upstream/pool.h"
#include "net/tls.h"
#include "upstream/upstream.h"
#include "core/worker.h"

/* Past this much unsent output on one side, stop reading the other (backpressure). */
#define PROXY_HIGH_WATER (256 * 1024)
/* A response head larger than this is refused (502). */
#define PROXY_MAX_RESPONSE_HEAD (64 * 1024)
/* Request body kept for a retry after a stale keep-alive connection closed. */
#define PROXY_REPLAY_MAX (64 * 1024)
/* At most this many targets are tried, whatever `retries` says. */
#define PROXY_MAX_TRIES 8
/* Stale keep-alive connections retried without spending a retry. */
#define PROXY_MAX_STALE 2

enum proxy_state {
    P_START = 0,
    P_WAIT_SLOT,  /* queued for a connection (max_connections) */
    P_CONNECTING, /* non-blocking connect in progress */
    P_WAIT_HEAD,  /* request sent or being sent, waiting for the response head */
    P_BODY,       /* streaming the response body */
};

/* Why an attempt failed, which decides whether to retry (SPEC 2.3). */
enum failure {
    FAIL_CONNECT,    /* refused, unreachable, connect timeout: any method */
    FAIL_STALE,      /* reused keep-alive closed before any response byte: any method */
    FAIL_AFTER_SEND, /* reset or invalid response after sending: idempotent, body not streamed */
    FAIL_TIMEOUT,    /* no response head in time: never retried */
};

struct proxy {
    struct exchange *x;
    struct upstream_rt *up;
    const struct upstream_config *cfg;
    struct target *target;
    struct upconn *uc;
    struct h2_stream *h2; /* instead of uc when the upstream speaks HTTP/2 (http2_client.c) */
    struct pool_waiter waiter;
    struct event *timer;
    enum proxy_state state;
    struct target *tried[PROXY_MAX_TRIES];
    size_t num_tried;
    int retries_left;
    int stale_left;
    int timeout_ms;
    struct slice head; /* the serialised request head, sent again on a retry */
    bool req_chunked;
    bool req_sent_end;  /* the whole request is in the connection's output */
    bool body_streamed; /* request body bytes went to an upstream and were not kept */
    struct evbuffer *replay;
    bool slot_ready;      /* a pool slot was granted: act from the timer */
    bool client_paused;   /* we paused the client's body (upstream output full) */
    bool upstream_paused; /* we stopped reading the upstream (client output full) */
    bool got_byte;        /* any response byte on this attempt */
    bool keepalive_ok;    /* the response allows reusing the connection */
    enum http1_framing resp_framing;
    uint64_t resp_left;
    struct http1_chunked chunked;
    struct evbuffer *out; /* response body on its way to the client */
    int last_status;      /* the failure to report when no target is left */
    const char *last_message;
    struct splice_state *splice; /* a large body moving socket to socket; NULL otherwise */
    bool finished;
};

/*
 * Large Content-Length bodies from a plain HTTP/1 upstream to a plain
 * HTTP/1 client are moved with splice(2) through a pipe: the kernel moves
 * the pages from one socket to the other, without the two copies through
 * user space that dominate the CPU time of a 1 MiB response. The pipe is
 * the buffer: when it is full the upstream is not read (backpressure).
 */
#define SPLICE_MIN (64 * 1024)    /* bodies with less left go through evbuffers */
#define SPLICE_PIPE (1024 * 1024) /* requested pipe capacity (the default limit for users) */
#define SPLICE_SPARES 4           /* empty pipes kept per thread for the next transfer */

static _Thread_local int spare_pipes[SPLICE_SPARES][2];
static _Thread_local int num_spare_pipes;

/* An empty non-blocking pipe, from the thread's spares or new. Returns 0 or -1. */
static int pipe_get(int fds[2])
{
    if (num_spare_pipes) {
        num_spare_pipes--;
        fds[0] = spare_pipes[num_spare_pipes][0];
        fds[1] = spare_pipes[num_spare_pipes][1];
        return 0;
    }
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    fcntl(fds[1], F_SETPIPE_SZ, SPLICE_PIPE); /* best effort: the default is 64 KiB */
    return 0;
}

/* Keeps an empty pipe for the next transfer; one still holding bytes is closed. */
static void pipe_put(int fds[2], bool empty)
{
    if (empty && num_spare_pipes < SPLICE_SPARES) {
        spare_pipes[num_spare_pipes][0] = fds[0];
        spare_pipes[num_spare_pipes][1] = fds[1];
        num_spare_pipes++;
        return;
    }
    close(fds[0]);
    close(fds[1]);
}

void proxy_thread_cleanup(void)
{
    while (num_spare_pipes) {
        num_spare_pipes--;
        close(spare_pipes[num_spare_pipes][0]);
        close(spare_pipes[num_spare_pipes][1]);
    }
}

struct splice_state {
    bool request;  /* the request body, client to upstream; else the response body */
    uint64_t left; /* request: body bytes still on the client socket */
    int pipe_r;
    int pipe_w;
    int client_fd;
    size_t in_pipe;      /* bytes read from the upstream, not yet written to the client */
    struct event *up_ev; /* upstream readable (request: writable); arena memory */
    struct event *cl_ev; /* client writable (request: readable) */
};

static void splice_stop(struct proxy *p);
static bool splice_try_start(struct proxy *p);
static bool body_splice_try_start(struct proxy *p);

static void attempt(struct proxy *p);
static void start_h2(struct proxy *p);
static void on_upstream_read(struct conn *c);
static void on_upstream_writable(struct conn *c);
static void on_upstream_error(struct conn *c, int err);

static const struct conn_events upstream_events = {
    .on_read = on_upstream_read,
    .on_writable = on_upstream_writable,
    .on_error = on_upstream_error,
};

static bool idempotent(struct slice m)
{
    static const char *const names[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (slice_eq(m, slice_cstr(names[i])))
            return true;
    return false;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void arm(struct proxy *p, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(p->timer, &tv);
}

/* Lets go of the current connection: back to the pool, or closed. */
static void drop_conn(struct proxy *p, bool reuse)
{
    struct upconn *uc = p->uc;
    if (p->h2) {
        http2_client_close(p->h2); /* resets the stream if it is still open */
        p->h2 = NULL;
    }
    if (!uc)
        return;
    p->uc = NULL;
    if (reuse)
        pool_release(uc, p->cfg->keepalive);
    else
        pool_close_conn(uc);
}

static void drop_target(struct proxy *p)
{
    if (p->target) {
        p->target->in_flight--;
        p->target = NULL;
    }
}

void proxy_cancel(struct exchange *x)
{
    struct proxy *p = x->proxy;
    if (!p || p->finished)
        return;
    p->finished = true;
    splice_stop(p);
    if (p->target)
        pool_unwait(&p->target->pool, &p->waiter);
    drop_conn(p, false);
    drop_target(p);
    if (p->timer) {
        event_del(p->timer); /* the event itself lives in the arena */
        p->timer = NULL;
    }
    if (p->replay)
        evbuffer_free(p->replay);
    conn_buffer_put(p->out);
    p->replay = p->out = NULL;
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

/* ---- sending the request ----------------------------------------------------- */

/* Moves request body from the exchange to the upstream, keeping a replay copy while small. */
static void pump_request(struct proxy *p)
{
    struct exchange *x = p->x;
    struct upconn *uc = p->uc;
    if ((!uc && !p->h2) || (uc && p->state == P_CONNECTING) || p->req_sent_end || p->splice)
        return;
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
        if (!p->h2)
            http1_client_body(uc->conn.out, x->req_body, p->req_chunked);
    }
    if (p->h2) {
        /* HTTP/2: the stream holds the body until flow control lets it go. */
        http2_client_body(p->h2, x->req_body, x->req_body_done);
        p->req_sent_end = x->req_body_done;
        bool full = http2_client_body_pending(p->h2) > PROXY_HIGH_WATER;
        if (full != p->client_paused && !x->req_body_done) {
            p->client_paused = full;
            x->client->ops->pause_body(x, full);
        }
        return;
    }
    if (x->req_body_done) {
        if (p->req_chunked)
            http1_client_body_end(uc->conn.out);
        p->req_sent_end = true;
    }
    if (conn_flush(&uc->conn) < 0) {
        on_upstream_error(&uc->conn, errno);
        return;
    }
    /* A large rest of the body can go socket to socket. */
    if (body_splice_try_start(p))
        return;
    /* Backpressure: a slow upstream stops the client's body. */
    bool full = evbuffer_get_length(uc->conn.out) > PROXY_HIGH_WATER;
    if (full != p->client_paused && !x->req_body_done) {
        p->client_paused = full;
        x->client->ops->pause_body(x, full);
    }
}

static void send_request(struct proxy *p)
{
    struct upconn *uc = p->uc;
    uc->user = p;
    uc->conn.events = &upstream_events;
    uc->conn.owner = uc;
    uc->requests++;
    p->state = P_WAIT_HEAD;
    p->got_byte = false;
    p->req_sent_end = false;
    evbuffer_add(uc->conn.out, p->head.base, p->head.len);
    /* On a retry the body sent so far is replayed first. */
    if (p->replay && evbuffer_get_length(p->replay)) {
        struct evbuffer *copy = evbuffer_new();
        struct evbuffer_iovec v[32];
        int n = evbuffer_peek(p->replay, -1, NULL, v, 32);
        for (int i = 0; i < n && i < 32; i++)
            evbuffer_add(copy, v[i].iov_base, v[i].iov_len);
        http1_client_body(uc->conn.out, copy, p->req_chunked);
        evbuffer_free(copy);
    }
    p->x->upstream_start_us = now_us();
    arm(p, p->timeout_ms);
    pump_request(p);
}

/* ---- failures and retries ------------------------------------------------- */

static void fail(struct proxy *p, enum failure why, int status, const char *message)
{
    struct exchange *x = p->x;
    splice_stop(p); /* its events watch sockets that are about to close */
    bool reused = p->uc && p->uc->requests > 1;
    if (why == FAIL_AFTER_SEND && reused && !p->got_byte)
        why = FAIL_STALE;
    if (why == FAIL_CONNECT && p->target) {
        upstream_mark_failed(p->target);
        metrics_connect_error(p->cfg->name, p->target->name);
    } else if (p->target) {
        metrics_upstream_response(p->cfg->name, p->target->name, status);
    }
    drop_conn(p, false);
    event_del(p->timer);
    if (x->head_sent) {
        /* Part of the response is already with the client: all we can do is cut it off. */
        drop_target(p);
        proxy_cancel(x);
        exchange_abort(x);
        return;
    }
    bool replayable = !p->body_streamed;
    bool retry = false;
    if (why == FAIL_STALE && replayable && p->stale_left > 0) {
        /* A stale keep-alive connection says nothing about the target: try it again. */
        p->stale_left--;
        if (p->num_tried)
            p->num_tried--;
        drop_target(p);
        attempt(p);
        return;
    }
    if (why == FAIL_CONNECT || why == FAIL_STALE)
        retry = replayable;
    else if (why == FAIL_AFTER_SEND)
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

/* ---- connecting ----------------------------------------------------------------- */

static void on_slot(struct pool_waiter *w, bool ok)
{
    struct proxy *p = (struct proxy *)((char *)w - offsetof(struct proxy, waiter));
    /* Called from inside another exchange's release: act from our own timer. */
    p->slot_ready = ok;
    if (!ok)
        p->state = P_START;
    event_active(p->timer, EV_TIMEOUT, 0);
}

static void connect_target(struct proxy *p)
{
    struct target *t = p->target;
    if (p->cfg->protocol == UPSTREAM_H2) {
        start_h2(p);
        return;
    }
    struct upconn *uc = pool_take_idle(&t->pool);
    if (uc) {
        p->uc = uc;
        send_request(p);
        return;
    }
    if (!pool_may_open(&t->pool, p->cfg->max_connections)) {
        p->state = P_WAIT_SLOT;
        pool_wait(&t->pool, &p->waiter);
        arm(p, p->cfg->connect_timeout_ms);
        return;
    }
    uc = pool_new_conn(&t->pool, t);
    p->uc = uc;
    uc->user = p;
    p->state = P_CONNECTING;
    if (conn_connect(&uc->conn, p->x->worker->base, (const struct sockaddr *)&t->addr, t->addrlen,
                     &upstream_events, uc) < 0) {
        fail(p, FAIL_CONNECT, 502, "cannot create a socket to the upstream");
        return;
    }
    /* With "tls" the handshake runs after the connect; on_writable comes after both. */
    if (p->cfg->tls && target_tls_start(&uc->conn, p->cfg->tls, t) < 0) {
        fail(p, FAIL_CONNECT, 502, "cannot set up TLS to the upstream");
        return;
    }
    arm(p, p->cfg->connect_timeout_ms);
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
    connect_target(p);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *p = arg;
    switch (p->state) {
    case P_WAIT_SLOT:
        if (p->slot_ready) {
            p->slot_ready = false;
            connect_target(p);
        } else {
            pool_unwait(&p->target->pool, &p->waiter);
            respond(p, 503, "every connection to the upstream is busy (max_connections)");
        }
        return;
    case P_START:
        respond(p, 503, "the upstream went away");
        return;
    case P_CONNECTING:
        fail(p, FAIL_CONNECT, 504, "connecting to the upstream timed out");
        return;
    case P_WAIT_HEAD:
        fail(p, FAIL_TIMEOUT, 504, "the upstream did not answer in time");
        return;
    case P_BODY:
        fail(p, FAIL_TIMEOUT, 504, "the upstream stalled while sending the body");
        return;
    }
}

void proxy_start(struct exchange *x)
{
    struct proxy *p = arena_calloc(x->arena, sizeof *p);
    const struct route_config *r = x->route;
    p->x = x;
    x->proxy = p;
    p->cfg = r->upstream;
    p->up = x->view->upstreams[r->upstream->index];
    p->retries_left = p->cfg->retries;
    p->stale_left = PROXY_MAX_STALE;
    p->timeout_ms = r->timeout_ms > 0 ? r->timeout_ms : p->cfg->timeout_ms;
    p->waiter.on_slot = on_slot;
    /* The timer lives in the arena: no malloc per request. */
    p->timer = arena_alloc(x->arena, event_get_struct_event_size());
    event_assign(p->timer, x->worker->base, -1, 0, on_timer, p);
    p->out = conn_buffer_get();
    if (x->req_has_body)
        p->replay = evbuffer_new();
    arena_cleanup_add(x->arena, on_cleanup, x);
    x->upstream_name = p->cfg->name;
    /* A body the exchange paused while filters ran is resumed as the upstream drains. */
    p->client_paused = x->body_held;
    x->body_held = false;
    /* RFC 9113 8.2.2: HTTP/2 carries TE only as "trailers", which gRPC requires. */
    bool te_trailers = p->cfg->protocol == UPSTREAM_H2 &&
                       header_has_token(&x->req_headers, SLICE_LIT("TE"), SLICE_LIT("trailers"));
    http1_client_prepare(x);
    if (te_trailers)
        header_add(&x->req_headers, SLICE_LIT("te"), SLICE_LIT("trailers"));
    if (p->cfg->protocol != UPSTREAM_H2)
        p->head = http1_client_head(x, &p->req_chunked);
    attempt(p);
}

/* ---- the response -------------------------------------------------------------- */

/* Finishes a complete response: connection back to the pool, exchange ended. */
static void complete(struct proxy *p)
{
    struct exchange *x = p->x;
    splice_stop(p);
    bool reuse = p->keepalive_ok && p->req_sent_end && evbuffer_get_length(p->uc->conn.out) == 0 &&
                 evbuffer_get_length(p->uc->conn.in) == 0 && !p->uc->conn.eof;
    event_del(p->timer);
    drop_conn(p, reuse);
    drop_target(p);
    if (!x->req_body_done)
        x->client->ops->pause_body(x, false); /* the codec closes after this response */
    proxy_cancel(x);
    exchange_end(x);
}

/* Moves response body bytes from the upstream to the client. Returns true when complete. */
static bool move_body(struct proxy *p, int *error)
{
    struct evbuffer *in = p->uc->conn.in;
    *error = 0;
    switch (p->resp_framing) {
    case HTTP1_BODY_NONE:
        return true;
    case HTTP1_BODY_LENGTH: {
        size_t take = evbuffer_get_length(in);
        if (take > p->resp_left)
            take = (size_t)p->resp_left;
        evbuffer_remove_buffer(in, p->out, take);
        p->resp_left -= take;
        return p->resp_left == 0;
    }
    case HTTP1_BODY_CHUNKED:
        while (evbuffer_get_length(in) > 0 && !http1_chunked_done(&p->chunked)) {
            struct evbuffer_iovec seg;
            if (evbuffer_peek(in, -1, NULL, &seg, 1) < 1)
                break;
            struct slice data = {0};
            ssize_t used = http1_chunked_decode(&p->chunked, seg.iov_base, seg.iov_len, &data);
            if (used < 0) {
                *error = 1;
                return false;
            }
            if (data.len) {
                evbuffer_drain(in, (size_t)(data.base - (const char *)seg.iov_base));
                evbuffer_remove_buffer(in, p->out, data.len);
            } else {
                evbuffer_drain(in, (size_t)used);
                if (used == 0)
                    break;
            }
        }
        return http1_chunked_done(&p->chunked);
    case HTTP1_BODY_CLOSE:
        evbuffer_add_buffer(p->out, in);
        return p->uc->conn.eof;
    }
    return false;
}

static void stream_body(struct proxy *p)
{
    struct exchange *x = p->x;
    int error;
    bool done = move_body(p, &error);
    if (error) {
        fail(p, FAIL_AFTER_SEND, 502, "the upstream sent an invalid chunked body");
        return;
    }
    if (evbuffer_get_length(p->out) || !done)
        exchange_send_body(x, p->out);
    if (done) {
        complete(p);
        return;
    }
    if (p->uc->conn.eof) {
        fail(p, FAIL_AFTER_SEND, 502, "the upstream closed the connection mid-body");
        return;
    }
    arm(p, p->timeout_ms);
    if (splice_try_start(p))
        return;
    /* Backpressure: a slow client stops us reading the upstream. */
    if (x->client->ops->pending(x) > PROXY_HIGH_WATER) {
        p->upstream_paused = true;
        conn_read_enable(&p->uc->conn, false);
    }
}

/* Parses the response head. Returns false when it is not complete yet (or failed). */
static bool read_head(struct proxy *p)
{
    struct exchange *x = p->x;
    struct evbuffer *in = p->uc->conn.in;
    for (;;) {
        size_t have = evbuffer_get_length(in);
        if (have == 0)
            break;
        p->got_byte = true;
        size_t look = have < PROXY_MAX_RESPONSE_HEAD ? have : PROXY_MAX_RESPONSE_HEAD;
        const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)look);
        struct http1_response_head rs;
        struct header scratch[128];
        int r = http1_parse_response(buf, look, &rs, scratch, 128);
        if (r == HTTP1_PARTIAL && look < PROXY_MAX_RESPONSE_HEAD)
            break;
        if (r < 0) {
            fail(p, FAIL_AFTER_SEND, 502, "the upstream sent an invalid response");
            return false;
        }
        if (rs.status >= 100 && rs.status < 200) {
            /* Interim responses are not forwarded (Expect is answered by the gateway). */
            if (rs.status == 101) {
                fail(p, FAIL_AFTER_SEND, 502, "the upstream switched protocols unasked");
                return false;
            }
            evbuffer_drain(in, (size_t)r);
            continue;
        }
        enum http1_framing framing;
        uint64_t length = 0;
        bool head_req = slice_eq(x->method, SLICE_LIT("HEAD"));
        if (http1_response_framing(rs.status, head_req, rs.headers, rs.num_headers, &framing,
                                   &length) < 0) {
            fail(p, FAIL_AFTER_SEND, 502, "the upstream's response framing is invalid");
            return false;
        }
        /* The head is copied into the arena: the buffer moves on to the body. */
        char *copy = arena_alloc(x->arena, (size_t)r);
        memcpy(copy, buf, (size_t)r);
        ptrdiff_t shift = copy - buf;
        struct header *fields = arena_alloc(x->arena, (rs.num_headers + 8) * sizeof *fields);
        for (size_t i = 0; i < rs.num_headers; i++) {
            fields[i].name = slice_make(rs.headers[i].name.base + shift, rs.headers[i].name.len);
            fields[i].value = slice_make(rs.headers[i].value.base + shift, rs.headers[i].value.len);
        }
        header_list_wrap(&x->resp_headers, x->arena, fields, rs.num_headers);
        x->resp_headers.cap = rs.num_headers + 8;
        p->keepalive_ok =
            framing != HTTP1_BODY_CLOSE &&
            (rs.minor_version == 1
                 ? !header_has_token(&x->resp_headers, SLICE_LIT("Connection"), SLICE_LIT("close"))
                 : header_has_token(&x->resp_headers, SLICE_LIT("Connection"),
                                    SLICE_LIT("keep-alive")));
        header_remove_hop_by_hop(&x->resp_headers, false);
        evbuffer_drain(in, (size_t)r);
        x->status = rs.status;
        x->upstream_head_us = now_us();
        p->resp_framing = framing;
        p->resp_left = length;
        http1_chunked_init(&p->chunked);
        if (framing == HTTP1_BODY_LENGTH) {
            x->resp_length = (int64_t)length;
        } else if (framing != HTTP1_BODY_NONE) {
            header_remove(&x->resp_headers, SLICE_LIT("Content-Length"));
            x->resp_length = -1;
        } else {
            const struct slice *cl = header_get(&x->resp_headers, SLICE_LIT("Content-Length"));
            x->resp_length = cl ? 0 : -1;
        }
        metrics_upstream_response(p->cfg->name, p->target->name, rs.status);
        p->state = P_BODY;
        exchange_send_head(x);
        return true;
    }
    if (p->uc->conn.eof) {
        fail(p, FAIL_AFTER_SEND, 502,
             p->got_byte ? "the upstream closed mid-head" : "the upstream closed the connection");
        return false;
    }
    return false;
}

static void on_upstream_read(struct conn *c)
{
    struct upconn *uc = c->owner;
    struct proxy *p = uc->user;
    if (p->state == P_WAIT_HEAD) {
        if (!read_head(p))
            return;
    }
    if (p->state == P_BODY)
        stream_body(p);
}

static void on_upstream_writable(struct conn *c)
{
    struct upconn *uc = c->owner;
    struct proxy *p = uc->user;
    if (p->state == P_CONNECTING) {
        send_request(p);
        return;
    }
    /* The upstream drained what we sent: let the client's body flow again. */
    if (p->client_paused) {
        p->client_paused = false;
        p->x->client->ops->pause_body(p->x, false);
    }
    pump_request(p);
}

static void on_upstream_error(struct conn *c, int err)
{
    struct upconn *uc = c->owner;
    struct proxy *p = uc->user;
    if (p->state == P_CONNECTING && c->tls_failed) {
        char why[256];
        tls_describe_failure(c, why, sizeof why);
        log_warn("upstream %s: TLS handshake with %s failed: %s", p->cfg->name, p->target->name,
                 why);
        fail(p, FAIL_CONNECT, 502, "the TLS handshake with the upstream failed");
        return;
    }
    if (p->state == P_CONNECTING) {
        fail(p, FAIL_CONNECT, 502, "the upstream refused the connection");
        return;
    }
    if (p->state == P_BODY && p->resp_framing == HTTP1_BODY_CLOSE && err == ECONNRESET) {
        fail(p, FAIL_AFTER_SEND, 502, "the upstream reset the connection");
        return;
    }
    fail(p, FAIL_AFTER_SEND, 502, "the upstream reset the connection");
}

void proxy_on_request_body(struct exchange *x)
{
    struct proxy *p = x->proxy;
    if (p->h2 || (p->uc && p->state != P_CONNECTING)) {
        pump_request(p);
        return;
    }
    /* Not connected yet: hold the body, but only up to the high-water mark. */
    if (!p->client_paused && !x->req_body_done &&
        evbuffer_get_length(x->req_body) > PROXY_HIGH_WATER) {
        p->client_paused = true;
        x->client->ops->pause_body(x, true);
    }
}

void proxy_on_client_drain(struct exchange *x)
{
    struct proxy *p = x->proxy;
    if (p->splice && !p->splice->request)
        return; /* a response splice watches the client socket itself */
    if (p->upstream_paused && p->h2) {
        p->upstream_paused = false;
        http2_client_pause(p->h2, false);
        return;
    }
    if (!p->upstream_paused || !p->uc)
        return;
    p->upstream_paused = false;
    conn_read_enable(&p->uc->conn, true);
    if (evbuffer_get_length(p->uc->conn.in) > 0 || p->uc->conn.eof)
        stream_body(p);
}

/* ---- HTTP/2 upstreams ----------------------------------------------------------
 *
 * The stream replaces the connection: http2_client.c frames the request and
 * parses the response; the states, timers, retries and backpressure stay
 * here. Its events come from the session's loop callbacks only.
 */

static void on_h2_connected(void *owner)
{
    struct proxy *p = owner;
    p->state = P_WAIT_HEAD;
    p->x->upstream_start_us = now_us();
    arm(p, p->timeout_ms);
}

static void on_h2_head(void *owner)
{
    struct proxy *p = owner;
    struct exchange *x = p->x;
    p->got_byte = true;
    x->upstream_head_us = now_us();
    metrics_upstream_response(p->cfg->name, p->target->name, x->status);
    p->state = P_BODY;
    arm(p, p->timeout_ms);
    exchange_send_head(x);
}

static void on_h2_body(void *owner, struct evbuffer *data)
{
    struct proxy *p = owner;
    struct exchange *x = p->x;
    exchange_send_body(x, data);
    arm(p, p->timeout_ms);
    /* Backpressure: a slow client holds back this stream's window, not the connection. */
    if (!p->upstream_paused && x->client->ops->pending(x) > PROXY_HIGH_WATER) {
        p->upstream_paused = true;
        http2_client_pause(p->h2, true);
    }
}

static void on_h2_end(void *owner)
{
    struct proxy *p = owner;
    struct exchange *x = p->x;
    event_del(p->timer);
    drop_conn(p, true);
    drop_target(p);
    if (!x->req_body_done)
        x->client->ops->pause_body(x, false); /* the codec closes after this response */
    proxy_cancel(x);
    exchange_end(x);
}

static void on_h2_fail(void *owner, enum http2_client_failure why, int status, const char *message)
{
    struct proxy *p = owner;
    switch (why) {
    case H2_FAIL_CONNECT:
        fail(p, FAIL_CONNECT, status, message);
        return;
    case H2_FAIL_REFUSED:
        /* Not processed by the upstream: retried like a stale keep-alive connection. */
        fail(p, FAIL_STALE, status, message);
        return;
    case H2_FAIL_RESET:
        fail(p, FAIL_AFTER_SEND, status, message);
        return;
    }
}

static void on_h2_body_drained(void *owner)
{
    struct proxy *p = owner;
    if (p->client_paused && !p->x->req_body_done) {
        p->client_paused = false;
        p->x->client->ops->pause_body(p->x, false);
    }
}

static const struct http2_stream_events h2_events = {
    .on_connected = on_h2_connected,
    .on_head = on_h2_head,
    .on_body = on_h2_body,
    .on_end = on_h2_end,
    .on_fail = on_h2_fail,
    .on_body_drained = on_h2_body_drained,
};

/* Opens a stream to p->target, replaying the body kept from an earlier attempt. */
static void start_h2(struct proxy *p)
{
    struct exchange *x = p->x;
    bool connecting = false;
    p->h2 = http2_client_open(x, p->target, p->cfg, &h2_events, p, &connecting);
    if (!p->h2) {
        fail(p, FAIL_CONNECT, 502, "cannot create a socket to the upstream");
        return;
    }
    p->got_byte = false;
    p->req_sent_end = false;
    if (p->replay && evbuffer_get_length(p->replay)) {
        struct evbuffer *copy = evbuffer_new();
        struct evbuffer_iovec v[32];
        int n = evbuffer_peek(p->replay, -1, NULL, v, 32);
        for (int i = 0; i < n && i < 32; i++)
            evbuffer_add(copy, v[i].iov_base, v[i].iov_len);
        http2_client_body(p->h2, copy, false);
        evbuffer_free(copy);
    }
    if (connecting) {
        p->state = P_CONNECTING;
        arm(p, p->cfg->connect_timeout_ms);
    } else {
        on_h2_connected(p);
    }
    pump_request(p);
}

/* ---- splicing large bodies ------------------------------------------------ */

static void splice_pump(struct proxy *p);

static void on_splice_event(evutil_socket_t fd, short what, void *arg)
{
    splice_pump(arg);
}

static void body_splice_pump(struct proxy *p);

static void on_body_splice_event(evutil_socket_t fd, short what, void *arg)
{
    body_splice_pump(arg);
}

/*
 * Writes what the pipe holds to `fd`, adding the bytes to *moved (if any).
 * Returns 1 once the pipe is empty, 0 when `fd` would block, -1 on error.
 */
static int pipe_drain(struct splice_state *s, int fd, uint64_t *moved)
{
    while (s->in_pipe > 0) {
        ssize_t n =
            splice(s->pipe_r, NULL, fd, NULL, s->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            s->in_pipe -= (size_t)n;
            if (moved)
                *moved += (uint64_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        return -1;
    }
    return 1;
}

/*
 * Sets up a transfer through the pipe `fds`: the response body (upstream
 * readable, client writable) or, with `request`, the request body's `left`
 * bytes (client readable, upstream writable). Events live in the arena.
 */
static void splice_begin(struct proxy *p, bool request, int fds[2], int client_fd, uint64_t left)
{
    struct exchange *x = p->x;
    struct splice_state *s = arena_calloc(x->arena, sizeof *s);
    s->request = request;
    s->left = left;
    s->pipe_r = fds[0];
    s->pipe_w = fds[1];
    s->client_fd = client_fd;
    s->up_ev = arena_alloc(x->arena, event_get_struct_event_size());
    s->cl_ev = arena_alloc(x->arena, event_get_struct_event_size());
    event_callback_fn cb = request ? on_body_splice_event : on_splice_event;
    event_assign(s->up_ev, x->worker->base, p->uc->conn.fd,
                 request ? EV_WRITE : EV_READ | EV_PERSIST, cb, p);
    event_assign(s->cl_ev, x->worker->base, client_fd, request ? EV_READ : EV_WRITE, cb, p);
    p->splice = s;
}

/* The client socket failed mid-transfer: end everything, nothing more is sent. */
static void splice_client_gone(struct proxy *p)
{
    struct exchange *x = p->x;
    splice_stop(p);
    drop_conn(p, false);
    drop_target(p);
    proxy_cancel(x);
    exchange_abort(x);
}

static void splice_stop(struct proxy *p)
{
    struct splice_state *s = p->splice;
    if (!s)
        return;
    p->splice = NULL;
    event_del(s->up_ev);
    event_del(s->cl_ev);
    pipe_put((int[2]){s->pipe_r, s->pipe_w}, s->in_pipe == 0);
    /* The connection may go back to the pool: let conn.c watch it again. */
    if (p->uc)
        conn_read_enable(&p->uc->conn, true);
}

/*
 * Starts splicing when everything allows it: a plain HTTP/1 upstream with
 * nothing buffered, a Content-Length body with enough left, and a client
 * that takes raw bytes with nothing pending. Returns true when started.
 */
static bool splice_try_start(struct proxy *p)
{
    struct exchange *x = p->x;
    if (p->splice || p->h2 || !p->uc || p->uc->conn.ssl || p->resp_framing != HTTP1_BODY_LENGTH ||
        p->resp_left < SPLICE_MIN || evbuffer_get_length(p->uc->conn.in) > 0 ||
        !x->client->ops->splice_fd)
        return false;
    int client_fd = x->client->ops->splice_fd(x);
    if (client_fd < 0)
        return false;
    int fds[2];
    if (pipe_get(fds) < 0)
        return false;
    splice_begin(p, false, fds, client_fd, 0);
    conn_read_enable(&p->uc->conn, false);
    splice_pump(p);
    return true;
}

/* Moves as much as the sockets take now; waits on whichever side blocks. */
static void splice_pump(struct proxy *p)
{
    struct splice_state *s = p->splice;
    struct exchange *x = p->x;
    for (;;) {
        int drained = pipe_drain(s, s->client_fd, &x->bytes_out);
        if (drained == 0) {
            /* The client is slow: stop reading the upstream until it drains. */
            event_del(s->up_ev);
            event_add(s->cl_ev, NULL);
            arm(p, p->timeout_ms);
            return;
        }
        if (drained < 0) {
            splice_client_gone(p); /* nothing more can reach it */
            return;
        }
        if (p->resp_left == 0) {
            complete(p);
            return;
        }
        size_t want = p->resp_left < SPLICE_PIPE ? (size_t)p->resp_left : SPLICE_PIPE;
        ssize_t n =
            splice(p->uc->conn.fd, NULL, s->pipe_w, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            p->resp_left -= (uint64_t)n;
            s->in_pipe += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            event_add(s->up_ev, NULL);
            arm(p, p->timeout_ms);
            return;
        }
        fail(p, FAIL_AFTER_SEND, 502,
             n == 0 ? "the upstream closed the connection mid-body"
                    : "the upstream reset the connection");
        return;
    }
}

/* ---- splicing large request bodies ------------------------------------------- */

/*
 * Starts moving the rest of a large Content-Length request body from the
 * client socket to a plain HTTP/1 upstream with splice(2), once everything
 * buffered so far has been written. The body is then not kept for a retry.
 */
static bool body_splice_try_start(struct proxy *p)
{
    struct exchange *x = p->x;
    struct upconn *uc = p->uc;
    if (p->splice || p->h2 || !uc || uc->conn.ssl || p->req_chunked || x->req_body_done ||
        evbuffer_get_length(x->req_body) > 0 || evbuffer_get_length(uc->conn.out) > 0 ||
        !x->client->ops->body_splice_fd)
        return false;
    uint64_t left = 0;
    int fds[2];
    if (pipe_get(fds) < 0)
        return false;
    int client_fd = x->client->ops->body_splice_fd(x, &left);
    if (client_fd < 0) {
        pipe_put(fds, true);
        return false;
    }
    splice_begin(p, true, fds, client_fd, left);
    p->body_streamed = true;
    if (p->replay) {
        evbuffer_free(p->replay);
        p->replay = NULL;
    }
    body_splice_pump(p);
    return true;
}

static void body_splice_pump(struct proxy *p)
{
    struct splice_state *s = p->splice;
    struct exchange *x = p->x;
    for (;;) {
        int drained = pipe_drain(s, p->uc->conn.fd, NULL);
        if (drained == 0) {
            event_add(s->up_ev, NULL);
            arm(p, p->timeout_ms);
            return;
        }
        if (drained < 0) {
            fail(p, FAIL_AFTER_SEND, 502, "the upstream reset the connection");
            return;
        }
        if (s->left == 0) {
            /* All of the body went upstream: back to waiting for the response. */
            splice_stop(p);
            p->req_sent_end = true;
            arm(p, p->timeout_ms);
            return;
        }
        size_t want = s->left < SPLICE_PIPE ? (size_t)s->left : SPLICE_PIPE;
        ssize_t n =
            splice(s->client_fd, NULL, s->pipe_w, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            s->left -= (uint64_t)n;
            s->in_pipe += (size_t)n;
            x->client->ops->body_spliced(x, (uint64_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            event_add(s->cl_ev, NULL);
            arm(p, x->snapshot->limits.body_timeout_ms);
            return;
        }
        splice_client_gone(p); /* closed or reset mid-body: nobody is left to answer */
        return;
    }
}
