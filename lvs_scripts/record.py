"""Records: value classes that cost nothing to define.

``@dataclass`` writes and compiles five or six methods for every class when its module
is imported: about 1 ms a class on Python 3.11, and with some thirty of them
`lvs-director status` spent 40 ms importing this package. A ``Record`` subclass gets
methods written once, here; it pays instead per instance (a few microseconds to build
one). So the types built once per rule or real server (``Rule``, ``Destination``,
``Step`` ...) stay dataclasses, and everything built a handful of times a run is a
Record.

    class Route(Record):                   # frozen: hashable, no assignment
        via: str
        metric: int = 0

    class Plan(Record, frozen=False):      # mutable, unhashable
        steps: list[Step] = field(default_factory=list)

Fields are the class's annotations in order (ClassVar ones excepted), with their
defaults; ``__init__`` takes them positionally or by name; equality needs the same class
and equal compared fields; ``repr`` looks like a dataclass's. Type checkers see a
dataclass (PEP 681).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from typing import Any, ClassVar, TypeVar

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover - only a hint for type checkers, which read the branch above
    _T = TypeVar("_T")

    def dataclass_transform(**_: object) -> Callable[[_T], _T]:
        return lambda cls: cls

_MISSING: Any = object()


class _Field:
    __slots__ = ("compare", "default", "default_factory")

    def __init__(self, default: Any, default_factory: Callable[[], Any] | None,
                 compare: bool) -> None:
        self.default = default
        self.default_factory = default_factory
        self.compare = compare


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] | None = None,
          compare: bool = True) -> Any:
    """A field's default (or a factory for a mutable one), and whether ``==`` looks at it."""
    if default is not _MISSING and default_factory is not None:
        raise TypeError("field() takes a default or a default_factory, not both")
    return _Field(default, default_factory, compare)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class Record:
    _record_fields: ClassVar[tuple[str, ...]] = ()
    _record_compared: ClassVar[tuple[str, ...]] = ()
    _record_defaults: ClassVar[dict[str, Any]] = {}
    _record_factories: ClassVar[dict[str, Callable[[], Any]]] = {}

    def __init_subclass__(cls, *, frozen: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: list[str] = list(cls._record_fields)
        compared = set(cls._record_compared)
        defaults = dict(cls._record_defaults)
        factories = dict(cls._record_factories)
        for name, annotation in _own_annotations(cls).items():
            if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                continue
            if name not in names:
                names.append(name)
            compared.add(name)
            value = cls.__dict__.get(name, _MISSING)
            if isinstance(value, _Field):
                if not value.compare:
                    compared.discard(name)
                value, factory = value.default, value.default_factory
                if factory is not None:
                    factories[name] = factory
                    delattr(cls, name)
            if value is not _MISSING:
                defaults[name] = value
                setattr(cls, name, value)
            elif name not in factories and (defaults or factories):
                raise TypeError(f"{cls.__name__}.{name}: a field without a default "
                                "follows one with a default")
        cls._record_fields = tuple(names)
        cls._record_compared = tuple(name for name in names if name in compared)
        cls._record_defaults = defaults
        cls._record_factories = factories
        if not frozen:
            cls.__setattr__ = object.__setattr__  # type: ignore[method-assign,assignment]
            cls.__delattr__ = object.__delattr__  # type: ignore[method-assign]
            cls.__hash__ = None  # type: ignore[method-assign,assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        names = cls._record_fields
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}() takes {len(names)} positional arguments "
                            f"but {len(args)} were given")
        values = dict(zip(names, args))
        for name, value in kwargs.items():
            if name in values:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            if name not in names:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
            values[name] = value
        if len(values) < len(names):
            for name in names:
                if name in values:
                    continue
                if name in cls._record_defaults:
                    values[name] = cls._record_defaults[name]
                elif name in cls._record_factories:
                    values[name] = cls._record_factories[name]()
                else:
                    raise TypeError(f"{cls.__name__}() missing required argument {name!r}")
        self.__dict__.update(values)

    def _compared_values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._record_compared)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._compared_values() == other._compared_values()

    def __hash__(self) -> int:
        return hash((self.__class__, self._compared_values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._record_fields)
        return f"{type(self).__qualname__}({inner})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r} of {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r} of {type(self).__name__}")


def _own_annotations(cls: type) -> dict[str, Any]:
    if sys.version_info >= (3, 10):
        return inspect.get_annotations(cls)
    return dict(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063  # pragma: no cover


def as_dict(record: Record) -> dict[str, Any]:
    """The fields and their values, in order (not copied: a shallow view)."""
    return {name: getattr(record, name) for name in record._record_fields}


R = TypeVar("R", bound=Record)


def replaced(record: R, **changes: Any) -> R:
    """A copy with some fields changed, as dataclasses.replace makes one of a dataclass."""
    return type(record)(**{**as_dict(record), **changes})
