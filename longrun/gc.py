"""``longrun gc``: delete settled runs older than an age, never a live one.

Candidates come from the run index (:mod:`longrun.stores.index`); each one's checkpoint is
read before anything is deleted, and only what it says counts:

- ``completed`` and ``cancelled`` runs can never run again: they are deleted (checkpoint,
  the objects in the run's folder, its index markers);
- a ``failed`` run could still be resumed (``longrun resume``, Lambda's retry): it is first
  marked ``cancelled`` with a fenced write, so that a resume racing with gc either wins (gc
  leaves the run alone) or finds it cancelled (and does nothing);
- anything else is live, and is left alone; so is a checkpoint that cannot be read;
- a ``run.map`` child whose parent run is not settled is left alone: the parent reads its
  result from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import CheckpointConflict, CheckpointCorrupt
from .protocol import Status
from .stores.base import CheckpointStore
from .stores.index import newest

__all__ = ["Collected", "collect_garbage"]


@dataclass
class Collected:
    """What a collection did (or, with ``dry_run``, would do)."""

    dry_run: bool
    cutoff_ms: int
    deleted: list[str] = field(default_factory=list)
    """Runs deleted (or that would be)."""
    kept: dict[str, str] = field(default_factory=dict)
    """Runs older than the cutoff by their index that were left alone, and why."""
    orphans: list[str] = field(default_factory=list)
    """Index markers of runs without a checkpoint (removed)."""


def collect_garbage(
    store: CheckpointStore, *, older_than_s: float, now_ms: int, dry_run: bool = False
) -> Collected:
    """Delete the runs of ``store`` that settled more than ``older_than_s`` before
    ``now_ms``."""
    cutoff = now_ms - int(older_than_s * 1000)
    done = Collected(dry_run=dry_run, cutoff_ms=cutoff)
    parents: dict[str, str | None] = {}

    def parent_live(parent_id: str) -> str | None:
        """Why the parent keeps its children (it is not settled), or ``None``."""
        if parent_id not in parents:
            try:
                found = store.load(parent_id)
            except CheckpointCorrupt:
                found = None
            status = None if found is None else found.checkpoint.status
            parents[parent_id] = None if status is None or status.settled else status.value
        return parents[parent_id]

    for run_id, marker in sorted(newest(store.markers()).items()):
        # A live marker holds the start only: a run started before the cutoff is looked at.
        if (marker.started_ms if marker.live else marker.updated_ms) >= cutoff:
            continue
        try:
            loaded = store.load(run_id)
        except CheckpointCorrupt as exc:
            done.kept[run_id] = f"its checkpoint cannot be read ({str(exc)[:120]})"
            continue
        if loaded is None:
            done.orphans.append(run_id)
            if not dry_run:
                store.purge(run_id)
            continue
        checkpoint = loaded.checkpoint
        if checkpoint.status not in (Status.COMPLETED, Status.CANCELLED, Status.FAILED):
            done.kept[run_id] = f"live ({checkpoint.status.value}, hop {checkpoint.hop})"
            continue
        if checkpoint.updated_ms >= cutoff:
            continue  # its index was behind: it settled recently
        parent = None if checkpoint.parent is None else str(checkpoint.parent.get("run"))
        if parent is not None and parent_live(parent):
            done.kept[run_id] = f"a child of run {parent}, which is {parent_live(parent)}"
            continue
        if dry_run:
            done.deleted.append(run_id)
            continue
        if checkpoint.status is Status.FAILED:
            fenced = checkpoint.replace(status=Status.CANCELLED, claim=None, next=None)
            try:
                store.replace(fenced, loaded.token, previous=checkpoint)
            except CheckpointConflict:
                done.kept[run_id] = "it changed while being collected (resumed?)"
                continue
        store.purge(run_id)
        done.deleted.append(run_id)
    return done
