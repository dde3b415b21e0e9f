"""Completion notifications: ``@longrun(..., on_complete=...)``.

When a run settles (completed, or failed for good), the invocation that settled it records a
:class:`~longrun.protocol.Notice` in the same write as the result (``sending``, held by it
until its deadline, as a claim is), sends the notification, then records it ``sent``. If the
sending fails, the notice is recorded ``failed`` and the invocation raises
:class:`NotificationFailed`: the result stays stored, and Lambda's retry of the invocation
finds the notice owed and sends it (:func:`~longrun.protocol.notice_due` decides who may).
Only one invocation holds a notice at a time, so duplicate deliveries and retries send it
once; a sender that dies between the send and its record leaves it to be sent again after
its lease, and receivers can drop that repeat by the payload's ``notification_id`` (FIFO
queues and topics do, by their deduplication id).

A target is an SNS topic ARN, an SQS queue URL, an EventBridge event bus ARN, or a callable
taking the payload.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import CheckpointConflict, LongrunConfigError, NotificationFailed, StoreError
from .protocol import Checkpoint, Notice, Status

if TYPE_CHECKING:
    from .caller import Writer

__all__ = ["NotificationFailed", "Target", "deliver", "notice_for", "payload", "target_of"]

log = logging.getLogger("longrun")

_SNS = re.compile(r"arn:aws[a-z-]*:sns:([a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?")
_EVENTS = re.compile(r"arn:aws[a-z-]*:events:([a-z0-9-]+):\d{12}:event-bus/[A-Za-z0-9._/-]+")
_SQS = re.compile(r"https?://[^/\s]+/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?")
_SQS_REGION = re.compile(r"sqs\.([a-z0-9-]+)\.amazonaws")
DETAIL_TYPE = "longrun run settled"
SOURCE = "longrun"


@dataclass(frozen=True)
class Target:
    """Where a run's completion notification goes."""

    kind: str
    """``sns``, ``sqs``, ``events`` or ``callable``."""
    address: str
    """The ARN or URL; for a callable, its qualified name."""
    region: str | None = None
    fifo: bool = False
    fn: Callable[[dict[str, Any]], Any] | None = None

    def send(self, message: dict[str, Any]) -> None:
        """Deliver ``message``; NotificationFailed (with the cause) if it did not go."""
        try:
            if self.fn is not None:
                self.fn(message)
                return
            body = json.dumps(message, separators=(",", ":"), default=str)
            client = _client(self.kind, self.region)
            dedup = message["notification_id"]
            if self.kind == "sns":
                extra = (
                    {"MessageGroupId": message["run_id"], "MessageDeduplicationId": dedup}
                    if self.fifo
                    else {}
                )
                client.publish(TopicArn=self.address, Message=body, **extra)
            elif self.kind == "sqs":
                extra = (
                    {"MessageGroupId": message["run_id"], "MessageDeduplicationId": dedup}
                    if self.fifo
                    else {}
                )
                client.send_message(QueueUrl=self.address, MessageBody=body, **extra)
            else:
                entry = {
                    "Source": SOURCE,
                    "DetailType": DETAIL_TYPE,
                    "Detail": body,
                    "EventBusName": self.address,
                }
                response = client.put_events(Entries=[entry])
                if response.get("FailedEntryCount"):
                    failed = response["Entries"][0]
                    raise RuntimeError(f"{failed.get('ErrorCode')}: {failed.get('ErrorMessage')}")
        except Exception as exc:
            raise NotificationFailed(
                f"on_complete {self.kind} {self.address}: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc


def target_of(value: object) -> Target:
    """The target ``on_complete=value`` names; LongrunConfigError says what is wrong."""
    if callable(value):
        name = getattr(value, "__qualname__", None) or type(value).__name__
        module = getattr(value, "__module__", None)
        return Target("callable", f"{module}.{name}" if module else str(name), fn=value)
    if isinstance(value, str):
        text = value.strip()
        if match := _SNS.fullmatch(text):
            return Target("sns", text, match.group(1), fifo=bool(match.group(2)))
        if match := _EVENTS.fullmatch(text):
            return Target("events", text, match.group(1))
        if match := _SQS.fullmatch(text):
            region = _SQS_REGION.search(text)
            return Target("sqs", text, region.group(1) if region else None, bool(match.group(1)))
    shown = repr(value)
    raise LongrunConfigError(
        f"on_complete={shown[:120]} is not a notification target: give an SNS topic ARN "
        "(arn:aws:sns:REGION:ACCOUNT:TOPIC), an SQS queue URL "
        "(https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE), an EventBridge event bus ARN "
        "(arn:aws:events:REGION:ACCOUNT:event-bus/NAME) or a callable taking the payload."
    )


def notice_for(
    run_id: str, hop: int, status: Status, target: Target, *, by: str, until_ms: int | None
) -> Notice:
    """The notice of run ``run_id`` settling with ``status`` at ``hop``, held by ``by`` until
    ``until_ms``: written in the same write as the settling."""
    return Notice(
        id=f"{run_id}:{status.value}:{hop}",
        status=status.value,
        target=f"{target.kind}:{target.address}",
        state="sending",
        attempts=1,
        by=by,
        until_ms=until_ms,
    )


def payload(checkpoint: Checkpoint, notice: Notice) -> dict[str, Any]:
    """What the notification says: the run, how it ended, its result or error, its hops and
    how long it took."""
    message: dict[str, Any] = {
        "notification_id": notice.id,
        "run_id": checkpoint.run_id,
        "status": checkpoint.status.value,
        "hops": checkpoint.hop + 1,
        "started_ms": checkpoint.created_ms,
        "ended_ms": checkpoint.updated_ms,
        "duration_ms": checkpoint.updated_ms - checkpoint.created_ms,
        "function": checkpoint.function,
    }
    if checkpoint.status is Status.COMPLETED:
        message["result"] = checkpoint.result
        if checkpoint.result_note:
            message["result_note"] = checkpoint.result_note
    elif checkpoint.error is not None:
        message["error"] = {"type": checkpoint.error.type, "message": checkpoint.error.message}
    return message


_CLIENTS: dict[tuple[str, str | None, str | None], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(kind: str, region: str | None) -> Any:
    """A boto3 client for ``kind`` in ``region`` (kept for the process, as Lambda reuses it)."""
    import os

    service = {"sns": "sns", "sqs": "sqs", "events": "events"}[kind]
    endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get(
        "AWS_ENDPOINT_URL"
    )
    key = (kind, region, endpoint)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            import boto3

            session: Any = boto3.session.Session()
            client = session.client(service, region_name=region)
            _CLIENTS[key] = client
        return client


def deliver(writer: Writer, target: Target, now_ms: int) -> None:
    """Send the notice ``writer`` holds (its last write), then record it ``sent``; on failure
    record it ``failed`` (released: a retry takes it) and raise NotificationFailed.

    A lost race on either record is left alone: the notification went (or failed) as said,
    and only the record of it is someone else's now."""
    stored = writer.stored()
    notice = stored.notice
    if notice is None:
        return
    try:
        target.send(payload(stored, notice))
    except NotificationFailed as exc:
        failed = notice.replace(state="failed", by=None, until_ms=None, error=str(exc)[:500])
        try:
            writer.write("notice", stored.replace(notice=failed))
        except (CheckpointConflict, StoreError) as record_exc:
            log.warning("run %s: could not record the failed notification: %s",
                        stored.run_id, record_exc)  # fmt: skip
        raise
    sent = notice.replace(state="sent", by=None, until_ms=None, error=None, sent_ms=now_ms)
    try:
        writer.write("notice", stored.replace(notice=sent))
    except (CheckpointConflict, StoreError) as exc:
        log.warning("run %s: notification %s sent, but not recorded: %s", stored.run_id,
                    notice.id, exc)  # fmt: skip
    log.info("run %s: notified %s (%s)", stored.run_id, notice.target, notice.status)
