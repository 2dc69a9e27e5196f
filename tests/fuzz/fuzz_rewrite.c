/*
 * fuzz_rewrite: the `rewrite` filter's request hook on arbitrary paths,
 * with fixed rules, and with rules from the input too. The first byte
 * picks the mode:
 *   even: one of the fixed filters below (byte / 2 % count) rewrites the
 *         rest of the input as the path;
 *   odd:  the rest is split at NUL bytes into regex, replace, strip_prefix,
 *         add_prefix, host and the path; the options that create() accepts
 *         then rewrite the path (the config loader's checks are the only
 *         ones between a rule and a request).
 * Checks: the result starts with '/', and a path made only of path
 * characters stays so (a rewrite cannot smuggle a query, a fragment or a
 * header break). The path lives in an exactly sized buffer.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/arena.h"
#include "base/header.h"
#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern const struct filter_type filter_rewrite;

static const char *const fixed_rules[] = {
    "{\"path\": {\"regex\": \"^/api/(\\\\w+)(/(\\\\d+))?\", \"replace\": \"/v1/$1$2/$3-$0$x$\"}}",
    "{\"path\": {\"regex\": \"old\", \"replace\": \"new\"}}",
    ("{\"path\": {\"regex\": \"^/api/(.*)\", \"replace\": \"$1\"}, \"strip_prefix\": \"/v1/\", "
     "\"add_prefix\": \"/svc/\", \"host\": \"api.internal:8080\"}"),
    "{\"strip_prefix\": \"/api\", \"add_prefix\": \"/\"}",
    "{\"path\": {\"regex\": \"(?i)/(?<user>[^/]+)/(.+?)(/|$)\", \"replace\": \"/$2/$1$3\"}}",
    "{\"path\": {\"regex\": \"/+\", \"replace\": \"/\"}, \"add_prefix\": \"/a/b/\"}",
};
#define NUM_FIXED (sizeof fixed_rules / sizeof fixed_rules[0])

static const void *fixed[NUM_FIXED];

static const void *create(json_t *options)
{
    struct config_error err = {0};
    const void *f = filter_rewrite.create(options, &err);
    if (!f && !err.count)
        abort(); /* a refusal always says why */
    config_error_clear(&err);
    return f;
}

static bool is_path_char(char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("-._~!$&'()*+,;=:@/%", c) != NULL;
}

static bool all_path_chars(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_path_char(s[i]))
            return false;
    return true;
}

static void run(const void *f, const uint8_t *path, size_t len)
{
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return;
    memcpy(copy, path, len);
    struct exchange x;
    memset(&x, 0, sizeof x);
    x.arena = arena_new(1024);
    header_list_init(&x.req_headers, x.arena, 4);
    header_set(&x.req_headers, SLICE_LIT("Host"), SLICE_LIT("gw.example"));
    x.path = slice_make(copy, len);
    if (filter_rewrite.on_request(f, NULL, &x, NULL) != FILTER_CONTINUE)
        abort();
    if (x.path.len == 0 || x.path.base[0] != '/')
        abort();
    if (all_path_chars(copy, len) && !all_path_chars(x.path.base, x.path.len))
        abort();
    if (x.req_headers.count != 1)
        abort();
    arena_free(x.arena);
    free(copy);
}

/* The next NUL-terminated field of data[*pos..size), or the rest. */
static json_t *field(const uint8_t *data, size_t size, size_t *pos)
{
    const uint8_t *start = data + *pos;
    const uint8_t *nul = memchr(start, 0, size - *pos);
    size_t n = nul ? (size_t)(nul - start) : size - *pos;
    *pos += n + (nul ? 1 : 0);
    return n ? json_stringn((const char *)start, n) : NULL; /* empty: option absent */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        for (size_t i = 0; i < NUM_FIXED; i++) {
            json_t *o = json_loads(fixed_rules[i], 0, NULL);
            fixed[i] = o ? create(o) : NULL;
            json_decref(o);
            if (!fixed[i])
                abort();
        }
        ready = true;
    }
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    if (!(mode & 1)) {
        run(fixed[(mode >> 1) % NUM_FIXED], data + 1, size - 1);
        return 0;
    }
    size_t pos = 1;
    json_t *regex = field(data, size, &pos), *replace = field(data, size, &pos);
    json_t *strip = field(data, size, &pos), *add = field(data, size, &pos);
    json_t *host = field(data, size, &pos);
    json_t *options = json_object();
    if (regex || replace) {
        json_t *p = json_object();
        if (regex)
            json_object_set_new(p, "regex", regex);
        if (replace)
            json_object_set_new(p, "replace", replace);
        json_object_set_new(options, "path", p);
    }
    if (strip)
        json_object_set_new(options, "strip_prefix", strip);
    if (add)
        json_object_set_new(options, "add_prefix", add);
    if (host)
        json_object_set_new(options, "host", host);
    const void *f = create(options);
    json_decref(options);
    if (f) {
        run(f, data + pos, size - pos);
        filter_rewrite.destroy(f);
    }
    return 0;
}
