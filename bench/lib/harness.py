#!/usr/bin/env python3
"""sluice comparison benchmark: the engine behind bench/compare.sh.

Starts one shared backend (nginx serving static files), then for every
workload x target cell a fresh proxy process (nginx, HAProxy, sluice; the
backend hit directly is the "direct" target), drives it with wrk / h2load,
and measures throughput, latency, the proxy's CPU, user-space instructions per
request (cachegrind), syscalls per request (perf trace / strace) and RSS per
idle keep-alive connection. Everything it starts it stops by PID.

Only the Python standard library is used. See bench/README.md.
"""

import argparse
import asyncio
import base64
import json
import secrets
import csv
import datetime
import http.client
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

import ws_bench  # the WebSocket workloads (issue 9)

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH_DIR)
LIB = os.path.join(BENCH_DIR, "lib")

TARGETS = ["direct", "nginx", "haproxy", "sluice"]
PROXIES = ["nginx", "haproxy", "sluice"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# id, label, protocol, method, path, client connections, expected body bytes
WORKLOADS = [
    dict(id="small", label="small GET (2 B), -c50", proto="h1", method="GET",
         path="/small", conns=50, body=2),
    dict(id="16k", label="16 KiB GET, -c50", proto="h1", method="GET",
         path="/16k", conns=50, body=16384),
    dict(id="1m", label="1 MiB GET, -c10", proto="h1", method="GET",
         path="/1m", conns=10, body=1048576),
    dict(id="post1m", label="1 MiB POST, -c10", proto="h1", method="POST",
         path="/post", conns=10, body=2),
    dict(id="h2small", label="HTTP/2 small GET (h2c), h2load -c10 -m5", proto="h2",
         method="GET", path="/small", conns=10, streams=5, body=2),
    # Filter chains (issue 8): the small GET with credentials, each target
    # configured to do the same work (see CHAINS and bench/README.md).
    dict(id="jwt", label="small GET + jwt RS256 + rate_limit + headers, -c50", proto="h1",
         method="GET", path="/small", conns=50, body=2, chain="jwt"),
    dict(id="basic", label="small GET + basic_auth bcrypt-10 + rate_limit, -c10", proto="h1",
         method="GET", path="/small", conns=10, body=2, chain="basic"),
    # The small GET with the access log written to a file (sluice: JSON;
    # nginx: its default combined format, unbuffered), next to "small" (log off).
    dict(id="small-log", label="small GET (2 B) + access log to a file, -c50", proto="h1",
         method="GET", path="/small", conns=50, body=2, log=True),
    # rate_limit's stores (issue 11): the same filter with store local and
    # store redis (a redis-server the harness starts on the load CPU), sluice only.
    dict(id="rl_local", label="small GET + rate_limit store local, -c50", proto="h1",
         method="GET", path="/small", conns=50, body=2, chain="rl_local"),
    dict(id="rl_redis", label="small GET + rate_limit store redis, -c50", proto="h1",
         method="GET", path="/small", conns=50, body=2, chain="rl_redis"),
    # TLS 1.3 (issue 13): one ECDSA P-256 certificate made by the harness for
    # every target, the system OpenSSL everywhere; see tls_listen_*().
    dict(id="tls_small", label="TLS 1.3 small GET (HTTP/1.1), -c50", proto="h1", tls=True,
         method="GET", path="/small", conns=50, body=2),
    dict(id="tls_h2small", label="TLS 1.3 HTTP/2 small GET, h2load -c10 -m5", proto="h2", tls=True,
         method="GET", path="/small", conns=10, streams=5, body=2),
    dict(id="tls_new", label="TLS 1.3 full handshakes (+1 GET each), s_time -new", proto="h1",
         tls=True, handshake="new", method="GET", path="/small", conns=1, body=2),
    dict(id="tls_resume", label="TLS 1.3 resumed handshakes (ticket, +1 GET each), s_time -reuse",
         proto="h1", tls=True, handshake="reuse", method="GET", path="/small", conns=1, body=2),
    dict(id="tls_1m", label="TLS 1.3 1 MiB GET, -c10", proto="h1", tls=True, method="GET",
         path="/1m", conns=10, body=1048576),
]
WL = {w["id"]: w for w in WORKLOADS}
# fixed request counts (measured run, baseline run) for the counting cells
INSTR_COUNTS = {"small": (2000, 200), "16k": (2000, 200), "1m": (200, 20), "post1m": (200, 20),
                "h2small": (2000, 200)}
SYSCALL_COUNTS = {"small": 20000, "16k": 20000, "1m": 1000, "post1m": 1000, "h2small": 20000}
INSTR_COUNTS["jwt"] = (2000, 200)
SYSCALL_COUNTS["jwt"] = 20000
INSTR_COUNTS["small-log"] = INSTR_COUNTS["small"]
SYSCALL_COUNTS["small-log"] = SYSCALL_COUNTS["small"]
# Why a target has no small-log cell.
NO_LOG = {"direct": "the backend alone is not the proxy under test",
          "haproxy": "HAProxy writes its log only through syslog"}
INSTR_COUNTS.update({"tls_small": (2000, 200), "tls_h2small": (2000, 200), "tls_1m": (200, 20)})
SYSCALL_COUNTS.update({"tls_small": 20000, "tls_h2small": 20000, "tls_1m": 1000})
# Filter chains: which sluice filter types each needs (to say why a cell is
# n/a while the binary lacks one), and why a target cannot take part.
CHAINS = {
    "jwt": dict(filters=["jwt", "rate_limit", "headers"],
                no={"nginx": "Debian's nginx has no JWT verifier"}),
    "basic": dict(filters=["basic_auth", "rate_limit"], no={}),
    # No credentials (auth=False): nothing to enforce, the limit is never reached.
    "rl_local": dict(filters=["rate_limit"], auth=False,
                     no={"nginx": "compares sluice's two stores", "haproxy": "compares sluice's two stores"}),
    "rl_redis": dict(filters=["rate_limit"], auth=False,
                     no={"nginx": "compares sluice's two stores", "haproxy": "compares sluice's two stores"}),
}
for _wl in ("rl_local", "rl_redis"):
    INSTR_COUNTS[_wl] = (2000, 200)
    SYSCALL_COUNTS[_wl] = 20000
# The basic-auth chain is not counted with a fixed request count: nginx and
# HAProxy run bcrypt (about 50 ms) on every request, 50 times slower under
# valgrind, so those cells would take most of the run's time budget.
UNCOUNTED = {"basic": "bcrypt on every request at the peers: only throughput and CPU are measured",
             "tls_new": "a handshake is OpenSSL's work: handshakes/s and CPU µs per handshake only",
             "tls_resume": "a handshake is OpenSSL's work: handshakes/s and CPU µs per handshake only"}
# Never reached: the limit filters do their bookkeeping on every request.
RATE = 1000000
# openssl s_time processes at once in the handshake workloads (each is sequential)
TLS_CLIENTS = 8


class BenchError(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------
# process bookkeeping: every process we start is registered and stopped by PID
# --------------------------------------------------------------------------

class Proc:
    def __init__(self, name, argv, logpath, cpu, env=None):
        self.name = name
        self.logpath = logpath
        self.logf = open(logpath, "ab")
        full = ["taskset", "-c", str(cpu)] + argv
        self.logf.write((" ".join(full) + "\n").encode())
        self.logf.flush()
        self.popen = subprocess.Popen(full, stdout=self.logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      env=env)
        self.pid = self.popen.pid
        REGISTRY.append(self)

    def alive(self):
        return self.popen.poll() is None

    def tree(self):
        """PID of the process and of all its descendants."""
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            if not os.path.exists(f"/proc/{p}"):
                continue
            out.append(p)
            try:
                for t in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{t}/children") as f:
                        todo.extend(int(x) for x in f.read().split())
            except OSError:
                pass
        return out

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signal the process, wait for it, SIGKILL it and its children if late."""
        if self in REGISTRY:
            REGISTRY.remove(self)
        kids = [p for p in self.tree() if p != self.pid]
        rc = self.popen.poll()
        if rc is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                rc = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"  {self.name} (pid {self.pid}) did not stop in {timeout:.0f}s: SIGKILL")
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                rc = self.popen.wait(10)
        for k in kids:  # e.g. an nginx worker orphaned by a killed master
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.logf.close()
        return rc


REGISTRY = []


def cleanup():
    for p in list(reversed(REGISTRY)):
        try:
            p.stop(timeout=5)
        except Exception as e:  # keep stopping the others
            print(f"cleanup of {p.name} pid {p.pid}: {e}", file=sys.stderr)


def on_signal(signum, _frame):
    raise SystemExit(f"interrupted by signal {signum}")


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def free_port():
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in USED_PORTS:
            USED_PORTS.add(port)
            return port
    raise BenchError("no free port")


USED_PORTS = set()


def wait_port(port, proc=None, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise BenchError(f"{proc.name} exited with {proc.popen.returncode} before listening "
                             f"(log: {proc.logpath}): {tail(proc.logpath)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"port {port} not listening after {timeout:.0f}s"
                     + (f" (log: {proc.logpath}): {tail(proc.logpath)}" if proc else ""))


def tail(path, n=3):
    try:
        with open(path, errors="replace") as f:
            lines = [l.strip() for l in f if l.strip()]
        return " | ".join(lines[-n:])
    except OSError:
        return ""


def run(argv, timeout, cpu, out=None):
    """Run a load generator or tool pinned to `cpu`; return its stdout+stderr."""
    full = ["taskset", "-c", str(cpu)] + argv
    try:
        r = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode(errors="replace")
        if out:
            with open(out, "w") as f:
                f.write(" ".join(full) + "\n" + text)
        raise BenchError(f"{argv[0]} timed out after {timeout:.0f}s")
    text = r.stdout.decode(errors="replace")
    if out:
        with open(out, "w") as f:
            f.write(" ".join(full) + "\n" + text)
    return r.returncode, text


def cpu_split(pids):
    """(user, kernel) clock ticks of `pids` so far."""
    user = kernel = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user, kernel = user + int(fields[11]), kernel + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return user, kernel


def cpu_ticks(pids):
    return sum(cpu_split(pids))


def cpu_cell(c0, c1, secs, n):
    """The CPU columns of a cell from two cpu_split() readings `secs` apart
    over `n` requests: CPU % of one core, CPU µs per request, and the
    kernel's share of that CPU (stime over utime + stime) in %."""
    user, kernel = c1[0] - c0[0], c1[1] - c0[1]
    cpu_s = (user + kernel) / CLK_TCK
    return dict(cpu_pct=round(100 * cpu_s / secs, 1), cpu_us_per_req=round(1e6 * cpu_s / n, 2),
                kernel_pct=round(100 * kernel / (user + kernel), 1) if user + kernel else "")


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def client_tls():
    """The probes' TLS: 1.3 only, the harness's self-signed certificate unchecked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def probe(port, wl, timeout=10, headers=None):
    """One request with http.client; raise BenchError unless 200 + right body size."""
    if wl.get("tls"):
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=client_tls())
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = b"a" * 1048576 if wl["method"] == "POST" else None
        hdrs = {"Content-Type": "application/octet-stream"} if body else {}
        hdrs.update(headers or {})
        c.request(wl["method"], wl["path"], body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        if r.status != 200 or len(data) != wl["body"]:
            raise BenchError(f"probe {wl['method']} {wl['path']}: status {r.status}, "
                             f"{len(data)} body bytes (expected 200, {wl['body']}): {data[:200]!r}")
    except (OSError, http.client.HTTPException) as e:
        raise BenchError(f"probe {wl['method']} {wl['path']}: {type(e).__name__}: {e}")
    finally:
        c.close()


def probe_status(port, path, headers, timeout=10):
    """One GET; return (status, response headers as a lower-case dict)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}
    except (OSError, http.client.HTTPException) as e:
        raise BenchError(f"probe GET {path}: {type(e).__name__}: {e}")
    finally:
        c.close()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt_credentials(d):
    """A fresh RSA-2048 key pair and an RS256 token (exp in 24 h), plus a
    token whose payload was changed after signing (must be refused)."""
    key, pub = os.path.join(d, "jwt-key.pem"), os.path.join(d, "jwt-pub.pem")
    for argv in (["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                  "-out", key],
                 ["openssl", "pkey", "-in", key, "-pubout", "-out", pub]):
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            raise BenchError(f"{' '.join(argv[:2])} failed: {r.stdout.decode(errors='replace')[-200:]}")
    enc = lambda obj: b64url(json.dumps(obj, separators=(",", ":")).encode())
    now = int(time.time())
    head = enc({"alg": "RS256", "typ": "JWT"})
    body = enc({"sub": "bench", "iat": now, "exp": now + 86400})
    r = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=f"{head}.{body}".encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0 or len(r.stdout) != 256:
        raise BenchError(f"openssl dgst -sign failed: {r.stderr.decode(errors='replace')[-200:]}")
    sig = b64url(r.stdout)
    forged = enc({"sub": "mallory", "iat": now, "exp": now + 86400})
    return dict(pub=pub, auth=f"Bearer {head}.{body}.{sig}",
                bad=f"Bearer {head}.{forged}.{sig}", bad_label="tampered token")


def make_basic_credentials(d):
    """A bcrypt (cost 10) hash of a random password: htpasswd -B (apache2-utils)
    or mkpasswd (whois). Python's crypt module cannot be trusted for bcrypt."""
    user, pw = "bench", secrets.token_urlsafe(12)
    h = None
    if shutil.which("htpasswd"):
        r = subprocess.run(["htpasswd", "-nbB", "-C", "10", user, pw], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = r.stdout.decode(errors="replace").strip()
        if r.returncode == 0 and out.startswith(user + ":"):
            h = out.split(":", 1)[1]
    if h is None and shutil.which("mkpasswd"):
        r = subprocess.run(["mkpasswd", "-m", "bcrypt", "-R", "10", pw], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = r.stdout.decode(errors="replace").strip()
        if r.returncode == 0:
            h = out
    if not h or not re.fullmatch(r"\$2[aby]\$10\$[./A-Za-z0-9]{53}", h):
        raise BenchError(f"no bcrypt hash (need htpasswd from apache2-utils, or mkpasswd): {h!r}")
    path = os.path.join(d, "htpasswd")
    with open(path, "w") as f:
        f.write(f"{user}:{h}\n")
    basic = lambda p: "Basic " + base64.b64encode(f"{user}:{p}".encode()).decode()
    return dict(user=user, hash=h, htpasswd=path, auth=basic(pw), bad=basic(pw + "x"),
                bad_label="wrong password")


def make_tls_cert(d):
    """One ECDSA P-256 certificate for every target (HAProxy wants cert and key
    in one file)."""
    cert, key, both = (os.path.join(d, x) for x in ("tls-cert.pem", "tls-key.pem", "tls-both.pem"))
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if r.returncode != 0:
        raise BenchError(f"openssl req failed: {r.stdout.decode(errors='replace')[-200:]}")
    with open(both, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return dict(cert=cert, key=key, both=both)


def to_ms(v, unit):
    v = float(v)
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}.get(unit, float("nan"))


# --------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------

def nginx_common(d, master=True):
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""daemon off;
master_process {'on' if master else 'off'};
worker_processes 1;
worker_rlimit_nofile 16384;
{user}pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 12000; }}
"""


def nginx_temp(d):
    return "\n".join(f"  {k}_temp_path {d}/tmp_{k};" for k in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def backend_conf(d, port, h2port):
    return nginx_common(d) + f"""http {{
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout 300s; keepalive_requests 100000000;
  default_type application/octet-stream;
{nginx_temp(d)}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    listen 127.0.0.1:{h2port} http2 backlog=4096;
    root {d}/www;
    # The mirror module reads the whole request body before the content
    # phase; the static handler then refuses POST (405), which error_page
    # (after finding the file www/post) turns into GET /small: 200 "ok", sent only after the body was received,
    # as a real API would. A bare `return 200` answers early, and
    # nginx-as-proxy then closes every client connection.
    location = /post {{
      client_max_body_size 2m; client_body_buffer_size 2m;
      mirror /_discard; mirror_request_body on;
      error_page 405 =200 /small;
    }}
    location = /_discard {{ internal; return 204; }}
  }}
}}
"""


# What every proxy sets on the upstream request (nginx's spelling; ws_bench uses it too).
NGINX_FORWARDED = """      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Request-Id $request_id;
"""


def nginx_proxy_conf(d, port, backend, h2, master=True, chain=None, cr=None, log=False, tls=None):
    zone, loc, ssl_conf = "", "", ""
    if tls:
        ssl_conf = f"""    ssl_certificate {tls['cert']};
    ssl_certificate_key {tls['key']};
    ssl_protocols TLSv1.3;
"""
    if chain == "basic":
        # limit_req runs in nginx's preaccess phase, auth_basic in the access
        # phase after it; both run on every request. The burst is never used up.
        zone = f"  limit_req_zone $binary_remote_addr zone=rl:1m rate={RATE}r/s;\n"
        loc = f"""      auth_basic "bench";
      auth_basic_user_file {cr['htpasswd']};
      limit_req zone=rl burst={RATE} nodelay;
      proxy_set_header Authorization "";
"""
    elif chain is not None:
        raise BenchError(f"nginx has no configuration for the {chain} chain")
    access_log = f"{d}/access.log combined" if log else "off"
    return nginx_common(d, master) + f"""http {{
{zone}  access_log {access_log};
  tcp_nodelay on;
  keepalive_timeout 120s; keepalive_requests 100000000;
  client_max_body_size 0;
{nginx_temp(d)}
  upstream b {{
    server 127.0.0.1:{backend};
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
  }}
  server {{
    listen 127.0.0.1:{port}{' ssl' if tls else ''}{' http2' if h2 else ''} backlog=4096;
{ssl_conf}    location / {{
      proxy_pass http://b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
{NGINX_FORWARDED}      add_header X-Request-Id $request_id always;
      proxy_request_buffering off;
      proxy_buffering on;
      proxy_buffer_size 16k;
      proxy_buffers 32 16k;
      proxy_max_temp_file_size 0;
{loc}    }}
  }}
}}
"""


def haproxy_chain(chain, cr):
    """(extra top-level sections, frontend lines) for a filter chain: the same
    checks as sluice's filters, in the same order."""
    if chain is None:
        return "", ""
    # A stick-table per source IP counting the request rate, as sluice's
    # rate_limit keeps a bucket per IP; the limit is never reached.
    rate = f"""    stick-table type ip size 100k expire 30s store http_req_rate(1s)
    http-request track-sc0 src
    http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {RATE} }}
"""
    if chain == "jwt":
        # HAProxy 2.6: jwt_verify returns 1 for a valid signature; it checks
        # neither alg nor exp, so both are checked here as sluice's jwt does.
        return "", f"""    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.jwt_alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request set-var(txn.jwt_exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request set-var(txn.now) date
    http-request deny deny_status 401 unless {{ var(txn.jwt_alg) -m str RS256 }} {{ var(txn.bearer),jwt_verify(txn.jwt_alg,"{cr['pub']}") -m int 1 }} {{ var(txn.jwt_exp),sub(txn.now) -m int gt 0 }}
{rate}    http-request set-header X-Bench 1
"""
    if chain == "basic":
        return f"""userlist bench_users
    user {cr['user']} password {cr['hash']}

""", f"""    http-request auth realm bench unless {{ http_auth(bench_users) }}
{rate}    http-request del-header Authorization
"""
    raise BenchError(f"HAProxy has no configuration for the {chain} chain")


def haproxy_conf(port, backend, h2, chain=None, cr=None, tls=None):
    sections, fe = haproxy_chain(chain, cr)
    bind = " proto h2" if h2 else ""
    if tls:
        bind = f" ssl crt {tls['both']} ssl-min-ver TLSv1.3 alpn {'h2,http/1.1' if h2 else 'http/1.1'}"
    return f"""global
    nbthread 1
    maxconn 8000

defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client 120s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 120s

{sections}frontend fe
    bind 127.0.0.1:{port}{bind}
{fe}    option forwardfor
    unique-id-format %{{+X}}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
    unique-id-header X-Request-Id
    http-request set-header X-Forwarded-Proto {'https' if tls else 'http'}
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-response set-header X-Request-Id %[unique-id]
    default_backend be

backend be
    http-reuse always
    server s1 127.0.0.1:{backend}
"""


def sluice_filters(chain, cr):
    rate = {"type": "rate_limit", "rate": RATE, "per": "second", "burst": RATE, "key": "ip"}
    if chain == "jwt":
        return [{"type": "jwt", "algorithms": ["RS256"], "public_key_file": cr["pub"]}, rate,
                {"type": "headers", "request": {"set": {"x-bench": "1"}}}]
    if chain == "basic":
        return [{"type": "basic_auth", "realm": "bench", "users": {cr["user"]: cr["hash"]}}, rate]
    if chain in ("rl_local", "rl_redis"):
        return [dict(rate, store=chain[3:])]
    raise BenchError(f"sluice has no configuration for the {chain} chain")


def sluice_conf(port, backend, h2, chain=None, cr=None, log_path=None, tls=None):
    import json
    lst = {"address": f"127.0.0.1:{port}"}
    if tls:
        lst["tls"] = {"certificates": [{"cert": tls["cert"], "key": tls["key"]}],
                      "protocols": ["h2", "http/1.1"] if h2 else ["http/1.1"],
                      "min_version": "TLSv1.3"}
    elif h2:
        lst["protocols"] = ["h2c", "http/1.1"]
    route = {"match": {"prefix": "/"}, "upstream": "b"}
    if chain is not None:
        route["filters"] = sluice_filters(chain, cr)
    extra = {"redis": {"address": cr["redis"]}} if cr and "redis" in cr else {}
    return json.dumps(dict(extra, **{
        "workers": 1,
        "listen": [lst],
        "access_log": {"path": log_path, "format": "json"} if log_path else {"path": "off"},
        "upstreams": {"b": {"targets": [f"127.0.0.1:{backend}"], "keepalive": 64}},
        "routes": [route],
        "limits": {"idle_timeout_ms": 120000, "drain_timeout_ms": 2000},
    }), indent=1)


# --------------------------------------------------------------------------
# the bench
# --------------------------------------------------------------------------

class Bench:
    def __init__(self, a):
        self.a = a
        self.tmp = tempfile.mkdtemp(prefix="sluice-bench-")
        self.out = a.out
        os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)
        self.cell_no = 0
        self.raw = []        # per-cell rows
        self.instr = {}      # (wl, target) -> value or error string
        self.instr_rows = []  # the I refs behind each instr/req (instr.csv)
        self.sysc = {}
        self.idle = {}       # target -> dict
        self.idle_h2 = {}    # the same over h2c (prior knowledge)
        self.notes = []      # failures worth reporting
        self.pcpu = str(a.proxy_cpu)
        self.lcpu = str(a.load_cpu)
        self.h2_sluice = None
        self.wl_defs = WL
        self.creds = {}      # chain -> credentials (make_*_credentials)
        self.cred_err = {}   # chain -> why there are none
        self.chain_ok = {}   # chain -> (status, reason) from sluice -t, or None when accepted
        self.enforce = {}    # (workload, target) -> what the probes without valid credentials got
        self.skipped = []    # (workload label, target, reason) of the n/a cells
        self.tls, self.tls_err = None, "no certificate"  # make_tls_cert() for the TLS workloads

    # ---- backend
    def start_backend(self):
        d = os.path.join(self.tmp, "backend")
        os.makedirs(os.path.join(d, "www"))
        for name, size in (("small", 2), ("post", 2), ("16k", 16384), ("1m", 1048576)):
            with open(os.path.join(d, "www", name), "wb") as f:
                f.write(b"ok" if size == 2 else (b"0123456789abcdef" * (size // 16)))
        with open(os.path.join(self.tmp, "post.bin"), "wb") as f:
            f.write(b"a" * 1048576)
        self.bport, self.bh2port = free_port(), free_port()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(backend_conf(d, self.bport, self.bh2port))
        self.backend = Proc("backend-nginx", [self.a.nginx, "-e", f"{d}/error.log", "-p", d, "-c", conf],
                            os.path.join(self.out, "logs", "backend.log"), self.lcpu)
        wait_port(self.bport, self.backend)
        wait_port(self.bh2port, self.backend)
        for wl in WORKLOADS[:4]:
            probe(self.bport, wl)
        log(f"backend nginx pid {self.backend.pid} on 127.0.0.1:{self.bport} (h2c :{self.bh2port}), CPU {self.lcpu}")

    # ---- targets
    # ---- filter chains
    def prepare_chains(self, wls):
        """Make the credentials every chain workload of this run needs."""
        d = os.path.join(self.tmp, "chains")
        os.makedirs(d, exist_ok=True)
        for wl in wls:
            chain = wl.get("chain")
            if chain is None or chain in self.creds or chain in self.cred_err:
                continue
            if chain == "rl_redis":
                self.creds[chain] = self.start_redis()
                continue
            if not CHAINS[chain].get("auth", True):
                self.creds[chain] = {}
                continue
            try:
                self.creds[chain] = (make_jwt_credentials if chain == "jwt" else make_basic_credentials)(d)
                log(f"{chain} chain: credentials ready")
            except (BenchError, OSError, subprocess.SubprocessError) as e:
                self.cred_err[chain] = f"no credentials: {e}"
                log(f"{chain} chain: {self.cred_err[chain]}")

    def start_redis(self):
        """A redis-server without persistence on the load CPU, stopped by PID at exit."""
        d = os.path.join(self.tmp, "redis")
        os.makedirs(d, exist_ok=True)
        port = free_port()
        p = Proc("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", d],
                 os.path.join(self.out, "logs", "redis.log"), self.lcpu)
        wait_port(port, p)
        log(f"redis-server pid {p.pid} on 127.0.0.1:{port}, CPU {self.lcpu}")
        return {"redis": f"127.0.0.1:{port}"}

    def sluice_chain(self, chain):
        """None if this sluice binary accepts the chain's configuration (sluice -t),
        else (status, reason): n/a while a filter type is not in this version."""
        if chain not in self.chain_ok:
            conf = os.path.join(self.tmp, f"sluice-{chain}-check.json")
            with open(conf, "w") as f:
                f.write(sluice_conf(free_port(), self.bport, False, chain, self.creds[chain]))
            rc, out = run([self.a.sluice, "-t", "-c", conf], 15, self.lcpu)
            last = out.strip().splitlines()[-1] if out.strip() else f"exit {rc}"
            last = last.replace(conf + ": ", "")
            if rc == 0:
                self.chain_ok[chain] = None
            elif "not available in this version" in out:
                self.chain_ok[chain] = ("n/a", f"this sluice binary lacks a filter of the chain ({last})")
            else:
                self.chain_ok[chain] = ("error", f"sluice -t refuses the chain's configuration: {last}")
            if rc != 0:
                log(f"{chain} chain: {self.chain_ok[chain][1]}")
        return self.chain_ok[chain]

    def skip(self, wl, target, counting=False):
        """None when the cell can run, else (status, reason)."""
        if wl["proto"] == "h2" and target == "sluice" and not self.sluice_h2_supported():
            return ("n/a", "sluice has no HTTP/2 (h2c) listener yet")
        if wl.get("log") and target in NO_LOG:
            return ("n/a", NO_LOG[target])
        if wl.get("tls"):
            if target == "direct":
                return ("n/a", "the backend has no TLS listener")
            if self.tls is None:
                return ("error", self.tls_err)
            if counting and wl["id"] in UNCOUNTED:
                return ("n/a", UNCOUNTED[wl["id"]])
            return None
        chain = wl.get("chain")
        if chain is None:
            return None
        if target == "direct":
            return ("n/a", "the backend alone runs no filter chain")
        if target in CHAINS[chain]["no"]:
            return ("n/a", CHAINS[chain]["no"][target])
        if chain in self.cred_err:
            return ("error", self.cred_err[chain])
        if counting and wl["id"] in UNCOUNTED:
            return ("n/a", UNCOUNTED[wl["id"]])
        if target == "sluice":
            return self.sluice_chain(chain)
        return None

    def auth_headers(self, wl, which="auth"):
        chain = wl.get("chain")
        return {"Authorization": self.creds[chain][which]} if chain and CHAINS[chain].get("auth", True) else {}

    def enforce_probe(self, port, wl, target):
        """Before measuring: no credentials and bad credentials must get 401,
        the bench's credentials 200. A target that lets a request through
        without valid credentials is a setup error, not a result."""
        if not CHAINS[wl["chain"]].get("auth", True):
            return
        cr = self.creds[wl["chain"]]
        got = []
        for label, hdrs in (("no credentials", {}), (cr["bad_label"], self.auth_headers(wl, "bad"))):
            st, _ = probe_status(port, wl["path"], hdrs)
            got.append(f"{label}: {st}")
            if st != 401:
                self.enforce[(wl["id"], target)] = "; ".join(got) + " (NOT ENFORCED)"
                raise BenchError(f"setup error: {target} answered {st} to a request with {label} "
                                 f"(expected 401): the chain is not enforced")
        st, h = probe_status(port, wl["path"], self.auth_headers(wl))
        extra = ""
        if "ratelimit-limit" in h:
            extra = f" (RateLimit-Limit: {h['ratelimit-limit']})"
        got.append(f"valid: {st}{extra}")
        self.enforce[(wl["id"], target)] = "; ".join(got)

    def start_target(self, target, h2=False, valgrind=None, tag="", chain=None, log=False, tls=False):
        """Start a fresh proxy; return (Proc or None, port). direct -> backend."""
        tls = self.tls if tls else None
        if target == "direct":
            return None, (self.bh2port if h2 else self.bport)
        cr = self.creds.get(chain)
        self.cell_no += 1
        d = os.path.join(self.tmp, f"{target}-{self.cell_no}")
        os.makedirs(d)
        port = free_port()
        lg = os.path.join(self.out, "logs", f"{self.cell_no:03d}-{target}{tag}.log")
        pre = []
        if valgrind:
            pre = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                   "--cachegrind-out-file=/dev/null", f"--log-file={valgrind}"]
        if target == "nginx":
            conf = os.path.join(d, "nginx.conf")
            with open(conf, "w") as f:
                f.write(nginx_proxy_conf(d, port, self.bport, h2, master=not valgrind, chain=chain, cr=cr,
                                         log=log, tls=tls))
            argv = [self.a.nginx, "-e", f"{d}/error.log", "-p", d, "-c", conf]
        elif target == "haproxy":
            conf = os.path.join(d, "haproxy.cfg")
            with open(conf, "w") as f:
                f.write(haproxy_conf(port, self.bport, h2, chain, cr, tls))
            argv = [self.a.haproxy, "-db", "-f", conf]
        elif target == "sluice":
            conf = os.path.join(d, "sluice.json")
            with open(conf, "w") as f:
                f.write(sluice_conf(port, self.bport, h2, chain, cr,
                                    os.path.join(d, "access.log") if log else None, tls))
            argv = [self.a.sluice, "-c", conf]
        else:
            raise ValueError(target)
        p = Proc(target, pre + argv, lg, self.pcpu)
        try:
            wait_port(port, p, timeout=60 if valgrind else 15)
        except BaseException:
            p.stop(timeout=5)
            raise
        return p, port

    def stop_target(self, p, timeout=10):
        if p is None:
            return None
        rc = p.stop(timeout=timeout)
        return rc

    def sluice_h2_supported(self):
        if self.h2_sluice is None:
            conf = os.path.join(self.tmp, "sluice-h2-check.json")
            with open(conf, "w") as f:
                f.write(sluice_conf(free_port(), self.bport, True))
            rc, out = run([self.a.sluice, "-t", "-c", conf], 15, self.lcpu)
            self.h2_sluice = (rc == 0, out.strip().splitlines()[-1] if out.strip() else "")
            if rc != 0:
                log(f"sluice rejects an h2c listener ({self.h2_sluice[1]}): HTTP/2 row is n/a")
        return self.h2_sluice[0]

    def countable(self, wl, target):
        """None when the fixed-count cells (instructions, syscalls) can run, else
        the status to show: sluice on HTTP/2 without an h2c listener, a chain
        a target cannot run, the uncounted basic-auth chain."""
        sk = self.skip(wl, target, counting=True)
        return None if sk is None else sk[0]

    def note_skip(self, wl, target, reason):
        if (wl["label"], target, reason) not in self.skipped:
            self.skipped.append((wl["label"], target, reason))

    # ---- one throughput cell
    def cell(self, rnd, wl, target):
        row = dict(round=rnd, workload=wl["id"], target=target, status="ok", rps="", p50_ms="",
                   p99_ms="", requests="", cpu_pct="", cpu_us_per_req="", kernel_pct="",
                   detail="")
        sk = self.skip(wl, target)
        if sk is not None:
            row.update(status=sk[0], detail=sk[1])
            if sk[0] == "n/a":
                self.note_skip(wl, target, sk[1])
            else:
                self.notes.append(f"{target} / {wl['label']} / round {rnd}: {sk[1]}")
            return row
        p = None
        tag = f"-{wl['id']}-r{rnd}"
        try:
            p, port = self.start_target(target, h2=wl["proto"] == "h2", tag=tag, chain=wl.get("chain"),
                                        log=wl.get("log", False), tls=wl.get("tls"))
            pids = p.tree() if p else self.backend.tree()
            raw = os.path.join(self.out, "logs", f"{target}{tag}")
            if wl.get("chain"):
                self.enforce_probe(port, wl, target)
            if wl.get("handshake"):
                probe(port, wl)
                res = self.s_time(port, wl, pids, raw)
            elif wl["proto"] == "h1":
                probe(port, wl, headers=self.auth_headers(wl))
                res = self.wrk(port, wl, pids, raw)
            else:
                res = self.h2load(port, wl, pids, raw)
            if p is not None and not p.alive():
                raise BenchError(f"{target} died during the run: {tail(p.logpath)}")
            row.update(res)
        except BenchError as e:
            row.update(status="error", detail=str(e))
            self.notes.append(f"{target} / {wl['label']} / round {rnd}: {e}")
            log(f"  ERROR {target} {wl['id']}: {e}")
        finally:
            self.stop_target(p)
        return row

    def url(self, port, wl):
        return f"{'https' if wl.get('tls') else 'http'}://127.0.0.1:{port}{wl['path']}"

    def wrk(self, port, wl, pids, raw):
        a = self.a
        url = self.url(port, wl)
        base = ["wrk", "-t1", f"-c{wl['conns']}", "--timeout", "5s"]
        for k, v in self.auth_headers(wl).items():
            base += ["-H", f"{k}: {v}"]
        if wl["method"] == "POST":
            base += ["-s", os.path.join(LIB, "post1m.lua")]
        run(base + [f"-d{a.warmup}s", url], a.warmup + 15, self.lcpu, raw + "-warmup.txt")
        t0, c0 = time.monotonic(), cpu_split(pids)
        rc, out = run(base + [f"-d{a.duration}s", "--latency", url], a.duration + 20,
                      self.lcpu, raw + ".txt")
        t1, c1 = time.monotonic(), cpu_split(pids)
        if rc != 0:
            raise BenchError(f"wrk exited {rc}: {out.strip()[-300:]}")
        m = re.search(r"(\d+) requests in", out)
        rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
        if not m or not rps:
            raise BenchError(f"cannot parse wrk output: {out.strip()[-300:]}")
        n = int(m.group(1))
        lat = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+\w+)", out, re.M))
        def ms(k):
            mm = re.match(r"([\d.]+)(\w+)", lat.get(k, ""))
            return round(to_ms(*mm.groups()), 3) if mm else ""
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        nerr = sum(int(x) for x in errs.groups()) if errs else 0
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        nbad = int(bad.group(1)) if bad else 0
        if n == 0 or nbad > 0 or nerr > max(10, n // 100):
            raise BenchError(f"{n} requests, {nbad} non-2xx/3xx, socket errors "
                             f"{errs.group(0) if errs else 0} (see {os.path.basename(raw)}.txt)")
        return dict(rps=round(float(rps.group(1)), 1), p50_ms=ms("50"), p99_ms=ms("99"),
                    requests=n, **cpu_cell(c0, c1, t1 - t0, n))

    def s_time(self, port, wl, pids, raw):
        """TLS 1.3 handshakes: TLS_CLIENTS `openssl s_time` processes at once,
        each connecting one connection after the other, each connection with
        one GET (HTTP/1.0, so the proxy closes): `-new` (full handshakes) or
        `-reuse` (resumed with the ticket of its first connection). s_time
        prints `*` for a full handshake and `r` for a resumed one; a resumed
        cell fails if fewer than 99 % were resumed, a full one if any was.
        s_time sends "GET <www> HTTP/1.0" and no Host: the -www text carries
        a Host field (and a dummy field for s_time's own " HTTP/1.0"), so each
        target answers the backend's 200 and keeps its upstream connection
        (without Host the backend answers 400 and closes it); a probe checks
        the 200 first."""
        a = self.a
        www = f"{wl['path']} HTTP/1.0\r\nHost: localhost\r\nX-Bench:"
        base = ["taskset", "-c", self.lcpu, "openssl", "s_time", "-connect", f"127.0.0.1:{port}",
                "-tls1_3", "-www", www, f"-{wl['handshake']}"]
        probe_req = f"GET {www} HTTP/1.0\r\n\r\n".encode()
        try:
            pr = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                                 "-quiet", "-ign_eof"], input=probe_req, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, timeout=15)
            head = pr.stdout.split(b"\r\n", 1)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            head = "no answer in 15 s"
        with open(raw + "-probe.txt", "w") as f:
            f.write(head + "\n")
        if not head.startswith("HTTP/1.1 200") and not head.startswith("HTTP/1.0 200"):
            raise BenchError(f"s_time probe: {head!r}, not 200")

        def clients(secs, name):
            outs = [raw + f"{name}-{i}.txt" for i in range(TLS_CLIENTS)]
            procs = []
            for o in outs:
                with open(o, "w") as f:
                    procs.append(subprocess.Popen(base + ["-time", str(secs)], stdout=f,
                                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            try:
                rcs = [pr.wait(secs + 20) for pr in procs]
            except subprocess.TimeoutExpired:
                raise BenchError("openssl s_time did not finish in time")
            finally:
                for pr in procs:
                    if pr.poll() is None:
                        pr.kill()
                        pr.wait(10)
            return rcs, [open(o, errors="replace").read() for o in outs]

        clients(a.warmup, "-warmup")
        t0, c0 = time.monotonic(), cpu_split(pids)
        rcs, outs = clients(a.duration, "")
        t1, c1 = time.monotonic(), cpu_split(pids)
        n = full = resumed = 0
        for rc, out in zip(rcs, outs):
            m = re.search(r"(\d+) connections in [\d.]+s;", out)
            by = re.search(r"(\d+) bytes read per connection", out)
            if rc != 0 or not m or not by or int(by.group(1)) == 0:
                raise BenchError(f"openssl s_time exited {rc}: {out.strip()[-300:]}")
            n += int(m.group(1))
            marks = "".join(re.findall(r"^[*r]+$", out.split("Now timing with session id reuse.")[-1], re.M))
            full, resumed = full + marks.count("*"), resumed + marks.count("r")
        if n == 0:
            raise BenchError("s_time: no connections")
        if wl["handshake"] == "reuse" and resumed < 0.99 * (full + resumed):
            raise BenchError(f"s_time -reuse: only {resumed} of {full + resumed} handshakes resumed")
        if wl["handshake"] == "new" and resumed:
            raise BenchError(f"s_time -new: {resumed} handshakes were resumed")
        return dict(rps=round(n / (t1 - t0), 1), requests=n, **cpu_cell(c0, c1, t1 - t0, n))

    def h2load(self, port, wl, pids, raw):
        a = self.a
        url = self.url(port, wl)
        base = ["h2load", "-t1", f"-c{wl['conns']}", f"-m{wl['streams']}"]
        rc, out = run(["h2load", "-n10", "-c1", url], 15, self.lcpu, raw + "-probe.txt")
        if not re.search(r"requests: 10 total, 10 started, 10 done, 10 succeeded", out):
            raise BenchError(f"h2 probe failed: {out.strip()[-300:]}")
        run(base + [f"-D{a.warmup}", url], a.warmup + 15, self.lcpu, raw + "-warmup.txt")
        logf = raw + "-requests.tsv"
        t0, c0 = time.monotonic(), cpu_split(pids)
        rc, out = run(base + [f"-D{a.duration}", f"--log-file={logf}", url], a.duration + 20,
                      self.lcpu, raw + ".txt")
        t1, c1 = time.monotonic(), cpu_split(pids)
        fin = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
        req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                        r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
        st = re.search(r"status codes: (\d+) 2xx", out)
        if rc != 0 or not fin or not req:
            raise BenchError(f"h2load exited {rc}: {out.strip()[-300:]}")
        done, ok = int(req.group(3)), int(req.group(4))
        if done == 0 or ok < done or (st and int(st.group(1)) < ok):
            raise BenchError(f"h2load: {req.group(0)}; {st.group(0) if st else ''}")
        durs = []
        try:
            with open(logf) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] == "200":
                        durs.append(int(parts[2]))
            os.unlink(logf)  # large, and summarised below
        except (OSError, ValueError):
            pass
        durs.sort()
        pct = lambda q: round(durs[min(len(durs) - 1, int(q * len(durs)))] / 1000, 3) if durs else ""
        return dict(rps=round(float(fin.group(3)), 1), p50_ms=pct(0.50), p99_ms=pct(0.99),
                    requests=done, **cpu_cell(c0, c1, t1 - t0, done))

    # ---- fixed-count cells
    def load_fixed(self, port, wl, n, raw, timeout):
        """Exactly n requests: HTTP/1.1 keep-alive (h2load --h1 -c10) for the h1
        workloads; h2c with prior knowledge and the workload's own -c/-m
        (h2load -c10 -m5) for the HTTP/2 one. TLS 1.3 for the TLS workloads."""
        url = self.url(port, wl)
        if wl["proto"] == "h2":
            argv = ["h2load", "-t1", f"-n{n}", f"-c{min(wl['conns'], n)}", f"-m{wl['streams']}"]
        else:
            argv = ["h2load", "--h1", "-t1", f"-n{n}", f"-c{min(10, n)}"]
        if wl["method"] == "POST":
            argv += ["-d", os.path.join(self.tmp, "post.bin")]
        for k, v in self.auth_headers(wl).items():
            argv += ["-H", f"{k}: {v}"]
        rc, out = run(argv + [url], timeout, self.lcpu, raw)
        req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", out)
        st = re.search(r"status codes: (\d+) 2xx", out)
        alpn = ("h2" if wl.get("tls") else "h2c") if wl["proto"] == "h2" else "http/1.1"
        proto_ok = ((wl["proto"] != "h2" and not wl.get("tls")) or f"Application protocol: {alpn}\n" in out) \
            and (not wl.get("tls") or "TLS Protocol: TLSv1.3" in out)
        if rc != 0 or not req or int(req.group(4)) != n or not st or int(st.group(1)) != n or not proto_ok:
            what = f"h2load h2c -c{wl['conns']} -m{wl['streams']}" if wl["proto"] == "h2" else "h2load --h1"
            raise BenchError(f"{what} -n{n}: exit {rc}: "
                             + ("" if proto_ok else f"not {alpn}{' over TLS 1.3' if wl.get('tls') else ''}; ")
                             + (req.group(0) if req else out.strip()[-200:])
                             + (f"; {st.group(0)}" if st else ""))

    def instructions(self, wl, target):
        n_full, n_base = INSTR_COUNTS[wl["id"]]
        h2 = wl["proto"] == "h2"
        if self.a.quick:
            n_full, n_base = n_full // 2, n_base // 2
        irefs = {}
        # --instr-zero: also a run with no request at all, the other common
        # subtraction, to check the yardstick (see bench/README.md)
        for n in (n_base, n_full) + ((0,) if self.a.instr_zero else ()):
            tag = f"-instr-{wl['id']}-n{n}"
            vlog = os.path.join(self.out, "logs", f"{target}{tag}.valgrind.txt")
            if os.path.exists(vlog):
                os.unlink(vlog)
            p, port = self.start_target(target, h2=h2, valgrind=vlog, tag=tag, chain=wl.get("chain"),
                                        log=wl.get("log", False), tls=wl.get("tls"))
            try:
                if n:
                    self.load_fixed(port, wl, n, os.path.join(self.out, "logs", f"{target}{tag}.h2load.txt"),
                                    timeout=300)
            finally:
                rc = self.stop_target(p, timeout=60)
            try:
                with open(vlog) as f:
                    m = re.search(r"I\s+refs:\s+([\d,]+)", f.read())
            except OSError:
                m = None
            if not m:
                raise BenchError(f"no cachegrind summary (exit {rc}; see {os.path.basename(vlog)}): "
                                 f"{tail(vlog)}")
            irefs[n] = int(m.group(1).replace(",", ""))
        per_req = round((irefs[n_full] - irefs[n_base]) / (n_full - n_base))
        row = dict(workload=wl["id"], target=target, n=n_full, n_base=n_base, irefs_n=irefs[n_full],
                   irefs_base=irefs[n_base], instr_per_req=per_req, irefs_zero="", zero_per_req="")
        if 0 in irefs:
            row.update(irefs_zero=irefs[0], zero_per_req=round((irefs[n_full] - irefs[0]) / n_full))
            log(f"  {wl['id']:8} {target:8} (I(N) - I(0)) / N = {row['zero_per_req']}")
        self.instr_rows.append(row)
        return per_req

    def syscalls(self, wl, target):
        n = SYSCALL_COUNTS[wl["id"]]
        if self.a.quick:
            n //= 2
        tag = f"-sys-{wl['id']}"
        logs = os.path.join(self.out, "logs")
        p, port = self.start_target(target, h2=wl["proto"] == "h2", tag=tag, chain=wl.get("chain"),
                                    log=wl.get("log", False), tls=wl.get("tls"))
        tracer = None
        try:
            # warm the upstream pool first, then attach to the process tree
            self.load_fixed(port, wl, 200 if n >= 10000 else 20, os.path.join(logs, f"{target}{tag}-warm.txt"), 60)
            pids = ",".join(str(x) for x in p.tree())
            out = os.path.join(logs, f"{target}{tag}.trace.txt")
            if self.a.syscall_tool == "perf":
                argv = ["perf", "trace", "-s", "-o", out, "-p", pids]
            else:
                argv = ["strace", "-c", "-f", "-o", out]
                for x in pids.split(","):
                    argv += ["-p", x]
            tracer = Proc("tracer", argv, os.path.join(logs, f"{target}{tag}.tracer.log"), self.lcpu)
            time.sleep(1.5)  # attach
            if not tracer.alive():
                raise BenchError(f"{argv[0]} exited: {tail(tracer.logpath)}")
            self.load_fixed(port, wl, n, os.path.join(logs, f"{target}{tag}.h2load.txt"), 120)
            time.sleep(0.2)
            tracer.stop(sig=signal.SIGINT, timeout=30)
            tracer = None
            total = 0
            with open(out) as f:
                for line in f:
                    if self.a.syscall_tool == "perf":
                        mm = re.match(r"^\s+([a-z_0-9]+)\s+(\d+)\s+(\d+)\s+[\d.]+\s", line)
                        if mm:
                            total += int(mm.group(2))
                    else:
                        if line.rstrip().endswith(" total"):
                            nums = line.split()[:-1]
                            total = int(nums[3])
            if total == 0:
                raise BenchError(f"no syscalls parsed from {os.path.basename(out)}")
            return round(total / n, 2)
        finally:
            if tracer is not None:
                tracer.stop(sig=signal.SIGINT, timeout=10)
            self.stop_target(p)

    def idle_conns(self, target, h2=False):
        """RSS per idle keep-alive connection: HTTP/1.1, or h2c with prior knowledge (h2)."""
        p = None
        wl = WL["h2small" if h2 else "small"]
        skip = self.countable(wl, target)
        if skip:
            return dict(error=skip)
        try:
            p, port = self.start_target(target, h2=h2, tag="-idle-h2" if h2 else "-idle")
            if h2:
                asyncio.run(probe_h2(port))
            else:
                probe(port, wl)
            pids = p.tree() if p else self.backend.tree()
            time.sleep(0.3)
            opened, ok, err, before, after, alive = asyncio.run(
                idle_session(port, self.a.idle_conns, pids, p, h2))
            if not alive:
                raise BenchError(f"{target} died while holding idle connections: {tail(p.logpath)}")
            res = dict(conns=ok, opened=opened, rss_before_kib=before, rss_after_kib=after,
                       kib_per_conn=round((after - before) / ok, 2) if ok else "")
            if ok < self.a.idle_conns:
                res["error"] = f"only {ok}/{self.a.idle_conns} connections answered ({err})"
                self.notes.append(f"{target} / idle connections{' (h2)' if h2 else ''}: {res['error']}")
            return res
        except BenchError as e:
            self.notes.append(f"{target} / idle connections{' (h2)' if h2 else ''}: {e}")
            return dict(error=str(e))
        finally:
            self.stop_target(p)

    # ---- orchestration
    def main(self):
        a = self.a
        t_start = time.monotonic()
        self.start_backend()
        targets, wls = a.targets, [WL[w] for w in a.workloads]
        self.prepare_chains(wls)
        if any(wl.get("tls") for wl in wls):
            try:
                self.tls = make_tls_cert(self.tmp)
                log("TLS: ECDSA P-256 certificate ready")
            except (BenchError, OSError, subprocess.SubprocessError) as e:
                self.tls_err = f"no certificate: {e}"
        log(f"throughput: {a.rounds} round(s) x {len(wls)} workloads x {len(targets)} targets, "
            f"{a.duration}s each (+{a.warmup}s warm-up)")
        for rnd in range(1, a.rounds + 1):
            for wl in wls:
                order = targets[rnd - 1:] + targets[:rnd - 1] if targets else []
                for target in order:
                    row = self.cell(rnd, wl, target)
                    self.raw.append(row)
                    if row["status"] == "ok":
                        log(f"r{rnd} {wl['id']:8} {target:8} {row['rps']:>10} req/s  p50 {row['p50_ms']} ms"
                            f"  p99 {row['p99_ms']} ms  cpu {row['cpu_pct']}%")
                    else:
                        log(f"r{rnd} {wl['id']:8} {target:8} {row['status']}")
        if not a.no_instr:
            log("instructions per request (cachegrind, fixed request count, baseline subtracted)")
            for wl in wls:
                for target in [t for t in targets if t != "direct"]:
                    try:
                        v = self.countable(wl, target) or self.instructions(wl, target)
                    except BenchError as e:
                        v = "error"
                        self.notes.append(f"{target} / instructions / {wl['label']}: {e}")
                    self.instr[(wl["id"], target)] = v
                    log(f"  {wl['id']:8} {target:8} {v} instr/req")
            if self.instr_rows:
                with open(os.path.join(self.out, "instr.csv"), "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(self.instr_rows[0]))
                    w.writeheader()
                    w.writerows(self.instr_rows)
        if not a.no_syscalls:
            log(f"syscalls per request ({a.syscall_tool}, fixed request count)")
            for wl in wls:
                for target in [t for t in targets if t != "direct"]:
                    try:
                        v = self.countable(wl, target) or self.syscalls(wl, target)
                    except BenchError as e:
                        v = "error"
                        self.notes.append(f"{target} / syscalls / {wl['label']}: {e}")
                    self.sysc[(wl["id"], target)] = v
                    log(f"  {wl['id']:8} {target:8} {v} syscalls/req")
        if not a.no_idle:
            log(f"{a.idle_conns} idle keep-alive connections")
            for h2 in (False, True):
                for target in targets:
                    r = self.idle_conns(target, h2)
                    (self.idle_h2 if h2 else self.idle)[target] = r
                    log(f"  {'h2' if h2 else 'h1'} {target:8} {r.get('kib_per_conn', 'error')} KiB/conn "
                        f"{r.get('error', '')}")
        if a.ws_workloads:
            log(f"WebSocket: {', '.join(a.ws_workloads)}")
            ws_bench.run(self, sys.modules[__name__], a.ws_workloads)
        self.elapsed = time.monotonic() - t_start
        self.report()

    def report(self):
        import report
        report.write(self)


# --------------------------------------------------------------------------
# idle connections (asyncio, in the harness process pinned to the load CPU)
# --------------------------------------------------------------------------

IDLE = []


async def idle_h1(r, w):
    """One keep-alive GET /small over HTTP/1.1; True when answered 200 with its body."""
    w.write(b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: sluice-bench-idle\r\n\r\n")
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if not head.startswith(b"HTTP/1.1 200") or not m:
        return False
    await asyncio.wait_for(r.readexactly(int(m.group(1))), 10)
    return True


def h2_frame(ftype, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


# The h2c client of the idle cell, frames by hand: the preface, an empty
# SETTINGS, and GET /small on stream 1 (HPACK: static :method GET, :scheme
# http, then :path and :authority as literals with indexed names, no Huffman).
H2_IDLE_REQ = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0) +
               h2_frame(1, 0x5, 1, b"\x82\x86\x04\x06/small\x01\x09127.0.0.1"))


async def idle_h2(r, w):
    """GET /small on stream 1 of a new h2c connection; True when answered
    :status 200 (static index 8, how every server here encodes it) and the
    stream ended. Acknowledges the server's SETTINGS, as a client must."""
    w.write(H2_IDLE_REQ)
    status = None
    while True:
        hdr = await asyncio.wait_for(r.readexactly(9), 10)
        n, ftype, flags = int.from_bytes(hdr[:3], "big"), hdr[3], hdr[4]
        stream = int.from_bytes(hdr[5:9], "big") & 0x7FFFFFFF
        payload = await asyncio.wait_for(r.readexactly(n), 10)
        if ftype == 4 and not flags & 1:
            w.write(h2_frame(4, 1, 0))
        elif ftype == 7 or ftype == 3 and stream == 1:  # GOAWAY, RST_STREAM
            return False
        elif stream == 1 and ftype in (0, 1):
            if ftype == 1:
                block = payload[1 + payload[0]:] if flags & 0x8 else payload  # PADDED
                block = block[5:] if flags & 0x20 else block                   # PRIORITY
                status = block[:1] == b"\x88"
            if flags & 1:  # END_STREAM
                return bool(status)


async def probe_h2(port):
    """One h2c GET /small the idle client's way (BenchError unless answered)."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        try:
            ok = await idle_h2(r, w)
        finally:
            w.close()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
        raise BenchError(f"h2c probe failed: {type(e).__name__} {e}")
    if not ok:
        raise BenchError("h2c probe: no 200 answer on stream 1")


async def open_idle(port, count, h2=False, batch=200):
    errors = {}

    async def one():
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except Exception as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            return 0
        IDLE.append(w)
        try:
            if await (idle_h2(r, w) if h2 else idle_h1(r, w)):
                return 2
            errors["bad response"] = errors.get("bad response", 0) + 1
            return 1
        except Exception as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            return 1

    results = []
    for i in range(0, count, batch):
        results += await asyncio.gather(*(one() for _ in range(min(batch, count - i))))
    return sum(1 for x in results if x >= 1), sum(1 for x in results if x == 2), errors


async def idle_session(port, count, pids, proc, h2=False):
    """RSS of `pids` before, and 1 s after, `count` connections that each
    made one request are open; then close them all."""
    before = rss_kib(pids)
    try:
        opened, ok, err = await open_idle(port, count, h2)
        await asyncio.sleep(1.0)
        after = rss_kib(pids)
        alive = proc.alive() if proc else True
    finally:
        for w in IDLE:
            w.close()
        IDLE.clear()
        await asyncio.sleep(0.2)
    return opened, ok, err, before, after, alive


# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="compare.sh", description="sluice vs nginx vs HAProxy benchmark")
    ap.add_argument("--quick", action="store_true", help="one round, 3 s cells, halved fixed counts")
    ap.add_argument("--rounds", type=int, help="rounds per cell (median taken); default 3")
    ap.add_argument("--duration", type=int, help="seconds per measured cell; default 5 (3 with --quick)")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per cell (not measured)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--workloads", default=",".join([w["id"] for w in WORKLOADS] + ws_bench.IDS))
    ap.add_argument("--idle-conns", type=int, default=5000)
    ap.add_argument("--no-instr", action="store_true", help="skip the cachegrind cells")
    ap.add_argument("--instr-zero", action="store_true",
                    help="cachegrind cells: also run with 0 requests; log (I(N)-I(0))/N as a check")
    ap.add_argument("--no-syscalls", action="store_true", help="skip the syscall-count cells")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle-connection cells")
    ap.add_argument("--syscall-tool", choices=["perf", "strace"], default=None)
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--max-seconds", type=int, default=2400, help="hard limit for the whole run")
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    ap.add_argument("--out", default=None, help="results directory (default bench/results/run-DATE)")
    a = ap.parse_args(argv)
    if a.rounds is None:
        a.rounds = 1 if a.quick else 3
    if a.duration is None:
        a.duration = 3 if a.quick else 5
    a.targets = [t for t in a.targets.split(",") if t]
    a.workloads = [w for w in a.workloads.split(",") if w]
    a.ws_workloads = ws_bench.wanted(a.workloads)  # run by ws_bench, not by the loops here
    a.workloads = [w for w in a.workloads if w not in a.ws_workloads]
    for t in a.targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t} (known: {', '.join(TARGETS)})")
    for w in a.workloads:
        if w not in WL:
            ap.error(f"unknown workload {w} (known: {', '.join(list(WL) + ws_bench.IDS)})")
    if not a.out:
        a.out = os.path.join(BENCH_DIR, "results", "run-" + time.strftime("%Y%m%d-%H%M%S"))
    if a.syscall_tool is None:
        ok = subprocess.run(["perf", "trace", "-s", "true"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=30).returncode == 0 \
            if shutil.which("perf") else False
        a.syscall_tool = "perf" if ok else "strace"
    return a


def main(argv):
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(
        SystemExit(f"run exceeded --max-seconds={a.max_seconds}")))
    signal.alarm(a.max_seconds)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < a.idle_conns + 1000:
        log(f"warning: open-files limit {want} < {a.idle_conns + 1000}; idle cells may fail")
    ncpu = os.cpu_count() or 1
    if ncpu < 2:
        log("warning: one CPU only: proxy and load generator share it")
        a.proxy_cpu = a.load_cpu = 0
    os.sched_setaffinity(0, {a.load_cpu})
    sys.path.insert(0, LIB)
    b = Bench(a)
    log(f"results -> {a.out}; temp dir {b.tmp}")
    try:
        b.main()
    except BenchError as e:
        log(f"error: {e}")
        return 1
    finally:
        cleanup()
        shutil.rmtree(b.tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
