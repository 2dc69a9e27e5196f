/*
 * test_blockpool: blocks in size classes with the thread's free lists
 * (nghttp2's allocator): reuse, the byte cap, realloc across classes and
 * to and from big blocks, alignment, frees in any order, and blocks freed
 * on a thread without a cache. LeakSanitizer checks that
 * blockpool_cache_clear frees what the lists hold.
 */
#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/blockpool.h"
#include "base/thread_cache.h"
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

static bool aligned(const void *p)
{
    return ((uintptr_t)p % alignof(max_align_t)) == 0;
}

static bool filled(const unsigned char *p, size_t n, unsigned char c)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != c)
            return false;
    return true;
}

/* The same calls with no cache registered: plain malloc underneath. */
static void test_without_cache(void)
{
    ok(thread_cache_self() == NULL, "no cache on this thread yet");
    unsigned char *p = blockpool_alloc(100);
    ok(p && aligned(p), "alloc");
    memset(p, 7, 100);
    blockpool_free(p);
    unsigned char *z = blockpool_calloc(10, 30);
    ok(z && filled(z, 300, 0), "calloc zeroes");
    blockpool_free(z);
    blockpool_free(NULL);
    unsigned char *r = blockpool_realloc(NULL, 50);
    ok(r != NULL, "realloc(NULL) allocates");
    ok(blockpool_realloc(r, 0) == NULL, "realloc to 0 frees");
}

static void test_reuse(struct thread_cache *tc)
{
    void *a = blockpool_alloc(200);
    void *b = blockpool_alloc(200);
    ok(a != b, "two blocks");
    blockpool_free(a);
    is_int(tc->block_bytes, 224, "the freed block is cached (200 + header, rounded to 32)");
    ok(blockpool_alloc(205) == a, "a block of the same class comes back");
    is_int(tc->block_bytes, 0);
    blockpool_free(b);
    void *c = blockpool_alloc(20);
    ok(c != b, "another class does not take it");
    blockpool_free(c);
    blockpool_free(a);
#if defined(__SANITIZE_ADDRESS__)
    ok(__asan_address_is_poisoned((char *)a + 8), "a cached block is poisoned");
#endif
    /* Big blocks bypass the lists. */
    size_t before = tc->block_bytes;
    void *big = blockpool_alloc(BLOCKPOOL_MAX_SMALL);
    ok(big && aligned(big), "big block");
    blockpool_free(big);
    is_int(tc->block_bytes, before, "big blocks are not cached");
    blockpool_cache_clear(tc);
    is_int(tc->block_bytes, 0);
}

static void test_cap(struct thread_cache *tc)
{
    enum { N = THREAD_CACHE_BLOCK_BYTES / 512 + 100 };
    static void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = blockpool_alloc(500);
    for (int i = 0; i < N; i++)
        blockpool_free(p[i]);
    ok(tc->block_bytes <= THREAD_CACHE_BLOCK_BYTES, "the cache stays within its cap");
    ok(tc->block_bytes > THREAD_CACHE_BLOCK_BYTES - 544,
       "... and fills up to it (544-byte blocks)");
    blockpool_cache_clear(tc);
    is_int(tc->block_bytes, 0);
}

static void test_realloc(void)
{
    /* small -> larger class -> same class -> big -> bigger -> small again */
    size_t sizes[] = {10, 300, 290, 2000, 70000, 40, 1};
    unsigned char *p = NULL;
    size_t have = 0;
    int bad = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        p = blockpool_realloc(p, n);
        if (!p || !aligned(p))
            bad++;
        size_t keep = have < n ? have : n;
        if (!filled(p, keep, (unsigned char)i))
            bad++;
        memset(p, (int)(i + 1), n);
        have = n;
    }
    is_int(bad, 0, "realloc keeps the content across classes and big blocks");
    blockpool_free(p);
}

/* nghttp2's pattern: many sizes, freed and reallocated in any order. */
static void test_random_order(void)
{
    enum { SLOTS = 300, ROUNDS = 20000 };
    static unsigned char *p[SLOTS];
    static size_t len[SLOTS];
    uint32_t seed = 12345;
    int bad = 0;
    for (int r = 0; r < ROUNDS; r++) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % SLOTS);
        size_t n = (seed >> 4) % 1500;
        unsigned char tag = (unsigned char)(i + 1);
        if (p[i] && !filled(p[i], len[i], tag))
            bad++;
        switch (seed >> 28) {
        case 0:
        case 1:
        case 2:
        case 3:
            blockpool_free(p[i]);
            p[i] = NULL;
            len[i] = 0;
            break;
        case 4:
        case 5:
        case 6:
            if (p[i]) {
                p[i] = blockpool_realloc(p[i], n + 1);
                size_t keep = len[i] < n + 1 ? len[i] : n + 1;
                if (!filled(p[i], keep, tag))
                    bad++;
                len[i] = n + 1;
                memset(p[i], tag, len[i]);
                break;
            }
            /* fall through */
        default:
            blockpool_free(p[i]);
            p[i] = (seed & 1) ? blockpool_calloc(1, n) : blockpool_alloc(n);
            if (!aligned(p[i]) || ((seed & 1) && !filled(p[i], n, 0)))
                bad++;
            len[i] = n;
            memset(p[i], tag, n);
            break;
        }
    }
    for (int i = 0; i < SLOTS; i++) {
        if (p[i] && !filled(p[i], len[i], (unsigned char)(i + 1)))
            bad++;
        blockpool_free(p[i]);
        p[i] = NULL;
    }
    is_int(bad, 0, "no block overlaps another or loses its content");
}

int main(void)
{
    test_without_cache();

    static struct thread_cache tc;
    thread_cache_set(&tc);
    test_reuse(&tc);
    test_cap(&tc);
    test_realloc();
    test_random_order();
    ok(tc.block_bytes > 0, "blocks are cached after use");

    /* A block made with the cache and freed on a thread without one goes to free(). */
    void *kept = blockpool_alloc(64);
    thread_cache_set(NULL);
    blockpool_free(kept);
    thread_cache_set(&tc);

    blockpool_cache_clear(&tc);
    is_int(tc.block_bytes, 0, "cleared");
    for (int i = 0; i < BLOCKPOOL_CLASSES; i++)
        if (tc.blocks[i])
            ok(false, "class %d still has blocks", i);
    thread_cache_set(NULL);

    test_without_cache();
    return test_done();
}
