#include "core/exchange.h"

#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "base/clock.h"
#include "base/deadline.h"
#include "base/json_writer.h"
#include "base/log.h"
#include "ops/accesslog.h"
#include "conf/config.h"
#include "net/conn.h"
#include "ops/metrics.h"
#include "ops/record.h"
#include "core/worker.h"
#include "proto/http1_parse.h"
#include "proto/status.h"
#include "base/container_of.h"
#include "upstream/codec.h"

/* Room for a typical request's arena: the head copy, header lists, filter state. */
#define EXCHANGE_ARENA_SIZE 4096

/* The upstream side (core/proxy), registered at start-up. */
static const struct exchange_upstream_ops *upstream_ops;

void exchange_set_upstream(const struct exchange_upstream_ops *ops)
{
    upstream_ops = ops;
}

static void on_arena_free_body(void *arg)
{
    conn_buffer_put(arg);
}

struct exchange *exchange_new(struct worker *worker, struct exchange_side *client)
{
    struct arena *a = arena_new(EXCHANGE_ARENA_SIZE);
    struct exchange *x = arena_calloc(a, sizeof *x);
    x->arena = a;
    x->worker = worker;
    x->client = client;
    x->view = worker_snapshot_acquire(worker);
    x->snapshot = x->view->snapshot;
    x->req_length = -1;
    x->resp_length = -1;
    x->start_us = clock_mono_us();
    header_list_init(&x->req_headers, a, 0);
    header_list_init(&x->resp_headers, a, 16);
    header_list_init(&x->resp_trailers, a, 0);
    x->req_body = conn_buffer_get(); /* pooled: no allocation per request */
    if (!x->req_body) {
        log_error("out of memory");
        abort();
    }
    arena_cleanup_add(a, on_arena_free_body, x->req_body);
    return x;
}

void exchange_free(struct exchange *x)
{
    if (x->tunnel) {
        x->tunnel_ops->free(x->tunnel); /* a tunnel's shell: it lives in the tunnel */
        return;
    }
    struct worker_snapshot *view = x->view;
    arena_free(x->arena);
    worker_snapshot_release(view);
}

/* ---- variables ---------------------------------------------------------- */

static const char *const var_names[XVAR_COUNT] = {
    [XVAR_REMOTE_ADDR] = "remote_addr",
    [XVAR_REQUEST_ID] = "request_id",
    [XVAR_CONSUMER] = "consumer",
    [XVAR_HOST] = "host",
    [XVAR_ROUTE] = "route",
    [XVAR_CLIENT_SUBJECT] = "client_subject",
};

int exchange_var_lookup(struct slice name)
{
    for (int i = 0; i < XVAR_COUNT; i++)
        if (slice_eq(name, slice_cstr(var_names[i])))
            return i;
    return -1;
}

struct slice exchange_var(const struct exchange *x, enum exchange_var v)
{
    switch (v) {
    case XVAR_REMOTE_ADDR:
        return slice_cstr(x->remote_addr);
    case XVAR_REQUEST_ID:
        return x->request_id;
    case XVAR_CONSUMER:
        return x->consumer;
    case XVAR_HOST:
        return x->host;
    case XVAR_ROUTE:
        return x->route ? slice_cstr(x->route->name) : slice_make("", 0);
    case XVAR_CLIENT_SUBJECT:
        return x->client_subject;
    case XVAR_COUNT:
        break;
    }
    return slice_make("", 0);
}

/* ---- gateway responses -------------------------------------------------- */

static struct evbuffer *gateway_body(struct exchange *x)
{
    if (!x->gw_body) {
        x->gw_body = evbuffer_new();
        if (!x->gw_body) {
            log_error("out of memory");
            abort();
        }
        arena_cleanup_add(x->arena, on_arena_free_body, x->gw_body);
    } else {
        evbuffer_drain(x->gw_body, evbuffer_get_length(x->gw_body));
    }
    return x->gw_body;
}

static void set_content_length(struct exchange *x, size_t n)
{
    char buf[24];
    int len = snprintf(buf, sizeof buf, "%zu", n);
    header_set(&x->resp_headers, SLICE_LIT("Content-Length"),
               arena_slice_dup(x->arena, slice_make(buf, (size_t)len)));
    x->resp_length = (int64_t)n;
}

void exchange_respond(struct exchange *x, int status, struct slice content_type, struct slice body)
{
    x->status = status;
    x->gateway_response = true;
    x->response_ready = true;
    if (content_type.len)
        header_set(&x->resp_headers, SLICE_LIT("Content-Type"), content_type);
    struct evbuffer *b = gateway_body(x);
    evbuffer_add(b, body.base, body.len);
    set_content_length(x, body.len);
}

static void assign_request_id(struct exchange *x);

void exchange_respond_error(struct exchange *x, int status, const char *message)
{
    if (!x->request_id.len)
        assign_request_id(x); /* an error found before the exchange started */
    if (!message)
        message = status_message(status);
    x->status = status;
    x->error = status_error_code(status);
    x->gateway_response = true;
    x->response_ready = true;
    /* An error replaces whatever head was being prepared. */
    x->resp_headers.count = 0;
    header_set(&x->resp_headers, SLICE_LIT("Content-Type"), SLICE_LIT("application/json"));
    struct evbuffer *b = gateway_body(x);
    struct json_writer w;
    json_writer_init_evbuffer(&w, b);
    json_writer_raw_cstr(&w, "{\"status\": ");
    json_writer_int(&w, status);
    json_writer_raw_cstr(&w, ", \"error\": ");
    json_writer_string(&w, slice_cstr(x->error));
    json_writer_raw_cstr(&w, ", \"message\": ");
    json_writer_string(&w, slice_cstr(message));
    json_writer_raw_cstr(&w, ", \"request_id\": ");
    json_writer_string(&w, x->request_id);
    json_writer_raw(&w, "}\n", 2);
    set_content_length(x, evbuffer_get_length(b));
}

/* ---- request id --------------------------------------------------------- */

static bool request_id_valid(struct slice id)
{
    if (id.len < 1 || id.len > 200)
        return false;
    for (size_t i = 0; i < id.len; i++) {
        char c = id.base[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static void assign_request_id(struct exchange *x)
{
    static const struct slice name = SLICE_LIT("X-Request-Id");
    const struct slice *sent = header_get(&x->req_headers, name);
    if (sent && header_count(&x->req_headers, name) == 1 && request_id_valid(*sent)) {
        x->request_id = *sent;
        return;
    }
    /* Two hex digits per random byte, from a table: no per-nibble arithmetic. */
    static const char hex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                              "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
                              "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
                              "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
                              "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
                              "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
                              "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
                              "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    char *id = arena_alloc(x->arena, 33);
    for (int half = 0; half < 2; half++) {
        uint64_t r = worker_random(x->worker);
        for (int i = 0; i < 8; i++, r >>= 8)
            memcpy(id + half * 16 + i * 2, hex + (r & 0xff) * 2, 2);
    }
    id[32] = '\0';
    x->request_id = slice_make(id, 32);
    header_set(&x->req_headers, name, x->request_id);
}

/* ---- the pipeline ------------------------------------------------------- */

/* The i-th filter of the exchange's pipeline: global filters, then the route's. */
static const struct filter_instance *pipeline_filter(const struct exchange *x, size_t i)
{
    const struct snapshot *s = x->snapshot;
    if (i < s->num_filters)
        return &s->filters[i];
    i -= s->num_filters;
    if (x->route && i < x->route->num_filters)
        return &x->route->filters[i];
    return NULL;
}

static size_t pipeline_length(const struct exchange *x)
{
    return x->snapshot->num_filters + (x->route ? x->route->num_filters : 0);
}

void *exchange_filter_state(struct exchange *x, size_t i)
{
    return x->filter_state ? x->filter_state[i] : NULL;
}

/*
 * Where a pause stands. IN_FILTER: on_request is running, so a resume now
 * must wait for it to return. WAITING: on_request returned FILTER_PAUSE and
 * pause_timer holds the deadline. RESUMED: the resume came before on_request
 * returned; pause_timer is deferred to the loop's next turn.
 */
enum pause_state {
    PAUSE_NONE = 0,
    PAUSE_IN_FILTER,
    PAUSE_WAITING,
    PAUSE_RESUMED,
};

/*
 * What only exchanges that pause or whose body is watched need, from the
 * arena on first need, so the common exchange stays small (its arena's
 * first block holds a whole small request).
 */
struct exchange_hold {
    struct deadline timer; /* the pause deadline, or the deferred resume */
    struct exchange *x;
    enum filter_verdict resume_verdict; /* given to exchange_resume() before on_request returned */
    bool body_end_seen;                 /* the body hooks were told the body is complete */
    uint64_t body_seen;                 /* body bytes shown to the hooks */
    uint64_t body_added;                /* body bytes the codec appended to x->req_body */
    struct evbuffer_cb_entry *body_cb;  /* counts body_added; NULL when not watched */
};

static void after_request_filters(struct exchange *x);
static void on_pause_timer(struct deadline *d);

/* Runs before the pooled req_body goes back (cleanups run newest first). */
static void on_arena_release_hold(void *arg)
{
    struct exchange_hold *h = arg;
    /* The client may leave while paused: the timer must die with the arena. */
    deadline_cancel(&h->timer);
    if (h->body_cb)
        evbuffer_remove_cb_entry(h->x->req_body, h->body_cb);
}

static struct exchange_hold *hold_get(struct exchange *x)
{
    if (x->hold)
        return x->hold;
    struct exchange_hold *h = arena_calloc(x->arena, sizeof *h);
    deadline_init(&h->timer, on_pause_timer);
    h->x = x;
    arena_cleanup_add(x->arena, on_arena_release_hold, h);
    x->hold = h;
    return h;
}

/* Arms the pause deadline, or defers a resume that came early to the loop. */
static void pause_begin(struct exchange *x, bool resumed)
{
    struct exchange_hold *h = hold_get(x);
    if (resumed) {
        x->pause = PAUSE_RESUMED;
        deadline_defer(x->worker->deadlines, &h->timer);
        return;
    }
    x->pause = PAUSE_WAITING;
    deadline_arm(x->worker->deadlines, &h->timer, exchange_pause_timeout_ms(x));
}

int exchange_pause_timeout_ms(const struct exchange *x)
{
    const struct route_config *r = x->route;
    if (r && r->timeout_ms > 0)
        return r->timeout_ms;
    if (r && r->action == ROUTE_UPSTREAM && r->upstream && r->upstream->timeout_ms > 0)
        return r->upstream->timeout_ms;
    int body = x->snapshot->limits.body_timeout_ms;
    return body > 0 ? body : 30000;
}

/* A filter answered (RESPOND): send its response, or a 500 if it forgot to set one. */
static void reply_filter_response(struct exchange *x)
{
    if (!x->response_ready)
        exchange_respond_error(x, 500, "a filter failed to respond");
    exchange_reply(x);
}

/* Runs request filters from x->filter_next on. Returns when done or paused. */
static void run_request_filters(struct exchange *x)
{
    size_t n = pipeline_length(x);
    while (x->filter_next < n) {
        size_t i = x->filter_next++;
        const struct filter_instance *f = pipeline_filter(x, i);
        if (!f->type->on_request)
            continue;
        x->pause = PAUSE_IN_FILTER;
        enum filter_verdict v = f->type->on_request(
            f->instance, filter_context(x->view->filter_contexts, x->snapshot, x->route, i), x,
            x->filter_state ? x->filter_state[i] : NULL);
        bool resumed = x->pause == PAUSE_RESUMED;
        x->pause = PAUSE_NONE;
        if (v == FILTER_PAUSE) {
            pause_begin(x, resumed);
            return;
        }
        /* exchange_resume() without FILTER_PAUSE breaks the contract. */
        assert(!resumed);
        if (v == FILTER_RESPOND) {
            reply_filter_response(x);
            return;
        }
    }
    after_request_filters(x);
}

static void continue_after_pause(struct exchange *x, enum filter_verdict verdict)
{
    if (verdict == FILTER_RESPOND) {
        reply_filter_response(x);
        return;
    }
    run_request_filters(x);
}

static void on_pause_timer(struct deadline *d)
{
    struct exchange_hold *h = container_of(d, struct exchange_hold, timer);
    struct exchange *x = h->x;
    if (x->pause == PAUSE_RESUMED) {
        x->pause = PAUSE_NONE;
        continue_after_pause(x, h->resume_verdict);
        return;
    }
    /*
     * The filter never answered. Its operation is still pending: the arena
     * cleanup it registered before pausing cancels it when the reply frees
     * the exchange.
     */
    x->pause = PAUSE_NONE;
    exchange_respond_error(x, 504, "a filter did not answer in time");
    exchange_reply(x);
}

void exchange_resume(struct exchange *x, enum filter_verdict verdict)
{
    assert(x->pause == PAUSE_IN_FILTER || x->pause == PAUSE_WAITING);
    assert(verdict == FILTER_CONTINUE || verdict == FILTER_RESPOND);
    if (x->pause == PAUSE_IN_FILTER) {
        /* Not re-entrantly: run_request_filters defers once on_request returns. */
        hold_get(x)->resume_verdict = verdict;
        x->pause = PAUSE_RESUMED;
        return;
    }
    if (x->pause != PAUSE_WAITING)
        return;
    deadline_cancel(&x->hold->timer);
    x->pause = PAUSE_NONE;
    continue_after_pause(x, verdict);
}

static void run_response_filters(struct exchange *x)
{
    /* Only filters whose request phase ran see the response, last first. */
    for (size_t i = x->filter_next; i-- > 0;) {
        const struct filter_instance *f = pipeline_filter(x, i);
        if (f && f->type->on_response)
            f->type->on_response(f->instance,
                                 filter_context(x->view->filter_contexts, x->snapshot, x->route, i),
                                 x, x->filter_state ? x->filter_state[i] : NULL);
    }
}

/* ---- request body hooks ---------------------------------------------------- */

static void on_body_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct exchange_hold *h = arg;
    h->body_added += info->n_added;
}

/* Counts the body bytes the codec appends from now on, for the body hooks. */
static void watch_body(struct exchange *x)
{
    struct exchange_hold *h = hold_get(x);
    x->body_watched = true;
    h->body_added = evbuffer_get_length(x->req_body); /* nothing was drained yet */
    h->body_cb = evbuffer_add_cb(x->req_body, on_body_added, h);
    if (!h->body_cb) {
        log_error("out of memory");
        abort();
    }
}

uint64_t exchange_body_seen(const struct exchange *x)
{
    return x->hold ? x->hold->body_seen : 0;
}

/*
 * Shows the body bytes that arrived since the last call to every body hook.
 * Returns FILTER_RESPOND when one answered (the response is set).
 */
static enum filter_verdict run_body_hooks(struct exchange *x)
{
    struct exchange_hold *h = x->hold;
    size_t fresh = (size_t)(h->body_added - h->body_seen);
    bool end = x->req_body_done && !h->body_end_seen;
    if (fresh == 0 && !end)
        return FILTER_CONTINUE;
    h->body_seen += fresh;
    h->body_end_seen = x->req_body_done;
    size_t n = pipeline_length(x);
    for (size_t i = 0; i < n; i++) {
        const struct filter_instance *f = pipeline_filter(x, i);
        if (!f->type->on_request_body)
            continue;
        enum filter_verdict v = f->type->on_request_body(
            f->instance, filter_context(x->view->filter_contexts, x->snapshot, x->route, i), x,
            x->filter_state ? x->filter_state[i] : NULL, fresh);
        if (v == FILTER_CONTINUE)
            continue;
        if (v == FILTER_PAUSE || !x->response_ready)
            exchange_respond_error(x, 500, "a filter failed to respond");
        return FILTER_RESPOND;
    }
    return FILTER_CONTINUE;
}

/* A body hook answered: the response replaces the upstream's, or cuts it if already started. */
static void reply_body_response(struct exchange *x)
{
    if (x->head_sent) {
        exchange_abort(x);
        return;
    }
    exchange_reply(x);
}

int exchange_body_splice_fd(struct exchange *x, uint64_t *left)
{
    if (x->body_watched || !x->client->ops->body_splice_fd)
        return -1;
    return x->client->ops->body_splice_fd(x, left);
}

static void allocate_filter_state(struct exchange *x)
{
    size_t n = pipeline_length(x);
    if (n == 0)
        return;
    x->filter_state = arena_calloc(x->arena, n * sizeof *x->filter_state);
    bool body_hooks = false;
    for (size_t i = 0; i < n; i++) {
        const struct filter_instance *f = pipeline_filter(x, i);
        if (f->type->state_size)
            x->filter_state[i] = arena_calloc(x->arena, f->type->state_size);
        body_hooks |= f->type->on_request_body != NULL;
    }
    if (body_hooks)
        watch_body(x);
}

/* ---- starting a request --------------------------------------------------- */

/* Splits the request-target into path and query and finds the authority. Returns 0 or 400. */
static int parse_target(struct exchange *x)
{
    struct slice t = x->target;
    struct slice path = t;
    if (t.len > 0 && t.base[0] != '/') {
        /* absolute-form (RFC 9112 3.2.2): the authority is the Host (SPEC 7). */
        size_t skip = 0;
        if (t.len > 7 && strncasecmp(t.base, "http://", 7) == 0)
            skip = 7;
        else if (t.len > 8 && strncasecmp(t.base, "https://", 8) == 0)
            skip = 8;
        else
            return 400;
        size_t end = skip;
        while (end < t.len && t.base[end] != '/' && t.base[end] != '?')
            end++;
        if (end == skip)
            return 400;
        x->host = slice_make(t.base + skip, end - skip);
        header_set(&x->req_headers, SLICE_LIT("Host"), x->host);
        path = end < t.len && t.base[end] == '/' ? slice_make(t.base + end, t.len - end)
                                                 : SLICE_LIT("/");
        if (end < t.len && t.base[end] == '?') {
            /* "http://h?q": the path is "/" and the query follows. */
            x->has_query = true;
            x->query = slice_make(t.base + end + 1, t.len - end - 1);
        }
    }
    const char *q = memchr(path.base, '?', path.len);
    if (q) {
        x->has_query = true;
        x->query = slice_make(q + 1, path.len - (size_t)(q + 1 - path.base));
        path.len = (size_t)(q - path.base);
    }
    if (router_normalize_path(x->arena, path, &x->path) < 0)
        return 400;
    return 0;
}

void exchange_start(struct exchange *x)
{
    if (!x->request_id.len)
        assign_request_id(x);
    if (x->host.len == 0) {
        const struct slice *h = header_get(&x->req_headers, SLICE_LIT("Host"));
        if (h)
            x->host = *h;
    }
    int bad = parse_target(x);
    if (bad) {
        exchange_respond_error(x, bad, "the request target is malformed");
        exchange_reply(x);
        return;
    }
    /*
     * SPEC 7 "Host": the Host (field, absolute-form authority or HTTP/2
     * :authority) is uri-host [ ":" port ] with no userinfo; it is routed on
     * and forwarded, so anything else is refused before either.
     */
    if (!http1_valid_host(x->host)) {
        exchange_respond_error(x, 400, "the Host is not a valid host[:port]");
        exchange_reply(x);
        return;
    }
    /*
     * SPEC 7: a CORS preflight (OPTIONS with Origin and
     * Access-Control-Request-Method) is routed as if its method were the
     * requested one, so a route's `methods` need not list OPTIONS.
     */
    struct slice method = x->method;
    const struct slice *acrm;
    if (slice_eq(method, SLICE_LIT("OPTIONS")) &&
        header_get(&x->req_headers, SLICE_LIT("Origin")) &&
        (acrm = header_get(&x->req_headers, SLICE_LIT("Access-Control-Request-Method"))) &&
        acrm->len)
        method = *acrm;
    struct router_request rq = {
        .method = method,
        .host = x->host,
        .path = x->path,
        .query = x->query,
        .headers = &x->req_headers,
    };
    if (router_match(x->snapshot, x->arena, &rq, &x->match))
        x->route = x->match.route;
    allocate_filter_state(x);
    run_request_filters(x);
}

static void after_request_filters(struct exchange *x)
{
    const struct route_config *r = x->route;
    if (!r) {
        exchange_respond_error(x, 404, NULL);
        exchange_reply(x);
        return;
    }
    switch (r->action) {
    case ROUTE_RESPOND:
        for (size_t i = 0; i < r->num_respond_headers; i++)
            header_set(&x->resp_headers, r->respond_headers[i].name, r->respond_headers[i].value);
        exchange_respond(x, r->respond_status, slice_make("", 0),
                         slice_make(r->respond_body, r->respond_body_len));
        x->gateway_response = false; /* the configured answer, not an error */
        exchange_reply(x);
        return;
    case ROUTE_REDIRECT: {
        struct slice loc = router_expand_location(x->arena, r->redirect_location, &x->match);
        header_set(&x->resp_headers, SLICE_LIT("Location"), loc);
        exchange_respond(x, r->redirect_status, slice_make("", 0), slice_make("", 0));
        x->gateway_response = false;
        exchange_reply(x);
        return;
    }
    case ROUTE_UPSTREAM:
        /* The body that came while the filters ran passes the body hooks first. */
        if (x->body_watched && run_body_hooks(x) == FILTER_RESPOND) {
            reply_body_response(x);
            return;
        }
        if (x->expect_continue && x->req_has_body && !x->req_body_done &&
            x->client->ops->send_continue)
            x->client->ops->send_continue(x);
        if (!upstream_ops) {
            exchange_respond_error(x, 500, "no upstream side is registered");
            exchange_reply(x);
            return;
        }
        upstream_ops->start(x);
        return;
    }
}

/* ---- accounting ----------------------------------------------------------- */

static const char *protocol_name(enum exchange_protocol p)
{
    switch (p) {
    case XPROTO_HTTP10:
        return "HTTP/1.0";
    case XPROTO_HTTP11:
        return "HTTP/1.1";
    case XPROTO_HTTP2:
        return "HTTP/2";
    }
    return "HTTP/1.1";
}

/*
 * Hands the finished exchange to the access log and the metrics as a plain
 * record (ops/record.h). The metrics read only the status, the times and
 * the route; the rest is filled only when a line will be written.
 */
static void account(const struct exchange *x)
{
    struct ops_record r;
    r.status = x->status;
    r.start_us = x->start_us;
    r.end_us = clock_mono_us();
    r.route = x->route ? x->route->name : NULL;
    if (accesslog_enabled(&x->snapshot->access_log)) {
        r.log = &x->snapshot->access_log;
        r.req_headers = &x->req_headers;
        r.remote_addr = x->remote_addr;
        r.protocol = protocol_name(x->protocol);
        r.request_id = x->request_id;
        r.method = x->method;
        r.target = x->target;
        r.host = x->host;
        r.path = x->path;
        r.consumer = x->consumer;
        r.client_subject = x->client_subject;
        r.bytes_in = x->bytes_in;
        r.bytes_out = x->bytes_out;
        r.upstream_start_us = x->upstream_start_us;
        r.upstream_head_us = x->upstream_head_us;
        r.upstream_name = x->upstream_name;
        r.upstream_target = x->upstream_target;
        r.error = x->error;
        r.close_reason = x->close_reason;
        accesslog_write(&r);
    }
    metrics_exchange_done(&r);
}

/* ---- request body, drain, abort -------------------------------------------- */

bool exchange_body_check(struct exchange *x)
{
    if (!x->body_watched || run_body_hooks(x) == FILTER_CONTINUE)
        return true;
    reply_body_response(x);
    return false;
}

void exchange_on_request_body(struct exchange *x)
{
    if (x->tunnel) {
        x->tunnel_ops->on_client_data(x->tunnel);
        return;
    }
    if (x->proxy) {
        if (exchange_body_check(x))
            upstream_ops->on_request_body(x);
        return;
    }
    /*
     * Nobody consumes the body yet (a filter paused): hold at most the one
     * high-water mark of body buffering (upstream/codec.h).
     */
    if (!x->body_held && !x->req_body_done &&
        evbuffer_get_length(x->req_body) > UPSTREAM_HIGH_WATER) {
        x->body_held = true;
        x->client->ops->pause_body(x, true);
    }
}

void exchange_on_client_drain(struct exchange *x)
{
    if (x->tunnel) {
        x->tunnel_ops->on_client_drain(x->tunnel);
        return;
    }
    if (x->proxy)
        upstream_ops->on_client_drain(x);
}

void exchange_on_client_abort(struct exchange *x)
{
    /* The client side is gone: nothing more is sent; cleanups stop the upstream. */
    x->finished = true;
    if (!x->status)
        x->status = 499; /* logged only: the client closed before the response */
    account(x);
    exchange_free(x);
}

/* ---- response ----------------------------------------------------------- */

void exchange_send_head(struct exchange *x)
{
    if (!x->request_id.len)
        assign_request_id(x);
    run_response_filters(x);
    header_set(&x->resp_headers, SLICE_LIT("X-Request-Id"), x->request_id);
    if (x->status < 200 || x->status == 204 || x->status == 304 ||
        slice_eq(x->method, SLICE_LIT("HEAD")))
        x->resp_no_body = true;
    x->head_sent = true;
    x->client->ops->send_head(x);
}

void exchange_send_body(struct exchange *x, struct evbuffer *data)
{
    x->bytes_out += evbuffer_get_length(data);
    x->client->ops->send_body(x, data);
}

void exchange_end(struct exchange *x)
{
    x->finished = true;
    /*
     * Counted before the codec writes the end: a client that has seen its
     * whole response then finds it in /metrics and the access log, even if
     * this thread is preempted right after the write.
     */
    account(x);
    x->client->ops->send_end(x);
    exchange_free(x);
}

void exchange_abort(struct exchange *x)
{
    x->finished = true;
    x->client->ops->abort(x);
    account(x);
    exchange_free(x);
}

void exchange_reply(struct exchange *x)
{
    exchange_send_head(x);
    if (x->gw_body && evbuffer_get_length(x->gw_body) && !x->resp_no_body)
        exchange_send_body(x, x->gw_body);
    exchange_end(x);
}

void exchange_pause_request_body(struct exchange *x, bool pause)
{
    x->client->ops->pause_body(x, pause);
}

size_t exchange_pending(struct exchange *x)
{
    return x->client->ops->pending(x);
}

int exchange_splice_fd(struct exchange *x)
{
    return x->client->ops->splice_fd ? x->client->ops->splice_fd(x) : -1;
}

void exchange_body_spliced(struct exchange *x, uint64_t n)
{
    x->client->ops->body_spliced(x, n);
}
