"""The SysV wrappers init.d/lvs-director and init.d/lvs-realserver: an LSB header, POSIX
sh, and a `case` that hands each action to the CLI, run against the fake machine.

Not tested here: /etc/default/lvs-director (-realserver). The scripts source it from that
fixed path, and a test must not write to /etc. For the same reason the tests that run
the scripts are skipped on a machine that has such a file: it would override the
environment given here (state directory, config, even PATH).

The scripts append the system directories to PATH (a PATH given by the caller comes
first). So a tool removed from the fake machine would be found there, the real one:
these tests never remove a tool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.fakehost import FakeHost
from tests.test_plan_director import SEED_SAVE

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed-dr.toml"
SCRIPTS = {"lvs-director": ROOT / "init.d" / "lvs-director",
           "lvs-realserver": ROOT / "init.d" / "lvs-realserver"}
BIN_VARIABLE = {"lvs-director": "LVS_DIRECTOR_BIN", "lvs-realserver": "LVS_REALSERVER_BIN"}
VIP = "192.168.30.254"
LSB_FIELDS = ("Provides", "Required-Start", "Required-Stop", "Default-Start", "Default-Stop",
              "Short-Description", "Description")

runs_scripts = pytest.mark.skipif(
    any(os.path.exists(f"/etc/default/{name}") for name in SCRIPTS) or os.geteuid() != 0,
    reason="needs root, and no /etc/default/lvs-* (the scripts source it; it would override "
           "the test's environment)")


def lsb_header(script: Path) -> dict[str, str]:
    """The fields between BEGIN and END INIT INFO; continuation lines join the field."""
    text = script.read_text()
    block = text.split("### BEGIN INIT INFO\n", 1)[1].split("### END INIT INFO", 1)[0]
    fields: dict[str, str] = {}
    last = ""
    for line in block.splitlines():
        match = re.fullmatch(r"# ([A-Za-z-]+):\s*(.*)", line)
        if match:
            last = match.group(1)
            fields[last] = match.group(2).strip()
        else:
            assert re.fullmatch(r"#(\t|  )\s*\S.*", line), f"not a continuation: {line!r}"
            fields[last] += " " + line[1:].strip()
    return fields


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_lsb_header_is_complete(name: str) -> None:
    script = SCRIPTS[name]
    assert script.read_text().startswith("#!/bin/sh\n### BEGIN INIT INFO\n")
    header = lsb_header(script)
    assert set(LSB_FIELDS) <= set(header)
    assert header["Provides"] == name
    for field in ("Required-Start", "Required-Stop"):
        assert {"$network", "$remote_fs", "$syslog"} <= set(header[field].split())
    assert header["Default-Start"].split() == ["2", "3", "4", "5"]
    assert header["Default-Stop"].split() == ["0", "1", "6"]
    assert header["Short-Description"]
    assert len(header["Description"]) > len(header["Short-Description"])
    assert os.access(script, os.X_OK)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_posix_sh(name: str) -> None:
    for shell in ("/bin/sh", shutil.which("dash"), shutil.which("bash")):
        if shell is None:
            continue
        argv = [shell, "--posix", "-n"] if shell.endswith("bash") else [shell, "-n"]
        checked = subprocess.run([*argv, str(SCRIPTS[name])], capture_output=True, text=True,
                                 check=False)
        assert (checked.returncode, checked.stderr) == (0, ""), shell


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_shellcheck(name: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    # SC1090: it cannot follow `. /etc/default/$NAME`, which is not a portability problem.
    checked = subprocess.run(["shellcheck", "-s", "sh", "-e", "SC1090", str(SCRIPTS[name])],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout


def test_the_two_scripts_differ_only_in_their_names() -> None:
    director = SCRIPTS["lvs-director"].read_text()
    realserver = SCRIPTS["lvs-realserver"].read_text()
    body = director.split("### END INIT INFO", 1)[1]
    assert body.replace("lvs-director", "lvs-realserver").replace(
        "LVS_DIRECTOR_BIN", "LVS_REALSERVER_BIN") == realserver.split("### END INIT INFO", 1)[1]


# ------------------------------------------------------------------------------ running them


class Wrapper:
    """An init.d script run against the fake machine, with LVS_CONFIG and the state and
    lock directories in the environment (as /etc/default would set them)."""

    def __init__(self, name: str, host: FakeHost, files: Path) -> None:
        self.script = SCRIPTS[name]
        self.host = host
        self.lock_dir = files / "lock"
        self.env = {**host.env, "LVS_CONFIG": str(SEED), "LVS_STATE_DIR": str(files / "run"),
                    "LVS_LOCK_DIR": str(self.lock_dir), "LVS_SYSLOG": "0",
                    BIN_VARIABLE[name]: str(ROOT / "bin" / name)}

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.script), *args], env={**self.env, **env},
                              capture_output=True, text=True, check=False, timeout=60)


@pytest.fixture
def director(fakehost: FakeHost, tmp_path: Path) -> Wrapper:
    return Wrapper("lvs-director", fakehost, tmp_path / "files")


@pytest.fixture
def realserver(fakehost: FakeHost, tmp_path: Path) -> Wrapper:
    return Wrapper("lvs-realserver", fakehost, tmp_path / "files")


@runs_scripts
def test_director_actions_reach_the_kernel(director: Wrapper) -> None:
    host = director.host
    assert director("start").returncode == 0
    assert host.ipvs_save() == SEED_SAVE
    assert f"{VIP}/32" in host.addresses("eth0")
    assert host.addresses("eth1") == ["192.168.30.105/24"]
    assert [r["via"] for r in host.default_routes()] == ["192.168.30.1"]
    assert (director.lock_dir / "lvs-director").is_file()
    assert director("status").returncode == 0

    for action in ("reload", "force-reload"):
        ran = director(action)
        assert (ran.returncode, ran.stdout) == (0, f"lvs-director {action}: nothing to do\n")
    restarted = director("restart")
    assert restarted.returncode == 0
    assert restarted.stdout.splitlines()[0] == "lvs-director stop: 5 change(s) applied"
    assert host.ipvs_save() == SEED_SAVE

    assert director("stop").returncode == 0
    assert host.ipvs_save() == ""
    assert host.addresses("eth1") == []
    assert [r["via"] for r in host.default_routes()] == ["192.168.30.200"]
    assert not (director.lock_dir / "lvs-director").exists()
    status = director("status")
    assert (status.returncode, status.stdout.splitlines()[0]) == (3, "lvs-director: not running")


@runs_scripts
def test_realserver_actions_reach_the_kernel(realserver: Wrapper) -> None:
    host = realserver.host
    assert realserver("start").returncode == 0
    assert f"{VIP}/32" in host.addresses("lo")
    assert host.sysctl("net.ipv4.conf.eth0.arp_ignore") == "1"
    assert realserver("status").returncode == 0
    assert realserver("stop").returncode == 0
    assert host.addresses("lo") == ["127.0.0.1/8"]
    assert host.sysctl("net.ipv4.conf.eth0.arp_ignore") == "0"
    assert realserver("status").returncode == 3


@runs_scripts
def test_extra_arguments_pass_through(director: Wrapper) -> None:
    ran = director("status", "--json")
    assert ran.returncode == 3
    assert json.loads(ran.stdout)["code"] == 3
    dry = director("start", "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.startswith("#!/bin/sh\n")
    assert f"ipvsadm -R <<'EOF'\n{SEED_SAVE}EOF\n" in dry.stdout
    assert host_unchanged(director.host)


def host_unchanged(host: FakeHost) -> bool:
    return host.ipvs_save() == "" and [r["via"] for r in host.default_routes()] == [
        "192.168.30.200"]


@runs_scripts
def test_program_found_on_path(director: Wrapper) -> None:
    """Without LVS_DIRECTOR_BIN the script runs the lvs-director that pip installed: the
    venv's bin is on the fake machine's PATH, before the directories the script appends."""
    venv_bin = Path(sys.executable).parent
    path = director.env["PATH"].split(os.pathsep)
    if str(venv_bin) not in path or not (venv_bin / "lvs-director").exists():
        pytest.skip("lvs-director is not installed in the venv on the fake PATH")
    env = {k: v for k, v in director.env.items() if k != "LVS_DIRECTOR_BIN"}
    ran = subprocess.run([str(director.script), "status"], env=env, capture_output=True,
                         text=True, check=False, timeout=60)
    assert (ran.returncode, ran.stdout.splitlines()[0]) == (3, "lvs-director: not running")
    assert ["ipvsadm", "-S", "-n"] in director.host.argvs()


@runs_scripts
@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize("argv", [["stauts"], [], ["--help"], ["start-now"]])
def test_unknown_action_prints_the_usage(fakehost: FakeHost, tmp_path: Path, name: str,
                                         argv: list[str]) -> None:
    wrapper = Wrapper(name, fakehost, tmp_path)
    ran = wrapper(*argv)
    assert ran.returncode == 2
    usage = "{start|stop|restart|reload|force-reload|status}"
    assert ran.stderr == f"Usage: {wrapper.script} {usage}\n"
    assert ran.stdout == ""
    assert fakehost.calls() == []


@runs_scripts
@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize(("action", "code"), [("start", 5), ("stop", 5), ("reload", 5),
                                              ("status", 4)])
def test_missing_program(fakehost: FakeHost, tmp_path: Path, name: str, action: str,
                         code: int) -> None:
    """LSB: 5 "program is not installed" for an action, but 4 "unknown" for status."""
    # Pointed at a path, never left to `command -v`: the script also searches /usr/local/bin,
    # where a real installation could be.
    wrapper = Wrapper(name, fakehost, tmp_path)
    not_executable = tmp_path / name
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    for program in (tmp_path / "absent" / name, not_executable):
        ran = wrapper(action, **{BIN_VARIABLE[name]: str(program)})
        assert ran.returncode == code
        assert ran.stderr == (f"{name}: program not installed (apt-get install lvs-scripts, "
                              "or see its README)\n")
    assert fakehost.calls() == []


@runs_scripts
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_unknown_action_is_usage_even_without_the_program(fakehost: FakeHost, tmp_path: Path,
                                                          name: str) -> None:
    wrapper = Wrapper(name, fakehost, tmp_path)
    ran = wrapper("stauts", **{BIN_VARIABLE[name]: str(tmp_path / "absent")})
    assert (ran.returncode, ran.stderr.startswith("Usage: ")) == (2, True), ran.stderr


# --------------------------------------------------------- /lib/lsb/init-functions (systemd)


def with_init_functions(name: str, tmp_path: Path, hook: str) -> Path:
    """A copy of the script that sources HOOK where it sources /lib/lsb/init-functions: the
    real file hands the action to systemctl only when systemd runs and the script's path is
    under /etc/init.d, which a test cannot arrange."""
    text = SCRIPTS[name].read_text()
    assert text.count(INIT_FUNCTIONS) == 2  # tested for readability, then sourced
    functions = tmp_path / "init-functions"
    functions.write_text(hook)
    copy = tmp_path / name
    copy.write_text(text.replace(INIT_FUNCTIONS, str(functions)))
    copy.chmod(0o755)
    return copy


INIT_FUNCTIONS = "/lib/lsb/init-functions"
# What Debian's /lib/lsb/init-functions.d/40-systemd does when systemd runs: handle the
# action with systemctl, exit with its status, never come back to the script.
SYSTEMCTL_HOOK = """case "$1" in
    start|stop|restart|reload|force-reload|status)
        echo "systemctl $1 ${0##*/}.service" > "$(dirname "$0")/systemctl.log"; exit 0 ;;
esac
"""


@runs_scripts
@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize("action", ["stop", "start", "status"])
def test_under_systemd_the_action_goes_through_systemctl(fakehost: FakeHost, tmp_path: Path,
                                                         name: str, action: str) -> None:
    copy = with_init_functions(name, tmp_path, SYSTEMCTL_HOOK)
    wrapper = Wrapper(name, fakehost, tmp_path)
    ran = subprocess.run([str(copy), action], env=wrapper.env, capture_output=True, text=True,
                         check=False, timeout=60)
    assert (ran.returncode, ran.stderr) == (0, "")
    assert (tmp_path / "systemctl.log").read_text() == f"systemctl {action} {name}.service\n"
    assert fakehost.calls() == []  # the CLI never ran: systemd's unit does the work


@runs_scripts
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_without_systemd_init_functions_let_the_script_run(fakehost: FakeHost, tmp_path: Path,
                                                           name: str) -> None:
    copy = with_init_functions(name, tmp_path, "log_daemon_msg() { :; }\n")
    wrapper = Wrapper(name, fakehost, tmp_path)
    ran = subprocess.run([str(copy), "status"], env=wrapper.env, capture_output=True, text=True,
                         check=False, timeout=60)
    assert ran.returncode == 3, ran.stderr
    assert fakehost.calls() != []  # the CLI observed the host


@runs_scripts
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_unknown_action_prints_the_usage_before_systemctl(fakehost: FakeHost, tmp_path: Path,
                                                          name: str) -> None:
    copy = with_init_functions(name, tmp_path, 'echo sourced > "$(dirname "$0")/sourced"\n')
    ran = subprocess.run([str(copy), "try-restart"], env=Wrapper(name, fakehost, tmp_path).env,
                         capture_output=True, text=True, check=False, timeout=60)
    assert ran.returncode == 2 and ran.stderr.startswith("Usage: ")
    assert not (tmp_path / "sourced").exists()


# ------------------------------------------------------ the package's template /etc/lvs/lvs.toml


TEMPLATE = ROOT / "debian" / "lvs.toml"


@runs_scripts
@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize("action", ["start", "restart", "reload", "force-reload"])
def test_the_unedited_template_is_refused(fakehost: FakeHost, tmp_path: Path, name: str,
                                          action: str) -> None:
    wrapper = Wrapper(name, fakehost, tmp_path)
    ran = wrapper(action, LVS_CONFIG=str(TEMPLATE))
    assert ran.returncode == 6
    assert ran.stderr == (f"{name}: {TEMPLATE} has no settings yet (every line is a "
                          "comment): edit it first\n")
    assert fakehost.calls() == []


@runs_scripts
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_the_template_once_edited_starts(fakehost: FakeHost, tmp_path: Path, name: str) -> None:
    edited = tmp_path / "lvs.toml"
    edited.write_text(uncommented(TEMPLATE.read_text()))
    wrapper = Wrapper(name, fakehost, tmp_path)
    ran = wrapper("start", "--dry-run", LVS_CONFIG=str(edited))
    assert ran.returncode == 0, ran.stderr
    assert "ipvsadm" in ran.stdout or "sysctl" in ran.stdout


def uncommented(template: str) -> str:
    """The template with its settings switched on: one "#" off each line that is not
    an explanation ("##")."""
    return "".join(line[1:] if line.startswith("#") and not line.startswith("##") else line
                   for line in template.splitlines(keepends=True))


@runs_scripts
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_stop_and_status_reach_the_cli_with_the_template(fakehost: FakeHost, tmp_path: Path,
                                                         name: str) -> None:
    """Only what could change the network is refused by the script: status and stop are the
    CLI's to answer (status unknown, 4; stop from the state file alone, here nothing)."""
    wrapper = Wrapper(name, fakehost, tmp_path)
    status = wrapper("status", LVS_CONFIG=str(TEMPLATE))
    assert status.returncode == 4, status.stderr
    assert "has no settings yet" not in status.stderr
    stop = wrapper("stop", LVS_CONFIG=str(TEMPLATE))
    assert (stop.returncode, stop.stdout) == (0, f"{name} stop: nothing to do\n"), stop.stderr


@runs_scripts
def test_another_config_given_by_option_is_left_to_the_cli(director: Wrapper) -> None:
    ran = director("start", "--dry-run", "-c", str(SEED), LVS_CONFIG=str(TEMPLATE))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("#!/bin/sh\n")
