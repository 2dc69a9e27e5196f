/*
 * http1_parse: a strict RFC 9112 parser for request and response heads, the
 * body-framing rules, and an incremental chunked decoder.
 *
 * Pure functions over the caller's bytes: nothing here allocates, blocks or
 * does I/O, and every result slice points into the caller's buffer. Anything
 * ambiguous is rejected, never guessed (ARCHITECTURE "HTTP/1 parsing"):
 * bare LF, bare CR, obs-fold, whitespace before a field's colon, control
 * characters in a field value, a malformed request line, versions other than
 * HTTP/1.0 and HTTP/1.1. Up to 8 empty lines (CRLF) before a request line
 * are skipped, as RFC 9112 2.2 allows.
 *
 * Thread: any; no state outside the arguments.
 */
#ifndef SLUICE_HTTP1_PARSE_H
#define SLUICE_HTTP1_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/header.h"
#include "base/slice.h"

/* Results of the head parsers below, besides a positive byte count. */
enum {
    HTTP1_INVALID = -1,          /* malformed: 400 (request) or 502 (response) */
    HTTP1_PARTIAL = -2,          /* need more bytes */
    HTTP1_TOO_MANY_HEADERS = -3, /* more than max_headers fields: 431 */
};

struct http1_request_head {
    struct slice method;
    struct slice target; /* as sent: origin-form, absolute-form, authority-form or "*" */
    int minor_version;   /* 0 or 1 */
    struct header *headers;
    size_t num_headers;
};

struct http1_response_head {
    int minor_version;
    int status; /* 100..999; three digits */
    struct slice reason;
    struct header *headers;
    size_t num_headers;
};

/*
 * Parses a request head from buf[0..len). `headers` has room for
 * `max_headers` entries. Returns the number of bytes of the head (request
 * line through the empty line) on success, or HTTP1_PARTIAL, HTTP1_INVALID,
 * HTTP1_TOO_MANY_HEADERS. On success `out` describes the head.
 */
int http1_parse_request(const char *buf, size_t len, struct http1_request_head *out,
                        struct header *headers, size_t max_headers);

/* Parses a response head; same contract as http1_parse_request. */
int http1_parse_response(const char *buf, size_t len, struct http1_response_head *out,
                         struct header *headers, size_t max_headers);

enum http1_framing {
    HTTP1_BODY_NONE = 0, /* no body at all */
    HTTP1_BODY_LENGTH,   /* Content-Length bytes follow */
    HTTP1_BODY_CHUNKED,  /* Transfer-Encoding: chunked */
    HTTP1_BODY_CLOSE,    /* response delimited by the connection closing */
};

/*
 * Decides how a request body is framed (RFC 9112 6.1-6.3, SPEC 7 "framing")
 * for a request of HTTP/1.`minor_version`. Returns 0 and sets *framing and
 * *length, or the status to answer: 400 for both Content-Length and
 * Transfer-Encoding, any Transfer-Encoding in an HTTP/1.0 request (RFC 9112
 * 6.1: faulty framing), any duplicate Content-Length field (even equal), a
 * Content-Length that is not 1*DIGIT or overflows; 501 for any
 * Transfer-Encoding other than the single coding "chunked"
 * (case-insensitive), including "gzip, chunked" and two Transfer-Encoding
 * fields.
 */
int http1_request_framing(int minor_version, const struct header *headers, size_t n,
                          enum http1_framing *framing, uint64_t *length);

/*
 * Decides how a response body is framed, given the request method was HEAD
 * or not. 1xx, 204, 304 and responses to HEAD have no body; chunked wins;
 * else Content-Length; else read until close. Returns 0, or -1 for an
 * invalid or ambiguous response (CL and TE, bad or differing CL, a
 * transfer coding other than chunked): the gateway answers 502.
 */
int http1_response_framing(int status, bool head_request, const struct header *headers, size_t n,
                           enum http1_framing *framing, uint64_t *length);

/*
 * Incremental chunked decoder (RFC 9112 7.1). Chunk sizes may have leading
 * zeros but at most 16 hex digits; chunk extensions are skipped (bounded to
 * 4096 bytes per line); trailer fields are parsed for validity and skipped
 * (bounded to 16384 bytes in all). The size lines, CRLFs and trailers are
 * consumed byte by byte, so the caller never needs contiguous lines.
 */
struct http1_chunked {
    int state;
    int digits;
    uint64_t remaining; /* payload bytes left in the current chunk */
    size_t line_bytes;  /* bytes seen on the current framing line */
    size_t trailer_bytes;
};

void http1_chunked_init(struct http1_chunked *d);

/*
 * True when `host` is a valid Host field value or authority (RFC 9112 3.2,
 * RFC 3986 3.2.2-3.2.3): uri-host [ ":" port ], where uri-host is a reg-name
 * (unreserved, pct-encoded, sub-delims; an IPv4 address is one), or an IPv6
 * address (or IPvFuture) in brackets, and port is at most 5 digits. No
 * userinfo ("@"), no whitespace. The empty value is valid (RFC 9112 3.2); a
 * port without a host (":80") is not.
 */
bool http1_valid_host(struct slice host);

/*
 * Feeds buf[0..len). Returns the number of bytes consumed (0..len), or -1 if
 * the stream is invalid (the caller answers 400, or 502 for a response).
 * When payload bytes are found, *data is set to that run inside buf (which
 * ends the call early, so the caller can move them), else data->len is 0.
 * Call again with the rest until it consumes nothing or the body is done.
 */
ssize_t http1_chunked_decode(struct http1_chunked *d, const char *buf, size_t len,
                             struct slice *data);

/* True once the last chunk and the trailer section have been consumed. */
bool http1_chunked_done(const struct http1_chunked *d);

#endif
