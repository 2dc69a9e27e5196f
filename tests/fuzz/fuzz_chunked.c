/*
 * fuzz_chunked: decodes a chunked stream once in one piece and once split at
 * points chosen by the input, each piece in an exactly sized buffer. Both
 * must agree on the payload, the outcome and the bytes consumed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/http1_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct outcome {
    int result; /* 1 done, 0 needs more, -1 invalid */
    size_t used;
    size_t payload_len;
    uint64_t payload_hash;
};

static uint64_t hash_add(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211u;
    return h;
}

/* Decodes buf[0..len) split into pieces whose sizes come from `splits`
 * (cycled; an empty `splits` means one piece). */
static struct outcome run(const char *buf, size_t len, const uint8_t *splits, size_t nsplits)
{
    struct outcome o = {0, 0, 0, 14695981039346656037u};
    struct http1_chunked d;
    http1_chunked_init(&d);
    size_t pos = 0, si = 0;
    while (pos < len) {
        size_t n = len - pos;
        if (nsplits) {
            size_t want = (size_t)splits[si++ % nsplits] % 17 + 1;
            if (want < n)
                n = want;
        }
        char *piece = malloc(n);
        if (!piece)
            abort();
        memcpy(piece, buf + pos, n);
        size_t off = 0;
        while (off < n) {
            struct slice out;
            ssize_t r = http1_chunked_decode(&d, piece + off, n - off, &out);
            if (r < 0) {
                free(piece);
                o.result = -1;
                o.used = pos + off;
                return o;
            }
            if ((size_t)r > n - off)
                abort();
            if (out.len) {
                if (out.base < piece + off || out.base + out.len > piece + off + (size_t)r)
                    abort();
                o.payload_hash = hash_add(o.payload_hash, out.base, out.len);
                o.payload_len += out.len;
            }
            off += (size_t)r;
            if (r == 0) {
                if (!http1_chunked_done(&d))
                    abort(); /* nothing consumed before the end */
                break;
            }
        }
        free(piece);
        pos += off;
        if (http1_chunked_done(&d))
            break;
    }
    o.used = pos;
    o.result = http1_chunked_done(&d) ? 1 : 0;
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* The first byte says how many of the next bytes drive the splits. */
    size_t nsplits = data[0] % 16;
    if (nsplits + 1 > size)
        nsplits = size - 1;
    const uint8_t *splits = data + 1;
    const char *buf = (const char *)data + 1 + nsplits;
    size_t len = size - 1 - nsplits;

    struct outcome whole = run(buf, len, NULL, 0);
    struct outcome split = run(buf, len, splits, nsplits);
    struct outcome bytewise = run(buf, len, (const uint8_t *)"\0", 1);
    if (whole.result != split.result || whole.payload_len != split.payload_len ||
        whole.payload_hash != split.payload_hash || whole.result != bytewise.result ||
        whole.payload_hash != bytewise.payload_hash)
        abort();
    /* Once done, every split consumed exactly the same bytes. */
    if (whole.result == 1 && (whole.used != split.used || whole.used != bytewise.used))
        abort();
    return 0;
}
