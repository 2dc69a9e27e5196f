/*
 * core/proxy: the retry and failure decisions of SPEC 2.3, driven through
 * the exchange with a recording client side (as test_exchange.c does) and
 * real loopback upstreams (backend.h): a refused connection is retried on
 * another target, then 502; no answer in time is 504; no healthy target is
 * 503; a reused keep-alive connection closed before any byte is retried
 * whatever the method; a failure after sending is retried only for an
 * idempotent method whose body was not streamed. The configuration is
 * loaded from a real file for each case.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "backend.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "core/proxy.h"
#include "core/worker.h"
#include "test.h"

/* ---- a recording client side -------------------------------------------- */

static int sent_status;
static bool finished;
static bool aborted;
static struct evbuffer *sent_body;

static void c_head(struct exchange *x)
{
    sent_status = x->status;
}
static void c_body(struct exchange *x, struct evbuffer *data)
{
    evbuffer_add_buffer(sent_body, data);
}
static void c_end(struct exchange *x)
{
    finished = true;
}
static void c_pause(struct exchange *x, bool pause)
{
}
static size_t c_pending(struct exchange *x)
{
    return 0;
}
static void c_abort(struct exchange *x)
{
    aborted = true;
}

static const struct exchange_side_ops client_ops = {
    .send_head = c_head,
    .send_body = c_body,
    .send_end = c_end,
    .pause_body = c_pause,
    .pending = c_pending,
    .abort = c_abort,
};
static struct exchange_side side = {&client_ops};

/* ---- fixture ------------------------------------------------------------- */

static char dir[] = "/tmp/sluice-test-proxy-XXXXXX";
static struct worker *w;
static int cases;

/* Loads a configuration with one upstream "u<case>" of the given targets and options. */
static void load(const char *targets, const char *options)
{
    char path[512];
    snprintf(path, sizeof path, "%s/sluice.json", dir);
    FILE *f = fopen(path, "w");
    int n = ++cases;
    /* Health marks are process-wide, keyed by upstream name: a new name per case. */
    fprintf(f,
            "{\"workers\": 1, \"listen\": [{\"address\": \"127.0.0.1:18998\"}],\n"
            " \"access_log\": {\"path\": \"off\"},\n"
            " \"upstreams\": {\"u%d\": {\"targets\": [%s]%s%s}},\n"
            " \"routes\": [{\"upstream\": \"u%d\"}]}\n",
            n, targets, *options ? ", " : "", options, n);
    fclose(f);
    struct config_error err = {0};
    struct snapshot *s = config_load(path, &err);
    for (size_t i = 0; i < err.count; i++)
        printf("config: %s\n", err.messages[i]);
    config_error_clear(&err);
    ok(s != NULL, "config loads");
    config_current_set(s);
    unlink(path);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Sends one request with an optional body through the exchange; returns the status sent. */
static int run(const char *method, size_t body_len)
{
    sent_status = 0;
    finished = aborted = false;
    evbuffer_drain(sent_body, evbuffer_get_length(sent_body));
    struct exchange *x = exchange_new(w, &side);
    x->method = slice_cstr(method);
    x->target = SLICE_LIT("/p");
    x->host = SLICE_LIT("proxy.test");
    snprintf(x->remote_addr, sizeof x->remote_addr, "127.0.0.1");
    if (body_len) {
        char *body = calloc(1, body_len);
        memset(body, 'b', body_len);
        evbuffer_add(x->req_body, body, body_len);
        free(body);
        x->req_has_body = true;
        x->req_length = (int64_t)body_len;
    }
    x->req_body_done = true;
    exchange_start(x);
    double deadline = now_s() + 10;
    while (!finished && !aborted && now_s() < deadline)
        event_base_loop(w->base, EVLOOP_ONCE);
    ok(finished, "%s: the exchange ended", method);
    return sent_status;
}

static char *target(char *buf, size_t len, unsigned short port)
{
    snprintf(buf, len, "\"127.0.0.1:%u\"", port);
    return buf;
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    proxy_register();
    sent_body = evbuffer_new();
    w = calloc(1, sizeof *w);
    w->base = event_base_new();
    w->notify_fd = -1;
    w->rng[0] = 1;
    w->rng[1] = 2;
    char t1[64], t2[64], both[160];

    /* Refused, then retried on the other target: every request answered. */
    struct backend good;
    backend_start(&good, BACKEND_ANSWER);
    snprintf(both, sizeof both, "%s, %s", target(t1, sizeof t1, dead_port()),
             target(t2, sizeof t2, good.port));
    load(both, "\"retries\": 1");
    is_int(run("GET", 0), 200);
    is_int(run("POST", 3), 200); /* a refused connection took no byte: any method */
    is_int(atomic_load(&good.requests), 2);

    /* Both refuse: 502 after trying both; both are marked down, so next is 503. */
    snprintf(both, sizeof both, "%s, %s", target(t1, sizeof t1, dead_port()),
             target(t2, sizeof t2, dead_port()));
    load(both, "\"retries\": 1");
    is_int(run("GET", 0), 502);
    is_int(run("GET", 0), 503);
    ok(strstr((char *)evbuffer_pullup(sent_body, -1), "no healthy target"), "503 says why");

    /* No answer in time: 504, never retried. */
    unsigned short silent_port;
    int silent = silent_listener(&silent_port);
    load(target(t1, sizeof t1, silent_port), "\"retries\": 2, \"timeout_ms\": 200");
    double start = now_s();
    is_int(run("GET", 0), 504);
    ok(now_s() - start < 1.5, "the timeout answered in time");
    close(silent);

    /* A reused keep-alive connection closed before any byte: retried, POST included. */
    struct backend stale;
    backend_start(&stale, BACKEND_ANSWER_THEN_DROP);
    load(target(t1, sizeof t1, stale.port), "\"retries\": 0");
    is_int(run("GET", 0), 200);
    is_int(run("POST", 5), 200);
    is_int(atomic_load(&stale.requests), 3); /* the POST reached it twice, answered once */
    is_int(atomic_load(&stale.conns), 2);

    /* A failure after sending: only an idempotent method with a kept body goes again. */
    struct backend sw1, sw2;
    backend_start(&sw1, BACKEND_SWALLOW);
    backend_start(&sw2, BACKEND_SWALLOW);
    snprintf(both, sizeof both, "%s, %s", target(t1, sizeof t1, sw1.port),
             target(t2, sizeof t2, sw2.port));
    load(both, "\"retries\": 1");
    is_int(run("GET", 0), 502);
    is_int(atomic_load(&sw1.requests) + atomic_load(&sw2.requests), 2);
    is_int(run("POST", 3), 502);
    is_int(atomic_load(&sw1.requests) + atomic_load(&sw2.requests), 3);
    is_int(run("PUT", 3), 502);
    is_int(atomic_load(&sw1.requests) + atomic_load(&sw2.requests), 5);
    /* A body too large to keep for a replay was streamed: not even PUT goes again. */
    is_int(run("PUT", 100 * 1024), 502);
    is_int(atomic_load(&sw1.requests) + atomic_load(&sw2.requests), 6);

    /* A garbage first chunk size with the head: 502, nothing of the head went out. */
    struct backend raw;
    backend_start(&raw, BACKEND_RAW);
    raw.raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    load(target(t1, sizeof t1, raw.port), "\"retries\": 0");
    is_int(run("GET", 0), 502);
    ok(!aborted, "answered, not cut");

    backend_stop(&good);
    backend_stop(&stale);
    backend_stop(&sw1);
    backend_stop(&sw2);
    backend_stop(&raw);
    worker_join_free(w);
    evbuffer_free(sent_body);
    config_current_set(NULL);
    rmdir(dir);
    return test_done();
}
