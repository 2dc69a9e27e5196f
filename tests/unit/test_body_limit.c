/*
 * test_body_limit: the `body_limit` filter's options and its Content-Length
 * check. The body hook is exercised through the real pipeline by
 * tests/integration/test_47_body_limit.py (chunked and HTTP/2 bodies).
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

extern const struct filter_type filter_body_limit;

static struct config_error err;

static const void *create(const char *json)
{
    return filter_create_json(&filter_body_limit, json, "routes[0].filters[3]", NULL, &err);
}

static bool has_error(const char *text)
{
    return config_error_has(&err, text);
}

static enum filter_verdict check(const void *f, int64_t length, int *status)
{
    struct exchange x;
    memset(&x, 0, sizeof(x));
    x.arena = arena_new(1024);
    header_list_init(&x.req_headers, x.arena, 4);
    header_list_init(&x.resp_headers, x.arena, 4);
    x.request_id = SLICE_LIT("r");
    x.req_length = length;
    enum filter_verdict v = filter_body_limit.on_request(f, NULL, &x, NULL);
    *status = x.status;
    arena_free(x.arena);
    return v;
}

int main(void)
{
    int status;
    const void *f = create("{\"type\": \"body_limit\", \"max_bytes\": 100}");
    ok(f != NULL, "created");
    ok(filter_body_limit.on_request_body != NULL, "has a body hook");
    is_int(check(f, 100, &status), FILTER_CONTINUE);
    is_int(check(f, -1, &status), FILTER_CONTINUE); /* chunked: the body hook decides */
    is_int(check(f, 101, &status), FILTER_RESPOND);
    is_int(status, 413);
    filter_body_limit.destroy(f);

    f = create("{\"max_bytes\": 0}");
    is_int(check(f, 0, &status), FILTER_CONTINUE);
    is_int(check(f, 1, &status), FILTER_RESPOND);
    filter_body_limit.destroy(f);

    ok(create("{}") == NULL, "max_bytes required");
    ok(has_error("sluice.json: routes[0].filters[3].max_bytes: is required"), "required");
    ok(create("{\"max_bytes\": 1.5, \"limit\": 3}") == NULL, "rejected");
    ok(has_error("routes[0].filters[3].max_bytes: must be"), "integer");
    ok(has_error("limit"), "unknown key");
    config_error_clear(&err);
    return test_done();
}
