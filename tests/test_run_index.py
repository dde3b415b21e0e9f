"""The run index (``longrun.stores.index``): listing runs reads marker names, not checkpoints.

Runs are made by real hops in the simulator (duplicates, retries, a failed run resumed) on
moto S3 and on a FileStore; what is asserted is what ``find_runs`` returns, which checkpoints
it had to read (botocore's own requests, counted), and which marker objects the store holds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from longrun import (
    FileStore,
    LongrunConfigError,
    S3Store,
    current_run,
    find_runs,
    get_run,
    longrun,
)
from longrun.protocol import Status
from longrun.resume import resume_in_lambda
from longrun.stores.base import CheckpointStore
from longrun.stores.index import Marker, newest
from longrun.testing import Faults, LambdaSim, RecordingTransport


def job(store: CheckpointStore) -> Any:
    @longrun(checkpoint=store, run_id=lambda event: event["id"], min_margin_ms=1000)
    def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
        run = current_run()
        for i in run.iterate(range(event["items"])):
            if i == event.get("fail_at"):
                raise ValueError(f"item {i} is bad")
            time.sleep(event.get("item_s", 1.0))  # virtual: 4 items a hop
        return {"items": event["items"]}

    return handler


def markers_of(store: CheckpointStore, run_id: str) -> list[Marker]:
    return [m for m in store.markers() if m.run_id == run_id]


@pytest.fixture(params=["s3", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "file":
        return FileStore(tmp_path / "store")
    s3_client = request.getfixturevalue("s3_client")
    bucket = request.getfixturevalue("bucket")
    return S3Store(bucket, prefix="idx/", client=s3_client)


def test_settled_runs_are_listed_from_their_markers_alone(store: CheckpointStore) -> None:
    sim = LambdaSim(store="handler")
    handler = job(store)
    for k in range(6):
        event: dict[str, Any] = {"id": f"done-{k}", "items": 10}
        if k == 5:
            event["fail_at"] = 6
        outcome = sim.run(handler, event, timeout_s=5.0, retries=0, faults=Faults("after"))
        assert outcome.status == ("failed" if k == 5 else "completed")
    store.cancel("done-4")  # completed: a cancel leaves it as it is
    # A live run: its first hop was killed mid-item and not retried (yet): still running.
    sim.run(handler, {"id": "live-0", "items": 4, "item_s": 100.0}, timeout_s=5.0, retries=0)
    assert get_run("live-0", store=store).status == "running"

    reads: list[str] = []
    if isinstance(store, S3Store):
        store.client.meta.events.register(
            "before-parameter-build.s3.GetObject", lambda params, **_: reads.append(params["Key"])
        )
    runs = {r.run_id: r for r in find_runs(store)}
    assert set(runs) == {f"done-{k}" for k in range(6)} | {"live-0"}
    for k in range(5):
        info = get_run(f"done-{k}", store=store)
        summary = runs[f"done-{k}"]
        assert (summary.status, summary.hop, summary.items_done, summary.where) == (
            "completed", info.hop, 10, "lambda",
        )  # fmt: skip
        assert (summary.started_ms, summary.updated_ms) == (info.started_ms, info.updated_ms)
        assert summary.settled
    failed = runs["done-5"]
    assert failed.status == "failed"
    assert failed.items_done == get_run("done-5", store=store).items_done
    assert runs["live-0"].status == get_run("live-0", store=store).status
    assert not runs["live-0"].settled
    if isinstance(store, S3Store):  # find_runs read the live run's checkpoint, no other
        assert reads[0] == "idx/live-0/checkpoint.json"
        assert len(reads) == 1 + 6 + 1  # then get_run's own reads, one per call above
    # Duplicate deliveries left no second marker behind once each run settled.
    for k in range(6):
        assert len(markers_of(store, f"done-{k}")) == 1


def test_filters_newest_first_and_a_bad_status_named(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    sim = LambdaSim(store="handler")
    handler = job(store)
    for k in range(5):
        event: dict[str, Any] = {"id": f"r-{k}", "items": 3}
        if k % 2:
            event["fail_at"] = 1
        sim.run(handler, event, timeout_s=60.0, retries=0)  # its virtual clock moves on
    every = find_runs(store)
    assert [r.run_id for r in every] == ["r-4", "r-3", "r-2", "r-1", "r-0"]
    assert [r.run_id for r in find_runs(store, status=["failed"])] == ["r-3", "r-1"]
    assert [r.run_id for r in find_runs(store, limit=2)] == ["r-4", "r-3"]
    since = every[1].started_ms
    assert [r.run_id for r in find_runs(store, since_ms=since)] == ["r-4", "r-3"]
    assert find_runs(store, status=["running"]) == []
    with pytest.raises(LongrunConfigError, match=r"status 'done' is not one of running, "):
        find_runs(store, status=["done"])


def test_a_failed_run_taken_over_is_live_again_in_the_index(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    sim = LambdaSim(store="handler")
    outcome = sim.run(job(store), {"id": "again", "items": 8, "fail_at": 2}, retries=0)
    assert outcome.status == "failed"
    [settled] = markers_of(store, "again")
    assert settled.phase == "failed"
    transport = RecordingTransport()
    from longrun import ports

    with ports.installed(transport=transport):
        resumed = resume_in_lambda(store, "again", function="arn:aws:lambda:::function:f")
    assert resumed.action == "invoked"
    newest_marker = newest(markers_of(store, "again"))["again"]
    assert newest_marker.live and newest_marker.seq == settled.seq + 1
    [summary] = find_runs(store)
    assert summary.status == Status.CONTINUED.value  # read from the checkpoint


def test_a_lost_settled_marker_leaves_the_listing_right(s3_client: Any, bucket: str) -> None:
    """The marker written after the settling write fails (S3 refuses it): the run still
    completes, and listings read its checkpoint (its live marker is still the newest)."""
    store = S3Store(bucket, prefix="lost/", client=s3_client)

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if "~completed~" in params["Key"]:
            raise RuntimeError("injected: the marker's PUT failed")

    s3_client.meta.events.register("before-parameter-build.s3.PutObject", refuse)
    try:
        outcome = LambdaSim(store="handler").run(job(store), {"id": "m-1", "items": 6})
    finally:
        s3_client.meta.events.unregister("before-parameter-build.s3.PutObject", refuse)
    assert outcome.status == "completed" and outcome.result == {"items": 6}
    assert [m.phase for m in markers_of(store, "m-1")] == ["live"]
    [summary] = find_runs(store)
    assert (summary.run_id, summary.status, summary.items_done) == ("m-1", "completed", 6)


def test_a_copied_or_corrupt_live_checkpoint_is_shown_not_fatal(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    sim = LambdaSim(store="handler")
    sim.run(job(store), {"id": "ok", "items": 2})
    sim.run(job(store), {"id": "hurt", "items": 4, "item_s": 100.0}, timeout_s=5.0, retries=0)
    (tmp_path / "store" / "hurt" / "checkpoint.json").write_text('{"format": 1, "seq": "x"')
    runs = {r.run_id: r.status for r in find_runs(store)}
    assert runs == {"ok": "completed", "hurt": "unreadable"}


def test_delete_removes_the_markers(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    LambdaSim(store="handler").run(job(store), {"id": "gone", "items": 2})
    assert markers_of(store, "gone")
    store.delete("gone")
    assert markers_of(store, "gone") == [] and find_runs(store) == []
