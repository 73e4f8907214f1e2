"""The director: VIPs on its interface, the default route, the IPVS services.

[ha], [bgp] and health checks are imported only by a config that has them: every CLI
call pays its imports, and under emulation each of those modules costs tenths of a
second (README "Benchmarks").
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable

from .errors import KernelLacks, LvsError
from .healthstate import HealthView, load_health, save_health, target_id
from .locks import exclusive
from .model import (
    SCHEDULER_FLAGS,
    Config,
    Destination,
    HaDirector,
    IpvsTable,
    VirtualService,
    address_text,
)
from .observe import observe_director
from .plan import Plan
from .plan_director import (
    plan_director_start,
    plan_health,
    same_real_servers_in_order,
    unmanaged_notes,
)
from .probes import (
    IP_ADDRS,
    IPVS_LIST,
    IPVS_SAVE,
    PROC_IP_VS,
    Counters,
    HostObservation,
    expect_listing_of,
    expect_save_of,
    parse_ip_addrs,
    parse_ipvs_list,
    parse_ipvs_save,
    parse_proc_ip_vs,
    parse_proc_ip_vs_exact,
)
from .role import STATUS_DRIFT, STATUS_RUNNING, Report, Role, Status
from .state import State
from .tunnel import require_kernel_tunnels

if TYPE_CHECKING:
    from .bgp import BirdFiles
    from .ha import HaFiles

TEST_PROC_IP_VS = "LVS_TEST_PROC_IP_VS"


class Director(Role):
    name = "lvs-director"

    def __init__(self, config: Config | None, *args: Any, host: str | None = None,
                 **kwargs: Any) -> None:
        """host: this director's [ha] directors entry (default $LVS_HOST or the host
        name); only read with [ha]."""
        self.member: HaDirector | None = None
        self._health_now: HealthView | None = None  # reload_with_health: not yet written
        if config is not None:
            config.require_director()  # before any lock is taken or program started
            if any(service.check is not None for service in config.services):
                from .checks import require_check_programs

                require_check_programs(config)
            if config.ha is not None:
                from .ha import member_of, this_host

                self.member = member_of(config, this_host(host))
        super().__init__(config, *args, **kwargs)
        self.ha_files: HaFiles | None = None
        self.bird_files: BirdFiles | None = None
        if self.member is not None:
            from .ha import ha_files

            self.ha_files = ha_files(self.paths)
        if config is not None and config.bgp is not None:
            from .bgp import bird_files

            self.bird_files = bird_files(self.paths)

    def observe(self, state: State, tolerant: bool = False) -> HostObservation:
        return self._observe(state, tolerant)

    def observe_again(self, state: State, before: HostObservation) -> HostObservation:
        return self._observe(state, False, self._listing_to_verify(before))

    def _listing_to_verify(self, before: HostObservation) -> IpvsTable | None:
        """The IPVS table for the verification after apply, from /proc/net/ip_vs where
        that is exact; None: read it with `ipvsadm -S -n`, as every other observation.
        Speed: after a single command (`ipvsadm -e` of one weight) the verification's
        `ipvsadm -S -n` took 0.34 s at 10,000 real servers in the lab VM (3.3 s at
        100,000), reading the listing 0.07 s (0.32 s). Exactness: the listing lacks
        scheduler flags, persistence engines, thresholds, tunnel types, a fwmark
        service's family and an IPv6 service's `ops`: the config must set none of what
        it cannot show (listing_verifies), the kernel must hold nothing of it (the
        strict parse gives None, and the first observation, by ipvsadm, showed no IPv6
        service with ops), else ipvsadm. The first observation and status keep ipvsadm:
        they must see whatever is there, set by whoever."""
        from .observe import KnownReadings

        if isinstance(self.runner, KnownReadings) and self.runner.holds(IPVS_SAVE):
            return None  # the batch check's reading: exact, and already paid for
        if not listing_verifies(self.config) or any(
                svc.one_packet and svc.key.address is not None
                and svc.key.address.version == 6 for svc in before.ipvs.values()):
            return None
        text = read_listing()
        if text is None:
            return None  # the IPVS module not loaded: ipvsadm says what there is
        expect_listing_of(before.ipvs)
        return parse_proc_ip_vs_exact(text)

    def _observe(self, state: State, tolerant: bool, ipvs: IpvsTable | None = None
                 ) -> HostObservation:
        obs = observe_director(self.config, self.runner, tolerant, state, ipvs)
        try:
            require_kernel_tunnels(self.config, os.uname().release)
        except KernelLacks as err:
            if not tolerant:
                raise
            obs.notes.append(str(err))
        if self.ha_files is not None:
            from .ha import observe_ha

            observe_ha(self.ha_files, self.runner, tolerant, obs)
        if self.bird_files is not None:
            from .bgp import observe_bgp

            observe_bgp(self.config, self.bird_files, self.runner, tolerant, obs, state)
        return obs

    def plan_start(self, obs: HostObservation, state: State) -> Plan:
        if self.member is not None and self.ha_files is not None:
            from .ha import plan_ha_start

            return plan_ha_start(self.config, self.member, self.ha_files, obs, state,
                                 self.drain, self.health_view())
        if self.bird_files is not None:
            from .bgp import plan_bgp_start

            return plan_bgp_start(self.config, self.bird_files, obs, state, self.drain,
                                  self.health_view())
        return plan_director_start(self.config, obs, state, self.drain, self.health_view())

    def health_view(self) -> HealthView:
        """Health and admin state from the health file (none: nothing known); during the
        watcher's reload, the view it is about to write there."""
        now = self._health_now
        if now is not None:
            return HealthView(dict(now.health), list(now.disabled))
        return load_health(self.paths)

    def apply_health(self, action: str, update: Callable[[HealthView], HealthView]
                     ) -> tuple[Report, HealthView]:
        """Under the run lock: read the health file, let `update` change it (the watcher
        its health, disable/enable the admin part), write it, then apply what health
        changes in the kernel (plan_health: weights, removed servers, the sorry server)."""
        with exclusive(self.paths, self.wait_seconds, self.stop_requested):
            view = self._update_health(update)
            state = self._state_for_change()
            plan = plan_health(self.config, self.observe_ipvs(), state, view)
            return Report(action, plan, self._apply(plan, state)), view

    def reload_with_health(self, update: Callable[[HealthView], HealthView],
                           action: str = "reload") -> tuple[Report, HealthView]:
        """The watcher's SIGHUP: `lvs-director reload` itself (Role._start: observe, plan,
        apply, lock file, verify, the state file written the same way), under the same run
        lock, planned with the watcher's health (written to the health file after). One
        reload path for the CLI and the watcher, not a second planner."""
        with exclusive(self.paths, self.wait_seconds, self.stop_requested):
            view, changed = self._updated_health(update)
            # Planned from the view itself and written once the kernel has it (the run
            # lock is held throughout, so no one reads the file in between): writing
            # 10,000 entries first delayed the change by a second in the lab VM. A
            # failed reload writes nothing; the watcher retries it with its health.
            self._health_now = view
            try:
                report = self._start(action)
            finally:
                self._health_now = None
            if changed:
                save_health(self.paths, view)
            return report, view

    def observe_ipvs(self) -> HostObservation:
        """The IPVS table alone: all plan_health reads. Read from /proc/net/ip_vs, which
        starts no program (every program start costs tenths of a second on a slow
        machine, and they were most of the time from a failure to weight 0); with
        `ipvsadm -S -n` where there is no such file (the IPVS module not loaded yet) or
        where the listing lacks what the config compares (tunnel types, thresholds)."""
        obs = HostObservation(ipvs=self._ipvs_for_health())
        if self.bird_files is not None:  # [bgp]: health also decides the VIPs on lo
            obs.addresses = parse_ip_addrs(self.runner.run(IP_ADDRS).stdout)
        return obs

    def _ipvs_for_health(self) -> IpvsTable:
        text = read_listing() if proc_listing_suffices(self.config) else None
        if text is not None:
            # The exact parse where it can (it remembers the last listing's lines: a
            # watcher's readings differ in a few; a third of the time at 100,000); the
            # lenient one where the listing has what it cannot describe.
            exact = parse_proc_ip_vs_exact(text)
            if exact is None:
                return parse_proc_ip_vs(text)
            expect_save_of(exact)  # for the watcher's next reload (SIGHUP)
            return exact
        return parse_ipvs_save(self.runner.run(IPVS_SAVE).stdout)

    def store_health(self, update: Callable[[HealthView], HealthView]) -> HealthView:
        """Like apply_health, without touching the kernel (the watcher, as it exits)."""
        with exclusive(self.paths, self.wait_seconds, self.stop_requested):
            return self._update_health(update)

    def _update_health(self, update: Callable[[HealthView], HealthView]) -> HealthView:
        """Read the health file, let `update` change the view, and write it back if that
        changed anything (the caller holds the run lock, so the file is still what was
        read). A reload after an edit of the config changes no health once the checks
        are steady: writing 10,000 entries again was over a second of the lab VM's time."""
        view, changed = self._updated_health(update)
        if changed:
            save_health(self.paths, view)
        return view

    def _updated_health(self, update: Callable[[HealthView], HealthView]
                        ) -> tuple[HealthView, bool]:
        """The health file's view as `update` leaves it, and whether that differs."""
        view = self.health_view()
        before = (dict(view.health), list(view.disabled))
        view = update(view)
        return view, (view.health, view.disabled) != before

    def plan_stop(self, obs: HostObservation, state: State) -> Plan:
        plan = super().plan_stop(obs, state)
        unmanaged_notes(plan, obs, state)
        return plan

    def present(self, obs: HostObservation) -> bool:
        interface = self.config.require_director().interface
        if self.member is not None and (obs.keepalived is not None or obs.sync_daemons):
            return True
        if self.bird_files is not None:
            interface = "lo"
            if obs.bird is not None:
                return True
        return any(s.key in obs.ipvs for s in self.config.services) or any(
            obs.has_address(interface, vip) for vip in self.config.director_vips())

    def counters(self) -> Counters:
        try:
            return parse_ipvs_list(self.runner.run(IPVS_LIST).stdout)
        except LvsError:
            return {}

    def describe(self, obs: HostObservation, state: State) -> tuple[list[str], dict[str, Any]]:
        counters = self.counters() if obs.ipvs else {}
        view = self.health_view()
        lookup = view.lookup(any(s.check is not None for s in self.config.services))
        lines: list[str] = []
        services: list[dict[str, Any]] = []
        for service in self.config.services:
            seen = obs.ipvs.get(service.key)
            managed = state.owns_service(service.key)
            status = "absent" if seen is None else ("managed" if managed else "NOT MANAGED")
            lines.append(f"{service.key}  {service.scheduler}  [{status}]")
            marks = _describe_marks(service, obs)
            lines += marks
            reals: list[dict[str, Any]] = []
            # As the planner: in the usual case the kernel lists them in the config's order,
            # and then no index by identity is needed (each costs a hash of an address in
            # ipaddress's Python) unless a sorry server may be among them.
            in_order = seen is not None and same_real_servers_in_order(service, seen)
            have = {d.ident: d for d in seen.destinations} if seen and (
                not in_order or service.sorry_server is not None) else {}
            actuals: Iterable[Destination | None] = (
                seen.destinations if seen and in_order
                else (have.get(d.ident) for d in service.destinations))
            numbers = counters.get(service.key, {})
            # Nothing to look up per real server without a check or an admin's disable.
            unchecked = service.check is None and not view.disabled
            health_of = None if unchecked else lookup.service(service)
            for dest, actual in zip(service.destinations, actuals):
                count = numbers.get(dest.ident) if numbers else None
                address = address_text(dest.address)  # once, in C for IPv4
                where = (f"[{address}]:{dest.port}" if dest.address.version == 6
                         else f"{address}:{dest.port}")  # = dest.endpoint()
                health = ({"state": "unchecked", "reason": None, "since": None} if unchecked
                          else health_of(address, dest.port) if health_of is not None
                          else _health_of(service, dest, view))
                lines.append(
                    f"  -> {where:<28} weight {dest.weight:>5} "
                    f"(actual {actual.weight if actual else '-':>5})"
                    + (f"  active {count.active} inactive {count.inactive}" if count else "")
                    + f"  {_health_text(health)}")
                reals.append({"address": where, "weight": dest.weight,
                              "actual_weight": actual.weight if actual else None,
                              "active": count.active if count else None,
                              "inactive": count.inactive if count else None,
                              "health": health})
            # In order, the kernel has exactly the configured ones: `have` is empty, or
            # (for the sorry server's sake) holds just them.
            configured = have.keys() if in_order else {
                d.ident for d in service.destinations}
            sorry = service.sorry_server
            for ident, extra in have.items():
                if sorry is not None and ident == sorry.ident:
                    lines.append(f"  -> {extra.endpoint():<28} sorry server, in the table "
                                 f"while no real server is up (weight {extra.weight})")
                elif ident not in configured:
                    lines.append(f"  -> {extra.endpoint():<28} not in the config "
                                 f"(weight {extra.weight})")
            services.append({"service": str(service.key), "scheduler": service.scheduler,
                             "status": status, "real": reals,
                             "match": [{"vip": str(m.address), "port": m.port,
                                        "protocol": m.protocol.value} for m in service.match],
                             "sorry_server": None if sorry is None else {
                                 "address": sorry.endpoint(),
                                 "in_table": sorry.ident in have}})
        keys = {s.key for s in self.config.services}
        unmanaged = [str(k) for k in obs.ipvs if k not in keys and not state.owns_service(k)]
        for key in unmanaged:
            lines.append(f"{key}  [not managed by lvs-director]")
        data: dict[str, Any] = {"services": services, "unmanaged": unmanaged}
        if self.member is not None:
            from .ha import describe_ha

            ha_lines, data["ha"] = describe_ha(self.config, self.member, obs)
            lines = ha_lines + lines
        if self.bird_files is not None:
            from .bgp import describe_bgp, observe_sessions

            observe_sessions(self.config, self.bird_files, self.runner, obs)
            bgp_lines, data["bgp"] = describe_bgp(self.config, obs)
            lines = bgp_lines + lines
        return lines, data

    def status(self, tolerant: bool = False) -> Status:
        """With [bgp], running as configured also needs every BGP session established:
        a director the routers do not send to is not doing its job."""
        status = super().status(tolerant)
        bgp = status.data.get("bgp")
        if status.code == STATUS_RUNNING and bgp is not None and not bgp["established"]:
            down = [s["protocol"] for s in bgp["sessions"] if not s["established"]]
            status.code = STATUS_DRIFT
            status.summary = (f"running, but {len(down)} BGP session(s) not established: "
                              + ", ".join(down))
        return status


def _describe_marks(service: VirtualService, obs: HostObservation) -> list[str]:
    """A fwmark service's matches, and whether our nftables rule marks each of them."""
    from .nft import MarkRule, family_of

    lines = []
    for match in service.match:
        table = obs.nft.get(family_of(match.address))
        rule = MarkRule(match.address, match.protocol, match.port, service.key.port)
        marked = table is not None and table.rules is not None and rule in table.rules
        lines.append(f"  marks {match.protocol.value} {match.address} port {match.port}"
                     f"  ({'marked' if marked else 'NOT MARKED'} by nftables table "
                     f"{family_of(match.address)} lvs_scripts)")
    return lines


def proc_listing_suffices(config: Config) -> bool:
    """/proc/net/ip_vs shows each real server's address, port, forwarding and weight, but
    not a TUN server's tunnel type nor the -x/-y thresholds: a config with those would
    see every such server differ, and edit it at each apply. Nor whether a fwmark
    service is IPv4 or IPv6, part of its identity: parse_proc_ip_vs leaves them out, and
    a config with one needs ipvsadm for the watcher to see it at all."""
    return all(s.key.address is not None and not s.has_tunnel_options()
               and not s.has_thresholds() for s in config.services)


# The schedulers that read a service's flags (-b): for any other the flags change nothing.
FLAG_SCHEDULERS = frozenset(SCHEDULER_FLAGS.values())


def listing_verifies(config: Config) -> bool:
    """May the verification after apply read the IPVS table from /proc/net/ip_vs
    (parse_proc_ip_vs_exact)? It must then see all the planner compares, exactly:
    - proc_listing_suffices: no tunnel types or thresholds (the listing shows neither),
      no fwmark service (the listing does not say IPv4 or IPv6, part of its key);
    - no persistence (so no netmask, no persistence engine): the listing shows the
      timeout and netmask but not the engine (--pe), and the strict parse does not read
      persistent services at all;
    - no scheduler flags (-b), and a scheduler other than sh and mh: the listing shows no
      flags, so they must be a field with no effect, and only sh and mh read them (flags
      left on a service of another scheduler change nothing that a verification proves);
    - no options we do not model (`extra`), which the listing cannot show either;
    - no IPv6 service with -o: the kernel prints `ops` only on IPv4 service lines."""
    return proc_listing_suffices(config) and all(
        not s.persistence and s.netmask is None and s.pe is None and not s.flags
        and s.scheduler not in FLAG_SCHEDULERS and not s.extra
        and not (s.one_packet and s.key.address is not None and s.key.address.version == 6)
        for s in config.services)


def read_listing() -> str | None:
    """The kernel's listing of the IPVS table (proc_ip_vs); None where there is none (the
    IPVS module not loaded yet)."""
    try:
        with open(proc_ip_vs(), encoding="ascii") as listing:
            return listing.read()
    except FileNotFoundError:
        return None


def proc_ip_vs() -> str:
    """/proc/net/ip_vs, or (tests only) the file $LVS_TEST_PROC_IP_VS names: the host
    tests point it at a missing file, so that on a machine with IPVS they still observe
    the fake ipvsadm's table, never the real kernel's."""
    return os.environ.get(TEST_PROC_IP_VS) or PROC_IP_VS


def _health_of(service: VirtualService, dest: Destination, view: HealthView
               ) -> dict[str, Any]:
    """`disabled` (an admin said so) wins over what checks say; a service without a check
    is `unchecked`; else the checks' state: up, down (with the last reason, since when) or
    unknown (not checked yet: counts as up)."""
    key = target_id(service, dest)
    health = view.health.get(key) if service.check is not None else None
    data: dict[str, Any] = {"state": "unchecked", "reason": None, "since": None}
    if service.check is not None:
        data["state"] = view.state(key)
    if health is not None:
        data["reason"] = health.reason or None
        data["since"] = health.since or None
    if view.is_disabled(key):
        data["state"] = "disabled"
    return data


def _health_text(health: dict[str, Any]) -> str:
    state = health["state"]
    if state != "down":
        return str(state)
    since = health["since"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
    return f"down ({health['reason'] or 'no reason'}, since {when})"
