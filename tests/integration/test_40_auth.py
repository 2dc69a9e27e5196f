"""SPEC 4 and 7: the api_key and basic_auth filters through the real binary:
the allow and deny paths, the credential never reaching the upstream, the
consumer in ${consumer} and the access log, the basic_auth cache dropped on
reload, /config redaction, and every shipped example passing -t."""
import base64
import ctypes
import json
import signal
import time

from conftest import (REPO, RawConn, assert_gateway_error, conn_request, free_port, request,
                      run_sluice, upstream, wait_until)
import http.client

_libcrypt = ctypes.CDLL("libcrypt.so.1")
_libcrypt.crypt_gensalt.restype = ctypes.c_char_p
_libcrypt.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
_libcrypt.crypt.restype = ctypes.c_char_p
_libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]


def crypt_hash(password: str, prefix: str = "$2b$", count: int = 4) -> str:
    """A crypt(3) hash made by libxcrypt, as htpasswd -B or mkpasswd would."""
    salt = _libcrypt.crypt_gensalt(prefix.encode(), count, None, 0)
    assert salt, prefix
    out = _libcrypt.crypt(password.encode(), salt)
    assert out and out.startswith(b"$"), out
    return out.decode()


def basic(user_pass: str) -> str:
    return "Basic " + base64.b64encode(user_pass.encode()).decode()


def echo_headers(resp):
    assert resp.status == 200, resp
    return resp.json()["headers"]


def log_records(path):
    """The access log's lines in file order. Tests that check the order run one
    worker: each worker queues its own lines, so across workers the file order
    may differ by a few milliseconds from the order of completion."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def api_config(b, filters, log=None, **extra):
    cfg = {"upstreams": {"api": upstream(b.address)},
           "routes": [{"name": "api", "match": {"prefix": "/api"}, "upstream": "api",
                       "filters": filters},
                      {"name": "open", "match": {"prefix": "/"}, "upstream": "api"}]}
    if log:
        cfg["access_log"] = {"path": str(log)}
    cfg.update(extra)
    return cfg


CONSUMER_HEADER = {"type": "headers", "request": {"set": {"x-consumer": "${consumer}"}}}


# ---------------------------------------------------------------- api_key

def test_api_key_header(sluice, backend, tmp_path):
    b = backend()
    log = tmp_path / "access.log"
    s = sluice(api_config(b, [{"type": "api_key", "keys": {"k-alice-1": "alice", "k-bob-2": "bob"}},
                              CONSUMER_HEADER], log=log, workers=1))

    r = s.request("GET", "/api/items")
    assert_gateway_error(r, 401)
    assert r.header("www-authenticate") == 'ApiKey header="x-api-key"'
    r = s.request("GET", "/api/items", headers={"X-Api-Key": "k-alice-2"})
    assert_gateway_error(r, 401)
    assert r.header("www-authenticate") == 'ApiKey header="x-api-key"'
    assert b.count == 0  # refused requests never reach the upstream

    r = s.request("GET", "/api/items", headers={"X-Api-Key": "k-bob-2", "X-Other": "1"})
    headers = echo_headers(r)
    assert "x-api-key" not in headers  # the key never reaches the upstream
    assert headers["x-other"] == "1"
    assert headers["x-consumer"] == "bob"
    # A client cannot choose its consumer: the headers filter overwrites it.
    r = s.request("GET", "/api/items", headers={"X-Api-Key": "k-alice-1", "X-Consumer": "bob"})
    assert echo_headers(r)["x-consumer"] == "alice"
    # Another route without the filter is open, and forwards the header untouched.
    r = s.request("GET", "/other", headers={"X-Api-Key": "k-alice-1"})
    assert echo_headers(r)["x-api-key"] == "k-alice-1"

    wait_until(lambda: len(log_records(log)) >= 5, what="five access log lines")
    records = log_records(log)
    assert [rec.get("consumer") for rec in records] == [None, None, "bob", "alice", None]
    assert [rec["status"] for rec in records] == [401, 401, 200, 200, 200]
    assert records[0]["error"] == "unauthorized"


def test_api_key_query_and_keys_file(sluice, backend, tmp_path):
    b = backend()
    folder = tmp_path / "sluice0"  # the folder the harness writes the config into
    folder.mkdir()
    (folder / "keys.json").write_text(json.dumps({"q-key/1": "svc-a", "q-key-2": "svc-b"}))
    s = sluice(api_config(b, [{"type": "api_key", "header": "X-Key", "query": "api_key",
                               "keys_file": "keys.json"}, CONSUMER_HEADER]))

    r = s.request("GET", "/api/items?a=1&api_key=q-key-2&b=2&c")
    assert echo_headers(r)["x-consumer"] == "svc-b"
    rec = b.last()
    assert rec["target"] == "/api/items?a=1&b=2&c"  # the others keep their order
    r = s.request("GET", "/api/items?api_key=q-key%2F1")  # percent-decoded before comparing
    assert echo_headers(r)["x-consumer"] == "svc-a"
    assert b.last()["target"] == "/api/items"  # nothing left: no bare '?'
    r = s.request("GET", "/api/items?api_key=q-key-2&x=%20y")
    assert echo_headers(r)["x-consumer"] == "svc-b"
    assert b.last()["target"] == "/api/items?x=%20y"
    # The header works too; a key in both places: the header decides, both are removed.
    r = s.request("GET", "/api/x?api_key=wrong&z=1", headers={"x-key": "q-key/1"})
    headers = echo_headers(r)
    assert headers["x-consumer"] == "svc-a" and "x-key" not in headers
    assert b.last()["target"] == "/api/x?z=1"
    count = b.count

    r = s.request("GET", "/api/items?api_key=nope&b=2")
    assert_gateway_error(r, 401)
    assert r.header("www-authenticate") == 'ApiKey header="x-key", query="api_key"'
    r = s.request("GET", "/api/items?API_KEY=q-key-2")  # parameter names are case-sensitive
    assert_gateway_error(r, 401)
    assert b.count == count


def test_api_key_config_errors(tmp_path):
    (tmp_path / "keys.json").write_text('{"k": 5}')
    cfg = {"listen": [{"address": f"127.0.0.1:{free_port()}"}],
           "routes": [{"respond": {"status": 200}, "filters": [
               {"type": "api_key", "keys": {"k": ""}, "header": "bad header"},
               {"type": "api_key", "keys_file": "keys.json"},
               {"type": "api_key"}]}]}
    (tmp_path / "sluice.json").write_text(json.dumps(cfg))
    proc = run_sluice(["-t", "-c", "sluice.json"], cwd=tmp_path)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert 'routes[0].filters[0].keys.k: must be the consumer name' in err
    assert 'routes[0].filters[0].header: "bad header" is not a valid header name' in err
    # The file is named as resolved against the config file's folder.
    assert 'routes[0].filters[1].keys_file: "./keys.json" .k: must be the consumer' in err
    assert 'routes[0].filters[2]: needs "keys"' in err


# ---------------------------------------------------------------- basic_auth

def test_basic_auth(sluice, backend, tmp_path):
    b = backend()
    log = tmp_path / "access.log"
    users = {"alice": crypt_hash("wonderland"), "bob": crypt_hash("builder", "$6$", 5000),
             "carol": crypt_hash("c4rol", "$y$", 0), "dave": crypt_hash("d", "$5$", 1000)}
    s = sluice(api_config(b, [{"type": "basic_auth", "realm": "staff only", "users": users},
                              CONSUMER_HEADER], log=log, workers=1))

    r = s.request("GET", "/api/a")
    assert_gateway_error(r, 401)
    assert r.header("www-authenticate") == 'Basic realm="staff only", charset="UTF-8"'
    for user, pw in (("alice", "wonderland"), ("bob", "builder"), ("carol", "c4rol"),
                     ("dave", "d")):
        r = s.request("GET", "/api/a", headers={"Authorization": basic(f"{user}:{pw}")})
        headers = echo_headers(r)
        assert headers["x-consumer"] == user
        assert "authorization" not in headers  # never forwarded upstream
    for cred in ("alice:Wonderland", "mallory:wonderland", "alice:", "alice"):
        r = s.request("GET", "/api/a", headers={"Authorization": basic(cred)})
        assert_gateway_error(r, 401)
        assert r.header("www-authenticate") == 'Basic realm="staff only", charset="UTF-8"'
    r = s.request("GET", "/api/a", headers={"Authorization": "Bearer abc"})
    assert_gateway_error(r, 401)

    # Right, right again (a cache hit), then wrong on the same connection: still refused.
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    try:
        good = {"Authorization": basic("alice:wonderland")}
        assert echo_headers(conn_request(conn, "GET", "/api/1", good))["x-consumer"] == "alice"
        assert echo_headers(conn_request(conn, "GET", "/api/2", good))["x-consumer"] == "alice"
        bad = {"Authorization": basic("alice:wonderlanD")}
        assert_gateway_error(conn_request(conn, "GET", "/api/3", bad), 401)
        assert_gateway_error(conn_request(conn, "GET", "/api/3", bad), 401)
        assert echo_headers(conn_request(conn, "GET", "/api/4", good))["x-consumer"] == "alice"
    finally:
        conn.close()

    wait_until(lambda: len(log_records(log)) >= 15, what="the access log lines")
    consumers = [rec.get("consumer") for rec in log_records(log)]
    assert consumers[:5] == [None, "alice", "bob", "carol", "dave"]
    assert consumers[-5:] == ["alice", "alice", None, None, "alice"]


def test_basic_auth_reload_drops_the_cache(sluice, backend, tmp_path):
    """A verified credential is remembered for 60 s, but a reload starts
    afresh: a password changed in the htpasswd file takes effect at once,
    even on a connection whose client was just let in with the old one."""
    b = backend()
    folder = tmp_path / "sluice0"
    folder.mkdir()
    htpasswd = folder / "users.htpasswd"
    htpasswd.write_text(f"# staff\nalice:{crypt_hash('old-pw')}\r\n")
    s = sluice(api_config(b, [{"type": "basic_auth", "htpasswd_file": "users.htpasswd"},
                              CONSUMER_HEADER], workers=1))
    old = {"Authorization": basic("alice:old-pw")}
    new = {"Authorization": basic("alice:new-pw")}
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    try:
        for _ in range(3):  # verified once, then remembered
            assert echo_headers(conn_request(conn, "GET", "/api/x", old))["x-consumer"] == "alice"
        assert_gateway_error(conn_request(conn, "GET", "/api/x", new), 401)

        htpasswd.write_text(f"alice:{crypt_hash('new-pw', '$6$', 5000)}\n")
        s.reload()

        def switched():
            return conn_request(conn, "GET", "/api/x", old).status == 401
        wait_until(switched, timeout=10, what="the reload to drop the remembered password")
        assert echo_headers(conn_request(conn, "GET", "/api/x", new))["x-consumer"] == "alice"
        assert_gateway_error(conn_request(conn, "GET", "/api/x", old), 401)
    finally:
        conn.close()
    # The default realm.
    r = s.request("GET", "/api/x")
    assert r.header("www-authenticate") == 'Basic realm="sluice", charset="UTF-8"'


def test_basic_auth_config_errors(tmp_path):
    (tmp_path / "users.htpasswd").write_text("bob:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n")
    cfg = {"listen": [{"address": f"127.0.0.1:{free_port()}"}],
           "filters": [{"type": "basic_auth", "users": {"alice": "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}},
                       {"type": "basic_auth", "htpasswd_file": "users.htpasswd"}],
           "routes": [{"respond": {"status": 200}}]}
    (tmp_path / "sluice.json").write_text(json.dumps(cfg))
    proc = run_sluice(["-t", "-c", "sluice.json"], cwd=tmp_path)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert 'filters[0].users.alice: the hash of user "alice" is not a supported crypt(3) hash' in err
    assert ('filters[1].htpasswd_file: "./users.htpasswd" line 1: the hash of user '
            '"bob" has an unsupported hash format "$apr1$"') in err


# ---------------------------------------------------------------- shared

def test_config_endpoint_redacts_keys_and_users(sluice, backend, tmp_path):
    b = backend()
    folder = tmp_path / "sluice0"
    folder.mkdir()
    (folder / "keys.json").write_text('{"file-key": "svc"}')
    admin = f"127.0.0.1:{free_port()}"
    s = sluice(api_config(b, [{"type": "api_key", "keys": {"inline-secret-key": "svc"}},
                              {"type": "api_key", "keys_file": "keys.json"},
                              {"type": "basic_auth", "users": {"alice": crypt_hash("pw")}}],
                          admin={"address": admin}))
    _, port = s.admin
    r = request(port, "GET", "/config")
    assert r.status == 200
    assert b"inline-secret-key" not in r.body and b"$2b$" not in r.body
    filters = r.json()["routes"][0]["filters"]
    assert filters[0]["keys"] == "***"
    assert filters[1]["keys_file"] == "keys.json"  # a path is no secret
    assert filters[2]["users"] == "***"


def test_every_example_passes_check(tmp_path):
    """config/examples: each file is a working configuration (sluice -t)."""
    examples = sorted((REPO / "config" / "examples").glob("*.json"))
    assert len(examples) >= 3
    for path in examples:
        proc = run_sluice(["-t", "-c", str(path)], cwd=path.parent)
        assert proc.returncode == 0, f"{path.name}: {proc.stderr.decode()}"
        assert b"configuration ok" in proc.stdout, path.name
