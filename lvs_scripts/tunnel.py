"""LVS-TUN: how the director encapsulates (ipvsadm's --tun-* options) and what a real
server needs to take the packets out again.

The director wraps each packet for the VIP in an outer header addressed to the real
server: IPIP (IPv4 in IPv4, or IPv6 in IPv6), GUE (the same, inside UDP to `tun_port`)
or GRE. The real server, which may sit in another subnet behind a router, needs

| tun_type | modules (IPv4 / IPv6)        | receives on                   | VIP on          |
| ipip     | ipip / ip6_tunnel            | tunl0 / ip6tnl0 (any to any)  | tunl0 / ip6tnl0 |
| gue      | fou, ipip / fou6, ip6_tunnel | `ip fou add port P gue [-6]`, | tunl0 / ip6tnl0 |
|          |                              | then tunl0 / ip6tnl0          |                 |
| gre      | ip_gre / ip6_gre             | gre0 / ip6gre0 (any to any)   | gre0 / ip6gre0  |

Loading ipip, ip_gre or ip6_tunnel creates the device (a "fallback" tunnel that takes
every packet no other tunnel claims) in every network namespace, unless
`net.core.fb_tunnels_only_for_init_net` says otherwise (1: only the initial namespace,
2: none); where it is missing, lvs-realserver creates a device of that name itself,
any to any, which the kernel's lookup finds the same way. A fallback device is never
deleted (the kernel refuses), only put back down if it was; one we created is deleted
by stop. Modules are loaded (`modprobe`), never unloaded: other tunnels may use them.

The decapsulated packet arrives on the tunnel device with the client's address as its
source, while the route back to the client leaves by another interface: strict reverse
path filtering (`rp_filter = 1`, effective value max(all, device)) drops it, so 1 is
loosened to 2 on `all` and on the device; 0 and 2 are kept as they are. IPv6 has no
rp_filter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .model import Forwarding, IPAddress, VirtualService
from .record import Record, field

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .config import _Reader
    from .model import Config

TUN_TYPES = ("ipip", "gue", "gre")
TUN_CHECKSUMS = ("none", "csum", "remcsum")
# The first kernel whose IPVS has each type (IP_VS_CONN_F_TUNNEL_TYPE_*): GUE came with
# Linux 5.2, GRE with 5.3; IPIP always was.
KERNEL_FOR_TYPE = {"ipip": (2, 6), "gue": (5, 2), "gre": (5, 3)}


@dataclass(frozen=True)
class Tunnel:
    """A TUN real server's encapsulation: ipvsadm's --tun-type, --tun-port and the
    checksum flag (--tun-nocsum is the kernel's default, "none")."""

    type: str = "ipip"
    port: int | None = None  # gue only
    checksum: str = "none"

    def args(self) -> tuple[str, ...]:
        """The words after `-i`: none for plain IPIP, which is what ipvsadm always did."""
        if self == Tunnel():
            return ()
        argv = ["--tun-type", self.type]
        if self.port is not None:
            argv += ["--tun-port", str(self.port)]
        if self.checksum != "none":
            argv.append(f"--tun-{self.checksum}")
        return tuple(argv)


_CHECKSUM_FLAGS = {"--tun-nocsum": "none", "--tun-csum": "csum", "--tun-remcsum": "remcsum"}


def tunnel_from_tokens(tokens: Sequence[str]) -> Tunnel:
    """The --tun-* options of one `-a`/`-e` rule (`ipvsadm -S -n` prints them after the
    weight); absent ones are the kernel's defaults."""
    kind, port, checksum = "ipip", None, "none"
    for index, word in enumerate(tokens):
        value = tokens[index + 1] if index + 1 < len(tokens) else None
        if word == "--tun-type" and value is not None:
            kind = value
        elif word == "--tun-port" and value is not None:
            port = int(value)
        elif word in _CHECKSUM_FLAGS:
            checksum = _CHECKSUM_FLAGS[word]
    # ipvsadm prints a GUE port only for GUE; a stray one is not part of the identity.
    return Tunnel(kind, port if kind == "gue" else None, checksum)


# --- the config keys ------------------------------------------------------------------

TUN_KEYS = ("tun_type", "tun_port", "tun_checksum")


def parse_tunnel(r: _Reader, s: Mapping[str, Any], where: str, forwarding: Forwarding,
                 ) -> Tunnel | None:
    """`tun_type`, `tun_port`, `tun_checksum` of a [[service]]: only with forwarding =
    "tun"; a port with gue only (and then required); remcsum with gue only, and no
    checksum at all with ipip (IPIP has no checksum field)."""
    given = [key for key in TUN_KEYS if key in s]
    if forwarding is not Forwarding.TUN:
        if given:
            raise r.fail(f"{where}.{given[0]}", s[given[0]],
                         f"only applies to forwarding = \"tun\" (this service is "
                         f"\"{forwarding.value}\")")
        return None
    kind = r.choice(s, "tun_type", where, TUN_TYPES, "ipip")
    checksum = r.choice(s, "tun_checksum", where, TUN_CHECKSUMS, "none")
    port = None
    if kind == "gue":
        port = r.integer(s, "tun_port", where, 1, 65535)
    elif "tun_port" in s:
        raise r.fail(f"{where}.tun_port", s["tun_port"],
                     f"only applies to tun_type = \"gue\" (this service is \"{kind}\")")
    if checksum == "remcsum" and kind != "gue":
        raise r.fail(f"{where}.tun_checksum", checksum,
                     "remote checksum offload exists for tun_type = \"gue\" only")
    if checksum != "none" and kind == "ipip":
        raise r.fail(f"{where}.tun_checksum", checksum,
                     "IPIP has no checksum: use tun_type = \"gue\" or \"gre\", or \"none\"")
    return Tunnel(kind, port, checksum)


def check_fou_ports(r: _Reader, services: Sequence[VirtualService]) -> None:
    """A GUE port on a real server is one UDP socket: it cannot also be a service's port
    of the same VIP family, where clients' UDP would land in the decapsulator."""
    for index, service in enumerate(services):
        tunnel = _service_tunnel(service)
        if tunnel is None or tunnel.port is None:
            continue
        for other in services:
            if other.key.protocol.value == "udp" and other.key.port == tunnel.port:
                raise r.fail(f"service[{index}].tun_port", tunnel.port,
                             f"is also the port of the UDP service {other.key}; the real "
                             "servers' GUE socket would take its packets")


def check_gre_checksums(r: _Reader, services: Sequence[VirtualService]) -> None:
    """A real server has one gre0 (ip6gre0), and the kernel drops a GRE packet whose
    checksum flag differs from the device's `icsum` (seen on 6.1): every GRE service of
    one address family must say the same tun_checksum."""
    first: dict[int, tuple[int, str]] = {}
    for index, service in enumerate(services):
        tunnel = _service_tunnel(service)
        if tunnel is None or tunnel.type != "gre" or service.key.address is None:
            continue
        family = service.key.address.version
        seen = first.setdefault(family, (index, tunnel.checksum))
        if seen[1] != tunnel.checksum:
            raise r.fail(f"service[{index}].tun_checksum", tunnel.checksum,
                         f"differs from service[{seen[0]}] (\"{seen[1]}\"): the real servers "
                         "receive all GRE on one device, which accepts checksummed packets "
                         "or the others, not both")


def _service_tunnel(service: VirtualService) -> Tunnel | None:
    for dest in service.destinations:
        if dest.forwarding is Forwarding.TUN:
            return dest.tunnel or Tunnel()
    return None


# --- what a real server needs -------------------------------------------------------------

class TunnelEnd(Record):
    """The receiving end of one tunnel type and address family on a real server."""

    device: str
    link_type: str  # `ip link add name DEVICE type LINK_TYPE`
    modules: tuple[str, ...]  # in load order
    family: int

    def create_argv(self, checksum: bool = False) -> tuple[str, ...]:
        """A device of the fallback's name that takes packets from any to any. With
        checksum, a GRE device that accepts (and needs) GRE checksums: the kernel drops
        a checksummed GRE packet on a device without `icsum`."""
        extra = ("icsum",) if checksum and self.link_type in ("gre", "ip6gre") else ()
        return ("ip", "link", "add", "name", self.device, "type", self.link_type, *extra)


_ENDS = {
    ("ipip", 4): TunnelEnd("tunl0", "ipip", ("ipip",), 4),
    ("ipip", 6): TunnelEnd("ip6tnl0", "ip6tnl", ("ip6_tunnel",), 6),
    ("gue", 4): TunnelEnd("tunl0", "ipip", ("fou", "ipip"), 4),
    ("gue", 6): TunnelEnd("ip6tnl0", "ip6tnl", ("fou6", "ip6_tunnel"), 6),
    ("gre", 4): TunnelEnd("gre0", "gre", ("ip_gre",), 4),
    ("gre", 6): TunnelEnd("ip6gre0", "ip6gre", ("ip6_gre",), 6),
}


class FouPort(Record):
    """`ip fou add port PORT gue [-6]`: a UDP socket that strips the GUE header."""

    port: int
    family: int = 4

    def args(self) -> tuple[str, ...]:
        return ("port", str(self.port), "gue", *(("-6",) if self.family == 6 else ()))


class TunnelNeeds(Record, frozen=False):
    """Everything TUN asks of a real server for a config: devices with their VIPs (and
    whether a GRE device must check checksums), GUE ports, modules."""

    devices: dict[str, TunnelEnd]
    vips: dict[str, list[IPAddress]]
    checksummed: set[str]
    fou: list[FouPort]
    modules: list[str]

    @property
    def rp_devices(self) -> list[str]:
        """The IPv4 devices whose decapsulated packets rp_filter would judge."""
        return [name for name, end in self.devices.items() if end.family == 4]


def tunnel_needs(config: Config) -> TunnelNeeds:
    needs = TunnelNeeds({}, {}, set(), [], [])
    for service in config.services:
        tunnel = _service_tunnel(service)
        address = service.key.address
        if tunnel is None or address is None:
            continue
        end = _ENDS[(tunnel.type, address.version)]
        needs.devices.setdefault(end.device, end)
        vips = needs.vips.setdefault(end.device, [])
        if address not in vips:
            vips.append(address)
        if tunnel.type == "gre" and tunnel.checksum == "csum":
            needs.checksummed.add(end.device)
        if tunnel.port is not None:
            fou = FouPort(tunnel.port, address.version)
            if fou not in needs.fou:
                needs.fou.append(fou)
        for module in end.modules:
            if module not in needs.modules:
                needs.modules.append(module)
    return needs


def tunnel_vips(config: Config) -> set[tuple[str, IPAddress]]:
    needs = tunnel_needs(config)
    return {(device, vip) for device, vips in needs.vips.items() for vip in vips}


# --- what the kernel has ---------------------------------------------------------------------

LSMOD = ("lsmod",)
FB_TUNNELS = "net.core.fb_tunnels_only_for_init_net"


def modprobe_dry(name: str) -> tuple[str, ...]:
    """Exit 0 when the module can be loaded (or is built in): asked only of modules
    lsmod does not list."""
    return ("modprobe", "-n", "-q", name)


def parse_lsmod(text: str) -> set[str]:
    """`lsmod`: a header, then `NAME SIZE USED [BY]` a line."""
    names = set()
    for line in text.splitlines()[1:]:
        match = re.match(r"(\w+)\s+\d+\s+\d+", line)
        if match:
            names.add(match.group(1))
    return names


def fallback_expected(fb_tunnels: int | None) -> bool | None:
    """Will loading a tunnel module create its fallback device here? The sysctl exists
    in the initial network namespace only (seen on 6.1): there 0 and 1 say yes, 2 no;
    elsewhere (None) it depends on the initial namespace's value, which cannot be read
    from here: unknown."""
    if fb_tunnels is None:
        return None
    return fb_tunnels in (0, 1)


def kernel_version(release: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def types_missing_from(release: str, services: Iterable[VirtualService]) -> list[str]:
    """Tunnel types the director's kernel cannot encapsulate in."""
    have = kernel_version(release)
    wanted = {t.type for t in map(_service_tunnel, services) if t is not None}
    return sorted(t for t in wanted if have < KERNEL_FOR_TYPE[t])


IP_FOU_SHOW = ("ip", "fou", "show")


def parse_fou_show(text: str) -> set[FouPort]:
    """`ip fou show` (iproute2 ipfou.c): `port 6080 gue`, `port 6080 gue -6`, or
    `port 5555 ipproto 4`; only GUE ports are ours to judge."""
    found = set()
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) >= 3 and tokens[0] == "port" and tokens[1].isdigit() and "gue" in tokens:
            found.add(FouPort(int(tokens[1]), 6 if "-6" in tokens else 4))
    return found


class TunnelSeen(Record, frozen=False):
    """What the kernel has for TUN real servers: GUE ports, loaded and loadable tunnel
    modules, and whether loading one would create its fallback device here."""

    fou: set[FouPort] = field(default_factory=set)
    loaded: set[str] = field(default_factory=set)
    loadable: set[str] = field(default_factory=set)
    fallback: bool | None = True  # None: cannot tell (see fallback_expected)


def require_kernel_tunnels(config: Config, release: str) -> None:
    """The director's kernel must know each tun_type the config uses (KernelLacks, exit
    5): an older one would take the rule and encapsulate in plain IPIP."""
    from .errors import TunnelModuleMissing

    for kind in types_missing_from(release, config.services):
        need = ".".join(map(str, KERNEL_FOR_TYPE[kind]))
        raise TunnelModuleMissing(kind, config.path,
                                  f"this kernel ({release}) cannot encapsulate in tun_type = "
                                  f"\"{kind}\": IPVS has it since Linux {need}")
