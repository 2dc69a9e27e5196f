#!/bin/sh
# Builds the libFuzzer targets with clang and runs each for $FUZZ_SECONDS
# (default 20). Usage: tests/fuzz/run.sh [build-dir]   (default build-fuzz)
# FUZZ_TARGETS (space-separated, without "fuzz_") picks a subset.
# New inputs go to <build-dir>/corpus/<target>; the seeds in
# tests/fuzz/corpus/<target> are read but never written.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-build-fuzz}
mkdir -p "$build"
seconds=${FUZZ_SECONDS:-20}
cc=${CC:-clang}
case "$cc" in *clang*) ;; *) cc=clang ;; esac

if cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug \
    -DSLUICE_FUZZ=ON >"$build/cmake-configure.log" 2>&1; then
    rm -f "$build/cmake-configure.log"
    targets=${FUZZ_TARGETS:-http1_parse chunked json_writer config jwt rewrite h2_server}
    # shellcheck disable=SC2086 # one word per target
    cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target $(printf 'fuzz_%s ' $targets)
else
    # The parser targets need only the parser, so a tree whose other parts
    # do not configure yet (or lack a library) can still fuzz those.
    echo "cmake configure failed (see $build/cmake-configure.log); building the targets directly" >&2
    mkdir -p "$build/tests/fuzz"
    for target in http1_parse chunked; do
        "$cc" -std=c17 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
            -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
            -I"$root/gateway" "$here/fuzz_$target.c" "$root/gateway/proto/http1_parse.c" \
            -o "$build/tests/fuzz/fuzz_$target"
    done
    "$cc" -std=c17 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -I"$root/gateway" "$here/fuzz_json_writer.c" "$root/gateway/base/json_writer.c" \
        -levent_core -ljansson -o "$build/tests/fuzz/fuzz_json_writer"
    targets="http1_parse chunked json_writer"
fi

status=0
for target in $targets; do
    work="$build/corpus/$target"
    mkdir -p "$work"
    echo "== fuzz_$target for ${seconds}s"
    # A dictionary of the input's words (tests/fuzz/<target>.dict), when there is one.
    dict=
    [ -f "$here/$target.dict" ] && dict="-dict=$here/$target.dict"
    # shellcheck disable=SC2086 # $dict is one word or none
    if ! "$build/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -max_len=4096 $dict \
        -timeout=10 -print_final_stats=1 -artifact_prefix="$build/fuzz_$target-" \
        "$work" "$here/corpus/$target"; then
        echo "fuzz_$target FAILED (crash input saved under $build/)" >&2
        status=1
    fi
done
exit $status
