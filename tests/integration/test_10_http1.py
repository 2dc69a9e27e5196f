"""SPEC 2.5, 3.1, 7: HTTP/1.x behaviour towards clients and upstreams."""
import http.client
import os
import time

import pytest

from conftest import (RawConn, ServerSide, assert_gateway_error, conn_request, pattern_bytes,
                      rec_header, sha256, upstream)


@pytest.fixture
def proxied(sluice, backend):
    b = backend("api")
    s = sluice({
        "upstreams": {"api": upstream(b.address)},
        "routes": [{"name": "api", "upstream": "api"}],
    })
    return s, b


def raw_upstream(sluice, raw_backend, handler, **limits):
    rb = raw_backend(handler)
    cfg = {"upstreams": {"raw": upstream(rb.address, retries=0)}, "routes": [{"upstream": "raw"}]}
    if limits:
        cfg["limits"] = limits
    return sluice(cfg), rb


def test_keepalive_reuse_one_client_connection(proxied):
    s, b = proxied
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    for i in range(300):
        r = conn_request(conn, "GET", f"/ka/{i}")
        assert r.status == 200
    conn.close()
    assert b.count == 300
    assert b.connections <= 2, b.peers


def test_keepalive_reuse_several_client_connections(proxied):
    s, b = proxied
    conns = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=10) for _ in range(5)]
    for i in range(40):
        for c in conns:
            assert conn_request(c, "GET", f"/ka/{i}").status == 200
    for c in conns:
        c.close()
    assert b.count == 200
    assert b.connections <= 6, b.peers


def test_pipelining_in_order(proxied):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"GET /p/1 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /p/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
               b"GET /p/3 HTTP/1.1\r\nHost: x\r\n\r\n")
        paths = [c.read_response().json()["path"] for _ in range(3)]
    assert paths == ["/p/1", "/p/2", "/p/3"]


def test_http10_closes_without_keepalive(proxied):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
        data = c.read_all(5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding" not in head.lower()
    assert b'"/old"' in body


def test_http10_keepalive_requested(proxied):
    s, b = proxied
    with RawConn(s.port) as c:
        for i in range(2):
            c.send(b"GET /old%d HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n" % i)
            r = c.read_response()
            assert r.status == 200
            assert r.header("connection", "").lower() == "keep-alive"
            assert r.header("transfer-encoding") is None
            assert r.json()["path"] == f"/old{i}"


def test_http10_client_chunked_upstream(sluice, raw_backend):
    def handler(conn, backend):
        ServerSide(conn).read_request(backend)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    s, _ = raw_upstream(sluice, raw_backend, handler)
    with RawConn(s.port) as c:
        c.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = c.read_all(5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower(), head
    assert body == b"hello world"


def test_expect_100_continue(proxied):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
               b"Expect: 100-continue\r\n\r\n")
        interim = c.read_response()
        assert interim.status == 100
        assert interim.version == "HTTP/1.1"
        c.send(b"hello world")
        r = c.read_response()
    assert r.status == 200
    assert r.json()["body_length"] == 11
    assert rec_header(b.last(), "expect") is None


def test_head_has_no_body(proxied):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response("HEAD")
        assert r.status == 200
        r2 = c.read_response()
        assert r2.status == 200 and r2.json()["path"] == "/after"
    assert b.requests[0]["method"] == "HEAD"


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(proxied, status):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"GET /nb HTTP/1.1\r\nHost: x\r\nX-Echo-Status: %d\r\n\r\n"
               b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n" % status)
        r = c.read_response()
        assert r.status == status
        assert r.header("transfer-encoding") is None
        r2 = c.read_response()
        assert r2.status == 200 and r2.json()["path"] == "/after"


def test_chunked_request_body(proxied):
    s, b = proxied
    body = os.urandom(300000)
    with RawConn(s.port) as c:
        c.send(b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for off in range(0, len(body), 70000):
            piece = body[off:off + 70000]
            c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            time.sleep(0.01)
        c.send(b"0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    assert r.json()["body_length"] == len(body)
    assert r.json()["body_sha256"] == sha256(body)


def test_chunked_response_from_upstream(sluice, raw_backend):
    chunks = [os.urandom(n) for n in (1, 1000, 65536, 7)]

    def handler(conn, backend):
        ServerSide(conn).read_request(backend)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in chunks:
            conn.sendall(b"%X\r\n" % len(chunk) + chunk + b"\r\n")
            time.sleep(0.01)
        conn.sendall(b"0\r\n\r\n")
        time.sleep(1)

    s, _ = raw_upstream(sluice, raw_backend, handler)
    r = s.request("GET", "/")
    assert r.status == 200
    assert r.body == b"".join(chunks)


def test_read_until_close_response_from_upstream(sluice, raw_backend):
    payload = os.urandom(200000)

    def handler(conn, backend):
        ServerSide(conn).read_request(backend)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        conn.sendall(payload)

    s, _ = raw_upstream(sluice, raw_backend, handler)
    r = s.request("GET", "/")
    assert r.status == 200
    assert r.body == payload


def test_header_bytes_limit_431(sluice):
    s = sluice({"limits": {"max_header_bytes": 4096},
                "routes": [{"respond": {"status": 200, "body": "ok"}}]})
    assert s.request("GET", "/", headers={"X-Big": "a" * 3000}).status == 200
    with RawConn(s.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        assert_gateway_error(c.read_response(), 431)


def test_header_count_limit_431(sluice):
    s = sluice({"limits": {"max_headers": 20},
                "routes": [{"respond": {"status": 200, "body": "ok"}}]})

    def send(n_extra):
        with RawConn(s.port) as c:
            extra = b"".join(b"X-H%d: v\r\n" % i for i in range(n_extra))
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
            return c.read_response()

    assert send(19).status == 200  # 20 fields, Host included
    assert_gateway_error(send(20), 431)  # 21 fields


def test_body_limit_413(sluice, backend):
    b = backend("api")
    s = sluice({"limits": {"max_body_bytes": 1000},
                "upstreams": {"api": upstream(b.address)}, "routes": [{"upstream": "api"}]})
    assert s.request("POST", "/", body=b"x" * 1000).status == 200
    with RawConn(s.port) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001)
        assert_gateway_error(c.read_response(), 413)
    assert b.count == 1
    with RawConn(s.port) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3e8\r\n" + b"y" * 1000 + b"\r\n10\r\n" + b"z" * 16 + b"\r\n0\r\n\r\n")
        assert_gateway_error(c.read_response(), 413)


def test_header_timeout_408_then_close(sluice):
    s = sluice({"limits": {"header_timeout_ms": 500},
                "routes": [{"respond": {"status": 200, "body": "ok"}}]})
    with RawConn(s.port) as c:
        start = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        r = c.read_response(timeout=5)
        elapsed = time.monotonic() - start
        assert_gateway_error(r, 408)
        assert 0.3 <= elapsed <= 3.0, elapsed
        assert c.closed_within(3)


def test_idle_keepalive_closed_silently(sluice):
    s = sluice({"limits": {"idle_timeout_ms": 500, "header_timeout_ms": 5000},
                "routes": [{"respond": {"status": 200, "body": "ok"}}]})
    with RawConn(s.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().body == b"ok"
        start = time.monotonic()
        assert c.closed_within(4)
        elapsed = time.monotonic() - start
        assert c.buf == b"", "idle close sends nothing"
        assert 0.3 <= elapsed <= 3.0, elapsed
    # A connection that keeps talking within the idle time stays open.
    with RawConn(s.port) as c:
        for _ in range(4):
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.read_response().body == b"ok"
            time.sleep(0.25)


def test_connection_close_from_client(proxied):
    s, _ = proxied
    with RawConn(s.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert c.read_response().status == 200
        assert c.closed_within(3)


def test_idle_connections_all_wake_at_once(sluice, backend):
    """An idle keep-alive connection holds no buffers and no write event
    (docs/internals/memory.md): 300 of them, idle after one request, all
    send two pipelined requests at once, the first answered with 256 KiB to
    clients with small receive buffers (the writes must wait), and every
    connection gets both answers, byte for byte."""
    b = backend()
    s = sluice({"upstreams": {"b": upstream(b.address)}, "routes": [{"upstream": "b"}],
                "workers": 1})
    big = 256 * 1024
    conns = [RawConn(s.port, timeout=60, rcvbuf=4096) for _ in range(300)]
    try:
        for c in conns:
            c.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in conns:
            assert c.read_response().status == 200
        time.sleep(0.2)  # every connection is idle now
        for c in conns:
            c.send(b"GET /big HTTP/1.1\r\nHost: x\r\nX-Echo-Bytes: %d\r\n\r\n"
                   b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n" % big)
        want = sha256(pattern_bytes(big))
        for c in conns:
            r = c.read_response()
            assert r.status == 200 and len(r.body) == big and sha256(r.body) == want
            r = c.read_response()
            assert r.status == 200 and b'"path": "/small"' in r.body
    finally:
        for c in conns:
            c.close()
    assert b.count == 900
