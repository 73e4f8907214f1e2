"""Health and admin state of the real servers, as the planner sees it and as it is kept on
disk: `lvs-director.health.json`, beside the state file in the state directory.

Why a file of its own rather than a new owned kind in the state file: the state file lists
what this tool changed on the host so that `stop` can undo exactly that; health is not
undone by anything, it is an input of the planner, like the config. It is written by the
watcher at every transition (possibly many times a minute) and by `disable`/`enable`,
and read by every start, reload and status: keeping it apart means a health write never
rewrites the list of what stop must undo, and a corrupt or foreign health file can be
deleted (every server counts as not yet checked) without losing that list. It is read and
written with the state file's rules: a trusted directory, no symlinks followed, written
atomically, every field checked.

Who writes what: the watcher writes `health`, the CLI writes `disabled`; both under the
run lock, each reading the file first and replacing only its own part.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from collections.abc import Mapping
from typing import Any, cast

from .errors import StateError
from .health import (
    DOWN,
    HEALTH_VERSION,
    UNKNOWN,
    Health,
    HealthStateError,
    TargetId,
    health_entry_line,
    health_from_data,
    sorted_health,
)
from .locks import Paths, check_state_dir, check_trusted, ensure_dir, open_nofollow
from .model import Destination, VirtualService, address_text
from .record import Record, field

FILE_VERSION = 1
# 10,000 targets are about 2.5 MB; 100,000 (issue 14's largest table) of IPv6 addresses,
# each down with a reason of the full MAX_REASON, about 45 MB: the file is refused above
# this only when it is not one we wrote.
MAX_FILE_BYTES = 64 << 20


# The VIP part of a fwmark service's TargetId (service_part), by whether it is IPv6: its
# family's unspecified address, which no VIP can be.
FWMARK_VIP = {False: str(ipaddress.IPv4Address(0)), True: str(ipaddress.IPv6Address(0))}
FWMARK_VIPS = frozenset(FWMARK_VIP.values())


class Disabled(Record):
    """`lvs-director disable ADDRESS [--service VIP:PORT|fwmark:MARK]`: weight 0 whatever
    the checks say. vip None: the address in every service that has it; a fwmark service
    is named as its TargetIds name it (vip "0.0.0.0" or "::", vport the mark)."""

    address: str  # canonical text
    vip: str | None = None
    vport: int | None = None

    def matches(self, key: TargetId) -> bool:
        return key.address == self.address and (
            self.vip is None or (key.vip == self.vip and key.vport == self.vport))

    def __str__(self) -> str:
        if self.vip is None:
            return self.address
        if self.vip in FWMARK_VIPS:  # a fwmark service: no VIP is ever unspecified
            return f"{self.address} in fwmark {self.vport}" + (
                " (IPv6)" if ":" in self.vip else "")
        vip = f"[{self.vip}]" if ":" in self.vip else self.vip
        return f"{self.address} in {vip}:{self.vport}"


class HealthView(Record, frozen=False):
    """What the planner needs: the health of checked targets, and what an admin disabled."""

    health: dict[TargetId, Health] = field(default_factory=dict)
    disabled: list[Disabled] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.health and not self.disabled

    def is_disabled(self, key: TargetId) -> bool:
        if not self.disabled:  # the usual case, asked for every real server at a reload
            return False
        return any(entry.matches(key) for entry in self.disabled)

    def state(self, key: TargetId) -> str:
        """The health state of a checked target: unknown until its first result."""
        health = self.health.get(key)
        return UNKNOWN if health is None else health.state

    def is_down(self, key: TargetId) -> bool:
        return self.state(key) == DOWN

    def flagged(self) -> Flagged:
        """Which services have a real server down or disabled: for a planner's pass over
        every service, built once per pass (the view may change between passes)."""
        return Flagged(self)

    def lookup(self, checked: bool = True) -> HealthLookup:
        """For reports over many real servers (status): checked False when no service has
        a check, so that the health is not indexed for nothing."""
        return HealthLookup(self, checked)


_TargetFields = tuple[str, str, int, str, int]  # a TargetId's fields, in order


class Flagged:
    """The services of a view in which some real server is down or disabled: the planner
    works out each real server's health only for those. A service whose servers are all
    up is as configured, and asking the view about each of them (a TargetId built, its
    address as text, per real server) was a second of the lab VM's time at 10,000.

    One pass over the view's health, which is as long as the config's list of checked
    real servers; the view is read as it is now, so a Flagged is for one pass over the
    services (the watcher's health changes between passes)."""

    def __init__(self, view: HealthView) -> None:
        self.view = view
        # A TargetId's first three fields are its service's part (service_part).
        self.down: set[tuple[str, str, int]] = {
            key[:3] for key, health in view.health.items() if health.state == DOWN}

    def touches(self, service: VirtualService) -> bool:
        """False when none of the service's real servers can be down or disabled."""
        part = service_part(service)
        if part in self.down:
            return True
        return any(entry.vip is None or (entry.vip == part[1] and entry.vport == part[2])
                   for entry in self.view.disabled)


class HealthLookup:
    """The health of every target, asked by its fields as a plain tuple of str and int:
    a TargetId is a NamedTuple, equal to and hashed as that tuple, so the view's own
    dict answers without a TargetId built per real server (describe at 1,000 real
    servers spent 0.4 s of the lab VM's time building and hashing them)."""

    def __init__(self, view: HealthView, checked: bool) -> None:
        self.view = view
        self.index: Mapping[_TargetFields, Health] = cast(
            "Mapping[_TargetFields, Health]", view.health) if checked else {}

    def service(self, service: VirtualService) -> ServiceHealth | None:
        """None for a fwmark service: its key (the mark, the check's port) is target_id's
        business; ask the view with that."""
        return None if service.key.address is None else ServiceHealth(self, service)


class ServiceHealth:
    """What status shows of the health of one service's real servers, asked by address
    (as text) and port: the service's part of the key, and what an admin disabled in
    it, are worked out once."""

    def __init__(self, lookup: HealthLookup, service: VirtualService) -> None:
        key = service.key
        self.index = lookup.index
        self.checked = service.check is not None
        self.prefix = (key.protocol.value, str(key.address), key.port)
        vip = self.prefix[1]
        # Disabled.matches for this service's targets: then by address alone
        self.disabled = {entry.address for entry in lookup.view.disabled
                         if entry.vip is None or (entry.vip == vip and entry.vport == key.port)}

    def __call__(self, address: str, port: int) -> dict[str, Any]:
        """`disabled` (an admin said so) wins over what checks say; a service without a
        check is `unchecked`; else the checks' state: up, down (with the last reason,
        since when) or unknown (not checked yet: counts as up)."""
        health = self.index.get((*self.prefix, address, port)) if self.checked else None
        data: dict[str, Any] = {"state": "unchecked", "reason": None, "since": None}
        if self.checked:
            data["state"] = UNKNOWN if health is None else health.state
        if health is not None:
            data["reason"] = health.reason or None
            data["since"] = health.since or None
        if address in self.disabled:
            data["state"] = "disabled"
        return data


def target_id(service: VirtualService, dest: Destination) -> TargetId:
    """The health key of a real server of a service (the TargetId of health.py). A fwmark
    service has no VIP and its real servers no port: its key is the mark, with the
    unspecified address of its family for the VIP, and the port its check looks at."""
    return target_id_in(service, service_part(service), dest)


def target_ids(service: VirtualService) -> list[TargetId]:
    """target_id of each real server of the service, in order: the service's part of the
    key (its VIP as text above all) is made once, not once per real server."""
    part = service_part(service)
    return [target_id_in(service, part, dest) for dest in service.destinations]


def service_part(service: VirtualService) -> tuple[str, str, int]:
    key = service.key
    if key.address is None:
        return key.protocol.value, FWMARK_VIP[key.ipv6], key.port
    return key.protocol.value, str(key.address), key.port


def target_id_in(service: VirtualService, part: tuple[str, str, int],
               dest: Destination) -> TargetId:
    # address_text: str() of an IPv4Address is Python, a third of target_ids at 10,000.
    if service.key.address is None:
        port = service.check.port if service.check is not None else None
        return TargetId(*part, address_text(dest.address), port or dest.port)
    return TargetId(*part, address_text(dest.address), dest.port)


# ----------------------------------------------------------------- the file

def to_json(view: HealthView, targets: list[str] | None = None) -> str:
    """One entry a line (the file diffs well), each through json's C encoder: an indented
    dump takes json's Python encoder, three times slower at 10,000 targets. targets: the
    lines of view.health in file order, when the caller has them (save_health)."""
    def lines(items: list[str], pad: str) -> str:
        return f"[\n{pad} " + f",\n{pad} ".join(items) + f"\n{pad}]" if items else "[]"

    disabled = [json.dumps({"address": d.address, "vip": d.vip, "vport": d.vport},
                           sort_keys=True) for d in view.disabled]
    if targets is None:
        targets = [health_entry_line(key, health)
                   for key, health in sorted_health(view.health)]
    return (f'{{\n "disabled": {lines(disabled, " ")},\n "health": {{'
            f'\n  "version": {json.dumps(HEALTH_VERSION)},'
            f'\n  "targets": {lines(targets, "  ")}\n }},\n'
            f' "version": {FILE_VERSION}\n}}')


def from_json(text: str, path: str) -> HealthView:
    try:
        data: Any = json.loads(text)
    except ValueError as err:
        raise _corrupt(path, f"not JSON: {err}") from None
    if not isinstance(data, dict) or set(data) != {"version", "health", "disabled"}:
        raise _corrupt(path, "must be an object with the keys version, health and disabled")
    if data["version"] != FILE_VERSION or isinstance(data["version"], bool):
        raise _corrupt(path, f"version {data['version']!r:.20}: this lvs_scripts reads "
                       f"version {FILE_VERSION}")
    try:
        health = health_from_data(data["health"])
    except HealthStateError as err:
        raise _corrupt(path, str(err)) from None
    return HealthView(health, _disabled_in(data["disabled"], path))


def _disabled_in(items: object, path: str) -> list[Disabled]:
    if not isinstance(items, list):
        raise _corrupt(path, "disabled: must be a list")
    result: list[Disabled] = []
    for index, item in enumerate(items):
        where = f"disabled[{index}]"
        if not isinstance(item, dict) or set(item) != {"address", "vip", "vport"}:
            raise _corrupt(path, f"{where}: must have exactly address, vip and vport")
        address = _canonical(item["address"], path, f"{where}.address")
        vip, vport = item["vip"], item["vport"]
        if vip is None and vport is None:
            result.append(Disabled(address))
            continue
        if isinstance(vport, bool) or not isinstance(vport, int) or not 1 <= vport <= 65535:
            raise _corrupt(path, f"{where}.vport = {vport!r:.20}: must be a port number")
        result.append(Disabled(address, _canonical(vip, path, f"{where}.vip"), vport))
    return result


def _canonical(value: object, path: str, where: str) -> str:
    try:
        text = str(ipaddress.ip_address(value)) if isinstance(value, str) else None
    except ValueError:
        text = None
    if text is None or text != value:
        raise _corrupt(path, f"{where} = {value!r:.60}: must be an IP address in canonical form")
    return text


def _corrupt(path: str, why: str) -> StateError:
    return StateError(f"{path}: health state file is corrupt ({why}). It holds which real "
                      "servers failed their checks and which were disabled; delete it to "
                      "start again with every server unchecked and none disabled (disable "
                      "again those that must stay out)")


def load_health(paths: Paths) -> HealthView:
    """The health file, trusted like the state file; none yet: nothing known."""
    path = paths.health_file
    check_state_dir(paths)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        # Decided by this open's own error: asking lexists() after it raced with the
        # watcher writing its first file (absent at the open, present at the question).
        return HealthView()
    except OSError:
        fd = open_nofollow(path, os.O_RDONLY)  # again, for its error (a symlink, denied)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StateError(f"{path}: is not a regular file")
        check_trusted(path, info)
        raw = handle.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise _corrupt(path, f"larger than {MAX_FILE_BYTES} bytes")
    digest = _digest(raw)
    known = _KNOWN.get(path)
    if known is not None and known[0] == digest:
        return _copy(known[1])
    try:
        view = from_json(raw.decode("utf-8"), path)
    except UnicodeDecodeError:
        raise _corrupt(path, "not UTF-8 text") from None
    _KNOWN[path] = (digest, _copy(view))
    return view


# The view this process last wrote or read, by the digest of the file's bytes: reading
# and checking 10,000 entries again costs about 0.3 s here (seconds on a slow CPU), and a
# reload reads the file several times (the watcher, the plan, its verification). Exact:
# a byte that differs is a different digest, so a file someone else wrote is read anew.
_KNOWN: dict[str, tuple[bytes, HealthView]] = {}


def _digest(data: bytes) -> bytes:
    """hashlib imported here: most runs have no health file, and its import (OpenSSL's)
    costs a slow machine a tenth of a second."""
    import hashlib

    return hashlib.sha256(data).digest()


def _copy(view: HealthView) -> HealthView:
    """Callers change the view they get (update functions): each gets its own containers
    (the entries themselves are immutable records)."""
    return HealthView(dict(view.health), list(view.disabled))


# What save_health last wrote to each file, in parts: the targets in file order, their
# lines (up to LINES_KEPT targets), and the health each line was made from. The watcher
# writes the file after each batch of transitions, and a batch changes a few targets of
# all: sorting 100,000 targets and making their lines again was 0.22 s of a 0.28 s save
# here (several seconds of the lab VM's, every time a check changed state), and a failure
# waits for the save before its weight goes to 0. With the same targets, a line is made
# again only for a Health that is not the very object it was made from (Health is
# immutable: the checker replaces it on each change). The lines are about 200 bytes a
# target: above LINES_KEPT only the order is kept (the watcher's memory at 100,000 real
# servers stays under issue 14's 500 MB), and every line is made again.
_WRITTEN: dict[str, tuple[list[TargetId], list[str] | None, list[Health]]] = {}
LINES_KEPT = 20_000


def _target_lines(path: str, healths: dict[TargetId, Health]) -> list[str]:
    """to_json's target lines for this view, from the last save's where they hold."""
    lines = _kept_lines(_WRITTEN.get(path), healths)
    if lines is None:
        items = sorted_health(healths)
        order = [key for key, _health in items]
        lines = [health_entry_line(key, health) for key, health in items]
    else:
        order = _WRITTEN[path][0]
    _WRITTEN[path] = (order, lines if len(lines) <= LINES_KEPT else None,
                      [healths[key] for key in order])
    return lines


def _kept_lines(last: tuple[list[TargetId], list[str] | None, list[Health]] | None,
                healths: dict[TargetId, Health]) -> list[str] | None:
    """The lines in the last save's order, made again where the health is not the same
    object; None if the targets are not the same (then sort them again)."""
    if last is None or len(last[0]) != len(healths):
        return None
    order, old_lines, old = last
    lines = []
    for index, key in enumerate(order):
        health = healths.get(key)
        if health is None:  # as many targets, not the same ones
            return None
        lines.append(old_lines[index] if old_lines is not None and health is old[index]
                     else health_entry_line(key, health))
    return lines


def save_health(paths: Paths, view: HealthView) -> None:
    from .state import write_atomically

    ensure_dir(paths.state_dir, trusted=True)
    text = to_json(view, _target_lines(paths.health_file, view.health))
    try:
        write_atomically(paths, paths.health_file, text)
    except OSError as err:
        raise StateError(f"{paths.health_file}: cannot write the health state: "
                         f"{err.strerror}") from None
    _KNOWN[paths.health_file] = (_digest(text.encode("utf-8")), _copy(view))
