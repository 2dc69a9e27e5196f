/*
 * blockpool: malloc-compatible blocks with per-thread free lists in size
 * classes, for libraries that allocate and free many small objects per
 * request in any order (nghttp2, through its nghttp2_mem hooks).
 *
 * Every block carries a 16-byte header with its size class. Blocks of up
 * to BLOCKPOOL_MAX_SMALL bytes (header included) fall into 32-byte
 * classes; freed, they go onto the calling thread's free list for their
 * class (thread_cache.h), up to THREAD_CACHE_BLOCK_BYTES in all, and the
 * next allocation of that class takes one back without calling malloc.
 * Bigger blocks, and every block on a thread without a registered cache,
 * come from malloc and go back to free directly. A block may be freed on
 * another thread than the one that allocated it.
 *
 * Owns: the cached blocks of each thread cache (blockpool_cache_clear
 * frees them). Promises: results aligned for any type; an allocation
 * failure aborts with a message like the arena (STYLE rule 10), except
 * that blockpool_realloc to 0 bytes frees and returns NULL.
 */
#ifndef SLUICE_BLOCKPOOL_H
#define SLUICE_BLOCKPOOL_H

#include <stddef.h>

struct thread_cache;

/* Largest block kept on the free lists, its 16-byte header included. */
#define BLOCKPOOL_MAX_SMALL 1024
#define BLOCKPOOL_CLASSES (BLOCKPOOL_MAX_SMALL / 32)

void *blockpool_alloc(size_t n);
void *blockpool_calloc(size_t nmemb, size_t size);
/* Like realloc(3): NULL `p` allocates; the content up to the smaller size is kept. */
void *blockpool_realloc(void *p, size_t n);
/* NULL ok. */
void blockpool_free(void *p);

/*
 * The same four with an unused user-data argument last, in the shape of
 * nghttp2_mem's hooks: {NULL, blockpool_mem_malloc, blockpool_mem_free,
 * blockpool_mem_calloc, blockpool_mem_realloc}.
 */
void *blockpool_mem_malloc(size_t n, void *user_data);
void blockpool_mem_free(void *p, void *user_data);
void *blockpool_mem_calloc(size_t nmemb, size_t size, void *user_data);
void *blockpool_mem_realloc(void *p, size_t n, void *user_data);

/* Frees the blocks cached in `tc`; its owner calls it before the cache goes away. */
void blockpool_cache_clear(struct thread_cache *tc);

#endif
