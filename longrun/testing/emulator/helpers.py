"""The emulator's constants and small helpers: handler specs, payloads, processes, time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...checkpoint import parse_envelope
from ...errors import LongrunError

SAFETY_NET_HANDLER = "longrun.safety_net.handler"
REGION = "us-east-1"
ACCOUNT = "123456789012"
CONTAINER = "worker"
DEFAULT_RETRY_DELAYS_S = (0.5, 1.0)
INIT_TIMEOUT_S = 10.0
"""Lambda gives a function's init (imports) 10 seconds."""

LONGRUN_ROOT = Path(__file__).resolve().parents[3]
"""The directory holding the ``longrun`` package (put on every function's ``PYTHONPATH``)."""
FARGATE_STOP_S = "2"


class FunctionError(LongrunError):
    """A synchronous invocation answered with a function error (``X-Amz-Function-Error``)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = dict(document)
        self.error_type = str(document.get("errorType") or "")
        super().__init__(f"{self.error_type}: {document.get('errorMessage')}")


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_handler(spec: str, cwd: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """``path/app.py:handler`` → (``path``, ``app.handler``); ``pkg.mod:handler`` and
    ``pkg.mod.handler`` → (``cwd``, ``pkg.mod.handler``). The directory is put on the
    function's ``PYTHONPATH`` and is its working directory."""
    base = Path(cwd or os.getcwd()).resolve()
    if ":" in spec:
        left, _, function = spec.rpartition(":")
        if left.endswith(".py") or "/" in left or os.sep in left:
            path = (base / left).resolve()
            if not path.is_file():
                raise LongrunError(f"handler {spec!r}: no file {path}")
            if not function.isidentifier():
                raise LongrunError(f"handler {spec!r}: {function!r} is not a function name")
            return path.parent, f"{path.stem}.{function}"
        module = left
    else:
        module, _, function = spec.rpartition(".")
    if not module or not function.isidentifier():
        raise LongrunError(
            f"handler {spec!r} is not FILE.py:function, package.module:function or "
            "package.module.function"
        )
    return base, f"{module}.{function}"


def envelope_of(payload: bytes) -> tuple[str, int] | None:
    """The (run id, hop) of a continuation envelope, or of a ``run.map`` child's start event
    (its derived run id, hop 0); ``None`` for any other payload."""
    try:
        event = json.loads(payload) if payload else None
        envelope = parse_envelope(event)
        if envelope is None and isinstance(event, dict) and "longrun_child" in event:
            from ...join import child_run_id, parse_child_event

            child = parse_child_event(event)
            return None if child is None else (child_run_id(*child), 0)
    except (ValueError, LongrunError):
        return None
    return None if envelope is None else (envelope.run_id, envelope.hop)


def safety_net_run(payload: bytes) -> str | None:
    """The run a destination record is about (its envelope's, else its request id)."""
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(record, dict) or "requestContext" not in record:
        return None
    inner = envelope_of(json.dumps(record.get("requestPayload")).encode())
    if inner is not None:
        return inner[0]
    request_id = (record.get("requestContext") or {}).get("requestId")
    return str(request_id) if request_id else None


def int_or_none(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def killpg(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
