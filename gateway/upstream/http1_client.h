/*
 * http1_client: the upstream HTTP/1.1 codec's pure parts: serialising the
 * request head an exchange sends upstream, and the chunk framing of a
 * streamed request body. Reading the response uses http1_parse.
 *
 * Thread: any; no state.
 */
#ifndef SLUICE_HTTP1_CLIENT_H
#define SLUICE_HTTP1_CLIENT_H

#include <stdbool.h>

#include "base/slice.h"

struct exchange;
struct evbuffer;

/*
 * Prepares the header fields of x->req_headers for the upstream (SPEC 3.1
 * and 7): hop-by-hop fields removed, X-Forwarded-For appended with the peer
 * IP, X-Forwarded-Proto and X-Forwarded-Host replaced.
 */
void http1_client_prepare(struct exchange *x);

/*
 * Serialises the request head (request line in origin-form with the
 * normalised path and the query, the fields, and the framing: Content-Length
 * when the length is known, chunked when not) into arena memory, once, so
 * that a retry can send the same bytes again. Sets *chunked.
 */
struct slice http1_client_head(struct exchange *x, bool *chunked);

/* Moves `body` into `out`, as one chunk when `chunked`. */
void http1_client_body(struct evbuffer *out, struct evbuffer *body, bool chunked);

/* Appends the last chunk ("0\r\n\r\n"). */
void http1_client_body_end(struct evbuffer *out);

#endif
