"""SPEC 3.2 and 7 "framing": ambiguous or malformed requests get 400 (or 501
for transfer codings other than chunked), the connection is closed, and
nothing reaches the upstream, not even the request head.

Note for the gateway: for a bad chunk the head is valid, so the gateway must
validate the body bytes it already holds before it sends the head upstream;
this suite requires that the upstream never sees such a request."""
import time

import pytest

from conftest import RawConn, assert_gateway_error, upstream

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

CASES = {
    "cl_and_te": (400, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED),
    "te_and_cl": (400, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                       b"Content-Length: 4\r\n\r\n5c\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"),
    "duplicate_cl_equal": (400, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                b"Content-Length: 5\r\n\r\nhello" + SMUGGLED),
    "duplicate_cl_differing": (400, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                    b"Content-Length: 6\r\n\r\nhello!" + SMUGGLED),
    "cl_not_a_number": (400, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5a\r\n\r\nhello"),
    "cl_plus_sign": (400, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
    "bad_chunk_size_non_hex": (400, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                                    b"\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    "bad_chunk_size_17_digits": (400, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                                      b"\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n"),
    "chunk_size_overflow": (400, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                                 b"\r\n\r\nffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
    "bare_lf_request_line": (400, b"GET / HTTP/1.1\nHost: x\r\n\r\n"),
    "bare_lf_in_headers": (400, b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n"),
    "obs_fold": (400, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n  c\r\n\r\n"),
    "space_before_colon": (400, b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n"),
    "space_before_colon_te": (400, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked"
                                   b"\r\nContent-Length: 3\r\n\r\nabc"),
    "invalid_version": (400, b"GET / HTTQ/1.1\r\nHost: x\r\n\r\n"),
    "invalid_version_digits": (400, b"GET / HTTP/1.x\r\nHost: x\r\n\r\n"),
    # RFC 9112 6.1: HTTP/1.0 has no transfer codings; Transfer-Encoding there is faulty framing.
    "http10_te_chunked": (400, b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                               b"\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
    "http10_te_chunked_no_host": (400, b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                                       b"0\r\n\r\n"),
    "http10_te_gzip": (400, b"POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
    # SPEC 7: any Transfer-Encoding other than the single coding "chunked" is 501.
    "te_gzip_chunked": (501, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked"
                             b"\r\n\r\n0\r\n\r\n"),
    "te_chunked_chunked": (501, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, "
                                b"chunked\r\n\r\n0\r\n\r\n" + SMUGGLED),
    "te_identity": (501, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"),
    "te_two_fields": (501, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
}


@pytest.fixture
def proxied(sluice, backend):
    b = backend("api")
    s = sluice({"upstreams": {"api": upstream(b.address)}, "routes": [{"upstream": "api"}]})
    return s, b


@pytest.mark.parametrize("name", sorted(CASES))
def test_rejected_closed_and_never_forwarded(proxied, name):
    s, b = proxied
    status, data = CASES[name]
    with RawConn(s.port) as c:
        c.send(data)
        r = c.read_response()
        assert_gateway_error(r, status)
        assert c.closed_within(3), "the connection must be closed after a 400/501"
        assert c.buf == b"", "nothing after the error response"
    time.sleep(0.2)
    assert b.requests == [], b.requests


def test_smuggled_request_after_valid_one_not_forwarded(proxied):
    """A valid request, then a CL+TE one hiding a third: only the first
    reaches the upstream."""
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + CASES["cl_and_te"][1])
        assert c.read_response().status == 200
        assert_gateway_error(c.read_response(), 400)
        assert c.closed_within(3)
    time.sleep(0.2)
    assert [r["path"] for r in b.requests] == ["/first"]


@pytest.mark.parametrize("size_line", [b"0000000000000005", b"5", b"5;ext=1"])
def test_valid_chunk_sizes_accepted(proxied, size_line):
    """Controls: leading zeros up to 16 hex digits, and chunk extensions, are valid."""
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
               + size_line + b"\r\nhello\r\n0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["body_length"] == 5
