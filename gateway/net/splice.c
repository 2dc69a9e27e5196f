/*
 * splice: socket to socket through a pipe (see the header).
 */
#include "net/splice.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/event.h>

#include "base/arena.h"
#include "base/thread_cache.h"

#define SPLICE_PIPE (1024 * 1024) /* requested pipe capacity (the default limit for users) */

struct splice {
    int pipe_r;
    int pipe_w;
    int src;
    int dst;
    uint64_t left;        /* bytes still to read from src */
    size_t in_pipe;       /* bytes read from src, not yet written to dst */
    struct event *src_ev; /* src readable (persistent while waiting on it) */
    struct event *dst_ev; /* dst writable */
    const struct splice_events *events;
    void *owner;
    bool own; /* malloc'd with its events (no arena): splice_stop frees it */
};

int splice_pipe_get(int fds[2])
{
    struct thread_cache *tc = thread_cache_self();
    if (tc && tc->num_pipes) {
        tc->num_pipes--;
        fds[0] = tc->pipes[tc->num_pipes][0];
        fds[1] = tc->pipes[tc->num_pipes][1];
        return 0;
    }
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    fcntl(fds[1], F_SETPIPE_SZ, SPLICE_PIPE); /* best effort: the default is 64 KiB */
    return 0;
}

void splice_pipe_put(int fds[2], bool empty)
{
    struct thread_cache *tc = thread_cache_self();
    if (empty && tc && tc->num_pipes < THREAD_CACHE_PIPES) {
        tc->pipes[tc->num_pipes][0] = fds[0];
        tc->pipes[tc->num_pipes][1] = fds[1];
        tc->num_pipes++;
        return;
    }
    close(fds[0]);
    close(fds[1]);
}

void splice_cache_clear(struct thread_cache *tc)
{
    while (tc->num_pipes) {
        tc->num_pipes--;
        close(tc->pipes[tc->num_pipes][0]);
        close(tc->pipes[tc->num_pipes][1]);
    }
}

static void on_event(evutil_socket_t fd, short what, void *arg)
{
    splice_run(arg);
}

struct splice *splice_start(struct arena *arena, struct event_base *base, int fds[2], int src,
                            int dst, uint64_t left, const struct splice_events *events, void *owner)
{
    struct splice *s = arena ? arena_calloc(arena, sizeof *s) : calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->own = !arena;
    s->pipe_r = fds[0];
    s->pipe_w = fds[1];
    s->src = src;
    s->dst = dst;
    s->left = left;
    s->events = events;
    s->owner = owner;
    if (s->own) {
        s->src_ev = event_new(base, src, EV_READ | EV_PERSIST, on_event, s);
        s->dst_ev = event_new(base, dst, EV_WRITE, on_event, s);
        if (!s->src_ev || !s->dst_ev) {
            if (s->src_ev)
                event_free(s->src_ev);
            if (s->dst_ev)
                event_free(s->dst_ev);
            free(s);
            return NULL;
        }
        return s;
    }
    s->src_ev = arena_alloc(arena, event_get_struct_event_size());
    s->dst_ev = arena_alloc(arena, event_get_struct_event_size());
    event_assign(s->src_ev, base, src, EV_READ | EV_PERSIST, on_event, s);
    event_assign(s->dst_ev, base, dst, EV_WRITE, on_event, s);
    return s;
}

/*
 * Writes what the pipe holds to dst. Returns 1 once the pipe is empty, 0
 * when dst would block, -1 on error (errno set).
 */
static int drain(struct splice *s)
{
    while (s->in_pipe > 0) {
        ssize_t n =
            splice(s->pipe_r, NULL, s->dst, NULL, s->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            s->in_pipe -= (size_t)n;
            s->events->on_written(s->owner, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (n == 0)
            errno = EPIPE;
        return -1;
    }
    return 1;
}

void splice_run(struct splice *s)
{
    for (;;) {
        int drained = drain(s);
        if (drained == 0) {
            /* The destination is slow: stop reading the source until it drains. */
            event_del(s->src_ev);
            event_add(s->dst_ev, NULL);
            s->events->on_wait(s->owner, SPLICE_DST);
            return;
        }
        if (drained < 0) {
            s->events->on_error(s->owner, SPLICE_DST, errno);
            return;
        }
        if (s->left == 0) {
            s->events->on_done(s->owner);
            return;
        }
        size_t want = s->left < SPLICE_PIPE ? (size_t)s->left : SPLICE_PIPE;
        ssize_t n = splice(s->src, NULL, s->pipe_w, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            s->left -= (uint64_t)n;
            s->in_pipe += (size_t)n;
            s->events->on_read(s->owner, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            event_add(s->src_ev, NULL);
            s->events->on_wait(s->owner, SPLICE_SRC);
            return;
        }
        s->events->on_error(s->owner, SPLICE_SRC, n == 0 ? 0 : errno);
        return;
    }
}

uint64_t splice_left(const struct splice *s)
{
    return s->left;
}

void splice_stop(struct splice *s)
{
    if (!s)
        return;
    event_del(s->src_ev);
    event_del(s->dst_ev);
    splice_pipe_put((int[2]){s->pipe_r, s->pipe_w}, s->in_pipe == 0);
    s->pipe_r = s->pipe_w = -1;
    if (s->own) {
        event_free(s->src_ev);
        event_free(s->dst_ev);
        free(s);
    }
}
