/*
 * accesslog: one line per finished exchange (SPEC 6), JSON or combined.
 *
 * Workers format the line and queue it; one writer thread writes queued
 * lines to the file or stdout, so writing the log never blocks an event
 * loop. When the queue holds more than 8 MiB (a stalled disk), new lines
 * are dropped and counted rather than growing memory without bound.
 *
 * Thread: accesslog_write from any worker; accesslog_start/stop from main.
 */
#ifndef SLUICE_ACCESSLOG_H
#define SLUICE_ACCESSLOG_H

#include <stdint.h>

struct exchange;
struct snapshot;

/* Starts the writer thread. Returns 0 or -1. */
int accesslog_start(void);

/* Flushes what is queued and stops the writer thread. */
void accesslog_stop(void);

/* Formats and queues the line for `x` per x->snapshot->access_log. */
void accesslog_write(const struct exchange *x);

/* Lines dropped because the queue was full. */
uint64_t accesslog_dropped(void);

#endif
