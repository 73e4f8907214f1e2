"""Reload of one weight through the running watcher, against the fake host: it prints
figures; nothing here asserts a time.

    python bench/bench_hup.py [--sizes 1000,10000] [--runs 3]

For each size: `lvs-director start` (the CLI, fake tools of tests/fakes), then `lvs-director
watch` as a process (no checks: the kernel side alone, as keepalived runs in issue 14's
table), then per run: one weight edited in the config file, SIGHUP to the pid in the
watcher's own pid file (`$LVS_STATE_DIR/lvs-director.watch.pid`), and the time until the
weight shows in the table, read as `ipvsadm -S -n` prints it (the fake's save text, read in
this process, which starts no program). For comparison, the same edit through the CLI's
`lvs-director reload` (a new Python process) and through `lvs-director reload
--via-watcher` (a new process that signals the watcher and waits for its result).

The lab's side-by-side benchmark drives the real kernel the same way: SIGHUP to that pid,
then poll `ipvsadm -S -n` in the director's namespace until the weight shows.

The fake tools are Python programs that load and save a JSON machine per call, so each
program start here costs far more than the real ipvsadm's; compare rows, not seconds.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VIP = "10.200.0.1"
DIRECTOR = str(ROOT / "bin" / "lvs-director")
DEADLINE = 600.0  # seconds: a bound on every wait, not a measure


def reals(count: int) -> list[str]:
    base = ipaddress.ip_address("10.100.0.1")
    return [str(base + index) for index in range(count)]


def config_text(count: int) -> str:
    """One wrr service, `count` real servers at weight 1 (bench.py's table)."""
    lines = ['[director]\ninterface = "eth0"\narping_count = 0\n',
             f'[[service]]\nvip = "{VIP}"\nport = 80\nscheduler = "wrr"\nreal = [']
    lines += [f'  {{ address = "{address}", weight = 1 }},' for address in reals(count)]
    lines.append("]\n")
    return "\n".join(lines)


def weight_of(save: str, address: str) -> int | None:
    for line in save.splitlines():
        words = line.split()
        if words[:2] == ["-a", "-t"] and words[4] == f"{address}:80":
            return int(words[words.index("-w") + 1])
    return None


def until(condition: object, what: str, poll: float = 0.005) -> float:
    """Wait for a condition; the monotonic time it was first seen to hold."""
    deadline = time.monotonic() + DEADLINE
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_hup: timed out waiting for {what}")
        time.sleep(poll)
    return time.monotonic()


class Bench:
    """One fake director with `count` real servers, its config and its watcher."""

    def __init__(self, tmp: Path, count: int) -> None:
        from tests.fakes.fakehost import FakeHost

        self.host = FakeHost(tmp / "host")
        self.host.set_ipvs("loaded")
        self.config = tmp / "lvs.toml"
        self.text = config_text(count)
        self.config.write_text(self.text)
        self.state_dir = tmp / "state"
        # LVS_TEST_PROC_IP_VS: a missing file, so that the table is the fake's, never a
        # real kernel's /proc/net/ip_vs.
        self.env = {**self.host.env, "LVS_STATE_DIR": str(self.state_dir),
                    "LVS_LOCK_DIR": str(tmp / "lock"), "LVS_SYSLOG": "0",
                    "LVS_TEST_PROC_IP_VS": str(tmp / "no-ip_vs"), "PYTHONPATH": str(ROOT)}
        self.address = reals(count)[count // 2]
        self.weight = 1
        self.watcher: subprocess.Popen[bytes] | None = None
        self._seen = 0

    def cli(self, *args: str) -> float:
        started = time.monotonic()
        done = subprocess.run([DIRECTOR, "-c", str(self.config), *args], env=self.env,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"bench_hup: lvs-director {' '.join(args)}: exit "
                             f"{done.returncode}: {done.stderr}")
        return time.monotonic() - started

    def watch(self) -> float:
        pid_file = self.state_dir / "lvs-director.watch.pid"
        started = time.monotonic()
        self.watcher = subprocess.Popen([DIRECTOR, "-c", str(self.config), "watch"],
                                        env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        until(pid_file.exists, "the watcher's pid file")
        # its first apply (before it takes SIGHUPs for reloads) has written the health file
        until((self.state_dir / "lvs-director.health.json").exists, "the first apply")
        return time.monotonic() - started

    def edit(self) -> int:
        """The next weight for the chosen real server, written to the config."""
        self.weight = self.weight % 9 + 2
        self.config.write_text(self.text.replace(
            f'"{self.address}", weight = 1 ', f'"{self.address}", weight = {self.weight} '))
        return self.weight

    def shows(self, weight: int) -> bool:
        """Read only once the fake machine's file changed: parsing 10,000 rules every few
        ms would take the CPU the watcher needs."""
        stamp = self.host.state_path.stat().st_mtime_ns
        if stamp == self._seen:
            return False
        self._seen = stamp
        return weight_of(self.host.ipvs_save(), self.address) == weight

    def programs(self) -> int:
        """Fake programs started so far (one line each in calls.jsonl)."""
        with self.host.calls_path.open("rb") as calls:
            return sum(1 for _ in calls)

    def sighup(self) -> float:
        assert self.watcher is not None  # noqa: S101 - watch() first
        weight = self.edit()
        pid = int((self.state_dir / "lvs-director.watch.pid").read_text())
        sent = time.monotonic()
        os.kill(pid, signal.SIGHUP)
        took = until(lambda: self.shows(weight), "the weight after SIGHUP", poll=0.002) - sent
        until(lambda: self.reloaded(sent), "the watcher's result (after its verify)")
        return took

    def reloaded(self, since: float) -> bool:
        from lvs_scripts.locks import Paths
        from lvs_scripts.watch import read_result

        result = read_result(Paths("lvs-director", str(self.state_dir), "unused"))
        return result is not None and float(result["read_at"]) >= since

    def through_cli(self, *args: str) -> float:
        weight = self.edit()
        took = self.cli("reload", *args)
        if not self.shows(weight):
            raise SystemExit(f"bench_hup: reload {' '.join(args)} returned before the weight")
        return took

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.send_signal(signal.SIGTERM)
            self.watcher.wait(timeout=DEADLINE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--runs", type=int, default=3, help="reloads of each kind per size")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    if not all(1 <= n <= 20_000 for n in sizes) or not 1 <= args.runs <= 20:
        parser.error("--sizes 1-20000 each, --runs 1-20: this benchmark stays bounded")
    print(f"bench_hup, {date.today()}, {platform.node()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, fake host (tests/fakes); best and worst of "
          f"{args.runs} run(s), seconds")
    header = ("real servers", "start (CLI)", "watcher up", "SIGHUP -> in table",
              "programs per SIGHUP reload",
              "reload --via-watcher (CLI)", "reload (CLI)")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|", flush=True)
    for count in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            bench = Bench(Path(tmp), count)
            try:
                start = bench.cli("start")
                up = bench.watch()
                before = bench.programs()
                hup = [bench.sighup() for _ in range(args.runs)]
                programs = (bench.programs() - before) / args.runs
                via = [bench.through_cli("--via-watcher") for _ in range(args.runs)]
                cli = [bench.through_cli() for _ in range(args.runs)]
            finally:
                bench.close()
        cells = [f"{count:,}", f"{start:.2f}", f"{up:.2f}", f"{min(hup):.2f} / {max(hup):.2f}",
                 f"{programs:g}", *(f"{min(t):.2f} / {max(t):.2f}" for t in (via, cli))]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"(VIP {VIP}; the edited real server is the middle one of the service)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
