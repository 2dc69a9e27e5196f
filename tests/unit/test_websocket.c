/*
 * The RFC 6455 handshake values the RFC 8441 bridge makes (proto/websocket):
 * the accept of RFC 6455's own example key, and keys that are 24 base64
 * characters whose accept is 28.
 */
#include <string.h>

#include "proto/websocket.h"
#include "test.h"

int main(void)
{
    char accept[WEBSOCKET_ACCEPT_SIZE];
    /* RFC 6455 1.3 */
    websocket_accept(SLICE_LIT("dGhlIHNhbXBsZSBub25jZQ=="), accept);
    is_str(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "RFC 6455's example key");

    uint8_t random[16];
    for (int i = 0; i < 16; i++)
        random[i] = (uint8_t)(i * 17 + 3);
    char key[WEBSOCKET_KEY_SIZE];
    websocket_key(random, key);
    is_int((long)strlen(key), 24, "a key is 24 characters");
    ok(key[22] == '=' && key[23] == '=', "16 bytes end in ==");
    websocket_accept(slice_cstr(key), accept);
    is_int((long)strlen(accept), 28, "an accept is 28 characters");

    uint8_t zero[16] = {0};
    websocket_key(zero, key);
    is_str(key, "AAAAAAAAAAAAAAAAAAAAAA==", "sixteen zero bytes");
    return test_done();
}
