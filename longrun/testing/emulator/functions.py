"""Functions deployed on the emulator, and the deliveries queued for them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...stores.base import CheckpointStore
from ..delivery import AsyncDelivery
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
    tracing: bool = False
    """Active tracing: sampled trace headers, and the emulator's X-Ray daemon."""

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.name}"

    @property
    def delivery(self) -> AsyncDelivery:
        """Lambda's async delivery of this function's events (shared with the simulator)."""
        return AsyncDelivery(retries=self.retries, retry_delays_s=self.retry_delays_s)


def search_path(function: LocalFunction) -> list[str]:
    """The function's ``PYTHONPATH``: its code directory, its extra paths, longrun's root."""
    return [str(function.code_dir), *function.pythonpath, str(LONGRUN_ROOT)]
