/*
 * probe: one plain HTTP GET with a time limit, for `sluice --probe URL`
 * (SPEC 7 "long options"): a container health check without curl.
 *
 * Promises: the URL is `http://HOST[:PORT][/PATH]` (HOST a name, an IPv4
 * literal or a bracketed IPv6 literal; PORT 80 when absent); the whole
 * exchange, connect to response head, is bounded by `timeout_ms` once the
 * name is resolved; the response head is read with the gateway's own
 * HTTP/1 parser. No configuration, no event loop, no state.
 *
 * Thread: any; blocking, for the command line only.
 */
#ifndef SLUICE_PROBE_H
#define SLUICE_PROBE_H

#include <stddef.h>

/*
 * Splits a probe URL into a malloc'd host (without brackets; the caller
 * frees it), a port and a malloc'd path with query ("/" when absent).
 * Returns 0, or -1 with the reason in why[whylen] (a clause, no period).
 */
int probe_parse_url(const char *url, char **host, unsigned short *port, char **path, char *why,
                    size_t whylen);

/*
 * GETs `url`. Returns the response status (100..999), or -1 with the reason
 * in why[whylen]: a bad URL, a name that does not resolve, a refused or
 * timed-out connection, an invalid response.
 */
int probe_get(const char *url, int timeout_ms, char *why, size_t whylen);

#endif
