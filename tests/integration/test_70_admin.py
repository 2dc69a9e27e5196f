"""SPEC 5 and 7: the admin listener."""
import json
import re
import signal
import threading
import time

from conftest import free_port, request, upstream, wait_until

METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def metrics(port):
    r = request(port, "GET", "/metrics")
    assert r.status == 200
    out = []
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_RE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


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

    def value(name, **labels):
        vals = [v for n, l, v in found if n == name and all(l.get(k) == x for k, x in labels.items())]
        return sum(vals) if vals else None

    assert value("sluice_requests_total", route="hello", code="200") == 3, found
    assert value("sluice_requests_total", route="(none)", code="404") == 1, found


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
