"""Issue 12 section 1: defects found by hostile clients (SPEC 1, SPEC 7 "listeners",
"slow readers")."""
import json
import os
import re
import resource
import socket
import threading
import time

from conftest import RSS_ENV, RssSampler, free_port, request, run_sluice, wait_until


def test_pipelined_local_responses_keep_memory_bounded(sluice):
    """A client pipelining requests the gateway answers itself (404, `respond`)
    without reading: the next request waits while the unsent output is above
    the high-water mark, so memory stays flat; every response comes, in order."""
    s = sluice({"routes": [{"match": {"path": "/r"},
                            "respond": {"status": 200, "body": "x" * 2000}}]}, env=RSS_ENV)
    assert s.request("GET", "/r").status == 200
    base = s.rss_kib()
    one = b"GET /r HTTP/1.1\r\nHost: a\r\n\r\nGET /nomatch HTTP/1.1\r\nHost: a\r\n\r\n"
    pairs = 1_500_000 // len(one)  # about 100 MB of responses for 1.5 MB of requests
    data = one * (pairs - 1) + (b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n"
                                b"GET /nomatch HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", s.port))
    sent = threading.Event()

    def send():
        try:
            sock.sendall(data)
        except OSError:
            pass
        sent.set()

    sender = threading.Thread(target=send, daemon=True)
    with RssSampler(s) as sampler:
        sender.start()
        # Unfixed, the gateway reads everything and answers into memory: the
        # send completes. Fixed, it stops reading: the send blocks.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not sent.is_set():
            time.sleep(0.1)
        time.sleep(1)
    growth_mib = (sampler.peak - base) / 1024
    assert growth_mib < 16, f"RSS grew by {growth_mib:.0f} MiB"

    received = bytearray()
    sock.settimeout(30)
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    sock.close()
    sender.join(5)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert len(statuses) == 2 * pairs
    assert statuses == [b"200", b"404"] * pairs
    assert s.request("GET", "/r").status == 200


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_accept_backs_off_at_the_descriptor_limit(sluice):
    """Out of descriptors, the listener neither spins nor floods the log, and
    accepts again once descriptors are free (issue 12, 1.2)."""
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    s = sluice({"workers": 1, "routes": [{"respond": {"status": 200, "body": "ok"}}]},
               preexec=low_limit)
    assert "RLIMIT_NOFILE" in s.stderr() and "limits.max_connections 65536" in s.stderr()
    socks = []
    try:
        for _ in range(100):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            socks.append(c)
        wait_until(lambda: "accept: Too many open files" in s.stderr(), timeout=5,
                   what="the EMFILE report")
        before = _cpu_seconds(s.pid)
        lines_before = len(s.stderr().splitlines())
        time.sleep(2)
        cpu = _cpu_seconds(s.pid) - before
        new_lines = len(s.stderr().splitlines()) - lines_before
        assert cpu < 0.5, f"{cpu:.2f} s of CPU in 2 s at the descriptor limit"
        assert new_lines <= 6, s.stderr()[-2000:]
    finally:
        for c in socks:
            c.close()

    def served():
        try:
            return s.request("GET", "/", timeout=2).status == 200
        except OSError:
            return False
    wait_until(served, timeout=10, what="a request after the descriptors were freed")


def test_start_up_raises_the_soft_descriptor_limit(sluice):
    def low_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 4096))

    s = sluice({"limits": {"max_connections": 1000},
                "routes": [{"respond": {"status": 200}}]}, preexec=low_soft_limit)
    with open(f"/proc/{s.pid}/limits") as f:
        line = next(l for l in f if l.startswith("Max open files"))
    assert line.split()[3:5] == ["2256", "4096"], line
    assert "RLIMIT_NOFILE" not in s.stderr()


def test_second_instance_on_a_held_port_exits_3(sluice):
    """SO_REUSEPORT is shared only among one process's workers: a second
    sluice on the same port is a start-up failure (SPEC 1, SPEC 7 "listeners")."""
    cfg = {"workers": 2, "routes": [{"respond": {"status": 200, "body": "A"}}]}
    a = sluice(cfg)
    cfg_b = dict(a.config)
    cfg_b["routes"] = [{"respond": {"status": 200, "body": "B"}}]
    b = sluice(cfg_b, wait=False, merge=False)
    assert b.wait_exit(10) == 3, b.stderr()
    err = [l for l in b.stderr().splitlines() if l.strip()]
    assert len(err) == 1, err
    assert "listen[0].address" in err[0] and a.config["listen"][0]["address"] in err[0], err
    assert "choose a free port" in err[0], err
    for _ in range(20):
        r = a.request("GET", "/")
        assert r.status == 200 and r.body == b"A"

    # A reload that keeps the listener and adds one still binds both in every worker.
    port2 = free_port()
    cfg_a = dict(a.config)
    cfg_a["listen"] = a.config["listen"] + [{"address": f"127.0.0.1:{port2}"}]
    a.write_config(cfg_a)
    a.reload()
    wait_until(lambda: "configuration reloaded" in a.stderr(), timeout=10, what="the reload")
    assert "cannot listen" not in a.stderr(), a.stderr()
    for port in (a.config["listen"][0]["address"], f"127.0.0.1:{port2}"):
        for _ in range(10):
            r = request(int(port.rsplit(":", 1)[1]), "GET", "/")
            assert r.status == 200 and r.body == b"A"


def _cli_config(port):
    return ('{\n  "listen": [{"address": "127.0.0.1:%d"}],\n'
            '  "limits": {"max_connections": 100},\n'
            '  "routes": [{"respond": {"status": 200}}]\n}\n' % port)


def test_config_that_is_a_fifo_is_refused_not_waited_for(tmp_path):
    fifo = tmp_path / "sluice.json"
    os.mkfifo(fifo)
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path, timeout=10)
    assert p.returncode == 1, p
    assert p.stderr.decode().strip() == (
        "sluice.json: cannot read: not a regular file (a FIFO, socket or device)"), p.stderr


def test_files_the_config_names_that_are_fifos_are_refused_not_waited_for(tmp_path):
    """Every file a configuration names is opened the same way as the file
    itself: a FIFO is an error naming the key, never a start that hangs."""
    for name in ("users.htpasswd", "keys.json", "jwks.json", "pub.pem", "cert.pem", "key.pem"):
        os.mkfifo(tmp_path / name)
    route_filters = [
        {"type": "basic_auth", "htpasswd_file": "users.htpasswd"},
        {"type": "api_key", "keys_file": "keys.json"},
        {"type": "jwt", "jwks_file": "jwks.json", "algorithms": ["RS256"]},
        {"type": "jwt", "public_key_file": "pub.pem", "algorithms": ["RS256"]},
    ]
    config = {
        "listen": [{"address": f"127.0.0.1:{free_port()}",
                    "tls": {"certificates": [{"cert": "cert.pem", "key": "key.pem"}]}}],
        "routes": [{"respond": {"status": 200}, "filters": route_filters}],
    }
    (tmp_path / "sluice.json").write_text(json.dumps(config))
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path, timeout=10)
    assert p.returncode == 1, p
    err = p.stderr.decode()
    for where in ("routes[0].filters[0].htpasswd_file", "routes[0].filters[1].keys_file",
                  "routes[0].filters[2].jwks_file", "routes[0].filters[3].public_key_file",
                  "listen[0].tls.certificates[0].cert", "listen[0].tls.certificates[0].key"):
        assert where in err, (where, err)
    assert err.count("not a regular file") >= 6, err


def test_integer_too_big_names_its_key(tmp_path):
    text = _cli_config(free_port()).replace('"max_connections": 100',
                                            '"max_connections": 99999999999999999999999')
    (tmp_path / "sluice.json").write_text(text)
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 1, p
    err = p.stderr.decode().strip()
    assert err.startswith("sluice.json: limits.max_connections: too big integer"), err
    assert "(line 3, column " in err, err


def test_byte_order_mark_is_named(tmp_path):
    (tmp_path / "sluice.json").write_bytes(b"\xef\xbb\xbf" + _cli_config(free_port()).encode())
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 1, p
    assert p.stderr.decode().strip() == (
        "sluice.json:1:1: syntax error: a UTF-8 byte order mark (BOM) at the start of the file: "
        "save the file without it"), p.stderr
