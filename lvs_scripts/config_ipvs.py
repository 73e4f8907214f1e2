"""The config keys of the rest of ipvsadm, fwmark services and [director.sysctl].

Split from config.py so that each rule sits beside its reason; every error names the
file, the key and the value, like the rest of the config (config._Reader.fail).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .model import (
    PERSISTENCE_ENGINES,
    SCHEDULER_FLAGS,
    IPAddress,
    Match,
    Protocol,
    VirtualService,
)

if TYPE_CHECKING:
    from .config import _Reader

MAX_THRESHOLD = 2**31 - 1  # ipvsadm: string_to_number(optarg, 0, INT_MAX)

# [director.sysctl]: the net.ipv4.vs.* keys an operator sets on a director, with the values
# the kernel gives them a meaning (Documentation/networking/ipvs-sysctl.rst): a bitmap of
# two bits for conn_reuse_mode, booleans for the rest.
IPVS_SYSCTLS = {"conn_reuse_mode": 3, "expire_nodest_conn": 1,
                "expire_quiescent_template": 1, "sloppy_tcp": 1, "sloppy_sctp": 1}


def ipvs_sysctl_key(name: str) -> str:
    return f"net.ipv4.vs.{name}"


def thresholds(r: _Reader, rs: Mapping[str, Any], where: str) -> tuple[int, int]:
    """`upper`/`lower` (ipvsadm -x/-y). The kernel refuses a lower threshold above the
    upper one (ERANGE), and 0 as upper means "no limit", so lower needs upper."""
    if "upper" not in rs and "lower" not in rs:
        return 0, 0  # as most real servers have it: no need to look further
    upper = r.integer(rs, "upper", where, 0, MAX_THRESHOLD, 0)
    lower = r.integer(rs, "lower", where, 0, MAX_THRESHOLD, 0)
    if lower and not upper:
        raise r.fail(f"{where}.lower", lower, "needs upper (new connections stop at upper "
                     "and start again below lower)")
    if lower > upper:
        raise r.fail(f"{where}.lower", lower, f"must not be above upper ({upper})")
    return upper, lower


def service_options(r: _Reader, s: Mapping[str, Any], where: str,
                    protocols: set[Protocol], scheduler: str, persistence: int,
                    version: int) -> dict[str, Any]:
    """scheduler_flags (-b), one_packet (-o), persistence_netmask (-M) and
    persistence_engine (--pe), as VirtualService fields, each checked against what the
    kernel would do with it."""
    return {"flags": _flags(r, s, where, scheduler),
            "one_packet": _one_packet(r, s, where, protocols),
            "netmask": _netmask(r, s, where, persistence, version),
            "pe": _engine(r, s, where, protocols, persistence)}


def _flags(r: _Reader, s: Mapping[str, Any], where: str, scheduler: str) -> tuple[str, ...]:
    key = f"{where}.scheduler_flags"
    flags = s.get("scheduler_flags", [])
    if not isinstance(flags, list):
        raise r.fail(key, flags, "must be a list, e.g. [\"sh-port\"]")
    for index, flag in enumerate(flags):
        if flag not in SCHEDULER_FLAGS:
            raise r.fail(f"{key}[{index}]", flag,
                         f"must be one of: {', '.join(SCHEDULER_FLAGS)}")
        if SCHEDULER_FLAGS[flag] != scheduler:
            raise r.fail(f"{key}[{index}]", flag,
                         f"is a flag of the {SCHEDULER_FLAGS[flag]} scheduler, but the service "
                         f"uses {scheduler} (the kernel would ignore it)")
        if flag in flags[:index]:
            raise r.fail(f"{key}[{index}]", flag, "is listed twice")
    # The order ipvsadm prints them in, so that the kernel's flags compare equal.
    return tuple(f for f in SCHEDULER_FLAGS if f in flags)


def _one_packet(r: _Reader, s: Mapping[str, Any], where: str,
                protocols: set[Protocol]) -> bool:
    one_packet = r.boolean(s, "one_packet", where)
    if one_packet and protocols != {Protocol.UDP}:
        raise r.fail(f"{where}.one_packet", one_packet,
                     "is for UDP services only (each datagram scheduled on its own; a TCP "
                     "connection cut that way would break)")
    return one_packet


def _netmask(r: _Reader, s: Mapping[str, Any], where: str, persistence: int,
             version: int) -> str | None:
    """A prefix length (24), or for IPv4 a netmask ("255.255.255.0"), normalised to what
    `ipvsadm -S` prints: the dotted netmask for IPv4, the prefix length for IPv6, and
    nothing for a single address (the default)."""
    key = f"{where}.persistence_netmask"
    if "persistence_netmask" not in s:
        return None
    value = s["persistence_netmask"]
    if not persistence:
        raise r.fail(key, value, "needs persistence (-M groups the clients that persistence "
                     "keeps on one real server)")
    bits = 32 if version == 4 else 128
    prefix: int | None = None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= bits:
        prefix = value
    elif isinstance(value, str) and version == 4:
        try:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{value}").prefixlen
        except ValueError:
            prefix = None
        if prefix == 0:
            prefix = None
    if prefix is None:
        raise r.fail(key, value, f"must be a prefix length from 1 to {bits}" + (
            " or a netmask such as \"255.255.255.0\"" if version == 4 else ""))
    if prefix == bits:
        return None
    if version == 4:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)
    return str(prefix)


def _engine(r: _Reader, s: Mapping[str, Any], where: str, protocols: set[Protocol],
            persistence: int) -> str | None:
    if "persistence_engine" not in s:
        return None
    key = f"{where}.persistence_engine"
    engine = r.choice(s, "persistence_engine", where, PERSISTENCE_ENGINES, "sip")
    if not persistence:
        raise r.fail(key, engine, "needs persistence (the engine decides what a persistent "
                     "client is: the SIP Call-ID)")
    if protocols != {Protocol.UDP}:
        raise r.fail(key, engine, "is for UDP services only (the kernel's SIP engine reads "
                     "UDP datagrams)")
    return engine


def fwmark_match(r: _Reader, s: Mapping[str, Any], where: str) -> tuple[Match, ...]:
    """`match = [{vip, port, protocol}, ...]`: at least one, all of one address family."""
    from .config import _host_address

    key = f"{where}.match"
    items = s.get("match")
    if items is None:
        raise r.fail(key, None, "is required with fwmark (the packets to mark: "
                     "[{ vip = \"...\", port = 80, protocol = \"tcp\" }, ...])")
    if not isinstance(items, list) or not items:
        raise r.fail(key, items, "must be a non-empty list of { vip, port, protocol }")
    found: list[Match] = []
    for index, item in enumerate(items):
        mwhere = f"{key}[{index}]"
        m = r.table(item, mwhere, ("vip", "port", "protocol"))
        vip = r.parsed(m, "vip", mwhere, _host_address, "must be an IP address of a host")
        if vip is None:
            raise r.fail(f"{mwhere}.vip", None, "is required")
        if found and vip.version != found[0].address.version:
            raise r.fail(f"{mwhere}.vip", str(vip),
                         f"is IPv{vip.version} but {key}[0].vip is "
                         f"IPv{found[0].address.version}; one fwmark service is of one "
                         "address family")
        match = Match(vip, r.integer(m, "port", mwhere, 1, 65535),
                      Protocol(r.choice(m, "protocol", mwhere, ("tcp", "udp", "sctp"),
                                        "tcp")))
        if match in found:
            raise r.fail(mwhere, f"{match.protocol.value} {vip} port {match.port}",
                         f"duplicates {key}[{found.index(match)}]")
        found.append(match)
    return tuple(found)


def check_matches(r: _Reader, services: tuple[VirtualService, ...]) -> None:
    """A packet matched twice would get one mark of the two, and a VIP:port that is also
    a service of its own would never reach it (IPVS looks up fwmark services first)."""
    plain: dict[tuple[Protocol, IPAddress | None, int], int] = {
        (s.key.protocol, s.key.address, s.key.port): i
        for i, s in enumerate(services) if not s.match}
    marked: dict[Match, str] = {}
    for index, service in enumerate(services):
        for mindex, match in enumerate(service.match):
            where = f"service[{index}].match[{mindex}]"
            shown = f"{match.protocol.value} {match.address} port {match.port}"
            other = plain.get((match.protocol, match.address, match.port))
            if other is not None:
                raise r.fail(where, shown, f"is also service[{other}]; IPVS would give "
                             "every such packet to the fwmark service")
            if match in marked:
                raise r.fail(where, shown, f"is also {marked[match]}; a packet gets one mark")
            marked[match] = where


def director_sysctl(r: _Reader, data: object) -> tuple[tuple[str, int], ...]:
    """[director.sysctl]: net.ipv4.vs.* settings, as (key, value) in file order. A boolean
    may be written true/false or 1/0 (as in sysctl.conf)."""
    where = "director.sysctl"
    d = r.table(data, where, tuple(IPVS_SYSCTLS))
    found = []
    for name, given in d.items():
        high = IPVS_SYSCTLS[name]
        value = int(given) if high == 1 and isinstance(given, bool) else given
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            rule = "must be true or false (or 1 or 0)" if high == 1 else (
                f"must be an integer from 0 to {high}")
            raise r.fail(f"{where}.{name}", given, rule)
        found.append((ipvs_sysctl_key(name), value))
    return tuple(found)
