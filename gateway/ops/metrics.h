/*
 * metrics: per-worker counters, gauges and histograms, summed when /metrics
 * is scraped (SPEC 5, and 7 "metrics labels" and "admin extras").
 *
 * Counting takes no lock and does no shared atomic read-modify-write: each
 * worker owns a table of series that only it writes, with relaxed atomic
 * loads and stores (single writer), and the scrape reads every table with
 * relaxed or acquire loads. A worker takes its table's lock only to add a
 * series it has not counted before (the first request of a route and code,
 * the first response of a target), so the scrape never reads a table being
 * resized; the lock is otherwise only the scrape's. Threads without a
 * worker (main, unit tests) share one table and take its lock to count.
 *
 * Thread: metrics_* counting calls from any thread (each into its own
 * table); metrics_render from the admin thread (main).
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct evbuffer;
struct ops_record;
struct thread_cache;
struct metrics_gauge;

/* Counts a finished exchange: requests_total{route,code}, duration histogram. */
void metrics_exchange_done(const struct ops_record *r);

/* Counts an upstream response or failure: upstream_requests_total{upstream,target,code}. */
void metrics_upstream_response(const char *upstream, const char *target, int code);

/* Counts a failed connect: upstream_connect_errors_total{upstream,target}. */
void metrics_connect_error(const char *upstream, const char *target);

/* Counts a request a rate_limit filter refused: rate_limited_total{route}; NULL: no route. */
void metrics_rate_limited(const char *route);

/* Counts a TLS handshake that failed or timed out on `listener` (its configured address). */
void metrics_tls_handshake_failed(const char *listener);

/*
 * rate_limit's Redis store: a decision it could not make, by `reason`
 * ("unavailable", "timeout", "error", "connection_lost"): store_errors_total{reason};
 * and the latency of a script call answered: store_duration_seconds.
 */
void metrics_rate_limit_store_error(const char *reason);
void metrics_rate_limit_store_latency(int64_t us);

/* Gauges: connections_active{protocol} ("http1", "h2", "websocket"), websocket_tunnels_active. */
void metrics_connection_opened(const char *protocol);
void metrics_connection_closed(const char *protocol);
void metrics_tunnel_opened(void);
void metrics_tunnel_closed(void);

/* Counts a reload: config_reloads_total{result}. */
void metrics_reload(bool ok);

/*
 * The calling thread's pool gauges for (upstream, target):
 * upstream_pool_idle and upstream_pool_active. Looked up once per pool (a
 * lock only when the series is new); the pool then moves them with
 * metrics_pool_add from the same thread. Several pools of one thread (an
 * old and a new configuration's) share the series and add their deltas.
 * NULL when out of memory (metrics_pool_add ignores NULL).
 */
struct metrics_gauge *metrics_pool_gauge(const char *upstream, const char *target);
void metrics_pool_add(struct metrics_gauge *g, int idle_delta, int open_delta);

/*
 * Where upstream_target_healthy{upstream,target} comes from: a function of
 * a layer above (upstream/) that calls `fn` once per known target. Set once
 * by main before the admin listener serves; NULL: the family is empty.
 */
typedef void metrics_health_fn(void *arg, const char *upstream, const char *target, bool healthy);
void metrics_set_health_source(void (*each)(metrics_health_fn *fn, void *arg));

/* Appends the Prometheus text exposition (format 0.0.4) of everything to `out`. */
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
