"""A transport that keeps hand-offs for the test to deliver (``longrun.ports``)."""

from __future__ import annotations

import json
import threading
from typing import Any

from ..ports import Transport

__all__ = ["RecordingTransport"]


class RecordingTransport(Transport):
    """Continuation envelopes (and ``run.map`` children's start events) are kept, in order,
    instead of invoking a function.

    ``sent`` holds every envelope; ``next(run_id)`` takes the oldest one of a run. Install it
    with ``ports.installed(transport=...)`` and call the handler with the envelopes to run a
    chain of hops on the real clock (the simulator does this on virtual time).
    """

    invoke_threads = 1  # a fan-out's children are recorded in order

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any], str | None]] = []
        """Every invoke: ``(function, event, tenant_id)``."""
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def invoke_async(
        self, function: str, payload: bytes, client: Any, *, tenant_id: str | None = None
    ) -> None:
        envelope = json.loads(payload)
        if "longrun" in envelope:
            run_id = envelope["longrun"]["run_id"]
        else:  # a run.map child's start event
            from ..join import child_run_id, parse_child_event

            parsed = parse_child_event(envelope)
            assert parsed is not None, f"not a longrun event: {payload[:200]!r}"
            run_id = child_run_id(*parsed)
        with self._lock:
            self.sent.append(envelope)
            self.calls.append((function, envelope, tenant_id))
            self._pending.setdefault(run_id, []).append(envelope)

    def next(self, run_id: str) -> dict[str, Any]:
        """The oldest envelope of ``run_id`` not taken yet (IndexError if none)."""
        with self._lock:
            return self._pending[run_id].pop(0)
