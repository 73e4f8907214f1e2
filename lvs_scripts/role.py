"""What the director and a real server have in common: observe -> plan -> apply -> verify.

Each action takes the run lock, observes the host, plans against the config and the
state file, applies the plan through the runner, then observes and plans again: an
empty plan is the proof that the host is as configured (the same check status makes).
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from .errors import LvsError
from .locks import Paths, exclusive, lock_exists, preflight, remove_lock, write_lock
from .model import Config
from .owned import plan_undo
from .plan import Outcome, Plan
from .probes import HostObservation
from .record import Record, field
from .runner import PlumbumRunner, Runner
from .state import State, load_state, save_state

# LSB status codes (init-functions): 0 running, 2 dead but lock file exists, 3 not running.
# 150 is from the range LSB leaves to applications: running, but not as configured.
STATUS_RUNNING = 0
STATUS_DEAD_LOCKED = 2
STATUS_STOPPED = 3
STATUS_DRIFT = 150


class Report(Record, frozen=False):
    """What an action did."""

    action: str
    plan: Plan
    outcome: Outcome = field(default_factory=Outcome)

    @property
    def changed(self) -> bool:
        return bool(self.outcome.done)


class Status(Record, frozen=False):
    code: int
    summary: str
    details: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)  # the commands that would repair it
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "summary": self.summary, "drift": self.drift,
                "notes": self.notes, **self.data}


class Role:
    name = "lvs-role"

    def __init__(self, config: Config | None, runner: Runner | None = None,
                 paths: Paths | None = None, wait_seconds: float = 60.0,
                 drain: bool = True, poll_seconds: float = 1.0,
                 config_error: LvsError | None = None) -> None:
        """config None (with the error that prevented reading it): only stop, and status
        of what the state file lists, can run."""
        self._config = config
        self.config_error = config_error
        self.drain = drain  # reload/start: drain leaving real servers before deleting them
        self.poll_seconds = poll_seconds
        # Set by a signal handler (the CLI's): the plan stops between two steps.
        self.stop_requested = threading.Event()
        self.runner: Runner = runner if runner is not None else PlumbumRunner()
        self.paths = paths or Paths(self.name)
        self.wait_seconds = wait_seconds

    @property
    def config(self) -> Config:
        if self._config is None:
            raise self.config_error or LvsError(f"{self.name}: no config given")
        return self._config

    # --- what each role defines -------------------------------------------------------------
    def observe(self, state: State, tolerant: bool = False) -> HostObservation:
        """The host as the config and the state file need it seen."""
        raise NotImplementedError

    def observe_owned(self, state: State, tolerant: bool = False) -> HostObservation:
        """The host as undoing the state file needs it seen: no config involved."""
        from .observe import observe_owned

        return observe_owned(state, self.runner, tolerant)

    def plan_start(self, obs: HostObservation, state: State) -> Plan:
        raise NotImplementedError

    def plan_stop(self, obs: HostObservation, state: State) -> Plan:
        """Undo what the state file lists, and nothing else: the config plays no part, so
        a broken or removed config, or one naming a vanished interface, cannot block it."""
        plan = Plan()
        plan_undo(plan, obs, state)
        return plan

    def present(self, obs: HostObservation) -> bool:
        """Is anything of the configured set-up in the kernel?"""
        raise NotImplementedError

    def describe(self, obs: HostObservation, state: State) -> tuple[list[str], dict[str, Any]]:
        """Configured versus actual, for status: lines for people, data for --json."""
        raise NotImplementedError

    # --- actions ---------------------------------------------------------------------------
    def state(self) -> State:
        return load_state(self.paths)

    def _state_for_change(self) -> State:
        """The state, after preflight; a file from an older version is rewritten in the
        current layout before anything else happens."""
        preflight(self.paths)
        state = self.state()
        if state.upgraded_from is not None:
            self._save(state)
            state.upgraded_from = None
        return state

    def _save(self, state: State) -> None:
        save_state(self.paths, state)

    def _apply(self, plan: Plan, state: State) -> Outcome:
        from .apply import apply_plan

        return apply_plan(plan, self.runner, state, self._save, poll_seconds=self.poll_seconds,
                          stop_requested=self.stop_requested)

    def start(self) -> Report:
        with exclusive(self.paths, self.wait_seconds, self.stop_requested):
            return self._start("start")

    def reload(self, action: str = "reload") -> Report:
        """reload and force-reload: the same reconciliation as start, named as asked."""
        with exclusive(self.paths, self.wait_seconds, self.stop_requested):
            return self._start(action)

    def _start(self, action: str) -> Report:
        from .observe import KnownReadings

        state = self._state_for_change()
        # For this action only, the readings nothing since has changed are not taken
        # again by the verification (observe.KnownReadings).
        runner = self.runner
        self.runner = KnownReadings(runner)
        try:
            before = self.observe(state)
            plan = self.plan_start(before, state)
            report = Report(action, plan, self._apply(plan, state))
            write_lock(self.paths)
            self.verify(state, before)
        finally:
            self.runner = runner
        return report

    def stop(self) -> Report:
        with exclusive(self.paths, self.wait_seconds, self.stop_requested):
            return self._stop()

    def restart(self) -> tuple[Report, Report]:
        """stop then start under one run lock, so no other run slips in between."""
        with exclusive(self.paths, self.wait_seconds, self.stop_requested):
            return self._stop(), self._start("start")

    def _stop(self) -> Report:
        state = self._state_for_change()
        plan = self.plan_stop(self.observe_owned(state), state)
        report = Report("stop", plan, self._apply(plan, state))
        remove_lock(self.paths)
        return report

    def observe_again(self, state: State, before: HostObservation) -> HostObservation:
        """The host as the verification sees it, after applying a plan made from `before`
        (the first observation): a role may read it more cheaply where that is as exact."""
        return self.observe(state)

    def verify(self, state: State, before: HostObservation) -> None:
        plan = self.plan_start(self.observe_again(state, before), state)
        again = plan.required
        if again:
            lines = "\n".join(f"  {step.line()}  # {step.reason}" for step in again)
            raise LvsError(f"{self.name}: the host still differs from the config after "
                           f"applying the plan; still needed:\n{lines}")
        if plan.conflicts:
            lines = "\n".join(f"  {line}" for line in plan.conflicts)
            raise LvsError(f"{self.name}: applied what could be, but the host cannot be as "
                           f"configured without touching what is not ours:\n{lines}")

    def status(self, tolerant: bool = False) -> Status:
        """tolerant (status --dry-run): report what can be seen where a tool is missing."""
        state = self.state()
        obs = self.observe(state, tolerant)
        plan = self.plan_start(obs, state)
        details, data = self.describe(obs, state)
        drift = [step.line() for step in plan.required]
        notes = list(dict.fromkeys(plan.notes + obs.notes))
        data["conflicts"] = list(plan.conflicts)
        details += [f"CONFLICT: {line}" for line in plan.conflicts]
        if plan.conflicts and not drift:
            return Status(STATUS_DRIFT, f"running, but not as configured: {len(plan.conflicts)}"
                          " conflict(s) with what is not ours", details, drift, notes, data)
        if not drift:
            return Status(STATUS_RUNNING, "running as configured", details, drift, notes, data)
        if not self.present(obs):
            if lock_exists(self.paths):
                return Status(STATUS_DEAD_LOCKED, "not running, but the lock file "
                              f"{self.paths.lock_file} exists", details, drift, notes, data)
            return Status(STATUS_STOPPED, "not running", details, drift, notes, data)
        return Status(STATUS_DRIFT, f"running, but differs from the config in {len(drift)} "
                      "place(s)", details, drift, notes, data)

    # --- dry run: the same plans, printed --------------------------------------------------
    def dry_run(self, action: str) -> tuple[str, list[str]]:
        """The plan for an action as a shell script, and the notes to show on stderr."""
        from .apply import render_script

        state = self.state()
        if action == "stop":
            obs = self.observe_owned(state, tolerant=True)
        else:
            obs = self.observe(state, tolerant=True)
        where = self.config.path if self._config is not None else "the state file alone"
        source = f"planned from {where} against this host; nothing was changed"
        if action in ("start", "reload", "force-reload"):
            plan = self.plan_start(obs, state)
            return render_script(plan, f"{self.name} {action}: {source}"), plan.notes + obs.notes
        stop = self.plan_stop(obs, state)
        script = render_script(stop, f"{self.name} stop: {source}")
        if action == "stop":
            return script, stop.notes + obs.notes
        after = observation_after(obs, stop)
        start = self.plan_start(after, _state_after(state, stop))
        return (script + render_script(start, f"{self.name} start, planned against the host "
                                       "as stop would leave it").split("\n", 1)[1],
                stop.notes + start.notes + obs.notes)


def observation_after(obs: HostObservation, plan: Plan) -> HostObservation:
    """What the host would look like after a stop plan: for dry-run restart only."""
    after = copy.deepcopy(obs)
    for step in plan.steps:
        if step.effect is not None:
            step.effect.simulate(after)
    return after


def _state_after(state: State, plan: Plan) -> State:
    after = copy.deepcopy(state)
    for step in plan.steps:
        if step.effect is not None:
            step.effect.record(after)
    for effect in plan.forget:
        effect.record(after)
    return after
