"""Stop undoes what the state file lists, whatever became of the config and the host since
start (issue 9, items 1, 2, 13, 15, 16): the CLI against the fake host."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fakehost import FakeHost

ROOT = Path(__file__).resolve().parent.parent
OLD_GATEWAY = "192.168.30.200"  # the fake machine's default route

DIRECTOR = """
[director]
interface = "eth0"
gateway = "192.168.30.1"
dip = "10.9.0.5/24"
dip_interface = "eth1"
arping_count = 0

[realserver]
arp_interfaces = ["eth0", "eth1"]

[[service]]
vip = "192.168.30.254"
port = 80
scheduler = "wrr"
real = [ { address = "192.168.30.111" }, { address = "192.168.30.112" } ]
"""


class Host:
    """One fake machine, its config file and its state directory."""

    def __init__(self, root: Path, role: str, config: str = DIRECTOR) -> None:
        self.fake = FakeHost(root / "host")
        self.fake.set_ipvs("loaded")
        self.role = role
        self.config = root / "lvs.toml"
        self.config.write_text(config)
        self.state_dir = root / "run"
        self.env = {**self.fake.env, "LVS_STATE_DIR": str(self.state_dir),
                    "LVS_LOCK_DIR": str(root / "lock"), "LVS_SYSLOG": "0"}
        self.before = self.kernel()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / "bin" / f"lvs-{self.role}"), "-c", str(self.config),
                               *args], env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)

    def kernel(self) -> dict[str, Any]:
        return {"addresses": {ifc["name"]: self.fake.addresses(ifc["name"])
                              for ifc in self.fake.interfaces()},
                "routes": self.fake.routes(),
                "ipvs": self.fake.ipvs_save(), "sysctl": self.fake.sysctls()}

    @property
    def state_file(self) -> Path:
        return self.state_dir / f"lvs-{self.role}.json"


@pytest.fixture(params=["director", "realserver"])
def started(request: pytest.FixtureRequest, tmp_path: Path) -> Host:
    host = Host(tmp_path, request.param)
    ran = host.cli("start")
    assert ran.returncode == 0, ran.stderr
    assert host.kernel() != host.before
    return host


@pytest.mark.parametrize("breakage", ["removed", "invalid TOML", "unknown key",
                                      "no services"])
def test_stop_works_with_a_broken_or_removed_config(started: Host, breakage: str) -> None:
    if breakage == "removed":
        started.config.unlink()
    elif breakage == "invalid TOML":
        started.config.write_text("[director\n")
    elif breakage == "unknown key":
        started.config.write_text(DIRECTOR.replace("[director]", "[director]\nnope = 1"))
    else:
        started.config.write_text("# emptied by mistake\n")
    ran = started.cli("stop")
    assert ran.returncode == 0, ran.stderr
    assert "stopping from the state file" in ran.stderr
    assert started.kernel() == started.before
    assert not started.state_file.exists()


def test_status_with_a_broken_config_is_unknown_and_lists_what_is_ours(started: Host) -> None:
    started.config.write_text("[director\n")
    ran = started.cli("status")
    assert ran.returncode == 4
    vip = "192.168.30.254/32"
    assert vip in ran.stdout
    as_json = started.cli("status", "--json")
    assert as_json.returncode == 4
    data = json.loads(as_json.stdout)
    assert data["code"] == 4 and any(vip in line for line in data["owned"])


def test_stop_works_when_an_interface_the_config_names_is_gone(started: Host) -> None:
    """eth1 (the DIP's, or one of arp_interfaces) is deleted after start: stop drops
    what went with it, says so, and restores the rest."""
    started.fake.remove_interface("eth1")
    ran = started.cli("stop")
    assert ran.returncode == 0, ran.stderr
    assert "eth1 is gone" in ran.stderr
    now = started.kernel()
    assert now["ipvs"] == started.before["ipvs"]
    assert now["addresses"] == {dev: addresses for dev, addresses
                                in started.before["addresses"].items() if dev != "eth1"}
    assert now["routes"] == [r for r in started.before["routes"] if r.get("dev") != "eth1"]
    assert {k: v for k, v in now["sysctl"].items() if "eth1" not in k} == {
        k: v for k, v in started.before["sysctl"].items() if "eth1" not in k}
    assert not started.state_file.exists()


def test_route_changed_by_hand_since_start_is_left_alone(tmp_path: Path) -> None:
    host = Host(tmp_path, "director")
    assert host.cli("start").returncode == 0
    host.fake.del_route("default")
    host.fake.add_route("default", via="192.168.30.77", dev="eth0")
    ran = host.cli("stop")
    assert ran.returncode == 0, ran.stderr
    assert "changed since" in ran.stderr
    assert [r["via"] for r in host.fake.default_routes()] == ["192.168.30.77"]
    assert not host.state_file.exists()


def test_gateway_removed_from_the_config_before_stop(tmp_path: Path) -> None:
    host = Host(tmp_path, "director")
    assert host.cli("start").returncode == 0
    host.config.write_text(DIRECTOR.replace('gateway = "192.168.30.1"\n', ""))
    ran = host.cli("stop")
    assert ran.returncode == 0, ran.stderr
    assert host.kernel() == host.before


@pytest.mark.parametrize("previous", [
    {"via": "10.9.9.1", "dev": "eth0", "onlink": True},
    {"dev": "eth0", "scope": "link"},
    {"via": OLD_GATEWAY, "dev": "eth0", "metric": 100, "proto": "static"},
], ids=["onlink", "device-only", "metric"])
def test_the_previous_route_comes_back_as_it_was(tmp_path: Path,
                                                  previous: dict[str, Any]) -> None:
    host = Host(tmp_path, "director")
    host.fake.del_route("default")
    host.fake.add_route("default", **previous)
    host.before = host.kernel()
    assert host.cli("start").returncode == 0
    assert [r["via"] for r in host.fake.default_routes()] == ["192.168.30.1"]
    for _ in range(2):  # start, stop, start, stop: no record left to break the next one
        ran = host.cli("stop")
        assert ran.returncode == 0, ran.stderr
        assert host.kernel() == host.before
        assert host.cli("start").returncode == 0
    assert host.cli("stop").returncode == 0
    assert host.kernel() == host.before


def test_someone_elses_service_on_our_vip_port_is_not_running_as_configured(
        tmp_path: Path) -> None:
    host = Host(tmp_path, "director")
    host.fake.ipvsadm("-A", "-t", "192.168.30.254:80", "-s", "rr")
    host.fake.ipvsadm("-a", "-t", "192.168.30.254:80", "-r", "10.7.7.7:80", "-g")
    theirs = host.fake.ipvs_save()
    start = host.cli("start")
    assert start.returncode == 1
    assert "did not create" in start.stderr
    assert host.fake.ipvs_save() == theirs
    status = host.cli("status")
    assert status.returncode == 150
    assert "CONFLICT" in status.stdout
    assert host.cli("stop").returncode == 0
    assert host.fake.ipvs_save() == theirs
