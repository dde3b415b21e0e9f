"""The protocol's decisions: pure functions of a checkpoint, no I/O (decide, then execute)."""

from __future__ import annotations

import enum
from typing import NamedTuple

from .document import Checkpoint, Claim, Status

__all__ = [
    "Act",
    "ClaimDecision",
    "NextStep",
    "claim_live",
    "decide_claim",
    "decide_new_run",
    "decide_next",
    "fargate_request_id",
    "holds_live_claim",
    "is_own_write",
    "may_cancel",
    "notice_due",
    "why_not_resumable",
]


def claim_live(claim: Claim | None, now_ms: int) -> bool:
    """Whether ``claim``'s holder may still be running (a lease without deadline is live)."""
    if claim is None:
        return False
    return claim.deadline_ms is None or now_ms < claim.deadline_ms


def notice_due(checkpoint: Checkpoint, request_id: str, now_ms: int) -> Act | None:
    """What an invocation that found the run settled does about its completion notification:
    ``None`` (nothing is owed), ``CLAIM`` (take it over and send it: it failed, or its sender's
    lease ran out), ``BUSY`` (this very request id holds a live lease: a duplicate of a live
    sender, or the retry of one that died; raise so that Lambda retries after the lease),
    ``DUPLICATE`` (another invocation is sending it)."""
    notice = checkpoint.notice
    if notice is None or notice.state == "sent":
        return None
    if notice.state == "failed" or (notice.until_ms is not None and notice.until_ms <= now_ms):
        return Act.CLAIM
    return Act.BUSY if notice.by == request_id else Act.DUPLICATE


def is_own_write(stored: Checkpoint | None, write_id: str) -> bool:
    """Whether the stored document is the write that carried ``write_id`` (reply lost)."""
    return stored is not None and stored.write_id == write_id


class Act(str, enum.Enum):
    """What an invocation does after :func:`decide_claim` / :func:`decide_next`."""

    CLAIM = "claim"
    """Write a claim for the hop and run user code (``takeover``: over a dead claim)."""
    DUPLICATE = "duplicate"
    """Another invocation has (or had) this hop: answer without running anything."""
    CANCELLED = "cancelled"
    """The run is cancelled: answer so."""
    BUSY = "busy"
    """The holder's own request id before its deadline: raise ClaimBusy so that Lambda
    retries after the lease (a duplicate of a live hop and a retry of a dead one look the
    same; the lease's expiry decides)."""
    RESEND = "resend"
    """A retry of the hop that wrote ``continued``: send the next hop again."""
    RESTART_TASK = "restart_task"
    """A retry of the hop that wrote ``escalated``: start its task unless one is recorded."""
    TERMINAL = "terminal"
    """A retry of a hop a guard failed: re-raise that error."""
    BAD_HOP = "bad_hop"
    """The envelope names a hop this run never handed off."""
    CONTINUE = "continue"
    """After a hop: checkpoint ``continued`` and invoke the next Lambda hop."""
    ESCALATE = "escalate"
    """After a hop: checkpoint ``escalated`` and start a Fargate task."""
    FAIL = "fail"
    """After a hop: record the guard's error and raise it."""


class ClaimDecision(NamedTuple):
    """What an invocation delivered for a hop does with the run, and why. (A NamedTuple: it
    is made on every cold start, five times faster than a dataclass.)"""

    action: Act
    reason: str = ""
    takeover: bool = False


def decide_claim(
    checkpoint: Checkpoint, hop: int, *, request_id: str, where: str, now_ms: int
) -> ClaimDecision:
    """May this invocation (delivered for ``hop``) claim the run?"""
    status, current = checkpoint.status, checkpoint.hop
    if status is Status.CANCELLED:
        return ClaimDecision(Act.CANCELLED, "the run is cancelled")
    if hop < current:
        return ClaimDecision(Act.DUPLICATE, f"stale: the run is at hop {current}")
    if hop > current + 1:
        return ClaimDecision(
            Act.BAD_HOP,
            f"the envelope names hop {hop}, but the checkpoint is at hop {current}: this "
            "event was not produced by this run's previous hop",
        )
    if hop == current + 1:
        if status in (Status.CONTINUED, Status.WAITING) or (
            status is Status.ESCALATED and where == "fargate"
        ):
            return ClaimDecision(Act.CLAIM)
        return ClaimDecision(Act.DUPLICATE, f"hop {current} is {status}, not handed off")
    # A re-delivery of the current hop.
    last = checkpoint.last_hop
    retry = last is not None and last.request_id == request_id
    if status is Status.RUNNING:
        claim = checkpoint.claim
        if claim is not None and claim_live(claim, now_ms):
            if claim.request_id == request_id:
                why = f"claimed by this same request id until {claim.deadline_ms}"
                return ClaimDecision(Act.BUSY, why)
            why = f"hop {hop} is running under request {claim.request_id}"
            return ClaimDecision(Act.DUPLICATE, why)
        why = f"taking over from {claim.request_id if claim else 'nobody'}, whose lease ran out"
        return ClaimDecision(Act.CLAIM, why, takeover=True)
    if status is Status.CONTINUED and retry:
        return ClaimDecision(Act.RESEND, "retried after its checkpoint")
    if status is Status.ESCALATED and retry:
        return ClaimDecision(Act.RESTART_TASK, "retried after escalating")
    if status is Status.FAILED and retry:
        error = checkpoint.error
        if error is not None and error.terminal:
            return ClaimDecision(Act.TERMINAL, error.message)
        return ClaimDecision(Act.CLAIM, "Lambda's retry of a failed hop: resuming", takeover=True)
    return ClaimDecision(Act.DUPLICATE, f"hop {hop} is {status}")


def decide_new_run(existing: Checkpoint, request_id: str) -> Act:
    """A first invocation found its run id taken: claim its own retry, else answer with it."""
    return Act.CLAIM if existing.origin_request_id == request_id else Act.DUPLICATE


class NextStep(NamedTuple):
    """What follows a hop that ended before the handler returned: ``Act.CONTINUE``,
    ``Act.ESCALATE`` or ``Act.FAIL`` with ``error`` naming the guard (``NoProgressError``,
    ``HopBudgetExhausted``, ``RunTimeExceeded``, ``EscalationFailed``, ``HandoffFailed``)."""

    action: Act
    reason: str = ""
    error: str | None = None


def decide_next(
    *,
    where: str,
    next_hop: int,
    max_hops: int,
    progress: bool,
    past_run_deadline: bool,
    can_escalate: bool,
    can_reinvoke: bool,
    stopping: bool = False,
    reason: str = "time",
) -> NextStep:
    """The guards, in order: run time, then Fargate's own rules, then progress and budget."""
    if past_run_deadline:
        return NextStep(Act.FAIL, "max_run_seconds", "RunTimeExceeded")
    if where == "fargate":
        # A stopping task (SIGTERM) hands over even without progress; a task without a
        # signal and without progress would only start another like itself.
        if not progress and not stopping:
            return NextStep(Act.FAIL, "no progress in a Fargate hop", "NoProgressError")
        if not can_escalate:
            return NextStep(Act.FAIL, "no Fargate target in the container", "EscalationFailed")
        return NextStep(Act.ESCALATE, f"replacement task after {'SIGTERM' if stopping else reason}")
    if not progress:
        if can_escalate:
            return NextStep(Act.ESCALATE, "no progress in a Lambda hop")
        return NextStep(Act.FAIL, "no progress", "NoProgressError")
    if next_hop > max_hops:
        if can_escalate:
            return NextStep(Act.ESCALATE, "hop budget used up")
        return NextStep(Act.FAIL, "hop budget used up", "HopBudgetExhausted")
    if not can_reinvoke:
        return NextStep(Act.FAIL, "no function to re-invoke", "HandoffFailed")
    return NextStep(Act.CONTINUE)


def fargate_request_id(task_id: str) -> str:
    """The request id a Fargate task's hop claims with (the runner's ``aws_request_id``)."""
    return f"fargate-{task_id}"


def _is_task(task_arn: str | None, task_id: str | None) -> bool:
    return bool(task_arn and task_id) and str(task_arn).rsplit("/", 1)[-1] == task_id


def why_not_resumable(
    checkpoint: Checkpoint,
    now_ms: int,
    *,
    stopped_task: str | None = None,
    force: bool = False,
) -> str | None:
    """Why the run must not be taken over from outside now, or ``None`` if it may be.

    A live claim is never taken over: its holder may be working (a duplicate delivery that
    failed with ClaimBusy looks exactly like a hop that died early). The lease decides,
    except for a claim held by ``stopped_task``: ECS reported that task STOPPED, so its
    process is gone and can write nothing more. A run ``escalated`` to a recorded task is
    left alone, unless that task is ``stopped_task`` or ``force`` says it is known to be gone
    (``longrun resume --force``).
    """
    status = checkpoint.status
    if status.settled:
        return f"the run is {status}"
    claim = checkpoint.claim
    dead_holder = (
        stopped_task is not None
        and claim is not None
        and claim.request_id == fargate_request_id(stopped_task)
    )
    if claim is not None and holds_live_claim(checkpoint, now_ms) and not dead_holder:
        until = "" if claim.deadline_ms is None else f" until {claim.deadline_ms} (epoch ms)"
        return f"hop {checkpoint.hop} is running under request {claim.request_id}{until}"
    escalation = checkpoint.escalation
    if (
        status is Status.ESCALATED
        and escalation is not None
        and escalation.task_arn
        and not force
        and not _is_task(escalation.task_arn, stopped_task)
    ):
        return f"already escalated to {escalation.task_arn}"
    error = checkpoint.error
    if status is Status.FAILED and error is not None and error.type == "RunTimeExceeded":
        return "it failed with RunTimeExceeded: raise max_run_seconds before resuming it"
    return None


def holds_live_claim(checkpoint: Checkpoint, now_ms: int) -> bool:
    """A hop is running under a lease that has not expired (maybe alive, maybe dead)."""
    return checkpoint.status is Status.RUNNING and claim_live(checkpoint.claim, now_ms)


def may_cancel(checkpoint: Checkpoint) -> bool:
    """A settled run stays as it is; any other run may be cancelled."""
    return not checkpoint.status.settled
