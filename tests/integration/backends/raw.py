"""RawBackend: a plain socket server whose per-connection handler decides the
exact bytes (misbehaving, slow, silent upstreams), with ServerSide, the
reading helpers for such handlers, and a few ready-made handlers."""
import hashlib
import socket
import time

from backends.server import ThreadedServer


class RawBackend(ThreadedServer):
    """Socket server; handler(conn, backend) runs in a thread per connection,
    the connection is closed when it returns."""

    def __init__(self, handler, host="127.0.0.1"):
        super().__init__(host, backlog=128)
        self.handler = handler
        self.requests = []  # request heads (bytes) handlers recorded
        self._start()

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
