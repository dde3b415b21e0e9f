"""Corrupt or foreign checkpoints are refused: CheckpointCorrupt names the field, the stored
bytes stay as they were, no user code runs, and other runs are untouched (tier 1, real files).

Each case starts a real run on a FileStore, lets hop 0 end early (``continued``), edits the
stored file by hand, then delivers hop 1's envelope as Lambda would.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from longrun import (
    CheckpointCorrupt,
    CheckpointFormatError,
    FileStore,
    current_run,
    longrun,
    ports,
)
from longrun.checkpoint import make_envelope
from longrun.resume import resume_in_lambda
from longrun.testing import FakeContext, RecordingTransport, VirtualClock

Doc = dict[str, Any]


class Runs:
    def __init__(self, root: Path) -> None:
        self.store = FileStore(root)
        self.root = root
        self.calls: Counter[tuple[str, int]] = Counter()
        self.hooks = RecordingTransport()
        calls = self.calls

        @longrun(checkpoint=self.store, run_id=lambda event: event["id"], max_hops=5)
        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            run = current_run()
            for i in run.iterate(range(10), name="items"):
                if i == 4 and run.hop == 0:
                    run.end_hop()  # items 0-3 finished, item 4 not started
                calls[(run.id, i)] += 1
                run.state["done"] = run.state.get("done", 0) + 1
            return {"done": run.state["done"]}

        self.handler = handler

    def call(self, event: Any) -> Any:
        with ports.installed(transport=self.hooks):
            return self.handler(event, FakeContext(VirtualClock(), timeout_s=900))

    def start(self, run_id: str) -> None:
        response = self.call({"id": run_id})
        assert response["longrun"]["status"] == "continued"

    def path(self, run_id: str) -> Path:
        return self.root / run_id / "checkpoint.json"

    def doc(self, run_id: str) -> Doc:
        loaded: Doc = json.loads(self.path(run_id).read_bytes())
        return loaded


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Runs]:
    runs = Runs(tmp_path / "store")
    runs.start("run-a")
    runs.start("run-b")
    yield runs


def _set(path: tuple[Any, ...], value: Any) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _drop(name: str) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        del doc[name]

    return edit


FIELD_CASES = {
    "done-as-string": (_set(("cursors", "items", "done"), "false"), "cursors['items'].done"),
    "pos-as-string": (_set(("cursors", "items", "pos"), "3"), "cursors['items'].pos"),
    "pos-negative": (_set(("cursors", "items", "pos"), -2), "cursors['items'].pos"),
    "created-not-a-time": (_set(("created_ms",), "yesterday"), "created_ms"),
    "event-missing": (_drop("event"), "event"),
    "timing-a-list": (_set(("timing",), [1, 2]), "timing"),
    "timing-negative": (_set(("timing", "write_ms"), -5), "timing.write_ms"),
    "claim-a-string": (_set(("claim",), "mine"), "claim"),
    "error-a-string": (_set(("error",), "boom"), "error"),
    "hops-a-string": (_set(("hops",), "many"), "hops"),
    "hop-entry-bad": (_set(("hops", 0, "started_ms"), 1.5), "hops[0].started_ms"),
    "hop-negative": (_set(("hop",), -1), "hop"),
    "status-unknown": (_set(("status",), "paused"), "status"),
    "state-a-list": (_set(("state",), [1, 2]), "state"),
    "seq-a-string": (_set(("seq",), "7"), "seq"),
    "write-id-odd": (_set(("write_id",), "<script>"), "write_id"),
    "next-unknown": (_set(("next",), "mars"), "next"),
}


@pytest.mark.parametrize("case", sorted(FIELD_CASES))
def test_each_corrupt_field_is_named_and_nothing_is_written_or_run(runs: Runs, case: str) -> None:
    edit, field = FIELD_CASES[case]
    doc = runs.doc("run-a")
    edit(doc)
    runs.path("run-a").write_text(json.dumps(doc))
    stored = runs.path("run-a").read_bytes()
    other = runs.path("run-b").read_bytes()
    calls = dict(runs.calls)

    with pytest.raises(CheckpointCorrupt) as caught:
        runs.call(make_envelope("run-a", 1))

    assert caught.value.field == field
    assert field in str(caught.value)
    assert "run-a" in str(caught.value)  # the location
    assert runs.path("run-a").read_bytes() == stored
    assert runs.path("run-b").read_bytes() == other
    assert dict(runs.calls) == calls
    # The other run carries on untouched and finishes every item exactly once.
    assert runs.call(make_envelope("run-b", 1)) == {"done": 10}
    assert [runs.calls[("run-b", i)] for i in range(10)] == [1] * 10


RAW_CASES = {
    "nan": (lambda data: data.replace(b'"state":{', b'"state":{"x":NaN,', 1), "(json)"),
    "infinity": (lambda data: data.replace(b'"state":{', b'"state":{"x":-Infinity,', 1), "(json)"),
    "overflow": (lambda data: data.replace(b'"state":{', b'"state":{"x":1e999,', 1), "state['x']"),
    "deep": (
        lambda data: data.replace(
            b'"state":{', b'"state":{"x":' + b"[" * 100_000 + b"]" * 100_000 + b",", 1
        ),
        "(nesting)",
    ),
    "not-json": (lambda data: data[: len(data) // 2], "(json)"),
    "not-utf8": (lambda data: b"\xff\xfe" + data, "(json)"),
}


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_non_finite_numbers_deep_nesting_and_bad_bytes_are_refused(runs: Runs, case: str) -> None:
    edit, field = RAW_CASES[case]
    runs.path("run-a").write_bytes(edit(runs.path("run-a").read_bytes()))
    stored = runs.path("run-a").read_bytes()
    calls = dict(runs.calls)

    with pytest.raises(CheckpointCorrupt) as caught:
        runs.call(make_envelope("run-a", 1))

    assert caught.value.field == field
    assert len(str(caught.value)) < 1000  # the message quotes no megabytes
    assert runs.path("run-a").read_bytes() == stored
    assert dict(runs.calls) == calls


def test_newer_format_is_a_format_error(runs: Runs) -> None:
    doc = runs.doc("run-a")
    doc["format"] = 2
    runs.path("run-a").write_text(json.dumps(doc))
    with pytest.raises(CheckpointFormatError, match="upgrade longrun") as caught:
        runs.call(make_envelope("run-a", 1))
    assert caught.value.field == "format"


def test_a_copied_checkpoint_does_not_advance_or_cancel_the_other_run(runs: Runs) -> None:
    """Run B's checkpoint copied to run A's key: A's next hop must not claim and advance B,
    and cancelling A must not cancel B."""
    runs.path("run-a").write_bytes(runs.path("run-b").read_bytes())
    copied = runs.path("run-a").read_bytes()
    b_before = runs.path("run-b").read_bytes()
    calls = dict(runs.calls)

    with pytest.raises(CheckpointCorrupt, match="another run's id") as caught:
        runs.call(make_envelope("run-a", 1))
    assert caught.value.field == "run_id"
    with pytest.raises(CheckpointCorrupt):
        runs.store.cancel("run-a")
    with pytest.raises(CheckpointCorrupt):
        resume_in_lambda(runs.store, "run-a")

    assert runs.path("run-a").read_bytes() == copied
    assert runs.path("run-b").read_bytes() == b_before
    assert runs.doc("run-b")["status"] == "continued"
    assert dict(runs.calls) == calls
    assert [e for e in runs.hooks.sent if e["longrun"]["run_id"] == "run-a"] == [
        make_envelope("run-a", 1)  # only hop 0's own hand-off
    ]


def test_a_valid_checkpoint_still_resumes_exactly_once(runs: Runs) -> None:
    """The control case: the same delivery on an untouched checkpoint finishes the run."""
    assert runs.call(make_envelope("run-a", 1)) == {"done": 10}
    assert [runs.calls[("run-a", i)] for i in range(10)] == [1] * 10
    assert runs.doc("run-a")["status"] == "completed"
