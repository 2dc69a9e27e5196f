"""SPEC 6: every access log line is valid UTF-8 JSON, whatever bytes the
request carried (issue 7: a Host of bytes 0xFF 0xFE used to make a line that
was not JSON). The one JSON writer escapes each byte that is not UTF-8 as
\\u00XX of the byte."""
import http.client
import json
import os
import re
import signal
import time

from conftest import (RawConn, conn_request, free_port, metric_value, request, scrape_metrics,
                      wait_until)


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


def respond_config(log, **access_log):
    return {"access_log": dict(path=str(log), **access_log),
            "routes": [{"name": "r", "match": {"prefix": "/"},
                        "respond": {"status": 200, "body": "hi"}}]}


def test_combined_format(sluice, tmp_path):
    log = tmp_path / "access.log"
    s = sluice(respond_config(log, format="combined"))
    r = s.request("GET", "/c/d?q=1", headers={"User-Agent": "probe/1.0",
                                                "Referer": "http://ref.test/"})
    assert r.status == 200
    s.request("GET", "/plain", headers={"User-Agent": ""})
    wait_until(lambda: len(log_lines(log)) >= 2, what="two combined lines")
    first, second = (line.decode() for line in log_lines(log))
    # Apache/nginx "combined": host ident user [time] "request line" status bytes "referer" "agent"
    assert re.fullmatch(r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
                        r'"GET /c/d\?q=1 HTTP/1\.1" 200 2 "http://ref\.test/" "probe/1\.0"', first), first
    assert re.fullmatch(r'.*"GET /plain HTTP/1\.1" 200 2 "-" ".*"', second), second


def test_sigusr1_reopens_the_file_for_logrotate(sluice, tmp_path):
    log = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    s = sluice(respond_config(log))
    assert s.request("GET", "/before").status == 200
    wait_until(lambda: len(log_lines(log)) == 1, what="the first line")
    os.rename(log, rotated)  # what logrotate does first
    assert s.request("GET", "/between").status == 200
    # Until told, sluice keeps writing to the file it has open (now renamed).
    wait_until(lambda: len(log_lines(rotated)) == 2, what="the second line in the renamed file")
    assert not log.exists()
    s.send_signal(signal.SIGUSR1)
    wait_until(log.exists, what="the file opened again by its path")
    assert s.request("GET", "/after").status == 200
    wait_until(lambda: len(log_lines(log)) == 1, what="a line in the new file")
    assert [strict_json(line)["path"] for line in log_lines(rotated)] == ["/before", "/between"]
    assert [strict_json(line)["path"] for line in log_lines(log)] == ["/after"]
    assert s.running()


def test_log_nobody_reads_drops_lines_and_requests_go_on(sluice, tmp_path):
    """The log is a FIFO whose reader never reads: once the pipe and the
    worker's buffer are full, lines are dropped and counted, and requests
    are still answered at once."""
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held open, never read
    try:
        cfg = respond_config(fifo)
        cfg.update(workers=1, admin={"address": f"127.0.0.1:{free_port()}"})
        s = sluice(cfg)
        _, admin_port = s.admin
        path = "/" + "x" * 6000  # about 6 KiB per line: the 1 MiB buffer fills in ~200 lines
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        slowest, sent, dropped = 0.0, 0, 0
        try:
            while sent < 2000 and dropped < 50:
                start = time.monotonic()
                r = conn_request(conn, "GET", path)
                slowest = max(slowest, time.monotonic() - start)
                assert r.status == 200
                sent += 1
                if sent % 50 == 0:
                    dropped = metric_value(scrape_metrics(admin_port),
                                           "sluice_access_log_dropped_total")
        finally:
            conn.close()
        assert dropped >= 50, f"{sent} requests, {dropped} lines dropped"
        # Generous for a loaded machine with sanitizers: a request that waited
        # for the log would wait forever, not a few seconds.
        assert slowest < 5, f"slowest request took {slowest:.1f}s"
        assert s.request("GET", "/still").status == 200
    finally:
        os.close(reader)
