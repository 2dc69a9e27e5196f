#include "ops/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/json_writer.h"
#include "base/log.h"
#include "base/thread_cache.h"
#include "conf/config.h"
#include "ops/record.h"

/*
 * The rings. A ring is a single-producer single-consumer byte queue: the
 * worker (producer) owns `head` and its `dropped` counter, the writer
 * thread (consumer) owns `tail`. The producer reads `tail` (acquire) to
 * know the free room, writes a record past `head` and publishes it with a
 * release store of `head`; the consumer reads `head` (acquire), writes the
 * records out straight from the ring (writev) and only then gives the room
 * back with a release store of `tail`. Positions only grow; the offset in
 * the ring is the position modulo its size.
 *
 * A record is a header (text length, interned path) and the line's text,
 * padded to 8 bytes; a record never wraps: when it does not fit before the
 * end, the producer writes a WRAP header (or leaves fewer than a header's
 * bytes) and starts at offset 0.
 *
 * Waking the writer: while lines flow it naps BATCH_MS between batches, so
 * producers never make a system call. After IDLE_MS without a line it
 * sleeps on an eventfd and sets `sleeping`; the first producer that then
 * sees `sleeping` (after a fence that orders its publish before the check)
 * clears it and writes the eventfd once.
 */

#define RING_BYTES (1u << 20)
#define WRAP UINT32_MAX
#define BATCH_MS 10
#define IDLE_MS 1000
#define LINE_MAX_BYTES 8192
/* How long a stopping writer keeps trying a pipe that does not drain. */
#define STOP_GRACE_MS 2000

struct record {
    uint32_t len; /* the text's bytes, or WRAP */
    uint32_t unused;
    const char *path; /* interned: "-" or a file */
};

/*
 * The current second formatted both ways, remade when the second changes:
 * gmtime_r takes glibc's time zone lock, and snprintf costs more than the
 * rest of a line.
 */
struct log_clock {
    time_t sec;
    char iso[24]; /* "2026-01-31T12:00:00." */
    size_t iso_len;
    char common[32]; /* "31/Jan/2026:12:00:00 +0000" */
};

static void log_clock_update(struct log_clock *c, time_t sec)
{
    static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (c->iso_len && c->sec == sec)
        return;
    struct tm tm;
    gmtime_r(&sec, &tm);
    int n = snprintf(c->iso, sizeof c->iso, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    c->iso_len = n > 0 && (size_t)n < sizeof c->iso ? (size_t)n : 0;
    snprintf(c->common, sizeof c->common, "%02d/%s/%04d:%02d:%02d:%02d +0000", tm.tm_mday,
             mon[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    c->sec = sec;
}

struct accesslog_ring {
    struct accesslog_ring *next; /* the list of rings (rings_lock) */
    bool shared;                 /* several producing threads: they take `producers` */
    pthread_mutex_t producers;
    _Atomic uint64_t head;    /* producer */
    _Atomic uint64_t tail;    /* consumer */
    _Atomic uint64_t dropped; /* producer: lines that did not fit */
    const char *path_key;     /* producer: the config's path pointer last seen ... */
    const char *path;         /* ... and its interned copy */
    struct log_clock clock;   /* producer: the current second, formatted */
    _Alignas(8) unsigned char data[RING_BYTES];
};

static pthread_mutex_t rings_lock = PTHREAD_MUTEX_INITIALIZER;
static struct accesslog_ring *rings;
static struct accesslog_ring *shared_ring; /* threads without a thread cache */

/* Interned log paths (kept until stop: records point at them). */
struct path_name {
    struct path_name *next;
    char name[];
};
static struct path_name *paths; /* under rings_lock */

static atomic_bool running;
static atomic_bool stopping;
static atomic_bool reopen_requested;
static atomic_bool sleeping;
static int wake_fd = -1;
static pthread_t writer;
static _Atomic uint64_t write_dropped; /* the writer's own: lines it could not write */

/* The single writer's increment (see ops/metrics.c): no read-modify-write. */
static inline void counter_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

uint64_t accesslog_dropped(void)
{
    uint64_t n = atomic_load_explicit(&write_dropped, memory_order_relaxed);
    pthread_mutex_lock(&rings_lock);
    for (struct accesslog_ring *r = rings; r; r = r->next)
        n += atomic_load_explicit(&r->dropped, memory_order_relaxed);
    pthread_mutex_unlock(&rings_lock);
    return n;
}

static void wake_writer(void)
{
    uint64_t one = 1;
    ssize_t w = write(wake_fd, &one, sizeof one);
    (void)w;
}

static size_t record_size(size_t len)
{
    return sizeof(struct record) + ((len + 7) & ~(size_t)7);
}

/* ---- the writer thread ----------------------------------------------------------- */

/* The writer keeps one file open, reopening when the path changes or on SIGUSR1. */
static int out_fd = -1;
static const char *out_path; /* interned; NULL before the first line */
static int open_errno;       /* the last open failure reported, to say it once */

static int target_fd(const char *path)
{
    if (strcmp(path, "-") == 0)
        return STDOUT_FILENO;
    if (out_fd >= 0 && out_path == path)
        return out_fd;
    if (out_fd >= 0)
        close(out_fd);
    out_path = path;
    /* Non-blocking: a FIFO without a reader fails at once instead of hanging the writer. */
    out_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
    if (out_fd < 0 && errno != open_errno)
        log_error("access log %s: %s", path, strerror(errno));
    open_errno = out_fd < 0 ? errno : 0;
    return out_fd;
}

/* Waits for `fd` to take more bytes; false when the writer should give up. */
static bool wait_writable(int fd, int64_t give_up_ms)
{
    for (;;) {
        if (atomic_load(&reopen_requested))
            return false;
        if (atomic_load(&stopping) && clock_mono_ms() >= give_up_ms)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int r = poll(&p, 1, 100);
        if (r > 0)
            return !(p.revents & (POLLERR | POLLNVAL));
        if (r < 0 && errno != EINTR)
            return false;
    }
}

/* Writes the lines in iov[0..n) to `path`; counts those not written in full as dropped. */
static void write_lines(const char *path, struct iovec *iov, int n, int64_t give_up_ms)
{
    int fd = target_fd(path);
    int i = 0;
    while (fd >= 0 && i < n) {
        ssize_t w = writev(fd, iov + i, n - i);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            if (!wait_writable(fd, give_up_ms))
                break;
            continue;
        }
        if (w < 0)
            break;
        while (i < n && (size_t)w >= iov[i].iov_len)
            w -= (ssize_t)iov[i++].iov_len;
        if (i < n) {
            iov[i].iov_base = (char *)iov[i].iov_base + w;
            iov[i].iov_len -= (size_t)w;
        }
    }
    if (i < n)
        counter_add(&write_dropped, (uint64_t)(n - i));
}

#define BATCH_LINES 256

/* Writes out what `r` holds; returns the number of lines. */
static size_t drain_ring(struct accesslog_ring *r, int64_t give_up_ms)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    struct iovec iov[BATCH_LINES];
    int n = 0;
    const char *path = NULL;
    size_t lines = 0;
    while (tail < head) {
        size_t off = (size_t)(tail % RING_BYTES);
        size_t to_end = RING_BYTES - off;
        const struct record *rec = (const struct record *)(r->data + off);
        if (to_end < sizeof *rec || rec->len == WRAP) {
            tail += to_end;
            continue;
        }
        if (n == BATCH_LINES || (n && rec->path != path)) {
            write_lines(path, iov, n, give_up_ms);
            atomic_store_explicit(&r->tail, tail, memory_order_release);
            n = 0;
        }
        path = rec->path;
        iov[n].iov_base = (void *)(rec + 1);
        iov[n].iov_len = rec->len;
        n++;
        lines++;
        tail += record_size(rec->len);
    }
    if (n)
        write_lines(path, iov, n, give_up_ms);
    atomic_store_explicit(&r->tail, tail, memory_order_release);
    return lines;
}

static size_t drain_all(int64_t give_up_ms)
{
    size_t lines = 0;
    pthread_mutex_lock(&rings_lock);
    struct accesslog_ring *list =
        rings; /* rings are only added at the front and freed after the writer */
    pthread_mutex_unlock(&rings_lock);
    for (struct accesslog_ring *r = list; r; r = r->next)
        lines += drain_ring(r, give_up_ms);
    return lines;
}

static bool rings_empty(void)
{
    pthread_mutex_lock(&rings_lock);
    struct accesslog_ring *list = rings;
    pthread_mutex_unlock(&rings_lock);
    for (struct accesslog_ring *r = list; r; r = r->next)
        if (atomic_load(&r->head) != atomic_load(&r->tail))
            return false;
    return true;
}

/* Sleeps up to `ms` (-1: until woken) or until a wake-up; clears the eventfd. */
static void nap(int ms)
{
    struct pollfd p = {.fd = wake_fd, .events = POLLIN};
    if (poll(&p, 1, ms) > 0) {
        uint64_t v;
        ssize_t n = read(wake_fd, &v, sizeof v);
        (void)n;
    }
}

static void reopen_now(void)
{
    if (out_fd >= 0)
        close(out_fd);
    out_fd = -1;
    open_errno = 0;
    if (out_path)
        target_fd(out_path); /* the new file appears at once, as logrotate expects */
}

static void *writer_main(void *arg)
{
    (void)arg;
    log_set_thread_name("access log");
    int idle_ms = 0;
    int64_t give_up_ms = INT64_MAX;
    for (;;) {
        if (atomic_exchange(&reopen_requested, false))
            reopen_now();
        bool stop = atomic_load(&stopping);
        if (stop && give_up_ms == INT64_MAX)
            give_up_ms = clock_mono_ms() + STOP_GRACE_MS;
        size_t lines = drain_all(give_up_ms);
        if (stop && (rings_empty() || clock_mono_ms() >= give_up_ms))
            break;
        if (lines || idle_ms < IDLE_MS) {
            idle_ms = lines ? 0 : idle_ms + BATCH_MS;
            nap(BATCH_MS);
            continue;
        }
        /* Deep sleep: a producer that publishes after the fence sees `sleeping` and wakes us. */
        atomic_store(&sleeping, true);
        atomic_thread_fence(memory_order_seq_cst);
        if (rings_empty() && !atomic_load(&stopping) && !atomic_load(&reopen_requested))
            nap(-1);
        atomic_store(&sleeping, false);
        idle_ms = 0;
    }
    if (out_fd >= 0)
        close(out_fd);
    out_fd = -1;
    out_path = NULL;
    return NULL;
}

int accesslog_start(void)
{
    wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0)
        return -1;
    atomic_store(&stopping, false);
    atomic_store(&running, true);
    if (pthread_create(&writer, NULL, writer_main, NULL) != 0) {
        atomic_store(&running, false);
        close(wake_fd);
        wake_fd = -1;
        return -1;
    }
    return 0;
}

void accesslog_reopen(void)
{
    if (!atomic_load(&running))
        return;
    atomic_store(&reopen_requested, true);
    wake_writer();
}

void accesslog_stop(void)
{
    if (!atomic_load(&running))
        return;
    atomic_store(&stopping, true);
    wake_writer();
    struct timespec until = clock_real();
    until.tv_sec += STOP_GRACE_MS / 1000 + 2;
    if (pthread_timedjoin_np(writer, NULL, &until) != 0) {
        /* Stuck in a write to stdout: leave it (and the rings it reads) to the exit. */
        log_warn("access log: the writer is stuck writing; %llu lines dropped",
                 (unsigned long long)accesslog_dropped());
        return;
    }
    atomic_store(&running, false);
    close(wake_fd);
    wake_fd = -1;
    pthread_mutex_lock(&rings_lock);
    while (rings) {
        struct accesslog_ring *r = rings;
        rings = r->next;
        if (r->shared)
            pthread_mutex_destroy(&r->producers);
        free(r);
    }
    shared_ring = NULL;
    while (paths) {
        struct path_name *p = paths;
        paths = p->next;
        free(p);
    }
    pthread_mutex_unlock(&rings_lock);
}

/* ---- the producers ------------------------------------------------------------------ */

static struct accesslog_ring *ring_new(bool is_shared)
{
    struct accesslog_ring *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    memset(r, 0, offsetof(struct accesslog_ring, data));
    r->shared = is_shared;
    if (is_shared)
        pthread_mutex_init(&r->producers, NULL);
    r->next = rings;
    rings = r;
    return r;
}

/* The calling thread's ring, made on its first line (the only time a worker takes a lock). */
static struct accesslog_ring *ring_self(void)
{
    struct thread_cache *tc = thread_cache_self();
    if (tc && tc->accesslog)
        return tc->accesslog;
    pthread_mutex_lock(&rings_lock);
    struct accesslog_ring *r =
        tc ? ring_new(false) : (shared_ring ? shared_ring : (shared_ring = ring_new(true)));
    pthread_mutex_unlock(&rings_lock);
    if (tc)
        tc->accesslog = r;
    return r;
}

void accesslog_cache_clear(struct thread_cache *tc)
{
    tc->accesslog = NULL;
}

/* The interned copy of a configured path (a lock only when the configuration changed). */
static const char *ring_path(struct accesslog_ring *r, const char *path)
{
    if (r->path_key == path)
        return r->path;
    pthread_mutex_lock(&rings_lock);
    struct path_name *p = paths;
    while (p && strcmp(p->name, path) != 0)
        p = p->next;
    if (!p) {
        size_t n = strlen(path) + 1;
        p = malloc(sizeof *p + n);
        if (p) {
            memcpy(p->name, path, n);
            p->next = paths;
            paths = p;
        }
    }
    pthread_mutex_unlock(&rings_lock);
    if (!p)
        return NULL;
    r->path_key = path;
    r->path = p->name;
    return r->path;
}

/* Copies the line into the ring, or counts it dropped when there is no room. */
static void ring_put(struct accesslog_ring *r, const char *path, const char *text, size_t len)
{
    size_t need = record_size(len);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    size_t off = (size_t)(head % RING_BYTES);
    size_t to_end = RING_BYTES - off;
    size_t skip = to_end < need ? to_end : 0;
    if (!path || head + skip + need - tail > RING_BYTES) {
        counter_add(&r->dropped, 1);
        return;
    }
    if (skip) {
        if (to_end >= sizeof(struct record))
            ((struct record *)(r->data + off))->len = WRAP;
        head += skip;
        off = 0;
    }
    struct record *rec = (struct record *)(r->data + off);
    rec->len = (uint32_t)len;
    rec->path = path;
    memcpy(rec + 1, text, len);
    atomic_store_explicit(&r->head, head + need, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&sleeping, memory_order_relaxed) && atomic_exchange(&sleeping, false))
        wake_writer();
}

/* Appends ,"name":"value" (the name is trusted syntax). */
static void put_string(struct json_writer *w, const char *name, struct slice value)
{
    json_writer_raw(w, name, strlen(name)); /* inlined: a constant */
    json_writer_string(w, value);
}

/* Appends ,"name":number. */
static void put_number(struct json_writer *w, const char *name, long long v)
{
    json_writer_raw(w, name, strlen(name)); /* inlined: a constant */
    json_writer_int(w, v);
}

/* Formats the combined line into buf; returns its length (newline included). */
static size_t format_combined(const struct ops_record *r, const struct log_clock *clock, char *buf,
                              size_t cap)
{
    const char *ts = clock->common;
    const struct slice *ref = header_get(r->req_headers, SLICE_LIT("Referer"));
    const struct slice *ua = header_get(r->req_headers, SLICE_LIT("User-Agent"));
    int n = snprintf(buf, cap - 1, "%s - %.*s [%s] \"%.*s %.*s %s\" %d %llu \"%.*s\" \"%.*s\"\n",
                     r->remote_addr, (int)(r->consumer.len ? r->consumer.len : 1),
                     r->consumer.len ? r->consumer.base : "-", ts, (int)r->method.len,
                     r->method.base ? r->method.base : "", (int)r->target.len,
                     r->target.base ? r->target.base : "", r->protocol, r->status,
                     (unsigned long long)r->bytes_out, ref ? (int)ref->len : 1,
                     ref ? ref->base : "-", ua ? (int)ua->len : 1, ua ? ua->base : "-");
    char *p = buf + (n < (int)cap - 1 ? n : (int)cap - 2);
    if (p[-1] != '\n')
        *p++ = '\n';
    return (size_t)(p - buf);
}

/* Formats the JSON line (SPEC 6) into buf; returns its length (newline included). */
static size_t format_json(const struct ops_record *r, const struct log_clock *clock, long msec,
                          char *buf, size_t cap)
{
    struct json_writer w;
    json_writer_init_buffer(&w, buf, cap);
    char ts[32];
    size_t n = clock->iso_len;
    memcpy(ts, clock->iso, n);
    ts[n++] = (char)('0' + msec / 100);
    ts[n++] = (char)('0' + msec / 10 % 10);
    ts[n++] = (char)('0' + msec % 10);
    ts[n++] = 'Z';
    put_string(&w, "{\"time\":", slice_make(ts, n));
    put_string(&w, ",\"request_id\":", r->request_id);
    put_string(&w, ",\"remote_addr\":", slice_cstr(r->remote_addr));
    if (r->method.len)
        put_string(&w, ",\"method\":", r->method);
    if (r->host.len)
        put_string(&w, ",\"host\":", r->host);
    if (r->path.len)
        put_string(&w, ",\"path\":", r->path);
    put_string(&w, ",\"protocol\":", slice_cstr(r->protocol));
    put_number(&w, ",\"status\":", r->status);
    put_number(&w, ",\"bytes_in\":", (long long)r->bytes_in);
    put_number(&w, ",\"bytes_out\":", (long long)r->bytes_out);
    put_number(&w, ",\"duration_ms\":", (long long)((r->end_us - r->start_us) / 1000));
    if (r->upstream_name) {
        put_string(&w, ",\"upstream\":{\"name\":", slice_cstr(r->upstream_name));
        if (r->upstream_target)
            put_string(&w, ",\"target\":", slice_cstr(r->upstream_target));
        json_writer_raw(&w, "}", 1);
    }
    if (r->upstream_start_us && r->upstream_head_us)
        put_number(&w, ",\"upstream_ms\":",
                   (long long)((r->upstream_head_us - r->upstream_start_us) / 1000));
    if (r->route)
        put_string(&w, ",\"route\":", slice_cstr(r->route));
    if (r->consumer.len)
        put_string(&w, ",\"consumer\":", r->consumer);
    if (r->client_subject.len)
        put_string(&w, ",\"client_subject\":", r->client_subject);
    if (r->error)
        put_string(&w, ",\"error\":", slice_cstr(r->error));
    if (r->close_reason)
        put_string(&w, ",\"close_reason\":", slice_cstr(r->close_reason));
    json_writer_raw(&w, "}\n", 2);
    return json_writer_length(&w, buf);
}

bool accesslog_enabled(const struct access_log_config *cfg)
{
    return !cfg->off && cfg->path && atomic_load_explicit(&running, memory_order_relaxed);
}

void accesslog_write(const struct ops_record *r)
{
    const struct access_log_config *cfg = r->log;
    if (!accesslog_enabled(cfg))
        return;
    struct accesslog_ring *ring = ring_self();
    if (!ring)
        return;
    if (ring->shared)
        pthread_mutex_lock(&ring->producers);
    char buf[LINE_MAX_BYTES];
    struct timespec now = clock_real();
    log_clock_update(&ring->clock, now.tv_sec);
    size_t len = cfg->format == ACCESS_LOG_COMBINED
                     ? format_combined(r, &ring->clock, buf, sizeof buf)
                     : format_json(r, &ring->clock, now.tv_nsec / 1000000, buf, sizeof buf);
    ring_put(ring, ring_path(ring, cfg->path), buf, len);
    if (ring->shared)
        pthread_mutex_unlock(&ring->producers);
}
