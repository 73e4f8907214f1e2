"""Load and validate the one TOML file shared by the director and every real server.

Every rule is checked here, before any command runs, and every error names the
file, the key (e.g. `service[1].real[2].weight`) and the offending value.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from _socket import AF_INET, inet_pton  # the C module alone: socket.py builds enums
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .errors import ConfigError
from .model import (
    DEFAULT_DRAIN_SECONDS,
    SCHEDULERS,
    BgpConfig,
    BgpNeighbor,
    Config,
    Destination,
    DirectorConfig,
    Forwarding,
    HaConfig,
    HaDirector,
    IPAddress,
    IPInterface,
    Match,
    Protocol,
    RealServerConfig,
    ServiceKey,
    Timeouts,
    VirtualService,
)
from .tunnel import TUN_KEYS, Tunnel, check_fou_ports, check_gre_checksums, parse_tunnel

if TYPE_CHECKING:
    from .checks import CheckSpec
    from .toml_arrays import Placed

DEFAULT_CONFIG = "/etc/lvs/lvs.toml"
# 100,000 real servers (issue 14: 1,000 services x 100) take about 5 MB written one per
# line; the limit is there to refuse a runaway file, not a large table.
MAX_CONFIG_BYTES = 64 << 20
MAX_TIMEOUT = 2147483  # INT_MAX / HZ(1000): the kernel stores timeouts in jiffies
MAX_PERSISTENCE = 2147483
MAX_WEIGHT = 65535  # ipvsadm refuses more
MAX_FWMARK = 2**32 - 1  # the kernel's skb->mark is a u32; 0 is "no mark"
IFNAMSIZ = 16  # the kernel's limit, NUL included: at most 15 bytes
_UNSPECIFIED = bytes(4)
# The compiled-config cache (config_cache.py) pays off from here (about 100 real
# servers): below, parsing costs no more than its fixed cost (pickle's import, the
# hashes, the open): about 11 ms of a new process either way at 50 real servers, 12
# against 15 at 200, here.
CACHE_MIN_BYTES = 4 * 1024

T = TypeVar("T")


class _Reader:
    """Walks a parsed TOML document, keeping the dotted key path for error messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, value: object, rule: str) -> ConfigError:
        return ConfigError(self.path, key, value, rule)

    def table(self, data: object, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key, data, "must be a table")
        if data.keys() <= _allowed(allowed):  # once per real server: a set test in C
            return data
        for name in data:
            if name not in allowed:
                where = f"{key}.{name}" if key else name  # escaped by ConfigError
                raise self.fail(where, data[name],
                                f"unknown key (allowed here: {', '.join(allowed)})")
        return data

    def integer(self, data: Mapping[str, Any], key: str, where: str, low: int, high: int,
                default: int | None = None) -> int:
        if key not in data:
            if default is None:
                raise self.fail(f"{where}.{key}", None, "is required")
            return default
        value = data[key]
        # bool is an int in Python; `weight = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(f"{where}.{key}", value, f"must be an integer from {low} to {high}")
        return value

    def boolean(self, data: Mapping[str, Any], key: str, where: str) -> bool:
        value = data.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", value, "must be true or false")
        return value

    def string(self, data: Mapping[str, Any], key: str, where: str,
               default: str | None = None) -> str:
        if key not in data:
            if default is None:
                raise self.fail(f"{where}.{key}", None, "is required")
            return default
        value = data[key]
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", value, "must be a string")
        if not value.isprintable() or not value.isascii():
            raise self.fail(f"{where}.{key}", value,
                            "must be printable ASCII (no control characters or newlines)")
        return value

    def choice(self, data: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...],
               default: str) -> str:
        value = self.string(data, key, where, default)
        if value not in choices:
            raise self.fail(f"{where}.{key}", value, f"must be one of: {', '.join(choices)}")
        return value

    def parsed(self, data: Mapping[str, Any], key: str, where: str, parse: Callable[[str], T],
               rule: str) -> T | None:
        if key not in data:
            return None
        text = self.string(data, key, where)
        try:
            return parse(text)
        except ValueError:
            raise self.fail(f"{where}.{key}", text, rule) from None

    def interface(self, value: object, key: str) -> str:
        """A Linux interface name as the kernel's dev_valid_name() accepts it."""
        if not isinstance(value, str):
            raise self.fail(key, value, "must be a string (an interface name)")
        if not value or len(value.encode()) >= IFNAMSIZ:
            raise self.fail(key, value, "must be an interface name of 1 to 15 bytes")
        if value in (".", "..") or not value.isascii() or not value.isprintable() or any(
                not (c.isalnum() or c in "._-") for c in value):
            raise self.fail(key, value,
                            "is not a valid interface name (letters, digits, '.', '_' and "
                            "'-' only)")
        return value


@functools.cache
def _allowed(keys: tuple[str, ...]) -> frozenset[str]:
    return frozenset(keys)


def _host_address(text: str) -> IPAddress:
    """An address one host can own: no scope ids (`%eth0` would reach argv), no
    unspecified, multicast, loopback, reserved (240/4, broadcast) or v4-mapped addresses."""
    try:
        # Every real server has an address: ipaddress's pure-Python parser and its is_*
        # properties cost 8 us each, the C parser and three integer tests 1.5 us. It
        # accepts exactly ipaddress's IPv4 form (four decimal octets up to 255, no
        # leading zeros; test_config checks the edge cases); anything else, IPv6
        # included, takes the exact path below.
        packed = inet_pton(AF_INET, text)
    except (OSError, ValueError):
        pass
    else:
        if packed == _UNSPECIFIED or packed[0] == 127 or packed[0] >= 224:
            raise ValueError(text)  # unspecified, loopback (127/8), multicast or 240/4
        return ipaddress.IPv4Address(packed)
    address = ipaddress.ip_address(text)
    if "%" in text or address.is_unspecified or address.is_multicast or address.is_loopback \
            or address.is_reserved or (address.version == 6 and address.ipv4_mapped):
        raise ValueError(text)
    return address


def _interface_address(text: str) -> IPInterface:
    """`A.B.C.D/NN`: the prefix is required (the original script's DIP had none and
    silently became a /32), and the address may not be the network's own."""
    if "/" not in text:
        raise ValueError(text)
    iface = ipaddress.ip_interface(text)
    _host_address(str(iface.ip))
    network = iface.network
    if network.num_addresses > 2 and iface.ip in (network.network_address,
                                                   network.broadcast_address):
        raise ValueError(text)
    return iface


def load_config(path: str | None = None, cache: str | None = None, *,
                store: bool = True) -> Config:
    """Read and validate a config file. Raises ConfigError naming file, key and value.

    cache: a cache file (locks.Paths.config_cache) to take the Config from when the file
    is byte for byte one validated before, and (store) to keep it in after a parse."""
    config, keep = read_config(path, cache)
    if store:
        keep()
    return config


def _nothing_to_keep() -> None:
    pass


def read_config(path: str | None = None, cache: str | None = None
                ) -> tuple[Config, Callable[[], None]]:
    """load_config, with keeping a parsed config in the cache left to the caller, as a
    function to call when it suits (nothing to do after a cache hit). The watcher keeps
    it after its reload has changed the kernel: pickling 10,000 real servers was a third
    of a second of the lab VM's time before a SIGHUP took effect."""
    path = path or os.environ.get("LVS_CONFIG") or DEFAULT_CONFIG
    raw = _read_config_file(path)
    compiled = None
    if cache is not None and len(raw) >= CACHE_MIN_BYTES:
        from .config_cache import ConfigCache

        compiled = ConfigCache(cache, path, raw)
        config = compiled.load()
        if config is not None:
            return config, _nothing_to_keep
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte order mark, as some Windows editors write: not TOML
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(path, "", None, f"not UTF-8 text (byte {err.start})") from None
    from .config_delta import read_again

    parsed, worth_keeping = read_again(text, path, compiled)
    if compiled is None or not worth_keeping:
        return parsed.config, _nothing_to_keep
    return parsed.config, functools.partial(compiled.store, parsed)


def _read_config_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(path, "", None, "config file not found (use -c FILE or LVS_CONFIG)"
                          ) from None
    except OSError as err:
        raise ConfigError(path, "", None, f"cannot read the config file: {err.strerror}"
                          ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(path, "", None, f"config file is larger than {MAX_CONFIG_BYTES} bytes")
    return raw


def parse_config(text: str, path: str = "<string>") -> Config:
    """Validate TOML text. The path is only used in error messages."""
    return parse_config_placed(text, path)[0]


def parse_config_placed(text: str, path: str = "<string>"
                        ) -> tuple[Config, list[Placed], object]:
    """parse_config, with where its big arrays were in the text and in the TOML
    (toml_arrays.Placed) and the `service` value read: what config_delta needs to read
    an edit of the same file again."""
    # Imported here: a config read from the cache (config_cache) needs no TOML parser.
    # toml_arrays.loads is tomllib.loads with the big `real = [...]` arrays read by a regex
    # (equal results, tomllib's own errors): tomllib's per-value Python was most of a start.
    from .toml_arrays import loads_placed
    try:
        data, placed = loads_placed(text)
    except (ValueError, RecursionError) as err:  # TOMLDecodeError is a ValueError
        raise ConfigError(path, "", None, f"not valid TOML: {err}") from None
    r = _Reader(path)
    top = r.table(data, "", ("director", "realserver", "service", "ha", "bgp"))
    services, addresses = _services(r, top.get("service", []))
    director = _director(r, top["director"]) if "director" in top else None
    realserver = _realserver(r, top.get("realserver", {}))
    if director is not None and director.gateway is not None:
        _gateway_family(r, director.gateway, services)
        for index, service in enumerate(services):
            if director.gateway in service.vips():
                raise r.fail(f"service[{index}].vip", str(director.gateway),
                             "is also director.gateway; a VIP cannot be the gateway")
    if director is not None and director.dip is not None:
        if director.gateway == director.dip.ip:
            raise r.fail("director.gateway", str(director.gateway),
                         "is also director.dip; the gateway is another host")
        for index, service in enumerate(services):
            if director.dip.ip in service.vips():
                raise r.fail(f"service[{index}].vip", str(director.dip.ip),
                             "is also director.dip; the VIP must be an address of its own")
    from .config_ipvs import check_matches

    check_matches(r, services)
    vips: set[IPAddress | None] = {vip for s in services for vip in s.vips()}
    _reals_not_taken(r, services, addresses, vips, director)
    _sorry_not_vip(r, services, vips)
    _nat_gateway(r, realserver, director, services, vips)
    check_fou_ports(r, services)
    check_gre_checksums(r, services)
    ha = _ha(r, top["ha"], director, services) if "ha" in top else None
    bgp = _bgp(r, top["bgp"], director, services, ha) if "bgp" in top else None
    return Config(path=path, director=director, realserver=realserver, services=services,
                  ha=ha, bgp=bgp), placed, top.get("service")


def _reals_not_taken(r: _Reader, services: tuple[VirtualService, ...],
                     addresses: list[dict[bytes, int]], vips: set[IPAddress | None],
                     director: DirectorConfig | None) -> None:
    """No real server may be a VIP or the director's gateway or DIP (a VIP is never the
    gateway or DIP: checked before). Per service, the addresses taken meet the index of
    its real servers' addresses that _reals built (by packed address: exact, see _Reals)
    in one set intersection, in C, which walks the smaller of the two: no real server is
    hashed again, and N services of a few real servers each stay linear in N."""
    vip_rule = "is a VIP of this config; a real server cannot be a VIP"
    taken: dict[bytes, str] = {}
    if director is not None:
        for address, name in ((director.gateway, "director.gateway"),
                              (director.dip.ip if director.dip else None, "director.dip")):
            if address is not None:
                taken[address.packed] = f"is also {name}; a real server is a host of its own"
    taken.update(dict.fromkeys((vip.packed for vip in vips if vip is not None), vip_rule))
    for index, (service, first_at) in enumerate(zip(services, addresses)):
        hits = first_at.keys() & taken.keys()
        if hits:
            rindex = min(first_at[packed] for packed in hits)  # the first, as a scan finds
            dest = service.destinations[rindex]
            raise r.fail(f"service[{index}].real[{rindex}].address", str(dest.address),
                         taken[dest.address.packed])


_HOST_NAME = r"[A-Za-z0-9]([A-Za-z0-9._-]{0,62})"  # compiled by re on first use ([ha] only)


def _ha(r: _Reader, data: object, director: DirectorConfig | None,
        services: tuple[VirtualService, ...]) -> HaConfig:
    """[ha]: the director pair. Each director's DIP comes from its entry, so
    `[director] dip` would be a second, conflicting source."""
    where = "ha"
    d = r.table(data, where, ("interface", "virtual_router_id", "advert_interval", "preempt",
                              "syncid", "directors"))
    if director is not None and director.dip is not None:
        raise r.fail("director.dip", str(director.dip),
                     "must be absent with [ha]: each director's DIP is its ha.directors entry")
    if "interface" not in d:
        raise r.fail("ha.interface", None, "is required (VRRP and the sync daemons use it)")
    interface = r.interface(d["interface"], "ha.interface")
    if interface == "lo":
        raise r.fail("ha.interface", interface, "VRRP adverts must reach the peer: use a LAN "
                     "interface")
    vrid = r.integer(d, "virtual_router_id", where, 1, 255)
    preempt = d.get("preempt", True)
    if not isinstance(preempt, bool):
        raise r.fail("ha.preempt", preempt, "must be true or false")
    return HaConfig(interface=interface, virtual_router_id=vrid,
                    advert_interval=r.integer(d, "advert_interval", where, 1, 255, 1),
                    preempt=preempt,
                    syncid=r.integer(d, "syncid", where, 0, 255, vrid),
                    directors=_ha_directors(r, d.get("directors"), services))


def _ha_directors(r: _Reader, data: object, services: tuple[VirtualService, ...]
                  ) -> tuple[HaDirector, ...]:
    if data is None:
        raise r.fail("ha.directors", None, "is required (a list of {name, dip, priority})")
    if not isinstance(data, list) or len(data) < 2:
        raise r.fail("ha.directors", data, "must be a list of at least two directors")
    vips = {s.key.address: i for i, s in enumerate(services)}
    names: dict[str, int] = {}
    dips: dict[IPAddress, int] = {}
    members: list[HaDirector] = []
    for index, item in enumerate(data):
        where = f"ha.directors[{index}]"
        e = r.table(item, where, ("name", "dip", "priority"))
        name = r.string(e, "name", where)
        if not re.fullmatch(_HOST_NAME, name):
            raise r.fail(f"{where}.name", name, "must be a host name (letters, digits, '.', "
                         "'_', '-'; at most 63)")
        if name in names:
            raise r.fail(f"{where}.name", name, f"duplicates ha.directors[{names[name]}]")
        names[name] = index
        dip = r.parsed(e, "dip", where, _interface_address,
                       "must be an address with a prefix length, e.g. 192.168.30.105/24")
        if dip is None:
            raise r.fail(f"{where}.dip", None, "is required")
        if dip.ip in dips:
            raise r.fail(f"{where}.dip", str(dip), f"duplicates ha.directors[{dips[dip.ip]}]")
        if dip.ip in vips:
            raise r.fail(f"{where}.dip", str(dip), f"is also service[{vips[dip.ip]}].vip")
        dips[dip.ip] = index
        priority = r.integer(e, "priority", where, 1, 254)
        members.append(HaDirector(name=name, dip=dip, priority=priority))
    return tuple(members)


MAX_AS = 2**32 - 1  # 4-byte AS numbers (RFC 6793); 0 is reserved (RFC 7607)
# Every director must send a flow to the same real server whichever of them the router
# picks, and after a path changes: only the hashing schedulers do (Maglev hashing, or the
# source address hash).
BGP_SCHEDULERS = ("mh", "sh")


def _no_sloppy_beside_bgp(r: _Reader, director: DirectorConfig | None) -> None:
    """[bgp] sets sloppy_tcp/sloppy_sctp to 1 itself: a second, maybe different, value
    in [director.sysctl] would fight it."""
    for key, value in director.sysctl if director is not None else ():
        if key.endswith((".sloppy_tcp", ".sloppy_sctp")):
            raise r.fail(f"director.sysctl.{key.rsplit('.', 1)[1]}", value,
                         "must be absent with [bgp], which sets it to 1 itself (a director "
                         "must pick up flows that started on another one)")


def _bgp(r: _Reader, data: object, director: DirectorConfig | None,
         services: tuple[VirtualService, ...], ha: HaConfig | None) -> BgpConfig:
    """[bgp]: active-active directors announcing the VIPs to routers (bgp.py)."""
    d = r.table(data, "bgp", ("local_as", "neighbors", "hold_time"))
    if ha is not None:
        raise r.fail("bgp", "[bgp] and [ha]", "[bgp] and [ha] exclude each other: with "
                     "[bgp] every director holds the VIPs, with [ha] only one does")
    _no_sloppy_beside_bgp(r, director)
    local_as = r.integer(d, "local_as", "bgp", 1, MAX_AS)
    neighbors = _bgp_neighbors(r, d.get("neighbors"), services)
    for index, service in enumerate(services):
        if service.scheduler not in BGP_SCHEDULERS:
            raise r.fail(f"service[{index}].scheduler", service.scheduler,
                         "must be mh or sh with [bgp]: every director must pick the same "
                         "real server for a flow")
        family = service.key.address.version if service.key.address else 4
        if not any(n.address.version == family for n in neighbors):
            raise r.fail(f"service[{index}].vip", str(service.key.address),
                         f"is IPv{family} but no bgp.neighbors entry is: nobody would "
                         "learn the route to it")
    return BgpConfig(local_as=local_as, neighbors=neighbors,
                     hold_time=r.integer(d, "hold_time", "bgp", 3, 65535, 9))


def _bgp_neighbors(r: _Reader, data: object, services: tuple[VirtualService, ...]
                   ) -> tuple[BgpNeighbor, ...]:
    if data is None:
        raise r.fail("bgp.neighbors", None, "is required (a list of {address, as})")
    if not isinstance(data, list) or not data:
        raise r.fail("bgp.neighbors", data, "must be a list of at least one {address, as}")
    vips = {s.key.address: i for i, s in enumerate(services)}
    seen: dict[IPAddress, int] = {}
    neighbors = []
    for index, item in enumerate(data):
        where = f"bgp.neighbors[{index}]"
        e = r.table(item, where, ("address", "as"))
        address = r.parsed(e, "address", where, _host_address,
                           "must be the IP address of a host (the router's), no prefix")
        if address is None:
            raise r.fail(f"{where}.address", None, "is required")
        if address in seen:
            raise r.fail(f"{where}.address", str(address),
                         f"duplicates bgp.neighbors[{seen[address]}]")
        if address in vips:
            raise r.fail(f"{where}.address", str(address),
                         f"is also service[{vips[address]}].vip")
        seen[address] = index
        neighbors.append(BgpNeighbor(address=address, asn=r.integer(e, "as", where, 1,
                                                                    MAX_AS)))
    return tuple(neighbors)


def _sorry_not_vip(r: _Reader, services: tuple[VirtualService, ...],
                   vips: set[IPAddress | None]) -> None:
    for index, service in enumerate(services):
        sorry = service.sorry_server
        if sorry is not None and sorry.address in vips:
            raise r.fail(f"service[{index}].sorry_server", sorry.endpoint(),
                         "is a VIP of this config; the sorry server is another host")


def _gateway_family(r: _Reader, gateway: IPAddress, services: tuple[VirtualService, ...]
                    ) -> None:
    """The default route start replaces is that of the gateway's family: an IPv6 gateway
    for IPv4-only VIPs would take over the host's IPv6 default route for nothing."""
    families = {vip.version for s in services for vip in s.vips()}
    if families and gateway.version not in families:
        have = " and ".join(f"IPv{v}" for v in sorted(families))
        raise r.fail("director.gateway", str(gateway),
                     f"is IPv{gateway.version} but every service VIP is {have}; the gateway "
                     "must be of the family of at least one VIP")


def _director(r: _Reader, data: object) -> DirectorConfig:
    where = "director"
    d = r.table(data, where, ("interface", "gateway", "dip", "dip_interface", "timeouts",
                              "arping_count", "allow_no_services", "metrics", "sysctl"))
    if "interface" not in d:
        raise r.fail("director.interface", None, "is required (the interface the VIPs go on)")
    interface = r.interface(d["interface"], "director.interface")
    if interface == "lo":
        raise r.fail("director.interface", interface,
                     "the director must answer ARP for its VIPs: use its LAN interface")
    gateway = r.parsed(d, "gateway", where, _host_address, "must be an IP address of a host")
    dip = r.parsed(d, "dip", where, _interface_address,
                   "must be an address with a prefix length, e.g. 192.168.30.105/24")
    dip_interface = r.interface(d["dip_interface"], "director.dip_interface") \
        if "dip_interface" in d else None
    if dip is not None and dip_interface is None:
        raise r.fail("director.dip", str(dip), "needs director.dip_interface (where to add it)")
    if dip_interface is not None and dip is None:
        raise r.fail("director.dip_interface", dip_interface, "is set but director.dip is not")
    timeouts = None
    if "timeouts" in d:
        t = r.table(d["timeouts"], "director.timeouts", ("tcp", "tcpfin", "udp"))
        tw = "director.timeouts"
        timeouts = Timeouts(
            tcp=r.integer(t, "tcp", tw, 0, MAX_TIMEOUT, 0),
            tcpfin=r.integer(t, "tcpfin", tw, 0, MAX_TIMEOUT, 0),
            udp=r.integer(t, "udp", tw, 0, MAX_TIMEOUT, 0),
        )
    arping_count = r.integer(d, "arping_count", where, 0, 100, 5)
    metrics = r.parsed(d, "metrics", where, _listen_address,
                       "must be ADDRESS:PORT to listen on, e.g. 127.0.0.1:9717 or [::1]:9717")
    from .config_ipvs import director_sysctl

    return DirectorConfig(interface=interface, gateway=gateway, dip=dip,
                          dip_interface=dip_interface, timeouts=timeouts,
                          arping_count=arping_count,
                          allow_no_services=r.boolean(d, "allow_no_services", where),
                          metrics=metrics,
                          sysctl=director_sysctl(r, d["sysctl"]) if "sysctl" in d else ())


def _listen_address(text: str) -> tuple[IPAddress, int]:
    """Where the watcher's metrics listen: an address of this host (loopback and the
    unspecified address are fine here) and a port from 1 to 65535."""
    from .probes import parse_endpoint

    address, port = parse_endpoint(text)
    if "%" in text or address.is_multicast or not 1 <= port <= 65535:
        raise ValueError(text)
    return address, port


def _realserver(r: _Reader, data: object) -> RealServerConfig:
    d = r.table(data, "realserver", ("arp_interfaces", "allow_no_services", "nat_gateway"))
    names = d.get("arp_interfaces", [])
    if not isinstance(names, list):
        raise r.fail("realserver.arp_interfaces", names, "must be a list of interface names")
    seen: list[str] = []
    for index, item in enumerate(names):
        key = f"realserver.arp_interfaces[{index}]"
        name = r.interface(item, key)
        if name in ("all", "default"):
            raise r.fail(key, name, "'all' is always set; list real interfaces only")
        if name == "lo":
            raise r.fail(key, name, "has no effect: the kernel uses max(conf/all, conf/IFACE) "
                         "of the interface the ARP request arrives on, never conf/lo")
        if name in seen:
            raise r.fail(key, name, "is listed twice")
        seen.append(name)
    nat_gateway = r.parsed(d, "nat_gateway", "realserver", _host_address,
                           "must be an IP address of a host (the director's, for NAT)")
    return RealServerConfig(arp_interfaces=tuple(seen),
                            allow_no_services=r.boolean(d, "allow_no_services", "realserver"),
                            nat_gateway=nat_gateway)


def _nat_gateway(r: _Reader, realserver: RealServerConfig, director: DirectorConfig | None,
                 services: tuple[VirtualService, ...], vips: set[IPAddress | None]) -> None:
    """The NAT real servers' default route goes via `realserver.nat_gateway` (else the
    director's DIP): it must be an address of the NAT services' family, and not a VIP
    (the director answers for those on the clients' side, not as the real servers'
    router)."""
    gateway = realserver.nat_gateway
    key = "realserver.nat_gateway"
    if gateway is None:
        if director is None or director.dip is None:
            return
        gateway, key = director.dip.ip, "director.dip"
    if realserver.nat_gateway is not None and gateway in vips:
        raise r.fail(key, str(gateway), "is a VIP of this config; the real servers' NAT "
                     "gateway is the director's own address (its DIP)")
    for index, service in enumerate(services):
        nat = service.forwards_by(Forwarding.NAT)
        address = service.key.address
        if nat and address is not None and address.version != gateway.version:
            raise r.fail(key, str(gateway), f"is IPv{gateway.version} but service[{index}] "
                         f"(forwarding = \"nat\") is IPv{address.version}: its real servers "
                         "need a default route of that family via the director")


def _services(r: _Reader, data: object
              ) -> tuple[tuple[VirtualService, ...], list[dict[bytes, int]]]:
    """The services, and for each its real servers' first index by packed address
    (_Reals), for _reals_not_taken."""
    if not isinstance(data, list):
        raise r.fail("service", data, "must be an array of tables ([[service]])")
    services: list[VirtualService] = []
    addresses: list[dict[bytes, int]] = []
    seen: dict[ServiceKey, int] = {}
    for index, item in enumerate(data):
        service, first_at = _service(r, item, f"service[{index}]")
        if service.key in seen:
            raise r.fail(f"service[{index}]", str(service.key),
                         f"duplicates service[{seen[service.key]}]")
        seen[service.key] = index
        services.append(service)
        addresses.append(first_at)
    return tuple(services), addresses


_SERVICE_KEYS = ("vip", "port", "protocol", "scheduler", "forwarding", "persistence",
                 "drain_seconds", "real", "sorry_server", "check", "fwmark", "match",
                 "scheduler_flags", "one_packet", "persistence_netmask",
                 "persistence_engine", *TUN_KEYS)


def _service(r: _Reader, data: object, where: str) -> tuple[VirtualService, dict[bytes, int]]:
    s = r.table(data, where, _SERVICE_KEYS)
    if "fwmark" in s:
        return _fwmark_service(r, s, where)
    from .config_ipvs import service_options as _service_options
    vip = r.parsed(s, "vip", where, _host_address, "must be an IP address of a host")
    if vip is None:
        raise r.fail(f"{where}.vip", None, "is required (or fwmark with match)")
    if "match" in s:
        raise r.fail(f"{where}.match", s["match"], "is for fwmark services only (set fwmark)")
    port = r.integer(s, "port", where, 1, 65535)
    protocol = Protocol(r.choice(s, "protocol", where, ("tcp", "udp", "sctp"), "tcp"))
    scheduler = r.choice(s, "scheduler", where, SCHEDULERS, "wlc")
    forwarding = Forwarding(r.choice(s, "forwarding", where, ("dr", "tun", "nat"), "dr"))
    persistence = r.integer(s, "persistence", where, 0, MAX_PERSISTENCE, 0)
    drain = r.integer(s, "drain_seconds", where, 0, 86400, DEFAULT_DRAIN_SECONDS)
    tunnel = parse_tunnel(r, s, where, forwarding)
    destinations, seen, first_at = _reals(r, s, where, vip, vip.version, port, forwarding,
                                          tunnel)
    key = ServiceKey(protocol=protocol, address=vip, port=port)
    sorry = _sorry_server(r, s, where, vip, port, forwarding, seen)
    if sorry is not None and tunnel is not None:
        sorry = replace(sorry, tunnel=tunnel)
    check = None
    if "check" in s:
        from .checks import parse_check

        check = parse_check(s["check"], f"{where}.check", r.path)
    return VirtualService(key=key, scheduler=scheduler, persistence=persistence,
                          destinations=tuple(destinations), drain_seconds=drain,
                          check=check, sorry_server=sorry,
                          **_service_options(r, s, where, {protocol}, scheduler, persistence,
                                             vip.version)), first_at


# A service's real servers, their index by (packed address, port) to name a duplicate, and
# by packed address alone: the first real server at each address, for the checks against
# other addresses of the config (a VIP, the gateway, a match VIP, the sorry server).
# Keyed by `address.packed`, hashed in C (ipaddress's __hash__ and __eq__ are Python: two
# hashes and a comparison per real server were 15% of reading it). It is exact: in a
# service every address is of the VIP's family (checked before), and packed is the
# address's integer in 4 or 16 bytes, so equal packed is equal address; two spellings of
# one IPv6 address pack the same, and the lengths keep the families apart where the
# config mixes them. (The text would not do: "2001:db8::1" is "2001:DB8:0::1".)
_Reals = tuple[list[Destination], dict[tuple[bytes, int], int], dict[bytes, int]]
# The keys of the common entry, `{ address = "A.B.C.D", weight = N }` (port optional):
# read by the inline path in _reals; any other entry, or any doubt, takes _real.
_PLAIN_REAL = frozenset(("address", "port", "weight"))
_REAL_KEYS = ("address", "port", "weight", "upper", "lower")


def _reals(r: _Reader, s: Mapping[str, Any], where: str, vip: IPAddress | None, version: int,
           port: int, forwarding: Forwarding, tunnel: Tunnel | None = None) -> _Reals:
    """The real servers of a service (port: the service's, 0 for a fwmark service), and
    their indexes (_Reals)."""
    if "real" not in s:
        raise r.fail(f"{where}.real", None, "is required (a list of real servers)")
    reals = s["real"]
    if not isinstance(reals, list):
        raise r.fail(f"{where}.real", reals, "must be a list of tables")
    destinations: list[Destination] = []
    seen: dict[tuple[bytes, int], int] = {}  # (packed, port) -> index, to name a duplicate
    first_at: dict[bytes, int] = {}  # packed -> the first index at that address
    vip_packed = vip.packed if vip is not None else None
    nat = forwarding is Forwarding.NAT
    plain = _PLAIN_REAL if version == 4 else frozenset()  # IPv6 entries: always _real
    new_v4 = ipaddress.IPv4Address
    for index, item in enumerate(reals):
        # The common entry, inline: each test below is one the general path makes, in C
        # where it can be; an entry that passes them all is one _real would accept with
        # the same Destination (test_config_reals compares the two). Any other entry,
        # valid or not, goes to _real, whose first error is the one to report.
        dest = None
        if type(item) is dict and item.keys() <= plain:
            text = item.get("address")
            weight = item.get("weight", 1)
            rport = item.get("port", port)
            # type() is int, not isinstance: a bool is an error (`weight = true`), left to
            # _real; a port written out must be 1-65535 even where it equals a fwmark's 0.
            port_ok = type(rport) is int and (
                (rport == port and (port or "port" not in item)) or
                (nat and 1 <= rport <= 65535))
            if port_ok and type(text) is str and type(weight) is int and \
                    0 <= weight <= MAX_WEIGHT:
                try:
                    # _host_address's IPv4 path: inet_pton's dotted quad is ipaddress's,
                    # and only digits and dots (printable ASCII, as string() requires).
                    packed = inet_pton(AF_INET, text)
                except (OSError, ValueError):
                    pass
                else:
                    if packed != _UNSPECIFIED and packed[0] != 127 and packed[0] < 224 \
                            and packed != vip_packed:
                        dest = Destination(new_v4(packed), rport, forwarding, weight, 0, 0,
                                           tunnel)
        if dest is None:
            dest, packed = _real(r, item, f"{where}.real[{index}]", vip, version, port,
                                 forwarding, tunnel)
        first = seen.setdefault((packed, dest.port), index)
        if first != index:
            raise r.fail(f"{where}.real[{index}].address", str(dest.address),
                         f"duplicates {where}.real[{first}]")
        first_at.setdefault(packed, index)
        destinations.append(dest)
    return destinations, seen, first_at


def _real(r: _Reader, item: object, rwhere: str, vip: IPAddress | None, version: int,
          port: int, forwarding: Forwarding, tunnel: Tunnel | None) -> tuple[Destination, bytes]:
    """One real server by every rule, in the order its errors are reported; with its
    packed address (_Reals)."""
    from .config_ipvs import thresholds

    rs = r.table(item, rwhere, _REAL_KEYS)
    address = r.parsed(rs, "address", rwhere, _host_address, "must be an IP address of a host")
    if address is None:
        raise r.fail(f"{rwhere}.address", None, "is required")
    if address.version != version:
        raise r.fail(f"{rwhere}.address", str(address),
                     f"is IPv{address.version} but the VIP is IPv{version}; "
                     "IPVS cannot mix address families")
    if address == vip:
        raise r.fail(f"{rwhere}.address", str(address), "is the service's own VIP")
    rport = r.integer(rs, "port", rwhere, 1, 65535, port or None) if (
        port or "port" in rs) else 0
    if rport != port and forwarding is not Forwarding.NAT:
        raise r.fail(f"{rwhere}.port", rport,
                     (f"differs from the service port {port}" if port else
                      "is set, but a fwmark service forwards to the port the client "
                      "asked for") + "; only forwarding = \"nat\" can change the port")
    weight = r.integer(rs, "weight", rwhere, 0, MAX_WEIGHT, 1)
    upper, lower = thresholds(r, rs, rwhere)
    # Positional, in the field order: a third cheaper than by keyword.
    return (Destination(address, rport, forwarding, weight, upper, lower, tunnel),
            address.packed)


def _fwmark_service(r: _Reader, s: Mapping[str, Any], where: str
                    ) -> tuple[VirtualService, dict[bytes, int]]:
    """`fwmark = N` with `match = [{vip, port, protocol}, ...]`: nftables marks those
    packets and IPVS schedules them as one service (config_ipvs.py has the rules)."""
    from .config_ipvs import fwmark_match, service_options

    for name in ("vip", "port", "protocol"):
        if name in s:
            raise r.fail(f"{where}.{name}", s[name], "is not for a fwmark service (its "
                         "addresses and ports are in match)")
    mark = r.integer(s, "fwmark", where, 1, MAX_FWMARK)
    match = fwmark_match(r, s, where)
    version = match[0].address.version
    scheduler = r.choice(s, "scheduler", where, SCHEDULERS, "wlc")
    forwarding = Forwarding(r.choice(s, "forwarding", where, ("dr", "tun", "nat"), "dr"))
    persistence = r.integer(s, "persistence", where, 0, MAX_PERSISTENCE, 0)
    drain = r.integer(s, "drain_seconds", where, 0, 86400, DEFAULT_DRAIN_SECONDS)
    tunnel = parse_tunnel(r, s, where, forwarding)
    destinations, _, first_at = _reals(r, s, where, None, version, 0, forwarding, tunnel)
    # The first real server at a match VIP: a lookup per match VIP, not a comparison of
    # every real server with each (match VIPs and real servers are of one family).
    clash = [first_at[m.address.packed] for m in match if m.address.packed in first_at]
    if clash:
        rindex = min(clash)
        raise r.fail(f"{where}.real[{rindex}].address", str(destinations[rindex].address),
                     "is a match VIP of the service")
    key = ServiceKey(Protocol.FWMARK, None, mark, ipv6=version == 6)
    sorry = _fwmark_sorry_server(r, s, where, match, forwarding, tunnel, destinations,
                                 first_at)
    return VirtualService(key=key, scheduler=scheduler, persistence=persistence,
                          destinations=tuple(destinations), drain_seconds=drain, match=match,
                          check=_fwmark_check(r, s, where), sorry_server=sorry,
                          **service_options(r, s, where, {m.protocol for m in match},
                                            scheduler, persistence, version)), first_at


def _fwmark_check(r: _Reader, s: Mapping[str, Any], where: str) -> CheckSpec | None:
    """A fwmark service's `[service.check]`: as any other, but with its `port` required,
    since the real servers of a fwmark service have no port of their own (each
    connection keeps the one the client asked for). One port speaks for the server:
    its weight in the `-f` service is for all the ports the marks cover."""
    if "check" not in s:
        return None
    from .checks import parse_check

    check = parse_check(s["check"], f"{where}.check", r.path)
    if check.port is None:
        raise r.fail(f"{where}.check.port", None,
                     "is required for a fwmark service: its real servers have no port of "
                     "their own; name the one to check, e.g. port = 80")
    return check


def _fwmark_sorry_server(r: _Reader, s: Mapping[str, Any], where: str,
                         match: tuple[Match, ...], forwarding: Forwarding,
                         tunnel: Tunnel | None, destinations: list[Destination],
                         first_at: Mapping[bytes, int]) -> Destination | None:
    """`sorry_server = "IP"` of a fwmark service: an address without a port (like its
    real servers, it gets the port each client asked for), of the match VIPs' family,
    neither a match VIP nor a real server."""
    if "sorry_server" not in s:
        return None
    text = r.string(s, "sorry_server", where)
    key = f"{where}.sorry_server"
    try:
        address = ipaddress.ip_address(text)
        _host_address(str(address))
    except ValueError:
        raise r.fail(key, text, "must be the IP address of a host, without a port (a fwmark "
                     "service forwards to the port the client asked for)") from None
    version = match[0].address.version
    if address.version != version:
        raise r.fail(key, text, f"is IPv{address.version} but the match VIPs are "
                     f"IPv{version}; IPVS cannot mix address families")
    if any(address == m.address for m in match):
        raise r.fail(key, text, "is a match VIP of the service")
    index = first_at.get(address.packed)  # of the match VIPs' family: checked above
    if index is not None:
        raise r.fail(key, text, f"is also {where}.real[{index}]; the sorry server must "
                     "be another host (it is in the table only while no real server is "
                     "up)")
    return Destination(address=address, port=0, forwarding=forwarding, weight=1,
                       tunnel=tunnel)


def _sorry_server(r: _Reader, s: Mapping[str, Any], where: str, vip: IPAddress, port: int,
                  forwarding: Forwarding, reals: Mapping[tuple[bytes, int], int]
                  ) -> Destination | None:
    """`sorry_server = "IP:PORT"` (or just "IP": the service port): the server that takes
    the traffic while no real server is up. The same rules as a real server's address;
    and it must not be one of them, or it would never leave the table."""
    from .probes import parse_endpoint

    if "sorry_server" not in s:
        return None
    text = r.string(s, "sorry_server", where)
    key = f"{where}.sorry_server"
    try:
        # "A.B.C.D:P" and "[V6]:P" carry a port; a bare address (v4 or v6) does not.
        address, sport = parse_endpoint(text) if text.startswith("[") or \
            text.count(":") == 1 else (ipaddress.ip_address(text), port)
        _host_address(str(address))
    except ValueError:
        raise r.fail(key, text, "must be the IP address of a host, with or without :PORT "
                     "(IPv6 as [ADDRESS]:PORT)") from None
    if address.version != vip.version:
        raise r.fail(key, text, f"is IPv{address.version} but the VIP is IPv{vip.version}; "
                     "IPVS cannot mix address families")
    if address == vip:
        raise r.fail(key, text, "is the service's own VIP")
    if not 1 <= sport <= 65535:
        raise r.fail(key, text, "port must be from 1 to 65535")
    if sport != port and forwarding is not Forwarding.NAT:
        raise r.fail(key, text, f"port differs from the service port {port}; only "
                     "forwarding = \"nat\" can change the port")
    if (address.packed, sport) in reals:  # of the VIP's family: checked above (_Reals)
        raise r.fail(key, text, f"is also {where}.real[{reals[(address.packed, sport)]}]; the "
                     "sorry server must be another host (it is in the table only while no "
                     "real server is up)")
    return Destination(address=address, port=sport, forwarding=forwarding, weight=1)
