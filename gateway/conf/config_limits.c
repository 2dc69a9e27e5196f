/*
 * config_limits: the small sections: "admin", "access_log", "limits"
 * and "redis" (SPEC 2.1, 2.5, 5 and 6).
 */
#include <stdlib.h>
#include <string.h>
#include <limits.h>

#include "conf/config_int.h"
#include "net/addr.h"

void config_build_admin(struct config_error *err, struct admin_config *a, const json_t *v)
{
    static const char *const keys[] = {"address", NULL};
    if (!v)
        return;
    size_t mark = config_path_push(err, ".admin");
    if (config_want_object(err, v, "{\"address\": \"127.0.0.1:9901\"}")) {
        config_check_keys_strict(err, v, keys);
        const char *address = config_get_string(err, v, "address", true, true);
        char why[200];
        if (address && addr_parse_bind(address, &a->addr, &a->addrlen, why, sizeof why)) {
            a->address = xstrdup(address);
            a->enabled = true;
        } else if (address) {
            config_key_error(err, "address",
                             "invalid address \"%s\": %s (expected IP:PORT, e.g. "
                             "\"127.0.0.1:9901\")",
                             address, why);
        }
    }
    config_path_pop(err, mark);
}

void config_build_access_log(struct config_error *err, struct access_log_config *l, const json_t *v)
{
    static const char *const keys[] = {"path", "format", NULL};
    l->format = ACCESS_LOG_JSON;
    const char *path = NULL;
    size_t mark = config_path_push(err, ".access_log");
    if (v && config_want_object(err, v, "{\"path\": \"-\", \"format\": \"json\"}")) {
        config_check_keys_strict(err, v, keys);
        path = config_get_string(err, v, "path", false, true);
        const char *format = config_get_string(err, v, "format", false, false);
        if (format && strcmp(format, "combined") == 0)
            l->format = ACCESS_LOG_COMBINED;
        else if (format && strcmp(format, "json") != 0)
            config_key_error(err, "format",
                             "unknown format \"%s\" (expected one of: json, combined)", format);
    }
    config_path_pop(err, mark);
    if (path && strcmp(path, "off") == 0)
        l->off = true; /* path stays NULL */
    else if (path && strcmp(path, "-") != 0)
        l->path = config_resolve_path(err, path);
    else
        l->path = xstrdup("-");
}

void config_build_limits(struct config_error *err, struct limits_config *l, const json_t *v)
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
    size_t mark = config_path_push(err, ".limits");
    if (config_want_object(err, v, "{\"max_body_bytes\": 1048576}")) {
        config_check_keys_strict(err, v, keys);
        config_get_int(err, v, "max_connections", 1, &l->max_connections);
        config_get_int(err, v, "header_timeout_ms", 1, &l->header_timeout_ms);
        config_get_int(err, v, "idle_timeout_ms", 1, &l->idle_timeout_ms);
        config_get_int(err, v, "body_timeout_ms", 1, &l->body_timeout_ms);
        config_get_int(err, v, "max_header_bytes", 1, &l->max_header_bytes);
        config_get_int(err, v, "max_headers", 1, &l->max_headers);
        long long body = 0;
        if (config_get_llong(err, v, "max_body_bytes", 0, LLONG_MAX, &body))
            l->max_body_bytes = (uint64_t)body;
        config_get_int(err, v, "drain_timeout_ms", 1, &l->drain_timeout_ms);
        config_get_int(err, v, "websocket_idle_timeout_ms", 1, &l->websocket_idle_timeout_ms);
        config_get_int(err, v, "h2_max_concurrent_streams", 1, &l->h2_max_concurrent_streams);
    }
    config_path_pop(err, mark);
}

void config_build_redis(struct config_error *err, struct redis_config *r, const json_t *v)
{
    static const char *const keys[] = {"address",  "username",   "password",
                                       "database", "timeout_ms", NULL};
    r->timeout_ms = 1000;
    if (!v)
        return;
    size_t mark = config_path_push(err, ".redis");
    if (config_want_object(err, v, "{\"address\": \"127.0.0.1:6379\"}")) {
        config_check_keys_strict(err, v, keys);
        const char *address = config_get_string(err, v, "address", true, true);
        if (address && strncmp(address, "unix:", 5) == 0) {
            if (address[5] != '/') {
                config_key_error(err, "address",
                                 "invalid address \"%s\": a unix socket needs an absolute "
                                 "path, e.g. \"unix:/run/redis/redis.sock\"",
                                 address);
            } else {
                r->address = xstrdup(address);
                r->enabled = true;
            }
        } else if (address) {
            char *host = NULL;
            uint16_t port;
            char why[200];
            if (addr_parse_target(address, &host, &port, why, sizeof why)) {
                r->address = xstrdup(address);
                r->enabled = true;
            } else {
                config_key_error(err, "address",
                                 "invalid address \"%s\": %s (expected HOST:PORT, e.g. "
                                 "\"127.0.0.1:6379\", or unix:/path)",
                                 address, why);
            }
            free(host);
        }
        const char *username = config_get_string(err, v, "username", false, true);
        if (username)
            r->username = xstrdup(username);
        const char *password = config_get_string(err, v, "password", false, false);
        if (password)
            r->password = xstrdup(password);
        if (username && !json_object_get(v, "password"))
            config_key_error(err, "username",
                             "needs \"password\" too: AUTH sends the user with its password");
        config_get_int(err, v, "database", 0, &r->database);
        config_get_int(err, v, "timeout_ms", 1, &r->timeout_ms);
    }
    config_path_pop(err, mark);
}
