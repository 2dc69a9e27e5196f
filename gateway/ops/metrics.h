/*
 * metrics: per-worker counters and histograms, summed when /metrics is
 * scraped (SPEC 5). Counting is a plain increment in the worker's own
 * table: no locks or atomics on the request path; the scrape takes each
 * worker's table lock briefly (uncontended: only the scrape ever waits).
 *
 * Thread: metrics_* counting calls from workers; metrics_render from the
 * admin thread.
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct evbuffer;
struct ops_record;
struct target;
struct thread_cache;

/* Counts a finished exchange: requests_total{route,code}, duration histogram. */
void metrics_exchange_done(const struct ops_record *r);

/* Counts an upstream response or failure: upstream_requests_total{upstream,target,code}. */
void metrics_upstream_response(const char *upstream, const char *target, int code);

/* Counts a failed connect: upstream_connect_errors_total{upstream,target}. */
void metrics_connect_error(const char *upstream, const char *target);

/* Counts a request a rate_limit filter refused: rate_limited_total{route}; NULL: no route. */
void metrics_rate_limited(const char *route);

/* Gauges: connections_active{protocol} ("http1", "h2", "websocket"), websocket_tunnels_active. */
void metrics_connection_opened(const char *protocol);
void metrics_connection_closed(const char *protocol);
void metrics_tunnel_opened(void);
void metrics_tunnel_closed(void);

/* Counts a reload: config_reloads_total{result}. */
void metrics_reload(bool ok);

/* Appends the Prometheus text exposition of everything to `out`. */
void metrics_render(struct evbuffer *out);

/*
 * Forgets the worker's table pointer kept in its thread cache (the worker
 * calls it when its loop ends); the table itself stays for scraping.
 */
void metrics_cache_clear(struct thread_cache *tc);

/* Frees the tables (at exit). */
void metrics_free(void);

/* ---- the read side of the status page (ops/status.c) ---------------------------- */

enum metrics_figure_kind {
    METRICS_ROUTE = 1,      /* requests{route,code} with their durations */
    METRICS_UPSTREAM,       /* upstream_requests{upstream,target,code} */
    METRICS_CONNECT_ERRORS, /* upstream_connect_errors{upstream,target} */
    METRICS_RATE_LIMITED,   /* rate_limited{route} */
};

/*
 * One series summed over every worker. The names are interned: the same
 * name is the same pointer, valid until metrics_free().
 */
struct metrics_figure {
    enum metrics_figure_kind kind;
    const char *route; /* ROUTE, RATE_LIMITED: "(none)" for unmatched requests */
    const char *upstream;
    const char *target;
    int code; /* ROUTE, UPSTREAM: the status */
    uint64_t count;
    double seconds;          /* ROUTE: the sum of the durations */
    const uint64_t *buckets; /* ROUTE: requests that took at most bounds[i] seconds */
    const double *bounds;
    int num_buckets;
};

/* The unlabelled figures. */
struct metrics_gauges {
    long http1, h2, websocket; /* connections_active{protocol} */
    long tunnels;              /* websocket_tunnels_active */
    long reloads_ok, reloads_error;
};

/*
 * Calls `fn` once per series, summed over the workers the way a scrape sums
 * them (and under the same locks), and fills `gauges`.
 */
void metrics_visit(void (*fn)(void *ctx, const struct metrics_figure *f), void *ctx,
                   struct metrics_gauges *gauges);

#endif
