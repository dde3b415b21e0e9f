"""The run protocol: the checkpoint document, its statuses, and what each allows next.

One JSON document per run holds everything a later invocation needs. This module is the one
place that knows its shape and its rules:

* :class:`Checkpoint` is the document as a typed structure. :func:`decode` validates every
  field at every load (types, ranges, the run id against the key it was read from, finite
  numbers, bounded nesting, known format versions) and raises :class:`CheckpointCorrupt`
  naming the field; nothing is written from a document that failed.
* :class:`Status` is the one enumeration of statuses; no other module spells them.
* The decisions are pure functions without I/O (decide, then the caller executes, as in
  tenacity): :func:`decide_claim` (may this invocation claim the run), :func:`claim_live`,
  :func:`decide_next` (what follows a hop that ended early), :func:`why_not_resumable` and
  :func:`may_cancel` (may the run be resumed or cancelled from outside).
* Every conditional write carries a fresh ``write_id`` (:func:`new_write_id`): a writer whose
  reply was lost finds its own write on the conflict and carries on (:func:`is_own_write`).

It depends only on the errors and the codec (``checkpoint.py``). The statuses and
transitions are drawn in ``docs/concepts.md``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .checkpoint import FORMAT, encode_document, validate_run_id
from .errors import CheckpointCorrupt, CheckpointFormatError, InvalidRunId

__all__ = [
    "FORMAT",
    "Answer",
    "Checkpoint",
    "Claim",
    "ClaimDecision",
    "Cursor",
    "ErrorRecord",
    "Escalation",
    "HopEntry",
    "NextStep",
    "Status",
    "answer",
    "claim_live",
    "decide_claim",
    "decide_new_run",
    "decide_next",
    "decode",
    "encode",
    "from_json",
    "is_own_write",
    "holds_live_claim",
    "may_cancel",
    "new_write_id",
    "parse",
    "why_not_resumable",
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

_WRITE_ID = re.compile(r"[0-9a-f]{8,64}")
_BIG_EXPONENT = re.compile(rb"[0-9][eE]\+?[0-9]{3,}")


def new_write_id() -> str:
    """A fresh id for one conditional write."""
    return secrets.token_hex(8)


# -- the document ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """The lease of the invocation that runs the current hop."""

    request_id: str
    deadline_ms: int | None
    """Epoch ms after which the holder is dead (Lambda killed it); ``None``: no deadline."""
    where: str

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "deadline_ms": self.deadline_ms, "where": self.where}


@dataclass(frozen=True)
class Cursor:
    """One ``run.iterate`` loop's position."""

    pos: int
    done: bool
    key: Any = None
    has_key: bool = False
    ordered: bool = False

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"pos": self.pos, "done": self.done}
        if self.has_key:
            entry["key"] = self.key
        if self.ordered:
            entry["ordered"] = True
        return entry


@dataclass(frozen=True)
class HopEntry:
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
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ErrorRecord:
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


@dataclass(frozen=True)
class Escalation:
    """The hand-off to Fargate: why, which hop, and the task once it is known."""

    reason: str
    hop: int
    task_arn: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "hop": self.hop, "task_arn": self.task_arn}


@dataclass(frozen=True)
class Checkpoint:
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
    extra: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Checkpoint:
        """A copy with ``changes`` (the dataclass is frozen)."""
        return dataclasses.replace(self, **changes)

    @property
    def last_hop(self) -> HopEntry | None:
        return self.hops[-1] if self.hops else None

    def attempts(self, hop: int) -> int:
        """How many attempts at ``hop`` the history holds."""
        return sum(1 for h in self.hops if h.hop == hop)

    def to_json(self) -> dict[str, Any]:
        """The document as stored (``format`` and ``seq`` first: FileStore reads them there)."""
        doc: dict[str, Any] = {
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
            "claim": None if self.claim is None else self.claim.to_json(),
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
        }
        for key, value in self.extra.items():
            doc.setdefault(key, value)
        return doc


def encode(checkpoint: Checkpoint) -> bytes:
    """The stored bytes of ``checkpoint`` (StateNotSerializable names a bad user value)."""
    return encode_document(checkpoint.to_json())


# -- validation -----------------------------------------------------------------------------

_KNOWN = frozenset(
    {
        "format", "seq", "write_id", "run_id", "status", "hop", "origin_request_id",
        "function", "created_ms", "updated_ms", "claim", "event", "state", "cursors",
        "timing", "hops", "result", "result_note", "error", "next", "escalation",
    }
)  # fmt: skip


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} overflows a float")
    return value


def parse(data: bytes, *, where: str) -> Any:
    """Strict JSON: no NaN/Infinity, no number that overflows, nesting within reason.

    The decoder guards its own recursion: nesting deeper than the interpreter's recursion
    limit (a hostile file; longrun never writes one) is a RecursionError, reported here."""
    kwargs: dict[str, Any] = {"parse_constant": _reject_constant}
    if _BIG_EXPONENT.search(data):  # only then is a float worth checking one by one
        kwargs["parse_float"] = _finite_float
    try:
        return json.loads(data, **kwargs)
    except RecursionError:
        raise CheckpointCorrupt(
            f"checkpoint {where} is nested too deeply to read safely. Inspect or delete it; "
            "nothing was overwritten.",
            field="(nesting)",
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointCorrupt(
            f"checkpoint {where} is not valid JSON ({_cut(str(exc))}). Inspect or delete it; "
            "longrun will not guess at its contents; nothing was overwritten.",
            field="(json)",
        ) from None


class _Bad(Exception):
    def __init__(self, path: str, why: str) -> None:
        super().__init__(path, why)
        self.path = path
        self.why = why


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value: Any) -> str:
    return _cut(repr(value))


def _int(
    doc: Mapping[str, Any], name: str, path: str, *, minimum: int = 0, default: int | None = None
) -> int:
    if default is not None and name not in doc:
        return default
    value = doc.get(name)
    if type(value) is not int or value < minimum:
        raise _Bad(f"{path}{name}", f"{_show(value)} is not a whole number >= {minimum}")
    return value


def _opt_int(doc: Mapping[str, Any], name: str, path: str) -> int | None:
    if doc.get(name) is None:
        return None
    return _int(doc, name, path)


def _str(doc: Mapping[str, Any], name: str, path: str, *, optional: bool = False) -> Any:
    value = doc.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Bad(f"{path}{name}", f"{_show(value)} is not a string")
    return value


def _choice(doc: Mapping[str, Any], name: str, path: str, allowed: tuple[str, ...]) -> Any:
    value = doc.get(name)
    if value is None:
        return None
    if value not in allowed:
        raise _Bad(f"{path}{name}", f"{_show(value)} is not one of {', '.join(allowed)}")
    return value


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(path, f"a {type(value).__name__} is not an object")
    return value


def _claim(value: Any) -> Claim | None:
    if value is None:
        return None
    doc = _obj(value, "claim")
    return Claim(
        request_id=_str(doc, "request_id", "claim."),
        deadline_ms=_opt_int(doc, "deadline_ms", "claim."),
        where=_choice(doc, "where", "claim.", WHERE) or "lambda",
    )


def _cursor(path: str, value: Any) -> Cursor:
    where = f"cursors[{_cut(repr(path), 60)}]."
    doc = _obj(value, where[:-1])
    done = doc.get("done", False)
    if type(done) is not bool:
        raise _Bad(where + "done", f"{_show(done)} is not true or false")
    ordered = doc.get("ordered", False)
    if type(ordered) is not bool:
        raise _Bad(where + "ordered", f"{_show(ordered)} is not true or false")
    return Cursor(
        pos=_int(doc, "pos", where), done=done, key=doc.get("key"), has_key="key" in doc,
        ordered=ordered,
    )  # fmt: skip


def _hop_entry(index: int, value: Any) -> HopEntry:
    where = f"hops[{index}]."
    doc = _obj(value, where[:-1])
    return HopEntry(
        hop=_int(doc, "hop", where),
        attempt=_int(doc, "attempt", where, minimum=1, default=1),
        where=_choice(doc, "where", where, WHERE) or "lambda",
        request_id=_str(doc, "request_id", where, optional=True) or "",
        started_ms=_int(doc, "started_ms", where, default=0),
        ended_ms=_opt_int(doc, "ended_ms", where),
        outcome=_str(doc, "outcome", where, optional=True),
        items=_int(doc, "items", where, default=0),
    )


def _error(value: Any) -> ErrorRecord | None:
    if value is None:
        return None
    doc = _obj(value, "error")
    terminal = doc.get("terminal", False)
    if type(terminal) is not bool:
        raise _Bad("error.terminal", f"{_show(terminal)} is not true or false")
    trace = doc.get("traceback") or []
    if not isinstance(trace, list) or not all(isinstance(line, str) for line in trace):
        raise _Bad("error.traceback", "is not a list of strings")
    return ErrorRecord(
        type=_str(doc, "type", "error."),
        message=_str(doc, "message", "error."),
        terminal=terminal,
        traceback=tuple(trace),
    )


def _escalation(value: Any) -> Escalation | None:
    if value is None:
        return None
    doc = _obj(value, "escalation")
    return Escalation(
        reason=_str(doc, "reason", "escalation."),
        hop=_int(doc, "hop", "escalation."),
        task_arn=_str(doc, "task_arn", "escalation.", optional=True),
    )


def _timing(value: Any) -> dict[str, float]:
    doc = _obj(value if value is not None else {}, "timing")
    for name, number in doc.items():
        if type(number) not in (int, float) or not math.isfinite(number) or number < 0:
            raise _Bad(f"timing.{_cut(str(name), 40)}", f"{_show(number)} is not a duration")
    return dict(doc)


def from_json(document: Any, *, run_id: str | None = None) -> Checkpoint:
    """Validate a parsed document; ``run_id``: the run whose key it was read from."""
    try:
        return _from_json(document, run_id)
    except _Bad as bad:
        raise CheckpointCorrupt(f"{bad.path}: {bad.why}", field=bad.path) from None


def _from_json(document: Any, expected_run_id: str | None) -> Checkpoint:
    doc = _obj(document, "(document)")
    fmt = doc.get("format")
    if type(fmt) is int and fmt > FORMAT:
        raise CheckpointFormatError(
            f"format {fmt} is newer than this longrun reads ({FORMAT}): upgrade longrun in "
            "this function.",
            field="format",
        )
    if type(fmt) is not int or fmt != FORMAT:  # true == 1 in Python, not in a format field
        raise _Bad("format", f"{_show(fmt)} is not a known format ({FORMAT})")
    try:
        run_id = validate_run_id(doc.get("run_id"))
    except InvalidRunId:
        raise _Bad("run_id", f"{_show(doc.get('run_id'))} is not a valid run id") from None
    if expected_run_id is not None and run_id != expected_run_id:
        raise _Bad(
            "run_id",
            f"{run_id!r} is another run's id, stored under run {expected_run_id!r} (a copied "
            "checkpoint?)",
        )
    status = doc.get("status")
    try:
        status = Status(status)
    except ValueError:
        raise _Bad("status", f"{_show(status)} is not a known status") from None
    write_id = doc.get("write_id")
    if write_id is not None and not (isinstance(write_id, str) and _WRITE_ID.fullmatch(write_id)):
        raise _Bad("write_id", f"{_show(write_id)} is not a write id")
    if "event" not in doc:
        raise _Bad("event", "is missing (the original event lives in the checkpoint)")
    state = doc.get("state")
    if not isinstance(state, dict):
        raise _Bad("state", f"a {type(state).__name__} is not an object")
    cursors = _obj(doc.get("cursors"), "cursors")
    hops = doc.get("hops")
    if not isinstance(hops, list):
        raise _Bad("hops", f"a {type(hops).__name__} is not a list")
    result_note = _str(doc, "result_note", "", optional=True)
    created = _int(doc, "created_ms", "")
    updated = _int(doc, "updated_ms", "")
    return Checkpoint(
        run_id=run_id,
        status=status,
        hop=_int(doc, "hop", ""),
        created_ms=created,
        updated_ms=updated,
        event=doc["event"],
        state=state,
        cursors={str(path): _cursor(path, value) for path, value in cursors.items()},
        hops=tuple(_hop_entry(i, entry) for i, entry in enumerate(hops)),
        seq=_int(doc, "seq", ""),
        write_id=write_id,
        origin_request_id=_str(doc, "origin_request_id", "", optional=True),
        function=_str(doc, "function", "", optional=True),
        claim=_claim(doc.get("claim")),
        timing=_timing(doc.get("timing")),
        result=doc.get("result"),
        result_note=result_note,
        error=_error(doc.get("error")),
        next=_choice(doc, "next", "", NEXT),
        escalation=_escalation(doc.get("escalation")),
        extra={k: v for k, v in doc.items() if k not in _KNOWN},
    )


def decode(data: bytes, *, where: str, run_id: str | None = None) -> Checkpoint:
    """Parse and validate stored bytes; CheckpointCorrupt names ``where`` and the field."""
    document = parse(data, where=where)
    try:
        return from_json(document, run_id=run_id)
    except CheckpointCorrupt as exc:
        raise type(exc)(
            f"checkpoint {where} is not a valid longrun checkpoint: {exc} Inspect or delete "
            "it; nothing was overwritten and no user code ran.",
            field=exc.field,
        ) from None


# -- decisions (pure) -------------------------------------------------------------------------


def claim_live(claim: Claim | None, now_ms: int) -> bool:
    """Whether ``claim``'s holder may still be running (a lease without deadline is live)."""
    if claim is None:
        return False
    return claim.deadline_ms is None or now_ms < claim.deadline_ms


def is_own_write(stored: Checkpoint | None, write_id: str) -> bool:
    """Whether the stored document is the write that carried ``write_id`` (reply lost)."""
    return stored is not None and stored.write_id == write_id


@dataclass(frozen=True)
class ClaimDecision:
    """What an invocation delivered for ``hop`` does with the run.

    ``action``:

    * ``claim``: write a claim for ``hop`` and run user code (``takeover``: over a dead claim);
    * ``duplicate``: another invocation has it (or had it): answer without running anything;
    * ``cancelled``: answer ``cancelled``;
    * ``busy``: the holder's own request id before its deadline: raise ClaimBusy so that
      Lambda retries after the lease (a duplicate of a live hop and a retry of a dead one
      look the same; the lease expiry decides);
    * ``resend``: a retry of the hop that wrote ``continued``: send the next hop again;
    * ``restart_task``: a retry of the hop that wrote ``escalated``: start its task again
      if none is recorded;
    * ``terminal``: a retry of a hop a guard failed: re-raise that error;
    * ``bad_hop``: the envelope names a hop this run never handed off.
    """

    action: str
    reason: str = ""
    takeover: bool = False


def decide_claim(
    checkpoint: Checkpoint, hop: int, *, request_id: str, where: str, now_ms: int
) -> ClaimDecision:
    """May this invocation (delivered for ``hop``) claim the run?"""
    status, current = checkpoint.status, checkpoint.hop
    if status is Status.CANCELLED:
        return ClaimDecision("cancelled", "the run is cancelled")
    if hop < current:
        return ClaimDecision("duplicate", f"stale: the run is at hop {current}")
    if hop > current + 1:
        return ClaimDecision(
            "bad_hop",
            f"the envelope names hop {hop}, but the checkpoint is at hop {current}: this "
            "event was not produced by this run's previous hop",
        )
    if hop == current + 1:
        if status in (Status.CONTINUED, Status.WAITING) or (
            status is Status.ESCALATED and where == "fargate"
        ):
            return ClaimDecision("claim")
        return ClaimDecision("duplicate", f"hop {current} is {status}, not handed off")
    # A re-delivery of the current hop.
    last = checkpoint.last_hop
    retry = last is not None and last.request_id == request_id
    if status is Status.RUNNING:
        claim = checkpoint.claim
        if claim_live(claim, now_ms):
            assert claim is not None
            if claim.request_id == request_id:
                why = f"claimed by this same request id until {claim.deadline_ms}"
                return ClaimDecision("busy", why)
            why = f"hop {hop} is running under request {claim.request_id}"
            return ClaimDecision("duplicate", why)
        why = f"taking over from {claim.request_id if claim else 'nobody'}, whose lease ran out"
        return ClaimDecision("claim", why, takeover=True)
    if status is Status.CONTINUED and retry:
        return ClaimDecision("resend", "retried after its checkpoint")
    if status is Status.ESCALATED and retry:
        return ClaimDecision("restart_task", "retried after escalating")
    if status is Status.FAILED and retry:
        error = checkpoint.error
        if error is not None and error.terminal:
            return ClaimDecision("terminal", error.message)
        return ClaimDecision("claim", "Lambda's retry of a failed hop: resuming", takeover=True)
    return ClaimDecision("duplicate", f"hop {hop} is {status}")


def decide_new_run(existing: Checkpoint, request_id: str) -> str:
    """A first invocation found its run id taken: ``claim`` its own retry, else ``exists``."""
    return "claim" if existing.origin_request_id == request_id else "exists"


@dataclass(frozen=True)
class NextStep:
    """What follows a hop that ended before the handler returned.

    ``action``: ``continue`` (Lambda hop), ``escalate`` (Fargate task) or ``fail`` with
    ``error`` naming the guard (``NoProgressError``, ``HopBudgetExhausted``,
    ``RunTimeExceeded``, ``EscalationFailed``, ``HandoffFailed``).
    """

    action: str
    reason: str = ""
    error: str | None = None


def decide_next(
    *,
    where: str,
    next_hop: int,
    max_hops: int,
    progress: bool,
    past_run_deadline: bool,
    can_escalate: bool,
    can_reinvoke: bool,
    stopping: bool = False,
    reason: str = "time",
) -> NextStep:
    """The guards, in order: run time, then Fargate's own rules, then progress and budget."""
    if past_run_deadline:
        return NextStep("fail", "max_run_seconds", "RunTimeExceeded")
    if where == "fargate":
        # A stopping task (SIGTERM) hands over even without progress; a task without a
        # signal and without progress would only start another like itself.
        if not progress and not stopping:
            return NextStep("fail", "no progress in a Fargate hop", "NoProgressError")
        if not can_escalate:
            return NextStep("fail", "no Fargate target in the container", "EscalationFailed")
        return NextStep("escalate", f"replacement task after {'SIGTERM' if stopping else reason}")
    if not progress:
        if can_escalate:
            return NextStep("escalate", "no progress in a Lambda hop")
        return NextStep("fail", "no progress", "NoProgressError")
    if next_hop > max_hops:
        if can_escalate:
            return NextStep("escalate", "hop budget used up")
        return NextStep("fail", "hop budget used up", "HopBudgetExhausted")
    if not can_reinvoke:
        return NextStep("fail", "no function to re-invoke", "HandoffFailed")
    return NextStep("continue")


def why_not_resumable(checkpoint: Checkpoint, now_ms: int) -> str | None:
    """Why the run must not be taken over from outside now, or ``None`` if it may be.

    A live claim is never taken over: its holder may be working (a duplicate delivery that
    failed with ClaimBusy looks exactly like a hop that died early). The lease decides.
    """
    status = checkpoint.status
    if status.settled:
        return f"the run is {status}"
    claim = checkpoint.claim
    if holds_live_claim(checkpoint, now_ms):
        assert claim is not None
        until = "" if claim.deadline_ms is None else f" until {claim.deadline_ms} (epoch ms)"
        return f"hop {checkpoint.hop} is running under request {claim.request_id}{until}"
    escalation = checkpoint.escalation
    if status is Status.ESCALATED and escalation is not None and escalation.task_arn:
        return f"already escalated to {escalation.task_arn}"
    error = checkpoint.error
    if status is Status.FAILED and error is not None and error.type == "RunTimeExceeded":
        return "it failed with RunTimeExceeded: raise max_run_seconds before resuming it"
    return None


def holds_live_claim(checkpoint: Checkpoint, now_ms: int) -> bool:
    """A hop is running under a lease that has not expired (maybe alive, maybe dead)."""
    return checkpoint.status is Status.RUNNING and claim_live(checkpoint.claim, now_ms)


def may_cancel(checkpoint: Checkpoint) -> bool:
    """A settled run stays as it is; any other run may be cancelled."""
    return not checkpoint.status.settled
