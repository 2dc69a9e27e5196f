/*
 * arena: the per-exchange bump allocator (the "exchange" lifetime of
 * ARCHITECTURE.md "Memory: three lifetimes").
 *
 * Owns: a chain of blocks, and a list of cleanups. Promises: allocations are
 * aligned to max_align_t, zeroed only when asked (arena_calloc), and live
 * until arena_free(), which first runs the cleanups in reverse order of
 * registration and then releases every block in one go. Arena memory is
 * never free()d one piece at a time. An allocation failure aborts the
 * process with a message: limits keep exchanges small, so running out here
 * means memory is truly gone (STYLE rule 10).
 *
 * Thread: an arena belongs to the thread of its exchange; no locking.
 */
#ifndef SLUICE_ARENA_H
#define SLUICE_ARENA_H

#include <stddef.h>

#include "base/slice.h"

struct arena;
struct thread_cache;

/* Creates an arena whose first block holds about `first_block` bytes. */
struct arena *arena_new(size_t first_block);

/* Runs the cleanups (last registered first), then frees all memory. NULL ok. */
void arena_free(struct arena *a);

/* Returns `n` bytes (n may be 0), aligned for any type. Never NULL. */
void *arena_alloc(struct arena *a, size_t n);

/* Same, zero-filled. */
void *arena_calloc(struct arena *a, size_t n);

/* Copies `len` bytes and adds a NUL; returns the copy. */
char *arena_strndup(struct arena *a, const char *s, size_t len);

/* Copies a slice into the arena (with a trailing NUL, not counted). */
struct slice arena_slice_dup(struct arena *a, struct slice s);

/* Concatenates up to `n` slices into one new arena slice. */
struct slice arena_concat(struct arena *a, const struct slice *parts, size_t n);

/*
 * Registers `fn(arg)` to run when the arena is freed. Used to release
 * non-memory resources (timers, pending callbacks, pooled connections)
 * whose lifetime is the exchange's. Cleanups run in reverse order.
 */
void arena_cleanup_add(struct arena *a, void (*fn)(void *arg), void *arg);

/*
 * Frees the spare arenas kept in `tc` (thread_cache.h); its owner calls it
 * before the cache goes away. Not re-entrant with arena_new/arena_free on
 * the thread using `tc`.
 */
void arena_cache_clear(struct thread_cache *tc);

/* Total bytes handed out so far (tests and metrics). */
size_t arena_used(const struct arena *a);

#endif
