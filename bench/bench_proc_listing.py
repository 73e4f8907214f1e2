"""Parsing /proc/net/ip_vs for the verification after a reload (probes.parse_proc_ip_vs_exact),
on the host: it prints figures; nothing here asserts a time.

    python bench/bench_proc_listing.py [--gc]

For 1 service x 10,000, 1,000 x 100 and 1 x 100,000 real servers, the listing after a
reload of one weight (every connection counter changed too) parsed: cold (a new process
with nothing remembered), primed by the first observation (expect_listing_of: the CLI's
reload), and warm (the last listing's lines remembered: the watcher's next reload); then
the lenient parse_proc_ip_vs, and parse_ipvs_save of the same table warm, for comparison.
Without --gc the cyclic garbage collector is off, as in the CLI's one-shot actions.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from typing import Callable

from lvs_scripts import probes
from lvs_scripts.model import IpvsTable

HEADER = ("IP Virtual Server version 1.2.1 (size=4096)\n"
          "Prot LocalAddress:Port Scheduler Flags\n"
          "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n")


def listing(services: int, per: int, bump: int = -1, seed: int = 0) -> str:
    """As Linux 6.1 prints it: newest real server first, the counters random."""
    rnd = random.Random(seed)  # noqa: S311 - counters, not secrets
    out = [HEADER]
    n = 0
    for s in range(services):
        out.append(f"TCP  0AC8{s >> 8:02X}{s & 255:02X}:0050 wrr  \n")
        for r in reversed(range(s * per, (s + 1) * per)):
            weight = 2 if n == bump else 1
            n += 1
            out.append(f"  -> 0A{(r >> 16) & 255:02X}{(r >> 8) & 255:02X}{r & 255:02X}:0050"
                       f"      Route   {weight:<6} {rnd.randrange(50):<10} "
                       f"{rnd.randrange(500):<10}\n")
    return "".join(out)


def save_of(table: IpvsTable) -> str:
    out = []
    for svc in table.values():
        out.append(" ".join(("-A", *svc.service_args())))
        out += [" ".join(("-a", *svc.destination_args(d))) for d in svc.destinations]
    return "\n".join(out) + "\n"


def best(run: Callable[[], float], times: int = 5) -> float:
    return min(run() for _ in range(times))


def timed(parse: Callable[[], object], before: Callable[[], object] = lambda: None
          ) -> Callable[[], float]:
    def run() -> float:
        before()
        start = time.perf_counter()
        parse()
        return time.perf_counter() - start
    return run


def row(services: int, per: int) -> str:
    old = listing(services, per, seed=1)
    new = listing(services, per, bump=7, seed=2)  # one weight, every counter differ
    first = probes.parse_proc_ip_vs_exact(old)
    after = probes.parse_proc_ip_vs_exact(new)
    if first is None or after is None or after == first:
        raise SystemExit("the listings do not parse as meant")

    def forget() -> None:
        probes._proc_seen[0] = {}

    def primed_parse() -> None:
        probes.expect_listing_of(first)
        probes.parse_proc_ip_vs_exact(new)

    cold = best(timed(lambda: probes.parse_proc_ip_vs_exact(new), forget))
    primed = best(timed(primed_parse, forget))
    warm = best(timed(lambda: probes.parse_proc_ip_vs_exact(new),
                      lambda: probes.parse_proc_ip_vs_exact(old)))
    lenient = best(timed(lambda: probes.parse_proc_ip_vs(new)))
    save_old, save_new = save_of(first), save_of(after)
    save = best(timed(lambda: probes.parse_ipvs_save(save_new),
                      lambda: probes.parse_ipvs_save(save_old)))
    return (f"{services} x {per}: strict cold {cold * 1000:.1f} ms, primed by the first "
            f"observation {primed * 1000:.1f} ms, warm {warm * 1000:.1f} ms; "
            f"parse_proc_ip_vs {lenient * 1000:.1f} ms; parse_ipvs_save warm "
            f"{save * 1000:.1f} ms")


def main() -> None:
    if "--gc" not in sys.argv:
        gc.disable()
    for services, per in ((1, 10_000), (1_000, 100), (1, 100_000)):
        print(row(services, per))


if __name__ == "__main__":
    main()
