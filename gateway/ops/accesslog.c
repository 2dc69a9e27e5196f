#include "ops/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "base/log.h"

/* Queued bytes past which new lines are dropped (a stalled disk must not eat memory). */
#define QUEUE_MAX (8u << 20)

struct line {
    struct line *next;
    const char *path; /* where it goes: "-" or a file, owned by the snapshot: copied */
    size_t len;
    char text[];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static struct line *head, *tail;
static size_t queued;
static bool running, stopping;
static pthread_t writer;
static atomic_ulong dropped;

uint64_t accesslog_dropped(void)
{
    return atomic_load(&dropped);
}

/* The writer keeps one file open, reopening when the configured path changes. */
static int out_fd = -1;
static char out_path[4096];

static int target_fd(const char *path)
{
    if (strcmp(path, "-") == 0)
        return STDOUT_FILENO;
    if (out_fd >= 0 && strcmp(out_path, path) == 0)
        return out_fd;
    if (out_fd >= 0)
        close(out_fd);
    out_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    snprintf(out_path, sizeof out_path, "%s", path);
    if (out_fd < 0)
        log_error("access log %s: %s", path, strerror(errno));
    return out_fd;
}

static void *writer_main(void *arg)
{
    log_set_thread_name("access log");
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!head && !stopping)
            pthread_cond_wait(&wake, &lock);
        struct line *batch = head;
        head = tail = NULL;
        queued = 0;
        bool done = stopping && !batch;
        pthread_mutex_unlock(&lock);
        if (done)
            break;
        while (batch) {
            struct line *l = batch;
            batch = l->next;
            int fd = target_fd(l->path);
            if (fd >= 0) {
                ssize_t w = write(fd, l->text, l->len);
                (void)w;
            }
            free(l);
        }
        pthread_mutex_lock(&lock);
    }
    if (out_fd >= 0)
        close(out_fd);
    out_fd = -1;
    return NULL;
}

int accesslog_start(void)
{
    running = true;
    stopping = false;
    if (pthread_create(&writer, NULL, writer_main, NULL) != 0) {
        running = false;
        return -1;
    }
    return 0;
}

void accesslog_stop(void)
{
    if (!running)
        return;
    pthread_mutex_lock(&lock);
    stopping = true;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    pthread_join(writer, NULL);
    running = false;
}

/* Appends `s` as a JSON string body (no quotes). */
static void put_json(char **p, char *end, struct slice s)
{
    for (size_t i = 0; i < s.len && *p < end - 7; i++) {
        unsigned char c = (unsigned char)s.base[i];
        if (c == '"' || c == '\\') {
            *(*p)++ = '\\';
            *(*p)++ = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            *p += snprintf(*p, 7, "\\u%04x", c);
        } else {
            *(*p)++ = (char)c;
        }
    }
}

static void put(char **p, char *end, const char *s)
{
    size_t n = strlen(s);
    if (n > (size_t)(end - *p))
        n = (size_t)(end - *p);
    memcpy(*p, s, n);
    *p += n;
}

/* Appends `name` then the number `v`. */
static void putnum(char **p, char *end, const char *name, long long v)
{
    put(p, end, name);
    int n = snprintf(*p, (size_t)(end - *p), "%lld", v);
    if (n > 0)
        *p += n < end - *p ? n : end - *p;
}

static const char *protocol_name(const struct exchange *x)
{
    switch (x->protocol) {
    case XPROTO_HTTP10:
        return "HTTP/1.0";
    case XPROTO_HTTP11:
        return "HTTP/1.1";
    case XPROTO_HTTP2:
        return "HTTP/2";
    }
    return "HTTP/1.1";
}

void accesslog_write(const struct exchange *x)
{
    const struct access_log_config *cfg = &x->snapshot->access_log;
    if (cfg->off || !running || !cfg->path)
        return;
    char buf[8192];
    char *p = buf, *end = buf + sizeof buf - 2;
    struct timespec now = clock_real();
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    int64_t dur_us = clock_mono_us() - x->start_us;
    if (cfg->format == ACCESS_LOG_COMBINED) {
        static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        char ts[64];
        snprintf(ts, sizeof ts, "%02d/%s/%04d:%02d:%02d:%02d +0000", tm.tm_mday, mon[tm.tm_mon],
                 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        const struct slice *ref = header_get(&x->req_headers, SLICE_LIT("Referer"));
        const struct slice *ua = header_get(&x->req_headers, SLICE_LIT("User-Agent"));
        int n = snprintf(buf, sizeof buf - 1,
                         "%s - %.*s [%s] \"%.*s %.*s %s\" %d %llu \"%.*s\" \"%.*s\"\n",
                         x->remote_addr, (int)(x->consumer.len ? x->consumer.len : 1),
                         x->consumer.len ? x->consumer.base : "-", ts, (int)x->method.len,
                         x->method.base ? x->method.base : "", (int)x->target.len,
                         x->target.base ? x->target.base : "", protocol_name(x), x->status,
                         (unsigned long long)x->bytes_out, ref ? (int)ref->len : 1,
                         ref ? ref->base : "-", ua ? (int)ua->len : 1, ua ? ua->base : "-");
        p = buf + (n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 2);
        if (p[-1] != '\n')
            *p++ = '\n';
    } else {
        char ts[64];
        snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 now.tv_nsec / 1000000);
        put(&p, end, "{\"time\":\"");
        put(&p, end, ts);
        put(&p, end, "\",\"request_id\":\"");
        put_json(&p, end, x->request_id);
        put(&p, end, "\",\"remote_addr\":\"");
        put(&p, end, x->remote_addr);
        put(&p, end, "\"");
        if (x->method.len) {
            put(&p, end, ",\"method\":\"");
            put_json(&p, end, x->method);
            put(&p, end, "\"");
        }
        if (x->host.len) {
            put(&p, end, ",\"host\":\"");
            put_json(&p, end, x->host);
            put(&p, end, "\"");
        }
        if (x->path.len) {
            put(&p, end, ",\"path\":\"");
            put_json(&p, end, x->path);
            put(&p, end, "\"");
        }
        put(&p, end, ",\"protocol\":\"");
        put(&p, end, protocol_name(x));
        put(&p, end, "\"");
        putnum(&p, end, ",\"status\":", x->status);
        putnum(&p, end, ",\"bytes_in\":", (long long)x->bytes_in);
        putnum(&p, end, ",\"bytes_out\":", (long long)x->bytes_out);
        putnum(&p, end, ",\"duration_ms\":", (long long)(dur_us / 1000));
        if (x->upstream_name) {
            put(&p, end, ",\"upstream\":{\"name\":\"");
            put_json(&p, end, slice_cstr(x->upstream_name));
            put(&p, end, "\"");
            if (x->upstream_target) {
                put(&p, end, ",\"target\":\"");
                put(&p, end, x->upstream_target);
                put(&p, end, "\"");
            }
            put(&p, end, "}");
        }
        if (x->upstream_start_us && x->upstream_head_us)
            putnum(&p, end, ",\"upstream_ms\":",
                   (long long)((x->upstream_head_us - x->upstream_start_us) / 1000));
        if (x->route) {
            put(&p, end, ",\"route\":\"");
            put_json(&p, end, slice_cstr(x->route->name));
            put(&p, end, "\"");
        }
        if (x->consumer.len) {
            put(&p, end, ",\"consumer\":\"");
            put_json(&p, end, x->consumer);
            put(&p, end, "\"");
        }
        if (x->client_subject.len) {
            put(&p, end, ",\"client_subject\":\"");
            put_json(&p, end, x->client_subject);
            put(&p, end, "\"");
        }
        if (x->error) {
            put(&p, end, ",\"error\":\"");
            put(&p, end, x->error);
            put(&p, end, "\"");
        }
        put(&p, end, "}\n");
    }
    size_t len = (size_t)(p - buf);
    size_t plen = strlen(cfg->path) + 1;
    struct line *l = malloc(sizeof *l + len + plen);
    if (!l) {
        atomic_fetch_add(&dropped, 1);
        return;
    }
    memcpy(l->text, buf, len);
    memcpy(l->text + len, cfg->path, plen);
    l->path = l->text + len;
    l->len = len;
    l->next = NULL;
    pthread_mutex_lock(&lock);
    if (queued + len > QUEUE_MAX) {
        pthread_mutex_unlock(&lock);
        free(l);
        atomic_fetch_add(&dropped, 1);
        return;
    }
    if (tail)
        tail->next = l;
    else
        head = l;
    tail = l;
    queued += len;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
}
