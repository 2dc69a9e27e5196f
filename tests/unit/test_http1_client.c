/*
 * upstream/http1_client: the HTTP/1.1 codec driven through its operations
 * table with a recording events table, against real loopback upstreams
 * (backend.h): the request head it writes, a response head and body,
 * keep-alive reuse through the pool, the queue under max_connections, a
 * refused connection, and a garbage first chunk size (a failure before the
 * head event when it came with the head, after the head when it came
 * later).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "backend.h"
#include "base/arena.h"
#include "conf/config.h"
#include "net/conn.h"
#include "test.h"
#include "upstream/http1_client.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"

static char trace[1024];

static void note(const char *s)
{
    size_t n = strlen(trace);
    snprintf(trace + n, sizeof trace - n, "%s ", s);
}

/* One request as its owner sees it. */
struct owner {
    struct arena *arena;
    struct upstream_request rq;
    struct upstream_response resp;
    struct header_list headers;
    struct upstream_stream *s;
    bool done;
};

static void on_phase(void *arg, enum upstream_phase phase)
{
    struct owner *o = arg;
    note(phase == UPSTREAM_SENT ? "sent" : phase == UPSTREAM_CONNECTING ? "connecting" : "queued");
    if (phase == UPSTREAM_SENT) {
        struct evbuffer *none = evbuffer_new();
        o->s->ops->send_body(o->s, none, true); /* no body: the head goes out */
        evbuffer_free(none);
    }
}
static void on_head(void *arg)
{
    struct owner *o = arg;
    char s[32];
    snprintf(s, sizeof s, "head(%d)", o->resp.status);
    note(s);
}
static void on_body(void *arg, struct evbuffer *data, bool last)
{
    char s[64];
    size_t n = evbuffer_get_length(data);
    snprintf(s, sizeof s, "body(%.*s%s)", (int)(n < 20 ? n : 20),
             n ? (char *)evbuffer_pullup(data, -1) : "", last ? ",last" : "");
    evbuffer_drain(data, n);
    note(s);
}
static void on_end(void *arg)
{
    struct owner *o = arg;
    note("end");
    o->done = true;
}
static void on_fail(void *arg, enum upstream_failure why, int status, const char *message)
{
    struct owner *o = arg;
    static const char *const kinds[] = {"connect", "stale", "after_send", "gone", "timeout"};
    char s[64];
    snprintf(s, sizeof s, "fail(%s,%d)", kinds[why], status);
    note(s);
    o->done = true;
}
static void on_body_drained(void *arg)
{
}

static const struct upstream_events events = {
    .on_phase = on_phase,
    .on_head = on_head,
    .on_body = on_body,
    .on_end = on_end,
    .on_fail = on_fail,
    .on_body_drained = on_body_drained,
};

/* ---- fixture ------------------------------------------------------------- */

static struct event_base *base;
static struct upstream_rt rt;
static struct upstream_config cfg = {
    .name = "u",
    .keepalive = 4,
    .connect_timeout_ms = 1000,
    .timeout_ms = 1000,
};

static void target_init(struct target *t, unsigned short port)
{
    memset(t, 0, sizeof *t);
    struct sockaddr_in *a = (struct sockaddr_in *)&t->addr;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t->addrlen = sizeof *a;
    t->upstream = &rt;
    snprintf(t->name, sizeof t->name, "127.0.0.1:%u", port);
    pool_init(&t->pool);
}

static void owner_init(struct owner *o, const char *method, const char *path)
{
    memset(o, 0, sizeof *o);
    o->arena = arena_new(4096);
    header_list_init(&o->headers, o->arena, 4);
    header_add(&o->headers, SLICE_LIT("Host"), SLICE_LIT("up.test"));
    o->rq = (struct upstream_request){
        .arena = o->arena,
        .method = slice_cstr(method),
        .path = slice_cstr(path),
        .query = SLICE_LIT("q=1"),
        .has_query = true,
        .headers = &o->headers,
        .length = -1,
    };
    header_list_init(&o->resp.trailers, o->arena, 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Opens the request on `t`, notes the first phase, and runs the loop until it ends. */
static void run(struct owner *o, struct target *t)
{
    enum upstream_phase phase;
    o->s = http1_client_codec.open(t, &cfg, &o->rq, &o->resp, &events, o, &phase);
    ok(o->s != NULL, "open");
    if (!o->s)
        return;
    on_phase(o, phase);
    double deadline = now_s() + 5;
    while (!o->done && now_s() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
}

static void owner_free(struct owner *o)
{
    if (o->s)
        o->s->ops->cancel(o->s); /* after on_end/on_fail: does nothing more */
    arena_free(o->arena);
}

int main(void)
{
    base = event_base_new();
    rt.base = base;
    struct owner o;
    struct target t;

    /* A GET, then another on the kept connection. */
    struct backend b;
    backend_start(&b, BACKEND_ANSWER);
    target_init(&t, b.port);
    trace[0] = '\0';
    owner_init(&o, "GET", "/a");
    run(&o, &t);
    is_str(trace, "connecting sent head(200) body(ok,last) end ");
    ok(strncmp(b.last, "GET /a?q=1 HTTP/1.1\r\nHost: up.test\r\n\r\n", 38) == 0, "head: %s",
       b.last);
    is_int(t.pool.num_idle, 1);
    owner_free(&o);
    trace[0] = '\0';
    owner_init(&o, "POST", "/b");
    run(&o, &t);
    is_str(trace, "sent head(200) body(ok,last) end ");
    ok(strstr(b.last, "POST /b?q=1 HTTP/1.1\r\n") && strstr(b.last, "Content-Length: 0\r\n"),
       "a POST without a body says Content-Length: 0: %s", b.last);
    is_int(atomic_load(&b.conns), 1);
    owner_free(&o);

    /* max_connections 1: the second request waits for the first one's connection. */
    pool_close_all(&t.pool);
    cfg.max_connections = 1;
    struct owner o2;
    owner_init(&o, "GET", "/1");
    owner_init(&o2, "GET", "/2");
    trace[0] = '\0';
    enum upstream_phase phase;
    o.s = http1_client_codec.open(&t, &cfg, &o.rq, &o.resp, &events, &o, &phase);
    on_phase(&o, phase);
    o2.s = http1_client_codec.open(&t, &cfg, &o2.rq, &o2.resp, &events, &o2, &phase);
    on_phase(&o2, phase);
    double deadline = now_s() + 5;
    while (!(o.done && o2.done) && now_s() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    is_str(trace, "connecting queued sent head(200) body(ok,last) end sent head(200) body(ok,last) "
                  "end ");
    is_int(atomic_load(&b.conns), 2);
    owner_free(&o);
    owner_free(&o2);
    cfg.max_connections = 0;
    pool_close_all(&t.pool);
    backend_stop(&b);

    /* Refused. */
    target_init(&t, dead_port());
    trace[0] = '\0';
    owner_init(&o, "GET", "/");
    run(&o, &t);
    is_str(trace, "connecting fail(connect,502) ");
    is_int(t.pool.num_open, 0);
    owner_free(&o);

    /* A garbage first chunk size in the same write as the head: fails before any head. */
    backend_start(&b, BACKEND_RAW);
    b.raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    target_init(&t, b.port);
    trace[0] = '\0';
    owner_init(&o, "GET", "/");
    run(&o, &t);
    is_str(trace, "connecting sent fail(after_send,502) ");
    owner_free(&o);

    /* The head and a chunk, later garbage: the head and body went out, then it fails. */
    b.raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    b.raw2 = "zz\r\n";
    trace[0] = '\0';
    owner_init(&o, "GET", "/");
    run(&o, &t);
    is_str(trace, "connecting sent head(200) body(hello) fail(after_send,502) ");
    is_int(t.pool.num_open, 0);
    owner_free(&o);
    pool_close_all(&t.pool);
    backend_stop(&b);

    event_base_free(base);
    return test_done();
}
