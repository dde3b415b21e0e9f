import time

from longrun import MemoryStore, current_run, longrun


@longrun(checkpoint=MemoryStore())
def handler(event, context):
    run = current_run()
    for _ in run.iterate(range(event["n"])):
        time.sleep(1)
    return "done"


def test_settings_for_one_test(longrun_sim, monkeypatch):
    event = {"n": 40}
    # --8<-- [start:settings]
    monkeypatch.setenv("LONGRUN_MAX_HOPS", "1")
    outcome = longrun_sim.run(handler, event, timeout_s=10, settings={"margin_ms": 10_000})
    # --8<-- [end:settings]
    # Each hop starts one item (10 s left is not less than the 10 s margin), then yields:
    # hop 1 is the last the budget allows.
    assert [h.items for h in outcome.hops] == [1, 1]
    assert outcome.status == "failed"
    assert outcome.error["type"] == "HopBudgetExhausted"
