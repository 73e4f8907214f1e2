"""Side by side on a real IPVS kernel (lab VM only): ours, keepalived and the seed's style,
on the same table, in one run. Prints a table; asserts nothing.

    python -m lab run --vm-timeout 3000 -- .venv/bin/python bench/bench_lab.py
    python -m lab run -- .venv/bin/python bench/bench_lab.py --sizes 100,1000   # a short run

The table: 1 service x N real servers up to 10,000; above that services of 100 real servers
each (100,000 = 1,000 services x 100). Real servers are distinct addresses in 10.100.0.0/14,
routed through a veth pair to a namespace where they are all local and a listener answers on
port 80, so that the watcher's tcp checks pass without the director owning them (a local
address would turn an IPVS real server into "Local" forwarding).

For each size, each contender starts from an IPVS of its own, in a new network namespace
(DirectorNetns: the kernel's trash of deleted real servers slows the next start for minutes):
- the seed's style: one `ipvsadm` per rule from a shell (at --script-max and below; above,
  projected from the rate measured at the largest size run);
- keepalived (Debian's 2.2.7), LVS only: `-C` (the checker process only, no VRRP) `-n`, its
  real_server entries without a check (keepalived counts those as up): start until the
  kernel has every real server, SIGHUP after one weight changed until the kernel shows it,
  SIGTERM until keepalived has exited and its rules are gone;
- ours: `lvs-director start`, `reload` after one weight changed, then `lvs-director watch`
  (until it says READY=1) and SIGHUP after another weight changed until the kernel shows it,
  `status` (exit 0 expected), `stop`. CLI calls are timed from the command to its exit.

"Until the kernel shows it" polls /proc/net/ip_vs (the table `ipvsadm -S -n` prints, read
without starting a program, which would count as a process and cost 0.1-0.3 s here), every
50 ms or as often as reading it costs. After each step the whole table is compared with the
expected one through `ipvsadm -S -n`, outside the time. "processes" is the difference of
/proc/stat's `processes` (every task the kernel created: processes and threads; the VM runs
nothing else). Peak RSS: ru_maxrss of the CLI (os.wait4), VmHWM of the watcher and of
keepalived's processes (parent, checker child) read before they are stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from bench import ROOT, VIP, reals, require_lab, run_seed_script, sh

DIRECTOR = ROOT / ".venv" / "bin" / "lvs-director"
PORT = 80
SINGLE_MAX = 10_000  # up to this many real servers: one service; above: services of 100
PER_SERVICE = 100
REAL_NET = "10.100.0.0/14"  # reals() counts up from 10.100.0.1: room for 262,000
LINK = ("172.31.255.1", "172.31.255.2")  # bench0 (the director) and bench1 (the reals)
REALS_NS = "benchrs"
POLL = 0.05  # seconds between two reads of /proc/net/ip_vs, at least
Rule = tuple[str, str, int]  # ("VIP:PORT", "RIP:PORT", weight)
Weights = Mapping[str, int]  # real server address -> weight; absent: 1

# The real servers' side: every address of REAL_NET is local in REALS_NS; this accepts
# and closes, so a tcp check succeeds. It ends with the VM (or when its stdin closes).
LISTENER = f"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {PORT})); s.listen(4096)
def serve():
    while True:
        c, _ = s.accept(); c.close()
threading.Thread(target=serve, daemon=True).start()
print("listening", flush=True)
sys.stdin.read()
"""


# --- the table, and what each contender is given ----------------------------------------------

@dataclass(frozen=True)
class Service:
    vip: str
    reals: tuple[str, ...]


def vips(count: int) -> list[str]:
    """10.200.0.1, 10.200.0.2, ... (bench.VIP first)."""
    first = [int(part) for part in VIP.split(".")]
    base = (first[2] << 8) + first[3]
    return [f"10.200.{(base + i) >> 8}.{(base + i) & 255}" for i in range(count)]


def bench_table(count: int) -> list[Service]:
    """1 service x count up to SINGLE_MAX, else count / PER_SERVICE services of PER_SERVICE."""
    addresses = reals(count)
    if count <= SINGLE_MAX:
        return [Service(VIP, tuple(addresses))]
    if count % PER_SERVICE:
        raise ValueError(f"{count} real servers: above {SINGLE_MAX} a size must be a multiple "
                         f"of {PER_SERVICE} (services of {PER_SERVICE})")
    return [Service(vip, tuple(addresses[i * PER_SERVICE:(i + 1) * PER_SERVICE]))
            for i, vip in enumerate(vips(count // PER_SERVICE))]


def expected_rules(services: Sequence[Service], weights: Weights) -> set[Rule]:
    return {(f"{s.vip}:{PORT}", f"{rip}:{PORT}", weights.get(rip, 1))
            for s in services for rip in s.reals}


def ours_config(services: Sequence[Service], weights: Weights, interface: str = "bench0") -> str:
    """lvs.toml: each service with a tcp check that passes; its interval of a day puts the
    first check of each real server at a random point of that day, so the checks cost the
    watcher its set-up and almost no checking during the run (this measures the reload)."""
    parts = [f'[director]\ninterface = "{interface}"\narping_count = 0\n']
    for service in services:
        entries = "".join(f'{{address="{rip}",weight={weights.get(rip, 1)}}},\n'
                          for rip in service.reals)
        parts.append(f'[[service]]\nvip = "{service.vip}"\nport = {PORT}\nscheduler = "wrr"\n'
                     f'real = [\n{entries}]\n[service.check]\ntype = "tcp"\n'
                     'interval = 86400\ntimeout = 5\n')
    return "\n".join(parts)


def keepalived_config(services: Sequence[Service], weights: Weights) -> str:
    """keepalived.conf(5): the same services, LVS only. No vrrp_instance (and -C at start:
    the VRRP process is not even started); real_server entries without a checker, which
    keepalived keeps in the table as up."""
    parts = ["global_defs {\n    router_id lvs_bench\n}\n"]
    for service in services:
        reals_text = "".join(f"    real_server {rip} {PORT} {{\n        weight "
                             f"{weights.get(rip, 1)}\n    }}\n" for rip in service.reals)
        parts.append(f"virtual_server {service.vip} {PORT} {{\n    lb_algo wrr\n"
                     f"    lb_kind DR\n    protocol TCP\n{reals_text}}}\n")
    return "".join(parts)


def seed_lines(services: Sequence[Service]) -> list[str]:
    """The seed's init script: `ipvsadm -A` per service, `ipvsadm -a` per real server."""
    lines: list[str] = []
    for s in services:
        lines.append(f"ipvsadm -A -t {s.vip}:{PORT} -s wrr")
        lines += [f"ipvsadm -a -t {s.vip}:{PORT} -r {rip}:{PORT} -g -w 1" for rip in s.reals]
    return lines


def save_rules(text: str) -> set[Rule]:
    """The (service, real server, weight) of `ipvsadm -S -n` (or of the seed's lines, the
    same options after `ipvsadm`); other lines and options are not compared."""
    rules: set[Rule] = set()
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["ipvsadm"]:
            words = words[1:]
        if words[:1] == ["-a"] and "-r" in words:
            weight = int(words[words.index("-w") + 1]) if "-w" in words else 1
            rules.add((words[2], words[words.index("-r") + 1], weight))
    return rules


# --- small readings of the kernel ---------------------------------------------------------------

def tasks_created(stat: str) -> int:
    """/proc/stat's `processes`: every task created since boot (fork/clone, threads too)."""
    for line in stat.splitlines():
        if line.startswith("processes "):
            return int(line.split()[1])
    raise ValueError("/proc/stat has no 'processes' line")


def read_tasks() -> int:
    return tasks_created(Path("/proc/stat").read_text())


def vm_hwm_kb(status: str) -> int | None:
    """VmHWM (peak resident set, kB) of /proc/PID/status."""
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else None


def hwm_of(pid: int) -> int | None:
    try:
        return vm_hwm_kb(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def hex_endpoint(address: str, port: int) -> bytes:
    """How /proc/net/ip_vs writes an IPv4 address:port (Linux ip_vs_info_seq_show)."""
    a, b, c, d = (int(part) for part in address.split("."))
    return f"{a:02X}{b:02X}{c:02X}{d:02X}:{port:04X}".encode()


def listed_reals(listing: bytes) -> int:
    """Real servers in /proc/net/ip_vs: its "  -> " lines but the column header's."""
    return listing.count(b"\n  -> ") - listing.count(b"\n  -> RemoteAddress")


def listed_weight(listing: bytes, real: str, port: int = PORT) -> int | None:
    """The weight /proc/net/ip_vs shows for a real server (addresses are unique here)."""
    at = listing.find(b"  -> " + hex_endpoint(real, port) + b" ")
    if at < 0:
        return None
    words = listing[at:listing.find(b"\n", at)].split()
    return int(words[3])  # ->, address:port, forward, weight


def read_listing() -> bytes:
    with open("/proc/net/ip_vs", "rb") as handle:
        return handle.read()


# --- formatting -----------------------------------------------------------------------------

def ratio(ours: float | None, theirs: float | None) -> str:
    """ours / keepalived's time, "-" where either is missing."""
    if ours is None or not theirs:
        return "-"
    return f"{ours / theirs:.2f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def megabytes(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f}"


def projected(rate: float, rules: int, measured_at: int) -> str:
    return f"not run (projected {rate * rules:,.0f} s from the {measured_at:,} rate)"


# --- steps ----------------------------------------------------------------------------------

class StepFailed(Exception):
    """A step did not do what it should: timed out, failed, or left a wrong table."""


@dataclass
class Row:
    size: int
    step: str
    who: str
    time: float | None = None
    tasks: int | None = None
    rss_kb: int | None = None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    header = ("real servers", "step", "who", "s", "/ keepalived", "processes",
              "peak RSS MB", "note")

    def keepalived_time(self, size: int, step: str) -> float | None:
        return next((r.time for r in self.rows
                     if r.size == size and r.step == step and r.who == "keepalived"), None)

    def line(self, row: Row) -> str:
        theirs = self.keepalived_time(row.size, row.step)
        cells = (f"{row.size:,}" if row.size else "-", row.step, row.who, seconds(row.time),
                 "-" if row.who == "keepalived" else ratio(row.time, theirs),
                 "-" if row.tasks is None else str(row.tasks), megabytes(row.rss_kb), row.note)
        return "| " + " | ".join(cells) + " |"

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(self.line(row), flush=True)
        return row


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll check() (each costs a read of the kernel's table) until true; never sleeps less
    than a read costs, so the polling takes at most half a CPU from what is measured."""
    deadline = time.perf_counter() + timeout
    while True:
        started = time.perf_counter()
        if check():
            return
        cost = time.perf_counter() - started
        if started > deadline:
            raise StepFailed(f"{what}: did not finish in {timeout:.0f} s")
        time.sleep(max(POLL, cost))


def run_timed(argv: Sequence[str], env: Mapping[str, str], timeout: float, log: Path,
              row: Row) -> int:
    """Run a command to its end: wall time, tasks created, ru_maxrss into row; its exit
    code. Killed at the timeout (reported, never waited for longer)."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        started_process: list[subprocess.Popen[bytes]] = []

        def kill() -> None:
            for late in started_process:
                late.kill()

        killer = threading.Timer(timeout, kill)
        killer.start()  # before the count: its thread is not the command's
        before = read_tasks()
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=dict(env), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=out)
        started_process.append(process)
        _pid, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        killer.cancel()
    process.returncode = code = os.waitstatus_to_exitcode(status)
    row.time, row.tasks, row.rss_kb = elapsed, read_tasks() - before, usage.ru_maxrss
    if elapsed >= timeout:
        raise StepFailed(f"did not finish in {timeout:.0f} s")
    return code


def table_now() -> set[Rule]:
    done = subprocess.run(["ipvsadm", "-S", "-n"], capture_output=True, text=True, check=True)
    return save_rules(done.stdout)


def check_table(expected: set[Rule], timeout: float, what: str) -> None:
    """The whole table, through `ipvsadm -S -n` (outside the times): exactly `expected`."""
    deadline = time.perf_counter() + timeout
    while True:
        actual = table_now()
        if actual == expected:
            return
        if time.perf_counter() > deadline:
            missing, extra = expected - actual, actual - expected
            raise StepFailed(f"{what}: table wrong: {len(missing)} rule(s) missing "
                             f"(e.g. {sorted(missing)[:1]}), {len(extra)} extra "
                             f"(e.g. {sorted(extra)[:1]})")
        time.sleep(0.5)


def clean_table() -> None:
    sh("ipvsadm", "-C")


@contextlib.contextmanager
def step(report: Report, row: Row) -> Iterator[Row]:
    """A row, printed when its step ends; a failure is the row's note and ends this
    contender's run at this size (the next steps need this one)."""
    try:
        yield row
    except (StepFailed, subprocess.CalledProcessError, OSError) as err:
        row.note = (row.note + "; " if row.note else "") + f"FAILED: {err}"
        report.add(row)
        raise
    report.add(row)


# --- the contenders -------------------------------------------------------------------------

@dataclass
class Run:
    size: int
    services: list[Service]
    tmp: Path
    logs: Path
    timeout: float
    report: Report
    stop_timeout: float  # keepalived's stop: one real server at a time, minutes at 10,000
    watcher: bool = True
    director: Path = DIRECTOR  # ours: the venv's, or the installed package's (--installed)
    netns: DirectorNetns = field(default_factory=lambda: DirectorNetns())  # noqa: PLW0108 - defined below

    def row(self, step_name: str, who: str) -> Row:
        return Row(self.size, step_name, who)

    @property
    def changed(self) -> tuple[str, str, str]:
        """The real servers whose weight each reload changes: the CLI's the middle one, the
        watcher's SIGHUP the last, `reload --via-watcher` the one at a quarter."""
        addresses = [rip for s in self.services for rip in s.reals]
        return addresses[len(addresses) // 2], addresses[-1], addresses[len(addresses) // 4]


def seed_run(run: Run, script_max: int, rate: list[tuple[float, int]]) -> None:
    lines = seed_lines(run.services)
    row = run.row("start", "seed script")
    if run.size > script_max:
        if rate:
            per_rule, measured_at = rate[-1]
            row.note = projected(per_rule, len(lines), measured_at)
        else:
            row.note = f"not run (above --script-max {script_max})"
        run.report.add(row)
        return
    run.netns.fresh()  # an IPVS of its own (DirectorNetns)
    try:
        with step(run.report, row):
            before = read_tasks()
            row.time = run_seed_script(lines)
            row.tasks = read_tasks() - before
            check_table(expected_rules(run.services, {}), run.timeout, "seed start")
        rate.append((row.time / len(lines), run.size))
    except (StepFailed, subprocess.CalledProcessError, OSError):
        pass  # in the row's note
    finally:
        clean_table()


def keepalived_run(run: Run) -> None:
    run.netns.fresh()  # an IPVS of its own (DirectorNetns)
    conf = run.tmp / "keepalived.conf"
    conf.write_text(keepalived_config(run.services, {}))
    # No -l (log to the console too): as installed, it logs to syslog, which the VM has
    # not; its console lines (one per real server at stop) would cost it the serial line.
    argv = ["keepalived", "-C", "-n", "-f", str(conf), "-p", str(run.tmp / "k.pid"),
            "-c", str(run.tmp / "k-checkers.pid"), "-r", str(run.tmp / "k-vrrp.pid")]
    launched: list[subprocess.Popen[bytes]] = []
    with open(run.logs / f"keepalived-{run.size}.log", "ab") as log:
        try:
            keepalived_steps(run, argv, conf, log, launched)
        except (StepFailed, subprocess.CalledProcessError, OSError):
            pass  # in the row's note
        finally:
            for process in launched:  # what a failed step left running
                if process.poll() is None:
                    process.kill()
                    process.wait()
            clean_table()


def keepalived_steps(run: Run, argv: list[str], conf: Path, log: BinaryIO,
                     launched: list[subprocess.Popen[bytes]]) -> None:
    total = sum(len(s.reals) for s in run.services)
    first = run.changed[0]
    with step(run.report, run.row("start", "keepalived")) as row:
        before = read_tasks()
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        launched.append(process)
        wait_until(lambda: listed_reals(read_listing()) >= total or process.poll() is not None,
                   run.timeout, "keepalived start")
        row.time, row.tasks = time.perf_counter() - started, read_tasks() - before
        if process.poll() is not None:
            raise StepFailed(f"keepalived exited ({process.returncode})")
        check_table(expected_rules(run.services, {}), run.timeout, "keepalived start")
    with step(run.report, run.row("reload 1 weight", "keepalived")) as row:
        weights = {first: 3}
        conf.write_text(keepalived_config(run.services, weights))
        before = read_tasks()
        started = time.perf_counter()
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: listed_weight(read_listing(), first) == 3 or
                   process.poll() is not None, run.timeout, "keepalived reload")
        row.time, row.tasks = time.perf_counter() - started, read_tasks() - before
        if process.poll() is not None:
            raise StepFailed(f"keepalived exited ({process.returncode}) on SIGHUP")
        check_table(expected_rules(run.services, weights), run.timeout, "keepalived reload")
        row.rss_kb, row.note = keepalived_memory(process.pid, run.tmp / "k-checkers.pid")
    none = run.row("status", "keepalived")
    none.note = "keepalived has no status"
    run.report.add(none)
    with step(run.report, run.row("stop", "keepalived")) as row:
        before = read_tasks()
        started = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        try:
            wait_until(lambda: process.poll() is not None, run.stop_timeout,
                       "keepalived stop")
        except StepFailed as err:  # how far it got says whether it was stuck or slow
            raise StepFailed(f"{err}; {total - listed_reals(read_listing()):,} of {total:,} "
                             "real servers removed by then") from None
        row.time, row.tasks = time.perf_counter() - started, read_tasks() - before
        row.note = f"exit {process.returncode}"
        left = listed_reals(read_listing())
        if left:  # it has exited: nothing will remove them now
            raise StepFailed(f"exited, leaving {left:,} real servers in the table")


def keepalived_memory(parent: int, checkers_pidfile: Path) -> tuple[int | None, str]:
    """The larger VmHWM of keepalived's two processes (each reads the whole config), and
    both in words."""
    try:
        child: int | None = int(checkers_pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        child = None
    peaks = {"parent": hwm_of(parent), "checker": hwm_of(child) if child else None}
    known = [kb for kb in peaks.values() if kb is not None]
    return (max(known) if known else None,
            "VmHWM " + ", ".join(f"{who} {megabytes(kb)} MB" for who, kb in peaks.items()))


class Ready:
    """$NOTIFY_SOCKET for the watcher: READY=1 says its first apply is done."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def wait(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        self.sock.settimeout(1.0)
        while time.perf_counter() < deadline:
            with contextlib.suppress(socket.timeout):
                if b"READY=1" in self.sock.recv(4096):
                    return
            if process.poll() is not None:
                raise StepFailed(f"the watcher exited ({process.returncode}) before READY=1")
        raise StepFailed(f"watcher READY=1: did not finish in {timeout:.0f} s")

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def ours_run(run: Run) -> None:
    run.netns.fresh()  # an IPVS of its own (DirectorNetns)
    conf = run.tmp / "lvs.toml"
    env = dict(os.environ, LVS_STATE_DIR=str(run.tmp / "state"),
               LVS_LOCK_DIR=str(run.tmp / "lock"), LVS_SYSLOG="0")
    try:
        ours_steps(run, conf, env)
    except (StepFailed, subprocess.CalledProcessError, OSError):
        pass  # in the row's note
    finally:
        clean_table()


def ours_steps(run: Run, conf: Path, env: dict[str, str]) -> None:
    cli = [str(run.director), "-c", str(conf)]
    log = run.logs / f"ours-{run.size}.log"
    first, second, third = run.changed
    conf.write_text(ours_config(run.services, {}))
    for action, weights in (("start", {}), ("reload", {first: 3})):
        with step(run.report, run.row("start" if action == "start" else "reload 1 weight",
                                      "ours (CLI)")) as row:
            conf.write_text(ours_config(run.services, weights))
            code = run_timed([*cli, action], env, run.timeout, log, row)
            if code != 0:
                raise StepFailed(f"exit {code}")
            check_table(expected_rules(run.services, weights), run.timeout, f"ours {action}")
    if run.watcher:
        with contextlib.suppress(StepFailed, OSError):  # in its row; status and stop go on
            watcher_steps(run, cli, conf, env, {first: 3, second: 5},
                          {first: 3, second: 5, third: 7})
    with step(run.report, run.row("status", "ours (CLI)")) as row:
        code = run_timed([*cli, "status"], env, run.timeout, log, row)
        row.note = f"exit {code}"
        if code != 0:
            raise StepFailed("not 0 (running as configured)")
    with step(run.report, run.row("stop", "ours (CLI)")) as row:
        code = run_timed([*cli, "stop"], env, run.timeout, log, row)
        if code != 0:
            raise StepFailed(f"exit {code}")
        check_table(set(), run.timeout, "ours stop")


def reload_lines(log: Path) -> int:
    """How many reloads the watcher has logged as done (or failed): `watch: reload: ...`."""
    return log.read_bytes().count(b"watch: reload: ")


def last_reload_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if "watch: reload: " in line]
    return lines[-1].split("watch: reload: ", 1)[1] if lines else "(no line)"


def via_watcher() -> bool:
    """Whether this checkout's CLI has `reload --via-watcher` (issue 14's reload through the
    watcher, branch wip-hup): its rows are left out where it has not."""
    return "--via-watcher" in (ROOT / "lvs_scripts" / "cli.py").read_text()


def watcher_steps(run: Run, cli: list[str], conf: Path, env: dict[str, str],
                  weights: dict[str, int], via_weights: dict[str, int]) -> None:
    """`lvs-director watch` until READY=1, then one weight changed and SIGHUP; then
    another changed and `lvs-director reload --via-watcher` where the CLI has it."""
    ready = Ready(run.tmp / "notify")
    log_path = run.logs / f"watch-{run.size}.log"
    log = open(log_path, "ab")  # closed in finally
    process: subprocess.Popen[bytes] | None = None
    try:
        with step(run.report, run.row("watcher up (READY=1)", "ours (watch)")) as row:
            before = read_tasks()
            started = time.perf_counter()
            process = subprocess.Popen([*cli, "watch"], env=dict(env, NOTIFY_SOCKET=ready.path),
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            ready.wait(process, run.timeout)
            row.time, row.tasks = time.perf_counter() - started, read_tasks() - before
            row.rss_kb = hwm_of(process.pid)
        with step(run.report, run.row("reload 1 weight", "ours (watch SIGHUP)")) as row:
            conf.write_text(ours_config(run.services, weights))
            changed = list(weights)[-1]
            watched = process
            reloads = reload_lines(log_path)
            before = read_tasks()
            started = time.perf_counter()
            watched.send_signal(signal.SIGHUP)
            wait_until(lambda: listed_weight(read_listing(), changed) == weights[changed] or
                       watched.poll() is not None or reload_lines(log_path) > reloads,
                       run.timeout, "watcher reload")
            row.time, row.tasks = time.perf_counter() - started, read_tasks() - before
            if watched.poll() is not None:
                raise StepFailed(f"the watcher exited ({watched.returncode}) on SIGHUP")
            if listed_weight(read_listing(), changed) != weights[changed]:
                raise StepFailed("the watcher's reload failed: " + last_reload_line(log_path))
            if via_watcher():  # a full reload, which checks the kernel after: wait for it
                wait_until(lambda: reload_lines(log_path) > reloads, run.timeout,
                           "the watcher's reload line")
                row.note = (f"its reload done, its check included, after "
                            f"{time.perf_counter() - started:.2f} s (its log line)")
            row.rss_kb = hwm_of(watched.pid)
            check_table(expected_rules(run.services, weights), run.timeout, "watcher reload")
        if via_watcher():
            via_watcher_step(run, cli, conf, env, via_weights, process.pid)
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=run.timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        ready.close()


def via_watcher_step(run: Run, cli: list[str], conf: Path, env: dict[str, str],
                     weights: dict[str, int], watcher: int) -> None:
    """`lvs-director reload --via-watcher`: the CLI signals the watcher and waits for it."""
    with step(run.report, run.row("reload 1 weight", "ours (CLI --via-watcher)")) as row:
        conf.write_text(ours_config(run.services, weights))
        code = run_timed([*cli, "--wait", str(int(run.timeout)), "--via-watcher", "reload"],
                         env, run.timeout, run.logs / f"ours-{run.size}.log", row)
        if code != 0:
            raise StepFailed(f"exit {code}")
        check_table(expected_rules(run.services, weights), run.timeout, "reload --via-watcher")
        row.note = f"the watcher's VmHWM {megabytes(hwm_of(watcher))} MB"


# --- the run --------------------------------------------------------------------------------

def reals_network() -> subprocess.Popen[str]:
    """REALS_NS, where every address of REAL_NET is local and LISTENER accepts on port 80;
    each contender's director reaches it through a veth pair of its own (DirectorNetns)."""
    sh("ip", "netns", "add", REALS_NS)
    for argv in (["ip", "link", "set", "lo", "up"],
                 ["ip", "route", "add", "local", REAL_NET, "dev", "lo"]):
        sh("ip", "netns", "exec", REALS_NS, *argv)
    listener = subprocess.Popen(["ip", "netns", "exec", REALS_NS, sys.executable, "-c",
                                 LISTENER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
    assert listener.stdout is not None  # noqa: S101 - PIPE above
    if listener.stdout.readline().strip() != "listening":
        raise SystemExit("the real servers' listener did not start")
    return listener


CLONE_NEWNET = 0x40000000


def setns(fd: int) -> None:
    """setns(2) into a network namespace (os.setns is Python 3.12's)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), "setns")


class DirectorNetns:
    """Each contender, at each size, on an IPVS of its own: a new network namespace (IPVS
    keeps its state per namespace) that this process enters, so that every program it
    starts and every read of /proc/net/ip_vs is there. The kernel keeps a deleted real
    server in a trash list for two to three minutes (ip_vs_ctl.c's dest_trash), and every
    real server added meanwhile walks that list: a start of 100,000 right after a stop of
    100,000 took 223.5 s against 56.8 s on an empty list (same CLI, same table), which
    favoured whichever contender ran first."""

    def __init__(self) -> None:
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.count = 0
        self.current: str | None = None

    def fresh(self) -> None:
        """bench0 (LINK[0]) in a new namespace, its peer (LINK[1]) in REALS_NS, and the
        route to REAL_NET through it; then the whole path checked as a tcp check does."""
        self.leave()
        self.count += 1
        name, peer = f"benchdir{self.count}", f"benchrs{self.count}"
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", "bench0", "netns", name, "type", "veth", "peer", "name", peer,
           "netns", REALS_NS)
        for argv in (["addr", "add", f"{LINK[1]}/30", "dev", peer], ["link", "set", peer, "up"]):
            sh("ip", "-n", REALS_NS, *argv)
        for argv in (["link", "set", "lo", "up"], ["link", "set", "bench0", "up"],
                     ["addr", "add", f"{LINK[0]}/30", "dev", "bench0"],
                     ["route", "add", REAL_NET, "via", LINK[1]]):
            sh("ip", "-n", name, *argv)
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            setns(fd)
        finally:
            os.close(fd)
        self.current = name
        with socket.create_connection((reals(1)[0], PORT), timeout=10):
            pass

    def leave(self) -> None:
        """Back home; the namespace and its veth pair go (its IPVS table with it)."""
        if self.current is None:
            return
        setns(self.home)
        sh("ip", "-n", self.current, "link", "del", "bench0")
        sh("ip", "netns", "del", self.current)
        self.current = None


INSTALLED = Path("/usr/sbin/lvs-director")


def install(deb: Path) -> Path:
    """apt-get install the package in the guest, as an administrator would (offline: the
    lab's set-up installed its dependencies on the host, whose root the guest shares)."""
    done = subprocess.run(["apt-get", "install", "-y", "-q", str(deb.resolve())],
                          capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C",
                               "DEBIAN_FRONTEND": "noninteractive"})
    if done.returncode != 0:
        sys.exit(f"apt-get install {deb} failed:\n{done.stdout}{done.stderr}")
    return INSTALLED


def cli_startup(report: Report, runs: int, timeout: float, logs: Path,
                director: Path = DIRECTOR) -> None:
    """`lvs-director --help`: Python, plumbum and our imports, nothing else. The first
    call also reads the files over 9p for the first time; the row is the fastest."""
    rows = []
    for _ in range(runs):
        row = Row(0, "CLI start-up (--help)", "ours (CLI)")
        run_timed([str(director), "--help"], os.environ, timeout, logs / "help.log", row)
        rows.append(row)
    best = min(rows, key=lambda r: r.time or 0.0)
    best.note = f"fastest of {runs}: " + ", ".join(seconds(r.time) for r in rows)
    report.add(best)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000",
                        help="real servers, comma-separated (above 10,000: services of 100)")
    parser.add_argument("--script-max", type=int, default=1000,
                        help="largest size run in the seed's one-ipvsadm-per-rule style")
    parser.add_argument("--step-timeout", type=float, default=600,
                        help="seconds a step may take before it is reported as not finished")
    parser.add_argument("--keepalived-stop-timeout", type=float, default=180,
                        help="seconds keepalived's stop may take (it removes one real server "
                        "at a time: the row then says how far it got)")
    parser.add_argument("--contenders", default="seed,keepalived,ours",
                        help="which to run, comma-separated (a short run of one of them)")
    parser.add_argument("--no-watcher", action="store_true",
                        help="ours through the CLI only (a short run)")
    parser.add_argument("--cli-runs", type=int, default=3, help="runs of `lvs-director --help`")
    parser.add_argument("--installed", metavar="DEB", type=Path,
                        help="ours as an administrator runs it: this package (make deb) "
                        "installed with apt-get in the guest (its root is a throw-away "
                        "overlay), /usr/sbin/lvs-director on Debian's python3; without it, "
                        "the checkout's venv (an editable install, whose import hook costs "
                        "every CLI call its own imports)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    contenders = set(args.contenders.split(","))
    if not contenders <= {"seed", "keepalived", "ours"}:
        parser.error(f"--contenders: {args.contenders}: only seed, keepalived, ours")
    for size in sizes:
        bench_table(size)  # a bad size is refused before anything runs
    require_lab("bench_lab.py")
    director = install(args.installed) if args.installed else DIRECTOR
    if not director.exists():
        sys.exit(f"{director} not found: make venv first")
    keepalived = subprocess.run(["keepalived", "--version"], capture_output=True, text=True,
                                check=False)
    logs = Path(os.environ.get("LAB_RESULTS") or tempfile.mkdtemp(prefix="bench-lab-logs."))
    print(f"lvs_scripts side-by-side benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} "
          f"UTC, {platform.node()}, kernel {platform.release()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, "
          f"{(keepalived.stdout + keepalived.stderr).splitlines()[0]}, "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') >> 20} MB RAM; "
          f"ours: {director}" + (f" ({args.installed.name})" if args.installed else ""))
    listener = reals_network()
    netns = DirectorNetns()
    report = Report()
    print("\n| " + " | ".join(report.header) + " |")
    print("|" + "|".join(" --- " for _ in report.header) + "|", flush=True)
    started = time.perf_counter()
    try:
        if args.cli_runs > 0:
            cli_startup(report, args.cli_runs, args.step_timeout, logs, director)
        rate: list[tuple[float, int]] = []
        for size in sizes:
            with tempfile.TemporaryDirectory(prefix=f"bench-lab-{size}.") as tmp:
                run = Run(size, bench_table(size), Path(tmp), logs, args.step_timeout, report,
                          args.keepalived_stop_timeout, not args.no_watcher, director, netns)
                if "seed" in contenders:
                    seed_run(run, args.script_max, rate)
                if "keepalived" in contenders:
                    keepalived_run(run)
                if "ours" in contenders:
                    ours_run(run)
    finally:
        netns.leave()
        listener.kill()
        listener.wait()
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s; logs in {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
