"""The decorator itself: signatures, stacking, timing, cold start, the pytest plugin."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time
from typing import Any

import pytest

from longrun import LongrunConfigError, MemoryStore, current_run, longrun
from longrun.testing import FakeContext, LambdaSim, VirtualClock
from longrun.timing import HEADROOM


@pytest.fixture
def longrun_sim(longrun_sim: LambdaSim) -> LambdaSim:
    """These tests read the handler's own store: the simulator uses it, not its in-memory one."""
    longrun_sim.store = "handler"
    return longrun_sim



def test_signature_name_and_doc_are_preserved() -> None:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        """Original docstring."""
        return event

    async def ahandler(event: dict[str, Any], context: Any) -> None:
        """Async docstring."""

    decorated = longrun(checkpoint=MemoryStore())(handler)
    adecorated = longrun(checkpoint=MemoryStore())(ahandler)

    assert decorated.__name__ == "handler" and decorated.__doc__ == "Original docstring."
    assert inspect.signature(decorated) == inspect.signature(handler)
    assert inspect.iscoroutinefunction(adecorated) and not inspect.iscoroutinefunction(decorated)
    assert inspect.signature(adecorated) == inspect.signature(ahandler)


def test_bare_decorator_uses_environment_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("LONGRUN_CHECKPOINT_URI", f"file://{tmp_path}/runs")

    @longrun
    def handler(event: Any, context: Any) -> str:
        current_run().state["x"] = 1
        return current_run().id

    run_id = handler({}, FakeContext(VirtualClock(), timeout_s=60))
    stored = json.loads((tmp_path / "runs" / run_id / "checkpoint.json").read_text())
    assert stored["status"] == "completed" and stored["state"] == {"x": 1}


def test_no_store_is_a_clear_error_at_decoration() -> None:
    with pytest.raises(LongrunConfigError, match="LONGRUN_CHECKPOINT_URI"):

        @longrun
        def handler(event: Any, context: Any) -> None: ...


def test_run_id_must_be_callable() -> None:
    with pytest.raises(LongrunConfigError, match="run_id='job-1'"):
        longrun(checkpoint=MemoryStore(), run_id="job-1")(lambda e, c: None)  # type: ignore[arg-type]


def test_stacks_with_powertools_logger(
    longrun_sim: LambdaSim, capsys: pytest.CaptureFixture[str]
) -> None:
    from aws_lambda_powertools import Logger

    logger = Logger(service="etl")

    @logger.inject_lambda_context
    @longrun(checkpoint=MemoryStore())
    def outer(event: Any, context: Any) -> int:
        run = current_run()
        for _ in run.iterate(range(12)):
            time.sleep(1)
        logger.info("hop done", extra={"hop": run.hop})
        return run.hop

    @longrun(checkpoint=MemoryStore())
    @logger.inject_lambda_context
    def inner(event: Any, context: Any) -> int:
        for _ in current_run().iterate(range(12)):
            time.sleep(1)
        logger.info("inner hop done")
        return current_run().hop

    for handler in (outer, inner):
        outcome = longrun_sim.run(handler, {}, timeout_s=5)
        assert outcome.status == "completed"
        assert outcome.result == len(outcome.hops) - 1 >= 2

    records = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert any(r.get("message") == "hop done" and r.get("function_request_id") for r in records)


def test_adaptive_margin_follows_longest_item(longrun_sim: LambdaSim) -> None:
    margins: list[int] = []

    @longrun(checkpoint=MemoryStore(), min_margin_ms=100)
    def handler(event: Any, context: Any) -> None:
        run = current_run()
        for i in run.iterate(range(40)):
            time.sleep(8 if i == 5 else 1)
            margins.append(run.margin_ms())

    outcome = longrun_sim.run(handler, {}, timeout_s=60, write_latency_s=0.2, handoff_latency_s=0.1)

    assert outcome.status == "completed"
    assert all(r.outcome != "killed" for r in outcome.invocations)
    # (A margin read during item i knows items before it.) Before any item: the measured
    # claim write and the guessed hand-off; then 1 s * headroom + costs; after the 8 s item,
    # 8 s * headroom + costs.
    assert margins[0] == pytest.approx(200 + 250, abs=5)
    assert margins[1] == pytest.approx(1000 * HEADROOM + 200 + 250, abs=5)
    assert margins[6] == pytest.approx(8000 * HEADROOM + 200 + 250, abs=5)
    # The next hop starts from what the previous one measured (carried in the checkpoint).
    assert outcome.checkpoints[-1]["timing"]["longest_item_ms"] == 8000


def test_fixed_margin_from_environment(
    longrun_sim: LambdaSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LONGRUN_MARGIN_MS", "10000")

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> None:
        for _ in current_run().iterate(range(40)):
            time.sleep(1)

    outcome = longrun_sim.run(handler, {}, timeout_s=30)
    assert [h.items for h in outcome.hops] == [21, 19]  # yields once < 10 s remain


def test_remaining_zero_is_a_real_value() -> None:
    clock = VirtualClock()
    seen: list[tuple[int, bool]] = []

    @longrun(checkpoint=MemoryStore(), margin_ms=0)
    def handler(event: Any, context: Any) -> None:
        clock.now = context.deadline_s  # exactly at the deadline: 0 ms left
        seen.append((current_run().remaining_ms(), current_run().should_yield()))

    handler({}, FakeContext(clock, timeout_s=10))
    assert seen == [(0, False)]  # 0 is not "unknown": with margin 0, 0 < 0 is false


def test_should_yield_in_a_manual_loop(longrun_sim: LambdaSim) -> None:
    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> int:
        run = current_run()
        while run.state.get("page", 0) < 30:
            if run.should_yield():
                run.end_hop()
            time.sleep(2)
            run.state["page"] = run.state.get("page", 0) + 1
        return int(run.state["page"])

    outcome = longrun_sim.run(handler, {}, timeout_s=20)

    assert outcome.status == "completed" and outcome.result == 30
    assert all(r.outcome != "killed" for r in outcome.invocations)
    assert len(outcome.hops) >= 4


def test_import_does_not_import_boto3() -> None:
    code = (
        "import sys, longrun, longrun.stores, longrun.testing.pytest_plugin;"
        "from longrun import S3Store, FileStore, longrun as d;"
        "S3Store('some-bucket');"
        "print(json.dumps(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('boto3', 'botocore'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json;" + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def test_plugin_fixture_in_a_real_pytest_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time
        from longrun import MemoryStore, current_run, longrun

        @longrun(checkpoint=MemoryStore())
        def handler(event, context):
            for _ in current_run().iterate(range(event["n"])):
                time.sleep(1)
            return "ok"

        def test_hops(longrun_sim):
            outcome = longrun_sim.run(handler, {"n": 30}, timeout_s=10)
            assert outcome.status == "completed" and outcome.result == "ok"
            assert len(outcome.hops) == 4
            assert longrun_sim.clock.now == 30

        def test_clock_advance(longrun_sim):
            longrun_sim.clock.advance(5)
            assert longrun_sim.clock.now == 5
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
