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


def h2_gateway(sluice, b, log=None, body_timeout_ms=500, timeout_ms=30000):
    from test_21_http2 import gateway
    extra = {"limits": {"body_timeout_ms": body_timeout_ms}}
    if log:
        extra["access_log"] = {"path": str(log)}
    cfg_up = upstream(b.address)
    cfg_up["timeout_ms"] = timeout_ms
    return gateway(sluice, routes=[{"upstream": "b"}], upstreams={"b": cfg_up}, **extra)


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
    b = backend("b")
    s = h2_gateway(sluice, b)
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
