/*
 * The one JSON writer (base/json_writer): escaping per RFC 8259, valid UTF-8
 * copied, every byte that is not valid UTF-8 (stray continuation, overlong,
 * surrogate, above U+10FFFF, cut sequence) written as \u00XX, a bounded
 * buffer cut at a character boundary with room left for the closing syntax,
 * and jansson values laid out as json_dumps(JSON_INDENT(2)) lays them out.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "base/json_writer.h"
#include "test.h"

/* The quoted JSON of `len` bytes at `s`, NUL-terminated in a static buffer. */
static const char *quoted(const char *s, size_t len)
{
    static char out[256];
    struct json_writer w;
    json_writer_init_buffer(&w, out, sizeof out - 1 + JSON_WRITER_RESERVE);
    json_writer_string(&w, slice_make(s, len));
    out[json_writer_length(&w, out)] = '\0';
    return out;
}

#define Q(lit) quoted(lit, sizeof(lit) - 1)

static void test_escapes(void)
{
    is_str(Q("plain"), "\"plain\"");
    is_str(Q("a\"b\\c/d"), "\"a\\\"b\\\\c/d\"");
    is_str(Q("\b\f\n\r\t"), "\"\\b\\f\\n\\r\\t\"");
    is_str(Q("\x01\x1f\x7f"), "\"\\u0001\\u001f\\u007f\"");
    is_str(Q("\0x"), "\"\\u0000x\"");
    /* Valid UTF-8 of every length goes out as is. */
    is_str(Q("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"), "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    is_str(Q("\xf4\x8f\xbf\xbf"), "\"\xf4\x8f\xbf\xbf\""); /* U+10FFFF */
    /* The Host of the regression: 0xFF 0xFE. */
    is_str(Q("\xff\xfe"), "\"\\u00ff\\u00fe\"");
    is_str(Q("\x80"), "\"\\u0080\"");                                  /* stray continuation */
    is_str(Q("\xc0\xaf"), "\"\\u00c0\\u00af\"");                       /* overlong '/' */
    is_str(Q("\xe0\x80\xaf"), "\"\\u00e0\\u0080\\u00af\"");            /* overlong, 3 bytes */
    is_str(Q("\xed\xa0\x80"), "\"\\u00ed\\u00a0\\u0080\"");            /* surrogate U+D800 */
    is_str(Q("\xf4\x90\x80\x80"), "\"\\u00f4\\u0090\\u0080\\u0080\""); /* above U+10FFFF */
    is_str(Q("\xe2\x82"), "\"\\u00e2\\u0082\"");                       /* cut at the end */
    is_str(Q("\xe2\x82x"), "\"\\u00e2\\u0082x\"");                     /* cut in the middle */
    is_str(Q("\xc3\xa9\xff\xc3\xa9"), "\"\xc3\xa9\\u00ff\xc3\xa9\"");
}

static void test_bounded(void)
{
    /* A string longer than the room is cut at a character boundary; the syntax still fits. */
    char buf[JSON_WRITER_RESERVE + 40];
    struct json_writer w;
    json_writer_init_buffer(&w, buf, sizeof buf);
    char big[200];
    for (size_t i = 0; i < sizeof big; i += 2)
        memcpy(big + i, "\xc3\xa9", 2);
    json_writer_raw_cstr(&w, "{\"a\":");
    json_writer_string(&w, slice_make(big, sizeof big));
    json_writer_raw_cstr(&w, ",\"b\":");
    json_writer_string(&w, SLICE_LIT("more text that is left out"));
    json_writer_raw_cstr(&w, "}");
    ok(json_writer_truncated(&w), "the cut is reported");
    size_t len = json_writer_length(&w, buf);
    ok(len <= sizeof buf, "never past the buffer");
    ok(len < 60, "the strings were cut (%zu bytes)", len);
    buf[len < sizeof buf ? len : sizeof buf - 1] = '\0';
    json_error_t jerr;
    json_t *v = json_loadb(buf, len, 0, &jerr);
    ok(v != NULL, "the cut output is still valid JSON: %s", jerr.text);
    if (v) {
        const char *a = json_string_value(json_object_get(v, "a"));
        ok(a && strlen(a) % 2 == 0, "cut between characters, never inside one");
        is_str(json_string_value(json_object_get(v, "b")), "");
        json_decref(v);
    }
}

static void test_values(void)
{
    const char *text =
        "{\"workers\": 2, \"ratio\": 0.5, \"whole\": 3.0, \"on\": true, \"off\": false,"
        " \"none\": null, \"empty\": {}, \"list\": [], \"s\": \"caf\\u00e9 \\\"q\\\"\","
        " \"routes\": [{\"name\": \"r\", \"match\": {\"prefix\": \"/a\"}}, 1, [2, 3]],"
        " \"big\": 1e300, \"small\": 1.5e-7, \"neg\": -7}";
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    ok(v != NULL, "test JSON: %s", jerr.text);
    if (!v)
        return;
    for (int indent = 0; indent <= 2; indent += 2) {
        char *want =
            json_dumps(v, indent ? JSON_INDENT(indent) | JSON_PRESERVE_ORDER : JSON_PRESERVE_ORDER);
        struct evbuffer *out = evbuffer_new();
        struct json_writer w;
        json_writer_init_evbuffer(&w, out);
        json_writer_value(&w, v, indent);
        evbuffer_add(out, "", 1);
        is_str((char *)evbuffer_pullup(out, -1), want);
        evbuffer_free(out);
        free(want);
    }
    json_decref(v);
}

int main(void)
{
    test_escapes();
    test_bounded();
    test_values();
    return test_done();
}
