/*
 * rate_limit: the `rate_limit` filter (SPEC 4, SPEC 7 "rate_limit") with
 * the `local` store, and the sharded token-bucket table it keeps
 * (rate_limit.h has the table's contract and its memory bound).
 *
 * The request phase takes a token from the bucket of the request's key (the
 * peer IP, the consumer an auth filter set, the route, or a header's value)
 * and answers 429 too_many_requests with Retry-After when none is left. The
 * response phase adds RateLimit-Limit/-Remaining/-Reset to every response
 * of the route, the upstream's and the 429 alike, from what the request
 * phase decided (kept in the exchange's per-filter state).
 *
 * Why a const instance points to mutable state: the filter interface shares
 * one immutable instance among all workers of a snapshot, but a limit that
 * is exact across workers needs one table they all update. The instance
 * itself never changes after create(); it holds a pointer to the table,
 * whose every access goes through the table's own per-shard locks
 * (rl_take), which is the only shared mutable state. The table is created
 * with the instance and freed with it, so a reload starts fresh buckets.
 *
 * `store: "redis"` keeps the buckets in Redis instead (docs/filters.md,
 * "The Redis store"): the request phase starts one script call on the
 * worker view's connection (upstream/redis.h) and pauses the exchange; the
 * call's callback decides as rl_take would (the same units and header
 * arithmetic, rl_fill_result) and resumes it. When Redis cannot decide,
 * `on_store_error` passes the request or answers 503; the local store never
 * fails, so it ignores that option. The filter asks the loader for the
 * top-level `redis` through needs_redis.
 */
#include "filters/rate_limit.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "base/arena.h"
#include "base/clock.h"
#include "base/header.h"
#include "base/slice.h"
#include "conf/config.h"
#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"
#include "core/worker.h"
#include "ops/metrics.h"
#include "upstream/redis.h"

/* ---- SipHash-2-4 (Aumasson and Bernstein; the reference's test vectors in the unit test) ---- */

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = rotl(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = rotl(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = rotl(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = rotl(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = rotl(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = rotl(v2, 32);                                                                         \
    } while (0)

uint64_t rl_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = 0;
        for (int b = 7; b >= 0; b--)
            m = (m << 8) | p[i + (size_t)b];
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = full; i < len; i++)
        last |= (uint64_t)p[i] << (8 * (i - full));
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- the table -------------------------------------------------------------- */

struct rl_slot {
    uint64_t key;    /* keyed hash, never 0; 0 marks an empty slot */
    int64_t tokens;  /* in units: one token is period_us units */
    int64_t last_us; /* when `tokens` was last brought up to date */
};

/* One shard: a linear-probing hash table, at most half full, under its own lock. */
struct rl_shard {
    pthread_mutex_t lock;
    struct rl_slot *slots; /* NULL until the first key */
    uint32_t cap;          /* power of two, <= RL_SHARD_MAX_SLOTS */
    uint32_t count;
} __attribute__((aligned(64))); /* one cache line each: shards do not share lines */

struct rl_table {
    int64_t rate;      /* units gained per microsecond = tokens per period */
    int64_t period_us; /* units per token */
    int64_t capacity;  /* burst * period_us */
    uint64_t k0, k1;   /* SipHash key */
    struct rl_shard shards[RL_SHARDS];
};

#define RL_SHARD_MIN_SLOTS 16

struct rl_table *rl_table_new(uint64_t rate, uint64_t period_s, uint64_t burst)
{
    struct rl_table *t = aligned_alloc(64, sizeof(*t));
    if (!t)
        return NULL;
    memset(t, 0, sizeof(*t));
    t->rate = (int64_t)rate;
    t->period_us = (int64_t)period_s * 1000000;
    t->capacity = (int64_t)burst * t->period_us; /* <= 1e9 * 3.6e9 < 2^63 */
    uint64_t k[2];
    if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k)) {
        /* No entropy yet (very early boot): fall back to something per-process. */
        k[0] = (uint64_t)clock_mono_us() * 0x9e3779b97f4a7c15ULL;
        k[1] = (uint64_t)(uintptr_t)t ^ 0xc2b2ae3d27d4eb4fULL;
    }
    t->k0 = k[0];
    t->k1 = k[1];
    for (size_t i = 0; i < RL_SHARDS; i++)
        pthread_mutex_init(&t->shards[i].lock, NULL);
    return t;
}

void rl_table_free(struct rl_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < RL_SHARDS; i++) {
        pthread_mutex_destroy(&t->shards[i].lock);
        free(t->shards[i].slots);
    }
    free(t);
}

size_t rl_table_count(struct rl_table *t)
{
    size_t n = 0;
    for (size_t i = 0; i < RL_SHARDS; i++) {
        pthread_mutex_lock(&t->shards[i].lock);
        n += t->shards[i].count;
        pthread_mutex_unlock(&t->shards[i].lock);
    }
    return n;
}

/* The slot index of `key` in a table of `cap` slots (the low bits chose the shard). */
static inline uint32_t home(uint64_t key, uint32_t cap)
{
    return (uint32_t)(key >> 6) & (cap - 1);
}

/*
 * Brings `s` up to `now_us`: the bucket gains `rate` units per microsecond,
 * up to capacity. dt is compared with the time to fill before multiplying,
 * so the product never overflows; a clock read before another thread's
 * (dt < 0) adds nothing and never moves `last_us` back.
 */
static void refill(const struct rl_table *t, struct rl_slot *s, int64_t now_us)
{
    int64_t dt = now_us - s->last_us;
    if (dt <= 0)
        return;
    int64_t missing = t->capacity - s->tokens;
    if (dt >= missing / t->rate + 1)
        s->tokens = t->capacity;
    else
        s->tokens += dt * t->rate;
    if (s->tokens > t->capacity)
        s->tokens = t->capacity;
    s->last_us = now_us;
}

static void insert_slot(struct rl_slot *slots, uint32_t cap, const struct rl_slot *s)
{
    uint32_t i = home(s->key, cap);
    while (slots[i].key)
        i = (i + 1) & (cap - 1);
    slots[i] = *s;
}

/*
 * Rebuilds shard `sh` into `cap` slots, dropping up to `max_drop` buckets
 * that lack at most `drop_upto` units at `now_us` (0: only full ones, which
 * are the same as no bucket). Slots are in hash order, so when more buckets
 * qualify than may go, the ones dropped are a random choice among them.
 * Returns -1 when out of memory (the shard is unchanged).
 */
static int rebuild(const struct rl_table *t, struct rl_shard *sh, uint32_t cap, int64_t drop_upto,
                   uint32_t max_drop, int64_t now_us)
{
    struct rl_slot *n = calloc(cap, sizeof(*n));
    if (!n)
        return -1;
    uint32_t count = 0;
    for (uint32_t i = 0; i < sh->cap; i++) {
        struct rl_slot *s = &sh->slots[i];
        if (!s->key)
            continue;
        refill(t, s, now_us);
        if (max_drop && t->capacity - s->tokens <= drop_upto) {
            max_drop--;
            continue;
        }
        insert_slot(n, cap, s);
        count++;
    }
    free(sh->slots);
    sh->slots = n;
    sh->cap = cap;
    sh->count = count;
    return 0;
}

/*
 * Makes room for one more bucket in a shard that is at its load limit (half
 * full). First forgets full buckets; if that leaves the shard more than a
 * quarter full, doubles it while under RL_SHARD_MAX_SLOTS, else evicts the
 * buckets closest to full, widening the margin until a quarter is free.
 * Returns -1 when out of memory and nothing could be freed.
 */
static int make_room(const struct rl_table *t, struct rl_shard *sh, int64_t now_us)
{
    if (!sh->slots)
        return rebuild(t, sh, RL_SHARD_MIN_SLOTS, 0, 0, now_us);
    if (rebuild(t, sh, sh->cap, 0, UINT32_MAX, now_us) < 0)
        return -1;
    if (sh->count <= sh->cap / 4)
        return 0;
    if (sh->cap < RL_SHARD_MAX_SLOTS)
        return rebuild(t, sh, sh->cap * 2, 0, 0, now_us);
    /*
     * Full of active buckets: a flood of distinct keys. Evict down to a
     * quarter, the buckets closest to full first: those lacking at most one
     * token, then two, four... (the emptiest, most limited, go last).
     */
    int64_t margin = t->period_us;
    while (sh->count > sh->cap / 4) {
        if (rebuild(t, sh, sh->cap, margin, sh->count - sh->cap / 4, now_us) < 0)
            return -1;
        margin = margin > t->capacity / 2 ? t->capacity : margin * 2;
    }
    return 0;
}

static void rl_fill_result(int64_t rate, int64_t period_us, int64_t capacity, int64_t tokens,
                           struct rl_result *out);

void rl_take(struct rl_table *t, uint8_t kind, const void *key, size_t len, int64_t now_us,
             struct rl_result *out)
{
    uint64_t h = rl_siphash(t->k0 ^ ((uint64_t)kind << 56), t->k1, key, len);
    if (!h)
        h = 1;
    struct rl_shard *sh = &t->shards[h & (RL_SHARDS - 1)];
    struct rl_slot fresh = {.key = h, .tokens = t->capacity, .last_us = now_us};
    struct rl_slot *s = NULL;

    pthread_mutex_lock(&sh->lock);
    if (sh->slots) {
        uint32_t i = home(h, sh->cap);
        while (sh->slots[i].key && sh->slots[i].key != h)
            i = (i + 1) & (sh->cap - 1);
        if (sh->slots[i].key == h)
            s = &sh->slots[i];
    }
    if (!s) {
        if ((sh->count + 1) * 2 > sh->cap && make_room(t, sh, now_us) < 0) {
            /* Out of memory: decide on a full bucket rather than fail the request. */
            s = &fresh;
        } else {
            uint32_t i = home(h, sh->cap);
            while (sh->slots[i].key)
                i = (i + 1) & (sh->cap - 1);
            sh->slots[i] = fresh;
            sh->count++;
            s = &sh->slots[i];
        }
    }
    refill(t, s, now_us);
    out->allowed = s->tokens >= t->period_us;
    if (out->allowed)
        s->tokens -= t->period_us;
    int64_t tokens = s->tokens;
    pthread_mutex_unlock(&sh->lock);
    rl_fill_result(t->rate, t->period_us, t->capacity, tokens, out);
}

/*
 * The headers' numbers from a bucket left with `tokens` units (out->allowed
 * already set): whole tokens left; whole seconds (rounded up) until full
 * and until one token. Shared by both stores, so they answer alike.
 */
static void rl_fill_result(int64_t rate, int64_t period_us, int64_t capacity, int64_t tokens,
                           struct rl_result *out)
{
    int64_t per_s = rate * 1000000; /* units gained per second */
    if (tokens < 0)
        tokens = 0;
    if (tokens > capacity)
        tokens = capacity;
    out->remaining = (uint64_t)(tokens / period_us);
    out->reset_s = (uint64_t)((capacity - tokens + per_s - 1) / per_s);
    out->retry_after = 0;
    if (!out->allowed) {
        int64_t need = period_us - tokens;
        out->retry_after = (uint64_t)((need + per_s - 1) / per_s);
        if (out->retry_after < 1)
            out->retry_after = 1;
    }
}

/* ---- the redis store ----------------------------------------------------------- */

/*
 * The bucket update, run atomically by the server (one script call per
 * request). Same units and rules as rl_take: one token is `period_us`
 * units, the bucket gains `rate` units per microsecond up to `capacity`,
 * the clock is the server's TIME (so gateways with skewed clocks agree).
 * Lua numbers are doubles: create() keeps every value below 2^53, where
 * +, -, * are exact, and idiv corrects the rounding of the one division.
 * The hash's fields are written with %.0f, never in exponent form. The key
 * expires once a bucket would be full again (ARGV[4] ms), which is the same
 * as no key.
 */
static struct redis_script bucket_script = {
    .source = "local rate = tonumber(ARGV[1])\n"
              "local period = tonumber(ARGV[2])\n"
              "local cap = tonumber(ARGV[3])\n"
              "local function idiv(a, b)\n"
              "  local q = math.floor(a / b)\n"
              "  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end\n"
              "  return q\n"
              "end\n"
              "local t = redis.call('TIME')\n"
              "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
              "local v = redis.call('HMGET', KEYS[1], 't', 'l')\n"
              "local tokens = tonumber(v[1])\n"
              "local last = tonumber(v[2])\n"
              "if not tokens or not last then tokens = cap; last = now end\n"
              "local dt = now - last\n"
              "if dt > 0 then\n"
              "  if dt >= idiv(cap - tokens, rate) + 1 then tokens = cap\n"
              "  else tokens = tokens + dt * rate end\n"
              "  if tokens > cap then tokens = cap end\n"
              "  last = now\n"
              "end\n"
              "local allowed = 0\n"
              "if tokens >= period then allowed = 1; tokens = tokens - period end\n"
              "redis.call('HSET', KEYS[1], 't', string.format('%.0f', tokens),\n"
              "           'l', string.format('%.0f', last))\n"
              "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
              "return {allowed, tokens}\n",
};

static pthread_once_t bucket_script_once = PTHREAD_ONCE_INIT;

static void bucket_script_init(void)
{
    redis_script_init(&bucket_script);
}

/* The largest integer a Lua number (a double) holds exactly. */
#define LUA_EXACT_MAX (INT64_C(1) << 53)

/* ---- the filter --------------------------------------------------------------- */

enum rl_key {
    KEY_IP = 1,
    KEY_CONSUMER,
    KEY_ROUTE,
    KEY_HEADER,
};

struct rate_limit_filter {
    struct rl_table
        *table; /* the local store; mutable, shared by the workers: see the file comment */
    enum rl_key key;
    char *header; /* KEY_HEADER: the header's name, malloc'd */
    size_t header_len;
    bool redis;               /* store "redis" */
    bool deny_on_store_error; /* redis store: 503 rather than pass when Redis fails */
    int64_t rate, period_us, capacity;
    char *prefix;     /* redis: "sluice:rl:<path>:<rate>/<per_s>/<burst>:", malloc'd */
    char argv[4][24]; /* redis: rate, period_us, capacity, ttl_ms as text */
    size_t argvlen[4];
    char limit[24]; /* RateLimit-Limit, the burst, preformatted */
    size_t limit_len;
};

/* What the request phase decided, for the response phase. */
struct rate_limit_state {
    bool decided;
    struct rl_result result;
    /* redis store: the call in flight, and the exchange it resumes */
    struct redis_op *op;
    struct exchange *x;
    const struct rate_limit_filter *filter;
};

static void rate_limit_destroy(const void *instance)
{
    struct rate_limit_filter *f = (struct rate_limit_filter *)instance;
    if (!f)
        return;
    rl_table_free(f->table);
    free(f->header);
    free(f->prefix);
    free(f);
}

static int parse_key(struct rate_limit_filter *f, const json_t *options, struct config_error *err)
{
    const char *key = config_get_string(err, options, "key", false, true);
    if (!json_object_get(options, "key")) {
        f->key = KEY_IP;
        return 0;
    }
    if (!key)
        return -1;
    if (strcmp(key, "ip") == 0) {
        f->key = KEY_IP;
    } else if (strcmp(key, "consumer") == 0) {
        f->key = KEY_CONSUMER;
    } else if (strcmp(key, "route") == 0) {
        f->key = KEY_ROUTE;
    } else if (strncmp(key, "header:", 7) == 0) {
        const char *name = key + 7;
        if (!config_is_token(name, strlen(name))) {
            config_error_add(err, ".key",
                             "\"%s\" needs a header name after \"header:\", e.g. "
                             "\"header:X-Client-Id\"",
                             key);
            return -1;
        }
        f->key = KEY_HEADER;
        f->header = strdup(name);
        if (!f->header) {
            config_error_add(err, ".key", "out of memory");
            return -1;
        }
        f->header_len = strlen(name);
        /* Lower case, so the Redis key is the same however each gateway's file spells it. */
        for (size_t i = 0; i < f->header_len; i++)
            if (f->header[i] >= 'A' && f->header[i] <= 'Z')
                f->header[i] = (char)(f->header[i] - 'A' + 'a');
    } else {
        config_error_add(err, ".key",
                         "unknown key \"%s\" (use \"ip\", \"consumer\", \"route\" or "
                         "\"header:NAME\")",
                         key);
        return -1;
    }
    return 0;
}

static const void *rate_limit_create(const json_t *options, struct config_error *err)
{
    static const char *const keys[] = {"rate",           "per", "burst", "key", "store",
                                       "on_store_error", NULL};
    struct rate_limit_filter *f = calloc(1, sizeof(*f));
    if (!f) {
        config_error_add(err, "", "out of memory");
        return NULL;
    }
    int rc = config_check_keys(err, options, keys) ? -1 : 0;

    long long rate = 0, burst = 0;
    if (!json_object_get(options, "rate")) {
        config_error_add(err, ".rate", "is required: the tokens gained per `per`, e.g. 100");
        rc = -1;
    } else if (!config_get_llong(err, options, "rate", 1, 1000000000, &rate)) {
        rc = -1;
    }
    long long period = 1;
    const char *per = config_get_string(err, options, "per", false, true);
    if (per) {
        if (strcmp(per, "second") == 0) {
            period = 1;
        } else if (strcmp(per, "minute") == 0) {
            period = 60;
        } else if (strcmp(per, "hour") == 0) {
            period = 3600;
        } else {
            config_error_add(err, ".per", "must be \"second\", \"minute\" or \"hour\"");
            rc = -1;
        }
    } else if (json_object_get(options, "per")) {
        rc = -1;
    }
    burst = rate;
    if (!config_get_llong(err, options, "burst", 1, 1000000000, &burst))
        rc = -1;
    if (parse_key(f, options, err) < 0)
        rc = -1;

    const char *store = config_get_string(err, options, "store", false, true);
    if (store && strcmp(store, "redis") == 0) {
        f->redis = true;
        if (burst * period * 1000000 > LUA_EXACT_MAX) {
            config_error_add(err, ".burst",
                             "%lld per %s is too large for the \"redis\" store, which counts "
                             "in microseconds below 2^53: at most %lld per %s",
                             burst, per ? per : "second",
                             (long long)(LUA_EXACT_MAX / (period * 1000000)), per ? per : "second");
            rc = -1;
        }
    } else if (store && strcmp(store, "local") != 0) {
        config_error_add(err, ".store", "must be \"local\" or \"redis\"");
        rc = -1;
    } else if (!store && json_object_get(options, "store")) {
        rc = -1;
    }
    const char *on_err = config_get_string(err, options, "on_store_error", false, true);
    if (on_err && strcmp(on_err, "deny") == 0) {
        f->deny_on_store_error = true;
    } else if (on_err && strcmp(on_err, "allow") != 0) {
        config_error_add(err, ".on_store_error", "must be \"allow\" or \"deny\"");
        rc = -1;
    } else if (!on_err && json_object_get(options, "on_store_error")) {
        rc = -1;
    }
    f->rate = rate;
    f->period_us = period * 1000000;
    f->capacity = burst * f->period_us;
    if (rc == 0 && f->redis) {
        pthread_once(&bucket_script_once, bucket_script_init);
        /* Filling from empty takes capacity / rate microseconds; then the key equals no key. */
        int64_t ttl_ms = (f->capacity / f->rate + 999) / 1000 + 1000;
        long long values[4] = {rate, f->period_us, f->capacity, ttl_ms};
        for (size_t i = 0; i < 4; i++)
            f->argvlen[i] = (size_t)snprintf(f->argv[i], sizeof f->argv[i], "%lld", values[i]);
        /* The filter's place in the file and its limit name its buckets (docs/filters.md). */
        size_t cap = strlen(err->path) + 100;
        f->prefix = malloc(cap);
        if (f->prefix)
            snprintf(f->prefix, cap, "sluice:rl:%s:%lld/%lld/%lld:", err->path, rate, period,
                     burst);
        else
            rc = -1;
    } else if (rc == 0) {
        f->table = rl_table_new((uint64_t)rate, (uint64_t)period, (uint64_t)burst);
        if (!f->table) {
            config_error_add(err, "", "out of memory");
            rc = -1;
        }
    }
    if (rc < 0) {
        rate_limit_destroy(f);
        return NULL;
    }
    f->limit_len = (size_t)snprintf(f->limit, sizeof(f->limit), "%lld", burst);
    return f;
}

static struct slice route_name(const struct exchange *x)
{
    return x->route ? slice_cstr(x->route->name) : SLICE_LIT("(none)");
}

/* The bucket's key: its kind, and the bytes that tell the clients apart. */
static enum rl_key request_key(const struct rate_limit_filter *f, const struct exchange *x,
                               struct slice *key)
{
    /*
     * A consumer or header key that the request lacks falls back to the
     * peer IP: an anonymous request is still limited, per client.
     */
    enum rl_key kind = f->key;
    *key = slice_make("", 0);
    if (kind == KEY_CONSUMER) {
        *key = x->consumer;
    } else if (kind == KEY_HEADER) {
        const struct slice *v = header_get(&x->req_headers, slice_make(f->header, f->header_len));
        if (v)
            *key = *v;
    } else if (kind == KEY_ROUTE) {
        *key = route_name(x);
    }
    if (kind == KEY_IP || ((kind == KEY_CONSUMER || kind == KEY_HEADER) && key->len == 0)) {
        kind = KEY_IP;
        *key = slice_cstr(x->remote_addr);
    }
    return kind;
}

/* Answers 429 with Retry-After from st->result. */
static void refuse(struct exchange *x, const struct rate_limit_state *st)
{
    metrics_rate_limited(x->route ? x->route->name : NULL);
    exchange_respond_error(x, 429, "the rate limit was exceeded; retry later");
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%" PRIu64, st->result.retry_after);
    header_set(&x->resp_headers, SLICE_LIT("Retry-After"),
               arena_slice_dup(x->arena, slice_make(buf, (size_t)n)));
}

static const char *store_error_reason(enum redis_status status)
{
    switch (status) {
    case REDIS_CALL_TIMEOUT:
        return "timeout";
    case REDIS_CALL_ERROR:
        return "error";
    case REDIS_CALL_LOST:
        return "connection_lost";
    default:
        return "unavailable";
    }
}

/*
 * Redis could not decide: on_store_error says whether the request passes
 * (without RateLimit-* headers, since nothing is known of the bucket) or
 * gets 503. Returns the verdict.
 */
static enum filter_verdict store_failed(const struct rate_limit_filter *f, struct exchange *x,
                                        enum redis_status status)
{
    metrics_rate_limit_store_error(store_error_reason(status));
    if (!f->deny_on_store_error)
        return FILTER_CONTINUE;
    exchange_respond_error(x, 503, "the rate limit's store is unavailable; retry later");
    return FILTER_RESPOND;
}

static void redis_cancel(void *arg)
{
    struct rate_limit_state *st = arg;
    if (st->op) {
        redis_op_cancel(st->op);
        st->op = NULL;
    }
}

static void redis_done(void *arg, const struct redis_result *r)
{
    struct rate_limit_state *st = arg;
    const struct rate_limit_filter *f = st->filter;
    struct exchange *x = st->x;
    st->op = NULL;
    if (r->status != REDIS_CALL_OK || r->num_ints != 2) {
        enum redis_status status = r->status == REDIS_CALL_OK ? REDIS_CALL_ERROR : r->status;
        exchange_resume(x, store_failed(f, x, status));
        return;
    }
    metrics_rate_limit_store_latency(r->latency_us);
    st->result.allowed = r->ints[0] == 1;
    rl_fill_result(f->rate, f->period_us, f->capacity, (int64_t)r->ints[1], &st->result);
    st->decided = true;
    if (st->result.allowed) {
        exchange_resume(x, FILTER_CONTINUE);
        return;
    }
    refuse(x, st);
    exchange_resume(x, FILTER_RESPOND);
}

static const char *const kind_names[] = {
    [KEY_IP] = "ip",
    [KEY_CONSUMER] = "consumer",
    [KEY_ROUTE] = "route",
    [KEY_HEADER] = "header",
};

/* Starts the script call for the bucket; pauses, or answers at once when Redis is down. */
static enum filter_verdict redis_take(const struct rate_limit_filter *f, struct exchange *x,
                                      struct rate_limit_state *st, enum rl_key kind,
                                      struct slice key)
{
    /* "<prefix><kind>:<value>", the header's name in the kind: "header:x-client-id". */
    struct slice parts[5] = {
        slice_cstr(f->prefix), slice_cstr(kind_names[kind]),
        kind == KEY_HEADER ? SLICE_LIT(":") : SLICE_LIT(""),
        kind == KEY_HEADER ? slice_make(f->header, f->header_len) : SLICE_LIT(""), SLICE_LIT(":")};
    struct slice prefix = arena_concat(x->arena, parts, 5);
    struct slice full[2] = {prefix, key};
    struct slice name = arena_concat(x->arena, full, 2);
    const char *argv[5] = {name.base, f->argv[0], f->argv[1], f->argv[2], f->argv[3]};
    size_t lens[5] = {name.len, f->argvlen[0], f->argvlen[1], f->argvlen[2], f->argvlen[3]};
    st->x = x;
    st->filter = f;
    enum redis_status status = REDIS_CALL_DOWN;
    st->op = redis_eval(x->view ? x->view->redis : NULL, &bucket_script, 1, 5, argv, lens,
                        redis_done, st, &status);
    if (!st->op)
        return store_failed(f, x, status);
    arena_cleanup_add(x->arena, redis_cancel, st);
    return FILTER_PAUSE;
}

static enum filter_verdict rate_limit_on_request(const void *instance, void *context,
                                                 struct exchange *x, void *state)
{
    const struct rate_limit_filter *f = instance;
    struct rate_limit_state *st = state;
    (void)context;

    struct slice key;
    enum rl_key kind = request_key(f, x, &key);
    if (f->redis)
        return redis_take(f, x, st, kind, key);
    rl_take(f->table, (uint8_t)kind, key.base, key.len, clock_mono_us(), &st->result);
    st->decided = true;
    if (st->result.allowed)
        return FILTER_CONTINUE;
    refuse(x, st);
    return FILTER_RESPOND;
}

static struct slice number(struct arena *a, uint64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%" PRIu64, v);
    return arena_slice_dup(a, slice_make(buf, (size_t)n));
}

/* Every response of the route carries the limit's state, the upstream's included (SPEC 7). */
static void rate_limit_on_response(const void *instance, void *context, struct exchange *x,
                                   void *state)
{
    const struct rate_limit_filter *f = instance;
    const struct rate_limit_state *st = state;
    (void)context;
    if (!st->decided)
        return;
    header_set(&x->resp_headers, SLICE_LIT("RateLimit-Limit"), slice_make(f->limit, f->limit_len));
    header_set(&x->resp_headers, SLICE_LIT("RateLimit-Remaining"),
               number(x->arena, st->result.remaining));
    header_set(&x->resp_headers, SLICE_LIT("RateLimit-Reset"),
               number(x->arena, st->result.reset_s));
}

static const char *rate_limit_needs_redis(const void *instance)
{
    const struct rate_limit_filter *f = instance;
    return f->redis ? ".store" : NULL;
}

const struct filter_type filter_rate_limit = {
    .name = "rate_limit",
    .state_size = sizeof(struct rate_limit_state),
    .create = rate_limit_create,
    .destroy = rate_limit_destroy,
    .on_request = rate_limit_on_request,
    .on_response = rate_limit_on_response,
    .needs_redis = rate_limit_needs_redis,
};
