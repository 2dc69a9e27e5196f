"""SPEC 3.1: bodies stream both ways, with backpressure, never held whole.

RSS is sampled from /proc/<pid>/status while 32 MiB move through a slow
side; growth must stay under 6 MiB. The bodies are larger than the kernel's
loopback socket buffers can hide (several MiB per socket), so a gateway that
buffers whole bodies fails. ASan's quarantine is disabled for these runs
(freed chunks would otherwise count as growth)."""
import hashlib
import http.client
import os
import time


from conftest import (RSS_ENV, RawConn, RssSampler, pattern_bytes, sha256, slow_upload_backend,
                      upstream)

MiB = 1 << 20
def test_upload_8mib_checksum(sluice, backend):
    b = backend("api")
    s = sluice({"upstreams": {"api": upstream(b.address)}, "routes": [{"upstream": "api"}]})
    body = os.urandom(8 * MiB)
    r = s.request("POST", "/up", body=body, timeout=30)
    assert r.status == 200
    assert r.json()["body_length"] == len(body)
    assert r.json()["body_sha256"] == sha256(body)


def test_download_8mib_checksum(sluice, backend):
    b = backend("api")
    s = sluice({"upstreams": {"api": upstream(b.address)}, "routes": [{"upstream": "api"}]})
    r = s.request("GET", "/down", headers={"X-Echo-Bytes": str(8 * MiB)}, timeout=30)
    assert r.status == 200
    assert len(r.body) == 8 * MiB
    assert sha256(r.body) == sha256(pattern_bytes(8 * MiB))


def test_slow_reader_download_memory(sluice, backend):
    size = 32 * MiB
    b = backend("api")
    s = sluice({"workers": 1, "upstreams": {"api": upstream(b.address)},
                "routes": [{"upstream": "api"}]}, env=RSS_ENV)
    # Warm up: pools, buffers, lazily allocated state.
    s.request("GET", "/warm", headers={"X-Echo-Bytes": str(1 * MiB)})
    time.sleep(0.2)
    before = s.rss_kib()
    with RssSampler(s) as sampler:
        with RawConn(s.port, timeout=60, rcvbuf=128 * 1024) as c:
            c.send(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Echo-Bytes: %d\r\n\r\n" % size)
            c.sock.settimeout(30)
            h = hashlib.sha256()
            got = 0
            head = b""
            while b"\r\n\r\n" not in head:
                head += c.sock.recv(4096)
            head, _, rest = head.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            h.update(rest)
            got = len(rest)
            while got < size:
                piece = c.sock.recv(min(256 * 1024, size - got))
                assert piece, f"closed after {got} bytes"
                h.update(piece)
                got += len(piece)
                time.sleep(0.02)
    growth = sampler.peak - before
    print(f"slow reader: RSS before {before} KiB, peak {sampler.peak} KiB, growth {growth} KiB")
    assert h.hexdigest() == sha256(pattern_bytes(size))
    assert growth < 6 * 1024, f"RSS grew by {growth} KiB while streaming {size} bytes"


def test_slow_upstream_upload_memory(sluice, raw_backend):
    size = 32 * MiB
    result = {}

    rb = raw_backend(slow_upload_backend(result, seconds_per_16k=0.0015))
    s = sluice({"workers": 1, "upstreams": {"raw": upstream(rb.address)},
                "routes": [{"upstream": "raw"}]}, env=RSS_ENV)
    assert s.request("POST", "/warm", body=b"w" * MiB).status == 200
    time.sleep(0.2)
    before = s.rss_kib()
    body = pattern_bytes(size)
    with RssSampler(s) as sampler:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        conn.putrequest("POST", "/slow-upload")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        view = memoryview(body)
        for off in range(0, size, 256 * 1024):
            conn.send(view[off:off + 256 * 1024])
        r = conn.getresponse()
        data = r.read()
        conn.close()
    growth = sampler.peak - before
    print(f"slow upstream: RSS before {before} KiB, peak {sampler.peak} KiB, growth {growth} KiB")
    assert r.status == 200
    assert data.decode() == sha256(body)
    assert result["n"] == size
    assert growth < 6 * 1024, f"RSS grew by {growth} KiB while streaming {size} bytes"
