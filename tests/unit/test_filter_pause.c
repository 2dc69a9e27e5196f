/*
 * The filter interface's pause contract, contexts and body hook (core/filter.h,
 * STYLE rule 4), run under ASan by scripts/test: a test-only filter pauses
 * and resumes synchronously (before on_request returns: the pipeline must
 * continue from the loop, not re-entrantly), asynchronously (from a loop
 * callback), never (the pause deadline answers 504), and while the client
 * disconnects (the arena cleanups cancel both the deadline and the filter's
 * operation). A body hook answers 413 before the upstream gets more body.
 * The client side is a recording table of operations; the configuration is
 * loaded from a real file and its filter lists replaced by the test filter.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "core/proxy.h"
#include "harness.h"

/* ---- the test filter ------------------------------------------------------ */

enum mode {
    MODE_CONTINUE,
    MODE_SYNC,      /* resumes before on_request returns */
    MODE_SYNC_403,  /* resumes with a response before on_request returns */
    MODE_ASYNC,     /* resumes from a zero-delay loop timer */
    MODE_NEVER,     /* pauses and never resumes */
    MODE_BODY_LIMIT /* continues; its body hook answers 413 past 10 bytes */
};

struct behaviour {
    enum mode mode;
};

/* Per-exchange state: the pending operation (a libevent timer). */
struct state {
    struct event *op;
    struct exchange *x;
};

static int contexts_made, contexts_freed, cancelled, resumed_async;
static void *context_seen;
static size_t body_seen;

static void *t_context_new(const void *instance, struct worker *w)
{
    contexts_made++;
    return &contexts_made; /* any non-NULL pointer the test can recognise */
}

static void t_context_free(const void *instance, void *context)
{
    ok(context == &contexts_made, "context_free gets what context_new made");
    contexts_freed++;
}

static void on_op_done(evutil_socket_t fd, short what, void *arg)
{
    struct state *st = arg;
    resumed_async++;
    event_free(st->op);
    st->op = NULL;
    exchange_resume(st->x, FILTER_CONTINUE);
}

/* The arena cleanup of STYLE rule 4: the exchange ended first, so cancel the operation. */
static void on_cancel(void *arg)
{
    struct state *st = arg;
    cancelled++;
    if (st->op) {
        event_free(st->op);
        st->op = NULL;
    }
}

static enum filter_verdict t_request(const void *instance, void *context, struct exchange *x,
                                     void *state)
{
    const struct behaviour *b = instance;
    struct state *st = state;
    context_seen = context;
    note("P>");
    switch (b->mode) {
    case MODE_CONTINUE:
    case MODE_BODY_LIMIT:
        return FILTER_CONTINUE;
    case MODE_SYNC:
        exchange_resume(x, FILTER_CONTINUE);
        note("returns");
        return FILTER_PAUSE;
    case MODE_SYNC_403:
        exchange_respond_error(x, 403, NULL);
        exchange_resume(x, FILTER_RESPOND);
        note("returns");
        return FILTER_PAUSE;
    case MODE_ASYNC: {
        st->x = x;
        st->op = evtimer_new(x->worker->base, on_op_done, st);
        struct timeval zero = {0, 0};
        evtimer_add(st->op, &zero);
        arena_cleanup_add(x->arena, on_cancel, st);
        return FILTER_PAUSE;
    }
    case MODE_NEVER:
        arena_cleanup_add(x->arena, on_cancel, st);
        return FILTER_PAUSE;
    }
    return FILTER_CONTINUE;
}

static void t_response(const void *instance, void *context, struct exchange *x, void *state)
{
    note("<P");
}

static enum filter_verdict t_body(const void *instance, void *context, struct exchange *x,
                                  void *state, size_t fresh)
{
    const struct behaviour *b = instance;
    char s[48];
    snprintf(s, sizeof s, "body(%zu%s)", fresh, x->req_body_done ? ",end" : "");
    note(s);
    body_seen = (size_t)exchange_body_seen(x);
    if (b->mode == MODE_BODY_LIMIT && exchange_body_seen(x) > 10) {
        exchange_respond_error(x, 413, NULL);
        return FILTER_RESPOND;
    }
    return FILTER_CONTINUE;
}

static const struct filter_type pause_type = {
    .name = "pause",
    .state_size = sizeof(struct state),
    .context_new = t_context_new,
    .context_free = t_context_free,
    .on_request = t_request,
    .on_request_body = t_body,
    .on_response = t_response,
};

/* ---- fixture ------------------------------------------------------------- */

static char dir[] = "/tmp/sluice-test-filter-pause-XXXXXX";

static struct snapshot *load(void)
{
    /* Port 9 (discard) on loopback: nothing listens, the connect fails later. */
    return config_from_file(
        dir, "{\"workers\": 1, \"listen\": [{\"address\": \"127.0.0.1:18998\"}],\n"
             " \"access_log\": {\"path\": \"off\"},\n"
             " \"upstreams\": {\"u\": {\"targets\": [\"127.0.0.1:9\"], \"retries\": 0}},\n"
             " \"routes\": [{\"name\": \"r\", \"match\": {\"prefix\": \"/r\"},\n"
             "              \"respond\": {\"status\": 200, \"body\": \"fine\"}},\n"
             "             {\"name\": \"up\", \"match\": {\"prefix\": \"/up\"}, \"upstream\": "
             "\"u\"}]}\n");
}

static struct behaviour behaviour;

static struct exchange *request(struct worker *w, const char *target)
{
    cancelled = 0;
    resumed_async = 0;
    context_seen = NULL;
    return client_exchange(w, "GET", target);
}

/* The exchange ended, by its end or an abort. */
static int done(void)
{
    return sent.ends + sent.aborts;
}

/* Turns the loop until the exchange is done or `ms` passed. */
static void run_loop(struct worker *w, int ms)
{
    for (int i = 0; i < ms && !done(); i++) {
        event_base_loop(w->base, EVLOOP_NONBLOCK);
        if (!done())
            usleep(1000);
    }
}

int main(void)
{
    proxy_register(); /* the exchange's upstream side, as main.c does */
    if (!mkdtemp(dir))
        return 1;
    struct snapshot *s = load();
    ok(s != NULL, "config loads");
    if (!s)
        return test_done();
    /* One pause filter, global: it runs for every route. */
    free(s->filters);
    s->filters = calloc(1, sizeof *s->filters);
    s->filters[0].type = &pause_type;
    s->filters[0].instance = &behaviour;
    s->num_filters = 1;
    s->routes[0].timeout_ms = 50; /* the pause deadline of route "r" */
    config_current_set(s);

    struct worker *w = bare_worker_new();

    /* No pause: the context built with the worker's view reaches the filter. */
    behaviour.mode = MODE_CONTINUE;
    exchange_start(request(w, "/r"));
    is_str(trace, "P> <P head(200) end ");
    is_int(contexts_made, 1);
    ok(context_seen == &contexts_made, "on_request gets the worker's context");

    /* Synchronous resume: nothing runs inside on_request, the loop continues. */
    behaviour.mode = MODE_SYNC;
    exchange_start(request(w, "/r"));
    is_str(trace, "P> returns ");
    run_loop(w, 1000);
    is_str(trace, "P> returns <P head(200) end ");

    behaviour.mode = MODE_SYNC_403;
    exchange_start(request(w, "/r"));
    is_str(trace, "P> returns ");
    run_loop(w, 1000);
    is_str(trace, "P> returns <P head(403) end ");

    /* Synchronous resume, then the client leaves before the loop turns. */
    behaviour.mode = MODE_SYNC;
    struct exchange *x = request(w, "/r");
    exchange_start(x);
    exchange_on_client_abort(x);
    run_loop(w, 100);
    is_str(trace, "P> returns ");
    is_int(done(), 0);

    /* Asynchronous resume from a loop callback. */
    behaviour.mode = MODE_ASYNC;
    exchange_start(request(w, "/r"));
    is_str(trace, "P> ");
    run_loop(w, 1000);
    is_int(resumed_async, 1);
    is_str(trace, "P> <P head(200) end ");
    is_int(cancelled, 1); /* the cleanup runs at free, with nothing left to cancel */

    /* Asynchronous, and the client leaves first: the operation is cancelled. */
    x = request(w, "/r");
    exchange_start(x);
    exchange_on_client_abort(x);
    is_int(cancelled, 1);
    run_loop(w, 100);
    is_int(resumed_async, 0);
    is_str(trace, "P> ");

    /* Never: the deadline (the route's timeout_ms) answers 504, the operation is cancelled. */
    behaviour.mode = MODE_NEVER;
    x = request(w, "/r");
    exchange_start(x);
    is_int(exchange_pause_timeout_ms(x), 50);
    run_loop(w, 5000);
    is_str(trace, "P> <P head(504) end ");
    is_int(cancelled, 1);
    ok(sent_body_has("\"error\": \"gateway_timeout\""),
       "the deadline's answer is a 504 JSON error");

    /* Never, and the client leaves: the deadline is cancelled with the arena. */
    x = request(w, "/r");
    exchange_start(x);
    exchange_on_client_abort(x);
    is_int(cancelled, 1);
    run_loop(w, 150);
    is_int(done(), 0);
    is_str(trace, "P> ");

    /* Body hook: the body that came while the filters ran is checked before proxying. */
    behaviour.mode = MODE_BODY_LIMIT;
    x = request(w, "/up");
    x->method = SLICE_LIT("POST");
    x->req_has_body = true;
    x->req_body_done = false;
    evbuffer_add(x->req_body, "0123456789abcdef", 16);
    exchange_start(x);
    is_str(trace, "P> body(16) <P head(413) end ");

    /* Body hook while the upstream connect is in flight: more body, then 413. */
    x = request(w, "/up");
    x->method = SLICE_LIT("POST");
    x->req_has_body = true;
    x->req_body_done = false;
    evbuffer_add(x->req_body, "01234", 5);
    exchange_start(x);
    is_str(trace, "P> body(5) ");
    is_int(done(), 0);
    evbuffer_add(x->req_body, "56789", 5);
    exchange_on_request_body(x);
    is_str(trace, "P> body(5) body(5) ");
    is_int(body_seen, 10);
    evbuffer_add(x->req_body, "X", 1);
    exchange_on_request_body(x);
    is_str(trace, "P> body(5) body(5) body(1) <P head(413) end ");
    run_loop(w, 100);

    /* Body hook: the end of the body is reported once, with no fresh bytes. */
    x = request(w, "/up");
    x->method = SLICE_LIT("POST");
    x->req_has_body = true;
    x->req_body_done = false;
    evbuffer_add(x->req_body, "01", 2);
    exchange_start(x);
    x->req_body_done = true;
    exchange_on_request_body(x);
    is_str(trace, "P> body(2) body(0,end) ");
    exchange_on_client_abort(x);
    run_loop(w, 100);

#ifndef NDEBUG
    /* Resuming an exchange that is not paused is caught by an assertion. */
    behaviour.mode = MODE_CONTINUE;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        x = request(w, "/r");
        exchange_resume(x, FILTER_CONTINUE);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "resume without pause asserts");
#endif

    worker_join_free(w);
    is_int(contexts_freed, contexts_made);
    evbuffer_free(sent.body);
    config_current_set(NULL);
    config_file_remove(dir);
    return test_done();
}
