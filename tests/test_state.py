"""The state file: version 2 round trips, version 1 files from released versions, the
table of owned kinds (every effect recorded, simulated and undone), and trust."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lvs_scripts import owned as owned_module
from lvs_scripts.errors import StateError
from lvs_scripts.locks import Paths
from lvs_scripts.model import Protocol, ServiceKey, Timeouts
from lvs_scripts.nft import NftTable
from lvs_scripts.owned import (
    EFFECTS,
    AddressAdded,
    AddressRemoved,
    Announced,
    BirdStarted,
    BirdStopped,
    Effect,
    FileRemoved,
    FileWritten,
    FouAdded,
    FouRemoved,
    KeepalivedAddresses,
    KeepalivedStarted,
    KeepalivedStopped,
    LinkCreated,
    LinkReleased,
    LinkUp,
    NftTableCreated,
    NftTableDeleted,
    OwnedAddress,
    OwnedBird,
    OwnedFile,
    OwnedFou,
    OwnedKeepalived,
    OwnedLink,
    OwnedNftTable,
    OwnedRoute,
    OwnedService,
    OwnedSyncDaemon,
    OwnedSysctl,
    OwnedTimeouts,
    RouteReleased,
    RouteSet,
    ServiceCreated,
    ServiceDeleted,
    SyncDaemonStarted,
    SyncDaemonStopped,
    SysctlChanged,
    SysctlRestored,
    TimeoutsRestored,
    TimeoutsSet,
    plan_undo,
)
from lvs_scripts.plan import Plan
from lvs_scripts.probes import (
    BirdSeen,
    KeepalivedSeen,
    Link,
    Route,
    SyncDaemon,
    parse_default_routes,
)
from lvs_scripts.state import STATE_VERSION, State, load_state, save_state
from lvs_scripts.tunnel import FouPort
from tests.fakes.fakehost import FakeHost
from tests.hosts import addr_lines, host, link_lines

ROOT = Path(__file__).resolve().parent.parent
V1 = ROOT / "tests" / "data" / "state-v1"


def route(text: str, family: int = 4) -> Route:
    return parse_default_routes(text, family)[0]


def tcp(address: str, port: int) -> ServiceKey:
    return ServiceKey(Protocol.TCP, ipaddress.ip_address(address), port)


HTTP = tcp("192.168.30.254", 80)
DNS = ServiceKey(Protocol.UDP, ipaddress.ip_address("192.168.30.253"), 53)
MARK6 = ServiceKey(Protocol.FWMARK, None, 7, ipv6=True)
OLD_ROUTE = route("default via 10.9.9.1 dev eth0 proto static metric 100 onlink")
OUR_ROUTE = route("default via 192.168.30.1 metric 100")
FULL = State.of(
    OwnedAddress("eth1", "10.9.0.5/24", "dip"),
    OwnedAddress("eth0", "192.168.30.254/32", "vip", announced=True),
    OwnedAddress("lo", "2001:db8::10/128"),
    OwnedRoute(4, OUR_ROUTE, OLD_ROUTE),
    OwnedService(HTTP, 12), OwnedService(DNS), OwnedService(MARK6, 0),
    OwnedSysctl("net.ipv4.conf.all.arp_ignore", 0, 1),
    OwnedSysctl("net/ipv4/conf/eth0.100/arp_announce", 0, 2),
    OwnedTimeouts(Timeouts(900, 120, 300), Timeouts(30, 0, 60)),
    OwnedKeepalived("/run/l/k.conf", "/run/l/k.pid", "/run/l/v.pid",
                    (("eth0", "192.168.30.254/32"), ("eth0", "2001:db8::254/128"))),
    OwnedSyncDaemon(SyncDaemon("master", "eth1", 51)),
    OwnedSyncDaemon(SyncDaemon("backup", "eth1", 51)),
    OwnedFile("/run/l/k.conf", "a" * 64),
    OwnedNftTable("ip"),
    OwnedLink("tunl0", True), OwnedLink("gre0", False), OwnedFou(6080, 4),
    OwnedBird("/run/l/b.conf", "/run/l/b.pid", "/run/l/b.ctl"))
SYNC = SyncDaemon("master", "eth1", 51)
KEEPALIVED = OwnedKeepalived("/run/l/k.conf", "/run/l/k.pid", "/run/l/v.pid")
BIRD = OwnedBird("/run/l/b.conf", "/run/l/b.pid", "/run/l/b.ctl")


# ------------------------------------------------------------------ the table of kinds

# Every effect, with a state it applies to and what it must leave there.
EFFECT_CASES: list[tuple[Effect, State, list[Any]]] = [
    (AddressAdded("eth0", "192.168.30.9/32"), State(),
     [OwnedAddress("eth0", "192.168.30.9/32")]),
    (AddressRemoved("eth0", "192.168.30.9/32"), State.of(OwnedAddress("eth0", "192.168.30.9/32")),
     []),
    (Announced("eth0", "192.168.30.9/32"), State.of(OwnedAddress("eth0", "192.168.30.9/32")),
     [OwnedAddress("eth0", "192.168.30.9/32", announced=True)]),
    (RouteSet(4, OUR_ROUTE, OLD_ROUTE), State(), [OwnedRoute(4, OUR_ROUTE, OLD_ROUTE)]),
    (RouteReleased(OUR_ROUTE, OLD_ROUTE), State.of(OwnedRoute(4, OUR_ROUTE, OLD_ROUTE)), []),
    (ServiceCreated(DNS, 9), State(), [OwnedService(DNS, 9)]),
    (ServiceDeleted(HTTP), State.of(OwnedService(HTTP)), []),
    (SysctlChanged("net.ipv4.conf.all.arp_ignore", 0, 1), State(),
     [OwnedSysctl("net.ipv4.conf.all.arp_ignore", 0, 1)]),
    (SysctlRestored("net.ipv4.conf.all.arp_ignore", 0),
     State.of(OwnedSysctl("net.ipv4.conf.all.arp_ignore", 0, 1)), []),
    (TimeoutsSet(Timeouts(900, 120, 300), Timeouts(30, 5, 60)), State(),
     [OwnedTimeouts(Timeouts(900, 120, 300), Timeouts(30, 5, 60))]),
    (TimeoutsRestored(Timeouts(900, 120, 300)),
     State.of(OwnedTimeouts(Timeouts(900, 120, 300))), []),
    (FileWritten("/run/l/k.conf", "b" * 64), State(), [OwnedFile("/run/l/k.conf", "b" * 64)]),
    (FileRemoved("/run/l/k.conf"), State.of(OwnedFile("/run/l/k.conf", "b" * 64)), []),
    (KeepalivedStarted("/run/l/k.conf", "/run/l/k.pid", "/run/l/v.pid"), State(),
     [KEEPALIVED]),
    (KeepalivedStopped(), State.of(KEEPALIVED), []),
    (KeepalivedAddresses((("eth0", "10.0.0.9/32"),)),
     State.of(OwnedKeepalived("/run/l/k.conf", "/run/l/k.pid", "/run/l/v.pid")),
     [OwnedKeepalived("/run/l/k.conf", "/run/l/k.pid", "/run/l/v.pid",
                      (("eth0", "10.0.0.9/32"),))]),
    (KeepalivedAddresses((("eth0", "10.0.0.9/32"),)), State(), []),
    (SyncDaemonStarted(SYNC), State(), [OwnedSyncDaemon(SYNC)]),
    (SyncDaemonStopped("master"), State.of(OwnedSyncDaemon(SYNC)), []),
    (NftTableCreated("ip6"), State(), [OwnedNftTable("ip6")]),
    (NftTableDeleted("ip"), State.of(OwnedNftTable("ip")), []),
    (LinkCreated("ip6tnl0"), State(), [OwnedLink("ip6tnl0", True)]),
    (LinkUp("gre0"), State(), [OwnedLink("gre0", False)]),
    (LinkUp("tunl0"), State.of(OwnedLink("tunl0", True)), [OwnedLink("tunl0", True)]),
    (LinkReleased("tunl0"), State.of(OwnedLink("tunl0", True)), []),
    (FouAdded(6080, 6), State(), [OwnedFou(6080, 6)]),
    (FouRemoved(6080), State.of(OwnedFou(6080, 4)), []),
    (BirdStarted("/run/l/b.conf", "/run/l/b.pid", "/run/l/b.ctl"), State(), [BIRD]),
    (BirdStopped(), State.of(BIRD), []),
]


def test_every_effect_kind_is_in_the_table_and_has_a_case() -> None:
    """A new kind of change must be declared in EFFECTS (and so get a case here): the
    effects defined in owned.py are exactly those."""
    defined = {obj for obj in vars(owned_module).values()
               if isinstance(obj, type) and issubclass(obj, Effect) and obj is not Effect}
    assert defined == set(EFFECTS)
    assert {type(effect) for effect, _, _ in EFFECT_CASES} == set(EFFECTS)


@pytest.mark.parametrize(("effect", "before", "after"), EFFECT_CASES,
                         ids=[type(e).__name__ for e, _, _ in EFFECT_CASES])
def test_each_effect_records_in_its_slot_and_rolls_back(effect: Effect, before: State,
                                                         after: list[Any]) -> None:
    state = State.from_json(before.to_json(), "copy")
    old = state.get(effect.slot())
    effect.record(state)
    assert state.records() == after
    state.put(effect.slot(), old)  # what apply does when a write-ahead command failed
    assert state == before


@pytest.mark.parametrize("effect", [e for e, _, _ in EFFECT_CASES],
                         ids=[type(e).__name__ for e, _, _ in EFFECT_CASES])
def test_each_effect_simulates_what_its_command_does_to_the_host(effect: Effect) -> None:
    obs = host(link_lines("lo", "eth0"), addr_lines(("eth0", "192.168.30.9/32")),
               routes="default via 10.9.9.1 dev eth0 proto static metric 100 onlink",
               ipvs="-A -t 192.168.30.254:80 -s wrr\n", timeouts="Timeout (tcp tcpfin udp): "
               "45 5 60\n", sysctls={"net.ipv4.conf.all.arp_ignore": 5})
    obs.sync_daemons = {"master": SyncDaemon("master", "eth1", 9)}  # an older one
    obs.keepalived = KeepalivedSeen(77, "/run/l/k.conf")
    obs.bird = BirdSeen(88, "/run/l/b.conf")
    obs.files = {"/run/l/k.conf": "a" * 64}
    obs.nft = {"ip": NftTable("ip", ())}
    obs.links["tunl0"] = Link("tunl0", False)  # down (gre0 and ip6tnl0 do not exist)
    obs.tunnels.fou = {FouPort(6080, 4)}
    before = json.dumps(repr(obs))
    effect.simulate(obs)
    changed = json.dumps(repr(obs)) != before
    # ARP changes other hosts only; a record of keepalived's VIPs changes no host
    assert changed == (not isinstance(effect, (Announced, KeepalivedAddresses)))


def test_only_additions_are_written_ahead() -> None:
    assert {e.__name__ for e in EFFECTS if e.write_ahead} == {
        "AddressAdded", "RouteSet", "ServiceCreated", "SysctlChanged", "TimeoutsSet",
        "FileWritten", "KeepalivedStarted", "SyncDaemonStarted", "NftTableCreated",
        "LinkCreated", "LinkUp", "FouAdded", "BirdStarted"}


def test_every_owned_kind_is_undone_by_stop_and_shown() -> None:
    """Each record of a state holding every kind leads to a command (or a dropped record)
    and a line of its own in status."""
    obs = host(link_lines("lo", "eth0", "eth1", "eth0.100", "tunl0", "gre0"),
               addr_lines(("eth1", "10.9.0.5/24"), ("eth0", "192.168.30.254/32"),
                          ("lo", "2001:db8::10/128")),
               routes="default via 192.168.30.1 dev eth0 metric 100",
               ipvs="-A -t 192.168.30.254:80 -s wrr\n-A -u 192.168.30.253:53 -s rr\n"
                    "-A -f 7 -6 -s rr\n",
               timeouts="Timeout (tcp tcpfin udp): 30 120 60\n",
               sysctls={"net.ipv4.conf.all.arp_ignore": 1,
                        "net/ipv4/conf/eth0.100/arp_announce": 2})
    obs.sync_daemons = {"master": SYNC, "backup": SyncDaemon("backup", "eth1", 51)}
    obs.keepalived = KeepalivedSeen(77, "/run/l/k.conf")
    obs.bird = BirdSeen(88, "/run/l/b.conf")
    obs.files = {"/run/l/k.conf": "a" * 64}
    obs.nft = {"ip": NftTable("ip", ())}
    obs.tunnels.fou = {FouPort(6080, 4)}
    plan = Plan()
    plan_undo(plan, obs, FULL)
    assert [s.line() for s in plan.steps] == [
        # [bgp]: the VIPs on lo first, BIRD withdraws them, then BIRD goes.
        "ip addr del 2001:db8::10/128 dev lo", "kill -TERM 88",
        "kill -TERM 77", "ipvsadm --stop-daemon master", "ipvsadm --stop-daemon backup",
        "ipvsadm -D -t 192.168.30.254:80", "ipvsadm -D -u 192.168.30.253:53",
        "ipvsadm -D -f 7 -6", "nft delete table ip lvs_scripts",
        "ip addr del 192.168.30.254/32 dev eth0",
        "ip route replace default via 10.9.9.1 dev eth0 proto static metric 100 onlink",
        "ip addr del 10.9.0.5/24 dev eth1",
        "ip fou del port 6080", "ip link del dev tunl0", "ip link set dev gre0 down",
        "sysctl -w net.ipv4.conf.all.arp_ignore=0",
        "sysctl -w net/ipv4/conf/eth0.100/arp_announce=0",
        "ipvsadm --set 900 120 300", "rm -f /run/l/k.conf"]
    after = State.from_json(FULL.to_json(), "copy")
    for effect in [s.effect for s in plan.steps if s.effect] + plan.forget:
        effect.record(after)
    assert after.empty()
    assert len(FULL.describe()) == len(FULL.records()) == 19


# ------------------------------------------------------------------ the file, version 5

def test_version_5_round_trips_every_kind() -> None:
    text = FULL.to_json()
    assert json.loads(text)["version"] == 5
    assert State.from_json(text, "f") == FULL


def test_a_version_4_file_is_read_and_upgraded() -> None:
    """A file written before keepalived's record kept its VIPs: the record without them
    (start or reload fills them in)."""
    data = json.loads(FULL.to_json())
    del data["keepalived"]["addresses"]
    data["version"] = 4
    state = State.from_json(json.dumps(data), "v4")
    assert state.upgraded_from == 4
    assert state.keepalived == OwnedKeepalived("/run/l/k.conf", "/run/l/k.pid", "/run/l/v.pid")
    assert [r for r in state.records() if not isinstance(r, OwnedKeepalived)] == [
        r for r in FULL.records() if not isinstance(r, OwnedKeepalived)]


def test_a_version_2_file_is_read_and_upgraded() -> None:
    """A file written before [ha] (no files, keepalived or sync daemons) is read as is."""
    data = json.loads(FULL.to_json())
    for key in ("files", "keepalived", "sync_daemons", "nft_tables", "links", "fous", "bird"):
        del data[key]
    data["version"] = 2
    state = State.from_json(json.dumps(data), "v2")
    assert state.upgraded_from == 2
    assert state.records() == [r for r in FULL.records() if not isinstance(
        r, (OwnedFile, OwnedKeepalived, OwnedSyncDaemon, OwnedNftTable, OwnedLink, OwnedFou,
            OwnedBird))]


def test_a_version_3_file_is_read_and_upgraded() -> None:
    """A file written before fwmark services, TUN real servers and [bgp] (no nftables
    tables, no links, no GUE ports, no BIRD) is read as is."""
    data = json.loads(FULL.to_json())
    for key in ("nft_tables", "links", "fous", "bird"):
        del data[key]
    del data["keepalived"]["addresses"]
    data["version"] = 3
    state = State.from_json(json.dumps(data), "v3")
    assert state.upgraded_from == 3
    assert state.records() == [KEEPALIVED if isinstance(r, OwnedKeepalived) else r
                               for r in FULL.records() if not isinstance(
                                   r, (OwnedNftTable, OwnedLink, OwnedFou, OwnedBird))]


def test_services_are_stored_by_structure_not_by_their_display_text() -> None:
    data = json.loads(FULL.to_json())
    assert data["services"][2] == {"protocol": "fwmark", "address": None, "port": 7,
                                   "ipv6": True, "drain_seconds": 0}


CORRUPT = [
    ({"version": 6}, "unknown version 6"),
    ({**json.loads(FULL.to_json()), "keepalived": {
        "config_file": "/run/l/k.conf", "pid_file": "/run/l/k.pid",
        "vrrp_pid_file": "/run/l/v.pid"}}, "no addresses"),
    ({**json.loads(FULL.to_json()), "keepalived": {
        "config_file": "/run/l/k.conf", "pid_file": "/run/l/k.pid",
        "vrrp_pid_file": "/run/l/v.pid",
        "addresses": [{"device": "eth0", "cidr": "192.168.30.254"}]}},
     "keepalived.addresses[0].cidr"),
    ({**json.loads(FULL.to_json()), "nft_tables": [{"family": "inet"}]},
     "nft_tables[0].family"),
    ({"version": 4}, "no nft_tables"),
    ({**json.loads(FULL.to_json()), "links": [{"name": "tunl0 x", "created": True}]},
     "links[0].name"),
    ({**json.loads(FULL.to_json()), "fous": [{"port": 0, "family": 4}]}, "fous[0].port"),
    ({"version": 2}, "state"),
    ({"version": 3}, "no files"),
    ({**{k: v for k, v in json.loads(FULL.to_json()).items() if k != "bird"}}, "no bird"),
    ({**json.loads(FULL.to_json()), "bird": {"config_file": "/run/l/b.conf",
                                             "pid_file": "/run/l/b.pid",
                                             "socket": "b.ctl"}}, "bird.socket"),
    ({**json.loads(FULL.to_json()), "files": [{"path": "../etc/passwd", "digest": "a" * 64}]},
     "files[0].path"),
    ({**json.loads(FULL.to_json()), "sync_daemons": [{"state": "both", "interface": "eth1",
                                                      "syncid": 1}]}, "sync_daemons[0].state"),
    ("[]", "not a JSON object"),
    ({**json.loads(FULL.to_json()), "addresses": [{"device": "eth0; rm", "cidr": "1.2.3.4/32",
                                                   "purpose": "vip", "announced": False}]},
     "addresses[0].device"),
    ({**json.loads(FULL.to_json()), "services": [{"protocol": "tcp", "address": "x",
                                                  "port": 80, "ipv6": False,
                                                  "drain_seconds": 1}]}, "address"),
    ({**json.loads(FULL.to_json()), "sysctls": [{"key": "kernel.core_pattern", "previous": 0,
                                                 "value": 1}]}, "sysctls[0].key"),
    ({**json.loads(FULL.to_json()), "route": {"family": 4, "ours": None, "previous": {
        "via": "2001:db8::1", "dev": None, "metric": 0, "onlink": False, "proto": None,
        "scope": None, "src": None}}}, "route.previous"),
]


@pytest.mark.parametrize(("data", "named"), CORRUPT)
def test_a_corrupt_file_is_refused_naming_what_is_wrong(data: Any, named: str) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(StateError, match="state file is corrupt") as caught:
        State.from_json(text, "/run/lvs-scripts/lvs-director.json")
    assert named in str(caught.value)


# ------------------------------------------------------------------ version 1 files

def test_version_1_director_file_is_read_as_typed_records() -> None:
    state = State.from_json((V1 / "director" / "lvs-director.json").read_text(), "v1")
    assert state.upgraded_from == 1
    assert state == State.of(
        OwnedAddress("eth1", "10.9.0.5/24", "dip"),
        OwnedAddress("eth0", "192.168.30.254/32", "vip", announced=True),
        OwnedAddress("eth0", "192.168.30.253/32", "vip", announced=True),
        OwnedRoute(4, route("default via 192.168.30.1"),
                   route("default via 192.168.30.200 dev eth0")),
        OwnedService(HTTP), OwnedService(DNS),
        OwnedTimeouts(Timeouts(900, 120, 300)))


def test_version_1_file_from_before_announcements_were_kept() -> None:
    state = State.from_json(
        (V1 / "director" / "lvs-director.before-announced.json").read_text(), "v1")
    assert all(not a.announced for a in state.addresses.values())
    assert set(state.services) == {HTTP, DNS}


def test_version_1_realserver_file_knows_the_values_it_had_set() -> None:
    state = State.from_json((V1 / "realserver" / "lvs-realserver.json").read_text(), "v1")
    assert state.sysctls == {
        key: OwnedSysctl(key, 0, 1 if key.endswith("ignore") else 2)
        for key in ("net.ipv4.conf.all.arp_announce", "net.ipv4.conf.all.arp_ignore",
                    "net.ipv4.conf.eth0.arp_announce", "net.ipv4.conf.eth0.arp_ignore")}
    assert list(state.addresses) == [("lo", "192.168.30.254/32"), ("lo", "192.168.30.253/32")]


def test_version_1_fwmark_and_ipv6_services_are_read() -> None:
    text = json.dumps({"version": 1, "addresses": [], "route": None, "sysctls": {},
                       "timeouts": None, "announced": [],
                       "services": ["fwmark 7 (IPv6)", "tcp [2001:db8::10]:443"]})
    assert set(State.from_json(text, "v1").services) == {
        MARK6, tcp("2001:db8::10", 443)}


def _kernel(fake: FakeHost) -> dict[str, Any]:
    """What a run may change and stop must put back (links may stay up: stop never downs
    an interface)."""
    return {"addresses": fake.addresses(), "routes": fake.routes(), "ipvs": fake.ipvs_save(),
            "timeouts": fake.timeouts(), "sysctl": fake.sysctls()}


@pytest.mark.parametrize("role", ["director", "realserver"])
@pytest.mark.parametrize("with_config", [True, False], ids=["config", "config-removed"])
def test_a_host_set_up_by_release_0_1_stops_cleanly(tmp_path: Path, role: str,
                                                    with_config: bool) -> None:
    """The fake host as lvs_scripts 0.1 left it after start, with 0.1's state file: this
    version's stop reads the file, upgrades it, and puts the host back as it was."""
    data = V1 / role
    before = FakeHost(tmp_path / "before")
    shutil.copy(data / "host-before.json", before.state_path)
    fake = FakeHost(tmp_path / "host")
    shutil.copy(data / "host-after-start.json", fake.state_path)
    state_dir = tmp_path / "run"
    state_dir.mkdir(mode=0o755)
    shutil.copy(data / f"lvs-{role}.json", state_dir / f"lvs-{role}.json")
    config = data / "lvs.toml" if with_config else tmp_path / "gone.toml"
    env = {**fake.env, "LVS_STATE_DIR": str(state_dir), "LVS_LOCK_DIR": str(tmp_path / "lock"),
           "LVS_SYSLOG": "0"}
    ran = subprocess.run([str(ROOT / "bin" / f"lvs-{role}"), "-c", str(config), "stop"],
                         env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert ran.returncode == 0, ran.stderr
    assert _kernel(fake) == _kernel(before)
    assert not (state_dir / f"lvs-{role}.json").exists()


def test_the_next_change_rewrites_a_version_1_file_as_the_current_version(tmp_path: Path) -> None:
    data = V1 / "director"
    fake = FakeHost(tmp_path / "host")
    shutil.copy(data / "host-after-start.json", fake.state_path)
    state_dir = tmp_path / "run"
    state_dir.mkdir(mode=0o755)
    state_file = state_dir / "lvs-director.json"
    shutil.copy(data / "lvs-director.json", state_file)
    env = {**fake.env, "LVS_STATE_DIR": str(state_dir), "LVS_LOCK_DIR": str(tmp_path / "lock"),
           "LVS_SYSLOG": "0"}
    argv = [str(ROOT / "bin" / "lvs-director"), "-c", str(data / "lvs.toml")]
    status = subprocess.run([*argv, "status"], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(state_file.read_text())["version"] == 1  # status only reads
    start = subprocess.run([*argv, "start"], env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    assert start.returncode == 0, start.stderr
    assert start.stdout == "lvs-director start: nothing to do\n"
    upgraded = json.loads(state_file.read_text())
    assert upgraded["version"] == STATE_VERSION == 5
    assert State.from_json(state_file.read_text(), "v2") == State.from_json(
        (data / "lvs-director.json").read_text(), "v1")


# ------------------------------------------------------------------ whom to trust

def _paths(tmp_path: Path) -> Paths:
    state_dir = tmp_path / "run"
    state_dir.mkdir(mode=0o755, exist_ok=True)
    return Paths("lvs-director", str(state_dir), str(tmp_path / "lock"))


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775])
def test_a_state_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    paths = _paths(tmp_path)
    save_state(paths, FULL)
    os.chmod(paths.state_dir, mode)
    with pytest.raises(StateError, match="writable by other users") as caught:
        load_state(paths)
    assert paths.state_dir in str(caught.value)
    with pytest.raises(StateError, match="writable by other users"):
        save_state(paths, FULL)


def test_a_state_file_others_can_write_is_refused(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    save_state(paths, FULL)
    os.chmod(paths.state_file, 0o666)  # noqa: S103 - the point of the test
    with pytest.raises(StateError, match=f"{paths.state_file}: writable by other users"):
        load_state(paths)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_state_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    save_state(paths, FULL)
    os.chown(paths.state_file, 65534, 65534)
    with pytest.raises(StateError, match="owned by uid 65534"):
        load_state(paths)
    os.chown(paths.state_file, 0, 0)
    os.chown(paths.state_dir, 65534, 65534)
    with pytest.raises(StateError, match="owned by uid 65534"):
        load_state(paths)


def test_a_trusted_state_directory_and_file_are_read(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    save_state(paths, FULL)
    assert load_state(paths) == FULL


def test_state_file_of_a_stopped_host_is_removed(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    save_state(paths, FULL)
    save_state(paths, State())
    assert not os.path.exists(paths.state_file)
    assert load_state(paths) == State()

