/*
 * test_rate_limit: the `rate_limit` filter's token-bucket table
 * (filters/rate_limit.h): SipHash-2-4 against the reference vectors of
 * Aumasson and Bernstein's paper, the bucket arithmetic to the microsecond,
 * exactness under concurrent threads, the memory bound under a flood of
 * distinct keys, and the filter's options and hooks.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "filters/rate_limit.h"
#include "base/arena.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "core/filter.h"
#include "filter_test.h"
#include "test.h"

extern const struct filter_type filter_rate_limit;

#define SEC 1000000LL

/* The reference implementation's vectors_sip64: key 00..0f, message 00..n-1. */
static void test_siphash_vectors(void)
{
    static const uint64_t want[17] = {
        0x726fdb47dd0e0e31ULL, 0x74f839c593dc67fdULL, 0x0d6c8009d9a94f5aULL, 0x85676696d7fb7e2dULL,
        0xcf2794e0277187b7ULL, 0x18765564cd99a68dULL, 0xcbc9466e58fee3ceULL, 0xab0200f58b01d137ULL,
        0x93f5f5799a932462ULL, 0x9e0082df0ba9e4b0ULL, 0x7a5dbbc594ddb9f3ULL, 0xf4b32f46226bada7ULL,
        0x751e8fbc860ee5fbULL, 0x14ea5627c0843d90ULL, 0xf723ca908e7af2eeULL, 0xa129ca6149be45e5ULL,
        0x3f2acc7f57c29bdbULL,
    };
    unsigned char msg[17];
    for (int i = 0; i < 17; i++)
        msg[i] = (unsigned char)i;
    uint64_t k0 = 0x0706050403020100ULL, k1 = 0x0f0e0d0c0b0a0908ULL;
    for (size_t n = 0; n < 17; n++)
        ok(rl_siphash(k0, k1, msg, n) == want[n], "siphash vector %zu", n);
}

static struct rl_result take(struct rl_table *t, const char *key, int64_t now)
{
    struct rl_result r;
    rl_take(t, 1, key, strlen(key), now, &r);
    return r;
}

/* SPEC 7: rate 10 per minute, burst 10 -> 10 pass at once; one token per 6 s. */
static void test_bucket_per_minute(void)
{
    struct rl_table *t = rl_table_new(10, 60, 10);
    int64_t t0 = 1000 * SEC;
    for (int i = 0; i < 10; i++) {
        struct rl_result r = take(t, "a", t0);
        ok(r.allowed, "take %d allowed", i);
        is_int(r.remaining, 9 - i);
        is_int(r.reset_s, 6 * (i + 1)); /* seconds until full */
    }
    struct rl_result r = take(t, "a", t0);
    ok(!r.allowed, "11th denied");
    is_int(r.remaining, 0);
    is_int(r.retry_after, 6);
    is_int(r.reset_s, 60);
    r = take(t, "a", t0 + 6 * SEC - 1);
    ok(!r.allowed, "one microsecond short of a token");
    is_int(r.retry_after, 1); /* rounded up, never 0 */
    r = take(t, "a", t0 + 6 * SEC);
    ok(r.allowed, "a token after 6 s");
    is_int(r.remaining, 0);
    ok(take(t, "b", t0).allowed, "another key has its own bucket");
    /* A full bucket after a long idle time: no overflow, capped at burst. */
    r = take(t, "a", t0 + 1000000000LL * SEC);
    ok(r.allowed, "after a long idle");
    is_int(r.remaining, 9);
    rl_table_free(t);
}

/* Rates that do not divide a second: 3 per second is one token per 333333.33 µs. */
static void test_bucket_fractional(void)
{
    struct rl_table *t = rl_table_new(3, 1, 2);
    int64_t t0 = 5 * SEC;
    ok(take(t, "k", t0).allowed && take(t, "k", t0).allowed, "the burst of 2");
    ok(!take(t, "k", t0 + 333333).allowed, "333333 us: 999999 of 1000000 units");
    ok(take(t, "k", t0 + 333334).allowed, "333334 us: a whole token");
    /*
     * Over 10 s, polled every ms, exactly 30 more pass: no rounding drift
     * (burst 2 so that the cap never clips the polling's overshoot).
     */
    int passed = 0;
    for (int64_t us = 0; us <= 10 * SEC; us += 1000)
        passed += take(t, "k", t0 + 333334 + us).allowed;
    is_int(passed, 30);
    /* A clock read earlier than the bucket's last update adds nothing. */
    ok(!take(t, "k", t0).allowed, "time going back does not refill");
    rl_table_free(t);
}

static void test_kinds_and_extremes(void)
{
    struct rl_table *t = rl_table_new(1, 3600, 1);
    struct rl_result r;
    rl_take(t, 1, "10.0.0.1", 8, SEC, &r);
    ok(r.allowed, "ip");
    rl_take(t, 2, "10.0.0.1", 8, SEC, &r);
    ok(r.allowed, "a consumer of the same spelling is another key");
    rl_take(t, 1, "10.0.0.1", 8, SEC, &r);
    ok(!r.allowed, "same kind and key");
    is_int(r.retry_after, 3600);
    rl_take(t, 3, "", 0, SEC, &r);
    ok(r.allowed, "empty key");
    rl_table_free(t);

    /* The largest values: capacity 1e9 tokens of 3.6e9 units fits 63 bits. */
    t = rl_table_new(1000000000, 3600, 1000000000);
    rl_take(t, 1, "x", 1, SEC, &r);
    ok(r.allowed, "huge bucket");
    is_int(r.remaining, 999999999);
    is_int(r.reset_s, 1);
    rl_take(t, 1, "x", 1, INT64_MAX / 2, &r);
    is_int(r.remaining, 999999999);
    rl_table_free(t);
}

struct hammer {
    struct rl_table *t;
    int64_t now;
    int allowed;
    int index;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    char key[32];
    for (int i = 0; i < 20000; i++) {
        struct rl_result r;
        /* Everyone on one hot key, plus a private key each to fill other shards. */
        if (i % 2)
            rl_take(h->t, 1, "hot", 3, h->now, &r);
        else
            rl_take(h->t, 1, key, (size_t)snprintf(key, sizeof(key), "t%d-%d", h->index, i), h->now,
                    &r);
        if (i % 2 && r.allowed)
            h->allowed++;
    }
    return NULL;
}

/* Exact across threads: 4 threads, 40000 takes of one key, burst 1000 -> exactly 1000. */
static void test_exact_across_threads(void)
{
    struct rl_table *t = rl_table_new(1, 3600, 1000);
    struct hammer h[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){.t = t, .now = 10 * SEC, .index = i};
        pthread_create(&th[i], NULL, hammer_run, &h[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += h[i].allowed;
    }
    is_int(total, 1000);
    rl_table_free(t);
}

/* A flood of distinct keys never holds more than RL_MAX_BUCKETS buckets. */
static void test_memory_bound(void)
{
    struct rl_table *t = rl_table_new(1, 60, 5);
    char key[32];
    struct rl_result r;
    for (int i = 0; i < 5; i++) /* an emptied bucket: the last to be evicted */
        rl_take(t, 2, "victim", 6, SEC, &r);
    for (int i = 0; i < 400000; i++) {
        rl_take(t, 1, key, (size_t)snprintf(key, sizeof(key), "flood-%d", i), SEC, &r);
        ok(r.allowed, "a new key starts full");
    }
    size_t n = rl_table_count(t);
    ok(n <= RL_MAX_BUCKETS, "%zu buckets, bound %zu", n, (size_t)RL_MAX_BUCKETS);
    /* Eviction brings a full shard down to a quarter of its slots, no further. */
    ok(n >= RL_MAX_BUCKETS / 2, "eviction keeps a working set: %zu", n);
    rl_take(t, 2, "victim", 6, SEC, &r);
    ok(!r.allowed, "the emptied bucket was not evicted by buckets closer to full");
    /* The last keys are the freshest: still limited (not evicted). */
    for (int i = 0; i < 5; i++) /* it had 4 of 5 tokens left */
        rl_take(t, 1, key, (size_t)snprintf(key, sizeof(key), "flood-%d", 399999), SEC, &r);
    ok(!r.allowed, "the last key's bucket survived the flood");
    rl_table_free(t);

    /* Idle buckets expire: full buckets are dropped to make room. */
    t = rl_table_new(1, 1, 1);
    for (int i = 0; i < 60000; i++)
        rl_take(t, 1, key, (size_t)snprintf(key, sizeof(key), "old-%d", i), SEC, &r);
    rl_take(t, 1, "active", 6, 3 * SEC, &r);
    for (int i = 0; i < 60000; i++)
        rl_take(t, 1, key, (size_t)snprintf(key, sizeof(key), "new-%d", i), 3 * SEC, &r);
    n = rl_table_count(t);
    ok(n < 60000 + 60000 / 4, "old full buckets were dropped: %zu", n);
    rl_take(t, 1, "active", 6, 3 * SEC, &r);
    ok(!r.allowed, "an active bucket is kept");
    rl_table_free(t);
}

static struct config_error err;

static const void *create(const char *json)
{
    return filter_create_json(&filter_rate_limit, json, "routes[0].filters[0]", NULL, &err);
}

static bool has_error(const char *text)
{
    return config_error_has(&err, text);
}

static void test_options(void)
{
    ok(create("{\"type\": \"rate_limit\", \"rate\": 0, \"per\": \"week\", \"burst\": -1,"
              " \"key\": \"header:a b\", \"store\": \"redis\", \"on_store_error\": \"maybe\","
              " \"rates\": 1}") == NULL,
       "rejected");
    ok(has_error("sluice.json: routes[0].filters[0].rate: must be an integer from 1 to"), "rate");
    ok(has_error("routes[0].filters[0].per: must be \"second\", \"minute\" or \"hour\""), "per");
    ok(has_error("routes[0].filters[0].burst: must be"), "burst");
    ok(has_error("routes[0].filters[0].key: \"header:a b\" needs a header name"), "key");
    ok(has_error("routes[0].filters[0].on_store_error: must be \"allow\" or \"deny\""), "on_err");
    ok(has_error("rates"), "unknown key");
    ok(create("{\"burst\": 3}") == NULL && has_error(".rate: is required"), "rate required");
    const void *f = create("{\"rate\": 5, \"store\": \"local\", \"on_store_error\": \"deny\"}");
    ok(f != NULL, "valid");
    ok(filter_rate_limit.needs_redis(f) == NULL, "the local store needs no redis");
    filter_rate_limit.destroy(f);

    /* The redis store: accepted, asks the loader for the top-level "redis". */
    f = create("{\"rate\": 5, \"per\": \"minute\", \"store\": \"redis\"}");
    ok(f != NULL, "redis store accepted");
    is_str(filter_rate_limit.needs_redis(f), ".store");
    filter_rate_limit.destroy(f);
    /* Its script counts in doubles: burst x period in microseconds stays below 2^53. */
    ok(create("{\"rate\": 1, \"per\": \"hour\", \"burst\": 2600000, \"store\": "
              "\"redis\"}") == NULL,
       "too large for redis");
    ok(has_error("routes[0].filters[0].burst: 2600000 per hour is too large for the \"redis\" "
                 "store, which counts in microseconds below 2^53: at most 2501999 per hour"),
       "burst bound named");
    f = create("{\"rate\": 1, \"per\": \"hour\", \"burst\": 2501999, \"store\": \"redis\"}");
    ok(f != NULL, "the bound itself is fine");
    filter_rate_limit.destroy(f);
}

static struct route_config route = {.name = "api"};

/* The hooks: the 429 and the RateLimit-* fields on every response. */
static void test_hooks(void)
{
    const void *f = create("{\"rate\": 2, \"per\": \"hour\", \"key\": \"consumer\"}");
    ok(f != NULL, "created");
    if (!f)
        return;
    for (int i = 0; i < 3; i++) {
        struct exchange x;
        memset(&x, 0, sizeof(x));
        x.arena = arena_new(4096);
        header_list_init(&x.req_headers, x.arena, 8);
        header_list_init(&x.resp_headers, x.arena, 8);
        snprintf(x.remote_addr, sizeof(x.remote_addr), "10.0.0.%d", i); /* ignored: consumer */
        x.consumer = SLICE_LIT("alice");
        x.request_id = SLICE_LIT("req");
        x.route = &route;
        void *state = arena_calloc(x.arena, filter_rate_limit.state_size);
        enum filter_verdict v = filter_rate_limit.on_request(f, NULL, &x, state);
        is_int(v, i < 2 ? FILTER_CONTINUE : FILTER_RESPOND);
        if (i < 2)
            x.status = 200;
        filter_rate_limit.on_response(f, NULL, &x, state);
        const struct slice *h = header_get(&x.resp_headers, SLICE_LIT("RateLimit-Limit"));
        ok(h && slice_eq(*h, SLICE_LIT("2")), "limit");
        h = header_get(&x.resp_headers, SLICE_LIT("RateLimit-Remaining"));
        ok(h && slice_eq(*h, i == 0 ? SLICE_LIT("1") : SLICE_LIT("0")), "remaining");
        h = header_get(&x.resp_headers, SLICE_LIT("RateLimit-Reset"));
        ok(h && slice_eq(*h, i == 0 ? SLICE_LIT("1800") : SLICE_LIT("3600")), "reset");
        h = header_get(&x.resp_headers, SLICE_LIT("Retry-After"));
        if (i == 2) {
            is_int(x.status, 429);
            ok(h && slice_eq(*h, SLICE_LIT("1800")), "retry-after");
        } else {
            ok(h == NULL, "no Retry-After on a pass");
        }
        arena_free(x.arena);
    }
    filter_rate_limit.destroy(f);
}

int main(void)
{
    test_siphash_vectors();
    test_bucket_per_minute();
    test_bucket_fractional();
    test_kinds_and_extremes();
    test_exact_across_threads();
    test_memory_bound();
    test_options();
    test_hooks();
    config_error_clear(&err);
    return test_done();
}
