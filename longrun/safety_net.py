"""The safety net: a handler for a function's on-failure destination or dead-letter queue.

Attach ``longrun.safety_net.handler`` to what receives the events a function failed on after
Lambda's retries: an SQS queue or SNS topic used as the on-failure destination or as the
dead-letter queue, or the safety-net function itself as the on-failure destination. For each
failed event:

* a ``@longrun`` run (the event is a continuation envelope, or it is the original event of a
  run whose id is the failed invocation's request id, the default run id) is resumed from its
  last checkpoint in a Fargate task, with the same fencing as ``longrun resume --fargate``: a
  finished or already escalated run is left alone and reported as ``skipped``; a run whose
  hop holds a live claim (its lease has not expired: the hop may still be working, even when
  Lambda reported its request failed) is never taken over: the record fails, comes back
  (SQS redelivery, Lambda's retry) and is handled once the lease has expired;
* a ``run.map`` child's start event: a child that settled but died before joining its
  parent is joined here (``joined``: counted once, the next child started, the parent woken
  if it was the last); a child that did not settle is resumed as above;
* any other event (an undecorated function) is stored beside the checkpoints under
  ``safety-net/<request-id>.json`` and run once in a Fargate task in the runner's function
  mode (``LONGRUN_FUNCTION_NAME`` + ``LONGRUN_EVENT_URI``).

The safety-net function is configured like the functions it protects: ``LONGRUN_CHECKPOINT_URI``
(the same store as theirs) and ``LONGRUN_FARGATE_*``. A dead-letter message does not name the
function that failed: set ``LONGRUN_SAFETY_NET_FUNCTION`` to it (name or ARN) for
undecorated functions behind a DLQ.

Who may send to the queue or topic may ask for a Fargate task: restrict it to Lambda.
Records that cannot be understood are logged and dropped; records whose handling failed (the
store, ECS, the configuration) are returned as SQS ``batchItemFailures`` so that SQS delivers
them again (enable ``ReportBatchItemFailures`` on the event source mapping and give the queue
a redrive policy); for SNS and direct invocations the handler raises so that Lambda retries.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import ports as _ports
from .checkpoint import make_envelope, parse_envelope, validate_run_id
from .config import (
    ENV_HOP,
    ENV_RUN_ID,
    ENV_SAFETY_NET_FUNCTION,
    FargateSettings,
    env_store,
    environment,
    resolve_fargate,
)
from .errors import EnvelopeError, InvalidRunId, LongrunConfigError, LongrunError, StoreError
from .resume import resume_in_fargate
from .stores.base import CheckpointStore

__all__ = ["ENV_SAFETY_NET_FUNCTION", "EVENTS_FOLDER", "SafetyNetError", "handler", "process"]

log = logging.getLogger("longrun.safety_net")

"""The function (name or ARN) whose dead letters this safety net receives: a DLQ message
does not say which function failed; on-failure destination records do."""

EVENTS_FOLDER = "safety-net/"
"""Where, beside the checkpoints, the events of undecorated functions are stored."""

START_LEASE_MS = 15 * 60 * 1000
"""How long a started-but-unconfirmed task start fences other deliveries of the same event
(a safety-net invocation lasts at most 15 minutes)."""

_DESTINATION_KEYS = ("requestId", "functionArn", "condition")


class SafetyNetError(LongrunError):
    """Some records of an SNS or direct invocation failed: raised so that Lambda retries."""


class _Malformed(Exception):
    """A record the safety net cannot understand: logged and dropped (redelivery won't help)."""


class _NothingToDo(Exception):
    """A well-formed record that asks for nothing (a task that exited 0): reported, skipped."""


class _Busy(LongrunError):
    """Another delivery of the same event is starting its task right now."""


@dataclass(frozen=True)
class _Failure:
    """One failed invocation, as a record tells it."""

    payload: Any
    request_id: str | None
    function: str | None
    why: str
    """The destination's ``condition`` or the DLQ's ``ErrorCode``/``ErrorMessage``."""
    stopped_task: str | None = None
    """For an ECS task state change: the id of the task that stopped (its claim is dead)."""


def _env() -> Mapping[str, str]:
    """The safety-net function's own environment (read through config, as everywhere)."""
    return environment()


# -- reading records --------------------------------------------------------------------------


def _json(text: Any, what: str) -> Any:
    if not isinstance(text, str):
        raise _Malformed(f"{what} is a {type(text).__name__}, not a JSON string")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _Malformed(f"{what} is not JSON ({exc})") from None


def _is_destination_record(value: Any) -> bool:
    context = value.get("requestContext") if isinstance(value, dict) else None
    return (
        isinstance(context, dict)
        and all(key in context for key in _DESTINATION_KEYS)
        and "version" in value
        and "timestamp" in value
    )


def _from_destination_record(record: dict[str, Any]) -> _Failure:
    context = record["requestContext"]
    condition = str(context.get("condition"))
    if condition == "Success":
        raise _Malformed(
            "an on-success destination record (condition Success): attach the safety net to "
            "the on-failure destination only"
        )
    if "requestPayload" not in record:
        raise _Malformed(
            f"destination record (condition {condition}) has no requestPayload: an event source "
            "mapping's failure record carries only batch details, not an event to resume"
        )
    count = context.get("approximateInvokeCount")
    error = record.get("responsePayload")
    detail = f"{condition} after {count} attempt(s)" if count else condition
    if isinstance(error, dict) and error.get("errorType"):
        detail += f": {error['errorType']}"
    request_id, function = context.get("requestId"), context.get("functionArn")
    return _Failure(
        payload=record["requestPayload"],
        request_id=str(request_id) if request_id else None,
        function=str(function) if function else None,
        why=detail,
    )


def _is_task_event(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("source") == "aws.ecs"
        and value.get("detail-type") == "ECS Task State Change"
    )


def _from_task_event(event: dict[str, Any]) -> _Failure:
    """An EventBridge ``ECS Task State Change``: a longrun task that stopped without handing
    the run on (out of memory, a host failure, an image that could not be pulled).

    The run and hop come from the task's container overrides (``LONGRUN_RUN_ID``,
    ``LONGRUN_HOP``). A task whose containers all exited 0 finished its part (the runner
    exits 0 for done, continued in a replacement, or not its run): nothing to do.
    """
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise _Malformed("an ECS task state change without a detail object")
    status = detail.get("lastStatus")
    if status != "STOPPED":
        raise _NothingToDo(f"ECS task state change to {status}: only STOPPED tasks matter")
    env: dict[str, str] = {}
    for container in (detail.get("overrides") or {}).get("containerOverrides") or []:
        for pair in container.get("environment") or [] if isinstance(container, dict) else []:
            if isinstance(pair, dict) and isinstance(pair.get("name"), str):
                env[pair["name"]] = str(pair.get("value"))
    task_arn = str(detail.get("taskArn") or "")
    task_id = task_arn.rsplit("/", 1)[-1]
    run_id, hop = env.get(ENV_RUN_ID), env.get(ENV_HOP)
    if not run_id or not hop or not hop.isdigit() or not task_id:
        raise _NothingToDo(
            f"ECS task {task_arn or '?'} is not a longrun run's task (no {ENV_RUN_ID} and "
            f"{ENV_HOP} in its overrides)"
        )
    exits = [c.get("exitCode") for c in detail.get("containers") or [] if isinstance(c, dict)]
    if exits and all(code == 0 for code in exits):
        raise _NothingToDo(f"ECS task {task_id} of run {run_id} exited 0: it handed the run on")
    why = (
        f"ECS task {task_id} stopped ({detail.get('stopCode') or 'no stop code'}: "
        f"{_cut(str(detail.get('stoppedReason') or ''))}; exit codes {exits})"
    )
    return _Failure(
        payload=make_envelope(run_id, int(hop)),
        request_id=None,
        function=None,
        why=why,
        stopped_task=task_id,
    )


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _from_message(body: Any, attributes: Mapping[str, str | None], what: str) -> _Failure:
    """An SQS body or SNS message: a destination record, an ECS task state change, or a dead
    letter (the raw event)."""
    value = _json(body, what)
    if _is_task_event(value):  # an EventBridge rule delivering to the queue
        return _from_task_event(value)
    if (
        isinstance(value, dict)
        and value.get("Type") == "Notification"
        and "TopicArn" in value
        and "Message" in value
    ):  # an SNS topic delivering to the queue without raw message delivery
        raw_attributes = value.get("MessageAttributes") or {}
        attributes = {k: _attribute(v, "Value") for k, v in raw_attributes.items()}
        value = _json(value["Message"], f"the SNS message in {what}")
    if _is_destination_record(value):
        return _from_destination_record(value)
    code, message = attributes.get("ErrorCode"), attributes.get("ErrorMessage")
    why = "dead letter" + (f": {code}" if code else "") + (f" {message}" if message else "")
    return _Failure(
        payload=value, request_id=attributes.get("RequestID") or None, function=None, why=why
    )


def _attribute(value: Any, field: str) -> str | None:
    if isinstance(value, dict) and isinstance(value.get(field), str):
        return str(value[field])
    return None


def _attributes(raw: Any, field: str) -> dict[str, str | None]:
    if not isinstance(raw, dict):
        return {}
    return {str(name): _attribute(value, field) for name, value in raw.items()}


@dataclass(frozen=True)
class _Record:
    source: str
    """sqs, sns, lambda (the safety net is the destination) or eventbridge."""
    message_id: str | None
    read: Callable[[], _Failure]


def _records(event: Any) -> list[_Record]:
    """The event's records, each parsed lazily (so one bad record spoils nothing else)."""

    def malformed(reason: str) -> Callable[[], _Failure]:
        def read() -> _Failure:
            raise _Malformed(reason)

        return read

    if isinstance(event, dict) and isinstance(event.get("Records"), list):
        records: list[_Record] = []
        for raw in event["Records"]:
            if not isinstance(raw, dict):
                records.append(_Record("unknown", None, malformed("a record is not an object")))
            elif raw.get("eventSource") == "aws:sqs":
                message_id = raw.get("messageId")
                attributes = _attributes(raw.get("messageAttributes"), "stringValue")
                body = raw.get("body")
                records.append(
                    _Record(
                        "sqs",
                        str(message_id) if message_id else None,
                        functools.partial(_from_message, body, attributes, "the SQS body"),
                    )
                )
            elif raw.get("EventSource") == "aws:sns" and isinstance(raw.get("Sns"), dict):
                sns = raw["Sns"]
                attributes = _attributes(sns.get("MessageAttributes"), "Value")
                message = sns.get("Message")
                records.append(
                    _Record(
                        "sns",
                        str(sns["MessageId"]) if sns.get("MessageId") else None,
                        functools.partial(_from_message, message, attributes, "the SNS message"),
                    )
                )
            else:
                source = raw.get("eventSource") or raw.get("EventSource")
                records.append(
                    _Record(
                        str(source or "unknown"),
                        None,
                        malformed(f"a record from {source or 'an unknown source'}: not SQS or SNS"),
                    )
                )
        return records
    if _is_destination_record(event):
        return [_Record("lambda", None, lambda: _from_destination_record(event))]
    if _is_task_event(event):
        return [_Record("eventbridge", event.get("id"), lambda: _from_task_event(event))]
    if (
        isinstance(event, dict)
        and event.get("source") == "lambda"
        and str(event.get("detail-type", "")).startswith("Lambda Function Invocation Result")
    ):
        detail = event.get("detail")
        if _is_destination_record(detail):
            assert isinstance(detail, dict)
            return [
                _Record("eventbridge", event.get("id"), lambda: _from_destination_record(detail))
            ]
    return [
        _Record(
            "unknown",
            None,
            malformed(
                "not an SQS or SNS event, nor an on-failure destination record "
                f"(top-level keys {sorted(event, key=str)[:8] if isinstance(event, dict) else []})"
            ),
        )
    ]


# -- undecorated functions: the stored event ---------------------------------------------------


def _spool_of(store: CheckpointStore) -> CheckpointStore:
    """The store that keeps stored events beside the checkpoints: one a Fargate task can read
    back (S3 or a shared file system)."""
    from .stores.file import FileStore
    from .stores.s3 import S3Store

    if not isinstance(store, (S3Store, FileStore)):
        raise LongrunConfigError(
            f"the safety net runs undecorated functions' events from the checkpoint store, "
            f"which must be an S3Store or a FileStore, not {store!r}: set "
            "LONGRUN_CHECKPOINT_URI=s3://BUCKET/PREFIX/ or file:///PATH."
        )
    return store


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _start_plain(
    failure: _Failure,
    tag: str,
    store: CheckpointStore,
    target: FargateSettings,
    env: Mapping[str, str],
    ports: _ports.Ports,
) -> dict[str, Any]:
    """Store the event and start one task that runs it through the function's handler.

    ``<tag>.task.json`` fences the start: created only if absent, so a second delivery of
    the same failure does not start a second task; removed again if the start fails.
    """
    from .handoff.fargate import start_event_task

    function = failure.function or env.get(ENV_SAFETY_NET_FUNCTION)
    if not function:
        raise LongrunConfigError(
            f"a dead letter does not name the function that failed: set "
            f"{ENV_SAFETY_NET_FUNCTION}=<function name or ARN> on the safety-net function, or "
            "use an on-failure destination (its records carry the function ARN)."
        )
    spool = _spool_of(store)
    event_name, marker_name = f"{EVENTS_FOLDER}{tag}.json", f"{EVENTS_FOLDER}{tag}.task.json"
    event_uri = spool.object_uri(event_name)
    now = ports.clock.wall_ms()
    marker: dict[str, Any] = {
        "request_id": tag,
        "function": function,
        "event_uri": event_uri,
        "task_arn": None,
        "started_ms": now,
    }
    if not spool.create_object(marker_name, _dumps(marker)):
        existing = spool.read_object(marker_name)
        try:
            found = json.loads(existing) if existing is not None else {}
        except ValueError:
            found = {}
        found = found if isinstance(found, dict) else {}
        if found.get("task_arn"):
            return {
                "action": "skipped",
                "reason": f"already started as {found['task_arn']}",
                "task_arn": found["task_arn"],
                "event_uri": found.get("event_uri", event_uri),
            }
        started = found.get("started_ms")
        if isinstance(started, int) and now - started < START_LEASE_MS:
            raise _Busy(
                f"another delivery of request {tag} is starting its task since {started} ms "
                "(epoch); this one is retried later"
            )
        log.warning("request %s: taking over a task start that never finished", tag)
        spool.put_object(marker_name, _dumps(marker))
    try:
        spool.put_object(event_name, _dumps(failure.payload))
        task_arn = start_event_task(target, function_name=function, event_uri=event_uri, tag=tag)
    except BaseException:
        with contextlib.suppress(Exception):
            spool.delete_object(marker_name)
        raise
    marker["task_arn"] = task_arn
    try:
        spool.put_object(marker_name, _dumps(marker))
    except StoreError as exc:  # the task runs; only a duplicate delivery is less well fenced
        log.warning("request %s: task %s started, but %s", tag, task_arn, exc)
    return {
        "action": "started",
        "reason": f"{failure.why}; running the event in Fargate ({function})",
        "task_arn": task_arn,
        "event_uri": event_uri,
        "function": function,
    }


# -- one record -------------------------------------------------------------------------------


class _Config:
    """The store and Fargate target, resolved on first need (once per invocation)."""

    def __init__(
        self,
        env: Mapping[str, str],
        store: CheckpointStore | None,
        target: FargateSettings | None,
    ) -> None:
        self.env = env
        self._store = store
        self._target = target

    @property
    def store(self) -> CheckpointStore:
        if self._store is None:
            self._store = env_store(self.env)
        return self._store

    @property
    def target(self) -> FargateSettings:
        if self._target is None:
            self._target = resolve_fargate(True, self.env)
            assert self._target is not None
        return self._target


def _safe_id(*candidates: str | None) -> str | None:
    for candidate in candidates:
        if candidate:
            try:
                return validate_run_id(candidate)
            except InvalidRunId:
                continue
    return None


def _handle(failure: _Failure, message_id: str | None, config: _Config) -> dict[str, Any]:
    ports = _ports.active()
    try:
        envelope = parse_envelope(failure.payload)
    except (EnvelopeError, InvalidRunId) as exc:
        raise _Malformed(f"the failed event is not a valid longrun envelope: {exc}") from None
    reason = f"safety net: {failure.why}"
    request_id = _safe_id(failure.request_id)
    run_id: str | None = None
    if envelope is not None:
        run_id = envelope.run_id
    elif isinstance(failure.payload, dict) and "longrun_child" in failure.payload:
        joined = _child(failure.payload, config.store)
        if isinstance(joined, dict):
            return joined
        run_id = joined
    elif request_id is not None and config.store.load(request_id) is not None:
        run_id = request_id
    if run_id is not None:
        resumed = resume_in_fargate(
            config.store,
            config.target,
            run_id,
            reason=reason,
            ports=ports,
            stopped_task=failure.stopped_task,
        )
        if resumed.action == "busy":
            # The hop that failed (or a duplicate of it) still holds a live lease: it may be
            # working. Fail the record so that it comes back; once the lease has expired the
            # run is taken over. Never take over a live claim.
            raise _Busy(
                f"run {run_id}: {resumed.reason}; not taken over while the lease is live, "
                "the record is retried"
            )
        return {
            "action": resumed.action,
            "run_id": run_id,
            "reason": resumed.reason,
            "hop": resumed.hop,
            "task_arn": resumed.task_arn,
        }
    tag = _safe_id(failure.request_id, message_id) or str(uuid.uuid4())
    return _start_plain(failure, tag, config.store, config.target, config.env, ports)


def _child(payload: dict[str, Any], store: CheckpointStore) -> dict[str, Any] | str | None:
    """A ``run.map`` child's start event: the child's run id to resume; or, for a child that
    settled and whose last invocation died before it joined its parent, the join done here
    (``{"action": "joined", ...}``); ``None`` if the child never began (run as an event)."""
    from .join import child_outcome, child_run_id, join_child, parse_child_event

    try:
        parsed = parse_child_event(payload)
    except (EnvelopeError, InvalidRunId) as exc:
        raise _Malformed(f"the failed event is not a valid longrun child event: {exc}") from None
    assert parsed is not None
    run_id = child_run_id(*parsed)
    loaded = store.load(run_id)
    if loaded is None:
        return None
    if child_outcome(loaded.checkpoint) is not None:
        join_child(store, loaded.checkpoint)
        status = loaded.checkpoint.status.value
        return {"action": "joined", "run_id": run_id, "reason": f"the child is {status}"}
    return run_id


_LEVELS = {"malformed": logging.WARNING, "error": logging.ERROR}


def process(
    event: Any,
    *,
    env: Mapping[str, str] | None = None,
    store: CheckpointStore | None = None,
    target: FargateSettings | None = None,
) -> dict[str, Any]:
    """Handle every record of ``event``; never raises for a single record.

    ``store`` and ``target`` default to ``LONGRUN_CHECKPOINT_URI`` and ``LONGRUN_FARGATE_*``
    of ``env`` (the process environment). Returns ``{"batchItemFailures": [...],
    "results": [...]}``: one result per record, with its ``action`` (``escalated``,
    ``skipped``, ``started``, ``malformed`` or ``error``); SQS records whose handling failed
    (not malformed ones) are listed in ``batchItemFailures`` for redelivery.
    """
    config = _Config(_env() if env is None else env, store, target)
    records = _records(event)
    results: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for index, record in enumerate(records):
        result: dict[str, Any] = {"record": index, "source": record.source}
        if record.message_id:
            result["message_id"] = record.message_id
        try:
            failure = record.read()
            result["request_id"] = failure.request_id
            result.update(_handle(failure, record.message_id, config))
        except _Malformed as exc:
            result.update(action="malformed", reason=str(exc))
        except _NothingToDo as exc:
            result.update(action="skipped", reason=str(exc))
        except Exception as exc:
            result.update(action="error", reason=f"{type(exc).__name__}: {exc}")
            if record.source == "sqs" and record.message_id:
                failures.append({"itemIdentifier": record.message_id})
        results.append({k: v for k, v in result.items() if v is not None})
        line = {"longrun_safety_net": result["action"], **results[-1]}
        log.log(_LEVELS.get(result["action"], logging.INFO), json.dumps(line, default=str))
    return {"batchItemFailures": failures, "results": results}


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """The Lambda handler (``longrun.safety_net.handler``): see the module documentation.

    For an SQS batch the failed records are returned in ``batchItemFailures``. For SNS and
    direct invocations (one record each) a failed record raises :class:`SafetyNetError` so
    that Lambda retries the invocation; malformed records never do.
    """
    if not logging.getLogger().handlers:  # outside Lambda: one JSON line per record on stdout
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    if log.level == logging.NOTSET:  # Lambda's root logger is at WARNING unless configured
        log.setLevel(logging.INFO)
    summary = process(event)
    # An SQS record that failed is redelivered through batchItemFailures; any other failed
    # record (SNS, a destination record, an SQS record without a messageId) is retried
    # only if the invocation fails.
    errors = [
        r
        for r in summary["results"]
        if r["action"] == "error" and (r["source"] != "sqs" or "message_id" not in r)
    ]
    if errors:
        raise SafetyNetError(
            f"{len(errors)} record(s) could not be handled; Lambda will retry: "
            + "; ".join(str(r["reason"]) for r in errors)
        )
    return summary
