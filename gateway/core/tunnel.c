/*
 * tunnel: the WebSocket relay after a 101 (see the header).
 */
#include "core/tunnel.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "base/container_of.h"
#include "base/deadline.h"
#include "base/log.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "core/worker.h"
#include "net/conn.h"
#include "net/splice.h"
#include "ops/accesslog.h"
#include "ops/metrics.h"
#include "upstream/codec.h"
#include "upstream/pool.h"
#include "upstream/target.h"

/* A relayed read larger than this is bulk: that direction moves socket to socket (splice). */
#define TUNNEL_SPLICE_MIN (16 * 1024)

/* A splice whose source had nothing more for this long gives its pipe back. */
#define TUNNEL_PIPE_IDLE_MS 200

struct tunnel {
    struct exchange shell; /* what the client codec and the access log see from the 101 on */
    struct exchange *x;    /* &shell */
    struct upconn *uc;     /* the upstream connection; NULL once stopped */
    struct conn *up;       /* &uc->conn */
    struct target *target; /* its in_flight counts this tunnel until the end */
    struct deadline idle;  /* websocket_idle_timeout_ms with no byte either way */
    struct deadline kick;  /* deferred work: the end, a failure */
    struct deadline pipes; /* a splice with nothing to move gives its pipe back */
    int idle_ms;
    bool reason_set;      /* x->close_reason says who closed first */
    bool client_paused;   /* the client is not read: the upstream's output is full */
    bool up_paused;       /* the upstream is not read: the client's output is full */
    bool client_fin;      /* the client sent its FIN */
    bool client_fin_sent; /* ... and it went on to the upstream */
    bool up_fin;          /* the upstream sent its FIN (passed on to the client) */
    bool failed;          /* a write or a connection failed: abort from the loop */
    bool c2u_waiting;     /* the client-to-upstream splice waits on its source, pipe empty */
    bool u2c_waiting;
    /* Bulk between two plain sockets: the kernel moves the bytes, one pipe per direction. */
    struct splice *c2u; /* client to upstream; NULL while evbuffers relay */
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

/* Bytes in a connection buffer that may have been lent back (NULL: none). */
static size_t held_in(const struct evbuffer *b)
{
    return b ? evbuffer_get_length(b) : 0;
}

/*
 * Between messages the upstream connection holds no evbuffer (conn.c lends
 * them to the thread's cache; its next read borrows a pair back), so an
 * idle tunnel does not keep two.
 */
static void rest(struct tunnel *t)
{
    if (t->uc && !t->failed)
        conn_release_buffers(t->up);
}

static void splice_c2u(struct tunnel *t);
static void splice_u2c(struct tunnel *t);
static void stop(struct tunnel *t);
static const struct exchange_tunnel_ops shell_ops;

/* Client bytes (and its FIN) to the upstream; pauses the client past the mark. */
static void to_upstream(struct tunnel *t)
{
    struct exchange *x = t->x;
    if (!t->uc || t->failed || t->c2u)
        return;
    size_t len = evbuffer_get_length(x->req_body);
    if (len) {
        activity(t);
        if (conn_borrow_buffers(t->up) < 0) {
            fail_later(t, "upstream");
            return;
        }
        evbuffer_add_buffer(t->up->out, x->req_body);
        if (conn_flush(t->up) < 0) {
            fail_later(t, "upstream");
            return;
        }
    }
    size_t held = held_in(t->up->out);
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
    if (len > TUNNEL_SPLICE_MIN && held == 0)
        splice_c2u(t);
    rest(t);
}

/* Upstream bytes (and its FIN) to the client; stops reading the upstream past the mark. */
static void to_client(struct tunnel *t)
{
    struct exchange *x = t->x;
    if (!t->uc || t->failed || t->up_paused || t->u2c)
        return;
    size_t len = held_in(t->up->in);
    if (len) {
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
    size_t pending = exchange_pending(x);
    if (pending > UPSTREAM_HIGH_WATER) {
        t->up_paused = true;
        conn_read_enable(t->up, false);
        return;
    }
    if (len > TUNNEL_SPLICE_MIN && pending == 0)
        splice_u2c(t);
    rest(t);
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

/* ---- splice between two plain sockets, while bulk moves ----------------------------- */

/* Stops one direction's transfer (its events may not fire again; the pipe goes back). */
static void splice_end(struct splice **s)
{
    splice_stop(*s);
    *s = NULL;
}

/* The client-to-upstream bytes go through evbuffers again: the codec reads the client. */
static void c2u_to_buffers(struct tunnel *t)
{
    splice_end(&t->c2u);
    t->c2u_waiting = false;
    t->x->client->ops->tunnel_reads(t->x, true);
}

static void u2c_to_buffers(struct tunnel *t)
{
    splice_end(&t->u2c);
    t->u2c_waiting = false;
    conn_read_enable(t->up, true);
}

static void on_c2u_read(void *owner, size_t n)
{
    struct tunnel *t = owner;
    t->x->bytes_in += n;
    t->c2u_waiting = false;
    activity(t);
}

static void on_u2c_read(void *owner, size_t n)
{
    struct tunnel *t = owner;
    (void)n;
    t->u2c_waiting = false;
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

/* The pipe is empty and the source has nothing: give the pipe back if it stays so. */
static void source_quiet(struct tunnel *t, bool *waiting)
{
    *waiting = true;
    deadline_arm(t->x->worker->deadlines, &t->pipes, TUNNEL_PIPE_IDLE_MS);
}

static void on_c2u_wait(void *owner, enum splice_end end)
{
    struct tunnel *t = owner;
    if (end == SPLICE_SRC)
        source_quiet(t, &t->c2u_waiting);
}

static void on_u2c_wait(void *owner, enum splice_end end)
{
    struct tunnel *t = owner;
    if (end == SPLICE_SRC)
        source_quiet(t, &t->u2c_waiting);
}

static void on_splice_done(void *owner)
{
    (void)owner; /* never: a tunnel's transfers have no length */
}

static void on_c2u_error(void *owner, enum splice_end end, int err)
{
    struct tunnel *t = owner;
    splice_end(&t->c2u);
    if (end == SPLICE_SRC && err == 0) {
        /* The client's FIN, after all it sent reached the upstream: pass it on. */
        t->client_fin = true;
        set_reason(t, "client");
        conn_shutdown_write(t->up);
        t->client_fin_sent = true;
        check_done(t);
        return;
    }
    fail_later(t, end == SPLICE_SRC ? "client" : "upstream");
}

static void on_u2c_error(void *owner, enum splice_end end, int err)
{
    struct tunnel *t = owner;
    splice_end(&t->u2c);
    if (end == SPLICE_SRC && err == 0) {
        t->up_fin = true;
        set_reason(t, "upstream");
        t->x->client->ops->tunnel_shutdown(t->x);
        check_done(t);
        return;
    }
    fail_later(t, end == SPLICE_DST ? "client" : "upstream");
}

static const struct splice_events c2u_events = {
    .on_read = on_c2u_read,
    .on_written = on_nothing,
    .on_wait = on_c2u_wait,
    .on_done = on_splice_done,
    .on_error = on_c2u_error,
};

static const struct splice_events u2c_events = {
    .on_read = on_u2c_read,
    .on_written = on_u2c_written,
    .on_wait = on_u2c_wait,
    .on_done = on_splice_done,
    .on_error = on_u2c_error,
};

/* Both ends are plain sockets: the client's fd, or -1. */
static int plain_client_fd(struct tunnel *t)
{
    if (t->up->ssl || !t->x->client->ops->tunnel_fd)
        return -1;
    return t->x->client->ops->tunnel_fd(t->x);
}

/*
 * Bulk from the client with nothing buffered either way: the rest moves
 * socket to socket until the client pauses. Without a pipe the evbuffers
 * go on.
 */
static void splice_c2u(struct tunnel *t)
{
    int cfd = plain_client_fd(t);
    if (cfd < 0 || t->client_fin || t->client_paused || held_in(t->up->out))
        return;
    int fds[2];
    if (splice_pipe_get(fds) < 0)
        return;
    if (!t->x->client->ops->tunnel_reads(t->x, false)) {
        splice_pipe_put(fds, true);
        return;
    }
    t->c2u =
        splice_start(NULL, t->x->worker->base, fds, cfd, t->up->fd, UINT64_MAX, &c2u_events, t);
    if (!t->c2u) {
        splice_pipe_put(fds, true);
        t->x->client->ops->tunnel_reads(t->x, true);
        return;
    }
    /* Its events only record or defer: nothing ends the tunnel under this call. */
    splice_run(t->c2u);
}

static void splice_u2c(struct tunnel *t)
{
    int cfd = plain_client_fd(t);
    if (cfd < 0 || t->up_fin || t->up->eof || held_in(t->up->in))
        return;
    int fds[2];
    if (splice_pipe_get(fds) < 0)
        return;
    t->u2c =
        splice_start(NULL, t->x->worker->base, fds, t->up->fd, cfd, UINT64_MAX, &u2c_events, t);
    if (!t->u2c) {
        splice_pipe_put(fds, true);
        return;
    }
    conn_read_enable(t->up, false);
    splice_run(t->u2c);
}

/* ---- timers ------------------------------------------------------------------------ */

static void on_idle(struct deadline *d)
{
    struct tunnel *t = container_of(d, struct tunnel, idle);
    struct exchange *x = t->x;
    x->close_reason = "idle";
    t->reason_set = true;
    stop(t);
    exchange_abort(x);
}

static void on_kick(struct deadline *d)
{
    struct tunnel *t = container_of(d, struct tunnel, kick);
    struct exchange *x = t->x;
    if (t->failed) {
        stop(t);
        exchange_abort(x);
        return;
    }
    if (t->client_fin_sent && t->up_fin) {
        /* Both sides are done: the client side closes after what it still has to write. */
        stop(t);
        exchange_end(x);
    }
}

/* A splice that waited on its source with an empty pipe since: back to the evbuffers. */
static void on_pipes(struct deadline *d)
{
    struct tunnel *t = container_of(d, struct tunnel, pipes);
    if (t->c2u && t->c2u_waiting) {
        c2u_to_buffers(t);
        to_upstream(t);
    }
    if (t->u2c && t->u2c_waiting) {
        u2c_to_buffers(t);
        to_client(t);
    }
    if (t->c2u || t->u2c)
        deadline_arm(t->x->worker->deadlines, &t->pipes, TUNNEL_PIPE_IDLE_MS);
}

/* ---- the tunnel's life ----------------------------------------------------------- */

/*
 * The request's fields the access-log line prints, copied into the shell's
 * own small arena (nothing when the log is off: the metrics need only the
 * route, which lives in the snapshot).
 */
static void keep_fields(struct exchange *to, const struct exchange *from)
{
    static const struct slice names[] = {SLICE_LIT("Referer"), SLICE_LIT("User-Agent")};
    struct arena *a = to->arena;
    to->request_id = arena_slice_dup(a, from->request_id);
    to->method = arena_slice_dup(a, from->method);
    to->target = arena_slice_dup(a, from->target);
    to->host = arena_slice_dup(a, from->host);
    to->path = arena_slice_dup(a, from->path);
    to->consumer = arena_slice_dup(a, from->consumer);
    to->client_subject = arena_slice_dup(a, from->client_subject);
    struct header *fields = arena_alloc(a, sizeof names / sizeof *names * sizeof *fields);
    size_t n = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const struct slice *v = header_get(&from->req_headers, names[i]);
        if (v) {
            fields[n].name = names[i];
            fields[n].value = arena_slice_dup(a, *v);
            n++;
        }
    }
    header_list_wrap(&to->req_headers, a, fields, n);
}

void tunnel_start(struct exchange *x, struct conn *up, struct target *target)
{
    struct tunnel *t = calloc(1, sizeof *t);
    struct evbuffer *body = conn_buffer_get();
    if (!t || !body) {
        log_error("out of memory");
        abort();
    }
    /*
     * The shell: the exchange's state without its filters, proxy or big
     * arena. Its own arena, the smallest one, exists only when needed: for
     * the access log's copies, or made by a codec for its cleanups.
     */
    bool logged = accesslog_enabled(&x->snapshot->access_log);
    struct exchange *s = &t->shell;
    *s = *x;
    s->arena = logged ? arena_new(0) : NULL;
    s->proxy = NULL;
    s->tunnel = t;
    s->tunnel_ops = &shell_ops;
    s->req_body = body;
    s->gw_body = NULL;
    s->filter_state = NULL;
    s->hold = NULL;
    s->body_watched = false;
    s->match = (struct route_match){0};
    s->ws_accept = (struct slice){0};
    header_list_init(&s->req_headers, s->arena, 0);
    header_list_init(&s->resp_headers, s->arena, 0);
    header_list_init(&s->resp_trailers, s->arena, 0);
    s->request_id = s->method = s->target = s->host = s->path = (struct slice){0};
    s->query = s->consumer = s->client_subject = (struct slice){0};
    if (logged)
        keep_fields(s, x);
    s->view->refs++; /* released by tunnel_free; x releases its own */

    t->x = s;
    t->uc = container_of(up, struct upconn, conn);
    t->up = up;
    t->target = target;
    t->idle_ms = s->snapshot->limits.websocket_idle_timeout_ms;
    deadline_init(&t->idle, on_idle);
    deadline_init(&t->kick, on_kick);
    deadline_init(&t->pipes, on_pipes);
    /* Until one side closes, a client that goes away is the reason. */
    s->close_reason = "client";
    metrics_tunnel_opened();
    conn_set_owner(up, &up_events, t);
    conn_read_enable(up, true);
    s->req_body_done = false;
    /* The codec takes the shell (and unhooks x's body), then the client's early bytes follow. */
    s->client->ops->tunnel(s);
    evbuffer_add_buffer(s->req_body, x->req_body);
    activity(t);
    /* Bytes that came with the 101 go to the client at once. */
    to_client(t);
    if (evbuffer_get_length(s->req_body))
        to_upstream(t);
}

static void on_client_data(struct tunnel *t)
{
    to_upstream(t);
}

static void on_client_drain(struct tunnel *t)
{
    if (!t->uc || !t->up_paused)
        return;
    t->up_paused = false;
    conn_read_enable(t->up, true);
    to_client(t);
}

static void stop(struct tunnel *t)
{
    if (!t || !t->uc)
        return;
    struct upconn *uc = t->uc;
    t->uc = NULL;
    deadline_cancel(&t->idle);
    deadline_cancel(&t->kick);
    deadline_cancel(&t->pipes);
    splice_end(&t->c2u);
    splice_end(&t->u2c);
    pool_close_conn(uc);
    t->up = NULL;
    if (t->target) {
        t->target->in_flight--;
        t->target = NULL;
    }
    metrics_tunnel_closed();
}

static void tunnel_free(struct tunnel *t)
{
    stop(t);
    struct worker_snapshot *view = t->shell.view;
    arena_free(t->shell.arena); /* the codec's cleanups first: they unhook the body */
    conn_buffer_put(t->shell.req_body);
    free(t);
    worker_snapshot_release(view);
}

static const struct exchange_tunnel_ops shell_ops = {
    .on_client_data = on_client_data,
    .on_client_drain = on_client_drain,
    .free = tunnel_free,
};
