"""Planner tables with health and admin state: (config, kernel table, health) -> commands.

The same planner as start/reload/status (plan_director_start) and the watcher's narrower
one (plan_health): quiesce, remove, the sorry server, disable, and start/reload never
putting a down or disabled server back.
"""

from __future__ import annotations

import ipaddress

import pytest

from lvs_scripts.config import parse_config
from lvs_scripts.health import DOWN, UP, Health, TargetId
from lvs_scripts.healthstate import Disabled, HealthView, from_json, to_json
from lvs_scripts.model import Protocol, ServiceKey
from lvs_scripts.owned import OwnedService
from lvs_scripts.plan_director import plan_director_start, plan_health
from lvs_scripts.probes import HostObservation, parse_ipvs_save
from lvs_scripts.state import State

BASE = """
[director]
interface = "eth0"
arping_count = 0

[[service]]
vip = "192.168.30.254"
port = 80
scheduler = "wrr"
{sorry}
real = [
  {{ address = "192.168.30.111", weight = 1 }},
  {{ address = "192.168.30.112", weight = 2 }},
]
{check}
"""
QUIESCE = '[service.check]\ntype = "tcp"\non_failure = "quiesce"'
REMOVE = '[service.check]\ntype = "tcp"\non_failure = "remove"'
SORRY = 'sorry_server = "192.168.30.200"'
SVC = "-A -t 192.168.30.254:80 -s wrr\n"
RS1 = "-a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w {}\n"
RS2 = "-a -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w {}\n"
SORRY_RULE = "-a -t 192.168.30.254:80 -r 192.168.30.200:80 -g -w 1\n"
KEY = ServiceKey(Protocol.TCP, ipaddress.ip_address("192.168.30.254"), 80)
OWNED = State.of(OwnedService(KEY))
ADDRS = "1: eth0    inet 192.168.30.254/32 scope global eth0\\ valid_lft forever"
LINKS = ("2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode "
         "DEFAULT group default qlen 1000\\    link/ether 52:54:00:12:34:02 brd "
         "ff:ff:ff:ff:ff:ff")


def rs(last: int) -> TargetId:
    return TargetId("tcp", "192.168.30.254", 80, f"192.168.30.{last}", 80)


def down(*lasts: int) -> dict[TargetId, Health]:
    return {rs(last): Health(DOWN, 0, 3, "connection refused", 1.0) for last in lasts}


def up(*lasts: int) -> dict[TargetId, Health]:
    return {rs(last): Health(UP, 2, 0, "ok", 1.0) for last in lasts}


def e(last: int, weight: int) -> str:
    return f"ipvsadm -e -t 192.168.30.254:80 -r 192.168.30.{last}:80 -g -w {weight}"


def a(last: int, weight: int) -> str:
    return f"ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.{last}:80 -g -w {weight}"


def d(last: int) -> str:
    return f"ipvsadm -d -t 192.168.30.254:80 -r 192.168.30.{last}:80"


def observed(ipvs: str) -> HostObservation:
    from lvs_scripts.probes import parse_ip_addrs, parse_ip_links

    return HostObservation(addresses=parse_ip_addrs(ADDRS), links=parse_ip_links(LINKS),
                           ipvs=parse_ipvs_save(ipvs))


# (name, check, sorry, kernel table, health, disabled, expected commands)
CASES = [
    ("no check: down health is ignored", "", "", SVC + RS1.format(1) + RS2.format(2),
     down(111), [], []),
    ("quiesce: a down server goes to weight 0", QUIESCE, "",
     SVC + RS1.format(1) + RS2.format(2), down(111), [], [e(111, 0)]),
    ("quiesce: two down at once, two rules (one batch)", QUIESCE, "",
     SVC + RS1.format(1) + RS2.format(2), down(111, 112), [], [e(111, 0), e(112, 0)]),
    ("quiesce: back up, back to its weight", QUIESCE, "",
     SVC + RS1.format(0) + RS2.format(2), up(111), [], [e(111, 1)]),
    ("quiesce: a down server at 0 is as it should be", QUIESCE, "",
     SVC + RS1.format(0) + RS2.format(2), down(111), [], []),
    ("remove: a down server is deleted at once, not drained", REMOVE, "",
     SVC + RS1.format(1) + RS2.format(2), down(111), [], [d(111)]),
    ("remove: back up, added again", REMOVE, "", SVC + RS2.format(2), up(111), [],
     [a(111, 1)]),
    ("remove: still down, stays out", REMOVE, "", SVC + RS2.format(2), down(111), [], []),
    ("sorry: all down, the sorry server comes in", QUIESCE, SORRY,
     SVC + RS1.format(1) + RS2.format(2), down(111, 112), [],
     [e(111, 0), e(112, 0), a(200, 1)]),
    ("sorry: one back up, the sorry server leaves at once", QUIESCE, SORRY,
     SVC + RS1.format(0) + RS2.format(0) + SORRY_RULE, down(111), [],
     [e(112, 2), d(200)]),
    ("sorry with remove: all down, only the sorry server is left", REMOVE, SORRY,
     SVC + RS1.format(1) + RS2.format(2), down(111, 112), [],
     [a(200, 1), d(111), d(112)]),
    ("sorry: not needed while one is up", QUIESCE, SORRY,
     SVC + RS1.format(1) + RS2.format(2), down(111), [], [e(111, 0)]),
    ("disable: weight 0 whatever the checks say", QUIESCE, "",
     SVC + RS1.format(1) + RS2.format(2), up(111, 112), [Disabled("192.168.30.112")],
     [e(112, 0)]),
    ("disable: an unchecked server too", "", "", SVC + RS1.format(1) + RS2.format(2), {},
     [Disabled("192.168.30.111", "192.168.30.254", 80)], [e(111, 0)]),
    ("disable: in another service only: no change here", "", "",
     SVC + RS1.format(1) + RS2.format(2), {},
     [Disabled("192.168.30.111", "192.168.30.253", 80)], []),
    ("disable of a removed-when-down server keeps it in the table at 0", REMOVE, "",
     SVC + RS1.format(1) + RS2.format(2), down(111), [Disabled("192.168.30.111")],
     [e(111, 0)]),
    ("sorry: in the table while every server is up, it leaves", QUIESCE, SORRY,
     SVC + RS1.format(1) + RS2.format(2) + SORRY_RULE, up(111, 112), [], [d(200)]),
    ("down in another service of the same address only: no change here", QUIESCE, "",
     SVC + RS1.format(1) + RS2.format(2),
     {TargetId("tcp", "192.168.30.253", 80, "192.168.30.111", 80): Health(DOWN, 0, 3, "x", 1.0),
      TargetId("tcp", "192.168.30.254", 443, "192.168.30.111", 443): Health(DOWN, 0, 3, "x",
                                                                              1.0),
      TargetId("udp", "192.168.30.254", 80, "192.168.30.111", 80): Health(DOWN, 0, 3, "x", 1.0)},
     [], []),
    ("down beside servers of other services: only this one", QUIESCE, "",
     SVC + RS1.format(1) + RS2.format(2),
     {**down(112), TargetId("tcp", "192.168.30.253", 80, "192.168.30.111", 80):
      Health(DOWN, 0, 3, "x", 1.0)}, [], [e(112, 0)]),
    ("sorry: every server disabled counts as none up", "", SORRY,
     SVC + RS1.format(1) + RS2.format(2), {},
     [Disabled("192.168.30.111"), Disabled("192.168.30.112")], [e(111, 0), e(112, 0),
                                                                a(200, 1)]),
]


def config_for(check: str, sorry: str):  # type: ignore[no-untyped-def]
    return parse_config(BASE.format(check=check, sorry=sorry), "health.toml")


@pytest.mark.parametrize(("name", "check", "sorry", "ipvs", "health", "disabled", "expected"),
                         CASES, ids=[case[0] for case in CASES])
def test_reload_and_the_watcher_plan_health(name, check, sorry, ipvs, health, disabled,  # type: ignore[no-untyped-def]
                                            expected) -> None:
    config = config_for(check, sorry)
    view = HealthView(dict(health), list(disabled))
    watcher = plan_health(config, observed(ipvs), OWNED, view)
    assert [step.line() for step in watcher.steps] == expected
    # reload plans the same IPVS commands: it never puts a down/disabled server back
    reload = plan_director_start(config, observed(ipvs), OWNED, view=view)
    assert [s.line() for s in reload.steps if s.argv[0] == "ipvsadm"] == expected


def test_start_of_a_new_service_leaves_out_or_quiesces_what_is_down() -> None:
    config = config_for(REMOVE, SORRY)
    view = HealthView(down(111))
    plan = plan_director_start(config, observed(""), State(), view=view)
    assert [s.line() for s in plan.steps if s.argv[0] == "ipvsadm"] == [
        "ipvsadm -A -t 192.168.30.254:80 -s wrr", a(112, 2)]
    quiesce = plan_director_start(config_for(QUIESCE, ""), observed(""), State(), view=view)
    assert [s.line() for s in quiesce.steps if s.argv[0] == "ipvsadm"] == [
        "ipvsadm -A -t 192.168.30.254:80 -s wrr", a(111, 0), a(112, 2)]


def test_the_watcher_leaves_the_rest_to_reload() -> None:
    """A real server the config no longer has, a changed scheduler, a service we do not own:
    plan_health changes none of them (reload does)."""
    config = config_for(QUIESCE, "")
    kernel = ("-A -t 192.168.30.254:80 -s rr\n" + RS1.format(1) + RS2.format(2)
              + "-a -t 192.168.30.254:80 -r 192.168.30.119:80 -g -w 1\n")
    assert plan_health(config, observed(kernel), OWNED, HealthView(down(111))).steps[0].line() \
        == e(111, 0)
    assert len(plan_health(config, observed(kernel), OWNED, HealthView(down(111))).steps) == 1
    assert not plan_health(config, observed(kernel), State(), HealthView(down(111))).steps


def test_the_health_file_round_trips() -> None:
    view = HealthView({**down(111), **up(112)},
                      [Disabled("192.168.30.111"), Disabled("2001:db8::1", "2001:db8::10", 443)])
    assert from_json(to_json(view), "h.json") == view


@pytest.mark.parametrize("text", [
    "[]", '{"version": 2, "health": {"version": 1, "targets": []}, "disabled": []}',
    '{"version": 1, "health": {"version": 1, "targets": []}, "disabled": [{"address": '
    '"192.168.030.1", "vip": null, "vport": null}]}',
    '{"version": 1, "health": {"version": 1, "targets": []}, "disabled": [{"address": '
    '"192.168.30.1", "vip": "192.168.30.254", "vport": 0}]}',
    '{"version": 1, "health": {"version": 1, "targets": [{}]}, "disabled": []}',
])
def test_a_corrupt_health_file_is_refused_naming_it(text: str) -> None:
    from lvs_scripts.errors import StateError

    with pytest.raises(StateError, match=r"h\.json: health state file is corrupt"):
        from_json(text, "h.json")


def test_a_burst_of_1000_servers_failing_is_one_ipvsadm_process() -> None:
    from lvs_scripts.apply import Batch, units

    reals = ",\n".join(f'{{ address = "10.1.{i // 250}.{i % 250 + 1}" }}' for i in range(1000))
    config = parse_config(f"""
[director]
interface = "eth0"
[[service]]
vip = "192.168.30.254"
port = 80
real = [{reals}]
[service.check]
type = "tcp"
""")
    kernel = "-A -t 192.168.30.254:80 -s wlc\n" + "".join(
        f"-a -t 192.168.30.254:80 -r 10.1.{i // 250}.{i % 250 + 1}:80 -g -w 1\n"
        for i in range(1000))
    view = HealthView({TargetId("tcp", "192.168.30.254", 80, f"10.1.{i // 250}.{i % 250 + 1}",
                                80): Health(DOWN, 0, 3, "timeout", 1.0) for i in range(1000)})
    plan = plan_health(config, observed(kernel), OWNED, view)
    assert len(plan.steps) == 1000
    batches = list(units(plan.steps))
    assert len(batches) == 1 and isinstance(batches[0], Batch)


# ------------------------------------------------ fwmark services: one check port, the -f rules

FWMARK = """
[director]
interface = "eth0"
arping_count = 0

[[service]]
fwmark = 1
match = [ {{ vip = "192.168.30.254", port = 80 }}, {{ vip = "192.168.30.254", port = 443 }} ]
scheduler = "wrr"
persistence = 300
{sorry}
real = [
  {{ address = "192.168.30.111", weight = 1 }},
  {{ address = "192.168.30.112", weight = 2 }},
]
[service.check]
type = "http"
port = 80
on_failure = "{on_failure}"
"""
FW_SVC = "-A -f 1 -s wrr -p 300\n"
FW_RS = "-a -f 1 -r 192.168.30.{}:0 -g -w {}\n"
FW_OWNED = State.of(OwnedService(ServiceKey(Protocol.FWMARK, None, 1)))


def fw(last: int, state: str = DOWN) -> dict[TargetId, Health]:
    """The health key of a fwmark service's real server: the mark, and the check's port."""
    return {TargetId("fwmark", "0.0.0.0", 1, f"192.168.30.{last}", 80):  # noqa: S104
            Health(state, 0, 3, "connection refused", 1.0)}


FWMARK_CASES = [
    ("quiesce: weight 0 in the -f service", "quiesce", "", FW_RS.format(111, 1), fw(111),
     ["ipvsadm -e -f 1 -r 192.168.30.111:0 -g -w 0"]),
    ("quiesce: back up, back to its weight", "quiesce", "", FW_RS.format(111, 0),
     fw(111, UP), ["ipvsadm -e -f 1 -r 192.168.30.111:0 -g -w 1"]),
    ("remove: deleted from the -f service", "remove", "", FW_RS.format(111, 1), fw(111),
     ["ipvsadm -d -f 1 -r 192.168.30.111:0"]),
    ("sorry: all down, the sorry server comes in (port 0: the client's)", "quiesce",
     'sorry_server = "192.168.30.200"', FW_RS.format(111, 0),
     {**fw(111), **fw(112)}, ["ipvsadm -e -f 1 -r 192.168.30.112:0 -g -w 0",
                              "ipvsadm -a -f 1 -r 192.168.30.200:0 -g -w 1"]),
]


@pytest.mark.parametrize(("name", "on_failure", "sorry", "rs1", "health", "expected"),
                         FWMARK_CASES, ids=[case[0] for case in FWMARK_CASES])
def test_fwmark_health_plans(name: str, on_failure: str, sorry: str, rs1: str,
                             health: dict[TargetId, Health], expected: list[str]) -> None:
    config = parse_config(FWMARK.format(sorry=sorry, on_failure=on_failure), "fw.toml")
    kernel = observed(FW_SVC + rs1 + FW_RS.format(112, 2))
    view = HealthView(dict(health))
    assert [step.line() for step in plan_health(config, kernel, FW_OWNED, view).steps] == \
        expected
    reload = plan_director_start(config, kernel, FW_OWNED, view=view)
    assert [s.line() for s in reload.steps if s.argv[0] == "ipvsadm"] == expected


def test_fwmark_targets_check_the_configured_port_and_name_the_match_vip() -> None:
    from lvs_scripts.watch import targets_of

    config = parse_config(FWMARK.format(sorry="", on_failure="quiesce"), "fw.toml")
    targets = targets_of(config)
    assert [(t.address, t.port, t.vip) for t in targets] == [
        ("192.168.30.111", 80, "192.168.30.254"), ("192.168.30.112", 80, "192.168.30.254")]
    assert str(targets[0].key) == "fwmark 1->192.168.30.111:80"
    view = HealthView({**fw(111), **fw(112, UP)})
    assert from_json(to_json(view), "h.json") == view  # the health file keeps them


def test_the_health_file_is_written_only_when_health_changes(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A reload after an edit of the config reads the health file and changes nothing in
    it: not written again (10,000 entries were over a second of the lab VM's reload).
    A change of health, or of what an admin disabled, is written."""
    from lvs_scripts import state as state_module
    from lvs_scripts.director import Director
    from lvs_scripts.healthstate import load_health
    from lvs_scripts.locks import Paths

    paths = Paths("lvs-director", str(tmp_path / "state"), str(tmp_path / "lock"))
    director = Director(config_for(QUIESCE, ""), paths=paths)
    writes: list[str] = []
    original = state_module.write_atomically

    def counted(paths, target, text):  # type: ignore[no-untyped-def]
        writes.append(target)
        return original(paths, target, text)

    monkeypatch.setattr(state_module, "write_atomically", counted)

    def setting(health, disabled=()):  # type: ignore[no-untyped-def]
        def update(view: HealthView) -> HealthView:
            view.health, view.disabled = dict(health), list(disabled)
            return view
        return update

    director.store_health(setting(down(111)))
    assert writes == [paths.health_file]
    assert director.store_health(setting(down(111))) == HealthView(down(111))
    assert len(writes) == 1
    director.store_health(setting({**down(111), **up(112)}))
    assert len(writes) == 2
    assert load_health(paths) == HealthView({**down(111), **up(112)})
    director.store_health(setting({**down(111), **up(112)}, [Disabled("192.168.30.112")]))
    assert len(writes) == 3
    assert load_health(paths).disabled == [Disabled("192.168.30.112")]


def test_the_watchers_reload_plans_its_health_and_writes_it_after_the_kernel(
        fakehost_inprocess, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """reload_with_health (the watcher's SIGHUP) plans from the watcher's own view, so a
    server down in it goes to weight 0, and writes the health file once the kernel has
    the change (writing 10,000 entries first delayed it by a second in the lab VM)."""
    from lvs_scripts import state as state_module
    from lvs_scripts.director import Director
    from lvs_scripts.healthstate import load_health
    from lvs_scripts.locks import Paths

    host = fakehost_inprocess
    paths = Paths("lvs-director", str(tmp_path / "state"), str(tmp_path / "lock"))
    director = Director(config_for(QUIESCE, ""), paths=paths)
    director.start()
    kernel_when_written: list[str] = []
    original = state_module.write_atomically

    def watched(paths_, target, text):  # type: ignore[no-untyped-def]
        if target == paths.health_file:
            kernel_when_written.append(host.cmd("ipvsadm", "-S", "-n").stdout)
        return original(paths_, target, text)

    monkeypatch.setattr(state_module, "write_atomically", watched)

    def update(view: HealthView) -> HealthView:
        view.health = {**down(111), **up(112)}
        return view

    report, view = director.reload_with_health(update)
    assert [line for line in report.outcome.applied if "ipvsadm" in line] == [e(111, 0)]
    assert len(kernel_when_written) == 1 and RS1.format(0).strip() in kernel_when_written[0]
    assert load_health(paths) == view == HealthView({**down(111), **up(112)})
    assert director.health_view() == view  # the file again, now that the reload is done
