"""Observations: each probe is an argv (read-only) plus a pure parser of its output.

The parsers are tested on output captured from a real kernel (tests/data/captured).
They skip lines they do not understand rather than guess.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from .model import (
    SCHEDULER_FLAGS,
    Destination,
    Forwarding,
    IPAddress,
    IPInterface,
    IpvsTable,
    Protocol,
    ServiceKey,
    Timeouts,
    VirtualService,
    address_text,
)
from .nft import NftTable
from .record import Record, field
from .tunnel import TunnelSeen, tunnel_from_tokens

IPVS_SAVE = ("ipvsadm", "-S", "-n")
IPVS_TIMEOUTS = ("ipvsadm", "-L", "--timeout")
IPVS_LIST = ("ipvsadm", "-L", "-n")
IP_ADDRS = ("ip", "-o", "addr", "show")
IP_LINKS = ("ip", "-o", "link", "show")
ARPING_VERSION = ("arping", "-V")


def ip_default_routes(version: int) -> tuple[str, ...]:
    return ("ip", f"-{version}", "route", "show", "default")


def sysctl_read(keys: tuple[str, ...]) -> tuple[str, ...]:
    return ("sysctl", "-n", *keys)


# --- ipvsadm ---------------------------------------------------------------------------------

_PROTO_FLAGS = {"-t": Protocol.TCP, "--tcp-service": Protocol.TCP, "-u": Protocol.UDP,
                "--udp-service": Protocol.UDP, "--sctp-service": Protocol.SCTP,
                "-f": Protocol.FWMARK, "--fwmark-service": Protocol.FWMARK}


@lru_cache(maxsize=1 << 12)  # the VIPs, read once per rule line
def parse_endpoint(text: str) -> tuple[IPAddress, int]:
    """`192.168.30.254:80` or `[2001:db8::1]:80` (ipvsadm -n numeric form)."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([0-9.]+):(\d+)", text)
    if not match:
        raise ValueError(f"not an address:port: {text!r}")
    if match.group(3):
        return ipv4(match.group(3)), int(match.group(4))
    return ipaddress.IPv6Address(match.group(1)), int(match.group(2))


# Each real server's address is read from `ipvsadm -S -n` and `ipvsadm -L -n` by status,
# and from two readings of `ipvsadm -S -n` by reload (before and after): remembered for
# the process, the second reading costs a lookup instead of inet_pton and ipaddress's
# Python __init__ (10-20% of parsing either listing). Room for 100,000 real servers and
# more (about 15 MB then); a larger table still parses, each address read anew.
@lru_cache(maxsize=1 << 17)
def ipv4(text: str) -> ipaddress.IPv4Address:
    """A dotted quad, as strict as ipaddress (no leading zeros, four parts), read by the C
    library: ipaddress parses it octet by octet in Python, about 8 us each, which was a
    third of reading a table of 10,000 real servers."""
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:
        raise ValueError(f"not an IPv4 address: {text!r}") from None
    return ipaddress.IPv4Address(packed)


def _service_key(tokens: list[str]) -> tuple[ServiceKey, list[str]]:
    """Reads `-t ADDR:PORT` / `-f MARK [-6]` off the front of tokens; returns the rest."""
    flag, value, rest = tokens[0], tokens[1], tokens[2:]
    protocol = _PROTO_FLAGS[flag]
    if protocol is Protocol.FWMARK:
        ipv6 = "-6" in rest
        rest = [t for t in rest if t != "-6"]
        return ServiceKey(Protocol.FWMARK, None, int(value), ipv6), rest
    address, port = parse_endpoint(value)
    return ServiceKey(protocol, address, port), rest


# Nearly every line of a large table: an IPv4 DR or NAT real server with a weight and
# nothing else (print_service_entry's order). Read in one match, with no token loop; any
# other line (IPv6, TUN, a service) goes through parse_rule.
_PLAIN_DEST = re.compile(r"-a (-t|-u) (\S+) -r ([0-9.]+):(\d+) -([gm]) -w (\d+)")
_PLAIN_FORWARDING = {"g": Forwarding.DR, "m": Forwarding.NAT}

# What a plain line gave: its service as the line names it (flag and where, one string
# per service), that service's key, and the real server (both immutable, so one object
# may serve every parse).
_Plain = tuple[str, ServiceKey, Destination]


# The last text parse_ipvs_save read, and its table. An action reads `ipvsadm -S -n` once
# after its batch and both the batch check (when a rule needs an object: a deletion) and
# the verification parse that same reading (observe.KnownReadings hands out the one
# Result): the second is answered from here. By identity: a text that is merely equal is
# parsed again, so nothing here can answer for another reading.
_last_save: list[tuple[str, IpvsTable]] = []


# The plain lines of the last text parse_ipvs_save parsed, and what each gave. A reload
# reads `ipvsadm -S -n` before planning and again to verify, and the watcher reloads again
# and again in one process: each reading is nearly the one before (a reload of one weight
# changes one line of 10,000), and the match, the address and the Destination of a plain
# line were most of parsing it (1.6 s a reading at 10,000 in the lab VM). A line the last
# parse read is a lookup. Only that parse's lines are kept (the new memo is built as the
# text is read and replaces the old one), so the memory is one table's whatever is read:
# about 200 bytes a line (the line, its entry, its tuple), 20 MB at 100,000 real servers.
_plain_seen: list[dict[str, _Plain]] = [{}]


def forget_parsed() -> None:
    """Start again as a new process does: no table, rule line or address remembered (for
    benchmarks that time a cold parse)."""
    _last_save.clear()
    _plain_seen[0] = {}
    _proc_seen[0] = {}
    parse_rule.cache_clear()
    parse_endpoint.cache_clear()
    ipv4.cache_clear()


def parse_ipvs_save(text: str) -> IpvsTable:
    """Parse `ipvsadm -S -n` into services with their destinations, in kernel order."""
    if _last_save and _last_save[0][0] is text:
        return dict(_last_save[0][1])  # a dict of its own: a simulation may change it
    table = _parse_ipvs_save(text)
    _last_save[:] = [(text, table)]
    return dict(table)


def _parse_ipvs_save(text: str) -> IpvsTable:
    services: dict[ServiceKey, VirtualService] = {}
    dests: dict[ServiceKey, list[Destination]] = {}
    # Each service's list in dests by the text its plain lines name it by: a string
    # hashes once, a ServiceKey (a dataclass of an IPv4Address) in Python each time.
    lists: dict[str, list[Destination]] = {}
    before, seen = _plain_seen[0], dict[str, _Plain]()
    reader = _PlainReader()
    for line in text.splitlines():
        plain = before.get(line) or seen.get(line) or reader(line)
        if plain is not None:
            seen[line] = plain
            where, key, dest = plain
            found = lists.get(where)
            if found is None:
                found = lists[where] = dests.setdefault(key, [])
            found.append(dest)
            continue
        _add_rule(line, services, dests)
    _plain_seen[0] = seen
    return {key: _with_dests(svc, dests.get(key, [])) for key, svc in services.items()}


class _PlainReader:
    """Reads a plain line not seen in the last parse. Within one parse each service and
    each address is read once: a real server in many services (ports) is one object."""

    def __init__(self) -> None:
        self.services: dict[str, tuple[str, ServiceKey]] = {}
        self.addresses: dict[str, ipaddress.IPv4Address] = {}

    def __call__(self, line: str) -> _Plain | None:
        """None for a line that is not plain, or not one we can read (an address that is
        not one): parse_rule judges it as any other line, and skips it as well."""
        match = _PLAIN_DEST.fullmatch(line)
        if match is None:
            return None
        flag, where, address, port, forwarding, weight = match.groups()
        try:
            # No tuple of flag and where: every object a line leaves behind that the
            # garbage collector tracks costs (a cold parse of 100,000 lines spent 0.1 s
            # more in collections with two more a line).
            service = self.services.get(flag + where)
            if service is None:
                part = flag + where
                service = self.services[part] = (part, _service_key([flag, where])[0])
            ip = self.addresses.get(address)
            if ip is None:
                ip = self.addresses[address] = ipv4(address)
            return (service[0], service[1],
                    Destination(ip, int(port), _PLAIN_FORWARDING[forwarding], int(weight)))
        except ValueError:
            return None


def _add_rule(line: str, services: dict[ServiceKey, VirtualService],
              dests: dict[ServiceKey, list[Destination]]) -> None:
    """Any line but a plain real server's: a service (-A) or another real server (-a)."""
    try:
        rule = parse_rule(line)
    except (ValueError, IndexError, KeyError):
        return  # not a rule, or one we cannot read: not ours to judge here
    if rule.op == "-A" and rule.service is not None:
        services[rule.key] = rule.service
        dests.setdefault(rule.key, [])
    elif rule.op == "-a" and rule.dest is not None:
        dests.setdefault(rule.key, []).append(rule.dest)


# The kernel's own listing of the IPVS table, read from a file: no program starts (tenths
# of a second each on a slow machine, in the watcher's path from a failure to weight 0).
# It shows less than `ipvsadm -S -n` (no scheduler flags, no persistence engine, nor
# whether a fwmark service is IPv4 or IPv6), but all that the health plan reads: each
# service's identity and each real server's address, port, forwarding and weight.
PROC_IP_VS = "/proc/net/ip_vs"
_PROC_PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
# The kernel's ip_vs_fwd_name(); a local real server ("Local") is one ipvsadm -S lists as -g.
_PROC_FORWARDING = {"Route": Forwarding.DR, "Local": Forwarding.DR,
                    "Tunnel": Forwarding.TUN, "Masq": Forwarding.NAT}


def parse_proc_ip_vs(text: str) -> IpvsTable:
    """Parse /proc/net/ip_vs into services (identity and scheduler only) with their real
    servers (address, port, forwarding, weight), in ipvsadm's order. fwmark services are
    left out: the listing does not say whether one is IPv4 or IPv6, and the config has
    none (one made by another tool is nothing the health plan reads)."""
    found: list[tuple[VirtualService, list[Destination]]] = []
    dests: list[Destination] | None = None
    for line in text.splitlines():
        words = line.split()
        try:
            if words[:1] == ["->"] and dests is not None:
                address, port = _proc_endpoint(words[1])
                dests.append(Destination(address, port, _PROC_FORWARDING[words[2]],
                                         int(words[3])))
            elif words[:1] and words[0] in _PROC_PROTOCOLS:
                address, port = _proc_endpoint(words[1])
                dests = []
                found.append((VirtualService(
                    key=ServiceKey(_PROC_PROTOCOLS[words[0]], address, port),
                    scheduler=words[2]), dests))
            else:
                dests = None  # the headers, a fwmark service
        except (ValueError, IndexError, KeyError):
            dests = None  # a line we cannot read: nothing after it is taken for its own
    # The kernel lists the newest real server first; ipvsadm sorts them by address and
    # port (ipvs_cmp_dests), and the planner's fast path compares in that order.
    return {svc.key: _with_dests(svc, sorted(found_dests, key=_address_order))
            for svc, found_dests in found}


# The listing's three header lines (ip_vs_info_seq_show), before the first service.
_PROC_HEADERS = ("IP Virtual Server version ", "Prot LocalAddress:Port ",
                 "  -> RemoteAddress:Port ")

# A TUN real server's tunnel type (ipip, gue, gre) and options are not in the listing.
_PROC_FORWARDING_EXACT = {name: forwarding for name, forwarding in _PROC_FORWARDING.items()
                          if forwarding is not Forwarding.TUN}

# How the kernel names the forwarding of a line expect_listing_of guesses ("Local" is DR
# too, but only to the director's own addresses: such a line simply misses).
_PROC_NAMES = {Forwarding.DR: "Route", Forwarding.NAT: "Masq"}

# The real-server lines of the last listing parse_proc_ip_vs_exact read, each by its part
# before the two counters (ActiveConn, InActConn: they change with traffic, the rest only
# with the table), and the real server it gave. The watcher verifies reload after reload
# in one process and each listing is nearly the one before, so a line is a lookup instead
# of a split, a hex address and a Destination. Only that parse's lines are kept, as
# _plain_seen keeps one `ipvsadm -S -n` reading's.
_proc_seen: list[dict[str, Destination]] = [{}]


def expect_listing_of(table: IpvsTable) -> None:
    """Before the first listing a process reads (the CLI's reload: its memo is empty), take
    the first observation's real servers (`ipvsadm -S -n`) as the last listing's, each under
    the line the kernel lists it by: the verification's listing is nearly that table, and a
    line found is a lookup instead of a new address and Destination (on the host about
    30 -> 17 ms at 10,000 real servers, 310 -> 220 ms at 100,000, this included). Only those the
    listing describes in full (IPv4, Route or Masq, no thresholds): each equals what that
    line parses to, so a line that is not as formatted here only misses."""
    if not _proc_seen[0]:  # else the last listing's lines: nearer still
        _proc_seen[0] = listing_guesses(table)


def listing_guesses(table: IpvsTable) -> dict[str, Destination]:
    """expect_listing_of's lines: each real server the listing describes in full, under
    the line (before the counters) the kernel lists it by."""
    return {
        f"  -> {int(d.address):08X}:{d.port:04X}      {_PROC_NAMES[d.forwarding]:<7} {d.weight}": d
        for svc in table.values() for d in svc.destinations
        if d.forwarding in _PROC_NAMES and _plain_ipv4(d)}


def _plain_ipv4(dest: Destination) -> bool:
    """An IPv4 real server with no thresholds or tunnel options: one that both the
    listing's line and ipvsadm's plain line (_PLAIN_DEST) describe in full, so that it is
    exactly what its guessed line parses to (expect_listing_of, expect_save_of)."""
    return dest.address.version == 4 and not dest.upper and not dest.lower \
        and dest.tunnel is None


# How `ipvsadm -S -n` names what expect_save_of guesses lines for.
_SAVE_FLAGS = {Protocol.TCP: "-t", Protocol.UDP: "-u"}
_SAVE_FORWARDING = {Forwarding.DR: "-g", Forwarding.NAT: "-m"}


def expect_save_of(table: IpvsTable) -> None:
    """expect_listing_of the other way round, for a process whose memo of `ipvsadm -S -n`
    lines is empty: each real server of a table is taken under the plain line ipvsadm
    prints it by. The table: one read from the listing (the watcher: its health applies
    read that, so its first reload parsed `ipvsadm -S -n` cold, half a second of the lab
    VM's at 10,000 real servers, six at 100,000), or the config's own services (a CLI run:
    a table that is as configured is then a lookup a line, not 10,000 new Destinations;
    a real server that is not, a weight at 0 say, is parsed as ever). Only lines
    _PLAIN_DEST reads (IPv4, TCP or UDP, DR or NAT, no thresholds, no tunnel), whose parse
    is exactly that service key and real server: a line not formatted as guessed here only
    misses."""
    if not _plain_seen[0]:  # else a reading's own lines: nearer still
        _plain_seen[0] = save_guesses(table)


def save_guesses(table: IpvsTable) -> dict[str, _Plain]:
    """expect_save_of's lines: each real server _PLAIN_DEST reads, under the plain line
    `ipvsadm -S -n` prints it by."""
    seen: dict[str, _Plain] = {}
    for svc in table.values():
        key = svc.key
        flag = _SAVE_FLAGS.get(key.protocol)
        if flag is None or key.address is None or key.address.version != 4:
            continue
        where = f"{address_text(key.address)}:{key.port}"
        part = flag + where
        for d in svc.destinations:
            forwarding = _SAVE_FORWARDING.get(d.forwarding)
            if forwarding is not None and _plain_ipv4(d):
                seen[f"-a {flag} {where} -r {address_text(d.address)}:{d.port} {forwarding}"
                     f" -w {d.weight}"] = (part, key, d)
    return seen


Guesses = tuple[dict[str, _Plain], dict[str, Destination]]


def config_guesses(services: Sequence[VirtualService]) -> Guesses:
    """The lines a table as configured is read by, both ways (save_guesses,
    listing_guesses): what the config cache keeps beside a Config, so that a new process
    takes them from there instead of writing 10,000 lines out (0.3 s of the lab VM's
    time at 10,000 real servers; unpickled, a tenth of that)."""
    table = {service.key: service for service in services}
    return save_guesses(table), listing_guesses(table)


def expect_guesses(guesses: Guesses) -> None:
    """Take kept guesses as the memos' lines, where a memo is still empty."""
    save, listing = guesses
    if not _plain_seen[0]:
        _plain_seen[0] = save
    if not _proc_seen[0]:
        _proc_seen[0] = listing


def parse_proc_ip_vs_exact(text: str) -> IpvsTable | None:
    """/proc/net/ip_vs as parse_ipvs_save would read `ipvsadm -S -n` of the same table, or
    None where the listing cannot say that exactly: a fwmark service (IPv4 or IPv6 is not
    shown), a persistent one (no persistence engine shown), a word after the scheduler
    other than `ops`, a TUN real server (no tunnel type shown), or any line that does not
    parse. What no line shows (scheduler flags, thresholds, an IPv6 service's `ops`) the
    caller rules out (director.listing_verifies, Director._listing_to_verify)."""
    before, seen = _proc_seen[0], dict[str, Destination]()
    found: list[tuple[VirtualService, list[str]]] = []
    heads: list[str] | None = None  # the current service's real-server lines, as keyed
    for line in text.splitlines():
        if heads is not None and line.startswith("  -> "):
            parts = line.rsplit(None, 2)  # [head, ActiveConn, InActConn]
            if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
                return None
            head = parts[0]
            if head not in seen:
                dest = before.get(head)
                if dest is None:
                    dest = _proc_destination(head)
                if dest is None:
                    return None
                seen[head] = dest
            heads.append(head)
        elif not found and line.startswith(_PROC_HEADERS):
            continue
        else:
            service = _proc_service(line.split())
            if service is None:
                return None
            heads = []
            found.append((service, heads))
    _proc_seen[0] = seen
    # The kernel lists the newest real server first, ipvsadm sorts them by family, address
    # and port (ipvs_cmp_dests). The kernel prints each address in fixed-width hex (IPv4
    # %08X, IPv6 [%pI6] with every group in four digits, '[' after any hex digit), so the
    # lines themselves sort in that order: a sort in C, with no key built per line.
    return {svc.key: _with_dests(svc, [seen[head] for head in sorted(heads)])
            for svc, heads in found}


def _proc_service(words: list[str]) -> VirtualService | None:
    """`TCP  C0A81EFE:0050 wrr [ops]`: None for anything else (FWM, persistent, junk)."""
    if len(words) not in (3, 4) or words[0] not in _PROC_PROTOCOLS or words[3:] not in (
            [], ["ops"]):
        return None
    try:
        address, port = _proc_endpoint(words[1])
    except ValueError:
        return None
    return VirtualService(key=ServiceKey(_PROC_PROTOCOLS[words[0]], address, port),
                          scheduler=words[2], one_packet=len(words) == 4)


# An IPv4 real server's line without its counters, in one match: nearly every line of a
# large table, and a new process (the CLI's reload) reads each once, with no memo (a
# third of the time a line took through split and _proc_endpoint). Both patterns are
# compiled on first use: every run of the CLI imports this module, few read the listing.
@lru_cache(maxsize=1)
def _proc_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(an IPv4 real server's line without its counters, an address:port)"""
    return (re.compile(r"  -> ([0-9A-Fa-f]{8}):([0-9A-Fa-f]{4}) +(Route|Local|Masq) +(\d+)"),
            re.compile(r"([0-9A-Fa-f]{8}):([0-9A-Fa-f]{4})|\[([0-9A-Fa-f:]+)\]:([0-9A-Fa-f]{4})"))


def _proc_destination(head: str) -> Destination | None:
    """`  -> C0A81E6F:0050      Route   1` (a line without its counters), or None."""
    match = _proc_patterns()[0].fullmatch(head)
    if match is not None:
        address, port, forwarding, weight = match.groups()
        return Destination(ipaddress.IPv4Address(int(address, 16)), int(port, 16),
                           _PROC_FORWARDING_EXACT[forwarding], int(weight))
    words = head.split()
    if len(words) != 4 or words[0] != "->" or not words[3].isdigit():
        return None
    forwarding = _PROC_FORWARDING_EXACT.get(words[2])
    try:
        endpoint = _proc_endpoint(words[1])
    except ValueError:
        return None
    if forwarding is None:
        return None
    return Destination(endpoint[0], endpoint[1], forwarding, int(words[3]))


def _address_order(dest: Destination) -> tuple[int, int, int]:
    return dest.address.version, int(dest.address), dest.port


def _proc_endpoint(text: str) -> tuple[IPAddress, int]:
    """`C0A81EFE:0050` (IPv4 in hex) or `[2001:0db8:...:0001]:0050`: hex address, hex port."""
    match = _proc_patterns()[1].fullmatch(text)
    if not match:
        raise ValueError(f"not a /proc/net/ip_vs address:port: {text!r}")
    if match.group(1):
        return ipaddress.IPv4Address(int(match.group(1), 16)), int(match.group(2), 16)
    return ipaddress.IPv6Address(match.group(3)), int(match.group(4), 16)


@dataclass(frozen=True)
class Rule:
    """One ipvsadm rule line (`-A ...`, `-a ...`, `-E`, `-e`, `-D`, `-d`), parsed."""

    op: str
    key: ServiceKey
    service: VirtualService | None = None  # -A / -E
    dest: Destination | None = None  # -a / -e / -d (for -d only the identity matters)


# One start reads the same rule lines several times: `ipvsadm -S -n` before, the batch
# check after, the verification, and the batch's own lines. Parsing each distinct line once
# keeps a start of 10,000 real servers from spending most of its time in ipaddress. About
# 700 bytes a line: the cache holds at most 12 MB (a larger table still parses, uncached).
@lru_cache(maxsize=1 << 14)
def parse_rule(line: str) -> Rule:
    """One rule line, as `ipvsadm -S -n` prints it or `ipvsadm -R` reads it."""
    tokens = line.split()
    if len(tokens) < 3 or tokens[0] not in ("-A", "-E", "-D", "-a", "-e", "-d"):
        raise ValueError(f"not an ipvsadm rule: {line!r}")
    op = tokens[0]
    key, rest = _service_key(tokens[1:])
    if op in ("-A", "-E"):
        return Rule(op, key, service=_service_attrs(key, rest))
    if op == "-D":
        return Rule(op, key)
    dest = _destination(key, rest)
    if dest is None:
        raise ValueError(f"rule without -r: {line!r}")
    return Rule(op, key, dest=dest)


def rule_holds(line: str, table: IpvsTable) -> bool:
    """Does the observed table show what this rule asked for?"""
    return RuleCheck(table)(line)


class RuleCheck:
    """`rule_holds` for many lines against one observed table. Each service's real servers
    are indexed once, when first asked about: checking a batch of N rules would otherwise
    read the service's N real servers N times."""

    def __init__(self, table: IpvsTable) -> None:
        self.table = table
        self._dests: dict[ServiceKey, dict[tuple[IPAddress, int], Destination]] = {}

    def __call__(self, line: str) -> bool:
        rule = parse_rule(line)
        seen = self.table.get(rule.key)
        if rule.service is not None:
            return seen is not None and seen.attributes() == rule.service.attributes()
        if rule.dest is None:
            return seen is None  # -D
        if seen is None:
            return rule.op == "-d"
        dests = self._dests.get(rule.key)
        if dests is None:
            dests = self._dests[rule.key] = {d.ident: d for d in seen.destinations}
        have = dests.get(rule.dest.ident)
        if rule.op == "-d":
            return have is None
        return have is not None and (have.forwarding, have.weight, have.tunnel) == (
            rule.dest.forwarding, rule.dest.weight, rule.dest.tunnel)


# The rule a line of `ipvsadm -S -n` would print once an edit took: -e/-E show as -a/-A.
_PRINTED_AS = {"-e": "-a", "-E": "-A"}


def rules_held(rules: Sequence[str], saved: str) -> list[bool]:
    """rule_holds for each rule against `ipvsadm -S -n` output, comparing text first: a
    rule printed exactly as ipvsadm prints the kernel's entry (the planner writes them in
    that canonical form: `-a -t VIP:PORT -r RIP:PORT -g -w N`) holds, with no object built.
    Only the rules not found that way (a deletion, thresholds -S leaves out, a rule that
    did not take) are parsed and compared as objects, the table parsed once for them."""
    printed = set(saved.splitlines())
    check: RuleCheck | None = None
    held = []
    for rule in rules:
        op = rule[:2]
        if _PRINTED_AS.get(op, op) + rule[2:] in printed and op not in ("-d", "-D"):
            held.append(True)
            continue
        if check is None:
            check = RuleCheck(parse_ipvs_save(saved))
        held.append(check(rule))
    return held


def _with_dests(svc: VirtualService, dests: list[Destination]) -> VirtualService:
    return VirtualService(key=svc.key, scheduler=svc.scheduler, persistence=svc.persistence,
                          netmask=svc.netmask, extra=svc.extra, destinations=tuple(dests),
                          flags=svc.flags, one_packet=svc.one_packet, pe=svc.pe)


def _service_attrs(key: ServiceKey, rest: list[str]) -> VirtualService:
    """`-s SCHED [-p N [-M MASK]] [--pe NAME] [-o] [-b FLAG,...]` as ipvsadm -S prints
    them (print_service_entry); what is not understood is kept in `extra`, so that it
    still counts as a difference."""
    scheduler, persistence, netmask, pe, one_packet = "wlc", 0, None, None, False
    flags: tuple[str, ...] = ()
    extra: list[str] = []
    i = 0
    while i < len(rest):
        token = rest[i]
        nxt = rest[i + 1] if i + 1 < len(rest) else None
        if token in ("-s", "--scheduler") and nxt is not None:
            scheduler, i = nxt, i + 2
        elif token in ("-p", "--persistent") and nxt is not None and nxt.isdigit():
            persistence, i = int(nxt), i + 2
        elif token in ("-M", "--netmask") and nxt is not None:
            netmask, i = nxt, i + 2
        elif token in ("--pe",) and nxt is not None:
            pe, i = nxt, i + 2
        elif token in ("-b", "--sched-flags") and nxt is not None:
            flags, i = _sched_flags(nxt), i + 2
        elif token in ("-o", "--ops"):
            one_packet, i = True, i + 1
        else:
            extra.append(token)
            i += 1
    return VirtualService(key=key, scheduler=scheduler, persistence=persistence,
                          netmask=netmask, extra=tuple(extra), flags=flags,
                          one_packet=one_packet, pe=pe)


def _sched_flags(text: str) -> tuple[str, ...]:
    """`-b sh-fallback,sh-port`: in SCHEDULER_FLAGS order, however they were written;
    names we do not know (flag-1...) kept at the end, so that they show as a difference."""
    given = text.split(",")
    return tuple(f for f in SCHEDULER_FLAGS if f in given) + tuple(
        f for f in given if f not in SCHEDULER_FLAGS)


def _destination(key: ServiceKey, rest: list[str]) -> Destination | None:
    if len(rest) < 2 or rest[0] not in ("-r", "--real-server"):
        return None
    address, port = parse_endpoint(rest[1])
    forwarding, weight, upper, lower = Forwarding.DR, 1, 0, 0
    i = 2
    while i < len(rest):
        token = rest[i]
        if token in ("-g", "-i", "-m"):
            forwarding = Forwarding.from_flag(token)
        elif token in ("-w", "--weight") and i + 1 < len(rest):
            weight = int(rest[i + 1])
            i += 1
        elif token in ("-x", "--u-threshold") and i + 1 < len(rest):
            upper = int(rest[i + 1])
            i += 1
        elif token in ("-y", "--l-threshold") and i + 1 < len(rest):
            lower = int(rest[i + 1])
            i += 1
        i += 1
    # A TUN real server always has a tunnel (plain IPIP when no --tun-* option is shown),
    # as the config's have: the two compare equal.
    tunnel = tunnel_from_tokens(rest[2:]) if forwarding is Forwarding.TUN else None
    return Destination(address=address, port=port, forwarding=forwarding, weight=weight,
                       upper=upper, lower=lower, tunnel=tunnel)


def parse_timeouts(text: str) -> Timeouts:
    """`Timeout (tcp tcpfin udp): 900 120 300`."""
    match = re.search(r"Timeout \(tcp tcpfin udp\):\s*(\d+)\s+(\d+)\s+(\d+)", text)
    if not match:
        raise ValueError(f"unexpected `ipvsadm -L --timeout` output: {text.strip()!r}")
    return Timeouts(int(match.group(1)), int(match.group(2)), int(match.group(3)))


@dataclass(frozen=True)
class DestinationCounters:
    forward: str
    weight: int
    active: int
    inactive: int


Counters = dict[ServiceKey, dict[tuple[IPAddress, int], DestinationCounters]]


_PLAIN_COUNTERS = re.compile(r"\s*-> ([0-9.]+):(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s*")


def parse_ipvs_list(text: str) -> Counters:
    """`ipvsadm -L -n`: weight and ActiveConn/InActConn of every destination."""
    result: Counters = {}
    current: ServiceKey | None = None
    dests: dict[tuple[IPAddress, int], DestinationCounters] = {}  # current's, unhashed
    addresses: dict[str, ipaddress.IPv4Address] = {}  # each read once, as parse_ipvs_save
    names = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
    for line in text.splitlines():
        plain = _PLAIN_COUNTERS.fullmatch(line)
        if plain is not None and current is not None:  # an IPv4 real server: most lines
            where, number, forward, weight, active, inactive = plain.groups()
            try:
                ip = addresses.get(where)
                if ip is None:
                    ip = addresses[where] = ipv4(where)
                dests[ip, int(number)] = DestinationCounters(
                    forward, int(weight), int(active), int(inactive))
            except ValueError:
                pass
            continue
        tokens = line.split()
        if len(tokens) >= 2 and tokens[0] in names:
            try:
                address, port = parse_endpoint(tokens[1])
            except ValueError:
                current = None
                continue
            current = ServiceKey(names[tokens[0]], address, port)
            result[current] = dests = {}
        elif len(tokens) >= 2 and tokens[0] == "FWM":
            current = ServiceKey(Protocol.FWMARK, None, int(tokens[1]),
                                 len(tokens) > 2 and tokens[2] == "IPv6")
            result[current] = dests = {}
        elif len(tokens) == 6 and tokens[0] == "->" and current is not None:
            try:
                ident = parse_endpoint(tokens[1])
                counters = DestinationCounters(tokens[2], int(tokens[3]), int(tokens[4]),
                                               int(tokens[5]))
            except ValueError:
                continue
            dests[ident] = counters
    return result


# `ipvsadm -S` leaves the connection thresholds out (print_service_entry writes `-a ... -w N`
# and nothing of -x/-y): they are read from this listing instead.
IPVS_THRESHOLDS = ("ipvsadm", "-L", "-n", "--thresholds")


def parse_ipvs_thresholds(text: str) -> dict[ServiceKey, dict[tuple[IPAddress, int],
                                                               tuple[int, int]]]:
    """`ipvsadm -L -n --thresholds`: (Uthreshold, Lthreshold) of every real server."""
    result: dict[ServiceKey, dict[tuple[IPAddress, int], tuple[int, int]]] = {}
    current: ServiceKey | None = None
    names = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
    for line in text.splitlines():
        tokens = line.split()
        try:
            if len(tokens) >= 2 and tokens[0] in names:
                current = ServiceKey(names[tokens[0]], *parse_endpoint(tokens[1]))
                result[current] = {}
            elif len(tokens) >= 2 and tokens[0] == "FWM":
                current = ServiceKey(Protocol.FWMARK, None, int(tokens[1]),
                                     len(tokens) > 2 and tokens[2] == "IPv6")
                result[current] = {}
            elif len(tokens) == 6 and tokens[0] == "->" and current is not None:
                result[current][parse_endpoint(tokens[1])] = (int(tokens[2]), int(tokens[3]))
        except ValueError:
            current = None
    return result


def with_thresholds(table: IpvsTable, thresholds: dict[ServiceKey, dict[
        tuple[IPAddress, int], tuple[int, int]]]) -> IpvsTable:
    """The table of `ipvsadm -S -n` completed with the thresholds of the listing."""
    from dataclasses import replace

    done: IpvsTable = {}
    for key, service in table.items():
        found = thresholds.get(key, {})
        dests = tuple(replace(d, upper=found[d.ident][0], lower=found[d.ident][1])
                      if d.ident in found else d for d in service.destinations)
        done[key] = _with_dests(service, list(dests))
    return done


IPVS_STATS = ("ipvsadm", "-L", "-n", "--stats", "--exact")


class Stats(Record):
    conns: int
    inpkts: int
    outpkts: int
    inbytes: int
    outbytes: int


_UNITS = {"K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


def _number(text: str) -> int:
    """`118291K` without --exact (ipvsadm's print_largenum scales by 1000), else exact."""
    if text[-1:] in _UNITS:
        return int(text[:-1]) * _UNITS[text[-1]]
    return int(text)


def parse_ipvs_stats(text: str) -> dict[ServiceKey, tuple[Stats, dict[tuple[IPAddress, int],
                                                                       Stats]]]:
    """`ipvsadm -L -n --stats [--exact]`: totals per service and per real server. The DR
    proof: OutPkts stays 0 at the director, because replies go straight to the client."""
    result: dict[ServiceKey, tuple[Stats, dict[tuple[IPAddress, int], Stats]]] = {}
    current: ServiceKey | None = None
    names = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
    for line in text.splitlines():
        tokens = line.split()
        try:
            if len(tokens) >= 7 and tokens[0] in names:
                address, port = parse_endpoint(tokens[1])
                current = ServiceKey(names[tokens[0]], address, port)
                numbers = tokens[2:7]
            elif len(tokens) >= 7 and tokens[0] == "FWM":
                ipv6 = tokens[2] == "IPv6"
                current = ServiceKey(Protocol.FWMARK, None, int(tokens[1]), ipv6)
                numbers = tokens[3:8] if ipv6 else tokens[2:7]
            elif len(tokens) == 7 and tokens[0] == "->" and current is not None:
                stats = Stats(*(_number(t) for t in tokens[2:7]))
                result[current][1][parse_endpoint(tokens[1])] = stats
                continue
            else:
                continue
            result[current] = (Stats(*(_number(t) for t in numbers)), {})
        except (ValueError, TypeError):
            current = None
    return result


# --- ip ----------------------------------------------------------------------------------------

class Address(Record):
    device: str
    interface: IPInterface
    secondary: bool = False
    deprecated: bool = False  # preferred_lft 0: never picked as a source address


def _device(name: str) -> str:
    """`eth0@if5` (veth peers, VLANs) names the device eth0."""
    return name.rstrip(":").split("@", 1)[0]


def parse_ip_addrs(text: str) -> list[Address]:
    """`ip -o addr show`: one address a line."""
    found = []
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) < 4 or not tokens[0].rstrip(":").isdigit() or tokens[2] not in (
                "inet", "inet6"):
            continue
        try:
            iface = ipaddress.ip_interface(tokens[3])
        except ValueError:
            continue
        found.append(Address(_device(tokens[1]), iface, "secondary" in tokens[4:],
                             "deprecated" in tokens[4:]))
    return found


class Link(Record):
    name: str
    up: bool
    mac: str | None = None


def parse_ip_links(text: str) -> dict[str, Link]:
    """`ip -o link show`: admin state (the UP flag) and MAC of every device."""
    links = {}
    for line in text.splitlines():
        match = re.match(r"\s*\d+:\s+(\S+?):\s+<([^>]*)>", line)
        if not match:
            continue
        name = _device(match.group(1))
        mac = re.search(r"link/\S+\s+([0-9a-f:]{17})", line)
        links[name] = Link(name, "UP" in match.group(2).split(","), mac.group(1) if mac else None)
    return links


class Route(Record):
    """A default route as `ip route show default` prints it and `ip route add` takes it
    back: every attribute that makes it the same route again (onlink above all: without
    it a gateway outside the interface's subnets is refused)."""

    via: IPAddress | None
    dev: str | None
    metric: int = 0
    onlink: bool = False
    proto: str | None = None
    scope: str | None = None
    src: IPAddress | None = None
    family: int = 4  # from the probe (ip -4 / ip -6): a device-only route has no address

    def args(self) -> tuple[str, ...]:
        """The words after `ip route add|replace|del`."""
        argv = ["default"]
        for name, value in (("via", self.via), ("dev", self.dev), ("proto", self.proto),
                            ("scope", self.scope), ("src", self.src)):
            if value is not None:
                argv += [name, str(value)]
        if self.metric:
            argv += ["metric", str(self.metric)]
        if self.onlink:
            argv.append("onlink")
        return tuple(argv)

    def same(self, other: Route) -> bool:
        """The same route for the kernel's purposes: gateway, device and metric."""
        return (self.via, self.metric) == (other.via, other.metric) and (
            self.dev is None or other.dev is None or self.dev == other.dev)


# Words of `ip route show` output that take a value; the rest of the values are not kept
# (expires, pref and the like are the kernel's, not part of what was configured).
_ROUTE_VALUES = frozenset({"via", "dev", "proto", "scope", "src", "metric", "table", "expires",
                           "hoplimit", "pref", "mtu", "advmss", "realm", "realms", "weight",
                           "initcwnd", "initrwnd", "rto_min", "quickack", "features",
                           "congctl", "window", "rtt", "rttvar", "ssthresh", "cwnd", "tos",
                           "nhid", "from", "type"})
_ROUTE_WORD = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def parse_default_routes(text: str, family: int = 4) -> list[Route]:
    """`ip -4 route show default` (or -6): every default route with its attributes."""
    routes = []
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or tokens[0] != "default":
            continue
        values: dict[str, str] = {}
        flags: set[str] = set()
        i = 1
        while i < len(tokens):
            if tokens[i] in _ROUTE_VALUES and i + 1 < len(tokens):
                values.setdefault(tokens[i], tokens[i + 1])
                i += 2
            else:
                flags.add(tokens[i])
                i += 1
        try:
            route = Route(
                via=ipaddress.ip_address(values["via"]) if "via" in values else None,
                dev=values.get("dev"), metric=int(values.get("metric", "0")),
                onlink="onlink" in flags,
                proto=_word(values.get("proto")), scope=_word(values.get("scope")),
                src=ipaddress.ip_address(values["src"]) if "src" in values else None,
                family=family)
        except ValueError:
            continue
        routes.append(route)
    return routes


def _word(text: str | None) -> str | None:
    if text is None or _ROUTE_WORD.fullmatch(text):
        return text
    raise ValueError(text)


# --- sysctl, arping ------------------------------------------------------------------------------

def sysctl_key(interface: str, name: str) -> str:
    """The sysctl key of a per-interface IPv4 setting. A dot in an interface name (VLAN
    eth0.100) would read as a separator in the dotted form, so such keys use slashes."""
    if "." in interface:
        return f"net/ipv4/conf/{interface}/{name}"
    return f"net.ipv4.conf.{interface}.{name}"


# Compiled by re on first use (as _SYNC_LINE): few runs read a sysctl key's interface.
_CONF_KEY = (r"net[./]ipv[46][./]conf[./]([A-Za-z0-9_-]+)[./][a-z_]+|"
             r"net/ipv[46]/conf/([A-Za-z0-9._-]+)/[a-z_]+")


def interface_of_sysctl(key: str) -> str | None:
    """The interface a per-interface key belongs to (None for "all", "default" and keys
    that are not per interface): when it is gone, so is the key."""
    match = re.fullmatch(_CONF_KEY, key)
    name = (match.group(1) or match.group(2)) if match else None
    return None if name in (None, "all", "default") else name


def parse_sysctl_values(keys: tuple[str, ...], text: str) -> dict[str, int]:
    """`sysctl -n K1 K2 ...` prints one value a line, in order."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != len(keys):
        raise ValueError(f"sysctl printed {len(lines)} values for {len(keys)} keys")
    return {key: int(value) for key, value in zip(keys, lines)}


class Arping(Record):
    """Which arping is installed. iputils: -s is the source IP. Thomas Habets': -S is the
    source IP and -s the source MAC, -i the interface."""

    flavour: str  # "iputils" | "habets"

    def announce(self, interface: str, vip: IPAddress, target: IPAddress,
                 count: int) -> tuple[str, ...]:
        unsolicited = ("-U",) if target == vip else ()
        if self.flavour == "iputils":
            return ("arping", *unsolicited, "-c", str(count), "-I", interface, "-s", str(vip),
                    str(target))
        return ("arping", *unsolicited, "-c", str(count), "-i", interface, "-S", str(vip),
                str(target))


def parse_arping_version(text: str) -> Arping:
    return Arping("iputils" if "iputils" in text else "habets")


# --- the HA side: the IPVS sync daemons and keepalived -----------------------------------

IPVS_DAEMONS = ("ipvsadm", "-L", "--daemon")
_SYNC_LINE = r"(master|backup) sync daemon \(mcast=([^,)]+), syncid=(\d+)[,)]"


class SyncDaemon(Record):
    """One kernel sync daemon: `ipvsadm --start-daemon STATE --mcast-interface IF
    --syncid N`."""

    state: str  # master | backup
    interface: str
    syncid: int

    def start_argv(self) -> tuple[str, ...]:
        return ("ipvsadm", "--start-daemon", self.state, "--mcast-interface", self.interface,
                "--syncid", str(self.syncid))

    def describe(self) -> str:
        return f"{self.state} sync daemon on {self.interface}, syncid {self.syncid}"


def parse_sync_daemons(text: str) -> dict[str, SyncDaemon]:
    """`ipvsadm -L --daemon` (ipvsadm.c list_daemon): one line per running daemon,
    `master sync daemon (mcast=eth1, syncid=51, maxlen=1472, group=224.0.0.81,
    port=8848, ttl=1)`; 1.2x versions stop after the syncid. Nothing when none runs."""
    daemons: dict[str, SyncDaemon] = {}
    for line in text.splitlines():
        match = re.match(_SYNC_LINE, line.strip())
        if match:
            daemons[match.group(1)] = SyncDaemon(match.group(1), match.group(2),
                                                 int(match.group(3)))
    return daemons


class KeepalivedSeen(Record):
    """A keepalived we started, alive: the pid from its pid file, running with our config."""

    pid: int
    config_file: str


class BirdSeen(Record):
    """A BIRD we started, alive: the pid from its pid file, running with our config."""

    pid: int
    config_file: str


class BgpSession(Record):
    """One BGP protocol as `birdc show protocols` lists it."""

    state: str  # BIRD's protocol state: up, start, down...
    info: str  # the BGP state (Established, Active, Connect...) and the rest of the line

    @property
    def established(self) -> bool:
        return self.info.split()[:1] == ["Established"]


class BgpSeen(Record, frozen=False):
    """[bgp]: how this host reaches each neighbor (`ip route get`: device, source address)
    and, for status only, what BIRD says about its sessions and what it exports."""

    routes: dict[IPAddress, tuple[str, IPAddress | None]] = field(default_factory=dict)
    sessions: dict[str, BgpSession] = field(default_factory=dict)
    exported: dict[str, tuple[str, ...]] = field(default_factory=dict)


class HostObservation(Record, frozen=False):
    """What one host looks like now. Empty defaults describe "nothing configured"."""

    addresses: list[Address] = field(default_factory=list)
    links: dict[str, Link] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    ipvs: IpvsTable = field(default_factory=dict)
    timeouts: Timeouts | None = None
    sysctls: dict[str, int] = field(default_factory=dict)
    arping: Arping | None = None
    notes: list[str] = field(default_factory=list)  # what could not be observed, and why
    # HA ([ha]): sync daemons by state, our keepalived, files we write (path -> sha256)
    sync_daemons: dict[str, SyncDaemon] = field(default_factory=dict)
    keepalived: KeepalivedSeen | None = None
    files: dict[str, str] = field(default_factory=dict)
    ha_role: str | None = None  # what keepalived's notify hook last recorded
    nft: dict[str, NftTable] = field(default_factory=dict)  # our tables, by family (nft.py)
    tunnels: TunnelSeen = field(default_factory=TunnelSeen)  # TUN real servers
    # BGP ([bgp]): our BIRD, the routes to the neighbors
    bird: BirdSeen | None = None
    bgp: BgpSeen = field(default_factory=BgpSeen)

    def has_address(self, device: str, address: IPAddress) -> bool:
        return (device, address) in self._by_address()[0]

    def is_deprecated(self, device: str, address: IPAddress) -> bool:
        return any(a.deprecated for a in self._by_address()[0].get((device, address), ()))

    def devices_with(self, address: IPAddress) -> list[str]:
        return list(self._by_address()[1].get(address, ()))

    def _by_address(self) -> tuple[dict[tuple[str, IPAddress], list[Address]],
                                   dict[IPAddress, list[str]]]:
        """The addresses by (device, IP) and the devices by IP. Asked once per VIP by the
        plan, the verification and stop: a scan each was VIPs x addresses, a million
        comparisons at 1,000 VIPs. Made again when `addresses` is another list or has
        grown (an effect projected onto the observation appends to it)."""
        seen = self.addresses
        cached = self.__dict__.get("_address_index")
        if cached is None or cached[0] is not seen or cached[1] != len(seen):
            pairs: dict[tuple[str, IPAddress], list[Address]] = {}
            devices: dict[IPAddress, list[str]] = {}
            for entry in seen:
                ip = entry.interface.ip
                pairs.setdefault((entry.device, ip), []).append(entry)
                devices.setdefault(ip, []).append(entry.device)
            # the list itself is held: its id cannot be reused by another while cached
            cached = self.__dict__["_address_index"] = (seen, len(seen), (pairs, devices))
        index: tuple[dict[tuple[str, IPAddress], list[Address]],
                     dict[IPAddress, list[str]]] = cached[2]
        return index
