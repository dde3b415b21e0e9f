"""What the emulator records: one :class:`InvocationRecord` per invocation or task, a
:class:`RunSummary` per run with its :class:`Handoff` latencies, and the :class:`Report`."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...protocol import Status


@dataclass
class InvocationRecord:
    """One invocation (a Lambda process) or one Fargate task, as the emulator saw it."""

    index: int
    kind: str
    """``start``, ``hop`` (a continuation envelope), ``retry``, ``duplicate``, ``sync``,
    ``safety-net`` (an on-failure delivery) or ``fargate`` (a task)."""
    function: str
    where: str
    """``lambda`` or ``fargate``."""
    request_id: str
    attempt: int
    run_id: str | None = None
    hop: int | None = None
    """The hop this invocation claimed (from the checkpoint), else the hop it was sent for."""
    started_ms: int = 0
    ended_ms: int = 0
    start_s: float = 0.0
    """Seconds since the emulator started."""
    init_ms: float | None = None
    """Process start to the runtime's first ``next`` (imports: a cold start); ``None`` warm."""
    cold: bool = True
    """A new execution environment (init ran); ``False``: a warm one reused."""
    duration_s: float = 0.0
    """Invoke phase (``next`` to answer or kill) for Lambda; process lifetime for a task."""
    outcome: str = "running"
    """``completed``, ``continued``, ``escalated``, ``duplicate``, ``superseded``,
    ``cancelled``, ``existing``, ``killed``, ``crashed``, ``error``, or the safety net's
    action (``escalated``, ``skipped``, ``started``, ...)."""
    reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    response: Any = None
    items: int | None = None
    """Items this invocation's hop entry holds in the checkpoint (what it saved)."""
    checkpoint_bytes: int | None = None
    checkpoint_status: str | None = None
    unsaved_ms: int | None = None
    """For a killed hop: kill time minus its last checkpoint write (the window whose items
    are done again by the retry)."""
    send_ms: int | None = None
    """For a hop that handed off: its ``continued``/``escalated`` write to the runtime's
    answer, i.e. what sending the next hop (Invoke or RunTask) cost inside the invocation."""
    pid: int | None = None
    task_arn: str | None = None
    log: list[str] = field(default_factory=list, repr=False)
    event_hop: int | None = field(default=None, repr=False)
    payload: bytes = field(default=b"", repr=False)
    killed_at_ms: int | None = field(default=None, repr=False)
    exit_code: int | None = field(default=None, repr=False)
    answered_ms: int | None = field(default=None, repr=False)
    memory_mb: int | None = field(default=None, repr=False)
    """The runtime process's own exit status, if it exited before being killed."""

    @property
    def end_s(self) -> float:
        return self.start_s + (self.ended_ms - self.started_ms) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        keep = (
            "index",
            "kind",
            "function",
            "where",
            "request_id",
            "attempt",
            "run_id",
            "hop",
            "started_ms",
            "ended_ms",
            "start_s",
            "init_ms",
            "cold",
            "duration_s",
            "outcome",
            "reason",
            "error_type",
            "error_message",
            "response",
            "items",
            "checkpoint_bytes",
            "checkpoint_status",
            "unsaved_ms",
            "send_ms",
            "pid",
            "task_arn",
        )
        data = {name: getattr(self, name) for name in keep}
        data["end_s"] = round(self.end_s, 3)
        data["start_s"] = round(self.start_s, 3)
        data["duration_s"] = round(self.duration_s, 3)
        return data

    def line(self) -> str:
        """One line for a terminal."""
        hop = "-" if self.hop is None else str(self.hop)
        items = "-" if self.items is None else str(self.items)
        size = "-" if self.checkpoint_bytes is None else _size(self.checkpoint_bytes)
        where = self.where if self.where == "lambda" else f"{self.where:7}"
        what = self.outcome + (f" ({self.reason})" if self.reason else "")
        return (
            f"[{self.start_s:7.2f}s] {self.kind:10} hop {hop:>2} {where:7} "
            f"{self.duration_s:6.2f}s  items {items:>5}  ckpt {size:>8}  {what}"
        )


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} kB"


@dataclass(frozen=True)
class Handoff:
    """One hop hand-off, measured from the checkpoint alone.

    ``ms`` is the next hop's claim time (its hop entry's ``started_ms``, written when the new
    invocation has started, imported the handler, loaded the checkpoint and claimed it, just
    before user code runs) minus the yielding hop's ``continued`` (or ``escalated``) write
    (its hop entry's ``ended_ms``, equal to the checkpoint's ``updated_ms`` of that write).
    """

    run_id: str
    from_hop: int
    to_hop: int
    via: str
    """Where the next hop ran: ``lambda`` (async Invoke) or ``fargate`` (RunTask)."""
    written_ms: int
    claimed_ms: int

    @property
    def ms(self) -> int:
        return self.claimed_ms - self.written_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_hop": self.from_hop,
            "to_hop": self.to_hop,
            "via": self.via,
            "written_ms": self.written_ms,
            "claimed_ms": self.claimed_ms,
            "ms": self.ms,
        }


@dataclass
class RunSummary:
    """A run as its last checkpoint and the invocations that touched it tell it."""

    run_id: str
    function: str
    status: str | None
    result: Any
    error: Any
    hops: list[dict[str, Any]]
    """The checkpoint's hop entries (every attempt)."""
    items: int
    lambda_hops: int
    fargate_hops: int
    invocations: int
    kills: int
    retries: int
    duplicates_delivered: int
    duplicates_refused: int
    safety_net: int
    handoffs: list[Handoff]
    checkpoint_bytes: int | None
    started_ms: int
    ended_ms: int

    @property
    def elapsed_s(self) -> float:
        return (self.ended_ms - self.started_ms) / 1000.0

    def handoff_median_ms(self, via: str | None = "lambda") -> float | None:
        values = [h.ms for h in self.handoffs if via is None or h.via == via]
        return statistics.median(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "function": self.function,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "items": self.items,
            "lambda_hops": self.lambda_hops,
            "fargate_hops": self.fargate_hops,
            "invocations": self.invocations,
            "kills": self.kills,
            "retries": self.retries,
            "duplicates_delivered": self.duplicates_delivered,
            "duplicates_refused": self.duplicates_refused,
            "safety_net": self.safety_net,
            "handoffs": [h.to_dict() for h in self.handoffs],
            "handoff_median_ms": self.handoff_median_ms("lambda"),
            "handoff_to_fargate_ms": self.handoff_median_ms("fargate"),
            "checkpoint_bytes": self.checkpoint_bytes,
            "elapsed_s": round(self.elapsed_s, 3),
            "hops": self.hops,
        }

    def lines(self) -> list[str]:
        median = self.handoff_median_ms("lambda")
        handoff = "-" if median is None else f"{median:.0f} ms"
        result = json.dumps(self.result, default=str)
        if len(result) > 200:
            result = result[:200] + "..."
        return [
            f"run {self.run_id}: {self.status} in {self.elapsed_s:.2f}s, "
            f"{self.lambda_hops} Lambda hop(s) + {self.fargate_hops} Fargate, "
            f"{self.invocations} invocation(s), {self.items} item(s)",
            f"  kills {self.kills}, retries {self.retries}, duplicates delivered "
            f"{self.duplicates_delivered} / refused {self.duplicates_refused}, "
            f"safety net {self.safety_net}, hand-off median {handoff} "
            "(continued write -> next hop's claim)",
            f"  result {result}"
            + (f"  error {self.error.get('type')}" if isinstance(self.error, dict) else ""),
        ]


@dataclass
class Report:
    """Everything that happened in the emulator, as of :meth:`LocalLambda.report`."""

    invocations: list[InvocationRecord]
    runs: list[RunSummary]
    dead_letters: list[dict[str, Any]]
    elapsed_s: float

    def run(self, run_id: str | None = None) -> RunSummary:
        """The summary of ``run_id`` (default: the only, or first, run)."""
        if run_id is None:
            if not self.runs:
                raise LookupError("no run was recorded")
            return self.runs[0]
        for run in self.runs:
            if run.run_id == run_id:
                return run
        raise LookupError(f"no run {run_id!r} (runs: {[r.run_id for r in self.runs]})")

    def of_run(self, run_id: str) -> list[InvocationRecord]:
        return [r for r in self.invocations if r.run_id == run_id]

    def to_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": round(self.elapsed_s, 3),
            "runs": [r.to_dict() for r in self.runs],
            "invocations": [r.to_dict() for r in self.invocations],
            "dead_letters": self.dead_letters,
        }

    def text(self) -> str:
        lines = [r.line() for r in self.invocations]
        for run in self.runs:
            lines.extend(run.lines())
        if self.dead_letters:
            lines.append(f"dead letters: {len(self.dead_letters)}")
        return "\n".join(lines)


def handoffs(run_id: str, hops: Sequence[Mapping[str, Any]]) -> list[Handoff]:
    """The hand-offs of a run, from its checkpoint's hop entries (see :class:`Handoff`)."""
    found: list[Handoff] = []
    for index, entry in enumerate(hops):
        handed_off = entry.get("outcome") in (Status.CONTINUED, Status.ESCALATED)
        if not handed_off or entry.get("ended_ms") is None:
            continue
        nxt = next((h for h in hops[index + 1 :] if h.get("hop") == entry.get("hop", -2) + 1), None)
        if nxt is None or nxt.get("started_ms") is None:
            continue
        found.append(
            Handoff(
                run_id=run_id,
                from_hop=int(entry["hop"]),
                to_hop=int(nxt["hop"]),
                via=str(nxt.get("where")),
                written_ms=int(entry["ended_ms"]),
                claimed_ms=int(nxt["started_ms"]),
            )
        )
    return found
