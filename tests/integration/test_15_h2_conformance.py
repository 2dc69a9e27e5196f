"""HTTP/2 conformance (RFC 9113, RFC 7541), issue 12 section 2.2: the cases
h2spec checks, one parametrised case per h2spec test id (generic/*, http2/*,
hpack/*), plus an HPACK integer overflow, against sluice as a proxy in front
of the echo backend, over TLS (ALPN h2) and h2c (prior knowledge).

Frames are written by hand (exact bytes, malformed ones too); header blocks
come from python3-hpack's encoder or are written byte by byte. Expectations
follow h2spec's: a connection error is a GOAWAY carrying one of the expected
codes, or the connection closing; a stream error is a RST_STREAM (or GOAWAY)
carrying one of the expected codes, or the connection closing. A GOAWAY or
RST_STREAM with another code fails the case."""
import socket
import ssl
import struct
import time

import hpack
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from backends.certs import make_ca, make_cert
from backends.http import HttpBackend
from conftest import Sluice, free_port, sluice_binary, upstream

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = range(10)

S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, \
    S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = range(1, 7)

WAIT = 8.0  # seconds for any expected frame (ASan build, busy machine)
MAX_STREAMS = 8  # limits.h2_max_concurrent_streams of the gateway under test

HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def frame(ftype, flags, sid, payload=b"", length=None):
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings_payload(*pairs):
    return b"".join(struct.pack(">HI", k, v) for k, v in pairs)


def literal(name: bytes, value: bytes, huffman=False, first=0x00, prefix=4):
    """An HPACK literal field with a new name (first = 0x40 incremental,
    0x00 without indexing, 0x10 never indexed)."""
    return bytes([first]) + string(name, huffman) + string(value, huffman)


def integer(value, prefix_bits, first=0):
    """RFC 7541 5.1 integer with `first` holding the representation's flag bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def string(s: bytes, huffman=False):
    if huffman:
        enc = HUFFMAN.encode(s)
        return integer(len(enc), 7, 0x80) + enc
    return integer(len(s), 7) + s


class Violation(AssertionError):
    pass


class Conn:
    """One client connection writing raw frames and reading the gateway's."""

    def __init__(self, gw, timeout=WAIT):
        self.gw = gw
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
        if gw.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="api.test")
            assert sock.selected_alpn_protocol() == "h2"
        self.sock = sock
        self.buf = b""
        self.enc = hpack.Encoder()
        self.server_settings = {}
        self.closed = False

    @property
    def scheme(self):
        return "https" if self.gw.tls else "http"

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # writing -------------------------------------------------------------
    def send(self, data: bytes):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.closed = True

    def send_frame(self, ftype, flags, sid, payload=b"", length=None):
        self.send(frame(ftype, flags, sid, payload, length))

    def block(self, method="GET", path="/", extra=(), pseudo=None):
        """An HPACK header block for a request to the echo backend."""
        fields = pseudo if pseudo is not None else [
            (":method", method), (":scheme", self.scheme), (":path", path),
            (":authority", "api.test")]
        return self.enc.encode(list(fields) + list(extra))

    def headers(self, sid, flags=END_STREAM | END_HEADERS, block=None, **kw):
        self.send_frame(HEADERS, flags, sid, block if block is not None else self.block(**kw))

    def settings(self, *pairs):
        """SETTINGS with `pairs`, and the gateway's ACK of it."""
        self.send_frame(SETTINGS, 0, 0, settings_payload(*pairs))
        self.wait_for(lambda f: f[0] == SETTINGS and f[1] & ACK, "a SETTINGS ACK")

    def ping(self, data=b"h2spec\x00\x01"):
        self.send_frame(PING, 0, 0, data)
        return data

    # reading -------------------------------------------------------------
    def read_frame(self, deadline):
        """(type, flags, sid, payload), None when the connection closed."""
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    head, payload = self.buf[:9], self.buf[9:9 + n]
                    self.buf = self.buf[9 + n:]
                    sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                    return head[3], head[4], sid, payload
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Violation("timed out waiting for a frame")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                data = b""
            except (socket.timeout, TimeoutError):
                raise Violation("timed out waiting for a frame") from None
            if not data:
                self.closed = True
                return None
            self.buf += data

    def handshake(self, *settings):
        """Preface and SETTINGS; acknowledges the gateway's SETTINGS and waits
        for the acknowledgement of ours."""
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings_payload(*settings)))
        deadline = time.monotonic() + WAIT
        got_settings = got_ack = False
        while not (got_settings and got_ack):
            f = self.read_frame(deadline)
            assert f is not None, "connection closed during the handshake"
            ftype, flags, sid, payload = f
            if ftype == SETTINGS and not flags & ACK:
                for i in range(0, len(payload), 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    self.server_settings[k] = v
                self.send_frame(SETTINGS, ACK, 0)
                got_settings = True
            elif ftype == SETTINGS:
                got_ack = True
        return self

    def wait_for(self, match, what, timeout=WAIT):
        """Reads frames until match(frame) is true; fails on close or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.read_frame(deadline)
            if f is None:
                raise Violation(f"connection closed while waiting for {what}")
            if f[0] == GOAWAY and f[1:] and not match(f):
                code = struct.unpack(">I", f[3][4:8])[0]
                raise Violation(f"GOAWAY {code} while waiting for {what}")
            if match(f):
                return f

    # expectations (h2spec's Verify*) ---------------------------------------
    def expect_error(self, types, codes):
        """The connection closes, or a frame of `types` (GOAWAY, RST_STREAM)
        comes, carrying one of `codes`."""
        deadline = time.monotonic() + WAIT
        while True:
            f = self.read_frame(deadline)
            if f is None:
                return
            if f[0] in types:
                off = 4 if f[0] == GOAWAY else 0
                code = struct.unpack(">I", f[3][off:off + 4])[0]
                if code not in codes:
                    kind = "GOAWAY" if f[0] == GOAWAY else f"RST_STREAM on {f[2]}"
                    raise Violation(f"{kind} with error {code}, expected one of {codes}")
                return

    def expect_connection_error(self, *codes):
        self.expect_error((GOAWAY,), codes)

    def expect_stream_error(self, *codes):
        self.expect_error((GOAWAY, RST_STREAM), codes)

    def expect_ping_ack(self, data=b"h2spec\x00\x01"):
        f = self.wait_for(lambda f: f[0] == PING and f[1] & ACK, "a PING ACK")
        assert f[3] == data, f

    def expect_headers(self, sid):
        return self.wait_for(lambda f: f[0] == HEADERS and f[2] == sid,
                             f"a HEADERS frame on stream {sid}")

    def expect_data(self, sid, total):
        """DATA on `sid` adding up to exactly `total` bytes."""
        got = 0
        while got < total:
            f = self.wait_for(lambda f: f[0] == DATA and f[2] == sid, f"DATA on {sid}")
            got += data_length(f)
        assert got == total, f"{got} bytes of DATA where the window allowed {total}"
        # Nothing beyond the window: the PING round trip comes back first.
        self.ping(b"windowok")
        while True:
            f = self.wait_for(lambda f: f[0] in (PING, DATA), "a PING ACK")
            if f[0] == DATA and f[2] == sid:
                assert data_length(f) == 0, "DATA beyond the flow-control window"
            elif f[0] == PING and f[1] & ACK:
                return

    def expect_stream_end(self, sid):
        return self.wait_for(lambda f: f[2] == sid and (
            (f[0] in (HEADERS, DATA) and f[1] & END_STREAM) or f[0] == RST_STREAM),
            f"the end of stream {sid}")

    def expect_response(self, sid):
        self.expect_headers(sid)
        self.expect_stream_end(sid)


def data_length(f):
    payload = f[3]
    if f[1] & PADDED:
        return len(payload) - 1 - payload[0]
    return len(payload)


# --------------------------------------------------------------------------
# the gateway under test


class Gateway:
    def __init__(self, sluice, tls):
        self.sluice = sluice
        self.tls = tls
        self.port = sluice.port


@pytest.fixture(scope="module")
def echo_backend():
    b = HttpBackend("echo").start()
    yield b
    b.stop()


@pytest.fixture(scope="module", params=["h2c", "tls"])
def gw(request, tmp_path_factory, echo_backend):
    d = tmp_path_factory.mktemp(f"conformance-{request.param}")
    if request.param == "tls":
        make_ca(d, "ca", "Sluice Test CA")
        make_cert(d, "ca", "api", "/CN=api.test", "DNS:api.test")
        listener = {"address": f"127.0.0.1:{free_port()}",
                    "tls": {"certificates": [{"cert": str(d / "api.pem"),
                                              "key": str(d / "api.key")}],
                            "protocols": ["h2", "http/1.1"]}}
    else:
        listener = {"address": f"127.0.0.1:{free_port()}", "protocols": ["h2c", "http/1.1"]}
    cfg = {"listen": [listener], "workers": 1,
           "upstreams": {"echo": upstream(echo_backend.address)},
           "routes": [{"upstream": "echo"}],
           "limits": {"h2_max_concurrent_streams": MAX_STREAMS},
           "access_log": {"path": "off"}}
    s = Sluice(sluice_binary(), d / "sluice", cfg)
    s.start()
    yield Gateway(s, request.param == "tls")
    problems = s.close()
    if problems:
        pytest.fail("\n".join(problems))


# --------------------------------------------------------------------------
# the cases, by h2spec id

CASES = {}


def case(case_id, handshake=True):
    def register(fn):
        CASES[case_id] = (fn, handshake)
        return fn
    return register


SLOW = [("x-echo-delay-ms", "3000")]  # keeps a stream half-closed (remote) for the case


# ---- generic: what every endpoint must accept ----------------------------

@case("generic/1/1", handshake=False)
def _(c):
    c.send(PREFACE + frame(SETTINGS, 0, 0))
    c.wait_for(lambda f: f[0] == SETTINGS and not f[1] & ACK, "the server's SETTINGS")


@case("generic/2/2")
def _(c):
    c.headers(1, extra=SLOW)
    c.send_frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1))
    c.expect_response(1)


@case("generic/2/3")
def _(c):
    c.headers(1, extra=SLOW)
    c.send_frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 15))
    c.expect_response(1)


@case("generic/3.1/1")
def _(c):
    c.headers(1, END_HEADERS, method="POST")
    c.send_frame(DATA, END_STREAM, 1, b"test")
    c.expect_response(1)


@case("generic/3.1/2")
def _(c):
    c.headers(1, END_HEADERS, method="POST")
    for _ in range(4):
        c.send_frame(DATA, 0, 1, b"test")
    c.send_frame(DATA, END_STREAM, 1, b"test")
    c.expect_response(1)


@case("generic/3.1/3")
def _(c):
    c.headers(1, END_HEADERS, method="POST")
    c.send_frame(DATA, END_STREAM | PADDED, 1, b"\x08test" + b"\x00" * 8)
    c.expect_response(1)


@case("generic/3.2/1")
def _(c):
    c.headers(1)
    c.expect_response(1)


@case("generic/3.2/2")
def _(c):
    c.send_frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1,
                 b"\x08" + c.block() + b"\x00" * 8)
    c.expect_response(1)


@case("generic/3.2/3")
def _(c):
    c.send_frame(HEADERS, END_STREAM | END_HEADERS | PRIORITY_FLAG, 1,
                 struct.pack(">IB", 0, 255) + c.block())
    c.expect_response(1)


def priority_then_request(prio_sid, dependency, weight, sid, slow_first=False):
    """A PRIORITY frame for `prio_sid`, then a request on `sid` (after a slow
    one on stream 1 with `slow_first`): the request is answered."""
    def run(c):
        if slow_first:
            c.headers(1, extra=SLOW)
        c.send_frame(PRIORITY, 0, prio_sid, struct.pack(">IB", dependency, weight))
        c.headers(sid)
        c.expect_response(sid)
    return run


case("generic/3.3/1")(priority_then_request(1, 0, 0, 1))
case("generic/3.3/2")(priority_then_request(1, 0, 255, 1))
case("generic/3.3/3")(priority_then_request(3, 1, 15, 3, slow_first=True))
case("generic/3.3/4")(priority_then_request(3, 0x80000001, 15, 3, slow_first=True))
case("generic/3.3/5")(priority_then_request(5, 0, 15, 3))


@case("generic/3.5/1")
def _(c):
    c.settings((S_ENABLE_PUSH, 0))


@case("generic/3.7/1")
def _(c):
    c.ping()
    c.expect_ping_ack()


@case("generic/3.8/1")
def _(c):
    c.send_frame(GOAWAY, 0, 0, struct.pack(">II", 0, NO_ERROR))
    # The gateway may close the connection or answer a PING; nothing else.
    c.ping()
    deadline = time.monotonic() + WAIT
    while True:
        f = c.read_frame(deadline)
        if f is None or (f[0] == PING and f[1] & ACK):
            return
        if f[0] == GOAWAY:
            assert struct.unpack(">I", f[3][4:8])[0] == NO_ERROR, f


def continued(*cuts):
    """A request whose header block is split at `cuts` into HEADERS and
    CONTINUATION frames, answered as usual."""
    def run(c):
        block = c.block()
        pieces = [block[a:b] for a, b in zip((0,) + cuts, cuts + (len(block),))]
        c.send_frame(HEADERS, END_STREAM, 1, pieces[0])
        for i, piece in enumerate(pieces[1:], 2):
            c.send_frame(CONTINUATION, END_HEADERS if i == len(pieces) else 0, 1, piece)
        c.expect_response(1)
    return run


case("generic/3.10/1")(continued(5))
case("generic/3.10/2")(continued(3, 6))


@case("generic/4/1")
def _(c):
    c.headers(1)
    c.expect_response(1)


@case("generic/4/2")
def _(c):
    c.headers(1, method="HEAD")
    f = c.expect_headers(1)
    assert f[1] & END_STREAM, "a HEAD response carries no DATA"


@case("generic/4/3")
def _(c):
    c.headers(1, END_HEADERS, method="POST", extra=[("content-length", "4")])
    c.send_frame(DATA, END_STREAM, 1, b"test")
    c.expect_response(1)


@case("generic/4/4")
def _(c):
    c.headers(1, END_HEADERS, method="POST", extra=[("te", "trailers")])
    c.send_frame(DATA, 0, 1, b"test")
    c.send_frame(HEADERS, END_STREAM | END_HEADERS, 1, c.enc.encode([("x-trailer", "yes")]))
    c.expect_response(1)


def pseudo_fields(c, huffman=False):
    """:method GET, :scheme, :path / and :authority, without the encoder."""
    return bytes([0x82, 0x87 if c.gw.tls else 0x86, 0x84]) + bytes([0x01]) + \
        string(b"api.test", huffman)


def hpack_case(rep):
    def run(c):
        c.headers(1, block=rep(c))
        c.expect_response(1)
    return run


GENERIC_HPACK = {
    # 5/1: indexed representations only (and :authority, a literal)
    "generic/5/1": lambda c: pseudo_fields(c),
    # literal with incremental indexing, indexed name / new name, plain / Huffman
    "generic/5/2": lambda c: pseudo_fields(c) + bytes([0x40 | 58]) + string(b"test"),
    "generic/5/3": lambda c: pseudo_fields(c) + bytes([0x40 | 58]) + string(b"test", True),
    "generic/5/4": lambda c: pseudo_fields(c) + literal(b"x-test", b"test", first=0x40),
    "generic/5/5": lambda c: pseudo_fields(c) + literal(b"x-test", b"test", True, first=0x40),
    # literal without indexing
    "generic/5/6": lambda c: pseudo_fields(c) + integer(58, 4, 0x00) + string(b"test"),
    "generic/5/7": lambda c: pseudo_fields(c) + integer(58, 4, 0x00) + string(b"test", True),
    "generic/5/8": lambda c: pseudo_fields(c) + literal(b"x-test", b"test"),
    "generic/5/9": lambda c: pseudo_fields(c) + literal(b"x-test", b"test", True),
    # literal never indexed
    "generic/5/10": lambda c: pseudo_fields(c) + integer(58, 4, 0x10) + string(b"test"),
    "generic/5/11": lambda c: pseudo_fields(c) + integer(58, 4, 0x10) + string(b"test", True),
    "generic/5/12": lambda c: pseudo_fields(c) + literal(b"x-test", b"test", first=0x10),
    "generic/5/13": lambda c: pseudo_fields(c) + literal(b"x-test", b"test", True, first=0x10),
    # dynamic table size updates at the start of a block
    "generic/5/14": lambda c: integer(4096, 5, 0x20) + pseudo_fields(c),
    "generic/5/15": lambda c: integer(0, 5, 0x20) + integer(4096, 5, 0x20) + pseudo_fields(c),
}
for _id, _rep in GENERIC_HPACK.items():
    case(_id)(hpack_case(_rep))


# ---- http2/3.5: connection preface -----------------------------------------

@case("http2/3.5/1", handshake=False)
def _(c):
    c.send(PREFACE + frame(SETTINGS, 0, 0))
    c.wait_for(lambda f: f[0] == SETTINGS and not f[1] & ACK, "the server's SETTINGS")


@case("http2/3.5/2", handshake=False)
def _(c):
    c.send(b"INVALID CONNECTION PREFACE\r\n\r\n" + frame(SETTINGS, 0, 0))
    c.expect_connection_error(PROTOCOL_ERROR)


# ---- http2/4: frames -------------------------------------------------------


@case("http2/4.1/2")
def _(c):
    c.send(frame(PING, 0x16, 0, b"h2spec\x00\x01"))
    c.expect_ping_ack()


@case("http2/4.1/3")
def _(c):
    c.send(struct.pack(">I", 8)[1:] + bytes([PING, 0]) + struct.pack(">I", 0x80000000) +
           b"h2spec\x00\x01")
    c.expect_ping_ack()


@case("http2/4.2/1")
def _(c):
    c.headers(1, END_HEADERS, method="POST", extra=[("content-length", "16384")])
    c.send_frame(DATA, END_STREAM, 1, b"x" * 16384)
    c.expect_response(1)


@case("http2/4.2/2")
def _(c):
    size = c.server_settings.get(S_MAX_FRAME_SIZE, 16384)
    c.headers(1, END_HEADERS, method="POST")
    c.send_frame(DATA, END_STREAM, 1, b"x" * (size + 1))
    c.expect_stream_error(FRAME_SIZE_ERROR)


@case("http2/4.2/3")
def _(c):
    size = c.server_settings.get(S_MAX_FRAME_SIZE, 16384)
    extra = [(f"x-test-{i}", "x" * 1000) for i in range(size // 1000 + 1)]
    block = c.enc.encode([(":method", "GET"), (":scheme", c.scheme), (":path", "/"),
                          (":authority", "api.test")] + extra, huffman=False)
    assert len(block) > size
    c.send_frame(HEADERS, END_STREAM | END_HEADERS, 1, block)
    c.expect_connection_error(FRAME_SIZE_ERROR)


@case("http2/4.3/1")
def _(c):
    c.send_frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x40")  # a literal cut short
    c.expect_connection_error(COMPRESSION_ERROR)


# ---- http2/5.1: stream states ---------------------------------------------


@case("http2/5.1.1/2")
def _(c):
    c.headers(5)
    c.expect_response(5)
    c.headers(3)
    c.expect_connection_error(PROTOCOL_ERROR)


@case("http2/5.1.1/trailers-below-highest")
def _(c):
    """Not h2spec's: trailers on a stream below the highest id are fine (the
    rule above is about ids never used)."""
    c.headers(1, END_HEADERS, method="POST", extra=[("te", "trailers")])
    c.headers(3)
    c.expect_response(3)
    c.send_frame(DATA, 0, 1, b"test")
    c.send_frame(HEADERS, END_STREAM | END_HEADERS, 1, c.enc.encode([("x-trailer", "yes")]))
    c.expect_response(1)


@case("http2/5.1.1/skipped-far-below-highest")
def _(c):
    """Not h2spec's: the ids remembered below the highest span several
    64-bit words; a skipped id 70 streams back is still caught."""
    for i in range(100):
        if i != 29:
            c.headers(1 + 2 * i)
            c.expect_response(1 + 2 * i)
    c.headers(1 + 2 * 29)
    c.expect_connection_error(PROTOCOL_ERROR)


@case("http2/5.1.1/trailers-far-below-highest")
def _(c):
    """Not h2spec's: trailers on a stream opened 70 streams earlier pass."""
    c.headers(1, END_HEADERS, method="POST", extra=[("te", "trailers")])
    for i in range(1, 71):
        c.headers(1 + 2 * i)
        c.expect_response(1 + 2 * i)
    c.send_frame(DATA, 0, 1, b"test")
    c.send_frame(HEADERS, END_STREAM | END_HEADERS, 1, c.enc.encode([("x-trailer", "yes")]))
    c.expect_response(1)


@case("http2/5.1.2/1")
def _(c):
    limit = c.server_settings.get(S_MAX_CONCURRENT_STREAMS)
    assert limit == MAX_STREAMS, c.server_settings
    for i in range(limit + 1):
        c.headers(1 + 2 * i, END_HEADERS, method="POST")
    c.expect_stream_error(PROTOCOL_ERROR, REFUSED_STREAM)


# ---- http2/5.3, 5.4, 5.5: priority, error handling, extensions ------------


@case("http2/5.4.1/1")
def _(c):
    c.send_frame(PING, 0, 0, b"h2spec", length=6)
    c.expect_connection_error(FRAME_SIZE_ERROR)
    deadline = time.monotonic() + WAIT
    while c.read_frame(deadline) is not None:
        pass  # then the connection closes


@case("http2/5.4.1/2")
def _(c):
    c.send_frame(PING, 0, 3, b"h2spec\x00\x01")
    c.wait_for(lambda f: f[0] == GOAWAY and struct.unpack(">I", f[3][4:8])[0] == PROTOCOL_ERROR,
               "a GOAWAY with PROTOCOL_ERROR")


# ---- http2/6.1 DATA, 6.2 HEADERS, 6.3 PRIORITY, 6.4 RST_STREAM -------------


# ---- http2/6.5 SETTINGS ----------------------------------------------------


@case("http2/6.5.3/1")
def _(c):
    c.settings((S_INITIAL_WINDOW_SIZE, 100), (S_INITIAL_WINDOW_SIZE, 1))
    c.headers(1)
    c.expect_data(1, 1)


case("http2/6.5.3/2")(CASES["generic/3.5/1"][0])  # the same check


# ---- http2/6.7 PING, 6.8 GOAWAY, 6.9 WINDOW_UPDATE -------------------------

@case("http2/6.7/1")
def _(c):
    c.ping(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    c.expect_ping_ack(b"\x01\x02\x03\x04\x05\x06\x07\x08")


@case("http2/6.7/2")
def _(c):
    c.send_frame(PING, ACK, 0, b"unknown!")
    c.ping()
    c.expect_ping_ack()  # only the second PING is answered, not the ACK


@case("http2/6.9.1/1")
def _(c):
    c.settings((S_INITIAL_WINDOW_SIZE, 1))
    c.headers(1)
    c.expect_data(1, 1)


@case("http2/6.9.1/2")
def _(c):
    c.send_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF))
    c.send_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF))
    c.expect_connection_error(FLOW_CONTROL_ERROR)


@case("http2/6.9.1/3")
def _(c):
    c.headers(1, END_HEADERS, method="POST")
    c.send_frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0x7FFFFFFF))
    c.send_frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0x7FFFFFFF))
    c.expect_stream_error(FLOW_CONTROL_ERROR)


@case("http2/6.9.2/1")
def _(c):
    c.settings((S_INITIAL_WINDOW_SIZE, 0))
    c.headers(1)
    c.expect_headers(1)
    c.send_frame(SETTINGS, 0, 0, settings_payload((S_INITIAL_WINDOW_SIZE, 1)))
    c.expect_data(1, 1)


@case("http2/6.9.2/2")
def _(c):
    c.settings((S_INITIAL_WINDOW_SIZE, 3))
    c.headers(1)
    c.expect_data(1, 3)
    # The window goes to -1, then a WINDOW_UPDATE of 2 leaves room for 1 byte.
    c.settings((S_INITIAL_WINDOW_SIZE, 2))
    c.send_frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 2))
    c.expect_data(1, 1)


# ---- http2/6.10 CONTINUATION ----------------------------------------------

case("http2/6.10/1")(continued(4))
case("http2/6.10/2")(continued(2, 4))


def interrupted(cuts, ftype, flags, sid, payload=None, rest_after=False):
    """A header block cut at `cuts` (HEADERS, then CONTINUATIONs, none with
    END_HEADERS; a cut past the end sends it whole), interrupted by another
    frame (`payload` None: the rest of the block), then with `rest_after`
    the rest: a connection error."""
    def run(c):
        block = c.block()
        c.send_frame(HEADERS, END_STREAM, 1, block[:cuts[0]])
        for a, b in zip(cuts, cuts[1:]):
            c.send_frame(CONTINUATION, 0, 1, block[a:b])
        rest = block[cuts[-1]:]
        c.send_frame(ftype, flags, sid, rest if payload is None else payload)
        if rest_after:
            c.send_frame(CONTINUATION, END_HEADERS, 1, rest)
        c.expect_connection_error(PROTOCOL_ERROR)
    return run


WHOLE = (1 << 16,)
case("http2/4.3/2")(interrupted((5,), PRIORITY, 0, 1, struct.pack(">IB", 0, 15),
                                rest_after=True))
case("http2/4.3/3")(interrupted(WHOLE, HEADERS, END_STREAM | END_HEADERS, 3))
case("http2/5.5/2")(interrupted((5,), 0xFF, 0, 1, b"unknown extension", rest_after=True))
case("http2/6.2/1")(interrupted(WHOLE, PRIORITY, 0, 1, struct.pack(">IB", 0, 15)))
case("http2/6.2/2")(interrupted(WHOLE, HEADERS, END_STREAM | END_HEADERS, 3))
case("http2/6.10/3")(interrupted((4, 6), DATA, END_STREAM, 1, b"test"))
case("http2/6.10/4")(interrupted((4, 6), CONTINUATION, END_HEADERS, 3))
case("http2/6.10/5")(interrupted((4, 6), CONTINUATION, END_HEADERS, 0))


@case("http2/6.10/6")
def _(c):
    c.headers(1, extra=SLOW)
    c.send_frame(CONTINUATION, END_HEADERS, 1, c.enc.encode([("x-test", "ok")]))
    c.expect_connection_error(PROTOCOL_ERROR)


# ---- http2/7 error codes, 8 HTTP message exchanges -------------------------

@case("http2/7/1")
def _(c):
    c.send_frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0xFF))
    c.ping()
    deadline = time.monotonic() + WAIT
    while True:  # a PING ACK, or the connection closes (h2spec accepts both)
        f = c.read_frame(deadline)
        if f is None or (f[0] == PING and f[1] & ACK):
            return
        if f[0] == GOAWAY:
            assert struct.unpack(">I", f[3][4:8])[0] == NO_ERROR, f


@case("http2/8.1/1")
def _(c):
    c.headers(1, END_HEADERS, method="POST")
    c.send_frame(DATA, 0, 1, b"test")
    c.send_frame(HEADERS, END_HEADERS, 1, c.enc.encode([("x-trailer", "yes")]))
    c.expect_stream_error(PROTOCOL_ERROR)


def bad_request(fields=None, extra=(), trailers=None):
    def run(c):
        if trailers is not None:
            c.headers(1, END_HEADERS, method="POST")
            c.send_frame(DATA, 0, 1, b"test")
            c.send_frame(HEADERS, END_STREAM | END_HEADERS, 1, c.enc.encode(trailers))
        else:
            f = fields(c) if fields else None
            c.headers(1, block=c.enc.encode(f) if f else c.block(extra=extra))
        c.expect_stream_error(PROTOCOL_ERROR)
    return run


def req(c, *, drop=(), add=(), path="/", after=()):
    base = [(":method", "GET"), (":scheme", c.scheme), (":path", path),
            (":authority", "api.test")]
    return [f for f in base if f[0] not in drop] + list(add) + [(k, v) for k, v in after]


BAD_REQUESTS = {
    "http2/8.1.2/1": bad_request(extra=[("X-TEST", "ok")]),
    "http2/8.1.2.1/1": bad_request(lambda c: req(c, add=[(":test", "ok")])),
    "http2/8.1.2.1/2": bad_request(lambda c: req(c, add=[(":status", "200")])),
    "http2/8.1.2.1/3": bad_request(trailers=[(":method", "POST")]),
    "http2/8.1.2.1/4": bad_request(lambda c: [(":method", "GET"), (":scheme", c.scheme),
                                             ("x-test", "ok"), (":path", "/"),
                                             (":authority", "api.test")]),
    "http2/8.1.2.2/1": bad_request(extra=[("connection", "keep-alive")]),
    "http2/8.1.2.2/2": bad_request(extra=[("te", "trailers, deflate")]),
    "http2/8.1.2.3/1": bad_request(lambda c: req(c, path="")),
    "http2/8.1.2.3/2": bad_request(lambda c: req(c, drop=(":method",))),
    "http2/8.1.2.3/3": bad_request(lambda c: req(c, drop=(":scheme",))),
    "http2/8.1.2.3/4": bad_request(lambda c: req(c, drop=(":path",))),
    "http2/8.1.2.3/5": bad_request(lambda c: req(c, add=[(":method", "GET")])),
    "http2/8.1.2.3/6": bad_request(lambda c: req(c, add=[(":scheme", c.scheme)])),
    "http2/8.1.2.3/7": bad_request(lambda c: req(c, add=[(":path", "/")])),
}
for _id, _fn in BAD_REQUESTS.items():
    case(_id)(_fn)


@case("http2/8.1.2.6/1")
def _(c):
    c.headers(1, END_HEADERS, method="POST", extra=[("content-length", "1")])
    c.send_frame(DATA, END_STREAM, 1, b"test")
    c.expect_stream_error(PROTOCOL_ERROR)


@case("http2/8.1.2.6/2")
def _(c):
    c.headers(1, END_HEADERS, method="POST", extra=[("content-length", "1")])
    c.send_frame(DATA, 0, 1, b"test")
    c.send_frame(DATA, END_STREAM, 1, b"test")
    c.expect_stream_error(PROTOCOL_ERROR)


# ---- hpack: RFC 7541 -------------------------------------------------------

def hpack_error(rep):
    def run(c):
        c.headers(1, block=rep(c))
        c.expect_connection_error(COMPRESSION_ERROR)
    return run


HPACK_ERRORS = {
    # 2.3.3: an index past the static and (empty) dynamic table
    "hpack/2.3.3/1": lambda c: pseudo_fields(c) + integer(70, 7, 0x80),
    "hpack/2.3.3/2": lambda c: pseudo_fields(c) + integer(70, 6, 0x40) + string(b"test"),
    # 4.2: a dynamic table size update after the first field
    "hpack/4.2/1": lambda c: pseudo_fields(c) + integer(0, 5, 0x20),
    # 5.2: Huffman padding of 8 bits or more, padding not made of EOS's 1s, an EOS
    "hpack/5.2/1": lambda c: pseudo_fields(c) + bytes([0x00]) + string(b"x-test") +
    bytes([0x80 | (len(HUFFMAN.encode(b"test")) + 1)]) + HUFFMAN.encode(b"test") + b"\xff",
    "hpack/5.2/2": lambda c: pseudo_fields(c) + bytes([0x00]) + string(b"x-test") +
    bytes([0x81, 0x18]),  # 'a' (00011) then three 0 bits of padding
    "hpack/5.2/3": lambda c: pseudo_fields(c) + bytes([0x00]) + string(b"x-test") +
    bytes([0x84, 0xFF, 0xFF, 0xFF, 0xFF]),  # the 30-bit EOS
    # 6.1: index 0
    "hpack/6.1/1": lambda c: pseudo_fields(c) + bytes([0x80]),
    # 6.3: a table size update above SETTINGS_HEADER_TABLE_SIZE
    "hpack/6.3/1": lambda c: integer(c.server_settings.get(S_HEADER_TABLE_SIZE, 4096) + 1, 5,
                                     0x20) + pseudo_fields(c),
    # 5.1: an integer that overflows any decoder's range (not an h2spec case)
    "hpack/5.1/overflow": lambda c: pseudo_fields(c) + bytes([0xFF] + [0xFF] * 10 + [0x7F]),
}
for _id, _rep in HPACK_ERRORS.items():
    case(_id)(hpack_error(_rep))


# ---- cases of one frame: a set-up, the frame, what must follow ------------

SETUPS = {
    "idle": lambda c: None,
    # stream 1 open (a POST whose body has not come)
    "open": lambda c: c.headers(1, END_HEADERS, method="POST"),
    # stream 1 half-closed (remote): the request ended, the answer takes 3 s
    "half_closed": lambda c: c.headers(1, extra=SLOW),
    # stream 1 closed by its response
    "closed": lambda c: (c.headers(1), c.expect_stream_end(1)),
    # stream 1 closed by the client's RST_STREAM
    "reset": lambda c: (c.headers(1, END_HEADERS, method="POST"),
                        c.send_frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL))),
}


def one_frame(setup, ftype, flags, sid, payload, expect, *codes, length=None):
    """`payload` may be a function of the connection (a header block);
    `expect` is "conn" or "stream" (an error with one of `codes`) or "ping"
    (the frame is ignored: a PING is still answered)."""
    def run(c):
        SETUPS[setup](c)
        c.send_frame(ftype, flags, sid, payload(c) if callable(payload) else payload, length)
        if expect == "conn":
            c.expect_connection_error(*codes)
        elif expect == "stream":
            c.expect_stream_error(*codes)
        else:
            c.ping()
            c.expect_ping_ack()
    return run


def block(c):
    return c.block()


def u32(value):
    return struct.pack(">I", value)


PRIO = struct.pack(">IB", 0, 15)
EH_ES = END_HEADERS | END_STREAM
ONE_FRAME = {
    "generic/2/1": ("idle", PRIORITY, 0, 1, PRIO, "ping"),
    "generic/2/4": ("half_closed", RST_STREAM, 0, 1, u32(CANCEL), "ping"),
    "generic/2/5": ("closed", PRIORITY, 0, 1, PRIO, "ping"),
    "generic/3.4/1": ("open", RST_STREAM, 0, 1, u32(CANCEL), "ping"),
    "generic/3.9/1": ("idle", WINDOW_UPDATE, 0, 0, u32(1), "ping"),
    "generic/3.9/2": ("open", WINDOW_UPDATE, 0, 1, u32(1), "ping"),
    "http2/4.1/1": ("idle", 0x16, 0, 0, b"unknown", "ping"),
    "http2/5.1/1": ("idle", DATA, END_STREAM, 1, b"test", "conn", PROTOCOL_ERROR),
    "http2/5.1/2": ("idle", RST_STREAM, 0, 1, u32(CANCEL), "conn", PROTOCOL_ERROR),
    "http2/5.1/3": ("idle", WINDOW_UPDATE, 0, 1, u32(100), "conn", PROTOCOL_ERROR),
    "http2/5.1/4": ("idle", CONTINUATION, END_HEADERS, 1, block, "conn", PROTOCOL_ERROR),
    "http2/5.1/5": ("half_closed", DATA, END_STREAM, 1, b"test", "stream", STREAM_CLOSED),
    "http2/5.1/6": ("half_closed", HEADERS, EH_ES, 1, block, "stream", STREAM_CLOSED),
    "http2/5.1/7": ("half_closed", CONTINUATION, END_HEADERS, 1, block, "stream",
                    STREAM_CLOSED, PROTOCOL_ERROR),
    "http2/5.1/8": ("reset", DATA, END_STREAM, 1, b"test", "stream", STREAM_CLOSED),
    "http2/5.1/9": ("reset", HEADERS, EH_ES, 1, block, "stream", STREAM_CLOSED),
    "http2/5.1/10": ("reset", CONTINUATION, END_HEADERS, 1, block, "stream", STREAM_CLOSED,
                     PROTOCOL_ERROR),
    "http2/5.1/11": ("closed", DATA, END_STREAM, 1, b"test", "stream", STREAM_CLOSED),
    "http2/5.1/12": ("closed", HEADERS, EH_ES, 1, block, "stream", STREAM_CLOSED),
    "http2/5.1/13": ("closed", CONTINUATION, END_HEADERS, 1, block, "stream", STREAM_CLOSED,
                     PROTOCOL_ERROR),
    "http2/5.1.1/1": ("idle", HEADERS, EH_ES, 2, block, "conn", PROTOCOL_ERROR),
    "http2/5.3.1/1": ("idle", HEADERS, EH_ES | PRIORITY_FLAG, 1,
                      lambda c: struct.pack(">IB", 1, 15) + c.block(), "stream", PROTOCOL_ERROR),
    "http2/5.3.1/2": ("idle", PRIORITY, 0, 1, struct.pack(">IB", 1, 15), "stream",
                      PROTOCOL_ERROR),
    "http2/5.5/1": ("idle", 0xFF, 0, 0, b"unknown extension", "ping"),
    "http2/6.1/1": ("idle", DATA, END_STREAM, 0, b"test", "conn", PROTOCOL_ERROR),
    "http2/6.1/2": ("half_closed", DATA, END_STREAM, 1, b"test", "stream", STREAM_CLOSED),
    # pad length 6 with 4 bytes left
    "http2/6.1/3": ("open", DATA, END_STREAM | PADDED, 1, b"\x06test", "conn", PROTOCOL_ERROR),
    "http2/6.2/3": ("idle", HEADERS, EH_ES, 0, block, "conn", PROTOCOL_ERROR),
    "http2/6.2/4": ("idle", HEADERS, EH_ES | PADDED, 1,
                    lambda c: (lambda b: bytes([len(b) + 1]) + b)(c.block()), "conn",
                    PROTOCOL_ERROR),
    "http2/6.3/1": ("idle", PRIORITY, 0, 0, PRIO, "conn", PROTOCOL_ERROR),
    "http2/6.3/2": ("open", PRIORITY, 0, 1, PRIO + b"\x00", "stream", FRAME_SIZE_ERROR),
    "http2/6.4/1": ("idle", RST_STREAM, 0, 0, u32(CANCEL), "conn", PROTOCOL_ERROR),
    "http2/6.4/2": ("idle", RST_STREAM, 0, 1, u32(CANCEL), "conn", PROTOCOL_ERROR),
    "http2/6.4/3": ("open", RST_STREAM, 0, 1, u32(CANCEL) + b"\x00", "conn", FRAME_SIZE_ERROR),
    "http2/6.5/1": ("idle", SETTINGS, ACK, 0, settings_payload((S_ENABLE_PUSH, 0)), "conn",
                    FRAME_SIZE_ERROR),
    "http2/6.5/2": ("idle", SETTINGS, 0, 1, settings_payload((S_ENABLE_PUSH, 0)), "conn",
                    PROTOCOL_ERROR),
    "http2/6.5/3": ("idle", SETTINGS, 0, 0, settings_payload((S_ENABLE_PUSH, 0))[:5], "conn",
                    FRAME_SIZE_ERROR),
    "http2/6.5.2/1": ("idle", SETTINGS, 0, 0, settings_payload((S_ENABLE_PUSH, 2)), "conn",
                      PROTOCOL_ERROR),
    "http2/6.5.2/2": ("idle", SETTINGS, 0, 0, settings_payload((S_INITIAL_WINDOW_SIZE, 1 << 31)),
                      "conn", FLOW_CONTROL_ERROR),
    "http2/6.5.2/3": ("idle", SETTINGS, 0, 0, settings_payload((S_MAX_FRAME_SIZE, 16383)),
                      "conn", PROTOCOL_ERROR),
    "http2/6.5.2/4": ("idle", SETTINGS, 0, 0, settings_payload((S_MAX_FRAME_SIZE, 1 << 24)),
                      "conn", PROTOCOL_ERROR),
    "http2/6.5.2/5": ("idle", SETTINGS, 0, 0, settings_payload((0xFF, 1)), "ping"),
    "http2/6.7/3": ("idle", PING, 0, 1, b"h2spec\x00\x01", "conn", PROTOCOL_ERROR),
    "http2/6.7/4": ("idle", PING, 0, 0, b"h2spec\x00", "conn", FRAME_SIZE_ERROR),
    "http2/6.8/1": ("idle", GOAWAY, 0, 1, struct.pack(">II", 0, NO_ERROR), "conn",
                    PROTOCOL_ERROR),
    "http2/6.9/1": ("idle", WINDOW_UPDATE, 0, 0, u32(0), "conn", PROTOCOL_ERROR),
    "http2/6.9/2": ("open", WINDOW_UPDATE, 0, 1, u32(0), "stream", PROTOCOL_ERROR),
    "http2/6.9/3": ("idle", WINDOW_UPDATE, 0, 0, u32(1)[:3], "conn", FRAME_SIZE_ERROR),
    "http2/6.9.2/3": ("idle", SETTINGS, 0, 0,
                      settings_payload((S_INITIAL_WINDOW_SIZE, 0x80000000)), "conn",
                      FLOW_CONTROL_ERROR),
    "http2/7/2": ("open", RST_STREAM, 0, 1, u32(0xFF), "ping"),
    "http2/8.2/1": ("idle", PUSH_PROMISE, END_HEADERS, 1, lambda c: u32(2) + c.block(), "conn",
                    PROTOCOL_ERROR),
}
for _id, (_setup, *_args) in ONE_FRAME.items():
    case(_id)(one_frame(_setup, *_args))

# --------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", list(CASES))
def test_h2spec(gw, case_id):
    fn, handshake = CASES[case_id]
    assert gw.sluice.running(), gw.sluice.stderr()
    c = Conn(gw)
    try:
        if handshake:
            c.handshake()
        fn(c)
    finally:
        c.close()
    assert gw.sluice.running(), gw.sluice.stderr()
