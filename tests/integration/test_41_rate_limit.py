"""SPEC 4 and 7 "rate_limit", issue 8 items 4 and 6: the token bucket with
the local store, through the real binary.

The exactness test is the issue's: limit 100 per minute, 2 workers, 50
concurrent clients, 1000 requests: exactly 100 pass. A minute-long period
makes refill during the test negligible (one token per 0.6 s; the test's
requests all go out within a few seconds, so at most a handful of tokens
could come back, and the bucket starts full at burst = 100): to keep the
count exact regardless of the machine's speed, the exactness test uses
rate 100 per hour with burst 100, where one token takes 36 s to return."""
import http.client
import re
import time

from conftest import RSS_ENV, assert_gateway_error, free_port, keepalive_clients, request, upstream

METRIC_RE = re.compile(r'^sluice_rate_limited_total\{route="([^"]*)"\}\s+(\S+)$')


def gateway(sluice, b, filters, workers=2, admin=False, **route):
    cfg = {"workers": workers,
           "upstreams": {"api": upstream(b.address)},
           "routes": [dict({"name": "api", "upstream": "api", "filters": filters}, **route)]}
    if admin:
        cfg["admin"] = {"address": f"127.0.0.1:{free_port()}"}
    return sluice(cfg)


def rate_limited_total(s, route):
    _, port = s.admin
    body = request(port, "GET", "/metrics").body.decode()
    for line in body.splitlines():
        m = METRIC_RE.match(line)
        if m and m.group(1) == route:
            return float(m.group(2))
    return 0.0


def test_burst_then_429_with_headers(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, [{"type": "rate_limit", "rate": 3, "per": "minute"}], admin=True)
    for i in range(3):
        r = s.request("GET", "/x")
        assert r.status == 200, r
        # Headers on the upstream's own response (on_response), SPEC 7 values.
        assert r.header("RateLimit-Limit") == "3"
        assert r.header("RateLimit-Remaining") == str(2 - i)
        reset = int(r.header("RateLimit-Reset"))
        assert 1 <= reset <= 20 * (i + 1) + 1, r  # 20 s per missing token, rounded up
    r = s.request("GET", "/x")
    assert_gateway_error(r, 429)
    assert r.header("RateLimit-Limit") == "3"
    assert r.header("RateLimit-Remaining") == "0"
    retry = int(r.header("Retry-After"))
    assert 1 <= retry <= 20, r  # one token returns within 20 s
    assert 40 <= int(r.header("RateLimit-Reset")) <= 60, r
    assert b.count == 3  # the 429 never reached the upstream
    assert rate_limited_total(s, "api") == 1


def test_per_second_refills(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, [{"type": "rate_limit", "rate": 2, "burst": 2}])
    assert [s.request("GET", "/").status for _ in range(3)] == [200, 200, 429]
    r = s.request("GET", "/")
    assert r.status == 429 and r.header("Retry-After") == "1"
    time.sleep(1.1)  # two tokens back at 2 per second
    assert [s.request("GET", "/").status for _ in range(3)] == [200, 200, 429]


def test_header_key_separates_clients_and_falls_back_to_ip(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, [{"type": "rate_limit", "rate": 1, "per": "hour",
                             "key": "header:X-Client-Id"}])
    assert s.request("GET", "/", headers={"X-Client-Id": "a"}).status == 200
    assert s.request("GET", "/", headers={"X-Client-Id": "a"}).status == 429
    assert s.request("GET", "/", headers={"X-Client-Id": "b"}).status == 200
    # No header: the peer IP is the key, a bucket of its own.
    assert s.request("GET", "/").status == 200
    assert s.request("GET", "/").status == 429


def get_from(port, source_ip):
    """One GET from a given loopback source address (127.0.0.0/8 is all local)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source_ip, 0))
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def test_ip_key_separates_peers(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, [{"type": "rate_limit", "rate": 1, "per": "hour"}])
    assert get_from(s.port, "127.0.0.2") == 200
    assert get_from(s.port, "127.0.0.2") == 429
    assert get_from(s.port, "127.0.0.3") == 200
    # X-Forwarded-For is the client's say, not the peer: it does not make a new key.
    r = s.request("GET", "/", headers={"X-Forwarded-For": "9.9.9.9"})
    assert r.status == 200
    assert s.request("GET", "/", headers={"X-Forwarded-For": "8.8.8.8"}).status == 429


def test_route_key_is_shared_by_every_client(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, [{"type": "rate_limit", "rate": 2, "per": "hour", "key": "route"}])
    assert get_from(s.port, "127.0.0.2") == 200
    assert get_from(s.port, "127.0.0.3") == 200
    assert get_from(s.port, "127.0.0.4") == 429


def test_consumer_key_without_auth_falls_back_to_ip(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, [{"type": "rate_limit", "rate": 1, "per": "hour", "key": "consumer"}])
    assert s.request("GET", "/").status == 200
    assert s.request("GET", "/").status == 429


def test_headers_on_gateway_made_responses(sluice, backend):
    """A later filter's or the route's own answer carries the headers too."""
    b = backend("api")
    cfg = {"routes": [{"name": "r", "respond": {"status": 200, "body": "hi"},
                       "filters": [{"type": "rate_limit", "rate": 5}]}]}
    s = sluice(cfg)
    r = s.request("GET", "/")
    assert r.status == 200 and r.body == b"hi"
    assert r.header("RateLimit-Limit") == "5" and r.header("RateLimit-Remaining") == "4"
    assert r.header("RateLimit-Reset") == "1"


def test_global_filter_applies_per_route(sluice, backend):
    b = backend("api")
    s = sluice({"upstreams": {"api": upstream(b.address)},
                "filters": [{"type": "rate_limit", "rate": 1, "per": "hour", "key": "route"}],
                "routes": [{"name": "one", "match": {"prefix": "/one"}, "upstream": "api"},
                           {"name": "two", "match": {"prefix": "/two"}, "upstream": "api"}]})
    assert s.request("GET", "/one").status == 200
    assert s.request("GET", "/two").status == 200
    assert s.request("GET", "/one").status == 429
    assert s.request("GET", "/two").status == 429


def test_exact_across_workers(sluice, backend):
    """Issue 8 item 7: 2 workers, 50 concurrent clients, 1000 requests: exactly 100 pass."""
    b = backend("api")
    s = gateway(sluice, b, [{"type": "rate_limit", "rate": 100, "per": "hour", "burst": 100}],
                workers=2, admin=True)
    start = time.monotonic()
    statuses = keepalive_clients([s.port], 50, 1000 // 50, timeout=120)
    assert time.monotonic() - start < 120
    assert len(statuses) == 1000
    assert statuses.count(200) == 100, {c: statuses.count(c) for c in set(statuses)}
    assert statuses.count(429) == 900
    assert b.count == 100
    assert rate_limited_total(s, "api") == 900


def test_exact_at_100_per_minute(sluice, backend):
    """The issue's numbers verbatim (per minute): 100 pass, plus at most the
    tokens that returned while the test ran (one per 0.6 s), never fewer."""
    b = backend("api")
    s = gateway(sluice, b, [{"type": "rate_limit", "rate": 100, "per": "minute"}], workers=2)
    start = time.monotonic()
    statuses = keepalive_clients([s.port], 50, 20, timeout=120)
    elapsed = time.monotonic() - start
    passed = statuses.count(200)
    assert len(statuses) == 1000
    assert 100 <= passed <= 100 + int(elapsed / 0.6) + 1, (passed, elapsed)
    assert passed + statuses.count(429) == 1000
    assert b.count == passed


def test_unique_key_flood_stays_bounded(sluice, backend):
    """Many distinct keys: memory stays bounded and the limit keeps working.
    (The hard bound, 131,072 buckets, is proven by the unit test; here the
    real process must not grow with keys beyond its table.)"""
    b = backend("api")
    s = sluice({"workers": 1, "upstreams": {"api": upstream(b.address)},
                "routes": [{"upstream": "api", "filters": [
                    {"type": "rate_limit", "rate": 1, "per": "hour", "key": "header:X-Key"}]}]},
               env=RSS_ENV)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)

    def get(key):
        conn.request("GET", "/", headers={"X-Key": key, "X-Echo-Status": "204"})
        r = conn.getresponse()
        r.read()
        return r.status

    try:
        # Warm up with the same traffic on one key: pools and caches reach their size.
        statuses = [get("warm") for _ in range(2000)]
        assert statuses.count(204) == 1 and statuses.count(429) == 1999
        before = s.rss_kib()
        for i in range(5000):
            assert get(f"k{i}") == 204
        assert get("k4999") == 429  # a key used just now is still limited
        grown = s.rss_kib() - before
    finally:
        conn.close()
    # 5000 buckets are about 120 KiB of slots (shards grow by doubling).
    assert grown < 8 * 1024, grown


def test_config_errors(sluice_bin, tmp_path):
    import json
    import subprocess
    cfg = {"listen": [{"address": f"127.0.0.1:{free_port()}"}],
           "upstreams": {"api": {"targets": ["127.0.0.1:9"]}},
           "routes": [{"upstream": "api", "filters": [
               {"type": "rate_limit", "rate": 10, "store": "redis"},
               {"type": "rate_limit", "per": "day", "key": "user"},
           ]}]}
    (tmp_path / "sluice.json").write_text(json.dumps(cfg))
    p = subprocess.run([sluice_bin, "-t", "-c", "sluice.json"], cwd=tmp_path,
                       capture_output=True, timeout=20)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert ("sluice.json: routes[0].filters[0].store: needs a Redis server: add a top-level "
            "\"redis\"") in err, err
    assert "routes[0].filters[1].rate: is required" in err, err
    assert "routes[0].filters[1].per: must be \"second\", \"minute\" or \"hour\"" in err, err
    assert "routes[0].filters[1].key: unknown key \"user\"" in err, err
