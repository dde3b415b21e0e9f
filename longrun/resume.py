"""Resuming a run from outside: the safety net, ``longrun resume``.

A run can be left without an invocation that will carry it on: its hop died and Lambda's
retries ran out, a guard failed it, or recursive-loop detection dropped its next hop. These
functions take such a run over with a conditional write (so two resumers cannot both win, and
a live hop is never disturbed) and start its next hop in a Fargate task or a new Lambda
invocation.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from .checkpoint import make_envelope
from .config import FargateSettings
from .errors import CheckpointConflict, RunNotFound
from .ports import Ports, active
from .protocol import Escalation, Status, holds_live_claim, why_not_resumable
from .stores.base import CheckpointStore, Loaded

__all__ = ["Resumed", "resume_in_fargate", "resume_in_lambda"]

log = logging.getLogger("longrun")


@dataclass(frozen=True)
class Resumed:
    """What a resume attempt did."""

    run_id: str
    action: str
    """``escalated`` / ``invoked`` (a next hop was started), ``busy`` (a hop holds a live
    claim: the lease decides, try again once it has expired) or ``skipped``."""
    reason: str
    hop: int | None = None
    task_arn: str | None = None


def _take_over(
    store: CheckpointStore,
    run_id: str,
    ports: Ports,
    status: Status,
    next_: str,
    reason: str,
    *,
    stopped_task: str | None = None,
    force: bool = False,
) -> tuple[Loaded | None, str, bool]:
    """Mark the run handed off to hop+1 (conditional write); ``None``, why and whether a
    live claim was in the way if not."""
    for _ in range(5):
        loaded = store.load(run_id)
        if loaded is None:
            raise RunNotFound(f"cannot resume: {store.describe(store.key(run_id))} does not exist.")
        now = ports.clock.wall_ms()
        checkpoint = loaded.checkpoint
        why_not = why_not_resumable(checkpoint, now, stopped_task=stopped_task, force=force)
        if why_not:
            return None, why_not, holds_live_claim(checkpoint, now)
        taken = checkpoint.replace(
            status=status,
            claim=None,
            next=next_,
            error=None,
            updated_ms=now,
            escalation=Escalation(reason=reason, hop=checkpoint.hop + 1)
            if status is Status.ESCALATED
            else checkpoint.escalation,
        )
        try:
            taken_over = store.replace(taken, loaded.token, previous=checkpoint)
            return taken_over, "taken over", False
        except CheckpointConflict:
            continue
    return None, "the checkpoint kept changing; try again", False


def _skipped(run_id: str, why: str, busy: bool) -> Resumed:
    # A live claim is never taken over (its holder may be working): once its lease has
    # expired, a new attempt takes the run over.
    action = "busy" if busy else "skipped"
    log.info("run %s: not resumed (%s)", run_id, why)
    return Resumed(run_id, action, why)


def resume_in_fargate(
    store: CheckpointStore,
    target: FargateSettings,
    run_id: str,
    *,
    reason: str = "resumed",
    ports: Ports | None = None,
    stopped_task: str | None = None,
    force: bool = False,
) -> Resumed:
    """Escalate ``run_id`` to a Fargate task, unless it is live, finished or already there.

    A run whose hop holds a live claim is left alone (``action="busy"``): a duplicate
    delivery that failed with ClaimBusy looks exactly like a hop that died early, and only
    the lease's expiry tells them apart. ``stopped_task``: the id of a task ECS reported
    STOPPED; its claim or its pending escalation is dead and is taken over. ``force``: take
    over a run escalated to a task that is known to be gone (``longrun resume --force``).
    """
    ports = ports or active()
    loaded, why, busy = _take_over(
        store,
        run_id,
        ports,
        Status.ESCALATED,
        "fargate",
        reason,
        stopped_task=stopped_task,
        force=force,
    )
    if loaded is None:
        return _skipped(run_id, why, busy)
    hop = loaded.checkpoint.hop + 1
    tenant = loaded.checkpoint.tenant_id
    task_arn = ports.transport.start_task(target, run_id, hop, tenant_id=tenant)
    stored = loaded.checkpoint.replace(escalation=Escalation(reason, hop, task_arn))
    with contextlib.suppress(CheckpointConflict):  # lost only if the task claimed it already
        store.replace(stored, loaded.token)
    log.info("run %s: resumed in Fargate as hop %d: %s (%s)", run_id, hop, task_arn, reason)
    return Resumed(run_id, Status.ESCALATED.value, reason, hop=hop, task_arn=task_arn)


def resume_in_lambda(
    store: CheckpointStore,
    run_id: str,
    *,
    function: str | None = None,
    lambda_client: Any = None,
    ports: Ports | None = None,
    force: bool = False,
) -> Resumed:
    """Continue ``run_id`` with a new asynchronous invocation of its function (``force``:
    also a run escalated to a task that is known to be gone)."""
    ports = ports or active()
    loaded = store.load(run_id)
    if loaded is None:
        raise RunNotFound(f"cannot resume: {store.describe(store.key(run_id))} does not exist.")
    target = function or loaded.checkpoint.function
    if not target:
        return Resumed(run_id, "skipped", "the checkpoint names no function: pass one")
    loaded, why, busy = _take_over(
        store, run_id, ports, Status.CONTINUED, "lambda", "resumed", force=force
    )
    if loaded is None:
        return _skipped(run_id, why, busy)
    hop = loaded.checkpoint.hop + 1
    payload = json.dumps(make_envelope(run_id, hop)).encode()
    ports.transport.invoke_async(
        str(target), payload, lambda_client, tenant_id=loaded.checkpoint.tenant_id
    )
    return Resumed(run_id, "invoked", "resumed", hop=hop)
