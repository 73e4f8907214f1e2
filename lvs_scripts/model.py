"""Desired and observed state as frozen data.

A virtual service's identity (ServiceKey) is kept apart from its attributes
(scheduler, persistence): a new identity means add/delete, new attributes mean
edit (ipvsadm -E / -e). The same classes describe the config and what
`ipvsadm -S -n` reports, so the planner compares like with like.
"""

from __future__ import annotations

import ipaddress
from _socket import inet_ntoa as _ntoa  # the C module alone: socket.py builds enums
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from operator import attrgetter
from typing import TYPE_CHECKING, Union

from .record import Record, field

if TYPE_CHECKING:
    from .checks import CheckSpec
    from .tunnel import Tunnel

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]

# Schedulers of the mainline kernel (net/netfilter/ipvs/ip_vs_*.c); twos is 6.2+.
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf",
              "mh", "twos")
DEFAULT_DRAIN_SECONDS = 30
# ipvsadm -b: each flag belongs to one scheduler (ip_vs_sh.c, ip_vs_mh.c use the service's
# SCHED1/SCHED2 bits), in the order ipvsadm prints them.
SCHEDULER_FLAGS = {"sh-fallback": "sh", "sh-port": "sh", "mh-fallback": "mh",
                   "mh-port": "mh"}
PERSISTENCE_ENGINES = ("sip",)  # --pe: the kernel's only one (ip_vs_pe_sip.c)


class Protocol(str, Enum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"
    FWMARK = "fwmark"

    @property
    def flag(self) -> str:
        return {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service", "fwmark": "-f"}[self.value]


class Forwarding(str, Enum):
    DR = "dr"
    TUN = "tun"
    NAT = "nat"

    @property
    def flag(self) -> str:
        # _value_, not value (a Python-level property of Enum): read once per real server
        return _FORWARDING_FLAGS[self._value_]

    @classmethod
    def from_flag(cls, flag: str) -> Forwarding:
        return {"-g": cls.DR, "-i": cls.TUN, "-m": cls.NAT}[flag]


_FORWARDING_FLAGS = {"dr": "-g", "tun": "-i", "nat": "-m"}


def endpoint(address: IPAddress, port: int) -> str:
    """ipvsadm's numeric address:port, IPv6 in brackets."""
    # Written once per real server by the planner and by status: isinstance and `!s` skip
    # ipaddress's Python `version` and `__format__` (the same text, two calls fewer).
    if isinstance(address, ipaddress.IPv6Address):
        return f"[{address!s}]:{port}"
    return f"{address!s}:{port}"


@dataclass(frozen=True)
class ServiceKey:
    """What identifies a virtual service in the kernel."""

    protocol: Protocol
    address: IPAddress | None  # None for fwmark services
    port: int  # the mark, for fwmark services
    ipv6: bool = False  # only meaningful for fwmark services

    def args(self) -> tuple[str, ...]:
        if self.protocol is Protocol.FWMARK:
            return ("-f", str(self.port), "-6") if self.ipv6 else ("-f", str(self.port))
        if self.address is None:
            raise ValueError(f"{self.protocol.value} service without an address")
        return (self.protocol.flag, endpoint(self.address, self.port))

    def __str__(self) -> str:
        if self.protocol is Protocol.FWMARK:
            return f"fwmark {self.port}" + (" (IPv6)" if self.ipv6 else "")
        return f"{self.protocol.value} {self.args()[1]}"


@dataclass(frozen=True)
class Destination:
    """A real server inside one virtual service. Identity: (address, port)."""

    address: IPAddress
    port: int
    forwarding: Forwarding = Forwarding.DR
    weight: int = 1
    upper: int = 0  # -x: no new connections at this many (0: no limit)
    lower: int = 0  # -y: new connections again below this many
    tunnel: Tunnel | None = None  # TUN only: --tun-type/--tun-port/--tun-*csum

    @property
    def ident(self) -> tuple[IPAddress, int]:
        return (self.address, self.port)

    def endpoint(self) -> str:
        return endpoint(self.address, self.port)


class Match(Record):
    """What a fwmark service's nftables rule marks: packets to this VIP, protocol, port."""

    address: IPAddress
    port: int
    protocol: Protocol = Protocol.TCP


class VirtualService(Record):
    key: ServiceKey
    scheduler: str = "wlc"
    persistence: int = 0  # seconds; 0 = not persistent
    netmask: str | None = None  # -M, as ipvsadm prints it (None: a single address)
    extra: tuple[str, ...] = ()  # options we do not model
    destinations: tuple[Destination, ...] = ()
    flags: tuple[str, ...] = ()  # -b, in SCHEDULER_FLAGS order
    one_packet: bool = False  # -o: UDP, every datagram scheduled on its own
    pe: str | None = None  # --pe: the persistence engine
    # fwmark services: the packets nftables marks (what the kernel's IPVS table does not
    # hold, so not compared).
    match: tuple[Match, ...] = field(default=(), compare=False)
    drain_seconds: int = field(default=DEFAULT_DRAIN_SECONDS, compare=False)
    # Health checking (lvs-director watch): not part of what the kernel holds, so not
    # compared (the observed service has neither).
    check: CheckSpec | None = field(default=None, compare=False)
    sorry_server: Destination | None = field(default=None, compare=False)  # weight 1

    def attributes(self) -> tuple[object, ...]:
        """What `ipvsadm -E` sets: compared to decide whether an edit is due."""
        return (self.scheduler, self.persistence, self.netmask, self.flags, self.one_packet,
                self.pe, self.extra)

    def service_args(self) -> tuple[str, ...]:
        """`-t VIP:PORT -s SCHED [-p N [-M MASK]] [--pe PE] [-o] [-b FLAGS]`: the part
        after -A / -E, in the order `ipvsadm -S` prints it. Everything is given, because
        -E resets what it is not told (flags, -o, the engine)."""
        args = [*self.key.args(), "-s", self.scheduler]
        if self.persistence:
            args += ["-p", str(self.persistence)]
            if self.netmask:
                args += ["-M", self.netmask]
        if self.pe:
            args += ["--pe", self.pe]
        if self.one_packet:
            args.append("-o")
        if self.flags:
            args += ["-b", ",".join(self.flags)]
        args += self.extra
        return tuple(args)

    def destination_args(self, dest: Destination) -> tuple[str, ...]:
        """`-t VIP:PORT -r RIP:PORT -g -w N [-x U] [-y L] [--tun-...]`: the part after -a /
        -e, all attributes given because -e resets whatever it is not told."""
        return (*self.key.args(), *real_server_options(dest))

    def forwards_by(self, forwarding: Forwarding) -> bool:
        """Does any real server use this forwarding? (A scan in C: planning and observing
        ask it of every service, at every reload.)"""
        return forwarding in map(_FORWARDING, self.destinations)

    def has_thresholds(self) -> bool:
        """Does any real server have -x or -y?"""
        return any(map(_UPPER, self.destinations)) or any(map(_LOWER, self.destinations))

    def has_tunnel_options(self) -> bool:
        """Does any real server have --tun-type and the like?"""
        return any(map(_TUNNEL, self.destinations))  # a Tunnel is always true

    def vips(self) -> tuple[IPAddress, ...]:
        """The addresses clients reach this service on: its VIP, or a fwmark service's
        match addresses."""
        if self.key.address is not None:
            return (self.key.address,)
        return _unique(m.address for m in self.match)


IpvsTable = dict[ServiceKey, VirtualService]


def address_text(address: IPAddress) -> str:
    """str(address); an IPv4 address through the C library (ipaddress's __str__ is
    Python, 3 us: status wrote 100,000 of them)."""
    if type(address) is ipaddress.IPv4Address:
        return _ntoa(int(address).to_bytes(4, "big"))
    return str(address)

_FORWARDING = attrgetter("forwarding")
_UPPER = attrgetter("upper")
_LOWER = attrgetter("lower")
_TUNNEL = attrgetter("tunnel")


class Timeouts(Record):
    """ipvsadm --set tcp tcpfin udp; 0 means "leave unchanged"."""

    tcp: int = 0
    tcpfin: int = 0
    udp: int = 0

    def args(self) -> tuple[str, str, str]:
        return (str(self.tcp), str(self.tcpfin), str(self.udp))

    def over(self, base: Timeouts) -> Timeouts:
        """What the kernel holds after `--set` of these over `base` (0 leaves one as is)."""
        return Timeouts(self.tcp or base.tcp, self.tcpfin or base.tcpfin, self.udp or base.udp)

    def in_effect(self, seen: Timeouts | None) -> bool:
        """Do the observed timeouts show these? A 0 always does (it leaves one unchanged);
        nothing observed shows only all-zero ones."""
        have = (seen.tcp, seen.tcpfin, seen.udp) if seen else (None, None, None)
        return all(want in (0, old) for want, old in zip((self.tcp, self.tcpfin, self.udp),
                                                          have))


class DirectorConfig(Record):
    interface: str
    gateway: IPAddress | None = None
    dip: IPInterface | None = None
    dip_interface: str | None = None
    timeouts: Timeouts | None = None
    arping_count: int = 5
    allow_no_services: bool = False  # a config without [[service]] is a mistake unless said
    metrics: tuple[IPAddress, int] | None = None  # where `watch` serves Prometheus metrics
    sysctl: tuple[tuple[str, int], ...] = ()  # [director.sysctl]: (net.ipv4.vs.KEY, value)


class RealServerConfig(Record):
    arp_interfaces: tuple[str, ...] = ()
    allow_no_services: bool = False
    nat_gateway: IPAddress | None = None  # NAT: default route via (else director.dip)


class HaDirector(Record):
    """One member of a director pair: [ha] directors = [{name, dip, priority}]."""

    name: str
    dip: IPInterface
    priority: int


class HaConfig(Record):
    """[ha]: two (or more) directors sharing the VIPs through keepalived's VRRP, their
    connection tables kept in step by the kernel's IPVS sync daemons."""

    interface: str  # VRRP adverts, the sync traffic and each director's DIP go here
    virtual_router_id: int
    advert_interval: int
    preempt: bool
    syncid: int
    directors: tuple[HaDirector, ...]

    def member(self, name: str) -> HaDirector | None:
        return next((d for d in self.directors if d.name == name), None)


class BgpNeighbor(Record):
    """One BGP peer of [bgp]: a router that spreads the VIPs' traffic over the directors."""

    address: IPAddress
    asn: int  # its AS (the key `as` in the file)


class BgpConfig(Record):
    """[bgp]: every director announces the VIPs to the routers, which spread the flows
    over all of them (ECMP); BIRD 2 speaks BGP, lvs-director runs it (bgp.py)."""

    local_as: int
    neighbors: tuple[BgpNeighbor, ...]
    hold_time: int = 9


class Config(Record):
    path: str
    director: DirectorConfig | None
    realserver: RealServerConfig
    services: tuple[VirtualService, ...]
    ha: HaConfig | None = None
    bgp: BgpConfig | None = None

    def require_director(self) -> DirectorConfig:
        """The [director] table, which lvs-director cannot do without."""
        if self.director is None:
            from .errors import ConfigError

            raise ConfigError(self.path, "director", None,
                              "no [director] table: lvs-director needs one")
        return self.director

    def require_services(self, role: str) -> None:
        """At least one [[service]] for `role` ("director" or "realserver"), unless its table
        says `allow_no_services = true`: an empty or comment-only file (or /dev/null) would
        otherwise start as "nothing to configure" and report "running as configured"."""
        table = self.require_director() if role == "director" else self.realserver
        if self.services or table.allow_no_services:
            return
        from .errors import ConfigError

        raise ConfigError(self.path, "service", None,
                          f"no [[service]] in the file: lvs-{role} would have nothing to set "
                          f"up; add one, or set {role}.allow_no_services = true")

    def director_vips(self) -> tuple[IPAddress, ...]:
        """Every VIP, once, in config order: the director must own all of them."""
        return _unique(vip for s in self.services for vip in s.vips())

    def realserver_vips(self) -> tuple[IPAddress, ...]:
        """VIPs a DR real server must accept locally (on lo) without answering ARP for them."""
        return _unique(
            vip
            for s in self.services
            if any(d.forwarding is Forwarding.DR for d in s.destinations)
            for vip in s.vips()
        )


def _unique(items: Iterable[IPAddress]) -> tuple[IPAddress, ...]:
    return tuple(dict.fromkeys(items))


def real_server_options(dest: Destination) -> tuple[str, ...]:
    """`-r RIP:PORT -g -w N [-x U] [-y L] [--tun-...]`: destination_args after the
    service's part (which a planner of many real servers writes once per service)."""
    args: tuple[str, ...] = ("-r", dest.endpoint(), dest.forwarding.flag, "-w",
                             str(dest.weight))
    if dest.upper:
        args += ("-x", str(dest.upper))
    if dest.lower:
        args += ("-y", str(dest.lower))
    if dest.tunnel is not None:
        args += dest.tunnel.args()
    return args
