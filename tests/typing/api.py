"""Checked by mypy (``make lint``), never run: the public API keeps its types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from longrun import FileStore, MemoryStore, Run, S3Store, current_run, longrun


@longrun(checkpoint=S3Store("bucket", prefix="p/"), max_hops=3, margin_ms=5000)
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    run: Run = current_run()
    total = 0
    for n in run.iterate([1, 2, 3], name="numbers"):
        total += n  # n is an int
    for key in run.iterate(["a", "b"], key=lambda k: k, ordered=True):
        key.upper()
    remaining: int = run.remaining_ms()
    if run.should_yield():
        run.end_hop()
    return {"total": total, "remaining": remaining}


@longrun(checkpoint=FileStore("/mnt/efs/longrun"))
async def ahandler(event: dict[str, Any], context: Any) -> int:
    async def numbers() -> AsyncIterator[int]:
        yield 1

    total = 0
    async for n in current_run().iterate(numbers()):
        total += n
    return total


@longrun
def bare(event: dict[str, Any], context: Any) -> str:
    return "ok"


result: dict[str, int] = handler({}, None)
text: str = bare({}, None)
store = MemoryStore()
