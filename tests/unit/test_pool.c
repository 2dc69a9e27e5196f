/*
 * upstream/pool: counting open connections against max_connections, the
 * waiters' queue (first come, first served; unwait safe twice), idle
 * keep-alive connections kept up to `keepalive` and reused most recent
 * first, an idle connection closed when its upstream closes it, and
 * pool_close_all failing the waiters and calling the close_sessions hook a
 * multiplexing codec registers. Connections are real loopback socket pairs.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "net/conn.h"
#include "test.h"
#include "upstream/pool.h"

static char trace[256];

struct waiter {
    struct pool_waiter w;
    const char *name;
};

static void on_slot(struct pool_waiter *pw, bool ok_slot)
{
    struct waiter *w = (struct waiter *)pw;
    size_t n = strlen(trace);
    snprintf(trace + n, sizeof trace - n, "%s:%s ", w->name, ok_slot ? "slot" : "closed");
}

static int sessions_closed;

static void close_sessions(struct pool *p)
{
    sessions_closed++;
    p->h2 = NULL;
}

static void on_read(struct conn *c)
{
}
static void on_writable(struct conn *c)
{
}
static void on_error(struct conn *c, int err)
{
}
static const struct conn_events busy_events = {on_read, on_writable, on_error, NULL};

/* A connection of the pool, open on one end of a socket pair; *peer gets the other end. */
static struct upconn *open_conn(struct pool *p, struct event_base *base, int *peer)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    struct upconn *uc = pool_new_conn(p, NULL);
    uc->user = uc; /* busy */
    conn_open(&uc->conn, base, sv[0], &busy_events, uc);
    *peer = sv[1];
    return uc;
}

int main(void)
{
    struct event_base *base = event_base_new();
    struct pool p;
    pool_init(&p, "test", "127.0.0.1:1");

    ok(pool_may_open(&p, 0), "no cap");
    ok(pool_may_open(&p, 2), "under the cap");
    int peer[3];
    struct upconn *a = open_conn(&p, base, &peer[0]);
    struct upconn *b = open_conn(&p, base, &peer[1]);
    is_int(p.num_open, 2);
    ok(!pool_may_open(&p, 2), "at the cap");

    /* Waiters are served in order; one that left is skipped. */
    struct waiter w1 = {{.on_slot = on_slot}, "w1"}, w2 = {{.on_slot = on_slot}, "w2"},
                  w3 = {{.on_slot = on_slot}, "w3"};
    pool_wait(&p, &w1.w);
    pool_wait(&p, &w2.w);
    pool_wait(&p, &w3.w);
    pool_unwait(&p, &w2.w);
    pool_unwait(&p, &w2.w); /* twice is fine */
    pool_release(a, 4);     /* kept idle, and a waiter hears of it */
    is_str(trace, "w1:slot ");
    is_int(p.num_idle, 1);
    ok(pool_take_idle(&p) == a, "the idle connection is taken");
    is_int(p.num_idle, 0);
    a->user = a;

    /* keepalive 1: a second idle connection is closed, waking the next waiter. */
    pool_release(a, 1);
    pool_release(b, 1);
    is_int(p.num_idle, 1);
    is_int(p.num_open, 1);
    is_str(trace, "w1:slot w3:slot "); /* the closed one frees a slot, nobody waits for it */
    trace[0] = '\0';

    /* The upstream closes an idle connection: the pool closes it too. */
    close(peer[0]);
    for (int i = 0; i < 10 && p.num_open; i++)
        event_base_loop(base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
    is_int(p.num_open, 0);
    is_int(p.num_idle, 0);

    /* pool_close_all: idle connections closed, waiters failed, sessions closed by the hook. */
    struct upconn *c = open_conn(&p, base, &peer[2]);
    pool_release(c, 4);
    p.h2 = (struct h2_session *)&p; /* stands for a codec's session list */
    p.close_sessions = close_sessions;
    pool_close_all(&p);
    is_int(sessions_closed, 1);
    is_int(p.num_open, 0);
    is_int(p.num_idle, 0);
    pool_wait(&p, &w1.w);
    pool_close_all(&p);
    is_str(trace, "w1:closed ");
    is_int(sessions_closed, 1); /* no sessions left: the hook is not called */

    close(peer[1]);
    close(peer[2]);
    event_base_free(base);
    return test_done();
}
