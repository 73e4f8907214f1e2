"""The lab's "never both" check (tests/e2e/vip_timeline.py) on made-up event streams:
that it finds an overlap however short, only inside the windows where both directors
run, and that it reads ip monitor's lines."""

from __future__ import annotations

import pytest

from tests.e2e.vip_timeline import CURRENT, Event, Span, parse, reset_at_handover, spans

VIP = "192.168.30.254/32"
HOSTS = ("director", "lb2")
MARKS = {"198.51.100.1/32": "both started", "198.51.100.2/32": "lb1 killed",
         "198.51.100.3/32": "lb1 back", "198.51.100.4/32": "lb1 stopped"}
WINDOWS = [("both started", "lb1 killed"), ("lb1 back", "lb1 stopped")]
NAMES = {"101": "director", "102": "lb2", CURRENT: CURRENT}


def mark(at: float, n: int) -> Event:
    return Event(at, CURRENT, f"198.51.100.{n}/32", True)


def vip(at: float, where: str, added: bool) -> Event:
    return Event(at, where, VIP, added)


# The test's scenario as it should go: election, crash (the VIP stays on the dead lb1),
# lb1 back without the stale VIP, failback, planned stop.
GOOD = [
    mark(0.0, 1), vip(3.0, "director", True), mark(10.0, 2),
    vip(13.0, "lb2", True),  # lb1's keepalived is dead: its VIP stays (not checked)
    vip(20.0, "director", False),  # lb1's new keepalived removes it as it starts
    mark(21.0, 3), vip(24.0, "lb2", False), vip(24.0, "director", True),
    vip(30.0, "director", False), vip(30.6, "lb2", True), mark(32.0, 4),
]


def test_the_expected_scenario_has_no_both_and_the_gaps_where_neither_held() -> None:
    found = spans(GOOD, VIP, HOSTS, MARKS, WINDOWS)
    assert found == [
        Span("neither", 0.0, 3.0, "both started..lb1 killed", "both started", "director"),
        Span("neither", 24.0, 24.0, "lb1 back..lb1 stopped", "lb2", "director"),
        Span("neither", 30.0, 30.6, "lb1 back..lb1 stopped", "director", "lb2")]


def test_an_overlap_of_a_microsecond_is_found_by_the_order_of_events() -> None:
    # The failback with lb1 adding before lb2 deletes, both stamped in one millisecond.
    preempt = [*GOOD[:6], GOOD[7], GOOD[6], *GOOD[8:]]
    assert [s for s in spans(preempt, VIP, HOSTS, MARKS, WINDOWS) if s.kind == "both"] == [
        Span("both", 24.0, 24.0, "lb1 back..lb1 stopped", "director", "lb2")]
    events = [mark(0.0, 1), vip(3.0, "director", True), vip(5.0, "lb2", True),
              vip(5.000001, "director", False), mark(10.0, 2)]
    assert [s for s in spans(events, VIP, HOSTS, MARKS, WINDOWS) if s.kind == "both"] == [
        Span("both", 5.0, 5.000001, "both started..lb1 killed", "lb2", "director")]


def test_a_stale_vip_still_there_when_the_window_opens_counts_from_the_mark() -> None:
    """lb1's start returned while the VIP its killed keepalived left is still there and
    lb2 holds it too: both, from the mark on, until lb2 lets go."""
    events = [*GOOD[:4], mark(21.0, 3), vip(24.0, "lb2", False),
              vip(24.1, "director", True), mark(32.0, 4)]
    both = [s for s in spans(events, VIP, HOSTS, MARKS, WINDOWS) if s.kind == "both"]
    assert both == [Span("both", 21.0, 24.0, "lb1 back..lb1 stopped", "lb1 back", "lb2")]


def test_outside_the_windows_nothing_is_reported_and_other_addresses_do_not_count() -> None:
    events = [vip(1.0, "director", True), vip(1.5, "lb2", True),  # before the first mark
              mark(2.0, 1), vip(2.5, "lb2", False), Event(3.0, "lb2", "10.9.9.9/32", True),
              Event(3.1, "rs1", VIP, True), mark(4.0, 2)]
    assert spans(events, VIP, HOSTS, MARKS, WINDOWS) == [
        Span("both", 2.0, 2.5, "both started..lb1 killed", "both started", "lb2")]


def test_a_window_never_closed_reports_up_to_the_end() -> None:
    events = [mark(0.0, 1), vip(1.0, "director", True)]
    assert spans(events, VIP, HOSTS, MARKS, WINDOWS) == [
        Span("neither", 0.0, 1.0, "both started..lb1 killed", "both started", "director")]
    events.append(vip(2.0, "lb2", True))
    last = spans(events, VIP, HOSTS, MARKS, WINDOWS)[-1]
    assert (last.end, last.ended_by) == (float("inf"), "end of stream")


@pytest.mark.parametrize(("line", "expected"), [
    ("[nsid 101]4: eth0    inet 192.168.30.254/32 scope global eth0\\       valid_lft "
     "forever preferred_lft forever", Event(1.0, "director", VIP, True)),
    ("[nsid 102]Deleted 2: if2    inet 192.168.30.254/32 scope global eth0\\       "
     "valid_lft forever preferred_lft forever", Event(1.0, "lb2", VIP, False)),
    ("[nsid current]1: lo    inet 198.51.100.3/32 scope global lo\\       valid_lft forever",
     Event(1.0, CURRENT, "198.51.100.3/32", True)),
    ("[nsid 102]3: eth0    inet6 fe80::ff:fe00:1/64 scope link",
     Event(1.0, "lb2", "fe80::ff:fe00:1/64", True)),
    ("[nsid 101]Deleted ipv4 ... no address here", None),
    ("4: eth0    inet 192.168.30.254/32 scope global eth0", None),  # without all-nsid
])
def test_lines_of_ip_monitor_all_nsid(line: str, expected: Event | None) -> None:
    assert parse(line, 1.0, NAMES) == expected


# --- the planned stop's one allowed failure ---------------------------------------------------

RESET = "ConnectionResetError: [Errno 104] Connection reset by peer"


def attempt(sent: float, done: float, error: str = RESET) -> dict[str, object]:
    return {"kind": "new", "sent": sent, "done": done, "ok": False, "who": None, "error": error}


def test_only_a_connection_in_flight_at_the_handover_and_reset_is_explained() -> None:
    gone = 185.950381  # lb1's delete of the VIP, as the lab saw it (run of 2026-11-30)
    seen = attempt(185.94300666, 186.78259412)  # the lab's failure: sent 7 ms before
    others = [
        attempt(185.96, 186.9),  # sent after lb1 let go: its SYN must not be lost for good
        attempt(185.90, 188.95, "TimeoutError: timed out"),  # in flight, but not a reset
        attempt(185.90, 185.94),  # failed before the handover: not the handover's doing
    ]
    assert reset_at_handover([seen, *others], gone) == [seen]
