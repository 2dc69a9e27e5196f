/*
 * conn: socket I/O for one TCP connection (ARCHITECTURE "Connection I/O").
 *
 * Why not bufferevents: libevent 2.1's socket bufferevent asks FIONREAD
 * before every read and reads 4 KiB at a time, and a queued write waits for
 * an epoll round trip. Here a readable event does one large readv into space
 * reserved in the input evbuffer, and a write is attempted at once
 * (conn_flush), registering for writability only when the kernel says
 * EAGAIN. The read event stays registered for the connection's whole life
 * unless the owner pauses reading for backpressure.
 *
 * Owns: the file descriptor, its two events, and the in/out evbuffers.
 * Promises: callbacks are only ever called from the event loop, never from
 * inside conn_* calls, so the owner may call any conn_* from a callback.
 * After conn_close() no callback runs.
 *
 * Thread: the event_base's thread.
 */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct event;
struct event_base;
struct evbuffer;
struct conn;

/* What the owner of a connection is told. All members are required. */
struct conn_events {
    /* New bytes are in c->in, or the peer closed its side (c->eof set). */
    void (*on_read)(struct conn *c);
    /* c->out became empty after a write had to wait; or a connect finished. */
    void (*on_writable)(struct conn *c);
    /* A read or write failed (reset, broken pipe) or connect failed: `err` is errno. */
    void (*on_error)(struct conn *c, int err);
};

struct conn {
    int fd;
    struct event *rev;
    struct event *wev;
    struct evbuffer *in;
    struct evbuffer *out;
    const struct conn_events *events;
    void *owner;
    bool eof;        /* the peer closed its side */
    bool reading;    /* the read event is registered */
    bool connecting; /* a non-blocking connect is in progress */
    bool write_wait; /* the write event is registered */
    int connect_err; /* a connect that failed at once, reported from the loop */
};

/* Allocates a closed connection (fd -1); free with conn_free. NULL on OOM. */
struct conn *conn_new(void);

/* Closes (conn_close) and frees a connection from conn_new. NULL ok. */
void conn_free(struct conn *c);

/*
 * Hands the connection to another owner (a codec adopting it): later
 * callbacks go to `events` with c->owner = owner. Registrations are kept.
 */
void conn_set_owner(struct conn *c, const struct conn_events *events, void *owner);

/*
 * Takes over `fd` (made non-blocking here) and starts reading. Returns 0, or
 * -1 when libevent cannot allocate (the fd is then not closed).
 */
int conn_open(struct conn *c, struct event_base *base, int fd, const struct conn_events *events,
              void *owner);

/*
 * Starts a non-blocking connect to `addr`. On completion on_writable is
 * called (c->connecting cleared) or on_error with the error. Returns 0, or
 * -1 with errno when the socket cannot even be created.
 */
int conn_connect(struct conn *c, struct event_base *base, const struct sockaddr *addr,
                 socklen_t addrlen, const struct conn_events *events, void *owner);

/* Pauses or resumes reading (backpressure). */
void conn_read_enable(struct conn *c, bool on);

/*
 * Writes as much of c->out as the kernel takes now; registers for
 * writability if some is left. Returns 0, or -1 when the write failed (the
 * owner should close; on_error is not called for this).
 */
int conn_flush(struct conn *c);

/* Closes the socket and frees events and buffers. Idempotent. */
void conn_close(struct conn *c);

/* True while the connection is open. */
static inline bool conn_is_open(const struct conn *c)
{
    return c->fd >= 0;
}

#endif
