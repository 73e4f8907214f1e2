"""Benchmark: what a burst of failures costs the watcher. Prints figures; asserts nothing.

    python bench/bench_burst.py                  # 1,000 real servers fail at the same moment
    python bench/bench_burst.py --reals 200 --interval 1

The real lvs_scripts.watch.Watcher and Director (check engine, batching, run lock, health
file, plan_health, apply) run against an IPVS table kept in this process: a runner
that answers `ipvsadm -S -n`, `-e` and `-R` as the kernel would, and a /proc/net/ip_vs
listing rewritten after each change (what the watcher reads to observe). Checks are
stubbed (no network): every server answers until the burst, then none does, as when a
switch dies. The figures: how many applies and programs (changing ones apart) the burst
cost, and how long until the last server was out. No real program is ever started.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lvs_scripts.checks import CheckResult, CheckSpec  # noqa: E402
from lvs_scripts.config import parse_config  # noqa: E402
from lvs_scripts.director import TEST_PROC_IP_VS, Director  # noqa: E402
from lvs_scripts.locks import Paths  # noqa: E402
from lvs_scripts.model import Protocol, ServiceKey  # noqa: E402
from lvs_scripts.owned import OwnedService  # noqa: E402
from lvs_scripts.probes import parse_rule  # noqa: E402
from lvs_scripts.runner import Result  # noqa: E402
from lvs_scripts.state import State, save_state  # noqa: E402
from lvs_scripts.watch import Watcher  # noqa: E402

VIP = "10.200.0.1"


def addresses(count: int) -> list[str]:
    base = ipaddress.ip_address("10.100.0.1")
    return [str(base + index) for index in range(count)]


class Table:
    """One service's real servers and weights, as the kernel would hold them."""

    def __init__(self, reals: list[str], listing: Path) -> None:
        self.weights = dict.fromkeys(reals, 1)
        self.listing = listing
        self.programs: list[str] = []  # argv[1] of each program started
        self.restores: list[float] = []  # when each ipvsadm -R started (monotonic)
        self.write_listing()

    def save(self) -> str:
        return f"-A -t {VIP}:80 -s wrr\n" + "".join(
            f"-a -t {VIP}:80 -r {rip}:80 -g -w {w}\n" for rip, w in self.weights.items())

    def write_listing(self) -> None:
        """/proc/net/ip_vs's format (Linux 6.1 ip_vs_info_seq_show)."""
        def hexed(address: str) -> str:
            return f"{int(ipaddress.ip_address(address)):08X}"

        lines = ["IP Virtual Server version 1.2.1 (size=4096)",
                 "Prot LocalAddress:Port Scheduler Flags",
                 "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn",
                 f"TCP  {hexed(VIP)}:0050 wrr "]
        lines += [f"  -> {hexed(rip)}:0050      Route   {w:<6d} 0          0         "
                  for rip, w in self.weights.items()]
        self.listing.write_text("\n".join(lines) + "\n")

    def edit(self, line: str) -> None:
        rule = parse_rule(line)
        if rule.op != "-e" or rule.dest is None:
            raise ValueError(f"this table only takes -e: {line}")
        self.weights[str(rule.dest.address)] = rule.dest.weight

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            check: bool = True) -> Result:
        argv = tuple(argv)
        self.programs.append(argv[1] if len(argv) > 1 else argv[0])
        if argv == ("ipvsadm", "-S", "-n"):
            return Result(argv, 0, self.save(), "")
        if argv == ("ipvsadm", "-R"):
            self.restores.append(time.monotonic())
            for line in (stdin or "").splitlines():
                self.edit(line)
        elif argv[:2] == ("ipvsadm", "-e"):
            self.edit(" ".join(argv[1:]))
        else:
            raise ValueError(f"not a program this benchmark expects: {argv}")
        self.write_listing()
        return Result(argv, 0, "", "")


def config_text(reals: list[str], interval: float, fall: int) -> str:
    servers = ",\n".join(f'  {{ address = "{rip}" }}' for rip in reals)
    return f"""
[director]
interface = "eth0"
arping_count = 0

[[service]]
vip = "{VIP}"
port = 80
scheduler = "wrr"
real = [
{servers}
]

[service.check]
type = "tcp"
interval = {interval}
timeout = {interval / 2}
fall = {fall}
"""


async def burst(watcher: Watcher, table: Table, failing: dict[str, bool], count: int,
                interval: float) -> dict[str, float]:
    seen: list[float] = []  # when each transition came
    forward = watcher.checker.on_transition

    def on_transition(*args: Any) -> None:
        seen.append(time.monotonic())
        forward(*args)
    watcher.checker.on_transition = on_transition
    runner = asyncio.get_running_loop().create_task(watcher.run())
    # Warm-up: every server checked up (its first success) and those applies done.
    while len(watcher.checker.health) < count or any(
            h.state != "up" for h in watcher.checker.health.values()):
        await asyncio.sleep(0.05)
    await asyncio.sleep(interval)
    programs = len(table.programs)
    del seen[:]
    started = time.monotonic()
    failing["now"] = True
    while any(w != 0 for w in table.weights.values()):
        await asyncio.sleep(0.01)
    took = time.monotonic() - started
    watcher.stop()
    await runner
    ran = table.programs[programs:]
    restores = [t - started for t in table.restores if t >= started]
    return {"first": seen[0] - started, "last": seen[-1] - started,
            "restore": restores[0] if restores else float("nan"), "programs": len(ran),
            "changing": sum(p in ("-e", "-R") for p in ran), "batches": ran.count("-R"),
            "seconds": took}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reals", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--fall", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.reals <= 10_000 or not 0.2 <= args.interval <= 10:
        parser.error("--reals 1-10000, --interval 0.2-10: this benchmark stays bounded")
    logging.getLogger("lvs_scripts").setLevel(logging.ERROR)  # not 1,000 transition lines
    reals = addresses(args.reals)
    failing = {"now": False}

    async def check(spec: CheckSpec, address: str, port: int, vip: str,
                    session: object = None) -> CheckResult:
        return CheckResult(False, "connection refused", 0.0) if failing["now"] else \
            CheckResult(True, "ok", 0.0)

    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "lvs.toml"
        config_file.write_text(config_text(reals, args.interval, args.fall))
        listing = Path(tmp) / "ip_vs"
        os.environ[TEST_PROC_IP_VS] = str(listing)
        table = Table(reals, listing)
        paths = Paths("lvs-director", f"{tmp}/state", f"{tmp}/lock")
        key = ServiceKey(Protocol.TCP, ipaddress.ip_address(VIP), 80)
        save_state(paths, State.of(OwnedService(key)))
        director = Director(parse_config(config_file.read_text(), str(config_file)),
                            runner=table, paths=paths)
        watcher = Watcher(director, str(config_file), check=check, notify=lambda _m: None)
        figures = asyncio.run(burst(watcher, table, failing, args.reals, args.interval))
    print(f"burst: {args.reals} real servers (tcp check, interval {args.interval:g} s, fall "
          f"{args.fall}) all failing at the same moment")
    print(f"  all at weight 0 after   {figures['seconds']:8.2f} s "
          f"(fall x interval = {args.fall * args.interval:g} s)")
    print(f"  transitions came from   {figures['first']:8.2f} s to {figures['last']:.2f} s; "
          f"the first ipvsadm -R started at {figures['restore']:.2f} s")
    print(f"  applies to the kernel   {figures['changing']:8.0f}   "
          f"({figures['batches']:.0f} ipvsadm -R, the rest a single ipvsadm -e): the window "
          "closes 0.2 s after the last transition, at most interval + 0.2 s after the first")
    print(f"  programs started        {figures['programs']:8.0f}   (with the ipvsadm -S -n that "
          "checks each batch)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS                {peak:8.1f} MB   (the whole watcher: engine, health file, "
          "planner, this table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
