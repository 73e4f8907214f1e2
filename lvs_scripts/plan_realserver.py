"""Pure planners for a DR real server: VIPs on lo, ARP kept quiet about them."""

from __future__ import annotations

from .model import Config
from .plan import AddressAdded, Plan, SysctlChanged, SysctlRestored
from .plan_director import (
    add_vip_argv,
    plan_unwanted_addresses,
    remove_owned_address,
    vip_cidr,
)
from .probes import HostObservation, sysctl_key
from .record import Record
from .state import State

# arp_ignore=1: answer only for addresses on the interface the request came in on (the VIP
# is on lo, so never). arp_announce=2: never use the VIP as the source of our own ARP.
ARP_SETTINGS = (("arp_ignore", 1), ("arp_announce", 2))


class ArpSetting(Record):
    interface: str
    name: str
    value: int

    @property
    def key(self) -> str:
        return sysctl_key(self.interface, self.name)


def arp_settings(config: Config) -> list[ArpSetting]:
    """Every sysctl we set: on "all" and each listed interface (the kernel uses the
    maximum of the two, so "all" alone would do; the interfaces are belt and braces)."""
    return [ArpSetting(iface, name, value)
            for iface in ("all", *config.realserver.arp_interfaces)
            for name, value in ARP_SETTINGS]


def arp_keys(config: Config) -> dict[str, int]:
    return {setting.key: setting.value for setting in arp_settings(config)}


def plan_realserver_start(config: Config, obs: HostObservation, state: State) -> Plan:
    plan = Plan()
    lo = obs.links.get("lo")
    if lo is not None and not lo.up:
        plan.add(("ip", "link", "set", "dev", "lo", "up"), "loopback is down")
    # ARP first: a VIP on lo before arp_ignore is set would answer ARP and steal the VIP
    # from the director for as long as the router caches it.
    for key, value in arp_keys(config).items():
        have = obs.sysctls.get(key)
        if have != value:
            plan.add(("sysctl", "-w", f"{key}={value}"),
                     f"was {have if have is not None else 'unknown'}",
                     SysctlChanged(key, have) if have is not None else None)
    wanted = config.realserver_vips()
    for vip in wanted:
        if not obs.has_address("lo", vip):
            plan.add(add_vip_argv(vip, "lo"), "accept the VIP locally (DR)",
                     AddressAdded("lo", vip_cidr(vip)))
    plan_unwanted_addresses(plan, obs, state, {("lo", vip_cidr(vip)) for vip in wanted})
    return plan


def plan_realserver_stop(config: Config, obs: HostObservation, state: State) -> Plan:
    """Remove the VIPs we added, then restore the ARP settings we changed. Loopback stays up."""
    plan = Plan()
    for device, cidr in state.addresses:
        remove_owned_address(plan, obs, device, cidr, "VIP")
    targets = arp_keys(config)
    for key, previous in state.sysctls.items():
        have = obs.sysctls.get(key)
        if have is not None and have != targets.get(key, have):
            plan.notes.append(f"{key} was changed to {have} since start: not restored to "
                              f"{previous}")
            plan.forget.append(SysctlRestored(key))
            continue
        plan.add(("sysctl", "-w", f"{key}={previous}"), "restore the value from before start",
                 SysctlRestored(key))
    return plan
