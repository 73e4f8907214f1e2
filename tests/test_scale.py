"""Work that must grow linearly with the number of real servers, counted, not timed.

Every step that compares real servers does so by their identity (`Destination.ident`).
Counting how often identities are read at N and 2N real servers shows the growth
exactly: linear code reads about twice as many, a nested loop four times as many. Each
case here was quadratic once (minutes at 10,000 real servers); bench/bench.py prints the
times. Reading the config is counted more widely, in every Python call it makes, for one
service of N real servers and for N services: a loop over all services per service
shows there, not in the identities."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pytest

from lvs_scripts import config as config_module
from lvs_scripts.config import load_config, parse_config
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


# --- reading the config: every Python call counted ----------------------------------------

def services_text(services: int, per_service: int) -> str:
    """`services` services of `per_service` real servers each, every address its own."""
    vip, real = ipaddress.ip_address("10.200.0.1"), ipaddress.ip_address("10.100.0.1")
    parts = ['[director]\ninterface = "eth0"\narping_count = 0\n']
    for index in range(services):
        entries = ", ".join(f'{{ address = "{real + index * per_service + n}" }}'
                            for n in range(per_service))
        parts.append(f'[[service]]\nvip = "{vip + index}"\nport = 80\nreal = [{entries}]\n')
    return "\n".join(parts)


def python_calls(operation: Callable[[], object]) -> int:
    """How many Python functions `operation` calls, its callees' callees included: a
    nested loop over the real servers (or services) shows as four times the calls at
    twice the size, whichever function it is in (ipaddress's comparisons are Python)."""
    calls = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profile)
    try:
        operation()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize(("services", "per_service"), [(1, 200), (100, 2)],
                         ids=["1 service x N", "N services x 2"])
def test_reading_the_config_grows_linearly(services: int, per_service: int) -> None:
    counts = []
    for scale in (1, 2):
        # in the first shape the real servers double, in the second the services do
        text = services_text(services * (scale if services > 1 else 1),
                             per_service * (scale if services == 1 else 1))
        counts.append(python_calls(lambda text=text: parse_config(text)))
    reals = services * per_service
    assert counts[0] >= 10 * reals, counts  # the count does see the work per real server
    assert counts[1] <= 2 * counts[0] + 200, counts


@pytest.mark.parametrize(("services", "per_service"), [(1, 200), (100, 2)],
                         ids=["1 service x N", "N services x 2"])
def test_a_cached_config_loads_in_linear_work(services: int, per_service: int,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "CACHE_MIN_BYTES", 0)
    cache = str(tmp_path / "config.cache")
    counts = []
    for scale in (1, 2):
        path = tmp_path / f"lvs-{scale}.toml"
        path.write_text(services_text(services * (scale if services > 1 else 1),
                                      per_service * (scale if services == 1 else 1)))
        load_config(str(path), cache)  # a miss: parsed and stored
        monkeypatch.setattr(config_module, "parse_config", None)  # a hit parses nothing
        counts.append(python_calls(lambda path=path: load_config(str(path), cache)))
        monkeypatch.undo()
        monkeypatch.setattr(config_module, "CACHE_MIN_BYTES", 0)
    reals = services * per_service
    assert counts[0] >= reals, counts  # an address built per real server
    assert counts[1] <= 2 * counts[0] + 100, counts
