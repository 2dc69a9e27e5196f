"""Issue 12 section 1, defects 3, 4, 6 and 7 (SPEC 7 rows "Host" and "slow
readers"): a Host named in Connection is still forwarded, invalid Host
values are 400, HTTP/2 streams a client never lets move are reset, and slow
readers are slowed (not cut) while readers that stop are closed and logged
with an error."""
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
