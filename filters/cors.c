/*
 * cors: the `cors` filter (SPEC 4, SPEC 7 "CORS preflight"), following the
 * Fetch standard's CORS protocol.
 *
 * Preflight (OPTIONS with Origin and Access-Control-Request-Method; the
 * exchange routes it as if its method were the requested one): answered by
 * the gateway, never forwarded. An allowed origin asking for an allowed
 * method and allowed headers gets 204 with Access-Control-Allow-Origin,
 * -Methods, -Headers, -Credentials and -Max-Age; anything else gets 403
 * forbidden.
 *
 * Other requests go on to the upstream. On the way back, a response to an
 * allowed Origin gets Access-Control-Allow-Origin (and -Credentials,
 * -Expose-Headers); a response to a disallowed or absent Origin gets no
 * CORS field, the upstream's own removed, so the gateway alone decides.
 * Every response gets `Vary: Origin` when the answer depends on the Origin
 * (origins is not "*", or credentials echo it).
 *
 * Credentials (Fetch standard, "CORS check"): with `credentials: true` the
 * wildcard "*" is never sent in Access-Control-Allow-Origin, -Methods or
 * -Headers, since browsers read it literally there; the request's origin,
 * method and headers are echoed instead. `origins: ["*"]` with credentials
 * is accepted and means "any origin, echoed".
 *
 * Everything is prepared in create(): the origin list lower-cased, the
 * header values joined. The request path compares and sets slices.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/arena.h"
#include "base/header.h"
#include "base/slice.h"
#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"

struct name_list {
    char **items; /* malloc'd, lower-case for origins and header names */
    size_t count;
    bool any;     /* "*" was listed */
    char *joined; /* "A, B, C" for a response field; NULL when empty */
    size_t joined_len;
};

struct cors_filter {
    struct name_list origins;
    struct name_list methods;
    struct name_list headers;
    bool headers_given; /* absent: the requested headers are echoed */
    struct name_list expose;
    bool credentials;
    char max_age[24]; /* "" when not given */
    size_t max_age_len;
    bool vary; /* the answer depends on Origin */
};

/* What the request phase saw, for the response phase. */
struct cors_state {
    bool preflight;      /* answered in the request phase */
    bool allowed;        /* Origin present and allowed */
    struct slice origin; /* as the client sent it */
};

static void free_list(struct name_list *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
    free(l->joined);
}

static void cors_destroy(const void *instance)
{
    struct cors_filter *f = (struct cors_filter *)instance;
    if (!f)
        return;
    free_list(&f->origins);
    free_list(&f->methods);
    free_list(&f->headers);
    free_list(&f->expose);
    free(f);
}

enum list_kind { LIST_ORIGINS, LIST_METHODS, LIST_HEADERS };

/*
 * An origin as the Fetch standard serialises it: scheme "://" host [":"
 * port], no path, no trailing slash. "null" is refused: it is what sandboxed
 * documents and file: pages send, and trusting it trusts all of them.
 */
static bool valid_origin(const char *o)
{
    const char *rest;
    if (strncasecmp(o, "http://", 7) == 0)
        rest = o + 7;
    else if (strncasecmp(o, "https://", 8) == 0)
        rest = o + 8;
    else
        return false;
    if (!*rest)
        return false;
    for (; *rest; rest++)
        if (!((*rest >= 'a' && *rest <= 'z') || (*rest >= 'A' && *rest <= 'Z') ||
              (*rest >= '0' && *rest <= '9') || strchr("-.:[]", *rest)))
            return false;
    return true;
}

static int parse_list(struct name_list *l, const json_t *options, const char *key,
                      enum list_kind kind, struct config_error *err)
{
    char sub[64];
    const json_t *arr = json_object_get(options, key);
    if (!arr)
        return 0;
    snprintf(sub, sizeof(sub), ".%s", key);
    if (!json_is_array(arr)) {
        config_error_add(err, sub, "must be an array of strings, e.g. [%s]",
                         kind == LIST_ORIGINS   ? "\"https://app.example.com\""
                         : kind == LIST_METHODS ? "\"GET\", \"POST\""
                                                : "\"Content-Type\"");
        return -1;
    }
    l->items = calloc(json_array_size(arr) + 1, sizeof(*l->items));
    if (!l->items) {
        config_error_add(err, sub, "out of memory");
        return -1;
    }
    int rc = 0;
    size_t joined = 0, i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        snprintf(sub, sizeof(sub), ".%s[%zu]", key, i);
        const char *s = json_string_value(v);
        if (!s) {
            config_error_add(err, sub, "must be a string");
            rc = -1;
            continue;
        }
        size_t len = strlen(s);
        if (strcmp(s, "*") == 0) {
            l->any = true;
        } else if (kind == LIST_ORIGINS && !valid_origin(s)) {
            config_error_add(err, sub,
                             "\"%s\" is not an origin: write scheme://host[:port] without a "
                             "path, e.g. \"https://app.example.com\", or \"*\"",
                             s);
            rc = -1;
            continue;
        } else if (kind != LIST_ORIGINS && !config_is_token(s, len)) {
            config_error_add(err, sub, "\"%s\" is not a valid %s name", s,
                             kind == LIST_METHODS ? "method" : "header");
            rc = -1;
            continue;
        }
        char *c = strdup(s);
        if (!c) {
            config_error_add(err, sub, "out of memory");
            return -1;
        }
        /* Origins and header names compare case-insensitively; methods are case-sensitive. */
        if (kind != LIST_METHODS)
            for (char *p = c; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        l->items[l->count++] = c;
        joined += len + 2;
    }
    if (rc < 0 || l->count == 0)
        return rc;
    l->joined = malloc(joined + 1);
    if (!l->joined) {
        config_error_add(err, sub, "out of memory");
        return -1;
    }
    size_t n = 0;
    for (size_t k = 0; k < l->count; k++) {
        if (k) {
            memcpy(l->joined + n, ", ", 2);
            n += 2;
        }
        size_t len = strlen(l->items[k]);
        memcpy(l->joined + n, l->items[k], len);
        n += len;
    }
    l->joined[n] = '\0';
    l->joined_len = n;
    return 0;
}

/* Fills a list from a constant default. */
static int default_list(struct name_list *l, const char *const *names, const char *joined)
{
    size_t n = 0;
    while (names[n])
        n++;
    l->items = calloc(n + 1, sizeof(*l->items));
    l->joined = strdup(joined);
    if (!l->items || !l->joined)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!(l->items[l->count++] = strdup(names[i])))
            return -1;
    l->joined_len = strlen(joined);
    return 0;
}

static const void *cors_create(const json_t *options, struct config_error *err)
{
    static const char *const keys[] = {"origins",     "methods",   "headers", "expose_headers",
                                       "credentials", "max_age_s", NULL};
    static const char *const simple_methods[] = {"GET", "HEAD", "POST", NULL};
    struct cors_filter *f = calloc(1, sizeof(*f));
    if (!f) {
        config_error_add(err, "", "out of memory");
        return NULL;
    }
    int rc = config_check_keys(err, options, keys) ? -1 : 0;
    if (!json_object_get(options, "origins")) {
        config_error_add(err, ".origins",
                         "is required: the allowed origins, e.g. [\"https://app.example.com\"] "
                         "or [\"*\"]");
        rc = -1;
    } else if (parse_list(&f->origins, options, "origins", LIST_ORIGINS, err) < 0) {
        rc = -1;
    } else if (f->origins.count == 0) {
        config_error_add(err, ".origins", "is empty: list at least one origin, or \"*\"");
        rc = -1;
    }
    if (json_object_get(options, "methods")) {
        if (parse_list(&f->methods, options, "methods", LIST_METHODS, err) < 0)
            rc = -1;
    } else if (default_list(&f->methods, simple_methods, "GET, HEAD, POST") < 0) {
        config_error_add(err, "", "out of memory");
        rc = -1;
    }
    f->headers_given = json_object_get(options, "headers") != NULL;
    if (parse_list(&f->headers, options, "headers", LIST_HEADERS, err) < 0)
        rc = -1;
    if (parse_list(&f->expose, options, "expose_headers", LIST_HEADERS, err) < 0)
        rc = -1;
    if (!config_get_bool(err, options, "credentials", &f->credentials))
        rc = -1;
    long long max_age = -1;
    if (!config_get_llong(err, options, "max_age_s", 0, 86400 * 365, &max_age))
        rc = -1;
    if (rc < 0) {
        cors_destroy(f);
        return NULL;
    }
    if (max_age >= 0)
        f->max_age_len = (size_t)snprintf(f->max_age, sizeof(f->max_age), "%lld", max_age);
    f->vary = !f->origins.any || f->credentials;
    return f;
}

static bool list_has(const struct name_list *l, struct slice s, bool nocase)
{
    for (size_t i = 0; i < l->count; i++) {
        size_t len = strlen(l->items[i]);
        if (len == s.len && (nocase ? strncasecmp(l->items[i], s.base, len)
                                    : memcmp(l->items[i], s.base, len)) == 0)
            return true;
    }
    return false;
}

static bool origin_allowed(const struct cors_filter *f, struct slice origin)
{
    return f->origins.any || list_has(&f->origins, origin, true);
}

/* Every requested header (a comma-separated list) is allowed. */
static bool headers_allowed(const struct cors_filter *f, const struct slice *requested)
{
    if (!requested || !f->headers_given || f->headers.any)
        return true;
    struct slice v = *requested, name;
    while (header_next_element(&v, &name))
        if (name.len && !list_has(&f->headers, name, true))
            return false;
    return true;
}

static void add_vary(const struct cors_filter *f, struct exchange *x)
{
    if (f->vary && !header_has_token(&x->resp_headers, SLICE_LIT("Vary"), SLICE_LIT("Origin")))
        header_add(&x->resp_headers, SLICE_LIT("Vary"), SLICE_LIT("Origin"));
}

/* Access-Control-Allow-Origin (and -Credentials) for an allowed origin. */
static void allow_origin(const struct cors_filter *f, struct exchange *x, struct slice origin)
{
    bool echo = !f->origins.any || f->credentials;
    header_set(&x->resp_headers, SLICE_LIT("Access-Control-Allow-Origin"),
               echo ? origin : SLICE_LIT("*"));
    if (f->credentials)
        header_set(&x->resp_headers, SLICE_LIT("Access-Control-Allow-Credentials"),
                   SLICE_LIT("true"));
}

static enum filter_verdict preflight(const struct cors_filter *f, struct exchange *x,
                                     struct cors_state *st, struct slice method)
{
    const struct slice *req_headers =
        header_get(&x->req_headers, SLICE_LIT("Access-Control-Request-Headers"));
    st->preflight = true;
    const char *refused = NULL;
    if (!st->allowed)
        refused = "the origin is not allowed";
    else if (!f->methods.any && !list_has(&f->methods, method, false))
        refused = "the method is not allowed for cross-origin requests";
    else if (!headers_allowed(f, req_headers))
        refused = "a requested header is not allowed for cross-origin requests";
    if (refused) {
        exchange_respond_error(x, 403, refused);
        add_vary(f, x);
        return FILTER_RESPOND;
    }
    exchange_respond(x, 204, slice_make("", 0), slice_make("", 0));
    header_remove(&x->resp_headers, SLICE_LIT("Content-Length")); /* RFC 9110 8.6: not on 204 */
    x->gateway_response = false;                                  /* a CORS answer, not an error */
    allow_origin(f, x, st->origin);
    /* "*" is literal for a credentialed request (Fetch): echo what was asked instead. */
    struct slice methods = slice_make(f->methods.joined, f->methods.joined_len);
    if (f->methods.any)
        methods = f->credentials ? method : SLICE_LIT("*");
    header_set(&x->resp_headers, SLICE_LIT("Access-Control-Allow-Methods"), methods);
    struct slice allow_headers = slice_make("", 0);
    if (!f->headers_given || (f->headers.any && f->credentials))
        allow_headers = req_headers ? *req_headers : slice_make("", 0);
    else if (f->headers.any)
        allow_headers = SLICE_LIT("*");
    else
        allow_headers = slice_make(f->headers.joined, f->headers.joined_len);
    if (allow_headers.len)
        header_set(&x->resp_headers, SLICE_LIT("Access-Control-Allow-Headers"), allow_headers);
    if (f->max_age_len)
        header_set(&x->resp_headers, SLICE_LIT("Access-Control-Max-Age"),
                   slice_make(f->max_age, f->max_age_len));
    add_vary(f, x);
    return FILTER_RESPOND;
}

static enum filter_verdict cors_on_request(const void *instance, void *context, struct exchange *x,
                                           void *state)
{
    const struct cors_filter *f = instance;
    struct cors_state *st = state;
    (void)context;
    const struct slice *origin = header_get(&x->req_headers, SLICE_LIT("Origin"));
    if (origin) {
        st->origin = *origin;
        st->allowed = origin_allowed(f, *origin);
    }
    if (!origin || !slice_eq(x->method, SLICE_LIT("OPTIONS")))
        return FILTER_CONTINUE;
    const struct slice *method =
        header_get(&x->req_headers, SLICE_LIT("Access-Control-Request-Method"));
    if (!method || method->len == 0)
        return FILTER_CONTINUE; /* a plain OPTIONS request, not a preflight */
    return preflight(f, x, st, *method);
}

static void cors_on_response(const void *instance, void *context, struct exchange *x, void *state)
{
    const struct cors_filter *f = instance;
    const struct cors_state *st = state;
    (void)context;
    if (st->preflight)
        return; /* answered in full by the request phase */
    if (!st->allowed) {
        /* Only the gateway grants cross-origin access on this route. */
        header_remove(&x->resp_headers, SLICE_LIT("Access-Control-Allow-Origin"));
        header_remove(&x->resp_headers, SLICE_LIT("Access-Control-Allow-Credentials"));
        header_remove(&x->resp_headers, SLICE_LIT("Access-Control-Expose-Headers"));
        add_vary(f, x);
        return;
    }
    allow_origin(f, x, st->origin);
    /* With credentials "*" is only a header named "*" to the browser: the names still count. */
    if (f->expose.any && !f->credentials)
        header_set(&x->resp_headers, SLICE_LIT("Access-Control-Expose-Headers"), SLICE_LIT("*"));
    else if (f->expose.count)
        header_set(&x->resp_headers, SLICE_LIT("Access-Control-Expose-Headers"),
                   slice_make(f->expose.joined, f->expose.joined_len));
    add_vary(f, x);
}

const struct filter_type filter_cors = {
    .name = "cors",
    .state_size = sizeof(struct cors_state),
    .create = cors_create,
    .destroy = cors_destroy,
    .on_request = cors_on_request,
    .on_response = cors_on_response,
};
