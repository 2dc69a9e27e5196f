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

#include "backend.h"
#include "core/proxy.h"
#include "harness.h"

/* ---- fixture ------------------------------------------------------------- */

static char dir[] = "/tmp/sluice-test-proxy-XXXXXX";
static struct worker *w;
static int cases;

/* Loads a configuration with one upstream "u<case>" of the given targets and options. */
static void load(const char *targets, const char *options)
{
    int n = ++cases;
    /* Health marks are process-wide, keyed by upstream name: a new name per case. */
    struct snapshot *s =
        config_from_file(dir,
                         "{\"workers\": 1, \"listen\": [{\"address\": \"127.0.0.1:18998\"}],\n"
                         " \"access_log\": {\"path\": \"off\"},\n"
                         " \"upstreams\": {\"u%d\": {\"targets\": [%s]%s%s}},\n"
                         " \"routes\": [{\"upstream\": \"u%d\"}]}\n",
                         n, targets, *options ? ", " : "", options, n);
    ok(s != NULL, "config loads");
    config_current_set(s);
}

/* Sends one request with an optional body through the exchange; returns the status sent. */
static int run(const char *method, size_t body_len)
{
    struct exchange *x = client_exchange(w, method, "/p");
    x->host = SLICE_LIT("proxy.test");
    if (body_len) {
        char *body = calloc(1, body_len);
        memset(body, 'b', body_len);
        evbuffer_add(x->req_body, body, body_len);
        free(body);
        x->req_has_body = true;
        x->req_length = (int64_t)body_len;
    }
    exchange_start(x);
    double deadline = now_s() + 10;
    while (!sent.ends && !sent.aborts && now_s() < deadline)
        event_base_loop(w->base, EVLOOP_ONCE);
    ok(sent.ends, "%s: the exchange ended", method);
    return sent.status;
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
    w = bare_worker_new();
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
    ok(strstr((char *)evbuffer_pullup(sent.body, -1), "no healthy target"), "503 says why");

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
    ok(!sent.aborts, "answered, not cut");

    backend_stop(&good);
    backend_stop(&stale);
    backend_stop(&sw1);
    backend_stop(&sw2);
    backend_stop(&raw);
    worker_join_free(w);
    evbuffer_free(sent.body);
    config_current_set(NULL);
    config_file_remove(dir);
    return test_done();
}
