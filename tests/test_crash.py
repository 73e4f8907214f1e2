"""`kill -9` at every step of start and stop, then stop must put the machine back (issue 9).

A run that is killed cannot record what it was doing: the state file may miss the step
under way, or one that finished a moment before the kill. Whatever the point, `stop`
must then leave the machine exactly as it was before the first start, and for a killed
start, `start` then `stop` must do so as well.

How: a fault-free run of each action is recorded first, at collection time, and its
calls become the kill points, so a new step in an action is covered without touching
this file. For each call the kill comes

- "before": the fake blocks before it changes anything; the run has done (and maybe
  recorded) everything up to the call before. Used for the first call that changes
  something and for every call that follows a change: anywhere else nothing new has
  happened since the point before;
- "after": for a call that changed the machine, the fake makes the change, then blocks
  before it answers: the change happened and the run never heard of it (`ipvsadm -R`
  whose batch reached the kernel, `sysctl -w` whose value changed).

The run is a real process (bin/lvs-director, bin/lvs-realserver) in a session of its
own; the whole session (the run and the blocked fake) gets SIGKILL, as when systemd
kills a unit that timed out. The machine (addresses, routes, sysctls, IPVS services,
timeouts) is compared with what it was before the first start; links are not, on
purpose (stop never takes an interface down).
"""

from __future__ import annotations

import functools
import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.fakehost import FakeHost
from tests.machines import RoleMachine, differences, must, snapshot, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="real runs exit 4 without root; run as root (make test)")

GATEWAY = "192.168.30.1"  # replaces the fake machine's default route via 192.168.30.200

DIRECTOR_CONFIG = f"""
[director]
interface = "eth0"
gateway = "{GATEWAY}"
dip = "10.9.0.5/24"
dip_interface = "eth1"
timeouts = {{ tcp = 30, tcpfin = 5, udp = 60 }}
arping_count = 1

[[service]]
vip = "192.168.30.254"
port = 80
scheduler = "wrr"
real = [{{ address = "192.168.30.111", weight = 1 }}, {{ address = "192.168.30.112", weight = 2 }}]

[[service]]
vip = "192.168.30.254"
port = 53
protocol = "udp"
scheduler = "rr"
real = [{{ address = "192.168.30.111" }}, {{ address = "192.168.30.112" }}]
"""

REALSERVER_CONFIG = """
[realserver]
arp_interfaces = ["eth0", "eth1"]

[[service]]
vip = "192.168.30.254"
port = 80
real = [{ address = "192.168.30.111" }, { address = "192.168.30.112" }]

[[service]]
vip = "192.168.30.253"
port = 80
real = [{ address = "192.168.30.111" }, { address = "192.168.30.112" }]
"""

CONFIGS = {"director": DIRECTOR_CONFIG, "realserver": REALSERVER_CONFIG}


class Bench(RoleMachine):
    """A fake machine for one role; arping gets an answer from the gateway."""

    def __init__(self, root: Path, role: str) -> None:
        super().__init__(FakeHost(root / "host"), root, role, CONFIGS[role])
        self.host.set_neighbour(GATEWAY, "52:54:00:00:00:01")


# ------------------------------------------------------------------ kill points


@dataclass(frozen=True)
class Point:
    role: str
    action: str
    nth: int  # the call of the action (from 1) at which the fake blocks
    when: str  # "before" or "after" the call's change
    argv: tuple[str, ...]

    @property
    def id(self) -> str:
        words = "-".join(w for w in self.argv[:3] if not w.startswith("-")) or self.argv[0]
        return f"{self.role}-{self.action}-{self.nth:02d}-{self.when}-{words}"


def record_points(role: str, action: str, root: Path) -> list[Point]:
    """Run the action without faults and turn its calls into kill points."""
    bench = Bench(root, role)
    if action == "stop":
        must(bench.cli("start"))
    bench.host.clear_calls()
    must(bench.cli(action))
    points: list[Point] = []
    previous_changed = False
    for nth, call in enumerate(bench.host.calls(), start=1):
        argv = tuple(call["argv"])
        first_change = call["changed"] and not points
        if previous_changed or first_change:
            points.append(Point(role, action, nth, "before", argv))
        if call["changed"]:
            points.append(Point(role, action, nth, "after", argv))
        previous_changed = call["changed"]
    assert any(p.when == "after" for p in points), f"{role} {action} changed nothing"
    return points


@functools.cache
def all_points() -> list[Point]:
    with tempfile.TemporaryDirectory(prefix="lvs-crash-") as tmp:
        return [point for number, (role, action) in enumerate(
                    [("director", "start"), ("director", "stop"),
                     ("realserver", "start"), ("realserver", "stop")])
                for point in record_points(role, action, Path(tmp) / str(number))]


def _points() -> list[Point]:
    # Collection must not fail on a machine where the CLI cannot run (the tests skip).
    return all_points() if os.geteuid() == 0 else []


# ------------------------------------------------------------------ the tests


def kill_at(bench: Bench, point: Point) -> None:
    """Run the action, blocked at the point, and kill -9 it (and the blocked fake)."""
    bench.host.hang(point.nth, point.when)
    process = bench.popen(point.action)
    try:
        wait_for(lambda: bench.host.hangs()[0]["fired"] == 1 or process.poll() is not None)
        assert process.poll() is None, (
            f"the run ended before call {point.nth} ({' '.join(point.argv)}): "
            f"{process.communicate()}")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        bench.host.clear_hangs()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize("point", _points(), ids=lambda p: p.id)
def test_kill_9_then_stop_puts_the_machine_back(point: Point, tmp_path: Path) -> None:
    bench = Bench(tmp_path, point.role)
    pristine = snapshot(bench.host)
    if point.action == "stop":
        must(bench.cli("start"))
    kill_at(bench, point)

    must(bench.cli("stop"))
    assert differences(snapshot(bench.host), pristine) == {}, "stop after the kill"
    if point.action == "start":
        must(bench.cli("start"))
        must(bench.cli("stop"))
        assert differences(snapshot(bench.host), pristine) == {}, \
            "start, stop after the kill and a stop"


def test_the_kill_points_cover_the_steps_asked_for() -> None:
    """The points include the ones issue 9 names, so that a change in how the fakes count
    cannot quietly drop them."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ids = {(p.role, p.action, p.when, p.argv[:2]) for p in all_points()}
    assert ("director", "start", "after", ("ipvsadm", "-R")) in ids
    # The check after the batch: the rules are in the kernel, the run was about to look.
    starts = [p for p in all_points() if (p.role, p.action) == ("director", "start")]
    after_batch = [p.nth for p in starts if p.argv[:2] == ("ipvsadm", "-R")]
    assert any(p.nth == after_batch[0] + 1 and p.when == "before" for p in starts)
    assert ("realserver", "start", "after", ("sysctl", "-w")) in ids
    # The VIPs on lo go on (and off) in one `ip -force -batch -`; killed after it, the run
    # was about to read the addresses to learn which took.
    assert ("realserver", "start", "after", ("ip", "-force")) in ids
    assert ("realserver", "stop", "after", ("ip", "-force")) in ids
    real_starts = [p for p in all_points() if (p.role, p.action) == ("realserver", "start")]
    after_vips = [p.nth for p in real_starts if p.argv[:2] == ("ip", "-force")]
    assert any(p.nth == after_vips[0] + 1 and p.when == "before" for p in real_starts)
    assert ("realserver", "stop", "after", ("sysctl", "-w")) in ids
    assert ("director", "stop", "after", ("ip", "route")) in ids
