/*
 * config: the JSON configuration (SPEC 2) compiled into an immutable,
 * reference-counted snapshot.
 *
 * Owns: every struct below, malloc'd at load time ("snapshot" lifetime),
 * including the filter instances (created through filters/registry) and the
 * compiled routes (router_compile). Promises: a snapshot is never modified
 * after config_load() returns it, so every worker may read it without locks;
 * it is freed when its last reference is released. Loading reports every
 * error of the file in one run, each naming the JSON path (SPEC 7) or the
 * line and column of a syntax error (conf/config_error.h; the loader's
 * files are conf/config*.c and conf/env.c).
 *
 * Thread: config_load() runs on the main thread; snapshot_hold/release from
 * any thread (atomic refcount). The current snapshot is published with
 * config_current_set() and read with config_current_hold().
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "base/header.h"
#include "base/slice.h"
#include "conf/config_error.h"

struct filter_type;
struct router;
struct tls_client;
struct tls_server;

struct listen_config {
    char *address; /* as written, e.g. "0.0.0.0:8080", "[::]:8443" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool h2c;               /* "protocols" contains "h2c": HTTP/2 prior knowledge */
    bool h2c_only;          /* "protocols" is ["h2c"], no "http/1.1": HTTP/2 only */
    struct tls_server *tls; /* "tls": certificates, ALPN, mTLS (tls.c); NULL = cleartext */
};

struct target_config {
    char *host; /* a name or an IP literal, without brackets */
    uint16_t port;
    int weight; /* >= 1 */
};

enum balance_kind {
    BALANCE_ROUND_ROBIN = 0,
    BALANCE_LEAST_CONN,
    BALANCE_RANDOM,
    BALANCE_IP_HASH,
    BALANCE_HEADER,
};

struct health_config {
    bool enabled; /* "health_check" present */
    char *path;
    int interval_ms;
    int timeout_ms;
    int unhealthy_after;
    int healthy_after;
};

/* What the gateway speaks to an upstream's targets (SPEC 2.3 `protocol`). */
enum upstream_protocol {
    UPSTREAM_HTTP1 = 0, /* HTTP/1.1, connections pooled for keep-alive */
    UPSTREAM_H2,        /* HTTP/2: prior knowledge (h2c) in cleartext, ALPN "h2" over TLS */
};

struct upstream_config {
    char *name;
    size_t index; /* position in snapshot->upstreams */
    struct target_config *targets;
    size_t num_targets;
    enum balance_kind balance;
    char *balance_header; /* for BALANCE_HEADER: the header name */
    int keepalive;
    int max_connections; /* 0 = no cap */
    int connect_timeout_ms;
    int timeout_ms;
    int retries;
    int dns_refresh_ms;
    struct health_config health;
    enum upstream_protocol protocol;
    struct tls_client *tls; /* "tls" (tls.c); NULL = cleartext */
};

enum match_kind {
    MATCH_ANY = 0,
    MATCH_PREFIX,
    MATCH_PATH,
    MATCH_REGEX,
};

/* One entry of match.headers or match.query: an exact value or a regex. */
struct match_value {
    char *name;
    char *value;        /* exact value, or NULL when regex is set */
    pcre2_code *regex;  /* compiled by router_compile */
    char *regex_source; /* as written */
};

enum route_action {
    ROUTE_UPSTREAM = 0,
    ROUTE_RESPOND,
    ROUTE_REDIRECT,
};

/* A filter entry compiled by its type's create(). */
struct filter_instance {
    const struct filter_type *type;
    const void *instance;
};

struct route_config {
    char *name; /* "name", or "routes[N]" when absent */
    size_t index;
    enum match_kind match;
    char *path;         /* prefix or exact path, as written */
    char *regex_source; /* MATCH_REGEX */
    pcre2_code *regex;  /* MATCH_REGEX, JIT-compiled by router_compile */
    char **hosts;       /* lower-case; "*.example.org" kept as written */
    size_t num_hosts;
    char **methods; /* upper-case */
    size_t num_methods;
    struct match_value *headers;
    size_t num_headers;
    struct match_value *query;
    size_t num_query;

    enum route_action action;
    struct upstream_config *upstream; /* ROUTE_UPSTREAM */
    int respond_status;               /* ROUTE_RESPOND */
    char *respond_body;
    size_t respond_body_len;
    struct header *respond_headers; /* slices into the snapshot */
    size_t num_respond_headers;
    char *redirect_location; /* ROUTE_REDIRECT; may hold $1..$9 */
    int redirect_status;

    struct filter_instance *filters;
    size_t num_filters;
    int timeout_ms; /* 0 = the upstream's timeout_ms */
    bool websocket;
};

struct limits_config {
    int max_connections;
    int header_timeout_ms;
    int idle_timeout_ms;
    int body_timeout_ms;
    int max_header_bytes;
    int max_headers;
    uint64_t max_body_bytes; /* 0 = unlimited */
    int drain_timeout_ms;
    int websocket_idle_timeout_ms;
    int h2_max_concurrent_streams;
};

enum access_log_format {
    ACCESS_LOG_JSON = 0,
    ACCESS_LOG_COMBINED,
};

struct access_log_config {
    bool off;
    char *path; /* "-" = stdout */
    enum access_log_format format;
};

struct admin_config {
    bool enabled;
    char *address;
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

struct redis_config {
    bool enabled;
    bool used;      /* a filter uses it: workers connect (upstream/redis.h) */
    char *address;  /* "HOST:PORT" or "unix:/path" */
    char *username; /* ACL user for AUTH; NULL = the default user */
    char *password;
    int database;
    int timeout_ms; /* connect, handshake and each command */
};

struct snapshot {
    atomic_int refs;
    uint64_t generation; /* 1 for the first load, +1 per successful reload */
    char *file;          /* as given */
    char *dir;           /* its folder */

    int workers; /* as configured; 0 = one per CPU */
    struct listen_config *listeners;
    size_t num_listeners;
    struct upstream_config *upstreams;
    size_t num_upstreams;
    struct route_config *routes;
    size_t num_routes;
    struct filter_instance *filters; /* global, run before the route's */
    size_t num_filters;
    struct admin_config admin;
    struct access_log_config access_log;
    struct limits_config limits;
    struct redis_config redis;

    struct router *router; /* router_compile's index over routes */
    json_t *redacted;      /* the configuration with secrets replaced by "***" (admin /config) */
};

/*
 * Loads and compiles `file`. On success returns a snapshot holding one
 * reference. On failure returns NULL and `err` holds every message (the
 * caller prints them, one per line). `err` must be zeroed by the caller.
 */
struct snapshot *config_load(const char *file, struct config_error *err);

/* Finds an upstream by name, or NULL. */
struct upstream_config *config_upstream(const struct snapshot *s, const char *name);

struct snapshot *snapshot_hold(struct snapshot *s);
void snapshot_release(struct snapshot *s); /* NULL ok; frees at zero */

/* Publishes `s` as the configuration in force (takes over the caller's reference). */
void config_current_set(struct snapshot *s);

/* Returns the configuration in force with one more reference (release it). */
struct snapshot *config_current_hold(void);

/* The generation in force, cheap to poll (an atomic load). */
uint64_t config_current_generation(void);

#endif
