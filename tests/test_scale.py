"""Work that must grow linearly with the number of real servers, counted, not timed.

Every step that compares real servers does so by their identity (`Destination.ident`).
Counting how often identities are read at N and 2N real servers shows the growth
exactly: linear code reads about twice as many, a nested loop four times as many. Each
case here was quadratic once (minutes at 10,000 real servers); bench/bench.py prints the
times."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from lvs_scripts.config import parse_config
from lvs_scripts.director import Director
from lvs_scripts.model import Destination, Protocol, ServiceKey
from lvs_scripts.owned import OwnedAddress, OwnedService
from lvs_scripts.plan_director import plan_director_start
from lvs_scripts.probes import HostObservation, RuleCheck, parse_ipvs_save
from lvs_scripts.runner import Result
from lvs_scripts.state import State

VIP = "10.200.0.1"
OWNED = State.of(OwnedService(ServiceKey(Protocol.TCP, ipaddress.ip_address(VIP), 80)),
                 OwnedAddress("eth0", f"{VIP}/32", announced=True))


def reals(count: int) -> list[str]:
    first = ipaddress.ip_address("10.100.0.1")
    return [str(first + index) for index in range(count)]


def config_text(count: int) -> str:
    entries = "\n".join(f'  {{ address = "{a}", weight = 1 }},' for a in reals(count))
    return (f'[director]\ninterface = "eth0"\narping_count = 0\n\n[[service]]\nvip = "{VIP}"\n'
            f'port = 80\nscheduler = "wrr"\nreal = [\n{entries}\n]\n')


def save_text(count: int, reverse: bool = False) -> str:
    """The running table, one real server's weight off (what reload repairs)."""
    dests = [f"-a -t {VIP}:80 -r {a}:80 -g -w {2 if i == count // 2 else 1}"
             for i, a in enumerate(reals(count))]
    return "\n".join([f"-A -t {VIP}:80 -s wrr", *(dests[::-1] if reverse else dests)]) + "\n"


class ListRunner:
    def __init__(self, count: int) -> None:
        self.text = f"TCP  {VIP}:80 wrr\n" + "".join(
            f"  -> {a}:80 Route 1 1 0\n" for a in reals(count))

    def run(self, argv: tuple[str, ...], *, stdin: str | None = None,
            check: bool = True) -> Result:
        return Result(tuple(argv), 0, self.text, "")


def read_config(count: int) -> None:
    parse_config(config_text(count))


def plan_reload(count: int) -> None:
    # Listed in another order than the config's: the planner matches by identity (in the
    # same order it pairs them off without hashing; test_plan_director checks both agree).
    plan = plan_director_start(parse_config(config_text(count)), HostObservation(
        ipvs=parse_ipvs_save(save_text(count, reverse=True))), OWNED)
    assert len([s for s in plan.steps if s.ipvs_rule]) == 1


def check_batch(count: int) -> None:
    check = RuleCheck(parse_ipvs_save(save_text(count)))
    lines = save_text(count).splitlines()
    assert sum(map(check, lines)) == len(lines)


def status_report(count: int) -> None:
    director = Director(parse_config(config_text(count)), runner=ListRunner(count))
    lines, _ = director.describe(HostObservation(ipvs=parse_ipvs_save(save_text(count))),
                                 OWNED)
    assert len(lines) == count + 1


@pytest.mark.parametrize("operation", [read_config, plan_reload, check_batch, status_report])
def test_identity_reads_grow_linearly(operation: Callable[[int], None],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    reads = 0
    original = Destination.ident.fget
    assert original is not None

    def counted(self: Destination) -> object:
        nonlocal reads
        reads += 1
        return original(self)

    monkeypatch.setattr(Destination, "ident", property(counted))
    counts = []
    for count in (150, 300):
        reads = 0
        operation(count)
        counts.append(reads)
    assert counts[0] >= 150, counts  # the operation does compare real servers
    assert counts[1] <= 2 * counts[0] + 10, counts
