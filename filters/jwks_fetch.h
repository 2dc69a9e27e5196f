/*
 * jwks_fetch: the `jwt` filter's JWKS client (SPEC 7 "jwt cache"): one GET
 * of a `jwks_url` at a time, on a worker's loop, through the gateway's own
 * upstream layer (upstream_rt for DNS and the target, the HTTP/1.1 codec
 * and its connection pool), so a fetch never blocks the worker.
 *
 * Owns: a private upstream configuration built from the URL at load time
 * (struct jwks_source, in the filter instance, shared read-only), and per
 * worker a struct jwks_fetcher: the upstream_rt of that source, the
 * request's arena, the response body and two timers (a deadline, and a
 * short retry while the name has not resolved yet).
 *
 * Promises: jwks_fetcher_start() never calls back before it returns; the
 * callback runs from the loop exactly once per started fetch, with the
 * body of a 200 response, or with NULL on any failure (status, transport,
 * timeout, a body over JWKS_MAX_BODY). jwks_fetcher_free() cancels a fetch
 * in flight without calling back.
 *
 * Thread: a source is built on the loading thread; a fetcher lives on one
 * worker's thread.
 */
#ifndef SLUICE_JWKS_FETCH_H
#define SLUICE_JWKS_FETCH_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/config.h"

struct event_base;
struct evdns_base;
struct jwks_fetcher;

/* The largest JWKS document accepted. */
#define JWKS_MAX_BODY (1024 * 1024)
/* How long one fetch may take, DNS and connection included. */
#define JWKS_FETCH_TIMEOUT_MS 10000

/* Where the keys come from: parsed once from the URL. */
struct jwks_source {
    char *url;
    char *host_header; /* the URL's authority, port kept: the Host field */
    char *path;        /* origin-form target, "/" at least, query kept */
    struct target_config target;
    struct upstream_config upstream; /* one target, HTTP/1.1, no TLS, no health checks */
};

/*
 * Parses an http:// URL into `src`. Returns 0, or -1 with a sentence in
 * `why` (https and user info are refused: this version fetches in clear
 * text only).
 */
int jwks_source_init(struct jwks_source *src, const char *url, char *why, size_t why_len);

/* Frees what jwks_source_init allocated. */
void jwks_source_clear(struct jwks_source *src);

/* Called once per fetch: `body` (not NUL-terminated) on success, NULL on failure. */
typedef void (*jwks_fetched_fn)(void *owner, const char *body, size_t len);

/* A fetcher of `src` on a worker's loop. NULL when out of memory. */
struct jwks_fetcher *jwks_fetcher_new(const struct jwks_source *src, struct event_base *base,
                                      struct evdns_base *dns, jwks_fetched_fn fn, void *owner);

/* Starts a fetch unless one is in flight; returns true when one is in flight now. */
bool jwks_fetcher_start(struct jwks_fetcher *f);

/* True while a fetch is in flight. */
bool jwks_fetcher_busy(const struct jwks_fetcher *f);

/* Cancels a fetch in flight (no callback) and frees everything. NULL ok. */
void jwks_fetcher_free(struct jwks_fetcher *f);

#endif
