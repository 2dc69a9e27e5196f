/*
 * codec: the upstream side as a table of operations (ARCHITECTURE "The
 * exchange"), implemented by upstream/http1_client and upstream/http2_client
 * and driven by core/proxy, which knows no protocol.
 *
 * One request to one target is a stream: upstream_codec_ops.open() puts it
 * on a pooled connection or a new one (or queues it for a connection slot),
 * send_body() hands request body over, pause() stops reading the response
 * (backpressure), cancel() ends the owner's interest. The codec reports
 * through struct upstream_events: the phase (queued, connecting, request
 * sent), the response head, body, end, a failure with its kind (which
 * decides retry, 502 or 504 in the proxy, SPEC 2.3), and that the request
 * body it held went out (body drained).
 *
 * Plain records: the proxy builds a struct upstream_request from the
 * exchange (slices, no copies) and copies the struct upstream_response the
 * codec fills into the exchange on the head and end events. The codecs
 * never see the exchange, so this layer sits below core.
 *
 * Promises of every codec:
 * - events are called only from the event loop (the codec's connection,
 *   timer and deferred callbacks), never from inside an operation;
 * - after cancel() no event of that stream runs, and nothing the stream
 *   points to (the request, the response, the arena) is touched again;
 * - on_end and on_fail are final: the stream has already let its
 *   connection go (back to the pool after a complete response, else
 *   closed); cancel() is still allowed, and does nothing then;
 * - an owner may call cancel() (and free the arena) from inside any event.
 *
 * Thread: the worker's thread (the target's upstream_rt event base).
 */
#ifndef SLUICE_UPSTREAM_CODEC_H
#define SLUICE_UPSTREAM_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/header.h"
#include "base/slice.h"

struct arena;
struct conn;
struct evbuffer;
struct target;
struct upstream_config;
struct upstream_codec_ops;

/*
 * The one high-water mark of body buffering: past this many bytes waiting
 * on the receiving side (the client's output for a response, the
 * upstream's for a request body), the sending side stops reading until it
 * drains. core/proxy is the one place that applies it to an exchange; the
 * HTTP/2 codec also bounds its shared connection output with it.
 */
#define UPSTREAM_HIGH_WATER (256 * 1024)

/* What the owner asks the upstream for. Slices point into the exchange; nothing is copied. */
struct upstream_request {
    struct arena *arena; /* the exchange's: the stream and its per-request memory live here */
    struct slice method;
    struct slice path; /* normalised, without the query */
    struct slice query;
    bool has_query;                    /* a '?' was present (possibly an empty query) */
    struct slice host;                 /* the authority the client addressed, port kept */
    const struct header_list *headers; /* end-to-end fields, X-Forwarded-* already set */
    bool has_body;                     /* a body follows (length > 0 or unknown) */
    int64_t length;                    /* the body's length, -1 when unknown (streamed) */
    bool te_trailers; /* the client sent "TE: trailers": forward it where the protocol allows */
    bool upgrade;     /* a WebSocket upgrade (Upgrade kept in headers): a 101 is expected */
};

/* What the codec fills in for the head event (and trailers for the end event). */
struct upstream_response {
    int status;
    struct header_list headers;  /* end-to-end fields; hop-by-hop ones removed */
    int64_t length;              /* Content-Length of the body, -1 when unknown */
    struct header_list trailers; /* trailer fields (HTTP/2, gRPC); count 0 when none */
};

/* Where a stream is, as far as the owner's timers care. */
enum upstream_phase {
    UPSTREAM_QUEUED = 0, /* waiting for a connection slot (upstream.max_connections) */
    UPSTREAM_CONNECTING, /* a new connection is being made (TCP, TLS) */
    UPSTREAM_SENT,       /* the request is on its way: the response timeout runs */
};

/* Why a stream failed: the owner decides about retries from this (SPEC 2.3). */
enum upstream_failure {
    UPSTREAM_FAIL_CONNECT = 0, /* no connection: refused, unreachable, TLS, connect timeout */
    UPSTREAM_FAIL_STALE,       /* not processed: a reused connection closed before any
                                  response byte, REFUSED_STREAM, above a GOAWAY: any method */
    UPSTREAM_FAIL_AFTER_SEND,  /* reset, closed or invalid after the request went out */
    UPSTREAM_FAIL_GONE,        /* the target's pool closed under a queued stream */
    UPSTREAM_FAIL_TIMEOUT,     /* the owner's own timer: codecs never report it */
};

/* What a stream tells its owner (see the promises above). All members are required. */
struct upstream_events {
    /* The stream moved on to `phase` (after open() returned an earlier one). */
    void (*on_phase)(void *owner, enum upstream_phase phase);
    /* The final response head is in the response given to open(). */
    void (*on_head)(void *owner);
    /*
     * Response body bytes in `data`, to be moved on (emptied) by the callee.
     * May be empty. With `last`, on_end follows at once: no more body.
     */
    void (*on_body)(void *owner, struct evbuffer *data, bool last);
    /* The response is complete; trailer fields, if any, are in the response. */
    void (*on_end)(void *owner);
    /* The stream failed; `status` is the gateway status to answer with, `message` static. */
    void (*on_fail)(void *owner, enum upstream_failure why, int status, const char *message);
    /* The request body handed over so far went out: more may come. */
    void (*on_body_drained)(void *owner);
};

/* The base every codec's stream embeds first; the codec recovers itself with container_of. */
struct upstream_stream {
    const struct upstream_codec_ops *ops;
};

struct upstream_codec_ops {
    const char *name;
    /* The protocol carries "te: trailers" end to end (HTTP/2, for gRPC). */
    bool te_trailers;
    /*
     * on_head is always followed, before the codec returns to the loop, by
     * on_body, on_end or on_fail: an owner that restarts its timer on body
     * events need not restart it on the head.
     */
    bool head_then_body;
    /*
     * Starts a request to `t` of upstream `cfg`: on an idle pooled
     * connection, a new one, or queued for a slot. `rq` and `resp` (whose
     * header lists the caller initialised in rq->arena) must live as long
     * as the stream; the stream itself is allocated in rq->arena. Sets
     * *phase. Returns NULL when no socket could be made (nothing to cancel).
     */
    struct upstream_stream *(*open)(struct target *t, const struct upstream_config *cfg,
                                    const struct upstream_request *rq,
                                    struct upstream_response *resp,
                                    const struct upstream_events *events, void *owner,
                                    enum upstream_phase *phase);
    /*
     * Hands request body over: moves `data` (may be empty) and, with `end`,
     * marks the body complete. Only once the phase is UPSTREAM_SENT; the
     * owner calls it then (even with no body), and the request head goes
     * out with the first call.
     */
    void (*send_body)(struct upstream_stream *s, struct evbuffer *data, bool end);
    /* Request body bytes accepted by send_body and not yet written out. */
    size_t (*body_pending)(const struct upstream_stream *s);
    /* Stops (or resumes) reading the response: backpressure from a slow client. */
    void (*pause)(struct upstream_stream *s, bool pause);
    /*
     * Ends the owner's interest: the connection is closed (or the stream
     * reset), buffers are released. Idempotent.
     */
    void (*cancel)(struct upstream_stream *s);
    /*
     * Raw socket access for net/splice, NULL when the codec never allows it.
     * request_splice_fd: the socket the rest of the request body may be
     * written to as is (nothing pending, no framing to apply), or -1.
     * request_spliced: the rest of the body went that way; the request is
     * complete. response_splice_fd: the socket the rest of the response
     * body may be read from as is, with *left bytes to come, or -1; the
     * caller pauses the stream while it reads. response_spliced: `n` body
     * bytes were taken from the socket; once the last one was and the
     * stream is resumed, it ends as usual (on_end, from the loop).
     */
    int (*request_splice_fd)(struct upstream_stream *s);
    void (*request_spliced)(struct upstream_stream *s);
    int (*response_splice_fd)(struct upstream_stream *s, uint64_t *left);
    void (*response_spliced)(struct upstream_stream *s, uint64_t n);
    /*
     * After on_head reported a 101 to a request with `upgrade`: the
     * stream's connection (the `conn` of a struct upconn), from now on raw
     * bytes both ways (a WebSocket tunnel, core/tunnel), handed over: the
     * stream sends no event any more and forgets it, so cancel() leaves it
     * open. The caller takes the connection's events (conn_set_owner),
     * reads any bytes already in its input first, and closes it with
     * pool_close_conn(): a tunnelled connection never goes back to the
     * pool. NULL: the codec never upgrades (a 101 is then a failure).
     */
    struct conn *(*tunnel_conn)(struct upstream_stream *s);
};

#endif
