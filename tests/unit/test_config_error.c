/*
 * test_config_error: the public config-error helpers that sections and
 * filters share (conf/config_error.h): JSON paths, key checks with "did you
 * mean", the typed getters, muting, the token check, and how file names
 * resolve (against the config's folder, or into the fuzzer's sandbox).
 */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config_error.h"
#include "test.h"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    if (!v) {
        printf("bad JSON in the test: %s\n", jerr.text);
        exit(2);
    }
    return v;
}

static void test_paths(void)
{
    struct config_error err = {.file = "f.json"};
    char step[64];
    config_path_member(step, sizeof step, "plain_key");
    is_str(step, ".plain_key");
    config_path_member(step, sizeof step, "a \"b\"\\");
    is_str(step, "[\"a \\\"b\\\"\\\\\"]");

    size_t m1 = config_path_push(&err, ".routes");
    is_str(err.path, "routes"); /* no leading dot at the top */
    size_t m2 = config_path_push_index(&err, 2);
    size_t m3 = config_path_push_key(&err, "x-y");
    is_str(err.path, "routes[2][\"x-y\"]");
    config_error_add(&err, ".z", "bad %d", 1);
    config_path_pop(&err, m3);
    config_key_error(&err, "upstream", "unknown");
    config_error_add(&err, NULL, "here");
    config_path_pop(&err, m2);
    config_path_pop(&err, m1);
    is_str(err.path, "");
    config_error_add(&err, ".top", "at the top");
    config_error_raw(&err, "f.json:1:2: raw");
    is_int(err.count, 5);
    if (err.count == 5) {
        is_str(err.messages[0], "f.json: routes[2][\"x-y\"].z: bad 1");
        is_str(err.messages[1], "f.json: routes[2].upstream: unknown");
        is_str(err.messages[2], "f.json: routes[2]: here");
        is_str(err.messages[3], "f.json: top: at the top");
        is_str(err.messages[4], "f.json:1:2: raw");
    }
    config_error_clear(&err);
    is_int(err.count, 0);
}

static void test_keys(void)
{
    static const char *const allowed[] = {"request", "response", NULL};
    struct config_error err = {.file = "f.json"};
    json_t *v = parse("{\"type\": \"headers\", \"_note\": 1, \"requst\": {}, \"zzz\": 1}");
    config_path_push(&err, ".filters[0]");
    is_int(config_check_keys(&err, v, allowed), 2);
    is_int(err.count, 2);
    if (err.count == 2) {
        is_str(err.messages[0], "f.json: filters[0].requst: unknown key; did you mean "
                                "\"request\"? (expected one of: request, response)");
        is_str(err.messages[1], "f.json: filters[0].zzz: unknown key (expected one of: request, "
                                "response; keys starting with \"_\" are comments)");
    }
    /* The strict form does not accept "type". */
    is_int(config_check_keys_strict(&err, v, allowed), 3);
    json_decref(v);
    config_error_clear(&err);
}

static void test_getters(void)
{
    struct config_error err = {.file = "f.json"};
    json_t *v = parse("{\"n\": 5, \"big\": 70000, \"s\": \"text\", \"e\": \"\", \"b\": true,"
                      " \"f\": 1.5, \"o\": {}}");
    long long ll = -1;
    int i = 7;
    bool b = false;
    ok(config_get_llong(&err, v, "n", 1, 10, &ll) && ll == 5, "llong in range");
    ok(config_get_llong(&err, v, "absent", 1, 10, &ll) && ll == 5, "absent keeps the default");
    ok(!config_get_llong(&err, v, "big", 1, 65535, &ll) && ll == 5, "out of range");
    ok(!config_get_int(&err, v, "f", 0, &i) && i == 7, "a fraction is not an integer");
    ok(config_get_bool(&err, v, "b", &b) && b, "bool");
    ok(!config_get_bool(&err, v, "n", &b), "an integer is not a bool");
    is_str(config_get_string(&err, v, "s", true, true), "text");
    ok(config_get_string(&err, v, "e", false, true) == NULL, "empty refused");
    ok(config_get_string(&err, v, "gone", true, false) == NULL, "required and absent");
    ok(config_want_object(&err, json_object_get(v, "o"), NULL), "an object");
    ok(!config_want_object(&err, json_object_get(v, "s"), "{}"), "not an object");
    is_str(config_json_kind(json_object_get(v, "f")), "a number with a fraction");
    const char *const want[] = {
        "f.json: big: must be an integer from 1 to 65535, not 70000",
        "f.json: f: must be a non-negative integer, not a number with a fraction",
        "f.json: n: must be true or false, not an integer",
        "f.json: e: must not be empty",
        "f.json: gone: missing (a string is required here)",
        "f.json: must be an object, e.g. {}, not a string",
    };
    is_int(err.count, sizeof want / sizeof want[0]);
    for (size_t k = 0; k < err.count && k < sizeof want / sizeof want[0]; k++)
        is_str(err.messages[k], want[k]);
    json_decref(v);
    config_error_clear(&err);
}

static void test_mute(void)
{
    struct config_error err = {.file = "f.json"};
    size_t m = config_path_push(&err, ".listen[0].address");
    config_error_add(&err, "", "the variable is not set");
    config_error_mute(&err);
    config_error_add(&err, "", "follow-on");
    config_error_add(&err, ".deeper", "follow-on below");
    config_path_pop(&err, m);
    config_error_add(&err, ".listen[0].addressed", "a sibling with a longer name");
    config_error_add(&err, ".listen[0]", "the parent");
    is_int(err.count, 3);
    if (err.count == 3) {
        is_str(err.messages[0], "f.json: listen[0].address: the variable is not set");
        is_str(err.messages[1], "f.json: listen[0].addressed: a sibling with a longer name");
        is_str(err.messages[2], "f.json: listen[0]: the parent");
    }
    config_error_clear(&err);
    config_error_add(&err, ".listen[0].address", "after clear");
    is_int(err.count, 1);
    config_error_clear(&err);
}

static void test_token(void)
{
    ok(config_is_token("X-Request-Id", 12), "a field name");
    ok(config_is_token("GET", 3), "a method");
    ok(!config_is_token("", 0), "empty");
    ok(!config_is_token("a b", 3), "space");
    ok(!config_is_token("a:b", 3), "colon");
    ok(config_is_token("ab\n", 2), "only len bytes are read");
}

static void check_resolve(const struct config_error *err, const char *name, const char *want)
{
    char *got = config_resolve_path(err, name);
    is_str(got, want, "\"%s\" resolves", name);
    free(got);
}

static void test_resolve(void)
{
    struct config_error err = {.file = "f.json", .dir = "/etc/sluice"};
    check_resolve(&err, "keys/a.pem", "/etc/sluice/keys/a.pem");
    check_resolve(&err, "/abs/a.pem", "/abs/a.pem");
    err.dir = NULL;
    check_resolve(&err, "a.pem", "a.pem");

    /* The sandbox: every name lands in file_root by its last component. */
    err.dir = "/etc/sluice";
    err.file_root = "/sandbox";
    check_resolve(&err, "a.pem", "/sandbox/a.pem");
    check_resolve(&err, "keys/a.pem", "/sandbox/a.pem");
    check_resolve(&err, "/etc/shadow", "/sandbox/shadow");
    check_resolve(&err, "../../x", "/sandbox/x");
    check_resolve(&err, "..", "/sandbox/-");
    check_resolve(&err, "keys/.", "/sandbox/-");
    check_resolve(&err, "dir/", "/sandbox/-");
    check_resolve(&err, "", "/sandbox/-");
}

int main(void)
{
    test_resolve();
    test_paths();
    test_keys();
    test_getters();
    test_mute();
    test_token();
    return test_done();
}
