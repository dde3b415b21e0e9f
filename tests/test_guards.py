"""Runaway guards, user errors, cancellation and bad input."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from longrun import (
    CheckpointCorrupt,
    CheckpointFormatError,
    EnvelopeError,
    HopBudgetExhausted,
    InvalidRunId,
    MemoryStore,
    NoProgressError,
    NotInRunError,
    RunNotFound,
    RunTimeExceeded,
    StateNotSerializable,
    current_run,
    longrun,
)
from longrun.testing import FakeContext, LambdaSim, VirtualClock


@pytest.fixture
def longrun_sim(longrun_sim: LambdaSim) -> LambdaSim:
    """These tests read the handler's own store: the simulator uses it, not its in-memory one."""
    longrun_sim.store = "handler"
    return longrun_sim



def slow_job(store: Any, n: int = 100, **options: Any) -> Any:
    @longrun(checkpoint=store, **options)
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for _ in run.iterate(range(n)):
            time.sleep(1)
            run.state["done"] = run.state.get("done", 0) + 1
        return int(run.state["done"])

    return handler


def test_hop_budget_exhausted_fails_and_keeps_checkpoint(longrun_sim: LambdaSim) -> None:
    store = MemoryStore()
    outcome = longrun_sim.run(slow_job(store, max_hops=2), {}, timeout_s=10)

    assert outcome.status == "failed"
    assert [h.hop for h in outcome.hops] == [0, 1, 2]
    assert outcome.error is not None and outcome.error["type"] == "HopBudgetExhausted"
    assert outcome.error["terminal"] is True
    stored = store.status(outcome.run_id)  # type: ignore[arg-type]
    assert stored["state"] == {"done": 27} and stored["cursors"]["#0"]["pos"] == 27
    # Lambda retries the failed hop twice; each re-raises at once, running no user code.
    retries = [r for r in outcome.invocations if r.kind == "retry"]
    assert len(retries) == 2
    assert all(isinstance(r.error, HopBudgetExhausted) and not r.ran_user_code for r in retries)
    assert len(outcome.dead_letters) == 1
    assert "max_hops" in str(retries[0].error) and "Fargate" in str(retries[0].error)


def test_max_hops_from_environment(longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = slow_job(MemoryStore())
    monkeypatch.setenv("LONGRUN_MAX_HOPS", "1")
    outcome = longrun_sim.run(handler, {}, timeout_s=10)
    assert outcome.status == "failed" and len(outcome.hops) == 2


def test_settings_override_per_simulated_run(longrun_sim: LambdaSim) -> None:
    handler = slow_job(MemoryStore(), max_hops=50)
    outcome = longrun_sim.run(handler, {}, timeout_s=10, settings={"max_hops": 0})
    assert outcome.status == "failed" and len(outcome.hops) == 1


def test_long_step_makes_hops_short_but_never_idle(longrun_sim: LambdaSim) -> None:
    """After a 25 s item the margin (1.5x) exceeds a 30 s hop; each new hop still tries one
    item (a hop that starts none would be wasted), so the run completes without a kill."""
    entries: list[int] = []

    @longrun(checkpoint=MemoryStore(), max_hops=50)
    def handler(event: Any, context: Any) -> None:
        entries.append(current_run().hop)
        for i in current_run().iterate(range(5)):
            time.sleep(25 if i == 0 else 1)

    outcome = longrun_sim.run(handler, {}, timeout_s=30)

    assert outcome.status == "completed"
    assert all(r.outcome != "killed" for r in outcome.invocations)
    assert [h.items for h in outcome.hops] == [1, 1, 1, 1, 1]
    assert entries == [0, 1, 2, 3, 4]


def test_margin_larger_than_the_hop_does_not_loop(longrun_sim: LambdaSim) -> None:
    """A step that can never fit (here: a fixed margin above the timeout) fails at once."""
    entries: list[int] = []

    @longrun(checkpoint=MemoryStore(), max_hops=50, margin_ms=45_000)
    def handler(event: Any, context: Any) -> None:
        entries.append(current_run().hop)
        for _ in current_run().iterate(range(5)):
            time.sleep(1)

    outcome = longrun_sim.run(handler, {}, timeout_s=30)

    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error["type"] == "NoProgressError"
    assert entries == [0]  # it did not hand off
    message = str(outcome.hops[-1].error)
    assert "margin 45000 ms" in message and "escalation" in message


def test_max_run_seconds_stops_the_run(longrun_sim: LambdaSim) -> None:
    outcome = longrun_sim.run(slow_job(MemoryStore(), n=500, max_run_seconds=45), {}, timeout_s=10)

    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error["type"] == "RunTimeExceeded"
    assert isinstance(outcome.hops[-1].error, RunTimeExceeded)
    assert outcome.state is not None and 40 <= outcome.state["done"] <= 45


def test_cancelled_run_stops_at_next_hop(longrun_sim: LambdaSim) -> None:
    store = MemoryStore()

    @longrun(checkpoint=store)
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        for i in run.iterate(range(100)):
            time.sleep(1)
            if run.hop == 1 and i == 15:
                store.cancel(run.id)

    outcome = longrun_sim.run(handler, {}, timeout_s=10)

    assert outcome.status is not None
    stored = store.status(outcome.run_id)  # type: ignore[arg-type]
    assert stored["status"] == "cancelled"
    assert [r.outcome for r in outcome.invocations] == ["continued", "cancelled"]


def test_cancel_between_hops_stops_the_next_one() -> None:
    store = MemoryStore()
    sim = LambdaSim(store="handler")
    entries: list[int] = []

    @longrun(checkpoint=store)
    def handler(event: Any, context: Any) -> None:
        entries.append(current_run().hop)
        for _ in current_run().iterate(range(100)):
            time.sleep(1)

    # Cancel right after hop 0 wrote "continued", before hop 1 starts.
    original = sim._deliver

    def deliver(delivery: Any) -> Any:
        record = original(delivery)
        if record.outcome == "continued" and record.hop == 0:
            store.cancel(record.response["longrun"]["run_id"])
        return record

    sim._deliver = deliver  # type: ignore[method-assign]
    outcome = sim.run(handler, {}, timeout_s=10)

    assert entries == [0]
    assert outcome.invocations[1].response["longrun"]["status"] == "cancelled"


def test_user_exception_marks_failed_reraises_and_lambda_retry_resumes(
    longrun_sim: LambdaSim,
) -> None:
    store = MemoryStore()
    failures = [17]
    bodies: list[int] = []

    @longrun(checkpoint=store, checkpoint_every_s=5)
    def handler(event: Any, context: Any) -> int:
        for i in current_run().iterate(range(30)):
            if i in failures:
                failures.remove(i)
                raise ConnectionError(f"flaky dependency at item {i}")
            time.sleep(1)
            bodies.append(i)
        return len(bodies)

    outcome = longrun_sim.run(handler, {}, timeout_s=60)

    first = outcome.invocations[0]
    assert isinstance(first.error, ConnectionError)  # re-raised to Lambda
    failed = [c for c in outcome.checkpoints if c["status"] == "failed"]
    assert failed[0]["error"]["type"] == "ConnectionError"
    assert failed[0]["error"]["terminal"] is False
    assert "flaky dependency at item 17" in failed[0]["error"]["message"]
    # The failure record kept the last checkpoint's progress (15 items), not the live one.
    assert failed[0]["cursors"]["#0"]["pos"] == 15
    assert outcome.status == "completed"
    assert sorted(set(bodies)) == list(range(30))
    assert sorted({i for i in bodies if bodies.count(i) > 1}) == [15, 16]


def test_state_that_is_not_json_fails_clearly_and_keeps_checkpoint(longrun_sim: LambdaSim) -> None:
    import datetime

    store = MemoryStore()

    @longrun(checkpoint=store, checkpoint_every_s=5)
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        for i in run.iterate(range(20)):
            time.sleep(1)
            run.state["count"] = i + 1
            if i == 7:
                run.state["when"] = datetime.datetime(2026, 1, 1)

    outcome = longrun_sim.run(handler, {}, timeout_s=60, retries=0)

    error = outcome.invocations[0].error
    assert isinstance(error, StateNotSerializable)
    assert "run.state['when']" in str(error) and "datetime" in str(error)
    stored = store.status(outcome.run_id)  # type: ignore[arg-type]
    assert stored["status"] == "failed"
    assert stored["state"] == {"count": 5}  # the last good checkpoint, untouched


def test_current_run_outside_a_handler() -> None:
    with pytest.raises(NotInRunError, match="outside a @longrun-decorated handler"):
        current_run()


def _context(timeout_s: float = 60.0) -> FakeContext:
    return FakeContext(VirtualClock(), timeout_s=timeout_s)


def test_malformed_envelope_is_rejected_before_user_code() -> None:
    calls: list[Any] = []

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        calls.append(event)

    for bad in (
        {"longrun": {"v": 1, "run_id": "abc"}},
        {"longrun": {"v": 1, "run_id": "abc", "hop": 1}, "extra": 1},
        {"longrun": "hello"},
    ):
        with pytest.raises(EnvelopeError, match="envelope"):
            handler(bad, _context())
    with pytest.raises(InvalidRunId, match=r"\.\./etc"):
        handler({"longrun": {"v": 1, "run_id": "../etc", "hop": 1}}, _context())
    with pytest.raises(EnvelopeError, match="newer"):
        handler({"longrun": {"v": 9, "run_id": "abc", "hop": 1}}, _context())
    assert calls == []


def test_unknown_run_id_is_a_clear_error() -> None:
    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        raise AssertionError("must not run")

    with pytest.raises(RunNotFound, match="no-such-run"):
        handler({"longrun": {"v": 1, "run_id": "no-such-run", "hop": 1}}, _context())


def test_envelope_from_the_future_is_rejected() -> None:
    store = MemoryStore()
    outcome = LambdaSim(store="handler").run(slow_job(store, n=3), {}, timeout_s=60)
    with pytest.raises(EnvelopeError, match="hop 7"):
        slow_job(store)({"longrun": {"v": 1, "run_id": outcome.run_id, "hop": 7}}, _context())


def test_invalid_user_run_id() -> None:
    handler = slow_job(MemoryStore(), run_id=lambda event: event["job"])
    with pytest.raises(InvalidRunId, match="run_id\\(event\\)='a b'"):
        handler({"job": "a b"}, _context())


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda raw: b"{not json", CheckpointCorrupt),
        (lambda raw: json.dumps({**json.loads(raw), "format": 99}).encode(), CheckpointFormatError),
        (lambda raw: json.dumps({**json.loads(raw), "state": []}).encode(), CheckpointCorrupt),
    ],
)
def test_corrupt_or_newer_checkpoint_is_not_overwritten(
    mutate: Any, error: type[Exception]
) -> None:
    store = MemoryStore()
    sim = LambdaSim(store="handler")
    first = sim.run(slow_job(store, n=30), {}, timeout_s=10, settings={"max_hops": 0})
    assert first.status == "failed"
    key = store.key(first.run_id)  # type: ignore[arg-type]
    raw = store.raw(first.run_id)  # type: ignore[arg-type]
    assert raw is not None
    bad = mutate(raw)
    store._objects[key] = (bad, 999)

    with pytest.raises(error) as info:
        slow_job(store)({"longrun": {"v": 1, "run_id": first.run_id, "hop": 1}}, _context())

    assert first.run_id in str(info.value)  # names the checkpoint's location
    assert store.raw(first.run_id) == bad  # type: ignore[arg-type]


def test_disabled_runs_handler_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()

    @longrun(checkpoint=store)
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        for i in run.iterate(range(50)):
            run.state[str(i)] = i
        run.checkpoint()
        return len(run.state), run.should_yield(), run.id.startswith("disabled-")

    monkeypatch.setenv("LONGRUN_DISABLED", "1")
    context = FakeContext(VirtualClock(), timeout_s=0.001)  # nothing yields when disabled
    assert handler({}, context) == (50, False, True)
    assert list(store.list_runs()) == []


def test_no_progress_when_hop_starts_below_margin() -> None:
    @longrun(checkpoint=MemoryStore(), margin_ms=5000)
    def handler(event: Any, context: Any) -> None:
        for _ in current_run().iterate(range(3)):
            time.sleep(1)

    outcome = LambdaSim(store="handler").run(handler, {}, timeout_s=3, retries=0)

    error = outcome.invocations[0].error
    assert isinstance(error, NoProgressError)
    assert "remaining 3000 ms, margin 5000 ms" in str(error)


def test_disabled_run_in_the_simulator_reports_the_plain_result(
    longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LONGRUN_DISABLED", "true")
    outcome = longrun_sim.run(slow_job(MemoryStore(), n=3), {}, timeout_s=10)
    assert outcome.status == "completed" and outcome.result == 3
    assert outcome.checkpoints == []


def test_max_run_seconds_in_a_manual_loop_fails_without_another_hop(longrun_sim: LambdaSim) -> None:
    @longrun(checkpoint=MemoryStore(), max_run_seconds=30)
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        while True:
            if run.should_yield():
                run.end_hop()
            time.sleep(1)
            run.state["n"] = run.state.get("n", 0) + 1

    outcome = longrun_sim.run(handler, {}, timeout_s=20, retries=0)

    assert outcome.error is not None and outcome.error["type"] == "RunTimeExceeded"
    assert [h.outcome for h in outcome.hops] == ["continued", "error"]
    assert outcome.state == {"n": 30}


def test_max_run_seconds_can_be_turned_off(longrun_sim: LambdaSim) -> None:
    import math

    handler = slow_job(MemoryStore(), n=40, max_run_seconds=math.inf)
    outcome = longrun_sim.run(handler, {}, timeout_s=10, settings={"max_run_seconds": "off"})
    assert outcome.status == "completed"


def test_unserializable_result_is_returned_and_noted(longrun_sim: LambdaSim) -> None:
    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> dict[int, str]:
        return {1: "a"}

    outcome = longrun_sim.run(handler, {}, timeout_s=60)
    assert outcome.status == "completed" and outcome.result == {1: "a"}
    assert outcome.document is not None and outcome.document["result"] is None
    assert "not plain JSON" in outcome.document["result_note"]


def test_store_error_in_the_completing_write_is_recorded(longrun_sim: LambdaSim) -> None:
    from longrun.testing import Faults

    store = MemoryStore()
    calls: list[int] = []

    @longrun(checkpoint=store)
    def handler(event: Any, context: Any) -> str:
        calls.append(1)
        return "done"

    # Write 1 is the claim, write 2 the completion: it fails, the failure is recorded
    # (write 3), and Lambda's retry runs the handler again and completes (writes 4, 5).
    outcome = longrun_sim.run(handler, {}, timeout_s=60, faults=Faults(fail_writes={2}))
    assert [c["status"] for c in outcome.checkpoints] == [
        "running",
        "failed",
        "running",
        "completed",
    ]
    assert outcome.checkpoints[1]["error"]["type"] == "StoreError"
    assert outcome.status == "completed" and len(calls) == 2
