/*
 * base64url: strict decoding and unpadded encoding (see base64url.h).
 * Table-driven: one lookup per character, -1 for anything outside the
 * alphabet, so the decoder never branches on the character classes.
 */
#include "base/base64url.h"

#include <stdint.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Built from `alphabet` at compile time would need C23; spelled out once. */
static const int8_t value_of[256] = {
    ['A'] = 0,  ['B'] = 1,  ['C'] = 2,  ['D'] = 3,  ['E'] = 4,  ['F'] = 5,  ['G'] = 6,  ['H'] = 7,
    ['I'] = 8,  ['J'] = 9,  ['K'] = 10, ['L'] = 11, ['M'] = 12, ['N'] = 13, ['O'] = 14, ['P'] = 15,
    ['Q'] = 16, ['R'] = 17, ['S'] = 18, ['T'] = 19, ['U'] = 20, ['V'] = 21, ['W'] = 22, ['X'] = 23,
    ['Y'] = 24, ['Z'] = 25, ['a'] = 26, ['b'] = 27, ['c'] = 28, ['d'] = 29, ['e'] = 30, ['f'] = 31,
    ['g'] = 32, ['h'] = 33, ['i'] = 34, ['j'] = 35, ['k'] = 36, ['l'] = 37, ['m'] = 38, ['n'] = 39,
    ['o'] = 40, ['p'] = 41, ['q'] = 42, ['r'] = 43, ['s'] = 44, ['t'] = 45, ['u'] = 46, ['v'] = 47,
    ['w'] = 48, ['x'] = 49, ['y'] = 50, ['z'] = 51, ['0'] = 52, ['1'] = 53, ['2'] = 54, ['3'] = 55,
    ['4'] = 56, ['5'] = 57, ['6'] = 58, ['7'] = 59, ['8'] = 60, ['9'] = 61, ['-'] = 62, ['_'] = 63,
};

bool base64url_is_char(char c)
{
    unsigned char u = (unsigned char)c;
    return u == 'A' || value_of[u] != 0;
}

long base64url_decode(const char *in, size_t len, unsigned char *out)
{
    if (len % 4 == 1)
        return -1;
    size_t n = 0;
    uint32_t acc = 0;
    size_t i = 0;
    for (; i < len; i++) {
        if (!base64url_is_char(in[i]))
            return -1;
        acc = acc << 6 | (uint32_t)value_of[(unsigned char)in[i]];
        if (i % 4 == 3) {
            out[n++] = (unsigned char)(acc >> 16);
            out[n++] = (unsigned char)(acc >> 8);
            out[n++] = (unsigned char)acc;
            acc = 0;
        }
    }
    switch (len % 4) {
    case 2: /* 12 bits: one byte, the low 4 bits must be zero */
        if (acc & 0xf)
            return -1;
        out[n++] = (unsigned char)(acc >> 4);
        break;
    case 3: /* 18 bits: two bytes, the low 2 bits must be zero */
        if (acc & 0x3)
            return -1;
        out[n++] = (unsigned char)(acc >> 10);
        out[n++] = (unsigned char)(acc >> 2);
        break;
    default:
        break;
    }
    return (long)n;
}

size_t base64url_encode(const unsigned char *in, size_t len, char *out)
{
    size_t n = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[n++] = alphabet[v >> 18 & 63];
        out[n++] = alphabet[v >> 12 & 63];
        out[n++] = alphabet[v >> 6 & 63];
        out[n++] = alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[n++] = alphabet[v >> 18 & 63];
        out[n++] = alphabet[v >> 12 & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[n++] = alphabet[v >> 18 & 63];
        out[n++] = alphabet[v >> 12 & 63];
        out[n++] = alphabet[v >> 6 & 63];
    }
    out[n] = '\0';
    return n;
}
