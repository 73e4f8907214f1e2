"""toml_arrays.loads: the big arrays of inline tables read by a regex, the rest by tomllib.

Differential: for every text here, toml_arrays.loads(text) equals tomllib.loads(text) --
same values of the same types -- or both raise TOMLDecodeError with the same message. These
pass on the code before the fast path too (they prove equality); the ones that prove the
fast path is TAKEN, and the call count, are what fail without it."""

from __future__ import annotations

import importlib.util
import random
import sys
import tracemalloc
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tomllib

from lvs_scripts import toml_arrays
from lvs_scripts.config import parse_config
from tests.test_scale import python_calls, services_text

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def load_bench(name: str) -> ModuleType:
    """bench/ is scripts, not a package (bench_lab imports its sibling `bench`)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def typed(value: object) -> object:
    """The value with every leaf's exact type beside it: == alone takes True for 1."""
    if isinstance(value, dict):
        return ("dict", {key: typed(item) for key, item in value.items()})
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    return (type(value).__name__, value)


def outcome(loads: Any, text: str) -> object:
    try:
        return typed(loads(text))
    except Exception as err:  # TOMLDecodeError; tomllib's RecursionError, int's ValueError
        return ("error", type(err).__name__, str(err))


def assert_same(text: str) -> None:
    assert outcome(toml_arrays.loads, text) == outcome(tomllib.loads, text), text


def fast_path_taken(text: str) -> bool:
    """Whether loads(text) gets its result from the skeleton, not from the fallback."""
    spans = toml_arrays.scan(text)
    if not spans:
        return False
    try:
        toml_arrays._loads_skeleton(text, spans)
    except (toml_arrays._Fallback, ValueError):
        return False
    return True


def bench_texts() -> list[str]:
    bench, lab = load_bench("bench"), load_bench("bench_lab")
    services = [lab.Service(vip, tuple(f"10.100.{i}.{n}" for n in range(1, 40)))
                for i, vip in enumerate(("10.200.0.1", "10.200.0.2"))]
    return [bench.config_text(50), bench.services_text(3, 20),
            lab.ours_config(services, {"10.100.0.7": 3, "10.100.1.1": 0}),
            services_text(4, 30)]


def test_bench_configs_take_the_fast_path_and_read_the_same() -> None:
    for text in bench_texts():
        assert fast_path_taken(text), text[:200]
        assert_same(text)


REPO_TOML = sorted(p for folder in ("examples", "debian", "tests/data")
                   for p in (ROOT / folder).rglob("*.toml"))


def test_the_repo_has_example_configs() -> None:
    assert len(REPO_TOML) > 100  # the glob does find them


@pytest.mark.parametrize("path", REPO_TOML, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_toml_in_the_repo_reads_the_same(path: Path) -> None:
    assert_same(path.read_text(encoding="utf-8", errors="surrogateescape"))


REALS = 'real = [\n  { address = "10.0.0.1", weight = 1 },\n  { address = "10.0.0.2" },\n]\n'

# (text, whether the fast path must be taken): False means it may fall back (or find
# nothing: an invalid text always falls back, on tomllib's error on the skeleton); either
# way the result must equal tomllib's.
TRICKY: list[tuple[str, bool]] = [
    (REALS, True),
    ('real = [{address="1.2.3.4",weight=2}]', True),
    ('real = [ {a=1} , {a=2} , ]', True),
    ('\treal\t=\t[\t{\ta\t=\t1\t}\t]\n', True),
    ('real = [\r\n  { address = "10.0.0.1" },\r\n  { address = "10.0.0.2" },\r\n]\r\n', True),
    ('real = [\r  { address = "10.0.0.1" }]\n', False),  # a lone CR
    ('real = [ { address = "10.0.0.1" } ]\r\n', True),
    ('a = [ {x = +1}, {x = -0}, {x = 0}, {x = -12}, {x = 9223372036854775807},'
     ' {x = -9223372036854775808} ]', True),
    ('a = [ {x = 9223372036854775808} ]', False),  # beyond 64 bits: tomllib takes it
    ('a = [ {x = -9223372036854775809} ]', False),
    ('a = [ {x = 99999999999999999999999999} ]', False),
    ('a = [ {x = 01} ]', False),  # leading zero: tomllib's error
    ('a = [ {x = +01} ]', False),
    ('a = [ {x = 1_000} ]', False),
    ('a = [ {x = 0x10} ]', False),
    ('a = [ {x = 1.5} ]', False),
    ('a = [ {x = true, y = false} ]', True),
    ('a = [ {x = True} ]', False),
    ('a = [ {x = truex} ]', False),
    ('a = [ {x = "a\\"b"} ]', False),  # an escape
    ('a = [ {x = "a\\u00e9"} ]', False),
    ('a = [ {x = "tab\there"} ]', False),  # a tab in a string: tomllib's business
    ('a = [ {x = "bell\x07"} ]', False),
    ('a = [ {x = "del\x7f"} ]', False),
    ('a = [ {x = "h\u00e9llo \u4e16\u754c"} ]', True),
    ('a = [ {x = "{y = 1}, }]"} ]', True),  # braces and brackets inside a string
    ('a = [ {x = ""} ]', True),
    ('a = [ {x = 1, x = 2} ]', False),  # a key twice: tomllib's error
    ('a = [ {x = 1, y = 2, x = 3} ]', False),
    ('a = [ {x = 1,} ]', False),  # a trailing comma inside an inline table
    ('a = [ {x = 1\n} ]', False),  # a newline inside an inline table
    ('a = [ {} ]', False),
    ('a = [ {x = 1} {x = 2} ]', False),
    ('a = [ {x = 1},, ]', False),
    ('a = [ , {x = 1} ]', False),
    ('a = [ {x = 1} # a comment\n ]', False),
    ('# a = [ {x = 1} ]\nb = 1\n', False),
    ('a = [ {x = 1} ] # a comment after\n', True),
    ('a = [ {x = 1} ] b = 2\n', False),  # after the array: tomllib's error on the skeleton
    ('a = [ {"x" = 1} ]', False),
    ('a = [ {x.y = 1} ]', False),
    ('"a" = [ {x = 1} ]', False),
    ('a.b = [ {x = 1} ]', False),
    ('a = [ [ {x = 1} ] ]', False),
    ('a = [ {x = [1]} ]', False),
    ('a = [ {x = {y = 1}} ]', False),
    ('a = []', False),
    ('a = [ ]\nb = [ {x = 1} ]', True),
    ('a = [ {x = 1} ]\na = [ {x = 2} ]', False),  # a key twice at the top: tomllib's error
    ('a = 1\na = [ {x = 2} ]', False),
    ('a = [ {x = 1} ]\n[a]\nb = 1\n', False),
    ('a = [ {x = 1} ]\n[[a]]\nb = 1\n', False),
    ('a = [ {x = 1} ]\n[a.b]\nc = 1\n', False),
    ('a = [ {x = 1} ]\na.b = 1\n', False),
    ('[[service]]\nvip = "10.0.0.9"\nreal = [ {address = "1.2.3.4"} ]\n'
     '[[service]]\nvip = "10.0.0.8"\nreal = [\n {address = "1.2.3.5"},\n'
     ' {address = "1.2.3.6"}\n]\n',
     True),
    ('[[service.real]]\naddress = "1.2.3.4"\n[[service.real]]\naddress = "1.2.3.5"\n', False),
    ('s = """\nreal = [ {address="1.2.3.4"} ]\n"""\n', False),  # inside a multi-line string
    ("s = '''\nreal = [ {address=\"1.2.3.4\"} ]\n'''\n", False),
    ('s = """\nreal = [ {address = ""} ]"""\n', False),
    ('s = """\nreal = [ {address="1.2.3.4"} ]\n"""\nreal = [ {address="1.2.3.5"} ]\n', False),
    ('x = [\n1,\ny = [ {a = 1} ]\n]\n', False),
    ('x = [\n"s",\ny = [ {a = 1} ] ]\n', False),
    ('a = [ {x = 1} ]\nb = "lvs-fastpath-"\n', True),  # nonce-like text already present
    ('lvs-fastpath- = [ {lvs-fastpath- = "lvs-fastpath-0"} ]\n', True),
    ('a = [ {x = "lvs-fastpath-"} ]\n', True),
    ('t = { a = [ {x = 1} ] }\n', False),
    ('a = [\n\n  {x = 1},\n\n  {x = 2}\n\n]\n', True),
    ('a = [ {x = 1} ]\nb = [ {y = "2"} ]\n[t]\nc = [ {z = false} ]\n', True),
    ('a = [ {x = 1} ', False),  # unclosed
    ('a = [ {x = 1} ]]\n', False),
    ('a = [ {x = "unclosed} ]\n', False),
    ('a = [ {x = 1} ]\nb = \n', False),  # an error elsewhere: tomllib's own message
]


@pytest.mark.parametrize(("text", "fast"), TRICKY, ids=[repr(t[:40]) for t, _ in TRICKY])
def test_tricky_texts_read_the_same(text: str, fast: bool) -> None:
    assert_same(text)
    if fast:
        assert fast_path_taken(text)


def test_falling_back_keeps_tomllib_errors_and_their_lines() -> None:
    text = 'a = [ {x = 1} ]\nb = [ {y = 2} ]\nc = \n'
    with pytest.raises(tomllib.TOMLDecodeError) as ours:
        toml_arrays.loads(text)
    with pytest.raises(tomllib.TOMLDecodeError) as theirs:
        tomllib.loads(text)
    assert str(ours.value) == str(theirs.value)
    assert "line 3" in str(ours.value)


def test_a_nonce_already_in_the_text_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter([b"\0" * 8, b"\x11" * 8])
    monkeypatch.setattr(toml_arrays.os, "urandom", lambda n: next(tokens))
    text = 'a = [ {x = 1} ]\nb = "lvs-fastpath-0000000000000000-0"\n'
    assert toml_arrays._nonce(text) == "lvs-fastpath-" + "1" * 16


@pytest.mark.parametrize("bad", ["0", "1"])
def test_the_nonce_anywhere_but_a_marker_falls_back(bad: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """If the nonce check were missing, a marker in a string would stay a marker."""
    monkeypatch.setattr(toml_arrays, "_nonce", lambda text: "NONCE")
    text = 's = """\nreal = [ {a = 1} ]\n"""\nt = [ {b = 2} ]\n'
    assert_same(text)
    with pytest.raises(toml_arrays._Fallback):
        toml_arrays._loads_skeleton(text, toml_arrays.scan(text))


def random_text(rng: random.Random) -> str:
    blanks = ["", " ", "  ", "\t"]
    between = ["", " ", "\n", "\r\n", "\n  ", " \n\t"]
    keys = ["address", "weight", "port", "a-b", "k_1", "9", "x", "", '"q"', "a.b"]
    safe = ['"10.0.0.1"', '""', '"h\u00e9"', "0", "1", "-0", "+7", "65535",
            "9223372036854775807", "-9223372036854775808", "true", "false"]
    unsafe = ['"a\\tb"', '"x\ty"', "01", "1_0", "9223372036854775808", "TRUE", "1.0", "[1]",
              "{z=1}"]

    def entry() -> str:
        count = rng.choice([1, 1, 2, 2, 3])
        pairs = [f"{rng.choice(keys[:6] if rng.random() < .97 else keys)}{rng.choice(blanks)}="
                 f"{rng.choice(blanks)}{rng.choice(safe if rng.random() < .97 else unsafe)}"
                 for _ in range(count)]
        sep = f"{rng.choice(blanks)},{rng.choice(blanks)}"
        tail = "," if rng.random() < .03 else ""
        return f"{{{rng.choice(blanks)}{sep.join(pairs)}{tail}{rng.choice(blanks)}}}"

    entries = [entry() for _ in range(rng.randint(1, 5))]
    sep = f"{rng.choice(between)},{rng.choice(between)}"
    body = sep.join(entries) + ("," if rng.random() < .5 else "")
    if rng.random() < .03:
        body += " # c"
    newline = "\r\n" if rng.random() < .2 else "\n"
    head = rng.choice(["", "", "", "[t]" + newline, "[[s]]" + newline, 's = """' + newline])
    tail = '"""' + newline if head.startswith("s =") else ""
    indent = rng.choice(blanks)
    return (f"{head}{indent}real{rng.choice(blanks)}={rng.choice(blanks)}"
            f"[{rng.choice(between)}{body}{rng.choice(between)}]{newline}{tail}other = 1{newline}")


def test_random_variants_read_the_same() -> None:
    rng = random.Random(14)
    fast = valid = 0
    for _ in range(400):
        text = random_text(rng)
        assert_same(text)
        fast += fast_path_taken(text)
        valid += outcome(tomllib.loads, text)[0] != "error"
    # the mix does cover both ways: read by the fast path, and invalid or falling back
    assert 100 < fast < 400 and valid < 400, (fast, valid)


def test_reading_the_real_servers_costs_no_python_call_each() -> None:
    """tomllib makes ~25 Python calls per `{ address = "..." }`; the fast path a fixed few
    for the whole array."""
    count = 2000
    text = services_text(1, count)
    assert python_calls(lambda: tomllib.loads(text)) > 10 * count  # the count sees tomllib
    assert python_calls(lambda: toml_arrays.loads(text)) < count // 4


def test_parse_config_reads_through_the_fast_path() -> None:
    """The whole parse_config, validation included, costs fewer Python calls than tomllib
    alone would to read the same text."""
    text = services_text(2, 1000)
    assert python_calls(lambda: parse_config(text)) < python_calls(lambda: tomllib.loads(text))


def test_finding_a_big_array_takes_little_memory() -> None:
    """One regex over a whole array of N tables keeps N backtracking states: ~40 MB for
    these 20,000 (180 MB at 100,000); matching an element at a time keeps none."""
    text = load_bench("bench").config_text(20000)
    tracemalloc.start()
    try:
        spans = toml_arrays.arrays(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert spans == [(text.index("real = [") + 7, len(text) - 1)]
    assert peak < 256 * 1024, peak


@pytest.mark.parametrize(("text", "values"), [
    ('a = [{x=1}]\nb = [ {y="]"} ,\n {z=2}, ]\n', ['[{x=1}]', '[ {y="]"} ,\n {z=2}, ]']),
    ('a = [{x=1}] # c\n', ['[{x=1}]']),
    ('a = [{x=1}, # c\n]\n', []),
    ('a = [{x=1} {x=2}]\nb = [{x=1},,]\nc = [,{x=1}]\nd = []\ne = [{x=1},\n', []),
])
def test_arrays_finds_exactly_the_array_values(text: str, values: list[str]) -> None:
    assert [text[start:stop] for start, stop in toml_arrays.arrays(text)] == values
