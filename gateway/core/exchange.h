/*
 * exchange: one request and its response, from the parsed head to the last
 * byte (ARCHITECTURE "The exchange").
 *
 * Owns: the per-request arena (everything below lives in it), the snapshot
 * reference taken when the request started, the route match, per-filter
 * state, and the access-log record. The exchange does not know which codec
 * brought the request or which one talks to the upstream: the client side is
 * a table of operations (struct exchange_side_ops) that the downstream codec
 * implements, and the upstream side is a table too (struct
 * exchange_upstream_ops), which core/proxy registers at start-up: the
 * exchange never names the proxy, so the two do not include each other.
 *
 * Flow: a codec fills the request fields and calls exchange_start(); the
 * exchange normalises, routes, runs the request filters (global then the
 * route's), then either answers itself (respond/redirect route, a filter's
 * response, an error) or hands over to the proxy. The response head passes
 * through the response filters (reverse order) before the codec sends it.
 *
 * Filters (core/filter.h, docs/internals/filters.md): request filters run
 * in order; one may pause, and exchange_resume() continues the pipeline (from
 * the loop when called before on_request returned). A pause has a deadline
 * (exchange_pause_timeout_ms): when it passes the exchange answers 504
 * gateway_timeout. Body hooks see the decoded request body before the
 * upstream gets it.
 *
 * Thread: the worker's thread. Filters may call exchange_respond_*() from
 * on_request, and exchange_resume() once after FILTER_PAUSE.
 */
#ifndef SLUICE_EXCHANGE_H
#define SLUICE_EXCHANGE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/filter.h"
#include "base/arena.h"
#include "base/header.h"
#include "core/router.h"
#include "base/slice.h"

struct evbuffer;
struct exchange_hold;
struct exchange;
struct proxy;
struct snapshot;
struct tunnel;
struct worker;
struct worker_snapshot;

/*
 * What the exchange asks of the client-side codec. Every operation is
 * called on the worker's thread and must not call back into the exchange
 * synchronously except through the documented exchange_on_* entry points.
 */
struct exchange_side_ops {
    /* Sends the response head from x->status and x->resp_headers. */
    void (*send_head)(struct exchange *x);
    /* Sends and empties `data` (moved, not copied). */
    void (*send_body)(struct exchange *x, struct evbuffer *data);
    /* The response is complete (no more body). */
    void (*send_end)(struct exchange *x);
    /* Stops or resumes reading the request body (backpressure). */
    void (*pause_body)(struct exchange *x, bool pause);
    /* Bytes of response accepted but not yet written to the client. */
    size_t (*pending)(struct exchange *x);
    /* Something went wrong after the head was sent: reset or close. */
    void (*abort)(struct exchange *x);
    /* Tells the client to send its body (HTTP/1.1 "100 Continue"). */
    void (*send_continue)(struct exchange *x);
    /*
     * The client socket, when the response body may be written to it
     * directly (splice): a plain connection, the head already written, no
     * transfer coding to apply. -1 otherwise. NULL: never.
     */
    int (*splice_fd)(struct exchange *x);
    /*
     * The client socket, when the rest of the request body (*left bytes,
     * Content-Length framing, nothing buffered) may be read from it
     * directly (splice). The codec then stops reading the socket and its
     * body timeout until body_spliced() reports the last byte. -1 otherwise.
     */
    int (*body_splice_fd)(struct exchange *x, uint64_t *left);
    /* `n` more body bytes were taken from the socket (see body_splice_fd). */
    void (*body_spliced)(struct exchange *x, uint64_t n);
    /*
     * WebSocket (core/tunnel): the 101 head went out. `x` is the tunnel's
     * shell exchange, which replaces the request's exchange for the codec
     * from this call on (the request's is freed right after, and its arena
     * cleanups run: a codec unhooks from it here). The shell's arena may be
     * NULL: a codec that registers a cleanup makes it (arena_new(0)), and it
     * is freed with the shell. From now on the request
     * body is every byte the client sends (x->req_body_done at its FIN),
     * send_body writes bytes unframed, tunnel_shutdown passes a FIN on once
     * the output is flushed, send_end closes the connection after flushing,
     * and the codec arms no timer of its own (the tunnel's idle timeout
     * rules). NULL: the codec cannot tunnel (the upgrade fields are then
     * not forwarded).
     */
    void (*tunnel)(struct exchange *x);
    void (*tunnel_shutdown)(struct exchange *x);
    /*
     * After tunnel(): the client socket, when the tunnel may write to it
     * directly (net/splice): a plain connection with nothing waiting in its
     * output. -1 otherwise; NULL: never (then tunnel_reads is NULL too).
     */
    int (*tunnel_fd)(struct exchange *x);
    /*
     * codec_reads false: the codec stops reading the client socket and
     * leaves reads to the tunnel (net/splice); returns false, changing
     * nothing, when it holds unread input or saw the FIN. true: the codec
     * reads the socket again (returns true).
     */
    bool (*tunnel_reads)(struct exchange *x, bool codec_reads);
};

struct exchange_side {
    const struct exchange_side_ops *ops;
};

/*
 * What the exchange asks of its upstream side (core/proxy), registered once
 * with exchange_set_upstream() before requests are served. Called on the
 * worker's thread; each may end the exchange.
 */
struct exchange_upstream_ops {
    /* Takes over an exchange routed to an upstream: ends it with exchange_end/abort/reply. */
    void (*start)(struct exchange *x);
    /* More request body arrived in x->req_body (or its end, x->req_body_done). */
    void (*on_request_body)(struct exchange *x);
    /* The client's output drained: the upstream may be read again. */
    void (*on_client_drain)(struct exchange *x);
};

/* Registers the upstream side (process-wide; `ops` must stay valid). */
void exchange_set_upstream(const struct exchange_upstream_ops *ops);

/*
 * A WebSocket tunnel's shell exchange (core/tunnel) forwards the codec's
 * entry points to its tunnel through these, so that the exchange does not
 * name the tunnel (which uses the exchange): exchange_on_request_body,
 * exchange_on_client_drain, and exchange_free, which frees the tunnel and
 * the shell with it.
 */
struct exchange_tunnel_ops {
    void (*on_client_data)(struct tunnel *t);
    void (*on_client_drain)(struct tunnel *t);
    void (*free)(struct tunnel *t);
};

/* Variables usable in filter option strings (SPEC 4 `headers`). */
enum exchange_var {
    XVAR_REMOTE_ADDR = 0,
    XVAR_REQUEST_ID,
    XVAR_CONSUMER,
    XVAR_HOST,
    XVAR_ROUTE,
    XVAR_CLIENT_SUBJECT,
    XVAR_COUNT
};

enum exchange_protocol {
    XPROTO_HTTP10 = 0,
    XPROTO_HTTP11,
    XPROTO_HTTP2,
};

struct exchange {
    struct arena *arena;
    struct worker *worker;
    struct worker_snapshot *view; /* the worker's view of the snapshot, held for the whole life */
    struct snapshot *snapshot;    /* view->snapshot */
    struct exchange_side *client;
    struct proxy *proxy; /* NULL until the exchange goes upstream */

    /* The request as received. Codecs fill these before exchange_start(). */
    enum exchange_protocol protocol;
    bool tls;
    struct slice method;
    struct slice target; /* the raw request-target */
    struct slice path;   /* normalised; filters may change what the upstream sees */
    struct slice query;  /* without '?' */
    bool has_query;      /* a '?' was present (possibly empty query) */
    struct slice host;   /* authority the client addressed (Host or absolute-form), port kept */
    struct header_list req_headers;
    bool req_has_body;  /* a body follows the head (length > 0 or chunked) */
    int64_t req_length; /* Content-Length, or -1 when chunked/unknown */
    struct sockaddr_storage peer;
    char remote_addr[INET6_ADDRSTRLEN]; /* the peer IP, no port */
    bool expect_continue;               /* Expect: 100-continue was sent */
    bool upgrade;                       /* a WebSocket upgrade was asked for (SPEC 3.4) */
    struct slice ws_accept; /* RFC 8441 bridge: the Sec-WebSocket-Accept the upstream owes */

    /* Routing and identity. */
    struct route_match match;
    const struct route_config *route; /* NULL when none matched */
    struct slice request_id;
    struct slice consumer;       /* set by auth filters */
    struct slice client_subject; /* mTLS: the verified client certificate's subject (RFC 2253) */

    /* The response. Response filters may edit resp_headers. */
    int status;
    struct header_list resp_headers;
    int64_t resp_length;              /* Content-Length of the response body, -1 unknown */
    struct header_list resp_trailers; /* trailer fields (HTTP/2, gRPC); count 0 when none */
    bool resp_no_body;                /* HEAD, 1xx, 204, 304: no body whatever the headers say */
    bool gateway_response;            /* made by the gateway (SPEC 3.2 JSON or respond/redirect) */
    const char *error;                /* the SPEC 7 error code when the gateway made an error */
    const char *close_reason;         /* a tunnel's: "client", "upstream", "idle", "drain" */
    /* A tunnel's shell exchange only (core/tunnel): what the entry points forward to. */
    struct tunnel *tunnel;
    const struct exchange_tunnel_ops *tunnel_ops;

    /* Request body as decoded by the codec, waiting to go upstream. */
    struct evbuffer *req_body;
    bool req_body_done;
    bool body_held; /* the client's body is paused until the proxy takes it */
    uint64_t bytes_in;
    uint64_t bytes_out;

    /* Timings (monotonic microseconds). */
    int64_t start_us;
    int64_t upstream_start_us;
    int64_t upstream_head_us;
    const char *upstream_name;
    const char *upstream_target;

    /* Pipeline state, private to exchange.c. */
    void **filter_state;
    size_t filter_next;         /* next request filter to run (global then route's) */
    struct exchange_hold *hold; /* pause deadline and body-hook counts; NULL until needed */
    uint8_t pause;              /* enum pause_state of exchange.c */
    bool body_watched;          /* some filter of the pipeline has a body hook */
    bool head_sent;
    bool finished;
    bool response_ready; /* x->status/resp_headers set by the gateway, body in gw_body */
    struct evbuffer *gw_body;
};

/*
 * Creates an exchange for a new request on `worker`, with its own arena and
 * a reference to the configuration in force. The codec then fills the
 * request fields.
 */
struct exchange *exchange_new(struct worker *worker, struct exchange_side *client);

/*
 * Starts the request: validates and normalises the target, assigns the
 * request id, routes, runs the request filters, then responds or proxies.
 * Called once the head is complete; the body may still be arriving.
 */
void exchange_start(struct exchange *x);

/* The codec received more request body into x->req_body (or the end, with x->req_body_done). */
void exchange_on_request_body(struct exchange *x);

/* The codec wrote out response bytes: the client-side buffer drained below its low mark. */
void exchange_on_client_drain(struct exchange *x);

/* The client went away or the codec failed: stop everything, free once safe. */
void exchange_on_client_abort(struct exchange *x);

/*
 * Response path, used by the proxy (and internally for gateway responses).
 * exchange_send_head runs the response filters (reverse order), adds
 * X-Request-Id, and has the codec send the head; exchange_send_body moves
 * `data` to the client; exchange_end completes the response, writes the
 * access log line and frees the exchange: the caller must not touch `x`
 * afterwards. exchange_abort cuts the client off (a failure after the head
 * was sent) and frees the exchange likewise.
 */
void exchange_send_head(struct exchange *x);
void exchange_send_body(struct exchange *x, struct evbuffer *data);
void exchange_end(struct exchange *x);
void exchange_abort(struct exchange *x);

/*
 * Sends the response the gateway prepared with exchange_respond*() (head,
 * body, end) and frees the exchange.
 */
void exchange_reply(struct exchange *x);

/* Frees the arena (running its cleanups) and releases the snapshot. */
void exchange_free(struct exchange *x);

/*
 * Responds with SPEC 3.2's JSON error body: {"status", "error", "message",
 * "request_id"}, content-type application/json. `message` may be NULL (a
 * default sentence for the status is used). Used by filters (then return
 * FILTER_RESPOND), by the router (404) and by the proxy (502/503/504).
 */
void exchange_respond_error(struct exchange *x, int status, const char *message);

/*
 * Responds with `status`, the given body and content type (copied into the
 * arena or referenced when it lives in the snapshot). Extra headers may be
 * added to x->resp_headers before or after this call, until the head is sent.
 */
void exchange_respond(struct exchange *x, int status, struct slice content_type, struct slice body);

/*
 * Continues a paused pipeline (a filter returned FILTER_PAUSE). `verdict` is
 * what the filter's on_request would have returned (CONTINUE or RESPOND).
 * Call exactly once per pause. When called from a loop callback, the
 * pipeline continues at once and may finish and free `x` before this
 * returns. When called before the filter's on_request has returned (the
 * operation completed synchronously), nothing runs now: the pipeline
 * continues from the loop's next turn, after on_request returned
 * FILTER_PAUSE. Resuming an exchange that is not paused (twice, after a
 * CONTINUE, after the deadline) is a bug: an assertion in debug builds,
 * ignored otherwise. The caller must not touch `x` afterwards.
 */
void exchange_resume(struct exchange *x, enum filter_verdict verdict);

/*
 * How long a filter may keep the exchange paused before the gateway answers
 * 504 gateway_timeout ("a filter did not answer in time"): the route's
 * timeout_ms, else the timeout_ms of its upstream (how long the client is
 * already prepared to wait for an answer), else limits.body_timeout_ms (no
 * route, or a respond/redirect route). Always > 0.
 */
int exchange_pause_timeout_ms(const struct exchange *x);

/*
 * Decoded request body bytes shown to the body hooks so far (the `fresh`
 * bytes of the current call included); 0 when no filter has a body hook.
 */
uint64_t exchange_body_seen(const struct exchange *x);

/*
 * Shows the request body bytes that arrived since the last look to the
 * filters' body hooks. The upstream side calls it before it takes bytes out
 * of x->req_body, so no byte leaves before every hook has seen it (a codec
 * may append body while the upstream side has it paused, e.g. HTTP/2 DATA
 * within the stream window). Returns true to go on; false when a hook
 * answered: the exchange has replied or aborted and may be freed, so the
 * caller must return at once without touching it.
 */
bool exchange_body_check(struct exchange *x);

/*
 * The client socket from which the proxy may splice the rest of the request
 * body (the codec's body_splice_fd), or -1: the codec cannot, or a filter's
 * body hook must see every byte. The proxy calls this, not the codec's op.
 */
int exchange_body_splice_fd(struct exchange *x, uint64_t *left);

/* The state of the filter at position `i` of the running pipeline (tests). */
void *exchange_filter_state(struct exchange *x, size_t i);

/*
 * The client side, for the upstream side (which reaches the client only
 * through these): stop or resume reading the request body (backpressure);
 * response bytes accepted but not yet written to the client; the client
 * socket for splicing the response body, or -1 (see exchange_side_ops
 * splice_fd); the client socket for splicing the rest of the request body
 * with *left bytes, or -1 (body_splice_fd); `n` more request body bytes
 * were taken from that socket (body_spliced).
 */
void exchange_pause_request_body(struct exchange *x, bool pause);
size_t exchange_pending(struct exchange *x);
int exchange_splice_fd(struct exchange *x);
void exchange_body_spliced(struct exchange *x, uint64_t n);

/* Maps a ${name} variable to its id at load time; -1 if unknown. */
int exchange_var_lookup(struct slice name);

/* The current value of a variable; the empty slice when unset (e.g. no consumer). */
struct slice exchange_var(const struct exchange *x, enum exchange_var v);

#endif
