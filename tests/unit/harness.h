/*
 * harness.h: scaffolding shared by the unit tests that drive the exchange
 * or an upstream codec: a trace of what happened, a recording client side
 * (exchange_side_ops), a recording upstream owner (upstream_events), a
 * bare worker, and a configuration written into a temporary directory and
 * loaded as sluice loads it. Every test is one program (tests/CMakeLists.txt),
 * so the state here is per test; a test uses what it needs.
 */
#ifndef SLUICE_TEST_HARNESS_H
#define SLUICE_TEST_HARNESS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "base/arena.h"
#include "base/deadline.h"
#include "base/header.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "core/worker.h"
#include "test.h"
#include "upstream/codec.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"

/* Not every test uses every piece of the harness. */
#define HARNESS_UNUSED __attribute__((unused))

/* ---- the trace: events as space-terminated words -------------------------- */

static char trace[1024] HARNESS_UNUSED;

static inline void note(const char *s)
{
    size_t n = strlen(trace);
    snprintf(trace + n, sizeof trace - n, "%s ", s);
}

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Renders a field list as "Name: value|Name: value" for compact checks. */
static inline const char *render(const struct header_list *l)
{
    static char out[1024];
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < l->count; i++) {
        int w = snprintf(out + n, sizeof(out) - n, "%s%.*s: %.*s", i ? "|" : "",
                         (int)l->items[i].name.len, l->items[i].name.base,
                         (int)l->items[i].value.len, l->items[i].value.base);
        if (w < 0 || (size_t)w >= sizeof(out) - n)
            break;
        n += (size_t)w;
    }
    return out;
}

/* ---- a configuration file ------------------------------------------------- */

static inline struct snapshot *config_from_file(const char *dir, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Writes the configuration (a printf format) to DIR/sluice.json and loads
 * it, printing any errors; NULL when it does not load. The file stays until
 * config_file_remove().
 */
static inline struct snapshot *config_from_file(const char *dir, const char *fmt, ...)
{
    char path[512];
    snprintf(path, sizeof path, "%s/sluice.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
    struct config_error err = {0};
    struct snapshot *s = config_load(path, &err);
    for (size_t i = 0; i < err.count; i++)
        printf("config: %s\n", err.messages[i]);
    config_error_clear(&err);
    return s;
}

/* Removes DIR/sluice.json and DIR. */
static inline void config_file_remove(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/sluice.json", dir);
    unlink(path);
    rmdir(dir);
}

/* ---- a worker that is never started: the test turns its loop ---------------- */

static inline struct worker *bare_worker_new(void)
{
    struct worker *w = calloc(1, sizeof *w);
    w->base = event_base_new();
    w->deadlines = deadlines_new(w->base);
    w->notify_fd = -1;
    w->rng[0] = 1;
    w->rng[1] = 2;
    return w;
}

/* ---- a recording client side ------------------------------------------------ */

/* What the exchange sent to the client. */
struct client_record {
    struct evbuffer *body; /* the response body */
    int status;            /* of the head, 0 before it */
    int ends;              /* send_end calls */
    int aborts;            /* abort calls */
    bool trace_flow;       /* also notes "body" and "pause"/"resume" */
};

static struct client_record sent HARNESS_UNUSED;

static inline void client_on_head(struct exchange *x)
{
    char s[32];
    snprintf(s, sizeof s, "head(%d)", x->status);
    sent.status = x->status;
    note(s);
}
static inline void client_on_body(struct exchange *x, struct evbuffer *data)
{
    evbuffer_add_buffer(sent.body, data);
    if (sent.trace_flow)
        note("body");
}
static inline void client_on_end(struct exchange *x)
{
    note("end");
    sent.ends++;
}
static inline void client_on_pause(struct exchange *x, bool pause)
{
    if (sent.trace_flow)
        note(pause ? "pause" : "resume");
}
static inline size_t client_pending(struct exchange *x)
{
    return 0;
}
static inline void client_on_abort(struct exchange *x)
{
    note("abort");
    sent.aborts++;
}

static const struct exchange_side_ops client_ops = {
    .send_head = client_on_head,
    .send_body = client_on_body,
    .send_end = client_on_end,
    .pause_body = client_on_pause,
    .pending = client_pending,
    .abort = client_on_abort,
};
static struct exchange_side client_side HARNESS_UNUSED = {&client_ops};

/* Clears the trace and the record for the next exchange. */
static inline void client_reset(void)
{
    trace[0] = '\0';
    sent.status = 0;
    sent.ends = sent.aborts = 0;
    if (!sent.body)
        sent.body = evbuffer_new();
    evbuffer_drain(sent.body, evbuffer_get_length(sent.body));
}

/* A new exchange on the recording side: METHOD TARGET, whole (no body to come). */
static inline struct exchange *client_exchange(struct worker *w, const char *method,
                                               const char *target)
{
    client_reset();
    struct exchange *x = exchange_new(w, &client_side);
    x->method = slice_cstr(method);
    x->target = slice_cstr(target);
    x->host = SLICE_LIT("example.test");
    snprintf(x->remote_addr, sizeof x->remote_addr, "127.0.0.1");
    x->req_body_done = true;
    return x;
}

/* True when the body sent contains NEEDLE. */
static inline bool sent_body_has(const char *needle)
{
    size_t len = evbuffer_get_length(sent.body);
    if (!len)
        return false;
    evbuffer_add(sent.body, "", 1);
    return strstr((char *)evbuffer_pullup(sent.body, -1), needle) != NULL;
}

/* ---- a recording upstream owner --------------------------------------------- */

/* One request as its owner sees it. */
struct owner {
    struct arena *arena;
    struct upstream_request rq;
    struct upstream_response resp;
    struct header_list headers;
    struct upstream_stream *s;
    const char *body; /* given to send_body once the head may go, or no body */
    bool note_last;   /* body events note ",last" on the last one */
    bool check_taken; /* checks that send_body took all of the body */
    bool done;
};

static inline void owner_on_phase(void *arg, enum upstream_phase phase)
{
    struct owner *o = arg;
    note(phase == UPSTREAM_SENT ? "sent" : phase == UPSTREAM_CONNECTING ? "connecting" : "queued");
    if (phase == UPSTREAM_SENT) {
        struct evbuffer *b = evbuffer_new();
        if (o->body)
            evbuffer_add(b, o->body, strlen(o->body));
        o->s->ops->send_body(o->s, b, true); /* no body: the head goes out */
        if (o->check_taken)
            ok(evbuffer_get_length(b) == 0, "send_body takes the bytes");
        evbuffer_free(b);
    }
}
static inline void owner_on_head(void *arg)
{
    struct owner *o = arg;
    char s[32];
    snprintf(s, sizeof s, "head(%d)", o->resp.status);
    note(s);
}
static inline void owner_on_body(void *arg, struct evbuffer *data, bool last)
{
    struct owner *o = arg;
    char s[64];
    size_t n = evbuffer_get_length(data);
    snprintf(s, sizeof s, "body(%.*s%s)", (int)(n < 20 ? n : 20),
             n ? (char *)evbuffer_pullup(data, -1) : "", last && o->note_last ? ",last" : "");
    evbuffer_drain(data, n);
    note(s);
}
static inline void owner_on_end(void *arg)
{
    struct owner *o = arg;
    note("end");
    o->done = true;
}
static inline void owner_on_fail(void *arg, enum upstream_failure why, int status,
                                 const char *message)
{
    struct owner *o = arg;
    static const char *const kinds[] = {"connect", "stale", "after_send", "gone", "timeout"};
    char s[64];
    snprintf(s, sizeof s, "fail(%s,%d)", kinds[why], status);
    note(s);
    o->done = true;
}
static inline void owner_on_body_drained(void *arg)
{
}

static const struct upstream_events owner_events = {
    .on_phase = owner_on_phase,
    .on_head = owner_on_head,
    .on_body = owner_on_body,
    .on_end = owner_on_end,
    .on_fail = owner_on_fail,
    .on_body_drained = owner_on_body_drained,
};

/* A loopback target of RT on PORT with an empty pool. */
static inline void target_loopback(struct target *t, struct upstream_rt *rt, unsigned short port)
{
    memset(t, 0, sizeof *t);
    struct sockaddr_in *a = (struct sockaddr_in *)&t->addr;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t->addrlen = sizeof *a;
    t->upstream = rt;
    snprintf(t->name, sizeof t->name, "127.0.0.1:%u", port);
    pool_init(&t->pool, "test", t->name);
}

/* Opens the owner's request on T through CODEC and notes the first phase. */
static inline bool owner_open(struct owner *o, const struct upstream_codec_ops *codec,
                              struct target *t, const struct upstream_config *cfg)
{
    enum upstream_phase phase;
    o->s = codec->open(t, cfg, &o->rq, &o->resp, &owner_events, o, &phase);
    if (o->s)
        owner_on_phase(o, phase);
    return o->s != NULL;
}

/* Opens the request, then runs T's loop until it ends or 5 s passed. */
static inline void owner_run(struct owner *o, const struct upstream_codec_ops *codec,
                             struct target *t, const struct upstream_config *cfg)
{
    ok(owner_open(o, codec, t, cfg), "open");
    if (!o->s)
        return;
    double deadline = now_s() + 5;
    while (!o->done && now_s() < deadline)
        event_base_loop(t->upstream->base, EVLOOP_ONCE);
}

#endif
