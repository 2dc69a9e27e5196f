"""SPEC 4 and 7: the ip_filter filter through the real binary, on an IPv4
and an IPv6 loopback listener: the TCP peer decides, deny wins over allow,
a non-empty allow admits only its ranges, refusals are 403 forbidden, and
invalid CIDRs are configuration errors with their JSON path."""
import json

from conftest import assert_gateway_error, free_port, request, run_sluice, upstream


def two_listeners(b, global_filters=None, route_filters=None):
    cfg = {"listen": [{"address": f"127.0.0.1:{free_port()}"},
                      {"address": f"[::1]:{free_port('::1')}"}],
           "upstreams": {"api": upstream(b.address)},
           "routes": [{"name": "api", "match": {"prefix": "/api"}, "upstream": "api",
                       "filters": route_filters or []},
                      {"name": "open", "match": {"prefix": "/"}, "upstream": "api"}]}
    if global_filters:
        cfg["filters"] = global_filters
    return cfg


def get(s, family, path):
    host, port = s.listen_ports[0 if family == 4 else 1]
    return request(port, "GET", path, host=host, headers={"X-Forwarded-For": "10.0.0.1"})


def test_allow_admits_only_its_ranges(sluice, backend):
    b = backend()
    s = sluice(two_listeners(b, route_filters=[{"type": "ip_filter",
                                                "allow": ["127.0.0.0/8"]}]))
    assert get(s, 4, "/api/x").status == 200
    # ::1 is no IPv4 address, and X-Forwarded-For (written by the client) is not looked at.
    assert_gateway_error(get(s, 6, "/api/x"), 403)
    assert get(s, 6, "/other").status == 200  # another route, without the filter
    assert b.count == 2


def test_ipv6_allow_and_deny_wins(sluice, backend):
    b = backend()
    s = sluice(two_listeners(b, route_filters=[{"type": "ip_filter",
                                                "allow": ["::1/128", "127.0.0.1"],
                                                "deny": ["127.0.0.0/24"]}]))
    assert get(s, 6, "/api/x").status == 200
    assert_gateway_error(get(s, 4, "/api/x"), 403)  # in allow, but deny wins
    assert b.count == 1


def test_deny_only_admits_everything_else(sluice, backend):
    b = backend()
    s = sluice(two_listeners(b, global_filters=[{"type": "ip_filter", "deny": ["::1"]}]))
    assert get(s, 4, "/api/x").status == 200
    assert get(s, 4, "/other").status == 200
    assert_gateway_error(get(s, 6, "/api/x"), 403)  # a global filter covers every route
    assert_gateway_error(get(s, 6, "/other"), 403)
    s2 = sluice(two_listeners(b, global_filters=[{"type": "ip_filter", "deny": ["0.0.0.0/0"]}]))
    assert_gateway_error(get(s2, 4, "/api/x"), 403)
    assert get(s2, 6, "/api/x").status == 200  # ::/0 and 0.0.0.0/0 are separate families
    assert b.count == 3


def test_invalid_cidr_is_a_config_error(tmp_path):
    cfg = {"listen": [{"address": f"127.0.0.1:{free_port()}"}],
           "routes": [{"respond": {"status": 200}, "filters": [
               {"type": "ip_filter", "allow": ["10.0.0.0/8", "::1", "10.0.0.0/33",
                                               "2001:db8::1/32", "not-an-ip"]},
               {"type": "ip_filter"}]}]}
    (tmp_path / "sluice.json").write_text(json.dumps(cfg))
    proc = run_sluice(["-t", "-c", "sluice.json"], cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.decode().splitlines()
    assert ('sluice.json: routes[0].filters[0].allow[2]: invalid CIDR "10.0.0.0/33": the prefix '
            'length must be a number from 0 to 32') in lines
    assert any(line.startswith('sluice.json: routes[0].filters[0].allow[3]: invalid CIDR '
                               '"2001:db8::1/32": has bits set after the prefix length')
               for line in lines), lines
    assert any(line.startswith('sluice.json: routes[0].filters[0].allow[4]: invalid CIDR '
                               '"not-an-ip"') for line in lines), lines
    assert any(line.startswith('sluice.json: routes[0].filters[1]: needs a non-empty "allow" '
                               'or "deny" list') for line in lines), lines
    assert len(lines) == 4, lines
