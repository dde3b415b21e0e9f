"""A virtual clock that can kill the code running on it at a deadline, as Lambda does."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["HopKilled", "VirtualClock"]


class HopKilled(BaseException):
    """The simulated platform killed the invocation at its deadline.

    A BaseException, like the SIGKILL it stands for: ``except Exception`` in user code does
    not stop it, and longrun writes nothing on its way out.
    """


class VirtualClock:
    """Seconds of virtual time. ``advance`` past an armed deadline raises :class:`HopKilled`."""

    def __init__(self, *, start_epoch_s: float = 1_767_225_600.0) -> None:
        self.now = 0.0
        self.start_epoch_s = start_epoch_s
        self.deadline: float | None = None
        self._alarms: list[tuple[float, Callable[[], None]]] = []

    def at(self, when: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` when virtual time reaches ``when`` (e.g. a SIGTERM)."""
        self._alarms.append((when, callback))
        self._alarms.sort(key=lambda alarm: alarm[0])

    def advance(self, seconds: float) -> None:
        """Move time forward; raise HopKilled (time stops at the deadline) when it passes it."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"cannot advance the clock by {seconds!r} seconds")
        target = self.now + seconds
        while self._alarms and self._alarms[0][0] <= target:
            when, callback = self._alarms.pop(0)
            if self.deadline is not None and when >= self.deadline:
                self._alarms.insert(0, (when, callback))
                break
            self.now = max(self.now, when)
            callback()
        if self.deadline is not None and target >= self.deadline:
            self.now = self.deadline
            raise HopKilled(f"deadline reached at t={self.deadline:.3f}s")
        self.now = target

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` on virtual time."""
        self.advance(max(0.0, float(seconds)))

    def wall_ms(self) -> int:
        """Virtual epoch milliseconds (for leases and timestamps)."""
        return int((self.start_epoch_s + self.now) * 1000)

    def mono(self) -> float:
        """Virtual monotonic seconds."""
        return self.now
