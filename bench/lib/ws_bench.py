"""WebSocket workloads of bench/compare.sh (issue 9): nginx, HAProxy and
sluice proxying the same WebSocket echo backend.

- ws_idle: RSS per idle open tunnel, 2,000 tunnels (each did one echo);
- ws_echo: echo round trips per second, 50 tunnels, one 32-byte message in
  flight on each, and the proxy's CPU per round trip;
- ws_stream: one 256 MiB stream, backend to client: MiB/s and the proxy's
  CPU per MiB.

The backend and the load client are one small C program (wsbench.c, built
here with cc and OpenSSL's libcrypto for the SHA-1 of the handshake): an
epoll echo server, and clients that mask their frames (RFC 6455 5.1) and
check every echo byte for byte. Both run on the load CPU; the proxy alone on
the proxy CPU. Proxy CPU comes from /proc/PID/stat ticks of the proxy's
process tree only, read when the client reports the start ("go") and the
end ("done") of its measured window.

harness.py calls run() and report.py calls report_lines() and targets();
everything else about the run (rounds, pinning, process bookkeeping) is
the harness's.
"""

import os
import select
import signal
import statistics
import subprocess
import time

IDS = ["ws_idle", "ws_echo", "ws_stream"]
LABELS = {
    "ws_idle": "WebSocket: 2,000 idle tunnels",
    "ws_echo": "WebSocket echo, 50 tunnels, 32 B messages",
    "ws_stream": "WebSocket: one 256 MiB stream (backend to client)",
}
IDLE_TUNNELS = 2000
ECHO_CONNS = 50
ECHO_SIZE = 32
STREAM_BYTES = 256 << 20
NAMES = {"direct": "direct (backend)", "nginx": "nginx", "haproxy": "HAProxy", "sluice": "sluice"}


def wanted(ids):
    return [w for w in ids if w in IDS]


# --------------------------------------------------------------------------
# configs: the same echo backend behind each proxy, one worker each


def nginx_conf(H, d, port, backend):
    # proxy_buffer_size stays at its default (one page): nginx's WebSocket
    # relay allocates it per tunnel, as a plain nginx deployment would.
    return H.nginx_common(d) + f"""http {{
  access_log off;
  tcp_nodelay on;
{H.nginx_temp(d)}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://127.0.0.1:{backend};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
{H.NGINX_FORWARDED}      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
    }}
  }}
}}
"""


def haproxy_conf(port, backend):
    return f"""global
    nbthread 1
    maxconn 8000

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout tunnel 300s

frontend fe
    bind 127.0.0.1:{port}
    option forwardfor
    unique-id-format %{{+X}}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
    unique-id-header X-Request-Id
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend be

backend be
    server s1 127.0.0.1:{backend}
"""


def sluice_conf(port, backend):
    import json
    return json.dumps({
        "workers": 1,
        "listen": [{"address": f"127.0.0.1:{port}"}],
        "access_log": {"path": "off"},
        "upstreams": {"ws": {"targets": [f"127.0.0.1:{backend}"]}},
        "routes": [{"match": {"prefix": "/"}, "upstream": "ws", "websocket": True}],
        "limits": {"websocket_idle_timeout_ms": 300000, "drain_timeout_ms": 2000},
    }, indent=1)


# --------------------------------------------------------------------------


class WsBench:
    def __init__(self, b, H):
        self.b, self.H, self.a = b, H, b.a
        self.raw = []  # one dict per cell and round
        self.backend = None

    # ---- set-up
    def prepare(self):
        H, b = self.H, self.b
        self.tool = os.path.join(b.tmp, "wsbench")
        src = os.path.join(H.LIB, "wsbench.c")
        r = subprocess.run(["cc", "-O2", "-o", self.tool, src, "-lcrypto"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120)
        if r.returncode != 0:
            raise H.BenchError(f"cc wsbench.c failed (needs libssl-dev): "
                               f"{r.stdout.decode(errors='replace')[-300:]}")
        self.bport = H.free_port()
        self.backend = H.Proc("ws-backend", [self.tool, "server", str(self.bport)],
                              os.path.join(b.out, "logs", "ws-backend.log"), b.lcpu)
        H.wait_port(self.bport, self.backend)
        H.log(f"WebSocket echo backend (wsbench) pid {self.backend.pid} on 127.0.0.1:{self.bport}")

    def start(self, target, tag):
        """A fresh proxy in front of the echo backend; (Proc or None, port)."""
        H, b = self.H, self.b
        if target == "direct":
            return None, self.bport
        b.cell_no += 1
        d = os.path.join(b.tmp, f"{target}-{b.cell_no}")
        os.makedirs(d)
        port = H.free_port()
        if target == "nginx":
            conf = os.path.join(d, "nginx.conf")
            text = nginx_conf(H, d, port, self.bport)
            argv = [self.a.nginx, "-e", f"{d}/error.log", "-p", d, "-c", conf]
        elif target == "haproxy":
            conf = os.path.join(d, "haproxy.cfg")
            text = haproxy_conf(port, self.bport)
            argv = [self.a.haproxy, "-db", "-f", conf]
        else:
            conf = os.path.join(d, "sluice.json")
            text = sluice_conf(port, self.bport)
            argv = [self.a.sluice, "-c", conf]
        with open(conf, "w") as f:
            f.write(text)
        p = H.Proc(target, argv, os.path.join(b.out, "logs", f"{b.cell_no:03d}-{target}{tag}.log"), b.pcpu)
        try:
            H.wait_port(port, p)
        except BaseException:
            p.stop(timeout=5)
            raise
        return p, port

    # ---- the load client
    def client(self, argv, raw):
        full = ["taskset", "-c", self.b.lcpu, self.tool] + argv
        logf = open(raw, "w")
        logf.write(" ".join(full) + "\n")
        logf.flush()
        c = subprocess.Popen(full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                             start_new_session=True)
        c.logf = logf
        return c

    def line(self, c, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.H.BenchError(f"wsbench: no '{what}' after {timeout:.0f}s")
            r, _, _ = select.select([c.stdout], [], [], left)
            if r:
                s = c.stdout.readline().decode(errors="replace")
                if not s:
                    c.wait(5)
                    raise self.H.BenchError(f"wsbench exited {c.returncode} before '{what}': "
                                            f"{self.H.tail(c.logf.name)}")
                c.logf.write(s)
                if s.startswith(what):
                    return s.split()

    def stop_client(self, c):
        if c.poll() is None:
            try:
                os.kill(c.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        c.wait(10)
        c.logf.close()

    # ---- the three cells
    def idle(self, target, pids, port, raw, p):
        H = self.H
        before = H.rss_kib(pids)
        c = self.client(["idle", str(port), str(IDLE_TUNNELS)], raw)
        try:
            self.line(c, 300, "open")
            time.sleep(1.0)
            after = H.rss_kib(pids)
            if p is not None and not p.alive():
                raise H.BenchError(f"{target} died holding the tunnels: {H.tail(p.logpath)}")
            c.stdin.write(b"\n")
            c.stdin.flush()
            c.wait(60)
        finally:
            self.stop_client(c)
        return dict(tunnels=IDLE_TUNNELS, rss_before_kib=before, rss_after_kib=after,
                    value=round((after - before) / IDLE_TUNNELS, 2))

    def echo(self, target, pids, port, raw, p):
        H, a = self.H, self.a
        c = self.client(["rtt", str(port), str(ECHO_CONNS), str(a.warmup), str(a.duration),
                         str(ECHO_SIZE)], raw)
        try:
            self.line(c, a.warmup + 60, "go")
            t0, c0 = time.monotonic(), H.cpu_split(pids)
            done = self.line(c, a.duration + 30, "done")
            t1, c1 = time.monotonic(), H.cpu_split(pids)
            c.wait(30)
        finally:
            self.stop_client(c)
        n, secs = int(done[1]), float(done[2])
        if n == 0:
            raise H.BenchError("no round trip completed")
        cc = H.cpu_cell(c0, c1, t1 - t0, n)
        return dict(value=round(n / secs, 1), count=n, cpu_pct=cc["cpu_pct"],
                    cpu_per_unit=cc["cpu_us_per_req"], kernel_pct=cc["kernel_pct"])

    def stream(self, target, pids, port, raw, p):
        H = self.H
        c = self.client(["stream", str(port), str(STREAM_BYTES)], raw)
        try:
            self.line(c, 60, "go")
            t0, c0 = time.monotonic(), H.cpu_split(pids)
            done = self.line(c, 300, "done")
            t1, c1 = time.monotonic(), H.cpu_split(pids)
            c.wait(30)
        finally:
            self.stop_client(c)
        mib, secs = int(done[1]) / (1 << 20), float(done[2])
        cc = H.cpu_cell(c0, c1, t1 - t0, mib)
        return dict(value=round(mib / secs, 1), count=mib, cpu_pct=cc["cpu_pct"],
                    cpu_per_unit=round(cc["cpu_us_per_req"], 1), kernel_pct=cc["kernel_pct"])

    def cell(self, rnd, wl, target):
        H, b = self.H, self.b
        row = dict(round=rnd, workload=wl, target=target, status="ok", value="", cpu_pct="",
                   cpu_per_unit="", kernel_pct="", detail="")
        p = None
        tag = f"-{wl}-r{rnd}"
        try:
            p, port = self.start(target, tag)
            pids = p.tree() if p else self.backend.tree()
            raw = os.path.join(b.out, "logs", f"{target}{tag}.txt")
            row.update(getattr(self, wl[3:])(target, pids, port, raw, p))
            if p is not None and not p.alive():
                raise H.BenchError(f"{target} died during the run: {H.tail(p.logpath)}")
        except (H.BenchError, OSError, subprocess.SubprocessError) as e:
            row.update(status="error", detail=str(e))
            b.notes.append(f"{target} / {LABELS[wl]} / round {rnd}: {e}")
            H.log(f"  ERROR {target} {wl}: {e}")
        finally:
            if p is not None:
                b.stop_target(p)
        return row

    def run(self, ids):
        H, a = self.H, self.a
        try:
            self.prepare()
        except H.BenchError as e:
            for wl in ids:
                self.raw.append(dict(round=1, workload=wl, target="sluice", status="error", detail=str(e)))
            self.b.notes.append(f"WebSocket workloads: {e}")
            H.log(f"WebSocket workloads: {e}")
            return
        units = {"ws_idle": "KiB/tunnel", "ws_echo": "round trips/s", "ws_stream": "MiB/s"}
        try:
            for rnd in range(1, a.rounds + 1):
                for wl in ids:
                    targets = [t for t in a.targets if not (wl == "ws_idle" and t == "direct")]
                    order = targets[rnd - 1:] + targets[:rnd - 1] if targets else []
                    for target in order:
                        row = self.cell(rnd, wl, target)
                        self.raw.append(row)
                        if row["status"] == "ok":
                            H.log(f"r{rnd} {wl:9} {target:8} {row['value']:>10} {units[wl]}"
                                  + (f"  cpu {row['cpu_pct']}%  {row['cpu_per_unit']} µs/unit"
                                     if wl != "ws_idle" else ""))
        finally:
            self.backend.stop()


def run(b, H, ids):
    w = WsBench(b, H)
    b.ws = w
    w.run(ids)


# --------------------------------------------------------------------------
# report


def _median(rows, key):
    vals = [float(r[key]) for r in rows if r.get(key) not in ("", None)]
    return statistics.median(vals) if vals else None


def summary(b):
    """(workload, target) -> medians over the good rounds."""
    out = {}
    w = getattr(b, "ws", None)
    if w is None:
        return out
    for r in w.raw:
        out.setdefault((r["workload"], r["target"]), []).append(r)
    res = {}
    for k, rs in out.items():
        ok = [r for r in rs if r["status"] == "ok"]
        s = dict(rounds=len(rs), rounds_ok=len(ok), status="ok" if len(ok) == len(rs) else
                 (f"{len(rs) - len(ok)} of {len(rs)} rounds failed" if ok else "error"))
        for key in ("value", "cpu_pct", "cpu_per_unit", "kernel_pct", "rss_before_kib", "rss_after_kib"):
            s[key] = _median(ok, key)
        res[k] = s
    return res


def targets(b):
    """The issue's targets, in report.py's format."""
    sm = summary(b)
    if not sm:
        return []
    out = []

    def v(wl, t, key):
        return (sm.get((wl, t)) or {}).get(key)

    def add(text, wl, metric, key, peer, op, limit, short, unit=""):
        sv, rv = v(wl, "sluice", key), (v(wl, peer, key) if peer else None)
        ratio = sv / rv if sv is not None and rv else None
        res = "info" if op is None else ("n/a" if ratio is None else
                                         ("PASS" if ratio <= limit else "MISS"))
        out.append(dict(text=text, workload=wl, metric=metric, peer=peer, short=short, unit=unit,
                        sluice=sv, ref=rv, ref_label=NAMES.get(peer, "—"), ratio=ratio, op=op,
                        limit=limit, result=res))

    def lowest(wl, key):
        have = [(v(wl, p, key), p) for p in ("nginx", "haproxy") if v(wl, p, key) is not None]
        return min(have)[1] if have else None

    if any(k[0] == "ws_idle" for k in sm):
        p = lowest("ws_idle", "value")
        add("WebSocket: RSS per idle tunnel (KiB) vs the lower of nginx and HAProxy", "ws_idle",
            "kib_per_conn", "value", p, "<=", 0.5, "KiB/tunnel", " KiB")
    if any(k[0] == "ws_echo" for k in sm):
        p = lowest("ws_echo", "cpu_per_unit")
        add("WebSocket echo: CPU µs per round trip vs the better peer", "ws_echo", "cpu_us_per_req",
            "cpu_per_unit", p, "<=", 0.8, "CPU/rt")
        for p in ("nginx", "haproxy"):
            add(f"WebSocket echo: round trips/s vs {NAMES[p]}", "ws_echo", "rps", "value", p,
                None, None, "rt/s")
    if any(k[0] == "ws_stream" for k in sm):
        for p in ("nginx", "haproxy"):
            add(f"WebSocket 256 MiB stream: CPU µs per MiB vs {NAMES[p]}", "ws_stream",
                "cpu_us_per_req", "cpu_per_unit", p, None, None, "CPU/MiB")
    return out


def report_lines(b):
    sm = summary(b)
    if not sm:
        return []
    tg = targets(b)
    L = ["", "### WebSocket (issue 9)", "",
         "The same echo backend (wsbench, C, on the load CPU) behind each proxy; one worker each, "
         "the proxy pinned alone on its CPU. *proxy CPU* is from the /proc ticks of the proxy's "
         "processes only, over the client's measured window. For *direct* the CPU columns (in "
         "parentheses) are the backend's.", "",
         "| workload | target | result | ×nginx | ×HAProxy | ×direct | proxy CPU % | proxy CPU per unit |",
         "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    fmt = lambda x, d=1: "—" if x is None else f"{x:,.{d}f}"
    for wl in IDS:
        rows = [(t, sm[(wl, t)]) for t in ("direct", "nginx", "haproxy", "sluice") if (wl, t) in sm]
        label = LABELS[wl]
        for t, s in rows:
            if s["value"] is None:
                L.append(f"| {label} | {NAMES[t]} | {s['status']} | — | — | — | — | — |")
                label = ""
                continue
            flag = "" if s["status"] == "ok" else f" ({s['status']})"
            if wl == "ws_idle":
                res = (f"{fmt(s['value'], 2)} KiB/tunnel (RSS {s['rss_before_kib'] / 1024:.1f} → "
                       f"{s['rss_after_kib'] / 1024:.1f} MiB){flag}")
            elif wl == "ws_echo":
                res = f"{fmt(s['value'], 0)} rt/s{flag}"
            else:
                res = f"{fmt(s['value'], 0)} MiB/s{flag}"

            def ratio(ref, key="value"):
                r = sm.get((wl, ref))
                if not r or r.get(key) in (None, 0) or s.get(key) is None:
                    return "—"
                txt = f"{s[key] / r[key]:.2f}"
                if t == "sluice":
                    for g in tg:
                        if g["workload"] == wl and g["op"] and g["peer"] == ref:
                            txt += f" · {g['short']} {g['ratio']:.2f} {g['result']}" if g["ratio"] else ""
                return txt
            unit = {"ws_idle": "", "ws_echo": " µs/rt", "ws_stream": " µs/MiB"}[wl]
            cpu = fmt(s["cpu_pct"]) if s["cpu_pct"] is not None else "—"
            if s.get("kernel_pct") is not None:
                cpu += f" (kernel {fmt(s['kernel_pct'], 0)} %)"
            per = (fmt(s["cpu_per_unit"], 2) + unit) if s["cpu_per_unit"] is not None else "—"
            if t == "direct":
                cpu, per = f"({cpu})", f"({per})"
            L.append(f"| {label} | {NAMES[t]} | {res} | {ratio('nginx')} | {ratio('haproxy')} "
                     f"| {ratio('direct') if wl != 'ws_idle' else '—'} | {cpu} | {per} |")
            label = ""
    L.append("")
    L.append("×nginx, ×HAProxy and ×direct divide this row's result by the reference's (for the idle "
             "row: KiB per tunnel, lower is better; else rates, higher is better). On the sluice rows "
             "they are followed by the issue's target against that peer, as sluice ÷ peer of the named "
             "metric. KiB/tunnel = (RSS with 2,000 tunnels open − RSS before) / 2,000, each tunnel "
             "having echoed one message.")
    return L
