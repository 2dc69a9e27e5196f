/*
 * filter: the one interface every filter type implements (ARCHITECTURE
 * "Filters"), and the registry that lists them.
 *
 * A filter type is a const table of functions; NULL members are skipped by
 * the pipeline. create() runs at load time on the main thread: it validates
 * the options (reporting each problem through config_error_add with the
 * sub-path of the offending option and the fix) and precomputes everything,
 * so the request path never looks at JSON. Instances are immutable and shared
 * by all workers. Per-exchange state is `state_size` zeroed bytes from the
 * exchange's arena, passed to on_request and on_response.
 *
 * The verdict contract (STYLE rules 3 and 4):
 *   FILTER_CONTINUE  the pipeline goes on with the next filter;
 *   FILTER_RESPOND   the filter has set the response (exchange_respond_*):
 *                    the upstream is skipped, response filters still run;
 *   FILTER_PAUSE     the filter started an async operation; it will call
 *                    exchange_resume() exactly once later, and before pausing
 *                    it registered an arena cleanup that cancels the
 *                    operation if the client goes away first. If starting
 *                    the operation fails, it answers synchronously instead.
 */
#ifndef SLUICE_FILTER_H
#define SLUICE_FILTER_H

#include <stddef.h>

#include <jansson.h>

struct config_error;
struct exchange;

enum filter_verdict {
    FILTER_CONTINUE = 0,
    FILTER_RESPOND,
    FILTER_PAUSE,
};

struct filter_type {
    const char *name;  /* the "type" in the config, e.g. "rate_limit" */
    size_t state_size; /* per-exchange state, zeroed from the arena; 0 if none */
    void *(*create)(const json_t *options, struct config_error *err);
    void (*destroy)(void *instance);
    enum filter_verdict (*on_request)(void *instance, struct exchange *x, void *state);
    void (*on_response)(void *instance, struct exchange *x, void *state);
};

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
