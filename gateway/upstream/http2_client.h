/*
 * http2_client: the upstream HTTP/2 codec (SPEC 2.3 `"protocol": "h2"`) on
 * nghttp2: every exchange sent to such an upstream is one stream, multiplexed
 * with others over a few connections per target per worker. Cleartext
 * connections use prior knowledge (h2c, RFC 9113 3.3).
 *
 * Owns: struct h2_session (one upstream connection: its struct conn and its
 * nghttp2 session), kept in the target's pool (pool->h2) and counted in
 * pool->num_open; struct h2_stream (one exchange's stream, in the exchange's
 * arena). A session lives while it has streams or while it is idle and
 * healthy; it goes when the upstream closes it, on a connection error, after
 * a GOAWAY once its last stream ended, or with its pool.
 *
 * Connection choice: the first session of the target with room under the
 * upstream's SETTINGS_MAX_CONCURRENT_STREAMS; when all are full, another
 * connection while upstream.max_connections allows, else the least loaded
 * session (nghttp2 then holds the request until a stream slot frees).
 *
 * Promises: a stream's events are only ever called from the event loop
 * (the session's own I/O and timer callbacks), never from inside an
 * http2_client_* call. After http2_client_close() no event of that stream
 * runs and nothing of the stream or its exchange is touched again; the
 * stream is reset (RST_STREAM CANCEL) when it was still open. A stream that
 * failed (on_fail) is already detached from its session.
 *
 * Flow control (SPEC 3.1, 3.3): the connection window is given back as soon
 * as DATA arrives; a stream's window only as the client takes the bytes, so
 * a slow client stops its own stream and no other.
 *
 * Thread: the worker's thread.
 */
#ifndef SLUICE_HTTP2_CLIENT_H
#define SLUICE_HTTP2_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;
struct exchange;
struct h2_stream;
struct pool;
struct target;
struct upstream_config;

/* Why a stream failed; the user decides about retrying (SPEC 2.3 `retries`). */
enum http2_client_failure {
    H2_FAIL_CONNECT = 0, /* the connection could not be made or timed out */
    H2_FAIL_REFUSED,     /* never processed: REFUSED_STREAM, above a GOAWAY, or never sent */
    H2_FAIL_RESET,       /* reset, or the connection was lost, after the request went out */
};

/* What a stream tells its user (proxy.c). All members are required. */
struct http2_stream_events {
    /* The connection is up and the request was submitted (only when open said connecting). */
    void (*on_connected)(void *owner);
    /* The final response head is in x->status, x->resp_headers and x->resp_length. */
    void (*on_head)(void *owner);
    /* Response body bytes in `data`, to be moved on (emptied) by the callee. */
    void (*on_body)(void *owner, struct evbuffer *data);
    /* The response is complete; trailer fields, if any, are in x->resp_trailers. */
    void (*on_end)(void *owner);
    /* The stream failed and is detached. `status` is the gateway status to answer with. */
    void (*on_fail)(void *owner, enum http2_client_failure why, int status, const char *message);
    /* The request body handed over with http2_client_body was all framed: more may come. */
    void (*on_body_drained)(void *owner);
};

/*
 * Starts a stream for `x` to target `t` of upstream `cfg`: picks or opens a
 * connection and submits the request (pseudo-header fields from the method,
 * x->path and x->query, :authority from the Host field or x->host; field
 * names lower-cased; connection-specific fields dropped, "te: trailers"
 * kept). A request with a body (x->req_has_body) takes it through
 * http2_client_body. Sets *connecting when the connection is still being
 * made (on_connected follows). Returns the stream, allocated in x's arena,
 * or NULL when no socket could be created (errno set; nothing to close).
 */
struct h2_stream *http2_client_open(struct exchange *x, struct target *t,
                                    const struct upstream_config *cfg,
                                    const struct http2_stream_events *events, void *owner,
                                    bool *connecting);

/*
 * Queues request body bytes: moves `data` (may be empty) into the stream's
 * buffer and, with `end`, marks the body complete. Framing happens from the
 * loop, within the upstream's flow-control windows.
 */
void http2_client_body(struct h2_stream *st, struct evbuffer *data, bool end);

/* Request body bytes accepted by http2_client_body and not framed yet. */
size_t http2_client_body_pending(const struct h2_stream *st);

/* Stops (or resumes) giving the upstream flow-control credit for this stream. */
void http2_client_pause(struct h2_stream *st, bool pause);

/*
 * Ends the user's interest in the stream: detaches it (RST_STREAM CANCEL if
 * it is still open) and frees its buffers. Idempotent; NULL ok.
 */
void http2_client_close(struct h2_stream *st);

/*
 * Closes every HTTP/2 connection of a pool (its target is going away).
 * Streams still attached fail first (H2_FAIL_RESET). Called by
 * pool_close_all.
 */
void http2_client_pool_close(struct pool *p);

#endif
