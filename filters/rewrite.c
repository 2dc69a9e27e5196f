/*
 * rewrite: the `rewrite` filter (SPEC 4, SPEC 7 "rewrite"): changes the
 * path and the Host the upstream sees.
 *
 * Order (SPEC 7): `path.regex` → `strip_prefix` → `add_prefix`. The regex
 * sees the normalised path without the query, and the query is kept as is.
 * The first match of the regex is replaced by `path.replace`, in which $0
 * is the whole match and $1..$9 the groups (an unset group is empty); any
 * other '$' is literal, as everywhere in the configuration (where "$$" was
 * already turned into "$" when the file was read); the rest of the path around the match is kept
 * (anchor the regex with ^ and $ to replace the whole path). `strip_prefix` is segment-aware like
 * route prefixes: "/api" strips "/api" and "/api/x", never "/apix"; stripping the whole path leaves
 * "/". `add_prefix` is joined without doubling the slash. A result that does not start with '/'
 * gets one, so the upstream always receives an origin-form path. `host`
 * replaces the Host field (HTTP/2 upstreams get it as :authority); the
 * X-Forwarded-Host the gateway adds keeps the client's.
 *
 * The regex is compiled (JIT when available) in create(); the replacement
 * is split into literal pieces and group numbers there too, and checked to
 * contain only characters valid in a path, so a rewrite cannot smuggle a
 * query, a fragment or a header break. The request path allocates only
 * from the exchange's arena (PCRE2's match data included).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "base/arena.h"
#include "base/header.h"
#include "base/slice.h"
#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"

/* One piece of the replacement: literal text when group < 0, else group `group`. */
struct piece {
    struct slice text;
    int group;
};

struct rewrite_filter {
    pcre2_code *regex; /* NULL: no path.regex */
    uint32_t pairs;    /* ovector pairs needed: captures + 1 */
    char *replace;     /* the replacement's source; literal pieces point into it */
    struct piece *pieces;
    size_t num_pieces;
    char *strip; /* without a trailing '/'; NULL: none */
    size_t strip_len;
    char *add; /* NULL: none */
    size_t add_len;
    char *host; /* NULL: keep the client's */
    size_t host_len;
};

/* RFC 3986 pchar plus '/': unreserved, sub-delims, ':', '@', and '%' for escapes. */
static bool is_path_char(char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("-._~!$&'()*+,;=:@/%", c) != NULL;
}

/* RFC 3986 host [":" port]: reg-name, IPv4 or an IP-literal in brackets. */
static bool is_host_char(char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("-._~!$&'()*+,;=:%[]", c) != NULL;
}

static void rewrite_destroy(const void *instance)
{
    struct rewrite_filter *f = (struct rewrite_filter *)instance;
    if (!f)
        return;
    pcre2_code_free(f->regex);
    free(f->replace);
    free(f->pieces);
    free(f->strip);
    free(f->add);
    free(f->host);
    free(f);
}

/* Splits the replacement into pieces; reports under ".path.replace". */
static int parse_replace(struct rewrite_filter *f, const char *src, uint32_t captures,
                         struct config_error *err)
{
    size_t len = strlen(src);
    f->replace = strdup(src);
    f->pieces = calloc(len + 1, sizeof(*f->pieces));
    if (!f->replace || !f->pieces) {
        config_error_add(err, ".path.replace", "out of memory");
        return -1;
    }
    const char *s = f->replace;
    size_t lit = 0;
    int rc = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '$') {
            if (!is_path_char(s[i])) {
                config_error_add(err, ".path.replace",
                                 "byte 0x%02x ('%c') is not allowed in a path; write it "
                                 "percent-encoded",
                                 (unsigned char)s[i], s[i] >= 0x21 && s[i] < 0x7f ? s[i] : '?');
                return -1;
            }
            continue;
        }
        if (i + 1 >= len || s[i + 1] < '0' || s[i + 1] > '9')
            continue; /* a literal '$', as everywhere in the config (SPEC 2) */
        if (i > lit)
            f->pieces[f->num_pieces++] = (struct piece){slice_make(s + lit, i - lit), -1};
        int g = s[i + 1] - '0';
        if ((uint32_t)g > captures) {
            config_error_add(err, ".path.replace",
                             "$%d names a group the regex does not have (it has %u)", g, captures);
            rc = -1;
        }
        f->pieces[f->num_pieces++] = (struct piece){slice_make("", 0), g};
        i++;
        lit = i + 1;
    }
    if (len > lit)
        f->pieces[f->num_pieces++] = (struct piece){slice_make(s + lit, len - lit), -1};
    return rc;
}

static int parse_path(struct rewrite_filter *f, const json_t *path, struct config_error *err)
{
    static const char *const keys[] = {"regex", "replace", NULL};
    if (!json_is_object(path)) {
        config_error_add(err, ".path",
                         "must be an object, e.g. {\"regex\": \"^/api/(.*)\", \"replace\": "
                         "\"/v1/$1\"}");
        return -1;
    }
    size_t mark = config_path_push(err, ".path");
    int rc = config_check_keys_strict(err, path, keys) ? -1 : 0;
    const char *regex = config_get_string(err, path, "regex", true, true);
    const char *replace = config_get_string(err, path, "replace", true, false);
    config_path_pop(err, mark);
    if (!regex || !replace)
        return -1;

    int code;
    PCRE2_SIZE offset;
    f->regex = pcre2_compile((PCRE2_SPTR)regex, PCRE2_ZERO_TERMINATED, 0, &code, &offset, NULL);
    if (!f->regex) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", code);
        config_error_add(err, ".path.regex", "invalid regular expression at offset %zu: %s",
                         (size_t)offset, (const char *)msg);
        return -1;
    }
    (void)pcre2_jit_compile(f->regex, PCRE2_JIT_COMPLETE); /* without JIT it is only slower */
    uint32_t captures = 0;
    pcre2_pattern_info(f->regex, PCRE2_INFO_CAPTURECOUNT, &captures);
    f->pairs = captures + 1;
    if (parse_replace(f, replace, captures, err) < 0)
        rc = -1;
    return rc;
}

/* Reads a "/..." option into *out (without a trailing '/' when `trim`). */
static int parse_prefix(const json_t *options, const char *key, bool trim, char **out,
                        size_t *out_len, struct config_error *err)
{
    char sub[32];
    snprintf(sub, sizeof(sub), ".%s", key);
    if (!json_object_get(options, key))
        return 0;
    const char *v = config_get_string(err, options, key, false, true);
    if (!v)
        return -1;
    size_t len = strlen(v);
    if (v[0] != '/') {
        config_error_add(err, sub, "must start with '/', e.g. \"/api\"");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_path_char(v[i]) || v[i] == '%') {
            config_error_add(err, sub, "'%c' is not allowed here: use plain path characters",
                             v[i] >= 0x21 && v[i] < 0x7f ? v[i] : '?');
            return -1;
        }
    }
    while (trim && len > 1 && v[len - 1] == '/')
        len--;
    if (trim && len == 1) {
        config_error_add(err, sub, "\"/\" would strip nothing; remove the option");
        return -1;
    }
    *out = strndup(v, len);
    if (!*out) {
        config_error_add(err, sub, "out of memory");
        return -1;
    }
    *out_len = len;
    return 0;
}

static const void *rewrite_create(const json_t *options, struct config_error *err)
{
    static const char *const keys[] = {"path", "strip_prefix", "add_prefix", "host", NULL};
    struct rewrite_filter *f = calloc(1, sizeof(*f));
    if (!f) {
        config_error_add(err, "", "out of memory");
        return NULL;
    }
    int rc = config_check_keys(err, options, keys) ? -1 : 0;
    const json_t *path = json_object_get(options, "path");
    if (path && parse_path(f, path, err) < 0)
        rc = -1;
    if (parse_prefix(options, "strip_prefix", true, &f->strip, &f->strip_len, err) < 0)
        rc = -1;
    if (parse_prefix(options, "add_prefix", false, &f->add, &f->add_len, err) < 0)
        rc = -1;
    if (json_object_get(options, "host")) {
        const char *h = config_get_string(err, options, "host", false, true);
        size_t len = h ? strlen(h) : 0;
        for (size_t i = 0; h && i < len; i++) {
            if (!is_host_char(h[i])) {
                config_error_add(err, ".host",
                                 "\"%s\" is not a host[:port] (e.g. \"api.internal:8080\")", h);
                h = NULL;
            }
        }
        if (!h)
            rc = -1;
        else if (!(f->host = strdup(h)))
            rc = -1;
        f->host_len = len;
    }
    if (rc == 0 && !f->regex && !f->strip && !f->add && !f->host) {
        config_error_add(err, "",
                         "rewrites nothing: give \"path\", \"strip_prefix\", \"add_prefix\" or "
                         "\"host\"");
        rc = -1;
    }
    if (rc < 0) {
        rewrite_destroy(f);
        return NULL;
    }
    return f;
}

/* PCRE2 allocates the match data from the exchange's arena, which frees it with the rest. */
static void *on_pcre2_malloc(PCRE2_SIZE size, void *arena)
{
    return arena_alloc(arena, size);
}

static void on_pcre2_free(void *block, void *arena)
{
    (void)block;
    (void)arena;
}

/* Applies path.regex to `path`; returns it unchanged when the regex does not match. */
static struct slice apply_regex(const struct rewrite_filter *f, struct arena *a, struct slice path)
{
    pcre2_general_context *gc = pcre2_general_context_create(on_pcre2_malloc, on_pcre2_free, a);
    pcre2_match_data *md = gc ? pcre2_match_data_create(f->pairs, gc) : NULL;
    if (!md)
        return path;
    int rc = pcre2_match(f->regex, (PCRE2_SPTR)path.base, path.len, 0, 0, md, NULL);
    if (rc <= 0)
        return path; /* no match, or a matching limit: the path stays */
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    struct slice small[24];
    size_t n = f->num_pieces + 2;
    struct slice *parts = n <= 24 ? small : arena_alloc(a, n * sizeof(*parts));
    size_t k = 0;
    parts[k++] = slice_make(path.base, ov[0]);
    for (size_t i = 0; i < f->num_pieces; i++) {
        const struct piece *p = &f->pieces[i];
        if (p->group < 0) {
            parts[k++] = p->text;
            continue;
        }
        PCRE2_SIZE s = ov[2 * p->group], e = ov[2 * p->group + 1];
        parts[k++] = (p->group < rc && s != PCRE2_UNSET) ? slice_make(path.base + s, e - s)
                                                         : slice_make("", 0);
    }
    parts[k++] = slice_make(path.base + ov[1], path.len - ov[1]);
    return arena_concat(a, parts, k);
}

static enum filter_verdict rewrite_on_request(const void *instance, void *context,
                                              struct exchange *x, void *state)
{
    const struct rewrite_filter *f = instance;
    (void)context;
    (void)state;
    struct slice path = x->path;
    if (f->regex)
        path = apply_regex(f, x->arena, path);
    if (f->strip && path.len >= f->strip_len && memcmp(path.base, f->strip, f->strip_len) == 0 &&
        (path.len == f->strip_len || path.base[f->strip_len] == '/')) {
        path = path.len == f->strip_len
                   ? SLICE_LIT("/")
                   : slice_make(path.base + f->strip_len, path.len - f->strip_len);
    }
    if (f->add) {
        struct slice rest = path;
        if (f->add_len && f->add[f->add_len - 1] == '/' && rest.len && rest.base[0] == '/')
            rest = slice_make(rest.base + 1, rest.len - 1);
        struct slice parts[2] = {slice_make(f->add, f->add_len), rest};
        path = arena_concat(x->arena, parts, 2);
    }
    if (path.len == 0 || path.base[0] != '/') {
        struct slice parts[2] = {SLICE_LIT("/"), path};
        path = arena_concat(x->arena, parts, 2);
    }
    x->path = path;
    if (f->host)
        header_set(&x->req_headers, SLICE_LIT("Host"), slice_make(f->host, f->host_len));
    return FILTER_CONTINUE;
}

const struct filter_type filter_rewrite = {
    .name = "rewrite",
    .state_size = 0,
    .create = rewrite_create,
    .destroy = rewrite_destroy,
    .on_request = rewrite_on_request,
};
