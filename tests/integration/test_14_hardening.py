"""Issue 12 section 1, defects 3, 4, 6 and 7 (SPEC 7 rows "Host" and "slow
readers"): a Host named in Connection is still forwarded, invalid Host
values are 400, HTTP/2 streams a client never lets move are reset, and slow
readers are slowed (not cut) while readers that stop are closed and logged
with an error."""
import json
import sys
import time

import pytest

from conftest import RawConn, assert_gateway_error, upstream


@pytest.fixture
def proxied(sluice, backend):
    b = backend("api")
    s = sluice({"upstreams": {"api": upstream(b.address)}, "routes": [{"upstream": "api"}]})
    return s, b


# --------------------------------------------------------------------------
# defect 6: Connection: Host


@pytest.mark.parametrize("named", [b"Host", b"host, Content-Length", b"close, Host, X-Drop"])
def test_connection_naming_host_keeps_host(proxied, named):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"POST /h HTTP/1.1\r\nHost: example.test:81\r\nConnection: " + named +
               b"\r\nX-Drop: 1\r\nContent-Length: 3\r\n\r\nabc")
        r = c.read_response()
    assert r.status == 200, r
    got = r.json()
    assert got["headers"].get("host") == "example.test:81", got["headers"]
    assert got["body_length"] == 3
    assert "x-drop" not in got["headers"] or b"X-Drop" not in named


# --------------------------------------------------------------------------
# defect 7: invalid Host values


BAD_HOSTS = {
    "space": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "userinfo": b"GET / HTTP/1.1\r\nHost: a@evil\r\n\r\n",
    "bad_port": b"GET / HTTP/1.1\r\nHost: a:x\r\n\r\n",
    "slash": b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "ipv6_unclosed": b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
    "absolute_userinfo": b"GET http://user@b:x/y HTTP/1.1\r\nHost: ok\r\n\r\n",
    "absolute_userinfo_port": b"GET http://user@b:80/y HTTP/1.1\r\nHost: ok\r\n\r\n",
    "with_body": b"POST / HTTP/1.1\r\nHost: a@evil\r\nContent-Length: 3\r\n\r\nabc",
}


@pytest.mark.parametrize("name", sorted(BAD_HOSTS))
def test_invalid_host_is_400_and_closed(proxied, name):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(BAD_HOSTS[name])
        r = c.read_response()
        assert_gateway_error(r, 400)
        assert c.closed_within(3), "the connection must be closed after a 400"
    time.sleep(0.2)
    assert b.requests == [], b.requests


@pytest.mark.parametrize("host", [b"example.com", b"example.com:8080", b"127.0.0.1:1",
                                  b"[::1]:8443", b""])
def test_valid_hosts_forwarded(proxied, host):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"GET /v HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["headers"].get("host", "") == host.decode()


def test_absolute_form_authority_forwarded_as_host(proxied):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"GET http://b.test:81/y HTTP/1.1\r\nHost: other\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["headers"]["host"] == "b.test:81"


@pytest.mark.parametrize("authority,status", [("a@evil", 400), ("a b", 400), ("h:x", 400),
                                              ("good.test:8", 200)])
def test_h2_authority_validated(sluice, backend, authority, status):
    from test_21_http2 import H2Client, gateway
    b = backend("b")
    s = gateway(sluice, b)
    with H2Client(s.port, validate=False) as c:
        sid = c.conn.get_next_available_stream_id()
        from test_21_http2 import H2Stream
        c.streams[sid] = H2Stream()
        c.conn.send_headers(sid, [(":method", "GET"), (":path", "/a"), (":scheme", "http"),
                                  (":authority", authority)], end_stream=True)
        c.flush()
        assert c.wait(lambda: c.done(sid), 10)
        st = c.streams[sid]
    if status == 400:
        # nghttp2 itself resets a stream whose :authority has bytes outside
        # RFC 3986 (PROTOCOL_ERROR); the gateway answers the rest with 400.
        assert (st.reset is None and int(st.status) == 400) or st.reset == 1, (st.status, st.reset)
        time.sleep(0.2)
        assert b.requests == []
        return
    assert st.reset is None and int(st.status) == status, (st.status, st.reset)
    assert json.loads(bytes(st.body))["headers"]["host"] == authority


# --------------------------------------------------------------------------
# defect 3: HTTP/2 streams a client never lets move


def window_zero_client(port):
    """An h2 client that sets SETTINGS_INITIAL_WINDOW_SIZE 0: no DATA can reach it."""
    import h2.settings
    from test_21_http2 import H2Client
    c = H2Client(port)
    c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    c.flush()
    return c


def h2_gateway(sluice, b, log=None, body_timeout_ms=500, timeout_ms=30000, env=None):
    from test_21_http2 import gateway
    extra = {"limits": {"body_timeout_ms": body_timeout_ms}}
    if log:
        extra["access_log"] = {"path": str(log)}
    cfg_up = upstream(b.address)
    cfg_up["timeout_ms"] = timeout_ms
    return gateway(sluice, routes=[{"upstream": "b"}], upstreams={"b": cfg_up}, env=env, **extra)


def test_h2_window_zero_streams_are_reset(sluice, backend, tmp_path):
    from conftest import wait_until
    b = backend("b")
    log = tmp_path / "access.log"
    s = h2_gateway(sluice, b, log)
    with window_zero_client(s.port) as c:
        sids = [c.start("GET", f"/big{i}", headers=[("x-echo-bytes", str(4 << 20))])
                for i in range(4)]
        t0 = time.monotonic()
        assert c.wait(lambda: all(c.done(sid) for sid in sids), 6), \
            [(c.streams[i].status, c.streams[i].reset) for i in sids]
        took = time.monotonic() - t0
        for sid in sids:
            st = c.streams[sid]
            assert st.reset is not None and not st.ended, (sid, st.reset)
            assert len(st.body) == 0
    assert took < 4, took
    wait_until(lambda: len(log.read_text().splitlines()) >= 4, what="four access log lines")
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        assert rec.get("error"), rec


def test_h2_window_zero_memory_bounded(sluice, backend):
    """Several window-0 connections, one after the other, each with streams
    of large responses: every one is reset and RSS does not keep growing."""
    from conftest import RSS_ENV
    b = backend("b")
    s = h2_gateway(sluice, b, env=RSS_ENV)
    rss = []
    for round_ in range(4):
        conns = [window_zero_client(s.port) for _ in range(3)]
        try:
            sids = [[c.start("GET", f"/r{round_}", headers=[("x-echo-bytes", str(8 << 20))])
                     for _ in range(10)] for c in conns]
            for c, ids in zip(conns, sids):
                assert c.wait(lambda: all(c.done(i) for i in ids), 8)
        finally:
            for c in conns:
                c.close()
        time.sleep(0.3)
        rss.append(s.rss_kib())
    # The first round warms the allocator up; later rounds must not add to it.
    assert rss[-1] - rss[1] < 8 * 1024, rss


def test_h2_connection_not_read_is_closed(sluice, backend):
    """A client that never reads its socket at all: the gateway's output does
    not move, so the connection is closed within a few body timeouts."""
    import socket
    b = backend("b")
    s = h2_gateway(sluice, b)
    from test_21_http2 import H2Client
    import h2.settings
    c = H2Client(s.port)
    # Windows wide open: only the unread socket stops the gateway.
    c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16 << 20})
    c.flush()
    try:
        for i in range(2):
            c.start("GET", f"/n{i}", headers=[("x-echo-bytes", str(16 << 20))])
        time.sleep(4)  # the gateway's output is stuck for 8 body timeouts
        c.sock.settimeout(5)
        closed = False
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:
                if not c.sock.recv(1 << 20):
                    closed = True
                    break
        except (ConnectionResetError, socket.timeout):
            closed = isinstance(sys.exc_info()[1], ConnectionResetError)
        assert closed, "the gateway kept a connection whose output never moved"
    finally:
        c.close()


# --------------------------------------------------------------------------
# defect 4: slow readers are slowed, stopped readers are closed and logged

MiB = 1 << 20
SLOW_SIZE = 8 * MiB


def serve_big(chunked):
    """A raw upstream that answers every request with SLOW_SIZE pattern bytes
    as fast as the gateway takes them (Content-Length, or chunked)."""
    from conftest import pattern_bytes
    body = pattern_bytes(SLOW_SIZE)

    def handler(conn, backend):
        from backends.raw import ServerSide
        side = ServerSide(conn)
        backend.record(side.read_until(b"\r\n\r\n"))
        if chunked:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for off in range(0, len(body), 65536):
                part = body[off:off + 65536]
                conn.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
            conn.sendall(b"0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    return handler, body


def slow_gateway(sluice, raw_backend, tmp_path, chunked, timeout_ms, body_timeout_ms):
    handler, body = serve_big(chunked)
    b = raw_backend(handler)
    log = tmp_path / "access.log"
    up = upstream(b.address)
    up["timeout_ms"] = timeout_ms
    s = sluice({"upstreams": {"api": up}, "routes": [{"upstream": "api"}],
                "limits": {"body_timeout_ms": body_timeout_ms},
                "access_log": {"path": str(log)}})
    return s, b, body, log


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_slow_reader_gets_the_whole_body(sluice, raw_backend, tmp_path, chunked):
    """8 MiB read in bursts at about 1 MiB/s with the upstream's timeout_ms at 1000:
    the gateway stops reading the upstream meanwhile, and that is not the
    upstream's silence."""
    import hashlib
    from conftest import wait_until
    s, b, body, log = slow_gateway(sluice, raw_backend, tmp_path, chunked, 1000, 30000)
    c = RawConn(s.port, timeout=20, rcvbuf=65536)
    try:
        c.sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = bytearray()
        t0 = time.monotonic()
        # Bursts: 2 MiB as fast as it comes, then nothing for 1.5 s (longer
        # than the upstream's timeout_ms, shorter than body_timeout_ms).
        burst = 2 * MiB
        eof = False
        while not eof and time.monotonic() - t0 < 20:
            want = len(data) + burst
            while len(data) < want:
                try:
                    chunk = c.sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    eof = True
                    break
                data += chunk
            if not eof:
                time.sleep(1.5)
    finally:
        c.close()
    head, _, got = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    if chunked:
        from conftest import parse_one_response
        got = parse_one_response(bytes(data)).body
    assert len(got) == len(body), f"cut at {len(got)} of {len(body)}"
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    assert time.monotonic() - t0 > 4  # it really was slow
    wait_until(lambda: log.exists() and log.read_text().strip(), what="the access log line")
    rec = json.loads(log.read_text().splitlines()[-1])
    assert rec["status"] == 200 and not rec.get("error"), rec


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_stopped_reader_is_closed_and_logged(sluice, raw_backend, tmp_path, chunked):
    """A client that reads nothing: closed after body_timeout_ms (not after the
    upstream's 30 s), and the access log line carries an error."""
    from conftest import wait_until
    s, b, body, log = slow_gateway(sluice, raw_backend, tmp_path, chunked, 30000, 1000)
    c = RawConn(s.port, timeout=20, rcvbuf=65536)
    try:
        c.sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        wait_until(lambda: log.exists() and log.read_text().strip(), timeout=6,
                   what="the access log line of the cut transfer")
        assert time.monotonic() - t0 < 5
        # What the kernel buffered still arrives, then the connection ends, cut short.
        data = c.read_all(timeout=10)
        assert len(data) < len(body), len(data)
    finally:
        c.close()
    rec = json.loads(log.read_text().splitlines()[-1])
    assert rec.get("error") == "request_timeout", rec
