"""The upstream fault matrix (issue 12, 2.3; SPEC 2.3 "retries", 3.2): one
parametrised test over fault x method x upstream protocol x client protocol.

Every case runs a fresh gateway in front of an upstream with two targets
that fail the same way (`retries` 1), so the number of attempts the targets
saw tells whether the request was retried:

- refused, accept-then-close, reset before the head, invalid head: 502;
  connect failures are retried for any method, the others only for
  idempotent methods (GET twice, POST once);
- reset mid-body, slow body: the head already went out, so the client sees a
  visibly cut response (no last chunk on HTTP/1.1, RST_STREAM on HTTP/2),
  never retried;
- slow head: 504 after `timeout_ms`, never retried (the upstream may still
  be working on it);
- pool exhausted (`max_connections` 1, the one connection busy): 503 after
  `connect_timeout_ms`, the request never reaches a target.

The access log line of each request carries the error: the gateway's code
for its own answers, and an `error` for a cut transfer (never a clean line).
docs/internals/fault-matrix.md has the table."""
import json
import re
import socket
import struct
import threading
import time

import pytest

from backends.raw import ServerSide, http_response
from conftest import (ERROR_CODES, RawConn, Resp, assert_gateway_error, free_port, request,
                      upstream, wait_until)
from test_21_http2 import H2Client, h2c_listener

FAULTS = ["refused", "accept_close", "reset_before_head", "invalid_head", "reset_mid_body",
          "slow_head", "slow_body", "pool_exhausted"]

# fault -> (status, {method: attempts}); status "cut" is a response cut off after its head
EXPECTED = {
    "refused": (502, {"GET": 2, "POST": 2}),
    "accept_close": (502, {"GET": 2, "POST": 1}),
    "reset_before_head": (502, {"GET": 2, "POST": 1}),
    "invalid_head": (502, {"GET": 2, "POST": 1}),
    "reset_mid_body": ("cut", {"GET": 1, "POST": 1}),
    "slow_head": (504, {"GET": 1, "POST": 1}),
    "slow_body": ("cut", {"GET": 1, "POST": 1}),
    "pool_exhausted": (503, {"GET": 0, "POST": 0}),
}
CUT_ERRORS = {"reset_mid_body": "bad_gateway", "slow_body": "gateway_timeout"}

# the H2Backend path that makes each fault (accept_close is a raw listener for both)
H2_PATHS = {"reset_before_head": "/rst", "invalid_head": "/no-status",
            "reset_mid_body": "/rst-mid", "slow_head": "/silent", "slow_body": "/stall-mid",
            "pool_exhausted": "/echo"}

TIMEOUT_MS = 1000  # the upstream's timeout_ms: slow_head and slow_body wait 3 s


def rst_close(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def h1_fault(fault):
    """A RawBackend handler making `fault` on every connection."""
    def handler(conn, b):
        if fault == "accept_close":
            return
        side = ServerSide(conn)
        side.read_request(b)
        if fault == "reset_before_head":
            rst_close(conn)
        elif fault == "invalid_head":
            conn.sendall(b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok")
        elif fault == "reset_mid_body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n")
            time.sleep(0.2)
            rst_close(conn)
        elif fault == "slow_head":
            time.sleep(3)
            conn.sendall(http_response(200, b"late"))
        elif fault == "slow_body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n")
            time.sleep(3)
            conn.sendall(b"0\r\n\r\n")
        elif fault == "pool_exhausted":
            time.sleep(2.5)
            conn.sendall(http_response(200, b"held"))
    return handler


class Upstreams:
    """The failing targets of one case and how many attempts they saw."""

    def __init__(self, fault, proto, raw_backend, h2_backend):
        self.fault = fault
        self.proto = proto
        self.backends = []
        if fault == "refused":
            self.targets = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
            return
        n = 1 if fault == "pool_exhausted" else 2
        for _ in range(n):
            if proto == "h2" and fault != "accept_close":
                self.backends.append(h2_backend(max_streams=1 if n == 1 else None))
            else:
                self.backends.append(raw_backend(h1_fault(fault)))
        self.targets = [b.address for b in self.backends]

    def attempts(self, s):
        if self.fault == "refused":
            return metric_sum(s, "sluice_upstream_connect_errors_total")
        if self.fault == "accept_close":
            return sum(b.connections for b in self.backends)
        if self.proto == "h2":
            return sum(len(b.requests) for b in self.backends)
        return sum(b.count for b in self.backends)


def metric_sum(s, name):
    host, port = s.admin
    body = request(port, "GET", "/metrics", host=host).body.decode()
    return sum(int(float(v)) for v in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", body, re.M))


def send(front, s, method, path, timeout=15):
    """One request; returns (status, cut, resp-or-stream)."""
    body = b"hello" if method == "POST" else None
    if front == "h2":
        with H2Client(s.port) as c:
            sid = c.start(method, path, body=body)
            assert c.wait(lambda: c.done(sid), timeout), "the stream never finished"
            st = c.streams[sid]
        if st.reset is not None:
            assert st.status == "200" and not st.ended, (st.status, st.reset)
            return "cut", st
        assert st.ended
        return int(st.status), st.resp()
    with RawConn(s.port, timeout=timeout) as c:
        head = f"{method} {path} HTTP/1.1\r\nHost: t\r\n"
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        c.send(head.encode() + b"\r\n" + (body or b""))
        version, status, reason, headers = c.read_head()
        resp = Resp(status, reason, headers, b"", version)
        if status != 200:
            resp.body = c._read_exact(int(resp.header("content-length")),
                                      time.monotonic() + timeout)
            return status, resp
        rest = c.buf + c.read_all(timeout)  # the gateway closes a cut transfer
    assert (resp.header("transfer-encoding") or "").lower() == "chunked", resp
    assert not rest.endswith(b"0\r\n\r\n"), "a cut response must not end with the last chunk"
    assert rest.startswith(b"7\r\npartial\r\n"), rest
    return "cut", rest


def hold_the_pool(ups, s):
    """Keeps the only upstream connection busy (a 2.5 s answer) in a thread."""
    path = "/slow?ms=2500" if ups.proto == "h2" else "/hold"
    t = threading.Thread(target=lambda: request(s.port, "GET", path, timeout=15), daemon=True)
    t.start()
    wait_until(lambda: ups.attempts(s) >= 1 if ups.proto == "h1" else
               ups.backends[0].connections >= 1, what="the request holding the pool")
    time.sleep(0.2)
    return t


@pytest.mark.parametrize("front", ["h1", "h2"])
@pytest.mark.parametrize("proto", ["h1", "h2"])
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_matrix(sluice, raw_backend, h2_backend, tmp_path, fault, method, proto, front):
    ups = Upstreams(fault, proto, raw_backend, h2_backend)
    up = upstream(*ups.targets, retries=1, timeout_ms=TIMEOUT_MS, connect_timeout_ms=1000,
                  protocol="h2" if proto == "h2" else "http/1.1")
    if fault == "pool_exhausted":
        up.update(max_connections=1, connect_timeout_ms=500, timeout_ms=10000)
    log = tmp_path / "access.log"
    cfg = {"workers": 1, "upstreams": {"u": up}, "routes": [{"upstream": "u"}],
           "access_log": {"path": str(log)},
           "admin": {"address": f"127.0.0.1:{free_port()}"}}
    if front == "h2":
        cfg["listen"] = [h2c_listener()]
    s = sluice(cfg)
    path = H2_PATHS.get(fault, "/fault") if proto == "h2" else "/fault"

    holder = hold_the_pool(ups, s) if fault == "pool_exhausted" else None
    before = ups.attempts(s)
    status, got = send(front, s, method, path)

    want_status, want_attempts = EXPECTED[fault]
    assert status == want_status, (status, got)
    if status != "cut":
        assert_gateway_error(got, status)
    # Retries happen before the answer; give stray ones time to show anyway.
    time.sleep(0.3)
    assert ups.attempts(s) - before == want_attempts[method]

    def probe_line():
        if not log.exists():
            return None
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            if rec["path"] == path:
                return rec
        return None
    rec = wait_until(probe_line, timeout=10, what="the access log line")
    if status == "cut":
        assert rec.get("error") == CUT_ERRORS[fault], rec
    else:
        assert rec["status"] == status and rec.get("error") == ERROR_CODES[status], rec
    if holder:
        holder.join(10)
