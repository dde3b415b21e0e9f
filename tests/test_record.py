"""``longrun.record.Record``: the immutable records the protocol's types, the settings and
the ports are made of (instead of frozen dataclasses, which cost every cold start their
generated methods). What a frozen dataclass gave, they must give."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from longrun.protocol import Checkpoint, Status
from longrun.protocol.document import Claim, HopEntry
from longrun.record import Record, field


class Point(Record):
    x: int
    y: int = 0
    tags: dict[str, Any] = field(default_factory=dict)


def test_fields_come_from_the_annotations_in_order_with_their_defaults() -> None:
    assert Point.FIELDS == ("x", "y", "tags")
    assert Point(1) == Point(x=1, y=0, tags={})
    assert Point(1, 2, {"a": 1}).tags == {"a": 1}
    first, second = Point(1), Point(1)
    first.tags["k"] = 1
    assert second.tags == {}  # a factory default is made for each instance
    assert "tags" not in Point.__dict__  # (so no instance can share the class's)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((1, 2, {}, 4), {}, "takes 3 fields, 4 were given"),
        ((1,), {"x": 2}, "twice field 'x'"),
        ((), {"x": 1, "z": 2}, "unknown field 'z'"),
        ((), {"y": 1}, "field 'x' is missing"),
    ],
)
def test_a_wrong_construction_names_the_field(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_a_field_without_a_default_may_not_follow_one_with() -> None:
    with pytest.raises(TypeError, match=r"Bad\.b: a field without a default after one with"):

        class Bad(Record):
            a: int = 0
            b: int  # type: ignore[misc]


def test_a_record_is_immutable_and_replace_makes_a_changed_copy() -> None:
    point = Point(1, 2)
    with pytest.raises(AttributeError, match=r"immutable: use \.replace\(x=\.\.\.\)"):
        point.x = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del point.y
    moved = point.replace(y=7)
    assert (point.y, moved.y, moved.x) == (2, 7, 1)
    with pytest.raises(TypeError, match="no field 'z'"):
        point.replace(z=1)


def test_equality_hash_and_repr_are_by_fields() -> None:
    claim = Claim(request_id="r-1", deadline_ms=5, where="lambda")
    assert claim == Claim("r-1", 5, "lambda")
    assert claim != Claim("r-1", 6, "lambda")
    assert claim != ("r-1", 5, "lambda")
    assert len({claim, Claim("r-1", 5, "lambda")}) == 1
    assert repr(claim) == "Claim(request_id='r-1', deadline_ms=5, where='lambda')"

    # records of different types with equal fields are not equal
    class Other(Record):
        request_id: str
        deadline_ms: int | None
        where: str

    assert Other("r-1", 5, "lambda") != claim


def test_records_copy_and_pickle_as_they_are() -> None:
    entry = HopEntry(2, 1, "lambda", "r-2", started_ms=10, items=3)
    assert copy.copy(entry) == entry
    assert copy.deepcopy(entry) == entry
    assert pickle.loads(pickle.dumps(entry)) == entry
    checkpoint = Checkpoint(
        run_id="run-1",
        status=Status.RUNNING,
        hop=0,
        created_ms=1,
        updated_ms=1,
        event={"e": 1},
        state={"s": [1]},
        cursors={},
        hops=(entry,),
    )
    clone = copy.deepcopy(checkpoint)
    assert clone == checkpoint and clone.state is not checkpoint.state
    assert checkpoint.timing == {} and checkpoint.steps == {} and checkpoint.extra == {}
    assert checkpoint.replace(seq=3).seq == 3 and checkpoint.seq == 0


def test_a_subclass_keeps_its_bases_fields_first() -> None:
    class Point3(Point):
        z: int = 0

    assert Point3.FIELDS == ("x", "y", "tags", "z")
    point = Point3(1, 2, {}, 3)
    assert (point.x, point.y, point.z) == (1, 2, 3)
    assert Point3(5).tags == {} and Point3(5).tags is not Point3(5).tags
    assert point != Point(1, 2, {})  # another type
