"""An invocation before it holds the run: read it, ask the protocol, claim or answer.

:class:`Invocation` reads the run and asks ``protocol.decide_claim`` what this delivery may
do. It answers at once (a duplicate, a cancelled run, a retry that only re-sends the next
hop or restarts a task) or claims the run and returns the :class:`~longrun.hop.ClaimedHop`
that runs the handler. ``docs/concepts.md`` describes the protocol.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .caller import Caller, Writer
from .checkpoint import Envelope, parse_envelope, validate_run_id
from .config import Settings
from .errors import (
    TERMINAL_ERRORS,
    CheckpointConflict,
    CheckpointCorrupt,
    ClaimBusy,
    EnvelopeError,
    LongrunError,
    RecursionStopped,
    RunNotFound,
    StateNotSerializable,
    shown,
)
from .hop import ClaimedHop, Response, failed
from .observe import traced
from .protocol import (
    Act,
    Answer,
    Checkpoint,
    Status,
    answer,
    decide_claim,
    decide_new_run,
    notice_due,
)
from .run import Cancelled, Superseded
from .stores.base import CheckpointStore, Loaded

if TYPE_CHECKING:
    from .notify import Target

__all__ = ["Invocation"]

log = logging.getLogger("longrun")


class Invocation(Caller):
    """An invocation before it holds the run: decide, then claim or answer."""

    def __init__(
        self,
        settings: Settings,
        store: CheckpointStore,
        event: Any,
        context: Any,
        *,
        run_id_fn: Callable[[Any], str] | None = None,
        lambda_client: Any = None,
        user_logger: Any = None,
        notify: Target | None = None,
    ) -> None:
        super().__init__(
            settings,
            store,
            event,
            context,
            lambda_client=lambda_client,
            user_logger=user_logger,
            notify=notify,
        )
        self.run_id_fn = run_id_fn

    def begin(self) -> Response | ClaimedHop:
        """Claim the run and return the claimed hop, or the answer to give instead."""
        envelope = parse_envelope(self.event)
        if envelope is not None:
            hop = self._begin_hop(envelope)
        elif isinstance(self.event, dict) and "longrun_child" in self.event:
            hop = self._begin_child()
        else:
            hop = self._begin_new()
        if isinstance(hop, ClaimedHop):
            try:
                hop.start()
            except (Superseded, Cancelled) as signal:
                try:
                    return hop.stopped(signal)
                finally:
                    hop.close()
            except BaseException:
                hop.close()
                raise
        return hop

    def _new_run_id(self) -> str:
        if self.run_id_fn is None:
            return validate_run_id(self.request_id, source="context.aws_request_id")
        try:
            raw = self.run_id_fn(self.event)
        except Exception as exc:
            raise LongrunError(
                f"the run_id function {shown(self.run_id_fn)} failed on this event: {shown(exc)}"
            ) from exc
        return validate_run_id(raw, source="run_id(event)")

    def _begin_child(self) -> Response | ClaimedHop:
        """A child run of ``run.map``: its id derives from its parent's and its index, its
        event is its item (read from the parent's side objects)."""
        from .join import child_item, child_run_id, parse_child_event

        parsed = parse_child_event(self.event)
        assert parsed is not None
        parent_id, digest, index = parsed
        run_id = child_run_id(parent_id, digest, index)
        existing = self.store.load(run_id)
        if existing is not None:  # a duplicate start, a retry, or a cancelled child
            return self._claim_new_again(existing)
        item = child_item(self.store, parent_id, digest, index)
        parent = {"run": parent_id, "map": digest, "index": index}
        return self._begin_new(run_id, item, parent)

    def _begin_new(
        self,
        run_id: str | None = None,
        event: Any = None,
        parent: dict[str, Any] | None = None,
    ) -> Response | ClaimedHop:
        if run_id is None:
            run_id, event = self._new_run_id(), self.event
        now = self.clock.wall_ms()
        checkpoint = Checkpoint(
            run_id=run_id,
            status=Status.RUNNING,
            hop=0,
            created_ms=now,
            updated_ms=now,
            event=event,
            state={},
            cursors={},
            hops=(self.hop_entry(0, 1, now),),
            origin_request_id=self.request_id,
            function=self.function,
            claim=self.claim(now),
            tenant_id=self.tenant_id,
            parent=parent,
        )
        try:
            writer = Writer.create(self.store, self.ports, checkpoint)
        except CheckpointConflict:
            with traced("checkpoint load", run_id, hop=0):
                existing = self.store.load(run_id)
            if existing is None:  # deleted in between: a rare race, let Lambda retry
                raise
            return self._claim_new_again(existing)
        return ClaimedHop(self, writer, hop_index=0)

    def _claim_new_again(self, existing: Loaded) -> Response | ClaimedHop:
        """A first invocation found its run id taken: claim its own retry, else answer with
        the run as it is (a settled child run joins its parent if it has not yet)."""
        found = existing.checkpoint
        run_id = found.run_id
        if decide_new_run(found, self.request_id) is Act.CLAIM:
            return self._claim_existing(existing, 0)
        self._join_owed(found)
        extra = {"result": found.result} if found.status is Status.COMPLETED else {}
        log.info("run %s already exists (status %s): not started again", run_id, found.status)
        return answer(run_id, found.status, found.hop, existing=True, **extra)

    def _join_owed(self, checkpoint: Checkpoint) -> None:
        """A settled child run whose delivery came again joins its parent if it has not (its
        last invocation died before it did): see ``longrun.join``."""
        if checkpoint.parent is not None:
            from .join import join_child

            join_child(self.store, checkpoint)

    def _begin_hop(self, envelope: Envelope) -> Response | ClaimedHop:
        with traced("checkpoint load", envelope.run_id, hop=envelope.hop):
            loaded = self.store.load(envelope.run_id)
        if loaded is None:
            raise RunNotFound(
                f"envelope names run {envelope.run_id!r}, but {self.store.describe()} holds no "
                "checkpoint for it. Was it deleted, or does this function use another store "
                "than the one that started the run?"
            )
        return self._claim_existing(loaded, envelope.hop)

    def _claim_existing(self, loaded: Loaded, hop: int) -> Response | ClaimedHop:
        checkpoint = loaded.checkpoint
        run_id = checkpoint.run_id
        now = self.clock.wall_ms()
        decision = decide_claim(
            checkpoint, hop, request_id=self.request_id, where=self.where, now_ms=now
        )
        action = decision.action
        if action in (Act.DUPLICATE, Act.TERMINAL) and self.notify is not None:
            self._owed_notice(loaded, now)
        if action in (Act.DUPLICATE, Act.TERMINAL, Act.CANCELLED):
            self._join_owed(checkpoint)
        if action is Act.CANCELLED:
            return answer(run_id, Status.CANCELLED, hop)
        if action is Act.DUPLICATE:
            return self._duplicate(run_id, hop, decision.reason)
        if action is Act.BAD_HOP:
            raise EnvelopeError(f"run {run_id!r}: {decision.reason}.")
        if action is Act.BUSY:
            raise ClaimBusy(
                f"run {run_id} hop {hop} is {decision.reason} (epoch ms): either a duplicate of "
                "a live invocation or Lambda's retry of one that died early. Raising lets "
                "Lambda retry after the claim expires; nothing was run."
            )
        if action is Act.RESEND:
            return self._resend(loaded, hop)
        if action is Act.RESTART_TASK:
            return self._restart_task(loaded, hop)
        if action is Act.TERMINAL:
            kind = checkpoint.error.type if checkpoint.error else ""
            raise TERMINAL_ERRORS.get(kind, LongrunError)(decision.reason)
        if decision.takeover:
            log.warning("run %s hop %d: %s", run_id, hop, decision.reason)
        claimed = checkpoint.replace(
            status=Status.RUNNING,
            hop=hop,
            claim=self.claim(now),
            error=None,
            next=None,
            wait=None,
            updated_ms=now,
            hops=(*checkpoint.hops, self.hop_entry(hop, 1 + checkpoint.attempts(hop), now)),
        )
        writer = Writer(self.store, self.ports, loaded)
        try:
            writer.write("claim", claimed)
        except CheckpointConflict:
            return self._duplicate(run_id, hop, "another invocation claimed it first")
        except StateNotSerializable as exc:
            # Nothing but the stored document is in the claim yet: it holds a value plain
            # JSON cannot hold (a number that overflows to infinity). Nothing was written.
            field = (exc.path or "(json)").removeprefix("run.")
            raise CheckpointCorrupt(
                f"checkpoint {self.store.describe(self.store.key(run_id))} is not a valid "
                f"longrun checkpoint: {field}: {exc} Inspect or delete it; nothing was "
                "overwritten and no user code ran.",
                field=field,
            ) from None
        return ClaimedHop(self, writer, hop_index=len(claimed.hops) - 1)

    def _owed_notice(self, loaded: Loaded, now: int) -> None:
        """The run settled and its notification is owed (it failed, or its sender died): take
        it over with a fenced write and send it; NotificationFailed if it fails again."""
        checkpoint = loaded.checkpoint
        owed = notice_due(checkpoint, self.request_id, now)
        notice = checkpoint.notice
        if owed is None or notice is None or self.notify is None:
            return
        if owed is Act.BUSY:
            raise ClaimBusy(
                f"run {checkpoint.run_id}: its notification {notice.id} is being sent by this "
                f"same request id until {notice.until_ms} (epoch ms): a duplicate of a live "
                "invocation or the retry of one that died. Raising lets Lambda retry after it."
            )
        if owed is Act.DUPLICATE:
            return
        taken = notice.replace(
            state="sending",
            by=self.request_id,
            until_ms=self.claim(now).deadline_ms,
            attempts=notice.attempts + 1,
            error=None,
        )
        writer = Writer(self.store, self.ports, loaded)
        try:
            writer.write("notice", checkpoint.replace(notice=taken))
        except CheckpointConflict:
            return  # another invocation took it first
        log.warning("run %s: sending its notification again (%s)", checkpoint.run_id, notice.id)
        from .notify import deliver

        deliver(writer, self.notify, self.clock.wall_ms())

    def _duplicate(self, run_id: str, hop: int, reason: str) -> Response:
        log.info("run %s hop %d: not run (%s)", run_id, hop, reason)
        return answer(run_id, Answer.DUPLICATE, hop, reason=reason)

    # -- retries of a hop that already handed off ---------------------------------------------

    def _resend(self, loaded: Loaded, hop: int) -> Response:
        """Lambda retried a hop that checkpointed but may not have handed off: hand off again.

        The first hand-off may have gone through (fencing refuses the spare), so a failing
        resend records nothing, except a recursion refusal, which no retry can get past.
        """
        run_id = loaded.checkpoint.run_id
        log.warning(
            "run %s hop %d: retried after its checkpoint; re-sending hop %d", run_id, hop, hop + 1
        )
        try:
            self.send(run_id, hop + 1, tenant_id=loaded.checkpoint.tenant_id)
        except RecursionStopped as exc:
            writer = Writer(self.store, self.ports, loaded)
            with contextlib.suppress(CheckpointConflict):
                writer.write("fail", failed(writer.stored(), exc, True, self.clock.wall_ms()))
                exc.recorded = True
            raise
        return answer(run_id, Answer.CONTINUED, hop, next="lambda", resent=True)

    def _restart_task(self, loaded: Loaded, hop: int) -> Response:
        """Lambda retried the hop that escalated: start the task again unless one is known."""
        checkpoint = loaded.checkpoint
        run_id, escalation = checkpoint.run_id, checkpoint.escalation
        if escalation is not None and escalation.task_arn:
            return self._duplicate(run_id, hop, f"already escalated to {escalation.task_arn}")
        if self.settings.escalate is None:
            return self._duplicate(run_id, hop, "escalated, but no Fargate target is configured")
        task_arn = self.start_task(Writer(self.store, self.ports, loaded), hop + 1)
        return answer(run_id, Answer.CONTINUED, hop, next="fargate", task_arn=task_arn, resent=True)
