"""The seams a test harness replaces: clocks, the hand-off transport, save observers.

Production code reads the active :class:`Hooks` once per invocation. The default one uses
the real clocks and real AWS calls; ``longrun.testing`` installs its own (virtual time,
in-process hand-off, fault injection) for the duration of a simulated invocation. A
context variable, not module state, so nested and concurrent simulations stay apart.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import FargateSettings
    from .run import Run


class Hooks:
    """Default behaviour: real time, real AWS. Subclassed by the testing harness."""

    def wall_ms(self) -> int:
        """Milliseconds since the epoch, for leases and timestamps shared between hops."""
        return int(time.time() * 1000)

    def mono(self) -> float:
        """Seconds from a monotonic clock, for measuring durations inside one hop."""
        return time.perf_counter()

    def settings_overrides(self) -> Mapping[str, Any]:
        """Settings that take precedence over arguments and environment (tests only)."""
        return {}

    def invoke_async(self, function: str, payload: bytes, client: Any) -> None:
        """Deliver ``payload`` as an asynchronous invocation of ``function``."""
        from .handoff.lambda_invoke import invoke_async

        invoke_async(function, payload, client=client)

    last_handoff_s: float | None = None
    """The last hand-off duration measured in this process: async self-invocations often
    land on a warm instance of the same function, so the next hop starts with it."""

    def start_task(self, settings: FargateSettings, run_id: str, hop: int) -> str:
        """Start the Fargate task of hop ``hop``; returns its ARN."""
        from .handoff.fargate import start_task

        return start_task(settings, run_id, hop)

    def before_write(self, run_id: str, what: str) -> None:
        """Called before every checkpoint write; a harness may add latency or fail here."""

    def after_write(self, run_id: str, what: str, document: Mapping[str, Any]) -> None:
        """Called after every successful checkpoint write with the document written."""

    def on_run(self, run: Run, heartbeat: Callable[[], bool]) -> None:
        """Called once the hop holds its claim, with the live run handle and the function
        that renews a leased claim (True while the claim is still this hop's)."""


_DEFAULT = Hooks()
_active: contextvars.ContextVar[Hooks] = contextvars.ContextVar("longrun_hooks", default=_DEFAULT)


def active() -> Hooks:
    """The hooks in force for the current invocation."""
    return _active.get()


@contextmanager
def installed(hooks: Hooks) -> Iterator[Hooks]:
    """Install ``hooks`` for the duration of the ``with`` block."""
    token = _active.set(hooks)
    try:
        yield hooks
    finally:
        _active.reset(token)
