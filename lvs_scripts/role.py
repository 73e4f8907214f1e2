"""What the director and a real server have in common: observe -> plan -> apply -> verify.

Each action takes the run lock, observes the host, plans against the config and the
state file, applies the plan through the runner, then observes and plans again: an
empty plan is the proof that the host is as configured (the same check status makes).
"""

from __future__ import annotations

import copy
import ipaddress
import threading
from typing import Any

from .errors import LvsError
from .model import Config, Timeouts
from .plan import (
    AddressRemoved,
    Outcome,
    Plan,
    RouteRemoved,
    RouteRestored,
    ServiceDeleted,
    SysctlRestored,
    TimeoutsRestored,
)
from .probes import HostObservation, Route
from .record import Record, field
from .runner import PlumbumRunner, Runner
from .state import (
    Paths,
    State,
    exclusive,
    load_state,
    lock_exists,
    preflight,
    remove_lock,
    save_state,
    write_lock,
)

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
        return bool(self.outcome.applied)


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

    def __init__(self, config: Config, runner: Runner | None = None,
                 paths: Paths | None = None, wait_seconds: float = 60.0,
                 drain: bool = True, poll_seconds: float = 1.0) -> None:
        self.config = config
        self.drain = drain  # reload/start: drain leaving real servers before deleting them
        self.poll_seconds = poll_seconds
        # Set by a signal handler (the CLI's): the plan stops between two steps.
        self.stop_requested = threading.Event()
        self.runner: Runner = runner if runner is not None else PlumbumRunner()
        self.paths = paths or Paths(self.name)
        self.wait_seconds = wait_seconds

    # --- what each role defines -------------------------------------------------------------
    def observe(self, tolerant: bool = False) -> HostObservation:
        raise NotImplementedError

    def plan_start(self, obs: HostObservation, state: State) -> Plan:
        raise NotImplementedError

    def plan_stop(self, obs: HostObservation, state: State) -> Plan:
        raise NotImplementedError

    def present(self, obs: HostObservation) -> bool:
        """Is anything of the configured set-up in the kernel?"""
        raise NotImplementedError

    def describe(self, obs: HostObservation, state: State) -> tuple[list[str], dict[str, Any]]:
        """Configured versus actual, for status: lines for people, data for --json."""
        raise NotImplementedError

    # --- actions ---------------------------------------------------------------------------
    def state(self) -> State:
        return load_state(self.paths)

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
        preflight(self.paths)
        state = self.state()
        plan = self.plan_start(self.observe(), state)
        report = Report(action, plan, self._apply(plan, state))
        write_lock(self.paths)
        self.verify(state)
        return report

    def stop(self) -> Report:
        with exclusive(self.paths, self.wait_seconds, self.stop_requested):
            return self._stop()

    def restart(self) -> tuple[Report, Report]:
        """stop then start under one run lock, so no other run slips in between."""
        with exclusive(self.paths, self.wait_seconds, self.stop_requested):
            return self._stop(), self._start("start")

    def _stop(self) -> Report:
        preflight(self.paths)
        state = self.state()
        plan = self.plan_stop(self.observe(), state)
        report = Report("stop", plan, self._apply(plan, state))
        remove_lock(self.paths)
        return report

    def verify(self, state: State) -> None:
        again = self.plan_start(self.observe(), state).required
        if again:
            lines = "\n".join(f"  {step.line()}  # {step.reason}" for step in again)
            raise LvsError(f"{self.name}: the host still differs from the config after "
                           f"applying the plan; still needed:\n{lines}")

    def status(self, tolerant: bool = False) -> Status:
        """tolerant (status --dry-run): report what can be seen where a tool is missing."""
        state = self.state()
        obs = self.observe(tolerant)
        plan = self.plan_start(obs, state)
        details, data = self.describe(obs, state)
        drift = [step.line() for step in plan.required]
        notes = list(dict.fromkeys(plan.notes + obs.notes))
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
        obs = self.observe(tolerant=True)
        source = f"planned from {self.config.path} against this host; nothing was changed"
        if action in ("start", "reload", "force-reload"):
            plan = self.plan_start(obs, state)
            return render_script(plan, f"{self.name} {action}: {source}"), plan.notes + obs.notes
        stop = self.plan_stop(obs, state)
        script = render_script(stop, f"{self.name} stop: {source}")
        if action == "stop":
            return script, stop.notes + obs.notes
        after = observation_after(obs, stop, state)
        start = self.plan_start(after, _state_after(state, stop))
        return (script + render_script(start, f"{self.name} start, planned against the host "
                                       "as stop would leave it").split("\n", 1)[1],
                stop.notes + start.notes + obs.notes)


def observation_after(obs: HostObservation, plan: Plan, state: State) -> HostObservation:
    """What the host would look like after a stop plan: for dry-run restart only."""
    after = copy.deepcopy(obs)
    for step in plan.steps:
        effect = step.effect
        if isinstance(effect, AddressRemoved):
            ip = ipaddress.ip_interface(effect.cidr).ip
            after.addresses = [a for a in after.addresses
                               if not (a.device == effect.device and a.interface.ip == ip)]
        elif isinstance(effect, ServiceDeleted):
            after.ipvs = {k: v for k, v in after.ipvs.items() if str(k) != effect.key}
        elif isinstance(effect, RouteRemoved) and state.route is not None:
            after.routes = [r for r in after.routes if str(r.via) != state.route.get("via")]
        elif isinstance(effect, RouteRestored):
            after.routes.append(Route(ipaddress.ip_address(effect.via), effect.dev))
        elif isinstance(effect, TimeoutsRestored) and state.timeouts is not None:
            after.timeouts = Timeouts(*state.timeouts)
        elif isinstance(effect, SysctlRestored) and effect.key in state.sysctls:
            after.sysctls[effect.key] = state.sysctls[effect.key]
    return after


def _state_after(state: State, plan: Plan) -> State:
    after = copy.deepcopy(state)
    for step in plan.steps:
        if step.effect is not None:
            after.apply(step.effect)
    for effect in plan.forget:
        after.apply(effect)
    return after
