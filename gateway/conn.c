#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

/*
 * One readable event reads at most this much. Large enough that a 1 MiB body
 * takes a handful of reads, small enough that one busy connection cannot
 * monopolise a worker's turn of the loop.
 */
#define CONN_READ_SIZE (64 * 1024)

static void on_read_ready(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct evbuffer_iovec vec[2];
    int nvec = evbuffer_reserve_space(c->in, CONN_READ_SIZE, vec, 2);
    if (nvec <= 0) {
        c->events->on_error(c, ENOMEM);
        return;
    }
    struct iovec iov[2];
    for (int i = 0; i < nvec; i++) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = vec[i].iov_len;
    }
    ssize_t n = readv(fd, iov, nvec);
    if (n < 0) {
        evbuffer_commit_space(c->in, vec, 0);
        if (errno == EAGAIN || errno == EINTR)
            return;
        c->events->on_error(c, errno);
        return;
    }
    /* Commit only what was read: shorten the vectors to the byte count. */
    size_t left = (size_t)n;
    for (int i = 0; i < nvec; i++) {
        if (vec[i].iov_len > left)
            vec[i].iov_len = left;
        left -= vec[i].iov_len;
    }
    evbuffer_commit_space(c->in, vec, nvec);
    if (n == 0) {
        c->eof = true;
        /* A closed peer keeps the socket readable: stop polling it. */
        conn_read_enable(c, false);
    }
    c->events->on_read(c);
}

static void on_write_ready(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->connecting) {
        int err = c->connect_err;
        socklen_t len = sizeof err;
        if (!err && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        c->connecting = false;
        if (err) {
            event_del(c->wev);
            c->write_wait = false;
            c->events->on_error(c, err);
            return;
        }
        if (evbuffer_get_length(c->out) == 0) {
            event_del(c->wev);
            c->write_wait = false;
            conn_read_enable(c, true);
            c->events->on_writable(c);
            return;
        }
        conn_read_enable(c, true);
    }
    int n = evbuffer_write(c->out, fd);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        event_del(c->wev);
        c->write_wait = false;
        c->events->on_error(c, errno);
        return;
    }
    if (evbuffer_get_length(c->out) == 0) {
        event_del(c->wev);
        c->write_wait = false;
        c->events->on_writable(c);
    }
}

static int setup(struct conn *c, struct event_base *base, int fd, const struct conn_events *events,
                 void *owner)
{
    c->fd = fd;
    c->events = events;
    c->owner = owner;
    c->eof = false;
    c->reading = false;
    c->connecting = false;
    c->write_wait = false;
    c->connect_err = 0;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_read_ready, c);
    c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_write_ready, c);
    if (!c->in || !c->out || !c->rev || !c->wev) {
        c->fd = -1;
        conn_close(c);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

struct conn *conn_new(void)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c)
        c->fd = -1;
    return c;
}

void conn_free(struct conn *c)
{
    if (!c)
        return;
    conn_close(c);
    free(c);
}

void conn_set_owner(struct conn *c, const struct conn_events *events, void *owner)
{
    c->events = events;
    c->owner = owner;
}

int conn_open(struct conn *c, struct event_base *base, int fd, const struct conn_events *events,
              void *owner)
{
    if (setup(c, base, fd, events, owner) < 0)
        return -1;
    conn_read_enable(c, true);
    return 0;
}

int conn_connect(struct conn *c, struct event_base *base, const struct sockaddr *addr,
                 socklen_t addrlen, const struct conn_events *events, void *owner)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setup(c, base, fd, events, owner) < 0) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    c->connecting = true;
    c->connect_err = 0;
    event_add(c->wev, NULL);
    c->write_wait = true;
    if (connect(fd, addr, addrlen) < 0 && errno != EINPROGRESS) {
        /* Report from the loop, so callers see one failure path. */
        c->connect_err = errno;
        event_active(c->wev, EV_WRITE, 0);
    }
    return 0;
}

void conn_read_enable(struct conn *c, bool on)
{
    if (c->fd < 0 || on == c->reading)
        return;
    if (on && c->eof)
        return;
    if (on)
        event_add(c->rev, NULL);
    else
        event_del(c->rev);
    c->reading = on;
}

int conn_flush(struct conn *c)
{
    if (c->fd < 0)
        return -1;
    if (c->connecting || c->write_wait)
        return 0; /* the write event will carry on */
    if (evbuffer_get_length(c->out) == 0)
        return 0;
    int n = evbuffer_write(c->out, c->fd);
    if (n < 0 && errno != EAGAIN && errno != EINTR)
        return -1;
    if (evbuffer_get_length(c->out) > 0) {
        event_add(c->wev, NULL);
        c->write_wait = true;
    }
    return 0;
}

void conn_close(struct conn *c)
{
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    c->rev = c->wev = NULL;
    c->in = c->out = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->reading = false;
    c->write_wait = false;
}
