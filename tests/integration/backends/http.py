"""HttpBackend: an aiohttp server in a thread of the test process that
records every request and by default echoes it as JSON (see echo())."""
import asyncio
import hashlib
import socket
import threading

from aiohttp import web


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
        self.ssl_context = None  # an ssl.SSLContext: serve over TLS (TlsBackend)
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
                await web.SockSite(self.runner, self.sock, ssl_context=self.ssl_context,
                                   shutdown_timeout=1.0).start()

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
