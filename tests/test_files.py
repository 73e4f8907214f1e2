"""The state file, the SysV lock file and the run lock: modes, atomic replacement,
symlinks planted at their paths, corrupt contents, a state directory that cannot be
written.

The CLI runs in this process against the emulated machine (see tests/test_faults.py,
`Bench`), except where the test needs another user.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.test_faults import Bench, read_only

ROOT = Path(__file__).resolve().parent.parent
STATE = "lvs-director.json"
RUN_LOCK = "lvs-director.lock"
PRECIOUS = "precious: must not be touched\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return Bench(tmp_path, "director")


def nested(bench: Bench) -> Bench:
    """State and lock directories two levels below anything that exists."""
    bench.state_dir = bench.state_dir / "a" / "run"
    bench.lock_dir = bench.lock_dir / "b" / "subsys"
    return bench


# ------------------------------------------------------------------ modes


def test_files_are_0644_in_directories_0755(bench: Bench) -> None:
    old = os.umask(0o022)
    try:
        ran = nested(bench).cli("start")
    finally:
        os.umask(old)
    assert ran.code == 0, ran.err
    for directory in (bench.state_dir, bench.state_dir.parent, bench.lock_dir,
                      bench.lock_dir.parent):
        assert stat.S_ISDIR(os.lstat(directory).st_mode)
        assert mode(directory) == 0o755, directory
    assert sorted(os.listdir(bench.state_dir)) == [STATE, RUN_LOCK]
    assert os.listdir(bench.lock_dir) == ["lvs-director"]
    for path in (bench.state_file, bench.state_dir / RUN_LOCK, bench.lock_file):
        assert stat.S_ISREG(os.lstat(path).st_mode)
        assert mode(path) == 0o644, path


def test_modes_do_not_depend_on_the_umask(bench: Bench) -> None:
    old = os.umask(0o077)
    try:
        ran = bench.cli("start")
    finally:
        os.umask(old)
    assert ran.code == 0, ran.err
    assert (mode(bench.state_dir), mode(bench.lock_dir)) == (0o755, 0o755)
    assert mode(bench.state_file) == 0o644
    assert (mode(bench.state_dir / RUN_LOCK), mode(bench.lock_file)) == (0o644, 0o644)


# ------------------------------------------------------------------ atomic replacement


def test_state_file_is_replaced_whole_after_every_step(bench: Bench,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Before every command of a start (that is, after every step), the state directory
    holds only the state file and the run lock, and the state file is complete JSON. Each
    new content arrives as a new file renamed into place: a file opened earlier still
    reads its old content (a rewrite in place would change it)."""
    seen: list[tuple[Any, str]] = []  # (open file, the content it had)
    invoke = bench.host.invoke

    def look(tool: str, args: list[str], stdin: Any = None, **kwargs: Any) -> Any:
        names = sorted(os.listdir(bench.state_dir))
        assert set(names) <= {STATE, RUN_LOCK}, names
        if STATE in names:
            handle = open(bench.state_file)  # kept open: see the end
            text = handle.read()
            json.loads(text)  # complete
            if seen and seen[-1][1] == text:
                handle.close()
            else:
                seen.append((handle, text))
        return invoke(tool, args, stdin, **kwargs)

    monkeypatch.setattr(bench.host, "invoke", look)
    try:
        ran = bench.cli("start")
        assert ran.code == 0, ran.err
        assert bench.state_file.read_text() == seen[-1][1]  # the last step saved it
        records = [json.loads(text) for _, text in seen]
        # One save per recorded step: the timeouts, the DIP, the two VIPs of one
        # `ip -batch`, the route, the batch's services (each before its command:
        # write-ahead), then each VIP's announcement (after its arping).
        assert [r["timeouts"]["previous"] for r in records] == [[900, 120, 300]] * 7
        assert [len(r["addresses"]) for r in records] == [0, 1, 3, 3, 3, 3, 3]
        assert [r["route"] is not None for r in records] == [False] * 3 + [True] * 4
        assert [len(r["services"]) for r in records] == [0, 0, 0, 0, 2, 2, 2]
        assert [sum(a["announced"] for a in r["addresses"]) for r in records] == [0] * 5 + [1, 2]
        for handle, text in seen:
            handle.seek(0)
            assert handle.read() == text
        assert len({os.fstat(handle.fileno()).st_ino for handle, _ in seen}) == len(seen)
    finally:
        for handle, _ in seen:
            handle.close()
    assert sorted(os.listdir(bench.state_dir)) == [STATE, RUN_LOCK]


def _enospc(_fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_no_temp_file_is_left_when_a_save_fails(bench: Bench,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", _enospc)  # /run is full
    try:
        bench.cli("start")
    except OSError:
        pass  # the error itself: see the next test
    assert sorted(os.listdir(bench.state_dir)) == [RUN_LOCK]


def test_a_state_file_that_cannot_be_written_is_a_clear_error(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", _enospc)
    ran = bench.cli("start")
    assert ran.code == 1
    assert str(bench.state_file) in ran.err
    assert "No space left on device" in ran.err
    assert "ip addr add 10.9.0.5/24 dev eth1" in ran.err  # applied: say so


# ------------------------------------------------------------------ symlinks


def _paths(bench: Bench) -> dict[str, Path]:
    return {"state file": bench.state_file, "run lock": bench.state_dir / RUN_LOCK,
            "lock file": bench.lock_file}


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
@pytest.mark.parametrize("which", ["state file", "run lock", "lock file"])
def test_symlink_is_refused_not_followed(bench: Bench, tmp_path: Path, which: str,
                                         dangling: bool) -> None:
    target = tmp_path / "target"
    if not dangling:
        target.write_text(PRECIOUS)
        target.chmod(0o600)
    link = _paths(bench)[which]
    link.parent.mkdir(parents=True)
    link.symlink_to(target)

    ran = bench.cli("start")

    assert ran.code != 0
    assert f"{link}: is a symbolic link; refusing to follow it" in ran.err
    assert "Traceback" not in ran.err
    assert len(ran.err.strip().splitlines()) == 1
    assert link.is_symlink() and os.readlink(link) == str(target)
    if dangling:
        assert not target.exists()
    else:
        assert target.read_text() == PRECIOUS
        assert mode(target) == 0o600
    assert bench.host.argvs() == []  # refused before anything ran


def test_stop_refuses_a_symlinked_lock_file_too(bench: Bench, tmp_path: Path) -> None:
    assert bench.cli("start").code == 0
    target = tmp_path / "target"
    target.write_text(PRECIOUS)
    bench.lock_file.unlink()
    bench.lock_file.symlink_to(target)
    bench.host.clear_calls()
    ran = bench.cli("stop")
    assert ran.code == 1
    assert f"{bench.lock_file}: is a symbolic link; refusing to follow it" in ran.err
    assert [argv for argv in bench.host.argvs() if not read_only(argv)] == []
    assert bench.lock_file.is_symlink()
    assert target.read_text() == PRECIOUS


@pytest.mark.parametrize("which", ["state", "lock"])
def test_symlinked_directory_is_refused(bench: Bench, tmp_path: Path, which: str) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    link = bench.state_dir if which == "state" else bench.lock_dir
    link.symlink_to(real)
    ran = bench.cli("start")
    assert ran.code == 1
    assert f"{link}: is not a directory" in ran.err
    assert "Traceback" not in ran.err
    assert bench.host.argvs() == []
    assert os.listdir(real) == []


# ------------------------------------------------------------------ corrupt state


GOOD = {"version": 1, "addresses": [["eth0", "192.168.30.254/32"]], "route": None,
        "services": ["tcp 192.168.30.254:80"], "sysctls": {}}

CORRUPT = {
    "garbage": b"lorem ipsum\n",
    "truncated": json.dumps(GOOD).encode()[:40],
    "list": b'[["eth0", "192.168.30.254/32"]]\n',
    "null": b"null\n",
    "empty": b"",
    "blank": b"\n\n",
    "old-version": json.dumps({**GOOD, "version": 99}).encode(),
    "unknown-key": json.dumps({**GOOD, "owner": "me"}).encode(),
    "addresses-string": json.dumps({**GOOD, "addresses": "eth0"}).encode(),
    "services-object": json.dumps({**GOOD, "services": {"tcp": 1}}).encode(),
    "sysctls-list": json.dumps({**GOOD, "sysctls": []}).encode(),
    "not-utf8": b"\xff\xfe\x00garbage",
    "route-number": json.dumps({**GOOD, "route": 5}).encode(),
    "address-short": json.dumps({**GOOD, "addresses": [["eth0"]]}).encode(),
    "address-number": json.dumps({**GOOD, "addresses": [5]}).encode(),
    "address-nonsense": json.dumps({**GOOD, "addresses": [["eth0", "nonsense"]]}).encode(),
    "service-number": json.dumps({**GOOD, "services": [5]}).encode(),
    "announced-not-an-address": json.dumps({**GOOD, "announced": ["eth0"]}).encode(),
    "announced-string": json.dumps({**GOOD, "announced": "192.168.30.254"}).encode(),
    "sysctl-text": json.dumps(
        {**GOOD, "sysctls": {"net.ipv4.conf.all.arp_ignore": "0; reboot"}}).encode(),
}


@pytest.mark.parametrize("action", ["start", "stop"])
@pytest.mark.parametrize("content", list(CORRUPT.values()), ids=list(CORRUPT))
def test_corrupt_state_file_is_a_clear_error(bench: Bench, content: bytes,
                                             action: str) -> None:
    bench.state_dir.mkdir()
    bench.state_file.write_bytes(content)
    before = bench.host.state()

    ran = bench.cli(action)

    assert ran.code == 1, ran.out
    assert "Traceback" not in ran.err
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err  # one paragraph
    message = lines[0]
    assert message.startswith(f"lvs-director: {bench.state_file}: state file is corrupt")
    assert "Inspect it" in message
    assert "undo by hand what it lists" in message
    assert "delete it" in message
    assert all(read_only(argv) for argv in bench.host.argvs())
    assert bench.host.state()["interfaces"] == before["interfaces"]
    assert bench.state_file.read_bytes() == content  # left for the admin to inspect
    assert not bench.lock_file.exists()


def test_corrupt_state_file_for_the_real_server_too(tmp_path: Path) -> None:
    bench = Bench(tmp_path, "realserver")
    bench.state_dir.mkdir()
    bench.state_file.write_bytes(b"{")
    ran = bench.cli("stop")
    assert ran.code == 1
    assert f"{bench.state_file}: state file is corrupt" in ran.err
    assert bench.host.argvs() == []


# ------------------------------------------------------------------ not writable


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv (util-linux)")
def test_state_directory_not_writable_is_a_clear_error(bench: Bench) -> None:
    """root without CAP_DAC_OVERRIDE (setpriv drops it), so that a 0555 state directory
    is really not writable: exit 1 naming the file, before anything ran."""
    bench.state_dir.mkdir(mode=0o555)
    bench.state_dir.chmod(0o555)
    env = {**bench.host.env, "LVS_STATE_DIR": str(bench.state_dir),
           "LVS_LOCK_DIR": str(bench.lock_dir), "LVS_SYSLOG": "0"}
    argv = [shutil.which("setpriv") or "setpriv",
            "--bounding-set", "-dac_override,-dac_read_search",
            str(ROOT / "bin" / "lvs-director"), "-c", str(bench.configs["a"]), "start"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"lvs-director: {bench.state_dir / RUN_LOCK}: Permission denied\n"
    assert os.listdir(bench.state_dir) == []
    assert not bench.lock_dir.exists()
    assert bench.host.argvs() == []
