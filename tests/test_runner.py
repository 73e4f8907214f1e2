"""The one executor: argv lists through plumbum, LANG=C, one error type."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from plumbum import local

from lvs_scripts.errors import CommandFailed, IpvsDenied, IpvsUnavailable, MissingTool
from lvs_scripts.runner import PlumbumRunner, Result, check_result

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[Path]:
    """A folder of tiny programs put first on plumbum's PATH for one test."""
    with local.env(PATH=f"{tmp_path}:/usr/bin:/bin"):
        yield tmp_path


def program(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


# Run in a new process: this one has imported plumbum (and maybe urllib) already.
PLUMBUM_WITHOUT_URLLIB = """
import sys
from lvs_scripts.runner import PlumbumRunner
runner = PlumbumRunner()
runner.prepare()
print(sorted(m for m in ("urllib.request", "http.client", "email", "ssl") if m in sys.modules))
print(runner.run(["echo", "ran"]).stdout.strip())
from plumbum import local
print(local.path("/tmp").as_uri())  # plumbum's own use of urllib.request still works
import urllib.request
print(callable(urllib.request.urlopen), "http.client" in sys.modules)
"""


def test_plumbum_is_imported_without_urllib_request() -> None:
    """plumbum imports urllib.request (http.client, email, ssl: half of its import time)
    for one method we never call: the runner leaves it out until something uses it."""
    ran = subprocess.run([sys.executable, "-c", PLUMBUM_WITHOUT_URLLIB], capture_output=True,
                         text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert ran.stdout.splitlines() == ["[]", "ran", "file:///tmp", "True True"]


def test_runs_with_the_c_locale(tools: Path) -> None:
    program(tools, "show-locale", 'echo "$LANG/$LC_ALL"')
    with local.env(LANG="de_DE.UTF-8", LC_ALL="de_DE.UTF-8"):
        result = PlumbumRunner().run(["show-locale"])
    assert result.stdout == "C/C\n"


def test_arguments_are_never_interpreted_by_a_shell(tools: Path) -> None:
    program(tools, "args", 'for a in "$@"; do printf "<%s>\\n" "$a"; done')
    hostile = ["a b", "x; touch pwned", "$(id)", "`id`", "new\nline", "ünïcødé", "*"]
    result = PlumbumRunner().run(["args", *hostile])
    assert result.stdout.split("\n")[:-1] == [
        "<a b>", "<x; touch pwned>", "<$(id)>", "<`id`>", "<new", "line>", "<ünïcødé>", "<*>"]
    assert not (tools / "pwned").exists()


def test_stdin_is_fed_to_the_program(tools: Path) -> None:
    program(tools, "count-lines", "wc -l")
    assert PlumbumRunner().run(["count-lines"], stdin="-A x\n-a y\n").stdout.strip() == "2"


def test_failure_carries_argv_exit_code_and_stderr(tools: Path) -> None:
    program(tools, "fails", 'echo "RTNETLINK answers: File exists" >&2; exit 2')
    with pytest.raises(CommandFailed) as caught:
        PlumbumRunner().run(["fails", "addr", "add"])
    err = caught.value
    assert (err.argv, err.returncode, err.stderr) == (("fails", "addr", "add"), 2,
                                                      "RTNETLINK answers: File exists")
    assert str(err) == "`fails addr add` exited 2: RTNETLINK answers: File exists"
    assert err.exit_code == 1


def test_unchecked_run_returns_the_failure(tools: Path) -> None:
    program(tools, "fails", "echo out; exit 3")
    result = PlumbumRunner().run(["fails"], check=False)
    assert (result.returncode, result.stdout) == (3, "out\n")


def test_missing_program_is_exit_5_naming_the_package(tools: Path) -> None:
    with pytest.raises(MissingTool) as caught:
        PlumbumRunner().run(["ipvsadm", "-S", "-n"])
    assert caught.value.exit_code == 5
    assert "apt-get install ipvsadm" in str(caught.value)


def test_each_run_is_logged_before_it_starts(tools: Path, caplog: pytest.LogCaptureFixture
                                             ) -> None:
    program(tools, "ok", "true")
    caplog.set_level("DEBUG", logger="lvs_scripts")
    runner = PlumbumRunner()
    runner.run(["ok", "two words"])
    assert "run: ok 'two words'" in caplog.text
    assert runner.count == 1


@pytest.mark.parametrize(("result", "error"), [
    (Result(("sysctl", "-w", "k=1"), 0, "", "sysctl: permission denied on key 'k'"),
     CommandFailed),
    (Result(("/sbin/sysctl", "-w", "k=1"), 0, "k = 1\n", ""), None),
    (Result(("ipvsadm", "-S", "-n"), 1, "",
            "Can't initialize ipvs: Protocol not available\n"
            "Are you sure that IP Virtual Server is built in the kernel or as module?\n"),
     IpvsUnavailable),
    (Result(("ipvsadm", "-A"), 1, "", "Service already exists\n"), CommandFailed),
    (Result(("ip", "addr"), 0, "", "warning text"), None),
], ids=["sysctl-exit-0-with-stderr-fails", "sysctl-clean", "no-ipvs-in-kernel",
        "ipvsadm-error", "ip-stderr-alone-is-not-failure"])
def test_check_result(result: Result, error: type[Exception] | None) -> None:
    if error is None:
        check_result(result)
    else:
        with pytest.raises(error):
            check_result(result)


def test_no_ipvs_is_exit_5_with_how_to_fix() -> None:
    with pytest.raises(IpvsUnavailable) as caught:
        check_result(Result(("ipvsadm", "-S", "-n"), 1, "",
                            "Can't initialize ipvs: Protocol not available\n"))
    assert caught.value.exit_code == 5
    assert "modprobe ip_vs" in str(caught.value)


# What ipvsadm prints without CAP_NET_ADMIN: ipvs_init() fails with EPERM, which libipvs's
# ipvs_strerror() words as below, inside the same "Can't initialize ipvs" line as a kernel
# without IPVS.
NOT_ROOT = ("Can't initialize ipvs: Permission denied (you must be root)\n"
            "Are you sure that IP Virtual Server is built in the kernel or as module?\n")


@pytest.mark.parametrize(("argv", "verb"), [(("ipvsadm", "-S", "-n"), "read"),
                                            (("ipvsadm", "-L", "--timeout"), "read"),
                                            (("ipvsadm", "-R"), "changed")])
def test_permission_denied_is_not_root_not_a_kernel_without_ipvs(
        argv: tuple[str, ...], verb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 4242)  # no passwd entry: the number alone
    with pytest.raises(IpvsDenied) as caught:
        check_result(Result(argv, 2, "", NOT_ROOT))
    assert caught.value.exit_code == 4
    assert str(caught.value) == (
        f"the IPVS table could not be {verb} as user uid 4242 (ipvsadm said: Can't "
        "initialize ipvs: Permission denied (you must be root)): run it as root")


def test_public_api_names_all_resolve() -> None:
    import lvs_scripts

    assert sorted(lvs_scripts.__all__) == sorted(lvs_scripts._WHERE)
    for name in lvs_scripts.__all__:
        assert getattr(lvs_scripts, name).__name__ == name
