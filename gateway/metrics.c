#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "config.h"
#include "exchange.h"

/*
 * Each thread that counts gets its own table of series (metric name plus
 * label set, as one string key). Counting touches only the caller's table;
 * its mutex is taken only so that a scrape can read it safely, so it is
 * never contended on the request path.
 */

#define DURATION_BUCKETS 11
static const double duration_bounds[DURATION_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                         0.5,   1,    2.5,   5,    10};

enum series_kind {
    SERIES_COUNTER = 0,
    SERIES_HISTOGRAM,
};

struct series {
    char *key; /* "name{labels}" for counters; "labels" for the duration histogram */
    enum series_kind kind;
    uint64_t value;
    uint64_t buckets[DURATION_BUCKETS];
    double sum;
};

struct table {
    pthread_mutex_t lock;
    struct series *items;
    size_t count;
    size_t cap; /* power of two, open addressing */
    struct table *next;
};

static pthread_mutex_t tables_lock = PTHREAD_MUTEX_INITIALIZER;
static struct table *tables;
static _Thread_local struct table *mine;

static atomic_long conns_http1;
static atomic_long reloads_ok;
static atomic_long reloads_error;

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static struct series *find(struct table *t, const char *key, enum series_kind kind, bool create)
{
    if (t->cap == 0 || (t->count + 1) * 2 > t->cap) {
        if (!create)
            goto lookup;
        size_t ncap = t->cap ? t->cap * 2 : 64;
        struct series *n = calloc(ncap, sizeof *n);
        if (!n)
            return NULL;
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->items[i].key)
                continue;
            size_t j = hash(t->items[i].key) & (ncap - 1);
            while (n[j].key)
                j = (j + 1) & (ncap - 1);
            n[j] = t->items[i];
        }
        free(t->items);
        t->items = n;
        t->cap = ncap;
    }
lookup:
    if (t->cap == 0)
        return NULL;
    size_t i = hash(key) & (t->cap - 1);
    while (t->items[i].key) {
        if (t->items[i].kind == kind && strcmp(t->items[i].key, key) == 0)
            return &t->items[i];
        i = (i + 1) & (t->cap - 1);
    }
    if (!create)
        return NULL;
    t->items[i].key = strdup(key);
    t->items[i].kind = kind;
    t->count++;
    return &t->items[i];
}

static struct table *table(void)
{
    if (mine)
        return mine;
    struct table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_lock(&tables_lock);
    t->next = tables;
    tables = t;
    pthread_mutex_unlock(&tables_lock);
    mine = t;
    return t;
}

static void count(const char *key, uint64_t n)
{
    struct table *t = table();
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    struct series *s = find(t, key, SERIES_COUNTER, true);
    if (s)
        s->value += n;
    pthread_mutex_unlock(&t->lock);
}

/* Writes a label value escaped for the exposition format. */
static size_t label(char *out, size_t room, const char *v)
{
    size_t n = 0;
    for (; v && *v && n + 2 < room; v++) {
        if (*v == '"' || *v == '\\' || *v == '\n')
            out[n++] = '\\';
        out[n++] = *v == '\n' ? 'n' : *v;
    }
    out[n] = '\0';
    return n;
}

void metrics_exchange_done(const struct exchange *x)
{
    char route[256], key[400];
    label(route, sizeof route, x->route ? x->route->name : "(none)");
    int status = x->status >= 100 && x->status <= 999 ? x->status : 499;
    snprintf(key, sizeof key, "sluice_requests_total{route=\"%s\",code=\"%03d\"}", route, status);
    count(key, 1);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    double secs = (double)(now - x->start_us) / 1e6;
    snprintf(key, sizeof key, "route=\"%s\"", route);
    struct table *t = table();
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    struct series *h = find(t, key, SERIES_HISTOGRAM, true);
    if (h) {
        h->value++;
        h->sum += secs;
        for (int i = 0; i < DURATION_BUCKETS; i++)
            if (secs <= duration_bounds[i])
                h->buckets[i]++;
    }
    pthread_mutex_unlock(&t->lock);
}

void metrics_upstream_response(const char *upstream, const char *target, int code)
{
    char u[128], tg[96], key[400];
    label(u, sizeof u, upstream);
    label(tg, sizeof tg, target);
    snprintf(key, sizeof key,
             "sluice_upstream_requests_total{upstream=\"%s\",target=\"%s\",code=\"%03d\"}", u, tg,
             code);
    count(key, 1);
}

void metrics_connect_error(const char *upstream, const char *target)
{
    char u[128], tg[96], key[400];
    label(u, sizeof u, upstream);
    label(tg, sizeof tg, target);
    snprintf(key, sizeof key, "sluice_upstream_connect_errors_total{upstream=\"%s\",target=\"%s\"}",
             u, tg);
    count(key, 1);
}

void metrics_connection_opened(const char *protocol)
{
    atomic_fetch_add(&conns_http1, 1);
}

void metrics_connection_closed(const char *protocol)
{
    atomic_fetch_sub(&conns_http1, 1);
}

void metrics_reload(bool ok)
{
    atomic_fetch_add(ok ? &reloads_ok : &reloads_error, 1);
}

void metrics_render(struct evbuffer *out)
{
    /* Sum every thread's table into one, then print it. */
    struct table sum = {0};
    pthread_mutex_init(&sum.lock, NULL);
    pthread_mutex_lock(&tables_lock);
    for (struct table *t = tables; t; t = t->next) {
        pthread_mutex_lock(&t->lock);
        for (size_t i = 0; i < t->cap; i++) {
            const struct series *s = &t->items[i];
            if (!s->key)
                continue;
            struct series *d = find(&sum, s->key, s->kind, true);
            if (!d)
                continue;
            d->value += s->value;
            d->sum += s->sum;
            for (int b = 0; b < DURATION_BUCKETS; b++)
                d->buckets[b] += s->buckets[b];
        }
        pthread_mutex_unlock(&t->lock);
    }
    pthread_mutex_unlock(&tables_lock);

    static const char *const counters[] = {
        "sluice_requests_total", "sluice_upstream_requests_total",
        "sluice_upstream_connect_errors_total", "sluice_rate_limited_total"};
    for (size_t c = 0; c < sizeof counters / sizeof *counters; c++) {
        size_t len = strlen(counters[c]);
        evbuffer_add_printf(out, "# TYPE %s counter\n", counters[c]);
        for (size_t i = 0; i < sum.cap; i++) {
            const struct series *s = &sum.items[i];
            if (s->key && s->kind == SERIES_COUNTER && strncmp(s->key, counters[c], len) == 0 &&
                s->key[len] == '{')
                evbuffer_add_printf(out, "%s %llu\n", s->key, (unsigned long long)s->value);
        }
    }
    evbuffer_add_printf(out, "# TYPE sluice_request_duration_seconds histogram\n");
    for (size_t i = 0; i < sum.cap; i++) {
        const struct series *s = &sum.items[i];
        if (!s->key || s->kind != SERIES_HISTOGRAM)
            continue;
        for (int b = 0; b < DURATION_BUCKETS; b++)
            evbuffer_add_printf(out, "sluice_request_duration_seconds_bucket{%s,le=\"%g\"} %llu\n",
                                s->key, duration_bounds[b], (unsigned long long)s->buckets[b]);
        evbuffer_add_printf(out, "sluice_request_duration_seconds_bucket{%s,le=\"+Inf\"} %llu\n",
                            s->key, (unsigned long long)s->value);
        evbuffer_add_printf(out, "sluice_request_duration_seconds_sum{%s} %.6f\n", s->key, s->sum);
        evbuffer_add_printf(out, "sluice_request_duration_seconds_count{%s} %llu\n", s->key,
                            (unsigned long long)s->value);
    }
    evbuffer_add_printf(out,
                        "# TYPE sluice_connections_active gauge\n"
                        "sluice_connections_active{protocol=\"http1\"} %ld\n",
                        atomic_load(&conns_http1));
    evbuffer_add_printf(out, "# TYPE sluice_websocket_tunnels_active gauge\n"
                             "sluice_websocket_tunnels_active 0\n");
    evbuffer_add_printf(out,
                        "# TYPE sluice_config_reloads_total counter\n"
                        "sluice_config_reloads_total{result=\"ok\"} %ld\n"
                        "sluice_config_reloads_total{result=\"error\"} %ld\n",
                        atomic_load(&reloads_ok), atomic_load(&reloads_error));
    for (size_t i = 0; i < sum.cap; i++)
        free(sum.items[i].key);
    free(sum.items);
    pthread_mutex_destroy(&sum.lock);
}

void metrics_free(void)
{
    pthread_mutex_lock(&tables_lock);
    while (tables) {
        struct table *t = tables;
        tables = t->next;
        for (size_t i = 0; i < t->cap; i++)
            free(t->items[i].key);
        free(t->items);
        pthread_mutex_destroy(&t->lock);
        free(t);
    }
    pthread_mutex_unlock(&tables_lock);
    mine = NULL;
}
