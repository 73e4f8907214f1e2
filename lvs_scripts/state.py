"""What this tool has done to a host, so that stop undoes exactly that and no more.

The state file lives in a root-owned directory (default /run/lvs-scripts: the kernel
forgets addresses, routes, IPVS rules and sysctls at reboot, and so do we). It is
written atomically (temp file + rename) and holds typed records (owned.py), keyed by
structure, never by display text. Version 1 files (lvs_scripts 0.1), version 2 ones
(before [ha]: no files, keepalived or sync daemons) and version 3 ones (before fwmark
services, TUN real servers and [bgp]: no nftables tables, tunnel devices, GUE ports or
BIRD) and version 4 ones (keepalived's record without its VIPs) are read and upgraded in
place by the next action that changes the host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import stat
import tempfile
from typing import Any, Callable

from .errors import StateError
from .locks import Paths, check_state_dir, check_trusted, ensure_dir, open_nofollow
from .model import DEFAULT_DRAIN_SECONDS, IPAddress, Protocol, ServiceKey, Timeouts
from .owned import (
    Owned,
    OwnedAddress,
    OwnedBird,
    OwnedFile,
    OwnedFou,
    OwnedKeepalived,
    OwnedLink,
    OwnedNftTable,
    OwnedRoute,
    OwnedService,
    OwnedSyncDaemon,
    OwnedSysctl,
    OwnedTimeouts,
    Slot,
)
from .probes import Route, SyncDaemon
from .record import Record, field

STATE_VERSION = 5
MAX_STATE_BYTES = 64 << 20  # 100,000 services is about 10 MB


class State(Record, frozen=False):
    addresses: dict[tuple[str, str], OwnedAddress] = field(default_factory=dict)
    route: OwnedRoute | None = None
    services: dict[ServiceKey, OwnedService] = field(default_factory=dict)
    sysctls: dict[str, OwnedSysctl] = field(default_factory=dict)
    timeouts: OwnedTimeouts | None = None
    files: dict[str, OwnedFile] = field(default_factory=dict)
    keepalived: OwnedKeepalived | None = None
    sync_daemons: dict[str, OwnedSyncDaemon] = field(default_factory=dict)
    nft_tables: dict[str, OwnedNftTable] = field(default_factory=dict)  # by family
    links: dict[str, OwnedLink] = field(default_factory=dict)
    fous: dict[tuple[int, int], OwnedFou] = field(default_factory=dict)
    bird: OwnedBird | None = None
    upgraded_from: int | None = field(default=None, compare=False)  # read from version N

    @classmethod
    def of(cls, *records: Owned) -> State:
        """A state holding these records (tests, and the version 1 upgrade)."""
        state = cls()
        for owned in records:
            state.put_record(owned)
        return state

    def put_record(self, owned: Owned) -> None:
        if isinstance(owned, OwnedAddress):
            self.addresses[(owned.device, owned.cidr)] = owned
        elif isinstance(owned, OwnedRoute):
            self.route = owned
        elif isinstance(owned, OwnedService):
            self.services[owned.key] = owned
        elif isinstance(owned, OwnedSysctl):
            self.sysctls[owned.key] = owned
        elif isinstance(owned, OwnedFile):
            self.files[owned.path] = owned
        elif isinstance(owned, OwnedKeepalived):
            self.keepalived = owned
        elif isinstance(owned, OwnedSyncDaemon):
            self.sync_daemons[owned.daemon.state] = owned
        elif isinstance(owned, OwnedNftTable):
            self.nft_tables[owned.family] = owned
        elif isinstance(owned, OwnedLink):
            self.links[owned.name] = owned
        elif isinstance(owned, OwnedFou):
            self.fous[(owned.port, owned.family)] = owned
        elif isinstance(owned, OwnedBird):
            self.bird = owned
        else:
            self.timeouts = owned

    def records(self) -> list[Owned]:
        items: list[Owned] = [*self.addresses.values()]
        if self.route is not None:
            items.append(self.route)
        items += [*self.services.values(), *self.sysctls.values()]
        if self.timeouts is not None:
            items.append(self.timeouts)
        if self.keepalived is not None:
            items.append(self.keepalived)
        if self.bird is not None:
            items.append(self.bird)
        items += [*self.sync_daemons.values(), *self.files.values(), *self.nft_tables.values(),
                  *self.fous.values(), *self.links.values()]
        return items

    # --- one entry, for rolling back a write-ahead record whose command failed ----------
    def get(self, slot: Slot) -> Owned | None:
        kind, key = slot
        if kind in _SINGLE:
            value: Owned | None = getattr(self, kind)
            return value
        table: dict[Any, Any] = getattr(self, _TABLES[kind])
        found: Owned | None = table.get(key)
        return found

    def put(self, slot: Slot, value: Owned | None) -> None:
        kind, key = slot
        if kind == "route":
            self.route = value if isinstance(value, OwnedRoute) else None
        elif kind == "timeouts":
            self.timeouts = value if isinstance(value, OwnedTimeouts) else None
        elif kind == "keepalived":
            self.keepalived = value if isinstance(value, OwnedKeepalived) else None
        elif kind == "bird":
            self.bird = value if isinstance(value, OwnedBird) else None
        elif value is None:
            getattr(self, _TABLES[kind]).pop(key, None)
        else:
            getattr(self, _TABLES[kind])[key] = value

    # --- questions the planners ask --------------------------------------------------------
    def owns_address(self, device: str, cidr: str) -> bool:
        return (device, cidr) in self.addresses

    def owns_service(self, key: ServiceKey) -> bool:
        return key in self.services

    def unannounced(self, device: str, cidr: str) -> bool:
        """Did we add this address and not announce it yet?"""
        owned = self.addresses.get((device, cidr))
        return owned is not None and not owned.announced

    def empty(self) -> bool:
        return not (self.addresses or self.route or self.services or self.sysctls
                    or self.timeouts or self.files or self.keepalived or self.sync_daemons
                    or self.nft_tables or self.links or self.fous or self.bird)

    def describe(self) -> list[str]:
        return [owned.describe() for owned in self.records()]

    # --- the file --------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({
            "version": STATE_VERSION,
            "addresses": [{"device": a.device, "cidr": a.cidr, "purpose": a.purpose,
                           "announced": a.announced} for a in self.addresses.values()],
            "route": None if self.route is None else {
                "family": self.route.family, "ours": _route_out(self.route.ours),
                "previous": _route_out(self.route.previous)},
            "services": [{**_key_out(s.key), "drain_seconds": s.drain_seconds}
                         for s in self.services.values()],
            "sysctls": [{"key": s.key, "previous": s.previous, "value": s.value}
                        for s in self.sysctls.values()],
            "timeouts": None if self.timeouts is None else {
                "previous": list(map(int, self.timeouts.previous.args())),
                "value": None if self.timeouts.value is None else list(
                    map(int, self.timeouts.value.args()))},
            "files": [{"path": f.path, "digest": f.digest} for f in self.files.values()],
            "keepalived": None if self.keepalived is None else {
                "config_file": self.keepalived.config_file,
                "pid_file": self.keepalived.pid_file,
                "vrrp_pid_file": self.keepalived.vrrp_pid_file,
                "addresses": [{"device": d, "cidr": c} for d, c in self.keepalived.addresses]},
            "sync_daemons": [{"state": d.daemon.state, "interface": d.daemon.interface,
                              "syncid": d.daemon.syncid} for d in self.sync_daemons.values()],
            "nft_tables": [{"family": t.family} for t in self.nft_tables.values()],
            "links": [{"name": k.name, "created": k.created} for k in self.links.values()],
            "fous": [{"port": f.port, "family": f.family} for f in self.fous.values()],
            "bird": None if self.bird is None else {
                "config_file": self.bird.config_file, "pid_file": self.bird.pid_file,
                "socket": self.bird.socket},
        }, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: str) -> State:
        try:
            data: Any = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            version = data.get("version")
            reader = _READERS.get(version) if isinstance(version, int) else None
            if reader is None:
                raise ValueError(f"unknown version {version!r:.20} (this lvs_scripts reads "
                                 f"versions {', '.join(map(str, sorted(_READERS)))})")
            state = reader(data)
            if version != STATE_VERSION:
                state.upgraded_from = version
            return state
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise corrupt(path, str(err)) from None


def corrupt(path: str, why: str) -> StateError:
    return StateError(
        f"{path}: state file is corrupt ({why}). It records what start changed so that "
        "stop can undo it. Inspect it, undo by hand what it lists if needed, then "
        "delete it; the next start observes the host again.")


_TABLES = {"address": "addresses", "service": "services", "sysctl": "sysctls",
           "file": "files", "sync": "sync_daemons", "nft": "nft_tables", "link": "links",
           "fou": "fous"}
_SINGLE = ("route", "timeouts", "keepalived", "bird")


# --- reading and checking, field by field: the file is read as root and drives commands ---

# Patterns as text, compiled by re on first use (and cached there): a state file uses few
# of them, most runs none at all, and compiling them all at import cost every CLI start.
_NAME = r"[A-Za-z0-9._-]{1,15}"
_WORD = r"[A-Za-z0-9_.-]{1,32}"
_SYSCTL = (r"net[./][A-Za-z0-9_]+([./][A-Za-z0-9_-]+)+|"
           r"net/ipv[46]/conf/[A-Za-z0-9._-]{1,15}/[a-z_]+")
_MAX_INT = 2**31 - 1


def _bad(what: str, value: object) -> ValueError:
    return ValueError(f"{what}: {value!r:.60}")


def _table(data: object, what: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict) or set(data) != keys:
        raise _bad(what, data)
    return data


def _list(data: object, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise _bad(what, data)
    return data


def _str(value: object, pattern: str, what: str) -> str:
    if not (isinstance(value, str) and re.fullmatch(pattern, value)):
        raise _bad(what, value)
    return value


def _int(value: object, what: str, low: int = 0, high: int = _MAX_INT) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _bad(what, value)
    return value


def _address(value: object, what: str) -> IPAddress:
    if not isinstance(value, str):
        raise _bad(what, value)
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise _bad(what, value) from None


def _cidr(value: object, what: str) -> str:
    if not (isinstance(value, str) and "/" in value):
        raise _bad(what, value)
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        raise _bad(what, value) from None
    return value


def _route_out(route: Route | None) -> dict[str, Any] | None:
    if route is None:
        return None
    return {"via": None if route.via is None else str(route.via), "dev": route.dev,
            "metric": route.metric, "onlink": route.onlink, "proto": route.proto,
            "scope": route.scope, "src": None if route.src is None else str(route.src)}


def _route_in(data: object, family: int, what: str) -> Route | None:
    if data is None:
        return None
    d = _table(data, what, {"via", "dev", "metric", "onlink", "proto", "scope", "src"})
    via = None if d["via"] is None else _address(d["via"], f"{what}.via")
    src = None if d["src"] is None else _address(d["src"], f"{what}.src")
    if any(a is not None and a.version != family for a in (via, src)) or (
            via is None and d["dev"] is None):
        raise _bad(what, data)
    if not isinstance(d["onlink"], bool):
        raise _bad(f"{what}.onlink", d["onlink"])
    return Route(via, None if d["dev"] is None else _str(d["dev"], _NAME, f"{what}.dev"),
                 _int(d["metric"], f"{what}.metric", 0, 2**32 - 1), d["onlink"],
                 None if d["proto"] is None else _str(d["proto"], _WORD, f"{what}.proto"),
                 None if d["scope"] is None else _str(d["scope"], _WORD, f"{what}.scope"),
                 src, family)


def _key_out(key: ServiceKey) -> dict[str, Any]:
    return {"protocol": key.protocol.value,
            "address": None if key.address is None else str(key.address),
            "port": key.port, "ipv6": key.ipv6}


def _key_in(d: dict[str, Any], what: str) -> ServiceKey:
    protocol = Protocol(d["protocol"])
    if protocol is Protocol.FWMARK:
        if d["address"] is not None or not isinstance(d["ipv6"], bool):
            raise _bad(what, d)
        return ServiceKey(protocol, None, _int(d["port"], f"{what}.port", 1, 2**32 - 1),
                          d["ipv6"])
    if d["ipv6"] is not False:
        raise _bad(f"{what}.ipv6", d["ipv6"])
    return ServiceKey(protocol, _address(d["address"], f"{what}.address"),
                      _int(d["port"], f"{what}.port", 1, 65535))


def _timeouts_in(value: object, what: str) -> Timeouts:
    items = _list(value, what)
    if len(items) != 3:
        raise _bad(what, value)
    return Timeouts(*(_int(t, what) for t in items))


def _read_v2(data: dict[str, Any]) -> State:
    d = _table(data, "state", {"version", "addresses", "route", "services", "sysctls",
                               "timeouts"})
    state = State()
    for i, item in enumerate(_list(d["addresses"], "addresses")):
        a = _table(item, f"addresses[{i}]", {"device", "cidr", "purpose", "announced"})
        if a["purpose"] not in ("vip", "dip") or not isinstance(a["announced"], bool):
            raise _bad(f"addresses[{i}]", a)
        state.put_record(OwnedAddress(_str(a["device"], _NAME, f"addresses[{i}].device"),
                                      _cidr(a["cidr"], f"addresses[{i}].cidr"),
                                      a["purpose"], a["announced"]))
    if d["route"] is not None:
        r = _table(d["route"], "route", {"family", "ours", "previous"})
        family = r["family"]
        if family not in (4, 6) or type(family) is not int:
            raise _bad("route.family", family)
        state.route = OwnedRoute(family, _route_in(r["ours"], family, "route.ours"),
                                 _route_in(r["previous"], family, "route.previous"))
    for i, item in enumerate(_list(d["services"], "services")):
        s = _table(item, f"services[{i}]", {"protocol", "address", "port", "ipv6",
                                            "drain_seconds"})
        state.put_record(OwnedService(_key_in(s, f"services[{i}]"), _int(
            s["drain_seconds"], f"services[{i}].drain_seconds", 0, 86400)))
    for i, item in enumerate(_list(d["sysctls"], "sysctls")):
        c = _table(item, f"sysctls[{i}]", {"key", "previous", "value"})
        state.put_record(OwnedSysctl(_str(c["key"], _SYSCTL, f"sysctls[{i}].key"),
                                     _int(c["previous"], f"sysctls[{i}].previous", -_MAX_INT),
                                     _int(c["value"], f"sysctls[{i}].value", -_MAX_INT)))
    if d["timeouts"] is not None:
        t = _table(d["timeouts"], "timeouts", {"previous", "value"})
        state.timeouts = OwnedTimeouts(
            _timeouts_in(t["previous"], "timeouts.previous"),
            None if t["value"] is None else _timeouts_in(t["value"], "timeouts.value"))
    return state


_PATH = r"/[A-Za-z0-9._/-]{1,4000}"
_DIGEST = r"[0-9a-f]{64}"
_V3_KEYS = ("files", "keepalived", "sync_daemons")


def _read_v3(data: dict[str, Any]) -> State:
    """Version 2 plus what [ha] owns: files, keepalived, the sync daemons."""
    for key in _V3_KEYS:
        if key not in data:
            raise _bad("state", f"no {key}")
    state = _read_v2({k: v for k, v in data.items() if k not in _V3_KEYS})
    for i, item in enumerate(_list(data["files"], "files")):
        f = _table(item, f"files[{i}]", {"path", "digest"})
        state.put_record(OwnedFile(_str(f["path"], _PATH, f"files[{i}].path"),
                                   _str(f["digest"], _DIGEST, f"files[{i}].digest")))
    if data["keepalived"] is not None:
        k = _table(data["keepalived"], "keepalived", {"config_file", "pid_file",
                                                      "vrrp_pid_file"})
        config_file, pid_file, vrrp_pid_file = (
            _str(k[name], _PATH, f"keepalived.{name}")
            for name in ("config_file", "pid_file", "vrrp_pid_file"))
        state.keepalived = OwnedKeepalived(config_file, pid_file, vrrp_pid_file)
    for i, item in enumerate(_list(data["sync_daemons"], "sync_daemons")):
        d = _table(item, f"sync_daemons[{i}]", {"state", "interface", "syncid"})
        if d["state"] not in ("master", "backup"):
            raise _bad(f"sync_daemons[{i}].state", d["state"])
        state.put_record(OwnedSyncDaemon(SyncDaemon(
            d["state"], _str(d["interface"], _NAME, f"sync_daemons[{i}].interface"),
            _int(d["syncid"], f"sync_daemons[{i}].syncid", 0, 255))))
    return state


_V4_KEYS = ("nft_tables", "links", "fous", "bird")


def _read_v4(data: dict[str, Any]) -> State:
    """Version 3 plus the nftables tables of fwmark services, what a TUN real server
    owns (tunnel devices, GUE ports) and what [bgp] owns (BIRD)."""
    for key in _V4_KEYS:
        if key not in data:
            raise _bad("state", f"no {key}")
    state = _read_v3({k: v for k, v in data.items() if k not in _V4_KEYS})
    for i, item in enumerate(_list(data["nft_tables"], "nft_tables")):
        t = _table(item, f"nft_tables[{i}]", {"family"})
        if t["family"] not in ("ip", "ip6"):
            raise _bad(f"nft_tables[{i}].family", t["family"])
        state.put_record(OwnedNftTable(t["family"]))
    for i, item in enumerate(_list(data["links"], "links")):
        k = _table(item, f"links[{i}]", {"name", "created"})
        if not isinstance(k["created"], bool):
            raise _bad(f"links[{i}].created", k["created"])
        state.put_record(OwnedLink(_str(k["name"], _NAME, f"links[{i}].name"), k["created"]))
    for i, item in enumerate(_list(data["fous"], "fous")):
        f = _table(item, f"fous[{i}]", {"port", "family"})
        if f["family"] not in (4, 6) or type(f["family"]) is not int:
            raise _bad(f"fous[{i}].family", f["family"])
        state.put_record(OwnedFou(_int(f["port"], f"fous[{i}].port", 1, 65535), f["family"]))
    if data["bird"] is not None:
        b = _table(data["bird"], "bird", {"config_file", "pid_file", "socket"})
        state.bird = OwnedBird(*(_str(b[name], _PATH, f"bird.{name}")
                                 for name in ("config_file", "pid_file", "socket")))
    return state


# Version 1 (lvs_scripts 0.1): addresses as [device, cidr]; services as their display text
# ("tcp 192.168.30.254:80", "fwmark 1 (IPv6)"); sysctls as {key: previous}, and only the ARP
# ones, always set to the same values; a route as {via, previous_via, previous_dev}.
_V1_SERVICE = r"(tcp|udp|sctp) (\S+)|fwmark (\d+)( \(IPv6\))?"
_V1_ARP = r"net[./]ipv4[./]conf[./][A-Za-z0-9._-]{1,15}[./]arp_(ignore|announce)"
_V1_ARP_VALUES = {"ignore": 1, "announce": 2}


def _read_v1(data: dict[str, Any]) -> State:
    from .probes import parse_endpoint

    d = data
    unknown = set(d) - {"version", "addresses", "route", "services", "sysctls", "timeouts",
                        "announced"}
    if unknown:
        raise _bad("unknown keys", sorted(unknown))
    state = State()
    announced = {str(_address(v, "announced")) for v in _list(d.get("announced", []),
                                                             "announced")}
    for entry in _list(d.get("addresses", []), "addresses"):
        if not (isinstance(entry, list) and len(entry) == 2):
            raise _bad("address entry", entry)
        device = _str(entry[0], _NAME, "address device")
        cidr = _cidr(entry[1], "address cidr")
        iface = ipaddress.ip_interface(cidr)
        # 0.1 added VIPs as /32 (/128) and required the DIP to have a shorter prefix.
        purpose = "vip" if iface.network.prefixlen == iface.max_prefixlen else "dip"
        state.put_record(OwnedAddress(device, cidr, purpose, str(iface.ip) in announced))
    for text in _list(d.get("services", []), "services"):
        match = re.fullmatch(_V1_SERVICE, text) if isinstance(text, str) else None
        if match is None:
            raise _bad("services", text)
        if match.group(3) is not None:
            key = ServiceKey(Protocol.FWMARK, None, int(match.group(3)), bool(match.group(4)))
        else:
            address, port = parse_endpoint(match.group(2))
            key = ServiceKey(Protocol(match.group(1)), address, port)
        state.put_record(OwnedService(key, DEFAULT_DRAIN_SECONDS))
    sysctls = d.get("sysctls", {})
    if not isinstance(sysctls, dict):
        raise _bad("sysctls", sysctls)
    for key, previous in sysctls.items():
        match = re.fullmatch(_V1_ARP, key) if isinstance(key, str) else None
        if match is None:
            raise _bad("sysctls", key)
        state.put_record(OwnedSysctl(key, _int(previous, key, 0, 8),
                                     _V1_ARP_VALUES[match.group(1)]))
    if d.get("timeouts") is not None:
        state.timeouts = OwnedTimeouts(_timeouts_in(d["timeouts"], "timeouts"), None)
    if d.get("route") is not None:
        state.route = _route_v1(_table(d["route"], "route",
                                       {"via", "previous_via", "previous_dev"}))
    return state


def _route_v1(r: dict[str, Any]) -> OwnedRoute:
    via = None if r["via"] is None else _address(r["via"], "route.via")
    before = None if r["previous_via"] is None else _address(r["previous_via"],
                                                             "route.previous_via")
    dev = None if r["previous_dev"] is None else _str(r["previous_dev"], _NAME,
                                                      "route.previous_dev")
    family = via.version if via is not None else before.version if before is not None else 4
    return OwnedRoute(family, None if via is None else Route(via, None, family=family),
                      None if before is None else Route(before, dev, family=family))


def _read_v5(data: dict[str, Any]) -> State:
    """Version 4 plus the VIPs in keepalived's record (removed by a stop after it died)."""
    keepalived = data.get("keepalived")
    addresses: list[Any] = []
    if isinstance(keepalived, dict):
        if "addresses" not in keepalived:
            raise _bad("keepalived", "no addresses")
        addresses = _list(keepalived["addresses"], "keepalived.addresses")
        keepalived = {k: v for k, v in keepalived.items() if k != "addresses"}
    state = _read_v4({**data, "keepalived": keepalived})
    if state.keepalived is not None:
        pairs = []
        for i, item in enumerate(addresses):
            a = _table(item, f"keepalived.addresses[{i}]", {"device", "cidr"})
            pairs.append((_str(a["device"], _NAME, f"keepalived.addresses[{i}].device"),
                          _cidr(a["cidr"], f"keepalived.addresses[{i}].cidr")))
        k = state.keepalived
        state.keepalived = OwnedKeepalived(k.config_file, k.pid_file, k.vrrp_pid_file,
                                           tuple(pairs))
    return state


_READERS: dict[int, Callable[[dict[str, Any]], State]] = {1: _read_v1, 2: _read_v2,
                                                          3: _read_v3, 4: _read_v4,
                                                          5: _read_v5}


# --- load and save ---------------------------------------------------------------------------

def load_state(paths: Paths) -> State:
    check_state_dir(paths)
    try:
        fd = open_nofollow(paths.state_file, os.O_RDONLY)
    except StateError:
        if not os.path.lexists(paths.state_file):
            return State()
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StateError(f"{paths.state_file}: is not a regular file")
        check_trusted(paths.state_file, info)
        raw = handle.read(MAX_STATE_BYTES + 1)
    if len(raw) > MAX_STATE_BYTES:
        raise corrupt(paths.state_file, f"larger than {MAX_STATE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise corrupt(paths.state_file, "not UTF-8 text") from None
    return State.from_json(text, paths.state_file)


def save_state(paths: Paths, state: State) -> None:
    """Atomically replace the state file; remove it when there is nothing to remember."""
    ensure_dir(paths.state_dir, trusted=True)
    try:
        if state.empty():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths.state_file)
            return
        write_atomically(paths, paths.state_file, state.to_json())
    except OSError as err:
        raise StateError(f"{paths.state_file}: cannot write the state file: {err.strerror}. "
                         "What was applied so far is listed below; the file may still show "
                         "the state before it") from None


def write_atomically(paths: Paths, target: str, text: str) -> None:
    """Replace `target` (a file in the state directory) by `text`: temp file, fsync, rename,
    0644 whatever the umask."""
    fd, tmp = tempfile.mkstemp(prefix=f".{paths.name}.", dir=paths.state_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
