/*
 * admin: the admin listener (SPEC 5): /healthz, /ready, /metrics, /config, and
 * the live status page, / and /status.json (ops/status.h).
 * Plain HTTP served by libevent's evhttp on the main thread's loop: the
 * admin plane is low-volume and must stay up while workers drain.
 *
 * Owns: the evhttp server and its bound socket. Thread: main.
 */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stdbool.h>

struct event_base;
struct snapshot;
struct admin;

/*
 * Starts serving on s->admin.address (NULL when admin is not configured).
 * On a bind failure returns NULL and sets *failed, printing one line naming
 * admin.address.
 */
struct admin *admin_start(struct event_base *base, const struct snapshot *s, bool *failed);

/* Rebinds when the address changed on reload (errors are logged). Returns the new admin. */
struct admin *admin_reload(struct admin *a, struct event_base *base, const struct snapshot *s);

/* /ready answers 503 from now on. */
void admin_set_draining(bool draining);

void admin_free(struct admin *a);

#endif
