"""nftables for fwmark services: the table lvs_scripts owns, its commands and its parsers.

A fwmark service (`[[service]] fwmark = N`, `match = [...]`) needs the packets it serves
marked before IPVS sees them. The marks are set in one table per address family that
belongs to lvs_scripts alone, `table ip lvs_scripts` (and `ip6`), with one base chain on
the prerouting hook at the mangle priority (where iptables' `-t mangle -j MARK` sat in the
classic how-tos: before routing, so before IPVS in LOCAL_IN). The table is created, and
replaced, with one `nft -f` transaction from stdin: the kernel applies all of it or none
of it, so there is never a moment with half the marks. Stop deletes exactly that table.

Pure: argv, the text fed to nft, and parsers of what `nft list` prints (captured from a
real kernel in tests/data/captured-ipvs-options).
"""

from __future__ import annotations

import re

from .model import IPAddress, Protocol, VirtualService
from .record import Record

TABLE = "lvs_scripts"
CHAIN = "prerouting"
# nft prints the base chain back like this (nft 1.0.6, and 0.9 before it).
CHAIN_HEAD = f"type filter hook {CHAIN} priority mangle; policy accept;"
FAMILIES = ("ip", "ip6")
NFT_LIST_TABLES = ("nft", "list", "tables")
# `-f -` reads /dev/stdin, which a minimal /dev (no udev) lacks; /proc/self/fd/0 is the same
# file and always there where nftables is.
NFT_APPLY = ("nft", "-f", "/proc/self/fd/0")


def family_of(address: IPAddress) -> str:
    return "ip" if address.version == 4 else "ip6"


def list_table_argv(family: str) -> tuple[str, ...]:
    return ("nft", "list", "table", family, TABLE)


def delete_table_argv(family: str) -> tuple[str, ...]:
    return ("nft", "delete", "table", family, TABLE)


class MarkRule(Record):
    """`ip daddr VIP tcp dport 80 meta mark set 0x00000001`: one match of a fwmark service."""

    address: IPAddress
    protocol: Protocol
    port: int
    mark: int

    def text(self) -> str:
        """The rule as `nft list` prints it back, so that what we write and what we read
        compare as text and as values alike."""
        return (f"{family_of(self.address)} daddr {self.address} {self.protocol.value} dport "
                f"{self.port} meta mark set 0x{self.mark:08x}")


class NftTable(Record):
    """What `nft list table FAMILY lvs_scripts` shows: the rules of our chain, in order,
    or None for a table that is not what we write (another chain, another hook, a rule
    we do not write)."""

    family: str
    rules: tuple[MarkRule, ...] | None

    def describe(self) -> str:
        if self.rules is None:
            return f"table {self.family} {TABLE} (not as lvs_scripts writes it)"
        return f"table {self.family} {TABLE} ({len(self.rules)} mark rule(s))"


def wanted_rules(services: tuple[VirtualService, ...]) -> dict[str, tuple[MarkRule, ...]]:
    """The mark rules of the fwmark services, by family, in config order; a family
    without any is absent."""
    rules: dict[str, list[MarkRule]] = {}
    for service in services:
        for match in service.match:
            rules.setdefault(family_of(match.address), []).append(
                MarkRule(match.address, match.protocol, match.port, service.key.port))
    return {family: tuple(found) for family, found in rules.items()}


def table_text(family: str, rules: tuple[MarkRule, ...], replace: bool) -> str:
    """The input of `nft -f`: `create table` (fails if the table exists: someone else's
    is never merged into) or, for our own, add-delete-add, which replaces it whole in the
    same transaction."""
    head = [f"table {family} {TABLE}", f"delete table {family} {TABLE}"] if replace else [
        f"create table {family} {TABLE}"]
    body = [f"table {family} {TABLE} {{", f"\tchain {CHAIN} {{", f"\t\t{CHAIN_HEAD}"]
    body += [f"\t\t{rule.text()}" for rule in rules]
    body += ["\t}", "}"]
    return "\n".join(head + body) + "\n"


# Patterns as text, compiled by re on first use: only a fwmark service reads nft's output.
_TABLE_LINE = r"table (ip|ip6) (\S+)"


def parse_tables(text: str) -> set[str]:
    """`nft list tables`: the families that have a table named lvs_scripts."""
    found = set()
    for line in text.splitlines():
        match = re.fullmatch(_TABLE_LINE, line.strip())
        if match and match.group(2) == TABLE:
            found.add(match.group(1))
    return found


_RULE = (r"(ip|ip6) daddr (\S+) (tcp|udp|sctp) dport (\d+) meta mark set "
         r"(0x[0-9a-f]+|\d+)")


def parse_table(family: str, text: str) -> NftTable:
    """`nft list table FAMILY lvs_scripts` (nft prints it back normalised: tabs, marks as
    0x%08x). Anything but our one chain with our head and mark rules makes the table
    "not as we write it" (rules None), which the planner replaces."""
    import ipaddress

    lines = [line.strip() for line in text.splitlines() if line.strip()]
    expected_head = [f"table {family} {TABLE} {{", f"chain {CHAIN} {{", CHAIN_HEAD]
    if lines[:3] != expected_head or lines[-2:] != ["}", "}"]:
        return NftTable(family, None)
    rules = []
    for line in lines[3:-2]:
        match = re.fullmatch(_RULE, line)
        if match is None or match.group(1) != family:
            return NftTable(family, None)
        try:
            address = ipaddress.ip_address(match.group(2))
        except ValueError:
            return NftTable(family, None)
        rules.append(MarkRule(address, Protocol(match.group(3)), int(match.group(4)),
                              int(match.group(5), 0)))
    return NftTable(family, tuple(rules))
