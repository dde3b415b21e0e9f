"""The write path of ``run.step``: a writer re-encodes only the step records replaced since
its last write (``checkpoint.EncodedParts``), and what it writes is, byte for byte, what a
document encoded from scratch would be, across many steps and hops."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from longrun import MemoryStore, current_run, longrun
from longrun import checkpoint as codec
from longrun.checkpoint import EncodedParts, encode_document
from longrun.protocol import Checkpoint, decode
from longrun.steps import INLINE_LIMIT, Retry
from longrun.stores.base import Loaded, Token
from longrun.testing import Faults, LambdaSim


class CheckedStore(MemoryStore):
    """A MemoryStore that encodes every document again from scratch and compares."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.with_parts = 0

    def _write(
        self, checkpoint: Checkpoint, token: Token | None, parts: EncodedParts | None = None
    ) -> Loaded:
        loaded = super()._write(checkpoint, token, parts)
        self.writes += 1
        self.with_parts += parts is not None
        scratch = encode_document(loaded.checkpoint.to_json())
        assert loaded.data == scratch
        stored = decode(loaded.data, where="incremental", run_id=checkpoint.run_id)
        assert stored.to_json() == decode(scratch, where="scratch").to_json()
        assert json.loads(loaded.data) == json.loads(scratch)
        return loaded


def test_incremental_writes_equal_writes_from_scratch_across_steps_and_hops() -> None:
    store = CheckedStore()
    flaky = {"left": 1}

    def once_flaky(i: int) -> dict[str, Any]:
        if flaky["left"]:
            flaky["left"] -= 1
            raise ValueError("flaky")
        return {"i": i, "none": None, "text": 'é\u2028"q"', "f": 0.5}

    @longrun(checkpoint=store, run_id=lambda e: "inc", min_margin_ms=1000)
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        run.state.setdefault("total", 0)
        for i in run.iterate(range(40)):
            run.state["total"] += run.step("item", int, i)  # one path, replaced each item
            run.step(f"own-{i}", str, i)  # a path per item: the map grows
            if i % 7 == 0:
                run.step("big", lambda i=i: "x" * (INLINE_LIMIT + i))  # a side object
            time.sleep(1.0)  # virtual: a few items a hop
        odd = run.step("odd", once_flaky, 3, retry=Retry(attempts=2, backoff_s=0.0))
        run.sleep(30.0, name="nap")  # longer than the hop has left: a wake-up hop
        care = run.step("care", lambda: {"k": [1, None, 2]}, at_most_once=True)
        return int(run.state["total"]) + odd["i"] + len(care["k"])

    outcome = LambdaSim(store="handler").run(
        handler, {"id": "inc", "é": [None]}, timeout_s=6.0, faults=Faults("during")
    )
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result == sum(range(40)) + 3 + 3
    assert len([h for h in outcome.hops if h.ran_user_code]) >= 4
    assert store.writes > 80 and store.with_parts > 70


def test_a_record_is_encoded_once_by_its_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[Any] = []
    real = codec._encoder()

    def counting(value: Any) -> bytes | None:
        encoded.append(value)
        return real(value)

    monkeypatch.setattr(codec, "_ENCODER", [counting])
    parts = EncodedParts()
    steps: dict[str, Any] = {}
    for i in range(200):
        steps[f"s{i}"] = {"state": "done", "scope": [], "attempts": 1, "result": i}
        doc = {"format": 1, "seq": i, "steps": dict(steps), "state": {"n": i}}
        assert encode_document(doc, parts) == encode_document(doc)
    records = [v for v in encoded if isinstance(v, dict) and "attempts" in v]
    assert len(records) == 200 + sum(range(1, 201))  # once with parts, every time without
    # A record replaced (not changed in place) is encoded again; one gone is forgotten.
    steps["s0"] = {"state": "done", "scope": [], "attempts": 2, "result": -1}
    del steps["s1"]
    doc = {"format": 1, "seq": 201, "steps": dict(steps)}
    data = encode_document(doc, parts)
    assert data == encode_document(doc)
    assert json.loads(data)["steps"]["s0"]["result"] == -1
    assert "s1" not in parts.records and "s1" not in parts.keys


def test_a_bad_record_is_refused_and_named_with_or_without_parts() -> None:
    parts = EncodedParts()
    doc = {"format": 1, "steps": {"a": {"state": "done", "result": float("nan")}}}
    for given in (None, parts):
        with pytest.raises(Exception, match=r"checkpoint\.steps\['a'\]\['result'\]"):
            encode_document(doc, given)


def _base_checkpoint() -> Checkpoint:
    """A real run's last checkpoint (claimed, one hop, a loop, a step)."""
    store = MemoryStore()

    @longrun(checkpoint=store, run_id=lambda e: "rich")
    def handler(event: Any, context: Any) -> str:
        run = current_run()
        for i in run.iterate([1, 2], key=lambda item: f"k{item}"):
            run.state[str(i)] = run.step("double", lambda x: 2 * x, i)
        return "ok"

    LambdaSim(store="handler").run(handler, {"event": ["é", 1.5, None]})
    loaded = store.load("rich")
    assert loaded is not None
    return loaded.checkpoint


def test_a_checkpoint_encodes_from_its_fields_as_from_its_dict() -> None:
    # Checkpoint.encode builds the bytes from the fields; every optional field present, a
    # field of a newer format, and a None/NaN check on each checked part: the same bytes
    # as the document encoded from its dict.
    from longrun.protocol.document import Claim, ErrorRecord, Escalation, Notice, Status

    base = _base_checkpoint()
    variants = {
        "as stored": base,
        "every optional field": base.replace(
            status=Status.WAITING,
            claim=Claim(request_id="r-1", deadline_ms=None, where="fargate"),
            error=ErrorRecord("ValueError", "bad\u2028line", terminal=True, traceback=("tb",)),
            escalation=Escalation("step too long", 3, task_arn=None),
            notice=Notice("n-1", "completed", "sns:arn", "failed", 2, error="boom"),
            wait={"kind": "callback", "name": "approve", "until_ms": 5, "schedule": None},
            waits=4,
            parent={"run": "p", "map": "d1", "index": 7},
            next={"hop": 4, "sent": False},
            result={"rows": [None, 0.25]},
            result_note="a note",
            tenant_id="tenant-a",
            timing={"longest_item_ms": 3, "mean_item_ms": 0.5},
        ),
        "a field of a newer format": base.replace(extra={"future": [1, None], "seq": 99}),
        "no steps": base.replace(steps={}),
    }
    for name, checkpoint in variants.items():
        scratch = encode_document(checkpoint.to_json())
        assert checkpoint.encode() == scratch, name
        assert checkpoint.encode(EncodedParts()) == scratch, name


def test_a_checkpoint_that_does_not_encode_names_the_value_at_fault() -> None:
    base = _base_checkpoint()
    with pytest.raises(codec.StateNotSerializable) as caught:
        base.replace(state={"rows": [1, float("nan")]}).encode()
    assert caught.value.path == "run.state['rows'][1]"
    with pytest.raises(codec.StateNotSerializable) as caught:
        base.replace(timing={"write_ms": float("inf")}).encode()
    assert caught.value.path is not None and "timing" in caught.value.path


def test_a_prepared_write_must_carry_the_next_seq() -> None:
    # A hop builds each document for one write, with the next seq and a fresh write id
    # (prepared=True); a document that does not carry the next seq is refused, not written.
    store = MemoryStore()
    loaded = store.create(_base_checkpoint().replace(seq=0))
    stale = loaded.checkpoint.replace(write_id="5ca1ab1e5ca1ab1e")
    with pytest.raises(ValueError, match="seq"):
        store.replace(stale, loaded.token, previous=loaded.checkpoint, prepared=True)
    assert store.load("rich").checkpoint.write_id == loaded.checkpoint.write_id  # untouched
    fresh = loaded.checkpoint.replace(seq=loaded.checkpoint.seq + 1, write_id="0ddba11c0ddba11c")
    written = store.replace(fresh, loaded.token, previous=loaded.checkpoint, prepared=True)
    stored = store.load("rich").checkpoint
    assert (stored.seq, stored.write_id) == (loaded.checkpoint.seq + 1, "0ddba11c0ddba11c")
    assert written.data == store.load("rich").data


def test_an_observer_overriding_after_write_gets_every_document_written() -> None:
    # The documented way to watch writes (longrun.ports): Loaded.document is made on demand,
    # so this must still be handed each document, as it was written.
    from realtime import RealTimeContext

    from longrun import ports

    seen: list[tuple[str, int, str, Any]] = []

    class Recorder(ports.Observer):
        def after_write(self, run_id: str, what: str, document: Any) -> None:
            results = [r.get("result") for r in document.get("steps", {}).values()]
            seen.append((what, document["seq"], document["status"], results))

    @longrun(checkpoint=MemoryStore(), run_id=lambda e: "observed")
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for i in run.iterate(range(3)):
            run.state["n"] = run.step("s", int, i + 10)
        return int(run.state["n"])

    with ports.installed(observer=Recorder()):
        context = RealTimeContext(600, arn="arn:aws:lambda:us-east-1:123456789012:function:f")
        assert handler({}, context) == 12
    assert [seq for _, seq, _, _ in seen] == list(range(1, len(seen) + 1))
    assert seen[0][0] == "claim" and seen[-1][2] == "completed"
    # each step's write holds its result (the state's n is assigned after the step returns)
    assert [r for what, _, _, r in seen if what == "checkpoint"] == [[10], [11], [12]]
