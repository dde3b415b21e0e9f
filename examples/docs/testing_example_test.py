import time
from collections import Counter

from longrun import MemoryStore, current_run, longrun
from longrun.testing import Faults

processed = Counter()


@longrun(checkpoint=MemoryStore())
def handler(event, context):
    run = current_run()
    for key in run.iterate(event["keys"], key=str):
        time.sleep(1)  # one virtual second per item
        processed[key] += 1
        run.state["done"] = run.state.get("done", 0) + 1
    return {"done": run.state["done"]}


def test_job_survives_timeouts(longrun_sim):
    processed.clear()
    keys = [f"k{i}" for i in range(100)]

    outcome = longrun_sim.run(handler, {"keys": keys}, timeout_s=30)

    assert outcome.status == "completed", outcome.summary()
    assert outcome.result == {"done": 100}
    assert len(outcome.hops) >= 4
    assert processed == Counter(keys)  # every item exactly once
    assert [h.outcome for h in outcome.hops][-1] == "completed"


def test_duplicates_and_crashes_lose_nothing(longrun_sim):
    processed.clear()
    keys = [f"k{i}" for i in range(60)]

    outcome = longrun_sim.run(
        handler,
        {"keys": keys},
        timeout_s=15,
        faults=Faults(duplicate="during", crash_before_handoff={1}),
    )

    assert outcome.status == "completed"
    assert set(processed) == set(keys)
    duplicates = [r for r in outcome.invocations if r.kind == "duplicate"]
    assert duplicates and not any(r.ran_user_code for r in duplicates)


def test_hop_budget(longrun_sim, monkeypatch):
    monkeypatch.setenv("LONGRUN_MAX_HOPS", "1")
    outcome = longrun_sim.run(handler, {"keys": list(range(100))}, timeout_s=10, retries=0)

    assert outcome.status == "failed"
    assert outcome.error["type"] == "HopBudgetExhausted"
    assert len(outcome.hops) == 2


def test_margin_override(longrun_sim):
    outcome = longrun_sim.run(
        handler, {"keys": list(range(40))}, timeout_s=30, settings={"margin_ms": 10_000}
    )
    assert [h.items for h in outcome.hops] == [21, 19]


def test_disabled(longrun_sim, monkeypatch):
    monkeypatch.setenv("LONGRUN_DISABLED", "1")
    outcome = longrun_sim.run(handler, {"keys": ["a", "b"]}, timeout_s=60)

    # No checkpoint is written and nothing yields: the handler ran once, to the end.
    assert outcome.checkpoints == [] and outcome.status == "completed"
    assert outcome.result == {"done": 2} and len(outcome.invocations) == 1
