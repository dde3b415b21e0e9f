"""The status API for callers: ``get_run(run_id, store=...)``.

An API that starts a long job returns its run id at once; a client then polls ``get_run``
(through another route of the same API) until the run has settled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import env_store, store_from_uri
from .errors import RunNotFound
from .protocol import Checkpoint, Status
from .stores.base import CheckpointStore

__all__ = ["RunInfo", "get_run"]

SETTLED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


@dataclass(frozen=True)
class RunInfo:
    """A run as its checkpoint holds it now."""

    run_id: str
    status: str
    """``running``, ``continued``, ``escalated``, ``waiting``, ``completed``, ``failed`` or
    ``cancelled``."""
    hop: int
    where: str | None
    """Where the latest hop ran: ``lambda``, ``fargate`` or ``local``."""
    items_done: int
    """Items finished by ``run.iterate`` loops, over all hops."""
    started_ms: int
    updated_ms: int
    result: Any
    """The handler's result once ``completed`` (``None`` if it was not plain JSON)."""
    error: dict[str, Any] | None
    """``type``, ``message`` and ``terminal`` of the recorded failure, if any."""

    @property
    def settled(self) -> bool:
        """Whether the run has ended (completed, failed or cancelled)."""
        return Status(self.status) in SETTLED

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> RunInfo:
        last = checkpoint.hops[-1] if checkpoint.hops else None
        error = checkpoint.error
        return cls(
            run_id=checkpoint.run_id,
            status=checkpoint.status.value,
            hop=checkpoint.hop,
            where=last.where if last else None,
            items_done=sum(entry.items for entry in checkpoint.hops),
            started_ms=checkpoint.created_ms,
            updated_ms=checkpoint.updated_ms,
            result=checkpoint.result if checkpoint.status is Status.COMPLETED else None,
            error=None
            if error is None
            else {"type": error.type, "message": error.message, "terminal": error.terminal},
        )


def get_run(run_id: str, *, store: CheckpointStore | str | None = None) -> RunInfo:
    """The run ``run_id`` as stored now: ``store`` is a store, a URI (``s3://b/p/``,
    ``file:///path``) or, when ``None``, ``LONGRUN_CHECKPOINT_URI``. Raises RunNotFound if
    there is no such run, InvalidRunId for an id longrun could not have made, and
    CheckpointCorrupt for a document that is not a valid checkpoint."""
    if store is None:
        chosen = env_store()
    elif isinstance(store, str):
        chosen = store_from_uri(store, name="store")
    else:
        chosen = store
    loaded = chosen.load(run_id)
    if loaded is None:
        raise RunNotFound(f"no run {run_id!r} in {chosen.describe()}.")
    return RunInfo.of(loaded.checkpoint)
