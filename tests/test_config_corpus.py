"""The corpus of invalid configs in tests/data/invalid/.

Each file breaks one thing in an otherwise valid config and says on its first line
what the error must name:

    # expect: <dotted key, empty for file-level errors> | <part of the message>

Optional header lines:

    # expect-roles: director    the file is invalid only for lvs-director (no [director]
                                table); lvs-realserver accepts it
    # expect-realserver: <key> | <part of the message>
                                lvs-realserver rejects it for another reason (no
                                [[service]], checked once the role is known)
    # known-gap: <why>          validation does not catch it yet: the tests of that file
                                are strict xfails, so they start failing once it is fixed

For every file, load_config (or, for the rules that depend on the role,
Config.require_services and the planner) must raise ConfigError naming the file and the
key, and both CLIs (with and without --dry-run) must exit 6 and name the file and the key on
stderr without starting a single program.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lvs_scripts.cli import director_main, realserver_main
from lvs_scripts.config import load_config
from lvs_scripts.errors import ConfigError, MissingTool
from lvs_scripts.plan_director import plan_director_start
from lvs_scripts.plan_realserver import plan_realserver_start
from lvs_scripts.probes import HostObservation
from lvs_scripts.state import State

CORPUS = Path(__file__).parent / "data" / "invalid"
ROLES = ("director", "realserver")
EXPECT = re.compile(r"# expect: ?(?P<key>[^|]*?) ?\| (?P<substring>.+)")
EXPECT_RS = re.compile(r"# expect-realserver: ?(?P<key>[^|]*?) ?\| (?P<substring>.+)")
MAINS = {"director": director_main, "realserver": realserver_main}

@dataclass(frozen=True)
class Expect:
    path: Path
    key: str
    substring: str
    roles: tuple[str, ...]
    gap: str | None
    realserver: tuple[str, str] | None = None  # (key, substring) when it differs

    def expect(self, role: str) -> tuple[str, str]:
        """The key and the message part the error must have for this role."""
        if role == "realserver" and self.realserver is not None:
            return self.realserver
        return self.key, self.substring


def read_expect(path: Path) -> Expect:
    header: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            header.append(line.rstrip("\n"))
    match = EXPECT.fullmatch(header[0]) if header else None
    if match is None:
        raise ValueError(f"{path.name}: the first line is not '# expect: KEY | SUBSTRING'")
    roles: tuple[str, ...] = ROLES
    gap = None
    realserver = None
    for line in header[1:]:
        if line.startswith("# expect-roles:"):
            roles = tuple(line.split(":", 1)[1].split())
            assert roles and set(roles) <= set(ROLES), f"{path.name}: bad roles {roles}"
        elif line.startswith("# known-gap:"):
            gap = line.split(":", 1)[1].strip()
        elif found := EXPECT_RS.fullmatch(line):
            realserver = (found["key"].strip(), found["substring"].strip())
    return Expect(path, match["key"].strip(), match["substring"].strip(), roles, gap,
                  realserver)


FILES = sorted(CORPUS.glob("*.toml"))
CASES = [read_expect(path) for path in FILES]


def _param(case: Expect, *values: Any) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.gap)] if case.gap else []
    return pytest.param(case, *values, id="-".join([case.path.name, *map(str, values)]),
                        marks=marks)


def _cli_params() -> list[Any]:
    params = []
    for case in CASES:
        for role in ROLES:
            for dry_run in (False, True):
                if role in case.roles:
                    params.append(_param(case, role, "dry-run" if dry_run else "real"))
    return params


def _fail_on_run(*args: Any, **kwargs: Any) -> Any:
    pytest.fail(f"a program was started: {args[1:]!r}")


@pytest.fixture
def no_programs(mocker: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The executor fails the test if called; state and lock go to tmp_path."""
    monkeypatch.setenv("LVS_SYSLOG", "0")
    monkeypatch.setenv("LVS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LVS_LOCK_DIR", str(tmp_path / "lock"))
    monkeypatch.delenv("LVS_CONFIG", raising=False)
    return mocker.patch("lvs_scripts.runner.PlumbumRunner.run", autospec=True,
                        side_effect=_fail_on_run)


def _check_error(err: ConfigError, case: Expect, role: str = "director") -> None:
    key, substring = case.expect(role)
    assert err.path == str(case.path)
    assert err.key == key, str(err)
    assert substring in str(err)
    assert str(err).startswith(str(case.path))
    assert err.exit_code == 6


# --- the corpus itself ----------------------------------------------------------------------
def test_corpus_is_large_and_every_file_says_what_it_expects() -> None:
    assert len(FILES) >= 45
    assert len([case for case in CASES if case.gap is None]) >= 45
    for path in FILES:
        assert re.fullmatch(r"\d\d\d?-[a-z0-9-]+\.toml", path.name), path.name
        first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        assert EXPECT.fullmatch(first), path.name
    numbers = [int(path.name.split("-")[0]) for path in FILES]
    assert len(set(numbers)) == len(numbers), "two files share a number"


def test_corpus_covers_every_level_of_the_config() -> None:
    keys = {case.key for case in CASES}
    for wanted in ("", "director", "services", "director.gw", "director.timeouts.fin",
                   "realserver.arp_interface", "service[0].sheduler",
                   "service[0].real[1].wieght", "service[0].real[0].weight",
                   "service[0].vip", "service[0].scheduler", "director.interface",
                   "director.dip", "director.dip_interface", "realserver.arp_interfaces[0]"):
        assert wanted in keys, wanted


# --- (a) load_config ------------------------------------------------------------------------
PLANNERS = {"director": plan_director_start, "realserver": plan_realserver_start}


def _load_for(path: Path, role: str) -> None:
    """What the CLI checks before a role plans anything, then the role's planner."""
    config = load_config(str(path))
    config.require_services(role)
    PLANNERS[role](config, HostObservation(), State())


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_load_config_rejects(case: Expect) -> None:
    for role in ROLES:
        if role not in case.roles:
            # Invalid for the director only: the file loads, and lvs-realserver plans from it.
            assert load_config(str(case.path)).director is None
            _load_for(case.path, role)
            continue
        with pytest.raises(ConfigError) as info:
            _load_for(case.path, role)
        _check_error(info.value, case, role)


# --- (b) the command lines, in-process ------------------------------------------------------
@pytest.mark.parametrize(("case", "role", "mode"), _cli_params())
def test_cli_exits_6_and_starts_nothing(case: Expect, role: str, mode: str, no_programs: Any,
                                        capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    argv = ["-c", str(case.path), "start"]
    if mode == "dry-run":
        argv.insert(0, "--dry-run")
    code = MAINS[role](argv)
    out, err = capsys.readouterr()
    no_programs.assert_not_called()
    assert code == 6
    assert out == ""
    key, substring = case.expect(role)
    assert f"lvs-{role}: {case.path}" in err
    if key:
        assert f": {key}" in err
    assert substring in err
    assert all(line.isprintable() for line in err.splitlines()), "a control character got out"
    for name in ("state", "lock"):
        made = tmp_path / name
        assert not made.exists() or not any(made.iterdir()), f"wrote to {made}"


@pytest.mark.parametrize("action", ["stop", "status", "restart", "reload"])
def test_other_actions_reject_an_invalid_config_too(action: str, no_programs: Any,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """status exits 4, LSB's "status unknown": without a valid config it cannot tell;
    stop undoes what the state file lists (here nothing) and says why it did not read
    the config: a broken config must never make a host impossible to stop."""
    path = next(CORPUS.glob("*-weight-bool.toml"))
    for main in (director_main, realserver_main):
        assert main(["-c", str(path), action]) == {"status": 4, "stop": 0}.get(action, 6)
        assert "service[0].real[0].weight = True" in capsys.readouterr().err
    no_programs.assert_not_called()


# --- configs without [director] -------------------------------------------------------------
@pytest.fixture
def empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.toml"
    path.write_bytes(b"")
    return path


def test_a_truly_empty_file_is_a_config_without_anything(empty_file: Path) -> None:
    config = load_config(str(empty_file))
    assert config.director is None
    assert config.services == ()
    assert config.realserver.arp_interfaces == ()
    with pytest.raises(ConfigError) as info:
        plan_director_start(config, HostObservation(), State())
    assert (info.value.path, info.value.key) == (str(empty_file), "director")


@pytest.mark.parametrize("mode", ["real", "dry-run"])
def test_director_cli_rejects_a_truly_empty_file(empty_file: Path, mode: str, no_programs: Any,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-c", str(empty_file), "start"] + (["--dry-run"] if mode == "dry-run" else [])
    assert director_main(argv) == 6
    no_programs.assert_not_called()
    assert f"{empty_file}: director" in capsys.readouterr().err


def _director_less() -> list[Any]:
    return [_param(case) for case in CASES if case.roles == ("director",)]


@pytest.mark.parametrize("case", _director_less())
def test_realserver_accepts_a_config_without_director(
        case: Expect, mocker: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Valid for lvs-realserver: its dry run plans from it (every probe finds its tool
    missing, so the plan is made against an empty host) and exits 0."""
    monkeypatch.setenv("LVS_SYSLOG", "0")
    monkeypatch.setenv("LVS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LVS_LOCK_DIR", str(tmp_path / "lock"))

    def missing(_self: Any, argv: Any, **_kwargs: Any) -> Any:
        raise MissingTool(argv[0])

    run = mocker.patch("lvs_scripts.runner.PlumbumRunner.run", autospec=True,
                       side_effect=missing)
    assert realserver_main(["--dry-run", "-c", str(case.path), "start"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/sh\n")
    assert "sysctl -w net.ipv4.conf.all.arp_ignore=1" in out
    config = load_config(str(case.path))
    for vip in config.realserver_vips():
        assert f"ip addr add {vip}/32 brd {vip} dev lo" in out
    assert all(call.args[1][0] in ("ip", "sysctl") for call in run.call_args_list)
