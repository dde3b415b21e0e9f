"""Per-item overhead of ``run.iterate`` against a bare ``for`` loop and against a
pass-through generator (``for x in it: yield x``) over the same list (ns per item).

The loops walk the same list of N items with an empty body, ``run.iterate`` inside a real
decorated handler whose context has ample time left (a real-time clock, like awslambdaric's).
They are interleaved, REPEAT times, and the medians compared, so machine noise hits all alike.

    python bench/iterate_overhead.py [--items 1000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from longrun import MemoryStore, current_run, longrun


class RealTimeContext:
    """Remaining time from the wall clock, as awslambdaric computes it."""

    aws_request_id = "bench"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"

    def __init__(self, timeout_s: float) -> None:
        self.deadline_ms = int(time.time() * 1000 + timeout_s * 1000)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


def measure(items: int, repeat: int) -> dict[str, Any]:
    data = list(range(items))
    bare: list[float] = []
    passthrough: list[float] = []
    wrapped: list[float] = []

    def through(iterable: Any) -> Any:
        for item in iterable:  # noqa: UP028 (a Python-level pass-through, not yield from)
            yield item

    counter = iter(range(10**9))

    @longrun(
        checkpoint=MemoryStore(), checkpoint_every_s=3600, run_id=lambda e: f"b{next(counter)}"
    )
    def handler(event: Any, context: Any) -> float:
        run = current_run()
        start = time.perf_counter()
        for _ in run.iterate(data):
            pass
        return time.perf_counter() - start

    for _ in range(repeat):
        start = time.perf_counter()
        for _ in data:
            pass
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in through(data):
            pass
        passthrough.append(time.perf_counter() - start)
        wrapped.append(handler({}, RealTimeContext(900)))

    bare_ns = statistics.median(bare) / items * 1e9
    through_ns = statistics.median(passthrough) / items * 1e9
    iterate_ns = statistics.median(wrapped) / items * 1e9
    return {
        "name": "iterate_overhead",
        "items": items,
        "repeat": repeat,
        "bare_ns_per_item": round(bare_ns, 1),
        "iterate_ns_per_item": round(iterate_ns, 1),
        "overhead_ns_per_item": round(iterate_ns - bare_ns, 1),
        "ratio": round(iterate_ns / bare_ns, 2),
        "passthrough_ns_per_item": round(through_ns, 1),
        "ratio_vs_passthrough": round(iterate_ns / through_ns, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    result = measure(args.items, args.repeat)
    print(
        f"run.iterate: {result['iterate_ns_per_item']} ns/item, bare for: "
        f"{result['bare_ns_per_item']} ns/item -> overhead {result['overhead_ns_per_item']} "
        f"ns/item (x{result['ratio']}); pass-through generator "
        f"{result['passthrough_ns_per_item']} ns/item (x{result['ratio_vs_passthrough']}); "
        f"median of {args.repeat}, {args.items} items"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
