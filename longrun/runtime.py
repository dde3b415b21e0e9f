"""One invocation of a decorated handler: claim the run, run user code, decide what is next.

The decorator drives an :class:`Invocation` through ``begin()`` (claim; may answer at once,
e.g. for a duplicate delivery) and then exactly one of ``ended_hop()``, ``returned()`` or
``raised()``. The protocol (envelope, checkpoint document, fencing, leases) is described in
``docs/concepts.md``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from . import _hooks
from .checkpoint import (
    FORMAT,
    Envelope,
    is_plain_json,
    make_envelope,
    parse_envelope,
    validate_run_id,
)
from .config import Settings
from .errors import (
    TERMINAL_ERRORS,
    CheckpointConflict,
    ClaimBusy,
    EnvelopeError,
    EscalationFailed,
    HandoffFailed,
    HopBudgetExhausted,
    LongrunError,
    NoProgressError,
    RecursionStopped,
    RunNotFound,
    RunTimeExceeded,
)
from .run import Cancelled, EndHop, Run, Superseded
from .stores.base import CheckpointStore, Loaded
from .timing import NO_DEADLINE_MS, Timer

__all__ = ["Invocation", "Response"]

log = logging.getLogger("longrun")

Response = dict[str, Any]


def _status_response(run_id: str, status: str, hop: int, **extra: Any) -> Response:
    body: dict[str, Any] = {"run_id": run_id, "status": status, "hop": hop}
    body.update(extra)
    return {"longrun": body}


class Invocation:
    """The life of one invocation of a ``@longrun`` handler."""

    def __init__(
        self,
        settings: Settings,
        event: Any,
        context: Any,
        *,
        run_id_fn: Callable[[Any], str] | None = None,
        lambda_client: Any = None,
    ) -> None:
        assert settings.store is not None
        self.settings = settings
        self.store: CheckpointStore = settings.store
        self.event = event
        self.context = context
        self.run_id_fn = run_id_fn
        self.lambda_client = lambda_client
        self.hooks = _hooks.active()
        self.request_id = str(getattr(context, "aws_request_id", "") or uuid.uuid4())
        self.function = getattr(context, "invoked_function_arn", None)
        self.where = str(
            getattr(context, "longrun_where", "") or ("lambda" if context else "local")
        )
        self.run: Run | None = None
        self._last: Loaded | None = None
        self._hop_index = -1
        self._write_s: float | None = None
        lease = getattr(context, "longrun_lease_s", None)
        self._lease_s: float | None = float(lease) if isinstance(lease, (int, float)) else None
        self._lock = threading.RLock()

    # -- claiming ---------------------------------------------------------------------------

    def begin(self) -> Response | None:
        """Claim the run. ``None``: run the handler with ``self.run``; else answer this."""
        envelope = parse_envelope(self.event)
        if envelope is None:
            return self._begin_new()
        return self._begin_hop(envelope)

    def _write(self, what: str, document: dict[str, Any], *, create: bool = False) -> Loaded:
        with self._lock:
            return self._write_locked(what, document, create=create)

    def _write_locked(self, what: str, document: dict[str, Any], *, create: bool) -> Loaded:
        hooks = self.hooks
        start = hooks.mono()
        hooks.before_write(document["run_id"], what)
        if create:
            loaded = self.store.create(document)
        else:
            assert self._last is not None
            loaded = self.store.replace(document, self._last.token)
        self._write_s = hooks.mono() - start
        if self.run is not None:
            self.run._timer.note_write(self._write_s)
        self._last = loaded
        hooks.after_write(document["run_id"], what, document)
        return loaded

    def _begin_new(self) -> Response | None:
        if self.run_id_fn is not None:
            try:
                raw = self.run_id_fn(self.event)
            except Exception as exc:
                raise LongrunError(
                    f"the run_id function {self.run_id_fn!r} failed on this event: {exc!r}"
                ) from exc
            run_id = validate_run_id(raw, source="run_id(event)")
        else:
            run_id = validate_run_id(self.request_id, source="context.aws_request_id")
        now = self.hooks.wall_ms()
        document: dict[str, Any] = {
            "format": FORMAT,
            "seq": 0,
            "run_id": run_id,
            "status": "running",
            "hop": 0,
            "origin_request_id": self.request_id,
            "function": self.function,
            "created_ms": now,
            "updated_ms": now,
            "claim": self._claim(now),
            "event": self.event,
            "state": {},
            "cursors": {},
            "timing": {},
            "hops": [self._hop_entry(0, 1, now)],
            "result": None,
            "error": None,
            "next": None,
        }
        try:
            self._write("claim", document, create=True)
        except CheckpointConflict:
            loaded = self.store.load(run_id)
            if loaded is None:  # deleted in between: a rare race, let Lambda retry
                raise
            self._last = loaded
            if loaded.document.get("origin_request_id") == self.request_id:
                return self._claim_existing(0)
            doc = loaded.document
            extra = {"result": doc.get("result")} if doc["status"] == "completed" else {}
            log.info("run %s already exists (status %s): not started again", run_id, doc["status"])
            return _status_response(run_id, doc["status"], doc["hop"], existing=True, **extra)
        self._hop_index = 0
        self._start_run(document)
        return None

    def _begin_hop(self, envelope: Envelope) -> Response | None:
        loaded = self.store.load(envelope.run_id)
        if loaded is None:
            raise RunNotFound(
                f"envelope names run {envelope.run_id!r}, but {self.store.describe()} holds no "
                "checkpoint for it. Was it deleted, or does this function use another store "
                "than the one that started the run?"
            )
        self._last = loaded
        return self._claim_existing(envelope.hop)

    def _claim(self, now: int) -> dict[str, Any]:
        """This invocation's lease: until its deadline, or for ``lease_s`` when it has none
        worth the name (a Fargate task), renewed by every write and by heartbeats."""
        remaining = self._timer_probe()
        if self._lease_s is not None:
            remaining = min(remaining, int(self._lease_s * 1000))
        deadline = None if remaining >= NO_DEADLINE_MS else now + remaining
        return {"request_id": self.request_id, "deadline_ms": deadline, "where": self.where}

    def _timer_probe(self) -> int:
        getter = getattr(self.context, "get_remaining_time_in_millis", None)
        if not callable(getter):
            return NO_DEADLINE_MS
        value = getter()
        return NO_DEADLINE_MS if value is None else int(value)

    def _hop_entry(self, hop: int, attempt: int, now: int) -> dict[str, Any]:
        return {
            "hop": hop,
            "attempt": attempt,
            "where": self.where,
            "request_id": self.request_id,
            "started_ms": now,
            "ended_ms": None,
            "outcome": None,
            "items": 0,
        }

    def _duplicate(self, hop: int, reason: str) -> Response:
        assert self._last is not None
        log.info("run %s hop %d: not run (%s)", self._last.document["run_id"], hop, reason)
        return _status_response(self._last.document["run_id"], "duplicate", hop, reason=reason)

    def _claim_existing(self, hop: int) -> Response | None:
        assert self._last is not None
        doc = self._last.document
        run_id, status, current = doc["run_id"], doc["status"], doc["hop"]
        now = self.hooks.wall_ms()
        if status == "cancelled":
            return _status_response(run_id, "cancelled", hop)
        if hop < current:
            return self._duplicate(hop, f"stale: the run is at hop {current}")
        if hop > current + 1:
            raise EnvelopeError(
                f"envelope for run {run_id!r} names hop {hop}, but its checkpoint is at hop "
                f"{current}: this event was not produced by this run's previous hop."
            )
        last_hop = (doc.get("hops") or [{}])[-1]
        retry = last_hop.get("request_id") == self.request_id
        if hop == current + 1:
            handed_to_me = status == "continued" or (
                status == "escalated" and self.where == "fargate"
            )
            if not handed_to_me:
                return self._duplicate(hop, f"hop {current} is {status}, not handed off")
        elif status == "running":
            claim = doc.get("claim") or {}
            deadline = claim.get("deadline_ms")
            if deadline is None or now < deadline:
                if claim.get("request_id") == self.request_id:
                    raise ClaimBusy(
                        f"run {run_id} hop {hop} is claimed by this same request id until "
                        f"{deadline} ms (epoch), {deadline - now if deadline else '?'} ms from "
                        "now: either a duplicate of a live invocation or Lambda's retry of one "
                        "that died early. Raising lets Lambda retry after the claim expires; "
                        "nothing was run."
                    )
                return self._duplicate(
                    hop, f"hop {hop} is running under request {claim.get('request_id')}"
                )
            log.warning(
                "run %s hop %d: taking over from request %s, whose deadline passed",
                run_id,
                hop,
                claim.get("request_id"),
            )
        elif status == "continued" and retry:
            return self._resend(hop)
        elif status == "escalated" and retry:
            return self._restart_task(hop)
        elif status == "failed" and retry:
            error = doc.get("error") or {}
            terminal = TERMINAL_ERRORS.get(str(error.get("type")))
            if error.get("terminal") and terminal is not None:
                raise terminal(str(error.get("message")))
            log.warning("run %s hop %d: Lambda retry of a failed hop, resuming", run_id, hop)
        else:
            return self._duplicate(hop, f"hop {hop} is {status}")

        attempt = 1 + sum(1 for h in doc.get("hops", ()) if h.get("hop") == hop)
        doc = dict(doc)
        doc.update(
            status="running",
            hop=hop,
            claim=self._claim(now),
            error=None,
            next=None,
            updated_ms=now,
            hops=[*doc.get("hops", ()), self._hop_entry(hop, attempt, now)],
        )
        try:
            self._write("claim", doc)
        except CheckpointConflict:
            return self._duplicate(hop, "another invocation claimed it first")
        self._hop_index = len(doc["hops"]) - 1
        self._start_run(doc)
        return None

    def _start_run(self, doc: dict[str, Any]) -> None:
        settings = self.settings
        assert self._last is not None  # the claim just written
        timer = Timer(
            self.context,
            self.hooks.mono,
            fixed_margin_ms=settings.margin_ms,
            min_margin_ms=settings.min_margin_ms,
            carried=doc.get("timing"),
        )
        if self._write_s is not None:  # the claim just written
            timer.note_write(self._write_s)
        if self.hooks.last_handoff_s is not None:
            timer.note_handoff(self.hooks.last_handoff_s)
        run_deadline = None
        if settings.max_run_seconds is not None:
            elapsed_s = (self.hooks.wall_ms() - doc["created_ms"]) / 1000.0
            run_deadline = timer.mono() + settings.max_run_seconds - elapsed_s
        self.run = Run(
            run_id=doc["run_id"],
            hop=doc["hop"],
            event=doc["event"],
            state=doc["state"],
            cursors=doc["cursors"],
            timer=timer,
            invocation=self,
            checkpoint_every_s=settings.checkpoint_every_s,
            run_deadline_mono=run_deadline,
            where=self.where,
            initial_state=functools.partial(_stored_state, self._last.data),
        )
        self.hooks.on_run(self.run)
        log.info("run %s hop %d: started (%s)", doc["run_id"], doc["hop"], self.where)
        if run_deadline is not None and timer.mono() >= run_deadline:
            self._fail(RunTimeExceeded(self._run_time_message()))

    # -- writing progress -------------------------------------------------------------------

    def _document(self, status: str, *, outcome: str | None, **fields: Any) -> dict[str, Any]:
        """The next document: the last one written, with this hop's live progress."""
        assert self._last is not None and self.run is not None
        run = self.run
        now = self.hooks.wall_ms()
        doc = dict(self._last.document)
        hops = list(doc["hops"])
        entry = dict(hops[self._hop_index])
        entry["items"] = run.items_done()
        if outcome is not None:
            entry["ended_ms"] = now
            entry["outcome"] = outcome
        hops[self._hop_index] = entry
        doc.update(
            status=status,
            updated_ms=now,
            state=run.state,
            cursors=run.cursors(),
            timing=run._timer.carry(),
            hops=hops,
        )
        doc.update(fields)
        return doc

    def _write_own(
        self, what: str, status: str, *, outcome: str | None = None, **fields: Any
    ) -> None:
        """A write by the claim holder: a lost condition means cancelled or superseded."""
        with self._lock:
            document = self._document(status, outcome=outcome, **fields)
            try:
                self._write(what, document)
            except CheckpointConflict:
                raise self._lost_claim() from None

    def heartbeat(self) -> bool:
        """Renew a leased claim (Fargate) without touching progress; False if it was lost."""
        with self._lock:
            if self._last is None or self.run is None or self._lease_s is None:
                return True
            doc = json.loads(self._last.data)
            if doc.get("status") != "running":
                return True
            doc["claim"] = self._claim(self.hooks.wall_ms())
            try:
                self._write("heartbeat", doc)
            except CheckpointConflict:
                return False
            return True

    def _lost_claim(self) -> Cancelled | Superseded:
        """Why a write by the claim holder lost its condition."""
        assert self.run is not None
        current = self.store.load(self.run.id)
        if current is not None and current.document.get("status") == "cancelled":
            log.warning("run %s hop %d: cancelled, stopping", self.run.id, self.run.hop)
            return Cancelled()
        log.warning("run %s hop %d: superseded by another invocation", self.run.id, self.run.hop)
        return Superseded()

    def save_progress(self) -> None:
        """A checkpoint during the hop (``run.checkpoint()`` and the periodic one)."""
        self._write_own("checkpoint", "running", claim=self._claim(self.hooks.wall_ms()))

    # -- endings ----------------------------------------------------------------------------

    def ended_hop(self, signal: EndHop) -> Response:
        """The handler stopped early (time short or ``run.end_hop()``): continue elsewhere."""
        run = self.run
        assert run is not None
        if run.final_cursors is None:
            run._freeze_cursors()
        next_hop = run.hop + 1
        escalate = self.settings.escalate
        if signal.reason == "max_run_seconds" or run._past_run_deadline(run._timer.mono()):
            self._fail(RunTimeExceeded(self._run_time_message()), keep_progress=True)
        progress = run.items_done() > 0 or run.state_changed()
        if self.where == "fargate":
            # A task is stopped (Spot interruption, scale-in) or asked to end its hop: a
            # replacement task carries on. A task without a signal and without progress
            # would only start another like itself.
            stopping = bool(getattr(self.context, "stopping", False))  # SIGTERM
            if not progress and not stopping:
                self._fail(self._no_progress(run), keep_progress=True)
            if escalate is None:
                self._fail(
                    EscalationFailed(
                        f"run {run.id} hop {run.hop} ran in Fargate and must continue in a "
                        "replacement task, but no Fargate target is configured in the "
                        "container (escalate=Fargate(...) or LONGRUN_FARGATE_* variables)."
                    ),
                    keep_progress=True,
                    terminal=False,
                )
            why = "SIGTERM" if stopping else signal.reason
            return self._escalate(next_hop, f"replacement task after {why}")
        if not progress:
            if escalate is not None:
                return self._escalate(next_hop, "no progress in a Lambda hop")
            self._fail(self._no_progress(run), keep_progress=True)
        if next_hop > self.settings.max_hops:
            if escalate is not None:
                return self._escalate(next_hop, "hop budget used up")
            self._fail(
                HopBudgetExhausted(
                    f"run {run.id} used its {self.settings.max_hops} re-invocations "
                    f"(max_hops / LONGRUN_MAX_HOPS) and is not finished. Its checkpoint is "
                    "kept: raise max_hops, or configure escalation to Fargate "
                    "(escalate=Fargate(...)) so that runs carry on in a container."
                ),
                keep_progress=True,
            )
        if not self.function:
            self._fail(_no_function(run.id), keep_progress=True, terminal=False)
        self._write_own("continue", "continued", outcome="continued", claim=None, next="lambda")
        try:
            self._send(run.id, next_hop)
        except RecursionStopped as exc:
            if escalate is not None:
                return self._escalate(next_hop, "recursive loop detection", after_continue=True)
            self._fail(exc, cause=exc.__cause__)
        except HandoffFailed as exc:
            self._fail(exc, terminal=False, cause=exc.__cause__)
        log.info(
            "run %s hop %d: continued as hop %d after %d items",
            run.id,
            run.hop,
            next_hop,
            run.items_done(),
        )
        return _status_response(run.id, "continued", run.hop, next="lambda")

    def _no_progress(self, run: Run) -> NoProgressError:
        return NoProgressError(
            f"run {run.id} hop {run.hop} ended without finishing an item or changing state "
            f"(remaining {run.remaining_ms()} ms, margin {run.margin_ms()} ms): another hop "
            "would do the same. A single step needs more time than a hop offers: raise the "
            "function timeout, lower LONGRUN_MARGIN_MS, split the step, or configure "
            "escalation to Fargate (escalate=Fargate(...))."
        )

    def _escalate(self, next_hop: int, reason: str, *, after_continue: bool = False) -> Response:
        """Checkpoint as ``escalated`` and start the Fargate task that runs ``next_hop``."""
        run = self.run
        assert run is not None
        escalation = {"reason": reason, "hop": next_hop, "task_arn": None}
        if after_continue:  # the "continued" write is already there: only change the status
            self._write_own(
                "escalate", "escalated", claim=None, next="fargate", escalation=escalation
            )
        else:
            self._write_own(
                "escalate",
                "escalated",
                outcome="escalated",
                claim=None,
                next="fargate",
                escalation=escalation,
            )
        task_arn = self._start_task(run.id, next_hop)
        log.info(
            "run %s hop %d: escalated to Fargate as hop %d (%s): %s",
            run.id,
            run.hop,
            next_hop,
            reason,
            task_arn,
        )
        return _status_response(run.id, "continued", run.hop, next="fargate", task_arn=task_arn)

    def _start_task(self, run_id: str, hop: int) -> str:
        """RunTask for ``hop``, then record its ARN (a lost race there is harmless)."""
        escalate = self.settings.escalate
        assert escalate is not None and self._last is not None
        try:
            task_arn = self.hooks.start_task(escalate, run_id, hop)
        except EscalationFailed as exc:
            if self.run is not None:
                self._fail(exc, terminal=False, cause=exc.__cause__)
            raise
        with self._lock:
            doc = json.loads(self._last.data)
            doc["escalation"] = {**(doc.get("escalation") or {}), "task_arn": task_arn}
            doc["updated_ms"] = self.hooks.wall_ms()
            # A lost race means the task already claimed the run: it runs, which is the point.
            with contextlib.suppress(CheckpointConflict):
                self._write("task", doc)
        return task_arn

    def _resend(self, hop: int) -> Response:
        """Lambda retried a hop that checkpointed but may not have handed off: hand off again.

        The first hand-off may have gone through (fencing refuses the spare), so a failing
        resend records nothing, except a recursion refusal, which no retry can get past.
        """
        assert self._last is not None
        run_id = self._last.document["run_id"]
        self._hop_index = len(self._last.document["hops"]) - 1  # the hop being retried
        log.warning(
            "run %s hop %d: retried after its checkpoint; re-sending hop %d", run_id, hop, hop + 1
        )
        try:
            self._send(run_id, hop + 1)
        except RecursionStopped as exc:
            with contextlib.suppress(CheckpointConflict):
                self._record_failure(exc, terminal=True)
                exc.recorded = True
            raise
        return _status_response(run_id, "continued", hop, next="lambda", resent=True)

    def _restart_task(self, hop: int) -> Response:
        """Lambda retried the hop that escalated: start the task again unless one is known."""
        assert self._last is not None
        doc = self._last.document
        run_id, escalation = doc["run_id"], doc.get("escalation") or {}
        if escalation.get("task_arn"):
            return self._duplicate(hop, f"already escalated to {escalation['task_arn']}")
        if self.settings.escalate is None:
            return self._duplicate(hop, "escalated, but no Fargate target is configured here")
        self._hop_index = len(doc["hops"]) - 1
        task_arn = self._start_task(run_id, hop + 1)
        return _status_response(
            run_id, "continued", hop, next="fargate", task_arn=task_arn, resent=True
        )

    def _send(self, run_id: str, hop: int) -> None:
        """Invoke this function asynchronously with the envelope of ``hop``."""
        if not self.function:
            raise _no_function(run_id)
        start = self.hooks.mono()
        try:
            self.hooks.invoke_async(
                str(self.function),
                json.dumps(make_envelope(run_id, hop)).encode(),
                self.lambda_client,
            )
        except Exception as exc:
            if _error_code(exc) == "RecursiveInvocationException":
                raise RecursionStopped(
                    f"AWS recursive loop detection refused hop {hop} of run {run_id}. Allow "
                    "recursion for this function (aws lambda put-function-recursion-config "
                    "--recursive-loop Allow) or configure escalation to Fargate. The checkpoint "
                    "is kept."
                ) from exc
            raise HandoffFailed(
                f"run {run_id}: checkpoint saved but starting hop {hop} failed: {exc}. "
                "Lambda's retry of this invocation resumes the run from this checkpoint."
            ) from exc
        self.hooks.last_handoff_s = self.hooks.mono() - start

    def returned(self, result: Any) -> Any:
        """The handler finished: record the result, mark the run completed, return it."""
        run = self.run
        assert run is not None
        if is_plain_json(result):
            stored, note = result, None
        else:
            stored, note = None, f"the result (a {type(result).__name__}) is not plain JSON"
        try:
            self._write_own(
                "complete",
                "completed",
                outcome="completed",
                claim=None,
                result=stored,
                result_note=note,
            )
        except (Superseded, Cancelled) as signal:
            return self.stopped(signal)
        log.info("run %s completed at hop %d", run.id, run.hop)
        return result

    def stopped(self, signal: Superseded | Cancelled) -> Response:
        """The claim was lost to a newer hop or to a cancel: answer without hopping."""
        assert self.run is not None
        status = "cancelled" if isinstance(signal, Cancelled) else "superseded"
        return _status_response(self.run.id, status, self.run.hop)

    def raised(self, exc: BaseException) -> None:
        """User code raised: record the failure on top of the last checkpoint (not over it)."""
        if self.run is None or self._last is None:
            return
        try:
            self._record_failure(exc, terminal=False)
        except Exception as store_exc:  # the original error matters more
            log.error("run %s: could not record failure: %s", self.run.id, store_exc)

    def _record_failure(
        self, exc: BaseException, *, terminal: bool, progress: bool = False
    ) -> None:
        with self._lock:
            self._record_failure_locked(exc, terminal=terminal, progress=progress)

    def _record_failure_locked(self, exc: BaseException, *, terminal: bool, progress: bool) -> None:
        assert self._last is not None
        error = {
            "type": type(exc).__name__,
            "message": str(exc),
            "terminal": terminal,
            "traceback": traceback.format_exception(exc)[-20:],
        }
        if progress:
            doc = self._document("failed", outcome="failed", claim=None, error=error)
        else:
            # Start from what was last written, not the live state: a failed hop must not
            # overwrite the stored checkpoint with progress it never saved.
            doc = json.loads(self._last.data)
            entry = doc["hops"][self._hop_index]
            entry.update(ended_ms=self.hooks.wall_ms(), outcome="failed")
            doc.update(status="failed", claim=None, error=error, updated_ms=entry["ended_ms"])
        self._write("fail", doc)

    def _fail(
        self,
        exc: LongrunError,
        *,
        keep_progress: bool = False,
        terminal: bool = True,
        cause: BaseException | None = None,
    ) -> Any:
        """Record a guard's failure (with the hop's progress if asked) and raise it."""
        assert self.run is not None
        log.error("run %s hop %d: %s", self.run.id, self.run.hop, exc)
        try:
            self._record_failure(exc, terminal=terminal, progress=keep_progress)
        except CheckpointConflict:
            raise self._lost_claim() from None
        except Exception as store_exc:  # the guard's error matters more than the record
            log.error("run %s: could not record failure: %s", self.run.id, store_exc)
        else:
            exc.recorded = True
        raise exc from cause

    def _run_time_message(self) -> str:
        assert self.run is not None
        return (
            f"run {self.run.id} has run longer than max_run_seconds="
            f"{self.settings.max_run_seconds:g} (LONGRUN_MAX_RUN_SECONDS). Its checkpoint is "
            "kept: raise the limit and resume it, or cancel it."
        )


def _stored_state(data: bytes) -> Any:
    """``state`` as a checkpoint's bytes hold it."""
    return json.loads(data)["state"]


def _no_function(run_id: str) -> HandoffFailed:
    return HandoffFailed(
        f"run {run_id} must continue in a new invocation, but the context has no "
        "invoked_function_arn to re-invoke. Outside Lambda, run the handler through "
        "the longrun_sim fixture or give it a context."
    )


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "")
    return type(exc).__name__
