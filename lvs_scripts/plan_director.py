"""Pure planners for the director: (config, observed host, our state) -> Plan.

start and reload reconcile the host towards the config and issue only what is
missing or different; stop undoes what our state file says we did. Services
this tool did not create are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from operator import attrgetter

from .healthstate import Flagged, HealthView, target_ids
from .model import (
    Config,
    Destination,
    DirectorConfig,
    IPAddress,
    VirtualService,
    real_server_options,
)
from .owned import (
    AddressAdded,
    Announced,
    ServiceCreated,
    ServiceDeleted,
    SysctlChanged,
    TimeoutsSet,
    add_vip_argv,
    plan_default_route,
    plan_unwanted_addresses,
    undo_sysctl,
    vip_cidr,
)
from .plan import Drain, Plan
from .probes import Arping, HostObservation
from .record import as_dict
from .state import State

Ident = tuple[IPAddress, int]
REMOVED_DOWN = "down: out of the table (on_failure = remove)"
SORRY_NOT_NEEDED = "sorry server: a real server is up"


def _link_up(plan: Plan, obs: HostObservation, device: str) -> None:
    link = obs.links.get(device)
    if link is None or not link.up:
        plan.add(("ip", "link", "set", "dev", device, "up"), f"{device} is not up")


def plan_director_start(config: Config, obs: HostObservation, state: State,
                        drain: bool = True, view: HealthView | None = None) -> Plan:
    """Everything the Director script's start did, minus what is already in place.
    With drain, real servers and services leaving the config get weight 0 first and are
    deleted once their connections are gone (or their drain_seconds are up).
    view: the health and admin state (healthstate.py); a down or disabled real server is
    planned as its health says, never put back at its configured weight."""
    director = config.require_director()
    plan = Plan()
    _plan_timeouts(plan, director, obs)
    if director.dip is not None and director.dip_interface is not None:
        dip = director.dip
        if not obs.has_address(director.dip_interface, dip.ip):
            plan.add(("ip", "addr", "add", str(dip), "dev", director.dip_interface),
                     "the director's own address (DIP)",
                     AddressAdded(director.dip_interface, str(dip), "dip"))
        _link_up(plan, obs, director.dip_interface)
    # With [ha] keepalived adds the VIPs (and announces them) where it is elected.
    if config.ha is None:
        _plan_ndisc_notify(plan, config, director, obs, state)
    unannounced = [] if config.ha is not None else _plan_vips(plan, config, director, obs,
                                                              state)
    _link_up(plan, obs, director.interface)
    _plan_route(plan, director, obs, state)
    from .plan_ipvs import plan_marks, plan_sysctls, plan_unwanted_marks

    plan_sysctls(plan, config, obs, state)
    plan_marks(plan, config, obs, state)
    _plan_ipvs(plan, config.services, obs, state, drain, view)
    plan_unwanted_marks(plan, config, obs, state)
    _plan_unwanted_addresses(plan, config, director, obs, state)
    _plan_arping(plan, director, obs, unannounced)
    return plan


def _plan_timeouts(plan: Plan, director: DirectorConfig, obs: HostObservation) -> None:
    wanted = director.timeouts
    if wanted is None:
        return
    seen = obs.timeouts
    if not wanted.in_effect(seen):
        plan.add(("ipvsadm", "--set", *wanted.args()), "connection timeouts (tcp tcpfin udp)",
                 TimeoutsSet(seen, wanted) if seen else None)


def ndisc_notify_key(interface: str) -> str:
    """net.ipv6.conf.IFACE.ndisc_notify (slashes for a dotted VLAN name, as sysctl_key)."""
    if "." in interface:
        return f"net/ipv6/conf/{interface}/ndisc_notify"
    return f"net.ipv6.conf.{interface}.ndisc_notify"


def ndisc_notify_keys(config: Config, director: DirectorConfig) -> list[str]:
    """The key start sets when an IPv6 VIP goes on the interface (none without one)."""
    if config.ha is None and any(v.version == 6 for v in config.director_vips()):
        return [ndisc_notify_key(director.interface)]
    return []


def _plan_ndisc_notify(plan: Plan, config: Config, director: DirectorConfig,
                       obs: HostObservation, state: State) -> None:
    """IPv6 has no gratuitous ARP: the neighbours learn that an IPv6 VIP moved here from
    an unsolicited neighbour advertisement. The kernel sends one itself once duplicate
    address detection of a new address is over (about a second; not for a `nodad`
    address) on an interface with ndisc_notify = 1, and again whenever the link comes
    up; Debian's ndisc6 has no tool that sends one. Set before the VIPs, restored by
    stop."""
    wanted = ndisc_notify_keys(config, director)
    for key in wanted:
        have = obs.sysctls.get(key)
        if have != 1:
            plan.add(("sysctl", "-w", f"{key}=1"), "announce IPv6 VIPs (unsolicited "
                     f"neighbour advertisements) when added; was {have}",
                     SysctlChanged(key, have, 1) if have is not None else None)
    for key, owned in state.sysctls.items():
        if key.endswith("ndisc_notify") and key not in wanted:
            undo_sysctl(plan, obs, owned)


def _plan_vips(plan: Plan, config: Config, director: DirectorConfig, obs: HostObservation,
               state: State) -> list[IPAddress]:
    """Add the missing VIPs. Returns the VIPs to announce: those added now, and those an
    earlier start added but failed before announcing."""
    wanted = config.director_vips()
    unannounced = []
    for vip in wanted:
        if obs.has_address(director.interface, vip):
            if state.unannounced(director.interface, vip_cidr(vip)):
                unannounced.append(vip)
            _plan_deprecate(plan, director.interface, vip, obs, state)
            continue
        # Not where this plan is about to remove it from (a VIP moving to another device).
        elsewhere = [d for d in obs.devices_with(vip) if d != director.interface
                     and not state.owns_address(d, vip_cidr(vip))]
        if elsewhere:
            plan.notes.append(f"VIP {vip} is also on {', '.join(elsewhere)}; left there")
        plan.add(add_vip_argv(vip, director.interface, deprecated=True),
                 f"VIP of the services on {vip}",
                 AddressAdded(director.interface, vip_cidr(vip)))
        unannounced.append(vip)
    return unannounced


def _plan_deprecate(plan: Plan, device: str, vip: IPAddress, obs: HostObservation,
                    state: State) -> None:
    """An IPv6 VIP of ours that is not deprecated (added by an older version, or changed
    by hand) becomes so in place: else it can be the director's source address, which
    breaks IPv6 TUN (see add_vip_argv). Someone else's address is left alone."""
    cidr = vip_cidr(vip)
    if vip.version == 6 and not obs.is_deprecated(device, vip) and \
            state.owns_address(device, cidr):
        plan.add(("ip", "addr", "change", cidr, "dev", device, "preferred_lft", "0"),
                 f"VIP {vip} deprecated: never the director's source address")


def _plan_unwanted_addresses(plan: Plan, config: Config, director: DirectorConfig,
                             obs: HostObservation, state: State) -> None:
    """VIPs and the DIP we added that the config no longer has: removed after the
    services that used them."""
    wanted = {(director.interface, vip_cidr(vip)) for vip in config.director_vips()}
    if director.dip is not None and director.dip_interface is not None:
        wanted.add((director.dip_interface, str(director.dip)))
    plan_unwanted_addresses(plan, obs, state, wanted)


def _plan_route(plan: Plan, director: DirectorConfig, obs: HostObservation,
                state: State) -> None:
    plan_default_route(plan, director.gateway, obs, state)


def effective_service(service: VirtualService, view: HealthView | None,
                      flagged: Flagged | None = None
                      ) -> tuple[VirtualService, dict[Ident, str]]:
    """The service as the kernel should hold it given health and admin state: a disabled
    real server, or a down one of a checked service with on_failure = quiesce, at weight 0;
    a down one with on_failure = remove left out; the sorry server in only while no real
    server is up. Also which real servers are out for health's sake (deleted at once, not
    drained: a dead server has no connections worth waiting for), with the reason.
    Without health, admin state or a sorry server, or none of its real servers down or
    disabled (flagged: the view's Flagged, made once for a pass over many services): the
    service itself, and only the sorry server's note."""
    sorry = service.sorry_server
    if sorry is None and (view is None or view.empty()):
        return service, {}
    view = view or HealthView()
    if service.destinations and not (flagged or view.flagged()).touches(service):
        return service, {} if sorry is None else {sorry.ident: SORRY_NOT_NEEDED}
    check = service.check
    dests: list[Destination] = []
    quick: dict[Ident, str] = {}
    any_up = False
    for dest, key in zip(service.destinations, target_ids(service)):
        if view.is_disabled(key):
            dests.append(replace(dest, weight=0))
        elif check is not None and view.is_down(key):
            if check.on_failure == "remove":
                quick[dest.ident] = REMOVED_DOWN
            else:
                dests.append(replace(dest, weight=0))
        else:
            any_up = True
            dests.append(dest)
    if sorry is not None:
        if any_up:
            quick[sorry.ident] = SORRY_NOT_NEEDED
        else:
            dests.append(sorry)
    return VirtualService(**{**as_dict(service), "destinations": tuple(dests)}), quick


def plan_health(config: Config, obs: HostObservation, state: State,
                view: HealthView) -> Plan:
    """What the watcher applies after health transitions: only the health part of each
    service we own and the kernel has (weights, real servers out for on_failure = remove,
    the sorry server); the rest (a new service, an attribute, a real server gone from the
    config, VIPs, routes) is start's and reload's job."""
    plan = Plan()
    flagged = view.flagged()
    for service in config.services:
        seen = obs.ipvs.get(service.key)
        if seen is None or not state.owns_service(service.key):
            continue
        effective, quick = effective_service(service, view, flagged)
        ours = {d.ident for d in service.destinations}
        if service.sorry_server is not None:
            ours.add(service.sorry_server.ident)
        # Compared with the kernel's own attributes and only with the real servers the
        # config names: nothing else is health's to change.
        scope = VirtualService(**{**as_dict(seen), "destinations": tuple(
            d for d in seen.destinations if d.ident in ours)})
        wanted = VirtualService(**{**as_dict(seen), "destinations": effective.destinations})
        removals = Plan()
        plan_service_edit(plan, removals, wanted, scope, False, quick)
        plan.steps += removals.steps
    if config.bgp is not None:  # [bgp]: a VIP nobody serves is withdrawn (bgp.py)
        from .bgp import plan_vip_health

        plan_vip_health(plan, config, obs, state, view)
    return plan


def _plan_ipvs(plan: Plan, services: tuple[VirtualService, ...], obs: HostObservation,
               state: State, drain: bool, view: HealthView | None = None) -> None:
    removals = Plan()  # deletions go last, after every addition and edit
    flagged = view.flagged() if view is not None else None
    for configured in services:
        service, quick = effective_service(configured, view, flagged)
        seen = obs.ipvs.get(service.key)
        if seen is None:
            plan.add(("ipvsadm", "-A", *service.service_args()), "virtual service",
                     ServiceCreated(service.key, service.drain_seconds))
            head = ("ipvsadm", "-a", *service.key.args())  # once, not per real server
            for dest in service.destinations:
                plan.add(head + real_server_options(dest), "real server")
            continue
        owned = state.services.get(service.key)
        if owned is None:
            _plan_foreign(plan, service, seen)
            continue
        if owned.drain_seconds != service.drain_seconds:  # kept for a later removal
            plan.forget.append(ServiceCreated(service.key, service.drain_seconds))
        plan_service_edit(plan, removals, service, seen, drain, quick)
    wanted = {s.key for s in services}
    # Records of services gone from both the kernel and the config: if someone else makes
    # one again later, it is theirs, not ours.
    plan.forget += [ServiceDeleted(key) for key in state.services
                    if key not in obs.ipvs and key not in wanted]
    for key, seen in obs.ipvs.items():
        owned = state.services.get(key)
        if key not in wanted and owned is not None:
            wait = None
            if drain:
                for old in seen.destinations:
                    _weight_zero(plan, seen, old)
                wait = Drain(key, None, owned.drain_seconds)
            removals.add(("ipvsadm", "-D", *key.args()), "service no longer configured",
                         ServiceDeleted(key), drain=wait)
    plan.steps += removals.steps


def _plan_foreign(plan: Plan, service: VirtualService, seen: VirtualService) -> None:
    """A service on our VIP:port that we did not create is never touched; if it is not
    what the config describes, the host is not as configured, and we say so."""
    plan.notes.append(f"{service.key} exists but was not created by lvs-director: not "
                      "managed, left untouched")
    edits, removals = Plan(), Plan()
    plan_service_edit(edits, removals, service, seen, drain=False)
    if edits or removals:
        plan.conflicts.append(
            f"{service.key} is held by a service lvs-director did not create, which differs "
            f"from the config ({len(edits.steps) + len(removals.steps)} change(s) needed); "
            f"left untouched: remove it (ipvsadm -D {' '.join(service.key.args())}) or "
            "change the config")


def _weight_zero(plan: Plan, service: VirtualService, dest: Destination) -> None:
    if dest.weight != 0:
        plan.add(("ipvsadm", "-e", *service.destination_args(replace(dest, weight=0))),
                 "drain: no new connections")


def plan_service_edit(plan: Plan, removals: Plan, service: VirtualService,
                      seen: VirtualService, drain: bool,
                      quick: Mapping[Ident, str] | None = None) -> None:
    """Bring an existing service we own to the configured attributes and real servers.
    quick: real servers to delete at once, without draining, and why (health)."""
    if service.attributes() != seen.attributes():
        plan.add(("ipvsadm", "-E", *service.service_args()),
                 f"service attributes were {' '.join(seen.service_args()[2:])}")
    if same_real_servers_in_order(service, seen):
        # The usual reload: the kernel lists real servers in the order they were added,
        # which is the config's. Pairwise, without hashing 2 x N addresses (ipaddress
        # hashes in Python: half of a 10,000-server plan).
        for dest, running in zip(service.destinations, seen.destinations):
            _plan_real_server_edit(plan, service, dest, running)
        return
    have = {d.ident: d for d in seen.destinations}
    want = {d.ident: d for d in service.destinations}
    for ident, dest in want.items():
        old = have.get(ident)
        if old is None:
            plan.add(("ipvsadm", "-a", *service.destination_args(dest)), "real server")
        else:
            _plan_real_server_edit(plan, service, dest, old)
    for ident, old in have.items():
        if ident not in want:
            why = (quick or {}).get(ident)
            wait = None
            if drain and why is None:
                _weight_zero(plan, seen, old)
                wait = Drain(service.key, ident, service.drain_seconds)
            removals.add(("ipvsadm", "-d", *service.key.args(), "-r", old.endpoint()),
                         why or "real server no longer configured", drain=wait)


def same_real_servers_in_order(service: VirtualService, seen: VirtualService) -> bool:
    """Compared in C: ipaddress's __eq__ is Python, and this runs over every real server
    twice a reload. Two addresses are equal when their family and integer value are,
    which is what ipaddress's own __eq__ compares (and an IPv6 scope id, which neither
    a config nor `ipvsadm -S -n` ever has)."""
    return len(service.destinations) == len(seen.destinations) and list(
        map(_PLACE, service.destinations)) == list(map(_PLACE, seen.destinations))


# A real server's identity as plain ints: port, address value, family.
_PLACE = attrgetter("port", "address._ip", "address._version")


def _plan_real_server_edit(plan: Plan, service: VirtualService, dest: Destination,
                           old: Destination) -> None:
    if (old.forwarding, old.weight, old.upper, old.lower, old.tunnel) != (
            dest.forwarding, dest.weight, dest.upper, dest.lower, dest.tunnel):
        was = service.destination_args(old)[len(service.key.args()) + 2:]
        plan.add(("ipvsadm", "-e", *service.destination_args(dest)),
                 f"real server was {' '.join(was)}")


def _plan_arping(plan: Plan, director: DirectorConfig, obs: HostObservation,
                 vips: list[IPAddress]) -> None:
    """Gratuitous ARP for the VIPs, so the gateway forgets whoever had them before. Optional:
    a failure is a warning, and the VIP stays unannounced for the next start to retry."""
    if director.arping_count == 0:
        return
    arping = obs.arping or Arping("iputils")
    for vip in vips:
        if vip.version != 4:
            continue  # IPv6 neighbours learn from unsolicited NAs, not ARP
        target: IPAddress = director.gateway if (
            director.gateway is not None and director.gateway.version == 4) else vip
        plan.add(arping.announce(director.interface, vip, target, director.arping_count),
                 f"tell {'the gateway' if target != vip else 'the LAN'} that {vip} is here",
                 Announced(director.interface, vip_cidr(vip)), optional=True,
                 done_despite=(1,))


def unmanaged_notes(plan: Plan, obs: HostObservation, state: State) -> None:
    """Stop leaves services it did not create; say which."""
    for key in obs.ipvs:
        if not state.owns_service(key):
            plan.notes.append(f"{key} was not created by lvs-director: left untouched")
