"""[bgp]: the generated BIRD config (golden, and parsed by the real `bird -p` where it is
installed), the planner as data (start, reload, stop of one active-active director), the
router id, the parsers of `birdc` and `ip route get` (on output captured in the lab:
tests/data/bgp/captured/) and status."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lvs_scripts.bgp import (
    BirdFiles,
    bird_config,
    describe_bgp,
    parse_protocols,
    parse_route_get,
    parse_routes,
    plan_bgp_start,
    router_id,
    sloppy_keys,
    withdrawn_vips,
)
from lvs_scripts.config import parse_config
from lvs_scripts.ha import digest
from lvs_scripts.health import DOWN, UP, Health, TargetId
from lvs_scripts.healthstate import HealthView
from lvs_scripts.owned import (
    OwnedAddress,
    OwnedBird,
    OwnedFile,
    OwnedService,
    OwnedSysctl,
    plan_undo,
)
from lvs_scripts.plan import Plan
from lvs_scripts.plan_director import plan_health
from lvs_scripts.probes import BgpSession, BirdSeen, HostObservation, parse_ipvs_save
from lvs_scripts.state import State
from tests.hosts import addr_lines, host, link_lines

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "bgp"
CAPTURED = GOLDEN / "captured"
TEXT = """\
[director]
interface = "eth0"
gateway = "10.91.0.1"

[bgp]
local_as = 65001
neighbors = [ { address = "10.91.0.1", as = 65000 } ]
hold_time = 3

[[service]]
vip = "10.98.0.100"
port = 80
scheduler = "mh"
real = [ { address = "10.91.0.21" }, { address = "10.91.0.22" } ]
"""
CONFIG = parse_config(TEXT, "/etc/lvs/lvs.toml")
# Two neighbors, an IPv6 VIP and an SCTP service beside the TCP one.
VARIANT = parse_config(TEXT.replace(
    '[ { address = "10.91.0.1", as = 65000 } ]',
    '[ { address = "10.91.0.1", as = 65000 }, { address = "2001:db8:91::1", as = 4200000000 } ]')
    + '\n[[service]]\nvip = "2001:db8:98::100"\nport = 80\nscheduler = "sh"\n'
      'real = [ { address = "2001:db8:91::21" } ]\n'
    + '\n[[service]]\nvip = "10.98.0.100"\nport = 3868\nprotocol = "sctp"\nscheduler = "mh"\n'
      'real = [ { address = "10.91.0.21" } ]\n', "/etc/lvs/lvs.toml")
FILES = BirdFiles("/run/lvs-scripts", "lvs-director")
RID = ipaddress.IPv4Address("10.91.0.11")
CONF = FILES.config_file
CONF_DIGEST = digest(bird_config(CONFIG, RID, FILES))


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDENS") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs (UPDATE_GOLDENS=1 rewrites it)"


@pytest.mark.parametrize(("config", "file"), [(CONFIG, "bird.conf"),
                                              (VARIANT, "two-neighbors-ipv6.bird.conf")])
def test_bird_config_golden(config: object, file: str) -> None:
    golden(file, bird_config(config, RID, FILES))  # type: ignore[arg-type]


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 is not installed here")
@pytest.mark.parametrize("file", ["bird.conf", "two-neighbors-ipv6.bird.conf"])
def test_the_real_bird_parses_the_generated_config(file: str) -> None:
    """`bird -p` only parses the file and exits (the guard lets exactly that through)."""
    done = subprocess.run(["bird", "-p", "-c", str(GOLDEN / file)], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 is not installed here")
def test_the_real_bird_refuses_a_broken_config(tmp_path: Path) -> None:
    """The check above can fail: the same call on a config with an AS out of range."""
    bad = tmp_path / "bad.conf"
    bad.write_text((GOLDEN / "bird.conf").read_text().replace("local as 65001",
                                                              "local as 70000000000"))
    done = subprocess.run(["bird", "-p", "-c", str(bad)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode != 0


def test_each_vip_goes_only_to_neighbors_of_its_family() -> None:
    text = bird_config(VARIANT, RID, FILES)
    v4, v6 = text.split("protocol bgp bgp2")
    assert "export where net ~ [ 10.98.0.100/32 ];" in v4.split("protocol bgp bgp1")[1]
    assert "ipv6 {" in v6 and "export where net ~ [ 2001:db8:98::100/128 ];" in v6
    assert "10.98.0.100" not in v6


def test_sloppy_settings_follow_the_protocols() -> None:
    assert sloppy_keys(CONFIG) == {"net.ipv4.vs.sloppy_tcp": 1}
    assert sloppy_keys(VARIANT) == {"net.ipv4.vs.sloppy_tcp": 1, "net.ipv4.vs.sloppy_sctp": 1}


# --- the router id ------------------------------------------------------------------------------

def test_router_id_is_the_source_towards_the_neighbor_never_a_vip() -> None:
    obs = host(link_lines("lo", "eth0"), addr_lines(("eth0", "10.91.0.11/24"),
                                                    ("lo", "10.98.0.100/32")))
    assert router_id(CONFIG, obs) is None  # no route to the neighbor
    obs.bgp.routes[ipaddress.ip_address("10.91.0.1")] = ("eth0", ipaddress.ip_address(
        "10.91.0.11"))
    assert router_id(CONFIG, obs) == RID
    # A source that is a VIP (a route with `src VIP`): the device's own address instead.
    obs.bgp.routes[ipaddress.ip_address("10.91.0.1")] = ("eth0", ipaddress.ip_address(
        "10.98.0.100"))
    assert router_id(CONFIG, obs) == RID


def test_router_id_of_an_ipv6_neighbor_is_an_ipv4_address_of_its_device() -> None:
    obs = host(link_lines("lo", "eth0", "eth1"), addr_lines(("eth1", "10.7.0.3/24"),
                                                            ("eth0", "10.91.0.11/24")))
    obs.bgp.routes[ipaddress.ip_address("2001:db8:91::1")] = ("eth1", ipaddress.ip_address(
        "2001:db8:91::11"))
    only_v6 = parse_config(TEXT.replace("10.91.0.1\", as", "2001:db8:91::1\", as").replace(
        "10.98.0.100", "2001:db8:98::100").replace("10.91.0.21", "2001:db8:91::21").replace(
        "10.91.0.22", "2001:db8:91::22").replace('gateway = "10.91.0.1"', ""))
    assert router_id(only_v6, obs) == ipaddress.IPv4Address("10.7.0.3")


# --- the planner ----------------------------------------------------------------------------------

SAVE = ("-A -t 10.98.0.100:80 -s mh\n"
        "-a -t 10.98.0.100:80 -r 10.91.0.21:80 -g -w 1\n"
        "-a -t 10.98.0.100:80 -r 10.91.0.22:80 -g -w 1\n")
HTTP = next(iter(parse_ipvs_save(SAVE)))
SLOPPY = "net.ipv4.vs.sloppy_tcp"
BIRD = OwnedBird(CONF, FILES.pid_file, FILES.socket)
VIP_ON_LO = OwnedAddress("lo", "10.98.0.100/32")
RUNNING = State.of(OwnedService(HTTP), VIP_ON_LO, OwnedSysctl(SLOPPY, 0, 1), BIRD,
                   OwnedFile(CONF, CONF_DIGEST))
LINKS = link_lines("lo", "eth0")
BARE = addr_lines(("lo", "127.0.0.1/8"), ("eth0", "10.91.0.11/24"))
ANNOUNCED = addr_lines(("lo", "127.0.0.1/8"), ("lo", "10.98.0.100/32"), ("eth0", "10.91.0.11/24"))
START = f"bird -c {CONF} -s {FILES.socket} -P {FILES.pid_file}"
INSTALL = f"install -m 0644 /proc/self/fd/0 {CONF}"


def observed(addrs: str = ANNOUNCED, ipvs: str = SAVE, sloppy: int = 1,
             files: dict[str, str] | None = None, bird: int | None = 4343,
             route: bool = True) -> HostObservation:
    obs = host(LINKS, addrs, routes="default via 10.91.0.1 dev eth0", ipvs=ipvs,
               sysctls={SLOPPY: sloppy})
    obs.files = {CONF: CONF_DIGEST} if files is None else files
    obs.bird = None if bird is None else BirdSeen(bird, CONF)
    if route:
        obs.bgp.routes[ipaddress.ip_address("10.91.0.1")] = ("eth0", ipaddress.ip_address(
            "10.91.0.11"))
    return obs


START_CASES = [
    pytest.param(observed(BARE, ipvs="", sloppy=0, files={}, bird=None), State(), [
        "ipvsadm -R", f"sysctl -w {SLOPPY}=1", "ip addr add 10.98.0.100/32 brd 10.98.0.100 "
        "dev lo", INSTALL, START], id="bare-host: services, sloppy, VIP on lo, then BIRD"),
    pytest.param(observed(), RUNNING, [], id="running-is-as-configured"),
    pytest.param(observed(bird=None), RUNNING, [START], id="bird-killed-is-started-again"),
    pytest.param(observed(sloppy=0), RUNNING, [f"sysctl -w {SLOPPY}=1"],
                 id="sloppy-reset-by-someone"),
    pytest.param(observed(files={CONF: "0" * 64}), RUNNING,
                 [INSTALL, f"birdc -s {FILES.socket} configure"],
                 id="changed-config-rewritten-and-reconfigured"),
    pytest.param(observed(ipvs=SAVE.replace("22:80 -g -w 1", "22:80 -g -w 3")), RUNNING,
                 ["ipvsadm -e -t 10.98.0.100:80 -r 10.91.0.22:80 -g -w 1"],
                 id="reload-touches-the-ipvs-table-only"),
]


def lines(plan: Plan) -> list[str]:
    return ["ipvsadm -R" if s.ipvs_rule and s.argv[1] in ("-A", "-a") and len(
        plan.steps) > 1 and s.argv[1] == "-A" else s.line()
        for s in plan.steps if not (s.ipvs_rule and s.argv[1] == "-a")]


@pytest.mark.parametrize(("obs", "state", "expected"), START_CASES)
def test_bgp_start_plan(obs: HostObservation, state: State, expected: list[str]) -> None:
    plan = plan_bgp_start(CONFIG, FILES, obs, state)
    assert lines(plan) == expected
    assert not plan.conflicts


def test_no_arp_and_no_arping_with_bgp() -> None:
    plan = plan_bgp_start(CONFIG, FILES, observed(BARE, ipvs="", files={}, bird=None), State())
    assert not any(s.argv[0] == "arping" or "eth0" in s.argv for s in plan.steps)


def test_bird_waits_for_its_pid_file_and_gets_the_generated_config() -> None:
    plan = plan_bgp_start(CONFIG, FILES, observed(files={}, bird=None), RUNNING)
    by_line = {s.line(): s for s in plan.steps}
    assert by_line[INSTALL].stdin == bird_config(CONFIG, RID, FILES)
    settle = by_line[START].settle
    assert settle is not None and settle.pid_file == FILES.pid_file


def test_no_route_to_the_neighbor_is_a_conflict_and_bird_is_not_started() -> None:
    plan = plan_bgp_start(CONFIG, FILES, observed(files={}, bird=None, route=False), RUNNING)
    assert "no route to any bgp.neighbors address" in plan.conflicts[0]
    assert not any(s.argv[0] in ("bird", "install") for s in plan.steps)


def test_a_reload_that_drops_a_vip_withdraws_it_before_its_service_goes() -> None:
    """The VIP leaves lo first, and the plan waits for BIRD to withdraw it, before the
    service that used it is deleted (drained)."""
    other = parse_config(TEXT.replace("10.98.0.100", "10.98.0.200"), "/etc/lvs/lvs.toml")
    plan = plan_bgp_start(other, FILES, observed(), RUNNING, drain=False)
    steps = [s.line() for s in plan.steps]
    assert steps[0] == "ip addr del 10.98.0.100/32 dev lo"
    assert steps.index("ipvsadm -D -t 10.98.0.100:80") > 0
    settle = plan.steps[0].settle
    assert settle is not None and settle.poll == ("birdc", "-s", FILES.socket, "show",
                                                  "route", "protocol", "lvs_vips")
    assert settle.absent == ("10.98.0.100/32",) and settle.optional
    # The new VIP comes on lo last, once its service is there.
    assert steps[-1] == f"birdc -s {FILES.socket} configure"
    assert steps[-3] == "ip addr add 10.98.0.200/32 brd 10.98.0.200 dev lo"


STOP_CASES = [
    pytest.param(observed(), RUNNING, [
        "ip addr del 10.98.0.100/32 dev lo", "kill -TERM 4343", "ipvsadm -D -t 10.98.0.100:80",
        f"sysctl -w {SLOPPY}=0", f"rm -f {CONF}"], id="withdraw-first-then-tear-down"),
    pytest.param(observed(BARE, ipvs="", sloppy=0, files={}, bird=None), RUNNING, [],
                 id="all-gone-already-records-dropped"),
    pytest.param(observed(sloppy=0, files={CONF: "1" * 64}, bird=None), RUNNING, [
        "ip addr del 10.98.0.100/32 dev lo", "ipvsadm -D -t 10.98.0.100:80"],
                 id="bird-gone-and-changed-by-others-left-alone"),
]


@pytest.mark.parametrize(("obs", "state", "expected"), STOP_CASES)
def test_bgp_stop_plan(obs: HostObservation, state: State, expected: list[str]) -> None:
    plan = Plan()
    plan_undo(plan, obs, state)
    assert [s.line() for s in plan.steps] == expected
    after = State.from_json(state.to_json(), "copy")
    for effect in [s.effect for s in plan.steps if s.effect] + plan.forget:
        effect.record(after)
    assert after.empty()


def test_stop_waits_for_the_withdrawal_then_for_bird_to_exit() -> None:
    plan = Plan()
    plan_undo(plan, observed(), RUNNING)
    withdraw, kill = plan.steps[0].settle, plan.steps[1].settle
    assert withdraw is not None and withdraw.absent == ("10.98.0.100/32",)
    assert withdraw.seconds <= 10 and withdraw.optional  # bounded; late is a warning
    assert kill is not None and kill.gone_pid == 4343 and not kill.optional


def test_a_bird_we_did_not_start_is_never_signalled() -> None:
    plan = Plan()
    obs = observed()
    obs.bird = BirdSeen(4343, "/etc/bird/bird.conf")
    plan_undo(plan, obs, State.of(BIRD))
    assert plan.steps == []


# --- parsers, on output captured in the lab (BIRD 2.0.12, iproute2 6.1) -----------------------

def captured(name: str) -> str:
    return (CAPTURED / f"{name}.txt").read_text()


def test_show_protocols_established() -> None:
    sessions = parse_protocols(captured("protocols_established"))
    assert list(sessions) == ["bgp1"]
    assert sessions["bgp1"].established and sessions["bgp1"].state == "up"


def test_show_protocols_of_a_session_that_is_down() -> None:
    sessions = parse_protocols(captured("protocols_down_d2"))
    assert not sessions["bgp1"].established
    router = parse_protocols(captured("protocols_down"))
    assert router["d1"].established and not router["d2"].established


def test_show_route_export_and_protocol() -> None:
    assert parse_routes(captured("route_export")) == ("10.98.0.100/32",)
    assert parse_routes(captured("route_protocol")) == ("10.98.0.100/32",)
    assert parse_routes(captured("route_export_withdrawn")) == ()
    assert parse_routes(captured("route_protocol_withdrawn")) == ()
    assert parse_routes(captured("birdc_nosocket")) == ()
    assert parse_routes(captured("route_export_unknown")) == ()


def test_birdc_reports_a_failure_by_its_exit_code() -> None:
    """What observe_sessions and the withdrawal wait rely on: no BIRD on the socket, or a
    command BIRD refused, is exit 1 (and the wait takes a BIRD that is gone as done)."""
    assert (CAPTURED / "birdc_nosocket.rc").read_text().strip() == "1"
    assert (CAPTURED / "route_export_unknown.rc").read_text().strip() == "1"
    assert (CAPTURED / "configure.rc").read_text().strip() == "0"


def test_show_protocols_of_the_router_with_both_directors() -> None:
    router = parse_protocols(captured("router_protocols"))
    assert sorted(router) == ["d1", "d2"] and all(s.established for s in router.values())
    assert parse_protocols(captured("birdc_nosocket")) == {}


def test_route_get() -> None:
    assert parse_route_get(captured("route_get")) == (
        "eth0", ipaddress.ip_address("10.91.0.11"))
    assert parse_route_get("") is None


# --- status ------------------------------------------------------------------------------------

def test_status_shows_each_session_and_what_it_announces() -> None:
    obs = observed()
    obs.bgp.sessions = {"bgp1": BgpSession("up", "Established")}
    obs.bgp.exported = {"bgp1": ("10.98.0.100/32",)}
    text, data = describe_bgp(CONFIG, obs)
    assert data["established"] and data["router_id"] == "10.91.0.11"
    assert data["sessions"] == [{"neighbor": "10.91.0.1", "as": 65000, "protocol": "bgp1",
                                 "state": "Established", "established": True,
                                 "announced": ["10.98.0.100/32"]}]
    assert "announces 10.98.0.100/32" in text[1]
    obs.bgp.sessions = {"bgp1": BgpSession("start", "Active Socket: Connection refused")}
    obs.bgp.exported = {}
    text, data = describe_bgp(CONFIG, obs)
    assert not data["established"] and "Active" in text[1]


# --- health: the watcher withdraws a VIP no real server serves -------------------------------

CHECKED = parse_config(TEXT + '\n[service.check]\ntype = "tcp"\n', "/etc/lvs/lvs.toml")


def health(*states: tuple[str, str]) -> HealthView:
    """(last octet of a real server, up|down) -> a view of the checked service."""
    return HealthView({TargetId("tcp", "10.98.0.100", 80, f"10.91.0.{last}", 80):
                       Health(state, 0, 3, "test", 1.0) for last, state in states})


HEALTH_CASES = [
    pytest.param(observed(), health(("21", DOWN), ("22", DOWN)),
                 ["ipvsadm -e -t 10.98.0.100:80 -r 10.91.0.21:80 -g -w 0",
                  "ipvsadm -e -t 10.98.0.100:80 -r 10.91.0.22:80 -g -w 0",
                  "ip addr del 10.98.0.100/32 dev lo"], id="all-down-withdrawn"),
    pytest.param(observed(), health(("21", DOWN), ("22", UP)),
                 ["ipvsadm -e -t 10.98.0.100:80 -r 10.91.0.21:80 -g -w 0"],
                 id="one-up-stays-announced"),
    pytest.param(observed(BARE, ipvs=SAVE.replace("-w 1", "-w 0")),
                 health(("21", UP), ("22", DOWN)),
                 ["ipvsadm -e -t 10.98.0.100:80 -r 10.91.0.21:80 -g -w 1",
                  "ip addr add 10.98.0.100/32 brd 10.98.0.100 dev lo"],
                 id="one-back-up-announced-again"),
]


@pytest.mark.parametrize(("obs", "view", "expected"), HEALTH_CASES)
def test_the_watcher_withdraws_a_vip_whose_services_have_no_real_server_up(
        obs: HostObservation, view: HealthView, expected: list[str]) -> None:
    plan = plan_health(CHECKED, obs, RUNNING, view)
    assert [s.line() for s in plan.steps] == expected


def test_a_vip_someone_else_put_on_lo_is_never_withdrawn() -> None:
    plan = plan_health(CHECKED, observed(), State.of(OwnedService(HTTP)),
                       health(("21", DOWN), ("22", DOWN)))
    assert not any(s.argv[:3] == ("ip", "addr", "del") for s in plan.steps)


def test_start_and_reload_do_not_announce_a_vip_nobody_serves() -> None:
    view = health(("21", DOWN), ("22", DOWN))
    plan = plan_bgp_start(CHECKED, FILES, observed(BARE, ipvs="", files={}, bird=None),
                          State(), view=view)
    assert not any(s.argv[:3] == ("ip", "addr", "add") for s in plan.steps)
    assert "not announced while no real server of theirs is up: 10.98.0.100/32" in plan.notes
    # Running, with the VIP on lo: the reload takes it off, and stays idempotent after.
    plan = plan_bgp_start(CHECKED, FILES, observed(ipvs=SAVE.replace("-w 1", "-w 0")),
                          RUNNING, view=view)
    assert [s.line() for s in plan.steps] == ["ip addr del 10.98.0.100/32 dev lo"]
    after = plan_bgp_start(CHECKED, FILES, observed(BARE, ipvs=SAVE.replace("-w 1", "-w 0")),
                           State.of(*[r for r in RUNNING.records() if r != VIP_ON_LO]),
                           view=view)
    assert after.steps == []


def test_a_sorry_server_keeps_the_vip_announced() -> None:
    sorry = parse_config(TEXT.replace('scheduler = "mh"', 'scheduler = "mh"\n'
                                      'sorry_server = "10.91.0.99"')
                         + '\n[service.check]\ntype = "tcp"\n', "/etc/lvs/lvs.toml")
    assert withdrawn_vips(sorry, health(("21", DOWN), ("22", DOWN))) == []
    assert withdrawn_vips(CHECKED, health(("21", DOWN), ("22", DOWN))) == [
        ipaddress.ip_address("10.98.0.100")]
    assert withdrawn_vips(CONFIG, health(("21", DOWN), ("22", DOWN))) == []  # unchecked
