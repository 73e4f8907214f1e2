"""init.d/lvs-director-watch and systemd/lvs-director-watch.service: the wrappers of the
long-running `lvs-director watch`, run against the fake machine."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes.fakehost import FakeHost
from tests.machines import wait_for
from tests.test_initd import LSB_FIELDS, lsb_header

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "init.d" / "lvs-director-watch"
UNIT = ROOT / "systemd" / "lvs-director-watch.service"
CONFIG = """
[director]
interface = "eth0"
arping_count = 0

[[service]]
vip = "192.168.30.254"
port = 80
real = [ { address = "192.168.30.111" } ]

[service.check]
type = "tcp"
interval = 0.5
timeout = 0.2
"""


def test_lsb_header_and_posix_sh() -> None:
    fields = lsb_header(SCRIPT)
    assert tuple(fields) == LSB_FIELDS
    assert fields["Provides"] == "lvs-director-watch"
    assert "lvs-director" in fields["Required-Start"].split()
    assert os.access(SCRIPT, os.X_OK)
    for shell in ("sh", "bash", "dash"):
        if shutil.which(shell):
            checked = subprocess.run([shell, "-n", str(SCRIPT)], capture_output=True,
                                     text=True, check=False)
            assert checked.returncode == 0, checked.stderr
    if shutil.which("shellcheck"):
        checked = subprocess.run(["shellcheck", "-s", "sh", "-e", "SC1090", str(SCRIPT)],
                                 capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout


def test_unit_is_a_notify_daemon_after_the_director() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    unit, service = parser["Unit"], parser["Service"]
    assert unit["Requires"] == unit["After"] == "lvs-director.service"
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert shlex.split(service["ExecStart"]) == ["lvs-director", "watch"]
    assert shlex.split(service["ExecReload"]) == ["/bin/kill", "-HUP", "$MAINPID"]
    assert service["EnvironmentFile"] == "-/etc/default/lvs-director"
    assert parser["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(os.geteuid() != 0 or os.path.exists("/etc/default/lvs-director")
                    or not shutil.which("start-stop-daemon"),
                    reason="needs root, start-stop-daemon, and no /etc/default/lvs-director")
def test_initd_start_status_reload_stop(fakehost: FakeHost, tmp_path: Path) -> None:
    fakehost.set_ipvs("loaded")
    config = tmp_path / "lvs.toml"
    config.write_text(CONFIG)
    pidfile = tmp_path / "watch.pid"
    env = {**fakehost.env, "LVS_CONFIG": str(config), "LVS_STATE_DIR": str(tmp_path / "run"),
           "LVS_LOCK_DIR": str(tmp_path / "lock"), "LVS_SYSLOG": "0",
           "LVS_DIRECTOR_BIN": str(ROOT / "bin" / "lvs-director"),
           "LVS_WATCH_PIDFILE": str(pidfile)}

    def script(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), action], env=env, capture_output=True, text=True,
                              check=False, timeout=120)

    assert script("status").returncode == 3
    started = script("start")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip().isdigit(), 30)
    pid = int(pidfile.read_text())
    # start-stop-daemon writes the pid file before its child execs the watcher, and the
    # watcher handles SIGHUP only once running (until then SIGHUP would end it, as it ends
    # any process): wait for it to say so with its own pid file (watch.write_pid, after
    # its signal handlers), then for that pid to be the one start-stop-daemon wrote.
    own = tmp_path / "run" / "lvs-director.watch.pid"
    wait_for(lambda: own.exists() and own.read_text().strip() == str(pid), 30)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[-2:] == [b"watch", b""], cmdline
    assert script("status").returncode == 0
    assert script("start").returncode == 0  # already running: one daemon, not two
    assert int(pidfile.read_text()) == pid
    assert script("reload").returncode == 0
    assert Path(f"/proc/{pid}").exists()  # SIGHUP re-reads; it does not end the watcher
    stopped = script("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(
        f"/proc/{pid}/status").read_bytes().lower()
    assert script("status").returncode == 3
    assert script("stop").returncode == 0  # not running: stop has nothing to do


@pytest.mark.skipif(os.path.exists("/etc/default/lvs-director"),
                    reason="the script sources /etc/default/lvs-director")
def test_initd_start_with_a_bad_config_is_exit_6_and_starts_nothing(
        fakehost: FakeHost, tmp_path: Path) -> None:
    config = tmp_path / "lvs.toml"
    config.write_text(CONFIG.replace("timeout = 0.2", "timeout = 5"))
    pidfile = tmp_path / "watch.pid"
    ran = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, check=False,
                         timeout=120,
                         env={**fakehost.env, "LVS_CONFIG": str(config), "LVS_SYSLOG": "0",
                              "LVS_STATE_DIR": str(tmp_path / "run"),
                              "LVS_LOCK_DIR": str(tmp_path / "lock"),
                              "LVS_DIRECTOR_BIN": str(ROOT / "bin" / "lvs-director"),
                              "LVS_WATCH_PIDFILE": str(pidfile)})
    assert ran.returncode == 6
    assert "service[0].check.timeout" in ran.stderr
    assert not pidfile.exists()
