/*
 * fuzz_config: loads arbitrary bytes as a whole configuration file, from
 * memory (config_load_text), the way `sluice -t -c FILE` does. A snapshot
 * that loads is released again, so a leak in any path of the loader (a
 * filter's create() or destroy() included) shows. Every file the
 * configuration names (certificates, keys, JWKS, htpasswd, API keys) is read
 * from a sandbox folder made once at start-up (err.file_root: a name resolves
 * by its last component), so no input makes the loader open anything else.
 * The sandbox holds a certificate and key (cert.pem, key.pem, also ca.pem),
 * a JWKS (jwks.json), a PEM public key (public.pem), an htpasswd file
 * (users.htpasswd) and an API key file (keys.json); other names are missing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/config.h"
#include "conf/config_error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char cert_pem[] = "-----BEGIN CERTIFICATE-----\n"
                               "MIIBfzCCASWgAwIBAgIUQXZCDuGriGhtkCKWx+m4WsIMtO8wCgYIKoZIzj0EAwIw\n"
                               "FDESMBAGA1UEAwwJZnV6ei50ZXN0MCAXDTI2MTIwNTA4MjUwMFoYDzIxMjYxMTEx\n"
                               "MDgyNTAwWjAUMRIwEAYDVQQDDAlmdXp6LnRlc3QwWTATBgcqhkjOPQIBBggqhkjO\n"
                               "PQMBBwNCAARU0oi8sC4E+jyGPN+MguVG+UKiYvuBGff3mMimfRMw2Ps7Kqohjfxg\n"
                               "sbhMtU2XNkhQLPN7r63x6SGVtGhipsZeo1MwUTAdBgNVHQ4EFgQUUDM4tyY9Q02F\n"
                               "TyQINhxhLuxMeTcwHwYDVR0jBBgwFoAUUDM4tyY9Q02FTyQINhxhLuxMeTcwDwYD\n"
                               "VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAmg6bDL6+573i46xhGzfr\n"
                               "FuS03uOYLV1pt/NVA63EtK4CIGhWveo9XqcSoG4fpggL+cLVY5srp5F12kNRlHu6\n"
                               "Z8lz\n"
                               "-----END CERTIFICATE-----\n";

static const char key_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                              "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfat104mdRfdmJYTn\n"
                              "fPAQGA1E3fpQemQej7HxKdRpXPqhRANCAARU0oi8sC4E+jyGPN+MguVG+UKiYvuB\n"
                              "Gff3mMimfRMw2Ps7KqohjfxgsbhMtU2XNkhQLPN7r63x6SGVtGhipsZe\n"
                              "-----END PRIVATE KEY-----\n";

static const char public_pem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEVNKIvLAuBPo8hjzfjILlRvlComL7\n"
    "gRn395jIpn0TMNj7OyqqIY38YLG4TLVNlzZIUCzze6+t8ekhlbRoYqbGXg==\n"
    "-----END PUBLIC KEY-----\n";

static const char jwks_json[] =
    "{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"kid\": \"partners-2024\", "
    "\"alg\": \"ES256\", \"x\": \"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\", "
    "\"y\": \"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}, "
    "{\"kty\": \"oct\", \"kid\": \"h\", \"k\": \"hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg\"}]}";

static const char htpasswd[] =
    "alice:$2b$10$YWMHjAeNGLBdGX5J/i09QOofs67Ia0MgNnjjgZJqlwOKo/YDiKvsW\n"
    "# a comment\n"
    "carol:$6$ZcPnqaEXz..G5awo$5Xrh5XQs8yBwtSs8XNIYd6K2HL6itg5WHBOeIpKwGYMsNyysIv6gr7HpfHyyCcMA"
    "fgnR/6tESQ.ri54jCWNmA1\n";

static const char keys_json[] = "{\"k-fuzz-1\": \"mobile-app\", \"k-fuzz-2\": \"web-app\"}";

static char root[256];

static void put(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        abort();
}

static void remove_root(void)
{
    static const char *const names[] = {"cert.pem",       "key.pem",   "ca.pem",   "public.pem",
                                        "users.htpasswd", "jwks.json", "keys.json"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", root, names[i]);
        unlink(path);
    }
    rmdir(root);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/sluice-fuzz-config-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(root))
        abort();
    put("cert.pem", cert_pem);
    put("ca.pem", cert_pem);
    put("key.pem", key_pem);
    put("public.pem", public_pem);
    put("users.htpasswd", htpasswd);
    put("jwks.json", jwks_json);
    put("keys.json", keys_json);
    atexit(remove_root);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config_error err = {0};
    err.file_root = root;
    /* An exactly sized copy lets AddressSanitizer see any over-read. */
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    struct snapshot *s = config_load_text("fuzz.json", text, size, &err);
    /* One message per problem, and no snapshot when there is any. */
    if (s && err.count)
        abort();
    if (!s && !err.count)
        abort();
    for (size_t i = 0; i < err.count; i++)
        if (!err.messages[i] || !err.messages[i][0])
            abort();
    snapshot_release(s);
    config_error_clear(&err);
    free(text);
    return 0;
}
