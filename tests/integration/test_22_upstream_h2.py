"""SPEC 2.3 `"protocol": "h2"`: HTTP/2 to the upstream (prior knowledge in
cleartext), multiplexed streams over pooled connections, trailers, request
body streaming, resets and failures; gRPC (unary and server streaming)
through an h2c listener.

The upstream is H2Backend (backends/h2.py, started by the h2_backend
fixture): a prior-knowledge HTTP/2 server on python3-h2, one thread per
connection and one per answered stream, that counts its connections and
answers by path (see H2Backend.answer)."""
import hashlib
import json
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from backends.h2 import H2Backend  # noqa: F401 (the module's upstream; tests may import it here)
from conftest import (RawConn, assert_gateway_error, curl, free_port, request, upstream,
                      wait_until)

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

MiB = 1 << 20


def h2_upstream(address, **options):
    return upstream(address, protocol="h2", **options)


def gateway(sluice, b, workers=1, listen=None, **options):
    cfg = {"workers": workers, "upstreams": {"g": h2_upstream(b.address, **options)},
           "routes": [{"upstream": "g"}]}
    if listen:
        cfg["listen"] = listen
    return sluice(cfg)


def chunked_raw(port, path, extra=b""):
    """GET over HTTP/1.1 with Connection: close; returns (head, raw body bytes)."""
    with RawConn(port) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: h2.test\r\nTE: trailers\r\n".encode() + extra +
               b"Connection: close\r\n\r\n")
        data = c.read_all()
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def parse_chunked(raw):
    """-> (body, [trailer lines])."""
    body = b""
    while True:
        line, _, raw = raw.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            break
        body += raw[:size]
        assert raw[size:size + 2] == b"\r\n"
        raw = raw[size + 2:]
    trailers = []
    while True:
        line, _, raw = raw.partition(b"\r\n")
        if not line:
            break
        trailers.append(line.decode("latin-1"))
    assert raw == b"", raw
    return body, trailers


# --------------------------------------------------------------------------


def test_body_and_trailers_reach_http1_client_in_last_chunk(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b)
    head, raw = chunked_raw(s.port, "/hello")
    assert head.startswith("HTTP/1.1 200"), head
    assert "transfer-encoding: chunked" in head.lower(), head
    assert "content-type: text/plain" in head.lower(), head
    body, trailers = parse_chunked(raw)
    assert body == b"hello h2"
    assert trailers == ["grpc-status: 0", "x-trailer: yes"], trailers


def test_request_fields_and_pseudo_headers(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b)
    r = request(s.port, "POST", "/echo?a=1&b=2", body=b"x" * 1000,
                headers={"Host": "api.example:8080", "X-Custom": "Mixed", "TE": "trailers",
                         "Connection": "keep-alive, X-Hop", "X-Hop": "drop me"})
    assert r.status == 200, r
    got = r.json()
    assert got["method"] == "POST"
    assert got["path"] == "/echo?a=1&b=2"
    assert got["scheme"] == "http"
    assert got["authority"] == "api.example:8080"
    h = got["headers"]
    assert h["x-custom"] == "Mixed"
    assert h["te"] == "trailers"
    assert "x-hop" not in h and "connection" not in h and "host" not in h
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-host"] == "api.example:8080"
    assert h["content-length"] == "1000"
    assert got["body_length"] == 1000
    assert r.header("x-request-id")
    # new on every request: kept out of the upstream connection's HPACK table
    assert b.never_indexed == {"x-request-id"}, b.never_indexed


def test_content_length_response_passes_and_drops_trailers(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b)
    with RawConn(s.port) as c:
        c.send(b"GET /sized HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = c.read_all()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-length: 5" in head.lower(), head
    assert body == b"sized"


def test_many_concurrent_requests_share_one_connection(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b)

    def one(i):
        return request(s.port, "GET", f"/slow?ms=300&id={i}", timeout=20)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    for i, r in enumerate(results):
        assert r.status == 200 and r.body == f"slow {i}".encode(), r
    assert b.connections == 1, b.connections
    assert b.max_streams > 1, b.max_streams  # really multiplexed, not one at a time


def test_large_download_and_upload(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b)
    body = bytes(range(256)) * (3 * MiB // 256)
    r = request(s.port, "PUT", "/echo", body=body, timeout=30)
    assert r.status == 200, r
    assert r.json()["body_length"] == len(body)
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_request_body_streams_to_upstream(sluice, h2_backend):
    """The upstream sees the first chunk while the client still holds the rest."""
    b = h2_backend()
    s = gateway(sluice, b)
    with RawConn(s.port, timeout=10) as c:
        c.send(b"POST /first-chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n5\r\nhello\r\n")
        assert b.first_chunk.wait(5), "the first chunk did not reach the upstream"
        c.send(b"6\r\n world\r\n0\r\n\r\n")
        data = c.read_all()
    head, _, raw = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    body, _ = parse_chunked(raw)
    assert body == b"got the first chunk; all 11"


def test_streamed_response_arrives_in_parts(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b)
    with RawConn(s.port, timeout=10) as c:
        c.send(b"GET /stream?n=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        c.read_head()
        start = time.monotonic()
        c._read_until(b"part 0\n", time.monotonic() + 5)
        first = time.monotonic() - start
        rest = c.read_all()
    assert first < 0.2, first  # not held until the end (5 x 50 ms)
    assert b"part 4\n" in rest and b"grpc-status: 0\r\n" in rest


def test_trailers_only_response_becomes_trailers(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b)
    head, raw = chunked_raw(s.port, "/trailers-only")
    assert head.startswith("HTTP/1.1 200"), head
    assert "grpc-status" not in head
    body, trailers = parse_chunked(raw)
    assert body == b""
    assert trailers == ["grpc-status: 5", "grpc-message: not found"], trailers


def test_upstream_reset_before_head_is_502(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b, retries=0)
    assert_gateway_error(request(s.port, "GET", "/rst"), 502)
    # the connection survives a stream reset
    r = request(s.port, "GET", "/hello")
    assert r.status == 200 and r.body == b"hello h2"
    assert b.connections == 1


def test_upstream_reset_mid_body_cuts_the_client_off(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b, retries=0)
    with RawConn(s.port, timeout=5) as c:
        c.send(b"GET /rst-mid HTTP/1.1\r\nHost: x\r\n\r\n")
        data = c.read_all()
    assert data.startswith(b"HTTP/1.1 200"), data
    assert not data.endswith(b"0\r\n\r\n"), data  # no clean end of the chunked body


def test_cut_transfer_is_logged_with_its_error(sluice, h2_backend, tmp_path):
    """A response cut off after its head is logged with the gateway's error, never as a
    clean 200 (SPEC 7 "slow readers": a cut transfer is logged with its error)."""
    b = h2_backend()
    log = tmp_path / "access.log"
    s = sluice({"workers": 1, "access_log": {"path": str(log)},
                "upstreams": {"g": h2_upstream(b.address, retries=0)},
                "routes": [{"upstream": "g"}]})
    with RawConn(s.port, timeout=5) as c:
        c.send(b"GET /rst-mid HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_all().startswith(b"HTTP/1.1 200")
    wait_until(lambda: log.exists() and log.read_text().strip(), what="the access log line")
    line = json.loads(log.read_text().splitlines()[0])
    assert line["status"] == 200 and line["error"] == "bad_gateway", line


def test_refused_stream_is_retried(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b, retries=0)
    r = request(s.port, "POST", "/refuse-once?key=a", body=b"abc")
    assert r.status == 200 and r.body == b"second try 3", r


def test_goaway_moves_the_request_to_a_new_connection(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b, retries=0)
    r = request(s.port, "POST", "/goaway-once", body=b"not idempotent")
    assert r.status == 200 and r.body == b"after goaway", r
    assert b.connections == 2


def test_connection_lost_mid_request_is_502_then_reconnects(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b, retries=0)
    assert_gateway_error(request(s.port, "GET", "/close"), 502)
    r = request(s.port, "GET", "/hello")
    assert r.status == 200 and r.body == b"hello h2"
    assert b.connections == 2


def test_silent_upstream_is_504_and_stream_reset(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b, retries=0, timeout_ms=400)
    assert_gateway_error(request(s.port, "GET", "/silent"), 504)
    wait_until(lambda: b.resets == 1, what="RST_STREAM after the timeout")


def test_max_concurrent_streams_opens_more_connections(sluice, h2_backend):
    b = h2_backend(max_streams=2)
    s = gateway(sluice, b)
    assert request(s.port, "GET", "/hello").status == 200  # SETTINGS known from here on
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: request(s.port, "GET", f"/slow?ms=400&id={i}"),
                                range(6)))
    assert all(r.status == 200 for r in results), results
    assert b.connections == 3, b.connections


def test_max_connections_queues_streams_on_a_full_connection(sluice, h2_backend):
    b = h2_backend(max_streams=2)
    s = gateway(sluice, b, max_connections=1)
    assert request(s.port, "GET", "/hello").status == 200
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: request(s.port, "GET", f"/slow?ms=200&id={i}"),
                                range(6)))
    assert all(r.status == 200 for r in results), results
    assert b.connections == 1, b.connections
    assert b.max_streams <= 2, b.max_streams


def test_head_request(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b)
    with RawConn(s.port) as c:
        c.send(b"HEAD /sized HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = c.read_all()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == b""


def test_reload_while_a_stream_is_running(sluice, h2_backend):
    """The old configuration's pools (and their HTTP/2 connections) go once its last
    exchange ends, which happens inside the connection's own callback."""
    b = h2_backend()
    s = gateway(sluice, b)
    with RawConn(s.port, timeout=10) as c:
        c.send(b"GET /stream?n=10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        c.read_head()
        cfg = dict(s.config)
        cfg["upstreams"] = {"g": h2_upstream(b.address, timeout_ms=5000)}
        s.write_config(cfg)
        s.reload()
        time.sleep(0.2)
        rest = c.read_all()
    assert b"part 9\n" in rest and rest.endswith(b"grpc-status: 0\r\n\r\n"), rest
    wait_until(lambda: request(s.port, "GET", "/hello").status == 200, what="after reload")
    assert s.running()


def test_upstream_down_is_502(sluice):
    dead = f"127.0.0.1:{free_port()}"
    s = sluice({"upstreams": {"g": h2_upstream(dead, retries=0)}, "routes": [{"upstream": "g"}]})
    assert_gateway_error(request(s.port, "GET", "/"), 502)


def test_upstream_not_speaking_h2_is_502(sluice, raw_backend):
    def http1_only(conn, backend):
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    rb = raw_backend(http1_only)
    s = sluice({"upstreams": {"g": h2_upstream(rb.address, retries=0)},
                "routes": [{"upstream": "g"}]})
    assert_gateway_error(request(s.port, "GET", "/"), 502)


def test_client_gone_mid_stream_resets_upstream_stream(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b)
    with RawConn(s.port, timeout=5) as c:
        c.send(b"GET /stream?n=20 HTTP/1.1\r\nHost: x\r\n\r\n")
        c.read_head()
    wait_until(lambda: b.resets == 1, what="RST_STREAM from the gateway")
    # the gateway and the connection carry on
    r = request(s.port, "GET", "/hello")
    assert r.status == 200 and r.body == b"hello h2"
    assert b.connections == 1


def test_curl_sees_trailers(sluice, h2_backend):
    b = h2_backend()
    s = gateway(sluice, b)
    proc = curl("-i", "--raw", f"http://127.0.0.1:{s.port}/hello")
    assert proc.returncode == 0, proc.stderr
    assert b"grpc-status: 0\r\n" in proc.stdout, proc.stdout


def _tls_context(tmp_path, alpn):
    from backends.certs import make_ca, make_cert
    make_ca(tmp_path, "ca", "Sluice Test CA")
    make_cert(tmp_path, "ca", "backend", "/CN=backend.test", "DNS:backend.test,IP:127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "backend.pem", tmp_path / "backend.key")
    ctx.set_alpn_protocols(alpn)
    return ctx


def test_h2_over_tls_upstream_uses_alpn(sluice, h2_backend, tmp_path):
    b = h2_backend(tls=_tls_context(tmp_path, ["h2"]))
    s = gateway(sluice, b, tls={"ca": str(tmp_path / "ca.pem")})
    r = request(s.port, "GET", "/echo")
    assert r.status == 200, r
    assert r.json()["scheme"] == "https"
    head, raw = chunked_raw(s.port, "/hello")
    assert parse_chunked(raw) == (b"hello h2", ["grpc-status: 0", "x-trailer: yes"])
    assert b.connections == 1


def test_tls_upstream_without_h2_alpn_is_502(sluice, h2_backend, tmp_path):
    b = h2_backend(tls=_tls_context(tmp_path, ["http/1.1"]))
    s = gateway(sluice, b, retries=0, tls={"ca": str(tmp_path / "ca.pem")})
    assert_gateway_error(request(s.port, "GET", "/hello"), 502)


# --------------------------------------------------------------------------
# gRPC end to end: client -> sluice (h2c listener) -> upstream h2 -> grpc server

grpc = pytest.importorskip("grpc")


def _grpc_server():
    from concurrent import futures

    def unary(request, context):
        context.set_trailing_metadata((("x-done", "yes"),))
        return b"echo:" + request

    def stream(request, context):
        for i in range(int(request.decode() or "3")):
            yield f"item {i}".encode()

    def fails(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(unary),
        "Count": grpc.unary_stream_rpc_method_handler(stream),
        "Fail": grpc.unary_unary_rpc_method_handler(fails),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Svc", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _h2c_available(sluice_port):
    """The downstream HTTP/2 codec answers the preface (it may still be a stub)."""
    with socket.create_connection(("127.0.0.1", sluice_port), timeout=2) as c:
        c.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        try:
            data = c.recv(9)
        except OSError:
            return False
        return len(data) >= 4 and data[3] == 4  # a SETTINGS frame


def test_grpc_unary_and_streaming_through_gateway(sluice):
    server, port = _grpc_server()
    try:
        listen = f"127.0.0.1:{free_port()}"
        s = sluice({"workers": 1, "listen": [{"address": listen, "protocols": ["h2c", "http/1.1"]}],
                    "upstreams": {"g": h2_upstream(f"127.0.0.1:{port}")},
                    "routes": [{"upstream": "g"}]})
        if not _h2c_available(s.port):
            pytest.skip("the downstream HTTP/2 codec (h2c listener) is not available yet")
        with grpc.insecure_channel(listen) as ch:
            echo = ch.unary_unary("/test.Svc/Echo")
            reply, call = echo.with_call(b"ping", timeout=5)
            assert reply == b"echo:ping"
            assert ("x-done", "yes") in tuple(call.trailing_metadata())
            count = ch.unary_stream("/test.Svc/Count")
            assert list(count(b"4", timeout=5)) == [b"item 0", b"item 1", b"item 2", b"item 3"]
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/test.Svc/Fail")(b"", timeout=5)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
            assert e.value.details() == "no such thing"
    finally:
        server.stop(0)


def test_grpc_status_reaches_http1_client_as_trailer(sluice):
    """Without the downstream HTTP/2 codec: gRPC's wire format over HTTP/1.1 chunked."""
    server, port = _grpc_server()
    try:
        s = sluice({"workers": 1, "upstreams": {"g": h2_upstream(f"127.0.0.1:{port}")},
                    "routes": [{"upstream": "g"}]})
        msg = b"ping"
        frame = b"\x00" + len(msg).to_bytes(4, "big") + msg
        with RawConn(s.port, timeout=10) as c:
            c.send(b"POST /test.Svc/Echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\n"
                   b"TE: trailers\r\nConnection: close\r\nContent-Length: " +
                   str(len(frame)).encode() + b"\r\n\r\n" + frame)
            data = c.read_all()
        head, _, raw = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        body, trailers = parse_chunked(raw)
        reply = b"echo:ping"
        assert body == b"\x00" + len(reply).to_bytes(4, "big") + reply
        assert "grpc-status: 0" in trailers, trailers
        assert "x-done: yes" in trailers, trailers
    finally:
        server.stop(0)
