/*
 * fuzz_http1_parse: feeds arbitrary bytes to the request and response head
 * parsers and the framing rules, and checks the parser's invariants:
 * results stay inside the buffer, a parsed head parses the same on its own,
 * and every strict prefix of it is HTTP1_PARTIAL.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/http1_parse.h"

#define MAXH 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_slice(struct slice s, const char *buf, int len)
{
    if (s.len && (s.base < buf || s.base + s.len > buf + len))
        abort();
}

static void check_headers(const struct header *h, size_t n, const char *buf, int len)
{
    for (size_t i = 0; i < n; i++) {
        check_slice(h[i].name, buf, len);
        check_slice(h[i].value, buf, len);
        if (h[i].name.len == 0)
            abort();
    }
}

static void check_request(const char *buf, size_t size, size_t max)
{
    struct header hdr[MAXH];
    struct http1_request_head h;
    int r = http1_parse_request(buf, size, &h, hdr, max);
    if (r != HTTP1_INVALID && r != HTTP1_PARTIAL && r != HTTP1_TOO_MANY_HEADERS && r <= 0)
        abort();
    if (r <= 0)
        return;
    if ((size_t)r > size || h.num_headers > max || h.method.len == 0 || h.target.len == 0)
        abort();
    if (h.minor_version != 0 && h.minor_version != 1)
        abort();
    check_slice(h.method, buf, r);
    check_slice(h.target, buf, r);
    check_headers(hdr, h.num_headers, buf, r);
    /* The Host check reads only inside its value (ASan sees any overrun). */
    for (size_t i = 0; i < h.num_headers; i++)
        (void)http1_valid_host(hdr[i].value);

    enum http1_framing f;
    uint64_t length;
    int s = http1_request_framing(h.minor_version, hdr, h.num_headers, &f, &length);
    if (s != 0 && s != 400 && s != 501)
        abort();
    if (s == 0 && f == HTTP1_BODY_CLOSE)
        abort();

    /* The head alone parses to the same length, and its prefixes are partial. */
    struct header hdr2[MAXH];
    struct http1_request_head h2;
    if (http1_parse_request(buf, (size_t)r, &h2, hdr2, max) != r)
        abort();
    size_t step = (size_t)r / 8 + 1;
    for (size_t k = 0; k < (size_t)r; k += step) {
        if (http1_parse_request(buf, k, &h2, hdr2, max) != HTTP1_PARTIAL)
            abort();
    }
    if (http1_parse_request(buf, (size_t)r - 1, &h2, hdr2, max) != HTTP1_PARTIAL)
        abort();
}

static void check_response(const char *buf, size_t size, size_t max, bool head)
{
    struct header hdr[MAXH];
    struct http1_response_head h;
    int r = http1_parse_response(buf, size, &h, hdr, max);
    if (r != HTTP1_INVALID && r != HTTP1_PARTIAL && r != HTTP1_TOO_MANY_HEADERS && r <= 0)
        abort();
    if (r <= 0)
        return;
    if ((size_t)r > size || h.num_headers > max || h.status < 100 || h.status > 999)
        abort();
    check_slice(h.reason, buf, r);
    check_headers(hdr, h.num_headers, buf, r);
    /* The Host check reads only inside its value (ASan sees any overrun). */
    for (size_t i = 0; i < h.num_headers; i++)
        (void)http1_valid_host(hdr[i].value);

    enum http1_framing f;
    uint64_t length;
    int s = http1_response_framing(h.status, head, hdr, h.num_headers, &f, &length);
    if (s != 0 && s != -1)
        abort();

    struct header hdr2[MAXH];
    struct http1_response_head h2;
    if (http1_parse_response(buf, (size_t)r, &h2, hdr2, max) != r)
        abort();
    if (http1_parse_response(buf, (size_t)r - 1, &h2, hdr2, max) != HTTP1_PARTIAL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* The first byte picks max_headers and the HEAD flag. */
    size_t max = data[0] % (MAXH + 1);
    bool head = data[0] & 0x80;
    size -= 1;
    /* An exactly sized copy lets AddressSanitizer see any over-read. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, size);
    check_request(buf, size, max);
    check_response(buf, size, max, head);
    free(buf);
    return 0;
}
