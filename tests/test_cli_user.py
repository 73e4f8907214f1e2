"""The command line as a new user meets it (issue 9): run without root, odd option values,
--json for every action, each role's own options, a reader that closes the pipe early.

In process (`main(argv)`, the real executor on the fakes of `fakehost_inprocess`) where
the test must pretend to be another user; as a subprocess where the pipe is the point.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from lvs_scripts.cli import director_main, realserver_main
from tests.fakes.fakehost import FakeHost

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
SEED = ROOT / "examples" / "seed-dr.toml"
DENIED = "Can't initialize ipvs: Permission denied (you must be root)"
CHANGING = ("start", "stop", "restart", "reload", "force-reload")


@dataclass
class Ran:
    code: int
    out: str
    err: str


class Cli:
    """Both entry points in this process, as user `euid` (0 unless a call says otherwise)."""

    def __init__(self, host: FakeHost, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.host = host
        self.root = root
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("LVS_SYSLOG", "0")

    def __call__(self, tool: str, *args: str, euid: int = 0, config: Path = SEED) -> Ran:
        main = director_main if tool == "lvs-director" else realserver_main
        self.monkeypatch.setattr(os, "geteuid", lambda: euid)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["-c", str(config), "--state-dir", str(self.root / "run"),
                         "--lock-dir", str(self.root / "lock"), *args])
        return Ran(code, out.getvalue(), err.getvalue())

    def changes(self) -> list[list[str]]:
        reads = (["ip", "-o"], ["ip", "-4", "route"], ["ipvsadm", "-S"], ["ipvsadm", "-L"],
                 ["sysctl", "-n"], ["arping", "-V"])
        return [a for a in self.host.argvs() if not any(a[:len(r)] == r for r in reads)]


@pytest.fixture
def cli(fakehost_inprocess: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(fakehost_inprocess, tmp_path, monkeypatch)


def usage_error(main: Callable[[list[str]], int], *argv: str) -> str:
    """argparse's exit 2 and its message (it exits through SystemExit)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 2
    return err.getvalue()


# ------------------------------------------------------------------ not root (item 6)


def test_status_as_a_user_is_unknown_and_names_the_user(cli: Cli) -> None:
    cli.host.set_privileged(False)
    ran = cli("lvs-director", "status", euid=1000)
    assert (ran.code, ran.out) == (4, "")
    [line] = ran.err.splitlines()
    assert line.startswith("lvs-director: status unknown: the IPVS table could not be read "
                           "as user ")
    assert "uid 1000" in line
    assert f"(ipvsadm said: {DENIED}): run it as root" in line
    assert "no IPVS support" not in line


def test_status_json_as_a_user_is_json_too(cli: Cli) -> None:
    cli.host.set_privileged(False)
    ran = cli("lvs-director", "status", "--json", euid=1000)
    assert ran.code == 4
    data = json.loads(ran.out)
    assert data["code"] == 4
    assert "the IPVS table could not be read as user" in data["error"]


def test_dry_run_as_a_user_plans_and_says_what_it_assumed(cli: Cli) -> None:
    cli.host.set_privileged(False)
    ran = cli("lvs-director", "--dry-run", "start", euid=1000)
    assert ran.code == 0, ran.err
    said = "the IPVS table could not be read as user"
    assumed = "this plan assumes the table holds no services"
    [warning] = [line for line in ran.err.splitlines() if said in line]
    assert assumed in warning and "uid 1000" in warning
    lines = ran.out.splitlines()
    assert lines[0] == "#!/bin/sh"
    [comment] = [line for line in lines if said in line]
    assert comment.startswith("# note: ") and assumed in comment
    assert lines.index(comment) == 2  # right under the title, before any command
    assert "ipvsadm -R <<'EOF'" in ran.out  # the full start it believes is needed
    assert "IPVS support" not in ran.err + ran.out
    assert cli.changes() == []


def test_root_without_cap_net_admin_is_exit_4_before_anything_changes(cli: Cli) -> None:
    cli.host.set_privileged(False)  # ipvsadm refused even though the CLI runs as uid 0
    ran = cli("lvs-director", "start")
    assert ran.code == 4
    assert "the IPVS table could not be read as user" in ran.err
    assert "CAP_NET_ADMIN" in ran.err
    assert cli.changes() == []


def test_a_real_server_needs_no_ipvs_rights_for_status(cli: Cli) -> None:
    cli.host.set_privileged(False)
    assert cli("lvs-realserver", "status", euid=1000).code == 3


# ------------------------------------------------------------------ options (item 9)


@pytest.mark.parametrize("value", ["-1", "nan", "NaN", "inf", "-inf", "1e999", "soon", ""])
def test_wait_must_be_a_finite_number_of_seconds(value: str, cli: Cli) -> None:
    err = usage_error(director_main, "--wait", value, "status")
    assert "argument --wait" in err
    assert cli.host.argvs() == []


@pytest.mark.parametrize("value", ["0", "2.5"])
def test_wait_of_zero_or_a_fraction_is_fine(value: str, cli: Cli) -> None:
    assert cli("lvs-director", "--wait", value, "status").code == 3


@pytest.mark.parametrize("option", ["-c", "--config", "--state-dir", "--lock-dir"])
def test_an_empty_path_is_a_usage_error(option: str, cli: Cli) -> None:
    err = usage_error(realserver_main, option, "", "status")
    assert "an empty path" in err
    assert cli.host.argvs() == []


def test_an_empty_lvs_config_is_unset(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.path.exists("/etc/lvs/lvs.toml"):
        pytest.skip("this machine has a config of its own")
    monkeypatch.setenv("LVS_CONFIG", "")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert director_main(["start"]) == 6
    assert "/etc/lvs/lvs.toml: config file not found" in err.getvalue()


def test_each_role_offers_only_its_options() -> None:
    out = io.StringIO()
    for main in (director_main, realserver_main):
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            main(["--help"])
    director_help, realserver_help = out.getvalue().split("usage: lvs-realserver", 1)
    assert "--no-drain" in director_help
    assert "--no-drain" not in realserver_help
    assert "invalid choice" not in usage_error(realserver_main, "--no-drain", "start")


def test_start_stop_restart_reload_print_json_when_asked(cli: Cli) -> None:
    start = cli("lvs-director", "--json", "start")
    assert start.code == 0, start.err
    report = json.loads(start.out)
    assert (report["code"], report["action"], report["changed"]) == (0, "start", True)
    assert len(report["applied"]) == 9
    assert report["applied"][0] == "ipvsadm --set 30 5 60"
    assert [w for w in report["warnings"] if w.startswith("`arping ")], report
    assert report["notes"] == []

    again = json.loads(cli("lvs-director", "--json", "reload").out)
    assert (again["action"], again["changed"], again["applied"]) == ("reload", False, [])

    restart = json.loads(cli("lvs-director", "--json", "restart").out)
    assert (restart["action"], restart["changed"]) == ("restart", True)
    assert [r["action"] for r in restart["reports"]] == ["stop", "start"]
    assert len(restart["reports"][0]["applied"]) == 5  # the old route back in one replace

    stop = json.loads(cli("lvs-director", "--json", "stop").out)
    assert (stop["action"], len(stop["applied"])) == ("stop", 5)


@pytest.mark.parametrize(("action", "code"), [("status", 4), ("start", 6)])
def test_json_with_a_bad_config_is_json(action: str, code: int, cli: Cli,
                                        tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[director]\ninterface = "eth0"\nwieght = 1\n')
    ran = cli("lvs-director", "--json", action, config=bad)
    assert ran.code == code
    expected = {
        "code": code, "error": f"{bad}: director.wieght = 1: unknown key (allowed here: "
                               "interface, gateway, dip, dip_interface, timeouts, "
                               "arping_count, allow_no_services, metrics, sysctl)"}
    if action == "status":  # what the state file lists is still known: nothing here
        expected["owned"] = []
    assert json.loads(ran.out) == expected
    assert cli.host.argvs() == []


def test_stop_with_a_bad_config_stops_from_the_state_file_and_says_so(
        cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[director]\ninterface = "eth0"\nwieght = 1\n')
    ran = cli("lvs-director", "--json", "stop", config=bad)
    assert ran.code == 0
    assert json.loads(ran.out)["applied"] == []
    assert "director.wieght = 1: unknown key" in ran.err
    assert "stopping from the state file" in ran.err
    assert cli.host.argvs() == []  # nothing on record: nothing to look at


@pytest.mark.parametrize(("tool", "missing"), [("lvs-director", "ipvsadm"),
                                               ("lvs-realserver", "sysctl")])
def test_status_without_a_required_program_is_unknown(cli: Cli, tool: str,
                                                      missing: str) -> None:
    cli.host.remove_tool(missing)
    status = cli(tool, "status")
    assert status.code == 4
    assert status.err.startswith(f"{tool}: status unknown: {missing} not found on PATH")
    assert cli(tool, "start").code == 5  # the other actions keep LSB's 5


# ------------------------------------------------------------------ closed stdout (item 17)


@pytest.mark.parametrize(("args", "code"), [
    (["status"], 3),
    (["status", "--json"], 3),
    (["--dry-run", "start"], 0),
    (["--dry-run", "restart"], 0),
    (["start"], 0),
    (["--help"], 0),
])
def test_a_reader_that_went_away_gets_no_traceback(fakehost: FakeHost, tmp_path: Path,
                                                   args: list[str], code: int) -> None:
    """`lvs-director status | head -3`: the reader may exit before anything is written.
    The read end is closed before the program starts, so every write meets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**fakehost.env, "LVS_STATE_DIR": str(tmp_path / "run"),
           "LVS_LOCK_DIR": str(tmp_path / "lock"), "LVS_SYSLOG": "0"}
    try:
        done = subprocess.run([str(BIN / "lvs-director"), "-c", str(SEED), *args],
                              stdout=write_end, stderr=subprocess.PIPE, env=env, text=True,
                              timeout=120, check=False)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr
    assert "BrokenPipe" not in done.stderr
    assert done.returncode == code, done.stderr
    if args == ["start"]:  # the action itself was not cut short
        assert fakehost.ipvs_save() != ""
