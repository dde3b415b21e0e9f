"""Resume cost against progress: from a hop's start to its first new item, after 10^3 and
after 10^6 items were done by earlier hops (a FileStore checkpoint, a list being iterated).

The cursor of a list resumes by seeking its iterator, so the cost must not grow with the
items already done; a generator, by contrast, has to be replayed to its position (shown for
comparison). Medians of REPEAT hops each; the figure is the ratio 10^6 / 10^3.

    python bench/resume_cost.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from longrun import FileStore, _hooks, current_run, longrun
from longrun.checkpoint import make_envelope


class Context:
    """A context with ample time left and an ARN to hand off to."""

    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"

    def __init__(self, request_id: str) -> None:
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


class Recorder(_hooks.Hooks):
    """Real clocks; the hand-off is recorded instead of sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def invoke_async(self, function: str, payload: bytes, client: Any) -> None:
        self.sent.append(json.loads(payload))


def measure(done: int, source: Callable[[list[int]], Iterable[int]], repeat: int) -> float:
    """Median seconds from the handler call to its first new item, after ``done`` items."""
    first_item_at: list[float] = []
    stop_at = [done]
    items = list(range(done + repeat + 10))  # built once, outside the measured hops

    with tempfile.TemporaryDirectory() as tmp:

        @longrun(checkpoint=FileStore(tmp), max_hops=10**6, checkpoint_every_s=3600)
        def handler(event: Any, context: Any) -> None:
            run = current_run()
            for i in run.iterate(source(items)):
                if i >= stop_at[0]:
                    first_item_at.append(time.perf_counter())
                    stop_at[0] = i + 1
                    run.end_hop()  # item i is not finished: the next hop starts with it

        recorder = Recorder()
        with _hooks.installed(recorder):
            handler({}, Context("bench-0"))  # hop 0 does `done` items, then hands off
            samples = []
            for n in range(repeat):
                envelope = recorder.sent[-1]
                start = time.perf_counter()
                handler(envelope, Context(f"bench-{n + 1}"))
                samples.append(first_item_at[-1] - start)
        assert recorder.sent[-1] == make_envelope(envelope["longrun"]["run_id"], repeat + 1)
    return statistics.median(samples)


def run_all(repeat: int) -> list[dict[str, Any]]:
    rows = []
    sources: dict[str, Callable[[list[int]], Iterable[int]]] = {
        "list": lambda items: items,
        "generator": lambda items: (item for item in items),
    }
    for label, source in sources.items():
        small = measure(10**3, source, repeat)
        large = measure(10**6, source, repeat)
        rows.append(
            {
                "name": "resume_cost",
                "iterable": label,
                "after_1e3_ms": round(small * 1000, 3),
                "after_1e6_ms": round(large * 1000, 3),
                "ratio": round(large / small, 3),
                "repeat": repeat,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    for row in run_all(args.repeat):
        print(
            f"resume ({row['iterable']}): {row['after_1e3_ms']} ms after 10^3 items, "
            f"{row['after_1e6_ms']} ms after 10^6 -> x{row['ratio']}"
        )
        print(json.dumps(row))


if __name__ == "__main__":
    main()
