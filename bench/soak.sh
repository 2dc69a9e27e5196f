#!/usr/bin/env bash
# The soak: sluice built with ASan+UBSan under mixed HTTP/1.1, HTTP/2,
# WebSocket and faulty-upstream load for 10 minutes (configurable), with a
# SIGHUP reload every 30 s; RSS and open descriptors sampled from /proc.
# Not part of scripts/test.
#
#   bench/soak.sh                  10 minutes
#   bench/soak.sh --minutes 3      shorter
#   bench/soak.sh --help           every option
#
# Builds build-soak/ (Debug, -DSLUICE_SANITIZE=address,undefined) unless
# SLUICE=/path/to/sluice names an ASan build already made. Needs wrk
# (else HTTP/1.1 comes from Python loops), h2load (nghttp2-client),
# python3-aiohttp and python3-websockets. Exits 1 on a sanitizer report, a
# crash, an unclean exit, RSS growth after the warm-up, a descriptor leak
# or more than 1% unexpected answers. See bench/README.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY=${PYTHON:-/usr/bin/python3}

for arg in "$@"; do
    if [[ "$arg" == -h || "$arg" == --help ]]; then
        sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        echo
        exec "$PY" "$BENCH_DIR/lib/soak.py" --sluice - --help
    fi
done

bin=${SLUICE:-}
if [[ -z "$bin" ]]; then
    build="$ROOT/build-soak"
    cmake -S "$ROOT" -B "$build" -DCMAKE_BUILD_TYPE=Debug \
        -DSLUICE_SANITIZE=address,undefined >/dev/null
    cmake --build "$build" -j2 --target sluice
    bin="$build/sluice"
fi
exec "$PY" "$BENCH_DIR/lib/soak.py" --sluice "$bin" "$@"
