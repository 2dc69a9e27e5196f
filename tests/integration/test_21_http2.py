"""SPEC 3.3: downstream HTTP/2 over h2c (prior knowledge) and TLS (ALPN h2).

Every stream is an exchange through the same router, filters and upstream
pool as HTTP/1. Checked here: requests and bodies intact, many concurrent
streams on one connection, request flow control tied to a slow upstream
(RSS bounded), resets of one stream, the rapid-reset defence, HEAD/204,
gateway errors, trailers, drain with GOAWAY, and that HTTP/1 `Upgrade: h2c`
is never honoured.

Clients: nghttp (nghttp2-client), curl, and python3-h2 (H2Client below)."""
import json
import os
import socket
import subprocess
import time


import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from conftest import (RSS_ENV, RawConn, Resp, RssSampler, assert_gateway_error, curl, free_port,
                      pattern_bytes, rec_header, sha256, slow_upload_backend, upstream,
                      wait_until)

MiB = 1 << 20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2c_listener(port=None, protocols=("h2c", "http/1.1")):
    return {"address": f"127.0.0.1:{port or free_port()}", "protocols": list(protocols)}


def gateway(sluice, b=None, routes=None, env=None, **extra):
    cfg = {"listen": [h2c_listener()], "workers": 1}
    if b is not None:
        cfg["upstreams"] = {"b": upstream(b.address)}
        cfg["routes"] = routes or [{"upstream": "b"}]
    else:
        cfg["routes"] = routes
    cfg.update(extra)
    return sluice(cfg, env=env)


class H2Stream:
    def __init__(self):
        self.status = None
        self.headers = []
        self.body = bytearray()
        self.trailers = []
        self.ended = False
        self.reset = None

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def resp(self):
        return Resp(int(self.status), "", [(k, v) for k, v in self.headers if not k.startswith(":")],
                    bytes(self.body), "HTTP/2")


class H2Client:
    """A prior-knowledge HTTP/2 client over a plain socket (python3-h2)."""

    def __init__(self, port, timeout=10.0, validate=True):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=validate,
            normalize_outbound_headers=validate))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 * MiB)
        self.streams = {}
        self.goaway = None
        self.closed = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self, method="GET", path="/", headers=(), body=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"),
                (":authority", f"127.0.0.1:{self.port}")] + list(headers)
        self.streams[sid] = H2Stream()
        self.conn.send_headers(sid, hdrs, end_stream=end and body is None)
        self.flush()
        if body is not None:
            self.send_body(sid, body, end)
        return sid

    def send_body(self, sid, body, end=True, deadline=None):
        """Sends within the flow-control windows, reading (window updates) when they close."""
        deadline = deadline or time.monotonic() + 60
        view = memoryview(body)
        off = 0
        while off < len(body):
            assert time.monotonic() < deadline, f"body stalled at {off} of {len(body)}"
            if self.done(sid):
                return  # answered early and reset: the rest is not wanted
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.read_some(min(deadline, time.monotonic() + 5))
                continue
            n = min(window, len(body) - off)
            self.conn.send_data(sid, view[off:off + n].tobytes(), end_stream=end and off + n == len(body))
            self.flush()
            off += n

    def handle(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            st = self.streams[ev.stream_id]
            st.headers = list(ev.headers)
            st.status = dict(ev.headers)[":status"]
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            pass
        elif isinstance(ev, h2.events.DataReceived):
            self.streams[ev.stream_id].body += ev.data
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            self.streams[ev.stream_id].trailers = list(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded):
            self.streams[ev.stream_id].ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if ev.stream_id in self.streams:
                self.streams[ev.stream_id].reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def read_some(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            self.handle(ev)
        try:
            self.flush()
        except (ConnectionResetError, BrokenPipeError):
            self.closed = True
            return False
        return True

    def wait(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting on the HTTP/2 connection")
            if not self.read_some(deadline):
                break
        return predicate()

    def done(self, sid):
        st = self.streams[sid]
        return st.ended or st.reset is not None

    def request(self, method="GET", path="/", headers=(), body=None, timeout=10.0):
        sid = self.start(method, path, headers, body)
        assert self.wait(lambda: self.done(sid), timeout), f"stream {sid} did not finish"
        return self.streams[sid]


# --------------------------------------------------------------------------
# h2c basics


def test_nghttp_through_to_backend(sluice, backend):
    b = backend("b")
    s = gateway(sluice, b)
    p = subprocess.run(["nghttp", "-nv", f"http://127.0.0.1:{s.port}/hello?x=1"],
                       capture_output=True, timeout=20)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out + p.stderr.decode(errors="replace")
    assert ":status: 200" in out, out
    rec = b.last()
    assert rec["path"] == "/hello" and rec["query"] == "x=1"
    assert rec["version"] == "HTTP/1.1"


def test_headers_and_body_arrive_intact(sluice, backend):
    b = backend("b")
    s = gateway(sluice, b)
    body = os.urandom(300 * 1024)  # more than the stream window: flow control must reopen it
    with H2Client(s.port) as c:
        st = c.request("POST", "/up?q=1", [("x-custom", "one"), ("x-custom", "two"),
                                           ("cookie", "a=1"), ("cookie", "b=2"),
                                           ("content-type", "application/octet-stream")],
                       body=body[:60000])
        assert st.status == "200", st.status
        data = json.loads(bytes(st.body))
        assert data["body_length"] == 60000 and data["body_sha256"] == sha256(body[:60000])
        # No content-length: streamed upstream with chunked framing, in several windows.
        sid = c.start("PUT", "/big", [("x-a", "b")], end=False)
        c.send_body(sid, body)
        c.wait(lambda: c.done(sid))
        st2 = c.streams[sid]
        assert st2.status == "200"
        data2 = json.loads(bytes(st2.body))
        assert data2["body_length"] == len(body) and data2["body_sha256"] == sha256(body)
        assert data2["method"] == "PUT"
    first = b.requests[0]
    assert first["method"] == "POST" and first["path"] == "/up" and first["query"] == "q=1"
    assert rec_header(first, "x-custom") == "one, two"
    assert rec_header(first, "cookie") == "a=1; b=2"
    assert rec_header(first, "host") == f"127.0.0.1:{s.port}"
    assert rec_header(first, "x-forwarded-proto") == "http"
    assert rec_header(first, "x-forwarded-for") == "127.0.0.1"
    assert st.header("x-request-id") == rec_header(first, "x-request-id")
    assert st.header("x-backend") == "b"  # response names reach the client lower-cased
    assert all(k == k.lower() for k, _ in st.headers)


def test_one_hundred_concurrent_streams(sluice, backend):
    b = backend("b")
    s = gateway(sluice, b)
    with H2Client(s.port, timeout=20) as c:
        sids = {c.start("GET", f"/p/{i}", [("x-echo-delay-ms", "100")]): i for i in range(100)}
        c.wait(lambda: all(c.done(sid) for sid in sids), 20)
        for sid, i in sids.items():
            st = c.streams[sid]
            assert st.status == "200", (i, st.status, st.reset)
            assert json.loads(bytes(st.body))["path"] == f"/p/{i}"
    assert b.count == 100
    assert b.max_active > 10  # the streams really ran side by side


def test_large_download_flow_control(sluice, backend):
    b = backend("b")
    s = gateway(sluice, b)
    with H2Client(s.port, timeout=30) as c:
        st = c.request("GET", "/down", [("x-echo-bytes", str(8 * MiB))], timeout=30)
    assert st.status == "200"
    assert len(st.body) == 8 * MiB
    assert sha256(bytes(st.body)) == sha256(pattern_bytes(8 * MiB))


def test_64mib_upload_to_slow_upstream_is_flow_controlled(sluice, raw_backend):
    size = 64 * MiB
    result = {}

    rb = raw_backend(slow_upload_backend(result, seconds_per_16k=0.0008))
    s = sluice({"workers": 1, "listen": [h2c_listener()], "upstreams": {"raw": upstream(rb.address)},
                "routes": [{"upstream": "raw"}]}, env=RSS_ENV)
    body = pattern_bytes(size)
    with H2Client(s.port, timeout=60) as c:
        assert c.request("POST", "/warm", body=b"w" * 60000).status == "200"
        time.sleep(0.2)
        before = s.rss_kib()
        with RssSampler(s) as sampler:
            sid = c.start("POST", "/slow-upload", [("content-length", str(size))], end=False)
            c.send_body(sid, body, deadline=time.monotonic() + 120)
            c.wait(lambda: c.done(sid), 60)
        st = c.streams[sid]
    growth = sampler.peak - before
    print(f"h2 slow upstream: RSS before {before} KiB, peak {sampler.peak} KiB, growth {growth} KiB")
    assert st.status == "200", st.reset
    assert bytes(st.body).decode() == sha256(body)
    assert result["n"] == size
    assert growth < 8 * 1024, f"RSS grew by {growth} KiB while streaming {size} bytes"


# --------------------------------------------------------------------------
# resets and defences


def test_reset_of_one_stream_leaves_the_others(sluice, backend):
    b = backend("b")
    s = gateway(sluice, b)
    with H2Client(s.port) as c:
        sids = [c.start("GET", f"/s/{i}", [("x-echo-delay-ms", "400")]) for i in range(3)]
        time.sleep(0.1)
        c.conn.reset_stream(sids[1], h2.errors.ErrorCodes.CANCEL)
        c.flush()
        c.wait(lambda: c.done(sids[0]) and c.done(sids[2]))
        for sid in (sids[0], sids[2]):
            assert c.streams[sid].status == "200"
            assert json.loads(bytes(c.streams[sid].body))["path"].startswith("/s/")
        assert c.streams[sids[1]].status is None
        # The connection is still good for more.
        assert c.request("GET", "/after").status == "200"
        assert c.goaway is None


def test_rapid_reset_is_cut_off_while_others_are_served(sluice, backend):
    b = backend("b")
    s = gateway(sluice, b, routes=[{"match": {"prefix": "/api"}, "upstream": "b"},
                                   {"respond": {"status": 200, "body": "ok"}}])
    other = H2Client(s.port)
    with H2Client(s.port) as c:
        try:
            for i in range(2000):
                sid = c.conn.get_next_available_stream_id()
                c.conn.send_headers(sid, [(":method", "GET"), (":path", f"/api/{i}"),
                                          (":scheme", "http"), (":authority", "x")])
                c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                if i % 50 == 0:
                    c.flush()
            c.flush()
        except (BrokenPipeError, ConnectionResetError, h2.exceptions.ProtocolError):
            pass
        try:
            c.wait(lambda: c.goaway is not None, 10)
        except (ConnectionResetError, h2.exceptions.ProtocolError):
            pass
        assert c.goaway is not None, "no GOAWAY"
        assert c.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert c.wait(lambda: c.closed, 5)
    # Another connection is served meanwhile and afterwards.
    with other:
        st = other.request("GET", "/fine")
        assert int(st.status) == 200 and bytes(st.body) == b"ok"
    assert s.request("GET", "/").status == 200
    assert b.count < 2000


def test_ping_flood_is_cut_off(sluice):
    s = gateway(sluice, routes=[{"respond": {"status": 200, "body": "ok"}}])
    with H2Client(s.port) as c:
        try:
            # All 3000 in one write: the flood must land inside one of the
            # gateway's one-second windows even on a loaded machine.
            for i in range(3000):
                c.conn.ping(i.to_bytes(8, "big"))
            c.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            c.wait(lambda: c.goaway is not None or c.closed, 10)
        except (ConnectionResetError, h2.exceptions.ProtocolError):
            pass
        assert c.goaway is not None, "no GOAWAY"
        assert c.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_hpack_bomb_is_cut_off(sluice):
    """A 4 KiB header in the dynamic table, then a block that refers to it
    hundreds of times: small on the wire, huge once decoded."""
    s = gateway(sluice, routes=[{"respond": {"status": 200, "body": "ok"}}])
    with H2Client(s.port) as c:
        big = "v" * 4000
        c.request("GET", "/", [("x-big", big)])  # now in the dynamic table (the 431 is fine)
        try:
            c.start("GET", "/", [("x-big", big)] * 400)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            c.wait(lambda: c.goaway is not None or c.closed, 10)
        except (ConnectionResetError, h2.exceptions.ProtocolError):
            pass
        assert c.goaway is not None and c.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def frame(ftype, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def read_frames(sock, timeout=5.0):
    """Frames until the server closes: [(type, flags, stream, payload)]."""
    sock.settimeout(timeout)
    buf = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
    except (socket.timeout, ConnectionResetError):
        pass
    frames = []
    while len(buf) >= 9:
        n = int.from_bytes(buf[:3], "big")
        frames.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF,
                       buf[9:9 + n]))
        buf = buf[9 + n:]
    return frames


def test_continuation_flood_is_cut_off(sluice):
    import hpack
    s = gateway(sluice, routes=[{"respond": {"status": 200, "body": "ok"}}])
    enc = hpack.Encoder()
    head = enc.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"),
                       (":authority", "x")])
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        out = PREFACE + frame(4, 0, 0, b"") + frame(1, 0, 1, head)  # HEADERS, no END_HEADERS
        for i in range(200):
            out += frame(9, 0, 1, enc.encode([(f"x-c{i}", "v" * 50)]))
        try:
            sock.sendall(out)
        except (BrokenPipeError, ConnectionResetError):
            pass
        frames = read_frames(sock)
    goaways = [f for f in frames if f[0] == 7]
    assert goaways, frames
    assert not [f for f in frames if f[0] == 1], "a response was sent"


def test_frame_on_closed_stream_is_stream_closed(sluice):
    """RFC 9113 5.1: DATA on a stream that is closed is a STREAM_CLOSED error
    (here a GOAWAY or RST_STREAM with that code), not silently ignored."""
    import hpack
    s = gateway(sluice, routes=[{"respond": {"status": 200, "body": "ok"}}])
    head = hpack.Encoder().encode([(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                   (":authority", "x")])
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(4, 0, 0, b"") + frame(1, 0x5, 1, head))
        buf = b""
        sock.settimeout(5)
        while True:  # until the response's END_STREAM: the stream is closed both ways
            buf += sock.recv(65536)
            frames = []
            rest = buf
            while len(rest) >= 9 and len(rest) >= 9 + int.from_bytes(rest[:3], "big"):
                n = int.from_bytes(rest[:3], "big")
                frames.append((rest[3], rest[4], int.from_bytes(rest[5:9], "big") & 0x7FFFFFFF))
                rest = rest[9 + n:]
            if any(f[2] == 1 and f[0] in (0, 1) and f[1] & 0x1 for f in frames):
                break
        sock.sendall(frame(0, 0x1, 1, b"late"))
        after = read_frames(sock)
    errors = [int.from_bytes(f[3][4:8], "big") for f in after if f[0] == 7] + \
             [int.from_bytes(f[3][:4], "big") for f in after if f[0] == 3 and f[2] == 1]
    assert h2.errors.ErrorCodes.STREAM_CLOSED in errors, after


def test_many_closed_streams_do_not_grow_memory(sluice):
    """Closed streams are kept for the STREAM_CLOSED answer, but only as many
    as SETTINGS_MAX_CONCURRENT_STREAMS: tens of thousands of streams opened
    and closed on one connection leave RSS flat."""
    s = gateway(sluice, routes=[{"respond": {"status": 200, "body": "ok"}}], env=RSS_ENV)

    def run(c, n, batch=64):
        for _ in range(n // batch):
            sids = [c.start("GET", "/") for _ in range(batch)]
            assert c.wait(lambda: all(c.done(i) for i in sids), 20)
            for i in sids:
                assert c.streams.pop(i).status == "200"

    with H2Client(s.port, timeout=30) as c:
        run(c, 4096)  # warm up: arenas, buffers, the retained set at its bound
        before = s.rss_kib()
        run(c, 32768)
        after = s.rss_kib()
        assert c.goaway is None
    print(f"h2 closed streams: RSS {before} KiB before, {after} KiB after 32768 more streams")
    assert after - before < 2048, f"RSS grew by {after - before} KiB over 32768 closed streams"


def test_idle_connection_wakes_with_large_headers_and_body(sluice, backend):
    """An idle h2 connection lends its buffers back (docs/internals/memory.md);
    after each idle pause the next requests borrow them again: large header
    fields the client's HPACK encoder put into its dynamic table (the second
    request sends them as indexes), and a 1 MiB response, arrive intact."""
    b = backend()
    s = gateway(sluice, b)
    big = [("x-big", "a" * 3000), ("x-other", "b" * 900)]
    with H2Client(s.port) as c:
        for i in range(3):
            assert c.request("GET", f"/n{i}", headers=big).status == "200"
            rec = b.last()
            assert rec["path"] == f"/n{i}"
            assert rec_header(rec, "x-big") == "a" * 3000 and rec_header(rec, "x-other") == "b" * 900
            time.sleep(0.2)  # idle: no stream, nothing to send
        st = c.request("GET", "/large", headers=[("x-echo-bytes", str(MiB))] + big, timeout=30)
        assert st.status == "200" and len(st.body) == MiB
        assert sha256(bytes(st.body)) == sha256(pattern_bytes(MiB))
        assert c.goaway is None


def test_header_list_over_limit_is_431(sluice):
    s = gateway(sluice, routes=[{"respond": {"status": 200, "body": "ok"}}],
                limits={"max_header_bytes": 4096})
    with H2Client(s.port) as c:
        st = c.request("GET", "/", [("x-long", "a" * 5000)])
        assert_gateway_error(st.resp(), 431)
        assert c.request("GET", "/").status == "200"  # the connection carries on


def test_max_concurrent_streams_from_limits(sluice):
    s = gateway(sluice, routes=[{"respond": {"status": 200, "body": "ok"}}],
                limits={"h2_max_concurrent_streams": 7})
    with H2Client(s.port) as c:
        c.wait(lambda: c.conn.remote_settings.max_concurrent_streams == 7, 5)
        assert c.conn.remote_settings.initial_window_size >= 65535


def test_malformed_requests_are_reset(sluice, backend):
    b = backend("b")
    s = gateway(sluice, b)
    bad = [[("connection", "keep-alive")], [("transfer-encoding", "chunked")], [("te", "gzip")],
           [("upgrade", "h2c")], [("keep-alive", "5")], [("X-Upper", "1")]]
    with H2Client(s.port, validate=False) as c:
        for extra in bad:
            st = c.request("GET", "/bad", extra)
            assert st.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR, (extra, st.status, st.reset)
        assert c.request("GET", "/good", [("te", "trailers")]).status == "200"
    assert b.count == 1 and b.last()["path"] == "/good"


def test_body_over_max_body_bytes_is_413(sluice, backend):
    b = backend("b")
    s = gateway(sluice, b, limits={"max_body_bytes": 100000})
    with H2Client(s.port) as c:
        sid = c.start("POST", "/cl", [("content-length", "200000")], end=False)
        c.wait(lambda: c.done(sid))  # answered before any body byte
        assert_gateway_error(c.streams[sid].resp(), 413)
        sid = c.start("POST", "/stream", end=False)
        c.send_body(sid, b"x" * 200000)
        c.wait(lambda: c.done(sid))
        assert_gateway_error(c.streams[sid].resp(), 413)
        assert c.request("POST", "/ok", body=b"y" * 1000).status == "200"


def test_early_answers_do_not_leak_the_connection_window(sluice, backend):
    """Bodies nobody reads (the answer came first) still give the window back."""
    b = backend("b")
    s = gateway(sluice, b, routes=[{"match": {"prefix": "/api"}, "upstream": "b"},
                                   {"respond": {"status": 200, "body": "early"}}])
    body = b"z" * (400 * 1024)
    with H2Client(s.port, timeout=30) as c:
        for i in range(40):  # 40 x up to 256 KiB unread: well over the 8 MiB connection window
            sid = c.start("POST", f"/early/{i}", end=False)
            c.send_body(sid, body)
            c.wait(lambda: c.done(sid))
            assert c.streams[sid].status == "200" and bytes(c.streams[sid].body) == b"early"
        st = c.request("POST", "/api/after", body=b"q" * (2 * MiB), timeout=30)
        assert st.status == "200", st.reset
        assert json.loads(bytes(st.body))["body_length"] == 2 * MiB


# --------------------------------------------------------------------------
# responses


def test_request_id_is_a_never_indexed_field(sluice, backend):
    """The X-Request-Id value is new on every response: as a never-indexed
    literal it stays out of the HPACK dynamic table, where it would only push
    out the fields that repeat; those stay indexable."""
    import hpack
    b = backend("b")
    s = gateway(sluice, b)
    with H2Client(s.port) as c:
        sts = [c.request("GET", f"/r{i}") for i in range(3)]
    ids = set()
    for st in sts:
        assert st.status == "200", st.status
        rid = [f for f in st.headers if f[0] == "x-request-id"]
        assert len(rid) == 1 and isinstance(rid[0], hpack.NeverIndexedHeaderTuple), st.headers
        ids.add(rid[0][1])
        other = [f for f in st.headers if f[0] == "x-backend"]
        assert other and not isinstance(other[0], hpack.NeverIndexedHeaderTuple), st.headers
    assert len(ids) == 3


def test_head_and_204_have_no_body(sluice, backend):
    b = backend("b")
    s = gateway(sluice, b)
    with H2Client(s.port) as c:
        st = c.request("HEAD", "/h")
        assert st.status == "200" and st.ended and bytes(st.body) == b""
        assert st.header("content-length") is not None and int(st.header("content-length")) > 0
        st = c.request("GET", "/n", [("x-echo-status", "204")])
        assert st.status == "204" and st.ended and bytes(st.body) == b""
        assert st.header("content-length") is None


def test_gateway_errors_are_json_over_h2(sluice, backend):
    b = backend("b")
    s = gateway(sluice, b, routes=[{"match": {"prefix": "/api"}, "upstream": "b"}])
    with H2Client(s.port) as c:
        st = c.request("GET", "/nowhere")
        assert st.header("content-type") == "application/json"
        assert_gateway_error(st.resp(), 404)
    p = curl("--http2-prior-knowledge", "-s", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
             f"http://127.0.0.1:{s.port}/nowhere")
    assert p.stdout.decode() == "404 2", p


def test_upstream_down_is_502_over_h2(sluice):
    port = free_port()
    s = sluice({"workers": 1, "listen": [h2c_listener()],
                "upstreams": {"b": upstream(f"127.0.0.1:{port}", retries=0)},
                "routes": [{"upstream": "b"}]})
    with H2Client(s.port) as c:
        assert_gateway_error(c.request("GET", "/").resp(), 502)


def test_trailers_from_h2_upstream_reach_h2_client(sluice):
    from backends.h2 import H2Backend
    b = H2Backend()
    try:
        s = sluice({"workers": 1, "listen": [h2c_listener()],
                    "upstreams": {"g": upstream(b.address, protocol="h2")},
                    "routes": [{"upstream": "g"}]})
        with H2Client(s.port) as c:
            st = c.request("GET", "/hello", [("te", "trailers")])
            assert st.status == "200"
            assert len(st.body) > 0
            assert ("grpc-status", "0") in st.trailers, st.trailers
    finally:
        b.stop()


# --------------------------------------------------------------------------
# lifecycle


def test_drain_sends_goaway_and_finishes_streams(sluice, backend):
    """SPEC 7 "shutdown": a busy HTTP/2 connection gets a GOAWAY; its stream completes.
    (nghttp here: python3-h2 treats any GOAWAY as the end of the connection.)"""
    b = backend("b")
    s = gateway(sluice, b)
    p = subprocess.Popen(["nghttp", "-nv", "-H", "x-echo-delay-ms: 800",
                          f"http://127.0.0.1:{s.port}/slow"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: b.count == 1, what="request at the backend")
        s.send_signal(15)
        out, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = out.decode(errors="replace")
    assert p.returncode == 0, text + err.decode(errors="replace")
    assert ":status: 200" in text, text
    assert "recv GOAWAY" in text and "NO_ERROR" in text, text
    assert s.wait_exit(10) == 0


def test_idle_connection_gets_goaway(sluice):
    s = gateway(sluice, routes=[{"respond": {"status": 200, "body": "ok"}}],
                limits={"idle_timeout_ms": 300})
    with H2Client(s.port) as c:
        assert c.request("GET", "/").status == "200"
        c.wait(lambda: c.closed, 5)
        assert c.goaway is not None and c.goaway.error_code == h2.errors.ErrorCodes.NO_ERROR


def test_metrics_count_h2_connections(sluice):
    admin = f"127.0.0.1:{free_port()}"
    s = gateway(sluice, routes=[{"respond": {"status": 200, "body": "ok"}}],
                admin={"address": admin})
    host, _, port = admin.rpartition(":")
    with H2Client(s.port) as c:
        assert c.request("GET", "/").status == "200"
        p = curl(f"http://{admin}/metrics")
        assert 'sluice_connections_active{protocol="h2"} 1' in p.stdout.decode(), \
            (p.returncode, p.stdout, p.stderr, s.stderr())


# --------------------------------------------------------------------------
# h2c only by prior knowledge


def test_http1_upgrade_h2c_is_not_honoured(sluice, backend):
    b = backend("b")
    s = gateway(sluice, b)
    with RawConn(s.port) as c:
        c.send(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        r = c.read_response()
    assert r.version == "HTTP/1.1" and r.status == 200, r
    rec = b.last()
    assert rec_header(rec, "upgrade") is None
    assert rec_header(rec, "http2-settings") is None
    assert rec_header(rec, "connection") in (None, "keep-alive", "close")


def test_preface_on_listener_without_h2c_is_400(sluice):
    s = sluice({"workers": 1, "routes": [{"respond": {"status": 200, "body": "ok"}}]})
    with RawConn(s.port) as c:
        c.send(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        r = c.read_response()
    assert_gateway_error(r, 400)


def test_preface_in_pieces_and_http1_on_the_same_listener(sluice):
    s = gateway(sluice, routes=[{"respond": {"status": 200, "body": "ok"}}])
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        for i in range(0, len(PREFACE), 5):
            sock.sendall(PREFACE[i:i + 5])
            time.sleep(0.02)
        sock.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        data = sock.recv(9)
        assert len(data) >= 4 and data[3] == 4, data  # the server's SETTINGS
    assert s.request("GET", "/").status == 200  # HTTP/1.1 still served on the h2c listener


def test_broken_preface_on_h2c_only_listener_is_goaway(sluice):
    """A listener with protocols ["h2c"] speaks no HTTP/1.1: a broken
    connection preface (or an HTTP/1.1 request) is an HTTP/2 connection error,
    GOAWAY(PROTOCOL_ERROR) (RFC 9113 3.4), not an HTTP/1.1 400."""
    s = sluice({"workers": 1, "listen": [h2c_listener(protocols=("h2c",))],
                "routes": [{"respond": {"status": 200, "body": "ok"}}]})
    for opening in (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + frame(4, 0, 0, b""),
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            sock.sendall(opening)
            sock.settimeout(5)
            first = sock.recv(9, socket.MSG_PEEK)
            assert not first.startswith(b"HTTP/"), first
            frames = read_frames(sock)
        goaways = [f for f in frames if f[0] == 7]
        assert goaways, frames
        assert int.from_bytes(goaways[0][3][4:8], "big") == h2.errors.ErrorCodes.PROTOCOL_ERROR
    # A proper HTTP/2 client is served on it.
    c = H2Client(s.port)
    try:
        st = c.request("GET", "/")
        assert int(st.status) == 200 and bytes(st.body) == b"ok"
    finally:
        c.close()


# --------------------------------------------------------------------------
# TLS, ALPN h2


def test_curl_http2_over_tls(sluice, backend, tmp_path):
    from test_20_tls import make_ca, make_cert
    make_ca(tmp_path, "ca", "Sluice H2 Test CA")
    make_cert(tmp_path, "ca", "api", "/CN=api.test", "DNS:api.test")
    b = backend("b")
    port = free_port()
    sluice({"workers": 1,
            "listen": [{"address": f"127.0.0.1:{port}", "protocols": ["h2", "http/1.1"],
                        "tls": {"certificates": [{"cert": str(tmp_path / "api.pem"),
                                                  "key": str(tmp_path / "api.key")}]}}],
            "upstreams": {"b": upstream(b.address)}, "routes": [{"upstream": "b"}]})
    p = curl("--http2", "--cacert", str(tmp_path / "ca.pem"), "--resolve",
             f"api.test:{port}:127.0.0.1", "-w", "\n%{http_version}",
             "-d", "hello", f"https://api.test:{port}/tls?x=1")
    assert p.returncode == 0, p.stderr
    body, _, version = p.stdout.decode().rpartition("\n")
    assert version == "2", p.stdout
    data = json.loads(body)
    assert data["path"] == "/tls" and data["body_length"] == 5
    assert rec_header(b.last(), "x-forwarded-proto") == "https"
