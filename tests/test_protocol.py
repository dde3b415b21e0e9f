"""The run protocol's decisions, as pure functions of a checkpoint (tier 1, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from longrun import MemoryStore
from longrun.protocol import (
    Act,
    Checkpoint,
    Claim,
    ErrorRecord,
    Escalation,
    HopEntry,
    Status,
    claim_live,
    decide_claim,
    decide_new_run,
    decide_next,
    is_own_write,
    may_cancel,
    why_not_resumable,
)

NOW = 1_800_000_000_000
ME, OTHER = "req-me", "req-other"


def checkpoint(status: Status = Status.RUNNING, hop: int = 2, **changes: Any) -> Checkpoint:
    base = Checkpoint(
        run_id="run-1",
        status=status,
        hop=hop,
        created_ms=NOW - 60_000,
        updated_ms=NOW - 1_000,
        event={"n": 1},
        state={},
        cursors={},
        hops=(HopEntry(hop, 1, "lambda", ME, started_ms=NOW - 30_000),),
        origin_request_id="req-0",
    )
    return base.replace(**changes)


def live(request_id: str = ME) -> Claim:
    return Claim(request_id, NOW + 10_000, "lambda")


def expired(request_id: str = ME) -> Claim:
    return Claim(request_id, NOW - 1, "lambda")


def decide(cp: Checkpoint, hop: int, request_id: str = ME, where: str = "lambda") -> Act:
    return decide_claim(cp, hop, request_id=request_id, where=where, now_ms=NOW).action


@pytest.mark.parametrize(
    ("cp", "hop", "request_id", "where", "act"),
    [
        # The next hop of a handed-off run claims it.
        (checkpoint(Status.CONTINUED), 3, OTHER, "lambda", Act.CLAIM),
        (checkpoint(Status.WAITING), 3, OTHER, "lambda", Act.CLAIM),
        (checkpoint(Status.ESCALATED), 3, OTHER, "fargate", Act.CLAIM),
        (checkpoint(Status.ESCALATED), 3, OTHER, "lambda", Act.DUPLICATE),  # not for Lambda
        (checkpoint(Status.RUNNING, claim=live()), 3, OTHER, "lambda", Act.DUPLICATE),
        # A live claim: refused; its own request id raises ClaimBusy (the lease decides).
        (checkpoint(claim=live(OTHER)), 2, ME, "lambda", Act.DUPLICATE),
        (checkpoint(claim=live(ME)), 2, ME, "lambda", Act.BUSY),
        (checkpoint(claim=Claim(ME, None, "fargate")), 2, OTHER, "fargate", Act.DUPLICATE),
        # An expired claim: taken over, by anyone.
        (checkpoint(claim=expired(OTHER)), 2, ME, "lambda", Act.CLAIM),
        (checkpoint(claim=None), 2, ME, "lambda", Act.CLAIM),
        # Retries of the hop that handed off or failed.
        (checkpoint(Status.CONTINUED), 2, ME, "lambda", Act.RESEND),
        (checkpoint(Status.CONTINUED), 2, OTHER, "lambda", Act.DUPLICATE),
        (checkpoint(Status.ESCALATED), 2, ME, "lambda", Act.RESTART_TASK),
        (checkpoint(Status.FAILED, error=ErrorRecord("ValueError", "x")), 2, ME, "lambda",
         Act.CLAIM),
        (checkpoint(Status.FAILED, error=ErrorRecord("NoProgressError", "x", terminal=True)),
         2, ME, "lambda", Act.TERMINAL),
        (checkpoint(Status.FAILED, error=ErrorRecord("ValueError", "x")), 2, OTHER, "lambda",
         Act.DUPLICATE),
        # Stale, out of order, settled.
        (checkpoint(Status.CONTINUED), 1, ME, "lambda", Act.DUPLICATE),
        (checkpoint(Status.CONTINUED), 5, ME, "lambda", Act.BAD_HOP),
        (checkpoint(Status.COMPLETED), 2, ME, "lambda", Act.DUPLICATE),
        (checkpoint(Status.COMPLETED), 3, ME, "lambda", Act.DUPLICATE),
        (checkpoint(Status.CANCELLED), 3, ME, "lambda", Act.CANCELLED),
        (checkpoint(Status.CANCELLED), 2, ME, "lambda", Act.CANCELLED),
    ],
)  # fmt: skip
def test_decide_claim(cp: Checkpoint, hop: int, request_id: str, where: str, act: Act) -> None:
    assert decide(cp, hop, request_id, where) is act


def test_a_takeover_says_so_and_names_the_dead_holder() -> None:
    decision = decide_claim(
        checkpoint(claim=expired(OTHER)), 2, request_id=ME, where="lambda", now_ms=NOW
    )
    assert decision.takeover and OTHER in decision.reason


def test_claim_live_at_the_boundary() -> None:
    claim = Claim(ME, NOW, "lambda")
    assert claim_live(claim, NOW - 1)
    assert not claim_live(claim, NOW)  # the deadline itself has passed
    assert claim_live(Claim(ME, None, "local"), NOW)  # no deadline: live until released
    assert not claim_live(None, NOW)


def test_decide_new_run() -> None:
    assert decide_new_run(checkpoint(), "req-0") is Act.CLAIM  # Lambda's retry of hop 0
    assert decide_new_run(checkpoint(), "req-9") is Act.DUPLICATE


def next_step(**overrides: Any) -> tuple[Act, str | None]:
    arguments: dict[str, Any] = {
        "where": "lambda",
        "next_hop": 3,
        "max_hops": 10,
        "progress": True,
        "past_run_deadline": False,
        "can_escalate": False,
        "can_reinvoke": True,
    }
    arguments.update(overrides)
    step = decide_next(**arguments)
    return step.action, step.error


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, (Act.CONTINUE, None)),
        ({"past_run_deadline": True, "can_escalate": True}, (Act.FAIL, "RunTimeExceeded")),
        ({"progress": False}, (Act.FAIL, "NoProgressError")),
        ({"progress": False, "can_escalate": True}, (Act.ESCALATE, None)),
        ({"next_hop": 11}, (Act.FAIL, "HopBudgetExhausted")),
        ({"next_hop": 11, "can_escalate": True}, (Act.ESCALATE, None)),
        ({"next_hop": 10}, (Act.CONTINUE, None)),  # hops 0..max_hops may run
        ({"can_reinvoke": False}, (Act.FAIL, "HandoffFailed")),
        ({"where": "fargate", "can_escalate": True}, (Act.ESCALATE, None)),
        ({"where": "fargate", "progress": False, "can_escalate": True},
         (Act.FAIL, "NoProgressError")),
        ({"where": "fargate", "progress": False, "stopping": True, "can_escalate": True},
         (Act.ESCALATE, None)),
        ({"where": "fargate"}, (Act.FAIL, "EscalationFailed")),
        ({"where": "fargate", "next_hop": 99, "can_escalate": True}, (Act.ESCALATE, None)),
    ],
)  # fmt: skip
def test_decide_next(overrides: dict[str, Any], expected: tuple[Act, str | None]) -> None:
    assert next_step(**overrides) == expected


@pytest.mark.parametrize(
    ("cp", "why"),
    [
        (checkpoint(claim=live(OTHER)), "is running under request req-other"),
        (checkpoint(claim=Claim(ME, None, "fargate")), "is running under request req-me"),
        (checkpoint(Status.COMPLETED), "the run is completed"),
        (checkpoint(Status.CANCELLED), "the run is cancelled"),
        (checkpoint(Status.ESCALATED, escalation=Escalation("x", 3, "arn:task/1")),
         "already escalated to arn:task/1"),
        (checkpoint(Status.FAILED, error=ErrorRecord("RunTimeExceeded", "x", True)),
         "raise max_run_seconds"),
        (checkpoint(claim=expired()), None),
        (checkpoint(Status.FAILED, error=ErrorRecord("HopBudgetExhausted", "x", True)), None),
        (checkpoint(Status.CONTINUED), None),
        (checkpoint(Status.ESCALATED, escalation=Escalation("x", 3)), None),
    ],
)  # fmt: skip
def test_why_not_resumable(cp: Checkpoint, why: str | None) -> None:
    found = why_not_resumable(cp, NOW)
    assert (found is None) if why is None else (found is not None and why in found)


def test_may_cancel_only_unsettled_runs() -> None:
    assert [s.value for s in Status if may_cancel(checkpoint(s))] == [
        "running",
        "continued",
        "escalated",
        "waiting",
        "failed",
    ]


def test_every_write_stores_a_fresh_write_id_that_recognises_only_itself() -> None:
    store = MemoryStore()
    first = store.create(checkpoint())
    second = store.replace(first.checkpoint, first.token)
    ids = [first.checkpoint.write_id, second.checkpoint.write_id]
    assert all(ids) and ids[0] != ids[1]
    stored = store.load("run-1")
    assert stored is not None
    assert is_own_write(stored.checkpoint, str(ids[1]))
    assert not is_own_write(stored.checkpoint, str(ids[0]))
    assert not is_own_write(None, str(ids[1]))


def test_a_stopped_task_frees_its_own_claim_and_escalation_only() -> None:
    task = "0123456789abcdef"
    arn = f"arn:aws:ecs:us-east-1:123456789012:task/jobs/{task}"
    held = checkpoint(claim=Claim(f"fargate-{task}", NOW + 600_000, "fargate"))
    assert why_not_resumable(held, NOW) is not None
    assert why_not_resumable(held, NOW, stopped_task=task) is None
    assert why_not_resumable(held, NOW, stopped_task="another") is not None
    escalated = checkpoint(Status.ESCALATED, escalation=Escalation("x", 3, arn))
    assert why_not_resumable(escalated, NOW, stopped_task=task) is None
    assert why_not_resumable(escalated, NOW, stopped_task="another") is not None
    assert why_not_resumable(escalated, NOW, force=True) is None
    # force never frees a live claim
    assert why_not_resumable(held, NOW, force=True) is not None
