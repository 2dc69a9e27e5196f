/*
 * test_header: the field list's lookups, edits, token matching and the
 * removal of hop-by-hop fields.
 */
#include <string.h>

#include "base/arena.h"
#include "base/header.h"
#include "harness.h"

static void test_basics(void)
{
    struct arena *a = arena_new(1024);
    struct header_list l;
    header_list_init(&l, a, 0);
    is_int(l.count, 0);
    ok(header_get(&l, SLICE_LIT("host")) == NULL, "get on empty list");
    is_int(header_find(&l, SLICE_LIT("host"), 0), -1);

    header_add(&l, SLICE_LIT("Host"), SLICE_LIT("a"));
    header_add(&l, SLICE_LIT("X-A"), SLICE_LIT("1"));
    header_add(&l, SLICE_LIT("x-a"), SLICE_LIT("2"));
    header_add(&l, SLICE_LIT("Accept"), SLICE_LIT("*/*"));
    is_str(render(&l), "Host: a|X-A: 1|x-a: 2|Accept: */*");
    is_int(header_find(&l, SLICE_LIT("x-A"), 0), 1);
    is_int(header_find(&l, SLICE_LIT("x-A"), 2), 2);
    is_int(header_find(&l, SLICE_LIT("x-A"), 3), -1);
    is_int(header_find(&l, SLICE_LIT("x-A"), 99), -1);
    is_int(header_count(&l, SLICE_LIT("X-A")), 2);
    is_int(header_count(&l, SLICE_LIT("X-B")), 0);
    const struct slice *v = header_get(&l, SLICE_LIT("HOST"));
    ok(v && slice_eq(*v, SLICE_LIT("a")), "get host");
    ok(header_get(&l, SLICE_LIT("Hos")) == NULL, "prefix is not a match");

    header_set(&l, SLICE_LIT("X-a"), SLICE_LIT("3"));
    is_str(render(&l), "Host: a|X-A: 3|Accept: */*");
    header_set(&l, SLICE_LIT("New"), SLICE_LIT("n"));
    is_str(render(&l), "Host: a|X-A: 3|Accept: */*|New: n");

    header_add(&l, SLICE_LIT("accept"), SLICE_LIT("x"));
    is_int(header_remove(&l, SLICE_LIT("ACCEPT")), 2);
    is_str(render(&l), "Host: a|X-A: 3|New: n");
    is_int(header_remove(&l, SLICE_LIT("none")), 0);
    is_int(header_remove(&l, SLICE_LIT("host")), 1);
    is_int(header_remove(&l, SLICE_LIT("new")), 1);
    is_str(render(&l), "X-A: 3");

    /* Growth by many adds keeps everything in order. */
    header_list_init(&l, a, 2);
    static char names[100][8];
    for (int i = 0; i < 100; i++) {
        snprintf(names[i], sizeof(names[i]), "h%d", i);
        header_add(&l, slice_cstr(names[i]), slice_cstr(names[i]));
    }
    is_int(l.count, 100);
    ok(l.cap >= 100, "capacity grew");
    int wrong = 0;
    for (int i = 0; i < 100; i++)
        wrong += !slice_eq(l.items[i].name, slice_cstr(names[i]));
    is_int(wrong, 0, "order kept while growing");
    arena_free(a);
}

static void test_wrap(void)
{
    struct arena *a = arena_new(1024);
    struct header parsed[3] = {
        {SLICE_LIT("Host"), SLICE_LIT("h")},
        {SLICE_LIT("A"), SLICE_LIT("1")},
        {SLICE_LIT("B"), SLICE_LIT("2")},
    };
    struct header_list l;
    header_list_wrap(&l, a, parsed, 3);
    ok(l.items == parsed, "wrap does not copy");
    is_int(l.count, 3);
    header_set(&l, SLICE_LIT("a"), SLICE_LIT("x"));
    ok(l.items == parsed, "in-place edit does not copy");
    is_str(render(&l), "Host: h|A: x|B: 2");
    header_add(&l, SLICE_LIT("C"), SLICE_LIT("3"));
    ok(l.items != parsed, "growing copies into the arena");
    is_int(l.cap, 6);
    is_str(render(&l), "Host: h|A: x|B: 2|C: 3");
    is_slice(parsed[1].value, "x");
    header_remove(&l, SLICE_LIT("Host"));
    is_slice(parsed[0].name, "Host");
    is_str(render(&l), "A: x|B: 2|C: 3");

    header_list_wrap(&l, a, NULL, 0);
    header_add(&l, SLICE_LIT("Z"), SLICE_LIT("z"));
    is_str(render(&l), "Z: z");
    arena_free(a);
}

static void test_tokens(void)
{
    struct arena *a = arena_new(1024);
    struct header_list l;
    header_list_init(&l, a, 4);
    header_add(&l, SLICE_LIT("Connection"), SLICE_LIT("keep-alive ,\tUpgrade  "));
    header_add(&l, SLICE_LIT("connection"), SLICE_LIT(",,close,"));
    header_add(&l, SLICE_LIT("Other"), SLICE_LIT("upgradeX"));
    header_add(&l, SLICE_LIT("Empty"), SLICE_LIT(""));
    struct slice conn = SLICE_LIT("CONNECTION");
    ok(header_has_token(&l, conn, SLICE_LIT("upgrade")), "upgrade");
    ok(header_has_token(&l, conn, SLICE_LIT("KEEP-ALIVE")), "keep-alive");
    ok(header_has_token(&l, conn, SLICE_LIT("close")), "close in second field");
    ok(!header_has_token(&l, conn, SLICE_LIT("upgrad")), "prefix");
    ok(!header_has_token(&l, conn, SLICE_LIT("keep")), "prefix 2");
    ok(!header_has_token(&l, conn, SLICE_LIT("alive")), "suffix");
    ok(!header_has_token(&l, SLICE_LIT("Other"), SLICE_LIT("upgrade")), "other field");
    ok(!header_has_token(&l, SLICE_LIT("Missing"), SLICE_LIT("x")), "missing field");
    ok(!header_has_token(&l, SLICE_LIT("Empty"), SLICE_LIT("x")), "empty value");
    arena_free(a);
}

int main(void)
{
    test_basics();
    test_wrap();
    test_tokens();
    return test_done();
}
