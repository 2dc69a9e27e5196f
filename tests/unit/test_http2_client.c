/*
 * upstream/http2_client: the HTTP/2 codec driven through its operations
 * table with a recording events table, against a real loopback HTTP/2
 * server (nghttp2, prior knowledge) in a thread: a response with body and
 * trailers, a gRPC Trailers-Only response, streams sharing one connection,
 * a request body, "te: trailers" forwarded, a reset stream (after send) and
 * a refused one (stale: safe to send again), and the pool's close_sessions
 * hook closing the sessions.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "harness.h"
#include "net/conn.h"
#include "upstream/http2_client.h"

/* ---- the peer: a blocking nghttp2 server, one connection at a time -------- */

struct peer_stream {
    char path[64];
    size_t body;
    bool te_trailers;
    char reply[32];
    size_t reply_len;
    bool sent;
};

static atomic_int peer_conns;

static ssize_t peer_read_reply(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len,
                               uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct peer_stream *ps = src->ptr;
    size_t n = ps->sent ? 0 : ps->reply_len;
    memcpy(buf, ps->reply, n);
    ps->sent = true;
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (strcmp(ps->path, "/hello") == 0) {
        /* Trailers follow the body (RFC 9113 8.1). */
        nghttp2_nv t = {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE};
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_submit_trailer(ng, id, &t, 1);
    }
    return (ssize_t)n;
}

static void peer_answer(nghttp2_session *ng, int32_t id, struct peer_stream *ps)
{
    nghttp2_nv ok[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
                       {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE}};
    nghttp2_data_provider dp = {.source.ptr = ps, .read_callback = peer_read_reply};
    if (strcmp(ps->path, "/rst") == 0) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    } else if (strcmp(ps->path, "/refuse") == 0) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
    } else if (strcmp(ps->path, "/trailers-only") == 0) {
        nghttp2_submit_response(ng, id, ok, 2, NULL);
    } else {
        if (strcmp(ps->path, "/hello") == 0)
            ps->reply_len = (size_t)snprintf(ps->reply, sizeof ps->reply, "hello");
        else
            ps->reply_len = (size_t)snprintf(ps->reply, sizeof ps->reply, "%zu%s", ps->body,
                                             ps->te_trailers ? " te" : "");
        nghttp2_submit_response(ng, id, ok, 1, &dp);
    }
}

static int peer_begin(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    if (f->hd.type == NGHTTP2_HEADERS && !nghttp2_session_get_stream_user_data(ng, f->hd.stream_id))
        nghttp2_session_set_stream_user_data(ng, f->hd.stream_id,
                                             calloc(1, sizeof(struct peer_stream)));
    return 0;
}

static int peer_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                       const uint8_t *value, size_t vl, uint8_t flags, void *user)
{
    struct peer_stream *ps = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!ps)
        return 0;
    if (nl == 5 && memcmp(name, ":path", 5) == 0 && vl < sizeof ps->path)
        memcpy(ps->path, value, vl);
    if (nl == 2 && memcmp(name, "te", 2) == 0 && vl == 8 && memcmp(value, "trailers", 8) == 0)
        ps->te_trailers = true;
    return 0;
}

static int peer_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                     size_t len, void *user)
{
    struct peer_stream *ps = nghttp2_session_get_stream_user_data(ng, id);
    if (ps)
        ps->body += len;
    return 0;
}

static int peer_frame(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct peer_stream *ps = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
        if (ps)
            peer_answer(ng, f->hd.stream_id, ps);
    }
    return 0;
}

static int peer_close(nghttp2_session *ng, int32_t id, uint32_t code, void *user)
{
    free(nghttp2_session_get_stream_user_data(ng, id));
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    return 0;
}

static void *peer_main(void *arg)
{
    int lfd = *(int *)arg;
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, peer_begin);
    nghttp2_session_callbacks_set_on_header_callback(cbs, peer_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, peer_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, peer_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, peer_close);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            break;
        atomic_fetch_add(&peer_conns, 1);
        nghttp2_session *ng;
        nghttp2_session_server_new(&ng, cbs, NULL);
        nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, NULL, 0);
        for (;;) {
            const uint8_t *out;
            ssize_t n;
            bool failed = false;
            while ((n = nghttp2_session_mem_send(ng, &out)) > 0)
                failed |= write(fd, out, (size_t)n) != n;
            uint8_t buf[16384];
            ssize_t got = failed ? 0 : read(fd, buf, sizeof buf);
            if (got <= 0 || nghttp2_session_mem_recv(ng, buf, (size_t)got) < 0)
                break;
        }
        nghttp2_session_del(ng);
        close(fd);
    }
    nghttp2_session_callbacks_del(cbs);
    return NULL;
}

static struct event_base *base;
static struct upstream_rt rt;
static struct upstream_config cfg = {
    .name = "h",
    .keepalive = 4,
    .connect_timeout_ms = 1000,
    .timeout_ms = 1000,
    .protocol = UPSTREAM_H2,
};
static struct target t;

/* Runs one request on the target; returns the trace it left. */
static const char *run(struct owner *o, const char *method, const char *path, const char *body,
                       bool te)
{
    trace[0] = '\0';
    memset(o, 0, sizeof *o);
    o->arena = arena_new(4096);
    o->body = body;
    o->check_taken = true;
    header_list_init(&o->headers, o->arena, 4);
    header_add(&o->headers, SLICE_LIT("Host"), SLICE_LIT("h2.test"));
    header_add(&o->headers, SLICE_LIT("Connection"), SLICE_LIT("keep-alive")); /* dropped */
    o->rq = (struct upstream_request){
        .arena = o->arena,
        .method = slice_cstr(method),
        .path = slice_cstr(path),
        .headers = &o->headers,
        .has_body = body != NULL,
        .length = body ? (int64_t)strlen(body) : -1,
        .te_trailers = te,
    };
    header_list_init(&o->resp.trailers, o->arena, 0);
    owner_run(o, &http2_client_codec, &t, &cfg);
    return trace;
}

static void done(struct owner *o)
{
    o->s->ops->cancel(o->s);
    arena_free(o->arena);
}

int main(void)
{
    base = event_base_new();
    rt.base = base;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    bind(lfd, (struct sockaddr *)&a, sizeof a);
    listen(lfd, 8);
    getsockname(lfd, (struct sockaddr *)&a, &alen);
    pthread_t peer;
    pthread_create(&peer, NULL, peer_main, &lfd);
    target_loopback(&t, &rt, ntohs(a.sin_port));

    struct owner o;
    is_str(run(&o, "GET", "/hello", NULL, false), "connecting sent head(200) body(hello) end ");
    is_int(o.resp.trailers.count, 1);
    done(&o);

    /* The next stream shares the connection: sent at once. */
    is_str(run(&o, "GET", "/trailers-only", NULL, false), "sent head(200) end ");
    ok(!header_get(&o.resp.headers, SLICE_LIT("grpc-status")), "grpc-status moved out of the head");
    ok(o.resp.trailers.count == 1, "Trailers-Only: grpc-status is a trailer");
    done(&o);

    /* A body, and "te: trailers" where the request asks for it. */
    is_str(run(&o, "POST", "/echo", "twelve bytes", true), "sent head(200) body(12 te) end ");
    done(&o);
    is_str(run(&o, "POST", "/echo", "abc", false), "sent head(200) body(3) end ");
    done(&o);

    /* A reset after the request went out; a refused stream may go elsewhere. */
    is_str(run(&o, "GET", "/rst", NULL, false), "sent fail(after_send,502) ");
    done(&o);
    is_str(run(&o, "GET", "/refuse", NULL, false), "sent fail(stale,502) ");
    done(&o);
    is_int(atomic_load(&peer_conns), 1);
    is_int(t.pool.num_open, 1);

    /* The pool closes the sessions through the hook the codec registered. */
    ok(t.pool.close_sessions != NULL, "the codec registered its close hook");
    pool_close_all(&t.pool);
    is_int(t.pool.num_open, 0);
    ok(t.pool.h2 == NULL, "no session left");

    for (int i = 0; i < 20; i++)
        event_base_loop(base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
    shutdown(lfd, SHUT_RDWR);
    close(lfd);
    pthread_join(peer, NULL);
    event_base_free(base);
    return test_done();
}
