#include "upstream/pool.h"
#include "base/log.h"
#include "ops/metrics.h"

#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>

void pool_init(struct pool *p, const char *upstream, const char *target)
{
    p->gauge = metrics_pool_gauge(upstream, target);
    p->idle = NULL;
    p->num_idle = 0;
    p->num_open = 0;
    p->wait_head = p->wait_tail = NULL;
    p->h2 = NULL;
    p->close_sessions = NULL;
}

static void idle_unlink(struct upconn *uc)
{
    struct pool *p = uc->pool;
    if (uc->prev)
        uc->prev->next = uc->next;
    else
        p->idle = uc->next;
    if (uc->next)
        uc->next->prev = uc->prev;
    uc->next = uc->prev = NULL;
    p->num_idle--;
    metrics_pool_add(p->gauge, -1, 0);
}

void pool_count_open(struct pool *p, int delta)
{
    p->num_open += (unsigned)delta;
    metrics_pool_add(p->gauge, 0, delta);
}

static void wake_one(struct pool *p)
{
    struct pool_waiter *w = p->wait_head;
    if (!w)
        return;
    pool_unwait(p, w);
    w->on_slot(w, true);
}

void pool_close_conn(struct upconn *uc)
{
    struct pool *p = uc->pool;
    if (!uc->user && (uc->prev || p->idle == uc))
        idle_unlink(uc);
    conn_close(&uc->conn);
    free(uc);
    pool_count_open(p, -1);
    wake_one(p);
}

/* An idle connection's upstream spoke or closed: either way it is done. */
static void on_idle_read(struct conn *c)
{
    pool_close_conn(c->owner);
}

static void on_idle_error(struct conn *c, int err)
{
    pool_close_conn(c->owner);
}

static void on_idle_writable(struct conn *c)
{
}

static const struct conn_events idle_events = {
    .on_read = on_idle_read,
    .on_writable = on_idle_writable,
    .on_error = on_idle_error,
};

struct upconn *pool_take_idle(struct pool *p)
{
    struct upconn *uc = p->idle;
    if (!uc)
        return NULL;
    idle_unlink(uc);
    return uc;
}

bool pool_may_open(const struct pool *p, int max_connections)
{
    return max_connections <= 0 || p->num_open < (unsigned)max_connections;
}

struct upconn *pool_new_conn(struct pool *p, struct target *t)
{
    struct upconn *uc = calloc(1, sizeof *uc);
    if (!uc) {
        log_error("out of memory");
        abort();
    }
    uc->conn.fd = -1;
    uc->pool = p;
    uc->target = t;
    pool_count_open(p, 1);
    return uc;
}

void pool_release(struct upconn *uc, int keepalive)
{
    struct pool *p = uc->pool;
    uc->user = NULL;
    if (p->num_idle >= (unsigned)keepalive || !conn_is_open(&uc->conn) ||
        evbuffer_get_length(uc->conn.in) > 0) {
        pool_close_conn(uc);
        return;
    }
    /* A waiter gets the connection straight away. */
    uc->conn.events = &idle_events;
    uc->conn.owner = uc;
    conn_read_enable(&uc->conn, true);
    uc->prev = NULL;
    uc->next = p->idle;
    if (p->idle)
        p->idle->prev = uc;
    p->idle = uc;
    p->num_idle++;
    metrics_pool_add(p->gauge, 1, 0);
    wake_one(p);
}

void pool_close_all(struct pool *p)
{
    if (p->h2 && p->close_sessions)
        p->close_sessions(p);
    while (p->idle)
        pool_close_conn(p->idle);
    while (p->wait_head) {
        struct pool_waiter *w = p->wait_head;
        pool_unwait(p, w);
        w->on_slot(w, false);
    }
}

void pool_wait(struct pool *p, struct pool_waiter *w)
{
    w->next = NULL;
    w->prev = p->wait_tail;
    if (p->wait_tail)
        p->wait_tail->next = w;
    else
        p->wait_head = w;
    p->wait_tail = w;
    w->queued = true;
}

void pool_unwait(struct pool *p, struct pool_waiter *w)
{
    if (!w->queued)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        p->wait_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        p->wait_tail = w->prev;
    w->next = w->prev = NULL;
    w->queued = false;
}
