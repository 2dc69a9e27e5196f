/*
 * router: compiles the route table of a snapshot and matches requests to
 * routes (SPEC 2.4), plus the path normalisation every request goes through
 * (SPEC 7 "path normalisation").
 *
 * Owns: the struct router index inside a snapshot, and the compiled PCRE2
 * patterns of routes (route.regex, match_value.regex), all freed by
 * router_free(). Promises: router_match() never allocates except match data
 * from the arena it is given, and finds the first route in table order whose
 * every condition holds.
 *
 * Thread: router_compile on the loading thread; router_match from any worker
 * (the compiled router is immutable; PCRE2 match data is per call).
 */
#ifndef SLUICE_ROUTER_H
#define SLUICE_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "base/header.h"
#include "base/slice.h"

struct arena;
struct config_error;
struct route_config;
struct snapshot;

/* What the router looks at. `host` is the request's authority with or without a port. */
struct router_request {
    struct slice method;
    struct slice host;
    struct slice path;  /* normalised (router_normalize_path) */
    struct slice query; /* without the '?'; empty when none */
    const struct header_list *headers;
};

#define ROUTER_MAX_CAPTURES 10

struct route_match {
    const struct route_config *route;
    struct slice captures[ROUTER_MAX_CAPTURES]; /* $0..$9 of a regex path match; slices of path */
    size_t num_captures;
};

/*
 * Compiles every route of `s` (PCRE2 with JIT for match.regex and regex
 * header/query values) and builds s->router. Errors go to `err` with the
 * route's JSON path, e.g. routes[2].match.regex. Returns 0, or -1 on error.
 */
int router_compile(struct snapshot *s, struct config_error *err);

/* Frees s->router and the compiled patterns. Safe on a partly compiled snapshot. */
void router_free(struct snapshot *s);

/* Finds the first matching route. Returns false when none matches (404). */
bool router_match(const struct snapshot *s, struct arena *a, const struct router_request *req,
                  struct route_match *m);

/*
 * Normalises the path part of an origin-form target (everything before '?'):
 * percent-encoded unreserved characters decoded (%7E -> ~, %2e -> .), other
 * escapes kept (hex digits upper-cased), "." and ".." segments resolved,
 * "//" kept, "%2F" kept encoded. Returns 0 and sets *path (arena memory, or a
 * slice of raw when nothing changes), or -1 when the path is invalid (a bad
 * escape, a ".." above the root, not starting with '/'): the caller answers 400.
 */
int router_normalize_path(struct arena *a, struct slice raw, struct slice *path);

/* Expands $1..$9 in a redirect location with the match's captures (arena memory). */
struct slice router_expand_location(struct arena *a, const char *location,
                                    const struct route_match *m);

/* True when `host` (port ignored, any case) matches a route host pattern (lower-case). */
bool router_host_matches(const char *pattern, struct slice host);

#endif
