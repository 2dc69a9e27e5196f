#include "ops/metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "base/thread_cache.h"
#include "ops/accesslog.h"
#include "ops/record.h"

/*
 * Each thread that counts owns a table of series. A series is keyed by the
 * identity of the name strings it was counted with (route name, upstream
 * name, target name: pointers into the snapshot or the worker's targets)
 * plus a status code, so counting costs a pointer hash and one strcmp that
 * guards against a pointer being reused for another name after a reload.
 * Names are interned (copied once, kept until exit) when a series is made,
 * so scraping never reads freed configuration. Labels are formatted only
 * at scrape time.
 *
 * Torn-read-free scheme: a series is allocated once and never moves (the
 * table holds pointers to series), and its cells are 64-bit atomics that
 * only the owning thread writes, with a relaxed load and a relaxed store
 * (a plain mov on x86-64 and arm64: no lock prefix, no contention). The
 * scrape reads each cell with one relaxed load, so it sees either the old
 * or the new whole value, never half of one. The owner changes the slot
 * array only under the table's lock (adding a series, growing the array),
 * and the scrape holds that lock while it walks the array, so it never
 * reads an array being freed. A histogram keeps one cell per bucket (not
 * cumulative) and no separate count: the scrape makes the cumulative
 * buckets, the count and requests_total from the same loads, so they always
 * agree with each other.
 */

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "single-writer counters need lock-free 64-bit atomics");

/* Upper bounds in seconds: from a cached answer on loopback to the longest upstream timeout. */
#define DURATION_BUCKETS 15
static const double duration_bounds[DURATION_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
/* Cells of a request series: one per bucket, one for "over the last bound", the sum in µs. */
#define CELL_SUM_US (DURATION_BUCKETS + 1)
#define CELLS (DURATION_BUCKETS + 2)

enum series_kind {
    SERIES_REQUEST = 1,   /* requests_total{route,code} + duration{route}: buckets, sum */
    SERIES_UPSTREAM,      /* upstream_requests_total{upstream,target,code}: cells[0] */
    SERIES_CONNECT_ERROR, /* upstream_connect_errors_total{upstream,target}: cells[0] */
    SERIES_RATE_LIMITED,  /* rate_limited_total{route}: cells[0] */
    SERIES_TLS_FAILURE,   /* tls_handshake_failures_total{listener}: cells[0] */
    SERIES_POOL,          /* upstream_pool_*{upstream,target}: cells[0] idle, cells[1] open */
    SERIES_STORE_ERROR,   /* rate_limit_store_errors_total{reason}: cells[0] */
    SERIES_STORE_CALL,    /* rate_limit_store_duration_seconds: buckets, sum (like REQUEST) */
};

/* Per-table gauges and counters without labels: signed values in unsigned cells. */
enum fixed_cell {
    FIXED_CONNS_HTTP1,
    FIXED_CONNS_H2,
    FIXED_CONNS_WEBSOCKET, /* HTTP/1 connections that became a WebSocket tunnel */
    FIXED_TUNNELS,         /* open tunnels, HTTP/1 and HTTP/2 (RFC 8441) */
    FIXED_RELOADS_OK,
    FIXED_RELOADS_ERROR,
    FIXED_COUNT
};

struct metrics_table;

struct series {
    enum series_kind kind;
    int code;
    const void *key_a; /* the caller's pointers, for the fast lookup */
    const void *key_b;
    const char *name_a; /* interned copies, for the check and for scraping */
    const char *name_b;
    struct metrics_table *table; /* its owner (a shared table's writers take the lock) */
    _Atomic uint64_t cells[CELLS];
};

struct metrics_table {
    pthread_mutex_t lock; /* the slot array's: the owner adding a series, the scrape reading */
    bool shared;          /* written by several threads: every write under the lock */
    struct series **slots;
    size_t count;
    size_t cap; /* power of two, open addressing */
    _Atomic uint64_t fixed[FIXED_COUNT];
    struct metrics_table *next;
};

static pthread_mutex_t tables_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_table *tables;
/* The table of threads without a thread cache (main, unit tests): shared, under its lock. */
static struct metrics_table *shared;

static void (*health_source)(metrics_health_fn *fn, void *arg);

/* Interned names: a list, searched only when a new series is made. */
struct interned {
    struct interned *next;
    char name[];
};
static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;
static struct interned *interned_names;

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

/* The single writer's increment: no read-modify-write instruction, no lock. */
static inline void cell_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t cell_read(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
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

/* Doubles the slot array (under the table's lock). */
static int grow(struct metrics_table *t)
{
    size_t ncap = t->cap ? t->cap * 2 : 64;
    struct series **n = calloc(ncap, sizeof *n);
    if (!n)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        struct series *s = t->slots[i];
        if (!s)
            continue;
        size_t j = slot_of(s->kind, s->key_a, s->key_b, s->code, ncap);
        while (n[j])
            j = (j + 1) & (ncap - 1);
        n[j] = s;
    }
    free(t->slots);
    t->slots = n;
    t->cap = ncap;
    return 0;
}

/* The series for these names in `t`, or NULL (read by its writer: no lock needed). */
static struct series *find(const struct metrics_table *t, enum series_kind kind, const char *a,
                           const char *b, int code)
{
    if (!t->cap)
        return NULL;
    for (size_t i = slot_of(kind, a, b, code, t->cap);; i = (i + 1) & (t->cap - 1)) {
        struct series *s = t->slots[i];
        if (!s)
            return NULL;
        /*
         * A pointer reused for another name after a reload fails the name
         * check and gets a series of its own; the stale one stays (its
         * counts are still right under its own name).
         */
        if (s->kind == kind && s->key_a == a && s->key_b == b && s->code == code &&
            same_name(s->name_a, a) && same_name(s->name_b, b))
            return s;
    }
}

/* Adds the series (the first sighting of these labels on this thread): under the lock. */
static struct series *add(struct metrics_table *t, enum series_kind kind, const char *a,
                          const char *b, int code)
{
    struct series *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->kind = kind;
    s->key_a = a;
    s->key_b = b;
    s->code = code;
    s->name_a = intern(a);
    s->name_b = intern(b);
    s->table = t;
    if (!t->shared)
        pthread_mutex_lock(&t->lock);
    if ((t->count + 1) * 2 > t->cap && grow(t) < 0) {
        if (!t->shared)
            pthread_mutex_unlock(&t->lock);
        free(s);
        return NULL;
    }
    size_t i = slot_of(kind, a, b, code, t->cap);
    while (t->slots[i])
        i = (i + 1) & (t->cap - 1);
    t->slots[i] = s;
    t->count++;
    if (!t->shared)
        pthread_mutex_unlock(&t->lock);
    return s;
}

static struct series *lookup(struct metrics_table *t, enum series_kind kind, const char *a,
                             const char *b, int code)
{
    struct series *s = find(t, kind, a, b, code);
    return s ? s : add(t, kind, a, b, code);
}

static struct metrics_table *table_new(bool is_shared)
{
    struct metrics_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->lock, NULL);
    t->shared = is_shared;
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
    struct metrics_table *t =
        tc ? table_new(false) : (shared ? shared : (shared = table_new(true)));
    pthread_mutex_unlock(&tables_lock);
    if (tc)
        tc->metrics = t;
    return t;
}

/* The calling thread's table, locked when it is the shared one; pair with write_end. */
static struct metrics_table *write_begin(void)
{
    struct metrics_table *t = table();
    if (t && t->shared)
        pthread_mutex_lock(&t->lock);
    return t;
}

static void write_end(struct metrics_table *t)
{
    if (t && t->shared)
        pthread_mutex_unlock(&t->lock);
}

void metrics_cache_clear(struct thread_cache *tc)
{
    tc->metrics = NULL; /* the table stays in the list: its counts outlive the thread */
}

static void count(enum series_kind kind, const char *a, const char *b, int code)
{
    struct metrics_table *t = write_begin();
    if (!t)
        return;
    struct series *s = lookup(t, kind, a, b, code);
    if (s)
        cell_add(&s->cells[0], 1);
    write_end(t);
}

static const char no_route[] = "(none)";

void metrics_exchange_done(const struct ops_record *r)
{
    int64_t us = r->end_us - r->start_us;
    if (us < 0)
        us = 0;
    double secs = (double)us / 1e6;
    int code = r->status >= 100 && r->status <= 999 ? r->status : 499;
    int b = 0;
    while (b < DURATION_BUCKETS && secs > duration_bounds[b])
        b++;
    struct metrics_table *t = write_begin();
    if (!t)
        return;
    struct series *s = lookup(t, SERIES_REQUEST, r->route ? r->route : no_route, NULL, code);
    if (s) {
        cell_add(&s->cells[b], 1);
        cell_add(&s->cells[CELL_SUM_US], (uint64_t)us);
    }
    write_end(t);
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

void metrics_tls_handshake_failed(const char *listener)
{
    count(SERIES_TLS_FAILURE, listener ? listener : "", NULL, 0);
}

static void fixed_add(enum fixed_cell which, int64_t delta)
{
    struct metrics_table *t = write_begin();
    if (!t)
        return;
    cell_add(&t->fixed[which], (uint64_t)delta);
    write_end(t);
}

static enum fixed_cell conns_cell(const char *protocol)
{
    if (protocol[0] == 'w')
        return FIXED_CONNS_WEBSOCKET;
    return protocol[0] == 'h' && protocol[1] == '2' ? FIXED_CONNS_H2 : FIXED_CONNS_HTTP1;
}

void metrics_connection_opened(const char *protocol)
{
    fixed_add(conns_cell(protocol), 1);
}

void metrics_connection_closed(const char *protocol)
{
    fixed_add(conns_cell(protocol), -1);
}

void metrics_tunnel_opened(void)
{
    fixed_add(FIXED_TUNNELS, 1);
}

void metrics_tunnel_closed(void)
{
    fixed_add(FIXED_TUNNELS, -1);
}

void metrics_reload(bool ok)
{
    fixed_add(ok ? FIXED_RELOADS_OK : FIXED_RELOADS_ERROR, 1);
}

struct metrics_gauge *metrics_pool_gauge(const char *upstream, const char *target)
{
    struct metrics_table *t = write_begin();
    if (!t)
        return NULL;
    struct series *s = lookup(t, SERIES_POOL, upstream, target, 0);
    write_end(t);
    return (struct metrics_gauge *)s;
}

void metrics_pool_add(struct metrics_gauge *g, int idle_delta, int open_delta)
{
    struct series *s = (struct series *)g;
    if (!s)
        return;
    if (s->table->shared)
        pthread_mutex_lock(&s->table->lock);
    cell_add(&s->cells[0], (uint64_t)(int64_t)idle_delta);
    cell_add(&s->cells[1], (uint64_t)(int64_t)open_delta);
    if (s->table->shared)
        pthread_mutex_unlock(&s->table->lock);
}

void metrics_set_health_source(void (*each)(metrics_health_fn *fn, void *arg))
{
    health_source = each;
}

/* ---- scraping ---------------------------------------------------------------- */

/* A series summed across threads, keyed by interned names (equal names, equal pointers). */
struct total {
    enum series_kind kind;
    int code;
    const char *name_a;
    const char *name_b;
    uint64_t cells[CELLS];
};

struct totals {
    struct total *items;
    size_t count;
    size_t cap;
};

static struct total *totals_get(struct totals *t, enum series_kind kind, const char *a,
                                const char *b, int code)
{
    if ((t->count + 1) * 2 > t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 64;
        struct total *n = calloc(ncap, sizeof *n);
        if (!n)
            return NULL;
        for (size_t i = 0; i < t->cap; i++) {
            struct total *o = &t->items[i];
            if (!o->kind)
                continue;
            size_t j = slot_of(o->kind, o->name_a, o->name_b, o->code, ncap);
            while (n[j].kind)
                j = (j + 1) & (ncap - 1);
            n[j] = *o;
        }
        free(t->items);
        t->items = n;
        t->cap = ncap;
    }
    for (size_t i = slot_of(kind, a, b, code, t->cap);; i = (i + 1) & (t->cap - 1)) {
        struct total *d = &t->items[i];
        if (!d->kind) {
            d->kind = kind;
            d->name_a = a;
            d->name_b = b;
            d->code = code;
            t->count++;
            return d;
        }
        if (d->kind == kind && d->name_a == a && d->name_b == b && d->code == code)
            return d;
    }
}

/* Everything every table counted, summed per series; `fixed` gets the unlabelled cells. */
static void collect(struct totals *sum, int64_t fixed[FIXED_COUNT])
{
    memset(fixed, 0, sizeof(int64_t) * FIXED_COUNT);
    pthread_mutex_lock(&tables_lock);
    for (struct metrics_table *t = tables; t; t = t->next) {
        pthread_mutex_lock(&t->lock);
        for (size_t i = 0; i < t->cap; i++) {
            struct series *s = t->slots[i];
            if (!s)
                continue;
            struct total *d = totals_get(sum, s->kind, s->name_a, s->name_b, s->code);
            if (!d)
                continue;
            for (int c = 0; c < CELLS; c++)
                d->cells[c] += cell_read(&s->cells[c]);
        }
        for (int f = 0; f < FIXED_COUNT; f++)
            fixed[f] += (int64_t)cell_read(&t->fixed[f]);
        pthread_mutex_unlock(&t->lock);
    }
    pthread_mutex_unlock(&tables_lock);
}

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
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

/* name{k1="v1"[,k2="v2"] — the caller closes the braces. */
static void sample_open(struct evbuffer *out, const char *name, const char *k1, const char *v1,
                        const char *k2, const char *v2)
{
    evbuffer_add_printf(out, "%s{%s=\"", name, k1);
    label(out, v1);
    if (k2) {
        evbuffer_add_printf(out, "\",%s=\"", k2);
        label(out, v2);
    }
    evbuffer_add(out, "\"", 1);
}

static uint64_t total_count(const struct total *s)
{
    uint64_t n = 0;
    for (int b = 0; b <= DURATION_BUCKETS; b++)
        n += s->cells[b];
    return n;
}

static void render_requests(struct evbuffer *out, const struct totals *sum)
{
    family(out, "sluice_requests_total", "counter",
           "Requests answered, by route (\"(none)\" when no route matched) and status code.");
    for (size_t i = 0; i < sum->cap; i++) {
        const struct total *s = &sum->items[i];
        if (s->kind != SERIES_REQUEST)
            continue;
        sample_open(out, "sluice_requests_total", "route", s->name_a, NULL, NULL);
        evbuffer_add_printf(out, ",code=\"%03d\"} %llu\n", s->code,
                            (unsigned long long)total_count(s));
    }
    /* The duration histogram is per route: fold the per-code series together. */
    struct totals hist = {0};
    for (size_t i = 0; i < sum->cap; i++) {
        const struct total *s = &sum->items[i];
        if (s->kind != SERIES_REQUEST)
            continue;
        struct total *d = totals_get(&hist, SERIES_REQUEST, s->name_a, NULL, 0);
        for (int c = 0; d && c < CELLS; c++)
            d->cells[c] += s->cells[c];
    }
    family(out, "sluice_request_duration_seconds", "histogram",
           "Time from the first byte of a request to the last byte of its response, by route.");
    for (size_t i = 0; i < hist.cap; i++) {
        const struct total *s = &hist.items[i];
        if (!s->kind)
            continue;
        uint64_t cumulative = 0;
        for (int b = 0; b < DURATION_BUCKETS; b++) {
            cumulative += s->cells[b];
            sample_open(out, "sluice_request_duration_seconds_bucket", "route", s->name_a, NULL,
                        NULL);
            evbuffer_add_printf(out, ",le=\"%g\"} %llu\n", duration_bounds[b],
                                (unsigned long long)cumulative);
        }
        uint64_t n = total_count(s);
        sample_open(out, "sluice_request_duration_seconds_bucket", "route", s->name_a, NULL, NULL);
        evbuffer_add_printf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)n);
        sample_open(out, "sluice_request_duration_seconds_sum", "route", s->name_a, NULL, NULL);
        evbuffer_add_printf(out, "} %.6f\n", (double)s->cells[CELL_SUM_US] / 1e6);
        sample_open(out, "sluice_request_duration_seconds_count", "route", s->name_a, NULL, NULL);
        evbuffer_add_printf(out, "} %llu\n", (unsigned long long)n);
    }
    free(hist.items);
}

/* One counter family of single-cell series labelled by name_a (and name_b, and the code). */
static void render_counter(struct evbuffer *out, const struct totals *sum, enum series_kind kind,
                           const char *name, const char *help, const char *k1, const char *k2,
                           bool with_code)
{
    family(out, name, "counter", help);
    for (size_t i = 0; i < sum->cap; i++) {
        const struct total *s = &sum->items[i];
        if (s->kind != kind)
            continue;
        sample_open(out, name, k1, s->name_a, k2, s->name_b);
        if (with_code)
            evbuffer_add_printf(out, ",code=\"%03d\"", s->code);
        evbuffer_add_printf(out, "} %llu\n", (unsigned long long)s->cells[0]);
    }
}

static void render_pools(struct evbuffer *out, const struct totals *sum)
{
    family(out, "sluice_upstream_pool_idle", "gauge",
           "Idle keep-alive connections to an upstream target, all workers together.");
    for (size_t i = 0; i < sum->cap; i++) {
        const struct total *s = &sum->items[i];
        if (s->kind != SERIES_POOL)
            continue;
        int64_t idle = (int64_t)s->cells[0];
        sample_open(out, "sluice_upstream_pool_idle", "upstream", s->name_a, "target", s->name_b);
        evbuffer_add_printf(out, "} %lld\n", (long long)(idle > 0 ? idle : 0));
    }
    family(out, "sluice_upstream_pool_active", "gauge",
           "Connections to an upstream target in use or being opened, all workers together.");
    for (size_t i = 0; i < sum->cap; i++) {
        const struct total *s = &sum->items[i];
        if (s->kind != SERIES_POOL)
            continue;
        int64_t active = (int64_t)s->cells[1] - (int64_t)s->cells[0];
        sample_open(out, "sluice_upstream_pool_active", "upstream", s->name_a, "target", s->name_b);
        evbuffer_add_printf(out, "} %lld\n", (long long)(active > 0 ? active : 0));
    }
}

static void health_line(void *arg, const char *upstream, const char *target, bool healthy)
{
    struct evbuffer *out = arg;
    sample_open(out, "sluice_upstream_target_healthy", "upstream", upstream, "target", target);
    evbuffer_add_printf(out, "} %d\n", healthy ? 1 : 0);
}

static void render_gauges(struct evbuffer *out, const int64_t fixed[FIXED_COUNT])
{
    static const char *const protocols[] = {"http1", "h2", "websocket"};
    family(out, "sluice_connections_active", "gauge",
           "Open client connections by protocol (websocket: HTTP/1.1 connections now a tunnel).");
    for (int p = 0; p < 3; p++) {
        int64_t v = fixed[FIXED_CONNS_HTTP1 + p];
        evbuffer_add_printf(out, "sluice_connections_active{protocol=\"%s\"} %lld\n", protocols[p],
                            (long long)(v > 0 ? v : 0));
    }
    family(out, "sluice_websocket_tunnels_active", "gauge",
           "Open WebSocket tunnels, HTTP/1.1 upgrades and HTTP/2 extended CONNECT.");
    evbuffer_add_printf(out, "sluice_websocket_tunnels_active %lld\n",
                        (long long)(fixed[FIXED_TUNNELS] > 0 ? fixed[FIXED_TUNNELS] : 0));
    family(out, "sluice_config_reloads_total", "counter",
           "Configuration reloads (SIGHUP) by result: ok, or error (the old one stayed).");
    evbuffer_add_printf(out,
                        "sluice_config_reloads_total{result=\"ok\"} %lld\n"
                        "sluice_config_reloads_total{result=\"error\"} %lld\n",
                        (long long)fixed[FIXED_RELOADS_OK], (long long)fixed[FIXED_RELOADS_ERROR]);
}

/* process_start_time_seconds: the start in clock ticks after boot, plus the boot time. */
static double process_start_time(void)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long start = 0;
    /* Field 22 (starttime); the text after ')' starts at field 3. */
    for (int field = 3; p && field <= 22; field++) {
        p = strchr(p + 1, ' ');
        if (p && field == 22)
            start = strtoull(p + 1, NULL, 10);
    }
    f = fopen("/proc/stat", "re");
    if (!f)
        return 0;
    unsigned long long btime = 0;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %llu", &btime) == 1)
            break;
    fclose(f);
    long tck = sysconf(_SC_CLK_TCK);
    return btime && tck > 0 ? (double)btime + (double)start / (double)tck : 0;
}

static void render_process(struct evbuffer *out)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        family(out, "process_cpu_seconds_total", "counter",
               "User and system CPU time spent, all threads.");
        evbuffer_add_printf(out, "process_cpu_seconds_total %.6f\n",
                            (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                                (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    }
    unsigned long long vsize = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "re");
    if (f) {
        if (fscanf(f, "%llu %llu", &vsize, &rss) == 2) {
            unsigned long long page = (unsigned long long)sysconf(_SC_PAGESIZE);
            family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
            evbuffer_add_printf(out, "process_resident_memory_bytes %llu\n", rss * page);
            family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
            evbuffer_add_printf(out, "process_virtual_memory_bytes %llu\n", vsize * page);
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long fds = 0;
        for (struct dirent *e = readdir(d); e; e = readdir(d))
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        family(out, "process_open_fds", "gauge", "Open file descriptors.");
        evbuffer_add_printf(out, "process_open_fds %ld\n", fds - 1); /* minus the one of opendir */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        family(out, "process_max_fds", "gauge", "Limit on open file descriptors (RLIMIT_NOFILE).");
        evbuffer_add_printf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
    double start = process_start_time();
    if (start > 0) {
        family(out, "process_start_time_seconds", "gauge",
               "Start time of the process since the Unix epoch in seconds.");
        evbuffer_add_printf(out, "process_start_time_seconds %.2f\n", start);
    }
}

static void render_rate_limit_store(struct evbuffer *out, const struct totals *sum);

void metrics_render(struct evbuffer *out)
{
    struct totals sum = {0};
    int64_t fixed[FIXED_COUNT];
    collect(&sum, fixed);

    family(out, "sluice_build_info", "gauge", "Always 1; the version of the running binary.");
    evbuffer_add_printf(out, "sluice_build_info{version=\"%s\"} 1\n", SLUICE_VERSION);
    render_requests(out, &sum);
    render_counter(out, &sum, SERIES_UPSTREAM, "sluice_upstream_requests_total",
                   "Responses and failures of upstream targets, by status code (the gateway's "
                   "502/503/504 when the target failed).",
                   "upstream", "target", true);
    render_counter(out, &sum, SERIES_CONNECT_ERROR, "sluice_upstream_connect_errors_total",
                   "Failed connection attempts to upstream targets.", "upstream", "target", false);
    render_pools(out, &sum);
    family(out, "sluice_upstream_target_healthy", "gauge",
           "1 when the target is not marked down by active or passive health checks, else 0.");
    if (health_source)
        health_source(health_line, out);
    render_counter(out, &sum, SERIES_RATE_LIMITED, "sluice_rate_limited_total",
                   "Requests refused by a rate_limit filter, by route.", "route", NULL, false);
    render_counter(out, &sum, SERIES_TLS_FAILURE, "sluice_tls_handshake_failures_total",
                   "Client TLS handshakes that failed or timed out, by listener address.",
                   "listener", NULL, false);
    render_rate_limit_store(out, &sum);
    free(sum.items);
    render_gauges(out, fixed);
    family(out, "sluice_access_log_dropped_total", "counter",
           "Access log lines dropped because the log writer fell behind (full buffer) or "
           "could not write.");
    evbuffer_add_printf(out, "sluice_access_log_dropped_total %llu\n",
                        (unsigned long long)accesslog_dropped());
    render_process(out);
}

void metrics_free(void)
{
    pthread_mutex_lock(&tables_lock);
    while (tables) {
        struct metrics_table *t = tables;
        tables = t->next;
        for (size_t i = 0; i < t->cap; i++)
            free(t->slots[i]);
        free(t->slots);
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
    struct totals sum = {0};
    int64_t fixed[FIXED_COUNT];
    collect(&sum, fixed);
    for (size_t i = 0; i < sum.cap; i++) {
        const struct total *s = &sum.items[i];
        uint64_t cumulative[DURATION_BUCKETS];
        struct metrics_figure f = {.code = s->code, .count = s->cells[0]};
        switch (s->kind) {
        case SERIES_REQUEST:
            f.kind = METRICS_ROUTE;
            f.route = s->name_a;
            f.count = total_count(s);
            f.seconds = (double)s->cells[CELL_SUM_US] / 1e6;
            for (int b = 0; b < DURATION_BUCKETS; b++)
                cumulative[b] = (b ? cumulative[b - 1] : 0) + s->cells[b];
            f.buckets = cumulative;
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
    gauges->http1 = fixed[FIXED_CONNS_HTTP1];
    gauges->h2 = fixed[FIXED_CONNS_H2];
    gauges->websocket = fixed[FIXED_CONNS_WEBSOCKET];
    gauges->tunnels = fixed[FIXED_TUNNELS];
    gauges->reloads_ok = fixed[FIXED_RELOADS_OK];
    gauges->reloads_error = fixed[FIXED_RELOADS_ERROR];
}

/* ---- rate_limit's Redis store: errors by reason, call latency (per-worker series) ---- */

static const char *const store_reasons[] = {"unavailable", "timeout", "error", "connection_lost"};
#define STORE_REASONS (sizeof store_reasons / sizeof store_reasons[0])
static const char store_calls[] = "redis";

void metrics_rate_limit_store_error(const char *reason)
{
    for (size_t i = 0; i < STORE_REASONS; i++)
        if (strcmp(reason, store_reasons[i]) == 0) {
            count(SERIES_STORE_ERROR, store_reasons[i], NULL, 0);
            return;
        }
}

void metrics_rate_limit_store_latency(int64_t us)
{
    if (us < 0)
        us = 0;
    double secs = (double)us / 1e6;
    int b = 0;
    while (b < DURATION_BUCKETS && secs > duration_bounds[b])
        b++;
    struct metrics_table *t = write_begin();
    if (!t)
        return;
    struct series *s = lookup(t, SERIES_STORE_CALL, store_calls, NULL, 0);
    if (s) {
        cell_add(&s->cells[b], 1);
        cell_add(&s->cells[CELL_SUM_US], (uint64_t)us);
    }
    write_end(t);
}

static void render_rate_limit_store(struct evbuffer *out, const struct totals *sum)
{
    uint64_t errors[STORE_REASONS] = {0};
    uint64_t calls[CELLS] = {0};
    for (size_t i = 0; i < sum->cap; i++) {
        const struct total *s = &sum->items[i];
        if (s->kind == SERIES_STORE_ERROR) {
            for (size_t r = 0; r < STORE_REASONS; r++)
                if (strcmp(s->name_a, store_reasons[r]) == 0)
                    errors[r] += s->cells[0];
        } else if (s->kind == SERIES_STORE_CALL) {
            for (int c = 0; c < CELLS; c++)
                calls[c] += s->cells[c];
        }
    }
    family(out, "sluice_rate_limit_store_errors_total", "counter",
           "Rate-limit decisions the Redis store could not make, by reason.");
    for (size_t r = 0; r < STORE_REASONS; r++)
        evbuffer_add_printf(out, "sluice_rate_limit_store_errors_total{reason=\"%s\"} %llu\n",
                            store_reasons[r], (unsigned long long)errors[r]);
    family(out, "sluice_rate_limit_store_duration_seconds", "histogram",
           "Time from sending a rate-limit script call to Redis to its reply.");
    uint64_t cumulative = 0;
    for (int b = 0; b < DURATION_BUCKETS; b++) {
        cumulative += calls[b];
        evbuffer_add_printf(out,
                            "sluice_rate_limit_store_duration_seconds_bucket{le=\"%g\"} %llu\n",
                            duration_bounds[b], (unsigned long long)cumulative);
    }
    cumulative += calls[DURATION_BUCKETS];
    evbuffer_add_printf(out,
                        "sluice_rate_limit_store_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
                        "sluice_rate_limit_store_duration_seconds_sum %.6f\n"
                        "sluice_rate_limit_store_duration_seconds_count %llu\n",
                        (unsigned long long)cumulative, (double)calls[CELL_SUM_US] / 1e6,
                        (unsigned long long)cumulative);
}
