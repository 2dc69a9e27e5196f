/*
 * thread_cache: the per-thread caches of a worker in one struct
 * (ARCHITECTURE "Memory: four lifetimes"): spare arenas (arena.c), small
 * blocks (blockpool.c),
 * spare evbuffers (net/conn.c), spare splice pipes (net/splice.c) and the
 * worker's metrics table (ops/metrics.c) and access log ring
 * (ops/accesslog.c). The worker embeds one,
 * registers it for its thread when its loop starts and empties it when the loop ends; the modules
 * reach it through thread_cache_self() without knowing about workers (they sit in lower layers). A
 * thread without a registered cache (the main thread, a unit test's thread) caches nothing: every
 * object is allocated and freed directly.
 *
 * Adding a cache for a module: add its fields below (plain arrays and
 * counters, no allocation of their own), read them through
 * thread_cache_self() (NULL: no cache), and give the module a
 * <module>_cache_clear(struct thread_cache *) that frees what the fields
 * hold; the worker calls it when its loop ends (core/worker.c, next to
 * arena_cache_clear). The struct lives inside struct worker, so the hot
 * path pays one thread-local load and no allocation.
 *
 * Owns: nothing by itself; each module frees its own fields. Thread: a
 * cache is used only by the thread it is registered for.
 */
#ifndef SLUICE_THREAD_CACHE_H
#define SLUICE_THREAD_CACHE_H

#include <stddef.h>

struct accesslog_ring;
struct arena;
struct block;
struct evbuffer;
struct metrics_table;

/* Spare arenas: enough for a busy HTTP/2 connection's streams; 256 KiB at most. */
#define THREAD_CACHE_ARENAS 64
/* Spare evbuffers lent by idle connections (conn_release_buffers). */
#define THREAD_CACHE_BUFFERS 128
/* Empty 1 MiB splice pipes kept for the next large body or tunnel. */
#define THREAD_CACHE_PIPES 4
/* Small blocks (base/blockpool.c, nghttp2's allocations): 32-byte classes up to 1 KiB. */
#define THREAD_CACHE_BLOCK_CLASSES 32
/* ... and at most this many bytes of them cached in all. */
#define THREAD_CACHE_BLOCK_BYTES (256 * 1024)

struct thread_cache {
    /* base/arena.c: freed arenas kept for the next arena_new of the same size. */
    struct arena *arenas[THREAD_CACHE_ARENAS];
    int num_arenas;
    /* net/conn.c: empty evbuffers of idle keep-alive connections. */
    struct evbuffer *buffers[THREAD_CACHE_BUFFERS];
    int num_buffers;
    /* net/splice.c: empty pipes (read end, write end). */
    int pipes[THREAD_CACHE_PIPES][2];
    int num_pipes;
    /* base/blockpool.c: a free list of blocks for each size class. */
    struct block *blocks[THREAD_CACHE_BLOCK_CLASSES];
    size_t block_bytes;
    /* ops/metrics.c: this worker's counters (owned by the metrics module, which scrapes them). */
    struct metrics_table *metrics;
    /* ops/accesslog.c: this worker's ring of log lines (owned by the access log module). */
    struct accesslog_ring *accesslog;
};

/* The cache registered for the calling thread (NULL: none); see thread_cache_self(). */
extern _Thread_local struct thread_cache *thread_cache_registered;

/*
 * Registers `tc` (embedded in its owner, zeroed) as the calling thread's
 * cache, or unregisters with NULL. The caller empties it (the modules'
 * *_cache_clear functions) before it goes away.
 */
void thread_cache_set(struct thread_cache *tc);

/* The calling thread's cache, or NULL when none is registered. */
static inline struct thread_cache *thread_cache_self(void)
{
    return thread_cache_registered;
}

#endif
