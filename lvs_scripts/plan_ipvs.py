"""The director's planners for what surrounds its IPVS table: the nftables marks of fwmark
services (nft.py) and the sysctls ([director.sysctl], and forwarding for NAT services).

Like the rest of plan_director: pure, (config, observed host, our state) -> steps.
"""

from __future__ import annotations

from .model import Config, Forwarding
from .nft import NFT_APPLY, TABLE, table_text, wanted_rules
from .owned import NftTableCreated, SysctlChanged, undo_nft_table, undo_sysctl
from .plan import Plan
from .probes import HostObservation
from .state import State

IPV4_FORWARD = "net.ipv4.ip_forward"
IPV6_FORWARD = "net.ipv6.conf.all.forwarding"


def director_sysctls(config: Config) -> dict[str, int]:
    """Every sysctl the director sets: [director.sysctl] (net.ipv4.vs.*), and forwarding
    for the address families of the NAT services (their replies come back through the
    director, which must route them to the client)."""
    director = config.require_director()
    wanted = dict(director.sysctl)
    for service in config.services:
        if service.forwards_by(Forwarding.NAT):
            ipv6 = service.key.ipv6 or (service.key.address is not None
                                        and service.key.address.version == 6)
            wanted[IPV6_FORWARD if ipv6 else IPV4_FORWARD] = 1
    return wanted


def plan_sysctls(plan: Plan, config: Config, obs: HostObservation, state: State) -> None:
    """Set what differs, remembering the value before (stop puts it back); put back the
    ones we set that the config no longer wants."""
    wanted = director_sysctls(config)
    for key, value in wanted.items():
        have = obs.sysctls.get(key)
        if have != value:
            plan.add(("sysctl", "-w", f"{key}={value}"),
                     f"was {have if have is not None else 'unknown'}",
                     SysctlChanged(key, have, value) if have is not None else None)
    elsewhere = set()  # keys other planners own
    if config.bgp is not None:
        from .bgp import sloppy_keys

        elsewhere |= set(sloppy_keys(config))  # bgp._plan_sloppy
    for key, owned in state.sysctls.items():
        # ndisc_notify is the VIPs' business (plan_director._plan_ndisc_notify)
        if key not in wanted and key not in elsewhere and not key.endswith("ndisc_notify"):
            undo_sysctl(plan, obs, owned)


def plan_marks(plan: Plan, config: Config, obs: HostObservation, state: State) -> None:
    """Our nftables table per family, as the fwmark services want it: created when absent,
    replaced whole when it differs (deleted by plan_unwanted_marks when no fwmark service
    of its family is left). A table of that name we did not create is someone else's:
    never touched, a conflict."""
    wanted = wanted_rules(config.services)
    for family, rules in wanted.items():
        seen = obs.nft.get(family)
        owned = family in state.nft_tables
        if seen is None:
            plan.add(NFT_APPLY, f"mark the packets of the fwmark services ({family})",
                     NftTableCreated(family), stdin=table_text(family, rules, replace=False))
        elif not owned:
            plan.notes.append(f"nftables table {family} {TABLE} exists but was not created "
                              "by lvs-director: not managed, left untouched")
            plan.conflicts.append(
                f"nftables table {family} {TABLE} is held by someone else; the fwmark "
                f"services need it: remove it (nft delete table {family} {TABLE}) or "
                "change the config")
        elif seen.rules != rules:
            plan.add(NFT_APPLY, f"the marks of the fwmark services differ ({seen.describe()})",
                     stdin=table_text(family, rules, replace=True))


def plan_unwanted_marks(plan: Plan, config: Config, obs: HostObservation, state: State) -> None:
    """Our tables of a family no fwmark service uses any more: deleted after the services
    (a draining service keeps its marks until it is gone)."""
    wanted = wanted_rules(config.services)
    for family, table in state.nft_tables.items():
        if family not in wanted:
            undo_nft_table(plan, obs, table)
