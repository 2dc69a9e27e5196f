"""Shared harness for sluice's black-box tests.

Every test starts the real binary (SLUICE_BIN, else build-ci/sluice, else
build/sluice) with a generated configuration on free loopback ports, in front
of real backends running in threads of this process:

- HttpBackend: an aiohttp server with its own event loop that records every
  request (method, raw path, query, headers, body length and sha256) and the
  distinct client connections it saw; its default handler echoes the request
  as JSON and obeys a few X-Echo-* control headers.
- RawBackend: a plain socket server whose per-connection handler decides the
  exact bytes (misbehaving, slow, silent upstreams).
- H2Backend: an HTTP/2 upstream (h2c or TLS) that answers by path.

The backends live in backends/ (one module per kind); this file starts and
stops them through fixtures and re-exports their names for the tests.

Clients: RawConn (exact bytes, pipelining, 100-continue), request() over
http.client, and curl through subprocess.

Everything is bounded in time; only processes started here are signalled,
by PID. A test fails if sluice's stderr carries a sanitizer report.
"""
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from backends.h2 import H2Backend
from backends.http import HttpBackend, echo, pattern_bytes, read_body, rec_header  # noqa: F401
from backends.raw import RawBackend, ServerSide, http_response, slow_upload_backend  # noqa: F401

REPO = Path(__file__).resolve().parents[2]

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    408: "request_timeout",
    413: "payload_too_large",
    429: "too_many_requests",
    431: "request_header_fields_too_large",
    501: "not_implemented",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


# --------------------------------------------------------------------------
# binary and ports


def sluice_binary() -> str:
    env = os.environ.get("SLUICE_BIN")
    if env:
        return env
    for candidate in ("build-ci/sluice", "build/sluice"):
        path = REPO / candidate
        if path.exists():
            return str(path)
    pytest.fail("sluice binary not found: set SLUICE_BIN or build into build-ci/ or build/")
    return ""


@pytest.fixture(scope="session")
def sluice_bin():
    path = sluice_binary()
    assert os.access(path, os.X_OK), f"{path} is not executable"
    return path


_handed_out = set()
_port_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on now, never handed out twice."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        with _port_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port")


def parse_address(address: str):
    """'127.0.0.1:80' or '[::1]:80' -> (host, port)."""
    if address.startswith("["):
        host, _, port = address[1:].partition("]:")
    else:
        host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    if host == "::":
        host = "::1"
    return host, int(port)


def can_connect(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# the gateway process


def merge_defaults(config: dict) -> dict:
    """Fills in what tests usually leave out: a listener on a free port,
    2 workers, a short drain window."""
    cfg = json.loads(json.dumps(config))
    if "listen" not in cfg:
        cfg["listen"] = [{"address": f"127.0.0.1:{free_port()}"}]
    cfg.setdefault("workers", 2)
    limits = {"drain_timeout_ms": 3000}
    limits.update(cfg.get("limits", {}))
    cfg["limits"] = limits
    return cfg


class Sluice:
    """One sluice process on a config written into its own folder."""

    def __init__(self, binary: str, workdir: Path, config, env=None, merge=True, preexec=None):
        self.binary = binary
        self.preexec = preexec  # run in the child before exec (e.g. setrlimit)
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "sluice.json"
        self.env = dict(os.environ)
        if env:
            self.env.update(env)
        self.config = merge_defaults(config) if merge else config
        self.proc = None
        self.returncode = None
        self.write_config(self.config)

    # config -------------------------------------------------------------
    def write_config(self, config=None, text=None):
        if text is None:
            self.config = config
            text = json.dumps(config, indent=2)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    @property
    def listen_ports(self):
        return [parse_address(listener["address"]) for listener in self.config.get("listen", [])]

    @property
    def port(self) -> int:
        return self.listen_ports[0][1]

    @property
    def admin(self):
        admin = self.config.get("admin")
        return parse_address(admin["address"]) if admin else None

    # process ------------------------------------------------------------
    def start(self, wait: bool = True, timeout: float = 10.0):
        self.stdout_path = self.dir / "stdout.log"
        self.stderr_path = self.dir / "stderr.log"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
            cwd=self.dir, env=self.env, preexec_fn=self.preexec)
        if wait:
            self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 10.0):
        targets = list(self.listen_ports)
        if self.admin:
            targets.append(self.admin)
        deadline = time.monotonic() + timeout
        pending = list(targets)
        while pending:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"sluice exited with {self.proc.returncode} during start-up:\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"sluice did not listen on {pending} within {timeout}s:\n"
                                     f"{self.stderr()}")
            host, port = pending[0]
            if can_connect(host, port, 0.2):
                pending.pop(0)
            else:
                time.sleep(0.05)

    def send_signal(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)

    def reload(self):
        self.send_signal(signal.SIGHUP)

    def wait_exit(self, timeout: float = 15.0):
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout: float = 15.0):
        """Sends `sig`, waits, returns the exit code (None if still running)."""
        self.send_signal(sig)
        return self.wait_exit(timeout)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def stdout(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def close(self):
        """Teardown: stop by PID (TERM, then KILL), return sanitizer problems."""
        if self.proc is None:
            return []
        if self.running():
            self.send_signal(signal.SIGTERM)
            if self.wait_exit(10) is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for f in (self._out, self._err):
            f.close()
        err = self.stderr()
        problems = [m for m in SANITIZER_MARKERS if m in err]
        if problems:
            return [f"sanitizer report in sluice stderr ({', '.join(problems)}):\n{err[-8000:]}"]
        return []

    # convenience --------------------------------------------------------
    def request(self, method="GET", path="/", **kw):
        return request(self.port, method, path, **kw)

    def raw(self, timeout: float = 5.0):
        return RawConn(self.port, timeout=timeout)


@pytest.fixture
def sluice(sluice_bin, tmp_path):
    """Factory: sluice(config, env=None, wait=True) -> started Sluice."""
    started = []

    def start(config, env=None, wait=True, merge=True, preexec=None):
        s = Sluice(sluice_bin, tmp_path / f"sluice{len(started)}", config, env=env, merge=merge,
                   preexec=preexec)
        started.append(s)
        s.start(wait=wait)
        return s

    yield start
    problems = []
    for s in started:
        problems += s.close()
    if problems:
        pytest.fail("\n".join(problems))


def run_sluice(args, cwd, env=None, timeout=20.0):
    """Runs the binary to completion (CLI tests); returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.pop("SLUICE_CONFIG", None)
    if env:
        full_env.update(env)
    proc = subprocess.run([sluice_binary()] + list(args), cwd=cwd, env=full_env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    for marker in SANITIZER_MARKERS:
        assert marker not in proc.stderr.decode(errors="replace"), proc.stderr.decode()
    return proc


# --------------------------------------------------------------------------
# responses


class Resp:
    def __init__(self, status, reason, headers, body, version="HTTP/1.1"):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) in received order
        self.body = body
        self.version = version

    def header(self, name, default=None):
        values = self.header_all(name)
        return ", ".join(values) if values else default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Resp {self.status} {self.headers!r} {self.body[:300]!r}>"


def assert_gateway_error(resp: Resp, status: int):
    """SPEC 3.2 / 7: the gateway's own error responses."""
    assert resp.status == status, resp
    ctype = resp.header("content-type") or ""
    assert ctype.split(";")[0].strip().lower() == "application/json", resp
    data = json.loads(resp.body)
    assert set(data) == {"status", "error", "message", "request_id"}, data
    assert data["status"] == status and isinstance(data["status"], int), data
    assert data["error"] == ERROR_CODES[status], data
    assert isinstance(data["message"], str) and data["message"], data
    assert isinstance(data["request_id"], str) and REQUEST_ID_RE.match(data["request_id"]), data
    assert resp.header("x-request-id") == data["request_id"], resp
    return data


def request(port, method="GET", path="/", headers=None, body=None, timeout=10.0,
            host="127.0.0.1"):
    """One request on a fresh connection with http.client."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        return conn_request(conn, method, path, headers, body)
    finally:
        conn.close()


def keepalive_clients(ports, clients, per_client, path="/", timeout=180.0):
    """`clients` concurrent clients spread over `ports` (round robin), each
    sending `per_client` GETs on its own keep-alive connection; returns every
    status, in no particular order."""
    from concurrent.futures import ThreadPoolExecutor

    def client(i):
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", ports[i % len(ports)], timeout=30)
        try:
            for _ in range(per_client):
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                out.append(r.status)
        finally:
            conn.close()
        return out

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return [st for rs in pool.map(client, range(clients), timeout=timeout) for st in rs]


def conn_request(conn, method="GET", path="/", headers=None, body=None):
    """One request on an existing http.client connection (keep-alive)."""
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return Resp(r.status, r.reason, list(r.getheaders()), data,
                "HTTP/1.0" if r.version == 10 else "HTTP/1.1")


def curl(*args, timeout=20.0):
    proc = subprocess.run(["curl", "-sS", "--max-time", "15"] + list(args),
                          capture_output=True, timeout=timeout)
    return proc


class RawConn:
    """A client socket for exact bytes, with an HTTP/1 response reader."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, rcvbuf=None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def send(self, data: bytes):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv(self) -> bytes:
        """One read from the peer (the socket's timeout is set): b"" at its end."""
        try:
            return self.sock.recv(262144)
        except ConnectionResetError:
            return b""

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("RawConn read deadline")
        self.sock.settimeout(remaining)
        data = self._recv()
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_until(self, marker: bytes, deadline):
        while marker not in self.buf:
            if not self._fill(deadline):
                raise ConnectionError(f"connection closed before {marker!r}; got {self.buf!r}")
        idx = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:idx], self.buf[idx:]
        return out

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionError(f"connection closed with {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        head = self._read_until(b"\r\n\r\n", deadline)
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        return version, int(status), (reason[0] if reason else ""), headers

    def read_response(self, method="GET", timeout=None) -> Resp:
        """Reads one response (1xx interim ones included, as their own Resp)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        version, status, reason, headers = self.read_head(timeout)
        resp = Resp(status, reason, headers, b"", version)
        if method == "HEAD" or status < 200 or status in (204, 304):
            return resp
        te = (resp.header("transfer-encoding") or "").lower()
        if te:
            assert te == "chunked", resp
            body = b""
            while True:
                size_line = self._read_until(b"\r\n", deadline)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_until(b"\r\n", deadline) != b"\r\n":
                        pass
                    break
                body += self._read_exact(size, deadline)
                assert self._read_exact(2, deadline) == b"\r\n"
            resp.body = body
        elif resp.header("content-length") is not None:
            resp.body = self._read_exact(int(resp.header("content-length")), deadline)
        else:
            while self._fill(deadline):
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def read_all(self, timeout=None) -> bytes:
        """Everything until the peer closes (bounded)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._fill(deadline):
            pass
        out, self.buf = self.buf, b""
        return out

    def closed_within(self, timeout: float) -> bool:
        """True if the peer closes within `timeout` (bytes before EOF are kept)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
            return True
        except (socket.timeout, TimeoutError):
            return False


def parse_one_response(data: bytes, method="GET") -> Resp:
    """Parses the first response from bytes already received."""

    class _Fake(RawConn):
        def __init__(self, data):
            self.buf = data
            self.eof = True
            self.timeout = 1.0

        def _fill(self, deadline):
            return False

    return _Fake(data).read_response(method)


# --------------------------------------------------------------------------
# backends


@pytest.fixture
def backend():
    """Factory: backend(name='b', handler=None) -> started HttpBackend."""
    started = []

    def start(name="backend", handler=None, host="127.0.0.1"):
        b = HttpBackend(name, handler, host).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def raw_backend():
    """Factory: raw_backend(handler) -> RawBackend."""
    started = []

    def start(handler):
        b = RawBackend(handler)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def h2_backend():
    """Factory: h2_backend(max_streams=None, tls=None) -> started H2Backend."""
    started = []

    def start(max_streams=None, tls=None):
        b = H2Backend(max_streams, tls)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def upstream(*targets, **options):
    """An upstream config entry from target addresses."""
    entry = {"targets": list(targets)}
    entry.update(options)
    return entry


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Sluice RSS sampling for the memory-bound tests: ASan's quarantine would count
# freed memory as growth, so those runs turn it off.
RSS_ENV = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                            ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0").lstrip(":")}


class RssSampler:
    """Samples a running Sluice's VmRSS every 5 ms; .peak is the highest seen."""

    def __init__(self, s):
        self.s = s
        self.peak = 0
        self.stop_evt = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_evt.is_set():
            try:
                self.peak = max(self.peak, self.s.rss_kib())
            except (OSError, AssertionError):
                return
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_evt.set()
        self.thread.join(2)


# --------------------------------------------------------------------------
# /metrics

METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def parse_metrics(text: str):
    """Prometheus text -> [(name, {label: value}, float)], comments skipped."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_RE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        labels = {k: re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), v)
                  for k, v in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                         m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def scrape_metrics(port):
    """GET /metrics on the admin port, parsed (see parse_metrics)."""
    r = request(port, "GET", "/metrics")
    assert r.status == 200, r
    return parse_metrics(r.body.decode())


def metric_value(found, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`; None when there is none."""
    vals = [v for n, l, v in found if n == name and all(l.get(k) == x for k, x in labels.items())]
    return sum(vals) if vals else None
