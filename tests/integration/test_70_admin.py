"""SPEC 5 and 7: the admin listener."""
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

from backends.certs import make_ca, make_cert
from conftest import (curl, free_port, metric_value, parse_address, parse_metrics, request,
                      scrape_metrics as metrics, upstream, wait_until)


def admin_config(**extra):
    cfg = {"admin": {"address": f"127.0.0.1:{free_port()}"},
           "redis": {"address": f"127.0.0.1:{free_port()}", "password": "hunter2"},
           "routes": [{"name": "hello", "match": {"path": "/hello"},
                       "respond": {"status": 200, "body": "hi"}}]}
    cfg.update(extra)
    return cfg


def test_healthz_and_ready(sluice):
    s = sluice(admin_config())
    _, port = s.admin
    r = request(port, "GET", "/healthz")
    assert r.status == 200 and r.body.strip() == b"ok"
    assert request(port, "GET", "/ready").status == 200


def test_config_redacts_secrets(sluice):
    s = sluice(admin_config())
    _, port = s.admin
    r = request(port, "GET", "/config")
    assert r.status == 200
    assert "application/json" in (r.header("content-type") or "")
    data = json.loads(r.body)
    assert data["redis"]["password"] == "***"
    assert data["redis"]["address"] == s.config["redis"]["address"]
    assert data["routes"][0]["name"] == "hello"
    assert b"hunter2" not in r.body


def test_metrics_count_requests(sluice):
    s = sluice(admin_config())
    _, port = s.admin
    for _ in range(3):
        assert s.request("GET", "/hello").status == 200
    assert s.request("GET", "/missing").status == 404
    # The worker counts an exchange just after its last byte went out: the
    # scrape may come first on a busy machine.
    wait_until(lambda: any(n == "sluice_requests_total" and l.get("code") == "404"
                           for n, l, _ in metrics(port)), 5, what="the 404 counted")
    found = metrics(port)
    assert metric_value(found, "sluice_requests_total", route="hello", code="200") == 3, found
    assert metric_value(found, "sluice_requests_total", route="(none)", code="404") == 1, found


def test_ready_503_while_draining(sluice, backend):
    b = backend("slow")
    s = sluice(admin_config(limits={"drain_timeout_ms": 5000},
                            upstreams={"slow": upstream(b.address)},
                            routes=[{"upstream": "slow"}]))
    _, port = s.admin
    t = threading.Thread(target=lambda: request(s.port, "GET", "/",
                                                headers={"X-Echo-Delay-Ms": "1500"}))
    t.start()
    wait_until(lambda: b.count == 1, 5, what="request at the backend")
    s.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert request(port, "GET", "/ready").status == 503
    assert request(port, "GET", "/healthz").status == 200
    t.join(10)
    assert s.wait_exit(6) == 0


def promtool_verdict(text: str):
    """(exit code, output) of Debian's `promtool check metrics` on a scrape."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/deps installs the prometheus package"
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=60)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def test_metrics_after_real_traffic_pass_promtool(sluice, backend, tmp_path):
    """HTTP/1.1, h2c, a 404, a 502, a failed TLS handshake and a reload, then
    one scrape: promtool finds nothing to say, every family has HELP and
    TYPE, and the values are the traffic's."""
    make_ca(tmp_path, "ca", "Metrics Test CA")
    make_cert(tmp_path, "ca", "api", "/CN=api.test", "DNS:api.test")
    b = backend("b")
    plain = f"127.0.0.1:{free_port()}"
    tls = f"127.0.0.1:{free_port()}"
    gone = f"127.0.0.1:{free_port()}"  # nothing listens: connect refused, target marked down
    s = sluice(admin_config(
        listen=[{"address": plain, "protocols": ["h2c", "http/1.1"]},
                {"address": tls, "tls": {"certificates": [{"cert": str(tmp_path / "api.pem"),
                                                           "key": str(tmp_path / "api.key")}]}}],
        upstreams={"b": upstream(b.address),
                   # A long interval: the passive mark lasts it, so "gone" stays down.
                   "gone": upstream(gone, health_check={"interval_ms": 60000})},
        routes=[{"name": "hello", "match": {"path": "/hello"},
                 "respond": {"status": 200, "body": "hi"}},
                {"name": "api \"v1\"", "match": {"prefix": "/api"}, "upstream": "b"},
                {"name": "down", "match": {"prefix": "/down"}, "upstream": "gone"}]))
    _, port = s.admin
    for _ in range(3):
        assert s.request("GET", "/hello").status == 200
    assert s.request("GET", "/missing").status == 404
    # A reload keeps the counts; the upstream traffic comes after it so the
    # pool gauges see the new configuration's connections.
    s.reload()
    wait_until(lambda: metric_value(metrics(port), "sluice_config_reloads_total", result="ok") == 1,
               10, what="the reload counted")
    for _ in range(2):
        assert s.request("GET", "/api/x").status == 200
    assert s.request("GET", "/down").status == 502
    p = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             f"http://{plain}/api/h2")
    assert p.stdout.decode() == "2 200", (p.stdout, p.stderr)
    # Plain HTTP to the TLS listener: the handshake fails. (The harness's
    # readiness probe, a connect and close, is not counted.)
    with socket.create_connection(parse_address(tls), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            while c.recv(4096):
                pass
        except ConnectionResetError:
            pass

    def counted():
        found = metrics(port)
        return (metric_value(found, "sluice_requests_total", route="api \"v1\"") == 3 and
                metric_value(found, "sluice_tls_handshake_failures_total") == 1)
    wait_until(counted, 10, what="every request and the TLS failure counted")

    text = request(port, "GET", "/metrics").body.decode()
    rc, out = promtool_verdict(text)
    assert rc == 0 and out.strip() == "", f"promtool check metrics: exit {rc}\n{out}\n{text}"

    # Every sample belongs to a family announced with HELP and TYPE.
    helped = set(re.findall(r"^# HELP (\S+) ", text, re.M))
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert helped == set(typed), (helped, typed)
    found = parse_metrics(text)
    for name, _, _ in found:
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        assert family in typed, f"{name} has no # TYPE"

    def value(name, **labels):
        return metric_value(found, name, **labels)

    assert value("sluice_build_info") == 1
    assert [l["version"] for n, l, _ in found if n == "sluice_build_info"][0]
    assert value("sluice_requests_total", route="hello", code="200") == 3
    assert value("sluice_requests_total", route="(none)", code="404") == 1
    assert value("sluice_requests_total", route="api \"v1\"", code="200") == 3  # 2 HTTP/1.1 + 1 h2
    assert value("sluice_requests_total", route="down", code="502") == 1
    assert value("sluice_upstream_requests_total", upstream="b", target=b.address, code="200") == 3
    assert value("sluice_upstream_connect_errors_total", upstream="gone", target=gone) >= 1
    assert value("sluice_upstream_target_healthy", upstream="b", target=b.address) == 1
    assert value("sluice_upstream_target_healthy", upstream="gone", target=gone) == 0
    assert value("sluice_upstream_pool_idle", upstream="b", target=b.address) >= 1
    assert value("sluice_upstream_pool_active", upstream="b", target=b.address) == 0
    assert value("sluice_tls_handshake_failures_total", listener=tls) == 1
    assert value("sluice_config_reloads_total", result="ok") == 1
    assert value("sluice_config_reloads_total", result="error") == 0
    assert value("sluice_access_log_dropped_total") == 0
    assert value("sluice_connections_active", protocol="h2") == 0
    assert value("sluice_websocket_tunnels_active") == 0

    # The histogram: cumulative buckets from 0.5 ms to 30 s, +Inf = count = requests_total.
    buckets = [(l["le"], v) for n, l, v in found
               if n == "sluice_request_duration_seconds_bucket" and l["route"] == "hello"]
    les = [le for le, _ in buckets]
    assert les[0] == "0.0005" and les[-2] == "30" and les[-1] == "+Inf", les
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == 3, buckets
    assert value("sluice_request_duration_seconds_count", route="hello") == 3
    assert value("sluice_request_duration_seconds_sum", route="hello") > 0

    # process_*: this process, now.
    assert abs(value("process_start_time_seconds") - time.time()) < 3600
    assert value("process_resident_memory_bytes") > 1 << 20
    assert value("process_open_fds") > 3
    assert value("process_max_fds") >= value("process_open_fds")
    assert value("process_cpu_seconds_total") > 0
