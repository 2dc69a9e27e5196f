/*
 * loop: the part of a worker that the connection layers see: its event
 * loop, its listening sockets, the configuration in force on it, and the
 * list of its open client connections whatever their codec (a TLS
 * handshake, HTTP/1, HTTP/2). core/worker embeds one struct net_loop and
 * fills it; listener.c, tls.c and the server codecs use it, so nothing
 * below core/ needs the worker's own header. Here too: the table of codecs
 * (server/) that accepted connections are handed to, registered from above.
 *
 * Owns: nothing it frees. The listeners and the connections belong to
 * their modules; the snapshot pointer is the owner's (held by its view).
 * Promises: when a connection leaves the list, conn_closed runs (the
 * listeners count it against limits.max_connections), and a draining loop
 * exits once its last connection is gone.
 *
 * Thread: the loop's own thread.
 */
#ifndef SLUICE_LOOP_H
#define SLUICE_LOOP_H

#include <stdbool.h>
#include <sys/socket.h>

struct conn;
struct event;
struct event_base;
struct listener;
struct snapshot;
struct worker;

/* What the listener a connection came through allows. */
enum listen_flags {
    LISTEN_TLS = 1 << 0,      /* the connection is TLS (handshake done) */
    LISTEN_H2C = 1 << 1,      /* cleartext HTTP/2 with prior knowledge is enabled */
    LISTEN_H2C_ONLY = 1 << 2, /* cleartext HTTP/2 only: no HTTP/1.1 on this listener */
};

/*
 * The codecs that serve accepted connections, registered from above. Each
 * gets the loop's owner (an opaque struct worker here) and `flags` (enum
 * listen_flags). On success the codec owns the socket or `c`; on -1 the
 * caller still owns it.
 */
struct listener_codecs {
    /* A freshly accepted cleartext socket: HTTP/1.1, h2c by its preface, or h2c only. */
    int (*accept)(struct worker *w, int fd, const struct sockaddr_storage *peer, socklen_t peerlen,
                  unsigned flags);
    /* An open connection (TLS handshake done, ALPN "http/1.1" or none). */
    int (*adopt_http1)(struct worker *w, struct conn *c, const struct sockaddr_storage *peer,
                       unsigned flags);
    /* An open connection that speaks HTTP/2 (ALPN "h2", or the h2c preface). */
    int (*adopt_http2)(struct worker *w, struct conn *c, const struct sockaddr_storage *peer,
                       unsigned flags);
};

/*
 * Registers the codecs every listener hands connections to (process-wide;
 * `codecs` must outlive the workers). Call once before the first worker
 * starts. Until then accepted sockets are closed.
 */
void listener_set_codecs(const struct listener_codecs *codecs);

/* The registered codecs, or NULL before listener_set_codecs(). */
const struct listener_codecs *listener_codecs(void);

/*
 * The part of every client connection the loop sees, whatever its codec:
 * a link in the loop's list and what to do when the worker drains or stops.
 */
struct client_conn {
    struct client_conn *next;
    struct client_conn *prev;
    /* Draining: close now if idle, else close after the current response. */
    void (*on_drain)(struct client_conn *c);
    /* Stopping: close at once. */
    void (*on_stop)(struct client_conn *c);
};

struct net_loop {
    struct event_base *base;
    /*
     * The worker this loop belongs to: opaque here, handed on to the codecs
     * registered with listener_set_codecs().
     */
    struct worker *owner;
    struct snapshot *snapshot;  /* in force on this loop; the owner holds it */
    struct listener *listeners; /* linked list */
    struct client_conn *conns;  /* open client connections, linked */
    unsigned num_conns;
    bool draining;              /* no more accepting; exit when the last connection closes */
    struct event *accept_retry; /* listener.c: resumes accepting after EMFILE; NULL until needed */
    /*
     * Called after a connection left the list for good; the owner sets it
     * to listener_conn_closed. NULL ok.
     */
    void (*conn_closed)(struct net_loop *l);
};

/* Links an opened client connection into `l`'s list. */
void net_loop_conn_added(struct net_loop *l, struct client_conn *c);

/*
 * Unlinks a closed client connection and calls l->conn_closed; a draining
 * loop with no connection left exits.
 */
void net_loop_conn_removed(struct net_loop *l, struct client_conn *c);

/*
 * Unlinks `c` without counting a closed connection: its socket lives on in
 * another codec that linked itself already (a finished TLS handshake, an
 * HTTP/1 connection that turned out to speak h2c).
 */
void net_loop_conn_detach(struct net_loop *l, struct client_conn *c);

#endif
