/*
 * config: loads the JSON configuration (SPEC 2, SPEC 7) into a snapshot.
 *
 * Loading runs in phases over one jansson tree: read and parse the file
 * (syntax errors carry line and column), substitute ${NAME} environment
 * variables in every string value, then compile each section into the
 * structs of config.h, reporting every problem with its JSON path and going
 * on, so one run lists all the errors of the file. Regexes are compiled by
 * router_compile() and filter options by each filter type's create().
 *
 * This file holds the load itself, the top level, the /config redaction
 * and the snapshot's lifetime; each section has its own config_<section>.c,
 * errors and getters are in config_error.c and ${NAME} in env.c.
 */
#include "conf/config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "conf/config_int.h"
#include "conf/env.h"
#include "core/filter.h"
#include "core/router.h"
#include "net/addr.h"
#include "net/tls.h"

/* A configuration larger than this is surely a mistake (a log file given by -c). */
#define CONFIG_MAX_FILE_BYTES (16u * 1024 * 1024)

/* ---------------------------------------------------------------- top level */

/*
 * Filters that share state through Redis (rate_limit's "redis" store) need
 * the top-level "redis" section; one error per such filter, at its option.
 */
static void check_redis_filters(struct config_error *err, struct redis_config *r, bool present,
                                const struct filter_instance *f, size_t n)
{
    size_t mark = config_path_push(err, ".filters");
    for (size_t i = 0; i < n; i++) {
        const char *option = f[i].type->needs_redis ? f[i].type->needs_redis(f[i].instance) : NULL;
        if (!option)
            continue;
        r->used = true;
        if (present)
            continue; /* an invalid "redis" section has its own error */
        size_t at = config_path_push_index(err, i);
        config_error_add(err, option,
                         "needs a Redis server: add a top-level \"redis\": {\"address\": "
                         "\"HOST:PORT\"}, or use \"store\": \"local\"");
        config_path_pop(err, at);
    }
    config_path_pop(err, mark);
}

static void check_redis_users(struct config_error *err, struct snapshot *s, bool present)
{
    check_redis_filters(err, &s->redis, present, s->filters, s->num_filters);
    for (size_t r = 0; r < s->num_routes; r++) {
        size_t mark = config_path_push(err, ".routes");
        config_path_push_index(err, r);
        check_redis_filters(err, &s->redis, present, s->routes[r].filters,
                            s->routes[r].num_filters);
        config_path_pop(err, mark);
    }
}

static void build(struct config_error *err, struct snapshot *s, const json_t *root)
{
    /* "$schema" names the JSON Schema editors check the file against (SPEC 7): ignored. */
    static const char *const keys[] = {"workers", "listen",  "upstreams",  "routes",
                                       "filters", "admin",   "access_log", "limits",
                                       "redis",   "$schema", NULL};
    if (!json_is_object(root)) {
        config_error_add(err, "", "the configuration must be a JSON object, not %s",
                         config_json_kind(root));
        config_build_access_log(err, &s->access_log, NULL);
        config_build_limits(err, &s->limits, NULL);
        return;
    }
    config_check_keys_strict(err, root, keys);
    const json_t *schema = json_object_get(root, "$schema");
    if (schema && !json_is_string(schema))
        config_error_add(err, "[\"$schema\"]",
                         "must be a string (the schema's file name or URL, e.g. "
                         "\"./sluice.schema.json\"), not %s",
                         config_json_kind(schema));
    long long workers = 0;
    if (config_get_llong(err, root, "workers", 0, 1024, &workers))
        s->workers = (int)workers;
    config_build_listeners(err, s, json_object_get(root, "listen"));
    config_build_upstreams(err, s, json_object_get(root, "upstreams"));
    config_build_routes(err, s, json_object_get(root, "routes"));
    config_build_filters(err, json_object_get(root, "filters"), &s->filters, &s->num_filters);
    config_build_admin(err, &s->admin, json_object_get(root, "admin"));
    config_build_access_log(err, &s->access_log, json_object_get(root, "access_log"));
    config_build_limits(err, &s->limits, json_object_get(root, "limits"));
    config_build_redis(err, &s->redis, json_object_get(root, "redis"));

    check_redis_users(err, s, json_object_get(root, "redis") != NULL);

    for (size_t i = 0; s->admin.enabled && i < s->num_listeners; i++)
        if (addr_same(&s->admin.addr, s->admin.addrlen, &s->listeners[i].addr,
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
    config_free_filters(s->filters, s->num_filters);
    for (size_t i = 0; i < s->num_routes; i++) {
        struct route_config *r = &s->routes[i];
        config_free_filters(r->filters, r->num_filters);
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
    free(s->redis.username);
    free(s->redis.password);
    json_decref(s->redacted);
    free(s->file);
    free(s->dir);
    free(s);
}

static char *read_file(const char *file, size_t *len, struct config_error *err)
{
    struct buf b = {0};
    bool ok = false;
    FILE *f = file_open_regular(file);
    if (!f) {
        config_error_raw(err, "%s: cannot read: %s", file, file_strerror(errno));
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

/*
 * The JSON path of the last number that starts before `end` in `text`, a
 * prefix that parsed without error: how a number too big for jansson is
 * reported by its key, as any other bad value. False when there is none.
 */
static bool number_path(const char *text, size_t end, char *out, size_t cap)
{
    enum { MAX_DEPTH = 64 };
    struct {
        bool array;
        size_t index;
        char key[256];
    } stack[MAX_DEPTH];
    int depth = 0;
    bool in_string = false, escape = false, in_number = false, found = false;
    bool expect_key = false;
    size_t key_len = 0;
    for (size_t i = 0; i < end && text[i]; i++) {
        char c = text[i];
        if (in_string) {
            bool keep = true;
            if (escape) {
                escape = false;
            } else if (c == '\\') {
                escape = true;
                keep = false; /* \" and \\ keep the next character; the rest is only a name */
            } else if (c == '"') {
                in_string = false;
            }
            if (keep && in_string && expect_key && depth > 0 && key_len + 1 < sizeof stack[0].key)
                stack[depth - 1].key[key_len++] = c;
            if (!in_string && expect_key && depth > 0) {
                stack[depth - 1].key[key_len] = '\0';
                expect_key = false;
            }
            continue;
        }
        bool digit = c == '-' || (c >= '0' && c <= '9');
        if (digit && !in_number) {
            out[0] = '\0';
            size_t n = 0;
            for (int d = 0; d < depth && n < cap; d++) {
                if (stack[d].array)
                    n += (size_t)snprintf(out + n, cap - n, "[%zu]", stack[d].index);
                else
                    config_path_member(out + n, cap - n, stack[d].key);
                n = strlen(out);
            }
            if (out[0] == '.')
                memmove(out, out + 1, strlen(out));
            found = depth > 0;
        }
        in_number = digit || (in_number && (c == '.' || c == 'e' || c == 'E' || c == '+'));
        switch (c) {
        case '"':
            in_string = true;
            key_len = 0;
            break;
        case '{':
        case '[':
            if (depth == MAX_DEPTH)
                return false;
            stack[depth].array = c == '[';
            stack[depth].index = 0;
            stack[depth].key[0] = '\0';
            depth++;
            expect_key = c == '{';
            break;
        case '}':
        case ']':
            if (depth > 0)
                depth--;
            expect_key = false;
            break;
        case ',':
            if (depth > 0 && stack[depth - 1].array)
                stack[depth - 1].index++;
            else
                expect_key = true;
            break;
        default:
            break;
        }
    }
    return found;
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
    size_t len = 0;
    err->file = file;
    err->path[0] = '\0';
    char *text = read_file(file, &len, err);
    if (!text)
        return NULL;
    struct snapshot *s = config_load_text(file, text, len, err);
    free(text);
    return s;
}

struct snapshot *config_load_text(const char *file, const char *text, size_t len,
                                  struct config_error *err)
{
    struct snapshot *s = NULL, *result = NULL;
    json_t *root = NULL;
    size_t before = err->count;

    err->file = file;
    err->path[0] = '\0';
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        config_error_raw(err,
                         "%s:1:1: syntax error: a UTF-8 byte order mark (BOM) at the start of the "
                         "file: save the file without it",
                         file);
        goto out;
    }
    json_error_t jerr;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char path[sizeof err->path];
        if (json_error_code(&jerr) == json_error_numeric_overflow &&
            number_path(text, (size_t)jerr.position, path, sizeof path))
            config_error_raw(err, "%s: %s: %s (line %d, column %d)", file, path, jerr.text,
                             jerr.line, jerr.column);
        else
            config_error_raw(err, "%s:%d:%d: syntax error: %s", file, jerr.line, jerr.column,
                             jerr.text);
        goto out;
    }

    s = xcalloc(1, sizeof *s);
    atomic_init(&s->refs, 1);
    s->file = xstrdup(file);
    s->dir = dir_of(file);
    err->dir = s->dir;

    /*
     * An unset variable mutes its own path (its empty value would only cause
     * follow-on errors there), and the sections are read anyway so that the
     * run reports every other error of the file too (SPEC 2).
     */
    env_substitute(err, root);

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
