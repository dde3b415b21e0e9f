"""Checkpoint stores: S3, a file system (EFS), and memory (tests).

``FileStore`` is imported on first use: it brings pathlib, which an S3-only function does
not need at cold start.
"""

from typing import TYPE_CHECKING, Any

from .base import CheckpointStore, Loaded
from .memory import MemoryStore
from .s3 import S3Store

if TYPE_CHECKING:
    from .file import FileStore

__all__ = ["CheckpointStore", "FileStore", "Loaded", "MemoryStore", "S3Store"]


def __getattr__(name: str) -> Any:
    if name == "FileStore":
        from .file import FileStore

        return FileStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
