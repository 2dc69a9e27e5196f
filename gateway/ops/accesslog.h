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

#include <stdbool.h>
#include <stdint.h>

struct access_log_config;
struct ops_record;

/* Starts the writer thread. Returns 0 or -1. */
int accesslog_start(void);

/* Flushes what is queued and stops the writer thread. */
void accesslog_stop(void);

/* True when a line for an exchange under `cfg` would be written (the log is on and running). */
bool accesslog_enabled(const struct access_log_config *cfg);

/*
 * Formats and queues the line for the finished exchange `r` per r->log
 * (nothing when the log is off). The JSON format goes through
 * base/json_writer, so a line is valid UTF-8 JSON whatever bytes the
 * request carried. Reads `r` only during the call.
 */
void accesslog_write(const struct ops_record *r);

/* Lines dropped because the queue was full. */
uint64_t accesslog_dropped(void);

#endif
