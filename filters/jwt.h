/*
 * jwt: the `jwt` filter's verification core, exposed for the unit tests
 * (filters/jwt.c has the filter; filters/jwk.h the keys and algorithms).
 *
 * jwt_check() is the whole verdict on one compact JWS (RFC 7515 section
 * 7.1, RFC 7519): shape, strict base64url, JSON without duplicate member
 * names, the JOSE header rules, key selection, the signature, then the
 * claims against the filter's options at unix time `now`. It reads the
 * instance and the key set only, so any thread may call it.
 */
#ifndef SLUICE_JWT_H
#define SLUICE_JWT_H

#include <stdint.h>

#include <jansson.h>

#include "base/slice.h"

struct arena;
struct jwk_set;
struct jwt_filter;

/* Why a token was refused; JWT_OK when it was not. */
enum jwt_status {
    JWT_OK = 0,
    JWT_TOO_LARGE,     /* over JWT_MAX_TOKEN bytes */
    JWT_MALFORMED,     /* not three strict base64url segments of JSON objects */
    JWT_ALG_NONE,      /* "alg": "none" in any spelling */
    JWT_ALG_REFUSED,   /* an algorithm outside the allow-list (or unknown) */
    JWT_CRIT,          /* a "crit" header member: no extension is understood */
    JWT_KEY_IN_HEADER, /* jku, jwk, x5u or x5c: keys are never taken from the token */
    JWT_UNKNOWN_KID,   /* no key with the token's "kid" */
    JWT_NO_KEY,        /* no key of the set may verify this algorithm */
    JWT_BAD_SIGNATURE,
    JWT_EXPIRED,
    JWT_NOT_YET_VALID,
    JWT_NO_EXP, /* "exp" required and absent */
    JWT_BAD_ISSUER,
    JWT_BAD_AUDIENCE,
    JWT_STATUS_COUNT
};

/* The largest token accepted, in bytes (SPEC 7: over 8 KiB is refused). */
#define JWT_MAX_TOKEN 8192

/* A short sentence for `s`, for the 401 body. */
const char *jwt_status_text(enum jwt_status s);

/*
 * Verifies `token` with `keys` (NULL: the instance's own, from `secret`,
 * `public_key_file` or `jwks_file`) at unix time `now`. Scratch memory
 * comes from `a`. On JWT_OK *payload holds the claims (the caller
 * json_decref()s it); otherwise *payload is NULL.
 */
enum jwt_status jwt_check(const struct jwt_filter *f, const struct jwk_set *keys,
                          struct slice token, int64_t now, struct arena *a, json_t **payload);

/* Verified tokens served from the cache of a filter context so far (tests). */
unsigned long jwt_cache_hits(const void *context);

#endif
