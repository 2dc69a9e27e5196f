"""SPEC 2.1 `redis` and SPEC 4 `rate_limit` with `store: "redis"` (issue 11
item 3), through the real binary and a real redis-server on loopback.

Exactness uses rate 100 per hour with burst 100 (the issue's limit of 100,
with one token taking 36 s to return), so that the count is exact whatever
the machine's speed: at 100 per minute a token returns every 0.6 s, and a
loaded machine could see one come back during the run. The per-minute
numbers are checked with that allowance, as test_41 does for the local store.
"""
import http.client
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from backends.redis import RedisServer
from conftest import (assert_gateway_error, free_port, keepalive_clients, request, upstream,
                      wait_until)

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


def test_exact_across_three_instances(sluice, backend, redis_server):
    """Issue 11: three instances with two workers each share one Redis; 300
    concurrent clients spread over them; limit 100: exactly 100 pass."""
    b = backend("api")
    r = redis_server()
    gws = [gateway(sluice, b, r, [limited(100, "hour", 100)], admin=True) for _ in range(3)]
    statuses = keepalive_clients([g.port for g in gws], 300, 3)
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
    statuses = keepalive_clients([g.port for g in gws], 300, 2)
    elapsed = time.monotonic() - start
    passed = statuses.count(200)
    assert 100 <= passed <= 100 + int(elapsed / 0.6) + 1, (passed, elapsed)
    assert passed + statuses.count(429) == 600
    print(f"100 per minute: {passed} allowed in {elapsed:.1f} s, 3 instances, 300 clients")


def burst_of(port, n, clients=10, key=None):
    """n requests from `clients` concurrent clients, each on a new connection:
    [(status, headers, seconds)]."""
    headers = {"X-Client": key} if key else None
    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(lambda _: get(port, headers), range(n), timeout=120))


def p99(results):
    times = sorted(t for _, _, t in results)
    return times[min(len(times) - 1, int(len(times) * 0.99))]


@pytest.mark.parametrize("mode", ["allow", "deny"])
def test_redis_stopped_then_restarted(sluice, backend, redis_server, mode):
    """Redis stopped mid-run: on_store_error decides at once, no stall; Redis
    back (a new process, empty): exact again once the workers reconnected."""
    b = backend("api")
    r = redis_server()
    timeout_ms = 300
    s = gateway(sluice, b, r, [limited(3, "hour", key="header:X-Client", on_store_error=mode)],
                admin=True, timeout_ms=timeout_ms)
    assert [get(s.port, {"X-Client": "a"})[0] for _ in range(4)] == [200, 200, 200, 429]

    r.stop()
    results = burst_of(s.port, 100, key="a")
    want = 200 if mode == "allow" else 503
    assert [st for st, _, _ in results] == [want] * 100
    # Nothing known of the bucket: no RateLimit headers on a pass decided without Redis.
    assert all("ratelimit-limit" not in h for _, h, _ in results)
    if mode == "deny":
        assert all(h.get("content-type", "").startswith("application/json") for _, h, _ in results)
    assert p99(results) < timeout_ms / 1000 + 2.0, p99(results)
    print(f"redis stopped, {mode}: p99 {p99(results) * 1000:.1f} ms (timeout_ms {timeout_ms})")
    assert metric(s, "sluice_rate_limit_store_errors_total") >= 100

    r2 = redis_server(port=r.port)
    wait_store_answers(s)
    statuses = [st for st, _, _ in burst_of(s.port, 20, key="a")]
    assert statuses.count(200) == 3 and statuses.count(429) == 17, statuses
    assert r2.command("EXISTS", "sluice:rl:routes[0].filters[0]:3/3600/3:header:x-client:a") == 1


def test_redis_stalled_answers_within_timeout(sluice, backend, redis_server):
    """A server that accepts but never answers (SIGSTOP): the first requests wait
    timeout_ms, then the connection is dropped and the rest are answered at once."""
    b = backend("api")
    r = redis_server()
    timeout_ms = 300
    s = gateway(sluice, b, r, [limited(100, "hour", key="header:X-Client", on_store_error="deny")],
                admin=True, timeout_ms=timeout_ms)
    assert get(s.port, {"X-Client": "a"})[0] == 200
    r.pause()
    try:
        results = burst_of(s.port, 60, key="a")
        assert [st for st, _, _ in results] == [503] * 60
        assert p99(results) < timeout_ms / 1000 + 2.0, p99(results)
        print(f"redis stalled: p99 {p99(results) * 1000:.1f} ms (timeout_ms {timeout_ms})")
        assert metric(s, "sluice_rate_limit_store_errors_total{reason=\"timeout\"}") >= 1
    finally:
        r.resume()
    wait_store_answers(s)
    status, h, _ = get(s.port, {"X-Client": "a"})
    # Calls that timed out were still in the stopped server's socket buffer and
    # ran when it resumed: they count (never more than were sent), so a stall
    # errs towards refusing, never towards over-admitting.
    assert status == 200 and 98 - 60 <= int(h["ratelimit-remaining"]) <= 98, h


def test_auth_and_database(sluice, backend, redis_server):
    b = backend("api")
    r = redis_server(extra=["--requirepass", "s3cret"])
    s = gateway(sluice, b, r, [limited(2, "hour")], password="s3cret", database=5)
    assert [get(s.port)[0] for _ in range(3)] == [200, 200, 429]
    key = "sluice:rl:routes[0].filters[0]:2/3600/2:ip:127.0.0.1"
    assert r.command("EXISTS", key, db=5) == 1
    assert r.command("EXISTS", key, db=0) == 0
    # Less than one token (3600 s of microseconds) left, and a TTL.
    assert 0 <= int(r.command("HGET", key, "t", db=5)) < 3600 * 10**6
    assert 0 < r.command("PTTL", key, db=5) <= (3600 + 1) * 1000


def test_wrong_password_is_a_store_error(sluice, backend, redis_server):
    b = backend("api")
    r = redis_server(extra=["--requirepass", "s3cret"])
    s = gateway(sluice, b, r, [limited(2, "hour", on_store_error="deny")], password="wrong")
    resp = s.request("GET", "/")
    assert_gateway_error(resp, 503)
    wait_until(lambda: "AUTH failed" in s.stderr(), timeout=10, what="the AUTH error logged")


def test_noscript_recovery(sluice, backend, redis_server):
    """SCRIPT FLUSH on the server mid-run: the next calls send the script again
    (EVAL) and the count stays exact."""
    b = backend("api")
    r = redis_server()
    s = gateway(sluice, b, r, [limited(6, "hour")], admin=True)
    assert [get(s.port)[0] for _ in range(3)] == [200] * 3
    assert r.command("SCRIPT", "FLUSH") == "OK"
    assert [get(s.port)[0] for _ in range(5)] == [200, 200, 200, 429, 429]
    assert metric(s, "sluice_rate_limit_store_errors_total") == 0


def test_reload_keeps_the_shared_bucket(sluice, backend, redis_server):
    """A reload makes new connections (the old ones are freed with their views);
    the bucket lives in Redis, so an unchanged limit keeps counting."""
    b = backend("api")
    r = redis_server()
    s = gateway(sluice, b, r, [limited(4, "hour")], admin=True)
    assert [get(s.port)[0] for _ in range(2)] == [200, 200]
    for _ in range(3):
        s.reload()
        wait_until(lambda: metric(s, "sluice_config_reloads_total{result=\"ok\"}") >= 1,
                   timeout=10, what="the reload")
    assert [get(s.port)[0] for _ in range(3)] == [200, 200, 429]
    assert metric(s, "sluice_rate_limit_store_errors_total") == 0


def test_server_by_name(sluice, backend, redis_server):
    """A host name is resolved with the worker's resolver (never a blocking lookup);
    the calls made meanwhile wait for the first connect rather than fail."""
    b = backend("api")
    r = redis_server()
    s = gateway(sluice, b, r, [limited(2, "hour", on_store_error="deny")],
                address=f"localhost:{r.port}")
    assert [get(s.port)[0] for _ in range(3)] == [200, 200, 429]


def test_unix_socket(sluice, backend, redis_server, tmp_path):
    b = backend("api")
    sock = tmp_path / "redis.sock"
    redis_server(extra=["--unixsocket", str(sock), "--unixsocketperm", "700"])
    wait_until(sock.exists, timeout=10, what="the redis socket")
    cfg = {"upstreams": {"api": upstream(b.address)},
           "routes": [{"upstream": "api", "filters": [limited(2, "hour", on_store_error="deny")]}],
           "redis": {"address": f"unix:{sock}"}}
    s = sluice(cfg)
    assert [get(s.port)[0] for _ in range(3)] == [200, 200, 429]
