"""``run.step``, ``run.sleep`` and ``run.sleep_until`` in the simulator (virtual time), with
duplicate deliveries, crashes before hand-offs and kills injected; and the EventBridge
Scheduler wake-up on moto. Asserted: how often each step's function ran, what the store
holds, the schedules made and the virtual time the run took."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from longrun import (
    CheckpointCorrupt,
    FileStore,
    LongrunError,
    MemoryStore,
    StateNotSerializable,
    StepInterrupted,
    current_run,
    longrun,
)
from longrun.steps import INLINE_LIMIT, Retry
from longrun.testing import Faults, LambdaSim

HOUR = 3600.0


def counted(calls: Counter[str], name: str, value: Any) -> Any:
    calls[name] += 1
    return value


@pytest.mark.parametrize(
    "faults",
    [Faults(), Faults("during"), Faults("after"), Faults(crash_before_handoff={1, 3})],
    ids=["plain", "dup-during", "dup-after", "crash"],
)
def test_each_step_runs_once_across_hops_and_faults(faults: Faults) -> None:
    calls: Counter[str] = Counter()
    store = MemoryStore()

    @longrun(checkpoint=store, run_id=lambda e: e["id"], min_margin_ms=1000)
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        total = 0
        for i in run.iterate(range(12)):
            total += run.step("square", lambda i=i: counted(calls, f"square-{i}", i * i))
            time.sleep(2.0)  # virtual: a few items a hop
            run.state["total"] = total = run.state.get("total", 0) + 0
        squares = [run.step(f"again-{i}", counted, calls, f"again-{i}", i) for i in range(3)]
        return sum(squares) + run.step("last", counted, calls, "last", 100)

    outcome = LambdaSim(store="handler").run(handler, {"id": "s"}, timeout_s=7.0, faults=faults)
    assert outcome.status == "completed" and outcome.result == 0 + 1 + 2 + 100
    assert len([h for h in outcome.hops if h.ran_user_code]) >= 3
    assert set(calls.values()) == {1} and len(calls) == 12 + 3 + 1
    steps = store.status("s")["steps"]
    assert steps["last"] == {"state": "done", "scope": [], "attempts": 1, "result": 100}
    # a step inside a loop item belongs to that item: only the last item's record is kept
    assert steps["#0/square"]["scope"] == [11] and steps["#0/square"]["result"] == 121


def test_a_step_name_twice_in_a_scope_is_an_error() -> None:
    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        run.step("a", int)
        run.step("a", int)

    outcome = LambdaSim().run(handler, {}, retries=0)
    assert outcome.status == "failed"
    assert "run.step(name='a') was already used in this scope" in str(outcome.hops[-1].error)


def test_a_large_result_is_a_side_object_read_back_on_later_hops(tmp_path: Any) -> None:
    store = FileStore(tmp_path)
    big = {"rows": ["x" * 100] * (INLINE_LIMIT // 50)}
    seen: list[int] = []

    @longrun(checkpoint=store, run_id=lambda e: "big", min_margin_ms=1000)
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        rows = run.step("extract", lambda: big)
        for _ in run.iterate(range(6)):
            time.sleep(2.0)
        seen.append(len(rows["rows"]))
        return len(rows["rows"])

    outcome = LambdaSim(store="handler").run(handler, {}, timeout_s=5.0)
    assert outcome.status == "completed" and len(seen) == 1 and seen[0] == len(big["rows"])
    record = store.status("big")["steps"]["extract"]
    assert "result" not in record and record["bytes"] > INLINE_LIMIT
    side = tmp_path / record["ref"]
    assert json.loads(side.read_text()) == big
    assert (tmp_path / "big" / "checkpoint.json").stat().st_size < INLINE_LIMIT


def test_a_result_that_is_not_json_fails_naming_the_step() -> None:
    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        current_run().step("when", datetime.now)

    outcome = LambdaSim().run(handler, {}, retries=0)
    assert isinstance(outcome.hops[-1].error, StateNotSerializable)
    assert "run.step('when') returned datetime" in str(outcome.hops[-1].error)


def test_retry_with_short_backoff_sleeps_in_the_hop() -> None:
    attempts: list[float] = []
    sim = LambdaSim()

    def flaky() -> str:
        attempts.append(sim.clock.now)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> str:
        return current_run().step(
            "call", flaky, retry=Retry(attempts=5, backoff_s=2.0, jitter=False)
        )

    outcome = sim.run(handler, {}, timeout_s=600)
    assert outcome.status == "completed" and outcome.result == "ok"
    assert [round(b - a, 3) for a, b in itertools.pairwise(attempts)] == [2.0, 4.0]
    assert sim.schedules == [] and len(outcome.hops) == 1


def test_retry_gives_up_after_its_attempts_with_the_last_error() -> None:
    calls: list[int] = []

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        def broken() -> None:
            calls.append(1)
            raise ValueError(f"bad {len(calls)}")

        current_run().step("call", broken, retry=Retry(attempts=3, backoff_s=0.1, on=(ValueError,)))

    outcome = LambdaSim().run(handler, {}, retries=0)
    assert outcome.status == "failed" and len(calls) == 3
    assert str(outcome.hops[-1].error) == "bad 3"


def test_a_backoff_longer_than_the_hop_waits_with_no_compute() -> None:
    store = MemoryStore()
    sim = LambdaSim(store="handler")
    tries: list[float] = []

    def rate_limited() -> str:
        tries.append(sim.clock.now)
        if len(tries) < 3:
            raise ConnectionError("429")
        return "done"

    @longrun(checkpoint=store, run_id=lambda e: "rl", min_margin_ms=1000)
    def handler(event: Any, context: Any) -> str:
        return current_run().step(
            "api",
            rate_limited,
            retry=Retry(attempts=4, backoff_s=600.0, max_backoff_s=3600.0, jitter=False),
        )

    outcome = sim.run(handler, {}, timeout_s=60.0)
    assert outcome.status == "completed" and outcome.result == "done"
    assert [round(b - a) for a, b in itertools.pairwise(tries)] == [600, 1200]
    assert [s["name"] for s in sim.schedules] == ["longrun-rl-1", "longrun-rl-2"]
    assert [h.kind for h in outcome.hops] == ["start", "wake", "wake"]
    assert [h.outcome for h in outcome.hops] == ["waiting", "waiting", "completed"]
    document = store.status("rl")
    assert document["steps"]["api"]["attempts"] == 3 and document["waits"] == 2
    assert "wait" not in document


def test_at_most_once_step_killed_midway_is_not_run_again() -> None:
    calls: list[int] = []
    outcomes: list[str] = []

    @longrun(checkpoint=MemoryStore(), min_margin_ms=1000)
    def handler(event: Any, context: Any) -> str:
        run = current_run()

        def charge_card() -> str:
            calls.append(1)
            time.sleep(30.0)  # killed at the 10 s deadline, midway
            return "charged"

        try:
            return run.step("charge", charge_card, at_most_once=True)
        except StepInterrupted as exc:
            outcomes.append(str(exc))
            return "look it up"

    outcome = LambdaSim().run(handler, {}, timeout_s=10.0)
    assert outcome.status == "completed" and outcome.result == "look it up"
    assert len(calls) == 1 and "interrupted in an earlier hop" in outcomes[0]
    assert [h.outcome for h in outcome.hops] == ["killed", "completed"]


def test_a_short_sleep_sleeps_in_the_hop_and_a_long_one_waits() -> None:
    store = MemoryStore()
    sim = LambdaSim(store="handler")
    marks: list[tuple[str, float]] = []

    @longrun(checkpoint=store, run_id=lambda e: "sl", min_margin_ms=1000)
    def handler(event: Any, context: Any) -> str:
        run = current_run()
        marks.append(("start", sim.clock.now))
        run.sleep(5, name="short")
        marks.append(("after-short", sim.clock.now))
        run.sleep(2 * HOUR, name="long")
        marks.append(("after-long", sim.clock.now))
        return "awake"

    outcome = sim.run(handler, {}, timeout_s=60.0, faults=Faults("after"))
    assert outcome.status == "completed" and outcome.result == "awake"
    woken = [h for h in outcome.hops if h.kind == "wake"]
    assert len(woken) == 1 and len(sim.schedules) == 1
    assert sim.schedules[0]["at_ms"] == store.status("sl")["steps"]["long"]["until_ms"]
    # The short sleep was slept once (hop 0); the long one ended hop 0 and was never slept
    # again: the wake-up hop went straight past both.
    after_long = [t for name, t in marks if name == "after-long"]
    assert len(after_long) == 1 and after_long[0] >= 5 + 2 * HOUR
    assert next(t for name, t in marks if name == "after-short") == 5.0


def test_sleep_until_takes_an_aware_datetime_and_refuses_a_naive_one() -> None:
    sim = LambdaSim()
    start = datetime.fromtimestamp(sim.clock.start_epoch_s, tz=timezone.utc)

    # (max_run_seconds counts waits: the default day would end a two-day wait)
    @longrun(checkpoint=MemoryStore(), max_run_seconds="off")
    def handler(event: Any, context: Any) -> float:
        current_run().sleep_until(start + timedelta(days=2), name="day-after")
        return sim.clock.now

    outcome = sim.run(handler, {}, timeout_s=60.0)
    assert outcome.status == "completed" and outcome.result >= 2 * 86400

    @longrun(checkpoint=MemoryStore())
    def naive(event: Any, context: Any) -> None:
        current_run().sleep_until(datetime(2030, 1, 1), name="x")

    failed = LambdaSim().run(naive, {}, retries=0)
    assert "give an aware datetime" in str(failed.hops[-1].error)


def test_waits_do_not_use_up_the_hop_budget() -> None:
    @longrun(checkpoint=MemoryStore(), max_hops=1, escalate=False, min_margin_ms=1000)
    def handler(event: Any, context: Any) -> str:
        run = current_run()
        for day in range(4):
            run.sleep(HOUR, name=f"day-{day}")
        return "four waits, one budget"

    outcome = LambdaSim().run(handler, {}, timeout_s=60.0)
    assert outcome.status == "completed" and len(outcome.hops) == 5


def test_a_hand_edited_step_record_is_refused_naming_the_field(tmp_path: Any) -> None:
    store = FileStore(tmp_path)

    @longrun(checkpoint=store, run_id=lambda e: "h")
    def handler(event: Any, context: Any) -> int:
        return current_run().step("x", int, 3)

    LambdaSim(store="handler").run(handler, {})
    path = tmp_path / "h" / "checkpoint.json"
    document = json.loads(path.read_text())
    document["steps"]["x"]["state"] = "maybe"
    path.write_text(json.dumps(document))
    with pytest.raises(CheckpointCorrupt, match=r"steps\['x'\]\.state: 'maybe' is not one of"):
        store.load("h")


def test_bad_names_and_arguments_are_named() -> None:
    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        current_run().step("a/b", int)

    outcome = LambdaSim().run(handler, {}, retries=0)
    assert "a name must be a non-empty string without '/'" in str(outcome.hops[-1].error)
    with pytest.raises(LongrunError, match=r"Retry\(attempts=0\)"):
        Retry(attempts=0)


def test_the_wake_up_is_a_one_time_schedule_on_eventbridge_scheduler(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real transport (no simulator transport): a long sleep creates a one-time schedule
    in moto's EventBridge Scheduler, aimed at the function with the next hop's envelope."""
    import boto3

    from longrun import ports
    from longrun.testing import FakeContext, VirtualClock

    monkeypatch.setenv("AWS_ENDPOINT_URL_SCHEDULER", moto_server)
    monkeypatch.setenv("LONGRUN_SCHEDULER_ROLE_ARN", "arn:aws:iam::123456789012:role/wake")
    store = MemoryStore()

    @longrun(checkpoint=store, run_id=lambda e: "real-wake")
    def handler(event: Any, context: Any) -> None:
        current_run().sleep(HOUR, name="nap")

    clock = VirtualClock()
    with ports.installed(clock=clock):
        answer = handler({}, FakeContext(clock, timeout_s=60))
    assert answer["longrun"]["status"] == "waiting"
    scheduler = boto3.client("scheduler", endpoint_url=moto_server, region_name="us-east-1")
    schedule = scheduler.get_schedule(Name="longrun-real-wake-1", GroupName="default")
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    until = store.status("real-wake")["wait"]["until_ms"]
    # whole seconds, rounded up: the wake-up never comes before the time
    expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(-(-until // 1000)))
    assert schedule["ScheduleExpression"] == f"at({expected})"
    target = schedule["Target"]
    assert target["Arn"].endswith(":function:test-function") or target["Arn"]
    assert json.loads(target["Input"]) == {"longrun": {"v": 1, "run_id": "real-wake", "hop": 1}}
    document = store.status("real-wake")
    assert document["status"] == "waiting" and document["wait"]["schedule"] == "longrun-real-wake-1"


def test_without_a_scheduler_role_a_long_wait_fails_clearly_and_keeps_the_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from longrun import ports
    from longrun.testing import FakeContext, VirtualClock

    monkeypatch.delenv("LONGRUN_SCHEDULER_ROLE_ARN", raising=False)
    store = MemoryStore()

    @longrun(checkpoint=store, run_id=lambda e: "no-role")
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        run.step("done-first", int, 7)
        run.sleep(HOUR, name="nap")

    clock = VirtualClock()
    with (
        ports.installed(clock=clock),
        pytest.raises(LongrunError, match="LONGRUN_SCHEDULER_ROLE_ARN"),
    ):
        handler({}, FakeContext(clock, timeout_s=60))
    document = store.status("no-role")
    assert document["status"] == "failed" and document["steps"]["done-first"]["result"] == 7


def test_status_shows_the_wait_and_cancel_deletes_the_wake_up(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import os
    import subprocess
    import sys

    import boto3

    from longrun import ports
    from longrun.testing import FakeContext, VirtualClock

    monkeypatch.setenv("AWS_ENDPOINT_URL_SCHEDULER", moto_server)
    monkeypatch.setenv("LONGRUN_SCHEDULER_ROLE_ARN", "arn:aws:iam::123456789012:role/wake")
    store = FileStore(tmp_path)

    @longrun(checkpoint=store, run_id=lambda e: "to-cancel")
    def handler(event: Any, context: Any) -> None:
        current_run().sleep(5 * HOUR, name="overnight")

    clock = VirtualClock(start_epoch_s=time.time())
    with ports.installed(clock=clock):
        handler({}, FakeContext(clock, timeout_s=60))
    scheduler = boto3.client("scheduler", endpoint_url=moto_server, region_name="us-east-1")
    names = [s["Name"] for s in scheduler.list_schedules()["Schedules"]]
    assert "longrun-to-cancel-1" in names

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "longrun.cli", "--store", f"file://{tmp_path}", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "AWS_ENDPOINT_URL_SCHEDULER": moto_server},
            timeout=60,
        )

    shown = cli("status", "to-cancel").stdout
    assert "status    waiting, hop 0 in lambda" in shown
    assert "waiting   sleep 'overnight' until " in shown and "(in 4h59m)" in shown
    assert "woken by schedule longrun-to-cancel-1" in shown
    cancelled = cli("cancel", "to-cancel")
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
    names = [s["Name"] for s in scheduler.list_schedules()["Schedules"]]
    assert "longrun-to-cancel-1" not in names
    assert store.status("to-cancel")["status"] == "cancelled"


def test_an_async_handler_awaits_steps_of_coroutine_functions() -> None:
    """``await run.step(...)`` with a coroutine function: stored once, retried with
    ``asyncio.sleep`` (virtual in the simulator), the stored result on later hops."""
    import asyncio

    calls: Counter[str] = Counter()
    sim = LambdaSim()
    tries: list[float] = []

    async def fetch(i: int) -> int:
        calls[f"fetch-{i}"] += 1
        await asyncio.sleep(0)
        return i * 10

    async def flaky() -> str:
        tries.append(sim.clock.now)
        if len(tries) < 3:
            raise ConnectionError("again")
        return "ok"

    @longrun(checkpoint=MemoryStore(), min_margin_ms=1000)
    async def handler(event: Any, context: Any) -> dict[str, Any]:
        run = current_run()
        total = run.state.setdefault("total", 0)
        async for i in run.iterate(_arange(8)):
            run.state["total"] = total = total + await run.step("fetch", fetch, i)
            await asyncio.sleep(2.0)  # virtual: a few items a hop
        flaky_result = await run.step(
            "flaky", flaky, retry=Retry(attempts=4, backoff_s=3.0, jitter=False)
        )
        return {"total": total, "flaky": flaky_result}

    outcome = sim.run(handler, {}, timeout_s=7.0)
    assert outcome.status == "completed"
    assert outcome.result == {"total": sum(i * 10 for i in range(8)), "flaky": "ok"}
    assert len(outcome.hops) >= 3 and set(calls.values()) == {1} and len(calls) == 8
    assert [round(b - a, 3) for a, b in itertools.pairwise(tries)] == [3.0, 6.0]


async def _arange(n: int) -> Any:
    for i in range(n):
        yield i


def test_an_async_handler_sleeps_with_sleep_async_without_blocking_its_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``await run.sleep_async(...)``: a short sleep is an ``asyncio.sleep`` (another task of
    the handler runs meanwhile), a long one ends the hop waiting; each is slept once. A
    plain ``run.sleep`` in an async handler still works, and says that it blocks the loop."""
    import asyncio

    sim = LambdaSim()
    seen: list[str] = []
    took: list[float] = []

    async def other_task() -> None:
        seen.append("other task ran")

    @longrun(checkpoint=MemoryStore(), min_margin_ms=1000)
    async def handler(event: Any, context: Any) -> dict[str, Any]:
        run = current_run()
        started = sim.clock.now
        await asyncio.gather(run.sleep_async(2.0, name="short"), other_task())
        short_took = sim.clock.now - started
        took.append(short_took)
        await run.sleep_until_async(sim.clock.wall_ms() / 1000 + HOUR, name="long")
        run.sleep(0.5, name="plain")  # blocks the loop: logged
        return {"short_took": short_took, "hop": run.hop}

    with caplog.at_level(logging.WARNING, logger="longrun"):
        outcome = sim.run(handler, {}, timeout_s=60.0, faults=Faults("after"))
    assert outcome.status == "completed", outcome.summary()
    # hop 1 (the wake-up) found the short sleep done: it was not slept again
    assert outcome.result == {"short_took": 0.0, "hop": 1}
    assert seen == ["other task ran", "other task ran"]  # ran beside the sleep, each hop
    assert took == [2.0, 0.0]  # slept (virtual seconds) on hop 0 only
    assert [h.kind for h in outcome.hops] == ["start", "wake"]
    assert len(sim.schedules) == 1  # the long sleep waited, once
    records = outcome.document["steps"]
    assert {path: r["state"] for path, r in records.items()} == {
        "short": "done",
        "long": "done",
        "plain": "done",
    }
    assert "use `await run.sleep_async(...)`" in caplog.text
