"""Escalation decisions on virtual time: when a run moves to Fargate, and how it carries on."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from longrun import (
    EscalationFailed,
    Fargate,
    LongrunConfigError,
    MemoryStore,
    current_run,
    longrun,
)
from longrun.config import resolve_fargate
from longrun.testing import Faults, LambdaSim


@pytest.fixture
def longrun_sim(longrun_sim: LambdaSim) -> LambdaSim:
    """These tests read the handler's own store: the simulator uses it, not its in-memory one."""
    longrun_sim.store = "handler"
    return longrun_sim


TARGET = Fargate(cluster="jobs", task_definition="worker:3", container="worker", subnets=["s-1"])


def job(store: Any, n: int, seconds: float = 1.0, **options: Any) -> tuple[Any, Counter[int]]:
    processed: Counter[int] = Counter()

    @longrun(checkpoint=store, escalate=TARGET, **options)
    def handler(event: Any, context: Any) -> dict[str, Any]:
        run = current_run()
        for i in run.iterate(range(n)):
            time.sleep(seconds)
            processed[i] += 1
        return {"done": sum(processed.values()), "where": run.where}

    return handler, processed


def test_hop_budget_used_up_escalates_and_the_task_finishes(longrun_sim: LambdaSim) -> None:
    handler, processed = job(MemoryStore(), 100, max_hops=2)

    outcome = longrun_sim.run(handler, {}, timeout_s=10)

    assert outcome.status == "completed"
    assert outcome.result == {"done": 100, "where": "fargate"}
    assert [h.where for h in outcome.hops] == ["lambda"] * 3 + ["fargate"]
    assert processed == Counter(range(100))
    escalating = outcome.hops[2].response["longrun"]
    assert escalating["next"] == "fargate"
    assert escalating["task_arn"] == longrun_sim.tasks[0]["task_arn"]
    assert longrun_sim.tasks == [
        {"task_arn": escalating["task_arn"], "run_id": outcome.run_id, "hop": 3}
    ]
    escalated = [c for c in outcome.checkpoints if c["status"] == "escalated"]
    assert escalated[-1]["escalation"] == {
        "reason": "hop budget used up",
        "hop": 3,
        "task_arn": escalating["task_arn"],
    }
    fargate_claim = next(c for c in outcome.checkpoints if c["hop"] == 3)["claim"]
    assert fargate_claim["where"] == "fargate"
    # A leased claim: the task's heartbeat window, not the day it may run for.
    assert fargate_claim["deadline_ms"] - longrun_sim.clock.wall_ms() < 700_000


def test_step_that_never_yields_is_killed_then_dead_lettered(longrun_sim: LambdaSim) -> None:
    """An item longer than the Lambda timeout is killed on every attempt: after Lambda's
    retries the event goes to the on-failure destination (where the safety net resumes the
    run in Fargate) and the run is left `running` with an expired claim, not lost."""

    @longrun(checkpoint=MemoryStore(), escalate=TARGET, max_hops=50)
    def handler(event: Any, context: Any) -> str:
        for i in current_run().iterate(range(3)):
            time.sleep(40 if i == 1 else 1)  # item 1 can never fit a 30 s Lambda
        return "ok"

    outcome = longrun_sim.run(handler, {}, timeout_s=30)

    assert [r.outcome for r in outcome.invocations] == ["killed"] * 3
    assert len(outcome.dead_letters) == 1
    assert outcome.status == "running"
    claim = outcome.document["claim"] if outcome.document else {}
    assert claim["deadline_ms"] <= longrun_sim.clock.wall_ms()  # expired: resumable


def test_no_progress_escalates_instead_of_failing(longrun_sim: LambdaSim) -> None:
    handler, _processed = job(MemoryStore(), 5, margin_ms=60_000)

    outcome = longrun_sim.run(handler, {}, timeout_s=30)

    assert outcome.status == "completed"
    assert [h.where for h in outcome.hops] == ["lambda", "fargate"]
    assert outcome.hops[0].items == 0 and outcome.hops[1].items == 5
    assert outcome.checkpoints[-1]["escalation"]["reason"] == "no progress in a Lambda hop"


def test_spot_interruption_starts_a_replacement_task(longrun_sim: LambdaSim) -> None:
    handler, processed = job(MemoryStore(), 200, max_hops=0)

    outcome = longrun_sim.run(
        handler, {}, timeout_s=10, faults=Faults(sigterm_after_s={1: 50}), fargate_stop_s=5
    )

    assert outcome.status == "completed"
    assert [h.where for h in outcome.hops] == ["lambda", "fargate", "fargate"]
    interrupted = outcome.hops[1]
    assert interrupted.response["longrun"]["next"] == "fargate"
    assert 45 <= interrupted.items <= 55  # about 50 s of 1 s items, then the grace period
    assert interrupted.ended_s - interrupted.started_s <= 55
    assert [t["hop"] for t in longrun_sim.tasks] == [1, 2]
    assert processed == Counter(range(200))
    reasons = [c["escalation"]["reason"] for c in outcome.checkpoints if c["status"] == "escalated"]
    assert "replacement task after SIGTERM" in reasons


def test_escalation_failure_keeps_progress_and_lambda_retry_resumes(longrun_sim: LambdaSim) -> None:
    handler, processed = job(MemoryStore(), 30, max_hops=0)
    attempts: list[int] = []
    original = longrun_sim._deliver

    def deliver(delivery: Any) -> Any:
        from longrun.testing import sim as sim_module

        start_task = sim_module._SimHooks.start_task

        def failing(self: Any, settings: Any, run_id: str, hop: int, **kw: Any) -> str:
            attempts.append(hop)
            if len(attempts) == 1:
                raise EscalationFailed("ecs.run_task started no task: RESOURCE:ENI")
            return start_task(self, settings, run_id, hop, **kw)

        sim_module._SimHooks.start_task = failing  # type: ignore[method-assign]
        try:
            return original(delivery)
        finally:
            sim_module._SimHooks.start_task = start_task  # type: ignore[method-assign]

    longrun_sim._deliver = deliver  # type: ignore[method-assign]
    outcome = longrun_sim.run(handler, {}, timeout_s=10)

    failed = [c for c in outcome.checkpoints if c["status"] == "failed"]
    assert failed and failed[0]["error"]["type"] == "EscalationFailed"
    assert "RESOURCE:ENI" in failed[0]["error"]["message"]
    assert failed[0]["state"] == {} and failed[0]["cursors"]["#0"]["pos"] == 9  # progress kept
    assert outcome.status == "completed"
    assert processed == Counter(range(30))


def test_escalate_false_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGRUN_FARGATE_CLUSTER", "jobs")
    assert resolve_fargate(False) is None
    with pytest.raises(LongrunConfigError, match="LONGRUN_FARGATE_TASK_DEFINITION"):
        resolve_fargate(None)


def test_fargate_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "LONGRUN_FARGATE_CLUSTER": "jobs",
        "LONGRUN_FARGATE_TASK_DEFINITION": "worker:7",
        "LONGRUN_FARGATE_CONTAINER": "worker",
        "LONGRUN_FARGATE_SUBNETS": "subnet-a, subnet-b",
        "LONGRUN_FARGATE_SECURITY_GROUPS": "sg-1",
        "LONGRUN_FARGATE_SPOT": "yes",
        "LONGRUN_FARGATE_ASSIGN_PUBLIC_IP": "0",
    }.items():
        monkeypatch.setenv(name, value)
    settings = resolve_fargate(None)
    assert settings is not None
    assert (settings.cluster, settings.task_definition, settings.container) == (
        "jobs",
        "worker:7",
        "worker",
    )
    assert settings.subnets == ("subnet-a", "subnet-b") and settings.security_groups == ("sg-1",)
    assert settings.spot is True and settings.assign_public_ip is False
    # An explicit field beats the variable.
    explicit = resolve_fargate(Fargate(cluster="other", subnets=["subnet-z"]))
    assert (
        explicit is not None and explicit.cluster == "other" and explicit.subnets == ("subnet-z",)
    )
    monkeypatch.setenv("LONGRUN_FARGATE_SPOT", "maybe")
    with pytest.raises(LongrunConfigError, match="LONGRUN_FARGATE_SPOT='maybe'"):
        resolve_fargate(None)
    monkeypatch.setenv("LONGRUN_FARGATE_SPOT", "1")
    monkeypatch.setenv("LONGRUN_FARGATE_SUBNETS", "subnet-a,,b")
    with pytest.raises(LongrunConfigError, match="LONGRUN_FARGATE_SUBNETS"):
        resolve_fargate(None)
