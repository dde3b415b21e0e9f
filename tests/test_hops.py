"""Whole runs through the simulator: hops, exactly-once items, fencing, faults (tier 1 + 2)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from longrun import ClaimBusy, FileStore, MemoryStore, S3Store, current_run, longrun
from longrun.testing import Faults, LambdaSim


@pytest.fixture
def longrun_sim(longrun_sim: LambdaSim) -> LambdaSim:
    """These tests read the handler's own store: the simulator uses it, not its in-memory one."""
    longrun_sim.store = "handler"
    return longrun_sim



def make_job(store: Any, seconds_per_item: float = 1.0, **options: Any) -> tuple[Any, Counter[Any]]:
    """A handler that sleeps per item and counts each item it processes."""
    processed: Counter[Any] = Counter()

    @longrun(checkpoint=store, **options)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        run = current_run()
        for key in run.iterate(event["keys"]):
            time.sleep(seconds_per_item)
            processed[key] += 1
            run.state["done"] = run.state.get("done", 0) + 1
        return {"done": run.state["done"]}

    return handler, processed


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "file":
        return FileStore(tmp_path / "checkpoints")
    s3_client = request.getfixturevalue("s3_client")
    bucket = request.getfixturevalue("bucket")
    return S3Store(bucket, prefix="runs/", client=s3_client)


def test_three_plus_hops_process_every_item_exactly_once(
    longrun_sim: LambdaSim, store: Any
) -> None:
    handler, processed = make_job(store)
    keys = [f"k{i}" for i in range(100)]

    outcome = longrun_sim.run(handler, {"keys": keys}, timeout_s=30)

    assert outcome.status == "completed"
    assert outcome.result == {"done": 100}
    assert len(outcome.hops) >= 4
    assert processed == Counter(keys)
    assert sum(h.items for h in outcome.hops) == 100
    assert [h.outcome for h in outcome.hops] == ["continued"] * (len(outcome.hops) - 1) + [
        "completed"
    ]
    assert [h.hop for h in outcome.hops] == list(range(len(outcome.hops)))
    # The final stored object is the same plain JSON the simulator saw.
    stored = store.load(outcome.run_id).document
    assert stored["status"] == "completed"
    assert stored["result"] == {"done": 100}
    assert stored["state"] == {"done": 100}
    assert [h["outcome"] for h in stored["hops"]] == [h.outcome for h in outcome.hops]


def test_envelope_stays_small_whatever_the_event_size(longrun_sim: LambdaSim) -> None:
    handler, processed = make_job(MemoryStore())
    event = {"keys": list(range(40)), "payload": "x" * 300_000}

    outcome = longrun_sim.run(handler, event, timeout_s=10)

    assert outcome.status == "completed"
    sizes = [r.envelope_bytes for r in outcome.invocations if r.envelope_bytes]
    assert sizes and max(sizes) < 1024
    # Every hop saw the original event, not the envelope.
    assert outcome.document is not None and outcome.document["event"]["payload"] == "x" * 300_000
    assert sum(processed.values()) == 40


def test_checkpoint_object_is_plain_json_in_s3(
    longrun_sim: LambdaSim, s3_client: Any, bucket: str
) -> None:
    handler, _ = make_job(S3Store(bucket, prefix="jobs/", client=s3_client))
    outcome = longrun_sim.run(handler, {"keys": [1, 2, 3]}, timeout_s=60)

    raw = s3_client.get_object(Bucket=bucket, Key=f"jobs/{outcome.run_id}/checkpoint.json")
    body = raw["Body"].read()
    document = json.loads(body)
    assert raw["ContentType"] == "application/json"
    assert document["format"] == 1 and document["run_id"] == outcome.run_id
    assert document["status"] == "completed" and document["result"] == {"done": 3}
    assert b"pickle" not in body and not body.startswith(b"\x80")


@pytest.mark.parametrize("request_id", ["same", "new"])
def test_duplicate_envelope_while_hop_alive_runs_no_user_code(
    longrun_sim: LambdaSim, request_id: str
) -> None:
    entries: list[int] = []

    # A user run id, so a second start with a new request id finds the same run.
    @longrun(checkpoint=MemoryStore(), checkpoint_every_s=5, run_id=lambda event: "job-1")
    def handler(event: dict[str, Any], context: Any) -> int:
        run = current_run()
        entries.append(run.hop)
        for _ in run.iterate(range(60)):
            time.sleep(1)
        return len(entries)

    faults = Faults(duplicate="during", duplicate_request_id=request_id)
    outcome = longrun_sim.run(handler, {}, timeout_s=20, faults=faults)

    assert outcome.status == "completed"
    duplicates = [r for r in outcome.invocations if r.kind == "duplicate"]
    assert len(duplicates) == len(outcome.hops)
    assert all(not r.ran_user_code for r in duplicates)
    assert entries == list(range(len(outcome.hops)))  # one handler entry per hop, no more
    if request_id == "new":
        assert duplicates[0].response["longrun"] == {
            "run_id": "job-1",
            "status": "running",
            "hop": 0,
            "existing": True,
        }
        assert all(r.response["longrun"]["status"] == "duplicate" for r in duplicates[1:])
    else:
        # Same request id as the live claim: indistinguishable from Lambda's retry of an
        # invocation that died early, so it raises (Lambda retries later) instead of
        # answering "duplicate", which would end the run if the holder were dead.
        assert all(isinstance(r.error, ClaimBusy) for r in duplicates)


def test_duplicate_after_hop_is_refused_or_harmlessly_resends(longrun_sim: LambdaSim) -> None:
    handler, processed = make_job(MemoryStore())
    keys = list(range(50))

    outcome = longrun_sim.run(
        handler, {"keys": keys}, timeout_s=15, faults=Faults(duplicate="after")
    )

    assert outcome.status == "completed"
    assert processed == Counter(keys)
    assert all(not r.ran_user_code for r in outcome.invocations if r.kind == "duplicate")
    assert len({h.hop for h in outcome.hops}) == len(outcome.hops)


def test_stale_hop_cannot_overwrite_newer_checkpoint() -> None:
    """A hop whose claim was taken over loses its next write and stops without hopping."""
    store = MemoryStore()
    sim = LambdaSim(store="handler")
    seen: list[str] = []

    @longrun(checkpoint=store, checkpoint_every_s=1)
    def handler(event: dict[str, Any], context: Any) -> str:
        run = current_run()
        for i in run.iterate(range(10)):
            if i == 3 and not seen:
                # While this hop runs, another invocation takes the run over (as a retry
                # would after a lease expiry): the stored document moves on without us.
                loaded = store.load(run.id)
                assert loaded is not None
                loaded.document["claim"] = {"request_id": "newer", "deadline_ms": None}
                loaded.document["state"] = {"owner": "newer"}
                store.replace(loaded.document, loaded.token)
                seen.append("taken over")
            time.sleep(1)
            run.state["i"] = i
        return "finished"

    outcome = sim.run(handler, {}, timeout_s=100)

    first = outcome.invocations[0]
    assert first.response["longrun"]["status"] == "superseded"
    assert first.envelope_bytes is None  # no hand-off
    assert len(outcome.invocations) == 1
    stored = store.load(outcome.run_id)  # type: ignore[arg-type]
    assert stored is not None
    assert stored.document["state"] == {"owner": "newer"}


def test_killed_hop_is_retried_and_resumes_from_last_checkpoint(longrun_sim: LambdaSim) -> None:
    processed: Counter[int] = Counter()
    slow = [12]

    @longrun(checkpoint=MemoryStore(), checkpoint_every_s=10, margin_ms=1000)
    def handler(event: dict[str, Any], context: Any) -> int:
        run = current_run()
        for i in run.iterate(range(30)):
            # Item 12 is slow once: the hop is killed in the middle of it.
            if i in slow:
                slow.remove(i)
                time.sleep(100)
            time.sleep(1)
            processed[i] += 1
        return sum(processed.values())

    outcome = longrun_sim.run(handler, {}, timeout_s=60)

    assert outcome.status == "completed"
    kinds = [(r.kind, r.outcome) for r in outcome.invocations]
    assert ("start", "killed") in kinds and ("retry", "completed") in kinds
    # The retry took over (its lease had expired) and resumed after the checkpoint at
    # item 10 or 11: only the items since that checkpoint ran twice.
    redone = [i for i, n in processed.items() if n > 1]
    assert redone and all(10 <= i < 12 for i in redone)
    assert set(processed) == set(range(30))
    retry = outcome.hops[1]
    assert retry.kind == "retry" and retry.hop == 0 and retry.attempt == 2


def test_crash_between_checkpoint_and_handoff_resends_the_next_hop(longrun_sim: LambdaSim) -> None:
    handler, processed = make_job(MemoryStore())
    keys = list(range(60))

    outcome = longrun_sim.run(
        handler, {"keys": keys}, timeout_s=15, faults=Faults(crash_before_handoff={1})
    )

    assert outcome.status == "completed"
    assert processed == Counter(keys)
    crashed = [r for r in outcome.invocations if r.outcome == "crashed"]
    assert len(crashed) == 1 and crashed[0].hop == 1
    resent = [r for r in outcome.invocations if r.kind == "retry"]
    assert resent[0].response["longrun"] == {
        "run_id": outcome.run_id,
        "status": "continued",
        "hop": 1,
        "next": "lambda",
        "resent": True,
    }
    assert not resent[0].ran_user_code


@pytest.mark.parametrize("write", [1, 2, 3, 5])
def test_store_write_failure_loses_nothing(longrun_sim: LambdaSim, write: int) -> None:
    """Claim, periodic checkpoint, hand-off and completion writes can each fail once."""
    handler, processed = make_job(MemoryStore(), checkpoint_every_s=4)
    keys = list(range(30))

    outcome = longrun_sim.run(
        handler, {"keys": keys}, timeout_s=12, faults=Faults(fail_writes={write})
    )

    assert outcome.status == "completed", outcome.summary()
    assert set(processed) == set(keys)
    assert outcome.result == {"done": len(keys)} or outcome.state == {"done": len(keys)}
    errors = [r for r in outcome.invocations if r.outcome == "error"]
    assert len(errors) == 1 and "injected failure" in str(errors[0].error)
    # Only items after the last good checkpoint may run twice.
    assert sum(processed.values()) - len(keys) <= 4


def test_retried_first_invocation_finds_its_own_run(longrun_sim: LambdaSim) -> None:
    """The default run id is the request id: a retried start resumes instead of restarting."""
    handler, processed = make_job(MemoryStore(), seconds_per_item=1, checkpoint_every_s=3)
    keys = list(range(8))

    outcome = longrun_sim.run(handler, {"keys": keys}, timeout_s=60, faults=Faults(fail_writes={3}))

    run_ids = {c["run_id"] for c in outcome.checkpoints}
    assert run_ids == {outcome.invocations[0].request_id}
    assert outcome.status == "completed"
    assert set(processed) == set(keys)


def test_user_run_id_makes_a_repeated_start_return_the_existing_run() -> None:
    store = MemoryStore()
    handler, processed = make_job(store, run_id=lambda event: f"job-{event['job']}")
    first = LambdaSim(store="handler").run(handler, {"job": 7, "keys": [1, 2, 3]}, timeout_s=60)
    again = LambdaSim(store="handler").run(handler, {"job": 7, "keys": [1, 2, 3]}, timeout_s=60)

    assert first.run_id == "job-7" and first.status == "completed"
    assert again.invocations[0].response == {
        "longrun": {
            "run_id": "job-7",
            "status": "completed",
            "hop": 0,
            "existing": True,
            "result": {"done": 3},
        }
    }
    assert processed == Counter({1: 1, 2: 1, 3: 1})


def test_async_handler_hops_like_a_sync_one(longrun_sim: LambdaSim) -> None:
    import asyncio

    processed: list[int] = []

    @longrun(checkpoint=MemoryStore())
    async def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
        run = current_run()
        for i in run.iterate(range(event["n"])):
            await asyncio.sleep(1)
            processed.append(i)
        return {"n": len(processed)}

    outcome = longrun_sim.run(handler, {"n": 45}, timeout_s=10)

    assert outcome.status == "completed"
    assert outcome.result == {"n": 45}
    assert processed == list(range(45))
    assert len(outcome.hops) >= 5


def test_async_iterable_resumes_by_position(longrun_sim: LambdaSim) -> None:
    import asyncio

    processed: list[int] = []

    async def numbers(n: int) -> Any:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @longrun(checkpoint=MemoryStore())
    async def handler(event: dict[str, Any], context: Any) -> int:
        run = current_run()
        async for i in run.iterate(numbers(event["n"])):
            await asyncio.sleep(1)
            processed.append(i)
        return len(processed)

    outcome = longrun_sim.run(handler, {"n": 25}, timeout_s=8)

    assert outcome.status == "completed"
    assert processed == list(range(25))
    assert len(outcome.hops) >= 4


def test_method_handler_keeps_instance(longrun_sim: LambdaSim) -> None:
    class Service:
        def __init__(self) -> None:
            self.seen: list[int] = []

        @longrun(checkpoint=MemoryStore())
        def handle(self, event: dict[str, Any], context: Any) -> int:
            for i in current_run().iterate(range(event["n"])):
                time.sleep(1)
                self.seen.append(i)
            return len(self.seen)

    service = Service()
    outcome = longrun_sim.run(service.handle, {"n": 20}, timeout_s=8)

    assert outcome.status == "completed" and outcome.result == 20
    assert service.seen == list(range(20))
