/*
 * config: loads the JSON configuration (SPEC 2, SPEC 7) into a snapshot.
 *
 * Loading runs in phases over one jansson tree: read and parse the file
 * (syntax errors carry line and column), substitute ${NAME} environment
 * variables in every string value, then compile each section into the
 * structs of config.h, reporting every problem with its JSON path and going
 * on, so one run lists all the errors of the file. Regexes are compiled by
 * router_compile() and filter options by each filter type's create().
 */
#include "conf/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/filter.h"
#include "core/router.h"
#include "net/tls.h"

/* A configuration larger than this is surely a mistake (a log file given by -c). */
#define CONFIG_MAX_FILE_BYTES (16u * 1024 * 1024)

/* ---------------------------------------------------------------- memory */

/*
 * Snapshot memory is small and allocated once per load; running out of it
 * means the machine is out of memory, not that the file is hostile, so we
 * stop with a message like the arena does (STYLE rule 10).
 */
static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("sluice: out of memory while loading the configuration\n", stderr);
        abort();
    }
    return p;
}

static void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) {
        fputs("sluice: out of memory while loading the configuration\n", stderr);
        abort();
    }
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

/* A growable byte buffer for building strings. */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data) {
            fputs("sluice: out of memory while loading the configuration\n", stderr);
            abort();
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* ---------------------------------------------------------------- errors and paths */

static bool is_ident(const char *s)
{
    if (!(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    for (s++; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

void config_path_member(char *out, size_t cap, const char *key)
{
    if (is_ident(key)) {
        snprintf(out, cap, ".%s", key);
        return;
    }
    size_t n = 0;
    out[0] = '\0';
    n += (size_t)snprintf(out, cap, "[\"");
    for (const char *p = key; *p && n + 8 < cap; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            n += (size_t)snprintf(out + n, cap - n, "\\%c", c);
        else if (c < 0x20)
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        else
            out[n++] = (char)c;
    }
    if (n + 3 <= cap)
        snprintf(out + n, cap - n, "\"]");
    else
        out[cap - 1] = '\0';
}

/* Appends `step` to err->path; returns the previous length for path_pop(). */
static size_t path_push(struct config_error *err, const char *step)
{
    size_t len = strlen(err->path);
    if (len == 0 && step[0] == '.')
        step++;
    snprintf(err->path + len, sizeof err->path - len, "%s", step);
    return len;
}

static size_t path_push_key(struct config_error *err, const char *key)
{
    char step[300];
    config_path_member(step, sizeof step, key);
    return path_push(err, step);
}

static size_t path_push_index(struct config_error *err, size_t i)
{
    char step[32];
    snprintf(step, sizeof step, "[%zu]", i);
    return path_push(err, step);
}

static void path_pop(struct config_error *err, size_t len)
{
    err->path[len] = '\0';
}

static void add_message(struct config_error *err, char *msg)
{
    if (err->count == err->cap) {
        size_t cap = err->cap ? err->cap * 2 : 8;
        char **m = realloc(err->messages, cap * sizeof *m);
        if (!m) {
            free(msg);
            return;
        }
        err->messages = m;
        err->cap = cap;
    }
    err->messages[err->count++] = msg;
}

static char *vformat(const char *fmt, va_list ap)
{
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

static void verror_add(struct config_error *err, const char *subpath, const char *fmt, va_list ap)
{
    char path[sizeof err->path + 320];
    const char *file = err->file ? err->file : "(config)";
    snprintf(path, sizeof path, "%s", err->path);
    if (path[0] == '\0' && subpath[0] == '.')
        subpath++;
    size_t len = strlen(path);
    snprintf(path + len, sizeof path - len, "%s", subpath);

    char *text = vformat(fmt, ap);
    if (!text)
        return;
    size_t n = strlen(file) + strlen(path) + strlen(text) + 8;
    char *msg = malloc(n);
    if (msg) {
        if (path[0])
            snprintf(msg, n, "%s: %s: %s", file, path, text);
        else
            snprintf(msg, n, "%s: %s", file, text);
        add_message(err, msg);
    }
    free(text);
}

void config_error_add(struct config_error *err, const char *subpath, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror_add(err, subpath ? subpath : "", fmt, ap);
    va_end(ap);
}

void config_error_raw(struct config_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = vformat(fmt, ap);
    va_end(ap);
    if (msg)
        add_message(err, msg);
}

/* Records an error on member `key` of the object at err->path. */
static void key_error(struct config_error *err, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void key_error(struct config_error *err, const char *key, const char *fmt, ...)
{
    char step[300];
    config_path_member(step, sizeof step, key);
    va_list ap;
    va_start(ap, fmt);
    verror_add(err, step, fmt, ap);
    va_end(ap);
}

void config_error_clear(struct config_error *err)
{
    for (size_t i = 0; i < err->count; i++)
        free(err->messages[i]);
    free(err->messages);
    err->messages = NULL;
    err->count = 0;
    err->cap = 0;
    err->path[0] = '\0';
}

/* Levenshtein distance, capped for long words; used for "did you mean". */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return SIZE_MAX;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost =
                tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
            size_t best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static int check_keys(struct config_error *err, const json_t *obj, const char *const *allowed,
                      bool accept_type)
{
    const char *key;
    json_t *value;
    int unknown = 0;
    json_object_foreach((json_t *)obj, key, value)
    {
        if (key[0] == '_' || (accept_type && strcmp(key, "type") == 0))
            continue;
        bool found = false;
        const char *best = NULL;
        size_t best_d = 3;
        for (size_t i = 0; allowed[i]; i++) {
            if (strcmp(key, allowed[i]) == 0) {
                found = true;
                break;
            }
            size_t d = edit_distance(key, allowed[i]);
            if (d < best_d && d < strlen(key)) {
                best_d = d;
                best = allowed[i];
            }
        }
        if (found)
            continue;
        unknown++;
        struct buf list = {0};
        for (size_t i = 0; allowed[i]; i++) {
            if (i)
                buf_str(&list, ", ");
            buf_str(&list, allowed[i]);
        }
        if (!list.data)
            buf_str(&list, "none");
        if (best)
            key_error(err, key, "unknown key; did you mean \"%s\"? (expected one of: %s)", best,
                      list.data);
        else
            key_error(err, key,
                      "unknown key (expected one of: %s; keys starting with \"_\" are comments)",
                      list.data);
        free(list.data);
    }
    return unknown;
}

/*
 * Filter options hold the "type" key that chose the filter, so it is
 * always accepted here; everything else not in `allowed` is reported.
 */
int config_check_keys(struct config_error *err, const json_t *obj, const char *const *allowed)
{
    return check_keys(err, obj, allowed, true);
}

char *config_resolve_path(const struct config_error *err, const char *name)
{
    if (name[0] == '/' || !err->dir || !err->dir[0])
        return xstrdup(name);
    size_t n = strlen(err->dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", err->dir, name);
    return p;
}

/* ---------------------------------------------------------------- typed getters */

static const char *kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

static void describe_range(char *out, size_t cap, long long min, long long max)
{
    if (max >= INT_MAX && min == 1)
        snprintf(out, cap, "a positive integer");
    else if (max >= INT_MAX && min == 0)
        snprintf(out, cap, "a non-negative integer");
    else if (max >= INT_MAX)
        snprintf(out, cap, "an integer >= %lld", min);
    else
        snprintf(out, cap, "an integer from %lld to %lld", min, max);
}

/*
 * Reads obj[key] as an integer in [min, max] into *out. Absent leaves *out
 * alone (the caller has set the default). Returns false after reporting a
 * wrong value.
 */
static bool get_llong(struct config_error *err, const json_t *obj, const char *key, long long min,
                      long long max, long long *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return true;
    char want[64];
    describe_range(want, sizeof want, min, max);
    if (!json_is_integer(v)) {
        key_error(err, key, "must be %s, not %s", want, kind(v));
        return false;
    }
    long long n = json_integer_value(v);
    if (n < min || n > max) {
        key_error(err, key, "must be %s, not %lld", want, n);
        return false;
    }
    *out = n;
    return true;
}

static bool get_int(struct config_error *err, const json_t *obj, const char *key, long long min,
                    int *out)
{
    long long n = *out;
    if (!get_llong(err, obj, key, min, INT_MAX, &n))
        return false;
    *out = (int)n;
    return true;
}

static bool get_bool(struct config_error *err, const json_t *obj, const char *key, bool *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return true;
    if (!json_is_boolean(v)) {
        key_error(err, key, "must be true or false, not %s", kind(v));
        return false;
    }
    *out = json_is_true(v);
    return true;
}

/*
 * Reads obj[key] as a string. Returns the jansson string (owned by the
 * tree) or NULL when absent or wrong; `required` reports an absent key.
 */
static const char *get_string(struct config_error *err, const json_t *obj, const char *key,
                              bool required, bool nonempty)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            key_error(err, key, "missing (a string is required here)");
        return NULL;
    }
    if (!json_is_string(v)) {
        key_error(err, key, "must be a string, not %s", kind(v));
        return NULL;
    }
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v)) {
        key_error(err, key, "must not contain a NUL character");
        return NULL;
    }
    if (nonempty && !s[0]) {
        key_error(err, key, "must not be empty");
        return NULL;
    }
    return s;
}

/* Checks that `v` is an object; reports "must be an object" at the current path. */
static bool want_object(struct config_error *err, const json_t *v, const char *example)
{
    if (json_is_object(v))
        return true;
    config_error_add(err, "", "must be an object%s%s, not %s", example ? ", e.g. " : "",
                     example ? example : "", kind(v));
    return false;
}

/* ---------------------------------------------------------------- environment */

static bool env_name_start(char c)
{
    return (c >= 'A' && c <= 'Z') || c == '_';
}

static bool env_name_char(char c)
{
    return env_name_start(c) || (c >= '0' && c <= '9');
}

/*
 * Expands ${NAME}, ${NAME:-default} and $$ in `s` (SPEC 2). Any other '$'
 * is literal, so crypt hashes ("$6$salt$hash") and request variables
 * (lower-case "${host}") pass untouched. A default runs to the first '}'
 * and is not expanded again. Like the shell, ":-" also applies when the
 * variable is set but empty. Returns a malloc'd string, or NULL when
 * nothing changes; unset variables are reported at err->path.
 */
static char *expand_env(struct config_error *err, const char *s, size_t len, size_t *out_len)
{
    if (!memchr(s, '$', len))
        return NULL;
    struct buf b = {0};
    buf_add(&b, "", 0);
    size_t i = 0;
    while (i < len) {
        if (s[i] != '$') {
            buf_add(&b, s + i, 1);
            i++;
            continue;
        }
        if (i + 1 < len && s[i + 1] == '$') {
            buf_add(&b, "$", 1);
            i += 2;
            continue;
        }
        if (i + 2 < len && s[i + 1] == '{' && env_name_start(s[i + 2])) {
            size_t start = i + 2, end = start;
            while (end < len && env_name_char(s[end]))
                end++;
            char name[256];
            size_t nlen = end - start < sizeof name ? end - start : sizeof name - 1;
            memcpy(name, s + start, nlen);
            name[nlen] = '\0';
            if (end < len && s[end] == '}') {
                const char *value = getenv(name);
                if (value)
                    buf_str(&b, value);
                else
                    config_error_add(err, "",
                                     "environment variable %s is not set (set it, or write "
                                     "${%s:-default})",
                                     name, name);
                i = end + 1;
                continue;
            }
            if (end + 1 < len && s[end] == ':' && s[end + 1] == '-') {
                const char *close = memchr(s + end + 2, '}', len - end - 2);
                if (close) {
                    const char *value = getenv(name);
                    if (value && value[0])
                        buf_str(&b, value);
                    else
                        buf_add(&b, s + end + 2, (size_t)(close - (s + end + 2)));
                    i = (size_t)(close - s) + 1;
                    continue;
                }
            }
        }
        buf_add(&b, "$", 1);
        i++;
    }
    *out_len = b.len;
    return b.data;
}

/* Walks the whole tree and substitutes every string value in place (not keys). */
static void substitute(struct config_error *err, json_t *node)
{
    if (json_is_object(node)) {
        const char *key;
        json_t *value;
        json_object_foreach(node, key, value)
        {
            size_t mark = path_push_key(err, key);
            substitute(err, value);
            path_pop(err, mark);
        }
    } else if (json_is_array(node)) {
        size_t i;
        json_t *value;
        json_array_foreach(node, i, value)
        {
            size_t mark = path_push_index(err, i);
            substitute(err, value);
            path_pop(err, mark);
        }
    } else if (json_is_string(node)) {
        size_t len = 0;
        char *expanded = expand_env(err, json_string_value(node), json_string_length(node), &len);
        if (expanded)
            json_string_setn(node, expanded, len);
        free(expanded);
    }
}

/* ---------------------------------------------------------------- addresses */

static bool parse_port(const char *s, uint16_t *port)
{
    if (!*s || strlen(s) > 5)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    long n = strtol(s, NULL, 10);
    if (n < 1 || n > 65535)
        return false;
    *port = (uint16_t)n;
    return true;
}

/*
 * Splits "host:port" or "[v6]:port". *host is malloc'd without brackets;
 * *bracketed says the host was written in brackets. On error returns false
 * with a reason in `why`.
 */
static bool split_host_port(const char *s, char **host, uint16_t *port, bool *bracketed, char *why,
                            size_t whylen)
{
    const char *colon;
    *bracketed = false;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') {
            snprintf(why, whylen, "an IPv6 address is written [ADDRESS]:PORT");
            return false;
        }
        *bracketed = true;
        colon = close + 1;
        if (!parse_port(colon + 1, port)) {
            snprintf(why, whylen, "the port must be a number from 1 to 65535");
            return false;
        }
        *host = xstrndup(s + 1, (size_t)(close - s - 1));
        return true;
    }
    colon = strrchr(s, ':');
    if (!colon) {
        snprintf(why, whylen, "the port is missing");
        return false;
    }
    if (memchr(s, ':', (size_t)(colon - s))) {
        snprintf(why, whylen, "an IPv6 address needs brackets, e.g. [::1]:8080");
        return false;
    }
    if (colon == s) {
        snprintf(why, whylen, "the host is missing");
        return false;
    }
    if (!parse_port(colon + 1, port)) {
        snprintf(why, whylen, "the port must be a number from 1 to 65535");
        return false;
    }
    *host = xstrndup(s, (size_t)(colon - s));
    return true;
}

static bool valid_hostname(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253)
        return false;
    for (const char *p = h; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_'))
            return false;
    return true;
}

/*
 * Parses a listening address: a numeric IPv4 or bracketed IPv6 literal,
 * or "localhost" (taken as 127.0.0.1, so no resolver runs at load time).
 */
static bool parse_bind_address(const char *s, struct sockaddr_storage *ss, socklen_t *len,
                               char *why, size_t whylen)
{
    char *host = NULL;
    uint16_t port;
    bool bracketed;
    bool ok = false;
    if (!split_host_port(s, &host, &port, &bracketed, why, whylen))
        goto out;
    memset(ss, 0, sizeof *ss);
    if (bracketed) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            snprintf(why, whylen, "\"%s\" is not an IPv6 address", host);
            goto out;
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *len = sizeof *sin6;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        const char *ip = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
        if (inet_pton(AF_INET, ip, &sin->sin_addr) != 1) {
            snprintf(why, whylen,
                     "\"%s\" is not an IP address (use a numeric address, \"localhost\", or "
                     "[IPv6])",
                     host);
            goto out;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *len = sizeof *sin;
    }
    ok = true;
out:
    free(host);
    return ok;
}

/* Parses "host:port" where host may be a name, IPv4 or [IPv6]. */
static bool parse_target_address(const char *s, char **host, uint16_t *port, char *why,
                                 size_t whylen)
{
    bool bracketed;
    if (!split_host_port(s, host, port, &bracketed, why, whylen))
        return false;
    if (bracketed) {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, *host, &a6) != 1) {
            snprintf(why, whylen, "\"%s\" is not an IPv6 address", *host);
            goto fail;
        }
    } else if (!valid_hostname(*host)) {
        snprintf(why, whylen, "\"%s\" is not a valid host name", *host);
        goto fail;
    }
    return true;
fail:
    free(*host);
    *host = NULL;
    return false;
}

static bool is_tchar(char c)
{
    return isalnum((unsigned char)c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_tchar(*s))
            return false;
    return true;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static void upper(char *s)
{
    for (; *s; s++)
        *s = (char)toupper((unsigned char)*s);
}

static bool has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* ---------------------------------------------------------------- listeners */

static void build_listener(struct config_error *err, struct listen_config *l, const json_t *v)
{
    static const char *const keys[] = {"address", "protocols", "tls", NULL};
    if (!want_object(err, v, "{\"address\": \"0.0.0.0:8080\"}"))
        return;
    check_keys(err, v, keys, false);
    const char *address = get_string(err, v, "address", true, true);
    if (address) {
        char why[200];
        if (parse_bind_address(address, &l->addr, &l->addrlen, why, sizeof why))
            l->address = xstrdup(address);
        else
            key_error(err, "address",
                      "invalid address \"%s\": %s (expected IP:PORT, e.g. "
                      "\"0.0.0.0:8080\" or \"[::]:8080\")",
                      address, why);
    }
    const json_t *tls = json_object_get(v, "tls");
    if (tls)
        l->tls = tls_server_build(err, tls, json_object_get(v, "protocols"));
    /* On a TLS listener "protocols" is the ALPN list: tls.c reads it. */
    const json_t *protocols = tls ? NULL : json_object_get(v, "protocols");
    if (protocols) {
        size_t mark = path_push(err, ".protocols");
        if (!json_is_array(protocols) || json_array_size(protocols) == 0) {
            config_error_add(err, "", "must be a non-empty array, e.g. [\"http/1.1\"]");
        } else {
            size_t i;
            json_t *p;
            json_array_foreach(protocols, i, p)
            {
                size_t m2 = path_push_index(err, i);
                const char *name = json_string_value(p);
                if (!name)
                    config_error_add(err, "", "must be a string, not %s", kind(p));
                else if (strcmp(name, "http/1.1") == 0)
                    ;
                else if (strcmp(name, "h2c") == 0)
                    l->h2c = true;
                else if (strcmp(name, "h2") == 0)
                    config_error_add(err, "",
                                     "\"h2\" needs a TLS listener (\"tls\"); for cleartext "
                                     "HTTP/2 use \"h2c\"");
                else
                    config_error_add(
                        err, "", "unknown protocol \"%s\" (expected one of: http/1.1, h2c)", name);
                path_pop(err, m2);
            }
        }
        path_pop(err, mark);
    }
}

static bool same_addr(const struct sockaddr_storage *a, socklen_t alen,
                      const struct sockaddr_storage *b, socklen_t blen)
{
    return alen && alen == blen && memcmp(a, b, alen) == 0;
}

static void build_listeners(struct config_error *err, struct snapshot *s, const json_t *v)
{
    if (!v) {
        config_error_add(err, ".listen",
                         "missing: add at least one listener, e.g. [{\"address\": "
                         "\"0.0.0.0:8080\"}]");
        return;
    }
    if (!json_is_array(v) || json_array_size(v) == 0) {
        config_error_add(err, ".listen",
                         "must be a non-empty array of listeners, e.g. [{\"address\": "
                         "\"0.0.0.0:8080\"}]");
        return;
    }
    size_t n = json_array_size(v);
    s->listeners = xcalloc(n, sizeof *s->listeners);
    s->num_listeners = n;
    size_t mark = path_push(err, ".listen");
    for (size_t i = 0; i < n; i++) {
        size_t m2 = path_push_index(err, i);
        struct listen_config *l = &s->listeners[i];
        build_listener(err, l, json_array_get(v, i));
        for (size_t j = 0; j < i; j++)
            if (l->address &&
                same_addr(&l->addr, l->addrlen, &s->listeners[j].addr, s->listeners[j].addrlen))
                config_error_add(err, ".address", "the same address as listen[%zu]", j);
        path_pop(err, m2);
    }
    path_pop(err, mark);
}

/* ---------------------------------------------------------------- upstreams */

static void build_target(struct config_error *err, struct target_config *t, const json_t *v)
{
    static const char *const keys[] = {"address", "weight", NULL};
    const char *address = NULL;
    t->weight = 1;
    if (json_is_string(v)) {
        address = json_string_value(v);
    } else if (json_is_object(v)) {
        check_keys(err, v, keys, false);
        address = get_string(err, v, "address", true, true);
        long long w = 1;
        if (get_llong(err, v, "weight", 1, 10000, &w))
            t->weight = (int)w;
    } else {
        config_error_add(err, "",
                         "must be \"HOST:PORT\" or {\"address\": \"HOST:PORT\", \"weight\": N}, "
                         "not %s",
                         kind(v));
        return;
    }
    if (!address)
        return;
    char why[200];
    if (!parse_target_address(address, &t->host, &t->port, why, sizeof why))
        config_error_add(err, json_is_object(v) ? ".address" : "",
                         "invalid target \"%s\": %s (expected HOST:PORT, e.g. \"users:8080\", "
                         "\"10.0.0.3:8080\" or \"[::1]:8080\")",
                         address, why);
}

static void build_health(struct config_error *err, struct health_config *h, const json_t *v)
{
    static const char *const keys[] = {
        "path", "interval_ms", "timeout_ms", "unhealthy_after", "healthy_after", NULL};
    /* SPEC 7: without a health_check a passive mark lasts 5000 ms. */
    h->interval_ms = v ? 2000 : 5000;
    h->timeout_ms = 1000;
    h->unhealthy_after = 3;
    h->healthy_after = 2;
    h->path = xstrdup("/");
    if (!v)
        return;
    h->enabled = true;
    size_t mark = path_push(err, ".health_check");
    if (want_object(err, v, "{\"path\": \"/healthz\"}")) {
        check_keys(err, v, keys, false);
        const char *path = get_string(err, v, "path", false, true);
        if (path && (path[0] != '/' || has_crlf(path) || strchr(path, ' '))) {
            key_error(err, "path", "must start with '/' and hold no spaces, e.g. \"/healthz\"");
        } else if (path) {
            free(h->path);
            h->path = xstrdup(path);
        }
        get_int(err, v, "interval_ms", 1, &h->interval_ms);
        get_int(err, v, "timeout_ms", 1, &h->timeout_ms);
        get_int(err, v, "unhealthy_after", 1, &h->unhealthy_after);
        get_int(err, v, "healthy_after", 1, &h->healthy_after);
    }
    path_pop(err, mark);
}

static void build_balance(struct config_error *err, struct upstream_config *u, const json_t *v)
{
    static const char expected[] =
        "expected one of: round_robin, least_conn, random, ip_hash, header:NAME";
    const char *b = get_string(err, v, "balance", false, false);
    if (!b)
        return;
    if (strcmp(b, "round_robin") == 0)
        u->balance = BALANCE_ROUND_ROBIN;
    else if (strcmp(b, "least_conn") == 0)
        u->balance = BALANCE_LEAST_CONN;
    else if (strcmp(b, "random") == 0)
        u->balance = BALANCE_RANDOM;
    else if (strcmp(b, "ip_hash") == 0)
        u->balance = BALANCE_IP_HASH;
    else if (strncmp(b, "header:", 7) == 0 && is_token(b + 7)) {
        u->balance = BALANCE_HEADER;
        u->balance_header = xstrdup(b + 7);
        lower(u->balance_header);
    } else
        key_error(err, "balance", "unknown balance \"%s\" (%s)", b, expected);
}

static void build_upstream(struct config_error *err, struct upstream_config *u, const json_t *v)
{
    static const char *const keys[] = {
        "targets",    "balance", "keepalive",      "max_connections", "connect_timeout_ms",
        "timeout_ms", "retries", "dns_refresh_ms", "health_check",    "tls",
        "protocol",   NULL};
    u->balance = BALANCE_ROUND_ROBIN;
    u->keepalive = 64;
    u->max_connections = 0;
    u->connect_timeout_ms = 2000;
    u->timeout_ms = 30000;
    u->retries = 1;
    u->dns_refresh_ms = 5000;
    if (!want_object(err, v, "{\"targets\": [\"users:8080\"]}")) {
        build_health(err, &u->health, NULL);
        return;
    }
    check_keys(err, v, keys, false);

    const json_t *targets = json_object_get(v, "targets");
    if (!targets) {
        config_error_add(err, ".targets",
                         "missing: list at least one target, e.g. "
                         "[\"users:8080\"]");
    } else if (!json_is_array(targets) || json_array_size(targets) == 0) {
        config_error_add(err, ".targets",
                         "must be a non-empty array of targets, e.g. [\"users:8080\"]");
    } else {
        size_t n = json_array_size(targets);
        u->targets = xcalloc(n, sizeof *u->targets);
        u->num_targets = n;
        size_t mark = path_push(err, ".targets");
        for (size_t i = 0; i < n; i++) {
            size_t m2 = path_push_index(err, i);
            build_target(err, &u->targets[i], json_array_get(targets, i));
            path_pop(err, m2);
        }
        path_pop(err, mark);
    }
    build_balance(err, u, v);
    get_int(err, v, "keepalive", 0, &u->keepalive);
    get_int(err, v, "max_connections", 0, &u->max_connections);
    get_int(err, v, "connect_timeout_ms", 1, &u->connect_timeout_ms);
    get_int(err, v, "timeout_ms", 1, &u->timeout_ms);
    get_int(err, v, "retries", 0, &u->retries);
    get_int(err, v, "dns_refresh_ms", 1, &u->dns_refresh_ms);
    build_health(err, &u->health, json_object_get(v, "health_check"));
    if (json_object_get(v, "tls"))
        u->tls = tls_client_build(err, json_object_get(v, "tls"));
    const char *protocol = get_string(err, v, "protocol", false, false);
    u->protocol = UPSTREAM_HTTP1;
    if (protocol && strcmp(protocol, "h2") == 0)
        u->protocol = UPSTREAM_H2;
    else if (protocol && strcmp(protocol, "http/1.1") != 0)
        key_error(err, "protocol", "unknown protocol \"%s\" (expected one of: http/1.1, h2)",
                  protocol);
}

static void build_upstreams(struct config_error *err, struct snapshot *s, const json_t *v)
{
    if (!v)
        return;
    if (!json_is_object(v)) {
        config_error_add(err, ".upstreams",
                         "must be an object of named upstreams, e.g. {\"users\": {\"targets\": "
                         "[\"users:8080\"]}}, not %s",
                         kind(v));
        return;
    }
    size_t n = json_object_size(v);
    if (n == 0)
        return;
    s->upstreams = xcalloc(n, sizeof *s->upstreams);
    size_t mark = path_push(err, ".upstreams");
    const char *name;
    json_t *u;
    json_object_foreach((json_t *)v, name, u)
    {
        /* Names starting with '_' are comments here too. */
        if (name[0] == '_')
            continue;
        size_t m2 = path_push_key(err, name);
        struct upstream_config *uc = &s->upstreams[s->num_upstreams];
        uc->index = s->num_upstreams++;
        uc->name = xstrdup(name);
        if (!name[0])
            config_error_add(err, "", "an upstream needs a non-empty name");
        build_upstream(err, uc, u);
        path_pop(err, m2);
    }
    path_pop(err, mark);
}

struct upstream_config *config_upstream(const struct snapshot *s, const char *name)
{
    for (size_t i = 0; i < s->num_upstreams; i++)
        if (strcmp(s->upstreams[i].name, name) == 0)
            return &s->upstreams[i];
    return NULL;
}

/* ---------------------------------------------------------------- filters */

static void build_filters(struct config_error *err, const json_t *v, struct filter_instance **out,
                          size_t *count)
{
    if (!v)
        return;
    size_t mark = path_push(err, ".filters");
    if (!json_is_array(v)) {
        config_error_add(err, "",
                         "must be an array of filters, e.g. [{\"type\": \"headers\", "
                         "...}], not %s",
                         kind(v));
        path_pop(err, mark);
        return;
    }
    size_t n = json_array_size(v);
    *out = xcalloc(n, sizeof **out);
    for (size_t i = 0; i < n; i++) {
        size_t m2 = path_push_index(err, i);
        const json_t *f = json_array_get(v, i);
        const char *name = NULL;
        if (!json_is_object(f))
            config_error_add(err, "",
                             "must be an object with a \"type\", e.g. {\"type\": "
                             "\"headers\", ...}, not %s",
                             kind(f));
        else if (!json_object_get(f, "type"))
            config_error_add(err, ".type", "missing: every filter needs a \"type\" (available: %s)",
                             filter_registry_names());
        else
            name = get_string(err, f, "type", true, true);
        if (name) {
            int planned = 0;
            const struct filter_type *type = filter_registry_find(name, &planned);
            if (!type && planned) {
                config_error_add(err, ".type",
                                 "filter type \"%s\" is not available in this version", name);
            } else if (!type) {
                config_error_add(err, ".type", "unknown filter type \"%s\" (available: %s)", name,
                                 filter_registry_names());
            } else {
                /* create() may push its own steps; give it a copy and restore ours after. */
                char saved[sizeof err->path];
                memcpy(saved, err->path, sizeof saved);
                size_t before = err->count;
                const void *instance = type->create(f, err);
                memcpy(err->path, saved, sizeof saved);
                if (instance) {
                    (*out)[*count].type = type;
                    (*out)[*count].instance = instance;
                    (*count)++;
                } else if (err->count == before) {
                    config_error_add(err, "", "the %s filter could not be created", name);
                }
            }
        }
        path_pop(err, m2);
    }
    path_pop(err, mark);
}

static void free_filters(struct filter_instance *f, size_t n)
{
    for (size_t i = n; i-- > 0;)
        if (f[i].type && f[i].type->destroy)
            f[i].type->destroy(f[i].instance);
    free(f);
}

/* ---------------------------------------------------------------- routes */

/* Reads a non-empty array of strings at obj[key]; returns malloc'd copies. */
static char **get_string_array(struct config_error *err, const json_t *obj, const char *key,
                               size_t *count, const char *example)
{
    const json_t *v = json_object_get(obj, key);
    *count = 0;
    if (!v)
        return NULL;
    if (!json_is_array(v) || json_array_size(v) == 0) {
        key_error(err, key, "must be a non-empty array of strings, e.g. %s", example);
        return NULL;
    }
    size_t n = json_array_size(v);
    char **out = xcalloc(n, sizeof *out);
    size_t mark = path_push_key(err, key);
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(v, i);
        if (!json_is_string(item)) {
            size_t m2 = path_push_index(err, i);
            config_error_add(err, "", "must be a string, not %s", kind(item));
            path_pop(err, m2);
            continue;
        }
        out[(*count)++] = xstrdup(json_string_value(item));
    }
    path_pop(err, mark);
    return out;
}

static void check_hosts(struct config_error *err, struct route_config *r)
{
    size_t mark = path_push(err, ".hosts");
    for (size_t i = 0; i < r->num_hosts; i++) {
        char *h = r->hosts[i];
        lower(h);
        const char *name = strncmp(h, "*.", 2) == 0 ? h + 2 : h;
        size_t m2 = path_push_index(err, i);
        if (strchr(name, '*'))
            config_error_add(err, "",
                             "\"%s\": a wildcard is only allowed as a leading \"*.\", e.g. "
                             "\"*.example.org\"",
                             h);
        else if (!valid_hostname(name))
            config_error_add(err, "",
                             "\"%s\" is not a host name (write it without a port, e.g. "
                             "\"api.example.com\")",
                             h);
        path_pop(err, m2);
    }
    path_pop(err, mark);
}

static void build_match_values(struct config_error *err, const json_t *obj, const char *key,
                               bool header_names, struct match_value **out, size_t *count)
{
    const json_t *v = json_object_get(obj, key);
    *count = 0;
    if (!v)
        return;
    if (!json_is_object(v)) {
        key_error(err, key,
                  "must be an object of {\"name\": \"value\"} or {\"name\": {\"regex\": "
                  "\"...\"}}, not %s",
                  kind(v));
        return;
    }
    static const char *const regex_keys[] = {"regex", NULL};
    size_t n = json_object_size(v);
    if (n == 0)
        return;
    *out = xcalloc(n, sizeof **out);
    size_t mark = path_push_key(err, key);
    const char *name;
    json_t *item;
    json_object_foreach((json_t *)v, name, item)
    {
        size_t m2 = path_push_key(err, name);
        if (header_names && !is_token(name)) {
            config_error_add(err, "", "\"%s\" is not a valid header name", name);
        } else if (json_is_string(item)) {
            struct match_value *m = &(*out)[(*count)++];
            m->name = xstrdup(name);
            if (header_names)
                lower(m->name);
            m->value = xstrdup(json_string_value(item));
        } else if (json_is_object(item)) {
            check_keys(err, item, regex_keys, false);
            const char *re = get_string(err, item, "regex", true, true);
            if (re) {
                struct match_value *m = &(*out)[(*count)++];
                m->name = xstrdup(name);
                if (header_names)
                    lower(m->name);
                m->regex_source = xstrdup(re);
            }
        } else {
            config_error_add(err, "", "must be a string or {\"regex\": \"...\"}, not %s",
                             kind(item));
        }
        path_pop(err, m2);
    }
    path_pop(err, mark);
}

static void build_match(struct config_error *err, struct route_config *r, const json_t *v)
{
    static const char *const keys[] = {"prefix",  "path",    "regex", "hosts",
                                       "methods", "headers", "query", NULL};
    if (!v)
        return;
    size_t mark = path_push(err, ".match");
    if (!want_object(err, v, "{\"prefix\": \"/api\"}")) {
        path_pop(err, mark);
        return;
    }
    check_keys(err, v, keys, false);

    int kinds = !!json_object_get(v, "prefix") + !!json_object_get(v, "path") +
                !!json_object_get(v, "regex");
    if (kinds > 1) {
        config_error_add(err, "", "use only one of prefix, path, regex");
    } else if (json_object_get(v, "regex")) {
        const char *re = get_string(err, v, "regex", true, true);
        if (re) {
            r->match = MATCH_REGEX;
            r->regex_source = xstrdup(re);
        }
    } else if (kinds == 1) {
        const char *key = json_object_get(v, "prefix") ? "prefix" : "path";
        const char *p = get_string(err, v, key, true, true);
        if (p && p[0] != '/') {
            key_error(err, key, "must start with '/', e.g. \"/%s\"", p);
        } else if (p) {
            r->match = key[1] == 'r' ? MATCH_PREFIX : MATCH_PATH;
            r->path = xstrdup(p);
        }
    }

    r->hosts = get_string_array(err, v, "hosts", &r->num_hosts, "[\"api.example.com\"]");
    check_hosts(err, r);
    r->methods = get_string_array(err, v, "methods", &r->num_methods, "[\"GET\", \"POST\"]");
    for (size_t i = 0; i < r->num_methods; i++) {
        upper(r->methods[i]);
        if (!is_token(r->methods[i]))
            config_error_add(err, ".methods", "\"%s\" is not an HTTP method", r->methods[i]);
    }
    build_match_values(err, v, "headers", true, &r->headers, &r->num_headers);
    build_match_values(err, v, "query", false, &r->query, &r->num_query);
    path_pop(err, mark);
}

static void build_respond(struct config_error *err, struct route_config *r, const json_t *v)
{
    static const char *const keys[] = {"status", "body", "headers", NULL};
    r->action = ROUTE_RESPOND;
    r->respond_status = 200;
    size_t mark = path_push(err, ".respond");
    if (!want_object(err, v, "{\"status\": 200, \"body\": \"ok\"}")) {
        path_pop(err, mark);
        r->respond_body = xstrdup("");
        return;
    }
    check_keys(err, v, keys, false);
    long long status = 200;
    if (get_llong(err, v, "status", 100, 599, &status))
        r->respond_status = (int)status;
    const json_t *body = json_object_get(v, "body");
    if (body && !json_is_string(body)) {
        key_error(err, "body", "must be a string, not %s", kind(body));
    } else if (body) {
        r->respond_body_len = json_string_length(body);
        r->respond_body = xstrndup(json_string_value(body), r->respond_body_len);
    }
    if (!r->respond_body)
        r->respond_body = xstrdup("");

    const json_t *headers = json_object_get(v, "headers");
    if (headers && !json_is_object(headers)) {
        key_error(err, "headers", "must be an object of {\"name\": \"value\"}, not %s",
                  kind(headers));
    } else if (headers && json_object_size(headers)) {
        r->respond_headers = xcalloc(json_object_size(headers), sizeof *r->respond_headers);
        size_t m2 = path_push(err, ".headers");
        const char *name;
        json_t *value;
        json_object_foreach((json_t *)headers, name, value)
        {
            const char *text = json_string_value(value);
            if (!is_token(name))
                key_error(err, name, "\"%s\" is not a valid header name", name);
            else if (!text)
                key_error(err, name, "must be a string, not %s", kind(value));
            else if (has_crlf(text) || strlen(text) != json_string_length(value))
                key_error(err, name, "must not contain CR, LF or NUL");
            else {
                struct header *h = &r->respond_headers[r->num_respond_headers++];
                h->name = slice_cstr(xstrdup(name));
                h->value = slice_cstr(xstrdup(text));
            }
        }
        path_pop(err, m2);
    }
    path_pop(err, mark);
}

static void build_redirect(struct config_error *err, struct route_config *r, const json_t *v)
{
    static const char *const keys[] = {"location", "status", NULL};
    r->action = ROUTE_REDIRECT;
    r->redirect_status = 302;
    size_t mark = path_push(err, ".redirect");
    if (want_object(err, v, "{\"location\": \"https://example.com/\", \"status\": 301}")) {
        check_keys(err, v, keys, false);
        const char *location = get_string(err, v, "location", true, true);
        if (location && has_crlf(location))
            key_error(err, "location", "must not contain CR or LF");
        else if (location)
            r->redirect_location = xstrdup(location);
        const json_t *status = json_object_get(v, "status");
        if (status) {
            long long st = json_integer_value(status);
            if (!json_is_integer(status) ||
                !(st == 301 || st == 302 || st == 303 || st == 307 || st == 308))
                key_error(err, "status", "must be one of 301, 302, 303, 307, 308");
            else
                r->redirect_status = (int)st;
        }
    }
    /* Keep the struct whole for router_compile even when the value was wrong. */
    if (!r->redirect_location)
        r->redirect_location = xstrdup("/");
    path_pop(err, mark);
}

/* Lists the names of the upstreams for "unknown upstream" messages. */
static char *upstream_names(const struct snapshot *s)
{
    struct buf b = {0};
    for (size_t i = 0; i < s->num_upstreams; i++) {
        if (i)
            buf_str(&b, ", ");
        buf_str(&b, s->upstreams[i].name);
    }
    return b.data;
}

static void build_route(struct config_error *err, struct snapshot *s, struct route_config *r,
                        const json_t *v)
{
    static const char *const keys[] = {"name",    "match",      "upstream",  "respond", "redirect",
                                       "filters", "timeout_ms", "websocket", NULL};
    char defname[32];
    snprintf(defname, sizeof defname, "routes[%zu]", r->index);
    r->websocket = true;
    r->action = ROUTE_RESPOND;
    if (!want_object(err, v, "{\"match\": {\"prefix\": \"/\"}, \"upstream\": \"NAME\"}")) {
        r->name = xstrdup(defname);
        r->respond_status = 404;
        r->respond_body = xstrdup("");
        return;
    }
    check_keys(err, v, keys, false);
    const char *name = get_string(err, v, "name", false, true);
    r->name = xstrdup(name ? name : defname);

    build_match(err, r, json_object_get(v, "match"));

    const json_t *upstream = json_object_get(v, "upstream");
    const json_t *respond = json_object_get(v, "respond");
    const json_t *redirect = json_object_get(v, "redirect");
    int actions = !!upstream + !!respond + !!redirect;
    if (actions == 0)
        config_error_add(err, "", "a route needs one of \"upstream\", \"respond\" or \"redirect\"");
    else if (actions > 1)
        config_error_add(err, "", "use only one of \"upstream\", \"respond\", \"redirect\"");
    if (upstream) {
        r->action = ROUTE_UPSTREAM;
        const char *uname = get_string(err, v, "upstream", true, true);
        if (uname) {
            r->upstream = config_upstream(s, uname);
            if (!r->upstream && s->num_upstreams) {
                char *names = upstream_names(s);
                key_error(err, "upstream", "unknown upstream \"%s\" (defined: %s)", uname, names);
                free(names);
            } else if (!r->upstream) {
                key_error(err, "upstream",
                          "unknown upstream \"%s\" (no upstreams are defined; add it under "
                          "\"upstreams\")",
                          uname);
            }
        }
    } else if (respond) {
        build_respond(err, r, respond);
    } else if (redirect) {
        build_redirect(err, r, redirect);
    }
    if (r->action == ROUTE_RESPOND && !r->respond_body) {
        r->respond_status = 404;
        r->respond_body = xstrdup("");
    }

    build_filters(err, json_object_get(v, "filters"), &r->filters, &r->num_filters);
    get_int(err, v, "timeout_ms", 1, &r->timeout_ms);
    get_bool(err, v, "websocket", &r->websocket);
}

static void build_routes(struct config_error *err, struct snapshot *s, const json_t *v)
{
    if (!v) {
        config_error_add(err, ".routes",
                         "missing: add a \"routes\" array, e.g. [{\"match\": {\"prefix\": "
                         "\"/\"}, \"upstream\": \"NAME\"}]");
        return;
    }
    if (!json_is_array(v)) {
        config_error_add(err, ".routes", "must be an array of routes, not %s", kind(v));
        return;
    }
    size_t n = json_array_size(v);
    if (n == 0)
        return;
    s->routes = xcalloc(n, sizeof *s->routes);
    s->num_routes = n;
    size_t mark = path_push(err, ".routes");
    for (size_t i = 0; i < n; i++) {
        size_t m2 = path_push_index(err, i);
        s->routes[i].index = i;
        build_route(err, s, &s->routes[i], json_array_get(v, i));
        path_pop(err, m2);
    }
    path_pop(err, mark);
}

/* ---------------------------------------------------------------- other sections */

static void build_admin(struct config_error *err, struct admin_config *a, const json_t *v)
{
    static const char *const keys[] = {"address", NULL};
    if (!v)
        return;
    size_t mark = path_push(err, ".admin");
    if (want_object(err, v, "{\"address\": \"127.0.0.1:9901\"}")) {
        check_keys(err, v, keys, false);
        const char *address = get_string(err, v, "address", true, true);
        char why[200];
        if (address && parse_bind_address(address, &a->addr, &a->addrlen, why, sizeof why)) {
            a->address = xstrdup(address);
            a->enabled = true;
        } else if (address) {
            key_error(err, "address",
                      "invalid address \"%s\": %s (expected IP:PORT, e.g. "
                      "\"127.0.0.1:9901\")",
                      address, why);
        }
    }
    path_pop(err, mark);
}

static void build_access_log(struct config_error *err, struct access_log_config *l, const json_t *v)
{
    static const char *const keys[] = {"path", "format", NULL};
    l->format = ACCESS_LOG_JSON;
    const char *path = NULL;
    size_t mark = path_push(err, ".access_log");
    if (v && want_object(err, v, "{\"path\": \"-\", \"format\": \"json\"}")) {
        check_keys(err, v, keys, false);
        path = get_string(err, v, "path", false, true);
        const char *format = get_string(err, v, "format", false, false);
        if (format && strcmp(format, "combined") == 0)
            l->format = ACCESS_LOG_COMBINED;
        else if (format && strcmp(format, "json") != 0)
            key_error(err, "format", "unknown format \"%s\" (expected one of: json, combined)",
                      format);
    }
    path_pop(err, mark);
    if (path && strcmp(path, "off") == 0)
        l->off = true; /* path stays NULL */
    else if (path && strcmp(path, "-") != 0)
        l->path = config_resolve_path(err, path);
    else
        l->path = xstrdup("-");
}

static void build_limits(struct config_error *err, struct limits_config *l, const json_t *v)
{
    static const char *const keys[] = {"max_connections",
                                       "header_timeout_ms",
                                       "idle_timeout_ms",
                                       "body_timeout_ms",
                                       "max_header_bytes",
                                       "max_headers",
                                       "max_body_bytes",
                                       "drain_timeout_ms",
                                       "websocket_idle_timeout_ms",
                                       "h2_max_concurrent_streams",
                                       NULL};
    l->max_connections = 65536;
    l->header_timeout_ms = 10000;
    l->idle_timeout_ms = 60000;
    l->body_timeout_ms = 30000;
    l->max_header_bytes = 16384;
    l->max_headers = 100;
    l->max_body_bytes = 0;
    l->drain_timeout_ms = 10000;
    l->websocket_idle_timeout_ms = 300000;
    l->h2_max_concurrent_streams = 128;
    if (!v)
        return;
    size_t mark = path_push(err, ".limits");
    if (want_object(err, v, "{\"max_body_bytes\": 1048576}")) {
        check_keys(err, v, keys, false);
        get_int(err, v, "max_connections", 1, &l->max_connections);
        get_int(err, v, "header_timeout_ms", 1, &l->header_timeout_ms);
        get_int(err, v, "idle_timeout_ms", 1, &l->idle_timeout_ms);
        get_int(err, v, "body_timeout_ms", 1, &l->body_timeout_ms);
        get_int(err, v, "max_header_bytes", 1, &l->max_header_bytes);
        get_int(err, v, "max_headers", 1, &l->max_headers);
        long long body = 0;
        if (get_llong(err, v, "max_body_bytes", 0, LLONG_MAX, &body))
            l->max_body_bytes = (uint64_t)body;
        get_int(err, v, "drain_timeout_ms", 1, &l->drain_timeout_ms);
        get_int(err, v, "websocket_idle_timeout_ms", 1, &l->websocket_idle_timeout_ms);
        get_int(err, v, "h2_max_concurrent_streams", 1, &l->h2_max_concurrent_streams);
    }
    path_pop(err, mark);
}

static void build_redis(struct config_error *err, struct redis_config *r, const json_t *v)
{
    static const char *const keys[] = {"address", "password", "database", "timeout_ms", NULL};
    r->timeout_ms = 1000;
    if (!v)
        return;
    size_t mark = path_push(err, ".redis");
    if (want_object(err, v, "{\"address\": \"127.0.0.1:6379\"}")) {
        check_keys(err, v, keys, false);
        const char *address = get_string(err, v, "address", true, true);
        if (address) {
            char *host = NULL;
            uint16_t port;
            char why[200];
            if (parse_target_address(address, &host, &port, why, sizeof why)) {
                r->address = xstrdup(address);
                r->enabled = true;
            } else {
                key_error(err, "address",
                          "invalid address \"%s\": %s (expected HOST:PORT, e.g. "
                          "\"127.0.0.1:6379\")",
                          address, why);
            }
            free(host);
        }
        const char *password = get_string(err, v, "password", false, false);
        if (password)
            r->password = xstrdup(password);
        get_int(err, v, "database", 0, &r->database);
        get_int(err, v, "timeout_ms", 1, &r->timeout_ms);
    }
    path_pop(err, mark);
}

static void build(struct config_error *err, struct snapshot *s, const json_t *root)
{
    static const char *const keys[] = {"workers", "listen",     "upstreams", "routes", "filters",
                                       "admin",   "access_log", "limits",    "redis",  NULL};
    if (!json_is_object(root)) {
        config_error_add(err, "", "the configuration must be a JSON object, not %s", kind(root));
        build_access_log(err, &s->access_log, NULL);
        build_limits(err, &s->limits, NULL);
        return;
    }
    check_keys(err, root, keys, false);
    long long workers = 0;
    if (get_llong(err, root, "workers", 0, 1024, &workers))
        s->workers = (int)workers;
    build_listeners(err, s, json_object_get(root, "listen"));
    build_upstreams(err, s, json_object_get(root, "upstreams"));
    build_routes(err, s, json_object_get(root, "routes"));
    build_filters(err, json_object_get(root, "filters"), &s->filters, &s->num_filters);
    build_admin(err, &s->admin, json_object_get(root, "admin"));
    build_access_log(err, &s->access_log, json_object_get(root, "access_log"));
    build_limits(err, &s->limits, json_object_get(root, "limits"));
    build_redis(err, &s->redis, json_object_get(root, "redis"));

    for (size_t i = 0; s->admin.enabled && i < s->num_listeners; i++)
        if (same_addr(&s->admin.addr, s->admin.addrlen, &s->listeners[i].addr,
                      s->listeners[i].addrlen)) {
            config_error_add(err, ".admin.address", "the same address as listen[%zu]", i);
            break;
        }
}

/* ---------------------------------------------------------------- redaction */

static bool is_secret_key(const char *key)
{
    static const char *const secrets[] = {"secret", "keys", "users", "password", "key", NULL};
    for (size_t i = 0; secrets[i]; i++)
        if (strcmp(key, secrets[i]) == 0)
            return true;
    return false;
}

/* Replaces the values of secret keys at any depth by "***" (SPEC 5 /config). */
static void redact(json_t *node)
{
    if (json_is_object(node)) {
        const char *key;
        json_t *value;
        json_object_foreach(node, key, value)
        {
            if (is_secret_key(key))
                json_object_set_new(node, key, json_string("***"));
            else
                redact(value);
        }
    } else if (json_is_array(node)) {
        size_t i;
        json_t *value;
        json_array_foreach(node, i, value) redact(value);
    }
}

/* ---------------------------------------------------------------- load and free */

static void free_match_values(struct match_value *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].name);
        free(m[i].value);
        free(m[i].regex_source);
    }
    free(m);
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/*
 * Frees a snapshot whatever state loading left it in. Compiled patterns and
 * the router index belong to router_free(); filter instances to their type.
 */
static void snapshot_free(struct snapshot *s)
{
    if (!s)
        return;
    router_free(s);
    free_filters(s->filters, s->num_filters);
    for (size_t i = 0; i < s->num_routes; i++) {
        struct route_config *r = &s->routes[i];
        free_filters(r->filters, r->num_filters);
        free(r->name);
        free(r->path);
        free(r->regex_source);
        free_strings(r->hosts, r->num_hosts);
        free_strings(r->methods, r->num_methods);
        free_match_values(r->headers, r->num_headers);
        free_match_values(r->query, r->num_query);
        free(r->respond_body);
        for (size_t j = 0; j < r->num_respond_headers; j++) {
            free((void *)r->respond_headers[j].name.base);
            free((void *)r->respond_headers[j].value.base);
        }
        free(r->respond_headers);
        free(r->redirect_location);
    }
    free(s->routes);
    for (size_t i = 0; i < s->num_upstreams; i++) {
        struct upstream_config *u = &s->upstreams[i];
        free(u->name);
        for (size_t j = 0; j < u->num_targets; j++)
            free(u->targets[j].host);
        free(u->targets);
        free(u->balance_header);
        free(u->health.path);
        tls_client_free(u->tls);
    }
    free(s->upstreams);
    for (size_t i = 0; i < s->num_listeners; i++) {
        free(s->listeners[i].address);
        tls_server_free(s->listeners[i].tls);
    }
    free(s->listeners);
    free(s->admin.address);
    free(s->access_log.path);
    free(s->redis.address);
    free(s->redis.password);
    json_decref(s->redacted);
    free(s->file);
    free(s->dir);
    free(s);
}

static char *read_file(const char *file, size_t *len, struct config_error *err)
{
    FILE *f = fopen(file, "rb");
    struct buf b = {0};
    bool ok = false;
    if (!f) {
        config_error_raw(err, "%s: cannot read: %s", file, strerror(errno));
        return NULL;
    }
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        buf_add(&b, chunk, n);
        if (b.len > CONFIG_MAX_FILE_BYTES) {
            config_error_raw(err, "%s: cannot read: the file is larger than %u bytes", file,
                             CONFIG_MAX_FILE_BYTES);
            goto out;
        }
    }
    if (ferror(f)) {
        config_error_raw(err, "%s: cannot read: %s", file, strerror(errno));
        goto out;
    }
    if (!b.data)
        buf_add(&b, "", 0);
    *len = b.len;
    ok = true;
out:
    fclose(f);
    if (!ok) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

static char *dir_of(const char *file)
{
    const char *slash = strrchr(file, '/');
    if (!slash)
        return xstrdup(".");
    if (slash == file)
        return xstrdup("/");
    return xstrndup(file, (size_t)(slash - file));
}

static atomic_uint_least64_t load_generation;

struct snapshot *config_load(const char *file, struct config_error *err)
{
    struct snapshot *s = NULL, *result = NULL;
    json_t *root = NULL;
    size_t len = 0;
    size_t before = err->count;

    err->file = file;
    err->path[0] = '\0';
    char *text = read_file(file, &len, err);
    if (!text)
        goto out;

    json_error_t jerr;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        config_error_raw(err, "%s:%d:%d: syntax error: %s", file, jerr.line, jerr.column,
                         jerr.text);
        goto out;
    }

    s = xcalloc(1, sizeof *s);
    atomic_init(&s->refs, 1);
    s->file = xstrdup(file);
    s->dir = dir_of(file);
    err->dir = s->dir;

    /* Unset variables would only cause follow-on errors, so stop after this phase. */
    substitute(err, root);
    if (err->count > before)
        goto out;

    build(err, s, root);
    err->path[0] = '\0';
    /* Called even after errors so regex mistakes are reported in the same run. */
    size_t before_router = err->count;
    if (router_compile(s, err) != 0 && err->count == before_router)
        config_error_raw(err, "%s: the route table could not be compiled", file);
    err->path[0] = '\0';
    if (err->count > before)
        goto out;

    s->redacted = json_deep_copy(root);
    if (!s->redacted) {
        config_error_raw(err, "%s: out of memory", file);
        goto out;
    }
    redact(s->redacted);
    s->generation = atomic_fetch_add(&load_generation, 1) + 1;
    result = s;
    s = NULL;
out:
    err->dir = NULL; /* it pointed into the snapshot */
    snapshot_free(s);
    json_decref(root);
    free(text);
    return result;
}

struct snapshot *snapshot_hold(struct snapshot *s)
{
    if (s)
        atomic_fetch_add(&s->refs, 1);
    return s;
}

void snapshot_release(struct snapshot *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        snapshot_free(s);
}

/* ---------------------------------------------------------------- the configuration in force */

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snapshot *current;
static atomic_uint_least64_t current_generation;

void config_current_set(struct snapshot *s)
{
    pthread_mutex_lock(&current_lock);
    struct snapshot *old = current;
    current = s;
    atomic_store(&current_generation, s ? s->generation : 0);
    pthread_mutex_unlock(&current_lock);
    /* Outside the lock: freeing runs filter destructors. */
    snapshot_release(old);
}

struct snapshot *config_current_hold(void)
{
    pthread_mutex_lock(&current_lock);
    struct snapshot *s = snapshot_hold(current);
    pthread_mutex_unlock(&current_lock);
    return s;
}

uint64_t config_current_generation(void)
{
    return atomic_load(&current_generation);
}
