"""bin/lvs-director and bin/lvs-realserver as processes against a fake host: for the
tests that send them signals, kill them or run several at once (test_signals,
test_concurrency, test_crash, test_state_files)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakes.fakehost import FakeHost

BIN = Path(__file__).resolve().parent.parent / "bin"
DIRECTOR = str(BIN / "lvs-director")


def director_config(vip: str, reals: str, drain: int | None = None) -> str:
    """A director with one wrr service on `vip` port 80 and no VIP announcements; `reals`
    is the inside of the service's TOML `real = [...]` array."""
    drain_line = "" if drain is None else f"drain_seconds = {drain}\n"
    return f"""
[director]
interface = "eth0"
gateway = "192.168.30.1"
arping_count = 0

[[service]]
vip = "{vip}"
port = 80
scheduler = "wrr"
{drain_line}real = [{reals}]
"""


class DirectorMachine:
    """bin/lvs-director as a process against `host` (IPVS loaded), with its state and
    lock directories and its config file (`config`) under `root`."""

    new_session = False  # popen(): start the run in a session (process group) of its own

    def __init__(self, host: FakeHost, root: Path, config: str) -> None:
        self.host = host
        host.set_ipvs("loaded")
        self.state_dir = root / "run"
        self.lock_dir = root / "lock"
        self.config = root / "lvs.toml"
        self.config.write_text(config)
        self.env = {**host.env, "LVS_STATE_DIR": str(self.state_dir),
                    "LVS_LOCK_DIR": str(self.lock_dir), "LVS_SYSLOG": "0"}

    def argv(self, *args: str) -> list[str]:
        return [DIRECTOR, "-c", str(self.config), *args]

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                start_new_session=self.new_session)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `condition` until it holds; the test fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def opened(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (a run waiting for the lock on it does)."""
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    return False


class RoleMachine:
    """bin/lvs-ROLE as a process against `host` (IPVS loaded), with its config file and
    its state and lock directories under `root`; every run in a session of its own, so
    that a test can kill it with whatever it started."""

    def __init__(self, host: FakeHost, root: Path, role: str, config: str) -> None:
        self.role = role
        self.host = host
        host.set_ipvs("loaded")  # loading ip_vs is not something stop undoes
        self.config = root / "lvs.toml"
        self.config.write_text(config)
        self.state_dir = root / "run"
        self.lock_dir = root / "lock"
        self.env = {**host.env, "LVS_SYSLOG": "0"}

    @property
    def state_file(self) -> Path:
        return self.state_dir / f"lvs-{self.role}.json"

    def argv(self, action: str) -> list[str]:
        return [str(BIN / f"lvs-{self.role}"), "-c", str(self.config), "--state-dir",
                str(self.state_dir), "--lock-dir", str(self.lock_dir), action]

    def cli(self, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(action), env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)

    def popen(self, action: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(action), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)


def must(ran: subprocess.CompletedProcess[str]) -> None:
    """The run exited 0 (else the assertion shows its stderr)."""
    assert ran.returncode == 0, f"{ran.args[-1]} exited {ran.returncode}:\n{ran.stderr}"


def snapshot(host: FakeHost) -> dict[str, Any]:
    """What start may change and stop must put back, with every attribute: addresses,
    routes, sysctls, the IPVS table and timeouts (not links: stop never downs one)."""
    st = host.state()
    return {
        "addresses": {i["name"]: i["addrs"] + i["addrs6"] for i in st["interfaces"]},
        "routes": host.routes(),
        "sysctl": host.sysctls(),
        "ipvs": host.ipvs_save(),
        "timeouts": host.timeouts(),
    }


def differences(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """{part: (now, before)} for each part of two snapshots that differs."""
    return {key: (now[key], before[key]) for key in before if now[key] != before[key]}
