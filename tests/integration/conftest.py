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

Clients: RawConn (exact bytes, pipelining, 100-continue), request() over
http.client, and curl through subprocess.

Everything is bounded in time; only processes started here are signalled,
by PID. A test fails if sluice's stderr carries a sanitizer report.
"""
import asyncio
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
from aiohttp import web

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

    def __init__(self, binary: str, workdir: Path, config, env=None, merge=True):
        self.binary = binary
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
            cwd=self.dir, env=self.env)
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

    def start(config, env=None, wait=True, merge=True):
        s = Sluice(sluice_bin, tmp_path / f"sluice{len(started)}", config, env=env, merge=merge)
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

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("RawConn read deadline")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
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


def pattern_bytes(n: int) -> bytes:
    """Deterministic bytes (a repeated 1 MiB random-looking block)."""
    block = _pattern_block()
    reps = n // len(block) + 1
    return (block * reps)[:n]


_BLOCK = []


def _pattern_block():
    if not _BLOCK:
        seed = b"sluice"
        out = bytearray()
        while len(out) < 1 << 20:
            seed = hashlib.sha256(seed).digest()
            out += seed * 4
        _BLOCK.append(bytes(out[:1 << 20]))
    return _BLOCK[0]


class HttpBackend:
    """aiohttp server in a thread. handler(request, record, backend) -> response;
    default: echo() below."""

    def __init__(self, name="backend", handler=None, host="127.0.0.1"):
        self.name = name
        self.handler = handler or echo
        self.host = host
        self.lock = threading.Lock()
        self.requests = []
        self.peers = set()
        self.active = 0
        self.max_active = 0
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.loop = None
        self.thread = None

    def start(self):
        ready = threading.Event()
        errors = []

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            async def setup():
                server = web.Server(self._dispatch)
                self.runner = web.ServerRunner(server, access_log=None, shutdown_timeout=1.0)
                await self.runner.setup()
                await web.SockSite(self.runner, self.sock, shutdown_timeout=1.0).start()

            try:
                self.loop.run_until_complete(setup())
            except Exception as e:  # noqa: BLE001
                errors.append(e)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()
            try:
                self.loop.run_until_complete(
                    asyncio.wait_for(self.runner.cleanup(), timeout=3))
            except Exception:  # noqa: BLE001
                pass
            self.loop.close()

        self.thread = threading.Thread(target=run, daemon=True, name=f"backend-{self.name}")
        self.thread.start()
        assert ready.wait(10), "backend did not start"
        if errors:
            raise errors[0]
        return self

    def stop(self):
        if self.loop and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread:
            self.thread.join(5)

    async def _dispatch(self, request):
        raw = request.raw_path
        path, _, query = raw.partition("?")
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        record = {
            "method": request.method,
            "target": raw,
            "path": path,
            "query": query,
            "headers": list(request.headers.items()),
            "version": f"HTTP/{request.version.major}.{request.version.minor}",
            "peer": peer,
            "body_length": None,
            "body_sha256": None,
        }
        with self.lock:
            self.requests.append(record)
            self.peers.add(peer)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return await self.handler(request, record, self)
        finally:
            with self.lock:
                self.active -= 1

    @property
    def count(self):
        with self.lock:
            return len(self.requests)

    @property
    def connections(self):
        with self.lock:
            return len(self.peers)

    def last(self):
        with self.lock:
            return self.requests[-1]


def rec_header(record, name):
    """A header the backend received, values of repeated fields joined."""
    values = [v for k, v in record["headers"] if k.lower() == name.lower()]
    return ", ".join(values) if values else None


async def read_body(request, record):
    h = hashlib.sha256()
    n = 0
    async for chunk in request.content.iter_any():
        h.update(chunk)
        n += len(chunk)
    record["body_length"] = n
    record["body_sha256"] = h.hexdigest()
    return n, h.hexdigest()


async def echo(request, record, backend):
    """Echoes the request as JSON. Control headers:
    X-Echo-Delay-Ms: sleep first; X-Echo-Status: answer that status (no body
    for 204/304); X-Echo-Bytes: answer N pattern bytes (streamed)."""
    n, digest = await read_body(request, record)
    delay = request.headers.get("X-Echo-Delay-Ms")
    if delay:
        await asyncio.sleep(int(delay) / 1000)
    status = int(request.headers.get("X-Echo-Status", "200"))
    extra = {"X-Backend": backend.name}
    if status in (204, 304):
        return web.Response(status=status, headers=extra)
    nbytes = request.headers.get("X-Echo-Bytes")
    if nbytes:
        size = int(nbytes)
        resp = web.StreamResponse(status=status, headers=extra)
        resp.content_length = size
        resp.content_type = "application/octet-stream"
        await resp.prepare(request)
        data = memoryview(pattern_bytes(size))
        for off in range(0, size, 65536):
            await resp.write(data[off:off + 65536])
        await resp.write_eof()
        return resp
    headers = {}
    for k, v in request.headers.items():
        key = k.lower()
        headers[key] = headers[key] + ", " + v if key in headers else v
    body = {
        "backend": backend.name,
        "method": record["method"],
        "path": record["path"],
        "query": record["query"],
        "headers": headers,
        "body_length": n,
        "body_sha256": digest,
    }
    return web.json_response(body, status=status, headers=extra)


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


class RawBackend:
    """Socket server; handler(conn, backend) runs in a thread per connection,
    the connection is closed when it returns."""

    def __init__(self, handler, host="127.0.0.1"):
        self.handler = handler
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = []  # request heads (bytes) handlers recorded
        self.stopping = threading.Event()
        self.conns = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

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

    def _serve(self, conn):
        conn.settimeout(10)
        try:
            self.handler(conn, self)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def record(self, head: bytes):
        with self.lock:
            self.requests.append(head)

    @property
    def count(self):
        with self.lock:
            return len(self.requests)

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


class ServerSide:
    """Reading helpers for RawBackend handlers."""

    def __init__(self, conn):
        self.conn = conn
        self.buf = b""

    def _fill(self):
        data = self.conn.recv(262144)
        if not data:
            raise ConnectionError("peer closed")
        self.buf += data

    def read_until(self, marker):
        while marker not in self.buf:
            self._fill()
        idx = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:idx], self.buf[idx:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        return self.read_until(b"\r\n\r\n")

    @staticmethod
    def head_header(head: bytes, name: str):
        for line in head.decode("latin-1").split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == name.lower():
                return v.strip()
        return None

    def read_body(self, head, sink=None):
        """Reads a Content-Length or chunked body; sink(bytes) gets pieces,
        else the body is returned."""
        parts = []
        put = sink or parts.append
        te = (self.head_header(head, "transfer-encoding") or "").lower()
        if te == "chunked":
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self.read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                put(self.read_exact(size))
                self.read_exact(2)
        else:
            n = int(self.head_header(head, "content-length") or "0")
            while n > 0:
                if not self.buf:
                    self._fill()
                piece, self.buf = self.buf[:n], self.buf[n:]
                n -= len(piece)
                put(piece)
        return b"".join(parts)

    def read_request(self, backend=None):
        head = self.read_head()
        if backend is not None:
            backend.record(head)
        body = self.read_body(head)
        return head, body


def http_response(status=200, body=b"", headers=None, reason="OK") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    hdrs = dict(headers or {})
    hdrs.setdefault("Content-Length", str(len(body)))
    for k, v in hdrs.items():
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


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


def slow_upload_backend(result, seconds_per_16k, slow_after=2 * (1 << 20)):
    """A raw_backend handler that reads request bodies slowly (past the first
    `slow_after` bytes, sleeping `seconds_per_16k` per 16 KiB read) with a
    small receive buffer, records each head, stores the body's sha256 and
    length in `result`, and answers 200 with the sha256."""
    def handler(conn, backend):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
        side = ServerSide(conn)
        while True:
            try:
                head = side.read_head()
            except ConnectionError:
                return
            backend.record(head)
            h = hashlib.sha256()
            n = [0]

            def sink(piece):
                h.update(piece)
                n[0] += len(piece)
                if n[0] > slow_after:  # warm-up requests are small; slow the big one
                    time.sleep(seconds_per_16k * len(piece) / 16384)

            side.read_body(head, sink)
            result["sha"] = h.hexdigest()
            result["n"] = n[0]
            conn.sendall(http_response(200, h.hexdigest().encode()))
    return handler
