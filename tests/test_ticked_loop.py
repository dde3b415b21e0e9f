"""``run.iterate`` on the real clock: a ticker thread raises the loop's ``due`` flag every
``CHECK_INTERVAL_S`` and the clock is read only then (the simulator's virtual clock takes the
path that reads it after every item, so these tests use real time).

The outcomes asserted are those a broken ticker would change: a hop that runs into slow items
still returns before its deadline, ``checkpoint_every_s`` still writes mid-loop, keyed loops
resume after the right item, and no loop stays registered with the ticker.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from realtime import RealTimeContext

from longrun import MemoryStore, current_run, longrun, ports
from longrun.testing import RecordingTransport
from longrun.timing import TICKER

ARN = "arn:aws:lambda:us-east-1:123456789012:function:ticked"
FAST = 20_000
SLOW = 14
SLOW_S = 0.15
HOP_S = 2.0


def drive(
    handler: Any, transport: RecordingTransport, event: dict[str, Any], run_id: str
) -> list[int]:
    """Runs every hop of one run on real time; returns the ms each hop had left at its end."""
    left: list[int] = []
    context = RealTimeContext(HOP_S, arn=ARN)
    result = handler(event, context)
    left.append(context.get_remaining_time_in_millis())
    while isinstance(result, dict) and "longrun" in result:
        context = RealTimeContext(HOP_S, arn=ARN)
        result = handler(transport.next(run_id), context)
        left.append(context.get_remaining_time_in_millis())
    return left


def test_a_turn_from_fast_to_slow_items_ends_each_hop_before_its_deadline() -> None:
    # Three runs at once in one process (one ticker for all): 20,000 instant items, then
    # items of 150 ms. A loop that is not ticked never looks at the clock after its first
    # item and would run all 2.1 s of slow items in a 2 s hop.
    store, transport = MemoryStore(), RecordingTransport()
    counts: dict[str, list[int]] = {}

    @longrun(checkpoint=store, run_id=lambda event: event["id"], checkpoint_every_s=3600)
    def handler(event: dict[str, Any], context: Any) -> int:
        run = current_run()
        mine = counts[run.id]
        for i in run.iterate(range(FAST + SLOW)):
            if i >= FAST:
                time.sleep(SLOW_S)
            mine[i] += 1
        return run.hop

    ids = [f"turn-{k}" for k in range(3)]
    for run_id in ids:
        counts[run_id] = [0] * (FAST + SLOW)
    left: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def worker(run_id: str) -> None:
        try:
            with ports.installed(transport=transport):
                left[run_id] = drive(handler, transport, {"id": run_id}, run_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(run_id,)) for run_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    for run_id in ids:
        assert counts[run_id] == [1] * (FAST + SLOW), run_id  # each item once
        assert len(left[run_id]) >= 2, left  # the slow items did not fit in one hop
        assert min(left[run_id]) > 0, left  # no hop ran into its deadline
        document = store.status(run_id)
        assert document["status"] == "completed"
        # The slow items were measured (the stretch since the last check bounds each item).
        assert document["timing"]["longest_item_ms"] >= SLOW_S * 1000
    assert TICKER.registered() == 0


def test_checkpoint_every_s_writes_in_the_middle_of_a_ticked_loop() -> None:
    store = MemoryStore()
    stored_positions: list[int] = []

    @longrun(checkpoint=store, run_id=lambda event: "every", checkpoint_every_s=0.05)
    def handler(event: Any, context: Any) -> str:
        run = current_run()
        for i in run.iterate(range(60)):
            time.sleep(0.005)
            if i % 10 == 9:
                cursor = store.status("every")["cursors"].get("#0", {"pos": 0})
                stored_positions.append(cursor["pos"])
        return "done"

    assert handler({}, RealTimeContext(60, arn=ARN)) == "done"
    # What the store held while the loop ran: positions written by timed checkpoints.
    assert stored_positions[-1] > 0, stored_positions
    assert stored_positions == sorted(stored_positions)
    assert TICKER.registered() == 0


def test_keyed_ticked_loop_resumes_after_the_last_finished_item() -> None:
    store, transport = MemoryStore(), RecordingTransport()
    items = [{"k": f"key-{i:03d}"} for i in range(40)]
    done: list[str] = []
    saved_keys: list[Any] = []

    @longrun(checkpoint=store, run_id=lambda event: "keyed", checkpoint_every_s=3600)
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        saved_keys.append(run.last_key("keyed"))
        for item in run.iterate(items, key=lambda item: item["k"], name="keyed"):
            if (run.hop, item["k"]) in {(0, "key-013"), (1, "key-029")}:
                run.end_hop()  # item 13 (then 29) is in hand, not finished
            done.append(item["k"])
        if run.hop == 3:
            return len(done)
        run.end_hop()  # the loop is done: its saved key is the last item's

    with ports.installed(transport=transport):
        left = drive(handler, transport, {}, "keyed")
    assert done == [item["k"] for item in items]  # each once, in order
    assert len(left) == 4
    # The key each hop found saved: the last finished item's.
    assert saved_keys == [None, "key-012", "key-028", "key-039"]
    assert store.status("keyed")["cursors"]["keyed"] == {
        "pos": 40,
        "done": True,
        "key": "key-039",
        "total": 40,
    }
    assert TICKER.registered() == 0


def test_a_loop_ended_by_an_exception_leaves_the_ticker() -> None:
    @longrun(checkpoint=MemoryStore(), run_id=lambda event: "boom")
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        for i in run.iterate(range(10)):
            if i == 3:
                raise ValueError("item 3")

    try:
        handler({}, RealTimeContext(60, arn=ARN))
    except ValueError:
        pass
    else:
        raise AssertionError("the handler's error should propagate")
    assert TICKER.registered() == 0


# Over a list, tuple, range or str the ticked loop reads its position from the iterator
# (what is left of the sequence) instead of counting items: these pin that position to the
# counting loop's, through checkpoints in the middle of an item, hops ended with an item in
# hand, a list that grows as it is walked, and a loop left early.
SEQUENCES = {
    "list": lambda: list(range(100, 160)),
    "tuple": lambda: tuple(range(60)),
    "range": lambda: range(7, 7 + 3 * 60, 3),
    "str": lambda: "".join(chr(48 + i) for i in range(60)),
    "generator": lambda: (i for i in range(60)),  # the counting loop, for comparison
}


@pytest.mark.parametrize("kind", sorted(SEQUENCES))
def test_a_ticked_loop_over_a_sequence_records_the_item_in_hand(kind: str) -> None:
    store, transport = MemoryStore(), RecordingTransport()
    run_id = f"seq-{kind}"
    index_of = {item: i for i, item in enumerate(SEQUENCES[kind]())}
    done: list[int] = []
    mid_item: list[tuple[int, int]] = []  # (index in hand, pos stored by run.checkpoint())

    @longrun(checkpoint=store, run_id=lambda event: run_id, checkpoint_every_s=3600)
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for item in run.iterate(SEQUENCES[kind]()):
            i = index_of[item]
            if (run.hop, i) in {(0, 5), (1, 30), (2, 59)}:
                run.checkpoint()
                mid_item.append((i, store.status(run_id)["cursors"]["#0"]["pos"]))
            if (run.hop, i) in {(0, 13), (1, 41)}:
                run.end_hop()  # item 13 (then 41) is in hand, not finished
            done.append(i)
        return run.items_done()

    with ports.installed(transport=transport):
        left = drive(handler, transport, {}, run_id)
    assert len(left) == 3
    assert done == list(range(60))  # each item once, in order, across the hops
    assert mid_item == [(5, 5), (30, 30), (59, 59)]
    cursor = store.status(run_id)["cursors"]["#0"]
    assert (cursor["pos"], cursor["done"]) == (60, True)
    assert store.status(run_id)["result"] == 60 - 41  # the last hop's items
    hops = store.status(run_id)["hops"]
    assert [h["items"] for h in hops] == [13, 41 - 13, 60 - 41]
    assert TICKER.registered() == 0


def test_a_list_that_grows_while_it_is_walked_is_walked_to_its_end() -> None:
    store = MemoryStore()
    items = list(range(10))
    seen: list[int] = []
    stored: list[int] = []

    @longrun(checkpoint=store, run_id=lambda event: "grows", checkpoint_every_s=3600)
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for item in run.iterate(items):
            if item < 5:
                items.append(100 + item)
            if item == 102:  # the 13th item
                run.checkpoint()
                stored.append(store.status("grows")["cursors"]["#0"]["pos"])
            seen.append(item)
        return run.items_done()

    assert handler({}, RealTimeContext(60, arn=ARN)) == 15
    assert seen == [*range(10), *range(100, 105)]
    assert stored == [12]
    assert store.status("grows")["cursors"]["#0"]["pos"] == 15


@pytest.mark.parametrize("kind", ["list", "generator"])
def test_a_loop_left_early_counts_the_items_finished_before(kind: str) -> None:
    store = MemoryStore()
    run_id = f"early-{kind}"

    @longrun(checkpoint=store, run_id=lambda event: run_id, checkpoint_every_s=3600)
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for i in run.iterate(SEQUENCES[kind]()):
            if i in (9, 109):
                break  # (item 9's body ran, but the loop never asked for the next)
        return run.items_done()

    assert handler({}, RealTimeContext(60, arn=ARN)) == 9


@pytest.mark.parametrize("kind", ["list", "generator"])
def test_an_item_that_raises_is_not_counted_as_finished(kind: str) -> None:
    @longrun(checkpoint=MemoryStore(), run_id=lambda event: f"raises-{kind}")
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        try:
            for i in run.iterate(SEQUENCES[kind]()):
                if i in (3, 103):
                    raise ValueError("item 3")
        except ValueError:
            pass
        return run.items_done()

    assert handler({}, RealTimeContext(60, arn=ARN)) == 3  # items 0-2
    assert TICKER.registered() == 0


def test_a_list_that_shrinks_below_the_position_keeps_the_position() -> None:
    # A work list emptied in the middle of an item: the position stored is still that item's
    # (the list iterator's own index), as the counting loop's would be, never below it.
    store = MemoryStore()
    items = list(range(10))
    stored: list[int] = []

    @longrun(checkpoint=store, run_id=lambda event: "shrinks", checkpoint_every_s=3600)
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for item in run.iterate(items):
            if item == 5:
                items.clear()
                run.checkpoint()
                stored.append(store.status("shrinks")["cursors"]["#0"]["pos"])
        return run.items_done()

    # Items 0-5 were taken. Once the list ran out, its iterator no longer tells how far it
    # got: the count is no less than the position the checkpoint read (6 taken then).
    assert handler({}, RealTimeContext(60, arn=ARN)) == 6
    assert stored == [5]
