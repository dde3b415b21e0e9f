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

from ._hooks import Hooks
from .checkpoint import make_envelope
from .config import FargateSettings
from .errors import CheckpointConflict, RunNotFound
from .stores.base import CheckpointStore, Loaded

__all__ = ["Resumed", "resume_in_fargate", "resume_in_lambda"]

log = logging.getLogger("longrun")

_FINAL = ("completed", "cancelled")


@dataclass(frozen=True)
class Resumed:
    """What a resume attempt did."""

    run_id: str
    action: str
    """``escalated`` / ``invoked`` (a next hop was started) or ``skipped``."""
    reason: str
    hop: int | None = None
    task_arn: str | None = None


def _resumable(loaded: Loaded, now_ms: int, failed_request_id: str | None) -> str | None:
    """Why the run must not be taken over now, or ``None`` if it may."""
    doc = loaded.document
    status = doc["status"]
    if status in _FINAL:
        return f"the run is {status}"
    claim = doc.get("claim") or {}
    if status == "running":
        deadline = claim.get("deadline_ms")
        live = deadline is None or now_ms < deadline
        # Lambda reports a request as failed only once all its attempts ended: a live-looking
        # claim held by that very request belongs to an invocation that died early (out of
        # memory, a crash). Should one of its deliveries still run, fencing stops it at its
        # next write.
        if live and not (failed_request_id and claim.get("request_id") == failed_request_id):
            return f"hop {doc['hop']} is running under request {claim.get('request_id')}"
    if status == "escalated" and (doc.get("escalation") or {}).get("task_arn"):
        return f"already escalated to {doc['escalation']['task_arn']}"
    if status == "failed" and (doc.get("error") or {}).get("type") == "RunTimeExceeded":
        return "it failed with RunTimeExceeded: raise max_run_seconds before resuming it"
    return None


def _take_over(
    store: CheckpointStore,
    run_id: str,
    hooks: Hooks,
    status: str,
    next_: str,
    reason: str,
    failed_request_id: str | None = None,
) -> tuple[Loaded | None, str]:
    """Mark the run handed off to hop+1 (conditional write); ``None`` and why if not."""
    for _ in range(5):
        loaded = store.load(run_id)
        if loaded is None:
            raise RunNotFound(f"cannot resume: {store.describe(store.key(run_id))} does not exist.")
        now = hooks.wall_ms()
        why_not = _resumable(loaded, now, failed_request_id)
        if why_not:
            return None, why_not
        doc = loaded.document
        doc.update(
            status=status,
            claim=None,
            next=next_,
            error=None,
            updated_ms=now,
            escalation={"reason": reason, "hop": doc["hop"] + 1, "task_arn": None}
            if next_ == "fargate"
            else doc.get("escalation"),
        )
        try:
            return store.replace(doc, loaded.token), "taken over"
        except CheckpointConflict:
            continue
    return None, "the checkpoint kept changing; try again"


def resume_in_fargate(
    store: CheckpointStore,
    target: FargateSettings,
    run_id: str,
    *,
    reason: str = "resumed",
    hooks: Hooks | None = None,
    failed_request_id: str | None = None,
) -> Resumed:
    """Escalate ``run_id`` to a Fargate task, unless it is live, finished or already there.

    ``failed_request_id``: the request Lambda reported as failed after all its attempts (the
    safety net knows it); a claim still held by it is taken over before its deadline.
    """
    hooks = hooks or Hooks()
    loaded, why = _take_over(
        store, run_id, hooks, "escalated", "fargate", reason, failed_request_id
    )
    if loaded is None:
        log.info("run %s: not resumed (%s)", run_id, why)
        return Resumed(run_id, "skipped", why)
    hop = loaded.document["hop"] + 1
    task_arn = hooks.start_task(target, run_id, hop)
    doc = json.loads(loaded.data)
    doc["escalation"]["task_arn"] = task_arn
    with contextlib.suppress(CheckpointConflict):  # lost only if the task claimed it already
        store.replace(doc, loaded.token)
    log.info("run %s: resumed in Fargate as hop %d: %s (%s)", run_id, hop, task_arn, reason)
    return Resumed(run_id, "escalated", reason, hop=hop, task_arn=task_arn)


def resume_in_lambda(
    store: CheckpointStore,
    run_id: str,
    *,
    function: str | None = None,
    lambda_client: Any = None,
    hooks: Hooks | None = None,
) -> Resumed:
    """Continue ``run_id`` with a new asynchronous invocation of its function."""
    hooks = hooks or Hooks()
    loaded = store.load(run_id)
    if loaded is None:
        raise RunNotFound(f"cannot resume: {store.describe(store.key(run_id))} does not exist.")
    target = function or loaded.document.get("function")
    if not target:
        return Resumed(run_id, "skipped", "the checkpoint names no function: pass one")
    loaded, why = _take_over(store, run_id, hooks, "continued", "lambda", "resumed")
    if loaded is None:
        return Resumed(run_id, "skipped", why)
    hop = loaded.document["hop"] + 1
    hooks.invoke_async(str(target), json.dumps(make_envelope(run_id, hop)).encode(), lambda_client)
    return Resumed(run_id, "invoked", "resumed", hop=hop)
