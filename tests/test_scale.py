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
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType

import pytest

from lvs_scripts import config as config_module
from lvs_scripts import probes
from lvs_scripts.apply import apply_plan
from lvs_scripts.config import load_config, parse_config
from lvs_scripts.director import Director
from lvs_scripts.health import Health
from lvs_scripts.healthstate import Disabled, HealthView, target_id
from lvs_scripts.model import Destination, IpvsTable, Protocol, ServiceKey
from lvs_scripts.owned import OwnedAddress, OwnedService
from lvs_scripts.plan import Outcome, Plan, Step
from lvs_scripts.plan_director import plan_director_start
from lvs_scripts.probes import (
    IPVS_SAVE,
    HostObservation,
    RuleCheck,
    parse_ipvs_list,
    parse_ipvs_save,
    rules_held,
)
from lvs_scripts.render import shell_line
from lvs_scripts.runner import Result
from lvs_scripts.state import State
from tests.counting import count_calls
from tests.fakes.fakehost import FakeHost

ROOT = Path(__file__).resolve().parent.parent

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


# Reading the config reads no identity (its duplicate check keys by packed address:
# config._Reals); test_reading_the_config_grows_linearly counts all of its calls.
@pytest.mark.parametrize("operation", [plan_reload, check_batch, status_report])
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
    # the count does see the work per real server (a few calls: the inline path of
    # config._reals builds an IPv4Address and a Destination, and calls nothing else)
    assert counts[0] >= 3 * reals, counts
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


def test_batch_check_builds_objects_only_for_the_rules_that_differ(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch check compares text: the rules printed as planned need no object, at any
    size; only a rule that did not take is parsed and looked up."""
    checked = count_calls(monkeypatch, RuleCheck, "__call__", lambda self, line: line)
    for count in (150, 300):
        checked.clear()
        wanted = save_text(count).replace("-w 2", "-w 1").splitlines()  # reload's target
        held = rules_held(wanted, save_text(count))
        assert held.count(False) == 1 and checked == [wanted[count // 2 + 1]]


# --- applying a batch, and status: Python calls per real server ---------------------------

class Kernel:
    """`ipvsadm -R` keeps its input, `ipvsadm -S -n` prints it back: every rule takes."""

    def __init__(self) -> None:
        self.saved = ""

    def run(self, argv: tuple[str, ...], *, stdin: str | None = None,
            check: bool = True) -> Result:
        if argv[:2] == ("ipvsadm", "-R"):
            self.saved = stdin or ""
        return Result(tuple(argv), 0, self.saved if argv == IPVS_SAVE else "", "")


def rules_plan(count: int) -> Plan:
    plan = Plan()
    for line in save_text(count).splitlines():
        plan.add(("ipvsadm", *line.split()), "to start")
    return plan


@pytest.mark.parametrize("count", [150, 300])
def test_applying_a_batch_costs_a_few_python_calls_per_rule(count: int) -> None:
    """apply_plan of N rules: one `ipvsadm -R`, the check comparing text, each step
    recorded. Each rule's batch line is made once, with its step, and nothing is
    shell-quoted until someone asks for the applied lines (the property and the quoting
    made it 30 calls a rule)."""
    plan = rules_plan(count)
    kernel = Kernel()
    outcomes: list[Outcome] = []
    calls = python_calls(lambda: outcomes.append(apply_plan(plan, kernel, State(),
                                                            lambda state: None)))
    assert calls <= 5 * count, calls / count
    # The lines, when asked for, are those of the steps, shell-quoted, in order.
    assert outcomes[0].applied == [shell_line(step.argv) for step in plan.steps]
    assert kernel.saved == "".join(f"{line}\n" for line in save_text(count).splitlines())


def test_planning_a_start_costs_a_few_python_calls_per_real_server() -> None:
    """Against an empty table: a step per real server, its argv written once. ipaddress's
    `version` and `__format__`, and Enum's `value`, made it 13 calls a real server."""
    config = parse_config(config_text(300))
    calls = python_calls(lambda: plan_director_start(config, HostObservation(), State()))
    assert calls <= 12 * 300, calls / 300


def test_a_step_knows_its_batch_line_from_the_start() -> None:
    step = Step(("ipvsadm", "-a", "-t", f"{VIP}:80", "-r", "10.100.0.1:80", "-g", "-w", "1"),
                "add")
    assert step.ipvs_rule == f"-a -t {VIP}:80 -r 10.100.0.1:80 -g -w 1"
    assert Step(("ipvsadm", "-S", "-n"), "read").ipvs_rule is None
    assert Step(("ip", "-a"), "not ipvsadm").ipvs_rule is None
    # Not a field that compares, and made again for a changed copy.
    assert step == Step(step.argv, "add")
    changed = replace(step, argv=("ipvsadm", "-d", "-t", f"{VIP}:80", "-r", "10.100.0.1:80"))
    assert changed.ipvs_rule == f"-d -t {VIP}:80 -r 10.100.0.1:80"


def checked_status(count: int) -> tuple[Director, HostObservation]:
    """status of a service with a check, half its real servers with a health recorded."""
    text = config_text(count).replace('scheduler = "wrr"\n',
                                      'scheduler = "wrr"\ncheck = { type = "tcp" }\n')
    config = parse_config(text)
    service = config.services[0]
    view = HealthView({target_id(service, dest): Health("up", "", 1.0)
                       for dest in service.destinations[::2]},
                      [Disabled(str(service.destinations[1].address))])
    director = Director(config, runner=ListRunner(count))
    director.health_view = lambda: view  # type: ignore[method-assign]
    return director, HostObservation(ipvs=parse_ipvs_save(save_text(count)))


@pytest.mark.parametrize("count", [150, 300])
def test_status_of_checked_real_servers_costs_a_few_python_calls_each(count: int) -> None:
    """describe with a check: the health of each real server is looked up without a
    TargetId built and hashed for it (60 calls a real server before, 15 now: the rest
    is reading `ipvsadm -L -n` and ipaddress's str)."""
    director, obs = checked_status(count)
    described: list[list[str]] = []
    calls = python_calls(lambda: described.append(director.describe(obs, OWNED)[0]))
    assert calls <= 25 * count, calls / count
    lines = described[0]
    assert lines[1].endswith("  up") and lines[2].endswith("  disabled"), lines[1:3]
    assert lines[4].endswith("  unknown"), lines[4]


@pytest.mark.parametrize("down", [None, 7])
def test_a_reload_asks_health_only_about_services_with_a_server_down(
        monkeypatch: pytest.MonkeyPatch, down: int | None) -> None:
    """The watcher's reload plans with a health entry for every real server, nearly all
    of them up: a service none of whose servers is down or disabled is taken as
    configured, with no TargetId built for its real servers (two seconds of the lab VM's
    reload at 10,000). With one down, that service's servers are asked each, and the one
    down goes to weight 0."""
    from lvs_scripts import healthstate

    text = config_text(300).replace('scheduler = "wrr"\n',
                                    'scheduler = "wrr"\ncheck = { type = "tcp" }\n')
    config = parse_config(text)
    service = config.services[0]
    health = {target_id(service, dest): Health("up", 3, 0, "ok", 1.0)
              for dest in service.destinations}
    if down is not None:
        health[target_id(service, service.destinations[down])] = Health("down", 0, 3, "x", 1.0)
    built = count_calls(monkeypatch, healthstate, "target_id_in")
    saved = save_text(300).replace(" -w 2", " -w 1")
    plan = plan_director_start(config, HostObservation(ipvs=parse_ipvs_save(saved)), OWNED,
                               view=HealthView(health))
    changes = [step.line() for step in plan.required if step.argv[0] == "ipvsadm"]
    if down is None:
        assert built == [] and changes == []
    else:
        assert len(built) == 300
        assert changes == [
            f"ipvsadm -e -t {VIP}:80 -r {reals(300)[down]}:80 -g -w 0"]


def test_planning_a_reload_compares_no_address_in_python(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload of a service whose real servers the kernel lists in the config's order:
    they are matched off without ipaddress's Python __eq__ (twice per real server a
    reload before), and the forwarding and thresholds of all are asked in C."""
    config = parse_config(config_text(300))
    obs = HostObservation(ipvs=parse_ipvs_save(save_text(300)))
    compared: list[object] = []
    real_eq = ipaddress.IPv4Address.__eq__

    def counted(self: ipaddress.IPv4Address, other: object) -> bool:
        compared.append(other)
        return real_eq(self, other)

    monkeypatch.setattr(ipaddress.IPv4Address, "__eq__", counted)
    plan = plan_director_start(config, obs, OWNED)
    assert len(compared) <= 20, len(compared)
    assert [s.line() for s in plan.required if s.argv[0] == "ipvsadm"] == [
        f"ipvsadm -e -t {VIP}:80 -r {reals(300)[150]}:80 -g -w 1"]


def test_one_reading_of_the_table_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch with a deletion checks its rules as objects, and the verification reads
    the same `ipvsadm -S -n` (KnownReadings): the one text is parsed once. Another text,
    even an equal one, is parsed again; each caller gets a table of its own. (Parses are
    counted, not addresses: a text parsed again reads no address it read last time.)"""
    parsed: list[str] = []
    original = probes._parse_ipvs_save

    def counted(text: str) -> IpvsTable:
        parsed.append(text)
        return original(text)

    monkeypatch.setattr(probes, "_parse_ipvs_save", counted)
    saved = save_text(300)
    wanted = [line.replace("-a", "-d", 1).split(" -g")[0] if index == 5 else line
              for index, line in enumerate(saved.splitlines())]
    assert rules_held(wanted, saved).count(False) == 1  # the -d: that server is there
    assert len(parsed) == 1
    table = parse_ipvs_save(saved)  # the verification's observation
    assert len(parsed) == 1
    table.clear()  # what one caller does to its table is not the next one's
    assert len(parse_ipvs_save(saved)[next(iter(parse_ipvs_save(saved)))].destinations) == 300
    again = parse_ipvs_save("".join(saved))  # an equal text, another object: parsed again
    assert len(parsed) == 2 and parsed[1] is not saved
    assert len(again[next(iter(again))].destinations) == 300


def test_an_address_read_again_is_not_parsed_again() -> None:
    """status reads each real server's address from `ipvsadm -S -n` and `ipvsadm -L -n`,
    reload from two readings of `ipvsadm -S -n`: the second time is a lookup, the very
    object of the first."""
    probes.forget_parsed()  # as a new process: no lines another test's run left
    saved = parse_ipvs_save(save_text(300) + "\n")  # a text of its own: really parsed
    listed = parse_ipvs_list(ListRunner(300).text)
    key = next(iter(saved))
    for dest, ident in zip(saved[key].destinations, listed[key]):
        assert dest.address is ident[0]
    again = parse_ipvs_save(save_text(300, reverse=True))
    assert {id(d.address) for d in again[key].destinations} == {
        id(d.address) for d in saved[key].destinations}


def test_a_table_read_again_reads_only_its_changed_lines(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """reload reads `ipvsadm -S -n` before planning and again to verify; the watcher
    reloads again and again. A reading that differs from the last in one line of 10,000
    matches, reads an address and builds a real server for that line only (1.6 s a
    reading in the lab VM before: every line each time), and calls next to no Python."""
    work = {"match": 0, "ipv4": 0, "Destination": 0}

    class CountedPattern:
        def fullmatch(self, line: str) -> object:
            work["match"] += 1
            return original_pattern.fullmatch(line)

    def counted_ipv4(text: str) -> ipaddress.IPv4Address:
        work["ipv4"] += 1
        return original_ipv4(text)

    def counted_destination(*args: object, **kwargs: object) -> Destination:
        work["Destination"] += 1
        return Destination(*args, **kwargs)  # type: ignore[arg-type]

    probes.forget_parsed()  # a new process: nothing read yet
    original_pattern, original_ipv4 = probes._PLAIN_DEST, probes.ipv4
    monkeypatch.setattr(probes, "_PLAIN_DEST", CountedPattern())
    monkeypatch.setattr(probes, "ipv4", counted_ipv4)
    monkeypatch.setattr(probes, "Destination", counted_destination)
    count = 10000
    first = save_text(count)
    changed = first.replace(f" -r {reals(count)[7]}:80 -g -w 1\n",
                            f" -r {reals(count)[7]}:80 -g -w 5\n")
    assert changed != first
    parse_ipvs_save(first)
    assert min(work.values()) >= count, work  # the counts do see the work of each line
    work.update(dict.fromkeys(work, 0))
    calls = python_calls(lambda: parse_ipvs_save(changed))
    assert work == {"match": 2, "ipv4": 1, "Destination": 1}, work  # -A line, changed line
    assert calls <= 50, calls
    table = parse_ipvs_save(changed)
    dests = table[next(iter(table))].destinations
    assert len(dests) == count and dests[7].weight == 5 and dests[count // 2].weight == 2


# 100,000 real servers as the issue has them: 1,000 services x 100.
SERVICES, EACH = 1000, 100


def big_config(changed: int | None = None) -> str:
    """On one VIP (ports 1000...): 1,000 VIPs would be 1,000 `ip addr add`, each a fake
    reading and writing the whole table's JSON file."""
    parts = ['[director]\ninterface = "eth0"\narping_count = 0\n']
    for index in range(SERVICES):
        parts.append(f'[[service]]\nvip = "{VIP}"\nport = {1000 + index}\n'
                     'scheduler = "wrr"\nreal = [\n')
        parts += [f'  {{ address = "{a}", weight = {3 if (index, n) == (0, changed) else 1} '
                  "},\n" for n, a in enumerate(reals(EACH))]
        parts.append("]\n")
    return "".join(parts)


@pytest.mark.skipif(os.environ.get("LVS_TEST_SLOW") != "1",
                    reason="slow (5-15 minutes, most of it the fake ipvsadm's JSON table): "
                    "LVS_TEST_SLOW=1 runs it")
def test_start_reload_status_stop_at_100000_real_servers(fakehost: FakeHost,
                                                         tmp_path: Path) -> None:
    """Through the CLI against the fake host (minutes: each fake ipvsadm call reads and
    writes the whole table as JSON): every action correct, one batch for start, one rule
    for reload, and no program more than at 3 real servers."""
    config = tmp_path / "lvs.toml"
    config.write_text(big_config())
    env = dict(fakehost.env, LVS_SYSLOG="0", LVS_STATE_DIR=str(tmp_path / "state"),
               LVS_LOCK_DIR=str(tmp_path / "lock"), PYTHONPATH=str(ROOT),
               LVS_TEST_PROC_IP_VS=str(tmp_path / "no-proc-ip-vs"))

    def cli(action: str, code: int = 0) -> list[str]:
        fakehost.clear_calls()
        ran = subprocess.run([sys.executable, str(ROOT / "bin" / "lvs-director"), "-c",
                              str(config), action], env=env, capture_output=True,
                             text=True, check=False, timeout=1800)
        assert ran.returncode == code, ran.stderr[-2000:]
        return [" ".join(argv[:3]) for argv in fakehost.argvs()]

    assert cli("start").count("ipvsadm -R") == 1
    table = parse_ipvs_save(fakehost.cmd("ipvsadm", "-S", "-n").stdout)
    assert len(table) == SERVICES
    assert sum(len(s.destinations) for s in table.values()) == SERVICES * EACH
    config.write_text(big_config(changed=7))
    assert cli("reload") == ["ip -o link", "ip -o addr", "ipvsadm -S -n", "ipvsadm -e -t",
                             "ipvsadm -S -n"]
    weights = {d.weight for s in parse_ipvs_save(fakehost.cmd("ipvsadm", "-S", "-n").stdout
                                                 ).values() for d in s.destinations}
    assert weights == {1, 3}
    assert cli("status") == ["ip -o link", "ip -o addr", "ipvsadm -S -n", "ipvsadm -L -n"]
    config.write_text(big_config())  # status 150: one weight differs from the config now
    cli("status", code=150)
    assert cli("stop").count("ipvsadm -D") == SERVICES
    assert parse_ipvs_save(fakehost.cmd("ipvsadm", "-S", "-n").stdout) == {}


def test_asking_for_each_of_many_vips_reads_the_addresses_once() -> None:
    """The plan, the verification and stop ask once per VIP whether it is on a device: a
    scan of every address each time was VIPs x addresses (a million at 1,000 VIPs). The
    answers follow the list when it grows or is replaced."""
    from lvs_scripts.probes import Address

    vips = [ipaddress.ip_address(f"10.200.{n >> 8}.{n & 255}") for n in range(1, 601)]
    obs = HostObservation(addresses=[Address("eth0", ipaddress.ip_interface(f"{vip}/32"))
                                     for vip in vips])
    calls = python_calls(lambda: [obs.has_address("eth0", vip) and obs.devices_with(vip)
                                  for vip in vips])
    assert calls <= 20 * len(vips), calls / len(vips)  # a scan each: 600 a VIP here
    assert all(obs.has_address("eth0", vip) for vip in vips)
    assert not obs.has_address("eth1", vips[0]) and obs.devices_with(vips[0]) == ["eth0"]
    extra = ipaddress.ip_interface("192.0.2.7/32")
    obs.addresses.append(Address("lo", extra, deprecated=True))
    assert obs.has_address("lo", extra.ip) and obs.is_deprecated("lo", extra.ip)
    assert not obs.is_deprecated("eth0", vips[0])
    obs.addresses = [a for a in obs.addresses if a.device != "eth0"]
    assert not obs.has_address("eth0", vips[0]) and obs.devices_with(vips[0]) == []
