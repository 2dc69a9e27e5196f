/*
 * deadline: order of expiry across and within durations, re-arming,
 * cancelling, callbacks that re-arm or cancel others, and the defer queue
 * running each node once per turn. Runs a real event loop with short
 * timeouts (bounded by a watchdog).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "base/deadline.h"
#include "test.h"

static char order[256];
static struct deadline nodes[8];
static struct deadlines *ds;
static struct event_base *base;
static int defer_runs;

static void note(struct deadline *d)
{
    size_t n = strlen(order);
    snprintf(order + n, sizeof order - n, "%d", (int)(d - nodes));
}

static void on_fire(struct deadline *d)
{
    note(d);
}

static void on_fire_cancel_next(struct deadline *d)
{
    note(d);
    deadline_cancel(&nodes[5]);
}

static void on_fire_rearm(struct deadline *d)
{
    note(d);
    if (strlen(order) < 6)
        deadline_arm(ds, d, 10);
}

static long long fired_at_ms;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_fire_timed(struct deadline *d)
{
    note(d);
    fired_at_ms = now_ms();
}

static void on_defer(struct deadline *d)
{
    defer_runs++;
    note(d);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(base);
}

static void run(int ms)
{
    struct event *w = evtimer_new(base, on_watchdog, NULL);
    struct timeval tv = {0, ms * 1000};
    evtimer_add(w, &tv);
    event_base_dispatch(base);
    event_free(w);
}

int main(void)
{
    base = event_base_new();
    ds = deadlines_new(base);
    ok(ds != NULL, "deadlines_new");

    /* Two durations, interleaved arming: expiry order is by time. */
    for (int i = 0; i < 4; i++)
        deadline_init(&nodes[i], on_fire);
    deadline_arm(ds, &nodes[0], 60);
    deadline_arm(ds, &nodes[1], 20);
    deadline_arm(ds, &nodes[2], 60);
    deadline_arm(ds, &nodes[3], 20);
    run(150);
    is_str(order, "1302");

    /* Re-arming moves a node; cancelling removes it. */
    order[0] = '\0';
    deadline_arm(ds, &nodes[0], 20);
    deadline_arm(ds, &nodes[1], 20);
    deadline_arm(ds, &nodes[0], 40); /* now after 1 */
    deadline_arm(ds, &nodes[2], 20);
    deadline_cancel(&nodes[2]);
    ok(!deadline_pending(&nodes[2]), "cancelled node is idle");
    run(120);
    is_str(order, "10");

    /* A callback may cancel another node due at the same time. */
    order[0] = '\0';
    deadline_init(&nodes[4], on_fire_cancel_next);
    deadline_init(&nodes[5], on_fire);
    deadline_arm(ds, &nodes[4], 10);
    deadline_arm(ds, &nodes[5], 10);
    run(80);
    is_str(order, "4");

    /* A callback may re-arm itself. */
    order[0] = '\0';
    deadline_init(&nodes[6], on_fire_rearm);
    deadline_arm(ds, &nodes[6], 10);
    run(200);
    is_str(order, "666666");

    /* Many durations (more than the lists) still fire in time order. */
    order[0] = '\0';
    for (int i = 0; i < 4; i++)
        deadline_init(&nodes[i], on_fire);
    for (int k = 0; k < 20; k++) {
        struct deadline spare;
        deadline_init(&spare, on_fire);
        deadline_arm(ds, &spare, 1000 + k);
        deadline_cancel(&spare);
    }
    deadline_arm(ds, &nodes[3], 50);
    deadline_arm(ds, &nodes[2], 30);
    run(150);
    is_str(order, "23");

    /*
     * A list emptied by a cancel keeps its timer pending; a node armed in it
     * later fires once, and not before its time (the stale timer finds
     * nothing due and sets itself for the node).
     */
    order[0] = '\0';
    deadline_init(&nodes[0], on_fire);
    deadline_init(&nodes[1], on_fire_timed);
    deadline_arm(ds, &nodes[0], 40);
    deadline_cancel(&nodes[0]);
    run(15);
    long long armed = now_ms();
    deadline_arm(ds, &nodes[1], 40);
    run(200);
    is_str(order, "1");
    ok(fired_at_ms - armed >= 35, "a node in a list with a stale timer fires in time, not early");

    /* Deferred work runs once per deferral round, from the loop. */
    order[0] = '\0';
    deadline_init(&nodes[7], on_defer);
    deadline_defer(ds, &nodes[7]);
    deadline_defer(ds, &nodes[7]);
    is_int(defer_runs, 0);
    run(30);
    is_int(defer_runs, 1);
    /* Deferring moves an armed node off its timer list. */
    deadline_arm(ds, &nodes[7], 10);
    deadline_defer(ds, &nodes[7]);
    run(60);
    is_int(defer_runs, 2);

    deadlines_free(ds);
    event_base_free(base);
    return test_done();
}
