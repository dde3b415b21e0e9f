"""FileStore fencing between threads of one process.

``fcntl.lockf`` locks belong to the process, not to a file descriptor or a thread: two threads
of one process both "hold" the lock at once, and closing any descriptor of the file drops the
process's lock. A FileStore used from two threads (two concurrent deliveries handled by one
process, a Fargate heartbeat beside the hop) must still let exactly one conditional write win.
Assertions read what is on disk.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from longrun import CheckpointConflict, ClaimBusy, FileStore, current_run, longrun
from longrun.checkpoint import FORMAT
from longrun.testing import FakeContext, VirtualClock

NAME = "checkpoint.json"
JOIN_S = 30


def _doc(run_id: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "seq": 0,
        "run_id": run_id,
        "status": "running",
        "hop": 0,
        "created_ms": 0,
        "updated_ms": 0,
        "claim": None,
        "event": {},
        "state": {},
        "cursors": {},
        "hops": [],
        "result": None,
        "error": None,
        "next": None,
    }


def _in_threads(count: int, target: Any) -> list[tuple[str, Any]]:
    """Run ``target(i)`` in ``count`` threads released together by a barrier.

    Returns, per thread, ``("ok", value)`` or ``("raised", exception)``.
    """
    barrier = threading.Barrier(count)
    results: list[tuple[str, Any]] = [("missing", None)] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = ("ok", target(i))
        except BaseException as exc:
            results[i] = ("raised", exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_S)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    return results


# -- (a) two replaces with the same token --------------------------------------------------------


def test_two_threads_replacing_the_same_version_exactly_one_wins(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    store.create(_doc("run-1"))
    path = tmp_path / "store" / "run-1" / NAME
    trials = 200
    bad: list[str] = []

    for trial in range(trials):
        loads = [store.load("run-1"), store.load("run-1")]
        assert loads[0] is not None and loads[1] is not None
        assert loads[0].token == loads[1].token

        def replace(i: int, loads: list[Any] = loads, trial: int = trial) -> None:
            document = loads[i].document
            document["state"] = {"writer": i, "trial": trial}
            store.replace(document, loads[i].token)

        results = _in_threads(2, replace)
        winners = [i for i, (how, _) in enumerate(results) if how == "ok"]
        losers = [v for how, v in results if how == "raised"]
        stored = json.loads(path.read_bytes())
        if len(winners) != 1 or not all(type(e) is CheckpointConflict for e in losers):
            bad.append(f"trial {trial}: winners {winners}, errors {losers!r}")
        elif stored["state"] != {"writer": winners[0], "trial": trial}:
            bad.append(f"trial {trial}: writer {winners[0]} won but disk holds {stored['state']}")

    assert not bad, f"{len(bad)} of {trials} trials broke the fence:\n" + "\n".join(bad[:10])
    # Every trial advanced the stored version by exactly one write.
    assert json.loads(path.read_bytes())["seq"] == 1 + trials


# -- (b) one continuation envelope delivered twice at once ---------------------------------------


class _CapturingLambda:
    """Stands in for the Lambda client of hop 0's hand-off: keeps the envelope to deliver."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["InvocationType"] == "Event"
        self.payloads.append(kwargs["Payload"])
        return {"StatusCode": 202}


ITEMS = 8
HOP0_ITEMS = 3


@pytest.mark.parametrize("request_ids", ["same", "new"])
def test_one_envelope_delivered_twice_at_once_runs_its_hop_once(
    tmp_path: Path, request_ids: str
) -> None:
    """Lambda may deliver an event twice; two deliveries can land in two threads of one
    process (an emulator, a test, a custom runtime). One claims hop 1; the other runs no item."""
    trials = 50
    bad: list[str] = []
    for trial in range(trials):
        problem = _deliver_twice(tmp_path / f"trial-{trial}", request_ids)
        if problem:
            bad.append(f"trial {trial}: {problem}")
    assert not bad, f"{len(bad)} of {trials} trials ran a hop twice:\n" + "\n".join(bad[:10])


def _deliver_twice(root: Path, request_ids: str) -> str | None:
    """Hop 0 in this thread, then its envelope to two threads at once; a problem or None."""
    store = FileStore(root)
    processed: Counter[int] = Counter()
    entries: list[int] = []
    lock = threading.Lock()
    transport = _CapturingLambda()

    @longrun(checkpoint=store, lambda_client=transport, checkpoint_every_s=3600)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        run = current_run()
        with lock:
            entries.append(run.hop)
        for i in run.iterate(range(event["n"])):
            if run.hop == 0 and run.items_done() == HOP0_ITEMS:
                run.end_hop()
            with lock:
                processed[i] += 1
            run.state["done"] = run.state.get("done", 0) + 1
        return {"done": run.state["done"]}

    clock = VirtualClock()
    first = handler({"n": ITEMS}, FakeContext(clock, timeout_s=60))
    assert first["longrun"]["status"] == "continued", first
    assert len(transport.payloads) == 1
    envelope = json.loads(transport.payloads[0])
    run_id = first["longrun"]["run_id"]

    shared_id = "dup-request"
    contexts = [
        FakeContext(clock, timeout_s=60, request_id=shared_id if request_ids == "same" else None)
        for _ in range(2)
    ]
    results = _in_threads(2, lambda i: handler(json.loads(json.dumps(envelope)), contexts[i]))

    stored = json.loads((root / run_id / NAME).read_bytes())
    finished = [v for how, v in results if how == "ok" and v == {"done": ITEMS}]
    unexpected = [
        v
        for how, v in results
        if how == "raised" and not (request_ids == "same" and isinstance(v, ClaimBusy))
    ]
    problems = []
    if processed != Counter(range(ITEMS)):
        twice = sorted(i for i, n in processed.items() if n > 1)
        problems.append(f"items run twice: {twice}")
    if entries != [0, 1]:
        problems.append(f"handler entered at hops {entries}")
    if stored["status"] != "completed" or stored["result"] != {"done": ITEMS}:
        problems.append(f"stored status {stored['status']} result {stored['result']}")
    chain = [(h["hop"], h["attempt"], h["outcome"]) for h in stored["hops"]]
    if chain != [(0, 1, "continued"), (1, 1, "completed")]:
        problems.append(f"stored hops {chain}")
    if len(finished) != 1:
        problems.append(f"{len(finished)} deliveries returned the result")
    if unexpected:
        problems.append(f"raised {unexpected!r}")
    if problems:
        return "; ".join(problems) + f" (responses {results!r})"
    return None
