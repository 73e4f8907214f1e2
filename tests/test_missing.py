"""Something the host lacks: the LSB exit code and one sentence saying how to fix it,
before anything is changed; the dry run of the same action still prints a plan.

In process (`main(argv)`) with the real executor: plumbum looks the fakes up on the
PATH of `fakehost_inprocess`, so a removed tool is really "command not found".
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from lvs_scripts.cli import director_main, realserver_main
from tests.fakes.fakehost import FakeHost
from tests.test_faults import CONFIG_A, read_only

# What ipvsadm prints first when ip_vs is neither built in nor loadable (the first two
# lines: modprobe's complaint, then ipvsadm's own).
NO_IPVS = ("modprobe: FATAL: Module ip_vs not found in directory /lib/modules/6.1.0-28-amd64"
           " / Can't initialize ipvs: Protocol not available")


@dataclass
class Ran:
    code: int
    out: str
    err: str


class Runner:
    def __init__(self, host: FakeHost, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.host = host
        self.state_dir = root / "run"
        self.lock_dir = root / "lock"
        self.config = root / "lvs.toml"
        self.config.write_text(CONFIG_A)
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("LVS_SYSLOG", "0")
        self.euid = 0

    def __call__(self, tool: str, *args: str) -> Ran:
        main = director_main if tool == "lvs-director" else realserver_main
        self.monkeypatch.setattr(os, "geteuid", lambda: self.euid)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["-c", str(self.config), "--state-dir", str(self.state_dir),
                         "--lock-dir", str(self.lock_dir), *args])
        return Ran(code, out.getvalue(), err.getvalue())

    def assert_nothing_changed(self, tool: str) -> None:
        assert [argv for argv in self.host.argvs() if not read_only(argv)] == []
        assert not (self.state_dir / f"{tool}.json").exists()
        assert not self.lock_dir.exists() or os.listdir(self.lock_dir) == []
        # Only the (empty) run lock may exist: it is taken before the host is observed.
        assert not self.state_dir.exists() or os.listdir(self.state_dir) == [f"{tool}.lock"]


@pytest.fixture
def run(fakehost_inprocess: FakeHost, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Runner:
    fakehost_inprocess.set_ipvs("loaded")
    return Runner(fakehost_inprocess, tmp_path, monkeypatch)


def _without(tool: str) -> Callable[[Runner], None]:
    return lambda run: run.host.remove_tool(tool)


def _no_ipvs(run: Runner) -> None:
    run.host.set_ipvs("absent")


def _no_interface(name: str) -> Callable[[Runner], None]:
    return lambda run: run.host.remove_interface(name)


def _arp_interfaces(*names: str) -> Callable[[Runner], None]:
    def edit(run: Runner) -> None:
        listed = ", ".join(f'"{n}"' for n in names)
        run.config.write_text(CONFIG_A.replace('arp_interfaces = ["eth0"]',
                                               f"arp_interfaces = [{listed}]"))
    return edit


# (tool, what is missing, exit code, the whole message after "TOOL: ")
CASES = {
    "director-no-ipvsadm": ("lvs-director", _without("ipvsadm"), 5,
                            "ipvsadm not found on PATH: install it (Debian: apt-get install "
                            "ipvsadm)"),
    "director-no-ip": ("lvs-director", _without("ip"), 5,
                       "ip not found on PATH: install it (Debian: apt-get install iproute2)"),
    "realserver-no-ip": ("lvs-realserver", _without("ip"), 5,
                         "ip not found on PATH: install it (Debian: apt-get install "
                         "iproute2)"),
    "realserver-no-sysctl": ("lvs-realserver", _without("sysctl"), 5,
                             "sysctl not found on PATH: install it (Debian: apt-get install "
                             "procps)"),
    "director-kernel-without-ipvs": ("lvs-director", _no_ipvs, 5,
                                     f"the kernel has no IPVS support (ipvsadm said: {NO_IPVS}"
                                     "): this kernel has no ip_vs module: boot one built "
                                     "with CONFIG_IP_VS (Debian's standard kernels are)"),
    "director-no-interface": ("lvs-director", _no_interface("eth0"), 6,
                              "{config}: director.interface = 'eth0': no such interface on "
                              "this host"),
    "director-no-dip-interface": ("lvs-director", _no_interface("eth1"), 6,
                                  "{config}: director.dip_interface = 'eth1': no such "
                                  "interface on this host"),
    "realserver-no-arp-interface": ("lvs-realserver", _arp_interfaces("eth0", "eth9"), 6,
                                    "{config}: realserver.arp_interfaces[1] = 'eth9': no such "
                                    "interface on this host"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_missing_piece_is_named_before_anything_changes(run: Runner, case: str) -> None:
    tool, remove, code, message = CASES[case]
    remove(run)

    ran = run(tool, "start")

    assert ran.code == code, ran.err
    assert ran.out == ""
    assert ran.err == f"{tool}: {message.format(config=run.config)}\n"
    assert "Traceback" not in ran.err
    run.assert_nothing_changed(tool)
    if case == "director-kernel-without-ipvs":
        failed = [c for c in run.host.calls() if c["rc"] != 0]
        assert [c["argv"] for c in failed] == [["ipvsadm", "-S", "-n"]]
        assert "Can't initialize ipvs" in failed[0]["stderr"]
        assert run.host.invoke("modprobe", ["ip_vs"], record=False).rc != 0  # cannot load

    run.host.clear_calls()
    dry = run(tool, "--dry-run", "start")
    assert dry.code == 0, dry.err
    assert dry.out.startswith("#!/bin/sh\n")
    assert "# nothing to do" not in dry.out
    assert [line for line in dry.out.splitlines() if line and not line.startswith("#")]
    said = "no such interface on this host" if code == 6 else message.split(":")[0]
    assert said in dry.err  # the plan was made around what is missing, and says so
    run.assert_nothing_changed(tool)


def test_a_real_server_does_not_need_ipvsadm(run: Runner) -> None:
    run.host.remove_tool("ipvsadm")
    ran = run("lvs-realserver", "start")
    assert ran.code == 0, ran.err
    assert run.host.argvs("ipvsadm") == []


@pytest.mark.parametrize("action", ["start", "stop", "restart", "reload", "force-reload"])
@pytest.mark.parametrize("tool", ["lvs-director", "lvs-realserver"])
def test_not_root(run: Runner, tool: str, action: str) -> None:
    run.euid = 1000
    ran = run(tool, action)
    assert ran.code == 4
    assert ran.err == (f"{tool}: {tool} {action} changes addresses, routes and IPVS rules: "
                       "run it as root (or try --dry-run)\n")
    assert run.host.argvs() == []
    assert not run.state_dir.exists() and not run.lock_dir.exists()
    if action not in ("start", "restart"):
        return  # the dry runs of reload and stop are those of start and of restart's half

    dry = run(tool, "--dry-run", action)
    assert dry.code == 0, dry.err
    assert dry.out.startswith("#!/bin/sh\n")
    assert [argv for argv in run.host.argvs() if not read_only(argv)] == []
