/*
 * test.h: the few macros the unit tests use; no framework. Each check
 * prints "ok" or "not ok" with file:line, and test_done() returns the exit
 * status (non-zero when any check failed).
 */
#ifndef SLUICE_TEST_H
#define SLUICE_TEST_H

#include <stdio.h>
#include <string.h>

static int test_failures;
static int test_count;

#define ok(cond, ...)                                                                              \
    do {                                                                                           \
        test_count++;                                                                              \
        if (!(cond)) {                                                                             \
            test_failures++;                                                                       \
            printf("not ok %d - %s:%d: ", test_count, __FILE__, __LINE__);                         \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

#define is_int(got, want, ...)                                                                     \
    do {                                                                                           \
        long long g_ = (long long)(got), w_ = (long long)(want);                                   \
        ok(g_ == w_, "got %lld, want %lld: %s", g_, w_, #got);                                     \
    } while (0)

#define is_str(got, want, ...)                                                                     \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        ok(g_ &&w_ &&strcmp(g_, w_) == 0, "got \"%s\", want \"%s\": %s", g_ ? g_ : "(null)",       \
           w_ ? w_ : "(null)", #got);                                                              \
    } while (0)

#define is_slice(got, want)                                                                        \
    do {                                                                                           \
        struct slice g_ = (got);                                                                   \
        const char *w_ = (want);                                                                   \
        ok(g_.len == strlen(w_) && memcmp(g_.base, w_, g_.len) == 0, "got \"%.*s\", want \"%s\"",  \
           (int)g_.len, g_.base ? g_.base : "", w_);                                               \
    } while (0)

static inline int test_done(void)
{
    printf("%d checks, %d failed\n", test_count, test_failures);
    return test_failures ? 1 : 0;
}

#endif
