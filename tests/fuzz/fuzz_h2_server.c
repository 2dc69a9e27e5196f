/*
 * fuzz_h2_server: the HTTP/2 front end (server/http2_server.c) fed raw
 * bytes as a client would send them: a real nghttp2 server session on one
 * end of a socketpair, driven by the worker's event loop through the real
 * exchange (routing, filters, gateway responses) to a stub upstream side
 * registered with exchange_set_upstream() that answers at once from memory.
 * No network: the other end of the socketpair is this harness, which
 * writes the input and reads (and discards) what the server sends.
 *
 * The first byte picks:
 *   bits 0-2  the size of the pieces the input is written in (all at once,
 *             1, 3, 9, 17, 64, 200, 1000 bytes), with a turn of the loop
 *             between pieces;
 *   bit 3     the connection counts as TLS (:scheme https);
 *   bit 4     the harness sends the client connection preface first (the
 *             rest are frames), else the input must bring its own.
 * The stub answers by path: "/wait..." once the request body is complete,
 * "/big..." with 128 KiB (flow control), "/empty..." with 204, anything
 * else with a short 200; the configuration adds a respond route
 * ("/respond"), a redirect ("/old/..."), a body_limit of 100 bytes
 * ("/limited") and response headers.
 *
 * Each input gets a fresh connection; after the input the harness closes
 * its end and turns the loop until the connection is gone (bounded), so
 * LeakSanitizer sees anything a connection or a stream leaves behind.
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "base/deadline.h"
#include "base/header.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "base/thread_cache.h"
#include "core/worker.h"
#include "net/loop.h"
#include "server/http2_server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char config_text[] =
    "{\"listen\": [{\"address\": \"127.0.0.1:18080\", \"protocols\": [\"h2c\"]}],"
    " \"access_log\": {\"path\": \"off\"},"
    " \"limits\": {\"max_headers\": 32, \"max_header_bytes\": 4096},"
    " \"upstreams\": {\"app\": {\"targets\": [\"127.0.0.1:9\"]}},"
    " \"routes\": ["
    "  {\"match\": {\"prefix\": \"/respond\"}, \"respond\": {\"status\": 200, \"body\": "
    "\"hi\\n\"}},"
    "  {\"match\": {\"regex\": \"^/old/(.*)$\"}, \"redirect\": {\"location\": \"/new/$1\"}},"
    "  {\"match\": {\"prefix\": \"/limited\"}, \"upstream\": \"app\","
    "   \"filters\": [{\"type\": \"body_limit\", \"max_bytes\": 100}]},"
    "  {\"match\": {\"prefix\": \"/\"}, \"upstream\": \"app\","
    "   \"filters\": [{\"type\": \"headers\", \"response\": {\"set\": {\"X-Fuzz\": \"1\"}}}]}]}";

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static struct worker *w;

/* ---- the stub upstream side --------------------------------------------- */

static bool path_has(const struct exchange *x, const char *prefix)
{
    size_t n = strlen(prefix);
    return x->path.len >= n && memcmp(x->path.base, prefix, n) == 0;
}

static void answer(struct exchange *x)
{
    if (x->req_body)
        evbuffer_drain(x->req_body, evbuffer_get_length(x->req_body));
    struct evbuffer *body = evbuffer_new();
    if (!body)
        abort();
    if (path_has(x, "/empty")) {
        x->status = 204;
    } else if (path_has(x, "/big")) {
        x->status = 200;
        static char block[16384];
        memset(block, 'b', sizeof block);
        for (int i = 0; i < 8; i++)
            evbuffer_add(body, block, sizeof block);
    } else {
        x->status = 200;
        evbuffer_add(body, "hello\n", 6);
        header_set(&x->resp_headers, SLICE_LIT("Content-Length"), SLICE_LIT("6"));
        x->resp_length = 6;
    }
    header_set(&x->resp_headers, SLICE_LIT("Content-Type"), SLICE_LIT("text/plain"));
    exchange_send_head(x);
    if (evbuffer_get_length(body))
        exchange_send_body(x, body);
    evbuffer_free(body);
    exchange_end(x);
}

/* Any non-NULL x->proxy tells the exchange an upstream side takes the body; the stub keeps no
 * state. */
static char stub_marker;

static void stub_start(struct exchange *x)
{
    x->proxy = (struct proxy *)&stub_marker;
    if (!exchange_body_check(x))
        return;
    if (path_has(x, "/wait") && !x->req_body_done && x->req_has_body) {
        if (x->req_body)
            evbuffer_drain(x->req_body, evbuffer_get_length(x->req_body));
        return; /* on_request_body answers */
    }
    answer(x);
}

static void stub_on_request_body(struct exchange *x)
{
    if (!exchange_body_check(x))
        return;
    if (x->req_body)
        evbuffer_drain(x->req_body, evbuffer_get_length(x->req_body));
    if (x->req_body_done)
        answer(x);
}

static void stub_on_client_drain(struct exchange *x)
{
    (void)x;
}

static const struct exchange_upstream_ops stub_ops = {
    .start = stub_start,
    .on_request_body = stub_on_request_body,
    .on_client_drain = stub_on_client_drain,
};

/* ---- the harness ---------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    struct config_error err = {0};
    struct snapshot *s = config_load_text("fuzz-h2.json", config_text, strlen(config_text), &err);
    if (!s)
        abort();
    config_error_clear(&err);
    config_current_set(s);
    exchange_set_upstream(&stub_ops);

    w = calloc(1, sizeof *w);
    if (!w || !(w->base = event_base_new()) || !(w->deadlines = deadlines_new(w->base)))
        abort();
    w->net.base = w->base;
    w->net.owner = w;
    w->notify_fd = -1;
    w->rng[0] = 1;
    w->rng[1] = 2;
    /* Builds the worker's view of the configuration (w->current), as a started worker does. */
    worker_snapshot_release(worker_snapshot_acquire(w));
    if (!w->current)
        abort();
    /* The thread's caches, as a running worker has them: nghttp2's blocks come and go
     * through the free lists (base/blockpool.h), where ASan poisons the cached ones. */
    thread_cache_set(&w->cache);
    return 0;
}

/* One turn of the loop, then whatever the server wrote is read and dropped. */
static void turn(int peer)
{
    event_base_loop(w->base, EVLOOP_NONBLOCK);
    char sink[16384];
    while (recv(peer, sink, sizeof sink, MSG_DONTWAIT) > 0)
        ;
}

/* Writes all of buf[0..len), turning the loop while the socket is full. */
static void put(int peer, const void *buf, size_t len)
{
    const char *p = buf;
    for (int tries = 0; len && tries < 1000; tries++) {
        ssize_t n = send(peer, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return; /* the server closed: the rest is moot */
        } else {
            turn(peer);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const size_t pieces[] = {0, 1, 3, 9, 17, 64, 200, 1000};
    uint8_t mode = data[0];
    size_t piece = pieces[mode & 7];
    unsigned flags = LISTEN_H2C | ((mode & 8) ? LISTEN_TLS : 0);
    data++;
    size--;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    struct sockaddr_storage peer_addr;
    memset(&peer_addr, 0, sizeof peer_addr);
    struct sockaddr_in *sin = (struct sockaddr_in *)&peer_addr;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin->sin_port = htons(40000);
    if (http2_server_accept(w, sv[0], &peer_addr, flags) < 0)
        abort();

    turn(sv[1]);
    if (mode & 16)
        put(sv[1], preface, sizeof preface - 1);
    for (size_t off = 0; off < size;) {
        size_t n = piece && piece < size - off ? piece : size - off;
        put(sv[1], data + off, n);
        off += n;
        turn(sv[1]);
    }
    for (int i = 0; i < 8; i++)
        turn(sv[1]);

    /* The client leaves: the connection and all its streams must go. */
    close(sv[1]);
    for (int i = 0; i < 200 && w->net.num_conns; i++)
        event_base_loop(w->base, EVLOOP_NONBLOCK);
    if (w->net.num_conns)
        abort(); /* a connection outlived its closed socket */
    return 0;
}
