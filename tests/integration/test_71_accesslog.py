"""SPEC 6: every access log line is valid UTF-8 JSON, whatever bytes the
request carried (issue 7: a Host of bytes 0xFF 0xFE used to make a line that
was not JSON). The one JSON writer escapes each byte that is not UTF-8 as
\\u00XX of the byte."""
import json

from conftest import RawConn, free_port, request, wait_until


def log_lines(path):
    if not path.exists():
        return []
    return [line for line in path.read_bytes().split(b"\n") if line]


def strict_json(line: bytes):
    """json.loads of the line decoded as strict UTF-8 (raises on any invalid byte)."""
    return json.loads(line.decode("utf-8", errors="strict"))


def test_invalid_utf8_host_makes_a_valid_json_line(sluice, tmp_path):
    log = tmp_path / "access.log"
    s = sluice({"access_log": {"path": str(log)},
                "routes": [{"name": "caf\u00e9", "match": {"prefix": "/"},
                            "respond": {"status": 200, "body": "hi"}}]})
    with RawConn(s.port) as c:
        c.send(b"GET /x HTTP/1.1\r\nHost: \xff\xfe\r\nUser-Agent: t\r\nConnection: close\r\n\r\n")
        r = c.read_response()
    # obs-text is allowed in a field value (RFC 9110 5.5) but not in a Host (SPEC 7 "Host").
    assert r.status == 400
    wait_until(lambda: len(log_lines(log)) >= 1, what="the access log line")
    line = log_lines(log)[-1]
    record = strict_json(line)
    assert record["status"] == 400
    assert record["host"] == "\u00ff\u00fe"  # each byte escaped as \u00XX of its value
    assert b'"host":"\\u00ff\\u00fe"' in line
    # Valid non-ASCII text is kept as it is, not escaped.
    assert request(s.port, "GET", "/x").status == 200
    wait_until(lambda: len(log_lines(log)) >= 2, what="the second access log line")
    line = log_lines(log)[-1]
    record = strict_json(line)
    assert record["route"] == "caf\u00e9"
    assert "caf\u00e9".encode() in line


def test_invalid_utf8_path_and_method_bytes(sluice, tmp_path):
    log = tmp_path / "access.log"
    s = sluice({"access_log": {"path": str(log)},
                "routes": [{"match": {"prefix": "/"}, "respond": {"status": 200}}]})
    with RawConn(s.port) as c:
        c.send(b"GET /a%FF\xc3\xa9 HTTP/1.1\r\nHost: h\xc0\xaf\xed\xa0\x80\r\nConnection: close\r\n\r\n")
        c.read_response()
    r = request(s.port, "GET", "/ok")
    assert r.status == 200
    wait_until(lambda: len(log_lines(log)) >= 2, what="two access log lines")
    for line in log_lines(log):
        strict_json(line)


def test_config_endpoint_is_the_same_writer(sluice):
    s = sluice({"admin": {"address": f"127.0.0.1:{free_port()}"},
                "routes": [{"name": "caf\u00e9 \"q\" \\ \t", "match": {"path": "/a"},
                            "respond": {"status": 200, "body": "x\u20ac"}}]})
    _, port = s.admin
    r = request(port, "GET", "/config")
    assert r.status == 200
    data = strict_json(r.body)
    assert data["routes"][0]["name"] == "caf\u00e9 \"q\" \\ \t"
    assert data["routes"][0]["respond"]["body"] == "x\u20ac"
