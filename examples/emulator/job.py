"""The pure part of the example job: its input records, the transform, the expected result.

No longrun here, so tests and the demo import it to verify a run.
"""

from __future__ import annotations

import hashlib
from typing import Any


def record(i: int) -> str:
    """Record ``i`` of the generated input (the same on every hop and every machine)."""
    return f"record-{i:06d}:{(i * 7919) % 10007}"


def transform(text: str) -> str:
    return hashlib.sha256(text.upper().encode()).hexdigest()


def batch_digest(start: int, stop: int) -> int:
    digest = 0
    for i in range(start, stop):
        digest ^= int(transform(record(i))[:16], 16)
    return digest


def expected(event: dict[str, Any]) -> dict[str, Any]:
    """The result a correct run returns for ``event``."""
    n, size = int(event["records"]), int(event.get("batch", 50))
    return {
        "records": n,
        "batches": len(range(0, n, size)),
        "digest": f"{batch_digest(0, n):016x}",
    }
