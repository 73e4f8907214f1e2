"""[bgp]: the config of active-active directors, and the errors (exit 6) naming file, key
and value, before any command runs."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest

from lvs_scripts.cli import director_main
from lvs_scripts.config import load_config, parse_config
from lvs_scripts.errors import ConfigError
from lvs_scripts.model import BgpConfig, BgpNeighbor

ROOT = Path(__file__).resolve().parent.parent
LAB_BGP = ROOT / "examples" / "lab-bgp.toml"

BASE = """\
[director]
interface = "eth0"
gateway = "10.91.0.1"

[bgp]
{bgp}
neighbors = [
{neighbors}
]

[[service]]
vip = "10.98.0.100"
port = 80
scheduler = "{scheduler}"
real = [{{ address = "10.91.0.21" }}, {{ address = "10.91.0.22" }}]
{extra}"""
NEIGHBOR = '  { address = "10.91.0.1", as = 65000 },'


def toml(bgp: str = "local_as = 65001", neighbors: str = NEIGHBOR, scheduler: str = "mh",
         extra: str = "") -> str:
    return BASE.format(bgp=bgp, neighbors=neighbors, scheduler=scheduler, extra=extra)


def test_the_issue_example_loads_with_its_defaults() -> None:
    config = parse_config(toml())
    assert config.bgp == BgpConfig(local_as=65001, neighbors=(BgpNeighbor(
        ipaddress.ip_address("10.91.0.1"), 65000),), hold_time=9)
    assert parse_config(toml(bgp="local_as = 4294967295\nhold_time = 3")).bgp == BgpConfig(
        4294967295, (BgpNeighbor(ipaddress.ip_address("10.91.0.1"), 65000),), 3)
    assert parse_config(toml(scheduler="sh")).bgp is not None


def test_the_lab_example_loads() -> None:
    config = load_config(str(LAB_BGP))
    assert config.bgp is not None and config.ha is None


def test_a_config_without_bgp_has_none() -> None:
    without = re.sub(r"\[bgp\].*?\n\]\n", "", toml(), flags=re.S)
    assert "[bgp]" not in without
    assert parse_config(without).bgp is None


IPV6 = '\n[[service]]\nvip = "2001:db8::100"\nport = 80\nscheduler = "mh"\n' \
       'real = [{ address = "2001:db8::21" }]\n'
HA = ('\n[ha]\ninterface = "eth1"\nvirtual_router_id = 51\ndirectors = [\n'
      '  { name = "lb1", dip = "10.91.0.11/24", priority = 150 },\n'
      '  { name = "lb2", dip = "10.91.0.12/24", priority = 100 },\n]\n')

BAD = [
    (toml(scheduler="wrr"), "service[0].scheduler", "'wrr'", "must be mh or sh with [bgp]"),
    (toml(scheduler="rr"), "service[0].scheduler", "'rr'", "must be mh or sh"),
    (toml(bgp="local_as = 0"), "bgp.local_as", "0", "from 1 to 4294967295"),
    (toml(bgp="local_as = 4294967296"), "bgp.local_as", "4294967296", "from 1 to 4294967295"),
    (toml(bgp=""), "bgp.local_as", "", "is required"),
    (toml(neighbors=NEIGHBOR.replace("65000", "4294967296")), "bgp.neighbors[0].as",
     "4294967296", "from 1 to 4294967295"),
    (toml(neighbors=NEIGHBOR.replace("65000", "-1")), "bgp.neighbors[0].as", "-1",
     "from 1 to 4294967295"),
    (toml(neighbors=NEIGHBOR.replace("10.91.0.1", "10.91.0.0/24")),
     "bgp.neighbors[0].address", "'10.91.0.0/24'", "IP address of a host"),
    (toml(neighbors=NEIGHBOR.replace("10.91.0.1", "224.0.0.5")),
     "bgp.neighbors[0].address", "'224.0.0.5'", "IP address of a host"),
    (toml(neighbors=NEIGHBOR.replace("10.91.0.1", "fe80::1%eth0")),
     "bgp.neighbors[0].address", "'fe80::1%eth0'", "IP address of a host"),
    (toml(neighbors=NEIGHBOR.replace("10.91.0.1", "10.98.0.100")),
     "bgp.neighbors[0].address", "'10.98.0.100'", "is also service[0].vip"),
    (toml(neighbors=NEIGHBOR + "\n" + NEIGHBOR), "bgp.neighbors[1].address", "'10.91.0.1'",
     "duplicates bgp.neighbors[0]"),
    (toml(neighbors=""), "bgp.neighbors", "[]", "at least one"),
    (toml(neighbors='  { address = "10.91.0.1" },'), "bgp.neighbors[0].as", "", "is required"),
    (toml(neighbors='  { address = "10.91.0.1", as = 1, asn = 2 },'), "bgp.neighbors[0].asn",
     "2", "unknown key"),
    (toml(bgp="local_as = 65001\nhold_time = 2"), "bgp.hold_time", "2", "from 3 to 65535"),
    (toml(bgp="local_as = 65001\nhold_time = 65536"), "bgp.hold_time", "65536",
     "from 3 to 65535"),
    (toml(bgp="local_as = 65001\nrouter_id = 1"), "bgp.router_id", "1", "unknown key"),
    (toml(extra=HA), "bgp", "'[bgp] and [ha]'", "exclude each other"),
    (toml(extra=IPV6), "service[1].vip", "'2001:db8::100'", "no bgp.neighbors entry is"),
]


@pytest.mark.parametrize(("text", "key", "value", "rule"), BAD,
                         ids=[f"{key}-{rule}" for _, key, _, rule in BAD])
def test_bad_bgp_names_file_key_and_value(text: str, key: str, value: str, rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/lvs/lvs.toml")
    message = str(caught.value)
    assert message.startswith(f"/etc/lvs/lvs.toml: {key}"), message
    assert value in message and rule in message, message
    assert caught.value.exit_code == 6


def test_an_ipv6_vip_with_an_ipv6_neighbor_is_fine() -> None:
    config = parse_config(toml(extra=IPV6, neighbors=NEIGHBOR
                               + '\n  { address = "2001:db8::1", as = 65000 },'))
    assert config.bgp is not None and len(config.bgp.neighbors) == 2


def test_the_cli_exits_6_before_running_anything(tmp_path: Path, mocker: Any,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LVS_SYSLOG", "0")
    path = tmp_path / "bad.toml"
    path.write_text(toml(scheduler="wlc"))
    run = mocker.patch("lvs_scripts.runner.PlumbumRunner.run", autospec=True)
    code = director_main(["--dry-run", "start", "-c", str(path), "--state-dir",
                          str(tmp_path / "s"), "--lock-dir", str(tmp_path / "l")])
    assert code == 6
    assert f"{path}: service[0].scheduler = 'wlc'" in capsys.readouterr().err
    run.assert_not_called()
