/*
 * http2_server: the downstream HTTP/2 codec (SPEC 3.3) on nghttp2. Every
 * stream is one exchange through the same router, filters and proxy as
 * HTTP/1; this file only translates frames to exchange operations and back.
 *
 * Owns: struct h2_conn (one per client connection), its nghttp2 session,
 * and the adopted struct conn. Thread: the worker's thread.
 */
#ifndef SLUICE_HTTP2_SERVER_H
#define SLUICE_HTTP2_SERVER_H

#include <sys/socket.h>

struct conn;
struct worker;

/*
 * Takes over an open connection and serves HTTP/2 on it: after TLS ALPN
 * "h2", or when a cleartext connection on an h2c listener starts with the
 * connection preface (bytes already in c->in are processed first). `flags`
 * are enum listen_flags. On success the codec owns `c`; on -1 the caller
 * still owns it.
 */
int http2_server_adopt(struct worker *w, struct conn *c, const struct sockaddr_storage *peer,
                       unsigned flags);

/*
 * Serves HTTP/2 on a freshly accepted cleartext socket of a listener
 * without HTTP/1.1 (LISTEN_H2C_ONLY): whatever arrives must be the
 * connection preface, else GOAWAY(PROTOCOL_ERROR). Returns 0, or -1 (the
 * caller closes fd).
 */
int http2_server_accept(struct worker *w, int fd, const struct sockaddr_storage *peer,
                        unsigned flags);

#endif
