"""Escalation: start an ECS Fargate task that carries the run on with no time limit.

The task runs the container command ``longrun-runner`` (``python -m longrun.runner``), which
claims the run like any hop and resumes it from its checkpoint. Only the run id, the hop
number and, when needed, the handler to import travel in the container overrides, so they
stay far below ECS's 8192-character limit for ``overrides`` whatever the event's size (the
event lives in the checkpoint). The limit is checked before calling ECS all the same.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

from ..config import (
    ENV_EVENT_URI,
    ENV_FUNCTION_NAME,
    ENV_HANDLER,
    ENV_HOP,
    ENV_RUN_ID,
    Fargate,
    FargateSettings,
)
from ..errors import EscalationFailed

__all__ = [
    "MAX_OVERRIDES_CHARS",
    "Fargate",
    "container_overrides",
    "start_event_task",
    "start_task",
]

log = logging.getLogger("longrun")

MAX_OVERRIDES_CHARS = 8192
"""ECS's limit on a RunTask ``overrides`` structure, JSON syntax included."""

STARTED_BY = "longrun"
_CAPACITY_WORDS = ("capacity", "resource:", "insufficient")


_clients: dict[int, Any] = {}
_clients_lock = threading.Lock()


def _client(settings: FargateSettings) -> Any:
    if settings.client is not None:
        return settings.client
    key = id(settings.session)
    with _clients_lock:
        if key not in _clients:
            import boto3

            session = settings.session or boto3.session.Session()
            _clients[key] = session.client("ecs")
        return _clients[key]


def container_overrides(
    settings: FargateSettings, run_id: str, hop: int, extra_env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The RunTask ``overrides`` for hop ``hop`` of ``run_id`` (checked against the limit)."""
    env: dict[str, str] = {ENV_RUN_ID: run_id, ENV_HOP: str(hop)}
    if settings.handler:
        env[ENV_HANDLER] = settings.handler
    if settings.function_name:
        env[ENV_FUNCTION_NAME] = settings.function_name
    env.update(extra_env or {})
    return _overrides(settings, env, what=f"run {run_id}")


def _overrides(settings: FargateSettings, env: Mapping[str, str], *, what: str) -> dict[str, Any]:
    overrides = {
        "containerOverrides": [
            {
                "name": settings.container,
                "environment": [{"name": k, "value": v} for k, v in env.items()],
            }
        ]
    }
    size = len(json.dumps(overrides, separators=(",", ":")))
    if size > MAX_OVERRIDES_CHARS:
        raise EscalationFailed(
            f"the RunTask overrides for {what} would be {size} characters, over ECS's "
            f"limit of {MAX_OVERRIDES_CHARS}: shorten the handler path "
            f"({ENV_HANDLER}) or pass large inputs by reference ({ENV_EVENT_URI})."
        )
    return overrides


def _run_task(client: Any, request: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    try:
        response = client.run_task(**request)
    except Exception as exc:
        raise EscalationFailed(
            f"ecs.run_task on cluster {request['cluster']!r} with task definition "
            f"{request['taskDefinition']!r} failed: {exc}"
        ) from exc
    tasks = response.get("tasks") or []
    failures = response.get("failures") or []
    return (tasks[0]["taskArn"] if tasks else None), failures


def start_task(
    settings: FargateSettings,
    run_id: str,
    hop: int,
    *,
    extra_env: Mapping[str, str] | None = None,
) -> str:
    """Start the Fargate task for hop ``hop`` of ``run_id``; returns its task ARN.

    With ``spot`` the task asks for FARGATE_SPOT first; a capacity failure is retried once
    on on-demand FARGATE. Other ``failures`` raise EscalationFailed with ECS's reasons.
    """
    overrides = container_overrides(settings, run_id, hop, extra_env)
    tags = {"longrun:run-id": run_id, "longrun:hop": str(hop)}
    return _start(settings, overrides, tags, what=f"run {run_id}")


def start_event_task(
    settings: FargateSettings, *, function_name: str, event_uri: str, tag: str
) -> str:
    """Start a task that runs one stored event through an undecorated function's handler
    (the runner's function mode); ``tag`` names it (the failed invocation's request id)."""
    env = {ENV_FUNCTION_NAME: function_name, ENV_EVENT_URI: event_uri}
    overrides = _overrides(settings, env, what=f"request {tag}")
    return _start(settings, overrides, {"longrun:request-id": tag}, what=f"request {tag}")


def _start(
    settings: FargateSettings, overrides: dict[str, Any], tags: Mapping[str, str], *, what: str
) -> str:
    vpc: dict[str, Any] = {
        "subnets": list(settings.subnets),
        "assignPublicIp": "ENABLED" if settings.assign_public_ip else "DISABLED",
    }
    if settings.security_groups:
        vpc["securityGroups"] = list(settings.security_groups)
    request: dict[str, Any] = {
        "cluster": settings.cluster,
        "taskDefinition": settings.task_definition,
        "count": 1,
        "networkConfiguration": {"awsvpcConfiguration": vpc},
        "overrides": overrides,
        "startedBy": STARTED_BY,
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }
    if settings.platform_version:
        request["platformVersion"] = settings.platform_version
    client = _client(settings)
    if settings.spot:
        spot_request = {
            **request,
            "capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 1}],
        }
        arn, failures = _run_task(client, spot_request)
        if arn:
            return arn
        if not _capacity_failure(failures):
            raise _failed(request, failures)
        log.warning(
            "%s: no FARGATE_SPOT capacity (%s), falling back to on-demand FARGATE",
            what,
            _reasons(failures),
        )
    arn, failures = _run_task(client, {**request, "launchType": "FARGATE"})
    if not arn:
        raise _failed(request, failures)
    return arn


def _capacity_failure(failures: list[dict[str, Any]]) -> bool:
    return any(
        any(word in str(f.get("reason", "")).lower() for word in _CAPACITY_WORDS) for f in failures
    )


def _reasons(failures: list[dict[str, Any]]) -> str:
    return (
        "; ".join(
            f"{f.get('reason', 'unknown')}" + (f" ({f['detail']})" if f.get("detail") else "")
            for f in failures
        )
        or "no task and no failure reported"
    )


def _failed(request: dict[str, Any], failures: list[dict[str, Any]]) -> EscalationFailed:
    return EscalationFailed(
        f"ecs.run_task on cluster {request['cluster']!r} started no task for "
        f"{request['taskDefinition']!r}: {_reasons(failures)}. Check the cluster, the task "
        "definition and the subnets; the run's checkpoint is kept."
    )
