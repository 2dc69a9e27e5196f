"""H2Backend: a cleartext (prior knowledge) or TLS HTTP/2 server on
python3-h2, one thread per connection and one per answered stream, that
counts its connections and answers by path (see H2Backend.answer). The one
HTTP/2 upstream of the integration tests."""
import hashlib
import json
import socket
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

from backends.server import ThreadedServer


class H2Backend(ThreadedServer):
    """A cleartext HTTP/2 server (prior knowledge). Paths:
    /hello          200, body, trailers (grpc-status: 0, x-trailer: yes), no content-length
    /sized          200 with content-length and a trailer
    /echo           200, JSON of the request (method, path, headers, body length, sha256)
    /stream?n=N     N data frames 50 ms apart, then trailers
    /slow?ms=M      answers after M ms
    /rst            resets the stream (INTERNAL_ERROR) without answering
    /rst-mid        head and a little body, then a reset
    /refuse-once    REFUSED_STREAM the first time, then answers
    /trailers-only  one HEADERS frame ending the stream (gRPC Trailers-Only)
    /first-chunk    answers as soon as the first request DATA arrives
    /goaway-once    the first time: GOAWAY (last stream 0) and close; then answers
    /close          closes the connection without answering
    /silent         never answers
    /stall-mid      head and a little body, then 3 s of silence, then the end
    /no-status      a response HEADERS without :status (an invalid head)
    With `tls` (an ssl.SSLContext), connections are TLS and must agree on
    ALPN "h2". A HEAD request gets 200 with content-length 5 and no body. `max_streams`
    sets SETTINGS_MAX_CONCURRENT_STREAMS.
    """

    def __init__(self, max_streams=None, tls=None):
        self.settings_max_streams = max_streams
        super().__init__("127.0.0.1", backlog=64)
        self.tls = tls  # an ssl.SSLContext: serve HTTP/2 over TLS
        self.requests = []
        self.refused = set()
        self.max_streams = 0
        self.resets = 0  # RST_STREAM frames received from the gateway
        self.never_indexed = set()  # field names the gateway sent as never-indexed HPACK literals
        self.first_chunk = threading.Event()
        self._start()

    def _serve(self, sock):
        try:
            if self.tls:
                sock.settimeout(5)
                sock = self.tls.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
                if sock.selected_alpn_protocol() != "h2":
                    return
            _Conn(self, sock).run()
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def answer(self, c, sid, headers, body):
        path = headers[":path"]
        name, _, query = path.partition("?")
        args = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        with self.lock:
            self.requests.append(headers)
        if headers[":method"] == "HEAD":
            c.send_headers(sid, [(":status", "200"), ("content-length", "5")], end=True)
        elif name == "/hello":
            c.respond(sid, [(":status", "200"), ("content-type", "text/plain")], b"hello h2",
                      trailers=[("grpc-status", "0"), ("x-trailer", "yes")])
        elif name == "/sized":
            c.respond(sid, [(":status", "200"), ("content-length", "5")], b"sized",
                      trailers=[("x-trailer", "dropped")])
        elif name == "/echo":
            record = {"method": headers[":method"], "path": path,
                      "authority": headers.get(":authority"), "scheme": headers[":scheme"],
                      "headers": {k: v for k, v in headers.items() if not k.startswith(":")},
                      "body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
            c.respond(sid, [(":status", "200"), ("content-type", "application/json")],
                      json.dumps(record).encode())
        elif name == "/stream":
            c.respond(sid, [(":status", "200")], None)
            for i in range(int(args.get("n", "3"))):
                time.sleep(0.05)
                c.send_data(sid, f"part {i}\n".encode(), end=False)
            c.send_headers(sid, [("grpc-status", "0")], end=True)
        elif name == "/slow":
            time.sleep(int(args.get("ms", "100")) / 1000)
            c.respond(sid, [(":status", "200")], b"slow " + args.get("id", "").encode())
        elif name == "/rst":
            c.reset(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif name == "/rst-mid":
            c.send_headers(sid, [(":status", "200")], end=False)
            c.send_data(sid, b"partial", end=False)
            time.sleep(0.1)
            c.reset(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif name == "/refuse-once":
            key = args.get("key", "")
            with self.lock:
                first = key not in self.refused
                self.refused.add(key)
            if first:
                c.reset(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            else:
                c.respond(sid, [(":status", "200")], b"second try " + str(len(body)).encode())
        elif name == "/goaway-once":
            with self.lock:
                first = "goaway" not in self.refused
                self.refused.add("goaway")
            if first:
                c.goaway_and_close()
            else:
                c.respond(sid, [(":status", "200")], b"after goaway")
        elif name == "/close":
            c.sock.shutdown(socket.SHUT_RDWR)
        elif name == "/silent":
            time.sleep(3)
        elif name == "/stall-mid":
            c.send_headers(sid, [(":status", "200")], end=False)
            c.send_data(sid, b"partial", end=False)
            time.sleep(3)
            c.send_data(sid, b" and the rest", end=True)
        elif name == "/no-status":
            c.send_raw_headers(sid, b"\x00\x06x-test\x02ok")  # literal, no :status
        elif name == "/trailers-only":
            c.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                 ("grpc-status", "5"), ("grpc-message", "not found")], end=True)
        else:
            c.respond(sid, [(":status", "404")], b"no such path")


class _Conn:
    """One server connection: a reader loop, and answers from other threads."""

    def __init__(self, backend, sock):
        self.backend = backend
        self.sock = sock
        self.cond = threading.Condition()
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams = {}
        self.started = set()
        self.reset_streams = set()

    def _flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def run(self):
        with self.cond:
            if self.backend.settings_max_streams:
                self.h2.local_settings = h2.settings.Settings(
                    client=False, initial_values={
                        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS:
                            self.backend.settings_max_streams})
            self.h2.initiate_connection()
            self._flush()
        while True:
            data = self.sock.recv(65536)
            if not data:
                return
            with self.cond:
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    return  # after our GOAWAY
                for ev in events:
                    self._event(ev)
                self._flush()
                self.cond.notify_all()

    def _event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            headers = dict(ev.headers)
            self.streams[ev.stream_id] = (headers, bytearray())
            open_now = len(self.streams)
            with self.backend.lock:
                self.backend.max_streams = max(self.backend.max_streams, open_now)
                self.backend.never_indexed.update(
                    f[0] for f in ev.headers if isinstance(f, hpack.NeverIndexedHeaderTuple))
            if ev.stream_ended:
                self._start(ev.stream_id)
        elif isinstance(ev, h2.events.DataReceived):
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            entry = self.streams.get(ev.stream_id)
            if entry is not None:
                entry[1].extend(ev.data)
                if entry[0][":path"] == "/first-chunk" and not self.backend.first_chunk.is_set():
                    self.backend.first_chunk.set()
                    self.h2.send_headers(ev.stream_id, [(":status", "200")])
                    self.h2.send_data(ev.stream_id, b"got the first chunk", end_stream=False)
            if ev.stream_ended:
                self._start(ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self._start(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            with self.backend.lock:
                self.backend.resets += 1
            self.reset_streams.add(ev.stream_id)
            self.streams.pop(ev.stream_id, None)

    def _start(self, sid):
        entry = self.streams.get(sid)
        if entry is None or sid in self.started:
            return
        self.started.add(sid)
        headers, body = entry
        if headers[":path"] == "/first-chunk":
            self.h2.send_data(sid, b"; all " + str(len(body)).encode(), end_stream=True)
            self.streams.pop(sid, None)
            return
        threading.Thread(target=self._answer, args=(sid, headers, bytes(body)),
                         daemon=True).start()

    def _answer(self, sid, headers, body):
        try:
            self.backend.answer(self, sid, headers, body)
        except Exception:  # noqa: BLE001 - the stream may be gone (client reset)
            pass
        finally:
            with self.cond:
                self.streams.pop(sid, None)

    def send_headers(self, sid, headers, end):
        with self.cond:
            self.h2.send_headers(sid, headers, end_stream=end)
            self._flush()

    def send_data(self, sid, data, end):
        view = memoryview(data)
        with self.cond:
            while True:
                if sid in self.reset_streams:
                    return
                room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                if len(view) == 0 or room > 0:
                    n = min(room, len(view))
                    last = n == len(view)
                    self.h2.send_data(sid, view[:n].tobytes(), end_stream=end and last)
                    self._flush()
                    view = view[n:]
                    if last:
                        return
                else:
                    self.cond.wait(5)

    def send_raw_headers(self, sid, block):
        """A HEADERS frame (END_HEADERS) with a block that bypasses h2's checks;
        the block must not touch the dynamic table."""
        frame = len(block).to_bytes(3, "big") + bytes([1, 4]) + sid.to_bytes(4, "big") + block
        with self.cond:
            self.sock.sendall(frame)

    def respond(self, sid, headers, body, trailers=None):
        self.send_headers(sid, headers, end=False if (body or trailers or body is None)
                          else True)
        if body is None:
            return
        if body:
            self.send_data(sid, body, end=not trailers)
        if trailers:
            self.send_headers(sid, trailers, end=True)

    def goaway_and_close(self):
        with self.cond:
            self.h2.close_connection(error_code=0, last_stream_id=0)
            self._flush()
            self.sock.shutdown(socket.SHUT_RDWR)

    def reset(self, sid, code):
        with self.cond:
            self.h2.reset_stream(sid, error_code=code)
            self._flush()
