"""The admin listener's live status page: GET /status.json (shape and values
after known traffic) and GET / (the embedded page) in a real headless
chromium, which must show the routes and a target going down once its
backend stops. The browser test saves a screenshot as an artifact: under
pytest's tmp dir, and also into $SLUICE_ARTIFACTS_DIR when set."""
import json
import os
import shutil
import threading
import time
from pathlib import Path

from browser import Chromium
from conftest import RawConn, free_port, request, run_sluice, upstream, wait_until

HEALTH = {"path": "/healthz", "interval_ms": 300, "timeout_ms": 1000, "unhealthy_after": 1,
          "healthy_after": 1}
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")


def status(admin_port):
    r = request(admin_port, "GET", "/status.json")
    assert r.status == 200, r
    assert (r.header("content-type") or "").startswith("application/json"), r
    return json.loads(r.body)


def route(doc, name):
    found = [r for r in doc["routes"] if r["name"] == name]
    assert len(found) == 1, [r["name"] for r in doc["routes"]]
    return found[0]


def upstream_of(doc, name):
    found = [u for u in doc["upstreams"] if u["name"] == name]
    assert len(found) == 1, [u["name"] for u in doc["upstreams"]]
    return found[0]


def target(doc, upstream_name, address):
    found = [t for t in upstream_of(doc, upstream_name)["targets"] if t["name"] == address]
    assert len(found) == 1, upstream_of(doc, upstream_name)["targets"]
    return found[0]


def proxied(backend):
    """Requests the backend served that were not health checks."""
    with backend.lock:
        return sum(1 for r in backend.requests if r["path"] != HEALTH["path"])


def check_counts(counts, requests, **classes):
    assert counts["requests"] == requests, counts
    assert set(counts["status"]) == set(CLASSES), counts
    for cls in CLASSES:
        assert counts["status"][cls] == classes.get("c" + cls, 0), (cls, counts)


def test_status_json_after_known_traffic(sluice, backend):
    a, b = backend("a"), backend("b")
    s = sluice({"admin": {"address": f"127.0.0.1:{free_port()}"},
                "upstreams": {"app": upstream(a.address, {"address": b.address, "weight": 2},
                                              health_check=HEALTH),
                              "ghost": upstream("unresolvable.invalid:80")},
                "routes": [{"name": "api", "match": {"prefix": "/api", "methods": ["GET"]},
                            "upstream": "app"},
                           {"name": "hello", "match": {"path": "/hello"},
                            "respond": {"status": 200, "body": "hi"}}]})
    _, admin = s.admin
    for _ in range(6):
        assert s.request("GET", "/api/x").status == 200
    for _ in range(2):
        assert s.request("GET", "/api/x", headers={"X-Echo-Status": "503"}).status == 503
    for _ in range(3):
        assert s.request("GET", "/hello").status == 200
    assert s.request("GET", "/missing").status == 404

    # The worker counts an exchange just after its last byte went out.
    doc = wait_until(lambda: (lambda d: d if d["requests"]["total"]["requests"] == 12 else None)(
        status(admin)), 10, what="12 requests counted")

    p = doc["process"]
    version = run_sluice(["-V"], cwd=s.dir).stdout.decode().split("\n")[0].split()[1]
    assert p["version"] == version
    assert p["workers"] == 2 and p["pid"] == s.pid and p["draining"] is False
    assert p["config_generation"] == 1 and p["reloads"] == {"ok": 0, "error": 0}
    assert p["uptime_s"] > 0 and doc["window_s"] > 0
    assert [w["id"] for w in doc["worker_threads"]] == [0, 1]

    assert [r["name"] for r in doc["routes"]] == ["api", "hello", "(none)"]
    api, hello, none = doc["routes"]
    assert api["match"] == "prefix /api" and api["methods"] == ["GET"]
    assert api["action"] == "upstream" and api["upstream"] == "app"
    check_counts(api["total"], 8, c2xx=6, c5xx=2)
    assert api["total"]["latency_ms"]["mean"] > 0
    lat = api["total"]["latency_ms"]
    assert lat["p50"] <= lat["p95"] <= lat["p99"], lat
    assert hello["action"] == "respond" and "upstream" not in hello
    check_counts(hello["total"], 3, c2xx=3)
    assert none["action"] == "none"
    check_counts(none["total"], 1, c4xx=1)
    check_counts(doc["requests"]["total"], 12, c2xx=9, c4xx=1, c5xx=2)
    assert doc["requests"]["rate"] > 0

    app = upstream_of(doc, "app")
    assert app["balance"] == "round_robin" and app["protocol"] == "http/1.1"
    assert app["health_check"]["path"] == "/healthz"
    assert app["targets_up"] == 2 and app["targets_total"] == 2
    check_counts(app["total"], 8, c2xx=6, c5xx=2)
    check_counts(app["routes"]["total"], 8, c2xx=6, c5xx=2)
    for be, weight in ((a, 1), (b, 2)):
        t = target(doc, "app", be.address)
        assert t["configured"] == be.address and t["weight"] == weight
        assert t["state"] == "up" and t["ejected_ms"] == 0
        assert t["total"]["requests"] == proxied(be), (t, proxied(be))
        assert t["connect_errors"] == 0
    assert sum(target(doc, "app", be.address)["total"]["requests"] for be in (a, b)) == 8

    ghost = upstream_of(doc, "ghost")
    assert ghost["health_check"] is None and ghost["targets_total"] == 0
    assert [(t["name"], t["state"]) for t in ghost["targets"]] == [
        ("unresolvable.invalid:80", "unresolved")]

    # Pools: the keep-alive connections to the backends stay idle. Workers publish
    # about once a second, so one may still show a request that has since ended.
    def settled(d):
        app = upstream_of(d, "app")
        return (app["pool"]["idle"] >= 1 and app["pool"]["active"] == 0 and
                app["in_flight"] == 0)

    doc = wait_until(lambda: (lambda d: d if settled(d) else None)(status(admin)), 10,
                     what="idle pooled connections and nothing in flight")
    app = upstream_of(doc, "app")
    assert app["pool"]["open"] == app["pool"]["idle"]
    assert app["pool"]["idle"] == sum(target(doc, "app", be.address)["pool"]["idle"]
                                      for be in (a, b))
    for be in (a, b):
        check = target(doc, "app", be.address)["check"]
        assert check["ok"] is True and check["failures"] == 0 and check["ago_ms"] >= 0

    # Open client connections by protocol.
    with RawConn(s.port) as held:
        held.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held.read_response().status == 200
        wait_until(lambda: status(admin)["connections"]["http1"] >= 1, 10,
                   what="the held connection counted")
        doc = status(admin)
        assert doc["connections"]["total"] >= 1 and doc["websocket_tunnels"] == 0
        wait_until(lambda: sum(w["connections"] for w in status(admin)["worker_threads"]) >= 1,
                   10, what="the held connection published by its worker")

    # A reload shows as a new generation.
    s.reload()
    wait_until(lambda: status(admin)["process"]["config_generation"] == 2, 10,
               what="the reload counted")
    assert status(admin)["process"]["reloads"] == {"ok": 1, "error": 0}


def test_status_marks_a_stopped_target_down(sluice, backend):
    a, b = backend("a"), backend("b")
    s = sluice({"admin": {"address": f"127.0.0.1:{free_port()}"},
                "upstreams": {"app": upstream(a.address, b.address, health_check=HEALTH)},
                "routes": [{"name": "api", "upstream": "app"}]})
    _, admin = s.admin
    wait_until(lambda: all(t["check"] for t in upstream_of(status(admin), "app")["targets"]), 10,
               what="first health checks published")
    b.stop()
    doc = wait_until(lambda: (lambda d: d if target(d, "app", b.address)["state"] == "down"
                              else None)(status(admin)), 15, what="target b down")
    t = target(doc, "app", b.address)
    assert t["check"]["ok"] is False and t["check"]["failures"] >= 1
    assert target(doc, "app", a.address)["state"] == "up"
    assert upstream_of(doc, "app")["targets_up"] == 1


def test_status_page_in_a_browser(sluice, backend, tmp_path):
    """The page in headless chromium: no console errors, no outside assets,
    the configured routes, a target going down; a screenshot as artifact."""
    started = time.monotonic()
    users, orders = backend("users"), backend("orders")
    s = sluice({"admin": {"address": f"127.0.0.1:{free_port()}"},
                "upstreams": {"users": upstream(users.address, health_check=HEALTH),
                              "orders": upstream(orders.address, health_check=HEALTH)},
                "routes": [{"name": "users-api", "match": {"prefix": "/users"},
                            "upstream": "users"},
                           {"name": "orders-api", "match": {"prefix": "/orders"},
                            "upstream": "orders"},
                           {"name": "hello", "match": {"path": "/hello"},
                            "respond": {"status": 200, "body": "hi"}}]})
    _, admin = s.admin
    for i in range(12):
        assert s.request("GET", f"/users/{i}").status == 200
        assert s.request("GET", f"/orders/{i}").status == 200
    assert s.request("GET", "/orders/x", headers={"X-Echo-Status": "500"}).status == 500
    assert s.request("GET", "/hello").status == 200
    assert s.request("GET", "/nowhere").status == 404
    base = f"http://127.0.0.1:{admin}/"
    # Light traffic while the page is open, so its rates move (answers not checked:
    # orders answers 503 once its only target is down).
    stop = threading.Event()

    def traffic():
        while not stop.wait(0.1):
            for path in ("/users/live", "/orders/live"):
                try:
                    request(s.port, "GET", path, timeout=5)
                except OSError:
                    pass

    feeder = threading.Thread(target=traffic, daemon=True)
    feeder.start()
    try:
        browse(s, users, orders, base, tmp_path, started)
    finally:
        stop.set()
        feeder.join(10)
    assert time.monotonic() - started < 90, "the browser test took longer than 90 s"


def browse(s, users, orders, base, tmp_path, started):
    with Chromium(tmp_path) as browser:
        assert time.monotonic() - started < 45, "chromium took too long to start"
        page = browser.new_page()
        page.navigate(base)
        page.wait_for("document.body && document.body.getAttribute('data-updated')", 20,
                      "the first update")
        assert page.evaluate("document.title") == "sluice status"
        routes = page.evaluate(
            "Array.from(document.querySelectorAll('[data-route]')).map(e => e.dataset.route)")
        assert routes == ["users-api", "orders-api", "hello", "(none)"], routes
        states = page.evaluate(
            "Object.fromEntries(Array.from(document.querySelectorAll('[data-target]'))"
            ".map(e => [e.dataset.target, e.dataset.state]))")
        assert states == {f"users/{users.address}": "up", f"orders/{orders.address}": "up"}, states
        total = page.evaluate(
            "document.querySelector('[data-route=\"users-api\"]').cells[4].innerText")
        assert int(total.replace(",", "")) >= 12, total

        orders.stop()
        row = f"[data-target=\"orders/{orders.address}\"]"
        page.wait_for(f"(document.querySelector('{row}') || {{dataset: {{}}}}).dataset.state"
                      " === 'down'", 20, "the orders target shown down")
        assert page.evaluate(f"getComputedStyle(document.querySelector('{row}'))"
                             ".backgroundColor") != page.evaluate(
            f"getComputedStyle(document.querySelector('[data-target=\"users/{users.address}\"]'))"
            ".backgroundColor"), "a down target is not coloured apart"
        assert page.evaluate("document.getElementById('dot').className") == "ok"

        shot = page.screenshot(tmp_path / "status-page.png")
        assert shot.stat().st_size > 10000
        artifacts = os.environ.get("SLUICE_ARTIFACTS_DIR")
        if artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            shot = Path(shutil.copy(shot, Path(artifacts) / "status-page.png"))
        print(f"status page screenshot: {shot}")

        assert page.problems() == []
        outside = [u for u in page.requested_urls()
                   if not u.startswith(base) and not u.startswith("data:")]
        assert outside == [], f"the page loaded assets from elsewhere: {outside}"
