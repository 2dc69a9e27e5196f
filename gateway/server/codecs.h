/*
 * codecs: the downstream codecs as the table the connection layer hands
 * accepted connections to (struct listener_codecs, net/loop.h). The
 * listener and the TLS handshake sit below the codecs, so they cannot call
 * them by name; main() registers this table once with
 * listener_set_codecs(&server_codecs) before the workers start.
 *
 * Owns: nothing. Thread: the table is read-only; its functions run on the
 * worker that accepted the connection.
 */
#ifndef SLUICE_CODECS_H
#define SLUICE_CODECS_H

#include "net/loop.h"

/*
 * Cleartext sockets go to HTTP/1.1 (which hands an h2c preface over to
 * HTTP/2), or straight to HTTP/2 on a listener with LISTEN_H2C_ONLY; TLS
 * connections go to HTTP/2 or HTTP/1.1 by ALPN.
 */
extern const struct listener_codecs server_codecs;

#endif
