"""Issue 12 section 1: defects found by hostile clients (SPEC 1, SPEC 7 "listeners",
"slow readers")."""
import re
import socket
import threading
import time

from conftest import RSS_ENV, RssSampler


def test_pipelined_local_responses_keep_memory_bounded(sluice):
    """A client pipelining requests the gateway answers itself (404, `respond`)
    without reading: the next request waits while the unsent output is above
    the high-water mark, so memory stays flat; every response comes, in order."""
    s = sluice({"routes": [{"match": {"path": "/r"},
                            "respond": {"status": 200, "body": "x" * 2000}}]}, env=RSS_ENV)
    assert s.request("GET", "/r").status == 200
    base = s.rss_kib()
    one = b"GET /r HTTP/1.1\r\nHost: a\r\n\r\nGET /nomatch HTTP/1.1\r\nHost: a\r\n\r\n"
    pairs = 1_500_000 // len(one)  # about 100 MB of responses for 1.5 MB of requests
    data = one * (pairs - 1) + (b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n"
                                b"GET /nomatch HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", s.port))
    sent = threading.Event()

    def send():
        try:
            sock.sendall(data)
        except OSError:
            pass
        sent.set()

    sender = threading.Thread(target=send, daemon=True)
    with RssSampler(s) as sampler:
        sender.start()
        # Unfixed, the gateway reads everything and answers into memory: the
        # send completes. Fixed, it stops reading: the send blocks.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not sent.is_set():
            time.sleep(0.1)
        time.sleep(1)
    growth_mib = (sampler.peak - base) / 1024
    assert growth_mib < 16, f"RSS grew by {growth_mib:.0f} MiB"

    received = bytearray()
    sock.settimeout(30)
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    sock.close()
    sender.join(5)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert len(statuses) == 2 * pairs
    assert statuses == [b"200", b"404"] * pairs
    assert s.request("GET", "/r").status == 200
