/*
 * basic_auth: the `basic_auth` filter (SPEC 4, SPEC 7; RFC 7617). A request
 * must carry `Authorization: Basic base64(user:password)` for one of the
 * configured users, whose password is checked against a crypt(3) hash with
 * libxcrypt's crypt_rn: bcrypt ($2b$, $2y$, $2a$), yescrypt ($y$),
 * sha512-crypt ($6$) or sha256-crypt ($5$); any other format is refused at
 * load time, naming the user. The user name becomes the consumer; the
 * Authorization field is never forwarded upstream. A missing or wrong
 * credential gets 401 with `WWW-Authenticate: Basic realm="..."`.
 *
 * Cost and the cache. A bcrypt or yescrypt check is deliberately slow (tens
 * of milliseconds at common costs) and runs on the worker's loop, blocking
 * every other exchange of that worker meanwhile: that is accepted because
 * each worker remembers verified credentials (SPEC 7 "basic_auth cache"):
 *   - keyed by HMAC-SHA256, under a random key drawn per filter instance,
 *     of the whole Authorization value, so the cache holds no password and
 *     its slots cannot be aimed at;
 *   - BASIC_AUTH_CACHE_ENTRIES entries (256 sets of 4 ways, 48 bytes each:
 *     48 KiB per worker and filter); a full set evicts its oldest entry;
 *   - an entry lives BASIC_AUTH_CACHE_TTL_MS (60 s) from its verification;
 *   - the cache lives in the filter's per-worker context, which belongs to
 *     one configuration snapshot: a reload builds new, empty caches;
 *   - only successes are stored. A wrong password for a cached user misses
 *     (its Authorization value differs) and pays a full verification; an
 *     unknown user pays a verification too, against a configured user's hash,
 *     so the answer's timing does not tell which user names exist.
 *
 * Thread: create on the loading thread; the hooks and the cache on the
 * worker's thread (the cache is per worker, never shared).
 */
#include "filters/basic_auth.h"

#include <crypt.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "base/file.h"
#include "filters/auth_mac.h"
#include "base/arena.h"
#include "base/clock.h"
#include "base/header.h"
#include "base/slice.h"
#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"

/* Longest Authorization value considered; longer ones are refused without decoding. */
#define MAX_CREDENTIALS 4096

struct user {
    char *name; /* malloc'd, sorted by memcmp order */
    size_t name_len;
    char *hash; /* malloc'd crypt(3) string */
    size_t hash_len;
};

struct basic_auth_filter {
    char *challenge; /* Basic realm="...", charset="UTF-8" */
    size_t challenge_len;
    struct user *users;
    size_t count;
    uint8_t mac_key[AUTH_MAC_KEY_LEN];
};

struct cache_entry {
    uint8_t digest[AUTH_MAC_LEN];
    int64_t expires_ms;
    uint32_t user; /* index + 1; 0: empty */
};

/* The per-worker context. */
struct basic_auth_cache {
    struct auth_mac mac;
    struct crypt_data crypt; /* crypt_rn's scratch space (about 32 KiB), reused */
    struct cache_entry entries[BASIC_AUTH_CACHE_ENTRIES];
};

static atomic_uint_fast64_t verifications;
static _Atomic int64_t clock_offset_ms;

uint64_t basic_auth_verifications(void)
{
    return atomic_load_explicit(&verifications, memory_order_relaxed);
}

void basic_auth_test_advance_clock(int64_t ms)
{
    atomic_fetch_add(&clock_offset_ms, ms);
}

static int64_t now_ms(void)
{
    return clock_coarse_ms() + atomic_load_explicit(&clock_offset_ms, memory_order_relaxed);
}

static void basic_auth_destroy(const void *instance)
{
    struct basic_auth_filter *f = (struct basic_auth_filter *)instance;
    if (!f)
        return;
    for (size_t i = 0; i < f->count; i++) {
        free(f->users[i].name);
        free(f->users[i].hash);
    }
    free(f->users);
    free(f->challenge);
    OPENSSL_cleanse(f->mac_key, sizeof(f->mac_key));
    free(f);
}

/* ---------------------------------------------------------------- hash formats */

static bool is_crypt64(char c)
{
    return c == '.' || c == '/' || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
           (c >= 'a' && c <= 'z');
}

/*
 * Checks that `hash` is one of the supported crypt(3) formats and well
 * formed, so a typo shows at load time rather than as a user who can never
 * log in. Returns NULL, or what is wrong.
 */
static const char *check_hash(const char *hash)
{
    static const char formats[] = "use bcrypt ($2b$, e.g. htpasswd -B), yescrypt ($y$), "
                                  "sha512-crypt ($6$) or sha256-crypt ($5$)";
    static char why[256];
    size_t len = strlen(hash);
    size_t digest_len;
    if (strncmp(hash, "$2b$", 4) == 0 || strncmp(hash, "$2y$", 4) == 0 ||
        strncmp(hash, "$2a$", 4) == 0) {
        /* $2b$NN$ then 22 salt and 31 hash characters. */
        if (len != 60 || hash[6] != '$' || hash[4] < '0' || hash[4] > '3' || hash[5] < '0' ||
            hash[5] > '9' || (hash[4] - '0') * 10 + (hash[5] - '0') < 4 ||
            (hash[4] - '0') * 10 + (hash[5] - '0') > 31)
            return "is not a well-formed bcrypt hash ($2b$NN$ and 53 characters, cost 04 to 31)";
        for (size_t i = 7; i < len; i++)
            if (!is_crypt64(hash[i]))
                return "is not a well-formed bcrypt hash (bad character)";
        return NULL;
    }
    if (strncmp(hash, "$y$", 3) == 0 || strncmp(hash, "$5$", 3) == 0)
        digest_len = 43;
    else if (strncmp(hash, "$6$", 3) == 0)
        digest_len = 86;
    else {
        const char *end = hash[0] == '$' ? strchr(hash + 1, '$') : NULL;
        if (end && end - hash < 16)
            snprintf(why, sizeof(why), "has an unsupported hash format \"%.*s\": %s",
                     (int)(end - hash + 1), hash, formats);
        else
            snprintf(why, sizeof(why), "is not a supported crypt(3) hash: %s", formats);
        return why;
    }
    const char *last = strrchr(hash, '$');
    size_t tail = len - (size_t)(last - hash) - 1;
    bool chars_ok = true;
    for (const char *p = last + 1; *p; p++)
        chars_ok = chars_ok && is_crypt64(*p);
    int salt = crypt_checksalt(hash);
    if (last - hash < 4 || tail != digest_len || !chars_ok || salt == CRYPT_SALT_INVALID ||
        salt == CRYPT_SALT_METHOD_DISABLED) {
        snprintf(why, sizeof(why),
                 "is not a well-formed %.3s hash (settings, salt, then a digest of %zu "
                 "characters)",
                 hash, digest_len);
        return why;
    }
    return NULL;
}

/* ---------------------------------------------------------------- users */

static int user_cmp(const void *a, const void *b)
{
    const struct user *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static bool valid_user_name(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ':' || (unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/*
 * Adds user `name` with `hash`; `where` names it in messages (a JSON path,
 * or the htpasswd file and line). Returns 0 or -1 after reporting.
 */
static int add_user(struct basic_auth_filter *f, const char *name, size_t name_len,
                    const char *hash, struct config_error *err, const char *where)
{
    if (!valid_user_name(name, name_len)) {
        config_error_add(err, where,
                         "a user name must be non-empty, without ':' or control "
                         "characters");
        return -1;
    }
    const char *why = check_hash(hash);
    if (why) {
        config_error_add(err, where, "the hash of user \"%.*s\" %s", (int)name_len, name, why);
        return -1;
    }
    struct user *u = &f->users[f->count];
    u->name = strndup(name, name_len);
    u->hash = strdup(hash);
    if (!u->name || !u->hash) {
        free(u->name);
        free(u->hash);
        config_error_add(err, where, "out of memory");
        return -1;
    }
    u->name_len = name_len;
    u->hash_len = strlen(hash);
    f->count++;
    return 0;
}

static int grow_users(struct basic_auth_filter *f, size_t *cap, struct config_error *err)
{
    if (f->count < *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 16;
    struct user *u = realloc(f->users, n * sizeof(*u));
    if (!u) {
        config_error_add(err, "", "out of memory");
        return -1;
    }
    f->users = u;
    *cap = n;
    return 0;
}

static int parse_users(struct basic_auth_filter *f, const json_t *users, struct config_error *err)
{
    if (!json_is_object(users) || json_object_size(users) == 0) {
        config_error_add(err, ".users",
                         "must be a non-empty object of user name to crypt(3) hash, e.g. "
                         "{\"alice\": \"$2b$10$...\"}");
        return -1;
    }
    size_t cap = 0;
    int rc = 0;
    char step[256], sub[512];
    const char *name;
    json_t *hash;
    json_object_foreach((json_t *)users, name, hash)
    {
        config_path_member(step, sizeof(step), name);
        snprintf(sub, sizeof(sub), ".users%s", step);
        if (!json_is_string(hash)) {
            config_error_add(err, sub, "must be a crypt(3) hash string, e.g. \"$2b$10$...\"");
            rc = -1;
            continue;
        }
        if (grow_users(f, &cap, err) < 0)
            return -1;
        if (add_user(f, name, strlen(name), json_string_value(hash), err, sub) < 0)
            rc = -1;
    }
    return rc;
}

/*
 * Reads an htpasswd file: one `name:hash` per line; blank lines and lines
 * starting with '#' are skipped, a CR before the LF is ignored.
 */
static int parse_htpasswd(struct basic_auth_filter *f, const char *name, struct config_error *err)
{
    char *path = config_resolve_path(err, name);
    FILE *in = file_open_regular(path);
    if (!in) {
        config_error_add(err, ".htpasswd_file", "cannot read \"%s\": %s", path,
                         file_strerror(errno));
        free(path);
        return -1;
    }
    size_t cap = 0, lineno = 0;
    int rc = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t n;
    char where[700];
    while ((n = getline(&line, &line_cap, in)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        snprintf(where, sizeof(where), ".htpasswd_file: \"%s\" line %zu", path, lineno);
        if (strlen(line) != (size_t)n) {
            config_error_add(err, where, "holds a NUL byte");
            rc = -1;
            continue;
        }
        char *colon = strchr(line, ':');
        if (!colon) {
            config_error_add(err, where, "expected \"name:hash\"");
            rc = -1;
            continue;
        }
        if (grow_users(f, &cap, err) < 0) {
            rc = -1;
            break;
        }
        if (add_user(f, line, (size_t)(colon - line), colon + 1, err, where) < 0)
            rc = -1;
    }
    free(line);
    fclose(in);
    if (rc == 0 && f->count == 0) {
        config_error_add(err, ".htpasswd_file", "\"%s\" lists no users", path);
        rc = -1;
    }
    free(path);
    return rc;
}

/* A realm is sent inside a quoted-string: refuse what would need escaping or break the field. */
static bool valid_realm(const char *s)
{
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static const void *basic_auth_create(const json_t *options, struct config_error *err)
{
    static const char *const allowed[] = {"realm", "users", "htpasswd_file", NULL};
    struct basic_auth_filter *f = calloc(1, sizeof(*f));
    if (!f) {
        config_error_add(err, "", "out of memory");
        return NULL;
    }
    int rc = config_check_keys(err, options, allowed) ? -1 : 0;

    const char *realm = "sluice";
    if (json_object_get(options, "realm")) {
        const char *r = config_get_string(err, options, "realm", false, true);
        if (!r)
            rc = -1;
        else if (!valid_realm(r) || strlen(r) > 200) {
            config_error_add(err, ".realm",
                             "at most 200 characters, without '\"', '\\' or "
                             "control characters, e.g. \"internal API\"");
            rc = -1;
        } else
            realm = r;
    }
    char challenge[300];
    snprintf(challenge, sizeof(challenge), "Basic realm=\"%s\", charset=\"UTF-8\"", realm);
    f->challenge = strdup(challenge);
    f->challenge_len = strlen(challenge);

    const json_t *users = json_object_get(options, "users");
    const json_t *file = json_object_get(options, "htpasswd_file");
    if (users && file) {
        config_error_add(err, "", "has both \"users\" and \"htpasswd_file\": keep one of them");
        rc = -1;
    } else if (!users && !file) {
        config_error_add(err, "",
                         "needs \"users\" (e.g. {\"alice\": \"$2b$10$...\"}) or "
                         "\"htpasswd_file\" (lines of name:hash)");
        rc = -1;
    } else if (users) {
        if (parse_users(f, users, err) < 0)
            rc = -1;
    } else {
        const char *name = config_get_string(err, options, "htpasswd_file", true, true);
        if (!name || parse_htpasswd(f, name, err) < 0)
            rc = -1;
    }
    if (!f->challenge || !auth_mac_new_key(f->mac_key)) {
        config_error_add(err, "", "out of memory or no random bytes");
        rc = -1;
    }
    if (rc < 0) {
        basic_auth_destroy(f);
        return NULL;
    }
    /* Sorted for bsearch; a name twice (only an htpasswd file can) would make one line dead. */
    qsort(f->users, f->count, sizeof(*f->users), user_cmp);
    for (size_t i = 1; i < f->count; i++)
        if (user_cmp(&f->users[i - 1], &f->users[i]) == 0) {
            config_error_add(err, ".htpasswd_file", "user \"%s\" is listed twice: keep one line",
                             f->users[i].name);
            rc = -1;
        }
    if (rc < 0) {
        basic_auth_destroy(f);
        return NULL;
    }
    return f;
}

/* ---------------------------------------------------------------- the cache */

static void *basic_auth_context_new(const void *instance, struct worker *w)
{
    (void)w;
    const struct basic_auth_filter *f = instance;
    struct basic_auth_cache *c = calloc(1, sizeof(*c));
    if (c)
        auth_mac_init(&c->mac, f->mac_key);
    return c;
}

static void basic_auth_context_free(const void *instance, void *context)
{
    (void)instance;
    struct basic_auth_cache *c = context;
    if (!c)
        return;
    auth_mac_free(&c->mac);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

static struct cache_entry *cache_set(struct basic_auth_cache *c, const uint8_t *digest)
{
    uint64_t h;
    memcpy(&h, digest, sizeof(h));
    return &c->entries[(h & (BASIC_AUTH_CACHE_SETS - 1)) * BASIC_AUTH_CACHE_WAYS];
}

/* The user (index + 1) remembered for `digest`, or 0. */
static uint32_t cache_find(struct basic_auth_cache *c, const uint8_t *digest, int64_t now)
{
    struct cache_entry *set = cache_set(c, digest);
    uint32_t found = 0;
    for (size_t i = 0; i < BASIC_AUTH_CACHE_WAYS; i++)
        if (set[i].user && set[i].expires_ms > now &&
            CRYPTO_memcmp(set[i].digest, digest, AUTH_MAC_LEN) == 0)
            found = set[i].user;
    return found;
}

/* Remembers a verified credential: an empty or expired way, else the oldest. */
static void cache_put(struct basic_auth_cache *c, const uint8_t *digest, uint32_t user, int64_t now)
{
    struct cache_entry *set = cache_set(c, digest);
    struct cache_entry *victim = &set[0];
    for (size_t i = 0; i < BASIC_AUTH_CACHE_WAYS; i++) {
        if (!set[i].user || set[i].expires_ms <= now) {
            victim = &set[i];
            break;
        }
        if (set[i].expires_ms < victim->expires_ms)
            victim = &set[i];
    }
    memcpy(victim->digest, digest, AUTH_MAC_LEN);
    victim->expires_ms = now + BASIC_AUTH_CACHE_TTL_MS;
    victim->user = user;
}

/* ---------------------------------------------------------------- requests */

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Strict base64 (RFC 4648 section 4, padding required) of `in` into `out`
 * (room for in.len / 4 * 3 + 1); NUL-terminates. Returns the length or -1.
 */
static long b64_decode(struct slice in, char *out)
{
    if (in.len == 0 || in.len % 4)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < in.len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char ch = in.base[i + k];
            if (ch == '=' && i + 4 == in.len && k >= 2) {
                pad++;
                v[k] = 0;
                continue;
            }
            if (pad || (v[k] = b64_value(ch)) < 0)
                return -1;
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[n++] = (char)(w >> 16);
        if (pad < 2)
            out[n++] = (char)(w >> 8);
        if (pad < 1)
            out[n++] = (char)w;
    }
    out[n] = '\0';
    return (long)n;
}

/* The token68 of "Basic <token>" (scheme case-insensitive), or an empty slice. */
static struct slice basic_token(struct slice v)
{
    if (v.len < 6 || strncasecmp(v.base, "basic", 5) != 0 || v.base[5] != ' ')
        return slice_make("", 0);
    size_t i = 6;
    while (i < v.len && v.base[i] == ' ')
        i++;
    size_t end = v.len;
    while (end > i && header_is_ows(v.base[end - 1]))
        end--;
    return slice_make(v.base + i, end - i);
}

static const struct user *find_user(const struct basic_auth_filter *f, const char *name, size_t len)
{
    struct user key = {.name = (char *)name, .name_len = len};
    return bsearch(&key, f->users, f->count, sizeof(*f->users), user_cmp);
}

/* One crypt(3) verification: true when `password` hashes to `hash`. */
static bool verify(struct crypt_data *cd, const char *password, const struct user *u)
{
    atomic_fetch_add_explicit(&verifications, 1, memory_order_relaxed);
    const char *out = crypt_rn(password, u->hash, cd, (int)sizeof(*cd));
    return out && strlen(out) == u->hash_len && CRYPTO_memcmp(out, u->hash, u->hash_len) == 0;
}

/*
 * Decides a credential that the cache did not know: decodes it, finds the
 * user and verifies the password. Returns the user or NULL.
 */
static const struct user *check_credentials(const struct basic_auth_filter *f,
                                            struct crypt_data *cd, struct arena *a,
                                            struct slice token)
{
    char *plain = arena_alloc(a, token.len / 4 * 3 + 1);
    long n = b64_decode(token, plain);
    if (n < 0)
        return NULL;
    char *colon = memchr(plain, ':', (size_t)n);
    if (!colon)
        return NULL;
    const char *password = colon + 1;
    const struct user *u = find_user(f, plain, (size_t)(colon - plain));
    if (strlen(password) != (size_t)(n - (colon - plain) - 1))
        u = NULL; /* a NUL in the password: crypt would see a shorter one */
    /* An unknown user costs the same as a known one: verify against the first user's hash. */
    bool good = verify(cd, password, u ? u : &f->users[0]);
    OPENSSL_cleanse(plain, (size_t)n);
    return u && good ? u : NULL;
}

static enum filter_verdict unauthorized(const struct basic_auth_filter *f, struct exchange *x,
                                        const char *why)
{
    exchange_respond_error(x, 401, why);
    header_add(&x->resp_headers, SLICE_LIT("WWW-Authenticate"),
               slice_make(f->challenge, f->challenge_len));
    return FILTER_RESPOND;
}

static enum filter_verdict basic_auth_on_request(const void *instance, void *context,
                                                 struct exchange *x, void *state)
{
    (void)state;
    const struct basic_auth_filter *f = instance;
    struct basic_auth_cache *c = context;
    const struct slice *hv = header_get(&x->req_headers, SLICE_LIT("authorization"));
    struct slice auth = hv ? *hv : slice_make("", 0);
    header_remove(&x->req_headers, SLICE_LIT("authorization"));
    if (!hv)
        return unauthorized(f, x, "credentials are required");
    struct slice token = basic_token(auth);
    if (token.len == 0 || auth.len > MAX_CREDENTIALS)
        return unauthorized(f, x, "Basic credentials are required");

    int64_t now = now_ms();
    uint8_t digest[AUTH_MAC_LEN];
    bool keyed = c && auth_mac_digest(&c->mac, auth.base, auth.len, digest);
    uint32_t hit = keyed ? cache_find(c, digest, now) : 0;
    const struct user *u = hit ? &f->users[hit - 1] : NULL;
    if (!u) {
        /* No context (out of memory): verify with scratch space from the arena, cache nothing. */
        struct crypt_data *cd = c ? &c->crypt : arena_alloc(x->arena, sizeof(*cd));
        if (!c)
            memset(cd, 0, sizeof(*cd));
        u = check_credentials(f, cd, x->arena, token);
        if (!u)
            return unauthorized(f, x, "the user name or password is not valid");
        if (keyed)
            cache_put(c, digest, (uint32_t)(u - f->users) + 1, now);
    }
    x->consumer = slice_make(u->name, u->name_len);
    return FILTER_CONTINUE;
}

const struct filter_type filter_basic_auth = {
    .name = "basic_auth",
    .state_size = 0,
    .create = basic_auth_create,
    .destroy = basic_auth_destroy,
    .context_new = basic_auth_context_new,
    .context_free = basic_auth_context_free,
    .on_request = basic_auth_on_request,
};
