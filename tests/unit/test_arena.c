/*
 * test_arena: bump allocation across blocks, alignment, big allocations,
 * the copy helpers and the cleanup order.
 */
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/arena.h"
#include "test.h"

static bool aligned(const void *p)
{
    return ((uintptr_t)p % alignof(max_align_t)) == 0;
}

static void test_many_allocations(void)
{
    struct arena *a = arena_new(512);
    ok(a != NULL, "arena_new");
    is_int(arena_used(a), 0);

    /* Fill many small pieces with a pattern, then check none overlap. */
    enum { COUNT = 5000 };
    static unsigned char *ptrs[COUNT];
    static size_t sizes[COUNT];
    size_t total = 0;
    int misaligned = 0;
    for (size_t i = 0; i < COUNT; i++) {
        sizes[i] = (i * 7919) % 97;
        ptrs[i] = arena_alloc(a, sizes[i]);
        if (!ptrs[i] || !aligned(ptrs[i]))
            misaligned++;
        memset(ptrs[i], (int)(i & 0xff), sizes[i]);
        total += sizes[i];
    }
    is_int(misaligned, 0, "all aligned and non-NULL");
    int corrupt = 0;
    for (size_t i = 0; i < COUNT; i++) {
        for (size_t j = 0; j < sizes[i]; j++) {
            if (ptrs[i][j] != (unsigned char)(i & 0xff))
                corrupt++;
        }
    }
    is_int(corrupt, 0, "no overlap");
    is_int(arena_used(a), total);
    arena_free(a);
}

static void test_alignment(void)
{
    struct arena *a = arena_new(0);
    int bad = 0;
    for (size_t n = 0; n < 300; n++) {
        void *p = arena_alloc(a, n);
        if (!p || !aligned(p))
            bad++;
        long double *ld = arena_alloc(a, sizeof(long double));
        *ld = (long double)n;
        if (!aligned(ld))
            bad++;
    }
    is_int(bad, 0, "alignment for every size");
    arena_free(a);
}

static void test_big(void)
{
    struct arena *a = arena_new(256);
    char *small1 = arena_alloc(a, 16);
    char *big = arena_alloc(a, 1 << 20);
    ok(big != NULL && aligned(big), "big allocation");
    memset(big, 'x', 1 << 20);
    char *small2 = arena_alloc(a, 16);
    /* The big block does not displace the current block. */
    ok(small2 == small1 + 16, "small allocations continue in the first block");
    char *huge = arena_calloc(a, 5u << 20);
    int nonzero = 0;
    for (size_t i = 0; i < (5u << 20); i += 4096)
        nonzero += huge[i] != 0;
    is_int(nonzero, 0, "calloc zeroes");
    is_int(big[(1 << 20) - 1], 'x');
    is_int(arena_used(a), 16 + (1 << 20) + 16 + (5u << 20));

    /* Growing past many blocks. */
    for (int i = 0; i < 1000; i++)
        memset(arena_alloc(a, 3000), 1, 3000);
    arena_free(a);
}

static void test_copies(void)
{
    struct arena *a = arena_new(64);
    char *s = arena_strndup(a, "hello world", 5);
    is_str(s, "hello");
    char *e = arena_strndup(a, NULL, 0);
    is_str(e, "");
    struct slice d = arena_slice_dup(a, SLICE_LIT("abc"));
    is_slice(d, "abc");
    is_int(d.base[3], '\0');
    struct slice parts[] = {SLICE_LIT("ab"), {NULL, 0}, SLICE_LIT("cde"), SLICE_LIT("")};
    struct slice c = arena_concat(a, parts, 4);
    is_slice(c, "abcde");
    is_int(c.base[5], '\0');
    struct slice none = arena_concat(a, NULL, 0);
    is_int(none.len, 0);
    is_str(none.base, "");
    arena_free(a);
    arena_free(NULL);
    ok(1, "arena_free(NULL)");
}

static char order[16];
static size_t order_len;
static struct arena *cleanup_arena;

static void on_cleanup(void *arg)
{
    order[order_len++] = *(const char *)arg;
}

/* A cleanup may still read memory from its arena. */
static void on_cleanup_reads_arena(void *arg)
{
    const char *s = arg;
    order[order_len++] = s[0];
}

static void test_cleanups(void)
{
    static const char a1 = '1', a2 = '2', a3 = '3';
    cleanup_arena = arena_new(128);
    arena_cleanup_add(cleanup_arena, on_cleanup, (void *)&a1);
    arena_cleanup_add(cleanup_arena, on_cleanup, (void *)&a2);
    /* Force new blocks between registrations. */
    for (int i = 0; i < 50; i++)
        arena_alloc(cleanup_arena, 1000);
    char *in_arena = arena_strndup(cleanup_arena, "4", 1);
    arena_cleanup_add(cleanup_arena, on_cleanup_reads_arena, in_arena);
    arena_cleanup_add(cleanup_arena, on_cleanup, (void *)&a3);
    is_int(order_len, 0);
    arena_free(cleanup_arena);
    is_int(order_len, 4);
    order[order_len] = '\0';
    is_str(order, "3421");
}

int main(void)
{
    test_many_allocations();
    test_alignment();
    test_big();
    test_copies();
    test_cleanups();
    return test_done();
}
