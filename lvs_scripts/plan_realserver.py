"""Pure planners for a real server: DR (VIPs on lo, ARP kept quiet about them), TUN (the
tunnel device, its VIPs and the rest that tunnel.py describes) and NAT (the default
route via the director)."""

from __future__ import annotations

from .model import Config, Forwarding, IPAddress
from .owned import (
    AddressAdded,
    FouAdded,
    LinkCreated,
    LinkUp,
    SysctlChanged,
    add_vip_argv,
    plan_default_route,
    plan_unwanted_addresses,
    undo_sysctl,
    undo_tunnels,
    vip_cidr,
)
from .plan import Plan
from .probes import HostObservation, sysctl_key
from .record import Record
from .state import State
from .tunnel import TunnelNeeds, tunnel_needs

# arp_ignore=1: answer only for addresses on the interface the request came in on (the VIP
# is on lo, so never); 2 (also only from the same subnet) and 8 (never answer) are stricter
# and keep ARP just as quiet, so a host set that way is left so. arp_announce=2: never use
# the VIP as the source of our own ARP (2 is the strictest value).
ARP_SETTINGS = (("arp_ignore", 1, frozenset({1, 2, 8})), ("arp_announce", 2, frozenset({2})))


class ArpSetting(Record):
    interface: str
    name: str
    value: int  # what we set
    accepted: frozenset[int]  # values that need no change

    @property
    def key(self) -> str:
        return sysctl_key(self.interface, self.name)


def arp_settings(config: Config) -> list[ArpSetting]:
    """Every sysctl we set: on "all" and each listed interface (the kernel uses the
    maximum of the two, so "all" alone would do; the interfaces are belt and braces)."""
    return [ArpSetting(iface, name, value, accepted)
            for iface in ("all", *config.realserver.arp_interfaces)
            for name, value, accepted in ARP_SETTINGS]


def arp_keys(config: Config) -> dict[str, int]:
    """Every sysctl start sets, with its value: the ARP settings and TUN's rp_filter."""
    settings = quiet_arp_settings(config) + rp_filter_settings(tunnel_needs(config))
    return {setting.key: setting.value for setting in settings}


def quiet_arp_settings(config: Config) -> list[ArpSetting]:
    """The ARP settings, unless every service is NAT: a NAT real server holds no VIP."""
    if config.services and all(d.forwarding is Forwarding.NAT for s in config.services
                               for d in s.destinations):
        return []
    return arp_settings(config)


# Strict reverse-path filtering (1) drops a decapsulated packet: it comes in on the
# tunnel device from the client, whose route leaves by another interface. 2 (loose)
# and 0 (off) let it through; the kernel uses max(all, device).
RP_FILTER = ("rp_filter", 2, frozenset({0, 2}))
RP_DEFAULT = sysctl_key("default", "rp_filter")


def rp_filter_settings(needs: TunnelNeeds) -> list[ArpSetting]:
    name, value, accepted = RP_FILTER
    devices = needs.rp_devices
    return [ArpSetting(iface, name, value, accepted)
            for iface in (("all", *devices) if devices else ())]


def nat_gateway(config: Config) -> IPAddress | None:
    """The NAT real servers' default gateway: `realserver.nat_gateway`, else the
    director's DIP; None when no service is NAT."""
    if not any(s.forwards_by(Forwarding.NAT) for s in config.services):
        return None
    if config.realserver.nat_gateway is not None:
        return config.realserver.nat_gateway
    director = config.director
    return director.dip.ip if director is not None and director.dip is not None else None


def require_nat_gateway(config: Config) -> None:
    """lvs-realserver with a NAT service must know where its replies go."""
    from .errors import ConfigError

    if nat_gateway(config) is None and any(
            d.forwarding is Forwarding.NAT for s in config.services for d in s.destinations):
        raise ConfigError(config.path, "realserver.nat_gateway", None,
                          "is required with forwarding = \"nat\" (or director.dip): the "
                          "real servers' replies must go back through the director")


def plan_realserver_start(config: Config, obs: HostObservation, state: State) -> Plan:
    plan = Plan()
    lo = obs.links.get("lo")
    if lo is not None and not lo.up:
        plan.add(("ip", "link", "set", "dev", "lo", "up"), "loopback is down")
    # ARP first: a VIP on lo before arp_ignore is set would answer ARP and steal the VIP
    # from the director for as long as the router caches it.
    settings = quiet_arp_settings(config)
    for setting in settings:
        _plan_sysctl(plan, obs, setting)
    needs = tunnel_needs(config)
    keys = {setting.key for setting in settings}
    keys |= _plan_tunnels(plan, obs, state, needs)
    wanted = config.realserver_vips()
    for vip in wanted:
        if not obs.has_address("lo", vip):
            plan.add(add_vip_argv(vip, "lo"), "accept the VIP locally (DR)",
                     AddressAdded("lo", vip_cidr(vip)))
    wanted_addresses = {("lo", vip_cidr(vip)) for vip in wanted}
    wanted_addresses |= _plan_tunnel_vips(plan, obs, needs)
    plan_default_route(plan, nat_gateway(config), obs, state)
    plan_unwanted_addresses(plan, obs, state, wanted_addresses)
    undo_tunnels(plan, obs, state, frozenset(needs.fou), frozenset(needs.devices))
    # Settings of interfaces that left arp_interfaces go back now, not only at stop.
    for key, owned in state.sysctls.items():
        if key not in keys:
            undo_sysctl(plan, obs, owned)
    return plan


def _plan_tunnel_vips(plan: Plan, obs: HostObservation, needs: TunnelNeeds
                      ) -> set[tuple[str, str]]:
    wanted = set()
    for device, vips in needs.vips.items():
        for vip in vips:
            wanted.add((device, vip_cidr(vip)))
            if not obs.has_address(device, vip):
                plan.add(add_vip_argv(vip, device), "accept the VIP from the tunnel (TUN)",
                         AddressAdded(device, vip_cidr(vip)))
    return wanted


def _plan_sysctl(plan: Plan, obs: HostObservation, setting: ArpSetting,
                 have: int | None = None, record: bool = True) -> None:
    have = obs.sysctls.get(setting.key) if have is None else have
    if have not in setting.accepted:
        plan.add(("sysctl", "-w", f"{setting.key}={setting.value}"),
                 f"was {have if have is not None else 'unknown'}",
                 SysctlChanged(setting.key, have, setting.value)
                 if have is not None and record else None)


def _plan_tunnels(plan: Plan, obs: HostObservation, state: State, needs: TunnelNeeds
                  ) -> set[str]:
    """Modules, devices (created where missing, brought up), rp_filter and GUE ports;
    the VIPs go on the devices after this. Returns the sysctl keys it manages."""
    seen = obs.tunnels
    for module in needs.modules:
        if module not in seen.loaded:
            plan.add(("modprobe", module), "a TUN real server needs it (stop leaves "
                     "modules loaded)")
    rp_settings = {s.interface: s for s in rp_filter_settings(needs)}
    if "all" in rp_settings:
        _plan_sysctl(plan, obs, rp_settings["all"])
    for name, end in needs.devices.items():
        link = obs.links.get(name)
        # Loading the module creates the device (the kernel's "fallback" tunnel) unless
        # net.core.fb_tunnels_only_for_init_net keeps it from this namespace; outside
        # the initial namespace that cannot be known beforehand: then the creation may
        # say "File exists", and the kernel's device serves (optional step).
        loaded = end.modules[-1] in seen.loaded
        created = link is None and (loaded or seen.fallback is False)
        if created or (link is None and seen.fallback is None):
            plan.add(end.create_argv(name in needs.checksummed),
                     f"receives the {end.link_type} packets of any sender"
                     + ("" if created else " (unless loading the module just made it)"),
                     LinkCreated(name), optional=not created, done_despite=())
        owned = state.links.get(name)
        if link is not None and name in needs.checksummed and not (owned and owned.created):
            # Seen on 6.1: GRE with a checksum is dropped by a device without icsum, and
            # the kernel's fallback gre0 cannot be given one (nor replaced while it exists).
            plan.conflicts.append(
                f"{name} is not a device lvs-realserver created (the kernel's fallback "
                "device?): it drops checksummed GRE, which tun_checksum = \"csum\" asks "
                "for; use tun_checksum = \"none\", or a host where "
                "net.core.fb_tunnels_only_for_init_net = 2 keeps the fallback away")
        if link is None or not link.up:
            why = "created by loading its module" if link is None and not created else \
                "the tunnel's packets come out here"
            plan.add(("ip", "link", "set", "dev", name, "up"), why, LinkUp(name))
        setting = rp_settings.get(name)
        if setting is not None:
            # A device that does not exist yet gets net.ipv4.conf.default's value; one
            # start creates goes with stop, its settings too (nothing to record).
            have = obs.sysctls.get(RP_DEFAULT) if link is None else None
            _plan_sysctl(plan, obs, setting, have, record=not created)
    for fou in needs.fou:
        if fou not in seen.fou:
            plan.add(("ip", "fou", "add", *fou.args()), "strip the GUE header (TUN, gue)",
                     FouAdded(fou.port, fou.family))
    return {s.key for s in rp_settings.values()}
