#include "base/blockpool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/thread_cache.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* In front of every block; 16 bytes keep the payload aligned like malloc's. */
struct block {
    struct block *next; /* on a free list */
    uint32_t cls;       /* size class, or BIG */
    uint32_t pad;
};

_Static_assert(sizeof(struct block) == 16, "the header keeps malloc's alignment");

#define BIG UINT32_MAX

_Static_assert(BLOCKPOOL_CLASSES == THREAD_CACHE_BLOCK_CLASSES, "one free list per class");

static size_t class_size(uint32_t cls)
{
    return ((size_t)cls + 1) * 32;
}

static struct block *header(void *p)
{
    return (struct block *)((char *)p - sizeof(struct block));
}

static void *payload(struct block *b)
{
    return (char *)b + sizeof(struct block);
}

static void *out_of_memory(void)
{
    log_error("out of memory");
    abort();
}

void *blockpool_alloc(size_t n)
{
    if (n > SIZE_MAX - 64)
        return out_of_memory();
    size_t total = n + sizeof(struct block);
    struct block *b;
    if (total > BLOCKPOOL_MAX_SMALL) {
        b = malloc(total);
        if (!b)
            return out_of_memory();
        b->cls = BIG;
        return payload(b);
    }
    uint32_t cls = (uint32_t)((total - 1) / 32);
    struct thread_cache *tc = thread_cache_self();
    if (tc && tc->blocks[cls]) {
        b = tc->blocks[cls];
        UNPOISON(payload(b), class_size(cls) - sizeof(struct block));
        tc->blocks[cls] = b->next;
        tc->block_bytes -= class_size(cls);
    } else {
        b = malloc(class_size(cls));
        if (!b)
            return out_of_memory();
        b->cls = cls;
    }
    return payload(b);
}

void *blockpool_calloc(size_t nmemb, size_t size)
{
    if (size && nmemb > SIZE_MAX / size)
        return out_of_memory();
    void *p = blockpool_alloc(nmemb * size);
    memset(p, 0, nmemb * size);
    return p;
}

void blockpool_free(void *p)
{
    if (!p)
        return;
    struct block *b = header(p);
    struct thread_cache *tc = thread_cache_self();
    if (b->cls == BIG || !tc || tc->block_bytes + class_size(b->cls) > THREAD_CACHE_BLOCK_BYTES) {
        free(b);
        return;
    }
    b->next = tc->blocks[b->cls];
    tc->blocks[b->cls] = b;
    tc->block_bytes += class_size(b->cls);
    POISON(p, class_size(b->cls) - sizeof(struct block));
}

void *blockpool_realloc(void *p, size_t n)
{
    if (!p)
        return blockpool_alloc(n);
    if (n == 0) {
        blockpool_free(p);
        return NULL;
    }
    struct block *b = header(p);
    if (b->cls == BIG) {
        if (n + sizeof(struct block) > BLOCKPOOL_MAX_SMALL) {
            struct block *nb = realloc(b, n + sizeof(struct block));
            return nb ? payload(nb) : out_of_memory();
        }
    } else if (n + sizeof(struct block) <= class_size(b->cls)) {
        return p; /* still fits its class */
    }
    void *q = blockpool_alloc(n);
    size_t have = b->cls == BIG ? n : class_size(b->cls) - sizeof(struct block);
    memcpy(q, p, have < n ? have : n);
    blockpool_free(p);
    return q;
}

void *blockpool_mem_malloc(size_t n, void *user_data)
{
    return blockpool_alloc(n);
}

void blockpool_mem_free(void *p, void *user_data)
{
    blockpool_free(p);
}

void *blockpool_mem_calloc(size_t nmemb, size_t size, void *user_data)
{
    return blockpool_calloc(nmemb, size);
}

void *blockpool_mem_realloc(void *p, size_t n, void *user_data)
{
    return blockpool_realloc(p, n);
}

void blockpool_cache_clear(struct thread_cache *tc)
{
    for (int i = 0; i < BLOCKPOOL_CLASSES; i++) {
        while (tc->blocks[i]) {
            struct block *b = tc->blocks[i];
            UNPOISON(payload(b), class_size((uint32_t)i) - sizeof(struct block));
            tc->blocks[i] = b->next;
            free(b);
        }
    }
    tc->block_bytes = 0;
}
