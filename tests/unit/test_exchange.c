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

#include "harness.h"

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
    return config_from_file(
        dir, "{\"workers\": 1, \"listen\": [{\"address\": \"127.0.0.1:18999\"}],\n"
             " \"access_log\": {\"path\": \"off\"},\n"
             " \"routes\": [{\"name\": \"r\", \"match\": {\"prefix\": \"/r\"},\n"
             "              \"filters\": [{\"type\": \"headers\"}],\n"
             "              \"respond\": {\"status\": 200, \"body\": \"fine\"}}]}\n");
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

static struct exchange *request(struct worker *w, const char *target)
{
    return client_exchange(w, "GET", target);
}

int main(void)
{
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

    sent.trace_flow = true;
    struct worker *w = bare_worker_new();

    /* Global before route, response filters in reverse. */
    exchange_start(request(w, "/r"));
    is_str(trace, "A> B> C> <C <B <A head(200) body end ");

    /* A filter that responds stops the pipeline; only filters that ran see the response. */
    global[1].verdict = FILTER_RESPOND;
    global[1].respond_status = 403;
    exchange_start(request(w, "/r"));
    is_str(trace, "A> B> <B <A head(403) body end ");
    size_t len = evbuffer_get_length(sent.body);
    char *body = (char *)evbuffer_pullup(sent.body, -1);
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
    is_int(sent.status, 404);

    /* A target that normalises above the root is a 400 before routing. */
    exchange_start(request(w, "/../etc"));
    is_str(trace, "head(400) body end ");

    worker_join_free(w);
    evbuffer_free(sent.body);
    config_current_set(NULL);
    config_file_remove(dir);
    return test_done();
}
