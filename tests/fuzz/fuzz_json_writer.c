/*
 * fuzz_json_writer: writes the input as a JSON string, unbounded (evbuffer)
 * and into a bounded buffer whose size comes from the input. Both outputs
 * must parse as JSON under jansson's strict UTF-8 check; when the input is
 * valid UTF-8 the unbounded output must decode to the input exactly, and the
 * bounded one (cut or not) to a prefix of the unbounded one.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "base/json_writer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parses `len` bytes of JSON holding one string value; aborts if it is not valid. */
static json_t *parse(const char *text, size_t len)
{
    json_error_t err;
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!v || !json_is_string(v))
        abort();
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cap = JSON_WRITER_RESERVE + 1 + data[0] * 4u;
    struct slice s = slice_make((const char *)data + 1, size - 1);

    struct evbuffer *out = evbuffer_new();
    struct json_writer w;
    json_writer_init_evbuffer(&w, out);
    json_writer_string(&w, s);
    size_t len = evbuffer_get_length(out);
    json_t *full = parse((const char *)evbuffer_pullup(out, -1), len);
    json_t *exact = json_stringn(s.base, s.len); /* NULL when the input is not valid UTF-8 */
    if (exact && !json_equal(full, exact))
        abort();
    json_decref(exact);

    char *buf = malloc(cap);
    json_writer_init_buffer(&w, buf, cap);
    json_writer_string(&w, s);
    size_t blen = json_writer_length(&w, buf);
    if (blen > cap)
        abort();
    json_t *cut = parse(buf, blen);
    size_t n = json_string_length(cut);
    if (n > json_string_length(full) || memcmp(json_string_value(cut), json_string_value(full), n))
        abort();
    if (!json_writer_truncated(&w) && n != json_string_length(full))
        abort();

    json_decref(cut);
    json_decref(full);
    free(buf);
    evbuffer_free(out);
    return 0;
}
