/*
 * health: active health checks of one upstream_rt's targets. Every
 * health.interval_ms each active target gets a non-blocking TCP connect and
 * "GET <path>" (Connection: close); a 2xx or 3xx status line within
 * health.timeout_ms is a success, anything else a failure.
 * unhealthy_after consecutive failures set the target's shared
 * active_down, healthy_after consecutive successes clear it.
 *
 * Owns: its timer and the in-flight probes (sockets and events).
 * Thread: the upstream_rt's worker; one worker per process runs checks.
 */
#ifndef SLUICE_HEALTH_H
#define SLUICE_HEALTH_H

struct upstream_rt;
struct health_checker;

/*
 * Starts checking `u`'s targets (the first round runs at once, on the next
 * loop iteration). Reads u->targets at every round, so targets that DNS
 * adds later are checked too. Returns NULL when out of memory.
 */
struct health_checker *health_start(struct upstream_rt *u);

/* Stops the checks: closes every probe socket and frees all events. NULL ok. */
void health_stop(struct health_checker *hc);

#endif
