/*
 * rate_limit: the token-bucket table behind the `rate_limit` filter's local
 * store (SPEC 4, SPEC 7 "rate_limit"), exposed so that its arithmetic and
 * its memory bound can be unit-tested without a running gateway.
 *
 * A bucket holds up to `burst` tokens and gains `rate` tokens per `period`
 * continuously; a request takes one. The arithmetic is exact integer
 * arithmetic: one token is `period_us` units and the bucket gains `rate`
 * units per microsecond, so no rounding ever lets an extra request through.
 *
 * The table is shared by every worker thread of a snapshot. It is split into
 * RL_SHARDS shards, each with its own mutex, chosen by the key's hash: two
 * workers only wait for each other when their keys land in the same shard,
 * and the take of one key is atomic, so the limit is exact across threads.
 * Keys are stored as a keyed 64-bit SipHash (random key per table), so
 * entries have a fixed size and a client cannot aim collisions.
 *
 * Memory bound: a shard holds at most RL_SHARD_MAX_SLOTS / 2 buckets, so a
 * table holds at most RL_MAX_BUCKETS buckets in RL_MAX_BYTES bytes of slots.
 * A bucket that has refilled completely is the same as no bucket, so such
 * entries are dropped whenever a shard fills up; when a shard is full of
 * active buckets, it is brought down to a quarter of its slots by evicting
 * the buckets closest to full first (their keys get
 * a full bucket back: the flood costs accuracy for those keys, never memory).
 *
 * Thread: rl_table_new/rl_table_free on the loading thread / wherever the
 * snapshot dies; rl_take from any thread.
 */
#ifndef SLUICE_RATE_LIMIT_H
#define SLUICE_RATE_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RL_SHARDS 64
#define RL_SHARD_MAX_SLOTS 4096
#define RL_MAX_BUCKETS ((size_t)RL_SHARDS * RL_SHARD_MAX_SLOTS / 2)
/* Three 64-bit words per slot. */
#define RL_MAX_BYTES ((size_t)RL_SHARDS * RL_SHARD_MAX_SLOTS * 24)

struct rl_table;

/* What one take decided, in whole tokens and whole seconds (SPEC 7). */
struct rl_result {
    bool allowed;
    uint64_t remaining;   /* whole tokens left after this take */
    uint64_t reset_s;     /* seconds until the bucket is full again (rounded up) */
    uint64_t retry_after; /* when denied: seconds until one token (rounded up, >= 1) */
};

/*
 * A table of buckets holding up to `burst` tokens, gaining `rate` per
 * `period_s` seconds. rate and burst in [1, 1e9], period_s in [1, 3600].
 * Returns NULL when out of memory.
 */
struct rl_table *rl_table_new(uint64_t rate, uint64_t period_s, uint64_t burst);

/* Frees the table. NULL-safe. */
void rl_table_free(struct rl_table *t);

/*
 * Takes one token from the bucket of `key` (kind distinguishes key spaces,
 * e.g. an IP from a consumer name of the same spelling) at monotonic time
 * `now_us`, and reports the outcome. A key never seen, or forgotten, starts
 * with a full bucket.
 */
void rl_take(struct rl_table *t, uint8_t kind, const void *key, size_t len, int64_t now_us,
             struct rl_result *out);

/* Buckets held right now (tests, and the memory bound). */
size_t rl_table_count(struct rl_table *t);

/* SipHash-2-4 of `data` under the 128-bit key k0, k1 (exposed for its test vectors). */
uint64_t rl_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len);

#endif
