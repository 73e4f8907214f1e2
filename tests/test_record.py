"""Record must behave like the dataclasses it replaced: construction, defaults, equality,
hashing, freezing, repr, copying (role.py deep-copies states)."""

from __future__ import annotations

import copy
from dataclasses import FrozenInstanceError
from typing import ClassVar

import pytest

from lvs_scripts.record import Record, as_dict, field


class Point(Record):
    x: int
    y: int = 0
    label: str = field(default="", compare=False)
    KIND: ClassVar[str] = "point"


class Other(Record):
    x: int
    y: int = 0
    label: str = ""


class Bag(Record, frozen=False):
    name: str
    items: list[int] = field(default_factory=list)


def test_fields_in_order_positional_and_by_name() -> None:
    assert Point(1, 2, "a") == Point(x=1, y=2, label="a")
    assert (Point(1).x, Point(1).y, Point(1).label) == (1, 0, "")
    assert as_dict(Point(3, label="b")) == {"x": 3, "y": 0, "label": "b"}


def test_classvar_is_not_a_field() -> None:
    assert "KIND" not in as_dict(Point(1))
    assert Point.KIND == "point"
    with pytest.raises(TypeError, match="takes 3 positional arguments but 4"):
        Point(1, 2, "a", "point")  # type: ignore[call-arg]


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((), {}, "missing required argument 'x'"),
    ((1,), {"x": 2}, "multiple values for argument 'x'"),
    ((1,), {"z": 2}, "unexpected keyword argument 'z'"),
])
def test_bad_arguments_are_refused_like_a_dataclass(args: tuple[int, ...],
                                                     kwargs: dict[str, int],
                                                     message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_equality_needs_the_same_class_and_ignores_uncompared_fields() -> None:
    assert Point(1, 2, "a") == Point(1, 2, "b")
    assert Point(1, 2) != Point(1, 3)
    assert Point(1, 2) != Other(1, 2)  # same fields, other class: a tuple would say equal
    assert Point(1, 2) != (1, 2)


def test_frozen_records_hash_by_value_and_refuse_assignment() -> None:
    assert len({Point(1, 2, "a"), Point(1, 2, "b"), Point(2)}) == 2
    point = Point(1)
    with pytest.raises(FrozenInstanceError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del point.x  # type: ignore[misc]
    assert point.x == 1


def test_mutable_records_assign_are_unhashable_and_get_fresh_defaults() -> None:
    first, second = Bag("a"), Bag("b")
    first.items.append(1)
    assert second.items == []
    first.name = "c"
    assert first == Bag("c", [1])
    with pytest.raises(TypeError, match="unhashable"):
        hash(first)


def test_repr_reads_like_a_dataclass() -> None:
    assert repr(Point(1, label="a")) == "Point(x=1, y=0, label='a')"
    assert repr(Bag("a", [1])) == "Bag(name='a', items=[1])"


def test_copies_keep_values_and_type() -> None:
    point = Point(1, 2, "a")
    for clone in (copy.copy(point), copy.deepcopy(point)):
        assert type(clone) is Point
        assert as_dict(clone) == as_dict(point)
    bag = Bag("a", [1])
    clone_bag = copy.deepcopy(bag)
    clone_bag.items.append(2)
    assert bag.items == [1]


def test_a_field_without_default_after_one_with_default_is_a_definition_error() -> None:
    with pytest.raises(TypeError, match=r"Broken\.b: a field without a default"):
        class Broken(Record):  # type: ignore[misc]
            a: int = 0
            b: int


def test_field_refuses_both_a_default_and_a_factory() -> None:
    with pytest.raises(TypeError, match="not both"):
        field(default=1, default_factory=list)


def test_subclass_inherits_fields_first() -> None:
    class Labelled(Other):
        colour: str = "red"

    item = Labelled(1, 2, "a", "blue")
    assert as_dict(item) == {"x": 1, "y": 2, "label": "a", "colour": "blue"}
    assert item != Other(1, 2, "a")
