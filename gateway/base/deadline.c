#include "base/deadline.h"

#include <stdlib.h>
#include <time.h>

#include <event2/event.h>

#include "base/clock.h"

/* Distinct durations with a list of their own; more share the last list, kept sorted. */
#define DEADLINE_LISTS 16

struct deadline_list {
    struct deadline *head;
    struct deadline *tail;
    int timeout_ms;  /* -1 for the defer queue */
    int64_t fire_ms; /* when the pending timer fires; 0 when it is not pending */
    struct event *ev;
    struct deadlines *owner;
};

struct deadlines {
    struct event_base *base;
    struct deadline_list lists[DEADLINE_LISTS];
    int num_lists;
    struct deadline_list defer;
};

static void unlink_node(struct deadline *d)
{
    struct deadline_list *l = d->list;
    if (d->prev)
        d->prev->next = d->next;
    else
        l->head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        l->tail = d->prev;
    d->prev = d->next = NULL;
    d->list = NULL;
}

/*
 * Sets the list's timer for its head. A timer still pending from nodes that
 * were cancelled since is kept when it fires no later than the head is due:
 * it finds nothing due and sets itself for the head then. A list that
 * empties and fills again with every request (a few connections in one
 * state at a time) so costs no libevent heap operation per request.
 */
static void schedule(struct deadline_list *l, int64_t now)
{
    if (l->fire_ms && l->fire_ms <= l->head->when_ms)
        return;
    l->fire_ms = l->head->when_ms;
    int64_t wait = l->head->when_ms - now;
    if (wait < 1)
        wait = 1;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
    event_add(l->ev, &tv);
}

static void on_list_timer(evutil_socket_t fd, short what, void *arg)
{
    struct deadline_list *l = arg;
    int64_t now = clock_coarse_ms();
    l->fire_ms = 0;
    /* The callback may re-arm into this list (at its tail) or free other nodes. */
    while (l->head && l->head->when_ms <= now) {
        struct deadline *d = l->head;
        unlink_node(d);
        d->fn(d);
    }
    if (l->head)
        schedule(l, now);
}

static void on_defer(evutil_socket_t fd, short what, void *arg)
{
    struct deadline_list *l = arg;
    /* Only what was queued before this turn runs now; later deferrals wait a turn. */
    struct deadline *last = l->tail;
    while (l->head) {
        struct deadline *d = l->head;
        bool final = d == last;
        unlink_node(d);
        d->fn(d);
        if (final)
            break;
    }
    if (l->head)
        event_active(l->ev, EV_TIMEOUT, 0);
}

struct deadlines *deadlines_new(struct event_base *base)
{
    struct deadlines *ds = calloc(1, sizeof *ds);
    if (!ds)
        return NULL;
    ds->base = base;
    ds->defer.timeout_ms = -1;
    ds->defer.owner = ds;
    ds->defer.ev = event_new(base, -1, 0, on_defer, &ds->defer);
    if (!ds->defer.ev) {
        free(ds);
        return NULL;
    }
    return ds;
}

void deadlines_free(struct deadlines *ds)
{
    if (!ds)
        return;
    for (int i = 0; i < ds->num_lists; i++)
        event_free(ds->lists[i].ev);
    event_free(ds->defer.ev);
    free(ds);
}

static struct deadline_list *list_for(struct deadlines *ds, int timeout_ms)
{
    for (int i = 0; i < ds->num_lists; i++)
        if (ds->lists[i].timeout_ms == timeout_ms)
            return &ds->lists[i];
    if (ds->num_lists < DEADLINE_LISTS) {
        struct deadline_list *l = &ds->lists[ds->num_lists];
        l->ev = event_new(ds->base, -1, 0, on_list_timer, l);
        if (l->ev) {
            l->timeout_ms = timeout_ms;
            l->owner = ds;
            ds->num_lists++;
            return l;
        }
    }
    /* Out of lists: share the last one; insertion below keeps it sorted. */
    return &ds->lists[ds->num_lists - 1];
}

void deadline_arm(struct deadlines *ds, struct deadline *d, int timeout_ms)
{
    if (d->list)
        unlink_node(d);
    if (timeout_ms < 0)
        timeout_ms = 0;
    int64_t now = clock_coarse_ms();
    struct deadline_list *l = list_for(ds, timeout_ms);
    d->when_ms = now + timeout_ms;
    d->list = l;
    /* Walk back from the tail: for a list of one duration this stops at once. */
    struct deadline *after = l->tail;
    while (after && after->when_ms > d->when_ms)
        after = after->prev;
    d->prev = after;
    d->next = after ? after->next : l->head;
    if (d->next)
        d->next->prev = d;
    else
        l->tail = d;
    if (after)
        after->next = d;
    else
        l->head = d;
    if (l->head == d)
        schedule(l, now);
}

void deadline_defer(struct deadlines *ds, struct deadline *d)
{
    if (d->list == &ds->defer)
        return;
    if (d->list)
        unlink_node(d);
    struct deadline_list *l = &ds->defer;
    d->list = l;
    d->prev = l->tail;
    d->next = NULL;
    if (l->tail)
        l->tail->next = d;
    else
        l->head = d;
    l->tail = d;
    if (l->head == d)
        event_active(l->ev, EV_TIMEOUT, 0);
}

void deadline_cancel(struct deadline *d)
{
    if (d->list)
        unlink_node(d);
}
