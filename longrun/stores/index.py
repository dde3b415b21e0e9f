"""The run index: a small marker object per run whose *name* holds the run's summary, so
that listing runs reads keys, never checkpoints.

A marker is an empty object ``_runs/{run_id}~{seq}~{phase}~{hop}~{where}~{items}~{started}~
{updated}`` (``~`` cannot occur in a run id, and ``_runs`` cannot be one). ``phase`` is a
settled status (``completed``, ``failed``, ``cancelled``) or ``live``. A run's marker with the
highest ``seq`` counts; lower ones are leftovers, removed when the run settles and by ``gc``.

- A live marker is written *before* the write that makes a run live (its creation, or the
  claim that takes a failed run over): a run is never live without one. Its summary is only
  the start time: a reader fetches a live run's checkpoint for the rest.
- A settled marker is written *after* the write that settles the run, and holds the whole
  summary. If writing it fails, the live marker is still the highest, and readers fetch the
  checkpoint: the index can be behind, never wrong.

Hops add no request: markers change at a run's creation and when it settles (a put, a list
of its own markers and a delete, once per run).
"""

from __future__ import annotations

from ..protocol import Checkpoint, Status

__all__ = ["INDEX_DIR", "LIVE", "SETTLED", "Marker", "newest"]

INDEX_DIR = "_runs"
LIVE = "live"
SETTLED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
_PHASES = frozenset({LIVE} | {s.value for s in SETTLED})
_SEP = "~"


class Marker:
    """One marker: a run's summary as its name holds it (a plain class, not a dataclass:
    it is imported on every cold start, and a dataclass costs half a millisecond to make)."""

    __slots__ = ("hop", "items", "phase", "run_id", "seq", "started_ms", "updated_ms", "where")

    def __init__(
        self,
        run_id: str,
        seq: int,
        phase: str,
        hop: int,
        where: str,
        items: int,
        started_ms: int,
        updated_ms: int,
    ) -> None:
        self.run_id = run_id
        self.seq = seq
        self.phase = phase
        """``live``, or the settled status."""
        self.hop = hop
        self.where = where
        """Where the latest hop ran (``lambda``, ``fargate``, ``local``), ``-`` before any."""
        self.items = items
        self.started_ms = started_ms
        self.updated_ms = updated_ms

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Marker) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"Marker({self.key!r})"

    @property
    def live(self) -> bool:
        return self.phase == LIVE

    @property
    def key(self) -> str:
        fields = (
            self.run_id,
            f"{self.seq:012d}",
            self.phase,
            str(self.hop),
            self.where,
            str(self.items),
            str(self.started_ms),
            str(self.updated_ms),
        )
        return f"{INDEX_DIR}/{_SEP.join(fields)}"

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> Marker:
        """The marker for ``checkpoint`` as written (its ``seq`` included)."""
        settled = checkpoint.status in SETTLED
        last = checkpoint.hops[-1] if checkpoint.hops else None
        return cls(
            run_id=checkpoint.run_id,
            seq=checkpoint.seq,
            phase=checkpoint.status.value if settled else LIVE,
            hop=checkpoint.hop,
            where=last.where if last else "-",
            items=sum(entry.items for entry in checkpoint.hops),
            started_ms=checkpoint.created_ms,
            updated_ms=checkpoint.updated_ms,
        )

    @classmethod
    def parse(cls, key: str) -> Marker | None:
        """The marker named by ``key`` (a key under the store), ``None`` if it is not one."""
        if not key.startswith(INDEX_DIR + "/"):
            return None
        fields = key[len(INDEX_DIR) + 1 :].split(_SEP)
        if len(fields) != 8 or fields[2] not in _PHASES:
            return None
        try:
            seq, hop, items, started, updated = (int(fields[i]) for i in (1, 3, 5, 6, 7))
        except ValueError:
            return None
        return cls(fields[0], seq, fields[2], hop, fields[4], items, started, updated)


def prefix_of(run_id: str) -> str:
    """The key prefix of ``run_id``'s markers (no other run's: ``~`` ends the id)."""
    return f"{INDEX_DIR}/{run_id}{_SEP}"


def newest(markers: list[Marker]) -> dict[str, Marker]:
    """Each run's counting marker: its highest ``seq`` (a settled one wins a tie)."""
    best: dict[str, Marker] = {}
    for marker in markers:
        held = best.get(marker.run_id)
        if held is None or (marker.seq, not marker.live) > (held.seq, not held.live):
            best[marker.run_id] = marker
    return best
