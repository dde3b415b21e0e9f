"""Deadline and margin: when must a hop stop starting new work?

The deadline always comes from the Lambda context (``get_remaining_time_in_millis()``), so a
test clock drives it. A hop should yield when the remaining time drops below the margin.
The margin is fixed (``margin_ms``/``LONGRUN_MARGIN_MS``) or adaptive: enough for the
longest item seen so far, with headroom, plus the measured cost of a checkpoint write and
of the hand-off, never below its floor (``min_margin_ms``; by default at most a fifth of the
hop's starting time). Measurements carry over between hops in the
checkpoint, so hop N+1 starts as cautious as hop N ended.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .errors import LongrunError, shown

__all__ = [
    "FLOOR_FRACTION",
    "HEADROOM",
    "HEAVY_TAIL",
    "HEAVY_TAIL_HEADROOM",
    "NO_DEADLINE_MS",
    "TICKER",
    "Ticker",
    "Timer",
    "remaining_time",
]

FLOOR_FRACTION = 0.2
"""The default floor of the adaptive margin is at most this share of the hop's time: with
Lambda's default 3 s timeout a hop keeps about 2.4 s for items, not 1 s."""

HEADROOM = 1.5
"""Multiplier on the longest item seen: items vary, and a kill costs far more than a margin."""

HEAVY_TAIL = 4.0
HEAVY_TAIL_HEADROOM = 2.5
"""When the longest item is over ``HEAVY_TAIL`` times the mean, the next record-breaking item
is likely to break the record by a lot: reserve more. Yielding early costs a hop (a fraction
of a second of overhead), not billed time; a kill costs the rest of the hop and redone work."""

NO_DEADLINE_MS = 2**62
"""What ``remaining_ms`` reports when there is no context (a local call) or no deadline."""

# Before anything is measured: a conservative guess of one S3 write and one async Invoke.
_GUESS_WRITE_S = 0.25
_GUESS_HANDOFF_S = 0.25


def remaining_time(context: Any) -> Callable[[], int] | None:
    """A reader of ``context.get_remaining_time_in_millis()`` that checks what it gets.

    ``None`` when there is no deadline to read (no context, or one without the method). A
    context whose attribute is not a method, or whose method raises or returns something
    other than a number of milliseconds, is a LongrunError naming it, raised at the first
    read (the hop's start, before anything is written).
    """
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return None
    getter = context.get_remaining_time_in_millis
    where = f"context.get_remaining_time_in_millis of {type(context).__name__}"
    if not callable(getter):
        raise LongrunError(
            f"{where} is a {type(getter).__name__} ({shown(getter, 60)}), not a method: longrun "
            "calls it to learn how long the hop has left. Pass Lambda's context, or a context "
            "whose get_remaining_time_in_millis() returns milliseconds (longrun.testing."
            "FakeContext in tests)."
        )

    def read() -> int:
        try:
            value = getter()
        except Exception as exc:
            raise LongrunError(
                f"{where}() raised {shown(exc)}; longrun needs it to time the hop."
            ) from exc
        if value is None:
            return NO_DEADLINE_MS
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise LongrunError(
                f"{where}() returned {shown(value, 60)} (a {type(value).__name__}), not a number "
                "of milliseconds."
            )
        return int(value)

    return read


class Timer:
    """Time accounting for one hop, fed by the context and a monotonic clock."""

    __slots__ = (
        "_remaining",
        "first_item",
        "fixed_margin_ms",
        "handoff_s",
        "hop_s",
        "longest_item_s",
        "mean_item_s",
        "min_margin_ms",
        "mono",
        "scaled_floor",
        "write_s",
    )

    def __init__(
        self,
        context: Any,
        mono: Callable[[], float],
        *,
        fixed_margin_ms: int | None,
        min_margin_ms: int,
        carried: Mapping[str, Any] | None = None,
        scaled_floor: bool = False,
    ) -> None:
        self._remaining = remaining_time(context)
        self.mono = mono
        self.fixed_margin_ms = fixed_margin_ms
        self.min_margin_ms = min_margin_ms
        self.scaled_floor = scaled_floor
        """The floor is the default one: cap it at FLOOR_FRACTION of the hop's time."""
        carried = carried or {}
        self.longest_item_s = _seconds(carried.get("longest_item_ms"), 0.0)
        self.mean_item_s = _seconds(carried.get("mean_item_ms"), 0.0)
        self.first_item = True
        self.hop_s = self.remaining_ms() / 1000.0
        """The time this hop had when it started."""
        self.write_s = _seconds(carried.get("write_ms"), _GUESS_WRITE_S)
        self.handoff_s = _seconds(carried.get("handoff_ms"), _GUESS_HANDOFF_S)

    def remaining_ms(self) -> int:
        """Milliseconds before the platform kills this hop (0 is a real value)."""
        if self._remaining is None:
            return NO_DEADLINE_MS
        return self._remaining()

    def floor_ms(self) -> int:
        """The adaptive margin's floor: ``min_margin_ms``, or for the default floor at most
        FLOOR_FRACTION of the time the hop started with (short function timeouts)."""
        if not self.scaled_floor:
            return self.min_margin_ms
        return min(self.min_margin_ms, int(self.hop_s * 1000.0 * FLOOR_FRACTION))

    def margin_ms(self) -> int:
        """How much time must be left to start another item."""
        if self.fixed_margin_ms is not None:
            return self.fixed_margin_ms
        longest = self.longest_item_s
        costs = self.write_s + self.handoff_s
        if self.first_item:
            # No item finished in this hop yet: a hop that starts none is wasted anyway, so
            # try one if the longest item seen fits at all (headroom 1).
            needed = longest + costs
        else:
            needed = longest * HEADROOM + costs
            if self.mean_item_s > 0 and longest > HEAVY_TAIL * self.mean_item_s:
                # Heavy tail: reserve more, but never more than half the hop, or every hop
                # would stop after one item.
                heavy = longest * HEAVY_TAIL_HEADROOM + costs
                needed = max(needed, min(heavy, self.hop_s / 2))
        return max(self.floor_ms(), int(needed * 1000.0 + 0.999))

    def should_yield(self) -> bool:
        """True when the remaining time is below the margin."""
        return self.remaining_ms() < self.margin_ms()

    def note_item(self, seconds: float) -> None:
        """Record one item's duration."""
        if seconds > self.longest_item_s:
            self.longest_item_s = seconds

    def note_progress(self, items: int, seconds: float) -> None:
        """Items finished in this hop and the time they took (for the mean item)."""
        if items > 0:
            self.mean_item_s = seconds / items
            self.first_item = False

    def note_write(self, seconds: float) -> None:
        """Record a checkpoint write's duration (the slowest recent one counts)."""
        self.write_s = max(seconds, self.write_s * 0.5)

    def note_handoff(self, seconds: float) -> None:
        """Record a hand-off's duration (the slowest recent one counts)."""
        self.handoff_s = max(seconds, self.handoff_s * 0.5)

    def carry(self) -> dict[str, float]:
        """What the next hop should start from (stored in the checkpoint)."""
        return {
            "longest_item_ms": round(self.longest_item_s * 1000),
            "mean_item_ms": round(self.mean_item_s * 1000, 3),
            "write_ms": round(self.write_s * 1000),
            "handoff_ms": round(self.handoff_s * 1000),
        }


def _seconds(ms: Any, default: float) -> float:
    if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms >= 0:
        return float(ms) / 1000.0
    return default


class _Flagged(Protocol):
    due: bool


class Ticker:
    """One daemon thread that sets ``due`` on every registered loop each ``interval_s``.

    On the real clock, ``run.iterate`` looks at its loop's ``due`` flag between items (one
    attribute read) instead of reading the clock after every item, and checks the time when
    the flag is up. A slow item spans a tick, so the check follows it at once, as with a
    clock read per item. The thread sleeps on a condition while no loop is registered, so
    an idle process (a warm Lambda environment, a Fargate task between runs) is not woken.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._loops: set[_Flagged] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, loop: _Flagged) -> None:
        with self._cond:
            self._loops.add(loop)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="longrun-ticker", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def discard(self, loop: _Flagged) -> None:
        with self._cond:
            self._loops.discard(loop)

    def registered(self) -> int:
        """How many loops are ticked now (0 once every loop has ended)."""
        with self._cond:
            return len(self._loops)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._loops:
                    self._cond.wait()
                loops = tuple(self._loops)
            time.sleep(self.interval_s)
            for loop in loops:
                loop.due = True

    def _after_fork(self) -> None:
        # The thread does not exist in a forked child, and its lock may have been held.
        self._cond = threading.Condition()
        self._loops = set()
        self._thread = None


CHECK_INTERVAL_S = 0.005
"""Longest stretch of fast items between two looks at the context's remaining time."""

TICKER = Ticker(CHECK_INTERVAL_S)
"""The process's ticker (one thread for every run and loop in the process)."""

os.register_at_fork(after_in_child=TICKER._after_fork)
