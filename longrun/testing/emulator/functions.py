"""Functions deployed on the emulator, and the deliveries queued for them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...stores.base import CheckpointStore
from .helpers import ACCOUNT, LONGRUN_ROOT, REGION
from .records import InvocationRecord

KillAfter = Callable[[InvocationRecord], float | None]
"""Called when an invocation starts its invoke phase; seconds after which to SIGKILL its
process group (an out-of-memory kill, a host failure), or ``None``."""


@dataclass
class LocalFunction:
    """A function deployed on the emulator (see :meth:`LocalLambda.deploy`)."""

    name: str
    handler: str
    """``module.function`` as ``awslambdaric`` takes it."""
    code_dir: Path
    timeout_s: float
    memory_mb: int
    env: dict[str, str]
    """The function's own variables (set last, over the emulator's)."""
    retries: int
    retry_delays_s: tuple[float, ...]
    duplicate_rate: float
    duplicate_delay_s: float
    on_failure: str | None
    store_uri: str | None
    store: CheckpointStore | None
    max_hops: int | None
    escalate: bool
    task_definition: str | None = None
    kill_after: KillAfter | None = None
    pythonpath: tuple[str, ...] = ()

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.name}"

    def retry_delay(self, attempt: int) -> float:
        """Delay before attempt ``attempt`` (2 = the first retry)."""
        if not self.retry_delays_s:
            return 0.0
        return self.retry_delays_s[min(attempt - 2, len(self.retry_delays_s) - 1)]


def search_path(function: LocalFunction) -> list[str]:
    """The function's ``PYTHONPATH``: its code directory, its extra paths, longrun's root."""
    return [str(function.code_dir), *function.pythonpath, str(LONGRUN_ROOT)]


@dataclass(order=True)
class Delivery:
    """An event on its way to a function: queued by the Invoke API, run at ``not_before``."""

    not_before: float
    seq: int
    function: str = field(compare=False)
    payload: bytes = field(compare=False, repr=False)
    request_id: str = field(compare=False)
    attempt: int = field(compare=False, default=1)
    kind: str = field(compare=False, default="start")
    first_kind: str = field(compare=False, default="start")
