"""Director planner tables: (config, observed host, state) -> the exact commands."""

from __future__ import annotations

import ipaddress
import random
import shlex
from pathlib import Path

import pytest

from lvs_scripts.config import load_config, parse_config
from lvs_scripts.model import Protocol, ServiceKey, Timeouts
from lvs_scripts.owned import (
    AddressAdded,
    AddressRemoved,
    Announced,
    OwnedAddress,
    OwnedRoute,
    OwnedService,
    OwnedTimeouts,
    plan_undo,
)
from lvs_scripts.plan import Plan
from lvs_scripts.plan_director import plan_director_start, unmanaged_notes
from lvs_scripts.probes import HostObservation, Route
from lvs_scripts.state import State
from tests.hosts import addr_lines, host, link_lines

ROOT = Path(__file__).resolve().parent.parent
SEED = load_config(str(ROOT / "examples" / "seed-dr.toml"))
SEED_TOML = (ROOT / "examples" / "seed-dr.toml").read_text()

# The Director script of the original how-to, start branch, with its typos fixed; each
# line is the original's counterpart in the same order.
CORRECTED_DIRECTOR_START = [
    "ipvsadm --set 30 5 60",                                      # /sbin/ipvsadm --set 30 5 60
    "ip addr add 192.168.30.105/24 dev eth1",                     # ip addr add dev eth1 $DIP
    "ip link set dev eth1 up",                                    # ip link set dev eth1 up
    "ip addr add 192.168.30.254/32 brd 192.168.30.254 dev eth0",  # ... dev eth0 $VIP brd $VIP
    "ip link set dev eth0 up",                                    # ip link set dev eth0 up
    "ip route add default via 192.168.30.1",                      # ip route add default via $GW
    "ipvsadm -A -t 192.168.30.254:80 -s wrr",                     # -S wrr: -S is --save
    "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1",
    "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 1",
    "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.113:80 -g -w 2",
    "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.114:80 -g -w 2",
    # touch /var/locak/subsys/ipvsadm: the lock file is written by the tool, not a command
    "arping -c 5 -I eth0 -s 192.168.30.254 192.168.30.1",         # -s $VIPO: typo for $VIP
]

SEED_SAVE = """\
-A -t 192.168.30.254:80 -s wrr
-a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1
-a -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 1
-a -t 192.168.30.254:80 -r 192.168.30.113:80 -g -w 2
-a -t 192.168.30.254:80 -r 192.168.30.114:80 -g -w 2
"""
LINKS = link_lines("lo", "eth0", "eth1")
ADDRS_BARE = addr_lines(("lo", "127.0.0.1/8"), ("eth0", "192.168.30.50/24"))
ADDRS_DONE = addr_lines(("lo", "127.0.0.1/8"), ("eth0", "192.168.30.50/24"),
                        ("eth0", "192.168.30.254/32"), ("eth1", "192.168.30.105/24"))
ROUTE_OURS = "default via 192.168.30.1 dev eth0 \n"
TIMEOUTS_SEED = "Timeout (tcp tcpfin udp): 30 5 60\n"
TIMEOUTS_DEFAULT = "Timeout (tcp tcpfin udp): 900 120 300\n"

def tcp(address: str, port: int = 80) -> ServiceKey:
    return ServiceKey(Protocol.TCP, ipaddress.ip_address(address), port)


def route(text: str, family: int = 4) -> Route:
    """A Route as `ip route show` prints it."""
    from lvs_scripts.probes import parse_default_routes

    return parse_default_routes(text, family)[0]


HTTP = OwnedService(tcp("192.168.30.254"))
DIP = OwnedAddress("eth1", "192.168.30.105/24", "dip")
VIP = OwnedAddress("eth0", "192.168.30.254/32", "vip", announced=True)
VIP_UNANNOUNCED = OwnedAddress("eth0", "192.168.30.254/32", "vip")
OUR_ROUTE = OwnedRoute(4, route("default via 192.168.30.1"))
OWNED = State.of(HTTP, DIP, VIP, OUR_ROUTE)
# A start that added the VIP, then failed before its arping ran.
OWNED_UNANNOUNCED = State.of(HTTP, DIP, VIP_UNANNOUNCED, OUR_ROUTE)


def configured(**changes: str) -> dict[str, str]:
    base = {"links": LINKS, "addrs": ADDRS_DONE, "routes": ROUTE_OURS, "ipvs": SEED_SAVE,
            "timeouts": TIMEOUTS_SEED}
    base.update(changes)
    return base


def toml(extra_director: str = "", service: str = "") -> str:
    return f"""
[director]
interface = "eth0"
gateway = "192.168.30.1"
{extra_director}
{service or '''
[[service]]
vip = "192.168.30.254"
port = 80
scheduler = "wrr"
real = [ { address = "192.168.30.111", weight = 1 } ]
'''}"""


START_CASES = [
    pytest.param(SEED, {}, State(), CORRECTED_DIRECTOR_START, id="seed-on-an-empty-host"),
    pytest.param(SEED, configured(), OWNED, [], id="seed-already-running-nothing-to-do"),
    pytest.param(SEED, configured(timeouts=TIMEOUTS_DEFAULT), OWNED,
                 ["ipvsadm --set 30 5 60"], id="timeouts-reset-by-someone"),
    pytest.param(SEED, configured(routes="default via 10.0.0.1 dev eth0 proto dhcp metric 100"),
                 OWNED, ["ip route replace default via 192.168.30.1 metric 100"],
                 id="other-default-route-is-replaced-in-place-at-its-metric"),
    pytest.param(SEED, configured(links=link_lines("lo", "eth0", "eth1", down=("eth1",))), OWNED,
                 ["ip link set dev eth1 up"], id="dip-interface-down"),
    pytest.param(SEED, configured(ipvs=SEED_SAVE.replace("111:80 -g -w 1", "111:80 -g -w 7")),
                 OWNED, ["ipvsadm -e -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1"],
                 id="weight-drift-repaired-with-every-attribute"),
    pytest.param(SEED, configured(ipvs=SEED_SAVE.replace("112:80 -g", "112:80 -i")),
                 OWNED, ["ipvsadm -e -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 1"],
                 id="forwarding-drift"),
    pytest.param(SEED, configured(ipvs=SEED_SAVE.replace("-s wrr", "-s rr -p 300")),
                 OWNED, ["ipvsadm -E -t 192.168.30.254:80 -s wrr"],
                 id="scheduler-and-persistence-drift"),
    pytest.param(SEED, configured(ipvs=SEED_SAVE.replace(
        "-a -t 192.168.30.254:80 -r 192.168.30.114:80 -g -w 2\n", "")), OWNED,
                 ["ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.114:80 -g -w 2"],
                 id="missing-real-server-added"),
    pytest.param(SEED, configured(ipvs=SEED_SAVE.replace("-s wrr", "-s rr")),
                 State.of(DIP, VIP, OUR_ROUTE), [],
                 id="same-service-made-by-someone-else-is-not-touched"),
    pytest.param(SEED, configured(ipvs=SEED_SAVE + "-A -t 10.9.9.9:443 -s rr\n"), OWNED, [],
                 id="unrelated-unmanaged-service-left-alone"),
    pytest.param(SEED, configured(addrs=ADDRS_BARE + "\n" + addr_lines(
        ("eth1", "192.168.30.105/24"))), OWNED,
                 ["ip addr add 192.168.30.254/32 brd 192.168.30.254 dev eth0",
                  "arping -c 5 -I eth0 -s 192.168.30.254 192.168.30.1"],
                 id="vip-removed-by-hand-is-added-and-announced"),
    pytest.param(SEED, configured(), OWNED_UNANNOUNCED,
                 ["arping -c 5 -I eth0 -s 192.168.30.254 192.168.30.1"],
                 id="vip-a-failed-start-added-is-announced-by-the-next"),
    pytest.param(SEED, configured(), State.of(HTTP, DIP, OUR_ROUTE), [],
                 id="vip-someone-else-added-is-not-announced"),
    pytest.param(parse_config(toml('arping_count = 0')), {"links": LINKS}, State(),
                 ["ip addr add 192.168.30.254/32 brd 192.168.30.254 dev eth0",
                  "ip route add default via 192.168.30.1",
                  "ipvsadm -A -t 192.168.30.254:80 -s wrr",
                  "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1"],
                 id="arping-count-zero-announces-nothing"),
    pytest.param(parse_config(toml().replace('gateway = "192.168.30.1"', "")),
                 {"links": LINKS, "routes": ROUTE_OURS}, State(),
                 ["ip addr add 192.168.30.254/32 brd 192.168.30.254 dev eth0",
                  "ipvsadm -A -t 192.168.30.254:80 -s wrr",
                  "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1",
                  "arping -U -c 5 -I eth0 -s 192.168.30.254 192.168.30.254"],
                 id="no-gateway-unsolicited-arp-and-route-untouched"),
    pytest.param(parse_config(toml(service='''
[[service]]
vip = "2001:db8::10"
port = 443
protocol = "tcp"
scheduler = "sh"
persistence = 600
real = [ { address = "2001:db8::11" } ]
''').replace('gateway = "192.168.30.1"', "")), {"links": LINKS}, State(),
                 [  # the kernel sends the unsolicited NA itself, on a nodad add
                  "sysctl -w net.ipv6.conf.eth0.ndisc_notify=1",
                  "ip addr add 2001:db8::10/128 dev eth0 preferred_lft 0",
                  # brackets are glob characters to a shell: quoted in the printed script
                  "ipvsadm -A -t '[2001:db8::10]:443' -s sh -p 600",
                  "ipvsadm -a -t '[2001:db8::10]:443' -r '[2001:db8::11]:443' -g -w 1"],
                 id="ipv6-service-no-brd-no-arp"),
    pytest.param(parse_config(toml(service='''
[[service]]
vip = "192.168.30.254"
port = 80
protocol = "udp"
forwarding = "nat"
scheduler = "rr"
real = [ { address = "10.1.0.5", port = 8080, weight = 0 } ]
''', extra_director="arping_count = 0")), {"links": LINKS, "routes": ROUTE_OURS}, State(),
                 ["ip addr add 192.168.30.254/32 brd 192.168.30.254 dev eth0",
                  # NAT replies come back through the director, which routes them
                  "sysctl -w net.ipv4.ip_forward=1",
                  "ipvsadm -A -u 192.168.30.254:80 -s rr",
                  "ipvsadm -a -u 192.168.30.254:80 -r 10.1.0.5:8080 -m -w 0"],
                 id="nat-udp-port-mapping-weight-zero"),
]


def observed(parts: dict[str, str], arping: str = "iputils"):  # type: ignore[no-untyped-def]
    return host(**parts, arping=arping)


@pytest.mark.parametrize(("config", "parts", "state", "expected"), START_CASES)
def test_director_start_plan(config, parts, state, expected) -> None:  # type: ignore[no-untyped-def]
    plan = plan_director_start(config, observed(parts), state)
    assert [step.line() for step in plan.steps] == expected


EXTRA_REAL = SEED_SAVE + "-a -t 192.168.30.254:80 -r 192.168.30.99:80 -g -w 3\n"
EXTRA_SERVICE = SEED_SAVE + ("-A -u 192.168.30.254:53 -s rr\n"
                             "-a -u 192.168.30.254:53 -r 192.168.30.111:53 -g -w 1\n"
                             "-a -u 192.168.30.254:53 -r 192.168.30.112:53 -g -w 0\n")
DNS = ServiceKey(Protocol.UDP, ipaddress.ip_address("192.168.30.254"), 53)
OWNS_DNS = State.of(HTTP, OwnedService(DNS), DIP, VIP, OUR_ROUTE)

# Removals: with drain (the default) weight 0 first and the delete waits; --no-drain deletes.
REMOVAL_CASES = [
    pytest.param(EXTRA_REAL, OWNED, True,
                 [("ipvsadm -e -t 192.168.30.254:80 -r 192.168.30.99:80 -g -w 0", None),
                  ("ipvsadm -d -t 192.168.30.254:80 -r 192.168.30.99:80",
                   "192.168.30.99:80 in tcp 192.168.30.254:80 has no connections (at most 30 s)"),
                  ], id="real-server-leaving-is-drained"),
    pytest.param(EXTRA_REAL, OWNED, False,
                 [("ipvsadm -d -t 192.168.30.254:80 -r 192.168.30.99:80", None)],
                 id="real-server-leaving-no-drain"),
    pytest.param(EXTRA_REAL.replace("99:80 -g -w 3", "99:80 -g -w 0"), OWNED, True,
                 [("ipvsadm -d -t 192.168.30.254:80 -r 192.168.30.99:80",
                   "192.168.30.99:80 in tcp 192.168.30.254:80 has no connections (at most 30 s)"),
                  ], id="drain-interrupted-earlier-resumes-with-the-wait"),
    pytest.param(EXTRA_SERVICE, OWNS_DNS, True,
                 [("ipvsadm -e -u 192.168.30.254:53 -r 192.168.30.111:53 -g -w 0", None),
                  ("ipvsadm -D -u 192.168.30.254:53",
                   "udp 192.168.30.254:53 has no connections (at most 30 s)")],
                 id="owned-service-leaving-is-drained-whole"),
    pytest.param(EXTRA_SERVICE, OWNS_DNS, False, [("ipvsadm -D -u 192.168.30.254:53", None)],
                 id="owned-service-leaving-no-drain"),
    pytest.param(EXTRA_SERVICE, OWNED, True, [], id="unowned-service-never-drained-or-deleted"),
]


@pytest.mark.parametrize(("ipvs", "state", "drain", "expected"), REMOVAL_CASES)
def test_director_removal_plan(ipvs, state, drain, expected) -> None:  # type: ignore[no-untyped-def]
    plan = plan_director_start(SEED, observed(configured(ipvs=ipvs)), state, drain=drain)
    assert [(s.line(), s.drain.describe() if s.drain else None) for s in plan.steps] == expected


def test_removals_come_after_additions() -> None:
    config = parse_config(toml(extra_director="arping_count = 0").replace(
        "192.168.30.111", "192.168.30.120"))
    plan = plan_director_start(config, observed(configured(
        ipvs="-A -t 192.168.30.254:80 -s wrr\n"
             "-a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1\n",
        addrs=ADDRS_DONE, routes=ROUTE_OURS)), State.of(HTTP))
    assert [s.argv[1] for s in plan.steps] == ["-a", "-e", "-d"]


def test_addresses_leaving_the_config_go_after_the_services() -> None:
    """The seed state owns a DIP; a config without dip removes it, after the IPVS changes."""
    config = parse_config(toml(extra_director="arping_count = 0"))
    plan = plan_director_start(config, observed(configured()), OWNED)
    lines = [s.line() for s in plan.steps]
    assert lines[-1] == "ip addr del 192.168.30.105/24 dev eth1"
    assert all(line.startswith("ipvsadm") for line in lines[:-1])


def test_habets_arping_uses_its_own_flags() -> None:
    plan = plan_director_start(SEED, observed({}, arping="habets"), State())
    assert plan.steps[-1].argv == ("arping", "-c", "5", "-i", "eth0", "-S", "192.168.30.254",
                                   "192.168.30.1")
    assert plan.steps[-1].optional


def test_unmanaged_service_is_reported_in_the_notes() -> None:
    plan = plan_director_start(SEED, observed(configured()), State())
    assert plan.steps == []
    assert any("not created by lvs-director" in note for note in plan.notes)


def test_every_step_is_an_argv_of_plain_strings() -> None:
    for step in plan_director_start(SEED, observed({}), State()).steps:
        assert all(isinstance(arg, str) and arg for arg in step.argv)
        assert shlex.split(step.line()) == list(step.argv)


STOP_CASES = [
    pytest.param(configured(), OWNED,
                 ["ipvsadm -D -t 192.168.30.254:80",
                  "ip addr del 192.168.30.254/32 dev eth0",
                  "ip route del default via 192.168.30.1",
                  "ip addr del 192.168.30.105/24 dev eth1"],
                 id="undo-everything-start-did-dip-last"),
    pytest.param(configured(), State(), [], id="nothing-owned-nothing-removed"),
    pytest.param(configured(ipvs=SEED_SAVE + "-A -t 10.9.9.9:443 -s rr\n"), OWNED,
                 ["ipvsadm -D -t 192.168.30.254:80",
                  "ip addr del 192.168.30.254/32 dev eth0",
                  "ip route del default via 192.168.30.1",
                  "ip addr del 192.168.30.105/24 dev eth1"],
                 id="unmanaged-service-survives-stop"),
    pytest.param(configured(routes="default via 192.168.30.1 dev eth0"),
                 State.of(OwnedRoute(4, route("default via 192.168.30.1"),
                                     route("default via 10.0.0.1 dev eth0"))),
                 ["ip route replace default via 10.0.0.1 dev eth0"],
                 id="replaced-default-route-is-put-back-in-one-replace"),
    pytest.param(configured(routes="default via 192.168.30.1 dev eth0 metric 100"),
                 State.of(OwnedRoute(4, route("default via 192.168.30.1 metric 100"), route(
                     "default via 10.9.9.1 dev eth0 proto static metric 100 onlink"))),
                 ["ip route replace default via 10.9.9.1 dev eth0 proto static metric 100 "
                  "onlink"],
                 id="previous-route-back-with-every-attribute-onlink-and-metric"),
    pytest.param(configured(routes="default via 192.168.30.1 dev eth0"),
                 State.of(OwnedRoute(4, route("default via 192.168.30.1"),
                                     route("default dev eth0 scope link"))),
                 ["ip route replace default dev eth0 scope link"],
                 id="device-only-previous-route-is-put-back"),
    pytest.param(configured(routes="default via 192.168.30.77 dev eth0"),
                 State.of(OwnedRoute(4, route("default via 192.168.30.1"),
                                     route("default via 10.0.0.1 dev eth0"))), [],
                 id="route-changed-by-hand-since-start-left-alone"),
    pytest.param(configured(routes=""),
                 State.of(OwnedRoute(4, route("default via 192.168.30.1"),
                                     route("default via 10.0.0.1 dev eth0"))),
                 ["ip route add default via 10.0.0.1 dev eth0"],
                 id="no-default-route-left-the-previous-one-comes-back"),
    pytest.param(configured(routes6="default via fe80::1 dev eth0 metric 1024"),
                 State.of(OwnedRoute(6, route("default via fe80::1 metric 1024", 6),
                                     route("default dev eth0 metric 1024", 6))),
                 ["ip -6 route replace default dev eth0 metric 1024"],
                 id="ipv6-route-says-its-family"),
    pytest.param(configured(addrs=ADDRS_BARE, ipvs=""), OWNED,
                 ["ip route del default via 192.168.30.1"],
                 id="already-gone-things-need-no-command"),
    pytest.param(configured(ipvs=""),
                 State.of(OwnedTimeouts(Timeouts(900, 120, 300), Timeouts(30, 5, 60))),
                 ["ipvsadm --set 900 120 300"], id="timeouts-from-before-start-restored"),
    pytest.param(configured(ipvs="", timeouts="Timeout (tcp tcpfin udp): 45 5 60\n"),
                 State.of(OwnedTimeouts(Timeouts(900, 120, 300), Timeouts(30, 5, 60))), [],
                 id="timeouts-changed-since-start-left-alone"),
    pytest.param(configured(ipvs="", timeouts=TIMEOUTS_DEFAULT),
                 State.of(OwnedTimeouts(Timeouts(900, 120, 300), Timeouts(30, 5, 60))), [],
                 id="timeouts-already-back-need-no-command"),
]


def plan_stop(obs: HostObservation, state: State) -> Plan:
    plan = Plan()
    plan_undo(plan, obs, state)
    unmanaged_notes(plan, obs, state)
    return plan


@pytest.mark.parametrize(("parts", "state", "expected"), STOP_CASES)
def test_director_stop_plan(parts, state, expected) -> None:  # type: ignore[no-untyped-def]
    plan = plan_stop(observed(parts), state)
    lines = [step.line() for step in plan.steps]
    assert lines == expected
    assert not any("-C" in line.split() or " down" in line for line in lines)


def test_a_route_restore_the_kernel_refuses_never_fails_stop() -> None:
    """`replace` back to the old route is optional: if refused, our route stays (the host
    keeps a default route), and so does the record, for the next stop to try again."""
    state = State.of(OwnedRoute(4, route("default via 192.168.30.1"),
                                route("default via 10.9.9.1 dev eth0 onlink")))
    plan = plan_stop(observed(configured(routes="default via 192.168.30.1 dev eth0")), state)
    assert [step.optional for step in plan.steps] == [True]
    assert plan.forget == []


def test_a_previous_route_whose_device_is_gone_is_not_put_back() -> None:
    state = State.of(OwnedRoute(4, route("default via 192.168.30.1"),
                                route("default via 10.9.9.1 dev veth7")))
    plan = plan_stop(observed(configured(routes="default via 192.168.30.1 dev eth0")), state)
    assert [step.line() for step in plan.steps] == ["ip route del default via 192.168.30.1"]
    assert any("veth7 is gone" in note for note in plan.notes)


def test_gateway_leaving_the_config_restores_the_route_at_reload() -> None:
    config = parse_config(toml(extra_director="arping_count = 0").replace(
        'gateway = "192.168.30.1"', ""))
    state = State.of(HTTP, VIP, OwnedRoute(4, route("default via 192.168.30.1"),
                                           route("default via 10.0.0.1 dev eth0")))
    plan = plan_director_start(config, observed(configured()), state)
    assert [s.line() for s in plan.steps if "route" in s.argv] == [
        "ip route replace default via 10.0.0.1 dev eth0"]


def test_a_new_gateway_keeps_the_route_from_before_the_first_start() -> None:
    state = State()
    first = route("default via 10.0.0.1 dev eth0 proto dhcp metric 100")
    plan = plan_director_start(SEED, observed(configured(
        routes="default via 10.0.0.1 dev eth0 proto dhcp metric 100")), state)
    for step in plan.steps:
        if step.effect is not None:
            step.effect.record(state)
    moved = parse_config(SEED_TOML.replace('gateway = "192.168.30.1"', 'gateway = "192.168.30.2"'))
    plan = plan_director_start(moved, observed(configured(
        routes="default via 192.168.30.1 dev eth0 metric 100")), state)
    assert [s.line() for s in plan.steps if "route" in s.argv] == [
        "ip route replace default via 192.168.30.2 metric 100"]
    for step in plan.steps:
        if step.effect is not None:
            step.effect.record(state)
    assert state.route is not None and state.route.previous == first


def test_someone_elses_service_that_differs_is_a_conflict_not_a_change() -> None:
    plan = plan_director_start(SEED, observed(configured(
        ipvs="-A -t 192.168.30.254:80 -s rr\n-a -t 192.168.30.254:80 -r 10.7.7.7:80 -g -w 1\n"
    )), State.of(DIP, VIP, OUR_ROUTE))
    assert [s for s in plan.steps if s.argv[0] == "ipvsadm"] == []
    assert len(plan.conflicts) == 1
    assert "tcp 192.168.30.254:80" in plan.conflicts[0]


def test_a_service_leaving_the_config_drains_for_its_own_recorded_time() -> None:
    state = State.of(HTTP, OwnedService(DNS, drain_seconds=7), DIP, VIP, OUR_ROUTE)
    plan = plan_director_start(SEED, observed(configured(ipvs=EXTRA_SERVICE)), state)
    drains = [s.drain.seconds for s in plan.steps if s.drain is not None]
    assert drains == [7]


def test_a_changed_drain_time_is_kept_for_later() -> None:
    config = parse_config(toml().replace('scheduler = "wrr"', 'scheduler = "wrr"\n'
                                         'drain_seconds = 12'))
    state = State.of(HTTP)
    plan = plan_director_start(config, observed(configured(
        ipvs="-A -t 192.168.30.254:80 -s wrr\n"
             "-a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1\n")), state)
    for effect in plan.forget:
        effect.record(state)
    assert state.services[HTTP.key].drain_seconds == 12


def test_a_vip_moving_to_another_device_is_not_said_to_stay_on_the_old_one() -> None:
    config = parse_config(toml(extra_director="arping_count = 0").replace(
        'interface = "eth0"', 'interface = "eth1"'))
    plan = plan_director_start(config, observed(configured()), OWNED)
    assert not any("also on" in note for note in plan.notes)
    assert "ip addr del 192.168.30.254/32 dev eth0" in [s.line() for s in plan.steps]


def test_start_remembers_the_timeouts_it_overwrote_once() -> None:
    state = State()
    for timeouts in (TIMEOUTS_DEFAULT, "Timeout (tcp tcpfin udp): 31 5 60\n"):
        plan = plan_director_start(SEED, observed(configured(timeouts=timeouts)), state)
        for step in plan.steps:
            if step.effect is not None:
                step.effect.record(state)
    assert state.timeouts == OwnedTimeouts(Timeouts(900, 120, 300), Timeouts(30, 5, 60))


def test_stop_forgets_records_of_things_already_gone() -> None:
    plan = plan_stop(observed(configured(addrs=ADDRS_BARE, ipvs="")), OWNED)
    after = State.from_json(OWNED.to_json(), "copy")
    for effect in [s.effect for s in plan.steps if s.effect] + plan.forget:
        effect.record(after)
    assert after.empty()


def test_the_state_tracks_which_added_vips_were_announced() -> None:
    """Announced after its arping; not any more once removed or added again, so that the
    next start announces it (the run that added it may fail before arping)."""
    state = State()
    vip = ("eth0", "192.168.30.254/32")
    AddressAdded(*vip).record(state)
    assert state.unannounced(*vip)
    Announced(*vip).record(state)
    assert not state.unannounced(*vip)
    AddressRemoved(*vip).record(state)
    assert not state.owns_address(*vip)
    AddressAdded(*vip).record(state)
    Announced(*vip).record(state)
    AddressAdded(*vip).record(state)  # added again by hand-repair: announce again
    assert state.unannounced(*vip)
    assert State.from_json(state.to_json(), "state.json") == state


def test_an_announcement_is_recorded_only_when_its_arping_ran() -> None:
    plan = plan_director_start(SEED, observed({}), State())
    arping = [step for step in plan.steps if step.argv[0] == "arping"]
    assert [(step.optional, step.effect) for step in arping] == [
        (True, Announced("eth0", "192.168.30.254/32"))]


@pytest.mark.parametrize("seed", range(5))
def test_kernel_order_does_not_change_the_plan(seed: int) -> None:
    """Real servers listed in the config's order are paired off one by one; in any other
    order they are matched by identity. Both must plan the same rules."""
    rng = random.Random(seed)
    addresses = [f"10.1.{i // 200}.{i % 200 + 1}" for i in range(40)]
    entries = ", ".join(f'{{ address = "{a}", weight = {rng.randint(0, 3)} }}'
                        for a in addresses)
    config = parse_config(toml(extra_director="arping_count = 0", service=f'''
[[service]]
vip = "192.168.30.254"
port = 80
scheduler = "wrr"
real = [ {entries} ]
'''))
    running = [f"-a -t 192.168.30.254:80 -r {a}:80 -{rng.choice('gim')} -w {rng.randint(0, 3)}"
               for a in addresses]
    obs = configured(ipvs="\n".join(["-A -t 192.168.30.254:80 -s wrr", *running]) + "\n")
    in_order = plan_director_start(config, observed(obs), OWNED)
    rng.shuffle(running)
    shuffled = configured(ipvs="\n".join(["-A -t 192.168.30.254:80 -s wrr", *running]) + "\n")
    any_order = plan_director_start(config, observed(shuffled), OWNED)
    assert in_order.steps, "the random weights and methods differ somewhere"
    assert sorted(s.line() for s in in_order.steps) == sorted(s.line() for s in any_order.steps)


# --- the scans in C over every real server (issue 14): the same answers as the loops ----

def _dests(*specs: tuple[str, int]) -> tuple[object, ...]:
    from lvs_scripts.model import Destination

    return tuple(Destination(ipaddress.ip_address(a), p) for a, p in specs)


@pytest.mark.parametrize(("want", "have", "same"), [
    ([("10.0.0.1", 80), ("10.0.0.2", 80)], [("10.0.0.1", 80), ("10.0.0.2", 80)], True),
    ([("10.0.0.1", 80), ("10.0.0.2", 80)], [("10.0.0.2", 80), ("10.0.0.1", 80)], False),
    ([("10.0.0.1", 80)], [("10.0.0.1", 8080)], False),
    ([("10.0.0.1", 80)], [("10.0.0.1", 80), ("10.0.0.2", 80)], False),
    ([("0.0.0.1", 80)], [("::1", 80)], False),  # one integer value, two families
    ([("2001:db8::1", 80)], [("2001:db8:0:0::1", 80)], True),
    ([], [], True),
])
def test_same_real_servers_in_order(want: list[tuple[str, int]], have: list[tuple[str, int]],
                                    same: bool) -> None:
    from lvs_scripts.model import VirtualService
    from lvs_scripts.plan_director import same_real_servers_in_order

    key = ServiceKey(Protocol.TCP, ipaddress.ip_address("10.200.0.1"), 80)
    a = VirtualService(key=key, destinations=_dests(*want))  # type: ignore[arg-type]
    b = VirtualService(key=key, destinations=_dests(*have))  # type: ignore[arg-type]
    assert same_real_servers_in_order(a, b) is same
    assert same == (len(a.destinations) == len(b.destinations) and all(
        x.ident == y.ident for x, y in zip(a.destinations, b.destinations)))


def test_what_a_service_asks_of_all_its_real_servers() -> None:
    from dataclasses import replace

    from lvs_scripts.director import proc_listing_suffices
    from lvs_scripts.model import Forwarding, VirtualService
    from lvs_scripts.record import as_dict
    from lvs_scripts.tunnel import Tunnel

    config = parse_config('[director]\ninterface = "eth0"\n')

    def with_services(*services: VirtualService) -> object:
        return type(config)(**{**as_dict(config), "services": services})

    key = ServiceKey(Protocol.TCP, ipaddress.ip_address("10.200.0.1"), 80)
    plain = VirtualService(key=key, destinations=_dests(("10.0.0.1", 80), ("10.0.0.2", 80)))  # type: ignore[arg-type]
    assert not plain.forwards_by(Forwarding.NAT) and plain.forwards_by(Forwarding.DR)
    assert not plain.has_thresholds() and not plain.has_tunnel_options()
    last = plain.destinations[-1]
    for changed, asks in ((replace(last, forwarding=Forwarding.NAT), "nat"),
                          (replace(last, upper=10), "thresholds"),
                          (replace(last, lower=5), "thresholds"),
                          (replace(last, forwarding=Forwarding.TUN, tunnel=Tunnel("gue", 5555)),
                           "tunnel")):
        service = VirtualService(key=key, destinations=(plain.destinations[0], changed))
        assert service.forwards_by(Forwarding.NAT) is (asks == "nat")
        assert service.has_thresholds() is (asks == "thresholds")
        assert service.has_tunnel_options() is (asks == "tunnel")
        assert proc_listing_suffices(with_services(plain))
        assert proc_listing_suffices(with_services(plain, service)) is (asks == "nat")
    empty = VirtualService(key=key)
    assert not empty.forwards_by(Forwarding.DR) and not empty.has_thresholds()


@pytest.mark.parametrize("text", ["0.0.0.0", "0.0.0.1", "10.100.0.1", "192.168.30.254",  # noqa: S104
                                  "255.255.255.255", "1.2.3.4", "::", "::1", "2001:db8::1",
                                  "::ffff:1.2.3.4", "fe80::1"])
def test_address_text_is_str(text: str) -> None:
    from lvs_scripts.model import address_text

    address = ipaddress.ip_address(text)
    assert address_text(address) == str(address)
