/*
 * config_routes: the "routes" section (SPEC 2.4): match, the action
 * (upstream, respond, redirect), the route's filters and timeouts. The
 * patterns are compiled later, by router_compile().
 */
#include <stdlib.h>
#include <string.h>

#include "conf/config_int.h"
#include "net/addr.h"

/* Reads a non-empty array of strings at obj[key]; returns malloc'd copies. */
static char **get_string_array(struct config_error *err, const json_t *obj, const char *key,
                               size_t *count, const char *example)
{
    const json_t *v = json_object_get(obj, key);
    *count = 0;
    if (!v)
        return NULL;
    if (!json_is_array(v) || json_array_size(v) == 0) {
        config_key_error(err, key, "must be a non-empty array of strings, e.g. %s", example);
        return NULL;
    }
    size_t n = json_array_size(v);
    char **out = xcalloc(n, sizeof *out);
    size_t mark = config_path_push_key(err, key);
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(v, i);
        if (!json_is_string(item)) {
            size_t m2 = config_path_push_index(err, i);
            config_error_add(err, "", "must be a string, not %s", config_json_kind(item));
            config_path_pop(err, m2);
            continue;
        }
        out[(*count)++] = xstrdup(json_string_value(item));
    }
    config_path_pop(err, mark);
    return out;
}

static void check_hosts(struct config_error *err, struct route_config *r)
{
    size_t mark = config_path_push(err, ".hosts");
    for (size_t i = 0; i < r->num_hosts; i++) {
        char *h = r->hosts[i];
        lower(h);
        const char *name = strncmp(h, "*.", 2) == 0 ? h + 2 : h;
        size_t m2 = config_path_push_index(err, i);
        if (strchr(name, '*'))
            config_error_add(err, "",
                             "\"%s\": a wildcard is only allowed as a leading \"*.\", e.g. "
                             "\"*.example.org\"",
                             h);
        else if (!addr_is_hostname(name))
            config_error_add(err, "",
                             "\"%s\" is not a host name (write it without a port, e.g. "
                             "\"api.example.com\")",
                             h);
        config_path_pop(err, m2);
    }
    config_path_pop(err, mark);
}

static void build_match_values(struct config_error *err, const json_t *obj, const char *key,
                               bool header_names, struct match_value **out, size_t *count)
{
    const json_t *v = json_object_get(obj, key);
    *count = 0;
    if (!v)
        return;
    if (!json_is_object(v)) {
        config_key_error(err, key,
                         "must be an object of {\"name\": \"value\"} or {\"name\": {\"regex\": "
                         "\"...\"}}, not %s",
                         config_json_kind(v));
        return;
    }
    static const char *const regex_keys[] = {"regex", NULL};
    size_t n = json_object_size(v);
    if (n == 0)
        return;
    *out = xcalloc(n, sizeof **out);
    size_t mark = config_path_push_key(err, key);
    const char *name;
    json_t *item;
    json_object_foreach((json_t *)v, name, item)
    {
        size_t m2 = config_path_push_key(err, name);
        if (header_names && !is_token(name)) {
            config_error_add(err, "", "\"%s\" is not a valid header name", name);
        } else if (json_is_string(item)) {
            struct match_value *m = &(*out)[(*count)++];
            m->name = xstrdup(name);
            if (header_names)
                lower(m->name);
            m->value = xstrdup(json_string_value(item));
        } else if (json_is_object(item)) {
            config_check_keys_strict(err, item, regex_keys);
            const char *re = config_get_string(err, item, "regex", true, true);
            if (re) {
                struct match_value *m = &(*out)[(*count)++];
                m->name = xstrdup(name);
                if (header_names)
                    lower(m->name);
                m->regex_source = xstrdup(re);
            }
        } else {
            config_error_add(err, "", "must be a string or {\"regex\": \"...\"}, not %s",
                             config_json_kind(item));
        }
        config_path_pop(err, m2);
    }
    config_path_pop(err, mark);
}

static void build_match(struct config_error *err, struct route_config *r, const json_t *v)
{
    static const char *const keys[] = {"prefix",  "path",    "regex", "hosts",
                                       "methods", "headers", "query", NULL};
    if (!v)
        return;
    size_t mark = config_path_push(err, ".match");
    if (!config_want_object(err, v, "{\"prefix\": \"/api\"}")) {
        config_path_pop(err, mark);
        return;
    }
    config_check_keys_strict(err, v, keys);

    int kinds = !!json_object_get(v, "prefix") + !!json_object_get(v, "path") +
                !!json_object_get(v, "regex");
    if (kinds > 1) {
        config_error_add(err, "", "use only one of prefix, path, regex");
    } else if (json_object_get(v, "regex")) {
        const char *re = config_get_string(err, v, "regex", true, true);
        if (re) {
            r->match = MATCH_REGEX;
            r->regex_source = xstrdup(re);
        }
    } else if (kinds == 1) {
        const char *key = json_object_get(v, "prefix") ? "prefix" : "path";
        const char *p = config_get_string(err, v, key, true, true);
        if (p && p[0] != '/') {
            config_key_error(err, key, "must start with '/', e.g. \"/%s\"", p);
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
    config_path_pop(err, mark);
}

static void build_respond(struct config_error *err, struct route_config *r, const json_t *v)
{
    static const char *const keys[] = {"status", "body", "headers", NULL};
    r->action = ROUTE_RESPOND;
    r->respond_status = 200;
    size_t mark = config_path_push(err, ".respond");
    if (!config_want_object(err, v, "{\"status\": 200, \"body\": \"ok\"}")) {
        config_path_pop(err, mark);
        r->respond_body = xstrdup("");
        return;
    }
    config_check_keys_strict(err, v, keys);
    long long status = 200;
    if (config_get_llong(err, v, "status", 100, 599, &status))
        r->respond_status = (int)status;
    const json_t *body = json_object_get(v, "body");
    if (body && !json_is_string(body)) {
        config_key_error(err, "body", "must be a string, not %s", config_json_kind(body));
    } else if (body) {
        r->respond_body_len = json_string_length(body);
        r->respond_body = xstrndup(json_string_value(body), r->respond_body_len);
    }
    if (!r->respond_body)
        r->respond_body = xstrdup("");

    const json_t *headers = json_object_get(v, "headers");
    if (headers && !json_is_object(headers)) {
        config_key_error(err, "headers", "must be an object of {\"name\": \"value\"}, not %s",
                         config_json_kind(headers));
    } else if (headers && json_object_size(headers)) {
        r->respond_headers = xcalloc(json_object_size(headers), sizeof *r->respond_headers);
        size_t m2 = config_path_push(err, ".headers");
        const char *name;
        json_t *value;
        json_object_foreach((json_t *)headers, name, value)
        {
            const char *text = json_string_value(value);
            if (!is_token(name))
                config_key_error(err, name, "\"%s\" is not a valid header name", name);
            else if (!text)
                config_key_error(err, name, "must be a string, not %s", config_json_kind(value));
            else if (has_crlf(text) || strlen(text) != json_string_length(value))
                config_key_error(err, name, "must not contain CR, LF or NUL");
            else {
                struct header *h = &r->respond_headers[r->num_respond_headers++];
                h->name = slice_cstr(xstrdup(name));
                h->value = slice_cstr(xstrdup(text));
            }
        }
        config_path_pop(err, m2);
    }
    config_path_pop(err, mark);
}

static void build_redirect(struct config_error *err, struct route_config *r, const json_t *v)
{
    static const char *const keys[] = {"location", "status", NULL};
    r->action = ROUTE_REDIRECT;
    r->redirect_status = 302;
    size_t mark = config_path_push(err, ".redirect");
    if (config_want_object(err, v, "{\"location\": \"https://example.com/\", \"status\": 301}")) {
        config_check_keys_strict(err, v, keys);
        const char *location = config_get_string(err, v, "location", true, true);
        if (location && has_crlf(location))
            config_key_error(err, "location", "must not contain CR or LF");
        else if (location)
            r->redirect_location = xstrdup(location);
        const json_t *status = json_object_get(v, "status");
        if (status) {
            long long st = json_integer_value(status);
            if (!json_is_integer(status) ||
                !(st == 301 || st == 302 || st == 303 || st == 307 || st == 308))
                config_key_error(err, "status", "must be one of 301, 302, 303, 307, 308");
            else
                r->redirect_status = (int)st;
        }
    }
    /* Keep the struct whole for router_compile even when the value was wrong. */
    if (!r->redirect_location)
        r->redirect_location = xstrdup("/");
    config_path_pop(err, mark);
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
    if (!config_want_object(err, v, "{\"match\": {\"prefix\": \"/\"}, \"upstream\": \"NAME\"}")) {
        r->name = xstrdup(defname);
        r->respond_status = 404;
        r->respond_body = xstrdup("");
        return;
    }
    config_check_keys_strict(err, v, keys);
    const char *name = config_get_string(err, v, "name", false, true);
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
        const char *uname = config_get_string(err, v, "upstream", true, true);
        if (uname) {
            r->upstream = config_upstream(s, uname);
            if (!r->upstream && s->num_upstreams) {
                char *names = upstream_names(s);
                config_key_error(err, "upstream", "unknown upstream \"%s\" (defined: %s)", uname,
                                 names);
                free(names);
            } else if (!r->upstream) {
                config_key_error(err, "upstream",
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

    config_build_filters(err, json_object_get(v, "filters"), &r->filters, &r->num_filters);
    config_get_int(err, v, "timeout_ms", 1, &r->timeout_ms);
    config_get_bool(err, v, "websocket", &r->websocket);
}

void config_build_routes(struct config_error *err, struct snapshot *s, const json_t *v)
{
    if (!v) {
        config_error_add(err, ".routes",
                         "missing: add a \"routes\" array, e.g. [{\"match\": {\"prefix\": "
                         "\"/\"}, \"upstream\": \"NAME\"}]");
        return;
    }
    if (!json_is_array(v)) {
        config_error_add(err, ".routes", "must be an array of routes, not %s", config_json_kind(v));
        return;
    }
    size_t n = json_array_size(v);
    if (n == 0)
        return;
    s->routes = xcalloc(n, sizeof *s->routes);
    s->num_routes = n;
    size_t mark = config_path_push(err, ".routes");
    for (size_t i = 0; i < n; i++) {
        size_t m2 = config_path_push_index(err, i);
        s->routes[i].index = i;
        build_route(err, s, &s->routes[i], json_array_get(v, i));
        config_path_pop(err, m2);
    }
    config_path_pop(err, mark);
}
