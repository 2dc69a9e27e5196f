/*
 * listener: one listening socket of one worker. Each worker binds its own
 * socket per configured address with SO_REUSEPORT, so the kernel spreads
 * new connections over the workers without a shared accept lock; another
 * process cannot join them (see listener_bind).
 *
 * Owns: the socket and its accept event. Promises: accepted sockets are
 * non-blocking and close-on-exec and go straight to the cleartext codec, or
 * to the TLS handshake (tls.c) on a listener with "tls". The codecs live in
 * a higher layer (server/), which registers them once at start-up with
 * listener_set_codecs() (net/loop.h); TLS picks its codec by ALPN from the
 * same table.
 * While
 * the process is at limits.max_connections, listeners stop accepting and
 * connections wait in the kernel backlog (SPEC 7 "max_connections").
 * Out of file descriptors, a worker stops accepting until one of its
 * connections closes or 100 ms pass, and the failures are logged once a
 * second with their count.
 *
 * Thread: the worker's thread, except listener_bind (any).
 */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct event;
struct net_loop;
struct listen_config;

struct listener {
    struct listener *next;
    struct net_loop *loop;
    int fd;
    struct event *ev;
    char *address;  /* as configured, the key for reload */
    unsigned flags; /* enum listen_flags (net/loop.h), refreshed on reload */
    size_t index;   /* its listen_config in the snapshot in force, refreshed on reload */
    bool paused;
};

/*
 * Binds and listens on `addr` with SO_REUSEADDR and SO_REUSEPORT, for a
 * listener_new(). The process's first socket on an address is bound only
 * after a probe bind without SO_REUSEPORT succeeded: a port another process
 * holds fails with EADDRINUSE instead of being shared with it; further
 * sockets on an address this process holds (other workers, a reload) share
 * it. Returns the socket, or -1 with a reason in errbuf.
 */
int listener_bind(const struct sockaddr *addr, socklen_t addrlen, char *errbuf, size_t errlen);

/*
 * Binds and listens on `addr` with SO_REUSEADDR only: one socket, shared
 * with nobody (the admin listener). Returns the socket, or -1 with a reason.
 */
int listener_bind_single(const struct sockaddr *addr, socklen_t addrlen, char *errbuf,
                         size_t errlen);

/*
 * Wraps a bound socket for `loop` and starts accepting. NULL on failure (fd
 * closed). The listener reads loop->snapshot at every accept.
 */
struct listener *listener_new(struct net_loop *loop, int fd, const char *address);

/* Stops accepting and closes the socket. NULL ok. */
void listener_free(struct listener *l);

/* Frees what the listeners keep in `loop` (the retry timer), before its event base. */
void listener_loop_free(struct net_loop *loop);

/* Pauses or resumes accepting on every listener of `loop`. */
void listener_pause_all(struct net_loop *loop, bool pause);

/*
 * Counts a closed client connection against limits.max_connections (a
 * process-wide count) and resumes accepting below it; the loop's
 * conn_closed hook.
 */
void listener_conn_closed(struct net_loop *loop);

#endif
