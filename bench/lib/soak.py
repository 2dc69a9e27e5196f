"""The soak (bench/soak.sh): one sluice, built with ASan+UBSan, under mixed
load for a while, reloaded with SIGHUP every 30 s, its RSS and open
descriptors sampled from /proc every few seconds.

Load, all at once for the whole duration:
- HTTP/1.1: wrk (or, without wrk, a loop of keep-alive requests) on /ok;
- HTTP/2: h2load runs back to back on /ok (h2c prior knowledge);
- WebSocket: python3-websockets clients that connect, echo a few
  messages and close, in a loop;
- faulty upstreams, in loops of single requests: one that resets the
  connection after reading the head (/reset, 502), one that answers
  after the upstream timeout (/slow, 504), one that sends an invalid head
  (/invalid, 502); plus a route the gateway answers itself (/respond).

The backends are the integration tests' own (tests/integration/backends),
and sluice is started and stopped through the tests' Sluice class.

Fails (exit 1) when sluice's stderr carries a sanitizer report, when it
dies or does not exit cleanly on SIGTERM, when its RSS after the warm-up
grows beyond the bound, or when descriptors leak (open at the end, once
load stopped and the backends closed, versus at the start). Prints a table
of RSS and open descriptors at start, peak and end.
"""
import argparse
import asyncio
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from conftest import (SANITIZER_MARKERS, RawBackend, ServerSide, Sluice,  # noqa: E402
                      free_port, http_response, wait_until)
from backends.http import HttpBackend, echo  # noqa: E402


# ---- backends ---------------------------------------------------------------

async def app(request, record, backend):
    """Echo, and a WebSocket echo on Upgrade."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        from aiohttp import WSMsgType, web
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws
    return await echo(request, record, backend)


def reset_handler(conn, backend):
    """Reads the request head, then resets the connection (RST, no answer)."""
    ServerSide(conn).read_head()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def slow_handler(conn, backend):
    """Answers only after sluice's upstream timeout (1 s) has passed."""
    ServerSide(conn).read_head()
    if backend.stopping.wait(1.5):
        return
    try:
        conn.sendall(http_response(200, b"late"))
    except OSError:
        pass


def invalid_handler(conn, backend):
    """Answers with a head that is not HTTP."""
    ServerSide(conn).read_head()
    conn.sendall(b"HTTP/1.1 2000 What\r\nContent-Length: x\r\n\r\n")


# ---- load -------------------------------------------------------------------

class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n


def request_loop(port, path, expect, stop, counters, pause=0.02):
    """Single requests on fresh connections until `stop`; counts statuses."""
    while not stop.is_set():
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", path)
            status = c.getresponse().status
            c.close()
            counters.add(f"{path} {status}" + ("" if status == expect else " UNEXPECTED"))
        except (OSError, http.client.HTTPException) as e:
            counters.add(f"{path} client error {type(e).__name__} UNEXPECTED")
        stop.wait(pause)


def keepalive_loop(port, stop, counters):
    """HTTP/1.1 without wrk: keep-alive requests on one connection."""
    while not stop.is_set():
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for _ in range(200):
                if stop.is_set():
                    break
                c.request("GET", "/ok")
                r = c.getresponse()
                r.read()
                counters.add(f"/ok {r.status}" + ("" if r.status == 200 else " UNEXPECTED"))
            c.close()
        except (OSError, http.client.HTTPException) as e:
            counters.add(f"/ok client error {type(e).__name__} UNEXPECTED")


def websocket_loop(port, stop, counters):
    import websockets

    async def run():
        while not stop.is_set():
            try:
                async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10,
                                              close_timeout=5, ping_interval=None) as ws:
                    for i in range(10):
                        await ws.send(f"m{i}" * 50)
                        if await asyncio.wait_for(ws.recv(), 10) != f"m{i}" * 50:
                            counters.add("ws wrong echo UNEXPECTED")
                counters.add("ws sessions")
            except Exception as e:  # noqa: BLE001 - every failure is counted
                counters.add(f"ws error {type(e).__name__} UNEXPECTED")
            await asyncio.sleep(0.05)

    asyncio.run(run())


class Tools:
    """wrk and h2load processes, started and stopped by PID."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.procs = []
        self.h2load_runs = 0
        self.h2load_ok = 0
        self.h2load_failed = 0

    def start_wrk(self, port, seconds, connections):
        log = open(self.logdir / "wrk.log", "wb")
        p = subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                              f"http://127.0.0.1:{port}/ok"], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def h2load_loop(self, port, stop):
        while not stop.is_set():
            try:
                out = subprocess.run(["h2load", "-c2", "-m8", "-n2000",
                                      f"http://127.0.0.1:{port}/ok"], capture_output=True,
                                     timeout=120).stdout.decode(errors="replace")
            except subprocess.TimeoutExpired:
                self.h2load_failed += 1
                continue
            self.h2load_runs += 1
            m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                          r"(\d+) failed", out)
            if m:
                self.h2load_ok += int(m.group(2))
                self.h2load_failed += int(m.group(3))

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def wrk_summary(path):
    text = path.read_text(errors="replace") if path.exists() else ""
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return (int(total.group(1)) if total else 0, int(non2xx.group(1)) if non2xx else 0,
            errors.group(1) if errors else "none")


# ---- sampling ---------------------------------------------------------------

def sample(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid):
    """Open descriptors of `pid` by kind: socket, pipe, or other."""
    kinds = {"socket": 0, "pipe": 0, "other": 0}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.partition(":")[0]
        kinds[kind if kind in kinds else "other"] += 1
    return kinds


def describe_fds(pid, out):
    """What each open descriptor is (and the sockets' peers), for a leak report."""
    lines = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            lines.append(f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    ss = subprocess.run(["ss", "-tanpe"], capture_output=True, timeout=20).stdout.decode()
    lines += [l for l in ss.splitlines() if f"pid={pid}," in l]
    out.write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description="sluice soak: mixed load, reloads, RSS and fds")
    ap.add_argument("--sluice", required=True, help="the sluice binary (an ASan build)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--reload-every", type=float, default=30.0, help="seconds between SIGHUPs")
    ap.add_argument("--sample-every", type=float, default=3.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before the RSS baseline (default: a fifth of the run, 30..120)")
    ap.add_argument("--rss-growth-mb", type=float, default=48.0,
                    help="allowed RSS growth after the warm-up, MiB (plus --rss-growth-pct)")
    ap.add_argument("--rss-growth-pct", type=float, default=15.0)
    ap.add_argument("--fd-slack", type=int, default=2,
                    help="descriptors (other than cached splice pipes) the end may hold over "
                         "the start")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections")
    ap.add_argument("--max-client-errors-pct", type=float, default=1.0,
                    help="unexpected answers and client errors allowed, percent of all")
    args = ap.parse_args()

    seconds = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(120.0, max(30.0, seconds / 5))
    work = Path(tempfile.mkdtemp(prefix="sluice-soak-"))
    print(f"soak: {args.minutes:g} min, reload every {args.reload_every:g} s, "
          f"warm-up {warmup:g} s, work folder {work}", flush=True)

    web = HttpBackend("soak", app).start()
    reset = RawBackend(reset_handler)
    slow = RawBackend(slow_handler)
    invalid = RawBackend(invalid_handler)
    port = free_port()
    config = {
        "listen": [{"address": f"127.0.0.1:{port}", "protocols": ["http/1.1", "h2c"]}],
        "workers": 2,
        "access_log": {"path": "off"},
        "limits": {"drain_timeout_ms": 3000},
        "upstreams": {
            "web": {"targets": [web.address], "keepalive": 32},
            "reset": {"targets": [reset.address], "retries": 0},
            "slow": {"targets": [slow.address], "timeout_ms": 1000, "retries": 0},
            "invalid": {"targets": [invalid.address], "retries": 0},
        },
        "routes": [
            {"match": {"prefix": "/reset"}, "upstream": "reset"},
            {"match": {"prefix": "/slow"}, "upstream": "slow"},
            {"match": {"prefix": "/invalid"}, "upstream": "invalid"},
            {"match": {"prefix": "/respond"}, "respond": {"status": 200, "body": "ok\n"}},
            {"match": {"prefix": "/"}, "upstream": "web",
             "filters": [{"type": "headers", "response": {"set": {"X-Soak": "0"}}}]},
        ],
    }
    # ASan's quarantine would hold up to 256 MiB of freed memory and hide
    # the trend; a small one keeps RSS close to what sluice really holds.
    env = {"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=16:malloc_context_size=10",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    s = Sluice(args.sluice, work / "sluice", config, env=env, merge=False)
    s.start(timeout=30)
    pid = s.pid
    failures = []
    samples = []  # (t, rss KiB, fds, phase)
    t0 = time.monotonic()

    def take(phase):
        try:
            rss, fds = sample(pid)
        except OSError:
            return None
        samples.append((time.monotonic() - t0, rss, fds, phase))
        return rss, fds

    _, start_fds = take("start")
    start_kinds = fd_kinds(pid)
    # Each worker keeps up to 4 empty splice pipes for the next large body
    # (THREAD_CACHE_PIPES, base/thread_cache.h): a bounded cache, not a leak.
    pipe_cache = config["workers"] * 4 * 2
    counters = Counters()
    stop = threading.Event()
    tools = Tools(work)
    threads = []
    if shutil.which("wrk"):
        tools.start_wrk(port, int(seconds), args.connections)
    else:
        print("soak: no wrk; HTTP/1.1 load from keep-alive loops instead", flush=True)
        threads += [threading.Thread(target=keepalive_loop, args=(port, stop, counters))
                    for _ in range(2)]
    if shutil.which("h2load"):
        threads.append(threading.Thread(target=tools.h2load_loop, args=(port, stop)))
    else:
        print("soak: no h2load; no HTTP/2 load", flush=True)
    threads += [threading.Thread(target=websocket_loop, args=(port, stop, counters))
                for _ in range(2)]
    for path, status in (("/reset", 502), ("/slow", 504), ("/invalid", 502), ("/respond", 200)):
        threads.append(threading.Thread(target=request_loop,
                                        args=(port, path, status, stop, counters)))
    for t in threads:
        t.daemon = True
        t.start()

    reloads = 0
    next_reload = args.reload_every
    next_print = 30.0
    end = t0 + seconds
    while time.monotonic() < end:
        if not s.running():
            failures.append(f"sluice died during the run (exit {s.proc.returncode})")
            break
        now = time.monotonic() - t0
        if now >= next_reload:
            # A changed configuration, so each reload swaps the snapshot.
            reloads += 1
            routes = config["routes"]
            routes[-1]["filters"][0]["response"]["set"]["X-Soak"] = str(reloads)
            s.write_config(config)
            s.reload()
            next_reload += args.reload_every
        take("load" if now >= warmup else "warm-up")
        with web.lock:
            web.requests.clear()  # the echo backend's history would grow for the whole run
        if now >= next_print:
            rss, fds = samples[-1][1], samples[-1][2]
            print(f"soak: {now:5.0f} s  rss {rss / 1024:7.1f} MiB  fds {fds:4d}  "
                  f"reloads {reloads}", flush=True)
            next_print += 30.0
        time.sleep(args.sample_every)

    # Stop the load, then the backends (their closing ends the pooled
    # upstream connections), then wait for the descriptors to settle.
    stop.set()
    tools.stop()
    for t in threads:
        t.join(30)
    take("after load")
    for b in (web, reset, slow, invalid):
        b.stop()
    end_fds = end_kinds = None
    leak = None

    def leaked(kinds):
        if kinds["pipe"] > start_kinds["pipe"] + pipe_cache:
            return f"{kinds['pipe']} pipe ends (start {start_kinds['pipe']}, cache {pipe_cache})"
        rest = kinds["socket"] + kinds["other"]
        if rest > start_kinds["socket"] + start_kinds["other"] + args.fd_slack:
            return (f"{kinds['socket']} sockets and {kinds['other']} others (start "
                    f"{start_kinds['socket']} and {start_kinds['other']})")
        return None

    if s.running():
        def settled():
            if take("end") is None:
                return False
            return leaked(fd_kinds(pid)) is None
        try:
            wait_until(settled, timeout=30, interval=1.0, what="descriptors back to the start")
        except AssertionError:
            pass
        end_fds = samples[-1][2]
        end_kinds = fd_kinds(pid)
        leak = leaked(end_kinds)
        if leak:
            describe_fds(pid, work / "fds-end.txt")
    code = s.stop(timeout=30)
    s.close()
    err = s.stderr()
    problems = [m for m in SANITIZER_MARKERS if m in err]
    if problems:
        failures.append(f"sanitizer report in sluice's stderr ({', '.join(problems)}); "
                        f"see {s.stderr_path}")
    if code != 0:
        failures.append(f"sluice exited with {code} on SIGTERM")

    # ---- verdict --------------------------------------------------------------
    total, non2xx, sock_errors = wrk_summary(work / "wrk.log")
    after = [x for x in samples if x[3] in ("load", "after load", "end")]
    baseline = next((x for x in samples if x[3] == "load"), None)
    peak = max(samples, key=lambda x: x[1])
    peak_fds = max(samples, key=lambda x: x[2])
    if baseline and after:
        top = max(x[1] for x in after)
        bound = baseline[1] * (1 + args.rss_growth_pct / 100) + args.rss_growth_mb * 1024
        if top > bound:
            failures.append(f"RSS grew after the warm-up: {baseline[1] / 1024:.1f} MiB at "
                            f"{baseline[0]:.0f} s, {top / 1024:.1f} MiB later (bound "
                            f"{bound / 1024:.1f} MiB)")
    unexpected = sum(n for k, n in counters.counts.items() if "UNEXPECTED" in k)
    unexpected += non2xx + tools.h2load_failed
    answered = sum(counters.counts.values()) + total + tools.h2load_ok + tools.h2load_failed
    if answered == 0:
        failures.append("no request was answered")
    elif unexpected * 100.0 / answered > args.max_client_errors_pct:
        failures.append(f"{unexpected} of {answered} requests got an unexpected answer or "
                        f"failed (more than {args.max_client_errors_pct:g}%)")
    if end_fds is None:
        failures.append("no end sample (sluice not running)")
    elif leak:
        failures.append(f"descriptors leaked: {start_fds} at the start, {end_fds} at the end: "
                        f"{leak}; see {work / 'fds-end.txt'}")

    print()
    rows = [("start", samples[0])]
    if baseline:
        rows.append(("after warm-up", baseline))
    rows += [("peak RSS", peak), ("peak fds", peak_fds), ("end", samples[-1])]
    print("|               | time s | RSS MiB | open fds |")
    print("| ------------- | -----: | ------: | -------: |")
    for name, (t, rss, fds, _) in rows:
        print(f"| {name:<13} | {t:6.0f} | {rss / 1024:7.1f} | {fds:8d} |")
    print()
    if end_kinds:
        print(f"descriptors at the start: {start_kinds}; at the end: {end_kinds} (up to "
              f"{pipe_cache} pipe ends are the workers' spare splice pipes)")
    print(f"reloads: {reloads}; samples: {len(samples)}")
    if shutil.which("wrk"):
        print(f"HTTP/1.1 (wrk, {args.connections} connections): {total} requests, "
              f"{non2xx} non-2xx, socket errors: {sock_errors}")
    print(f"HTTP/2 (h2load): {tools.h2load_runs} runs, {tools.h2load_ok} succeeded, "
          f"{tools.h2load_failed} failed")
    for key in sorted(counters.counts):
        print(f"  {key}: {counters.counts[key]}")
    with open(work / "samples.csv", "w") as f:
        f.write("seconds,rss_kib,fds,phase\n")
        for t, rss, fds, phase in samples:
            f.write(f"{t:.1f},{rss},{fds},{phase}\n")
    print(f"samples: {work / 'samples.csv'}; sluice's stderr: {s.stderr_path}")
    if failures:
        for f in failures:
            print(f"soak: FAILED: {f}")
        return 1
    print("soak: PASSED (no sanitizer report, clean exit, RSS flat after the warm-up, "
          "no descriptor leak)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
