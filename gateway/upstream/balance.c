/*
 * balance: pure choosers over arrays; see balance.h for the contract.
 */
#include "upstream/balance.h"

#include <string.h>

static int64_t weight_of(const int *weights, size_t i)
{
    return weights[i] < 1 ? 1 : weights[i];
}

uint64_t balance_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t balance_hash64(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return balance_mix64(h);
}

uint64_t balance_rng_next(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ULL;
    return balance_mix64(*state);
}

size_t balance_smooth_wrr(int64_t *current, const int *weights, const bool *eligible, size_t n)
{
    size_t best = n;
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!eligible[i])
            continue;
        current[i] += weight_of(weights, i);
        total += weight_of(weights, i);
        if (best == n || current[i] > current[best])
            best = i;
    }
    if (best < n)
        current[best] -= total;
    return best;
}

/* a/wa < b/wb, compared without division (counts and weights are small). */
static bool ratio_less(unsigned a, int64_t wa, unsigned b, int64_t wb)
{
    return (int64_t)a * wb < (int64_t)b * wa;
}

size_t balance_least_conn(int64_t *current, const int *weights, const unsigned *in_flight,
                          const bool *eligible, size_t n)
{
    size_t min = n;
    for (size_t i = 0; i < n; i++) {
        if (eligible[i] && (min == n || ratio_less(in_flight[i], weight_of(weights, i),
                                                   in_flight[min], weight_of(weights, min))))
            min = i;
    }
    if (min == n)
        return n;

    /* Smooth WRR restricted to the elements tied with the minimum. */
    size_t best = n;
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!eligible[i] || ratio_less(in_flight[min], weight_of(weights, min), in_flight[i],
                                       weight_of(weights, i)))
            continue;
        current[i] += weight_of(weights, i);
        total += weight_of(weights, i);
        if (best == n || current[i] > current[best])
            best = i;
    }
    current[best] -= total;
    return best;
}

size_t balance_random(uint64_t r, const int *weights, const bool *eligible, size_t n)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (eligible[i])
            total += (uint64_t)weight_of(weights, i);
    }
    if (total == 0)
        return n;
    /* The modulo bias is below total/2^64: negligible for any real weights. */
    uint64_t x = r % total;
    for (size_t i = 0; i < n; i++) {
        if (!eligible[i])
            continue;
        uint64_t w = (uint64_t)weight_of(weights, i);
        if (x < w)
            return i;
        x -= w;
    }
    return n;
}

/*
 * Natural logarithm of u in (0,1), without libm: u = m * 2^e with m in
 * [sqrt(1/2), sqrt(2)), ln(m) = 2 atanh((m-1)/(m+1)) by its series. The
 * error is below 1e-15, and the result is the same on every platform, so
 * hashing choices do not depend on the C library.
 */
static double ln_unit(double u)
{
    uint64_t bits;
    memcpy(&bits, &u, sizeof(bits));
    int e = (int)((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;
    double m;
    memcpy(&m, &bits, sizeof(m));
    if (m > 1.4142135623730951) {
        m /= 2;
        e++;
    }
    double z = (m - 1) / (m + 1), z2 = z * z, term = z, sum = 0;
    for (int k = 1; k < 40; k += 2) {
        sum += term / k;
        term *= z2;
    }
    return e * 0.6931471805599453 + 2 * sum;
}

size_t balance_hrw(uint64_t key_hash, const uint64_t *target_hashes, const int *weights,
                   const bool *eligible, size_t n)
{
    size_t best = n;
    double best_score = 0;
    for (size_t i = 0; i < n; i++) {
        if (!eligible[i])
            continue;
        uint64_t h = balance_mix64(key_hash ^ balance_mix64(target_hashes[i]));
        /* 53 random bits, centred in their interval: u is never 0 or 1. */
        double u = ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
        double score = (double)weight_of(weights, i) / -ln_unit(u);
        if (best == n || score > best_score) {
            best = i;
            best_score = score;
        }
    }
    return best;
}
