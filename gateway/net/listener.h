/*
 * listener: one listening socket of one worker. Each worker binds its own
 * socket per configured address with SO_REUSEPORT, so the kernel spreads
 * new connections over the workers without a shared accept lock.
 *
 * Owns: the socket and its accept event. Promises: accepted sockets are
 * non-blocking and close-on-exec and go straight to the HTTP/1 codec, or to
 * the TLS handshake (tls.c) on a listener with "tls". While
 * the process is at limits.max_connections, listeners stop accepting and
 * connections wait in the kernel backlog (SPEC 7 "max_connections").
 *
 * Thread: the worker's thread, except listener_bind (any).
 */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct event;
struct worker;
struct listen_config;

struct listener {
    struct listener *next;
    struct worker *worker;
    int fd;
    struct event *ev;
    char *address;  /* as configured, the key for reload */
    unsigned flags; /* enum listen_flags, refreshed on reload */
    size_t index;   /* its listen_config in the snapshot in force, refreshed on reload */
    bool paused;
};

/*
 * Binds and listens on `addr` with SO_REUSEADDR and SO_REUSEPORT. Returns the
 * socket, or -1 with a reason in errbuf.
 */
int listener_bind(const struct sockaddr *addr, socklen_t addrlen, char *errbuf, size_t errlen);

/* Wraps a bound socket for worker `w` and starts accepting. NULL on failure (fd closed). */
struct listener *listener_new(struct worker *w, int fd, const char *address);

/* Stops accepting and closes the socket. NULL ok. */
void listener_free(struct listener *l);

/* Pauses or resumes accepting on every listener of `w`. */
void listener_pause_all(struct worker *w, bool pause);

/* Process-wide count of open client connections (for limits.max_connections). */
void listener_conn_closed(struct worker *w);

#endif
