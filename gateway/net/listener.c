#include "net/listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/config.h"
#include "server/http1_server.h"
#include "base/log.h"
#include "net/tls.h"
#include "core/worker.h"

/* Open client connections across all workers (limits.max_connections). */
static atomic_int open_conns;

/* How many connections one readable event may accept before yielding. */
#define ACCEPT_BATCH 64

int listener_bind(const struct sockaddr *addr, socklen_t addrlen, char *errbuf, size_t errlen)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(errbuf, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (addr->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, addr, addrlen) < 0 || listen(fd, 4096) < 0) {
        snprintf(errbuf, errlen, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int max_conns(struct worker *w)
{
    return w->current ? w->current->snapshot->limits.max_connections : 65536;
}

/*
 * The listener's configuration in the worker's current view. A request may
 * have moved the view to a newer snapshot before the reload notice re-indexed
 * the listeners, so the address is checked.
 */
static const struct listen_config *config_of(const struct listener *l)
{
    const struct worker *w = l->worker;
    if (!w->current)
        return NULL;
    const struct snapshot *s = w->current->snapshot;
    if (l->index < s->num_listeners && strcmp(s->listeners[l->index].address, l->address) == 0)
        return &s->listeners[l->index];
    for (size_t i = 0; i < s->num_listeners; i++)
        if (strcmp(s->listeners[i].address, l->address) == 0)
            return &s->listeners[i];
    return NULL;
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    struct listener *l = arg;
    struct worker *w = l->worker;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (atomic_load(&open_conns) >= max_conns(w)) {
            listener_pause_all(w, true);
            return;
        }
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int cfd = accept4(fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                log_error("accept: %s (raise the file limit or lower limits.max_connections)",
                          strerror(errno));
            return;
        }
        atomic_fetch_add(&open_conns, 1);
        const struct listen_config *lc = config_of(l);
        int r = lc && lc->tls
                    ? tls_server_accept(w, cfd, &peer, l->flags, w->current->snapshot, lc)
                    : http1_server_accept(w, cfd, &peer, len, l->flags & ~(unsigned)LISTEN_TLS);
        if (r < 0) {
            close(cfd);
            atomic_fetch_sub(&open_conns, 1);
        }
    }
}

struct listener *listener_new(struct worker *w, int fd, const char *address)
{
    struct listener *l = calloc(1, sizeof *l);
    if (!l) {
        close(fd);
        return NULL;
    }
    l->worker = w;
    l->fd = fd;
    l->address = strdup(address);
    l->ev = event_new(w->base, fd, EV_READ | EV_PERSIST, on_accept, l);
    if (!l->ev || !l->address) {
        listener_free(l);
        return NULL;
    }
    event_add(l->ev, NULL);
    return l;
}

void listener_free(struct listener *l)
{
    if (!l)
        return;
    if (l->ev)
        event_free(l->ev);
    if (l->fd >= 0)
        close(l->fd);
    free(l->address);
    free(l);
}

void listener_pause_all(struct worker *w, bool pause)
{
    for (struct listener *l = w->listeners; l; l = l->next) {
        if (l->paused == pause)
            continue;
        if (pause)
            event_del(l->ev);
        else
            event_add(l->ev, NULL);
        l->paused = pause;
    }
}

void listener_conn_closed(struct worker *w)
{
    int now = atomic_fetch_sub(&open_conns, 1) - 1;
    if (!w->draining && now < max_conns(w))
        listener_pause_all(w, false);
}
