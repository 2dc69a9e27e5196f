/*
 * base64url: the strict base64url decoder of JOSE (RFC 7515 section 2 and
 * appendix C; RFC 4648 section 5).
 *
 * Strict means one text per byte string: the URL-safe alphabet only (no
 * '+', '/', '=' padding or whitespace), no length of 1 modulo 4, and the
 * unused low bits of the last character zero (so "AB" and "AC" cannot both
 * decode to the same byte). A JWT with any other spelling is refused rather
 * than normalised: two spellings of one token would give two cache keys
 * and let a signature be "re-encoded" past a deny list.
 *
 * Thread: any; pure functions, no state.
 */
#ifndef SLUICE_BASE64URL_H
#define SLUICE_BASE64URL_H

#include <stdbool.h>
#include <stddef.h>

/* The decoded size of `len` valid characters (floor(len * 3 / 4)). */
static inline size_t base64url_decoded_len(size_t len)
{
    return len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
}

/*
 * Decodes `len` characters of `in` into `out` (room for
 * base64url_decoded_len(len) bytes). Returns the number of bytes written,
 * or -1 when the text is not strict base64url (see above); `out` is then
 * partly written.
 */
long base64url_decode(const char *in, size_t len, unsigned char *out);

/* True when `c` is in the base64url alphabet (A-Z a-z 0-9 - _). */
bool base64url_is_char(char c);

/*
 * Encodes `len` bytes into `out` (room for (len * 4 + 2) / 3 characters and
 * a NUL), without padding. Returns the number of characters, NUL excluded.
 */
size_t base64url_encode(const unsigned char *in, size_t len, char *out);

#endif
