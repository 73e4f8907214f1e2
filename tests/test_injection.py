"""No shell anywhere: hostile config values are refused before anything runs, unusual
valid values reach the tools as single argv items, and the source has no way to start
a program other than the one executor (runner.py, through plumbum).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lvs_scripts.cli import director_main, realserver_main
from tests.fakes.fakehost import FakeHost
from tests.test_faults import in_process, read_only

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lvs_scripts"

# ------------------------------------------------------------------ rendering a config

BASE: dict[str, Any] = {
    "director": {"interface": "eth0", "gateway": "192.168.30.1", "dip": "10.9.0.5/24",
                 "dip_interface": "eth1"},
    "realserver": {"arp_interfaces": ["eth0"]},
    "service": [{"vip": "192.168.30.254", "port": 80, "protocol": "tcp", "scheduler": "wrr",
                 "forwarding": "dr", "real": [{"address": "192.168.30.111"}]}],
}

# Every string field, as error messages name it, and where it sits in BASE.
FIELDS: dict[str, tuple[Any, ...]] = {
    "director.interface": ("director", "interface"),
    "director.gateway": ("director", "gateway"),
    "director.dip": ("director", "dip"),
    "director.dip_interface": ("director", "dip_interface"),
    "realserver.arp_interfaces[0]": ("realserver", "arp_interfaces", 0),
    "service[0].vip": ("service", 0, "vip"),
    "service[0].protocol": ("service", 0, "protocol"),
    "service[0].scheduler": ("service", 0, "scheduler"),
    "service[0].forwarding": ("service", 0, "forwarding"),
    "service[0].real[0].address": ("service", 0, "real", 0, "address"),
}

# Appended to a valid value; short enough that an interface name stays within 15 bytes.
HOSTILE = {
    "semicolon": ";id",
    "command-substitution": "$(id)",
    "backticks": "`id`",
    "space": " x",
    "newline": "\nid",
    "non-ascii": "\u00e9",
}


def toml_value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def render(config: dict[str, Any]) -> str:
    lines = []
    for table in ("director", "realserver"):
        lines.append(f"[{table}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in config[table].items()]
    for service in config["service"]:
        lines.append("[[service]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in service.items()]
    return "\n".join(lines) + "\n"


def with_value(path: tuple[Any, ...], value: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(json.dumps(BASE))  # a deep copy
    where: Any = config
    for step in path[:-1]:
        where = where[step]
    where[path[-1]] = value
    return config


def valid_value(path: tuple[Any, ...]) -> str:
    where: Any = BASE
    for step in path:
        where = where[step]
    return str(where)


def run_here(host: FakeHost, tool: str, *args: str) -> tuple[int, str, str]:
    main = director_main if tool == "lvs-director" else realserver_main
    out, err = io.StringIO(), io.StringIO()
    with in_process(host), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------ hostile values


def test_base_config_is_valid(fakehost: FakeHost, tmp_path: Path) -> None:
    """The values below are refused because of what was appended, not for another reason."""
    config = tmp_path / "lvs.toml"
    config.write_text(render(BASE))
    code, out, err = run_here(fakehost, "lvs-director", "-c", str(config), "--dry-run",
                              "start")
    assert (code, err) == (0, "")
    assert "ipvsadm" in out


@pytest.mark.parametrize("tool", ["lvs-director", "lvs-realserver"])
@pytest.mark.parametrize("suffix", list(HOSTILE.values()), ids=list(HOSTILE))
@pytest.mark.parametrize("key", list(FIELDS))
def test_hostile_value_is_refused_before_anything_runs(fakehost: FakeHost, tmp_path: Path,
                                                      key: str, suffix: str,
                                                      tool: str) -> None:
    path = FIELDS[key]
    value = valid_value(path) + suffix
    config = tmp_path / "lvs.toml"
    config.write_text(render(with_value(path, value)), encoding="utf-8")
    state_dir, lock_dir = tmp_path / "run", tmp_path / "lock"

    code, out, err = run_here(fakehost, tool, "-c", str(config), "--state-dir",
                              str(state_dir), "--lock-dir", str(lock_dir), "start")

    assert code == 6, err
    assert out == ""
    assert err.startswith(f"{tool}: {config}: {key} = {value!r}: "), err
    assert len(err.splitlines()) == 1  # the value shown escaped, on one line
    assert fakehost.argvs() == []
    assert not state_dir.exists()
    assert not lock_dir.exists()


# ------------------------------------------------------------------ unusual but valid

UNUSUAL = """
[director]
interface = "eth0.100"
gateway = "192.168.30.1"
dip = "10.9.0.5/24"
dip_interface = "a-b_c.1"
arping_count = 1

[realserver]
arp_interfaces = ["eth0.100", "a-b_c.1"]

[[service]]
vip = "2001:db8::10"
port = 80
real = [{ address = "2001:db8::11" }]

[[service]]
vip = "192.168.30.254"
port = 80
real = [{ address = "192.168.30.111" }]
"""


@pytest.fixture
def unusual(fakehost_inprocess: FakeHost, tmp_path: Path) -> Iterator[tuple[FakeHost, Path]]:
    """The real executor (plumbum, the fake executables) on a host with a VLAN interface
    and one whose name has '-', '_' and '.'."""
    host = fakehost_inprocess
    host.set_ipvs("loaded")
    host.set_neighbour("192.168.30.1", "52:54:00:00:00:01")
    host.add_interface("eth0.100", kind="vlan", link="eth0")
    host.add_interface("a-b_c.1", kind="dummy")
    config = tmp_path / "unusual.toml"
    config.write_text(UNUSUAL)
    yield host, config


def _main(tool: str, config: Path, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    main = director_main if tool == "lvs-director" else realserver_main
    out, err = io.StringIO(), io.StringIO()
    argv = ["-c", str(config), "--state-dir", str(tmp_path / "run"), "--lock-dir",
            str(tmp_path / "lock"), *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _changes(host: FakeHost) -> list[tuple[list[str], str | None]]:
    return [(c["argv"], c["stdin"]) for c in host.calls() if not read_only(c["argv"])]


def test_unusual_values_reach_the_director_tools_as_single_items(
        unusual: tuple[FakeHost, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host, config = unusual
    monkeypatch.setenv("LVS_SYSLOG", "0")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    code, _, err = _main("lvs-director", config, tmp_path, "start")
    assert (code, err) == (0, ""), err
    assert _changes(host) == [
        (["ip", "addr", "add", "10.9.0.5/24", "dev", "a-b_c.1"], None),
        # a dotted VLAN name: the key in its slashed form, as for the ARP settings
        (["sysctl", "-w", "net/ipv6/conf/eth0.100/ndisc_notify=1"], None),
        (["ip", "-force", "-batch", "-"],
         "addr add 2001:db8::10/128 dev eth0.100 preferred_lft 0\n"
         "addr add 192.168.30.254/32 brd 192.168.30.254 dev eth0.100\n"),
        (["ip", "route", "replace", "default", "via", "192.168.30.1"], None),
        (["ipvsadm", "-R"],
         "-A -t [2001:db8::10]:80 -s wlc\n"
         "-a -t [2001:db8::10]:80 -r [2001:db8::11]:80 -g -w 1\n"
         "-A -t 192.168.30.254:80 -s wlc\n"
         "-a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1\n"),
        (["arping", "-c", "1", "-I", "eth0.100", "-s", "192.168.30.254", "192.168.30.1"],
         None),
    ]
    assert "2001:db8::10/128" in [f"{a['local']}/{a['prefixlen']}" for a in
                                  host.interface("eth0.100")["addrs6"]]  # type: ignore[index]
    # The dry run prints the same commands, quoted for a shell where needed.
    code, script, err = _main("lvs-director", config, tmp_path, "--dry-run", "stop")
    assert code == 0, err
    assert "\naddr del 2001:db8::10/128 dev eth0.100\n" in script  # a line of `ip -batch`
    assert "-D -t [2001:db8::10]:80\n" in script  # a line of the ipvsadm -R here-document


def test_unusual_values_reach_the_real_server_tools_as_single_items(
        unusual: tuple[FakeHost, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host, config = unusual
    monkeypatch.setenv("LVS_SYSLOG", "0")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    code, _, err = _main("lvs-realserver", config, tmp_path, "start")
    assert (code, err) == (0, ""), err
    keys = ["net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce",
            "net/ipv4/conf/eth0.100/arp_ignore", "net/ipv4/conf/eth0.100/arp_announce",
            "net/ipv4/conf/a-b_c.1/arp_ignore", "net/ipv4/conf/a-b_c.1/arp_announce"]
    assert ["sysctl", "-n", *keys] in host.argvs("sysctl")
    assert _changes(host) == [
        *[(["sysctl", "-w", f"{key}={1 if key.endswith('ignore') else 2}"], None)
          for key in keys],
        (["ip", "-force", "-batch", "-"],
         "addr add 2001:db8::10/128 dev lo\n"
         "addr add 192.168.30.254/32 brd 192.168.30.254 dev lo\n"),
    ]
    assert host.sysctl("net/ipv4/conf/eth0.100/arp_ignore") == "1"
    assert host.sysctl("net/ipv4/conf/a-b_c.1/arp_announce") == "2"


# ------------------------------------------------------------------ the source

_EXEC_NAMES = re.compile(r"^(system|popen|exec[lv]p?e?|spawn[lv]p?e?|posix_spawnp?)$")


def _tokens(source: str) -> list[str]:
    """Names and operators only: strings, comments and docstrings may mention anything."""
    skip = {tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    fstring = {getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
               if hasattr(tokenize, n)}
    return [";" if t.type == tokenize.NEWLINE else t.string
            for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type not in skip | fstring]


def process_starts(source: str, *, executor: bool) -> list[str]:
    """Ways of starting a program (or a shell) in this source. The executor (runner.py)
    may use plumbum; nothing else may use plumbum or subprocess at all."""
    tokens = _tokens(source)
    found = []
    for i, word in enumerate(tokens):
        after = tokens[i + 1:i + 4]
        if word == "shell" and after[:2] == ["=", "True"]:
            found.append("shell=True")
        if word == "os" and after[:1] == ["."] and len(after) > 1 and _EXEC_NAMES.match(
                after[1]):
            found.append(f"os.{after[1]}")
        if word == "pty" and after[:2] == [".", "spawn"]:
            found.append("pty.spawn")
        if "subprocess" in word and not executor:
            found.append(word)
        if word == "plumbum" and not executor:
            found.append("plumbum")
        if word == "from" and after[:2] == ["os", "import"]:
            names = tokens[i + 3:tokens.index(";", i)]
            found += [f"from os import {n}" for n in names if _EXEC_NAMES.match(n)]
    return found


def test_the_scanner_finds_every_way_in() -> None:
    """So that the next test can fail."""
    hostile = (
        "import subprocess\n"
        "from subprocess import run\n"
        "run(['x'], shell = True)\n"
        "os.system('x')\nos . popen('x')\nos.execvp('x', [])\nos.spawnl(0, 'x')\n"
        "from os import (system, path)\n"
        "import pty; pty.spawn('x')\n"
        "asyncio.create_subprocess_shell('x')\n"
        "from plumbum.cmd import ipvsadm\n"
    )
    assert process_starts(hostile, executor=False) == [
        "subprocess", "subprocess", "shell=True", "os.system", "os.popen", "os.execvp",
        "os.spawnl", "from os import system", "pty.spawn", "create_subprocess_shell",
        "plumbum"]
    assert process_starts(hostile, executor=True) == [
        "shell=True", "os.system", "os.popen", "os.execvp", "os.spawnl",
        "from os import system", "pty.spawn"]
    harmless = '"""Runs subprocess-free; never os.system or shell=True."""\n# os.popen\nx = 1\n'
    assert process_starts(harmless, executor=False) == []


def test_no_shell_and_one_executor_in_the_source() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "runner.py" in files and len(files) > 10
    found = {str(path.relative_to(ROOT)): starts for path in files
             if (starts := process_starts(path.read_text(), executor=path.name == "runner.py"))}
    # One exception: the exec health check runs the operator's own check command on the
    # event loop (runner.py blocks). One call site, argv only: no shell, no plumbum.
    exec_check = found.pop("lvs_scripts/checks.py", [])
    assert set(exec_check) <= {"create_subprocess_exec", "subprocess"}  # asyncio.subprocess.*
    assert exec_check.count("create_subprocess_exec") == 1
    assert found == {}
    runner = (PACKAGE / "runner.py").read_text()
    assert "from plumbum import local" in runner
    assert "local[program]" in runner
