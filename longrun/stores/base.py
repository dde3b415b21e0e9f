"""The checkpoint store: shared logic here, small storage primitives in each backend.

A backend stores opaque bytes under a key and supports two conditional writes: *create*
(fails if the key exists) and *replace* (fails unless the stored version is still the
``token`` the caller read). Both failures raise :class:`CheckpointConflict`. Everything else
(key layout, JSON encoding and validation, the ``seq`` counter, run-id checks) lives here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..checkpoint import decode_document, encode_document, validate_run_id
from ..errors import CheckpointConflict, RunNotFound

__all__ = ["CheckpointStore", "Loaded", "Token"]

Token = Any
"""A backend's version marker for one stored object (S3 ETag, FileStore seq, ...)."""

CHECKPOINT_NAME = "checkpoint.json"


@dataclass(frozen=True)
class Loaded:
    """A checkpoint document as read, with the token that a later replace must present."""

    document: dict[str, Any]
    token: Token
    data: bytes
    """The bytes as stored: ``document`` may share live objects (``run.state``), these do not."""

    @property
    def size(self) -> int:
        """Stored size in bytes."""
        return len(self.data)


class CheckpointStore(ABC):
    """Where checkpoint documents live. Subclass and implement the ``_`` primitives."""

    # -- public API -------------------------------------------------------------------------

    def key(self, run_id: str) -> str:
        """The backend key of ``run_id``'s checkpoint document."""
        return f"{validate_run_id(run_id)}/{CHECKPOINT_NAME}"

    def load(self, run_id: str) -> Loaded | None:
        """The run's checkpoint, or ``None`` if there is none."""
        key = self.key(run_id)
        found = self._read(key)
        if found is None:
            return None
        data, token = found
        document = decode_document(data, where=self.describe(key))
        return Loaded(document=document, token=token, data=data)

    def create(self, document: dict[str, Any]) -> Loaded:
        """Store a new run's first document; CheckpointConflict if the run already exists."""
        document["seq"] = 1
        data = encode_document(document)
        token = self._create(self.key(document["run_id"]), data)
        return Loaded(document=document, token=token, data=data)

    def replace(self, document: dict[str, Any], token: Token) -> Loaded:
        """Replace the document read with ``token``; CheckpointConflict if it changed since.

        ``document["seq"]`` is bumped here; on failure the caller's document is left as it was.
        """
        previous = document["seq"]
        document["seq"] = previous + 1
        try:
            data = encode_document(document)
            new_token = self._replace(self.key(document["run_id"]), data, token)
        except BaseException:
            document["seq"] = previous
            raise
        return Loaded(document=document, token=new_token, data=data)

    def status(self, run_id: str) -> dict[str, Any]:
        """The run's checkpoint document (RunNotFound if there is none)."""
        loaded = self.load(run_id)
        if loaded is None:
            raise RunNotFound(f"{self.describe(self.key(run_id))} does not exist.")
        return loaded.document

    def cancel(self, run_id: str, *, attempts: int = 10) -> dict[str, Any]:
        """Mark the run ``cancelled``: its running hop stops at its next checkpoint write,
        and no further hop runs. A completed or already cancelled run is left as it is."""
        for _ in range(attempts):
            loaded = self.load(run_id)
            if loaded is None:
                raise RunNotFound(
                    f"cannot cancel: {self.describe(self.key(run_id))} does not exist."
                )
            document = loaded.document
            if document["status"] in ("completed", "cancelled"):
                return document
            document.update(status="cancelled", claim=None, next=None)
            try:
                return self.replace(document, loaded.token).document
            except CheckpointConflict:
                continue
        raise CheckpointConflict(
            f"could not cancel {self.describe(self.key(run_id))}: it kept changing under "
            f"{attempts} attempts; try again."
        )

    def delete(self, run_id: str) -> None:
        """Remove the run's checkpoint (no error if it is already gone)."""
        self._delete(self.key(run_id))

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
