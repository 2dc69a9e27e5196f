/*
 * test_cors: the `cors` filter (SPEC 4, SPEC 7 "CORS preflight") on
 * exchanges built by hand: preflight answers, simple requests, the Fetch
 * standard's credentials rules, Vary, and the options' errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/arena.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "core/filter.h"
#include "filter_test.h"
#include "test.h"

extern const struct filter_type filter_cors;

static struct config_error err;

static const void *create(const char *json)
{
    return filter_create_json(&filter_cors, json, "filters[2]", NULL, &err);
}

static bool has_error(const char *text)
{
    return config_error_has(&err, text);
}

struct run {
    struct exchange x;
    void *state;
    enum filter_verdict verdict;
};

/* Runs the request phase, then (as the pipeline does) the response phase on a 200 or the answer. */
static void run(struct run *r, const void *f, const char *method, const char *origin,
                const char *acrm, const char *acrh)
{
    memset(r, 0, sizeof(*r));
    struct exchange *x = &r->x;
    x->arena = arena_new(2048);
    header_list_init(&x->req_headers, x->arena, 8);
    header_list_init(&x->resp_headers, x->arena, 8);
    x->request_id = SLICE_LIT("req");
    x->method = slice_cstr(method);
    if (origin)
        header_set(&x->req_headers, SLICE_LIT("Origin"), slice_cstr(origin));
    if (acrm)
        header_set(&x->req_headers, SLICE_LIT("Access-Control-Request-Method"), slice_cstr(acrm));
    if (acrh)
        header_set(&x->req_headers, SLICE_LIT("Access-Control-Request-Headers"), slice_cstr(acrh));
    r->state = arena_calloc(x->arena, filter_cors.state_size);
    r->verdict = filter_cors.on_request(f, NULL, x, r->state);
    if (r->verdict == FILTER_CONTINUE) {
        x->status = 200; /* the upstream's answer */
        header_set(&x->resp_headers, SLICE_LIT("Access-Control-Allow-Origin"), SLICE_LIT("*"));
    }
    filter_cors.on_response(f, NULL, x, r->state);
}

static const char *field(struct run *r, const char *name)
{
    static char buf[256];
    const struct slice *v = header_get(&r->x.resp_headers, slice_cstr(name));
    if (!v)
        return NULL;
    snprintf(buf, sizeof(buf), "%.*s", (int)v->len, v->base);
    return buf;
}

static void done(struct run *r)
{
    arena_free(r->x.arena);
}

static void test_preflight(void)
{
    const void *f = create("{\"origins\": [\"https://App.example\"], \"methods\": [\"PUT\"],"
                           " \"headers\": [\"X-Token\"], \"max_age_s\": 60}");
    ok(f != NULL, "created");
    if (!f)
        return;
    struct run r;
    run(&r, f, "OPTIONS", "https://app.example", "PUT", "x-token");
    is_int(r.verdict, FILTER_RESPOND);
    is_int(r.x.status, 204);
    is_str(field(&r, "Access-Control-Allow-Origin"), "https://app.example");
    is_str(field(&r, "Access-Control-Allow-Methods"), "PUT");
    is_str(field(&r, "Access-Control-Allow-Headers"), "x-token");
    is_str(field(&r, "Access-Control-Max-Age"), "60");
    is_str(field(&r, "Vary"), "Origin");
    ok(field(&r, "Content-Length") == NULL, "no Content-Length on 204");
    ok(field(&r, "Access-Control-Allow-Credentials") == NULL, "no credentials");
    done(&r);

    run(&r, f, "OPTIONS", "https://other.example", "PUT", NULL);
    is_int(r.x.status, 403);
    ok(field(&r, "Access-Control-Allow-Origin") == NULL, "no CORS fields on a refusal");
    is_str(field(&r, "Vary"), "Origin");
    done(&r);
    run(&r, f, "OPTIONS", "https://app.example", "DELETE", NULL);
    is_int(r.x.status, 403);
    done(&r);
    run(&r, f, "OPTIONS", "https://app.example", "put", NULL);
    is_int(r.x.status, 403); /* methods are case-sensitive */
    done(&r);
    run(&r, f, "OPTIONS", "https://app.example", "PUT", "x-token, x-secret");
    is_int(r.x.status, 403);
    done(&r);

    /* OPTIONS without Access-Control-Request-Method is not a preflight. */
    run(&r, f, "OPTIONS", "https://app.example", NULL, NULL);
    is_int(r.verdict, FILTER_CONTINUE);
    is_str(field(&r, "Access-Control-Allow-Origin"), "https://app.example");
    done(&r);
    filter_cors.destroy(f);
}

static void test_simple(void)
{
    const void *f = create("{\"origins\": [\"http://a.example:8080\", \"https://b.example\"],"
                           " \"expose_headers\": [\"X-Total\"], \"credentials\": true}");
    struct run r;
    run(&r, f, "GET", "http://a.example:8080", NULL, NULL);
    is_int(r.verdict, FILTER_CONTINUE);
    is_str(field(&r, "Access-Control-Allow-Origin"), "http://a.example:8080");
    is_str(field(&r, "Access-Control-Allow-Credentials"), "true");
    is_str(field(&r, "Access-Control-Expose-Headers"), "x-total");
    is_str(field(&r, "Vary"), "Origin");
    is_int(header_count(&r.x.resp_headers, SLICE_LIT("Access-Control-Allow-Origin")), 1);
    done(&r);

    /* A disallowed origin passes, and the upstream's own CORS field is removed. */
    run(&r, f, "GET", "http://a.example", NULL, NULL);
    is_int(r.verdict, FILTER_CONTINUE);
    ok(field(&r, "Access-Control-Allow-Origin") == NULL, "removed");
    ok(field(&r, "Access-Control-Allow-Credentials") == NULL, "no credentials");
    is_str(field(&r, "Vary"), "Origin");
    done(&r);
    run(&r, f, "POST", NULL, NULL, NULL);
    ok(field(&r, "Access-Control-Allow-Origin") == NULL, "no Origin, no CORS");
    done(&r);
    filter_cors.destroy(f);
}

static void test_wildcards(void)
{
    const void *f = create("{\"origins\": [\"*\"], \"methods\": [\"*\"], \"headers\": [\"*\"],"
                           " \"expose_headers\": [\"*\"]}");
    struct run r;
    run(&r, f, "GET", "https://x.example", NULL, NULL);
    is_str(field(&r, "Access-Control-Allow-Origin"), "*");
    is_str(field(&r, "Access-Control-Expose-Headers"), "*");
    ok(field(&r, "Vary") == NULL, "no Vary when the answer does not depend on Origin");
    done(&r);
    run(&r, f, "OPTIONS", "https://x.example", "PATCH", "x-a");
    is_int(r.x.status, 204);
    is_str(field(&r, "Access-Control-Allow-Methods"), "*");
    is_str(field(&r, "Access-Control-Allow-Headers"), "*");
    done(&r);
    filter_cors.destroy(f);

    /* With credentials, never "*": echo (Fetch standard). */
    f = create("{\"origins\": [\"*\"], \"methods\": [\"*\"], \"headers\": [\"*\"],"
               " \"credentials\": true, \"expose_headers\": [\"*\", \"X-A\"]}");
    run(&r, f, "GET", "https://x.example", NULL, NULL);
    is_str(field(&r, "Access-Control-Allow-Origin"), "https://x.example");
    is_str(field(&r, "Vary"), "Origin");
    is_str(field(&r, "Access-Control-Expose-Headers"), "*, x-a");
    done(&r);
    run(&r, f, "OPTIONS", "https://x.example", "PATCH", "x-a, x-b");
    is_str(field(&r, "Access-Control-Allow-Origin"), "https://x.example");
    is_str(field(&r, "Access-Control-Allow-Methods"), "PATCH");
    is_str(field(&r, "Access-Control-Allow-Headers"), "x-a, x-b");
    is_str(field(&r, "Access-Control-Allow-Credentials"), "true");
    done(&r);
    filter_cors.destroy(f);
}

static void test_errors(void)
{
    ok(create("{\"origins\": [\"https://a.example/\", \"null\", \"ftp://x\", 3],"
              " \"methods\": \"GET\", \"headers\": [\"a b\"], \"credentials\": \"yes\","
              " \"max_age_s\": -5, \"origin\": 1}") == NULL,
       "rejected");
    ok(has_error("sluice.json: filters[2].origins[0]: \"https://a.example/\" is not an origin"),
       "path");
    ok(has_error("filters[2].origins[1]: \"null\" is not an origin"), "null");
    ok(has_error("filters[2].origins[2]: \"ftp://x\" is not an origin"), "scheme");
    ok(has_error("filters[2].origins[3]: must be a string"), "type");
    ok(has_error("filters[2].methods: must be an array of strings"), "methods");
    ok(has_error("filters[2].headers[0]: \"a b\" is not a valid header name"), "header");
    ok(has_error("filters[2].credentials: must be true or false"), "credentials");
    ok(has_error("filters[2].max_age_s: must be"), "max_age_s");
    ok(has_error("origin"), "unknown key");
    ok(create("{}") == NULL && has_error("filters[2].origins: is required"), "origins required");
    ok(create("{\"origins\": []}") == NULL && has_error("origins: is empty"), "empty origins");
}

int main(void)
{
    test_preflight();
    test_simple();
    test_wildcards();
    test_errors();
    config_error_clear(&err);
    return test_done();
}
