/*
 * test_basic_auth: the `basic_auth` filter (SPEC 4, SPEC 7, RFC 7617):
 * option errors by JSON path, htpasswd parsing, every supported crypt(3)
 * format with hashes made here by libxcrypt, and the per-worker credential
 * cache observed through the verification counter: a hit costs no
 * verification, a wrong password or unknown user always costs one, entries
 * expire after 60 s, and a new context (a reload) starts empty.
 */
#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "filters/basic_auth.h"
#include "base/arena.h"
#include "base/header.h"
#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"
#include "filter_test.h"
#include "test.h"

extern const struct filter_type filter_basic_auth;

static struct config_error err;
static char dir[256];

static const void *create(const char *json)
{
    return filter_create_json(&filter_basic_auth, json, "routes[0].filters[0]", dir, &err);
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

/* A crypt(3) hash of `password` with a fresh salt for `prefix` (count 0: the default cost). */
static char *make_hash(const char *prefix, unsigned long count, const char *password)
{
    static struct crypt_data cd;
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    ok(crypt_gensalt_rn(prefix, count, NULL, 0, salt, sizeof(salt)) != NULL, "gensalt %s", prefix);
    memset(&cd, 0, sizeof(cd));
    const char *h = crypt_rn(password, salt, &cd, (int)sizeof(cd));
    ok(h && h[0] == '$', "crypt %s", prefix);
    return strdup(h ? h : "");
}

static char *basic(const char *user_pass)
{
    static char out[512];
    memcpy(out, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *)out + 6, (const unsigned char *)user_pass,
                    (int)strlen(user_pass));
    return out;
}

struct run {
    struct exchange x;
    enum filter_verdict verdict;
};

static void run(struct run *r, const void *f, void *ctx, const char *authorization)
{
    memset(r, 0, sizeof(*r));
    struct exchange *x = &r->x;
    x->arena = arena_new(4096);
    header_list_init(&x->req_headers, x->arena, 8);
    header_list_init(&x->resp_headers, x->arena, 8);
    x->request_id = SLICE_LIT("req-1");
    header_add(&x->req_headers, SLICE_LIT("accept"), SLICE_LIT("*/*"));
    if (authorization)
        header_add(&x->req_headers, SLICE_LIT("Authorization"),
                   arena_slice_dup(x->arena, slice_cstr(authorization)));
    r->verdict = filter_basic_auth.on_request(f, ctx, x, NULL);
    ok(header_get(&x->req_headers, SLICE_LIT("authorization")) == NULL,
       "Authorization never forwarded");
}

static void done(struct run *r)
{
    arena_free(r->x.arena);
}

/* One request: its consumer ("" when refused) and how many verifications it cost. */
static void expect(const void *f, void *ctx, const char *authorization, const char *consumer,
                   unsigned cost, const char *realm)
{
    uint64_t before = basic_auth_verifications();
    struct run r;
    run(&r, f, ctx, authorization);
    if (consumer) {
        ok(r.verdict == FILTER_CONTINUE, "%s passes", authorization ? authorization : "(none)");
        is_slice(r.x.consumer, consumer);
    } else {
        ok(r.verdict == FILTER_RESPOND && r.x.status == 401, "%s refused",
           authorization ? authorization : "(none)");
        is_int(r.x.consumer.len, 0);
        const struct slice *c = header_get(&r.x.resp_headers, SLICE_LIT("www-authenticate"));
        char want[256];
        snprintf(want, sizeof(want), "Basic realm=\"%s\", charset=\"UTF-8\"", realm);
        ok(c != NULL, "challenge present");
        if (c)
            is_slice(*c, want);
    }
    is_int(basic_auth_verifications() - before, cost);
    done(&r);
}

static void test_errors(void)
{
    char *bcrypt = make_hash("$2b$", 4, "pw");
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"type\": \"basic_auth\", \"realm\": \"a\\\"b\", \"users\": {"
             "\"md5\": \"$1$abcdefgh$0123456789012345678901\", \"sha\": "
             "\"{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\","
             " \"short\": \"$2b$10$abc\", \"cheap\": \"$2b$03$%s\", \"six\": \"$6$salt$tooshort\","
             " \"a:b\": \"%s\", \"num\": 5, \"ok\": \"%s\"}, \"user\": {}}",
             bcrypt + 7, bcrypt, bcrypt);
    ok(create(json) == NULL, "bad options refused");
    has_error("sluice.json: routes[0].filters[0].realm: at most 200 characters, without '\"'");
    has_error("routes[0].filters[0].users.md5: the hash of user \"md5\" has an unsupported hash "
              "format \"$1$\": use bcrypt ($2b$, e.g. htpasswd -B), yescrypt ($y$), "
              "sha512-crypt ($6$) or sha256-crypt ($5$)");
    has_error("routes[0].filters[0].users.sha: the hash of user \"sha\" is not a supported "
              "crypt(3) hash: use bcrypt");
    has_error("routes[0].filters[0].users.short: the hash of user \"short\" is not a well-formed "
              "bcrypt hash");
    has_error("routes[0].filters[0].users.cheap: the hash of user \"cheap\" is not a "
              "well-formed bcrypt hash ($2b$NN$ and 53 characters, cost 04 to 31)");
    has_error("routes[0].filters[0].users.six: the hash of user \"six\" is not a well-formed $6$ "
              "hash");
    has_error("routes[0].filters[0].users[\"a:b\"]: a user name must be non-empty, without ':'");
    has_error("routes[0].filters[0].users.num: must be a crypt(3) hash string");
    has_error("routes[0].filters[0].user: unknown key");
    is_int(err.count, 9);

    ok(create("{\"type\": \"basic_auth\"}") == NULL, "no users refused");
    has_error("routes[0].filters[0]: needs \"users\"");
    ok(create("{\"type\": \"basic_auth\", \"users\": {}, \"htpasswd_file\": \"x\"}") == NULL,
       "both refused");
    has_error("routes[0].filters[0]: has both \"users\" and \"htpasswd_file\"");
    ok(create("{\"type\": \"basic_auth\", \"users\": {}}") == NULL, "empty refused");
    has_error("routes[0].filters[0].users: must be a non-empty object");
    ok(create("{\"type\": \"basic_auth\", \"htpasswd_file\": \"nope.htpasswd\"}") == NULL,
       "missing file");
    has_error("routes[0].filters[0].htpasswd_file: cannot read \"");
    has_error("/nope.htpasswd\": No such file or directory");

    /* htpasswd: comments, blank lines and CRLF are fine; each bad line is named. */
    char text[1024];
    snprintf(text, sizeof(text),
             "# users\n\nalice:%s\r\nbob:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\nnocolon\n"
             "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nalice:%s\n",
             bcrypt, bcrypt);
    write_file("bad.htpasswd", text);
    ok(create("{\"type\": \"basic_auth\", \"htpasswd_file\": \"bad.htpasswd\"}") == NULL,
       "bad htpasswd refused");
    has_error("/bad.htpasswd\" line 4: the hash of user \"bob\" has an unsupported hash format "
              "\"$apr1$\"");
    has_error("/bad.htpasswd\" line 5: expected \"name:hash\"");
    has_error("/bad.htpasswd\" line 6: the hash of user \"carol\" is not a supported crypt(3)");
    is_int(err.count, 3);
    snprintf(text, sizeof(text), "alice:%s\nalice:%s\n", bcrypt, bcrypt);
    write_file("dup.htpasswd", text);
    ok(create("{\"type\": \"basic_auth\", \"htpasswd_file\": \"dup.htpasswd\"}") == NULL,
       "duplicate refused");
    has_error("routes[0].filters[0].htpasswd_file: user \"alice\" is listed twice");
    write_file("empty.htpasswd", "# nobody\n");
    ok(create("{\"type\": \"basic_auth\", \"htpasswd_file\": \"empty.htpasswd\"}") == NULL,
       "empty refused");
    has_error("/empty.htpasswd\" lists no users");
    free(bcrypt);
}

/* Every supported format verifies, through an htpasswd file made of hashes generated here. */
static void test_formats(void)
{
    static const struct {
        const char *prefix;
        unsigned long count;
    } formats[] = {{"$2b$", 4}, {"$2y$", 4}, {"$2a$", 4}, {"$y$", 0}, {"$6$", 1000}, {"$5$", 1000}};
    char text[4096] = "";
    size_t n = 0;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        char pw[32];
        snprintf(pw, sizeof(pw), "secret-%zu", i);
        char *h = make_hash(formats[i].prefix, formats[i].count, pw);
        n += (size_t)snprintf(text + n, sizeof(text) - n, "user%zu:%s\n", i, h);
        free(h);
    }
    write_file("all.htpasswd", text);
    const void *f = create("{\"type\": \"basic_auth\", \"realm\": \"ops area\", "
                           "\"htpasswd_file\": \"all.htpasswd\"}");
    ok(f != NULL, "created");
    if (!f)
        return;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        char cred[64], user[16];
        snprintf(user, sizeof(user), "user%zu", i);
        snprintf(cred, sizeof(cred), "user%zu:secret-%zu", i, i);
        expect(f, NULL, basic(cred), user, 1, "ops area"); /* no context: no cache */
        snprintf(cred, sizeof(cred), "user%zu:secret-%zu", i, i + 1);
        expect(f, NULL, basic(cred), NULL, 1, "ops area");
    }
    filter_basic_auth.destroy(f);
}

static void test_cache(void)
{
    char *alice = make_hash("$2b$", 4, "wonderland");
    char *bob = make_hash("$6$", 1000, "builder:with:colons");
    char json[512];
    snprintf(json, sizeof(json),
             "{\"type\": \"basic_auth\", \"users\": {\"alice\": \"%s\", "
             "\"bob\": \"%s\"}}",
             alice, bob);
    const void *f = create(json);
    ok(f != NULL, "created");
    free(alice);
    free(bob);
    if (!f)
        return;
    void *ctx = filter_basic_auth.context_new(f, NULL);
    ok(ctx != NULL, "context");
    char good[256];
    snprintf(good, sizeof(good), "%s", basic("alice:wonderland"));

    expect(f, ctx, good, "alice", 1, "sluice");
    expect(f, ctx, good, "alice", 0, "sluice"); /* remembered: no verification */
    expect(f, ctx, good, "alice", 0, "sluice");
    /* A wrong password after a right one still costs a full verification and fails. */
    expect(f, ctx, basic("alice:wonderlanD"), NULL, 1, "sluice");
    expect(f, ctx, basic("alice:wonderlanD"), NULL, 1, "sluice"); /* failures not remembered */
    /* An unknown user costs a verification too (no timing shortcut). */
    expect(f, ctx, basic("mallory:wonderland"), NULL, 1, "sluice");
    /* The password is everything after the first colon. */
    expect(f, ctx, basic("bob:builder:with:colons"), "bob", 1, "sluice");
    expect(f, ctx, basic("bob:builder:with:colons"), "bob", 0, "sluice");
    /* Malformed credentials are refused without a verification. */
    expect(f, ctx, NULL, NULL, 0, "sluice");
    expect(f, ctx, "Bearer abc", NULL, 0, "sluice");
    expect(f, ctx, "Basic", NULL, 0, "sluice");
    expect(f, ctx, "Basic YWxpY2U6d29uZGVybGFuZA", NULL, 0, "sluice"); /* no padding */
    expect(f, ctx, "Basic YWxpY2U6d29uZGVy*GFuZA==", NULL, 0, "sluice");
    expect(f, ctx, basic("alicewonderland"), NULL, 0, "sluice"); /* no colon */
    /* The scheme is case-insensitive; another spelling is another cache entry. */
    char lower[256];
    snprintf(lower, sizeof(lower), "basic %s", good + 6);
    expect(f, ctx, lower, "alice", 1, "sluice");
    expect(f, ctx, lower, "alice", 0, "sluice");

    /* Entries expire 60 s after their verification. */
    basic_auth_test_advance_clock(BASIC_AUTH_CACHE_TTL_MS - 1000);
    expect(f, ctx, good, "alice", 0, "sluice");
    basic_auth_test_advance_clock(1000);
    expect(f, ctx, good, "alice", 1, "sluice");
    expect(f, ctx, good, "alice", 0, "sluice");

    /* A reload gives the worker a new context: it starts empty. */
    void *ctx2 = filter_basic_auth.context_new(f, NULL);
    expect(f, ctx2, good, "alice", 1, "sluice");
    expect(f, ctx2, good, "alice", 0, "sluice");
    expect(f, ctx, good, "alice", 0, "sluice"); /* contexts are independent */
    filter_basic_auth.context_free(f, ctx2);

    /* A flood of distinct valid values stays within the fixed-size cache; the latest are hits. */
    char variant[300];
    for (int i = 0; i < 8; i++) {
        snprintf(variant, sizeof(variant), "Basic %.*s%s", i, "        ", good + 6);
        expect(f, ctx, variant, "alice", i == 0 ? 0 : 1, "sluice");
    }
    filter_basic_auth.context_free(f, ctx);
    filter_basic_auth.destroy(f);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/sluice-test-basic-auth-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_errors();
    test_formats();
    test_cache();
    config_error_clear(&err);
    const char *files[] = {"bad.htpasswd", "dup.htpasswd", "empty.htpasswd", "all.htpasswd"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return test_done();
}
