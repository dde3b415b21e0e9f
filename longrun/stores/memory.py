"""An in-memory store for unit tests and the simulator: same contract, bytes and all."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ..errors import CheckpointConflict
from .base import CheckpointStore, Token

__all__ = ["MemoryStore"]


class MemoryStore(CheckpointStore):
    """Keeps checkpoint bytes in a dict. Documents still go through JSON, as in S3 or EFS."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, int]] = {}
        self._keys: list[str] = []
        """The keys, sorted: a listing under a prefix is a range, as in S3."""
        self._lock = threading.Lock()
        self._versions = 0

    def raw(self, run_id: str) -> bytes | None:
        """The stored bytes of a run's checkpoint (for assertions)."""
        found = self._objects.get(self.key(run_id))
        return None if found is None else found[0]

    def _next(self) -> int:
        self._versions += 1
        return self._versions

    def _read(self, key: str) -> tuple[bytes, Token] | None:
        with self._lock:
            return self._objects.get(key)

    def _create(self, key: str, data: bytes) -> Token:
        with self._lock:
            if key in self._objects:
                raise CheckpointConflict(f"{self.describe(key)} already exists")
            version = self._next()
            self._objects[key] = (data, version)
            _bisect().insort(self._keys, key)
            return version

    def _replace(self, key: str, data: bytes, token: Token) -> Token:
        with self._lock:
            current = self._objects.get(key)
            if current is None or current[1] != token:
                raise CheckpointConflict(f"{self.describe(key)} changed since it was read")
            version = self._next()
            self._objects[key] = (data, version)
            return version

    def _put(self, key: str, data: bytes) -> Token:
        with self._lock:
            version = self._next()
            if key not in self._objects:
                _bisect().insort(self._keys, key)
            self._objects[key] = (data, version)
            return version

    def _delete(self, key: str) -> None:
        with self._lock:
            if self._objects.pop(key, None) is not None:
                del self._keys[_bisect().bisect_left(self._keys, key)]

    def _list(self) -> Iterator[str]:
        with self._lock:
            keys = list(self._keys)
        return iter(keys)

    def _list_under(self, prefix: str) -> Iterator[str]:
        with self._lock:
            start = _bisect().bisect_left(self._keys, prefix)
            end = start
            while end < len(self._keys) and self._keys[end].startswith(prefix):
                end += 1
            keys = self._keys[start:end]
        return iter(keys)


def _bisect() -> Any:
    """The ``bisect`` module, imported on first use (not at ``import longrun``: a cold start
    in Lambda never touches the in-memory store)."""
    import bisect

    return bisect
