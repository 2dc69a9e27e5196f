/*
 * config_upstreams: the "upstreams" section (SPEC 2.3): targets, balancing,
 * timeouts, health checks, TLS and protocol.
 */
#include <stdlib.h>
#include <string.h>

#include "conf/config_int.h"
#include "net/addr.h"
#include "net/tls.h"

static void build_target(struct config_error *err, struct target_config *t, const json_t *v)
{
    static const char *const keys[] = {"address", "weight", NULL};
    const char *address = NULL;
    t->weight = 1;
    if (json_is_string(v)) {
        address = json_string_value(v);
    } else if (json_is_object(v)) {
        config_check_keys_strict(err, v, keys);
        address = config_get_string(err, v, "address", true, true);
        long long w = 1;
        if (config_get_llong(err, v, "weight", 1, 10000, &w))
            t->weight = (int)w;
    } else {
        config_error_add(err, "",
                         "must be \"HOST:PORT\" or {\"address\": \"HOST:PORT\", \"weight\": N}, "
                         "not %s",
                         config_json_kind(v));
        return;
    }
    if (!address)
        return;
    char why[200];
    if (!addr_parse_target(address, &t->host, &t->port, why, sizeof why))
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
    size_t mark = config_path_push(err, ".health_check");
    if (config_want_object(err, v, "{\"path\": \"/healthz\"}")) {
        config_check_keys_strict(err, v, keys);
        const char *path = config_get_string(err, v, "path", false, true);
        if (path && (path[0] != '/' || has_crlf(path) || strchr(path, ' '))) {
            config_key_error(err, "path",
                             "must start with '/' and hold no spaces, e.g. \"/healthz\"");
        } else if (path) {
            free(h->path);
            h->path = xstrdup(path);
        }
        config_get_int(err, v, "interval_ms", 1, &h->interval_ms);
        config_get_int(err, v, "timeout_ms", 1, &h->timeout_ms);
        config_get_int(err, v, "unhealthy_after", 1, &h->unhealthy_after);
        config_get_int(err, v, "healthy_after", 1, &h->healthy_after);
    }
    config_path_pop(err, mark);
}

static void build_balance(struct config_error *err, struct upstream_config *u, const json_t *v)
{
    static const char expected[] =
        "expected one of: round_robin, least_conn, random, ip_hash, header:NAME";
    const char *b = config_get_string(err, v, "balance", false, false);
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
        config_key_error(err, "balance", "unknown balance \"%s\" (%s)", b, expected);
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
    if (!config_want_object(err, v, "{\"targets\": [\"users:8080\"]}")) {
        build_health(err, &u->health, NULL);
        return;
    }
    config_check_keys_strict(err, v, keys);

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
        size_t mark = config_path_push(err, ".targets");
        for (size_t i = 0; i < n; i++) {
            size_t m2 = config_path_push_index(err, i);
            build_target(err, &u->targets[i], json_array_get(targets, i));
            config_path_pop(err, m2);
        }
        config_path_pop(err, mark);
    }
    build_balance(err, u, v);
    config_get_int(err, v, "keepalive", 0, &u->keepalive);
    config_get_int(err, v, "max_connections", 0, &u->max_connections);
    config_get_int(err, v, "connect_timeout_ms", 1, &u->connect_timeout_ms);
    config_get_int(err, v, "timeout_ms", 1, &u->timeout_ms);
    config_get_int(err, v, "retries", 0, &u->retries);
    config_get_int(err, v, "dns_refresh_ms", 1, &u->dns_refresh_ms);
    build_health(err, &u->health, json_object_get(v, "health_check"));
    if (json_object_get(v, "tls"))
        u->tls = tls_client_build(err, json_object_get(v, "tls"));
    const char *protocol = config_get_string(err, v, "protocol", false, false);
    u->protocol = UPSTREAM_HTTP1;
    if (protocol && strcmp(protocol, "h2") == 0)
        u->protocol = UPSTREAM_H2;
    else if (protocol && strcmp(protocol, "http/1.1") != 0)
        config_key_error(err, "protocol", "unknown protocol \"%s\" (expected one of: http/1.1, h2)",
                         protocol);
}

void config_build_upstreams(struct config_error *err, struct snapshot *s, const json_t *v)
{
    if (!v)
        return;
    if (!json_is_object(v)) {
        config_error_add(err, ".upstreams",
                         "must be an object of named upstreams, e.g. {\"users\": {\"targets\": "
                         "[\"users:8080\"]}}, not %s",
                         config_json_kind(v));
        return;
    }
    size_t n = json_object_size(v);
    if (n == 0)
        return;
    s->upstreams = xcalloc(n, sizeof *s->upstreams);
    size_t mark = config_path_push(err, ".upstreams");
    const char *name;
    json_t *u;
    json_object_foreach((json_t *)v, name, u)
    {
        /* Names starting with '_' are comments here too. */
        if (name[0] == '_')
            continue;
        size_t m2 = config_path_push_key(err, name);
        struct upstream_config *uc = &s->upstreams[s->num_upstreams];
        uc->index = s->num_upstreams++;
        uc->name = xstrdup(name);
        if (!name[0])
            config_error_add(err, "", "an upstream needs a non-empty name");
        build_upstream(err, uc, u);
        config_path_pop(err, m2);
    }
    config_path_pop(err, mark);
}

struct upstream_config *config_upstream(const struct snapshot *s, const char *name)
{
    for (size_t i = 0; i < s->num_upstreams; i++)
        if (strcmp(s->upstreams[i].name, name) == 0)
            return &s->upstreams[i];
    return NULL;
}
