#include "ops/admin.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "base/json_writer.h"
#include "conf/config.h"
#include "net/listener.h"
#include "base/log.h"
#include "ops/metrics.h"
#include "ops/status.h"

struct admin {
    struct evhttp *http;
    char *address;
};

static atomic_bool draining;

void admin_set_draining(bool on)
{
    atomic_store(&draining, on);
}

static void reply(struct evhttp_request *req, int code, const char *type, struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    const char *uri = evhttp_request_get_uri(req);
    struct evbuffer *body = evbuffer_new();
    size_t plen = strcspn(uri, "?");
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
        evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
        evbuffer_add_printf(body, "{\"status\": 405, \"error\": \"method_not_allowed\"}\n");
        reply(req, 405, "application/json", body);
    } else if (plen == 8 && strncmp(uri, "/healthz", 8) == 0) {
        evbuffer_add(body, "ok\n", 3);
        reply(req, 200, "text/plain", body);
    } else if (plen == 6 && strncmp(uri, "/ready", 6) == 0) {
        if (atomic_load(&draining)) {
            evbuffer_add(body, "draining\n", 9);
            reply(req, 503, "text/plain", body);
        } else {
            evbuffer_add(body, "ready\n", 6);
            reply(req, 200, "text/plain", body);
        }
    } else if (plen == 8 && strncmp(uri, "/metrics", 8) == 0) {
        metrics_render(body);
        reply(req, 200, "text/plain; version=0.0.4", body);
    } else if (plen == 1 && uri[0] == '/') {
        /* The status page: one self-contained file, fed by /status.json. */
        evbuffer_add_reference(body, status_html, status_html_len, NULL, NULL);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-cache");
        reply(req, 200, "text/html; charset=utf-8", body);
    } else if (plen == 12 && strncmp(uri, "/status.json", 12) == 0) {
        status_render(body, atomic_load(&draining));
        evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
        reply(req, 200, "application/json", body);
    } else if (plen == 7 && strncmp(uri, "/config", 7) == 0) {
        /* The one JSON writer: the same escaping as every other JSON the gateway emits. */
        struct snapshot *s = config_current_hold();
        if (s && s->redacted) {
            struct json_writer w;
            json_writer_init_evbuffer(&w, body);
            json_writer_value(&w, s->redacted, 2);
            json_writer_raw(&w, "\n", 1);
        }
        snapshot_release(s);
        reply(req, 200, "application/json", body);
    } else {
        evbuffer_add_printf(body, "{\"status\": 404, \"error\": \"not_found\"}\n");
        reply(req, 404, "application/json", body);
    }
    evbuffer_free(body);
}

static struct admin *bind_admin(struct event_base *base, const struct snapshot *s, char *why,
                                size_t whylen)
{
    int fd = listener_bind_single((const struct sockaddr *)&s->admin.addr, s->admin.addrlen, why,
                                  whylen);
    if (fd < 0)
        return NULL;
    struct admin *a = calloc(1, sizeof *a);
    a->http = evhttp_new(base);
    a->address = strdup(s->admin.address);
    if (!a->http || !a->address || !evhttp_accept_socket_with_handle(a->http, fd)) {
        snprintf(why, whylen, "cannot serve");
        close(fd);
        admin_free(a);
        return NULL;
    }
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_gencb(a->http, on_request, a);
    evhttp_set_timeout(a->http, 10);
    return a;
}

struct admin *admin_start(struct event_base *base, const struct snapshot *s, bool *failed)
{
    *failed = false;
    if (!s->admin.enabled)
        return NULL;
    char why[256];
    struct admin *a = bind_admin(base, s, why, sizeof why);
    if (!a) {
        fprintf(stderr,
                "%s: admin.address: cannot listen on %s: %s (choose a free port or stop the "
                "process using it)\n",
                s->file, s->admin.address, why);
        *failed = true;
    }
    return a;
}

struct admin *admin_reload(struct admin *a, struct event_base *base, const struct snapshot *s)
{
    if (a && s->admin.enabled && strcmp(a->address, s->admin.address) == 0)
        return a;
    admin_free(a);
    if (!s->admin.enabled)
        return NULL;
    char why[256];
    struct admin *n = bind_admin(base, s, why, sizeof why);
    if (!n)
        log_error("%s: admin.address: cannot listen on %s: %s", s->file, s->admin.address, why);
    return n;
}

void admin_free(struct admin *a)
{
    if (!a)
        return;
    if (a->http)
        evhttp_free(a->http);
    free(a->address);
    free(a);
}
