"""The emulated machine: the layout of its state and the kernel's rules.

The state is one JSON-able dict (saved by `fakehost` between invocations).
Functions here change it the way the kernel would: addresses become primary or
secondary, connected routes come and go with addresses and links, a link going
down takes its routes with it, the IPVS module appears when it is loaded.
They raise `KernelError` with the exact text `ip` prints for a refused request.

Reference points (read, not copied): Linux `net/ipv4/devinet.c`
(`__inet_insert_ifa`, `__inet_del_ifa`), `net/ipv4/fib_frontend.c`
(`fib_add_ifaddr`, `fib_disable_ip`), `net/ipv4/fib_semantics.c`
(`fib_check_nh_v4_gw`); and what iproute2 6.1 / kernel 6.x print, observed in a
throw-away network namespace.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, NoReturn, Optional

State = dict[str, Any]

UNSUPPORTED_RC = 99

# rtnetlink scope numbers (include/uapi/linux/rtnetlink.h); smaller is wider.
SCOPES = {"global": 0, "universe": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}

# net.ipv4.conf.<dev>.* keys that exist for every device, with the kernel's defaults.
CONF_DEFAULTS = {
    "accept_local": "0",
    "accept_redirects": "1",
    "arp_accept": "0",
    "arp_announce": "0",
    "arp_filter": "0",
    "arp_ignore": "0",
    "forwarding": "0",
    "promote_secondaries": "0",
    "proxy_arp": "0",
    "rp_filter": "0",
    "send_redirects": "1",
}

# net.ipv6.conf.<dev>.* keys the tools read (a subset), with the kernel's defaults.
CONF6_DEFAULTS = {
    "accept_dad": "1",
    "forwarding": "0",
    "ndisc_notify": "0",
}

# Tunnel devices (ip link add ... type KIND, or a module's fallback device): the
# `link/TYPE ADDRESS brd ADDRESS` line ip prints, their MTU on a 1500-byte network.
ANY4 = ".".join("0" * 4)  # printed by ip, never bound to
TUNNEL_KINDS = {
    "ipip": ("link/ipip", ANY4, 1480),
    "gre": ("link/gre", ANY4, 1476),
    "ip6tnl": ("link/tunnel6", "::", 1452),
    "ip6gre": ("link/gre6", "::", 1448),
}
# Modules that make a fallback device when loaded (unless
# net.core.fb_tunnels_only_for_init_net is 2: the fake host is the initial namespace).
FALLBACK_DEVICES = {"ipip": ("tunl0", "ipip"), "ip_gre": ("gre0", "gre"),
                    "ip6_tunnel": ("ip6tnl0", "ip6tnl"), "ip6_gre": ("ip6gre0", "ip6gre")}

GLOBAL_SYSCTLS = {
    "net/core/fb_tunnels_only_for_init_net": "0",
    "net/ipv4/ip_forward": "0",
    # the IPv6 counterpart, which a director with IPv6 NAT services turns on
    "net/ipv6/conf/all/forwarding": "0",
    "net/ipv6/conf/default/forwarding": "0",
    "net/ipv4/ip_nonlocal_bind": "0",
    "net/ipv4/ip_local_port_range": "32768\t60999",
    "net/core/somaxconn": "4096",
    "kernel/hostname": "director",
}

# What appears under net.ipv4.vs once ip_vs is loaded (a subset).
VS_SYSCTLS = {
    "am_droprate": "10",
    "amemthresh": "1024",
    "backup_only": "0",
    "cache_bypass": "0",
    "conn_reuse_mode": "1",
    "conntrack": "0",
    "drop_entry": "0",
    "drop_packet": "0",
    "expire_nodest_conn": "0",
    "expire_quiescent_template": "0",
    "nat_icmp_send": "0",
    "pmtu_disc": "1",
    "schedule_icmp": "0",
    "secure_tcp": "0",
    "sloppy_sctp": "0",
    "sloppy_tcp": "0",
    "snat_reroute": "1",
    "sync_threshold": "3\t50",
    "sync_version": "1",
}

SCHEDULERS = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"]


class ToolExit(Exception):
    """Ends one fake invocation with an exit status (what `exit()` is in C)."""

    def __init__(self, rc: int) -> None:
        super().__init__(rc)
        self.rc = rc


class KernelError(Exception):
    """A request the kernel refused; `str()` is the line `ip` prints, rc is 2."""


class Run:
    """One invocation of a fake tool: its arguments, the machine and the output."""

    def __init__(
        self,
        tool: str,
        args: list[str],
        state: State,
        stdin: str | Any | None = None,
        restore_hook: Callable[[list[str]], dict[str, Any] | None] | None = None,
    ) -> None:
        self.tool = tool
        self.args = list(args)
        self.state = state
        self._stdin = stdin
        self.stdin_text: str | None = None
        self.out: list[str] = []
        self.err: list[str] = []
        # For `ipvsadm -R`: gives the failure rule (if any) for one restored line.
        self.restore_hook = restore_hook

    def print(self, text: str = "", end: str = "\n") -> None:
        self.out.append(text + end)

    def eprint(self, text: str = "", end: str = "\n") -> None:
        self.err.append(text + end)

    def read_stdin(self) -> str:
        if self.stdin_text is None:
            src = self._stdin
            if src is None:
                text = ""
            elif isinstance(src, str):
                text = src
            else:
                text = src.read()
            self.stdin_text = text
        return self.stdin_text

    def exit(self, rc: int) -> NoReturn:
        raise ToolExit(rc)

    def unsupported(self, what: str) -> NoReturn:
        """Refuse loudly: the real tool would do something the fake cannot."""
        self.eprint(f"fakehost: {self.tool}: not emulated: {what}")
        raise ToolExit(UNSUPPORTED_RC)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


# ---------------------------------------------------------------- command lines

Option = tuple[str, Optional[str]]


def getopt(prog: str, args: list[str], spec: str,
           long_option: Callable[[str, int], tuple[Option, int]] | None = None,
           ) -> tuple[list[Option], list[str], str | None]:
    """glibc getopt() with argument permutation: (the options in order, the operands,
    None or the message of the error that stopped it).

    `spec` is the optstring: `c:` takes an argument (`-c5`, `-c 5`), `p::` an optional
    one (attached only). `--` ends the options. Without `long_option` a word `--x` is
    short options like any other; with it, as getopt_long(), `long_option(word, i)` reads
    the word (args[i] is the word after it) and gives (its option, the index of the next
    word), or ends the run itself.
    """
    opts: list[Option] = []
    operands: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--":
            operands += args[i:]
            break
        if long_option is not None and word.startswith("--"):
            option, i = long_option(word, i)
            opts.append(option)
            continue
        if not word.startswith("-") or word == "-":
            operands.append(word)
            continue
        chars = word[1:]
        while chars:
            ch, chars = chars[0], chars[1:]
            pos = spec.find(ch)
            if pos < 0 or ch in ":-":
                return opts, operands, f"{prog}: invalid option -- '{ch}'"
            value = None
            if spec[pos + 1: pos + 2] == ":":
                if chars:
                    value, chars = chars, ""
                elif spec[pos + 2: pos + 3] == ":":
                    pass  # an optional argument is only ever attached
                elif i < len(args):
                    value = args[i]
                    i += 1
                else:
                    return opts, operands, f"{prog}: option requires an argument -- '{ch}'"
            opts.append((ch, value))
    return opts, operands, None


# ---------------------------------------------------------------- defaults


def empty_state() -> State:
    """A machine with no interfaces at all (tests can build any machine on it)."""
    st: State = {
        "format": 1,
        "kernel": {
            "release": "6.1.0-28-amd64",
            # "builtin", "module" (loadable, loaded on first use), "absent"
            "ipvs": "module",
            "ipvs_loaded": False,
            # False: kernel 6.1 (Debian 12) answers EEXIST/EADDRNOTAVAIL on
            # addresses without a message ("RTNETLINK answers: File exists");
            # True: newer kernels say "Error: ipv4: Address already assigned."
            "addr_extack": False,
            "ipv6": True,
        },
        "interfaces": [],
        "routes": [],
        "sysctl": dict(GLOBAL_SYSCTLS),
        "ipvs": {
            "version": "1.2.1",
            "conn_tab_size": 4096,
            "schedulers": list(SCHEDULERS),
            "persistence_engines": ["sip"],
            "timeouts": {"tcp": 900, "tcpfin": 120, "udp": 300},
            "services": [],
            "connections": [],
            "daemons": {},  # sync daemons by state (master, backup)
        },
        "hosts": {"127.0.0.1": "localhost"},
        "arping": {"flavour": "iputils", "neighbours": {}, "sent": []},
        "modules": {"loaded": [], "available": ["dummy", "8021q", "bonding", "ipip", "fou",
                                                "fou6", "ip_gre", "ip6_tunnel", "ip6_gre"]},
        "fou": [],  # GUE/FOU receive ports: {"port", "family", "gue"}
        "missing_tools": [],
        "failures": [],
        "calls": 0,
    }
    for dev in ("all", "default"):
        for key, value in CONF_DEFAULTS.items():
            st["sysctl"][f"net/ipv4/conf/{dev}/{key}"] = value
        for key, value in CONF6_DEFAULTS.items():
            st["sysctl"][f"net/ipv6/conf/{dev}/{key}"] = value
    return st


def default_state() -> State:
    """The director of the original document: lo, eth0 192.168.30.105/24, eth1."""
    st = empty_state()
    lo = new_interface(st, "lo", kind="loopback")
    add_v4_address(st, lo, "127.0.0.1", 8)
    eth0 = new_interface(st, "eth0", mac="52:54:00:12:34:56")
    add_v4_address(st, eth0, "192.168.30.105", 24, brd="192.168.30.255")
    new_interface(st, "eth1", mac="52:54:00:12:34:57")
    add_route(st, {"dst": "default", "via": "192.168.30.200", "dev": "eth0"})
    return st


# ---------------------------------------------------------------- interfaces


def iface(st: State, name: str) -> dict[str, Any] | None:
    for ifc in st["interfaces"]:
        if ifc["name"] == name:
            return ifc
    return None


def new_interface(
    st: State,
    name: str,
    *,
    kind: str = "ether",
    mac: str | None = None,
    up: bool = True,
    carrier: bool = True,
    mtu: int | None = None,
    link: str | None = None,
    qdisc: str | None = None,
) -> dict[str, Any]:
    """Create a device (kind: ether, loopback, dummy, vlan) and its conf sysctls."""
    if iface(st, name) is not None:
        raise ValueError(f"interface {name} exists")
    index = max([i["index"] for i in st["interfaces"]], default=0) + 1
    if kind in TUNNEL_KINDS:
        mac = TUNNEL_KINDS[kind][1]
        link = link or "NONE"
    if mac is None:
        mac = "00:00:00:00:00:00" if kind == "loopback" else f"52:54:00:00:00:{index:02x}"
    ifc = {
        "name": name,
        "index": index,
        "kind": kind,
        "mac": mac.lower(),
        "up": False,
        "carrier": carrier,
        "mtu": mtu or (65536 if kind == "loopback" else TUNNEL_KINDS[kind][2]
                       if kind in TUNNEL_KINDS else 1500),
        "qdisc": qdisc or ("noqueue" if kind in ("loopback", "dummy", "vlan", *TUNNEL_KINDS)
                           else "fq_codel"),
        "qlen": 1000,
        "link": link,
        "noarp": kind in ("loopback", "dummy", *TUNNEL_KINDS),
        "addrs": [],
        "addrs6": [],
    }
    st["interfaces"].append(ifc)
    sysctl = st["sysctl"]
    for key, value in CONF_DEFAULTS.items():
        sysctl[f"net/ipv4/conf/{name}/{key}"] = sysctl.get(f"net/ipv4/conf/default/{key}", value)
    for key, value in CONF6_DEFAULTS.items():
        sysctl[f"net/ipv6/conf/{name}/{key}"] = sysctl.get(f"net/ipv6/conf/default/{key}", value)
    if up:
        set_link(st, ifc, True)
    return ifc


def remove_interface(st: State, name: str) -> None:
    ifc = iface(st, name)
    if ifc is None:
        raise ValueError(f"no interface {name}")
    set_link(st, ifc, False)
    st["interfaces"].remove(ifc)
    prefixes = (f"net/ipv4/conf/{name}/", f"net/ipv6/conf/{name}/")
    for key in [k for k in st["sysctl"] if k.startswith(prefixes)]:
        del st["sysctl"][key]


def load_module(st: State, name: str) -> None:
    """A module loaded: its fallback tunnel device appears (down), as in the kernel's
    ip_tunnel_init_net, unless fb_tunnels_only_for_init_net is 2."""
    if name in st["modules"]["loaded"]:
        return
    st["modules"]["loaded"].append(name)
    fallback = FALLBACK_DEVICES.get(name)
    if fallback and st["sysctl"].get("net/core/fb_tunnels_only_for_init_net", "0") != "2" \
            and iface(st, fallback[0]) is None:
        new_interface(st, fallback[0], kind=fallback[1], up=False)
        st["interfaces"][-1]["fallback"] = True


def link_flags(ifc: dict[str, Any]) -> str:
    """The `<...>` flags as `ip link` prints them (print_link_flags order)."""
    flags: list[str] = []
    running = ifc["up"] and ifc["carrier"]
    if ifc["up"] and not running:
        flags.append("NO-CARRIER")
    if ifc["kind"] == "loopback":
        flags.append("LOOPBACK")
    elif ifc["kind"] in TUNNEL_KINDS:
        pass
    else:
        flags.append("BROADCAST")
        if ifc["kind"] != "dummy":
            flags.append("MULTICAST")
    if ifc["noarp"] and ifc["kind"] != "loopback":
        flags.append("NOARP")
    if ifc["up"]:
        flags.append("UP")
        if running:
            flags.append("LOWER_UP")
    return ",".join(flags)


def oper_state(ifc: dict[str, Any]) -> str:
    if not ifc["up"] or not ifc["carrier"]:
        return "DOWN"
    if ifc["kind"] in ("loopback", "dummy", *TUNNEL_KINDS):
        return "UNKNOWN"
    return "UP"


def set_link(st: State, ifc: dict[str, Any], up: bool) -> None:
    """Admin up/down. Down drops every IPv4 route through the device, up brings
    back the connected routes of its primary addresses (not static routes)."""
    if ifc["up"] == up:
        return
    ifc["up"] = up
    if up:
        for addr in ifc["addrs"]:
            if not addr["secondary"]:
                _add_connected_route(st, ifc, addr)
    else:
        st["routes"] = [r for r in st["routes"] if r["dev"] != ifc["name"]]


def auto_v6_addresses(st: State, ifc: dict[str, Any]) -> list[dict[str, Any]]:
    """The addresses IPv6 autoconfiguration gives an up device (::1, fe80::/64)."""
    if not st["kernel"].get("ipv6", True) or not ifc["up"] or ifc["kind"] in TUNNEL_KINDS:
        return []
    if ifc["kind"] == "loopback":
        return [{"local": "::1", "prefixlen": 128, "scope": "host", "flags": []}]
    octets = [int(x, 16) for x in ifc["mac"].split(":")]
    if len(octets) != 6 or not any(octets):
        return []
    octets[0] ^= 0x02
    eui = [*octets[:3], 255, 254, *octets[3:]]
    groups = [f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2)]
    local = str(ipaddress.IPv6Address("fe80::" + ":".join(groups)))
    return [{"local": local, "prefixlen": 64, "scope": "link", "flags": []}]


# ---------------------------------------------------------------- IPv4 addresses


def _net(local: str, plen: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{local}/{plen}", strict=False)


def _same_subnet(a: str, b: str, plen: int) -> bool:
    return _net(a, plen) == _net(b, plen)


def addr_extack(st: State, old: str, new: str) -> KernelError:
    """EEXIST/EADDRNOTAVAIL on addresses: worded by the kernel only since 6.2."""
    return KernelError(f"Error: {new}" if st["kernel"].get("addr_extack") else old)


def add_v4_address(
    st: State,
    ifc: dict[str, Any],
    local: str,
    plen: int,
    *,
    brd: str | None = None,
    scope: str | None = None,
    label: str | None = None,
    metric: int = 0,
) -> dict[str, Any]:
    """Insert like __inet_insert_ifa: same subnet as a primary -> secondary;
    a new primary goes after the last primary of equal or narrower scope."""
    if scope is None:
        scope = "host" if local.startswith("127.") else "global"
    new = {
        "local": local,
        "prefixlen": plen,
        "brd": brd,
        "scope": scope,
        "label": label or ifc["name"],
        "secondary": False,
        "metric": metric,
    }
    addrs = ifc["addrs"]
    insert_at = 0
    for i, old in enumerate(addrs):
        if not old["secondary"] and SCOPES[scope] <= SCOPES[old["scope"]]:
            insert_at = i + 1
        if old["prefixlen"] == plen and _same_subnet(old["local"], local, plen):
            if old["local"] == local:
                raise addr_extack(
                    st, "RTNETLINK answers: File exists", "ipv4: Address already assigned."
                )
            if old["scope"] != scope:
                raise KernelError("RTNETLINK answers: Invalid argument")
            new["secondary"] = True
    if new["secondary"]:
        addrs.append(new)
    else:
        addrs.insert(insert_at, new)
        if ifc["up"]:
            _add_connected_route(st, ifc, new)
    return new


def del_v4_address(  # noqa: PLR0912 - the kernel's cases, one by one
    st: State,
    ifc: dict[str, Any],
    local: str,
    plen: int | None,
    label: str | None = None,
) -> dict[str, Any]:
    """Delete like inet_rtm_deladdr (no prefix length: first address with that
    local, the "wildcard deletion"), then __inet_del_ifa for its secondaries."""
    addrs = ifc["addrs"]
    for victim in addrs:
        if victim["local"] != local:
            continue
        if label is not None and victim["label"] != label:
            continue
        if plen is not None and victim["prefixlen"] != plen:
            continue
        break
    else:
        raise addr_extack(
            st,
            "RTNETLINK answers: Cannot assign requested address",
            "ipv4: Address not found.",
        )
    addrs.remove(victim)
    if not victim["secondary"]:
        _del_connected_route(st, ifc, victim)
        subnet = [
            a
            for a in addrs
            if a["secondary"]
            and a["prefixlen"] == victim["prefixlen"]
            and _same_subnet(a["local"], victim["local"], victim["prefixlen"])
        ]
        if subnet:
            promote = _sysctl_on(st, ifc["name"], "promote_secondaries")
            if promote:
                first = subnet[0]
                addrs.remove(first)
                first["secondary"] = False
                last_primary = max(
                    (i + 1 for i, a in enumerate(addrs) if not a["secondary"]), default=0
                )
                addrs.insert(last_primary, first)
                if ifc["up"]:
                    _add_connected_route(st, ifc, first)
            else:
                for gone in subnet:
                    addrs.remove(gone)
    # Routes preferring a source address that no longer exists go (fib_sync_down_addr).
    if victim["local"] not in local_v4_addresses(st):
        st["routes"] = [r for r in st["routes"] if r.get("src") != victim["local"]]
    # The device's last IPv4 address gone: all its routes go (fib_disable_ip).
    if not addrs:
        st["routes"] = [r for r in st["routes"] if r["dev"] != ifc["name"]]
    return victim


def _sysctl_on(st: State, dev: str, key: str) -> bool:
    sysctl = st["sysctl"]
    return any(
        sysctl.get(f"net/ipv4/conf/{d}/{key}", "0").strip() not in ("0", "")
        for d in ("all", dev)
    )


def local_v4_addresses(st: State) -> set[str]:
    return {a["local"] for ifc in st["interfaces"] for a in ifc["addrs"]}


def addr_type(st: State, addr: str) -> str:
    """inet_addr_type: "local", "broadcast", "multicast" or "unicast"."""
    ip = ipaddress.IPv4Address(addr)
    if int(ip) == 0 or int(ip) == 0xFFFFFFFF:
        return "broadcast"
    if ip.is_multicast:
        return "multicast"
    if ip in ipaddress.IPv4Network("127.0.0.0/8") or addr in local_v4_addresses(st):
        return "local"
    for ifc in st["interfaces"]:
        for a in ifc["addrs"]:
            if a.get("brd") == addr:
                return "broadcast"
    return "unicast"


# ---------------------------------------------------------------- routes


def parse_dst(text: str) -> str:
    """Normalise a route destination to "default" or "a.b.c.d/len"."""
    if text in ("default", "all", "any", "0/0", "0.0.0.0/0"):
        return "default"
    net = ipaddress.IPv4Network(text, strict=False)
    if net.prefixlen == 0:
        return "default"
    return f"{net.network_address}/{net.prefixlen}"


def dst_network(dst: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network("0.0.0.0/0" if dst == "default" else dst)


def route_sort_key(route: dict[str, Any]) -> tuple[int, int, int]:
    """FIB dump order: by key, longer prefixes first for the same key, then
    by metric (fib_insert_alias keeps aliases sorted)."""
    net = dst_network(route["dst"])
    return (int(net.network_address), -net.prefixlen, route.get("metric") or 0)


def sorted_routes(st: State) -> list[dict[str, Any]]:
    return sorted(st["routes"], key=route_sort_key)


def _add_connected_route(st: State, ifc: dict[str, Any], addr: dict[str, Any]) -> None:
    if ifc["kind"] == "loopback" or addr["prefixlen"] >= 32:
        return  # lo's prefixes and /32s only get routes in the local table
    dst = str(_net(addr["local"], addr["prefixlen"]))
    for r in st["routes"]:
        if r["dst"] == dst and r["dev"] == ifc["name"] and r.get("proto") == "kernel":
            return
    st["routes"].append(
        {
            "dst": dst,
            "via": None,
            "dev": ifc["name"],
            "proto": "kernel",
            "scope": "link",
            "src": addr["local"],
            "metric": addr.get("metric") or 0,
            "onlink": False,
        }
    )


def _del_connected_route(st: State, ifc: dict[str, Any], addr: dict[str, Any]) -> None:
    dst = str(_net(addr["local"], addr["prefixlen"]))
    st["routes"] = [
        r
        for r in st["routes"]
        if not (
            r["dst"] == dst
            and r["dev"] == ifc["name"]
            and r.get("proto") == "kernel"
            and r.get("src") == addr["local"]
        )
    ]


def _gateway_device(st: State, gw: str, dev: str | None) -> str | None:
    """fib_check_nh_v4_gw: the gateway must be on a link-scope route (or local)."""
    ip = ipaddress.IPv4Address(gw)
    best: dict[str, Any] | None = None
    for r in st["routes"]:
        if r.get("via") or (r.get("scope") or "global") not in ("link", "host"):
            continue
        if dev is not None and r["dev"] != dev:
            continue
        if ip not in dst_network(r["dst"]):
            continue
        if best is None or route_sort_key(r) < route_sort_key(best):
            best = r
    if best is not None:
        return str(best["dev"])
    for ifc in st["interfaces"]:
        if ifc["up"] and any(a["local"] == gw for a in ifc["addrs"]):
            if dev is None or dev == ifc["name"]:
                return str(ifc["name"])
    return None


def add_route(  # noqa: PLR0912 - the kernel's checks, in its order
    st: State, spec: dict[str, Any], *, mode: str = "add"
) -> dict[str, Any]:
    """`ip route add|replace|append|change` in the main table (IPv4).

    spec: dst, via, dev, metric, proto (None = boot), scope, src, onlink.
    """
    route = {
        "dst": parse_dst(spec["dst"]),
        "via": spec.get("via"),
        "dev": spec.get("dev"),
        "proto": spec.get("proto"),
        "scope": spec.get("scope"),
        "src": spec.get("src"),
        "metric": int(spec.get("metric") or 0),
        "onlink": bool(spec.get("onlink")),
    }
    dev = iface(st, route["dev"]) if route["dev"] else None
    if route["via"]:
        if route["onlink"]:
            if dev is None:
                raise KernelError("Error: Nexthop device required for onlink.")
            if not dev["up"]:
                raise KernelError("Error: Nexthop device is not up.")
        else:
            gw_dev = _gateway_device(st, route["via"], route["dev"])
            if gw_dev is None:
                raise KernelError("Error: Nexthop has invalid gateway.")
            route["dev"] = gw_dev
    else:
        if dev is None:
            raise KernelError("RTNETLINK answers: No such device")
        if not dev["up"]:
            raise KernelError("Error: Device for nexthop is not up.")
        if route["scope"] is None:
            route["scope"] = "link"
    if route["src"] and route["src"] not in local_v4_addresses(st):
        raise KernelError("Error: Invalid prefsrc address.")
    same = [
        r for r in st["routes"] if r["dst"] == route["dst"] and r["metric"] == route["metric"]
    ]
    if mode == "add" and same:
        raise KernelError("RTNETLINK answers: File exists")
    if mode == "change" and not same:
        raise KernelError("RTNETLINK answers: No such file or directory")
    if mode in ("replace", "change") and same:
        st["routes"][st["routes"].index(same[0])] = route
    else:
        st["routes"].append(route)
    return route


def del_route(st: State, sel: dict[str, Any]) -> dict[str, Any]:
    """`ip route del`: the first route matching every given selector."""
    dst = parse_dst(sel["dst"])
    for r in sorted_routes(st):
        if r["dst"] != dst:
            continue
        if sel.get("via") and r.get("via") != sel["via"]:
            continue
        if sel.get("dev") and r["dev"] != sel["dev"]:
            continue
        if sel.get("metric") and r["metric"] != int(sel["metric"]):
            continue
        if sel.get("proto") and (r.get("proto") or "boot") != sel["proto"]:
            continue
        if sel.get("scope") and (r.get("scope") or "global") != sel["scope"]:
            continue
        st["routes"].remove(r)
        return r
    raise KernelError("RTNETLINK answers: No such process")


def route_lookup(st: State, addr: str) -> dict[str, Any] | None:
    """Longest-prefix match in the main table (lowest metric wins a tie)."""
    ip = ipaddress.IPv4Address(addr)
    best: dict[str, Any] | None = None
    for r in st["routes"]:
        net = dst_network(r["dst"])
        if ip not in net:
            continue
        if best is None:
            best = r
            continue
        bnet = dst_network(best["dst"])
        if (net.prefixlen, -r["metric"]) > (bnet.prefixlen, -best["metric"]):
            best = r
    return best


def preferred_source(st: State, dev: str, towards: str) -> str | None:
    """The source address the kernel picks on `dev` (same subnet first)."""
    ifc = iface(st, dev)
    if ifc is None:
        return None
    primaries = [a for a in ifc["addrs"] if not a["secondary"] and a["scope"] == "global"]
    for a in primaries:
        if ipaddress.IPv4Address(towards) in _net(a["local"], a["prefixlen"]):
            return str(a["local"])
    if primaries:
        return str(primaries[0]["local"])
    for other in st["interfaces"]:
        for a in other["addrs"]:
            if a["scope"] == "global" and not a["secondary"]:
                return str(a["local"])
    return None


# ---------------------------------------------------------------- IPVS module


def ipvs_available(st: State) -> bool:
    k = st["kernel"]
    return k["ipvs"] == "builtin" or (k["ipvs"] == "module" and bool(k["ipvs_loaded"]))


def load_ipvs(st: State) -> bool:
    """modprobe ip_vs: False when the kernel has no IPVS at all."""
    k = st["kernel"]
    if k["ipvs"] == "absent":
        return False
    if k["ipvs"] == "module" and not k["ipvs_loaded"]:
        k["ipvs_loaded"] = True
        if "ip_vs" not in st["modules"]["loaded"]:
            st["modules"]["loaded"].append("ip_vs")
    for key, value in VS_SYSCTLS.items():
        st["sysctl"].setdefault(f"net/ipv4/vs/{key}", value)
    return True


def unload_ipvs(st: State) -> None:
    k = st["kernel"]
    k["ipvs_loaded"] = False
    st["modules"]["loaded"] = [m for m in st["modules"]["loaded"] if not m.startswith("ip_vs")]
    st["ipvs"]["services"] = []
    st["ipvs"]["timeouts"] = {"tcp": 900, "tcpfin": 120, "udp": 300}
    for key in [k for k in st["sysctl"] if k.startswith("net/ipv4/vs/")]:
        del st["sysctl"][key]
