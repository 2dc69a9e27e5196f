/*
 * worker: one thread with its own event loop (ARCHITECTURE "Threads and
 * state"): its listening sockets (SO_REUSEPORT), its evdns_base, its view of
 * the configuration with the upstream run-time state (pools) built for it,
 * and its client connections.
 *
 * Owns: the event_base, the evdns_base, the listeners, every
 * worker_snapshot it built, the list of open client connections, and its
 * thread's caches (struct thread_cache).
 * Promises: a request lives and dies on one worker; nothing here is touched
 * by another thread except through worker_notify() (reload, drain, stop).
 *
 * Thread: worker_start/worker_join/worker_notify from the main thread;
 * everything else on the worker's own thread.
 */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/header.h"
#include "base/thread_cache.h"
#include "net/loop.h"

struct event;
struct event_base;
struct evdns_base;
struct snapshot;
struct status_board;
struct upstream_rt;
struct deadlines;
struct filter_contexts;
struct redis_client;

/*
 * A worker's view of one snapshot: the snapshot plus the run-time state of
 * its upstreams on this worker. Exchanges hold it (refs); it is freed on the
 * worker's thread once it is no longer current and no exchange holds it.
 */
struct worker_snapshot {
    struct snapshot *snapshot;
    struct upstream_rt **upstreams; /* indexed like snapshot->upstreams */
    /* Per-worker filter contexts (core/filter.h); NULL when no filter needs one. */
    struct filter_contexts *filter_contexts;
    /* The Redis connection of this view (upstream/redis.h); NULL unless a filter needs it. */
    struct redis_client *redis;
    unsigned refs;
    struct worker *worker;
    struct worker_snapshot *next; /* older views still in use */
};

enum worker_command {
    WORKER_RELOAD = 1 << 0, /* a new snapshot is in force: sync listeners */
    WORKER_DRAIN = 1 << 1,  /* stop accepting, close idle connections, exit when empty */
    WORKER_STOP = 1 << 2,   /* exit now */
};

struct worker {
    int id;
    pthread_t thread;
    struct event_base *base;
    struct evdns_base *dns;
    struct deadlines *deadlines; /* connection timeouts and deferred work */
    struct event *notify;        /* reads notify_fd */
    int notify_fd;               /* eventfd written by worker_notify */
    atomic_int commands;         /* enum worker_command bits, set by worker_notify */
    /*
     * What the connection layers see: listeners, open client connections,
     * draining, and the snapshot of `current` (kept in step by the worker).
     */
    struct net_loop net;
    struct worker_snapshot *current;
    struct worker_snapshot *old; /* views still held by exchanges */
    bool run_health_checks;
    struct header *parse_headers; /* scratch for the HTTP/1 head parser */
    size_t parse_cap;
    uint64_t rng[2]; /* xorshift128+ state: request ids, random balancing */
    /* Spare arenas and buffers, registered for the worker's thread while its loop runs. */
    struct thread_cache cache;
    /* What the admin status page shows of this worker, republished every second. */
    struct status_board *status;
    struct event *status_timer;
    atomic_bool exited;
};

/*
 * Creates worker `id` with its own event_base and evdns_base, and binds its
 * listening sockets for `s`. Returns NULL and prints one line naming the
 * config path (listen[N].address) and the reason when a socket cannot be
 * bound.
 */
struct worker *worker_new(int id, struct snapshot *s);

/* Starts the worker's thread. Returns 0 or -1. */
int worker_start(struct worker *w);

/* Asks the worker to act (thread-safe): sets the command bits and wakes its loop. */
void worker_notify(struct worker *w, enum worker_command cmd);

/* Waits for the thread and frees everything the worker owns. */
void worker_join_free(struct worker *w);

/*
 * The worker's view of the configuration in force, with one more reference
 * (builds a new view when a reload happened). Release with
 * worker_snapshot_release().
 */
struct worker_snapshot *worker_snapshot_acquire(struct worker *w);
void worker_snapshot_release(struct worker_snapshot *ws);

/* 64 random bits from the worker's generator. */
uint64_t worker_random(struct worker *w);

/* The worker of the calling thread, or NULL on the main thread. */
struct worker *worker_self(void);

#endif
