"""The seams between longrun and the world: a clock, a transport and an observer.

Production code reads the active :class:`Ports` once per invocation. The defaults use the
real clocks and real AWS calls. A test harness replaces any of them for the duration of a
``with`` block (a context variable, not module state, so nested and concurrent invocations
stay apart)::

    from longrun import ports

    class Recorder(ports.Observer):
        def after_write(self, run_id, what, document):
            seen.append((what, document["status"]))

    with ports.installed(observer=Recorder()):
        handler(event, context)

The simulator (``longrun.testing.LambdaSim``) installs a virtual clock, an in-process
transport and an observer that injects faults; the Fargate runner installs an observer that
keeps the task's lease alive. ``docs/testing.md`` describes the override.
"""

from __future__ import annotations

import contextvars
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .record import Record, field

if TYPE_CHECKING:  # annotations only: ports sit below the modules that use them
    from .config import FargateSettings
    from .run import Run
    from .stores.base import Loaded

__all__ = [
    "ENV_CLOCK_OFFSET_FILE",
    "Clock",
    "Observer",
    "OffsetClock",
    "Ports",
    "Transport",
    "active",
    "installed",
    "mono_function",
]

ENV_CLOCK_OFFSET_FILE = "LONGRUN_CLOCK_OFFSET_FILE"
"""A file holding milliseconds to add to the wall clock: set by the local emulator with
``fast_waits`` (its skipped waits), never in AWS."""


class Clock:
    """Time, as longrun reads it (the deadline itself always comes from the context)."""

    def wall_ms(self) -> int:
        """Milliseconds since the epoch, for leases and timestamps shared between hops."""
        return int(time.time() * 1000)

    def mono(self) -> float:
        """Seconds from a monotonic clock, for measuring durations inside one hop."""
        return time.perf_counter()


class OffsetClock(Clock):
    """The wall clock plus the milliseconds a file holds (re-read when the file changes):
    the local emulator's clock when it skips waits (``LocalLambda(fast_waits=True)``), shared
    by its function processes, its CLI calls and itself. Durations (``mono``) are real."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._offset_ms = 0

    def offset_ms(self) -> int:
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return 0
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            try:
                with open(self._path, "rb") as handle:
                    self._offset_ms = int(handle.read().strip() or b"0")
            except (OSError, ValueError):
                return self._offset_ms  # being replaced: the last value read, until next time
            self._stamp = stamp
        return self._offset_ms

    def wall_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms()


def _default_clock() -> Clock:
    path = os.environ.get(ENV_CLOCK_OFFSET_FILE)
    return OffsetClock(path) if path else Clock()


def mono_function(clock: Clock) -> Callable[[], float]:
    """``clock.mono`` as a plain function: the real clock's C function itself when ``mono``
    is not overridden (one Python call less on every item of ``run.iterate``)."""
    if getattr(type(clock), "mono", None) is Clock.mono:
        return time.perf_counter
    return clock.mono


INVOKE_THREADS = 16
"""How many invocations :meth:`Transport.invoke_many` sends at once."""


class Transport:
    """How a run reaches its next hop: an async Lambda invoke or a Fargate task."""

    def invoke_async(
        self, function: str, payload: bytes, client: Any, *, tenant_id: str | None = None
    ) -> None:
        """Deliver ``payload`` as an asynchronous invocation of ``function`` (for a function
        in per-tenant isolation mode, as ``tenant_id``)."""
        from .handoff.lambda_invoke import invoke_async

        invoke_async(function, payload, client=client, tenant_id=tenant_id)

    invoke_threads = INVOKE_THREADS
    """How many invocations :meth:`invoke_many` sends at once (1: one after the other, in
    order, as a test harness wants)."""

    def invoke_many(
        self, function: str, payloads: list[bytes], *, tenant_id: str | None = None
    ) -> None:
        """:meth:`invoke_async` of each payload, up to ``invoke_threads`` at once (a fan-out
        starting its children). Every payload is tried; the first error is raised after."""
        if self.invoke_threads < 2 or len(payloads) < 2:
            for payload in payloads:
                self.invoke_async(function, payload, None, tenant_id=tenant_id)
            return
        from concurrent.futures import ThreadPoolExecutor  # (not at import: cold starts)

        def send(payload: bytes) -> BaseException | None:
            try:
                self.invoke_async(function, payload, None, tenant_id=tenant_id)
            except Exception as exc:
                return exc
            return None

        with ThreadPoolExecutor(max_workers=min(self.invoke_threads, len(payloads))) as pool:
            errors = [error for error in pool.map(send, payloads) if error is not None]
        if errors:
            raise errors[0]

    def start_task(
        self, settings: FargateSettings, run_id: str, hop: int, *, tenant_id: str | None = None
    ) -> str:
        """Start the Fargate task of hop ``hop``; returns its ARN."""
        from .config import ENV_TENANT_ID
        from .handoff.fargate import start_task

        extra = {ENV_TENANT_ID: tenant_id} if tenant_id else None
        return start_task(settings, run_id, hop, extra_env=extra)

    def schedule_wake(
        self,
        function: str,
        payload: bytes,
        at_ms: int,
        *,
        name: str,
        tenant_id: str | None = None,
    ) -> str:
        """Invoke ``function`` with ``payload`` at ``at_ms`` (epoch ms), once, with nothing
        running in between (a one-time EventBridge Scheduler schedule named ``name``, which
        deletes itself after it fires); returns the schedule's name."""
        from .handoff.scheduler import schedule_wake

        return schedule_wake(function, payload, at_ms, name=name)

    def cancel_wake(self, name: str) -> None:
        """Delete the pending wake-up ``name`` (no error if it is gone)."""
        from .handoff.scheduler import delete_schedule

        delete_schedule(name)


class Observer:
    """Told about every checkpoint write and every claimed hop; may add latency or fail."""

    def before_write(self, run_id: str, what: str) -> None:
        """Called before every checkpoint write (``what``: claim, checkpoint, continue, ...)."""

    def after_write(self, run_id: str, what: str, document: Mapping[str, Any]) -> None:
        """Called after every successful checkpoint write with the document written."""

    def written(self, run_id: str, what: str, loaded: Loaded) -> None:
        """Called after every successful checkpoint write with what was stored: the typed
        document, its bytes as stored (``loaded.data``) and the document as a dict. By
        default it calls :meth:`after_write` with the dict; an observer that keeps what was
        written overrides it to read the bytes (a snapshot that shares nothing with the
        live ``run.state``)."""
        if type(self).after_write is not Observer.after_write:  # (the dict is made on demand)
            self.after_write(run_id, what, loaded.document)

    def on_run(self, run: Run, heartbeat: Callable[[], bool]) -> None:
        """Called once the hop holds its claim, with the live run handle and the function
        that renews a leased claim (True while the claim is still this hop's)."""


class Ports(Record):
    """The ports in force for an invocation."""

    clock: Clock = field(default_factory=_default_clock)
    transport: Transport = field(default_factory=Transport)
    observer: Observer = field(default_factory=Observer)
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Settings that take precedence over arguments and environment (tests only)."""


_DEFAULT = Ports()
_active: contextvars.ContextVar[Ports] = contextvars.ContextVar(
    "longrun_ports",
    default=_DEFAULT,
)


def active() -> Ports:
    """The ports in force for the current invocation."""
    return _active.get()


@contextmanager
def installed(
    ports: Ports | None = None,
    *,
    clock: Clock | None = None,
    transport: Transport | None = None,
    observer: Observer | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Iterator[Ports]:
    """Replace some ports (the others stay as they are) for the ``with`` block."""
    base = ports or _active.get()
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("clock", clock),
            ("transport", transport),
            ("observer", observer),
            ("settings", settings),
        )
        if value is not None
    }
    token = _active.set(base.replace(**changes))
    try:
        yield _active.get()
    finally:
        _active.reset(token)
