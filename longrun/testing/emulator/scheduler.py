"""EventBridge Scheduler for the emulator: the one-time wake-ups functions create (in the
emulator's moto server) fire for real, at their time.

A function that ends a hop ``waiting`` answers with the name of the schedule it made
(``wake``); the emulator notes it, and the run is not settled while a wake-up is pending. A
thread looks at the pending schedules every 0.1 s and, once one is due, invokes its target
function with its input through the Invoke API (asynchronously, as Scheduler does) and
deletes it, as ``ActionAfterCompletion: DELETE`` does.

By default time is real: a test waits as long as the wait it makes. With
``LocalLambda(fast_waits=True)``, when nothing runs (no invocation, no queued delivery or
retry, no task) and only wake-ups are pending, the emulated clock jumps to the earliest one,
which then fires at once: a day's sleep takes no real time. The jump is an offset every
process of the emulator reads (``LONGRUN_CLOCK_OFFSET_FILE``, see
:class:`longrun.ports.OffsetClock`); it happens only when nothing holds a live claim that the
jump could make look expired.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .core import Core

if TYPE_CHECKING:
    from .invoker import Invoker

__all__ = ["ROLE_ARN", "SchedulerFirer"]

ROLE_ARN = "arn:aws:iam::123456789012:role/longrun-local-scheduler"
"""The scheduler role the emulator gives its functions (``LONGRUN_SCHEDULER_ROLE_ARN``)."""


class SchedulerFirer:
    """Fires the pending wake-ups of the emulator's functions."""

    def __init__(self, core: Core, invoker: Invoker, idle: Callable[[], bool]) -> None:
        self._core = core
        self._invoker = invoker
        self._idle = idle
        """Nothing runs and nothing is queued (called with the lock held)."""

    def note(self, response: Any) -> None:
        """An invocation answered: note the wake-up it made, if any (lock held)."""
        if not (isinstance(response, dict) and isinstance(response.get("longrun"), dict)):
            return
        body = response["longrun"]
        if body.get("status") == "waiting" and isinstance(body.get("wake"), str):
            self._core.pending_wakes.add(body["wake"])
            self._core.changed()

    def loop(self) -> None:
        while True:
            with self._core.cond:
                if self._core.stopping:
                    return
                names = sorted(self._core.pending_wakes)
            pending: list[tuple[str, int, Any]] = []
            for name in names:
                try:
                    found = self._read(name)
                except Exception as exc:  # a moto hiccup: try again on the next round
                    self._core.log(f"emulator: wake-up {name}: {exc}")
                    continue
                if found is not None:
                    pending.append((name, *found))
            if pending and self._core.fast_waits:
                with self._core.cond:
                    if self._idle():
                        self._core.skip_to(min(at_ms for _, at_ms, _ in pending))
            now = self._core.now_ms()
            for name, at_ms, schedule in pending:
                if at_ms <= now:
                    try:
                        self._fire(name, schedule)
                    except Exception as exc:
                        self._core.log(f"emulator: wake-up {name}: {exc}")
            time.sleep(0.1)

    def _read(self, name: str) -> tuple[int, Any] | None:
        """The schedule's time (epoch ms) and the schedule; ``None`` if it was deleted."""
        client = self._core.moto.client("scheduler")
        try:
            schedule = client.get_schedule(Name=name, GroupName="default")
        except Exception as exc:
            if "ResourceNotFound" in type(exc).__name__ or "ResourceNotFound" in str(exc):
                self._drop(name)  # deleted (a cancelled run)
                return None
            raise
        expression = str(schedule.get("ScheduleExpression", ""))
        at = calendar.timegm(time.strptime(expression[3:-1], "%Y-%m-%dT%H:%M:%S"))
        return at * 1000, schedule

    def _fire(self, name: str, schedule: Any) -> None:
        client = self._core.moto.client("scheduler")
        target = schedule["Target"]
        function = str(target["Arn"]).rsplit(":function:", 1)[-1].split(":")[0]
        self._invoker.invoke(function, str(target.get("Input", "{}")).encode())
        client.delete_schedule(Name=name, GroupName="default")
        self._core.log(f"emulator: wake-up {name} fired: {function}")
        self._drop(name)

    def _drop(self, name: str) -> None:
        with self._core.cond:
            self._core.pending_wakes.discard(name)
            self._core.changed()
