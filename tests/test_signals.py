"""SIGTERM and SIGINT during a run: the step under way is finished and recorded, the run
stops before the next one, the run lock is released, and no traceback is printed. A
drain wait ends at once.

The runs are real processes (bin/lvs-director) against the emulated machine; a fake
command made slow (FakeHost.delay) is the "step under way" when the signal arrives.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import signal
import time
from pathlib import Path

import pytest

from lvs_scripts.cli import director_main
from tests.fakes.fakehost import FakeHost
from tests.machines import DirectorMachine, director_config, opened, wait_for
from tests.test_faults import in_process, read_only

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="real runs exit 4 without root; run as root (make test)")

VIP = "192.168.30.254"
SERVICE = f"tcp {VIP}:80"
DELAY = 2.0  # seconds the slow step takes
SLACK = 5.0  # a loaded test machine: processes start slowly


def config(*reals: str, drain: int = 30) -> str:
    return director_config(VIP, ", ".join(f'{{ address = "{r}" }}' for r in reals), drain)


class Machine(DirectorMachine):
    new_session = True  # a Ctrl-C (SIGINT to the process group) reaches only the run

    def __init__(self, host: FakeHost, root: Path) -> None:
        super().__init__(host, root, config("192.168.30.111", "192.168.30.112"))

    @property
    def state_file(self) -> Path:
        return self.state_dir / "lvs-director.json"

    def here(self, *args: str) -> tuple[int, str]:
        """A run in this process (quicker than a process): (exit status, stdout+stderr)."""
        out = io.StringIO()
        with in_process(self.host), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(out):
            code = director_main(["-c", str(self.config), "--state-dir", str(self.state_dir),
                                  "--lock-dir", str(self.lock_dir), *args])
        return code, out.getvalue()

    def state(self) -> dict[str, object]:
        return json.loads(self.state_file.read_text())  # type: ignore[no-any-return]


@pytest.fixture
def machine(fakehost: FakeHost, tmp_path: Path) -> Machine:
    return Machine(fakehost, tmp_path)


def changes(host: FakeHost) -> list[list[str]]:
    return [argv for argv in host.argvs() if not read_only(argv)]


def assert_lock_released_and_finished(machine: Machine) -> None:
    """A start right away (no waiting allowed) finishes the job."""
    code, said = machine.here("--wait", "0", "start")
    assert code == 0, said
    assert "Traceback" not in said
    assert machine.host.ipvs_save().splitlines() == [
        f"-A -t {VIP}:80 -s wrr",
        f"-a -t {VIP}:80 -r 192.168.30.111:80 -g -w 1",
        f"-a -t {VIP}:80 -r 192.168.30.112:80 -g -w 1",
    ]
    assert machine.host.addresses("eth0").count(f"{VIP}/32") == 1
    assert machine.here("status")[0] == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_stops_start_after_the_step_under_way(machine: Machine,
                                                     signum: signal.Signals) -> None:
    host = machine.host
    vip_add = ["ip", "addr", "add", f"{VIP}/32", "brd", VIP, "dev", "eth0"]
    host.delay(vip_add, DELAY)
    process = machine.popen("start")
    wait_for(lambda: host.delays()[0]["fired"] == 1)
    sent = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    took = time.monotonic() - sent

    assert process.returncode == 1, err
    assert took < DELAY + SLACK
    assert "Traceback" not in err
    assert f"{signum.name} received: stopping after the current step" in err
    assert "interrupted by a signal; stopped between two steps" in err
    # The step under way was finished and recorded; nothing after it ran.
    assert changes(host) == [vip_add]
    assert f"{VIP}/32" in host.addresses("eth0")
    assert host.ipvs_save() == ""
    assert [r["via"] for r in host.default_routes()] == ["192.168.30.200"]
    recorded = machine.state()
    assert {key: recorded.get(key) for key in ("addresses", "route", "services", "sysctls",
                                                "timeouts")} == {
        "addresses": [{"device": "eth0", "cidr": f"{VIP}/32", "purpose": "vip",
                       "announced": False}],
        "route": None, "services": [], "sysctls": [], "timeouts": None}
    assert not (machine.lock_dir / "lvs-director").exists()
    assert_lock_released_and_finished(machine)


def test_ctrl_c_reaches_the_command_too(machine: Machine) -> None:
    """Ctrl-C signals the whole process group: the slow command dies of it too (before
    changing anything); the run fails on it, and records nothing it did not do."""
    host = machine.host
    host.delay(["ip", "addr", "add"], DELAY)
    process = machine.popen("start")
    wait_for(lambda: host.delays()[0]["fired"] == 1)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)

    assert process.returncode == 1, err
    assert "Traceback" not in err
    assert f"`ip addr add {VIP}/32 brd {VIP} dev eth0` exited" in err
    assert "nothing was applied before the failure" in err
    assert host.addresses("eth0") == ["192.168.30.105/24"]
    assert not machine.state_file.exists()
    assert_lock_released_and_finished(machine)


def test_signal_ends_a_drain_wait_at_once(machine: Machine) -> None:
    host = machine.host
    assert machine.here("start")[0] == 0
    # reload without 192.168.30.112, which has open connections and an hour to drain.
    machine.config.write_text(config("192.168.30.111", drain=3600))
    host.set_counters(f"tcp {VIP}:80", "192.168.30.112:80", activeconns=3)
    host.clear_calls()
    process = machine.popen("reload")
    wait_for(lambda: ["ipvsadm", "-L", "-n"] in host.argvs())  # polling the connections
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    took = time.monotonic() - sent

    assert process.returncode == 1, err
    assert took < SLACK
    assert "Traceback" not in err
    assert (f"interrupted while waiting until 192.168.30.112:80 in {SERVICE} has no "
            "connections") in err
    # Drained (weight 0) but not deleted: the deletion was the next step.
    assert changes(host) == [["ipvsadm", "-e", "-t", f"{VIP}:80", "-r", "192.168.30.112:80",
                              "-g", "-w", "0"]]
    assert f"-a -t {VIP}:80 -r 192.168.30.112:80 -g -w 0" in host.ipvs_save().splitlines()
    assert [f"{s['protocol']} {s['address']}:{s['port']}" for s in machine.state()["services"]
            ] == [SERVICE]
    # The run lock is free: the reload can be finished at once.
    code, said = machine.here("--wait", "0", "--no-drain", "reload")
    assert code == 0, said
    assert "192.168.30.112" not in host.ipvs_save()


def test_signal_ends_the_wait_for_the_run_lock(machine: Machine) -> None:
    machine.state_dir.mkdir()
    with open(machine.state_dir / "lvs-director.lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write("4242\n")
        holder.flush()
        process = machine.popen("--wait", "4", "start")
        # Waiting for the lock once it has the lock file open (its handlers are set by then).
        wait_for(lambda: opened(process.pid, machine.state_dir / "lvs-director.lock"))
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
        took = time.monotonic() - sent
    assert process.returncode == 1
    assert "SIGTERM" in err
    assert took < 2.0
    assert machine.host.argvs() == []
