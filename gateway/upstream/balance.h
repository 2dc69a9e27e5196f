/*
 * balance: the pure choices behind upstream_pick(): smooth weighted round
 * robin, least connections, weighted random and weighted rendezvous (HRW)
 * hashing, plus the 64-bit hash and random generator they use.
 *
 * Owns nothing. Every function works on parallel arrays of length `n`
 * (weights, per-target state, an `eligible` mask) supplied by the caller,
 * does no I/O and allocates nothing; a weight below 1 counts as 1. The
 * choosers return the index of the chosen element, or `n` when no element
 * is eligible.
 *
 * Thread: any; state lives only in the caller's arrays.
 */
#ifndef SLUICE_BALANCE_H
#define SLUICE_BALANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Hashes `len` bytes (FNV-1a, then a splitmix64 finaliser). NULL ok when len is 0. */
uint64_t balance_hash64(const void *data, size_t len);

/* The splitmix64 finaliser: a bijective mix of the 64 bits of `x`. */
uint64_t balance_mix64(uint64_t x);

/* Advances the splitmix64 generator at `*state` and returns its next value. */
uint64_t balance_rng_next(uint64_t *state);

/*
 * Smooth weighted round robin (nginx's algorithm): every eligible element
 * gains its weight in `current`, the largest wins and loses the eligible
 * total. Over any run of sum(weights) picks each element is chosen exactly
 * weight times, interleaved. `current` is read and updated; ineligible
 * elements keep theirs. Ties go to the lowest index.
 */
size_t balance_smooth_wrr(int64_t *current, const int *weights, const bool *eligible, size_t n);

/*
 * Least connections: among eligible elements, those with the smallest
 * in_flight/weight; ties are broken by smooth weighted round robin over the
 * tied elements (so `current` is updated as in balance_smooth_wrr).
 */
size_t balance_least_conn(int64_t *current, const int *weights, const unsigned *in_flight,
                          const bool *eligible, size_t n);

/* Weighted random: element i with probability weight_i / sum, driven by the random `r`. */
size_t balance_random(uint64_t r, const int *weights, const bool *eligible, size_t n);

/*
 * Weighted rendezvous hashing: every eligible element scores
 * weight / -ln(u), u uniform in (0,1) from (key_hash, target_hashes[i]);
 * the highest score wins. Removing an element moves only the keys it held;
 * adding one moves only keys to it. Ties go to the lowest index.
 */
size_t balance_hrw(uint64_t key_hash, const uint64_t *target_hashes, const int *weights,
                   const bool *eligible, size_t n);

#endif
