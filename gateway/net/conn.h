/*
 * conn: socket I/O for one TCP connection (ARCHITECTURE "Connection I/O").
 *
 * Why not bufferevents: libevent 2.1's socket bufferevent asks FIONREAD
 * before every read and reads 4 KiB at a time, and a queued write waits for
 * an epoll round trip. Here a readable event does one large read (recv or
 * recvmsg: socket calls, not the file layer's read/readv) into space
 * reserved in the input evbuffer, and a write (send or sendmsg) is attempted at once
 * (conn_flush), registering for writability only when the kernel says
 * EAGAIN. The read event stays registered for the connection's whole life
 * unless the owner pauses reading for backpressure.
 *
 * TLS (conn_tls_accept, conn_tls_connect): the same pattern through
 * SSL_read/SSL_write. A read drains every decrypted byte OpenSSL holds
 * (SSL_pending), so none is stranded without a readable event to fetch it;
 * a write hands SSL_write one evbuffer chain (or up to one record's worth
 * pulled together) at a time. Plain connections pay nothing for this: the
 * TLS paths branch off on c->ssl.
 *
 * Owns: the file descriptor, its two events (the read event embedded), the
 * in/out evbuffers, and the SSL object once a TLS call took it.
 * Promises: callbacks are only ever called from the event loop, never from
 * inside conn_* calls, so the owner may call any conn_* from a callback;
 * the one exception is conn_tls_handshake_now, which exists to report a
 * handshake's outcome at once (its caller calls it last). After
 * conn_close() no callback runs.
 *
 * Thread: the event_base's thread.
 */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <event2/event_struct.h>

struct event_base;
struct evbuffer;
struct conn;
struct ssl_st;
struct thread_cache;

/* What the owner of a connection is told. All members are required but on_handshake. */
struct conn_events {
    /* New bytes are in c->in, or the peer closed its side (c->eof set). */
    void (*on_read)(struct conn *c);
    /* c->out became empty after a write had to wait; or a connect finished. */
    void (*on_writable)(struct conn *c);
    /* A read or write failed (reset, broken pipe) or connect failed: `err` is errno. */
    void (*on_error)(struct conn *c, int err);
    /* A server-side TLS handshake (conn_tls_accept) completed. NULL for codecs that adopt later. */
    void (*on_handshake)(struct conn *c);
};

/*
 * Laid out for idle connections, which add up (docs/internals/memory.md):
 * the read event lives inside the struct (no separate 128-byte allocation
 * and its malloc header), the write event is made only when a write has to
 * wait, and the fields are ordered so the struct has no holes.
 */
struct conn {
    struct event rev; /* the read event: valid while rev_set */
    struct event *wev;
    struct evbuffer *in;
    struct evbuffer *out;
    const struct conn_events *events;
    void *owner;
    int fd;
    int connect_err; /* a connect that failed at once, reported from the loop */
    bool rev_set;    /* rev is assigned (event_assign): conn_close deletes it */
    bool eof;        /* the peer closed its side */
    bool reading;    /* the read event is registered */
    bool connecting; /* a non-blocking connect is in progress */
    bool write_wait; /* the write event is registered */
    bool bulk;       /* the last read filled the small-read buffer: read big */
    /* TLS: everything below is unused (NULL, false, 0) on plain connections. */
    bool handshaking;        /* the TLS handshake has not completed */
    bool tls_hs_write;       /* the handshake waits for writability */
    bool tls_read_write;     /* SSL_read waits for writability */
    bool tls_write_read;     /* SSL_write waits for readability */
    bool tls_failed;         /* a fatal TLS error: no close_notify */
    int tls_pending_err;     /* an error to report after delivering the bytes read with it */
    struct ssl_st *ssl;      /* owned: freed by conn_close */
    unsigned long tls_error; /* the OpenSSL error code of a failure (ERR_get_error), or 0 */
    long tls_verify;         /* SSL_get_verify_result after a failed client handshake */
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

/*
 * Lends an idle connection's empty in/out evbuffers back to the thread's
 * pool (plain connections only; a TLS one keeps its own). The next readable
 * event borrows a pair again before reading, so owners see c->in and c->out
 * as usual in every callback. An idle keep-alive connection then costs no
 * buffers at all. Does nothing if either buffer holds bytes.
 */
void conn_release_buffers(struct conn *c);

/*
 * Borrows the pair back before an owner writes to a connection that
 * released its buffers (a read does it by itself). 0, or -1 on OOM.
 */
int conn_borrow_buffers(struct conn *c);

/*
 * An empty evbuffer from the thread's pool (or a new one); NULL on OOM.
 * conn_buffer_put gives one back: it must have no callbacks left; one that
 * still holds bytes is freed rather than pooled.
 */
struct evbuffer *conn_buffer_get(void);
void conn_buffer_put(struct evbuffer *b);

/*
 * Frees the spare evbuffers kept in `tc` (thread_cache.h); its owner calls
 * it before the cache goes away.
 */
void conn_cache_clear(struct thread_cache *tc);

/*
 * Starts a server-side TLS handshake on an open connection (conn_open),
 * taking over `ssl` (freed here on failure). When it completes,
 * events->on_handshake is called; when it fails, on_error (EPROTO for a
 * TLS failure; c->tls_error holds the OpenSSL reason). Returns 0 or -1.
 */
int conn_tls_accept(struct conn *c, struct ssl_st *ssl);

/*
 * Runs the handshake of conn_tls_accept once now, without waiting for a
 * readable event: a client's ClientHello is usually there by the time its
 * connection is accepted, and this saves a turn of the loop. Its outcome
 * comes through the events as from the loop (on_error may free the owner).
 */
void conn_tls_handshake_now(struct conn *c);

/*
 * Makes a connection being connected (conn_connect) a TLS client, taking
 * over `ssl` (freed here on failure): after the TCP connect the handshake
 * runs, and only then is on_writable called (c->connecting stays true until
 * then). A failed handshake or certificate check is reported through
 * on_error (EPROTO; c->tls_error and c->tls_verify say why). Returns 0 or -1.
 */
int conn_tls_connect(struct conn *c, struct ssl_st *ssl);

/*
 * Ends the sending side: a TLS close_notify (best effort, non-blocking) and
 * then shutdown(SHUT_WR). Reading goes on.
 */
void conn_shutdown_write(struct conn *c);

/* Closes the socket and frees events and buffers. Idempotent. */
void conn_close(struct conn *c);

/* True while the connection is open. */
static inline bool conn_is_open(const struct conn *c)
{
    return c->fd >= 0;
}

#endif
