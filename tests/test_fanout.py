"""``run.map`` in the simulator: a parent run fans out over child runs of the same function
and joins their results. Asserted on what the store ends up holding (the join record, each
child's checkpoint) and on how often each child's work ran, under duplicate deliveries,
retries, failed writes, lost replies, a crashed parent and a cancel."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from clitool import cli

from longrun import FileStore, MapFailed, MemoryStore, current_run, longrun
from longrun.errors import EnvelopeError, LongrunError, StoreError
from longrun.fanout import child_run_id, join_name, map_digest
from longrun.stores.base import CheckpointStore
from longrun.testing import Faults, LambdaSim
from longrun.testing.sim import Outcome

PARENT = "etl-1"


def fan_job(
    store: CheckpointStore,
    work: Counter[tuple[int, int]],
    *,
    n: int,
    limit: int,
    tolerated: int | None = None,
    fails: set[int] = frozenset(),  # type: ignore[assignment]
    hops: set[int] = frozenset(),  # type: ignore[assignment]
) -> Any:
    """A parent mapping ``n`` items; child ``i`` adds up ``i * k`` for its units of work
    (1 unit, or 600 one-second units in a 300 s Lambda for ``i in hops``: it hops), and
    raises on every attempt for ``i in fails``."""

    @longrun(checkpoint=store, run_id=lambda e: e["id"], min_margin_ms=2000)
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        if "i" in event:
            i = event["i"]
            if i in fails:
                raise ValueError(f"item {i} is bad")
            run.state.setdefault("total", 0)
            for k in run.iterate(range(event["units"]), name="units"):
                time.sleep(1.0)
                work[(i, k)] += 1
                run.state["total"] += i * k
            return {"i": i, "total": run.state["total"]}
        items = [{"i": i, "units": 600 if i in hops else 2} for i in range(n)]
        results = run.map("items", items, max_concurrency=limit, tolerated_failures=tolerated)
        return {
            "sum": sum(r["total"] for r in results if r is not None),
            "failed": results.failed,
        }

    return handler


def expected_sum(n: int, units: dict[int, int], skip: set[int]) -> int:
    return sum(i * k for i in range(n) if i not in skip for k in range(units.get(i, 2)))


class Watching(MemoryStore):
    """A MemoryStore that follows the children at work: created and not settled (for the
    join), at every checkpoint write; ``peak`` is the most there were at once."""

    def __init__(self) -> None:
        super().__init__()
        self.live: set[str] = set()
        self.peak = 0

    def _write(self, checkpoint: Any, token: Any, *rest: Any) -> Any:
        from longrun.join import child_outcome

        loaded = super()._write(checkpoint, token, *rest)
        written = loaded.checkpoint
        if written.parent is not None:
            if child_outcome(written) is None:
                self.live.add(written.run_id)
            else:
                self.live.discard(written.run_id)
            self.peak = max(self.peak, len(self.live))
        return loaded


def join_record(store: CheckpointStore, parent: str = PARENT, name: str = "items") -> Any:
    data = store.read_object(join_name(parent, map_digest(parent, name)))
    assert data is not None
    return json.loads(data)


def parent_hops(outcome: Outcome, parent: str = PARENT) -> list[int]:
    return [r.hop for r in outcome.invocations if r.run_id == parent and r.hop is not None]


def gated_job(
    store: CheckpointStore,
    tokens: list[str],
    *,
    name: str,
    n: int,
    limit: int,
    gated: Any = lambda i: True,
    tolerated: int | None = None,
) -> Any:
    """A parent mapping ``n`` items under ``name``; child ``i`` returns ``i``, after waiting
    for a callback (its token appended to ``tokens``) when ``gated(i)``. The parent returns
    ``{"results": [...], "failed": [...]}``."""

    @longrun(checkpoint=store, run_id=lambda e: e["id"])
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        if "i" in event:
            if gated(event["i"]):
                tokens.append(run.callback("go"))
                run.wait_for_callback("go")
            return event["i"]
        items = [{"i": i} for i in range(n)]
        results = run.map(name, items, max_concurrency=limit, tolerated_failures=tolerated)
        return {"results": list(results), "failed": results.failed}

    return handler


def test_a_thousand_children_at_fifty_with_hops_failures_duplicates_and_retries() -> None:
    n, limit = 1000, 50
    fails = {13, 400, 777}
    hops = {5, 250, 251, 999}
    work: Counter[tuple[int, int]] = Counter()
    store = Watching()
    handler = fan_job(store, work, n=n, limit=limit, tolerated=5, fails=fails, hops=hops)
    outcome = LambdaSim(store="handler").run(
        handler,
        {"id": PARENT},
        timeout_s=300.0,
        faults=Faults("after", fail_writes={40, 900, 2500}),
        max_invocations=20_000,
    )

    units = {i: 600 for i in hops}
    assert outcome.status == "completed", outcome.summary()[-3000:]
    assert outcome.result == {"sum": expected_sum(n, units, fails), "failed": sorted(fails)}
    # every unit of work of every child that succeeded ran exactly once, except in the
    # child whose "completed" write was failed by the fault: its hop's work is redone, as
    # any hop's since its last checkpoint (the sum above, from the stored results, is exact)
    redone = {
        int(str(r.run_id).rsplit(".", 1)[1])
        for r in outcome.invocations
        if r.error is not None and "(complete)" in str(r.error)
    }
    assert len(redone) == 1
    assert {i for (i, _), count in work.items() if count > 1} == redone
    assert len(work) == sum(units.get(i, 2) for i in range(n) if i not in fails)
    # the join counted each child once and was decided once
    join = join_record(store)
    assert (join["ok"], sorted(join["failed"]), join["started"]) == (n - 3, sorted(fails), n)
    assert join["launch"] == {} and join["woken_by"] is not None
    assert parent_hops(outcome) == [0, 1]  # one wake-up claimed, once
    # children that hop hopped; the failing ones were tried three times (Lambda's retries)
    for i in hops:
        assert store.load(child_run_id(PARENT, map_digest(PARENT, "items"), i)).checkpoint.hop > 0
    for i in fails:
        child = store.load(child_run_id(PARENT, map_digest(PARENT, "items"), i)).checkpoint
        assert child.status.value == "failed" and child.last_hop.attempt == 3
    assert store.peak <= limit and not store.live
    # the parent's checkpoint holds the map's record, not its items
    parent_doc = outcome.document
    assert parent_doc is not None and len(json.dumps(parent_doc)) < 4000


def test_children_that_all_hop_run_max_concurrency_at_once_and_never_more() -> None:
    """Every child hops (its continuation waits in the queue behind the other children's
    starts), so the simulator has as many children at work as the join lets start: exactly
    ``max_concurrency``, never more, until the last ones finish."""
    work: Counter[tuple[int, int]] = Counter()
    store = Watching()
    handler = fan_job(store, work, n=120, limit=25, hops=set(range(120)))
    outcome = LambdaSim(store="handler").run(
        handler, {"id": PARENT}, timeout_s=300.0, faults=Faults("after"), max_invocations=5000
    )
    assert outcome.status == "completed", outcome.summary()[-2000:]
    assert outcome.result["sum"] == expected_sum(120, dict.fromkeys(range(120), 600), set())
    assert store.peak == 25 and not store.live
    assert set(work.values()) == {1}


@pytest.mark.parametrize("faults", [Faults(), Faults("during"), Faults("after")], ids=str)
def test_results_come_back_in_item_order_and_each_child_runs_once(faults: Faults) -> None:
    work: Counter[tuple[int, int]] = Counter()
    store = Watching()
    handler = fan_job(store, work, n=30, limit=4, hops={3, 17})
    outcome = LambdaSim(store="handler").run(
        handler, {"id": PARENT}, timeout_s=300.0, faults=faults, max_invocations=5000
    )
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result["sum"] == expected_sum(30, {3: 600, 17: 600}, set())
    assert set(work.values()) == {1}
    assert store.peak <= 4 and not store.live
    assert parent_hops(outcome) == [0, 1]


def test_results_are_read_lazily_in_order_and_of_any_size() -> None:
    """Each result is read from its child's checkpoint when asked for (a 200 KB one too),
    once while it is among the last ``KEPT`` read; going over all of them keeps only those."""
    loads: Counter[str] = Counter()

    class Counting(MemoryStore):
        def load(self, run_id: str) -> Any:
            loads[run_id] += 1
            return super().load(run_id)

    store = Counting()
    seen: list[Any] = []

    @longrun(checkpoint=store, run_id=lambda e: e["id"])
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        if "i" in event:
            return {"i": event["i"], "blob": "x" * 200_000 if event["i"] == 2 else ""}
        results = run.map("big", [{"i": i} for i in range(300)], max_concurrency=20)
        before = dict(loads)
        seen.append(results[2])
        seen.append([r["i"] for r in results[-2:]])
        assert loads[results.run_id(0)] == before.get(results.run_id(0), 0)  # never asked
        assert results[2] is seen[0] and loads[results.run_id(2)] == before[results.run_id(2)] + 1
        seen.append(sum(r["i"] for r in results))
        seen.append(len(results._cache))
        return len(results)

    outcome = LambdaSim(store="handler").run(handler, {"id": PARENT}, max_invocations=2000)
    assert outcome.result == 300
    assert seen[0] == {"i": 2, "blob": "x" * 200_000}
    assert seen[1] == [298, 299]
    assert seen[2] == sum(range(300))
    assert seen[3] == 128  # MapResults.KEPT: not all 300


def test_failures_beyond_the_tolerated_fail_the_parent_naming_the_children() -> None:
    work: Counter[tuple[int, int]] = Counter()
    store = MemoryStore()
    handler = fan_job(store, work, n=12, limit=3, tolerated=1, fails={4, 9})
    outcome = LambdaSim(store="handler").run(handler, {"id": PARENT}, max_invocations=2000)
    assert outcome.status == "failed"
    message = outcome.error["message"]
    digest = map_digest(PARENT, "items")
    assert "2 of 12 children failed, more than the 1 tolerated" in message
    assert f"4 ({child_run_id(PARENT, digest, 4)})" in message and "9 (" in message
    assert outcome.error["type"] == "MapFailed"
    # the handler can catch it and go on without them
    caught: list[list[int]] = []

    @longrun(checkpoint=MemoryStore(), run_id=lambda e: e["id"])
    def lenient(event: Any, context: Any) -> Any:
        if "i" in event:
            if event["i"] == 4:
                raise ValueError("item 4 is bad")
            return event["i"]
        try:
            current_run().map("items", [{"i": i} for i in range(6)], max_concurrency=2)
        except MapFailed as exc:
            caught.append(exc.failed)
            return "without them"

    assert LambdaSim(store="handler").run(lenient, {"id": PARENT}).result == "without them"
    assert caught == [[4]]
    # the ten good children each ran their work once
    assert len(work) == 20 and set(work.values()) == {1}


def test_a_ratio_of_failures_is_tolerated() -> None:
    store = MemoryStore()

    @longrun(checkpoint=store, run_id=lambda e: e["id"])
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        if "i" in event:
            if event["i"] % 5 == 0:
                raise RuntimeError("every fifth fails")
            return event["i"]
        results = run.map(
            "r", [{"i": i} for i in range(20)], max_concurrency=5, tolerated_failure_ratio=0.2
        )
        return {"ok": [r for r in results if r is not None], "failed": results.failed}

    outcome = LambdaSim(store="handler").run(handler, {"id": PARENT}, max_invocations=2000)
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result["failed"] == [0, 5, 10, 15]
    assert outcome.result["ok"] == [i for i in range(20) if i % 5]


def test_a_parent_that_dies_after_starting_children_never_starts_one_twice() -> None:
    """The parent's waiting write fails (after the children were started): Lambda retries
    the parent's hop, which starts the same children again; each child run exists once."""
    work: Counter[tuple[int, int]] = Counter()
    store = MemoryStore()
    handler = fan_job(store, work, n=8, limit=8)
    # writes: 1 parent claim, 2 parent's map record, 3 the waiting write (fails)
    outcome = LambdaSim(store="handler").run(
        handler, {"id": PARENT}, faults=Faults(fail_writes={3}), max_invocations=500
    )
    assert outcome.status == "completed", outcome.summary()
    assert set(work.values()) == {1} and len(work) == 16
    starts = Counter(
        r.run_id
        for r in outcome.invocations
        if r.run_id != PARENT and r.hop == 0 and r.ran_user_code
    )
    assert set(starts.values()) == {1} and len(starts) == 8
    assert join_record(store)["ok"] == 8


class LostReplies(MemoryStore):
    """Join writes that commit but whose reply is lost: ``"error"`` raises after the write
    (the invocation fails, Lambda retries it); ``"conflict"`` answers as botocore's own
    retry of a committed conditional write does (412: it changed)."""

    def __init__(self, mode: str, every: int) -> None:
        super().__init__()
        self.mode, self.every, self.count = mode, every, 0

    def replace_object(self, name: str, data: bytes, token: Any) -> bool:
        written = super().replace_object(name, data, token)
        self.count += 1
        if written and self.count % self.every == 0:
            if self.mode == "error":
                raise StoreError(f"injected: reply of write {self.count} of {name} lost")
            return False
        return written


@pytest.mark.parametrize("mode", ["error", "conflict"])
def test_a_join_write_whose_reply_is_lost_counts_once(mode: str) -> None:
    work: Counter[tuple[int, int]] = Counter()
    store = LostReplies(mode, every=3)
    handler = fan_job(store, work, n=40, limit=5)
    outcome = LambdaSim(store="handler").run(handler, {"id": PARENT}, max_invocations=3000)
    assert outcome.status == "completed", outcome.summary()[-3000:]
    assert outcome.result["sum"] == expected_sum(40, {}, set())
    assert set(work.values()) == {1}
    join = join_record(store)
    assert (join["ok"], join["failed"], join["started"], join["launch"]) == (40, [], 40, {})
    assert parent_hops(outcome) == [0, 1]


def test_cancelling_the_parent_cancels_its_children_and_starts_no_more() -> None:
    store = MemoryStore()
    tokens: list[str] = []
    handler = gated_job(store, tokens, name="slow", n=10, limit=3)
    sim = LambdaSim(store="handler")
    outcome = sim.run(handler, {"id": PARENT})
    assert outcome.status == "waiting" and len(tokens) == 3
    digest = map_digest(PARENT, "slow")
    assert store.load(child_run_id(PARENT, digest, 3)) is None  # not started
    assert sim.cancel(PARENT, store=store).status == "cancelled"
    statuses = [store.load(child_run_id(PARENT, digest, i)) for i in range(10)]
    assert [s.checkpoint.status.value for s in statuses[:3] if s] == ["cancelled"] * 3
    assert all(s is None for s in statuses[3:])
    join = json.loads(store.read_object(join_name(PARENT, digest)))
    assert join["cancelled"] and join["started"] == 3
    # an answer now wakes nothing: the child is cancelled
    sim.send_callback(tokens[0], "late", store=store)
    assert store.load(child_run_id(PARENT, digest, 0)).checkpoint.status.value == "cancelled"
    assert all(store.load(child_run_id(PARENT, digest, i)) is None for i in range(3, 10))


def test_a_cancelled_child_counts_as_failed_and_the_parent_goes_on() -> None:
    store = MemoryStore()
    tokens: list[str] = []
    handler = gated_job(store, tokens, name="m", n=4, limit=4, gated=lambda i: i == 1, tolerated=1)

    sim = LambdaSim(store="handler")
    assert sim.run(handler, {"id": PARENT}).status == "waiting"
    outcome = sim.cancel(child_run_id(PARENT, map_digest(PARENT, "m"), 1), store=store)
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result == {"failed": [1], "results": [0, None, 2, 3]}


def test_the_parent_checkpoint_stays_small_with_a_hundred_thousand_items() -> None:
    store = MemoryStore()

    @longrun(checkpoint=store, run_id=lambda e: e["id"])
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        if "prefix" in event:
            run.wait_for_callback("x") if run.callback("x") else None
        items = [{"prefix": f"logs/2026/{i:06d}/"} for i in range(100_000)]
        return len(run.map("prefixes", items, max_concurrency=2))

    outcome = LambdaSim(store="handler").run(handler, {"id": PARENT})
    assert outcome.status == "waiting"
    stored = store.raw(PARENT)
    assert stored is not None and len(stored) < 4000
    digest = map_digest(PARENT, "prefixes")
    chunk = json.loads(store.read_object(f"{PARENT}/map/{digest}/items/99.json"))
    assert chunk[-1] == {"prefix": "logs/2026/099999/"} and len(chunk) == 1000


def test_an_async_handler_maps_too() -> None:
    store = MemoryStore()

    @longrun(checkpoint=store, run_id=lambda e: e["id"])
    async def handler(event: Any, context: Any) -> Any:
        run = current_run()
        if "i" in event:
            return event["i"] * 10
        return sum(run.map("a", [{"i": i} for i in range(6)], max_concurrency=2))

    outcome = LambdaSim(store="handler").run(handler, {"id": PARENT})
    assert outcome.status == "completed" and outcome.result == 150


def test_an_empty_map_returns_at_once_and_bad_arguments_are_named() -> None:
    store = MemoryStore()
    errors: list[str] = []

    @longrun(checkpoint=store, run_id=lambda e: e["id"])
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        for call in (
            lambda: run.map("a", [{"i": 1}], max_concurrency=0),
            lambda: run.map("b", [{"i": 1}], tolerated_failure_ratio=1.5),
            lambda: run.map("c", [{"when": object()}]),
            lambda: run.map("d", "not-a-list"),
        ):
            with pytest.raises(LongrunError) as caught:
                call()
            errors.append(str(caught.value))
        return list(run.map("empty", []))

    outcome = LambdaSim(store="handler").run(handler, {"id": PARENT})
    assert outcome.status == "completed" and outcome.result == []
    assert "max_concurrency=0" in errors[0]
    assert "tolerated_failure_ratio=1.5" in errors[1]
    assert "item 0" in errors[2] and "not plain JSON" in errors[2]
    assert "not a str" in errors[3]


def test_a_malformed_child_event_or_a_hand_edited_join_is_refused_clearly() -> None:
    store = MemoryStore()

    @longrun(checkpoint=store, run_id=lambda e: e.get("id", "x"))
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        if "i" in event:
            return event["i"]
        return list(run.map("m", [{"i": i} for i in range(3)], max_concurrency=1))

    digest = map_digest(PARENT, "m")
    for body in (
        {"v": 1, "parent": PARENT, "map": "zz", "index": 0},  # not a digest
        {"v": True, "parent": PARENT, "map": digest, "index": 0},  # not the version 1
        {"v": 1, "parent": PARENT, "map": digest, "index": -1},
        {"v": 1, "parent": "../x", "map": digest, "index": 0},
    ):
        outcome = LambdaSim(store="handler").run(handler, {"longrun_child": body})
        error = outcome.invocations[0].error
        assert isinstance(error, (EnvelopeError, LongrunError)), body
        assert "longrun_child" in str(error) or "parent" in str(error), str(error)
    assert store.load(child_run_id(PARENT, digest, 0)) is None  # nothing was started

    # a join record edited by hand: the child joining names the object and what to do
    tokens: list[str] = []
    waiting = gated_job(store, tokens, name="m", n=2, limit=1)
    sim = LambdaSim(store="handler")
    assert sim.run(waiting, {"id": PARENT}).status == "waiting"
    store.put_object(join_name(PARENT, map_digest(PARENT, "m")), b'{"hello": 1}')
    outcome = sim.send_callback(tokens[0], "ok", store=store)
    errors = [str(r.error) for r in outcome.invocations if r.error is not None]
    assert errors and "is not one longrun wrote" in errors[-1], outcome.summary()
    assert "join.json" in errors[-1]


def test_the_cli_shows_children_lists_them_and_cancel_stops_them(tmp_path: Path) -> None:
    """``longrun status`` counts the children by status, ``list --parent`` lists them,
    ``cancel`` cancels them (a real process, on a FileStore a simulated run wrote)."""
    store = FileStore(tmp_path)
    tokens: list[str] = []
    handler = gated_job(store, tokens, name="m", n=7, limit=3, gated=lambda i: i % 2)

    sim = LambdaSim(store="handler")
    assert sim.run(handler, {"id": PARENT}).status == "waiting"
    uri = f"file://{tmp_path}"
    # children 0..6 at 3 at once: 0 done, 1 waits, 2 done, 3 waits, 4 done, 5 waits; 6 pending
    shown = cli("status", PARENT, "--store", uri)
    assert shown.returncode == 0, shown.stderr
    assert "children  7 (3 completed, 0 failed, 3 running, 1 pending)" in shown.stdout
    assert "waiting   map 'm', woken by its last child to finish" in shown.stdout
    listed = cli("list", "--parent", PARENT, "--store", uri, "--json")
    assert listed.returncode == 0, listed.stderr
    digest = map_digest(PARENT, "m")
    got = {r["run_id"]: r["status"] for r in json.loads(listed.stdout)}
    assert got == {
        child_run_id(PARENT, digest, i): "completed" if i % 2 == 0 else "waiting" for i in range(6)
    }
    assert "no run 'nope'" in cli("list", "--parent", "nope", "--store", uri).stderr
    child = cli("status", child_run_id(PARENT, digest, 1), "--store", uri)
    assert f"parent    {PARENT} (run.map item 1)" in child.stdout, child.stderr
    cancelled = cli("cancel", PARENT, "--store", uri)
    assert cancelled.returncode == 0, cancelled.stderr
    statuses = {i: store.load(child_run_id(PARENT, digest, i)) for i in range(7)}
    assert [statuses[i].checkpoint.status.value for i in (1, 3, 5)] == ["cancelled"] * 3
    assert statuses[6] is None  # never started
    after = json.loads(cli("status", PARENT, "--store", uri, "--json").stdout)
    assert after["status"] == "cancelled"
    assert after["children"][0]["cancelled"] is True


def test_a_map_in_each_loop_item_is_its_own_map() -> None:
    """The same ``run.map`` name in successive ``run.iterate`` items: each item fans out to
    children of its own, and the loop goes on after each join."""
    store = MemoryStore()
    ran: Counter[int] = Counter()

    @longrun(checkpoint=store, run_id=lambda e: e["id"])
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        if "i" in event:
            ran[event["i"]] += 1
            return event["i"] * 10
        totals = run.state.setdefault("totals", [])
        for batch in run.iterate(range(3), name="batches"):
            results = run.map(
                "batch", [{"i": batch * 100 + k} for k in range(4)], max_concurrency=2
            )
            totals.append(sum(results))
        return totals

    outcome = LambdaSim(store="handler").run(handler, {"id": PARENT}, faults=Faults("after"))
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result == [60, 4060, 8060]
    assert ran == Counter({b * 100 + k: 1 for b in range(3) for k in range(4)})
    assert parent_hops(outcome) == [0, 1, 2, 3]


def test_gc_keeps_the_children_of_a_live_parent() -> None:
    """Finished children of a parent still waiting for the rest are not garbage: the
    parent reads their results from their checkpoints. Once it settles, they go."""
    from longrun.gc import collect_garbage

    store = MemoryStore()
    tokens: list[str] = []
    handler = gated_job(store, tokens, name="m", n=3, limit=3, gated=lambda i: i == 2)

    sim = LambdaSim(store="handler")
    assert sim.run(handler, {"id": PARENT}).status == "waiting"
    later = sim.clock.wall_ms() + 86_400_000
    kept = collect_garbage(store, older_than_s=3600, now_ms=later)
    digest = map_digest(PARENT, "m")
    assert kept.deleted == []
    assert (
        kept.kept[child_run_id(PARENT, digest, 0)] == f"a child of run {PARENT}, which is waiting"
    )
    done = sim.send_callback(tokens[0], None, store=store)
    assert done.status == "completed" and done.result == {"results": [0, 1, 2], "failed": []}
    gone = collect_garbage(store, older_than_s=3600, now_ms=later + 86_400_000)
    assert sorted(gone.deleted) == sorted(
        [PARENT] + [child_run_id(PARENT, digest, i) for i in range(3)]
    )


def test_children_go_to_the_named_function_as_the_parents_tenant() -> None:
    """``function=`` names the function the children are invoked in; each child start and
    the parent's wake-up carry the parent's tenant (a function in per-tenant isolation)."""
    from longrun import ports
    from longrun.fanout import make_child_event
    from longrun.testing import FakeContext, RecordingTransport, VirtualClock

    store = MemoryStore()

    @longrun(checkpoint=store, run_id=lambda e: e["id"])
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        if "i" in event:
            return event["i"]
        return sum(
            run.map("m", [{"i": i} for i in range(3)], max_concurrency=2, function="workers")
        )

    sent = RecordingTransport()
    clock = VirtualClock()
    with ports.installed(transport=sent, clock=clock):
        answer = handler({"id": PARENT}, FakeContext(clock, timeout_s=60, tenant_id="acme"))
        assert answer["longrun"]["status"] == "waiting"
        digest = map_digest(PARENT, "m")
        assert sent.calls == [
            ("workers", make_child_event(PARENT, digest, i), "acme") for i in (0, 1)
        ]
        # the children run (in the named function: here the same code), each as the tenant
        handler(sent.calls[0][1], FakeContext(clock, timeout_s=60, tenant_id="acme"))
        assert sent.calls[2] == ("workers", make_child_event(PARENT, digest, 2), "acme")
        for call in (sent.calls[1], sent.calls[2]):
            handler(call[1], FakeContext(clock, timeout_s=60, tenant_id="acme"))
        for i in (0, 1, 2):
            assert store.load(child_run_id(PARENT, digest, i)).checkpoint.tenant_id == "acme"
        assert len(sent.calls) == 4
        wake = sent.calls[-1]
        assert wake[1] == {"longrun": {"v": 1, "run_id": PARENT, "hop": 1}} and wake[2] == "acme"
        assert wake[0].endswith(":function:longrun-sim")  # the parent's own function
        done = handler(wake[1], FakeContext(clock, timeout_s=60, tenant_id="acme"))
    assert done == 3


def test_join_writes_whose_s3_reply_is_lost_count_once(moto_server: str) -> None:
    """On S3 (moto): every other conditional write of the join record commits, then its
    reply is lost, so botocore's own retry resends it and meets 412. The joining child
    reads the record again, finds its bit set, and counts nothing twice."""
    import uuid

    import boto3

    from longrun import S3Store

    client = boto3.session.Session().client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"longrun-fan-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    lost: list[int] = []
    seen = Counter[str]()

    def needs_retry(
        response: Any = None, attempts: int = 1, request_dict: Any = None, **_: Any
    ) -> float | None:
        key = str((request_dict or {}).get("url_path", "")).split("?", 1)[0]
        if not key.endswith("/join.json") or attempts != 1 or response is None:
            return None
        if response[0].status_code != 200:
            return None
        seen["ok"] += 1
        if seen["ok"] % 2 == 0:
            lost.append(seen["ok"])
            return 0  # resend the committed write: S3 answers 412
        return None

    client.meta.events.register_first("needs-retry.s3.PutObject", needs_retry)
    work: Counter[tuple[int, int]] = Counter()
    store = S3Store(bucket, "runs/", client=client)
    handler = fan_job(store, work, n=12, limit=3)
    outcome = LambdaSim(store="handler").run(handler, {"id": PARENT}, max_invocations=500)
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result["sum"] == expected_sum(12, {}, set())
    assert len(lost) >= 10  # about half of the two join writes per child
    assert set(work.values()) == {1} and len(work) == 24
    join = json.loads(store.read_object(join_name(PARENT, map_digest(PARENT, "items"))) or b"")
    assert (join["ok"], join["started"], join["launch"], join["failed"]) == (12, 12, {}, [])
    assert parent_hops(outcome) == [0, 1]


def test_recursion_refused_between_children_is_named_and_a_resume_starts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AWS's recursive loop detection refuses the start of a child by a child: that child's
    invocation fails naming the setting (its own result is stored and joined). Once
    recursion is allowed, ``longrun resume PARENT`` starts the children again."""
    from botocore.exceptions import ClientError

    from longrun.testing import sim as sim_module

    store = MemoryStore()
    work: Counter[tuple[int, int]] = Counter()
    handler = fan_job(store, work, n=3, limit=1)
    real = sim_module._SimHooks.invoke_async

    def refusing(self: Any, function: str, payload: bytes, client: Any, **kw: Any) -> None:
        by_child = "longrun_child" in self.delivery.event  # a child's invocation (and retries)
        if by_child and b"longrun_child" in payload:
            error = {"Error": {"Code": "RecursiveInvocationException", "Message": "loop"}}
            raise ClientError(error, "Invoke")
        real(self, function, payload, client, **kw)

    monkeypatch.setattr(sim_module._SimHooks, "invoke_async", refusing)
    sim = LambdaSim(store="handler")
    stuck = sim.run(handler, {"id": PARENT}, max_invocations=100)
    assert stuck.status == "waiting"
    errors = {type(r.error).__name__: str(r.error) for r in stuck.invocations if r.error}
    assert "put-function-recursion-config" in errors["RecursionStopped"]
    assert f"longrun resume {PARENT}" in errors["RecursionStopped"]
    join = join_record(store)
    assert (join["ok"], join["started"], join["launch"]) == (1, 2, {"1": 0})

    monkeypatch.setattr(sim_module._SimHooks, "invoke_async", real)  # recursion allowed
    done = sim.resume_run(PARENT, store=store)
    assert done.status == "completed", done.summary()
    assert done.result["sum"] == expected_sum(3, {}, set())
    assert set(work.values()) == {1} and len(work) == 6


def test_the_lambda_transport_starts_children_several_at_once_and_tries_them_all() -> None:
    """``Transport.invoke_many`` (the real transport's, which a fan-out starts its children
    with): the invokes overlap (two of them meet at a barrier, which one-at-a-time sending
    would never reach), every payload is tried, and the first error is raised after."""
    import threading

    from longrun import ports

    barrier = threading.Barrier(2, timeout=30)
    sent: list[bytes] = []
    lock = threading.Lock()

    class Lambda(ports.Transport):
        def invoke_async(self, function: str, payload: bytes, client: Any, **kw: Any) -> None:
            if payload in (b"0", b"1"):
                barrier.wait()  # both in flight at once
            with lock:
                sent.append(payload)
            if payload == b"5":
                raise RuntimeError("child 5 refused")

    payloads = [str(i).encode() for i in range(40)]
    with pytest.raises(RuntimeError, match="child 5 refused"):
        Lambda().invoke_many("fn", payloads)
    assert sorted(sent, key=int) == payloads


def test_a_child_can_fan_out_in_turn() -> None:
    """Maps nest: each child maps grandchildren of its own (their ids derive from the
    child's), and every level joins once."""
    store = MemoryStore()
    ran: Counter[str] = Counter()

    @longrun(checkpoint=store, run_id=lambda e: e["id"])
    def handler(event: Any, context: Any) -> Any:
        run = current_run()
        if "leaf" in event:
            ran[event["leaf"]] += 1
            return len(event["leaf"])
        if "branch" in event:
            leaves = [{"leaf": f"{event['branch']}-{k}" * (k + 1)} for k in range(2)]
            return sum(run.map("leaves", leaves, max_concurrency=1))
        return sum(run.map("branches", [{"branch": b} for b in "abc"], max_concurrency=2))

    outcome = LambdaSim(store="handler").run(handler, {"id": PARENT}, faults=Faults("after"))
    assert outcome.status == "completed", outcome.summary()
    assert outcome.result == 3 * (3 + 6)  # each branch: "x-0" (3) + "x-1x-1" (6)
    assert set(ran.values()) == {1} and len(ran) == 6
    branch = child_run_id(PARENT, map_digest(PARENT, "branches"), 0)
    leaf = child_run_id(branch, map_digest(branch, "leaves"), 1)
    assert store.load(leaf).checkpoint.parent == {
        "run": branch,
        "map": leaf.split(".")[-2],
        "index": 1,
    }
    assert parent_hops(outcome) == [0, 1]
