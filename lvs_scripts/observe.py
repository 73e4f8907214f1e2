"""Run the read-only probes a role needs, through the one executor."""

from __future__ import annotations

from typing import Callable, TypeVar

from .errors import ConfigError, IpvsDenied, MissingTool
from .model import Config
from .pids import running_with
from .probes import (
    ARPING_VERSION,
    IP_ADDRS,
    IP_LINKS,
    IPVS_DAEMONS,
    IPVS_SAVE,
    IPVS_TIMEOUTS,
    HostObservation,
    Route,
    interface_of_sysctl,
    ip_default_routes,
    parse_arping_version,
    parse_default_routes,
    parse_ip_addrs,
    parse_ip_links,
    parse_ipvs_save,
    parse_sync_daemons,
    parse_sysctl_values,
    parse_timeouts,
    sysctl_read,
)
from .runner import Runner
from .state import State

T = TypeVar("T")


class Observer:
    """tolerant=True (dry run): a missing tool or kernel feature, or an IPVS table this user
    may not read, is noted and planned around as if nothing were configured. tolerant=False
    (real run, status): it is an error (LSB 5; 4 for the table that could not be read)."""

    def __init__(self, runner: Runner, tolerant: bool) -> None:
        self.runner = runner
        self.tolerant = tolerant
        self.missing: set[str] = set()  # programs (or kernel parts) found missing so far

    def probe(self, obs: HostObservation, argv: tuple[str, ...], parse: Callable[[str], T],
              default: T) -> T:
        try:
            return parse(self.runner.run(argv).stdout)
        except MissingTool as err:
            if not self.tolerant:
                raise
            self.missing.add(err.program)
            obs.notes.append(f"{err}; planned as if nothing were configured there")
            return default
        except IpvsDenied as err:
            if not self.tolerant:
                raise
            self.missing.add(err.program)
            obs.notes.append(f"{err.what} (ipvsadm said: {err.said}); this plan assumes "
                             "the table holds no services and the kernel's timeouts are "
                             "unknown: run as root for the real plan")
            return default


def require_interfaces(config: Config, obs: HostObservation, names: dict[str, str],
                       tolerant: bool) -> None:
    """Interfaces the config names must exist here, or the plan would fail half-way."""
    if not obs.links:
        return  # `ip` itself could not run (dry run): nothing to check against
    for key, name in names.items():
        if name not in obs.links:
            if tolerant:
                obs.notes.append(f"{key} = {name!r}: no such interface on this host")
                continue
            raise ConfigError(config.path, key, name, "no such interface on this host")


def observe_director(config: Config, runner: Runner, tolerant: bool,
                     state: State | None = None) -> HostObservation:
    director = config.require_director()
    obs = HostObservation()
    o = Observer(runner, tolerant)
    obs.links = o.probe(obs, IP_LINKS, parse_ip_links, {})
    names = {"director.interface": director.interface}
    if director.dip_interface:
        names["director.dip_interface"] = director.dip_interface
    if config.ha is not None:
        names["ha.interface"] = config.ha.interface
    require_interfaces(config, obs, names, tolerant)
    obs.addresses = o.probe(obs, IP_ADDRS, parse_ip_addrs, [])
    families: set[int] = set()
    if director.gateway is not None:
        families.add(director.gateway.version)
    if state is not None and state.route is not None:
        families.add(state.route.family)
    _routes(o, obs, families)
    obs.ipvs = o.probe(obs, IPVS_SAVE, parse_ipvs_save, {})
    wants_timeouts = director.timeouts is not None or (state is not None
                                                       and state.timeouts is not None)
    if wants_timeouts and "ipvsadm" not in o.missing:
        obs.timeouts = o.probe(obs, IPVS_TIMEOUTS, parse_timeouts, None)
    if director.arping_count and config.bgp is None:  # [bgp]: the VIPs go on lo, no ARP
        # arping is optional: without it start still works and says so.
        try:
            result = runner.run(ARPING_VERSION, check=False)
            obs.arping = parse_arping_version(result.stdout + result.stderr)
        except MissingTool as err:
            obs.notes.append(f"{err}; the VIPs will not be announced")
    return obs


def observe_realserver(config: Config, runner: Runner, tolerant: bool,
                       state: State | None = None) -> HostObservation:
    from .plan_realserver import arp_settings

    obs = HostObservation()
    o = Observer(runner, tolerant)
    obs.links = o.probe(obs, IP_LINKS, parse_ip_links, {})
    names = {f"realserver.arp_interfaces[{i}]": name
             for i, name in enumerate(config.realserver.arp_interfaces)}
    require_interfaces(config, obs, names, tolerant)
    obs.addresses = o.probe(obs, IP_ADDRS, parse_ip_addrs, [])
    keys = [s.key for s in arp_settings(config)]
    if state is not None:
        keys += [key for key in state.sysctls if key not in keys]
    _sysctls(o, obs, keys)
    return obs


def observe_owned(state: State, runner: Runner, tolerant: bool) -> HostObservation:
    """What undoing the state file needs to see, and nothing the config names: stop must
    work with a broken config, or with interfaces gone since start."""
    obs = HostObservation()
    o = Observer(runner, tolerant)
    if state.addresses or state.sysctls or state.route:  # to tell what vanished
        obs.links = o.probe(obs, IP_LINKS, parse_ip_links, {})
    if state.addresses:
        obs.addresses = o.probe(obs, IP_ADDRS, parse_ip_addrs, [])
    if state.route is not None:
        _routes(o, obs, {state.route.family})
    if state.services:
        obs.ipvs = o.probe(obs, IPVS_SAVE, parse_ipvs_save, {})
    if state.timeouts is not None and "ipvsadm" not in o.missing:
        obs.timeouts = o.probe(obs, IPVS_TIMEOUTS, parse_timeouts, None)
    _sysctls(o, obs, list(state.sysctls))
    if state.sync_daemons:
        observe_sync_daemons(o, obs)
    keepalived = state.keepalived
    observe_files(obs, list(state.files))
    if keepalived is not None:
        observe_keepalived(obs, keepalived.pid_file, keepalived.config_file)
    if state.bird is not None:
        observe_bird(obs, state.bird.pid_file, state.bird.config_file)
    return obs


def observe_sync_daemons(o: Observer, obs: HostObservation) -> None:
    if "ipvsadm" not in o.missing:
        obs.sync_daemons = o.probe(obs, IPVS_DAEMONS, parse_sync_daemons, {})


def observe_files(obs: HostObservation, paths: list[str]) -> None:
    """The sha256 of each file that exists: was it written by us, and is it as wanted?"""
    import hashlib

    for path in paths:
        try:
            with open(path, "rb") as handle:
                obs.files[path] = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            continue


def observe_keepalived(obs: HostObservation, pid_file: str, config_file: str) -> None:
    from .probes import KeepalivedSeen

    pid = running_with(pid_file, "keepalived", config_file)
    obs.keepalived = None if pid is None else KeepalivedSeen(pid, config_file)


def observe_bird(obs: HostObservation, pid_file: str, config_file: str) -> None:
    from .probes import BirdSeen

    pid = running_with(pid_file, "bird", config_file)
    obs.bird = None if pid is None else BirdSeen(pid, config_file)


def observe_sysctls(o: Observer, obs: HostObservation, keys: list[str]) -> None:
    """Read these keys too (beside any read before)."""
    before = dict(obs.sysctls)
    _sysctls(o, obs, keys)
    obs.sysctls = {**before, **obs.sysctls}


def _routes(o: Observer, obs: HostObservation, families: set[int]) -> None:
    for family in sorted(families):
        def parse(text: str, family: int = family) -> list[Route]:
            return parse_default_routes(text, family)

        obs.routes += o.probe(obs, ip_default_routes(family), parse, [])


def _sysctls(o: Observer, obs: HostObservation, keys: list[str]) -> None:
    """Read the keys whose interface exists (a vanished one took its keys with it)."""
    present = tuple(key for key in keys if not obs.links or interface_of_sysctl(key) in (
        None, *obs.links))
    if present:
        obs.sysctls = o.probe(obs, sysctl_read(present),
                              lambda text: parse_sysctl_values(present, text), {})
