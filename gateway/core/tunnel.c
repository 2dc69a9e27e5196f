/*
 * tunnel: the WebSocket relay after a 101 (see the header).
 */
#include "core/tunnel.h"

#include <stdbool.h>

#include <event2/buffer.h>

#include "base/container_of.h"
#include "base/deadline.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "core/worker.h"
#include "net/conn.h"
#include "net/splice.h"
#include "ops/metrics.h"
#include "upstream/codec.h"

struct tunnel {
    struct exchange *x;
    struct upstream_stream *stream; /* owns the upstream connection; NULL once stopped */
    struct conn *up;
    struct deadline idle; /* websocket_idle_timeout_ms with no byte either way */
    struct deadline kick; /* deferred work: the end, a failure */
    int idle_ms;
    bool reason_set;      /* x->close_reason says who closed first */
    bool client_paused;   /* the client is not read: the upstream's output is full */
    bool up_paused;       /* the upstream is not read: the client's output is full */
    bool client_fin;      /* the client sent its FIN */
    bool client_fin_sent; /* ... and it went on to the upstream */
    bool up_fin;          /* the upstream sent its FIN (passed on to the client) */
    bool failed;          /* a write or a connection failed: abort from the loop */
    /* Two plain sockets: the kernel moves the bytes, one pipe each way (net/splice). */
    struct splice *c2u; /* client to upstream; NULL when evbuffers relay */
    struct splice *u2c; /* upstream to client */
};

static void set_reason(struct tunnel *t, const char *why)
{
    if (t->reason_set)
        return;
    t->reason_set = true;
    t->x->close_reason = why;
}

static void activity(struct tunnel *t)
{
    deadline_arm(t->x->worker->deadlines, &t->idle, t->idle_ms);
}

static void later(struct tunnel *t)
{
    deadline_defer(t->x->worker->deadlines, &t->kick);
}

static void fail_later(struct tunnel *t, const char *why)
{
    set_reason(t, why);
    t->failed = true;
    later(t);
}

/* Both FINs went through: end from the loop. */
static void check_done(struct tunnel *t)
{
    if (t->client_fin_sent && t->up_fin)
        later(t);
}

/* Client bytes (and its FIN) to the upstream; pauses the client past the mark. */
static void to_upstream(struct tunnel *t)
{
    struct exchange *x = t->x;
    if (!t->stream || t->failed)
        return;
    size_t len = evbuffer_get_length(x->req_body);
    if (len) {
        activity(t);
        evbuffer_add_buffer(t->up->out, x->req_body);
        if (conn_flush(t->up) < 0) {
            fail_later(t, "upstream");
            return;
        }
    }
    size_t held = evbuffer_get_length(t->up->out);
    if (x->req_body_done && !t->client_fin) {
        t->client_fin = true;
        set_reason(t, "client");
    }
    if (t->client_fin && !t->client_fin_sent && held == 0) {
        t->client_fin_sent = true;
        conn_shutdown_write(t->up);
        check_done(t);
    }
    bool full = held > UPSTREAM_HIGH_WATER;
    if (full != t->client_paused && !t->client_fin) {
        t->client_paused = full;
        exchange_pause_request_body(x, full);
    }
}

/* Upstream bytes (and its FIN) to the client; stops reading the upstream past the mark. */
static void to_client(struct tunnel *t)
{
    struct exchange *x = t->x;
    if (!t->stream || t->failed || t->up_paused)
        return;
    if (evbuffer_get_length(t->up->in)) {
        activity(t);
        exchange_send_body(x, t->up->in);
    }
    if (t->up->eof && !t->up_fin) {
        t->up_fin = true;
        set_reason(t, "upstream");
        x->client->ops->tunnel_shutdown(x);
        check_done(t);
        return;
    }
    if (exchange_pending(x) > UPSTREAM_HIGH_WATER) {
        t->up_paused = true;
        conn_read_enable(t->up, false);
    }
}

/* ---- upstream connection events ---------------------------------------------------- */

static void on_up_read(struct conn *c)
{
    to_client(c->owner);
}

static void on_up_writable(struct conn *c)
{
    /* The upstream took what was queued: the client may send more, or its FIN goes on. */
    to_upstream(c->owner);
}

static void on_up_error(struct conn *c, int err)
{
    (void)err;
    fail_later(c->owner, "upstream");
}

static const struct conn_events up_events = {
    .on_read = on_up_read,
    .on_writable = on_up_writable,
    .on_error = on_up_error,
};

/* ---- splice between two plain sockets ---------------------------------------------- */

/* Stops one direction's transfer (its events may not fire again); NULL after. */
static void splice_end(struct splice **s)
{
    splice_stop(*s);
    *s = NULL;
}

static void on_c2u_read(void *owner, size_t n)
{
    struct tunnel *t = owner;
    t->x->bytes_in += n;
    activity(t);
}

static void on_u2c_written(void *owner, size_t n)
{
    struct tunnel *t = owner;
    t->x->bytes_out += n;
    activity(t);
}

static void on_nothing(void *owner, size_t n)
{
    (void)owner;
    (void)n;
}

static void on_splice_wait(void *owner, enum splice_end end)
{
    (void)owner;
    (void)end;
}

static void on_splice_done(void *owner)
{
    (void)owner; /* never: a tunnel's transfers have no length */
}

static void on_c2u_error(void *owner, enum splice_end end, int err)
{
    struct tunnel *t = owner;
    if (end == SPLICE_SRC && err == 0) {
        /* The client's FIN, after all it sent reached the upstream: pass it on. */
        splice_end(&t->c2u);
        t->client_fin = true;
        set_reason(t, "client");
        conn_shutdown_write(t->up);
        t->client_fin_sent = true;
        check_done(t);
        return;
    }
    splice_end(&t->c2u);
    fail_later(t, end == SPLICE_SRC ? "client" : "upstream");
}

static void on_u2c_error(void *owner, enum splice_end end, int err)
{
    struct tunnel *t = owner;
    if (end == SPLICE_SRC && err == 0) {
        splice_end(&t->u2c);
        t->up_fin = true;
        set_reason(t, "upstream");
        t->x->client->ops->tunnel_shutdown(t->x);
        check_done(t);
        return;
    }
    splice_end(&t->u2c);
    fail_later(t, end == SPLICE_DST ? "client" : "upstream");
}

static const struct splice_events c2u_events = {
    .on_read = on_c2u_read,
    .on_written = on_nothing,
    .on_wait = on_splice_wait,
    .on_done = on_splice_done,
    .on_error = on_c2u_error,
};

static const struct splice_events u2c_events = {
    .on_read = on_nothing,
    .on_written = on_u2c_written,
    .on_wait = on_splice_wait,
    .on_done = on_splice_done,
    .on_error = on_u2c_error,
};

/*
 * Hands both directions to net/splice when both ends are plain sockets with
 * nothing buffered (no pipe: the evbuffer relay goes on). The pipes are the
 * buffers, so backpressure is theirs: a full pipe stops reading its source.
 */
static void splice_try(struct tunnel *t)
{
    struct exchange *x = t->x;
    struct conn *up = t->up;
    if (!x->client->ops->tunnel_fd || up->ssl || up->eof || evbuffer_get_length(up->in) ||
        evbuffer_get_length(up->out) || evbuffer_get_length(x->req_body) || x->req_body_done)
        return;
    int a[2], b[2];
    if (splice_pipe_get(a) < 0)
        return;
    if (splice_pipe_get(b) < 0) {
        splice_pipe_put(a, true);
        return;
    }
    int cfd = x->client->ops->tunnel_fd(x);
    if (cfd < 0) {
        splice_pipe_put(a, true);
        splice_pipe_put(b, true);
        return;
    }
    conn_read_enable(up, false);
    struct event_base *base = x->worker->base;
    t->c2u = splice_start(x->arena, base, a, cfd, up->fd, UINT64_MAX, &c2u_events, t);
    t->u2c = splice_start(x->arena, base, b, up->fd, cfd, UINT64_MAX, &u2c_events, t);
    /* Their events only record or defer: nothing ends the tunnel under these calls. */
    splice_run(t->c2u);
    splice_run(t->u2c);
}

/* ---- timers ------------------------------------------------------------------------ */

static void on_idle(struct deadline *d)
{
    struct tunnel *t = container_of(d, struct tunnel, idle);
    struct exchange *x = t->x;
    x->close_reason = "idle";
    t->reason_set = true;
    tunnel_stop(t);
    exchange_abort(x);
}

static void on_kick(struct deadline *d)
{
    struct tunnel *t = container_of(d, struct tunnel, kick);
    struct exchange *x = t->x;
    if (t->failed) {
        tunnel_stop(t);
        exchange_abort(x);
        return;
    }
    if (t->client_fin_sent && t->up_fin) {
        /* Both sides are done: the client side closes after what it still has to write. */
        tunnel_stop(t);
        exchange_end(x);
    }
}

/* ---- the tunnel's life ----------------------------------------------------------- */

struct tunnel *tunnel_start(struct exchange *x, struct upstream_stream *stream, struct conn *up)
{
    struct tunnel *t = arena_calloc(x->arena, sizeof *t);
    t->x = x;
    t->stream = stream;
    t->up = up;
    t->idle_ms = x->snapshot->limits.websocket_idle_timeout_ms;
    deadline_init(&t->idle, on_idle);
    deadline_init(&t->kick, on_kick);
    /* Until one side closes, a client that goes away is the reason. */
    x->close_reason = "client";
    metrics_tunnel_opened();
    conn_set_owner(up, &up_events, t);
    conn_read_enable(up, true);
    x->req_body_done = false;
    x->client->ops->tunnel(x);
    activity(t);
    /* Bytes that came with the 101 go to the client at once. */
    to_client(t);
    splice_try(t);
    return t;
}

void tunnel_on_client_data(struct tunnel *t)
{
    to_upstream(t);
}

void tunnel_on_client_drain(struct tunnel *t)
{
    if (!t->stream || !t->up_paused)
        return;
    t->up_paused = false;
    conn_read_enable(t->up, true);
    to_client(t);
}

void tunnel_stop(struct tunnel *t)
{
    if (!t || !t->stream)
        return;
    struct upstream_stream *s = t->stream;
    t->stream = NULL;
    deadline_cancel(&t->idle);
    deadline_cancel(&t->kick);
    splice_end(&t->c2u);
    splice_end(&t->u2c);
    s->ops->cancel(s);
    metrics_tunnel_closed();
}
