#include "proto/websocket.h"

#include <string.h>

#include <openssl/evp.h>

static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void websocket_key(const uint8_t random[16], char out[WEBSOCKET_KEY_SIZE])
{
    EVP_EncodeBlock((unsigned char *)out, random, 16);
}

void websocket_accept(struct slice key, char out[WEBSOCKET_ACCEPT_SIZE])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) ||
        !EVP_DigestUpdate(ctx, key.base, key.len) ||
        !EVP_DigestUpdate(ctx, guid, sizeof guid - 1) || !EVP_DigestFinal_ex(ctx, digest, &len) ||
        len != 20) {
        out[0] = '\0'; /* matches no upstream answer: the upgrade fails with a 502 */
        EVP_MD_CTX_free(ctx);
        return;
    }
    EVP_MD_CTX_free(ctx);
    EVP_EncodeBlock((unsigned char *)out, digest, 20);
}
