/*
 * router: route table compilation, request matching, path normalisation and
 * redirect expansion. The contract is in router.h; this file adds the index.
 *
 * The index (struct router) buckets every prefix/path route under the first
 * segment of its path: a request can only match such a route when its own
 * first segment is the same, because prefix matching is segment-aware. Routes
 * whose path condition cannot be bucketed (no path condition, a regex, the
 * prefix "/", a path not starting with '/') sit in one "always" list. Both
 * lists hold route indexes in ascending order, and router_match walks them
 * merged, so the first route in table order whose conditions all hold wins,
 * exactly as if every route were tried in turn.
 */
#include "core/router.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "conf/config.h"

struct route_bucket {
    struct slice segment; /* points into the route's path (snapshot memory) */
    size_t *routes;       /* ascending route indexes */
    size_t count;
    size_t cap;
};

struct router {
    struct route_bucket *buckets; /* open addressing; segment.base NULL = free slot */
    size_t num_buckets;           /* a power of two, or 0 */
    size_t *always;               /* ascending route indexes checked for every request */
    size_t num_always;
    uint32_t max_pairs; /* largest ovector any pattern needs, for one shared match data */
};

/* ---- compiling ---- */

/* FNV-1a over a segment; the table is small and keys are short. */
static uint64_t segment_hash(struct slice s)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < s.len; i++) {
        h ^= (unsigned char)s.base[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The first segment of a path that starts with '/': the bytes up to the next '/' or the end. */
static struct slice first_segment(struct slice path)
{
    const char *start = path.base + 1;
    const char *end = memchr(start, '/', path.len - 1);
    return slice_make(start, end ? (size_t)(end - start) : path.len - 1);
}

/*
 * The bucket key of a route, or false when the route must always be checked.
 * A prefix "/" matches every path, so it cannot be bucketed; an exact path
 * "/" has the empty first segment, like the request "/".
 */
static bool route_key(const struct route_config *r, struct slice *key)
{
    if ((r->match != MATCH_PREFIX && r->match != MATCH_PATH) || !r->path || r->path[0] != '/')
        return false;
    if (r->match == MATCH_PREFIX && strcmp(r->path, "/") == 0)
        return false;
    *key = first_segment(slice_cstr(r->path));
    return true;
}

static int push_index(size_t **list, size_t *count, size_t *cap, size_t idx)
{
    if (*count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        size_t *n = realloc(*list, ncap * sizeof(*n));
        if (!n)
            return -1;
        *list = n;
        *cap = ncap;
    }
    (*list)[(*count)++] = idx;
    return 0;
}

static struct route_bucket *bucket_slot(const struct router *r, struct slice key)
{
    if (r->num_buckets == 0)
        return NULL;
    size_t mask = r->num_buckets - 1;
    for (size_t i = segment_hash(key) & mask;; i = (i + 1) & mask) {
        struct route_bucket *b = &r->buckets[i];
        if (!b->segment.base || slice_eq(b->segment, key))
            return b;
    }
}

static void router_destroy(struct router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->num_buckets; i++)
        free(r->buckets[i].routes);
    free(r->buckets);
    free(r->always);
    free(r);
}

static struct router *router_build(const struct snapshot *s)
{
    struct router *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    size_t keyed = 0, always_cap = 0;
    for (size_t i = 0; i < s->num_routes; i++) {
        struct slice key;
        if (route_key(&s->routes[i], &key))
            keyed++;
    }
    if (keyed) {
        /* At most half full, so probing always reaches a free slot. */
        r->num_buckets = 8;
        while (r->num_buckets < keyed * 2)
            r->num_buckets *= 2;
        r->buckets = calloc(r->num_buckets, sizeof(*r->buckets));
        if (!r->buckets)
            goto fail;
    }
    for (size_t i = 0; i < s->num_routes; i++) {
        struct slice key;
        if (!route_key(&s->routes[i], &key)) {
            if (push_index(&r->always, &r->num_always, &always_cap, i) < 0)
                goto fail;
            continue;
        }
        struct route_bucket *b = bucket_slot(r, key);
        b->segment = key;
        if (push_index(&b->routes, &b->count, &b->cap, i) < 0)
            goto fail;
    }
    return r;
fail:
    router_destroy(r);
    return NULL;
}

/*
 * Compiles `source` into *code (JIT when available; a JIT failure only costs
 * speed). On error records it under err->path + `subpath` and returns -1.
 */
static int compile_regex(const char *source, pcre2_code **code, uint32_t *max_pairs,
                         struct config_error *err, const char *subpath)
{
    int errcode;
    PCRE2_SIZE offset;
    *code = pcre2_compile((PCRE2_SPTR)source, PCRE2_ZERO_TERMINATED, 0, &errcode, &offset, NULL);
    if (!*code) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(errcode, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", errcode);
        config_error_add(err, subpath, "invalid regular expression at offset %zu: %s",
                         (size_t)offset, (const char *)msg);
        return -1;
    }
    (void)pcre2_jit_compile(*code, PCRE2_JIT_COMPLETE);
    uint32_t captures = 0;
    pcre2_pattern_info(*code, PCRE2_INFO_CAPTURECOUNT, &captures);
    if (captures + 1 > *max_pairs)
        *max_pairs = captures + 1;
    return 0;
}

static int compile_values(struct match_value *v, size_t n, const char *what, uint32_t *max_pairs,
                          struct config_error *err)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (!v[i].regex_source || v[i].regex)
            continue;
        char step[256], sub[300];
        config_path_member(step, sizeof(step), v[i].name ? v[i].name : "");
        snprintf(sub, sizeof(sub), ".%s%s.regex", what, step);
        if (compile_regex(v[i].regex_source, &v[i].regex, max_pairs, err, sub) < 0)
            rc = -1;
    }
    return rc;
}

int router_compile(struct snapshot *s, struct config_error *err)
{
    char saved[sizeof(err->path)];
    uint32_t max_pairs = 1;
    int rc = 0;

    memcpy(saved, err->path, sizeof(saved));
    for (size_t i = 0; i < s->num_routes; i++) {
        struct route_config *r = &s->routes[i];
        snprintf(err->path, sizeof(err->path), "routes[%zu].match", i);
        if (r->match == MATCH_REGEX && r->regex_source && !r->regex &&
            compile_regex(r->regex_source, &r->regex, &max_pairs, err, ".regex") < 0)
            rc = -1;
        if (compile_values(r->headers, r->num_headers, "headers", &max_pairs, err) < 0)
            rc = -1;
        if (compile_values(r->query, r->num_query, "query", &max_pairs, err) < 0)
            rc = -1;
    }
    memcpy(err->path, saved, sizeof(saved));
    if (rc < 0)
        return -1;

    router_destroy(s->router);
    s->router = router_build(s);
    if (!s->router) {
        config_error_add(err, "", "out of memory while building the route index");
        return -1;
    }
    s->router->max_pairs = max_pairs;
    return 0;
}

static void free_values(struct match_value *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        pcre2_code_free(v[i].regex);
        v[i].regex = NULL;
    }
}

void router_free(struct snapshot *s)
{
    if (!s)
        return;
    for (size_t i = 0; s->routes && i < s->num_routes; i++) {
        struct route_config *r = &s->routes[i];
        pcre2_code_free(r->regex);
        r->regex = NULL;
        free_values(r->headers, r->num_headers);
        free_values(r->query, r->num_query);
    }
    router_destroy(s->router);
    s->router = NULL;
}

/* ---- matching ---- */

/*
 * PCRE2 allocates match data through a general context; pointing it at the
 * exchange's arena keeps router_match free of malloc on the request path.
 * Arena memory is released with the exchange, so "free" does nothing.
 */
static void *on_pcre2_malloc(PCRE2_SIZE size, void *arena)
{
    return arena_alloc(arena, size);
}

static void on_pcre2_free(void *block, void *arena)
{
    (void)block;
    (void)arena;
}

/* Match data shared by every pattern tried for one request, created on first use. */
struct match_scratch {
    struct arena *arena; /* NULL: plain malloc, freed at the end of router_match */
    uint32_t pairs;
    pcre2_match_data *md;
};

static pcre2_match_data *scratch_md(struct match_scratch *sc)
{
    if (sc->md)
        return sc->md;
    pcre2_general_context *gc = NULL;
    if (sc->arena) {
        gc = pcre2_general_context_create(on_pcre2_malloc, on_pcre2_free, sc->arena);
        if (!gc)
            return NULL;
    }
    sc->md = pcre2_match_data_create(sc->pairs, gc);
    return sc->md;
}

/* Returns the number of pairs set (> 0) on a match, 0 on no match or a matching error. */
static int regex_run(const pcre2_code *code, struct slice subject, struct match_scratch *sc)
{
    pcre2_match_data *md = scratch_md(sc);
    if (!md)
        return 0;
    int rc = pcre2_match(code, (PCRE2_SPTR)(subject.base ? subject.base : ""), subject.len, 0, 0,
                         md, NULL);
    if (rc == 0) /* the ovector was too small: every pair we have room for is set */
        rc = (int)pcre2_get_ovector_count(md);
    return rc > 0 ? rc : 0;
}

/*
 * Segment-aware prefix: the path starts with the prefix and the next byte is
 * a segment boundary ('/' or the end). A prefix ending in '/' ("/api/", "/")
 * already ends on a boundary, so plain starts-with is enough for it.
 */
static bool prefix_matches(const char *prefix, struct slice path)
{
    size_t n = strlen(prefix);
    if (path.len < n || memcmp(path.base, prefix, n) != 0)
        return false;
    if (n == 0 || prefix[n - 1] == '/' || path.len == n)
        return true;
    return path.base[n] == '/';
}

static bool value_matches(const struct match_value *v, struct slice value, struct match_scratch *sc)
{
    if (v->regex)
        return regex_run(v->regex, value, sc) > 0;
    return v->value && slice_eq(value, slice_cstr(v->value));
}

/* Every listed header must be present with a field whose value matches (any of several). */
static bool headers_match(const struct route_config *r, const struct header_list *h,
                          struct match_scratch *sc)
{
    for (size_t i = 0; i < r->num_headers; i++) {
        const struct match_value *v = &r->headers[i];
        struct slice name = slice_cstr(v->name);
        bool found = false;
        for (long at = h ? header_find(h, name, 0) : -1; at >= 0 && !found;
             at = header_find(h, name, (size_t)at + 1))
            found = value_matches(v, h->items[at].value, sc);
        if (!found)
            return false;
    }
    return true;
}

/*
 * Every listed parameter must occur in the query with a matching value. The
 * query is split on '&'; a pair without '=' has the empty value. Names and
 * values are compared as sent, without percent-decoding.
 */
static bool query_match(const struct route_config *r, struct slice query, struct match_scratch *sc)
{
    for (size_t i = 0; i < r->num_query; i++) {
        const struct match_value *v = &r->query[i];
        struct slice want = slice_cstr(v->name);
        bool found = false;
        const char *p = query.base, *end = query.base + query.len;
        while (p && p < end && !found) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            const char *stop = amp ? amp : end;
            const char *eq = memchr(p, '=', (size_t)(stop - p));
            struct slice name = slice_make(p, (size_t)((eq ? eq : stop) - p));
            struct slice value =
                eq ? slice_make(eq + 1, (size_t)(stop - eq - 1)) : slice_make("", 0);
            if (slice_eq(name, want))
                found = value_matches(v, value, sc);
            p = amp ? amp + 1 : end;
        }
        if (!found)
            return false;
    }
    return true;
}

static bool route_matches(const struct route_config *r, const struct router_request *req,
                          struct match_scratch *sc, struct route_match *m)
{
    struct slice caps[ROUTER_MAX_CAPTURES];
    PCRE2_SIZE *ov;
    int pairs = 0;

    if (r->num_methods) {
        size_t i = 0;
        while (i < r->num_methods && !slice_eq(req->method, slice_cstr(r->methods[i])))
            i++;
        if (i == r->num_methods)
            return false;
    }
    switch (r->match) {
    case MATCH_ANY:
        break;
    case MATCH_PREFIX:
        if (!r->path || !prefix_matches(r->path, req->path))
            return false;
        break;
    case MATCH_PATH:
        if (!r->path || !slice_eq(req->path, slice_cstr(r->path)))
            return false;
        break;
    case MATCH_REGEX:
        if (!r->regex || (pairs = regex_run(r->regex, req->path, sc)) == 0)
            return false;
        /* Copied now: header and query regexes below reuse the same match data. */
        ov = pcre2_get_ovector_pointer(sc->md);
        for (int i = 0; i < pairs && i < ROUTER_MAX_CAPTURES; i++) {
            if (ov[2 * i] == PCRE2_UNSET)
                caps[i] = slice_make(req->path.base, 0);
            else
                caps[i] = slice_make(req->path.base + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
        }
        break;
    }
    if (r->num_hosts) {
        size_t i = 0;
        while (i < r->num_hosts && !router_host_matches(r->hosts[i], req->host))
            i++;
        if (i == r->num_hosts)
            return false;
    }
    if (!headers_match(r, req->headers, sc) || !query_match(r, req->query, sc))
        return false;

    memset(m, 0, sizeof(*m));
    m->route = r;
    m->num_captures = pairs < ROUTER_MAX_CAPTURES ? (size_t)pairs : ROUTER_MAX_CAPTURES;
    memcpy(m->captures, caps, m->num_captures * sizeof(caps[0]));
    return true;
}

bool router_match(const struct snapshot *s, struct arena *a, const struct router_request *req,
                  struct route_match *m)
{
    const struct router *rt = s->router;
    if (!rt)
        return false;
    struct match_scratch sc = {.arena = a, .pairs = rt->max_pairs, .md = NULL};
    const size_t *keyed = NULL;
    size_t num_keyed = 0;
    if (req->path.len > 0 && req->path.base[0] == '/') {
        const struct route_bucket *b = bucket_slot(rt, first_segment(req->path));
        if (b && b->segment.base) {
            keyed = b->routes;
            num_keyed = b->count;
        }
    }

    /* Both lists are ascending: walking them merged keeps table order (first match wins). */
    bool found = false;
    size_t i = 0, j = 0;
    while (!found && (i < num_keyed || j < rt->num_always)) {
        size_t idx;
        if (j == rt->num_always || (i < num_keyed && keyed[i] < rt->always[j]))
            idx = keyed[i++];
        else
            idx = rt->always[j++];
        found = route_matches(&s->routes[idx], req, &sc, m);
    }
    if (!a && sc.md)
        pcre2_match_data_free(sc.md);
    return found;
}

/*
 * Host comparison. The port is dropped: "[v6]:port" keeps what is inside the
 * brackets, and a name or IPv4 address loses everything from its single ':'
 * (a bare IPv6 address, with several colons, is kept whole). One trailing '.'
 * of a fully qualified name is ignored. Patterns may be written with or
 * without brackets around an IPv6 literal.
 */
static struct slice host_bare(struct slice h)
{
    if (h.len && h.base[0] == '[') {
        const char *close = memchr(h.base, ']', h.len);
        if (close)
            return slice_make(h.base + 1, (size_t)(close - h.base - 1));
        return h;
    }
    const char *colon = memchr(h.base ? h.base : "", ':', h.len);
    if (colon && !memchr(colon + 1, ':', h.len - (size_t)(colon - h.base) - 1))
        h.len = (size_t)(colon - h.base);
    if (h.len > 1 && h.base[h.len - 1] == '.')
        h.len--;
    return h;
}

bool router_host_matches(const char *pattern, struct slice host)
{
    struct slice name = host_bare(host);
    struct slice pat = slice_cstr(pattern);
    if (pat.len >= 2 && pat.base[0] == '[' && pat.base[pat.len - 1] == ']')
        pat = slice_make(pat.base + 1, pat.len - 2);
    if (pat.len >= 2 && pat.base[0] == '*' && pat.base[1] == '.') {
        /* "*.example.org": any depth below example.org, never example.org itself. */
        struct slice suffix = slice_make(pat.base + 1, pat.len - 1);
        return name.len > suffix.len &&
               slice_ieq(slice_make(name.base + name.len - suffix.len, suffix.len), suffix);
    }
    return slice_ieq(name, pat);
}

/* ---- normalisation ---- */

/* RFC 3986 2.3 unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~" */
static bool is_unreserved(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static bool is_dot_segment(const char *seg, size_t len)
{
    return (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.');
}

/*
 * The path normalisation rule (SPEC 7), in two passes:
 *
 * 1. Percent-escapes: "%XX" decoding to an unreserved character is replaced
 *    by it; every other escape stays, with its hex digits upper-cased (so
 *    "%2f" becomes "%2F", which is data, not a separator). A '%' not followed
 *    by two hex digits makes the path invalid.
 *
 * 2. Dot segments: the path is a '/' followed by segments separated by '/'.
 *    Empty segments are real segments ("//" is kept, never collapsed). A "."
 *    segment is dropped; a ".." segment drops the segment before it, even an
 *    empty one (so "/a//../b" becomes "/a/b"); a ".." with nothing before it
 *    is above the root and makes the path invalid. When the last segment is
 *    "." or "..", the result ends in '/' ("/a/b/.." -> "/a/"), as in RFC 3986
 *    5.2.4.
 */
int router_normalize_path(struct arena *a, struct slice raw, struct slice *path)
{
    if (raw.len == 0 || raw.base[0] != '/')
        return -1;

    /* Fast scan: is the path already normal? Most are, and then nothing is copied. */
    bool decode = false, dots = false;
    for (size_t i = 0; i < raw.len; i++) {
        char c = raw.base[i];
        if (c == '%') {
            if (i + 2 >= raw.len)
                return -1;
            int hi = slice_hex_value((unsigned char)raw.base[i + 1]),
                lo = slice_hex_value((unsigned char)raw.base[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            if (is_unreserved(hi * 16 + lo) || (raw.base[i + 1] >= 'a' && raw.base[i + 1] <= 'f') ||
                (raw.base[i + 2] >= 'a' && raw.base[i + 2] <= 'f'))
                decode = true;
            i += 2;
        } else if (c == '/') {
            size_t start = i + 1, end = start;
            while (end < raw.len && raw.base[end] != '/')
                end++;
            if (is_dot_segment(raw.base + start, end - start))
                dots = true;
        }
    }
    if (!decode && !dots) {
        *path = raw;
        return 0;
    }

    struct slice in = raw;
    if (decode) {
        char *buf = arena_alloc(a, raw.len + 1);
        size_t n = 0;
        for (size_t i = 0; i < raw.len; i++) {
            if (raw.base[i] != '%') {
                buf[n++] = raw.base[i];
                continue;
            }
            int c = slice_hex_value((unsigned char)raw.base[i + 1]) * 16 +
                    slice_hex_value((unsigned char)raw.base[i + 2]);
            if (is_unreserved(c)) {
                buf[n++] = (char)c;
            } else {
                static const char hex[] = "0123456789ABCDEF";
                buf[n++] = '%';
                buf[n++] = hex[c >> 4];
                buf[n++] = hex[c & 15];
            }
            i += 2;
        }
        buf[n] = '\0';
        in = slice_make(buf, n);
    }

    /* Pass 2 writes "/seg" per kept segment; popping truncates to the last '/'. */
    char *out = arena_alloc(a, in.len + 2);
    size_t n = 0;
    bool last_dot = false;
    size_t i = 1;
    for (;;) {
        size_t start = i;
        while (i < in.len && in.base[i] != '/')
            i++;
        const char *seg = in.base + start;
        size_t len = i - start;
        last_dot = is_dot_segment(seg, len);
        if (len == 2 && last_dot) {
            if (n == 0)
                return -1;
            while (n > 0 && out[n - 1] != '/')
                n--;
            n--; /* drop the '/' that opened the popped segment */
        } else if (!last_dot) {
            out[n++] = '/';
            memcpy(out + n, seg, len);
            n += len;
        }
        if (i >= in.len)
            break;
        i++; /* past the '/' */
    }
    if (last_dot || n == 0)
        out[n++] = '/';
    out[n] = '\0';
    *path = slice_make(out, n);
    return 0;
}

/* ---- redirects ---- */

/* Appends the expansion of `location` to out (when non-NULL); returns its length. */
static size_t expand(const char *location, const struct route_match *m, char *out)
{
    size_t n = 0;
    for (const char *p = location; *p; p++) {
        if (p[0] == '$' && p[1] == '$') {
            if (out)
                out[n] = '$';
            n++;
            p++;
        } else if (p[0] == '$' && p[1] >= '0' && p[1] <= '9') {
            size_t k = (size_t)(p[1] - '0');
            if (m && k < m->num_captures) {
                if (out && m->captures[k].len)
                    memcpy(out + n, m->captures[k].base, m->captures[k].len);
                n += m->captures[k].len;
            }
            p++;
        } else {
            if (out)
                out[n] = *p;
            n++;
        }
    }
    return n;
}

/*
 * "$$" is a literal '$', "$0".."$9" the captures (a capture that did not take
 * part in the match, or beyond num_captures, expands to nothing), and any
 * other '$' is literal.
 */
struct slice router_expand_location(struct arena *a, const char *location,
                                    const struct route_match *m)
{
    if (!location)
        return slice_make("", 0);
    size_t len = expand(location, m, NULL);
    char *buf = arena_alloc(a, len + 1);
    expand(location, m, buf);
    buf[len] = '\0';
    return slice_make(buf, len);
}
