/*
 * record: what the access log and the metrics learn about one finished
 * exchange, as a plain struct below core, so ops/ never sees the exchange
 * (which calls into ops/).
 *
 * The exchange fills one on its stack when it ends and passes it to
 * accesslog_write() (all fields, only when accesslog_enabled()) and
 * metrics_exchange_done() (which reads only status, start_us, end_us and
 * route, the fields always filled). Nothing is copied or
 * allocated: the slices and strings point into the exchange's arena, the
 * connection or the snapshot, and are valid only during those calls.
 *
 * Thread: the worker's thread that owns the exchange.
 */
#ifndef SLUICE_RECORD_H
#define SLUICE_RECORD_H

#include <stdint.h>

#include "base/header.h"
#include "base/slice.h"

struct access_log_config;

struct ops_record {
    const struct access_log_config *log;   /* the snapshot's access_log section */
    const struct header_list *req_headers; /* Referer and User-Agent (combined format) */
    const char *remote_addr;               /* peer IP, NUL-terminated */
    const char *protocol;                  /* "HTTP/1.0", "HTTP/1.1" or "HTTP/2" */
    struct slice request_id;
    struct slice method;
    struct slice target; /* the raw request-target */
    struct slice host;
    struct slice path; /* normalised */
    struct slice consumer;
    struct slice client_subject;
    int status; /* 499 when the client left first */
    uint64_t bytes_in;
    uint64_t bytes_out;
    int64_t start_us; /* monotonic microseconds */
    int64_t end_us;
    int64_t upstream_start_us; /* 0 when the exchange never went upstream */
    int64_t upstream_head_us;
    const char *upstream_name;   /* NULL when none */
    const char *upstream_target; /* NULL when none */
    const char *route;        /* the route's name (a snapshot string: metrics key on it), or NULL */
    const char *error;        /* SPEC 7 error code when the gateway made an error, or NULL */
    const char *close_reason; /* a WebSocket tunnel's (client, upstream, idle, drain), or NULL */
};

#endif
