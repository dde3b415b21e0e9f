"""X-Ray subsegments from real hop processes: the emulator's functions run with active
tracing (sampled trace headers, ``AWS_XRAY_DAEMON_ADDRESS`` set to its own UDP daemon), and
what the X-Ray SDK streams from them is asserted subsegment by subsegment."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from longrun.testing.emulator import LocalLambda

APP = f"{Path(__file__).parent / 'observed_app' / 'app.py'}:handler"


def longrun_subsegments(docs: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d.get("name", "").startswith("## longrun ")
        and d.get("annotations", {}).get("run_id") == run_id
    ]


def test_every_hop_of_a_run_traces_its_loads_saves_and_hand_offs(
    longrun_local: LocalLambda,
) -> None:
    fn = longrun_local.deploy(APP, name="traced", timeout_s=1.6, escalate=False, tracing=True)
    longrun_local.invoke(fn, {"job": "t-1", "items": 24, "work_s": 0.1})
    report = longrun_local.wait(timeout=90)
    hops = [r for r in report.invocations if r.run_id == "t-1"]
    assert len(hops) >= 3 and hops[-1].outcome == "completed"
    ours = longrun_subsegments(longrun_local.traces(), "t-1")
    names = Counter(d["name"] for d in ours)
    continuations = len(hops) - 1
    assert names["## longrun hand-off"] == continuations
    assert names["## longrun checkpoint load"] == continuations  # each later hop loads once
    saves = [d for d in ours if d["name"] == "## longrun checkpoint save"]
    writes = Counter(d["annotations"]["write"] for d in saves)
    assert writes["claim"] == len(hops) and writes["complete"] == 1
    assert writes["continue"] == continuations
    for doc in ours:
        assert doc["type"] == "subsegment" and doc["end_time"] >= doc["start_time"]
        assert doc["trace_id"].startswith("1-") and "fault" not in doc
    # Each hop's subsegments sit in that invocation's own trace.
    by_trace = Counter(d["trace_id"] for d in ours)
    assert len(by_trace) == len(hops)
    handed = sorted(d["annotations"]["hop"] for d in ours if d["name"] == "## longrun hand-off")
    assert handed == list(range(1, len(hops)))


def test_tracing_disabled_by_powertools_switch_sends_nothing(
    longrun_local: LocalLambda,
) -> None:
    fn = longrun_local.deploy(
        APP,
        name="untraced",
        timeout_s=1.6,
        escalate=False,
        tracing=True,
        env={"POWERTOOLS_TRACE_DISABLED": "true"},
    )
    longrun_local.invoke(fn, {"job": "t-2", "items": 12, "work_s": 0.1})
    report = longrun_local.wait(timeout=90)
    assert [r for r in report.invocations if r.run_id == "t-2"][-1].outcome == "completed"
    assert longrun_subsegments(longrun_local.traces(), "t-2") == []


def test_an_escalation_is_traced_in_the_hop_that_escalates(longrun_local: LocalLambda) -> None:
    fn = longrun_local.deploy(
        APP, name="escalating", timeout_s=1.6, max_hops=1, escalate=True, tracing=True
    )
    longrun_local.invoke(fn, {"job": "t-3", "items": 30, "work_s": 0.1})
    report = longrun_local.wait(timeout=120)
    records = [r for r in report.invocations if r.run_id == "t-3"]
    assert records[-1].where == "fargate" and records[-1].outcome == "completed"
    ours = longrun_subsegments(longrun_local.traces(), "t-3")
    [escalation] = [d for d in ours if d["name"] == "## longrun escalation"]
    assert escalation["annotations"]["hop"] == 2  # the task runs hop 2, after 2 Lambda hops
    # The task is not in Lambda: its own loads and saves are not traced by longrun.
    assert {d["annotations"]["hop"] for d in ours} == {0, 1, 2}
