"""A hop that holds its run's claim.

It works with the :class:`~longrun.caller.Caller` that claimed it (the invocation's identity
and hand-offs) and its :class:`~longrun.caller.Writer`. :class:`ClaimedHop` runs the handler's
hop to its end: ``ended(exc)`` when the handler raised (a hop control signal or an error),
``finished(result)`` when it returned. :class:`DetachedHop` is the same interface with no
store at all (``LONGRUN_DISABLED``). The rules come from ``protocol``; this module executes
them.
"""

from __future__ import annotations

import functools
import json
import logging
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from .caller import HANDOFFS, Caller, Writer, _uuid4, no_function
from .checkpoint import is_plain_json, make_envelope
from .config import Settings
from .errors import (
    CheckpointConflict,
    EscalationFailed,
    HandoffFailed,
    HopBudgetExhausted,
    LongrunError,
    NoProgressError,
    NotificationFailed,
    RecursionStopped,
    RunTimeExceeded,
    StateNotSerializable,
    StoreError,
    shown,
)
from .observe import HopObservation, traced
from .ports import active, mono_function
from .protocol import (
    Act,
    Answer,
    Checkpoint,
    Cursor,
    ErrorRecord,
    Escalation,
    Status,
    answer,
    decide_next,
    new_write_id,
)
from .run import Cancelled, EndHop, Run, Superseded, WaitHop
from .run_waits import SideObjects
from .stores.base import Loaded
from .timing import NO_DEADLINE_MS, Timer

__all__ = ["ClaimedHop", "DetachedHop", "Response", "failed"]

log = logging.getLogger("longrun")

Response = dict[str, Any]


class ClaimedHop:
    """A hop that holds the run's claim: it runs user code and ends the hop."""

    def __init__(self, caller: Caller, writer: Writer, *, hop_index: int) -> None:
        self.caller = caller
        self.settings = caller.settings
        self.clock, self.transport = caller.clock, caller.transport
        self.writer = writer
        self.hop_index = hop_index
        self.observation: HopObservation | None = None
        checkpoint = writer.loaded.checkpoint
        settings = self.settings
        timer = Timer(
            caller.context,
            mono_function(self.clock),
            fixed_margin_ms=settings.margin_ms,
            min_margin_ms=settings.min_margin_ms,
            carried=checkpoint.timing,
            scaled_floor=settings.min_margin_default,
        )
        if writer.write_s is not None:  # the claim just written
            timer.note_write(writer.write_s)
        handoff_s = HANDOFFS.get(checkpoint.run_id)
        if handoff_s is not None:
            timer.note_handoff(handoff_s)
        run_deadline = None
        if settings.max_run_seconds is not None:
            elapsed_s = (self.clock.wall_ms() - checkpoint.created_ms) / 1000.0
            run_deadline = timer.mono() + settings.max_run_seconds - elapsed_s
        self.run = Run(
            run_id=checkpoint.run_id,
            hop=checkpoint.hop,
            # The handler gets its own copy: what it does to it never reaches the stored
            # event, which every hop reads again.
            event=json.loads(json.dumps(checkpoint.event)),
            state=checkpoint.state,
            cursors={path: c.to_json() for path, c in checkpoint.cursors.items()},
            timer=timer,
            save=self.save_progress,
            checkpoint_every_s=settings.checkpoint_every_s,
            run_deadline_mono=run_deadline,
            where=caller.where,
            initial_state=functools.partial(_stored_state, writer.loaded.data),
            steps=checkpoint.steps,
            wall_ms=self.clock.wall_ms,
            side=SideObjects(
                caller.store,
                function=caller.function,
                tenant_id=checkpoint.tenant_id or caller.tenant_id,
            ),
        )

    def ended(self, exc: BaseException) -> Response:
        """The handler raised: a hop control signal becomes an answer; anything else is
        recorded and re-raised."""
        if isinstance(exc, EndHop):
            response: Response = self._ending(self.ended_hop, exc)
            return response
        if isinstance(exc, (Superseded, Cancelled)):
            return self.stopped(exc)
        if isinstance(exc, Exception):
            self.raised(exc)
        raise exc

    def finished(self, result: Any) -> Any:
        """The handler returned ``result``.

        A handler that caught longrun's signal to end its hop (a bare ``except:`` or an
        ``except BaseException:``) and returned anyway has not finished the run: its hop
        ends as the signal said (continued, superseded or cancelled), never ``completed``.
        """
        signal = self.run.signal
        if signal is not None:
            log.warning(
                "run %s hop %d: the handler returned after catching longrun's %s signal; "
                "ending the hop as it said, not completing the run (do not catch "
                "BaseException around run.iterate)",
                self.run.id,
                self.run.hop,
                type(signal).__name__,
            )
            return self.ended(signal)
        return self._ending(self.returned, result)

    def _ending(self, step: Callable[[Any], Any], arg: Any) -> Any:
        """Run an ending step; a lost claim is an answer, any other error is recorded."""
        try:
            return step(arg)
        except (Superseded, Cancelled) as signal:
            return self.stopped(signal)
        except LongrunError as exc:
            if not exc.recorded:
                self.raised(exc)
            raise
        except Exception as exc:  # a store or encoding error in the final write
            self.raised(exc)
            raise

    def start(self) -> None:
        """Open the hop's log keys, hand the run to observers; fail it at once if it is past
        ``max_run_seconds``. :meth:`close` must follow, whatever happens."""
        run = self.run
        caller = self.caller
        entry = self.writer.loaded.checkpoint.hops[self.hop_index]
        self.observation = HopObservation(
            run_id=run.id,
            hop=run.hop,
            where=caller.where,
            request_id=caller.request_id,
            function_name=_function_name(caller.function),
            retry=entry.attempt > 1,
            user_logger=caller.user_logger,
        )
        self.observation.open()
        self.caller.ports.observer.on_run(run, self.heartbeat)
        log.info("run %s hop %d: started (%s)", run.id, run.hop, self.caller.where)
        if run._past_run_deadline(run._timer.mono()):
            self._fail(RunTimeExceeded(self._run_time_message()))

    # -- writing progress -------------------------------------------------------------------

    def _progress(self, status: Status, *, outcome: str | None, **changes: Any) -> Checkpoint:
        """The next document: the last one written, with this hop's live progress."""
        run = self.run
        if not isinstance(run.state, dict):
            raise StateNotSerializable(
                f"run.state is a {type(run.state).__name__} ({shown(run.state, 80)}): it must "
                "stay a dict (a JSON object). Keep your values under keys of run.state, e.g. "
                "run.state['rows'] = [...]. The last good checkpoint is kept.",
                path="run.state",
            )
        now = self.clock.wall_ms()
        last = self.writer.loaded.checkpoint
        hops = last.hops
        entry = hops[self.hop_index]
        items = run.items_done()
        if outcome is not None:
            entry = entry.replace(items=items, ended_ms=now, outcome=outcome)
        elif entry.items != items:
            entry = entry.replace(items=items)
        if entry is not hops[self.hop_index]:  # (else the history is unchanged: kept as is)
            changed = list(hops)
            changed[self.hop_index] = entry
            hops = tuple(changed)
        return last.replace(
            status=status,
            updated_ms=now,
            state=run.state,
            cursors={path: _cursor(c) for path, c in run.cursors().items()},
            timing=run._timer.carry(),
            hops=hops,
            # records are replaced, never changed in place: a shallow copy is a snapshot
            steps=dict(run.step_records()),
            **changes,
        )

    def _write(self, what: str, checkpoint: Checkpoint, *, prepared: bool = False) -> Loaded:
        loaded = self.writer.write(what, checkpoint, prepared=prepared)
        if self.writer.write_s is not None:
            self.run._timer.note_write(self.writer.write_s)
        return loaded

    def _write_own(
        self, what: str, status: Status, *, outcome: str | None = None, **changes: Any
    ) -> None:
        """A write by the claim holder: a lost condition means cancelled or superseded."""
        with self.writer.lock:
            seq = self.writer.loaded.checkpoint.seq + 1
            checkpoint = self._progress(
                status, outcome=outcome, seq=seq, write_id=new_write_id(), **changes
            )
            try:
                self._write(what, checkpoint, prepared=True)
            except CheckpointConflict:
                raise self._lost_claim() from None

    def save_progress(self) -> None:
        """A checkpoint during the hop (``run.checkpoint()`` and the periodic one)."""
        self._write_own("checkpoint", Status.RUNNING, claim=self.caller.claim(self.clock.wall_ms()))

    def heartbeat(self) -> bool:
        """Renew a leased claim (Fargate) without touching progress; False if it was lost.

        A store error propagates: the caller retries it (the lease is still ours)."""
        if self.caller.lease_s is None:
            return True
        with self.writer.lock:
            stored = self.writer.stored()
            if stored.status is not Status.RUNNING:
                return True
            renewed = stored.replace(claim=self.caller.claim(self.clock.wall_ms()))
            try:
                self._write("heartbeat", renewed)
            except CheckpointConflict:
                return False
            return True

    def _lost_claim(self) -> Cancelled | Superseded:
        """Why a write by the claim holder lost its condition."""
        run = self.run
        try:
            current = self.writer.store.load(run.id)
        except StoreError as exc:
            log.warning("run %s hop %d: lost the claim; cannot tell why: %s", run.id, run.hop, exc)
            return Superseded()
        if current is not None and current.checkpoint.status is Status.CANCELLED:
            log.warning("run %s hop %d: cancelled, stopping", run.id, run.hop)
            return Cancelled()
        log.warning("run %s hop %d: superseded by another invocation", run.id, run.hop)
        return Superseded()

    # -- endings ----------------------------------------------------------------------------

    def ended_hop(self, signal: EndHop) -> Response:
        """The handler stopped early (time short or ``run.end_hop()``): continue elsewhere."""
        run = self.run
        if run.final_cursors is None:
            run._freeze_cursors()
        if isinstance(signal, WaitHop):
            return self.waiting(signal)
        next_hop = run.hop + 1
        where = self.caller.where
        step = decide_next(
            where=where,
            # hops started by a wake-up are not continuations of compute: not in the budget
            next_hop=next_hop - self.writer.loaded.checkpoint.waits,
            max_hops=self.settings.max_hops,
            progress=run.items_done() > 0 or run.state_changed(),
            past_run_deadline=signal.reason == "max_run_seconds"
            or run._past_run_deadline(run._timer.mono()),
            can_escalate=self.settings.escalate is not None,
            can_reinvoke=bool(self.caller.function),
            stopping=bool(getattr(self.caller.context, "stopping", False)),  # SIGTERM
            reason=signal.reason,
        )
        if step.action is Act.FAIL:
            error, terminal = self._guard_error(step.error or "")
            self._fail(error, keep_progress=True, terminal=terminal)
        if step.action is Act.ESCALATE:
            return self._escalate(next_hop, step.reason)
        self._write_own(
            "continue", Status.CONTINUED, outcome=Status.CONTINUED.value, claim=None, next="lambda"
        )
        try:
            self.caller.send(run.id, next_hop, tenant_id=self.writer.loaded.checkpoint.tenant_id)
        except RecursionStopped as exc:
            if self.settings.escalate is not None:
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
        return answer(run.id, Answer.CONTINUED, run.hop, next="lambda")

    def _guard_error(self, name: str) -> tuple[LongrunError, bool]:
        """The error (and whether it is terminal) for a guard ``decide_next`` named."""
        run = self.run
        if name == "RunTimeExceeded":
            return RunTimeExceeded(self._run_time_message()), True
        if name == "NoProgressError":
            return NoProgressError(
                f"run {run.id} hop {run.hop} ended without finishing an item or changing state "
                f"(remaining {run.remaining_ms()} ms, margin {run.margin_ms()} ms): another "
                "hop would do the same. A single step needs more time than a hop offers: raise "
                "the function timeout, lower LONGRUN_MARGIN_MS, split the step, or configure "
                "escalation to Fargate (escalate=Fargate(...))."
            ), True
        if name == "EscalationFailed":
            return EscalationFailed(
                f"run {run.id} hop {run.hop} ran in Fargate and must continue in a "
                "replacement task, but no Fargate target is configured in the "
                "container (escalate=Fargate(...) or LONGRUN_FARGATE_* variables)."
            ), False
        if name == "HopBudgetExhausted":
            return HopBudgetExhausted(
                f"run {run.id} used its {self.settings.max_hops} re-invocations "
                f"(max_hops / LONGRUN_MAX_HOPS) and is not finished. Its checkpoint is "
                "kept: raise max_hops, or configure escalation to Fargate "
                "(escalate=Fargate(...)) so that runs carry on in a container."
            ), True
        return no_function(run.id), False

    def waiting(self, signal: WaitHop) -> Response:
        """A sleep, a retry backoff or a callback the hop cannot wait for: schedule the wake-up
        of the next hop (at the time, or at a callback's timeout), then checkpoint the run
        ``waiting`` (in that order: a hop that dies in between is retried by Lambda and
        schedules the same wake-up again; a wake-up that finds the run not waiting is a
        duplicate). A callback answered meanwhile is handed on at once."""
        from .handoff.scheduler import schedule_name

        run = self.run
        next_hop = run.hop + 1
        function = self.caller.function
        if not function:
            self._fail(no_function(run.id), terminal=True)
        tenant = self.writer.loaded.checkpoint.tenant_id or self.caller.tenant_id
        name = None
        if signal.until_ms is not None:
            name = schedule_name(run.id, next_hop)
            payload = json.dumps(make_envelope(run.id, next_hop)).encode()
            try:
                with traced("wake-up", run.id, hop=next_hop):
                    self.transport.schedule_wake(
                        str(function), payload, signal.until_ms, name=name, tenant_id=tenant
                    )
            except LongrunError as exc:
                self._fail(exc, keep_progress=True, terminal=False)
            except Exception as exc:
                self._fail(
                    HandoffFailed(f"run {run.id}: could not schedule its wake-up {name}: {exc}"),
                    keep_progress=True,
                    terminal=False,
                    cause=exc,
                )
        wait = {"kind": signal.kind, "name": signal.name, "until_ms": signal.until_ms,
                "schedule": name}  # fmt: skip
        self._write_own(
            "wait",
            Status.WAITING,
            outcome=Status.WAITING.value,
            claim=None,
            next=None,
            wait=wait,
            waits=self.writer.loaded.checkpoint.waits + 1,
        )
        if signal.kind == "callback":
            from .callbacks import answer_arrived

            if answer_arrived(run, signal.name):  # answered while this hop was going waiting
                self.caller.send(run.id, next_hop, tenant_id=tenant)
        elif signal.kind == "map":
            from .fanout import join_complete

            if join_complete(run, signal.name):  # the children finished meanwhile
                self.caller.send(run.id, next_hop, tenant_id=tenant)
        log.info("run %s hop %d: waiting (%s %s) until %s", run.id, run.hop, signal.kind,
                 signal.name, signal.until_ms)  # fmt: skip
        return answer(run.id, Status.WAITING, run.hop, until_ms=signal.until_ms, wake=name)

    def _escalate(self, next_hop: int, reason: str, *, after_continue: bool = False) -> Response:
        """Checkpoint as ``escalated`` and start the Fargate task that runs ``next_hop``."""
        run = self.run
        self._write_own(
            "escalate",
            Status.ESCALATED,
            # After a "continued" write the hop's outcome is already recorded.
            outcome=None if after_continue else Status.ESCALATED.value,
            claim=None,
            next="fargate",
            escalation=Escalation(reason=reason, hop=next_hop),
        )
        try:
            task_arn = self.caller.start_task(self.writer, next_hop)
        except EscalationFailed as exc:
            self._fail(exc, terminal=False, cause=exc.__cause__)
        log.info(
            "run %s hop %d: escalated to Fargate as hop %d (%s): %s",
            run.id,
            run.hop,
            next_hop,
            reason,
            task_arn,
        )
        return answer(run.id, Answer.CONTINUED, run.hop, next="fargate", task_arn=task_arn)

    def returned(self, result: Any) -> Any:
        """The handler finished: record the result, mark the run completed, return it.

        With ``on_complete``, the same write holds the notice; it is sent after the write
        (NotificationFailed when it cannot be: the result stays stored, a retry sends it)."""
        run = self.run
        if is_plain_json(result):
            stored, note = result, None
        else:
            stored, note = None, f"the result (a {type(result).__name__}) is not plain JSON"
        notice = self._notice(Status.COMPLETED)
        try:
            self._write_own(
                "complete",
                Status.COMPLETED,
                outcome=Status.COMPLETED.value,
                claim=None,
                result=stored,
                result_note=note,
                **notice,
            )
        except (Superseded, Cancelled) as signal:
            return self.stopped(signal)
        log.info("run %s completed at hop %d", run.id, run.hop)
        self._send_notice()
        self._join_parent()
        return result

    def _join_parent(self) -> None:
        """A ``run.map`` child that settled joins its parent (``longrun.join``)."""
        checkpoint = self.writer.loaded.checkpoint
        if checkpoint.parent is not None:
            from .join import join_settled

            join_settled(self.caller.store, checkpoint)

    def _notice(self, status: Status) -> dict[str, Any]:
        """``{"notice": ...}`` for the write that settles the run with ``status`` (held by
        this invocation until its deadline), or nothing without ``on_complete``."""
        target = self.caller.notify
        if target is None:
            return {}
        from .notify import notice_for

        deadline = self.caller.claim(self.clock.wall_ms()).deadline_ms
        notice = notice_for(
            self.run.id, self.run.hop, status, target, by=self.caller.request_id, until_ms=deadline
        )
        return {"notice": notice}

    def _send_notice(self) -> None:
        target = self.caller.notify
        if target is not None:
            from .notify import deliver

            deliver(self.writer, target, self.clock.wall_ms())

    def close(self) -> None:
        """The hop is over: reset its log keys and emit its metrics."""
        observation = self.observation
        if observation is None:
            return
        self.observation = None
        checkpoint = self.writer.loaded.checkpoint
        remaining = self.caller.remaining_ms()
        observation.close(
            {
                "continued": checkpoint.status is Status.CONTINUED and checkpoint.next == "lambda",
                "escalated": checkpoint.status is Status.ESCALATED or checkpoint.next == "fargate",
                "items": self.run.items_done(),
                "writes": self.writer.writes,
                "HandoffMs": None
                if self.caller.handoff_s is None
                else round(self.caller.handoff_s * 1000, 3),
                "MarginMs": self.run.margin_ms(),
                "UnusedMs": None if remaining >= NO_DEADLINE_MS else remaining,
            }
        )

    def stopped(self, signal: Superseded | Cancelled) -> Response:
        """The claim was lost to a newer hop or to a cancel: answer without hopping."""
        status = Answer.CANCELLED if isinstance(signal, Cancelled) else Answer.SUPERSEDED
        return answer(self.run.id, status, self.run.hop)

    def raised(self, exc: BaseException) -> None:
        """User code raised: record the failure on top of the last checkpoint (not over it)."""
        try:
            self._record_failure(exc, terminal=False)
        except Exception as store_exc:  # the original error matters more
            log.error("run %s: could not record failure: %s", self.run.id, store_exc)

    def _record_failure(
        self, exc: BaseException, *, terminal: bool, progress: bool = False
    ) -> None:
        """Record the failure. A failure for good (terminal, or where no platform retry
        follows: a Fargate task, a local run) is notified with ``on_complete``; a failure
        of the notification is logged, the original error is what the hop raises."""
        parent = self.writer.loaded.checkpoint.parent
        if parent is not None and not terminal and _last_attempt(self.writer, self.hop_index):
            terminal = True  # a run.map child: Lambda retries no more, its join counts it
        final = terminal or self.caller.where != "lambda"
        notice = self._notice(Status.FAILED) if final else {}
        with self.writer.lock:
            now = self.clock.wall_ms()
            if progress:
                error = _error(exc, terminal)
                checkpoint = self._progress(
                    Status.FAILED, outcome=Status.FAILED.value, claim=None, error=error
                )
            else:
                # Start from what was last written, not the live state: a failed hop must not
                # overwrite the stored checkpoint with progress it never saved.
                checkpoint = failed(self.writer.stored(), exc, terminal, now, self.hop_index)
            self._write("fail", checkpoint.replace(**notice))
        if checkpoint.parent is not None:
            try:
                self._join_parent()
            except LongrunError as join_exc:
                log.error("run %s: %s", self.run.id, join_exc)
        if notice:
            try:
                self._send_notice()
            except NotificationFailed as notify_exc:
                log.error("run %s: %s (a retry of this invocation sends it)", self.run.id,
                          notify_exc)  # fmt: skip

    def _fail(
        self,
        exc: LongrunError,
        *,
        keep_progress: bool = False,
        terminal: bool = True,
        cause: BaseException | None = None,
    ) -> NoReturn:
        """Record a guard's failure (with the hop's progress if asked) and raise it."""
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
        return (
            f"run {self.run.id} has run longer than max_run_seconds="
            f"{self.settings.max_run_seconds:g} (LONGRUN_MAX_RUN_SECONDS). Its checkpoint is "
            "kept: raise the limit and resume it, or cancel it."
        )


class DetachedHop:
    """``LONGRUN_DISABLED``: the handler runs with a run handle, no store, no hops."""

    def __init__(self, event: Any, settings: Settings) -> None:
        timer = Timer(None, mono_function(active().clock), fixed_margin_ms=0, min_margin_ms=0)
        self.run = Run(
            run_id=f"disabled-{_uuid4()}",
            hop=0,
            event=event,
            state={},
            cursors={},
            timer=timer,
            save=None,
            checkpoint_every_s=settings.checkpoint_every_s,
            run_deadline_mono=None,
            where="local",
        )

    def ended(self, exc: BaseException) -> Response:
        if isinstance(exc, EndHop):
            return answer(self.run.id, Answer.STOPPED, 0, disabled=True)
        raise exc

    def finished(self, result: Any) -> Any:
        if self.run.signal is not None:  # the handler caught the signal and returned
            return self.ended(self.run.signal)
        return result

    def close(self) -> None:
        """Nothing to close: a detached hop has no run to observe."""


def _cursor(entry: dict[str, Any]) -> Cursor:
    """A live loop position (from ``run.cursors()``) as the protocol stores it (its fields
    set directly: the frozen dataclass's ``__init__`` costs a microsecond a write)."""
    cursor = object.__new__(Cursor)
    cursor.__dict__.update(
        pos=entry["pos"],
        done=entry["done"],
        key=entry.get("key"),
        has_key="key" in entry,
        ordered=bool(entry.get("ordered", False)),
        total=entry.get("total"),
    )
    return cursor


def _error(exc: BaseException, terminal: bool) -> ErrorRecord:
    return ErrorRecord(
        type=type(exc).__name__,
        message=str(exc),
        terminal=terminal,
        traceback=tuple(traceback.format_exception(exc)[-20:]),
    )


def failed(
    stored: Checkpoint, exc: BaseException, terminal: bool, now: int, index: int = -1
) -> Checkpoint:
    """``stored`` marked failed by ``exc``, its hop entry at ``index`` ended."""
    hops = list(stored.hops)
    if hops:
        hops[index] = hops[index].replace(ended_ms=now, outcome=Status.FAILED.value)
    return stored.replace(
        status=Status.FAILED,
        claim=None,
        error=_error(exc, terminal),
        updated_ms=now,
        hops=tuple(hops),
    )


def _stored_state(data: bytes) -> Any:
    """``state`` as a checkpoint's bytes hold it."""
    return json.loads(data)["state"]


def _function_name(arn: Any) -> str | None:
    """The function's name from its (possibly qualified) ARN."""
    if not isinstance(arn, str) or not arn:
        return None
    parts = arn.split(":")
    return parts[6] if len(parts) > 6 else arn


def _last_attempt(writer: Writer, hop_index: int) -> bool:
    """Whether this hop attempt is a ``run.map`` child's ``LONGRUN_CHILD_ATTEMPTS``-th."""
    from .join import child_attempts

    hops = writer.loaded.checkpoint.hops
    return hop_index < len(hops) and hops[hop_index].attempt >= child_attempts()
