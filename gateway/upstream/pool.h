/*
 * pool: one worker's connections to one target: idle keep-alive connections
 * for reuse, the count of open ones, and the queue of exchanges waiting for
 * a connection when upstream.max_connections is reached (SPEC 2.3).
 *
 * Owns: the idle upstream connections (closing them on pool_close_all, or
 * when the upstream closes one while it sits idle) and the waiter links.
 * A multiplexing codec (upstream/http2_client) keeps its sessions in `h2`
 * and registers `close_sessions`, which pool_close_all calls: the pool
 * never calls into a codec it does not know.
 * Promises: at most `keepalive` idle connections are kept (the most recently
 * used are reused first, so the rest can age out at the upstream); a waiter
 * is called back exactly once: with a slot, or NULL when the pool closes.
 *
 * Thread: the worker's thread.
 */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "net/conn.h"

struct h2_session;
struct metrics_gauge;
struct pool;
struct target;

/* One connection to an upstream target. */
struct upconn {
    struct conn conn;
    struct target *target;
    struct pool *pool;
    struct upconn *next; /* idle list links */
    struct upconn *prev;
    void *user;        /* the codec's stream using it; NULL while idle */
    unsigned requests; /* requests sent on it so far */
};

/* An exchange waiting for a free connection slot. */
struct pool_waiter {
    struct pool_waiter *next;
    struct pool_waiter *prev;
    bool queued;
    /* A slot opened (`ok`), or the pool closed (`!ok`). Called from the loop's callbacks. */
    void (*on_slot)(struct pool_waiter *w, bool ok);
};

struct pool {
    struct upconn *idle; /* most recently used first */
    unsigned num_idle;
    unsigned num_open; /* idle + busy + connecting */
    struct pool_waiter *wait_head;
    struct pool_waiter *wait_tail;
    struct h2_session *h2; /* HTTP/2 connections (http2_client.c), counted in num_open */
    /* Closes the sessions in h2; set by the codec that keeps them there. NULL: none. */
    void (*close_sessions)(struct pool *p);
    /* upstream_pool_idle/active{upstream,target} of this thread (ops/metrics); NULL: none. */
    struct metrics_gauge *gauge;
};

/* An empty pool whose counts show in /metrics under (upstream, target). */
void pool_init(struct pool *p, const char *upstream, const char *target);

/* Counts a connection opened (+1) or closed (-1) outside pool_new_conn/pool_close_conn (h2). */
void pool_count_open(struct pool *p, int delta);

/* Closes every idle connection and fails every waiter. Busy connections are
 * left to their exchanges, which close them when they end. HTTP/2 connections
 * are closed too (through close_sessions). */
void pool_close_all(struct pool *p);

/* Takes the most recently used idle connection, or NULL. */
struct upconn *pool_take_idle(struct pool *p);

/* True when another connection may be opened under `max_connections` (0 = no cap). */
bool pool_may_open(const struct pool *p, int max_connections);

/* Creates a connection object counted as open; the caller connects it. */
struct upconn *pool_new_conn(struct pool *p, struct target *t);

/*
 * Gives a connection back after a complete exchange. It is kept idle when
 * fewer than `keepalive` are idle, else closed.
 */
void pool_release(struct upconn *uc, int keepalive);

/* Closes a connection (busy or idle) and frees it; wakes a waiter. */
void pool_close_conn(struct upconn *uc);

/* Queues a waiter; pool_unwait removes it (safe if not queued). */
void pool_wait(struct pool *p, struct pool_waiter *w);
void pool_unwait(struct pool *p, struct pool_waiter *w);

#endif
