"""Execute a plan through the runner, recording each success in the state file.

Consecutive ipvsadm rule changes go to one `ipvsadm -R` process (one process for
10,000 rules instead of 10,000). Its exit status is that of the last line only, so
the batch is verified by observing the table again; a rule that did not take is
re-run on its own to get ipvsadm's own error message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Callable, Union

from .errors import (
    ApplyFailed,
    CommandFailed,
    DaemonTimeout,
    Interrupted,
    LvsError,
    MissingTool,
)
from .owned import Owned
from .pids import pid_alive, read_pid
from .plan import Drain, Outcome, Plan, Settle, Step
from .probes import IPVS_LIST, IPVS_SAVE, Counters, parse_ipvs_list, rules_held
from .record import Record
from .render import shell_line
from .runner import Runner
from .state import State

log = logging.getLogger("lvs_scripts")

BATCH_MIN = 2  # a single rule runs as itself: clearer in logs, same cost


class Batch(Record):
    steps: tuple[Step, ...]

    @property
    def argv(self) -> tuple[str, ...]:
        return ("ipvsadm", "-R")

    @property
    def stdin(self) -> str:
        return "".join(f"{step.ipvs_rule}\n" for step in self.steps)


Unit = Union[Step, Batch]


def units(steps: list[Step]) -> Iterator[Unit]:
    """Group runs of consecutive ipvsadm rule steps into batches."""
    run: list[Step] = []
    for step in steps:
        if step.ipvs_rule is not None and step.drain is None:
            run.append(step)
            continue
        yield from _flush(run)
        run = []
        yield step
    yield from _flush(run)


def _flush(run: list[Step]) -> Iterator[Unit]:
    if len(run) >= BATCH_MIN:
        yield Batch(tuple(run))
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
        try:
            settle(step.settle, runner)
        except DaemonTimeout as err:
            if not step.settle.optional:
                raise
            outcome.warnings.append(f"{err}; went on")
    if step.effect is not None and not step.effect.write_ahead:
        step.effect.record(state)
        save(state)


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
    log.debug("batch of %d ipvsadm rules:\n%s", len(batch.steps), stdin.rstrip())
    befores = [_write_ahead(step, state, None) for step in batch.steps]
    save(state)
    runner.run(batch.argv, stdin=stdin, check=False)
    held = rules_held([step.ipvs_rule or "" for step in batch.steps],
                      runner.run(IPVS_SAVE).stdout)
    # ipvsadm -R goes on after a refused line: record every rule that took, and save,
    # before re-running the ones that did not (in order, each alone, for its own error).
    missing = []
    for step, before, holds in zip(batch.steps, befores, held):
        if step.ipvs_rule is not None and not holds:
            _roll_back(step, before, state, None)
            missing.append(step)
        else:
            _record(step, state, outcome)
    save(state)
    for step in missing:
        log.debug("rule did not take in the batch, running it alone: %s", step.line())
        _run_step(step, runner, state, save, outcome)  # raises with ipvsadm's own message


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
            lines.append(f"# {len(unit.steps)} ipvsadm rules in one process")
            lines.append(f"{shell_line(unit.argv)} <<'EOF'")
            lines.extend(step.ipvs_rule or "" for step in unit.steps)
            lines.append("EOF")
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
