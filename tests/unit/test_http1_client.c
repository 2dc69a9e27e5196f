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

#include "backend.h"
#include "harness.h"
#include "net/conn.h"
#include "upstream/http1_client.h"

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
    target_loopback(t, &rt, port);
}

static void owner_init(struct owner *o, const char *method, const char *path)
{
    memset(o, 0, sizeof *o);
    o->note_last = true;
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

/* Opens the request on `t`, notes the first phase, and runs the loop until it ends. */
static void run(struct owner *o, struct target *t)
{
    owner_run(o, &http1_client_codec, t, &cfg);
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
    owner_open(&o, &http1_client_codec, &t, &cfg);
    owner_open(&o2, &http1_client_codec, &t, &cfg);
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
