#!/usr/bin/env bash
# sluice vs nginx vs HAProxy (and the backend hit directly): one command.
#
#   bench/compare.sh            full run (3 rounds, ~12 minutes)
#   bench/compare.sh --quick    one round (~4 minutes)
#   bench/compare.sh --help     all options
#
# Installs what it needs from Debian (as root), builds sluice (Release) into
# build-bench/ unless SLUICE=/path/to/sluice is given, then runs
# bench/lib/harness.py. Results: bench/results/latest.md (+ latest.csv) and
# bench/results/run-DATE/. Everything it starts it stops by PID.
# See bench/README.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

install=1
args=()
for arg in "$@"; do
    case "$arg" in
        --no-install) install=0 ;;
        -h|--help)
            sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            echo "extra option of this script: --no-install (never call apt-get)"
            echo "environment: SLUICE=path to a sluice binary (skips the build), PYTHON=interpreter"
            echo
            exec "${PYTHON:-/usr/bin/python3}" "$BENCH_DIR/lib/harness.py" --sluice - --help ;;
        *) args+=("$arg") ;;
    esac
done

# ---- tools ---------------------------------------------------------------
# command -> Debian package
declare -A PKG=(
    [wrk]=wrk [h2load]=nghttp2-client [nginx]=nginx [haproxy]=haproxy
    [valgrind]=valgrind [perf]=linux-perf [strace]=strace [taskset]=util-linux
    [cmake]=cmake [openssl]=openssl [htpasswd]=apache2-utils
    [redis-server]=redis-server
)
missing=()
for cmd in "${!PKG[@]}"; do
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then
        missing+=("${PKG[$cmd]}")
    fi
done
PY=${PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3 || true)
[ -n "$PY" ] || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$install" = 0 ]; then
        echo "compare.sh: missing packages: ${missing[*]} (run without --no-install, as root)" >&2
        exit 1
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "compare.sh: missing packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "compare.sh: installing ${missing[*]}"
    # Debian's postinst would start the nginx/haproxy system services; ask
    # invoke-rc.d not to (only if no policy is configured already).
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    rc=0
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq || rc=$?
    [ "$rc" = 0 ] && { timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?; }
    [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ "$rc" != 0 ]; then
        echo "compare.sh: apt-get failed ($rc)" >&2
        exit 1
    fi
    [ -x "${PYTHON:-/usr/bin/python3}" ] && PY=${PYTHON:-/usr/bin/python3}
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ---- sluice --------------------------------------------------------------
if [ -z "${SLUICE:-}" ]; then
    BUILD="$ROOT/build-bench"
    mkdir -p "$BENCH_DIR/results"
    echo "compare.sh: building sluice (Release) in build-bench/"
    if timeout 120 cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$BENCH_DIR/results/.build.log" 2>&1 &&
       timeout 900 cmake --build "$BUILD" -j"$(nproc)" --target sluice >>"$BENCH_DIR/results/.build.log" 2>&1; then
        SLUICE="$BUILD/sluice"
    elif [ -x "$BUILD/sluice" ] || [ -x "$ROOT/build/sluice" ]; then
        # the tree does not build right now: use the newest existing binary
        SLUICE="$BUILD/sluice"
        if [ ! -x "$SLUICE" ] || { [ -x "$ROOT/build/sluice" ] && [ "$ROOT/build/sluice" -nt "$SLUICE" ]; }; then
            SLUICE="$ROOT/build/sluice"
        fi
        echo "compare.sh: build failed (see bench/results/.build.log); WARNING: using the older binary ${SLUICE#"$ROOT"/}" >&2
    else
        echo "compare.sh: build failed, see bench/results/.build.log" >&2
        tail -20 "$BENCH_DIR/results/.build.log" >&2
        exit 1
    fi
fi
[ -x "$SLUICE" ] || { echo "compare.sh: $SLUICE is not executable" >&2; exit 1; }

# the harness raises its own soft limit up to this hard limit (5000 idle conns)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec "$PY" "$BENCH_DIR/lib/harness.py" --sluice "$SLUICE" ${args[@]+"${args[@]}"}
