/*
 * http1_server: the downstream HTTP/1.1 codec. Reads request heads with
 * http1_parse, turns each into an exchange, decodes request bodies
 * (Content-Length or chunked) into the exchange, and writes responses
 * (Content-Length, chunked, or close-delimited for HTTP/1.0 clients).
 * Keep-alive, pipelining (one request at a time, in order), Expect:
 * 100-continue, and the limits and timeouts of SPEC 2.5 and 7.
 *
 * Owns: struct h1_conn (malloc, one per client connection) and its socket.
 * Promises: after a 400 or 501 the connection is closed (SPEC 7 "framing");
 * nothing ambiguous becomes an exchange. A connection is closed gracefully:
 * output flushed, then write side shut down, remaining input read and
 * discarded for a moment, then closed, so the client sees the response
 * instead of a reset.
 *
 * Thread: the worker's thread.
 */
#ifndef SLUICE_HTTP1_SERVER_H
#define SLUICE_HTTP1_SERVER_H

#include <stdbool.h>
#include <sys/socket.h>

struct conn;
struct worker;

/*
 * Takes over an open connection (after a TLS handshake, say) and serves
 * HTTP/1.1 on it; bytes already in c->in are parsed first. `flags` are enum
 * listen_flags (net/loop.h); with LISTEN_H2C a fresh connection that
 * starts with the HTTP/2 preface goes to the registered HTTP/2 codec. On
 * success the codec owns `c` (and frees it); on -1 the caller still owns it.
 */
int http1_server_adopt(struct worker *w, struct conn *c, const struct sockaddr_storage *peer,
                       unsigned flags);

/* Serves a freshly accepted socket. Returns 0, or -1 (the caller closes fd). */
int http1_server_accept(struct worker *w, int fd, const struct sockaddr_storage *peer,
                        socklen_t peerlen, unsigned flags);

#endif
