/*
 * test_http1_parse: the request/response head parsers, the framing rules
 * and the chunked decoder, mostly as tables of inputs and expected results.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/http1_parse.h"
#include "test.h"

#define MAXH 64
#define N(a) (sizeof(a) / sizeof((a)[0]))

/* A byte string with an explicit length, so inputs may contain NUL. */
struct bytes {
    const char *s;
    size_t len;
};
#define B(lit)                                                                                     \
    {                                                                                              \
        (lit), sizeof(lit) - 1                                                                     \
    }

/* Parses a copy sized exactly, so AddressSanitizer catches any over-read. */
static int parse_req(const char *s, size_t len, struct http1_request_head *h, struct header *hdr,
                     size_t max)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, s, len);
    int r = http1_parse_request(copy, len, h, hdr, max);
    if (r > 0) {
        /* Rebase the slices onto the caller's string before freeing. */
        h->method.base = s + (h->method.base - copy);
        h->target.base = s + (h->target.base - copy);
        for (size_t i = 0; i < h->num_headers; i++) {
            hdr[i].name.base = s + (hdr[i].name.base - copy);
            hdr[i].value.base = s + (hdr[i].value.base - copy);
        }
    }
    free(copy);
    return r;
}

static int parse_resp(const char *s, size_t len, struct http1_response_head *h, struct header *hdr,
                      size_t max)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, s, len);
    int r = http1_parse_response(copy, len, h, hdr, max);
    if (r > 0) {
        h->reason.base = s + (h->reason.base - copy);
        for (size_t i = 0; i < h->num_headers; i++) {
            hdr[i].name.base = s + (hdr[i].name.base - copy);
            hdr[i].value.base = s + (hdr[i].value.base - copy);
        }
    }
    free(copy);
    return r;
}

struct valid_request {
    struct bytes in;
    const char *method;
    const char *target;
    int minor;
    size_t num_headers;
    size_t skip; /* leading bytes not part of the request line */
};

static const struct valid_request valid_requests[] = {
    {B("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "GET", "/", 1, 1, 0},
    {B("GET /p?q=1&r=%20 HTTP/1.0\r\n\r\n"), "GET", "/p?q=1&r=%20", 0, 0, 0},
    {B("GET http://example.org:8080/x HTTP/1.1\r\nHost: example.org\r\n\r\n"), "GET",
     "http://example.org:8080/x", 1, 1, 0},
    {B("CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"), "CONNECT",
     "example.org:443", 1, 1, 0},
    {B("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), "OPTIONS", "*", 1, 1, 0},
    {B("M-SEARCH! /~a_b HTTP/1.1\r\n\r\n"), "M-SEARCH!", "/~a_b", 1, 0, 0},
    {B("\r\n\r\nGET / HTTP/1.1\r\n\r\n"), "GET", "/", 1, 0, 4},
    {B("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"), "GET", "/", 1, 0, 16},
    {B("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Obs: caf\xc3\xa9 \xff\r\n"
       "X-Empty:\r\nX-Ws:  \t \r\n\r\n"),
     "POST", "/u", 1, 5, 0},
    {B("GET / HTTP/1.1\r\nA:1\r\nB: 2\r\nC:\t3\t\r\nD: x y  z \r\nE: \"q\" (c) [b]\r\n"
       "F: ~!@#$%^&*()_+{}|:<>?\r\nG: \x80\x90\xa0\r\nH: h\r\nI: i\r\nJ: j\r\n\r\n"),
     "GET", "/", 1, 10, 0},
};

static void test_valid_requests(void)
{
    for (size_t i = 0; i < N(valid_requests); i++) {
        const struct valid_request *v = &valid_requests[i];
        struct http1_request_head h;
        struct header hdr[MAXH];
        int r = parse_req(v->in.s, v->in.len, &h, hdr, MAXH);
        is_int(r, (int)v->in.len, "valid request %zu", i);
        if (r <= 0)
            continue;
        is_slice(h.method, v->method);
        is_slice(h.target, v->target);
        is_int(h.minor_version, v->minor);
        is_int(h.num_headers, v->num_headers);
        ok(h.headers == hdr, "headers array");
        ok(h.method.base == v->in.s + v->skip, "method points into the buffer (%zu)", i);

        /* Every strict prefix is a valid prefix: PARTIAL, never INVALID. */
        int bad = 0;
        for (size_t k = 0; k < v->in.len; k++) {
            if (parse_req(v->in.s, k, &h, hdr, MAXH) != HTTP1_PARTIAL)
                bad++;
        }
        is_int(bad, 0, "prefixes of request %zu", i);

        /* Trailing bytes (a pipelined body) are not consumed. */
        char more[1024];
        memcpy(more, v->in.s, v->in.len);
        memcpy(more + v->in.len, "XYZ", 3);
        is_int(parse_req(more, v->in.len + 3, &h, hdr, MAXH), (int)v->in.len);
    }
}

static void test_header_values(void)
{
    const struct valid_request *v = &valid_requests[8];
    struct http1_request_head h;
    struct header hdr[MAXH];
    int r = parse_req(v->in.s, v->in.len, &h, hdr, MAXH);
    ok(r > 0, "obs-text request parses");
    is_slice(hdr[0].name, "Host");
    is_slice(hdr[0].value, "a");
    is_slice(hdr[1].name, "Content-Length");
    is_slice(hdr[1].value, "5");
    is_slice(hdr[2].value, "caf\xc3\xa9 \xff");
    is_slice(hdr[3].name, "X-Empty");
    is_slice(hdr[3].value, "");
    is_slice(hdr[4].value, "");

    v = &valid_requests[9];
    r = parse_req(v->in.s, v->in.len, &h, hdr, MAXH);
    ok(r > 0, "odd values parse");
    is_slice(hdr[0].value, "1");
    is_slice(hdr[2].value, "3");
    is_slice(hdr[3].value, "x y  z");
    is_slice(hdr[4].value, "\"q\" (c) [b]");
    is_slice(hdr[5].value, "~!@#$%^&*()_+{}|:<>?");
}

static const struct bytes invalid_requests[] = {
    /* request line */
    B("GET  / HTTP/1.1\r\n\r\n"),
    B("GET /  HTTP/1.1\r\n\r\n"),
    B(" GET / HTTP/1.1\r\n\r\n"),
    B("GET / HTTP/1.1 \r\n\r\n"),
    B("GET\t/ HTTP/1.1\r\n\r\n"),
    B("GET /\tHTTP/1.1\r\n\r\n"),
    B("G(T / HTTP/1.1\r\n\r\n"),
    B("GET /a b HTTP/1.1\r\n\r\n"),
    B("GET /\x7f HTTP/1.1\r\n\r\n"),
    B("GET /\x80 HTTP/1.1\r\n\r\n"),
    B("GET /\0 HTTP/1.1\r\n\r\n"),
    B("GET / HTTP/1.2\r\n\r\n"),
    B("GET / HTTP/2.0\r\n\r\n"),
    B("GET / HTTP/0.9\r\n\r\n"),
    B("GET / http/1.1\r\n\r\n"),
    B("GET / HTTP/1.10\r\n\r\n"),
    B("GET / HTTP/1\r\n\r\n"),
    B("GET /\r\n\r\n"),
    B("GET\r\n\r\n"),
    B("GET / HTTP/1.1\n\r\n"),
    B("GET / HTTP/1.1\r\r\n"),
    B("GET / HTTP/1.1\rX\r\n\r\n"),
    /* leading empty lines: 9 is too many; bare LF; lone CR */
    B("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
    B("\nGET / HTTP/1.1\r\n\r\n"),
    B("\rGET / HTTP/1.1\r\n\r\n"),
    /* field lines */
    B("GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"),
    B("GET / HTTP/1.1\r\n: a\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHost a\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHo(st: a\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHost: a\r\n\tb\r\n\r\n"),
    B("GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHost: a\r\n\n"),
    B("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHost: a\x1f\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n"),
    B("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"),
    B("GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n"),
    B("GET / HTTP/1.1\r\nH\x80: a\r\n\r\n"),
};

static void test_invalid_requests(void)
{
    for (size_t i = 0; i < N(invalid_requests); i++) {
        struct http1_request_head h;
        struct header hdr[MAXH];
        int r = parse_req(invalid_requests[i].s, invalid_requests[i].len, &h, hdr, MAXH);
        is_int(r, HTTP1_INVALID, "invalid request %zu", i);
    }
}

/* A bad request line is rejected before the head is complete. */
static const struct bytes early_invalid[] = {
    B("GET  "),
    B("GET /a HTTP/2"),
    B("GET /a HTTP/1.2"),
    B("GET /a\x01"),
    B("G\x01"),
    B("\n"),
    B("\r\r"),
    B("GET /a HTTP/1.1\n"),
    B("GET / HTTP/1.1\r\nA : "),
    B("GET / HTTP/1.1\r\n "),
    B("GET / HTTP/1.1\r\nA: b\x01"),
    B("GET / HTTP/1.1\r\nA: b\rX"),
};

static void test_early_invalid(void)
{
    for (size_t i = 0; i < N(early_invalid); i++) {
        struct http1_request_head h;
        struct header hdr[MAXH];
        int r = parse_req(early_invalid[i].s, early_invalid[i].len, &h, hdr, MAXH);
        is_int(r, HTTP1_INVALID, "early invalid %zu", i);
    }
}

static void test_too_many_headers(void)
{
    const char *req = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    struct http1_request_head h;
    struct header hdr[3];
    is_int(parse_req(req, strlen(req), &h, hdr, 3), (int)strlen(req));
    is_int(h.num_headers, 3);
    is_int(parse_req(req, strlen(req), &h, hdr, 2), HTTP1_TOO_MANY_HEADERS);
    is_int(parse_req(req, strlen(req), &h, NULL, 0), HTTP1_TOO_MANY_HEADERS);
    const char *none = "GET / HTTP/1.1\r\n\r\n";
    is_int(parse_req(none, strlen(none), &h, NULL, 0), (int)strlen(none));
    is_int(h.num_headers, 0);

    struct http1_response_head rh;
    const char *resp = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n";
    is_int(parse_resp(resp, strlen(resp), &rh, hdr, 1), HTTP1_TOO_MANY_HEADERS);
    is_int(parse_resp(resp, strlen(resp), &rh, hdr, 2), (int)strlen(resp));
}

struct valid_response {
    struct bytes in;
    int minor;
    int status;
    const char *reason;
    size_t num_headers;
};

static const struct valid_response valid_responses[] = {
    {B("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"), 1, 200, "OK", 1},
    {B("HTTP/1.0 404 Not Found\r\n\r\n"), 0, 404, "Not Found", 0},
    {B("HTTP/1.1 200 \r\n\r\n"), 1, 200, "", 0},
    {B("HTTP/1.1 200\r\n\r\n"), 1, 200, "", 0},
    {B("HTTP/1.1 999 x\r\n\r\n"), 1, 999, "x", 0},
    {B("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), 1,
     101, "Switching Protocols", 2},
    {B("HTTP/1.1 500 caf\xc3\xa9\t!\r\nA: \x80\r\n\r\n"), 1, 500, "caf\xc3\xa9\t!", 1},
};

static void test_responses(void)
{
    for (size_t i = 0; i < N(valid_responses); i++) {
        const struct valid_response *v = &valid_responses[i];
        struct http1_response_head h;
        struct header hdr[MAXH];
        int r = parse_resp(v->in.s, v->in.len, &h, hdr, MAXH);
        is_int(r, (int)v->in.len, "valid response %zu", i);
        if (r <= 0)
            continue;
        is_int(h.minor_version, v->minor);
        is_int(h.status, v->status);
        is_slice(h.reason, v->reason);
        is_int(h.num_headers, v->num_headers);
        int bad = 0;
        for (size_t k = 0; k < v->in.len; k++) {
            if (parse_resp(v->in.s, k, &h, hdr, MAXH) != HTTP1_PARTIAL)
                bad++;
        }
        is_int(bad, 0, "prefixes of response %zu", i);
    }

    static const struct bytes invalid[] = {
        B("HTTP/1.1  200 OK\r\n\r\n"),
        B("HTTP/1.1 20 OK\r\n\r\n"),
        B("HTTP/1.1 2000 OK\r\n\r\n"),
        B("HTTP/1.1 099 OK\r\n\r\n"),
        B("HTTP/1.1 2x0 OK\r\n\r\n"),
        B("HTTP/1.2 200 OK\r\n\r\n"),
        B("HTTP/2 200 OK\r\n\r\n"),
        B("http/1.1 200 OK\r\n\r\n"),
        B("HTTP/1.1 200 OK\n\r\n"),
        B("HTTP/1.1 200 O\x01K\r\n\r\n"),
        B("HTTP/1.1 200\n\r\n"),
        B("HTTP/1.1 200 OK\r\nA : b\r\n\r\n"),
        B("HTTP/1.1 200 OK\r\n b\r\n\r\n"),
        B("\r\nHTTP/1.1 200 OK\r\n\r\n"),
        B("HTTP/1.1 200 OK\r\nA: b\n\r\n"),
        B("HTTP/1.1 200 OK\r\nA: \0\r\n\r\n"),
        B("HTTP/1.1\r\n\r\n"),
        B("HTTP/1.1 200 OK\r\n\n"),
    };
    for (size_t i = 0; i < N(invalid); i++) {
        struct http1_response_head h;
        struct header hdr[MAXH];
        is_int(parse_resp(invalid[i].s, invalid[i].len, &h, hdr, MAXH), HTTP1_INVALID,
               "invalid response %zu", i);
    }
}

/* Framing -------------------------------------------------------------- */

struct framing_case {
    const char *fields[4][2];
    size_t n;
    int want;
    enum http1_framing framing;
    uint64_t length;
};

static const struct framing_case request_cases[] = {
    {{{0}}, 0, 0, HTTP1_BODY_NONE, 0},
    {{{"Host", "a"}}, 1, 0, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", "5"}}, 1, 0, HTTP1_BODY_LENGTH, 5},
    {{{"content-length", "0"}}, 1, 0, HTTP1_BODY_LENGTH, 0},
    {{{"Content-Length", "007"}}, 1, 0, HTTP1_BODY_LENGTH, 7},
    {{{"Content-Length", "18446744073709551615"}}, 1, 0, HTTP1_BODY_LENGTH, UINT64_MAX},
    {{{"Content-Length", "18446744073709551616"}}, 1, 400, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", "99999999999999999999999"}}, 1, 400, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", "+5"}}, 1, 400, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", "-5"}}, 1, 400, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", "5 5"}}, 1, 400, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", "5, 5"}}, 1, 400, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", "0x5"}}, 1, 400, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", ""}}, 1, 400, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", "5"}, {"Content-Length", "5"}}, 2, 400, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", "5"}, {"content-length", "6"}}, 2, 400, HTTP1_BODY_NONE, 0},
    {{{"Transfer-Encoding", "chunked"}}, 1, 0, HTTP1_BODY_CHUNKED, 0},
    {{{"transfer-encoding", "ChUnKeD"}}, 1, 0, HTTP1_BODY_CHUNKED, 0},
    {{{"Transfer-Encoding", " chunked\t"}}, 1, 0, HTTP1_BODY_CHUNKED, 0},
    {{{"Transfer-Encoding", "gzip"}}, 1, 501, HTTP1_BODY_NONE, 0},
    {{{"Transfer-Encoding", "gzip, chunked"}}, 1, 501, HTTP1_BODY_NONE, 0},
    {{{"Transfer-Encoding", "chunked, chunked"}}, 1, 501, HTTP1_BODY_NONE, 0},
    {{{"Transfer-Encoding", "chunked,"}}, 1, 501, HTTP1_BODY_NONE, 0},
    {{{"Transfer-Encoding", "chunkedx"}}, 1, 501, HTTP1_BODY_NONE, 0},
    {{{"Transfer-Encoding", ""}}, 1, 501, HTTP1_BODY_NONE, 0},
    {{{"Transfer-Encoding", "chunked"}, {"Transfer-Encoding", "chunked"}},
     2,
     501,
     HTTP1_BODY_NONE,
     0},
    {{{"Transfer-Encoding", "gzip"}, {"Transfer-Encoding", "chunked"}}, 2, 501, HTTP1_BODY_NONE, 0},
    {{{"Transfer-Encoding", "chunked"}, {"Content-Length", "5"}}, 2, 400, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", "5"}, {"Transfer-Encoding", "gzip"}}, 2, 400, HTTP1_BODY_NONE, 0},
    {{{"Content-Length", "x"}, {"Transfer-Encoding", "chunked"}}, 2, 400, HTTP1_BODY_NONE, 0},
};

struct response_case {
    int status;
    bool head;
    struct framing_case c;
};

static const struct response_case response_cases[] = {
    {200, false, {{{0}}, 0, 0, HTTP1_BODY_CLOSE, 0}},
    {200, false, {{{"Content-Length", "12"}}, 1, 0, HTTP1_BODY_LENGTH, 12}},
    {200,
     false,
     {{{"Content-Length", "12"}, {"Content-Length", "12"}}, 2, 0, HTTP1_BODY_LENGTH, 12}},
    {200, false, {{{"Content-Length", "12"}, {"Content-Length", "13"}}, 2, -1, HTTP1_BODY_NONE, 0}},
    {200, false, {{{"Content-Length", "12"}, {"Content-Length", "x"}}, 2, -1, HTTP1_BODY_NONE, 0}},
    {200, false, {{{"Content-Length", "-1"}}, 1, -1, HTTP1_BODY_NONE, 0}},
    {200, false, {{{"Content-Length", "1, 1"}}, 1, -1, HTTP1_BODY_NONE, 0}},
    {200, false, {{{"Transfer-Encoding", "chunked"}}, 1, 0, HTTP1_BODY_CHUNKED, 0}},
    {200, false, {{{"Transfer-Encoding", "CHUNKED"}}, 1, 0, HTTP1_BODY_CHUNKED, 0}},
    {200, false, {{{"Transfer-Encoding", "gzip, chunked"}}, 1, -1, HTTP1_BODY_NONE, 0}},
    {200, false, {{{"Transfer-Encoding", "gzip"}}, 1, -1, HTTP1_BODY_NONE, 0}},
    {200, false, {{{"Transfer-Encoding", "chunked"}, {"Content-Length", "3"}}, 2, -1, 0, 0}},
    {200, true, {{{"Content-Length", "12"}}, 1, 0, HTTP1_BODY_NONE, 0}},
    {200, true, {{{"Transfer-Encoding", "chunked"}, {"Content-Length", "3"}}, 2, 0, 0, 0}},
    {100, false, {{{"Content-Length", "12"}}, 1, 0, HTTP1_BODY_NONE, 0}},
    {101, false, {{{0}}, 0, 0, HTTP1_BODY_NONE, 0}},
    {199, false, {{{"Transfer-Encoding", "chunked"}}, 1, 0, HTTP1_BODY_NONE, 0}},
    {204, false, {{{"Content-Length", "12"}}, 1, 0, HTTP1_BODY_NONE, 0}},
    {304, false, {{{"Content-Length", "12"}}, 1, 0, HTTP1_BODY_NONE, 0}},
    {304, false, {{{"Content-Length", "x"}}, 1, 0, HTTP1_BODY_NONE, 0}},
    {205, false, {{{"Content-Length", "0"}}, 1, 0, HTTP1_BODY_LENGTH, 0}},
    {404, false, {{{0}}, 0, 0, HTTP1_BODY_CLOSE, 0}},
};

static size_t fill(struct header *hdr, const struct framing_case *c)
{
    for (size_t i = 0; i < c->n; i++) {
        hdr[i].name = slice_cstr(c->fields[i][0]);
        hdr[i].value = slice_cstr(c->fields[i][1]);
    }
    return c->n;
}

static void test_framing(void)
{
    for (size_t i = 0; i < N(request_cases); i++) {
        const struct framing_case *c = &request_cases[i];
        struct header hdr[4];
        size_t n = fill(hdr, c);
        enum http1_framing f = HTTP1_BODY_CLOSE;
        uint64_t len = 99;
        int r = http1_request_framing(1, hdr, n, &f, &len);
        is_int(r, c->want, "request framing %zu", i);
        if (r == 0) {
            is_int(f, c->framing, "request framing kind %zu", i);
            ok(len == c->length, "request length %zu", i);
        }
    }
    /* HTTP/1.0 knows no transfer coding: any Transfer-Encoding is faulty framing. */
    static const struct framing_case http10_cases[] = {
        {{{0}}, 0, 0, HTTP1_BODY_NONE, 0},
        {{{"Content-Length", "5"}}, 1, 0, HTTP1_BODY_LENGTH, 5},
        {{{"Transfer-Encoding", "chunked"}}, 1, 400, HTTP1_BODY_NONE, 0},
        {{{"transfer-encoding", "ChUnKeD"}}, 1, 400, HTTP1_BODY_NONE, 0},
        {{{"Transfer-Encoding", "gzip"}}, 1, 400, HTTP1_BODY_NONE, 0},
        {{{"Transfer-Encoding", "chunked"}, {"Content-Length", "5"}}, 2, 400, HTTP1_BODY_NONE, 0},
    };
    for (size_t i = 0; i < N(http10_cases); i++) {
        const struct framing_case *c = &http10_cases[i];
        struct header hdr[4];
        size_t n = fill(hdr, c);
        enum http1_framing f = HTTP1_BODY_CLOSE;
        uint64_t len = 99;
        int r = http1_request_framing(0, hdr, n, &f, &len);
        is_int(r, c->want, "HTTP/1.0 request framing %zu", i);
        if (r == 0) {
            is_int(f, c->framing, "HTTP/1.0 request framing kind %zu", i);
            ok(len == c->length, "HTTP/1.0 request length %zu", i);
        }
    }
    for (size_t i = 0; i < N(response_cases); i++) {
        const struct response_case *rc = &response_cases[i];
        struct header hdr[4];
        size_t n = fill(hdr, &rc->c);
        enum http1_framing f = HTTP1_BODY_CLOSE;
        uint64_t len = 99;
        int r = http1_response_framing(rc->status, rc->head, hdr, n, &f, &len);
        is_int(r, rc->c.want, "response framing %zu", i);
        if (r == 0) {
            is_int(f, rc->c.framing, "response framing kind %zu", i);
            ok(len == rc->c.length, "response length %zu", i);
        }
    }
}

/* Chunked -------------------------------------------------------------- */

/*
 * Decodes `in` fed in pieces of `step` bytes (0: all at once), each piece
 * copied to an exactly sized buffer. Returns 1 when done, 0 when more input
 * is needed, -1 when invalid; the payload goes to out/out_len and the bytes
 * consumed to *used.
 */
static int decode(const char *in, size_t len, size_t step, char *out, size_t *out_len, size_t *used)
{
    struct http1_chunked d;
    http1_chunked_init(&d);
    *out_len = 0;
    *used = 0;
    size_t pos = 0;
    while (pos < len) {
        size_t n = step && len - pos > step ? step : len - pos;
        char *piece = malloc(n);
        memcpy(piece, in + pos, n);
        size_t off = 0;
        while (off < n) {
            struct slice data;
            ssize_t r = http1_chunked_decode(&d, piece + off, n - off, &data);
            if (r < 0) {
                free(piece);
                return -1;
            }
            if (data.len) {
                memcpy(out + *out_len, data.base, data.len);
                *out_len += data.len;
            }
            off += (size_t)r;
            if (r == 0)
                break;
        }
        free(piece);
        pos += off;
        *used = pos;
        if (http1_chunked_done(&d))
            return 1;
        if (off < n)
            return -1; /* consumed nothing before done: cannot happen */
    }
    return http1_chunked_done(&d) ? 1 : 0;
}

struct chunked_case {
    struct bytes in;
    int want; /* 1 done, 0 incomplete, -1 invalid */
    const char *payload;
    size_t used; /* for done: bytes consumed, 0 meaning all of them */
};

static const struct chunked_case chunked_cases[] = {
    {B("5\r\nhello\r\n0\r\n\r\n"), 1, "hello", 0},
    {B("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), 1, "hello world", 0},
    {B("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n"), 1, "0123456789abcdefghij", 0},
    {B("0000000000000005\r\nhello\r\n0\r\n\r\n"), 1, "hello", 0},
    {B("00000000000000005\r\nhello\r\n0\r\n\r\n"), -1, "", 0},
    {B("0000000000000000\r\n\r\n"), 1, "", 0},
    {B("00000000000000000\r\n\r\n"), -1, "", 0},
    {B("FFFFFFFFFFFFFFFF\r\nabc"), 0, "abc", 0},
    {B("5;name=value\r\nhello\r\n0;x;y=\"q s\"\r\n\r\n"), 1, "hello", 0},
    {B("5 ;ext\r\nhello\r\n0\r\n\r\n"), 1, "hello", 0},
    {B("5\t; a = b\r\nhello\r\n0\r\n\r\n"), 1, "hello", 0},
    {B("5;a=\x80\t\r\nhello\r\n0\r\n\r\n"), 1, "hello", 0},
    {B("5 \r\nhello\r\n0\r\n\r\n"), -1, "", 0},
    {B("5;a\x01\r\nhello\r\n0\r\n\r\n"), -1, "", 0},
    {B("5;a\nhello\r\n0\r\n\r\n"), -1, "", 0},
    {B("5\r\nhello\r\n0\r\nTrailer-A: 1\r\nB:\r\nC: x y \x80\r\n\r\n"), 1, "hello", 0},
    {B("5\r\nhello\r\n0\r\nA : 1\r\n\r\n"), -1, "hello", 0},
    {B("5\r\nhello\r\n0\r\n: 1\r\n\r\n"), -1, "hello", 0},
    {B("5\r\nhello\r\n0\r\nA: 1\r\n b\r\n\r\n"), -1, "hello", 0},
    {B("5\r\nhello\r\n0\r\nA: 1\n\r\n"), -1, "hello", 0},
    {B("5\r\nhello\r\n0\r\nA: \x01\r\n\r\n"), -1, "hello", 0},
    {B("5\r\nhello\r\n0\r\nA\r\n\r\n"), -1, "hello", 0},
    {B("5\r\nhello\r\n0\r\n\n"), -1, "hello", 0},
    {B("5\r\nhello\r\n0\n\r\n"), -1, "hello", 0},
    {B("5\nhello\r\n0\r\n\r\n"), -1, "", 0},
    {B("5\r\nhello\n0\r\n\r\n"), -1, "hello", 0},
    {B("5\r\nhelloX\r\n0\r\n\r\n"), -1, "hello", 0},
    {B("5\r\nhello\r0\r\n\r\n"), -1, "hello", 0},
    {B("3\r\nhello\r\n0\r\n\r\n"), -1, "hel", 0},
    {B("\r\n"), -1, "", 0},
    {B("x\r\n"), -1, "", 0},
    {B("-5\r\nhello\r\n0\r\n\r\n"), -1, "", 0},
    {B("+5\r\nhello\r\n0\r\n\r\n"), -1, "", 0},
    {B(" 5\r\nhello\r\n0\r\n\r\n"), -1, "", 0},
    {B("0x5\r\nhello\r\n0\r\n\r\n"), -1, "", 0},
    {B("5\r\nhel"), 0, "hel", 0},
    {B("5\r\nhello\r\n0\r\n"), 0, "hello", 0},
    {B("5\r\nhello\r\n0\r\nA: b\r\n"), 0, "hello", 0},
    {B("5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n"), 1, "hello", 15},
    {B("1\r\n\0\r\n0\r\n\r\n"), 1, "", 0}, /* payload is one NUL: checked by length */
};

static void test_chunked_table(void)
{
    static const size_t steps[] = {0, 1, 2, 3, 7};
    char out[256];
    for (size_t i = 0; i < N(chunked_cases); i++) {
        const struct chunked_case *c = &chunked_cases[i];
        for (size_t s = 0; s < N(steps); s++) {
            size_t out_len, used;
            int r = decode(c->in.s, c->in.len, steps[s], out, &out_len, &used);
            is_int(r, c->want, "chunked %zu step %zu", i, steps[s]);
            if (i == N(chunked_cases) - 1) {
                ok(out_len == 1 && out[0] == '\0', "NUL payload");
            } else {
                is_slice(slice_make(out, out_len), c->payload);
            }
            if (r == 1)
                is_int(used, c->used ? c->used : c->in.len, "chunked %zu used", i);
        }
    }
}

static void test_chunked_calls(void)
{
    struct http1_chunked d;
    struct slice data;
    const char *s = "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nextra";
    size_t len = strlen(s);
    http1_chunked_init(&d);

    /* Each call stops right after a payload run. */
    ssize_t r = http1_chunked_decode(&d, s, len, &data);
    is_int(r, 6);
    is_slice(data, "abc");
    ok(data.base == s + 3, "payload points into the buffer");
    r = http1_chunked_decode(&d, s + 6, len - 6, &data);
    is_int(r, 13 - 6);
    is_slice(data, "de");
    r = http1_chunked_decode(&d, s + 13, len - 13, &data);
    is_int(r, 20 - 13);
    is_int(data.len, 0);
    ok(http1_chunked_done(&d), "done");
    r = http1_chunked_decode(&d, s + 20, len - 20, &data);
    is_int(r, 0);
    is_int(data.len, 0);
    r = http1_chunked_decode(&d, NULL, 0, &data);
    is_int(r, 0);

    /* Errors are sticky. */
    http1_chunked_init(&d);
    is_int(http1_chunked_decode(&d, "g", 1, &data), -1);
    is_int(http1_chunked_decode(&d, "5\r\n", 3, &data), -1);
    ok(!http1_chunked_done(&d), "not done after an error");

    /* A 4096-byte extension line is accepted, one more byte is not. */
    char line[5000];
    size_t n = 0;
    line[n++] = '1';
    line[n++] = ';';
    while (n < 4096)
        line[n++] = 'x';
    line[n++] = '\r';
    line[n++] = '\n';
    memcpy(line + n, "a\r\n0\r\n\r\n", 8);
    size_t out_len, used;
    char out[16];
    is_int(decode(line, n + 8, 0, out, &out_len, &used), 1);
    is_int(decode(line, n + 8, 1, out, &out_len, &used), 1);
    memmove(line + 3, line + 2, n + 8 - 2);
    line[2] = 'y';
    is_int(decode(line, n + 9, 0, out, &out_len, &used), -1);
    is_int(decode(line, n + 9, 5, out, &out_len, &used), -1);

    /* Trailers are bounded to 16384 bytes in all. */
    size_t big = 20000;
    char *t = malloc(big + 64);
    n = 0;
    memcpy(t, "0\r\n", 3);
    n = 3;
    while (n < 16000) {
        memcpy(t + n, "X-T: 0123456789\r\n", 17);
        n += 17;
    }
    memcpy(t + n, "\r\n", 2);
    is_int(decode(t, n + 2, 0, out, &out_len, &used), 1);
    while (n < 17000) {
        memcpy(t + n, "X-T: 0123456789\r\n", 17);
        n += 17;
    }
    memcpy(t + n, "\r\n", 2);
    is_int(decode(t, n + 2, 0, out, &out_len, &used), -1);
    is_int(decode(t, n + 2, 1000, out, &out_len, &used), -1);
    free(t);
}

/* A larger stream decoded byte by byte gives the same payload as at once. */
static void test_chunked_bytewise(void)
{
    char in[8192], want[4096], got[4096];
    size_t n = 0, w = 0;
    unsigned seed = 12345;
    for (int chunk = 0; chunk < 40; chunk++) {
        seed = seed * 1103515245u + 12345u;
        size_t size = 1 + (seed >> 16) % 90;
        static const char hex[] = "0123456789abcdef";
        if (chunk % 3 == 0)
            in[n++] = '0';
        if (size >= 16)
            in[n++] = hex[size >> 4];
        in[n++] = hex[size & 15];
        if (chunk % 4 == 1) {
            memcpy(in + n, ";k=v", 4);
            n += 4;
        }
        in[n++] = '\r';
        in[n++] = '\n';
        for (size_t i = 0; i < size; i++) {
            char c = (char)(seed >> (i % 24));
            in[n++] = c;
            want[w++] = c;
        }
        in[n++] = '\r';
        in[n++] = '\n';
    }
    memcpy(in + n, "0\r\nX: y\r\n\r\n", 11);
    n += 11;

    size_t got_len, used;
    is_int(decode(in, n, 0, got, &got_len, &used), 1);
    ok(got_len == w && memcmp(got, want, w) == 0, "all at once");
    is_int(used, n);
    for (size_t step = 1; step < 12; step++) {
        is_int(decode(in, n, step, got, &got_len, &used), 1, "step %zu", step);
        ok(got_len == w && memcmp(got, want, w) == 0, "step %zu payload", step);
        is_int(used, n);
    }
    /* Every strict prefix is incomplete, never invalid. */
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        if (decode(in, k, 0, got, &got_len, &used) != 0)
            bad++;
    }
    is_int(bad, 0, "prefixes incomplete");
}

/*
 * Long values and targets go through the 16-byte scanners: a forbidden byte
 * at any position, including the last of a block and in the scalar tail,
 * must still be found, and allowed bytes (HTAB, obs-text) must pass.
 */
static void test_long_runs(void)
{
    static const unsigned char bad_value[] = {0x00, 0x01, 0x0b, 0x1f, 0x7f};
    static const unsigned char bad_target[] = {0x00, 0x09, 0x20, 0x7f, 0x80, 0xff};
    struct header h[8];
    struct http1_request_head rq;
    for (size_t pos = 0; pos < 48; pos++) {
        char value[49];
        memset(value, 'v', 48);
        value[48] = '\0';
        char req[256];
        for (size_t b = 0; b < sizeof bad_value; b++) {
            value[pos] = (char)bad_value[b];
            int n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
            memcpy(req + n, value, 48);
            memcpy(req + n + 48, "\r\n\r\n", 4);
            int r = http1_parse_request(req, (size_t)n + 52, &rq, h, 8);
            ok(r == HTTP1_INVALID, "value byte 0x%02x at %zu: got %d", bad_value[b], pos, r);
        }
        value[pos] = '\t';
        int n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: a\r\nX: a");
        memcpy(req + n, value, 48);
        memcpy(req + n + 48, "\r\n\r\n", 4);
        is_int(http1_parse_request(req, (size_t)n + 52, &rq, h, 8), n + 52);
        value[pos] = (char)0xe9; /* obs-text */
        memcpy(req + n, value, 48);
        is_int(http1_parse_request(req, (size_t)n + 52, &rq, h, 8), n + 52);

        char target[49];
        memset(target, 't', 48);
        target[0] = '/';
        for (size_t b = 0; b < sizeof bad_target && pos > 0; b++) {
            target[pos] = (char)bad_target[b];
            memcpy(req, "GET ", 4);
            memcpy(req + 4, target, 48);
            n = 52 + snprintf(req + 52, sizeof req - 52, " HTTP/1.1\r\nHost: a\r\n\r\n");
            int r = http1_parse_request(req, (size_t)n, &rq, h, 8);
            ok(r == HTTP1_INVALID, "target byte 0x%02x at %zu: got %d", bad_target[b], pos, r);
            target[pos] = 't';
        }
    }
}

/* SPEC 7 "Host": uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2-3.2.3). */
static void test_valid_host(void)
{
    static const char *const good[] = {
        "",
        "example.com",
        "example.com:8080",
        "a",
        "A-b_c~d.e",
        "127.0.0.1",
        "127.0.0.1:80",
        "[::1]",
        "[::1]:8443",
        "[2001:db8::7]",
        "[::ffff:1.2.3.4]",
        "[v1.x:y]",
        "%41bc",
        "a!$&'()*+,;=",
        "h:",
        "h:65535",
    };
    static const char *const bad[] = {
        "a b",   "a@evil", "user@b:x", "user@b", "b:x",   "h:123456",  "h:1:2",
        "[::1",  "[::1]x", "[::1]:x",  "[xyz]",  "[]",    "[1.2.3.4]", "a%4",
        "a%zz",  "a/b",    "a?b",      "a#b",    "a\tb",  "\"a\"",     "a\\b",
        "[v1.]", "[v.x]",  ":80",      "a\x7f",  "a\x80",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        ok(http1_valid_host(slice_cstr(good[i])), "valid host '%s'", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ok(!http1_valid_host(slice_cstr(bad[i])), "invalid host '%s'", bad[i]);
    /* A NUL byte inside the value. */
    ok(!http1_valid_host(slice_make("a\0b", 3)), "NUL in a host");
}

int main(void)
{
    test_valid_host();
    test_valid_requests();
    test_header_values();
    test_invalid_requests();
    test_early_invalid();
    test_too_many_headers();
    test_responses();
    test_framing();
    test_chunked_table();
    test_chunked_calls();
    test_chunked_bytewise();
    test_long_runs();
    return test_done();
}
