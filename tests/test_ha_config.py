"""[ha]: the director pair's config, this director's identity, and the errors (exit 6)
naming file, key and value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lvs_scripts.cli import director_main
from lvs_scripts.config import load_config, parse_config
from lvs_scripts.errors import ConfigError
from lvs_scripts.ha import member_of, this_host

ROOT = Path(__file__).resolve().parent.parent
LAB_HA = ROOT / "examples" / "lab-ha.toml"

BASE = """\
[director]
interface = "eth0"
{director}
[ha]
interface = "eth1"
virtual_router_id = 51
{ha}
directors = [
{directors}
]

[[service]]
vip = "192.168.30.254"
port = 80
real = [{{ address = "192.168.30.111" }}]
"""
PAIR = ('  { name = "lb1", dip = "192.168.30.105/24", priority = 150 },\n'
        '  { name = "lb2", dip = "192.168.30.106/24", priority = 100 },')


def toml(director: str = "", ha: str = "", directors: str = PAIR) -> str:
    return BASE.format(director=director, ha=ha, directors=directors)


def test_the_lab_pair_loads_with_its_defaults() -> None:
    config = load_config(str(LAB_HA))
    ha = config.ha
    assert ha is not None
    assert (ha.interface, ha.virtual_router_id, ha.advert_interval, ha.preempt, ha.syncid) == (
        "eth0", 51, 1, True, 51)
    assert [(d.name, str(d.dip), d.priority) for d in ha.directors] == [
        ("lb1", "192.168.30.105/24", 150), ("lb2", "192.168.30.106/24", 100)]


def test_syncid_and_preempt_are_read() -> None:
    ha = parse_config(toml(ha="syncid = 7\npreempt = false\nadvert_interval = 3")).ha
    assert ha is not None and (ha.syncid, ha.preempt, ha.advert_interval) == (7, False, 3)


def test_a_config_without_ha_has_none() -> None:
    start, rest = toml().split("[ha]", maxsplit=1)
    assert parse_config(start + "[[service]]" + rest.split("[[service]]")[1]).ha is None


BAD = [
    (toml(directors=PAIR.replace('name = "lb2"', 'name = "lb1"')),
     "ha.directors[1].name", "'lb1'", "duplicates ha.directors[0]"),
    (toml(directors=PAIR.replace('name = "lb2", ', '')), "ha.directors[1].name", "",
     "is required"),
    (toml(directors=PAIR.replace("priority = 100", "priority = 255")),
     "ha.directors[1].priority", "255", "from 1 to 254"),
    (toml(directors=PAIR.replace("priority = 150", "priority = 0")),
     "ha.directors[0].priority", "0", "from 1 to 254"),
    (toml(directors=PAIR.replace("192.168.30.106/24", "192.168.30.105/24")),
     "ha.directors[1].dip", "'192.168.30.105/24'", "duplicates ha.directors[0]"),
    (toml(directors=PAIR.replace("192.168.30.106/24", "192.168.30.254/24")),
     "ha.directors[1].dip", "'192.168.30.254/24'", "is also service[0].vip"),
    (toml(director='dip = "192.168.30.5/24"\ndip_interface = "eth1"'),
     "director.dip", "'192.168.30.5/24'", "must be absent with [ha]"),
    (toml(ha="virtual_router_id = 0").replace("virtual_router_id = 51\n", ""),
     "ha.virtual_router_id", "0", "from 1 to 255"),
    (toml(ha="syncid = 256"), "ha.syncid", "256", "from 0 to 255"),
    (toml(directors=PAIR.split("\n", maxsplit=1)[0]), "ha.directors", "", "at least two"),
    (toml(directors=PAIR.replace('"lb2"', '"lb 2"')), "ha.directors[1].name", "'lb 2'",
     "host name"),
    (toml(ha="preempt = 1"), "ha.preempt", "1", "true or false"),
    (toml(ha="peers = 2"), "ha.peers", "2", "unknown key"),
]


@pytest.mark.parametrize(("text", "key", "value", "rule"), BAD,
                         ids=[f"{key}-{rule}" for _, key, _, rule in BAD])
def test_bad_ha_names_file_key_and_value(text: str, key: str, value: str, rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/lvs/lvs.toml")
    message = str(caught.value)
    assert message.startswith(f"/etc/lvs/lvs.toml: {key}")
    assert value in message and rule in message
    assert caught.value.exit_code == 6


def test_this_host_is_the_option_then_the_environment_then_the_host_name() -> None:
    assert this_host("lb2", {"LVS_HOST": "lb1"}) == "lb2"
    assert this_host(None, {"LVS_HOST": "lb1"}) == "lb1"
    import socket

    assert this_host(None, {}) == socket.gethostname()


def test_a_host_not_among_the_directors_is_refused_naming_it() -> None:
    config = load_config(str(LAB_HA))
    assert member_of(config, "lb2").priority == 100
    with pytest.raises(ConfigError, match=r"ha.directors = 'lb9': this host .* not among "
                                          r"the directors \(lb1, lb2\)"):
        member_of(config, "lb9")


def test_the_cli_exits_6_for_a_host_not_in_the_pair_before_running_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mocker: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LVS_SYSLOG", "0")
    monkeypatch.setenv("LVS_HOST", "lb9")
    run = mocker.patch("lvs_scripts.runner.PlumbumRunner.run", autospec=True)
    code = director_main(["--dry-run", "start", "-c", str(LAB_HA), "--state-dir",
                          str(tmp_path / "s"), "--lock-dir", str(tmp_path / "l")])
    assert code == 6
    assert "ha.directors = 'lb9'" in capsys.readouterr().err
    run.assert_not_called()
    # --host wins over $LVS_HOST.
    monkeypatch.setenv("LVS_HOST", "lb1")
    code = director_main(["--dry-run", "start", "--host", "lb8", "-c", str(LAB_HA),
                          "--state-dir", str(tmp_path / "s"), "--lock-dir", str(tmp_path / "l")])
    assert code == 6
    assert "ha.directors = 'lb8'" in capsys.readouterr().err
    run.assert_not_called()
