"""Every error longrun raises derives from :class:`LongrunError`.

Each message says what happened, names the value at fault and says what to do.
"""

from __future__ import annotations

__all__ = [
    "CheckpointConflict",
    "ClaimBusy",
    "CheckpointCorrupt",
    "CheckpointFormatError",
    "CursorKeyMissing",
    "EnvelopeError",
    "EscalationFailed",
    "HandoffFailed",
    "HopBudgetExhausted",
    "InvalidRunId",
    "LongrunConfigError",
    "LongrunError",
    "NoProgressError",
    "NotInRunError",
    "NotificationFailed",
    "RecursionStopped",
    "RunNotFound",
    "RunTimeExceeded",
    "StateNotSerializable",
    "StepInterrupted",
    "StoreError",
]


def shown(value: object, limit: int = 200) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for messages that quote user data."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


class LongrunError(Exception):
    """Root of every error raised by longrun."""

    recorded = False
    """Set once the error is written into the run's checkpoint (so it is not written twice)."""


class LongrunConfigError(LongrunError, ValueError):
    """A setting (argument or ``LONGRUN_*`` variable) has a value longrun cannot use."""


class NotInRunError(LongrunError, RuntimeError):
    """``current_run()`` was called outside a handler decorated with ``@longrun``."""


class EnvelopeError(LongrunError, ValueError):
    """An event carries a ``"longrun"`` key but is not a valid continuation envelope."""


class InvalidRunId(LongrunError, ValueError):
    """A run id is empty, too long or holds characters outside ``[A-Za-z0-9._-]``."""


class RunNotFound(LongrunError, LookupError):
    """A continuation envelope names a run the checkpoint store does not hold."""


class StoreError(LongrunError):
    """The checkpoint store failed to read or write (not a lost race: see CheckpointConflict)."""


class CheckpointConflict(StoreError):
    """A conditional write lost: another invocation wrote the checkpoint since it was read."""


class CheckpointCorrupt(StoreError):
    """A stored checkpoint is not a valid longrun checkpoint document.

    ``field`` names the part at fault (``cursors['items'].done``, ``hops[2].started_ms``,
    ``run_id``, ``(json)`` for bytes that are not JSON); nothing is written over it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CheckpointFormatError(CheckpointCorrupt):
    """A stored checkpoint was written by a newer longrun (higher ``format``)."""


class StateNotSerializable(LongrunError, TypeError):
    """``run.state`` (or an iterate key) holds a value that cannot be saved as plain JSON.

    ``path`` names the value (``run.state['rows'][3]``) when it is known.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CursorKeyMissing(LongrunError, LookupError):
    """A keyed ``run.iterate`` could not find the key of the last finished item on resume."""


class ClaimBusy(LongrunError):
    """A re-delivery with the claim holder's own request id arrived before its deadline.

    Lambda's retry of an invocation that died early (out of memory, a crash) looks like this,
    and so does a duplicate of a live one: raising lets Lambda retry later (or hand the event
    to the on-failure destination) instead of taking an answer that would end the run.
    """


class HopBudgetExhausted(LongrunError):
    """The run used ``max_hops`` Lambda re-invocations and no escalation is configured."""


class NoProgressError(LongrunError):
    """A hop ended without finishing any item or changing state: re-invoking would loop."""


class RecursionStopped(LongrunError):
    """AWS recursive-loop detection refused the self re-invocation."""


class StepInterrupted(LongrunError):
    """An ``at_most_once`` step was interrupted in an earlier hop: it is not run again."""


class NotificationFailed(LongrunError):
    """The completion notification (``on_complete``) could not be sent; the result is stored,
    and a retry of the invocation sends it again."""

    recorded = True
    """Recorded in the run's notice, not as a failure of the run: the run has settled."""


class RunTimeExceeded(LongrunError):
    """The run has been going for longer than ``max_run_seconds``."""


class EscalationFailed(LongrunError):
    """ECS did not start the Fargate task a run was escalated to (the ECS reason is given)."""


class HandoffFailed(LongrunError):
    """The checkpoint was saved but the next hop could not be started."""


# Errors that end a run for good: a re-delivery of the failed hop re-raises them
# without running user code, instead of spending another hop.
TERMINAL_ERRORS: dict[str, type[LongrunError]] = {
    cls.__name__: cls
    for cls in (HopBudgetExhausted, NoProgressError, RecursionStopped, RunTimeExceeded)
}
