/*
 * test_router: route matching (SPEC 2.4), host wildcards and path
 * normalisation (SPEC 7), on snapshots built by hand.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "conf/config.h"
#include "base/header.h"
#include "core/router.h"
#include "test.h"

static struct arena *arena;

static struct route_config *add_route(struct snapshot *s, const char *name, enum match_kind kind,
                                      const char *path)
{
    struct route_config *r = &s->routes[s->num_routes];
    r->name = (char *)name;
    r->index = s->num_routes++;
    r->match = kind;
    if (kind == MATCH_REGEX)
        r->regex_source = (char *)path;
    else
        r->path = (char *)path;
    return r;
}

static struct snapshot *new_snapshot(size_t max_routes)
{
    struct snapshot *s = calloc(1, sizeof(*s));
    s->routes = calloc(max_routes, sizeof(*s->routes));
    return s;
}

static void free_snapshot(struct snapshot *s)
{
    router_free(s);
    free(s->routes);
    free(s);
}

/* Routes a request; returns the route's name or NULL. Leaves the match in *m. */
static const char *route_of(const struct snapshot *s, const char *method, const char *host,
                            const char *path, const char *query, const struct header_list *h,
                            struct route_match *m)
{
    struct route_match local;
    struct router_request req = {
        .method = slice_cstr(method),
        .host = slice_cstr(host),
        .path = slice_cstr(path),
        .query = slice_cstr(query ? query : ""),
        .headers = h,
    };
    if (!m)
        m = &local;
    if (!router_match(s, arena, &req, m))
        return NULL;
    return m->route->name;
}

#define routes_to(s, path, want)                                                                   \
    do {                                                                                           \
        const char *got_ = route_of((s), "GET", "example.com", (path), NULL, NULL, NULL);          \
        is_str(got_ ? got_ : "(none)", (want));                                                    \
    } while (0)

static char *hosts[] = {"api.example.com", "*.example.org", "[::1]", "10.0.0.1"};
static char *methods[] = {"GET", "POST"};
static struct match_value header_values[] = {
    {.name = "x-api-version", .value = "2"},
    {.name = "x-tenant", .regex_source = "^t-[0-9]+$"},
};
static struct match_value query_values[] = {
    {.name = "debug", .value = "1"},
    {.name = "page", .regex_source = "^[0-9]+$"},
};

static struct snapshot *table(void)
{
    struct snapshot *s = new_snapshot(16);
    add_route(s, "api", MATCH_PREFIX, "/api");
    add_route(s, "docs", MATCH_PREFIX, "/docs/");
    add_route(s, "exact", MATCH_PATH, "/exact");
    add_route(s, "users", MATCH_REGEX, "^/users/([0-9]+)(?:/(\\w+))?$");
    struct route_config *r = add_route(s, "hosts", MATCH_PREFIX, "/h");
    r->hosts = hosts;
    r->num_hosts = 4;
    r = add_route(s, "methods", MATCH_PREFIX, "/m");
    r->methods = methods;
    r->num_methods = 2;
    r = add_route(s, "headers", MATCH_PREFIX, "/hd");
    r->headers = header_values;
    r->num_headers = 2;
    r = add_route(s, "query", MATCH_PREFIX, "/q");
    r->query = query_values;
    r->num_query = 2;
    add_route(s, "root", MATCH_PATH, "/");
    add_route(s, "any", MATCH_PREFIX, "/");
    struct config_error err = {0};
    is_int(router_compile(s, &err), 0);
    is_int(err.count, 0);
    config_error_clear(&err);
    return s;
}

static void test_paths(const struct snapshot *s)
{
    routes_to(s, "/api", "api");
    routes_to(s, "/api/", "api");
    routes_to(s, "/api/x/y", "api");
    routes_to(s, "/apix", "any");
    routes_to(s, "/ap", "any");
    routes_to(s, "/docs", "any");
    routes_to(s, "/docs/", "docs");
    routes_to(s, "/docs/x", "docs");
    routes_to(s, "/exact", "exact");
    routes_to(s, "/exact/", "any");
    routes_to(s, "/exactly", "any");
    routes_to(s, "/", "root");
    routes_to(s, "//api", "any");
}

static void test_regex(const struct snapshot *s)
{
    struct route_match m;
    is_str(route_of(s, "GET", "h", "/users/42", NULL, NULL, &m), "users");
    is_int(m.num_captures, 2);
    is_slice(m.captures[0], "/users/42");
    is_slice(m.captures[1], "42");
    is_slice(router_expand_location(arena, "/u/$1/$2?cost=$$5&x=$9&y=$", &m),
             "/u/42/?cost=$5&x=&y=$");

    is_str(route_of(s, "GET", "h", "/users/7/posts", NULL, NULL, &m), "users");
    is_int(m.num_captures, 3);
    is_slice(m.captures[2], "posts");
    is_slice(router_expand_location(arena, "https://x.example$0#$2", &m),
             "https://x.example/users/7/posts#posts");
    routes_to(s, "/users/x", "any");
    routes_to(s, "/users/42/a/b", "any");

    /* A non-regex route has no captures: every $N expands to nothing. */
    is_str(route_of(s, "GET", "h", "/api", NULL, NULL, &m), "api");
    is_int(m.num_captures, 0);
    is_slice(router_expand_location(arena, "/new$1/", &m), "/new/");

    /* No arena: match data is malloc'd and freed inside router_match. */
    struct router_request req = {.method = SLICE_LIT("GET"), .path = SLICE_LIT("/users/9")};
    ok(router_match(s, NULL, &req, &m), "match without arena");
    is_slice(m.captures[1], "9");
}

static void test_hosts(const struct snapshot *s)
{
    static const struct {
        const char *host;
        const char *want;
    } cases[] = {
        {"api.example.com", "hosts"},
        {"API.Example.COM:8080", "hosts"},
        {"api.example.com.", "hosts"},
        {"a.example.org", "hosts"},
        {"a.b.c.example.org", "hosts"},
        {"x.EXAMPLE.org:443", "hosts"},
        {"example.org", "any"},
        {"badexample.org", "any"},
        {".example.org", "any"},
        {"[::1]", "hosts"},
        {"[::1]:8443", "hosts"},
        {"[::2]:8443", "any"},
        {"10.0.0.1:80", "hosts"},
        {"10.0.0.10", "any"},
        {"", "any"},
        {"other.example.com", "any"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = route_of(s, "GET", cases[i].host, "/h", NULL, NULL, NULL);
        ok(got && strcmp(got, cases[i].want) == 0, "host %s: got %s, want %s", cases[i].host,
           got ? got : "(none)", cases[i].want);
    }
    ok(router_host_matches("::1", SLICE_LIT("[::1]:80")), "bare v6 pattern");
    ok(!router_host_matches("*.example.org", SLICE_LIT("example.org:80")), "wildcard apex");
    ok(router_host_matches("*.example.org", SLICE_LIT("a.example.org:80")), "wildcard port");
    ok(!router_host_matches("api.example.com", SLICE_LIT("[api.example.com")), "bad bracket");
}

static void test_methods_headers_query(const struct snapshot *s)
{
    is_str(route_of(s, "GET", "h", "/m", NULL, NULL, NULL), "methods");
    is_str(route_of(s, "POST", "h", "/m/x", NULL, NULL, NULL), "methods");
    is_str(route_of(s, "get", "h", "/m", NULL, NULL, NULL), "any");
    is_str(route_of(s, "DELETE", "h", "/m", NULL, NULL, NULL), "any");

    struct header_list h;
    header_list_init(&h, arena, 4);
    is_str(route_of(s, "GET", "h", "/hd", NULL, &h, NULL), "any");
    header_add(&h, SLICE_LIT("X-API-Version"), SLICE_LIT("2"));
    is_str(route_of(s, "GET", "h", "/hd", NULL, &h, NULL), "any"); /* x-tenant missing */
    header_add(&h, SLICE_LIT("x-tenant"), SLICE_LIT("t-x"));
    is_str(route_of(s, "GET", "h", "/hd", NULL, &h, NULL), "any");
    header_add(&h, SLICE_LIT("X-Tenant"), SLICE_LIT("t-17"));
    is_str(route_of(s, "GET", "h", "/hd", NULL, &h, NULL), "headers"); /* any field may match */
    h.items[0].value = SLICE_LIT("20");
    is_str(route_of(s, "GET", "h", "/hd", NULL, &h, NULL), "any");
    is_str(route_of(s, "GET", "h", "/hd", NULL, NULL, NULL), "any");

    static const struct {
        const char *query;
        const char *want;
    } cases[] = {
        {"debug=1&page=3", "query"},
        {"page=3&debug=1", "query"},
        {"a&debug=1&&page=12", "query"},
        {"debug=1", "any"},
        {"debug=10&page=3", "any"},
        {"debug=1&page=x", "any"},
        {"debug=%31&page=3", "any"},
        {"debug&page=3", "any"},
        {"", "any"},
        {"debug=2&debug=1&page=0", "query"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = route_of(s, "GET", "h", "/q", cases[i].query, NULL, NULL);
        ok(got && strcmp(got, cases[i].want) == 0, "query %s: got %s, want %s", cases[i].query,
           got ? got : "(none)", cases[i].want);
    }
}

/* 500 routes: the bucketed index must give the same answer as trying them in order. */
static void test_order(void)
{
    enum { N = 500 };
    static char names[N][16], paths[N][16];
    static char *other_host[] = {"other.example"};
    struct snapshot *s = new_snapshot(N);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "r%d", i);
        if (i == 2) {
            add_route(s, names[i], MATCH_REGEX, "^/svc3[0-9][0-9]$");
        } else if (i < 400) {
            snprintf(paths[i], sizeof(paths[i]), "/svc%d", i);
            add_route(s, names[i], MATCH_PREFIX, paths[i]);
        } else if (i == 400) {
            struct route_config *r = add_route(s, names[i], MATCH_PREFIX, "/svc7");
            r->hosts = other_host;
            r->num_hosts = 1;
        } else if (i == 401) {
            add_route(s, names[i], MATCH_REGEX, "^/svc1[0-9]$");
        } else if (i < N - 1) {
            snprintf(paths[i], sizeof(paths[i]), "/p%d", i);
            add_route(s, names[i], MATCH_PATH, paths[i]);
        } else {
            add_route(s, names[i], MATCH_ANY, NULL);
        }
    }
    struct config_error err = {0};
    is_int(router_compile(s, &err), 0);
    routes_to(s, "/svc1", "r1");
    routes_to(s, "/svc2", "r499");
    routes_to(s, "/svc300", "r2");
    routes_to(s, "/svc30", "r30");
    routes_to(s, "/svc399/x", "r399");
    routes_to(s, "/svc15", "r15");
    routes_to(s, "/svc7/a", "r7");
    routes_to(s, "/p450", "r450");
    routes_to(s, "/p450/x", "r499");
    routes_to(s, "/nothing", "r499");
    is_str(route_of(s, "GET", "other.example", "/svc7", NULL, NULL, NULL), "r7");
    free_snapshot(s);
}

static void test_compile_errors(void)
{
    static struct match_value bad_headers[] = {{.name = "x-tenant", .regex_source = "[a-"}};
    static struct match_value bad_query[] = {{.name = "a.b", .regex_source = "(?<n"},
                                             {.name = "page", .regex_source = "("}};
    struct snapshot *s = new_snapshot(3);
    add_route(s, "ok", MATCH_REGEX, "^/fine$");
    add_route(s, "bad", MATCH_REGEX, "^/(x");
    struct route_config *r = add_route(s, "bad2", MATCH_PREFIX, "/x");
    r->headers = bad_headers;
    r->num_headers = 1;
    r->query = bad_query;
    r->num_query = 2;
    struct config_error err = {.file = "sluice.json"};
    snprintf(err.path, sizeof(err.path), "before");
    is_int(router_compile(s, &err), -1);
    is_int(err.count, 4);
    if (err.count == 4) {
        is_str(err.messages[0], "sluice.json: routes[1].match.regex: invalid regular expression at "
                                "offset 4: missing closing parenthesis");
        ok(strstr(err.messages[1], "routes[2].match.headers[\"x-tenant\"].regex: invalid regular "
                                   "expression at offset 3: ") != NULL,
           "%s", err.messages[1]);
        ok(strstr(err.messages[2], "routes[2].match.query[\"a.b\"].regex: invalid regular "
                                   "expression at offset ") != NULL,
           "%s", err.messages[2]);
        ok(strstr(err.messages[3], "routes[2].match.query.page.regex: invalid regular expression "
                                   "at offset 1: missing closing parenthesis") != NULL,
           "%s", err.messages[3]);
    }
    is_str(err.path, "before");
    ok(s->router == NULL, "no index after errors");
    config_error_clear(&err);
    free_snapshot(s); /* partial: route 0 compiled, others NULL */
    ok(1, "router_free on a partial snapshot");
}

static void test_normalize(void)
{
    static const struct {
        const char *in;
        const char *want; /* NULL: invalid (-1) */
    } cases[] = {
        {"/", "/"},
        {"/a/b", "/a/b"},
        {"/%7E", "/~"},
        {"/%7euser/%41%2d", "/~user/A-"},
        {"/a/%2e%2E/b", "/b"},
        {"/a/%2F/b", "/a/%2F/b"},
        {"/a/%2f%3a", "/a/%2F%3A"},
        {"/a%20b", "/a%20b"},
        {"//a//b/", "//a//b/"},
        {"/a/./b/../c", "/a/c"},
        {"/a//../b", "/a/b"},
        {"/a/b/..", "/a/"},
        {"/a/b/.", "/a/b/"},
        {"/.", "/"},
        {"/a/..", "/"},
        {"/./a", "/a"},
        {"/..a/.b/...", "/..a/.b/..."},
        {"/a/%2e", "/a/"},
        {"/a/.%2e/", "/"},
        {"/..", NULL},
        {"/../a", NULL},
        {"/a/../..", NULL},
        {"/a/%2e%2e/%2e%2e/..", NULL},
        {"/%zz", NULL},
        {"/%4", NULL},
        {"/a%", NULL},
        {"/%4g", NULL},
        {"a/b", NULL},
        {"", NULL},
        {"*", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct slice out = {0};
        int rc = router_normalize_path(arena, slice_cstr(cases[i].in), &out);
        if (!cases[i].want) {
            ok(rc == -1, "%s: want -1, got %d \"%.*s\"", cases[i].in, rc, (int)out.len,
               out.base ? out.base : "");
            continue;
        }
        ok(rc == 0 && out.len == strlen(cases[i].want) &&
               memcmp(out.base, cases[i].want, out.len) == 0,
           "%s: got %d \"%.*s\", want \"%s\"", cases[i].in, rc, (int)out.len,
           out.base ? out.base : "", cases[i].want);
    }

    /* The common case is not copied: the result is the input. */
    const char *raw = "/api/v1/users%2F7?x=1";
    struct slice out;
    size_t before = arena_used(arena);
    is_int(router_normalize_path(arena, slice_make(raw, 17), &out), 0);
    ok(out.base == raw && out.len == 17, "unchanged path is a slice of raw");
    is_int(arena_used(arena), before);
}

int main(void)
{
    arena = arena_new(4096);
    struct snapshot *s = table();
    test_paths(s);
    test_regex(s);
    test_hosts(s);
    test_methods_headers_query(s);
    free_snapshot(s);
    test_order();
    test_compile_errors();
    test_normalize();
    arena_free(arena);
    return test_done();
}
