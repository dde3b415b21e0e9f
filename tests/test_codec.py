"""The two encoders (orjson when installed, the standard library otherwise) give the same
outcome for every kind of value a handler might put in its state: the same document back,
or the same refusal naming the same value. And the event is encoded once per run."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from longrun import MemoryStore, StateNotSerializable, checkpoint
from longrun.checkpoint import ENV_CODEC, encode_document


@pytest.fixture(params=["auto", "json"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(ENV_CODEC, request.param)
    monkeypatch.setattr(checkpoint, "_ENCODER", [])
    yield request.param


def test_the_default_codec_is_orjson() -> None:
    # The dependency is installed by default: the fast encoder is the one in use.
    import orjson

    part = checkpoint._make_orjson_part()
    assert part is not None
    assert part({"a": "é"}) == orjson.dumps({"a": "é"})


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


def cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["me"] = loop
    return loop


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


ACCEPTED = [
    ({"a": [1, 2.5, None, True, "é", "\u2603"]}, {"a": [1, 2.5, None, True, "é", "\u2603"]}),
    ({"pair": (1, None)}, {"pair": [1, None]}),  # tuples become lists (with a null: compared)
    ({"pair": (1, 2)}, {"pair": [1, 2]}),
    ({"big": 2**70}, {"big": 2**70}),  # past orjson's 64 bits: the standard library takes it
    ({"name": Name("x")}, {"name": "x"}),
    ({"level": Level.HIGH}, {"level": 3}),
    ({"colour": Colour.RED}, {"colour": "red"}),
    ({"id": uuid.UUID(int=7)}, {"id": "00000000-0000-0000-0000-000000000007"}),
    ({"deep": nested(300)}, {"deep": nested(300)}),  # past orjson's 255 levels
    ({"lone": "\ud800"}, {"lone": "\ud800"}),  # a lone surrogate orjson refuses
    ({"neg": -0.0, "tiny": 5e-324, "huge": 1.7976931348623157e308}, None),
    ({"text": "null and nullable"}, None),  # null inside a string: compared, accepted
]


@pytest.mark.parametrize(("state", "expected"), ACCEPTED)
def test_accepted_values_come_back_the_same_from_either_codec(
    codec: str, state: Any, expected: Any
) -> None:
    data = encode_document({"format": 1, "state": state})
    decoded = json.loads(data)["state"]
    assert decoded == (state if expected is None else expected)


REFUSED = [
    ({"x": float("nan")}, "run.state['x']", "nan"),
    ({"x": [1, None, float("inf")]}, "run.state['x'][2]", "inf"),
    ({"x": -float("inf")}, "run.state['x']", "-inf"),
    ({1: "a"}, "run.state[1]", "JSON keys are strings"),
    ({"a": [{None: 1}]}, "run.state['a'][0][None]", "JSON keys are strings"),
    ({"when": datetime.datetime(2026, 1, 1)}, "run.state['when']", "datetime"),
    ({"p": Point(1)}, "run.state['p']", "Point"),
    ({"s": {1, 2}}, "run.state['s']", "set"),
    ({"d": decimal.Decimal("1.5")}, "run.state['d']", "Decimal"),
    ({"b": b"x"}, "run.state['b']", "bytes"),
    ({"c": cyclic()}, "run.state['c']", "cycle"),
    ({"deep": nested(5000)}, "run.state['deep']", "nests deeper"),
    ({"colour": Colour.RED, "x": float("nan")}, "run.state['x']", "nan"),
]


@pytest.mark.parametrize(("state", "path", "why"), REFUSED)
def test_refused_values_are_named_the_same_by_either_codec(
    codec: str, state: Any, path: str, why: str
) -> None:
    with pytest.raises(StateNotSerializable) as info:
        encode_document({"format": 1, "state": state})
    assert info.value.path is not None and info.value.path.startswith(path)
    assert why in str(info.value)


def test_a_non_finite_float_in_a_protocol_field_is_refused(codec: str) -> None:
    with pytest.raises(StateNotSerializable, match=r"checkpoint\.timing\['write_ms'\]"):
        encode_document({"format": 1, "timing": {"write_ms": float("nan")}, "claim": None})


def test_both_codecs_write_documents_the_other_reads(codec: str) -> None:
    store = MemoryStore()
    doc = {
        "format": 1,
        "run_id": "mixed",
        "status": "running",
        "hop": 0,
        "created_ms": 1,
        "updated_ms": 1,
        "event": {"id": "é", "n": None},
        "state": {"rows": [{"k": "a", "v": None}, {"k": "b", "v": 2.5}]},
        "cursors": {},
        "hops": [],
    }
    written = store.create(doc)
    assert store.load("mixed").checkpoint.state == doc["state"]  # type: ignore[union-attr]
    assert store.load("mixed").checkpoint.event == doc["event"]  # type: ignore[union-attr]
    assert written.checkpoint.seq == 1


def test_the_event_is_encoded_once_per_event_object(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    real = checkpoint._encoder()

    def counting(value: Any) -> bytes | None:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(checkpoint, "_ENCODER", [counting])
    event = {"bucket": "b", "keys": [f"k{i}" for i in range(100)]}
    first = encode_document({"event": event, "state": {"n": 1}})
    second = encode_document({"event": event, "state": {"n": 2}})
    assert sum(1 for value in calls if value is event) == 1
    assert json.loads(first)["event"] == json.loads(second)["event"] == event
    # An equal but different object (the next hop's, decoded from the store) is encoded.
    encode_document({"event": json.loads(json.dumps(event)), "state": {}})
    assert sum(1 for value in calls if value == event) == 2
