/*
 * auth_mac: the keyed digest the authentication filters (api_key,
 * basic_auth) compare secrets by, so that neither a lookup nor a comparison
 * depends on the secret's bytes in a way a client could time.
 *
 * A secret presented by a client is never compared as it is: it is first
 * turned into HMAC-SHA256 under a random key drawn when the filter is
 * created, and only those fixed-length digests are compared (CRYPTO_memcmp)
 * or used to pick a hash-table slot. An attacker who does not know the key
 * learns nothing from the slot a digest falls into.
 *
 * Owns: an EVP_MAC_CTX keyed once (auth_mac_init) and reused for every
 * digest, so the request path neither fetches the algorithm (a global lock
 * in OpenSSL 3) nor allocates.
 *
 * Thread: one struct auth_mac per thread (a filter keeps one in its
 * per-worker context); the key bytes may be shared read-only.
 */
#ifndef SLUICE_AUTH_MAC_H
#define SLUICE_AUTH_MAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_MAC_KEY_LEN 32
#define AUTH_MAC_LEN 32

struct evp_mac_ctx_st;

struct auth_mac {
    struct evp_mac_ctx_st *ctx; /* NULL: fall back to the one-shot HMAC() */
    const uint8_t *key;         /* AUTH_MAC_KEY_LEN bytes, owned by the caller */
};

/* Fills `key` with AUTH_MAC_KEY_LEN random bytes; false when the RNG fails. */
bool auth_mac_new_key(uint8_t *key);

/*
 * Prepares `m` to digest under `key` (which must outlive `m`). When OpenSSL
 * cannot make a context, `m` still works through the slower one-shot call.
 */
void auth_mac_init(struct auth_mac *m, const uint8_t *key);

/* Releases the context of `m` (the key stays the caller's). */
void auth_mac_free(struct auth_mac *m);

/*
 * HMAC-SHA256 of data[0..len) into out[AUTH_MAC_LEN]. Returns false when
 * OpenSSL fails (out is then zeroed and must not be trusted as a match).
 */
bool auth_mac_digest(struct auth_mac *m, const void *data, size_t len, uint8_t *out);

#endif
