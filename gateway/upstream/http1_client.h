/*
 * http1_client: the upstream HTTP/1.1 codec, implementing
 * upstream_codec_ops (upstream/codec.h). One stream is one request on one
 * connection of the target's pool (upstream/pool): an idle keep-alive
 * connection when there is one, a new one while upstream.max_connections
 * allows, else the stream waits in the pool's queue for a slot.
 *
 * Request: the head is serialised once per stream in the arena (origin-form
 * target, the fields as given, Content-Length when the length is known,
 * chunked when not); the body is written as it is handed over.
 * Response: the head is parsed with proto/http1_parse (interim responses
 * skipped, 101 refused), hop-by-hop fields removed, and the body decoded
 * (Content-Length, chunked, or until close). The body bytes that arrived
 * with the head are checked before the head event: a response whose first
 * bytes of body are already invalid fails as a whole (502) instead of
 * sending a head it cannot complete.
 *
 * Connection reuse: the connection goes back to the pool after a complete
 * response when both sides allow keep-alive and nothing is left over. A
 * reused connection that fails before any response byte is reported as
 * UPSTREAM_FAIL_STALE (any method may be sent again, SPEC 2.3).
 *
 * Owns: the stream (in the request's arena), its response body buffer
 * (from the thread's pool of evbuffers), and the connection while the
 * stream uses it.
 *
 * Thread: the worker's thread.
 */
#ifndef SLUICE_HTTP1_CLIENT_H
#define SLUICE_HTTP1_CLIENT_H

#include "upstream/codec.h"

/* The HTTP/1.1 upstream codec. */
extern const struct upstream_codec_ops http1_client_codec;

#endif
