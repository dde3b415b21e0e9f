"""What the emulator's parts share: its settings, the deployed functions, the records, one lock."""

from __future__ import annotations

import itertools
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..invoke_endpoint import InvokeEndpoint
from .functions import LocalFunction
from .helpers import now_ms
from .moto_server import MotoServer
from .records import InvocationRecord
from .xray import XRayDaemon


@dataclass(eq=False)
class Core:
    """The state a :class:`~longrun.testing.emulator.LocalLambda` and its parts share.

    The settings are the emulator's public attributes (it forwards them here); every part
    reads them here when it needs them, so that setting one on the emulator
    (``emu.log = lines.append``) takes effect. ``cond`` guards what more than one thread
    touches, here and in the parts; :meth:`changed` tells a settled check to look again.
    """

    workdir: Path
    moto: MotoServer
    rng: random.Random
    on_record: Callable[[InvocationRecord], None] | None
    log: Callable[[str], None]
    echo_logs: bool
    init_timeout_s: float
    fargate_timeout_s: float
    fargate_stop_s: float
    poll_s: float
    functions: dict[str, LocalFunction] = field(default_factory=dict)
    records: list[InvocationRecord] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    invoke_endpoint: InvokeEndpoint | None = None
    """The Invoke API, once the emulator is started."""
    cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    gen: int = 0
    """Bumped by :meth:`changed`."""
    stopping: bool = False
    threads: list[threading.Thread] = field(default_factory=list, repr=False)
    index: itertools.count[int] = field(default_factory=itertools.count, repr=False)
    """Numbers the :class:`InvocationRecord` s."""
    t0_ms: int = field(default_factory=now_ms)
    xray: XRayDaemon | None = None
    """The X-Ray daemon, once a function with active tracing is deployed."""
    pending_wakes: set[str] = field(default_factory=set)
    """Wake-up schedules made by waiting runs and not fired yet (the runs are not settled)."""
    fast_waits: bool = False
    """Skip waits: when nothing runs and only wake-ups are pending, jump the clock to the
    earliest (see :meth:`skip_to`)."""
    offset_ms: int = 0
    """Milliseconds the emulated clock is ahead of the real one (waits skipped so far)."""

    @property
    def clock_file(self) -> Path:
        """Where the offset is kept for the function processes (``LONGRUN_CLOCK_OFFSET_FILE``)."""
        return self.workdir / "clock-offset-ms"

    def now_ms(self) -> int:
        """The emulated wall clock: the real one plus the waits skipped."""
        return now_ms() + self.offset_ms

    def skip_to(self, at_ms: int) -> None:
        """Move the emulated clock forward to ``at_ms`` (never back), for every process."""
        ahead = at_ms - now_ms()
        if ahead <= self.offset_ms:
            return
        self.offset_ms = ahead
        temp = self.clock_file.with_name(self.clock_file.name + ".tmp")
        temp.write_text(str(ahead))
        os.replace(temp, self.clock_file)

    @property
    def endpoint(self) -> InvokeEndpoint:
        if self.invoke_endpoint is None:
            raise RuntimeError("the emulator is not started; use it in a with block")
        return self.invoke_endpoint

    def spawn(self, target: Callable[..., None], name: str, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def changed(self) -> None:
        """Something happened: a settled check must look again (call with the lock held)."""
        self.gen += 1
        self.cond.notify_all()

    def finish(self, record: InvocationRecord) -> None:
        """Record a finished invocation or task, and pass it to ``on_record``."""
        with self.cond:
            self.records.append(record)
            self.changed()
        if self.on_record is not None:
            self.on_record(record)
