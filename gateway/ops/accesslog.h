/*
 * accesslog: one line per finished exchange (SPEC 6), JSON or combined.
 *
 * Each worker formats its lines into its own ring buffer (1 MiB), which
 * only it writes and only the writer thread reads: no lock, no system call
 * and no shared read-modify-write on the worker's side. One writer thread
 * drains every ring in batches (one writev per batch) to the file or
 * stdout, so writing the log never blocks an event loop. When a ring is
 * full (a stalled disk, a pipe nobody reads), new lines are dropped and
 * counted (sluice_access_log_dropped_total) rather than stalling requests.
 * accesslog_reopen() (SIGUSR1) closes and reopens the file, for logrotate.
 *
 * Thread: accesslog_write from any thread (threads without a worker share
 * one ring under a mutex); accesslog_start/stop/reopen from main.
 */
#ifndef SLUICE_ACCESSLOG_H
#define SLUICE_ACCESSLOG_H

#include <stdbool.h>
#include <stdint.h>

struct access_log_config;
struct ops_record;
struct thread_cache;

/* Starts the writer thread. Returns 0 or -1. */
int accesslog_start(void);

/*
 * Writes what is queued and stops the writer thread. A writer stuck on a
 * pipe nobody reads is given about two seconds, then its lines are dropped.
 */
void accesslog_stop(void);

/* Asks the writer to close the log file and open it again by its path (SIGUSR1). */
void accesslog_reopen(void);

/* True when a line for an exchange under `cfg` would be written (the log is on and running). */
bool accesslog_enabled(const struct access_log_config *cfg);

/*
 * Formats and queues the line for the finished exchange `r` per r->log
 * (nothing when the log is off). The JSON format goes through
 * base/json_writer, so a line is valid UTF-8 JSON whatever bytes the
 * request carried. Reads `r` only during the call.
 */
void accesslog_write(const struct ops_record *r);

/* Lines dropped: a full ring, or a write that failed. */
uint64_t accesslog_dropped(void);

/* Forgets the worker's ring pointer in its thread cache (loop end); the ring stays until stop. */
void accesslog_cache_clear(struct thread_cache *tc);

#endif
