/*
 * jwk: key sets and signature verification for the `jwt` filter (see
 * jwk.h). Keys are imported with EVP_PKEY_fromdata (RSA, EC) or as raw
 * public keys (Ed25519); verification is EVP_DigestVerify for the public
 * key algorithms and a one-shot HMAC compared in constant time for HS*.
 */
#include "filters/jwk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "base/base64url.h"
#include "base/file.h"

/* RFC 7518 section 3.3 and 3.5: RSA keys of at least 2048 bits. */
#define JWK_RSA_MIN_BITS 2048
/* RFC 7518 section 3.2: an HMAC key at least as long as the hash; 32 bytes is HS256's. */
#define JWK_OCT_MIN_BYTES 32

static const char *const alg_names[JWT_ALG_COUNT] = {
    [JWT_HS256] = "HS256", [JWT_HS384] = "HS384", [JWT_HS512] = "HS512", [JWT_RS256] = "RS256",
    [JWT_RS384] = "RS384", [JWT_RS512] = "RS512", [JWT_PS256] = "PS256", [JWT_ES256] = "ES256",
    [JWT_ES384] = "ES384", [JWT_EDDSA] = "EdDSA",
};

int jwt_alg_parse(struct slice name)
{
    for (int i = 0; i < JWT_ALG_COUNT; i++)
        if (slice_eq(name, slice_cstr(alg_names[i])))
            return i;
    return -1;
}

const char *jwt_alg_name(enum jwt_alg alg)
{
    return alg < JWT_ALG_COUNT ? alg_names[alg] : "?";
}

unsigned jwk_family_algs(enum jwk_family family)
{
    switch (family) {
    case JWK_OCT:
        return JWT_ALGS_HS;
    case JWK_RSA:
        return JWT_ALGS_RSA;
    case JWK_EC_P256:
        return JWT_ALG_BIT(JWT_ES256);
    case JWK_EC_P384:
        return JWT_ALG_BIT(JWT_ES384);
    case JWK_ED25519:
        return JWT_ALG_BIT(JWT_EDDSA);
    }
    return 0;
}

static const EVP_MD *alg_md(enum jwt_alg alg)
{
    switch (alg) {
    case JWT_HS256:
    case JWT_RS256:
    case JWT_PS256:
    case JWT_ES256:
        return EVP_sha256();
    case JWT_HS384:
    case JWT_RS384:
    case JWT_ES384:
        return EVP_sha384();
    case JWT_HS512:
    case JWT_RS512:
        return EVP_sha512();
    default:
        return NULL; /* EdDSA hashes internally */
    }
}

static struct jwk *set_grow(struct jwk_set *set)
{
    struct jwk *keys = realloc(set->keys, (set->count + 1) * sizeof(*keys));
    if (!keys)
        return NULL;
    set->keys = keys;
    struct jwk *k = &keys[set->count];
    memset(k, 0, sizeof(*k));
    return k;
}

static void key_free(struct jwk *k)
{
    free(k->kid);
    EVP_PKEY_free(k->pkey);
    if (k->secret)
        OPENSSL_clear_free(k->secret, k->secret_len);
    BN_free(k->order);
    memset(k, 0, sizeof(*k));
}

void jwk_set_clear(struct jwk_set *set)
{
    for (size_t i = 0; i < set->count; i++)
        key_free(&set->keys[i]);
    free(set->keys);
    set->keys = NULL;
    set->count = 0;
}

int jwk_set_add_secret(struct jwk_set *set, const void *secret, size_t len, unsigned allowed)
{
    struct jwk *k = set_grow(set);
    if (!k)
        return -1;
    k->family = JWK_OCT;
    k->algs = JWT_ALGS_HS & allowed;
    k->secret = OPENSSL_malloc(len ? len : 1);
    if (!k->secret)
        return -1;
    memcpy(k->secret, secret, len);
    k->secret_len = len;
    set->count++;
    return 0;
}

static BIGNUM *curve_order(int nid)
{
    EC_GROUP *g = EC_GROUP_new_by_curve_name(nid);
    if (!g)
        return NULL;
    BIGNUM *order = BN_dup(EC_GROUP_get0_order(g));
    EC_GROUP_free(g);
    return order;
}

/*
 * Finds the family of a public key and checks it is one we verify with;
 * fills k->family, k->order. Returns 0, or -1 with a sentence.
 */
static int classify(struct jwk *k, EVP_PKEY *pkey, char *why, size_t why_len)
{
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        if (EVP_PKEY_get_bits(pkey) < JWK_RSA_MIN_BITS) {
            snprintf(why, why_len, "the RSA key has %d bits; at least %d are required",
                     EVP_PKEY_get_bits(pkey), JWK_RSA_MIN_BITS);
            return -1;
        }
        k->family = JWK_RSA;
        return 0;
    }
    if (EVP_PKEY_is_a(pkey, "ED25519")) {
        k->family = JWK_ED25519;
        return 0;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64] = "";
        size_t glen = 0;
        EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &glen);
        int nid = 0;
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
            k->family = JWK_EC_P256;
            nid = NID_X9_62_prime256v1;
        } else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
            k->family = JWK_EC_P384;
            nid = NID_secp384r1;
        } else {
            snprintf(why, why_len, "EC curve \"%s\" is not supported (P-256 and P-384 are)", group);
            return -1;
        }
        k->order = curve_order(nid);
        if (!k->order) {
            snprintf(why, why_len, "out of memory");
            return -1;
        }
        return 0;
    }
    snprintf(why, why_len, "key type %s is not supported (RSA, EC P-256/P-384, Ed25519 are)",
             EVP_PKEY_get0_type_name(pkey) ? EVP_PKEY_get0_type_name(pkey) : "?");
    return -1;
}

/* Takes ownership of `pkey`. */
static int add_pkey(struct jwk_set *set, EVP_PKEY *pkey, const char *kid, int pinned,
                    unsigned allowed, char *why, size_t why_len)
{
    struct jwk *k = set_grow(set);
    if (!k) {
        EVP_PKEY_free(pkey);
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    k->pkey = pkey;
    if (classify(k, pkey, why, why_len) < 0) {
        key_free(k);
        return -1;
    }
    unsigned family = jwk_family_algs(k->family);
    if (pinned >= 0) {
        if (!(family & JWT_ALG_BIT(pinned))) {
            snprintf(why, why_len, "\"alg\": \"%s\" cannot be used with this key type",
                     jwt_alg_name((enum jwt_alg)pinned));
            key_free(k);
            return -1;
        }
        family = JWT_ALG_BIT(pinned);
    }
    k->algs = family & allowed;
    if (kid && !(k->kid = strdup(kid))) {
        key_free(k);
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    set->count++;
    return 0;
}

int jwk_set_add_pem_file(struct jwk_set *set, const char *path, unsigned allowed, char *why,
                         size_t why_len)
{
    FILE *f = file_open_regular(path);
    if (!f) {
        snprintf(why, why_len, "cannot open: %s", file_strerror(errno));
        return -1;
    }
    EVP_PKEY *pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    if (!pkey) {
        rewind(f);
        X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
        if (cert) {
            pkey = X509_get_pubkey(cert);
            X509_free(cert);
        }
    }
    fclose(f);
    ERR_clear_error();
    if (!pkey) {
        snprintf(why, why_len,
                 "holds no PEM public key (\"-----BEGIN PUBLIC KEY-----\") or certificate");
        return -1;
    }
    return add_pkey(set, pkey, NULL, -1, allowed, why, why_len);
}

/* Decodes member `name` of `jwk` (strict base64url) into a malloc'd buffer. */
static unsigned char *member_bytes(const json_t *jwk, const char *name, size_t *len, char *why,
                                   size_t why_len)
{
    const json_t *v = json_object_get(jwk, name);
    if (!json_is_string(v)) {
        snprintf(why, why_len, "\"%s\" is missing or not a string", name);
        return NULL;
    }
    size_t in_len = json_string_length(v);
    unsigned char *out = malloc(base64url_decoded_len(in_len) + 1);
    if (!out) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    long n = base64url_decode(json_string_value(v), in_len, out);
    if (n <= 0) {
        free(out);
        snprintf(why, why_len, "\"%s\" is not base64url (RFC 7515 section 2)", name);
        return NULL;
    }
    *len = (size_t)n;
    return out;
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1)
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *rsa_from_jwk(const json_t *jwk, char *why, size_t why_len)
{
    size_t n_len = 0, e_len = 0;
    unsigned char *n = member_bytes(jwk, "n", &n_len, why, why_len);
    unsigned char *e = n ? member_bytes(jwk, "e", &e_len, why, why_len) : NULL;
    EVP_PKEY *pkey = NULL;
    if (n && e) {
        BIGNUM *bn = BN_bin2bn(n, (int)n_len, NULL);
        BIGNUM *be = BN_bin2bn(e, (int)e_len, NULL);
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
            pkey = from_params("RSA", bld);
        OSSL_PARAM_BLD_free(bld);
        BN_free(bn);
        BN_free(be);
        if (!pkey)
            snprintf(why, why_len, "not a valid RSA public key");
    }
    free(n);
    free(e);
    return pkey;
}

static EVP_PKEY *ec_from_jwk(const json_t *jwk, const char *group, size_t coord, char *why,
                             size_t why_len)
{
    size_t x_len = 0, y_len = 0;
    unsigned char *x = member_bytes(jwk, "x", &x_len, why, why_len);
    unsigned char *y = x ? member_bytes(jwk, "y", &y_len, why, why_len) : NULL;
    EVP_PKEY *pkey = NULL;
    if (x && y) {
        if (x_len != coord || y_len != coord) {
            snprintf(why, why_len, "\"x\" and \"y\" must be %zu bytes each for this curve", coord);
        } else {
            unsigned char point[1 + 2 * 66];
            point[0] = 0x04; /* uncompressed (SEC 1 section 2.3.3) */
            memcpy(point + 1, x, coord);
            memcpy(point + 1 + coord, y, coord);
            OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
            if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
                OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point,
                                                 1 + 2 * coord))
                pkey = from_params("EC", bld);
            OSSL_PARAM_BLD_free(bld);
            if (!pkey)
                snprintf(why, why_len, "\"x\", \"y\" is not a point of curve %s", group);
        }
    }
    free(x);
    free(y);
    return pkey;
}

/* Adds one JWK; returns 1 added, 0 skipped (not for signatures, or unsupported), -1 error. */
static int add_jwk(struct jwk_set *set, const json_t *jwk, unsigned allowed, char *why,
                   size_t why_len)
{
    if (!json_is_object(jwk)) {
        snprintf(why, why_len, "is not an object");
        return -1;
    }
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    if (!kty) {
        snprintf(why, why_len, "has no \"kty\"");
        return -1;
    }
    const json_t *use = json_object_get(jwk, "use");
    if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return 0;
    const json_t *kid_v = json_object_get(jwk, "kid");
    if (kid_v && !json_is_string(kid_v)) {
        snprintf(why, why_len, "\"kid\" must be a string");
        return -1;
    }
    const char *kid = json_string_value(kid_v);
    int pinned = -1;
    const json_t *alg_v = json_object_get(jwk, "alg");
    if (alg_v) {
        if (!json_is_string(alg_v)) {
            snprintf(why, why_len, "\"alg\" must be a string");
            return -1;
        }
        pinned = jwt_alg_parse(slice_make(json_string_value(alg_v), json_string_length(alg_v)));
        if (pinned < 0)
            return 0; /* an algorithm we do not verify (e.g. RSA-OAEP): not ours */
    }

    EVP_PKEY *pkey = NULL;
    if (strcmp(kty, "oct") == 0) {
        size_t len = 0;
        unsigned char *k = member_bytes(jwk, "k", &len, why, why_len);
        if (!k)
            return -1;
        if (len < JWK_OCT_MIN_BYTES) {
            OPENSSL_cleanse(k, len);
            free(k);
            snprintf(why, why_len, "an oct key needs at least %d bytes (RFC 7518 section 3.2)",
                     JWK_OCT_MIN_BYTES);
            return -1;
        }
        if (pinned >= 0 && !(JWT_ALGS_HS & JWT_ALG_BIT(pinned))) {
            free(k);
            snprintf(why, why_len, "\"alg\": \"%s\" cannot be used with an oct key",
                     jwt_alg_name((enum jwt_alg)pinned));
            return -1;
        }
        int rc = jwk_set_add_secret(set, k, len, allowed);
        OPENSSL_cleanse(k, len);
        free(k);
        if (rc < 0) {
            snprintf(why, why_len, "out of memory");
            return -1;
        }
        struct jwk *added = &set->keys[set->count - 1];
        if (pinned >= 0)
            added->algs &= JWT_ALG_BIT(pinned);
        if (kid && !(added->kid = strdup(kid))) {
            snprintf(why, why_len, "out of memory");
            return -1;
        }
        return 1;
    }
    if (strcmp(kty, "RSA") == 0) {
        pkey = rsa_from_jwk(jwk, why, why_len);
    } else if (strcmp(kty, "EC") == 0) {
        const char *crv = json_string_value(json_object_get(jwk, "crv"));
        if (crv && strcmp(crv, "P-256") == 0)
            pkey = ec_from_jwk(jwk, "prime256v1", 32, why, why_len);
        else if (crv && strcmp(crv, "P-384") == 0)
            pkey = ec_from_jwk(jwk, "secp384r1", 48, why, why_len);
        else
            return 0; /* P-521, secp256k1: not verified here */
    } else if (strcmp(kty, "OKP") == 0) {
        const char *crv = json_string_value(json_object_get(jwk, "crv"));
        if (!crv || strcmp(crv, "Ed25519") != 0)
            return 0; /* Ed448, X25519: not verified here */
        size_t len = 0;
        unsigned char *x = member_bytes(jwk, "x", &len, why, why_len);
        if (!x)
            return -1;
        if (len == 32)
            pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, len);
        free(x);
        if (!pkey)
            snprintf(why, why_len, "\"x\" is not a 32-byte Ed25519 public key");
    } else {
        return 0;
    }
    ERR_clear_error();
    if (!pkey)
        return -1;
    return add_pkey(set, pkey, kid, pinned, allowed, why, why_len) < 0 ? -1 : 1;
}

int jwk_set_add_jwks(struct jwk_set *set, const json_t *jwks, unsigned allowed, char *why,
                     size_t why_len)
{
    const json_t *keys = json_object_get(jwks, "keys");
    if (!json_is_array(keys)) {
        snprintf(why, why_len, "is not a JWKS: it needs {\"keys\": [...]} (RFC 7517 section 5)");
        return -1;
    }
    size_t i;
    const json_t *jwk;
    json_array_foreach(keys, i, jwk)
    {
        char inner[200];
        if (add_jwk(set, jwk, allowed, inner, sizeof(inner)) < 0) {
            const char *kid = json_string_value(json_object_get(jwk, "kid"));
            if (kid)
                snprintf(why, why_len, "keys[%zu] (kid \"%.64s\"): %s", i, kid, inner);
            else
                snprintf(why, why_len, "keys[%zu]: %s", i, inner);
            return -1;
        }
    }
    return 0;
}

static bool verify_hmac(const struct jwk *k, const EVP_MD *md, const unsigned char *input,
                        size_t input_len, const unsigned char *sig, size_t sig_len)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (!HMAC(md, k->secret, (int)k->secret_len, input, input_len, mac, &mac_len))
        return false;
    return sig_len == mac_len && CRYPTO_memcmp(mac, sig, mac_len) == 0;
}

/*
 * JOSE's ECDSA signature is r||s, each the curve's size (RFC 7518 section
 * 3.4); OpenSSL wants DER. r and s must lie in [1, n-1] (SEC 1 4.1.4):
 * refusing zero and the order here makes the rule explicit, whatever the
 * library below does.
 */
static unsigned char *ecdsa_to_der(const struct jwk *k, const unsigned char *sig, size_t sig_len,
                                   int *der_len)
{
    size_t coord = k->family == JWK_EC_P256 ? 32 : 48;
    if (sig_len != 2 * coord)
        return NULL;
    BIGNUM *r = BN_bin2bn(sig, (int)coord, NULL);
    BIGNUM *s = BN_bin2bn(sig + coord, (int)coord, NULL);
    unsigned char *der = NULL;
    ECDSA_SIG *es = NULL;
    if (!r || !s || BN_is_zero(r) || BN_is_zero(s) || BN_cmp(r, k->order) >= 0 ||
        BN_cmp(s, k->order) >= 0 || !(es = ECDSA_SIG_new()))
        goto out;
    if (ECDSA_SIG_set0(es, r, s) != 1)
        goto out;
    r = s = NULL; /* owned by es now */
    *der_len = i2d_ECDSA_SIG(es, &der);
    if (*der_len <= 0) {
        OPENSSL_free(der);
        der = NULL;
    }
out:
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return der;
}

bool jwk_verify(const struct jwk *k, enum jwt_alg alg, const unsigned char *input, size_t input_len,
                const unsigned char *sig, size_t sig_len)
{
    if (alg >= JWT_ALG_COUNT || !(k->algs & JWT_ALG_BIT(alg)))
        return false;
    const EVP_MD *md = alg_md(alg);
    if (k->family == JWK_OCT)
        return k->secret && verify_hmac(k, md, input, input_len, sig, sig_len);
    if (!k->pkey)
        return false;

    unsigned char *der = NULL;
    int der_len = 0;
    if (k->family == JWK_EC_P256 || k->family == JWK_EC_P384) {
        der = ecdsa_to_der(k, sig, sig_len, &der_len);
        if (!der)
            return false;
        sig = der;
        sig_len = (size_t)der_len;
    } else if (k->family == JWK_ED25519 && sig_len != 64) {
        return false;
    }

    bool good = false;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    if (!ctx || EVP_DigestVerifyInit(ctx, &pctx, md, NULL, k->pkey) != 1)
        goto out;
    if (alg == JWT_PS256) {
        /* RFC 7518 3.5: MGF1 with the same hash, salt as long as the hash. */
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1)
            goto out;
    } else if (k->family == JWK_RSA) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
            goto out;
    }
    good = EVP_DigestVerify(ctx, sig, sig_len, input, input_len) == 1;
out:
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    /* A failed check leaves entries on the thread's error queue, which TLS reads later. */
    if (!good)
        ERR_clear_error();
    return good;
}
