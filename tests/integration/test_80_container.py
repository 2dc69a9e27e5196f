"""What containers rely on: `sluice --probe URL` (SPEC 7 "long options"), the
health check of the image, and `workers: 0` counting only the CPUs the
process may use (affinity here; the cgroup quota is unit-tested in
test_cpus.c)."""
import os
import re
import time

import pytest
from aiohttp import web

from conftest import free_port, run_sluice, wait_until


def probe(url, tmp_path):
    return run_sluice(["--probe", url], tmp_path, timeout=10)


def test_probe_2xx_exits_0_without_a_configuration(backend, tmp_path):
    async def created(request, record, b):
        return web.Response(status=204)

    b = backend(handler=created)
    # No sluice.json in the folder and no SLUICE_CONFIG: none is needed.
    p = probe(f"http://{b.address}/ready?from=probe", tmp_path)
    assert p.returncode == 0, p
    assert "204" in p.stdout.decode(), p
    rec = b.last()
    assert rec["method"] == "GET" and rec["target"] == "/ready?from=probe", rec
    assert dict(rec["headers"])["Host"] == b.address, rec


def test_probe_default_path_is_slash(backend, tmp_path):
    b = backend()
    p = probe(f"http://{b.address}", tmp_path)
    assert p.returncode == 0, p
    assert b.last()["target"] == "/", b.last()


def test_probe_non_2xx_exits_1(backend, tmp_path):
    async def unavailable(request, record, b):
        return web.Response(status=int(request.path.strip("/")), text="no")

    b = backend(handler=unavailable)
    for status in (503, 404, 302, 500):
        p = probe(f"http://{b.address}/{status}", tmp_path)
        assert p.returncode == 1, (status, p)
        assert str(status) in p.stdout.decode(), (status, p)


def test_probe_refused_exits_1(tmp_path):
    port = free_port()  # nothing listens there
    p = probe(f"http://127.0.0.1:{port}/ready", tmp_path)
    assert p.returncode == 1, p
    assert "refused" in p.stderr.decode().lower(), p


def test_probe_times_out_after_2_seconds(raw_backend, tmp_path):
    def silent(conn, b):
        # Reads the request and never answers, until the probe gives up.
        while conn.recv(4096):
            pass

    b = raw_backend(silent)
    start = time.monotonic()
    p = probe(f"http://127.0.0.1:{b.port}/ready", tmp_path)
    elapsed = time.monotonic() - start
    assert p.returncode == 1, p
    assert "timed out" in p.stderr.decode(), p
    assert 1.5 <= elapsed < 8, elapsed  # 2 s limit; generous upper bound for a loaded machine


def test_probe_invalid_response_exits_1(raw_backend, tmp_path):
    def garbage(conn, b):
        conn.recv(4096)
        conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")

    b = raw_backend(garbage)
    p = probe(f"http://127.0.0.1:{b.port}/", tmp_path)
    assert p.returncode == 1, p
    assert "invalid" in p.stderr.decode(), p


@pytest.mark.parametrize("url,why", [
    ("https://127.0.0.1:9901/ready", "http://"),
    ("127.0.0.1:9901/ready", "http://"),
    ("http:///ready", "no host"),
    ("http://127.0.0.1:99999/", "port"),
    ("http://::1:9901/", "brackets"),
    ("http://user:pw@127.0.0.1:9901/", "user name"),
    ("http://127.0.0.1:9901/a b", "spaces"),
    ("http://no-such-host.invalid:9901/", "resolve"),
])
def test_probe_bad_url_exits_1_and_says_why(tmp_path, url, why):
    p = probe(url, tmp_path)
    assert p.returncode == 1, p
    err = p.stderr.decode()
    assert why in err and url in err, err
    assert p.stdout == b"", p


def test_probe_needs_its_argument(tmp_path):
    p = run_sluice(["--probe"], tmp_path)
    assert p.returncode == 2, p
    assert "--probe needs an argument" in p.stderr.decode(), p


def test_probe_ipv6_literal(backend, tmp_path):
    try:
        b = backend(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    p = probe(f"http://{b.address}/x", tmp_path)
    assert p.returncode == 0, p
    assert dict(b.last()["headers"])["Host"] == b.address


def started_workers(s):
    line = wait_until(lambda: re.search(r"started: (\d+) workers?", s.stderr()), timeout=10,
                      what="the start-up line")
    return int(line.group(1))


def test_workers_0_follows_the_cpu_affinity(sluice):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs at least 2 usable CPUs to show a difference")
    cfg = {"workers": 0, "routes": [{"name": "r", "respond": {"status": 200}}]}
    # Pinned to one CPU (what `taskset -c 0` and `docker run --cpuset-cpus 0` do): one worker.
    pinned = sluice(cfg, preexec=lambda: os.sched_setaffinity(0, {0}))
    assert started_workers(pinned) == 1, pinned.stderr()
    assert pinned.request().status == 200
    # Unpinned: as many workers as usable CPUs (no quota on this machine's
    # own cgroup is assumed: the count never exceeds the affinity).
    free = sluice(cfg)
    n = started_workers(free)
    assert 1 <= n <= len(os.sched_getaffinity(0)), free.stderr()
