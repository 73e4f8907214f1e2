"""Fault injection at every step of every action (issue "Robustness").

For each action (director start, stop, reload; real-server start, stop) a fault-free
baseline run is recorded first, at collection time, and every command it issues that
changes the host becomes a fault point: each command on its own, each batch process
(`ipvsadm -R`, `ip -force -batch -`) as a whole, and each line a batch reads. One parametrised test
then makes exactly that step fail (with the exit status and message of the real tool)
and checks, against the emulated kernel:

- exit 1; stderr names the failed command, its exit status and its stderr; the lists of
  what was applied and not applied are exactly what the kernel shows;
- the state file records exactly what the kernel shows as applied by us (compared with
  the machine as it was before the first start);
- the same action run again without the fault exits 0 and converges: `status` agrees
  and one more run says "nothing to do";
- after a failed start or reload, `stop` puts the machine back as it was before start.

Optional steps (arping) failing must not fail the action.

Speed: the CLI runs in this process (`director_main(argv)`), and the executor's
`PlumbumRunner.run` is replaced by one that calls `FakeHost.invoke` directly: the same
fakes, call log and failure injection, without starting a process per command (a few
hundred actions run here). `test_in_process_runner_issues_what_the_real_cli_issues`
checks that the real CLI, as a subprocess through plumbum, issues the same commands.

Not compared with the machine before start, on purpose: link state (stop never takes an
interface down).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lvs_scripts.apply import ADDRESS_BATCH
from lvs_scripts.cli import director_main, realserver_main
from lvs_scripts.errors import MissingTool
from lvs_scripts.runner import PlumbumRunner, Result, check_result
from tests.fakes.fakehost import FakeHost

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = "192.168.30.1"
OLD_GATEWAY = "192.168.30.200"  # the fake machine's default route before start

CONFIG_A = f"""
[director]
interface = "eth0"
gateway = "{GATEWAY}"
dip = "10.9.0.5/24"
dip_interface = "eth1"
timeouts = {{ tcp = 30, tcpfin = 5, udp = 60 }}
arping_count = 2

[realserver]
arp_interfaces = ["eth0"]

[[service]]
vip = "192.168.30.254"
port = 80
scheduler = "wrr"
real = [
  {{ address = "192.168.30.111", weight = 1 }},
  {{ address = "192.168.30.112", weight = 1 }},
  {{ address = "192.168.30.113", weight = 2 }},
]

[[service]]
vip = "192.168.30.253"
port = 53
protocol = "udp"
scheduler = "rr"
real = [{{ address = "192.168.30.111" }}, {{ address = "192.168.30.112" }}]
"""

# The edit reload applies: a scheduler change (-E), a weight change (-e), a real server
# added (-a) and one removed (-d); a new service on a new VIP (-A, -a); the udp service
# and its VIP gone (-D, ip addr del).
CONFIG_B = CONFIG_A.split("[[service]]", maxsplit=1)[0] + """
[[service]]
vip = "192.168.30.254"
port = 80
scheduler = "wlc"
real = [
  { address = "192.168.30.111", weight = 1 },
  { address = "192.168.30.112", weight = 3 },
  { address = "192.168.30.115", weight = 1 },
]

[[service]]
vip = "192.168.30.252"
port = 443
scheduler = "rr"
real = [{ address = "192.168.30.111" }, { address = "192.168.30.112" }]
"""

READ_ONLY = (
    ("ip", "-o", "link", "show"), ("ip", "-o", "addr", "show"),
    ("ip", "-4", "route", "show"), ("ip", "-6", "route", "show"),
    ("ipvsadm", "-S", "-n"), ("ipvsadm", "-L"), ("sysctl", "-n"), ("arping", "-V"),
)


RULE_OPTIONS = ("-A", "-E", "-D", "-a", "-e", "-d")
# The batch processes, by the program whose commands their lines are.
BATCH_PROCESSES = {"ipvsadm": ("ipvsadm", "-R"), "ip": ADDRESS_BATCH}


def read_only(argv: Sequence[str]) -> bool:
    return any(tuple(argv[:len(prefix)]) == prefix for prefix in READ_ONLY)


def optional(argv: Sequence[str]) -> bool:
    """VIP announcements, and putting back the default route from before start: a failure
    is a warning."""
    return (argv[0] == "arping" and not read_only(argv)) or (tuple(argv[:4]) == (
        "ip", "route", "replace", "default") and OLD_GATEWAY in argv)


# ------------------------------------------------------------------ running the CLI here


def _direct_run(host: FakeHost) -> Any:
    def run(self: PlumbumRunner, argv: Sequence[str], *, stdin: str | None = None,
            check: bool = True) -> Result:
        argv = tuple(argv)
        if argv[0] in host.missing_tools():
            raise MissingTool(argv[0])
        self.count += 1
        done = host.invoke(argv[0], list(argv[1:]), stdin)
        result = Result(argv, done.rc, done.stdout, done.stderr)
        if check:
            check_result(result)
        return result

    return run


@contextlib.contextmanager
def in_process(host: FakeHost) -> Iterator[None]:
    """The executor runs the fakes of `host` in this process; root as far as the CLI can
    tell; no syslog. Usable outside pytest (the baseline is recorded at collection)."""
    saved_run, saved_euid = PlumbumRunner.run, os.geteuid
    saved_syslog = os.environ.get("LVS_SYSLOG")
    PlumbumRunner.run = _direct_run(host)  # type: ignore[method-assign]
    os.geteuid = lambda: 0
    os.environ["LVS_SYSLOG"] = "0"
    try:
        yield
    finally:
        PlumbumRunner.run = saved_run  # type: ignore[method-assign]
        os.geteuid = saved_euid
        if saved_syslog is None:
            os.environ.pop("LVS_SYSLOG", None)
        else:
            os.environ["LVS_SYSLOG"] = saved_syslog


@dataclass
class Ran:
    code: int
    out: str
    err: str


def snapshot(host: FakeHost) -> dict[str, Any]:
    """Addresses, routes, the IPVS table and timeouts, sysctls: what stop must put back."""
    st = host.state()
    return {
        "addresses": {i["name"]: sorted(json.dumps(a, sort_keys=True)
                                        for a in i["addrs"] + i["addrs6"])
                      for i in st["interfaces"]},
        "routes": host.routes(),
        "ipvs": host.ipvs_save(),
        "timeouts": list(host.timeouts()),
        "sysctl": host.sysctls(),
    }


class Bench:
    """One emulated machine with its configs and the CLI's state and lock directories."""

    def __init__(self, root: Path, role: str) -> None:
        self.role = role
        self.tool = f"lvs-{role}"
        self.host = FakeHost(root / "host")
        self.state_dir = root / "run"
        self.lock_dir = root / "lock"
        self.configs = {"a": root / "a.toml", "b": root / "b.toml"}
        self.configs["a"].write_text(CONFIG_A)
        self.configs["b"].write_text(CONFIG_B)
        if role == "director":
            self.host.set_ipvs("loaded")  # loading ip_vs is not something stop undoes
            self.host.set_neighbour(GATEWAY, "52:54:00:00:00:01")  # arping gets an answer
            self.host.set_link("eth1", up=False)  # so that start brings it up
        self.pristine = snapshot(self.host)

    @property
    def state_file(self) -> Path:
        return self.state_dir / f"{self.tool}.json"

    @property
    def lock_file(self) -> Path:
        return self.lock_dir / self.tool

    def cli(self, *args: str, config: str = "a") -> Ran:
        main = director_main if self.role == "director" else realserver_main
        argv = ["-c", str(self.configs[config]), "--state-dir", str(self.state_dir),
                "--lock-dir", str(self.lock_dir), *args]
        out, err = io.StringIO(), io.StringIO()
        with in_process(self.host), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            code = main(argv)
        return Ran(code, out.getvalue(), err.getvalue())

    def state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return {"version": 5, "addresses": [], "route": None, "services": [],
                    "sysctls": [], "timeouts": None, "files": [], "keepalived": None,
                    "sync_daemons": [], "nft_tables": [], "links": [], "fous": [],
                    "bird": None}
        return json.loads(self.state_file.read_text())  # type: ignore[no-any-return]

    def save(self) -> dict[str, Any]:
        """Everything a run can change: the machine, the state and lock directories."""
        files = {}
        for directory in (self.state_dir, self.lock_dir):
            if directory.is_dir():
                files.update({path: path.read_bytes() for path in directory.iterdir()})
        return {"host": self.host.state(), "files": files}

    def restore(self, saved: dict[str, Any]) -> None:
        with self.host.edit() as st:
            st.clear()
            st.update(saved["host"])
        for directory in (self.state_dir, self.lock_dir):
            if directory.is_dir():
                for path in directory.iterdir():
                    path.unlink()
        for path, content in saved["files"].items():
            path.write_bytes(content)


# ------------------------------------------------------------------ what "ours" means


def kernel_step_holds(bench: Bench, argv: Sequence[str]) -> bool:
    """Does the machine show what this batch line (an ipvsadm rule, an `ip addr add|del`)
    asked for?"""
    if argv[0] == "ipvsadm":
        return kernel_rule_holds(argv[1:], bench.host.ipvs_save())
    device = argv[list(argv).index("dev") + 1]
    present = argv[3] in bench.host.addresses(device)
    return present if argv[2] == "add" else not present


def kernel_rule_holds(words: Sequence[str], save: str) -> bool:
    """Does the kernel table (`ipvsadm -S -n`) show what this rule line asked for?
    Written independently of lvs_scripts.probes.rule_holds."""
    lines = save.splitlines()
    op, flag, service = words[0], words[1], words[2]
    rest = " ".join(words[1:])
    if op in ("-A", "-E"):
        return f"-A {rest}" in lines
    if op in ("-a", "-e"):
        return f"-a {rest}" in lines
    if op == "-D":
        return not any(line.startswith(f"-A {flag} {service} ") for line in lines)
    real = words[list(words).index("-r") + 1]
    return not any(line.startswith(f"-a {flag} {service} -r {real} ") for line in lines)


_PROTOCOLS = {"-t": "tcp", "-u": "udp", "--sctp-service": "sctp"}


def _services(save: str) -> set[str]:
    return {f"{_PROTOCOLS[w[1]]} {w[2]}" for w in (line.split() for line in save.splitlines())
            if w and w[0] == "-A"}


def _v4_addresses(snap: dict[str, Any]) -> set[tuple[str, str]]:
    found = set()
    for device, entries in snap["addresses"].items():
        for entry in map(json.loads, entries):
            if "prefixlen" in entry and "." in str(entry.get("local", "")):
                found.add((device, f"{entry['local']}/{entry['prefixlen']}"))
    return found


def assert_state_matches_kernel(bench: Bench) -> None:
    """The state file lists exactly what the kernel has now and did not have before the
    first start, and remembers what it replaced."""
    now = snapshot(bench.host)
    before = bench.pristine
    state = bench.state()
    assert state["version"] == 5
    assert sorted((a["device"], a["cidr"]) for a in state["addresses"]) == sorted(
        _v4_addresses(now) - _v4_addresses(before)), "addresses"
    assert sorted(f"{s['protocol']} {s['address']}:{s['port']}" for s in state["services"]
                  ) == sorted(_services(now["ipvs"]) - _services(before["ipvs"])), "services"
    defaults = [r for r in now["routes"] if r["dst"] == "default"]
    if defaults == [r for r in before["routes"] if r["dst"] == "default"]:
        assert state["route"] is None, "route"
    else:
        assert state["route"] is not None, \
            f"the default route changed ({defaults}) but the state file does not say so"
        previous = state["route"]["previous"]
        assert (previous["via"], previous["dev"]) == (OLD_GATEWAY, "eth0"), \
            "route: what to put back"
        if any(r["via"] == GATEWAY for r in defaults):
            assert state["route"]["ours"]["via"] == GATEWAY
    changed = {key: int(value) for key, value in before["sysctl"].items()
               if now["sysctl"].get(key) != value}
    assert {s["key"]: s["previous"] for s in state["sysctls"]} == changed, "sysctls"
    timeouts = before["timeouts"] if now["timeouts"] != before["timeouts"] else None
    recorded = state["timeouts"]["previous"] if state["timeouts"] else None
    assert recorded == timeouts, "timeouts: what to put back"


def assert_as_before_start(bench: Bench) -> None:
    assert snapshot(bench.host) == bench.pristine
    assert not bench.state_file.exists()
    assert not bench.lock_file.exists()


# ------------------------------------------------------------------ actions and fault points


@dataclass(frozen=True)
class Action:
    name: str
    role: str
    args: tuple[str, ...]
    config: str
    before: tuple[tuple[str, str], ...] = ()  # (action, config) run first

    @property
    def starts(self) -> bool:
        return self.args[0] in ("start", "reload")


ACTIONS = (
    Action("director start", "director", ("start",), "a"),
    Action("director stop", "director", ("stop",), "a", (("start", "a"),)),
    Action("director reload", "director", ("reload", "--no-drain"), "b", (("start", "a"),)),
    Action("realserver start", "realserver", ("start",), "a"),
    Action("realserver stop", "realserver", ("stop",), "a", (("start", "a"),)),
)
ACTION = {action.name: action for action in ACTIONS}

# What the baseline of each action must contain; update when a planner changes on purpose.
# (required steps, optional steps)
EXPECTED_STEPS = {
    "director start": (15, 2),    # --set, DIP, eth1 up, ip -batch + 2 VIPs, route, -R + 7
                                  # rule lines
    "director stop": (8, 1),      # -R + 2 rule lines, ip -batch + 2 VIPs, DIP, the timeouts
                                  # put back;
                                  # the route put back in one replace (optional: never
                                  # fails a stop)
    "director reload": (11, 1),   # VIP add, VIP del, -R + 8 rule lines
    "realserver start": (7, 0),   # 4 sysctls, ip -batch + 2 VIPs on lo
    "realserver stop": (7, 0),    # ip -batch + 2 VIPs, 4 sysctls put back
}


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    batch: int | None = None  # index of its batch process among the action's batches
    line: int | None = None  # index of the rule in its batch

    @property
    def text(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Point:
    action: str
    kind: str  # command | batch (the -R process) | line (one rule in it) | optional
    index: int  # the failing step's position in Baseline.steps
    nth: int  # the failing command's occurrence among the action's calls (from 1)

    @property
    def id(self) -> str:
        return f"{self.action.replace(' ', '-')}-{self.index:02d}-{self.kind}"


@dataclass
class Baseline:
    steps: list[Step] = field(default_factory=list)
    batches: list[list[Step]] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)


def prepare(bench: Bench, action: Action) -> None:
    for args, config in action.before:
        ran = bench.cli(args, config=config)
        assert ran.code == 0, ran.err


def record_baseline(action: Action, root: Path) -> Baseline:
    bench = Bench(root, action.role)
    prepare(bench, action)
    bench.host.clear_calls()
    ran = bench.cli(*action.args, config=action.config)
    assert ran.code == 0, ran.err
    base = Baseline()
    seen: dict[tuple[str, ...], int] = {}
    for call in bench.host.calls():
        argv = tuple(call["argv"])
        if read_only(argv):
            continue
        seen[argv] = seen.get(argv, 0) + 1
        tool = next((tool for tool, batch in BATCH_PROCESSES.items() if argv == batch), None)
        if tool is not None:
            batch = [Step((tool, *line.split()), len(base.batches), number)
                     for number, line in enumerate(call["stdin"].splitlines())]
            base.points.append(Point(action.name, "batch", len(base.steps), seen[argv]))
            for step in batch:
                base.points.append(Point(action.name, "line", len(base.steps), 1))
                base.steps.append(step)
            base.batches.append(batch)
            continue
        kind = "optional" if optional(argv) else "command"
        base.points.append(Point(action.name, kind, len(base.steps), seen[argv]))
        base.steps.append(Step(argv))
    return base


@functools.cache
def baselines() -> dict[str, Baseline]:
    with tempfile.TemporaryDirectory(prefix="lvs-faults-") as tmp:
        return {action.name: record_baseline(action, Path(tmp) / str(number))
                for number, action in enumerate(ACTIONS)}


def _marks(point: Point) -> list[pytest.MarkDecorator]:
    """Every fault point is an ordinary test now that the bugs they showed are fixed
    (a refused rule inside ipvsadm -R; a failed route restore during stop)."""
    del point
    return []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "batched" in metafunc.fixturenames:  # the actions with a batch process
        metafunc.parametrize("batched", [name for name, base in baselines().items()
                                         if base.batches])
    if "point" in metafunc.fixturenames:
        kinds = ("optional",) if "optional_point" in metafunc.function.__name__ else (
            "command", "batch", "line")
        points = [p for base in baselines().values() for p in base.points if p.kind in kinds]
        metafunc.parametrize("point", [pytest.param(p, id=p.id, marks=_marks(p))
                                       for p in points])


# ------------------------------------------------------------------ injecting a fault


def _literal(argv: Sequence[str]) -> list[str]:
    """An argv as fnmatch patterns matching only itself ([ is special)."""
    return [word.replace("[", "[[]") for word in argv]


def tool_failure(argv: Sequence[str]) -> tuple[int, str]:
    """The exit status and message of the real tool for a refused change."""
    if argv[0] == "ip":
        return 2, "RTNETLINK answers: Operation not permitted"
    if argv[0] == "ipvsadm":
        return 255, "Memory allocation problem"
    if argv[0] == "sysctl":
        key = argv[2].split("=")[0]
        # procps sometimes exits 0 after a refused write: only stderr tells.
        return (0 if "arp_ignore" in key else 255), f'sysctl: permission denied on key "{key}"'
    return 2, "arping: socket: Operation not permitted"


def inject(bench: Bench, point: Point) -> tuple[str, int, str]:
    """Make the point's step fail; returns (the command the error names, rc, stderr)."""
    base = baselines()[point.action]
    step = base.steps[point.index]
    if point.kind == "batch":
        rc, stderr = tool_failure(step.argv)
        bench.host.fail(list(BATCH_PROCESSES[step.argv[0]]), nth=point.nth, rc=rc,
                        stderr=stderr)
        # The first rule, run alone to get ipvsadm's own message, fails the same way.
        bench.host.fail(_literal(step.argv), nth=1, rc=rc, stderr=stderr)
        return step.text, rc, stderr
    if point.kind == "line":
        rc, stderr = tool_failure(step.argv)
        bench.host.fail(_literal(step.argv), in_restore=True, rc=rc, stderr=stderr)
        bench.host.fail(_literal(step.argv), nth=1, rc=rc, stderr=stderr)
        return step.text, rc, stderr
    rc, stderr = tool_failure(step.argv)
    bench.host.fail(_literal(step.argv), nth=point.nth, rc=rc, stderr=stderr)
    return step.text, rc, stderr


def reported(err: str, heading: str) -> list[str]:
    """The indented lines under `heading (N):` in an ApplyFailed message."""
    lines = err.splitlines()
    for number, line in enumerate(lines):
        if line.startswith(f"{heading} ("):
            count = int(line[len(heading) + 2:].rstrip("):"))
            items = [item[2:] for item in lines[number + 1:number + 1 + count]]
            assert all(item.startswith("  ") for item in lines[number + 1:number + 1 + count])
            return items
    return []


def applied_in_kernel(bench: Bench, base: Baseline, failed: int) -> tuple[list[str], list[str]]:
    """(applied, not applied) as the kernel shows them: every step before the failed one;
    after it, the later rules of the same batch that the kernel did accept."""
    failing = base.steps[failed]
    applied, missing = [], []
    for number, step in enumerate(base.steps):
        if number < failed:
            applied.append(step.text)
        elif (number > failed and failing.batch is not None and step.batch == failing.batch
              and kernel_step_holds(bench, step.argv)):
            applied.append(step.text)
        else:
            missing.append(step.text)
    return applied, missing


# ------------------------------------------------------------------ the tests


def test_baseline_of_every_action(tmp_path: Path) -> None:
    """The fault-free runs the matrix is built from: exit 0, converged, recorded."""
    for number, action in enumerate(ACTIONS):
        bench = Bench(tmp_path / str(number), action.role)
        prepare(bench, action)
        ran = bench.cli(*action.args, config=action.config)
        assert ran.code == 0, ran.err
        assert ran.err == ""
        assert_state_matches_kernel(bench)
        status = bench.cli("status", config=action.config)
        assert status.code == (0 if action.starts else 3), status.out
        if not action.starts:
            assert_as_before_start(bench)


def test_fault(point: Point, tmp_path: Path) -> None:
    action = ACTION[point.action]
    base = baselines()[point.action]
    bench = Bench(tmp_path, action.role)
    prepare(bench, action)
    command, rc, stderr = inject(bench, point)
    print(f"{point.action}: step {point.index + 1}/{len(base.steps)} ({point.kind}) fails: "
          f"{command}")

    ran = bench.cli(*action.args, config=action.config)

    assert ran.code == 1, ran.err
    assert "Traceback" not in ran.err
    assert f"`{command}` exited {rc}: {stderr}" in ran.err
    applied, missing = applied_in_kernel(bench, base, point.index)
    if applied:
        assert reported(ran.err, "applied before the failure") == applied
    else:
        assert "nothing was applied before the failure" in ran.err
    assert reported(ran.err, "not applied") == missing
    assert_state_matches_kernel(bench)
    after_failure = bench.save()

    # The same action again, without the fault, finishes the job.
    bench.host.clear_failures()
    again = bench.cli(*action.args, config=action.config)
    assert again.code == 0, again.err
    assert "Traceback" not in again.err
    assert_state_matches_kernel(bench)
    status = bench.cli("status", config=action.config)
    once_more = bench.cli(action.args[0] if action.starts else "stop", config=action.config)
    assert once_more.code == 0, once_more.err
    assert once_more.out.endswith("nothing to do\n"), once_more.out
    if action.starts:
        assert status.code == 0, status.out
    else:
        assert status.code == 3, status.out
        assert_as_before_start(bench)
        return

    # After the failed start (or reload), stop puts back the machine from before start.
    bench.restore(after_failure)
    stopped = bench.cli("stop", config=action.config)
    assert stopped.code == 0, stopped.err
    assert_as_before_start(bench)


def test_optional_point(point: Point, tmp_path: Path) -> None:
    """An announcement (arping), or putting the old default route back, that fails is a
    warning: the action succeeds; a stop run again finishes the job."""
    action = ACTION[point.action]
    bench = Bench(tmp_path, action.role)
    prepare(bench, action)
    command, rc, stderr = inject(bench, point)
    ran = bench.cli(*action.args, config=action.config)
    assert ran.code == 0, ran.err
    assert f"`{command}` exited {rc}: {stderr}" in ran.err
    assert "optional" in ran.err
    assert "Traceback" not in ran.err
    assert_state_matches_kernel(bench)
    if action.starts:
        assert bench.cli("status", config=action.config).code == 0
    else:
        bench.host.clear_failures()
        assert bench.cli(*action.args, config=action.config).code == 0
        assert_as_before_start(bench)


def test_batch_that_fails_as_a_whole_is_finished_rule_by_rule(batched: str,
                                                                tmp_path: Path) -> None:
    """A batch process (`ipvsadm -R`, `ip -force -batch -`) fails as a whole but each
    of its lines then goes through alone: no error at all."""
    action = ACTION[batched]
    base = baselines()[batched]
    bench = Bench(tmp_path, action.role)
    prepare(bench, action)
    for process in BATCH_PROCESSES.values():
        bench.host.fail(list(process), nth=1, rc=255, stderr="Memory allocation problem")
    bench.host.clear_calls()
    ran = bench.cli(*action.args, config=action.config)
    assert ran.code == 0, ran.err
    lines = [list(step.argv) for batch in base.batches for step in batch]
    assert [argv for argv in bench.host.argvs() if argv in lines] == lines
    assert_state_matches_kernel(bench)
    assert bench.cli("status", config=action.config).code == (0 if action.starts else 3)


def test_rule_refused_in_the_batch_but_taken_alone_is_no_error(batched: str,
                                                               tmp_path: Path) -> None:
    action = ACTION[batched]
    base = baselines()[batched]
    bench = Bench(tmp_path, action.role)
    prepare(bench, action)
    last = base.batches[-1][-1]
    bench.host.fail(_literal(last.argv), in_restore=True, rc=255,
                    stderr="Memory allocation problem")
    ran = bench.cli(*action.args, config=action.config)
    assert ran.code == 0, ran.err
    assert list(last.argv) in bench.host.argvs(last.argv[0])  # run again on its own
    assert_state_matches_kernel(bench)


def test_service_created_after_a_refused_rule_is_recorded(tmp_path: Path) -> None:
    """The consequence of the batch bug, spelt out: the first service's -A is refused,
    the second service is created by the same `ipvsadm -R`, the state file does not
    know it, and stop leaves it in the kernel for good."""
    bench = Bench(tmp_path, "director")
    refused = ["ipvsadm", "-A", "-t", "192.168.30.254:80", "-s", "wrr"]
    bench.host.fail(refused, in_restore=True, rc=255, stderr="Memory allocation problem")
    bench.host.fail(refused, nth=1, rc=255, stderr="Memory allocation problem")
    assert bench.cli("start").code == 1
    assert "-A -u 192.168.30.253:53 -s rr" in bench.host.ipvs_save()  # the kernel took it
    bench.host.clear_failures()
    assert bench.cli("stop").code == 0
    assert bench.host.ipvs_save() == ""


def test_service_created_before_a_refused_rule_is_recorded(tmp_path: Path) -> None:
    """The other half: the first service is created by the batch, the second one's -A is
    refused; the state file on disk does not list the first, so stop leaves it."""
    bench = Bench(tmp_path, "director")
    refused = ["ipvsadm", "-A", "-u", "192.168.30.253:53", "-s", "rr"]
    bench.host.fail(refused, in_restore=True, rc=255, stderr="Memory allocation problem")
    bench.host.fail(refused, nth=1, rc=255, stderr="Memory allocation problem")
    assert bench.cli("start").code == 1
    assert "-A -t 192.168.30.254:80 -s wrr" in bench.host.ipvs_save()  # the kernel took it
    assert [(s["protocol"], s["address"], s["port"]) for s in bench.state()["services"]] == [
        ("tcp", "192.168.30.254", 80)]


def test_replaced_default_route_survives_a_failed_stop(tmp_path: Path) -> None:
    """A restore the kernel refuses does not fail stop (issue 9, item 13): our route stays,
    so the host keeps a default route, and the record stays for the next stop."""
    bench = Bench(tmp_path, "director")
    assert bench.cli("start").code == 0
    bench.host.fail(["ip", "route", "replace", "default"], nth=1, rc=2,
                    stderr="RTNETLINK answers: Operation not permitted")
    ran = bench.cli("stop")
    assert ran.code == 0
    assert "Operation not permitted" in ran.err
    assert [r["via"] for r in bench.host.default_routes()] == [GATEWAY]
    assert bench.state()["route"]["previous"]["via"] == OLD_GATEWAY
    bench.host.clear_failures()
    assert bench.cli("stop").code == 0
    assert [(r["via"], r["dev"]) for r in bench.host.default_routes()] == [
        (OLD_GATEWAY, "eth0")]
    assert not bench.state_file.exists()


def test_service_gone_from_kernel_and_config_is_forgotten(tmp_path: Path) -> None:
    bench = Bench(tmp_path, "director")
    assert bench.cli("start").code == 0
    bench.host.ipvsadm("-D", "-u", "192.168.30.253:53")  # someone deleted it by hand
    assert bench.cli("reload", "--no-drain", config="b").code == 0
    assert "udp 192.168.30.253:53" not in bench.state()["services"]
    # keepalived (say) now creates a service with that key: it is not ours to delete.
    bench.host.ipvsadm("-A", "-u", "192.168.30.253:53", "-s", "rr")
    assert bench.cli("stop", config="b").code == 0
    assert "-A -u 192.168.30.253:53 -s rr" in bench.host.ipvs_save()


def test_vip_gone_from_host_and_config_is_forgotten(tmp_path: Path) -> None:
    bench = Bench(tmp_path, "director")
    assert bench.cli("start").code == 0
    bench.host.del_address("eth0", "192.168.30.253/32")  # someone removed it by hand
    assert bench.cli("reload", "--no-drain", config="b").code == 0
    assert ["eth0", "192.168.30.253/32"] not in bench.state()["addresses"]
    bench.host.add_address("eth0", "192.168.30.253/32")  # now someone else's address
    assert bench.cli("stop", config="b").code == 0
    assert "192.168.30.253/32" in bench.host.addresses("eth0")


@pytest.mark.parametrize("name", ["director reload", "realserver start"])
def test_in_process_runner_issues_what_the_real_cli_issues(name: str, tmp_path: Path) -> None:
    """The matrix runs the executor in process; the real CLI (bin/, a subprocess, plumbum,
    the fake executables) must issue the same commands with the same input. Two actions
    cover every kind of command: ip, sysctl, ipvsadm -R with every kind of rule, arping."""
    if os.geteuid() != 0:
        pytest.skip("real runs exit 4 without root")
    action = ACTION[name]
    inside = Bench(tmp_path / "in", action.role)
    prepare(inside, action)
    inside.host.clear_calls()
    assert inside.cli(*action.args, config=action.config).code == 0
    outside = Bench(tmp_path / "out", action.role)
    prepare(outside, action)
    outside.host.clear_calls()
    env = {**outside.host.env, "LVS_STATE_DIR": str(outside.state_dir),
           "LVS_LOCK_DIR": str(outside.lock_dir), "LVS_SYSLOG": "0"}
    argv = [str(ROOT / "bin" / outside.tool), "-c", str(outside.configs[action.config]),
            *action.args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                          timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    assert [(c["argv"], c["stdin"]) for c in outside.host.calls()] == [
        (c["argv"], c["stdin"]) for c in inside.host.calls()]
    assert outside.state() == inside.state()


def test_steps_covered_per_action() -> None:
    """The total the matrix covers, printed (pytest -s) and checked against the plans."""
    total = 0
    lines = []
    for name, base in baselines().items():
        required = sum(1 for p in base.points if p.kind in ("command", "batch", "line"))
        extra = sum(1 for p in base.points if p.kind == "optional")
        rules = sum(len(batch) for batch in base.batches)
        lines.append(f"  {name:<17} {required:>3} steps ({len(base.batches)} batches with "
                     f"{rules} lines) + {extra} optional")
        assert (required, extra) == EXPECTED_STEPS[name], name
        total += required + extra
    print("\nfault points per action:\n" + "\n".join(lines) + f"\n  total: {total}")
    assert total == sum(a + b for a, b in EXPECTED_STEPS.values()) == 52
