/*
 * deadline: per-worker timeouts for many connections at O(1) each, and a
 * queue of work deferred to the next turn of the loop.
 *
 * Connection timeouts come in a few fixed durations (header, idle, body,
 * linger), so a deadline "now + T" always belongs at the tail of the list
 * of deadlines of duration T: arming and cancelling are list operations, and
 * one libevent timer per duration fires for the list's head. This replaces
 * a libevent event per connection (128 bytes, and a heap operation per
 * re-arm) with a 40-byte node embedded in the connection.
 *
 * Owns: the lists and their timers; never the nodes (embedded in their
 * owners). Promises: a node's callback runs from the event loop, never from
 * inside deadline_* calls; the callback may re-arm, cancel or free its node.
 *
 * Thread: the worker's thread.
 */
#ifndef SLUICE_DEADLINE_H
#define SLUICE_DEADLINE_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct deadline_list;
struct deadlines;

struct deadline {
    struct deadline *prev;
    struct deadline *next;
    struct deadline_list *list; /* where it is queued; NULL when idle */
    int64_t when_ms;
    void (*fn)(struct deadline *d);
};

/* Per-worker state. NULL on allocation failure. */
struct deadlines *deadlines_new(struct event_base *base);

/* Frees the lists; nodes still queued are simply forgotten. NULL ok. */
void deadlines_free(struct deadlines *ds);

/* Prepares a node (idle) that will call `fn`. */
static inline void deadline_init(struct deadline *d, void (*fn)(struct deadline *d))
{
    d->prev = d->next = 0;
    d->list = 0;
    d->when_ms = 0;
    d->fn = fn;
}

/* Calls d->fn after `timeout_ms` (re-arming moves an armed node). */
void deadline_arm(struct deadlines *ds, struct deadline *d, int timeout_ms);

/* Calls d->fn at the next turn of the loop (once, however often deferred). */
void deadline_defer(struct deadlines *ds, struct deadline *d);

/* Takes the node off whatever list it is on. Safe when idle. */
void deadline_cancel(struct deadline *d);

static inline bool deadline_pending(const struct deadline *d)
{
    return d->list != 0;
}

#endif
