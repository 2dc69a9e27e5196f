"""SPEC 4 `body_limit`, issue 8 item 5: 413 before the upstream sees the
body when Content-Length says so, and mid-stream for chunked HTTP/1.1
bodies and HTTP/2 DATA, through the body hook: the upstream never receives
more than max_bytes and never a complete body."""
import json
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events

from conftest import (RawConn, ServerSide, assert_gateway_error, free_port, http_response,
                      upstream, wait_until)

LIMIT = 1000


def counting_backend(raw_backend):
    """A raw upstream that counts the decoded body bytes it receives and
    whether the body completed; answers 200 when it does."""
    seen = {"heads": 0, "bytes": 0, "complete": 0}
    lock = threading.Lock()

    def handler(conn, backend):
        side = ServerSide(conn)
        while True:
            try:
                head = side.read_head()
            except (ConnectionError, OSError):
                return
            backend.record(head)
            with lock:
                seen["heads"] += 1

            def sink(piece):
                with lock:
                    seen["bytes"] += len(piece)

            try:
                side.read_body(head, sink)
            except (ConnectionError, OSError):
                return
            with lock:
                seen["complete"] += 1
            conn.sendall(http_response(200, b"stored"))

    return raw_backend(handler), seen


def gateway(sluice, b, max_bytes=LIMIT, listen=None):
    cfg = {"upstreams": {"api": upstream(b.address)},
           "routes": [{"upstream": "api",
                       "filters": [{"type": "body_limit", "max_bytes": max_bytes}]}]}
    if listen:
        cfg["listen"] = listen
    return sluice(cfg)


def test_content_length_within_and_over(sluice, raw_backend):
    b, seen = counting_backend(raw_backend)
    s = gateway(sluice, b)
    r = s.request("POST", "/up", body=b"x" * LIMIT)
    assert r.status == 200 and r.body == b"stored"
    assert seen == {"heads": 1, "bytes": LIMIT, "complete": 1}
    with RawConn(s.port) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001)
        data = assert_gateway_error(c.read_response(), 413)
        assert "1000 bytes" in data["message"]
    time.sleep(0.2)
    assert seen["heads"] == 1  # the upstream never heard of it


def test_zero_means_no_body(sluice, raw_backend):
    b, seen = counting_backend(raw_backend)
    s = gateway(sluice, b, max_bytes=0)
    assert s.request("GET", "/").status == 200
    assert_gateway_error(s.request("POST", "/", body=b"x"), 413)


def test_expect_100_continue_gets_413_instead(sluice, raw_backend):
    b, seen = counting_backend(raw_backend)
    s = gateway(sluice, b)
    with RawConn(s.port) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.read_response(timeout=5)
        assert_gateway_error(r, 413)  # the first answer is the 413, not a 100
    with RawConn(s.port) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
               b"Expect: 100-continue\r\n\r\n")
        assert c.read_response(timeout=5).status == 100
        c.send(b"0123456789")
        r = c.read_response(timeout=5)
        assert r.status == 200 and r.body == b"stored"
    assert seen["heads"] == 1 and seen["bytes"] == 10


def test_chunked_cut_mid_stream(sluice, raw_backend):
    b, seen = counting_backend(raw_backend)
    s = gateway(sluice, b)
    with RawConn(s.port) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"258\r\n" + b"a" * 600 + b"\r\n")
        # The first 600 bytes are within the limit and may go upstream.
        wait_until(lambda: seen["bytes"] == 600, 5, what="the first chunk upstream")
        c.send(b"258\r\n" + b"b" * 600 + b"\r\n")
        r = c.read_response(timeout=5)
        assert_gateway_error(r, 413)
        try:
            c.send(b"258\r\n" + b"c" * 600 + b"\r\n0\r\n\r\n")
        except OSError:
            pass
    time.sleep(0.3)
    assert seen["bytes"] <= LIMIT, seen
    assert seen["complete"] == 0, seen  # the upstream never got a whole body


def test_chunked_in_one_piece(sluice, raw_backend):
    """Everything at once: the hook sees it before the upstream is even chosen."""
    b, seen = counting_backend(raw_backend)
    s = gateway(sluice, b)
    with RawConn(s.port) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"7d0\r\n" + b"z" * 2000 + b"\r\n0\r\n\r\n")
        assert_gateway_error(c.read_response(timeout=5), 413)
    time.sleep(0.3)
    assert seen["bytes"] <= LIMIT and seen["complete"] == 0, seen
    # A small chunked body passes whole.
    with RawConn(s.port) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"a\r\n0123456789\r\n0\r\n\r\n")
        assert c.read_response(timeout=5).status == 200
    assert seen["complete"] == 1


def h2_post(port, chunks, content_length=None, pause=0.2, timeout=10.0):
    """POSTs over h2c in DATA frames, pausing between them; returns (status, headers, body)."""
    import socket
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    headers = [(":method", "POST"), (":path", "/up"), (":scheme", "http"),
               (":authority", "x")]
    if content_length is not None:
        headers.append(("content-length", str(content_length)))
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers)
    sock.sendall(conn.data_to_send())
    status, resp_headers, body, ended = None, [], b"", False
    deadline = time.monotonic() + timeout

    def pump(wait):
        nonlocal status, resp_headers, body, ended
        sock.settimeout(wait)
        try:
            data = sock.recv(65536)
        except (TimeoutError, OSError):
            return
        if not data:
            ended = True
            return
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                resp_headers = [(k.decode(), v.decode()) for k, v in ev.headers]
                status = int(dict(resp_headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended = True
        out = conn.data_to_send()
        if out:
            sock.sendall(out)

    try:
        for i, chunk in enumerate(chunks):
            if ended:
                break
            try:
                conn.send_data(sid, chunk, end_stream=i == len(chunks) - 1)
                sock.sendall(conn.data_to_send())
            except Exception:  # the stream was reset or closed by the 413
                break
            pump(pause)
        while not ended and time.monotonic() < deadline:
            pump(0.2)
    finally:
        sock.close()
    return status, resp_headers, body


def test_http2_data_cut_mid_stream(sluice, raw_backend):
    b, seen = counting_backend(raw_backend)
    s = gateway(sluice, b, listen=[{"address": f"127.0.0.1:{free_port()}", "protocols": ["h2c"]}])
    status, headers, body = h2_post(s.port, [b"a" * 600, b"b" * 600, b"c" * 600])
    assert status == 413, (status, headers, body)
    data = json.loads(body)
    assert data["error"] == "payload_too_large"
    time.sleep(0.3)
    assert seen["bytes"] <= LIMIT and seen["complete"] == 0, seen
    # Within the limit, HTTP/2 DATA passes whole.
    status, _, body = h2_post(s.port, [b"a" * 500, b"b" * 500])
    assert status == 200 and body == b"stored"
    assert seen["complete"] == 1


def test_http2_content_length_over(sluice, raw_backend):
    b, seen = counting_backend(raw_backend)
    s = gateway(sluice, b, listen=[{"address": f"127.0.0.1:{free_port()}", "protocols": ["h2c"]}])
    status, _, body = h2_post(s.port, [b"x" * 2000], content_length=2000)
    assert status == 413, body
    time.sleep(0.2)
    assert seen["heads"] == 0


def test_config_errors(sluice_bin, tmp_path):
    cfg = {"listen": [{"address": f"127.0.0.1:{free_port()}"}],
           "upstreams": {"api": {"targets": ["127.0.0.1:9"]}},
           "routes": [{"upstream": "api", "filters": [
               {"type": "body_limit"},
               {"type": "body_limit", "max_bytes": "1MB"},
               {"type": "body_limit", "max_bytes": 10, "max": 1},
           ]}]}
    (tmp_path / "sluice.json").write_text(json.dumps(cfg))
    p = subprocess.run([sluice_bin, "-t", "-c", "sluice.json"], cwd=tmp_path,
                       capture_output=True, timeout=20)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert "sluice.json: routes[0].filters[0].max_bytes: is required" in err, err
    assert "routes[0].filters[1].max_bytes: must be" in err, err
    assert "routes[0].filters[2]" in err and "max" in err, err



