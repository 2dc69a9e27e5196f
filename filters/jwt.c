/*
 * jwt: the `jwt` filter (SPEC 4, SPEC 7 "jwt" and "jwt cache"). Verifies a
 * compact JWS bearer token with OpenSSL's EVP (filters/jwk.c), checks its
 * claims, sets the consumer from `sub` and copies chosen claims into
 * request headers.
 *
 * create() reads every option and loads the keys (`secret`,
 * `public_key_file` or `jwks_file`; relative paths against the config
 * file's folder), so the request path only decodes the token. Refusals are
 * 401 with RFC 6750's challenge: `Bearer realm="sluice"` when no token
 * came, and the same with `error="invalid_token"` for a token that failed.
 *
 * `jwks_url`: each worker's context fetches the JWKS on its own loop
 * (filters/jwks_fetch.c, through the upstream layer) when it starts, then
 * every `jwks_refresh_s`, and at once on an unknown `kid` (then at most
 * once a minute). A request that arrives before the first keys, or whose
 * kid started a refetch, pauses (FILTER_PAUSE) until the fetch ends; an
 * arena cleanup unlinks it if the exchange ends first. No keys after a
 * failed fetch is 503.
 *
 * Per worker (the filter context): a cache of verified tokens, keyed by
 * the SHA-256 of the token, kept until the token's `exp` (plus leeway);
 * JWT_CACHE_SLOTS entries, direct-mapped, so a new token evicts the one in
 * its slot and the memory is bounded (each entry at most the size of the
 * token's claims, the token itself being at most 8 KiB). Failures are never
 * cached. The context dies with the worker's view of the snapshot, so a
 * reload starts with an empty cache.
 */
#include "filters/jwt.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "base/arena.h"
#include "base/base64url.h"
#include "base/clock.h"
#include "base/file.h"
#include "base/header.h"
#include "base/log.h"
#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"
#include "filters/jwk.h"
#include "filters/jwks_fetch.h"
#include "core/worker.h"

/* Verified tokens remembered per worker and filter (a power of two). */
#define JWT_CACHE_SLOTS 1024
#define JWT_DEFAULT_LEEWAY_S 30
#define JWT_MAX_LEEWAY_S 300
/* RFC 7518 section 3.2: an HMAC key as long as the hash at least; 32 bytes is HS256's. */
#define JWT_MIN_SECRET 32

struct claim_header {
    char *claim;
    char *header;
    size_t header_len;
};

struct jwt_filter {
    unsigned algs; /* the allow-list, JWT_ALG_BIT()s */
    struct jwk_set keys;
    struct jwks_source jwks; /* jwks.url NULL unless keys come from a URL */
    int jwks_refresh_s;
    char *issuer;
    char **audience;
    size_t num_audience;
    int leeway_s;
    char *header; /* where the token is */
    size_t header_len;
    bool bearer; /* the header is Authorization: "Bearer <token>" */
    bool require_exp;
    bool forward_token;
    struct claim_header *claims;
    size_t num_claims;
};

struct cache_entry {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    int64_t until; /* unix seconds: usable while now <= until */
    struct slice sub;
    struct slice values[]; /* one per claims_to_headers entry; base NULL when absent */
};

struct jwt_context;

/* A request paused until a JWKS fetch ends (in the exchange's arena). */
struct jwt_wait {
    struct jwt_wait *prev, *next;
    struct jwt_context *ctx;
    struct exchange *x;
    struct slice token;
    struct event *wake; /* activated when the fetch ends: resumes from the loop */
    bool linked;
};

struct jwt_context {
    const struct jwt_filter *f;
    struct worker *worker;
    /*
     * The cache key's SHA-256, fetched once and reused: OpenSSL's one-shot
     * SHA256() looks the algorithm up and allocates a context per call,
     * which cost more than the rest of a cached request.
     */
    EVP_MD *sha256;
    EVP_MD_CTX *md;
    struct cache_entry *slots[JWT_CACHE_SLOTS];
    unsigned long hits;
    /* jwks_url only */
    struct jwks_fetcher *fetcher;
    struct event *refresh;
    struct jwk_set *keys; /* the last good set; NULL until a fetch succeeded */
    unsigned char keys_digest[SHA256_DIGEST_LENGTH]; /* of the document `keys` came from */
    struct jwt_wait *waiters;
    int64_t kid_fetch_ms; /* when an unknown kid last started a fetch; 0: never */
    int64_t failed_ms;    /* when a fetch last failed while there were no keys */
};

static const char *const status_text[JWT_STATUS_COUNT] = {
    [JWT_OK] = "valid token",
    [JWT_TOO_LARGE] = "the token is larger than 8 KiB",
    [JWT_MALFORMED] = "the token is not a well-formed JWT",
    [JWT_ALG_NONE] = "unsigned tokens (alg none) are refused",
    [JWT_ALG_REFUSED] = "the token's algorithm is not allowed",
    [JWT_CRIT] = "the token requires an extension (crit) that is not supported",
    [JWT_KEY_IN_HEADER] = "keys named in the token (jku, jwk, x5u, x5c) are refused",
    [JWT_UNKNOWN_KID] = "the token's key id (kid) is unknown",
    [JWT_NO_KEY] = "no key may verify the token's algorithm",
    [JWT_BAD_SIGNATURE] = "the token's signature is invalid",
    [JWT_EXPIRED] = "the token has expired",
    [JWT_NOT_YET_VALID] = "the token is not valid yet",
    [JWT_NO_EXP] = "the token has no expiry (exp)",
    [JWT_BAD_ISSUER] = "the token's issuer is not accepted",
    [JWT_BAD_AUDIENCE] = "the token's audience is not accepted",
};

const char *jwt_status_text(enum jwt_status s)
{
    return s < JWT_STATUS_COUNT ? status_text[s] : "invalid token";
}

static const struct slice challenge_missing = SLICE_LIT("Bearer realm=\"sluice\"");
static const struct slice challenge_invalid =
    SLICE_LIT("Bearer realm=\"sluice\", error=\"invalid_token\"");

/* ------------------------------------------------------------------ */
/* verification */

/* Decodes one strict base64url segment into the arena. */
static unsigned char *segment(struct arena *a, const char *s, size_t len, size_t *out_len)
{
    unsigned char *buf = arena_alloc(a, base64url_decoded_len(len) + 1);
    long n = base64url_decode(s, len, buf);
    if (n < 0)
        return NULL;
    *out_len = (size_t)n;
    return buf;
}

/* A JSON object without duplicate member names (RFC 7515 4, RFC 7519 4), or NULL. */
static json_t *json_object_of(const unsigned char *buf, size_t len)
{
    json_error_t jerr;
    json_t *v = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

/*
 * Picks the key for `alg` and `kid` (base NULL: the token has none). A
 * token with a kid needs a key with that kid, except that a set of one key
 * without a kid (a `secret` or a PEM file) serves any kid. A token without
 * one needs exactly one key of the set that may verify `alg`: trying every
 * key would let one token cost as many verifications as there are keys.
 */
static enum jwt_status select_key(const struct jwk_set *set, enum jwt_alg alg, struct slice kid,
                                  const struct jwk **out)
{
    if (set->count == 1 && !set->keys[0].kid) {
        *out = &set->keys[0];
        return set->keys[0].algs & JWT_ALG_BIT(alg) ? JWT_OK : JWT_NO_KEY;
    }
    if (kid.base) {
        for (size_t i = 0; i < set->count; i++) {
            const struct jwk *k = &set->keys[i];
            if (!k->kid || !slice_eq(kid, slice_cstr(k->kid)))
                continue;
            if (!(k->algs & JWT_ALG_BIT(alg)))
                continue; /* a kid may be shared by keys of different types */
            *out = k;
            return JWT_OK;
        }
        for (size_t i = 0; i < set->count; i++)
            if (set->keys[i].kid && slice_eq(kid, slice_cstr(set->keys[i].kid)))
                return JWT_NO_KEY;
        return JWT_UNKNOWN_KID;
    }
    const struct jwk *found = NULL;
    for (size_t i = 0; i < set->count; i++) {
        if (!(set->keys[i].algs & JWT_ALG_BIT(alg)))
            continue;
        if (found)
            return JWT_UNKNOWN_KID; /* ambiguous: the token must name its key */
        found = &set->keys[i];
    }
    if (!found)
        return JWT_NO_KEY;
    *out = found;
    return JWT_OK;
}

/* The JOSE header rules; fills *alg and *kid. */
static enum jwt_status check_header(const struct jwt_filter *f, const json_t *h, enum jwt_alg *alg,
                                    struct slice *kid)
{
    const json_t *a = json_object_get(h, "alg");
    if (!json_is_string(a))
        return JWT_MALFORMED;
    struct slice name = slice_make(json_string_value(a), json_string_length(a));
    if (name.len == 4 && strncasecmp(name.base, "none", 4) == 0)
        return JWT_ALG_NONE;
    int parsed = jwt_alg_parse(name);
    if (parsed < 0 || !(f->algs & JWT_ALG_BIT(parsed)))
        return JWT_ALG_REFUSED;
    *alg = (enum jwt_alg)parsed;
    /*
     * RFC 7515 4.1.11: a recipient must refuse a token whose crit lists an
     * extension it does not understand; this filter understands none.
     */
    if (json_object_get(h, "crit"))
        return JWT_CRIT;
    /*
     * Keys are the configuration's, never the token's: a token that names
     * a key (RFC 7515 4.1.2 to 4.1.6) is refused outright rather than having
     * the member ignored, so that no later change can start trusting it.
     */
    static const char *const key_members[] = {"jku", "jwk", "x5u", "x5c"};
    for (size_t i = 0; i < sizeof(key_members) / sizeof(key_members[0]); i++)
        if (json_object_get(h, key_members[i]))
            return JWT_KEY_IN_HEADER;
    const json_t *k = json_object_get(h, "kid");
    if (k && !json_is_string(k))
        return JWT_MALFORMED;
    *kid = k ? slice_make(json_string_value(k), json_string_length(k)) : slice_make(NULL, 0);
    return JWT_OK;
}

static bool audience_ok(const struct jwt_filter *f, const json_t *aud)
{
    if (json_is_string(aud)) {
        for (size_t i = 0; i < f->num_audience; i++)
            if (strcmp(json_string_value(aud), f->audience[i]) == 0)
                return true;
        return false;
    }
    if (!json_is_array(aud))
        return false;
    size_t i;
    const json_t *v;
    json_array_foreach(aud, i, v)
    {
        if (json_is_string(v) && audience_ok(f, v))
            return true;
    }
    return false;
}

/* The registered claims of RFC 7519 4.1 that the options ask about. */
static enum jwt_status check_claims(const struct jwt_filter *f, const json_t *p, int64_t now)
{
    const json_t *exp = json_object_get(p, "exp");
    if (exp) {
        if (!json_is_number(exp))
            return JWT_MALFORMED;
        if ((double)now > json_number_value(exp) + f->leeway_s)
            return JWT_EXPIRED;
    } else if (f->require_exp) {
        return JWT_NO_EXP;
    }
    const json_t *nbf = json_object_get(p, "nbf");
    if (nbf) {
        if (!json_is_number(nbf))
            return JWT_MALFORMED;
        if ((double)now + f->leeway_s < json_number_value(nbf))
            return JWT_NOT_YET_VALID;
    }
    if (f->issuer) {
        const json_t *iss = json_object_get(p, "iss");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), f->issuer) != 0)
            return JWT_BAD_ISSUER;
    }
    if (f->num_audience && !audience_ok(f, json_object_get(p, "aud")))
        return JWT_BAD_AUDIENCE;
    return JWT_OK;
}

enum jwt_status jwt_check(const struct jwt_filter *f, const struct jwk_set *keys,
                          struct slice token, int64_t now, struct arena *a, json_t **payload)
{
    *payload = NULL;
    if (!keys)
        keys = &f->keys;
    if (token.len > JWT_MAX_TOKEN)
        return JWT_TOO_LARGE;
    const char *s = token.base, *end = token.base + token.len;
    const char *dot1 = memchr(s, '.', token.len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)) || dot2 + 1 == end)
        return JWT_MALFORMED;

    size_t h_len = 0, p_len = 0, sig_len = 0;
    unsigned char *h_buf = segment(a, s, (size_t)(dot1 - s), &h_len);
    unsigned char *p_buf = segment(a, dot1 + 1, (size_t)(dot2 - dot1 - 1), &p_len);
    unsigned char *sig = segment(a, dot2 + 1, (size_t)(end - dot2 - 1), &sig_len);
    if (!h_buf || !p_buf || !sig)
        return JWT_MALFORMED;

    json_t *header = json_object_of(h_buf, h_len);
    if (!header)
        return JWT_MALFORMED;
    enum jwt_alg alg = JWT_HS256;
    struct slice kid = {0};
    enum jwt_status st = check_header(f, header, &alg, &kid);
    const struct jwk *key = NULL;
    if (st == JWT_OK)
        st = select_key(keys, alg, kid, &key);
    /* The signing input is the first two segments as sent (RFC 7515 5.2 step 8). */
    if (st == JWT_OK &&
        !jwk_verify(key, alg, (const unsigned char *)s, (size_t)(dot2 - s), sig, sig_len))
        st = JWT_BAD_SIGNATURE;
    json_decref(header);
    if (st != JWT_OK)
        return st;

    json_t *claims = json_object_of(p_buf, p_len);
    if (!claims)
        return JWT_MALFORMED;
    st = check_claims(f, claims, now);
    if (st != JWT_OK) {
        json_decref(claims);
        return st;
    }
    *payload = claims;
    return JWT_OK;
}

/* ------------------------------------------------------------------ */
/* options */

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void jwt_destroy(const void *instance)
{
    struct jwt_filter *f = (struct jwt_filter *)instance;
    if (!f)
        return;
    jwk_set_clear(&f->keys);
    jwks_source_clear(&f->jwks);
    free(f->issuer);
    free_strings(f->audience, f->num_audience);
    free(f->header);
    for (size_t i = 0; i < f->num_claims; i++) {
        free(f->claims[i].claim);
        free(f->claims[i].header);
    }
    free(f->claims);
    free(f);
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort(); /* loading aborts when out of memory (config_resolve_path does too) */
    return d;
}

static int parse_algorithms(struct jwt_filter *f, const json_t *v, struct config_error *err)
{
    static const char example[] = "e.g. [\"RS256\"]; one or more of HS256, HS384, HS512, RS256, "
                                  "RS384, RS512, PS256, ES256, ES384, EdDSA";
    if (!v) {
        config_error_add(err, ".algorithms", "is required: the algorithms to accept, %s", example);
        return -1;
    }
    if (!json_is_array(v) || json_array_size(v) == 0) {
        config_error_add(err, ".algorithms", "must be a non-empty array of names, %s", example);
        return -1;
    }
    int rc = 0;
    size_t i;
    const json_t *a;
    json_array_foreach(v, i, a)
    {
        char sub[48];
        snprintf(sub, sizeof(sub), ".algorithms[%zu]", i);
        struct slice name = json_is_string(a)
                                ? slice_make(json_string_value(a), json_string_length(a))
                                : slice_make(NULL, 0);
        if (name.base && name.len == 4 && strncasecmp(name.base, "none", 4) == 0) {
            config_error_add(err, sub, "\"none\" is never allowed: tokens must be signed");
            rc = -1;
            continue;
        }
        int alg = name.base ? jwt_alg_parse(name) : -1;
        if (alg < 0) {
            config_error_add(err, sub,
                             "unknown algorithm; use one of HS256, HS384, HS512, RS256, "
                             "RS384, RS512, PS256, ES256, ES384, EdDSA");
            rc = -1;
            continue;
        }
        f->algs |= JWT_ALG_BIT(alg);
    }
    return rc;
}

static json_t *load_json_file(const char *path, char *why, size_t why_len)
{
    json_error_t jerr;
    FILE *in = file_open_regular(path);
    if (!in) {
        snprintf(why, why_len, "cannot load: %s", file_strerror(errno));
        return NULL;
    }
    json_t *v = json_loadf(in, JSON_REJECT_DUPLICATES, &jerr);
    fclose(in);
    if (!v)
        snprintf(why, why_len, "cannot load: %s (line %d)", jerr.text, jerr.line);
    return v;
}

static int parse_keys(struct jwt_filter *f, const json_t *options, struct config_error *err)
{
    static const char *const sources[] = {"secret", "public_key_file", "jwks_file", "jwks_url"};
    const char *given = NULL;
    int n = 0;
    for (size_t i = 0; i < 4; i++)
        if (json_object_get(options, sources[i])) {
            n++;
            if (!given)
                given = sources[i];
        }
    if (n != 1) {
        config_error_add(err, "",
                         n ? "give exactly one of secret, public_key_file, jwks_file, jwks_url"
                           : "needs a key: one of secret, public_key_file, jwks_file, jwks_url");
        return -1;
    }
    char sub[32], why[300];
    snprintf(sub, sizeof(sub), ".%s", given);
    const char *value = config_get_string(err, options, given, true, true);
    if (!value)
        return -1;
    if (strcmp(given, "secret") == 0) {
        size_t len = json_string_length(json_object_get(options, "secret"));
        if (len < JWT_MIN_SECRET) {
            config_error_add(err, sub, "must be at least %d bytes (RFC 7518 section 3.2)",
                             JWT_MIN_SECRET);
            return -1;
        }
        if (!(f->algs & JWT_ALGS_HS)) {
            config_error_add(err, sub,
                             "a secret verifies HS256/HS384/HS512 only, and "
                             "\"algorithms\" allows none of them");
            return -1;
        }
        if (jwk_set_add_secret(&f->keys, value, len, f->algs) < 0)
            abort();
        return 0;
    }
    if (strcmp(given, "jwks_url") == 0) {
        if (jwks_source_init(&f->jwks, value, why, sizeof(why)) < 0) {
            config_error_add(err, sub, "%s", why);
            return -1;
        }
        return 0;
    }
    char *path = config_resolve_path(err, value);
    int rc = 0;
    if (strcmp(given, "public_key_file") == 0) {
        if (jwk_set_add_pem_file(&f->keys, path, f->algs, why, sizeof(why)) < 0) {
            config_error_add(err, sub, "%s: %s", value, why);
            rc = -1;
        } else if (!f->keys.keys[0].algs) {
            config_error_add(err, sub,
                             "%s: this key cannot verify any algorithm of "
                             "\"algorithms\" (each key type pins its family)",
                             value);
            rc = -1;
        }
    } else {
        json_t *jwks = load_json_file(path, why, sizeof(why));
        if (!jwks || jwk_set_add_jwks(&f->keys, jwks, f->algs, why, sizeof(why)) < 0) {
            config_error_add(err, sub, "%s: %s", value, why);
            rc = -1;
        } else {
            unsigned any = 0;
            for (size_t i = 0; i < f->keys.count; i++)
                any |= f->keys.keys[i].algs;
            if (!any) {
                config_error_add(err, sub,
                                 "%s: no key of this JWKS can verify an algorithm of "
                                 "\"algorithms\"",
                                 value);
                rc = -1;
            }
        }
        json_decref(jwks);
    }
    free(path);
    return rc;
}

static int parse_audience(struct jwt_filter *f, const json_t *v, struct config_error *err)
{
    if (!v)
        return 0;
    if (json_is_string(v) && json_string_length(v) > 0) {
        f->audience = calloc(1, sizeof(char *));
        if (!f->audience)
            abort();
        f->audience[f->num_audience++] = xstrdup(json_string_value(v));
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0) {
        config_error_add(err, ".audience",
                         "must be a string or a non-empty array of strings, e.g. \"api\"");
        return -1;
    }
    f->audience = calloc(json_array_size(v), sizeof(char *));
    if (!f->audience)
        abort();
    int rc = 0;
    size_t i;
    const json_t *a;
    json_array_foreach(v, i, a)
    {
        if (!json_is_string(a) || json_string_length(a) == 0) {
            config_error_add(err, ".audience", "[%zu] must be a non-empty string", i);
            rc = -1;
            continue;
        }
        f->audience[f->num_audience++] = xstrdup(json_string_value(a));
    }
    return rc;
}

static int parse_claims(struct jwt_filter *f, const json_t *v, struct config_error *err)
{
    if (!v)
        return 0;
    if (!json_is_object(v)) {
        config_error_add(
            err, ".claims_to_headers",
            "must be an object of claim to header name, e.g. {\"sub\": \"x-user-id\"}");
        return -1;
    }
    f->claims = calloc(json_object_size(v) + 1, sizeof(*f->claims));
    if (!f->claims)
        abort();
    int rc = 0;
    const char *claim;
    const json_t *h;
    json_object_foreach((json_t *)v, claim, h)
    {
        char step[256], sub[300];
        config_path_member(step, sizeof(step), claim);
        snprintf(sub, sizeof(sub), ".claims_to_headers%s", step);
        const char *name = json_string_value(h);
        if (!name || !config_is_token(name, strlen(name))) {
            config_error_add(err, sub,
                             "must be a header name (RFC 9110 token), e.g. \"x-user-id\"");
            rc = -1;
            continue;
        }
        if (strcasecmp(name, "content-length") == 0 || strcasecmp(name, "transfer-encoding") == 0 ||
            strcasecmp(name, "host") == 0 || strcasecmp(name, f->header) == 0) {
            config_error_add(err, sub, "%s cannot be set from a claim; choose another header",
                             name);
            rc = -1;
            continue;
        }
        struct claim_header *c = &f->claims[f->num_claims++];
        c->claim = xstrdup(claim);
        c->header = xstrdup(name);
        c->header_len = strlen(name);
    }
    return rc;
}

static const void *jwt_create(const json_t *options, struct config_error *err)
{
    static const char *const keys[] = {
        "algorithms",  "secret",        "public_key_file", "jwks_file", "jwks_url",
        "issuer",      "audience",      "leeway_s",        "header",    "claims_to_headers",
        "require_exp", "forward_token", "jwks_refresh_s",  NULL};
    struct jwt_filter *f = calloc(1, sizeof(*f));
    if (!f) {
        config_error_add(err, "", "out of memory");
        return NULL;
    }
    f->leeway_s = JWT_DEFAULT_LEEWAY_S;
    f->require_exp = true;
    f->forward_token = true;
    f->jwks_refresh_s = 300;
    int rc = config_check_keys(err, options, keys) ? -1 : 0;

    const char *header = config_get_string(err, options, "header", false, true);
    if (header && !config_is_token(header, strlen(header))) {
        config_error_add(err, ".header",
                         "must be a header name (RFC 9110 token), e.g. "
                         "\"x-jwt\"");
        rc = -1;
        header = NULL;
    }
    f->header = xstrdup(header ? header : "authorization");
    f->header_len = strlen(f->header);
    f->bearer = strcasecmp(f->header, "authorization") == 0;

    if (parse_algorithms(f, json_object_get(options, "algorithms"), err) < 0)
        rc = -1;
    else if (parse_keys(f, options, err) < 0)
        rc = -1;
    const char *issuer = config_get_string(err, options, "issuer", false, true);
    if (issuer)
        f->issuer = xstrdup(issuer);
    else if (json_object_get(options, "issuer"))
        rc = -1;
    if (parse_audience(f, json_object_get(options, "audience"), err) < 0)
        rc = -1;
    long long leeway = f->leeway_s;
    if (!config_get_llong(err, options, "leeway_s", 0, JWT_MAX_LEEWAY_S, &leeway))
        rc = -1;
    f->leeway_s = (int)leeway;
    long long refresh = f->jwks_refresh_s;
    if (!config_get_llong(err, options, "jwks_refresh_s", 1, 86400, &refresh))
        rc = -1;
    f->jwks_refresh_s = (int)refresh;
    if (json_object_get(options, "jwks_refresh_s") && !json_object_get(options, "jwks_url")) {
        config_error_add(err, ".jwks_refresh_s", "applies to jwks_url only; remove it");
        rc = -1;
    }
    if (!config_get_bool(err, options, "require_exp", &f->require_exp) ||
        !config_get_bool(err, options, "forward_token", &f->forward_token))
        rc = -1;
    if (parse_claims(f, json_object_get(options, "claims_to_headers"), err) < 0)
        rc = -1;
    if (rc < 0) {
        jwt_destroy(f);
        return NULL;
    }
    return f;
}

/* ------------------------------------------------------------------ */
/* per-worker cache */

static void cache_clear(struct jwt_context *ctx)
{
    for (size_t i = 0; i < JWT_CACHE_SLOTS; i++) {
        free(ctx->slots[i]);
        ctx->slots[i] = NULL;
    }
}

static void keys_free(struct jwk_set *set)
{
    if (set) {
        jwk_set_clear(set);
        free(set);
    }
}

/* Every request waiting for the fetch continues from the loop (on_wake). */
static void wake_all(struct jwt_context *ctx)
{
    while (ctx->waiters) {
        struct jwt_wait *w = ctx->waiters;
        ctx->waiters = w->next;
        if (ctx->waiters)
            ctx->waiters->prev = NULL;
        w->linked = false;
        w->prev = w->next = NULL;
        event_active(w->wake, EV_TIMEOUT, 1);
    }
}

/*
 * A fetch ended. A document identical to the one in use changes nothing;
 * a new one replaces the keys and empties the cache (a key may have been
 * withdrawn); a failure keeps the keys in use. Either way the waiting
 * requests go on.
 */
static void on_jwks(void *owner, const char *body, size_t len)
{
    struct jwt_context *ctx = owner;
    const struct jwt_filter *f = ctx->f;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    if (body)
        SHA256((const unsigned char *)body, len, digest);
    if (body && !(ctx->keys && memcmp(digest, ctx->keys_digest, sizeof(digest)) == 0)) {
        json_error_t jerr;
        char why[300] = "";
        json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
        struct jwk_set *set = calloc(1, sizeof(*set));
        if (!doc)
            snprintf(why, sizeof(why), "%s", jerr.text);
        if (!doc || !set || jwk_set_add_jwks(set, doc, f->algs, why, sizeof(why)) < 0) {
            log_warn("jwt: %s is not a usable JWKS: %s", f->jwks.url, why);
            keys_free(set);
        } else {
            log_info("jwt: %zu keys from %s", set->count, f->jwks.url);
            keys_free(ctx->keys);
            ctx->keys = set;
            memcpy(ctx->keys_digest, digest, sizeof(digest));
            cache_clear(ctx);
        }
        json_decref(doc);
    }
    ctx->failed_ms = ctx->keys ? 0 : clock_mono_ms();
    wake_all(ctx);
}

static void on_refresh(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct jwt_context *ctx = arg;
    jwks_fetcher_start(ctx->fetcher);
}

/*
 * With jwks_url, each worker fetches the keys on its own loop when it
 * starts using the snapshot, then every jwks_refresh_s. Without a worker
 * (unit tests) no fetch is possible: requests are answered 503.
 */
static void *jwt_context_new(const void *instance, struct worker *w)
{
    const struct jwt_filter *f = instance;
    struct jwt_context *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->f = f;
    ctx->worker = w;
    ctx->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    ctx->md = EVP_MD_CTX_new();
    if (!f->jwks.url || !w)
        return ctx;
    ctx->fetcher = jwks_fetcher_new(&f->jwks, w->base, w->dns, on_jwks, ctx);
    ctx->refresh = event_new(w->base, -1, EV_PERSIST, on_refresh, ctx);
    if (!ctx->fetcher || !ctx->refresh) {
        log_error("jwt: cannot start fetching %s: out of memory", f->jwks.url);
        jwks_fetcher_free(ctx->fetcher);
        ctx->fetcher = NULL;
        return ctx;
    }
    const struct timeval every = {f->jwks_refresh_s, 0};
    event_add(ctx->refresh, &every);
    jwks_fetcher_start(ctx->fetcher);
    return ctx;
}

/* No request waits any more: each holds the worker's view, which outlives them. */
static void jwt_context_free(const void *instance, void *context)
{
    (void)instance;
    struct jwt_context *ctx = context;
    if (!ctx)
        return;
    cache_clear(ctx);
    jwks_fetcher_free(ctx->fetcher);
    if (ctx->refresh)
        event_free(ctx->refresh);
    keys_free(ctx->keys);
    EVP_MD_CTX_free(ctx->md);
    EVP_MD_free(ctx->sha256);
    free(ctx);
}

/* The token's SHA-256, the cache's key; the context's reusable digest when it has one. */
static void token_digest(struct jwt_context *ctx, struct slice token,
                         unsigned char out[SHA256_DIGEST_LENGTH])
{
    if (ctx->sha256 && ctx->md && EVP_DigestInit_ex(ctx->md, ctx->sha256, NULL) == 1 &&
        EVP_DigestUpdate(ctx->md, token.base, token.len) == 1 &&
        EVP_DigestFinal_ex(ctx->md, out, NULL) == 1)
        return;
    SHA256((const unsigned char *)token.base, token.len, out);
}

static size_t slot_of(const unsigned char *digest)
{
    return ((size_t)digest[0] | (size_t)digest[1] << 8) & (JWT_CACHE_SLOTS - 1);
}

static const struct cache_entry *cache_find(struct jwt_context *ctx, const unsigned char *digest,
                                            int64_t now)
{
    struct cache_entry *e = ctx->slots[slot_of(digest)];
    if (!e || memcmp(e->digest, digest, sizeof(e->digest)) != 0)
        return NULL;
    if (now > e->until) {
        ctx->slots[slot_of(digest)] = NULL;
        free(e);
        return NULL;
    }
    return e;
}

/* ------------------------------------------------------------------ */
/* the request */

/* The token's text from the request, or base NULL when none was sent. */
static struct slice find_token(const struct jwt_filter *f, const struct exchange *x, bool *several)
{
    struct slice none = {NULL, 0};
    struct slice name = slice_make(f->header, f->header_len);
    *several = header_count(&x->req_headers, name) > 1;
    const struct slice *v = header_get(&x->req_headers, name);
    if (!v)
        return none;
    struct slice t = *v;
    if (f->bearer) {
        /* RFC 6750 2.1: "Bearer" 1*SP token68; the scheme is case-insensitive. */
        if (t.len < 7 || strncasecmp(t.base, "Bearer", 6) != 0 || t.base[6] != ' ')
            return none;
        t.base += 7;
        t.len -= 7;
    }
    while (t.len && header_is_ows(t.base[0])) {
        t.base++;
        t.len--;
    }
    while (t.len && header_is_ows(t.base[t.len - 1]))
        t.len--;
    return t.len ? t : none;
}

static enum filter_verdict refuse(struct exchange *x, struct slice challenge, const char *message)
{
    exchange_respond_error(x, 401, message);
    header_set(&x->resp_headers, SLICE_LIT("www-authenticate"), challenge);
    return FILTER_RESPOND;
}

/* A claim's value as header text, or base NULL (absent, structured, or with control bytes). */
static struct slice claim_text(struct arena *a, const json_t *v)
{
    char buf[64];
    struct slice none = {NULL, 0};
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                return none; /* would split or corrupt the header field */
        return arena_slice_dup(a, slice_make(s, len));
    }
    if (json_is_integer(v))
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, sizeof(buf), "%s", json_is_true(v) ? "true" : "false");
    else
        return none;
    return arena_slice_dup(a, slice_cstr(buf));
}

/*
 * What a verified token gives the exchange: the consumer, the claim
 * headers (replacing whatever the client sent under those names), and the
 * token itself removed when it must not reach the upstream.
 */
static void apply(const struct jwt_filter *f, struct exchange *x, struct slice sub,
                  const struct slice *values)
{
    if (sub.base)
        x->consumer = sub;
    for (size_t i = 0; i < f->num_claims; i++) {
        struct slice name = slice_make(f->claims[i].header, f->claims[i].header_len);
        header_remove(&x->req_headers, name);
        if (values[i].base)
            header_add(&x->req_headers, name, values[i]);
    }
    if (!f->forward_token)
        header_remove(&x->req_headers, slice_make(f->header, f->header_len));
}

/* Copies the result of a verification into the cache (malloc'd: it outlives the exchange). */
static void cache_store(struct jwt_context *ctx, const unsigned char *digest, int64_t until,
                        struct slice sub, const struct slice *values)
{
    const struct jwt_filter *f = ctx->f;
    size_t size = sizeof(struct cache_entry) + f->num_claims * sizeof(struct slice) + sub.len;
    for (size_t i = 0; i < f->num_claims; i++)
        size += values[i].len;
    struct cache_entry *e = malloc(size);
    if (!e)
        return; /* the cache is an optimisation */
    memcpy(e->digest, digest, sizeof(e->digest));
    e->until = until;
    char *p = (char *)&e->values[f->num_claims];
    e->sub = slice_make(sub.base ? p : NULL, sub.len);
    if (sub.len)
        memcpy(p, sub.base, sub.len);
    p += sub.len;
    for (size_t i = 0; i < f->num_claims; i++) {
        e->values[i] = slice_make(values[i].base ? p : NULL, values[i].len);
        if (values[i].len)
            memcpy(p, values[i].base, values[i].len);
        p += values[i].len;
    }
    size_t slot = slot_of(digest);
    free(ctx->slots[slot]);
    ctx->slots[slot] = e;
}

/*
 * Applies the outcome `st` of a verification (with its claims, which this
 * takes over): on failure answers 401; on success caches the result and
 * applies it. `digest` is the token's SHA-256, for the cache (ctx may be
 * NULL). Returns CONTINUE or RESPOND.
 */
static enum filter_verdict conclude(const struct jwt_filter *f, struct jwt_context *ctx,
                                    struct exchange *x, const unsigned char *digest, int64_t now,
                                    enum jwt_status st, json_t *claims)
{
    if (st != JWT_OK)
        return refuse(x, challenge_invalid, jwt_status_text(st));

    struct slice sub = claim_text(x->arena, json_object_get(claims, "sub"));
    if (!json_is_string(json_object_get(claims, "sub")))
        sub = slice_make(NULL, 0);
    struct slice *values = arena_calloc(x->arena, (f->num_claims + 1) * sizeof(*values));
    for (size_t i = 0; i < f->num_claims; i++)
        values[i] = claim_text(x->arena, json_object_get(claims, f->claims[i].claim));
    const json_t *exp = json_object_get(claims, "exp");
    /* Cached until exp (with the leeway that accepts it); never a token without one. */
    if (ctx && exp) {
        double until = json_number_value(exp) + f->leeway_s;
        if (until > (double)now)
            cache_store(ctx, digest, until > 9e15 ? (int64_t)9e15 : (int64_t)until, sub, values);
    }
    json_decref(claims);
    apply(f, x, sub, values);
    return FILTER_CONTINUE;
}

static enum filter_verdict verify_and_apply(const struct jwt_filter *f, struct jwt_context *ctx,
                                            const struct jwk_set *keys, struct exchange *x,
                                            struct slice token, const unsigned char *digest,
                                            int64_t now)
{
    json_t *claims = NULL;
    enum jwt_status st = jwt_check(f, keys, token, now, x->arena, &claims);
    return conclude(f, ctx, x, digest, now, st, claims);
}

static enum filter_verdict unavailable(struct exchange *x)
{
    exchange_respond_error(x, 503, "the token keys (jwks_url) are not available");
    return FILTER_RESPOND;
}

/* The fetch ended: verify with what it gave, and let the pipeline go on. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct jwt_wait *w = arg;
    struct jwt_context *ctx = w->ctx;
    struct exchange *x = w->x;
    enum filter_verdict v;
    if (!ctx->keys) {
        v = unavailable(x);
    } else {
        unsigned char digest[SHA256_DIGEST_LENGTH];
        token_digest(ctx, w->token, digest);
        v = verify_and_apply(ctx->f, ctx, ctx->keys, x, w->token, digest,
                             (int64_t)clock_real().tv_sec);
    }
    exchange_resume(x, v); /* may free x, its arena and `w`: nothing after this */
}

/* The exchange ended (or resumed and ended): forget the waiter. */
static void wait_cleanup(void *arg)
{
    struct jwt_wait *w = arg;
    if (w->linked) {
        if (w->prev)
            w->prev->next = w->next;
        else
            w->ctx->waiters = w->next;
        if (w->next)
            w->next->prev = w->prev;
        w->linked = false;
    }
    event_free(w->wake);
}

/* Pauses the exchange until the fetch in flight ends (the pause contract of core/filter.h). */
static enum filter_verdict wait_for_keys(struct jwt_context *ctx, struct exchange *x,
                                         struct slice token)
{
    struct jwt_wait *w = arena_calloc(x->arena, sizeof(*w));
    w->wake = event_new(ctx->worker->base, -1, 0, on_wake, w);
    if (!w->wake)
        return unavailable(x);
    w->ctx = ctx;
    w->x = x;
    w->token = token;
    w->next = ctx->waiters;
    if (ctx->waiters)
        ctx->waiters->prev = w;
    ctx->waiters = w;
    w->linked = true;
    arena_cleanup_add(x->arena, wait_cleanup, w);
    return FILTER_PAUSE;
}

/*
 * An unknown kid may be a key the issuer added since the last fetch: the
 * first time, fetch at once; then at most once a minute per worker, so a
 * stream of made-up kids cannot turn into a stream of fetches. A fetch
 * already in flight is joined.
 */
static bool refetch_for_kid(struct jwt_context *ctx)
{
    if (jwks_fetcher_busy(ctx->fetcher))
        return true;
    int64_t now = clock_mono_ms();
    if (ctx->kid_fetch_ms && now - ctx->kid_fetch_ms < 60000)
        return false;
    ctx->kid_fetch_ms = now;
    return jwks_fetcher_start(ctx->fetcher);
}

/* jwks_url: the keys may still be on their way, or a kid may call for a refetch. */
static enum filter_verdict on_request_jwks(const struct jwt_filter *f, struct jwt_context *ctx,
                                           struct exchange *x, struct slice token,
                                           const unsigned char *digest, int64_t now)
{
    if (!ctx || !ctx->fetcher)
        return unavailable(x);
    if (!ctx->keys) {
        if (!jwks_fetcher_busy(ctx->fetcher)) {
            /* The last fetch failed: one more try per second, not one per request. */
            if (ctx->failed_ms && clock_mono_ms() - ctx->failed_ms < 1000)
                return unavailable(x);
            if (!jwks_fetcher_start(ctx->fetcher))
                return unavailable(x);
        }
        return wait_for_keys(ctx, x, token);
    }
    json_t *claims = NULL;
    enum jwt_status st = jwt_check(f, ctx->keys, token, now, x->arena, &claims);
    if (st == JWT_UNKNOWN_KID && refetch_for_kid(ctx))
        return wait_for_keys(ctx, x, token);
    return conclude(f, ctx, x, digest, now, st, claims);
}

static enum filter_verdict jwt_on_request(const void *instance, void *context, struct exchange *x,
                                          void *state)
{
    (void)state;
    const struct jwt_filter *f = instance;
    struct jwt_context *ctx = context;
    bool several = false;
    struct slice token = find_token(f, x, &several);
    if (several)
        return refuse(x, challenge_invalid, "more than one token was sent");
    if (!token.base)
        return refuse(x, challenge_missing, "a bearer token is required");
    if (token.len > JWT_MAX_TOKEN)
        return refuse(x, challenge_invalid, jwt_status_text(JWT_TOO_LARGE));

    int64_t now = (int64_t)clock_real().tv_sec;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    if (ctx) {
        token_digest(ctx, token, digest);
        const struct cache_entry *e = cache_find(ctx, digest, now);
        if (e) {
            /* Copied: the entry may be evicted while the exchange still runs. */
            struct slice sub = e->sub.base ? arena_slice_dup(x->arena, e->sub) : e->sub;
            struct slice *values = arena_calloc(x->arena, (f->num_claims + 1) * sizeof(*values));
            for (size_t i = 0; i < f->num_claims; i++)
                if (e->values[i].base)
                    values[i] = arena_slice_dup(x->arena, e->values[i]);
            apply(f, x, sub, values);
            ctx->hits++;
            return FILTER_CONTINUE;
        }
    }
    if (f->jwks.url)
        return on_request_jwks(f, ctx, x, token, digest, now);
    return verify_and_apply(f, ctx, NULL, x, token, digest, now);
}

unsigned long jwt_cache_hits(const void *context)
{
    return context ? ((const struct jwt_context *)context)->hits : 0;
}

const struct filter_type filter_jwt = {
    .name = "jwt",
    .state_size = 0,
    .create = jwt_create,
    .destroy = jwt_destroy,
    .context_new = jwt_context_new,
    .context_free = jwt_context_free,
    .on_request = jwt_on_request,
};
