"""The continuation envelope and the checkpoint document codec."""

from __future__ import annotations

import json
from typing import Any

import pytest

from longrun import (
    CheckpointCorrupt,
    CheckpointFormatError,
    EnvelopeError,
    InvalidRunId,
    StateNotSerializable,
    protocol,
)
from longrun.checkpoint import (
    ENVELOPE_KEY,
    ENVELOPE_VERSION,
    FORMAT,
    Envelope,
    encode_document,
    make_envelope,
    parse_envelope,
    validate_run_id,
)


def body(**fields: Any) -> dict[str, Any]:
    inner: dict[str, Any] = {"v": 1, "run_id": "abc", "hop": 3}
    inner.update(fields)
    return inner


def without(key: str) -> dict[str, Any]:
    inner = body()
    del inner[key]
    return inner


# -- parse_envelope ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"bucket": "b", "key": "k"},
        {"Longrun": body()},  # keys are case-sensitive
        {"detail": {"longrun": body()}},  # nested is not top level
        [],
        [{"longrun": body()}],
        ["longrun"],
        "longrun",
        "",
        None,
        42,
        b'{"longrun": {}}',
    ],
    ids=repr,
)
def test_ordinary_events_are_not_envelopes(event: Any) -> None:
    assert parse_envelope(event) is None


def test_an_envelope_is_parsed() -> None:
    assert parse_envelope({"longrun": {"v": 1, "run_id": "abc", "hop": 3}}) == Envelope(
        run_id="abc", hop=3
    )
    assert parse_envelope({"longrun": body(hop=0)}) == Envelope("abc", 0)
    assert parse_envelope({"longrun": body(run_id="A.b_c-9")}) == Envelope("A.b_c-9", 3)


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ({"longrun": body(), "bucket": "evil"}, "unexpected top-level keys ['bucket']"),
        ({"longrun": body(), "x": 1, "a": 2}, "unexpected top-level keys ['a', 'x']"),
        ({"longrun": body(bucket="evil")}, "unexpected keys ['bucket']"),
        ({"longrun": body(store="s3://x", prefix="y")}, "unexpected keys ['prefix', 'store']"),
        ({"longrun": without("hop")}, "hop is missing"),
        ({"longrun": body(hop=-1)}, "hop=-1"),
        ({"longrun": body(hop=True)}, "hop=True"),
        ({"longrun": body(hop=False)}, "hop=False"),
        ({"longrun": body(hop="3")}, "hop='3'"),
        ({"longrun": body(hop=3.0)}, "hop=3.0"),
        ({"longrun": body(hop=None)}, "hop=None"),
        ({"longrun": without("v")}, "v is missing"),
        ({"longrun": body(v=0)}, "v=0"),
        ({"longrun": body(v="1")}, "v='1'"),
        ({"longrun": body(v=True)}, "v=True"),
        ({"longrun": body(v=1.0)}, "v=1.0"),
        ({"longrun": "abc"}, "value is a str, not an object"),
        ({"longrun": ["abc", 3]}, "value is a list, not an object"),
        ({"longrun": None}, "value is a NoneType, not an object"),
        ({"longrun": 1}, "value is a int, not an object"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_malformed_envelopes_say_what_is_wrong(event: Any, says: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_envelope(event)
    assert says in str(info.value)
    assert isinstance(info.value, ValueError)


def test_newer_envelope_version_says_so() -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_envelope({"longrun": body(v=2)})
    message = str(info.value)
    assert "v=2" in message
    assert "newer" in message
    assert f"v={ENVELOPE_VERSION}" in message


def test_several_problems_are_all_named() -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_envelope({"longrun": {"v": 1, "run_id": "abc", "hop": -2, "extra": 1}})
    assert "hop=-2" in str(info.value)
    assert "unexpected keys ['extra']" in str(info.value)


def test_mixed_type_extra_keys_do_not_crash_the_message() -> None:
    event = {"longrun": {**body(), 5: "x", "y": 1}}
    with pytest.raises(EnvelopeError, match="unexpected keys"):
        parse_envelope(event)


def test_a_huge_event_is_shortened_in_the_message() -> None:
    event = {"longrun": body(), "blob": "x" * 100_000}
    with pytest.raises(EnvelopeError) as info:
        parse_envelope(event)
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize(
    "run_id", ["../x", "", "a/b", "x" * 129, "x" * 200, ".x", "a b", None, 123, ["a"]], ids=repr
)
def test_a_bad_run_id_in_an_envelope_is_invalid_run_id(run_id: Any) -> None:
    with pytest.raises(InvalidRunId) as info:
        parse_envelope({"longrun": body(run_id=run_id)})
    assert "envelope run_id" in str(info.value)
    assert repr(run_id)[:200] in str(info.value)  # quoted, cut to about 200 characters


def test_a_huge_run_id_is_quoted_cut_short() -> None:
    with pytest.raises(InvalidRunId) as info:
        parse_envelope({"longrun": body(run_id="x" * 1_000_000)})
    message = str(info.value)
    assert len(message) < 500
    assert "1,000,002 characters" in message


def test_missing_run_id_is_invalid_run_id() -> None:
    with pytest.raises(InvalidRunId):
        parse_envelope({"longrun": without("run_id")})


# -- make_envelope -----------------------------------------------------------------------------


@pytest.mark.parametrize("hop", [0, 1, 3, 10_000])
def test_make_envelope_round_trips(hop: int) -> None:
    envelope = make_envelope("abc", hop)
    assert envelope == {ENVELOPE_KEY: {"v": ENVELOPE_VERSION, "run_id": "abc", "hop": hop}}
    assert parse_envelope(envelope) == Envelope("abc", hop)
    # As Lambda delivers it: through JSON.
    assert parse_envelope(json.loads(json.dumps(envelope))) == Envelope("abc", hop)


def test_make_envelope_is_small_even_for_the_longest_run_id() -> None:
    run_id = "a" * 128
    assert validate_run_id(run_id) == run_id
    envelope = make_envelope(run_id, 2**31)
    encoded = json.dumps(envelope).encode("utf-8")
    assert len(encoded) < 1024
    assert parse_envelope(json.loads(encoded)) == Envelope(run_id, 2**31)


# -- validate_run_id ---------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["a", "0", "A" * 128, "a.b-c_d", "e3b0c442-98fc-1c14"])
def test_valid_run_ids(run_id: str) -> None:
    assert validate_run_id(run_id) == run_id


@pytest.mark.parametrize(
    "run_id", ["", "A" * 129, "../x", "a/b", "a\\b", "_x", "-x", ".", "a\x00", "ü", b"ab"], ids=repr
)
def test_invalid_run_ids(run_id: Any) -> None:
    with pytest.raises(InvalidRunId) as info:
        validate_run_id(run_id, source="the thing")
    assert "the thing=" in str(info.value)


# -- the checkpoint document codec ------------------------------------------------------------


def document(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "seq": 1,
        "run_id": "r",
        "status": "running",
        "hop": 0,
        "created_ms": 1,
        "updated_ms": 2,
        "event": {"in": 1},
        "state": {},
        "cursors": {},
        "hops": [],
    }
    doc.update(fields)
    return doc


def decode_document(data: bytes, *, where: str) -> dict[str, Any]:
    """The protocol's validated document, back as the JSON it stores."""
    return protocol.decode(data, where=where).to_json()


def test_document_round_trip() -> None:
    doc = document(state={"a": [1, 2.5, None, True, "é"]}, result={"n": 1})
    data = encode_document(doc)
    decoded = decode_document(data, where="here")
    assert {k: decoded[k] for k in doc} == doc
    assert decoded["state"]["a"][4] == "é"


def test_tuples_are_saved_as_lists() -> None:
    data = encode_document(document(state={"pair": (1, 2)}))
    assert decode_document(data, where="here")["state"] == {"pair": [1, 2]}


@pytest.mark.parametrize(
    ("state", "path"),
    [
        ({1: "a"}, "run.state[1]"),
        ({"a": {True: 1}}, "run.state['a'][True]"),
        ({"a": {1.5: 1}}, "run.state['a'][1.5]"),
        ({"a": {("t", 1): 1}}, "run.state['a'][('t', 1)]"),
        ({"a": [{None: 1}]}, "run.state['a'][0][None]"),
    ],
)
def test_non_string_keys_are_refused_not_silently_changed(state: Any, path: str) -> None:
    # json.dumps would turn these keys into strings: the state would come back different.
    with pytest.raises(StateNotSerializable) as info:
        encode_document(document(state=state))
    assert path in str(info.value)
    assert "JSON keys are strings" in str(info.value)


def test_a_bad_value_outside_the_user_parts_is_still_refused_and_named() -> None:
    with pytest.raises(StateNotSerializable, match=r"checkpoint\.claim\['at'\]") as info:
        encode_document(document(claim={"at": object()}))
    assert info.value.path == "checkpoint.claim['at']"
    with pytest.raises(StateNotSerializable, match=r"checkpoint\.timing\['write_ms'\]"):
        encode_document(document(timing={"write_ms": float("inf")}))


def test_decode_names_the_location() -> None:
    with pytest.raises(CheckpointCorrupt, match=r"s3://b/k/checkpoint\.json"):
        decode_document(b"{nope", where="s3://b/k/checkpoint.json")


def test_decode_newer_format() -> None:
    with pytest.raises(CheckpointFormatError, match="newer"):
        decode_document(json.dumps(document(format=FORMAT + 1)).encode(), where="x")


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"format": 0}, "format"),
        ({"format": True}, "format"),
        ({"status": "paused"}, "status"),
        ({"hop": -1}, "hop"),
        ({"hop": True}, "hop"),
        ({"state": []}, "state"),
        ({"cursors": None}, "cursors"),
        ({"seq": "1"}, "seq"),
        ({"seq": True}, "seq"),
        ({"run_id": "../etc"}, "run_id"),
    ],
)
def test_decode_names_the_invalid_field(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(CheckpointCorrupt) as info:
        decode_document(json.dumps(document(**fields)).encode(), where="loc")
    assert type(info.value) is CheckpointCorrupt
    assert info.value.field == says
    assert f"{says}:" in str(info.value)
    assert "loc" in str(info.value)
