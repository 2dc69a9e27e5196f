"""SPEC 4 / SPEC 7 `jwt`: bearer tokens verified by the real binary, with
keys from a secret, a PEM public key and a JWKS file; every must-reject
case of issue 8 through the gateway. Tokens are made here with PyJWT and
cryptography (Debian's python3-jwt and python3-cryptography), or by hand
where a library would refuse to make them (alg none, bad ECDSA values)."""
import base64
import hashlib
import hmac
import json
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import assert_gateway_error, rec_header, upstream

SECRET = "integration-secret-of-at-least-32-bytes"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def claims(**extra):
    c = {"sub": "alice", "iss": "idp", "aud": "api", "exp": int(time.time()) + 300}
    c.update(extra)
    return c


def hs_raw(header: str, payload: str, key: bytes = SECRET.encode()) -> str:
    """A token from raw JSON texts, HS256-signed with `key`."""
    signing = b64(header.encode()) + "." + b64(payload.encode())
    sig = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(sig)


@pytest.fixture(scope="module")
def keys():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    return {"rsa": rsa_key, "ec": ec_key, "ed": ed_key}


def pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def ec_jwk(private_key, kid):
    nums = private_key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "kid": kid,
            "x": b64(nums.x.to_bytes(32, "big")), "y": b64(nums.y.to_bytes(32, "big"))}


def ed_jwk(private_key, kid):
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(raw)}


@pytest.fixture
def gw(sluice, backend, keys, tmp_path):
    b = backend("api")
    folder = tmp_path / "sluice0"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rsa.pem").write_bytes(pem(keys["rsa"]))
    (folder / "jwks.json").write_text(json.dumps(
        {"keys": [ec_jwk(keys["ec"], "ec-1"), ed_jwk(keys["ed"], "ed-1")]}))
    common = {"issuer": "idp", "audience": ["api", "web"], "leeway_s": 5}
    s = sluice({
        "upstreams": {"api": upstream(b.address)},
        "routes": [
            {"name": "hs", "match": {"prefix": "/hs"}, "upstream": "api", "filters": [
                dict(common, type="jwt", algorithms=["HS256"], secret=SECRET,
                     claims_to_headers={"sub": "x-user-id", "tier": "x-tier"})]},
            {"name": "rs", "match": {"prefix": "/rs"}, "upstream": "api", "filters": [
                dict(common, type="jwt", algorithms=["RS256", "PS256", "HS256"],
                     public_key_file="rsa.pem")]},
            {"name": "jwks", "match": {"prefix": "/jwks"}, "upstream": "api", "filters": [
                dict(common, type="jwt", algorithms=["ES256", "EdDSA"], jwks_file="jwks.json",
                     header="x-token", forward_token=False)]},
        ],
    })
    return s, b


def get(s, path, token=None, scheme="Bearer", header="Authorization", extra=None):
    headers = dict(extra or {})
    if token is not None:
        headers[header] = f"{scheme} {token}" if scheme else token
    return s.request("GET", path, headers=headers)


def assert_invalid(resp):
    assert_gateway_error(resp, 401)
    assert resp.header("www-authenticate") == 'Bearer realm="sluice", error="invalid_token"', resp


def test_valid_hs256_sets_consumer_and_claim_headers(gw):
    s, b = gw
    token = pyjwt.encode(claims(tier="gold"), SECRET, algorithm="HS256")
    r = get(s, "/hs/x", token, extra={"X-User-Id": "mallory", "X-Tier": "platinum"})
    assert r.status == 200, r
    rec = b.last()
    assert rec_header(rec, "x-user-id") == "alice"
    assert rec_header(rec, "x-tier") == "gold"
    assert rec_header(rec, "authorization") == f"Bearer {token}"
    # the cached verdict gives the same result
    r = get(s, "/hs/x", token, extra={"X-User-Id": "mallory"})
    assert r.status == 200 and rec_header(b.last(), "x-user-id") == "alice"


def test_missing_token_gets_bare_challenge(gw):
    s, b = gw
    for headers in ({}, {"Authorization": "Basic YTpi"}):
        r = s.request("GET", "/hs/x", headers=headers)
        assert_gateway_error(r, 401)
        assert r.header("www-authenticate") == 'Bearer realm="sluice"', r
    assert b.count == 0


def test_rs256_ps256_and_jwks_keys(gw, keys):
    s, b = gw
    for alg in ("RS256", "PS256"):
        token = pyjwt.encode(claims(), keys["rsa"], algorithm=alg)
        assert get(s, "/rs", token).status == 200, alg
    es = pyjwt.encode(claims(), keys["ec"], algorithm="ES256", headers={"kid": "ec-1"})
    r = get(s, "/jwks", es, scheme=None, header="X-Token")
    assert r.status == 200, r
    assert rec_header(b.last(), "x-token") is None  # forward_token: false
    ed = pyjwt.encode(claims(), keys["ed"], algorithm="EdDSA", headers={"kid": "ed-1"})
    assert get(s, "/jwks", ed, scheme=None, header="X-Token").status == 200


@pytest.mark.parametrize("spelling", ["none", "None", "NONE", "nOnE"])
def test_alg_none_refused(gw, spelling):
    s, b = gw
    unsigned = b64json({"alg": spelling, "typ": "JWT"}) + "." + b64json(claims())
    for token in (unsigned + ".", unsigned + ".c2ln"):
        assert_invalid(get(s, "/hs", token))
    assert b.count == 0


def test_hs_rs_confusion_refused(gw, keys):
    s, b = gw
    public_pem = pem(keys["rsa"])
    token = hs_raw(json.dumps({"alg": "HS256"}), json.dumps(claims()), key=public_pem)
    assert_invalid(get(s, "/rs", token))
    assert b.count == 0


def test_unknown_kid_refused(gw, keys):
    s, b = gw
    token = pyjwt.encode(claims(), keys["ec"], algorithm="ES256", headers={"kid": "ec-9"})
    assert_invalid(get(s, "/jwks", token, scheme=None, header="X-Token"))
    # the right key under the wrong kid: an Ed25519 key never verifies ES256
    token = pyjwt.encode(claims(), keys["ec"], algorithm="ES256", headers={"kid": "ed-1"})
    assert_invalid(get(s, "/jwks", token, scheme=None, header="X-Token"))


@pytest.mark.parametrize("member", [
    {"jku": "http://127.0.0.1:1/jwks.json"},
    {"jwk": {"kty": "oct", "k": b64(SECRET.encode())}},
    {"x5u": "http://127.0.0.1:1/cert.pem"},
    {"x5c": ["MIIBIjANBgkq"]},
])
def test_key_in_header_refused(gw, member):
    s, b = gw
    header = dict({"alg": "HS256"}, **member)
    token = hs_raw(json.dumps(header), json.dumps(claims()))
    assert_invalid(get(s, "/hs", token))


def test_unknown_crit_refused(gw):
    s, b = gw
    token = hs_raw(json.dumps({"alg": "HS256", "crit": ["x-custom"], "x-custom": 1}),
                   json.dumps(claims()))
    assert_invalid(get(s, "/hs", token))


def test_ecdsa_bad_values_and_der_refused(gw, keys):
    s, b = gw
    good = pyjwt.encode(claims(), keys["ec"], algorithm="ES256", headers={"kid": "ec-1"})
    assert get(s, "/jwks", good, scheme=None, header="X-Token").status == 200
    signing, _, sig = good.rpartition(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    r, s_ = raw[:32], raw[32:]
    n = ec.SECP256R1().key_size and int(
        "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
    order = n.to_bytes(32, "big")
    bad = [bytes(32) + s_, r + bytes(32), order + s_, r + order]
    for sig_bytes in bad:
        assert_invalid(get(s, "/jwks", signing + "." + b64(sig_bytes), scheme=None,
                           header="X-Token"))
    der = keys["ec"].sign(signing.encode(), ec.ECDSA(hashes.SHA256()))
    assert decode_dss_signature(der)  # a real DER signature over the same input
    assert_invalid(get(s, "/jwks", signing + "." + b64(der), scheme=None, header="X-Token"))


def test_token_over_8k_refused(gw):
    s, b = gw
    token = pyjwt.encode(claims(pad="x" * 6500), SECRET, algorithm="HS256")
    assert len(token) > 8192
    assert_invalid(get(s, "/hs", token))
    small = pyjwt.encode(claims(pad="x" * 5000), SECRET, algorithm="HS256")
    assert len(small) < 8192
    assert get(s, "/hs", small).status == 200


def test_time_claims_with_leeway(gw):
    s, b = gw
    now = int(time.time())
    assert_invalid(get(s, "/hs", pyjwt.encode(claims(exp=now - 60), SECRET, algorithm="HS256")))
    assert get(s, "/hs", pyjwt.encode(claims(exp=now - 2), SECRET, algorithm="HS256")).status == 200
    assert_invalid(get(s, "/hs", pyjwt.encode(claims(nbf=now + 60), SECRET, algorithm="HS256")))
    assert get(s, "/hs", pyjwt.encode(claims(nbf=now + 2), SECRET, algorithm="HS256")).status == 200
    no_exp = claims()
    del no_exp["exp"]
    assert_invalid(get(s, "/hs", pyjwt.encode(no_exp, SECRET, algorithm="HS256")))


def test_issuer_and_audience(gw):
    s, b = gw
    assert_invalid(get(s, "/hs", pyjwt.encode(claims(iss="evil"), SECRET, algorithm="HS256")))
    assert_invalid(get(s, "/hs", pyjwt.encode(claims(aud="other"), SECRET, algorithm="HS256")))
    ok = pyjwt.encode(claims(aud=["other", "web"]), SECRET, algorithm="HS256")
    assert get(s, "/hs", ok).status == 200


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def non_canonical(sig: str) -> str:
    """The same bytes with a spare low bit of the last character set (32 bytes: 2 spare bits)."""
    assert len(sig) % 4 == 3
    last = ALPHABET.index(sig[-1]) | 1
    spelled = sig[:-1] + ALPHABET[last]
    assert spelled != sig
    assert base64.urlsafe_b64decode(spelled + "=") == base64.urlsafe_b64decode(sig + "=")
    return spelled


def test_malformed_tokens_refused(gw):
    s, b = gw
    good = pyjwt.encode(claims(), SECRET, algorithm="HS256")
    h, p, sig = good.split(".")
    padded_sig = base64.urlsafe_b64encode(base64.urlsafe_b64decode(sig + "=")).decode()
    assert padded_sig.endswith("=")
    bad = [
        h + "." + p,
        good + ".x",
        h + "." + p + "." + padded_sig,
        h + "." + p + "." + sig.replace("-", "+").replace("_", "/") + "+",
        h + "." + p + "." + non_canonical(sig),
        b64(b"{\"alg\":\"HS256\"") + "." + p + "." + sig,
    ]
    for token in bad:
        if token == good:
            continue
        assert_invalid(get(s, "/hs", token))
    assert get(s, "/hs", good).status == 200


def test_duplicate_members_and_non_objects_refused(gw):
    s, b = gw
    payload = json.dumps(claims())
    dup_header = '{"alg":"HS256","alg":"HS256"}'
    dup_payload = payload[:-1] + ',"sub":"root"}'
    for header, body in [(dup_header, payload), ('{"alg":"HS256"}', dup_payload),
                         ('["HS256"]', payload), ('{"alg":"HS256"}', '"text"'),
                         ('{"alg":"HS256"}', '[1]')]:
        assert_invalid(get(s, "/hs", hs_raw(header, body)))
    assert get(s, "/hs", hs_raw('{"alg":"HS256"}', payload)).status == 200


# --------------------------------------------------------------------------
# jwks_url: keys fetched by the gateway from a real local HTTP server


class JwksServer:
    """What the JWKS backend serves: a document that tests change, an
    optional delay, and a count of the fetches."""

    def __init__(self, keys):
        self.doc = {"keys": keys}
        self.delay = 0.0
        self.fetches = 0

    async def handler(self, request, record, backend):
        import asyncio

        from aiohttp import web
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response(self.doc)


def jwks_gateway(sluice, backend, server, **options):
    api = backend("api")
    idp = backend("idp", handler=server.handler)
    filt = {"type": "jwt", "algorithms": ["ES256", "EdDSA"],
            "jwks_url": f"http://{idp.address}/.well-known/jwks.json"}
    filt.update(options)
    s = sluice({
        "upstreams": {"api": upstream(api.address)},
        "routes": [{"name": "api", "upstream": "api", "filters": [filt]}],
    })
    return s, api, idp


def test_jwks_url_first_request_waits_for_the_fetch(sluice, backend, keys):
    server = JwksServer([ec_jwk(keys["ec"], "ec-1")])
    server.delay = 1.0
    s, api, idp = jwks_gateway(sluice, backend, server)
    token = pyjwt.encode(claims(), keys["ec"], algorithm="ES256", headers={"kid": "ec-1"})
    started = time.monotonic()
    r = get(s, "/x", token)
    assert r.status == 200, r  # paused until the keys came, not refused
    assert rec_header(api.last(), "authorization") == f"Bearer {token}"
    assert time.monotonic() - started < 5
    assert idp.last()["path"] == "/.well-known/jwks.json"


def test_jwks_url_rotation_picks_up_a_new_kid(sluice, backend, keys):
    server = JwksServer([ec_jwk(keys["ec"], "ec-1")])
    s, api, idp = jwks_gateway(sluice, backend, server, jwks_refresh_s=3600)
    old = pyjwt.encode(claims(), keys["ec"], algorithm="ES256", headers={"kid": "ec-1"})
    new = pyjwt.encode(claims(), keys["ed"], algorithm="EdDSA", headers={"kid": "ed-2"})
    assert get(s, "/x", old).status == 200
    # The issuer rotates: the new kid is unknown to the gateway until it refetches,
    # which it does at once the first time it sees the kid (each worker on its own).
    server.doc = {"keys": [ec_jwk(keys["ec"], "ec-1"), ed_jwk(keys["ed"], "ed-2")]}
    for _ in range(4):
        r = get(s, "/x", new)
        assert r.status == 200, r
    assert get(s, "/x", old).status == 200

    # A kid nobody publishes: refused, and the refetches it causes are bounded
    # (at most one per worker and minute, whatever the number of requests).
    before = server.fetches
    bogus = pyjwt.encode(claims(), keys["ed"], algorithm="EdDSA", headers={"kid": "nope"})
    for _ in range(10):
        assert_invalid(get(s, "/x", bogus))
    assert server.fetches - before <= 2, (before, server.fetches)


def test_jwks_url_refresh_drops_a_withdrawn_key(sluice, backend, keys):
    server = JwksServer([ec_jwk(keys["ec"], "ec-1"), ed_jwk(keys["ed"], "ed-1")])
    s, api, idp = jwks_gateway(sluice, backend, server, jwks_refresh_s=1)
    ec_token = pyjwt.encode(claims(), keys["ec"], algorithm="ES256", headers={"kid": "ec-1"})
    for _ in range(4):  # verified, then served from each worker's cache
        assert get(s, "/x", ec_token).status == 200
    server.doc = {"keys": [ed_jwk(keys["ed"], "ed-1")]}
    # every worker refetches within a second: the cached verdict goes with the key
    deadline = time.monotonic() + 5
    refused = 0
    while time.monotonic() < deadline and refused < 4:
        r = get(s, "/x", ec_token)
        refused = refused + 1 if r.status == 401 else 0
        time.sleep(0.1)
    assert refused >= 4, "the withdrawn key was still accepted"
    ed_token = pyjwt.encode(claims(), keys["ed"], algorithm="EdDSA", headers={"kid": "ed-1"})
    assert get(s, "/x", ed_token).status == 200


def test_jwks_url_unreachable_answers_503(sluice, backend, keys):
    from conftest import free_port
    api = backend("api")
    s = sluice({
        "upstreams": {"api": upstream(api.address)},
        "routes": [{"name": "api", "upstream": "api", "filters": [
            {"type": "jwt", "algorithms": ["ES256"],
             "jwks_url": f"http://127.0.0.1:{free_port()}/jwks.json"}]}],
    })
    token = pyjwt.encode(claims(), keys["ec"], algorithm="ES256", headers={"kid": "ec-1"})
    assert_gateway_error(get(s, "/x", token), 503)
    assert api.count == 0


def test_config_endpoint_redacts_the_secret(sluice, backend):
    from conftest import free_port, request
    api = backend("api")
    s = sluice({
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "upstreams": {"api": upstream(api.address)},
        "routes": [{"name": "api", "upstream": "api", "filters": [
            {"type": "jwt", "algorithms": ["HS256"], "secret": SECRET}]}],
    })
    _, port = s.admin
    r = request(port, "GET", "/config")
    assert r.status == 200, r
    assert json.loads(r.body)["routes"][0]["filters"][0]["secret"] == "***"
    assert SECRET.encode() not in r.body
