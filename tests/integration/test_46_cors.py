"""SPEC 4 and 7 "CORS preflight": the gateway answers preflights and adds
the CORS fields to responses, following the Fetch standard's rules."""
import json
import subprocess

from conftest import assert_gateway_error, free_port, upstream

APP = "https://app.example.com"


def gateway(sluice, b, cors, methods=None):
    match = {"prefix": "/"}
    if methods:
        match["methods"] = methods
    return sluice({"upstreams": {"api": upstream(b.address)},
                   "routes": [{"name": "api", "match": match, "upstream": "api",
                               "filters": [dict({"type": "cors"}, **cors)]}]})


def preflight(s, origin=APP, method="PUT", headers=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return s.request("OPTIONS", "/items", headers=h)


def test_preflight_allowed_is_answered_by_the_gateway(sluice, backend):
    b = backend("api")
    # The route does not list OPTIONS: the preflight is routed as a PUT (SPEC 7).
    s = gateway(sluice, b, {"origins": [APP], "methods": ["GET", "PUT"],
                            "headers": ["Content-Type", "X-Token"], "max_age_s": 600},
                methods=["GET", "PUT"])
    r = preflight(s, headers="content-type, x-token")
    assert r.status == 204, r
    assert r.header("Access-Control-Allow-Origin") == APP
    assert r.header("Access-Control-Allow-Methods") == "GET, PUT"
    assert r.header("Access-Control-Allow-Headers") == "content-type, x-token"
    assert r.header("Access-Control-Max-Age") == "600"
    assert r.header("Access-Control-Allow-Credentials") is None
    assert "Origin" in (r.header("Vary") or "")
    assert r.header("Content-Length") is None and r.body == b""
    assert r.header("X-Request-Id")
    assert b.count == 0  # never forwarded


def test_preflight_for_a_method_the_route_lacks_is_404(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"origins": [APP], "methods": ["GET", "PUT", "DELETE"]},
                methods=["GET", "PUT"])
    assert_gateway_error(preflight(s, method="DELETE"), 404)


def test_preflight_refused(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"origins": [APP], "methods": ["GET", "PUT"], "headers": ["X-Token"]})
    r = preflight(s, origin="https://evil.example")
    assert_gateway_error(r, 403)
    assert r.header("Access-Control-Allow-Origin") is None
    assert "Origin" in (r.header("Vary") or "")
    assert_gateway_error(preflight(s, method="PATCH"), 403)
    assert_gateway_error(preflight(s, headers="X-Token, X-Other"), 403)
    assert preflight(s, headers="x-token").status == 204
    assert b.count == 0


def test_plain_options_is_forwarded(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"origins": [APP]})
    r = s.request("OPTIONS", "/items", headers={"Origin": APP})
    assert r.status == 200 and b.last()["method"] == "OPTIONS"
    assert r.header("Access-Control-Allow-Origin") == APP


def test_simple_requests(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"origins": [APP, "http://localhost:3000"],
                            "expose_headers": ["X-Backend", "X-Request-Id"]})
    r = s.request("GET", "/x", headers={"Origin": "HTTP://LOCALHOST:3000"})
    assert r.status == 200
    assert r.header("Access-Control-Allow-Origin") == "HTTP://LOCALHOST:3000"
    assert r.header("Access-Control-Expose-Headers") == "x-backend, x-request-id"
    assert r.header("Vary") == "Origin"
    # A disallowed origin passes, without CORS fields, even the upstream's own.
    r = s.request("GET", "/x", headers={"Origin": "https://evil.example",
                                        "X-Echo-Status": "200"})
    assert r.status == 200 and b.count == 2
    assert not [k for k, _ in r.headers if k.lower().startswith("access-control-")], r
    assert r.header("Vary") == "Origin"
    # No Origin at all: a same-origin or non-browser request; Vary still says it depends.
    r = s.request("GET", "/x")
    assert r.header("Access-Control-Allow-Origin") is None
    assert r.header("Vary") == "Origin"


def test_wildcard_without_credentials(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"origins": ["*"], "methods": ["*"], "headers": ["*"]})
    r = s.request("GET", "/", headers={"Origin": "https://any.example"})
    assert r.header("Access-Control-Allow-Origin") == "*"
    assert r.header("Vary") is None  # the answer does not depend on Origin
    r = preflight(s, origin="https://any.example", method="PATCH", headers="x-a")
    assert r.status == 204
    assert r.header("Access-Control-Allow-Origin") == "*"
    assert r.header("Access-Control-Allow-Methods") == "*"
    assert r.header("Access-Control-Allow-Headers") == "*"


def test_credentials_never_send_a_wildcard(sluice, backend):
    """Fetch standard: with credentials, '*' is literal to the browser; echo instead."""
    b = backend("api")
    s = gateway(sluice, b, {"origins": ["*"], "methods": ["*"], "headers": ["*"],
                            "credentials": True})
    r = s.request("GET", "/", headers={"Origin": "https://any.example"})
    assert r.header("Access-Control-Allow-Origin") == "https://any.example"
    assert r.header("Access-Control-Allow-Credentials") == "true"
    assert r.header("Vary") == "Origin"
    r = preflight(s, origin="https://any.example", method="PATCH", headers="x-a, x-b")
    assert r.status == 204
    assert r.header("Access-Control-Allow-Origin") == "https://any.example"
    assert r.header("Access-Control-Allow-Credentials") == "true"
    assert r.header("Access-Control-Allow-Methods") == "PATCH"
    assert r.header("Access-Control-Allow-Headers") == "x-a, x-b"
    for _, v in r.headers:
        assert v != "*", r


def test_default_headers_echo_the_request(sluice, backend):
    b = backend("api")
    s = gateway(sluice, b, {"origins": [APP], "methods": ["PUT"]})
    r = preflight(s, headers="content-type, authorization")
    assert r.status == 204
    assert r.header("Access-Control-Allow-Headers") == "content-type, authorization"
    assert r.header("Access-Control-Max-Age") is None


def test_vary_is_appended_to_the_upstreams(sluice, raw_backend):
    from conftest import ServerSide, http_response

    def handler(conn, backend):
        ServerSide(conn).read_request(backend)
        conn.sendall(http_response(200, b"ok", {"Vary": "Accept-Encoding",
                                                      "Access-Control-Allow-Origin": "*"}))

    b = raw_backend(handler)
    s = gateway(sluice, b, {"origins": [APP]})
    r = s.request("GET", "/", headers={"Origin": APP})
    assert r.header_all("Vary") == ["Accept-Encoding", "Origin"]
    assert r.header_all("Access-Control-Allow-Origin") == [APP]


def test_config_errors(sluice_bin, tmp_path):
    cfg = {"listen": [{"address": f"127.0.0.1:{free_port()}"}],
           "upstreams": {"api": {"targets": ["127.0.0.1:9"]}},
           "routes": [{"upstream": "api", "filters": [
               {"type": "cors", "origins": ["https://a.example/path", "null"]},
               {"type": "cors", "methods": ["GET"], "max_age_s": -1},
               {"type": "cors", "origins": [], "headers": ["bad header"]},
           ]}]}
    (tmp_path / "sluice.json").write_text(json.dumps(cfg))
    p = subprocess.run([sluice_bin, "-t", "-c", "sluice.json"], cwd=tmp_path,
                       capture_output=True, timeout=20)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert ("sluice.json: routes[0].filters[0].origins[0]: \"https://a.example/path\" is not an "
            "origin") in err, err
    assert "routes[0].filters[0].origins[1]: \"null\" is not an origin" in err, err
    assert "routes[0].filters[1].origins: is required" in err, err
    assert "routes[0].filters[1].max_age_s: must be" in err, err
    assert "routes[0].filters[2].origins: is empty" in err, err
    assert "routes[0].filters[2].headers[0]: \"bad header\" is not a valid header name" in err, err
