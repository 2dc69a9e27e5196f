/*
 * filter: the one interface every filter type implements (ARCHITECTURE
 * "Filters"), the per-worker contexts of a snapshot's filters, and the
 * registry that lists the types. The guide is docs/internals/filters.md.
 *
 * A filter type is a const table of functions written with designated
 * initialisers; NULL members are skipped by the pipeline. Four lifetimes:
 *   instance  create() runs at load time on the main thread: it validates
 *             the options (each problem through config_error_add with the
 *             sub-path of the offending option and the fix) and precomputes
 *             everything, so the request path never looks at JSON. The
 *             instance is immutable (const) and shared by all workers;
 *             destroy() frees it when the snapshot goes, on whichever
 *             thread drops the snapshot's last reference.
 *   context   context_new() runs when a worker starts using a snapshot (its
 *             view is built), context_free() when the worker drops that
 *             view. The place for what lives on a loop: a Redis link, a JWKS
 *             cache. Only that worker's loop touches it. The first view is
 *             built on the main thread before the worker's loop starts, and
 *             the last views are freed there after it ended; every other
 *             call is on the worker's thread. Never both at once, so a
 *             context may attach events to the worker's event_base in
 *             context_new.
 *   state     `state_size` zeroed bytes from the exchange's arena, private to
 *             one exchange, passed to every hook of that exchange.
 *   operation a paused filter's pending work (see FILTER_PAUSE).
 *
 * The verdict contract (STYLE rules 3 and 4):
 *   FILTER_CONTINUE  the pipeline goes on with the next filter;
 *   FILTER_RESPOND   the filter has set the response (exchange_respond_*):
 *                    the upstream is skipped, response filters still run;
 *   FILTER_PAUSE     the filter started an async operation; it will call
 *                    exchange_resume() exactly once later, and before pausing
 *                    it registered an arena cleanup that cancels the
 *                    operation if the exchange ends first (client gone, or
 *                    the pause deadline answered). If starting the operation
 *                    fails, it answers synchronously instead.
 * exchange_resume() may be called before on_request has returned (the
 * callback fired at once): the pipeline then continues from the loop, never
 * re-entrantly. Every pause has a deadline (exchange.h
 * exchange_pause_timeout_ms): a filter that never resumes ends in 504
 * gateway_timeout, and the arena cleanup cancels its operation.
 *
 * The body hook sees the request body as the codec decodes it (Content-Length
 * and chunked alike), once the request phase of every filter has continued
 * and before any of it is handed to the upstream. It returns CONTINUE or
 * RESPOND (e.g. 413); on RESPOND no more body goes upstream. PAUSE is not
 * allowed there (the pipeline answers 500).
 *
 * Thread: create on the loading thread, destroy where the snapshot dies;
 * everything else on the worker's thread.
 */
#ifndef SLUICE_FILTER_H
#define SLUICE_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct config_error;
struct exchange;
struct filter_contexts;
struct route_config;
struct snapshot;
struct worker;

enum filter_verdict {
    FILTER_CONTINUE = 0,
    FILTER_RESPOND,
    FILTER_PAUSE,
};

struct filter_type {
    const char *name;  /* the "type" in the config, e.g. "rate_limit" */
    size_t state_size; /* per-exchange state, zeroed from the arena; 0 if none */

    /*
     * Load time, on the loading thread. create returns NULL after reporting
     * errors; destroy frees what create returned (casting the const away).
     */
    const void *(*create)(const json_t *options, struct config_error *err);
    void (*destroy)(const void *instance);

    /*
     * Once per worker and snapshot, never concurrently with that worker's
     * loop (see "context" above). context_new may return
     * NULL (nothing needed, or out of resources): the hooks then get NULL
     * and must answer for themselves (e.g. 503). context_free gets what
     * context_new returned, NULL included.
     */
    void *(*context_new)(const void *instance, struct worker *w);
    void (*context_free)(const void *instance, void *context);

    /*
     * Load time, after the whole file is read: the option (a sub-path such
     * as ".store") by which this instance needs the top-level `redis`
     * section, or NULL when it does not. The loader reports a missing
     * section at that path, and connects each worker to Redis only when
     * some instance needs it. Absent = never needs it.
     */
    const char *(*needs_redis)(const void *instance);

    /* The request head, in pipeline order. */
    enum filter_verdict (*on_request)(const void *instance, void *context, struct exchange *x,
                                      void *state);
    /*
     * `fresh` more bytes of decoded request body arrived: they are the last
     * `fresh` bytes of x->req_body; exchange_body_seen(x) counts all so far and
     * x->req_body_done says whether this is the end (then `fresh` may be 0).
     * The hook must not drain or add to x->req_body.
     */
    enum filter_verdict (*on_request_body)(const void *instance, void *context, struct exchange *x,
                                           void *state, size_t fresh);
    /* The response head, in reverse order, for filters whose on_request ran. */
    void (*on_response)(const void *instance, void *context, struct exchange *x, void *state);
};

/*
 * Builds the contexts of every filter of `s` (global and every route's)
 * whose type has context_new, on worker `w`'s thread. Returns NULL when no
 * type needs one, so the request path pays one NULL test. The worker calls
 * it once when it builds its view of a snapshot (worker_snapshot) and keeps
 * the result there; aborts when out of memory, like the other per-view
 * allocations.
 */
struct filter_contexts *filter_contexts_new(const struct snapshot *s, struct worker *w);

/* Frees what filter_contexts_new built for `s` (context_free of each, last first). NULL-safe. */
void filter_contexts_free(struct filter_contexts *fc, const struct snapshot *s);

/*
 * The context of pipeline filter `i` of an exchange on snapshot `s`: the
 * global filters first, then the filters of `route` (NULL: globals only).
 * NULL when the type has none or `fc` is NULL.
 */
void *filter_context(const struct filter_contexts *fc, const struct snapshot *s,
                     const struct route_config *route, size_t i);

/*
 * The filter type named `name`, or NULL. *planned is set true when the name
 * is a filter of SPEC 4 that this version does not provide yet, so the
 * config loader can say "not available in this version" rather than
 * "unknown filter type".
 */
const struct filter_type *filter_registry_find(const char *name, int *planned);

/* The names of every available type, comma-separated, for error messages. */
const char *filter_registry_names(void);

#endif
