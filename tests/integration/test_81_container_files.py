"""docker/: the Kubernetes manifests and the compose file agree with the
image (docker/Dockerfile) and the configuration they carry: ports, probe
paths, the config path, the grace periods against the drain window, and a
ConfigMap whose JSON passes `sluice -t`. No cluster or engine needed (the
running stack is tests/docker/)."""
import json
import re

import pytest

from conftest import REPO, run_sluice

yaml = pytest.importorskip("yaml", reason="python3-yaml (scripts/deps installs it)")

K8S = REPO / "docker" / "kubernetes"


def load_all(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def dockerfile():
    text = (REPO / "docker" / "Dockerfile").read_text()
    runtime = text[text.index("AS runtime"):]
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", runtime, re.M)
               for p in line.split()}
    config = re.search(r"^ENV SLUICE_CONFIG=(\S+)$", runtime, re.M).group(1)
    health = re.search(r'--probe", "(http://[^"]+)"', runtime).group(1)
    copied = re.search(r"^COPY config/docker.json (\S+)$", runtime, re.M).group(1)
    return {"exposed": exposed, "config": config, "health": health, "copied": copied,
            "text": runtime}


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def manifests():
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_all(path):
            docs[doc["kind"]] = doc
    return docs


def configmap_json(docs):
    return json.loads(docs["ConfigMap"]["data"]["sluice.json"])


def test_manifests_parse_and_are_complete():
    docs = manifests()
    assert {"Deployment", "Service", "ConfigMap"} <= set(docs), sorted(docs)
    for doc in docs.values():
        assert doc["apiVersion"] and doc["metadata"]["name"], doc


def test_configmap_passes_sluice_t(tmp_path):
    cfg = configmap_json(manifests())
    (tmp_path / "sluice.json").write_text(json.dumps(cfg))
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().strip() == "configuration ok"


def test_docker_config_passes_sluice_t(tmp_path):
    p = run_sluice(["-t", "-c", str(REPO / "config" / "docker.json")], tmp_path)
    assert p.returncode == 0, p.stderr.decode()


def test_deployment_agrees_with_image_and_config():
    docs = manifests()
    image = dockerfile()
    cfg = configmap_json(docs)
    dep = docs["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    traffic = port_of(cfg["listen"][0]["address"])
    admin = port_of(cfg["admin"]["address"])
    assert cfg["admin"]["address"].startswith("0.0.0.0:"), "probes come from outside the pod"
    assert ports == {"http": traffic, "admin": admin}, ports
    assert set(ports.values()) == image["exposed"], (ports, image["exposed"])
    # Probes: readiness /ready, liveness /healthz, both on the admin port.
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        port = c[probe]["httpGet"]["port"]
        assert ports.get(port, port) == admin, (probe, port)
    # The image's own health check asks the same endpoint.
    assert image["health"] == f"http://127.0.0.1:{admin}/ready", image["health"]
    # The config file lands where the image reads it.
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "config"]
    assert mount["mountPath"] == image["config"] == image["copied"], (mount, image)
    assert c["args"] == ["-c", image["config"]], c["args"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert vol["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert mount["subPath"] in docs["ConfigMap"]["data"], mount
    # Grace period above preStop + drain window.
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0].endswith("sleep"), pre
    drain_s = cfg["limits"]["drain_timeout_ms"] / 1000
    assert pod["terminationGracePeriodSeconds"] > float(pre[1]) + drain_s, pod
    # The Deployment's pods are the Service's.
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    # Runs as the image's non-root user.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert re.search(r"^USER sluice", image["text"], re.M)


def test_service_targets_named_container_ports():
    docs = manifests()
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    names = {p["name"] for p in c["ports"]}
    for p in docs["Service"]["spec"]["ports"]:
        assert p["targetPort"] in names, p


def seconds(text):
    m = re.fullmatch(r"(\d+)s", str(text))
    assert m, text
    return int(m.group(1))


def test_compose_agrees_with_image_and_config():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    cfg = json.loads((REPO / "config" / "docker.json").read_text())
    image = dockerfile()
    drain_s = cfg["limits"]["drain_timeout_ms"] / 1000
    services = compose["services"]
    sluices = [s for s in services.values() if s.get("image", "").startswith("sluice:")]
    assert len(sluices) == 2, "two sluice replicas share the Redis rate limit"
    admin = port_of(cfg["admin"]["address"])
    for s in sluices:
        assert seconds(s["stop_grace_period"]) > drain_s, s
        assert s["healthcheck"]["test"][1:] == ["/usr/local/bin/sluice", "--probe",
                                                image["health"]], s["healthcheck"]
        assert any(v.endswith(f":{image['config']}:ro") for v in s["volumes"]), s["volumes"]
        admin_pub = [p for p in s["ports"] if p.endswith(f":{admin}")]
        assert admin_pub and all(p.startswith("127.0.0.1:") for p in admin_pub), s["ports"]
        for dep, cond in s["depends_on"].items():
            assert cond == {"condition": "service_healthy"}, (dep, cond)
            assert "healthcheck" in services[dep], dep
    # Upstreams are reached by service name; every named service exists.
    for name, up in cfg["upstreams"].items():
        for target in up["targets"]:
            host = target.rsplit(":", 1)[0]
            assert host in services, (name, target)
    assert cfg["redis"]["address"].split(":")[0] in services
    assert services["hello"].get("scale") == 2
    for s in services.values():
        assert "network_mode" not in s, "services reach each other by name on the network"
