/*
 * tls: OpenSSL 3 contexts built from the configuration, and the TLS side of
 * accepting and connecting (SPEC 2.2 listener "tls", 2.3 upstream "tls").
 *
 * Server side: one SSL_CTX per certificate of a listener, all configured
 * alike (min_version, ALPN from `protocols`, client_ca for mTLS, session
 * cache and tickets); the first certificate's context starts every
 * handshake and the SNI callback switches to the certificate whose SAN DNS
 * names match (X.509 wildcards: one left-most label), the first one when
 * none does. Ticket keys belong to that first context, so every worker
 * resumes every other worker's sessions.
 *
 * Client side: one SSL_CTX per upstream with "tls": verification on by
 * default (the system store, or `ca`), SNI and host name check from
 * `server_name` or the target's configured host (an IP literal is checked
 * as an IP and sends no SNI), and one cached session per target for
 * resumption on new pooled connections.
 *
 * Owns: struct tls_server / tls_client and their SSL_CTXs ("snapshot"
 * lifetime: built by config_load on the main thread, freed with the
 * snapshot); struct tls_accept (a connection while its server handshake
 * runs; its own, on the worker). SSL_CTXs are only read after load, so
 * every worker shares them.
 *
 * Thread: tls_*_build/free on the main thread; the rest on a worker.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct config_error;
struct conn;
struct listen_config;
struct net_loop;
struct snapshot;
struct ssl_session_st;
struct ssl_st;

struct tls_server;
struct tls_client;

/*
 * Builds a listener's TLS from its "tls" object `v` (err->path is the
 * listener's path). `protocols` is the listener-level "protocols" (an
 * alternative spelling of tls.protocols), NULL when absent. Relative file
 * names resolve against the config file's folder. Every problem is
 * recorded in `err`, naming the JSON path, the file and OpenSSL's reason.
 * Returns NULL after an error.
 */
struct tls_server *tls_server_build(struct config_error *err, const json_t *v,
                                    const json_t *protocols);
void tls_server_free(struct tls_server *ts); /* NULL ok */

/* Builds an upstream's TLS from its "tls" object, like tls_server_build. */
struct tls_client *tls_client_build(struct config_error *err, const json_t *v);
void tls_client_free(struct tls_client *tc); /* NULL ok */

/*
 * Serves a freshly accepted socket of a TLS listener: the handshake runs
 * under limits.header_timeout_ms, in `loop`'s list of connections, then
 * the connection goes to the codec registered for HTTP/2 (ALPN "h2") or
 * HTTP/1.1 (listener_set_codecs) with LISTEN_TLS added to `flags`. `s` is
 * the snapshot `lc` belongs to (held during the handshake). Returns 0, or
 * -1 when nothing could be set up (the caller closes fd).
 */
int tls_server_accept(struct net_loop *loop, int fd, const struct sockaddr_storage *peer,
                      unsigned flags, struct snapshot *s, const struct listen_config *lc);

/*
 * Registers the function told of every client handshake that fails or
 * times out (not of a connection closed before its first byte, such as a
 * TCP health check), with the listener's configured address (the metrics, from
 * main: ops sits above net). Set once before any worker runs; NULL: none.
 * Called on the worker's thread.
 */
void tls_set_failure_hook(void (*hook)(const char *listener));

/*
 * Makes `c`, just conn_connect'ed, a TLS client of `tc`: SNI and the name
 * check use tc's server_name, else `host` (the configured host; NULL: no
 * name). `session` is the caller's slot for the last session of this
 * destination: it is offered for resumption, and a new session the server
 * issues replaces it (the slot owns one reference; it must outlive `c`,
 * release it with tls_session_forget). Returns 0 or -1.
 */
int tls_client_start(struct conn *c, const struct tls_client *tc, const char *host,
                     struct ssl_session_st **session);

/* Frees the session in a slot filled by tls_client_start and clears it. */
void tls_session_forget(struct ssl_session_st **session);

/*
 * The subject of the verified client certificate, one line in RFC 2253
 * form, malloc'd; NULL when the client sent none.
 */
char *tls_peer_subject(struct ssl_st *ssl);

/* Writes why a TLS connection failed (OpenSSL reason, verify result) into buf. */
void tls_describe_failure(const struct conn *c, char *buf, size_t len);

/*
 * Whether certificate name `pattern` (a SAN DNS entry: "api.example.org"
 * or "*.example.org") covers host name `host`, case-insensitively. A
 * wildcard stands for exactly one whole left-most label.
 */
bool tls_name_match(const char *pattern, const char *host);

#endif
