"""Lambda's asynchronous delivery, modelled once for the simulator and the emulator.

Lambda queues an ``Event`` invocation and delivers it at least once: a delivery that fails
(an error, a timeout kill, a crash) is retried with the same event and the same request id,
``retries`` times (2 by default) after growing delays (about 1 and 2 minutes); an event that
failed every attempt goes to the function's on-failure destination or dead-letter queue. Now
and then an event is delivered twice. ECS does not retry a task, and a synchronous caller
retries by itself, so neither is retried here.

:class:`AsyncDelivery` holds those rules; :class:`Delivery` is one attempt. The simulator runs
deliveries on virtual time, the emulator on real time; both ask the same questions here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["AsyncDelivery", "Delivery"]

NOT_RETRIED = frozenset({"fargate", "sync"})
"""Kinds of delivery nobody retries: an ECS task, a synchronous invocation."""


@dataclass
class Delivery:
    """One delivery attempt of an event.

    ``kind``: ``start`` (a new event), ``hop`` (a continuation envelope), ``retry``,
    ``duplicate``, ``fargate`` (a task), ``sync`` or ``safety-net`` (a failure record);
    ``first_kind`` is the kind of the event's first delivery (a retry keeps it).
    """

    event: Any
    request_id: str
    attempt: int = 1
    kind: str = "start"
    not_before: float = 0.0
    function: str = ""
    first_kind: str = ""
    tenant_id: str | None = None
    """``X-Amz-Tenant-Id`` of the Invoke that queued it (per-tenant isolation mode)."""

    def __post_init__(self) -> None:
        if not self.first_kind:
            self.first_kind = self.kind


@dataclass(frozen=True)
class AsyncDelivery:
    """Lambda's asynchronous invocation rules: retries, their delays, duplicates."""

    retries: int = 2
    """Retries after the first attempt (Lambda's ``MaximumRetryAttempts``, 0-2)."""
    retry_delays_s: tuple[float, ...] = (60.0, 120.0)
    """Delay before each retry; the last one repeats."""

    def retry_delay(self, attempt: int) -> float:
        """Seconds before attempt ``attempt`` (2 is the first retry)."""
        if not self.retry_delays_s:
            return 0.0
        return self.retry_delays_s[min(max(attempt - 2, 0), len(self.retry_delays_s) - 1)]

    def after_failure(self, delivery: Delivery, now: float) -> Delivery | None:
        """The retry of a failed ``delivery``, or ``None`` when it is dead-lettered (or is
        of a kind nobody retries: see :meth:`dead_letters`)."""
        if delivery.kind in NOT_RETRIED or delivery.attempt > self.retries:
            return None
        attempt = delivery.attempt + 1
        return replace(
            delivery, attempt=attempt, kind="retry", not_before=now + self.retry_delay(attempt)
        )

    def dead_letters(self, delivery: Delivery) -> bool:
        """Whether a failed ``delivery`` that is not retried goes to the on-failure target."""
        return delivery.kind not in NOT_RETRIED and delivery.attempt > self.retries

    @staticmethod
    def duplicate(
        delivery: Delivery, *, not_before: float | None = None, new_request_id: bool = False
    ) -> Delivery:
        """A second delivery of the same event: the same request id, as Lambda's are
        (``new_request_id``: a fresh one, as a second Invoke of the same payload would)."""
        return replace(
            delivery,
            kind="duplicate",
            request_id=str(uuid.uuid4()) if new_request_id else delivery.request_id,
            not_before=delivery.not_before if not_before is None else not_before,
        )

    @staticmethod
    def destination_record(
        delivery: Delivery,
        *,
        function_arn: str,
        payload: Any,
        error_type: str,
        error_message: str,
        timestamp: str,
    ) -> dict[str, Any]:
        """The on-failure destination record of an event that failed every attempt."""
        return {
            "version": "1.0",
            "timestamp": timestamp,
            "requestContext": {
                "requestId": delivery.request_id,
                "functionArn": f"{function_arn}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": delivery.attempt,
            },
            "requestPayload": payload,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": {"errorType": error_type, "errorMessage": error_message},
        }
