/*
 * config_error: errors by JSON path, "did you mean" for unknown keys, and the
 * typed getters shared by the sections of the loader and by filters.
 */
#include "conf/config_error.h"

#include <ctype.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "conf/config_int.h"

/* ---------------------------------------------------------------- memory */

void config_out_of_memory(void)
{
    log_error("out of memory while loading the configuration");
    abort();
}

void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data)
            config_out_of_memory();
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
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

/* Appends `step` to err->path; returns the previous length for config_path_pop(). */
size_t config_path_push(struct config_error *err, const char *step)
{
    size_t len = strlen(err->path);
    if (len == 0 && step[0] == '.')
        step++;
    snprintf(err->path + len, sizeof err->path - len, "%s", step);
    return len;
}

size_t config_path_push_key(struct config_error *err, const char *key)
{
    char step[300];
    config_path_member(step, sizeof step, key);
    return config_path_push(err, step);
}

size_t config_path_push_index(struct config_error *err, size_t i)
{
    char step[32];
    snprintf(step, sizeof step, "[%zu]", i);
    return config_path_push(err, step);
}

void config_path_pop(struct config_error *err, size_t len)
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

/* True when `path` is a muted path or lies below one ("a.b" mutes "a.b", "a.b.c", "a.b[0]"). */
static bool is_muted(const struct config_error *err, const char *path)
{
    for (size_t i = 0; i < err->num_muted; i++) {
        size_t n = strlen(err->muted[i]);
        if (strncmp(path, err->muted[i], n) == 0 &&
            (path[n] == '\0' || path[n] == '.' || path[n] == '['))
            return true;
    }
    return false;
}

void config_error_mute(struct config_error *err)
{
    if (is_muted(err, err->path))
        return;
    char **m = realloc(err->muted, (err->num_muted + 1) * sizeof *m);
    if (!m)
        config_out_of_memory();
    err->muted = m;
    err->muted[err->num_muted++] = xstrdup(err->path);
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

    if (is_muted(err, path))
        return;
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

void config_key_error(struct config_error *err, const char *key, const char *fmt, ...)
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
    for (size_t i = 0; i < err->num_muted; i++)
        free(err->muted[i]);
    free(err->muted);
    err->muted = NULL;
    err->num_muted = 0;
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
            config_key_error(err, key, "unknown key; did you mean \"%s\"? (expected one of: %s)",
                             best, list.data);
        else
            config_key_error(
                err, key,
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

int config_check_keys_strict(struct config_error *err, const json_t *obj,
                             const char *const *allowed)
{
    return check_keys(err, obj, allowed, false);
}

/* RFC 9110 5.6.2 tchar. */
static bool is_tchar(char c)
{
    return isalnum((unsigned char)c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

bool config_is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_tchar(s[i]))
            return false;
    return true;
}

char *config_resolve_path(const struct config_error *err, const char *name)
{
    if (err->file_root) {
        const char *slash = strrchr(name, '/');
        const char *last = slash ? slash + 1 : name;
        if (!last[0] || strcmp(last, ".") == 0 || strcmp(last, "..") == 0)
            last = "-"; /* never the folder itself or its parent */
        size_t n = strlen(err->file_root) + strlen(last) + 2;
        char *p = xmalloc(n);
        snprintf(p, n, "%s/%s", err->file_root, last);
        return p;
    }
    if (name[0] == '/' || !err->dir || !err->dir[0])
        return xstrdup(name);
    size_t n = strlen(err->dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", err->dir, name);
    return p;
}

/* ---------------------------------------------------------------- typed getters */

const char *config_json_kind(const json_t *v)
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
bool config_get_llong(struct config_error *err, const json_t *obj, const char *key, long long min,
                      long long max, long long *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return true;
    char want[64];
    describe_range(want, sizeof want, min, max);
    if (!json_is_integer(v)) {
        config_key_error(err, key, "must be %s, not %s", want, config_json_kind(v));
        return false;
    }
    long long n = json_integer_value(v);
    if (n < min || n > max) {
        config_key_error(err, key, "must be %s, not %lld", want, n);
        return false;
    }
    *out = n;
    return true;
}

bool config_get_int(struct config_error *err, const json_t *obj, const char *key, long long min,
                    int *out)
{
    long long n = *out;
    if (!config_get_llong(err, obj, key, min, INT_MAX, &n))
        return false;
    *out = (int)n;
    return true;
}

bool config_get_bool(struct config_error *err, const json_t *obj, const char *key, bool *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return true;
    if (!json_is_boolean(v)) {
        config_key_error(err, key, "must be true or false, not %s", config_json_kind(v));
        return false;
    }
    *out = json_is_true(v);
    return true;
}

/*
 * Reads obj[key] as a string. Returns the jansson string (owned by the
 * tree) or NULL when absent or wrong; `required` reports an absent key.
 */
const char *config_get_string(struct config_error *err, const json_t *obj, const char *key,
                              bool required, bool nonempty)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            config_key_error(err, key, "missing (a string is required here)");
        return NULL;
    }
    if (!json_is_string(v)) {
        config_key_error(err, key, "must be a string, not %s", config_json_kind(v));
        return NULL;
    }
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v)) {
        config_key_error(err, key, "must not contain a NUL character");
        return NULL;
    }
    if (nonempty && !s[0]) {
        config_key_error(err, key, "must not be empty");
        return NULL;
    }
    return s;
}

bool config_want_object(struct config_error *err, const json_t *v, const char *example)
{
    if (json_is_object(v))
        return true;
    config_error_add(err, "", "must be an object%s%s, not %s", example ? ", e.g. " : "",
                     example ? example : "", config_json_kind(v));
    return false;
}
