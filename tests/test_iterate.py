"""run.iterate across hops: sequences, nesting, names, keys, and what is skipped on resume."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from longrun import CursorKeyMissing, LongrunError, MemoryStore, current_run, longrun
from longrun.testing import LambdaSim


@pytest.fixture
def longrun_sim(longrun_sim: LambdaSim) -> LambdaSim:
    """These tests read the handler's own store: the simulator uses it, not its in-memory one."""
    longrun_sim.store = "handler"
    return longrun_sim


def test_loops_in_sequence_each_resume(longrun_sim: LambdaSim) -> None:
    done: Counter[tuple[str, int]] = Counter()

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for i in run.iterate(range(20)):
            time.sleep(1)
            done["a", i] += 1
        for i in run.iterate(range(20)):
            time.sleep(1)
            done["b", i] += 1
        return len(done)

    outcome = longrun_sim.run(handler, {}, timeout_s=7)

    assert outcome.status == "completed" and outcome.result == 40
    assert set(done.values()) == {1}
    assert len(outcome.hops) >= 6


def test_nested_loops_resume_inner_and_outer(longrun_sim: LambdaSim) -> None:
    done: Counter[tuple[int, int]] = Counter()
    setup: Counter[int] = Counter()

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for f in run.iterate(range(4), name="files"):
            setup[f] += 1  # code between loops re-runs when a hop resumes inside this item
            for line in run.iterate(range(10), name="lines"):
                time.sleep(1)
                done[f, line] += 1
        return sum(done.values())

    outcome = longrun_sim.run(handler, {}, timeout_s=7)

    assert outcome.status == "completed" and outcome.result == 40
    assert done == Counter({(f, line): 1 for f in range(4) for line in range(10)})
    # Outer items are not timed as items (their inner loops time theirs), so every hop but
    # the last does a full hop's worth of lines.
    assert len(outcome.hops) == 7
    # (items count the outer loop's finished items too: 6 lines, plus 1 when a file ended)
    assert all(n in (6, 7) for n in [h.items for h in outcome.hops[:-1]])
    # The checkpoint never keeps inner cursors of finished outer items.
    for document in outcome.checkpoints:
        inner = [p for p in document["cursors"] if p.startswith("files/")]
        assert len(inner) <= 1


def test_unnamed_nested_loops_use_call_order(longrun_sim: LambdaSim) -> None:
    done: Counter[tuple[int, str, int]] = Counter()

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for batch in run.iterate(range(3)):
            for i in run.iterate(range(4)):
                time.sleep(1)
                done[batch, "first", i] += 1
            for i in run.iterate(range(4)):
                time.sleep(1)
                done[batch, "second", i] += 1
        return len(done)

    outcome = longrun_sim.run(handler, {}, timeout_s=6)

    assert outcome.status == "completed" and outcome.result == 24
    assert set(done.values()) == {1}


def test_finished_items_are_not_handed_to_user_code_again(longrun_sim: LambdaSim) -> None:
    bodies: list[int] = []

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        for i in current_run().iterate(list(range(30))):
            bodies.append(i)
            time.sleep(1)

    outcome = longrun_sim.run(handler, {}, timeout_s=10)

    assert outcome.status == "completed"
    assert bodies == list(range(30))


def test_generator_source_is_skipped_by_position(longrun_sim: LambdaSim) -> None:
    produced: Counter[int] = Counter()
    bodies: Counter[int] = Counter()

    def source() -> Any:
        for i in range(25):
            produced[i] += 1
            yield i

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        for i in current_run().iterate(source()):
            bodies[i] += 1
            time.sleep(1)

    outcome = longrun_sim.run(handler, {}, timeout_s=8)

    assert outcome.status == "completed"
    assert set(bodies.values()) == {1}
    assert max(produced.values()) > 1  # a generator has to be replayed to reach the position


def test_keyed_loop_survives_a_growing_listing(longrun_sim: LambdaSim) -> None:
    listing = [f"obj-{i:03d}" for i in range(0, 40, 2)]
    bodies: Counter[str] = Counter()

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> int:
        # Between hops new objects appear *before* the resume point; a position cursor
        # would skip the wrong items, a key cursor resumes after the last finished key.
        listing[:0] = [f"new-{current_run().hop}"]
        for key in current_run().iterate(list(listing), key=lambda k: k):
            bodies[key] += 1
            time.sleep(1)
        return len(bodies)

    outcome = longrun_sim.run(handler, {}, timeout_s=8)

    assert outcome.status == "completed"
    assert all(bodies[k] == 1 for k in listing if k.startswith("obj-"))
    assert set(bodies.values()) == {1}


def test_keyed_loop_with_missing_key_fails_clearly(longrun_sim: LambdaSim) -> None:
    listing = [f"k{i}" for i in range(20)]

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        if current_run().hop == 1:
            listing.clear()
            listing.extend(["other-1", "other-2"])
        for key in current_run().iterate(list(listing), key=str):
            time.sleep(1)
            del key

    outcome = longrun_sim.run(handler, {}, timeout_s=8, retries=0)

    assert outcome.status == "failed"
    error = outcome.hops[-1].error
    assert isinstance(error, CursorKeyMissing)
    saved_key = outcome.checkpoints[-2]["cursors"]["#0"]["key"]
    assert saved_key.startswith("k") and repr(saved_key) in str(error)
    assert "ordered=True" in str(error)
    assert outcome.error is not None and outcome.error["type"] == "CursorKeyMissing"


def test_ordered_keys_with_start_after_listing(longrun_sim: LambdaSim) -> None:
    """The efficient form for big listings: list from run.last_key(name) on, ordered=True."""
    objects = [f"logs/{i:04d}.gz" for i in range(30)]
    listed: list[int] = []
    bodies: Counter[str] = Counter()

    def list_after(start_after: str | None) -> Any:
        remaining = [o for o in objects if start_after is None or o > start_after]
        listed.append(len(remaining))
        yield from remaining

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        after = run.last_key("objects")
        for key in run.iterate(list_after(after), name="objects", key=lambda k: k, ordered=True):
            bodies[key] += 1
            time.sleep(1)
        return len(bodies)

    outcome = longrun_sim.run(handler, {}, timeout_s=8)

    assert outcome.status == "completed" and outcome.result == 30
    assert set(bodies.values()) == {1}
    assert listed[0] == 30 and listed[1] < 30  # resumed listings start after the saved key


def test_break_out_of_a_loop_keeps_the_position(longrun_sim: LambdaSim) -> None:
    bodies: Counter[int] = Counter()

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for i in run.iterate(range(10), name="scan"):
            bodies[i] += 1
            if i == 4:
                break
        return run.cursors()["scan"]["pos"]

    outcome = longrun_sim.run(handler, {}, timeout_s=60)

    assert outcome.result == 4  # item 4 was not finished: the body broke out of it
    assert outcome.document is not None
    assert outcome.document["cursors"]["scan"] == {"pos": 4, "done": False, "total": 10}


def test_bad_loop_arguments_are_clear_errors() -> None:
    errors: list[str] = []

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        for bad in ({"name": "a/b"}, {"name": ""}, {"ordered": True}, {"key": 3}):
            try:
                run.iterate([1], **bad)  # type: ignore[call-overload]
            except LongrunError as exc:
                errors.append(str(exc))

    LambdaSim(store="handler").run(handler, {}, timeout_s=60)
    assert len(errors) == 4
    assert "'a/b'" in errors[0] and "key=" in errors[2] and "key=3" in errors[3]


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_item_loops(longrun_sim: LambdaSim, n: int) -> None:
    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> list[int]:
        return list(current_run().iterate(range(n)))

    outcome = longrun_sim.run(handler, {}, timeout_s=60)
    assert outcome.status == "completed" and outcome.result == list(range(n))


def test_rejected_iterate_call_does_not_shift_default_names(longrun_sim: LambdaSim) -> None:
    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> list[str]:
        run = current_run()
        with pytest.raises(LongrunError):
            run.iterate([1], name="bad/name")
        for _ in run.iterate(range(2)):
            pass
        return sorted(run.cursors())

    outcome = longrun_sim.run(handler, {}, timeout_s=60)
    assert outcome.result == ["#0"]


def test_tuple_keys_resume(longrun_sim: LambdaSim) -> None:
    """Keys round-trip through JSON (tuples come back as lists) and still match."""
    bodies: Counter[tuple[str, int]] = Counter()
    items = [("part", i) for i in range(20)]

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> int:
        for item in current_run().iterate(list(items), key=lambda it: it):
            bodies[item] += 1
            time.sleep(1)
        return len(bodies)

    outcome = longrun_sim.run(handler, {}, timeout_s=8)

    assert outcome.status == "completed" and outcome.result == 20
    assert set(bodies.values()) == {1}
    assert len(outcome.hops) >= 3


@pytest.mark.parametrize("timeout_s", [3, 4, 5, 6, 7, 8])
def test_nested_loops_resume_exactly_once_wherever_the_hop_ends(timeout_s: int) -> None:
    """Whichever item a hop ends at (inside an inner loop, or right after one finished and
    before the next outer item opened its own), every (outer, inner) pair runs once: the
    inner loop's cursor of a finished outer item is never carried to the next one."""
    ran: Counter[tuple[int, int]] = Counter()

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for i in run.iterate(range(4), name="outer"):
            for j in run.iterate(range(3), name="inner"):
                ran[(i, j)] += 1
                time.sleep(0.7)
            time.sleep(0.3)  # between an inner loop's end and the next outer item
        return len(ran)

    outcome = LambdaSim().run(handler, {}, timeout_s=timeout_s, settings={"min_margin_ms": 500})
    assert outcome.status == "completed" and outcome.result == 12
    assert set(ran.values()) == {1} and len(ran) == 12
    assert len(outcome.hops) > 1
