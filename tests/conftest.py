"""Fixtures shared by all tests: an emulated machine, and a guard against the real one.

Why PATH is built the way it is
-------------------------------
CLI tests run the real entry points (`bin/lvs-director`, `init.d/...`) as
subprocesses against fake `ipvsadm`, `ip`, `sysctl`, `arping` and `modprobe`
(tests/fakes/bin). Putting the fakes first on an otherwise normal PATH is not
enough: a test that removes a tool ("this machine has no arping") would then
find the host's /usr/bin/arping further down the PATH and run it. So
`fakehost.env["PATH"]` contains no host directory at all:

1. `<host dir>/bin`: symlinks to the fakes, minus the tools the test removed;
2. the venv's bin directory (entry points, python3), only if it holds none of
   the guarded names;
3. `<host dir>/sysbin`: symlinks to a short list of harmless host programs a
   shell script needs (sh, env, cat, flock, id, ...; see fakehost.HOST_PROGRAMS).

A removed tool is then "command not found" (exit 127 from a shell,
FileNotFoundError / plumbum CommandNotFound in Python), exactly as on a machine
without it. `build_path` refuses to build a PATH where any entry but the fakes
holds one of the guarded names.

The in-process guard
--------------------
Code under test that runs in this process (`main(argv)` called from a test)
could still reach a real tool: through the host PATH of the pytest process, or
by an absolute path such as /sbin/ipvsadm. The autouse `real_tool_guard`
fixture wraps every way Python starts a program (see fakes/guard.py) and
raises `RealToolBlocked` for any guarded name that does not resolve into
tests/fakes/bin; the test then also fails at teardown, even if the code under
test swallowed the exception. The guard cannot see inside a child process: a
subprocess that calls a tool by absolute path escapes it, which is one more
reason for the library to look tools up on PATH only.

Fixtures
--------
- `fakehost`: a `FakeHost` in tmp_path, the default director machine. Use
  `fakehost.env` for subprocesses, `fakehost.run([...])` to run one,
  `fakehost.calls()` / `fakehost.argvs("ipvsadm")` to read what was run.
- `fakehost_inprocess`: the same, with this process's PATH (and plumbum's
  `local.env`) pointed at it, for tests that call `main(argv)` directly.
- `real_tool_guard`: autouse; `with real_tool_guard.expect_block(): ...` in a
  test that checks the guard itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.fakehost import FakeHost
from tests.fakes.guard import RealToolGuard

NO_PROC_IP_VS = "/nonexistent/lvs-test/proc-net-ip_vs"


@pytest.fixture(autouse=True)
def real_tool_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[RealToolGuard]:
    guard = RealToolGuard()
    guard.install(monkeypatch)
    # The director reads the IPVS table from /proc/net/ip_vs where it exists: never the
    # real kernel's in a host test (a machine with IPVS), always the fake ipvsadm's.
    monkeypatch.setenv("LVS_TEST_PROC_IP_VS", NO_PROC_IP_VS)
    yield guard
    if guard.violations:
        pytest.fail(
            "attempted to run real system tools:\n  " + "\n  ".join(guard.violations),
            pytrace=False,
        )


@pytest.fixture
def fakehost(tmp_path: Path) -> Iterator[FakeHost]:
    host = FakeHost(tmp_path / "fakehost")
    yield host
    host.stop_daemons()  # fake keepalived daemons a test left running


@pytest.fixture
def fakehost_inprocess(fakehost: FakeHost, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    env = fakehost.env
    for key in ("PATH", "FAKEHOST_DIR", "LANG", "LC_ALL"):
        monkeypatch.setenv(key, env[key])
    try:
        from plumbum import local
    except ImportError:  # pragma: no cover - plumbum is a dependency
        return fakehost
    for key in ("PATH", "FAKEHOST_DIR", "LANG", "LC_ALL"):
        monkeypatch.setitem(local.env, key, env[key])
    if "plumbum" in sys.modules:
        local.clear_program_cache()
    return fakehost
