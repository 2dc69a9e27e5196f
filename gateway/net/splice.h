/*
 * splice: moves a known number of bytes from one socket to another through
 * a pipe with splice(2), so that the kernel moves the pages and user space
 * never copies them (ARCHITECTURE "The exchange": large plain-socket bodies;
 * a future WebSocket tunnel). The pipe is the buffer: while it is full the
 * source is not read, which is the transfer's backpressure.
 *
 * Protocol-blind: the caller decides that the bytes on the source socket
 * are raw payload (no framing to apply) and how many there are; this module
 * only moves them and reports what happened through struct splice_events.
 *
 * Owns: the pipe of a running transfer (taken from the thread's cache of
 * spare pipes and given back empty, or closed when it still holds bytes)
 * and the transfer's two events. Never the sockets.
 *
 * Thread: the event_base's thread. The spare pipes are kept in the
 * worker's thread cache (base/thread_cache.h); a thread without one (the
 * main thread, unit tests) makes and closes a pipe per transfer.
 */
#ifndef SLUICE_SPLICE_H
#define SLUICE_SPLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct thread_cache;

struct arena;
struct event_base;
struct splice;

/* A transfer of less than this is better done through evbuffers. */
#define SPLICE_MIN (64 * 1024)

/* The two sockets of a transfer. */
enum splice_end {
    SPLICE_SRC = 0, /* read from */
    SPLICE_DST,     /* written to */
};

/*
 * What a transfer tells its owner. All members are required. They are
 * called from splice_run() and from the transfer's events; after
 * splice_stop() none is called.
 */
struct splice_events {
    /* `n` more bytes left the source socket (they are in the pipe now). */
    void (*on_read)(void *owner, size_t n);
    /* `n` more bytes reached the destination socket. */
    void (*on_written)(void *owner, size_t n);
    /* The transfer waits for `end` (readable source, writable destination). */
    void (*on_wait)(void *owner, enum splice_end end);
    /* Every byte was read and written: the pipe is empty. Stop the transfer. */
    void (*on_done)(void *owner);
    /*
     * `end` failed: errno `err`, or 0 when the source closed before the
     * last byte. Stop the transfer; nothing more moves.
     */
    void (*on_error)(void *owner, enum splice_end end, int err);
};

/*
 * An empty non-blocking pipe from the calling thread's spares, or a new one
 * (with a 1 MiB capacity when the system allows). Returns 0, or -1 with
 * errno when no pipe can be made.
 */
int splice_pipe_get(int fds[2]);

/* Keeps an empty pipe for the next transfer (up to a few); one still holding bytes is closed. */
void splice_pipe_put(int fds[2], bool empty);

/* Closes the spare pipes kept in `tc` (the worker calls it when its loop ends). */
void splice_cache_clear(struct thread_cache *tc);

/*
 * Prepares a transfer of `left` bytes from `src` to `dst` through the pipe
 * `fds` (taken over: splice_stop gives it back). The transfer and its
 * events live in `arena`, which must outlive it; with `arena` NULL they are
 * allocated, and splice_stop frees them (NULL when that fails, the pipe
 * not taken). Nothing moves until splice_run(). Both sockets must be
 * non-blocking.
 */
struct splice *splice_start(struct arena *arena, struct event_base *base, int fds[2], int src,
                            int dst, uint64_t left, const struct splice_events *events,
                            void *owner);

/*
 * Moves as much as both sockets take now, then waits on whichever side
 * blocks (on_wait). May call any event before it returns, including
 * on_done and on_error: the caller must not touch the transfer after this
 * call unless it knows it still runs.
 */
void splice_run(struct splice *s);

/* Bytes of the transfer not read from the source yet. */
uint64_t splice_left(const struct splice *s);

/*
 * Stops the transfer: no event is called any more, the pipe goes back, and
 * a transfer made without an arena is freed. NULL ok. May be called from
 * the transfer's own events (splice_run touches nothing after them).
 */
void splice_stop(struct splice *s);

#endif
