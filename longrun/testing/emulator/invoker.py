"""Invoking: the Invoke API's requests queued and delivered, async failures retried, events
that failed every retry sent to the function's on-failure destination."""

from __future__ import annotations

import heapq
import itertools
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from ...errors import LongrunError
from ..delivery import Delivery
from ..invoke_endpoint import InvokeEndpoint, InvokeRequest
from .core import Core
from .functions import LocalFunction
from .helpers import ACCOUNT, REGION, FunctionError, envelope_of, iso, now_ms
from .invocation import InvocationRunner
from .records import InvocationRecord


class Invoker:
    """Serves the Invoke API: queues ``Event`` invocations and delivers each one on a thread
    of its own (retries, duplicates, the on-failure destination), and runs ``RequestResponse``
    ones on the caller's request."""

    def __init__(self, core: Core, runner: InvocationRunner) -> None:
        self._core = core
        self._runner = runner
        self._queue: list[tuple[float, int, Delivery]] = []  # a heap: (not_before, seq, ...)
        self._seq = itertools.count()
        self._active_invocations = 0

    def start(self) -> None:
        """Start the Invoke API (on the core) and the loop that delivers queued events."""
        self._core.invoke_endpoint = InvokeEndpoint(
            on_event=self.on_event,
            on_invoke=self.on_invoke,
            functions=set(),
            region=REGION,
            account=ACCOUNT,
        ).start()
        self._core.spawn(self._dispatch_loop, "emulator-dispatch")

    def idle(self) -> bool:
        """Nothing queued and no invocation running (call with the lock held)."""
        return not self._queue and self._active_invocations == 0

    def invoke(
        self,
        function: LocalFunction | str,
        event: Any,
        *,
        sync: bool = False,
        timeout: float | None = None,
        tenant_id: str | None = None,
    ) -> Any:
        """Invoke ``function``: see :meth:`LocalLambda.invoke`."""
        name = function.name if isinstance(function, LocalFunction) else function
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        request = urllib.request.Request(
            f"{self._core.endpoint.url}/2015-03-31/functions/{name}/invocations",
            data=payload,
            method="POST",
            headers={
                "X-Amz-Invocation-Type": "RequestResponse" if sync else "Event",
                "Content-Type": "application/json",
                **({"X-Amz-Tenant-Id": tenant_id} if tenant_id else {}),
            },
        )
        wait = timeout or (self._core.functions[name].timeout_s + self._core.init_timeout_s + 30)
        try:
            with urllib.request.urlopen(request, timeout=wait) as reply:
                body = reply.read()
                request_id = reply.headers.get("x-amzn-RequestId", "")
                function_error = reply.headers.get("X-Amz-Function-Error")
        except urllib.error.HTTPError as exc:
            code = exc.headers.get("x-amzn-ErrorType", str(exc.code))
            detail = exc.read().decode("utf-8", "replace")
            raise LongrunError(f"Invoke {name}: {code}: {detail}") from None
        if not sync:
            return request_id
        document = json.loads(body) if body else None
        if function_error:
            raise FunctionError(document if isinstance(document, dict) else {})
        return document

    def on_event(self, request: InvokeRequest) -> None:
        """An ``Event`` invocation the Invoke API accepted: queue it (and maybe a duplicate)."""
        function = self._core.functions[request.function_name]
        kind = "hop" if envelope_of(request.payload) is not None else "start"
        delivery = Delivery(
            request.payload,
            request.request_id,
            kind=kind,
            not_before=time.monotonic(),
            function=function.name,
            tenant_id=request.headers.get("X-Amz-Tenant-Id"),
        )
        self._enqueue(delivery)
        with self._core.cond:
            duplicate = (
                function.duplicate_rate > 0 and self._core.rng.random() < function.duplicate_rate
            )
            delay = self._core.rng.uniform(0.0, function.duplicate_delay_s) if duplicate else 0.0
        if duplicate:
            again = function.delivery.duplicate(delivery, not_before=time.monotonic() + delay)
            self._enqueue(again)

    def on_invoke(self, request: InvokeRequest) -> Any:
        """A ``RequestResponse`` invocation: run it now; its response, or its error raised."""
        function = self._core.functions[request.function_name]
        delivery = Delivery(
            request.payload,
            request.request_id,
            kind="sync",
            not_before=time.monotonic(),
            function=function.name,
            tenant_id=request.headers.get("X-Amz-Tenant-Id"),
        )
        with self._core.cond:
            self._active_invocations += 1
            self._core.changed()
        try:
            record, invocation = self._runner.execute(delivery)
        finally:
            with self._core.cond:
                self._active_invocations -= 1
                self._core.changed()
        if invocation is not None and invocation.outcome == "response":
            return invocation.response or b"null"
        raise _function_error(record)

    def _enqueue(self, delivery: Delivery) -> None:
        with self._core.cond:
            heapq.heappush(self._queue, (delivery.not_before, next(self._seq), delivery))
            self._core.changed()

    def _dispatch_loop(self) -> None:
        while True:
            with self._core.cond:
                while True:
                    if self._core.stopping:
                        return
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        _, _, delivery = heapq.heappop(self._queue)
                        self._active_invocations += 1
                        self._core.changed()
                        break
                    wait = self._queue[0][0] - now if self._queue else 1.0
                    self._core.cond.wait(max(0.001, min(wait, 1.0)))
            self._core.spawn(self._deliver, f"invoke-{delivery.request_id[:8]}", delivery)

    def _deliver(self, delivery: Delivery) -> None:
        try:
            record, _ = self._runner.execute(delivery)
            failed = record.outcome in ("error", "killed", "crashed")
            function = self._core.functions[delivery.function]
            if failed and not self._core.stopping:
                retry = function.delivery.after_failure(delivery, time.monotonic())
                if retry is not None:
                    self._enqueue(retry)
                elif function.delivery.dead_letters(delivery):
                    self._failed_event(function, delivery, record)
        finally:
            with self._core.cond:
                self._active_invocations -= 1
                self._core.changed()

    def _failed_event(
        self, function: LocalFunction, delivery: Delivery, record: InvocationRecord
    ) -> None:
        """Retries exhausted: a Lambda destination record for the on-failure target."""
        try:
            payload: Any = json.loads(delivery.event) if delivery.event else None
        except ValueError:
            payload = delivery.event.decode("utf-8", "replace")
        destination = function.delivery.destination_record(
            delivery,
            function_arn=function.arn,
            payload=payload,
            error_type=record.error_type or "Runtime.Unknown",
            error_message=record.error_message or record.outcome,
            timestamp=iso(now_ms()),
        )
        error = destination["responsePayload"]
        target = function.on_failure
        self._core.log(
            f"emulator: {function.name} request {delivery.request_id} failed "
            f"{delivery.attempt} time(s) ({error['errorType']}); "
            + (f"on-failure destination {target}" if target else "dropped (no destination)")
        )
        if target is None or target not in self._core.functions:
            with self._core.cond:
                self._core.dead_letters.append(destination)
            return
        self._enqueue(
            Delivery(
                json.dumps(destination).encode(),
                str(uuid.uuid4()),
                kind="safety-net",
                not_before=time.monotonic(),
                function=target,
            )
        )


def _function_error(record: InvocationRecord) -> Exception:
    """An exception the Invoke endpoint turns into Lambda's function error document."""
    kind = record.error_type or "Runtime.Unknown"
    error_class: type[Exception] = type(kind, (Exception,), {})
    return error_class(record.error_message or record.outcome)
