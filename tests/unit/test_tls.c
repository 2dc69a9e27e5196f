/* tls.c: certificate name matching (SNI) and option errors that need no files. */
#include <stdlib.h>

#include "conf/config.h"
#include "test.h"
#include "net/tls.h"

static void test_name_match(void)
{
    ok(tls_name_match("api.test", "api.test"), "exact");
    ok(tls_name_match("API.test", "api.TEST"), "case-insensitive");
    ok(tls_name_match("api.test", "api.test."), "trailing dot");
    ok(!tls_name_match("api.test", "www.api.test"), "exact is not a suffix");
    ok(!tls_name_match("api.test", "api.tes"), "shorter");
    ok(tls_name_match("*.admin.test", "x.admin.test"), "wildcard, one label");
    ok(tls_name_match("*.admin.test", "X-1.Admin.Test"), "wildcard, case");
    ok(!tls_name_match("*.admin.test", "a.b.admin.test"), "wildcard, two labels");
    ok(!tls_name_match("*.admin.test", "admin.test"), "wildcard, no label");
    ok(!tls_name_match("*.admin.test", ".admin.test"), "wildcard, empty label");
    ok(!tls_name_match("*.admin.test", "xadmin.test"), "wildcard, no dot");
    ok(!tls_name_match("a*.admin.test", "ab.admin.test"), "partial wildcards are not honoured");
}

static int has(const struct config_error *err, const char *text)
{
    for (size_t i = 0; i < err->count; i++)
        if (strstr(err->messages[i], text))
            return 1;
    return 0;
}

static void test_option_errors(void)
{
    struct config_error err = {.file = "sluice.json", .dir = "."};
    snprintf(err.path, sizeof err.path, "listen[0]");
    json_t *v = json_loads("{\"certificates\": [{\"cert\": \"a.pem\"}], \"protocols\": [\"spdy\"],"
                           " \"min_version\": \"SSLv3\", \"ciphers\": \"x\"}",
                           0, NULL);
    ok(tls_server_build(&err, v, NULL) == NULL, "refused");
    ok(has(&err, "listen[0].tls.certificates[0].key: missing"), "key missing");
    ok(has(&err, "listen[0].tls.protocols[0]: unknown protocol \"spdy\""), "protocol");
    ok(has(&err, "listen[0].tls.min_version: unknown version \"SSLv3\""), "version");
    ok(has(&err, "listen[0].tls.ciphers: unknown key"), "unknown key");
    is_str(err.path, "listen[0]");
    json_decref(v);
    config_error_clear(&err);

    snprintf(err.path, sizeof err.path, "upstreams.u");
    v = json_loads("{\"verify\": false, \"server_name\": \"a b\"}", 0, NULL);
    ok(tls_client_build(&err, v) == NULL, "refused");
    ok(has(&err, "upstreams.u.tls.server_name: \"a b\" is not a host name"), "server_name");
    is_str(err.path, "upstreams.u");
    json_decref(v);
    config_error_clear(&err);

    v = json_loads("{\"verify\": false}", 0, NULL);
    struct tls_client *tc = tls_client_build(&err, v);
    ok(tc != NULL && err.count == 0, "verify false needs nothing else");
    tls_client_free(tc);
    json_decref(v);
    config_error_clear(&err);
}

int main(void)
{
    test_name_match();
    test_option_errors();
    return test_done();
}
