/*
 * jwk: the keys of the `jwt` filter and the JOSE signature algorithms
 * (RFC 7518 section 3, RFC 8037), on OpenSSL 3's EVP only.
 *
 * Owns: key sets (struct jwk_set) built from a secret, a PEM public key or
 * a JWKS document (RFC 7517); each key holds its EVP_PKEY (or HMAC secret)
 * and the set of algorithms it may verify. A key pins its algorithm
 * family: an oct key only HS*, an RSA key only RS* and PS256, an EC P-256
 * key only ES256, a P-384 key only ES384, an Ed25519 key only EdDSA; a
 * JWK's "alg" member narrows that to one algorithm. So an RSA public key can
 * never be used as an HMAC secret (the HS/RS confusion of CVE-2015-9235).
 *
 * Promises: jwk_verify never allocates from shared state and only reads the
 * key, so one const set may be used by every worker at once (EVP_PKEY is
 * safe for concurrent reads). ECDSA signatures are the JOSE form (raw r||s
 * of the curve's size); r or s zero or not below the group order, and any
 * other length (a DER signature, say), are refused before OpenSSL is asked.
 *
 * Thread: building and freeing a set on one thread; verifying from any.
 */
#ifndef SLUICE_JWK_H
#define SLUICE_JWK_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "base/slice.h"

struct evp_pkey_st;
struct bignum_st;

enum jwt_alg {
    JWT_HS256 = 0,
    JWT_HS384,
    JWT_HS512,
    JWT_RS256,
    JWT_RS384,
    JWT_RS512,
    JWT_PS256,
    JWT_ES256,
    JWT_ES384,
    JWT_EDDSA,
    JWT_ALG_COUNT
};

#define JWT_ALG_BIT(a) (1u << (a))
#define JWT_ALGS_HS (JWT_ALG_BIT(JWT_HS256) | JWT_ALG_BIT(JWT_HS384) | JWT_ALG_BIT(JWT_HS512))
#define JWT_ALGS_RSA                                                                               \
    (JWT_ALG_BIT(JWT_RS256) | JWT_ALG_BIT(JWT_RS384) | JWT_ALG_BIT(JWT_RS512) |                    \
     JWT_ALG_BIT(JWT_PS256))

enum jwk_family {
    JWK_OCT = 0, /* an HMAC secret */
    JWK_RSA,
    JWK_EC_P256,
    JWK_EC_P384,
    JWK_ED25519,
};

struct jwk {
    char *kid; /* NULL when the key has none */
    enum jwk_family family;
    unsigned algs;            /* JWT_ALG_BIT()s this key may verify */
    struct evp_pkey_st *pkey; /* NULL for oct */
    unsigned char *secret;    /* oct only */
    size_t secret_len;
    struct bignum_st *order; /* EC only: the group order, to bound r and s */
};

struct jwk_set {
    struct jwk *keys;
    size_t count;
};

/* The algorithm named `name` (exact, case-sensitive as in RFC 7518), or -1. */
int jwt_alg_parse(struct slice name);

/* The RFC 7518 name of `alg`. */
const char *jwt_alg_name(enum jwt_alg alg);

/* The algorithms a key of `family` may verify at most. */
unsigned jwk_family_algs(enum jwk_family family);

/*
 * Adds one oct key holding `len` bytes of `secret`. `allowed` is the
 * filter's allow-list (JWT_ALG_BIT()s): the key's algs are its family's
 * within it. Returns 0, or -1 out of memory.
 */
int jwk_set_add_secret(struct jwk_set *set, const void *secret, size_t len, unsigned allowed);

/*
 * Adds the public key of the PEM file `path` (a PUBLIC KEY, or the key of
 * a CERTIFICATE). Returns 0, or -1 with a sentence in `why`.
 */
int jwk_set_add_pem_file(struct jwk_set *set, const char *path, unsigned allowed, char *why,
                         size_t why_len);

/*
 * Adds every usable key of a JWKS document (RFC 7517 section 5). Keys whose
 * "use" is not "sig", and key types or curves this filter does not verify
 * (e.g. Ed448, RSA-OAEP encryption keys), are skipped; a supported key that
 * is malformed (bad base64url, a point not on the curve, RSA under 2048
 * bits, an "alg" its type cannot serve) is an error. Returns 0, or -1 with
 * a sentence naming the key in `why` (the set may then hold some keys).
 */
int jwk_set_add_jwks(struct jwk_set *set, const json_t *jwks, unsigned allowed, char *why,
                     size_t why_len);

/* Frees every key and empties the set. */
void jwk_set_clear(struct jwk_set *set);

/* Verifies `sig` over `input` with key `k` under `alg` (which the key must allow). */
bool jwk_verify(const struct jwk *k, enum jwt_alg alg, const unsigned char *input, size_t input_len,
                const unsigned char *sig, size_t sig_len);

#endif
