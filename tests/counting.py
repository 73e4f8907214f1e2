"""Counting what a piece of code calls: the tests that hold work to a size (a save that
makes a line per changed target, a parse that reads only the lines that changed) wrap the
function or method they count with this, and assert on what it recorded."""

from __future__ import annotations

from typing import Any, Callable

import pytest


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str,
                pick: Callable[..., Any] | None = None) -> list[Any]:
    """Replace owner.name (a function of a module, a method of a class) with one that
    records each call -- its arguments as a tuple, or what `pick` makes of them -- and
    then calls the original. The list the calls are recorded in."""
    calls: list[Any] = []
    real = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args if pick is None else pick(*args, **kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls
