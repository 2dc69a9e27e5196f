#include "net/loop.h"

#include <stddef.h>

#include <event2/event.h>

/* Written once before the workers start, read-only afterwards. */
static const struct listener_codecs *codecs;

void listener_set_codecs(const struct listener_codecs *c)
{
    codecs = c;
}

const struct listener_codecs *listener_codecs(void)
{
    return codecs;
}

void net_loop_conn_added(struct net_loop *l, struct client_conn *c)
{
    c->prev = NULL;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    l->num_conns++;
}

void net_loop_conn_detach(struct net_loop *l, struct client_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    l->num_conns--;
}

void net_loop_conn_removed(struct net_loop *l, struct client_conn *c)
{
    net_loop_conn_detach(l, c);
    if (l->conn_closed)
        l->conn_closed(l);
    if (l->draining && l->num_conns == 0)
        event_base_loopexit(l->base, NULL);
}
