"""The Docker test (scripts/docker-test, a step of scripts/test): builds the
image and the demo images, brings up docker/compose.yaml under a unique
project name, and checks through ports published on 127.0.0.1 only:
routing by service name, balancing over two replicas through DNS, the
WebSocket echo, the Redis rate limit shared by two sluice replicas, the
health check state, /ready, and a drain on `docker-compose stop`. Every
step is bounded in time; the stack (containers, network) is removed at the
end, the images stay cached.

Needs a running engine and the debian:12 base images: scripts/docker-setup
makes both."""
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from conftest import free_port, request, wait_until  # noqa: E402

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
COMPOSE = os.environ.get("DOCKER_COMPOSE", "/usr/bin/docker-compose")
COMPOSE_FILE = REPO / "docker" / "compose.yaml"
TAG = "test"
SLUICE_IMAGE = f"sluice:{TAG}"
DEMO_IMAGE = f"sluice-demo:{TAG}"
REDIS_IMAGE = "redis:7-bookworm"
RATE_LIMIT = 20  # config/docker.json, route "limited": per minute, shared by the replicas


def run(args, timeout, check=True, env=None):
    """Runs a command, bounded; output is kept for the failure message."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def docker(*args, timeout=120, check=True):
    return run([DOCKER, *args], timeout, check)


def build(tag, context, dockerfile=None, timeout=900):
    args = ["build", "--network", "host", "-t", tag]
    if dockerfile:
        args += ["-f", str(dockerfile)]
    docker(*args, str(context), timeout=timeout)


@pytest.fixture(scope="session")
def images():
    """The three images, built from the tree (the layer cache makes a
    rebuild quick); the official redis tag is the Debian-built stand-in."""
    build(SLUICE_IMAGE, REPO, REPO / "docker" / "Dockerfile")
    build(DEMO_IMAGE, REPO / "docker" / "demo")
    if docker("image", "inspect", REDIS_IMAGE, check=False).returncode != 0:
        build(REDIS_IMAGE, REPO / "docker" / "redis")
    return SLUICE_IMAGE


class Stack:
    def __init__(self):
        self.project = f"sluicetest{uuid.uuid4().hex[:8]}"
        self.ports = {name: free_port() for name in ("a", "b", "admin_a", "admin_b")}
        self.env = dict(os.environ)
        self.env.update({
            "SLUICE_PUBLISH_HOST": "127.0.0.1",
            "SLUICE_PORT_A": str(self.ports["a"]),
            "SLUICE_PORT_B": str(self.ports["b"]),
            "SLUICE_ADMIN_PORT_A": str(self.ports["admin_a"]),
            "SLUICE_ADMIN_PORT_B": str(self.ports["admin_b"]),
        })
        # The images this test built, not whatever sluice:latest is on the machine.
        self.override = Path(os.environ.get("TMPDIR", "/tmp")) / f"{self.project}.override.yaml"
        self.override.write_text(json.dumps({
            "version": "2.4",
            "services": {
                "sluice-a": {"image": SLUICE_IMAGE},
                "sluice-b": {"image": SLUICE_IMAGE},
                "echo": {"image": DEMO_IMAGE},
                "hello": {"image": DEMO_IMAGE},
                "ws": {"image": DEMO_IMAGE},
            },
        }))

    def compose(self, *args, timeout=180, check=True):
        return run([COMPOSE, "-p", self.project, "-f", str(COMPOSE_FILE), "-f",
                    str(self.override), *args], timeout, check, env=self.env)

    def containers(self, service):
        out = self.compose("ps", "-q", service, timeout=60).stdout.split()
        return out

    def logs(self):
        return self.compose("logs", "--no-color", "--tail", "60", timeout=60, check=False).stdout


@pytest.fixture(scope="session")
def stack(images):
    s = Stack()
    try:
        # --no-build: the images above; up waits for the demos' and Redis's
        # health (depends_on conditions) before it starts the sluice replicas.
        s.compose("up", "-d", "--no-build", timeout=300)
        yield s
    finally:
        s.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=180,
                  check=False)
        s.override.unlink(missing_ok=True)


def health(container):
    return docker("inspect", "-f", "{{.State.Health.Status}}", container, timeout=30).stdout.strip()


def test_image_runs_as_non_root_with_probe_healthcheck(images):
    cfg = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", images).stdout)
    assert cfg["User"] == "sluice:sluice", cfg["User"]
    assert cfg["StopSignal"] == "SIGTERM", cfg
    assert cfg["Healthcheck"]["Test"] == [
        "CMD", "/usr/local/bin/sluice", "--probe", "http://127.0.0.1:9901/ready"], cfg
    assert {"8080/tcp", "9901/tcp"} <= set(cfg["ExposedPorts"]), cfg
    out = docker("run", "--rm", images, "-t", timeout=60)
    assert out.stdout.strip() == "configuration ok", out
    uid = docker("run", "--rm", "--entrypoint", "id", images, "-u", timeout=60).stdout.strip()
    assert uid != "0", uid


def started_workers(image, *run_args):
    """Starts the image detached, reads its start-up line, removes it."""
    cid = docker("run", "-d", *run_args, image, timeout=60).stdout.strip()
    try:
        line = wait_until(
            lambda: re.search(r"started: (\d+) workers?",
                              docker("logs", cid, timeout=30).stderr),
            timeout=30, interval=0.2, what="the start-up line")
        return int(line.group(1))
    finally:
        docker("rm", "-f", cid, timeout=60, check=False)


def test_workers_0_follows_the_container_cpu_limit(images):
    """config/docker.json has workers: 0; `--cpus 1` is a cgroup CPU quota
    of one CPU, whatever the host has."""
    assert started_workers(images, "--cpus", "1") == 1
    assert started_workers(images, "--cpus", "0.5") == 1
    assert started_workers(images) == len(os.sched_getaffinity(0))


def test_runtime_has_exactly_the_libraries_ldd_needs(images):
    """Every library the binary loads comes from an installed package, and
    every package the runtime stage added (but ca-certificates, the CA store,
    and what it pulls in) holds one of those libraries."""
    script = ("ldd /usr/local/bin/sluice | awk '$2 == \"=>\" {print $3} $1 ~ /^\\// {print $1}'"
              " | while read -r lib; do"
              "  p=$(dpkg -S \"$lib\" 2>/dev/null || dpkg -S \"$(readlink -f \"$lib\")\" 2>/dev/null"
              "      || dpkg -S \"/usr$lib\" 2>/dev/null || dpkg -S \"${lib#/usr}\" 2>/dev/null"
              "      || echo MISSING:$lib);"
              "  echo \"LIB ${p%%:*} $lib\";"
              " done;"
              " dpkg-query -W -f 'PKG ${Package}\\n'")
    out = docker("run", "--rm", "--entrypoint", "/bin/sh", images, "-c", script,
                 timeout=60).stdout
    assert "not found" not in out and "MISSING" not in out, out
    needed = {line.split()[1] for line in out.splitlines() if line.startswith("LIB ")}
    installed = {line.split()[1] for line in out.splitlines() if line.startswith("PKG ")}
    base = set(docker("run", "--rm", "--entrypoint", "dpkg-query", "debian:12-slim", "-W",
                      "-f", "${Package}\n", timeout=60).stdout.split())
    assert needed <= installed, needed - installed
    added = installed - base
    extras = {"ca-certificates", "openssl"}  # the CA store and its own dependency
    assert added - extras == needed - base, (
        f"runtime packages without a library the binary loads: {sorted(added - extras - needed)}; "
        f"libraries' packages missing from the image: {sorted(needed - base - added)}")
    assert {"libssl3", "libevent-core-2.1-7", "libnghttp2-14", "libjansson4"} <= needed, needed


def test_replicas_become_healthy_and_ready(stack):
    for service in ("sluice-a", "sluice-b"):
        ids = stack.containers(service)
        assert len(ids) == 1, (service, ids, stack.logs())
        wait_until(lambda: health(ids[0]) == "healthy", timeout=90, interval=1,
                   what=f"{service} healthy\n{stack.logs()}")
    for port in (stack.ports["admin_a"], stack.ports["admin_b"]):
        r = request(port, path="/ready", timeout=10)
        assert r.status == 200 and r.body == b"ready\n", r
        assert request(port, path="/healthz", timeout=10).status == 200


def test_routes_by_service_name(stack):
    for port in (stack.ports["a"], stack.ports["b"]):
        r = wait_until(lambda: ok_or_none(port, "/echo/some/path?x=1"), timeout=60, interval=0.5,
                       what=f"echo through :{port}")
        data = r.json()
        assert data["path"] == "/echo/some/path" and data["query"] == "x=1", data
        assert r.header("x-gateway") == "sluice", r
        hello = request(port, path="/hello", timeout=10)
        assert hello.status == 200 and hello.body == b"hello from sluice demo\n", hello


def ok_or_none(port, path):
    try:
        r = request(port, path=path, timeout=10)
    except OSError:
        return None
    return r if r.status == 200 else None


def test_balances_over_both_hello_replicas(stack):
    replicas = set(stack.containers("hello"))
    assert len(replicas) == 2, replicas
    hostnames = {docker("inspect", "-f", "{{.Config.Hostname}}", c, timeout=30).stdout.strip()
                 for c in replicas}
    seen = set()

    def both_seen():
        for _ in range(10):
            r = request(stack.ports["a"], path="/hello", timeout=10)
            assert r.status == 200, r
            seen.add(r.header("x-served-by"))
        return seen >= hostnames

    # Both replicas were healthy before sluice started; a DNS refresh
    # (dns_refresh_ms 2000) at most is needed. Bounded: 30 s, 10 per round.
    wait_until(both_seen, timeout=30, interval=0.5, what=f"answers from {hostnames}, saw {seen}")
    assert seen == hostnames, seen


def test_websocket_echo(stack):
    import websockets

    async def talk(port):
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/chat", open_timeout=10,
                                      close_timeout=5) as ws:
            got = []
            for msg in ("hello", "x" * 70000, "bye"):
                await ws.send(msg)
                got.append(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(b"\x00\x01binary")
            got.append(await asyncio.wait_for(ws.recv(), 10))
            return got

    for port in (stack.ports["a"], stack.ports["b"]):
        got = asyncio.run(asyncio.wait_for(talk(port), 30))
        assert got == ["hello", "x" * 70000, "bye", b"\x00\x01binary"], [g[:20] for g in got]


def test_rate_limit_is_shared_through_redis(stack):
    """20 per minute per client IP across both replicas: 40 requests,
    alternating between them, exactly 20 allowed in all."""
    statuses = []
    for i in range(2 * RATE_LIMIT):
        port = stack.ports["a"] if i % 2 == 0 else stack.ports["b"]
        statuses.append(request(port, path="/limited", timeout=10).status)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) == RATE_LIMIT, statuses
    # Both replicas refused some: neither kept a bucket of its own.
    assert 429 in statuses[0::2] and 429 in statuses[1::2], statuses


def in_flight(admin_port):
    text = request(admin_port, path="/metrics", timeout=10).body.decode()
    m = re.search(r'^sluice_connections_active\{protocol="http1"\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0


def admin_ready_status(admin_port):
    try:
        return request(admin_port, path="/ready", timeout=5).status
    except OSError:
        return None


def test_stop_drains_a_request_in_flight(stack):
    """`docker-compose stop` sends SIGTERM: the replica turns not ready
    while the slow request it is serving goes on, that request completes
    (with Connection: close), and the replica exits 0 by itself, before
    stop_grace_period would kill it (exit 137)."""
    (container,) = stack.containers("sluice-b")
    result = {}

    def slow():
        try:
            # 10 s: as long as the drain window, which starts later (at SIGTERM).
            result["resp"] = request(stack.ports["b"], path="/echo/slow", timeout=40,
                                     headers={"X-Demo-Delay-Ms": "10000"})
        except Exception as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    wait_until(lambda: in_flight(stack.ports["admin_b"]) >= 1, timeout=20, interval=0.1,
               what="the slow request in flight")
    stop = subprocess.Popen(
        [COMPOSE, "-p", stack.project, "-f", str(COMPOSE_FILE), "-f", str(stack.override),
         "stop", "-t", "15", "sluice-b"], env=stack.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Draining: the admin listener stays up and says 503 on /ready.
        wait_until(lambda: admin_ready_status(stack.ports["admin_b"]) == 503, timeout=30,
                   interval=0.1, what="sluice-b draining (/ready 503)")
        assert t.is_alive() and not result, "the slow request was still in flight at SIGTERM"
        out, _ = stop.communicate(timeout=60)
        assert stop.returncode == 0, out
    finally:
        if stop.poll() is None:
            stop.kill()
            stop.wait(10)
    t.join(40)
    assert "error" not in result, result
    r = result["resp"]
    assert r.status == 200 and r.json()["path"] == "/echo/slow", r
    assert (r.header("connection") or "").lower() == "close", r.headers
    state = json.loads(docker("inspect", "-f", "{{json .State}}", container, timeout=30).stdout)
    assert state["Status"] == "exited" and state["ExitCode"] == 0, state
    # The other replica still serves.
    assert request(stack.ports["a"], path="/hello", timeout=10).status == 200
