"""Consecutive `ip addr add|del` steps run as one `ip -force -batch -` (apply.AddressBatch):
how a plan is cut into units, what a batch with a refused line records and raises, and
how a dry run prints it. Runs against the fake `ip` in this process (tests/fakes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path

import pytest

from lvs_scripts.apply import ADDRESS_BATCH, AddressBatch, Batch, apply_plan, render_script, units
from lvs_scripts.errors import ApplyFailed, CommandFailed
from lvs_scripts.model import Protocol, ServiceKey
from lvs_scripts.owned import AddressAdded, AddressRemoved, OwnedAddress
from lvs_scripts.plan import Drain, Plan, Settle, Step
from lvs_scripts.runner import Result, check_result
from lvs_scripts.state import State
from tests.fakes.fakehost import FakeHost

VIPS = ["192.168.30.251", "192.168.30.252", "192.168.30.253"]


def add(vip: str, device: str = "eth0") -> Step:
    return Step(("ip", "addr", "add", f"{vip}/32", "brd", vip, "dev", device), "VIP",
                AddressAdded(device, f"{vip}/32"))


def delete(vip: str, device: str = "eth0") -> Step:
    return Step(("ip", "addr", "del", f"{vip}/32", "dev", device), "VIP",
                AddressRemoved(device, f"{vip}/32"))


# One letter a step: A an address added, D one deleted, R an ipvsadm rule, S a sysctl,
# C `ip addr change` (stays alone), W an address added with a wait after it (settle),
# O an optional address change, X an address on a device name ip's batch reader would
# split, K a rule with a drain before it.
STEPS = {
    "A": add(VIPS[0]),
    "D": delete(VIPS[1]),
    "R": Step(("ipvsadm", "-a", "-t", f"{VIPS[0]}:80", "-r", "10.0.0.1:80", "-g", "-w", "1"),
              "rule"),
    "S": Step(("sysctl", "-w", "net.ipv4.ip_forward=1"), "forwarding"),
    "C": Step(("ip", "addr", "change", "2001:db8::1/128", "dev", "eth0", "preferred_lft", "0"),
              "deprecate"),
    "W": replace(delete(VIPS[2], "lo"), settle=Settle("BIRD has withdrawn", poll=("true",))),
    "O": replace(add(VIPS[1]), optional=True),
    "X": add(VIPS[2], "eth#0"),
    "K": Step(("ipvsadm", "-d", "-t", f"{VIPS[0]}:80", "-r", "10.0.0.1:80"), "rule",
              drain=Drain(ServiceKey(Protocol.TCP, ip_address(VIPS[0]), 80), None, 5)),
}


def shape(steps: str) -> list[str]:
    """The units of a plan of these steps: `ip:AD` an address batch, `ipvs:RR` a rule
    batch, a letter a step run alone."""
    plan = [replace(STEPS[letter]) for letter in steps]  # distinct objects, same steps
    letters = {id(step): letter for step, letter in zip(plan, steps)}
    out = []
    for unit in units(plan):
        if isinstance(unit, AddressBatch):
            out.append("ip:" + "".join(letters[id(s)] for s in unit.steps))
        elif isinstance(unit, Batch):
            out.append("ipvs:" + "".join(letters[id(s)] for s in unit.steps))
        else:
            out.append(letters[id(unit)])
    return out


@pytest.mark.parametrize(("steps", "expected"), [
    ("A", ["A"]),  # one address: a plain `ip addr add` (BATCH_MIN)
    ("AA", ["ip:AA"]),
    ("AD", ["ip:AD"]),  # adds and deletions together, in the plan's order
    ("AAR", ["ip:AA", "R"]),
    ("ARR", ["A", "ipvs:RR"]),
    ("AARRDD", ["ip:AA", "ipvs:RR", "ip:DD"]),  # never moved across an ipvsadm step
    ("ARA", ["A", "R", "A"]),
    ("ASA", ["A", "S", "A"]),
    ("AASAA", ["ip:AA", "S", "ip:AA"]),
    ("ACA", ["A", "C", "A"]),  # ip addr change stays alone and cuts the run
    ("DDWD", ["ip:DDW", "D"]),  # a wait after a step ends its batch
    ("DW", ["ip:DW"]),
    ("WD", ["W", "D"]),
    ("AOA", ["A", "O", "A"]),  # an optional step keeps its own failure handling
    ("AXA", ["A", "X", "A"]),
    ("RKR", ["R", "K", "R"]),  # a rule with a drain waits first: alone, as before
])
def test_consecutive_address_steps_become_one_batch(steps: str, expected: list[str]) -> None:
    assert shape(steps) == expected


# ------------------------------------------------------------------ applying


class FakeRunner:
    """The executor's contract on the fake machine, in this process."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            check: bool = True) -> Result:
        done = self.host.invoke(argv[0], list(argv[1:]), stdin)
        result = Result(tuple(argv), done.rc, done.stdout, done.stderr)
        if check:
            check_result(result)
        return result


class Saves:
    def __init__(self) -> None:
        self.seen: list[set[tuple[str, str]]] = []

    def __call__(self, state: State) -> None:
        self.seen.append(set(state.addresses))


def eth0(vip: str) -> tuple[str, str]:
    return ("eth0", f"{vip}/32")


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "host")


def test_a_batch_runs_once_and_is_checked_by_one_observation(host: FakeHost) -> None:
    plan = Plan([add(vip) for vip in VIPS])
    state, saves = State(), Saves()
    outcome = apply_plan(plan, FakeRunner(host), state, saves)
    assert host.argvs() == [list(ADDRESS_BATCH), ["ip", "-o", "addr", "show"]]
    assert host.calls()[0]["stdin"] == "".join(
        f"addr add {vip}/32 brd {vip} dev eth0\n" for vip in VIPS)
    assert host.addresses("eth0") == ["192.168.30.105/24", *(f"{vip}/32" for vip in VIPS)]
    assert outcome.applied == [step.line() for step in plan.steps]
    assert set(state.addresses) == {eth0(vip) for vip in VIPS}
    # Written ahead, all of them, before the batch ran (a kill -9 then leaves them listed).
    assert saves.seen[0] == {eth0(vip) for vip in VIPS}


def test_an_address_refused_in_the_batch_is_run_alone_for_its_error(host: FakeHost) -> None:
    refused = ["ip", "addr", "add", f"{VIPS[1]}/32"]
    for in_batch in (True, False):
        host.fail(refused, in_restore=in_batch, rc=2,
                  stderr="RTNETLINK answers: Operation not permitted")
    rule = STEPS["R"]
    plan = Plan([*(add(vip) for vip in VIPS), rule])
    state, saves = State(), Saves()
    with pytest.raises(ApplyFailed) as caught:
        apply_plan(plan, FakeRunner(host), state, saves)
    failed = caught.value
    assert isinstance(failed.cause, CommandFailed)
    assert failed.cause.argv == plan.steps[1].argv  # ip's own error, from the step alone
    assert (failed.cause.returncode, failed.cause.stderr.strip()) == (
        2, "RTNETLINK answers: Operation not permitted")
    assert failed.applied == (plan.steps[0].line(), plan.steps[2].line())
    assert failed.remaining == (plan.steps[1].line(), rule.line())
    assert host.argvs() == [list(ADDRESS_BATCH), ["ip", "-o", "addr", "show"],
                            list(plan.steps[1].argv)]
    # The rest are recorded; the refused one's write-ahead record went back.
    assert set(state.addresses) == {eth0(VIPS[0]), eth0(VIPS[2])}
    assert saves.seen[-1] == {eth0(VIPS[0]), eth0(VIPS[2])}
    assert host.addresses("eth0") == ["192.168.30.105/24", f"{VIPS[0]}/32", f"{VIPS[2]}/32"]


def test_an_address_refused_in_the_batch_but_taken_alone_is_no_error(host: FakeHost) -> None:
    host.fail(["ip", "addr", "add", f"{VIPS[0]}/32"], in_restore=True, rc=2,
              stderr="RTNETLINK answers: No buffer space available")
    plan = Plan([add(vip) for vip in VIPS])
    state = State()
    outcome = apply_plan(plan, FakeRunner(host), state, Saves())
    assert sorted(outcome.applied) == sorted(step.line() for step in plan.steps)
    assert set(state.addresses) == {eth0(vip) for vip in VIPS}
    assert host.argvs()[2] == list(plan.steps[0].argv)


def test_a_line_ip_said_failed_is_run_again_though_the_address_is_there(
        host: FakeHost) -> None:
    """Someone added the VIP between the observation and the batch: `File exists`. As
    for the step alone, it is not taken for ours."""
    host.add_address("eth0", f"{VIPS[0]}/32")
    plan = Plan([add(vip) for vip in VIPS[:2]])
    state = State()
    with pytest.raises(ApplyFailed) as caught:
        apply_plan(plan, FakeRunner(host), state, Saves())
    assert "File exists" in str(caught.value.cause)
    assert set(state.addresses) == {eth0(VIPS[1])}


def test_deletions_are_recorded_after_the_batch_and_a_refused_one_stays(
        host: FakeHost) -> None:
    for vip in VIPS:
        host.add_address("eth0", f"{vip}/32")
    state = State()
    for vip in VIPS:
        state.addresses[eth0(vip)] = OwnedAddress("eth0", f"{vip}/32")
    for in_batch in (True, False):
        host.fail(["ip", "addr", "del", f"{VIPS[2]}/32"], in_restore=in_batch, rc=2,
                  stderr="RTNETLINK answers: Operation not permitted")
    saves = Saves()
    with pytest.raises(ApplyFailed):
        apply_plan(Plan([delete(vip) for vip in VIPS]), FakeRunner(host), state, saves)
    assert saves.seen[0] == {eth0(vip) for vip in VIPS}  # nothing forgotten ahead
    assert set(state.addresses) == {eth0(VIPS[2])}
    assert host.addresses("eth0") == ["192.168.30.105/24", f"{VIPS[2]}/32"]


def test_the_wait_after_the_last_step_comes_after_the_batch(host: FakeHost) -> None:
    for vip in VIPS[:2]:
        host.add_address("lo", f"{vip}/32")
    waited = Settle("BIRD has withdrawn the VIPs", poll=("ip", "-o", "addr", "show", "dev",
                                                         "lo"), absent=(f"{VIPS[0]}/32",))
    plan = Plan([delete(VIPS[0], "lo"), replace(delete(VIPS[1], "lo"), settle=waited)])
    apply_plan(plan, FakeRunner(host), State(), Saves())
    assert host.argvs() == [list(ADDRESS_BATCH), ["ip", "-o", "addr", "show"],
                            list(waited.poll or ())]


# ------------------------------------------------------------------ dry run


def test_dry_run_prints_the_batch_as_a_here_document() -> None:
    v6 = Step(("ip", "addr", "add", "2001:db8::10/128", "dev", "eth0", "preferred_lft", "0"),
              "VIP", AddressAdded("eth0", "2001:db8::10/128"))
    plan = Plan([add(VIPS[0]), v6, STEPS["R"], delete(VIPS[1]),
                 replace(delete(VIPS[2], "lo"), settle=Settle("BIRD has withdrawn",
                                                              seconds=5))])
    assert render_script(plan, "start") == f"""\
#!/bin/sh
# start
# 2 address changes in one process
ip -force -batch - <<'EOF'
addr add {VIPS[0]}/32 brd {VIPS[0]} dev eth0
addr add 2001:db8::10/128 dev eth0 preferred_lft 0
EOF
ipvsadm -a -t {VIPS[0]}:80 -r 10.0.0.1:80 -g -w 1
# 2 address changes in one process
ip -force -batch - <<'EOF'
addr del {VIPS[1]}/32 dev eth0
addr del {VIPS[2]}/32 dev lo
EOF
# then wait until BIRD has withdrawn (at most 5 s)
"""
