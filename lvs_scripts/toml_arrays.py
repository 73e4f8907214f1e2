"""Read TOML with the big arrays of small inline tables taken out of tomllib's hands.

tomllib is pure Python: each `{ address = "10.0.0.1", weight = 1 }` of a `real = [...]`
array costs it ~100 Python calls (~8 us here), which at 100,000 real servers is most of a
cold start in the lab VM. `loads` finds, with one regex, each array value that is ENTIRELY
a list of simple inline tables (bare keys; values: a basic string without escapes, a plain
decimal integer, true/false), swaps it for a one-string marker array, lets tomllib parse
that skeleton, and puts the entries (read by a small loop over regex matches) back where
the markers landed. tomllib stays THE parser: it decides the structure and every error.
Anything unusual -- a marker not exactly where expected, the nonce anywhere else, a
duplicate key, an integer out of range, any error on the skeleton -- falls back to
`tomllib.loads(text)`, so the result (and every error message) is tomllib's own.
"""

from __future__ import annotations

import os
import re
import sys
from array import array
from typing import Any, NamedTuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on old Pythons only
    import tomli as tomllib

# Whitespace between the elements of an array: newlines too, but a CR only as part of a
# CRLF (tomllib rejects a lone CR; such text falls back and gets tomllib's error).
_WS = r"(?:[ \t\n]|\r\n)*"
# Inside an inline table: TOML 1.0 allows no newline there.
_S = r"[ \t]*"
# No backslash (escapes), no quote, no control character (tab included: tomllib allows a
# tab in a basic string, but falling back costs nothing but time).
_STRING = r'"[^"\\\x00-\x1f\x7f]*"'
_INTEGER = r"[+-]?(?:0|[1-9][0-9]*)"
_VALUE = rf"(?:{_STRING}|{_INTEGER}|true|false)"
_KEY = r"[A-Za-z0-9_-]+"
_PAIR = rf"{_KEY}{_S}={_S}{_VALUE}"
_TABLE = rf"\{{{_S}{_PAIR}(?:{_S},{_S}{_PAIR})*{_S}\}}"
# KEY = [ with KEY a bare key at the start of a line, then the array's elements one match
# at a time: one regex over a whole array of N tables keeps N backtracking states (~1.8 KB
# each: 180 MB at 100,000), and possessive quantifiers, which would not, need Python 3.11.
_START = re.compile(rf"^[ \t]*{_KEY}[ \t]*=[ \t]*\[", re.MULTILINE)
# An element and what follows it: blanks, then its comma if any (group 1).
_ITEM = re.compile(rf"{_WS}{_TABLE}{_WS}(,?)")
_END = re.compile(rf"{_WS}\]")
# Over an array found by `arrays`: each pair, its value's type told by the group
# that matched, and each table's closing brace (a "}" inside a string is consumed with the
# string, as is every string: the scan between matches passes only blanks, "{", ",").
_PAIRS = re.compile(rf'({_KEY}){_S}={_S}(?:"([^"]*)"|({_INTEGER})|(true|false))|(\}})')

_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 63 - 1


class _Fallback(Exception):
    """The fast path is in doubt: parse the original text with tomllib alone."""


def loads(text: str) -> dict[str, Any]:
    """Equal to tomllib.loads(text) (same values, same types, same errors), faster when the
    text has big arrays of simple inline tables."""
    return loads_placed(text)[0]


class Span(NamedTuple):
    """An array `arrays` found: `text[start]` is its `[`, `text[end - 1]` its `]`. items:
    where each element begins, relative to start, then where the last one ends (the
    elements tile that stretch: each takes the blanks before it and its comma)."""

    start: int
    end: int
    items: array[int]


class Placed(NamedTuple):
    """A span, and the table and key whose value it became (config_delta reads these)."""

    span: Span
    table: dict[str, Any]
    key: str


def loads_placed(text: str) -> tuple[dict[str, Any], list[Placed]]:
    """loads, and where each array read by the fast path is in the text and in the result
    (none: tomllib read it all)."""
    spans = scan(text)
    if not spans:
        return tomllib.loads(text), []
    try:
        return _loads_skeleton(text, spans)
    except (_Fallback, ValueError, RecursionError):  # TOMLDecodeError is a ValueError
        return tomllib.loads(text), []


def arrays(text: str) -> list[tuple[int, int]]:
    """Where the text has `KEY = [...]` with the value ENTIRELY simple inline tables, `,`
    between them (and blanks and newlines), an optional trailing comma and no `#`: the
    spans of those `[...]` values."""
    return [(span.start, span.end) for span in scan(text)]


def scan(text: str) -> list[Span]:
    """`arrays`, with where each element is."""
    spans = []
    for start in _START.finditer(text):
        base = start.end() - 1
        pos, items = start.end(), array("L")
        while True:
            item = _ITEM.match(text, pos)
            if item is None:
                break
            items.append(pos - base)
            pos = item.end()
            if not item.group(1):
                break  # no comma: only the closing bracket may follow
        end = _END.match(text, pos)
        if items and end is not None and text.find("#", start.end(), end.end()) < 0:
            items.append(pos - base)
            spans.append(Span(base, end.end(), items))
    return spans


def elements(text: str, start: int, stop: int) -> list[tuple[int, bool, int]] | None:
    """The elements that tile text[start:stop] exactly, as `scan` reads them there: where
    each begins, whether a comma ends it, where it ends; None if they do not
    (config_delta re-reads an edited stretch of an array with this: the elements before
    it end at `start`, the rest of the array begins at `stop`). Only the last may lack its
    comma; a `#` refuses the stretch (as `scan` refuses an array with one).

    Why the stretch then reads as it would within a full scan: each match is anchored
    where the one before ended; one that ends with its comma ends there whatever
    follows; the last may end without a comma only where the old element did (checked
    by config_delta), and the text after `stop` is what followed it, which stopped its
    blanks then. A blank that could run on past `stop` (a CR before it, an LF after)
    fails the match here (endpos), so the stretch is refused rather than misread."""
    if text.find("#", start, stop) >= 0:
        return None
    found: list[tuple[int, bool, int]] = []
    pos = start
    while pos < stop:
        item = _ITEM.match(text, pos, stop)
        if item is None or (found and not found[-1][1]):
            return None
        found.append((pos, bool(item.group(1)), item.end()))
        pos = item.end()
    return found if found and pos == stop else None


def entries(text: str) -> list[dict[str, Any]]:
    """The inline tables in text (elements `elements` accepted), as tomllib reads them;
    _Fallback where it would not be sure (a key twice, an integer out of range)."""
    return _entries(text)


def _loads_skeleton(text: str, spans: list[Span]) -> tuple[dict[str, Any], list[Placed]]:
    nonce = _nonce(text)
    parts: list[str] = []
    end = 0
    for index, (start, stop, _items) in enumerate(spans):
        parts += (text[end:start], f'["{nonce}-{index}"]')
        end = stop
    parts.append(text[end:])
    data = tomllib.loads("".join(parts))
    found: dict[str, tuple[dict[str, Any], str]] = {}
    _find_markers(data, nonce, found)
    if len(found) != len(spans):
        raise _Fallback("a marker is missing")
    placed = []
    for index, span in enumerate(spans):
        place = found.get(f"{nonce}-{index}")
        if place is None:
            raise _Fallback("a marker is missing")
        table, key = place
        table[key] = _entries(text[span.start:span.end])
        placed.append(Placed(span, table, key))
    return data, placed


def _nonce(text: str) -> str:
    while True:
        # os.urandom, not secrets: that imports hashlib, which a plain config never needs
        nonce = "lvs-fastpath-" + os.urandom(8).hex()
        if nonce not in text:
            return nonce


def _find_markers(value: object, nonce: str,
                  found: dict[str, tuple[dict[str, Any], str]]) -> None:
    """Record where each marker landed: as the whole value of a key, a list of just that
    string. The nonce anywhere else (a key, any other string) -> _Fallback: the span was
    not a value of its own (inside a multi-line string, say)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if nonce in key:
                raise _Fallback("the nonce in a key")
            if (isinstance(item, list) and len(item) == 1 and isinstance(item[0], str)
                    and item[0].startswith(nonce)):
                if item[0] in found:
                    raise _Fallback("a marker twice")
                found[item[0]] = (value, key)
            else:
                _find_markers(item, nonce, found)
    elif isinstance(value, list):
        for item in value:
            _find_markers(item, nonce, found)
    elif isinstance(value, str) and nonce in value:
        raise _Fallback("the nonce in a string")


def _entries(array: str) -> list[dict[str, Any]]:
    """The inline tables of an array found by `arrays`, as tomllib would read them."""
    entries = []
    entry: dict[str, Any] = {}
    pairs = 0
    for key, string, integer, boolean, close in _PAIRS.findall(array):
        if close:
            if len(entry) != pairs:
                raise _Fallback("a key twice in one inline table")
            entries.append(entry)
            entry, pairs = {}, 0
            continue
        pairs += 1
        if integer:
            number = int(integer)
            if number < _INT_MIN or number > _INT_MAX:
                raise _Fallback("an integer out of range")  # tomllib allows it; no matter
            entry[key] = number
        elif boolean:
            entry[key] = boolean == "true"
        else:
            entry[key] = string
    return entries
