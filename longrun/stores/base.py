"""The checkpoint store: shared logic here, small storage primitives in each backend.

A backend stores opaque bytes under a key and supports two conditional writes: *create*
(fails if the key exists) and *replace* (fails unless the stored version is still the
``token`` the caller read). Both failures raise :class:`CheckpointConflict`. Everything else
(key layout, JSON encoding and validation, the ``seq`` counter, run-id checks) lives here.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any

from ..checkpoint import EncodedParts, validate_run_id
from ..errors import CheckpointConflict, RunNotFound, StoreError
from ..protocol import (
    Checkpoint,
    Status,
    decode,
    from_json,
    is_own_write,
    may_cancel,
    new_write_id,
)
from .index import INDEX_DIR, SETTLED, Marker, prefix_of

__all__ = ["CheckpointStore", "Loaded", "Token"]

Token = Any
"""A backend's version marker for one stored object (S3 ETag, FileStore seq, ...)."""

CHECKPOINT_NAME = "checkpoint.json"

log = logging.getLogger("longrun")


class Loaded:
    """A checkpoint as read (or as just written), with the token a later replace presents."""

    __slots__ = ("_document", "checkpoint", "data", "token")

    def __init__(
        self,
        checkpoint: Checkpoint,
        token: Token,
        data: bytes,
        document: dict[str, Any] | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.token = token
        self.data = data
        """The bytes as stored: ``checkpoint`` may share live objects (``run.state``), these
        do not."""
        self._document = document

    @property
    def document(self) -> dict[str, Any]:
        """The same document as a plain dict (for display and assertions; made when first
        asked for: a hop writes once a step and seldom looks)."""
        if self._document is None:
            self._document = self.checkpoint.to_json()
        return self._document

    @property
    def size(self) -> int:
        """Stored size in bytes."""
        return len(self.data)

    def __repr__(self) -> str:
        return (
            f"Loaded({self.checkpoint.run_id!r}, seq={self.checkpoint.seq}, token={self.token!r})"
        )


class CheckpointStore(ABC):
    """Where checkpoint documents live. Subclass and implement the ``_`` primitives."""

    # -- public API -------------------------------------------------------------------------

    def key(self, run_id: str) -> str:
        """The backend key of ``run_id``'s checkpoint document."""
        return f"{validate_run_id(run_id)}/{CHECKPOINT_NAME}"

    def load(self, run_id: str) -> Loaded | None:
        """The run's checkpoint, or ``None`` if there is none.

        The document is validated (``CheckpointCorrupt`` names the field at fault), and its
        run id must be ``run_id``: a checkpoint copied from another run's key is refused.
        """
        key = self.key(run_id)
        found = self._read(key)
        if found is None:
            return None
        data, token = found
        checkpoint = decode(data, where=self.describe(key), run_id=run_id)
        return Loaded(checkpoint, token, data)

    def create(self, checkpoint: Checkpoint | Mapping[str, Any]) -> Loaded:
        """Store a new run's first document; CheckpointConflict if the run already exists.

        The run's index marker (:mod:`longrun.stores.index`) is written first: a live run
        always has one."""
        return self._indexed(_typed(checkpoint), 1, None, None)

    def replace(
        self,
        checkpoint: Checkpoint | Mapping[str, Any],
        token: Token,
        *,
        previous: Checkpoint | None = None,
        parts: EncodedParts | None = None,
        prepared: bool = False,
    ) -> Loaded:
        """Replace the document read with ``token``; CheckpointConflict if it changed since.

        ``seq`` is bumped and a new ``write_id`` set in the document written. ``previous``
        is the document read with ``token``: when it had settled (a failed run taken over),
        the run's index marker turns live again before the write. ``parts``: the writer's
        encoded step records, reused where unchanged (the bytes are the same without).
        ``prepared``: ``checkpoint`` was made for this one write and already carries the
        next ``seq`` (``previous.seq + 1``) and a fresh ``write_id`` (a hop's writes: one
        copy of the document less per write).
        """
        typed = _typed(checkpoint)
        if prepared:
            if previous is None or typed.seq != previous.seq + 1:
                raise ValueError("a prepared checkpoint carries the seq after previous's")
            return self._indexed(typed, typed.seq, token, previous, parts, prepared=True)
        return self._indexed(typed, typed.seq + 1, token, previous, parts)

    def _indexed(
        self,
        checkpoint: Checkpoint,
        seq: int,
        token: Token | None,
        previous: Checkpoint | None,
        parts: EncodedParts | None = None,
        *,
        prepared: bool = False,
    ) -> Loaded:
        """:meth:`_write` of ``checkpoint`` as number ``seq`` with a fresh write id, with
        the index marker before a write that makes the run live (an error there stops the
        write) and after one that settles it (an error there is logged: the live marker
        stays, and readers fetch the checkpoint)."""
        if not prepared:
            checkpoint = checkpoint.replace(seq=seq, write_id=new_write_id())
        settles = checkpoint.status in SETTLED
        revives = token is None or (previous is not None and previous.status in SETTLED)
        if not settles and revives:
            self._put(Marker.of(checkpoint).key, b"")
        loaded = self._write(checkpoint, token, parts)
        if settles:
            self._mark_settled(loaded.checkpoint)
        return loaded

    def _mark_settled(self, checkpoint: Checkpoint) -> None:
        marker = Marker.of(checkpoint)
        try:
            self._put(marker.key, b"")
            self._drop_markers(checkpoint.run_id, below=marker.seq)
        except StoreError as exc:
            log.warning(
                "run %s: its index marker is behind (%s); listings read its checkpoint",
                checkpoint.run_id,
                exc,
            )

    def _drop_markers(self, run_id: str, *, below: int | None = None) -> None:
        """Delete ``run_id``'s markers (those with a ``seq`` under ``below``)."""
        for key in list(self._list_under(prefix_of(run_id))):
            marker = Marker.parse(key)
            if marker is None or marker.run_id != run_id:
                continue
            if below is None or marker.seq < below:
                self._delete(key)

    def markers(self) -> list[Marker]:
        """Every run's index markers (leftovers included: see :func:`~.index.newest`)."""
        found = (Marker.parse(key) for key in self._list_under(INDEX_DIR + "/"))
        return [marker for marker in found if marker is not None]

    def _write(
        self, checkpoint: Checkpoint, token: Token | None, parts: EncodedParts | None = None
    ) -> Loaded:
        """One conditional write (create when ``token`` is None) of ``checkpoint``, which
        carries a fresh write id (:meth:`_indexed` gives it one).

        When the write fails (its condition, or the store after its own retries), the
        document is read back: if it is this very write (the store committed it and the
        reply was lost, so a resend met its own write), the write succeeded.
        """
        write_id = str(checkpoint.write_id)
        data = checkpoint.encode(parts)
        key = self.key(checkpoint.run_id)
        try:
            if token is None:
                new_token = self._create(key, data)
            else:
                new_token = self._replace(key, data, token)
        except StoreError:
            mine = self._own_write(checkpoint.run_id, write_id)
            if mine is None:
                raise
            return mine
        return Loaded(checkpoint, new_token, data)

    def _own_write(self, run_id: str, write_id: str) -> Loaded | None:
        """The stored document if it carries ``write_id``, else ``None`` (errors included)."""
        with contextlib.suppress(StoreError):
            current = self.load(run_id)
            if current is not None and is_own_write(current.checkpoint, write_id):
                return current
        return None

    def status(self, run_id: str) -> dict[str, Any]:
        """The run's checkpoint document (RunNotFound if there is none)."""
        loaded = self.load(run_id)
        if loaded is None:
            raise RunNotFound(f"{self.describe(self.key(run_id))} does not exist.")
        return loaded.document

    def cancel(self, run_id: str, *, attempts: int = 10) -> dict[str, Any]:
        """Mark the run ``cancelled``: its running hop stops at its next checkpoint write,
        and no further hop runs. A completed or already cancelled run is left as it is. The
        children of its ``run.map`` calls are cancelled too; a cancelled child counts as
        failed in its parent's join."""
        for _ in range(attempts):
            loaded = self.load(run_id)
            if loaded is None:
                raise RunNotFound(
                    f"cannot cancel: {self.describe(self.key(run_id))} does not exist."
                )
            if not may_cancel(loaded.checkpoint):
                return loaded.document
            cancelled = loaded.checkpoint.replace(status=Status.CANCELLED, claim=None, next=None)
            try:
                document = self.replace(
                    cancelled, loaded.token, previous=loaded.checkpoint
                ).document
            except CheckpointConflict:
                continue
            if cancelled.parent is not None or any(
                r.get("kind") == "map" for r in cancelled.steps.values()
            ):
                from ..join import cancel_children, join_child

                join_child(self, cancelled)  # a child counts as failed in its parent's join
                cancel_children(self, cancelled)  # a parent stops its children
            return document
        raise CheckpointConflict(
            f"could not cancel {self.describe(self.key(run_id))}: it kept changing under "
            f"{attempts} attempts; try again."
        )

    def delete(self, run_id: str) -> None:
        """Remove the run's checkpoint and its index markers (no error if already gone)."""
        self._delete(self.key(run_id))
        self._drop_markers(run_id)

    def purge(self, run_id: str) -> None:
        """Remove everything of the run: the objects in its folder, then its checkpoint,
        then its index markers (``longrun gc``; the caller checks that it has settled)."""
        checkpoint = self.key(run_id)
        for key in list(self._list_under(f"{run_id}/")):
            if key != checkpoint:
                self._delete(key)
        self.delete(run_id)

    def list_runs(self) -> Iterator[str]:
        """The ids of the runs this store holds."""
        suffix = "/" + CHECKPOINT_NAME
        for key in self._list():
            if key.endswith(suffix):
                yield key[: -len(suffix)]

    # -- side objects: small files beside the checkpoints (the safety net's stored events) ----

    def _object_key(self, name: str) -> str:
        parts = name.split("/")
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"object name {name!r} must be a relative path without '..'")
        return name

    def put_object(self, name: str, data: bytes) -> None:
        """Store ``data`` as ``name`` (unconditionally; readers see old or new, never a part)."""
        self._put(self._object_key(name), data)

    def create_object(self, name: str, data: bytes) -> bool:
        """Store ``data`` as ``name`` unless it exists; ``False`` if it did."""
        try:
            self._create(self._object_key(name), data)
        except CheckpointConflict:
            return False
        return True

    def read_object(self, name: str) -> bytes | None:
        """The bytes stored as ``name``, or ``None``."""
        found = self._read(self._object_key(name))
        return None if found is None else found[0]

    def read_object_token(self, name: str) -> tuple[bytes, Token] | None:
        """The bytes stored as ``name`` and their version token (for ``replace_object``)."""
        return self._read(self._object_key(name))

    def replace_object(self, name: str, data: bytes, token: Token) -> bool:
        """Store ``data`` as ``name`` only if it is still the version ``token`` was read
        with; ``False`` if it changed (or was deleted). A document replaced this way starts
        with ``{"format":1,"seq":N`` as checkpoints do (FileStore's version is that ``seq``)."""
        try:
            self._replace(self._object_key(name), data, token)
        except CheckpointConflict:
            return False
        return True

    def delete_object(self, name: str) -> None:
        """Remove ``name`` if present."""
        self._delete(self._object_key(name))

    def object_uri(self, name: str) -> str:
        """Where ``name`` lives, as a URI another process can read (``s3://``, ``file://``)."""
        return self.describe(self._object_key(name))

    def describe(self, key: str | None = None) -> str:
        """A human-readable location for messages and logs."""
        return f"{type(self).__name__}:{key or ''}"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    # -- backend primitives ------------------------------------------------------------------

    @abstractmethod
    def _read(self, key: str) -> tuple[bytes, Token] | None:
        """The stored bytes and their version token, or ``None`` if the key does not exist."""

    @abstractmethod
    def _create(self, key: str, data: bytes) -> Token:
        """Store ``data`` only if ``key`` does not exist (else CheckpointConflict)."""

    @abstractmethod
    def _replace(self, key: str, data: bytes, token: Token) -> Token:
        """Store ``data`` only if the stored version is ``token`` (else CheckpointConflict)."""

    @abstractmethod
    def _put(self, key: str, data: bytes) -> Token:
        """Store ``data`` under ``key`` whatever is there."""

    @abstractmethod
    def _delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    @abstractmethod
    def _list(self) -> Iterator[str]:
        """Every key under this store."""

    def _list_under(self, prefix: str) -> Iterator[str]:
        """Every key that starts with ``prefix`` (backends list only those)."""
        return (key for key in self._list() if key.startswith(prefix))


def _typed(checkpoint: Checkpoint | Mapping[str, Any]) -> Checkpoint:
    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    document = dict(checkpoint)
    validate_run_id(document.get("run_id"))
    document.setdefault("seq", 0)
    return from_json(document)
