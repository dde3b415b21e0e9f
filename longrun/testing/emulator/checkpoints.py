"""What the emulator reads from a function's checkpoints, for the record of an invocation or
a task: the run it belongs to, the hop it claimed, what it saved."""

from __future__ import annotations

from typing import Any

from ...protocol import Status
from ...stores.base import Loaded
from .core import Core
from .functions import LocalFunction
from .helpers import now_ms
from .records import InvocationRecord


class CheckpointReader:
    """Fills in an :class:`InvocationRecord` from the checkpoint of its run."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._run_ids: dict[str, str] = {}
        """Request id → the run it started (found by :meth:`find_run`)."""

    def find_run(self, function: LocalFunction, record: InvocationRecord) -> str | None:
        """The run ``record`` belongs to: the one its response names, else the one its request
        id started (as the run id, or as a run's ``origin_request_id``); ``None`` if unknown."""
        response = record.response
        if isinstance(response, dict) and isinstance(response.get("longrun"), dict):
            run_id = response["longrun"].get("run_id")
            if isinstance(run_id, str):
                return run_id
        with self._core.cond:
            if record.request_id in self._run_ids:
                return self._run_ids[record.request_id]
        assert function.store is not None
        try:
            if function.store.load(record.request_id) is not None:
                found: str | None = record.request_id
            else:
                found = None
                for run_id in function.store.list_runs():
                    loaded = function.store.load(run_id)
                    if loaded and loaded.document.get("origin_request_id") == record.request_id:
                        found = run_id
                        break
        except Exception:  # an invalid request id as run id, a store error: no run known
            return None
        if found:
            with self._core.cond:
                self._run_ids[record.request_id] = found
        return found

    def read(self, function: LocalFunction, record: InvocationRecord, run_id: str) -> None:
        """Fill in ``record``'s hop, items and checkpoint facts from ``run_id``'s checkpoint."""
        assert function.store is not None
        try:
            loaded = function.store.load(run_id)
        except Exception as exc:
            record.log.append(f"emulator: cannot read the checkpoint of {run_id}: {exc}")
            return
        if loaded is None:
            return
        record.checkpoint_bytes = loaded.size
        record.checkpoint_status = str(loaded.document.get("status"))
        entry = _hop_entry(loaded, record)
        if entry is None:
            return
        record.hop = entry.get("hop")
        record.items = int(entry.get("items") or 0)
        ended = entry.get("ended_ms")
        if (
            entry.get("outcome") in (Status.CONTINUED, Status.ESCALATED)
            and isinstance(ended, int)
            and record.answered_ms is not None
        ):
            record.send_ms = record.answered_ms - ended
        claim = loaded.document.get("claim") or {}
        if (
            record.outcome == "killed"
            and record.killed_at_ms is not None
            and entry.get("outcome") is None
            and claim.get("request_id") == record.request_id
        ):
            record.unsaved_ms = record.killed_at_ms - int(loaded.document["updated_ms"])


def _hop_entry(loaded: Loaded, record: InvocationRecord) -> dict[str, Any] | None:
    """The checkpoint's hop entry this invocation claimed (same request id, started during it)."""
    found = None
    for entry in loaded.document.get("hops") or []:
        started = entry.get("started_ms")
        if (
            entry.get("request_id") == record.request_id
            and isinstance(started, int)
            and record.started_ms - 5 <= started <= (record.ended_ms or now_ms()) + 5
        ):
            found = entry
    return found
