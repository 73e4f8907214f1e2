"""Who held the VIP, and when: every address added or deleted in the directors'
namespaces, seen continuously by one `ip monitor address all-nsid` in the lab's root
namespace, for issue 11's "never both" (tests/e2e/test_lab_ha.py).

Why one monitor for all namespaces rather than a poller or one monitor each: address
changes are made under the kernel's RTNL lock, one at a time whatever the namespace,
and each is queued to the listening netlink socket before the change returns. One
socket therefore gets every change of both directors in the order the kernel made
them: an overlap of any length, even microseconds, shows as an add on one director
before the delete on the other. A poller sees only what is there at each poll (a
program start costs tenths of a second under emulation); two monitors would each be
in order, but not with each other. The times are when a line reached the test
(time.monotonic(), milliseconds); the order, not the times, decides what overlapped.

The test marks its moments (both started, lb1 killed, ...) in the same stream: an
address added to and deleted from the root namespace's lo, so that "while both run"
is cut out of the stream by the events themselves, not by comparing clocks.

The analysis (`parse`, `spans`) is pure and tested on the host (tests/test_vip_timeline.py).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

CURRENT = "current"  # what `ip monitor all-nsid` calls its own namespace
MARK_NET = "198.51.100"  # TEST-NET-2: addresses no one uses, for the marks
MONITOR = ["stdbuf", "-oL", "ip", "-o", "monitor", "address", "all-nsid"]
_NSID = re.compile(r"\[nsid (\S+?)\]")
_INET = re.compile(r"\binet6? (\S+)")


@dataclass(frozen=True)
class Event:
    """One address added or deleted, in the kernel's order."""

    at: float  # time.monotonic() when the line reached the test
    where: str  # the namespace's name, or CURRENT (the marks)
    address: str  # as ip prints it: 192.168.30.254/32
    added: bool


@dataclass(frozen=True)
class Span:
    """A stretch of the stream, inside a checked window, where BOTH directors held the
    VIP or NEITHER did, between two events (end: the event that ended it, or the
    window's closing mark)."""

    kind: str  # "both" or "neither"
    start: float
    end: float
    window: str  # "OPEN..CLOSE": the marks of the window it lies in
    started_by: str = ""  # the host whose add or delete began it, or the opening mark
    ended_by: str = ""  # the host whose add or delete ended it, or the closing mark

    @property
    def seconds(self) -> float:
        return self.end - self.start


def parse(line: str, at: float, names: Mapping[str, str]) -> Event | None:
    """An event from a line of `ip -o monitor address all-nsid` (None: not an address
    line). names: nsid -> namespace name ("current" is kept as CURRENT)."""
    nsid = _NSID.search(line)
    inet = _INET.search(line)
    if nsid is None or inet is None:
        return None
    where = names.get(nsid.group(1), nsid.group(1))
    return Event(at, where, inet.group(1), added="Deleted " not in line[:inet.start()])


def spans(events: Iterable[Event], vip: str, hosts: Sequence[str], marks: Mapping[str, str],
          windows: Sequence[tuple[str, str]]) -> list[Span]:
    """The spans, inside each window (from the mark named OPEN to the one named CLOSE),
    where every host held vip ("both") or none did ("neither"). Who holds what is
    followed over the whole stream, from nobody at its start. marks: mark address ->
    its name (see VipTimeline.mark)."""
    opens = {start: f"{start}..{end}" for start, end in windows}
    closes = {end: f"{start}..{end}" for start, end in windows}
    held = {host: False for host in hosts}
    window: str | None = None
    current: tuple[str, float, str] | None = None  # (kind, since, by) of the span under way
    found: list[Span] = []

    def kind() -> str | None:
        count = sum(held.values())
        return "both" if count == len(hosts) else "neither" if count == 0 else None

    for event in events:
        if event.where == CURRENT:
            name = marks.get(event.address)
            if not event.added or name is None:
                continue
            if window is not None and closes.get(name) == window:
                if current is not None:
                    found.append(Span(*current[:2], event.at, window, current[2], name))
                window, current = None, None
            elif window is None and name in opens:
                window = opens[name]
                now = kind()
                current = (now, event.at, name) if now else None
            continue
        if event.where not in held or event.address != vip:
            continue
        held[event.where] = event.added
        if window is None:
            continue
        now = kind()
        if current is not None and current[0] != now:
            found.append(Span(*current[:2], event.at, window, current[2], event.where))
            current = None
        if current is None and now is not None:
            current = (now, event.at, event.where)
    if window is not None and current is not None:  # a window never closed: up to the end
        found.append(Span(*current[:2], float("inf"), window, current[2], "end of stream"))
    return found


def reset_at_handover(failed: Sequence[Mapping[str, object]], gone: float
                      ) -> list[Mapping[str, object]]:
    """Of a client's failed requests (ha_client.py's records), those a handover explains:
    in flight as the VIP left the old director (sent before its delete was seen, failed
    after) and reset by the new one, which had not been sent the connection yet."""
    return [r for r in failed if float(str(r["sent"])) <= gone < float(str(r["done"]))
            and str(r["error"]).startswith("ConnectionResetError")]


class VipTimeline:
    """The monitor, running from construction to close(); its events as they come."""

    def __init__(self, nsids: Mapping[str, int]) -> None:
        """nsids: namespace -> the id to give it here (the monitor hears only namespaces
        that have an id in its own)."""
        for name, nsid in nsids.items():
            subprocess.run(["ip", "netns", "set", name, str(nsid)], check=True, timeout=60)
        self.names = {str(nsid): name for name, nsid in nsids.items()}
        self.names[CURRENT] = CURRENT
        self.marks: dict[str, str] = {}  # mark address -> name
        self.events: list[Event] = []
        self.errors: list[str] = []
        self.proc = subprocess.Popen(MONITOR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._errors, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = parse(line, time.monotonic(), self.names)
            if event is not None:
                self.events.append(event)

    def _errors(self) -> None:
        # "netlink receive error ... No buffer space available": events were lost.
        assert self.proc.stderr is not None
        self.errors.extend(self.proc.stderr)

    def mark(self, name: str) -> str:
        """Put a named moment into the stream. The kernel queues the add's event before
        `ip addr add` returns: the mark sits after everything the test did before."""
        address = f"{MARK_NET}.{len(self.marks) + 1}/32"
        self.marks[address] = name
        subprocess.run(["sh", "-ec", f"ip addr add {address} dev lo; ip addr del {address} "
                        "dev lo"], check=True, timeout=60)
        return address

    def seen(self, address: str) -> bool:
        return any(e.where == CURRENT and e.address == address for e in list(self.events))

    def ready(self, timeout: float = 30) -> None:
        """Wait until the monitor listens: a mark made anew each try is seen (one made
        before it subscribed never is)."""
        deadline = time.monotonic() + timeout
        while not self.seen(self.mark("ready")):
            if time.monotonic() > deadline:
                raise AssertionError("ip monitor never reported a mark: not listening")
            time.sleep(0.2)

    def added(self, where: str, address: str, since: float) -> float | None:
        """When ADDRESS was first added on WHERE after `since` (monotonic), or None."""
        return self._first(where, address, since, added=True)

    def deleted(self, where: str, address: str, since: float) -> float | None:
        """When ADDRESS was first deleted from WHERE after `since` (monotonic), or None."""
        return self._first(where, address, since, added=False)

    def _first(self, where: str, address: str, since: float, added: bool) -> float | None:
        return next((e.at for e in list(self.events) if e.at >= since and e.added == added
                     and e.where == where and e.address == address), None)

    def spans(self, vip: str, hosts: Sequence[str], windows: Sequence[tuple[str, str]]
              ) -> list[Span]:
        return spans(list(self.events), vip, hosts, self.marks, windows)

    def story(self, vip: str, origin: float) -> list[str]:
        """The VIP's events and the marks, in order, for the test's output."""
        lines = []
        for event in list(self.events):
            if event.where == CURRENT and event.added and event.address in self.marks:
                lines.append(f"{event.at - origin:8.3f}  mark: {self.marks[event.address]}")
            elif event.address == vip:
                lines.append(f"{event.at - origin:8.3f}  {event.where}: "
                             f"{'added' if event.added else 'deleted'} {vip}")
        return lines

    def close(self) -> None:
        """Stop, once everything so far has been read (a last mark seen)."""
        last = self.mark("closing")
        deadline = time.monotonic() + 30
        while not self.seen(last) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
