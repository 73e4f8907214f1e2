"""Build observed hosts for planner tests from the text the real tools print."""

from __future__ import annotations

from lvs_scripts.probes import (
    Arping,
    HostObservation,
    parse_default_routes,
    parse_ip_addrs,
    parse_ip_links,
    parse_ipvs_save,
    parse_timeouts,
)


def link_lines(*names: str, down: tuple[str, ...] = ()) -> str:
    lines = []
    for index, name in enumerate(names, start=1):
        flags = "LOOPBACK" if name == "lo" else "BROADCAST,MULTICAST"
        if name not in down:
            flags += ",UP,LOWER_UP"
        kind = "loopback" if name == "lo" else "ether"
        lines.append(f"{index}: {name}: <{flags}> mtu 1500 qdisc noqueue state UP mode DEFAULT "
                     f"group default qlen 1000\\    link/{kind} 52:54:00:12:34:{index:02x} brd "
                     "ff:ff:ff:ff:ff:ff")
    return "\n".join(lines)


def addr_lines(*entries: tuple[str, str]) -> str:
    """entries: (device, cidr)."""
    index = {}
    lines = []
    for device, cidr in entries:
        number = index.setdefault(device, len(index) + 1)
        family = "inet6" if ":" in cidr else "inet"
        lines.append(f"{number}: {device}    {family} {cidr} scope global {device}\\       "
                     "valid_lft forever preferred_lft forever")
    return "\n".join(lines)


def host(links: str = "", addrs: str = "", routes: str = "", routes6: str = "", ipvs: str = "",
         timeouts: str = "", sysctls: dict[str, int] | None = None,
         arping: str = "iputils", nft: dict[str, str] | None = None) -> HostObservation:
    """nft: `nft list table FAMILY lvs_scripts` output by family, for the tables present."""
    from lvs_scripts.nft import parse_table

    return HostObservation(
        addresses=parse_ip_addrs(addrs),
        links=parse_ip_links(links),
        routes=parse_default_routes(routes) + parse_default_routes(routes6, 6),
        ipvs=parse_ipvs_save(ipvs),
        timeouts=parse_timeouts(timeouts) if timeouts else None,
        sysctls=dict(sysctls or {}),
        arping=Arping(arping),
        nft={family: parse_table(family, text) for family, text in (nft or {}).items()},
    )
