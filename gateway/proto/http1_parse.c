/*
 * http1_parse: strict RFC 9112 head parsing, body framing and the chunked
 * decoder. Every loop is a table lookup per byte with no calls; positions
 * are indices into the caller's buffer, checked against its length before
 * each read, so a truncated head is always HTTP1_PARTIAL and a bad byte is
 * rejected as soon as it is seen.
 */
#include "proto/http1_parse.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/* Character classes, one bit each, in a single 256-entry table. */
enum {
    C_TCHAR = 1,  /* token character, RFC 9110 5.6.2 */
    C_TARGET = 2, /* request-target byte: visible ASCII 0x21-0x7E */
    C_VALUE = 4,  /* field-value / reason byte: VCHAR, SP, HTAB, obs-text */
    C_HEX = 8,    /* HEXDIG */
    C_EXT = 16,   /* chunk-ext byte: anything but CTLs (HTAB allowed) */
};

#define TC (C_TCHAR | C_TARGET | C_VALUE | C_EXT)
#define VC (C_TARGET | C_VALUE | C_EXT) /* VCHAR that is not a tchar */
#define HX (TC | C_HEX)
#define WS (C_VALUE | C_EXT)
#define OB (C_VALUE | C_EXT) /* obs-text */

/* clang-format off */
static const unsigned char cls[256] = {
    /* 0x00-0x1f: CTLs; only HTAB is allowed anywhere */
    0, 0, 0, 0, 0, 0, 0, 0, 0, WS, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x20-0x2f:  SP  !  "  #  $  %  &  '  (  )  *  +  ,  -  .  / */
    WS, TC, VC, TC, TC, TC, TC, TC, VC, VC, TC, TC, VC, TC, TC, VC,
    /* 0x30-0x3f: 0-9 : ; < = > ? */
    HX, HX, HX, HX, HX, HX, HX, HX, HX, HX, VC, VC, VC, VC, VC, VC,
    /* 0x40-0x4f: @ A-O */
    VC, HX, HX, HX, HX, HX, HX, TC, TC, TC, TC, TC, TC, TC, TC, TC,
    /* 0x50-0x5f: P-Z [ \ ] ^ _ */
    TC, TC, TC, TC, TC, TC, TC, TC, TC, TC, TC, VC, VC, VC, TC, TC,
    /* 0x60-0x6f: ` a-o */
    TC, HX, HX, HX, HX, HX, HX, TC, TC, TC, TC, TC, TC, TC, TC, TC,
    /* 0x70-0x7f: p-z { | } ~ DEL */
    TC, TC, TC, TC, TC, TC, TC, TC, TC, TC, TC, VC, TC, VC, TC, 0,
    /* 0x80-0xff: obs-text */
    OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB,
    OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB,
    OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB,
    OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB,
    OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB,
    OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB,
    OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB,
    OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB, OB,
};
/* clang-format on */

#define IS(c, k) (cls[(unsigned char)(c)] & (k))

/*
 * The long runs of a head (the request-target, field values) are scanned 16
 * bytes at a time where SSE2 is available (every x86-64): the helpers
 * return the position of the first byte that is not allowed in the run, or
 * where fewer than 16 bytes remain, and the byte loops finish from there, so
 * the classification above stays the single definition of what is allowed.
 */
#if defined(__SSE2__)
#include <emmintrin.h>

/* First byte at or after p that is not VCHAR, SP, HTAB or obs-text (C_VALUE). */
static size_t skip_value(const char *buf, size_t len, size_t p)
{
    const __m128i ctl_max = _mm_set1_epi8(0x1f), del = _mm_set1_epi8(0x7f);
    const __m128i tab = _mm_set1_epi8('\t');
    for (; p + 16 <= len; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(buf + p));
        __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, ctl_max), v); /* v <= 0x1f */
        ctl = _mm_andnot_si128(_mm_cmpeq_epi8(v, tab), ctl);
        int mask = _mm_movemask_epi8(_mm_or_si128(ctl, _mm_cmpeq_epi8(v, del)));
        if (mask)
            return p + (size_t)__builtin_ctz((unsigned)mask);
    }
    return p;
}

/* First byte at or after p that is not visible ASCII 0x21-0x7e (C_TARGET). */
static size_t skip_target(const char *buf, size_t len, size_t p)
{
    const __m128i low = _mm_set1_epi8(0x21), span = _mm_set1_epi8(0x7e - 0x21);
    for (; p + 16 <= len; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(buf + p));
        __m128i t = _mm_sub_epi8(v, low); /* in range iff t <= span, unsigned */
        int mask = ~_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(t, span), t)) & 0xffff;
        if (mask)
            return p + (size_t)__builtin_ctz((unsigned)mask);
    }
    return p;
}
#else
static size_t skip_value(const char *buf, size_t len, size_t p)
{
    return p;
}

static size_t skip_target(const char *buf, size_t len, size_t p)
{
    return p;
}
#endif

/* Up to 8 empty lines may precede a request line (RFC 9112 2.2). */
#define MAX_LEADING_CRLF 8
#define MAX_EXT_LINE 4096 /* a chunk-size line without its CRLF */
#define MAX_TRAILER 16384
#define MAX_SIZE_DIGITS 16

/*
 * Matches the literal `lit` at buf[*p..len). Returns 1 and advances *p on a
 * full match, 0 (PARTIAL) when the bytes available are a prefix of it, and
 * -1 on a mismatch.
 */
static int expect(const char *buf, size_t len, size_t *p, const char *lit, size_t n)
{
    size_t avail = len - *p;
    size_t m = avail < n ? avail : n;
    if (memcmp(buf + *p, lit, m) != 0)
        return -1;
    if (m < n)
        return 0;
    *p += n;
    return 1;
}

/*
 * Parses "HTTP/1.x" at buf[*p..len), the version shared by both start
 * lines (RFC 9112 2.3): only HTTP/1.0 and HTTP/1.1 are accepted.
 */
static int parse_version(const char *buf, size_t len, size_t *p, int *minor)
{
    int r = expect(buf, len, p, "HTTP/1.", 7);
    if (r <= 0)
        return r < 0 ? HTTP1_INVALID : HTTP1_PARTIAL;
    if (*p >= len)
        return HTTP1_PARTIAL;
    if (buf[*p] != '0' && buf[*p] != '1')
        return HTTP1_INVALID;
    *minor = buf[*p] - '0';
    (*p)++;
    return 0;
}

/* Expects CRLF at buf[*p]; a bare LF or a lone CR is invalid (RFC 9112 2.2). */
static int parse_crlf(const char *buf, size_t len, size_t *p)
{
    int r = expect(buf, len, p, "\r\n", 2);
    return r < 0 ? HTTP1_INVALID : r == 0 ? HTTP1_PARTIAL : 0;
}

/*
 * Parses the field lines and the empty line that ends the head, starting at
 * buf[p] (RFC 9112 5). Returns the head's total length or an error.
 */
static int parse_fields(const char *buf, size_t len, size_t p, struct header *headers,
                        size_t max_headers, size_t *num_headers)
{
    size_t n = 0;
    for (;;) {
        if (p >= len)
            return HTTP1_PARTIAL;
        if (buf[p] == '\r') {
            if (p + 1 >= len)
                return HTTP1_PARTIAL;
            if (buf[p + 1] != '\n')
                return HTTP1_INVALID;
            *num_headers = n;
            return (int)(p + 2);
        }
        /* A line starting with SP/HTAB is obs-fold (RFC 9112 5.2), or
         * whitespace after the start line (2.2): both rejected. */
        size_t name = p;
        while (p < len && IS(buf[p], C_TCHAR))
            p++;
        if (p >= len)
            return HTTP1_PARTIAL;
        /* Empty names and whitespace before the colon are invalid (5.1). */
        if (p == name || buf[p] != ':')
            return HTTP1_INVALID;
        if (n >= max_headers)
            return HTTP1_TOO_MANY_HEADERS;
        size_t name_end = p++;
        while (p < len && (buf[p] == ' ' || buf[p] == '\t'))
            p++;
        size_t value = p;
        p = skip_value(buf, len, p);
        while (p < len && IS(buf[p], C_VALUE))
            p++;
        if (p >= len)
            return HTTP1_PARTIAL;
        size_t value_end = p;
        /* Anything but CR here is a control character: NUL, bare LF, ... */
        if (buf[p] != '\r')
            return HTTP1_INVALID;
        if (p + 1 >= len)
            return HTTP1_PARTIAL;
        if (buf[p + 1] != '\n')
            return HTTP1_INVALID;
        p += 2;
        while (value_end > value && (buf[value_end - 1] == ' ' || buf[value_end - 1] == '\t'))
            value_end--;
        headers[n].name = slice_make(buf + name, name_end - name);
        headers[n].value = slice_make(buf + value, value_end - value);
        n++;
    }
}

int http1_parse_request(const char *buf, size_t len, struct http1_request_head *out,
                        struct header *headers, size_t max_headers)
{
    /* Heads are bounded far below this by the config; the cap keeps the
     * int result meaningful. */
    if (len > INT_MAX)
        len = INT_MAX;
    size_t p = 0;
    for (int i = 0; p < len && buf[p] == '\r'; i++) {
        if (i == MAX_LEADING_CRLF)
            return HTTP1_INVALID;
        if (p + 1 >= len)
            return HTTP1_PARTIAL;
        if (buf[p + 1] != '\n')
            return HTTP1_INVALID;
        p += 2;
    }

    /* request-line = method SP request-target SP HTTP-version (RFC 9112 3) */
    size_t method = p;
    while (p < len && IS(buf[p], C_TCHAR))
        p++;
    if (p >= len)
        return HTTP1_PARTIAL;
    if (p == method || buf[p] != ' ')
        return HTTP1_INVALID;
    size_t method_end = p++;

    size_t target = p;
    p = skip_target(buf, len, p);
    while (p < len && IS(buf[p], C_TARGET))
        p++;
    if (p >= len)
        return HTTP1_PARTIAL;
    if (p == target || buf[p] != ' ')
        return HTTP1_INVALID;
    size_t target_end = p++;

    int minor = 0;
    int r = parse_version(buf, len, &p, &minor);
    if (r < 0)
        return r;
    r = parse_crlf(buf, len, &p);
    if (r < 0)
        return r;

    size_t num = 0;
    r = parse_fields(buf, len, p, headers, max_headers, &num);
    if (r < 0)
        return r;
    out->method = slice_make(buf + method, method_end - method);
    out->target = slice_make(buf + target, target_end - target);
    out->minor_version = minor;
    out->headers = headers;
    out->num_headers = num;
    return r;
}

int http1_parse_response(const char *buf, size_t len, struct http1_response_head *out,
                         struct header *headers, size_t max_headers)
{
    if (len > INT_MAX)
        len = INT_MAX;
    size_t p = 0;
    int minor = 0;
    int r = parse_version(buf, len, &p, &minor);
    if (r < 0)
        return r;

    /* status-line = HTTP-version SP status-code SP [ reason-phrase ]
     * (RFC 9112 4); the status code is three digits, the first 1-9. */
    r = expect(buf, len, &p, " ", 1);
    if (r <= 0)
        return r < 0 ? HTTP1_INVALID : HTTP1_PARTIAL;
    int status = 0;
    for (int i = 0; i < 3; i++, p++) {
        if (p >= len)
            return HTTP1_PARTIAL;
        char c = buf[p];
        if (c < (i == 0 ? '1' : '0') || c > '9')
            return HTTP1_INVALID;
        status = status * 10 + (c - '0');
    }

    /* The SP before an empty reason is often missing in the wild; a status
     * line ending right after the code is accepted. */
    size_t reason = p, reason_end = p;
    if (p >= len)
        return HTTP1_PARTIAL;
    if (buf[p] == ' ') {
        reason = ++p;
        while (p < len && IS(buf[p], C_VALUE))
            p++;
        if (p >= len)
            return HTTP1_PARTIAL;
        reason_end = p;
    }
    r = parse_crlf(buf, len, &p);
    if (r < 0)
        return r;

    size_t num = 0;
    r = parse_fields(buf, len, p, headers, max_headers, &num);
    if (r < 0)
        return r;
    out->minor_version = minor;
    out->status = status;
    out->reason = slice_make(buf + reason, reason_end - reason);
    out->headers = headers;
    out->num_headers = num;
    return r;
}

/* Trims OWS (SP/HTAB) from both ends. */
static struct slice trim_ows(struct slice s)
{
    while (s.len && (s.base[0] == ' ' || s.base[0] == '\t')) {
        s.base++;
        s.len--;
    }
    while (s.len && (s.base[s.len - 1] == ' ' || s.base[s.len - 1] == '\t'))
        s.len--;
    return s;
}

/* Content-Length = 1*DIGIT (RFC 9110 8.6), nothing else, overflow-checked. */
static bool parse_length(struct slice v, uint64_t *out)
{
    v = trim_ows(v);
    if (v.len == 0)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        unsigned d = (unsigned char)v.base[i] - '0';
        if (d > 9 || n > (UINT64_MAX - d) / 10)
            return false;
        n = n * 10 + d;
    }
    *out = n;
    return true;
}

/* Counts the Transfer-Encoding and Content-Length fields and remembers the
 * first of each. */
static void scan_framing(const struct header *headers, size_t n, size_t *te, size_t *cl,
                         const struct slice **te_value, const struct slice **cl_value)
{
    *te = *cl = 0;
    *te_value = *cl_value = NULL;
    for (size_t i = 0; i < n; i++) {
        struct slice name = headers[i].name;
        if (slice_ieq_cstr(name, "transfer-encoding")) {
            if ((*te)++ == 0)
                *te_value = &headers[i].value;
        } else if (slice_ieq_cstr(name, "content-length")) {
            if ((*cl)++ == 0)
                *cl_value = &headers[i].value;
        }
    }
}

/* unreserved / sub-delims of RFC 3986 2.2-2.3 (the bytes of a reg-name besides "%"). */
static bool host_char(unsigned char c)
{
    /*
     * A bitmap over ASCII of ALPHA, DIGIT and "-._~!$&'()*+,;=": checked for
     * every byte of every request's Host, so no strchr per byte.
     */
    static const uint64_t lo = 0x2bff7fd200000000ULL, hi = 0x47fffffe87fffffeULL;
    return c < 64 ? (lo >> c) & 1 : c < 128 && ((hi >> (c - 64)) & 1);
}

static bool hex_digit(unsigned char c)
{
    return (cls[c] & C_HEX) != 0;
}

/* The inside of "[...]": an IPv6address, or IPvFuture ("v" 1*HEXDIG "." 1*(...)). */
static bool ip_literal(const char *p, size_t n)
{
    if (n > 1 && (p[0] == 'v' || p[0] == 'V')) {
        size_t i = 1;
        while (i < n && hex_digit((unsigned char)p[i]))
            i++;
        if (i == 1 || i >= n || p[i] != '.' || i + 1 == n)
            return false;
        for (i++; i < n; i++)
            if (!host_char((unsigned char)p[i]) && p[i] != ':')
                return false;
        return true;
    }
    char buf[INET6_ADDRSTRLEN + 1];
    unsigned char addr[16];
    if (n == 0 || n >= sizeof buf)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!hex_digit((unsigned char)p[i]) && p[i] != ':' && p[i] != '.')
            return false;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return inet_pton(AF_INET6, buf, addr) == 1;
}

bool http1_valid_host(struct slice host)
{
    const char *p = host.base;
    size_t n = host.len, i = 0;
    if (n > 0 && p[0] == '[') {
        const char *close = memchr(p, ']', n);
        if (!close || !ip_literal(p + 1, (size_t)(close - p - 1)))
            return false;
        i = (size_t)(close - p) + 1;
    } else {
        while (i < n && p[i] != ':') {
            unsigned char c = (unsigned char)p[i];
            if (c == '%') {
                if (i + 2 >= n || !hex_digit((unsigned char)p[i + 1]) ||
                    !hex_digit((unsigned char)p[i + 2]))
                    return false;
                i += 3;
                continue;
            }
            if (!host_char(c))
                return false;
            i++;
        }
        if (i == 0 && n > 0)
            return false; /* a port without a host */
    }
    if (i == n)
        return true;
    if (p[i] != ':' || n - i - 1 > 5)
        return false;
    for (i++; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return false;
    return true;
}

int http1_request_framing(int minor_version, const struct header *headers, size_t n,
                          enum http1_framing *framing, uint64_t *length)
{
    size_t te, cl;
    const struct slice *te_value, *cl_value;
    scan_framing(headers, n, &te, &cl, &te_value, &cl_value);
    *framing = HTTP1_BODY_NONE;
    *length = 0;
    /* Both framings at once is the classic smuggling vector (RFC 9112 6.3
     * item 3 allows rejecting it): checked before anything else. */
    if (te && cl)
        return 400;
    /* HTTP/1.0 has no transfer codings: its framing is faulty (RFC 9112 6.1). */
    if (te && minor_version == 0)
        return 400;
    if (te) {
        /* Only the single coding "chunked" is implemented (RFC 9112 6.1,
         * SPEC 7 "framing"): anything else is 501. */
        if (te != 1 || !slice_ieq_cstr(trim_ows(*te_value), "chunked"))
            return 501;
        *framing = HTTP1_BODY_CHUNKED;
        return 0;
    }
    if (cl) {
        /* Duplicates are a 400 even when equal, and so is a list. */
        if (cl != 1 || !parse_length(*cl_value, length))
            return 400;
        *framing = HTTP1_BODY_LENGTH;
        return 0;
    }
    return 0;
}

int http1_response_framing(int status, bool head_request, const struct header *headers, size_t n,
                           enum http1_framing *framing, uint64_t *length)
{
    *framing = HTTP1_BODY_NONE;
    *length = 0;
    /* RFC 9112 6.3 item 1: these never have a body, whatever the fields say. */
    if (head_request || (status >= 100 && status < 200) || status == 204 || status == 304)
        return 0;
    size_t te, cl;
    const struct slice *te_value, *cl_value;
    scan_framing(headers, n, &te, &cl, &te_value, &cl_value);
    if (te && cl)
        return -1;
    if (te) {
        if (te != 1 || !slice_ieq_cstr(trim_ows(*te_value), "chunked"))
            return -1;
        *framing = HTTP1_BODY_CHUNKED;
        return 0;
    }
    if (cl) {
        /* Identical duplicate fields are tolerated from an upstream
         * (RFC 9110 8.6); differing or malformed ones are not. */
        uint64_t first = 0;
        if (!parse_length(*cl_value, &first))
            return -1;
        for (size_t i = 0; i < n; i++) {
            uint64_t v;
            if (slice_ieq_cstr(headers[i].name, "content-length") &&
                (!parse_length(headers[i].value, &v) || v != first))
                return -1;
        }
        *framing = HTTP1_BODY_LENGTH;
        *length = first;
        return 0;
    }
    *framing = HTTP1_BODY_CLOSE;
    return 0;
}

/* Decoder states; the values are private to this file. */
enum {
    CH_SIZE = 0,     /* first hex digit of a chunk-size */
    CH_SIZE_MORE,    /* more hex digits, or what follows them */
    CH_SIZE_BWS,     /* BWS after the size: only ';' may follow */
    CH_EXT,          /* inside chunk extensions, up to CR */
    CH_SIZE_LF,      /* LF ending the size line */
    CH_DATA,         /* payload bytes */
    CH_DATA_CR,      /* CR after the payload */
    CH_DATA_LF,      /* LF after the payload */
    CH_TRAILER,      /* start of a trailer line, or the final CRLF */
    CH_TRAILER_NAME, /* in a trailer field's name */
    CH_TRAILER_VAL,  /* in a trailer field's value */
    CH_TRAILER_LF,   /* LF ending a trailer line */
    CH_END_LF,       /* LF ending the message */
    CH_DONE,
    CH_ERROR,
};

void http1_chunked_init(struct http1_chunked *d)
{
    d->state = CH_SIZE;
    d->remaining = 0;
    d->line_bytes = 0;
    d->trailer_bytes = 0;
    d->digits = 0;
}

bool http1_chunked_done(const struct http1_chunked *d)
{
    return d->state == CH_DONE;
}

static int hex_value(unsigned char c)
{
    if (c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

ssize_t http1_chunked_decode(struct http1_chunked *d, const char *buf, size_t len,
                             struct slice *data)
{
    data->base = buf;
    data->len = 0;
    if (d->state == CH_ERROR)
        return -1;
    size_t p = 0;
    while (p < len && d->state != CH_DONE) {
        unsigned char c = (unsigned char)buf[p];
        switch (d->state) {
        case CH_DATA: {
            size_t avail = len - p;
            size_t take = d->remaining < avail ? (size_t)d->remaining : avail;
            data->base = buf + p;
            data->len = take;
            d->remaining -= take;
            if (d->remaining == 0)
                d->state = CH_DATA_CR;
            return (ssize_t)(p + take);
        }
        case CH_SIZE:
            /* chunk-size = 1*HEXDIG (RFC 9112 7.1); at most 16 digits
             * (SPEC 7 "framing"), which always fits in 64 bits. */
            if (!IS(c, C_HEX))
                goto invalid;
            d->remaining = (uint64_t)hex_value(c);
            d->digits = 1;
            d->line_bytes = 1;
            d->state = CH_SIZE_MORE;
            p++;
            break;
        case CH_SIZE_MORE:
            if (IS(c, C_HEX)) {
                if (d->digits == MAX_SIZE_DIGITS)
                    goto invalid;
                d->remaining = d->remaining << 4 | (uint64_t)hex_value(c);
                d->digits++;
            } else if (c == ';') {
                d->state = CH_EXT;
            } else if (c == ' ' || c == '\t') {
                d->state = CH_SIZE_BWS;
            } else if (c == '\r') {
                d->state = CH_SIZE_LF;
                p++;
                break;
            } else {
                goto invalid;
            }
            d->line_bytes++;
            p++;
            break;
        case CH_SIZE_BWS:
            /* chunk-ext = *( BWS ";" ... ): whitespace must lead to ';'. */
            if (c == ';')
                d->state = CH_EXT;
            else if (c != ' ' && c != '\t')
                goto invalid;
            if (++d->line_bytes > MAX_EXT_LINE)
                goto invalid;
            p++;
            break;
        case CH_EXT: {
            /* Extensions are ignored (RFC 9112 7.1.1); they are only
             * checked for CTLs, which also rejects a bare LF. */
            size_t start = p;
            while (p < len && IS(buf[p], C_EXT))
                p++;
            d->line_bytes += p - start;
            if (d->line_bytes > MAX_EXT_LINE)
                goto invalid;
            if (p < len) {
                if (buf[p] != '\r')
                    goto invalid;
                d->state = CH_SIZE_LF;
                p++;
            }
            break;
        }
        case CH_SIZE_LF:
            if (c != '\n')
                goto invalid;
            p++;
            d->line_bytes = 0;
            if (d->remaining == 0) {
                d->state = CH_TRAILER;
                d->trailer_bytes = 0;
            } else {
                d->state = CH_DATA;
            }
            break;
        case CH_DATA_CR:
            if (c != '\r')
                goto invalid;
            d->state = CH_DATA_LF;
            p++;
            break;
        case CH_DATA_LF:
            if (c != '\n')
                goto invalid;
            d->state = CH_SIZE;
            p++;
            break;
        case CH_TRAILER:
            /* Trailer fields follow the field-line rules (RFC 9112 7.1.2):
             * no obs-fold, no empty name, CRLF only. */
            if (c == '\r')
                d->state = CH_END_LF;
            else if (IS(c, C_TCHAR))
                d->state = CH_TRAILER_NAME;
            else
                goto invalid;
            if (++d->trailer_bytes > MAX_TRAILER)
                goto invalid;
            p++;
            break;
        case CH_TRAILER_NAME:
            if (c == ':')
                d->state = CH_TRAILER_VAL;
            else if (!IS(c, C_TCHAR))
                goto invalid;
            if (++d->trailer_bytes > MAX_TRAILER)
                goto invalid;
            p++;
            break;
        case CH_TRAILER_VAL: {
            size_t start = p;
            while (p < len && IS(buf[p], C_VALUE))
                p++;
            d->trailer_bytes += p - start;
            if (d->trailer_bytes > MAX_TRAILER)
                goto invalid;
            if (p < len) {
                if (buf[p] != '\r')
                    goto invalid;
                d->trailer_bytes++;
                d->state = CH_TRAILER_LF;
                p++;
            }
            break;
        }
        case CH_TRAILER_LF:
            if (c != '\n')
                goto invalid;
            d->trailer_bytes++;
            d->state = CH_TRAILER;
            p++;
            break;
        case CH_END_LF:
            if (c != '\n')
                goto invalid;
            d->state = CH_DONE;
            p++;
            break;
        default:
            goto invalid;
        }
    }
    return (ssize_t)p;

invalid:
    d->state = CH_ERROR;
    return -1;
}
