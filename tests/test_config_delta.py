"""config_delta: a config read again after an edit equals the full parse of the new text.

Differential: each base text is parsed in full, edited (by hand-written edits and by
random ones, at the character level), and the edit read by `reparse`. Whenever reparse
answers, its Config (every field, the ones equality leaves out too) and its layout must
be the full parse's; for a text the full parse refuses, it must not answer at all. The
tests that prove the delta is TAKEN (weight edits, the watcher's and the CLI's reads) are
the ones that fail without it.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from lvs_scripts import config_delta
from lvs_scripts.config import load_config, parse_config
from lvs_scripts.config_delta import Parsed, parse, read_again, reparse
from lvs_scripts.errors import ConfigError
from tests.counting import count_calls

PATH = "/etc/lvs/lvs.toml"

DR = '''[director]
interface = "eth0"

[[service]]
vip = "192.168.30.254"
port = 80
scheduler = "wrr"
real = [
  { address = "192.168.30.111", weight = 1 },
  { address = "192.168.30.112", weight = 2 },
  { address = "192.168.30.113" },
  { address = "192.168.30.114", weight = 0, port = 80 },
]
'''

MANY = '''[director]
interface = "eth0"
arping_count = 0

[[service]]
vip = "10.200.0.1"
port = 80
scheduler = "wrr"
real = [{address="10.100.0.1",weight=1},{address="10.100.0.2",weight=1},
{address="10.100.0.3",weight=5}]
sorry_server = "10.100.9.9"
[service.check]
type = "tcp"
interval = 5

[[service]]
vip = "10.200.0.2"
port = 8080
forwarding = "nat"
real = [
  { address = "10.100.1.1", port = 80, weight = 3 },
  { address = "10.100.1.2", port = 81, upper = 100, lower = 10 },
]

[[service]]
vip = "10.200.0.3"
port = 80
forwarding = "tun"
tun_type = "gue"
tun_port = 6080
real = [
  { address = "10.100.2.1" }, { address = "10.100.2.2", weight = 7 },
]

[[service]]
vip = "2001:db8::1"
port = 443
real = [
  { address = "2001:db8::10", weight = 1 },
  { address = "2001:db8::11", weight = 2 },
]

[[service]]
fwmark = 7
match = [{ protocol = "tcp", vip = "10.200.0.9", port = 443 }]
real = [
  { address = "10.100.3.1", weight = 1 },
  { address = "10.100.3.2", weight = 1 },
]
'''

CRLF = DR.replace("\n", "\r\n")

BASES = {"dr": DR, "many": MANY, "crlf": CRLF}


def dump(value: object) -> object:
    """Every field, also those Record and dataclass equality leave out (the check, the
    sorry server, drain_seconds, match), with each leaf's type."""
    fields = getattr(type(value), "_record_fields", None)
    if fields is not None:
        return (type(value).__name__, tuple((name, dump(getattr(value, name)))
                                            for name in fields))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple((f.name, dump(getattr(value, f.name)))
                                            for f in dataclasses.fields(value)))
    if isinstance(value, (tuple, list)):
        return tuple(dump(item) for item in value)
    if isinstance(value, dict):
        return tuple((key, dump(item)) for key, item in value.items())
    return (type(value).__name__, value)


def full(text: str) -> Parsed | None:
    try:
        return parse(text, PATH)
    except ConfigError:
        return None


def check_edit(base: Parsed, text: str) -> Parsed | None:
    """reparse agrees with the full parse, or does not answer; its answer."""
    got = reparse(base, text, PATH)
    want = full(text)
    if got is None:
        return None
    assert want is not None, f"reparse took a text the full parse refuses:\n{text}"
    assert dump(got.config) == dump(want.config), text
    assert got.layout == want.layout, text
    assert got.text == text
    return got


@pytest.mark.parametrize("name", sorted(BASES))
def test_a_weight_edit_is_read_from_the_base_and_equals_the_full_parse(name: str) -> None:
    text = BASES[name]
    base = parse(text, PATH)
    taken = 0
    for service, span_index in _real_spans(base):
        for element in range(len(base.layout.spans[span_index].items) - 1):
            for weight in (0, 9, 65535, 123):
                edited = _set_weight(base, span_index, element, weight)
                got = check_edit(base, edited)
                if base.config.services[service].key.address is not None:
                    assert got is not None, edited
                    dest = got.config.services[service].destinations[element]
                    assert dest.weight == weight
                    taken += 1
    assert taken > 0


def _real_spans(base: Parsed) -> list[tuple[int, int]]:
    return [(owner, index) for index, owner in enumerate(base.layout.owners) if owner >= 0]


def _set_weight(base: Parsed, span_index: int, element: int, weight: int) -> str:
    """The element's weight set (added if it has none), by text."""
    span = base.layout.spans[span_index]
    start = span.start + span.items[element]
    stop = span.start + span.items[element + 1]
    part = base.text[start:stop]
    if "weight" in part:
        head, _, rest = part.partition("weight")
        value_end = rest.index("=") + 1
        while rest[value_end] in " \t":
            value_end += 1
        digits = value_end
        while rest[digits].isdigit():
            digits += 1
        part = f"{head}weight{rest[:value_end]}{weight}{rest[digits:]}"
    else:
        close = part.rindex("}")
        part = f"{part[:close].rstrip()}, weight = {weight} {part[close:]}"
    return base.text[:start] + part + base.text[stop:]


# (old, new, must reparse answer): edits of DR by hand; where it may not answer, the
# full parse is what counts (many of these are errors it reports).
EDITS: list[tuple[str, str, bool]] = [
    ('"192.168.30.112", weight = 2', '"192.168.30.112", weight = 2, upper = 10', True),
    ('"192.168.30.112", weight = 2', '"192.168.30.112", weight = 2, upper = 5, lower = 9',
     False),  # lower above upper: an error
    ('"192.168.30.112", weight = 2', '"192.168.30.112", weight = 65536', False),
    ('"192.168.30.112", weight = 2', '"192.168.30.112", weight = true', False),
    ('"192.168.30.112", weight = 2', '"192.168.30.112", weight = -1', False),
    ('"192.168.30.112", weight = 2', '"192.168.30.112", weight = 2, weight = 3', False),
    ('"192.168.30.112", weight = 2', '"192.168.30.112", wieght = 2', False),
    ('"192.168.30.112", weight = 2', '"192.168.30.115", weight = 2', False),  # address
    ('"192.168.30.112", weight = 2', '"192.168.30.111", weight = 2', False),  # duplicate
    ('"192.168.30.112", weight = 2', '"192.168.30.254", weight = 2', False),  # the VIP
    ('"192.168.30.112", weight = 2', '"192.168.30.112", weight = 2, port = 81', False),
    ('{ address = "192.168.30.113" },\n', '', False),  # removed
    ('{ address = "192.168.30.113" },\n',
     '{ address = "192.168.30.113" },\n  { address = "192.168.30.120" },\n', False),  # added
    ('{ address = "192.168.30.113" },', '{ address = "192.168.30.113" }', False),
    ('{ address = "192.168.30.113" },', '{ address = "192.168.30.113" }, # note', False),
    ('{ address = "192.168.30.113" },', '{ address = "192.168.30.113", weight = 4 },', True),
    ('{ address = "192.168.30.113" }', '{ address = "192.168.30.113"\n }', False),
    ('  { address = "192.168.30.114", weight = 0, port = 80 },\n',
     '  { address = "192.168.30.114", weight = 1, port = 80 }\n', False),  # its comma off
    ('weight = 1 },\n  { address = "192.168.30.112", weight = 2 }',
     'weight = 3 },\n  { address = "192.168.30.112", weight = 4 }', True),  # two at once
    ('scheduler = "wrr"', 'scheduler = "rr"', False),  # outside the elements
    ('port = 80\n', 'port = 81\n', False),
    ('real = [\n', 'real = [ \n', True),  # a blank before the first element
    ('  { address = "192.168.30.111"', '{ address = "192.168.30.111"', True),  # blanks only
]


@pytest.mark.parametrize("old, new, answers", EDITS, ids=[e[1][:40] for e in EDITS])
def test_hand_edits(old: str, new: str, answers: bool) -> None:
    assert DR.count(old) == 1, old
    base = parse(DR, PATH)
    got = check_edit(base, DR.replace(old, new))
    assert (got is not None) == answers


_ALPHABET = '0123456789 \t\n\r,{}="#abwzy.:-[]'


def _mutate(rng: random.Random, text: str, spans: list[tuple[int, int]]) -> str:
    """One random change of a character or a few, mostly inside an array's elements."""
    if spans and rng.random() < 0.9:
        start, stop = rng.choice(spans)
    else:
        start, stop = 0, len(text)
    at = rng.randrange(start, stop)
    kind = rng.randrange(4)
    if kind == 0:
        return text[:at] + rng.choice(_ALPHABET) + text[at + 1:]
    if kind == 1:
        return text[:at] + rng.choice(_ALPHABET) + text[at:]
    if kind == 2:
        return text[:at] + text[at + rng.randrange(1, 4):]
    if text[at].isdigit():  # a digit changed: weights, ports, addresses
        return text[:at] + rng.choice("0123456789") + text[at + 1:]
    return text


@pytest.mark.parametrize("name", sorted(BASES))
def test_random_edits_read_again_as_the_full_parse_reads_them(name: str) -> None:
    rng = random.Random(f"delta-{name}")
    base = parse(BASES[name], PATH)
    answered = 0
    for _ in range(3000):
        spans = [(base.layout.spans[i].start, base.layout.spans[i].end)
                 for i, _owner in enumerate(base.layout.owners)]
        text = base.text
        for _ in range(rng.randrange(1, 3)):
            text = _mutate(rng, text, spans)
        if check_edit(base, text) is not None:
            answered += 1
    assert answered > 100  # the random edits do reach the delta (digits of weights)


def test_a_chain_of_edits_each_read_from_the_last() -> None:
    """As the watcher does: each read starts from the one before, whichever way it went."""
    rng = random.Random("chain")
    base = parse(MANY, PATH)
    answered = 0
    for _ in range(400):
        owner_spans = _real_spans(base)
        _service, span_index = rng.choice(owner_spans)
        element = rng.randrange(len(base.layout.spans[span_index].items) - 1)
        text = _set_weight(base, span_index, element, rng.randrange(0, 100000))
        got = check_edit(base, text)
        if got is not None:
            answered += 1
            base = got
        elif (parsed := full(text)) is not None:
            base = parsed
    assert answered > 200


def test_the_watcher_reads_an_edit_without_parsing_it_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lvs.toml"
    path.write_text(DR)
    config_delta._last.clear()
    fulls = count_full_parses(monkeypatch)
    load_config(str(path))
    path.write_text(DR.replace('weight = 2', 'weight = 5'))
    again = load_config(str(path))
    assert len(fulls) == 1
    assert dump(again) == dump(parse_config(path.read_text(), str(path)))
    assert again.services[0].destinations[1].weight == 5


def test_a_cli_run_after_an_edit_reads_it_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new process: nothing in memory, the cache file keeps the last text and Config."""
    end = DR.rindex("]\n")  # the array's: a file above the cache's least size
    text = DR[:end] + "".join(f'  {{ address = "192.168.31.{n}" }},\n'
                              for n in range(1, 200)) + DR[end:]
    path, cache = tmp_path / "lvs.toml", tmp_path / "cache"
    path.write_text(text)
    fulls = count_full_parses(monkeypatch)
    config_delta._last.clear()
    load_config(str(path), str(cache))
    config_delta._last.clear()  # as a new process
    path.write_text(text.replace('"192.168.31.7" }', '"192.168.31.7", weight = 0 }'))
    again = load_config(str(path), str(cache))
    assert len(fulls) == 1
    assert dump(again) == dump(parse_config(path.read_text(), str(path)))
    config_delta._last.clear()
    # Not kept (read_again says why): the next run reads the edit from the same text.
    assert dump(load_config(str(path), str(cache))) == dump(again)
    assert len(fulls) == 1
    config_delta._last.clear()
    path.write_text(path.read_text().replace('"192.168.31.8" }', '"192.168.32.8" }'))
    moved = load_config(str(path), str(cache))  # an address: parsed in full, and kept
    assert len(fulls) == 2
    config_delta._last.clear()
    assert dump(load_config(str(path), str(cache))) == dump(moved)
    assert len(fulls) == 2  # a hit


def test_a_base_of_another_file_is_not_used(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = tmp_path / "one.toml", tmp_path / "two.toml"
    one.write_text(DR)
    two.write_text(DR.replace("weight = 2", "weight = 3"))
    config_delta._last.clear()
    fulls = count_full_parses(monkeypatch)
    load_config(str(one))
    assert load_config(str(two)).path == str(two)
    assert len(fulls) == 2


def test_an_invalid_edit_is_refused_as_ever(tmp_path: Path) -> None:
    path = tmp_path / "lvs.toml"
    path.write_text(DR)
    config_delta._last.clear()
    load_config(str(path))
    path.write_text(DR.replace("weight = 2", "weight = 70000"))
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "service[0].real[1].weight" in str(err.value)
    assert "70000" in str(err.value)


def count_full_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return count_calls(monkeypatch, config_delta, "parse", lambda _text, path: path)


def test_read_again_remembers_one_parse() -> None:
    config_delta._last.clear()
    assert read_again(DR, "/a.toml")[1]
    assert read_again(DR.replace("weight = 2", "weight = 3"), "/a.toml")[1]  # the watcher
    read_again(DR, "/b.toml")
    assert [p.config.path for p in config_delta._last] == ["/b.toml"]


def test_an_edit_of_many_elements_is_parsed_in_full() -> None:
    """Past MAX_ELEMENTS, reading each element by the general path costs more than the
    full parse's inline one."""
    count = config_delta.MAX_ELEMENTS + 2
    text = _with_reals(count)
    base = parse(text, PATH)
    first, last = '"10.9.0.1" }', f'"10.9.{(count - 1) // 250}.{(count - 1) % 250 + 1}" }}'
    both = text.replace(first, '"10.9.0.1", weight = 2 }').replace(
        last, last[:-2] + ", weight = 2 }")
    assert reparse(base, both, PATH) is None
    one = text.replace(first, '"10.9.0.1", weight = 2 }')
    assert check_edit(base, one) is not None


def _with_reals(count: int) -> str:
    end = DR.rindex("]\n")
    return DR[:end] + "".join(f'  {{ address = "10.9.{n // 250}.{n % 250 + 1}" }},\n'
                              for n in range(count)) + DR[end:]
