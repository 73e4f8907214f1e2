"""lvs_scripts/manpage.py: the man pages come from cli.py's parsers and doc/lvs.toml.md,
which also feed --help and the README, and render without a warning from man."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lvs_scripts import cli, manpage

ROOT = Path(__file__).resolve().parent.parent
needs_man = pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return manpage.pages(ROOT)


def rendered(text: str, tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    page = tmp_path / name
    page.write_text(text)
    # --warnings: groff's warnings on stderr (what lintian's groff-message check reads).
    return subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(page)],
                          capture_output=True, text=True, check=False, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "MANWIDTH": "80"})


def test_the_three_pages(pages: dict[str, str]) -> None:
    assert sorted(pages) == ["lvs-director.8", "lvs-realserver.8", "lvs.toml.5"]


@needs_man
@pytest.mark.parametrize("name", ["lvs-director.8", "lvs-realserver.8", "lvs.toml.5"])
def test_renders_without_warnings(pages: dict[str, str], tmp_path: Path, name: str) -> None:
    shown = rendered(pages[name], tmp_path, name)
    assert (shown.returncode, shown.stderr) == (0, "")
    assert "NAME" in shown.stdout and "SEE ALSO" in shown.stdout


@needs_man
@pytest.mark.parametrize("prog", manpage.PROGRAMS)
def test_every_option_and_action_of_the_parser_is_in_the_page(
        pages: dict[str, str], tmp_path: Path, prog: str) -> None:
    shown = rendered(pages[f"{prog}.8"], tmp_path, prog).stdout
    parser = cli.parser(prog)
    for action in parser._actions:
        for option in action.option_strings:
            assert option in shown, option
        if action.help and action.option_strings:
            assert " ".join(action.help.split()[:4]) in " ".join(shown.split()), action.help
    for choice in next(a for a in parser._actions if not a.option_strings).choices or ():
        assert f"\n       {choice}" in shown, choice
        assert choice in manpage.ACTIONS[prog], f"{choice} has no description in the page"


def test_a_new_option_shows_up_in_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page follows the parser: nothing is copied by hand."""
    original = cli._parser

    def with_extra(*args: object, **kwargs: object) -> argparse.ArgumentParser:
        parser = original(*args, **kwargs)  # type: ignore[arg-type]
        parser.add_argument("--frobnicate", metavar="LEVEL", help="frobnicate at LEVEL")
        return parser

    monkeypatch.setattr(cli, "_parser", with_extra)
    page = manpage.program_page("lvs-director", "0")
    assert "\\fB\\-\\-frobnicate\\fR \\fILEVEL\\fR\nfrobnicate at LEVEL" in page
    assert "[\\fB\\-\\-frobnicate\\fR \\fILEVEL\\fR]" in page  # and in the synopsis


def test_the_readme_config_section_is_the_doc_source() -> None:
    readme = (ROOT / "README.md").read_text()
    doc = (ROOT / manpage.CONFIG_DOC).read_text()
    assert manpage.readme_with_config_doc(readme, doc) == readme, (
        "README.md's section 'The config file' differs from doc/lvs.toml.md: edit the "
        "latter, then `make readme`")


def test_readme_section_is_replaced_up_to_the_next_section() -> None:
    readme = "# t\n\n## The config file\n\nold\n\n## Next\n\nkept\n"
    assert manpage.readme_with_config_doc(readme, "new\n") == (
        "# t\n\n## The config file\n\nnew\n\n## Next\n\nkept\n")


def test_config_page_carries_the_doc_source(pages: dict[str, str]) -> None:
    page = pages["lvs.toml.5"]
    doc = (ROOT / manpage.CONFIG_DOC).read_text()
    for line in doc.split("```toml\n", 1)[1].split("```", 1)[0].splitlines():
        assert manpage.escape(line) in page, line


@pytest.mark.parametrize(("markdown", "roff"), [
    ("a `-c FILE` b", [".PP", "a \\fB\\-c FILE\\fR b"]),
    ("**0** ok, *x*", [".PP", "\\fB0\\fR ok, \\fIx\\fR"]),
    ("one\ntwo\n\nthree", [".PP", "one two", ".PP", "three"]),
    ("```\n.hidden\n'quote\na\\b\n```", [".PP", ".nf", ".RS 4", "\\&.hidden", "\\&'quote",
                                         "a\\eb", ".RE", ".fi"]),
    ("- one\n  more\n- two", [".IP \\(bu 2", "one more", ".IP \\(bu 2", "two"]),
    ("### Sub", [".SS Sub"]),
])
def test_markdown_to_roff(markdown: str, roff: list[str]) -> None:
    assert manpage.markdown_to_roff(markdown) == roff


def test_version_is_setup_cfg_s_and_the_debian_changelog_s() -> None:
    version = manpage.version(ROOT)
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    first = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"lvs-scripts ({version}) "), first


def test_main_writes_the_pages(tmp_path: Path) -> None:
    assert manpage.main([str(tmp_path / "man"), "--root", str(ROOT)]) == 0
    assert sorted(p.name for p in (tmp_path / "man").iterdir()) == [
        "lvs-director.8", "lvs-realserver.8", "lvs.toml.5"]
