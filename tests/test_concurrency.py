"""Two runs of the same tool at once serialise on the run lock (an flock on
LVS_STATE_DIR/<tool>.lock); a run that cannot get it within --wait names the holder.

The runs are real processes (bin/lvs-director) against the emulated machine; a fake
command made slow (FakeHost.delay) keeps the first run inside its apply while the second
one starts.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from tests.fakes.fakehost import FakeHost
from tests.machines import DirectorMachine, director_config, opened, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="real runs exit 4 without root; run as root (make test)")

VIP = "192.168.30.254"
CONFIG = director_config(
    VIP, '{ address = "192.168.30.111" }, { address = "192.168.30.112", weight = 2 }')
RULES = [
    f"-A -t {VIP}:80 -s wrr",
    f"-a -t {VIP}:80 -r 192.168.30.111:80 -g -w 1",
    f"-a -t {VIP}:80 -r 192.168.30.112:80 -g -w 2",
]
OBSERVE = [["ip", "-o", "link", "show"], ["ip", "-o", "addr", "show"],
           ["ip", "-4", "route", "show", "default"], ["ipvsadm", "-S", "-n"]]
# One start on the fresh machine, then one that finds everything in place.
FIRST = [*OBSERVE,
         ["ip", "addr", "add", f"{VIP}/32", "brd", VIP, "dev", "eth0"],
         ["ip", "route", "replace", "default", "via", "192.168.30.1"],
         ["ipvsadm", "-R"], ["ipvsadm", "-S", "-n"],
         # the verification reads again only what an ip command changed (the batch
         # check's reading of the table serves it: observe.KnownReadings)
         ["ip", "-o", "addr", "show"], ["ip", "-4", "route", "show", "default"]]
SECOND = [*OBSERVE]  # nothing applied: the observation is the verification


@pytest.fixture
def machine(fakehost: FakeHost, tmp_path: Path) -> DirectorMachine:
    return DirectorMachine(fakehost, tmp_path, CONFIG)


def test_two_starts_at_once_serialise(machine: DirectorMachine) -> None:
    host = machine.host
    host.delay(["ip", "addr", "add"], 3.0)
    first = machine.popen("start")
    # The first run is inside its apply (holding the run lock) when the second begins,
    # and the second is waiting for the lock (has the file open) before the first ends.
    wait_for(lambda: host.delays()[0]["fired"] == 1)
    second = machine.popen("start")
    wait_for(lambda: opened(second.pid, machine.state_dir / "lvs-director.lock"))
    assert first.poll() is None, "the runs did not overlap"
    out1, err1 = first.communicate(timeout=120)
    assert second.poll() is None, "the second run did not wait for the first"
    out2, err2 = second.communicate(timeout=120)

    assert (first.returncode, err1) == (0, "")
    assert (second.returncode, err2) == (0, "")
    assert out1 == "lvs-director start: 5 change(s) applied\n"
    assert out2 == "lvs-director start: nothing to do\n"
    # Serialised: all the second run's observations follow the first run's changes and
    # its verification; nothing was done twice.
    assert host.argvs() == FIRST + SECOND
    assert host.ipvs_save().splitlines() == RULES
    assert host.addresses("eth0").count(f"{VIP}/32") == 1
    assert [r["via"] for r in host.default_routes()] == ["192.168.30.1"]
    assert machine.run("status").returncode == 0


def test_wait_gives_up_naming_the_pid_that_holds_the_lock(machine: DirectorMachine) -> None:
    machine.state_dir.mkdir()
    lock_path = machine.state_dir / "lvs-director.lock"
    with open(lock_path, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write("4242\n")
        holder.flush()
        began = time.monotonic()
        done = machine.run("--wait", "0.5", "start")
        waited = time.monotonic() - began
    assert done.returncode == 1
    assert "another lvs-director is running (pid 4242)" in done.stderr
    assert str(lock_path) in done.stderr
    assert "Traceback" not in done.stderr
    assert waited >= 0.5
    assert machine.host.argvs() == []  # not even an observation
    assert sorted(os.listdir(machine.state_dir)) == ["lvs-director.lock"]
    assert not machine.lock_dir.exists()


def test_a_lock_file_left_by_a_killed_run_does_not_block(machine: DirectorMachine) -> None:
    """The pid in the file is only for the message: the kernel drops a dead holder's
    flock, so a run killed with SIGKILL never blocks the next one."""
    machine.state_dir.mkdir()
    (machine.state_dir / "lvs-director.lock").write_text("999999\n")
    done = machine.run("--wait", "0", "start")
    assert (done.returncode, done.stderr) == (0, "")
    assert machine.host.ipvs_save().splitlines() == RULES
    assert (machine.state_dir / "lvs-director.lock").read_text().strip().isdigit()
    assert (machine.state_dir / "lvs-director.lock").read_text() != "999999\n"
