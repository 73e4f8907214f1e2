"""Run the read-only probes a role needs, through the one executor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, TypeVar

from .errors import (
    CommandFailed,
    ConfigError,
    IpvsDenied,
    KernelLacks,
    MissingTool,
    TunnelModuleMissing,
)
from .model import Config, IpvsTable
from .nft import NftTable
from .pids import running_with
from .probes import (
    ARPING_VERSION,
    IP_ADDRS,
    IP_LINKS,
    IPVS_DAEMONS,
    IPVS_LIST,
    IPVS_SAVE,
    IPVS_TIMEOUTS,
    HostObservation,
    Route,
    expect_save_of,
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
from .runner import Result, Runner
from .state import State
from .tunnel import (
    FB_TUNNELS,
    IP_FOU_SHOW,
    LSMOD,
    fallback_expected,
    modprobe_dry,
    parse_fou_show,
    parse_lsmod,
)

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
                     state: State | None = None, ipvs: IpvsTable | None = None
                     ) -> HostObservation:
    """ipvs: the IPVS table, already read another way (the verification's listing);
    None: read by `ipvsadm -S -n`."""
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
    if ipvs is None:
        if state is not None and state.services:
            # A new process has no lines of an earlier reading to find each real server
            # by: where we have set up services, the config's are what the table mostly
            # holds (probes.expect_save_of). Not before a first start: the table holds
            # none of them, and rendering 100,000 lines for nothing cost a second in the
            # lab VM.
            expect_save_of({service.key: service for service in config.services})
        nothing: IpvsTable = {}
        ipvs = o.probe(obs, IPVS_SAVE, parse_ipvs_save, nothing)
    obs.ipvs = ipvs
    if any(s.has_thresholds() for s in config.services) and "ipvsadm" not in o.missing:
        from .probes import IPVS_THRESHOLDS, parse_ipvs_thresholds, with_thresholds

        obs.ipvs = with_thresholds(obs.ipvs, o.probe(obs, IPVS_THRESHOLDS,
                                                     parse_ipvs_thresholds, {}))
    # After ipvsadm, which loads ip_vs: net.ipv4.vs.* exist only then.
    observe_director_extras(config, o, obs, state)
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


def observe_director_extras(config: Config, o: Observer, obs: HostObservation,
                            state: State | None) -> None:
    """The kernel modules the services need, the director's sysctls, our nftables tables."""
    from .kernel import require_modules
    from .nft import wanted_rules
    from .plan_director import ndisc_notify_keys
    from .plan_ipvs import director_sysctls

    try:
        require_modules(config)
    except KernelLacks as err:
        if not o.tolerant:
            raise
        obs.notes.append(str(err))
    # net.ipv4.vs.* exist only once ip_vs is loaded (ipvsadm did that, unless missing);
    # ndisc_notify where IPv6 VIPs go; and every key the state file lists.
    ipvs = "ipvsadm" not in o.missing
    keys = list(director_sysctls(config)) if ipvs else []
    keys += [key for key in ndisc_notify_keys(config, config.require_director())
             if key not in keys]
    if state is not None:
        keys += [key for key in state.sysctls
                 if key not in keys and (ipvs or not key.startswith("net.ipv4.vs."))]
    _sysctls(o, obs, keys)
    families = set(wanted_rules(config.services))
    if state is not None:
        families |= set(state.nft_tables)
    observe_nft(o, obs, families)


def observe_nft(o: Observer, obs: HostObservation, families: set[str]) -> None:
    """Our tables of these families (nft.py). nft is needed only here: a director without
    fwmark services never runs it."""
    from .nft import NFT_LIST_TABLES, list_table_argv, parse_table, parse_tables

    if not families:
        return
    try:
        present: set[str] = o.probe(obs, NFT_LIST_TABLES, parse_tables, set())
    except MissingTool as err:
        raise MissingTool("nft", "fwmark services mark their packets with nftables: "
                          "install it (Debian: apt-get install nftables)") from err
    except CommandFailed as err:
        _nft_failed(o, obs, err)
        return
    for family in sorted(families & present):
        def parse(text: str, family: str = family) -> NftTable:
            return parse_table(family, text)

        table = o.probe(obs, list_table_argv(family), parse, None)
        if table is not None:
            obs.nft[family] = table


def _nft_failed(o: Observer, obs: HostObservation, err: CommandFailed) -> None:
    """`nft list tables` refused: without the right (not root: a dry run notes it and
    plans as if no table were there) or without nf_tables in the kernel (LSB 5)."""
    said = err.stderr.strip().splitlines()[-1:] or [""]
    if "Operation not permitted" in err.stderr:
        if not o.tolerant:
            raise err
        obs.notes.append(f"nft may not read the ruleset ({said[0]}); planned as if no "
                         "nftables table of ours were there: run as root for the real plan")
        return
    lacks = KernelLacks(f"nft could not read the ruleset ({said[0]}): the kernel needs "
                        "nf_tables for fwmark services (modprobe nf_tables, or a kernel "
                        "built with CONFIG_NF_TABLES)")
    if not o.tolerant:
        raise lacks from err
    obs.notes.append(str(lacks))


def observe_realserver(config: Config, runner: Runner, tolerant: bool,
                       state: State | None = None) -> HostObservation:
    from .plan_realserver import (
        RP_DEFAULT,
        nat_gateway,
        quiet_arp_settings,
        rp_filter_settings,
    )
    from .tunnel import tunnel_needs

    obs = HostObservation()
    o = Observer(runner, tolerant)
    obs.links = o.probe(obs, IP_LINKS, parse_ip_links, {})
    names = {f"realserver.arp_interfaces[{i}]": name
             for i, name in enumerate(config.realserver.arp_interfaces)}
    require_interfaces(config, obs, names, tolerant)
    obs.addresses = o.probe(obs, IP_ADDRS, parse_ip_addrs, [])
    needs = tunnel_needs(config)
    keys = [s.key for s in quiet_arp_settings(config) + rp_filter_settings(needs)]
    if needs.rp_devices and any(d not in obs.links for d in needs.rp_devices):
        keys.append(RP_DEFAULT)  # what a device created now would get
    if needs.devices or (state is not None and (state.links or state.fous)):
        keys += observe_tunnels(o, obs, config, needs.modules, bool(needs.fou or (
            state is not None and state.fous)))
    if state is not None:
        keys += [key for key in state.sysctls if key not in keys]
    _sysctls(o, obs, keys)
    families: set[int] = set()
    gateway = nat_gateway(config)
    if gateway is not None:
        families.add(gateway.version)
    if state is not None and state.route is not None:
        families.add(state.route.family)
    _routes(o, obs, families)
    return obs


def observe_tunnels(o: Observer, obs: HostObservation, config: Config,
                    modules: list[str], fou: bool) -> list[str]:
    """Loaded tunnel modules (lsmod), whether the missing ones can be loaded (a kernel
    without one is refused here, exit 5, before anything changes), GUE ports. Returns
    the sysctl keys to read with the rest."""
    seen = obs.tunnels
    seen.loaded = o.probe(obs, LSMOD, parse_lsmod, set())
    for module in modules:
        if module in seen.loaded or "lsmod" in o.missing:
            continue
        if not _loadable(o.runner, module):
            missing = TunnelModuleMissing(module, config.path)
            if not o.tolerant:
                raise missing
            obs.notes.append(str(missing))
        seen.loadable.add(module)
    if fou:
        seen.fou = o.probe(obs, IP_FOU_SHOW, parse_fou_show, set())
    if any(m not in seen.loaded for m in modules):
        seen.fallback = fallback_expected(_sysctl_or_none(o.runner, FB_TUNNELS))
    return []


def _sysctl_or_none(runner: Runner, key: str) -> int | None:
    """A key that may not exist here (net.core.fb_tunnels_only_for_init_net outside the
    initial network namespace): its value, or None."""
    try:
        result = runner.run(sysctl_read((key,)), check=False)
    except MissingTool:
        return None
    text = result.stdout.strip()
    return int(text) if result.returncode == 0 and text.lstrip("-").isdigit() else None


def _loadable(runner: Runner, module: str) -> bool:
    try:
        return runner.run(modprobe_dry(module), check=False).returncode == 0
    except MissingTool:
        return False


def observe_owned(state: State, runner: Runner, tolerant: bool) -> HostObservation:
    """What undoing the state file needs to see, and nothing the config names: stop must
    work with a broken config, or with interfaces gone since start."""
    obs = HostObservation()
    o = Observer(runner, tolerant)
    if state.addresses or state.sysctls or state.route or state.links:  # what vanished
        obs.links = o.probe(obs, IP_LINKS, parse_ip_links, {})
    if state.fous:
        obs.tunnels.fou = o.probe(obs, IP_FOU_SHOW, parse_fou_show, set())
    if state.addresses or (state.keepalived is not None and state.keepalived.addresses):
        obs.addresses = o.probe(obs, IP_ADDRS, parse_ip_addrs, [])
    if state.route is not None:
        _routes(o, obs, {state.route.family})
    if state.services:
        obs.ipvs = o.probe(obs, IPVS_SAVE, parse_ipvs_save, {})
    if state.timeouts is not None and "ipvsadm" not in o.missing:
        obs.timeouts = o.probe(obs, IPVS_TIMEOUTS, parse_timeouts, None)
    _sysctls(o, obs, list(state.sysctls))
    observe_nft(o, obs, set(state.nft_tables))
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


# Readings an action may take again after applying its plan (the verification observes the
# host anew). Each is kept until a command that could change what it shows runs.
_KEPT = {IP_LINKS: "ip link", IP_ADDRS: "ip addr", ip_default_routes(4): "ip route",
         ip_default_routes(6): "ip route", IPVS_SAVE: "ipvsadm", IPVS_TIMEOUTS: "ipvsadm"}
# Commands that change nothing any kept reading shows (besides the kept ones themselves).
_READ_ONLY = frozenset({IPVS_LIST, IPVS_DAEMONS, ARPING_VERSION, LSMOD, IP_FOU_SHOW,
                        ("ipvsadm", "-L", "-n", "--thresholds"),
                        ("ipvsadm", "-L", "-n", "--stats", "--exact")})
# ip's objects, as the planners write them, and the kept readings each can change: an
# address change shows in `ip addr` only; a link going down or away takes its addresses
# and routes with it.
_IP_OBJECTS = {"addr": ("ip addr",), "address": ("ip addr",), "route": ("ip route",),
               "neigh": ()}
# Programs that change none of the kept readings: nft's own tables are not kept (always
# read anew) and arping only sends packets.
_NO_KEPT_EFFECT = frozenset({"nft", "arping"})


class KnownReadings:
    """A Runner for one action (start, reload): the first reading of each probe in _KEPT
    is remembered, and observing again returns it instead of starting the program, until
    a command runs that could change it. The verification after apply so starts only the
    probes of what the plan touched, and `ipvsadm -S -n` read by the batch check after
    `ipvsadm -R` serves the verification when nothing ran in between (the kernel then
    holds what that reading showed, unless someone else changed it in those milliseconds,
    which no verification can rule out anyway). Every other command passes through."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.kept: dict[tuple[str, ...], Result] = {}

    def holds(self, argv: Sequence[str]) -> bool:
        """Is a reading of argv kept, that nothing run since could have changed?"""
        return tuple(argv) in self.kept

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            check: bool = True) -> Result:
        argv = tuple(argv)
        kept = self.kept.get(argv) if stdin is None else None
        if kept is not None:
            return kept
        if argv not in _KEPT or stdin is not None:
            self._forget(argv, stdin)
        result = self.runner.run(argv, stdin=stdin, check=check)
        if argv in _KEPT and stdin is None and result.returncode == 0:
            self.kept[argv] = result
        return result

    def _forget(self, argv: tuple[str, ...], stdin: str | None = None) -> None:
        """Drop the readings this command could change (all of them for a program this
        does not know, or an ip object not listed)."""
        if argv in _READ_ONLY or argv[0] in _NO_KEPT_EFFECT or (
                argv[0] in ("sysctl", "modprobe") and argv[1:2] == ("-n",)):  # reads
            return
        if argv[0] == "ipvsadm":
            areas: tuple[str, ...] = ("ipvsadm",)
        elif argv[0] == "ip" and "-batch" in argv and stdin is not None:
            # `ip -force -batch -`: each line is a command without the leading `ip`.
            areas = tuple({area for line in stdin.splitlines()
                           for area in _ip_areas(tuple(line.split()))})
        elif argv[0] == "ip":
            areas = _ip_areas(argv[1:])
        else:
            self.kept.clear()
            return
        self.kept = {kept: result for kept, result in self.kept.items()
                     if _KEPT[kept] not in areas}


def _ip_areas(words: tuple[str, ...]) -> tuple[str, ...]:
    """The kept readings `ip WORDS...` could change."""
    words = tuple(word for word in words if not word.startswith("-"))
    if words[1:2] and words[1] in ("show", "list", "get"):
        return ()
    return _IP_OBJECTS.get(words[0] if words else "", ("ip link", "ip addr", "ip route"))
