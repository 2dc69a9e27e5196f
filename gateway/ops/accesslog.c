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
#include "base/json_writer.h"
#include "base/log.h"
#include "conf/config.h"
#include "ops/record.h"

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

/* Appends ,"name":"value" (the name is trusted syntax). */
static void put_string(struct json_writer *w, const char *name, struct slice value)
{
    json_writer_raw_cstr(w, name);
    json_writer_string(w, value);
}

/* Appends ,"name":number. */
static void put_number(struct json_writer *w, const char *name, long long v)
{
    json_writer_raw_cstr(w, name);
    json_writer_int(w, v);
}

/* Formats the combined line into buf; returns its length (newline included). */
static size_t format_combined(const struct ops_record *r, const struct tm *tm, char *buf,
                              size_t cap)
{
    static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char ts[64];
    snprintf(ts, sizeof ts, "%02d/%s/%04d:%02d:%02d:%02d +0000", tm->tm_mday, mon[tm->tm_mon],
             tm->tm_year + 1900, tm->tm_hour, tm->tm_min, tm->tm_sec);
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
static size_t format_json(const struct ops_record *r, const struct tm *tm, long msec, char *buf,
                          size_t cap)
{
    struct json_writer w;
    json_writer_init_buffer(&w, buf, cap);
    char ts[64];
    int n = snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm->tm_year + 1900,
                     tm->tm_mon + 1, tm->tm_mday, tm->tm_hour, tm->tm_min, tm->tm_sec, msec);
    put_string(&w, "{\"time\":", slice_make(ts, (size_t)n));
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
    return !cfg->off && running && cfg->path;
}

void accesslog_write(const struct ops_record *r)
{
    const struct access_log_config *cfg = r->log;
    if (!accesslog_enabled(cfg))
        return;
    char buf[8192];
    struct timespec now = clock_real();
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t len = cfg->format == ACCESS_LOG_COMBINED
                     ? format_combined(r, &tm, buf, sizeof buf)
                     : format_json(r, &tm, now.tv_nsec / 1000000, buf, sizeof buf);
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
