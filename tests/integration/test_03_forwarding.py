"""SPEC 3.1, 4 (headers filter), 7: what the upstream sees and what the
client gets back."""
import pytest

from conftest import (REQUEST_ID_RE, RawConn, ServerSide, http_response, rec_header,
                      upstream)


@pytest.fixture
def proxied(sluice, backend):
    b = backend("api")
    s = sluice({
        "upstreams": {"api": upstream(b.address)},
        "routes": [{"name": "api", "upstream": "api"}],
    })
    return s, b


def test_x_forwarded_for_appended(proxied):
    s, b = proxied
    s.request("GET", "/", headers={"X-Forwarded-For": "1.2.3.4"})
    assert rec_header(b.last(), "x-forwarded-for") == "1.2.3.4, 127.0.0.1"
    s.request("GET", "/")
    assert rec_header(b.last(), "x-forwarded-for") == "127.0.0.1"


def test_x_forwarded_proto_and_host_replaced(proxied):
    s, b = proxied
    s.request("GET", "/", headers={"Host": "example.test:8080", "X-Forwarded-Proto": "https",
                                   "X-Forwarded-Host": "evil.example"})
    rec = b.last()
    assert rec_header(rec, "x-forwarded-proto") == "http"
    assert rec_header(rec, "x-forwarded-host") == "example.test:8080"


def test_forwarded_header_untouched(proxied):
    s, b = proxied
    s.request("GET", "/", headers={"Forwarded": "for=192.0.2.60;proto=http;by=203.0.113.43"})
    assert rec_header(b.last(), "forwarded") == "for=192.0.2.60;proto=http;by=203.0.113.43"


def test_host_forwarded_unchanged(proxied):
    s, b = proxied
    s.request("GET", "/", headers={"Host": "api.example.test:1234"})
    assert rec_header(b.last(), "host") == "api.example.test:1234"


def test_valid_request_id_kept(proxied):
    s, b = proxied
    rid = "abc-123.X:y_z"
    r = s.request("GET", "/", headers={"X-Request-Id": rid})
    assert r.header("x-request-id") == rid
    assert rec_header(b.last(), "x-request-id") == rid
    long_ok = "a" * 200
    r = s.request("GET", "/", headers={"X-Request-Id": long_ok})
    assert r.header("x-request-id") == long_ok
    assert rec_header(b.last(), "x-request-id") == long_ok


@pytest.mark.parametrize("bad", ["a" * 201, "has space", "semi;colon", "slash/x", "é"])
def test_invalid_request_id_replaced(proxied, bad):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + bad.encode() + b"\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    seen = rec_header(b.last(), "x-request-id")
    assert seen != bad and REQUEST_ID_RE.match(seen), seen
    assert r.header("x-request-id") == seen


def test_generated_request_ids_are_unique(proxied):
    s, b = proxied
    ids = set()
    for _ in range(20):
        r = s.request("GET", "/")
        rid = r.header("x-request-id")
        assert rid and REQUEST_ID_RE.match(rid)
        assert rec_header(b.last(), "x-request-id") == rid
        ids.add(rid)
    assert len(ids) == 20


def test_hop_by_hop_request_headers_removed(proxied):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"GET /hop HTTP/1.1\r\nHost: x\r\n"
               b"Connection: keep-alive, X-Foo\r\nX-Foo: secret\r\nKeep-Alive: timeout=5\r\n"
               b"TE: trailers\r\nTrailer: X-T\r\nUpgrade: foo/1\r\n"
               b"Proxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n")
        assert c.read_response().status == 200
    rec = b.last()
    names = {k.lower() for k, _ in rec["headers"]}
    for hop in ("x-foo", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"):
        assert hop not in names, (hop, rec["headers"])
    assert "x-foo" not in (rec_header(rec, "connection") or "").lower()
    assert rec_header(rec, "x-kept") == "yes"


def test_connection_close_not_forwarded(proxied):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Bar\r\nX-Bar: 1\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert c.closed_within(3), "Connection: close from the client closes after the response"
    assert rec_header(b.last(), "x-bar") is None
    # The upstream connection itself stays reusable: the next request reuses it.
    s.request("GET", "/")
    s.request("GET", "/")
    assert b.connections <= 2 * 2  # at most a pool per worker


def test_hop_by_hop_response_headers_removed(sluice, raw_backend):
    def handler(conn, backend):
        side = ServerSide(conn)
        side.read_request(backend)
        conn.sendall(http_response(200, b"ok", {
            "Connection": "X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=9",
            "Proxy-Connection": "keep-alive", "X-Kept": "yes"}))

    rb = raw_backend(handler)
    s = sluice({"upstreams": {"raw": upstream(rb.address)}, "routes": [{"upstream": "raw"}]})
    r = s.request("GET", "/")
    assert r.status == 200 and r.body == b"ok"
    assert r.header("x-secret-hop") is None
    assert r.header("keep-alive") is None
    assert r.header("proxy-connection") is None
    assert r.header("x-kept") == "yes"


def test_absolute_form_target(sluice, backend):
    b = backend("abs")
    s = sluice({
        "upstreams": {"abs": upstream(b.address)},
        "routes": [{"match": {"hosts": ["abs.example"]}, "upstream": "abs"},
                   {"respond": {"status": 200, "body": "by-host-header"}}],
    })
    with RawConn(s.port) as c:
        c.send(b"GET http://abs.example/path/x?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    rec = b.last()
    assert rec["target"] == "/path/x?q=1"
    assert rec_header(rec, "host") == "abs.example"


@pytest.fixture
def filtered(sluice, backend):
    b = backend("api")
    s = sluice({
        "upstreams": {"api": upstream(b.address)},
        "filters": [{"type": "headers",
                     "request": {"set": {"X-Order": "global"}},
                     "response": {"set": {"X-Resp-Order": "global"}}}],
        "routes": [{"name": "filtered", "upstream": "api", "filters": [
            {"type": "headers",
             "request": {"add": {"X-Order": "route"},
                         "set": {"X-Remote": "${remote_addr}", "X-Rid": "${request_id}",
                                 "X-Route": "${route}"},
                         "remove": ["X-Secret"]},
             "response": {"add": {"X-Resp-Order": "route"},
                          "set": {"X-Resp": "yes"},
                          "remove": ["X-Backend"]}}]}],
    })
    return s, b


def test_headers_filter_request_side(filtered):
    s, b = filtered
    r = s.request("GET", "/", headers={"X-Order": "client", "X-Secret": "pw",
                                        "X-Request-Id": "rid-42"})
    assert r.status == 200
    rec = b.last()
    # Global filters run first: set replaces the client's value, then the
    # route's add appends.
    assert rec_header(rec, "x-order") == "global, route"
    assert rec_header(rec, "x-remote") == "127.0.0.1"
    assert rec_header(rec, "x-rid") == "rid-42"
    assert rec_header(rec, "x-route") == "filtered"
    assert rec_header(rec, "x-secret") is None


def test_headers_filter_response_side(filtered):
    s, b = filtered
    r = s.request("GET", "/")
    assert r.status == 200
    assert r.header("x-resp") == "yes"
    assert r.header("x-backend") is None
    # Response phase runs in reverse: the route's add first, then the global
    # set replaces it.
    assert r.header("x-resp-order") == "global"
    # ${request_id} is the generated id when the client sent none.
    assert rec_header(b.last(), "x-rid") == r.header("x-request-id")
