/*
 * body_limit: the `body_limit` filter (SPEC 4): a request body larger than
 * `max_bytes` gets 413 payload_too_large, and the upstream never receives
 * more than `max_bytes` of it.
 *
 * Two checks. When Content-Length announces a larger body, the request
 * phase answers at once: nothing is read or forwarded, and a client that
 * sent `Expect: 100-continue` gets the 413 instead of the 100 (the exchange
 * sends the 100 only once the request filters passed). Otherwise (chunked
 * HTTP/1.1, HTTP/2 DATA without content-length, or a Content-Length that
 * lies) the body hook counts the decoded bytes as they arrive, before the
 * upstream gets them, and answers 413 as soon as the count passes the limit:
 * the bytes that crossed it are never forwarded.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "conf/config_error.h"
#include "core/exchange.h"
#include "core/filter.h"

struct body_limit_filter {
    uint64_t max_bytes;
    char message[64]; /* the 413's message, preformatted */
};

static void body_limit_destroy(const void *instance)
{
    free((void *)instance);
}

static const void *body_limit_create(const json_t *options, struct config_error *err)
{
    static const char *const keys[] = {"max_bytes", NULL};
    struct body_limit_filter *f = calloc(1, sizeof(*f));
    if (!f) {
        config_error_add(err, "", "out of memory");
        return NULL;
    }
    int rc = config_check_keys(err, options, keys) ? -1 : 0;
    long long max = -1;
    if (!json_object_get(options, "max_bytes")) {
        config_error_add(err, ".max_bytes",
                         "is required: the largest request body in bytes, "
                         "e.g. 1048576");
        rc = -1;
    } else if (!config_get_llong(err, options, "max_bytes", 0, INT64_MAX, &max)) {
        rc = -1;
    }
    if (rc < 0) {
        free(f);
        return NULL;
    }
    f->max_bytes = (uint64_t)max;
    snprintf(f->message, sizeof(f->message), "the request body exceeds %" PRIu64 " bytes",
             f->max_bytes);
    return f;
}

static enum filter_verdict body_limit_on_request(const void *instance, void *context,
                                                 struct exchange *x, void *state)
{
    const struct body_limit_filter *f = instance;
    (void)context;
    (void)state;
    if (x->req_length < 0 || (uint64_t)x->req_length <= f->max_bytes)
        return FILTER_CONTINUE;
    exchange_respond_error(x, 413, f->message);
    return FILTER_RESPOND;
}

static enum filter_verdict body_limit_on_body(const void *instance, void *context,
                                              struct exchange *x, void *state, size_t fresh)
{
    const struct body_limit_filter *f = instance;
    (void)context;
    (void)state;
    (void)fresh;
    if (exchange_body_seen(x) <= f->max_bytes)
        return FILTER_CONTINUE;
    exchange_respond_error(x, 413, f->message);
    return FILTER_RESPOND;
}

const struct filter_type filter_body_limit = {
    .name = "body_limit",
    .state_size = 0,
    .create = body_limit_create,
    .destroy = body_limit_destroy,
    .on_request = body_limit_on_request,
    .on_request_body = body_limit_on_body,
};
