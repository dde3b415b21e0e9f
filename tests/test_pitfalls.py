"""A user's common mistakes become clear errors or correct behaviour, never silently skipped
or repeated items. Each test asserts on the stored end state and on how many times each
item ran (tier 1: the simulator on virtual time, a FileStore on real files)."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from longrun import FileStore, LongrunError, StateNotSerializable, current_run, longrun
from longrun.testing import LambdaSim, Outcome


def simulate(handler: Any, event: Any, **options: Any) -> Outcome:
    """The simulator on the handler's own store (these tests read its files)."""
    return LambdaSim(store="handler").run(handler, event, **options)


def stored(root: Path, run_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((root / run_id / "checkpoint.json").read_bytes())
    return document


# -- 1: a loop name used twice in one scope ---------------------------------------------------


def test_a_loop_name_used_twice_in_one_scope_is_an_error_at_the_second_call(
    tmp_path: Path,
) -> None:
    ran: Counter[str] = Counter()

    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        for key in run.iterate(["a", "b"], name="x"):
            ran[key] += 1
        for key in run.iterate(["c", "d"], name="x"):
            ran[key] += 1

    outcome = simulate(handler, {}, timeout_s=60, retries=0)

    assert outcome.status == "failed"
    error = stored(tmp_path, str(outcome.run_id))["error"]
    assert error["type"] == "LongrunError"
    assert "run.iterate(name='x') was already used in this scope" in error["message"]
    assert ran == Counter({"a": 1, "b": 1})  # nothing of the second loop ran, nothing twice


def test_the_same_name_under_each_item_of_an_outer_loop_is_fine(tmp_path: Path) -> None:
    ran: Counter[tuple[int, int]] = Counter()

    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        for i in run.iterate(range(3), name="outer"):
            for j in run.iterate(range(4), name="inner"):
                ran[(i, j)] += 1
                time.sleep(1)
        return sum(ran.values())

    outcome = simulate(handler, {}, timeout_s=4, retries=0)

    assert outcome.status == "completed" and outcome.result == 12
    assert set(ran.values()) == {1} and len(ran) == 12
    assert len(outcome.invocations) > 3  # it hopped in the middle of inner loops


# -- 2: duplicate keys in a keyed loop ---------------------------------------------------------


def test_a_repeated_key_is_an_error_when_met_and_no_item_runs_twice(tmp_path: Path) -> None:
    ran: Counter[int] = Counter()
    items = [{"k": "a"}, {"k": "b"}, {"k": "c"}, {"k": "b"}, {"k": "d"}]

    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        for index, _item in run.iterate(list(enumerate(items)), key=lambda pair: pair[1]["k"]):
            ran[index] += 1
            time.sleep(1)

    outcome = simulate(handler, {}, timeout_s=3, retries=0)

    document = stored(tmp_path, str(outcome.run_id))
    assert document["status"] == "failed"
    assert "the key 'b' appears again at item 3" in document["error"]["message"]
    assert set(ran.values()) == {1}  # every item that ran, ran once
    assert 3 not in ran and 4 not in ran


def test_ordered_keys_that_do_not_ascend_are_an_error(tmp_path: Path) -> None:
    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: Any, context: Any) -> None:
        for _ in current_run().iterate(["a", "c", "b"], key=str, ordered=True):
            pass

    outcome = simulate(handler, {}, timeout_s=60, retries=0)
    message = stored(tmp_path, str(outcome.run_id))["error"]["message"]
    assert "does not come after 'c'" in message and "ascend strictly" in message


# -- 3: a handler that swallows the end-of-hop signal -----------------------------------------


@pytest.mark.parametrize("catch", ["bare", "BaseException"])
def test_a_handler_that_catches_everything_still_continues_its_run(
    tmp_path: Path, catch: str
) -> None:
    ran: Counter[int] = Counter()

    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: Any, context: Any) -> str:
        run = current_run()
        try:
            for i in run.iterate(range(10)):
                ran[i] += 1
                time.sleep(1)
        except BaseException:  # what both `except:` and `except BaseException:` do
            return "swallowed"
        return "done"

    outcome = simulate(handler, {}, timeout_s=4, retries=0)

    document = stored(tmp_path, str(outcome.run_id))
    assert document["status"] == "completed"
    assert outcome.result == "done"
    assert [ran[i] for i in range(10)] == [1] * 10
    assert [h["outcome"] for h in document["hops"]].count("continued") >= 2


def test_after_a_swallowed_signal_no_new_loop_or_checkpoint_runs(tmp_path: Path) -> None:
    ran: Counter[str] = Counter()

    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: Any, context: Any) -> str:
        run = current_run()
        with contextlib.suppress(BaseException):
            run.end_hop()
        try:
            for item in run.iterate(["x"], name="later"):
                ran[item] += 1
        except BaseException:
            pass
        return "swallowed twice"

    outcome = simulate(handler, {}, timeout_s=60, retries=0, max_invocations=3)

    # Every hop ends the same way, so the run ends for lack of progress, not "completed".
    assert ran == Counter()
    assert stored(tmp_path, str(outcome.run_id))["status"] == "failed"
    assert stored(tmp_path, str(outcome.run_id))["error"]["type"] == "NoProgressError"


# -- 4: a handler that mutates its event -------------------------------------------------------


def test_every_hop_sees_the_original_event_even_if_hop_0_mutated_its_copy(
    tmp_path: Path,
) -> None:
    seen: list[Any] = []

    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: dict[str, Any], context: Any) -> int:
        run = current_run()
        seen.append(json.loads(json.dumps(event)))
        keys = event.pop("keys")  # a mistake: the event is the run's, not this hop's
        event["touched"] = True
        done = 0
        for _ in run.iterate(keys):
            done += 1
            time.sleep(1)
        return done

    outcome = simulate(handler, {"keys": list(range(8))}, timeout_s=4, retries=0)

    assert outcome.status == "completed"
    assert len(seen) > 1 and all(e == {"keys": list(range(8))} for e in seen)
    assert stored(tmp_path, str(outcome.run_id))["event"] == {"keys": list(range(8))}


# -- 5: positional iteration over a set --------------------------------------------------------


def test_positional_iteration_over_a_set_is_refused_with_a_way_out(tmp_path: Path) -> None:
    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: Any, context: Any) -> None:
        for _ in current_run().iterate({"a", "b", "c"}, name="tags"):
            pass

    outcome = simulate(handler, {}, timeout_s=60, retries=0)
    message = stored(tmp_path, str(outcome.run_id))["error"]["message"]
    assert "run.iterate(name='tags') over a set" in message
    assert "sorted(" in message and "key=" in message


def test_a_set_with_a_key_is_fine(tmp_path: Path) -> None:
    ran: Counter[str] = Counter()

    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: Any, context: Any) -> None:
        for item in current_run().iterate(frozenset("abc"), key=str):
            ran[item] += 1

    outcome = simulate(handler, {}, timeout_s=60, retries=0)
    assert outcome.status == "completed" and ran == Counter("abc")


# -- 6: run.state replaced by something that is not a dict ------------------------------------


@pytest.mark.parametrize("bad", [[1, 2], None, "text"], ids=["list", "None", "str"])
def test_state_that_is_not_a_dict_is_refused_and_the_last_checkpoint_kept(
    tmp_path: Path, bad: Any
) -> None:
    @longrun(checkpoint=FileStore(tmp_path), checkpoint_every_s=2)
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        for i in run.iterate(range(10)):
            run.state["done"] = i + 1
            if i == 5:
                run.state = bad
            time.sleep(1)

    outcome = simulate(handler, {}, timeout_s=60, retries=0)

    document = stored(tmp_path, str(outcome.run_id))
    assert document["status"] == "failed"
    assert document["error"]["type"] == "StateNotSerializable"
    assert f"run.state is a {type(bad).__name__}" in document["error"]["message"]
    assert isinstance(document["state"], dict) and document["state"]["done"] <= 6
    # The stored checkpoint still loads: a later resume starts from it.
    assert FileStore(tmp_path).load(str(outcome.run_id)) is not None


# -- 7: cyclic or very deep state and results --------------------------------------------------


def test_a_cyclic_state_is_named_at_once_not_a_hang(tmp_path: Path) -> None:
    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        loop: dict[str, Any] = {"name": "me"}
        loop["self"] = loop
        run.state["node"] = loop
        run.checkpoint()

    started = time.monotonic()
    outcome = simulate(handler, {}, timeout_s=60, retries=0)
    assert time.monotonic() - started < 30  # bounded (it used to spin until the kill)
    error = stored(tmp_path, str(outcome.run_id))["error"]
    assert error["type"] == "StateNotSerializable"
    assert "run.state['node']['self']" in error["message"] and "cycle" in error["message"]


def test_a_very_deep_state_is_state_not_serializable_not_a_recursion_error() -> None:
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]

    @longrun(checkpoint=FileStore(Path("/tmp") / f"deep-{time.time_ns()}"))
    def handler(event: Any, context: Any) -> None:
        current_run().state["deep"] = deep
        current_run().checkpoint()

    outcome = simulate(handler, {}, timeout_s=60, retries=0)
    [record] = outcome.invocations
    assert isinstance(record.error, StateNotSerializable)
    assert "nests deeper than 500 levels" in str(record.error)


@pytest.mark.parametrize("shape", ["cycle", "deep"])
def test_a_cyclic_or_deep_result_is_returned_and_stored_as_null(
    tmp_path: Path, shape: str
) -> None:
    result: Any
    if shape == "cycle":
        result = {"a": 1}
        result["me"] = result
    else:
        result = []
        for _ in range(10_000):
            result = [result]

    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: Any, context: Any) -> Any:
        return result

    outcome = simulate(handler, {}, timeout_s=60, retries=0)

    document = stored(tmp_path, str(outcome.run_id))
    assert document["status"] == "completed"
    assert document["result"] is None and "not plain JSON" in document["result_note"]
    assert outcome.invocations[-1].response is result


# -- 9: messages quote values cut short and name where they are -------------------------------


def test_an_int_too_long_for_json_is_named() -> None:
    from longrun.checkpoint import encode_document

    with pytest.raises(StateNotSerializable) as info:
        encode_document({"state": {"big": 10**5000}})
    message = str(info.value)
    assert "run.state['big']" in message and "digits" in message and len(message) < 600


def test_a_huge_run_id_from_run_id_fn_gives_a_short_message(tmp_path: Path) -> None:
    @longrun(checkpoint=FileStore(tmp_path), run_id=lambda event: "x" * 1_000_000)
    def handler(event: Any, context: Any) -> None:
        pass

    with pytest.raises(LongrunError) as info:
        handler({}, None)
    assert len(str(info.value)) < 500


# -- 8: a context whose get_remaining_time_in_millis is not usable -----------------------------


class _Context:
    aws_request_id = "req-ctx"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f"


def _with_remaining(value: Any) -> Any:
    context = _Context()
    context.get_remaining_time_in_millis = value  # type: ignore[attr-defined]
    return context


def _raises() -> int:
    raise RuntimeError("no clock here")


@pytest.mark.parametrize(
    ("remaining", "says"),
    [
        (900_000, "is a int (900000), not a method"),
        (lambda: "900000", "returned '900000' (a str), not a number of milliseconds"),
        (lambda: float("nan"), "returned nan (a float)"),
        (_raises, "raised RuntimeError('no clock here')"),
    ],
    ids=["attribute", "string", "nan", "raises"],
)
def test_an_unusable_remaining_time_is_an_error_naming_it_and_nothing_is_written(
    tmp_path: Path, remaining: Any, says: str
) -> None:
    ran: list[int] = []

    @longrun(checkpoint=FileStore(tmp_path))
    def handler(event: Any, context: Any) -> None:
        ran.append(1)

    with pytest.raises(LongrunError) as info:
        handler({}, _with_remaining(remaining))
    assert "context.get_remaining_time_in_millis of _Context" in str(info.value)
    assert says in str(info.value)
    assert ran == [] and list(tmp_path.iterdir()) == []


# -- 11: the margin's floor scales with a short function timeout -------------------------------


@pytest.mark.parametrize("timeout_s", [2, 3])
def test_short_timeouts_still_do_work_in_every_hop(tmp_path: Path, timeout_s: int) -> None:
    ran: Counter[int] = Counter()

    @longrun(checkpoint=FileStore(tmp_path), max_hops=50)
    def handler(event: Any, context: Any) -> int:
        for i in current_run().iterate(range(20)):
            ran[i] += 1
            time.sleep(0.2)
        return len(ran)

    outcome = simulate(handler, {}, timeout_s=timeout_s, retries=0, write_latency_s=0.05)

    assert outcome.status == "completed" and outcome.result == 20
    assert set(ran.values()) == {1}
    hops = stored(tmp_path, str(outcome.run_id))["hops"]
    # Each hop kept at least 60 % of its time for items (the 2 s floor left none at 2 s).
    assert min(h["items"] for h in hops[:-1]) * 0.2 >= 0.6 * timeout_s - 0.5


def test_an_explicit_floor_is_taken_as_given(tmp_path: Path) -> None:
    @longrun(checkpoint=FileStore(tmp_path), min_margin_ms=2500, max_hops=3)
    def handler(event: Any, context: Any) -> None:
        for _ in current_run().iterate(range(20)):
            time.sleep(0.2)

    outcome = simulate(handler, {}, timeout_s=2, retries=0)
    # A 2.5 s floor in a 2 s hop leaves no time for an item: no progress, it fails.
    assert stored(tmp_path, str(outcome.run_id))["error"]["type"] == "NoProgressError"


# -- 12: the simulator needs no AWS for a production store, and shows errors -------------------


def test_the_simulator_checkpoints_in_memory_whatever_the_decorator_names() -> None:
    from longrun import MemoryStore, S3Store

    ran: Counter[int] = Counter()

    @longrun(checkpoint=S3Store("my-bucket", prefix="longrun/"))  # no credentials here
    def handler(event: Any, context: Any) -> int:
        for i in current_run().iterate(range(6)):
            ran[i] += 1
            time.sleep(1)
        return 6

    outcome = LambdaSim().run(handler, {}, timeout_s=4)

    assert outcome.status == "completed" and outcome.result == 6
    assert isinstance(outcome.store, MemoryStore)
    assert outcome.store.status(str(outcome.run_id))["status"] == "completed"
    assert set(ran.values()) == {1} and len(outcome.hops) > 1


def test_summary_shows_each_error_with_its_type_and_message() -> None:
    @longrun(checkpoint="s3://my-bucket/longrun/")
    def handler(event: Any, context: Any) -> None:
        raise ValueError("the input file is missing")

    outcome = LambdaSim().run(handler, {}, timeout_s=60, retries=1, retry_delays_s=(1.0,))
    summary = outcome.summary()
    assert summary.count("ValueError: the input file is missing") == 2


def test_an_async_keyed_loop_refuses_a_repeated_key_too(tmp_path: Path) -> None:
    async def listing() -> Any:
        for key in ["a", "b", "a"]:
            yield key

    ran: list[str] = []

    @longrun(checkpoint=FileStore(tmp_path))
    async def handler(event: Any, context: Any) -> None:
        async for key in current_run().iterate(listing(), key=str):
            ran.append(key)

    outcome = simulate(handler, {}, timeout_s=60, retries=0)
    assert "the key 'a' appears again at item 2" in stored(tmp_path, str(outcome.run_id))[
        "error"
    ]["message"]
    assert ran == ["a", "b"]
