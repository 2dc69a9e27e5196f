"""ThreadedServer: the listening socket and accept thread that RawBackend
and H2Backend share. A subclass calls ThreadedServer.__init__ first, sets up
its own state, then _start(); it serves each connection in _serve(conn), on
a thread of its own."""
import socket
import threading


class ThreadedServer:
    """A loopback listener on a free port, accepting in a daemon thread and
    counting connections; stop() closes it and shuts the connections down."""

    def __init__(self, host="127.0.0.1", backlog=128):
        self.lock = threading.Lock()
        self.connections = 0
        self.conns = []
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(backlog)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self.thread = None

    def _start(self):
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
        raise NotImplementedError

    def stop(self):
        self.stopping.set()
        self.sock.close()
        if self.thread:
            self.thread.join(2)
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
