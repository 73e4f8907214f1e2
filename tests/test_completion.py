"""completion/lvs-director, the bash completion of both programs: it offers the actions
and options of cli.py's parsers (a new option without its completion fails here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lvs_scripts import cli

ROOT = Path(__file__).resolve().parent.parent
COMPLETION = ROOT / "completion" / "lvs-director"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def complete(words: list[str], cwd: Path = ROOT) -> list[str]:
    """What bash offers for the last word of WORDS (the word being typed)."""
    script = (f'. {COMPLETION}\n'
              'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))\n'
              '"$(complete -p "$1" | sed "s/.* -F \\([^ ]*\\) .*/\\1/")"\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "--norc", "-c", script, "bash", *words], cwd=cwd,
                          capture_output=True, text=True, check=True, timeout=30)
    return [line for line in done.stdout.splitlines() if line]


def parser_options(prog: str) -> set[str]:
    return {o for a in cli.parser(prog)._actions for o in a.option_strings}


def parser_actions(prog: str) -> set[str]:
    positional = next(a for a in cli.parser(prog)._actions if not a.option_strings)
    return set(positional.choices or ())


@pytest.mark.parametrize("prog", ["lvs-director", "lvs-realserver"])
def test_actions(prog: str) -> None:
    assert set(complete([prog, ""])) == parser_actions(prog)
    assert complete([prog, "-v", "st"]) == ["start", "stop", "status"]
    assert complete([prog, "start", ""]) == []  # one action per command line


@pytest.mark.parametrize("prog", ["lvs-director", "lvs-realserver"])
def test_options(prog: str) -> None:
    assert set(complete([prog, "-"])) == parser_options(prog)
    assert complete([prog, "--dr"]) == ["--dry-run"]


def test_config_completes_file_names(tmp_path: Path) -> None:
    (tmp_path / "lvs.toml").write_text("")
    (tmp_path / "other").mkdir()
    assert complete(["lvs-director", "-c", "lv"], cwd=tmp_path) == ["lvs.toml"]
    assert complete(["lvs-director", "--state-dir", ""], cwd=tmp_path) == ["other"]
    assert complete(["lvs-director", "--wait", ""]) == []
