/*
 * websocket: the RFC 6455 handshake values the gateway must make itself
 * when it bridges an RFC 8441 extended CONNECT (HTTP/2) to an HTTP/1.1
 * upgrade: a Sec-WebSocket-Key for the upstream, and the
 * Sec-WebSocket-Accept the upstream has to answer it with.
 *
 * Pure functions, no I/O. Thread: any.
 */
#ifndef SLUICE_WEBSOCKET_H
#define SLUICE_WEBSOCKET_H

#include <stdint.h>

#include "base/slice.h"

/* Base64 of 16 bytes (24 characters), plus the terminating NUL. */
#define WEBSOCKET_KEY_SIZE 25
/* Base64 of a SHA-1 (28 characters), plus the terminating NUL. */
#define WEBSOCKET_ACCEPT_SIZE 29

/* A Sec-WebSocket-Key from 16 random bytes. */
void websocket_key(const uint8_t random[16], char out[WEBSOCKET_KEY_SIZE]);

/* The Sec-WebSocket-Accept for `key` (RFC 6455 4.2.2: base64(SHA-1(key + GUID))). */
void websocket_accept(struct slice key, char out[WEBSOCKET_ACCEPT_SIZE]);

#endif
