#include "proto/status.h"

#include <stddef.h>

struct status_text {
    const char *reason;  /* RFC 9110 reason phrase */
    const char *code;    /* SPEC 7 error code, NULL when the gateway never answers it as an error */
    const char *message; /* default message of the JSON error body */
};

#define STATUS_MIN 100
#define STATUS_MAX 599

/* Indexed by status - STATUS_MIN; zero entries are unknown statuses. */
static const struct status_text status_texts[STATUS_MAX - STATUS_MIN + 1] = {
#define S(n) [(n)-STATUS_MIN]
    S(100) = {"Continue", NULL, NULL},
    S(101) = {"Switching Protocols", NULL, NULL},
    S(200) = {"OK", NULL, "OK"},
    S(201) = {"Created", NULL, NULL},
    S(202) = {"Accepted", NULL, NULL},
    S(204) = {"No Content", NULL, NULL},
    S(206) = {"Partial Content", NULL, NULL},
    S(301) = {"Moved Permanently", NULL, NULL},
    S(302) = {"Found", NULL, NULL},
    S(303) = {"See Other", NULL, NULL},
    S(304) = {"Not Modified", NULL, NULL},
    S(307) = {"Temporary Redirect", NULL, NULL},
    S(308) = {"Permanent Redirect", NULL, NULL},
    S(400) = {"Bad Request", "bad_request", "the request is malformed"},
    S(401) = {"Unauthorized", "unauthorized", "authentication is required"},
    S(403) = {"Forbidden", "forbidden", "access to this resource is forbidden"},
    S(404) = {"Not Found", "not_found", "no route matches this request"},
    S(405) = {"Method Not Allowed", NULL, NULL},
    S(408) = {"Request Timeout", "request_timeout", "the request was not received in time"},
    S(413) = {"Content Too Large", "payload_too_large", "the request body is too large"},
    S(417) = {"Expectation Failed", "expectation_failed", "the expectation cannot be met"},
    S(429) = {"Too Many Requests", "too_many_requests", "too many requests"},
    S(431) = {"Request Header Fields Too Large", "request_header_fields_too_large",
              "the request head is too large"},
    S(500) = {"Internal Server Error", "internal_error", "internal error"},
    S(501) = {"Not Implemented", "not_implemented", "this transfer coding is not implemented"},
    S(502) = {"Bad Gateway", "bad_gateway", "the upstream failed"},
    S(503) = {"Service Unavailable", "service_unavailable", "no healthy upstream target"},
    S(504) = {"Gateway Timeout", "gateway_timeout", "the upstream did not answer in time"},
#undef S
};

static const struct status_text *lookup(int status)
{
    if (status < STATUS_MIN || status > STATUS_MAX)
        return NULL;
    const struct status_text *t = &status_texts[status - STATUS_MIN];
    return t->reason ? t : NULL;
}

const char *status_reason(int status)
{
    const struct status_text *t = lookup(status);
    return t ? t->reason : "Status";
}

const char *status_error_code(int status)
{
    const struct status_text *t = lookup(status);
    return t && t->code ? t->code : "error";
}

const char *status_message(int status)
{
    const struct status_text *t = lookup(status);
    return t && t->message ? t->message : "error";
}
