"""Deadline and margin: when must a hop stop starting new work?

The deadline always comes from the Lambda context (``get_remaining_time_in_millis()``), so a
test clock drives it. A hop should yield when the remaining time drops below the margin.
The margin is fixed (``margin_ms``/``LONGRUN_MARGIN_MS``) or adaptive: enough for the
longest item seen so far, with headroom, plus the measured cost of a checkpoint write and
of the hand-off, never below ``min_margin_ms``. Measurements carry over between hops in the
checkpoint, so hop N+1 starts as cautious as hop N ended.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["HEADROOM", "NO_DEADLINE_MS", "Timer"]

HEADROOM = 1.5
"""Multiplier on the longest item seen: items vary, and a kill costs far more than a margin."""

NO_DEADLINE_MS = 2**62
"""What ``remaining_ms`` reports when there is no context (a local call) or no deadline."""

# Before anything is measured: a conservative guess of one S3 write and one async Invoke.
_GUESS_WRITE_S = 0.25
_GUESS_HANDOFF_S = 0.25


class Timer:
    """Time accounting for one hop, fed by the context and a monotonic clock."""

    __slots__ = (
        "_remaining",
        "fixed_margin_ms",
        "handoff_s",
        "longest_item_s",
        "min_margin_ms",
        "mono",
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
    ) -> None:
        getter = getattr(context, "get_remaining_time_in_millis", None)
        self._remaining: Callable[[], int] | None = getter if callable(getter) else None
        self.mono = mono
        self.fixed_margin_ms = fixed_margin_ms
        self.min_margin_ms = min_margin_ms
        carried = carried or {}
        self.longest_item_s = _seconds(carried.get("longest_item_ms"), 0.0)
        self.write_s = _seconds(carried.get("write_ms"), _GUESS_WRITE_S)
        self.handoff_s = _seconds(carried.get("handoff_ms"), _GUESS_HANDOFF_S)

    def remaining_ms(self) -> int:
        """Milliseconds before the platform kills this hop (0 is a real value)."""
        if self._remaining is None:
            return NO_DEADLINE_MS
        remaining = self._remaining()
        return NO_DEADLINE_MS if remaining is None else int(remaining)

    def margin_ms(self) -> int:
        """How much time must be left to start another item."""
        if self.fixed_margin_ms is not None:
            return self.fixed_margin_ms
        needed = self.longest_item_s * HEADROOM + self.write_s + self.handoff_s
        return max(self.min_margin_ms, int(needed * 1000.0 + 0.999))

    def should_yield(self) -> bool:
        """True when the remaining time is below the margin."""
        return self.remaining_ms() < self.margin_ms()

    def note_item(self, seconds: float) -> None:
        """Record one item's duration."""
        if seconds > self.longest_item_s:
            self.longest_item_s = seconds

    def note_write(self, seconds: float) -> None:
        """Record a checkpoint write's duration (the slowest recent one counts)."""
        self.write_s = max(seconds, self.write_s * 0.5)

    def note_handoff(self, seconds: float) -> None:
        """Record a hand-off's duration (the slowest recent one counts)."""
        self.handoff_s = max(seconds, self.handoff_s * 0.5)

    def carry(self) -> dict[str, int]:
        """What the next hop should start from (stored in the checkpoint)."""
        return {
            "longest_item_ms": round(self.longest_item_s * 1000),
            "write_ms": round(self.write_s * 1000),
            "handoff_ms": round(self.handoff_s * 1000),
        }


def _seconds(ms: Any, default: float) -> float:
    if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms >= 0:
        return float(ms) / 1000.0
    return default
