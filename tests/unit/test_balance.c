/*
 * test_balance: the pure choosers of balance.c.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "upstream/balance.h"
#include "test.h"

static void test_smooth_wrr(void)
{
    int weights[2] = {1, 3};
    bool eligible[2] = {true, true};
    int64_t current[2] = {0, 0};
    int counts[2] = {0, 0};
    size_t seq[8];
    for (int i = 0; i < 400; i++) {
        size_t k = balance_smooth_wrr(current, weights, eligible, 2);
        counts[k]++;
        if (i < 8)
            seq[i] = k;
    }
    is_int(counts[0], 100);
    is_int(counts[1], 300);
    /* Interleaved: the weight-1 element comes once in every run of 4, never twice in a row. */
    int in_first4 = 0;
    for (int i = 0; i < 4; i++)
        in_first4 += seq[i] == 0;
    is_int(in_first4, 1);
    is_int(seq[0], 1);
    is_int(seq[1], 0);
    is_int(seq[2], 1);
    is_int(seq[3], 1);
    is_int(seq[4], 1);
    is_int(seq[5], 0);

    /* Ineligible elements are skipped and keep their state. */
    eligible[1] = false;
    int64_t before = current[1];
    for (int i = 0; i < 5; i++)
        is_int(balance_smooth_wrr(current, weights, eligible, 2), 0);
    is_int(current[1], before);
    eligible[0] = false;
    is_int(balance_smooth_wrr(current, weights, eligible, 2), 2);

    /* Weights 5,1,1 give nginx's sequence a a b a c a a. */
    int w3[3] = {5, 1, 1};
    bool e3[3] = {true, true, true};
    int64_t c3[3] = {0, 0, 0};
    char got[8] = "";
    for (int i = 0; i < 7; i++)
        got[i] = (char)('a' + balance_smooth_wrr(c3, w3, e3, 3));
    is_str(got, "aabacaa");
}

static void test_least_conn(void)
{
    int weights[3] = {1, 1, 2};
    bool eligible[3] = {true, true, true};
    int64_t current[3] = {0, 0, 0};
    unsigned in_flight[3] = {2, 1, 4};
    /* Ratios 2, 1, 2: element 1 wins. */
    is_int(balance_least_conn(current, weights, in_flight, eligible, 3), 1);
    /* Ratios 2, 2, 2: all tied, weighted round robin over them (2 gets half). */
    in_flight[1] = 2;
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < 40; i++)
        counts[balance_least_conn(current, weights, in_flight, eligible, 3)]++;
    is_int(counts[0], 10);
    is_int(counts[1], 10);
    is_int(counts[2], 20);
    /* Weight counts: 3 on weight 2 (1.5) beats 2 on weight 1. */
    in_flight[0] = 2;
    in_flight[1] = 2;
    in_flight[2] = 3;
    is_int(balance_least_conn(current, weights, in_flight, eligible, 3), 2);
    eligible[2] = false;
    size_t k = balance_least_conn(current, weights, in_flight, eligible, 3);
    ok(k == 0 || k == 1, "least_conn picks an eligible element: %zu", k);
    memset(eligible, 0, sizeof(eligible));
    is_int(balance_least_conn(current, weights, in_flight, eligible, 3), 3);
}

static void test_random(void)
{
    int weights[3] = {1, 3, 6};
    bool eligible[3] = {true, true, true};
    uint64_t seed = 42;
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < 10000; i++)
        counts[balance_random(balance_rng_next(&seed), weights, eligible, 3)]++;
    ok(counts[0] > 800 && counts[0] < 1200, "weight 1 of 10: %d / 10000", counts[0]);
    ok(counts[1] > 2700 && counts[1] < 3300, "weight 3 of 10: %d / 10000", counts[1]);
    ok(counts[2] > 5600 && counts[2] < 6400, "weight 6 of 10: %d / 10000", counts[2]);
    eligible[2] = false;
    int sixes = 0;
    for (int i = 0; i < 1000; i++)
        sixes += balance_random(balance_rng_next(&seed), weights, eligible, 3) == 2;
    is_int(sixes, 0);
    memset(eligible, 0, sizeof(eligible));
    is_int(balance_random(balance_rng_next(&seed), weights, eligible, 3), 3);
}

static void test_hrw(void)
{
    enum { N = 5, KEYS = 5000 };
    const char *names[N] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80",
                            "10.0.0.5:80"};
    uint64_t hashes[N];
    int weights[N] = {1, 1, 1, 1, 1};
    bool eligible[N] = {true, true, true, true, true};
    for (int i = 0; i < N; i++)
        hashes[i] = balance_hash64(names[i], strlen(names[i]));

    static size_t before[KEYS];
    int counts[N] = {0};
    char key[32];
    for (int k = 0; k < KEYS; k++) {
        int len = snprintf(key, sizeof(key), "192.168.%d.%d", k / 256, k % 256);
        before[k] = balance_hrw(balance_hash64(key, (size_t)len), hashes, weights, eligible, N);
        counts[before[k]]++;
    }
    for (int i = 0; i < N; i++)
        ok(counts[i] > 850 && counts[i] < 1150, "even spread: target %d has %d of %d", i, counts[i],
           KEYS);

    /* Same key, same answer. */
    is_int(balance_hrw(balance_hash64("a", 1), hashes, weights, eligible, N),
           balance_hrw(balance_hash64("a", 1), hashes, weights, eligible, N));

    /* Remove target 2: only its keys move, and they spread over the others. */
    eligible[2] = false;
    int moved_wrongly = 0, moved = 0;
    for (int k = 0; k < KEYS; k++) {
        int len = snprintf(key, sizeof(key), "192.168.%d.%d", k / 256, k % 256);
        size_t now = balance_hrw(balance_hash64(key, (size_t)len), hashes, weights, eligible, N);
        if (before[k] == 2) {
            moved++;
            if (now == 2)
                moved_wrongly++;
        } else if (now != before[k]) {
            moved_wrongly++;
        }
    }
    is_int(moved_wrongly, 0);
    is_int(moved, counts[2]);

    /* Weights: weight 3 against 1 takes about three quarters of the keys. */
    int w2[2] = {1, 3};
    bool e2[2] = {true, true};
    int heavy = 0;
    for (int k = 0; k < KEYS; k++) {
        int len = snprintf(key, sizeof(key), "user-%d", k);
        heavy += balance_hrw(balance_hash64(key, (size_t)len), hashes, w2, e2, 2) == 1;
    }
    ok(heavy > 3550 && heavy < 3950, "weight 3 of 4: %d / %d", heavy, KEYS);

    memset(eligible, 0, sizeof(eligible));
    is_int(balance_hrw(1, hashes, weights, eligible, N), N);
}

static void test_hash(void)
{
    ok(balance_hash64("abc", 3) == balance_hash64("abc", 3), "hash is stable");
    ok(balance_hash64("abc", 3) != balance_hash64("abd", 3), "hash differs");
    ok(balance_hash64(NULL, 0) == balance_hash64("", 0), "empty input");
}

int main(void)
{
    test_smooth_wrr();
    test_least_conn();
    test_random();
    test_hrw();
    test_hash();
    return test_done();
}
