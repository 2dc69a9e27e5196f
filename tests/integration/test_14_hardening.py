"""Issue 12 section 1, defects 3, 4, 6 and 7 (SPEC 7 rows "Host" and "slow
readers"): a Host named in Connection is still forwarded, invalid Host
values are 400, HTTP/2 streams a client never lets move are reset, and slow
readers are slowed (not cut) while readers that stop are closed and logged
with an error."""
import json
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
