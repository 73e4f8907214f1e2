"""A plan is a list of steps: an argv, the reason for it, and what it changes in our
state file once it has succeeded. Dry run prints a plan; a real run executes the same plan."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING

from .model import IPAddress, ServiceKey, endpoint
from .record import Record, field
from .render import shell_line

if TYPE_CHECKING:
    from .owned import Effect


class Drain(Record):
    """Wait before this step until the service (or one real server of it) has no
    connections left, or until `seconds` have passed since the apply began."""

    service: ServiceKey
    dest: tuple[IPAddress, int] | None  # None: the whole service
    seconds: int

    def what(self) -> str:
        return str(self.service) if self.dest is None else (
            f"{endpoint(*self.dest)} in {self.service}")

    def describe(self) -> str:
        return f"{self.what()} has no connections (at most {self.seconds} s)"


class Settle(Record):
    """Wait after this step until a daemon it signalled or started is there (its pid
    file names a live process) or gone (the pid no longer exists), at most `seconds`:
    keepalived forks and writes its pid file after the command returned, and leaves
    some time after SIGTERM while it removes its VIPs."""

    what: str
    pid_file: str | None = None  # wait until it names a live process
    gone_pid: int | None = None  # wait until this process has exited
    seconds: float = 15.0
    # Or: run `poll` (read-only) until none of the words `absent` is in what it prints, or
    # until it fails (the daemon is gone: it has nothing left to send). BIRD withdrawing
    # the VIPs a stop took off lo.
    poll: tuple[str, ...] | None = None
    absent: tuple[str, ...] = ()
    optional: bool = False  # time up is a warning, not an error: the step did its part

    def describe(self) -> str:
        return f"{self.what} (at most {self.seconds:g} s)"


IPVS_RULE_OPTIONS = frozenset({"-A", "-E", "-D", "-a", "-e", "-d"})


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    reason: str
    effect: Effect | None = None
    optional: bool = False  # a failure is a warning, not an error (arping)
    drain: Drain | None = None  # wait for connections to finish before running it
    # Exit codes of an optional step after which its effect holds all the same (arping
    # exits 1 when a probe went unanswered, but its ARPs did go out).
    done_despite: tuple[int, ...] = ()
    stdin: str | None = None  # fed to the command (a file written by `install`)
    settle: Settle | None = None  # wait after it ran
    # The step as a line of `ipvsadm -R` input, if it is a rule change; else None. Worked
    # out once, when the step is made: apply reads it five times a rule (grouping, the
    # batch's input, its check), and a property cost 0.9 s of a start of 10,000 real
    # servers in the lab VM.
    ipvs_rule: str | None = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        argv = self.argv
        rule = " ".join(argv[1:]) if (len(argv) > 1 and argv[0] == "ipvsadm"
                                      and argv[1] in IPVS_RULE_OPTIONS) else None
        object.__setattr__(self, "ipvs_rule", rule)  # frozen: the one assignment

    def line(self) -> str:
        return shell_line(self.argv)


class Plan(Record, frozen=False):
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things seen and deliberately left alone
    # Records to update in the state file once the plan has succeeded, with no command:
    # things it lists that are already gone from the host (dropped), or a value to keep
    # (a service's drain time, for when it leaves the config).
    forget: list[Effect] = field(default_factory=list)
    # What the config asks for but the plan cannot do without touching what is not ours
    # (someone else's service on our VIP:port): the host is not as configured.
    conflicts: list[str] = field(default_factory=list)

    def add(self, argv: tuple[str, ...], reason: str, effect: Effect | None = None,
            optional: bool = False, drain: Drain | None = None,
            done_despite: tuple[int, ...] = (), stdin: str | None = None,
            settle: Settle | None = None) -> None:
        self.steps.append(Step(argv, reason, effect, optional, drain, done_despite, stdin,
                               settle))

    @property
    def required(self) -> list[Step]:
        """The steps that make a difference to the configured state (not announcements)."""
        return [step for step in self.steps if not step.optional]

    def __bool__(self) -> bool:
        return bool(self.steps)


class Outcome(Record, frozen=False):
    """What applying a plan did: the steps that succeeded, and warnings."""

    # The steps themselves, not their shell lines: a start of 10,000 real servers shell-
    # quoted every one of them (1.6 s in the lab VM) only to count them. The lines are
    # rendered when asked for: printed, logged or put into an error.
    done: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def applied(self) -> list[str]:
        """The commands that succeeded, shell-quoted, in the order they ran."""
        return [step.line() for step in self.done]
