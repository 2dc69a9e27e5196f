"""SPEC 1 (signals), 3.4 last paragraph, 7 (reload, shutdown)."""
import http.client
import signal
import socket
import threading
import time

import pytest

from conftest import conn_request, request, upstream, wait_until


def respond_config(body, extra_routes=()):
    return {"routes": list(extra_routes) + [{"name": "r", "respond": {"status": 200,
                                                                      "body": body}}]}


def reconfigure(s, config):
    cfg = dict(s.config)
    cfg.update(config)
    s.write_config(cfg)
    s.reload()


def test_reload_changes_respond_body(sluice):
    s = sluice(respond_config("v1"))
    assert s.request("GET", "/").body == b"v1"
    reconfigure(s, respond_config("v2"))
    wait_until(lambda: s.request("GET", "/").body == b"v2", 5, what="reload")
    assert s.running()


def test_keepalive_connection_uses_new_config(sluice):
    s = sluice(respond_config("v1"))
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    assert conn_request(conn, "GET", "/").body == b"v1"
    reconfigure(s, respond_config("v2"))
    wait_until(lambda: s.request("GET", "/").body == b"v2", 5, what="reload")
    sock = conn.sock
    r = conn_request(conn, "GET", "/")
    assert conn.sock is sock, "the keep-alive connection stayed open across the reload"
    assert r.body == b"v2"
    conn.close()


def test_inflight_request_finishes_under_old_config(sluice, backend):
    b = backend("slow")
    slow_route = {"match": {"prefix": "/slow"}, "upstream": "slow"}
    s = sluice(dict(respond_config("v1", [slow_route]), upstreams={"slow": upstream(b.address)}))
    result = {}

    def slow():
        result["r"] = request(s.port, "GET", "/slow", headers={"X-Echo-Delay-Ms": "1000"})

    t = threading.Thread(target=slow)
    t.start()
    wait_until(lambda: b.count == 1, 5, what="request at the backend")
    new_slow = {"match": {"prefix": "/slow"}, "respond": {"status": 200, "body": "new"}}
    reconfigure(s, respond_config("v2", [new_slow]))
    wait_until(lambda: s.request("GET", "/").body == b"v2", 5, what="reload")
    t.join(10)
    r = result["r"]
    assert r.status == 200 and r.json()["backend"] == "slow"
    assert s.request("GET", "/slow").body == b"new"


def test_invalid_new_config_is_rejected(sluice):
    s = sluice(respond_config("v1"))
    good = dict(s.config)
    s.write_config(text='{ "listen": [ oops ] }')
    s.reload()
    time.sleep(1.0)
    assert s.running()
    assert s.request("GET", "/").body == b"v1"
    assert "syntax error" in s.stderr(), s.stderr()
    bad = dict(good)
    bad["routes"] = [{"upstream": "nowhere"}]
    s.write_config(bad)
    s.reload()
    time.sleep(1.0)
    assert s.request("GET", "/").body == b"v1"
    assert "nowhere" in s.stderr()
    reconfigure(s, respond_config("v3"))
    wait_until(lambda: s.request("GET", "/").body == b"v3", 5, what="reload after a bad one")


def test_sigterm_drains_inflight_request(sluice, backend):
    b = backend("slow")
    s = sluice({"limits": {"drain_timeout_ms": 5000},
                "upstreams": {"slow": upstream(b.address)}, "routes": [{"upstream": "slow"}]})
    result = {}
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)

    def slow():
        result["r"] = conn_request(conn, "GET", "/", headers={"X-Echo-Delay-Ms": "1000"})

    t = threading.Thread(target=slow)
    t.start()
    wait_until(lambda: b.count == 1, 5, what="request at the backend")
    start = time.monotonic()
    s.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # Listeners are closed while draining: a new connection is refused.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
    t.join(10)
    r = result["r"]
    assert r.status == 200 and r.json()["backend"] == "slow"
    assert (r.header("connection") or "").lower() == "close"
    conn.close()
    assert s.wait_exit(6) == 0
    assert time.monotonic() - start < 5.0


def test_sigterm_when_idle_exits_quickly(sluice):
    s = sluice(dict(respond_config("v1"), limits={"drain_timeout_ms": 10000}))
    # An idle keep-alive connection does not hold the drain up.
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    assert conn_request(conn, "GET", "/").body == b"v1"
    start = time.monotonic()
    assert s.stop(signal.SIGTERM, timeout=5) == 0
    assert time.monotonic() - start < 2.0
    conn.close()


def test_sigint_drains_like_sigterm(sluice):
    s = sluice(respond_config("v1"))
    assert s.stop(signal.SIGINT, timeout=5) == 0


def test_second_sigint_exits_1_at_once(sluice, backend):
    b = backend("slow")
    s = sluice({"limits": {"drain_timeout_ms": 10000},
                "upstreams": {"slow": upstream(b.address)}, "routes": [{"upstream": "slow"}]})

    def slow():
        try:
            request(s.port, "GET", "/", headers={"X-Echo-Delay-Ms": "4000"}, timeout=10)
        except (OSError, http.client.HTTPException):
            pass

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    wait_until(lambda: b.count == 1, 5, what="request at the backend")
    s.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert s.running(), "the first SIGINT drains; the slow request is still in flight"
    start = time.monotonic()
    s.send_signal(signal.SIGINT)
    assert s.wait_exit(3) == 1
    assert time.monotonic() - start < 2.0
    t.join(10)
