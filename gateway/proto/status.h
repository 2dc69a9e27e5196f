/*
 * status: the one table of HTTP status texts: the reason phrase a codec
 * writes on an HTTP/1 status line, and for the statuses the gateway answers
 * itself, the SPEC 7 error code and the default message of the JSON error
 * body (SPEC 3.2).
 *
 * Owns: a constant table indexed by status (O(1), no search on the hot
 * path). Thread: any; pure functions over constant data.
 */
#ifndef SLUICE_STATUS_H
#define SLUICE_STATUS_H

/* The reason phrase for `status` (RFC 9110 15), e.g. "Bad Gateway"; "Status" when unknown. */
const char *status_reason(int status);

/* The SPEC 7 error code for a gateway status, e.g. 502 -> "bad_gateway"; "error" when none. */
const char *status_error_code(int status);

/*
 * The default sentence of the gateway's JSON error body for `status`, e.g.
 * 404 -> "no route matches this request"; for a status with no sentence of
 * its own, "OK" for 200 and "error" otherwise.
 */
const char *status_message(int status);

#endif
