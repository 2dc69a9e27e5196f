/*
 * addr: host:port text, parsed and formatted (SPEC 2 addresses).
 *
 * Promises: "HOST:PORT" with HOST a name or an IPv4 literal, "[V6]:PORT"
 * with an IPv6 literal in brackets, PORT from 1 to 65535. Parsing never
 * resolves a name (no resolver runs at load time); a failure explains
 * itself in `why` (a clause for the caller's message, no trailing period).
 *
 * Thread: any; nothing here keeps state.
 */
#ifndef SLUICE_ADDR_H
#define SLUICE_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * Parses a listening address: a numeric IPv4 or bracketed IPv6 literal, or
 * "localhost" (taken as 127.0.0.1). Fills *ss and *len; on error returns
 * false with the reason in why[whylen].
 */
bool addr_parse_bind(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *why,
                     size_t whylen);

/*
 * Parses "host:port" where host may be a name, IPv4 or [IPv6]. On success
 * *host is malloc'd (without brackets; the caller frees it); on error *host
 * is NULL and the reason is in why[whylen].
 */
bool addr_parse_target(const char *s, char **host, uint16_t *port, char *why, size_t whylen);

/* True when `h` is 1 to 253 letters, digits, '.', '-' or '_' (a DNS name as configured). */
bool addr_is_hostname(const char *h);

/* True when both addresses are set (len > 0) and equal byte for byte. */
bool addr_same(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b,
               socklen_t blen);

/*
 * Writes "10.0.0.3:8080" or "[::1]:8080" for an IPv4 or IPv6 socket address
 * into out[size]; false for other families.
 */
bool addr_format(const struct sockaddr *sa, char *out, size_t size);

/*
 * Writes the IP of `sa` without port ("10.0.0.3", "::1") into `out`, which
 * holds INET6_ADDRSTRLEN bytes; the empty string for other families. IPv4
 * is formatted by hand: inet_ntop costs about as much as the rest of a
 * request's bookkeeping, and the codecs format the peer once per request
 * rather than keep 46 bytes in every idle connection.
 */
void addr_ip_text(const struct sockaddr *sa, char *out);

#endif
