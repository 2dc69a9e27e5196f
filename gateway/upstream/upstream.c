/*
 * upstream: targets from configured host:port pairs (IP literals at once,
 * names through evdns, re-resolved every dns_refresh_ms), the shared health
 * table, and upstream_pick(). See upstream.h for the contract.
 */
#include "upstream/upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "upstream/balance.h"
#include "conf/config.h"
#include "upstream/health.h"
#include "net/addr.h"
#include "net/tls.h"
#include "ops/status.h"
#include "base/clock.h"
#include "base/log.h"

/* The passive mark's length when the upstream has no health_check (SPEC 2.3). */
#define PASSIVE_DOWN_DEFAULT_MS 5000

struct resolver;

/*
 * One evdns_getaddrinfo in flight. Its callback always runs, possibly after
 * the upstream_rt is freed (a cancelled lookup calls back from the loop with
 * EVUTIL_EAI_CANCEL), so the callback owns this small struct and
 * upstream_rt_free only detaches it by setting `resolver` to NULL.
 */
struct name_lookup {
    struct resolver *resolver; /* NULL once detached */
    struct evdns_getaddrinfo_request *request;
};

/* A configured target whose host is a name. */
struct resolver {
    struct upstream_rt *upstream;
    const struct target_config *config;
    struct name_lookup *lookup; /* in flight, or NULL */
    int last_error;             /* the failure last reported; 0 after a success */
    bool report;                /* every worker resolves, one (worker 0) logs failures */
};

struct upstream_impl {
    struct resolver *resolvers;
    size_t num_resolvers;
    struct event *refresh; /* re-resolves every dns_refresh_ms */
    struct health_checker *health;
    uint64_t rng; /* balance_random's generator */

    /* upstream_pick's scratch arrays, cap_targets long (one thread uses them). */
    bool *eligible;
    int *weights;
    int64_t *current;
    unsigned *in_flight;
    uint64_t *hashes;
};

/* The process-wide health table: a list, searched only when a target is made. */
static pthread_mutex_t health_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct target_health *health_table;

int64_t upstream_now_ms(void)
{
    return clock_mono_ms();
}

static struct target_health *health_lookup(const char *upstream, const char *address)
{
    pthread_mutex_lock(&health_mutex);
    struct target_health *h;
    for (h = health_table; h; h = h->next) {
        if (strcmp(h->upstream, upstream) == 0 && strcmp(h->address, address) == 0)
            goto out;
    }
    h = calloc(1, sizeof(*h));
    if (!h)
        goto out;
    h->upstream = strdup(upstream);
    if (!h->upstream) {
        free(h);
        h = NULL;
        goto out;
    }
    snprintf(h->address, sizeof(h->address), "%s", address);
    atomic_init(&h->down_until_ms, 0);
    atomic_init(&h->active_down, false);
    atomic_init(&h->failures, 0);
    atomic_init(&h->successes, 0);
    atomic_init(&h->check_done_ms, 0);
    atomic_init(&h->check_us, 0);
    atomic_init(&h->check_ok, false);
    h->next = health_table;
    health_table = h;
out:
    pthread_mutex_unlock(&health_mutex);
    return h;
}

void upstream_health_each(void (*fn)(void *arg, const char *upstream, const char *target,
                                     bool healthy),
                          void *arg)
{
    int64_t now = upstream_now_ms();
    pthread_mutex_lock(&health_mutex);
    for (struct target_health *h = health_table; h; h = h->next) {
        bool healthy = now >= atomic_load_explicit(&h->down_until_ms, memory_order_relaxed) &&
                       !atomic_load_explicit(&h->active_down, memory_order_relaxed);
        fn(arg, h->upstream, h->address, healthy);
    }
    pthread_mutex_unlock(&health_mutex);
}

void upstream_health_table_free(void)
{
    pthread_mutex_lock(&health_mutex);
    struct target_health *h = health_table;
    health_table = NULL;
    pthread_mutex_unlock(&health_mutex);
    while (h) {
        struct target_health *next = h->next;
        free(h->upstream);
        free(h);
        h = next;
    }
}

/* Copies `sa` with the configured port; false for families other than IPv4/6. */
static bool make_addr(const struct sockaddr *sa, uint16_t port, struct sockaddr_storage *out,
                      socklen_t *outlen)
{
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        memcpy(sin, sa, sizeof(*sin));
        sin->sin_port = htons(port);
        *outlen = sizeof(*sin);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        memcpy(sin6, sa, sizeof(*sin6));
        sin6->sin6_port = htons(port);
        *outlen = sizeof(*sin6);
        return true;
    }
    return false;
}

static bool grow_targets(struct upstream_rt *u)
{
    struct upstream_impl *im = u->impl;
    if (u->num_targets < u->cap_targets)
        return true;
    size_t cap = u->cap_targets ? u->cap_targets * 2 : 4;
    struct target **targets = realloc(u->targets, cap * sizeof(*targets));
    if (!targets)
        return false;
    u->targets = targets;
    /* The scratch arrays hold no state between picks: reallocate freely. */
    bool *eligible = realloc(im->eligible, cap * sizeof(*eligible));
    if (eligible)
        im->eligible = eligible;
    int *weights = realloc(im->weights, cap * sizeof(*weights));
    if (weights)
        im->weights = weights;
    int64_t *current = realloc(im->current, cap * sizeof(*current));
    if (current)
        im->current = current;
    unsigned *in_flight = realloc(im->in_flight, cap * sizeof(*in_flight));
    if (in_flight)
        im->in_flight = in_flight;
    uint64_t *hashes = realloc(im->hashes, cap * sizeof(*hashes));
    if (hashes)
        im->hashes = hashes;
    if (!eligible || !weights || !current || !in_flight || !hashes)
        return false;
    u->cap_targets = cap;
    return true;
}

/* Makes and appends an active target for `sa` (its port is replaced by tc's). */
static struct target *add_target(struct upstream_rt *u, const struct target_config *tc,
                                 const struct sockaddr *sa)
{
    struct target *t = calloc(1, sizeof(*t));
    if (!t)
        goto fail;
    if (!make_addr(sa, tc->port, &t->addr, &t->addrlen) ||
        !addr_format((const struct sockaddr *)&t->addr, t->name, sizeof(t->name)))
        goto fail;
    t->health = health_lookup(u->cfg->name, t->name);
    if (!t->health || !grow_targets(u))
        goto fail;
    t->upstream = u;
    t->weight = tc->weight < 1 ? 1 : tc->weight;
    t->active = true;
    t->config = tc;
    t->hash = balance_hash64(t->name, strlen(t->name));
    pool_init(&t->pool, u->cfg->name, t->name);
    u->targets[u->num_targets++] = t;
    return t;
fail:
    log_error("upstream %s: cannot add a target for %s: out of memory", u->cfg->name, tc->host);
    free(t);
    return NULL;
}

static struct target *find_target(struct upstream_rt *u, const struct target_config *tc,
                                  const char *name)
{
    for (size_t i = 0; i < u->num_targets; i++) {
        if (u->targets[i]->config == tc && strcmp(u->targets[i]->name, name) == 0)
            return u->targets[i];
    }
    return NULL;
}

/* Makes the targets of `r` exactly the addresses in `res`: new ones are
 * added, returning ones reactivated, vanished ones deactivated (kept). */
static void apply_addresses(struct resolver *r, const struct evutil_addrinfo *res)
{
    struct upstream_rt *u = r->upstream;
    char name[64];
    for (size_t i = 0; i < u->num_targets; i++) {
        struct target *t = u->targets[i];
        if (t->config == r->config)
            t->active = false;
    }
    for (const struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (!ai->ai_addr || !make_addr(ai->ai_addr, r->config->port, &ss, &len) ||
            !addr_format((const struct sockaddr *)&ss, name, sizeof(name)))
            continue;
        struct target *t = find_target(u, r->config, name);
        if (!t)
            t = add_target(u, r->config, (const struct sockaddr *)&ss);
        if (t)
            t->active = true;
    }
}

/* RFC 6761 6.3: "localhost" is the loopback even when the hosts file says nothing. */
static void apply_localhost(struct resolver *r)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct evutil_addrinfo ai = {.ai_family = AF_INET,
                                 .ai_socktype = SOCK_STREAM,
                                 .ai_addrlen = sizeof(sin),
                                 .ai_addr = (struct sockaddr *)&sin};
    apply_addresses(r, &ai);
}

/* Applies a lookup's outcome to `r`; takes `res` (NULL ok). */
static void resolved(struct resolver *r, int result, struct evutil_addrinfo *res)
{
    if (result == 0 && res) {
        apply_addresses(r, res);
        evutil_freeaddrinfo(res);
        r->last_error = 0;
        return;
    }
    if (res)
        evutil_freeaddrinfo(res);
    if (strcasecmp(r->config->host, "localhost") == 0) {
        apply_localhost(r);
        return;
    }
    /* Existing targets stay as they are: a DNS hiccup must not empty the upstream. */
    int error = result ? result : EVUTIL_EAI_NONAME;
    if (r->report && error != r->last_error)
        log_warn("upstream %s: cannot resolve %s: %s", r->upstream->cfg->name, r->config->host,
                 evutil_gai_strerror(error));
    r->last_error = error;
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct name_lookup *lookup = arg;
    struct resolver *r = lookup->resolver;
    free(lookup);
    if (!r || result == EVUTIL_EAI_CANCEL) {
        /* Detached by upstream_rt_free: `r` may be gone; touch nothing. */
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    r->lookup = NULL;
    resolved(r, result, res);
}

/* Starts a lookup of r's name. The callback may run before this returns
 * (hosts file), so r->lookup is read again afterwards. */
static void start_lookup(struct resolver *r)
{
    struct upstream_rt *u = r->upstream;
    if (r->lookup)
        return;
    if (!u->dns) {
        resolved(r, EVUTIL_EAI_FAIL, NULL);
        return;
    }
    struct name_lookup *lookup = calloc(1, sizeof(*lookup));
    if (!lookup)
        return;
    lookup->resolver = r;
    r->lookup = lookup;
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(u->dns, r->config->host, NULL, &hints, on_resolved, lookup);
    if (r->lookup == lookup)
        lookup->request = req;
}

static void on_refresh(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream_rt *u = arg;
    struct upstream_impl *im = u->impl;
    for (size_t i = 0; i < im->num_resolvers; i++)
        start_lookup(&im->resolvers[i]);
}

static bool is_ip_literal(const char *host, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        return true;
    }
    return false;
}

struct upstream_rt *upstream_rt_new(const struct upstream_config *cfg, struct event_base *base,
                                    struct evdns_base *dns, bool run_health_checks)
{
    struct upstream_rt *u = calloc(1, sizeof(*u));
    struct upstream_impl *im = calloc(1, sizeof(*im));
    if (!u || !im) {
        free(u);
        free(im);
        return NULL;
    }
    u->cfg = cfg;
    u->base = base;
    u->dns = dns;
    u->impl = im;
    im->rng = balance_mix64((uint64_t)upstream_now_ms() ^ (uint64_t)(uintptr_t)u);

    size_t num_names = 0;
    for (size_t i = 0; i < cfg->num_targets; i++) {
        struct sockaddr_storage ss;
        if (is_ip_literal(cfg->targets[i].host, &ss)) {
            if (!add_target(u, &cfg->targets[i], (const struct sockaddr *)&ss))
                goto fail;
        } else {
            num_names++;
        }
    }
    if (num_names) {
        im->resolvers = calloc(num_names, sizeof(*im->resolvers));
        if (!im->resolvers)
            goto fail;
        for (size_t i = 0; i < cfg->num_targets; i++) {
            struct sockaddr_storage ss;
            if (is_ip_literal(cfg->targets[i].host, &ss))
                continue;
            struct resolver *r = &im->resolvers[im->num_resolvers++];
            r->upstream = u;
            r->config = &cfg->targets[i];
            r->report = run_health_checks;
        }
        if (cfg->dns_refresh_ms > 0) {
            im->refresh = event_new(base, -1, EV_PERSIST, on_refresh, u);
            struct timeval tv = {cfg->dns_refresh_ms / 1000, (cfg->dns_refresh_ms % 1000) * 1000};
            if (!im->refresh || event_add(im->refresh, &tv) < 0)
                goto fail;
        }
        for (size_t i = 0; i < im->num_resolvers; i++)
            start_lookup(&im->resolvers[i]);
    }
    if (run_health_checks && cfg->health.enabled) {
        im->health = health_start(u);
        if (!im->health)
            goto fail;
    }
    return u;
fail:
    upstream_rt_free(u);
    return NULL;
}

void upstream_rt_free(struct upstream_rt *u)
{
    if (!u)
        return;
    struct upstream_impl *im = u->impl;
    if (im) {
        health_stop(im->health);
        if (im->refresh)
            event_free(im->refresh);
        for (size_t i = 0; i < im->num_resolvers; i++) {
            struct name_lookup *lookup = im->resolvers[i].lookup;
            if (!lookup)
                continue;
            /* The callback still runs (from the loop) and frees `lookup`. */
            lookup->resolver = NULL;
            im->resolvers[i].lookup = NULL;
            if (lookup->request)
                evdns_getaddrinfo_cancel(lookup->request);
        }
        free(im->resolvers);
        free(im->eligible);
        free(im->weights);
        free(im->current);
        free(im->in_flight);
        free(im->hashes);
        free(im);
    }
    for (size_t i = 0; i < u->num_targets; i++) {
        pool_close_all(&u->targets[i]->pool);
        tls_session_forget(&u->targets[i]->tls_session);
        free(u->targets[i]);
    }
    free(u->targets);
    free(u);
}

bool target_is_healthy(const struct target *t)
{
    return upstream_now_ms() >=
               atomic_load_explicit(&t->health->down_until_ms, memory_order_relaxed) &&
           !atomic_load_explicit(&t->health->active_down, memory_order_relaxed);
}

void upstream_mark_failed(struct target *t)
{
    const struct upstream_config *cfg = t->upstream->cfg;
    int ms = cfg->health.enabled && cfg->health.interval_ms > 0 ? cfg->health.interval_ms
                                                                : PASSIVE_DOWN_DEFAULT_MS;
    atomic_store_explicit(&t->health->down_until_ms, upstream_now_ms() + ms, memory_order_relaxed);
}

size_t upstream_healthy_count(const struct upstream_rt *u)
{
    size_t n = 0;
    for (size_t i = 0; i < u->num_targets; i++) {
        if (u->targets[i]->active && target_is_healthy(u->targets[i]))
            n++;
    }
    return n;
}

static bool is_excluded(const struct target *t, struct target *const *exclude, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (exclude[i] == t)
            return true;
    }
    return false;
}

struct target *upstream_pick(struct upstream_rt *u, const struct balance_key *key,
                             struct target *const *exclude, size_t num_exclude)
{
    struct upstream_impl *im = u->impl;
    size_t n = u->num_targets;
    bool any = false;
    if (n == 0)
        return NULL;
    int64_t now = upstream_now_ms();
    for (size_t i = 0; i < n; i++) {
        const struct target *t = u->targets[i];
        /* target_is_healthy() inlined to read the clock once per pick. */
        bool ok = t->active &&
                  now >= atomic_load_explicit(&t->health->down_until_ms, memory_order_relaxed) &&
                  !atomic_load_explicit(&t->health->active_down, memory_order_relaxed) &&
                  !is_excluded(t, exclude, num_exclude);
        im->eligible[i] = ok;
        im->weights[i] = t->weight;
        any |= ok;
    }
    if (!any)
        return NULL;

    struct slice k = {NULL, 0};
    if (key && u->cfg->balance == BALANCE_IP_HASH)
        k = key->client_ip;
    else if (key && u->cfg->balance == BALANCE_HEADER)
        k = key->header_value;

    size_t chosen = n;
    switch (u->cfg->balance) {
    case BALANCE_RANDOM:
        chosen = balance_random(balance_rng_next(&im->rng), im->weights, im->eligible, n);
        break;
    case BALANCE_IP_HASH:
    case BALANCE_HEADER:
        if (k.len > 0) {
            for (size_t i = 0; i < n; i++)
                im->hashes[i] = u->targets[i]->hash;
            chosen = balance_hrw(balance_hash64(k.base, k.len), im->hashes, im->weights,
                                 im->eligible, n);
            break;
        }
        /* Without a key: round robin. */
        /* fall through */
    case BALANCE_ROUND_ROBIN:
    case BALANCE_LEAST_CONN:
    default:
        for (size_t i = 0; i < n; i++) {
            im->current[i] = u->targets[i]->rr_current;
            im->in_flight[i] = u->targets[i]->in_flight;
        }
        if (u->cfg->balance == BALANCE_LEAST_CONN)
            chosen = balance_least_conn(im->current, im->weights, im->in_flight, im->eligible, n);
        else
            chosen = balance_smooth_wrr(im->current, im->weights, im->eligible, n);
        for (size_t i = 0; i < n; i++)
            u->targets[i]->rr_current = im->current[i];
        break;
    }
    return chosen < n ? u->targets[chosen] : NULL;
}

void upstream_status_publish(const struct upstream_rt *u, struct status_board *b)
{
    int64_t now = upstream_now_ms();
    for (size_t i = 0; i < u->num_targets; i++) {
        const struct target *t = u->targets[i];
        if (!t->active && t->pool.num_open == 0 && t->in_flight == 0)
            continue;
        const struct target_health *h = t->health;
        int64_t down_until = atomic_load_explicit(&h->down_until_ms, memory_order_relaxed);
        int64_t done = atomic_load_explicit(&h->check_done_ms, memory_order_relaxed);
        struct status_target st = {
            .upstream = u->cfg->name,
            .name = t->name,
            .host = t->config ? t->config->host : "",
            .port = t->config ? t->config->port : 0,
            .weight = t->weight,
            .offered = t->active,
            .active_down = atomic_load_explicit(&h->active_down, memory_order_relaxed),
            .passive_ms = down_until > now ? down_until - now : 0,
            .check_failures = atomic_load_explicit(&h->failures, memory_order_relaxed),
            .check_successes = atomic_load_explicit(&h->successes, memory_order_relaxed),
            .check_age_ms = done ? now - done : -1,
            .check_us = atomic_load_explicit(&h->check_us, memory_order_relaxed),
            .check_ok = atomic_load_explicit(&h->check_ok, memory_order_relaxed),
            .pool_idle = t->pool.num_idle,
            .pool_open = t->pool.num_open,
            .in_flight = t->in_flight,
        };
        status_board_add(b, &st);
    }
}
