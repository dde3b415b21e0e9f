"""The status API for callers: ``get_run(run_id, store=...)``.

An API that starts a long job returns its run id at once; a client then polls ``get_run``
(through another route of the same API) until the run has settled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .config import env_store, store_from_uri
from .errors import CheckpointCorrupt, LongrunConfigError, RunNotFound
from .protocol import Checkpoint, Status
from .stores.base import CheckpointStore
from .stores.index import SETTLED, Marker, newest

__all__ = ["RunInfo", "RunSummary", "find_runs", "get_run"]

STATUSES = tuple(status.value for status in Status)
_SETTLED_NAMES = frozenset(status.value for status in SETTLED)
UNREADABLE = "unreadable"
"""The status a listing shows for a run whose checkpoint is not a valid document."""


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


@dataclass(frozen=True)
class RunSummary:
    """A run as a listing shows it (:func:`find_runs`)."""

    run_id: str
    status: str
    hop: int
    where: str | None
    items_done: int
    started_ms: int
    updated_ms: int

    @property
    def settled(self) -> bool:
        return self.status in _SETTLED_NAMES

    @classmethod
    def of(cls, info: RunInfo | Marker) -> RunSummary:
        if isinstance(info, Marker):
            where = None if info.where == "-" else info.where
            return cls(
                info.run_id, info.phase, info.hop, where, info.items, info.started_ms,
                info.updated_ms,
            )  # fmt: skip
        return cls(
            info.run_id, info.status, info.hop, info.where, info.items_done, info.started_ms,
            info.updated_ms,
        )  # fmt: skip


def _store(store: CheckpointStore | str | None) -> CheckpointStore:
    if store is None:
        return env_store()
    if isinstance(store, str):
        return store_from_uri(store, name="store")
    return store


def find_runs(
    store: CheckpointStore | str | None = None,
    *,
    status: Iterable[str] = (),
    since_ms: int | None = None,
    limit: int | None = None,
    parent: str | None = None,
) -> list[RunSummary]:
    """The runs in ``store``, newest first: those with one of the statuses in ``status``
    (all when empty), started at or after ``since_ms``, at most ``limit`` of them; with
    ``parent``, only the child runs of that run's ``run.map`` calls.

    Settled runs come from the run index alone (the names of their markers); only live
    runs' checkpoints are read, a few at a time in parallel.
    """
    wanted = frozenset(status)
    unknown = sorted(wanted - set(STATUSES))
    if unknown:
        raise LongrunConfigError(
            f"status {', '.join(map(repr, unknown))} is not one of {', '.join(STATUSES)}."
        )
    chosen = _store(store)
    markers = sorted(
        newest(chosen.markers()).values(), key=lambda m: (m.started_ms, m.run_id), reverse=True
    )
    if since_ms is not None:
        markers = [m for m in markers if m.started_ms >= since_ms]
    if parent is not None:
        from .join import child_prefixes

        prefixes = tuple(child_prefixes(chosen, parent))
        markers = [m for m in markers if prefixes and m.run_id.startswith(prefixes)]
    live_wanted = not wanted or bool(wanted - {s.value for s in SETTLED})
    markers = [m for m in markers if (m.live and live_wanted) or not wanted or m.phase in wanted]

    def read(marker: Marker) -> RunSummary | None:
        if not marker.live:
            return RunSummary.of(marker)
        try:
            loaded = chosen.load(marker.run_id)
        except CheckpointCorrupt:  # shown, not fatal: `longrun status` tells what is wrong
            return RunSummary(marker.run_id, UNREADABLE, marker.hop, None, 0, marker.started_ms,
                              marker.updated_ms)  # fmt: skip
        if loaded is None:  # created after its marker, or never: not a run (yet)
            return None
        return RunSummary.of(RunInfo.of(loaded.checkpoint))

    from concurrent.futures import ThreadPoolExecutor  # not at import: a cold start never lists

    found: list[RunSummary] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        start = 0
        while start < len(markers) and (limit is None or len(found) < limit):
            batch = markers[start : start + max(64, limit or 0)]
            start += len(batch)
            for summary in pool.map(read, batch):
                if summary is not None and (not wanted or summary.status in wanted):
                    found.append(summary)
    return found if limit is None else found[:limit]


def get_run(run_id: str, *, store: CheckpointStore | str | None = None) -> RunInfo:
    """The run ``run_id`` as stored now: ``store`` is a store, a URI (``s3://b/p/``,
    ``file:///path``) or, when ``None``, ``LONGRUN_CHECKPOINT_URI``. Raises RunNotFound if
    there is no such run, InvalidRunId for an id longrun could not have made, and
    CheckpointCorrupt for a document that is not a valid checkpoint."""
    chosen = _store(store)
    loaded = chosen.load(run_id)
    if loaded is None:
        raise RunNotFound(f"no run {run_id!r} in {chosen.describe()}.")
    return RunInfo.of(loaded.checkpoint)
