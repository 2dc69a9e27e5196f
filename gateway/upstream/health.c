/*
 * health: active checks over struct conn (conn.c), so a probe speaks TLS to
 * an upstream with "tls" exactly as the proxy does: a probe sends one small
 * request and reads one status line. See health.h for the contract.
 */
#include "upstream/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/config.h"
#include "net/conn.h"
#include "net/tls.h"
#include "upstream/target.h"
#include "base/clock.h"
#include "base/log.h"

/* Enough for "HTTP/1.1 200 " and a reason phrase; longer lines are judged on this prefix. */
#define STATUS_LINE_MAX 256

struct probe {
    struct probe *prev, *next;
    struct health_checker *checker;
    struct target *target;
    struct conn conn;
    struct event *timer;
    char *request;
    size_t request_len;
    bool sent;
    int64_t started_us; /* for the status page's check time */
};

struct health_checker {
    struct upstream_rt *upstream;
    struct event *tick;
    struct probe *probes; /* in flight */
};

static void record(struct health_checker *hc, struct target *t, bool success)
{
    const struct health_config *h = &hc->upstream->cfg->health;
    struct target_health *th = t->health;
    if (success) {
        atomic_store(&th->failures, 0);
        int n = atomic_fetch_add(&th->successes, 1) + 1;
        if (n >= (h->healthy_after > 0 ? h->healthy_after : 1) &&
            atomic_exchange(&th->active_down, false))
            log_info("upstream %s: target %s is up (health check)", hc->upstream->cfg->name,
                     t->name);
    } else {
        atomic_store(&th->successes, 0);
        int n = atomic_fetch_add(&th->failures, 1) + 1;
        if (n >= (h->unhealthy_after > 0 ? h->unhealthy_after : 1) &&
            !atomic_exchange(&th->active_down, true))
            log_warn("upstream %s: target %s is down (health check)", hc->upstream->cfg->name,
                     t->name);
    }
}

static void probe_free(struct probe *p)
{
    struct health_checker *hc = p->checker;
    if (p->prev)
        p->prev->next = p->next;
    else
        hc->probes = p->next;
    if (p->next)
        p->next->prev = p->prev;
    conn_close(&p->conn);
    if (p->timer)
        event_free(p->timer);
    free(p->request);
    free(p);
}

static void finish(struct probe *p, bool success)
{
    struct target_health *th = p->target->health;
    int64_t now_us = clock_mono_us();
    atomic_store(&th->check_us, now_us - p->started_us);
    atomic_store(&th->check_ok, success);
    atomic_store(&th->check_done_ms, now_us / 1000);
    record(p->checker, p->target, success);
    probe_free(p);
}

/*
 * Judges a status line prefix (RFC 9112 4: HTTP-version SP 3DIGIT).
 * Returns 1 for 2xx/3xx, 0 for anything else.
 */
static int status_ok(const char *line, size_t len)
{
    if (len < 12 || memcmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ')
        return 0;
    for (int i = 9; i < 12; i++) {
        if (line[i] < '0' || line[i] > '9')
            return 0;
    }
    return line[9] == '2' || line[9] == '3';
}

static void on_probe_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    finish(arg, false);
}

/* Connected (and through TLS): send the request once. */
static void on_probe_writable(struct conn *c)
{
    struct probe *p = c->owner;
    if (p->sent)
        return;
    p->sent = true;
    evbuffer_add(c->out, p->request, p->request_len);
    if (conn_flush(c) < 0)
        finish(p, false);
}

static void on_probe_read(struct conn *c)
{
    struct probe *p = c->owner;
    size_t have = evbuffer_get_length(c->in);
    size_t look = have < STATUS_LINE_MAX ? have : STATUS_LINE_MAX;
    const char *line = (const char *)evbuffer_pullup(c->in, (ssize_t)look);
    if (line && (memchr(line, '\n', look) || look == STATUS_LINE_MAX)) {
        finish(p, status_ok(line, look));
        return;
    }
    if (c->eof)
        finish(p, false); /* closed before the status line was complete */
}

static void on_probe_error(struct conn *c, int err)
{
    (void)err;
    finish(c->owner, false);
}

static const struct conn_events probe_events = {
    .on_read = on_probe_read,
    .on_writable = on_probe_writable,
    .on_error = on_probe_error,
};

/* "GET <path> HTTP/1.1" with Host: the configured host, bracketed when IPv6, with its port. */
static char *build_request(const struct health_config *h, const struct target *t, size_t *len)
{
    const char *path = h->path && h->path[0] ? h->path : "/";
    const char *host = t->config ? t->config->host : "localhost";
    bool v6 = strchr(host, ':') != NULL;
    char port[8] = "";
    if (t->config && t->config->port != 80)
        snprintf(port, sizeof(port), ":%u", t->config->port);
#define HEALTH_REQUEST                                                                             \
    "GET %s HTTP/1.1\r\nHost: %s%s%s%s\r\nConnection: close\r\nUser-Agent: sluice-health\r\n\r\n"
    int n = snprintf(NULL, 0, HEALTH_REQUEST, path, v6 ? "[" : "", host, v6 ? "]" : "", port);
    if (n < 0)
        return NULL;
    char *req = malloc((size_t)n + 1);
    if (!req)
        return NULL;
    snprintf(req, (size_t)n + 1, HEALTH_REQUEST, path, v6 ? "[" : "", host, v6 ? "]" : "", port);
    *len = (size_t)n;
    return req;
}

static void start_probe(struct health_checker *hc, struct target *t)
{
    const struct health_config *h = &hc->upstream->cfg->health;
    struct event_base *base = hc->upstream->base;
    struct probe *p = calloc(1, sizeof(*p));
    if (!p)
        return;
    p->conn.fd = -1;
    p->checker = hc;
    p->target = t;
    p->started_us = clock_mono_us();
    p->next = hc->probes;
    if (hc->probes)
        hc->probes->prev = p;
    hc->probes = p;

    p->request = build_request(h, t, &p->request_len);
    if (!p->request)
        goto fail;
    if (conn_connect(&p->conn, base, (const struct sockaddr *)&t->addr, t->addrlen, &probe_events,
                     p) < 0)
        goto fail;
    const struct tls_client *tls = hc->upstream->cfg->tls;
    if (tls && target_tls_start(&p->conn, tls, t) < 0)
        goto fail;
    int timeout_ms = h->timeout_ms > 0 ? h->timeout_ms : 1000;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    p->timer = evtimer_new(base, on_probe_timeout, p);
    if (!p->timer || event_add(p->timer, &tv) < 0)
        goto fail;
    return;
fail:
    finish(p, false);
}

static bool probing(const struct health_checker *hc, const struct target *t)
{
    for (const struct probe *p = hc->probes; p; p = p->next) {
        if (p->target == t)
            return true;
    }
    return false;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct health_checker *hc = arg;
    struct upstream_rt *u = hc->upstream;
    for (size_t i = 0; i < u->num_targets; i++) {
        struct target *t = u->targets[i];
        /* A probe that outlives the interval keeps its slot: timeout_ms bounds it. */
        if (t->active && !probing(hc, t))
            start_probe(hc, t);
    }
}

struct health_checker *health_start(struct upstream_rt *u)
{
    struct health_checker *hc = calloc(1, sizeof(*hc));
    if (!hc)
        return NULL;
    hc->upstream = u;
    int interval_ms = u->cfg->health.interval_ms > 0 ? u->cfg->health.interval_ms : 2000;
    struct timeval tv = {interval_ms / 1000, (interval_ms % 1000) * 1000};
    hc->tick = event_new(u->base, -1, EV_PERSIST, on_tick, hc);
    if (!hc->tick || event_add(hc->tick, &tv) < 0) {
        health_stop(hc);
        return NULL;
    }
    event_active(hc->tick, EV_TIMEOUT, 0);
    return hc;
}

void health_stop(struct health_checker *hc)
{
    if (!hc)
        return;
    while (hc->probes)
        probe_free(hc->probes);
    if (hc->tick)
        event_free(hc->tick);
    free(hc);
}
