#include "ops/status.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "base/clock.h"
#include "base/json_writer.h"
#include "conf/config.h"
#include "ops/metrics.h"

/* ---- boards: what each worker last published ------------------------------------ */

/* A published target; its strings are offsets into the publication's text. */
struct board_item {
    struct status_target t;
    size_t upstream, name, host;
};

struct publication {
    struct board_item *items;
    size_t count, cap;
    char *text;
    size_t len, text_cap;
    unsigned connections;
    int64_t at_ms; /* 0: nothing published yet */
};

struct status_board {
    pthread_mutex_t lock; /* guards `latest`; held by the worker only for the swap */
    int id;
    struct publication staging; /* the worker's own */
    struct publication latest;
    bool failed; /* out of memory while building: the publication is dropped */
    struct status_board *next;
};

static pthread_mutex_t boards_lock = PTHREAD_MUTEX_INITIALIZER;
static struct status_board *boards;

struct status_board *status_board_new(int worker_id)
{
    struct status_board *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    pthread_mutex_init(&b->lock, NULL);
    b->id = worker_id;
    pthread_mutex_lock(&boards_lock);
    struct status_board **tail = &boards;
    while (*tail) /* kept in worker order */
        tail = &(*tail)->next;
    *tail = b;
    pthread_mutex_unlock(&boards_lock);
    return b;
}

void status_board_free(struct status_board *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&boards_lock);
    for (struct status_board **p = &boards; *p; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            break;
        }
    }
    pthread_mutex_unlock(&boards_lock);
    free(b->staging.items);
    free(b->staging.text);
    free(b->latest.items);
    free(b->latest.text);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

void status_board_begin(struct status_board *b, unsigned connections)
{
    b->staging.count = 0;
    b->staging.len = 0;
    b->staging.connections = connections;
    b->failed = false;
}

/* Copies `s` into the publication's text; returns its offset, or SIZE_MAX when out of memory. */
static size_t keep_text(struct publication *p, const char *s)
{
    size_t n = strlen(s) + 1;
    if (p->len + n > p->text_cap) {
        size_t cap = p->text_cap ? p->text_cap : 256;
        while (cap < p->len + n)
            cap *= 2;
        char *t = realloc(p->text, cap);
        if (!t)
            return SIZE_MAX;
        p->text = t;
        p->text_cap = cap;
    }
    memcpy(p->text + p->len, s, n);
    p->len += n;
    return p->len - n;
}

void status_board_add(struct status_board *b, const struct status_target *t)
{
    struct publication *p = &b->staging;
    if (p->count == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct board_item *items = realloc(p->items, cap * sizeof *items);
        if (!items) {
            b->failed = true;
            return;
        }
        p->items = items;
        p->cap = cap;
    }
    struct board_item *it = &p->items[p->count];
    it->t = *t;
    it->upstream = keep_text(p, t->upstream);
    it->name = keep_text(p, t->name);
    it->host = keep_text(p, t->host);
    if (it->upstream == SIZE_MAX || it->name == SIZE_MAX || it->host == SIZE_MAX) {
        b->failed = true;
        return;
    }
    p->count++;
}

void status_board_commit(struct status_board *b)
{
    if (b->failed)
        return; /* the previous publication stays */
    b->staging.at_ms = clock_mono_ms();
    pthread_mutex_lock(&b->lock);
    struct publication old = b->latest;
    b->latest = b->staging;
    pthread_mutex_unlock(&b->lock);
    b->staging = old; /* reused by the next publication */
}

/* ---- the process ---------------------------------------------------------------- */

static int64_t started_ms;
static int num_workers;

void status_process_started(int workers)
{
    started_ms = clock_mono_ms();
    num_workers = workers;
}

/* ---- figures: the metrics summed per route and per target ----------------------- */

#define MAX_BUCKETS 32

enum figure_kind { FIG_ROUTE, FIG_TARGET };

struct figure {
    enum figure_kind kind;
    const char *a; /* route, or upstream (interned by ops/metrics: compared as pointers) */
    const char *b; /* target */
    uint64_t count;
    uint64_t classes[6]; /* [1..5]: 1xx..5xx; [0]: anything else */
    double seconds;
    uint64_t buckets[MAX_BUCKETS];
    int num_buckets;
    const double *bounds;
    uint64_t connect_errors;
    uint64_t rate_limited;
};

struct figures {
    struct figure *items;
    size_t count, cap;
};

static struct figure *figure_get(struct figures *fs, enum figure_kind kind, const char *a,
                                 const char *b)
{
    for (size_t i = 0; i < fs->count; i++) {
        struct figure *f = &fs->items[i];
        if (f->kind == kind && f->a == a && f->b == b)
            return f;
    }
    if (fs->count == fs->cap) {
        size_t cap = fs->cap ? fs->cap * 2 : 32;
        struct figure *items = realloc(fs->items, cap * sizeof *items);
        if (!items)
            return NULL;
        fs->items = items;
        fs->cap = cap;
    }
    struct figure *f = &fs->items[fs->count++];
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->a = a;
    f->b = b;
    return f;
}

/* The figure named by strings rather than interned pointers, or NULL. */
static const struct figure *figure_find(const struct figures *fs, enum figure_kind kind,
                                        const char *a, const char *b)
{
    for (size_t i = 0; fs && i < fs->count; i++) {
        const struct figure *f = &fs->items[i];
        if (f->kind == kind && strcmp(f->a, a) == 0 && (!b || (f->b && strcmp(f->b, b) == 0)))
            return f;
    }
    return NULL;
}

static void on_metric(void *ctx, const struct metrics_figure *m)
{
    struct figures *fs = ctx;
    bool route = m->kind == METRICS_ROUTE || m->kind == METRICS_RATE_LIMITED;
    struct figure *f = route ? figure_get(fs, FIG_ROUTE, m->route, NULL)
                             : figure_get(fs, FIG_TARGET, m->upstream, m->target);
    if (!f)
        return;
    if (m->kind == METRICS_CONNECT_ERRORS) {
        f->connect_errors += m->count;
        return;
    }
    if (m->kind == METRICS_RATE_LIMITED) {
        f->rate_limited += m->count;
        return;
    }
    f->count += m->count;
    f->classes[m->code >= 100 && m->code < 600 ? m->code / 100 : 0] += m->count;
    if (m->kind == METRICS_ROUTE) {
        f->seconds += m->seconds;
        f->bounds = m->bounds;
        f->num_buckets = m->num_buckets < MAX_BUCKETS ? m->num_buckets : MAX_BUCKETS;
        for (int i = 0; i < f->num_buckets; i++)
            f->buckets[i] += m->buckets[i];
    }
}

/* `now` minus `base` (NULL: zero), field by field. */
static struct figure figure_sub(const struct figure *now, const struct figure *base)
{
    struct figure d = *now;
    if (!base)
        return d;
    d.count -= base->count;
    for (int i = 0; i < 6; i++)
        d.classes[i] -= base->classes[i];
    d.seconds -= base->seconds;
    for (int i = 0; i < d.num_buckets && i < base->num_buckets; i++)
        d.buckets[i] -= base->buckets[i];
    d.connect_errors -= base->connect_errors;
    d.rate_limited -= base->rate_limited;
    return d;
}

static void figure_add(struct figure *sum, const struct figure *f)
{
    sum->count += f->count;
    for (int i = 0; i < 6; i++)
        sum->classes[i] += f->classes[i];
    sum->seconds += f->seconds;
    if (f->num_buckets) {
        sum->num_buckets = f->num_buckets;
        sum->bounds = f->bounds;
    }
    for (int i = 0; i < f->num_buckets; i++)
        sum->buckets[i] += f->buckets[i];
    sum->connect_errors += f->connect_errors;
    sum->rate_limited += f->rate_limited;
}

/* ---- rate samples: earlier figures, kept on the admin thread --------------------- */

#define MAX_SAMPLES 16

struct sample {
    int64_t at_ms;
    struct figures figs;
};

static struct sample samples[MAX_SAMPLES]; /* oldest first */
static int num_samples;

static void sample_drop_oldest(void)
{
    free(samples[0].figs.items);
    memmove(&samples[0], &samples[1], (size_t)(num_samples - 1) * sizeof samples[0]);
    num_samples--;
}

/*
 * Keeps `now` as a sample (taking over its items) when the newest is at least
 * STATUS_WINDOW_MIN_MS old, and returns the base of the rates: the oldest
 * sample no older than STATUS_WINDOW_MAX_MS, or NULL (none: rates since the
 * start).
 */
static const struct sample *samples_update(int64_t now_ms, struct figures *now, bool *kept)
{
    while (num_samples > 0 && now_ms - samples[0].at_ms > STATUS_WINDOW_MAX_MS)
        sample_drop_oldest();
    const struct sample *base = NULL;
    if (num_samples > 0 && now_ms > samples[0].at_ms)
        base = &samples[0];
    *kept = false;
    if (num_samples == 0 || now_ms - samples[num_samples - 1].at_ms >= STATUS_WINDOW_MIN_MS) {
        if (num_samples == MAX_SAMPLES) {
            sample_drop_oldest();
            base = &samples[0];
        }
        samples[num_samples].at_ms = now_ms;
        samples[num_samples].figs = *now;
        num_samples++;
        *kept = true;
    }
    return base;
}

void status_free(void)
{
    while (num_samples > 0)
        sample_drop_oldest();
}

/* ---- targets merged over the boards ---------------------------------------------- */

struct merged_target {
    struct status_target t; /* strings owned (strdup) */
    int64_t at_ms;          /* the publication its health came from */
};

struct merged {
    struct merged_target *items;
    size_t count, cap;
};

static void merge_item(struct merged *m, const struct status_target *t, int64_t at_ms)
{
    for (size_t i = 0; i < m->count; i++) {
        struct merged_target *d = &m->items[i];
        if (strcmp(d->t.upstream, t->upstream) != 0 || strcmp(d->t.name, t->name) != 0)
            continue;
        d->t.pool_idle += t->pool_idle;
        d->t.pool_open += t->pool_open;
        d->t.in_flight += t->in_flight;
        d->t.offered |= t->offered;
        if (at_ms > d->at_ms) { /* the freshest view of the shared health marks */
            d->t.active_down = t->active_down;
            d->t.passive_ms = t->passive_ms;
            d->t.check_failures = t->check_failures;
            d->t.check_successes = t->check_successes;
            d->t.check_age_ms = t->check_age_ms;
            d->t.check_us = t->check_us;
            d->t.check_ok = t->check_ok;
            d->at_ms = at_ms;
        }
        return;
    }
    if (m->count == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        struct merged_target *items = realloc(m->items, cap * sizeof *items);
        if (!items)
            return;
        m->items = items;
        m->cap = cap;
    }
    struct merged_target *d = &m->items[m->count];
    d->t = *t;
    d->t.upstream = strdup(t->upstream);
    d->t.name = strdup(t->name);
    d->t.host = strdup(t->host);
    d->at_ms = at_ms;
    if (!d->t.upstream || !d->t.name || !d->t.host) {
        free((char *)d->t.upstream);
        free((char *)d->t.name);
        free((char *)d->t.host);
        return;
    }
    m->count++;
}

static void merged_free(struct merged *m)
{
    for (size_t i = 0; i < m->count; i++) {
        free((char *)m->items[i].t.upstream);
        free((char *)m->items[i].t.name);
        free((char *)m->items[i].t.host);
    }
    free(m->items);
}

/* ---- writing -------------------------------------------------------------------- */

struct render {
    struct json_writer *w;
    const struct figures *now;
    const struct figures *base; /* NULL: since the start */
    double window_s;
    int64_t now_ms;
};

static void put(struct render *r, const char *syntax)
{
    json_writer_raw_cstr(r->w, syntax);
}

static void put_string(struct render *r, const char *s)
{
    json_writer_string(r->w, slice_cstr(s ? s : ""));
}

static void put_key_string(struct render *r, const char *key, const char *value)
{
    put(r, key);
    put_string(r, value);
}

static void put_int(struct render *r, const char *key, long long v)
{
    put(r, key);
    json_writer_int(r->w, v);
}

/* A number with up to 3 decimals; null when not finite. */
static void put_double(struct render *r, const char *key, double v)
{
    put(r, key);
    if (!isfinite(v)) {
        put(r, "null");
        return;
    }
    char buf[64];
    snprintf(buf, sizeof buf, "%.3f", v);
    put(r, buf);
}

/*
 * The q-quantile in ms, interpolated within the histogram bucket it falls
 * in, and never more than the sum of all durations (a bound that matters
 * for a few requests in a wide first bucket).
 */
static double quantile_ms(const struct figure *f, double q)
{
    double rank = q * (double)f->count;
    uint64_t below = 0;
    double lower = 0;
    double v = -1;
    for (int i = 0; i < f->num_buckets && v < 0; i++) {
        if ((double)f->buckets[i] >= rank && f->buckets[i] > below) {
            double part = (rank - (double)below) / (double)(f->buckets[i] - below);
            v = lower + (f->bounds[i] - lower) * part;
        }
        below = f->buckets[i];
        lower = f->bounds[i];
    }
    if (v < 0)
        v = lower; /* above the last bound: at least that */
    return (v < f->seconds ? v : f->seconds) * 1000.0;
}

static const char *const class_names[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

/* {"requests": N, "status": {"1xx": .., "other": ..}, "latency_ms": {..}} of one figure. */
static void put_counts(struct render *r, const char *key, const struct figure *f, bool latency)
{
    put(r, key);
    put_int(r, "{\"requests\":", (long long)f->count);
    put(r, ",\"status\":{");
    for (int i = 1; i <= 6; i++) {
        int c = i % 6; /* 1xx..5xx, then "other" */
        put(r, i > 1 ? "," : "");
        put_string(r, class_names[c]);
        put_int(r, ":", (long long)f->classes[c]);
    }
    put(r, "}");
    if (latency) {
        put(r, ",\"latency_ms\":");
        if (f->count == 0 || f->num_buckets == 0) {
            put(r, "null");
        } else {
            put_double(r, "{\"mean\":", f->seconds * 1000.0 / (double)f->count);
            put_double(r, ",\"p50\":", quantile_ms(f, 0.50));
            put_double(r, ",\"p95\":", quantile_ms(f, 0.95));
            put_double(r, ",\"p99\":", quantile_ms(f, 0.99));
            put(r, "}");
        }
    }
    put(r, "}");
}

/* "rate", "total" and "recent" of a figure (`now`) and its base (NULL: zero). */
static void put_figure(struct render *r, const struct figure *now, const struct figure *base,
                       bool latency)
{
    struct figure zero = {0};
    if (!now)
        now = &zero;
    struct figure recent = figure_sub(now, base);
    put_double(r, "\"rate\":", r->window_s > 0 ? (double)recent.count / r->window_s : 0);
    put_counts(r, ",\"total\":", now, latency);
    put_counts(r, ",\"recent\":", &recent, latency);
}

static const char *match_text(const struct route_config *rc, char *buf, size_t cap)
{
    switch (rc->match) {
    case MATCH_PREFIX:
        snprintf(buf, cap, "prefix %s", rc->path);
        break;
    case MATCH_PATH:
        snprintf(buf, cap, "path %s", rc->path);
        break;
    case MATCH_REGEX:
        snprintf(buf, cap, "regex %s", rc->regex_source);
        break;
    default:
        snprintf(buf, cap, "any path");
        break;
    }
    return buf;
}

static void put_route(struct render *r, const char *name, const struct route_config *rc)
{
    const struct figure *now = figure_find(r->now, FIG_ROUTE, name, NULL);
    put_key_string(r, "{\"name\":", name);
    if (rc) {
        char buf[512];
        put_key_string(r, ",\"match\":", match_text(rc, buf, sizeof buf));
        put(r, ",\"hosts\":[");
        for (size_t i = 0; i < rc->num_hosts; i++) {
            put(r, i ? "," : "");
            put_string(r, rc->hosts[i]);
        }
        put(r, "],\"methods\":[");
        for (size_t i = 0; i < rc->num_methods; i++) {
            put(r, i ? "," : "");
            put_string(r, rc->methods[i]);
        }
        put(r, "]");
        static const char *const actions[] = {"upstream", "respond", "redirect"};
        put_key_string(r, ",\"action\":", actions[rc->action]);
        if (rc->action == ROUTE_UPSTREAM)
            put_key_string(r, ",\"upstream\":", rc->upstream->name);
    } else {
        put(r, ",\"match\":null,\"hosts\":[],\"methods\":[],\"action\":\"none\"");
    }
    put_int(r, ",\"rate_limited\":", now ? (long long)now->rate_limited : 0);
    put(r, ",");
    put_figure(r, now, figure_find(r->base, FIG_ROUTE, name, NULL), true);
    put(r, "}");
}

static const char *target_state(const struct status_target *t)
{
    if (!t->offered)
        return "gone";
    if (t->active_down)
        return "down";
    return t->passive_ms > 0 ? "ejected" : "up";
}

static void put_pool(struct render *r, unsigned idle, unsigned open, unsigned in_flight)
{
    put_int(r, ",\"pool\":{\"idle\":", idle);
    put_int(r, ",\"active\":", open >= idle ? open - idle : 0);
    put_int(r, ",\"open\":", open);
    put(r, "}");
    put_int(r, ",\"in_flight\":", in_flight);
}

/* "host:port" of a configured target, the host bracketed when it is IPv6. */
static const char *configured_name(const char *host, unsigned port, char *buf, size_t cap)
{
    snprintf(buf, cap, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
    return buf;
}

static void put_target(struct render *r, const struct upstream_config *uc,
                       const struct merged_target *mt)
{
    const struct status_target *t = &mt->t;
    int64_t age = r->now_ms - mt->at_ms; /* how old the publication is */
    char conf[300];
    put_key_string(r, "{\"name\":", t->name);
    put_key_string(r, ",\"configured\":", configured_name(t->host, t->port, conf, sizeof conf));
    put_int(r, ",\"weight\":", t->weight);
    put_key_string(r, ",\"state\":", target_state(t));
    int64_t passive = t->passive_ms - age;
    put_int(r, ",\"ejected_ms\":", passive > 0 ? passive : 0);
    put(r, ",\"check\":");
    if (!uc->health.enabled || t->check_age_ms < 0) {
        put(r, "null");
    } else {
        put(r, t->check_ok ? "{\"ok\":true" : "{\"ok\":false");
        put_int(r, ",\"ago_ms\":", t->check_age_ms + age);
        put_double(r, ",\"duration_ms\":", (double)t->check_us / 1000.0);
        put_int(r, ",\"failures\":", t->check_failures);
        put_int(r, ",\"successes\":", t->check_successes);
        put(r, "}");
    }
    put_pool(r, t->pool_idle, t->pool_open, t->in_flight);
    const struct figure *now = figure_find(r->now, FIG_TARGET, uc->name, t->name);
    put_int(r, ",\"connect_errors\":", now ? (long long)now->connect_errors : 0);
    put(r, ",");
    put_figure(r, now, figure_find(r->base, FIG_TARGET, uc->name, t->name), false);
    put(r, "}");
}

/* A configured target no worker has an address for yet (DNS). */
static void put_unresolved(struct render *r, const struct target_config *tc)
{
    char conf[300];
    configured_name(tc->host, tc->port, conf, sizeof conf);
    put_key_string(r, "{\"name\":", conf);
    put_key_string(r, ",\"configured\":", conf);
    put_int(r, ",\"weight\":", tc->weight);
    put(r, ",\"state\":\"unresolved\",\"ejected_ms\":0,\"check\":null");
    put_pool(r, 0, 0, 0);
    put(r, ",\"connect_errors\":0,");
    put_figure(r, NULL, NULL, false);
    put(r, "}");
}

static const char *balance_name(const struct upstream_config *uc, char *buf, size_t cap)
{
    static const char *const names[] = {"round_robin", "least_conn", "random", "ip_hash"};
    if (uc->balance == BALANCE_HEADER)
        snprintf(buf, cap, "header:%s", uc->balance_header);
    else
        snprintf(buf, cap, "%s", names[uc->balance]);
    return buf;
}

/* The route figures of `figs` summed over the routes that send to `uc`. */
static struct figure upstream_route_sum(const struct snapshot *s, const struct upstream_config *uc,
                                        const struct figures *figs)
{
    struct figure sum = {0};
    for (size_t i = 0; i < s->num_routes; i++) {
        const struct route_config *rc = &s->routes[i];
        if (rc->action != ROUTE_UPSTREAM || rc->upstream != uc)
            continue;
        const struct figure *f = figure_find(figs, FIG_ROUTE, rc->name, NULL);
        if (f)
            figure_add(&sum, f);
    }
    return sum;
}

static void put_health_config(struct render *r, const struct health_config *h)
{
    put(r, ",\"health_check\":");
    if (!h->enabled) {
        put(r, "null");
        return;
    }
    put_key_string(r, "{\"path\":", h->path ? h->path : "/");
    put_int(r, ",\"interval_ms\":", h->interval_ms);
    put_int(r, ",\"timeout_ms\":", h->timeout_ms);
    put_int(r, ",\"unhealthy_after\":", h->unhealthy_after);
    put_int(r, ",\"healthy_after\":", h->healthy_after);
    put(r, "}");
}

static void put_upstream(struct render *r, const struct snapshot *s,
                         const struct upstream_config *uc, const struct merged *m)
{
    char buf[300];
    put_key_string(r, "{\"name\":", uc->name);
    put_key_string(r, ",\"balance\":", balance_name(uc, buf, sizeof buf));
    put_key_string(r, ",\"protocol\":", uc->protocol == UPSTREAM_H2 ? "h2" : "http/1.1");
    put_int(r, ",\"keepalive\":", uc->keepalive);
    put_int(r, ",\"max_connections\":", uc->max_connections);
    put_health_config(r, &uc->health);
    /* Totals over its targets: upstream responses, and the pools. */
    struct figure now = {0}, base = {0};
    unsigned idle = 0, open = 0, in_flight = 0;
    size_t up = 0, total = 0;
    for (size_t i = 0; i < m->count; i++) {
        const struct status_target *t = &m->items[i].t;
        if (strcmp(t->upstream, uc->name) != 0)
            continue;
        idle += t->pool_idle;
        open += t->pool_open;
        in_flight += t->in_flight;
        if (t->offered) {
            total++;
            up += strcmp(target_state(t), "up") == 0;
        }
        const struct figure *f = figure_find(r->now, FIG_TARGET, uc->name, t->name);
        if (f)
            figure_add(&now, f);
        f = figure_find(r->base, FIG_TARGET, uc->name, t->name);
        if (f)
            figure_add(&base, f);
    }
    put_int(r, ",\"targets_up\":", (long long)up);
    put_int(r, ",\"targets_total\":", (long long)total);
    put_pool(r, idle, open, in_flight);
    put_int(r, ",\"connect_errors\":", (long long)now.connect_errors);
    put(r, ",");
    put_figure(r, &now, &base, false);
    /* Latency as the clients of the routes sending here saw it. */
    struct figure lat_now = upstream_route_sum(s, uc, r->now);
    struct figure lat_base = upstream_route_sum(s, uc, r->base);
    struct figure lat_recent = figure_sub(&lat_now, &lat_base);
    put(r, ",\"routes\":{");
    put_counts(r, "\"total\":", &lat_now, true);
    put_counts(r, ",\"recent\":", &lat_recent, true);
    put(r, "},\"targets\":[");
    bool first = true;
    for (size_t i = 0; i < m->count; i++) {
        if (strcmp(m->items[i].t.upstream, uc->name) != 0)
            continue;
        put(r, first ? "" : ",");
        first = false;
        put_target(r, uc, &m->items[i]);
    }
    for (size_t i = 0; i < uc->num_targets; i++) {
        const struct target_config *tc = &uc->targets[i];
        bool seen = false;
        for (size_t j = 0; j < m->count && !seen; j++) {
            const struct status_target *t = &m->items[j].t;
            seen = strcmp(t->upstream, uc->name) == 0 && strcmp(t->host, tc->host) == 0 &&
                   t->port == tc->port;
        }
        if (seen)
            continue;
        put(r, first ? "" : ",");
        first = false;
        put_unresolved(r, tc);
    }
    put(r, "]}");
}

/* Reads every board's latest publication: targets merged, and one entry per worker. */
static void read_boards(struct render *r, struct merged *m)
{
    put(r, ",\"worker_threads\":[");
    pthread_mutex_lock(&boards_lock);
    for (struct status_board *b = boards; b; b = b->next) {
        pthread_mutex_lock(&b->lock);
        const struct publication *p = &b->latest;
        for (size_t i = 0; i < p->count; i++) {
            struct status_target t = p->items[i].t;
            t.upstream = p->text + p->items[i].upstream;
            t.name = p->text + p->items[i].name;
            t.host = p->text + p->items[i].host;
            merge_item(m, &t, p->at_ms);
        }
        put(r, b == boards ? "" : ",");
        put_int(r, "{\"id\":", b->id);
        put_int(r, ",\"connections\":", p->connections);
        put_int(r, ",\"published_ms_ago\":", p->at_ms ? r->now_ms - p->at_ms : -1);
        put(r, "}");
        pthread_mutex_unlock(&b->lock);
    }
    pthread_mutex_unlock(&boards_lock);
    put(r, "]");
}

static void put_process(struct render *r, const struct snapshot *s, const struct metrics_gauges *g,
                        bool draining)
{
    put_key_string(r, "{\"process\":{\"version\":", SLUICE_VERSION);
    put_int(r, ",\"pid\":", (long long)getpid());
    put_double(r, ",\"uptime_s\":", (double)(r->now_ms - started_ms) / 1000.0);
    put_int(r, ",\"workers\":", num_workers);
    put(r, draining ? ",\"draining\":true" : ",\"draining\":false");
    put_key_string(r, ",\"config_file\":", s ? s->file : "");
    put_int(r, ",\"config_generation\":", s ? (long long)s->generation : 0);
    put_int(r, ",\"reloads\":{\"ok\":", g->reloads_ok);
    put_int(r, ",\"error\":", g->reloads_error);
    put(r, "}}");
    put_double(r, ",\"window_s\":", r->window_s);
    put_int(r, ",\"connections\":{\"http1\":", g->http1);
    put_int(r, ",\"h2\":", g->h2);
    put_int(r, ",\"websocket\":", g->websocket);
    put_int(r, ",\"total\":", g->http1 + g->h2 + g->websocket);
    put_int(r, "},\"websocket_tunnels\":", g->tunnels);
}

/* Every request, over all routes and unmatched ones. */
static struct figure all_requests(const struct figures *figs)
{
    struct figure sum = {0};
    for (size_t i = 0; figs && i < figs->count; i++) {
        if (figs->items[i].kind == FIG_ROUTE)
            figure_add(&sum, &figs->items[i]);
    }
    return sum;
}

void status_render(struct evbuffer *out, bool draining)
{
    struct json_writer w;
    json_writer_init_evbuffer(&w, out);
    int64_t now_ms = clock_mono_ms();
    struct figures now = {0};
    struct metrics_gauges g;
    metrics_visit(on_metric, &now, &g);
    bool kept;
    const struct sample *base = samples_update(now_ms, &now, &kept);
    struct render r = {
        .w = &w,
        .now = &now,
        .base = base ? &base->figs : NULL,
        .window_s = (double)(now_ms - (base ? base->at_ms : started_ms)) / 1000.0,
        .now_ms = now_ms,
    };
    struct snapshot *s = config_current_hold();
    put_process(&r, s, &g, draining);
    struct merged m = {0};
    read_boards(&r, &m);

    struct figure all_now = all_requests(&now);
    struct figure all_base = all_requests(r.base);
    put(&r, ",\"requests\":{");
    put_figure(&r, &all_now, &all_base, true);
    put(&r, "},\"routes\":[");
    for (size_t i = 0; s && i < s->num_routes; i++) {
        put(&r, i ? "," : "");
        put_route(&r, s->routes[i].name, &s->routes[i]);
    }
    if (figure_find(&now, FIG_ROUTE, "(none)", NULL)) {
        put(&r, s && s->num_routes ? "," : "");
        put_route(&r, "(none)", NULL);
    }
    put(&r, "],\"upstreams\":[");
    for (size_t i = 0; s && i < s->num_upstreams; i++) {
        put(&r, i ? "," : "");
        put_upstream(&r, s, &s->upstreams[i], &m);
    }
    put(&r, "]}\n");
    merged_free(&m);
    snapshot_release(s);
    if (!kept)
        free(now.items);
}
