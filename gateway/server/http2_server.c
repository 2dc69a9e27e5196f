#include "server/http2_server.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "base/blockpool.h"
#include "base/clock.h"
#include "base/container_of.h"
#include "conf/config.h"
#include "net/addr.h"
#include "net/conn.h"
#include "core/exchange.h"
#include "net/listener.h"
#include "net/loop.h"
#include "base/log.h"
#include "ops/metrics.h"
#include "proto/fields.h"
#include "proto/websocket.h"
#include "net/tls.h"
#include "core/worker.h"

/*
 * How the codec stays re-entrancy safe: nghttp2 callbacks only record what
 * happened on the stream (flags, body bytes into x->req_body); every call
 * into an exchange is made from run(), after nghttp2_session_mem_recv or
 * nghttp2_session_send returned. Side operations only queue frames and
 * schedule run() on the `work` event; they never send or call back.
 */

/* The stream flow-control window: how much request body one stream may have in flight. */
#define H2_STREAM_WINDOW (256 * 1024)
/* The connection window: shared by every stream of the connection. */
#define H2_CONN_WINDOW (8 * 1024 * 1024)
/* Frames are serialised into c->out only while it holds less than this. */
#define H2_OUT_HIGH (64 * 1024)
/* A stream is told to send more once its buffered response falls below this. */
#define H2_STREAM_LOW (64 * 1024)
/* Response bytes buffered for all streams of a connection before every stream reports full. */
#define H2_CONN_BUDGET (1024 * 1024)
/* Reported by pending() while the connection is over its budget (above the proxy's mark). */
#define H2_FULL (512 * 1024)
/* How long a connection that is closing waits for its last frames to leave. */
#define H2_LINGER_MS 1000
/* Between the shutdown notice and the final GOAWAY when draining (one round trip, roughly). */
#define H2_DRAIN_NOTICE_MS 200

/* Defences (ENHANCE_YOUR_CALM past these). */
#define H2_MAX_RESETS_PER_SEC 100   /* rapid reset: RST_STREAM received or refused streams */
#define H2_SEEN_IDS 512             /* odd stream ids remembered below the highest */
#define H2_MAX_CONTROL_PER_SEC 1000 /* PING, SETTINGS, PRIORITY, empty DATA, unknown frames */
#define H2_MAX_OUTBOUND_ACK 1000    /* queued SETTINGS/PING ACKs nghttp2 keeps for a non-reader */
#define H2_MAX_SETTINGS 32          /* entries in one SETTINGS frame */
#define H2_MAX_CONTINUATIONS 8      /* CONTINUATION frames after one HEADERS */
#define H2_HEADER_TABLE_SIZE 4096   /* HPACK dynamic table, both directions */
#define H2_HEADER_BOMB_FACTOR 4     /* decoded header bytes/fields over 4x the limits */
#define H2_HEADER_BOMB_MIN (64 * 1024) /* ... and never less than this many bytes */

struct h2_conn;

struct h2_stream {
    struct h2_stream *next;
    struct h2_stream *prev;
    struct h2_conn *h;
    struct exchange_side side;
    struct exchange *x;    /* NULL once the exchange is gone */
    struct evbuffer *body; /* x->req_body while the exchange lives */
    struct evbuffer_cb_entry *body_cb;
    struct evbuffer *out; /* response body waiting for DATA frames */
    nghttp2_nv *trailers; /* copied at send_end: the exchange is freed right after */
    size_t num_trailers;
    int32_t id;
    struct slice authority;
    struct slice protocol; /* :protocol of an extended CONNECT (RFC 8441) */
    size_t header_bytes;   /* decoded, this header block */
    size_t header_fields;
    uint64_t req_total; /* request body bytes */
    int error_status;   /* answer this instead of starting (431) */
    unsigned cookies;   /* Cookie fields in the request head */
    bool has_host;      /* ... a Host field, Content-Length, Expect: start_stream looks only then */
    bool has_length;
    bool has_expect;
    const char *error_message;
    bool ready;         /* the request head is complete */
    bool started;       /* exchange_start ran */
    bool malformed;     /* reset for an invalid field: never started */
    bool headers_ended; /* END_STREAM on the request HEADERS */
    bool remote_ended;  /* the client sent END_STREAM */
    bool body_dirty;    /* body bytes or the end wait for the exchange */
    bool paused;        /* pause_body(true): hold the body (the window closes) */
    bool too_big;       /* over limits.max_body_bytes */
    bool head_submitted;
    bool has_provider;  /* the response has DATA frames */
    bool ended;         /* send_end or abort: no more response bytes */
    bool want_drain;    /* pending() was high: tell the exchange when it drains */
    bool closed;        /* nghttp2 closed the stream */
    bool websocket;     /* an extended CONNECT for a WebSocket, bridged to an HTTP/1.1 upgrade */
    bool tunnel;        /* its 200 went out: DATA both ways is the tunnel's (core/tunnel) */
    bool rebound;       /* ... and the request's exchange, still to be freed, is not s->x */
    bool stalled;       /* reset: its response did not move for body_timeout_ms */
    uint64_t sent;      /* response body bytes framed into DATA */
    uint64_t sent_seen; /* `sent` at the last stall tick */
    unsigned stall_ticks;
};

struct h2_conn {
    struct client_conn link;
    struct conn *conn; /* adopted: this codec owns and frees it */
    struct worker *w;
    nghttp2_session *session;
    struct sockaddr_storage peer;
    char remote_addr[INET6_ADDRSTRLEN];
    char *client_subject; /* mTLS: the verified client certificate's subject, or NULL */
    bool tls;
    struct event *timer; /* idle, drain steps, linger */
    struct event *work;  /* run() from the loop */
    struct h2_stream *streams;
    size_t num_streams;
    struct h2_stream *hd_stream; /* the stream whose header block is being decoded */
    size_t out_total;            /* response bytes in the streams' buffers */
    int busy;
    bool dead;
    bool in_run;
    bool again;      /* run() should go round once more */
    bool scheduled;  /* work is active */
    bool fresh;      /* no stream yet: header_timeout_ms applies */
    bool idle_armed; /* the timer counts idle time */
    bool closing;    /* waiting for the last frames to leave, then close */
    bool calm;       /* terminated with ENHANCE_YOUR_CALM */
    bool draining;
    bool goaway_final;
    bool stall_armed; /* the timer is the stall tick (streams open) */
    /* Bytes queued into conn->out in all, and the bytes written as of the last stall tick. */
    uint64_t queued;
    uint64_t written_seen;
    unsigned stall_ticks;
    /* Flood counters over one-second windows. */
    int64_t window_start_ms;
    unsigned resets;
    unsigned control_frames;
    /* Client stream ids seen on HEADERS: the highest, and a bit for each of
     * the H2_SEEN_IDS odd ids below it (RFC 9113 5.1.1, see on_begin_frame). */
    int32_t max_client_sid;
    uint64_t seen_ids[H2_SEEN_IDS / 64];
};

static const struct exchange_side_ops h2_ops;
static void run(struct h2_conn *h);

static struct h2_stream *from_side(struct exchange *x)
{
    return container_of(x->client, struct h2_stream, side);
}

static const struct limits_config *limits(struct h2_conn *h)
{
    return &h->w->current->snapshot->limits;
}

static void arm_timer(struct h2_conn *h, int ms)
{
    h->stall_armed = false; /* every other use of the timer replaces the stall tick */
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(h->timer, &tv);
}

/* Has run() go (again) from the loop; inside run() it just asks for another round. */
static void schedule(struct h2_conn *h)
{
    if (h->in_run) {
        h->again = true;
        return;
    }
    if (!h->scheduled && !h->dead) {
        h->scheduled = true;
        event_active(h->work, EV_TIMEOUT, 0);
    }
}

/* Ends the connection with GOAWAY(ENHANCE_YOUR_CALM): the peer is abusive. */
static void calm_down(struct h2_conn *h, const char *why)
{
    if (h->calm)
        return;
    h->calm = true;
    log_warn("http2: %s from %s: GOAWAY(ENHANCE_YOUR_CALM)", why, h->remote_addr);
    nghttp2_session_terminate_session(h->session, NGHTTP2_ENHANCE_YOUR_CALM);
    schedule(h);
}

/* Starts a new one-second window for the flood counters when the last one is over. */
static void tick(struct h2_conn *h)
{
    int64_t now = clock_coarse_ms();
    if (now - h->window_start_ms >= 1000) {
        h->window_start_ms = now;
        h->resets = 0;
        h->control_frames = 0;
    }
}

static void count_reset(struct h2_conn *h)
{
    tick(h);
    if (++h->resets > H2_MAX_RESETS_PER_SEC)
        calm_down(h, "rapid stream resets");
}

/* ---- lifetime ------------------------------------------------------------ */

static void free_stream(struct h2_conn *h, struct h2_stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    h->num_streams--;
    if (h->hd_stream == s)
        h->hd_stream = NULL;
    h->out_total -= evbuffer_get_length(s->out);
    conn_buffer_put(s->out);
    free(s->trailers);
    blockpool_free(s);
}

/*
 * A zeroed stream with an empty `out` buffer. Both come from the worker's
 * spares (blockpool, conn_buffer_get): a stream is made and freed for every
 * request, and an idle connection keeps none.
 */
static struct h2_stream *new_stream(void)
{
    struct h2_stream *s = blockpool_calloc(1, sizeof *s);
    s->out = conn_buffer_get();
    if (!s->out) {
        blockpool_free(s);
        return NULL;
    }
    return s;
}

static void destroy(struct h2_conn *h)
{
    /* Exchanges first: their cleanups still give window back to the session. */
    for (struct h2_stream *s = h->streams; s; s = s->next) {
        struct exchange *x = s->x;
        if (!x)
            continue;
        s->x = NULL;
        if (s->started)
            exchange_on_client_abort(x);
        else
            exchange_free(x);
    }
    nghttp2_session_del(h->session);
    h->session = NULL;
    while (h->streams)
        free_stream(h, h->streams);
    conn_free(h->conn);
    event_free(h->timer);
    event_free(h->work);
    net_loop_conn_removed(&h->w->net, &h->link);
    metrics_connection_closed("h2");
    free(h->client_subject);
    free(h);
}

/* Closes the socket now; the struct goes in leave() once no callback is on the stack. */
static void close_now(struct h2_conn *h)
{
    h->dead = true;
    conn_close(h->conn);
    event_del(h->timer);
    event_del(h->work);
}

static bool leave(struct h2_conn *h)
{
    if (--h->busy == 0 && h->dead) {
        destroy(h);
        return false;
    }
    return !h->dead;
}

/* ---- request body and flow control ---------------------------------------- */

/*
 * Bytes leaving x->req_body were forwarded (or dropped with the exchange):
 * only now is the window given back, so a slow upstream slows the client.
 */
static void on_body_moved(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct h2_stream *s = arg;
    if (info->n_deleted == 0 || !s->h->session)
        return;
    nghttp2_session_consume(s->h->session, s->id, info->n_deleted);
    schedule(s->h);
}

/* Arena cleanup: the exchange is being freed. Registered after exchange_new, so it runs first. */
static void on_exchange_gone(void *arg)
{
    struct h2_stream *s = arg;
    struct h2_conn *h = s->h;
    if (s->rebound) {
        /* The request's exchange of a tunnel: the stream belongs to the tunnel's shell now. */
        s->rebound = false;
        return;
    }
    if (s->body) {
        evbuffer_remove_cb_entry(s->body, s->body_cb);
        size_t left = evbuffer_get_length(s->body);
        if (left && h->session)
            nghttp2_session_consume(h->session, s->id, left);
        s->body = NULL;
    }
    s->x = NULL;
    schedule(h);
}

/* ---- side operations ----------------------------------------------------- */

static nghttp2_nv make_nv(uint8_t *name, size_t namelen, struct slice value)
{
    return (nghttp2_nv){name, (uint8_t *)(uintptr_t)value.base, namelen, value.len,
                        NGHTTP2_NV_FLAG_NONE};
}

static ssize_t on_read_data(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data)
{
    struct h2_stream *s = source->ptr;
    size_t avail = evbuffer_get_length(s->out);
    if (avail == 0 && !s->ended)
        return NGHTTP2_ERR_DEFERRED; /* resumed by send_body/send_end */
    size_t n = avail < length ? avail : length;
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (s->ended && n == avail) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (s->num_trailers) {
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_submit_trailer(session, stream_id, s->trailers, s->num_trailers);
            free(s->trailers);
            s->trailers = NULL;
            s->num_trailers = 0;
        }
    }
    return (ssize_t)n;
}

static int on_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user_data)
{
    struct h2_conn *h = user_data;
    struct h2_stream *s = source->ptr;
    struct evbuffer *out = h->conn->out;
    if (evbuffer_get_length(out) >= H2_OUT_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK;
    evbuffer_add(out, framehd, 9);
    if (frame->data.padlen > 0) {
        uint8_t pad = (uint8_t)(frame->data.padlen - 1);
        evbuffer_add(out, &pad, 1);
    }
    evbuffer_remove_buffer(s->out, out, length);
    h->out_total -= length;
    s->sent += length;
    h->queued += 9 + length + (frame->data.padlen > 0 ? frame->data.padlen : 0);
    if (frame->data.padlen > 1) {
        static const uint8_t zeros[256];
        evbuffer_add(out, zeros, frame->data.padlen - 1);
    }
    return 0;
}

static void h2_send_head(struct exchange *x)
{
    struct h2_stream *s = from_side(x);
    struct h2_conn *h = s->h;
    if (s->closed || s->head_submitted)
        return;
    const struct header_list *l = &x->resp_headers;
    nghttp2_nv *nva = arena_alloc(x->arena, (l->count + 1) * sizeof *nva);
    size_t n = 0;
    int status = x->status >= 100 && x->status <= 999 ? x->status : 500;
    bool tunnel = s->websocket && status == 101;
    if (tunnel)
        status = 200; /* RFC 8441 5: the upstream's 101 is the client's 2xx */
    char *code = arena_alloc(x->arena, 3);
    code[0] = (char)('0' + status / 100);
    code[1] = (char)('0' + status / 10 % 10);
    code[2] = (char)('0' + status % 10);
    nva[n++] = make_nv((uint8_t *)":status", 7, slice_make(code, 3));
    bool drop_length = status == 204 || status < 200;
    for (size_t i = 0; i < l->count; i++) {
        struct slice name = l->items[i].name;
        if (name.len == 0 || fields_h2_connection_specific(name, l->items[i].value, false))
            continue;
        if (drop_length && slice_ieq(name, SLICE_LIT("Content-Length")))
            continue;
        if (tunnel && (slice_ieq(name, SLICE_LIT("Sec-WebSocket-Accept")) ||
                       slice_ieq(name, SLICE_LIT("Upgrade"))))
            continue; /* the key was the gateway's; HTTP/2 has no Upgrade */
        /* nghttp2 copies the field and lower-cases its name (RFC 9113 8.2.1) as it does. */
        nva[n] = make_nv((uint8_t *)(uintptr_t)name.base, name.len, l->items[i].value);
        /* A value new on every response would only churn the HPACK table. */
        if (slice_ieq(name, SLICE_LIT("X-Request-Id")))
            nva[n].flags = NGHTTP2_NV_FLAG_NO_INDEX;
        n++;
    }
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = on_read_data};
    s->has_provider = !x->resp_no_body || tunnel;
    s->head_submitted = true;
    if (nghttp2_submit_response(h->session, s->id, nva, n, s->has_provider ? &dp : NULL) != 0)
        s->has_provider = false;
    schedule(h);
}

static void h2_send_body(struct exchange *x, struct evbuffer *data)
{
    struct h2_stream *s = from_side(x);
    struct h2_conn *h = s->h;
    size_t len = evbuffer_get_length(data);
    if (s->closed || !s->has_provider || s->ended) {
        evbuffer_drain(data, len);
        return;
    }
    if (len == 0)
        return;
    evbuffer_add_buffer(s->out, data);
    h->out_total += len;
    nghttp2_session_resume_data(h->session, s->id);
    schedule(h);
}

static void h2_send_end(struct exchange *x)
{
    struct h2_stream *s = from_side(x);
    struct h2_conn *h = s->h;
    s->ended = true;
    if (s->closed || !s->has_provider)
        return;
    const struct header_list *t = &x->resp_trailers;
    if (t->count > 0) {
        /* One block: the array, then the lower-cased names and the values. */
        size_t size = t->count * sizeof(nghttp2_nv);
        for (size_t i = 0; i < t->count; i++)
            size += t->items[i].name.len + t->items[i].value.len;
        s->trailers = malloc(size);
        if (!s->trailers) {
            log_error("out of memory");
            abort();
        }
        char *p = (char *)(s->trailers + t->count);
        for (size_t i = 0; i < t->count; i++) {
            struct slice nm = t->items[i].name, v = t->items[i].value;
            char *name = p;
            for (size_t k = 0; k < nm.len; k++)
                p[k] =
                    nm.base[k] >= 'A' && nm.base[k] <= 'Z' ? (char)(nm.base[k] + 32) : nm.base[k];
            p += nm.len;
            memcpy(p, v.base, v.len);
            s->trailers[i] = make_nv((uint8_t *)name, nm.len, slice_make(p, v.len));
            p += v.len;
        }
        s->num_trailers = t->count;
    }
    nghttp2_session_resume_data(h->session, s->id);
    schedule(h);
}

static void h2_pause_body(struct exchange *x, bool pause)
{
    struct h2_stream *s = from_side(x);
    s->paused = pause;
    if (!pause) {
        /* What arrived meanwhile goes to the exchange from the loop. */
        s->body_dirty = true;
        schedule(s->h);
    }
}

static size_t h2_pending(struct exchange *x)
{
    struct h2_stream *s = from_side(x);
    size_t n = evbuffer_get_length(s->out);
    if (s->h->out_total > H2_CONN_BUDGET)
        n += H2_FULL; /* the connection as a whole is full: every stream waits */
    if (n >= H2_STREAM_LOW)
        s->want_drain = true;
    return n;
}

static void h2_abort(struct exchange *x)
{
    struct h2_stream *s = from_side(x);
    struct h2_conn *h = s->h;
    s->ended = true;
    h->out_total -= evbuffer_get_length(s->out);
    evbuffer_drain(s->out, evbuffer_get_length(s->out));
    if (!s->closed)
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    schedule(h);
}

static void h2_send_continue(struct exchange *x)
{
    struct h2_stream *s = from_side(x);
    if (s->closed || s->head_submitted)
        return;
    nghttp2_nv nv = make_nv((uint8_t *)":status", 7, SLICE_LIT("100"));
    nghttp2_submit_headers(s->h->session, NGHTTP2_FLAG_NONE, s->id, NULL, &nv, 1, NULL);
    schedule(s->h);
}

/* The 200 is queued: DATA both ways now carries the WebSocket's bytes. */
static void h2_tunnel(struct exchange *x)
{
    struct h2_stream *s = from_side(x);
    /*
     * x is the tunnel's shell: the body hook moves to its buffer (the bytes
     * still in the old one follow, uncounted by either hook), and the old
     * exchange's cleanup, which runs next, must leave the stream alone.
     */
    if (s->body)
        evbuffer_remove_cb_entry(s->body, s->body_cb);
    s->body = x->req_body;
    s->body_cb = evbuffer_add_cb(x->req_body, on_body_moved, s);
    s->x = x;
    s->rebound = true;
    if (!x->arena)
        x->arena = arena_new(0);                      /* a shell's arena is made on demand */
    arena_cleanup_add(x->arena, on_exchange_gone, s); /* the shell's end unhooks as usual */
    s->tunnel = true;
    x->req_has_body = true;
    x->req_body_done = false;
    s->body_dirty = true; /* DATA that came early, or END_STREAM, goes on from the loop */
    schedule(s->h);
}

/* The upstream sent its FIN: END_STREAM once the DATA before it left. */
static void h2_tunnel_shutdown(struct exchange *x)
{
    struct h2_stream *s = from_side(x);
    s->ended = true;
    if (!s->closed && s->has_provider)
        nghttp2_session_resume_data(s->h->session, s->id);
    schedule(s->h);
}

static const struct exchange_side_ops h2_ops = {
    .send_head = h2_send_head,
    .send_body = h2_send_body,
    .send_end = h2_send_end,
    .pause_body = h2_pause_body,
    .pending = h2_pending,
    .abort = h2_abort,
    .tunnel = h2_tunnel,
    .tunnel_shutdown = h2_tunnel_shutdown,
    .send_continue = h2_send_continue,
};

/* ---- nghttp2 callbacks ------------------------------------------------------ */

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
                       void *user_data)
{
    struct h2_conn *h = user_data;
    if (evbuffer_get_length(h->conn->out) >= H2_OUT_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK;
    evbuffer_add(h->conn->out, data, length);
    h->queued += length;
    return (ssize_t)length;
}

/*
 * Records a client stream id carried by HEADERS. False when the id is below
 * the highest one seen and was never used: the client skipped it, which
 * closed it (RFC 9113 5.1.1), and opening it now is a connection error of
 * type PROTOCOL_ERROR. nghttp2 ignores such HEADERS instead. Ids seen
 * before (trailers, a stream nghttp2 refused) and ids too far below to be
 * remembered are left to nghttp2. Even ids are nghttp2's business too.
 */
static bool note_client_sid(struct h2_conn *h, int32_t sid)
{
    if (sid <= 0 || !(sid & 1))
        return true;
    if (sid > h->max_client_sid) {
        int32_t shift = (sid - h->max_client_sid) / 2;
        if (h->max_client_sid == 0 || shift >= H2_SEEN_IDS) {
            memset(h->seen_ids, 0, sizeof h->seen_ids);
        } else {
            /* bit i stands for id max - 2 * i: move every bit up by `shift`, a word at a time */
            int words = shift / 64, bits = shift % 64;
            for (int w = H2_SEEN_IDS / 64 - 1; w >= 0; w--) {
                int from = w - words;
                uint64_t v = 0;
                if (from >= 0) {
                    v = h->seen_ids[from] << bits;
                    if (bits && from > 0)
                        v |= h->seen_ids[from - 1] >> (64 - bits);
                }
                h->seen_ids[w] = v;
            }
        }
        h->max_client_sid = sid;
        h->seen_ids[0] |= 1;
        return true;
    }
    int32_t i = (h->max_client_sid - sid) / 2;
    if (i >= H2_SEEN_IDS)
        return true;
    return h->seen_ids[i / 64] >> (i % 64) & 1;
}

static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user_data)
{
    struct h2_conn *h = user_data;
    bool control = false;
    switch (hd->type) {
    case NGHTTP2_DATA:
        control = hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM);
        break;
    case NGHTTP2_HEADERS:
    case NGHTTP2_CONTINUATION:
    case NGHTTP2_RST_STREAM:
    case NGHTTP2_WINDOW_UPDATE:
    case NGHTTP2_GOAWAY:
        break;
    default: /* PING, SETTINGS, PRIORITY, PUSH_PROMISE, unknown types */
        control = true;
        break;
    }
    if (control) {
        tick(h);
        if (++h->control_frames > H2_MAX_CONTROL_PER_SEC)
            calm_down(h, "control frame flood");
    }
    if (hd->type == NGHTTP2_HEADERS && !note_client_sid(h, hd->stream_id)) {
        log_debug("http2: HEADERS on skipped stream %d from %s", (int)hd->stream_id,
                  h->remote_addr);
        nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR);
        schedule(h);
        return 0;
    }
    if (hd->type == NGHTTP2_HEADERS) {
        struct h2_stream *s = nghttp2_session_get_stream_user_data(session, hd->stream_id);
        if (s)
            s->header_bytes = s->header_fields = 0; /* a trailer block: counted afresh */
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h2_conn *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (h->calm || h->dead)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    /* Streams nghttp2 closed whose exchanges still wind down count too. */
    size_t cap = 2 * (size_t)limits(h)->h2_max_concurrent_streams + 16;
    if (h->num_streams >= cap) {
        calm_down(h, "too many streams at once");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    struct h2_stream *s = new_stream();
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->h = h;
    s->id = frame->hd.stream_id;
    s->side.ops = &h2_ops;
    struct exchange *x = exchange_new(h->w, &s->side);
    s->x = x;
    x->protocol = XPROTO_HTTP2;
    x->tls = h->tls;
    x->peer = h->peer;
    memcpy(x->remote_addr, h->remote_addr, sizeof x->remote_addr);
    if (h->client_subject) {
        size_t len = strlen(h->client_subject);
        x->client_subject = slice_make(arena_strndup(x->arena, h->client_subject, len), len);
    }
    header_list_init(&x->req_headers, x->arena, 16);
    arena_cleanup_add(x->arena, on_exchange_gone, s);
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        /* A request body may follow (HEADERS with END_STREAM has none): its window is watched. */
        s->body = x->req_body;
        s->body_cb = evbuffer_add_cb(x->req_body, on_body_moved, s);
    }
    s->next = h->streams;
    if (h->streams)
        h->streams->prev = s;
    h->streams = s;
    h->num_streams++;
    h->fresh = false;
    if (h->idle_armed) {
        h->idle_armed = false; /* the idle time starts again once every stream is done */
        event_del(h->timer);
    }
    nghttp2_session_set_stream_user_data(session, s->id, s);
    h->hd_stream = s;
    return 0;
}

/* The stream of a HEADERS frame being received: usually the one on_begin_headers just made. */
static struct h2_stream *headers_stream(struct h2_conn *h, int32_t id)
{
    if (h->hd_stream && h->hd_stream->id == id)
        return h->hd_stream;
    return nghttp2_session_get_stream_user_data(h->session, id);
}

/*
 * A decoded name or value for the exchange. The decoder's buffers go away
 * after the callback, so it is copied into the arena, unless it comes from
 * HPACK's static table (":method GET", "accept-encoding"): static memory.
 */
static struct slice kept(struct exchange *x, nghttp2_rcbuf *buf)
{
    nghttp2_vec b = nghttp2_rcbuf_get_buf(buf);
    struct slice sl = slice_make((const char *)b.base, b.len);
    return nghttp2_rcbuf_is_static(buf) ? sl : arena_slice_dup(x->arena, sl);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, nghttp2_rcbuf *name_buf,
                     nghttp2_rcbuf *value_buf, uint8_t flags, void *user_data)
{
    struct h2_conn *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_stream *s = headers_stream(h, frame->hd.stream_id);
    if (!s)
        return 0;
    nghttp2_vec nv = nghttp2_rcbuf_get_buf(name_buf), vv = nghttp2_rcbuf_get_buf(value_buf);
    const uint8_t *name = nv.base;
    size_t namelen = nv.len, valuelen = vv.len;
    const struct limits_config *lim = limits(h);
    s->header_bytes += namelen + valuelen + 4;
    s->header_fields++;
    /* An HPACK bomb: a few bytes on the wire that decode into far more than any limit. */
    size_t bomb_bytes = (size_t)lim->max_header_bytes * H2_HEADER_BOMB_FACTOR;
    if (bomb_bytes < H2_HEADER_BOMB_MIN)
        bomb_bytes = H2_HEADER_BOMB_MIN;
    if (s->header_bytes > bomb_bytes ||
        s->header_fields > (size_t)lim->max_headers * H2_HEADER_BOMB_FACTOR + 16) {
        calm_down(h, "header list far over the limits");
        return NGHTTP2_ERR_PAUSE;
    }
    struct exchange *x = s->x;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST || !x || s->error_status)
        return 0; /* request trailers are not forwarded */
    if (s->header_bytes > (size_t)lim->max_header_bytes) {
        s->error_status = 431;
        s->error_message = "the request head is larger than limits.max_header_bytes";
        return 0;
    }
    struct slice n = slice_make((const char *)name, namelen);
    struct slice v = kept(x, value_buf);
    if (namelen > 0 && name[0] == ':') {
        if (slice_eq(n, SLICE_LIT(":method")))
            x->method = v;
        else if (slice_eq(n, SLICE_LIT(":path")))
            x->target = v;
        else if (slice_eq(n, SLICE_LIT(":authority")))
            s->authority = v;
        else if (slice_eq(n, SLICE_LIT(":protocol")))
            s->protocol = v;
        return 0;
    }
    if (x->req_headers.count + 1 > (size_t)lim->max_headers) {
        s->error_status = 431;
        s->error_message = "more header fields than limits.max_headers";
        return 0;
    }
    /* Names are lower case (nghttp2 rejects others): the fields start_stream needs are noted. */
    if (namelen == 4 && memcmp(name, "host", 4) == 0)
        s->has_host = true;
    else if (namelen == 6 && memcmp(name, "cookie", 6) == 0)
        s->cookies++;
    else if (namelen == 6 && memcmp(name, "expect", 6) == 0)
        s->has_expect = true;
    else if (namelen == 14 && memcmp(name, "content-length", 14) == 0)
        s->has_length = true;
    header_add(&x->req_headers, kept(x, name_buf), v);
    return 0;
}

static int on_invalid_header(nghttp2_session *session, const nghttp2_frame *frame,
                             const uint8_t *name, size_t namelen, const uint8_t *value,
                             size_t valuelen, uint8_t flags, void *user_data)
{
    /* A field nghttp2 would silently drop: the request is malformed (RFC 9113 8.2.1). */
    struct h2_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s)
        s->malformed = true;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    struct h2_conn *h = user_data;
    struct h2_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s || !s->x || s->too_big || s->malformed) {
        /* Nobody will forward these bytes: give the window back at once. */
        nghttp2_session_consume(session, stream_id, len);
        schedule(h);
        return 0;
    }
    struct exchange *x = s->x;
    evbuffer_add(x->req_body, data, len);
    x->bytes_in += len;
    s->req_total += len;
    s->body_dirty = true;
    uint64_t max = limits(h)->max_body_bytes;
    if (max && s->req_total > max && !s->websocket)
        s->too_big = true;
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h2_conn *h = user_data;
    struct h2_stream *s = NULL;
    if (frame->hd.stream_id)
        s = headers_stream(h, frame->hd.stream_id);
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (!s)
            break;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            s->ready = true;
            if (s->x)
                s->x->bytes_in += s->header_bytes;
            if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
                s->headers_ended = true;
        }
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            s->remote_ended = true;
            s->body_dirty = true;
        }
        break;
    case NGHTTP2_DATA:
        if (s && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            s->remote_ended = true;
            s->body_dirty = true;
        }
        break;
    case NGHTTP2_RST_STREAM:
        count_reset(h);
        break;
    default:
        break;
    }
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h2_conn *h = user_data;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        /* Streams we refuse or find malformed count like resets: a cheap way to make us work. */
        uint32_t code = frame->rst_stream.error_code;
        if (code != NGHTTP2_NO_ERROR && code != NGHTTP2_INTERNAL_ERROR && code != NGHTTP2_CANCEL)
            count_reset(h); /* CANCEL: our own stall reset (stall_tick), not the client's doing */
        return 0;
    }
    if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct h2_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    /* The response is complete but the request is not: the rest is not wanted (RFC 9113 8.1). */
    if (s && !s->remote_ended && !s->tunnel)
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct h2_conn *h = user_data;
    struct h2_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s)
        return 0;
    s->closed = true;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    if (h->hd_stream == s)
        h->hd_stream = NULL;
    schedule(h);
    return 0;
}

/* ---- the loop ------------------------------------------------------------------ */

/*
 * RFC 8441: an extended CONNECT for a WebSocket goes upstream as an
 * HTTP/1.1 upgrade (a GET with Upgrade, Connection and a key the gateway
 * makes; Sec-WebSocket-Version, -Protocol and -Extensions pass as sent).
 * Its DATA is the tunnel's, not a request body, until the 200.
 */
static void bridge_websocket(struct h2_conn *h, struct h2_stream *s)
{
    struct exchange *x = s->x;
    s->websocket = true;
    x->method = SLICE_LIT("GET");
    x->upgrade = true;
    x->req_has_body = false;
    x->req_body_done = true;
    x->req_length = -1;
    uint64_t r[2] = {worker_random(h->w), worker_random(h->w)};
    char *key = arena_alloc(x->arena, WEBSOCKET_KEY_SIZE);
    char *accept = arena_alloc(x->arena, WEBSOCKET_ACCEPT_SIZE);
    websocket_key((const uint8_t *)r, key);
    websocket_accept(slice_cstr(key), accept);
    x->ws_accept = slice_cstr(accept);
    header_set(&x->req_headers, SLICE_LIT("Upgrade"), SLICE_LIT("websocket"));
    header_set(&x->req_headers, SLICE_LIT("Connection"), SLICE_LIT("upgrade"));
    header_set(&x->req_headers, SLICE_LIT("Sec-WebSocket-Key"), slice_cstr(key));
}

/* Copies what the callbacks collected into the exchange and starts it. */
static void start_stream(struct h2_conn *h, struct h2_stream *s)
{
    struct exchange *x = s->x;
    s->started = true;
    if (s->authority.len) {
        /* :authority wins over Host (RFC 9113 8.3.1); the upstream gets it as Host. */
        x->host = s->authority;
        if (s->has_host)
            header_set(&x->req_headers, SLICE_LIT("Host"), s->authority);
        else
            header_add(&x->req_headers, SLICE_LIT("Host"), s->authority);
    }
    /* Cookie crumbs are joined for HTTP/1 upstreams (RFC 9113 8.2.3). */
    static const struct slice cookie = SLICE_LIT("Cookie");
    size_t crumbs = s->cookies > 1 ? header_count(&x->req_headers, cookie) : 0;
    if (crumbs > 1) {
        struct slice *parts = arena_alloc(x->arena, (2 * crumbs) * sizeof *parts);
        size_t n = 0;
        long i = -1;
        while ((i = header_find(&x->req_headers, cookie, (size_t)(i + 1))) >= 0) {
            if (n)
                parts[n++] = SLICE_LIT("; ");
            parts[n++] = x->req_headers.items[i].value;
        }
        header_set(&x->req_headers, cookie, arena_concat(x->arena, parts, n));
    }
    static const struct slice cl_name = SLICE_LIT("Content-Length");
    const struct slice *cl = s->has_length ? header_get(&x->req_headers, cl_name) : NULL;
    if (cl) {
        /* nghttp2 checked it is one number and that DATA matches it. */
        int64_t v = 0;
        for (size_t i = 0; i < cl->len && v < INT64_MAX / 10 - 10; i++)
            v = v * 10 + (cl->base[i] - '0');
        x->req_length = v;
        header_remove(&x->req_headers, cl_name);
    }
    x->req_has_body = !s->headers_ended && x->req_length != 0;
    x->req_body_done = !x->req_has_body;
    if (s->protocol.len && slice_eq(x->method, SLICE_LIT("CONNECT")) &&
        slice_ieq(s->protocol, SLICE_LIT("websocket")))
        bridge_websocket(h, s);
    const struct slice *expect =
        s->has_expect ? header_get(&x->req_headers, SLICE_LIT("Expect")) : NULL;
    if (expect) {
        x->expect_continue = slice_ieq(*expect, SLICE_LIT("100-continue"));
        header_remove(&x->req_headers, SLICE_LIT("Expect"));
    }
    uint64_t max = limits(h)->max_body_bytes;
    if (s->error_status) {
        exchange_respond_error(x, s->error_status, s->error_message);
        exchange_reply(x);
        return;
    }
    if (x->host.len == 0 && !header_get(&x->req_headers, SLICE_LIT("Host"))) {
        exchange_respond_error(x, 400, "a request needs :authority or Host");
        exchange_reply(x);
        return;
    }
    if (x->target.len == 0) {
        exchange_respond_error(x, 400, "the request has no :path");
        exchange_reply(x);
        return;
    }
    if (max && x->req_length > 0 && (uint64_t)x->req_length > max) {
        exchange_respond_error(x, 413, "the request body is larger than limits.max_body_bytes");
        exchange_reply(x);
        return;
    }
    exchange_start(x);
}

/* The exchange still waits for request body (or its end). */
static bool x_wants_body(const struct h2_stream *s)
{
    return s->x->req_has_body && !s->x->req_body_done;
}

static void process_stream(struct h2_conn *h, struct h2_stream *s)
{
    if (s->x && s->closed) {
        /* The client reset the stream (or the connection failed it). */
        struct exchange *x = s->x;
        s->x = NULL;
        if (s->started)
            exchange_on_client_abort(x);
        else
            exchange_free(x);
    }
    if (s->x && s->ready && !s->started && !s->malformed)
        start_stream(h, s);
    if (s->x && s->started && s->too_big) {
        struct exchange *x = s->x;
        if (!x->head_sent) {
            exchange_respond_error(x, 413, "the request body is larger than limits.max_body_bytes");
            exchange_reply(x);
        } else {
            exchange_abort(x);
        }
    }
    if (s->x && s->started && s->body_dirty && !s->paused && x_wants_body(s)) {
        s->body_dirty = false;
        if (s->remote_ended)
            s->x->req_body_done = true;
        exchange_on_request_body(s->x);
    }
    if (!s->x && s->closed)
        free_stream(h, s);
}

/* Serialises queued frames into c->out and writes; stops when the kernel is full. */
static void send_frames(struct h2_conn *h)
{
    for (int round = 0; round < 16; round++) {
        if (!nghttp2_session_want_write(h->session))
            return;
        int rv = nghttp2_session_send(h->session);
        if (rv != 0) {
            log_debug("http2: send: %s", nghttp2_strerror(rv));
            close_now(h);
            return;
        }
        if (conn_flush(h->conn) < 0) {
            close_now(h);
            return;
        }
        if (evbuffer_get_length(h->conn->out) > 0)
            return; /* on_writable goes on */
    }
    if (nghttp2_session_want_write(h->session))
        schedule(h);
}

/* Streams whose response buffer drained are told so (the proxy reads its upstream again). */
static void notify_drain(struct h2_conn *h)
{
    if (h->out_total > H2_CONN_BUDGET / 2)
        return;
    for (struct h2_stream *s = h->streams; s && !h->dead; s = s->next) {
        if (!s->want_drain || !s->x || evbuffer_get_length(s->out) >= H2_STREAM_LOW)
            continue;
        s->want_drain = false;
        exchange_on_client_drain(s->x);
    }
}

/*
 * SPEC 7 "slow readers": while streams are open the timer ticks every half
 * body_timeout_ms. A stream whose response bytes wait and did not move for
 * three ticks in a row (at least body_timeout_ms: a client that keeps its
 * window shut) is reset with CANCEL, and its exchange logged with an error;
 * a connection whose output did not move for as long is closed.
 */
static void arm_stall_tick(struct h2_conn *h)
{
    int ms = limits(h)->body_timeout_ms / 2;
    arm_timer(h, ms > 0 ? ms : 1);
    h->stall_armed = true;
}

static void stall_tick(struct h2_conn *h)
{
    uint64_t written = h->queued - evbuffer_get_length(h->conn->out);
    if (evbuffer_get_length(h->conn->out) == 0 || written != h->written_seen)
        h->stall_ticks = 0;
    h->written_seen = written;
    if (++h->stall_ticks >= 3) {
        log_debug("http2: %s: no output accepted for body_timeout_ms: closing", h->remote_addr);
        for (struct h2_stream *s = h->streams; s; s = s->next)
            if (s->x && s->started && !s->tunnel && s->x->head_sent)
                s->x->error = "request_timeout";
        close_now(h);
        return;
    }
    for (struct h2_stream *s = h->streams; s; s = s->next) {
        if (s->closed || s->stalled || s->tunnel || evbuffer_get_length(s->out) == 0 ||
            s->sent != s->sent_seen) {
            s->stall_ticks = 0;
            s->sent_seen = s->sent;
            continue;
        }
        if (++s->stall_ticks < 3)
            continue;
        s->stalled = true;
        if (s->x)
            s->x->error = "request_timeout"; /* logged when the close ends it */
        h->out_total -= evbuffer_get_length(s->out);
        evbuffer_drain(s->out, evbuffer_get_length(s->out));
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    }
}

/* After a round: close when nghttp2 is done, keep the idle timer right. */
static void check_state(struct h2_conn *h)
{
    if (!h->closing && !nghttp2_session_want_read(h->session) &&
        !nghttp2_session_want_write(h->session)) {
        h->closing = true;
        h->idle_armed = false;
        arm_timer(h, H2_LINGER_MS);
    }
    if (h->closing) {
        if (evbuffer_get_length(h->conn->out) == 0)
            close_now(h);
        return;
    }
    if (h->draining && !h->goaway_final)
        return; /* the timer sends the final GOAWAY */
    if (!h->streams && !h->idle_armed) {
        h->idle_armed = true;
        arm_timer(h, h->fresh ? limits(h)->header_timeout_ms : limits(h)->idle_timeout_ms);
    }
    if (!h->streams && !nghttp2_session_want_write(h->session))
        conn_release_buffers(h->conn); /* idle: see have_buffers */
    else if (h->streams && (h->idle_armed || !h->stall_armed)) {
        h->idle_armed = false;
        arm_stall_tick(h);
    }
}

/*
 * An idle connection (no stream, nothing to send) lends its evbuffers back
 * (conn_release_buffers, as HTTP/1.1 does); a read borrows them again by
 * itself, and run() and service() borrow them before using them. False
 * when that failed and the connection was closed.
 */
static bool have_buffers(struct h2_conn *h)
{
    if (h->dead || conn_borrow_buffers(h->conn) == 0)
        return true;
    close_now(h);
    return false;
}

static void run(struct h2_conn *h)
{
    h->busy++;
    if (!have_buffers(h)) {
        leave(h);
        return;
    }
    h->in_run = true;
    for (int round = 0; round < 8 && !h->dead; round++) {
        h->again = false;
        for (struct h2_stream *s = h->streams, *next; s && !h->dead; s = next) {
            next = s->next;
            process_stream(h, s);
        }
        if (h->dead)
            break;
        send_frames(h);
        if (h->dead)
            break;
        notify_drain(h);
        if (!h->again)
            break;
    }
    h->in_run = false;
    if (!h->dead) {
        if (h->again)
            schedule(h);
        check_state(h);
    }
    leave(h);
}

/* ---- events ---------------------------------------------------------------- */

static void feed(struct h2_conn *h)
{
    struct evbuffer *in = h->conn->in;
    while (evbuffer_get_length(in) > 0 && !h->dead) {
        if (h->calm || h->closing) {
            evbuffer_drain(in, evbuffer_get_length(in));
            break;
        }
        struct evbuffer_iovec seg;
        if (evbuffer_peek(in, -1, NULL, &seg, 1) < 1)
            break;
        ssize_t used = nghttp2_session_mem_recv(h->session, seg.iov_base, seg.iov_len);
        if (used < 0) {
            int err = (int)used;
            log_debug("http2: %s: %s", h->remote_addr, nghttp2_strerror(err));
            /*
             * A flood (queued ACKs, CONTINUATIONs) gets ENHANCE_YOUR_CALM;
             * anything else, a broken connection preface included (RFC 9113
             * 3.4: a connection error), gets GOAWAY(PROTOCOL_ERROR).
             */
            if (err == NGHTTP2_ERR_FLOODED || err == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
                calm_down(h, nghttp2_strerror(err));
            else
                nghttp2_session_terminate_session(h->session, NGHTTP2_PROTOCOL_ERROR);
            evbuffer_drain(in, evbuffer_get_length(in));
            h->closing = true;
            arm_timer(h, H2_LINGER_MS);
            break;
        }
        evbuffer_drain(in, (size_t)used);
        if ((size_t)used < seg.iov_len && !h->calm)
            break; /* paused */
    }
}

/* Feeds what was read to nghttp2, then acts on it. */
static void service(struct h2_conn *h)
{
    h->busy++;
    if (have_buffers(h))
        feed(h);
    if (!h->dead && h->conn->eof) {
        /* The client is gone: whatever is in flight is dropped. */
        close_now(h);
    }
    if (!h->dead)
        run(h);
    leave(h);
}

static void on_read(struct conn *c)
{
    service(c->owner);
}

static void on_writable(struct conn *c)
{
    run(c->owner);
}

static void on_error(struct conn *c, int err)
{
    struct h2_conn *h = c->owner;
    h->busy++;
    close_now(h);
    leave(h);
}

static void on_work(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *h = arg;
    h->scheduled = false;
    service(h);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *h = arg;
    h->busy++;
    h->idle_armed = false;
    bool stall = h->stall_armed;
    h->stall_armed = false;
    if (h->closing) {
        close_now(h); /* the last frames did not leave in time */
    } else if (h->draining && !h->goaway_final) {
        h->goaway_final = true;
        nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(h->session), NGHTTP2_NO_ERROR,
                              NULL, 0);
        run(h);
    } else if (!h->streams) {
        /* Idle (or nothing ever came): GOAWAY, then close. */
        nghttp2_session_terminate_session(h->session, NGHTTP2_NO_ERROR);
        run(h);
    } else if (stall) {
        stall_tick(h);
        if (!h->dead)
            run(h); /* sends the resets and arms the next tick */
    }
    leave(h);
}

/* ---- worker hooks ------------------------------------------------------------ */

static void on_drain(struct client_conn *link)
{
    struct h2_conn *h = (struct h2_conn *)link;
    h->busy++;
    h->draining = true;
    if (!h->streams) {
        h->goaway_final = true;
        nghttp2_session_terminate_session(h->session, NGHTTP2_NO_ERROR);
    } else {
        /* Streams in flight finish; new ones are refused after the final GOAWAY. */
        nghttp2_submit_shutdown_notice(h->session);
        h->idle_armed = false;
        arm_timer(h, H2_DRAIN_NOTICE_MS);
    }
    run(h);
    leave(h);
}

static void on_stop(struct client_conn *link)
{
    struct h2_conn *h = (struct h2_conn *)link;
    for (struct h2_stream *s = h->streams; s; s = s->next)
        if (s->tunnel && s->x)
            s->x->close_reason = "drain"; /* drain_timeout_ms passed with the tunnel open */
    h->busy++;
    close_now(h);
    leave(h);
}

static const struct conn_events h2_conn_events = {
    .on_read = on_read,
    .on_writable = on_writable,
    .on_error = on_error,
};

/*
 * nghttp2 allocates and frees a handful of small objects for every stream
 * (the stream, the queued frames, copies of the response fields, decoded
 * header buffers): the worker's free lists serve them (base/blockpool.h).
 */
static nghttp2_mem h2_mem = {NULL, blockpool_mem_malloc, blockpool_mem_free, blockpool_mem_calloc,
                             blockpool_mem_realloc};

static int new_session(struct h2_conn *h)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, on_send_data);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback2(cb, on_header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cb, on_invalid_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);

    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return -1;
    }
    /* Window updates follow forwarding (on_body_moved), not reception. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_outbound_ack(opt, H2_MAX_OUTBOUND_ACK);
    nghttp2_option_set_max_settings(opt, H2_MAX_SETTINGS);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, H2_HEADER_TABLE_SIZE);
    nghttp2_option_set_max_continuations(opt, H2_MAX_CONTINUATIONS);
    nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
    /*
     * Closed streams are kept (no nghttp2_option_set_no_closed_streams), so
     * that a frame on a stream that just closed is answered with
     * STREAM_CLOSED (RFC 9113 5.1) instead of being ignored. nghttp2 bounds
     * them itself: closed plus open incoming streams stay within our
     * SETTINGS_MAX_CONCURRENT_STREAMS (limits.h2_max_concurrent_streams),
     * the oldest closed stream being freed first.
     */
    int rv = nghttp2_session_server_new3(&h->session, cb, h, opt, &h2_mem);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0)
        return -1;

    const struct limits_config *lim = limits(h);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)lim->h2_max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)lim->max_header_bytes},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, H2_HEADER_TABLE_SIZE},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        /* RFC 8441: WebSockets arrive as extended CONNECT (SPEC 3.4). */
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    if (nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof *iv) != 0 ||
        nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW) !=
            0) {
        nghttp2_session_del(h->session);
        h->session = NULL;
        return -1;
    }
    return 0;
}

int http2_server_adopt(struct worker *w, struct conn *c, const struct sockaddr_storage *peer,
                       unsigned flags)
{
    struct h2_conn *h = calloc(1, sizeof *h);
    if (!h)
        return -1;
    h->w = w;
    h->peer = *peer;
    h->tls = flags & LISTEN_TLS;
    h->fresh = true;
    addr_ip_text((const struct sockaddr *)peer, h->remote_addr);
    h->link.on_drain = on_drain;
    h->link.on_stop = on_stop;
    h->timer = event_new(w->base, -1, 0, on_timer, h);
    h->work = event_new(w->base, -1, 0, on_work, h);
    if (!h->timer || !h->work || new_session(h) < 0) {
        if (h->timer)
            event_free(h->timer);
        if (h->work)
            event_free(h->work);
        free(h);
        return -1;
    }
    h->window_start_ms = clock_coarse_ms();
    if (c->ssl)
        h->client_subject = tls_peer_subject(c->ssl);
    h->conn = c;
    conn_set_owner(c, &h2_conn_events, h);
    conn_read_enable(c, true);
    net_loop_conn_added(&w->net, &h->link);
    metrics_connection_opened("h2");
    /* Our SETTINGS go out at once; bytes already read (the preface) are processed from the loop. */
    h->idle_armed = true;
    arm_timer(h, limits(h)->header_timeout_ms);
    schedule(h);
    return 0;
}

int http2_server_accept(struct worker *w, int fd, const struct sockaddr_storage *peer,
                        unsigned flags)
{
    struct conn *c = conn_new();
    if (!c)
        return -1;
    if (conn_open(c, w->base, fd, &h2_conn_events, NULL) < 0) {
        free(c);
        return -1;
    }
    if (http2_server_adopt(w, c, peer, flags) < 0) {
        c->fd = -1; /* the caller closes the socket */
        conn_free(c);
        return -1;
    }
    return 0;
}
