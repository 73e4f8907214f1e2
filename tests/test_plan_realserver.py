"""Real-server planner tables: (config, observed host, state) -> the exact commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvs_scripts.config import load_config, parse_config
from lvs_scripts.plan_realserver import plan_realserver_start, plan_realserver_stop
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
OWNED = State(addresses=[["lo", "192.168.30.254/32"]], sysctls=dict(ZEROS))

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
                 State(addresses=[["lo", "192.168.30.254/32"], ["lo", "192.168.30.9/32"]]),
                 ["ip addr del 192.168.30.9/32 dev lo"], id="vip-dropped-from-config-removed"),
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
                 State(addresses=[["lo", "192.168.30.254/32"]],
                       sysctls={"net.ipv4.conf.all.arp_ignore": 8}),
                 ["ip addr del 192.168.30.254/32 dev lo",
                  "sysctl -w net.ipv4.conf.all.arp_ignore=8"],
                 id="restores-what-was-there-not-zero"),
    pytest.param(host(LINKS, ADDRS_VIP, sysctls={**DONE, "net.ipv4.conf.all.arp_ignore": 2}),
                 State(sysctls={"net.ipv4.conf.all.arp_ignore": 0}), [],
                 id="value-changed-by-someone-since-is-left-alone"),
    pytest.param(host(LINKS, ADDRS_VIP, sysctls=DONE), State(), [],
                 id="nothing-recorded-nothing-undone"),
]


@pytest.mark.parametrize(("observed", "state", "expected"), STOP_CASES)
def test_realserver_stop_plan(observed, state, expected) -> None:  # type: ignore[no-untyped-def]
    plan = plan_realserver_stop(SEED, observed, state)
    lines = [step.line() for step in plan.steps]
    assert lines == expected
    assert not any("link" in line and "down" in line for line in lines)


def test_stop_note_explains_an_unrestored_value() -> None:
    plan = plan_realserver_stop(
        SEED, host(LINKS, ADDRS_VIP, sysctls={**DONE, "net.ipv4.conf.all.arp_ignore": 2}),
        State(sysctls={"net.ipv4.conf.all.arp_ignore": 0}))
    assert plan.notes == ["net.ipv4.conf.all.arp_ignore was changed to 2 since start: not "
                          "restored to 0"]
    assert plan.forget  # and the stale record is dropped from the state file
