/*
 * config_int: what the files of the loader (the .c files of conf/) share and nothing
 * else includes: the allocation helpers of loading, a growable string, and
 * the builder of each section of the file.
 *
 * Memory: snapshot memory is small and allocated once per load; running out
 * of it means the machine is out of memory, not that the file is hostile, so
 * the x* helpers stop with a message like the arena does (STYLE rule 10).
 *
 * Every builder reads one section of the JSON tree into the snapshot's
 * structs, reports each problem at its JSON path through `err` and goes on,
 * leaving the structs whole (defaults where a value was wrong) so that
 * snapshot_free() may always run. Thread: the main thread, while loading.
 */
#ifndef SLUICE_CONFIG_INT_H
#define SLUICE_CONFIG_INT_H

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "conf/config.h"
#include "conf/config_error.h"

/* Aborts with a message: loading cannot go on without memory. */
void config_out_of_memory(void) __attribute__((noreturn));

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        config_out_of_memory();
    return p;
}

static inline void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        config_out_of_memory();
    return p;
}

static inline char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static inline char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

/* A growable byte buffer for building strings, always NUL-terminated once used. */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};

/* Appends s[0..n) and keeps the buffer NUL-terminated; aborts when out of memory. */
void buf_add(struct buf *b, const char *s, size_t n);

static inline void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static inline bool is_token(const char *s)
{
    return config_is_token(s, strlen(s));
}

static inline void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static inline void upper(char *s)
{
    for (; *s; s++)
        *s = (char)toupper((unsigned char)*s);
}

static inline bool has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* config_listen.c: "listen", at least one listener, no address twice. */
void config_build_listeners(struct config_error *err, struct snapshot *s, const json_t *v);

/* config_upstreams.c: "upstreams", named; v may be NULL. */
void config_build_upstreams(struct config_error *err, struct snapshot *s, const json_t *v);

/* config_routes.c: "routes"; runs after the upstreams, which routes name. */
void config_build_routes(struct config_error *err, struct snapshot *s, const json_t *v);

/*
 * config_filters.c: a "filters" array (global or a route's) into *out and
 * *count through each type's create(); v may be NULL. config_free_filters()
 * destroys the instances in reverse order and frees the array.
 */
void config_build_filters(struct config_error *err, const json_t *v, struct filter_instance **out,
                          size_t *count);
void config_free_filters(struct filter_instance *f, size_t n);

/* config_limits.c: "admin", "access_log", "limits" and "redis"; v may be NULL (defaults). */
void config_build_admin(struct config_error *err, struct admin_config *a, const json_t *v);
void config_build_access_log(struct config_error *err, struct access_log_config *l,
                             const json_t *v);
void config_build_limits(struct config_error *err, struct limits_config *l, const json_t *v);
void config_build_redis(struct config_error *err, struct redis_config *r, const json_t *v);

#endif
