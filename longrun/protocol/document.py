"""The checkpoint document as a typed structure, and the statuses a run goes through."""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from typing import Any

from ..checkpoint import FORMAT, EncodedParts, encode_document, encode_split
from ..record import Record, field

__all__ = [
    "FORMAT",
    "NEXT",
    "WHERE",
    "Answer",
    "Checkpoint",
    "Claim",
    "Cursor",
    "ErrorRecord",
    "Escalation",
    "HopEntry",
    "Status",
    "answer",
    "new_write_id",
]


class Status(str, enum.Enum):
    """Where a run stands. ``str`` values, as stored in the document."""

    RUNNING = "running"
    """A hop holds the claim (a lease until ``claim.deadline_ms``) and runs user code."""
    CONTINUED = "continued"
    """A hop checkpointed and handed the run to the next Lambda hop (``hop + 1``)."""
    ESCALATED = "escalated"
    """A hop checkpointed and handed the run to a Fargate task (``hop + 1``)."""
    WAITING = "waiting"
    """The run waits (for a time, a callback or child runs): the wake-up claims ``hop + 1``."""
    COMPLETED = "completed"
    """The handler returned; ``result`` holds its value. Final."""
    FAILED = "failed"
    """A hop failed; ``error`` says why (``terminal``: a guard, no retry resumes it)."""
    CANCELLED = "cancelled"
    """Cancelled from outside: no further hop runs. Final."""

    def __str__(self) -> str:
        return self.value

    @property
    def settled(self) -> bool:
        """Final: nothing will ever run for this run again."""
        return self in (Status.COMPLETED, Status.CANCELLED)

    @property
    def handed_off(self) -> bool:
        """The run waits for its next hop (``hop + 1``) to claim it."""
        return self in (Status.CONTINUED, Status.ESCALATED, Status.WAITING)


class Answer(str, enum.Enum):
    """What an invocation answers (``{"longrun": {"status": ...}}``) when it returns no result."""

    CONTINUED = "continued"
    """The hop ended early and handed the run on (``next``: lambda or fargate)."""
    DUPLICATE = "duplicate"
    """Another invocation has (or had) this hop: nothing ran."""
    SUPERSEDED = "superseded"
    """A newer invocation took the run over while this hop ran: it stopped without hopping."""
    CANCELLED = "cancelled"
    """The run is cancelled: nothing ran, or this hop stopped."""
    STOPPED = "stopped"
    """``LONGRUN_DISABLED``: the handler ended its hop, and nothing carries the run on."""

    def __str__(self) -> str:
        return self.value


def answer(run_id: str, status: Answer | Status, hop: int, **extra: Any) -> dict[str, Any]:
    """The response of an invocation that does not return the handler's result."""
    body: dict[str, Any] = {"run_id": run_id, "status": status.value, "hop": hop}
    body.update(extra)
    return {"longrun": body}


WHERE = ("lambda", "fargate", "local")
NEXT = ("lambda", "fargate")

WRITE_ID = re.compile(r"[0-9a-f]{8,64}")


def new_write_id() -> str:
    """A fresh id for one conditional write."""
    return os.urandom(8).hex()


# -- the document ---------------------------------------------------------------------------


class Claim(Record):
    """The lease of the invocation that runs the current hop."""

    request_id: str
    deadline_ms: int | None
    """Epoch ms after which the holder is dead (Lambda killed it); ``None``: no deadline."""
    where: str

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "deadline_ms": self.deadline_ms, "where": self.where}


class Cursor(Record):
    """One ``run.iterate`` loop's position."""

    pos: int
    done: bool
    key: Any = None
    has_key: bool = False
    ordered: bool = False
    total: int | None = None
    """How many items the loop's iterable holds, when it has a length."""

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"pos": self.pos, "done": self.done}
        if self.has_key:
            entry["key"] = self.key
        if self.ordered:
            entry["ordered"] = True
        if self.total is not None:
            entry["total"] = self.total
        return entry


class HopEntry(Record):
    """One attempt at one hop, in the run's history."""

    hop: int
    attempt: int
    where: str
    request_id: str
    started_ms: int
    ended_ms: int | None = None
    outcome: str | None = None
    items: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "hop": self.hop,
            "attempt": self.attempt,
            "where": self.where,
            "request_id": self.request_id,
            "started_ms": self.started_ms,
            "ended_ms": self.ended_ms,
            "outcome": self.outcome,
            "items": self.items,
        }


class ErrorRecord(Record):
    """Why a hop failed."""

    type: str
    message: str
    terminal: bool = False
    traceback: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "terminal": self.terminal,
            "traceback": list(self.traceback),
        }


class Escalation(Record):
    """The hand-off to Fargate: why, which hop, and the task once it is known."""

    reason: str
    hop: int
    task_arn: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "hop": self.hop, "task_arn": self.task_arn}


NOTICE_STATES = ("sending", "failed", "sent")
STEP_STATES = ("done", "started", "retrying", "sleeping")
WAIT_KINDS = ("sleep", "retry", "callback", "map")


class Notice(Record):
    """The completion notification of a run that settled (``on_complete``).

    ``sending``: the invocation ``by`` holds it until ``until_ms`` (its deadline), as a claim
    holds a hop; ``failed``: the last attempt failed (``error``), a retry sends it again;
    ``sent``: delivered, at ``sent_ms``. ``id`` names this settling of the run, for receivers
    that drop repeats.
    """

    id: str
    status: str
    """The run's status it tells: ``completed`` or ``failed``."""
    target: str
    state: str
    attempts: int
    by: str | None = None
    until_ms: int | None = None
    error: str | None = None
    sent_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Checkpoint(Record):
    """The whole checkpoint document of one run, typed.

    ``event``, ``state`` and ``result`` are user data (plain JSON); everything else is the
    protocol's. ``extra`` keeps fields this version does not know, so they survive a write.
    """

    run_id: str
    status: Status
    hop: int
    created_ms: int
    updated_ms: int
    event: Any
    state: Any
    cursors: Mapping[str, Cursor]
    hops: tuple[HopEntry, ...]
    seq: int = 0
    write_id: str | None = None
    origin_request_id: str | None = None
    function: str | None = None
    claim: Claim | None = None
    timing: Mapping[str, float] = field(default_factory=dict)
    result: Any = None
    result_note: str | None = None
    error: ErrorRecord | None = None
    next: str | None = None
    escalation: Escalation | None = None
    tenant_id: str | None = None
    """The tenant of a function in per-tenant isolation mode: every hop is invoked with it."""
    notice: Notice | None = None
    """The completion notification, once the run settled with ``on_complete`` set."""
    steps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """``run.step`` results and ``run.sleep`` records, by path (see ``longrun.steps``)."""
    wait: Mapping[str, Any] | None = None
    """What a ``waiting`` run waits for: ``{"kind", "name", "until_ms", "schedule"}``."""
    waits: int = 0
    """Hops started by a wake-up (they do not count against ``max_hops``)."""
    parent: Mapping[str, Any] | None = None
    """A child run of ``run.map``: ``{"run": parent run id, "map": map digest, "index": i}``."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def last_hop(self) -> HopEntry | None:
        return self.hops[-1] if self.hops else None

    def attempts(self, hop: int) -> int:
        """How many attempts at ``hop`` the history holds."""
        return sum(1 for h in self.hops if h.hop == hop)

    def encode(self, parts: EncodedParts | None = None) -> bytes:
        """``encode_document(self.to_json(), parts)``, built from the fields without the
        whole dict in between (a hop writes once a step); the same bytes."""
        if self.extra:  # (fields of a newer format: their order is to_json's to decide)
            return encode_document(self.to_json(), parts)
        error, escalation = self.error, self.escalation
        head = self._leading()
        head["hops"] = [h.to_json() for h in self.hops]
        head["result_note"] = self.result_note
        head["error"] = None if error is None else error.to_json()
        head["next"] = self.next
        head["escalation"] = None if escalation is None else escalation.to_json()
        head["tenant_id"] = self.tenant_id
        if self.notice is not None:
            head["notice"] = self.notice.to_json()
        if self.waits:
            head["waits"] = self.waits
        timing = self.timing
        others: list[tuple[str, Any]] = [
            ("timing", timing if type(timing) is dict else dict(timing))
        ]
        if self.steps:
            others.append(
                (
                    "steps",
                    {
                        path: record if type(record) is dict else dict(record)
                        for path, record in self.steps.items()
                    },
                )
            )
        if self.wait is not None:
            others.append(("wait", dict(self.wait)))
        if self.parent is not None:
            others.append(("parent", dict(self.parent)))
        users = (
            ("state", self.state),
            ("cursors", {path: c.to_json() for path, c in self.cursors.items()}),
            ("event", self.event),
            ("result", self.result),
        )
        data = encode_split(head, others, users, parts)
        # (what does not encode: the generic path names the value at fault)
        return data if data is not None else encode_document(self.to_json(), parts)

    def _leading(self) -> dict[str, Any]:
        """The document's first fields (``format`` and ``seq`` first: FileStore reads them
        there), as :meth:`to_json` and :meth:`encode` both start."""
        claim = self.claim
        return {
            "format": FORMAT,
            "seq": self.seq,
            "write_id": self.write_id,
            "run_id": self.run_id,
            "status": self.status.value,
            "hop": self.hop,
            "origin_request_id": self.origin_request_id,
            "function": self.function,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "claim": None if claim is None else claim.to_json(),
        }

    def to_json(self) -> dict[str, Any]:
        """The document as stored (``format`` and ``seq`` first: FileStore reads them there)."""
        doc = self._leading()
        doc.update(
            {
                "event": self.event,
                "state": self.state,
                "cursors": {path: c.to_json() for path, c in self.cursors.items()},
                "timing": dict(self.timing),
                "hops": [h.to_json() for h in self.hops],
                "result": self.result,
                "result_note": self.result_note,
                "error": None if self.error is None else self.error.to_json(),
                "next": self.next,
                "escalation": None if self.escalation is None else self.escalation.to_json(),
                "tenant_id": self.tenant_id,
            }
        )
        if self.notice is not None:
            doc["notice"] = self.notice.to_json()
        if self.steps:
            # records are replaced, never changed in place: the same objects, so a writer
            # re-encodes only the records that changed (checkpoint.EncodedParts)
            doc["steps"] = {
                path: record if type(record) is dict else dict(record)
                for path, record in self.steps.items()
            }
        if self.wait is not None:
            doc["wait"] = dict(self.wait)
        if self.waits:
            doc["waits"] = self.waits
        if self.parent is not None:
            doc["parent"] = dict(self.parent)
        for key, value in self.extra.items():
            doc.setdefault(key, value)
        return doc
