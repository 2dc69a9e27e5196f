/*
 * target: the types an upstream's run-time state is made of (struct
 * upstream_rt, struct target, struct target_health), apart from the code
 * that manages them (upstream.c), so that the health checker (health.c)
 * and the codecs can read them without a circle through upstream.h.
 *
 * Owns: nothing; upstream.c creates and frees these objects (see
 * upstream.h for their lifetimes). Thread: as upstream.h.
 */
#ifndef SLUICE_TARGET_H
#define SLUICE_TARGET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf/config.h"
#include "net/tls.h"
#include "upstream/pool.h"

struct event_base;
struct evdns_base;
struct tls_client;
struct upstream_config;
struct target_config;

/*
 * Health of one target address, shared by every worker: one entry per
 * (upstream name, target name), created when a target is first made and
 * kept until upstream_health_table_free() at exit. Only atomics, so any
 * thread may read it without a lock.
 */
struct target_health {
    struct target_health *next;    /* the table's chain; under its mutex */
    char *upstream;                /* upstream name */
    char address[64];              /* target name, "ip:port" */
    _Atomic int64_t down_until_ms; /* passive mark: CLOCK_MONOTONIC ms */
    atomic_bool active_down;       /* set and cleared by active checks */
    atomic_int failures;           /* consecutive failed active checks */
    atomic_int successes;          /* consecutive passed active checks */
    _Atomic int64_t check_done_ms; /* when the last active check ended (monotonic ms); 0: none */
    _Atomic int64_t check_us;      /* how long it took */
    atomic_bool check_ok;          /* its verdict */
};

struct target {
    struct upstream_rt *upstream;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char name[64]; /* "10.0.0.3:8080" or "[::1]:8080": the metrics/log label */
    int weight;
    bool active;                        /* offered by DNS right now */
    struct target_health *health;       /* shared across workers */
    unsigned in_flight;                 /* exchanges using it on this worker (least_conn) */
    struct pool pool;                   /* this worker's connections to it */
    int64_t rr_current;                 /* smooth weighted round robin state */
    const struct target_config *config; /* the configured host:port it comes from */
    uint64_t hash;                      /* balance_hash64(name): its rendezvous identity */
    struct ssl_session_st *tls_session; /* upstream TLS: the last session, for resumption */
};

struct upstream_rt {
    const struct upstream_config *cfg;
    struct event_base *base;
    struct evdns_base *dns;
    struct target **targets; /* every target ever resolved */
    size_t num_targets;
    size_t cap_targets;
    void *impl; /* DNS and health-check state private to upstream.c / health.c */
};

/*
 * Makes `c`, just conn_connect'ed to `t`, a TLS client of `tc`: the name
 * checked is the target's configured host, and the target keeps the
 * session for resumption by its next connection (see tls_client_start).
 * Returns 0 or -1.
 */
static inline int target_tls_start(struct conn *c, const struct tls_client *tc, struct target *t)
{
    return tls_client_start(c, tc, t->config ? t->config->host : NULL, &t->tls_session);
}

#endif
