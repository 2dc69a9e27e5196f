#include "core/worker.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "base/arena.h"
#include "base/blockpool.h"
#include "conf/config.h"
#include "net/conn.h"
#include "base/deadline.h"
#include "net/listener.h"
#include "core/filter.h"
#include "net/splice.h"
#include "base/log.h"
#include "upstream/redis.h"
#include "upstream/upstream.h"
#include "ops/accesslog.h"
#include "ops/metrics.h"
#include "ops/status.h"

static _Thread_local struct worker *self;

struct worker *worker_self(void)
{
    return self;
}

uint64_t worker_random(struct worker *w)
{
    /* xorshift128+: fast, and plenty for request ids and balancing. */
    uint64_t s1 = w->rng[0];
    const uint64_t s0 = w->rng[1];
    w->rng[0] = s0;
    s1 ^= s1 << 23;
    w->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return w->rng[1] + s0;
}

static struct worker_snapshot *view_new(struct worker *w, struct snapshot *s)
{
    struct worker_snapshot *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->snapshot = s;
    ws->worker = w;
    ws->upstreams = calloc(s->num_upstreams ? s->num_upstreams : 1, sizeof *ws->upstreams);
    if (!ws->upstreams) {
        free(ws);
        return NULL;
    }
    for (size_t i = 0; i < s->num_upstreams; i++)
        ws->upstreams[i] = upstream_rt_new(&s->upstreams[i], w->base, w->dns, w->run_health_checks);
    if (s->redis.enabled && s->redis.used)
        ws->redis = redis_client_new(&s->redis, w->base, w->dns);
    ws->filter_contexts = filter_contexts_new(s, w);
    return ws;
}

static void view_free(struct worker_snapshot *ws)
{
    filter_contexts_free(ws->filter_contexts, ws->snapshot);
    redis_client_free(ws->redis);
    for (size_t i = 0; i < ws->snapshot->num_upstreams; i++)
        upstream_rt_free(ws->upstreams[i]);
    free(ws->upstreams);
    snapshot_release(ws->snapshot);
    free(ws);
}

/* Adopts the configuration in force if it is newer than the worker's view. */
static void view_refresh(struct worker *w)
{
    if (w->current && w->current->snapshot->generation == config_current_generation())
        return;
    struct snapshot *s = config_current_hold();
    if (!s)
        return;
    struct worker_snapshot *ws = view_new(w, s);
    if (!ws) {
        snapshot_release(s);
        return;
    }
    struct worker_snapshot *prev = w->current;
    w->current = ws;
    w->net.snapshot = s;
    if (prev) {
        if (prev->refs == 0) {
            view_free(prev);
        } else {
            prev->next = w->old;
            w->old = prev;
        }
    }
    size_t need = (size_t)s->limits.max_headers;
    if (need > w->parse_cap) {
        struct header *h = realloc(w->parse_headers, need * sizeof *h);
        if (h) {
            w->parse_headers = h;
            w->parse_cap = need;
        }
    }
}

struct worker_snapshot *worker_snapshot_acquire(struct worker *w)
{
    view_refresh(w);
    w->current->refs++;
    return w->current;
}

void worker_snapshot_release(struct worker_snapshot *ws)
{
    if (--ws->refs > 0 || ws == ws->worker->current)
        return;
    struct worker *w = ws->worker;
    for (struct worker_snapshot **p = &w->old; *p; p = &(*p)->next) {
        if (*p == ws) {
            *p = ws->next;
            break;
        }
    }
    view_free(ws);
}

/* Opens listeners for addresses of the snapshot this worker lacks, closes the others. */
static int sync_listeners(struct worker *w, const struct snapshot *s, bool fatal)
{
    /* Close listeners whose address is gone. */
    for (struct listener **p = &w->net.listeners; *p;) {
        bool keep = false;
        for (size_t i = 0; i < s->num_listeners; i++)
            keep |= strcmp(s->listeners[i].address, (*p)->address) == 0;
        if (keep) {
            p = &(*p)->next;
            continue;
        }
        struct listener *gone = *p;
        *p = gone->next;
        listener_free(gone);
    }
    for (size_t i = 0; i < s->num_listeners; i++) {
        const struct listen_config *lc = &s->listeners[i];
        unsigned flags = (lc->h2c ? LISTEN_H2C : 0) | (lc->h2c_only ? LISTEN_H2C_ONLY : 0) |
                         (lc->tls ? LISTEN_TLS : 0);
        bool have = false;
        for (struct listener *l = w->net.listeners; l; l = l->next) {
            if (strcmp(l->address, lc->address) == 0) {
                l->flags = flags;
                l->index = i;
                have = true;
            }
        }
        if (have)
            continue;
        char why[256];
        int fd = listener_bind((const struct sockaddr *)&lc->addr, lc->addrlen, why, sizeof why);
        if (fd < 0) {
            if (fatal) {
                fprintf(stderr,
                        "%s: listen[%zu].address: cannot listen on %s: %s (choose a free port or "
                        "stop the process using it)\n",
                        s->file, i, lc->address, why);
                return -1;
            }
            log_error("%s: listen[%zu].address: cannot listen on %s: %s", s->file, i, lc->address,
                      why);
            continue;
        }
        struct listener *l = listener_new(&w->net, fd, lc->address);
        if (!l)
            return -1;
        l->flags = flags;
        l->index = i;
        l->next = w->net.listeners;
        w->net.listeners = l;
    }
    return 0;
}

static void begin_drain(struct worker *w)
{
    if (w->net.draining)
        return;
    w->net.draining = true;
    while (w->net.listeners) {
        struct listener *l = w->net.listeners;
        w->net.listeners = l->next;
        listener_free(l);
    }
    /* on_drain may close (and unlink) the connection it is called on. */
    for (struct client_conn *c = w->net.conns, *next; c; c = next) {
        next = c->next;
        c->on_drain(c);
    }
    if (w->net.num_conns == 0)
        event_base_loopexit(w->base, NULL);
}

/* Copies this worker's targets and pools to its status board (ops/status.h). */
static void publish_status(struct worker *w)
{
    status_board_begin(w->status, w->net.num_conns);
    for (struct worker_snapshot *ws = w->current; ws; ws = ws == w->current ? w->old : ws->next) {
        for (size_t i = 0; i < ws->snapshot->num_upstreams; i++) {
            if (ws->upstreams[i])
                upstream_status_publish(ws->upstreams[i], w->status);
        }
    }
    status_board_commit(w->status);
}

static void on_status_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    publish_status(arg);
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t count;
    ssize_t r = read(fd, &count, sizeof count); /* resets the eventfd */
    (void)r;
    int cmd = atomic_exchange(&w->commands, 0);
    if (cmd & WORKER_STOP) {
        for (struct client_conn *c = w->net.conns, *next; c; c = next) {
            next = c->next;
            c->on_stop(c);
        }
        event_base_loopbreak(w->base);
        return;
    }
    if (cmd & WORKER_DRAIN) {
        begin_drain(w);
        return;
    }
    if ((cmd & WORKER_RELOAD) && !w->net.draining) {
        view_refresh(w);
        sync_listeners(w, w->current->snapshot, false);
    }
}

struct worker *worker_new(int id, struct snapshot *s)
{
    struct worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->notify_fd = -1;
    w->id = id;
    w->run_health_checks = id == 0;
    w->base = event_base_new();
    if (!w->base)
        goto fail;
    w->net.base = w->base;
    w->net.owner = w;
    w->net.conn_closed = listener_conn_closed;
    w->dns = evdns_base_new(w->base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!w->dns) /* no resolv.conf: names still resolve from the hosts file */
        w->dns = evdns_base_new(w->base, 0);
    /*
     * The main thread wakes the worker through an eventfd rather than
     * event_active(): that way no event_base needs libevent's locking, which
     * would cost a mutex pair on every event_add/event_del of the hot path.
     */
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->notify_fd >= 0)
        w->notify = event_new(w->base, w->notify_fd, EV_PERSIST | EV_READ, on_notify, w);
    w->deadlines = deadlines_new(w->base);
    w->status = status_board_new(id);
    w->status_timer = event_new(w->base, -1, EV_PERSIST, on_status_timer, w);
    if (!w->dns || !w->notify || !w->deadlines || !w->status || !w->status_timer)
        goto fail;
    event_add(w->notify, NULL);
    struct timeval second = {1, 0};
    event_add(w->status_timer, &second);
    if (getrandom(w->rng, sizeof w->rng, 0) != sizeof w->rng || (w->rng[0] | w->rng[1]) == 0) {
        w->rng[0] = 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
        w->rng[1] = 0xbf58476d1ce4e5b9ULL + (uint64_t)id;
    }
    /* Build this worker's first view on the main thread, before the loop starts. */
    self = w;
    view_refresh(w);
    self = NULL;
    if (!w->current || sync_listeners(w, s, true) < 0)
        goto fail;
    return w;
fail:
    worker_join_free(w);
    return NULL;
}

/* Frees what the worker's thread cache holds; each module clears its own part. */
static void cache_clear(struct worker *w)
{
    arena_cache_clear(&w->cache);
    blockpool_cache_clear(&w->cache);
    conn_cache_clear(&w->cache);
    splice_cache_clear(&w->cache);
    metrics_cache_clear(&w->cache);
    accesslog_cache_clear(&w->cache);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    self = w;
    char name[32];
    snprintf(name, sizeof name, "worker %d", w->id);
    log_set_thread_name(name);
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    thread_cache_set(&w->cache);
    publish_status(w);
    event_base_dispatch(w->base);
    thread_cache_set(NULL);
    cache_clear(w);
    atomic_store(&w->exited, true);
    return NULL;
}

int worker_start(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void worker_notify(struct worker *w, enum worker_command cmd)
{
    atomic_fetch_or(&w->commands, (int)cmd);
    uint64_t one = 1;
    ssize_t r = write(w->notify_fd, &one, sizeof one);
    (void)r;
}

void worker_join_free(struct worker *w)
{
    if (!w)
        return;
    if (w->thread)
        pthread_join(w->thread, NULL);
    self = w; /* views and connections are torn down as if on the worker */
    for (struct client_conn *c = w->net.conns, *next; c; c = next) {
        next = c->next;
        c->on_stop(c);
    }
    while (w->net.listeners) {
        struct listener *l = w->net.listeners;
        w->net.listeners = l->next;
        listener_free(l);
    }
    while (w->old) {
        struct worker_snapshot *ws = w->old;
        w->old = ws->next;
        view_free(ws);
    }
    if (w->current)
        view_free(w->current);
    self = NULL;
    cache_clear(w);
    deadlines_free(w->deadlines);
    listener_loop_free(&w->net);
    if (w->notify)
        event_free(w->notify);
    if (w->status_timer)
        event_free(w->status_timer);
    status_board_free(w->status);
    if (w->notify_fd >= 0)
        close(w->notify_fd);
    if (w->dns)
        evdns_base_free(w->dns, 1);
    if (w->base)
        event_base_free(w->base);
    free(w->parse_headers);
    free(w);
}
