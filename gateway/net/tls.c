#include "net/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "base/file.h"
#include "conf/config.h"
#include "net/addr.h"
#include "net/conn.h"
#include "base/log.h"
#include "net/loop.h"

/* One certificate of a listener: its own context, and the names it answers for. */
struct tls_cert {
    SSL_CTX *ctx;
    char **names; /* SAN DNS entries (or the CN without any), lower-case */
    size_t num_names;
};

struct tls_server {
    struct tls_cert *certs; /* [0] is the default, and starts every handshake */
    size_t num_certs;
    unsigned char alpn[32]; /* ALPN wire format, in preference order */
    unsigned alpn_len;
};

struct tls_client {
    SSL_CTX *ctx;
    bool verify;
    char *server_name; /* NULL: the target's configured host */
};

/* ---- names ------------------------------------------------------------------ */

bool tls_name_match(const char *pattern, const char *host)
{
    size_t plen = strlen(pattern), hlen = strlen(host);
    if (hlen && host[hlen - 1] == '.')
        hlen--; /* a fully qualified "api.test." is "api.test" */
    if (plen >= 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* "*.example.org": exactly one non-empty label before ".example.org". */
        const char *suffix = pattern + 1;
        size_t slen = plen - 1;
        if (hlen <= slen || strncasecmp(host + hlen - slen, suffix, slen) != 0)
            return false;
        size_t label = hlen - slen;
        return memchr(host, '.', label) == NULL;
    }
    return plen == hlen && strncasecmp(pattern, host, hlen) == 0;
}

/* The certificate for SNI `name`: an exact name first, then a wildcard, else the default. */
static size_t pick_cert(const struct tls_server *ts, const char *name)
{
    for (int wild = 0; wild < 2; wild++) {
        for (size_t i = 0; i < ts->num_certs; i++) {
            for (size_t j = 0; j < ts->certs[i].num_names; j++) {
                const char *n = ts->certs[i].names[j];
                if ((n[0] == '*') == (wild == 1) && tls_name_match(n, name))
                    return i;
            }
        }
    }
    return 0;
}

static void add_name(struct tls_cert *c, const char *name, size_t len)
{
    if (len == 0 || memchr(name, '\0', len))
        return;
    char **v = realloc(c->names, (c->num_names + 1) * sizeof *v);
    if (!v)
        return;
    c->names = v;
    char *copy = strndup(name, len);
    if (!copy)
        return;
    for (char *p = copy; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    c->names[c->num_names++] = copy;
}

static void collect_names(struct tls_cert *c, X509 *x)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_DNS)
            add_name(c, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
                     (size_t)ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(sans);
    if (c->num_names)
        return;
    char cn[256];
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    if (n > 0)
        add_name(c, cn, (size_t)n);
}

/* ---- config helpers ------------------------------------------------------------ */

/* obj[key] as a non-empty string; NULL (and an error when `required` or mistyped). */
static const char *get_str(struct config_error *err, const json_t *obj, const char *key,
                           bool required, const char *example)
{
    const json_t *v = json_object_get(obj, key);
    char sub[64];
    snprintf(sub, sizeof sub, ".%s", key);
    if (!v) {
        if (required)
            config_error_add(err, sub, "missing: e.g. \"%s\"", example);
        return NULL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        config_error_add(err, sub, "must be a non-empty string, e.g. \"%s\"", example);
        return NULL;
    }
    return json_string_value(v);
}

/* OpenSSL's reason for the first queued error (the root cause), then clears the queue. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        snprintf(buf, len, "%s", r);
    else if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown error");
    ERR_clear_error();
    return buf;
}

/* Checks that `path` can be opened, so a missing file says so plainly. */
static bool readable(struct config_error *err, const char *sub, const char *name, const char *path)
{
    FILE *f = file_open_regular(path);
    if (!f) {
        config_error_add(err, sub, "cannot load %s: %s", name, file_strerror(errno));
        return false;
    }
    fclose(f);
    return true;
}

/* Never prompt on the terminal for an encrypted key. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

static EVP_PKEY *load_key(const char *path)
{
    BIO *b = BIO_new_file(path, "rb");
    if (!b)
        return NULL;
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL);
    BIO_free(b);
    return k;
}

static int min_version_of(struct config_error *err, const json_t *v)
{
    const char *s = get_str(err, v, "min_version", false, "TLSv1.2");
    if (!s)
        return TLS1_2_VERSION;
    if (strcmp(s, "TLSv1.2") == 0)
        return TLS1_2_VERSION;
    if (strcmp(s, "TLSv1.3") == 0)
        return TLS1_3_VERSION;
    config_error_add(err, ".min_version",
                     "unknown version \"%s\" (expected one of: TLSv1.2, TLSv1.3)", s);
    return TLS1_2_VERSION;
}

/* ---- server contexts ------------------------------------------------------------ */

static int on_servername(SSL *ssl, int *alert, void *arg)
{
    const struct tls_server *ts = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || ts->num_certs < 2)
        return SSL_TLSEXT_ERR_OK;
    size_t i = pick_cert(ts, name);
    if (i != 0)
        SSL_set_SSL_CTX(ssl, ts->certs[i].ctx);
    return SSL_TLSEXT_ERR_OK;
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
    const struct tls_server *ts = arg;
    unsigned char *sel = NULL;
    unsigned char sellen = 0;
    /* Our list first: the configured order is the preference. */
    if (SSL_select_next_proto(&sel, &sellen, ts->alpn, ts->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    *outlen = sellen;
    return SSL_TLSEXT_ERR_OK;
}

/* A context with the listener's settings, before its certificate. */
static SSL_CTX *server_ctx_new(struct tls_server *ts, int min_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    static const unsigned char sid[] = "sluice";
    SSL_CTX_set_min_proto_version(ctx, min_version);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* One read() takes in a whole record (and what follows it), not its header first. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    /* TLS 1.3: one ticket per handshake (OpenSSL sends two): one resumes the next connection. */
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, ts);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, ts);
    return ctx;
}

/* Loads client_ca into `ctx`: verification store and the list of names sent to clients. */
static bool load_client_ca(SSL_CTX *ctx, const char *path)
{
    if (!SSL_CTX_load_verify_locations(ctx, path, NULL))
        return false;
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(path);
    if (names)
        SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return true;
}

/* Loads certificate `i` ({cert, key}) into a new context. False after recording an error. */
static bool load_cert(struct config_error *err, struct tls_server *ts, size_t i, const json_t *v,
                      int min_version)
{
    static const char *const keys[] = {"cert", "key", NULL};
    if (!json_is_object(v)) {
        config_error_add(err, "",
                         "must be an object, e.g. {\"cert\": \"certs/api.pem\", \"key\": "
                         "\"certs/api.key\"}");
        return false;
    }
    config_check_keys_strict(err, v, keys);
    const char *cert = get_str(err, v, "cert", true, "certs/api.pem");
    const char *key = get_str(err, v, "key", true, "certs/api.key");
    if (!cert || !key)
        return false;
    char *cert_path = config_resolve_path(err, cert);
    char *key_path = config_resolve_path(err, key);
    char why[256];
    bool ok = false;
    EVP_PKEY *pkey = NULL;
    SSL_CTX *ctx = server_ctx_new(ts, min_version);
    ts->certs[i].ctx = ctx;
    if (!ctx) {
        config_error_add(err, "", "cannot create a TLS context: %s", ssl_reason(why, sizeof why));
        goto out;
    }
    bool cert_ok = readable(err, ".cert", cert, cert_path);
    bool key_ok = readable(err, ".key", key, key_path);
    if (cert_ok && !SSL_CTX_use_certificate_chain_file(ctx, cert_path)) {
        config_error_add(err, ".cert",
                         "cannot load %s: %s (expected PEM certificates, the server's first)", cert,
                         ssl_reason(why, sizeof why));
        cert_ok = false;
    }
    if (key_ok && !(pkey = load_key(key_path))) {
        config_error_add(err, ".key",
                         "cannot load %s: %s (expected an unencrypted PEM private key)", key,
                         ssl_reason(why, sizeof why));
        key_ok = false;
    }
    if (!cert_ok || !key_ok)
        goto out;
    if (!SSL_CTX_use_PrivateKey(ctx, pkey) || !SSL_CTX_check_private_key(ctx)) {
        config_error_add(err, ".key", "%s does not match the certificate in %s (%s)", key, cert,
                         ssl_reason(why, sizeof why));
        goto out;
    }
    collect_names(&ts->certs[i], SSL_CTX_get0_certificate(ctx));
    ok = true;
out:
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    free(cert_path);
    free(key_path);
    return ok;
}

/* Fills ts->alpn from a "protocols" array. */
static void build_alpn(struct config_error *err, struct tls_server *ts, const json_t *protocols)
{
    if (!json_is_array(protocols) || json_array_size(protocols) == 0) {
        config_error_add(err, "", "must be a non-empty array, e.g. [\"h2\", \"http/1.1\"]");
        return;
    }
    size_t i;
    json_t *p;
    json_array_foreach(protocols, i, p)
    {
        size_t mark = config_path_push_index(err, i);
        const char *name = json_string_value(p);
        if (!name) {
            config_error_add(err, "", "must be a string, e.g. \"http/1.1\"");
        } else if (strcmp(name, "h2c") == 0) {
            config_error_add(err, "",
                             "\"h2c\" is for cleartext listeners; a TLS listener offers HTTP/2 "
                             "as \"h2\"");
        } else if (strcmp(name, "h2") != 0 && strcmp(name, "http/1.1") != 0) {
            config_error_add(err, "", "unknown protocol \"%s\" (expected one of: h2, http/1.1)",
                             name);
        } else if (ts->alpn_len + 1 + strlen(name) <= sizeof ts->alpn) {
            bool dup = false;
            for (unsigned k = 0; k < ts->alpn_len; k += 1u + ts->alpn[k])
                dup |=
                    ts->alpn[k] == strlen(name) && memcmp(ts->alpn + k + 1, name, ts->alpn[k]) == 0;
            if (!dup) {
                ts->alpn[ts->alpn_len++] = (unsigned char)strlen(name);
                memcpy(ts->alpn + ts->alpn_len, name, strlen(name));
                ts->alpn_len += (unsigned)strlen(name);
            }
        }
        config_path_pop(err, mark);
    }
}

struct tls_server *tls_server_build(struct config_error *err, const json_t *v,
                                    const json_t *protocols)
{
    static const char *const keys[] = {"certificates", "protocols", "min_version", "client_ca",
                                       NULL};
    size_t errors = err->count;
    if (protocols && json_object_get(v, "protocols"))
        config_error_add(
            err, ".protocols",
            "a TLS listener takes its ALPN list from tls.protocols: give it there only");
    size_t mark = config_path_push(err, ".tls");
    if (!json_is_object(v)) {
        config_error_add(
            err, "",
            "must be an object, e.g. {\"certificates\": [{\"cert\": \"certs/api.pem\", "
            "\"key\": \"certs/api.key\"}]}");
        config_path_pop(err, mark);
        return NULL;
    }
    config_check_keys_strict(err, v, keys);
    struct tls_server *ts = calloc(1, sizeof *ts);
    if (!ts) {
        config_error_add(err, "", "out of memory");
        config_path_pop(err, mark);
        return NULL;
    }
    int min_version = min_version_of(err, v);
    if (json_object_get(v, "protocols")) {
        size_t m2 = config_path_push(err, ".protocols");
        build_alpn(err, ts, json_object_get(v, "protocols"));
        config_path_pop(err, m2);
    } else if (protocols) {
        config_path_pop(err, mark);
        size_t m2 = config_path_push(err, ".protocols");
        build_alpn(err, ts, protocols);
        config_path_pop(err, m2);
        config_path_push(err, ".tls");
    } else {
        memcpy(ts->alpn, "\x08http/1.1", 9);
        ts->alpn_len = 9;
    }
    const char *client_ca = get_str(err, v, "client_ca", false, "certs/clients-ca.pem");
    const json_t *certs = json_object_get(v, "certificates");
    if (!certs) {
        config_error_add(err, ".certificates",
                         "missing: list at least one certificate, e.g. [{\"cert\": "
                         "\"certs/api.pem\", \"key\": \"certs/api.key\"}]");
    } else if (!json_is_array(certs) || json_array_size(certs) == 0) {
        config_error_add(err, ".certificates",
                         "must be a non-empty array, e.g. [{\"cert\": \"certs/api.pem\", \"key\": "
                         "\"certs/api.key\"}]");
    } else {
        ts->num_certs = json_array_size(certs);
        ts->certs = calloc(ts->num_certs, sizeof *ts->certs);
        if (!ts->certs) {
            ts->num_certs = 0;
            config_error_add(err, "", "out of memory");
        }
        for (size_t i = 0; i < ts->num_certs; i++) {
            size_t m2 = config_path_push(err, ".certificates");
            config_path_push_index(err, i);
            load_cert(err, ts, i, json_array_get(certs, i), min_version);
            config_path_pop(err, m2);
        }
    }
    if (client_ca && err->count == errors) {
        char *path = config_resolve_path(err, client_ca);
        char why[256];
        if (readable(err, ".client_ca", client_ca, path)) {
            for (size_t i = 0; i < ts->num_certs; i++) {
                if (!load_client_ca(ts->certs[i].ctx, path)) {
                    config_error_add(err, ".client_ca",
                                     "cannot load %s: %s (expected PEM CA certificates)", client_ca,
                                     ssl_reason(why, sizeof why));
                    break;
                }
            }
        }
        free(path);
    }
    config_path_pop(err, mark);
    if (err->count != errors) {
        tls_server_free(ts);
        return NULL;
    }
    return ts;
}

void tls_server_free(struct tls_server *ts)
{
    if (!ts)
        return;
    for (size_t i = 0; i < ts->num_certs; i++) {
        SSL_CTX_free(ts->certs[i].ctx);
        for (size_t j = 0; j < ts->certs[i].num_names; j++)
            free(ts->certs[i].names[j]);
        free(ts->certs[i].names);
    }
    free(ts->certs);
    free(ts);
}

/* ---- client contexts ------------------------------------------------------------ */

/* SSL ex_data slot holding the session slot (SSL_SESSION **) of a client connection. */
static int session_slot = -1;
static pthread_once_t session_slot_once = PTHREAD_ONCE_INIT;

static void make_session_slot(void)
{
    session_slot = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* A new session (a TLS 1.3 ticket may come after the handshake): keep it in the slot. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION **slot = SSL_get_ex_data(ssl, session_slot);
    if (!slot)
        return 0;
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1; /* we keep the reference */
}

struct tls_client *tls_client_build(struct config_error *err, const json_t *v)
{
    static const char *const keys[] = {"verify", "ca", "server_name", NULL};
    pthread_once(&session_slot_once, make_session_slot);
    size_t errors = err->count;
    size_t mark = config_path_push(err, ".tls");
    if (!json_is_object(v)) {
        config_error_add(err, "",
                         "must be an object, e.g. {\"verify\": true, \"ca\": \"certs/ca.pem\"}");
        config_path_pop(err, mark);
        return NULL;
    }
    config_check_keys_strict(err, v, keys);
    struct tls_client *tc = calloc(1, sizeof *tc);
    if (!tc) {
        config_path_pop(err, mark);
        return NULL;
    }
    tc->verify = true;
    const json_t *verify = json_object_get(v, "verify");
    if (verify && !json_is_boolean(verify))
        config_error_add(err, ".verify", "must be true or false");
    else if (verify)
        tc->verify = json_is_true(verify);
    const char *ca = get_str(err, v, "ca", false, "certs/ca.pem");
    const char *server_name = get_str(err, v, "server_name", false, "users.internal");
    if (server_name && strpbrk(server_name, " \t\r\n/:"))
        config_error_add(err, ".server_name", "\"%s\" is not a host name", server_name);
    else if (server_name)
        tc->server_name = strdup(server_name);
    char why[256];
    tc->ctx = SSL_CTX_new(TLS_client_method());
    if (!tc->ctx) {
        config_error_add(err, "", "cannot create a TLS context: %s", ssl_reason(why, sizeof why));
    } else {
        SSL_CTX_set_min_proto_version(tc->ctx, TLS1_2_VERSION);
        SSL_CTX_set_options(tc->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
        SSL_CTX_set_mode(tc->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                      SSL_MODE_RELEASE_BUFFERS);
        SSL_CTX_set_read_ahead(tc->ctx, 1);
        SSL_CTX_set_session_cache_mode(tc->ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(tc->ctx, on_new_session);
        SSL_CTX_set_verify(tc->ctx, tc->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
        if (ca) {
            char *path = config_resolve_path(err, ca);
            if (readable(err, ".ca", ca, path) &&
                !SSL_CTX_load_verify_locations(tc->ctx, path, NULL))
                config_error_add(err, ".ca", "cannot load %s: %s (expected PEM CA certificates)",
                                 ca, ssl_reason(why, sizeof why));
            free(path);
        } else if (tc->verify && !SSL_CTX_set_default_verify_paths(tc->ctx)) {
            config_error_add(err, "", "cannot load the system's CA certificates: %s",
                             ssl_reason(why, sizeof why));
        }
    }
    ERR_clear_error();
    config_path_pop(err, mark);
    if (err->count != errors) {
        tls_client_free(tc);
        return NULL;
    }
    return tc;
}

void tls_client_free(struct tls_client *tc)
{
    if (!tc)
        return;
    SSL_CTX_free(tc->ctx);
    free(tc->server_name);
    free(tc);
}

static bool is_ip_literal(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

int tls_client_start(struct conn *c, const struct tls_client *tc, const char *host,
                     struct ssl_session_st **session)
{
    SSL *ssl = SSL_new(tc->ctx);
    if (!ssl) {
        ERR_clear_error();
        return -1;
    }
    const char *name = tc->server_name ? tc->server_name : host;
    bool ok = true;
    if (name && !is_ip_literal(name)) {
        ok &= SSL_set_tlsext_host_name(ssl, name) == 1;
        if (tc->verify)
            ok &= SSL_set1_host(ssl, name) == 1;
    } else if (name && tc->verify) {
        ok &= X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1;
    }
    SSL_set_ex_data(ssl, session_slot, session);
    if (*session)
        ok &= SSL_set_session(ssl, *session) == 1;
    if (!ok) {
        SSL_free(ssl);
        ERR_clear_error();
        return -1;
    }
    return conn_tls_connect(c, ssl);
}

void tls_session_forget(struct ssl_session_st **session)
{
    SSL_SESSION_free(*session);
    *session = NULL;
}

/* ---- connection facts ----------------------------------------------------------- */

char *tls_peer_subject(SSL *ssl)
{
    X509 *x = SSL_get0_peer_certificate(ssl);
    if (!x || SSL_get_verify_result(ssl) != X509_V_OK)
        return NULL;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return NULL;
    char *out = NULL;
    if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        char *data = NULL;
        long len = BIO_get_mem_data(b, &data);
        if (len > 0)
            out = strndup(data, (size_t)len);
    }
    BIO_free(b);
    ERR_clear_error();
    return out;
}

void tls_describe_failure(const struct conn *c, char *buf, size_t len)
{
    if (c->tls_verify != X509_V_OK) {
        snprintf(buf, len, "certificate verify failed: %s",
                 X509_verify_cert_error_string(c->tls_verify));
        return;
    }
    if (c->tls_error) {
        const char *r = ERR_reason_error_string(c->tls_error);
        if (r)
            snprintf(buf, len, "%s", r);
        else
            ERR_error_string_n(c->tls_error, buf, len);
        return;
    }
    snprintf(buf, len, "the connection closed during the handshake");
}

/* ---- accepting ------------------------------------------------------------------ */

/* A client connection while its server handshake runs. */
struct tls_accept {
    struct client_conn link; /* first: the loop's list of connections */
    struct net_loop *loop;
    struct conn *conn;
    struct event *timer;
    struct snapshot *snapshot; /* held: the SNI and ALPN callbacks read its tls_server */
    struct sockaddr_storage peer;
    const char *listener; /* lc->address, valid while `snapshot` is held */
    unsigned flags;
};

static void (*failure_hook)(const char *listener);

void tls_set_failure_hook(void (*hook)(const char *listener))
{
    failure_hook = hook;
}

static void accept_free(struct tls_accept *a, bool close_conn)
{
    if (a->timer)
        event_free(a->timer);
    if (close_conn)
        conn_free(a->conn);
    snapshot_release(a->snapshot);
    free(a);
}

/* Closes a connection that did not make it through the handshake. */
static void accept_close(struct tls_accept *a)
{
    net_loop_conn_removed(a->loop, &a->link);
    accept_free(a, true);
}

static const char *peer_ip(const struct tls_accept *a, char *buf)
{
    addr_ip_text((const struct sockaddr *)&a->peer, buf);
    return buf;
}

static void on_handshake(struct conn *c)
{
    struct tls_accept *a = c->owner;
    const unsigned char *proto = NULL;
    unsigned plen = 0;
    SSL_get0_alpn_selected(c->ssl, &proto, &plen);
    event_del(a->timer);
    unsigned flags = a->flags | LISTEN_TLS;
    const struct listener_codecs *codecs = listener_codecs();
    int r = -1;
    if (codecs && plen == 2 && memcmp(proto, "h2", 2) == 0)
        r = codecs->adopt_http2(a->loop->owner, c, &a->peer, flags);
    else if (codecs)
        r = codecs->adopt_http1(a->loop->owner, c, &a->peer, flags);
    if (r < 0) {
        accept_close(a);
        return;
    }
    /* The codec counts the connection now. */
    net_loop_conn_detach(a->loop, &a->link);
    accept_free(a, false);
}

static void on_error(struct conn *c, int err)
{
    struct tls_accept *a = c->owner;
    char ip[64], why[256];
    tls_describe_failure(c, why, sizeof why);
    log_debug("TLS handshake with %s failed: %s", peer_ip(a, ip), why);
    /* A peer that closed before sending a byte (a TCP health check) made no handshake to fail. */
    bool silent = BIO_number_read(SSL_get_rbio(c->ssl)) == 0;
    if (failure_hook && !silent)
        failure_hook(a->listener);
    accept_close(a);
}

static void on_nothing(struct conn *c)
{
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct tls_accept *a = arg;
    char ip[64];
    log_debug("TLS handshake with %s timed out", peer_ip(a, ip));
    if (failure_hook)
        failure_hook(a->listener);
    accept_close(a);
}

static void on_drain_or_stop(struct client_conn *link)
{
    accept_close((struct tls_accept *)link);
}

static const struct conn_events accept_events = {
    .on_read = on_nothing,
    .on_writable = on_nothing,
    .on_error = on_error,
    .on_handshake = on_handshake,
};

int tls_server_accept(struct net_loop *loop, int fd, const struct sockaddr_storage *peer,
                      unsigned flags, struct snapshot *s, const struct listen_config *lc)
{
    struct tls_accept *a = calloc(1, sizeof *a);
    if (!a)
        return -1;
    a->loop = loop;
    a->peer = *peer;
    a->flags = flags;
    a->link.on_drain = on_drain_or_stop;
    a->link.on_stop = on_drain_or_stop;
    a->conn = conn_new();
    a->timer = evtimer_new(loop->base, on_timeout, a);
    if (!a->conn || !a->timer || conn_open(a->conn, loop->base, fd, &accept_events, a) < 0)
        goto fail;
    SSL *ssl = SSL_new(lc->tls->certs[0].ctx);
    if (!ssl || conn_tls_accept(a->conn, ssl) < 0) {
        ERR_clear_error();
        goto fail;
    }
    a->snapshot = snapshot_hold(s);
    a->listener = lc->address;
    int ms = s->limits.header_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(a->timer, &tv);
    net_loop_conn_added(loop, &a->link);
    /* Last: a failure closes `a` (on_error), and the caller leaves the socket to us. */
    conn_tls_handshake_now(a->conn);
    return 0;
fail:
    if (a->conn)
        a->conn->fd = -1; /* the caller closes the socket */
    accept_free(a, true);
    return -1;
}
