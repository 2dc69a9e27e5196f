"""SPEC 2.1 `redis` and SPEC 4 `rate_limit` with `store: "redis"` (issue 11
item 3), through the real binary and a real redis-server on loopback.

Exactness uses rate 100 per hour with burst 100 (the issue's limit of 100,
with one token taking 36 s to return), so that the count is exact whatever
the machine's speed: at 100 per minute a token returns every 0.6 s, and a
loaded machine could see one come back during the run. The per-minute
numbers are checked with that allowance, as test_41 does for the local store.
"""
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from backends.redis import RedisServer
from conftest import assert_gateway_error, free_port, request, upstream, wait_until

@pytest.fixture
def redis_server(tmp_path):
    """Factory: redis_server(extra=(), port=None) -> started RedisServer, stopped by PID."""
    started = []

    def start(extra=(), port=None):
        r = RedisServer(tmp_path / f"redis{len(started)}", extra, port).start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def limited(rate, per="hour", burst=None, **more):
    f = {"type": "rate_limit", "rate": rate, "per": per, "store": "redis"}
    if burst:
        f["burst"] = burst
    f.update(more)
    return f


def gateway(sluice, b, r, filters, workers=2, admin=False, timeout_ms=500, **redis_more):
    cfg = {"workers": workers,
           "upstreams": {"api": upstream(b.address)},
           "routes": [{"name": "api", "upstream": "api", "filters": filters}],
           "redis": dict({"address": r.address, "timeout_ms": timeout_ms}, **redis_more)}
    if admin:
        cfg["admin"] = {"address": f"127.0.0.1:{free_port()}"}
    return sluice(cfg)


def get(port, headers=None, timeout=10):
    """One GET on a new connection (so workers take turns): (status, header dict, seconds)."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers=headers or {})
        r = conn.getresponse()
        r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, time.monotonic() - start
    finally:
        conn.close()


def metric(s, name):
    _, port = s.admin
    total = 0.0
    for line in request(port, "GET", "/metrics").body.decode().splitlines():
        if line.startswith(name):
            total += float(line.split()[-1])
    return total


def wait_store_answers(s, timeout=15.0):
    """Until every worker's connection answers again: requests on fresh keys carry
    the RateLimit headers (Redis decided) ten times in a row."""
    streak = [0]

    def answered():
        status, h, _ = get(s.port, {"X-Client": f"probe-{time.monotonic_ns()}"})
        streak[0] = streak[0] + 1 if (status == 200 and "ratelimit-limit" in h) else 0
        return streak[0] >= 10
    wait_until(answered, timeout=timeout, interval=0.05, what="redis to answer again")


def test_burst_then_429_with_headers(sluice, backend, redis_server):
    b = backend("api")
    r = redis_server()
    s = gateway(sluice, b, r, [limited(3, "minute")], admin=True)
    for i in range(3):
        status, h, _ = get(s.port)
        assert status == 200
        assert h["ratelimit-limit"] == "3"
        assert h["ratelimit-remaining"] == str(2 - i)
        assert 1 <= int(h["ratelimit-reset"]) <= 20 * (i + 1) + 1
    resp = s.request("GET", "/")
    assert_gateway_error(resp, 429)
    assert resp.header("RateLimit-Remaining") == "0"
    assert 1 <= int(resp.header("Retry-After")) <= 20
    assert b.count == 3
    # The bucket is one hash in Redis, named after the filter, with a TTL.
    keys = r.command("KEYS", "sluice:rl:*")
    assert keys == [b"sluice:rl:routes[0].filters[0]:3/60/3:ip:127.0.0.1"], keys
    assert 0 < r.command("PTTL", keys[0]) <= 61000
    assert metric(s, "sluice_rate_limit_store_errors_total") == 0
    assert metric(s, "sluice_rate_limit_store_duration_seconds_count") >= 4


def run_clients(ports, clients, per_client):
    """`clients` concurrent clients spread over `ports`, each sending `per_client`
    requests on its own keep-alive connection; returns every status."""
    def client(i):
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", ports[i % len(ports)], timeout=30)
        try:
            for _ in range(per_client):
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                out.append(resp.status)
        finally:
            conn.close()
        return out

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return [st for rs in pool.map(client, range(clients), timeout=180) for st in rs]


def test_exact_across_three_instances(sluice, backend, redis_server):
    """Issue 11: three instances with two workers each share one Redis; 300
    concurrent clients spread over them; limit 100: exactly 100 pass."""
    b = backend("api")
    r = redis_server()
    gws = [gateway(sluice, b, r, [limited(100, "hour", 100)], admin=True) for _ in range(3)]
    statuses = run_clients([g.port for g in gws], 300, 3)
    assert len(statuses) == 900
    counts = {c: statuses.count(c) for c in set(statuses)}
    assert statuses.count(200) == 100, counts
    assert statuses.count(429) == 800, counts
    assert b.count == 100
    assert sum(metric(g, "sluice_rate_limit_store_errors_total") for g in gws) == 0
    print(f"exactness: {statuses.count(200)} allowed of limit 100, "
          f"3 instances x 2 workers, 300 clients, 900 requests")


def test_at_100_per_minute_three_instances(sluice, backend, redis_server):
    """The issue's numbers verbatim: 100 pass, plus at most the tokens that
    returned while the test ran (one per 0.6 s), never fewer."""
    b = backend("api")
    r = redis_server()
    gws = [gateway(sluice, b, r, [limited(100, "minute")]) for _ in range(3)]
    start = time.monotonic()
    statuses = run_clients([g.port for g in gws], 300, 2)
    elapsed = time.monotonic() - start
    passed = statuses.count(200)
    assert 100 <= passed <= 100 + int(elapsed / 0.6) + 1, (passed, elapsed)
    assert passed + statuses.count(429) == 600
