"""Reading a config file again after an edit of some real servers' attributes.

A reload reads the whole file again: the watcher's SIGHUP and `lvs-director reload` alike
(the compiled-config cache misses: the bytes changed). At 10,000 real servers that was
1.1 s of the lab VM's time, most of a reload of one weight. The usual edit of a reload is
just that: a weight, a threshold, of a server already there.

`reparse` takes the last parse of the file (its text, where its `real = [...]` arrays and
their elements are, and its Config: `Parsed`) and the new text. The two texts are compared
from both ends (in C, a block at a time); when all that differs lies inside the elements
of one service's `real` array, those elements alone are read again, by the same rules
(toml_arrays.elements / entries, config._real), and each must name the address and port it
named before: then every index the full parse builds (duplicates, addresses taken by
VIPs, the gateway, the sorry server) is what it was, and only the service's real servers
are replaced. Anything else -- an element added or removed, an address or port changed,
an edit outside the elements, an error -- returns None, and the caller parses the whole
text, which reports any error as always. The result is the Config the full parse gives:
tests/test_config_delta.py compares the two over many edits.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING, NamedTuple

from .config import _Reader, _real, parse_config_placed
from .errors import ConfigError
from .record import replaced
from .toml_arrays import Span, _Fallback, elements, entries

if TYPE_CHECKING:
    from array import array

    from .config_cache import ConfigCache
    from .model import Config, Destination
    from .toml_arrays import Placed

_BLOCK = 1 << 16  # characters compared at a time before narrowing down a difference
# Elements read again at most: each goes through config._real, the general path, three
# times the cost of the full parse's inline one; an edit spanning more is parsed in full.
MAX_ELEMENTS = 512


class Layout(NamedTuple):
    """Where the fast path read arrays (toml_arrays.Span, in text order) and, for each,
    the index of the service whose `real` it is (-1: any other array)."""

    spans: tuple[Span, ...]
    owners: tuple[int, ...]


class Parsed(NamedTuple):
    """A text, where its arrays are, and the Config it is."""

    text: str
    layout: Layout
    config: Config


# The last parse read_again made in this process (the watcher reads the file again and
# again): one text and its Config, which the caller holds anyway.
_last: list[Parsed] = []


def read_again(text: str, path: str, cache: ConfigCache | None = None
               ) -> tuple[Parsed, bool]:
    """The parse of a file's text: from this process's last parse of the same file, else
    from the one the cache keeps (a CLI run after an edit), when `reparse` can; else in
    full. Remembered for the next time. With whether the cache should keep it: not when
    it was read from the cache's own text. Pickling the Config again would cost a CLI run
    after an edit more than the edit saved (26 ms against 20 ms to unpickle, at 10,000
    here), and the next run reads the same edit from the same text in the same 20 ms,
    about what a hit costs; an edit `reparse` cannot read is parsed and kept."""
    base = next((last for last in _last if last.config.path == path), None)
    from_cache = base is None and cache is not None
    if base is None and cache is not None:
        base = cache.base()
    parsed = reparse(base, text, path) if base is not None else None
    keep = parsed is None or not from_cache
    if parsed is None:
        parsed = parse(text, path)
    _last[:] = [parsed]
    return parsed, keep


def parse(text: str, path: str) -> Parsed:
    """The full parse (config.parse_config), kept with what `reparse` needs."""
    config, placed, services = parse_config_placed(text, path)
    return Parsed(text, layout_of(placed, services), config)


def layout_of(placed: list[Placed], services: object) -> Layout:
    owner_of = {id(table): index for index, table in enumerate(services)} \
        if isinstance(services, list) else {}
    owners = tuple(owner_of.get(id(place.table), -1) if place.key == "real" else -1
                   for place in placed)
    return Layout(tuple(place.span for place in placed), owners)


def reparse(base: Parsed, text: str, path: str) -> Parsed | None:
    """`parse(text, path)`, from `base` when only real servers' attributes changed (see
    the module's docstring); None when it cannot tell (then parse the whole text)."""
    if base.config.path != path:
        return None
    if text == base.text:
        return base
    edit = _edit(base, text)
    if edit is None:
        return None
    q, first, read = edit
    span, owner = base.layout.spans[q], base.layout.owners[q]
    dests = _read_reals(base.config, owner, first, text[read[0][0]:read[-1][2]], path)
    if dests is None:
        return None
    config = base.config
    services = list(config.services)
    services[owner] = replaced(services[owner], destinations=dests)
    shift = len(text) - len(base.text)
    items = _moved(span.items[:first], [pos - span.start for pos, _c, _e in read],
                   span.items[first + len(read):], shift)
    spans = list(base.layout.spans)
    spans[q] = Span(span.start, span.end + shift, items)
    if shift:
        spans[q + 1:] = [Span(s.start + shift, s.end + shift, s.items) for s in spans[q + 1:]]
    return Parsed(text, Layout(tuple(spans), base.layout.owners),
                  replaced(config, services=tuple(services)))


def _edit(base: Parsed, text: str) -> tuple[int, int, list[tuple[int, bool, int]]] | None:
    """Where the new text differs from the base: the array (its index in the layout), the
    first element replaced, and the elements now there (start, comma, end); None unless
    that is as many whole elements of a service's `real`, the last with a comma where the
    old one had one: then the array reads on exactly as it did (toml_arrays.elements says
    why that is enough)."""
    old = base.text
    prefix = _common_prefix(old, text)
    suffix = _common_suffix(old, text, min(len(old), len(text)) - prefix)
    found = _elements_at(base.layout, prefix, len(old) - suffix)
    if found is None:
        return None
    q, first, last = found
    span = base.layout.spans[q]
    if base.layout.owners[q] < 0 or last - first >= MAX_ELEMENTS:
        return None
    shift = len(text) - len(old)
    read = elements(text, span.start + span.items[first],
                    span.start + span.items[last + 1] + shift)
    before = elements(old, span.start + span.items[last], span.start + span.items[last + 1])
    if read is None or before is None or len(read) != last - first + 1 or \
            read[-1][1] != before[-1][1]:
        return None
    return q, first, read


def _read_reals(config: Config, owner: int, first: int, stretch: str, path: str
                ) -> tuple[Destination, ...] | None:
    """The service's real servers with those from `first` on read from `stretch` (whole
    elements), each by config._real; None if one is not valid, or names another address
    or port than the one it replaces (then every index of the full parse could differ),
    or the service is a fwmark one (read in full: rarely large)."""
    service = config.services[owner]
    vip, port = service.key.address, service.key.port
    if vip is None:
        return None
    try:
        new = entries(stretch)
    except _Fallback:
        return None
    dests = list(service.destinations)
    if first + len(new) > len(dests):
        return None
    r = _Reader(path)
    for index, entry in enumerate(new, first):
        was = dests[index]
        try:
            dest, _packed = _real(r, entry, f"service[{owner}].real[{index}]", vip,
                                  vip.version, port, was.forwarding, was.tunnel)
        except ConfigError:
            return None  # the full parse says it, in its order
        if dest.address != was.address or dest.port != was.port:
            return None
        dests[index] = dest
    return tuple(dests)


def _moved(head: array[int], middle: list[int], tail: array[int], shift: int) -> array[int]:
    items = head[:]
    items.extend(middle)
    items.extend(tail if not shift else (pos + shift for pos in tail))
    return items


def _elements_at(layout: Layout, start: int, stop: int) -> tuple[int, int, int] | None:
    """The array, and its first and last element, that old[start:stop] (what the edit
    replaced; empty for an insertion) lies within; None if it is not within elements."""
    q = bisect_right([span.start for span in layout.spans], start) - 1
    if q < 0:
        return None
    span = layout.spans[q]
    items = span.items
    low, high = span.start + items[0], span.start + items[-1]
    if not low <= start < high or stop > high:
        return None
    first = bisect_right(items, start - span.start) - 1
    last = bisect_right(items, stop - 1 - span.start) - 1 if stop > start else first
    return q, first, last


def _common_prefix(a: str, b: str) -> int:
    """How many characters a and b share from the start."""
    limit = min(len(a), len(b))
    low = 0
    while low < limit:
        high = min(low + _BLOCK, limit)
        if a[low:high] == b[low:high]:
            low = high
            continue
        while high - low > 1:  # a[:low] == b[:low]; they differ before high
            middle = (low + high) // 2
            if a[low:middle] == b[low:middle]:
                low = middle
            else:
                high = middle
        return low
    return limit


def _common_suffix(a: str, b: str, limit: int) -> int:
    """How many characters a and b share at the end, at most limit."""
    la, lb = len(a), len(b)
    low = 0
    while low < limit:
        high = min(low + _BLOCK, limit)
        if a[la - high:la - low] == b[lb - high:lb - low]:
            low = high
            continue
        while high - low > 1:
            middle = (low + high) // 2
            if a[la - middle:la - low] == b[lb - middle:lb - low]:
                low = middle
            else:
                high = middle
        return low
    return limit
