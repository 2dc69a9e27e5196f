/*
 * upstream: the run-time side of one configured upstream on one worker:
 * its targets (every address its host names resolve to), DNS refresh,
 * target choice (balance.c) and health (health.c).
 *
 * Owns: struct upstream_rt and its struct target objects. A target object
 * lives until the upstream_rt is freed, even after DNS drops its address
 * (connections may still use it); DNS refresh only changes which targets
 * are offered by upstream_pick(). Health state is shared by all workers
 * through atomics (struct target_health, process-wide, keyed by upstream
 * name and address), so a target marked down by one worker is down for all.
 *
 * Thread: an upstream_rt belongs to one worker's event_base; all calls on it
 * come from that thread.
 */
#ifndef SLUICE_UPSTREAM_H
#define SLUICE_UPSTREAM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/slice.h"
#include "upstream/target.h"

struct event_base;
struct evdns_base;
struct upstream_config;
struct status_board;

/*
 * Creates the run-time state of `cfg` on a worker and starts resolving its
 * host names (IP literals need no DNS). A name that does not resolve yet
 * leaves its target absent until it does; start-up never waits for DNS.
 * When `run_health_checks` (one worker per process does), active checks
 * from cfg->health start too.
 */
struct upstream_rt *upstream_rt_new(const struct upstream_config *cfg, struct event_base *base,
                                    struct evdns_base *dns, bool run_health_checks);

/*
 * Stops timers, health checks and DNS, closes pooled connections, frees
 * targets. NULL ok. Call it before freeing `dns`: lookups still in flight
 * are cancelled, and their callbacks (run later by the loop or by
 * evdns_base_free) touch nothing of `u`.
 */
void upstream_rt_free(struct upstream_rt *u);

/* What hashing balancers hash: the client IP (ip_hash) or the header value. */
struct balance_key {
    struct slice client_ip;
    struct slice header_value; /* empty when absent: falls back to round robin */
};

/*
 * Chooses a target for one attempt: active, healthy, not in `exclude`
 * (targets already tried by this exchange), by cfg->balance. Returns NULL
 * when there is none (the caller answers 503, or 502 after failed attempts).
 * `key` may be NULL (hashing balancers then fall back to round robin).
 * Does not change in_flight: the caller counts the exchanges it starts.
 */
struct target *upstream_pick(struct upstream_rt *u, const struct balance_key *key,
                             struct target *const *exclude, size_t num_exclude);

/* Number of targets currently active and healthy. */
size_t upstream_healthy_count(const struct upstream_rt *u);

/*
 * Copies what the status page shows of `u`'s targets (those DNS offers now,
 * and older ones that still hold connections) into the worker's board,
 * between status_board_begin and status_board_commit (ops/status.h).
 */
void upstream_status_publish(const struct upstream_rt *u, struct status_board *b);

/*
 * Passive health: connecting to `t` failed (refused, reset, timeout). The
 * target is down for health.interval_ms, or 5000 ms without health_check.
 */
void upstream_mark_failed(struct target *t);

/* True when `t` is not marked down (passively or by active checks). */
bool target_is_healthy(const struct target *t);

/* CLOCK_MONOTONIC in milliseconds: the clock of down_until_ms. */
int64_t upstream_now_ms(void);

/*
 * Calls fn once per entry of the process-wide health table (every target
 * seen since start), with whether it is healthy now; any thread (the admin
 * thread's /metrics). The names are valid during the call only.
 */
void upstream_health_each(void (*fn)(void *arg, const char *upstream, const char *target,
                                     bool healthy),
                          void *arg);

/*
 * Frees the process-wide target health table. Call once at exit, after
 * every upstream_rt is freed (their targets point into it).
 */
void upstream_health_table_free(void);

#endif
