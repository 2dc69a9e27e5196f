/*
 * auth_mac: HMAC-SHA256 under a per-instance random key, for comparing
 * client-presented secrets in constant time (see auth_mac.h).
 */
#include "filters/auth_mac.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>

bool auth_mac_new_key(uint8_t *key)
{
    return RAND_bytes(key, AUTH_MAC_KEY_LEN) == 1;
}

static OSSL_PARAM *sha256_params(OSSL_PARAM *p)
{
    p[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    p[1] = OSSL_PARAM_construct_end();
    return p;
}

void auth_mac_init(struct auth_mac *m, const uint8_t *key)
{
    m->key = key;
    m->ctx = NULL;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac)
        return;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac); /* the context keeps its own reference */
    OSSL_PARAM params[2];
    if (ctx && EVP_MAC_init(ctx, key, AUTH_MAC_KEY_LEN, sha256_params(params)) != 1) {
        EVP_MAC_CTX_free(ctx);
        ctx = NULL;
    }
    m->ctx = ctx;
}

void auth_mac_free(struct auth_mac *m)
{
    EVP_MAC_CTX_free(m->ctx);
    m->ctx = NULL;
}

bool auth_mac_digest(struct auth_mac *m, const void *data, size_t len, uint8_t *out)
{
    size_t outlen = 0;
    /* A NULL key re-initialises with the key already set: no allocation, no fetch. */
    if (m->ctx && EVP_MAC_init(m->ctx, NULL, 0, NULL) == 1 &&
        EVP_MAC_update(m->ctx, data, len) == 1 &&
        EVP_MAC_final(m->ctx, out, &outlen, AUTH_MAC_LEN) == 1 && outlen == AUTH_MAC_LEN)
        return true;
    unsigned int n = 0;
    if (HMAC(EVP_sha256(), m->key, AUTH_MAC_KEY_LEN, data, len, out, &n) && n == AUTH_MAC_LEN)
        return true;
    memset(out, 0, AUTH_MAC_LEN);
    return false;
}
