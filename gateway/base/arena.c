/*
 * arena: a chain of blocks with bump allocation. The first block lives in
 * the same malloc() as the struct arena, so a small exchange costs one
 * allocation. Later blocks double in size up to BLOCK_MAX; a request larger
 * than half the next block gets a block of its own, linked behind the
 * current one so the current block keeps serving small allocations.
 */
#include "base/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/thread_cache.h"

#define ALIGN alignof(max_align_t)
#define BLOCK_MIN 256
#define BLOCK_MAX (1024 * 1024)

struct block {
    struct block *next;
    alignas(max_align_t) char data[];
};

struct cleanup {
    struct cleanup *next;
    void (*fn)(void *arg);
    void *arg;
};

struct arena {
    char *ptr;                /* next free byte of the current block */
    char *end;                /* end of the current block */
    struct block *blocks;     /* extra blocks, newest first; the first block is inline */
    size_t next_size;         /* data size of the next regular block */
    size_t used;              /* bytes handed out */
    struct cleanup *cleanups; /* newest first, so arena_free runs them in reverse */
    size_t first_size;        /* size of the inline first block */
    alignas(max_align_t) char first[];
};

/*
 * Freed arenas are kept in the thread's cache (thread_cache.h) for the
 * next arena_new of the same size: an exchange per request would otherwise
 * cost a malloc and a free. Not under AddressSanitizer, so that
 * use-after-free of exchange memory is still caught in the sanitizer
 * builds.
 */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_CACHE 0
#else
#define ARENA_CACHE 1
#endif

static _Noreturn void out_of_memory(size_t n)
{
    log_error("arena: out of memory allocating %zu bytes", n);
    abort();
}

static size_t round_up(size_t n)
{
    if (n > SIZE_MAX - (ALIGN - 1))
        out_of_memory(n);
    return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

static struct block *block_new(size_t size)
{
    if (size > SIZE_MAX - sizeof(struct block))
        out_of_memory(size);
    struct block *b = malloc(sizeof(struct block) + size);
    if (!b)
        out_of_memory(size);
    return b;
}

struct arena *arena_new(size_t first_block)
{
    size_t size = round_up(first_block < BLOCK_MIN ? BLOCK_MIN : first_block);
    if (size > SIZE_MAX - sizeof(struct arena))
        out_of_memory(size);
    struct thread_cache *tc = thread_cache_self();
    struct arena *a = tc && tc->num_arenas ? tc->arenas[tc->num_arenas - 1] : NULL;
    if (a && a->first_size == size) {
        tc->num_arenas--;
    } else {
        a = malloc(sizeof(struct arena) + size);
        if (!a)
            out_of_memory(size);
    }
    a->first_size = size;
    a->ptr = a->first;
    a->end = a->first + size;
    a->blocks = NULL;
    a->next_size = size < BLOCK_MAX ? size * 2 : size;
    a->used = 0;
    a->cleanups = NULL;
    return a;
}

void arena_free(struct arena *a)
{
    if (!a)
        return;
    /* A cleanup may still read arena memory, so run them all first. */
    while (a->cleanups) {
        struct cleanup *c = a->cleanups;
        a->cleanups = c->next;
        c->fn(c->arg);
    }
    struct block *b = a->blocks;
    while (b) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
    struct thread_cache *tc = thread_cache_self();
    if (ARENA_CACHE && tc && tc->num_arenas < THREAD_CACHE_ARENAS) {
        tc->arenas[tc->num_arenas++] = a;
        return;
    }
    free(a);
}

void arena_cache_clear(struct thread_cache *tc)
{
    while (tc->num_arenas)
        free(tc->arenas[--tc->num_arenas]);
}

/* Slow path: the current block cannot hold `size` (already rounded) bytes. */
static void *alloc_slow(struct arena *a, size_t size)
{
    if (size > a->next_size / 2) {
        /* A big allocation gets its own block, linked behind the newest
         * block so the current block's free space is not wasted. */
        struct block *b = block_new(size);
        b->next = a->blocks;
        a->blocks = b;
        return b->data;
    }
    struct block *b = block_new(a->next_size);
    b->next = a->blocks;
    a->blocks = b;
    a->ptr = b->data + size;
    a->end = b->data + a->next_size;
    if (a->next_size < BLOCK_MAX)
        a->next_size *= 2;
    return b->data;
}

void *arena_alloc(struct arena *a, size_t n)
{
    size_t size = round_up(n);
    a->used += n;
    if ((size_t)(a->end - a->ptr) >= size) {
        void *p = a->ptr;
        a->ptr += size;
        return p;
    }
    return alloc_slow(a, size);
}

void *arena_calloc(struct arena *a, size_t n)
{
    void *p = arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t len)
{
    if (len == SIZE_MAX)
        out_of_memory(len);
    char *p = arena_alloc(a, len + 1);
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

struct slice arena_slice_dup(struct arena *a, struct slice s)
{
    return (struct slice){arena_strndup(a, s.base, s.len), s.len};
}

struct slice arena_concat(struct arena *a, const struct slice *parts, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].len > SIZE_MAX - 1 - total)
            out_of_memory(SIZE_MAX);
        total += parts[i].len;
    }
    char *p = arena_alloc(a, total + 1);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].len)
            memcpy(p + off, parts[i].base, parts[i].len);
        off += parts[i].len;
    }
    p[total] = '\0';
    return (struct slice){p, total};
}

void arena_cleanup_add(struct arena *a, void (*fn)(void *arg), void *arg)
{
    struct cleanup *c = arena_alloc(a, sizeof(*c));
    c->fn = fn;
    c->arg = arg;
    c->next = a->cleanups;
    a->cleanups = c;
}

size_t arena_used(const struct arena *a)
{
    return a->used;
}
