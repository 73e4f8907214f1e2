"""The rise/fall state machine of one health-checked real server, and its saved form.

Pure: no I/O, no clock. `observe(health, result, spec, now)` is the only way a state
changes; the check engine (checks.py) feeds it results and the watcher applies the
transitions it returns through the usual observe -> plan -> apply path.

States and why they start where they do
---------------------------------------
- `down` (persisted by an earlier run, or reached here): out of service until `rise`
  consecutive successes. A restart or a reload never brings a failed server back on its
  own: it has to pass its checks again (keepalived put failed servers back at reload,
  PR #106, then kept them out for good when the checker set changed, #608 / #1720).
- `unknown` (no saved state: first start, or a real server new in the config): treated
  as *up* -- it keeps the weight `start` gave it -- until `fall` consecutive failures.
  Taking every unknown server out until it has passed `rise` checks (keepalived's
  `alpha`) turns a restart of the watcher, or a reload that adds a server, into an
  outage of the whole service for rise * interval seconds; the scheduler instead checks
  a new target within its first interval, so a dead one is out after `fall` checks.
  Its first success settles it as `up` (a transition that changes no weight).
- `up`: in service until `fall` consecutive failures.

The state is keyed by what identifies a real server of a service (`TargetId`), not by
which check looks at it, so a changed check keeps the state (its counters restart: the
evidence of the old check says nothing about the new one).
"""

from __future__ import annotations

import ipaddress
import json
import math
import socket
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as _quote
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import StateError
from .record import Record

if TYPE_CHECKING:
    from .checks import CheckResult, CheckSpec

UP = "up"
DOWN = "down"
UNKNOWN = "unknown"
STATES = (UP, DOWN, UNKNOWN)
HEALTH_VERSION = 1
MAX_COUNT = 100  # rise and fall are at most 100: a longer run of results tells nothing more
MAX_REASON = 200  # characters of a check's reason kept (and saved)
PROTOCOLS = ("tcp", "udp", "sctp", "fwmark")
MAX_MARK = 2**32 - 1  # a fwmark target's vport is the mark, a u32


class HealthStateError(StateError):
    """The saved health state is not what this version writes (names the entry and field)."""


class TargetId(NamedTuple):
    """A real server of a virtual service: what health is kept for.

    A tuple, not a Record: a reload at 10,000 real servers builds and looks up tens of
    thousands of these, and a tuple's hash and equality run in C (a Record's in Python
    were a quarter of the watcher's reload in the lab VM)."""

    protocol: str
    vip: str
    vport: int
    address: str
    port: int

    def __str__(self) -> str:
        if self.protocol == "fwmark":  # vip is only the family's unspecified address
            family = " (IPv6)" if ":" in self.vip else ""
            return f"fwmark {self.vport}{family}->{_endpoint(self.address, self.port)}"
        return f"{self.protocol}:{_endpoint(self.vip, self.vport)}->" \
               f"{_endpoint(self.address, self.port)}"


class Health(Record):
    state: str = UNKNOWN
    successes: int = 0  # consecutive, capped at MAX_COUNT
    failures: int = 0  # consecutive, capped at MAX_COUNT
    reason: str = ""  # of the last result
    since: float = 0.0  # wall-clock time the state was entered

    @property
    def serving(self) -> bool:
        """Should the real server get traffic? Unknown counts as up (see the module doc)."""
        return self.state != DOWN


class Transition(Record):
    old: str
    new: str
    reason: str
    at: float

    @property
    def changes_service(self) -> bool:
        """unknown -> up confirms what the kernel already has; every other one changes it."""
        return (self.old != DOWN) != (self.new != DOWN)


def observe(health: Health, result: CheckResult, spec: CheckSpec,
            now: float) -> tuple[Health, Transition | None]:
    """The health after one more check result, and the transition it made, if any."""
    reason = result.reason[:MAX_REASON]
    if result.ok:
        successes, failures = min(health.successes + 1, MAX_COUNT), 0
        new = UP if health.state == UNKNOWN or (
            health.state == DOWN and successes >= spec.rise) else health.state
    else:
        successes, failures = 0, min(health.failures + 1, MAX_COUNT)
        new = DOWN if health.state != DOWN and failures >= spec.fall else health.state
    if new == health.state:
        if (successes, failures, reason) == (health.successes, health.failures,
                                             health.reason):
            return health, None  # the steady state: nothing allocated per check
        return Health(health.state, successes, failures, reason, health.since), None
    return (Health(new, successes, failures, reason, now),
            Transition(health.state, new, reason, now))


def after_check_change(health: Health) -> Health:
    """The health to keep when a target's check changes: same state, counters restart."""
    return Health(health.state, 0, 0, health.reason, health.since)


# ----------------------------------------------------------------- the saved form

def health_to_data(healths: Mapping[TargetId, Health]) -> dict[str, Any]:
    """A JSON-able dict; entries sorted so that the file diffs well."""
    return {"version": HEALTH_VERSION,
            "targets": [_entry_data(key, health) for key, health in sorted_health(healths)]}


def _entry_data(key: TargetId, health: Health) -> dict[str, Any]:
    return {"protocol": key.protocol, "vip": key.vip, "vport": key.vport,
            "address": key.address, "port": key.port, "state": health.state,
            "successes": health.successes, "failures": health.failures,
            "reason": health.reason, "since": health.since}


def sorted_health(healths: Mapping[TargetId, Health]) -> list[tuple[TargetId, Health]]:
    """By protocol, VIP, port, address, port; addresses by value (IPv4 first)."""
    vips: dict[str, tuple[int, int]] = {}  # many targets share a VIP: converted once

    def sort_key(item: tuple[TargetId, Health]) -> tuple[Any, ...]:
        key = item[0]
        vip = vips.get(key.vip)
        if vip is None:
            vip = vips[key.vip] = _address_key(key.vip)
        return (key.protocol, vip, key.vport, _address_key(key.address), key.port)

    return sorted(healths.items(), key=sort_key)


# One target of the health file as json.dumps(_entry_data(...), sort_keys=True) writes it,
# made by one % instead: json.dumps builds an encoder for each call, and the 10,000 calls
# of a save were most of its time. Strings through json's own escaping (its C function),
# ints and finite floats as json writes them (int.__repr__, float.__repr__); any other
# value (a float that is not finite, a subclass) goes through json.dumps itself.
_ENTRY_LINE = ('{"address": %s, "failures": %s, "port": %s, "protocol": %s, "reason": %s, '
               '"since": %s, "state": %s, "successes": %s, "vip": %s, "vport": %s}')


def health_entry_line(key: TargetId, health: Health) -> str:
    """One target of the health file, exactly as json.dumps(..., sort_keys=True)."""
    since = health.since
    # Tested one by one, not with all() over a generator: this runs per target.
    if type(since) is float and math.isfinite(since) and type(health.failures) is int \
            and type(key.port) is int and type(health.successes) is int \
            and type(key.vport) is int and type(key.address) is str \
            and type(key.protocol) is str and type(health.reason) is str \
            and type(health.state) is str and type(key.vip) is str:
        quote = _quote
        return _ENTRY_LINE % (quote(key.address), health.failures, key.port,
                              quote(key.protocol), quote(health.reason), repr(since),
                              quote(health.state), health.successes, quote(key.vip),
                              key.vport)
    return json.dumps(_entry_data(key, health), sort_keys=True)


def health_from_data(data: object, where: str = "health") -> dict[TargetId, Health]:
    """Read what health_to_data wrote. Anything else raises HealthStateError naming the
    entry and the field: a half-understood state file must not decide who gets traffic."""
    if not isinstance(data, dict):
        raise HealthStateError(f"{where}: must be an object, not {type(data).__name__}")
    if set(data) != {"version", "targets"}:
        raise HealthStateError(f"{where}: must have exactly the keys 'version' and "
                               f"'targets', has {sorted(map(str, data))}")
    if data["version"] != HEALTH_VERSION or isinstance(data["version"], bool):
        raise HealthStateError(f"{where}.version = {data['version']!r}: this version reads "
                               f"health state version {HEALTH_VERSION} only")
    if not isinstance(data["targets"], list):
        raise HealthStateError(f"{where}.targets: must be a list")
    result: dict[TargetId, Health] = {}
    fast = _FastEntry()
    for index, entry in enumerate(data["targets"]):
        read = fast(entry)
        key, health = read if read is not None else _entry(entry, f"{where}.targets[{index}]")
        if key in result:
            raise HealthStateError(f"{where}.targets[{index}]: {key} is listed twice")
        result[key] = health
    return result


_FIELDS = ("protocol", "vip", "vport", "address", "port", "state", "successes", "failures",
           "reason", "since")


def _entry(entry: object, where: str) -> tuple[TargetId, Health]:
    if not isinstance(entry, dict):
        raise HealthStateError(f"{where}: must be an object")
    unknown = sorted(set(map(str, entry)) - set(_FIELDS))
    missing = [name for name in _FIELDS if name not in entry]
    if unknown or missing:
        raise HealthStateError(f"{where}: unknown fields {unknown}, missing fields {missing}"
                               if unknown and missing else
                               f"{where}: unknown field(s) {unknown}" if unknown else
                               f"{where}: missing field(s) {missing}")
    protocol = _choice(entry, "protocol", PROTOCOLS, where)
    key = TargetId(protocol=protocol,
                   vip=_address(entry, "vip", where),
                   vport=_integer(entry, "vport", 1, MAX_MARK if protocol == "fwmark"
                                  else 65535, where),
                   address=_address(entry, "address", where),
                   port=_integer(entry, "port", 1, 65535, where))
    since = entry["since"]
    if isinstance(since, bool) or not isinstance(since, (int, float)) \
            or not math.isfinite(since) or since < 0:
        raise HealthStateError(f"{where}.since = {since!r}: must be a time in seconds >= 0")
    reason = entry["reason"]
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise HealthStateError(f"{where}.reason: must be a string of at most {MAX_REASON} "
                               "characters")
    health = Health(state=_choice(entry, "state", STATES, where),
                    successes=_integer(entry, "successes", 0, MAX_COUNT, where),
                    failures=_integer(entry, "failures", 0, MAX_COUNT, where),
                    reason=reason, since=float(since))
    if health.successes and health.failures:
        raise HealthStateError(f"{where}: successes and failures are consecutive counts; "
                               "both cannot be above 0")
    return key, health


_FIELD_SET = frozenset(_FIELDS)


class _FastEntry:
    """_entry for the entry we write, every test in C where it can be: an entry that
    passes them all is one _entry would accept, with the same TargetId and Health
    (tests/test_health.py compares the two); anything else, valid or not, goes to _entry,
    whose first error is the one to report. The status of 10,000 checked real servers
    spent 0.15 s here (two seconds of the lab VM's) in ipaddress, checking that each
    address is written in its canonical form: an IPv4 address is, exactly when
    inet_ntoa(inet_pton(text)) gives the text back. Each address text is checked once (a
    VIP repeats for all its real servers)."""

    def __init__(self) -> None:
        self.canonical: set[str] = set()

    def address(self, text: object) -> bool:
        if type(text) is not str:
            return False
        if text in self.canonical:
            return True
        try:
            ok = _ntoa(_pton(socket.AF_INET, text)) == text
        except (OSError, ValueError):
            return False
        if ok:
            self.canonical.add(text)
        return ok

    def __call__(self, entry: object) -> tuple[TargetId, Health] | None:
        if type(entry) is not dict or entry.keys() != _FIELD_SET:
            return None
        protocol, vport, port = entry["protocol"], entry["vport"], entry["port"]
        state, successes, failures = entry["state"], entry["successes"], entry["failures"]
        reason, since = entry["reason"], entry["since"]
        # type() is, not isinstance: a bool is an error, left to _entry.
        if type(protocol) is not str or type(state) is not str or \
                protocol not in _PLAIN_PROTOCOLS or type(vport) is not int or \
                not 1 <= vport <= 65535 or type(port) is not int or not 1 <= port <= 65535 \
                or state not in _STATE_SET or type(successes) is not int or \
                type(failures) is not int or not 0 <= successes <= MAX_COUNT or \
                not 0 <= failures <= MAX_COUNT or (successes and failures) or \
                type(reason) is not str or len(reason) > MAX_REASON or \
                type(since) is not float or not math.isfinite(since) or since < 0 or \
                not self.address(entry["vip"]) or not self.address(entry["address"]):
            return None
        return (TargetId(protocol, entry["vip"], vport, entry["address"], port),
                Health(state, successes, failures, reason, since))


_PLAIN_PROTOCOLS = frozenset(("tcp", "udp", "sctp"))  # fwmark: its vport is the mark
_STATE_SET = frozenset(STATES)
_pton, _ntoa = socket.inet_pton, socket.inet_ntoa


def _choice(entry: dict[str, Any], name: str, choices: tuple[str, ...], where: str) -> str:
    value = entry[name]
    if not isinstance(value, str) or value not in choices:
        raise HealthStateError(f"{where}.{name} = {value!r}: must be one of {', '.join(choices)}")
    return value


def _integer(entry: dict[str, Any], name: str, low: int, high: int, where: str) -> int:
    value = entry[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HealthStateError(f"{where}.{name} = {value!r}: must be an integer from {low} "
                               f"to {high}")
    return value


def _address(entry: dict[str, Any], name: str, where: str) -> str:
    value = entry[name]
    try:
        address = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        address = None
    # Only the form we write: a different spelling of the same address would be a second key.
    if address is None or str(address) != value:
        raise HealthStateError(f"{where}.{name} = {value!r}: must be an IP address in its "
                               "canonical form")
    return str(address)


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _address_key(text: str) -> tuple[int, int]:
    """(version, integer value) of a canonical address: inet_pton, not ipaddress, which
    costs several times more and runs twice per target at every save."""
    family, version = (socket.AF_INET6, 6) if ":" in text else (socket.AF_INET, 4)
    return version, int.from_bytes(socket.inet_pton(family, text), "big")
