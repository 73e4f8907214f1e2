"""Real-server planner tables: (config, observed host, state) -> the exact commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvs_scripts.config import load_config, parse_config
from lvs_scripts.owned import OwnedAddress, OwnedSysctl, plan_undo
from lvs_scripts.plan import Plan
from lvs_scripts.plan_realserver import plan_realserver_start
from lvs_scripts.probes import HostObservation
from lvs_scripts.state import State
from tests.hosts import addr_lines, host, link_lines

ROOT = Path(__file__).resolve().parent.parent
SEED = load_config(str(ROOT / "examples" / "seed-dr.toml"))

# The Real Server script's start, corrected: ARP settings before the VIP (the script added
# the VIP first, leaving a window in which the real server answers ARP for it).
CORRECTED_REALSERVER_START = [
    "sysctl -w net.ipv4.conf.all.arp_ignore=1",
    "sysctl -w net.ipv4.conf.all.arp_announce=2",
    "sysctl -w net.ipv4.conf.eth0.arp_ignore=1",
    "sysctl -w net.ipv4.conf.eth0.arp_announce=2",
    "ip addr add 192.168.30.254/32 brd 192.168.30.254 dev lo",  # ip addr add dev lo $VIP brd $VIP
]
ZEROS = {"net.ipv4.conf.all.arp_ignore": 0, "net.ipv4.conf.all.arp_announce": 0,
         "net.ipv4.conf.eth0.arp_ignore": 0, "net.ipv4.conf.eth0.arp_announce": 0}
DONE = {"net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.all.arp_announce": 2,
        "net.ipv4.conf.eth0.arp_ignore": 1, "net.ipv4.conf.eth0.arp_announce": 2}
LINKS = link_lines("lo", "eth0")
ADDRS = addr_lines(("lo", "127.0.0.1/8"), ("eth0", "192.168.30.111/24"))
ADDRS_VIP = addr_lines(("lo", "127.0.0.1/8"), ("lo", "192.168.30.254/32"),
                       ("eth0", "192.168.30.111/24"))
TARGETS = {"arp_ignore": 1, "arp_announce": 2}
VIP = OwnedAddress("lo", "192.168.30.254/32")


def sysctl(key: str, previous: int) -> OwnedSysctl:
    return OwnedSysctl(key, previous, TARGETS[key.rsplit(".", 1)[-1].rsplit("/", 1)[-1]])


OWNED = State.of(VIP, *(sysctl(key, value) for key, value in ZEROS.items()))

TWO_VIPS = parse_config("""
[realserver]
arp_interfaces = ["eth0.100"]
[[service]]
vip = "192.168.30.254"
port = 80
real = [ { address = "192.168.30.111" } ]
[[service]]
vip = "192.168.30.253"
port = 25
forwarding = "nat"
real = [ { address = "192.168.30.112" } ]
""")

START_CASES = [
    pytest.param(SEED, host(LINKS, ADDRS, sysctls=ZEROS), State(), CORRECTED_REALSERVER_START,
                 id="seed-on-a-fresh-real-server"),
    pytest.param(SEED, host(LINKS, ADDRS_VIP, sysctls=DONE), OWNED, [],
                 id="already-configured-nothing-to-do"),
    pytest.param(SEED, host(link_lines("lo", "eth0", down=("lo",)), ADDRS_VIP, sysctls=DONE),
                 OWNED, ["ip link set dev lo up"], id="loopback-downed-by-the-old-stop-script"),
    pytest.param(SEED, host(LINKS, ADDRS_VIP, sysctls={**DONE,
                                                       "net.ipv4.conf.eth0.arp_announce": 1}),
                 OWNED, ["sysctl -w net.ipv4.conf.eth0.arp_announce=2"], id="one-sysctl-drifted"),
    pytest.param(TWO_VIPS, host(link_lines("lo", "eth0.100"), ADDRS, sysctls={}), State(),
                 ["sysctl -w net.ipv4.conf.all.arp_ignore=1",
                  "sysctl -w net.ipv4.conf.all.arp_announce=2",
                  "sysctl -w net/ipv4/conf/eth0.100/arp_ignore=1",
                  "sysctl -w net/ipv4/conf/eth0.100/arp_announce=2",
                  "ip addr add 192.168.30.254/32 brd 192.168.30.254 dev lo"],
                 id="vlan-interface-uses-slash-keys-and-nat-vip-stays-off-lo"),
    pytest.param(TWO_VIPS, host(LINKS, ADDRS_VIP + "\n" + addr_lines(("lo", "192.168.30.9/32")),
                                sysctls={"net.ipv4.conf.all.arp_ignore": 1,
                                         "net.ipv4.conf.all.arp_announce": 2,
                                         "net/ipv4/conf/eth0.100/arp_ignore": 1,
                                         "net/ipv4/conf/eth0.100/arp_announce": 2}),
                 State.of(VIP, OwnedAddress("lo", "192.168.30.9/32")),
                 ["ip addr del 192.168.30.9/32 dev lo"], id="vip-dropped-from-config-removed"),
    pytest.param(SEED, host(LINKS, ADDRS_VIP, sysctls={**DONE,
                                                       "net.ipv4.conf.all.arp_ignore": 2,
                                                       "net.ipv4.conf.eth0.arp_ignore": 8}),
                 State.of(VIP), [], id="stricter-arp-ignore-2-or-8-is-kept"),
    pytest.param(SEED, host(LINKS, ADDRS_VIP, sysctls={**DONE,
                                                       "net.ipv4.conf.all.arp_ignore": 3}),
                 State.of(VIP), ["sysctl -w net.ipv4.conf.all.arp_ignore=1"],
                 id="arp-ignore-3-still-answers-for-a-global-vip-on-lo"),
    pytest.param(SEED, host(link_lines("lo", "eth0", "eth1"), ADDRS_VIP, sysctls={
        **DONE, "net.ipv4.conf.eth1.arp_ignore": 1, "net.ipv4.conf.eth1.arp_announce": 2}),
                 State.of(VIP, sysctl("net.ipv4.conf.eth1.arp_ignore", 0),
                          sysctl("net.ipv4.conf.eth1.arp_announce", 0)),
                 ["sysctl -w net.ipv4.conf.eth1.arp_ignore=0",
                  "sysctl -w net.ipv4.conf.eth1.arp_announce=0"],
                 id="interface-dropped-from-arp-interfaces-restored-at-reload"),
]


@pytest.mark.parametrize(("config", "observed", "state", "expected"), START_CASES)
def test_realserver_start_plan(config, observed, state, expected) -> None:  # type: ignore[no-untyped-def]
    plan = plan_realserver_start(config, observed, state)
    assert [step.line() for step in plan.steps] == expected


STOP_CASES = [
    pytest.param(host(LINKS, ADDRS_VIP, sysctls=DONE), OWNED,
                 ["ip addr del 192.168.30.254/32 dev lo",
                  "sysctl -w net.ipv4.conf.all.arp_ignore=0",
                  "sysctl -w net.ipv4.conf.all.arp_announce=0",
                  "sysctl -w net.ipv4.conf.eth0.arp_ignore=0",
                  "sysctl -w net.ipv4.conf.eth0.arp_announce=0"],
                 id="vip-first-then-previous-values-restored"),
    pytest.param(host(LINKS, ADDRS_VIP, sysctls=DONE),
                 State.of(VIP, sysctl("net.ipv4.conf.all.arp_ignore", 3)),
                 ["ip addr del 192.168.30.254/32 dev lo",
                  "sysctl -w net.ipv4.conf.all.arp_ignore=3"],
                 id="restores-what-was-there-not-zero"),
    pytest.param(host(LINKS, ADDRS_VIP, sysctls={**DONE, "net.ipv4.conf.all.arp_ignore": 2}),
                 State.of(sysctl("net.ipv4.conf.all.arp_ignore", 0)), [],
                 id="value-changed-by-someone-since-is-left-alone"),
    pytest.param(host(LINKS, ADDRS_VIP, sysctls={**DONE, "net.ipv4.conf.all.arp_ignore": 0}),
                 State.of(sysctl("net.ipv4.conf.all.arp_ignore", 0)), [],
                 id="value-already-back-needs-no-command"),
    pytest.param(host(LINKS, ADDRS_VIP, sysctls=DONE), State(), [],
                 id="nothing-recorded-nothing-undone"),
    pytest.param(host(LINKS, ADDRS_VIP, sysctls={
        "net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.all.arp_announce": 2}),
                 State.of(VIP, sysctl("net.ipv4.conf.all.arp_ignore", 0),
                          sysctl("net.ipv4.conf.veth9.arp_ignore", 0)),
                 ["ip addr del 192.168.30.254/32 dev lo",
                  "sysctl -w net.ipv4.conf.all.arp_ignore=0"],
                 id="interface-gone-since-start-its-keys-are-dropped"),
]


def plan_realserver_stop(observed: HostObservation, state: State) -> Plan:
    plan = Plan()
    plan_undo(plan, observed, state)
    return plan


@pytest.mark.parametrize(("observed", "state", "expected"), STOP_CASES)
def test_realserver_stop_plan(observed, state, expected) -> None:  # type: ignore[no-untyped-def]
    plan = plan_realserver_stop(observed, state)
    lines = [step.line() for step in plan.steps]
    assert lines == expected
    assert not any("link" in line and "down" in line for line in lines)


def test_stop_note_explains_an_unrestored_value() -> None:
    plan = plan_realserver_stop(
        host(LINKS, ADDRS_VIP, sysctls={**DONE, "net.ipv4.conf.all.arp_ignore": 2}),
        State.of(sysctl("net.ipv4.conf.all.arp_ignore", 0)))
    assert plan.notes == ["net.ipv4.conf.all.arp_ignore was changed to 2 since start: not "
                          "restored to 0"]
    assert plan.forget  # and the stale record is dropped from the state file


def test_stop_names_an_interface_that_vanished_with_its_keys() -> None:
    plan = plan_realserver_stop(host(LINKS, ADDRS, sysctls={}),
                                State.of(sysctl("net.ipv4.conf.veth9.arp_ignore", 0)))
    assert plan.steps == []
    assert any("veth9 is gone" in note for note in plan.notes)
