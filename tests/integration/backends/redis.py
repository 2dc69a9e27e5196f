"""RedisServer: a real redis-server process on a free loopback port, without
persistence, started and stopped by PID; plus a minimal RESP client so tests
can look at what the gateway stored (no client library needed)."""
import os
import shutil
import signal
import socket
import subprocess
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisError(Exception):
    pass


def _read_reply(f):
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RedisError(f"unexpected reply {line!r}")


class RedisServer:
    """redis-server on 127.0.0.1:<free port>; `extra` are more command-line options."""

    def __init__(self, workdir, extra=(), port=None):
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.extra = list(extra)
        self.password = None
        if "--requirepass" in self.extra:
            self.password = self.extra[self.extra.index("--requirepass") + 1]
        self.proc = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=10.0):
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--logfile", str(self.dir / "redis.log")] + self.extra
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.command("PING") == "PONG":
                    return self
            except (OSError, RedisError):
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not answer within {timeout}s")
            time.sleep(0.05)

    def stop(self, timeout=10.0):
        """Stops the process (TERM, then KILL), by PID."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.paused = False
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    paused = False

    def pause(self):
        """SIGSTOP: the server accepts connections (the kernel does) but never answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def command(self, *args, db=0, timeout=5.0):
        """Runs one command (after AUTH and SELECT as needed) and returns its reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            f = s.makefile("rb")
            cmds = []
            if self.password:
                cmds.append(("AUTH", self.password))
            if db:
                cmds.append(("SELECT", str(db)))
            cmds.append(args)
            out = b""
            for c in cmds:
                out += b"*%d\r\n" % len(c)
                for a in c:
                    a = a if isinstance(a, bytes) else str(a).encode()
                    out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            replies = [_read_reply(f) for _ in cmds]
            return replies[-1]
