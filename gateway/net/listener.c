#include "net/listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "base/clock.h"
#include "conf/config.h"
#include "base/log.h"
#include "net/loop.h"
#include "net/tls.h"

/* Open client connections across all workers (limits.max_connections). */
static atomic_int open_conns;

/* How many connections one readable event may accept before yielding. */
#define ACCEPT_BATCH 64

/*
 * Out of descriptors (EMFILE, ENFILE), a loop stops accepting until one of
 * its connections closes or this long passes: the pending connection stays
 * in the backlog and would wake the loop again at once.
 */
#define ACCEPT_RETRY_MS 100
/* Failed accepts are reported at most this often, with their count (process-wide). */
#define ACCEPT_REPORT_MS 1000

static atomic_uint fd_failures;
static _Atomic int64_t fd_reported_ms = -ACCEPT_REPORT_MS;

/*
 * The addresses this process listens on with SO_REUSEPORT, with how many of
 * its sockets hold each: the first socket of an address is bound only after
 * a probe without SO_REUSEPORT succeeded, so a port that another process
 * holds is refused (SPEC 7 "listeners") while this process's workers, and a
 * reload that keeps the address, share it.
 */
struct held_addr {
    struct held_addr *next;
    struct sockaddr_storage addr;
    socklen_t len;
    int count;
};

static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static struct held_addr *held_list;

/* Family, port and address: what two binds of the same address share. */
static bool same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return false;
}

static struct held_addr *held_find(const struct sockaddr *addr)
{
    for (struct held_addr *h = held_list; h; h = h->next)
        if (same_addr((const struct sockaddr *)&h->addr, addr))
            return h;
    return NULL;
}

static int bind_socket(const struct sockaddr *addr, socklen_t addrlen, bool reuseport,
                       bool do_listen, char *errbuf, size_t errlen)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(errbuf, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (addr->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, addr, addrlen) < 0 || (do_listen && listen(fd, 4096) < 0)) {
        int err = errno;
        if (err == EADDRINUSE)
            snprintf(errbuf, errlen, "%s (another process holds this address)", strerror(err));
        else
            snprintf(errbuf, errlen, "%s", strerror(err));
        close(fd);
        return -1;
    }
    return fd;
}

int listener_bind(const struct sockaddr *addr, socklen_t addrlen, char *errbuf, size_t errlen)
{
    pthread_mutex_lock(&held_lock);
    struct held_addr *h = held_find(addr);
    int fd = -1;
    if (!h) {
        /* Not ours yet: a bind without SO_REUSEPORT fails if any socket holds the address. */
        int probe = bind_socket(addr, addrlen, false, false, errbuf, errlen);
        if (probe < 0)
            goto out;
        close(probe);
        h = calloc(1, sizeof *h);
        if (!h) {
            snprintf(errbuf, errlen, "out of memory");
            goto out;
        }
        memcpy(&h->addr, addr, addrlen < sizeof h->addr ? addrlen : sizeof h->addr);
        h->len = addrlen;
        h->next = held_list;
        held_list = h;
    }
    fd = bind_socket(addr, addrlen, true, true, errbuf, errlen);
    if (fd >= 0)
        h->count++;
out:
    if (h && h->count == 0) {
        for (struct held_addr **p = &held_list; *p; p = &(*p)->next)
            if (*p == h) {
                *p = h->next;
                break;
            }
        free(h);
    }
    pthread_mutex_unlock(&held_lock);
    return fd;
}

int listener_bind_single(const struct sockaddr *addr, socklen_t addrlen, char *errbuf,
                         size_t errlen)
{
    return bind_socket(addr, addrlen, false, true, errbuf, errlen);
}

/* Closes a socket from listener_bind and forgets its address with the last one. */
static void listener_close(int fd)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    pthread_mutex_lock(&held_lock);
    if (getsockname(fd, (struct sockaddr *)&addr, &len) == 0) {
        for (struct held_addr **p = &held_list; *p; p = &(*p)->next) {
            struct held_addr *h = *p;
            if (!same_addr((const struct sockaddr *)&h->addr, (const struct sockaddr *)&addr))
                continue;
            if (--h->count <= 0) {
                *p = h->next;
                free(h);
            }
            break;
        }
    }
    close(fd);
    pthread_mutex_unlock(&held_lock);
}

static int max_conns(const struct net_loop *loop)
{
    return loop->snapshot ? loop->snapshot->limits.max_connections : 65536;
}

/*
 * The listener's configuration in the worker's current view. A request may
 * have moved the view to a newer snapshot before the reload notice re-indexed
 * the listeners, so the address is checked.
 */
static const struct listen_config *config_of(const struct listener *l)
{
    const struct snapshot *s = l->loop->snapshot;
    if (!s)
        return NULL;
    if (l->index < s->num_listeners && strcmp(s->listeners[l->index].address, l->address) == 0)
        return &s->listeners[l->index];
    for (size_t i = 0; i < s->num_listeners; i++)
        if (strcmp(s->listeners[i].address, l->address) == 0)
            return &s->listeners[i];
    return NULL;
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    struct net_loop *loop = arg;
    if (!loop->draining && atomic_load(&open_conns) < max_conns(loop))
        listener_pause_all(loop, false);
}

static void out_of_descriptors(struct net_loop *loop, int err)
{
    atomic_fetch_add(&fd_failures, 1);
    int64_t now = clock_mono_ms();
    int64_t last = atomic_load(&fd_reported_ms);
    if (now - last >= ACCEPT_REPORT_MS &&
        atomic_compare_exchange_strong(&fd_reported_ms, &last, now)) {
        unsigned n = atomic_exchange(&fd_failures, 0);
        log_error("accept: %s (%u time%s since the last report; accepting pauses for %d ms): "
                  "raise the file limit or lower limits.max_connections",
                  strerror(err), n, n == 1 ? "" : "s", ACCEPT_RETRY_MS);
    }
    listener_pause_all(loop, true);
    if (!loop->accept_retry)
        loop->accept_retry = evtimer_new(loop->base, on_accept_retry, loop);
    if (loop->accept_retry) {
        struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
        evtimer_add(loop->accept_retry, &tv);
    }
}

void listener_loop_free(struct net_loop *loop)
{
    if (loop->accept_retry)
        event_free(loop->accept_retry);
    loop->accept_retry = NULL;
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    struct listener *l = arg;
    struct net_loop *loop = l->loop;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (atomic_load(&open_conns) >= max_conns(loop)) {
            listener_pause_all(loop, true);
            return;
        }
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int cfd = accept4(fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                out_of_descriptors(loop, errno);
            return;
        }
        atomic_fetch_add(&open_conns, 1);
        const struct listen_config *lc = config_of(l);
        const struct listener_codecs *codecs = listener_codecs();
        int r = -1;
        if (lc && lc->tls)
            r = tls_server_accept(loop, cfd, &peer, l->flags, loop->snapshot, lc);
        else if (codecs)
            r = codecs->accept(loop->owner, cfd, &peer, len, l->flags & ~(unsigned)LISTEN_TLS);
        if (r < 0) {
            close(cfd);
            atomic_fetch_sub(&open_conns, 1);
        }
    }
}

struct listener *listener_new(struct net_loop *loop, int fd, const char *address)
{
    struct listener *l = calloc(1, sizeof *l);
    if (!l) {
        listener_close(fd);
        return NULL;
    }
    l->loop = loop;
    l->fd = fd;
    l->address = strdup(address);
    l->ev = event_new(loop->base, fd, EV_READ | EV_PERSIST, on_accept, l);
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
        listener_close(l->fd);
    free(l->address);
    free(l);
}

void listener_pause_all(struct net_loop *loop, bool pause)
{
    for (struct listener *l = loop->listeners; l; l = l->next) {
        if (l->paused == pause)
            continue;
        if (pause)
            event_del(l->ev);
        else
            event_add(l->ev, NULL);
        l->paused = pause;
    }
}

void listener_conn_closed(struct net_loop *loop)
{
    int now = atomic_fetch_sub(&open_conns, 1) - 1;
    if (!loop->draining && now < max_conns(loop))
        listener_pause_all(loop, false);
}
