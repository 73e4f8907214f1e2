"""The fake nft against the real one: every nft command of lab/capture_ipvs_options.sh,
replayed in order on a fresh fake machine, must print what nftables 1.0.6 printed on the
lab's kernel (tests/data/captured-ipvs-options), exit code, stdout and stderr alike."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.fakes.fakehost import FakeHost

CAPTURED = Path(__file__).parent / "data" / "captured-ipvs-options"


def nft_captures() -> list[tuple[str, list[str], str | None]]:
    """(name, argv after `nft`, stdin) of each nft capture, in the order they ran."""
    found = []
    for line in (CAPTURED / "MANIFEST.tsv").read_text().splitlines():
        name, _host, command = line.split("\t")
        words = shlex.split(command)
        if words[0] != "nft":
            continue  # ipvsadm, sysctl, and nft run as another user (setpriv)
        stdin = None
        if "<" in words:
            words = words[:words.index("<")]
            stdin = (CAPTURED / f"{name}.stdin.txt").read_text()
        found.append((name, words[1:], stdin))
    return found


def read(name: str, suffix: str) -> str:
    path = CAPTURED / f"{name}{suffix}"
    return path.read_text() if path.exists() else ""


def test_every_nft_command_answers_as_the_real_one(fakehost: FakeHost) -> None:
    captures = nft_captures()
    assert len(captures) >= 15
    for name, args, stdin in captures:
        result = fakehost.invoke("nft", args, stdin)
        assert (result.rc, result.stdout, result.stderr) == (
            int(read(name, ".rc")), read(name, ".txt"), read(name, ".stderr.txt")), name


@pytest.mark.parametrize("path", ["-", "/proc/self/fd/0"])
def test_a_failing_line_leaves_the_ruleset_as_it_was(fakehost: FakeHost, path: str) -> None:
    """One file is one transaction: the table made by its first lines is not there after a
    later line failed."""
    result = fakehost.invoke("nft", ["-f", path], "create table ip a\ncreate table ip b\n"
                             "create table ip a\n")
    assert result.rc == 1
    assert result.stderr.startswith(f"{'/dev/stdin' if path == '-' else path}:3:17-17: Error:")
    assert fakehost.invoke("nft", ["list", "tables"]).stdout == ""


def test_what_it_does_not_emulate_is_refused(fakehost: FakeHost) -> None:
    result = fakehost.invoke("nft", ["add", "rule", "ip", "x", "y", "drop"])
    assert result.rc == 99 and "not emulated" in result.stderr
