/*
 * http2_client: the upstream HTTP/2 codec (SPEC 2.3 `"protocol": "h2"`) on
 * nghttp2: every request sent to such an upstream is one stream, multiplexed
 * with others over a few connections per target per worker. Cleartext
 * connections use prior knowledge (h2c, RFC 9113 3.3).
 *
 * Implements upstream_codec_ops (upstream/codec.h).
 *
 * Owns: struct h2_session (one upstream connection: its struct conn and its
 * nghttp2 session), kept in the target's pool (pool->h2, with the pool's
 * close_sessions hook pointing here) and counted in pool->num_open; struct
 * h2_upstream_stream (one request's stream, in the request's arena). A
 * session lives while it has streams or while it is idle and healthy; it
 * goes when the upstream closes it, on a connection error, after a GOAWAY
 * once its last stream ended, or with its pool.
 *
 * Connection choice: the first session of the target with room under the
 * upstream's SETTINGS_MAX_CONCURRENT_STREAMS; when all are full, another
 * connection while upstream.max_connections allows, else the least loaded
 * session (nghttp2 then holds the request until a stream slot frees).
 *
 * Promises: a stream's events are only ever called from the event loop
 * (the session's own I/O and timer callbacks), never from inside an
 * operation. After cancel() no event of that stream runs and nothing of the
 * stream or its request is touched again; the stream is reset (RST_STREAM
 * CANCEL) when it was still open. A stream that
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

#include "upstream/codec.h"

/*
 * The HTTP/2 upstream codec. open() picks or opens a connection and submits
 * the request (pseudo-header fields from the method, path and query,
 * :authority from the Host field or the request's host, else the target;
 * field names lower-cased; connection-specific fields dropped; "te:
 * trailers" when the request asks for it). Failures: UPSTREAM_FAIL_CONNECT
 * (no connection, or it timed out: 504), UPSTREAM_FAIL_STALE (never
 * processed: REFUSED_STREAM, above a GOAWAY, never sent, or a reused
 * connection that went silent), UPSTREAM_FAIL_AFTER_SEND (reset, or the
 * connection was lost, after the request went out). No splice access.
 */
extern const struct upstream_codec_ops http2_client_codec;

#endif
