"""Hostile clients (issue 12, 2.4): slowloris, slow body and slow read
(Debian's slowhttptest), 20,000 held connections, pipelining without
reading, and HTTP/2 clients that never open their window. While each runs,
a well-behaved client keeps being served (every request answered within
GOOD_LIMIT seconds), the attack really holds the gateway's descriptors, and
sluice's RSS stays under the case's ceiling (measured without ASan's
quarantine, RSS_ENV)."""
import os
import resource
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import RSS_ENV, RssSampler, request, upstream, wait_until
from test_14_hardening import window_zero_client
from test_21_http2 import h2c_listener

MiB = 1 << 20
GOOD_LIMIT = 5.0  # seconds for one request of the well-behaved client
BIG = 64 * 1024  # the /big response (slow read)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class GoodClient:
    """A well-behaved client: GET /ok on a fresh connection every 0.2 s, in a
    thread, until stopped; records every request's time and failures, and
    sluice's open descriptors as it goes."""

    def __init__(self, s):
        self.s = s
        self.times = []
        self.failures = []
        self.peak_fds = 0
        self.stop_evt = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_evt.is_set():
            self.peak_fds = max(self.peak_fds, open_fds(self.s.pid))
            t0 = time.monotonic()
            try:
                r = request(self.s.port, "GET", "/ok", timeout=GOOD_LIMIT)
                if r.status != 200:
                    self.failures.append(f"status {r.status}")
            except OSError as e:
                self.failures.append(repr(e))
            self.times.append(time.monotonic() - t0)
            self.stop_evt.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_evt.set()
        self.thread.join(GOOD_LIMIT + 2)

    def check(self, min_requests=5):
        assert not self.failures, self.failures[:5]
        assert len(self.times) >= min_requests, self.times
        assert max(self.times) < GOOD_LIMIT, max(self.times)


def hostile_gateway(sluice, backend, **limits):
    """The attacks use upstream b (and /big); the good client's /ok has its
    own upstream, so only the gateway is shared."""
    b = backend("b")
    good = backend("good")
    cfg = {"listen": [h2c_listener()],
           "upstreams": {"b": upstream(b.address), "good": upstream(good.address)},
           "routes": [{"match": {"path": "/big"},
                       "respond": {"status": 200, "body": "x" * BIG}},
                      {"match": {"path": "/ok"}, "upstream": "good"},
                      {"upstream": "b"}],
           "access_log": {"path": "off"},
           "limits": limits}
    return sluice(cfg, env=RSS_ENV)


def slowhttptest(*args, seconds=8):
    exe = shutil.which("slowhttptest")
    assert exe, "slowhttptest is missing (scripts/deps installs it)"
    return subprocess.Popen([exe, "-l", str(seconds), "-p", "3", "-v", "0"] + list(args),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


SLOW_ATTACKS = {
    # slowloris: heads that never end, a header line every 2 s
    "slowloris": (["-H", "-c", "600", "-r", "300", "-i", "2", "-x", "8"], "/a", 400),
    # slow body: a 64 KiB POST body trickled in, a few bytes every 2 s
    "slow_body": (["-B", "-c", "300", "-r", "150", "-i", "2", "-s", "65536", "-x", "8",
                   "-t", "POST"], "/a", 200),
    # slow read: pipelined GETs of 64 KiB, read 32 bytes every 2 s through a tiny window
    "slow_read": (["-X", "-c", "200", "-r", "100", "-w", "512", "-y", "1024", "-n", "2",
                   "-z", "32", "-k", "3"], "/big", 200),
}


@pytest.mark.parametrize("attack", list(SLOW_ATTACKS))
def test_slowhttptest(sluice, backend, attack):
    args, path, min_held = SLOW_ATTACKS[attack]
    s = hostile_gateway(sluice, backend)
    base_fds = open_fds(s.pid)
    with RssSampler(s) as rss, GoodClient(s) as good:
        proc = slowhttptest(*args, "-u", f"http://127.0.0.1:{s.port}{path}")
        try:
            proc.wait(40)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    good.check()
    assert good.peak_fds - base_fds >= min_held, (base_fds, good.peak_fds)
    assert rss.peak < 128 * 1024, f"RSS peaked at {rss.peak // 1024} MiB"


def test_held_connections(sluice, backend):
    """20,000 idle connections held open at once (fewer only where the hard
    descriptor limit cannot give that many to one process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(20000, hard - 300)
    assert want >= 10000, f"RLIMIT_NOFILE hard limit {hard} is too low for this test"
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def raise_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    b = backend("b")
    cfg = {"listen": [h2c_listener()], "upstreams": {"b": upstream(b.address)},
           "routes": [{"upstream": "b"}], "access_log": {"path": "off"},
           "limits": {"header_timeout_ms": 60000, "max_connections": want + 100}}
    s = sluice(cfg, env=RSS_ENV, preexec=raise_limit)
    base_fds = open_fds(s.pid)
    socks = []
    try:
        with RssSampler(s) as rss, GoodClient(s) as good:
            for i in range(want):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.setblocking(False)
                c.bind((f"127.0.0.{2 + i % 4}", 0))  # four source addresses: ports to spare
                c.connect_ex(("127.0.0.1", s.port))
                socks.append(c)
            wait_until(lambda: open_fds(s.pid) - base_fds >= want, timeout=60, interval=0.2,
                       what=f"sluice to hold {want} connections")
            held = open_fds(s.pid) - base_fds
            time.sleep(2)  # served while they are all held
        good.check()
        assert held >= want
        assert rss.peak < 256 * 1024, f"RSS peaked at {rss.peak // 1024} MiB"
    finally:
        for c in socks:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert request(s.port, "GET", "/ok").status == 200


def test_pipelining_without_reading(sluice, backend):
    """Clients that pipeline proxied requests and never read: the gateway
    stops reading them (their responses wait at the high-water mark), so
    memory stays bounded and others are served."""
    s = hostile_gateway(sluice, backend)
    one = b"GET /p HTTP/1.1\r\nHost: a\r\nX-Echo-Bytes: 65536\r\n\r\n"
    senders, socks = [], []

    def flood(sock):
        try:
            sock.sendall(one * 200000)  # 12 GiB of responses asked for, never read
        except OSError:
            pass

    with RssSampler(s) as rss, GoodClient(s) as good:
        for _ in range(4):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.connect(("127.0.0.1", s.port))
            socks.append(c)
            t = threading.Thread(target=flood, args=(c,), daemon=True)
            t.start()
            senders.append(t)
        time.sleep(5)
        # The gateway stopped reading: no sender got its requests through.
        assert all(t.is_alive() for t in senders)
    for c in socks:
        c.shutdown(socket.SHUT_RDWR)  # wakes the blocked sendall
        c.close()
    for t in senders:
        t.join(10)
    good.check()
    assert rss.peak < 96 * 1024, f"RSS peaked at {rss.peak // 1024} MiB"


def test_window_zero_clients(sluice, backend):
    """HTTP/2 clients with SETTINGS_INITIAL_WINDOW_SIZE 0 asking for large
    responses: their streams are reset after body_timeout_ms, memory stays
    bounded, others are served meanwhile."""
    s = hostile_gateway(sluice, backend, body_timeout_ms=1000)
    conns = []
    try:
        with RssSampler(s) as rss, GoodClient(s) as good:
            for _ in range(4):
                c = window_zero_client(s.port)
                conns.append(c)
                ids = [c.start("GET", "/w", headers=[("x-echo-bytes", str(8 * MiB))])
                       for _ in range(10)]
                c.ids = ids
            for c in conns:
                assert c.wait(lambda: all(c.done(i) for i in c.ids), 20)
                assert all(c.streams[i].reset is not None for i in c.ids)
    finally:
        for c in conns:
            c.close()
    good.check()
    assert rss.peak < 128 * 1024, f"RSS peaked at {rss.peak // 1024} MiB"
