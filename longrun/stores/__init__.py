"""Checkpoint stores: S3, a file system (EFS), and memory (tests)."""

from .base import CheckpointStore, Loaded
from .file import FileStore
from .memory import MemoryStore
from .s3 import S3Store

__all__ = ["CheckpointStore", "FileStore", "Loaded", "MemoryStore", "S3Store"]
