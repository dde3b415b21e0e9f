"""Eight runs at once in one process (Lambda Managed Instances serve several requests in one
execution environment): with threads and with asyncio, no state, margin, hand-off cost or
claim crosses from one run to another.

Each run lives on its own virtual clock (installed through ``longrun.ports`` in its thread or
task), its items take a duration of its own, and its hand-offs cost a duration of its own, so
any crossing shows in the stored timing, not in wall time.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from longrun import MemoryStore, current_run, longrun, ports
from longrun.testing import FakeContext, VirtualClock

RUNS = 8
ITEMS = 15


class RoutedTransport(ports.Transport):
    """Hand-offs go to the run's own queue; each costs ``(k + 1) * 100`` ms on the caller's
    own clock (k: the run's number), so a measured cost that crossed would show."""

    def __init__(self) -> None:
        self.queues: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()

    def invoke_async(
        self, function: str, payload: bytes, client: Any, *, tenant_id: str | None = None
    ) -> None:
        envelope = json.loads(payload)
        run_id = envelope["longrun"]["run_id"]
        clock = ports.active().clock
        assert isinstance(clock, VirtualClock)
        clock.advance((int(run_id.split("-")[1]) + 1) * 0.1)
        with self.lock:
            self.queues.setdefault(run_id, []).append(envelope)

    def next(self, run_id: str) -> dict[str, Any]:
        with self.lock:
            return self.queues[run_id].pop(0)


def make_handler(store: MemoryStore, seen: dict[str, list[Any]]) -> Any:
    @longrun(checkpoint=store, run_id=lambda event: f"run-{event['k']}", checkpoint_every_s=3600)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        run = current_run()
        k = event["k"]
        clock = ports.active().clock
        assert isinstance(clock, VirtualClock)
        seen[run.id].append((run.hop, context.aws_request_id))
        run.state.setdefault("items", [])
        for i in run.iterate(range(ITEMS)):
            if i and i % 5 == 0 and run.hop == i // 5 - 1:
                run.end_hop()
            clock.advance((k + 1) * 0.01)  # this run's item duration
            run.state["items"].append(f"{k}:{i}")
        return {"k": k, "items": len(run.state["items"])}

    return handler


def drive(handler: Any, transport: RoutedTransport, k: int) -> Any:
    """One run, hop after hop, on its own clock, in the current thread or task."""
    clock = VirtualClock()
    with ports.installed(clock=clock, transport=transport):
        result = handler({"k": k}, FakeContext(clock, timeout_s=900))
        while isinstance(result, dict) and "longrun" in result:
            envelope = transport.next(f"run-{k}")
            result = handler(envelope, FakeContext(clock, timeout_s=900))
    return result


def check(store: MemoryStore, seen: dict[str, list[Any]], results: list[Any]) -> None:
    assert sorted(r["k"] for r in results) == list(range(RUNS))
    for k in range(RUNS):
        document = store.status(f"run-{k}")
        assert document["status"] == "completed"
        # Only its own items, each once.
        assert document["state"]["items"] == [f"{k}:{i}" for i in range(ITEMS)]
        # Its own item duration and its own hand-off cost, nobody else's.
        timing = document["timing"]
        assert timing["longest_item_ms"] == (k + 1) * 10, (k, timing)
        assert timing["handoff_ms"] == (k + 1) * 100, (k, timing)
        # Every claim and hop entry was written by this run's own invocations.
        mine = {request_id for _hop, request_id in seen[f"run-{k}"]}
        assert {h["request_id"] for h in document["hops"]} == mine
        assert [h["hop"] for h in document["hops"]] == [0, 1, 2]


def fresh() -> tuple[MemoryStore, dict[str, list[Any]], RoutedTransport]:
    return MemoryStore(), {f"run-{k}": [] for k in range(RUNS)}, RoutedTransport()


def test_eight_runs_in_threads_share_nothing() -> None:
    store, seen, transport = fresh()
    handler = make_handler(store, seen)
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(RUNS)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            results.append(drive(handler, transport, k))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(RUNS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    check(store, seen, results)


def test_eight_runs_as_asyncio_tasks_share_nothing() -> None:
    store, seen, transport = fresh()

    @longrun(checkpoint=store, run_id=lambda event: f"run-{event['k']}", checkpoint_every_s=3600)
    async def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        run = current_run()
        k = event["k"]
        clock = ports.active().clock
        assert isinstance(clock, VirtualClock)
        seen[run.id].append((run.hop, context.aws_request_id))
        run.state.setdefault("items", [])
        for i in run.iterate(range(ITEMS)):
            if i and i % 5 == 0 and run.hop == i // 5 - 1:
                run.end_hop()
            clock.advance((k + 1) * 0.01)
            await asyncio.sleep(0)  # let the other runs in
            run.state["items"].append(f"{k}:{i}")
        return {"k": k, "items": len(run.state["items"])}

    async def drive_async(k: int) -> Any:
        clock = VirtualClock()
        with ports.installed(clock=clock, transport=transport):
            result = await handler({"k": k}, FakeContext(clock, timeout_s=900))
            while isinstance(result, dict) and "longrun" in result:
                await asyncio.sleep(0)
                envelope = transport.next(f"run-{k}")
                result = await handler(envelope, FakeContext(clock, timeout_s=900))
        return result

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(drive_async(k) for k in range(RUNS))))

    check(store, seen, asyncio.run(main()))


@pytest.mark.parametrize("k", [0, 7])
def test_the_check_itself_sees_a_run_alone(k: int) -> None:
    """A single run on its own gives the figures the concurrent checks expect."""
    store, seen, transport = fresh()
    handler = make_handler(store, seen)
    result = drive(handler, transport, k)
    assert result == {"k": k, "items": ITEMS}
    timing = store.status(f"run-{k}")["timing"]
    assert timing["longest_item_ms"] == (k + 1) * 10
