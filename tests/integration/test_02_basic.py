"""SPEC 2.4, 3.2, 7: proxying, route matching, respond/redirect, 404, path
normalisation."""
import json
import os

import pytest

from conftest import RawConn, assert_gateway_error, sha256, upstream


def respond(body, status=200, **match):
    route = {"name": body, "respond": {"status": status, "body": body}}
    if match:
        route["match"] = match
    return route


@pytest.fixture
def proxied(sluice, backend):
    b = backend("api")
    s = sluice({
        "upstreams": {"api": upstream(b.address)},
        "routes": [{"name": "api", "match": {"prefix": "/api"}, "upstream": "api"}],
    })
    return s, b


def test_get_is_proxied(proxied):
    s, b = proxied
    r = s.request("GET", "/api/users?x=1&y=2", headers={"X-Custom": "value"})
    assert r.status == 200, r
    assert r.header("x-backend") == "api"
    data = r.json()
    assert data["method"] == "GET"
    assert data["path"] == "/api/users"
    assert data["query"] == "x=1&y=2"
    assert data["headers"]["x-custom"] == "value"
    assert b.count == 1
    assert b.last()["version"] == "HTTP/1.1"


def test_post_body_is_proxied(proxied):
    s, b = proxied
    body = os.urandom(100000)
    r = s.request("POST", "/api/upload", body=body,
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    data = r.json()
    assert data["method"] == "POST"
    assert data["body_length"] == len(body)
    assert data["body_sha256"] == sha256(body)


def test_upstream_error_status_passes_through_unchanged(proxied):
    s, _ = proxied
    r = s.request("GET", "/api/x", headers={"X-Echo-Status": "503"})
    assert r.status == 503
    assert r.json()["backend"] == "api"  # the upstream's body, not a gateway error


def test_prefix_is_segment_aware(sluice):
    s = sluice({"routes": [respond("api", prefix="/api"), respond("other")]})
    for path in ("/api", "/api/", "/api/x", "/api/x/y?q=1"):
        assert s.request("GET", path).body == b"api", path
    for path in ("/apix", "/ap", "/", "/x/api"):
        assert s.request("GET", path).body == b"other", path


def test_exact_path(sluice):
    s = sluice({"routes": [respond("exact", path="/exact"), respond("other")]})
    assert s.request("GET", "/exact").body == b"exact"
    assert s.request("GET", "/exact?q=1").body == b"exact"
    for path in ("/exact/", "/exact/x", "/exactly", "/"):
        assert s.request("GET", path).body == b"other", path


def test_regex(sluice):
    s = sluice({"routes": [respond("item", regex="^/items/[0-9]+$"), respond("other")]})
    assert s.request("GET", "/items/42").body == b"item"
    assert s.request("GET", "/items/42?x=y").body == b"item"
    assert s.request("GET", "/items/x").body == b"other"
    assert s.request("GET", "/items/42/more").body == b"other"


def test_hosts_exact_and_wildcard(sluice):
    s = sluice({"routes": [respond("hosted", hosts=["api.example.com", "*.example.org"]),
                           respond("other")]})
    yes = ["api.example.com", "API.Example.COM", "api.example.com:8080", "a.example.org",
           "a.b.example.org:81"]
    no = ["example.org", "other.example.com", "example.org.evil", "xexample.org"]
    for host in yes:
        assert s.request("GET", "/", headers={"Host": host}).body == b"hosted", host
    for host in no:
        assert s.request("GET", "/", headers={"Host": host}).body == b"other", host


def test_methods(sluice):
    s = sluice({"routes": [respond("writes", methods=["POST", "PUT"]), respond("other")]})
    assert s.request("POST", "/", body=b"x").body == b"writes"
    assert s.request("PUT", "/", body=b"x").body == b"writes"
    assert s.request("GET", "/").body == b"other"
    assert s.request("DELETE", "/").body == b"other"


def test_headers_and_query_match(sluice):
    s = sluice({"routes": [
        respond("hdr", headers={"x-api-version": "2", "x-tenant": {"regex": "^t-[0-9]+$"}}),
        respond("qry", query={"debug": "1"}),
        respond("other"),
    ]})
    assert s.request("GET", "/", headers={"X-Api-Version": "2", "X-Tenant": "t-17"}).body == b"hdr"
    assert s.request("GET", "/", headers={"X-Api-Version": "2", "X-Tenant": "t-x"}).body == b"other"
    assert s.request("GET", "/", headers={"X-Api-Version": "3", "X-Tenant": "t-1"}).body == b"other"
    assert s.request("GET", "/", headers={"X-Tenant": "t-1"}).body == b"other"
    assert s.request("GET", "/?debug=1").body == b"qry"
    assert s.request("GET", "/?a=b&debug=1").body == b"qry"
    assert s.request("GET", "/?debug=2").body == b"other"
    assert s.request("GET", "/").body == b"other"


def test_first_match_wins(sluice):
    s = sluice({"routes": [respond("first", prefix="/a"), respond("second", prefix="/a/b"),
                           respond("third")]})
    assert s.request("GET", "/a/b").body == b"first"
    assert s.request("GET", "/z").body == b"third"


def test_respond_route(sluice):
    s = sluice({"routes": [{"respond": {"status": 201, "body": "created\n",
                                        "headers": {"X-Custom": "yes",
                                                    "Content-Type": "text/plain"}}}]})
    r = s.request("POST", "/anything", body=b"ignored")
    assert r.status == 201
    assert r.body == b"created\n"
    assert r.header("x-custom") == "yes"
    assert r.header("content-type") == "text/plain"
    assert r.header("x-request-id")


def test_redirect_route_with_capture(sluice):
    s = sluice({"routes": [
        {"match": {"regex": "^/old/([^/]+)/(.*)$"},
         "redirect": {"location": "https://new.example/$2/$1", "status": 301}},
        {"match": {"path": "/moved"}, "redirect": {"location": "/here"}},
    ]})
    r = s.request("GET", "/old/a/b/c")
    assert r.status == 301
    assert r.header("location") == "https://new.example/b/c/a"
    r = s.request("GET", "/moved")
    assert r.status == 302  # SPEC 7: redirect default status
    assert r.header("location") == "/here"


def test_no_route_is_404_json(sluice):
    s = sluice({"routes": [respond("only", path="/only")]})
    r = s.request("GET", "/nowhere")
    data = assert_gateway_error(r, 404)
    assert data["status"] == 404 and data["error"] == "not_found"
    # A valid client request id is kept on gateway-made responses too.
    r = s.request("GET", "/nowhere", headers={"X-Request-Id": "client-id-1"})
    assert assert_gateway_error(r, 404)["request_id"] == "client-id-1"
    # Keep-alive survives a 404.
    with RawConn(s.port) as c:
        c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /only HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_gateway_error(c.read_response(), 404)
        assert c.read_response().body == b"only"


# ---------------------------------------------------------------- normalisation


def test_percent_encoded_unreserved_is_decoded(proxied):
    s, b = proxied
    r = s.request("GET", "/api/%7Euser/%41%62c%2d%5F%2E")
    assert r.status == 200
    assert b.last()["path"] == "/api/~user/Abc-_."


def test_encoded_prefix_still_matches(proxied):
    s, b = proxied
    r = s.request("GET", "/%61pi/x")  # %61 = a
    assert r.status == 200
    assert b.last()["path"] == "/api/x"


def test_dot_segments_resolved(proxied):
    s, b = proxied
    assert s.request("GET", "/api/a/../b").status == 200
    assert b.last()["path"] == "/api/b"
    assert s.request("GET", "/api/./c/./d").status == 200
    assert b.last()["path"] == "/api/c/d"
    assert s.request("GET", "/x/../api/e").status == 200
    assert b.last()["path"] == "/api/e"
    # %2e is decoded first, then resolved: this leaves /api.
    count = b.count
    r = s.request("GET", "/api/%2e%2e/other")
    assert_gateway_error(r, 404)
    assert b.count == count


def test_encoded_slash_kept_and_double_slash_kept(proxied):
    s, b = proxied
    assert s.request("GET", "/api/a%2Fb").status == 200
    assert b.last()["path"] == "/api/a%2Fb"
    assert s.request("GET", "/api//x").status == 200
    assert b.last()["path"] == "/api//x"
    # %2F is not a separator: this is one segment named "..%2Fx", nothing to resolve.
    assert s.request("GET", "/api/..%2Fx").status == 200
    assert b.last()["path"] == "/api/..%2Fx"


def test_query_untouched(proxied):
    s, b = proxied
    assert s.request("GET", "/api/q?a=%7E&b=../c&c=%2F").status == 200
    assert b.last()["query"] == "a=%7E&b=../c&c=%2F"


@pytest.mark.parametrize("path", ["/..", "/../api", "/api/../../x", "/%2e%2e/api"])
def test_dot_dot_above_root_is_400(proxied, path):
    s, b = proxied
    with RawConn(s.port) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert_gateway_error(c.read_response(), 400)
        assert c.closed_within(3), "a 400 closes the connection"
    assert b.count == 0


def test_curl_through_gateway(proxied):
    from conftest import curl
    s, b = proxied
    p = curl("-i", f"http://127.0.0.1:{s.port}/api/curl?z=1")
    assert p.returncode == 0, p.stderr
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["path"] == "/api/curl"
