#include "base/json_writer.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

void json_writer_init_evbuffer(struct json_writer *w, struct evbuffer *out)
{
    w->out = out;
    w->p = w->end = NULL;
    w->truncated = false;
}

void json_writer_init_buffer(struct json_writer *w, char *buf, size_t cap)
{
    w->out = NULL;
    w->p = buf;
    w->end = buf + cap;
    w->truncated = false;
}

void json_writer_raw(struct json_writer *w, const char *s, size_t len)
{
    if (w->out) {
        evbuffer_add(w->out, s, len);
        return;
    }
    size_t room = (size_t)(w->end - w->p);
    if (len > room) {
        /* Only reachable when the caller's syntax outgrew the reserve: cut, flagged. */
        len = room;
        w->truncated = true;
    }
    memcpy(w->p, s, len);
    w->p += len;
}

void json_writer_raw_cstr(struct json_writer *w, const char *s)
{
    json_writer_raw(w, s, strlen(s));
}

/*
 * The length of the valid UTF-8 sequence at s[0..n) (RFC 3629: shortest
 * form, no UTF-16 surrogates, at most U+10FFFF), or 0 when s[0] does not
 * start one. s[0] is >= 0x80.
 */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0; /* continuation byte, C0, C1, F5..FF */
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* The escape for an ASCII byte that cannot appear raw, written into esc; returns its length. */
static size_t escape_byte(unsigned char c, char esc[7])
{
    static const char hex[] = "0123456789abcdef";
    char short_form = 0;
    switch (c) {
    case '"':
        short_form = '"';
        break;
    case '\\':
        short_form = '\\';
        break;
    case '\b':
        short_form = 'b';
        break;
    case '\f':
        short_form = 'f';
        break;
    case '\n':
        short_form = 'n';
        break;
    case '\r':
        short_form = 'r';
        break;
    case '\t':
        short_form = 't';
        break;
    default:
        break;
    }
    esc[0] = '\\';
    if (short_form) {
        esc[1] = short_form;
        return 2;
    }
    memcpy(esc + 1, "u00", 3);
    esc[4] = hex[c >> 4];
    esc[5] = hex[c & 0xf];
    return 6;
}

/* The bytes copied as they are: printable ASCII except '"' and '\\' (one load per byte). */
#define P16 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
static const bool plain_bytes[256] = {
    [0x20] = 1, 1,   0 /* '"' */, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1,          1,   1, /* 0x20..0x2f */
    P16,        P16,    /* 0x30..0x4f */
    1,          1,   1,           1, 1, 1, 1, 1, 1, 1, 1, 1, 0 /* '\\' */,
    1,          1,   1, /* 0x50..0x5f */
    P16,                /* 0x60..0x6f */
    1,          1,   1,           1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1,          1,   0 /* DEL */, /* 0x70..0x7f */
};
#undef P16

static inline bool plain(unsigned char c)
{
    return plain_bytes[c];
}

void json_writer_string_content(struct json_writer *w, struct slice s)
{
    const unsigned char *b = (const unsigned char *)s.base;
    size_t i = 0;
    while (i < s.len) {
        /* A run of bytes that go out unchanged: plain ASCII and valid UTF-8. */
        size_t start = i;
        while (i < s.len) {
            if (plain(b[i])) {
                i++;
                continue;
            }
            size_t seq = b[i] >= 0x80 ? utf8_sequence(b + i, s.len - i) : 0;
            if (!seq)
                break;
            i += seq;
        }
        size_t run = i - start;
        if (run && !w->out) {
            /* Keep the reserve; cut at a character boundary. */
            size_t room = (size_t)(w->end - w->p);
            room = room > JSON_WRITER_RESERVE ? room - JSON_WRITER_RESERVE : 0;
            if (run > room) {
                run = room;
                while (run > 0 && (b[start + run] & 0xc0) == 0x80)
                    run--;
                json_writer_raw(w, (const char *)b + start, run);
                w->truncated = true;
                return;
            }
        }
        if (run)
            json_writer_raw(w, (const char *)b + start, run);
        if (i == s.len)
            break;
        /* One byte to escape: ASCII syntax/control, or a byte that is not UTF-8. */
        char esc[7];
        size_t n = escape_byte(b[i], esc);
        if (!w->out && (size_t)(w->end - w->p) < JSON_WRITER_RESERVE + n) {
            w->truncated = true;
            return;
        }
        json_writer_raw(w, esc, n);
        i++;
    }
}

void json_writer_string(struct json_writer *w, struct slice s)
{
    json_writer_raw(w, "\"", 1);
    json_writer_string_content(w, s);
    json_writer_raw(w, "\"", 1);
}

void json_writer_int(struct json_writer *w, long long v)
{
    /* By hand: snprintf costs several hundred instructions, and the access log writes five per
     * line. */
    char buf[24];
    char *p = buf + sizeof buf;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    json_writer_raw(w, p, (size_t)(buf + sizeof buf - p));
}

/* As jansson writes a real: 17 significant digits, always with a '.' or an exponent. */
static void write_real(struct json_writer *w, double v)
{
    char buf[40];
    int n = snprintf(buf, sizeof buf, "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof buf - 2)
        n = snprintf(buf, sizeof buf, "0.0");
    else if (!strpbrk(buf, ".eEn")) /* "n": nan/inf have no JSON form; jansson refuses them */
        memcpy(buf + n, ".0", 3), n += 2;
    /* Like jansson: no '+' and no leading zeros in the exponent ("1e300", "1e-07" -> "1e-7"). */
    char *e = strchr(buf, 'e');
    if (e) {
        char *from = e + 1, *to = e + 1;
        if (*from == '+')
            from++;
        else if (*from == '-')
            *to++ = *from++;
        while (*from == '0' && from[1])
            from++;
        memmove(to, from, strlen(from) + 1);
        n = (int)strlen(buf);
    }
    json_writer_raw(w, buf, (size_t)n);
}

static void newline_indent(struct json_writer *w, int indent, int depth)
{
    static const char spaces[] = "                                ";
    json_writer_raw(w, "\n", 1);
    size_t n = (size_t)indent * (size_t)depth;
    while (n > 0) {
        size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
        json_writer_raw(w, spaces, k);
        n -= k;
    }
}

static void value_at(struct json_writer *w, const json_t *v, int indent, int depth)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (json_object_size(v) == 0) {
            json_writer_raw(w, "{}", 2);
            return;
        }
        json_writer_raw(w, "{", 1);
        const char *key;
        json_t *member;
        bool first = true;
        json_object_foreach((json_t *)v, key, member)
        {
            if (!first)
                json_writer_raw(w, indent ? "," : ", ", indent ? 1 : 2);
            first = false;
            if (indent)
                newline_indent(w, indent, depth + 1);
            json_writer_string(w, slice_cstr(key));
            json_writer_raw(w, ": ", 2);
            value_at(w, member, indent, depth + 1);
        }
        if (indent)
            newline_indent(w, indent, depth);
        json_writer_raw(w, "}", 1);
        return;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (n == 0) {
            json_writer_raw(w, "[]", 2);
            return;
        }
        json_writer_raw(w, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i)
                json_writer_raw(w, indent ? "," : ", ", indent ? 1 : 2);
            if (indent)
                newline_indent(w, indent, depth + 1);
            value_at(w, json_array_get(v, i), indent, depth + 1);
        }
        if (indent)
            newline_indent(w, indent, depth);
        json_writer_raw(w, "]", 1);
        return;
    }
    case JSON_STRING:
        json_writer_string(w, slice_make(json_string_value(v), json_string_length(v)));
        return;
    case JSON_INTEGER:
        json_writer_int(w, (long long)json_integer_value(v));
        return;
    case JSON_REAL:
        write_real(w, json_real_value(v));
        return;
    case JSON_TRUE:
        json_writer_raw(w, "true", 4);
        return;
    case JSON_FALSE:
        json_writer_raw(w, "false", 5);
        return;
    case JSON_NULL:
        json_writer_raw(w, "null", 4);
        return;
    }
}

void json_writer_value(struct json_writer *w, const json_t *v, int indent)
{
    if (!v) {
        json_writer_raw(w, "null", 4);
        return;
    }
    value_at(w, v, indent, 0);
}
