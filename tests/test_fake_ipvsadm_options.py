"""The fake ipvsadm against the real one for issue 12's options: the set-up commands of
lab/capture_ipvs_options.sh replayed on a fresh fake machine must list exactly what the
lab's kernel listed (tests/data/captured-ipvs-options): -S -n (flags, one-packet, the SIP
engine, netmasks, fwmark real servers with and without ports), -L -n and the thresholds."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.fakes.fakehost import FakeHost

ROOT = Path(__file__).resolve().parent.parent
CAPTURED = ROOT / "tests" / "data" / "captured-ipvs-options"
SCRIPT = ROOT / "lab" / "capture_ipvs_options.sh"
VIP = "192.168.30.254"


def setup_commands() -> list[list[str]]:
    """The ipvsadm commands that built the captured table, up to its first listing."""
    commands = []
    for line in SCRIPT.read_text().splitlines():
        if not line.startswith(("must director ipvsadm ", "cap ipvsadm-")):
            continue
        words = shlex.split(line.replace("$VIP", VIP))
        if words[:3] == ["cap", "ipvsadm-S-n.options", "director"]:
            return commands
        if words[:3] == ["must", "director", "ipvsadm"]:
            commands.append(words[2:])
        elif words[:1] == ["cap"] and words[1].startswith("ipvsadm-a.fwmark"):
            commands.append(words[3:])
    raise AssertionError("the capture script lists no ipvsadm-S-n.options")


@pytest.mark.parametrize(("capture", "args"), [
    ("ipvsadm-S-n.options", ["-S", "-n"]),
    ("ipvsadm-L-n.options", ["-L", "-n"]),
    ("ipvsadm-L-n-thresholds.options", ["-L", "-n", "--thresholds"]),
])
def test_the_fake_lists_what_the_kernel_listed(fakehost: FakeHost, capture: str,
                                               args: list[str]) -> None:
    commands = setup_commands()
    assert len(commands) >= 10
    for argv in commands:
        result = fakehost.invoke(argv[0], argv[1:])
        assert result.rc == 0, (argv, result.stderr)
    assert fakehost.invoke("ipvsadm", args).stdout == (CAPTURED / f"{capture}.txt").read_text()


@pytest.mark.parametrize("capture", ["ipvsadm-a.lower-without-upper",
                                     "ipvsadm-A.flag-other-scheduler",
                                     "ipvsadm-A.one-packet-tcp", "ipvsadm-A.pe-nosuch"])
def test_the_fake_refuses_as_the_kernel_did(fakehost: FakeHost, capture: str) -> None:
    line = next(line for line in SCRIPT.read_text().splitlines()
                if line.startswith(f"cap {capture} "))
    argv = shlex.split(line.replace("$VIP", VIP))[3:]
    fakehost.invoke("ipvsadm", ["-A", "-t", f"{VIP}:80", "-s", "mh"])
    fakehost.invoke("ipvsadm", ["-A", "-t", f"{VIP}:81", "-s", "sh"])
    result = fakehost.invoke(argv[0], argv[1:])
    assert (result.rc, result.stderr) == (int((CAPTURED / f"{capture}.rc").read_text()),
                                          (CAPTURED / f"{capture}.stderr.txt").read_text())
