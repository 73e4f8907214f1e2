"""The systemd units: a oneshot set-up that stays "active", ExecStart/ExecReload/ExecStop
calling the same CLI; their command lines run against the fake machine as systemd would
run them."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.fakes.fakehost import FakeHost
from tests.test_plan_director import SEED_SAVE

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed-dr.toml"
UNITS = {"lvs-director": ROOT / "systemd" / "lvs-director.service",
         "lvs-realserver": ROOT / "systemd" / "lvs-realserver.service"}
TEMPLATE = ROOT / "debian" / "lvs.toml"
VIP = "192.168.30.254"


def unit(name: str) -> configparser.ConfigParser:
    # interpolation=None: `%` is systemd's specifier syntax, not configparser's.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(UNITS[name])
    return parser


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_is_a_oneshot_set_up_calling_the_cli(name: str) -> None:
    parsed = unit(name)
    assert parsed.sections() == ["Unit", "Service", "Install"]
    assert parsed["Unit"]["Wants"] == "network-online.target"
    assert parsed["Unit"]["After"] == "network-online.target"
    service = parsed["Service"]
    assert service["Type"] == "oneshot"
    assert service["RemainAfterExit"] == "yes"
    assert "Restart" not in service
    # A bare name, looked up on systemd's own search path (/usr/local/sbin ... /usr/bin):
    # pipx's /usr/local/sbin as well as the package's /usr/sbin (debian/rules makes its
    # copy name /usr/sbin; tests/test_deb.py checks it).
    for key, action in (("ExecStart", "start"), ("ExecReload", "reload"), ("ExecStop", "stop")):
        assert shlex.split(service[key]) == [name, action]
    # optional ("-"): the settings of the README, the same file the init.d script reads
    assert service["EnvironmentFile"] == f"-/etc/default/{name}"
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


class Systemctl:
    """Runs a unit's Exec* lines the way systemd does: argv split from the line, no shell,
    a fresh environment from EnvironmentFile= (here: the test's settings)."""

    def __init__(self, name: str, host: FakeHost, files: Path, config: Path) -> None:
        self.service = unit(name)["Service"]
        self.env = {"PATH": host.env["PATH"], "FAKEHOST_DIR": host.env["FAKEHOST_DIR"],
                    "LANG": "C", "LVS_CONFIG": str(config), "LVS_STATE_DIR": str(files / "run"),
                    "LVS_LOCK_DIR": str(files / "lock"), "LVS_SYSLOG": "0"}

    def __call__(self, key: str) -> subprocess.CompletedProcess[str]:
        # systemd's own quoting: "$$" is a "$" (no variable of systemd's is meant).
        argv = shlex.split(self.service[key].replace("$$", "$"))
        if not argv[0].startswith("/"):
            argv[0] = str(ROOT / "bin" / argv[0])
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False,
                              timeout=60)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="real runs need root")


@pytest.mark.parametrize("name", sorted(UNITS))
def test_documentation_is_what_the_package_installs(name: str) -> None:
    from lvs_scripts import manpage

    pages = manpage.pages(ROOT)
    for uri in unit(name)["Unit"]["Documentation"].split():
        match = re.fullmatch(r"man:([\w.-]+)\((\d)\)", uri)
        assert match, uri  # no file:// of a README that nothing installs
        assert f"{match.group(1)}.{match.group(2)}" in pages, uri


@pytest.mark.parametrize("name", sorted(UNITS))
def test_start_refuses_the_unedited_template(name: str, fakehost: FakeHost,
                                             tmp_path: Path) -> None:
    systemctl = Systemctl(name, fakehost, tmp_path, TEMPLATE)
    refused = systemctl("ExecStartPre")
    assert refused.returncode == 6
    assert refused.stderr == (f"{name}: {TEMPLATE} has no settings yet (every line is a "
                              "comment): edit it first\n")
    assert fakehost.calls() == []
    for config in (SEED, tmp_path / "absent.toml"):  # a missing one is the CLI's to report
        systemctl.env["LVS_CONFIG"] = str(config)
        assert systemctl("ExecStartPre").returncode == 0


@needs_root
def test_director_unit_start_reload_stop(fakehost: FakeHost, tmp_path: Path) -> None:
    config = tmp_path / "lvs.toml"
    config.write_text(SEED.read_text())
    systemctl = Systemctl("lvs-director", fakehost, tmp_path, config)

    assert systemctl("ExecStart").returncode == 0
    assert fakehost.ipvs_save() == SEED_SAVE
    assert f"{VIP}/32" in fakehost.addresses("eth0")
    assert [r["via"] for r in fakehost.default_routes()] == ["192.168.30.1"]

    # systemctl reload after the config was edited: one real server gets weight 5
    config.write_text(SEED.read_text().replace(
        '{ address = "192.168.30.111", weight = 1 }', '{ address = "192.168.30.111", weight = 5 }'))
    reloaded = systemctl("ExecReload")
    assert (reloaded.returncode, reloaded.stdout) == (
        0, "lvs-director reload: 1 change(s) applied\n")
    assert fakehost.ipvs_save() == SEED_SAVE.replace("111:80 -g -w 1", "111:80 -g -w 5")

    assert systemctl("ExecStop").returncode == 0
    assert fakehost.ipvs_save() == ""
    assert fakehost.addresses("eth0") == ["192.168.30.105/24"]
    assert fakehost.addresses("eth1") == []
    assert [r["via"] for r in fakehost.default_routes()] == ["192.168.30.200"]
    assert not (tmp_path / "lock" / "lvs-director").exists()


@needs_root
def test_realserver_unit_start_reload_stop(fakehost: FakeHost, tmp_path: Path) -> None:
    systemctl = Systemctl("lvs-realserver", fakehost, tmp_path, SEED)
    arp_ignore = "net.ipv4.conf.all.arp_ignore"
    before = fakehost.sysctl(arp_ignore)

    assert systemctl("ExecStart").returncode == 0
    assert f"{VIP}/32" in fakehost.addresses("lo")
    assert fakehost.sysctl(arp_ignore) == "1"

    fakehost.cmd("ip", "addr", "del", f"{VIP}/32", "dev", "lo")  # someone removed the VIP
    assert systemctl("ExecReload").returncode == 0
    assert f"{VIP}/32" in fakehost.addresses("lo")

    assert systemctl("ExecStop").returncode == 0
    assert fakehost.addresses("lo") == ["127.0.0.1/8"]
    assert fakehost.sysctl(arp_ignore) == before
    assert fakehost.interface("lo")["up"]  # type: ignore[index]
