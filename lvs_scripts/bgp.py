"""Active-active directors ([bgp]): every director holds the VIPs and announces them over
BGP to the routers, which spread the flows over all of them (ECMP); every director picks
the same real server for a flow (mh or sh), and sloppy TCP (SCTP) lets one take over a
flow that began on another.

On each director start adds the VIPs to `lo` (the routers reach them by route: no ARP,
no arping), the IPVS services, net.ipv4.vs.sloppy_tcp=1 (sloppy_sctp for SCTP services),
writes BIRD 2's config into the state directory and starts `bird -c CONF -s SOCKET -P
PIDFILE`. BIRD announces each VIP (/32, /128) on lo to every neighbor for as long as it is
there, so stop takes the VIPs off lo first and waits until BIRD has withdrawn them
(owned.withdraw_vips). lvs_scripts never speaks BGP itself. Everything here is pure but
the observation.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from typing import Any

from .errors import LvsError, shown_key
from .ha import DaemonFiles, daemon_state_dir, plan_file
from .healthstate import HealthView, target_id
from .locks import Paths
from .model import BgpConfig, Config, DirectorConfig, IPAddress, Protocol, VirtualService
from .owned import (
    BIRD_VIPS_PROTOCOL,
    AddressAdded,
    AddressRemoved,
    BirdStarted,
    SysctlChanged,
    add_vip_argv,
    undo_sysctl,
    vip_cidr,
    withdrawn_settle,
)
from .plan import Plan, Settle
from .probes import BgpSession, HostObservation
from .runner import Runner
from .state import State

BIRD_START_SECONDS = 15.0
# The IPVS settings that let a director take over a flow another one began: without them
# IPVS drops a mid-connection packet (no SYN) for which it holds no connection entry.
SLOPPY = {Protocol.TCP: "net.ipv4.vs.sloppy_tcp", Protocol.SCTP: "net.ipv4.vs.sloppy_sctp"}
# BIRD's config syntax quotes strings with "..." and no escapes we could trust: the paths
# we write into it are kept to these characters.
BGP_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established", "Close")


class BirdFiles(DaemonFiles):
    """BIRD's: its config, pid file and control socket."""

    @property
    def config_file(self) -> str:
        return self._path("bird.conf")

    @property
    def pid_file(self) -> str:
        return self._path("bird.pid")

    @property
    def socket(self) -> str:
        return self._path("bird.ctl")


def bird_files(paths: Paths) -> BirdFiles:
    return BirdFiles(daemon_state_dir(paths, "bgp", "BIRD"), paths.name)


def _bgp(config: Config) -> BgpConfig:
    if config.bgp is None:
        raise LvsError("no [bgp] table in the config")
    return config.bgp


def protocol_name(index: int) -> str:
    """BIRD's name of the session to bgp.neighbors[index]."""
    return f"bgp{index + 1}"


def sloppy_keys(config: Config) -> dict[str, int]:
    """The sysctls [bgp] sets, each to 1: sloppy_tcp for TCP services, sloppy_sctp for
    SCTP ones (UDP has no connection state to pick up)."""
    protocols = {s.key.protocol for s in config.services}
    return {key: 1 for protocol, key in SLOPPY.items() if protocol in protocols}


def bgp_view(config: Config) -> Config:
    """The config as the one-director planner sees it with [bgp]: the VIPs on lo, and no
    arping (the routers learn the VIPs from BGP, not from ARP)."""
    d = config.require_director()
    director = DirectorConfig(interface="lo", gateway=d.gateway, dip=d.dip,
                              dip_interface=d.dip_interface, timeouts=d.timeouts,
                              arping_count=0, allow_no_services=d.allow_no_services)
    return Config(path=config.path, director=director, realserver=config.realserver,
                  services=config.services, bgp=config.bgp)


# --- the router id and BIRD's config ---------------------------------------------------------

def router_id(config: Config, obs: HostObservation) -> ipaddress.IPv4Address | None:
    """This director's own IPv4 address on the interface that reaches the neighbors (the
    source `ip route get NEIGHBOR` picks, or an address on its device): every director
    has the same VIPs, so a VIP must never be the id. None if no neighbor is reachable."""
    vips = set(config.director_vips())
    for neighbor in _bgp(config).neighbors:
        route = obs.bgp.routes.get(neighbor.address)
        if route is None:
            continue
        device, source = route
        if isinstance(source, ipaddress.IPv4Address) and source not in vips:
            return source
        for address in obs.addresses:
            ip = address.interface.ip
            if address.device == device and isinstance(ip, ipaddress.IPv4Address) and (
                    ip not in vips):
                return ip
    return None


def bird_config(config: Config, rid: ipaddress.IPv4Address, files: BirdFiles) -> str:
    """BIRD 2's config: the VIPs on lo (direct protocol), exported to every neighbor of
    their family, nothing imported (the director needs no route from the routers)."""
    bgp = _bgp(config)
    vips = config.director_vips()
    families = sorted({v.version for v in vips}) or [4]
    lines = [
        f"# Generated by lvs-director from {shown_key(config.path)}: start rewrites it and",
        "# stop removes it. BIRD announces the VIPs on lo to the BGP neighbors for as long",
        "# as they are there.",
        f"router id {rid};",
        "",
        "protocol device {",
        "    scan time 10;",
        "}",
        "",
        f"protocol direct {BIRD_VIPS_PROTOCOL} {{",
        *(f"    ipv{family};" for family in families),
        '    interface "lo";',
        "}",
    ]
    for index, neighbor in enumerate(bgp.neighbors):
        family = neighbor.address.version
        own = [f"{vip}/{vip.max_prefixlen}" for vip in vips if vip.version == family]
        export = f"where net ~ [ {', '.join(own)} ]" if own else "none"
        lines += [
            "",
            f"protocol bgp {protocol_name(index)} {{",
            f'    description "neighbor {neighbor.address} AS {neighbor.asn}";',
            f"    local as {bgp.local_as};",
            f"    neighbor {neighbor.address} as {neighbor.asn};",
            f"    hold time {bgp.hold_time};",
            # Reconnect soon after the session dropped (BIRD's defaults: a connect retried
            # after 120 s, 60 s of rest after an error): a director whose link came back
            # takes its share of the flows again within seconds.
            "    connect retry time 5;",
            "    error wait time 5, 60;",
            f"    ipv{family} {{",
            "        import none;",
            f"        export {export};",
            "    };",
            "}",
        ]
    return "\n".join(lines) + "\n"


# --- the planner -------------------------------------------------------------------------------

def plan_bgp_start(config: Config, files: BirdFiles, obs: HostObservation, state: State,
                   drain: bool = True, view: HealthView | None = None) -> Plan:
    """start/reload of an active-active director: the one-director plan with the VIPs on
    lo, reordered so that a VIP leaving is withdrawn before its service goes and a VIP
    arriving is announced only once its service is there; the sloppy sysctls; BIRD."""
    from .plan_director import plan_director_start

    sloppy = Plan()
    _plan_sloppy(sloppy, config, obs, state)
    plan = plan_director_start(bgp_view(config), obs, state, drain, view)
    _keep_withdrawn_off(plan, config, view)
    plan_vip_health(plan, config, obs, state, view)
    plan = _withdraw_first(plan, state, obs, sloppy)
    rid = router_id(config, obs)
    if rid is None:
        plan.conflicts.append(
            "no route to any bgp.neighbors address (ip route get): BIRD needs this "
            "director's own address towards the neighbors as its router id; not started")
        return plan
    changed = plan_file(plan, files.config_file, bird_config(config, rid, files), "0644", obs,
                        "BIRD's config (the VIPs on lo, announced to the BGP neighbors)")
    _plan_bird(plan, files, obs, changed)
    return plan


def _withdraw_first(plan: Plan, state: State, obs: HostObservation, sloppy: Plan) -> Plan:
    """VIPs leaving lo first (and wait for BIRD to withdraw them), then the rest, the
    sloppy sysctls, then the VIPs arriving on lo: a route never points at a director
    without its service, or one that would drop the flows it takes over."""
    leaving = [s for s in plan.steps if isinstance(s.effect, AddressRemoved)
               and s.effect.device == "lo"]
    arriving = [s for s in plan.steps if isinstance(s.effect, AddressAdded)
                and s.effect.device == "lo"]
    rest = [s for s in plan.steps if s not in leaving and s not in arriving]
    if leaving and state.bird is not None and obs.bird is not None:
        last = leaving[-1]
        cidrs = [s.effect.cidr for s in leaving if isinstance(s.effect, AddressRemoved)]
        leaving[-1] = replace(last, settle=withdrawn_settle(state.bird, cidrs))
    plan.steps = leaving + rest + sloppy.steps + arriving
    plan.notes += sloppy.notes
    plan.forget += sloppy.forget
    return plan


def _plan_sloppy(plan: Plan, config: Config, obs: HostObservation, state: State) -> None:
    """sloppy_tcp (sloppy_sctp) = 1, remembering the value before for stop; one the config
    no longer needs (its last SCTP service gone) goes back at once."""
    wanted = sloppy_keys(config)
    for key, value in wanted.items():
        have = obs.sysctls.get(key)
        if have != value:
            plan.add(("sysctl", "-w", f"{key}={value}"), "IPVS takes up a flow begun on "
                     f"another director (was {have if have is not None else 'unknown'})",
                     SysctlChanged(key, have, value) if have is not None else None)
    for key, owned in state.sysctls.items():
        if key in SLOPPY.values() and key not in wanted:
            undo_sysctl(plan, obs, owned)


def _plan_bird(plan: Plan, files: BirdFiles, obs: HostObservation, changed: bool) -> None:
    """Start it if ours is not running; if it runs and its config changed, `birdc
    configure` (sessions whose settings did not change stay up); else leave it alone."""
    seen = obs.bird
    if seen is not None and seen.config_file == files.config_file:
        if changed:
            plan.add(("birdc", "-s", files.socket, "configure"),
                     "BIRD re-reads its changed config")
        return
    plan.add(("bird", "-c", files.config_file, "-s", files.socket, "-P", files.pid_file),
             "BIRD 2: announces the VIPs on lo to the BGP neighbors",
             BirdStarted(files.config_file, files.pid_file, files.socket),
             settle=Settle("BIRD has written its pid file", pid_file=files.pid_file,
                           seconds=BIRD_START_SECONDS))


# --- health: a VIP no real server serves is withdrawn --------------------------------------------

def serving(service: VirtualService, view: HealthView | None) -> bool:
    """Can the service take a connection: a real server neither down (its check failed)
    nor disabled, or a sorry server? A server not checked yet counts as up."""
    if service.sorry_server is not None:
        return True
    view = view or HealthView()
    for dest in service.destinations:
        key = target_id(service, dest)
        if not view.is_disabled(key) and not (service.check is not None
                                              and view.is_down(key)):
            return True
    return False


def withdrawn_vips(config: Config, view: HealthView | None) -> list[IPAddress]:
    """The VIPs none of whose services can take a connection: kept off lo, so that BIRD
    withdraws them and the routers send their flows to the directors that can."""
    return [vip for vip in config.director_vips() if not any(
        serving(s, view) for s in config.services if s.key.address == vip)]


def plan_vip_health(plan: Plan, config: Config, obs: HostObservation, state: State,
                    view: HealthView | None) -> None:
    """The VIPs on lo as health says: off while no real server of theirs is up (only one
    we added: the state file owns it), back once one is. The watcher's part of [bgp],
    also planned by start and reload so that they never announce a VIP nobody serves."""
    down = set(withdrawn_vips(config, view))
    for vip in config.director_vips():
        cidr = vip_cidr(vip)
        on_lo = obs.has_address("lo", vip)
        if vip in down and on_lo and state.owns_address("lo", cidr):
            plan.add(("ip", "addr", "del", cidr, "dev", "lo"), f"withdraw {vip}: no real "
                     "server of its services is up", AddressRemoved("lo", cidr))
        elif vip not in down and not on_lo and not any(
                isinstance(s.effect, AddressAdded) and s.effect.cidr == cidr
                for s in plan.steps):
            plan.add(add_vip_argv(vip, "lo"), f"announce {vip} again: a real server is up",
                     AddressAdded("lo", cidr))


def _keep_withdrawn_off(plan: Plan, config: Config, view: HealthView | None) -> None:
    """start/reload: no VIP on lo while none of its real servers is up."""
    down = {vip_cidr(vip) for vip in withdrawn_vips(config, view)}
    plan.steps = [s for s in plan.steps if not (isinstance(s.effect, AddressAdded)
                                                and s.effect.device == "lo"
                                                and s.effect.cidr in down)]
    if down:
        plan.notes.append(f"not announced while no real server of theirs is up: "
                          f"{', '.join(sorted(down))}")


# --- observation -------------------------------------------------------------------------------

def route_get_argv(address: IPAddress) -> tuple[str, ...]:
    return ("ip", "-o", "route", "get", str(address))


_ROUTE_DEV = re.compile(r"\bdev (\S+)")
_ROUTE_SRC = re.compile(r"\bsrc (\S+)")


def parse_route_get(text: str) -> tuple[str, IPAddress | None] | None:
    """`ip -o route get ADDR`: `10.91.0.1 dev eth0 src 10.91.0.11 uid 0 \\    cache`.
    (device, source address), or None if it names no device."""
    dev = _ROUTE_DEV.search(text)
    if dev is None:
        return None
    src = _ROUTE_SRC.search(text)
    try:
        source = ipaddress.ip_address(src.group(1)) if src else None
    except ValueError:
        source = None
    return dev.group(1), source


def observe_bgp(config: Config, files: BirdFiles, runner: Runner, tolerant: bool,
                obs: HostObservation, state: State) -> None:
    """The route to each neighbor (for the router id), the sloppy sysctls, our files and
    our BIRD (its pid file naming a live `bird -c OUR_CONFIG`)."""
    from .errors import CommandFailed, MissingTool
    from .observe import Observer, observe_bird, observe_files, observe_sysctls

    for neighbor in _bgp(config).neighbors:
        try:
            result = runner.run(route_get_argv(neighbor.address), check=False)
        except MissingTool:
            if not tolerant:
                raise
            continue
        route = parse_route_get(result.stdout) if result.returncode == 0 else None
        if route is not None:
            obs.bgp.routes[neighbor.address] = route
    keys = list(sloppy_keys(config))
    keys += [key for key in state.sysctls if key in SLOPPY.values() and key not in keys]
    try:
        observe_sysctls(Observer(runner, tolerant), obs, keys)
    except CommandFailed as err:
        # net.ipv4.vs.* exist once ip_vs is loaded (ipvsadm loads it as it lists the
        # table); a dry run on a host without IPVS has none.
        if not tolerant:
            raise
        obs.notes.append(f"{err}; planned as if the sloppy settings were 0")
        obs.sysctls.update({key: 0 for key in keys})
    observe_files(obs, [files.config_file])
    observe_bird(obs, files.pid_file, files.config_file)


def birdc_argv(files: BirdFiles, *command: str) -> tuple[str, ...]:
    return ("birdc", "-s", files.socket, *command)


def parse_protocols(text: str) -> dict[str, BgpSession]:
    """`birdc show protocols`: the BGP rows (Name Proto Table State Since Info), e.g.
    `bgp1       BGP        ---        up     03:12:40.337  Established`. The Since column
    may hold a date and a time; the BGP state is the first word of Info."""
    sessions: dict[str, BgpSession] = {}
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) < 4 or tokens[1] != "BGP":
            continue
        rest = tokens[4:]
        at = next((i for i, word in enumerate(rest) if word in BGP_STATES), None)
        info = " ".join(rest[at:]) if at is not None else ""
        sessions[tokens[0]] = BgpSession(tokens[3], info)
    return sessions


def parse_routes(text: str) -> tuple[str, ...]:
    """`birdc show route ...`: the prefixes listed (a route line starts with its prefix;
    further routes of one prefix, and their attributes, are indented)."""
    found: list[str] = []
    for line in text.splitlines():
        if not line or line[0].isspace():
            continue
        word = line.split()[0]
        if "/" not in word:
            continue
        try:
            network = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue
        if str(network) not in found:
            found.append(str(network))
    return tuple(found)


def observe_sessions(config: Config, files: BirdFiles, runner: Runner, obs: HostObservation
                     ) -> None:
    """For status: each session's state and what BIRD exports to it (`birdc`)."""
    from .errors import MissingTool

    if obs.bird is None:
        return
    try:
        result = runner.run(birdc_argv(files, "show", "protocols"), check=False)
        if result.returncode != 0:
            obs.notes.append(f"birdc could not reach BIRD: {result.stdout.strip()}"
                             f"{result.stderr.strip()}")
            return
        obs.bgp.sessions = parse_protocols(result.stdout)
        for index in range(len(_bgp(config).neighbors)):
            name = protocol_name(index)
            export = runner.run(birdc_argv(files, "show", "route", "export", name),
                                check=False)
            if export.returncode == 0:
                obs.bgp.exported[name] = parse_routes(export.stdout)
    except MissingTool as err:
        obs.notes.append(f"{err}: the BGP sessions cannot be shown")


# --- status --------------------------------------------------------------------------------------

def describe_bgp(config: Config, obs: HostObservation) -> tuple[list[str], dict[str, Any]]:
    bgp = _bgp(config)
    running = obs.bird is not None
    vips = [vip_cidr(v) for v in config.director_vips()]
    on_lo = [cidr for cidr, vip in zip(vips, config.director_vips())
             if obs.has_address("lo", vip)]
    rid = router_id(config, obs)
    sessions: list[dict[str, Any]] = []
    lines = [f"bgp: AS {bgp.local_as}, router id {rid or 'unknown'}; BIRD "
             f"{'running' if running else 'not running'}; {len(on_lo)} of {len(vips)} "
             "VIP(s) on lo"]
    for index, neighbor in enumerate(bgp.neighbors):
        name = protocol_name(index)
        session = obs.bgp.sessions.get(name)
        exported = list(obs.bgp.exported.get(name, ()))
        state = (session.info or session.state) if session else (
            "unknown" if running else "down")
        sessions.append({"neighbor": str(neighbor.address), "as": neighbor.asn,
                         "protocol": name, "state": state,
                         "established": bool(session and session.established),
                         "announced": exported})
        lines.append(f"  bgp {name} neighbor {neighbor.address} AS {neighbor.asn}: {state}; "
                     f"announces {', '.join(exported) or 'nothing'}")
    data = {"local_as": bgp.local_as, "router_id": None if rid is None else str(rid),
            "bird": running, "vips_on_lo": on_lo, "sessions": sessions,
            "established": bool(sessions) and all(s["established"] for s in sessions)}
    return lines, data
