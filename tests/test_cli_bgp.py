"""lvs-director with [bgp] through the CLI, against the fake host: a fake BIRD daemon that
is a real process, found through its pid file and signalled for real, and a fake birdc
that answers from the fake host (sessions, the VIPs on lo). Never the real BIRD."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from lvs_scripts.apply import settle
from lvs_scripts.plan import Settle
from tests.fakes.fakehost import FakeHost

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="start and stop refuse to run without root")

ROOT = Path(__file__).resolve().parent.parent
LAB_BGP = ROOT / "examples" / "lab-bgp.toml"
VIP = "10.98.0.100/32"
SLOPPY = "net.ipv4.vs.sloppy_tcp"


class Director:
    def __init__(self, host: FakeHost, files: Path) -> None:
        self.host = host
        self.state_dir = files / "run"
        self.env = {"LVS_STATE_DIR": str(self.state_dir), "LVS_LOCK_DIR": str(files / "lock"),
                    "LVS_SYSLOG": "0"}

    def run(self, *args: str, config: Path = LAB_BGP) -> subprocess.CompletedProcess[str]:
        return self.host.run([str(ROOT / ".venv" / "bin" / "lvs-director"), "-c", str(config),
                              *args], env=self.env)

    def file(self, suffix: str) -> Path:
        return self.state_dir / f"lvs-director.{suffix}"

    def bird_pid(self) -> int:
        return int(self.file("bird.pid").read_text())

    def sloppy(self) -> str:
        return self.host.invoke("sysctl", ["-n", SLOPPY], record=False).stdout.strip()

    def changes(self) -> list[list[str]]:
        """What changed the host (loading ip_vs, which `ipvsadm -S -n` does, aside), and
        the daemons' commands."""
        return [c["argv"] for c in self.host.calls() if c["argv"][:2] != ["ipvsadm", "-S"] and (
            c["changed"] or (c["argv"][0] in ("bird", "birdc") and "show" not in c["argv"]))]


@pytest.fixture
def lb(fakehost: FakeHost, tmp_path: Path) -> Director:
    return Director(fakehost, tmp_path / "files")


def test_start_status_stop(lb: Director) -> None:
    start = lb.run("start")
    assert start.returncode == 0, start.stderr
    assert lb.changes() == [
        ["ipvsadm", "-R"],
        ["sysctl", "-w", f"{SLOPPY}=1"],
        ["ip", "addr", "add", VIP, "brd", "10.98.0.100", "dev", "lo"],
        ["bird", "-c", str(lb.file("bird.conf")), "-s", str(lb.file("bird.ctl")), "-P",
         str(lb.file("bird.pid"))]]  # install is a host program: not in the fakes' log
    assert VIP in lb.host.addresses("lo") and VIP not in lb.host.addresses("eth0")
    assert lb.host.argvs("arping") == []  # the routers learn the VIP from BGP, not ARP
    conf = lb.file("bird.conf").read_text()
    assert "router id 192.168.30.105;" in conf  # eth0's own address, towards the neighbor
    assert "export where net ~ [ 10.98.0.100/32 ];" in conf
    assert lb.host.bird_pids() == [lb.bird_pid()]
    assert lb.sloppy() == "1"

    status = lb.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    bgp = json.loads(status.stdout)["bgp"]
    assert bgp["established"] and bgp["bird"] and bgp["router_id"] == "192.168.30.105"
    assert bgp["sessions"][0]["announced"] == [VIP]
    assert lb.run("start").stdout == "lvs-director start: nothing to do\n"

    lb.host.clear_calls()
    pid = lb.bird_pid()
    stop = lb.run("stop")
    assert stop.returncode == 0, stop.stderr
    changes = [a for a in lb.changes() if a[0] != "birdc"]
    assert changes == [["ip", "addr", "del", VIP, "dev", "lo"],
                       ["ipvsadm", "-D", "-t", "10.98.0.100:8080"],
                       ["sysctl", "-w", f"{SLOPPY}=0"]]
    # Between the VIP leaving lo and the service going: BIRD asked until it withdrew it,
    # and stopped (kill is a host program; the daemon is gone).
    argvs = lb.host.argvs()
    withdrawn = argvs.index(["birdc", "-s", str(lb.file("bird.ctl")), "show", "route",
                             "protocol", "lvs_vips"])
    assert argvs.index(["ip", "addr", "del", VIP, "dev", "lo"]) < withdrawn < argvs.index(
        ["ipvsadm", "-D", "-t", "10.98.0.100:8080"])
    settle(Settle("the fake BIRD has gone", gone_pid=pid, seconds=10))
    assert lb.host.bird_pids() == []
    assert not lb.file("bird.conf").exists() and not lb.state_dir.joinpath(
        "lvs-director.json").exists()
    assert lb.run("status").returncode == 3


def test_a_session_not_established_is_not_running_as_configured(lb: Director) -> None:
    assert lb.run("start").returncode == 0
    with lb.host.edit() as st:
        st["bgp_sessions"] = {"bgp1": "Active"}
    status = lb.run("status")
    assert status.returncode == 150, status.stdout
    assert "1 BGP session(s) not established: bgp1" in status.stdout
    assert "neighbor 192.168.30.200 AS 65000: Active; announces nothing" in status.stdout


def test_bird_killed_is_drift_and_start_brings_it_back(lb: Director) -> None:
    assert lb.run("start").returncode == 0
    old = lb.bird_pid()
    os.kill(old, signal.SIGKILL)
    settle(Settle("the killed fake BIRD has gone", gone_pid=old, seconds=10))
    status = lb.run("status")
    assert status.returncode == 150, status.stdout
    assert "bird -c " in status.stdout
    assert lb.run("start").returncode == 0
    assert lb.bird_pid() != old and lb.host.bird_pids() == [lb.bird_pid()]


def test_a_changed_config_is_rewritten_and_bird_reconfigured_not_restarted(
        lb: Director, tmp_path: Path) -> None:
    assert lb.run("start").returncode == 0
    pid = lb.bird_pid()
    changed = tmp_path / "lvs.toml"
    changed.write_text(LAB_BGP.read_text().replace("hold_time = 3", "hold_time = 6"))
    reload = lb.run("reload", config=changed)
    assert reload.returncode == 0, reload.stderr
    assert "hold time 6;" in lb.file("bird.conf").read_text()
    assert lb.bird_pid() == pid and lb.host.state().get("bird_reconfigures") == 1


def test_a_sloppy_value_someone_changed_since_start_is_left_alone_by_stop(
        lb: Director) -> None:
    assert lb.run("start").returncode == 0
    lb.host.cmd("sysctl", "-w", f"{SLOPPY}=0")
    lb.host.cmd("sysctl", "-w", f"{SLOPPY}=1")  # back to ours: restored by stop
    assert lb.run("stop").returncode == 0
    assert lb.sloppy() == "0"
    assert lb.run("start").returncode == 0
    lb.host.cmd("sysctl", "-w", f"{SLOPPY}=2")
    stop = lb.run("--json", "stop")
    assert stop.returncode == 0
    assert f"{SLOPPY} was changed to 2 since start" in " ".join(json.loads(stop.stdout)["notes"])
    assert lb.sloppy() == "2"


def test_dry_run_start_prints_the_bird_config_and_the_commands(lb: Director) -> None:
    dry = lb.run("--dry-run", "start")
    assert dry.returncode == 0, dry.stderr
    assert "protocol bgp bgp1 {" in dry.stdout and "router id 192.168.30.105;" in dry.stdout
    assert f"\nsysctl -w {SLOPPY}=1\n" in dry.stdout
    assert "\nbird -c " in dry.stdout and "# then wait until BIRD has written its pid file" \
        in dry.stdout
    assert not lb.file("bird.conf").exists() and lb.host.bird_pids() == []
    assert lb.changes() == []


def test_dry_run_stop_prints_the_withdrawal_first(lb: Director) -> None:
    assert lb.run("start").returncode == 0
    dry = lb.run("--dry-run", "stop")
    assert dry.returncode == 0, dry.stderr
    script = dry.stdout.splitlines()
    first = script.index(f"ip addr del {VIP} dev lo")
    assert script[first + 1].startswith("# then wait until BIRD has withdrawn the VIPs")
    assert script[first + 2] == f"kill -TERM {lb.bird_pid()}"
