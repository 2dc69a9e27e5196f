"""SPEC 2.3 `"protocol": "h2"`: HTTP/2 to the upstream (prior knowledge in
cleartext), multiplexed streams over pooled connections, trailers, request
body streaming, resets and failures; gRPC (unary and server streaming)
through an h2c listener.

The upstream is H2Backend: a prior-knowledge HTTP/2 server on python3-h2,
one thread per connection and one per answered stream, that counts its
connections and answers by path (see H2Backend.answer)."""
import hashlib
import json
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (RawConn, assert_gateway_error, curl, free_port, request, upstream,
                      wait_until)

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

MiB = 1 << 20


class H2Backend:
    """A cleartext HTTP/2 server (prior knowledge). Paths:
    /hello          200, body, trailers (grpc-status: 0, x-trailer: yes), no content-length
    /sized          200 with content-length and a trailer
    /echo           200, JSON of the request (method, path, headers, body length, sha256)
    /stream?n=N     N data frames 50 ms apart, then trailers
    /slow?ms=M      answers after M ms
    /rst            resets the stream (INTERNAL_ERROR) without answering
    /rst-mid        head and a little body, then a reset
    /refuse-once    REFUSED_STREAM the first time, then answers
    /trailers-only  one HEADERS frame ending the stream (gRPC Trailers-Only)
    /first-chunk    answers as soon as the first request DATA arrives
    /goaway-once    the first time: GOAWAY (last stream 0) and close; then answers
    /close          closes the connection without answering
    /silent         never answers
    With `tls` (an ssl.SSLContext), connections are TLS and must agree on
    ALPN "h2". A HEAD request gets 200 with content-length 5 and no body. `max_streams`
    sets SETTINGS_MAX_CONCURRENT_STREAMS.
    """

    def __init__(self, max_streams=None, tls=None):
        self.settings_max_streams = max_streams
        self.tls = tls  # an ssl.SSLContext: serve HTTP/2 over TLS
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = []
        self.refused = set()
        self.max_streams = 0
        self.resets = 0  # RST_STREAM frames received from the gateway
        self.first_chunk = threading.Event()
        self.stopping = threading.Event()
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.sock.close()
        self.thread.join(2)
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, sock):
        try:
            if self.tls:
                sock.settimeout(5)
                sock = self.tls.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
                if sock.selected_alpn_protocol() != "h2":
                    return
            _Conn(self, sock).run()
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def answer(self, c, sid, headers, body):
        path = headers[":path"]
        name, _, query = path.partition("?")
        args = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        with self.lock:
            self.requests.append(headers)
        if headers[":method"] == "HEAD":
            c.send_headers(sid, [(":status", "200"), ("content-length", "5")], end=True)
        elif name == "/hello":
            c.respond(sid, [(":status", "200"), ("content-type", "text/plain")], b"hello h2",
                      trailers=[("grpc-status", "0"), ("x-trailer", "yes")])
        elif name == "/sized":
            c.respond(sid, [(":status", "200"), ("content-length", "5")], b"sized",
                      trailers=[("x-trailer", "dropped")])
        elif name == "/echo":
            record = {"method": headers[":method"], "path": path,
                      "authority": headers.get(":authority"), "scheme": headers[":scheme"],
                      "headers": {k: v for k, v in headers.items() if not k.startswith(":")},
                      "body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
            c.respond(sid, [(":status", "200"), ("content-type", "application/json")],
                      json.dumps(record).encode())
        elif name == "/stream":
            c.respond(sid, [(":status", "200")], None)
            for i in range(int(args.get("n", "3"))):
                time.sleep(0.05)
                c.send_data(sid, f"part {i}\n".encode(), end=False)
            c.send_headers(sid, [("grpc-status", "0")], end=True)
        elif name == "/slow":
            time.sleep(int(args.get("ms", "100")) / 1000)
            c.respond(sid, [(":status", "200")], b"slow " + args.get("id", "").encode())
        elif name == "/rst":
            c.reset(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif name == "/rst-mid":
            c.send_headers(sid, [(":status", "200")], end=False)
            c.send_data(sid, b"partial", end=False)
            time.sleep(0.1)
            c.reset(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif name == "/refuse-once":
            key = args.get("key", "")
            with self.lock:
                first = key not in self.refused
                self.refused.add(key)
            if first:
                c.reset(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            else:
                c.respond(sid, [(":status", "200")], b"second try " + str(len(body)).encode())
        elif name == "/goaway-once":
            with self.lock:
                first = "goaway" not in self.refused
                self.refused.add("goaway")
            if first:
                c.goaway_and_close()
            else:
                c.respond(sid, [(":status", "200")], b"after goaway")
        elif name == "/close":
            c.sock.shutdown(socket.SHUT_RDWR)
        elif name == "/silent":
            time.sleep(3)
        elif name == "/trailers-only":
            c.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                 ("grpc-status", "5"), ("grpc-message", "not found")], end=True)
        else:
            c.respond(sid, [(":status", "404")], b"no such path")


class _Conn:
    """One server connection: a reader loop, and answers from other threads."""

    def __init__(self, backend, sock):
        self.backend = backend
        self.sock = sock
        self.cond = threading.Condition()
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams = {}
        self.started = set()
        self.reset_streams = set()

    def _flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def run(self):
        with self.cond:
            if self.backend.settings_max_streams:
                self.h2.local_settings = h2.settings.Settings(
                    client=False, initial_values={
                        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS:
                            self.backend.settings_max_streams})
            self.h2.initiate_connection()
            self._flush()
        while True:
            data = self.sock.recv(65536)
            if not data:
                return
            with self.cond:
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    return  # after our GOAWAY
                for ev in events:
                    self._event(ev)
                self._flush()
                self.cond.notify_all()

    def _event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            headers = dict(ev.headers)
            self.streams[ev.stream_id] = (headers, bytearray())
            open_now = len(self.streams)
            with self.backend.lock:
                self.backend.max_streams = max(self.backend.max_streams, open_now)
            if ev.stream_ended:
                self._start(ev.stream_id)
        elif isinstance(ev, h2.events.DataReceived):
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            entry = self.streams.get(ev.stream_id)
            if entry is not None:
                entry[1].extend(ev.data)
                if entry[0][":path"] == "/first-chunk" and not self.backend.first_chunk.is_set():
                    self.backend.first_chunk.set()
                    self.h2.send_headers(ev.stream_id, [(":status", "200")])
                    self.h2.send_data(ev.stream_id, b"got the first chunk", end_stream=False)
            if ev.stream_ended:
                self._start(ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self._start(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            with self.backend.lock:
                self.backend.resets += 1
            self.reset_streams.add(ev.stream_id)
            self.streams.pop(ev.stream_id, None)

    def _start(self, sid):
        entry = self.streams.get(sid)
        if entry is None or sid in self.started:
            return
        self.started.add(sid)
        headers, body = entry
        if headers[":path"] == "/first-chunk":
            self.h2.send_data(sid, b"; all " + str(len(body)).encode(), end_stream=True)
            self.streams.pop(sid, None)
            return
        threading.Thread(target=self._answer, args=(sid, headers, bytes(body)),
                         daemon=True).start()

    def _answer(self, sid, headers, body):
        try:
            self.backend.answer(self, sid, headers, body)
        except Exception:  # noqa: BLE001 - the stream may be gone (client reset)
            pass
        finally:
            with self.cond:
                self.streams.pop(sid, None)

    def send_headers(self, sid, headers, end):
        with self.cond:
            self.h2.send_headers(sid, headers, end_stream=end)
            self._flush()

    def send_data(self, sid, data, end):
        view = memoryview(data)
        with self.cond:
            while True:
                if sid in self.reset_streams:
                    return
                room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                if len(view) == 0 or room > 0:
                    n = min(room, len(view))
                    last = n == len(view)
                    self.h2.send_data(sid, view[:n].tobytes(), end_stream=end and last)
                    self._flush()
                    view = view[n:]
                    if last:
                        return
                else:
                    self.cond.wait(5)

    def respond(self, sid, headers, body, trailers=None):
        self.send_headers(sid, headers, end=False if (body or trailers or body is None)
                          else True)
        if body is None:
            return
        if body:
            self.send_data(sid, body, end=not trailers)
        if trailers:
            self.send_headers(sid, trailers, end=True)

    def goaway_and_close(self):
        with self.cond:
            self.h2.close_connection(error_code=0, last_stream_id=0)
            self._flush()
            self.sock.shutdown(socket.SHUT_RDWR)

    def reset(self, sid, code):
        with self.cond:
            self.h2.reset_stream(sid, error_code=code)
            self._flush()


@pytest.fixture
def h2_backend():
    started = []

    def start(max_streams=None, tls=None):
        b = H2Backend(max_streams, tls)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


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
    from test_20_tls import make_ca, make_cert
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
