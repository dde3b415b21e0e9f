"""A checkpoint store on a file system: an EFS mount (``/mnt/...``) or a local directory.

Each run is a directory holding ``checkpoint.json``. A write takes a POSIX advisory lock
(``fcntl.lockf``, which NFSv4 and so EFS honour) on the run's ``.lock`` file, and, since such
locks belong to a process and do not exclude its own threads, a thread lock for the same file
first (Lambda Managed Instances run several requests in one process). It then checks the
stored document's ``seq`` against the caller's token, writes a temporary file, fsyncs it,
renames it over the document and fsyncs the directory: a reader sees the old document or
the new one, never a torn one, and a crash leaves at most a stray temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import CheckpointConflict, LongrunConfigError, StoreError
from .base import CHECKPOINT_NAME, CheckpointStore, Token

__all__ = ["FileStore"]

# The base store always writes "format" then "seq" first, so the version is in the first bytes.
_SEQ_PREFIX = re.compile(rb'\A\{"format":\d+,"seq":(\d+)[,}]')
_LOCK_NAME = ".lock"
_TMP_NAME = re.compile(r"\.tmp-\d+-[0-9a-f]{8}$")
_HEAD_BYTES = 64

# lockf excludes other processes only: threads of this process take one of these first. A
# fixed set of stripes bounds the memory; two runs sharing a stripe only wait for each other.
_THREAD_LOCKS = tuple(threading.Lock() for _ in range(64))


def _thread_lock(folder: str) -> threading.Lock:
    return _THREAD_LOCKS[zlib.crc32(folder.encode()) % len(_THREAD_LOCKS)]


class FileStore(CheckpointStore):
    """Checkpoints under ``path`` (created if missing), e.g. ``FileStore("/mnt/efs/longrun")``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        root = Path(path)
        if not root.is_absolute():
            root = root.resolve()
        if root.exists() and not root.is_dir():
            raise LongrunConfigError(
                f"FileStore path {str(root)!r} exists and is not a directory; give a directory "
                "(for EFS, the mount point or a folder below it)."
            )
        self.root = root
        self._root = str(root)

    def describe(self, key: str | None = None) -> str:
        return f"file://{self.root / key if key else self.root}"

    def _path(self, key: str) -> Path:
        return self.root / key

    def object_uri(self, name: str) -> str:
        return self._path(self._object_key(name)).as_uri()

    @contextlib.contextmanager
    def _locked(self, key: str, *, make_dir: bool = True) -> Iterator[str]:
        """Hold the run's locks and give the key's path; without ``make_dir``, a missing
        folder is a conflict (the run was deleted since it was read). (Paths are strings
        here: this is every write's path, and pathlib costs more than the locking.)"""
        path = os.path.join(self._root, key)
        folder = os.path.dirname(path)
        # The thread lock is held until the descriptor is closed: closing any descriptor of
        # a file drops every lockf lock this process holds on it, another thread's included.
        with _thread_lock(folder):
            try:
                if make_dir:
                    os.makedirs(folder, exist_ok=True)
                fd = os.open(os.path.join(folder, _LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError as exc:
                if make_dir:
                    raise StoreError(
                        f"cannot open {self.describe(key)} for writing: {exc}"
                    ) from exc
                raise CheckpointConflict(
                    f"{self.describe(key)} was deleted since it was read"
                ) from None
            except OSError as exc:
                raise StoreError(f"cannot open {self.describe(key)} for writing: {exc}") from exc
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                yield path
            finally:
                os.close(fd)  # closing releases the lock

    @staticmethod
    def _seq_of(data: bytes) -> int | None:
        match = _SEQ_PREFIX.match(data)
        if match:
            return int(match.group(1))
        try:  # written by hand or by another tool: fall back to a full parse
            seq = json.loads(data).get("seq")
        except (ValueError, AttributeError):
            return None
        return seq if isinstance(seq, int) else None

    def _read(self, key: str) -> tuple[bytes, Token] | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self.describe(key)}: {exc}") from exc
        return data, self._seq_of(data)

    def _write_atomically(self, key: str, path: str, data: bytes) -> None:
        tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            except OSError as exc:  # some file systems refuse fsync on a directory
                if exc.errno not in (errno.EINVAL, errno.EBADF):
                    raise
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreError(f"cannot write {self.describe(key)}: {exc}") from exc

    def _create(self, key: str, data: bytes) -> Token:
        with self._locked(key) as path:
            if os.path.exists(path):
                raise CheckpointConflict(f"{self.describe(key)} already exists")
            self._write_atomically(key, path, data)
        return self._seq_of(data)

    def _stored_seq(self, key: str, path: str) -> int | None:
        """The stored document's ``seq``, read from its first bytes where longrun puts it."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise CheckpointConflict(
                f"{self.describe(key)} was deleted since it was read"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot read {self.describe(key)}: {exc}") from exc
        try:
            head = os.pread(fd, _HEAD_BYTES, 0)
            match = _SEQ_PREFIX.match(head)
            if match:
                return int(match.group(1))
            with open(fd, "rb", closefd=False) as handle:  # not longrun's layout: parse all
                return self._seq_of(handle.read())
        except OSError as exc:
            raise StoreError(f"cannot read {self.describe(key)}: {exc}") from exc
        finally:
            os.close(fd)

    def _replace(self, key: str, data: bytes, token: Token) -> Token:
        with self._locked(key, make_dir=False) as path:
            if self._stored_seq(key, path) != token:
                raise CheckpointConflict(f"{self.describe(key)} changed since it was read")
            self._write_atomically(key, path, data)
        return self._seq_of(data)

    def _put(self, key: str, data: bytes) -> Token:
        with self._locked(key) as path:
            self._write_atomically(key, path, data)
        return self._seq_of(data)

    def _delete(self, key: str) -> None:
        with self._locked(key) as path, contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if os.path.basename(path) != CHECKPOINT_NAME:
            return  # a side object: its folder and lock are shared with others
        with contextlib.suppress(OSError):
            folder = os.path.dirname(path)
            os.unlink(os.path.join(folder, _LOCK_NAME))
            os.rmdir(folder)

    def _list(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for child in sorted(self.root.iterdir()):
            if (child / CHECKPOINT_NAME).is_file():
                yield f"{child.name}/{CHECKPOINT_NAME}"

    def purge(self, run_id: str) -> None:
        folder = self._path(self.key(run_id)).parent
        for path in sorted(folder.rglob("*"), reverse=True):  # files, then their folders
            if path.name not in (CHECKPOINT_NAME, _LOCK_NAME):
                with contextlib.suppress(FileNotFoundError):
                    if path.is_dir():
                        path.rmdir()
                    else:
                        path.unlink()
        super().purge(run_id)

    def _list_under(self, prefix: str) -> Iterator[str]:
        """The files whose key starts with ``prefix``, in its folder (not below it)."""
        folder, _, start = prefix.rpartition("/")
        try:
            with os.scandir(self.root / folder) as entries:
                names = [e.name for e in entries if e.name.startswith(start) and e.is_file()]
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot list {self.describe(folder)}: {exc}") from exc
        for name in sorted(names):
            if name != _LOCK_NAME and not _TMP_NAME.search(name):
                yield f"{folder}/{name}" if folder else name
