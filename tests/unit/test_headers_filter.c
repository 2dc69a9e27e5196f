/*
 * test_headers_filter: the `headers` filter (SPEC 4) and the filter
 * registry, on an exchange built by hand.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/arena.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "core/filter.h"
#include "base/header.h"
#include "filter_test.h"
#include "test.h"

extern const struct filter_type filter_headers;

static struct config_error err;

static const void *create(const char *json)
{
    return filter_create_json(&filter_headers, json, "routes[0].filters[1]", NULL, &err);
}

static bool has_error(const char *text)
{
    return config_error_has(&err, text);
}

static void value_is(const struct header_list *l, const char *name, const char *want)
{
    size_t n = header_count(l, slice_cstr(name));
    const struct slice *v = header_get(l, slice_cstr(name));
    if (!want) {
        ok(n == 0, "%s: want absent, found %zu", name, n);
        return;
    }
    ok(n == 1, "%s: want one field, found %zu", name, n);
    if (v)
        is_slice(*v, want);
}

static struct route_config route = {.name = "users-api"};

static void new_exchange(struct exchange *x)
{
    memset(x, 0, sizeof(*x));
    x->arena = arena_new(4096);
    header_list_init(&x->req_headers, x->arena, 16);
    header_list_init(&x->resp_headers, x->arena, 16);
    snprintf(x->remote_addr, sizeof(x->remote_addr), "10.1.2.3");
    x->request_id = SLICE_LIT("req-1");
    x->consumer = SLICE_LIT("alice");
    x->host = SLICE_LIT("api.example.com:8080");
    x->route = &route;
}

static void test_apply(void)
{
    const void *f = create("{\"type\": \"headers\","
                           " \"request\": {"
                           "   \"set\": {\"X-Real-IP\": \"${remote_addr}\", \"x-static\": \"v1\"},"
                           "   \"add\": {\"x-trace\": \"id=${request_id};c=${consumer}$\","
                           "             \"x-static\": \"v2\"},"
                           "   \"remove\": [\"x-secret\", \"Authorization\", \"x-static\"]},"
                           " \"response\": {"
                           "   \"set\": {\"x-route\": \"${route}@${host}\"},"
                           "   \"remove\": [\"server\"]}}");
    ok(f != NULL, "created");
    is_int(err.count, 0);
    if (!f)
        return;

    struct exchange x;
    new_exchange(&x);
    header_add(&x.req_headers, SLICE_LIT("x-secret"), SLICE_LIT("a"));
    header_add(&x.req_headers, SLICE_LIT("keep"), SLICE_LIT("1"));
    header_add(&x.req_headers, SLICE_LIT("X-Secret"), SLICE_LIT("b"));
    header_add(&x.req_headers, SLICE_LIT("authorization"), SLICE_LIT("Bearer z"));
    header_add(&x.req_headers, SLICE_LIT("x-real-ip"), SLICE_LIT("6.6.6.6"));
    header_add(&x.req_headers, SLICE_LIT("x-real-ip"), SLICE_LIT("7.7.7.7"));
    header_add(&x.req_headers, SLICE_LIT("x-static"), SLICE_LIT("old"));
    is_int(filter_headers.on_request(f, NULL, &x, NULL), FILTER_CONTINUE);

    value_is(&x.req_headers, "x-secret", NULL);
    value_is(&x.req_headers, "authorization", NULL);
    value_is(&x.req_headers, "keep", "1");
    value_is(&x.req_headers, "x-real-ip", "10.1.2.3");
    value_is(&x.req_headers, "x-trace", "id=req-1;c=alice$");
    /* remove, then set, then add: the old value goes, v1 is set, v2 appended. */
    is_int(header_count(&x.req_headers, SLICE_LIT("x-static")), 2);
    long at = header_find(&x.req_headers, SLICE_LIT("x-static"), 0);
    ok(at >= 0, "x-static present");
    if (at >= 0) {
        is_slice(x.req_headers.items[at].value, "v1");
        at = header_find(&x.req_headers, SLICE_LIT("x-static"), (size_t)at + 1);
        ok(at >= 0, "second x-static present");
        if (at >= 0)
            is_slice(x.req_headers.items[at].value, "v2");
    }
    is_int(x.req_headers.count, 5);

    /* The response part touches only the response headers. */
    header_add(&x.resp_headers, SLICE_LIT("Server"), SLICE_LIT("upstream/1.0"));
    header_add(&x.resp_headers, SLICE_LIT("content-type"), SLICE_LIT("text/plain"));
    filter_headers.on_response(f, NULL, &x, NULL);
    value_is(&x.resp_headers, "server", NULL);
    value_is(&x.resp_headers, "content-type", "text/plain");
    value_is(&x.resp_headers, "x-route", "users-api@api.example.com:8080");
    value_is(&x.req_headers, "x-route", NULL);
    arena_free(x.arena);

    /* Unset and unsafe variable values: an unset consumer is empty, CR/LF are dropped. */
    new_exchange(&x);
    x.consumer = slice_make("", 0);
    x.route = NULL;
    filter_headers.on_request(f, NULL, &x, NULL);
    filter_headers.on_response(f, NULL, &x, NULL);
    value_is(&x.req_headers, "x-trace", "id=req-1;c=$");
    value_is(&x.resp_headers, "x-route", "@api.example.com:8080");
    arena_free(x.arena);

    new_exchange(&x);
    x.consumer = SLICE_LIT("bob\r\nx-admin: 1");
    filter_headers.on_request(f, NULL, &x, NULL);
    value_is(&x.req_headers, "x-trace", "id=req-1;c=bobx-admin: 1$");
    value_is(&x.req_headers, "x-admin", NULL);
    arena_free(x.arena);
    filter_headers.destroy(f);
}

/* Values without variables point into the instance: nothing is allocated per request. */
static void test_no_allocation(void)
{
    const void *f =
        create("{\"request\": {\"set\": {\"x-a\": \"1\"}, \"add\": {\"x-b\": \"$2 ${\"}},"
               " \"response\": {\"set\": {\"x-c\": \"${HOST} ${host\"}}}");
    ok(f != NULL, "created");
    if (!f)
        return;
    struct exchange x;
    new_exchange(&x);
    size_t before = arena_used(x.arena);
    filter_headers.on_request(f, NULL, &x, NULL);
    filter_headers.on_response(f, NULL, &x, NULL);
    is_int(arena_used(x.arena), before);
    value_is(&x.req_headers, "x-a", "1");
    value_is(&x.req_headers, "x-b", "$2 ${");
    value_is(&x.resp_headers, "x-c", "${HOST} ${host");
    arena_free(x.arena);
    filter_headers.destroy(f);

    f = create("{\"request\": {\"set\": {\"x-d\": \"$${host}${host}${route}x\"}}}");
    ok(f != NULL, "created");
    if (!f)
        return;
    new_exchange(&x);
    filter_headers.on_request(f, NULL, &x, NULL);
    value_is(&x.req_headers, "x-d", "$api.example.com:8080api.example.com:8080users-apix");
    arena_free(x.arena);
    filter_headers.destroy(f);

    f = create("{}");
    ok(f != NULL, "empty options are valid");
    filter_headers.destroy(f);
}

static void test_errors(void)
{
    const void *f =
        create("{\"type\": \"headers\", \"requests\": {},"
               " \"request\": {\"sett\": {},"
               "   \"set\": {\"x-foo\": \"${remote}-${nope}\", \"bad name\": \"1\","
               "             \"x-n\": 5, \"x-crlf\": \"a\\r\\nb\", \"x-nul\": \"a\\u0000b\"},"
               "   \"add\": [\"x\"],"
               "   \"remove\": [\"ok\", 7, \"Content-Length\"]},"
               " \"response\": {\"remove\": \"server\", \"add\": {\"x-r\": \"${consumer}\"}}}");
    ok(f == NULL, "invalid options rejected");
    ok(has_error("routes[0].filters[1].request.set[\"x-foo\"]: unknown variable ${remote} (valid: "
                 "remote_addr, request_id, consumer, host, route, client_subject)"),
       "unknown variable");
    ok(has_error("routes[0].filters[1].request.set[\"x-foo\"]: unknown variable ${nope}"),
       "second unknown variable");
    ok(has_error("request.set[\"bad name\"]: \"bad name\" is not a valid header name"), "bad name");
    ok(has_error("request.set[\"x-n\"]: must be a string"), "non-string value");
    ok(has_error("request.set[\"x-crlf\"]: header values may not contain CR, LF or NUL"), "CRLF");
    ok(has_error("request.set[\"x-nul\"]: header values may not contain CR, LF or NUL"), "NUL");
    ok(has_error("request.add: must be an object"), "add not an object");
    ok(has_error("request.remove[1]: must be a header name"), "remove item not a string");
    ok(has_error("request.remove[2]: Content-Length is managed by the gateway"), "framing");
    ok(has_error("response.remove: must be an array"), "remove not an array");
    ok(has_error("requests"), "unknown top-level key reported");
    ok(has_error("sett"), "unknown nested key reported");
    ok(!has_error("x-r"), "valid entries are not reported");
    is_int(err.count, 12);

    f = create("{\"request\": [1]}");
    ok(f == NULL, "request must be an object");
    ok(has_error("routes[0].filters[1].request: must be an object"), "request type");
}

static void test_registry(void)
{
    int planned = -1;
    ok(filter_registry_find("headers", &planned) == &filter_headers, "headers registered");
    is_int(planned, 0);
    ok(filter_registry_find("jwt", &planned) != NULL, "jwt available");
    is_int(planned, 0);
    ok(filter_registry_find("body_limit", &planned) != NULL, "body_limit available");
    is_int(planned, 0);
    ok(filter_registry_find("nope", &planned) == NULL, "unknown type");
    is_int(planned, 0);
    ok(filter_registry_find("Headers", NULL) == NULL, "names are case-sensitive");
    /* Every available type, in SPEC 4's order (other filters join as they land). */
    const char *names = filter_registry_names();
    ok(strstr(names, "headers") != NULL, "names list headers: %s", names);
    ok(strstr(names, "rate_limit, rewrite, headers, cors") != NULL, "SPEC 4 order: %s", names);
    is_str(filter_headers.name, "headers");
    is_int(filter_headers.state_size, 0);
}

int main(void)
{
    test_apply();
    test_no_allocation();
    test_errors();
    test_registry();
    config_error_clear(&err);
    return test_done();
}
