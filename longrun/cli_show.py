"""How the ``longrun`` command shows runs: the ``list`` table, the readable ``status``, the
``watch`` progress line, and durations both ways (``--since 1h`` in, ``3h05m`` out)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .errors import LongrunConfigError
from .protocol import Checkpoint
from .status import RunInfo, RunSummary

__all__ = [
    "Progress",
    "parse_duration",
    "run_table",
    "span",
    "status_text",
    "summary_json",
    "when",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str, option: str) -> float:
    """Seconds in ``text`` (``90s``, ``15m``, ``1h``, ``30d``, ``2w``, or ``1d12h``)."""
    value = text.strip().lower()
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise LongrunConfigError(
            f"{option} {text[:40]!r}: use a number and a unit (s, m, h, d, w), e.g. 90s, 15m, "
            "1h, 30d or 1d12h."
        )
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def span(seconds: float) -> str:
    """A duration for people: ``45s``, ``12m05s``, ``3h05m``, ``4d02h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def when(ms: int | None) -> str:
    """Epoch milliseconds as UTC time (``2026-12-02 11:24:54``)."""
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def cut(value: Any, limit: int) -> str:
    """``value`` as compact JSON, cut to ``limit`` characters."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary_json(summary: RunSummary) -> dict[str, Any]:
    return {**asdict(summary), "settled": summary.settled}


def run_table(runs: Sequence[RunSummary], now_ms: int) -> str:
    """The ``list`` table: one row per run, newest first."""
    header = ("RUN ID", "STATUS", "HOP", "WHERE", "ITEMS", "STARTED (UTC)", "UPDATED (UTC)", "AGE")
    rows = [header] + [
        (
            r.run_id,
            r.status,
            str(r.hop),
            r.where or "-",
            str(r.items_done),
            when(r.started_ms),
            when(r.updated_ms),
            span((now_ms - r.started_ms) / 1000),
        )
        for r in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {2, 4}
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in numeric and row is not header else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _loops(checkpoint: Checkpoint) -> list[str]:
    lines = []
    for path, cursor in sorted(checkpoint.cursors.items()):
        of = f" of {cursor.total}" if cursor.total is not None else ""
        state = "done" if cursor.done else "at item"
        lines.append(f"{path}: {state} {cursor.pos}{of}")
    return lines


def status_text(
    checkpoint: Checkpoint,
    size: int,
    now_ms: int,
    children: Sequence[dict[str, Any]] = (),
) -> str:
    """``longrun status``: the run for people to read."""
    info = RunInfo.of(checkpoint)
    where = f" in {info.where}" if info.where else ""
    lines = [
        f"run       {info.run_id}",
        f"status    {info.status}, hop {info.hop}{where}",
        f"started   {when(info.started_ms)} UTC ({span((now_ms - info.started_ms) / 1000)} ago)",
        f"updated   {when(info.updated_ms)} UTC ({span((now_ms - info.updated_ms) / 1000)} ago)",
        f"items     {info.items_done} done",
        f"event     {cut(checkpoint.event, 200)}",
    ]
    if checkpoint.function:
        lines.append(f"function  {checkpoint.function}")
    if checkpoint.parent is not None:
        link = checkpoint.parent
        lines.append(f"parent    {link.get('run')} (run.map item {link.get('index')})")
    if checkpoint.hops:
        lines.append("hops      hop  try  where    started (UTC)        took     items  ended as")
        for entry in checkpoint.hops:
            took = span((entry.ended_ms - entry.started_ms) / 1000) if entry.ended_ms else "-"
            ended = entry.outcome or ("running" if entry.ended_ms is None else "-")
            lines.append(
                f"          {entry.hop:>3}  {entry.attempt:>3}  {entry.where:<7}  "
                f"{when(entry.started_ms)}  {took:>7}  {entry.items:>5}  {ended}"
            )
    loops = _loops(checkpoint)
    if loops:
        lines.append("loops     " + loops[0])
        lines.extend("          " + line for line in loops[1:])
    state = len(json.dumps(checkpoint.state, separators=(",", ":"), default=str))
    lines.append(f"state     {_bytes(state)} (checkpoint {_bytes(size)})")
    if checkpoint.escalation is not None:
        task = checkpoint.escalation.task_arn or "no task yet"
        lines.append(f"escalated {checkpoint.escalation.reason} (hop {checkpoint.escalation.hop}, "
                     f"{task})")  # fmt: skip
    if info.result is not None or info.status == "completed":
        lines.append(f"result    {cut(info.result, 400)}")
    if checkpoint.error is not None:
        error = checkpoint.error
        terminal = " (terminal)" if error.terminal else ""
        lines.append(f"error     {error.type}: {error.message[:400]}{terminal}")
    wait = checkpoint.wait
    if wait is not None and checkpoint.status.value == "waiting":
        until = wait.get("until_ms")
        left = f" (in {span((until - now_ms) / 1000)})" if until and until > now_ms else ""
        if until is None:  # no schedule: woken by an answer, or by the last child to finish
            woken = "its last child to finish" if wait.get("kind") == "map" else "the answer"
            lines.append(f"waiting   {wait.get('kind')} {wait.get('name')!r}, woken by {woken}")
        else:
            lines.append(
                f"waiting   {wait.get('kind')} {wait.get('name')!r} until {when(until)} UTC"
                f"{left}, woken by schedule {wait.get('schedule')}"
            )
    for counts in children:
        stopped = ", map cancelled" if counts["cancelled"] else ""
        lines.append(
            f"children  {counts['children']} ({counts['completed']} completed, "
            f"{counts['failed']} failed, {counts['running']} running, {counts['pending']} "
            f"pending{stopped}): longrun list --parent {checkpoint.run_id}"
        )
    if checkpoint.steps:
        done = sum(1 for r in checkpoint.steps.values() if r.get("state") == "done")
        lines.append(f"steps     {done} of {len(checkpoint.steps)} recorded steps and sleeps done")
    notice = checkpoint.notice
    if notice is not None:
        why = f": {notice.error[:200]}" if notice.error else ""
        lines.append(
            f"notified  {notice.state} to {notice.target} ({notice.attempts} attempt(s)){why}"
        )
    return "\n".join(lines)


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


class Progress:
    """``longrun watch``'s line: a bar over the top-level loops that know their length,
    the items done, the hop and where it runs."""

    WIDTH = 30

    @staticmethod
    def line(checkpoint: Checkpoint, now_ms: int) -> str:
        info = RunInfo.of(checkpoint)
        top = [c for path, c in checkpoint.cursors.items() if "/" not in path]
        parts = []
        if top and all(c.total is not None for c in top):
            totals = [(c.total or 0, c.pos, c.done) for c in top]
            total = sum(t for t, _, _ in totals)
            done = sum(t if finished else min(t, pos) for t, pos, finished in totals)
            filled = Progress.WIDTH * done // total if total else Progress.WIDTH
            bar = "#" * filled + "-" * (Progress.WIDTH - filled)
            percent = 100 * done // total if total else 100
            parts.append(f"[{bar}] {percent:3d}% {done}/{total} items")
        else:
            parts.append(f"{info.items_done} items")
        where = f" in {info.where}" if info.where else ""
        parts.append(f"hop {info.hop} {info.status}{where}")
        parts.append(span((now_ms - info.started_ms) / 1000))
        return "  ".join(parts)
