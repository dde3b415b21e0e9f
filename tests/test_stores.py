"""The checkpoint store contract, checked against what each real backend ends up holding.

Every generic test runs on the three stores: S3Store against the moto server, FileStore on a
temporary directory, MemoryStore. Assertions read the stored bytes back from the backend
itself (``get_object``, the file on disk, ``MemoryStore.raw``), not from the store's answers.
"""

from __future__ import annotations

import datetime
import errno
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from longrun import (
    CheckpointConflict,
    CheckpointCorrupt,
    CheckpointFormatError,
    CheckpointStore,
    FileStore,
    InvalidRunId,
    LongrunConfigError,
    MemoryStore,
    RunNotFound,
    S3Store,
    StateNotSerializable,
    StoreError,
)
from longrun.checkpoint import FORMAT

PREFIX = "lr/"
NAME = "checkpoint.json"


def new_doc(run_id: str = "run-1", **fields: Any) -> dict[str, Any]:
    """A checkpoint document shaped like the ones the runtime writes."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "seq": 0,
        "run_id": run_id,
        "status": "running",
        "hop": 0,
        "created_ms": 1_700_000_000_000,
        "updated_ms": 1_700_000_000_000,
        "claim": {"request_id": "req-1", "deadline_ms": 1_700_000_000_000, "where": "lambda"},
        "event": {"bucket": "in", "keys": ["a", "b"]},
        "state": {},
        "cursors": {},
        "hops": [
            {"hop": 0, "attempt": 1, "where": "lambda", "request_id": "req-1", "started_ms": 0}
        ],
        "result": None,
        "error": None,
        "next": None,
    }
    doc.update(fields)
    return doc


@dataclass
class Backend:
    """A store plus direct access to the storage under it."""

    kind: str
    store: CheckpointStore
    raw_read: Callable[[str], bytes | None]
    raw_write: Callable[[str, bytes], None]
    location: Callable[[str], str]


def _s3_backend(s3_client: Any, bucket: str) -> Backend:
    def key(run_id: str) -> str:
        return f"{PREFIX}{run_id}/{NAME}"

    def raw_read(run_id: str) -> bytes | None:
        try:
            body: bytes = s3_client.get_object(Bucket=bucket, Key=key(run_id))["Body"].read()
        except s3_client.exceptions.NoSuchKey:
            return None
        return body

    def raw_write(run_id: str, data: bytes) -> None:
        s3_client.put_object(Bucket=bucket, Key=key(run_id), Body=data)

    return Backend(
        "s3",
        S3Store(bucket, prefix=PREFIX, client=s3_client),
        raw_read,
        raw_write,
        lambda run_id: f"s3://{bucket}/{key(run_id)}",
    )


def _file_backend(root: Path) -> Backend:
    def raw_read(run_id: str) -> bytes | None:
        path = root / run_id / NAME
        return path.read_bytes() if path.exists() else None

    def raw_write(run_id: str, data: bytes) -> None:
        path = root / run_id / NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return Backend(
        "file",
        FileStore(root),
        raw_read,
        raw_write,
        lambda run_id: f"file://{root}/{run_id}/{NAME}",
    )


def _memory_backend() -> Backend:
    store = MemoryStore()

    def raw_write(run_id: str, data: bytes) -> None:
        # Written behind the store's back, as another process would write to S3 or a file.
        store._put(store.key(run_id), data)

    return Backend(
        "memory", store, store.raw, raw_write, lambda run_id: f"MemoryStore:{run_id}/{NAME}"
    )


@pytest.fixture(params=["s3", "file", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "s3":
        return _s3_backend(request.getfixturevalue("s3_client"), request.getfixturevalue("bucket"))
    if request.param == "file":
        return _file_backend(tmp_path / "store")
    return _memory_backend()


def stored(backend: Backend, run_id: str = "run-1") -> dict[str, Any]:
    """The document the backend holds, parsed from its raw bytes."""
    raw = backend.raw_read(run_id)
    assert raw is not None, f"nothing stored for {run_id}"
    document: dict[str, Any] = json.loads(raw)
    return document


# -- round trip and seq ---------------------------------------------------------------------------


def test_create_load_replace_round_trip(backend: Backend) -> None:
    store = backend.store
    state = {
        "done": 3,
        "ratio": 0.25,
        "big": 2**62,
        "ok": True,
        "nothing": None,
        "text": "naïve ✓ 日本",
        "nested": {"list": [1, [2, {"three": 3}]], "empty": {}},
    }
    created = store.create(new_doc(state=state))
    assert created.document["seq"] == 1
    assert created.size == len(backend.raw_read("run-1") or b"")

    loaded = store.load("run-1")
    assert loaded is not None
    expected = new_doc(seq=1, state=state)
    del expected["hops"]  # stored with every field of a hop entry filled in
    assert {k: loaded.document[k] for k in expected} == expected
    assert loaded.document == stored(backend)
    assert loaded.size == len(backend.raw_read("run-1") or b"")

    doc = loaded.document
    doc["state"]["done"] = 4
    doc["cursors"]["main"] = {"pos": 4, "done": False}
    doc["status"] = "continued"
    doc["hop"] = 1
    replaced = store.replace(doc, loaded.token)
    assert replaced.document["seq"] == 2
    assert replaced.token != loaded.token

    again = store.load("run-1")
    assert again is not None
    assert again.token == replaced.token
    assert again.document == stored(backend)
    assert again.document["state"]["done"] == 4
    assert again.document["cursors"] == {"main": {"pos": 4, "done": False}}
    assert (again.document["status"], again.document["hop"], again.document["seq"]) == (
        "continued",
        1,
        2,
    )
    assert again.document["state"]["text"] == "naïve ✓ 日本"


def test_seq_increments_on_every_write(backend: Backend) -> None:
    store = backend.store
    loaded = store.create(new_doc(seq=41))  # whatever the caller put there, a run starts at 1
    assert stored(backend)["seq"] == 1
    tokens = {loaded.token}
    for expected in range(2, 7):
        loaded.document["state"]["n"] = expected
        loaded = store.replace(loaded.document, loaded.token)
        assert loaded.document["seq"] == expected
        assert stored(backend)["seq"] == expected
        assert stored(backend)["state"]["n"] == expected
        tokens.add(loaded.token)
    assert len(tokens) == 6  # every write has a new version token


def test_create_on_an_existing_run_conflicts(backend: Backend) -> None:
    store = backend.store
    store.create(new_doc(state={"first": True}))
    before = backend.raw_read("run-1")
    with pytest.raises(CheckpointConflict) as info:
        store.create(new_doc(state={"second": True}))
    assert "already exists" in str(info.value)
    assert "changed since it was read" not in str(info.value)
    assert backend.location("run-1") in str(info.value)
    assert backend.raw_read("run-1") == before
    assert stored(backend)["state"] == {"first": True}


def test_replace_with_a_stale_token_conflicts_and_leaves_the_stored_document(
    backend: Backend,
) -> None:
    store = backend.store
    store.create(new_doc())
    a = store.load("run-1")
    b = store.load("run-1")
    assert a is not None and b is not None and a.token == b.token

    a.document["state"]["writer"] = "a"
    store.replace(a.document, a.token)
    after_a = backend.raw_read("run-1")

    b.document["state"]["writer"] = "b"
    with pytest.raises(CheckpointConflict) as info:
        store.replace(b.document, b.token)
    assert "changed since it was read" in str(info.value)
    assert backend.location("run-1") in str(info.value)
    assert backend.raw_read("run-1") == after_a
    assert stored(backend)["state"] == {"writer": "a"}
    assert stored(backend)["seq"] == 2
    assert b.document["seq"] == 1  # the loser's document is left as it was

    # The loser can reload and retry on top of the winner's write.
    fresh = store.load("run-1")
    assert fresh is not None
    fresh.document["state"]["after"] = "b"
    store.replace(fresh.document, fresh.token)
    assert stored(backend)["state"] == {"writer": "a", "after": "b"}
    assert stored(backend)["seq"] == 3


def test_replace_after_delete_conflicts_and_does_not_recreate(backend: Backend) -> None:
    store = backend.store
    store.create(new_doc())
    loaded = store.load("run-1")
    assert loaded is not None
    store.delete("run-1")
    with pytest.raises(CheckpointConflict) as info:
        store.replace(loaded.document, loaded.token)
    assert backend.location("run-1") in str(info.value)
    assert backend.raw_read("run-1") is None
    assert store.load("run-1") is None


def test_load_of_a_missing_run_is_none(backend: Backend) -> None:
    assert backend.store.load("never-created") is None
    backend.store.create(new_doc("other"))
    assert backend.store.load("never-created") is None


def test_list_runs(backend: Backend) -> None:
    store = backend.store
    assert list(store.list_runs()) == []
    for run_id in ("b-run", "a-run", "c.run_1"):
        store.create(new_doc(run_id))
    assert sorted(store.list_runs()) == ["a-run", "b-run", "c.run_1"]
    store.delete("b-run")
    assert sorted(store.list_runs()) == ["a-run", "c.run_1"]


def test_delete(backend: Backend) -> None:
    store = backend.store
    store.create(new_doc("keep"))
    store.create(new_doc("run-1"))
    store.delete("run-1")
    assert backend.raw_read("run-1") is None
    assert store.load("run-1") is None
    assert backend.raw_read("keep") is not None
    store.delete("run-1")  # already gone: no error
    store.delete("never-existed")
    # The id can be used again, from seq 1.
    assert store.create(new_doc("run-1")).document["seq"] == 1
    assert stored(backend)["seq"] == 1


def test_status(backend: Backend) -> None:
    store = backend.store
    store.create(new_doc(state={"x": 1}))
    assert store.status("run-1") == stored(backend)
    assert store.status("run-1")["state"] == {"x": 1}
    with pytest.raises(RunNotFound) as info:
        store.status("missing")
    assert backend.location("missing") in str(info.value)


@pytest.mark.parametrize("status", ["running", "continued", "escalated", "failed"])
def test_cancel_marks_the_run_cancelled(backend: Backend, status: str) -> None:
    store = backend.store
    store.create(new_doc(status=status, state={"done": 7}, next="lambda"))
    returned = store.cancel("run-1")
    doc = stored(backend)
    assert returned == doc
    assert doc["status"] == "cancelled"
    assert doc["claim"] is None
    assert doc["next"] is None
    assert doc["state"] == {"done": 7}  # the progress is kept
    assert doc["seq"] == 2


@pytest.mark.parametrize("status", ["completed", "cancelled"])
def test_cancel_leaves_finished_runs_alone(backend: Backend, status: str) -> None:
    store = backend.store
    store.create(new_doc(status=status, result={"done": 3}))
    before = backend.raw_read("run-1")
    assert store.cancel("run-1")["status"] == status
    assert backend.raw_read("run-1") == before


def test_cancel_of_a_missing_run(backend: Backend) -> None:
    with pytest.raises(RunNotFound) as info:
        backend.store.cancel("missing")
    assert backend.location("missing") in str(info.value)
    assert backend.raw_read("missing") is None


def test_cancel_retries_when_another_writer_gets_in_first(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hop checkpoints between cancel's read and write: cancel re-reads, keeps its progress."""
    store = backend.store
    store.create(new_doc(state={"done": 1}))
    real_load = store.load
    interleaved = []

    def load_then_someone_writes(run_id: str) -> Any:
        loaded = real_load(run_id)
        if not interleaved:
            interleaved.append(True)
            other = real_load(run_id)
            assert other is not None
            other.document["state"]["done"] = 2
            store.replace(other.document, other.token)
        return loaded

    monkeypatch.setattr(store, "load", load_then_someone_writes)
    store.cancel("run-1")
    doc = stored(backend)
    assert doc["status"] == "cancelled"
    assert doc["state"] == {"done": 2}  # the concurrent write was not lost
    assert doc["seq"] == 3


# -- what is stored --------------------------------------------------------------------------


def test_stored_bytes_are_plain_json(backend: Backend) -> None:
    store = backend.store
    created = store.create(new_doc(state={"text": "✓ é", "n": [1, 2.5, None]}))
    raw = backend.raw_read("run-1")
    assert raw is not None
    assert json.loads(raw) == created.document
    assert json.loads(raw.decode("utf-8")) == store.status("run-1")
    # UTF-8 JSON; format then seq first (FileStore reads its token from there).
    assert "✓ é".encode() in raw or b"\\u2713 \\u00e9" in raw
    assert raw.startswith(b'{"format":%d,"seq":1,' % FORMAT)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x80\x81\xfe not json at all",
        b'{"format": 1, "seq": 3, "status": "runn',
        b"[1, 2, 3]",
        b'"a string"',
        b"",
        json.dumps({"format": 1, "seq": 1, "run_id": "run-1", "status": "bogus"}).encode(),
        json.dumps(
            {"format": 1, "seq": 1, "status": "running", "hop": -1, "state": [], "cursors": {}}
        ).encode(),
    ],
    ids=["binary", "truncated", "list", "string", "empty", "bad-status", "bad-fields"],
)
def test_corrupt_stored_object_is_checkpoint_corrupt(backend: Backend, garbage: bytes) -> None:
    backend.raw_write("run-1", garbage)
    for call in (backend.store.load, backend.store.status, backend.store.cancel):
        with pytest.raises(CheckpointCorrupt) as info:
            call("run-1")
        assert type(info.value) is CheckpointCorrupt
        assert backend.location("run-1") in str(info.value)
    assert backend.raw_read("run-1") == garbage  # nothing overwrote it


def test_newer_format_is_checkpoint_format_error(backend: Backend) -> None:
    data = json.dumps(new_doc(format=FORMAT + 1, seq=5)).encode()
    backend.raw_write("run-1", data)
    for call in (backend.store.load, backend.store.cancel):
        with pytest.raises(CheckpointFormatError) as info:
            call("run-1")
        message = str(info.value)
        assert backend.location("run-1") in message
        assert f"format {FORMAT + 1}" in message
        assert "newer" in message
    assert backend.raw_read("run-1") == data


# -- run ids ---------------------------------------------------------------------------------

BAD_RUN_IDS = ["../x", "", "a/b", "x" * 200, "x" * 129, ".hidden", "-dash", "a b", "run\n", "é"]


def test_invalid_run_ids_are_refused_before_any_access(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for run_id in BAD_RUN_IDS:
        calls: dict[str, Callable[[], Any]] = {
            "load": lambda run_id=run_id: store.load(run_id),
            "create": lambda run_id=run_id: store.create(new_doc(run_id)),
            "replace": lambda run_id=run_id: store.replace(new_doc(run_id, seq=1), 1),
            "status": lambda run_id=run_id: store.status(run_id),
            "cancel": lambda run_id=run_id: store.cancel(run_id),
            "delete": lambda run_id=run_id: store.delete(run_id),
            "key": lambda run_id=run_id: store.key(run_id),
        }
        for name, call in calls.items():
            with pytest.raises(InvalidRunId) as info:
                call()
            assert repr(run_id)[:200] in str(info.value), (name, run_id)
    assert list(store.list_runs()) == []
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_longest_valid_run_id(backend: Backend) -> None:
    run_id = "R" + "x" * 126 + "9"
    assert len(run_id) == 128
    backend.store.create(new_doc(run_id))
    assert stored(backend, run_id)["run_id"] == run_id
    assert list(backend.store.list_runs()) == [run_id]


# -- state that is not JSON ------------------------------------------------------------------

UNSERIALIZABLE = [
    ({"tags": {"a", "b"}}, "run.state['tags']", "set"),
    ({"when": datetime.datetime(2024, 1, 2, 3, 4, 5)}, "run.state['when']", "datetime"),
    ({"by_id": {1: "one"}}, "run.state['by_id'][1]", "int"),
    ({"by_id": {None: "none"}}, "run.state['by_id'][None]", "NoneType"),
    ({"ratio": float("nan")}, "run.state['ratio']", "nan"),
    ({"deep": [1, {"x": math.inf}]}, "run.state['deep'][1]['x']", "inf"),
    ({"blob": b"bytes"}, "run.state['blob']", "bytes"),
]


@pytest.mark.parametrize(
    ("state", "path", "why"), UNSERIALIZABLE, ids=[c[2] for c in UNSERIALIZABLE]
)
def test_unserializable_state_is_refused_and_the_last_checkpoint_kept(
    backend: Backend, state: dict[str, Any], path: str, why: str
) -> None:
    store = backend.store
    store.create(new_doc(state={"done": 1}))
    before = backend.raw_read("run-1")
    loaded = store.load("run-1")
    assert loaded is not None
    doc = loaded.document
    doc["state"].update(state)
    with pytest.raises(StateNotSerializable) as info:
        store.replace(doc, loaded.token)
    assert path in str(info.value)
    assert why in str(info.value)
    assert backend.raw_read("run-1") == before
    assert doc["seq"] == 1

    # The token is still good: fixing the state lets the same writer save.
    for key in state:
        del doc["state"][key]
    doc["state"]["done"] = 2
    store.replace(doc, loaded.token)
    assert stored(backend)["state"] == {"done": 2}


@pytest.mark.parametrize(
    ("state", "path", "why"), UNSERIALIZABLE, ids=[c[2] for c in UNSERIALIZABLE]
)
def test_unserializable_state_on_create_stores_nothing(
    backend: Backend, state: dict[str, Any], path: str, why: str
) -> None:
    with pytest.raises(StateNotSerializable) as info:
        backend.store.create(new_doc(state=state))
    assert path in str(info.value)
    assert backend.raw_read("run-1") is None
    assert backend.store.load("run-1") is None


def test_unserializable_cursor_and_result_are_named(backend: Backend) -> None:
    store = backend.store
    loaded = store.create(new_doc())
    loaded.document["cursors"]["items"] = {"pos": 1, "done": False, "key": ("a", {1, 2})}
    with pytest.raises(StateNotSerializable, match=r"run\.cursors\['items'\]\['key'\]\[1\]"):
        store.replace(loaded.document, loaded.token)
    loaded.document["cursors"] = {}
    loaded.document["result"] = {"at": datetime.date(2024, 1, 1)}
    with pytest.raises(StateNotSerializable, match=r"run\.result\['at'\]"):
        store.replace(loaded.document, loaded.token)
    assert stored(backend)["seq"] == 1


# -- S3 ----------------------------------------------------------------------------------------


@pytest.fixture
def s3(s3_client: Any, bucket: str) -> Backend:
    return _s3_backend(s3_client, bucket)


def test_s3_key_layout_and_content_type(s3: Backend, s3_client: Any, bucket: str) -> None:
    s3.store.create(new_doc("job-42"))
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    created = new_doc("job-42")["created_ms"]
    marker = f"lr/_runs/job-42~000000000001~live~0~lambda~0~{created}~{created}"
    assert keys == [marker, "lr/job-42/checkpoint.json"]  # the run's index marker, its document
    head = s3_client.head_object(Bucket=bucket, Key="lr/job-42/checkpoint.json")
    assert head["ContentType"] == "application/json"
    assert s3.store.describe(s3.store.key("job-42")) == f"s3://{bucket}/lr/job-42/checkpoint.json"


def test_s3_puts_are_conditional_on_the_wire(s3: Backend, s3_client: Any) -> None:
    sent: list[dict[str, str]] = []

    def capture(request: Any, **_: Any) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        conditions = {k: v for k, v in headers.items() if k.startswith("if-")}
        if "/_runs/" in request.url:  # the run's index marker: written as it is
            assert conditions == {}
            return
        sent.append({k: v.decode() if isinstance(v, bytes) else v for k, v in conditions.items()})

    s3_client.meta.events.register("before-send.s3.PutObject", capture)
    created = s3.store.create(new_doc())
    replaced = s3.store.replace(created.document, created.token)
    assert sent == [{"if-none-match": "*"}, {"if-match": created.token}]
    assert replaced.token != created.token


def _race(contenders: int, attempt: Callable[[int], Any]) -> tuple[list[int], list[Exception]]:
    """Run ``attempt(i)`` in ``contenders`` threads released together; (winners, errors)."""
    barrier = threading.Barrier(contenders)
    winners: list[int] = []
    errors: list[Exception] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            attempt(i)
        except Exception as exc:
            errors.append(exc)
        else:
            winners.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(contenders)]
    # moto's server checks If-Match / If-None-Match and then stores the object without a lock.
    # A long switch interval keeps that check-then-store atomic under the GIL (a thread only
    # gives the GIL up when it blocks), so this race tests longrun, not moto's own race.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        sys.setswitchinterval(interval)
    assert not any(t.is_alive() for t in threads)
    return winners, errors


def test_s3_racing_replaces_with_the_same_token_exactly_one_wins(
    moto_server: str, bucket: str
) -> None:
    import boto3

    contenders = 4
    stores = [
        S3Store(
            bucket,
            prefix=PREFIX,
            client=boto3.session.Session().client(
                "s3", endpoint_url=moto_server, region_name="us-east-1"
            ),
        )
        for _ in range(contenders)
    ]
    stores[0].create(new_doc())
    for round_ in range(3):
        loads = [s.load("run-1") for s in stores]
        assert len({lo.token for lo in loads if lo is not None}) == 1

        def replace(i: int, loads: list[Any] = loads, round_: int = round_) -> None:
            doc = loads[i].document
            doc["state"] = {"winner": i, "round": round_}
            stores[i].replace(doc, loads[i].token)

        winners, errors = _race(contenders, replace)
        assert len(winners) == 1, (winners, errors)
        assert len(errors) == contenders - 1
        assert all(type(e) is CheckpointConflict for e in errors), errors
        final = stores[0].status("run-1")
        assert final["state"] == {"winner": winners[0], "round": round_}
        assert final["seq"] == round_ + 2


def test_s3_racing_creates_exactly_one_wins(moto_server: str, bucket: str) -> None:
    import boto3

    contenders = 4
    stores = [
        S3Store(
            bucket,
            client=boto3.session.Session().client(
                "s3", endpoint_url=moto_server, region_name="us-east-1"
            ),
        )
        for _ in range(contenders)
    ]
    winners, errors = _race(
        contenders, lambda i: stores[i].create(new_doc("fresh", state={"creator": i}))
    )
    assert len(winners) == 1, (winners, errors)
    assert all(type(e) is CheckpointConflict and "already exists" in str(e) for e in errors)
    assert stores[0].status("fresh")["state"] == {"creator": winners[0]}


def test_s3_missing_bucket_is_a_store_error_naming_the_location(s3_client: Any) -> None:
    name = f"longrun-missing-{uuid.uuid4().hex[:12]}"
    store = S3Store(name, prefix=PREFIX, client=s3_client)
    where = f"s3://{name}/{PREFIX}run-1/{NAME}"
    calls: list[Callable[[], Any]] = [
        lambda: store.load("run-1"),
        lambda: store.create(new_doc()),
        lambda: store.replace(new_doc(seq=1), '"etag"'),
        lambda: store.delete("run-1"),
        lambda: store.status("run-1"),
    ]
    for call in calls:
        with pytest.raises(StoreError) as info:
            call()
        assert type(info.value) is StoreError  # not a conflict, not "not found"
        # create writes the run's index marker first: its key, in the same place, is named
        marker = f"s3://{name}/{PREFIX}_runs/run-1~"
        assert where in str(info.value) or marker in str(info.value)
        assert "NoSuchBucket" in str(info.value)
    with pytest.raises(StoreError) as info:
        list(store.list_runs())
    assert type(info.value) is StoreError
    assert f"s3://{name}/{PREFIX}" in str(info.value)


def test_s3_list_runs_only_sees_checkpoints_under_its_prefix(
    s3: Backend, s3_client: Any, bucket: str
) -> None:
    s3.store.create(new_doc("mine"))
    for key in ("other/theirs/checkpoint.json", "lr/mine/notes.txt", "lr/stray.json", "lrx"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"{}")
    assert list(s3.store.list_runs()) == ["mine"]
    other = S3Store(bucket, prefix="other/", client=s3_client)
    assert list(other.list_runs()) == ["theirs"]


def test_s3_list_runs_follows_every_page(s3_client: Any, bucket: str) -> None:
    store = S3Store(bucket, prefix=PREFIX, client=s3_client)
    ids = [f"run-{i:02d}" for i in range(7)]
    for run_id in ids:
        store.create(new_doc(run_id))
    requests: list[int] = []

    def small_pages(params: dict[str, Any], **_: Any) -> None:
        params["MaxKeys"] = 2  # as S3 does past 1000 keys, with fewer objects to write
        requests.append(1)

    s3_client.meta.events.register("before-parameter-build.s3.ListObjectsV2", small_pages)
    assert list(store.list_runs()) == ids
    assert len(requests) == 7  # 7 checkpoints and 7 index markers, 2 keys a page


def test_s3_store_does_not_import_boto3_until_used() -> None:
    code = (
        "import sys, longrun\n"
        "s = longrun.S3Store('b', prefix='p/')\n"
        "from longrun.config import store_from_uri\n"
        "store_from_uri('s3://other-bucket/x/')\n"
        "assert 'boto3' not in sys.modules, 'boto3 imported'\n"
        "assert 'botocore' not in sys.modules, 'botocore imported'\n"
        "s.client\n"
        "assert 'boto3' in sys.modules\n"
        "print('ok')\n"
    )
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_s3_client_is_created_once_on_first_use(
    moto_server: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    store = S3Store(bucket, prefix=PREFIX)
    assert store._client is None
    store.create(new_doc())
    client = store._client
    assert client is not None
    assert store.load("run-1") is not None
    assert store.client is client


@pytest.mark.parametrize("bad", ["", "a/b", "s3://bucket", None])
def test_s3_bad_bucket_name_is_a_config_error(bad: Any) -> None:
    with pytest.raises(LongrunConfigError, match="bucket"):
        S3Store(bad)


# -- FileStore ---------------------------------------------------------------------------------

_WORKER = r"""
import sys, time
from pathlib import Path
from longrun.errors import CheckpointConflict
from longrun.stores.file import FileStore

root, run_id, worker, count, ready, go = sys.argv[1:]
store = FileStore(root)
Path(ready).touch()
deadline = time.monotonic() + 30
while not Path(go).exists():
    if time.monotonic() > deadline:
        sys.exit("never released")
    time.sleep(0.001)
conflicts = done = 0
while done < int(count):
    loaded = store.load(run_id)
    doc = loaded.document
    doc["state"]["count"] += 1
    doc["state"]["by"][worker] = doc["state"]["by"].get(worker, 0) + 1
    try:
        store.replace(doc, loaded.token)
    except CheckpointConflict:
        conflicts += 1
        continue
    done += 1
print(conflicts)
"""


def test_file_concurrent_processes_lose_no_update(tmp_path: Path) -> None:
    root = tmp_path / "store"
    FileStore(root).create(new_doc(state={"count": 0, "by": {}}))
    workers, per_worker = 4, 30
    go = tmp_path / "go"
    procs = []
    for w in range(workers):
        args = [str(root), "run-1", f"w{w}", str(per_worker), str(tmp_path / f"ready{w}"), str(go)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"ready{w}").exists() for w in range(workers)):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.005)
        go.touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * workers, outputs
    doc = json.loads((root / "run-1" / NAME).read_bytes())
    assert doc["state"]["count"] == workers * per_worker
    assert doc["state"]["by"] == {f"w{w}": per_worker for w in range(workers)}
    assert doc["seq"] == 1 + workers * per_worker
    assert sorted(os.listdir(root / "run-1")) == [".lock", NAME]


def test_file_leaves_no_stray_temporary_files(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = FileStore(root)
    loaded = store.create(new_doc())
    for i in range(20):
        loaded.document["state"]["i"] = i
        loaded = store.replace(loaded.document, loaded.token)
    stale = store.load("run-1")
    assert stale is not None
    store.replace(loaded.document, loaded.token)
    with pytest.raises(CheckpointConflict):
        store.replace(stale.document, stale.token)
    with pytest.raises(StateNotSerializable):
        store.replace(stale.document | {"state": {"s": {1}}}, stale.token)
    with pytest.raises(CheckpointConflict):
        store.create(new_doc())
    assert sorted(os.listdir(root)) == ["_runs", "run-1"]
    assert sorted(os.listdir(root / "run-1")) == [".lock", NAME]
    # the run's index marker (create writes it before its conflict), nothing half-written
    [marker] = [name for name in os.listdir(root / "_runs") if name != ".lock"]
    assert marker.startswith("run-1~000000000001~live~")


def test_file_failed_write_is_a_store_error_and_keeps_the_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    store = FileStore(root)
    loaded = store.create(new_doc(state={"done": 1}))
    before = (root / "run-1" / NAME).read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    loaded.document["state"]["done"] = 2
    with pytest.raises(StoreError) as info:
        store.replace(loaded.document, loaded.token)
    monkeypatch.undo()
    assert type(info.value) is StoreError
    assert f"file://{root}/run-1/{NAME}" in str(info.value)
    assert "No space left" in str(info.value)
    assert (root / "run-1" / NAME).read_bytes() == before
    assert loaded.document["seq"] == 1
    assert sorted(os.listdir(root / "run-1")) == [".lock", NAME]
    store.replace(loaded.document, loaded.token)  # the token is still good once the disk is
    assert json.loads((root / "run-1" / NAME).read_bytes())["state"] == {"done": 2}


def test_file_path_that_is_a_regular_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    with pytest.raises(LongrunConfigError) as info:
        FileStore(path)
    assert str(path) in str(info.value)
    assert "not a directory" in str(info.value)
    assert path.read_text() == "x"


def test_file_root_is_created_on_first_write(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    store = FileStore(root)
    assert not root.exists()
    assert list(store.list_runs()) == []
    assert store.load("run-1") is None
    assert not root.exists()
    store.create(new_doc())
    assert (root / "run-1" / NAME).is_file()


def test_file_relative_path_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = FileStore("rel/store")
    assert store.root == tmp_path / "rel" / "store"
    monkeypatch.chdir("/")
    store.create(new_doc())
    assert (tmp_path / "rel" / "store" / "run-1" / NAME).is_file()


def test_file_delete_removes_the_run_directory(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = FileStore(root)
    store.create(new_doc())
    store.delete("run-1")
    assert os.listdir(root) == ["_runs"]  # the index folder, without the run's marker
    assert os.listdir(root / "_runs") == [".lock"]


def test_file_list_runs_ignores_other_entries(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = FileStore(root)
    store.create(new_doc("real"))
    (root / "empty-dir").mkdir()
    (root / "notes.txt").write_text("x")
    (root / "other").mkdir()
    (root / "other" / "data.json").write_text("{}")
    assert list(store.list_runs()) == ["real"]


def test_file_hand_written_document_is_versioned_by_its_seq(tmp_path: Path) -> None:
    """A document not in longrun's compact key order (edited by hand) still fences by seq."""
    root = tmp_path / "store"
    store = FileStore(root)
    doc = new_doc()
    del doc["seq"]
    doc["seq"] = 7  # last, not right after "format"
    (root / "run-1").mkdir(parents=True)
    (root / "run-1" / NAME).write_text(json.dumps(doc, indent=2))
    a = store.load("run-1")
    b = store.load("run-1")
    assert a is not None and b is not None
    assert a.token == 7
    store.replace(a.document, a.token)
    assert json.loads((root / "run-1" / NAME).read_bytes())["seq"] == 8
    with pytest.raises(CheckpointConflict):
        store.replace(b.document, b.token)


def test_file_describe_names_the_path(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    assert store.describe(store.key("r")) == f"file://{tmp_path}/r/{NAME}"
    assert repr(store) == f"<file://{tmp_path}>"


# -- MemoryStore ---------------------------------------------------------------------------


def test_memory_stores_bytes_not_the_callers_objects() -> None:
    store = MemoryStore()
    doc = new_doc(state={"items": [1]})
    store.create(doc)
    doc["state"]["items"].append(2)  # mutating the caller's dict changes nothing stored
    assert store.status("run-1")["state"] == {"items": [1]}
    assert isinstance(store.raw("run-1"), bytes)
    assert store.raw("missing") is None


def test_memory_concurrent_threads_lose_no_update() -> None:
    store = MemoryStore()
    store.create(new_doc(state={"count": 0}))
    threads, per_thread = 8, 50

    def work() -> None:
        done = 0
        while done < per_thread:
            loaded = store.load("run-1")
            assert loaded is not None
            loaded.document["state"]["count"] += 1
            try:
                store.replace(loaded.document, loaded.token)
            except CheckpointConflict:
                continue
            done += 1

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=30)
    assert store.status("run-1")["state"]["count"] == threads * per_thread


def test_side_objects_beside_checkpoints(backend: Backend) -> None:
    """Small files next to the checkpoints (the safety net's stored events and markers)."""
    store = backend.store
    store.create(new_doc())
    assert store.create_object("safety-net/r1.task.json", b'{"a":1}') is True
    assert store.create_object("safety-net/r1.task.json", b'{"a":2}') is False
    assert store.read_object("safety-net/r1.task.json") == b'{"a":1}'
    store.put_object("safety-net/r1.task.json", b'{"a":3}')
    store.put_object("safety-net/r2.json", b"[]")
    assert store.read_object("safety-net/r1.task.json") == b'{"a":3}'
    store.delete_object("safety-net/r1.task.json")
    assert store.read_object("safety-net/r1.task.json") is None
    assert store.read_object("safety-net/r2.json") == b"[]"  # its neighbour is untouched
    assert list(store.list_runs()) == ["run-1"]  # side objects are not runs
    assert store.object_uri("safety-net/r2.json").endswith("safety-net/r2.json")
    for bad in ("", "/abs", "../up", "a//b", "a/./b"):
        with pytest.raises(ValueError, match="relative path"):
            store.put_object(bad, b"x")
