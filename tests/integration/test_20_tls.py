"""SPEC 2.2 and 2.3 "tls": TLS listeners (certificates by SNI, ALPN,
min_version, session resumption, mTLS with ${client_subject}), certificate
errors at load, and TLS to upstreams (verification, CA, server_name).

Certificates are made at test time with the openssl CLI: one test CA for
servers, one for clients."""
import http.client
import json
import signal
import socket
import ssl
import time

import pytest

from backends.certs import make_ca, make_cert, openssl
from backends.http import pattern_bytes
from backends.tls import TlsBackend
from conftest import (RawConn, assert_gateway_error, curl, free_port, rec_header, run_sluice,
                      wait_until)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "ca", "Sluice Test CA")
    make_ca(d, "other-ca", "Some Other CA")
    make_ca(d, "client-ca", "Sluice Client CA")
    make_cert(d, "ca", "api", "/CN=api.test", "DNS:api.test")
    make_cert(d, "ca", "admin", "/CN=admin.test", "DNS:*.admin.test")
    make_cert(d, "ca", "backend", "/CN=backend.test", "DNS:backend.test,IP:127.0.0.1")
    make_cert(d, "client-ca", "client", "/O=Sluice Test/CN=client one", usage="clientAuth")
    return d


def tls_listener(certs, port=None, **tls):
    cfg = {"certificates": [{"cert": str(certs / "api.pem"), "key": str(certs / "api.key")},
                            {"cert": str(certs / "admin.pem"), "key": str(certs / "admin.key")}]}
    cfg.update(tls)
    return {"address": f"127.0.0.1:{port or free_port()}", "tls": cfg}


def https(s, certs, name="api.test", path="/", *extra):
    url = f"https://{name}:{s.port}{path}"
    return curl("--http1.1", "--cacert", str(certs / "ca.pem"), "--resolve",
                f"{name}:{s.port}:127.0.0.1", "-D", "-", *extra, url)


def served_subject(port, servername, *extra):
    args = ["s_client", "-connect", f"127.0.0.1:{port}", "-servername", servername] + list(extra)
    p = openssl(*args, input=b"")
    out = p.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("subject="):
            return line
    return out + p.stderr.decode(errors="replace")


def respond_route(body="hi"):
    return [{"respond": {"status": 200, "body": body}}]


# --------------------------------------------------------------------------
# listeners


def test_https_through_to_backend(sluice, backend, certs):
    b = backend("b")
    s = sluice({"listen": [tls_listener(certs)], "upstreams": {"b": {"targets": [b.address]}},
                "routes": [{"upstream": "b"}]})
    p = https(s, certs, "api.test", "/x?y=1")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert out.startswith("HTTP/1.1 200"), out
    assert json.loads(out.split("\r\n\r\n", 1)[1])["path"] == "/x"
    assert rec_header(b.last(), "x-forwarded-proto") == "https"


def test_alpn_defaults_to_http11(sluice, certs):
    s = sluice({"listen": [tls_listener(certs)], "routes": respond_route()})
    p = curl("-v", "--cacert", str(certs / "ca.pem"), "--resolve",
             f"api.test:{s.port}:127.0.0.1", f"https://api.test:{s.port}/")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"hi"
    assert "ALPN: server accepted http/1.1" in p.stderr.decode(), p.stderr


def test_keepalive_and_large_body_over_tls(sluice, backend, certs):
    b = backend("b")
    s = sluice({"listen": [tls_listener(certs)], "upstreams": {"b": {"targets": [b.address]}},
                "routes": [{"upstream": "b"}]})
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", s.port, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", s.port)),
                                server_hostname="api.test")
    body = bytes(range(256)) * 8192  # 2 MiB up
    conn.request("POST", "/up", body=body, headers={"Host": "api.test"})
    r = conn.getresponse()
    data = json.loads(r.read())
    assert r.status == 200 and data["body_length"] == len(body)
    conn.request("GET", "/down", headers={"Host": "api.test", "X-Echo-Bytes": str(3 << 20)})
    r = conn.getresponse()
    got = r.read()
    assert r.status == 200 and len(got) == 3 << 20
    conn.close()


class TlsRawConn(RawConn):
    """RawConn over TLS through memory BIOs, so the test decides how the TLS
    records it writes fall into TCP sends (several records in one send)."""

    def __init__(self, port, certs, name="api.test", timeout=10.0, rcvbuf=None):
        super().__init__(port, timeout=timeout, rcvbuf=rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        self.inc, self.outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.outg, server_hostname=name)
        self.sock.settimeout(timeout)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outg.read())
                self._recv_raw()
        self.sock.sendall(self.outg.read())

    def _recv_raw(self):
        data = self.sock.recv(262144)
        if data:
            self.inc.write(data)
        else:
            self.inc.write_eof()
        return data

    def send_records(self, *pieces):
        """Each piece is its own TLS record; all of them go in one send()."""
        for p in pieces:
            self.tls.write(p)
        self.sock.sendall(self.outg.read())

    def send(self, data: bytes):
        self.send_records(data)

    def _recv(self) -> bytes:
        while True:
            try:
                return self.tls.read(262144)
            except ssl.SSLWantReadError:
                if not self._recv_raw():
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""


def test_several_records_in_one_segment_are_all_read(sluice, backend, certs):
    # With read-ahead one read() takes in every record of the segment: each
    # must be decrypted and answered, although the kernel has nothing more.
    b = backend("b")
    s = sluice({"listen": [tls_listener(certs)], "upstreams": {"b": {"targets": [b.address]}},
                "routes": [{"upstream": "b"}]})
    with TlsRawConn(s.port, certs) as c:
        one = b"GET /one HTTP/1.1\r\nHost: api.test\r\n\r\n"
        two = b"GET /two HTTP/1.1\r\nHost: api.test\r\n\r\n"
        # A request split over three records, then a whole one, all in one send.
        c.send_records(one[:5], one[5:20], one[20:], two)
        paths = [json.loads(c.read_response().body)["path"] for _ in range(2)]
        assert paths == ["/one", "/two"]
        # Three pipelined requests in one record, and the connection goes on after.
        c.send_records(b"".join(b"GET /p%d HTTP/1.1\r\nHost: api.test\r\n\r\n" % i
                                for i in range(3)))
        paths = [json.loads(c.read_response().body)["path"] for _ in range(3)]
        assert paths == ["/p0", "/p1", "/p2"]
        c.send_records(one)
        assert json.loads(c.read_response().body)["path"] == "/one"


def test_body_in_many_small_records(sluice, backend, certs):
    # A 256 KiB upload as 4 KiB records sent 32 at a time: more than one
    # read's worth of records waits in OpenSSL at once.
    b = backend("b")
    s = sluice({"listen": [tls_listener(certs)], "upstreams": {"b": {"targets": [b.address]}},
                "routes": [{"upstream": "b"}]})
    body = pattern_bytes(256 * 1024)
    with TlsRawConn(s.port, certs) as c:
        c.send_records(b"POST /up HTTP/1.1\r\nHost: api.test\r\nContent-Length: %d\r\n\r\n"
                       % len(body))
        for off in range(0, len(body), 32 * 4096):
            chunk = body[off:off + 32 * 4096]
            c.send_records(*(chunk[i:i + 4096] for i in range(0, len(chunk), 4096)))
        r = c.read_response()
        assert r.status == 200
        assert json.loads(r.body)["body_length"] == len(body)


def test_large_download_to_a_slow_reader(sluice, backend, certs):
    # A small receive buffer read in small pieces: the proxy's TLS writes
    # block again and again and must resume from the write event each time.
    b = backend("b")
    s = sluice({"listen": [tls_listener(certs)], "upstreams": {"b": {"targets": [b.address]}},
                "routes": [{"upstream": "b"}]})
    size = 3 << 20
    with TlsRawConn(s.port, certs, timeout=60.0, rcvbuf=4096) as c:
        for _ in range(2):
            c.send_records(b"GET /big HTTP/1.1\r\nHost: api.test\r\nX-Echo-Bytes: %d\r\n\r\n"
                           % size)
            r = c.read_response(timeout=60.0)
            assert r.status == 200 and r.body == pattern_bytes(size)


def test_sni_picks_the_certificate(sluice, certs):
    s = sluice({"listen": [tls_listener(certs)], "routes": respond_route()})
    assert "CN = api.test" in served_subject(s.port, "api.test")
    assert "CN = admin.test" in served_subject(s.port, "x.admin.test")
    assert "CN = admin.test" in served_subject(s.port, "X.Admin.Test")
    # Unknown names and a wildcard two labels deep get the default (first) certificate.
    assert "CN = api.test" in served_subject(s.port, "unknown.test")
    assert "CN = api.test" in served_subject(s.port, "a.b.admin.test")
    assert "CN = api.test" in served_subject(s.port, "admin.test")
    p = https(s, certs, "x.admin.test")
    assert p.returncode == 0 and p.stdout.endswith(b"hi"), p.stderr


def test_min_version_tls13_refuses_tls12(sluice, certs):
    s = sluice({"listen": [tls_listener(certs, min_version="TLSv1.3")],
                "routes": respond_route()})
    p = https(s, certs, "api.test", "/", "--tlsv1.2", "--tls-max", "1.2")
    assert p.returncode != 0, p.stdout
    p = https(s, certs, "api.test", "/", "--tlsv1.3")
    assert p.returncode == 0, p.stderr


def test_default_min_version_accepts_tls12(sluice, certs):
    s = sluice({"listen": [tls_listener(certs)], "routes": respond_route()})
    p = https(s, certs, "api.test", "/", "--tlsv1.2", "--tls-max", "1.2")
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_session_resumption(sluice, certs, tmp_path, version):
    # Two workers: a ticket from one is honoured by the other (shared SSL_CTX).
    s = sluice({"listen": [tls_listener(certs)], "routes": respond_route(), "workers": 2})
    sess = tmp_path / "sess.pem"
    req = b"GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
    base = ["s_client", "-connect", f"127.0.0.1:{s.port}", "-servername", "api.test",
            "-CAfile", str(certs / "ca.pem"), "-ign_eof", version]
    p = openssl(*base, "-sess_out", str(sess), input=req)
    out = p.stdout.decode(errors="replace")
    assert "New, " in out and "\r\n\r\nhi" in out, out
    for _ in range(3):
        p = openssl(*base, "-sess_in", str(sess), input=req)
        out = p.stdout.decode(errors="replace")
        assert "Reused, " in out, out
        assert "\r\n\r\nhi" in out, out


def test_mutual_tls(sluice, backend, certs):
    b = backend("b")
    s = sluice({
        "listen": [tls_listener(certs, client_ca=str(certs / "client-ca.pem"))],
        "upstreams": {"b": {"targets": [b.address]}},
        "routes": [{"upstream": "b", "filters": [
            {"type": "headers", "request": {"set": {"x-client": "${client_subject}"}}}]}]})
    p = https(s, certs, "api.test")
    assert p.returncode != 0 or b"HTTP/1.1 200" not in p.stdout, p.stdout
    assert b.count == 0
    p = https(s, certs, "api.test", "/m", "--cert", str(certs / "client.pem"), "--key",
              str(certs / "client.key"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"HTTP/1.1 200"), p.stdout
    assert rec_header(b.last(), "x-client") == "CN=client one,O=Sluice Test"
    line = wait_until(lambda: [l for l in s.stdout().splitlines() if '"/m"' in l],
                      what="access log line")[0]
    assert json.loads(line)["client_subject"] == "CN=client one,O=Sluice Test"


def test_client_certificate_from_another_ca_is_refused(sluice, certs):
    s = sluice({"listen": [tls_listener(certs, client_ca=str(certs / "client-ca.pem"))],
                "routes": respond_route()})
    # api.pem is signed by the server CA, not the client CA.
    p = https(s, certs, "api.test", "/", "--cert", str(certs / "api.pem"), "--key",
              str(certs / "api.key"))
    assert p.returncode != 0 or b"HTTP/1.1 200" not in p.stdout, p.stdout


def test_plain_http_on_tls_port_is_dropped(sluice, certs):
    s = sluice({"listen": [tls_listener(certs)], "routes": respond_route()})
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1.1" not in data
    p = https(s, certs)
    assert p.returncode == 0, p.stderr


def test_silent_client_is_closed_after_header_timeout(sluice, certs):
    s = sluice({"listen": [tls_listener(certs)], "routes": respond_route(),
                "limits": {"header_timeout_ms": 300}})
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        start = time.monotonic()
        try:
            assert c.recv(100) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - start < 3


def test_shutdown_with_a_handshake_pending(sluice, certs):
    s = sluice({"listen": [tls_listener(certs)], "routes": respond_route(),
                "limits": {"header_timeout_ms": 20000, "drain_timeout_ms": 15000}})
    with socket.create_connection(("127.0.0.1", s.port), timeout=5):
        time.sleep(0.2)
        start = time.monotonic()
        assert s.stop(signal.SIGTERM, timeout=10) == 0
        assert time.monotonic() - start < 5


def test_reload_swaps_certificates(sluice, certs):
    s = sluice({"listen": [tls_listener(certs)], "routes": respond_route()})
    assert "CN = api.test" in served_subject(s.port, "unknown.test")
    cfg = dict(s.config)
    listener = dict(cfg["listen"][0])
    listener["tls"] = {"certificates": list(reversed(listener["tls"]["certificates"]))}
    cfg["listen"] = [listener]
    s.write_config(cfg)
    s.reload()
    wait_until(lambda: "CN = admin.test" in served_subject(s.port, "unknown.test"),
               what="the new default certificate")
    assert "CN = api.test" in served_subject(s.port, "api.test")


# --------------------------------------------------------------------------
# configuration errors


def check_config(tmp_path, listener_tls, upstream_tls=None):
    cfg = {"listen": [{"address": f"127.0.0.1:{free_port()}", "tls": listener_tls}],
           "routes": [{"respond": {"status": 200}}]}
    if upstream_tls is not None:
        cfg["upstreams"] = {"u": {"targets": ["127.0.0.1:1"], "tls": upstream_tls}}
        cfg["routes"] = [{"upstream": "u"}]
    (tmp_path / "sluice.json").write_text(json.dumps(cfg))
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    return p.returncode, p.stderr.decode().splitlines()


@pytest.fixture
def confdir(tmp_path, certs):
    d = tmp_path / "conf"
    (d / "certs").mkdir(parents=True)
    for name in ("api.pem", "api.key", "admin.pem", "admin.key", "ca.pem"):
        (d / "certs" / name).write_bytes((certs / name).read_bytes())
    (d / "certs" / "bad.key").write_text("this is not a key\n")
    return d


def test_relative_paths_resolve_against_the_config(confdir):
    rc, err = check_config(confdir, {"certificates": [
        {"cert": "certs/api.pem", "key": "certs/api.key"}], "protocols": ["h2", "http/1.1"]},
        {"ca": "certs/ca.pem", "server_name": "backend.test"})
    assert rc == 0, err


def test_missing_certificate_file(confdir):
    rc, err = check_config(confdir, {"certificates": [
        {"cert": "certs/api.pem", "key": "certs/api.key"},
        {"cert": "certs/missing.pem", "key": "certs/admin.key"}]})
    assert rc == 1
    assert ("sluice.json: listen[0].tls.certificates[1].cert: cannot load certs/missing.pem: "
            "No such file or directory") in err, err


def test_bad_key_file(confdir):
    rc, err = check_config(confdir, {"certificates": [
        {"cert": "certs/api.pem", "key": "certs/bad.key"}]})
    assert rc == 1
    assert any(l.startswith("sluice.json: listen[0].tls.certificates[0].key: cannot load "
                            "certs/bad.key: ") for l in err), err


def test_key_does_not_match_certificate(confdir):
    rc, err = check_config(confdir, {"certificates": [
        {"cert": "certs/api.pem", "key": "certs/admin.key"}]})
    assert rc == 1
    assert any(l.startswith("sluice.json: listen[0].tls.certificates[0].key: certs/admin.key "
                            "does not match the certificate in certs/api.pem") for l in err), err


def test_tls_option_errors(confdir):
    rc, err = check_config(confdir, {"certificates": [], "protocols": ["h2c"],
                                     "min_version": "TLSv1.1", "client_ca": "certs/nope.pem"},
                           {"verify": "yes", "ca": "certs/nope.pem"})
    assert rc == 1
    joined = "\n".join(err)
    assert "listen[0].tls.certificates: must be a non-empty array" in joined, err
    assert "listen[0].tls.protocols[0]: \"h2c\" is for cleartext listeners" in joined, err
    assert "listen[0].tls.min_version: unknown version \"TLSv1.1\"" in joined, err
    assert "upstreams.u.tls.verify: must be true or false" in joined, err
    assert "upstreams.u.tls.ca: cannot load certs/nope.pem: No such file or directory" in joined


# --------------------------------------------------------------------------
# upstream TLS


@pytest.fixture
def tls_backend(certs):
    started = []

    def start(name="tls"):
        b = TlsBackend(certs, name).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def upstream_cfg(b, **tls):
    return {"upstreams": {"b": {"targets": [b.address], "retries": 0, "tls": tls}},
            "routes": [{"upstream": "b"}]}


def test_upstream_tls_with_ca(sluice, tls_backend, certs):
    b = tls_backend()
    s = sluice(upstream_cfg(b, ca=str(certs / "ca.pem"), server_name="backend.test"))
    for i in range(3):
        r = s.request("GET", f"/u{i}")
        assert r.status == 200, r
        assert r.json()["path"] == f"/u{i}"
    # Keep-alive: the pooled TLS connection is reused.
    assert b.connections <= 2


@pytest.mark.parametrize("tls13", [True, False])
def test_upstream_tls_sessions_are_resumed(sluice, tls_backend, certs, tls13):
    b = tls_backend()
    if not tls13:
        b.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    # keepalive 0: every request opens a new connection, which resumes the last session.
    s = sluice({"upstreams": {"b": {"targets": [b.address], "keepalive": 0,
                                    "tls": {"ca": str(certs / "ca.pem")}}},
                "routes": [{"upstream": "b"}], "workers": 1})
    for i in range(4):
        assert s.request("GET", f"/r{i}").status == 200
    assert b.connections == 4
    assert b.reused[0] is False and all(b.reused[1:]), b.reused


def test_upstream_tls_health_checks_speak_tls(sluice, tls_backend, certs):
    b = tls_backend()
    s = sluice({"upstreams": {"b": {
        "targets": [b.address], "tls": {"ca": str(certs / "ca.pem")},
        "health_check": {"path": "/health", "interval_ms": 100, "unhealthy_after": 1}}},
        "routes": [{"upstream": "b"}]})
    wait_until(lambda: b.count >= 3, what="health probes")
    assert any(r["path"] == "/health" for r in b.requests)
    r = s.request("GET", "/after")
    assert r.status == 200, r


def test_upstream_tls_health_check_fails_on_bad_certificate(sluice, tls_backend, certs):
    b = tls_backend()
    s = sluice({"upstreams": {"b": {
        "targets": [b.address], "tls": {"ca": str(certs / "other-ca.pem")},
        "health_check": {"path": "/health", "interval_ms": 100, "unhealthy_after": 1}}},
        "routes": [{"upstream": "b"}]})
    time.sleep(0.5)
    assert_gateway_error(s.request("GET", "/"), 503)
    assert b.count == 0


def test_upstream_tls_ip_target_verifies_the_ip(sluice, tls_backend, certs):
    b = tls_backend()
    s = sluice(upstream_cfg(b, ca=str(certs / "ca.pem")))
    r = s.request("GET", "/ip")
    assert r.status == 200, r


def test_upstream_tls_wrong_ca_is_502(sluice, tls_backend, certs):
    b = tls_backend()
    s = sluice(upstream_cfg(b, ca=str(certs / "other-ca.pem"), server_name="backend.test"))
    assert_gateway_error(s.request("GET", "/"), 502)
    assert b.count == 0


def test_upstream_tls_default_store_refuses_test_ca(sluice, tls_backend):
    b = tls_backend()
    s = sluice(upstream_cfg(b, server_name="backend.test"))
    assert_gateway_error(s.request("GET", "/"), 502)


def test_upstream_tls_verify_false(sluice, tls_backend):
    b = tls_backend()
    s = sluice(upstream_cfg(b, verify=False, server_name="wrong.test"))
    r = s.request("GET", "/nv")
    assert r.status == 200, r


def test_upstream_tls_server_name_mismatch_is_502(sluice, tls_backend, certs):
    b = tls_backend()
    s = sluice(upstream_cfg(b, ca=str(certs / "ca.pem"), server_name="other.test"))
    assert_gateway_error(s.request("GET", "/"), 502)
    assert b.count == 0


def test_upstream_tls_to_plain_backend_is_502(sluice, backend, certs):
    b = backend("plain")
    s = sluice({"upstreams": {"b": {"targets": [b.address], "retries": 0,
                                    "tls": {"ca": str(certs / "ca.pem")}}},
                "routes": [{"upstream": "b"}]})
    assert_gateway_error(s.request("GET", "/"), 502)


def test_upstream_tls_large_bodies(sluice, tls_backend, certs):
    b = tls_backend()
    s = sluice(upstream_cfg(b, ca=str(certs / "ca.pem"), server_name="backend.test"))
    body = bytes(range(256)) * 4096
    r = s.request("POST", "/big", body=body)
    assert r.status == 200 and r.json()["body_length"] == len(body)
    r = s.request("GET", "/big", headers={"X-Echo-Bytes": str(2 << 20)})
    assert r.status == 200 and len(r.body) == 2 << 20
