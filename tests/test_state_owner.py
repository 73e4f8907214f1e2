"""A state directory others can write, or a state file or directory someone else owns, is
refused before anything changes (issue 9, item 4).

The state file says what stop deletes and puts back, and root acts on it: a directory
where any user can create or swap files (mode 0777, even 1777: a user can plant the file
before root first writes it), or one a user owns, or a state file a user owns, would let
that user make root delete addresses and services or set sysctls. start, stop and status
must refuse such a path (non-zero exit, the message names it) and change nothing: neither
the machine nor the files.

The runs are processes (bin/lvs-realserver) against the emulated machine; the paths are
real, in the test's temporary directory. The same checks on the real kernel, in a
namespace of the lab VM: tests/e2e/test_lab_realserver_state.py.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.fakehost import FakeHost
from tests.machines import RoleMachine, must, snapshot

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: real runs, and chown to another user")

OTHER_UID = 12345  # no such user needed: ownership is a number

CONFIG = """
[realserver]
arp_interfaces = ["eth0"]

[[service]]
vip = "192.168.30.254"
port = 80
real = [{ address = "192.168.30.111" }]
"""
# One more VIP: a start that is not refused would have something to do.
MORE = CONFIG + """
[[service]]
vip = "192.168.30.253"
port = 80
real = [{ address = "192.168.30.111" }]
"""


def world_writable(mode: int) -> Callable[[RoleMachine], Path]:
    def spoil(machine: RoleMachine) -> Path:
        os.chmod(machine.state_dir, mode)
        return machine.state_dir
    return spoil


def dir_of_another_user(machine: RoleMachine) -> Path:
    os.chown(machine.state_dir, OTHER_UID, OTHER_UID)
    return machine.state_dir


def file_of_another_user(machine: RoleMachine) -> Path:
    os.chown(machine.state_file, OTHER_UID, OTHER_UID)
    return machine.state_file


SPOILS: dict[str, Callable[[RoleMachine], Path]] = {
    "dir-1777": world_writable(0o1777),
    "dir-0777": world_writable(0o777),
    "dir-other-uid": dir_of_another_user,
    "file-other-uid": file_of_another_user,
}


def files(directory: Path) -> dict[str, tuple[bytes, int, int, int]]:
    """Every file of the directory: content, mode, owner, group."""
    found = {}
    for path in sorted(directory.iterdir()):
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
        found[path.name] = (content, info.st_mode, info.st_uid, info.st_gid)
    return found


@pytest.mark.parametrize("action", ["start", "stop", "status"])
@pytest.mark.parametrize("spoil", list(SPOILS))
def test_unsafe_state_path_is_refused_and_nothing_changes(
        fakehost: FakeHost, tmp_path: Path, spoil: str, action: str) -> None:
    machine = RoleMachine(fakehost, tmp_path, "realserver", CONFIG)
    must(machine.cli("start"))
    assert machine.state_file.exists()
    path = SPOILS[spoil](machine)
    machine.config.write_text(MORE)
    machine_before = snapshot(fakehost)
    files_before = files(machine.state_dir), os.lstat(machine.state_dir)

    ran = machine.cli(action)

    assert ran.returncode != 0, f"{action} accepted {path}:\n{ran.stdout}{ran.stderr}"
    assert str(path) in ran.stdout + ran.stderr, ran.stdout + ran.stderr
    assert snapshot(fakehost) == machine_before
    after = files(machine.state_dir), os.lstat(machine.state_dir)
    assert after[0] == files_before[0]
    assert (after[1].st_mode, after[1].st_uid) == (files_before[1].st_mode,
                                                    files_before[1].st_uid)


@pytest.mark.parametrize("mode", [0o1777, 0o777], ids=["1777", "0777"])
def test_start_refuses_a_fresh_world_writable_state_directory(
        fakehost: FakeHost, tmp_path: Path, mode: int) -> None:
    """Before root ever wrote a state file there (someone prepared the directory)."""
    machine = RoleMachine(fakehost, tmp_path, "realserver", CONFIG)
    machine.state_dir.mkdir()
    os.chmod(machine.state_dir, mode)
    pristine = snapshot(fakehost)

    ran = machine.cli("start")

    assert ran.returncode != 0, ran.stdout + ran.stderr
    assert str(machine.state_dir) in ran.stdout + ran.stderr
    assert snapshot(fakehost) == pristine
    assert list(machine.state_dir.iterdir()) == []
