#include "ops/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "base/clock.h"
#include "conf/config.h"
#include "ops/record.h"
#include "base/thread_cache.h"

/*
 * Each thread that counts owns a table of series. A series is keyed by the
 * identity of the name strings it was counted with (route name, upstream
 * name, target name: pointers into the snapshot or the worker's targets)
 * plus a status code, so counting costs a pointer hash and one strcmp that
 * guards against a pointer being reused for another name after a reload.
 * Names are interned (copied once, kept until exit) when a series is made,
 * so scraping never reads freed configuration. Labels are formatted only
 * at scrape time. The table's mutex is only ever contended by a scrape.
 */

#define DURATION_BUCKETS 11
static const double duration_bounds[DURATION_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                         0.5,   1,    2.5,   5,    10};

enum series_kind {
    SERIES_REQUEST = 1,   /* requests_total{route,code} + duration{route} */
    SERIES_UPSTREAM,      /* upstream_requests_total{upstream,target,code} */
    SERIES_CONNECT_ERROR, /* upstream_connect_errors_total{upstream,target} */
    SERIES_RATE_LIMITED   /* rate_limited_total{route} */
};

struct series {
    enum series_kind kind; /* 0 = empty slot */
    const void *key_a;     /* the caller's pointers, for the fast lookup */
    const void *key_b;
    const char *name_a; /* interned copies, for the check and for scraping */
    const char *name_b;
    int code;
    uint64_t count;
    uint64_t buckets[DURATION_BUCKETS];
    double sum;
};

struct metrics_table {
    pthread_mutex_t lock;
    struct series *items;
    size_t count;
    size_t cap; /* power of two, open addressing */
    struct metrics_table *next;
};

static pthread_mutex_t tables_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_table *tables;
/* The table of threads without a thread cache (main, unit tests): shared, under its lock. */
static struct metrics_table *shared;

/* Interned names: a list, searched only when a new series is made. */
struct interned {
    struct interned *next;
    char name[];
};
static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;
static struct interned *interned_names;

static atomic_long conns_http1;
static atomic_long conns_h2;
static atomic_long conns_websocket; /* HTTP/1 connections that became a WebSocket tunnel */
static atomic_long tunnels;         /* open tunnels, HTTP/1 and HTTP/2 (RFC 8441) */
static atomic_long reloads_ok;
static atomic_long reloads_error;

static const char *intern(const char *s)
{
    if (!s)
        return NULL;
    pthread_mutex_lock(&intern_lock);
    for (struct interned *i = interned_names; i; i = i->next) {
        if (strcmp(i->name, s) == 0) {
            pthread_mutex_unlock(&intern_lock);
            return i->name;
        }
    }
    size_t n = strlen(s) + 1;
    struct interned *i = malloc(sizeof *i + n);
    if (!i) {
        pthread_mutex_unlock(&intern_lock);
        return "";
    }
    memcpy(i->name, s, n);
    i->next = interned_names;
    interned_names = i;
    pthread_mutex_unlock(&intern_lock);
    return i->name;
}

static size_t slot_of(enum series_kind kind, const void *a, const void *b, int code, size_t cap)
{
    uint64_t h = (uint64_t)(uintptr_t)a * 0x9e3779b97f4a7c15ULL;
    h ^= (uint64_t)(uintptr_t)b * 0xc2b2ae3d27d4eb4fULL;
    h ^= (uint64_t)(unsigned)code * 0x165667b19e3779f9ULL + (uint64_t)kind;
    h ^= h >> 29;
    return (size_t)h & (cap - 1);
}

static bool same_name(const char *interned_name, const char *given)
{
    if (!interned_name || !given)
        return interned_name == given;
    return strcmp(interned_name, given) == 0;
}

static int grow(struct metrics_table *t)
{
    size_t ncap = t->cap ? t->cap * 2 : 64;
    struct series *n = calloc(ncap, sizeof *n);
    if (!n)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        struct series *s = &t->items[i];
        if (!s->kind)
            continue;
        size_t j = slot_of(s->kind, s->key_a, s->key_b, s->code, ncap);
        while (n[j].kind)
            j = (j + 1) & (ncap - 1);
        n[j] = *s;
    }
    free(t->items);
    t->items = n;
    t->cap = ncap;
    return 0;
}

/* The series for these names in this thread's table (locked by the caller). */
static struct series *lookup(struct metrics_table *t, enum series_kind kind, const char *a,
                             const char *b, int code)
{
    if ((t->count + 1) * 2 > t->cap && grow(t) < 0)
        return NULL;
    size_t i = slot_of(kind, a, b, code, t->cap);
    for (;; i = (i + 1) & (t->cap - 1)) {
        struct series *s = &t->items[i];
        if (!s->kind)
            break;
        if (s->kind == kind && s->key_a == a && s->key_b == b && s->code == code &&
            same_name(s->name_a, a) && same_name(s->name_b, b))
            return s;
    }
    /*
     * A pointer reused for another name lands here as a new series; the
     * stale one stays (its counts are still right under its own name).
     */
    struct series *s = &t->items[i];
    s->kind = kind;
    s->key_a = a;
    s->key_b = b;
    s->code = code;
    s->name_a = intern(a);
    s->name_b = intern(b);
    t->count++;
    return s;
}

static struct metrics_table *table_new(void)
{
    struct metrics_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->lock, NULL);
    t->next = tables;
    tables = t;
    return t;
}

/*
 * The calling thread's table: a worker's lives in its thread cache (made on
 * first use, kept in the global list for scraping and freed by
 * metrics_free); other threads share one.
 */
static struct metrics_table *table(void)
{
    struct thread_cache *tc = thread_cache_self();
    if (tc && tc->metrics)
        return tc->metrics;
    pthread_mutex_lock(&tables_lock);
    struct metrics_table *t = tc ? table_new() : (shared ? shared : (shared = table_new()));
    pthread_mutex_unlock(&tables_lock);
    if (tc)
        tc->metrics = t;
    return t;
}

void metrics_cache_clear(struct thread_cache *tc)
{
    tc->metrics = NULL; /* the table stays in the list: its counts outlive the thread */
}

static void count(enum series_kind kind, const char *a, const char *b, int code)
{
    struct metrics_table *t = table();
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    struct series *s = lookup(t, kind, a, b, code);
    if (s)
        s->count++;
    pthread_mutex_unlock(&t->lock);
}

static const char no_route[] = "(none)";

void metrics_exchange_done(const struct ops_record *r)
{
    double secs = (double)(r->end_us - r->start_us) / 1e6;
    int code = r->status >= 100 && r->status <= 999 ? r->status : 499;
    struct metrics_table *t = table();
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    struct series *s = lookup(t, SERIES_REQUEST, r->route ? r->route : no_route, NULL, code);
    if (s) {
        s->count++;
        s->sum += secs;
        for (int i = 0; i < DURATION_BUCKETS; i++)
            if (secs <= duration_bounds[i])
                s->buckets[i]++;
    }
    pthread_mutex_unlock(&t->lock);
}

void metrics_upstream_response(const char *upstream, const char *target, int code)
{
    count(SERIES_UPSTREAM, upstream, target, code);
}

void metrics_connect_error(const char *upstream, const char *target)
{
    count(SERIES_CONNECT_ERROR, upstream, target, 0);
}

void metrics_rate_limited(const char *route)
{
    count(SERIES_RATE_LIMITED, route ? route : no_route, NULL, 0);
}

static atomic_long *conns_gauge(const char *protocol)
{
    if (protocol[0] == 'w')
        return &conns_websocket;
    return protocol[0] == 'h' && protocol[1] == '2' ? &conns_h2 : &conns_http1;
}

void metrics_connection_opened(const char *protocol)
{
    atomic_fetch_add(conns_gauge(protocol), 1);
}

void metrics_connection_closed(const char *protocol)
{
    atomic_fetch_sub(conns_gauge(protocol), 1);
}

void metrics_tunnel_opened(void)
{
    atomic_fetch_add(&tunnels, 1);
}

void metrics_tunnel_closed(void)
{
    atomic_fetch_sub(&tunnels, 1);
}

void metrics_reload(bool ok)
{
    atomic_fetch_add(ok ? &reloads_ok : &reloads_error, 1);
}

/* ---- scraping ---------------------------------------------------------------- */

/* Series summed across threads, keyed by interned names (equal names, equal pointers). */
static struct series *merged_lookup(struct metrics_table *t, const struct series *s)
{
    if ((t->count + 1) * 2 > t->cap && grow(t) < 0)
        return NULL;
    size_t i = slot_of(s->kind, s->name_a, s->name_b, s->code, t->cap);
    for (;; i = (i + 1) & (t->cap - 1)) {
        struct series *d = &t->items[i];
        if (!d->kind) {
            d->kind = s->kind;
            d->key_a = d->name_a = s->name_a;
            d->key_b = d->name_b = s->name_b;
            d->code = s->code;
            t->count++;
            return d;
        }
        if (d->kind == s->kind && d->name_a == s->name_a && d->name_b == s->name_b &&
            d->code == s->code)
            return d;
    }
}

/* Appends a label value escaped for the exposition format. */
static void label(struct evbuffer *out, const char *v)
{
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '"' || *p == '\\')
            evbuffer_add_printf(out, "\\%c", *p);
        else if (*p == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, p, 1);
    }
}

static void route_labels(struct evbuffer *out, const struct series *s)
{
    evbuffer_add(out, "route=\"", 7);
    label(out, s->name_a);
    evbuffer_add(out, "\"", 1);
}

static void upstream_labels(struct evbuffer *out, const struct series *s)
{
    evbuffer_add(out, "upstream=\"", 10);
    label(out, s->name_a);
    evbuffer_add(out, "\",target=\"", 10);
    label(out, s->name_b);
    evbuffer_add(out, "\"", 1);
}

/* Adds the counts of `s` to `d` (NULL: no room was left for it; skipped). */
static void series_add(struct series *d, const struct series *s)
{
    if (!d)
        return;
    d->count += s->count;
    d->sum += s->sum;
    for (int b = 0; b < DURATION_BUCKETS; b++)
        d->buckets[b] += s->buckets[b];
}

void metrics_render(struct evbuffer *out)
{
    struct metrics_table sum = {0};
    pthread_mutex_lock(&tables_lock);
    for (struct metrics_table *t = tables; t; t = t->next) {
        pthread_mutex_lock(&t->lock);
        for (size_t i = 0; i < t->cap; i++) {
            const struct series *s = &t->items[i];
            if (!s->kind)
                continue;
            series_add(merged_lookup(&sum, s), s);
        }
        pthread_mutex_unlock(&t->lock);
    }
    pthread_mutex_unlock(&tables_lock);

    evbuffer_add_printf(out, "# TYPE sluice_requests_total counter\n");
    for (size_t i = 0; i < sum.cap; i++) {
        const struct series *s = &sum.items[i];
        if (s->kind != SERIES_REQUEST)
            continue;
        evbuffer_add_printf(out, "sluice_requests_total{");
        route_labels(out, s);
        evbuffer_add_printf(out, ",code=\"%03d\"} %llu\n", s->code, (unsigned long long)s->count);
    }
    /* The duration histogram is per route: fold the per-code series together. */
    struct metrics_table hist = {0};
    for (size_t i = 0; i < sum.cap; i++) {
        const struct series *s = &sum.items[i];
        if (s->kind != SERIES_REQUEST)
            continue;
        struct series key = {.kind = SERIES_REQUEST, .name_a = s->name_a};
        series_add(merged_lookup(&hist, &key), s);
    }
    evbuffer_add_printf(out, "# TYPE sluice_request_duration_seconds histogram\n");
    for (size_t i = 0; i < hist.cap; i++) {
        const struct series *s = &hist.items[i];
        if (!s->kind)
            continue;
        for (int b = 0; b <= DURATION_BUCKETS; b++) {
            evbuffer_add_printf(out, "sluice_request_duration_seconds_bucket{");
            route_labels(out, s);
            if (b < DURATION_BUCKETS)
                evbuffer_add_printf(out, ",le=\"%g\"} %llu\n", duration_bounds[b],
                                    (unsigned long long)s->buckets[b]);
            else
                evbuffer_add_printf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)s->count);
        }
        evbuffer_add_printf(out, "sluice_request_duration_seconds_sum{");
        route_labels(out, s);
        evbuffer_add_printf(out, "} %.6f\nsluice_request_duration_seconds_count{", s->sum);
        route_labels(out, s);
        evbuffer_add_printf(out, "} %llu\n", (unsigned long long)s->count);
    }
    free(hist.items);
    evbuffer_add_printf(out, "# TYPE sluice_upstream_requests_total counter\n");
    for (size_t i = 0; i < sum.cap; i++) {
        const struct series *s = &sum.items[i];
        if (s->kind != SERIES_UPSTREAM)
            continue;
        evbuffer_add_printf(out, "sluice_upstream_requests_total{");
        upstream_labels(out, s);
        evbuffer_add_printf(out, ",code=\"%03d\"} %llu\n", s->code, (unsigned long long)s->count);
    }
    evbuffer_add_printf(out, "# TYPE sluice_upstream_connect_errors_total counter\n");
    for (size_t i = 0; i < sum.cap; i++) {
        const struct series *s = &sum.items[i];
        if (s->kind != SERIES_CONNECT_ERROR)
            continue;
        evbuffer_add_printf(out, "sluice_upstream_connect_errors_total{");
        upstream_labels(out, s);
        evbuffer_add_printf(out, "} %llu\n", (unsigned long long)s->count);
    }
    evbuffer_add_printf(out, "# TYPE sluice_rate_limited_total counter\n");
    for (size_t i = 0; i < sum.cap; i++) {
        const struct series *s = &sum.items[i];
        if (s->kind != SERIES_RATE_LIMITED)
            continue;
        evbuffer_add_printf(out, "sluice_rate_limited_total{");
        route_labels(out, s);
        evbuffer_add_printf(out, "} %llu\n", (unsigned long long)s->count);
    }
    free(sum.items);
    evbuffer_add_printf(out,
                        "# TYPE sluice_connections_active gauge\n"
                        "sluice_connections_active{protocol=\"http1\"} %ld\n"
                        "sluice_connections_active{protocol=\"h2\"} %ld\n"
                        "sluice_connections_active{protocol=\"websocket\"} %ld\n",
                        atomic_load(&conns_http1), atomic_load(&conns_h2),
                        atomic_load(&conns_websocket));
    evbuffer_add_printf(out,
                        "# TYPE sluice_websocket_tunnels_active gauge\n"
                        "sluice_websocket_tunnels_active %ld\n",
                        atomic_load(&tunnels));
    evbuffer_add_printf(out,
                        "# TYPE sluice_config_reloads_total counter\n"
                        "sluice_config_reloads_total{result=\"ok\"} %ld\n"
                        "sluice_config_reloads_total{result=\"error\"} %ld\n",
                        atomic_load(&reloads_ok), atomic_load(&reloads_error));
}

void metrics_free(void)
{
    pthread_mutex_lock(&tables_lock);
    while (tables) {
        struct metrics_table *t = tables;
        tables = t->next;
        free(t->items);
        pthread_mutex_destroy(&t->lock);
        free(t);
    }
    shared = NULL;
    pthread_mutex_unlock(&tables_lock);
    pthread_mutex_lock(&intern_lock);
    while (interned_names) {
        struct interned *i = interned_names;
        interned_names = i->next;
        free(i);
    }
    pthread_mutex_unlock(&intern_lock);
}

/* ---- the read side of the status page ------------------------------------------ */

void metrics_visit(void (*fn)(void *ctx, const struct metrics_figure *f), void *ctx,
                   struct metrics_gauges *gauges)
{
    struct metrics_table sum = {0};
    pthread_mutex_lock(&tables_lock);
    for (struct metrics_table *t = tables; t; t = t->next) {
        pthread_mutex_lock(&t->lock);
        for (size_t i = 0; i < t->cap; i++) {
            if (t->items[i].kind)
                series_add(merged_lookup(&sum, &t->items[i]), &t->items[i]);
        }
        pthread_mutex_unlock(&t->lock);
    }
    pthread_mutex_unlock(&tables_lock);
    for (size_t i = 0; i < sum.cap; i++) {
        const struct series *s = &sum.items[i];
        struct metrics_figure f = {.code = s->code, .count = s->count};
        switch (s->kind) {
        case SERIES_REQUEST:
            f.kind = METRICS_ROUTE;
            f.route = s->name_a;
            f.seconds = s->sum;
            f.buckets = s->buckets;
            f.bounds = duration_bounds;
            f.num_buckets = DURATION_BUCKETS;
            break;
        case SERIES_UPSTREAM:
        case SERIES_CONNECT_ERROR:
            f.kind = s->kind == SERIES_UPSTREAM ? METRICS_UPSTREAM : METRICS_CONNECT_ERRORS;
            f.upstream = s->name_a;
            f.target = s->name_b;
            break;
        case SERIES_RATE_LIMITED:
            f.kind = METRICS_RATE_LIMITED;
            f.route = s->name_a;
            break;
        default:
            continue;
        }
        fn(ctx, &f);
    }
    free(sum.items);
    gauges->http1 = atomic_load(&conns_http1);
    gauges->h2 = atomic_load(&conns_h2);
    gauges->websocket = atomic_load(&conns_websocket);
    gauges->tunnels = atomic_load(&tunnels);
    gauges->reloads_ok = atomic_load(&reloads_ok);
    gauges->reloads_error = atomic_load(&reloads_error);
}
