"""`cmake --install` lays out sluice as the docs say, and its systemd unit verifies.

The build under test (the folder of SLUICE_BIN) is installed into a
temporary DESTDIR; the files are checked, the installed binary checks the
installed configuration, and `systemd-analyze verify` checks the unit with
its paths pointed into the DESTDIR. systemd-analyze only warns (exit 0) on
an unknown key or a bad value, so any diagnostic at all fails the test, and
a deliberately broken copy proves the check sees such mistakes.
"""
import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, sluice_binary

UNIT_DIRECTIVES = {
    "ExecStartPre": re.compile(r"^\S*/sluice -t -c \S+/sluice\.json$"),
    "ExecStart": re.compile(r"^\S*/sluice -c \S+/sluice\.json$"),
    "ExecReload": re.compile(r"^/bin/kill -HUP \$MAINPID$"),
    "NoNewPrivileges": re.compile(r"^yes$"),
    "ProtectSystem": re.compile(r"^strict$"),
    "ProtectHome": re.compile(r"^yes$"),
    "PrivateTmp": re.compile(r"^yes$"),
    "DynamicUser": re.compile(r"^yes$"),
    "Restart": re.compile(r"^on-failure$"),
    "AmbientCapabilities": re.compile(r"^CAP_NET_BIND_SERVICE$"),
}


def cmake_build_dir() -> Path:
    build = Path(sluice_binary()).resolve().parent
    if not (build / "cmake_install.cmake").exists():
        pytest.fail(f"{build} is not a CMake build folder: SLUICE_BIN must be a build's sluice")
    return build


def cmake_cache(build: Path, name: str) -> str:
    for line in (build / "CMakeCache.txt").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split("=", 1)[1]
    raise AssertionError(f"{name} not in {build}/CMakeCache.txt")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(destdir, prefix, sysconfdir): one install of the build under test."""
    build = cmake_build_dir()
    dest = tmp_path_factory.mktemp("destdir")
    env = dict(os.environ, DESTDIR=str(dest))
    p = subprocess.run(["cmake", "--install", str(build)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    prefix = cmake_cache(build, "CMAKE_INSTALL_PREFIX")
    sysconf = "/etc" if prefix == "/usr" else f"{prefix}/etc"
    return dest, prefix, sysconf


def under(dest: Path, absolute: str) -> Path:
    return dest / absolute.lstrip("/")


def read_unit(path: Path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_install_lays_out_every_file(installed):
    dest, prefix, sysconf = installed
    binary = under(dest, f"{prefix}/bin/sluice")
    assert binary.is_file() and os.access(binary, os.X_OK)
    config = under(dest, f"{sysconf}/sluice/sluice.json")
    assert json.loads(config.read_text()) == json.loads((REPO / "config/sluice.json").read_text())
    schema = under(dest, f"{prefix}/share/sluice/sluice.schema.json")
    assert schema.read_bytes() == (REPO / "config/sluice.schema.json").read_bytes()
    for page in ("man1/sluice.1", "man5/sluice.json.5"):
        installed_page = under(dest, f"{prefix}/share/man/{page}")
        assert installed_page.read_bytes() == (REPO / "man" / Path(page).name).read_bytes()
    assert under(dest, f"{prefix}/lib/systemd/system/sluice.service").is_file()


def test_installed_binary_accepts_installed_configuration(installed):
    dest, prefix, sysconf = installed
    p = subprocess.run([str(under(dest, f"{prefix}/bin/sluice")), "-t", "-c",
                        str(under(dest, f"{sysconf}/sluice/sluice.json"))],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == "configuration ok", p


def test_reinstall_keeps_an_edited_configuration(installed, tmp_path):
    dest, prefix, sysconf = installed
    config = under(dest, f"{sysconf}/sluice/sluice.json")
    copy = tmp_path / "dest"
    shutil.copytree(dest, copy, symlinks=True)
    edited = under(copy, f"{sysconf}/sluice/sluice.json")
    edited.write_text(config.read_text().replace("8080", "8181"))
    env = dict(os.environ, DESTDIR=str(copy))
    p = subprocess.run(["cmake", "--install", str(cmake_build_dir())], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "8181" in edited.read_text(), "an operator's configuration is never overwritten"
    assert under(copy, f"{sysconf}/sluice/sluice.json.default").read_text() == config.read_text()


def test_unit_has_the_service_settings(installed):
    dest, prefix, sysconf = installed
    unit = read_unit(under(dest, f"{prefix}/lib/systemd/system/sluice.service"))
    service = unit["Service"]
    for key, pattern in UNIT_DIRECTIVES.items():
        assert key in service and pattern.match(service[key]), (key, service.get(key))
    assert service["ExecStart"] == f"{prefix}/bin/sluice -c {sysconf}/sluice/sluice.json"
    assert int(service["LimitNOFILE"]) >= 65536
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def systemd_verify(unit: Path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/deps installs the systemd package"
    p = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                       text=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).strip()


def pointed_into(dest: Path, prefix: str, sysconf: str, tmp_path: Path) -> Path:
    """The installed unit with the binary and configuration paths inside DESTDIR."""
    text = under(dest, f"{prefix}/lib/systemd/system/sluice.service").read_text()
    text = text.replace(f"{prefix}/bin/sluice", str(under(dest, f"{prefix}/bin/sluice")))
    text = text.replace(f"{sysconf}/sluice/", str(under(dest, f"{sysconf}/sluice")) + "/")
    unit = tmp_path / "sluice.service"
    unit.write_text(text)
    return unit


def test_systemd_analyze_verifies_the_unit(installed, tmp_path):
    dest, prefix, sysconf = installed
    unit = pointed_into(dest, prefix, sysconf, tmp_path)
    rc, out = systemd_verify(unit)
    assert rc == 0 and out == "", out


@pytest.mark.parametrize("change", [
    ("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
    ("Restart=on-failure", "Restart=sometimes"),
    ("ExecStart=", "ExecStart=/nonexistent/sluice #"),
], ids=["unknown key", "bad value", "missing binary"])
def test_systemd_analyze_sees_a_broken_unit(installed, tmp_path, change):
    dest, prefix, sysconf = installed
    unit = pointed_into(dest, prefix, sysconf, tmp_path)
    old, new = change
    text = unit.read_text()
    assert old in text
    unit.write_text(text.replace(old, new, 1))
    rc, out = systemd_verify(unit)
    assert rc != 0 or out != "", "a broken unit must not verify cleanly"


def test_build_without_tests_needs_no_test_targets(tmp_path):
    """-DSLUICE_TESTS=OFF (scripts/run) configures no unit tests and no ctest."""
    p = subprocess.run(["cmake", "-S", str(REPO), "-B", str(tmp_path / "b"),
                        "-DSLUICE_TESTS=OFF", "-DCMAKE_BUILD_TYPE=Release"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    targets = subprocess.run(["cmake", "--build", str(tmp_path / "b"), "--target", "help"],
                             capture_output=True, text=True, timeout=120).stdout
    assert "sluice" in targets
    assert not re.search(r"\btest_\w+", targets), targets
    assert not (tmp_path / "b" / "CTestTestfile.cmake").exists()
