"""Wake-ups: a one-time EventBridge Scheduler schedule that invokes the function with the
next hop's envelope at the wait's end, then deletes itself (``ActionAfterCompletion``).

The schedule's role (``LONGRUN_SCHEDULER_ROLE_ARN``) must allow ``lambda:InvokeFunction`` on
the function; the group is ``LONGRUN_SCHEDULER_GROUP`` (default ``default``). The function's
role needs ``scheduler:CreateSchedule`` (and ``iam:PassRole`` on that role). A schedule of
that name that already exists (a retried hop scheduling the same wake-up) is left as it is.
boto3 honours ``AWS_ENDPOINT_URL_SCHEDULER``, how the tests reach moto.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Any

from ..errors import LongrunConfigError

__all__ = [
    "ENV_SCHEDULER_GROUP",
    "ENV_SCHEDULER_ROLE_ARN",
    "delete_schedule",
    "schedule_name",
    "schedule_wake",
]

ENV_SCHEDULER_ROLE_ARN = "LONGRUN_SCHEDULER_ROLE_ARN"
ENV_SCHEDULER_GROUP = "LONGRUN_SCHEDULER_GROUP"

_client: Any = None
_lock = threading.Lock()


def _scheduler() -> Any:
    global _client
    with _lock:
        if _client is None:
            import boto3

            session: Any = boto3.session.Session()
            _client = session.client("scheduler")
        return _client


def schedule_name(run_id: str, hop: int) -> str:
    """The wake-up schedule of ``run_id``'s hop ``hop``: the same for every retry of the hop
    that schedules it (at most 64 characters, as Scheduler allows)."""
    name = f"longrun-{run_id}-{hop}"
    if len(name) <= 64:
        return name
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:24]
    return f"longrun-{run_id[:24]}-{digest}-{hop}"[:64]


def schedule_wake(function: str, payload: bytes, at_ms: int, *, name: str) -> str:
    """Create the one-time schedule ``name`` invoking ``function`` with ``payload``."""
    role = os.environ.get(ENV_SCHEDULER_ROLE_ARN, "").strip()
    if not role:
        raise LongrunConfigError(
            f"a wait longer than the hop has left needs {ENV_SCHEDULER_ROLE_ARN}: the ARN of a "
            "role EventBridge Scheduler assumes to invoke this function (lambda:InvokeFunction)."
            " Nothing was lost: the run's last checkpoint is kept."
        )
    group = os.environ.get(ENV_SCHEDULER_GROUP, "").strip() or "default"
    # at() takes whole seconds: round up, so the wake-up never comes before the time (a hop
    # woken early would find its wait not over and schedule the same second again)
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(-(-max(at_ms, 0) // 1000)))
    client = _scheduler()
    try:
        client.create_schedule(
            Name=name,
            GroupName=group,
            ScheduleExpression=f"at({at})",
            ScheduleExpressionTimezone="UTC",
            FlexibleTimeWindow={"Mode": "OFF"},
            ActionAfterCompletion="DELETE",
            Target={"Arn": function, "RoleArn": role, "Input": payload.decode()},
        )
    except Exception as exc:
        if "ConflictException" not in type(exc).__name__ and "Conflict" not in str(exc):
            raise
    return name


def delete_schedule(name: str) -> bool:
    """Delete a pending wake-up (a cancelled run); False if it was not there."""
    group = os.environ.get(ENV_SCHEDULER_GROUP, "").strip() or "default"
    try:
        _scheduler().delete_schedule(Name=name, GroupName=group)
    except Exception as exc:
        if "ResourceNotFound" in type(exc).__name__ or "ResourceNotFound" in str(exc):
            return False
        raise
    return True
