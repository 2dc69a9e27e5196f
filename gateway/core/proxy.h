/*
 * proxy: one exchange's upstream state machine (SPEC 2.3, 3.1): pick a
 * target, take a pooled connection or connect, send the request head and
 * stream the body, read the response head and stream the body back, retry
 * on another target where SPEC 2.3 allows, and turn failures into 502, 503
 * or 504.
 *
 * Owns: struct proxy (in the exchange's arena), the upstream connection
 * while the exchange uses it (returned to the pool or closed at the end), and
 * its timers. An arena cleanup releases all of it if the exchange ends early.
 *
 * Thread: the worker's thread.
 */
#ifndef SLUICE_PROXY_H
#define SLUICE_PROXY_H

struct exchange;

/* Sends the exchange to its route's upstream. Ends with exchange_end/abort/reply. */
void proxy_start(struct exchange *x);

/* More request body arrived in x->req_body (or it is complete). */
void proxy_on_request_body(struct exchange *x);

/* The client's output drained: resume reading the upstream. */
void proxy_on_client_drain(struct exchange *x);

/* Closes the calling thread's spare splice pipes (at thread exit). */
void proxy_thread_cleanup(void);

/* Releases everything (called by the arena cleanup; also on client abort). */
void proxy_cancel(struct exchange *x);

#endif
