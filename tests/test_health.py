"""The rise/fall machine as data tables, and the saved form of health state."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from lvs_scripts.checks import CheckResult, CheckSpec
from lvs_scripts.errors import StateError
from lvs_scripts.health import (
    DOWN,
    MAX_COUNT,
    MAX_REASON,
    UNKNOWN,
    UP,
    Health,
    HealthStateError,
    TargetId,
    Transition,
    after_check_change,
    health_from_data,
    health_to_data,
    observe,
)
from tests.counting import count_calls

SPEC = CheckSpec(rise=2, fall=3)


def run(start: str, results: str, spec: CheckSpec = SPEC) -> tuple[list[str], list[str]]:
    """Feed results ("+" ok, "-" failed) from a state; the state after each one, and the
    transitions made, as "old>new@index"."""
    health = Health(state=start)
    states, transitions = [], []
    for index, mark in enumerate(results):
        result = CheckResult(mark == "+", "ok" if mark == "+" else f"fail {index}", 0.01)
        health, transition = observe(health, result, spec, now=float(index))
        states.append(health.state)
        if transition is not None:
            assert (transition.at, health.since) == (float(index), float(index))
            transitions.append(f"{transition.old}>{transition.new}@{index}")
    return states, transitions


U, D, K = UP, DOWN, UNKNOWN

TABLE = [
    # start, results, states after each result, transitions
    ("unknown: treated as up until `fall` failures",
     K, "---", [K, K, D], ["unknown>down@2"]),
    ("unknown: the first success settles it up",
     K, "+", [U], ["unknown>up@0"]),
    ("unknown: failures below fall, then a success",
     K, "--+", [K, K, U], ["unknown>up@2"]),
    ("down (persisted) needs `rise` successes",
     D, "+-++", [D, D, D, U], ["down>up@3"]),
    ("up: fall consecutive failures, a success in between restarts the count",
     U, "--+---", [U, U, U, U, U, D], ["up>down@5"]),
    ("up stays up on successes", U, "++++", [U, U, U, U], []),
    ("down stays down on failures", D, "----", [D, D, D, D], []),
    ("a flapping server neither falls nor rises", U, "-+-+-+-+", [U] * 8, []),
    ("a flapping down server never rises", D, "+-+-+-+-", [D] * 8, []),
    ("down, up, down again", D, "++---", [D, U, U, U, D], ["down>up@1", "up>down@4"]),
]


@pytest.mark.parametrize(("start", "results", "states", "transitions"),
                         [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_rise_fall(start: str, results: str, states: list[str], transitions: list[str]) -> None:
    assert run(start, results) == (states, transitions)


@pytest.mark.parametrize(("rise", "fall", "start", "results", "states"), [
    (1, 1, U, "-", [D]),
    (1, 1, D, "+", [U]),
    (5, 1, D, "++++-+++++", [D] * 9 + [U]),
    (1, 4, K, "----", [K, K, K, D]),
])
def test_rise_and_fall_settings(rise: int, fall: int, start: str, results: str,
                                states: list[str]) -> None:
    assert run(start, results, CheckSpec(rise=rise, fall=fall))[0] == states


def test_counters_reasons_and_since() -> None:
    health = Health(state=UP, since=5.0)
    health, transition = observe(health, CheckResult(False, "connection refused", 0.0), SPEC, 9.0)
    assert transition is None
    assert health == Health(UP, 0, 1, "connection refused", 5.0)  # since: state unchanged
    health, _ = observe(health, CheckResult(True, "ok", 0.0), SPEC, 10.0)
    assert (health.successes, health.failures, health.reason) == (1, 0, "ok")


def test_counters_saturate_and_reasons_are_bounded() -> None:
    health = Health(state=UP)
    for _ in range(250):
        health, _ = observe(health, CheckResult(True, "x" * 1000, 0.0), SPEC, 0.0)
    assert health.successes == 100
    assert len(health.reason) == 200


def test_serving_and_changes_service() -> None:
    assert Health(UP).serving and Health(UNKNOWN).serving and not Health(DOWN).serving
    assert not Transition(UNKNOWN, UP, "ok", 0.0).changes_service
    assert Transition(UNKNOWN, DOWN, "x", 0.0).changes_service
    assert Transition(DOWN, UP, "ok", 0.0).changes_service


def test_a_changed_check_keeps_the_state_and_restarts_the_counters() -> None:
    assert after_check_change(Health(DOWN, 1, 0, "ok", 3.0)) == Health(DOWN, 0, 0, "ok", 3.0)


# ----------------------------------------------------------------- saved form

KEY = TargetId("tcp", "192.0.2.1", 80, "192.0.2.11", 80)
KEY6 = TargetId("tcp", "2001:db8::1", 443, "2001:db8::11", 8443)


def test_round_trip_through_json() -> None:
    healths = {KEY6: Health(DOWN, 0, 3, "HTTP 500", 12.5), KEY: Health(UP, 4, 0, "ok", 1.0),
               TargetId("udp", "192.0.2.1", 53, "192.0.2.12", 53): Health()}
    data = json.loads(json.dumps(health_to_data(healths)))
    assert data["version"] == 1
    assert [entry["address"] for entry in data["targets"]] == [
        "192.0.2.11", "2001:db8::11", "192.0.2.12"]  # sorted: protocol, VIP, port, address
    assert health_from_data(data) == healths


def good_entry(**changes: Any) -> dict[str, Any]:
    entry = {"protocol": "tcp", "vip": "192.0.2.1", "vport": 80, "address": "192.0.2.11",
             "port": 80, "state": "down", "successes": 1, "failures": 0, "reason": "ok",
             "since": 3.0}
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not ...}


def doc(*entries: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "targets": list(entries), **top}


@pytest.mark.parametrize(("data", "message"), [
    ([], r"health: must be an object"),
    ({"version": 1}, r"exactly the keys 'version' and 'targets'"),
    (doc(extra=1), r"exactly the keys"),
    ({"version": 2, "targets": []}, r"health.version = 2: this version reads .* version 1"),
    ({"version": True, "targets": []}, r"health.version = True"),
    ({"version": 1, "targets": {}}, r"health.targets: must be a list"),
    (doc("x"), r"targets\[0\]: must be an object"),
    (doc(good_entry(weight=3)), r"targets\[0\]: unknown field\(s\) \['weight'\]"),
    (doc(good_entry(since=...)), r"targets\[0\]: missing field\(s\) \['since'\]"),
    (doc(good_entry(state="sick")), r"targets\[0\].state = 'sick': must be one of up, down"),
    (doc(good_entry(protocol="icmp")), r"targets\[0\].protocol = 'icmp'"),
    (doc(good_entry(protocol="fwmark", vport=2**32)),
     r"targets\[0\].vport = 4294967296: must be an integer from 1 to 4294967295"),
    (doc(good_entry(vport=70000)), r"targets\[0\].vport = 70000: .* from 1 to 65535"),
    (doc(good_entry(vip="192.0.2.300")), r"targets\[0\].vip = '192.0.2.300': must be an IP"),
    (doc(good_entry(address="2001:DB8::1")), r"targets\[0\].address = '2001:DB8::1'.*canonical"),
    (doc(good_entry(port=0)), r"targets\[0\].port = 0: must be an integer from 1 to 65535"),
    (doc(good_entry(vport="80")), r"targets\[0\].vport = '80'"),
    (doc(good_entry(successes=101)), r"targets\[0\].successes = 101"),
    (doc(good_entry(failures=True)), r"targets\[0\].failures = True"),
    (doc(good_entry(successes=1, failures=1)), r"targets\[0\]: successes and failures"),
    (doc(good_entry(since=float("nan"))), r"targets\[0\].since = nan"),
    (doc(good_entry(since=-1)), r"targets\[0\].since = -1"),
    (doc(good_entry(reason=7)), r"targets\[0\].reason: must be a string"),
    (doc(good_entry(reason="x" * 201)), r"targets\[0\].reason: .* at most 200"),
    (doc(good_entry(), good_entry(state="up")),
     r"targets\[1\]: tcp:192.0.2.1:80->192.0.2.11:80 is listed twice"),
])
def test_invalid_saved_state_is_refused_with_the_entry_and_field(data: object,
                                                                 message: str) -> None:
    with pytest.raises(HealthStateError, match=message) as caught:
        health_from_data(data)
    assert isinstance(caught.value, StateError)  # the CLI's "state file" error, exit 1


def test_the_good_entry_is_accepted() -> None:  # so that each refusal above is one field's
    assert health_from_data(doc(good_entry())) == {KEY: Health(DOWN, 1, 0, "ok", 3.0)}


def test_a_steady_state_keeps_the_same_record() -> None:
    """Thousands of checks a second: an unchanged health is not built again."""
    spec = CheckSpec(rise=2, fall=3)
    health = Health(UP, MAX_COUNT, 0, "ok", 5.0)
    same, transition = observe(health, CheckResult(True, "ok", 0.01), spec, 9.0)
    assert same is health and transition is None
    changed, _ = observe(health, CheckResult(False, "connection refused", 0.01), spec, 9.0)
    assert changed == Health(UP, 0, 1, "connection refused", 5.0)


def test_the_health_file_of_100000_targets_at_their_largest_is_read_back(
        tmp_path: Path) -> None:
    """Issue 14's largest table (the lab's side-by-side run found the watcher refusing its
    own file at 100,000 targets): every target IPv6, down, with the longest reason."""
    from lvs_scripts.healthstate import MAX_FILE_BYTES, HealthView, load_health, save_health
    from lvs_scripts.locks import Paths

    first = ipaddress.ip_address("2001:db8:ffff:ffff:ffff:ffff:ffff:0")
    view = HealthView({
        TargetId("sctp", str(first + 0x1000 + n // 100), 65535, str(first + 0x10000 + n),
                 65535): Health(DOWN, 0, MAX_COUNT, "x" * MAX_REASON, 1764470000.123456)
        for n in range(100_000)})
    paths = Paths("lvs-director", str(tmp_path / "state"), str(tmp_path / "lock"))
    save_health(paths, view)
    assert Path(paths.health_file).stat().st_size <= MAX_FILE_BYTES
    assert load_health(paths) == view


def test_the_health_file_is_parsed_again_only_when_its_bytes_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload reads the file several times (0.3 s each at 10,000 targets here): what
    this process wrote or read last is taken back while the bytes are the same; a file
    another process wrote is read anew, and no caller's changes leak into the next."""
    from lvs_scripts import healthstate
    from lvs_scripts.healthstate import HealthView, load_health, save_health, to_json
    from lvs_scripts.locks import Paths

    paths = Paths("lvs-director", str(tmp_path / "state"), str(tmp_path / "lock"))
    up, down = TargetId("tcp", "192.0.2.1", 80, "192.0.2.11", 80), TargetId(
        "tcp", "192.0.2.1", 80, "192.0.2.12", 80)
    save_health(paths, HealthView({up: Health(UP, 2, 0, "ok", 1.0)}))
    parsed = count_calls(monkeypatch, healthstate, "from_json")
    first = load_health(paths)
    first.health[down] = Health(DOWN, 0, 3, "refused", 2.0)  # a caller's own change
    assert load_health(paths).health == {up: Health(UP, 2, 0, "ok", 1.0)}
    assert parsed == []
    other = HealthView({down: Health(DOWN, 0, 3, "HTTP 500", 3.0)})
    Path(paths.health_file).write_text(to_json(other))  # another process's write
    assert load_health(paths) == other and len(parsed) == 1
    assert load_health(paths) == other and len(parsed) == 1


def test_the_health_file_is_json_with_one_target_a_line() -> None:
    from lvs_scripts.healthstate import Disabled, HealthView, to_json

    healths = {TargetId("tcp", "192.0.2.1", 80, f"192.0.2.{n}", 80): Health(UP, 2, 0, "ok", 1.0)
               for n in range(11, 14)}
    for view in (HealthView(), HealthView(healths, [Disabled("192.0.2.9")])):
        text = to_json(view)
        assert json.loads(text) == {"version": 1, "health": health_to_data(view.health),
                                    "disabled": [{"address": d.address, "vip": d.vip,
                                                  "vport": d.vport} for d in view.disabled]}
        for key in view.health:
            assert sum(f'"address": "{key.address}"' in line
                       for line in text.splitlines()) == 1


def test_a_health_file_written_while_it_is_opened_for_the_first_time_is_no_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher writes its first file while `disable` reads: absent when opened, there
    a moment later. That reader knows nothing yet; asking lexists() after the failed open
    turned the race into "No such file or directory" (seen once in tests/test_watch.py)."""
    import os

    from lvs_scripts.healthstate import HealthView, load_health, to_json
    from lvs_scripts.locks import Paths

    paths = Paths("lvs-director", str(tmp_path / "state"), str(tmp_path / "lock"))
    Path(paths.state_dir).mkdir(mode=0o755)
    written = HealthView({TargetId("tcp", "192.0.2.1", 80, "192.0.2.11", 80):
                          Health(UP, 2, 0, "ok", 1.0)})
    real_open = os.open

    def open_then_written(path: str, flags: int, *args: Any) -> int:
        if path == paths.health_file and not Path(path).exists():
            fd = real_open(path, os.O_WRONLY | os.O_CREAT, 0o644)  # the watcher, just after
            os.write(fd, to_json(written).encode())
            os.close(fd)
            raise FileNotFoundError(2, "No such file or directory", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_then_written)
    assert load_health(paths) == HealthView()
    assert load_health(paths) == written


def test_the_health_file_lists_targets_by_protocol_vip_port_address_port() -> None:
    """Sorted by address value, IPv4 before IPv6, not as text (192.0.2.9 before .10)."""
    keys = [TargetId("tcp", "192.0.2.1", 80, "192.0.2.10", 80),
            TargetId("tcp", "2001:db8::1", 80, "2001:db8::9", 80),
            TargetId("udp", "192.0.2.1", 53, "192.0.2.9", 53),
            TargetId("tcp", "192.0.2.1", 80, "192.0.2.9", 8080),
            TargetId("tcp", "192.0.2.1", 80, "2001:db8::a", 80),
            TargetId("tcp", "192.0.2.1", 80, "192.0.2.9", 80),
            TargetId("tcp", "10.0.0.1", 443, "192.0.2.9", 80),
            TargetId("tcp", "2001:db8::1", 80, "2001:db8::10", 80)]
    listed = [(t["protocol"], t["vip"], t["vport"], t["address"], t["port"])
              for t in health_to_data({key: Health(UP) for key in keys})["targets"]]
    assert listed == [
        ("tcp", "10.0.0.1", 443, "192.0.2.9", 80),
        ("tcp", "192.0.2.1", 80, "192.0.2.9", 80),
        ("tcp", "192.0.2.1", 80, "192.0.2.9", 8080),
        ("tcp", "192.0.2.1", 80, "192.0.2.10", 80),
        ("tcp", "192.0.2.1", 80, "2001:db8::a", 80),
        ("tcp", "2001:db8::1", 80, "2001:db8::9", 80),
        ("tcp", "2001:db8::1", 80, "2001:db8::10", 80),
        ("udp", "192.0.2.1", 53, "192.0.2.9", 53)]


def _old_to_json(view: Any) -> str:
    """The health file as written before health_entry_line: json.dumps per entry."""
    from lvs_scripts.healthstate import FILE_VERSION

    def lines(items: list[dict[str, Any]], pad: str) -> str:
        return "[" + ",".join(f"\n{pad} {json.dumps(item, sort_keys=True)}"
                              for item in items) + (f"\n{pad}]" if items else "]")

    disabled = [{"address": d.address, "vip": d.vip, "vport": d.vport} for d in view.disabled]
    health = health_to_data(view.health)
    rest = {k: v for k, v in health.items() if k != "targets"}
    return (f'{{\n "disabled": {lines(disabled, " ")},\n "health": {{'
            + "".join(f"\n  {json.dumps(k)}: {json.dumps(v)}," for k, v in sorted(rest.items()))
            + f'\n  "targets": {lines(health["targets"], "  ")}\n }},\n'
            f' "version": {FILE_VERSION}\n}}')


ODD_REASONS = ["", "ok", 'say "hi"', "back\\slash", "tab\there", "new\nline", "\x00\x1f\x7f",
               "caf\u00e9 \u2603 \U0001f600", "\ud800", "</script>", "a" * 300]
ODD_SINCE = [0.0, 1.0, -0.0, 1e100, 1.5e-7, 1764500000.123456, 3, True, float("nan"),
             float("inf"), float("-inf")]


@pytest.mark.parametrize("since", ODD_SINCE, ids=repr)
def test_the_health_file_is_written_as_json_dumps_would(since: Any) -> None:
    """to_json writes each target with one % (health_entry_line), not json.dumps (an
    encoder built per call, most of a save's time at 10,000): the text is the same, byte
    for byte, whatever the strings and numbers hold."""
    from lvs_scripts.healthstate import Disabled, HealthView, to_json

    healths = {TargetId(protocol, vip, 80, address, port): Health(state, n, n + 1, reason,
                                                                  since)
               for n, (protocol, vip, address, port, state, reason) in enumerate([
                   ("tcp", "192.0.2.1", "192.0.2.10", 80, UP, ODD_REASONS[0]),
                   ("udp", "2001:db8::1", "2001:db8::a", 8080, DOWN, ODD_REASONS[1]),
                   *(("sctp", "198.51.100.1", f"198.51.100.{i + 2}", 65535, UNKNOWN, reason)
                     for i, reason in enumerate(ODD_REASONS))])}
    view = HealthView(healths, [Disabled("192.0.2.10"), Disabled("2001:db8::a", "2001:db8::1",
                                                                 443)])
    assert to_json(view) == _old_to_json(view)
    assert to_json(HealthView()) == _old_to_json(HealthView())
    assert to_json(HealthView(dict(list(healths.items())[:1]))) == _old_to_json(
        HealthView(dict(list(healths.items())[:1])))


def test_saving_many_targets_does_not_call_json_dumps_for_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """json.dumps builds an encoder per call: 10,000 calls were most of a save."""
    from lvs_scripts.healthstate import HealthView, from_json, to_json

    view = HealthView({TargetId("tcp", "192.0.2.1", 80, str(ipaddress.ip_address("10.0.0.1") + n),
                                80): Health(UP, 3, 0, "ok", 1.5) for n in range(300)})
    calls: list[object] = []
    dumps = json.dumps

    def counted(*args: Any, **kwargs: Any) -> str:
        calls.append(args)
        return dumps(*args, **kwargs)

    monkeypatch.setattr(json, "dumps", counted)
    text = to_json(view)
    assert len(calls) <= 3, len(calls)
    assert from_json(text, "h.json") == view


@pytest.mark.parametrize("lines_kept", [10_000, 100])
def test_a_save_makes_lines_again_only_for_changed_health(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          lines_kept: int) -> None:
    """save_health keeps the last save's order and lines (healthstate._WRITTEN): the file
    is byte for byte to_json's, through changes, new targets and removed ones, and only
    the changed targets' lines are made again; above LINES_KEPT targets only the order
    is kept (no sort, every line made again)."""
    import random

    from lvs_scripts import healthstate
    from lvs_scripts.healthstate import HealthView, save_health, to_json
    from lvs_scripts.locks import Paths

    monkeypatch.setattr(healthstate, "LINES_KEPT", lines_kept)
    sorts = count_calls(monkeypatch, healthstate, "sorted_health")
    paths = Paths("lvs-director", str(tmp_path))
    rng = random.Random("save-memo")
    base = ipaddress.ip_address("10.0.0.1")
    healths = {TargetId("tcp", "192.0.2.1", 80, str(base + rng.randrange(5000)), 80):
               Health(UP, 1, 0, "ok", 1.0) for _ in range(400)}
    made = count_calls(monkeypatch, healthstate, "health_entry_line", lambda key, _h: key)
    for round_ in range(30):
        keys = list(healths)
        changed = rng.sample(keys, 3)
        for key in changed:
            healths[key] = Health(rng.choice([UP, DOWN, UNKNOWN]), round_, 1, f"r{round_}",
                                  float(round_))
        if round_ % 7 == 3:  # targets come and go
            del healths[keys[0]]
            healths[TargetId("tcp", "192.0.2.1", 80, str(base + 6000 + round_), 80)] = \
                Health()
        view = HealthView(dict(healths))
        made.clear()
        sorts.clear()
        save_health(paths, view)
        if round_ % 7 != 3 and round_:
            assert sorted(made) == sorted(changed) if lines_kept > 400 else \
                len(made) == len(healths)
            assert sorts == []
        assert Path(paths.health_file).read_text() == to_json(view)


GOOD_ENTRY = {"protocol": "tcp", "vip": "192.0.2.1", "vport": 80, "address": "10.0.0.7",
              "port": 8080, "state": "up", "successes": 3, "failures": 0, "reason": "ok",
              "since": 1764500000.25}
ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 65535, 65536, 100, 101, 2**32, 0.0, 1.0, -1.0, float("nan"),
    float("inf"), "", "tcp", "udp", "sctp", "fwmark", "TCP", "up", "down", "unknown", "x" * 201,
    "x" * 200, [], {}, ["tcp"], "10.0.0.7", "010.0.0.7", "10.0.0.07", "10.0.7", "10.0.0.7 ",
    " 10.0.0.7", "10.0.0.256", "0.0.0.0", "255.255.255.255", "::1", "2001:db8::1",  # noqa: S104 - data
    "2001:DB8::1", "::ffff:10.0.0.7", "1.2.3.4\x00"]


def entry_variants() -> list[dict[str, Any]]:
    variants: list[dict[str, Any]] = [dict(GOOD_ENTRY)]
    for name in GOOD_ENTRY:
        for value in ODD_VALUES:
            variants.append({**GOOD_ENTRY, name: value})
        variants.append({k: v for k, v in GOOD_ENTRY.items() if k != name})
    variants.append({**GOOD_ENTRY, "extra": 1})
    variants.append({**GOOD_ENTRY, "successes": 2, "failures": 1})
    variants.append({**GOOD_ENTRY, "protocol": "fwmark", "vport": 70000})
    return variants


def test_the_fast_entry_reads_as_the_general_one_or_leaves_it() -> None:
    """health._FastEntry: for every entry it answers, _entry gives the same key and
    health; it answers the entries we write (the common ones)."""
    from lvs_scripts.health import _entry, _FastEntry

    fast, answered = _FastEntry(), 0
    for entry in entry_variants():
        got = fast(entry)
        try:
            want: object = _entry(entry, "e")
        except HealthStateError as err:
            want = err
        if got is None:
            continue
        answered += 1
        assert not isinstance(want, HealthStateError), (entry, want)
        assert got == want and type(got[1].since) is type(want[1].since), entry
    assert answered > 40
    assert fast(dict(GOOD_ENTRY)) is not None
    assert fast({**GOOD_ENTRY, "vip": "2001:db8::1", "address": "2001:db8::7"}) is None
