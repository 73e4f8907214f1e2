"""Fake `nft`: behaves like nftables 1.0.6 (Debian 12) for the commands lvs_scripts uses.

Emulated: `nft list tables`, `nft list table FAMILY NAME`, `nft list ruleset`, `nft delete
table FAMILY NAME`, `nft --version` and `nft -f FILE` (`-` and /proc/self/fd/0 read stdin)
with input made of `create table`, `add table` / `table` (with or without a `{ ... }`
body), `delete table`, and in a body chains with a base chain head and mark rules
(`ip daddr A tcp dport P meta mark set M`). A file is one transaction: a failing line
leaves the ruleset as it was. Output and error texts as captured from nft 1.0.6 on the
lab's kernel (tests/data/captured-ipvs-options): rules printed back normalised, the mark
as 0x%08x, tabs for indentation, errors as `Error: ...` then the offending line and carets.

Anything else (other statements, sets, maps, flags) exits 99, "not emulated".
"""

# A command parser with one branch per command, like the ipvsadm fake:
# ruff: noqa: PLR0911, PLR0912

from __future__ import annotations

import copy
import re
from typing import Any

from .model import UNSUPPORTED_RC, Run, State

VERSION = "nftables v1.0.6 (Lester Gooch #5)"
FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
_HEAD = re.compile(r"type filter hook (prerouting|input|forward|output|postrouting) "
                   r"priority (mangle|filter|-?\d+); policy (accept|drop);")
_PRIORITY = {"-150": "mangle", "0": "filter"}
_RULE = re.compile(r"(ip|ip6) daddr (\S+) (tcp|udp|sctp) dport (\d+) meta mark set "
                   r"(0x[0-9a-fA-F]+|\d+)")


class NftError(Exception):
    """An error nft reports: `[FILE:LINE:FIRST-LAST: ]Error: TEXT`, then the command (or the
    line of the file) and carets under the offending word (`word`, found in the line)."""

    def __init__(self, text: str, line: str = "", word: str = "", rc: int = 1) -> None:
        super().__init__(text)
        self.text = text
        self.line = line
        self.word = word
        self.rc = rc
        self.where = ""  # "/dev/stdin:1:" for a line of a file
        self.number = 0  # that line's number


class NotEmulated(Exception):
    pass


def _tables(st: State) -> list[dict[str, Any]]:
    nft = st.setdefault("nft", {"tables": []})
    tables: list[dict[str, Any]] = nft["tables"]
    return tables


def _find(tables: list[dict[str, Any]], family: str, name: str) -> dict[str, Any] | None:
    return next((t for t in tables if t["family"] == family and t["name"] == name), None)


def main(run: Run) -> int:
    args = run.args
    try:
        if args in (["--version"], ["-v"]):
            run.print(VERSION)
            return 0
        if not run.state.get("kernel", {}).get("nf_tables", True):
            run.eprint("Error: Could not process rule: Operation not supported")
            return 1
        if args[:1] == ["-f"] and len(args) == 2:
            return _file(run, args[1])
        if args[:2] == ["list", "tables"] and len(args) == 2:
            for table in _tables(run.state):
                run.print(f"table {table['family']} {table['name']}")
            return 0
        if args[:2] == ["list", "ruleset"] and len(args) == 2:
            for table in _tables(run.state):
                _print_table(run, table)
            return 0
        if args[:2] in (["list", "table"], ["delete", "table"]) and len(args) == 4:
            family, name = args[2], args[3]
            table = _find(_tables(run.state), family, name)
            if table is None:
                raise NftError("No such file or directory" + _did_you_mean(
                    _tables(run.state), family, name), " ".join(args), name)
            if args[0] == "list":
                _print_table(run, table)
            else:
                _tables(run.state).remove(table)
            return 0
    except NftError as err:
        _report(run, err)
        return err.rc
    except NotEmulated as err:
        run.eprint(f"fakehost: nft: not emulated: {err}")
        return UNSUPPORTED_RC
    run.eprint(f"fakehost: nft: not emulated: {' '.join(args)}")
    return UNSUPPORTED_RC


def _did_you_mean(tables: list[dict[str, Any]], family: str, name: str) -> str:
    other = next((t for t in tables if t["name"] == name and t["family"] != family), None)
    if other is None:
        return ""
    return f"; did you mean table \u2018{name}\u2019 in family {other['family']}?"


def _report(run: Run, err: NftError) -> None:
    if not err.line:
        run.eprint(f"{err.where}Error: {err.text}")
        return
    start = err.line.rfind(err.word) if err.word else 0
    start = max(start, 0)
    width = len(err.word) if err.word else len(err.line)
    where = f"{err.where}{start + 1}-{start + width}: " if err.where else ""
    run.eprint(f"{where}Error: {err.text}")
    run.eprint(err.line)
    # carets under the word, the line's leading tabs kept so that they line up
    run.eprint("".join(c if c == "\t" else " " for c in err.line[:start]) + "^" * width)


def _print_table(run: Run, table: dict[str, Any]) -> None:
    run.print(f"table {table['family']} {table['name']} {{")
    for index, chain in enumerate(table["chains"]):
        if index:
            run.print()
        run.print(f"\tchain {chain['name']} {{")
        if chain["head"]:
            run.print(f"\t\t{chain['head']}")
        for rule in chain["rules"]:
            run.print(f"\t\t{rule}")
        run.print("\t}")
    run.print("}")


def _file(run: Run, path: str) -> int:
    if path not in ("-", "/dev/stdin", "/proc/self/fd/0"):
        raise NotEmulated(f"-f {path} (only stdin)")
    text = run.read_stdin()
    work = copy.deepcopy(_tables(run.state))
    raw = text.splitlines()
    lines = [line.strip() for line in raw]
    try:
        _statements(lines, work)
    except NftError as err:
        if err.number:
            err.line = raw[err.number - 1]
            err.where = f"{'/dev/stdin' if path == '-' else path}:{err.number}:"
        raise
    _tables(run.state)[:] = work
    return 0


def _statements(lines: list[str], work: list[dict[str, Any]]) -> None:
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        try:
            i = _statement(lines, i, line, work)
        except NftError as err:
            err.number = err.number or i
            raise


def _statement(lines: list[str], i: int, line: str, work: list[dict[str, Any]]) -> int:
    """One top-level statement (line i - 1); returns where the next one starts."""
    if not line or line.startswith("#"):
        return i
    words = line.split()
    if words[0] in ("create", "add", "delete") and words[1:2] == ["table"]:
        verb, rest = words[0], words[2:]
    elif words[0] == "table":
        verb, rest = "add", words[1:]
    else:
        raise NotEmulated(line)
    body = rest[-1:] == ["{"]
    if body:
        rest = rest[:-1]
    if len(rest) != 2 or rest[0] not in FAMILIES:
        raise NotEmulated(line)
    family, name = rest
    table = _find(work, family, name)
    if verb == "delete":
        if table is None:
            raise NftError("Could not process rule: No such file or directory", line, name)
        work.remove(table)
        return i
    if verb == "create" and table is not None:
        raise NftError("Could not process rule: File exists", line, name)
    if table is None:
        table = {"family": family, "name": name, "chains": []}
        work.append(table)
    return _table_body(lines, i, family, table) if body else i


def _table_body(lines: list[str], i: int, family: str, table: dict[str, Any]) -> int:
    """Reads `chain NAME { HEAD RULE... }` blocks up to the table's closing brace."""
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if line == "}":
            return i
        match = re.fullmatch(r"chain (\S+) \{", line)
        if match is None:
            raise NotEmulated(line)
        chain = next((c for c in table["chains"] if c["name"] == match.group(1)), None)
        if chain is None:
            chain = {"name": match.group(1), "head": None, "rules": []}
            table["chains"].append(chain)
        while i < len(lines) and lines[i] != "}":
            item = lines[i]
            i += 1
            if not item:
                continue
            head = _HEAD.fullmatch(item)
            if head is not None:
                priority = _PRIORITY.get(head.group(2), head.group(2))
                chain["head"] = (f"type filter hook {head.group(1)} priority {priority}; "
                                 f"policy {head.group(3)};")
                continue
            try:
                chain["rules"].append(_rule(item, family))
            except NftError as err:
                err.number = i  # i has moved past it: 1-based, it is this line
                raise
        i += 1  # the chain's closing brace
    raise NftError("syntax error, unexpected end of file")


def _rule(text: str, family: str) -> str:
    match = _RULE.fullmatch(text)
    if match is None:
        bad = re.fullmatch(r"(ip|ip6) daddr \S+ (tcp|udp|sctp) dport \d+ meta mark set (\S+)",
                           text)
        if bad is not None:
            raise NftError("Could not parse packet mark", text, bad.group(3))
        raise NotEmulated(text)
    if match.group(1) != family:
        raise NotEmulated(f"{text} in a table of family {family}")
    mark = int(match.group(5), 0)
    if not 0 <= mark <= 0xFFFFFFFF:
        raise NftError("Value exceeds valid range", text, match.group(5))
    return (f"{match.group(1)} daddr {match.group(2)} {match.group(3)} dport {match.group(4)} "
            f"meta mark set 0x{mark:08x}")
