"""Execute a plan through the runner, recording each success in the state file.

Consecutive ipvsadm rule changes go to one `ipvsadm -R` process (one process for
10,000 rules instead of 10,000). Its exit status is that of the last line only, so
the batch is verified by observing the table again; a rule that did not take is
re-run on its own to get ipvsadm's own error message.

Consecutive `ip addr add` / `ip addr del` steps go the same way to one
`ip -force -batch -` (an `ip` process costs ~75 ms in the lab VM: 1,000 VIPs were
75 s). ip says which lines failed, and the addresses are observed once after it;
an address change that did not take is re-run alone for ip's own error.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Callable, ClassVar, Union

from .errors import (
    ApplyFailed,
    CommandFailed,
    DaemonTimeout,
    Interrupted,
    LvsError,
    MissingTool,
)
from .model import IPAddress
from .owned import Owned
from .pids import pid_alive, read_pid
from .plan import Drain, Outcome, Plan, Settle, Step
from .probes import (
    IP_ADDRS,
    IPVS_LIST,
    IPVS_SAVE,
    Counters,
    parse_ip_addrs,
    parse_ipvs_list,
    rules_held,
)
from .record import Record
from .render import shell_line
from .runner import Result, Runner
from .state import State

log = logging.getLogger("lvs_scripts")

BATCH_MIN = 2  # a single rule runs as itself: clearer in logs, same cost


class Batch(Record):
    """Consecutive ipvsadm rule changes, run as one `ipvsadm -R`."""

    steps: tuple[Step, ...]
    what: ClassVar[str] = "ipvsadm rules"

    @property
    def argv(self) -> tuple[str, ...]:
        return ("ipvsadm", "-R")

    @property
    def lines(self) -> list[str]:
        # _kind() put only steps with a rule and no drain here: their line, no call each
        return [step.ipvs_rule or "" for step in self.steps]

    @property
    def stdin(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)

    def held(self, runner: Runner, result: Result) -> list[bool]:
        """Which steps took. ipvsadm -R's exit status is its last line's: only the table
        tells."""
        return rules_held(self.lines, runner.run(IPVS_SAVE).stdout)


ADDRESS_BATCH = ("ip", "-force", "-batch", "-")
# A word ip's batch reader (getcmdline, makeargs) takes as it is: no blank, no comment
# sign, no quote, no line continuation. Interface names and addresses always are.
# Pattern text, compiled by re on first use: most runs have no address batch.
_BATCH_WORD = r"[^\s#'\"\\]+"
_FAILED_LINE = r"(?m)^Command failed -:(\d+)$"


def address_change(step: Step) -> tuple[str, str, IPAddress] | None:
    """(add or del, device, address) of an `ip addr add|del ADDR ... dev DEV` step that
    can go into `ip -force -batch -` as it is; None for any other step."""
    argv = step.argv
    if argv[:2] != ("ip", "addr") or argv[2:3] not in (("add",), ("del",)) or (
            step.optional or step.drain is not None or step.stdin is not None):
        return None
    words = argv[3:]
    if "dev" not in words[:-1] or not all(re.fullmatch(_BATCH_WORD, word) for word in words):
        return None
    try:
        ip = ipaddress.ip_interface(words[0]).ip
    except ValueError:
        return None
    return argv[2], words[words.index("dev") + 1], ip


class AddressBatch(Batch):
    """Consecutive `ip addr add|del` steps, run as one `ip -force -batch -`: -force goes
    on after a failed line, and ip names each (`Command failed -:N`) and exits 1."""

    what = "address changes"

    @property
    def argv(self) -> tuple[str, ...]:
        return ADDRESS_BATCH

    @staticmethod
    def line_of(step: Step) -> str | None:
        """The step as a line of this batch's input; None if it cannot be one."""
        return " ".join(step.argv[1:]) if address_change(step) is not None else None

    @property
    def lines(self) -> list[str]:
        return [self.line_of(step) or "" for step in self.steps]

    def held(self, runner: Runner, result: Result) -> list[bool]:
        """A line took if ip did not report it failed and the addresses, observed once,
        agree (a line after one ip exits on, such as a malformed one, never ran)."""
        failed = {int(number) for number in re.findall(_FAILED_LINE, result.stderr)}
        present = {(a.device, a.interface.ip)
                   for a in parse_ip_addrs(runner.run(IP_ADDRS).stdout)}
        return [number not in failed and _holds(address_change(step), present)
                for number, step in enumerate(self.steps, start=1)]


def _holds(change: tuple[str, str, IPAddress] | None, present: set[tuple[str, IPAddress]]
           ) -> bool:
    if change is None:  # never in a batch (units); if it were, it runs again alone
        return False
    action, device, ip = change
    return ((device, ip) in present) == (action == "add")


Unit = Union[Step, Batch]
def _kind(step: Step) -> type[Batch] | None:
    """The batch a step can join: an ipvsadm rule without a drain goes to `ipvsadm -R`
    (its line is read from the step, no call: 10,000 of them at a start), an address
    change that ip's batch reader takes as it is to `ip -force -batch -`."""
    if step.ipvs_rule is not None:
        return Batch if step.drain is None else None
    return AddressBatch if AddressBatch.line_of(step) is not None else None


def units(steps: list[Step]) -> Iterator[Unit]:
    """Group runs of consecutive steps of one kind (ipvsadm rules, address changes) into
    batches, in the plan's order. A step that waits for something after it (settle)
    ends its run: the wait comes after the whole batch."""
    run: list[Step] = []
    run_kind: type[Batch] | None = None
    for step in steps:
        kind = _kind(step)
        if kind is not run_kind or kind is None:
            yield from _flush(run, run_kind)
            run, run_kind = [], kind
        if kind is None:
            yield step
            continue
        run.append(step)
        if step.settle is not None:
            yield from _flush(run, run_kind)
            run, run_kind = [], None
    yield from _flush(run, run_kind)


def _flush(run: list[Step], kind: type[Batch] | None) -> Iterator[Unit]:
    if kind is not None and len(run) >= BATCH_MIN:
        yield kind(tuple(run))
    else:
        yield from run


def apply_plan(plan: Plan, runner: Runner, state: State, save: Callable[[State], None],
               batch: bool = True, poll_seconds: float = 1.0,
               stop_requested: threading.Event | None = None) -> Outcome:
    """Run the plan. stop_requested (set by the CLI's SIGTERM/SIGINT handler) is checked
    between steps, so a step that started is finished and recorded before stopping."""
    outcome = Outcome()
    started = time.monotonic()
    todo = list(units(plan.steps)) if batch else list(plan.steps)
    for index, unit in enumerate(todo):
        try:
            if stop_requested is not None and stop_requested.is_set():
                raise Interrupted("interrupted by a signal; stopped between two steps")
            if isinstance(unit, Batch):
                _run_batch(unit, runner, state, save, outcome)
            else:
                if unit.drain is not None:
                    wait_idle(unit.drain, runner, started, poll_seconds, outcome,
                              stop_requested)
                _run_step(unit, runner, state, save, outcome)
        except LvsError as err:
            applied = outcome.applied  # rendered here, once: the error lists them
            remaining = [line for u in todo[index:] for line in _lines(u)]
            done = set(applied)
            remaining = [line for line in remaining if line not in done]
            raise ApplyFailed(err, applied, remaining) from err
    for effect in plan.forget:
        effect.record(state)
    save(state)
    return outcome


def _lines(unit: Unit) -> list[str]:
    if isinstance(unit, Batch):
        return [step.line() for step in unit.steps]
    return [unit.line()]


def _run_step(step: Step, runner: Runner, state: State, save: Callable[[State], None],
              outcome: Outcome) -> None:
    before = _write_ahead(step, state, save)
    try:
        runner.run(step.argv, stdin=step.stdin)
    except LvsError as err:  # the runner's every refusal: a failed, missing or denied
        # program, or a kernel that lacks a module: the write-ahead record goes back
        if isinstance(err, CommandFailed) and step.optional and (
                err.returncode in step.done_despite):
            outcome.warnings.append(f"{err}: {step.reason}: sent, but not every probe was "
                                    "answered")
        else:
            _roll_back(step, before, state, save)
            if not step.optional:
                raise
            outcome.warnings.append(f"{err}: {step.reason} failed; the rest went on (this "
                                    "step is optional)")
            return
    else:
        outcome.done.append(step)
    if step.settle is not None:
        _settle(step.settle, runner, outcome)
    if step.effect is not None and not step.effect.write_ahead:
        step.effect.record(state)
        save(state)


def _settle(wait: Settle, runner: Runner, outcome: Outcome) -> None:
    try:
        settle(wait, runner)
    except DaemonTimeout as err:
        if not wait.optional:
            raise
        outcome.warnings.append(f"{err}; went on")


def settle(wait: Settle, runner: Runner | None = None, poll_seconds: float = 0.05) -> None:
    """Poll until a daemon is up (its pid file names a live process) or gone, or until
    its `poll` command no longer shows the `absent` words; raise DaemonTimeout once
    `wait.seconds` have passed. Polling, because none of these has an event to wait on:
    keepalived and BIRD are not our children once they have forked."""
    deadline = time.monotonic() + wait.seconds
    while not _settled(wait, runner):
        if time.monotonic() >= deadline:
            raise DaemonTimeout(f"gave up waiting until {wait.describe()}")
        time.sleep(poll_seconds)


def _settled(wait: Settle, runner: Runner | None) -> bool:
    if wait.poll is not None and runner is not None:
        try:
            result = runner.run(wait.poll, check=False)
        except MissingTool:
            return True
        if result.returncode != 0:
            return True  # the daemon does not answer: it has nothing left to send
        return not set(wait.absent) & set(result.stdout.split())
    if wait.gone_pid is not None:
        return not pid_alive(wait.gone_pid)
    if wait.pid_file is not None:
        pid = read_pid(wait.pid_file)
        return pid is not None and pid_alive(pid)
    return True


def _write_ahead(step: Step, state: State, save: Callable[[State], None] | None
                 ) -> list[Owned | None]:
    """Record a change before its command runs, with what to restore (a kill -9 at any
    point must leave a state file from which stop puts the host back). Returns the
    entry as it was, to roll back to if the command fails."""
    effect = step.effect
    if effect is None or not effect.write_ahead:
        return []
    before = state.get(effect.slot())
    effect.record(state)
    if save is not None:
        save(state)
    return [before]


def _roll_back(step: Step, before: list[Owned | None], state: State,
               save: Callable[[State], None] | None) -> None:
    """The command failed, so the change it was to make did not happen: the write-ahead
    record goes (a thing someone else makes later must never be taken for ours)."""
    if step.effect is None or not before:
        return
    state.put(step.effect.slot(), before[0])
    if save is not None:
        save(state)


def _run_batch(batch: Batch, runner: Runner, state: State, save: Callable[[State], None],
               outcome: Outcome) -> None:
    stdin = batch.stdin  # built once: 10,000 lines are worth not joining twice
    log.debug("batch of %d %s:\n%s", len(batch.steps), batch.what, stdin.rstrip())
    befores = [_write_ahead(step, state, None) for step in batch.steps]
    save(state)
    try:
        result = runner.run(batch.argv, stdin=stdin, check=False)
    except LvsError:  # it never ran (a missing program): no write-ahead record holds
        for step, before in zip(batch.steps, befores):
            _roll_back(step, before, state, None)
        save(state)
        raise
    held = batch.held(runner, result)
    # Both batch programs go on after a refused line: record every step that took, and
    # save, before re-running the ones that did not (in order, each alone, for its own
    # error).
    missing = []
    for step, before, holds in zip(batch.steps, befores, held):
        if not holds:
            _roll_back(step, before, state, None)
            missing.append(step)
        else:
            _record(step, state, outcome)
    save(state)
    for step in missing:
        log.debug("did not take in the batch, running it alone: %s", step.line())
        _run_step(step, runner, state, save, outcome)  # raises with the tool's own message
    last = batch.steps[-1]
    if last.settle is not None and last not in missing:  # a re-run step waited already
        _settle(last.settle, runner, outcome)


def _record(step: Step, state: State, outcome: Outcome) -> None:
    outcome.done.append(step)  # its line is rendered only if someone asks (Outcome)
    if step.effect is not None and not step.effect.write_ahead:
        step.effect.record(state)


def wait_idle(drain: Drain, runner: Runner, started: float, poll_seconds: float,
              outcome: Outcome, stop_requested: threading.Event | None = None) -> None:
    """Poll `ipvsadm -L -n` until the drained real server (or service) has no active or
    inactive connections, or its drain time since `started` is up."""
    deadline = started + drain.seconds
    told = False
    while True:
        open_conns = _connections(drain, parse_ipvs_list(runner.run(IPVS_LIST).stdout))
        if open_conns == 0:
            return
        if not told:  # said once, whenever connections are open, even if time is up
            log.warning("waiting until %s: %d connection(s) open", drain.describe(), open_conns)
            told = True
        left = deadline - time.monotonic()
        if left <= 0:
            outcome.warnings.append(f"drain time up after {drain.seconds} s: deleting "
                                    f"{drain.what()} although {open_conns} connection(s) "
                                    "remain")
            return
        if stop_requested is not None:
            if stop_requested.wait(min(poll_seconds, left)):
                raise Interrupted(f"interrupted while waiting until {drain.describe()}")
        else:
            time.sleep(min(poll_seconds, left))


def _connections(drain: Drain, counters: Counters) -> int:
    dests = counters.get(drain.service, {})
    return sum(c.active + c.inactive for ident, c in dests.items()
               if drain.dest is None or ident == drain.dest)


def render_script(plan: Plan, title: str, batch: bool = True) -> str:
    """The plan as a shell script a person could run: exactly what a real run executes."""
    lines = ["#!/bin/sh", f"# {title}"]
    if not plan.steps:
        lines.append("# nothing to do")
    for unit in (units(plan.steps) if batch else plan.steps):
        if isinstance(unit, Batch):
            lines.append(f"# {len(unit.steps)} {unit.what} in one process")
            lines.append(f"{shell_line(unit.argv)} <<'EOF'")
            lines.extend(unit.lines)
            lines.append("EOF")
            if unit.steps[-1].settle is not None:
                lines.append(f"# then wait until {unit.steps[-1].settle.describe()}")
        else:
            if unit.drain is not None:
                lines.append(f"# first wait until {unit.drain.describe()}")
            suffix = "  # optional" if unit.optional else ""
            if unit.stdin is not None:
                lines.append(f"{unit.line()} <<'EOF'{suffix}")
                lines.extend(unit.stdin.rstrip("\n").split("\n"))
                lines.append("EOF")
            else:
                lines.append(f"{unit.line()}{suffix}")
            if unit.settle is not None:
                lines.append(f"# then wait until {unit.settle.describe()}")
    return "\n".join(lines) + "\n"
