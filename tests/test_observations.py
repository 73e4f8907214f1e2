"""How many programs each action starts, and which: an observation repeated where nothing
could have changed it since fails here (issue 14: every program start costs tenths of a
second on a slow machine). Also the reading cache (observe.KnownReadings) and the text-first
batch check (probes.rules_held) on their own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from lvs_scripts.observe import KnownReadings
from lvs_scripts.probes import (
    IP_ADDRS,
    IP_LINKS,
    IPVS_LIST,
    IPVS_SAVE,
    RuleCheck,
    parse_ipvs_save,
    parse_rule,
    rules_held,
)
from lvs_scripts.runner import Result
from tests.fakes.fakehost import FakeHost

ROOT = Path(__file__).resolve().parent.parent
VIP = "10.200.0.1"


def config_text(weights: Sequence[int]) -> str:
    reals = "".join(f'  {{ address = "10.100.0.{i + 1}", weight = {w} }},\n'
                    for i, w in enumerate(weights))
    return (f'[director]\ninterface = "eth0"\narping_count = 0\n\n[[service]]\nvip = "{VIP}"\n'
            f'port = 80\nscheduler = "wrr"\nreal = [\n{reals}]\n')


def cli(host: FakeHost, tmp_path: Path, config: Path, action: str) -> list[str]:
    """Run `lvs-director ACTION`; the programs it started, as `tool words...` lines."""
    host.clear_calls()
    ran = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "lvs-director"), "-c", str(config), action],
        env=dict(host.env, LVS_SYSLOG="0", LVS_STATE_DIR=str(tmp_path / "state"),
                 LVS_LOCK_DIR=str(tmp_path / "lock"), PYTHONPATH=str(ROOT),
                 LVS_TEST_PROC_IP_VS=str(tmp_path / "no-proc-ip-vs")),
        capture_output=True, text=True, check=False, timeout=120)
    assert ran.returncode == 0, ran.stderr
    return [" ".join(argv) for argv in host.argvs()]


LINKS, ADDRS, SAVE, LIST = (" ".join(argv) for argv in (IP_LINKS, IP_ADDRS, IPVS_SAVE,
                                                        IPVS_LIST))


def test_programs_started_per_action(fakehost: FakeHost, tmp_path: Path) -> None:
    config = tmp_path / "lvs.toml"
    config.write_text(config_text([1, 1, 1]))
    # start: observe; the VIP; one batch; the batch check's reading of the table also
    # serves the verification (nothing ran after it), which reads again only `ip addr`
    # (the one thing an `ip` command changed); the links are as they were.
    assert cli(fakehost, tmp_path, config, "start") == [
        LINKS, ADDRS, SAVE, f"ip addr add {VIP}/32 brd {VIP} dev eth0", "ipvsadm -R", SAVE,
        ADDRS]
    # reload of one weight: one rule; the verification reads the table alone again.
    config.write_text(config_text([1, 3, 1]))
    assert cli(fakehost, tmp_path, config, "reload") == [
        LINKS, ADDRS, SAVE, f"ipvsadm -e -t {VIP}:80 -r 10.100.0.2:80 -g -w 3", SAVE]
    # reload with nothing to do: the first observation is the verification.
    assert cli(fakehost, tmp_path, config, "reload") == [LINKS, ADDRS, SAVE]
    assert cli(fakehost, tmp_path, config, "status") == [LINKS, ADDRS, SAVE, LIST]
    assert cli(fakehost, tmp_path, config, "stop") == [
        LINKS, ADDRS, SAVE, f"ipvsadm -D -t {VIP}:80", f"ip addr del {VIP}/32 dev eth0"]


def many_vips_config(count: int) -> str:
    services = "".join(
        f'[[service]]\nvip = "10.201.{i // 250}.{i % 250 + 1}"\nport = 80\nscheduler = "rr"\n'
        f'real = [{{ address = "10.100.0.1" }}, {{ address = "10.100.0.2" }}]\n\n'
        for i in range(count))
    return f'[director]\ninterface = "eth0"\narping_count = 0\n\n{services}'


BATCH = "ip -force -batch -"


def test_programs_started_with_many_vips(fakehost: FakeHost, tmp_path: Path) -> None:
    """50 services on 50 VIPs: the VIPs go on in one `ip -batch`, checked by one reading
    of the addresses, which also serves the verification; stop takes them off the same
    way. A few programs, not one per VIP."""
    config = tmp_path / "lvs.toml"
    config.write_text(many_vips_config(50))
    assert cli(fakehost, tmp_path, config, "start") == [
        LINKS, ADDRS, SAVE, BATCH, ADDRS, "ipvsadm -R", SAVE]
    assert len(fakehost.addresses("eth0")) == 51
    assert cli(fakehost, tmp_path, config, "reload") == [LINKS, ADDRS, SAVE]
    assert cli(fakehost, tmp_path, config, "stop") == [
        LINKS, ADDRS, SAVE, "ipvsadm -R", SAVE, BATCH, ADDRS]
    assert fakehost.addresses("eth0") == ["192.168.30.105/24"]


class Recorder:
    """A runner that answers every command with its own text and records the calls."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            check: bool = True) -> Result:
        self.ran.append(tuple(argv))
        return Result(tuple(argv), 1 if argv[0] == "false" else 0,
                      f"{' '.join(argv)} #{len(self.ran)}", "")


@pytest.mark.parametrize(("command", "read_again"), [
    (("ip", "addr", "add", "10.0.0.1/32", "dev", "eth0"), {ADDRS}),
    (("ip", "-6", "route", "replace", "default", "via", "fe80::1"), set()),
    (("ip", "link", "set", "dev", "eth0", "up"), {LINKS, ADDRS}),
    (("ip", "tunnel", "add", "t0", "mode", "ipip"), {LINKS, ADDRS}),
    (("ipvsadm", "-R"), {SAVE}),
    (("ipvsadm", "-e", "-t", f"{VIP}:80", "-r", "10.100.0.1:80", "-g", "-w", "2"), {SAVE}),
    (IPVS_LIST, set()),  # read-only: a drain's poll
    (("sysctl", "-n", "net.ipv4.ip_forward"), set()),
    (("nft", "-f", "-"), set()),
    (("sysctl", "-w", "net.ipv6.conf.eth0.disable_ipv6=1"), {LINKS, ADDRS, SAVE}),
    (("modprobe", "ip_vs_wrr"), {LINKS, ADDRS, SAVE}),  # a program it does not know
])
def test_known_readings_forget_what_a_command_can_change(
        command: tuple[str, ...], read_again: set[str]) -> None:
    inner = Recorder()
    readings = KnownReadings(inner)
    first = {" ".join(argv): readings.run(argv) for argv in (IP_LINKS, IP_ADDRS, IPVS_SAVE)}
    readings.run(command)
    inner.ran.clear()
    again = {" ".join(argv): readings.run(argv) for argv in (IP_LINKS, IP_ADDRS, IPVS_SAVE)}
    assert {" ".join(argv) for argv in inner.ran} == read_again
    assert {k for k in again if again[k] is not first[k]} == read_again


@pytest.mark.parametrize(("lines", "read_again"), [
    ("addr add 10.0.0.1/32 dev eth0\naddr del 10.0.0.2/32 dev eth0\n", {ADDRS}),
    ("addr add 10.0.0.1/32 dev eth0\nlink set dev eth0 up\n", {LINKS, ADDRS}),
])
def test_known_readings_after_an_ip_batch_forget_what_its_lines_change(
        lines: str, read_again: set[str]) -> None:
    inner = Recorder()
    readings = KnownReadings(inner)
    for argv in (IP_LINKS, IP_ADDRS, IPVS_SAVE):
        readings.run(argv)
    readings.run(("ip", "-force", "-batch", "-"), stdin=lines)
    inner.ran.clear()
    for argv in (IP_LINKS, IP_ADDRS, IPVS_SAVE):
        readings.run(argv)
    assert {" ".join(argv) for argv in inner.ran} == read_again


def test_known_readings_keep_no_failed_reading() -> None:
    inner = Recorder()
    readings = KnownReadings(inner)
    readings.run(("false",), check=False)
    readings.run(IPVS_SAVE)
    readings.run(IPVS_SAVE)
    assert inner.ran == [("false",), IPVS_SAVE]


TABLE = f"""\
-A -t {VIP}:80 -s wrr
-a -t {VIP}:80 -r 10.100.0.1:80 -g -w 1
-a -t {VIP}:80 -r 10.100.0.2:80 -m -w 0
-a -t {VIP}:80 -r 10.100.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-A -u [2001:db8::1]:53 -s rr -p 300
-a -u [2001:db8::1]:53 -r [2001:db8::10]:53 -g -w 2
-A -f 7 -s wlc
-a -f 7 -r 10.100.0.9:0 -g -w 1
-a -t 10.9.9.9:80 -r 10.100.0.1:80 -g -w 1
-a -t {VIP}:80 -r 10.100.0.300:80 -g -w 1
"""
RULES = [
    f"-a -t {VIP}:80 -r 10.100.0.1:80 -g -w 1",  # as printed
    f"-e -t {VIP}:80 -r 10.100.0.2:80 -m -w 0",  # an edit that took
    f"-e -t {VIP}:80 -r 10.100.0.2:80 -m -w 5",  # one that did not
    f"-a -t {VIP}:80 -r 10.100.0.1:80 -g -w 1 -x 10",  # thresholds: -S leaves them out
    f"-a -t {VIP}:80 -r 10.100.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum",
    f"-a -t {VIP}:80 -r 10.100.0.4:80 -g -w 1",  # absent
    f"-d -t {VIP}:80 -r 10.100.0.4:80",  # a deletion that took
    f"-d -t {VIP}:80 -r 10.100.0.1:80",  # one that did not
    "-E -u [2001:db8::1]:53 -s rr -p 300",
    "-a -u [2001:db8::1]:53 -r [2001:db8::10]:53 -g -w 2",
    "-A -f 7 -s wlc",
    "-D -f 7",  # not deleted
    "-D -t 10.9.9.9:80",  # never there (its -a line has no -A: not a service)
]


def test_rules_held_as_the_object_check_says() -> None:
    check = RuleCheck(parse_ipvs_save(TABLE))
    assert rules_held(RULES, TABLE) == [check(rule) for rule in RULES] == [
        True, True, False, True, True, False, True, False, True, True, True, False, True]


def test_the_plain_line_reads_as_parse_rule_reads_it() -> None:
    """parse_ipvs_save's one-expression path for the common line gives the objects of the
    general path; lines it cannot read (10.100.0.300) are skipped by both."""
    table = parse_ipvs_save(TABLE)
    rules = []
    for line in TABLE.splitlines():
        try:
            rules.append(parse_rule(line))
        except ValueError:
            continue
    by_service = {r.key: [x.dest for x in rules if x.op == "-a" and x.key == r.key]
                  for r in rules if r.op == "-A"}
    assert {key: list(svc.destinations) for key, svc in table.items()} == by_service
    assert len(table) == 3
