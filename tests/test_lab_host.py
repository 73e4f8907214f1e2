"""The host side of the lab that needs no VM: where a run's results go."""

from __future__ import annotations

import os
from pathlib import Path

from lab.__main__ import results_folder


def test_concurrent_runs_of_one_command_get_separate_results_folders(tmp_path: Path) -> None:
    with results_folder("pytest", tmp_path) as first:
        with results_folder("pytest", tmp_path) as second:
            assert second == tmp_path / f"pytest-{os.getpid()}"
        with results_folder("demo", tmp_path) as other:
            assert other == tmp_path / "demo"  # another command: its own folder anyway
    assert first == tmp_path / "pytest"
    with results_folder("pytest", tmp_path) as later:  # the first run is over: free again
        assert later == tmp_path / "pytest"


# --- packages installed for their binaries only (keepalived) -----------------------------

def test_daemons_are_installed_on_the_host_with_their_services_kept_off() -> None:
    from lab.prepare import HOST_PACKAGES, HOST_SERVICES

    assert {"keepalived", "bird2"} <= set(HOST_PACKAGES)
    assert HOST_SERVICES["keepalived"] == ("keepalived.service", "keepalived")
    assert HOST_SERVICES["bird2"] == ("bird.service", "bird")


def test_the_install_runs_under_a_policy_that_denies_service_starts(tmp_path: Path) -> None:
    import subprocess

    from lab.prepare import no_service_starts

    policy = tmp_path / "policy-rc.d"
    with no_service_starts(policy):
        assert subprocess.run([str(policy), "keepalived", "start"], check=False).returncode == 101
    assert not policy.exists()
    policy.write_text("#!/bin/sh\nexit 0\n")  # the machine's own: kept as it is
    with no_service_starts(policy):
        pass
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_services_are_disabled_under_systemd_and_a_running_daemon_is_refused(
        tmp_path: Path) -> None:
    import subprocess

    import pytest

    from lab.prepare import LabUnavailable, keep_services_off

    ran: list[list[str]] = []

    def runner(rc_of_pgrep: int):  # type: ignore[no-untyped-def]
        def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
            ran.append(argv)
            rc = rc_of_pgrep if argv[0] == "pgrep" else 0
            return subprocess.CompletedProcess(argv, rc, "", "")
        return run

    systemd = tmp_path / "systemd"
    systemd.mkdir()
    keep_services_off(["keepalived"], lambda _: None, runner(1), systemd)
    assert ran[-1] == ["pgrep", "-x", "keepalived"]
    if any(argv[0] == "systemctl" for argv in ran):
        assert ["systemctl", "disable", "--now", "keepalived.service"] in ran
    with pytest.raises(LabUnavailable, match="keepalived is running"):
        keep_services_off(["keepalived"], lambda _: None, runner(0), tmp_path / "no-systemd")
    if any(argv[0] == "systemctl" for argv in ran):  # offline: disabled, not stopped
        assert ran[-2] == ["systemctl", "disable", "keepalived.service"]
    ran.clear()
    keep_services_off(["bird2"], lambda _: None, runner(1), systemd)
    assert ran[-1] == ["pgrep", "-x", "bird"]  # the daemon, not the package name
    if any(argv[0] == "systemctl" for argv in ran):
        assert ["systemctl", "disable", "--now", "bird.service"] in ran
