"""`lvs-director disable/enable` and the health part of `status`, through bin/lvs-director
against the fake host (tests/fakes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lvs_scripts.health import DOWN, Health, TargetId
from lvs_scripts.healthstate import HealthView, load_health, save_health
from lvs_scripts.locks import Paths
from tests.fakes.fakehost import FakeHost
from tests.machines import DirectorMachine

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="real runs exit 4 without root; run as root (make test)")

VIP = "192.168.30.254"
CHECKED = f"""
[director]
interface = "eth0"
arping_count = 0

[[service]]
vip = "{VIP}"
port = 80
scheduler = "wrr"
real = [
  {{ address = "192.168.30.111", weight = 1 }},
  {{ address = "192.168.30.112", weight = 2 }},
]

[service.check]
type = "tcp"
"""


def weights(host: FakeHost) -> dict[str, int]:
    """Real server address -> weight (of a table with one service)."""
    return {address: weight for (_, address), weight in weights_by_service(host).items()}


def weights_by_service(host: FakeHost) -> dict[tuple[str, str], int]:
    """(service as ipvsadm names it, real server address) -> weight, from the fake
    kernel's `ipvsadm -S -n`."""
    out = host.cmd("ipvsadm", "-S", "-n").stdout
    return {(f"{words[1]} {words[2]}", words[4].split(":")[0]):
            int(words[words.index("-w") + 1])
            for words in (line.split() for line in out.splitlines()) if words[0] == "-a"}


def started(host: FakeHost, root: Path, config: str) -> DirectorMachine:
    machine = DirectorMachine(host, root, config)
    ran = machine.run("start")
    assert ran.returncode == 0, ran.stderr
    return machine


@pytest.fixture
def director(fakehost: FakeHost, tmp_path: Path) -> DirectorMachine:
    return started(fakehost, tmp_path, CHECKED)


def paths(machine: DirectorMachine) -> Paths:
    return Paths("lvs-director", str(machine.state_dir), str(machine.lock_dir))


def test_disable_and_enable_change_the_weight_and_persist(director: DirectorMachine) -> None:
    ran = director.run("disable", "192.168.30.111")
    assert ran.returncode == 0, ran.stderr
    assert "192.168.30.111 disabled in 1 service(s)" in ran.stdout
    assert weights(director.host) == {"192.168.30.111": 0, "192.168.30.112": 2}
    # a reload (and a start) keep it out: the config's weight 1 is not put back
    assert director.run("reload").returncode == 0
    assert weights(director.host)["192.168.30.111"] == 0
    status = director.run("status")
    assert status.returncode == 0, status.stdout  # weight 0 because disabled: not drift
    line = next(s for s in status.stdout.splitlines() if "192.168.30.111:80" in s)
    assert line.rstrip().endswith("disabled")
    data = json.loads(director.run("status", "--json").stdout)
    healths = [r["health"]["state"] for r in data["services"][0]["real"]]
    assert healths == ["disabled", "unknown"]
    ran = director.run("enable", "192.168.30.111")
    assert ran.returncode == 0, ran.stderr
    assert weights(director.host) == {"192.168.30.111": 1, "192.168.30.112": 2}
    assert load_health(paths(director)).disabled == []


def test_disable_of_an_address_that_is_no_real_server_is_a_usage_error(
        director: DirectorMachine) -> None:
    for args in (("disable", "192.168.30.119"), ("disable", "192.168.30.111", "--service",
                                                  f"{VIP}:81"),
                 ("disable",), ("status", "192.168.30.111"), ("enable", "not-an-address")):
        ran = director.run(*args)
        assert ran.returncode == 2, (args, ran.stderr)
        assert "lvs-director" in ran.stderr
    assert not os.path.exists(paths(director).health_file)


def test_a_down_server_is_shown_and_kept_at_zero_by_reload(director: DirectorMachine) -> None:
    key = TargetId("tcp", VIP, 80, "192.168.30.112", 80)
    save_health(paths(director), HealthView({key: Health(DOWN, 0, 3, "connection refused",
                                                         1_700_000_000.0)}))
    status = director.run("status")
    assert status.returncode == 150  # the kernel still has weight 2: drift, says status
    assert f"ipvsadm -e -t {VIP}:80 -r 192.168.30.112:80 -g -w 0" in status.stdout
    assert director.run("reload").returncode == 0
    assert weights(director.host) == {"192.168.30.111": 1, "192.168.30.112": 0}
    status = director.run("status")
    assert status.returncode == 0, status.stdout
    assert "down (connection refused, since " in status.stdout
    data = json.loads(director.run("status", "--json").stdout)
    assert data["services"][0]["real"][1]["health"] == {
        "state": "down", "reason": "connection refused", "since": 1_700_000_000.0}


def test_a_service_without_check_shows_unchecked(fakehost: FakeHost, tmp_path: Path) -> None:
    machine = DirectorMachine(fakehost, tmp_path, CHECKED.partition("[service.check]")[0])
    assert machine.run("start").returncode == 0
    data = json.loads(machine.run("status", "--json").stdout)
    assert {r["health"]["state"] for r in data["services"][0]["real"]} == {"unchecked"}


# --- --service fwmark:MARK ------------------------------------------------------------------

FWMARK = f"""
[director]
interface = "eth0"
arping_count = 0

[[service]]
fwmark = 7
match = [ {{ vip = "{VIP}", port = 443 }} ]
scheduler = "rr"
real = [ {{ address = "192.168.30.111" }}, {{ address = "192.168.30.112" }} ]

[service.check]
type = "tcp"
port = 443

[[service]]
vip = "{VIP}"
port = 80
scheduler = "rr"
real = [ {{ address = "192.168.30.111", port = 80 }} ]

[service.check]
type = "tcp"
"""


@pytest.fixture
def marked(fakehost: FakeHost, tmp_path: Path) -> DirectorMachine:
    return started(fakehost, tmp_path, FWMARK)


def test_service_fwmark_names_the_mark_and_leaves_the_vip_service(
        marked: DirectorMachine) -> None:
    ran = marked.run("disable", "192.168.30.111", "--service", "fwmark:7")
    assert ran.returncode == 0, ran.stderr
    assert "192.168.30.111 disabled in fwmark:7" in ran.stdout
    assert weights_by_service(marked.host) == {
        ("-f 7", "192.168.30.111"): 0, ("-f 7", "192.168.30.112"): 1,
        ("-t 192.168.30.254:80", "192.168.30.111"): 1}
    disabled = load_health(paths(marked)).disabled
    assert [str(entry) for entry in disabled] == ["192.168.30.111 in fwmark 7"]
    assert marked.run("reload").returncode == 0  # kept out by a reload
    assert weights_by_service(marked.host)[("-f 7", "192.168.30.111")] == 0
    status = marked.run("status")
    assert status.returncode == 0, status.stdout
    # the address in the VIP service is not disabled, only the one in fwmark 7
    assert [line.rstrip().endswith("disabled") for line in status.stdout.splitlines()
            if "192.168.30.111:" in line] == [True, False]
    ran = marked.run("enable", "192.168.30.111", "--service", "fwmark:7")
    assert ran.returncode == 0, ran.stderr
    assert load_health(paths(marked)).disabled == []
    assert weights_by_service(marked.host)[("-f 7", "192.168.30.111")] == 1


def test_a_disable_everywhere_covers_the_fwmark_service_too(marked: DirectorMachine) -> None:
    assert marked.run("disable", "192.168.30.111").returncode == 0
    assert {key: weight for key, weight in weights_by_service(marked.host).items()
            if key[1] == "192.168.30.111"} == {("-f 7", "192.168.30.111"): 0,
                                                ("-t 192.168.30.254:80", "192.168.30.111"): 0}
    # enable --service lifts only a disable of that service: the one everywhere stays
    assert marked.run("enable", "192.168.30.111", "--service", "fwmark:7").returncode == 0
    assert weights_by_service(marked.host)[("-f 7", "192.168.30.111")] == 0


@pytest.mark.parametrize(("service", "said"), [
    ("fwmark:8", "is not a real server of service fwmark:8"),
    ("fwmark:0", "the mark must be a number from 1 to 4294967295"),
    ("fwmark:4294967296", "the mark must be a number from 1 to 4294967295"),
    ("fwmark:x", "the mark must be a number from 1 to 4294967295"),
    ("fwmark:\uff17", "the mark must be a number from 1 to 4294967295"),
    ("mark:7", "must be VIP:PORT ([VIP]:PORT for IPv6) or fwmark:MARK"),
])
def test_a_bad_fwmark_service_is_a_usage_error(marked: DirectorMachine, service: str,
                                               said: str) -> None:
    ran = marked.run("disable", "192.168.30.111", "--service", service)
    assert ran.returncode == 2, ran.stderr
    assert said in ran.stderr
    assert load_health(paths(marked)).disabled == []
