/*
 * status: the live status page of the admin listener (GET / serves one
 * embedded HTML file, GET /status.json the figures it shows): the process,
 * every route with its request rate, status mix and latency, every
 * upstream with its targets' health, pool use and counts, and the open
 * connections by protocol.
 *
 * Where the figures come from, without calling up:
 * - counters from ops/metrics (metrics_visit), summed over the workers;
 * - the routes and upstreams as configured, from the snapshot in force;
 * - per-target state that only a worker may read (its pools, its targets as
 *   DNS resolved them, their shared health marks): each worker owns a
 *   `status_board` and publishes a copy into it about once a second
 *   (core/worker.c calls upstream_status_publish for each of its upstreams);
 *   the page merges the workers' latest copies. So pool figures are at most
 *   about a second old; nothing on the request path changes.
 * Rates are differences between the counters now and a sample taken when
 * an earlier /status.json was built (kept for up to STATUS_WINDOW_MAX_MS),
 * so nothing runs while nobody looks.
 *
 * Owns: the boards (each linked in a process-wide list until
 * status_board_free) and the rate samples.
 * Thread: status_board_* publishing calls from the board's worker;
 * status_render and status_process_started from the main (admin) thread.
 */
#ifndef SLUICE_STATUS_H
#define SLUICE_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct status_board;

/*
 * Rates: a sample of the counters is kept per /status.json at most every
 * STATUS_WINDOW_MIN_MS; the oldest one no older than STATUS_WINDOW_MAX_MS is
 * the base (none: since the start).
 */
#define STATUS_WINDOW_MAX_MS 10000
#define STATUS_WINDOW_MIN_MS 1000

/* The page itself (generated at build time from gateway/ops/status.html). */
extern const unsigned char status_html[];
extern const size_t status_html_len;

/* One target as a worker sees it when it publishes. Strings are copied. */
struct status_target {
    const char *upstream; /* the upstream's name */
    const char *name;     /* "ip:port": the metrics label */
    const char *host;     /* the configured host it was resolved from */
    unsigned port;        /* the configured port */
    int weight;           /* as configured */
    bool offered;         /* DNS offers its address now (false: kept for its connections) */
    bool active_down;     /* marked down by active health checks */
    int64_t passive_ms;   /* > 0: marked down passively for this many more ms */
    int check_failures;   /* consecutive failed active checks */
    int check_successes;  /* consecutive passed active checks */
    int64_t check_age_ms; /* since the last active check ended; -1: none yet */
    int64_t check_us;     /* how long the last check took */
    bool check_ok;        /* its verdict */
    unsigned pool_idle;   /* this worker's idle keep-alive connections */
    unsigned pool_open;   /* this worker's open connections (idle + busy + connecting) */
    unsigned in_flight;   /* this worker's exchanges using the target */
};

/* A worker's board, created and freed on the main thread (worker_new, worker_join_free). */
struct status_board *status_board_new(int worker_id);
void status_board_free(struct status_board *b);

/* Starts a new publication (worker thread; no lock: the staging copy is the worker's). */
void status_board_begin(struct status_board *b, unsigned connections);

/* Adds one target to the publication being built. */
void status_board_add(struct status_board *b, const struct status_target *t);

/* Makes the publication the board's latest (a pointer swap under the board's lock). */
void status_board_commit(struct status_board *b);

/* Records the process start and the number of workers (main, before the workers start). */
void status_process_started(int workers);

/* Appends the /status.json document (the admin thread). `draining`: /ready answers 503. */
void status_render(struct evbuffer *out, bool draining);

/* Frees what the module keeps for rates (at exit, after every board is freed). */
void status_free(void);

#endif
