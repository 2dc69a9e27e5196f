/*
 * basic_auth: the few functions of the `basic_auth` filter that the unit
 * tests use to observe its credential cache. The filter itself is reached
 * through the registry (filter_basic_auth).
 *
 * Thread: any (the counter is atomic; the clock offset is set by tests
 * before serving).
 */
#ifndef SLUICE_BASIC_AUTH_H
#define SLUICE_BASIC_AUTH_H

#include <stdint.h>

/* Credential cache shape (SPEC 7): entries per worker and filter, and their lifetime. */
#define BASIC_AUTH_CACHE_SETS 256
#define BASIC_AUTH_CACHE_WAYS 4
#define BASIC_AUTH_CACHE_ENTRIES (BASIC_AUTH_CACHE_SETS * BASIC_AUTH_CACHE_WAYS)
#define BASIC_AUTH_CACHE_TTL_MS 60000

/* Full crypt(3) verifications done by every basic_auth filter of the process so far. */
uint64_t basic_auth_verifications(void);

/* Tests only: moves the cache's clock forward by `ms`, to see entries expire. */
void basic_auth_test_advance_clock(int64_t ms);

#endif
