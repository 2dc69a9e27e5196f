/*
 * api_key: the `api_key` filter (SPEC 4, SPEC 7). A request must carry one
 * of the configured keys, in a header (default x-api-key) or, when `query`
 * names a parameter, in the query string; the key's consumer name becomes
 * the exchange's consumer (${consumer}, the access log, rate_limit's
 * `consumer` key). A missing or unknown key gets 401 with
 * `WWW-Authenticate: ApiKey header="<header>"`.
 *
 * The key never reaches the upstream: the header is removed and the query
 * parameter cut out of the forwarded query (the other parameters keep their
 * order), whether the request passes or not.
 *
 * Constant time: keys are stored only as HMAC-SHA256 digests under a random
 * key drawn at create time (auth_mac.h). A presented key is digested the
 * same way; the digest picks a slot of an open-addressing table (a keyed
 * hash, so the probe sequence tells an attacker nothing about the stored
 * keys) and every candidate is compared with CRYPTO_memcmp over the whole
 * 32 bytes, never with an early exit on the first differing byte.
 *
 * Everything is built in create(); the request path allocates nothing but,
 * when a query key was cut out, the rebuilt query and the decoded key (in
 * the exchange's arena).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "filters/auth_mac.h"
#include "base/arena.h"
#include "base/file.h"
#include "base/header.h"
#include "base/slice.h"
#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"

struct api_key_entry {
    uint8_t digest[AUTH_MAC_LEN];
    char *consumer; /* malloc'd */
    size_t consumer_len;
};

struct api_key_filter {
    char *header; /* lower-case field name, malloc'd */
    size_t header_len;
    char *query; /* parameter name or NULL, malloc'd */
    size_t query_len;
    char *challenge; /* the WWW-Authenticate value, malloc'd */
    size_t challenge_len;
    uint8_t mac_key[AUTH_MAC_KEY_LEN];
    struct api_key_entry *entries;
    size_t count;
    uint32_t *slots; /* entry index + 1, 0 when empty; power-of-two size */
    size_t mask;
};

static void api_key_destroy(const void *instance)
{
    struct api_key_filter *f = (struct api_key_filter *)instance;
    if (!f)
        return;
    for (size_t i = 0; i < f->count; i++)
        free(f->entries[i].consumer);
    free(f->entries);
    free(f->slots);
    free(f->header);
    free(f->query);
    free(f->challenge);
    OPENSSL_cleanse(f->mac_key, sizeof(f->mac_key));
    free(f);
}

/* A consumer name ends up in header values and log lines: printable, no control characters. */
static bool printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* The first 8 digest bytes pick the slot; they are uniform under the secret MAC key. */
static size_t slot_of(const uint8_t *digest, size_t mask)
{
    uint64_t h;
    memcpy(&h, digest, sizeof(h));
    return (size_t)h & mask;
}

/*
 * Adds the keys of object `keys` (from the config or a keys_file). Errors
 * are reported at `where` followed by the member step, e.g.
 * `.keys["abc"]` or `.keys_file: "k.json" ["abc"]`.
 */
static int add_keys(struct api_key_filter *f, const json_t *keys, struct auth_mac *mac,
                    struct config_error *err, const char *where)
{
    char step[256], sub[512];
    int rc = 0;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)keys, key, value)
    {
        config_path_member(step, sizeof(step), key);
        if (snprintf(sub, sizeof(sub), "%s%s", where, step) >= (int)sizeof(sub))
            sub[sizeof(sub) - 1] = '\0'; /* a very long key: the message keeps its start */
        size_t klen = strlen(key);
        /* Header parsing trims spaces around a value: a key with them could never match. */
        if (klen == 0 || !printable(key, klen) || key[0] == ' ' || key[klen - 1] == ' ') {
            config_error_add(err, sub,
                             "a key must be a non-empty string without control "
                             "characters or spaces at either end");
            rc = -1;
            continue;
        }
        if (!json_is_string(value) || json_string_length(value) == 0) {
            config_error_add(err, sub,
                             "must be the consumer name (a non-empty string), e.g. \"mobile-app\"");
            rc = -1;
            continue;
        }
        const char *consumer = json_string_value(value);
        size_t clen = json_string_length(value);
        if (strlen(consumer) != clen || !printable(consumer, clen)) {
            config_error_add(err, sub, "the consumer name may not contain control characters");
            rc = -1;
            continue;
        }
        struct api_key_entry *e = &f->entries[f->count];
        if (!auth_mac_digest(mac, key, klen, e->digest)) {
            config_error_add(err, sub, "could not digest the key (OpenSSL failed)");
            rc = -1;
            continue;
        }
        e->consumer = strdup(consumer);
        if (!e->consumer) {
            config_error_add(err, sub, "out of memory");
            rc = -1;
            continue;
        }
        e->consumer_len = clen;
        f->count++;
    }
    return rc;
}

/* Loads `keys_file` (a JSON object like `keys`, SPEC 7); returns the object or NULL. */
static json_t *load_keys_file(const char *name, struct config_error *err, char **resolved)
{
    *resolved = config_resolve_path(err, name);
    json_error_t jerr;
    FILE *in = file_open_regular(*resolved);
    if (!in) {
        config_error_add(err, ".keys_file", "cannot read \"%s\": %s", *resolved,
                         file_strerror(errno));
        return NULL;
    }
    json_t *root = json_loadf(in, JSON_REJECT_DUPLICATES, &jerr);
    fclose(in);
    if (!root) {
        if (jerr.line > 0)
            config_error_add(err, ".keys_file", "\"%s\" line %d: %s", *resolved, jerr.line,
                             jerr.text);
        else
            config_error_add(err, ".keys_file", "cannot read \"%s\": %s", *resolved, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        config_error_add(err, ".keys_file",
                         "\"%s\" must hold a JSON object of key to consumer, e.g. "
                         "{\"k3y\": \"mobile-app\"}",
                         *resolved);
        json_decref(root);
        return NULL;
    }
    return root;
}

static int build_table(struct api_key_filter *f, struct config_error *err)
{
    size_t size = 8;
    while (size < f->count * 2)
        size *= 2;
    f->slots = calloc(size, sizeof(*f->slots));
    if (!f->slots) {
        config_error_add(err, "", "out of memory");
        return -1;
    }
    f->mask = size - 1;
    for (size_t i = 0; i < f->count; i++) {
        size_t s = slot_of(f->entries[i].digest, f->mask);
        while (f->slots[s])
            s = (s + 1) & f->mask;
        f->slots[s] = (uint32_t)(i + 1);
    }
    return 0;
}

static char *copy_lower(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i]);
    out[len] = '\0';
    return out;
}

/* A query parameter name as it appears in the raw query: no '&', '=', '#', space or control. */
static bool valid_param_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s == '&' || *s == '=' || *s == '#' || *s == ' ' || (unsigned char)*s < 0x20 ||
            *s == 0x7f)
            return false;
    return true;
}

static const void *api_key_create(const json_t *options, struct config_error *err)
{
    static const char *const allowed[] = {"header", "query", "keys", "keys_file", NULL};
    struct api_key_filter *f = calloc(1, sizeof(*f));
    if (!f) {
        config_error_add(err, "", "out of memory");
        return NULL;
    }
    int rc = config_check_keys(err, options, allowed) ? -1 : 0;

    const char *header = "x-api-key";
    const json_t *hv = json_object_get(options, "header");
    if (hv) {
        const char *h = config_get_string(err, options, "header", false, true);
        if (!h)
            rc = -1;
        else if (!config_is_token(h, strlen(h))) {
            config_error_add(err, ".header", "\"%s\" is not a valid header name (RFC 9110 token)",
                             h);
            rc = -1;
        } else
            header = h;
    }
    f->header_len = strlen(header);
    f->header = copy_lower(header, f->header_len);

    if (json_object_get(options, "query")) {
        const char *q = config_get_string(err, options, "query", false, true);
        if (!q)
            rc = -1;
        else if (!valid_param_name(q)) {
            config_error_add(err, ".query",
                             "\"%s\" is not a query parameter name (no '&', '=', '#', spaces or "
                             "control characters), e.g. \"api_key\"",
                             q);
            rc = -1;
        } else {
            f->query_len = strlen(q);
            f->query = strdup(q); /* parameter names are case-sensitive: kept as written */
        }
    }

    char challenge[512];
    if (f->query)
        snprintf(challenge, sizeof(challenge), "ApiKey header=\"%s\", query=\"%s\"", f->header,
                 f->query);
    else
        snprintf(challenge, sizeof(challenge), "ApiKey header=\"%s\"", f->header);
    f->challenge = strdup(challenge);
    f->challenge_len = strlen(challenge);
    if (!f->header || !f->challenge || (f->query_len && !f->query)) {
        config_error_add(err, "", "out of memory");
        api_key_destroy(f);
        return NULL;
    }

    const json_t *keys = json_object_get(options, "keys");
    const json_t *keys_file = json_object_get(options, "keys_file");
    json_t *loaded = NULL;
    char *resolved = NULL;
    char where[600];
    if (keys && keys_file) {
        config_error_add(err, "", "has both \"keys\" and \"keys_file\": keep one of them");
        rc = -1;
    } else if (!keys && !keys_file) {
        config_error_add(err, "",
                         "needs \"keys\" (e.g. {\"k3y\": \"mobile-app\"}) or \"keys_file\" (a "
                         "JSON file of the same shape)");
        rc = -1;
    } else if (keys) {
        if (!json_is_object(keys) || json_object_size(keys) == 0) {
            config_error_add(err, ".keys",
                             "must be a non-empty object of key to consumer name, e.g. "
                             "{\"k3y\": \"mobile-app\"}");
            rc = -1;
            keys = NULL;
        }
        snprintf(where, sizeof(where), ".keys");
    } else {
        const char *name = config_get_string(err, options, "keys_file", true, true);
        keys = name ? loaded = load_keys_file(name, err, &resolved) : NULL;
        if (!keys)
            rc = -1;
        else if (json_object_size(keys) == 0) {
            config_error_add(err, ".keys_file", "\"%s\" holds no keys", resolved);
            rc = -1;
            keys = NULL;
        }
        snprintf(where, sizeof(where), ".keys_file: \"%s\" ", resolved ? resolved : "");
    }

    if (keys) {
        f->entries = calloc(json_object_size(keys), sizeof(*f->entries));
        if (!f->entries || !auth_mac_new_key(f->mac_key)) {
            config_error_add(err, "", "out of memory or no random bytes");
            rc = -1;
        } else {
            struct auth_mac mac;
            auth_mac_init(&mac, f->mac_key);
            if (add_keys(f, keys, &mac, err, where) < 0)
                rc = -1;
            auth_mac_free(&mac);
        }
    }
    json_decref(loaded);
    free(resolved);
    if (rc == 0 && build_table(f, err) < 0)
        rc = -1;
    if (rc < 0) {
        api_key_destroy(f);
        return NULL;
    }
    return f;
}

/* The per-worker context: a keyed MAC context, so digesting neither fetches nor allocates. */
static void *api_key_context_new(const void *instance, struct worker *w)
{
    (void)w;
    const struct api_key_filter *f = instance;
    struct auth_mac *m = malloc(sizeof(*m));
    if (m)
        auth_mac_init(m, f->mac_key);
    return m;
}

static void api_key_context_free(const void *instance, void *context)
{
    (void)instance;
    if (!context)
        return;
    auth_mac_free(context);
    free(context);
}

/*
 * The entry whose key is `key`, or NULL. Every candidate of the probe
 * sequence is compared over the full digest with CRYPTO_memcmp, and the
 * sequence depends only on the keyed digest, so the time taken tells
 * nothing about how close the presented key is to a stored one.
 */
static const struct api_key_entry *lookup(const struct api_key_filter *f, struct auth_mac *mac,
                                          struct slice key)
{
    uint8_t digest[AUTH_MAC_LEN];
    if (!auth_mac_digest(mac, key.base, key.len, digest))
        return NULL;
    const struct api_key_entry *found = NULL;
    for (size_t s = slot_of(digest, f->mask); f->slots[s]; s = (s + 1) & f->mask) {
        const struct api_key_entry *e = &f->entries[f->slots[s] - 1];
        if (CRYPTO_memcmp(e->digest, digest, AUTH_MAC_LEN) == 0)
            found = e;
    }
    return found;
}

/* Percent-decodes `v` into the arena when it holds a '%' (a malformed escape stays as is). */
static struct slice percent_decode(struct arena *a, struct slice v)
{
    if (!memchr(v.base, '%', v.len))
        return v;
    char *out = arena_alloc(a, v.len + 1);
    size_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        int hi, lo;
        if (v.base[i] == '%' && i + 2 < v.len &&
            (hi = slice_hex_value((unsigned char)v.base[i + 1])) >= 0 &&
            (lo = slice_hex_value((unsigned char)v.base[i + 2])) >= 0) {
            out[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else
            out[n++] = v.base[i];
    }
    out[n] = '\0';
    return slice_make(out, n);
}

/*
 * Finds the parameter `f->query` in x->query (names compared as sent, not
 * decoded), stores the first occurrence's percent-decoded value in *value,
 * and cuts every occurrence out of the query the upstream will see,
 * keeping the other parameters in order. Returns whether one was found.
 */
static bool take_query_key(const struct api_key_filter *f, struct exchange *x, struct slice *value)
{
    if (!x->has_query || x->query.len == 0)
        return false;
    const char *q = x->query.base;
    size_t len = x->query.len;
    char *out = NULL;
    size_t n = 0;
    bool found = false;
    size_t i = 0;
    while (i <= len) {
        const char *amp = memchr(q + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - q) : len;
        struct slice pair = slice_make(q + i, end - i);
        const char *eq = memchr(pair.base, '=', pair.len);
        size_t name_len = eq ? (size_t)(eq - pair.base) : pair.len;
        bool match = name_len == f->query_len && memcmp(pair.base, f->query, name_len) == 0;
        if (match) {
            if (!found) {
                struct slice raw =
                    eq ? slice_make(eq + 1, pair.len - name_len - 1) : slice_make("", 0);
                *value = percent_decode(x->arena, raw);
            }
            if (!out) {
                out = arena_alloc(x->arena, len + 1);
                memcpy(out, q, i); /* the pairs before this one, each with its '&' */
                n = i;
            }
            found = true;
        } else if (out) {
            memcpy(out + n, pair.base, pair.len);
            n += pair.len;
            if (amp) {
                out[n++] = '&';
            }
        }
        if (!amp)
            break;
        i = end + 1;
    }
    if (!found)
        return false;
    /* The kept pairs each carried their '&': drop the one left after the last. */
    if (n > 0 && out[n - 1] == '&')
        n--;
    out[n] = '\0';
    x->query = slice_make(out, n);
    if (n == 0)
        x->has_query = false; /* nothing left: no bare '?' either */
    return true;
}

static enum filter_verdict api_key_on_request(const void *instance, void *context,
                                              struct exchange *x, void *state)
{
    (void)state;
    const struct api_key_filter *f = instance;
    struct auth_mac fallback;
    struct auth_mac *mac = context;
    if (!mac) {
        fallback = (struct auth_mac){.ctx = NULL, .key = f->mac_key};
        mac = &fallback;
    }

    struct slice name = slice_make(f->header, f->header_len);
    struct slice key = {0};
    bool have = false;
    const struct slice *hv = header_get(&x->req_headers, name);
    if (hv) {
        key = *hv;
        have = true;
    }
    struct slice qv = {0};
    if (f->query && take_query_key(f, x, &qv) && !have) {
        key = qv;
        have = true;
    }
    header_remove(&x->req_headers, name);

    const struct api_key_entry *e = have && key.len ? lookup(f, mac, key) : NULL;
    if (!e) {
        exchange_respond_error(x, 401,
                               have ? "the API key is not valid" : "an API key is required");
        header_add(&x->resp_headers, SLICE_LIT("WWW-Authenticate"),
                   slice_make(f->challenge, f->challenge_len));
        return FILTER_RESPOND;
    }
    x->consumer = slice_make(e->consumer, e->consumer_len);
    return FILTER_CONTINUE;
}

const struct filter_type filter_api_key = {
    .name = "api_key",
    .state_size = 0,
    .create = api_key_create,
    .destroy = api_key_destroy,
    .context_new = api_key_context_new,
    .context_free = api_key_context_free,
    .on_request = api_key_on_request,
};
