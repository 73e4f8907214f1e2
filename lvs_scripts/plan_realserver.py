"""Pure planners for a DR real server: VIPs on lo, ARP kept quiet about them."""

from __future__ import annotations

from .model import Config
from .owned import (
    AddressAdded,
    SysctlChanged,
    add_vip_argv,
    plan_unwanted_addresses,
    undo_sysctl,
    vip_cidr,
)
from .plan import Plan
from .probes import HostObservation, sysctl_key
from .record import Record
from .state import State

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
    return {setting.key: setting.value for setting in arp_settings(config)}


def plan_realserver_start(config: Config, obs: HostObservation, state: State) -> Plan:
    plan = Plan()
    lo = obs.links.get("lo")
    if lo is not None and not lo.up:
        plan.add(("ip", "link", "set", "dev", "lo", "up"), "loopback is down")
    # ARP first: a VIP on lo before arp_ignore is set would answer ARP and steal the VIP
    # from the director for as long as the router caches it.
    settings = arp_settings(config)
    for setting in settings:
        have = obs.sysctls.get(setting.key)
        if have not in setting.accepted:
            plan.add(("sysctl", "-w", f"{setting.key}={setting.value}"),
                     f"was {have if have is not None else 'unknown'}",
                     SysctlChanged(setting.key, have, setting.value)
                     if have is not None else None)
    wanted = config.realserver_vips()
    for vip in wanted:
        if not obs.has_address("lo", vip):
            plan.add(add_vip_argv(vip, "lo"), "accept the VIP locally (DR)",
                     AddressAdded("lo", vip_cidr(vip)))
    plan_unwanted_addresses(plan, obs, state, {("lo", vip_cidr(vip)) for vip in wanted})
    # Settings of interfaces that left arp_interfaces go back now, not only at stop.
    keys = {setting.key for setting in settings}
    for key, owned in state.sysctls.items():
        if key not in keys:
            undo_sysctl(plan, obs, owned)
    return plan
