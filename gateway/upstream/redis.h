/*
 * redis: a worker's client of the Redis server of the top-level `redis`
 * section (SPEC 2.1): one connection per worker view of a snapshot, made
 * with hiredis and its libevent adapter on the worker's loop, never
 * blocking it.
 *
 * Owns: the connection (hiredis async context), its timers, a name lookup
 * in flight (evdns), and every operation still in flight on it.
 * Promises:
 *   - connect is non-blocking; a name is resolved with the worker's evdns;
 *     AUTH (with `username` when set) and SELECT are sent first on every
 *     new connection; a script is loaded (SCRIPT LOAD) once per connection,
 *     before its first EVALSHA, and a NOSCRIPT reply (the server's script
 *     cache was flushed) sends that call once more as EVAL;
 *   - a connection that fails, closes, or leaves a command unanswered for
 *     `timeout_ms` is dropped, and reconnected after a back-off that starts
 *     at REDIS_BACKOFF_MIN_MS and doubles up to REDIS_BACKOFF_MAX_MS;
 *   - while the connection is down (after a failure, until the reconnect's
 *     handshake succeeded) redis_eval() fails at once, so a request never
 *     waits for a server known to be away; commands issued during the very
 *     first connect (start-up, reload) wait for it, bounded by timeout_ms;
 *   - every operation that redis_eval() started calls back exactly once,
 *     unless cancelled first, and always from the loop (never inside
 *     redis_eval() nor inside a hiredis callback), so the callback may free
 *     the caller's objects, the client included.
 *
 * Thread: a client belongs to one worker's event_base; created and freed on
 * the thread that runs (or will run) that loop.
 */
#ifndef SLUICE_REDIS_H
#define SLUICE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evdns_base;
struct redis_config;
struct redis_client;
struct redis_op;

#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 2000

/* A Lua script run with EVALSHA; `sha` is filled by redis_script_init. */
struct redis_script {
    const char *source;
    char sha[41];
};

/* Computes s->sha (SHA-1 of the source, hex). Call once, before any worker uses it. */
void redis_script_init(struct redis_script *s);

enum redis_status {
    REDIS_CALL_OK = 0,  /* ints[] hold the reply (an integer, or an array of integers) */
    REDIS_CALL_DOWN,    /* no usable connection: answered at once */
    REDIS_CALL_TIMEOUT, /* no reply within timeout_ms */
    REDIS_CALL_ERROR,   /* an error reply, or a reply of an unexpected shape */
    REDIS_CALL_LOST     /* the connection closed while the command was in flight */
};

#define REDIS_MAX_INTS 4

struct redis_result {
    enum redis_status status;
    long long ints[REDIS_MAX_INTS];
    size_t num_ints;
    int64_t latency_us; /* from redis_eval to the reply */
};

typedef void (*redis_done_fn)(void *arg, const struct redis_result *r);

/*
 * Creates the client for `cfg` on `base` and starts connecting. `dns` may be
 * NULL (a name then fails to resolve). `cfg` must outlive the client.
 */
struct redis_client *redis_client_new(const struct redis_config *cfg, struct event_base *base,
                                      struct evdns_base *dns);

/*
 * Closes the connection and frees the client. Operations not yet delivered
 * must have been cancelled. NULL ok; may be called from a done callback.
 */
void redis_client_free(struct redis_client *c);

/* True when the connection's handshake has completed (commands are answered). */
bool redis_client_ready(const struct redis_client *c);

/*
 * Runs `script` with the given keys and arguments (binary-safe, copied).
 * Returns the operation, whose callback `fn(arg, result)` runs later from
 * the loop; or NULL with *status set when it cannot be sent now (REDIS_CALL_DOWN),
 * and then `fn` is never called.
 */
struct redis_op *redis_eval(struct redis_client *c, const struct redis_script *script,
                            size_t num_keys, size_t argc, const char *const *argv,
                            const size_t *argvlen, redis_done_fn fn, void *arg,
                            enum redis_status *status);

/* Cancels an operation whose callback has not run yet: it never will. */
void redis_op_cancel(struct redis_op *op);

#endif
