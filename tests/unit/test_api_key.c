/*
 * test_api_key: the `api_key` filter (SPEC 4, SPEC 7): option errors by JSON
 * path, keys inline and from keys_file, the header and query paths, the key
 * cut out of what the upstream sees, the 401 challenge, and the digest
 * lookup that compares in constant time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "base/arena.h"
#include "base/header.h"
#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"
#include "filter_test.h"
#include "test.h"

extern const struct filter_type filter_api_key;

static struct config_error err;
static char dir[256];

static const void *create(const char *json)
{
    return filter_create_json(&filter_api_key, json, "routes[1].filters[0]", dir, &err);
}

static void has_error(const char *text)
{
    if (!config_error_has(&err, text))
        ok(0, "no error \"%s\" among %zu", text, err.count);
}

static void write_file(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ok(f != NULL, "write %s", path);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

struct run {
    struct exchange x;
    enum filter_verdict verdict;
};

/* Runs the filter on a request with the given query (NULL: none) and one optional header. */
static void run(struct run *r, const void *f, void *ctx, const char *query, const char *hname,
                const char *hvalue)
{
    memset(r, 0, sizeof(*r));
    struct exchange *x = &r->x;
    x->arena = arena_new(4096);
    header_list_init(&x->req_headers, x->arena, 8);
    header_list_init(&x->resp_headers, x->arena, 8);
    x->request_id = SLICE_LIT("req-1");
    x->path = SLICE_LIT("/v1/items");
    header_add(&x->req_headers, SLICE_LIT("accept"), SLICE_LIT("*/*"));
    if (hname)
        header_add(&x->req_headers, slice_cstr(hname), slice_cstr(hvalue));
    if (query) {
        x->has_query = true;
        x->query = slice_cstr(query);
    }
    r->verdict = filter_api_key.on_request(f, ctx, x, NULL);
}

static void done(struct run *r)
{
    arena_free(r->x.arena);
}

static void expect_401(struct run *r, const char *challenge)
{
    is_int(r->verdict, FILTER_RESPOND);
    is_int(r->x.status, 401);
    const struct slice *c = header_get(&r->x.resp_headers, SLICE_LIT("www-authenticate"));
    ok(c != NULL, "WWW-Authenticate present");
    if (c)
        is_slice(*c, challenge);
    is_int(r->x.consumer.len, 0);
}

static void test_errors(void)
{
    ok(create("{\"type\": \"api_key\", \"header\": \"x key\", \"query\": \"a&b\", \"keys\": "
              "{\"\": \"x\", \"good\": \"\", \"ok\": 3, \"fine\": \"app\", \"tab\\tkey\": \"a\"},"
              " \"key\": 1}") == NULL,
       "bad options refused");
    has_error("sluice.json: routes[1].filters[0].header: \"x key\" is not a valid header name");
    has_error("routes[1].filters[0].query: \"a&b\" is not a query parameter name");
    has_error("routes[1].filters[0].keys[\"\"]: a key must be a non-empty string");
    has_error("routes[1].filters[0].keys.good: must be the consumer name (a non-empty string)");
    has_error("routes[1].filters[0].keys.ok: must be the consumer name");
    has_error("routes[1].filters[0].keys[\"tab\\u0009key\"]: a key must be a non-empty string");
    has_error("routes[1].filters[0].key: unknown");
    is_int(err.count, 7);

    ok(create("{\"type\": \"api_key\"}") == NULL, "no keys refused");
    has_error("routes[1].filters[0]: needs \"keys\"");
    ok(create("{\"type\": \"api_key\", \"keys\": {\"a\": \"b\"}, \"keys_file\": \"k.json\"}") ==
           NULL,
       "both refused");
    has_error("routes[1].filters[0]: has both \"keys\" and \"keys_file\"");
    ok(create("{\"type\": \"api_key\", \"keys\": {}}") == NULL, "empty keys refused");
    has_error("routes[1].filters[0].keys: must be a non-empty object");
    ok(create("{\"type\": \"api_key\", \"keys\": [\"k\"]}") == NULL, "array refused");
    has_error("routes[1].filters[0].keys: must be a non-empty object");
    ok(create("{\"type\": \"api_key\", \"keys_file\": \"missing.json\"}") == NULL,
       "missing file refused");
    has_error("routes[1].filters[0].keys_file: cannot read \"");
    has_error("/missing.json\"");
    write_file("bad.json", "{\"k1\": \"a\",\n \"k2\": 5}\n");
    ok(create("{\"type\": \"api_key\", \"keys_file\": \"bad.json\"}") == NULL, "bad file refused");
    has_error("routes[1].filters[0].keys_file: \"");
    has_error("/bad.json\" .k2: must be the consumer name");
    write_file("list.json", "[1]");
    ok(create("{\"type\": \"api_key\", \"keys_file\": \"list.json\"}") == NULL, "list refused");
    has_error("/list.json\" must hold a JSON object of key to consumer");
    write_file("dup.json", "{\"k\": \"a\", \"k\": \"b\"}");
    ok(create("{\"type\": \"api_key\", \"keys_file\": \"dup.json\"}") == NULL,
       "duplicate keys refused");
    has_error("/dup.json\" line 1: duplicate object key");
}

static void test_header(void)
{
    const void *f = create("{\"type\": \"api_key\", \"keys\": {\"k-alice-1\": \"alice\", "
                           "\"k-bob-2\": \"bob\", \"k-carol-3\": \"carol\"}}");
    ok(f != NULL, "created");
    if (!f)
        return;
    void *ctx = filter_api_key.context_new(f, NULL);
    ok(ctx != NULL, "context");
    struct run r;
    /* Each key maps to its consumer, through the context and without it (the fallback). */
    void *ctxs[2] = {ctx, NULL};
    for (int i = 0; i < 2; i++) {
        run(&r, f, ctxs[i], NULL, "X-Api-Key", "k-bob-2");
        is_int(r.verdict, FILTER_CONTINUE);
        is_slice(r.x.consumer, "bob");
        ok(header_get(&r.x.req_headers, SLICE_LIT("x-api-key")) == NULL, "key header removed");
        ok(header_get(&r.x.req_headers, SLICE_LIT("accept")) != NULL, "other header kept");
        done(&r);
        run(&r, f, ctxs[i], NULL, "x-api-key", "k-carol-3");
        is_slice(r.x.consumer, "carol");
        done(&r);
    }
    run(&r, f, ctx, NULL, "x-api-key", "k-bob-3");
    expect_401(&r, "ApiKey header=\"x-api-key\"");
    ok(header_get(&r.x.req_headers, SLICE_LIT("x-api-key")) == NULL, "removed on failure too");
    done(&r);
    run(&r, f, ctx, NULL, "x-api-key", "k-bob-");
    expect_401(&r, "ApiKey header=\"x-api-key\"");
    done(&r);
    run(&r, f, ctx, NULL, "x-api-key", "");
    expect_401(&r, "ApiKey header=\"x-api-key\"");
    done(&r);
    run(&r, f, ctx, NULL, NULL, NULL);
    expect_401(&r, "ApiKey header=\"x-api-key\"");
    done(&r);
    /* Without `query`, a key in the query string is not looked at, and left alone. */
    run(&r, f, ctx, "api_key=k-bob-2", NULL, NULL);
    expect_401(&r, "ApiKey header=\"x-api-key\"");
    is_slice(r.x.query, "api_key=k-bob-2");
    done(&r);
    filter_api_key.context_free(f, ctx);
    filter_api_key.destroy(f);
}

static void query_case(const void *f, const char *query, const char *want_query,
                       const char *want_consumer)
{
    struct run r;
    run(&r, f, NULL, query, NULL, NULL);
    if (want_consumer) {
        is_int(r.verdict, FILTER_CONTINUE);
        is_slice(r.x.consumer, want_consumer);
    } else {
        is_int(r.verdict, FILTER_RESPOND);
    }
    if (want_query) {
        ok(r.x.has_query, "query kept for %s", query);
        is_slice(r.x.query, want_query);
    } else {
        ok(!r.x.has_query && r.x.query.len == 0, "no query left for %s", query);
    }
    done(&r);
}

static void test_query(void)
{
    write_file("keys.json", "{\"q/k 1\": \"svc-a\", \"qk2\": \"svc-b\"}");
    const void *f = create("{\"type\": \"api_key\", \"header\": \"X-Key\", \"query\": \"key\", "
                           "\"keys_file\": \"keys.json\"}");
    ok(f != NULL, "created");
    if (!f)
        return;
    query_case(f, "key=qk2", NULL, "svc-b");
    query_case(f, "a=1&key=qk2&b=2", "a=1&b=2", "svc-b");
    query_case(f, "key=qk2&a=1", "a=1", "svc-b");
    query_case(f, "a=1&b=&key=qk2", "a=1&b=", "svc-b");
    query_case(f, "z=9&key=q%2Fk%201&y=8", "z=9&y=8", "svc-a"); /* the value is percent-decoded */
    /* every occurrence goes; the first decides */
    query_case(f, "key=qk2&a=1&key=nope", "a=1", "svc-b");
    query_case(f, "key=nope&key=qk2", NULL, NULL);
    /* names are compared as sent: Key and keyx are other parameters */
    query_case(f, "Key=qk2&keyx=qk2", "Key=qk2&keyx=qk2", NULL);
    query_case(f, "a=1&key", "a=1", NULL); /* present without a value: unknown, still cut */
    query_case(f, "a=1", "a=1", NULL);

    /* The header is looked at first; both are removed either way. */
    struct run r;
    run(&r, f, NULL, "a=1&key=qk2", "x-key", "wrong");
    expect_401(&r, "ApiKey header=\"x-key\", query=\"key\"");
    is_slice(r.x.query, "a=1");
    done(&r);
    run(&r, f, NULL, "key=wrong&b=2", "X-KEY", "qk2");
    is_int(r.verdict, FILTER_CONTINUE);
    is_slice(r.x.consumer, "svc-b");
    is_slice(r.x.query, "b=2");
    ok(header_get(&r.x.req_headers, SLICE_LIT("x-key")) == NULL, "header removed");
    done(&r);
    filter_api_key.destroy(f);
}

/*
 * Many keys that share long prefixes: every one is found, and near misses
 * (one byte changed at the start, middle or end) never are. The lookup goes
 * by keyed digest, so it takes the same path whatever the byte that differs.
 */
static void test_many_keys(void)
{
    json_t *keys = json_object();
    char k[64], c[32];
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof(k), "shared-prefix-0000000000-%04d", i);
        snprintf(c, sizeof(c), "c%d", i);
        json_object_set_new(keys, k, json_string(c));
    }
    json_t *opts = json_pack("{s:s, s:o}", "type", "api_key", "keys", keys);
    char *text = json_dumps(opts, 0);
    json_decref(opts);
    const void *f = create(text);
    free(text);
    ok(f != NULL, "created");
    if (!f)
        return;
    void *ctx = filter_api_key.context_new(f, NULL);
    int found = 0, misses = 0;
    struct run r;
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof(k), "shared-prefix-0000000000-%04d", i);
        snprintf(c, sizeof(c), "c%d", i);
        run(&r, f, ctx, NULL, "x-api-key", k);
        if (r.verdict == FILTER_CONTINUE && r.x.consumer.len == strlen(c) &&
            memcmp(r.x.consumer.base, c, r.x.consumer.len) == 0)
            found++;
        done(&r);
        size_t at[3] = {0, strlen(k) / 2, strlen(k) - 1};
        for (int j = 0; j < 3; j++) {
            char near[64];
            memcpy(near, k, strlen(k) + 1);
            near[at[j]] = '~'; /* in no key */
            run(&r, f, ctx, NULL, "x-api-key", near);
            if (r.verdict == FILTER_RESPOND && r.x.status == 401)
                misses++;
            done(&r);
        }
    }
    is_int(found, 300);
    is_int(misses, 900);
    filter_api_key.context_free(f, ctx);
    filter_api_key.destroy(f);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/sluice-test-api-key-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_errors();
    test_header();
    test_query();
    test_many_keys();
    config_error_clear(&err);
    const char *files[] = {"bad.json", "list.json", "dup.json", "keys.json"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return test_done();
}
