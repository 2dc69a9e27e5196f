/*
 * The exchange's filter pipeline (ARCHITECTURE "Filters", STYLE rules 3-4):
 * global filters before the route's, response filters in reverse order and
 * only for filters whose request phase ran, FILTER_RESPOND skipping the
 * rest, FILTER_PAUSE resumed exactly once by exchange_resume(), and the
 * arena cleanup cancelling a paused operation when the client goes away.
 * The client side is a recording table of operations; the configuration is
 * loaded from a real file and its filter list replaced by test filters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "base/deadline.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "test.h"
#include "core/worker.h"

static char trace[1024];

static void note(const char *s)
{
    size_t n = strlen(trace);
    snprintf(trace + n, sizeof trace - n, "%s ", s);
}

/* ---- a recording client side -------------------------------------------- */

static struct evbuffer *sent_body;
static int sent_status;

static void c_head(struct exchange *x)
{
    char s[32];
    snprintf(s, sizeof s, "head(%d)", x->status);
    sent_status = x->status;
    note(s);
}
static void c_body(struct exchange *x, struct evbuffer *data)
{
    evbuffer_add_buffer(sent_body, data);
    note("body");
}
static void c_end(struct exchange *x)
{
    note("end");
}
static void c_pause(struct exchange *x, bool pause)
{
    note(pause ? "pause" : "resume");
}
static size_t c_pending(struct exchange *x)
{
    return 0;
}
static void c_abort(struct exchange *x)
{
    note("abort");
}

static const struct exchange_side_ops client_ops = {
    .send_head = c_head,
    .send_body = c_body,
    .send_end = c_end,
    .pause_body = c_pause,
    .pending = c_pending,
    .abort = c_abort,
};

/* ---- test filters: the instance is the filter's letter and behaviour ------- */

struct behaviour {
    const char *name;
    enum filter_verdict verdict;
    int respond_status;
};

struct state {
    int seen;
    struct exchange *x;
};

static struct exchange *paused_exchange;
static int cancelled;

static void on_cancel(void *arg)
{
    cancelled++;
}

static enum filter_verdict t_request(const void *instance, void *context, struct exchange *x,
                                     void *state)
{
    const struct behaviour *b = instance;
    struct state *st = state;
    char s[32];
    snprintf(s, sizeof s, "%s>", b->name);
    note(s);
    ok(st && st->seen == 0, "filter state is zeroed and private to the exchange");
    st->seen = 1;
    if (b->verdict == FILTER_RESPOND)
        exchange_respond_error(x, b->respond_status, NULL);
    if (b->verdict == FILTER_PAUSE) {
        paused_exchange = x;
        arena_cleanup_add(x->arena, on_cancel, NULL);
    }
    return b->verdict;
}

static void t_response(const void *instance, void *context, struct exchange *x, void *state)
{
    const struct behaviour *b = instance;
    struct state *st = state;
    char s[32];
    snprintf(s, sizeof s, "<%s", b->name);
    note(s);
    ok(st->seen == 1, "on_response gets the state on_request used");
}

static const struct filter_type test_type = {
    .name = "test",
    .state_size = sizeof(struct state),
    .on_request = t_request,
    .on_response = t_response,
};

/* ---- fixture ------------------------------------------------------------- */

static struct snapshot *load(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/sluice.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"workers\": 1, \"listen\": [{\"address\": \"127.0.0.1:18999\"}],\n"
          " \"access_log\": {\"path\": \"off\"},\n"
          " \"routes\": [{\"name\": \"r\", \"match\": {\"prefix\": \"/r\"},\n"
          "              \"filters\": [{\"type\": \"headers\"}],\n"
          "              \"respond\": {\"status\": 200, \"body\": \"fine\"}}]}\n",
          f);
    fclose(f);
    struct config_error err = {0};
    struct snapshot *s = config_load(path, &err);
    for (size_t i = 0; i < err.count; i++)
        printf("config: %s\n", err.messages[i]);
    config_error_clear(&err);
    return s;
}

/* Replaces a filter list (global or the route's) with test filters. */
static void set_filters(struct filter_instance **list, size_t *n, struct behaviour *b, size_t count)
{
    for (size_t i = 0; i < *n; i++)
        if ((*list)[i].type->destroy)
            (*list)[i].type->destroy((*list)[i].instance);
    free(*list);
    *list = calloc(count ? count : 1, sizeof **list);
    for (size_t i = 0; i < count; i++) {
        (*list)[i].type = &test_type;
        (*list)[i].instance = &b[i];
    }
    *n = count;
}

static struct exchange side_holder;
static struct exchange_side side = {&client_ops};

static struct exchange *request(struct worker *w, const char *target)
{
    trace[0] = '\0';
    sent_status = 0;
    evbuffer_drain(sent_body, evbuffer_get_length(sent_body));
    struct exchange *x = exchange_new(w, &side);
    x->method = SLICE_LIT("GET");
    x->target = slice_cstr(target);
    x->host = SLICE_LIT("example.test");
    snprintf(x->remote_addr, sizeof x->remote_addr, "127.0.0.1");
    x->req_body_done = true;
    return x;
}

int main(void)
{
    (void)side_holder;
    char dir[] = "/tmp/sluice-test-exchange-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    struct snapshot *s = load(dir);
    ok(s != NULL, "config loads");
    if (!s)
        return test_done();
    struct behaviour global[2] = {{"A", FILTER_CONTINUE, 0}, {"B", FILTER_CONTINUE, 0}};
    struct behaviour route[1] = {{"C", FILTER_CONTINUE, 0}};
    set_filters(&s->filters, &s->num_filters, global, 2);
    set_filters(&s->routes[0].filters, &s->routes[0].num_filters, route, 1);
    config_current_set(s);

    sent_body = evbuffer_new();
    struct worker *w = calloc(1, sizeof *w);
    w->base = event_base_new();
    w->deadlines = deadlines_new(w->base);
    w->notify_fd = -1;
    w->rng[0] = 1;
    w->rng[1] = 2;

    /* Global before route, response filters in reverse. */
    exchange_start(request(w, "/r"));
    is_str(trace, "A> B> C> <C <B <A head(200) body end ");

    /* A filter that responds stops the pipeline; only filters that ran see the response. */
    global[1].verdict = FILTER_RESPOND;
    global[1].respond_status = 403;
    exchange_start(request(w, "/r"));
    is_str(trace, "A> B> <B <A head(403) body end ");
    size_t len = evbuffer_get_length(sent_body);
    char *body = (char *)evbuffer_pullup(sent_body, -1);
    ok(len && strstr(body, "\"status\": 403, \"error\": \"forbidden\""), "SPEC 3.2 JSON body");
    ok(len && strstr(body, "\"request_id\": \""), "the JSON body carries the request id");

    /* Pause, then resume: the rest of the pipeline runs once. */
    global[1].verdict = FILTER_PAUSE;
    paused_exchange = NULL;
    cancelled = 0;
    exchange_start(request(w, "/r"));
    is_str(trace, "A> B> ");
    ok(paused_exchange != NULL, "the filter paused");
    exchange_resume(paused_exchange, FILTER_CONTINUE);
    is_str(trace, "A> B> C> <C <B <A head(200) body end ");
    is_int(cancelled, 1); /* the cleanup runs when the exchange is freed */

    /* Pause, then the client leaves: the cleanup cancels, nothing is sent. */
    cancelled = 0;
    paused_exchange = NULL;
    exchange_start(request(w, "/r"));
    exchange_on_client_abort(paused_exchange);
    is_str(trace, "A> B> ");
    is_int(cancelled, 1);

    /* Pause, then resume with a response. */
    exchange_start(request(w, "/r"));
    exchange_respond_error(paused_exchange, 429, "slow down");
    exchange_resume(paused_exchange, FILTER_RESPOND);
    is_str(trace, "A> B> <B <A head(429) body end ");

    /* No route: global filters run, then 404 JSON. */
    global[1].verdict = FILTER_CONTINUE;
    exchange_start(request(w, "/nowhere"));
    is_str(trace, "A> B> <B <A head(404) body end ");
    is_int(sent_status, 404);

    /* A target that normalises above the root is a 400 before routing. */
    exchange_start(request(w, "/../etc"));
    is_str(trace, "head(400) body end ");

    worker_join_free(w);
    evbuffer_free(sent_body);
    config_current_set(NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/sluice.json", dir);
    unlink(path);
    rmdir(dir);
    return test_done();
}
