"""config/sluice.schema.json agrees with `sluice -t`.

Every configuration shipped in config/ and config/examples/, and a corpus of
valid and invalid configurations (wrong types, typos in keys, bad ports,
unknown filter types, wrong filter options, bad enum values, missing
required keys), is given to python3-jsonschema and to `sluice -t`; both must
reach the same verdict. The corpus keeps to what a schema can say: checks
that need more than the file (an upstream name a route refers to, a regex
that does not compile, files that must exist, two listeners on one address)
are the binary's alone and are not part of it.

One difference is known and left out of the corpus: JSON Schema's
"integer" accepts 1.0, which sluice refuses ("a number with a fraction").
"""
import copy
import json
import shutil

import pytest

jsonschema = pytest.importorskip("jsonschema")

from backends.certs import make_ca, make_cert  # noqa: E402
from conftest import REPO, run_sluice  # noqa: E402

SCHEMA_PATH = REPO / "config" / "sluice.schema.json"
DELETE = object()

BASE = {
    "listen": [{"address": "127.0.0.1:8080"}],
    "upstreams": {"app": {"targets": ["127.0.0.1:9001"]}},
    "routes": [{"name": "app", "match": {"prefix": "/"}, "upstream": "app"}],
}

BCRYPT = "$2b$10$YWMHjAeNGLBdGX5J/i09QOofs67Ia0MgNnjjgZJqlwOKo/YDiKvsW"
SECRET = "0123456789abcdef0123456789abcdef"


def route_filter(**options):
    """Changes putting one filter (type and options) on the route."""
    return [(("routes", 0, "filters"), [options])]


# (name, valid, [(path, value)...]); a path is a tuple of keys and indexes.
CASES = [
    # top level
    ("minimal", True, []),
    ("$schema member", True, [(("$schema",), "./sluice.schema.json")]),
    ("$schema not a string", False, [(("$schema",), 3)]),
    ("comment keys", True, [(("_comment",), "x"), (("routes", 0, "_note"), [1])]),
    ("typo in a top-level key", False, [(("upstream",), {})]),
    ("missing listen", False, [(("listen",), DELETE)]),
    ("missing routes", False, [(("routes",), DELETE)]),
    ("empty routes", True, [(("routes",), []), (("upstreams",), DELETE)]),
    ("not an object", False, [((), [1, 2])]),
    ("workers string", False, [(("workers",), "2")]),
    ("workers negative", False, [(("workers",), -1)]),
    ("workers too many", False, [(("workers",), 1025)]),
    ("workers 4", True, [(("workers",), 4)]),
    # listeners
    ("listen empty", False, [(("listen",), [])]),
    ("listen not an array", False, [(("listen",), {"address": "127.0.0.1:8080"})]),
    ("listener port 80800", False, [(("listen", 0, "address"), "127.0.0.1:80800")]),
    ("listener port 0", False, [(("listen", 0, "address"), "127.0.0.1:0")]),
    ("listener port 65535", True, [(("listen", 0, "address"), "127.0.0.1:65535")]),
    ("listener port 65536", False, [(("listen", 0, "address"), "127.0.0.1:65536")]),
    ("listener without port", False, [(("listen", 0, "address"), "127.0.0.1")]),
    ("listener on a host name", False, [(("listen", 0, "address"), "example.com:80")]),
    ("listener localhost", True, [(("listen", 0, "address"), "localhost:8080")]),
    ("listener IPv6", True, [(("listen", 0, "address"), "[::1]:8080")]),
    ("listener IPv6 without brackets", False, [(("listen", 0, "address"), "::1:8080")]),
    ("listener bad IPv4", False, [(("listen", 0, "address"), "256.1.1.1:80")]),
    ("listener address from env default", True,
     [(("listen", 0, "address"), "${SLUICE_TEST_UNSET_ADDR:-127.0.0.1:8081}")]),
    ("listener address missing", False, [(("listen", 0), {"protocols": ["http/1.1"]})]),
    ("listener typo", False, [(("listen", 0, "adress"), "127.0.0.1:1")]),
    ("listener h2c", True, [(("listen", 0, "protocols"), ["h2c", "http/1.1"])]),
    ("cleartext listener h2", False, [(("listen", 0, "protocols"), ["h2"])]),
    ("listener protocols empty", False, [(("listen", 0, "protocols"), [])]),
    ("listener protocol unknown", False, [(("listen", 0, "protocols"), ["spdy"])]),
    ("tls listener", True,
     [(("listen", 0, "tls"), {"certificates": [{"cert": "server.pem", "key": "server.key"}],
                              "protocols": ["h2", "http/1.1"], "min_version": "TLSv1.3"})]),
    ("tls listener ALPN on the listener", True,
     [(("listen", 0, "tls"), {"certificates": [{"cert": "server.pem", "key": "server.key"}]}),
      (("listen", 0, "protocols"), ["h2"])]),
    ("tls listener ALPN in both places", False,
     [(("listen", 0, "tls"), {"certificates": [{"cert": "server.pem", "key": "server.key"}],
                              "protocols": ["h2"]}),
      (("listen", 0, "protocols"), ["h2"])]),
    ("tls listener h2c", False,
     [(("listen", 0, "tls"), {"certificates": [{"cert": "server.pem", "key": "server.key"}],
                              "protocols": ["h2c"]})]),
    ("tls without certificates", False, [(("listen", 0, "tls"), {"min_version": "TLSv1.2"})]),
    ("tls certificate without key", False,
     [(("listen", 0, "tls"), {"certificates": [{"cert": "server.pem"}]})]),
    ("tls min_version bad", False,
     [(("listen", 0, "tls"), {"certificates": [{"cert": "server.pem", "key": "server.key"}],
                              "min_version": "TLSv1.0"})]),
    ("tls typo", False,
     [(("listen", 0, "tls"), {"certificates": [{"cert": "server.pem", "key": "server.key"}],
                              "client-ca": "ca.pem"})]),
    ("tls type key", False,
     [(("listen", 0, "tls"), {"certificates": [{"cert": "server.pem", "key": "server.key"}],
                              "type": "x"})]),
    # admin, access log, limits, redis
    ("admin", True, [(("admin",), {"address": "127.0.0.1:9901"})]),
    ("admin port 99999", False, [(("admin",), {"address": "127.0.0.1:99999"})]),
    ("admin without address", False, [(("admin",), {})]),
    ("admin string", False, [(("admin",), "127.0.0.1:9901")]),
    ("access log combined off", True, [(("access_log",), {"path": "off", "format": "combined"})]),
    ("access log bad format", False, [(("access_log",), {"format": "xml"})]),
    ("access log empty path", False, [(("access_log",), {"path": ""})]),
    ("access log typo", False, [(("access_log",), {"paht": "-"})]),
    ("limits", True, [(("limits",), {"max_body_bytes": 0, "h2_max_concurrent_streams": 10})]),
    ("limits zero timeout", False, [(("limits",), {"idle_timeout_ms": 0})]),
    ("limits string", False, [(("limits",), {"max_headers": "100"})]),
    ("limits over INT_MAX", False, [(("limits",), {"header_timeout_ms": 2147483648})]),
    ("limits negative body", False, [(("limits",), {"max_body_bytes": -1})]),
    ("limits typo", False, [(("limits",), {"max_header": 10})]),
    ("redis", True, [(("redis",), {"address": "127.0.0.1:6379", "database": 2})]),
    ("redis bad port", False, [(("redis",), {"address": "127.0.0.1:70000"})]),
    ("redis without address", False, [(("redis",), {"password": "x"})]),
    ("redis negative database", False, [(("redis",), {"address": "r:6379", "database": -1})]),
    # upstreams
    ("upstream full", True,
     [(("upstreams", "app"), {"targets": ["127.0.0.1:9001", {"address": "[::1]:9002", "weight": 3}],
                              "balance": "header:x-user", "keepalive": 0, "max_connections": 10,
                              "connect_timeout_ms": 100, "timeout_ms": 100, "retries": 0,
                              "dns_refresh_ms": 1000, "protocol": "h2",
                              "health_check": {"path": "/healthz", "interval_ms": 100},
                              "tls": {"verify": False, "server_name": "app.internal"}})]),
    ("upstream empty name", False, [(("upstreams", ""), {"targets": ["a:1"]})]),
    ("upstream comment name", True, [(("upstreams", "_old"), {"anything": 1})]),
    ("upstream without targets", False, [(("upstreams", "app"), {"balance": "random"})]),
    ("upstream empty targets", False, [(("upstreams", "app", "targets"), [])]),
    ("target port 80800", False, [(("upstreams", "app", "targets"), ["app:80800"])]),
    ("target without port", False, [(("upstreams", "app", "targets"), ["app"])]),
    ("target bad host", False, [(("upstreams", "app", "targets"), ["a/b:80"])]),
    ("target weight 0", False, [(("upstreams", "app", "targets"), [{"address": "a:1", "weight": 0}])]),
    ("target weight string", False,
     [(("upstreams", "app", "targets"), [{"address": "a:1", "weight": "2"}])]),
    ("target number", False, [(("upstreams", "app", "targets"), [8080])]),
    ("balance unknown", False, [(("upstreams", "app", "balance"), "fastest")]),
    ("balance header without name", False, [(("upstreams", "app", "balance"), "header:")]),
    ("keepalive negative", False, [(("upstreams", "app", "keepalive"), -1)]),
    ("retries string", False, [(("upstreams", "app", "retries"), "1")]),
    ("protocol unknown", False, [(("upstreams", "app", "protocol"), "h3")]),
    ("upstream typo", False, [(("upstreams", "app", "timeout"), 10)]),
    ("health path relative", False, [(("upstreams", "app", "health_check"), {"path": "healthz"})]),
    ("health path with space", False, [(("upstreams", "app", "health_check"), {"path": "/a b"})]),
    ("health partial", True, [(("upstreams", "app", "health_check"), {})]),
    ("health zero after", False, [(("upstreams", "app", "health_check"), {"healthy_after": 0})]),
    ("health typo", False, [(("upstreams", "app", "health_check"), {"interval": 5})]),
    ("upstream tls verify string", False, [(("upstreams", "app", "tls"), {"verify": "yes"})]),
    ("upstream tls typo", False, [(("upstreams", "app", "tls"), {"sni": "x"})]),
    ("upstream tls bad server_name", False, [(("upstreams", "app", "tls"), {"server_name": "a:1"})]),
    # routes
    ("route without action", False, [(("routes", 0, "upstream"), DELETE)]),
    ("route two actions", False, [(("routes", 0, "respond"), {"status": 200})]),
    ("route respond", True,
     [(("routes", 0), {"respond": {"status": 201, "body": "x", "headers": {"x-a": "b"}}})]),
    ("respond status 600", False, [(("routes", 0), {"respond": {"status": 600}})]),
    ("respond header name bad", False, [(("routes", 0), {"respond": {"headers": {"a b": "c"}}})]),
    ("respond header value CRLF", False,
     [(("routes", 0), {"respond": {"headers": {"a": "b\r\nc: d"}}})]),
    ("respond header value number", False, [(("routes", 0), {"respond": {"headers": {"a": 1}}})]),
    ("respond body number", False, [(("routes", 0), {"respond": {"body": 1}})]),
    ("redirect", True, [(("routes", 0), {"redirect": {"location": "https://x/", "status": 308}})]),
    ("redirect status 200", False, [(("routes", 0), {"redirect": {"location": "/", "status": 200}})]),
    ("redirect without location", False, [(("routes", 0), {"redirect": {"status": 301}})]),
    ("redirect location CRLF", False, [(("routes", 0), {"redirect": {"location": "/a\nb"}})]),
    ("route empty name", False, [(("routes", 0, "name"), "")]),
    ("route typo", False, [(("routes", 0, "filter"), [])]),
    ("route timeout 0", False, [(("routes", 0, "timeout_ms"), 0)]),
    ("route websocket string", False, [(("routes", 0, "websocket"), "false")]),
    ("route websocket false", True, [(("routes", 0, "websocket"), False)]),
    ("match path and prefix", False, [(("routes", 0, "match"), {"prefix": "/a", "path": "/b"})]),
    ("match prefix relative", False, [(("routes", 0, "match"), {"prefix": "api"})]),
    ("match everything", True,
     [(("routes", 0, "match"), {"regex": "^/v[0-9]+/", "hosts": ["a.example", "*.example.org"],
                                "methods": ["GET", "post"],
                                "headers": {"x-v": "2", "x-t": {"regex": "^t"}},
                                "query": {"debug": "1"}})]),
    ("match host with port", False, [(("routes", 0, "match"), {"hosts": ["a.example:80"]})]),
    ("match host wildcard inside", False, [(("routes", 0, "match"), {"hosts": ["a.*.org"]})]),
    ("match hosts empty", False, [(("routes", 0, "match"), {"hosts": []})]),
    ("match method with space", False, [(("routes", 0, "match"), {"methods": ["GE T"]})]),
    ("match header name bad", False, [(("routes", 0, "match"), {"headers": {"x y": "1"}})]),
    ("match header number", False, [(("routes", 0, "match"), {"headers": {"x": 1}})]),
    ("match header regex typo", False, [(("routes", 0, "match"), {"headers": {"x": {"re": "a"}}})]),
    ("match typo", False, [(("routes", 0, "match"), {"prefx": "/"})]),
    # filters
    ("filters not an array", False, [(("filters",), {"type": "cors"})]),
    ("filter without type", False, [(("filters",), [{"request": {}}])]),
    ("filter type unknown", False, route_filter(type="gzip")),
    ("filter type not a string", False, route_filter(type=3)),
    ("headers filter", True,
     route_filter(type="headers", request={"set": {"x-id": "${request_id}"}, "remove": ["cookie"]},
                  response={"add": {"x-r": "${route} ${host}"}})),
    ("headers unknown variable", False, route_filter(type="headers", request={"set": {"x": "${nope}"}})),
    ("headers set content-length", False,
     route_filter(type="headers", request={"set": {"Content-Length": "1"}})),
    ("headers remove transfer-encoding", False,
     route_filter(type="headers", response={"remove": ["transfer-encoding"]})),
    ("headers value CRLF", False, route_filter(type="headers", request={"set": {"x": "a\r\nb"}})),
    ("headers typo", False, route_filter(type="headers", request={"replace": {}})),
    ("headers option typo", False, route_filter(type="headers", requests={})),
    ("api_key", True, route_filter(type="api_key", header="x-key", query="key", keys={"k1": "app"})),
    ("api_key keys_file", True, route_filter(type="api_key", keys_file="keys.json")),
    ("api_key without keys", False, route_filter(type="api_key", header="x-key")),
    ("api_key both keys", False, route_filter(type="api_key", keys={"k": "a"}, keys_file="keys.json")),
    ("api_key empty keys", False, route_filter(type="api_key", keys={})),
    ("api_key empty consumer", False, route_filter(type="api_key", keys={"k": ""})),
    ("api_key bad header", False, route_filter(type="api_key", header="x key", keys={"k": "a"})),
    ("api_key bad query", False, route_filter(type="api_key", query="a=b", keys={"k": "a"})),
    ("basic_auth", True, route_filter(type="basic_auth", realm="staff", users={"alice": BCRYPT})),
    ("basic_auth not a hash", False, route_filter(type="basic_auth", users={"alice": "secret"})),
    ("basic_auth user with colon", False, route_filter(type="basic_auth", users={"a:b": BCRYPT})),
    ("basic_auth realm quote", False,
     route_filter(type="basic_auth", realm='a"b', users={"alice": BCRYPT})),
    ("basic_auth without users", False, route_filter(type="basic_auth", realm="x")),
    ("jwt", True,
     route_filter(type="jwt", algorithms=["HS256"], secret=SECRET, issuer="i", audience=["a"],
                  leeway_s=10, header="x-token", claims_to_headers={"sub": "x-user"},
                  require_exp=False, forward_token=False)),
    ("jwt without algorithms", False, route_filter(type="jwt", secret=SECRET)),
    ("jwt alg none", False, route_filter(type="jwt", algorithms=["none"], secret=SECRET)),
    ("jwt short secret", False, route_filter(type="jwt", algorithms=["HS256"], secret="short")),
    ("jwt without key", False, route_filter(type="jwt", algorithms=["HS256"])),
    ("jwt leeway 301", False, route_filter(type="jwt", algorithms=["HS256"], secret=SECRET, leeway_s=301)),
    ("jwt audience empty", False, route_filter(type="jwt", algorithms=["HS256"], secret=SECRET, audience=[])),
    ("jwt require_exp string", False,
     route_filter(type="jwt", algorithms=["HS256"], secret=SECRET, require_exp="no")),
    ("jwt jwks_url https", False,
     route_filter(type="jwt", algorithms=["RS256"], jwks_url="https://idp/keys")),
    ("jwt jwks_url", True,
     route_filter(type="jwt", algorithms=["RS256"], jwks_url="http://127.0.0.1:1/keys",
                  jwks_refresh_s=60)),
    ("rate_limit", True,
     route_filter(type="rate_limit", rate=10, per="minute", burst=20, key="header:x-user",
                  on_store_error="deny")),
    ("rate_limit without rate", False, route_filter(type="rate_limit", per="second")),
    ("rate_limit rate 0", False, route_filter(type="rate_limit", rate=0)),
    ("rate_limit rate string", False, route_filter(type="rate_limit", rate="10")),
    ("rate_limit per day", False, route_filter(type="rate_limit", rate=1, per="day")),
    ("rate_limit key unknown", False, route_filter(type="rate_limit", rate=1, key="cookie")),
    ("rate_limit store redis without a redis section", False, route_filter(type="rate_limit", rate=1, store="redis")),
    ("rate_limit store redis", True,
     route_filter(type="rate_limit", rate=1, store="redis") + [(("redis",), {"address": "127.0.0.1:6379"})]),
    ("top-level rate_limit store redis without a redis section", False,
     [(("filters",), [{"type": "rate_limit", "rate": 1, "store": "redis"}])]),
    ("rate_limit store memcached", False, route_filter(type="rate_limit", rate=1, store="memcached")),
    ("rate_limit typo", False, route_filter(type="rate_limit", rate=1, burts=2)),
    ("rewrite", True,
     route_filter(type="rewrite", path={"regex": "^/v1/(.*)$", "replace": "/$1"},
                  strip_prefix="/api", add_prefix="/internal", host="app.internal")),
    ("rewrite path without replace", False, route_filter(type="rewrite", path={"regex": "^/"})),
    ("rewrite strip relative", False, route_filter(type="rewrite", strip_prefix="api")),
    ("rewrite path typo", False,
     route_filter(type="rewrite", path={"regex": "^/", "replace": "/", "flags": "i"})),
    ("cors", True,
     route_filter(type="cors", origins=["https://a.example"], methods=["GET", "PUT"],
                  headers=["x-a"], expose_headers=["x-b"], credentials=True, max_age_s=600)),
    ("cors without origins", False, route_filter(type="cors", methods=["GET"])),
    ("cors origins empty", False, route_filter(type="cors", origins=[])),
    ("cors max_age negative", False, route_filter(type="cors", origins=["*"], max_age_s=-1)),
    ("cors credentials string", False, route_filter(type="cors", origins=["*"], credentials="yes")),
    ("ip_filter", True, route_filter(type="ip_filter", allow=["10.0.0.0/8", "::1"], deny=["10.1.0.0/16"])),
    ("ip_filter neither", False, route_filter(type="ip_filter")),
    ("ip_filter number", False, route_filter(type="ip_filter", allow=[10])),
    ("ip_filter string", False, route_filter(type="ip_filter", deny="10.0.0.0/8")),
    ("body_limit", True, route_filter(type="body_limit", max_bytes=1024)),
    ("body_limit negative", False, route_filter(type="body_limit", max_bytes=-1)),
    ("body_limit missing", False, route_filter(type="body_limit")),
    ("body_limit typo", False, route_filter(type="body_limit", max_byte=1)),
    ("global filter", True, [(("filters",), [{"type": "body_limit", "max_bytes": 10}])]),
]


def apply(config, changes):
    cfg = copy.deepcopy(config)
    for path, value in changes:
        if not path:
            cfg = value
            continue
        node = cfg
        for step in path[:-1]:
            if isinstance(node, dict) and step not in node:
                node[step] = {}
            node = node[step]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return cfg


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with the files the corpus names: a certificate and key, a keys file."""
    d = tmp_path_factory.mktemp("schema")
    make_ca(d, "ca", "schema test CA")
    make_cert(d, "ca", "server", "/CN=localhost", san="DNS:localhost")
    (d / "keys.json").write_text(json.dumps({"k-file": "file-consumer"}))
    return d


def sluice_verdict(directory, name, config):
    path = directory / name
    path.write_text(json.dumps(config, indent=2))
    p = run_sluice(["-t", "-c", str(path)], directory)
    assert p.returncode in (0, 1), p
    stderr = p.stderr.decode(errors="replace")
    if p.returncode == 1:
        assert stderr.strip(), "an invalid configuration names its problem"
    return p.returncode == 0, stderr


def schema_verdict(validator, config):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
              for e in validator.iter_errors(config)]
    return not errors, errors


@pytest.mark.parametrize("name,valid,changes", CASES, ids=[c[0] for c in CASES])
def test_corpus_same_verdict(validator, workdir, name, valid, changes):
    config = apply(BASE, changes)
    schema_ok, schema_errors = schema_verdict(validator, config)
    sluice_ok, stderr = sluice_verdict(workdir, "case.json", config)
    assert sluice_ok == valid, f"sluice -t: expected {'valid' if valid else 'invalid'}: {stderr}"
    assert schema_ok == valid, (
        f"schema: expected {'valid' if valid else 'invalid'}: {schema_errors}")


SHIPPED = sorted(p for p in list((REPO / "config").glob("*.json")) +
                 list((REPO / "config" / "examples").glob("*.json"))
                 if p.name != "sluice.schema.json")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configurations_pass_both(validator, tmp_path, path):
    config = json.loads(path.read_text())
    schema_ok, schema_errors = schema_verdict(validator, config)
    assert schema_ok, schema_errors
    p = run_sluice(["-t", "-c", str(path)], tmp_path)
    assert p.returncode == 0, p.stderr.decode()


def test_shipped_configuration_with_schema_member_passes_both(validator, tmp_path):
    """An editor binding the schema by "$schema" changes nothing for sluice."""
    config = json.loads((REPO / "config" / "sluice.json").read_text())
    config = {"$schema": "./sluice.schema.json", **config}
    shutil.copy(SCHEMA_PATH, tmp_path / "sluice.schema.json")
    assert schema_verdict(validator, config)[0]
    ok, stderr = sluice_verdict(tmp_path, "sluice.json", config)
    assert ok, stderr


def test_corpus_covers_both_verdicts():
    """A corpus of only valid (or only invalid) cases could not catch a disagreement."""
    verdicts = [valid for _, valid, _ in CASES]
    assert verdicts.count(True) >= 20 and verdicts.count(False) >= 80
