"""longrun: let an AWS Lambda handler run for as long as its job needs.

>>> from longrun import longrun, current_run, S3Store
>>> @longrun(checkpoint=S3Store("my-bucket", prefix="longrun/"))
... def handler(event, context):
...     run = current_run()
...     for key in run.iterate(event["keys"]):
...         run.state["done"] = run.state.get("done", 0) + 1
...     return {"done": run.state.get("done", 0)}

``import longrun`` does not import boto3: clients are created on first use.
"""

from typing import TYPE_CHECKING, Any

from .config import Fargate
from .decorator import longrun
from .errors import (
    CheckpointConflict,
    CheckpointCorrupt,
    CheckpointFormatError,
    ClaimBusy,
    CursorKeyMissing,
    EnvelopeError,
    EscalationFailed,
    HandoffFailed,
    HopBudgetExhausted,
    InvalidRunId,
    LongrunConfigError,
    LongrunError,
    NoProgressError,
    NotificationFailed,
    NotInRunError,
    RecursionStopped,
    RunNotFound,
    RunTimeExceeded,
    StateNotSerializable,
    StepInterrupted,
    StoreError,
)
from .run import Run, current_run
from .stores import CheckpointStore, MemoryStore, S3Store

if TYPE_CHECKING:
    from .callbacks import (
        CallbackFailed,
        CallbackRefused,
        CallbackTimeout,
        fail_callback,
        send_callback,
    )
    from .fanout import MapFailed, MapResults
    from .status import RunInfo, RunSummary, find_runs, get_run
    from .steps import Retry
    from .stores.file import FileStore

_STATUS_API = frozenset({"RunInfo", "RunSummary", "find_runs", "get_run"})
_CALLBACKS = frozenset(
    {"CallbackFailed", "CallbackRefused", "CallbackTimeout", "fail_callback", "send_callback"}
)


def __getattr__(name: str) -> Any:
    # __version__ on demand: importlib.metadata costs ~30 ms of every cold start.
    if name == "FileStore":  # on first use: pathlib is not needed by an S3-only function
        from .stores.file import FileStore

        return FileStore
    if name == "Retry":  # on first use: only handlers with retried steps need it
        from .steps import Retry

        return Retry
    if name in ("MapFailed", "MapResults"):  # on first use: only runs that fan out
        from . import fanout

        return getattr(fanout, name)
    if name in _CALLBACKS:  # on first use: only runs with callbacks need them
        from . import callbacks

        return getattr(callbacks, name)
    if name in _STATUS_API:  # on first use: a handler that runs a job never reads its status
        from . import status

        return getattr(status, name)
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("longrun")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            return "0.0.0"
    raise AttributeError(f"module 'longrun' has no attribute {name!r}")


__all__ = [
    "CallbackFailed",
    "CallbackRefused",
    "CallbackTimeout",
    "CheckpointConflict",
    "CheckpointCorrupt",
    "CheckpointFormatError",
    "CheckpointStore",
    "ClaimBusy",
    "CursorKeyMissing",
    "EnvelopeError",
    "EscalationFailed",
    "Fargate",
    "FileStore",
    "HandoffFailed",
    "HopBudgetExhausted",
    "InvalidRunId",
    "LongrunConfigError",
    "LongrunError",
    "MapFailed",
    "MapResults",
    "MemoryStore",
    "NoProgressError",
    "NotInRunError",
    "NotificationFailed",
    "RecursionStopped",
    "Retry",
    "Run",
    "RunInfo",
    "RunSummary",
    "RunNotFound",
    "RunTimeExceeded",
    "S3Store",
    "StateNotSerializable",
    "StepInterrupted",
    "StoreError",
    "__version__",
    "current_run",
    "fail_callback",
    "find_runs",
    "get_run",
    "longrun",
    "send_callback",
]
