"""SPEC 1 and 2: command line, exit codes, configuration errors."""
import json
import re
import signal
import socket

from conftest import free_port, request, run_sluice, wait_until


def good_config(port=None):
    return {
        "listen": [{"address": f"127.0.0.1:{port or free_port()}"}],
        "routes": [{"name": "hello", "respond": {"status": 200, "body": "hi"}}],
    }


def write(tmp_path, config, name="sluice.json"):
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    return path


def lines(data: bytes):
    return [line for line in data.decode(errors="replace").splitlines() if line.strip()]


def test_help_goes_to_stdout_and_exits_0(tmp_path):
    p = run_sluice(["-h"], tmp_path)
    assert p.returncode == 0, p
    out = p.stdout.decode()
    assert "sluice" in out and "-c" in out and "-t" in out and "-V" in out, out


def test_version_names_sluice_and_libraries(tmp_path):
    p = run_sluice(["-V"], tmp_path)
    assert p.returncode == 0, p
    out = p.stdout.decode()
    assert re.match(r"^sluice \d+\.\d+\.\d+", out), out
    for lib in ("libevent", "nghttp2", "openssl", "jansson", "pcre2"):
        assert lib in out.lower(), (lib, out)


def test_check_good_config_prints_configuration_ok(tmp_path):
    port = free_port()
    write(tmp_path, good_config(port))
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 0, p
    assert p.stdout.decode().strip() == "configuration ok", p
    # -t starts nothing: the port is still free.
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_comment_keys_are_allowed(tmp_path):
    cfg = good_config()
    cfg["_comment"] = "keys starting with _ are comments"
    cfg["routes"][0]["_note"] = {"anything": [1, 2]}
    write(tmp_path, cfg)
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 0, p.stderr


def test_unknown_upstream_names_path_and_defined_list(tmp_path):
    cfg = good_config()
    cfg["upstreams"] = {"users": {"targets": ["127.0.0.1:1"]},
                        "orders": {"targets": ["127.0.0.1:2"]}}
    cfg["routes"] = [{"match": {"prefix": "/u"}, "upstream": "userz"}]
    write(tmp_path, cfg)
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 1, p
    err = lines(p.stderr)
    hits = [l for l in err if l.startswith('sluice.json: routes[0].upstream: unknown upstream "userz"')]
    assert len(hits) == 1, err
    m = re.search(r"\(defined: ([^)]*)\)", hits[0])
    assert m and set(m.group(1).split(", ")) == {"users", "orders"}, hits[0]
    assert p.stdout.decode().strip() == "", "errors go to stderr only"


def test_syntax_error_has_line_and_column(tmp_path):
    text = ('{\n'
            '  "listen": [ { "address": "127.0.0.1:%d" } ],\n'
            '  "routes": [ { "respond": { "status": 200 } }\n'
            '}\n') % free_port()
    write(tmp_path, text)
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 1, p
    err = lines(p.stderr)
    assert any(re.match(r"^sluice\.json:4:\d+: syntax error: .*']' expected", l) for l in err), err


def test_all_errors_reported_in_one_run(tmp_path):
    cfg = good_config()
    cfg["upstreams"] = {"users": {"targets": ["127.0.0.1:1"], "retires": 1}}
    cfg["routes"] = [
        {"match": {"prefix": "/a"}, "upstream": "nope1"},
        {"match": {"prefix": "/b"}, "upstream": "users"},
        {"match": {"prefix": "/c"}, "upstream": "nope2"},
    ]
    write(tmp_path, cfg)
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 1, p
    err = lines(p.stderr)
    assert any(l.startswith("sluice.json: routes[0].upstream: ") and "nope1" in l for l in err), err
    assert any(l.startswith("sluice.json: routes[2].upstream: ") and "nope2" in l for l in err), err
    assert any(l.startswith("sluice.json: upstreams.users") and "retires" in l for l in err), err
    assert not any("routes[1]" in l for l in err), err


def test_unknown_key_typo_is_an_error(tmp_path):
    cfg = good_config()
    cfg["routes"][0]["mtach"] = {"prefix": "/"}
    write(tmp_path, cfg)
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 1, p
    err = lines(p.stderr)
    # Either "routes[0].mtach: unknown key" or "routes[0]: unknown key "mtach"".
    assert any(l.startswith("sluice.json: routes[0]") and "mtach" in l for l in err), err


def test_unset_environment_variable_is_an_error(tmp_path):
    cfg = good_config()
    cfg["routes"][0]["respond"]["body"] = "${SLUICE_TEST_UNSET_VARIABLE}"
    write(tmp_path, cfg)
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 1, p
    err = lines(p.stderr)
    assert any("SLUICE_TEST_UNSET_VARIABLE" in l and l.startswith("sluice.json") for l in err), err


def test_unset_environment_variable_hides_no_other_error(tmp_path):
    """SPEC 2: all errors of a file in one run, an unset variable among them."""
    cfg = good_config()
    cfg["routes"][0]["respond"]["body"] = "${SLUICE_TEST_UNSET_VARIABLE}"
    cfg["routes"].append({"upstream": "ghost"})
    write(tmp_path, cfg)
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 1, p
    err = lines(p.stderr)
    assert any(l.startswith("sluice.json: routes[0].respond.body: environment variable "
                            "SLUICE_TEST_UNSET_VARIABLE is not set") for l in err), err
    assert any(l.startswith('sluice.json: routes[1].upstream: unknown upstream "ghost"')
               for l in err), err
    assert len(err) == 2, err


def test_environment_expansion_in_a_running_gateway(sluice):
    s = sluice({"routes": [
        {"match": {"path": "/set"}, "respond": {"status": 200, "body": "${SLUICE_TEST_GREETING}"}},
        {"match": {"path": "/default"},
         "respond": {"status": 200, "body": "${SLUICE_TEST_UNSET_VARIABLE:-fallback}"}},
        {"match": {"path": "/dollars"}, "respond": {"status": 200, "body": "a$$b $6$salt$x"}},
    ]}, env={"SLUICE_TEST_GREETING": "hello env"})
    assert s.request("GET", "/set").body == b"hello env"
    assert s.request("GET", "/default").body == b"fallback"
    # $$ is a literal $, any other $ is literal (crypt hashes).
    assert s.request("GET", "/dollars").body == b"a$b $6$salt$x"


def test_missing_config_file_exits_1(tmp_path):
    p = run_sluice(["-c", "does-not-exist.json"], tmp_path)
    assert p.returncode == 1, p
    assert "does-not-exist.json" in p.stderr.decode(), p.stderr
    p = run_sluice(["-t", "-c", "does-not-exist.json"], tmp_path)
    assert p.returncode == 1, p


def test_bad_usage_exits_2(tmp_path):
    p = run_sluice(["-Z"], tmp_path)
    assert p.returncode == 2, p
    p = run_sluice(["-c"], tmp_path)
    assert p.returncode == 2, p
    p = run_sluice(["-t", "extra-argument"], tmp_path)
    assert p.returncode == 2, p


def test_long_options(tmp_path):
    """SPEC 7 "long options": --help, --version, --test and --config FILE / --config=FILE."""
    p = run_sluice(["--help"], tmp_path)
    assert p.returncode == 0, p
    out = p.stdout.decode()
    assert "--config" in out and "--test" in out and "--version" in out and "--help" in out, out
    assert "unknown option" not in p.stderr.decode(), p.stderr
    p = run_sluice(["--version"], tmp_path)
    assert p.returncode == 0, p
    assert re.match(r"^sluice \d+\.\d+\.\d+", p.stdout.decode()), p.stdout
    write(tmp_path, good_config(), name="long.json")
    for args in (["--test", "--config", "long.json"], ["--config=long.json", "--test"]):
        p = run_sluice(args, tmp_path)
        assert p.returncode == 0, (args, p)
        assert p.stdout.decode().strip() == "configuration ok", (args, p)
    p = run_sluice(["--test", "--config", "missing.json"], tmp_path)
    assert p.returncode == 1, p
    assert "missing.json" in p.stderr.decode(), p.stderr


def test_bad_long_options_exit_2_and_name_the_option(tmp_path):
    for args, text in ((["--bogus"], "--bogus"), (["--config"], "--config"),
                       (["--help=yes"], "--help")):
        p = run_sluice(args, tmp_path)
        assert p.returncode == 2, (args, p)
        assert text in p.stderr.decode() and "option --\n" not in p.stderr.decode(), (args, p)


def test_listen_port_in_use_exits_3_with_one_line(tmp_path):
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        write(tmp_path, good_config(port))
        p = run_sluice(["-c", "sluice.json"], tmp_path)
    assert p.returncode == 3, p
    err = lines(p.stderr)
    assert len(err) == 1, err
    assert "sluice.json" in err[0] and "listen[0]" in err[0] and str(port) in err[0], err


def test_sluice_config_environment_variable(tmp_path):
    path = write(tmp_path, good_config(), name="from-env.json")
    p = run_sluice(["-t"], tmp_path, env={"SLUICE_CONFIG": str(path)})
    assert p.returncode == 0, p
    assert p.stdout.decode().strip() == "configuration ok"
    bad = good_config()
    bad["routes"][0]["upstream"] = "ghost"
    path.write_text(json.dumps(bad))
    p = run_sluice(["-t"], tmp_path, env={"SLUICE_CONFIG": str(path)})
    assert p.returncode == 1, p
    assert "from-env.json" in p.stderr.decode()


def test_default_config_is_sluice_json_in_cwd(tmp_path):
    write(tmp_path, good_config())
    p = run_sluice(["-t"], tmp_path)
    assert p.returncode == 0, p
    assert p.stdout.decode().strip() == "configuration ok"


def test_tls_listener_with_missing_files(tmp_path):
    cfg = good_config()
    cfg["listen"][0]["tls"] = {"certificates": [{"cert": "a.pem", "key": "a.key"}]}
    write(tmp_path, cfg)
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 1, p
    err = lines(p.stderr)
    assert ("sluice.json: listen[0].tls.certificates[0].cert: cannot load a.pem: "
            "No such file or directory") in err, err
    assert ("sluice.json: listen[0].tls.certificates[0].key: cannot load a.key: "
            "No such file or directory") in err, err


def test_filter_option_error_names_its_path(tmp_path):
    cfg = good_config()
    cfg["routes"][0]["filters"] = [{"type": "jwt", "algorithms": ["HS256"], "secret": "s"}]
    write(tmp_path, cfg)
    p = run_sluice(["-t", "-c", "sluice.json"], tmp_path)
    assert p.returncode == 1, p
    err = lines(p.stderr)
    assert any(l.startswith("sluice.json: routes[0].filters[0].secret: must be at least 32 bytes")
               for l in err), err


def test_sigterm_right_after_start_exits_0(sluice):
    s = sluice(good_config())
    assert request(s.port, "GET", "/").body == b"hi"
    assert s.stop(signal.SIGTERM, timeout=5) == 0


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z sluice\[[^\]]+\] "
                      r"(error|warn|info|debug): ")


def test_dns_and_health_messages_have_timestamp_and_level(sluice):
    """Every message goes through the error log; a DNS failure is reported
    once, not once per worker."""
    closed = free_port()
    cfg = good_config()
    cfg["workers"] = 2
    cfg["upstreams"] = {
        "named": {"targets": ["no-such-host.invalid:80"], "dns_refresh_ms": 60000},
        "checked": {"targets": [f"127.0.0.1:{closed}"],
                    "health_check": {"path": "/", "interval_ms": 100, "unhealthy_after": 1}},
    }
    s = sluice(cfg)
    wait_until(lambda: "is down (health check)" in s.stderr() and "cannot resolve" in s.stderr(),
               timeout=20, what="the DNS and health-check messages")
    err = lines(s.stderr().encode())
    for line in err:
        assert LOG_LINE.match(line), line
    dns = [l for l in err if "upstream named: cannot resolve no-such-host.invalid" in l]
    assert len(dns) == 1, err
    assert " warn: " in dns[0], dns
    down = [l for l in err if f"upstream checked: target 127.0.0.1:{closed} is down" in l]
    assert len(down) == 1 and " warn: " in down[0], err
