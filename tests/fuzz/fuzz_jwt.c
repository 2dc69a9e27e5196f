/*
 * fuzz_jwt: the JWT verifier (jwt_check, filters/jwt.h) on arbitrary
 * tokens, with the keys fixed: the filter's own HS256 secret, or a JWKS in
 * memory holding the keys of RFC 7515 appendix A.1 to A.3 (oct, RSA, EC
 * P-256) and RFC 8037's Ed25519 key, so the RFC's tokens verify. The first
 * byte picks:
 *   bit 0   sign: the rest is a signing input "header.payload" that the
 *           harness completes with its HS256 signature under the secret,
 *           so the claims checks run on fuzzed payloads too;
 *   bit 1   the JWKS instead of the secret;
 *   bit 2   the strict filter (issuer "joe", audience, exp required) or the
 *           lax one (no issuer or audience, exp optional);
 *   bits 3-4  the time: just before the RFC tokens expire, 0, 2^31, or
 *           far in the future;
 *   bit 5   encode: the rest is the header's JSON, a NUL, and the claims'
 *           JSON, which the harness base64url-encodes into the first two
 *           segments (then signs with bit 0, else appends a dummy
 *           signature), so the JOSE header and claims rules see mutated
 *           JSON rather than mostly broken base64url.
 * Checks: a status in range with a text, and claims (an object) exactly
 * with JWT_OK; ASan and UBSan see the rest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "filters/jwk.h"
#include "filters/jwt.h"
#include "base/arena.h"
#include "base/base64url.h"
#include "conf/config_error.h"
#include "core/filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern const struct filter_type filter_jwt;

static const char secret[] = "0123456789abcdef0123456789abcdef-fuzz";

#define ALGS                                                                                       \
    "[\"HS256\", \"HS384\", \"HS512\", \"RS256\", \"RS384\", \"RS512\", \"PS256\", "               \
    "\"ES256\", \"ES384\", \"EdDSA\"]"

static const char strict_options[] =
    "{\"secret\": \"0123456789abcdef0123456789abcdef-fuzz\", \"algorithms\": " ALGS
    ", \"issuer\": \"joe\", \"audience\": [\"api\", \"web\"], \"leeway_s\": 30}";
static const char lax_options[] = "{\"secret\": \"0123456789abcdef0123456789abcdef-fuzz\", "
                                  "\"algorithms\": " ALGS ", \"require_exp\": false}";

/* RFC 7515 A.1 (oct), A.2 (RSA), A.3 (EC P-256) and RFC 8037 A.2 (Ed25519). */
static const char jwks_text[] =
    "{\"keys\": ["
    "{\"kty\": \"oct\", \"k\": "
    "\"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow\"},"
    "{\"kty\": \"RSA\", \"e\": \"AQAB\", \"n\": "
    "\"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0B"
    "m4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5"
    "rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhy"
    "xXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ\"},"
    "{\"kty\": \"EC\", \"crv\": \"P-256\", \"kid\": \"ec\", "
    "\"x\": \"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\", "
    "\"y\": \"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"},"
    "{\"kty\": \"OKP\", \"crv\": \"Ed25519\", \"kid\": \"ed\", "
    "\"x\": \"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}";

static const void *strict, *lax;
static struct jwk_set jwks;

static const void *create(const char *text)
{
    struct config_error err = {0};
    json_t *options = json_loads(text, 0, NULL);
    const void *f = options ? filter_jwt.create(options, &err) : NULL;
    json_decref(options);
    config_error_clear(&err);
    if (!f)
        abort();
    return f;
}

static void setup(void)
{
    strict = create(strict_options);
    lax = create(lax_options);
    json_t *doc = json_loads(jwks_text, 0, NULL);
    char why[300];
    if (!doc || jwk_set_add_jwks(&jwks, doc, ~0u, why, sizeof why) < 0 || jwks.count != 4)
        abort();
    json_decref(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    bool sign = mode & 1;
    const struct jwk_set *keys = (mode & 2) ? &jwks : NULL;
    const void *f = (mode & 4) ? strict : lax;
    static const int64_t times[] = {1300819300, 0, INT64_C(2147483648), INT64_C(253402300799)};
    int64_t now = times[(mode >> 3) & 3];

    char *encoded = NULL;
    if (mode & 32) {
        const uint8_t *nul = memchr(data, 0, size);
        size_t hlen = nul ? (size_t)(nul - data) : size;
        size_t plen = nul ? size - hlen - 1 : 0;
        encoded = malloc((hlen + plen) * 4 / 3 + 16);
        if (!encoded)
            return 0;
        size_t n = base64url_encode(data, hlen, encoded);
        encoded[n++] = '.';
        n += base64url_encode(nul ? nul + 1 : data + size, plen, encoded + n);
        if (!sign) {
            memcpy(encoded + n, ".c2ln", 5);
            n += 5;
        }
        data = (const uint8_t *)encoded;
        size = n;
    }

    /* The token in an exactly sized buffer, so AddressSanitizer sees any over-read. */
    size_t len = size;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    char sig[128];
    size_t sig_len = 0;
    if (sign) {
        if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), data, size, mac, &mac_len))
            abort();
        sig_len = base64url_encode(mac, mac_len, sig); /* 43 characters */
        len = size + 1 + sig_len;
    }
    char *token = malloc(len ? len : 1);
    if (!token)
        return 0;
    memcpy(token, data, size);
    if (sign) {
        token[size] = '.';
        memcpy(token + size + 1, sig, sig_len);
    }

    struct arena *a = arena_new(1024);
    json_t *payload = NULL;
    enum jwt_status st = jwt_check(f, keys, slice_make(token, len), now, a, &payload);
    if ((unsigned)st >= JWT_STATUS_COUNT || !jwt_status_text(st))
        abort();
    if ((st == JWT_OK) != (payload != NULL))
        abort();
    if (payload && !json_is_object(payload))
        abort();
    json_decref(payload);
    arena_free(a);
    free(token);
    free(encoded);
    return 0;
}
