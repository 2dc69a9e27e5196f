/*
 * test_rewrite: the `rewrite` filter (SPEC 4, SPEC 7 "rewrite") on an
 * exchange built by hand: the order regex -> strip_prefix -> add_prefix,
 * groups, segment-aware stripping, the leading '/', Host, and the options'
 * errors by JSON path.
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

extern const struct filter_type filter_rewrite;

static struct config_error err;

static const void *create(const char *json)
{
    return filter_create_json(&filter_rewrite, json, "routes[1].filters[0]", NULL, &err);
}

static bool has_error(const char *text)
{
    return config_error_has(&err, text);
}

/* Runs filter `f` on `path` and checks what the upstream would see. */
static void check(const void *f, const char *path, const char *want)
{
    struct exchange x;
    memset(&x, 0, sizeof(x));
    x.arena = arena_new(1024);
    header_list_init(&x.req_headers, x.arena, 4);
    header_set(&x.req_headers, SLICE_LIT("Host"), SLICE_LIT("gw.example"));
    x.path = slice_cstr(path);
    ok(filter_rewrite.on_request(f, NULL, &x, NULL) == FILTER_CONTINUE, "continues");
    ok(x.path.len == strlen(want) && memcmp(x.path.base, want, x.path.len) == 0,
       "%s: got \"%.*s\", want \"%s\"", path, (int)x.path.len, x.path.base, want);
    arena_free(x.arena);
}

static void test_regex(void)
{
    const void *f = create("{\"path\": {\"regex\": \"^/api/(\\\\w+)(/(\\\\d+))?\","
                           " \"replace\": \"/v1/$1$2/$3-$0$x$\"}}");
    ok(f != NULL, "created");
    if (!f)
        return;
    check(f, "/api/users/42", "/v1/users/42/42-/api/users/42$x$");
    check(f, "/api/users", "/v1/users/-/api/users$x$");     /* unset groups are empty */
    check(f, "/api/users/x", "/v1/users/-/api/users$x$/x"); /* the rest after the match stays */
    check(f, "/other", "/other");
    filter_rewrite.destroy(f);

    /* The first match only, anywhere in the path. */
    f = create("{\"path\": {\"regex\": \"old\", \"replace\": \"new\"}}");
    check(f, "/old/old", "/new/old");
    filter_rewrite.destroy(f);

    /* A result without a leading '/' gets one. */
    f = create("{\"path\": {\"regex\": \"^/api/(.*)\", \"replace\": \"$1\"}}");
    check(f, "/api/x/y", "/x/y");
    check(f, "/api/", "/");
    filter_rewrite.destroy(f);
}

static void test_prefixes_and_order(void)
{
    const void *f = create("{\"strip_prefix\": \"/api/\"}");
    check(f, "/api", "/");
    check(f, "/api/", "/");
    check(f, "/api/users", "/users");
    check(f, "/apix", "/apix");
    check(f, "/ap", "/ap");
    filter_rewrite.destroy(f);

    f = create("{\"add_prefix\": \"/v2/\"}");
    check(f, "/", "/v2/");
    check(f, "/x", "/v2/x");
    filter_rewrite.destroy(f);

    /* regex -> strip_prefix -> add_prefix */
    f = create("{\"add_prefix\": \"/v3\", \"strip_prefix\": \"/internal\","
               " \"path\": {\"regex\": \"^/public/\", \"replace\": \"/internal/\"}}");
    check(f, "/public/a", "/v3/a");
    check(f, "/internal/b", "/v3/b");
    check(f, "/c", "/v3/c");
    filter_rewrite.destroy(f);
}

static void test_host(void)
{
    const void *f = create("{\"host\": \"[::1]:8443\"}");
    ok(f != NULL, "created");
    struct exchange x;
    memset(&x, 0, sizeof(x));
    x.arena = arena_new(1024);
    header_list_init(&x.req_headers, x.arena, 4);
    header_set(&x.req_headers, SLICE_LIT("Host"), SLICE_LIT("gw.example"));
    x.host = SLICE_LIT("gw.example");
    x.path = SLICE_LIT("/p");
    filter_rewrite.on_request(f, NULL, &x, NULL);
    const struct slice *h = header_get(&x.req_headers, SLICE_LIT("Host"));
    ok(h && slice_eq(*h, SLICE_LIT("[::1]:8443")), "Host replaced");
    is_int(header_count(&x.req_headers, SLICE_LIT("Host")), 1);
    ok(slice_eq(x.host, SLICE_LIT("gw.example")), "the client's host stays for X-Forwarded-Host");
    ok(slice_eq(x.path, SLICE_LIT("/p")), "path untouched");
    arena_free(x.arena);
    filter_rewrite.destroy(f);
}

static void test_errors(void)
{
    ok(create("{\"path\": {\"regex\": \"^/(a\", \"replace\": \"/\"}}") == NULL, "bad regex");
    ok(has_error("sluice.json: routes[1].filters[0].path.regex: invalid regular expression at "
                 "offset 4: missing closing parenthesis"),
       "regex message with offset");
    ok(create("{\"path\": {\"regex\": \"^/(a)\", \"replace\": \"/$2 x\"}, \"host\": \"a b\","
              " \"strip_prefix\": \"/\", \"add_prefix\": \"v1\", \"paths\": 1}") == NULL,
       "many errors");
    ok(has_error("path.replace: $2 names a group the regex does not have (it has 1)"), "group");
    ok(has_error("path.replace: byte 0x20"), "space in replacement");
    ok(has_error("routes[1].filters[0].host: \"a b\" is not a host[:port]"), "host");
    ok(has_error("strip_prefix: \"/\" would strip nothing"), "strip /");
    ok(has_error("add_prefix: must start with '/'"), "add_prefix");
    ok(has_error("paths"), "unknown key");
    ok(create("{\"path\": {\"regex\": \"x\"}}") == NULL && has_error("path.replace"),
       "replace required");
    ok(create("{\"path\": \"/x\"}") == NULL && has_error("path: must be an object"), "path type");
    ok(create("{}") == NULL && has_error("rewrites nothing"), "empty");
    ok(create("{\"path\": {\"regex\": \"x\", \"replace\": \"/?q=1\"}}") == NULL,
       "no query in the replacement");
}

int main(void)
{
    test_regex();
    test_prefixes_and_order();
    test_host();
    test_errors();
    config_error_clear(&err);
    return test_done();
}
