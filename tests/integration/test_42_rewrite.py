"""SPEC 4 and 7 "rewrite": what the upstream sees, through the real binary
(HTTP/1.1 and HTTP/2 clients, an HTTP/1.1 and an HTTP/2 upstream)."""
import json
import subprocess

from conftest import free_port, rec_header, upstream


def gateway(sluice, b, rewrite, protocol=None, **route):
    up = upstream(b.address)
    if protocol:
        up["protocol"] = protocol
    return sluice({"upstreams": {"api": up},
                   "routes": [dict({"upstream": "api",
                                    "filters": [dict({"type": "rewrite"}, **rewrite)]}, **route)]})


def seen(b):
    rec = b.last()
    return rec["path"], rec["query"]


def test_regex_with_groups_keeps_query(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"path": {"regex": "^/api/(\\w+)/(\\d+)$", "replace": "/v1/$2/$1$x"}})
    r = s.request("GET", "/api/users/42?x=1&y=%20")
    assert r.status == 200
    assert seen(b) == ("/v1/42/users$x", "x=1&y=%20")
    # No match: the path is unchanged.
    s.request("GET", "/other/path?q")
    assert seen(b) == ("/other/path", "q")


def test_regex_replaces_the_first_match_only(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"path": {"regex": "old", "replace": "new"}})
    s.request("GET", "/a/old/b/old")
    assert seen(b)[0] == "/a/new/b/old"


def test_result_always_starts_with_slash(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"path": {"regex": "^/api/(.*)$", "replace": "$1"}})
    s.request("GET", "/api/users")
    assert seen(b)[0] == "/users"
    s.request("GET", "/api/")
    assert seen(b)[0] == "/"


def test_strip_prefix_is_segment_aware(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"strip_prefix": "/api/"})
    s.request("GET", "/api/users?id=3")
    assert seen(b) == ("/users", "id=3")
    s.request("GET", "/api")
    assert seen(b)[0] == "/"  # stripping the whole path leaves "/"
    s.request("GET", "/api/")
    assert seen(b)[0] == "/"
    s.request("GET", "/apix/users")
    assert seen(b)[0] == "/apix/users"  # not a segment boundary: untouched


def test_order_regex_strip_add_and_host(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"path": {"regex": "^/old/", "replace": "/api/"},
                            "strip_prefix": "/api", "add_prefix": "/v2/",
                            "host": "users.internal:8080"})
    r = s.request("GET", "/old/users/7?a=b", headers={"Host": "gw.example.com"})
    assert r.status == 200
    rec = b.last()
    assert (rec["path"], rec["query"]) == ("/v2/users/7", "a=b")
    assert rec_header(rec, "Host") == "users.internal:8080"
    # The client's host stays visible to the upstream as X-Forwarded-Host.
    assert rec_header(rec, "X-Forwarded-Host") == "gw.example.com"


def test_add_prefix_to_root(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"add_prefix": "/v1"})
    s.request("GET", "/")
    assert seen(b)[0] == "/v1/"
    s.request("GET", "/x")
    assert seen(b)[0] == "/v1/x"


def test_http2_client_and_upstream(sluice, backend, h2_backend):
    """The rewritten path and Host reach an HTTP/2 upstream as :path and :authority."""
    up = h2_backend()
    s = sluice({"listen": [{"address": f"127.0.0.1:{free_port()}", "protocols": ["h2c"]}],
                "upstreams": {"h2": upstream(up.address, protocol="h2")},
                "routes": [{"upstream": "h2", "filters": [
                    {"type": "rewrite", "strip_prefix": "/api", "host": "inner.test"}]}]})
    p = subprocess.run(["curl", "-sS", "--max-time", "10", "--http2-prior-knowledge",
                        f"http://127.0.0.1:{s.port}/api/echo?k=v"],
                       capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    with up.lock:
        rec = up.requests[-1]
    assert rec[":path"] == "/echo?k=v", rec
    assert rec[":authority"] == "inner.test", rec


def test_invalid_regex_is_a_config_error(sluice_bin, tmp_path):
    cfg = {"listen": [{"address": f"127.0.0.1:{free_port()}"}],
           "upstreams": {"api": {"targets": ["127.0.0.1:9"]}},
           "routes": [{"upstream": "api", "filters": [
               {"type": "rewrite", "path": {"regex": "^/(a|b", "replace": "/$1"}},
               {"type": "rewrite", "path": {"regex": "^/(a)", "replace": "/$3"}},
               {"type": "rewrite", "strip_prefix": "api"},
               {"type": "rewrite"},
           ]}]}
    (tmp_path / "sluice.json").write_text(json.dumps(cfg))
    p = subprocess.run([sluice_bin, "-t", "-c", "sluice.json"], cwd=tmp_path,
                       capture_output=True, timeout=20)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert ("sluice.json: routes[0].filters[0].path.regex: invalid regular expression at "
            "offset 6: missing closing parenthesis") in err, err
    assert ("routes[0].filters[1].path.replace: $3 names a group the regex does not have "
            "(it has 1)") in err, err
    assert "routes[0].filters[2].strip_prefix: must start with '/'" in err, err
    assert "routes[0].filters[3]: rewrites nothing" in err, err
